"""Secrets audit speed: the raw byte search (saltami.audit.find_in_file) over a 1 GiB file
with every byte written (no holes to skip), for 1, 4 and 16 secrets; and a whole audit
(open, every check, file contents, raw bytes) of the local cloud's 1 GiB base image.

    .venv/bin/python bench/audit.py [--size-mib 1024] [--rounds 3] [--workdir /var/tmp]

The file is written once from random data and read from the page cache after the first
round (24 GiB of memory here); the fastest round is reported. Needs root (loop devices).
"""
import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_section  # noqa: E402
from saltami import audit  # noqa: E402

MiB = 1 << 20
BASE_IMAGES = "/var/lib/localcloud/cache/base-*.raw"


def secrets(n):
    return {f"secret {i}": f"not-in-the-image-{i:04d}-{os.urandom(8).hex()}" for i in range(n)}


def best(rounds, fn):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default="/var/tmp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-audit-") as tmp:
        blob = os.path.join(tmp, "blob")
        with open(blob, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        for n in (1, 4, 16):
            needles = audit._needles(secrets(n))
            seconds = best(args.rounds, lambda: audit.find_in_file(blob, needles))
            rows.append((f"raw search, {args.size_mib} MiB written, {n} secret(s)", seconds,
                         args.size_mib / seconds))
        base = sorted(glob.glob(BASE_IMAGES))
        if base:
            size = os.path.getsize(base[0]) / MiB
            seconds = best(args.rounds, lambda: audit.audit(base[0], secrets(4), workdir=tmp))
            rows.append((f"whole audit of the base image ({size:.0f} MiB raw, sparse), 4 secrets", seconds,
                         size / seconds))
    body = "| what | seconds | MiB/s |\n|---|---|---|\n" + "\n".join(
        f"| {what} | {s:.2f} | {rate:.0f} |" for what, s, rate in rows)
    write_section("audit", "Secrets audit", body)


if __name__ == "__main__":
    main()
