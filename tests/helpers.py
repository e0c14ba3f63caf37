"""Helpers the cloud tests share: test files, and context managers that clean up."""
import contextlib
import hashlib
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

from saltami.cloud import glance
from saltami.cloud.wait import wait_for

REPO = Path(__file__).resolve().parent.parent
RUN = f"saltami-test-{uuid.uuid4().hex[:8]}"
MiB = 1 << 20
# a flavour (tests/integration/conftest.py) only this run builds: other sessions build on the same cloud
RUN_FLAVOUR = f"amitest-{RUN[-8:]}"
# a nova flavor with no root disk, as Ceph-backed clouds have (tests/integration/test_volume_backed.py
# makes it), and a flavour of this run's whose builder boots with it
ZERO_DISK_FLAVOR = f"{RUN}-zerodisk"
ZERO_DISK_FLAVOUR = f"amitest-zd-{RUN[-8:]}"
# the real guests' base image (tests/localcloud/guestimage.py) in Glance, and the secret that
# their builds write to the disk and delete
GUEST_IMAGE = "localcloud-debian12-guest"
GUEST_SECRET = f"guest-secret-{RUN}"


def inventory(clients, fragment, minion_keys=(), server_ids=()):
    """What the project holds whose name contains ``fragment`` (a test's unique name), by
    kind: images (any status), volumes, servers, ports (so named, or of those servers or of
    ``server_ids``), key pairs, and of ``minion_keys`` (ids a master knows) those so named.
    Other sessions' resources on the shared cloud do not show."""
    def ours(name):
        return fragment in (name or "")

    servers = sorted(s.id for s in clients.nova.servers.list() if ours(s.name))
    owners = set(servers) | set(server_ids)
    ports = clients.session.get("/v2.0/ports", endpoint_filter={"service_type": "network"}).json()["ports"]
    return {
        "images": sorted(i["id"] for i in clients.glance.images.list(
            filters={"visibility": "all", "owner": clients.project_id}) if ours(i.get("name"))),
        "volumes": sorted(v.id for v in clients.cinder.volumes.list() if ours(v.name)),
        "servers": servers,
        "ports": sorted(p["id"] for p in ports if ours(p["name"]) or p["device_id"] in owners),
        "keypairs": sorted(k.name for k in clients.nova.keypairs.list() if ours(k.name)),
        "minion_keys": sorted(k for k in minion_keys if ours(k)),
    }


def leftovers(clients, prefix):
    """Ids of everything ``inventory`` finds named with ``prefix``."""
    return [i for ids in inventory(clients, prefix).values() for i in ids]


NOTHING = {"servers": [], "volumes": [], "snapshots": [], "images": [], "keys": []}


def of_builds(match):
    """Whether a name is of the build ``match`` (an id: names that hold it) or of builds of the
    flavour ``match`` (names that hold one of its build ids: ``amitest`` is in
    ``ami-builder-amitest-20261207-101500-a1b2c3`` and not in ``ami-builder-amitest-p1-...``,
    since other test processes build those on the same cloud meanwhile)."""
    if re.search(r"-\d{8}-\d{6}-[0-9a-f]{6}$", match):
        return lambda name: match in (name or "")
    pattern = re.compile(rf"(?:^|-){re.escape(match)}-\d{{8}}-\d{{6}}")
    return lambda name: bool(pattern.search(name or ""))


def cloud_inventory(clients, salt_key, match):
    """What a build could leave behind: servers, volumes, volume snapshots (nova's createImage
    of a server booted from a volume makes one), images, minion keys; of the builds of
    ``match``, a flavour or a build id (``of_builds``), as other tests build on the same cloud
    meanwhile."""
    ours = of_builds(match)
    keys = json.loads(salt_key.run("--list-all", "--out=json").stdout)
    return {
        "servers": sorted(s.id for s in clients.nova.servers.list() if ours(s.name)),
        "volumes": sorted(v.id for v in clients.cinder.volumes.list() if ours(v.name)),
        "snapshots": sorted(s.id for s in clients.cinder.volume_snapshots.list() if ours(s.name)),
        "images": sorted(i["id"] for i in clients.glance.images.list(filters={"visibility": "all"})
                         if ours(i.get("name")) or match == i.get("ami_flavour", "")),
        "keys": sorted(k for ks in keys.values() for k in ks if k.startswith("ami-") and ours(k)),
    }


