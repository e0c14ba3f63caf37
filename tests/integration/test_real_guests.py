"""Builds on real guests: instances of the local cloud's flavor localcloud.vm are qemu VMs
(tests/localcloud/drivers/nova_qemu.py) of the guest image, which boot a kernel, systemd and
real cloud-init from nova's config drive, reach the master over qemu's user network, are
stopped by an ACPI shutdown and snapshotted from their disk, with discard ignored as on a
default nova.

`salt-run state.orch ami.build` builds flavour amitest-vm there: a service that systemd
starts, and a secret written to the disk and deleted. While it runs, the test asks the
builder and the validator (minions of the same master) for their identity; afterwards it
opens the image and boots it once more, logging in over SSH as a user would, and checks that
the clone is a new machine: its own host keys, machine id, random seed and cloud-init
instance, and no minion of the image's own salt."""
import json
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import GUEST_SECRET, RUN, cloud_inventory, mounted_image
from saltami import audit, provenance
from saltami.cloud import glance, nova

FLAVOUR = "amitest-vm"
BOOT_SECONDS = 900
FACTS = ("echo machine-id=$(cat /etc/machine-id); "
         "echo seed=$(sha256sum /var/lib/systemd/random-seed | cut -c1-64); "
         "for k in /etc/ssh/ssh_host_*_key.pub; do echo hostkey=$(cut -d' ' -f2 $k); done")

pytestmark = pytest.mark.usefixtures("vm_flavor")


def facts_of(text):
    facts = {"hostkey": set()}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "hostkey":
            facts["hostkey"].add(value)
        elif key in ("machine-id", "seed"):
            facts[key] = value
    return facts


class Inspector(threading.Thread):
    """Asks a running build's builder, then its validator, for their identity (FACTS), through
    the master they are minions of."""

    def __init__(self, salt_cli, event_listener, master_id, since):
        super().__init__(daemon=True)
        self.salt_cli, self.events, self.master_id, self.since = salt_cli, event_listener, master_id, since
        self.build, self.facts, self.stop = None, {}, threading.Event()

    def _build_id(self):
        for event in self.events.get_events([(self.master_id, f"salt/ami/{FLAVOUR}/resolve")],
                                            after_time=self.since):
            return event.data.get("build")
        return None

    def run(self):
        while not self.stop.is_set() and self.build is None:
            self.build = self._build_id()
            self.stop.wait(2)
        for role in ("builder", "validator"):
            while not self.stop.is_set() and role not in self.facts:
                ret = self.salt_cli.run("cmd.run", FACTS, python_shell=True, minion_tgt=f"ami-{role}-{self.build}")
                if ret.returncode == 0 and isinstance(ret.data, str) and "machine-id=" in ret.data:
                    self.facts[role] = facts_of(ret.data)
                else:
                    self.stop.wait(5)


@pytest.fixture(scope="module")
def keypair(module_clients, tmp_path_factory):
    """A nova key pair of the test's own, and its private key file."""
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    name = f"{RUN}-vm"
    module_clients.nova.keypairs.create(name, public_key=key.with_suffix(".pub").read_text())
    yield {"name": name, "key": key}
    module_clients.nova.keypairs.delete(name)


def ssh_port(localcloud, server_id):
    return json.loads((localcloud.instances_path / server_id / "state.json").read_text())["ssh_port"]


