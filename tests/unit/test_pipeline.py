"""saltami.pipeline: the plans of each strategy (plans.py), the build manifest and the plan it
records (manifest.py), and how run_all and cleanup order the steps, undo what ran in reverse
and collect undo errors; over fake steps (modules with NAME, run and undo) and a fake context
that records events (conftest.py), with manifests in a temporary directory. The real steps
run in the integration tier."""
import importlib
import json
import pkgutil
import types

import pytest

from saltami import flavour, pipeline
from saltami.errors import AmiError
from saltami.pipeline import claims, plans


# ------------------------------------------------------------------------------ plans
def names(steps):
    return [step.NAME for step in steps]


def test_the_documented_plans():
    # README, "Build an image" and "Bake a volume inside a builder VM"
    assert names(pipeline.steps_for("snapshot")) == [
        "resolve", "boot", "provision", "scrub", "snapshot", "release", "validate", "promote", "prune"]
    assert names(pipeline.steps_for("volume", here=True)) == [
        "resolve", "volume", "attach", "mount", "provision", "scrub", "unmount", "detach", "upload",
        "release_volume", "promote", "prune"]


def test_a_flavour_that_does_not_validate_boots_no_second_server():
    keys = {"base": "debian-12", "sls": "x", "flavor": "m1"}
    unchecked = flavour.resolve({"flavours": {"f": dict(keys, validate=False)}}, "f")
    assert names(pipeline.steps_of_spec(unchecked)) == [
        "resolve", "boot", "provision", "scrub", "snapshot", "release", "promote", "prune"]
    checked = flavour.resolve({"flavours": {"f": keys}}, "f")
    assert "validate" in names(pipeline.steps_of_spec(checked))


def test_a_local_bake_validates_its_outputs_before_it_publishes_them_unless_told_not_to():
    """The local provider's validate (local.validate, which boots an output under qemu here) comes
    once the outputs are made and the work disk is gone, before publish; validate: false drops it
    as it drops the master's."""
    keys = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": "x"}
    checked = pipeline.steps_of_spec(flavour.resolve({"flavours": {"f": keys}}, "f"), here=True)
    assert names(checked)[-4:] == ["outputs", "release_disk", "validate", "publish"]
    assert plans.step("local.validate") in checked and plans.step("local.validate") is not plans.step("validate")
    unchecked = pipeline.steps_of_spec(flavour.resolve({"flavours": {"f": dict(keys, validate=False)}}, "f"),
                                       here=True)
    assert names(unchecked) == [name for name in names(checked) if name != "validate"]


@pytest.mark.parametrize("plan", sorted(plans.PLANS))
def test_every_plan_is_runnable_and_cleanable(plan):
    steps = pipeline.steps_for(*plan)
    # cleanup and the manifest know a step by its NAME: two steps of a plan cannot share one
    assert len(set(names(steps))) == len(steps) == len(set(steps))
    assert all(callable(step.run) for step in steps)
    if plan[0] in flavour.STRATEGIES:
        # the flavour is validated, and the claim taken, before anything is made
        assert steps[0].NAME == "resolve"


def test_every_strategy_runs_somewhere():
    for strategy in flavour.STRATEGIES:
        assert any(plans.PLANS.get((strategy, here)) for here in (False, True)), strategy


def test_the_builder_bakes_what_a_bake_here_bakes():
    """The bake step runs on the orchestration's builder the chroot part of a volume bake here."""
    builder = names(pipeline.steps_for("volume-builder", here=True))
    here = names(pipeline.steps_for("volume", here=True))
    start = here.index(builder[0])
    assert here[start:start + len(builder)] == builder


@pytest.mark.parametrize("strategy, here, where, available", [
    ("local", False, "on the master", "snapshot, volume"),
    ("snapshot", True, "here", "local, volume, volume-builder"),
    ("packer", False, "on the master", "snapshot, volume"),
])
def test_a_strategy_that_cannot_run_there_is_named(strategy, here, where, available):
    with pytest.raises(AmiError) as e:
        pipeline.steps_for(strategy, here)
    assert str(e.value) == f"build strategy {strategy!r} cannot run {where} (available: {available})"


