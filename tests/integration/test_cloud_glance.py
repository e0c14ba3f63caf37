"""saltami.cloud.glance against the local cloud's real Glance and nova, as the non-admin
user. Everything a test makes is named after the test (fixture ``name``), and the fixture
checks afterwards that nothing with that name is left."""
import contextlib
import os
import re
import subprocess
import time
import uuid

import pytest

from helpers import RUN, MiB, booted, ext4_file, leftovers, qcow2_file, random_file, removing, sha512
from saltami.cloud import glance
from saltami.errors import CloudError, InvalidArgument, NotFound, Timeout


def test_upload_qcow2_verify_and_download(clients, name, tmp_path):
    path = qcow2_file(tmp_path / "disk.qcow2")
    calls = []
    image = glance.upload(clients, str(path), name, progress=lambda done, total: calls.append((done, total)))
    with removing(clients, image["id"]):
        size = path.stat().st_size
        assert image["status"] == "active"
        assert (image["disk_format"], image["container_format"], image["visibility"]) == ("qcow2", "bare", "private")
        assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == sha512(path)
        assert image["size"] == image["uploaded_bytes"] == size and image["seconds"] >= 0
        assert image["virtual_size"] == 8 * MiB
        assert calls[-1] == (size, size) and len(calls) == len(set(calls))

        got = glance.download(clients, image["id"], str(tmp_path / "back.qcow2"))
        assert (tmp_path / "back.qcow2").read_bytes() == path.read_bytes()
        assert got["verified"] and got["bytes"] == size and got["hash_value"] == image["os_hash_value"]
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    assert glance.delete(clients, image["id"]) is False
    with pytest.raises(NotFound, match=image["id"]):
        glance.show(clients, image["id"])


def test_upload_raw_with_metadata_and_find(clients, name, tmp_path):
    path = random_file(tmp_path / "disk.raw", 3 * MiB)
    image = glance.upload(clients, str(path), name, disk_format="raw", min_disk=2, min_ram=128,
                          tags=["golden", name], properties={"os_distro": "debian", "build": name})
    with removing(clients, image["id"]):
        assert image["os_hash_value"] == sha512(path)
        assert (image["min_disk"], image["min_ram"]) == (2, 128)
        assert sorted(image["tags"]) == sorted(["golden", name])
        assert (image["os_distro"], image["build"]) == ("debian", name)
        for ref in (image["id"], name, {"name": name}, {"tag": name}, {"tag": ["golden", name]},
                    {"properties": {"build": name, "os_distro": "debian"}},
                    {"name": name, "visibility": "private", "owner": clients.project_id}):
            assert glance.find_image(clients, ref)["id"] == image["id"], ref
        assert [i["id"] for i in glance.find_images(clients, properties={"build": name})] == [image["id"]]
        for ref in ({"properties": {"build": name, "os_distro": "fedora"}}, {"tag": [name, "nope"]},
                    {"name": name, "visibility": "public"}):
            with pytest.raises(NotFound):
                glance.find_image(clients, ref)


def test_find_newest_wins(clients, name, tmp_path):
    first = glance.upload(clients, str(random_file(tmp_path / "a.raw", MiB)), name, disk_format="raw",
                          properties={"generation": "1"})
    with removing(clients, first["id"]):
        time.sleep(1.1)  # created_at has one-second resolution
        second = glance.upload(clients, str(random_file(tmp_path / "b.raw", MiB)), name,
                               disk_format="raw", properties={"generation": "2"})
        with removing(clients, second["id"]):
            assert glance.find_image(clients, name)["id"] == second["id"]
            assert [i["id"] for i in glance.find_images(clients, name=name)] == [second["id"], first["id"]]
            assert glance.find_image(clients, {"name": name, "properties": {"generation": "1"}})["id"] == first["id"]
            # a non-active image is skipped unless asked for
            with deactivated(clients, second["id"]):
                assert glance.find_image(clients, name)["id"] == first["id"]
                assert glance.find_image(clients, name, active_only=False)["id"] == second["id"]
                with pytest.raises(NotFound, match="deactivated"):
                    glance.find_image(clients, second["id"])


@contextlib.contextmanager
def deactivated(clients, image_id):
    clients.glance.images.deactivate(image_id)
    try:
        yield
    finally:
        clients.glance.images.reactivate(image_id)


def test_find_errors(clients):
    for ref in (str(uuid.uuid4()), f"{RUN}-no-such-image", {"name": f"{RUN}-none"}):
        with pytest.raises(NotFound, match=re.escape(repr(ref))):
            glance.find_image(clients, ref)
    for ref in (None, 3, "", {"colour": "red"}, {}, {"tag": 3}, {"properties": {"a": 1}},
                {"visibility": "everyone"}):
        with pytest.raises(InvalidArgument):
            glance.find_image(clients, ref)


