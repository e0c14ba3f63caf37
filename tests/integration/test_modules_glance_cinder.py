"""ami_glance and ami_cinder through a real salt-minion against the local cloud."""
import os
import subprocess
import time
import uuid

import pytest
from novaclient import client as nova_client

from helpers import MiB, ext4_file, random_file
from test_modules_nova import call_fails, call_ok


@pytest.fixture
def name():
    return f"ami-mod-{uuid.uuid4().hex[:8]}"


def image_names(clients):
    return sorted(i["name"] for i in clients.glance.images.list() if i.get("name"))


def test_upload_download_round_trip_with_progress_events(salt_call, salt_master, event_listener, clients,
                                                          name, tmp_path):
    src = random_file(tmp_path / "disk.raw", 48 * MiB)
    start = time.time()
    image = call_ok(salt_call, "ami_glance.upload", str(src), name, disk_format="raw",
                    properties={"ami_test": "yes"}, tags=["ami-test"])
    try:
        assert image["status"] == "active" and image["ami_test"] == "yes" and image["tags"] == ["ami-test"]
        deadline = time.monotonic() + 30
        while True:
            events = sorted(event_listener.get_events([(salt_master.id, f"salt/ami/transfer/{name}")],
                                                      after_time=start), key=lambda e: e.stamp)
            if events and events[-1].data["data"]["bytes"] == 48 * MiB or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert events, "no progress event reached the master"
        last = events[-1].data["data"]
        assert (last["bytes"], last["total"], last["percent"]) == (48 * MiB, 48 * MiB, 100.0)
        dst = tmp_path / "back.raw"
        call_ok(salt_call, "ami_glance.download", name, str(dst))
        assert dst.read_bytes() == src.read_bytes()
        found = call_ok(salt_call, "ami_glance.find", tags=["ami-test"], properties={"ami_test": "yes"})
        assert [i["id"] for i in found] == [image["id"]]
    finally:
        assert call_ok(salt_call, "ami_glance.delete", image["id"]) is True
    assert name not in image_names(clients)


@pytest.mark.parametrize("args,kwargs,message", [
    (["/nonexistent/disk.qcow2"], {}, "/nonexistent/disk.qcow2"),
    (["{raw}"], {"disk_format": "floppy"}, "disk_format 'floppy' is not accepted here; allowed:"),
    (["{raw}"], {"disk_format": "qcow2"}, "qcow2"),
])
def test_upload_refuses_bad_input_and_creates_nothing(salt_call, clients, name, tmp_path, args, kwargs, message):
    raw = random_file(tmp_path / "disk.raw", MiB)
    out = call_fails(salt_call, "ami_glance.upload", args[0].format(raw=raw), name, **kwargs)
    assert message in out
    # the images of this name only: the other test process makes images meanwhile
    assert name not in image_names(clients)


def test_ami_triplet_boots_with_its_kernel_and_ramdisk(salt_call, admin_session, clients, name, tmp_path):
    kernel = random_file(tmp_path / "vmlinuz", MiB)
    ramdisk = random_file(tmp_path / "initrd.img", MiB)
    root = ext4_file(tmp_path / "root.img", tmp_path)
    triplet = call_ok(salt_call, "ami_glance.upload_ami_triplet", str(kernel), str(ramdisk), str(root), name)
    ami, aki, ari = triplet["root"], triplet["kernel"], triplet["ramdisk"]
    assert (ami["disk_format"], aki["disk_format"], ari["disk_format"]) == ("ami", "aki", "ari")
    try:
        assert ami["kernel_id"] == aki["id"] and ami["ramdisk_id"] == ari["id"]
        server = call_ok(salt_call, "ami_nova.boot", name, ami["id"], "localcloud.small")
        try:
            assert server["status"] == "ACTIVE"
            seen = nova_client.Client("2.96", session=admin_session).servers.get(server["id"]).to_dict()
            assert seen["OS-EXT-SRV-ATTR:kernel_id"] == aki["id"]
            assert seen["OS-EXT-SRV-ATTR:ramdisk_id"] == ari["id"]
        finally:
            call_ok(salt_call, "ami_nova.delete", server["id"])
    finally:
        for image_id in (ami["id"], aki["id"], ari["id"]):
            call_ok(salt_call, "ami_glance.delete", image_id)


def test_properties_tags_visibility(salt_call, clients, name, tmp_path):
    image = call_ok(salt_call, "ami_glance.upload", str(random_file(tmp_path / "d.raw", MiB)), name,
                    disk_format="raw")
    try:
        call_ok(salt_call, "ami_glance.set_properties", image["id"], {"os_distro": "debian", "ami_x": "1"})
        call_ok(salt_call, "ami_glance.remove_properties", image["id"], ["ami_x"])
        call_ok(salt_call, "ami_glance.tag", image["id"], ["golden", "x"])
        call_ok(salt_call, "ami_glance.tag", image["id"], ["x"], remove=True)
        call_ok(salt_call, "ami_glance.set_visibility", image["id"], "shared")
        got = clients.glance.images.get(image["id"])
        assert got["os_distro"] == "debian" and "ami_x" not in got
        assert got["tags"] == ["golden"] and got["visibility"] == "shared"
        out = call_fails(salt_call, "ami_glance.set_visibility", image["id"], "everyone")
        assert "everyone" in out and "private" in out
    finally:
        call_ok(salt_call, "ami_glance.delete", image["id"])


def test_volume_from_image_uploaded_back_as_qcow2(salt_call, clients, name, tmp_path):
    src = random_file(tmp_path / "d.raw", 4 * MiB)
    image = call_ok(salt_call, "ami_glance.upload", str(src), name, disk_format="raw")
    volume = None
    try:
        volume = call_ok(salt_call, "ami_cinder.create", 1, name=name, image=image["id"])
        assert volume["status"] == "available" and volume["size"] == 1
        back = call_ok(salt_call, "ami_cinder.upload_to_image", volume["id"], f"{name}-back", disk_format="qcow2")
        try:
            assert back["status"] == "active" and back["disk_format"] == "qcow2"
            dst = tmp_path / "back.qcow2"
            call_ok(salt_call, "ami_glance.download", back["id"], str(dst))
            raw = tmp_path / "back.raw"
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(dst), str(raw)], check=True)
            with open(raw, "rb") as f:
                assert f.read(4 * MiB) == src.read_bytes()
            assert os.path.getsize(raw) == 1 << 30
        finally:
            call_ok(salt_call, "ami_glance.delete", back["id"])
    finally:
        call_ok(salt_call, "ami_glance.delete", image["id"])
        if volume:
            assert call_ok(salt_call, "ami_cinder.delete", volume["id"]) is True
    assert name not in [v.name for v in clients.cinder.volumes.list()]


def test_volume_smaller_than_its_image_is_refused(salt_call, clients, base_image, name):
    out = call_fails(salt_call, "ami_cinder.create", 0, name=name, image=base_image["id"])
    assert "size" in out
    # the volumes of this name only: the other test process makes volumes meanwhile
    assert name not in [v.name for v in clients.cinder.volumes.list()]
