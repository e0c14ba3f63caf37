"""Helpers the cloud tests share: test files, and context managers that clean up."""
import contextlib
import glob
import hashlib
import os
import subprocess
import uuid

from saltami.cloud import glance
from saltami.cloud.wait import wait_for

RUN = f"saltami-test-{uuid.uuid4().hex[:8]}"
MiB = 1 << 20


def leftovers(clients, prefix):
    """Images (any status), volumes and servers of the demo project named ``prefix``*."""
    images = [i["id"] for i in clients.glance.images.list(
        filters={"visibility": "all", "owner": clients.project_id}) if (i.get("name") or "").startswith(prefix)]
    volumes = [v.id for v in clients.cinder.volumes.list() if (v.name or "").startswith(prefix)]
    servers = [s.id for s in clients.nova.servers.list() if s.name.startswith(prefix)]
    return images + volumes + servers


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
    """The root filesystem of a raw disk image (partitioned or not), mounted read-only."""
    loop = subprocess.run(["losetup", "--find", "--show", "--read-only", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()
    mnt = workdir / "mnt"
    mnt.mkdir(exist_ok=True)
    partitioned = subprocess.run(["partx", "-a", loop], capture_output=True).returncode == 0
    try:
        parts = sorted(glob.glob(f"{loop}p*")) if partitioned else []
        subprocess.run(["mount", "-o", "ro,noload", (parts or [loop])[-1], str(mnt)], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        if partitioned:
            subprocess.run(["partx", "-d", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=True)