def test_metadata_tags_visibility_members(clients, admin_clients, name, tmp_path):
    image = glance.upload(clients, str(random_file(tmp_path / "d.raw", MiB)), name, disk_format="raw")
    image_id = image["id"]
    with removing(clients, image_id):
        got = glance.set_properties(clients, image_id, color="blue", size_hint="small", min_disk=1)
        assert (got["color"], got["size_hint"], got["min_disk"]) == ("blue", "small", 1)
        got = glance.remove_properties(clients, image_id, ["color", "not-there"])
        assert "color" not in got and got["size_hint"] == "small"
        with pytest.raises(InvalidArgument, match="read-only"):
            glance.set_properties(clients, image_id, status="active")
        with pytest.raises(InvalidArgument, match="count"):
            glance.set_properties(clients, image_id, count=3)
        with pytest.raises(InvalidArgument, match="name"):
            glance.remove_properties(clients, image_id, "name")

        assert sorted(glance.add_tags(clients, image_id, ["a", "b"])["tags"]) == ["a", "b"]
        assert glance.remove_tags(clients, image_id, ["a", "never-set"])["tags"] == ["b"]

        assert glance.rename(clients, image_id, f"{name}-renamed")["name"] == f"{name}-renamed"
        assert glance.find_image(clients, f"{name}-renamed")["id"] == image_id

        with pytest.raises(InvalidArgument, match="everyone"):
            glance.set_visibility(clients, image_id, "everyone")
        with pytest.raises(CloudError, match="HTTP 403"):
            glance.set_visibility(clients, image_id, "public")  # admin-only by Glance policy
        with pytest.raises(InvalidArgument, match="private: only images with visibility 'shared'"):
            glance.add_member(clients, image_id, admin_clients.project_id)
        assert glance.set_visibility(clients, image_id, "community")["visibility"] == "community"
        assert glance.set_visibility(clients, image_id, "shared")["visibility"] == "shared"

        admin = admin_clients.project_id
        member = glance.add_member(clients, image_id, admin)
        assert (member["member_id"], member["status"]) == (admin, "pending")
        assert glance.set_member_status(admin_clients, image_id, "accepted")["status"] == "accepted"
        assert [(m["member_id"], m["status"]) for m in glance.list_members(clients, image_id)] == [(admin, "accepted")]
        assert glance.find_image(admin_clients, f"{name}-renamed")["id"] == image_id
        with pytest.raises(InvalidArgument, match="maybe"):
            glance.set_member_status(admin_clients, image_id, "maybe")
        assert glance.remove_member(clients, image_id, admin) is True
        assert glance.remove_member(clients, image_id, admin) is False
        assert glance.list_members(clients, image_id) == []
    with pytest.raises(NotFound):
        glance.rename(clients, image_id, "x")


def test_ami_triplet(clients, name, tmp_path):
    parts = glance.upload_ami_triplet(
        clients, str(random_file(tmp_path / "vmlinuz", 2 * MiB)),
        str(random_file(tmp_path / "initrd", MiB)), str(ext4_file(tmp_path / "root.img", tmp_path)),
        name, properties={"os_distro": "debian"}, tags=[name])
    with removing(clients, *(p["id"] for p in parts.values())):
        kernel, ramdisk, root = parts["kernel"], parts["ramdisk"], parts["root"]
        assert (kernel["disk_format"], kernel["container_format"], kernel["name"]) == ("aki", "aki", f"{name}-kernel")
        assert (ramdisk["disk_format"], ramdisk["container_format"]) == ("ari", "ari")
        assert (root["disk_format"], root["container_format"], root["name"]) == ("ami", "ami", name)
        assert (root["kernel_id"], root["ramdisk_id"]) == (kernel["id"], ramdisk["id"])
        assert root["os_distro"] == "debian" and "os_distro" not in kernel
        assert glance.find_image(clients, {"tag": name})["id"] == root["id"]
        assert all(p["status"] == "active" for p in parts.values())


def test_ami_triplet_failure_deletes_the_parts_made(clients, name, tmp_path):
    files = [str(random_file(tmp_path / "vmlinuz", MiB)), str(random_file(tmp_path / "initrd", MiB)),
             str(ext4_file(tmp_path / "root.img", tmp_path))]
    seen = []

    def progress(done, total):
        seen.append(total)
        if total == os.path.getsize(files[2]):
            raise RuntimeError("stop during the root upload")

    with pytest.raises(RuntimeError, match="root upload"):
        glance.upload_ami_triplet(clients, *files, name, progress=progress)
    assert seen  # the kernel and ramdisk were uploaded, then removed: fixture `name` checks
    with pytest.raises(InvalidArgument, match="qcow2"):
        glance.upload_ami_triplet(clients, files[0], files[1], str(qcow2_file(tmp_path / "r.qcow2")), name)
    with pytest.raises(InvalidArgument, match="kernel_id"):
        glance.upload_ami_triplet(clients, *files, name, properties={"kernel_id": str(uuid.uuid4())})


