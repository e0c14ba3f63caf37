"""Sessions for contributors (``pip install nox``, then ``nox -l``):

    nox -s unit              # the unit tier: pure logic, no root, cloud or daemon; seconds
    nox -s unit_salt         # the unit tier on each supported Salt with Python 3.10
    nox -s "unit_salt(salt='3006')"
    nox -s integration       # the integration tier: as root, starts the local cloud
    nox -s lint              # ruff check and ruff format --check
    nox -s docs              # the reference docs, warnings as errors, into docs/_build/html

CI runs none of these: .ci/run installs and runs the README's one test command, which holds
all of it (the unit tier on each Salt, ruff and the docs build are tests there too).
"""
import sys
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests"))
import saltvenvs  # noqa: E402  (the one place the supported Salts and their venvs are known)

nox.options.sessions = ["lint", "unit", "docs"]
CONSTRAINTS = ("-c", "requirements/constraints.txt")


def _install(session):
    session.install("-r", "requirements/tests.txt", *CONSTRAINTS)
    session.install("--no-deps", "-e", ".")


@nox.session
def unit(session):
    _install(session)
    session.run("python", "-m", "pytest", "tests/unit", *session.posargs)


@nox.session(venv_backend="none")
@nox.parametrize("salt", saltvenvs.supported())
def unit_salt(session, salt):
    # the venv is tests/saltvenvs.py's (cached, shared with the integration test), not nox's
    session.run("python", "tests/saltvenvs.py", "--run", salt)


@nox.session
def integration(session):
    _install(session)
    session.run("python", "-m", "pytest", "tests/integration", *session.posargs,
                env={"LOCALCLOUD_KEEP": "1"})


@nox.session
def lint(session):
    session.install("ruff", *CONSTRAINTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session):
    _install(session)
    session.run("python", "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
