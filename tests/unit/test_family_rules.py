"""Image families (``from_parent``): the schema's rules, the order flavours build in, the
fingerprint that holds the parent image's, the status tree, the runner's builds in family
order, ami.plan and the orchestration's layout (salt/formulas/ami/build.sls rendered with
Jinja). Glance and the master are stubbed: what a real master and cloud do is
tests/integration/test_families.py."""
import importlib.util
import json
from pathlib import Path

import jinja2
import pytest
import yaml

from saltami import builds, families, flavour, provenance
from saltami.cloud import glance
from saltami.errors import AmiError, InvalidArgument, NotFound
from saltami.pipeline import resolve
from saltami.pipeline.context import Context

REPO = Path(__file__).resolve().parents[2]
ROOT = {"base": "debian-12", "sls": ["postgres"], "flavor": "m1.small", "pillar": {"mark": "root"}}


def family(**more):
    """root <- child <- grandchild, root <- sibling built from root's image; plain extends root
    the usual way (from root's base)."""
    return {"defaults": {"sls": ["common"]}, "flavours": {
        "root": ROOT,
        "child": {"extends": "root", "from_parent": True, "sls": ["extra"], "pillar": {"mark": "child"}},
        "grandchild": {"extends": "child", "from_parent": True, "sls": ["more"]},
        "sibling": {"extends": "root", "from_parent": True, "sls": ["other"]},
        "plain": {"extends": "root", "sls": ["extra"]},
        **more}}


def problems(ami, name):
    with pytest.raises(InvalidArgument) as e:
        flavour.resolve(ami, name)
    return str(e.value).splitlines()


# ------------------------------------------------------------------------------ the schema
def test_from_parent_without_extends_is_an_error_naming_the_key():
    lines = problems({"flavours": {"f": {**ROOT, "from_parent": True}}}, "f")
    assert lines == ["flavour 'f': key 'from_parent': builds from the image of the flavour this one "
                     "extends, and it extends none (allowed: from_parent: true with extends: PARENT)"]


def test_from_parent_must_be_a_boolean():
    (line,) = problems(family(c={"extends": "root", "from_parent": "yes", "sls": ["x"]}), "c")
    assert line.startswith("flavour 'c': key 'from_parent': must be a boolean")


def test_from_parent_applies_the_flavours_own_sls_only():
    ami = family()
    child, grandchild = flavour.resolve(ami, "child"), flavour.resolve(ami, "grandchild")
    assert child["from_parent"] is True and child["sls"] == ["extra"] and child["test"]["sls"] == ["extra"]
    assert grandchild["sls"] == ["more"]
    # its pillar is the merged one, as any child's
    assert flavour.resolve(ami, "sibling")["pillar"] == {"mark": "root"}
    # the usual extends appends, defaults first
    assert flavour.resolve(ami, "plain")["sls"] == ["common", "postgres", "extra"]
    assert flavour.resolve(ami, "plain")["from_parent"] is False


def test_from_parent_is_not_inherited():
    ami = family(g2={"extends": "child", "sls": ["more"]})
    g2 = flavour.resolve(ami, "g2")
    assert g2["from_parent"] is False and g2["sls"] == ["common", "postgres", "extra", "more"]
    assert flavour.image_parent(ami, "g2") is None


def test_from_parent_cannot_be_a_default():
    ami = family()
    ami["defaults"]["from_parent"] = True
    with pytest.raises(InvalidArgument, match=r"ami:defaults: key 'from_parent' cannot be a default"):
        flavour.resolve(ami, "root")


def test_from_parent_needs_sls_of_its_own():
    (line,) = problems(family(c={"extends": "root", "from_parent": True}), "c")
    assert line.startswith("flavour 'c': key 'sls': required, and not set")
    assert "with from_parent, the SLS this flavour applies on its parent's image" in line


def test_from_parent_names_no_base_and_is_not_local():
    (line,) = problems(family(c={"extends": "root", "from_parent": True, "sls": ["x"], "base": "other"}), "c")
    assert line.startswith("flavour 'c': key 'base': a flavour with from_parent builds from its parent's")
    local = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["x"]}
    lines = problems({"flavours": {"l": local, "c": {"extends": "l", "from_parent": True, "sls": ["y"]}}}, "c")
    assert lines == ["flavour 'c': key 'from_parent': builds from its parent's image in Glance, and "
                     "strategy 'local' bakes a local base (allowed: strategy snapshot or volume)"]


def test_pillar_example_documents_from_parent():
    text = (REPO / "pillar.example").read_text()
    assert "from_parent: false" in text and "from_parent" in flavour.FIELDS


