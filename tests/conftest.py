"""The test tiers (README, Tests): tests/unit/ is pure logic, with no root, cloud or Salt
daemon, and runs in seconds; tests/integration/ drives the tool against the local cloud
(tests/localcloud/), real salt-master and salt-minion daemons (pytest-salt-factories) and,
as root, loop devices, chroots and qemu guests. This directory is on sys.path for both:
helpers.py and the localcloud package live here."""
import os
import uuid

import pytest

from localcloud import RUN_ENV


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        os.environ.setdefault(RUN_ENV, uuid.uuid4().hex)


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        try:
            from localcloud import fixture
        except ImportError:  # the unit tier in a venv without the cloud's clients
            return
        fixture.stop_if_started_here()


# Each module's tests run in one process (a group of pytest-xdist's), so that its fixtures
# (its builds) are made once; modules that share a costly session fixture run in one process
# too (the builder VM of the volume strategy). The real guests (qemu under TCG, the longest by
# far) go first, so that one process starts them while the other runs the rest.
GROUPS = {module: "builder-vm" for module in
          ("test_formulas", "test_modules_builder", "test_volume_bake", "test_volume_orchestration")}
FIRST = ("test_real_guests",)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups
def pytest_collection_modifyitems(config, items):
    def module(item):
        return item.path.stem if item.path.parent.name == "integration" else "unit"

    for item in items:
        item.add_marker(pytest.mark.xdist_group(GROUPS.get(module(item), module(item))))
    items.sort(key=lambda item: module(item) not in FIRST)
