"""The benchmarks that need a salt-master and the local cloud use the tests' fixtures, and
the tests' run hooks (the cloud a benchmark brings up, it takes down at its end). They run
in one process (bench/pytest.ini): their figures are timings."""
import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "integration")]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fixtures = _load("project_test_fixtures", TESTS / "integration" / "conftest.py")
globals().update({k: v for k, v in vars(_fixtures).items() if not k.startswith("__")})
_run = _load("project_test_run", TESTS / "conftest.py")
pytest_configure, pytest_sessionfinish = _run.pytest_configure, _run.pytest_sessionfinish