def test_a_step_is_named_by_its_module():
    """A step's NAME (its events, states and records) is its module's name: the chroot
    variants of provision and scrub are chroot.provision and chroot.scrub."""
    for plan in plans.PLANS.values():
        for step in plan:
            assert step.NAME == step.__name__.rsplit(".", 1)[-1], step.__name__
    assert plans.step("chroot.provision").NAME == "provision"


def test_every_step_module_is_in_a_plan():
    """A module of the pipeline with a NAME is a step: one that no plan lists is dead code."""
    steps = set()
    for found in pkgutil.walk_packages(pipeline.__path__, f"{pipeline.__name__}."):
        module = importlib.import_module(found.name)
        if hasattr(module, "NAME"):
            steps.add(module)
    assert steps == set(plans.STEPS.values())


def test_steps_of_a_build_are_its_recorded_plan(tmp_path):
    steps = pipeline.steps_for("local", here=True)
    build = pipeline.Build.create(tmp_path, "f", steps)
    # by module path in the pipeline package
    assert build.data["plan"] == ["resolve", "disk", "loop", "mount", "chroot.provision", "chroot.scrub",
                                  "unmount", "release_loop", "outputs", "release_disk", "local.validate",
                                  "publish"]
    assert pipeline.steps_of(pipeline.Build.load(tmp_path, build.id), "snapshot") == steps
    # a manifest written before plans were recorded: the master's steps of its strategy
    del build.data["plan"]
    assert pipeline.steps_of(build, "snapshot") == pipeline.steps_for("snapshot")


@pytest.mark.parametrize("strategy, here, plan", [
    ("local", True, "resolve local_disk loop mount chroot_provision chroot_scrub unmount release_loop outputs "
                    "release_disk publish"),
    ("volume", False, "resolve boot volume attach bake_remote detach upload release_volume release validate "
                      "promote prune"),
    ("volume", True, "resolve volume attach mount chroot_provision chroot_scrub unmount detach upload "
                     "release_volume promote prune"),
    ("volume-builder", True, "mount chroot_provision chroot_scrub unmount"),
])
def test_a_plan_recorded_before_steps_were_renamed_still_cleans_up(tmp_path, strategy, here, plan):
    """Manifests written before some step modules took their step's name (bake_remote,
    local_disk, chroot_provision, chroot_scrub) name them by their old module (and a local
    one, before the local provider validated, has no validate step)."""
    build = pipeline.Build.create(tmp_path, "f", [])
    build.data["plan"] = plan.split()
    build.save()
    assert pipeline.steps_of(pipeline.Build.load(tmp_path, build.id), "snapshot") == pipeline.steps_for(
        strategy, here, validate="validate" in plan.split())


def test_a_plan_that_names_no_step_is_refused(tmp_path):
    build = pipeline.Build.create(tmp_path, "f", [])
    build.data["plan"] = ["resolve", "teleport"]
    with pytest.raises(AmiError, match="a build's plan names step 'teleport', which is not one of this version's"):
        pipeline.steps_of(build, "snapshot")


# ------------------------------------------------------------------------------ the manifest
def test_build_manifest_is_saved_and_loaded(tmp_path):
    build = pipeline.Build.create(tmp_path, "debian-postgres", [step("a"), step("b")])
    assert build.id.startswith("debian-postgres-") and build.path == tmp_path / f"{build.id}.json"
    build.add("server", "s1")
    build.add("server", "s2")
    build.forget("server", "s1")
    build.forget("volume", "never-made")
    loaded = pipeline.Build.load(tmp_path, build.id)
    assert loaded.made("server") == ["s2"] and loaded.made("volume") == []
    # a module outside the pipeline package goes by its whole name
    assert loaded.data["plan"] == ["fake_steps.a", "fake_steps.b"] and loaded.data["status"] == "running"
    assert json.loads(build.path.read_text()) == loaded.data
    assert not list(tmp_path.glob("*.tmp"))


