#!/usr/bin/env python3
"""Build and cache the localcloud base test image.

The base image is a raw 1 GiB disk (MBR, one ext4 partition labelled
``rootfs`` starting at 1 MiB) holding a minimal Debian bookworm with salt
installed in a venv at /opt/salt. Building it takes minutes, so it is cached
as ``<home>/cache/base-<key>.raw``, where the key hashes everything that goes
into the image; a cached call returns at once.

As a module::

    from baseimage import ensure_base_image
    path = ensure_base_image()          # build if needed, return the path

As a script (needs root: loop devices, mounts, chroot)::

    python3 tests/localcloud/baseimage.py [--home DIR] [--force]

prints the image path on stdout and progress with timings on stderr.
Callers must not modify the cached file: copy it, or use it as a read-only
backing file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from saltami import chroot, disk

# the vanilla image of the local provider is built the same way
from saltami.vanilla import VanillaError as BuildError
from saltami.vanilla import debian_mirror, in_chroot, locked, run

SUITE = "bookworm"
# e2fsprogs, util-linux and mount come with minbase today; they are listed so
# the image keeps them even if their Debian priority changes.
PACKAGES = (
    "python3",
    "python3-venv",
    "ca-certificates",
    "e2fsprogs",
    "util-linux",
    "mount",
    "procps",
    "iproute2",
)
HOSTNAME = "localcloud-base"
IMAGE_SIZE = 1 << 30
PARTITION_START = 2048  # in 512-byte sectors: 1 MiB, the usual alignment
SALT_VENV = "/opt/salt"
# Linked into /usr/bin if the salt wheel installs them; salt-call must exist.
SALT_LINKS = ("salt-call", "salt-minion", "salt-key")
DEFAULT_HOME = "/var/lib/localcloud"

SCRIPT = Path(__file__).resolve()
REQUIREMENTS = SCRIPT.with_name("salt-image-requirements.txt")
HOST_TOOLS = ("debootstrap", "sfdisk", "losetup", "partx", "mkfs.ext4",
              "mount", "umount", "fstrim", "chroot")

def ensure_base_image(home: str | os.PathLike | None = None, *,
                      force: bool = False) -> Path:
    """Return the cached base image, building it first if needed.

    home defaults to $LOCALCLOUD_HOME, then /var/lib/localcloud. With force,
    the image is rebuilt even if cached (the wheel and .deb caches are kept).
    """
    cache = localcloud_home(home) / "cache"
    key = cache_key()
    image = cache / f"base-{key[:16]}.raw"
    # The image only appears under its final name once complete.
    if image.exists() and not force:
        return image
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / "base.lock"):
        # Another caller may have built it while we waited for the lock.
        if force or not image.exists():
            _build(image, cache, key)
    return image


def as_qcow2(raw: Path) -> Path:
    """The base image converted to qcow2 (uncompressed: its zeros are not stored), cached
    beside the raw disk under the same key."""
    image = raw.with_suffix(".qcow2")
    if image.exists():
        return image
    with locked(raw.parent / "base.lock"):
        if not image.exists():
            partial = image.with_name(image.name + ".partial")
            run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(partial))
            partial.rename(image)
    return image


def localcloud_home(home: str | os.PathLike | None = None) -> Path:
    return Path(home or os.environ.get("LOCALCLOUD_HOME") or DEFAULT_HOME)


def cache_key() -> str:
    """sha256 over every input of the image, this script included."""
    digest = hashlib.sha256()
    for part in (SUITE.encode(), "\n".join(PACKAGES).encode(),
                 REQUIREMENTS.read_bytes(), SCRIPT.read_bytes()):
        # Length prefixes keep the parts from running into each other.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def requirement_lines() -> list[str]:
    """The pins of salt-image-requirements.txt, without comments."""
    lines = (line.split("#")[0].strip()
             for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def salt_version() -> str:
    for line in requirement_lines():
        name, _, version = line.partition("==")
        if name.lower() == "salt":
            return version
    raise BuildError(f"{REQUIREMENTS} pins no salt version")


# --- build ------------------------------------------------------------------

def _build(image: Path, cache: Path, key: str) -> None:
    _check_host()
    started = time.monotonic()
    log(f"building {image.name}")
    wheels = _fetch_wheels(cache)
    partial = image.with_name(image.name + ".partial")
    try:
        with _step("partition"):
            _make_disk(partial)
        with _attached(partial) as partition:
            with _step("mkfs"):
                run("mkfs.ext4", "-q", "-L", "rootfs", partition)
            with _mounted(partition) as root:
                with _step("debootstrap (includes the extra packages)"):
                    _debootstrap(root, cache)
                _configure(root, key)
                with _chroot_session(root):
                    _install_salt(root, wheels)
                with _step("clean and fstrim"):
                    _clean(root)
                    # Loop devices punch holes on discard: the file stays
                    # sparse.
                    run("fstrim", root)
        partial.rename(image)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    log(f"built {image} in {time.monotonic() - started:.1f}s")


def _check_host() -> None:
    if os.geteuid() != 0:
        raise BuildError("building the base image needs root")
    missing = [tool for tool in HOST_TOOLS if not shutil.which(tool)]
    if missing:
        raise BuildError(f"missing host tools: {' '.join(missing)}")


def _fetch_wheels(cache: Path) -> Path:
    """Download the pinned wheels on the host: the chroot has no network.

    Cached by the requirements' content alone, so editing this script does not
    refetch them. Host and image are both Debian 12 with Python 3.11, so the
    host's pip picks wheels that fit the image.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    wheels = cache / f"wheels-{digest}"
    if wheels.is_dir():
        log(f"wheels cached in {wheels}")
        return wheels
    partial = wheels.with_name(wheels.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with _step("fetch wheels"):
        # --no-deps: the requirements file is the complete, pinned set.
        run(sys.executable, "-m", "pip", "wheel", "--no-deps",
            "--wheel-dir", partial, "--requirement", REQUIREMENTS)
    partial.rename(wheels)
    return wheels


def _make_disk(path: Path) -> None:
    with open(path, "wb") as disk:
        disk.truncate(IMAGE_SIZE)
    run("sfdisk", "--quiet", path,
        input=f"label: dos\nstart={PARTITION_START}, type=83\n")


def _debootstrap(root: Path, cache: Path) -> None:
    # debootstrap keeps downloaded .debs here and reuses them on rebuilds.
    debs = cache / f"debs-{SUITE}"
    debs.mkdir(exist_ok=True)
    run("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}", SUITE, root, debian_mirror(SUITE))


def _configure(root: Path, key: str) -> None:
    etc = root / "etc"
    (etc / "hostname").write_text(f"{HOSTNAME}\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (etc / "fstab").write_text("LABEL=rootfs / ext4 defaults 0 1\n")
    # Empty, so each machine made from the image gets its own id at boot.
    (etc / "machine-id").write_text("")
    # debootstrap copied the host's resolver config, meaningless in a VM.
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "salt/minion.d").mkdir(parents=True, exist_ok=True)
    built = datetime.datetime.now(datetime.timezone.utc)
    marker = {"key": key, "suite": SUITE, "salt": salt_version(),
              "built": built.isoformat(timespec="seconds")}
    marker_text = json.dumps(marker, indent=2) + "\n"
    (etc / "localcloud-base.json").write_text(marker_text)


def _install_salt(root: Path, wheels: Path) -> None:
    staged = root / "tmp/salt-wheels"
    shutil.copytree(wheels, staged)
    shutil.copy(REQUIREMENTS, staged / "requirements.txt")
    pip = f"{SALT_VENV}/bin/pip"
    try:
        with _step("pip install in chroot"):
            in_chroot(root, "python3", "-m", "venv", SALT_VENV)
            in_chroot(root, pip, "install", "--no-index", "--no-cache-dir",
                       "--root-user-action=ignore",
                       "--find-links", "/tmp/salt-wheels",
                       "--requirement", "/tmp/salt-wheels/requirements.txt")
    finally:
        shutil.rmtree(staged)
    with _step("check salt"):
        _check_frozen(root, pip)
        _link_salt_scripts(root)
        reported = in_chroot(root, "salt-call", "--version")
        if salt_version() not in reported:
            raise BuildError(f"salt-call --version in the image: {reported!r}")


def _check_frozen(root: Path, pip: str) -> None:
    """Fail unless the venv holds exactly the pins: keeps the list complete."""
    frozen = set(in_chroot(root, pip, "freeze", "--all", "--exclude", "pip")
                 .split())
    pinned = set(requirement_lines())
    if frozen != pinned:
        raise BuildError(
            f"the image's venv differs from {REQUIREMENTS.name}: "
            f"pinned but not installed {sorted(pinned - frozen)}, "
            f"installed but not pinned {sorted(frozen - pinned)}")


def _link_salt_scripts(root: Path) -> None:
    venv_bin = root / SALT_VENV.lstrip("/") / "bin"
    if not (venv_bin / "salt-call").exists():
        raise BuildError(f"salt installed no salt-call in {SALT_VENV}/bin")
    for name in SALT_LINKS:
        if (venv_bin / name).exists():
            (root / "usr/bin" / name).symlink_to(f"{SALT_VENV}/bin/{name}")


def _clean(root: Path) -> None:
    """Drop apt's package lists and caches: stale in any image, and big."""
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin",
                    "var/cache/apt/archives/*.deb",
                    "var/cache/apt/archives/partial/*"):
        for path in root.glob(pattern):
            if not path.is_dir():
                path.unlink()


