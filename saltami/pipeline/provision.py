"""Apply the flavour's SLS to the builder (a failed state fails the build), then record the
package manifest of what was built. The builder has the flavour's pillar from the master's
ami ext_pillar (build_pillar.py)."""
import hashlib
import json

from .. import build_pillar
from . import resolve

NAME = "provision"
PACKAGES = {"pkg.list_pkgs": "dpkg/rpm"}
# nothing to undo: the builder is removed by the boot step's undo


def run(build, ctx):
    minion = build.data["builder"]["minion"]
    spec = ctx.spec
    build_pillar.ensure(build, ctx, minion)
    applied = ctx.master.apply(minion, spec["sls"], timeout=spec["timeouts"]["apply"])
    resolve.record_minion(build, ctx, minion)
    packages = ctx.master.call(minion, "pkg.list_pkgs", timeout=300) or {}
    record_packages(build, packages)
    return {"states": applied["states"], "changed": len(applied["changed"]), "packages": len(packages)}


def record_packages(build, packages):
    """The package manifest ({name: version}, as pkg.list_pkgs gives it) goes in a file
    beside the build's manifest; the image carries its hash and count."""
    listing = json.dumps(packages, sort_keys=True, indent=0)
    path = build.path.with_suffix(".packages.json")
    path.write_text(listing)
    build.data["packages"] = {"file": str(path), "count": len(packages),
                              "sha256": hashlib.sha256(listing.encode()).hexdigest()}
    build.save()
