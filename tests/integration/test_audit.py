"""saltami/audit.py on small crafted images: each check finds its item (so the audit can
fail), a clean image gives nothing, and every way an image comes (whole-disk raw,
partitioned raw, qcow2, AMI triplet) is opened read-only and left as it was found."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import MiB, sha512
from saltami import audit, disk, scrub
from saltami.errors import InvalidArgument

SECRET = "pillar-secret-do-not-leak"
PASSWORD = "cloud-password-0123456789"
SECRETS = {"pillar amitest:secret": SECRET, "cloud auth:password": PASSWORD}
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"

# check -> (path in the image, content): one item each check must find
DIRTY = {
    "SSH host keys": ("/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAAC3Nza host\n"),
    "SSH private keys": ("/srv/app/deploy.pem", PEM),
    "authorized_keys": ("/home/user/.ssh/authorized_keys", "# the builder\nssh-ed25519 AAAAC3Nza builder\n"),
    "Salt minion keys, id and master key": ("/etc/salt/pki/minion/minion_master.pub", "-----BEGIN PUBLIC KEY-----\n"),
    "machine id": ("/etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
    "shell histories": ("/root/.bash_history", "openstack server list\n"),
    "cloud-init instance data": ("/var/lib/cloud/instances/i-0001/user-data.txt", "#cloud-config\n"),
    "DHCP leases": ("/var/lib/dhcp/dhclient.eth0.leases", "lease { fixed-address 10.0.0.5; }\n"),
    "cloud credentials": ("/root/.config/openstack/clouds.yaml", "clouds: {}\n"),
    "random seeds": ("/var/lib/systemd/random-seed", "\x8f\x11 a saved seed\n"),
    audit.SECRET_IN_FILE: ("/etc/app/app.conf", f"db_password = {PASSWORD}\n"),
}
# look-alikes that are not findings
CLEAN = {
    "/etc/hostname": "ami-test\n",
    "/etc/machine-id": "",
    "/etc/ssh/sshd_config": "PermitRootLogin no\n",
    "/root/.ssh/authorized_keys": "# keys come from cloud-init at first boot\n",
    "/usr/lib/python3/dist-packages/paramiko/test_rsa.key": PEM,  # installed software's test vector
    "/opt/salt/lib/python3.11/site-packages/salt/cloud/clouds/openstack.py": "OS_PASSWORD=\n",
    "/home/user/.bashrc": "export HISTFILE=~/.bash_history\n",
    "/var/lib/cloud/instances/.keep": "",
}


def make_tree(root, files):
    for path, text in files.items():
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_text(text)
    return root


def ext4(path, tree, size="16M"):
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(path), size], check=True, capture_output=True)
    return path


def clean_tree(tmp_path, name="clean"):
    tree = make_tree(tmp_path / name, CLEAN)
    (tree / "var/lib/dbus").mkdir(parents=True)
    (tree / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    (tree / "home/user/.bash_history").symlink_to("/dev/null")
    return tree


def dirty_tree(tmp_path):
    tree = clean_tree(tmp_path, "dirty")
    return make_tree(tree, {path: text for path, text in DIRTY.values()})


def found(report):
    return {(f["check"], f["where"]) for f in report["findings"]}


def nothing_left(tmp_path, *images):
    """No loop device over the images, no mount or temporary directory in tmp_path."""
    assert [d for image in images for d in disk.loops_of(image)] == []
    assert disk.mounts_below(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ami-audit-")] == []


@pytest.fixture
def dirty(tmp_path):
    return ext4(tmp_path / "dirty.raw", dirty_tree(tmp_path))


def test_clean_image_gives_nothing(tmp_path):
    image = ext4(tmp_path / "clean.raw", clean_tree(tmp_path))
    before = sha512(image)
    report = audit.audit(str(image), SECRETS, workdir=tmp_path)
    assert report["findings"] == [] and report["format"] == "raw"
    assert report["filesystems"] == [{"name": "disk", "type": "ext4"}]
    assert report["bytes_searched"] == image.stat().st_size
    assert sha512(image) == before  # opened read-only: not one byte changed, not even the superblock
    nothing_left(tmp_path, image)


def test_every_check_has_a_dirty_item():
    assert {name for name, _ in audit.CHECKS} | {audit.SECRET_IN_FILE} == set(DIRTY)


@pytest.mark.parametrize("check", sorted(DIRTY))
def test_each_check_finds_its_item(tmp_path, dirty, check):
    report = audit.audit(str(dirty), SECRETS, workdir=tmp_path)
    assert (check, DIRTY[check][0]) in found(report)
    # nothing else: the clean look-alikes beside them stay unreported
    assert {w for c, w in found(report) if c != audit.SECRET_IN_BYTES} <= {p for p, _ in DIRTY.values()}
    # findings name the secret, never show it
    assert SECRET not in json.dumps(report) and PASSWORD not in json.dumps(report)
    nothing_left(tmp_path, dirty)


def test_secret_in_deleted_blocks_is_found_in_the_raw_bytes(tmp_path):
    tree = make_tree(clean_tree(tmp_path), {"/tmp/pillar.sls": f"secret: {SECRET}\n" * 64})
    image = ext4(tmp_path / "deleted.raw", tree)
    subprocess.run(["debugfs", "-w", "-R", "rm /tmp/pillar.sls", str(image)], check=True, capture_output=True)
    report = audit.audit(str(image), SECRETS, workdir=tmp_path)
    assert [(f["check"], f["detail"]) for f in report["findings"]] == [
        (audit.SECRET_IN_BYTES, "pillar amitest:secret (64 times)")]


def partitioned(tmp_path, root_tree):
    """An MBR disk: p1 a small clean /boot, p2 with no filesystem, p3 the root filesystem."""
    image = tmp_path / "disk.raw"
    subprocess.run(["truncate", "-s", "48M", str(image)], check=True)
    subprocess.run(["sfdisk", "-q", str(image)], input=b"1MiB,8MiB,L\n,4MiB,L\n,,L\n", check=True)
    parts = disk.partitions(image)
    boot = ext4(tmp_path / "boot.img", make_tree(tmp_path / "boot", {"/vmlinuz": "kernel\n"}), "8M")
    root = ext4(tmp_path / "root.img", root_tree, f"{parts[2]['size'] // 1024}K")
    for part, fs in ((parts[0], boot), (parts[2], root)):
        subprocess.run(["dd", f"if={fs}", f"of={image}", "bs=64K", f"seek={part['start']}", "oflag=seek_bytes",
                        "conv=notrunc,sparse", "status=none"], check=True)
    return image


def test_partitioned_disk_every_partition(tmp_path):
    image = partitioned(tmp_path, dirty_tree(tmp_path))
    report = audit.audit(str(image), SECRETS, workdir=tmp_path)
    assert report["filesystems"] == [{"name": "p1", "type": "ext4"}, {"name": "p3", "type": "ext4"}]
    assert report["skipped"] == ["p2: no filesystem; searched as bytes only"]
    assert ("machine id", "p3:/etc/machine-id") in found(report)
    assert {c for c, _ in found(report)} == set(DIRTY) | {audit.SECRET_IN_BYTES}
    nothing_left(tmp_path, image)


def test_qcow2_is_converted_and_both_forms_searched(tmp_path, dirty):
    image = tmp_path / "dirty.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(dirty), str(image)], check=True)
    report = audit.audit(str(image), SECRETS, workdir=tmp_path)
    assert report["format"] == "qcow2"
    assert {c for c, _ in found(report)} == set(DIRTY) | {audit.SECRET_IN_BYTES}
    # compressed, the qcow2 file hides the secret: only the raw form shows it
    raw_hits = [f["where"] for f in report["findings"] if f["check"] == audit.SECRET_IN_BYTES]
    assert raw_hits and all("(as raw)" in w for w in raw_hits)
    nothing_left(tmp_path, image)


def test_triplet_kernel_and_ramdisk_bytes(tmp_path):
    root = ext4(tmp_path / "root.img", clean_tree(tmp_path))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(MiB))
    ramdisk = tmp_path / "initrd"
    ramdisk.write_bytes(os.urandom(MiB) + f"password={SECRET}".encode() + os.urandom(4096))
    report = audit.audit(str(root), SECRETS, kernel=str(kernel), ramdisk=str(ramdisk), workdir=tmp_path)
    assert [(f["check"], f["where"]) for f in report["findings"]] == [
        (audit.SECRET_IN_BYTES, f"{ramdisk} at byte {MiB + len('password=')}")]
    assert report["bytes_searched"] == root.stat().st_size + 2 * MiB + len(f"password={SECRET}") + 4096


def test_secret_across_chunk_boundaries(tmp_path):
    data = bytearray(os.urandom(400))
    needle = b"across-the-boundary"
    for at in (5, 90, 185, 300, 381):  # inside, across, starting at the 100-byte chunk edges, at the end
        data[at:at + len(needle)] = needle
    path = tmp_path / "blob"
    path.write_bytes(bytes(data))
    assert audit.find_in_file(str(path), {"n": needle}, chunk=100) == {"n": (5, 5)}


def test_short_or_odd_secrets_are_refused(tmp_path, dirty):
    with pytest.raises(InvalidArgument, match="secret pin is 4 bytes long: at least 6"):
        audit.audit(str(dirty), {"pin": "1234"})
    with pytest.raises(InvalidArgument, match="secret port: a string, not int"):
        audit.audit(str(dirty), {"port": 5432})
    with pytest.raises(InvalidArgument, match="image '/no/such.img' is not a file"):
        audit.audit("/no/such.img")


def test_not_an_image(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(MiB))
    with pytest.raises(audit.AuditError, match="no filesystem to mount"):
        audit.audit(str(junk), workdir=tmp_path)
    nothing_left(tmp_path, junk)


def test_scrub_then_audit_finds_only_what_scrub_does_not_know(tmp_path):
    """The audit does not trust the scrub: a key under /srv, credentials in a profile script
    and the secret in an application's config survive a scrub, and the audit says so."""
    tree = dirty_tree(tmp_path)
    make_tree(tree, {"/etc/profile.d/cloud.sh": f"export OS_PASSWORD={PASSWORD}\n"})
    scrub.scrub(str(tree), trim=False)
    report = audit.audit(str(ext4(tmp_path / "scrubbed.raw", tree)), SECRETS, workdir=tmp_path)
    assert {(c, w) for c, w in found(report) if c != audit.SECRET_IN_BYTES} == {
        ("SSH private keys", "/srv/app/deploy.pem"),
        ("cloud credentials", "/root/.config/openstack/clouds.yaml"),
        ("cloud credentials", "/etc/profile.d/cloud.sh"),
        (audit.SECRET_IN_FILE, "/etc/app/app.conf"),
        (audit.SECRET_IN_FILE, "/etc/profile.d/cloud.sh"),
    }


