"""saltami.cloud.cinder against the local cloud's real Cinder (file-backed test driver), as
the non-admin user."""
import json
import subprocess
import uuid

import pytest

from helpers import MiB, booted, ext4_file, random_file, removing
from saltami.cloud import cinder, glance
from saltami.errors import CloudError, InvalidArgument, NotFound, ResourceFailed, Timeout

GiB = 1 << 30


@pytest.fixture
def volumes(clients):
    """Ids of volumes a test made, deleted at the end whatever happens."""
    made = []
    yield made
    for volume_id in made:
        cinder.delete(clients, volume_id)


def test_create_empty_show_list_delete(clients, name, volumes):
    volume = cinder.create(clients, 1, name=name, metadata={"purpose": "test"})
    volumes.append(volume["id"])
    assert (volume["status"], volume["size"], volume["name"]) == ("available", 1, name)
    assert volume["metadata"] == {"purpose": "test"}
    assert cinder.show(clients, volume["id"])["id"] == volume["id"]
    assert [v["id"] for v in cinder.list_volumes(clients, name=name)] == [volume["id"]]
    json.dumps(volume)  # goes back through Salt

    with pytest.raises(Timeout, match=f"volume {volume['id']} to become in-use.*status available"):
        cinder.wait_status(clients, volume["id"], "in-use", timeout=1)

    assert cinder.delete(clients, volume["id"]) is True
    with pytest.raises(NotFound, match=volume["id"]):
        cinder.show(clients, volume["id"])
    assert cinder.delete(clients, volume["id"]) is False


def test_create_from_base_image(clients, name, volumes, base_image):
    volume = cinder.create(clients, 1, name=name, image=base_image["id"], timeout=300)
    volumes.append(volume["id"])
    assert volume["status"] == "available" and volume["bootable"] == "true"
    assert volume["volume_image_metadata"]["image_id"] == base_image["id"]


def test_bad_arguments_create_nothing(clients, name, tmp_path):
    image = glance.upload(clients, str(random_file(tmp_path / "d.raw", MiB)), name,
                          disk_format="raw", min_disk=2)
    with removing(clients, image["id"]):
        with pytest.raises(InvalidArgument, match=f"1 GiB volume cannot hold image {image['id']}.*needs 2 GiB"):
            cinder.create(clients, 1, name=name, image=image["id"])
        with pytest.raises(InvalidArgument, match="needs 2 GiB"):
            cinder.create(clients, 1, name=name, image={"name": name})
        with pytest.raises(NotFound, match="no-such-image"):
            cinder.create(clients, 1, name=name, image=f"{name}-no-such-image")
        for size in (0, -1, "1", True, 1.5, None):
            with pytest.raises(InvalidArgument, match="positive whole number of GiB"):
                cinder.create(clients, size, name=name)
        for kwargs, message in (({"volume_type": "gold"}, "volume type 'gold' does not exist.*__DEFAULT__"),
                                ({"availability_zone": "mars"}, "availability zone 'mars'.*nova"),
                                ({"metadata": {"n": 1}}, "must be a string"),
                                ({"name": ""}, "name"),
                                ({"timeout": -5}, "timeout")):
            with pytest.raises(InvalidArgument, match=message):
                cinder.create(clients, 1, **{"name": name, **kwargs})
    assert cinder.list_volumes(clients, name=name) == []


def test_volume_in_error_is_deleted(clients, name, tmp_path):
    # qcow2 data declared raw: Glance takes it, Cinder's copy to the volume refuses it
    qcow2 = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "8M"], check=True)
    bad = clients.glance.images.create(name=name, disk_format="raw", container_format="bare")
    with removing(clients, bad["id"]):
        with qcow2.open("rb") as f:
            clients.glance.images.upload(bad["id"], f)
        with pytest.raises(ResourceFailed, match="status error.*no reason.*the volume was deleted"):
            cinder.create(clients, 1, name=name, image=bad["id"])
        assert cinder.list_volumes(clients, name=name) == []


def test_upload_to_image_raw_and_qcow2(clients, name, volumes, tmp_path):
    content = random_file(tmp_path / "content.raw", 4 * MiB).read_bytes()
    source = glance.upload(clients, str(tmp_path / "content.raw"), f"{name}-source", disk_format="raw")
    with removing(clients, source["id"]):
        volume = cinder.create(clients, 1, name=name, image=source["id"])
        volumes.append(volume["id"])

    raw = cinder.upload_to_image(clients, volume["id"], f"{name}-raw", timeout=600)
    with removing(clients, raw["id"]):
        assert (raw["status"], raw["disk_format"], raw["visibility"]) == ("active", "raw", "private")
        assert raw["size"] == GiB
        assert cinder.show(clients, volume["id"])["status"] == "available"
        got = glance.download(clients, raw["id"], str(tmp_path / "raw.img"))
        assert got["verified"] and got["bytes"] == GiB
        with open(tmp_path / "raw.img", "rb") as f:
            assert f.read(len(content)) == content
        (tmp_path / "raw.img").unlink()

    qcow2 = cinder.upload_to_image(clients, volume["id"], f"{name}-qcow2", disk_format="qcow2", timeout=600)
    with removing(clients, qcow2["id"]):
        assert (qcow2["status"], qcow2["disk_format"], qcow2["virtual_size"]) == ("active", "qcow2", GiB)
        glance.download(clients, qcow2["id"], str(tmp_path / "img.qcow2"))
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(tmp_path / "img.qcow2")],
                                         capture_output=True, check=True, text=True).stdout)
        assert (info["format"], info["virtual-size"]) == ("qcow2", GiB)
        subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", f"if={tmp_path / 'img.qcow2'}",
                        f"of={tmp_path / 'head.raw'}", "bs=1M", f"count={len(content) // MiB}"], check=True)
        assert (tmp_path / "head.raw").read_bytes() == content

    for kwargs, message in (({"disk_format": "iso"}, "'iso' is not accepted.*qcow2"),
                            ({"container_format": "crate"}, "crate"),
                            ({"visibility": "everyone"}, "everyone"),
                            ({"protected": "yes"}, "protected"),
                            ({"image_name": ""}, "image_name")):
        with pytest.raises(InvalidArgument, match=message):
            cinder.upload_to_image(clients, **{"volume_id": volume["id"], "image_name": f"{name}-bad", **kwargs})
    with pytest.raises(NotFound):
        cinder.upload_to_image(clients, str(uuid.uuid4()), f"{name}-bad")


def test_attached_volume_is_not_deleted(clients, name, volumes, tmp_path):
    image = glance.upload(clients, str(ext4_file(tmp_path / "root.raw", tmp_path)), name, disk_format="raw")
    with removing(clients, image["id"]), booted(clients, image["id"], f"{name}-server") as server:
        volume = cinder.create(clients, 1, name=name)
        volumes.append(volume["id"])
        clients.nova.volumes.create_server_volume(server.id, volume["id"])
        try:
            cinder.wait_status(clients, volume["id"], "in-use", timeout=120)
            with pytest.raises(CloudError, match=f"in-use, attached to server.*{server.id}.*detach") as refused:
                cinder.delete(clients, volume["id"])
            assert refused.value.http_status == 409
            with pytest.raises(InvalidArgument, match="in-use"):
                cinder.upload_to_image(clients, volume["id"], f"{name}-image")
        finally:
            clients.nova.volumes.delete_server_volume(server.id, volume["id"])
            cinder.wait_status(clients, volume["id"], "available", timeout=120)
        assert cinder.delete(clients, volume["id"]) is True
        assert cinder.list_volumes(clients, name=name) == []
