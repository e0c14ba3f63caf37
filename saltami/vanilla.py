"""Vanilla base images for the local provider, where the user has no base image of their
own: a minimal Debian made with debootstrap, with a kernel, GRUB, cloud-init and DHCP, as
build-debian-cloud and diskimage-builder make them.

The image is a raw disk: an MBR with one bootable ext4 partition labelled ``rootfs`` from
1 MiB, mounted by label, the serial console on the kernel command line. Building one takes
a few minutes, so it is cached as ``<cache>/<release>-<key>.raw`` where the key hashes what
goes into it (suite, packages, this file); concurrent callers wait on one flock and the
second finds the first's image. A build killed half-way leaves ``.partial`` files, a mount
and a loop device behind: the next build (under the same lock) removes them first.

    python -m saltami.vanilla [debian-12] [--cache DIR] [--force]

prints the image's path (building it if needed) and the build's timings.
"""
import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import chroot, disk, scrub
from .errors import AmiError, InvalidArgument

log = logging.getLogger(__name__)

RELEASES = {"debian-12": "bookworm"}
DEFAULT_RELEASE = "debian-12"
CACHE = os.path.join(chroot.CACHEDIR, "vanilla")
# installed with apt after debootstrap's minbase: debootstrap's own resolver misses
# dependencies on virtual packages (python3-cryptography's on the cffi backend)
# dbus: without it systemd-logind does not run, and nothing acts on the ACPI power button
# that a cloud's stop (and a clean snapshot) presses
PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "cloud-init",
            "ifupdown", "isc-dhcp-client", "openssh-server", "ca-certificates", "e2fsprogs",
            "procps", "iproute2", "zstd")
BOOTLOADER = "grub-pc"
# dpkg syncs every file it unpacks; on a loop device that is most of the build's time, and
# an image that fails half-way is thrown away anyway
UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/salt-ami-build"
SIZE = 2 << 30
PARTITION_START = 2048  # sectors of 512 bytes: 1 MiB, the usual alignment
LABEL = "rootfs"
HOSTNAME = "debian"
CMDLINE = "console=tty0 console=ttyS0,115200n8"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
HOST_TOOLS = ("debootstrap", "sfdisk", "losetup", "partx", "mkfs.ext4", "mount", "umount", "chroot")
MARKER = "etc/salt-ami-vanilla.json"
CHROOT_ENV = {"PATH": chroot.PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}

# grub-mkconfig reads this after probing the root device: here the probe finds the build's
# loop device, which the image will never see, so the kernel gets the label instead
GRUB_DEFAULTS = f"""\
# salt-ami vanilla image: boot fast, talk on the serial console, find the root by its label
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{CMDLINE}"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DEVICE="LABEL={LABEL}"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_LINUX_PARTUUID=true
GRUB_DISABLE_OS_PROBER=true
"""
INTERFACES = """\
# salt-ami vanilla image; cloud-init writes the instance's own network configuration
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
"""


class VanillaError(AmiError):
    """The vanilla image could not be built; the message says which command failed and why."""


def suite_of(release):
    if release not in RELEASES:
        raise InvalidArgument(f"no vanilla image {release!r} (allowed: {', '.join(RELEASES)})")
    return RELEASES[release]


def cache_key(release):
    """sha256 over everything that goes into the image, this file included."""
    digest = hashlib.sha256()
    for part in (suite_of(release), " ".join(PACKAGES), BOOTLOADER, str(SIZE), Path(__file__).read_text()):
        digest.update(len(part).to_bytes(8, "big") + part.encode())
    return digest.hexdigest()


def image_path(release=DEFAULT_RELEASE, cache=CACHE):
    """Where the vanilla image of ``release`` is (or will be) cached."""
    return Path(cache) / f"{release}-{cache_key(release)[:16]}.raw"


def timings_path(image):
    """The build's timings, beside the image: what a first run on a machine pays."""
    return Path(f"{image}.timings.json")


def ensure(release=DEFAULT_RELEASE, cache=CACHE, force=False):
    """The cached vanilla image of ``release``, built first if needed. Callers must not change
    it: they copy it."""
    image = image_path(release, cache)
    if image.exists() and not force:
        return image
    image.parent.mkdir(parents=True, exist_ok=True)
    with locked(image.parent / f"{release}.lock"):
        # another caller may have built it while this one waited
        if force or not image.exists():
            log.info("making the vanilla %s image, once (a few minutes; cached in %s)", release, image.parent)
            build(release, image)
    return image


