"""The scrub's rules (saltami/scrub.py) on a fake system root in a plain directory: what goes,
what is emptied, what stays, links that must not be followed out of the root, and when the
SSH host key unit is installed; as a library call and as the script builders run with their
own python3. No root, no mount, no minion: tests/integration/test_scrub.py has those."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fakeroot
from fakeroot import UNIT, UNIT_LINK, check_report, check_scrubbed
from saltami import scrub

SCRIPT = Path(scrub.__file__).resolve()


@pytest.fixture
def outside(tmp_path):
    return fakeroot.outside_of(tmp_path)


@pytest.fixture
def fake_root(tmp_path, outside):
    return fakeroot.fake_root(tmp_path, outside)


def test_library_scrub_of_a_fake_root(fake_root, outside):
    report = scrub.scrub(root=str(fake_root), trim=False)
    check_report(report, fake_root)
    check_scrubbed(fake_root, outside)
    assert report["trim"]["method"] is None
    # nothing left to do the second time
    again = scrub.scrub(root=str(fake_root), trim=False)
    assert again["items"] and [i for i in again["items"] if i["removed"] or i["emptied"]] == []
    assert again["ssh_hostkeys"] == report["ssh_hostkeys"]


def test_script_mode_with_the_system_python(fake_root, outside):
    r = subprocess.run(["/usr/bin/python3", "-I", SCRIPT, "--root", fake_root, "--json", "--no-trim"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    check_report(report, fake_root)
    assert report["trim"]["method"] is None
    check_scrubbed(fake_root, outside)


def test_script_mode_refuses_a_missing_root(tmp_path):
    missing = tmp_path / "no-such-root"
    r = subprocess.run([sys.executable, SCRIPT, "--root", missing, "--json"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"scrub: root {missing} does not exist or is not a directory"


@pytest.mark.parametrize("cloud_cfg, disabled, unit", [
    ("cloud_init_modules:\n  - seed_random\n  - ssh\n  - set_hostname\n", False, False),
    ("cloud_init_modules:\n  - seed_random\n  - ssh\n", True, True),
    ("cloud_init_modules:\n  - ssh_import_id\n  - ssh-authkey-fingerprints\n", False, True),
])
def test_hostkey_unit_only_where_cloud_init_makes_no_keys(fake_root, cloud_cfg, disabled, unit):
    (fake_root / "usr/bin").mkdir(parents=True)
    (fake_root / "usr/bin/cloud-init").write_text("#!/bin/sh\n")
    (fake_root / "etc/cloud").mkdir()
    (fake_root / "etc/cloud/cloud.cfg").write_text(cloud_cfg)
    if disabled:
        (fake_root / "etc/cloud/cloud-init.disabled").touch()
    report = scrub.scrub(root=str(fake_root), trim=False)
    assert bool(report["ssh_hostkeys"]["installed"]) == unit == (fake_root / UNIT_LINK).is_symlink()


def test_no_hostkey_unit_without_openssh_server(fake_root):
    (fake_root / "usr/sbin/sshd").unlink()
    report = scrub.scrub(root=str(fake_root), trim=False)
    assert report["ssh_hostkeys"] == {"installed": [], "reason": "no openssh-server (/usr/sbin/sshd)"}
    assert not os.path.lexists(fake_root / UNIT)
