"""The local provider: the vanilla image's build (once per machine), a bake's time by step,
each output's size against the bytes the image uses, and zlib against zstd for qcow2.

    .venv/bin/python bench/local_bake.py

Runs ``salt-call --local ami.bake`` with no master and no cloud, as a user does, on the
vanilla Debian 12 image (built first if this machine has none cached).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import local_minion, salt_call_local  # noqa: E402
from report import write_section  # noqa: E402
from saltami import vanilla  # noqa: E402

FLAVOUR = "bench-local"
MiB = 1 << 20
LOGIN_TIMEOUT = 600


def boot_to_login(image, console):
    """Seconds from qemu's start (TCG, BIOS, the image's GRUB) to the login prompt on the
    serial console, or None."""
    qemu = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-cpu", "max",
                             "-smp", "2", "-m", "1024", "-nographic", "-no-reboot", "-snapshot", "-nodefaults",
                             "-serial", f"file:{console}", "-drive", f"file={image},format=raw,if=virtio"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t = time.monotonic()
    try:
        while time.monotonic() - t < LOGIN_TIMEOUT and qemu.poll() is None:
            if console.exists() and b" login:" in console.read_bytes():
                return time.monotonic() - t
            time.sleep(1)
        return None
    finally:
        if qemu.poll() is None:
            os.kill(qemu.pid, signal.SIGKILL)
        qemu.wait()


def mib(n):
    return f"{n / MiB:,.0f} MiB"


def main():
    t = time.monotonic()
    image = vanilla.ensure()
    ensured = time.monotonic() - t
    built = json.loads(vanilla.timings_path(image).read_text())
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        out = Path(tmp) / "images"
        minion = local_minion(tmp, {FLAVOUR: {
            "strategy": "local", "base": {"vanilla": vanilla.DEFAULT_RELEASE}, "sls": ["amitest"],
            "pillar": {"amitest": {"mark": f"bench-{time.time()}"}}, "output_dir": str(out),
            "outputs": ["qcow2", "qcow2-zstd", "raw", "ami"]}})
        t = time.monotonic()
        result = salt_call_local(minion["config_dir"], "ami.bake", f"flavour={FLAVOUR}")
        wall = time.monotonic() - t
        build = json.loads(Path(result["manifest"]).read_text())
        directory = Path(build["outputs"]["directory"])
        manifest = json.loads((directory / "manifest.json").read_text())
        login = boot_to_login(directory / manifest["outputs"]["raw"]["files"]["image"]["file"],
                              Path(tmp) / "console.log")
    used = manifest["disk"]["used_bytes"]
    outputs = manifest["outputs"]

    body = "### The vanilla image (once per machine, then cached)\n\n| step | time |\n|---|---|\n"
    body += "".join(f"| {step} | {seconds:.0f} s |\n" for step, seconds in built.items())
    body += (f"\nDebian 12 minbase with a kernel, GRUB, cloud-init, ifupdown and DHCP, openssh-server: "
             f"a {mib(image.stat().st_size)} raw disk, {mib(image.stat().st_blocks * 512)} allocated. "
             f"A cached one is found in {ensured:.1f} s.\n\n")
    body += f"### One bake, all four outputs: {wall:.0f} s (`salt-call --local ami.bake`)\n\n"
    body += "| step | time |\n|---|---|\n"
    body += "".join(f"| `{s['name']}` | {s['seconds']:.1f} s |\n" for s in build["steps"])
    body += (f"\n### Sizes against the bytes used\n\nThe baked filesystem uses {mib(used)} of a "
             f"{mib(manifest['disk']['size'])} disk.\n\n| output | file | size | allocated | size / used | made in |\n"
             "|---|---|---|---|---|---|\n")
    for kind, entry in outputs.items():
        for part, info in entry["files"].items():
            body += (f"| {kind} | {part} | {mib(info['size'])} | {mib(info['allocated'])} | "
                     f"{info['size'] / used:.2f} | {entry['seconds']:.1f} s |\n")
    zlib, zstd = outputs["qcow2"], outputs["qcow2-zstd"]
    zs, zt = zlib["files"]["image"]["size"], zstd["files"]["image"]["size"]
    body += (f"\n### qcow2: zlib against zstd\n\n| compression | size | time |\n|---|---|---|\n"
             f"| zlib (every qemu) | {mib(zs)} | {zlib['seconds']:.1f} s |\n"
             f"| zstd (qemu >= 5.1) | {mib(zt)} | {zstd['seconds']:.1f} s |\n\n"
             f"zstd: {zt / zs:.2f}× the size in {zstd['seconds'] / zlib['seconds']:.2f}× the time. "
             "The triplet's root is made anew with `mkfs.ext4 -d` and shrunk with `resize2fs -M`; "
             "its kernel and initrd are the image's own.\n\n"
             f"### Boot\n\nThe raw output booted whole under qemu (TCG, no KVM; SeaBIOS, the image's "
             f"GRUB, kernel, systemd) shows the login prompt on its serial console after "
             f"{f'{login:.0f} s' if login else f'more than {LOGIN_TIMEOUT} s (not reached)'}.\n")
    write_section("local_bake", "Local provider (no cloud)", body, command=".venv/bin/python bench/local_bake.py")


if __name__ == "__main__":
    main()
