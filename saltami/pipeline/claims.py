"""One build at a time per flavour, and the clean-up of builds whose process died.

An orchestrated build runs each step as a separate runner call, so no process holds a
build from its first step to its last. What holds it instead is a claim file in the builds
directory, ``<flavour>.claim`` naming the build, taken in the resolve step and released
when the build is done, cleaned up, or found to be abandoned. Every read-and-write of
claims and of who is cleaning up what happens under one ``fcntl`` lock of the directory,
held for a few file operations only, so that two processes can neither both take a claim
nor both clean up one build.

A build is abandoned when nothing can carry it on:

- a step is running, and the process that runs it is gone;
- no step is running (between two steps, or failed and awaiting its cleanup), and the
  process that drives the build (the orchestration, or ``salt-run ami.build``) is gone;
- nothing recorded says who drives it (steps called one by one by hand): when it has not
  moved for ``GRACE`` seconds, or no longer holds its flavour's claim.

A process is known by host, boot id, pid and start time, so a reused pid is not taken for
the build's. A build being cleaned up by a live process is not abandoned.
"""
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import AmiError, Timeout
from .manifest import Build

log = logging.getLogger(__name__)

# builds driven by hand: how long one may sit between two steps before it counts as abandoned
GRACE = 900
POLL = 2
UNFINISHED = ("running", "failed")


# ------------------------------------------------------------------------------ processes
def _boot_id():
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat(pid):
    """(state, start time in clock ticks since boot) of a process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name in parentheses may hold spaces and parentheses itself
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def this_process():
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _stat(pid)[1]}


def alive(process):
    """True or False for a process of this host; None when it cannot be told (no record, or
    another host)."""
    if not process or process.get("host") != socket.gethostname():
        return None
    if process.get("boot") != _boot_id():
        return False
    stat = _stat(process["pid"])
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == process.get("start")


# ------------------------------------------------------------------------------ the lock
@contextlib.contextmanager
def _locked(builds_dir):
    Path(builds_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(builds_dir) / "claims.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _claim_path(builds_dir, flavour_name):
    return Path(builds_dir) / f"{flavour_name}.claim"


def holder(builds_dir, flavour_name):
    """The id of the build that holds the flavour's claim, or None."""
    try:
        return json.loads(_claim_path(builds_dir, flavour_name).read_text())["build"]
    except FileNotFoundError:
        return None


def _load(builds_dir, build_id):
    try:
        return Build.load(builds_dir, build_id)
    except AmiError:
        return None


# ------------------------------------------------------------------------------ abandoned
def abandoned(build, claimed_by=None):
    """Whether nothing can carry the build on any more (module doc). ``claimed_by`` is the
    build holding its flavour's claim."""
    d = build.data
    if d.get("status") not in UNFINISHED or alive(d.get("reaper")):
        return False
    running = [s for s in d["steps"] if s.get("status") == "running"]
    for process in ([running[-1].get("process")] if running else []) + [d.get("orchestrator")]:
        state = alive(process)
        if state is not None:
            return not state
    if d.get("nothing_to_do"):
        return False
    idle = time.time() - d.get("updated", d["created"])
    past_resolve = any(s["name"] == "resolve" and s.get("status") == "done" for s in d["steps"])
    return idle > GRACE or (past_resolve and claimed_by != build.id)


def _take(build):
    """Under the lock: mark an abandoned build as being cleaned up by this process."""
    fresh = _load(build.path.parent, build.id)
    if fresh is None or not abandoned(fresh, holder(build.path.parent, fresh.data["flavour"])):
        return None
    fresh.data["reaper"] = this_process()
    fresh.save()
    return fresh


def _manifests(builds_dir, flavour_name=None):
    for path in sorted(Path(builds_dir).glob("*.json")):
        if path.name.endswith(".packages.json"):
            continue
        try:
            build = Build(path, json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if flavour_name in (None, build.data.get("flavour")):
            yield build


def reap(builds_dir, context_for, flavour_name=None, skip=None):
    """Clean up every abandoned build (of ``flavour_name``, or of any flavour) from its
    manifest, as ``ami.cleanup BUILD`` does; ``context_for(flavour)`` gives the Context to
    clean up with. Returns the cleanups' reports."""
    reports = []
    for build in _manifests(builds_dir, flavour_name):
        if build.id == skip:
            continue
        with _locked(builds_dir):
            taken = _take(build)
        if taken is None:
            continue
        try:
            reports.append(_clean(taken, context_for(taken.data["flavour"])))
        except Exception as e:  # one build that cannot be cleaned up must not stop the others
            log.error("build %s: cleanup failed: %s", taken.id, e)
            reports.append({"build": taken.id, "status": "cleanup-failed", "problems": [str(e) or type(e).__name__]})
    return reports


def _clean(taken, ctx):
    log.warning("build %s was abandoned (status %s, last step %s): cleaning it up", taken.id,
                taken.data["status"], (taken.data["steps"] or [{}])[-1].get("name"))
    # by the caller's context (context.py), which knows the build's steps: this module does
    # not, as the resolve step, which takes claims, is one of them
    return ctx.cleanup(taken)


# ------------------------------------------------------------------------------ the claim
def acquire(build, ctx, timeout):
    """Take the flavour's claim for ``build``, waiting up to ``timeout`` seconds for the build
    that holds it to finish; an abandoned holder is cleaned up and its claim taken over.
    Raises Timeout naming the other build."""
    builds_dir, flavour_name = build.path.parent, build.data["flavour"]
    path = _claim_path(builds_dir, flavour_name)
    deadline = time.monotonic() + timeout
    waited_for = None
    while True:
        with _locked(builds_dir):
            other_id = holder(builds_dir, flavour_name)
            other = _load(builds_dir, other_id) if other_id not in (None, build.id) else None
            if other is None or other.data.get("status") not in UNFINISHED:
                tmp = path.with_suffix(".claim.tmp")
                tmp.write_text(json.dumps({"build": build.id, "at": time.time()}))
                os.replace(tmp, path)
                build.data.update(claimed=time.time(), **({"waited_for": waited_for} if waited_for else {}))
                build.save()
                return {"waited_for": waited_for} if waited_for else {}
            taken = _take(other)
        if taken is not None:
            _clean(taken, ctx)
            continue
        if waited_for is None:
            waited_for = other.id
            step = (other.data["steps"] or [{}])[-1]
            log.info("build %s waits for build %s of flavour %s (at step %s)", build.id, other.id,
                     flavour_name, step.get("name"))
            ctx.event(build, "resolve", {"status": "waiting", "for": other.id})
        if time.monotonic() >= deadline:
            step = (other.data["steps"] or [{}])[-1]
            raise Timeout(f"build {other.id} of flavour {flavour_name} is still running (step "
                          f"{step.get('name')} {step.get('status')}); waited {timeout}s for it to finish "
                          f"(timeouts.claim): one build of a flavour runs at a time")
        time.sleep(POLL)


def release(build):
    """Give up the flavour's claim if this build holds it."""
    builds_dir = build.path.parent
    with _locked(builds_dir):
        if holder(builds_dir, build.data["flavour"]) == build.id:
            _claim_path(builds_dir, build.data["flavour"]).unlink()