def test_cli_exit_status_and_interrupt_cleans_up(tmp_path, dirty):
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{SECRET}\n{PASSWORD}\n")
    clean = ext4(tmp_path / "clean.raw", clean_tree(tmp_path))
    env = dict(os.environ, TMPDIR=str(tmp_path))
    cli = [sys.executable, "-m", "saltami.audit", "--secret-file", str(secrets)]
    ok = subprocess.run(cli + [str(clean)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "0 finding(s)" in ok.stdout
    bad = subprocess.run(cli + [str(clean), str(dirty)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and f"{secrets}:2" in bad.stdout and PASSWORD not in bad.stdout
    # killed while the image is mounted: it unmounts and detaches all the same
    big = tmp_path / "big.raw"
    ext4(big, clean_tree(tmp_path, "big"), "16M")
    subprocess.run(["truncate", "-s", "512M", str(big)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 32M 256M", str(big)], check=True,
                   stdout=subprocess.DEVNULL)
    proc = subprocess.Popen(cli + [str(big)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not disk.mounts_below(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert disk.mounts_below(tmp_path), "the audit never mounted the image"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    nothing_left(tmp_path, big, clean, dirty)


def test_ami_audit_module_with_a_flavours_secrets(salt_call, tmp_path):
    tree = make_tree(clean_tree(tmp_path), {"/etc/app/app.conf": f"token: {SECRET}\n"})
    image = ext4(tmp_path / "app.raw", tree)
    ret = salt_call.run("ami.audit", str(image), flavour="amitest")
    assert ret.returncode == 1
    assert [(f["check"], f["where"], f["detail"]) for f in ret.data["findings"]][0] == \
        (audit.SECRET_IN_FILE, "/etc/app/app.conf", "flavour pillar:amitest:secret")
    clean = ext4(tmp_path / "clean.raw", clean_tree(tmp_path, "clean2"))
    ret = salt_call.run("ami.audit", str(clean), flavour="amitest", secrets=[PASSWORD])
    assert ret.returncode == 0 and ret.data["findings"] == [] and ret.data["format"] == "raw"
