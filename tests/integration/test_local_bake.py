"""The local provider as a user runs it, with no master and no cloud: ``salt-call --local
ami.bake`` on this machine bakes a flavour on a loop device over a copy of the vanilla
Debian image (built here once and cached) and writes its outputs with a JSON manifest.

The tests open each output themselves: the SLS's effect is in it and nothing scrub removes
is; the AMI triplet's root filesystem is within 10% of the bytes it uses, and the triplet
boots under qemu (TCG, direct kernel boot) into userspace, where the flavour's program
prints the flavour's mark. A bake killed with SIGKILL half-way leaves a mount and a loop
device, which the next cleanup removes."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import RUN, local_minion, loops_below, mounted_image, salt_call_local
from saltami import audit, disk, vanilla
from saltami.cloud import glance
from saltami.pipeline import outputs
from saltami.pipeline.disk import grow

REPO = Path(__file__).resolve().parents[2]
MARK = f"local-baked-{RUN}"
SECRET = f"local-secret-{RUN}"
FLAVOUR = f"local-{RUN[-8:]}"
SLOW = f"local-slow-{RUN[-8:]}"
OUTPUTS = ["qcow2", "qcow2-zstd", "raw", "ami"]
BOOT_TIMEOUT = 240

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")


@pytest.fixture(scope="module")
def vanilla_image():
    """The vanilla Debian 12 image, from the machine's cache (built the first time: minutes)."""
    return vanilla.ensure()


def flavours(out):
    return {
        FLAVOUR: {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["amitest"],
                  "pillar": {"amitest": {"mark": MARK, "secret": SECRET}}, "outputs": OUTPUTS,
                  "output_dir": str(out), "timeouts": {"apply": 600},
                  # the outputs are booted here (test_local_validate.py), not their boot under qemu
                  "validate": False},
        # sleeps in the chroot: the bake is killed there
        SLOW: {"extends": FLAVOUR, "sls": ["amitestslow"]},
        # faults (test_local_fault_fails_the_step_and_leaves_nothing)
        **{f"{FLAVOUR}-{fault}": {"extends": FLAVOUR, **keys(out)} for fault, (_step, keys) in LOCAL_FAULTS.items()},
    }


# fault: (the step that fails, the flavour's keys that make it fail, given the output root)
LOCAL_FAULTS = {
    "sls-fails": ("provision", lambda out: {"sls": ["amitestbroken"]}),
    "scrub-fails": ("scrub", lambda out: {"sls": ["amitestnoscrub"]}),
    # random bytes: neither a partition table nor a filesystem
    "base-holds-no-filesystem": ("mount", lambda out: {"base": {"file": str(out.parent / "garbage.raw")}}),
    # a file where the output directory should be
    "output-dir-unwritable": ("outputs", lambda out: {"output_dir": str(out.parent / "not-a-directory")}),
}


@pytest.fixture(scope="module")
def minion(tmp_path_factory, vanilla_image):
    """A masterless minion with the local flavours in its pillar and no cloud."""
    root = tmp_path_factory.mktemp("local-minion")
    return {**local_minion(root, flavours(root / "images")), "out": root / "images"}


def salt_call(minion, *args, **kwargs):
    return salt_call_local(minion["config_dir"], *args, **kwargs)


@pytest.fixture(scope="module")
def baked(minion):
    t0 = time.monotonic()
    result = salt_call(minion, "ami.bake", f"flavour={FLAVOUR}")
    assert result["status"] == "done", result
    # salt-call says where the outputs are
    directory = Path(result["image"]["directory"])
    assert sorted(result["image"]["files"]) == sorted(OUTPUTS)
    manifest = json.loads((directory / "manifest.json").read_text())
    print(f"local bake: {time.monotonic() - t0:.0f}s", {s["name"]: s.get("seconds") for s in result["steps"]})
    return {"result": result, "directory": directory, "manifest": manifest}


