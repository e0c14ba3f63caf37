"""The test tiers (README, Tests): tests/unit/ is pure logic, with no root, cloud or Salt
daemon, and runs in seconds; tests/integration/ drives the tool against the local cloud
(tests/localcloud/), real salt-master and salt-minion daemons (pytest-salt-factories) and,
as root, loop devices, chroots and qemu guests. This directory is on sys.path for both:
helpers.py and the localcloud package live here."""