def test_upload_errors_create_nothing(clients, name, tmp_path):
    raw = str(random_file(tmp_path / "disk.raw", MiB))
    qcow2 = str(qcow2_file(tmp_path / "disk.qcow2"))
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", qcow2, "-F", "qcow2", str(overlay)], check=True)
    unreadable = random_file(tmp_path / "secret.raw", 10)
    unreadable.chmod(0)
    cases = [
        ({"path": raw, "disk_format": "qcow3"}, "qcow3.*allowed: .*qcow2"),
        ({"path": str(tmp_path / "missing.raw"), "disk_format": "raw"}, "does not exist"),
        ({"path": str(tmp_path), "disk_format": "raw"}, "not a regular file"),
        ({"path": qcow2, "disk_format": "raw"}, "is a qcow2 image but disk_format is 'raw'"),
        ({"path": raw, "disk_format": "qcow2"}, "is a raw image but disk_format is 'qcow2'"),
        ({"path": str(overlay), "disk_format": "qcow2"}, "backing file"),
        ({"path": qcow2, "disk_format": "ami"}, "qcow2 image but disk_format is 'ami'"),
        ({"path": raw, "disk_format": "raw", "container_format": "ami"}, "EC2-style"),
        ({"path": raw, "disk_format": "raw", "container_format": "tarball"}, "tarball"),
        ({"path": raw, "disk_format": "raw", "visibility": "everyone"}, "everyone"),
        ({"path": raw, "disk_format": "raw", "properties": {"n": 3}}, "quote it"),
        ({"path": raw, "disk_format": "raw", "properties": {"status": "active"}}, "status"),
        ({"path": raw, "disk_format": "raw", "min_disk": -1}, "min_disk"),
        ({"path": raw, "disk_format": "raw", "tags": [""]}, "tags"),
        ({"path": raw, "disk_format": "raw", "timeout": 0}, "timeout"),
        ({"path": raw, "disk_format": "raw", "progress": "yes"}, "progress"),
    ]
    if os.geteuid() != 0:  # root reads anything
        cases.append(({"path": str(unreadable), "disk_format": "raw"}, "not readable"))
    before = leftovers(clients, name)
    for kwargs, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            glance.upload(clients, name=name, **kwargs)
    assert leftovers(clients, name) == before == []


def test_upload_aborted_midway_deletes_the_image(clients, name, tmp_path):
    path = str(random_file(tmp_path / "big.raw", 16 * MiB))

    class Interrupted(BaseException):
        """Like KeyboardInterrupt, which pytest itself would act on."""

    def progress(done, total):
        if done < total:
            raise Interrupted

    with pytest.raises(Interrupted):
        glance.upload(clients, path, name, disk_format="raw", progress=progress)
    assert leftovers(clients, name) == []
    with pytest.raises(Timeout, match=f"uploading {path}"):
        glance.upload(clients, path, name, disk_format="raw", timeout=1e-6)


def test_download_errors(clients, name, tmp_path):
    with pytest.raises(NotFound):
        glance.download(clients, str(uuid.uuid4()), str(tmp_path / "x"))
    with pytest.raises(InvalidArgument, match="does not exist"):
        glance.download(clients, str(uuid.uuid4()), str(tmp_path / "no" / "x"))
    with pytest.raises(InvalidArgument, match="is a directory"):
        glance.download(clients, str(uuid.uuid4()), str(tmp_path))
    queued = clients.glance.images.create(name=name, disk_format="raw", container_format="bare")
    with removing(clients, queued["id"]):
        with pytest.raises(InvalidArgument, match="queued"):
            glance.download(clients, queued["id"], str(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []


def test_delete_refuses_an_image_in_use_and_a_protected_one(clients, name, tmp_path):
    # the chroot virt driver boots any filesystem with an /etc
    image = glance.upload(clients, str(ext4_file(tmp_path / "d.raw", tmp_path)), name, disk_format="raw")
    with removing(clients, image["id"]):
        with booted(clients, image["id"], f"{name}-server") as server:
            with pytest.raises(CloudError, match=f"used by server.*{server.id}") as refused:
                glance.delete(clients, image["id"])
            assert refused.value.http_status == 409
            assert glance.show(clients, image["id"])["status"] == "active"
            assert glance.servers_using(clients, image["id"]) == [server.id]
            assert glance.delete(clients, image["id"], force=True) is True
            with pytest.raises(NotFound):
                glance.show(clients, image["id"])

    image = glance.upload(clients, str(random_file(tmp_path / "p.raw", MiB)), name, disk_format="raw")
    with removing(clients, image["id"]):
        glance.set_properties(clients, image["id"], protected=True)
        with pytest.raises(CloudError, match="protected"):
            glance.delete(clients, image["id"])
        assert glance.delete(clients, image["id"], force=True) is True


def test_format_check_without_qemu_img(clients, name, tmp_path, monkeypatch):
    raw = str(random_file(tmp_path / "disk.raw", MiB))
    qcow2 = str(qcow2_file(tmp_path / "disk.qcow2"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-img: the qcow2 magic number decides
    with pytest.raises(InvalidArgument, match="is a qcow2 image but disk_format is 'raw'"):
        glance.upload(clients, qcow2, name, disk_format="raw")
    with pytest.raises(InvalidArgument, match="is a raw image but disk_format is 'qcow2'"):
        glance.upload(clients, raw, name)
    image = glance.upload(clients, qcow2, name)
    with removing(clients, image["id"]):
        assert image["disk_format"] == "qcow2" and image["status"] == "active"
