"""The repository passes ruff's checks (pyproject.toml, [tool.ruff]): pyflakes' undefined
names, unused imports and redefinitions, pycodestyle at the project's line length, the import
order; Salt's dunders (__salt__, __opts__...) are declared as builtins there."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, f"ruff check found problems (fix them, or `ruff check --fix`):\n{r.stdout}{r.stderr}"
