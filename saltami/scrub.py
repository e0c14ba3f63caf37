#!/usr/bin/env python3
"""Remove from a system what must not be in a golden image: host identity (SSH host keys,
machine id, Salt and cloud-init state, DHCP leases), the build's traces (logs, histories,
package caches, temporary files, the builder's authorized_keys), then trim the free space
so the snapshot stays small.

Standard library only, and nothing from the rest of saltami: builders that lack the library
get this file alone and run it as a script (salt/formulas/ami/scrub.sls):

    python3 scrub.py --root / [--no-trim] [--salt disable|keep|remove] [--dry-run] [--json]

``root`` may be the mount point of an image rather than the running system. Every path is
looked up as it would be after chroot(root): a symlink inside the image is followed only
within root, and the last component of what is removed is never followed (a
/root/.bash_history -> /dev/null link goes as a link)."""
import argparse
import errno
import fcntl
import fnmatch
import json
import mmap
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

HOMES = ("/root", "/home/*")
HISTORIES = (".bash_history", ".zsh_history", ".python_history", ".lesshst", ".viminfo",
             ".mysql_history", ".psql_history", ".sqlite_history")
# rotated logs: compressed, numbered (syslog.1), .old, or logrotate's dateext (messages-20240101)
ROTATED_LOG = re.compile(r"(\.(gz|xz|bz2|zst|lz4|old|\d+)|-\d{8})$")
# /run is a tmpfs at boot, so in an image it holds only what a chroot left there; on the
# running system it is the live state of running services
RUNTIME = "/run/"

