"""saltami.cloud.glance's choice between a direct upload and Glance's import, its wait for an
import and its verification of what Glance stores, converted or not. Pure logic over a fake
Glance (the images API as glanceclient exposes it, answering from its own state); the
conversions are real ones, by qemu-img. The real Glance's behaviour is shown in
tests/integration/test_glance_import.py."""
import hashlib
import shutil
import subprocess
import types

import pytest
from glanceclient import exc as glance_exc

from saltami.cloud import glance
from saltami.errors import CloudError, ResourceFailed, Timeout

MiB = 1 << 20


class FakeImages:
    """Images of one fake Glance: ``refuse_upload`` answers PUT .../file 403 as a policy
    does; ``methods`` are its import methods; ``import_fails`` puts an import's image back to
    queued as Glance does; ``convert_to`` makes the import store that format instead."""

    def __init__(self, methods=("glance-direct", "web-download"), refuse_upload=False, import_fails=False,
                 never_imports=False):
        self.methods, self.refuse_upload = methods, refuse_upload
        self.import_fails, self.never_imports = import_fails, never_imports
        self.images, self.calls = {}, []

    def _read(self, data):
        out = b""
        for chunk in iter(lambda: data.read(MiB), b""):
            out += chunk
        return out

    def get(self, image_id):
        if image_id not in self.images:
            raise glance_exc.HTTPNotFound("no such image")
        return dict(self.images[image_id])

    def upload(self, image_id, data, image_size=None):
        self.calls.append("upload")
        if self.refuse_upload:
            data.read(MiB)       # a real Glance refuses after a few chunks went
            raise glance_exc.HTTPForbidden("You are not authorized to complete upload_image action.")
        body = self._read(data)
        self.images[image_id].update(status="active", size=len(body), os_hash_algo="sha512",
                                     os_hash_value=hashlib.sha512(body).hexdigest())

    def stage(self, image_id, data, image_size=None):
        self.calls.append("stage")
        self.staged = self._read(data)
        self.images[image_id].update(status="uploading", size=len(self.staged))

    def image_import(self, image_id, method):
        self.calls.append(f"import {method}")
        image = self.images[image_id]
        if self.never_imports:
            return
        if self.import_fails:
            image.update(status="queued", size=None, os_glance_failed_import="fs")
            return
        image.update(status="active", os_hash_algo="sha512", os_hash_value=hashlib.sha512(self.staged).hexdigest())

    def get_import_info(self):
        return {"import-methods": {"value": list(self.methods)}}

    def get_associated_image_tasks(self, image_id):
        return {"tasks": [{"id": "t-1", "created_at": "2026-01-01T00:00:00Z", "status": "failure",
                           "message": "Task failed due to Internal Error"}]}


