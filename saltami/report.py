"""What a person reads of a build: a line for each step as it starts and ends, transfer
progress with bytes and rate, and a short summary at its end, made from the build's events
(``salt/ami/<flavour>/<step>`` with the step's ``status``, ``salt/ami/transfer/<name>``, and
``salt/ami/<flavour>/end`` with the build's summary). The same lines are printed by ``salt-run
ami.build`` and ``salt-call --local ami.bake`` where they run, and by ``salt-run ami.watch``
from the master's event bus.

No Salt here: the runner and the execution module say where the lines go.
"""
import logging
import os
import time

log = logging.getLogger(__name__)

END = "end"
# at most one line per transfer this often (the library reports about every second)
TRANSFER_LINE_SECONDS = 3.0
# the statuses of a build that is over (pipeline/__init__.py, claims.py)
OVER = ("done", "cleaned", "cleanup-failed")


# ------------------------------------------------------------------------------ units
def size(n):
    """Bytes as a person reads them: 12 B, 900.0 KiB, 312.4 MiB, 1.1 GiB."""
    if n is None:
        return "size unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds):
    """1.2s, 1m 32s, 1h 02m."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def first_line(text):
    lines = str(text).strip().splitlines() or [""]
    return lines[0] + (" (...)" if len(lines) > 1 else "")


# ------------------------------------------------------------------------------ transfers
def transfer_progress(send, tag, what, extra=None, clock=time.monotonic):
    """A ``progress(done, total)`` callback for the library's transfers that sends ``tag``
    with the bytes done, the total and the rate so far (``extra`` added: the build's id
    and flavour). A callback that starts again from fewer bytes (the next part of an AMI
    triplet) measures its rate anew."""
    state = {"start": clock(), "done": -1}

    def progress(done, total):
        if done < state["done"]:
            state["start"] = clock()
        state["done"] = done
        pct = 100.0 * done / total if total else 100.0
        rate = done / max(clock() - state["start"], 1e-6) / 2**20
        log.info("%s: %d/%d bytes (%.0f%%, %.1f MiB/s)", what, done, total, pct, rate)
        send(tag, {**(extra or {}), "what": what, "bytes": done, "total": total,
                   "percent": round(pct, 1), "mib_per_s": round(rate, 1)})

    return progress


# ------------------------------------------------------------------------------ a build's summary
def summary(build):
    """What a build says about itself when asked or when it ends (``salt-run ami.build``,
    ``ami.bake``, the end event): its id, status, image, size, steps and what it pruned."""
    d = build.data
    image = d["outputs"].get("image")
    return {"build": d["id"], "flavour": d["flavour"], "status": d["status"],
            "fingerprint": d.get("fingerprint"), "nothing_to_do": d.get("nothing_to_do"),
            "image": image, "error": d.get("error"), "manifest": str(build.path),
            "pruned": d.get("pruned"), "seconds": round(d.get("updated", d["created"]) - d["created"], 1),
            "size": (d["outputs"].get("candidate") or {}).get("size"),
            "sizes": _local_sizes(image),
            # a chroot bake's provision says which services it enabled at boot instead of
            # starting them, and which processes it stopped (pipeline/chroot/provision.py); a
            # local bake's validate which output it booted, how, and cloud-init's end there
            # (pipeline/local/validate.py)
            "steps": [{k: s.get(k) for k in ("name", "status", "seconds", "error", "services", "stopped",
                                             "output", "accel", "cloud_init")
                       if s.get(k) is not None} for s in d["steps"]]}


def _local_sizes(image):
    """The local provider's outputs in their directory: bytes of each (all its files)."""
    files = (image or {}).get("files")
    if not files:
        return None
    sizes = {}
    for kind, parts in files.items():
        try:
            sizes[kind] = sum(os.path.getsize(path) for path in parts.values())
        except OSError:
            continue
    return sizes


def summary_lines(s):
    """A build's summary (``summary``) as a few lines a person reads."""
    name = s["flavour"]
    steps = ", ".join(f"{step['name']} {duration(step.get('seconds'))}"
                      + ("" if step.get("status") == "done" else f" {step.get('status')}")
                      for step in s.get("steps") or [])
    if s["status"] == "done" and s.get("nothing_to_do"):
        lines = [f"{name}: nothing to do (build {s['build']}): {s['nothing_to_do']}"]
    elif s["status"] == "done":
        lines = [f"{name}: built in {duration(s.get('seconds'))} (build {s['build']})"]
        lines += _image_lines(s)
    else:
        error, *more = str(s.get("error") or s["status"]).strip().splitlines() or [s["status"]]
        lines = [f"{name}: FAILED after {duration(s.get('seconds'))} (build {s['build']}): {error}"]
        lines += [f"    {line}" for line in more]
    lines.append(f"  steps: {steps or 'none'}")
    if s["status"] == "done" and not s.get("nothing_to_do"):
        lines.append(f"  pruned: {_pruned(s.get('pruned'))}")
    elif s["status"] == "cleaned":
        lines.append("  cleaned up: nothing it made is left")
    elif s["status"] == "cleanup-failed":
        lines.append(f"  cleanup could not remove everything: salt-run ami.cleanup {s['build']}")
    elif s["status"] != "done":
        lines.append(f"  not cleaned up yet: salt-run ami.cleanup {s['build']}")
    return lines


