"""The local provider's outputs, made from its baked disk into the build's output directory,
with a JSON manifest (provenance, sizes, sha256 of each file):

- ``qcow2``: compressed with zlib, which every qemu reads (old clouds);
- ``qcow2-zstd``: compressed with zstd, smaller and much faster to make (qemu >= 5.1);
- ``raw``: the disk itself, sparse;
- ``ami``: the AMI triplet, as the by-hand recipe for Debian on OpenStack makes it: the
  image's kernel and initrd, and its root filesystem alone, made anew with ``mkfs.ext4 -d``
  (same label and UUID, so the image's fstab still finds it; no deleted blocks of the bake
  in it) and then shrunk to what it holds (``resize2fs -M``, truncate).

The directory is ``<output_dir or <cachedir>/images/<flavour>>/<build id>``; it appears
under that name only complete, and a failed build removes it.
"""
import json
import os
import shutil
import time
from pathlib import Path

from .. import command, disk, provenance
from ..digest import file_digest
from ..errors import InvalidArgument
from . import mount
from .disk import work_file

NAME = "outputs"
MANIFEST = "manifest.json"
# what qemu-img calls the compression of each qcow2 output
QCOW2 = {"qcow2": "zlib", "qcow2-zstd": "zstd"}
# room for mkfs.ext4 -d to fill before resize2fs -M takes the filesystem down to its content
AMI_SLACK, AMI_EXTRA = 1.25, 64 << 20
AMI_JOURNAL_MIB = 16
# free room in the triplet's root after the shrink: its first boot writes (cloud-init's state,
# logs, the journal, host keys) before anything grows the root, and a root with no free block
# or inode fails them (ENOSPC, and cloud-init never finishes): a tenth of the used bytes, at
# least 64 MiB; the groups added with it bring their own inodes
AMI_HEADROOM, AMI_HEADROOM_MIN = 0.10, 64 << 20


def output_root(spec, cachedir):
    return Path(spec.get("output_dir") or os.path.join(cachedir, "images", spec["name"]))


def find_built(spec, cachedir, fingerprint):
    """The output directory of an earlier build with this fingerprint, if one is complete."""
    for manifest in sorted(output_root(spec, cachedir).glob(f"*/{MANIFEST}"), reverse=True):
        try:
            if json.loads(manifest.read_text()).get("fingerprint") == fingerprint:
                return manifest.parent
        except (OSError, ValueError):
            continue
    return None


def file_info(path, directory):
    st = os.stat(path)
    return {"file": os.path.relpath(path, directory), "size": st.st_size,
            "allocated": st.st_blocks * 512, "sha256": file_digest(path)}


def qcow2(source, target, compression):
    command.run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
                f"compression_type={compression}", source, target)


def raw(source, target):
    command.run("cp", "--sparse=always", source, target)


def _inside(root, link):
    """Where a symlink of the image points, as a path on this machine (never out of root)."""
    target = os.readlink(link)
    base = root if target.startswith("/") else os.path.dirname(link)
    return os.path.join(base, target.lstrip("/"))


