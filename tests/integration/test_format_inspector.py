"""Images from elsewhere pass oslo.utils' format inspector (the safety check nova and Glance
make) before anything is attached, converted or mounted, as a user meets it: ``salt-call
--local ami.bake`` of a local flavour whose base is ``{file: PATH}``, and ``salt-call --local
ami.audit``. A qcow2 whose backing file is a file of this machine, a qcow2 with an external
data file, and files whose content is not the format they claim are each refused with a
message naming the file and why, and nothing is made for them: no loop device, no disk
copy, no output, no mount."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RUN, local_minion, loops_below

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")

SECRET = f"a file of this machine, {RUN}"
# image file name -> (how it is made, what the refusal says)
BAD = {
    "backed.qcow2": (["-f", "qcow2", "-b", "{secret}", "-F", "raw"],
                     ["failed the format safety check", "backing_file: Image has a backing file"]),
    "datafile.qcow2": (["-f", "qcow2", "-o", "data_file={dir}/data.bin"],
                       ["failed the format safety check", "data_file: Image has data_file set"]),
    # a qcow2 under a raw name, and the other way round
    "qcow2-inside.raw": (["-f", "qcow2"], ["claims to be raw but its content is qcow2"]),
    "raw-inside.qcow2": (["-f", "raw"], ["claims to be qcow2 but its content is raw"]),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-images")
    secret = directory / "secret"
    secret.write_text(SECRET + "\n")
    made = {}
    for name, (args, _words) in BAD.items():
        args = [a.format(secret=secret, dir=directory) for a in args]
        subprocess.run(["qemu-img", "create", "-q", *args, str(directory / name), "64M"], check=True)
        made[name] = directory / name
    return made


@pytest.fixture(scope="module")
def minion(tmp_path_factory, images):
    """A masterless minion, no cloud, with one local flavour per bad base image."""
    root = tmp_path_factory.mktemp("inspector-minion")
    flavours = {flavour(name): {"strategy": "local", "base": {"file": str(path)}, "sls": ["amitest"],
                                "outputs": ["raw"], "output_dir": str(root / "images"), "validate": False}
                for name, path in images.items()}
    return {**local_minion(root, flavours), "root": root}


def flavour(image_name):
    return f"inspect-{image_name.replace('.', '-')}-{RUN[-8:]}"


def salt_call(minion, *args, tmpdir=None):
    """salt-call --local in the minion, failing or not (helpers.salt_call_local asserts it
    does not), with ``tmpdir`` as its temporary directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    if tmpdir:
        env["TMPDIR"] = str(tmpdir)
    cmd = [os.path.join(os.path.dirname(sys.executable), "salt-call"), "--local", "-c", str(minion["config_dir"]),
           "--out=json", "--log-level=quiet", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", list(BAD))
def test_a_local_bake_refuses_the_base_before_making_anything(name, images, minion):
    r = salt_call(minion, "ami.bake", f"flavour={flavour(name)}")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"step resolve failed: base image file {images[name]}" in out
    for words in BAD[name][1]:
        assert words in out, out
    assert SECRET not in out
    # nothing made: the build stopped in its first step with no resource, no disk copy, no
    # output, no loop device over anything of the minion's or the image's
    builds = sorted(Path(minion["cachedir"], "ami", "builds").glob(f"{flavour(name)}-*.json"))
    manifests = [json.loads(p.read_text()) for p in builds if not p.name.endswith(".packages.json")]
    assert [(m["failed_step"], [s["name"] for s in m["steps"]]) for m in manifests] == [("resolve", ["resolve"])]
    assert not any(v for m in manifests for v in m["resources"].values())
    assert list(Path(minion["cachedir"], "ami", "builds").glob("*.disk")) == []
    assert not (minion["root"] / "images").exists()
    assert loops_below(str(minion["root"])) == [] and loops_below(str(images[name].parent)) == []


@pytest.mark.parametrize("name,disk_format", [("backed.qcow2", None), ("datafile.qcow2", None),
                                              ("qcow2-inside.raw", "raw"), ("raw-inside.qcow2", "qcow2")])
def test_the_audit_refuses_the_image_before_opening_it(name, disk_format, images, minion, tmp_path):
    args = [f"disk_format={disk_format}"] if disk_format else []
    r = salt_call(minion, "ami.audit", str(images[name]), *args, tmpdir=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"image {images[name]}" in out
    for words in BAD[name][1]:
        assert words in out, out
    assert SECRET not in out and "findings" not in out
    # opening it would have made a directory there (a qcow2's raw copy, the mount points)
    # and a loop device over the image or that copy
    assert list(tmp_path.iterdir()) == []
    assert loops_below(str(images[name].parent)) == [] and loops_below(str(tmp_path)) == []
