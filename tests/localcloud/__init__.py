# The id of one test run, shared by its pytest processes (xdist's workers inherit it from the
# process that starts them): the cloud records which run brought it up, and that run alone
# takes it down, once, at its end (fixture.py, tests/conftest.py).
RUN_ENV = "SALTAMI_TEST_RUN"
