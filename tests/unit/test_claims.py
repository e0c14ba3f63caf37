"""saltami.pipeline.claims: one build at a time per flavour, and which builds are abandoned;
with manifests in a temporary directory and processes that are this one, a child that has
exited, or records of another boot, host or start time. The builds that race for real
claims through the master are in tests/integration/test_concurrency.py."""
import subprocess
import threading
import time

import pytest

from saltami import pipeline
from saltami.errors import Timeout
from saltami.pipeline import claims


@pytest.fixture
def me():
    return claims.this_process()


@pytest.fixture
def dead(me):
    """The record of a process of this host and boot that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return {**me, "pid": child.pid}


def new_build(ctx, flavour="f", running=None, orchestrator=None, status="running"):
    """A build of the snapshot plan: ``running`` the process of its running resolve step (None
    for no step), ``orchestrator`` the process that drives it."""
    build = pipeline.Build.create(ctx.builds_dir, flavour, pipeline.steps_for("snapshot"))
    if running is not None:
        build.data["steps"].append({"name": "resolve", "status": "running", "process": running})
    if orchestrator is not None:
        build.data["orchestrator"] = orchestrator
    build.data["status"] = status
    build.save()
    return build


# ------------------------------------------------------------------------------ processes
def test_a_process_is_told_by_host_boot_pid_and_start(me, dead):
    assert claims.alive(me) is True
    assert claims.alive(dead) is False
    assert claims.alive({**me, "start": me["start"] + 1}) is False  # the pid, reused
    assert claims.alive({**me, "boot": "another-boot"}) is False
    assert claims.alive({**me, "host": "another-host"}) is None
    assert claims.alive(None) is None


def test_a_zombie_is_not_alive(me):
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while claims._stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert claims.alive({**me, "pid": child.pid, "start": claims._stat(child.pid)[1]}) is False
    finally:
        child.wait()


# ------------------------------------------------------------------------------ abandoned
def test_a_running_step_is_abandoned_when_its_process_is_gone(ctx, me, dead):
    assert claims.abandoned(new_build(ctx, running=dead)) is True
    # its own process decides, whatever the orchestration's
    assert claims.abandoned(new_build(ctx, running=me, orchestrator=dead)) is False


def test_between_steps_the_orchestration_decides(ctx, me, dead):
    assert claims.abandoned(new_build(ctx, orchestrator=dead)) is True
    assert claims.abandoned(new_build(ctx, orchestrator=me)) is False
    assert claims.abandoned(new_build(ctx, orchestrator=dead, status="failed")) is True


def test_finished_builds_and_builds_being_reaped_are_not_abandoned(ctx, me, dead):
    assert claims.abandoned(new_build(ctx, running=dead, status="done")) is False
    assert claims.abandoned(new_build(ctx, running=dead, status="cleaned")) is False
    reaped = new_build(ctx, running=dead)
    reaped.data["reaper"] = me
    assert claims.abandoned(reaped) is False
    reaped.data["reaper"] = dead
    assert claims.abandoned(reaped) is True


def test_a_build_driven_by_hand_is_abandoned_when_idle_or_unclaimed(ctx):
    build = new_build(ctx)
    assert claims.abandoned(build) is False
    build.data["updated"] = time.time() - claims.GRACE - 1
    assert claims.abandoned(build) is True
    build = new_build(ctx)
    build.data["steps"].append({"name": "resolve", "status": "done"})
    assert claims.abandoned(build, claimed_by="another-build") is True
    assert claims.abandoned(build, claimed_by=build.id) is False
    build.data["nothing_to_do"] = "image x already has fingerprint y"
    assert claims.abandoned(build, claimed_by="another-build") is False


# ------------------------------------------------------------------------------ the claim
def test_acquire_and_release(ctx, me):
    build = new_build(ctx, orchestrator=me)
    assert claims.acquire(build, ctx, timeout=0) == {}
    assert claims.holder(ctx.builds_dir, "f") == build.id and "claimed" in build.data
    # acquiring again is a no-op; another flavour has its own claim
    assert claims.acquire(build, ctx, timeout=0) == {}
    other_flavour = new_build(ctx, flavour="g", orchestrator=me)
    assert claims.acquire(other_flavour, ctx, timeout=0) == {}
    claims.release(other_flavour)
    assert claims.holder(ctx.builds_dir, "f") == build.id
    claims.release(build)
    assert claims.holder(ctx.builds_dir, "f") is None


def test_a_running_build_keeps_its_claim_and_the_other_times_out_naming_it(ctx, me):
    first = new_build(ctx, running=me)
    claims.acquire(first, ctx, timeout=0)
    second = new_build(ctx, orchestrator=me)
    with pytest.raises(Timeout) as e:
        claims.acquire(second, ctx, timeout=0)
    assert str(e.value) == (f"build {first.id} of flavour f is still running (step resolve running); waited 0s "
                            "for it to finish (timeouts.claim): one build of a flavour runs at a time")
    claims.release(second)  # not its claim: nothing happens
    assert claims.holder(ctx.builds_dir, "f") == first.id
    assert (second.id, "resolve", {"status": "waiting", "for": first.id}) in ctx.events


def test_the_second_build_waits_for_the_first_to_finish(ctx, me, monkeypatch):
    monkeypatch.setattr(claims, "POLL", 0.05)
    first = new_build(ctx, orchestrator=me)
    claims.acquire(first, ctx, timeout=0)
    second = new_build(ctx, orchestrator=me)

    def finish():
        time.sleep(0.3)
        first.data["status"] = "done"
        first.save()

    finisher = threading.Thread(target=finish)
    finisher.start()
    try:
        assert claims.acquire(second, ctx, timeout=30) == {"waited_for": first.id}
    finally:
        finisher.join()
    assert claims.holder(ctx.builds_dir, "f") == second.id and second.data["waited_for"] == first.id


def test_an_abandoned_holder_is_cleaned_up_and_its_claim_taken_over(ctx, me, dead):
    first = new_build(ctx, running=me)
    claims.acquire(first, ctx, timeout=0)
    first.data["steps"][-1]["process"] = dead  # its process was killed
    first.save()
    second = new_build(ctx, orchestrator=me)
    assert claims.acquire(second, ctx, timeout=0) == {}
    assert claims.holder(ctx.builds_dir, "f") == second.id
    cleaned = pipeline.Build.load(ctx.builds_dir, first.id).data
    assert cleaned["status"] == "cleaned" and cleaned["reaper"] == me
    assert (first.id, "cleanup", {"status": "cleaned", "problems": []}) in ctx.events


# ------------------------------------------------------------------------------ reap
def test_reap_cleans_up_the_abandoned_builds_of_a_flavour_only(ctx, me, dead):
    gone = [new_build(ctx, running=dead), new_build(ctx, orchestrator=dead)]
    live = new_build(ctx, running=me)
    skipped = new_build(ctx, running=dead)
    other = new_build(ctx, flavour="g", running=dead)
    reports = claims.reap(ctx.builds_dir, lambda name: ctx, "f", skip=skipped.id)
    assert sorted(r["build"] for r in reports) == sorted(b.id for b in gone)
    assert all(r["status"] == "cleaned" and r["problems"] == [] for r in reports)
    status = {b.id: pipeline.Build.load(ctx.builds_dir, b.id).data["status"] for b in gone + [live, skipped, other]}
    assert status == {**{b.id: "cleaned" for b in gone}, live.id: "running", skipped.id: "running",
                      other.id: "running"}
    # cleaned once: a second reap finds nothing
    assert claims.reap(ctx.builds_dir, lambda name: ctx, "f", skip=skipped.id) == []
    assert [r["build"] for r in claims.reap(ctx.builds_dir, lambda name: ctx)] == sorted([skipped.id, other.id])


def test_a_build_that_cannot_be_cleaned_up_does_not_stop_the_others(ctx, dead):
    builds = [new_build(ctx, flavour="g", running=dead), new_build(ctx, flavour="f", running=dead)]

    def context_for(name):
        if name == "g":
            raise RuntimeError("flavour 'g' is no longer in pillar")
        return ctx

    reports = {r["build"]: r for r in claims.reap(ctx.builds_dir, context_for)}
    assert reports[builds[0].id] == {"build": builds[0].id, "status": "cleanup-failed",
                                     "problems": ["flavour 'g' is no longer in pillar"]}
    assert reports[builds[1].id]["status"] == "cleaned"
