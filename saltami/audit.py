"""Secrets audit of a finished image: open it read-only and list what must not be in a golden
image (SSH keys, authorized_keys, Salt keys and id, a machine id, histories, cloud-init
instance data, DHCP leases, cloud credentials), and every place where one of the build's
secrets appears: in a file, or anywhere in the image's bytes (deleted blocks included).

    python -m saltami.audit IMAGE... [--secret-file FILE] [--kernel K --ramdisk R] [--json]

IMAGE is a raw or qcow2 disk, partitioned (MBR or GPT, every partition is looked at) or a
bare filesystem, or the root filesystem of an AMI triplet, whose kernel and ramdisk are
searched for the secrets only. Needs root for loop devices; nothing is ever mounted writable.
Exit status 1 when anything was found, 2 when an image could not be audited.

It checks the image's contents rather than trusting saltami/scrub.py: it shares scrub's
lists of where things live, but looks everywhere else too (a key pair under /srv, an
authorized_keys of any user, a lease file of another DHCP client)."""
import argparse
import contextlib
import functools
import json
import os
import re
import signal
import stat
import sys
import tempfile
import time
from typing import NamedTuple

from . import command, disk, imageformat, scrub
from .errors import AmiError, InvalidArgument

CHUNK = 1 << 20
MIN_SECRET = 6  # shorter strings match by chance in a disk's worth of bytes
# installed software, whose test vectors and documentation carry key-like text
SOFTWARE_DIRS = ("/usr/", "/lib/", "/lib32/", "/lib64/", "/bin/", "/sbin/", "/opt/")
SOFTWARE_PACKAGES = re.compile(r"/(site-packages|dist-packages|node_modules)/")
# text whose presence outside installed software is itself a finding
PRIVATE_KEY = b"PRIVATE KEY-----"
CLOUD_CREDENTIAL = {"OS_PASSWORD=": b"OS_PASSWORD=", "application_credential_secret":
                    b"application_credential_secret"}


class AuditError(AmiError):
    """The image could not be opened or read: it was not audited."""


class Finding(NamedTuple):
    check: str
    where: str
    detail: str


# ----------------------------------------------------------------------------- one filesystem
class Tree:
    """A mounted filesystem of the image. Paths are named as inside the image (prefixed
    with the partition, ``p2:/etc/...``, when there are several); symlinks are never followed
    out of it. One walk reads every regular file once, looking for the needles."""

    def __init__(self, name, root, needles):
        self.name, self.root = name, root
        self.files = {}    # inside path -> size, every regular file
        self.holding = {}  # inside path -> labels of the needles it holds
        self._walk(needles)

    def where(self, inside):
        return f"{self.name}:{inside}" if self.name else inside

    def _walk(self, needles):
        dev = os.lstat(self.root).st_dev
        for directory, dirs, names in os.walk(self.root, onerror=_raise):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(directory, d)).st_dev == dev]
            for name in names:
                host = os.path.join(directory, name)
                st = os.lstat(host)
                if not stat.S_ISREG(st.st_mode):
                    continue
                inside = scrub._inside(self.root, host)
                self.files[inside] = st.st_size
                if st.st_size and needles:
                    found = find_in_file(host, needles)
                    if found:
                        self.holding[inside] = sorted(found)

    def glob(self, patterns):
        """Inside paths matching scrub-style patterns (resolved within the image)."""
        return [scrub._inside(self.root, p) for pattern in patterns for p in scrub._glob(self.root, pattern)]

    def nonempty_under(self, patterns):
        """Non-empty regular files at or below what the patterns match."""
        tops = self.glob(patterns)
        return [p for p, size in self.files.items() if size and any(p == t or p.startswith(t + "/") for t in tops)]

    def named(self, test):
        """Non-empty regular files whose name passes ``test``."""
        return [p for p, size in self.files.items() if size and test(os.path.basename(p))]

    def read(self, inside, limit=1 << 20):
        with open(os.path.join(self.root, inside.lstrip("/")), "rb") as f:
            return f.read(limit)


def _raise(error):
    raise AuditError(f"cannot read {error.filename}: {error.strerror}")


def _outside_software(path):
    return not path.startswith(SOFTWARE_DIRS) and not SOFTWARE_PACKAGES.search(path)


def _in_home(path):
    return path.startswith(("/root/", "/home/"))


# ----------------------------------------------------------------------------- the checks
def ssh_host_keys(tree):
    for path in tree.glob(scrub.SSH_HOST_KEYS):
        yield path, "host key file"