# --- host resources ---------------------------------------------------------

@contextlib.contextmanager
def _attached(image: Path):
    """Attach image to a loop device; yield the device of its partition."""
    loop = run("losetup", "--find", "--show", image).strip()
    try:
        # The kernel does not scan partitions here: partx adds them itself.
        run("partx", "--add", loop)
        try:
            partition = f"{loop}p1"
            _wait_for_device(partition)
            yield partition
        finally:
            run("partx", "--delete", loop)
    finally:
        run("losetup", "--detach", loop)


def _wait_for_device(path: str, timeout: float = 10.0) -> None:
    # devtmpfs creates the node asynchronously after partx returns.
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise BuildError(f"{path} did not appear")
        time.sleep(0.05)


@contextlib.contextmanager
def _mounted(device: str):
    root = Path(tempfile.mkdtemp(prefix="localcloud-base-"))
    try:
        run("mount", device, root)
        try:
            yield root
        finally:
            # also the mounts a killed debootstrap left behind
            disk.unmount_below(root)
    finally:
        root.rmdir()


@contextlib.contextmanager
def _chroot_session(root: Path):
    """The API filesystems mounted into root, and no daemons started."""
    chroot.prepare(root)
    try:
        yield
    finally:
        chroot.teardown(root)


# --- progress ---------------------------------------------------------------

def log(message: str) -> None:
    print(f"[baseimage] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _step(name: str):
    log(f"{name} ...")
    started = time.monotonic()
    yield
    log(f"{name}: {time.monotonic() - started:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build (if needed) the localcloud base image and print "
                    "its path.")
    parser.add_argument("--home", help="localcloud state directory (default: "
                        f"$LOCALCLOUD_HOME or {DEFAULT_HOME})")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if cached")
    args = parser.parse_args(argv)
    # Turn SIGTERM into an exception, so the finally blocks release loop
    # devices and mounts.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        print(ensure_base_image(args.home, force=args.force))
    except BuildError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
