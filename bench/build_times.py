"""Wall time of a build by step, of a no-op rebuild, and of four flavours built side by side
against one, through `salt-run state.orch ami.build` on a real master and the local cloud.

    .venv/bin/python -m pytest bench/build_times.py -p no:logging -s

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

FOUR = [f"amitest-p{i}" for i in range(1, 5)]


def orchestrate(salt_run, flavours):
    t = time.monotonic()
    ret = salt_run.run("state.orch", "ami.build", pillar={"ami": {"flavour": flavours}})
    assert ret.returncode == 0, ret.stdout[-2000:]
    return time.monotonic() - t


def test_build_figures(salt_master, salt_run, cloud_profile):
    clients = connect(profile=cloud_profile)
    for f in FOUR:
        provenance.prune(clients, f, keep=0, force=True)
    one = orchestrate(salt_run, "amitest-p1")
    image = provenance.find_promoted(clients, "amitest-p1")[0]
    manifest = Path(salt_master.config["cachedir"]) / "ami" / "builds" / f"{image['ami_build']}.json"
    steps = json.loads(manifest.read_text())["steps"]
    noop = orchestrate(salt_run, "amitest-p1")
    provenance.prune(clients, "amitest-p1", keep=0, force=True)
    four = orchestrate(salt_run, FOUR)
    for f in FOUR:
        provenance.prune(clients, f, keep=0, force=True)
    body = "| what | wall time |\n|---|---|\n"
    body += f"| one build, orchestrated (`state.orch ami.build`) | {one:.0f} s |\n"
    body += "".join(f"| &nbsp;&nbsp;step `{s['name']}` | {s['seconds']:.1f} s |\n" for s in steps)
    body += f"| no-op rebuild (inputs unchanged) | {noop:.1f} s |\n"
    body += f"| four flavours side by side | {four:.0f} s ({four / one:.2f}× one build) |\n"
    body += ("\nThe base test image is a 1 GiB raw Debian 12 with salt; the flavour applies the `amitest` "
             "formula (no package downloads). Snapshots upload the whole raw disk through Glance.\n")
    write_section("build_times", "Builds", body)
