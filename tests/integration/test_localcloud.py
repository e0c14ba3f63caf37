"""The local cloud's test-only drivers, through the real APIs, as the non-admin user:
instances that run their user-data in a chroot of the image (drivers/nova_chroot.py), the
config drive, snapshots, and file-backed volumes (drivers/cinder_file.py) with real bytes.

The tests run as root on the compute host, so they also look at the instances from outside:
files under instances_path/<id>/mnt, processes, mounts and loop devices.

One server booted with a #cloud-config is shared by the tests that only read it or attach
a volume to it; tests that stop or break servers boot their own.
"""
import base64
import io
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cinderclient import client as cinder_client
from cinderclient import exceptions as cinder_exc
from glanceclient import client as glance_client
from glanceclient import exc as glance_exc
from novaclient import client as nova_client
from novaclient import exceptions as nova_exc

FLAVOR = "localcloud.small"
MiB = 1 << 20

VOLUME_WRITER = """#!/bin/sh
# as a builder's step would: wait for the first attached volume, then write to it
while :; do
  for dev in /dev/disk/by-id/virtio-*; do
    if [ -b "$dev" ]; then
      printf 'volume written by %s\\n' "$INSTANCE_ID" | dd of="$dev" bs=1M seek=2 conv=fsync 2>/dev/null
      echo "$dev" > /root/builder/volume-written
      exit 0
    fi
  done
  sleep 0.2
done
"""

CLOUD_CONFIG = """#cloud-config
bootcmd:
  - echo "bootcmd sees $INSTANCE_ID"
write_files:
  - path: /root/builder/from-write-files
    content: {marker}
    encoding: b64
    permissions: '0600'
  - path: /root/builder/volume-writer
    content: {writer}
    encoding: b64
    permissions: '0755'
runcmd:
  - mkdir -p /mnt/config
  - mount /dev/disk/by-label/config-2 /mnt/config
  - cp /mnt/config/openstack/latest/meta_data.json /mnt/config/openstack/latest/user_data /root/builder/
  - umount /mnt/config
  - [sh, -c, 'nohup /root/builder/volume-writer >/dev/null 2>&1 &']
  - [sh, -c, 'echo "runcmd ran in $INSTANCE_ID on $(hostname)" > /root/builder/from-runcmd']
  - echo user-data done
""".format(marker=base64.b64encode(b"written by write_files\n").decode(),
           writer=base64.b64encode(VOLUME_WRITER.encode()).decode())

SHELL_SCRIPT = """#!/bin/sh
echo "script ran in $INSTANCE_ID on $(hostname)" > /root/from-script
sleep 600 &
echo script done
"""


# ------------------------------------------------------------------ waiting and looking
def wait_for(what, check, timeout=180, interval=0.3):
    """check()'s first truthy value; fails after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_status(what, get, wanted, failed=("error",)):
    def check():
        obj = get()
        status = obj.status.lower()
        assert status not in failed, "%s went to %s: %s" % (what, status, getattr(obj, "fault", obj))
        return obj if status == wanted and not getattr(obj, "OS-EXT-STS:task_state", None) else None
    return wait_for("%s to be %s" % (what, wanted), check)


def wait_gone(what, get, not_found):
    def check():
        try:
            get()
        except not_found:
            return True
        return False
    wait_for("%s to be gone" % what, check)


def in_instance(localcloud, server_id, path):
    """A path inside the running instance, seen from the host."""
    return Path(localcloud.instances_path) / server_id / "mnt" / path.lstrip("/")


def loop_back_files():
    out = subprocess.run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"],
                         capture_output=True, text=True, check=True).stdout
    return {d["name"]: d.get("back-file") or "" for d in json.loads(out or '{"loopdevices": []}')["loopdevices"]}


def leftovers(localcloud, server_id):
    """Processes, mounts and loop devices that an instance still holds, and its directory."""
    inst = str(Path(localcloud.instances_path) / server_id)
    pids = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.readlink("/proc/%s/root" % p).startswith(inst + "/"):
                pids.append(int(p))
        except OSError:
            continue
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(inst + "/")]
    loops = [n for n, f in loop_back_files().items() if f.startswith(inst + "/")]
    return {"pids": pids, "mounts": mounts, "loops": loops, "dir": os.path.exists(inst)}


NOTHING_LEFT = {"pids": [], "mounts": [], "loops": [], "dir": False}


def console(server):
    return server.get_console_output()


def download(glance, image_id, path, limit=None):
    """Write the image's bytes (the first `limit` of them, if given) to path."""
    done = 0
    with open(path, "wb") as f:
        for chunk in glance.images.data(image_id):
            f.write(chunk)
            done += len(chunk)
            if limit and done >= limit:
                break
    return path