def fake_clients(images):
    return types.SimpleNamespace(glance=types.SimpleNamespace(images=images))


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(range(256)) * (8 * MiB // 256))
    return str(path)


def put(images, disk, method="auto", image=None, timeout=30):
    images.images["i-1"] = dict(image or {"id": "i-1", "status": "queued", "disk_format": "raw"})
    return glance._put_data(fake_clients(images), "i-1", disk, 8 * MiB, None, timeout, method)


# ----------------------------------------------------------------------------- upload or import
def test_auto_uploads_where_glance_takes_uploads(disk):
    images = FakeImages()
    image, transfer, imported = put(images, disk)
    assert images.calls == ["upload"] and imported is None and image["status"] == "active"
    assert transfer.hasher.hexdigest() == image["os_hash_value"]


def test_auto_stages_and_imports_where_glance_refuses_the_upload(disk):
    images = FakeImages(refuse_upload=True)
    image, transfer, imported = put(images, disk)
    assert images.calls == ["upload", "stage", "import glance-direct"] and imported == "glance-direct"
    # the hash is of the whole file, sent again from its start
    assert transfer.done == 8 * MiB and transfer.hasher.hexdigest() == image["os_hash_value"]


def test_method_import_never_uploads(disk):
    images = FakeImages()
    put(images, disk, method="import")
    assert images.calls == ["stage", "import glance-direct"]


def test_method_upload_never_imports(disk):
    images = FakeImages(refuse_upload=True)
    with pytest.raises(CloudError, match="upload_image action") as e:
        put(images, disk, method="upload")
    assert e.value.http_status == 403 and images.calls == ["upload"]


def test_a_refused_upload_without_glance_direct_says_what_glance_offers(disk):
    images = FakeImages(methods=("web-download",), refuse_upload=True)
    with pytest.raises(CloudError, match="does not offer the glance-direct import either "
                                         r"\(its import methods: web-download\)"):
        put(images, disk)
    assert images.calls == ["upload"]


def test_method_import_is_checked_before_anything_is_made():
    with pytest.raises(CloudError, match="method 'import' needs Glance's glance-direct import.*: none"):
        glance._check_method(fake_clients(FakeImages(methods=())), "import")
    with pytest.raises(Exception, match="'sideways'"):
        glance._check_method(fake_clients(FakeImages()), "sideways")


def test_a_failed_import_says_why_and_names_the_triplet_formats(disk):
    images = FakeImages(import_fails=True)
    with pytest.raises(ResourceFailed) as e:
        put(images, disk, method="import", image={"id": "i-1", "status": "queued", "disk_format": "aki"})
    said = str(e.value)
    assert "Glance's import to fs failed, the image is back to queued" in said
    assert "task t-1 says: Task failed due to Internal Error" in said
    assert "refuses aki, ari, ami images" in said


def test_an_import_glance_never_starts_times_out_saying_so(disk):
    images = FakeImages(never_imports=True)
    with pytest.raises(Timeout, match="status uploading: Glance never started the import"):
        put(images, disk, method="import", timeout=0.3)


# ----------------------------------------------------------------------------- verification
qemu = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")


@pytest.fixture
def qcow2(tmp_path):
    """A 4 MiB qcow2 with 1 MiB of 0xcd at 1 MiB, and its disk as raw bytes."""
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "4M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xcd 1M 1M", str(path)], check=True, stdout=subprocess.DEVNULL)
    return str(path), bytes(MiB) + b"\xcd" * MiB + bytes(2 * MiB)


def converted(content, **more):
    return {"id": "i-1", "disk_format": "raw", "size": len(content), "virtual_size": len(content),
            "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(content).hexdigest(), **more}


@qemu
def test_a_conversion_to_raw_is_verified_against_the_file_converted_here(qcow2):
    path, content = qcow2
    assert glance._verify_conversion(None, converted(content), path, "qcow2", 30) == \
        {"verification": "converted-hash", "converted_from": "qcow2"}


@qemu
@pytest.mark.parametrize("damage,says", [
    ({"os_hash_value": "0" * 128}, "the data was damaged on the way"),
    ({"size": 3 * MiB}, "the data was damaged on the way"),
    ({"virtual_size": 3 * MiB}, "the image's virtual size is 3145728 bytes, the file's 4194304"),
])
def test_a_conversion_that_does_not_hold_the_file_fails(qcow2, damage, says):
    path, content = qcow2
    with pytest.raises(CloudError, match=says):
        glance._verify_conversion(None, converted(content, **damage), path, "qcow2", 30)


@qemu
def test_a_conversion_that_cannot_be_checked_fails_and_is_never_skipped(qcow2, monkeypatch):
    path, content = qcow2
    monkeypatch.setattr(glance, "_qemu_img_info", lambda path: None)
    with pytest.raises(CloudError, match=r"cannot be verified here \(it needs a working qemu-img\); "
                                         "upload the image as raw"):
        glance._verify_conversion(None, converted(content), path, "qcow2", 30)
    with pytest.raises(CloudError, match="qemu-img does not read both formats"):
        glance._verify_conversion(None, converted(content, disk_format="iso"), path, "qcow2", 30)


@qemu
def test_an_unconverted_image_is_verified_by_the_hash_of_the_bytes_sent(qcow2, disk):
    images = FakeImages()
    image, transfer, _ = put(images, disk)
    assert glance._verify_upload(None, image, disk, transfer, "raw", 30) == {"verification": "hash"}
    with pytest.raises(CloudError, match="the data was damaged on the way"):
        glance._verify_upload(None, {**image, "os_hash_value": "0" * 128}, disk, transfer, "raw", 30)
    # a disk_format other than the one declared: the conversion's check, not the bytes'
    path, content = qcow2
    with pytest.raises(CloudError, match="Glance's import converted .* from qcow2 to raw"):
        glance._verify_upload(None, {**image, "virtual_size": 1}, path, transfer, "qcow2", 30)
