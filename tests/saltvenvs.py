"""One venv per supported Salt, with the Python its onedir packages ship (3.10), for running
the unit tier on each: what `salt-pip install salt-ami` into that Salt's onedir gives, plus
the unit tier's tools.

Each supported Salt is a requirements/salt-SERIES.txt (its exact salt, and unit.txt), pinned
by requirements/constraints-salt-SERIES.txt; a venv holds that, and this package installed
from the checkout with its dependencies (the OpenStack clients), as salt-pip would. The unit
tier then runs from the checkout (its working tree, not the installed copy), so a venv is
remade only when what goes into it changes: the requirements, the constraints, setup.py or
the interpreter. Venvs are cached under ``$SALTAMI_VENVS`` (default
``~/.cache/salt-ami/venvs``) and made under one lock, so that CI can make them in the
background while a test that needs them waits.

    python tests/saltvenvs.py [--run] [SERIES ...]   # make (and with --run test) each, or all
"""
import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
CACHE = Path(os.environ.get("SALTAMI_VENVS") or Path.home() / ".cache" / "salt-ami" / "venvs")
# the Python of Salt's onedir packages for 3006 and 3007
PYTHON = "3.10"
UNIT_TIER = ["-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"]


def supported():
    """The supported Salt series, oldest first: one requirements/salt-SERIES.txt each."""
    return sorted(path.stem.removeprefix("salt-") for path in REQUIREMENTS.glob("salt-*.txt"))


def interpreter():
    """A Python ``PYTHON``: $SALTAMI_PYTHON310, one pyenv installed, or one on PATH."""
    candidates = [os.environ.get("SALTAMI_PYTHON310")]
    for home in ("/root", str(Path.home())):
        candidates += sorted(glob.glob(f"{home}/.pyenv/versions/{PYTHON}.*/bin/python{PYTHON}"), reverse=True)
    # last: a pyenv shim on PATH fails where no 3.10 is selected
    candidates.append(shutil.which(f"python{PYTHON}"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError(f"no python{PYTHON} found (on PATH, in pyenv, or as $SALTAMI_PYTHON310): the "
                       f"unit tier runs on each supported Salt with the Python of its onedir packages")


def _inputs(series):
    files = [REQUIREMENTS / f"salt-{series}.txt", REQUIREMENTS / "unit.txt",
             REQUIREMENTS / f"constraints-salt-{series}.txt", REPO / "setup.py", REPO / "pyproject.toml"]
    return [path for path in files if path.exists()]


def _key(series, python):
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], check=True,
                             capture_output=True, text=True).stdout
    digest = hashlib.sha256(version.encode())
    for path in _inputs(series):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip(venv, *args, log):
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                   check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def venv(series):
    """The venv of Salt ``series`` (made now if it is not cached); its log is build.log in it."""
    if series not in supported():
        raise ValueError(f"Salt {series!r} is not supported (supported: {', '.join(supported())})")
    python = interpreter()
    path = CACHE / f"salt-{series}-{_key(series, python)}"
    done = path / ".complete"
    if done.exists():
        return path
    with _locked():
        if done.exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(path)], check=True)
        constraints = REQUIREMENTS / f"constraints-salt-{series}.txt"
        with open(path / "build.log", "w") as log:
            try:
                _pip(path, "install", "-U", "pip", log=log)
                # the checkout installed as salt-pip would, with the dependencies it declares
                _pip(path, "install", "-r", str(REQUIREMENTS / f"salt-{series}.txt"),
                     *(["-c", str(constraints)] if constraints.exists() else []), str(REPO), log=log)
            except subprocess.CalledProcessError:
                log.flush()
                raise RuntimeError(f"making the venv of Salt {series} failed; its log:\n"
                                   f"{(path / 'build.log').read_text()[-6000:]}") from None
        done.touch()
        # older venvs of this series (other requirements or another interpreter)
        for old in CACHE.glob(f"salt-{series}-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    return path


def salt_version(path):
    return subprocess.run([str(path / "bin" / "python"), "-c", "import salt.version; print(salt.version.__version__)"],
                          check=True, capture_output=True, text=True).stdout.strip()


def run_unit_tier(path, *args):
    """The unit tier of the checkout, run with the venv at ``path``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(path / "bin" / "python"), *UNIT_TIER, *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the unit tier in each venv")
    parser.add_argument("series", nargs="*", help=f"Salt series (default all: {', '.join(supported())})")
    args = parser.parse_args(argv)
    failed = []
    for series in args.series or supported():
        path = venv(series)
        print(f"salt {series}: {path} (salt {salt_version(path)})", flush=True)
        if args.run:
            result = run_unit_tier(path)
            print(result.stdout + result.stderr, flush=True)
            if result.returncode:
                failed.append(series)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
