"""A build is an ordered list of small steps, each with its undo (if it makes anything) beside it.

Each step is a module of this package with ``NAME``, ``run(build, ctx)`` and, when it makes
something, ``undo(build, ctx)``. ``run`` records every cloud or master resource it makes in
the build (``build.add(kind, id)``) before it can fail, and ``undo`` removes what the build
recorded for it. On any failure the steps that ran are undone in reverse order, so a failed
build leaves nothing behind and never an image under its final name. A step's NAME, what
its events, the manifest's step records and the orchestration's states say, is its
module's name; plans.py lists the steps of each strategy.

The build's state is its manifest (manifest.py), saved after every change: it is what lets
each step run as a separate call (one state per step in the orchestration) and what a later
cleanup uses after a build process was killed.
"""
import logging
import time

from .. import report
from ..errors import AmiError
from . import claims
from .manifest import Build, new_id, plan_name  # noqa: F401  (pipeline.Build, pipeline.new_id)

log = logging.getLogger(__name__)


class StepFailed(AmiError):
    """A step failed; the message names the step and the reason."""


def run_step(build, ctx, step):
    """Run one step and record it; a failure is recorded and raised as StepFailed."""
    if build.data.get("status") in ("failed", "cleaned"):
        raise StepFailed(f"build {build.id} already failed; not running step {step.NAME}")
    if build.data.get("nothing_to_do"):
        return {"step": step.NAME, "skipped": build.data["nothing_to_do"]}
    # who runs the step: a killed build is one whose step's process is gone
    record = {"name": step.NAME, "status": "running", "started": time.time(), "process": claims.this_process()}
    build.data["steps"].append(record)
    build.save()
    ctx.event(build, step.NAME, {"status": "started"})
    t0 = time.monotonic()
    try:
        result = step.run(build, ctx)
    except BaseException as e:  # an interrupt too must leave the manifest saying so
        reason = str(e) or type(e).__name__
        record.update(status="failed", seconds=round(time.monotonic() - t0, 2), error=reason)
        build.data.update(status="failed", error=f"step {step.NAME}: {reason}", failed_step=step.NAME)
        build.save()
        ctx.event(build, step.NAME, {"status": "failed", "error": reason})
        log.error("build %s: step %s failed: %s", build.id, step.NAME, reason)
        if not isinstance(e, Exception):
            raise
        raise StepFailed(f"build {build.id}: step {step.NAME} failed: {reason}") from e
    record.update(status="done", seconds=round(time.monotonic() - t0, 2))
    build.save()
    ctx.event(build, step.NAME, {"status": "done", "seconds": record["seconds"], **report.step_details(result)})
    log.info("build %s: step %s done in %.1fs", build.id, step.NAME, record["seconds"])
    # a build with nothing to do ends with the step that found it (its other steps are not run)
    if _last(build, step) or build.data.get("nothing_to_do"):
        _ended(build, ctx)
    return {"step": step.NAME, "seconds": record["seconds"], **(result or {})}


def _last(build, step):
    return (build.plan or [None])[-1] == plan_name(step)


def _ended(build, ctx):
    """Once its last step ran, the build is done (however it is driven: run_all, or the
    orchestration's last ami.step), gives up its flavour's claim and says so:
    salt/ami/<flavour>/end with its summary."""
    build.data["status"] = "done"
    build.save()
    claims.release(build)
    ctx.event(build, report.END, report.summary(build))


def cleanup(build, ctx, steps):
    """Undo, in reverse order, every step that started; errors are collected, not raised
    one by one, so that one stuck resource does not keep the others."""
    started = {s["name"] for s in build.data["steps"]}
    problems = []
    for step in reversed(steps):
        # a step that makes nothing has no undo
        if step.NAME not in started or not hasattr(step, "undo"):
            continue
        try:
            step.undo(build, ctx)
        except Exception as e:  # keep undoing the others
            problems.append(f"undo {step.NAME}: {e}")
            log.error("build %s: undo of %s failed: %s", build.id, step.NAME, e)
    build.data["cleanup"] = {"at": time.time(), "problems": problems}
    if build.data.get("status") != "done":
        build.data["status"] = "cleaned" if not problems else "cleanup-failed"
    build.save()
    claims.release(build)
    ctx.event(build, "cleanup", {"status": build.data["status"], "problems": problems})
    ctx.event(build, report.END, report.summary(build))
    return {"build": build.id, "status": build.data["status"], "problems": problems,
            "left": {k: v for k, v in build.data["resources"].items() if v}}


def run_all(build, ctx, steps):
    """Every step in order; on failure, clean up and raise StepFailed."""
    results = []
    try:
        for step in steps:
            results.append(run_step(build, ctx, step))
    except BaseException as e:
        cleaned = cleanup(build, ctx, steps)
        if cleaned["problems"] and isinstance(e, StepFailed):
            raise StepFailed(f"{e}; cleanup could not remove everything: {'; '.join(cleaned['problems'])}") from e
        raise
    return results


def steps_for(strategy, here=False, validate=True):
    """The steps of a build, in order, for the flavour's strategy, run by the master or
    ``here``; without ``validate`` (the flavour's key) no instance of the new image is booted
    to test it before it is promoted."""
    from .plans import PLANS  # here: the steps it imports import this package

    plan = PLANS.get((strategy, here))
    if plan is None:
        available = sorted({s for s, h in PLANS if h == here})
        raise AmiError(f"build strategy {strategy!r} cannot run {'here' if here else 'on the master'} "
                       f"(available: {', '.join(available)})")
    return [step for step in plan if validate or step.NAME != "validate"]


def steps_of_spec(spec, here=False):
    """The steps of a build of the flavour ``spec`` (validated)."""
    return steps_for(spec["strategy"], here, validate=spec["validate"])


def steps_of(build, strategy):
    """The steps a build was made with: its manifest's plan, or for a manifest written before
    plans were recorded, the master's steps of its ``strategy``."""
    from . import plans  # as in steps_for

    if build.plan is None:
        return steps_for(strategy)
    return [plans.step(name) for name in build.plan]