def random_file(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return path


def qcow2_file(path):
    """An 8 MiB qcow2 holding 1 MiB of 0xab at offset 0."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xab 0 1M", str(path)], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def ext4_file(path, tmp_path):
    tree = tmp_path / "rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("ami-test\n")
    subprocess.run(["truncate", "-s", "8M", str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(path)], check=True)
    return path


def sha512(path):
    return hashlib.sha512(path.read_bytes()).hexdigest()


@contextlib.contextmanager


def removing(clients, *image_ids):
    """Delete the images at the end, whatever happens."""
    try:
        yield
    finally:
        for image_id in image_ids:
            glance.delete(clients, image_id, force=True)


@contextlib.contextmanager


def booted(clients, image_id, name):
    """A server booted from the image, deleted (and waited for) at the end."""
    flavor = clients.nova.flavors.find(name="localcloud.small")
    server = clients.nova.servers.create(name, image=image_id, flavor=flavor.id, nics="none")
    try:
        wait_for(lambda: clients.nova.servers.get(server.id), lambda s: s.status == "ACTIVE",
                 f"server {server.id} to boot", 180,
                 failed=lambda s: f"ERROR: {getattr(s, 'fault', '')}" if s.status == "ERROR" else None,
                 describe=lambda s: s.status)
        yield server
    finally:
        server.delete()
        wait_for(lambda: [s for s in clients.nova.servers.list() if s.id == server.id],
                 lambda found: not found, f"server {server.id} to be deleted", 180)


@contextlib.contextmanager
def mounted_image(path, workdir):
    """The root filesystem (the one with an /etc, else the only one) of a raw or qcow2 disk
    image, partitioned or not, mounted read-only, as the secrets audit opens images."""
    from pathlib import Path

    from saltami import audit

    with audit.opened(str(path), workdir=str(workdir)) as image:
        mounted = [Path(mnt) for _name, _device, _fstype, mnt in image.filesystems]
        roots = [m for m in mounted if (m / "etc").is_dir()] or mounted
        assert len(roots) == 1, f"which is the root filesystem of {path}? {image.filesystems}"
        yield roots[0]


def salt_call_inside(root, *args, timeout=120):
    """salt-call --local inside an instance (its filesystem at ``root`` on this host) that
    has the project installed (see the builder_vm fixture)."""
    cmd = ["chroot", str(root), "salt-call", "--local", "--out=json", "--log-level=quiet", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def local_minion(root, flavours, cloud=None):
    """A masterless minion's config dir at ``root`` (it holds its cache too): the project's
    formulas as file_roots, ``flavours`` as pillar ami:flavours, and ``cloud`` as ami:cloud
    (none by default)."""
    import yaml

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(os.path.join(root, "pillar"), exist_ok=True)
    with open(os.path.join(root, "pillar", "top.sls"), "w") as f:
        f.write("base: {'*': [ami]}\n")
    with open(os.path.join(root, "pillar", "ami.sls"), "w") as f:
        yaml.safe_dump({"ami": {"flavours": flavours}}, f)
    config = {"id": "local-baker", "root_dir": str(root), "file_client": "local",
              "file_roots": {"base": [os.path.join(repo, "salt", "formulas"), os.path.join(repo, "tests", "formulas")]},
              "pillar_roots": {"base": [os.path.join(root, "pillar")]},
              "log_file": os.path.join(root, "minion.log"), "log_level_logfile": "info",
              **({"ami": {"cloud": cloud}} if cloud else {})}
    with open(os.path.join(root, "minion"), "w") as f:
        yaml.safe_dump(config, f)
    return {"config_dir": root, "cachedir": os.path.join(root, "var", "cache", "salt", "minion")}


def loops_below(directory):
    """Loop devices over files below ``directory``, also those whose file was deleted (which
    losetup shows as "PATH (deleted)")."""
    out = subprocess.run(["losetup", "--json", "--list", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=True).stdout
    return [d["name"] for d in json.loads(out or '{"loopdevices": []}')["loopdevices"]
            if (d.get("back-file") or "").startswith(f"{directory}/")]


def qemus_below(directory):
    """The pids of the qemu processes whose command line names a file below ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if args and b"qemu-system" in args[0] and f"{directory}/".encode() in b" ".join(args):
            found.append(int(entry.name))
    return found


def salt_call_local(config_dir, *args, popen=False, timeout=1800):
    """``salt-call --local`` of the project's venv with that config, in an environment without
    OS_* variables (no cloud); its JSON return, or with ``popen`` the running process (in a
    session of its own, to kill it with all its children)."""
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cmd = [os.path.join(os.path.dirname(sys.executable), "salt-call"), "--local", "-c", str(config_dir),
           "--out=json", "--log-level=quiet", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads(r.stdout)["local"]
