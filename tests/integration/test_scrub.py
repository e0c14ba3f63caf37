"""saltami/scrub.py on real files, as root: a fake system root (tests/fakeroot.py) in a
loop-mounted ext4 image, trimmed; files made immutable; a tmpfs that cannot be trimmed; and
through the ami module and scrub.sls of a real minion. scrub.sls scrubs the minion's own
root, so it is only rendered here, never applied. The scrub's rules on a fake root in a plain
directory, which need none of that, are unit tests (tests/unit/test_scrub_rules.py)."""
import contextlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest

import fakeroot
from fakeroot import check_report, check_scrubbed, populate
from helpers import REPO, MiB
from saltami import scrub

SCRIPT = REPO / "saltami" / "scrub.py"


def listing(root):
    """Everything under root with what a change would show."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            entries[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_blocks,
                                                    os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
    return entries


def allocated(path):
    os.sync()
    return os.stat(path).st_blocks * 512


def run(*cmd, **kwargs):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def mounted(source, mountpoint, *mount_args):
    """``source`` mounted at ``mountpoint``: an image file through a loop device of its own,
    or (with mount_args) anything mount takes; unmounted and detached whatever happens."""
    loop = None if mount_args else run("losetup", "--find", "--show", source).stdout.strip()
    try:
        run("mount", *mount_args, loop or source, mountpoint)
        try:
            yield mountpoint
        finally:
            run("umount", mountpoint)
    finally:
        if loop:
            run("losetup", "-d", loop)


@pytest.fixture
def outside(tmp_path):
    return fakeroot.outside_of(tmp_path)


@pytest.fixture
def image(tmp_path, outside):
    """A sparse 256 MiB ext4 image holding the fake root, and 96 MiB of data deleted from
    it that still occupies the image file: (image file, where to mount it)."""
    backing = tmp_path / "image.raw"
    with open(backing, "wb") as f:
        f.truncate(256 * MiB)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", backing)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(backing, mnt):
        populate(mnt, outside)
        with open(mnt / "deleted.bin", "wb") as f:
            for _ in range(96):
                f.write(os.urandom(MiB))
            os.fsync(f.fileno())
        (mnt / "deleted.bin").unlink()
    return backing, mnt


@pytest.fixture
def fake_root(tmp_path, outside):
    return fakeroot.fake_root(tmp_path, outside)


def test_scrub_of_an_image_leaves_no_identity_and_trims_it(image, outside):
    backing, mnt = image
    host_passwd = open("/etc/passwd", "rb").read()
    before = allocated(backing)
    with mounted(backing, mnt):
        start = time.monotonic()
        report = scrub.scrub(root=str(mnt))
        took = time.monotonic() - start
        check_scrubbed(mnt, outside)
        check_report(report, mnt)
        again = scrub.scrub(root=str(mnt), trim=False)
    after = allocated(backing)
    print(f"scrub with fstrim: {took:.2f} s; image allocated {before} -> {after} bytes; {report['trim']}")
    assert open("/etc/passwd", "rb").read() == host_passwd
    # a loop device punches holes for what fstrim discards: the scrub's probe reads them back as zeros
    assert report["trim"]["method"] == "fstrim" and report["trim"]["bytes"] > 96 * MiB, report["trim"]
    assert "read as zeros" in report["trim"]["detail"]
    # fstrim through the loop device punched holes where the deleted data was
    assert after < before - 80 * MiB
    # nothing left to do the second time; the unit is rewritten as it was
    assert [(i["removed"], i["emptied"]) for i in again["items"]] == [([], [])] * len(report["items"])
    assert again["ssh_hostkeys"] == report["ssh_hostkeys"]


def test_dry_run_touches_nothing_and_foretells_the_scrub(image):
    _backing, mnt = image
    with mounted(_backing, mnt):
        before = listing(mnt)
        dry = scrub.scrub(root=str(mnt), dry_run=True)
        assert listing(mnt) == before
        real = scrub.scrub(root=str(mnt), trim=False)
    assert dry["dry_run"] is True and dry["trim"]["method"] == "fstrim"
    assert dry["items"] == real["items"] and dry["ssh_hostkeys"] == real["ssh_hostkeys"]
    assert dry["bytes"] == real["bytes"] > 0


def test_script_mode_fails_when_something_cannot_be_removed(fake_root):
    stuck = fake_root / "root/.viminfo"
    run("chattr", "+i", stuck)  # immutable: not even root may unlink it
    try:
        r = subprocess.run([sys.executable, SCRIPT, "--root", fake_root, "--json"], capture_output=True, text=True)
    finally:
        run("chattr", "-i", stuck)
    assert r.returncode == 1
    assert "shell and tool histories: /root/.viminfo: Operation not permitted" in r.stderr
    report = json.loads(r.stdout)  # what was done all the same
    assert "trim" not in report and "/etc/machine-id" in report["items"][1]["emptied"]


def test_trim_falls_back_to_zero_fill_where_fstrim_cannot(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    assert scrub.trim_free_space(str(mnt))["method"] is None  # not a mount point: nothing is filled
    with mounted("tmpfs", mnt, "-t", "tmpfs", "-o", "size=8m"):
        full = scrub.trim_free_space(str(mnt))
        capped = scrub.trim_free_space(str(mnt), zero_fill_cap=MiB)
        assert list(mnt.iterdir()) == []
    assert full["method"] == "zero-fill" and "not supported" in full["detail"]
    assert 7 * MiB < full["bytes"] <= 8 * MiB
    assert capped["bytes"] == MiB


def test_module_through_a_minion(salt_call, fake_root, outside):
    ret = salt_call.run("ami.scrub", root=str(fake_root), trim=False)
    assert ret.returncode == 0, ret.stderr
    check_report(ret.data, fake_root)
    check_scrubbed(fake_root, outside)

    ret = salt_call.run("ami.scrub", root=str(fake_root / "missing"))
    assert ret.returncode != 0
    assert "does not exist or is not a directory" in ret.stdout + ret.stderr


def test_scrub_sls_renders_and_serves_the_one_script(salt_call):
    assert (REPO / "salt/formulas/ami/scrub.py").is_symlink()
    assert (REPO / "salt/formulas/ami/scrub.py").resolve() == SCRIPT.resolve()

    def script_state(**kwargs):
        ret = salt_call.run("state.show_sls", "ami.scrub", **kwargs)
        assert ret.returncode == 0, ret.stderr
        declaration = ret.data["ami-scrub"]["cmd"]
        assert "script" in declaration
        return {k: v for arg in declaration if isinstance(arg, dict) for k, v in arg.items()}

    state = script_state()
    assert state["source"] == "salt://ami/scrub.py" and state["args"] == "--root / --json --salt disable"
    assert script_state(pillar={"ami": {"scrub": {"trim": False}}})["args"] == \
        "--root / --json --salt disable --no-trim"
    assert script_state(pillar={"ami": {"scrub": {"salt": "keep"}}})["args"] == "--root / --json --salt keep"

    served = salt_call.run("cp.get_file_str", "salt://ami/scrub.py")
    assert served.returncode == 0 and served.data == SCRIPT.read_text()
