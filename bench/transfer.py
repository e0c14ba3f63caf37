"""Image transfer: saltami.cloud.glance.upload/download of a large sparse raw image against
plain curl, on the local cloud: throughput and peak memory.

    .venv/bin/python bench/transfer.py [--size-gib 4] [--rounds 2] [--workdir /var/tmp]

The image is a sparse file with a few MiB of random data at a few offsets (so its hash means
something). Each transfer runs in a child process whose peak RSS (VmHWM) is reported;
"python idle" is a child that only imports saltami and authenticates, the floor under the
saltami figures. Every round runs every transfer; the fastest of each is reported, and all
rounds' times are listed. Everything made (images, files) is deleted at the end.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402
from saltami.cloud import glance  # noqa: E402
from saltami.cloud.api import service_errors  # noqa: E402
from saltami.cloud.auth import connect  # noqa: E402

CLOUD = "localcloud"
CLOUDS_YAML = "/var/lib/localcloud/clouds.yaml"
MiB = 1 << 20
GiB = 1 << 30
RANDOM_CHUNK = 2 * MiB
RANDOM_OFFSETS = 4
POLL = 0.05


def child(mode, args):
    """The measured side, in its own process: prints one JSON line."""
    clients = connect(cloud=CLOUD)
    if mode == "idle":
        clients.session.get_token()
        result = {}
    elif mode == "upload":
        path, name = args
        image = glance.upload(clients, path, name, disk_format="raw")
        result = {k: image[k] for k in ("id", "os_hash_value", "uploaded_bytes", "seconds")}
    else:
        image_id, path = args
        result = glance.download(clients, image_id, path)
    # exact, where the parent's polling could miss the last moments
    result["vm_hwm"] = vm_hwm("self")
    print(json.dumps(result))


def vm_hwm(pid):
    """Peak RSS of a running process, in MiB (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return None


def run_measured(cmd):
    """Run ``cmd``; returns (stdout, peak RSS in MiB). The peak is polled from VmHWM, which
    only grows, until the process exits: ru_maxrss from wait4 would not do, as it counts
    the parent's memory the child had between fork and exec."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, vm_hwm(proc.pid) or 0)
            time.sleep(POLL)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd[:4])}... failed with status {proc.returncode}")
        out.seek(0)
        return out.read(), peak


def python_child(mode, *args):
    out, rss = run_measured([sys.executable, __file__, "--child", mode, *args])
    result = json.loads(out.strip().splitlines()[-1])
    return result, max(rss, result.pop("vm_hwm"))


def curl(args, header_file):
    """curl with the token read from a file, so it is not on any command line."""
    out, rss = run_measured(["curl", "-sS", "--fail-with-body", "-H", f"@{header_file}",
                                   "-w", "%{time_total}", *args])
    return float(out.strip().splitlines()[-1]), rss


def make_sparse(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(RANDOM_OFFSETS):
            f.seek(min(i * size // RANDOM_OFFSETS + 12345 * i, size - RANDOM_CHUNK))
            f.write(os.urandom(RANDOM_CHUNK))


def local_sha512(path):
    started = time.monotonic()
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest(), time.monotonic() - started


def one_round(clients, endpoint, source, fetched, header, expected, size):
    """Each transfer once: {transfer: (seconds, peak RSS MiB)}."""
    got = {}
    images = []
    try:
        up, rss = python_child("upload", str(source), f"bench-transfer-{os.getpid()}")
        images.append(up["id"])
        assert up["os_hash_value"] == expected, "Glance stored another hash"
        got["saltami upload"] = (up["seconds"], rss)
        down, rss = python_child("download", up["id"], str(fetched))
        assert down["verified"] and down["hash_value"] == expected
        got["saltami download"] = (down["seconds"], rss)
        fetched.unlink()
        got["curl download"] = curl([f"{endpoint}/v2/images/{up['id']}/file", "-o", str(fetched)], header)
        assert fetched.stat().st_size == size
        fetched.unlink()
        glance.delete(clients, images.pop())

        with service_errors("creating the image record for curl"):
            record = clients.glance.images.create(name=f"bench-transfer-curl-{os.getpid()}",
                                                  disk_format="raw", container_format="bare",
                                                  visibility="private")
        images.append(record["id"])
        got["curl upload"] = curl(["-T", str(source), "-H", "Content-Type: application/octet-stream",
                                   f"{endpoint}/v2/images/{record['id']}/file"], header)
        assert glance.show(clients, record["id"])["os_hash_value"] == expected
    finally:
        for image_id in images:
            glance.delete(clients, image_id, force=True)
    return got


ROWS = (("saltami upload", "saltami upload (`glance.upload`: sha512 while streaming, verified)", "curl upload"),
        ("curl upload", "curl -T upload (no client-side hash)", "curl upload"),
        ("saltami download", "saltami download (`glance.download`: sha512 while streaming, verified)",
         "curl download"),
        ("curl download", "curl download to a file (no hash)", "curl download"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of all transfers; the fastest of each is kept (shared, noisy machine)")
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", CLOUDS_YAML)
    if opts.child:
        return child(opts.child[0], opts.child[1:])

    size = opts.size_gib * GiB
    free = shutil.disk_usage(opts.workdir).free
    # Glance's copy and the downloaded copy are not sparse
    if free < 2 * size + GiB:
        raise SystemExit(f"{opts.workdir} has {free / GiB:.1f} GiB free, {2 * size / GiB + 1:.0f} needed")
    clients = connect(cloud=CLOUD)
    endpoint = clients.session.get_endpoint(service_type="image", interface=clients.interface,
                                            region_name=clients.region_name).rstrip("/")
    work = Path(tempfile.mkdtemp(prefix="saltami-bench-", dir=opts.workdir))
    source, fetched, header = work / "source.raw", work / "fetched.raw", work / "token.hdr"
    rounds = []
    try:
        make_sparse(source, size)
        expected, hash_seconds = local_sha512(source)
        _, idle_rss = python_child("idle")
        header.touch(mode=0o600)
        header.write_text(f"X-Auth-Token: {clients.session.get_token()}\n")
        for _ in range(opts.rounds):
            rounds.append(one_round(clients, endpoint, source, fetched, header, expected, size))
    finally:
        shutil.rmtree(work)

    best = {key: (min(r[key][0] for r in rounds), max(r[key][1] for r in rounds)) for key in rounds[0]}
    table = ["| transfer | seconds | MB/s | time vs curl | peak RSS (MiB) |", "|---|---:|---:|---:|---:|"]
    for key, label, reference in ROWS:
        seconds, rss = best[key]
        table.append(f"| {label} | {seconds:.1f} | {size / seconds / 1e6:.0f} | "
                     f"{seconds / best[reference][0]:.2f}x | {rss:.0f} |")
    table.append(f"| local read + sha512 of the source, in-process | {hash_seconds:.1f} | "
                 f"{size / hash_seconds / 1e6:.0f} | | |")
    table.append(f"| python idle: import saltami, authenticate | | | | {idle_rss:.0f} |")
    spread = "; ".join(f"{key} " + "/".join(f"{r[key][0]:.1f}" for r in rounds) for key, _, _ in ROWS)
    body = (f"A {opts.size_gib} GiB sparse raw image ({RANDOM_OFFSETS} x {RANDOM_CHUNK // MiB} MiB of "
            f"random data) to and from the local cloud's Glance (file store, same disk, 127.0.0.1), "
            f"each transfer in its own process, {opts.rounds} rounds, fastest kept. MB = 10^6 "
            f"bytes; saltami times are the library's own `seconds` (the transfer), curl's its "
            f"`time_total`; peak RSS is the process's VmHWM.\n\n" + "\n".join(table)
            + f"\n\nSeconds per round: {spread}.\n")
    write_section("transfer", "Image transfer: saltami vs curl", body)


if __name__ == "__main__":
    main()
