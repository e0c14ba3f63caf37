"""The build, end to end, through a real salt-master and the local cloud: `salt-run
state.orch ami.build`, `salt-run ami.build`, and what a failure leaves (nothing)."""
import json
import re
import time
from pathlib import Path

import pytest

from helpers import cloud_inventory, mounted_image
from saltami import audit, provenance
from saltami.cloud import glance

SCRUBBED = ["etc/salt/pki/minion/minion.pem", "etc/salt/minion_id", "etc/salt/minion.d/ami-builder.conf",
            "root/.bash_history", "var/cache/salt/minion"]


def orch(salt_run, flavour, **kw):
    return salt_run.run("state.orch", "ami.build", pillar={"ami": {"flavour": flavour}}, **kw)


def seconds(state, end=False):
    """A state's start (or end) as seconds of the day, from its start_time and duration."""
    h, m, sec = state["start_time"].split(":")
    start = int(h) * 3600 + int(m) * 60 + float(sec)
    return start + state["duration"] / 1000 if end else start


def states_of(ret):
    """The orchestration's states by id, with those of the orchestrations it ran (one for each
    flavour, when several build side by side)."""
    data = getattr(ret, "data", ret)
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    (states,) = data.values()
    found = {}
    for state in states.values():
        found[state["__id__"]] = state
        nested = (state.get("changes") or {}).get("return")
        if isinstance(nested, dict) and isinstance(nested.get("data"), dict):
            found.update(states_of(nested))
    return found


@pytest.fixture(scope="module")
def built(salt_run, module_clients, salt_master, event_listener):
    """One full orchestrated build of flavour amitest (from scratch: a cloud kept from an
    earlier session may hold one already)."""
    provenance.prune(module_clients, "amitest", keep=0, force=True)
    start = time.time()
    ret = orch(salt_run, "amitest")
    states = states_of(ret)
    failed = {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert ret.returncode == 0 and not failed, failed
    image = provenance.find_promoted(module_clients, "amitest")[0]
    # the bus may still be forwarding the last events when the orchestration returns
    deadline = time.monotonic() + 30
    while True:
        events = event_listener.get_events([(salt_master.id, "salt/ami/amitest/*")], after_time=start)
        if any(e.tag.endswith("/prune") and e.data.get("status") == "done" for e in events) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {"states": states, "image": image, "events": events, "build": image["ami_build"], "start": start,
            "manifest": Path(salt_master.config["cachedir"]) / "ami" / "builds" / f"{image['ami_build']}.json"}


@pytest.fixture(scope="module")
def build_secrets(flavours, cloud_profile, salt_master):
    """What must appear in no image, log, event or property: the flavours' pillar secrets,
    the cloud's password, and the master's public key."""
    secrets = audit.build_secrets(flavours, profile=cloud_profile)
    master_pub = (Path(salt_master.config["pki_dir"]) / "master.pub").read_text().splitlines()
    secrets["the master's public key"] = master_pub[1]  # its first line of base64
    assert len(secrets) >= 3, secrets
    return secrets


def assert_audit_clean(clients, image, secrets, tmp_path):
    """Download the image and audit it with the build's secrets: nothing found."""
    path = tmp_path / f"{image['id']}.{image['disk_format']}"
    glance.download(clients, image["id"], str(path))
    try:
        report = audit.audit(str(path), secrets, workdir=tmp_path)
        assert report["findings"] == [], report
    finally:
        path.unlink()


def test_progress_on_the_event_bus(built):
    seen = {(e.tag.rsplit("/", 1)[-1], e.data["status"]) for e in built["events"]
            if e.data.get("build") == built["build"]}
    for step in ("resolve", "boot", "provision", "scrub", "snapshot", "validate", "promote"):
        assert (step, "started") in seen and (step, "done") in seen, step


def test_minions_were_admitted_with_tokens_that_are_gone(built, salt_master, salt_key):
    """The builder and the validator made their own keys and were accepted with a one-time
    token each, which the build revoked: none is left for anyone to use, nor their keys."""
    grains = Path(salt_master.config["autosign_grains_dir"]) / "ami_autosign"
    assert [line for line in grains.read_text().splitlines() if not line.startswith("#")] == []
    keys = json.loads(salt_key.run("--list-all", "--out=json").stdout)
    assert not [k for ks in keys.values() for k in ks if built["build"] in k]
    manifest = json.loads(built["manifest"].read_text())
    assert not manifest["resources"].get("builder_admission") and not manifest["resources"].get("validator_admission")


def test_manifest_records_steps_with_durations(built):
    manifest = json.loads(built["manifest"].read_text())
    assert manifest["status"] == "done" and manifest["outputs"]["image"]["id"] == built["image"]["id"]
    assert [s["name"] for s in manifest["steps"]] == ["resolve", "boot", "provision", "scrub", "snapshot",
                                                      "release", "validate", "promote", "prune"]
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in manifest["steps"])
    assert manifest["fingerprint"] == built["image"]["ami_fingerprint"]
    assert not any(manifest["resources"].values())


