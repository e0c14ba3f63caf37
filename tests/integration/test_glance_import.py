"""Glance's interoperable image import, as production clouds use it: clouds that take images
only by import (direct uploads refused by policy, "upload_image": "!"), and imports that
convert the image (the image_conversion plugin: qcow2 to raw, as Ceph-backed clouds have it).

The local cloud's Glance is shared and is not reconfigured. Two ways to have such a Glance:
the fault proxy in front of it refusing PUT .../file with 403 (the cloud's own Glance then
imports, with no conversion), and a Glance process of the test's own (OwnGlance in
localcloud/faults.py: the policy and the conversion plugin of such a cloud, sharing the
cloud's database and keystone, its own port and store). The second is a real Glance refusing
by its real policy and converting with its real plugin; the first shows the import on the
cloud's Glance itself. The tests drive salt-call (ami_glance.upload, ami_glance.upload_ami_triplet
through a minion, ami.bake of the local provider) and check what is in Glance."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import RUN, MiB, local_minion, qcow2_file, random_file, salt_call_local, sha512
from localcloud import cli
from localcloud.faults import OwnGlance
from saltami import vanilla
from saltami.cloud import glance
from test_faults import proxied, through_proxy
from test_modules_nova import call_fails, call_ok

CONVERTED = {"import_method": "glance-direct", "verification": "converted-hash", "converted_from": "qcow2"}
IMPORTED = {"import_method": "glance-direct", "verification": "hash"}
# what a Glance that allows only import answers a direct upload, from its policy
REFUSED = "You are not authorized to complete upload_image action"


@pytest.fixture(scope="module")
def import_only(tmp_path_factory, localcloud):
    """A Glance that takes images only by import and converts them to raw on import."""
    with OwnGlance(tmp_path_factory.mktemp("import-only-glance"), policy={"upload_image": "!"},
                   import_plugins=["image_conversion"], conversion_format="raw") as own:
        yield own


def reaching(cloud_profile, own):
    return dict(cloud_profile, image_endpoint_override=own.url)


def raw_sha512(path, tmp_path):
    """The sha512 of the disk in an image file, as raw."""
    raw = tmp_path / f"{Path(path).name}.as.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    try:
        return sha512(raw), raw.stat().st_size
    finally:
        raw.unlink()


def staged_files(staging):
    return sorted(os.listdir(staging)) if os.path.isdir(staging) else []


# ----------------------------------------------------------------- the cloud's Glance, upload refused
def test_a_refused_upload_is_imported_instead(name, salt_call, clients, demo_session, cloud_profile, tmp_path):
    path = random_file(tmp_path / "disk.raw", 8 * MiB)
    with proxied(demo_session, "image") as (proxy, url):
        refused = proxy.answer("PUT", r"/v2/images/[^/]+/file$", 403)
        image = call_ok(salt_call, "ami_glance.upload", str(path), name, disk_format="raw",
                        properties={"os_distro": "debian"}, tags=["ami-test"],
                        cloud=through_proxy(cloud_profile, "image", url))
    try:
        assert refused.fired == 1
        calls = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in proxy.requests if "/v2/images/" in p]
        assert ("PUT", "stage") in calls and ("POST", "import") in calls
        assert {k: image.get(k) for k in IMPORTED} == IMPORTED
        stored = glance.show(clients, image["id"])
        assert (stored["status"], stored["disk_format"], stored["size"]) == ("active", "raw", 8 * MiB)
        assert stored["os_hash_value"] == sha512(path)
        assert stored["os_distro"] == "debian" and stored["tags"] == ["ami-test"]
    finally:
        glance.delete(clients, image["id"], force=True)


def test_a_failed_import_leaves_no_image_and_no_staged_data(name, salt_call, clients, demo_session,
                                                           cloud_profile, tmp_path):
    path = random_file(tmp_path / "disk.raw", 4 * MiB)
    staging = cli.STATE / "glance" / "staging"
    with proxied(demo_session, "image") as (proxy, url):
        proxy.answer("PUT", r"/v2/images/[^/]+/file$", 403)
        failed = proxy.answer("POST", r"/v2/images/[^/]+/import$", 500)
        out = call_fails(salt_call, "ami_glance.upload", str(path), name, disk_format="raw",
                         cloud=through_proxy(cloud_profile, "image", url))
    assert failed.fired == 1
    assert "importing image" in out and "HTTP 500" in out, out
    staged = [p for m, p, _ in proxy.requests if m == "PUT" and p.endswith("/stage")]
    image_id = staged[0].split("/")[-2]
    assert glance._get(clients, image_id) is None or glance._get(clients, image_id)["status"] == "deleted"
    assert image_id not in staged_files(staging)


# ----------------------------------------------------------------- a Glance that allows only import
def test_an_import_only_glance_converts_to_raw_and_the_hash_is_verified(name, salt_call, clients, import_only,
                                                                       cloud_profile, tmp_path):
    path = qcow2_file(tmp_path / "disk.qcow2")
    image = call_ok(salt_call, "ami_glance.upload", str(path), name, disk_format="qcow2",
                    properties={"os_distro": "debian"}, cloud=reaching(cloud_profile, import_only))
    try:
        assert {k: image.get(k) for k in CONVERTED} == CONVERTED
        stored = glance.show(clients, image["id"])
        digest, size = raw_sha512(path, tmp_path)
        assert (stored["status"], stored["disk_format"], stored["size"]) == ("active", "raw", size)
        assert stored["virtual_size"] == 8 * MiB and stored["os_hash_value"] == digest
        assert stored["os_distro"] == "debian"
        # and what it refused: the direct upload, by its policy
        out = call_fails(salt_call, "ami_glance.upload", str(path), f"{name}-direct", method="upload",
                         cloud=reaching(cloud_profile, import_only))
        assert REFUSED in out and "HTTP 403" in out, out
    finally:
        glance.delete(clients, image["id"], force=True)
    assert staged_files(import_only.dir / "data" / "staging") == []


def test_a_conversion_to_qcow2_is_verified_by_content(name, salt_call, clients, cloud_profile, tmp_path):
    path = random_file(tmp_path / "disk.raw", 4 * MiB)
    with OwnGlance(tmp_path / "glance", policy={"upload_image": "!"}, import_plugins=["image_conversion"],
                   conversion_format="qcow2") as own:
        image = call_ok(salt_call, "ami_glance.upload", str(path), name, disk_format="raw",
                        cloud=reaching(cloud_profile, own))
        try:
            assert (image["verification"], image["converted_from"]) == ("content", "raw")
            stored = glance.show(clients, image["id"])
            assert (stored["status"], stored["disk_format"], stored["virtual_size"]) == ("active", "qcow2", 4 * MiB)
            back = tmp_path / "back.qcow2"
            call_ok(salt_call, "ami_glance.download", image["id"], str(back), cloud=reaching(cloud_profile, own))
            assert raw_sha512(back, tmp_path) == (sha512(path), 4 * MiB)
        finally:
            glance.delete(clients, image["id"], force=True)


def test_an_import_that_glance_fails_says_why_and_leaves_none_of_the_triplet(name, salt_call, clients,
                                                                            import_only, cloud_profile, tmp_path):
    """Glance's conversion refuses aki, ari and ami (its format inspector finds raw data):
    the import fails in Glance, after the kernel was staged and imported."""
    files = [str(random_file(tmp_path / f, MiB)) for f in ("vmlinuz", "initrd.img", "root.img")]
    out = call_fails(salt_call, "ami_glance.upload_ami_triplet", *files, name,
                     cloud=reaching(cloud_profile, import_only))
    assert "Glance's import to fs failed, the image is back to queued" in out, out
    assert "refuses aki, ari, ami images" in out, out
    assert not glance.find_images(clients, name=f"{name}-kernel", active_only=False)
    assert staged_files(import_only.dir / "data" / "staging") == []


def test_a_glance_that_refuses_uploads_and_offers_no_glance_direct(name, salt_call, clients, cloud_profile,
                                                                   tmp_path):
    path = random_file(tmp_path / "disk.raw", MiB)
    with OwnGlance(tmp_path / "glance", policy={"upload_image": "!"},
                   options={"DEFAULT": {"enabled_import_methods": "['web-download']"}}) as own:
        out = call_fails(salt_call, "ami_glance.upload", str(path), name, disk_format="raw",
                         cloud=reaching(cloud_profile, own))
        assert REFUSED in out and "does not offer the glance-direct import either" in out, out
        assert "its import methods: web-download" in out, out
        out = call_fails(salt_call, "ami_glance.upload", str(path), name, disk_format="raw", method="import",
                         cloud=reaching(cloud_profile, own))
        assert "method 'import' needs Glance's glance-direct import" in out, out
    out = call_fails(salt_call, "ami_glance.upload", str(path), name, disk_format="raw", method="copy")
    assert "method 'copy'" in out and "auto" in out, out


# ----------------------------------------------------------------- the local provider on such a cloud
@pytest.fixture(scope="module")
def vanilla_image():
    return vanilla.ensure()


def bake(tmp_path, cloud, flavour_name, outputs):
    flavour = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["amitest"],
               "pillar": {"amitest": {"mark": f"import-{RUN}"}}, "outputs": outputs,
               "output_dir": str(tmp_path / "images"), "image_name": "{flavour}-{build}",
               "properties": {"os_distro": "debian"}, "validate": False}
    minion = local_minion(tmp_path / "minion", {flavour_name: flavour}, cloud=cloud)
    return minion


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")
def test_a_local_bake_on_an_import_only_converting_cloud(tmp_path, cloud_profile, module_clients, import_only,
                                                         vanilla_image):
    """The qcow2 output is converted to raw by Glance and verified against the disk converted
    here; the raw output is imported as it is: both hold the same disk, so the same hash."""
    flavour = f"import-{RUN[-8:]}"
    minion = bake(tmp_path, reaching(cloud_profile, import_only), flavour, ["qcow2-zstd", "raw"])
    ids = []
    try:
        result = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={flavour}")
        assert result["status"] == "done", result
        build = json.loads(Path(result["manifest"]).read_text())
        ids = [i for parts in build["outputs"]["uploaded"].values() for i in parts.values()]
        assert build["outputs"]["stored"] == {"qcow2-zstd": {"image": {"disk_format": "raw", **CONVERTED}},
                                              "raw": {"image": {"disk_format": "raw", **IMPORTED}}}
        primary = glance.show(module_clients, build["outputs"]["uploaded"]["qcow2-zstd"]["image"])
        raw = glance.show(module_clients, build["outputs"]["uploaded"]["raw"]["image"])
        assert primary["name"] == result["image"]["name"] and primary["ami_status"] == "promoted"
        assert (primary["status"], primary["disk_format"], primary["os_distro"]) == ("active", "raw", "debian")
        assert raw["name"] == f"{primary['name']}-raw" and raw["status"] == "active"
        assert primary["os_hash_value"] == raw["os_hash_value"] and primary["size"] == raw["size"]
        assert primary["ami_fingerprint"] == build["fingerprint"]
    finally:
        for image_id in ids:
            glance.delete(module_clients, image_id, force=True)
    assert staged_files(import_only.dir / "data" / "staging") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")
def test_a_local_bake_whose_import_fails_leaves_nothing_in_glance(tmp_path, cloud_profile, module_clients,
                                                                  import_only, vanilla_image):
    """The AMI triplet cannot be imported where Glance converts: the bake fails at publish
    with Glance's reason, and the qcow2 image it had imported before is deleted."""
    flavour = f"import-fails-{RUN[-8:]}"
    minion = bake(tmp_path, reaching(cloud_profile, import_only), flavour, ["qcow2", "ami"])
    proc = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={flavour}", popen=True)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode != 0, out
    said = out.decode() + err.decode()
    assert "step publish failed" in said and "refuses aki, ari, ami images" in said, said[-3000:]
    left = [i for i in module_clients.glance.images.list(filters={"visibility": "all"})
            if i.get("ami_flavour") == flavour or flavour in (i.get("name") or "")]
    assert left == []
    assert staged_files(import_only.dir / "data" / "staging") == []
    assert not list((tmp_path / "images").glob("*/*"))

