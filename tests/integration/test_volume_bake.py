"""The volume bake as a user runs it inside a builder VM: ``salt-call --local ami.bake`` in an
instance of the local cloud (the test plays the builder), with flavours from the builder's
own pillar and no master. The image it leaves in Glance is downloaded and opened; a bake
killed mid-way is cleaned up by the next ``ami.bake_cleanup``."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from helpers import REPO, mounted_image, salt_call_inside
from localcloud.faults import injected
from saltami import audit, disk, provenance
from saltami.cloud import glance
from saltami.cloud.wait import wait_for

SECRET = f"volume-bake-secret-{uuid.uuid4().hex[:8]}"
FLAVOUR = f"amitest-volume-{uuid.uuid4().hex[:6]}"
SLOW = f"{FLAVOUR}-slow"
BROKEN = f"{FLAVOUR}-broken"
NOSCRUB = f"{FLAVOUR}-noscrub"
# never baked whole, so that each fault bake runs every step (FLAVOUR's image would be found)
FAULTY = f"{FLAVOUR}-faulty"


@pytest.fixture(scope="module")
def builder(builder_vm, base_image, localcloud):
    """The builder VM with a masterless minion config: the test formulas in its file_roots,
    the flavours in its pillar, the demo cloud as ami:cloud."""
    clients, server, root = builder_vm
    for formula in ("amitest", "amitestslow", "amitestbroken", "amitestnoscrub"):
        source = REPO / "salt" / "formulas" / formula
        if not source.exists():
            source = REPO / "tests" / "formulas" / formula
        shutil.copytree(source, root / "srv" / "salt" / formula, dirs_exist_ok=True)
    flavour = {"base": {"name": base_image["name"]}, "sls": ["amitest"], "strategy": "volume",
               "volume_size": 1, "pillar": {"amitest": {"mark": "baked-on-a-volume", "secret": SECRET}},
               "properties": {"os_distro": "debian", "os_version": "12"}, "keep": 1,
               "timeouts": {"boot": 120, "apply": 300, "snapshot": 300}}
    flavours = {FLAVOUR: flavour, **{name: {"extends": FLAVOUR, "sls": [sls]} for name, sls in (
        (SLOW, "amitestslow"), (BROKEN, "amitestbroken"), (NOSCRUB, "amitestnoscrub"))},
        FAULTY: {"extends": FLAVOUR, "pillar": {"amitest": {"mark": "never-baked"}}}}
    (root / "srv" / "pillar").mkdir(parents=True, exist_ok=True)
    (root / "srv" / "pillar" / "top.sls").write_text("base: {'*': [ami]}\n")
    (root / "srv" / "pillar" / "ami.sls").write_text(json.dumps({"ami": {"cloud": "localcloud",
                                                                         "flavours": flavours}}))
    (root / "etc" / "salt" / "minion.d").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "salt" / "minion.d" / "ami.conf").write_text(
        "file_roots: {base: [/srv/salt]}\npillar_roots: {base: [/srv/pillar]}\n")
    clouds_yaml = root / "etc" / "openstack" / "clouds.yaml"
    clouds_yaml.parent.mkdir(exist_ok=True)
    shutil.copyfile(localcloud.clouds_yaml, clouds_yaml)
    try:
        yield clients, server, root, flavours
    finally:
        clouds_yaml.unlink()
    for image in provenance.find_promoted(clients, FLAVOUR):
        glance.delete(clients, image["id"], force=True)


def bake_volumes(clients):
    return [v.id for v in clients.cinder.volumes.list() if (v.name or "").startswith(f"ami-bake-{FLAVOUR}")]


def builder_state(clients, server, root):
    """What a bake could leave on the builder: attachments, mounts, loop devices."""
    attached = [a.volumeId for a in clients.nova.volumes.get_server_volumes(server["id"])]
    mounts = [m for m in disk.mounts_below(root) if "/ami/builds/" in m]
    loops = [d for v in attached for d in disk.loops_of(f"/dev/disk/by-id/virtio-{v[:20]}")]
    return {"attached": attached, "mounts": mounts, "loops": loops}


def test_bake_inside_the_builder_makes_a_clean_image_with_the_sls(builder, base_image, tmp_path, cloud_profile):
    clients, server, root, flavours = builder
    before = builder_state(clients, server, root)
    t0 = time.monotonic()
    rc, out, err = salt_call_inside(root, "ami.bake", f"flavour={FLAVOUR}", timeout=900)
    seconds = time.monotonic() - t0
    assert rc == 0, (out, err)
    result = json.loads(out)["local"]
    assert result["status"] == "done", result
    assert [s["name"] for s in result["steps"]] == [
        "resolve", "volume", "attach", "mount", "provision", "scrub", "unmount", "detach", "upload",
        "release_volume", "promote", "prune"]
    print(f"volume bake: {seconds:.1f} s; " + ", ".join(f"{s['name']} {s['seconds']}" for s in result["steps"]))

    image = glance.show(clients, result["image"]["id"])
    assert image["name"] == result["image"]["name"] and image["name"].startswith(FLAVOUR)
    assert image["ami_status"] == "promoted" and image["ami_sls"] == "amitest"
    assert image["ami_base_id"] == base_image["id"]
    assert int(image["ami_packages_count"]) > 100
    # nothing of the bake stays: no volume, attachment, mount or loop device
    assert bake_volumes(clients) == []
    assert builder_state(clients, server, root) == before

    qcow2 = tmp_path / "image.qcow2"
    glance.download(clients, image["id"], str(qcow2))
    with mounted_image(qcow2, tmp_path) as mnt:
        assert (mnt / "etc/ami-test/flavour").read_text() == "baked-on-a-volume\n"
        assert "amitest:" in (mnt / "etc/passwd").read_text()
        assert (mnt / "usr/local/bin/amitest-hello").stat().st_mode & 0o111
        # the chroot's own traces are gone, the image's files are its own again
        assert not (mnt / "usr/sbin/policy-rc.d").exists()
        assert not list(mnt.glob("etc/resolv.conf.salt-ami*")) and not (mnt / "run/salt-ami").exists()
        assert not list(mnt.glob("etc/ssh/ssh_host_*")) and not list(mnt.glob("var/cache/salt/*"))
        assert (mnt / "etc/machine-id").read_text() == ""
    secrets = audit.build_secrets(flavours, profile=cloud_profile)
    assert SECRET in secrets.values()
    report = audit.audit(str(qcow2), secrets, workdir=tmp_path)
    assert report["findings"] == [], report["findings"]


def test_killed_bake_is_cleaned_up_by_the_next_cleanup(builder):
    """kill -9 of salt-call while the SLS runs in the chroot: the volume stays attached and
    mounted, with the chroot's mounts; ami.bake_cleanup removes all of it."""
    clients, server, root, _flavours = builder
    before = builder_state(clients, server, root)
    cmd = ["chroot", str(root), "salt-call", "--local", "--log-level=quiet", "ami.bake", f"flavour={SLOW}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    builds = root / "var" / "cache" / "salt" / "minion" / "ami" / "builds"
    try:
        def provisioning():
            for path in builds.glob(f"{SLOW}-*.json"):
                steps = json.loads(path.read_text())["steps"]
                if steps and steps[-1]["name"] == "provision" and steps[-1]["status"] == "running":
                    return path
            return None
        manifest = wait_for(provisioning, lambda p: p is not None, "the slow bake to reach provision", 300)
        time.sleep(3)  # into the SLS's sleep
        during = builder_state(clients, server, root)
        assert during["attached"] and during["mounts"], during
    finally:
        # the whole process group: salt-call and the chroot's salt-call under it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = json.loads(manifest.read_text())
    assert killed["status"] == "running"

    rc, out, err = salt_call_inside(root, "ami.bake_cleanup", timeout=300)
    assert rc == 0, (out, err)
    cleaned = json.loads(out)["local"]
    assert [c["build"] for c in cleaned] == [killed["id"]] and cleaned[0]["status"] == "cleaned", cleaned
    assert builder_state(clients, server, root) == before
    assert bake_volumes(clients) == []
    assert json.loads(manifest.read_text())["status"] == "cleaned"


def flavour_images(clients):
    """Images of the test's flavours, by name or by the build's ami_flavour property."""
    return sorted(i["id"] for i in clients.glance.images.list(filters={"visibility": "all"})
                  if FLAVOUR in (i.get("name") or "") or FLAVOUR in i.get("ami_flavour", ""))


# fault: (flavour baked, step that fails, driver fault (point, resource name pattern) or None)
VOLUME_FAULTS = {
    "volume from the base image ends in error": (FAULTY, "volume", ("cinder.from_image", f"ami-bake-{FLAVOUR}")),
    "attach to the builder fails": (FAULTY, "attach", ("nova.attach", "ami-builder-")),
    "SLS fails in the chroot": (BROKEN, "provision", None),
    "scrub fails": (NOSCRUB, "scrub", None),
    "upload to Glance fails": (FAULTY, "upload", ("cinder.to_image", f"ami-bake-{FLAVOUR}")),
}


@pytest.mark.parametrize("fault", list(VOLUME_FAULTS))
def test_bake_fault_fails_the_step_and_leaves_nothing(fault, request, builder):
    clients, server, root, _flavours = builder
    flavour, step, driver_fault = VOLUME_FAULTS[fault]
    if driver_fault:
        request.getfixturevalue("drivers_with_faults")
    before = (builder_state(clients, server, root), flavour_images(clients))
    with injected(*driver_fault) if driver_fault else contextlib.nullcontext():
        rc, out, err = salt_call_inside(root, "ami.bake", f"flavour={flavour}", timeout=600)
    assert rc != 0, out
    assert f"step {step} failed" in err, err
    assert (builder_state(clients, server, root), flavour_images(clients)) == before
    assert bake_volumes(clients) == []