def output_file(baked, kind, part="image"):
    return baked["directory"] / baked["manifest"]["outputs"][kind]["files"][part]["file"]


def test_manifest_lists_every_output_with_its_hash(baked):
    manifest = baked["manifest"]
    assert sorted(manifest["outputs"]) == sorted(OUTPUTS)
    assert manifest["properties"]["ami_sls"] == "amitest"
    assert manifest["base"]["id"] == "vanilla:debian-12"
    assert manifest["outputs"]["qcow2"]["compression"] == "zlib"
    assert manifest["outputs"]["qcow2-zstd"]["compression"] == "zstd"
    for kind, entry in manifest["outputs"].items():
        for info in entry["files"].values():
            path = baked["directory"] / info["file"]
            assert os.path.getsize(path) == info["size"]
            # the raw disk's 2 GiB take long to hash on these machines; its size is checked
            assert kind == "raw" or subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                                  check=True).stdout.split()[0] == info["sha256"]
    for kind, compression in (("qcow2", "zlib"), ("qcow2-zstd", "zstd")):
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(output_file(baked, kind))],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["format"] == "qcow2" and info["format-specific"]["data"]["compression-type"] == compression
        assert info["virtual-size"] == manifest["disk"]["size"]
    # nothing of the bake stays on the machine but its outputs
    builds = baked["result"]["manifest"].rsplit("/", 1)[0]
    assert not [p for p in os.listdir(builds) if p.endswith((".disk", ".root"))]
    assert not disk.mounts_below(builds) and not loops_below(builds)


@pytest.mark.parametrize("kind", OUTPUTS)
def test_output_holds_the_sls_and_nothing_scrubbed(baked, kind, tmp_path):
    image = output_file(baked, kind, "root" if kind == "ami" else "image")
    with mounted_image(image, tmp_path) as root:
        assert (root / "etc/ami-test/flavour").read_text().strip() == MARK
        assert "\namitest:" in "\n" + (root / "etc/passwd").read_text()
        assert os.access(root / "usr/local/bin/amitest-hello", os.X_OK)
        assert (root / "boot/grub/grub.cfg").exists() or kind == "ami"
        # what scrub removes, and what the chroot bake must never leave
        assert not list((root / "etc/ssh").glob("ssh_host_*"))
        assert not (root / "etc/machine-id").exists() or (root / "etc/machine-id").read_text() == ""
        assert not (root / "usr/sbin/policy-rc.d").exists()
        assert not list(root.glob("etc/*.salt-ami-*")) and not list(root.glob("usr/sbin/*.salt-ami-*"))
        # the bake's salt, config, pillar and cache were on a tmpfs over /run: the image's
        # /run holds only the base's empty directories
        assert not (root / "run/salt-ami").exists()
        assert not [p for p in (root / "run").rglob("*") if not p.is_dir()]
        assert not (root / "root/.bash_history").exists()
        assert not list((root / "var/lib/apt/lists").glob("*_Packages"))
    found = audit.audit(str(output_file(baked, kind, "root" if kind == "ami" else "image")),
                        secrets={"pillar secret": SECRET},
                        **({"kernel": str(output_file(baked, "ami", "kernel")),
                            "ramdisk": str(output_file(baked, "ami", "ramdisk"))} if kind == "ami" else {}))
    assert found["findings"] == [], found["findings"]