def test_build_ids_are_unique_and_not_reused(tmp_path):
    ids = {pipeline.new_id("f") for _ in range(50)}
    assert len(ids) == 50
    pipeline.Build.create(tmp_path, "f", [], build_id="f-1")
    with pytest.raises(AmiError, match="build f-1 exists already"):
        pipeline.Build.create(tmp_path, "f", [], build_id="f-1")
    with pytest.raises(AmiError, match=r"no build f-2 \(no manifest .*f-2.json\)"):
        pipeline.Build.load(tmp_path, "f-2")


# ------------------------------------------------------------------------------ run_all, cleanup
def step(name, log=None, fails=None, undo_fails=None, makes=None, undoes=True):
    """A step module: its run makes ``makes`` (a server) and raises ``fails``; its undo (none
    unless ``undoes``) removes it and raises ``undo_fails``; both write to ``log``."""
    module = types.ModuleType(f"fake_steps.{name}")
    module.NAME = name

    def run(build, ctx):
        log.append(("run", name))
        if makes:
            build.add("server", makes)
        if fails:
            raise fails
        return {"made": makes} if makes else None

    def undo(build, ctx):
        log.append(("undo", name))
        if undo_fails:
            raise undo_fails
        if makes:
            build.forget("server", makes)

    module.run = run
    if undoes:
        module.undo = undo
    return module


def build_of(ctx, steps):
    return pipeline.Build.create(ctx.builds_dir, "f", steps)


def test_run_all_runs_every_step_in_order(ctx):
    log = []
    steps = [step("a", log, makes="s1"), step("b", log), step("c", log)]
    build = build_of(ctx, steps)
    results = pipeline.run_all(build, ctx, steps)
    assert log == [("run", "a"), ("run", "b"), ("run", "c")]
    assert [r["step"] for r in results] == ["a", "b", "c"] and results[0]["made"] == "s1"
    assert all(r["seconds"] >= 0 for r in results)
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["status"] == "done" and [s["status"] for s in saved["steps"]] == ["done"] * 3
    assert saved["steps"][0]["process"] == claims.this_process()
    # and the end of the build, with its summary (what salt-run ami.watch prints)
    assert ctx.statuses() == [(n, s) for n in "abc" for s in ("started", "done")] + [("end", "done")]
    end = ctx.events[-1][2]
    assert end["build"] == build.id and [s["name"] for s in end["steps"]] == ["a", "b", "c"]


def test_a_failed_step_undoes_what_ran_in_reverse(ctx):
    log = []
    steps = [step("a", log, makes="s1"), step("b", log, makes="s2", fails=RuntimeError("no valid host")),
             step("c", log)]
    build = build_of(ctx, steps)
    with pytest.raises(pipeline.StepFailed) as e:
        pipeline.run_all(build, ctx, steps)
    assert str(e.value) == f"build {build.id}: step b failed: no valid host"
    # c never ran, so it is not undone; b is, as it may have made something before failing
    assert log == [("run", "a"), ("run", "b"), ("undo", "b"), ("undo", "a")]
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["status"] == "cleaned" and saved["failed_step"] == "b"
    assert saved["error"] == "step b: no valid host" and saved["resources"] == {"server": []}
    assert [(s["name"], s["status"]) for s in saved["steps"]] == [("a", "done"), ("b", "failed")]
    assert saved["steps"][1]["error"] == "no valid host"
    assert saved["cleanup"]["problems"] == []
    assert ctx.statuses()[-3:] == [("b", "failed"), ("cleanup", "cleaned"), ("end", "cleaned")]
    assert ctx.events[-1][2]["error"] == "step b: no valid host"


