"""The ami.present state as users declare images: an SLS with ``ami.present`` run by
``salt-run state.orch`` on the real master, for each of its outcomes (built, up to date,
failed), each with ``test=True`` too. The flavours are given inline in the state and named
for this run, so that other sessions building on the same cloud do not see them."""
import json
import uuid

import pytest
import yaml

from helpers import NOTHING, RUN, cloud_inventory
from saltami import provenance
from saltami.cloud import glance
from test_build import states_of

FLAVOUR = f"amitest-st-{RUN[-8:]}"
BROKEN = f"amitest-stbroken-{RUN[-8:]}"
# an inline flavour has no pillar of its own (saltami/build_pillar.py): it has amitest's
# no second boot to check the image: these tests are about the states, test_build.py validates
DEFINITION = {"extends": "amitest", "validate": False}


def present(salt_master, salt_run, name, definition, test=False):
    """(the orchestration's return, the ami.present state's return) of an SLS declaring
    flavour ``name`` with ``definition`` inline."""
    sls = yaml.safe_dump({name: {"ami.present": [{key: value} for key, value in definition.items()]}})
    stem = f"amipresent-{uuid.uuid4().hex[:8]}"
    with salt_master.state_tree.base.temp_file(f"{stem}.sls", sls):
        ret = salt_run.run("state.orch", stem, test=test)
    (state,) = states_of(ret).values()
    return ret, state


@pytest.fixture(scope="module")
def outcomes(salt_master, salt_run, module_clients, salt_key):
    """The flavour declared four times: with test=True before any image exists, for real
    (a build), for real again, and with test=True again; what the cloud held before."""
    before = cloud_inventory(module_clients, salt_key, FLAVOUR)
    runs = {}
    try:
        for label, test in (("would build", True), ("built", False), ("again", False), ("test again", True)):
            runs[label] = present(salt_master, salt_run, FLAVOUR, DEFINITION, test=test)
        yield {"before": before, **runs}
    finally:
        provenance.prune(module_clients, FLAVOUR, keep=0, force=True)


def test_with_test_true_before_any_image_says_what_would_be_built_and_why(outcomes):
    ret, state = outcomes["would build"]
    assert ret.returncode == 0
    assert state["result"] is None
    assert state["comment"] == f"flavour {FLAVOUR} would be built: no image of flavour {FLAVOUR} exists"
    assert state["changes"]["image"]["old"] is None
    assert state["changes"]["image"]["new"].startswith("fingerprint ")


def test_built_the_image_with_the_flavours_properties(outcomes, module_clients):
    ret, state = outcomes["built"]
    assert ret.returncode == 0, state
    assert state["result"] is True, state["comment"]
    new = state["changes"]["image"]["new"]
    assert state["comment"] == f"built image {new['name']} because no image of flavour {FLAVOUR} exists"
    image = glance.show(module_clients, new["id"])
    assert image["name"] == new["name"] and image["name"].startswith(f"{FLAVOUR}-")
    assert image["status"] == "active"
    # the flavour's own properties (from amitest, which it extends) and its provenance
    assert image["os_distro"] == "debian" and image["os_version"] == "12"
    assert image["ami_flavour"] == FLAVOUR and image["ami_status"] == "promoted"
    assert image["ami_build"] == state["changes"]["build"]["id"]
    assert provenance.find_promoted(module_clients, FLAVOUR)[0]["id"] == image["id"]
    manifest = json.loads(open(state["changes"]["build"]["manifest"]).read())
    assert manifest["status"] == "done" and manifest["fingerprint"] == image["ami_fingerprint"]


def test_up_to_date_says_so_and_changes_nothing(outcomes, module_clients):
    image = outcomes["built"][1]["changes"]["image"]["new"]
    ret, state = outcomes["again"]
    assert ret.returncode == 0
    assert state["result"] is True and state["changes"] == {}
    fingerprint = glance.show(module_clients, image["id"])["ami_fingerprint"]
    assert state["comment"] == (f"image {image['name']} ({image['id']}) has fingerprint {fingerprint}: "
                                "nothing to build")
    assert [i["id"] for i in provenance.find_promoted(module_clients, FLAVOUR)] == [image["id"]]


def test_up_to_date_with_test_true_is_true(outcomes):
    _ret, state = outcomes["test again"]
    assert state["result"] is True and state["changes"] == {}
    assert state["comment"].endswith("nothing to build")


def test_out_of_date_with_test_true_says_why_and_builds_nothing(outcomes, salt_master, salt_run, module_clients,
                                                               salt_key):
    image = outcomes["built"][1]["changes"]["image"]["new"]
    before = cloud_inventory(module_clients, salt_key, FLAVOUR)
    changed = {**DEFINITION, "properties": {"test_mark": f"changed-{RUN}"}}
    _ret, state = present(salt_master, salt_run, FLAVOUR, changed, test=True)
    assert state["result"] is None
    assert state["comment"] == f"flavour {FLAVOUR} would be built: settings_hash changed"
    assert state["changes"]["image"]["old"]["id"] == image["id"]
    assert cloud_inventory(module_clients, salt_key, FLAVOUR) == before


def test_failed_build_names_the_step_and_reason_and_leaves_nothing(salt_master, salt_run, module_clients,
                                                                  salt_key, builds_dir):
    broken = {"extends": "amitest", "sls": ["amitestbroken"], "validate": False}
    before = cloud_inventory(module_clients, salt_key, BROKEN)
    assert before == NOTHING
    _ret, would = present(salt_master, salt_run, BROKEN, broken, test=True)
    assert would["result"] is None and f"no image of flavour {BROKEN} exists" in would["comment"]

    ret, state = present(salt_master, salt_run, BROKEN, broken)
    assert ret.returncode != 0
    assert state["result"] is False and state["changes"] == {}
    assert "step provision failed" in state["comment"]
    # the failing state's id and what it said on stderr
    assert "amitest-broken-step" in state["comment"] and "this state fails on purpose" in state["comment"]
    assert cloud_inventory(module_clients, salt_key, BROKEN) == NOTHING
    manifests = [json.loads(p.read_text()) for p in builds_dir.glob(f"{BROKEN}-*.json")
                 if not p.name.endswith(".packages.json")]
    assert [(m["status"], m["failed_step"]) for m in manifests] == [("cleaned", "provision")]
    assert not any(v for m in manifests for v in m["resources"].values())
