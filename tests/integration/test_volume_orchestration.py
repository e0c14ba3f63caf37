"""The orchestration's volume strategy: `salt-run state.orch ami.build` of a flavour whose
builder (an image with salt-ami, see the builder_image fixture) bakes a volume of the base
image through a chroot as a minion of the master."""
from helpers import cloud_inventory, mounted_image
from saltami import audit, provenance
from saltami.cloud import glance
from test_build import build_secrets, orch, states_of  # noqa: F401  (build_secrets is a fixture)


def test_orchestrated_volume_build(builder_image, salt_run, module_clients, salt_key,
                                   build_secrets, tmp_path):  # noqa: F811 (the fixture imported above)
    """strategy volume through the master: the builder (an image with salt-ami) gets a
    volume of the base attached and bakes it through a chroot as its minion."""
    provenance.prune(module_clients, "amitest-volume", keep=0, force=True)
    before = cloud_inventory(module_clients, salt_key, "amitest-volume")
    ret = orch(salt_run, "amitest-volume")
    states = states_of(ret)
    failed = {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert ret.returncode == 0 and not failed, (failed, [v["changes"] for v in states.values() if not v["result"]])
    for step in ("resolve", "boot", "volume", "attach", "bake", "detach", "upload", "release_volume", "release",
                 "validate", "promote", "prune"):
        assert f"ami-amitest-volume-{step}" in states, step
    (image,) = provenance.find_promoted(module_clients, "amitest-volume")
    assert image["ami_sls"] == "amitest" and image["disk_format"] == "qcow2"
    # the build's image is all that is new: no volume, server or minion key is left
    after = cloud_inventory(module_clients, salt_key, "amitest-volume")
    assert after == {**before, "images": sorted(before["images"] + [image["id"]])}

    qcow2 = tmp_path / "image.qcow2"
    glance.download(module_clients, image["id"], str(qcow2))
    with mounted_image(qcow2, tmp_path) as mnt:
        assert (mnt / "etc/ami-test/flavour").read_text() == "baked-by-a-builder\n"
        assert not (mnt / "usr/sbin/policy-rc.d").exists() and not (mnt / "run/salt-ami").exists()
    assert audit.audit(str(qcow2), build_secrets, workdir=tmp_path)["findings"] == []