@contextlib.contextmanager
def locked(path):
    """An exclusive flock on ``path``; the kernel drops it when its holder dies."""
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for the build that holds %s", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_mirror(suite):
    """The Debian mirror this host's apt uses for ``suite``: it is the one known to answer."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        match = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{suite}\s", sources_list.read_text(), re.M)
        if match:
            return match.group(1)
    return FALLBACK_MIRROR


def run(*cmd, input=None, env=None):
    """A long build command's stdout. Its whole process group dies with an interrupt: a
    surviving dpkg under debootstrap would keep the image mounted."""
    argv = [os.fspath(c) for c in cmd]
    proc = subprocess.Popen(argv, env=env, text=True, start_new_session=True,
                            stdin=subprocess.PIPE if input else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(input)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-30:])
        raise VanillaError(f"{shlex.join(argv)} exited {proc.returncode}:\n{tail}")
    return stdout


def in_chroot(root, *cmd):
    return run("chroot", root, *cmd, env=CHROOT_ENV)


@contextlib.contextmanager
def timed(timings, name):
    log.info("vanilla image: %s...", name)
    started = time.monotonic()
    yield
    timings[name] = round(time.monotonic() - started, 1)
    log.info("vanilla image: %s in %.1fs", name, timings[name])


def discard_partial(partial, root):
    """What a killed build left: its mounts, its loop devices, its file."""
    if root.exists():
        disk.unmount_below(root)
        root.rmdir()
    disk.detach_loops_of(partial)
    partial.unlink(missing_ok=True)


def build(release, image):
    """Build the vanilla image of ``release`` at ``image`` (it appears there only complete)."""
    if os.geteuid() != 0:
        raise VanillaError("building a vanilla image needs root (loop devices, mounts, chroot)")
    missing = [tool for tool in HOST_TOOLS if not _which(tool)]
    if missing:
        raise VanillaError(f"building a vanilla image needs {', '.join(missing)} on this machine "
                           "(Debian packages debootstrap, fdisk, util-linux, e2fsprogs, mount)")
    suite = suite_of(release)
    partial, root = image.with_name(image.name + ".partial"), image.with_name(image.name + ".root")
    discard_partial(partial, root)
    timings, started = {}, time.monotonic()
    try:
        with open(partial, "wb") as f:
            f.truncate(SIZE)
        disk.run("sfdisk", "--quiet", partial, input=f"label: dos\nstart={PARTITION_START}, type=83, bootable\n")
        device = disk.attach_loop(partial)
        node = _partition(device)
        disk.run("mkfs.ext4", "-q", "-L", LABEL, node)
        disk.mount(node, root)
        with timed(timings, "debootstrap"):
            debs = image.parent / f"debs-{suite}"
            debs.mkdir(exist_ok=True)
            run("debootstrap", "--variant=minbase", f"--cache-dir={debs}", suite, root, debian_mirror(suite))
        configure(root, release, suite)
        Path(root, UNSAFE_IO).write_text("force-unsafe-io\n")
        chroot.prepare(root)
        try:
            with timed(timings, "packages"):
                in_chroot(root, "apt-get", "update", "-q")
                in_chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES, BOOTLOADER)
            with timed(timings, "bootloader"):
                install_bootloader(root, device)
        finally:
            chroot.teardown(root)
        with timed(timings, "clean"):
            Path(root, UNSAFE_IO).unlink()
            in_chroot(root, "apt-get", "clean")
            scrub.scrub(root=str(root), trim=True)
        disk.unmount_below(root)
        root.rmdir()
        disk.detach_loops_of(partial)
        partial.rename(image)
    except BaseException:
        discard_partial(partial, root)
        raise
    timings["total"] = round(time.monotonic() - started, 1)
    log.info("vanilla image %s built: %s", image, timings)
    timings_path(image).write_text(json.dumps(timings) + "\n")
    return timings


def _which(tool):
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in chroot.PATH.split(":"))


def _partition(device, timeout=10):
    """The node of the disk's one partition: devtmpfs makes it a moment after partx adds it."""
    deadline = time.monotonic() + timeout
    while (node := disk.partition_node(device, 1)) is None:
        if time.monotonic() > deadline:
            raise VanillaError(f"the partition of {device} did not appear")
        time.sleep(0.05)
    return node


def configure(root, release, suite):
    etc = Path(root, "etc")
    (etc / "hostname").write_text(f"{HOSTNAME}\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
                               "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (etc / "fstab").write_text(f"LABEL={LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
    # the locale every Debian has; without one cloud-init's locale module wants en_US.UTF-8,
    # which minbase cannot generate, and fails
    (etc / "default/locale").write_text("LANG=C.UTF-8\n")
    (etc / "network").mkdir(exist_ok=True)
    (etc / "network/interfaces").write_text(INTERFACES)
    mirror = debian_mirror(suite)
    security = debian_mirror(f"{suite}-security")
    (etc / "apt/sources.list").write_text(
        f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
        f"deb {security if security != FALLBACK_MIRROR else mirror + '-security'} {suite}-security main\n")
    (etc / "default/grub.d").mkdir(parents=True, exist_ok=True)
    (etc / "default/grub.d/salt-ami.cfg").write_text(GRUB_DEFAULTS)
    (Path(root, MARKER)).write_text(json.dumps({"release": release, "suite": suite,
                                                "key": cache_key(release)}, indent=1) + "\n")


def install_bootloader(root, device):
    """GRUB on the loop device's MBR, its configuration from the image's own kernel."""
    in_chroot(root, "grub-install", "--target=i386-pc", "--modules=part_msdos ext2", device)
    in_chroot(root, "update-grub")
    config = Path(root, "boot/grub/grub.cfg").read_text()
    if f"root=LABEL={LABEL}" not in config or "/dev/loop" in config:
        raise VanillaError("grub.cfg does not find the root by its label: "
                           + "; ".join(line.strip() for line in config.splitlines()
                                       if "linux\t" in line or "linux " in line))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build (if needed) a vanilla base image and print its path")
    parser.add_argument("release", nargs="?", default=DEFAULT_RELEASE, choices=sorted(RELEASES))
    parser.add_argument("--cache", default=CACHE)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # SIGTERM as an exception: the build's cleanup runs
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    print(ensure(args.release, args.cache, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