def private_keys(tree):
    for path, labels in tree.holding.items():
        if "private key" in labels and _outside_software(path):
            yield path, "holds a PEM/OpenSSH private key"
    for path in tree.named(lambda n: n.startswith("id_")):
        if "/.ssh/" in path:
            yield path, "user key pair file"


def authorized_keys(tree):
    for path in tree.named(lambda n: n in ("authorized_keys", "authorized_keys2")):
        lines = [line for line in tree.read(path).splitlines() if line.strip() and not line.lstrip().startswith(b"#")]
        if lines:
            yield path, f"{len(lines)} key(s)"


SALT_KEY_NAMES = ("minion.pem", "minion.pub", "minion_master.pub", "master.pem", "master.pub", "minion_id")


def salt_identity(tree):
    seen = set(tree.nonempty_under(scrub.SALT_MINION_IDENTITY + scrub.SALT_MINION_STATE))
    seen.update(p for p in tree.files if tree.files[p] and "/salt/" in p and "/pki/" in p)
    seen.update(tree.named(lambda n: n in SALT_KEY_NAMES))
    for path in sorted(seen):
        yield path, "Salt key, minion id, or the builder minion's config, cache or log"


def machine_id(tree):
    if "/etc/machine-id" in tree.files:
        value = tree.read("/etc/machine-id").strip()
        if value not in (b"", b"uninitialized"):
            yield "/etc/machine-id", f"set ({value[:8].decode(errors='replace')}...)"
    if tree.files.get("/var/lib/dbus/machine-id"):
        yield "/var/lib/dbus/machine-id", "a copy, not a link to /etc/machine-id"


def histories(tree):
    for path in tree.named(lambda n: n in scrub.HISTORIES or n.endswith("history")):
        if _in_home(path):
            yield path, "history file"


def cloud_init(tree):
    found = set(tree.nonempty_under(scrub.CLOUD_INIT_STATE))
    found.update(tree.named(lambda n: n.startswith("instance-data") and n.endswith(".json")))
    for path in sorted(found):
        yield path, "cloud-init instance state"


def dhcp_leases(tree):
    found = set(tree.nonempty_under(scrub.DHCP_LEASES))
    found.update(p for p in tree.named(lambda n: n.endswith((".lease", ".leases"))) if _outside_software(p))
    for path in sorted(found):
        yield path, "lease"


def cloud_credentials(tree):
    for path in tree.named(lambda n: n in ("clouds.yaml", "secure.yaml") or "openrc" in n):
        yield path, "OpenStack client configuration"
    for path, labels in tree.holding.items():
        for marker in CLOUD_CREDENTIAL:
            if marker in labels and _outside_software(path):
                yield path, f"mentions {marker}"


def random_seeds(tree):
    # every clone would start from the same entropy (systemd saves a seed at shutdown)
    for path in tree.nonempty_under(scrub.RANDOM_SEEDS):
        yield path, "saved random seed"


# (name, function(tree) -> (inside path, detail)...)
CHECKS = (
    ("SSH host keys", ssh_host_keys),
    ("SSH private keys", private_keys),
    ("authorized_keys", authorized_keys),
    ("Salt minion keys, id and master key", salt_identity),
    ("machine id", machine_id),
    ("shell histories", histories),
    ("cloud-init instance data", cloud_init),
    ("DHCP leases", dhcp_leases),
    ("cloud credentials", cloud_credentials),
    ("random seeds", random_seeds),
)
SECRET_IN_FILE = "build secret in a file"
SECRET_IN_BYTES = "build secret in the image's bytes"


