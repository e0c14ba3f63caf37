"""A build is an ordered list of small steps, each with its undo beside it.

Each step is a module of this package with ``NAME``, ``run(build, ctx)`` and
``undo(build, ctx)``. ``run`` records every cloud or master resource it makes in the build
(``build.add(kind, id)``) before it can fail, and ``undo`` removes what the build recorded
for it. On any failure the steps that ran are undone in reverse order, so a failed build
leaves nothing behind and never an image under its final name.

The build's state is its manifest, a JSON file (like Packer's manifest) that is saved after
every change: it is what lets each step run as a separate call (one state per step in the
orchestration) and what a later cleanup uses after a build process was killed.
"""
import importlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

from .. import report
from ..errors import AmiError
from . import claims

log = logging.getLogger(__name__)


class StepFailed(AmiError):
    """A step failed; the message names the step and the reason."""


class Build:
    """The state bag of one build, persisted as ``<builds_dir>/<id>.json``."""

    def __init__(self, path, data):
        self.path = Path(path)
        self.data = data

    @classmethod
    def create(cls, builds_dir, flavour_name, steps, build_id=None):
        build_id = build_id or new_id(flavour_name)
        path = Path(builds_dir) / f"{build_id}.json"
        if path.exists():
            raise AmiError(f"build {build_id} exists already ({path})")
        build = cls(path, _new(build_id, flavour_name, steps, "running"))
        build.save()
        return build

    @classmethod
    def unsaved(cls, flavour_name, steps):
        """A build that is never written (a dry run's): its steps can check, never make."""
        build = cls(os.devnull, _new(new_id(flavour_name), flavour_name, steps, "dry-run"))
        build.save = lambda: None
        return build

    @classmethod
    def load(cls, builds_dir, build_id):
        path = Path(builds_dir) / f"{build_id}.json"
        try:
            return cls(path, json.loads(path.read_text()))
        except FileNotFoundError:
            raise AmiError(f"no build {build_id} (no manifest {path})") from None

    @property
    def id(self):
        return self.data["id"]

    def save(self):
        # tells a build that moves from one that sits still (claims.abandoned)
        self.data["updated"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.path)

    # resources the build made, by kind ("server", "volume", "image", "minion_key"...)
    def add(self, kind, value):
        self.data["resources"].setdefault(kind, []).append(value)
        self.save()

    def forget(self, kind, value):
        values = self.data["resources"].get(kind, [])
        if value in values:
            values.remove(value)
            self.save()

    def made(self, kind):
        return list(self.data["resources"].get(kind, []))


def _new(build_id, flavour_name, steps, status):
    """A new build's manifest."""
    # the steps by module: what a later cleanup undoes, whatever the flavour says by then
    return {"id": build_id, "flavour": flavour_name, "status": status,
            "plan": [s.__name__.rsplit(".", 1)[-1] for s in steps],
            "created": time.time(), "steps": [], "resources": {}, "outputs": {}}


def new_id(flavour_name):
    """Sortable by time, unique across parallel builds of one flavour."""
    return f"{flavour_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


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
    return build.data.get("plan", [None])[-1] == step.__name__.rsplit(".", 1)[-1]


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
        if step.NAME not in started:
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


# The steps of each strategy, in order, by module. "here" is a bake run where it is called
# (salt-call --local ami.bake), the others are run by the master.
PLANS = {
    ("snapshot", False): "resolve boot provision scrub snapshot release validate promote prune",
    # the builder is a minion of the master; the chroot part runs on it (bake_remote)
    ("volume", False): "resolve boot volume attach bake_remote detach upload release_volume release "
                       "validate promote prune",
    ("volume", True): "resolve volume attach mount chroot_provision chroot_scrub unmount detach upload "
                      "release_volume promote prune",
    # a loop device over a copy of a local base image; publish uploads only with a cloud
    ("local", True): "resolve local_disk loop mount chroot_provision chroot_scrub unmount release_loop outputs "
                     "release_disk publish",
    # what the orchestration's builder minion runs during bake_remote
    ("volume-builder", True): "mount chroot_provision chroot_scrub unmount",
}


def _modules(names):
    return [importlib.import_module(f"{__name__}.{name}") for name in names.split()]


def steps_for(strategy, here=False, validate=True):
    """The steps of a build, in order, for the flavour's strategy, run by the master or
    ``here``; without ``validate`` (the flavour's key) no instance of the new image is booted
    to test it before it is promoted."""
    plan = PLANS.get((strategy, here))
    if plan is None:
        available = sorted({s for s, h in PLANS if h == here})
        raise AmiError(f"build strategy {strategy!r} cannot run {'here' if here else 'on the master'} "
                       f"(available: {', '.join(available)})")
    return _modules(" ".join(name for name in plan.split() if validate or name != "validate"))


def steps_of_spec(spec, here=False):
    """The steps of a build of the flavour ``spec`` (validated)."""
    return steps_for(spec["strategy"], here, validate=spec["validate"])


def steps_of(build, strategy):
    """The steps a build was made with: its manifest's plan, or for a manifest written before
    plans were recorded, the master's steps of its ``strategy``."""
    if "plan" not in build.data:
        return steps_for(strategy)
    return _modules(" ".join(build.data["plan"]))