def first_partition_offset(image):
    start = subprocess.run(["partx", "-g", "-o", "START", "-n", "1", str(image)], capture_output=True,
                           text=True, check=True).stdout
    return int(start) * 512


def file_in_disk_image(image, path_inside, offset=0):
    """A file from the ext4 filesystem at offset in a raw disk image, read with debugfs (no mount)."""
    r = subprocess.run(["debugfs", "-R", "cat %s" % path_inside, "%s?offset=%d" % (image, offset)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "File not found" not in r.stderr, r.stderr
    return r.stdout


def tiny_root_filesystem(directory):
    """A whole-disk ext4 image (no partition table) with just an /etc and a /bin/sh: dash and
    the libraries it needs, copied from this host."""
    tree = directory / "tree"
    (tree / "etc").mkdir(parents=True)
    ldd = subprocess.run(["ldd", "/bin/sh"], capture_output=True, text=True, check=True).stdout
    libs = [word for word in ldd.split() if word.startswith("/")]
    for source, target in [("/bin/sh", "/bin/sh")] + [(lib, lib) for lib in libs]:
        (tree / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tree / target.lstrip("/"))
    image = directory / "tiny.raw"
    subprocess.run(["mkfs.ext4", "-q", "-d", tree, image, "32M"], check=True, capture_output=True)
    return image


def boot(nova, name, image, user_data, **kw):
    return nova.servers.create(name, image, nova.flavors.find(name=FLAVOR), nics="none",
                               userdata=user_data, **kw)


def wait_active(nova, server):
    return wait_status("server %s" % server.id, lambda: nova.servers.get(server.id), "active")


def qcow2_image(glance, cleanup, raw, name):
    """A qcow2 Glance image of the raw disk image file raw."""
    qcow2 = raw.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
    image = glance.images.create(name=name, disk_format="qcow2", container_format="bare")
    cleanup.image(image["id"])
    with open(qcow2, "rb") as f:
        glance.images.upload(image["id"], f, image_size=qcow2.stat().st_size)
    return image["id"]


def upload_volume(cinder, glance, cleanup, volume, fmt):
    response = cinder.volumes.upload_to_image(volume, False, "volume-%s" % fmt, "bare", fmt,
                                              visibility="private", protected=False)
    image_id = cleanup.image(response[1]["os-volume_upload_image"]["image_id"])
    image = wait_status("image from volume", lambda: glance.images.get(image_id), "active",
                        failed=("killed", "deleted"))
    assert image["disk_format"] == fmt
    return image_id


def volume_bytes(glance, image_id, fmt, directory, size):
    """The first `size` bytes of the disk in a raw or qcow2 image."""
    path = download(glance, image_id, directory / ("volume." + fmt), limit=None if fmt == "qcow2" else size)
    if fmt == "qcow2":
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, directory / "volume.raw"],
                       check=True)
        path = directory / "volume.raw"
    with open(path, "rb") as f:
        return f.read(size)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def nova(demo_session):
    return nova_client.Client("2.96", session=demo_session)


@pytest.fixture(scope="module")
def glance(demo_session):
    return glance_client.Client("2", session=demo_session)


@pytest.fixture(scope="module")
def cinder(demo_session):
    return cinder_client.Client("3.70", session=demo_session)


