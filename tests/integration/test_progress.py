"""Progress a person can follow, read from what the commands print as a user runs them in a
terminal (no ``--out``):

- ``salt-run ami.build flavour=NAME`` prints each step as it starts and ends with its
  duration, the snapshot's bytes and rate, and at the end a summary (image name and id,
  size, the duration of each step, what was pruned); with ``--out=json`` its output stays
  one JSON document;
- ``salt-run ami.watch``, started before the build, follows it from the master's bus in the
  same form, and follows an orchestration of two flavours side by side (a line per flavour
  and step), ending with each build's summary; ``ami.watch BUILD`` of a build that is over
  prints its summary at once;
- ``salt-call --local ami.bake`` prints the same on the console (stderr) as the bake goes,
  the upload to Glance with its bytes and rate too; a bad flavour prints its errors and
  exits 1 without the function's usage text.
"""
import json
import os
import re
import subprocess
import threading
import time

import pytest

from helpers import RUN, RUN_FLAVOUR, local_minion
from saltami import provenance
from saltami.cloud import glance

FLAVOUR = f"amitest-prog-{RUN[-8:]}"
DEFINITION = {"extends": "amitest"}
SIDE = "amitest-p4"
STEPS = ["resolve", "boot", "provision", "scrub", "snapshot", "release", "validate", "promote", "prune"]
LINE = re.compile(r"^\d\d:\d\d:\d\d \[(?P<flavour>[^\]]+)\] (?:(?P<step>\w+): )?(?P<text>.*)$")


def human(cli, *args, **kwargs):
    """The command line a person types: salt-factories' without its ``--out=json``."""
    return [a for a in cli.cmdline(*args, **kwargs) if not a.startswith(("--out=", "--out-indent="))]


class Running:
    """A command running in the background whose stdout lines are collected as they come (and
    its stderr, apart): each pipe has one reader, a thread of its own."""

    def __init__(self, cmd, **kwargs):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        self.lines, self.times, self.stderr = [], [], []
        self.readers = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=lambda: self.stderr.append(self.proc.stderr.read()), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.times.append(time.monotonic())

    def wait_for(self, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            assert self.proc.poll() is None, "\n".join(self.lines) + "".join(self.stderr)
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))

    def finish(self, timeout=900):
        # not communicate(): it would read stdout too, and take lines from the reader
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return {"rc": self.proc.returncode, "lines": self.lines, "times": self.times, "stderr": "".join(self.stderr),
                "stdout": "\n".join(self.lines)}


def step_lines(lines, flavour):
    """[(step, text)] of the progress lines of ``flavour``, in order."""
    found = [LINE.match(line) for line in lines]
    return [(m["step"], m["text"]) for m in found if m and m["flavour"] == flavour and m["step"]]


def summary_of(lines, flavour):
    """The summary a build's end prints: its first line and those indented under it."""
    for i, line in enumerate(lines):
        if line.startswith(f"{flavour}: ") and (" built in " in line or "nothing to do" in line or "FAILED" in line):
            block = [line]
            for more in lines[i + 1:]:
                if not more.startswith("  "):
                    break
                block.append(more)
            return block
    raise AssertionError(f"no summary of {flavour} in:\n" + "\n".join(lines))


def steps_of(flavour):
    """The steps a build of the flavour runs: RUN_FLAVOUR does not validate (conftest.py)."""
    return [s for s in STEPS if s != "validate" or flavour != RUN_FLAVOUR]


def assert_every_step_started_and_ended(lines, flavour):
    said = step_lines(lines, flavour)
    for step in steps_of(flavour):
        started = said.index((step, "started"))
        done = next(i for i, (s, text) in enumerate(said) if s == step and text.startswith("done in "))
        assert started < done, (step, said)
    # in the order they ran
    order = [s for s, text in said if text == "started"]
    assert order == steps_of(flavour), order
    return said


def assert_summary_names_the_image(block, image):
    assert f"image: {image['name']} ({image['id']}), " in block[1], block
    assert re.search(r", \d+\.\d (MiB|GiB)$", block[1]), block
    steps = block[2]
    assert steps.startswith("  steps: ") and all(re.search(rf"\b{s} \d", steps)
                                                 for s in steps_of(image["ami_flavour"])), steps
    assert block[3].startswith("  pruned: "), block