# ------------------------------------------------------------------------------ order
def test_image_parent_and_children():
    ami = family()
    assert [flavour.image_parent(ami, n) for n in ("root", "child", "grandchild", "plain")] == \
        [None, "root", "child", None]
    assert flavour.image_children(ami, "root") == ["child", "sibling"]
    assert flavour.image_children(ami, "child") == ["grandchild"] and flavour.image_children(ami, "plain") == []


def test_build_order_puts_parents_first_and_brings_them_in():
    ami = family()
    assert flavour.build_order(ami, ["grandchild"]) == [("root", None), ("child", "root"), ("grandchild", "child")]
    # level by level: roots, then their children, then theirs
    assert flavour.build_order(ami, ["grandchild", "plain", "sibling"]) == [
        ("root", None), ("plain", None), ("child", "root"), ("sibling", "root"), ("grandchild", "child")]
    # every flavour (sorted by name): each parent comes in before the first of its children
    assert flavour.build_order(ami, flavour.names(ami)) == [
        ("root", None), ("plain", None), ("child", "root"), ("sibling", "root"), ("grandchild", "child")]
    assert flavour.build_order(ami, ["child", "root", "child"]) == [("root", None), ("child", "root")]


def test_build_order_without_parents_and_without_families():
    ami = family()
    assert flavour.build_order(ami, ["grandchild"], with_parents=False) == [("grandchild", None)]
    # its parent is not in the list: the list's order
    assert flavour.build_order(ami, ["grandchild", "root"], with_parents=False) == [
        ("grandchild", None), ("root", None)]
    assert flavour.build_order(ami, ["child", "root"], with_parents=False) == [("root", None), ("child", "root")]
    assert flavour.build_order(ami, ["plain", "root"]) == [("plain", None), ("root", None)]
    assert flavour.build_order(ami, ["no-such"]) == [("no-such", None)]


# ------------------------------------------------------------------------------ the fingerprint
class Master:
    def sls_exists(self, name):
        return True

    def render_files(self, entries):
        return {entry: f"hash-of-{entry}" for entry in entries}

    def salt_version(self):
        return "3007.15"


class Cloud:
    """Glance's promoted images by flavour (newest first) and the base image."""

    def __init__(self):
        self.promoted = {}
        self.n = 0

    def promote(self, name, parts, fingerprint):
        self.n += 1
        image = {"id": f"{name}-image-{self.n}", "name": f"{name}-{self.n}", "ami_fingerprint": fingerprint,
                 "ami_build": f"{name}-build-{self.n}", "os_hash_value": f"content-{self.n}",
                 **{f"ami_{part}": str(value) for part, value in parts.items()}}
        self.promoted.setdefault(name, []).insert(0, image)
        return image


@pytest.fixture
def cloud(monkeypatch, tmp_path):
    cloud = Cloud()
    skips = []

    def find_image(clients, ref, active_only=True, skip=None):
        skips.append(skip)
        return {"id": "base-1", "name": ref, "os_hash_value": "base-content"}

    def find_promoted(clients, name, fingerprint=None):
        return [i for i in clients.promoted.get(name, []) if fingerprint in (None, i["ami_fingerprint"])]

    monkeypatch.setattr(glance, "find_image", find_image)
    monkeypatch.setattr(provenance, "find_promoted", find_promoted)
    monkeypatch.setattr(builds, "context", lambda opts, ami, name, clients: Context(
        clients, Master(), flavour.resolve(ami, name), str(tmp_path)))
    cloud.skips = skips
    return cloud


def current(ami, name, cloud):
    return resolve.current(builds.context({}, ami, name, cloud))


def build(ami, name, cloud):
    """What a build of the flavour leaves: an image promoted with its provenance."""
    _base, parts, fingerprint, _render = current(ami, name, cloud)
    return cloud.promote(name, parts, fingerprint)


def test_the_childs_base_is_its_parents_image_and_its_fingerprint_holds_the_parents(cloud):
    ami = family()
    root = build(ami, "root", cloud)
    base, parts, fingerprint, _render = current(ami, "child", cloud)
    assert base["id"] == root["id"] and parts["base_id"] == root["id"]
    assert parts["base_hash"] == root["os_hash_value"] and parts["parent_fingerprint"] == root["ami_fingerprint"]
    assert fingerprint == flavour.fingerprint(parts)
    # a rebuilt parent (its pillar changed) makes a new fingerprint for the child
    changed = family(root={**ROOT, "pillar": {"mark": "changed"}})
    new_root = build(changed, "root", cloud)
    assert new_root["ami_fingerprint"] != root["ami_fingerprint"]
    _base, new_parts, new_fingerprint, _render = current(changed, "child", cloud)
    assert new_parts["parent_fingerprint"] == new_root["ami_fingerprint"] and new_fingerprint != fingerprint


