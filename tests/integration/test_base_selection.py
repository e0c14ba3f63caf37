"""The base a flavour names by properties (as pillar.example does) stays the base image: the
flavour's own golden images, which inherit the base's properties (nova snapshots copy them)
and get the flavour's, are never its base, so its second build has nothing to do; a flavour
that wants a build's image asks for it with an ami_ property."""
import json

import pytest

from helpers import RUN, cloud_inventory
from saltami import provenance
from saltami.cloud import glance

FLAVOUR = f"amitest-base-{RUN[-8:]}"


@pytest.fixture(scope="module")
def own_base(localcloud, module_clients):
    """A copy of the base test image that only this module boots: the other test process's
    snapshots of servers of the shared base inherit its properties, and one of them, newer,
    would match a filter on those (as it would on a cloud where others snapshot the base)."""
    from localcloud import baseimage

    path = baseimage.as_qcow2(localcloud.base_image()["path"])
    image = glance.upload(module_clients, str(path), f"amitest-base-{RUN}", disk_format="qcow2",
                          properties={"os_distro": "debian", "amitest_base_of": RUN})
    yield image
    glance.delete(module_clients, image["id"], force=True)


@pytest.fixture(scope="module")
def definition(own_base, module_clients):
    """A flavour whose base is given by properties only, which its base image has and which
    every image made from it inherits."""
    # no second boot to check the image: these builds are about the base (test_build.py validates)
    yield {"extends": "amitest", "keep": 1, "validate": False,
           "base": {"properties": {"os_distro": "debian", "amitest_base_of": RUN}}}
    provenance.prune(module_clients, FLAVOUR, keep=0, force=True)


def runner(salt_run, function, flavour, definition):
    ret = salt_run.run(function, flavour=flavour, definition=definition)
    return ret, ret.stdout + ret.stderr


def test_the_second_build_of_a_base_given_by_properties_has_nothing_to_do(salt_run, module_clients, salt_key,
                                                                          definition, own_base):
    provenance.prune(module_clients, FLAVOUR, keep=0, force=True)
    ret, out = runner(salt_run, "ami.build", FLAVOUR, definition)
    assert ret.returncode == 0, out[-3000:]
    (first,) = provenance.find_promoted(module_clients, FLAVOUR)
    assert first["ami_base_id"] == own_base["id"]
    # the golden image matches the base's filter, and is the newest that does: what a build
    # that took the newest match would have started from next
    matches = glance.find_images(module_clients, properties=definition["base"]["properties"])
    assert matches[0]["id"] == first["id"]

    ret, out = runner(salt_run, "ami.status", FLAVOUR, definition)
    assert ret.returncode == 0, out
    assert ret.data["up_to_date"] is True and ret.data["why"] == [], ret.data
    assert ret.data["base"]["id"] == own_base["id"]

    before = cloud_inventory(module_clients, salt_key, FLAVOUR)
    ret, out = runner(salt_run, "ami.build", FLAVOUR, definition)
    assert ret.returncode == 0, out[-3000:]
    assert f"already has fingerprint {first['ami_fingerprint']}" in json.dumps(ret.data), ret.data
    assert [i["id"] for i in provenance.find_promoted(module_clients, FLAVOUR)] == [first["id"]]
    assert cloud_inventory(module_clients, salt_key, FLAVOUR) == before


def test_a_build_image_is_a_base_only_when_asked_for(salt_run, module_clients, definition, own_base):
    (golden,) = provenance.find_promoted(module_clients, FLAVOUR) or pytest.skip("needs the build above")
    # asked for by an ami_ property: the newest promoted image of the flavour
    child = {"extends": "amitest", "base": {"properties": {"ami_flavour": FLAVOUR, "ami_status": "promoted"}}}
    ret, out = runner(salt_run, "ami.status", f"{FLAVOUR}-child", child)
    assert ret.returncode == 0, out
    assert ret.data["base"]["id"] == golden["id"]
    # by its name (or tags, or other properties) it is passed over, and the error says why
    ret, out = runner(salt_run, "ami.status", f"{FLAVOUR}-byname",
                      {"extends": "amitest", "base": {"name": golden["name"]}})
    # (salt-run exits 0 after a runner's "Passed invalid arguments")
    assert "Passed invalid arguments" in out and ret.data is None
    assert golden["name"] in out and "made by a build" in out and golden["id"] in out, out
