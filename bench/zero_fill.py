"""What clearing the free space costs, on the test images: a disk where 256 MiB of random data
were written and deleted (as a build's downloads and temporary files are), then either left
as it is, trimmed (fstrim: where the disk honours discard, as a loop device does), or
zero-filled (what the scrub does where discard cannot be shown to free the blocks, as on a
default nova whose disks ignore it); then converted to qcow2 (zlib, what a snapshot upload or
the local provider's default output is). Seconds of the clearing and the image's size.

    .venv/bin/python bench/zero_fill.py        # as root: loop devices and mounts
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]

from report import write_section  # noqa: E402
from saltami import disk, scrub  # noqa: E402

DELETED = 256 << 20


def images():
    from localcloud import baseimage, guestimage

    return {"base test image (1 GiB raw, chroot instances)": baseimage.ensure_base_image(),
            "guest image (2 GiB, real guests)": guestimage.ensure_guest_image()}


def one(source, how, work):
    raw = work / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(source), str(raw)], check=True)
    device = disk.attach_loop(str(raw))
    mnt = work / "mnt"
    try:
        disk.mount_root(device, str(mnt))
        used_before, _total = disk.filesystem_usage(str(mnt))
        with open(mnt / "deleted.bin", "wb") as f:
            for _ in range(DELETED >> 20):
                f.write(os.urandom(1 << 20))
            os.fsync(f.fileno())
        os.unlink(mnt / "deleted.bin")
        os.sync()
        t0 = time.monotonic()
        if how == "zero-fill":
            scrub.zero_fill(str(mnt))
        elif how == "fstrim":
            subprocess.run(["fstrim", str(mnt)], check=True)
        seconds = time.monotonic() - t0
    finally:
        disk.unmount_root(device, str(mnt))
        disk.detach_loops_of(str(raw))
    qcow2 = work / "disk.qcow2"
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    convert = time.monotonic() - t0
    size = qcow2.stat().st_size
    raw.unlink()
    qcow2.unlink()
    return {"seconds": seconds, "convert": convert, "size": size, "used": used_before}


def main():
    if os.geteuid() != 0:
        sys.exit("zero_fill.py needs root (loop devices, mounts)")
    body = ("| image | free space | clearing | qcow2 (zlib) made in | qcow2 size |\n"
            "|---|---|---:|---:|---:|\n")
    for name, source in images().items():
        for how in ("left as it is", "fstrim", "zero-fill"):
            work = Path(tempfile.mkdtemp(prefix="bench-zero-fill-"))
            try:
                r = one(source, how, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            body += (f"| {name} | {how} | {r['seconds']:.1f} s | {r['convert']:.1f} s "
                     f"| {r['size'] / 2**20:.0f} MiB |\n")
            print(name, how, r, flush=True)
    body += (f"\nEach image had {DELETED >> 20} MiB of random data written and deleted before the clearing. "
             "Left as it is, the deleted data ships in the image (and any secret among it); fstrim frees it where "
             "the disk honours discard (here a loop device, which punches holes), and where it does not (a "
             "default nova's disks: the guest's fstrim succeeds and frees nothing) only the zero-fill clears it, "
             "at the cost shown: writing every free block once. The scrub tells the two cases apart by reading "
             "back the blocks of a deleted probe file after fstrim (saltami/scrub.py, DiscardProbe).\n")
    write_section("zero_fill", "Clearing the free space: fstrim against zero-fill", body,
                  command="python bench/zero_fill.py")


if __name__ == "__main__":
    main()