def test_orchestration_shows_every_step(built):
    names = [k for k in built["states"] if k.startswith("ami-amitest-")]
    for step in ("resolve", "boot", "provision", "scrub", "snapshot", "release", "validate", "promote", "prune"):
        assert f"ami-amitest-{step}" in names
    assert built["states"]["ami-amitest-cleanup"]["result"] is True  # skipped: nothing failed


def test_image_has_the_flavour_and_none_of_what_scrub_removes(built, module_clients, build_secrets, tmp_path):
    image = built["image"]
    assert image["name"].startswith("amitest-") and image["ami_status"] == "promoted"
    assert image["os_distro"] == "debian" and image["ami_sls"] == "amitest"
    path = tmp_path / f"image.{image['disk_format']}"
    glance.download(module_clients, image["id"], str(path))
    with mounted_image(path, tmp_path) as root:
        assert (root / "etc/ami-test/flavour").read_text().strip() == "baked-by-test"
        # the builder compiled no pillar from the master's top file, which gives minions the flavours
        assert (root / "etc/ami-test/top-pillar").read_text().strip() == "0"
        assert "amitest:" in (root / "etc/passwd").read_text()
        for gone in SCRUBBED:
            assert not (root / gone).exists(), gone
        assert (root / "etc/machine-id").read_text() == ""
        logs = [p for p in (root / "var/log").rglob("*") if p.is_file() and p.stat().st_size]
        assert logs == []
    assert audit.audit(str(path), build_secrets, workdir=tmp_path)["findings"] == []


def test_no_secret_in_logs_events_manifest_or_properties(built, build_secrets, salt_master, event_listener):
    events = event_listener.get_events([(salt_master.id, "*")], after_time=built["start"])
    assert len(events) > len(built["events"])  # every event of the bus, not only the build's own
    places = {
        "master log": Path(salt_master.config["log_file"]).read_text(errors="replace"),
        "events": "\n".join(json.dumps([e.tag, e.data], default=str) for e in events),
        "manifest": built["manifest"].read_text(),
        "image properties": json.dumps(built["image"]),
    }
    assert places["master log"] and built["build"] in places["master log"]
    leaks = [(place, label) for place, text in places.items() for label, secret in build_secrets.items()
             if secret in text]
    assert leaks == []


def test_second_run_creates_nothing(salt_run, built, module_clients, salt_key):
    before = cloud_inventory(module_clients, salt_key, "amitest")
    ret = orch(salt_run, "amitest")
    states = states_of(ret)
    assert ret.returncode == 0
    # resolve found the image and changed nothing; no other step ran
    assert "already has fingerprint" in states["ami-amitest-resolve"]["comment"]
    assert states["ami-amitest-resolve"]["changes"] == {}
    assert all("not run" in state["comment"] for sid, state in states.items() if sid != "ami-amitest-resolve")
    assert cloud_inventory(module_clients, salt_key, "amitest") == before


