"""The local provider's validation as a user meets it: ``salt-call --local ami.bake`` of a flavour
whose first output is booted under qemu here (a real guest: KVM where it runs guests, else TCG;
cloud-init from a NoCloud seed) and tested before it is published. Two boots, one per test:

- a flavour whose test passes, with the AMI triplet first (booted by its kernel and initrd):
  the bake succeeds, its manifest's validate step says which output booted, under what and that
  cloud-init was done, and the output is as the outputs step wrote it;
- a flavour whose test fails, with a qcow2 first (booted from its disk by GRUB): the bake fails
  at step validate saying the test's exit code, and nothing of it is left: no output directory,
  qemu, mount, loop device or work file.
"""
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers import RUN, local_minion, loops_below, qemus_below, salt_call_local
from saltami import disk, vanilla

MARK = f"validated-{RUN}"
PASSES = f"validates-{RUN[-8:]}"
FAILS = f"fails-validation-{RUN[-8:]}"
NEVER = "test -e /etc/never"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")


@pytest.fixture(scope="module")
def minion(tmp_path_factory):
    """A masterless minion, no cloud, with a flavour whose test passes and one whose test fails."""
    vanilla.ensure()
    root = tmp_path_factory.mktemp("validate-minion")
    common = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["amitest"],
              "pillar": {"amitest": {"mark": MARK}}, "output_dir": str(root / "images"),
              "timeouts": {"apply": 600, "validate": 900}}
    flavours = {
        # what the SLS made, seen from the booted guest
        PASSES: {**common, "outputs": ["ami", "qcow2-zstd"],
                 "test": {"cmd": f'test "$(amitest-hello)" = {MARK} && id amitest'}},
        FAILS: {**common, "outputs": ["qcow2-zstd"], "test": {"cmd": NEVER}},
    }
    made = local_minion(root, flavours)
    return {**made, "out": root / "images", "builds": Path(made["cachedir"]) / "ami" / "builds"}


def bake(minion, flavour_name):
    """``salt-call --local ami.bake`` as the quick start runs it: (exit code, stdout, stderr)."""
    proc = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={flavour_name}", popen=True)
    try:
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out.decode(), err.decode()


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def nothing_left(minion):
    builds = minion["builds"]
    assert not qemus_below(builds)
    assert not disk.mounts_below(builds) and not loops_below(builds)
    assert not [p for p in os.listdir(builds) if p.endswith((".disk", ".root", ".validate"))]


def progress(err, flavour_name):
    """The bake's progress lines on stderr for the step validate: their text after the step."""
    return [line.split(" validate: ", 1)[1] for line in err.splitlines()
            if f"[{flavour_name}] validate: " in line]


def test_an_output_whose_test_passes_is_validated_then_published(minion):
    t0 = time.monotonic()
    code, out, err = bake(minion, PASSES)
    assert code == 0, err[-3000:]
    result = json.loads(out)["local"]
    build = json.loads(Path(result["manifest"]).read_text())
    records = {s["name"]: s for s in build["steps"]}
    print(f"bake with validation: {time.monotonic() - t0:.0f}s",
          {name: s.get("seconds") for name, s in records.items()}, records["validate"])
    assert [s["name"] for s in build["steps"]][-4:] == ["outputs", "release_disk", "validate", "publish"]
    validate = records["validate"]
    assert validate["status"] == "done" and validate["seconds"] > 0
    assert validate["output"] == "ami" and validate["cloud_init"] == "done" and validate["accel"] in ("kvm", "tcg")
    # salt-call's result says it too
    assert {k: v for k, v in result["steps"][-2].items() if k != "seconds"} == {
        "name": "validate", "status": "done", "output": "ami", "accel": validate["accel"], "cloud_init": "done"}
    # salt-call said so as it went
    said = progress(err, PASSES)
    assert said[0] == "started" and said[-1].startswith("done in "), said
    assert any(text.startswith(f"booting ami ({PASSES}-") and f"under {validate['accel'].upper()}" in text
               for text in said), said
    # the guest wrote to an overlay: the outputs are as the outputs step wrote them
    directory = Path(result["image"]["directory"])
    manifest = json.loads((directory / "manifest.json").read_text())
    for part, info in manifest["outputs"]["ami"]["files"].items():
        assert sha256(directory / info["file"]) == info["sha256"], part
    assert not [kind for kind, parts in build["resources"].items() if parts]
    nothing_left(minion)


def test_an_output_whose_test_fails_fails_the_bake_and_leaves_nothing(minion):
    code, out, err = bake(minion, FAILS)
    assert code != 0, out
    assert "step validate failed: validation of qcow2-zstd (" in err, err[-3000:]
    assert f"the test `{NEVER}` exited 1" in err, err[-3000:]
    # with the console's last lines
    assert "the console's last lines (" in err, err[-3000:]
    print(err[err.index("step validate failed"):][:1500])
    [manifest] = [json.loads(p.read_text()) for p in minion["builds"].glob(f"{FAILS}-*.json")
                  if not p.name.endswith(".packages.json")]
    assert manifest["status"] == "cleaned" and manifest["failed_step"] == "validate"
    record = manifest["steps"][-1]
    assert record["name"] == "validate" and record["status"] == "failed" and "exited 1" in record["error"]
    assert not [kind for kind, parts in manifest["resources"].items() if parts]
    assert not list(minion["out"].glob(f"{manifest['id']}*"))
    nothing_left(minion)
