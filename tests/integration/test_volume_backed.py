"""Builders booted from volumes, as on the Ceph-backed clouds whose flavors have no root disk:
there nova refuses anyone but an admin a server booted from an image onto the flavor's own
disk (BootFromVolumeRequiredForZeroDiskFlavor), so the builder and the validator boot from a
volume made from the image. nova's createImage of such a server makes no image data: a
zero-byte Glance image whose block_device_mapping names a cinder snapshot of the volume,
which nobody can download or audit and which pins the volume. The build makes a real image
of it (a volume of the snapshot, uploaded by cinder) and leaves no volume, snapshot or
zero-byte image behind."""
import json
from pathlib import Path

import pytest

from helpers import RUN, ZERO_DISK_FLAVOR, ZERO_DISK_FLAVOUR, cloud_inventory, mounted_image
from saltami import audit, provenance
from saltami.cloud import glance, nova
from saltami.cloud.auth import connect
from saltami.errors import CloudError
from test_build import build_secrets, orch, states_of  # noqa: F401  (build_secrets is a fixture)


@pytest.fixture(scope="module")
def zero_disk_flavor(localcloud):
    """A nova flavor with no root disk, made by the admin as a Ceph-backed cloud's are."""
    admin = connect(profile={"cloud": "localcloud-admin", "clouds_yaml": str(localcloud.clouds_yaml)})
    flavor = admin.nova.flavors.create(ZERO_DISK_FLAVOR, ram=512, vcpus=1, disk=0)
    yield flavor
    flavor.delete()


def test_nova_refuses_an_image_boot_on_a_flavor_without_disk(zero_disk_flavor, module_clients, base_image):
    """What the builds below are for: the cloud behaves as such clouds do."""
    with pytest.raises(CloudError) as e:
        nova.boot(module_clients, f"{RUN}-zerodisk-imageboot", image=base_image["id"], flavor=ZERO_DISK_FLAVOR)
    assert "BootFromVolumeRequiredForZeroDiskFlavor" in str(e.value) or "zero disk" in str(e.value).lower(), e.value


@pytest.fixture(scope="module")
def built(zero_disk_flavor, salt_run, salt_master, module_clients, salt_key):
    provenance.prune(module_clients, ZERO_DISK_FLAVOUR, keep=0, force=True)
    before = cloud_inventory(module_clients, salt_key, ZERO_DISK_FLAVOUR)
    ret = orch(salt_run, ZERO_DISK_FLAVOUR)
    states = states_of(ret)
    failed = {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert ret.returncode == 0 and not failed, failed
    (image,) = provenance.find_promoted(module_clients, ZERO_DISK_FLAVOUR)
    manifest = json.loads((Path(salt_master.config["cachedir"]) / "ami" / "builds" /
                           f"{image['ami_build']}.json").read_text())
    yield {"image": image, "states": states, "manifest": manifest, "before": before}
    provenance.prune(module_clients, ZERO_DISK_FLAVOUR, keep=0, force=True)


def test_the_builder_and_the_validator_booted_from_volumes(built):
    manifest = built["manifest"]
    assert manifest["status"] == "done"
    assert manifest["builder"]["volume_gib"] >= 1 and manifest["validator"]["volume_gib"] >= 1
    # the snapshot came from a cinder snapshot of the builder's volume, made into a real image
    snapshot = built["states"][f"ami-{ZERO_DISK_FLAVOUR}-snapshot"]["changes"]
    assert snapshot.get("from_volume_snapshots"), snapshot


def test_the_image_holds_its_bytes_and_nothing_is_left(built, module_clients, salt_key, build_secrets,  # noqa: F811
                                                       tmp_path):
    image = glance.show(module_clients, built["image"]["id"])
    # an image of its own, not a zero-byte one that names a cinder snapshot
    assert not glance.block_device_mapping(image) and image["size"] > 0
    assert image["min_disk"] >= 1
    path = tmp_path / f"zerodisk.{image['disk_format']}"
    glance.download(module_clients, image["id"], str(path))
    with mounted_image(path, tmp_path) as root:
        assert (root / "etc/ami-test/flavour").read_text().strip() == "baked-by-test"
    assert audit.audit(str(path), build_secrets, workdir=tmp_path)["findings"] == []
    # no volume, snapshot, server, minion key or other image of the build's is left
    after = cloud_inventory(module_clients, salt_key, ZERO_DISK_FLAVOUR)
    assert after == {**built["before"], "images": sorted(built["before"]["images"] + [image["id"]])}
    assert not [s for s in module_clients.cinder.volume_snapshots.list()
                if s.metadata.get("ami_build") == image["ami_build"] or image["ami_build"] in (s.name or "")]
