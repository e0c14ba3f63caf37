"""The benchmarks that need a salt-master and the local cloud use the tests' fixtures."""
import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "integration")]
_spec = importlib.util.spec_from_file_location("project_test_fixtures", TESTS / "integration" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
globals().update({k: v for k, v in vars(_fixtures).items() if not k.startswith("__")})
