"""ami.whoami and ami.volume_device as a builder VM runs them: salt-call --local inside an
instance of the local cloud (the test copies the project into it, as a builder image would
carry it), plus their failures on this host, which is no OpenStack server."""
import json
import subprocess

import pytest

from helpers import salt_call_inside
from saltami.cloud import cinder, instance, nova
from saltami.errors import NotFound, Timeout


def test_whoami_inside_the_builder_reads_the_config_drive(builder_vm):
    _clients, server, root = builder_vm
    rc, out, err = salt_call_inside(root, "ami.whoami")
    assert rc == 0, err
    me = json.loads(out)["local"]
    assert me["id"] == server["id"] and me["name"] == server["name"]
    assert me["source"].startswith("config drive")


def test_volume_device_inside_the_builder_follows_the_serial(builder_vm, localcloud):
    clients, server, root = builder_vm
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
