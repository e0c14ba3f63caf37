"""The local cloud's own figures: `up` from scratch and warm, resident memory of all its
services, boot-to-user-data time and snapshot time of the base image.

    .venv/bin/python bench/local_cloud.py [--no-scratch]

It stops a running local cloud, measures, and leaves one up. "From scratch" runs `up` in a
new LOCALCLOUD_HOME (new venv and state; pip's download cache stays warm, apt packages stay
installed), then removes it.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from glanceclient import client as glance_client  # noqa: E402
from novaclient import client as nova_client  # noqa: E402

from localcloud import cli, fixture  # noqa: E402
from report import write_section  # noqa: E402

LOCALCLOUD = str(REPO / "tests" / "localcloud" / "localcloud")


def timed_up(home=None):
    env = dict(os.environ, LOCALCLOUD_HOME=str(home)) if home else None
    t = time.monotonic()
    subprocess.run([LOCALCLOUD, "up"], check=True, env=env)
    return time.monotonic() - t


def down(home=None):
    env = dict(os.environ, LOCALCLOUD_HOME=str(home)) if home else None
    subprocess.run([LOCALCLOUD, "down"], check=True, env=env)


def rss_by_service():
    """Resident memory (MiB) of each service's whole process group (gunicorn master and
    worker, beam and its helpers...)."""
    groups = {pid: name for name, pid in cli.started_pids().items()}
    rss = dict.fromkeys(groups.values(), 0)
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            pgid = os.getpgid(int(p))
            status = Path(f"/proc/{p}/status").read_text()
        except (OSError, ProcessLookupError):
            continue
        if pgid in groups:
            kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
            rss[groups[pgid]] += kb / 1024
    return rss


def boot_and_snapshot(cloud):
    base = cloud.base_image()
    sess = cloud.session()
    nova = nova_client.Client("2.96", session=sess)
    glance = glance_client.Client("2", session=sess)
    user_data = "#!/bin/sh\necho user-data-ran > /root/bench-marker\n"
    t0 = time.monotonic()
    server = nova.servers.create("bench-boot", base["id"], nova.flavors.find(name="localcloud.small").id,
                                 nics="none", userdata=user_data)
    image_id = None
    try:
        # the driver starts user-data during spawn, so the marker may come before ACTIVE
        marker = cloud.instances_path / server.id / "mnt" / "root" / "bench-marker"
        active = ran = None
        while active is None or ran is None:
            if ran is None and marker.exists():
                ran = time.monotonic() - t0
            if active is None and nova.servers.get(server.id).status == "ACTIVE":
                active = time.monotonic() - t0
            if time.monotonic() - t0 > 300:
                raise SystemExit("the server never became ACTIVE with its user-data run")
            time.sleep(0.1)
        t1 = time.monotonic()
        image_id = nova.servers.create_image(server, "bench-snapshot")
        while glance.images.get(image_id)["status"] != "active":
            if time.monotonic() - t1 > 600:
                raise SystemExit("snapshot never became active")
            time.sleep(0.2)
        snap = time.monotonic() - t1
        size = glance.images.get(image_id)["size"]
    finally:
        server.delete()
        if image_id:
            glance.images.delete(image_id)
    return {"active": active, "user_data": ran, "snapshot": snap, "snapshot_bytes": size}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-scratch `up` (5+ minutes)")
    args = ap.parse_args()
    rows = []
    down()
    if not args.no_scratch:
        home = Path(tempfile.mkdtemp(prefix="localcloud-bench-", dir="/var/tmp"))
        try:
            rows.append(("`up` from scratch (new venv and state; pip cache warm)", f"{timed_up(home):.0f} s"))
            down(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    rows.append(("`up` warm (venv installed, state reset)", f"{timed_up():.0f} s"))
    rss = rss_by_service()
    cloud = fixture.LocalCloud(started_here=False)
    cloud.base_image()
    b = boot_and_snapshot(cloud)
    rows += [("resident memory of all services", f"{sum(rss.values()):.0f} MiB"),
             ("boot → ACTIVE (base image, first boot from the driver's cache)", f"{b['active']:.1f} s"),
             ("boot → user-data has run (file written inside the instance)", f"{b['user_data']:.1f} s"),
             (f"createImage → active, base image ({b['snapshot_bytes'] / 2**20:.0f} MiB raw)",
              f"{b['snapshot']:.1f} s")]
    body = "| what | figure |\n|---|---|\n" + "".join(f"| {w} | {v} |\n" for w, v in rows)
    body += "\nResident memory by service (MiB): " + ", ".join(
        f"{n} {v:.0f}" for n, v in sorted(rss.items(), key=lambda kv: -kv[1])) + "\n"
    write_section("local_cloud", "The local cloud", body)


if __name__ == "__main__":
    main()