@pytest.fixture(scope="module")
def timings(request):
    """Durations worth knowing, printed after the module's tests."""
    found = {}
    yield found
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter and capture and found:
        with capture.global_and_fixture_disabled():  # else the lines land in a captured section
            reporter.write_sep("-", "localcloud timings")
            for name, seconds in found.items():
                reporter.write_line("%-50s %6.1f s" % (name, seconds))


class Cleanup:
    """Deletes what a test made, newest first, and checks that each thing is gone."""

    def __init__(self, localcloud, nova, glance, cinder):
        self.localcloud, self.nova, self.glance, self.cinder = localcloud, nova, glance, cinder
        self.things = []

    def server(self, server):
        self.things.append((self._delete_server, (server.id,)))
        return server

    def image(self, image_id):
        self.things.append((self._delete_image, (image_id,)))
        return image_id

    def volume(self, volume):
        self.things.append((self._delete_volume, (volume.id,)))
        return volume

    def _delete_server(self, server_id):
        self.nova.servers.delete(server_id)
        wait_gone("server %s" % server_id, lambda: self.nova.servers.get(server_id), nova_exc.NotFound)
        assert leftovers(self.localcloud, server_id) == NOTHING_LEFT

    def _delete_image(self, image_id):
        self.glance.images.delete(image_id)
        wait_gone("image %s" % image_id, lambda: self.glance.images.get(image_id), glance_exc.HTTPNotFound)

    def _delete_volume(self, volume_id):
        for attachment in self.cinder.volumes.get(volume_id).attachments:
            self.nova.volumes.delete_server_volume(attachment["server_id"], volume_id)
        wait_status("volume %s" % volume_id, lambda: self.cinder.volumes.get(volume_id), "available")
        self.cinder.volumes.delete(volume_id)
        wait_gone("volume %s" % volume_id, lambda: self.cinder.volumes.get(volume_id), cinder_exc.NotFound)

    def run(self):
        errors = []
        while self.things:
            delete, args = self.things.pop()
            try:
                delete(*args)
            # pytest.fail's exception is no Exception; a timeout must not stop the cleanup
            except (Exception, pytest.fail.Exception) as e:
                errors.append("%s%s: %s" % (delete.__name__, args, e))
        assert not errors, errors