@pytest.fixture(scope="module")
def scripted(salt_run, module_clients):
    """``salt-run ami.watch`` started first, then ``salt-run ami.build`` of a flavour never built."""
    provenance.prune(module_clients, FLAVOUR, keep=0, force=True)
    watch = Running(human(salt_run, "ami.watch", wait=600))
    watch.wait_for("no build is running: waiting")
    build = Running(human(salt_run, "ami.build", flavour=FLAVOUR, definition=DEFINITION))
    try:
        built = build.finish()
        watched = watch.finish(timeout=120)
        images = provenance.find_promoted(module_clients, FLAVOUR)
        yield {"build": built, "watch": watched, "image": images[0] if images else None}
    finally:
        for proc in (build.proc, watch.proc):
            if proc.poll() is None:
                proc.kill()
        provenance.prune(module_clients, FLAVOUR, keep=0, force=True)


def test_salt_run_ami_build_prints_each_step_as_it_starts_and_ends(scripted):
    built = scripted["build"]
    assert built["rc"] == 0, built["stdout"] + built["stderr"]
    said = assert_every_step_started_and_ended(built["lines"], FLAVOUR)
    # each with its duration
    assert all(re.fullmatch(r"done in \d+(\.\d)?s|done in \d+m \d\ds", text.split(":")[0])
               for _s, text in said if text.startswith("done"))
    # the snapshot's bytes and rate
    snapshot = next(text for s, text in said if s == "snapshot" and text.startswith("done"))
    image = scripted["image"]
    assert re.search(rf": image {image['id']}, \d+\.\d (MiB|GiB) at \d+\.\d MiB/s$", snapshot), snapshot


def test_the_lines_come_as_the_build_goes(scripted):
    """Printed as they happened, not all at the end: the first step's line came long before
    the last's."""
    built = scripted["build"]
    first = next(i for i, line in enumerate(built["lines"]) if line.endswith(f"[{FLAVOUR}] resolve: started"))
    last = next(i for i, line in enumerate(built["lines"]) if line.endswith(f"[{FLAVOUR}] prune: started"))
    assert built["times"][last] - built["times"][first] > 20


def test_the_build_ends_with_a_summary(scripted):
    built, image = scripted["build"], scripted["image"]
    block = summary_of(built["lines"], FLAVOUR)
    assert re.match(rf"{FLAVOUR}: built in (\d+m \d\ds|\d+\.\ds) \(build {image['ami_build']}\)$", block[0]), block
    assert_summary_names_the_image(block, image)
    assert block[3] == "  pruned: 0 older images", block


def test_salt_run_ami_watch_follows_a_build_started_meanwhile(scripted):
    watched, image = scripted["watch"], scripted["image"]
    assert watched["rc"] == 0, watched["stdout"] + watched["stderr"]
    assert_every_step_started_and_ended(watched["lines"], FLAVOUR)
    # the build's own lines, not other builds'
    assert {m["flavour"] for m in map(LINE.match, watched["lines"]) if m} == {FLAVOUR}
    block = summary_of(watched["lines"], FLAVOUR)
    assert block == summary_of(scripted["build"]["lines"], FLAVOUR)
    assert_summary_names_the_image(block, image)