def test_other_flavours_keep_their_parts_and_never_drift_to_a_built_image(cloud):
    ami = family()
    build(ami, "root", cloud)
    base, parts, _fingerprint, _render = current(ami, "plain", cloud)
    assert base["id"] == "base-1"
    assert sorted(parts) == ["base_hash", "base_id", "pillar_hash", "salt_version", "settings_hash", "sls_hash",
                             "version"]
    # found by a name: the images builds made are passed over
    assert cloud.skips[-1] is provenance.made_by_build


def test_a_child_whose_parent_has_no_image_fails_at_resolve_naming_the_parent(cloud):
    with pytest.raises(provenance.NoParentImage) as e:
        current(family(), "child", cloud)
    assert isinstance(e.value, NotFound)
    assert str(e.value) == ("flavour child builds from its parent root's image (from_parent), and root has no "
                            "promoted image: build root first")


# ------------------------------------------------------------------------------ status
def test_status_of_an_up_to_date_family(cloud):
    ami = family()
    for name in ("root", "child", "grandchild", "sibling"):
        build(ami, name, cloud)
    tree = families.status({}, ami, "root", cloud)
    assert tree["up_to_date"] is True and tree["why"] == [] and tree["parent"] is None
    assert sorted(tree["children"]) == ["child", "sibling"]
    child = tree["children"]["child"]
    assert child["up_to_date"] is True and child["parent"] == "root"
    assert child["base"]["id"] == cloud.promoted["root"][0]["id"]
    assert child["children"]["grandchild"]["up_to_date"] is True
    assert child["children"]["grandchild"]["children"] == {}
    # one flavour: its own status, its parent named, its children below
    one = families.status({}, ami, "child", cloud)
    assert one["up_to_date"] is True and one["parent"] == "root" and list(one["children"]) == ["grandchild"]


def test_a_changed_parent_makes_its_children_out_of_date_and_says_why(cloud):
    ami = family()
    for name in ("root", "child", "grandchild"):
        build(ami, name, cloud)
    changed = family(root={**ROOT, "pillar": {"mark": "changed"}})
    tree = families.status({}, changed, "root", cloud)
    child = tree["children"]["child"]
    grandchild = child["children"]["grandchild"]
    assert tree["why"] == ["pillar_hash changed"]
    assert child["up_to_date"] is False and child["why"] == ["parent root is out of date: pillar_hash changed"]
    # its own image is still the one its fingerprint names: only its parent is behind
    assert child["image"]["id"] == cloud.promoted["child"][0]["id"]
    assert grandchild["why"] == ["parent child is out of date: parent root is out of date: pillar_hash changed"]
    # the parent rebuilt: the children's base changed, said as the parent's image
    old = cloud.promoted["root"][0]["ami_fingerprint"]
    new = build(changed, "root", cloud)["ami_fingerprint"]
    child = builds.status({}, changed, "child", cloud)
    assert child["up_to_date"] is False
    assert child["why"] == [f"parent root's image changed: fingerprint {old[:12]} -> {new[:12]}"]
    grandchild = builds.status({}, changed, "grandchild", cloud)
    assert grandchild["why"] == [f"parent child is out of date: parent root's image changed: fingerprint "
                                 f"{old[:12]} -> {new[:12]}"]
    build(changed, "child", cloud)
    build(changed, "grandchild", cloud)
    assert families.status({}, changed, "grandchild", cloud)["up_to_date"] is True


def test_a_child_that_inherits_what_changed_says_both(cloud):
    ami = family()
    for name in ("root", "sibling"):
        build(ami, name, cloud)
    changed = family(root={**ROOT, "pillar": {"mark": "changed"}})
    # the sibling's merged pillar is the root's: its own pillar changed too
    assert builds.status({}, changed, "sibling", cloud)["why"] == [
        "pillar_hash changed", "parent root is out of date: pillar_hash changed"]


def test_status_of_a_child_whose_parent_has_no_image(cloud):
    out = builds.status({}, family(), "child", cloud)
    assert out["up_to_date"] is False and out["fingerprint"] is None and out["base"] is None
    assert out["why"] == ["its parent root has no promoted image: root builds first, then child from it"]