def test_present_with_test_true_creates_nothing_and_says_why(salt_master, salt_run, built, module_clients,
                                                             salt_key):
    before = cloud_inventory(module_clients, salt_key, "amitest-changed")
    sls = ("amitest-changed:\n  ami.present:\n    - extends: amitest\n"
           "    - pillar: {amitest: {mark: changed}}\n")
    with salt_master.state_tree.base.temp_file("amitestpresent.sls", sls):
        ret = salt_run.run("state.orch", "amitestpresent", test=True)
    (state,) = states_of(ret).values()
    assert state["result"] is None and "would be built: no image of flavour amitest-changed exists" in \
        state["comment"]
    assert cloud_inventory(module_clients, salt_key, "amitest-changed") == before


def test_dry_run_says_per_flavour_what_it_would_do_and_makes_nothing(salt_master, salt_run, built, module_clients,
                                                                    salt_key, base_image):
    """``salt-run state.orch ami.build test=True`` over an up-to-date flavour and one never
    built, then ``salt-run ami.build ... test=True`` and a bad flavour's dry run: what each
    would do, and nothing created, claimed or written."""
    manifests = Path(salt_master.config["cachedir"]) / "ami" / "builds"
    written = set(manifests.glob("*"))
    before = {f: cloud_inventory(module_clients, salt_key, f) for f in ("amitest", "amitest-p3", "amitest-p4")}
    ret = orch(salt_run, ["amitest", "amitest-p3"], test=True)
    states = states_of(ret)
    assert ret.returncode == 0, states
    up = states["ami-amitest-resolve"]
    assert up["result"] is True and up["changes"] == {}, up
    assert up["comment"] == (f"image {built['image']['name']} ({built['image']['id']}) has fingerprint "
                             f"{built['image']['ami_fingerprint']}: nothing to build")
    would = states["ami-amitest-p3-resolve"]
    assert would["result"] is None
    assert would["comment"] == "flavour amitest-p3 would be built: no image of flavour amitest-p3 exists"
    create = would["changes"]["would_create"]
    assert [(s["role"], s["flavor"]) for s in create["servers"]] == [("builder", "localcloud.small"),
                                                                    ("validator", "localcloud.small")]
    assert all(s["name"].startswith(f"ami-{s['role']}-amitest-p3-") for s in create["servers"])
    (image,) = create["images"]
    assert image["name"].startswith("ami-candidate-amitest-p3-")
    assert re.fullmatch(r"amitest-p3-\d{8}-\d{6}", image["then"]), image
    assert would["changes"]["fingerprint"] and "would_prune" not in would["changes"]  # nothing to prune yet
    # the other steps would run after resolve; none of the up-to-date flavour's
    assert states["ami-amitest-p3-boot"]["result"] is None and "would run" in states["ami-amitest-p3-boot"]["comment"]
    assert states["ami-amitest-boot"]["result"] is True and states["ami-amitest-boot"]["changes"] == {}

    ret = salt_run.run("ami.build", flavour="amitest-p4", test=True)
    assert ret.returncode == 0, ret.stderr
    plan = ret.data["amitest-p4"]
    assert plan["would_build"] is True and plan["steps"][0] == "resolve" and plan["steps"][-1] == "prune"
    assert plan["base"]["id"] == base_image["id"]

    ret = salt_run.run("ami.build", flavour="amitest-nobase", test=True)
    assert ret.returncode != 0 and "no-such-base-image" in ret.stdout + ret.stderr

    assert set(manifests.glob("*")) == written
    assert {f: cloud_inventory(module_clients, salt_key, f) for f in before} == before


def test_failing_sls_leaves_nothing_behind(salt_run, module_clients, salt_key):
    before = cloud_inventory(module_clients, salt_key, "amitest-broken")
    ret = orch(salt_run, "amitest-broken")
    states = states_of(ret)
    assert ret.returncode != 0
    failed = states["ami-amitest-broken-provision"]
    assert failed["result"] is False
    # the step's state says the step and the reason
    reason = failed["comment"]
    assert "step provision failed" in reason and "amitest-broken-step" in reason
    assert states["ami-amitest-broken-cleanup"]["result"] is True
    assert cloud_inventory(module_clients, salt_key, "amitest-broken") == before