def _image_lines(s):
    image = s.get("image") or {}
    if image.get("id"):
        return [f"  image: {image.get('name')} ({image['id']}), {size(s.get('size'))}"]
    if image.get("directory"):
        sizes = s.get("sizes") or {}
        listed = ", ".join(f"{kind} {size(n)}" for kind, n in sizes.items())
        return [f"  outputs: {image['directory']}" + (f" ({listed})" if listed else "")]
    return []


def _pruned(pruned):
    if not pruned:
        return "nothing"
    said = [f"{len(pruned['deleted'])} older image{'' if len(pruned['deleted']) == 1 else 's'}"
            + (f" ({', '.join(pruned['deleted'])})" if pruned["deleted"] else "")]
    if pruned.get("kept_in_use"):
        said.append("kept because servers use them: " + ", ".join(
            f"{image} ({', '.join(users)})" for image, users in pruned["kept_in_use"].items()))
    return "; ".join(said)


# ------------------------------------------------------------------------------ lines from events
def _step_event(tag, data):
    """(flavour, step) of a ``salt/ami/<flavour>/<step>`` event of a build, else None."""
    parts = tag.split("/")
    if len(parts) != 4 or parts[:2] != ["salt", "ami"] or not data.get("build") or "status" not in data:
        return None
    return parts[2], parts[3]


def _is_transfer(tag, data):
    return tag.startswith("salt/ami/transfer/") and "bytes" in data and "total" in data


class Progress:
    """Turns the events of builds into the lines a person follows them by; keeps what it
    needs to (the step each build is at, when each transfer was last shown)."""

    def __init__(self, clock=time.time, transfer_every=TRANSFER_LINE_SECONDS):
        self.clock = clock
        self.transfer_every = transfer_every
        self.flavours = {}  # build -> flavour
        self.steps = {}  # build -> the step it runs
        self.shown = {}  # (build, transfer) -> when its last line was shown

    def _line(self, flavour, step, text):
        return self.note(f"[{flavour}] {step}: {text}" if step else f"[{flavour}] {text}")

    def lines(self, tag, data):
        """The lines for one event (often none)."""
        if _is_transfer(tag, data):
            return self._transfer(data)
        found = _step_event(tag, data)
        if found is None:
            return []
        flavour, step = found
        build = data["build"]
        self.flavours[build] = flavour
        if step == END:
            self.steps.pop(build, None)
            return ["\n".join(summary_lines(data))]
        status = data["status"]
        if step == "cleanup":
            problems = data.get("problems") or []
            return [self._line(flavour, step, status + (f": {'; '.join(problems)}" if problems else ""))]
        if status == "started":
            self.steps[build] = step
            return [self._line(flavour, step, "started")]
        if status == "done":
            return [self._line(flavour, step, f"done in {duration(data.get('seconds'))}" + _detail(data))]
        if status == "failed":
            return [self._line(flavour, step, f"failed: {first_line(data.get('error'))}")]
        return [self._line(flavour, step, status)]

    def _transfer(self, data):
        build, what = data.get("build"), data.get("what")
        now = self.clock()
        finished = data["bytes"] >= data["total"]
        if not finished and now - self.shown.get((build, what), -self.transfer_every) < self.transfer_every:
            return []
        self.shown[(build, what)] = now
        text = (f"{what}: {size(data['bytes'])} of {size(data['total'])} ({data['percent']:.0f}%), "
                f"{data['mib_per_s']:.1f} MiB/s")
        return [self._line(data.get("flavour") or self.flavours.get(build, "transfer"), self.steps.get(build), text)]

    def note(self, text):
        """A line about no build in particular."""
        return f"{time.strftime('%H:%M:%S', time.localtime(self.clock()))} {text}"

    def message(self, build, flavour, text):
        """A line said about a build from elsewhere than its events (the vanilla image's log)."""
        return self._line(flavour, self.steps.get(build), text)

    def printer(self, say):
        """A listener for pipeline.context.listening that says each event's lines."""
        def listener(tag, data):
            for line in self.lines(tag, data):
                say(line)
        return listener


