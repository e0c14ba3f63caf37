"""The unit tier passes on every supported Salt (requirements/salt-*.txt: 3006 LTS and 3007),
each in a venv with the Python of its onedir packages (3.10) holding that Salt and this
package installed from the checkout, as `salt-pip install .` installs it (tests/saltvenvs.py:
made in the background by .ci/run, or here, and cached); and that Salt's own salt-call finds
the package's modules through its entry point."""
import json
import subprocess

import pytest

import saltvenvs


@pytest.fixture(scope="module", params=saltvenvs.supported())
def salt_venv(request):
    return request.param, saltvenvs.venv(request.param)


def test_the_venv_has_that_salt_on_the_onedir_python(salt_venv):
    series, path = salt_venv
    pinned = next(line.split("==")[1].strip() for line in (saltvenvs.REQUIREMENTS / f"salt-{series}.txt").open()
                  if line.startswith("salt=="))
    assert saltvenvs.salt_version(path) == pinned and pinned.startswith(f"{series}.")
    python = subprocess.run([path / "bin" / "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    assert python == saltvenvs.PYTHON


def test_the_unit_tier_passes(salt_venv):
    series, path = salt_venv
    result = saltvenvs.run_unit_tier(path)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"salt {series}: {summary}")
    assert result.returncode == 0, f"unit tier on salt {series}:\n{result.stdout[-8000:]}{result.stderr[-4000:]}"
    assert " passed" in summary and "failed" not in summary and "error" not in summary


def test_salt_call_finds_the_modules_of_the_installed_package(salt_venv, tmp_path):
    series, path = salt_venv
    (tmp_path / "minion").write_text(f"root_dir: {tmp_path}\nfile_client: local\nid: unit-{series}\n"
                                     f"log_file: {tmp_path}/minion.log\n")
    r = subprocess.run([path / "bin" / "salt-call", "--local", "--config-dir", tmp_path, "--out", "json",
                        "sys.list_functions", "ami_glance", "ami_nova"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    functions = json.loads(r.stdout)["local"]
    assert {"ami_glance.upload", "ami_glance.find", "ami_nova.boot", "ami_nova.snapshot"} <= set(functions)
