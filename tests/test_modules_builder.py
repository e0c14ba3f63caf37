"""ami.whoami and ami.volume_device as a builder VM runs them: salt-call --local inside an
instance of the local cloud (the test copies the project into it, as a builder image would
carry it), plus their failures on this host, which is no OpenStack server."""
import json
import shutil
import subprocess
import uuid

import pytest

from conftest import REPO
from saltami.cloud import cinder, instance, nova
from saltami.cloud.auth import connect
from saltami.errors import NotFound, Timeout


@pytest.fixture(scope="module")
def builder(localcloud, base_image, cloud_profile):
    clients = connect(profile=cloud_profile)
    server = nova.boot(clients, f"ami-builder-{uuid.uuid4().hex[:8]}", image=base_image["id"],
                       flavor="localcloud.small")
    root = localcloud.instances_path / server["id"] / "mnt"
    try:
        for part in ("saltami", "_modules"):
            shutil.copytree(REPO / part, root / "opt" / "salt-ami" / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        yield clients, server, root
    finally:
        nova.delete(clients, server["id"])


def salt_call_inside(root, *args):
    """salt-call --local inside the instance, with the project on its path."""
    cmd = ["chroot", str(root), "env", "PYTHONPATH=/opt/salt-ami", "salt-call", "--local",
           "--module-dirs=/opt/salt-ami/_modules", "--out=json", "--log-level=quiet", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def test_whoami_inside_the_builder_reads_the_config_drive(builder):
    _clients, server, root = builder
    rc, out, err = salt_call_inside(root, "ami.whoami")
    assert rc == 0, err
    me = json.loads(out)["local"]
    assert me["id"] == server["id"] and me["name"] == server["name"]
    assert me["source"].startswith("config drive")


def test_volume_device_inside_the_builder_follows_the_serial(builder, localcloud):
    clients, server, root = builder
    volume = cinder.create(clients, 1, name=f"{server['name']}-vol")
    try:
        nova.attach_volume(clients, server["id"], volume["id"])
        rc, out, err = salt_call_inside(root, "ami.volume_device", volume["id"])
        assert rc == 0, err
        device = json.loads(out)["local"]
        assert device.startswith("/dev/vd")
        # the device really is the volume: what is written through it is in the volume file
        subprocess.run(["chroot", str(root), "sh", "-c", f"printf ami-serial-ok | dd of={device} conv=notrunc"],
                       check=True, capture_output=True)
        nova.detach_volume(clients, server["id"], volume["id"])
        with open(localcloud.home / "state" / "cinder" / "volumes" / f"volume-{volume['id']}", "rb") as f:
            assert f.read(13) == b"ami-serial-ok"
    finally:
        cinder.delete(clients, volume["id"])


def test_whoami_outside_openstack_says_what_it_tried():
    with pytest.raises(NotFound) as e:
        instance.whoami(metadata_url="http://127.0.0.1:9/openstack/latest/meta_data.json", timeout=1)
    assert "no /dev/disk/by-label/config-2" in str(e.value)
    assert "metadata service http://127.0.0.1:9/" in str(e.value) and "pass server_id" in str(e.value)
    assert instance.whoami(server_id="abc")["id"] == "abc"


def test_volume_device_times_out_naming_the_serial():
    with pytest.raises(Timeout) as e:
        instance.volume_device("0123456789abcdefghijklmnop", timeout=1)
    assert "virtio-0123456789abcdefghij" in str(e.value)