# ----------------------------------------------------------------------------- byte search
def find_in_file(path, needles, chunk=CHUNK):
    """{label: (first offset, count)} for each needle (bytes) found in the file at ``path``,
    read in chunks that overlap by the longest needle; holes of a sparse file are skipped."""
    overlap = max(map(len, needles.values())) - 1
    found = {}
    buf = bytearray(overlap + chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        for start, end in _data_extents(fd):
            kept = 0  # bytes at buf's start carried over from the previous chunk
            pos = start
            while pos < end:
                n = os.preadv(fd, [view[kept:kept + min(chunk, end - pos)]], pos)
                if n == 0:
                    break
                filled = kept + n
                window = view[:filled]
                for label, needle in needles.items():
                    # a match lying wholly in the carried bytes was counted with the last chunk
                    i = buf.find(needle, max(0, kept - len(needle) + 1), filled)
                    while i != -1:
                        first, count = found.get(label, (pos - kept + i, 0))
                        found[label] = (first, count + 1)
                        i = buf.find(needle, i + 1, filled)
                kept = min(overlap, filled)
                buf[:kept] = window[filled - kept:filled]
                pos += n
    return found


def _data_extents(fd):
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


# ----------------------------------------------------------------------------- opening images
class Opened(NamedTuple):
    format: str
    raw: str            # the image as a raw disk (the image itself when it is raw)
    filesystems: list   # (name, device, type, mount point)
    skipped: list       # partitions not mounted, and why


@functools.lru_cache(maxsize=None)
def _kernel_filesystems():
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


# read-only, and no journal replay: a replay writes even through a read-only mount
MOUNT_OPTIONS = {"ext3": ("ro", "noload"), "ext4": ("ro", "noload"), "xfs": ("ro", "norecovery"),
                 "btrfs": ("ro", "rescue=nologreplay")}


@contextlib.contextmanager
def opened(image, workdir=None, claimed=None):
    """Every filesystem of ``image`` mounted read-only (an Opened); everything made on the
    way (temporary raw copy, loop devices, mounts) goes at the end, also on error or Ctrl-C.
    A qcow2 is first converted to a sparse temporary raw. Before anything, the image must
    pass the format inspector's safety check (imageformat.py), as ``claimed`` if given (raw
    or qcow2: a Glance image's disk_format, for one downloaded from Glance)."""
    if not os.path.isfile(image):
        raise InvalidArgument(f"image {image!r} is not a file")
    fmt = imageformat.check(image, claimed)
    with contextlib.ExitStack() as undo:
        tmp = tempfile.mkdtemp(prefix="ami-audit-", dir=workdir)
        undo.callback(os.rmdir, tmp)
        raw = image
        if fmt != "raw":
            raw = os.path.join(tmp, "disk.raw")
            undo.callback(_unlink, raw)
            command.run("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", image, raw)
        loop = disk.attach_loop(raw, read_only=True)
        undo.callback(disk.detach_loop, loop)
        mount_points = []
        undo.callback(lambda: [os.rmdir(m) for m in mount_points])
        undo.callback(disk.unmount_below, tmp)
        devices = [(None, loop)]
        if disk.partitions(loop):
            devices = []
            for part in disk.partitions(loop):
                node = disk.partition_node(loop, part["number"])
                if node is None:  # no node made for it: reach it at its offset
                    node = disk.attach_loop(raw, read_only=True, offset=part["start"], size=part["size"])
                    undo.callback(disk.detach_loop, node)
                devices.append((f"p{part['number']}", node))
        filesystems, skipped = [], []
        for name, device in devices:
            fstype = disk.fstype(device)
            if fstype not in _kernel_filesystems():
                why = f"{fstype} is not a filesystem this kernel mounts" if fstype else "no filesystem"
                skipped.append(f"{name or 'disk'}: {why}; searched as bytes only")
                continue
            mnt = os.path.join(tmp, name or "fs")
            os.mkdir(mnt)
            mount_points.append(mnt)
            disk.mount(device, mnt, *MOUNT_OPTIONS.get(fstype, ("ro",)), fstype=fstype)
            filesystems.append((name, device, fstype, mnt))
        if not filesystems:
            raise AuditError(f"no filesystem to mount in {image} ({fmt}): {'; '.join(skipped)}")
        yield Opened(fmt, raw, filesystems, skipped)


def _unlink(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ----------------------------------------------------------------------------- the audit
def labelled(secrets):
    """{label: value} of secrets given as such a mapping, or as values alone."""
    if isinstance(secrets, dict):
        return dict(secrets)
    return {f"secret #{i}": v for i, v in enumerate(secrets or (), 1)}


def _needles(secrets):
    """{label: bytes} of the secrets (a mapping label -> value, or values alone)."""
    needles = {}
    for label, value in labelled(secrets).items():
        if not isinstance(value, (str, bytes)):
            raise InvalidArgument(f"secret {label}: a string, not {type(value).__name__}")
        value = value.encode() if isinstance(value, str) else value
        if len(value) < MIN_SECRET:
            raise InvalidArgument(f"secret {label} is {len(value)} bytes long: at least {MIN_SECRET} are needed "
                                  "to search a disk without chance matches")
        needles[label] = value
    return needles


def audit(image, secrets=None, kernel=None, ramdisk=None, workdir=None, disk_format=None):
    """Audit ``image`` (module doc) for the CHECKS and for ``secrets`` (a mapping label ->
    value, or a list of values; findings name the label, never the value). ``kernel`` and
    ``ramdisk`` (an AMI triplet's) are searched for the secrets only. ``disk_format`` is the
    format the image claims (raw or qcow2: a Glance image's, for one downloaded from Glance).

    Returns {"image", "format", "filesystems", "skipped", "findings": [{check, where,
    detail}], "bytes_searched", "seconds"}. Raises AuditError when the image cannot be opened."""
    t0 = time.monotonic()
    secret_needles = _needles(secrets)
    markers = {"private key": PRIVATE_KEY, **CLOUD_CREDENTIAL}
    findings = []
    with opened(image, workdir, claimed=disk_format) as img:
        several = len(img.filesystems) > 1
        for name, _, _, mnt in img.filesystems:
            tree = Tree(name if several else None, mnt, {**markers, **secret_needles})
            for check, function in CHECKS:
                findings.extend(Finding(check, tree.where(path), detail) for path, detail in function(tree))
            for path, labels in sorted(tree.holding.items()):
                findings.extend(Finding(SECRET_IN_FILE, tree.where(path), label)
                                for label in labels if label in secret_needles)
        sources = [(image, image)] + ([(f"{image} (as raw)", img.raw)] if img.raw != image else [])
        sources += [(path, path) for path in (kernel, ramdisk) if path]
        searched = 0
        for name, path in sources:
            if secret_needles:
                for label, (offset, count) in sorted(find_in_file(path, secret_needles).items()):
                    findings.append(Finding(SECRET_IN_BYTES, f"{name} at byte {offset}",
                                            f"{label} ({count} time{'s' if count > 1 else ''})"))
                searched += os.path.getsize(path)
    return {"image": image, "format": img.format, "skipped": img.skipped,
            "filesystems": [{"name": n or "disk", "type": t} for n, _, t, _ in img.filesystems],
            "findings": [f._asdict() for f in findings], "bytes_searched": searched,
            "seconds": round(time.monotonic() - t0, 2)}


def build_secrets(flavour=None, cloud=None, profile=None):
    """{label: value} of the secrets a build holds: in its flavour (the pillar given to the
    builder, and any other secret-named key), and the cloud's credentials as clouds.yaml and
    the profile give them (what ``auth.redact`` hides)."""
    from .cloud import auth

    found = {f"flavour {k}": v for k, v in auth.secrets(flavour or {}).items()}
    if cloud or profile:
        config = auth.connect(cloud=cloud, profile=profile).region.config
        found.update({f"cloud {k}": v for k, v in auth.secrets(dict(config)).items()})
    # one label per value: flavours that extend another repeat its secrets
    return {label: value for value, label in {v: k for k, v in reversed(found.items())}.items()}


def summary(report):
    lines = [f"{report['image']} ({report['format']}; "
             f"{', '.join(f['name'] + ' ' + f['type'] for f in report['filesystems'])}): "
             f"{len(report['findings'])} finding(s), {report['bytes_searched'] >> 20} MiB searched "
             f"in {report['seconds']} s"]
    lines += [f"  skipped {s}" for s in report["skipped"]]
    lines += [f"  {f['check']}: {f['where']}: {f['detail']}" for f in report["findings"]]
    return "\n".join(lines)


def _read_secrets(path):
    with open(path, encoding="utf-8") as f:
        return {f"{path}:{n}": line.rstrip("\n") for n, line in enumerate(f, 1) if line.strip()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--secret-file", action="append", default=[],
                        help="a file of secrets to look for, one per line (repeatable)")
    parser.add_argument("--kernel", help="an AMI triplet's kernel: searched for the secrets")
    parser.add_argument("--ramdisk", help="an AMI triplet's ramdisk: searched for the secrets")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    # a kill must unmount and detach like Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    secrets = {}
    for path in args.secret_file:
        secrets.update(_read_secrets(path))
    status, reports = 0, []
    for image in args.images:
        try:
            report = audit(image, secrets, kernel=args.kernel, ramdisk=args.ramdisk)
        except AmiError as e:
            print(f"audit: {image}: {e}", file=sys.stderr)
            status = 2
            continue
        reports.append(report)
        if report["findings"]:
            status = max(status, 1)
        if not args.json:
            print(summary(report))
    if args.json:
        print(json.dumps(reports, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
