"""A fake system root holding every kind of item the scrub (saltami/scrub.py) knows, and the
checks of what a scrub must leave of it: shared by the scrub's unit tests (plain directories)
and its integration tests (a loop-mounted ext4 image, a real minion). Standard library only."""
import os
import stat

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


def outside_of(tmp_path):
    """A host directory the scrub must never reach, beside the fake root."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def fake_root(tmp_path, outside):
    """A populated fake root in a plain directory."""
    root = tmp_path / "root"
    root.mkdir()
    populate(root, outside)
    return root