def test_a_step_with_nothing_to_undo_has_no_undo(ctx):
    log = []
    steps = [step("a", log, makes="s1"), step("b", log, undoes=False), step("c", log, fails=RuntimeError("boom"))]
    build = build_of(ctx, steps)
    with pytest.raises(pipeline.StepFailed):
        pipeline.run_all(build, ctx, steps)
    assert log == [("run", "a"), ("run", "b"), ("run", "c"), ("undo", "c"), ("undo", "a")]
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["status"] == "cleaned" and saved["cleanup"]["problems"] == []


def test_undo_errors_are_collected_and_every_undo_still_runs(ctx):
    log = []
    steps = [step("a", log, makes="s1", undo_fails=RuntimeError("server s1 is stuck")), step("b", log, makes="s2"),
             step("c", log, fails=RuntimeError("boom"), undo_fails=OSError("gone"))]
    build = build_of(ctx, steps)
    with pytest.raises(pipeline.StepFailed) as e:
        pipeline.run_all(build, ctx, steps)
    assert log[-3:] == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert str(e.value) == (f"build {build.id}: step c failed: boom; cleanup could not remove everything: "
                            "undo c: gone; undo a: server s1 is stuck")
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["status"] == "cleanup-failed" and saved["resources"] == {"server": ["s1"]}


def test_cleanup_reports_what_is_left(ctx):
    log = []
    steps = [step("a", log, makes="s1", undo_fails=RuntimeError("stuck")), step("b", log)]
    build = build_of(ctx, steps)
    pipeline.run_step(build, ctx, steps[0])
    report = pipeline.cleanup(build, ctx, steps)
    assert report == {"build": build.id, "status": "cleanup-failed", "problems": ["undo a: stuck"],
                      "left": {"server": ["s1"]}}
    assert log == [("run", "a"), ("undo", "a")]


def test_an_interrupt_is_recorded_cleaned_up_and_not_swallowed(ctx):
    log = []
    steps = [step("a", log, makes="s1"), step("b", log, fails=KeyboardInterrupt())]
    build = build_of(ctx, steps)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_all(build, ctx, steps)
    saved = pipeline.Build.load(ctx.builds_dir, build.id).data
    assert saved["error"] == "step b: KeyboardInterrupt" and saved["status"] == "cleaned"
    assert log[-2:] == [("undo", "b"), ("undo", "a")]


def test_no_step_runs_on_a_failed_build(ctx):
    log = []
    steps = [step("a", log, fails=RuntimeError("x")), step("b", log)]
    build = build_of(ctx, steps)
    with pytest.raises(pipeline.StepFailed):
        pipeline.run_all(build, ctx, steps)
    with pytest.raises(pipeline.StepFailed, match=f"build {build.id} already failed; not running step b"):
        pipeline.run_step(build, ctx, steps[1])
    assert ("run", "b") not in log


def test_nothing_to_do_skips_the_steps_after(ctx):
    log = []
    found = step("resolve", log)
    found.run = lambda build, ctx: build.data.update(nothing_to_do="image x already has fingerprint f")
    steps = [found, step("boot", log), step("snapshot", log)]
    build = build_of(ctx, steps)
    results = pipeline.run_all(build, ctx, steps)
    assert log == []
    assert results[1:] == [{"step": "boot", "skipped": "image x already has fingerprint f"},
                           {"step": "snapshot", "skipped": "image x already has fingerprint f"}]
    assert build.data["status"] == "done"
    # a build with nothing to do ends too: once, at its last step
    assert ctx.statuses() == [("resolve", "started"), ("resolve", "done"), ("end", "done")]
    assert ctx.events[-1][2]["nothing_to_do"] == "image x already has fingerprint f"


@pytest.mark.parametrize("fails", [None, RuntimeError("late")])
def test_the_claim_is_released_when_the_build_ends(ctx, fails):
    log = []
    take = step("resolve", log)
    take.run = lambda build, ctx: claims.acquire(build, ctx, timeout=0)
    steps = [take, step("b", log, fails=fails)]
    build = build_of(ctx, steps)
    try:
        pipeline.run_all(build, ctx, steps)
    except pipeline.StepFailed:
        pass
    assert claims.holder(ctx.builds_dir, "f") is None