def test_watch_of_a_build_that_is_over_prints_its_summary(scripted, salt_run):
    image = scripted["image"]
    done = subprocess.run(human(salt_run, "ami.watch", image["ami_build"]), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert summary_of(lines, FLAVOUR)[:2] == summary_of(scripted["build"]["lines"], FLAVOUR)[:2]
    missing = subprocess.run(human(salt_run, "ami.watch", f"{FLAVOUR}-20000101-000000-000000", wait=2),
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and f"no build {FLAVOUR}-20000101-000000-000000 ran" in missing.stdout, \
        missing.stdout


def test_with_out_json_the_output_stays_one_document(scripted, salt_run):
    """A build with nothing to do (its image has the fingerprint): without --out it says so;
    with --out=json it prints its summary alone, which a script parses."""
    assert scripted["image"] is not None
    again = subprocess.run(human(salt_run, "ami.build", flavour=FLAVOUR, definition=DEFINITION),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    block = summary_of(again.stdout.splitlines(), FLAVOUR)
    assert "nothing to do" in block[0] and scripted["image"]["id"] in block[0], block
    scripted_json = subprocess.run(salt_run.cmdline("ami.build", flavour=FLAVOUR, definition=DEFINITION),
                                   capture_output=True, text=True, timeout=300)
    data = json.loads(scripted_json.stdout)
    assert data["status"] == "done" and data["nothing_to_do"] and data["image"]["id"] == scripted["image"]["id"]


@pytest.fixture(scope="module")
def orchestrated(salt_run, module_clients, scripted):
    """``salt-run ami.watch`` started first, then an orchestration of two flavours side by side."""
    flavours = [RUN_FLAVOUR, SIDE]
    for name in flavours:
        provenance.prune(module_clients, name, keep=0, force=True)
    watch = Running(human(salt_run, "ami.watch", wait=600))
    watch.wait_for("no build is running: waiting")
    orch = Running(human(salt_run, "state.orch", "ami.build", pillar={"ami": {"flavour": flavours}}))
    try:
        result = orch.finish(timeout=1800)
        watched = watch.finish(timeout=120)
        yield {"orch": result, "watch": watched,
               "images": {name: provenance.find_promoted(module_clients, name)[0] for name in flavours}}
    finally:
        for proc in (orch.proc, watch.proc):
            if proc.poll() is None:
                proc.kill()
        for name in flavours:
            provenance.prune(module_clients, name, keep=0, force=True)


def test_watch_follows_an_orchestration_a_line_per_flavour_and_step(orchestrated):
    result, watched = orchestrated["orch"], orchestrated["watch"]
    assert result["rc"] == 0, result["stdout"][-3000:] + result["stderr"]
    assert watched["rc"] == 0, watched["stdout"] + watched["stderr"]
    for name, image in orchestrated["images"].items():
        assert_every_step_started_and_ended(watched["lines"], name)
        block = summary_of(watched["lines"], name)
        assert block[0].startswith(f"{name}: built in ") and image["ami_build"] in block[0], block
        assert_summary_names_the_image(block, image)
    # side by side: the other flavour's steps ran while the first was still building
    flavours = [m["flavour"] for m in map(LINE.match, watched["lines"]) if m and m["step"]]
    first_end = max(i for i, f in enumerate(flavours) if f == RUN_FLAVOUR)
    assert SIDE in flavours[:first_end]


# ----------------------------------------------------------------------------- the console
@pytest.fixture(scope="module")
def local(tmp_path_factory, base_image, cloud_profile):
    """A masterless minion with a local flavour over the base test image (a file here),
    published to the local cloud, and a bad flavour."""
    root = tmp_path_factory.mktemp("progress-minion")
    name = f"local-prog-{RUN[-8:]}"
    flavours = {
        name: {"strategy": "local", "base": {"file": str(base_image["path"])}, "sls": ["amitest"],
               "outputs": ["qcow2-zstd"], "output_dir": str(root / "images"), "image_name": "{flavour}-{build}",
               "timeouts": {"apply": 600}, "validate": False},
        f"{name}-bad": {"strategy": "local", "base": {"file": str(base_image["path"])}, "sls": ["amitest"],
                        "outputs": ["qcow2-bzip"], "keep": "two"},
    }
    return {**local_minion(root, flavours, cloud=cloud_profile), "name": name}


def salt_call(local, *args):
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cmd = [os.path.join(os.path.dirname(sys.executable), "salt-call"), "--local", "-c", str(local["config_dir"]),
           *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)


def test_salt_call_ami_bake_prints_its_progress_on_the_console(local, module_clients):
    name = local["name"]
    # as the quick start runs it, its result as YAML on stdout
    baked = salt_call(local, "--out=yaml", "ami.bake", f"flavour={name}")
    image = None
    try:
        assert baked.returncode == 0, baked.stdout + baked.stderr[-3000:]
        image = provenance.find_promoted(module_clients, name)[0]
        lines = baked.stderr.splitlines()
        said = step_lines(lines, name)
        steps = ["resolve", "disk", "loop", "mount", "provision", "scrub", "unmount", "release_loop", "outputs",
                 "release_disk", "publish"]
        assert [s for s, text in said if text == "started"] == steps, said
        assert all(any(s == step and text.startswith("done in ") for s, text in said) for step in steps), said
        # the upload to Glance, with its bytes and rate, in the publish step
        uploads = [text for s, text in said if s == "publish" and " of " in text]
        assert uploads and re.search(r"-qcow2-zstd: (\d+\.\d \w+) of \1 \(100%\), \d+\.\d MiB/s$", uploads[-1]), said
        block = summary_of(lines, name)
        assert f"image: {image['name']} ({image['id']}), {glance_size(image)}" == block[1].strip(), block
        assert "  steps: resolve " in block[2] and " publish " in block[2]
        # stdout holds the result alone, as --out asked
        assert not [line for line in baked.stdout.splitlines() if LINE.match(line)], baked.stdout
        assert f"name: {image['name']}" in baked.stdout
    finally:
        if image:
            glance.delete(module_clients, image["id"], force=True)


def glance_size(image):
    from saltami import report

    return report.size(image["size"])


def test_a_bad_flavour_prints_its_errors_and_exits_1_without_the_usage(local):
    bad = salt_call(local, "ami.bake", f"flavour={local['name']}-bad")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = bad.stdout + bad.stderr
    assert "qcow2-bzip" in out and "'two'" in out, out
    # not the function's usage, which Salt prints after invalid arguments
    assert "Usage" not in out and "CLI Example" not in out and "Passed invalid arguments" not in out, out