HOSTKEY_UNIT = "ami-ssh-hostkeys.service"
HOSTKEY_UNIT_TEXT = """\
# Installed by salt-ami's scrub: the golden image ships without SSH host keys
[Unit]
Description=Generate SSH host keys on an instance's first boot
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
# cloud-init's ssh module (cc_ssh, once per instance) generates every missing host key
# whatever ssh_deletekeys says (that option only decides whether it deletes existing ones
# first), so the unit is needed only where that module does not run
CLOUD_INIT_SSH_MODULE = re.compile(r"""^\s*-\s*\[?\s*["']?ssh["']?\s*([,\]#].*)?$""", re.M)


# What becomes of salt in the image (the flavour's `salt` key): its minion service stays
# enabled (keep), is disabled so that no clone starts a minion of its own at boot (disable),
# or what the build installed to run salt is removed as well (remove)
SALT_CHOICES = ("disable", "keep", "remove")
SALT_MINION_SERVICE = ("/etc/systemd/system/*.wants/salt-minion.service",
                       "/etc/systemd/system/*.wants/salt-minion@*.service", "/etc/rc[2-5].d/S[0-9][0-9]salt-minion")
# what the builder's salt bootstrap installed (saltami/pipeline/minion_server.py writes it)
SALT_INSTALLED = "/run/salt-ami/installed"

# The last thing a running builder does is shut down, and the shutdown writes after the scrub:
# systemd-random-seed saves a seed that every clone would share, systemd-update-utmp a record
# in wtmp, a DHCP client its lease, journald and services their last lines. A unit that lives
# in /run (so never in the image) scrubs again once those are written: its ExecStop runs after
# theirs, since it is ordered before them, and before the filesystems go read-only.
SHUTDOWN_UNIT = "ami-scrub-at-shutdown.service"
SHUTDOWN_SCRIPT = "/run/salt-ami-scrub.py"
SHUTDOWN_UNIT_TEXT = """\
# Installed by salt-ami's scrub, in /run: it never reaches the image
[Unit]
Description=salt-ami: scrub what the shutdown wrote, before the image is taken
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target systemd-random-seed.service systemd-update-utmp.service systemd-journal-flush.service
# and after the network is down: a DHCP client writes its lease as it lets go
Before=network-pre.target networking.service systemd-networkd.service NetworkManager.service
RequiresMountsFor=/var/lib /var/log

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop={python} {script} --root / --no-trim --at-shutdown --salt {salt}
TimeoutStopSec=300
"""


class ScrubError(Exception):
    """Something could not be scrubbed; ``report`` says what was done all the same."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class InvalidRoot(ScrubError):
    """The root to scrub is not a directory."""


# ----------------------------------------------------------------------------- paths in root
def _parts(path):
    return [p for p in path.split("/") if p not in ("", ".")]


def _inside(root, host):
    """How the system being scrubbed names the host path ``host``."""
    if root == "/":
        return host
    relative = os.path.relpath(host, root)
    return "/" if relative == "." else "/" + relative


def _resolve(root, path):
    """The host path of ``path`` (a path inside root) with every symlink followed as after
    chroot(root): an absolute target starts again at root and '..' stops there, so the result
    is always under root. None if it does not exist or loops."""
    todo, done, hops = _parts(path)[::-1], [], 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, part)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        hops += 1
        if hops > 40:
            return None
        target = os.readlink(host)
        if target.startswith("/"):
            done = []
        todo.extend(_parts(target)[::-1])
    return os.path.join(root, *done)


def _glob(root, pattern):
    """Host paths under root that match ``pattern`` (shell wildcards; '*' skips dot names
    like the shell does). Directories on the way are resolved inside root; what matches
    last is not followed."""
    parts = _parts(pattern)
    found = [root]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        matches = []
        for directory in found:
            for name in _names_matching(directory, part):
                host = os.path.join(directory, name)
                if not last:
                    host = _resolve(root, _inside(root, host))
                    if host is None or not os.path.isdir(host):
                        continue
                matches.append(host)
        found = matches
    return found


def _names_matching(directory, part):
    if not any(c in part for c in "*?["):
        return [part] if os.path.lexists(os.path.join(directory, part)) else []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if fnmatch.fnmatchcase(n, part) and (part[0] == "." or n[0] != "."))


def _makedirs(root, path):
    """Host path of directory ``path`` inside root, made where missing."""
    host = root
    for part in _parts(path):
        found = _resolve(root, _inside(root, os.path.join(host, part)))
        if found is None:
            found = os.path.join(host, part)
            os.mkdir(found, 0o755)
        host = found
    return host


# ----------------------------------------------------------------------------- actions
class _Item:
    """What one rule did: paths as the scrubbed system names them, and allocated bytes
    given back (du's measure: a sparse lastlog counts what it occupies). ``done`` is shared
    by the rules of a scrub: what one rule removed or emptied, later ones leave alone, so
    that a dry run, which removes nothing, reports what the real run will do."""

    def __init__(self, root, dry_run, done):
        self.root, self.dry_run, self.done = root, dry_run, done
        self.removed, self.emptied, self.skipped, self.errors = [], [], [], []
        self.bytes = 0

    def name(self, host):
        return _inside(self.root, host)

    def done_before(self, path):
        while path != self.root:
            if path in self.done:
                return True
            path = os.path.dirname(path)
        return False


def _freed(st):
    # another hard link keeps the inode and its blocks
    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
        return 0
    return st.st_blocks * 512


def _children(item, path):
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        if child in item.done:
            continue
        try:
            yield child, os.lstat(child)
        except FileNotFoundError:  # on a running system things come and go
            continue


def _delete(item, path, st, dev):
    """Remove ``path``, a whole tree for a directory, without following a symlink or
    entering another filesystem (a bind mount in a chroot). True if it is gone."""
    if st.st_dev != dev:
        item.skipped.append(f"{item.name(path)}: another filesystem is mounted there")
        return False
    gone = True
    if stat.S_ISDIR(st.st_mode):
        for child, child_st in _children(item, path):
            gone = _delete(item, child, child_st, dev) and gone
    if gone:
        item.done.add(path)
        item.bytes += _freed(st)
        if not item.dry_run:
            try:
                (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(path)
            except FileNotFoundError:
                pass
    return gone


def remove(item, path, st):
    """Remove files, symlinks (as links) and whole directories."""
    if _delete(item, path, st, os.lstat(os.path.dirname(path)).st_dev):
        item.removed.append(item.name(path))


def remove_file(item, path, st):
    """Remove a regular file; leave anything else, such as a symlink to the real one."""
    if stat.S_ISREG(st.st_mode):
        remove(item, path, st)
    else:
        item.skipped.append(f"{item.name(path)}: kept, not a regular file")


def empty_file(item, path, st):
    """Truncate a regular file to 0 bytes, keeping it with its owner and mode."""
    if not stat.S_ISREG(st.st_mode):
        item.skipped.append(f"{item.name(path)}: kept, not a regular file")
        return
    if st.st_size == 0:
        return
    item.done.add(path)
    item.emptied.append(item.name(path))
    item.bytes += _freed(st)
    if not item.dry_run:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def empty_dir(item, path, st):
    """Remove what a directory holds, dot files too; the directory and its mode stay."""
    if not stat.S_ISDIR(st.st_mode):
        item.skipped.append(f"{item.name(path)}: kept, not a directory")
        return
    for child, child_st in _children(item, path):
        if _delete(item, child, child_st, st.st_dev):
            item.removed.append(item.name(child))


def truncate_logs(item, path, st):
    """Remove rotated logs, empty the others: daemons keep writing to the files they
    expect, with the owners and modes they need."""
    if not stat.S_ISDIR(st.st_mode):
        item.skipped.append(f"{item.name(path)}: kept, not a directory")
        return
    for child, child_st in _children(item, path):
        if child_st.st_dev != st.st_dev:
            item.skipped.append(f"{item.name(child)}: another filesystem is mounted there")
        elif stat.S_ISDIR(child_st.st_mode):
            truncate_logs(item, child, child_st)
        elif stat.S_ISREG(child_st.st_mode):
            (remove if ROTATED_LOG.search(child) else empty_file)(item, child, child_st)


# What saltami/audit.py also looks for in a finished image
SSH_HOST_KEYS = ("/etc/ssh/ssh_host_*",)
SALT_MINION_IDENTITY = ("/etc/salt/minion_id", "/etc/salt/pki", "/etc/salt/minion.d/ami-builder.conf")
SALT_MINION_STATE = ("/var/cache/salt/minion", "/var/log/salt")
CLOUD_INIT_STATE = ("/var/lib/cloud/instances", "/var/lib/cloud/instance", "/var/lib/cloud/data",
                    "/var/lib/cloud/sem", "/run/cloud-init", "/var/log/cloud-init*.log")
DHCP_LEASES = ("/var/lib/dhcp/*.leases", "/var/lib/dhclient/*", "/var/lib/NetworkManager/*.lease",
               "/run/systemd/netif/leases/*")
AUTHORIZED_KEYS = tuple(f"{home}/.ssh/authorized_keys" for home in HOMES)
RANDOM_SEEDS = ("/var/lib/systemd/random-seed", "/var/lib/urandom/random-seed")

# One line per rule: (what, action, patterns). Patterns are paths inside root with shell
# wildcards; one starting with "!" takes its matches out of the rule's. Order matters where
# rules overlap: what goes entirely is listed before the logs that are only emptied.
RULES = (
    ("SSH host keys", remove, SSH_HOST_KEYS),
    ("machine id (systemd makes a new one at first boot)", empty_file, ("/etc/machine-id",)),
    ("D-Bus machine id copy", remove_file, ("/var/lib/dbus/machine-id",)),
    ("Salt minion identity and the build's minion config", remove, SALT_MINION_IDENTITY),
    ("Salt minion cache and logs", remove, SALT_MINION_STATE),
    ("cloud-init instance state", remove, CLOUD_INIT_STATE),
    ("DHCP leases", remove, DHCP_LEASES),
    ("udev persistent net rules", remove, ("/etc/udev/rules.d/70-persistent-net.rules",)),
    ("per-machine secrets of systemd and NetworkManager", remove,
     ("/var/lib/systemd/credential.secret", "/var/lib/NetworkManager/secret_key")),
    ("random seeds", remove, RANDOM_SEEDS),
    ("journal", empty_dir, ("/var/log/journal",)),
    ("logs", truncate_logs, ("/var/log",)),
    ("shell and tool histories", remove, tuple(f"{home}/{name}" for home in HOMES for name in HISTORIES)),
    ("the builder's authorized_keys", remove, AUTHORIZED_KEYS),
    ("apt caches and package lists", remove,
     ("/var/cache/apt/archives/*.deb", "/var/cache/apt/archives/partial/*", "/var/cache/apt/*.bin",
      "/var/lib/apt/lists/*", "/var/lib/apt/lists/partial/*", "!/var/lib/apt/lists/lock",
      "!/var/lib/apt/lists/partial")),
    ("yum and dnf caches", empty_dir, ("/var/cache/yum", "/var/cache/dnf")),
    ("pip caches", remove, tuple(f"{home}/.cache/pip" for home in HOMES)),
    ("temporary files", empty_dir, ("/tmp", "/var/tmp")),
)


def _apply(root, rule, dry_run, done):
    description, action, patterns = rule
    item = _Item(root, dry_run, done)
    targets, excluded = set(), set()
    for pattern in patterns:
        if pattern.lstrip("!").startswith(RUNTIME) and root == "/":
            item.skipped.append(f"{pattern}: state of the running system")
            continue
        if pattern.startswith("!"):
            excluded.update(_glob(root, pattern[1:]))
        else:
            targets.update(_glob(root, pattern))
    for path in sorted(targets - excluded):
        if item.done_before(path):
            continue
        try:
            action(item, path, os.lstat(path))
        except FileNotFoundError:
            continue
        except OSError as e:
            item.errors.append(f"{item.name(e.filename or path)}: {e.strerror or e}")
    report = {"description": description, "action": action.__name__, "removed": item.removed,
              "emptied": item.emptied, "bytes": item.bytes}
    report.update({k: v for k, v in (("skipped", item.skipped), ("errors", item.errors)) if v})
    return report


# ----------------------------------------------------------------------------- SSH host keys
def _exists(root, path):
    return _resolve(root, path) is not None


def _cloud_init_makes_host_keys(root):
    if not _exists(root, "/usr/bin/cloud-init") or _exists(root, "/etc/cloud/cloud-init.disabled"):
        return False
    for config in _glob(root, "/etc/cloud/cloud.cfg") + _glob(root, "/etc/cloud/cloud.cfg.d/*.cfg"):
        config = _resolve(root, _inside(root, config))
        if config and os.path.isfile(config):
            with open(config, encoding="utf-8", errors="replace") as f:
                if CLOUD_INIT_SSH_MODULE.search(f.read()):
                    return True
    return False


def ensure_hostkeys_at_first_boot(root, dry_run=False):
    """Install and enable a oneshot unit that makes the host keys before sshd starts, where
    the image has openssh-server and systemd and cloud-init will not make them itself."""
    unit = f"/etc/systemd/system/{HOSTKEY_UNIT}"
    link = f"/etc/systemd/system/multi-user.target.wants/{HOSTKEY_UNIT}"
    if not _exists(root, "/usr/sbin/sshd"):
        return {"installed": [], "reason": "no openssh-server (/usr/sbin/sshd)"}
    if not (_exists(root, "/lib/systemd/system") or _exists(root, "/usr/lib/systemd/system")):
        return {"installed": [], "reason": "no systemd to start a unit"}
    if _cloud_init_makes_host_keys(root):
        return {"installed": [], "reason": "cloud-init's ssh module makes the host keys at first boot"}
    if not dry_run:
        unit_host = os.path.join(_makedirs(root, os.path.dirname(unit)), HOSTKEY_UNIT)
        link_host = os.path.join(_makedirs(root, os.path.dirname(link)), HOSTKEY_UNIT)
        for path in (unit_host, link_host):
            if os.path.lexists(path):  # replaced, never written through
                os.unlink(path)
        fd = os.open(unit_host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(HOSTKEY_UNIT_TEXT)
        os.symlink(unit, link_host)
    return {"installed": [unit, link], "reason": "openssh-server without cloud-init: keys are made at first boot"}


# ----------------------------------------------------------------------------- salt in the image
def disable_salt_minion(root, dry_run, done):
    """The image's own salt-minion service no longer starts at boot: a clone would start a
    minion that the image's master (or DNS name "salt") does not expect, or worse, accepts."""
    return _apply(root, ("the image's salt-minion service (disabled at boot)", remove, SALT_MINION_SERVICE),
                  dry_run, done)


def installed_by_build(root):
    """What the builder's salt bootstrap recorded it installed: {"directory": [...], "file":
    [...], "package": [...]} (only on the running builder: the record is on its /run)."""
    found = {"directory": [], "file": [], "package": []}
    if root != "/":
        return found
    try:
        with open(SALT_INSTALLED) as f:
            for line in f:
                kind, _, value = line.strip().partition(" ")
                if kind in found and value:
                    found[kind].append(value)
    except FileNotFoundError:
        pass
    return found


def remove_installed_salt(root, dry_run, done):
    """Remove what the build installed to run salt where the base had none."""
    installed = installed_by_build(root)
    report = _apply(root, ("salt installed by the build", remove,
                           tuple(installed["directory"] + installed["file"])), dry_run, done)
    report["packages"] = installed["package"]
    if installed["package"] and not dry_run:
        r = subprocess.run(["apt-get", "purge", "-y", "-q", *installed["package"]], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode:
            report.setdefault("errors", []).append(f"apt-get purge {' '.join(installed['package'])}: "
                                                   f"{(r.stderr or r.stdout).strip()[-300:]}")
    return report


def _own_source():
    """This script's text, read before the scrub empties /tmp, where salt's cmd.script puts it."""
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        return f.read()


def arm_shutdown_scrub(root, salt, source, dry_run=False):
    """On a running systemd system, a unit in /run that scrubs again at shutdown, once the
    shutdown has written its last (SHUTDOWN_UNIT_TEXT says why), with this script's
    ``source``; nothing elsewhere."""
    if root != "/" or not os.path.isdir("/run/systemd/system"):
        return {"armed": False, "reason": "not a running systemd system"}
    if dry_run:
        return {"armed": False, "reason": "dry run"}
    fd = os.open(SHUTDOWN_SCRIPT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(source)
    unit = os.path.join("/run/systemd/system", SHUTDOWN_UNIT)
    with open(unit, "w") as f:
        f.write(SHUTDOWN_UNIT_TEXT.format(python=sys.executable or "/usr/bin/python3", script=SHUTDOWN_SCRIPT,
                                          salt=salt))
    for cmd in (["systemctl", "daemon-reload"], ["systemctl", "start", SHUTDOWN_UNIT]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise ScrubError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return {"armed": True, "unit": unit}


# ----------------------------------------------------------------------------- trim
# Whether discard really frees: a file of a known pattern is written, its blocks located
# (FIEMAP), the file deleted; after fstrim those blocks are read from the device itself. A
# disk that honours discard (a loop device, qcow2 or RBD with discard on) reads zeros there;
# one that ignores it, as a default nova does, still holds the pattern, and deleted files
# would ship in the image: then the free space is zero-filled.
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
# unknown, delayed, encoded, encrypted, not aligned, inline, shared...: no plain block range
FIEMAP_UNUSABLE = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
FIEMAP_HEADER = struct.Struct("=QQIIII")
FIEMAP_EXTENT = struct.Struct("=QQQQQI3I")
PROBE_BYTES = 4 << 20
PROBE_PATTERN = b"salt-ami discard probe: these bytes must read as zeros once discarded\n"
# filesystems whose FIEMAP gives offsets on the device they are on
PROBE_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs")


def _unescape(field):
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounted_device(root):
    """(device node, fstype) of the filesystem mounted at root, or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == root:
                sep = fields.index("-")
                found = (fields[2], _unescape(fields[sep + 2]), fields[sep + 1])
    if found is None:
        return None
    dev_id, source, fstype = found
    if not (source.startswith("/dev/") and os.path.exists(source)):
        try:
            with open(f"/sys/dev/block/{dev_id}/uevent") as f:
                name = dict(line.strip().split("=", 1) for line in f if "=" in line).get("DEVNAME")
            source = f"/dev/{name}"
        except (OSError, ValueError):
            return None
    return source, fstype


def _extents(fd, count=256):
    buf = bytearray(FIEMAP_HEADER.size + FIEMAP_EXTENT.size * count)
    FIEMAP_HEADER.pack_into(buf, 0, 0, 0xFFFFFFFFFFFFFFFF, FIEMAP_FLAG_SYNC, 0, count, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    mapped = FIEMAP_HEADER.unpack_from(buf, 0)[3]
    extents = []
    for i in range(mapped):
        _logical, physical, length, _r1, _r2, flags, *_ = FIEMAP_EXTENT.unpack_from(
            buf, FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size)
        extents.append((physical, length, flags))
    return extents


class DiscardProbe:
    """``prepare()`` before fstrim, ``verdict()`` after: (True, why) when the discarded
    blocks read as zeros, else (False, why)."""

    def __init__(self, root):
        self.root, self.device, self.extents, self.problem = root, None, [], None

    def prepare(self):
        found = _mounted_device(self.root)
        if found is None:
            self.problem = f"no block device found under {self.root}"
            return self
        self.device, fstype = found
        if fstype not in PROBE_FILESYSTEMS:
            self.problem = f"cannot locate the blocks of a file on {fstype}"
            return self
        data = (PROBE_PATTERN * (PROBE_BYTES // len(PROBE_PATTERN) + 1))[:PROBE_BYTES]
        fd, path = tempfile.mkstemp(prefix=".ami-discard-probe-", dir=self.root)
        try:
            os.write(fd, data)
            os.fsync(fd)
            self.extents = _extents(fd)
        except OSError as e:
            self.problem = f"probe file: {e.strerror or e}"
        finally:
            os.close(fd)
            os.unlink(path)
        os.sync()  # the deletion committed: its blocks are free for fstrim
        if not self.problem and (not self.extents or any(flags & FIEMAP_UNUSABLE for _p, _l, flags in self.extents)):
            self.problem = "the probe file's blocks cannot be located"
        return self

    def verdict(self):
        if self.problem:
            return False, self.problem
        page = mmap.PAGESIZE
        buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
        try:
            fd = os.open(self.device, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
        except OSError as e:
            return False, f"cannot read {self.device}: {e.strerror}"
        try:
            for physical, length, _flags in self.extents:
                start, end = physical - physical % page, physical + length
                while start < end:
                    size = os.preadv(fd, [buf], start)
                    if size <= 0:
                        break
                    if buf[:size].count(0) != size:
                        return False, (f"{self.device} still holds the data of a deleted file after fstrim "
                                       "(the disk ignores discard)")
                    start += size
        except OSError as e:
            return False, f"cannot read {self.device}: {e.strerror}"
        finally:
            os.close(fd)
            buf.close()
        return True, f"discarded blocks of {self.device} read as zeros"


def zero_fill(root, cap=None):
    """Write zeros to a file under root until the filesystem is full (or ``cap`` bytes),
    then delete it: the freed blocks of deleted files read as zeros, which image
    conversion and compression skip. Bytes written."""
    chunk = memoryview(bytes(1 << 20))
    fd, path = tempfile.mkstemp(prefix=".ami-zero-fill-", dir=root)
    written = 0
    try:
        while cap is None or written < cap:
            try:
                written += os.write(fd, chunk if cap is None else chunk[:min(len(chunk), cap - written)])
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        try:
            os.fsync(fd)
        except OSError as e:
            # some filesystems allocate only at writeback: a full disk is the goal here
            if e.errno != errno.ENOSPC:
                raise
    finally:
        os.close(fd)
        os.unlink(path)
    return written


def trim_free_space(root, dry_run=False, zero_fill_cap=None):
    """fstrim root (discarded blocks become holes of a loop-backed image, or unmapped
    blocks of a cloud volume), else zero-fill it. Only for a mount point: anywhere else both
    would reach the filesystem around root."""
    if not os.path.ismount(root):
        return {"method": None, "bytes": 0, "detail": f"{root} is not a mount point"}
    if dry_run:
        return {"method": "fstrim", "bytes": 0, "detail": "dry run (zero-fill if fstrim is not possible)"}
    fstrim = shutil.which("fstrim", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if fstrim:
        probe = DiscardProbe(root).prepare()
        r = subprocess.run([fstrim, "-v", root], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, env=dict(os.environ, LC_ALL="C"))
        if r.returncode == 0:
            trimmed = re.search(r"\((\d+) bytes\)", r.stdout)
            freed, why = probe.verdict()
            if freed:
                return {"method": "fstrim", "bytes": int(trimmed.group(1)) if trimmed else None,
                        "detail": f"{r.stdout.strip()}; {why}"}
            why = f"fstrim ran ({r.stdout.strip()}) but freeing cannot be shown: {why}"
        else:
            why = f"fstrim not possible: {r.stderr.strip() or f'fstrim exited {r.returncode}'}"
    else:
        why = "fstrim not possible: fstrim is not installed"
    return {"method": "zero-fill", "bytes": zero_fill(root, zero_fill_cap), "detail": why}


# ----------------------------------------------------------------------------- scrub
def scrub(root="/", trim=True, dry_run=False, zero_fill_cap=None, salt="disable", at_shutdown=False):
    """Scrub ``root`` (the running system, or the mount point of an image): apply RULES,
    handle salt in the image as ``salt`` says (SALT_CHOICES), make sure sshd gets host keys
    at first boot, then trim the free space unless ``trim`` is false. On a running systemd
    system, arm a scrub at shutdown of what the shutdown writes (``at_shutdown`` is that
    scrub itself). ``dry_run`` reports what would go and changes nothing.

    Returns {"root", "dry_run", "items": [one report per rule], "bytes", "ssh_hostkeys",
    "at_shutdown", "trim"}. Raises InvalidRoot, or ScrubError (with ``report``) when
    anything could not be removed."""
    if not os.path.isdir(root):
        raise InvalidRoot(f"root {root} does not exist or is not a directory")
    if salt not in SALT_CHOICES:
        raise InvalidRoot(f"salt {salt!r} is not one of {', '.join(SALT_CHOICES)}")
    root = os.path.realpath(root)
    source = _own_source() if root == "/" and not at_shutdown else None
    done = set()
    items = [_apply(root, rule, dry_run, done) for rule in RULES]
    if salt != "keep":
        items.append(disable_salt_minion(root, dry_run, done))
    report = {"root": root, "dry_run": dry_run, "items": items}
    errors = [f"{i['description']}: {e}" for i in items for e in i.get("errors", ())]
    try:
        report["ssh_hostkeys"] = ensure_hostkeys_at_first_boot(root, dry_run)
    except OSError as e:
        errors.append(f"SSH host key unit: {e}")
    if not at_shutdown and not errors:
        try:
            report["at_shutdown"] = arm_shutdown_scrub(root, salt, source, dry_run)
        except (OSError, ScrubError) as e:
            errors.append(f"scrub at shutdown: {e}")
    # the builder's minion runs from what the build installed: it goes at shutdown if it can
    if salt == "remove" and (at_shutdown or not report.get("at_shutdown", {}).get("armed")):
        items.append(remove_installed_salt(root, dry_run, done))
        errors += [f"{items[-1]['description']}: {e}" for e in items[-1].get("errors", ())]
    report["bytes"] = sum(i["bytes"] for i in items)
    if errors:
        # an image that is not clean must not be built: no time goes into trimming it
        raise ScrubError(f"scrub of {root} incomplete: " + "; ".join(errors), report)
    report["trim"] = (trim_free_space(root, dry_run, zero_fill_cap) if trim and not at_shutdown
                      else {"method": None, "bytes": 0, "detail": "not asked"})
    return report


def _summary(report):
    lines = []
    for item in report["items"]:
        if item["removed"] or item["emptied"] or item.get("errors"):
            lines.append(f"{item['description']}: {len(item['removed'])} removed, {len(item['emptied'])} emptied, "
                         f"{item['bytes']} bytes")
            lines.extend(f"  error: {e}" for e in item.get("errors", ()))
    if "ssh_hostkeys" in report:
        hostkeys = report["ssh_hostkeys"]
        lines.append(f"SSH host keys at first boot: {', '.join(hostkeys['installed']) or 'no unit'} "
                     f"({hostkeys['reason']})")
    if report.get("at_shutdown", {}).get("armed"):
        lines.append(f"scrub at shutdown: {report['at_shutdown']['unit']}")
    if "trim" in report:
        lines.append(f"trim: {report['trim']['method'] or 'none'}, {report['trim']['bytes']} bytes "
                     f"({report['trim']['detail']})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/", help="the system to scrub (default /)")
    parser.add_argument("--no-trim", dest="trim", action="store_false", help="leave the free space as it is")
    parser.add_argument("--dry-run", action="store_true", help="report what would go, change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--zero-fill-cap", type=int, metavar="BYTES",
                        help="write at most this many zeros when fstrim is not possible")
    parser.add_argument("--salt", choices=SALT_CHOICES, default="disable",
                        help="salt in the image: its minion service disabled at boot (default), kept, or what "
                             "the build installed removed")
    parser.add_argument("--at-shutdown", action="store_true",
                        help="the scrub at shutdown that a scrub of a running system arms (internal)")
    args = parser.parse_args(argv)
    show = (lambda r: json.dumps(r, indent=2)) if args.json else _summary
    try:
        report = scrub(args.root, trim=args.trim, dry_run=args.dry_run, zero_fill_cap=args.zero_fill_cap,
                       salt=args.salt, at_shutdown=args.at_shutdown)
    except ScrubError as e:
        if e.report is not None:
            print(show(e.report))
        print(f"scrub: {e}", file=sys.stderr)
        return 2 if isinstance(e, InvalidRoot) else 1
    print(show(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