def test_statuses_are_trees_of_every_family(cloud):
    ami = family(bad={"extends": "nowhere", "sls": ["x"]})
    build(ami, "root", cloud)
    trees = families.statuses({}, ami, cloud)
    assert sorted(trees) == ["bad", "plain", "root"]
    assert "no flavour 'nowhere'" in trees["bad"]["error"]
    assert trees["root"]["up_to_date"] is True and trees["plain"]["why"] == ["no image of flavour plain exists"]
    assert trees["root"]["children"]["child"]["why"][0].startswith("no image of flavour child")
    assert trees["root"]["children"]["child"]["children"]["grandchild"]["why"] == [
        "its parent child has no promoted image: child builds first, then grandchild from it"]


# ------------------------------------------------------------------------------ the runner's builds
@pytest.fixture
def built(monkeypatch):
    """builds.build recorded; the flavours in ``fail`` fail."""
    calls, fail = [], set()

    def fake_build(opts, ami, name, clients, build_id=None):
        calls.append(name)
        if name in fail:
            raise AmiError(f"build of {name}: step provision failed")
        return {"flavour": name, "image": {"name": f"{name}-1"}}

    monkeypatch.setattr(builds, "build", fake_build)
    return calls, fail


def test_builds_in_family_order_and_a_failed_parent_stops_its_children(built):
    calls, fail = built
    results, failed = families.build_all({}, family(), ["grandchild", "plain"], None)
    assert calls == ["root", "plain", "child", "grandchild"] and failed == []
    calls.clear()
    fail.add("child")
    results, failed = families.build_all({}, family(), None, None)
    assert calls == ["root", "plain", "child", "sibling"]
    assert failed == ["child", "grandchild"]
    assert results["grandchild"] == {"error": "it builds from the image of child, whose build failed"}
    assert results["sibling"]["image"] == {"name": "sibling-1"}


def test_one_flavour_builds_after_its_parents(built):
    calls, fail = built
    summary = families.build({}, family(), "grandchild", None)
    assert calls == ["root", "child", "grandchild"]
    assert summary["flavour"] == "grandchild" and list(summary["parents"]) == ["root", "child"]
    assert "parents" not in families.build({}, family(), "plain", None)
    fail.add("root")
    with pytest.raises(AmiError, match=r"flavour grandchild not built: it builds from the image of root, whose "
                                       r"build failed: build of root: step provision failed"):
        families.build({}, family(), "grandchild", None)


# ------------------------------------------------------------------------------ the orchestration
def _load_module():
    spec = importlib.util.spec_from_file_location("saltami_tests_ami_module", REPO / "_modules" / "ami.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_gives_each_flavour_its_parent():
    ami_module = _load_module()
    plans = ami_module.plan(family(), flavour="grandchild")
    assert [(p["flavour"], p["parent"]) for p in plans] == [("root", None), ("child", "root"), ("grandchild", "child")]
    assert all(p["steps"][0] == "resolve" for p in plans)
    assert [(p["flavour"], p["parent"]) for p in ami_module.plan(family(), "grandchild", with_parents=False)] == \
        [("grandchild", None)]


def render_orchestration(ami, test=False):
    """salt/formulas/ami/build.sls rendered as Salt would, with ami.plan."""
    ami_module = _load_module()
    env = jinja2.Environment()
    env.filters["json"] = json.dumps
    template = env.from_string((REPO / "salt" / "formulas" / "ami" / "build.sls").read_text())
    return yaml.safe_load(template.render(pillar={"ami": ami}, opts={"test": test},
                                          salt={"ami.plan": ami_module.plan}))


def test_the_orchestration_requires_each_parents_and_passes_no_parents_down():
    states = render_orchestration({**family(), "flavour": ["grandchild", "plain"]})
    assert list(states) == ["ami-root", "ami-plain", "ami-child", "ami-grandchild"]

    def args(state):
        (body,) = state.values()
        return {k: v for item in body for k, v in item.items()}

    child = args(states["ami-child"])
    assert child["name"] == "state.orchestrate" and child["parallel"] is True
    assert child["require"] == [{"salt": "ami-root"}]
    assert child["pillar"] == {"ami": {"flavour": "child", "with_parents": False}}
    assert args(states["ami-grandchild"])["require"] == [{"salt": "ami-child"}]
    assert "require" not in args(states["ami-root"]) and "require" not in args(states["ami-plain"])


def test_the_orchestration_of_one_flavour_is_one_state_per_step():
    states = render_orchestration({**family(), "flavour": "child", "with_parents": False})
    assert "ami-child-resolve" in states and "ami-child-cleanup" in states and "ami-root-resolve" not in states
    # a dry run lays out every flavour's steps, parents included
    states = render_orchestration({**family(), "flavour": "child"}, test=True)
    assert "ami-root-resolve" in states and "ami-child-resolve" in states