def test_triplet_root_is_its_used_bytes_with_room_for_a_first_boot(baked, tmp_path):
    """No bigger than the tree it holds and the room its first boot writes in (cloud-init,
    logs, host keys: a root with no free block or inode never finishes booting)."""
    root_img = output_file(baked, "ami", "root")
    with mounted_image(root_img, tmp_path) as root:
        used, _ = disk.filesystem_usage(root)
        st = os.statvfs(root)
    # free to root (the first boot's writers are root's): the reserved blocks count
    size, free = os.path.getsize(root_img), st.f_bfree * st.f_frsize
    room = max(used * outputs.AMI_HEADROOM, outputs.AMI_HEADROOM_MIN)
    print(f"triplet root: {size >> 20} MiB for {used >> 20} MiB used ({size / used:.3f}), "
          f"{free >> 20} MiB and {st.f_ffree} inodes free")
    assert free >= 0.8 * outputs.AMI_HEADROOM_MIN and st.f_ffree >= 1000
    assert used <= size <= (used + room) * 1.10
    # the tree it holds is the whole image's: same bytes used within the journal's size
    assert abs(used - baked["manifest"]["disk"]["used_bytes"]) < 0.1 * used


def test_triplet_boots_into_userspace_and_shows_the_mark(baked, tmp_path):
    """Direct kernel boot under TCG: the initrd finds the root by its label and hands over to
    the flavour's own program as init, which prints the mark; the kernel then panics (init
    exited) and qemu, told not to reboot, exits."""
    entry = baked["manifest"]["outputs"]["ami"]
    assert "root=LABEL=rootfs" in entry["command_line"]
    console = tmp_path / "console.log"
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "2", "-m", "1024",
           "-nographic", "-no-reboot", "-snapshot", "-nodefaults", "-serial", f"file:{console}",
           "-kernel", str(output_file(baked, "ami", "kernel")), "-initrd", str(output_file(baked, "ami", "ramdisk")),
           "-drive", f"file={output_file(baked, 'ami', 'root')},format=raw,if=virtio",
           "-append", f"{entry['command_line']} panic=-1 init=/usr/local/bin/amitest-hello"]
    t0 = time.monotonic()
    qemu = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        qemu.wait(timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if qemu.poll() is None:
            os.kill(qemu.pid, signal.SIGKILL)
            qemu.wait()
    log = console.read_text(errors="replace")
    print(f"qemu boot: {time.monotonic() - t0:.0f}s")
    lines = [line.strip() for line in log.splitlines()]
    assert MARK in lines, log[-3000:]
    # userspace: the mark came from the image's program, after the root was mounted
    assert "Attempted to kill init" in log, log[-3000:]


def _running_step(builds, flavour_name):
    for path in Path(builds).glob(f"{flavour_name}-*.json"):
        data = json.loads(path.read_text())
        running = [s["name"] for s in data["steps"] if s.get("status") == "running"]
        if running:
            return data, running[0]
    return None, None


def test_a_second_bake_of_the_same_inputs_finds_the_first(minion, baked):
    again = salt_call(minion, "ami.bake", f"flavour={FLAVOUR}")
    assert again["nothing_to_do"] and again["image"] == {"directory": str(baked["directory"])}
    assert [s["name"] for s in again["steps"]] == ["resolve"]


def test_killed_bake_leaves_nothing_after_the_next_cleanup(minion, vanilla_image):
    builds = Path(minion["cachedir"]) / "ami" / "builds"
    proc = salt_call(minion, "ami.bake", f"flavour={SLOW}", popen=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            data, step = _running_step(builds, SLOW)
            if step == "provision" or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(1)
        assert step == "provision", (data, proc.poll())
        time.sleep(5)  # inside the chroot's salt-call
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    work = builds / f"{data['id']}.disk"
    # what the killed bake left
    assert disk.mounts_below(builds) and loops_below(builds) and work.exists()

    cleaned = salt_call(minion, "ami.bake_cleanup")
    assert [c["build"] for c in cleaned] == [data["id"]], cleaned
    assert not disk.mounts_below(builds)
    assert not loops_below(builds) and not work.exists()
    assert not Path(f"{builds / data['id']}.root").exists()
    assert not list(minion["out"].glob(f"{data['id']}*"))


def test_with_a_cloud_the_outputs_go_to_glance(tmp_path, cloud_profile, module_clients, vanilla_image):
    """The same bake with ami:cloud set: the first output is promoted under the flavour's
    name, the triplet is aki, ari and ami linked by kernel_id and ramdisk_id, and no local
    output stays."""
    name = f"local-cloud-{RUN[-8:]}"
    flavour = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["amitest"],
               "pillar": {"amitest": {"mark": MARK}}, "outputs": ["qcow2-zstd", "ami"],
               "output_dir": str(tmp_path / "images"), "image_name": "{flavour}-{build}", "validate": False}
    minion = local_minion(tmp_path / "minion", {name: flavour}, cloud=cloud_profile)
    ids = []
    try:
        result = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={name}")
        assert result["status"] == "done", result
        build = json.loads(Path(result["manifest"]).read_text())
        uploaded = build["outputs"]["uploaded"]
        ids = [i for parts in uploaded.values() for i in parts.values()]
        primary = glance.show(module_clients, uploaded["qcow2-zstd"]["image"])
        assert primary["name"] == result["image"]["name"] and primary["ami_status"] == "promoted"
        assert primary["disk_format"] == "qcow2" and primary["ami_fingerprint"] == build["fingerprint"]
        root = glance.show(module_clients, uploaded["ami"]["image"])
        assert root["name"] == f"{primary['name']}-ami" and root["disk_format"] == "ami"
        assert root["kernel_id"] == uploaded["ami"]["kernel"] and root["ramdisk_id"] == uploaded["ami"]["ramdisk"]
        assert root["ami_part_of"] == primary["id"] and root["ami_status"] == "part"
        assert glance.show(module_clients, root["kernel_id"])["disk_format"] == "aki"
        assert glance.show(module_clients, root["ramdisk_id"])["disk_format"] == "ari"
        assert not list((tmp_path / "images").glob("*/*"))
    finally:
        for image_id in ids:
            glance.delete(module_clients, image_id, force=True)


@pytest.mark.parametrize("partitioned", [True, False])
def test_volume_size_grows_the_disk_and_its_root_filesystem(tmp_path, partitioned):
    image = tmp_path / "small.raw"
    image.write_bytes(b"")
    os.truncate(image, 64 << 20)
    if partitioned:
        disk.run("sfdisk", "--quiet", image, input="label: dos\nstart=2048, type=83\n")
        device = disk.attach_loop(image)
        try:
            disk.run("mkfs.ext4", "-q", "-L", "rootfs", disk.root_filesystem(device)[0])
        finally:
            disk.detach_loops_of(image)
    else:
        disk.run("mkfs.ext4", "-q", "-L", "rootfs", image)
    grow(str(image), 160 << 20)
    assert os.path.getsize(image) == 160 << 20
    with mounted_image(image, tmp_path) as root:
        _, total = disk.filesystem_usage(root)
    assert total > 140 << 20
    assert not disk.loops_of(image)


@pytest.mark.parametrize("fault", list(LOCAL_FAULTS))
def test_local_fault_fails_the_step_and_leaves_nothing(minion, fault):
    step = LOCAL_FAULTS[fault][0]
    root = Path(minion["config_dir"])
    with open(root / "garbage.raw", "wb") as f:
        f.write(os.urandom(1 << 20) * 64)
    (root / "not-a-directory").write_text("in the way\n")
    builds = Path(minion["cachedir"]) / "ami" / "builds"
    before = sorted(os.listdir(minion["out"])) if minion["out"].exists() else []
    proc = salt_call(minion, "ami.bake", f"flavour={FLAVOUR}-{fault}", popen=True)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode != 0, out
    assert f"step {step} failed" in err.decode(), err.decode()[-2000:]
    # nothing of the bake is left: no mount, loop device, work file or output
    assert not disk.mounts_below(builds) and not loops_below(builds)
    assert not [p for p in os.listdir(builds) if p.endswith((".disk", ".root"))]
    assert (sorted(os.listdir(minion["out"])) if minion["out"].exists() else []) == before
