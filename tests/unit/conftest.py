"""The unit tier: pure logic, no root, no cloud, no Salt daemon (tests/conftest.py)."""
import pytest

from saltami.pipeline.context import Context


@pytest.fixture(scope="session", autouse=True)
def _salt_temp_logging():
    """Importing salt installs a handler that holds log records until Salt's logging is set up
    (never, here) and writes them at exit to the stderr it found, which pytest has closed by
    then: hand them to the handlers pytest reports with, while the session still runs."""
    yield
    try:
        from salt._logging import impl
    except ImportError:
        return
    impl.shutdown_temp_handler()


class FakeContext(Context):
    """What pipeline steps get (pipeline/context.py), with the event bus recorded as (build id,
    step, data) and no cloud or master: for run_all, cleanup and claims over fake steps. A
    cleanup by a build's manifest (claims' of an abandoned build) is the real Context's."""

    def __init__(self, builds_dir):
        self.builds_dir = str(builds_dir)
        self.spec = {"name": "f", "strategy": "snapshot"}
        self.events = []

    def event(self, build, step, data):
        self.events.append((build.id, step, data))

    def statuses(self):
        return [(step, data.get("status")) for _build, step, data in self.events]


@pytest.fixture
def ctx(tmp_path):
    return FakeContext(tmp_path)
