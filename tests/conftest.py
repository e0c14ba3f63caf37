"""The test tiers (README, Tests): tests/unit/ is pure logic, with no root, cloud or Salt
daemon, and runs in seconds; tests/integration/ drives the tool against the local cloud
(tests/localcloud/), real salt-master and salt-minion daemons (pytest-salt-factories) and,
as root, loop devices, chroots and qemu guests. This directory is on sys.path for both:
helpers.py and the localcloud package live here."""
import os
import uuid

from localcloud import RUN_ENV

# whether this process began the test run: its xdist workers, and a pytest that a test runs
# (the unit tier on each supported Salt, tests/integration/test_salt_versions.py), inherit
# RUN_ENV; only the run's own first process may take the cloud down at its end (the unit tier
# run by a test took it down under the other process's tests)
OWNER = False


def pytest_configure(config):
    global OWNER
    if not hasattr(config, "workerinput") and RUN_ENV not in os.environ:
        os.environ[RUN_ENV] = uuid.uuid4().hex
        OWNER = True


def pytest_sessionfinish(session):
    if OWNER:
        try:
            from localcloud import fixture
        except ImportError:  # the unit tier in a venv without the cloud's clients
            return
        fixture.stop_if_started_here()


# Each module's tests run in one process, so that its fixtures (its builds) are made once;
# modules that share a costly session fixture run in one process too (the builder VM of the
# volume strategy). The real guests (qemu under TCG, the longest by far) go first, so that one
# process starts them while the other runs the rest. A scheduler of our own says which tests
# go together: pytest-xdist's xdist_group marks reach its loadgroup scheduler by a suffix it
# writes into each test's nodeid, which pytest 9 no longer lets a plugin change (the marks
# were silently ignored, and both processes ran the real guests' builds).
GROUPS = {module: "builder-vm" for module in
          ("test_formulas", "test_modules_builder", "test_volume_bake", "test_volume_orchestration")}
# the order in which groups are handed out: the longest first, so that the run does not end
# with one process on a long module while the other has nothing left (measured by
# --durations on a whole run); the others after them, the unit tier last
FIRST = ("test_real_guests", "test_faults", "builder-vm", "test_build", "test_local_validate", "test_glance_import",
         "test_local_bake", "test_cloud_production", "test_families", "test_progress", "test_modules_nova",
         "test_prune", "test_fingerprint", "test_modules_glance_cinder", "test_concurrency", "test_volume_backed",
         "test_bad_input", "test_states")


def group_of(nodeid):
    """The scheduling group of a test, by its nodeid: its module's (or its modules') group in
    tests/integration, one group for the unit tier."""
    path = nodeid.split("::", 1)[0]
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return GROUPS.get(module, module) if "/integration/" in f"/{path}" else "unit"


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return group_of(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        group = group_of(item.nodeid)
        return FIRST.index(group) if group in FIRST else len(FIRST) + (group == "unit")

    items.sort(key=rank)
