"""saltami/scrub.py on real files: a fake system root in a loop-mounted ext4 image (and in
plain directories), as a library call, as the script builders run, and through the ami module
and scrub.sls of a real minion. scrub.sls scrubs the minion's own root, so it is only
rendered here, never applied."""
import contextlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from helpers import REPO
from helpers import MiB
from saltami import scrub

SCRIPT = REPO / "saltami" / "scrub.py"
UNIT = "etc/systemd/system/ami-ssh-hostkeys.service"
UNIT_LINK = "etc/systemd/system/multi-user.target.wants/ami-ssh-hostkeys.service"

# paths of the fake root (relative to it) that the scrub must take away
GONE = [
    "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_rsa_key.pub", "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "var/lib/dbus/machine-id",
    "etc/salt/minion_id", "etc/salt/pki/minion/minion.pem", "etc/salt/pki/minion/minion.pub",
    "etc/salt/pki/minion/minion_master.pub", "etc/salt/minion.d/ami-builder.conf",
    "var/cache/salt/minion/files/base/top.sls", "var/cache/salt/minion/proc/20250101", "var/log/salt/minion",
    "var/lib/cloud/instances/i-0001/user-data.txt", "var/lib/cloud/data/instance-id",
    "var/lib/cloud/sem/config_scripts_per_once.once", "run/cloud-init/status.json", "var/log/cloud-init.log",
    "var/log/cloud-init-output.log",
    "var/lib/dhcp/dhclient.eth0.leases", "var/lib/NetworkManager/internal-0a1b-eth0.lease",
    "run/systemd/netif/leases/2",
    "etc/udev/rules.d/70-persistent-net.rules",
    "var/log/syslog.1", "var/log/syslog.2.gz", "var/log/apt/history.log.1.gz", "var/log/dpkg.log.old",
    "var/log/messages-20250101", "var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
    "root/.python_history", "root/.viminfo", "root/.lesshst", "home/user/.bash_history",
    "home/user/.zsh_history", "home/user/.mysql_history", "home/user/.psql_history", "home/user/.sqlite_history",
    "var/cache/apt/archives/hello_2.10_amd64.deb", "var/cache/apt/archives/partial/curl_7.88_amd64.deb",
    "var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin",
    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
    "var/lib/apt/lists/partial/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.diff",
    "var/cache/dnf/fedora/packages/bash.rpm", "var/cache/yum/x86_64/primary.sqlite",
    "root/.cache/pip/http/a/b/c",
    "tmp/build.log", "tmp/.hidden", "tmp/work/nested/file", "var/tmp/leftover",
    "root/.ssh/authorized_keys", "home/user/.ssh/authorized_keys",
    "var/lib/systemd/random-seed", "var/lib/urandom/random-seed", "var/lib/systemd/credential.secret",
]
# symlinks to take away as links: (path, target)
GONE_LINKS = [
    ("root/.bash_history", "/etc/passwd"),  # followed, this would empty or remove /etc/passwd
    ("var/lib/cloud/instance", "/var/lib/cloud/instances/i-0001"),
]
# files that stay, emptied
EMPTIED = ["etc/machine-id", "var/log/syslog", "var/log/auth.log", "var/log/apt/history.log", "var/log/wtmp"]
# files that stay byte for byte
KEPT = [
    "etc/passwd", "etc/ssh/sshd_config", "etc/salt/minion", "etc/salt/minion.d/user.conf", "home/user/.bashrc",
    "root/.ssh/known_hosts", "var/lib/apt/lists/lock", "var/cache/apt/archives/lock",
    "etc/udev/rules.d/75-persistent-net-generator.rules", "usr/sbin/sshd", "lib/systemd/system/ssh.service",
]
KEPT_DIRS = ["var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/log/journal", "var/log/apt",
             "var/cache/dnf", "var/cache/yum", "home/user/.ssh"]
STICKY = ["tmp", "var/tmp"]


def content(rel):
    if rel in ("var/lib/apt/lists/lock", "var/cache/apt/archives/lock"):
        return b""
    return f"{rel}: not the same in any two files\n".encode() * 64


def populate(root, outside):
    """A small system of every kind of item the scrub knows, plus links that point at
    ``outside``, a host directory the scrub must never reach."""
    for rel in GONE + EMPTIED + KEPT:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(rel))
    for rel, target in GONE_LINKS:
        (root / rel).symlink_to(target)
    for rel in KEPT_DIRS:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in STICKY:
        (root / rel).chmod(0o1777)
    (outside / "keep").write_bytes(b"host file\n")
    # absolute links to a host path: inside the image they name root/<that path>, which is not there
    (root / "var/lib/dhclient").symlink_to(outside)
    (root / "var/log/host-log").symlink_to(outside / "keep")
    (root / "tmp/host-dir").symlink_to(outside)


def check_scrubbed(root, outside):
    leftovers = [rel for rel in GONE + [rel for rel, _ in GONE_LINKS] if os.path.lexists(root / rel)]
    assert leftovers == []
    for rel in EMPTIED:
        assert (root / rel).is_file() and (root / rel).stat().st_size == 0, rel
    for rel in KEPT:
        assert (root / rel).read_bytes() == content(rel), rel
    for rel in KEPT_DIRS:
        assert (root / rel).is_dir() and not (root / rel).is_symlink(), rel
    for rel in STICKY:
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o1777, rel
        assert list((root / rel).iterdir()) == []
    assert (root / "var/lib/dhclient").is_symlink() and (root / "var/log/host-log").is_symlink()
    assert (outside / "keep").read_bytes() == b"host file\n"
    unit = (root / UNIT).read_text()
    for line in ("ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key", "ExecStart=/usr/bin/ssh-keygen -A",
                 "Before=ssh.service sshd.service", "WantedBy=multi-user.target", "Type=oneshot"):
        assert line in unit.splitlines()
    assert os.readlink(root / UNIT_LINK) == "/" + UNIT


def check_report(report, root):
    reported = {p for item in report["items"] for p in item["removed"] + item["emptied"]}
    every = ["/" + rel for rel in GONE + [rel for rel, _ in GONE_LINKS] + EMPTIED]
    assert [p for p in every if not any(p == r or p.startswith(r + "/") for r in reported)] == []
    assert not reported & {"/" + rel for rel in KEPT + KEPT_DIRS}
    assert report["root"] == str(root) and report["bytes"] > 0
    assert report["ssh_hostkeys"]["installed"] == ["/" + UNIT, "/" + UNIT_LINK]
    assert not any("errors" in item for item in report["items"])


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
    path = tmp_path / "outside"
    path.mkdir()
    return path


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
    root = tmp_path / "root"
    root.mkdir()
    populate(root, outside)
    return root


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
    assert report["trim"]["method"] == "fstrim" and report["trim"]["bytes"] > 96 * MiB
    # fstrim through the loop device punched holes where the deleted data was
    assert after < before - 80 * MiB
    # nothing left to do the second time; the unit is rewritten as it was
    assert [(i["removed"], i["emptied"]) for i in again["items"]] == [([], [])] * len(scrub.RULES)
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
    assert state["source"] == "salt://ami/scrub.py" and state["args"] == "--root / --json"
    assert script_state(pillar={"ami": {"scrub": {"trim": False}}})["args"] == "--root / --json --no-trim"

    served = salt_call.run("cp.get_file_str", "salt://ami/scrub.py")
    assert served.returncode == 0 and served.data == SCRIPT.read_text()
