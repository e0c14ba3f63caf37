"""A snapshot-strategy build on real guests (qemu VMs of the local cloud's flavor
localcloud.vm) against the same build on chroot instances, by step, in one run; the boot step
is a real guest's boot-to-minion time (server created -> ACTIVE -> its minion answers).

    .venv/bin/python -m pytest bench/real_guests.py -p no:logging -s

(pytest only as the harness that starts the master and the cloud, as the tests do.)
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_section  # noqa: E402
from saltami import provenance  # noqa: E402
from saltami.cloud.auth import connect  # noqa: E402

# the same formula on both, but the real guest's flavour adds a service (systemd starts it)
# and a secret written and deleted (the scrub zero-fills what discard cannot free)
KINDS = {"chroot instances": "amitest", "real guests": "amitest-vm"}
ACCEL = Path("/var/lib/localcloud/cache/vm-accel.json")


def build(salt_master, clients, flavour):
    provenance.prune(clients, flavour, keep=0, force=True)
    t = time.monotonic()
    ret = salt_master.salt_run_cli(timeout=3600).run("state.orch", "ami.build", pillar={"ami": {"flavour": flavour}})
    wall = time.monotonic() - t
    assert ret.returncode == 0, ret.stdout[-3000:]
    image = provenance.find_promoted(clients, flavour)[0]
    manifest = Path(salt_master.config["cachedir"]) / "ami" / "builds" / f"{image['ami_build']}.json"
    steps = {s["name"]: s["seconds"] for s in json.loads(manifest.read_text())["steps"]}
    provenance.prune(clients, flavour, keep=0, force=True)
    return wall, steps, image


def test_real_guest_figures(salt_master, cloud_profile, guest_image, vm_flavor):
    clients = connect(profile=cloud_profile)
    runs = {kind: build(salt_master, clients, flavour) for kind, flavour in KINDS.items()}
    accel = json.loads(ACCEL.read_text()) if ACCEL.exists() else {"accel": "?", "why": "no probe recorded"}
    body = "| step | " + " | ".join(KINDS) + " |\n|---|" + "---:|" * len(KINDS) + "\n"
    for step in runs["real guests"][1]:
        body += f"| `{step}` | " + " | ".join(f"{runs[k][1].get(step, 0):.1f} s" for k in KINDS) + " |\n"
    wall = " | ".join(f"**{runs[k][0]:.0f} s**" for k in KINDS)
    body += f"| **whole build (`state.orch ami.build`)** | {wall} |\n"
    body += "| image size | " + " | ".join(f"{runs[k][2]['size'] / 2**20:.0f} MiB" for k in KINDS) + " |\n"
    body += (f"\nReal guests ran under qemu with **{accel['accel'].upper()}** ({accel['why']}), 2 vCPUs and 1 GiB "
             "each, booting the guest image (Debian 12, GRUB, systemd, cloud-init from nova's ISO 9660 config "
             "drive, salt 3007) with one NIC on qemu's user network; the `boot` step is their boot-to-minion time "
             "(create, ACTIVE, cloud-init runs the user-data, the minion starts and answers). Their `scrub` "
             "zero-fills the free space (discard is ignored, as on a default nova) and arms a scrub at shutdown; "
             "their `snapshot` is an ACPI shutdown, then the qcow2 overlay flattened and uploaded. Chroot "
             "instances share the host's kernel: their boot is a loop mount and their stop a kill.\n")
    write_section("real_guests", "Builds on real guests against chroot instances", body,
                  command=".venv/bin/python -m pytest bench/real_guests.py -p no:logging -s")