def _detail(data):
    """What a step's end event says besides its duration: the image it made and its size
    (the rate too, when the step moved the image), or that there is nothing to do."""
    if data.get("nothing_to_do"):
        return f": nothing to do: {data['nothing_to_do']}"
    if data.get("size"):
        rate = data["size"] / max(data.get("seconds") or 0, 1e-3) / 2**20
        return f": image {data.get('image', '?')}, {size(data['size'])} at {rate:.1f} MiB/s"
    if data.get("image") and data.get("name"):
        return f": image {data['name']} ({data['image']})"
    return ""


def step_details(result):
    """What of a step's result goes in its end event (pipeline.run_step): the image, its name
    and size, and nothing to do; never more (a result may be large, and events are public
    to the master's bus)."""
    if not isinstance(result, dict):
        return {}
    return {key: result[key] for key in ("image", "name", "size", "nothing_to_do")
            if isinstance(result.get(key), (str, int, float)) and not isinstance(result.get(key), bool)
            and result.get(key) != ""}


# ------------------------------------------------------------------------------ following builds
def builds_state(builds_dir):
    """{build id: (data, state)} of every build manifest in ``builds_dir``, state being
    "running", "over" or "abandoned" (its process is gone: pipeline/claims.py)."""
    import json
    from pathlib import Path

    from .pipeline import claims
    from .pipeline.manifest import Build

    states = {}
    for path in sorted(Path(builds_dir).glob("*.json")):
        if path.name.endswith(".packages.json"):
            continue
        try:
            build = Build(path, json.loads(path.read_text()))
            flavour = build.data["flavour"]
        except (OSError, ValueError, KeyError):
            continue
        if build.data.get("status") in OVER:
            state = "over"
        elif claims.abandoned(build, claims.holder(builds_dir, flavour)):
            state = "abandoned"
        else:
            state = "running"
        states[build.id] = (build, state)
    return states


def watch(events, builds_dir, say, build_id=None, wait=300, linger=3.0, timeout=None, recheck=5.0,
          clock=time.monotonic):
    """Follow builds through ``events`` (an iterator of ``(tag, data)`` from the master's bus,
    or None when nothing came for a moment), saying their lines, until every followed build
    ended: those that run now, and those that start meanwhile; with ``build_id``, that build
    only (its summary at once if it is over). When none runs, wait up to ``wait`` seconds for
    one to start; once all ended, ``linger`` seconds more for another (``salt-run ami.build``
    builds several flavours one after the other). The manifests in ``builds_dir`` are read
    again every ``recheck`` seconds: a build that ended unseen, or whose process died, stops
    being followed. Returns {build id: summary} of the builds that ended, and the ids of
    those still running at ``timeout``."""
    progress = Progress()
    followed, ended = set(), {}
    started = last_check = clock()
    last_end = None

    def end(build_id_, summary_data, tell):
        nonlocal last_end
        followed.discard(build_id_)
        ended[build_id_] = summary_data
        last_end = clock()
        if tell:
            say("\n".join(summary_lines(summary_data)))

    def check():
        for bid, (build, state) in builds_state(builds_dir).items():
            if bid in ended or build_id not in (None, bid):
                continue
            if bid not in followed and state == "running":
                followed.add(bid)
                step = next((s["name"] for s in reversed(build.data["steps"]) if s.get("status") == "running"), None)
                progress.flavours[bid] = build.data["flavour"]
                if step:
                    progress.steps[bid] = step
                say(progress.message(bid, build.data["flavour"], f"following build {bid}"
                                     + (f", at step {step}" if step else "")))
            elif state == "over" and (bid in followed or bid == build_id):
                end(bid, summary(build), True)
            elif state == "abandoned" and bid in followed:
                say(progress.message(bid, build.data["flavour"], f"build {bid} stopped: the process that ran "
                                     f"it is gone (salt-run ami.cleanup {bid} removes what it made)"))
                end(bid, summary(build), False)

    check()
    if not followed and not ended:
        say(progress.note(f"no build {'is running' if build_id is None else build_id + ' runs'}: waiting up to "
                          f"{duration(wait)} for {'one' if build_id is None else 'it'} to start"))
    if build_id is None or build_id not in ended:
        for item in events:
            now = clock()
            if item is not None:
                tag, data = item
                bid = data.get("build")
                if bid and build_id in (None, bid) and bid not in ended:
                    found = _step_event(tag, data)
                    if found:
                        followed.add(bid)
                    for line in progress.lines(tag, data):
                        say(line)
                    if found and found[1] == END:
                        end(bid, data, False)
            if now - last_check >= recheck:
                last_check = now
                check()
            if not followed:
                if (build_id and build_id in ended) or (ended and now - last_end >= linger) \
                        or (not ended and now - started >= wait):
                    break
            if timeout is not None and now - started >= timeout:
                break
    return {"ended": ended, "running": sorted(followed)}