def ssh(localcloud, server_id, key, command, timeout=120):
    """``command`` run as root in the guest over SSH (the driver forwards the guest's port 22
    to one of this host's loopback ports); (exit status, output)."""
    r = subprocess.run(["ssh", "-i", str(key), "-p", str(ssh_port(localcloud, server_id)), "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def wait_ssh(localcloud, server_id, key, timeout=BOOT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, out = ssh(localcloud, server_id, key, "true", timeout=30)
        except subprocess.TimeoutExpired:
            continue
        if status == 0:
            return
        time.sleep(5)
    raise AssertionError(f"no SSH login into {server_id} within {timeout}s: {out}")


def host_keys(localcloud, server_id):
    out = subprocess.run(["ssh-keyscan", "-p", str(ssh_port(localcloud, server_id)), "-T", "10", "127.0.0.1"],
                         capture_output=True, text=True).stdout
    return {line.split()[2] for line in out.splitlines() if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def vm_build(salt_master, event_listener, module_clients, guest_image, salt_key):
    """One orchestrated build of amitest-vm on real guests, with the builder's and the
    validator's identity asked while they run."""
    provenance.prune(module_clients, FLAVOUR, keep=0, force=True)
    before = cloud_inventory(module_clients, salt_key, FLAVOUR)
    start = time.time()
    inspector = Inspector(salt_master.salt_cli(timeout=60), event_listener, salt_master.id, start)
    inspector.start()
    t0 = time.monotonic()
    try:
        # a build of VMs under TCG takes longer than the tests' salt-run waits by default
        ret = salt_master.salt_run_cli(timeout=3600).run("state.orch", "ami.build",
                                                          pillar={"ami": {"flavour": FLAVOUR}})
    finally:
        inspector.stop.set()
        inspector.join(60)
    data = ret.data["data"] if isinstance(ret.data, dict) and "data" in ret.data else ret.data
    assert isinstance(data, dict), (ret.returncode, ret.stdout[-3000:], ret.stderr[-3000:])
    (states,) = data.values()
    states = {v["__id__"]: v for v in states.values()}
    failed = {k: v["comment"] for k, v in states.items() if not v["result"]}
    assert ret.returncode == 0 and not failed, (failed, json.dumps(states, default=str)[-4000:])
    image = provenance.find_promoted(module_clients, FLAVOUR)[0]
    print(f"build on real guests: {time.monotonic() - t0:.0f}s",
          {k.rsplit("-", 1)[-1]: round(v["duration"] / 1000) for k, v in states.items()})
    return {"states": states, "image": image, "facts": inspector.facts, "before": before,
            "manifest": Path(salt_master.config["cachedir"]) / "ami" / "builds" / f"{image['ami_build']}.json"}


def test_build_ran_every_step_on_real_guests_and_left_nothing(vm_build, module_clients, salt_key):
    manifest = json.loads(vm_build["manifest"].read_text())
    assert manifest["status"] == "done"
    assert [s["name"] for s in manifest["steps"]] == ["resolve", "boot", "provision", "scrub", "snapshot",
                                                      "release", "validate", "promote", "prune"]
    # the builder's snapshot came from a VM of the VM driver, and its minion started under systemd
    assert vm_build["image"]["localcloud_snapshot"] == "vm"
    assert set(vm_build["facts"]) == {"builder", "validator"}, vm_build["facts"]
    after = cloud_inventory(module_clients, salt_key, FLAVOUR)
    assert after["servers"] == vm_build["before"]["servers"] and after["keys"] == vm_build["before"]["keys"]


def test_scrub_zeroed_what_discard_could_not_free(vm_build):
    scrub = json.dumps(vm_build["states"][f"ami-{FLAVOUR}-scrub"]["changes"])
    # the guest's fstrim succeeds, and the disk ignores it
    assert "zero-fill" in scrub and "ignores discard" in scrub, scrub
    assert '"at_shutdown": true' in scrub, scrub


def test_image_holds_the_service_and_no_secret_in_any_byte(vm_build, module_clients, flavours, cloud_profile,
                                                           tmp_path):
    image = vm_build["image"]
    path = tmp_path / "vm-image.qcow2"
    glance.download(module_clients, image["id"], str(path))
    with mounted_image(path, tmp_path) as root:
        assert (root / "etc/ami-test/flavour").read_text().strip() == "baked-on-a-real-guest"
        assert (root / "etc/systemd/system/multi-user.target.wants/amiguest-http.service").is_symlink()
        assert (root / "etc/ami-test/scratched").exists()
        # written by systemd-random-seed when the builder shut down, after the scrub: scrubbed then
        assert not (root / "var/lib/systemd/random-seed").exists()
        assert not (root / "etc/systemd/system/multi-user.target.wants/salt-minion.service").exists()
    secrets = audit.build_secrets(flavours, profile=cloud_profile)
    assert GUEST_SECRET in secrets.values()
    report = audit.audit(str(path), secrets, workdir=tmp_path)
    assert report["findings"] == [], report


def test_a_server_of_the_image_is_a_new_machine(vm_build, module_clients, localcloud, keypair):
    facts = vm_build["facts"]
    server = nova.boot(module_clients, f"{RUN}-clone", image=vm_build["image"]["id"], flavor="localcloud.vm",
                       key_name=keypair["name"], user_data="#cloud-config\ndisable_root: false\n",
                       timeout=BOOT_SECONDS)
    try:
        wait_ssh(localcloud, server["id"], keypair["key"])

        def run(command):
            status, out = ssh(localcloud, server["id"], keypair["key"], command, timeout=600)
            assert status == 0, (command, out)
            return out.strip()

        status = run("cloud-init status --wait --long")
        assert "status: done" in status and "error" not in status.lower(), status
        assert run("cat /var/lib/cloud/data/instance-id") == server["id"]
        clone = facts_of(run(FACTS))
        for role in ("builder", "validator"):
            assert clone["machine-id"] != facts[role]["machine-id"], role
            assert not clone["hostkey"] & facts[role]["hostkey"], role
            assert clone["seed"] != facts[role]["seed"], role
        # sshd answers with host keys the clone made itself (keyscan asks for some types only)
        offered = host_keys(localcloud, server["id"])
        assert offered and offered <= clone["hostkey"], (offered, clone["hostkey"])
        # the service the SLS started on the builder starts at boot
        assert run("systemctl is-active amiguest-http") == "active"
        assert run("python3 -c " + shlex.quote(
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8099/flavour').read().decode())")
        ) == "baked-on-a-real-guest"
        # no minion of the image's salt, with the builder's id or any other
        assert run("systemctl is-enabled salt-minion || true") == "disabled"
        assert run("pgrep -c salt-minion || true") == "0"
        assert run("ls /etc/salt/pki /etc/salt/minion_id 2>&1 || true").count("No such file") == 2
    finally:
        nova.delete(module_clients, server["id"])


@pytest.fixture
def login_vm(module_clients, localcloud, keypair):
    """Boots images as servers of flavor localcloud.vm that root can log into with the test's
    key pair (cloud-init's disable_root off), deleting them at the end of the test (an idle
    guest under TCG still takes a quarter of a core from the tests after it)."""
    servers = []

    def boot(image_id, name):
        server = nova.boot(module_clients, f"{RUN}-{name}", image=image_id, flavor="localcloud.vm",
                           key_name=keypair["name"], user_data="#cloud-config\ndisable_root: false\n",
                           timeout=BOOT_SECONDS)
        servers.append(server["id"])
        return server

    yield boot
    for server_id in servers:
        nova.delete(module_clients, server_id)


def cloud_init_done(localcloud, server, key):
    """`cloud-init status --long` once it is done: "status: done" with no module in error."""
    wait_ssh(localcloud, server["id"], key)
    status, out = ssh(localcloud, server["id"], key, "cloud-init status --wait --long", timeout=900)
    return status, out


def test_local_provider_outputs_boot_as_servers_with_cloud_init_done(tmp_path, cloud_profile, module_clients,
                                                                     localcloud, keypair, login_vm):
    """The local provider's qcow2 output (GRUB from its MBR) and its AMI triplet (nova's
    direct boot of kernel_id and ramdisk_id with the image's os_command_line), uploaded by the
    bake, boot as servers of the cloud to a login prompt, with cloud-init done and no module
    in error."""
    from helpers import local_minion, salt_call_local

    name = f"local-vm-{RUN[-8:]}"
    flavour = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["amitest"],
               "pillar": {"amitest": {"mark": "local-on-a-real-guest"}}, "outputs": ["qcow2-zstd", "ami"],
               "output_dir": str(tmp_path / "images"), "image_name": "{flavour}-{build}", "validate": False}
    minion = local_minion(tmp_path / "minion", {name: flavour}, cloud=cloud_profile)
    result = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={name}")
    assert result["status"] == "done", result
    uploaded = json.loads(Path(result["manifest"]).read_text())["outputs"]["uploaded"]
    try:
        root = glance.show(module_clients, uploaded["ami"]["image"])
        assert root["os_command_line"].startswith("root=LABEL=rootfs")
        servers = {kind: login_vm(uploaded[kind]["image"], kind) for kind in ("qcow2-zstd", "ami")}
        for kind, server in servers.items():
            status, out = cloud_init_done(localcloud, server, keypair["key"])
            assert status == 0 and "status: done" in out and "error" not in out.lower(), (kind, out)
            console = nova.console_output(module_clients, server["id"])
            assert " login:" in console, (kind, console[-2000:])
            _status, mark = ssh(localcloud, server["id"], keypair["key"], "amitest-hello")
            assert mark.strip() == "local-on-a-real-guest", (kind, mark)
    finally:
        for parts in uploaded.values():
            for image_id in parts.values():
                glance.delete(module_clients, image_id, force=True)


# In a real guest 127.0.0.1 is the guest itself, and the catalog's endpoints are on the host's
# loopback: systemd-socket-proxyd relays each API port to the host (qemu's 10.0.2.2), as a
# cloud's network routes its VMs to the API endpoints.
API_PORTS = (5000, 8774, 8776, 8778, 9292, 9696)
API_RELAY = """#cloud-config
disable_root: false
write_files:
  - path: /etc/systemd/system/localcloud-api@.socket
    content: |
      [Socket]
      ListenStream=127.0.0.1:%i
      [Install]
      WantedBy=sockets.target
  - path: /etc/systemd/system/localcloud-api@.service
    content: |
      [Service]
      ExecStart=/lib/systemd/systemd-socket-proxyd 10.0.2.2:%i
runcmd:
  - systemctl daemon-reload
""" + "".join(f"  - systemctl start localcloud-api@{port}.socket\n" for port in API_PORTS)
VOLUME_FLAVOUR = f"amitest-vmvolume-{RUN[-8:]}"
VOLUME_SECRET = f"vm-volume-secret-{RUN}"


@pytest.fixture(scope="module")
def vm_builder_image(guest_image, builder_wheels, cloud_profile, module_clients, tmp_path_factory):
    """What a user boots to bake volumes: the guest image with salt-ami and its OpenStack
    clients installed, made by the local provider (no cloud needed to make it) and uploaded."""
    import shutil

    import yaml

    from helpers import local_minion, salt_call_local

    work = tmp_path_factory.mktemp("vm-builder-image")
    shutil.copytree(builder_wheels["dir"], work / "srv" / "amivmbuilder-wheels")
    name = f"vmbuilder-{RUN[-8:]}"
    flavour = {"strategy": "local", "base": {"file": str(guest_image["path"])}, "sls": ["amivmbuilder"],
               "pillar": {"amivmbuilder": {"packages": list(builder_wheels["packages"])}},
               "outputs": ["qcow2-zstd"], "output_dir": str(work / "images"), "image_name": "{flavour}-{build}",
               "validate": False}
    minion = local_minion(work / "minion", {name: flavour}, cloud=cloud_profile)
    config_path = Path(minion["config_dir"]) / "minion"
    config = yaml.safe_load(config_path.read_text())
    config["file_roots"]["base"].append(str(work / "srv"))
    config_path.write_text(yaml.safe_dump(config))
    result = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={name}")
    assert result["status"] == "done", result
    yield result["image"]
    glance.delete(module_clients, result["image"]["id"], force=True)


def ssh_write(localcloud, server_id, key, path, text):
    status, out = ssh(localcloud, server_id, key,
                      f"mkdir -p {shlex.quote(str(Path(path).parent))} && umask 077 && "
                      f"printf '%s' {shlex.quote(text)} > {shlex.quote(path)}")
    assert status == 0, out


def test_volume_bake_inside_a_real_guest(vm_builder_image, guest_image, module_clients, localcloud, keypair,
                                         login_vm, flavours, cloud_profile, tmp_path):
    """`salt-call --local ami.bake` inside a real guest: the volume made from the (bootable)
    guest image is hot-plugged into the running kernel, found by its serial, its partition
    appears by itself (udev), the chroot bake applies the SLS; the image it uploads boots."""
    builder = nova.boot(module_clients, f"{RUN}-vmbuilder", image=vm_builder_image["id"], flavor="localcloud.vm",
                        key_name=keypair["name"], user_data=API_RELAY, timeout=BOOT_SECONDS)
    baked = []
    try:
        wait_ssh(localcloud, builder["id"], keypair["key"])
        key = keypair["key"]
        for sls in ("init.sls",):
            ssh_write(localcloud, builder["id"], key, f"/srv/salt/amitest/{sls}",
                      (Path(__file__).parents[2] / "salt/formulas/amitest" / sls).read_text())
        flavour = {"strategy": "volume", "base": {"name": guest_image["name"]}, "sls": ["amitest"],
                   "volume_size": 2, "pillar": {"amitest": {"mark": "baked-in-a-real-guest", "secret": VOLUME_SECRET}},
                   "keep": 1, "timeouts": {"boot": 600, "apply": 1200, "snapshot": 1200}}
        ssh_write(localcloud, builder["id"], key, "/srv/pillar/top.sls", "base: {'*': [ami]}\n")
        ssh_write(localcloud, builder["id"], key, "/srv/pillar/ami.sls",
                  json.dumps({"ami": {"cloud": "localcloud", "flavours": {VOLUME_FLAVOUR: flavour}}}))
        ssh_write(localcloud, builder["id"], key, "/etc/salt/minion.d/ami.conf",
                  "file_roots: {base: [/srv/salt]}\npillar_roots: {base: [/srv/pillar]}\n")
        ssh_write(localcloud, builder["id"], key, "/etc/openstack/clouds.yaml", localcloud.clouds_yaml.read_text())
        t0 = time.monotonic()
        # the result on stdout, the bake's progress on stderr (kept in the guest)
        status, out = ssh(localcloud, builder["id"], key,
                          f"salt-call --local --out=json --log-level=quiet ami.bake flavour={VOLUME_FLAVOUR} "
                          "2>/root/bake.progress", timeout=3600)
        print(f"volume bake inside a real guest: {time.monotonic() - t0:.0f}s")
        if status != 0:
            out += ssh(localcloud, builder["id"], key, "cat /root/bake.progress")[1]
        assert status == 0, out[-3000:]
        result = json.loads(out)["local"]
        assert result["status"] == "done", result
        baked.append(result["image"]["id"])
        # the volume came and went as a PCI hot-plug the guest's kernel saw
        _status, kernel = ssh(localcloud, builder["id"], key, "dmesg | grep -E 'virtio_blk.*vdb' || true")
        assert "vdb" in kernel, kernel
        _status, attached = ssh(localcloud, builder["id"], key, "ls /dev/disk/by-id/ | grep -c virtio- || true")
        assert attached.strip() == "0", attached
    finally:
        nova.delete(module_clients, builder["id"])
    try:
        image = glance.show(module_clients, baked[0])
        assert image["ami_status"] == "promoted" and image["ami_flavour"] == VOLUME_FLAVOUR
        path = tmp_path / "volume.qcow2"
        glance.download(module_clients, image["id"], str(path))
        report = audit.audit(str(path), {"the volume bake's secret": VOLUME_SECRET}, workdir=tmp_path)
        assert report["findings"] == [], report
        path.unlink()
        server = login_vm(image["id"], "vmvolume")
        status, out = cloud_init_done(localcloud, server, keypair["key"])
        assert status == 0 and "status: done" in out, out
        _status, mark = ssh(localcloud, server["id"], keypair["key"], "cat /etc/ami-test/flavour")
        assert mark.strip() == "baked-in-a-real-guest"
    finally:
        for image_id in baked:
            glance.delete(module_clients, image_id, force=True)
