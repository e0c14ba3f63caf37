"""Bakes that run where they are called, with no master: ``salt-call --local ami.bake`` inside
a builder VM (strategy volume: a volume made from the base image is attached to this VM,
changed through a chroot, and uploaded to Glance) or on any machine (strategy local: a loop
device over a copy of a local base image). Flavours come from the local pillar, SLS from the
local file_roots, the cloud from the local config.

The orchestration's volume strategy runs the chroot part of the same bake on its builder
minion (``builder_bake``).
"""
import contextlib
import json
import logging
import signal
import sys

from . import builds, flavour, pipeline, report, vanilla
from .cloud import instance
from .errors import AmiError, InvalidArgument
from .pipeline import claims
from .pipeline.context import Context, listening
from .saltfiles import SaltFiles

log = logging.getLogger(__name__)


class LocalSalt(SaltFiles):
    """The Salt side of a bake without a master: the local file server, and events that go
    to the log (a masterless salt-call has no event bus to fire on)."""

    def fire(self, tag, data):
        log.info("%s %s", tag, json.dumps(data, sort_keys=True, default=str))


class Interrupted(BaseException):
    """SIGTERM or SIGHUP during a bake: raised so that the bake cleans up before it exits."""


@contextlib.contextmanager
def _signals_as_exceptions():
    def interrupt(signum, _frame):
        raise Interrupted(f"interrupted by signal {signal.Signals(signum).name}")
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def context(opts, pillar_ami, flavour_name, clients):
    spec = flavour.resolve(pillar_ami, flavour_name)
    if spec["strategy"] == "snapshot":
        raise InvalidArgument(f"flavour {flavour_name!r} has strategy 'snapshot', which boots a builder "
                              "minion of a master: build it with salt-run state.orch ami.build "
                              "(allowed here: strategy volume or local)")
    if clients is None and spec["strategy"] != "local":
        raise InvalidArgument(f"flavour {flavour_name!r} has strategy {spec['strategy']!r}, which needs a "
                              "cloud: configure one (ami:cloud) or use strategy local")
    return Context(clients, LocalSalt(opts), spec, builds.builds_dir(opts))


def cleanup_abandoned(opts, pillar_ami, clients):
    """Clean up what killed bakes on this machine left (pipeline/claims.py says which)."""
    return claims.reap(builds.builds_dir(opts),
                       lambda name: context(opts, pillar_ami, name, clients))


def console(opts):
    """How a bake run by salt-call says its progress on the console: lines on stderr (stdout
    holds its result, which ``--out`` may want to be data); None elsewhere (a minion's job)
    and with ``--out=quiet``."""
    if opts.get("__cli") != "salt-call" or opts.get("output") == "quiet":
        return None

    def say(line):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return say


class _LogLines(logging.Handler):
    """What the vanilla image's build logs, as progress lines of the bake that waits for it
    (in its resolve step: minutes, the first time)."""

    def __init__(self, progress, build, say):
        super().__init__(logging.INFO)
        self.progress, self.build, self.say = progress, build, say

    def emit(self, record):
        self.say(self.progress.message(self.build.id, self.build.data["flavour"], record.getMessage()))


@contextlib.contextmanager
def _progress(build, say):
    """The build's events, and what the vanilla image's build logs, said through ``say``."""
    if say is None:
        yield
        return
    progress = report.Progress()
    logger, handler = vanilla.log, _LogLines(progress, build, say)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with listening(progress.printer(say)):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def bake(opts, pillar_ami, flavour_name, clients, server_id=None):
    """A whole bake here; on failure or interruption everything it made is undone. Run by
    salt-call, it says its progress on the console (``console``)."""
    ctx = context(opts, pillar_ami, flavour_name, clients)
    cleaned = cleanup_abandoned(opts, pillar_ami, clients)
    steps = pipeline.steps_of_spec(ctx.spec, here=True)
    b = pipeline.Build.create(ctx.builds_dir, flavour_name, steps)
    b.data["orchestrator"] = claims.this_process()
    if ctx.spec["strategy"] == "volume":
        b.data["builder"] = {"server": instance.whoami(server_id)["id"]}
    b.save()
    with _signals_as_exceptions(), _progress(b, console(opts)):
        pipeline.run_all(b, ctx, steps)
    return {**builds.summary(b), "cleaned_up_before": cleaned}


def builder_bake(opts, device, sls, pillar, build_id, timeout, salt="disable"):
    """The chroot part of the orchestration's volume bake, on its builder minion: mount the
    attached volume's root filesystem, apply the SLS (served by the master), scrub, unmount.
    Returns the steps and the package manifest."""
    spec = {"name": f"{build_id}-builder", "sls": sls, "pillar": pillar, "timeouts": {"apply": timeout},
            "salt": salt}
    ctx = Context(None, LocalSalt(opts), spec, builds.builds_dir(opts))
    steps = pipeline.steps_for("volume-builder", here=True)
    b = pipeline.Build.create(ctx.builds_dir, spec["name"], steps, build_id=spec["name"])
    b.data["device"] = device
    b.save()
    try:
        with _signals_as_exceptions():
            pipeline.run_all(b, ctx, steps)
    except pipeline.StepFailed as e:
        raise AmiError(str(e)) from None
    with open(b.data["packages"]["file"]) as f:
        packages = json.load(f)
    return {"steps": builds.summary(b)["steps"], "packages": packages,
            "render": (b.data.get("render") or {}).get("entries")}
