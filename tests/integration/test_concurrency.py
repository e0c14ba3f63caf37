"""One build of a flavour at a time, and builds whose process was killed, through a real
salt-master and the local cloud: two builds of a flavour started at once give one image; a
build killed mid-way is cleaned up by ``salt-run ami.cleanup`` or by the next build."""
import json
import os
import signal
import subprocess
import time

from helpers import NOTHING, RUN_FLAVOUR, cloud_inventory
from saltami import pipeline, provenance
from saltami.cloud import glance
from saltami.cloud.wait import wait_for
from saltami.pipeline import claims


def manifests(builds_dir):
    """The manifests of this run's flavour's builds, by build id."""
    found = {}
    for path in builds_dir.glob(f"{RUN_FLAVOUR}-*.json"):
        if not path.name.endswith(".packages.json"):
            data = json.loads(path.read_text())
            found[data["id"]] = data
    return found


def running_step(manifest):
    steps = manifest["steps"]
    return steps[-1]["name"] if steps and steps[-1]["status"] == "running" else None


def start(salt_run, *args, **kwargs):
    """``salt-run`` in a process group of its own: killing the group kills the build."""
    return subprocess.Popen(salt_run.cmdline(*args, **kwargs), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def killed_at(proc, builds_dir, known, when, timeout=300):
    """Once the build ``proc`` runs (a manifest not in ``known``) satisfies ``when``, kill -9
    its process group; the build's manifest as it was then."""
    deadline = time.monotonic() + timeout
    # polled often: some steps take a second
    while (manifest := next((m for i, m in manifests(builds_dir).items() if i not in known and when(m)),
                            None)) is None:
        assert proc.poll() is None, f"the build ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "the build did not reach where it is killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return manifest


def test_killed_build_is_cleaned_up_by_cleanup_without_a_build_id(salt_run, module_clients, salt_key, builds_dir):
    proc = start(salt_run, "state.orch", "ami.build", pillar={"ami": {"flavour": RUN_FLAVOUR}})
    # killed while its builder applies the SLS: the builder's server exists, and its minion's key,
    # which the minion makes itself at its first start (so not yet during the boot step)
    killed = killed_at(proc, builds_dir, set(manifests(builds_dir)), lambda m: running_step(m) == "provision")
    made = cloud_inventory(module_clients, salt_key, killed["id"])
    assert made["servers"] and made["keys"], made
    # the orchestration recorded who drives the build, and each step who runs it
    assert killed["orchestrator"]["pid"] and killed["steps"][-1]["process"]["pid"]

    ret = salt_run.run("ami.cleanup")
    assert ret.returncode == 0, ret
    report = {c["build"]: c for c in ret.data["cleaned"]}[killed["id"]]
    assert report["status"] == "cleaned" and report["problems"] == [] and report["left"] == {}
    assert cloud_inventory(module_clients, salt_key, killed["id"]) == NOTHING
    assert provenance.find_promoted(module_clients, RUN_FLAVOUR) == []
    assert manifests(builds_dir)[killed["id"]]["status"] == "cleaned"
    assert not (builds_dir / f"{RUN_FLAVOUR}.claim").exists()
    # nothing else is abandoned now: a second cleanup finds nothing of ours
    again = salt_run.run("ami.cleanup")
    assert killed["id"] not in {c["build"] for c in again.data["cleaned"]}


def test_two_builds_at_once_give_one_image_after_cleaning_up_a_killed_one(salt_run, module_clients, salt_key,
                                                                          builds_dir):
    known = set(manifests(builds_dir))
    # a build killed while nova snapshots its builder: server, minion key and candidate image exist
    killed = killed_at(start(salt_run, "ami.build", flavour=RUN_FLAVOUR), builds_dir, known,
                       lambda m: running_step(m) == "snapshot" and m["resources"].get("image"))
    made = cloud_inventory(module_clients, salt_key, killed["id"])
    assert made["servers"] and made["keys"] and made["images"], made
    known.add(killed["id"])
    try:
        t0 = time.monotonic()
        orchestrated = start(salt_run, "state.orch", "ami.build", pillar={"ami": {"flavour": RUN_FLAVOUR}})
        scripted = start(salt_run, "ami.build", flavour=RUN_FLAVOUR)

        # while one of them builds, a third that may wait 3 s for it fails and names it
        claim = builds_dir / f"{RUN_FLAVOUR}.claim"
        holder = wait_for(lambda: claim.exists() and json.loads(claim.read_text())["build"],
                          lambda b: b and b != killed["id"], "one of the two builds to hold the flavour", 300)
        third = salt_run.run("ami.build", flavour=RUN_FLAVOUR,
                             definition={"extends": "amitest", "timeouts": {"claim": 3}})
        assert third.returncode != 0
        assert f"build {holder} of flavour {RUN_FLAVOUR} is still running" in third.stdout + third.stderr
        assert "(timeouts.claim)" in third.stdout + third.stderr

        outs = [p.communicate(timeout=900) for p in (orchestrated, scripted)]
        seconds = time.monotonic() - t0
        assert orchestrated.returncode == 0 and scripted.returncode == 0, outs
        print(f"two builds at once, after a killed one: {seconds:.0f} s")

        # exactly one new image; the build that waited found it and made nothing
        (image,) = provenance.find_promoted(module_clients, RUN_FLAVOUR)
        ours = {i: m for i, m in manifests(builds_dir).items() if i not in known}
        third_id = next(i for i, m in ours.items() if m["status"] == "cleaned")
        pair = {i: m for i, m in ours.items() if i != third_id}
        assert len(pair) == 2 and all(m["status"] == "done" for m in pair.values()), pair
        (waited,) = [m for m in pair.values() if m.get("nothing_to_do")]
        (builder,) = [m for m in pair.values() if not m.get("nothing_to_do")]
        assert image["ami_build"] == builder["id"] and image["id"] in waited["nothing_to_do"]
        assert waited["waited_for"] in (builder["id"], killed["id"])
        assert [s["name"] for s in waited["steps"]] == ["resolve"]
        # each run says what it did: the scripted one's summary, the orchestration's resolve state
        summary = json.loads(outs[1][0])
        assert summary["image"]["id"] == image["id"] and summary["status"] == "done"
        assert bool(summary["nothing_to_do"]) == (summary["build"] == waited["id"])
        assert ("already has fingerprint" in outs[0][0]) == (summary["build"] != waited["id"])

        # the killed build is gone, as is anything the third made; nothing holds the flavour
        assert cloud_inventory(module_clients, salt_key, killed["id"]) == NOTHING
        assert cloud_inventory(module_clients, salt_key, third_id) == NOTHING
        assert glance.find_images(module_clients, properties={"ami_build": killed["id"]}, active_only=False) == []
        assert manifests(builds_dir)[killed["id"]]["status"] == "cleaned"
        assert not claim.exists()
        assert [i for i, m in manifests(builds_dir).items() if m["status"] in ("running", "failed")] == []
        builder_servers = cloud_inventory(module_clients, salt_key, RUN_FLAVOUR)
        assert builder_servers["servers"] == [] and builder_servers["keys"] == []
    finally:
        provenance.prune(module_clients, RUN_FLAVOUR, keep=0, force=True)


# ------------------------------------------------------------------------------ liveness, pure
def dead_process():
    child = subprocess.Popen(["true"])
    child.wait()
    return dict(claims.this_process(), pid=child.pid)


def test_a_process_is_known_by_pid_start_time_and_boot():
    me = claims.this_process()
    assert claims.alive(me) is True
    assert claims.alive(dead_process()) is False
    assert claims.alive(dict(me, start=me["start"] - 1)) is False          # the pid, reused
    assert claims.alive(dict(me, boot="another-boot")) is False
    assert claims.alive(dict(me, host="elsewhere")) is None and claims.alive(None) is None


def manifest(tmp_path, steps, idle=0, **data):
    """Build f-1's manifest, last changed ``idle`` seconds ago."""
    build = pipeline.Build(tmp_path / "f-1.json", {"id": "f-1", "flavour": "f", "status": "running",
                                                   "created": time.time(), "steps": steps, "resources": {},
                                                   "outputs": {}, **data})
    build.save()
    build.data["updated"] -= idle
    return build


def test_when_a_build_is_abandoned(tmp_path):
    me, dead = claims.this_process(), dead_process()
    done = [{"name": "resolve", "status": "done"}]
    # a step runs: its process decides, whoever drives the build
    assert claims.abandoned(manifest(tmp_path, done + [{"name": "boot", "status": "running", "process": dead}],
                                     orchestrator=me))
    assert not claims.abandoned(manifest(tmp_path, [{"name": "boot", "status": "running", "process": me}]))
    # between two steps: the orchestration decides, for as long as it takes
    assert not claims.abandoned(manifest(tmp_path, done, idle=claims.GRACE + 1, orchestrator=me), claimed_by="f-2")
    assert claims.abandoned(manifest(tmp_path, done, orchestrator=dead), claimed_by="f-1")
    assert claims.abandoned(manifest(tmp_path, done, status="failed", orchestrator=dead), claimed_by="f-1")
    # steps called by hand: a grace period, or the claim lost
    assert not claims.abandoned(manifest(tmp_path, done), claimed_by="f-1")
    assert claims.abandoned(manifest(tmp_path, done), claimed_by="f-2")
    assert claims.abandoned(manifest(tmp_path, done, idle=claims.GRACE + 1), claimed_by="f-1")
    # finished, or being cleaned up by a live process: not abandoned
    assert not claims.abandoned(manifest(tmp_path, done, status="cleaned", orchestrator=dead))
    assert not claims.abandoned(manifest(tmp_path, done, orchestrator=dead, reaper=me))
