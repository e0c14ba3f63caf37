"""Image families, as a user drives them through a real master and the local cloud: a flavour
with ``from_parent: true`` is built from its parent's newest promoted image with its own SLS
only. The family of the test flavours (tests/integration/conftest.py): amitest-fam (extends
amitest) <- amitest-fam-child (amitest.extra) <- amitest-fam-grandchild (amitestfamily), all
with validate: false, and amitest-fam-orphan, built from amitest-broken's image, which no
build ever makes."""
import re
import time

import pytest

from helpers import cloud_inventory, mounted_image
from saltami import provenance
from saltami.cloud import glance
from test_build import seconds, states_of

PARENT, CHILD, GRANDCHILD = FAMILY = ("amitest-fam", "amitest-fam-child", "amitest-fam-grandchild")
ORPHAN, BROKEN = "amitest-fam-orphan", "amitest-broken"
STEPS = "resolve|boot|provision|scrub|snapshot|release|validate|promote|prune"
# amitest-fam as conftest.py writes it, its pillar's mark changed
CHANGED_PARENT = {"extends": "amitest", "validate": False, "pillar": {"amitest": {"mark": "fam-parent-changed"}}}


def orch(salt_run, flavour, **ami):
    return salt_run.run("state.orch", "ami.build", pillar={"ami": {"flavour": flavour, **ami}})


def steps_of(states, flavour):
    """The step states of a flavour's build, by step."""
    found = {}
    for key, state in states.items():
        match = re.fullmatch(rf"ami-{re.escape(flavour)}-({STEPS})", key)
        if match:
            found[match.group(1)] = state
    return found


def span(states, flavour):
    """(start of the flavour's first step, end of its last one), in seconds of the day."""
    steps = steps_of(states, flavour)
    return min(seconds(s) for s in steps.values()), max(seconds(s, end=True) for s in steps.values())


def newest(clients, flavour):
    (image, *_older) = provenance.find_promoted(clients, flavour)
    return image


def status(salt_run, flavour, **kw):
    ret = salt_run.run("ami.status", flavour, **kw)
    assert ret.returncode == 0, ret
    return ret.data


def prune_family(clients):
    for name in reversed(FAMILY):
        provenance.prune(clients, name, keep=0, force=True)


@pytest.fixture(scope="module")
def first(salt_run, module_clients):
    """The orchestration asked for the grandchild alone, from nothing: its parents come in."""
    prune_family(module_clients)
    try:
        ret = orch(salt_run, GRANDCHILD)
        states = states_of(ret)
        failed = {k: v["comment"] for k, v in states.items() if v["result"] is False}
        assert ret.returncode == 0 and not failed, failed
        yield {"states": states, "images": {name: newest(module_clients, name) for name in FAMILY}}
    finally:
        prune_family(module_clients)


def test_a_child_alone_brings_in_its_parents_and_they_build_first(first):
    states = first["states"]
    # one orchestration for each, the child's requiring its parent's
    for name in FAMILY:
        assert states[f"ami-{name}"]["result"] is True, states[f"ami-{name}"]["comment"]
        assert set(steps_of(states, name)) >= {"resolve", "boot", "provision", "snapshot", "promote", "prune"}
    spans = [span(states, name) for name in FAMILY]
    # each starts once the one it builds from is done
    assert spans[0][1] <= spans[1][0] and spans[1][1] <= spans[2][0], spans


def test_the_child_is_built_from_its_parents_image_with_its_own_sls(first):
    parent, child, grandchild = (first["images"][name] for name in FAMILY)
    assert child["ami_base_id"] == parent["id"] and grandchild["ami_base_id"] == child["id"]
    assert child["ami_parent_fingerprint"] == parent["ami_fingerprint"]
    assert grandchild["ami_parent_fingerprint"] == child["ami_fingerprint"]
    assert parent["ami_sls"] == "amitest" and "ami_parent_fingerprint" not in parent
    assert child["ami_sls"] == "amitest.extra" and grandchild["ami_sls"] == "amitestfamily"


def test_the_grandchilds_image_holds_what_each_generation_applied(first, module_clients, tmp_path):
    image = first["images"][GRANDCHILD]
    path = tmp_path / f"grandchild.{image['disk_format']}"
    glance.download(module_clients, image["id"], str(path))
    with mounted_image(path, tmp_path) as root:
        etc = root / "etc" / "ami-test"
        # amitest, applied to the parent only: its mark is the parent's, not the child's
        assert (etc / "flavour").read_text().strip() == "fam-parent"
        assert (etc / "extra").read_text().strip() == "fam-child-extra"
        # the grandchild's pillar is its parent's, merged as ever
        assert (etc / "grandchild").read_text().strip() == "fam-child"


def test_a_second_run_has_nothing_to_do(first, salt_run, module_clients):
    started = time.monotonic()
    ret = orch(salt_run, GRANDCHILD)
    states = states_of(ret)
    assert ret.returncode == 0
    for name in FAMILY:
        steps = steps_of(states, name)
        assert steps["resolve"]["changes"] == {} and "nothing to do" in steps["resolve"]["comment"], steps
        assert all(s["changes"] == {} for s in steps.values())
    assert {name: newest(module_clients, name)["id"] for name in FAMILY} == \
        {name: image["id"] for name, image in first["images"].items()}
    assert time.monotonic() - started < 180