@pytest.fixture
def cleanup(localcloud, nova, glance, cinder):
    c = Cleanup(localcloud, nova, glance, cinder)
    yield c
    c.run()


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied afterwards: pytest keeps old ones, and these hold GiB-sized images."""
    yield tmp_path
    shutil.rmtree(tmp_path)


@pytest.fixture(scope="module")
def builder(localcloud, nova, glance, cinder, base_image, timings):
    """The shared server: the base image, booted with CLOUD_CONFIG, its user-data done."""
    c = Cleanup(localcloud, nova, glance, cinder)
    t0 = time.monotonic()
    try:
        server = c.server(boot(nova, "builder", base_image["id"], CLOUD_CONFIG))
        marker = in_instance(localcloud, server.id, "/root/builder/from-runcmd")
        wait_for("the runcmd's file in the instance", marker.exists, interval=0.1)
        timings["boot to user-data's file (cloud-config)"] = time.monotonic() - t0
        wait_for("user-data to finish", lambda: "[cloudinit-lite] finished" in console(server))
        yield wait_active(nova, server)
    finally:
        c.run()


# ------------------------------------------------------------------ tests
def test_cloud_config_write_files_and_runcmd_run_inside(localcloud, builder):
    root = in_instance(localcloud, builder.id, "/root/builder")
    written = root / "from-write-files"
    assert written.read_text() == "written by write_files\n"
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    assert (root / "from-runcmd").read_text() == "runcmd ran in %s on builder\n" % builder.id
    out = console(builder)
    assert "bootcmd sees %s" % builder.id in out
    assert "user-data done" in out
    assert "[cloudinit-lite] finished, 0 failures" in out


def test_config_drive_shows_the_server(localcloud, builder):
    root = in_instance(localcloud, builder.id, "/root/builder")
    meta = json.loads((root / "meta_data.json").read_text())
    assert (meta["uuid"], meta["name"]) == (builder.id, "builder")
    assert (root / "user_data").read_text() == CLOUD_CONFIG


def test_snapshot_holds_the_files_written_inside(localcloud, builder, glance, cleanup, timings, scratch,
                                                base_image):
    t0 = time.monotonic()
    image_id = cleanup.image(builder.create_image("builder-snapshot"))
    image = wait_status("snapshot %s" % image_id, lambda: glance.images.get(image_id), "active",
                        failed=("killed", "deleted"))
    timings["createImage to active (1 GiB disk)"] = time.monotonic() - t0
    # a snapshot keeps its server's image's format (the base test image is qcow2)
    base_format = glance.images.get(base_image["id"])["disk_format"]
    assert (image["disk_format"], image["image_type"]) == (base_format, "snapshot")
    disk = download(glance, image_id, scratch / f"snapshot.{base_format}")
    if base_format != "raw":
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(scratch / "snapshot.raw")], check=True)
        disk = scratch / "snapshot.raw"
    assert file_in_disk_image(disk, "/root/builder/from-runcmd", first_partition_offset(disk)) == \
        "runcmd ran in %s on builder\n" % builder.id


def test_volume_from_image_written_inside_then_uploaded(localcloud, builder, nova, glance, cinder,
                                                        cleanup, timings, scratch):
    pattern = os.urandom(MiB)
    (scratch / "pattern.raw").write_bytes(pattern)
    source = qcow2_image(glance, cleanup, scratch / "pattern.raw", "volume-source")
    volume = cleanup.volume(cinder.volumes.create(1, imageRef=source, name="written-inside"))
    wait_status("volume", lambda: cinder.volumes.get(volume.id), "available")

    t0 = time.monotonic()
    nova.volumes.create_server_volume(builder.id, volume.id)
    wait_status("volume", lambda: cinder.volumes.get(volume.id), "in-use")
    timings["volume attach"] = time.monotonic() - t0
    flag = in_instance(localcloud, builder.id, "/root/builder/volume-written")
    wait_for("the instance to write to its volume", flag.exists)
    assert flag.read_text() == "/dev/disk/by-id/virtio-%s\n" % volume.id[:20]

    t0 = time.monotonic()
    nova.volumes.delete_server_volume(builder.id, volume.id)
    wait_status("volume", lambda: cinder.volumes.get(volume.id), "available")
    timings["volume detach"] = time.monotonic() - t0
    assert not in_instance(localcloud, builder.id, "/dev/vdb").exists()

    # the image's bytes, then zeros up to what VOLUME_WRITER wrote at 2 MiB
    expected = pattern + bytes(MiB) + b"volume written by %s\n" % builder.id.encode()
    for fmt in ("raw", "qcow2"):
        image_id = upload_volume(cinder, glance, cleanup, volume, fmt)
        assert volume_bytes(glance, image_id, fmt, scratch, len(expected)) == expected, fmt


def test_qcow2_image_of_a_whole_disk_filesystem_boots_and_snapshots_as_qcow2(
        localcloud, nova, glance, cleanup, scratch):
    image_id = qcow2_image(glance, cleanup, tiny_root_filesystem(scratch), "tiny")
    script = '#!/bin/sh\necho "tiny ran in $INSTANCE_ID" > /marker\n'
    server = cleanup.server(boot(nova, "tiny", image_id, script))
    marker = in_instance(localcloud, server.id, "/marker")
    wait_for("the script's file in the instance", marker.exists, interval=0.1)
    assert marker.read_text() == "tiny ran in %s\n" % server.id
    assert not in_instance(localcloud, server.id, "/dev/vda1").exists()

    wait_active(nova, server)  # user-data starts during spawn: the server may still be building
    snapshot_id = cleanup.image(server.create_image("tiny-snapshot"))
    snapshot = wait_status("snapshot", lambda: glance.images.get(snapshot_id), "active",
                           failed=("killed", "deleted"))
    assert snapshot["disk_format"] == "qcow2"
    raw = scratch / "tiny-snapshot.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                    download(glance, snapshot_id, scratch / "tiny-snapshot.qcow2"), raw], check=True)
    assert file_in_disk_image(raw, "/marker") == "tiny ran in %s\n" % server.id


def test_hypervisor_reports_uptime(admin_session):
    admin_nova = nova_client.Client("2.96", session=admin_session)
    hypervisor = admin_nova.hypervisors.get(admin_nova.hypervisors.list()[0].id)
    assert "load average" in hypervisor.uptime


def test_shell_script_server_stops_starts_reboots_and_is_deleted_cleanly(localcloud, nova, base_image,
                                                                         cleanup, timings):
    t0 = time.monotonic()
    server = cleanup.server(boot(nova, "scripted", base_image["id"], SHELL_SCRIPT))
    marker = in_instance(localcloud, server.id, "/root/from-script")
    wait_for("the script's file in the instance", marker.exists, interval=0.1)
    timings["boot to user-data's file (shell script)"] = time.monotonic() - t0
    assert marker.read_text() == "script ran in %s on scripted\n" % server.id
    wait_for("the script's output on the console", lambda: "script done" in console(server))
    assert leftovers(localcloud, server.id)["pids"], "the script's background sleep should run"

    wait_active(nova, server)  # user-data starts during spawn: the server may still be building
    server.stop()
    wait_status("server", lambda: nova.servers.get(server.id), "shutoff")
    assert leftovers(localcloud, server.id) == dict(NOTHING_LEFT, dir=True)

    server.start()
    wait_active(nova, server)
    assert marker.read_text() == "script ran in %s on scripted\n" % server.id
    assert console(server).count("running part-001") == 1, "user-data runs once per instance"

    server.reboot()
    wait_for("the reboot", lambda: console(server).count("powered off") == 2)
    wait_active(nova, server)
    assert marker.exists()

    t0 = time.monotonic()
    cleanup.run()
    timings["delete a server"] = time.monotonic() - t0


def test_boot_from_volume_uses_the_volume_as_root_disk(localcloud, nova, cinder, base_image, cleanup,
                                                       timings):
    script = "#!/bin/sh\necho booted from a volume > /root/from-volume\n"
    t0 = time.monotonic()
    server = cleanup.server(boot(nova, "from-volume", None, script, block_device_mapping_v2=[{
        "boot_index": 0, "uuid": base_image["id"], "source_type": "image",
        "destination_type": "volume", "volume_size": 1, "delete_on_termination": True}]))
    marker = in_instance(localcloud, server.id, "/root/from-volume")
    wait_for("the script's file in the instance", marker.exists, interval=0.1)
    timings["boot from a new 1 GiB volume to user-data's file"] = time.monotonic() - t0
    server = wait_active(nova, server)
    [volume] = [v["id"] for v in getattr(server, "os-extended-volumes:volumes_attached")]
    [volume_file] = [f for f in loop_back_files().values() if f.endswith("/volume-" + volume)]
    assert in_instance(localcloud, server.id, "/dev/disk/by-id/virtio-" + volume[:20]).exists()

    cleanup.run()
    assert volume_file not in loop_back_files().values()
    wait_gone("the boot volume (delete_on_termination)", lambda: cinder.volumes.get(volume),
              cinder_exc.NotFound)


def test_booting_a_missing_image_is_a_bad_request(nova):
    # nova's own message: it does not name the image
    with pytest.raises(nova_exc.BadRequest, match="Can not find requested image"):
        boot(nova, "no-image", str(uuid.uuid4()), None)
    assert not nova.servers.list(search_opts={"name": "^no-image$"})


def test_unbootable_image_puts_the_server_in_error_with_the_reason(localcloud, nova, glance, cleanup):
    image = glance.images.create(name="zeros", disk_format="raw", container_format="bare")
    cleanup.image(image["id"])
    glance.images.upload(image["id"], io.BytesIO(bytes(MiB)), image_size=MiB)
    server = cleanup.server(boot(nova, "unbootable", image["id"], None))
    server = wait_status("server", lambda: nova.servers.get(server.id), "error", failed=())
    assert "Image %s is unacceptable: no filesystem with an /etc in the disk" % image["id"] \
        in server.fault["message"]