def test_validation_failure_promotes_nothing(salt_run, module_clients, salt_key):
    before = cloud_inventory(module_clients, salt_key, "amitest-badtest")
    ret = salt_run.run("ami.build", flavour="amitest-badtest")
    assert ret.returncode != 0
    assert "step validate failed" in ret.stdout + ret.stderr
    assert provenance.find_promoted(module_clients, "amitest-badtest") == []
    assert cloud_inventory(module_clients, salt_key, "amitest-badtest") == before


def test_extends_flavour_builds_with_the_parent_sls(salt_run, module_clients, build_secrets, tmp_path):
    provenance.prune(module_clients, "amitest-extra", keep=0, force=True)
    t0 = time.time()
    ret = salt_run.run("ami.build", flavour="amitest-extra")
    assert ret.returncode == 0, ret
    image = provenance.find_promoted(module_clients, "amitest-extra")[0]
    assert image["ami_sls"] == "amitest,amitest.extra" and "extra" in image["tags"]
    path = tmp_path / f"extra.{image['disk_format']}"
    glance.download(module_clients, image["id"], str(path))
    with mounted_image(path, tmp_path) as root:
        assert (root / "etc/ami-test/flavour").exists() and (root / "etc/ami-test/extra").exists()
    assert audit.audit(str(path), build_secrets, workdir=tmp_path)["findings"] == []
    assert time.time() - t0 < 900


def test_two_flavours_in_parallel_then_pruned_and_absent(salt_master, salt_run, module_clients, salt_key,
                                                        build_secrets, tmp_path):
    for f in ("amitest-p1", "amitest-p2"):
        provenance.prune(module_clients, f, keep=0, force=True)
    before = {f: cloud_inventory(module_clients, salt_key, f) for f in ("amitest-p1", "amitest-p2")}
    ret = salt_run.run("state.orch", "ami.build", pillar={"ami": {"flavour": ["amitest-p1", "amitest-p2"]}})
    states = states_of(ret)
    assert ret.returncode == 0, {k: v["comment"] for k, v in states.items() if not v["result"]}
    # the two builds overlapped: each one's boot started before the other's provision ended
    spans = {f: (seconds(states[f"ami-{f}-boot"]), seconds(states[f"ami-{f}-provision"], end=True))
             for f in ("amitest-p1", "amitest-p2")}
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, spans
    images = {f: provenance.find_promoted(module_clients, f) for f in ("amitest-p1", "amitest-p2")}
    assert all(len(v) == 1 for v in images.values())
    for (image,) in images.values():
        assert_audit_clean(module_clients, image, build_secrets, tmp_path)
    sls = "p1-pruned:\n  ami.pruned:\n    - name: amitest-p1\n    - keep: 1\n" \
          "p2-absent:\n  ami.absent:\n    - name: amitest-p2\n"
    with salt_master.state_tree.base.temp_file("amitestremove.sls", sls):
        ret = salt_run.run("state.orch", "amitestremove")
    states = states_of(ret)
    assert states["p1-pruned"]["result"] is True and states["p1-pruned"]["changes"] == {}
    assert states["p2-absent"]["result"] is True
    assert states["p2-absent"]["changes"] == {"deleted": [images["amitest-p2"][0]["id"]]}
    assert provenance.find_promoted(module_clients, "amitest-p2") == []
    for f in ("amitest-p1", "amitest-p2"):
        after = cloud_inventory(module_clients, salt_key, f)
        assert after["servers"] == before[f]["servers"] and after["volumes"] == before[f]["volumes"]
        assert after["keys"] == before[f]["keys"]


@pytest.mark.parametrize("flavour,message", [
    ("amitest-nosls", "nosuchsls.here"),
    ("amitest-nobase", "no-such-base-image"),
    ("amitest-typo", "flavr"),
    ("no-such-flavour", "no-such-flavour"),
])
def test_bad_flavours_fail_before_anything_is_created(salt_run, module_clients, salt_key, flavour, message):
    before = cloud_inventory(module_clients, salt_key, flavour)
    ret = orch(salt_run, flavour)
    assert ret.returncode != 0
    assert message in ret.stdout + ret.stderr
    assert cloud_inventory(module_clients, salt_key, flavour) == before