def test_status_shows_the_tree(first, salt_run):
    tree = status(salt_run, PARENT)
    assert tree["up_to_date"] is True and tree["parent"] is None and list(tree["children"]) == [CHILD]
    child = tree["children"][CHILD]
    assert child["up_to_date"] is True and child["parent"] == PARENT and child["why"] == []
    assert child["image"]["id"] == first["images"][CHILD]["id"]
    assert child["base"]["id"] == first["images"][PARENT]["id"]
    assert child["children"][GRANDCHILD]["up_to_date"] is True
    one = status(salt_run, GRANDCHILD)
    assert one["up_to_date"] is True and one["parent"] == CHILD and one["children"] == {}
    # every flavour: the trees of flavours built from no other's image
    trees = salt_run.run("ami.status").data
    assert CHILD not in trees and trees[PARENT]["children"][CHILD]["children"][GRANDCHILD]["up_to_date"] is True


def test_a_changed_parent_makes_its_children_out_of_date_naming_it(first, salt_run):
    tree = status(salt_run, PARENT, definition=CHANGED_PARENT)
    assert tree["up_to_date"] is False and tree["why"] == ["pillar_hash changed"]
    child = tree["children"][CHILD]
    assert child["up_to_date"] is False
    assert child["why"] == [f"parent {PARENT} is out of date: pillar_hash changed"]
    grandchild = child["children"][GRANDCHILD]
    assert grandchild["up_to_date"] is False
    assert grandchild["why"] == [f"parent {CHILD} is out of date: parent {PARENT} is out of date: pillar_hash changed"]


def test_a_new_parent_image_makes_its_child_out_of_date_and_the_runner_builds_on_it(first, salt_run,
                                                                                   module_clients):
    """A new image of the parent (built from an inline definition: another fingerprint) is its
    newest promoted image, the one its children build from: the child is out of date, naming
    the parent's image. salt-run ami.build of the child goes through the parent first (up to
    date: an image of its pillar definition is still promoted), then builds the child on the
    parent's newest image."""
    # an inline flavour's pillar must be the one of the master's pillar (build_pillar.prepare)
    changed = {"extends": "amitest", "validate": False, "pillar": {"amitest": {"mark": "fam-parent"}},
               "properties": {"family_test": "changed"}}
    ret = salt_run.run("ami.build", flavour=PARENT, definition=changed)
    assert ret.returncode == 0, ret
    inline = newest(module_clients, PARENT)
    old = first["images"][PARENT]["ami_fingerprint"]
    assert inline["ami_fingerprint"] != old
    child = status(salt_run, CHILD)
    assert child["up_to_date"] is False and child["base"]["id"] == inline["id"]
    assert child["why"] == [
        f"parent {PARENT}'s image changed: fingerprint {old[:12]} -> {inline['ami_fingerprint'][:12]}"]
    ret = salt_run.run("ami.build", flavour=[CHILD])
    assert ret.returncode == 0, ret
    assert list(ret.data) == [PARENT, CHILD]
    assert ret.data[PARENT]["nothing_to_do"] and ret.data[CHILD]["image"]
    child = newest(module_clients, CHILD)
    assert child["id"] == ret.data[CHILD]["image"]["id"] != first["images"][CHILD]["id"]
    assert child["ami_base_id"] == inline["id"] and child["ami_parent_fingerprint"] == inline["ami_fingerprint"]
    assert status(salt_run, CHILD)["up_to_date"] is True
    # the grandchild is behind its parent's new image now
    grandchild = status(salt_run, GRANDCHILD)
    assert grandchild["up_to_date"] is False
    assert grandchild["why"] == [f"parent {CHILD}'s image changed: fingerprint "
                                 f"{first['images'][CHILD]['ami_fingerprint'][:12]} -> {child['ami_fingerprint'][:12]}"]


def test_a_child_whose_parent_has_no_image_fails_at_resolve_naming_it(salt_run, module_clients, salt_key):
    before = cloud_inventory(module_clients, salt_key, ORPHAN)
    ret = orch(salt_run, ORPHAN, with_parents=False)
    assert ret.returncode != 0
    resolve = states_of(ret)[f"ami-{ORPHAN}-resolve"]
    assert resolve["result"] is False
    assert (f"flavour {ORPHAN} builds from its parent {BROKEN}'s image (from_parent), and {BROKEN} has no "
            f"promoted image: build {BROKEN} first") in resolve["comment"]
    assert cloud_inventory(module_clients, salt_key, ORPHAN) == before


def test_a_failed_parent_stops_its_children(salt_run, module_clients, salt_key):
    before = cloud_inventory(module_clients, salt_key, ORPHAN)
    ret = orch(salt_run, ORPHAN)
    assert ret.returncode != 0
    states = states_of(ret)
    assert states[f"ami-{BROKEN}"]["result"] is False
    assert "step provision failed" in states[f"ami-{BROKEN}-provision"]["comment"]
    orphan = states[f"ami-{ORPHAN}"]
    assert orphan["result"] is False and orphan["comment"] == f"One or more requisite failed: ami.build.ami-{BROKEN}"
    assert steps_of(states, ORPHAN) == {}
    assert cloud_inventory(module_clients, salt_key, ORPHAN) == before
    assert provenance.find_promoted(module_clients, BROKEN) == []