def boot_files(root):
    """(kernel, initrd) of the mounted image: those /vmlinuz and /initrd.img name (Debian
    keeps them on the newest kernel), else the newest in /boot."""
    found = []
    for link, pattern in (("vmlinuz", "vmlinuz-*"), ("initrd.img", "initrd.img-*")):
        path = Path(root, link)
        if path.is_symlink() and Path(_inside(root, path)).is_file():
            found.append(Path(_inside(root, path)))
            continue
        candidates = sorted(Path(root, "boot").glob(pattern), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise InvalidArgument(f"the image has no /{link} nor /boot/{pattern}: the AMI "
                                  "triplet needs a kernel and an initrd in the image")
        found.append(candidates[-1])
    return tuple(found)


def filesystem_ids(node):
    """LABEL and UUID of a filesystem, to give them to its copy."""
    out = command.run("blkid", "--probe", "--output", "export", node, check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def minimal_filesystem(root, target, ids):
    """An ext4 filesystem at ``target`` holding the tree at ``root``, no bigger than what it
    holds and the room its first boot needs: mkfs.ext4 -d with room to spare, then resize2fs
    -M (again while it still shrinks), then grown by AMI_HEADROOM."""
    used, _ = disk.filesystem_usage(root)
    st = os.statvfs(root)
    inodes = int((st.f_files - st.f_ffree) * 1.1) + 1024
    size = int(used * AMI_SLACK) + AMI_EXTRA
    # inodes as dense as the tree's: a block group holds a fixed share of them, so with fewer
    # per group than the data has, the groups the inodes need stop resize2fs -M short
    bytes_per_inode = min(max(used // inodes, 1024), 1 << 26)
    cmd = ["mkfs.ext4", "-q", "-F", "-i", str(bytes_per_inode), "-J", f"size={AMI_JOURNAL_MIB}", "-d", root]
    if ids.get("LABEL"):
        cmd += ["-L", ids["LABEL"]]
    if ids.get("UUID"):
        cmd += ["-U", ids["UUID"]]
    command.run(*cmd, target, f"{size // 1024}k")
    blocks = None
    for _ in range(4):
        command.run("e2fsck", "-f", "-y", target)
        command.run("resize2fs", "-M", target)
        count, block_size = _block_count(target)
        if count == blocks:
            break
        blocks = count
    os.truncate(target, blocks * block_size)
    room = max(int(blocks * block_size * AMI_HEADROOM), AMI_HEADROOM_MIN) // block_size
    os.truncate(target, (blocks + room) * block_size)
    command.run("resize2fs", target)  # grows the filesystem to the file's new end


def _block_count(path):
    out = command.run("dumpe2fs", "-h", path)
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]), int(fields["Block size"])


def ami(root, node, directory, stem):
    kernel, initrd = boot_files(root)
    files = {"kernel": directory / f"{stem}.vmlinuz", "ramdisk": directory / f"{stem}.initrd",
             "root": directory / f"{stem}.root.img"}
    shutil.copyfile(kernel, files["kernel"])
    shutil.copyfile(initrd, files["ramdisk"])
    ids = filesystem_ids(node)
    minimal_filesystem(root, str(files["root"]), ids)
    root_arg = f"LABEL={ids['LABEL']}" if ids.get("LABEL") else "/dev/vda"
    return files, {"kernel_version": kernel.name.split("-", 1)[-1],
                   "command_line": f"root={root_arg} ro console=tty0 console=ttyS0"}


def run(build, ctx):
    spec = ctx.spec
    work = work_file(build)
    final = output_root(spec, ctx.cachedir) / build.id
    partial = final.with_name(final.name + ".partial")
    for directory in (partial, final):
        build.add("output", str(directory))  # before they exist: a kill must still remove them
    partial.mkdir(parents=True)
    stem = provenance.final_name(build, spec)
    made, timings = {}, {}
    root = mount.root_of(build)
    build.add("mount", root)
    device = disk.attach_loop(work, read_only=True)
    try:
        node = disk.mount_root(device, root)
        used, _ = disk.filesystem_usage(root)
        for kind in spec["outputs"]:
            t0 = time.monotonic()
            if kind in QCOW2:
                target = partial / f"{stem}{'' if kind == 'qcow2' else '-zstd'}.qcow2"
                qcow2(work, target, QCOW2[kind])
                made[kind] = {"files": {"image": target}, "disk_format": "qcow2", "compression": QCOW2[kind]}
            elif kind == "raw":
                target = partial / f"{stem}.raw"
                raw(work, target)
                made[kind] = {"files": {"image": target}, "disk_format": "raw"}
            else:
                files, details = ami(root, node, partial, stem)
                made[kind] = {"files": files, "disk_format": "ami", **details}
            timings[kind] = round(time.monotonic() - t0, 2)
    finally:
        disk.unmount_root(device, root)
        mount.undo(build, ctx)
        disk.detach_loops_of(work)
    outputs = {kind: {**entry, "seconds": timings[kind],
                      "files": {part: file_info(path, partial) for part, path in entry["files"].items()}}
               for kind, entry in made.items()}
    props = {k: v for k, v in provenance.properties(build, spec).items() if k != provenance.STATUS}
    manifest = {"build": build.id, "flavour": spec["name"], "name": stem,
                "fingerprint": build.data["fingerprint"], "base": build.data["base"],
                "disk": {"size": os.path.getsize(work), "used_bytes": used},
                "outputs": outputs, "properties": props}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.rename(partial, final)
    build.data["outputs"].update(directory=str(final), files={
        kind: {part: str(final / info["file"]) for part, info in entry["files"].items()}
        for kind, entry in outputs.items()},
        # how the triplet boots: its kernel's command line goes on the image (os_command_line)
        command_lines={kind: entry["command_line"] for kind, entry in outputs.items() if "command_line" in entry})
    build.save()
    return {"directory": str(final), "used_bytes": used,
            "outputs": {kind: {"seconds": e["seconds"], **{part: i["size"] for part, i in e["files"].items()}}
                        for kind, e in outputs.items()}}


def undo(build, ctx):
    for directory in build.made("output"):
        shutil.rmtree(directory, ignore_errors=True)
        build.forget("output", directory)
