"""Apply the flavour's SLS to the mounted disk through a chroot, then record the package
manifest of what was built."""
from .. import chroot
from . import mount, provision

NAME = "provision"


def run(build, ctx):
    spec = ctx.spec
    root = mount.root_of(build)
    chroot.prepare(root)
    try:
        applied = chroot.apply(root, spec["sls"], ctx.master.files(), pillar=spec.get("pillar"),
                               cachedir=ctx.cachedir, timeout=spec["timeouts"]["apply"])
        packages = chroot.call(root, "pkg.list_pkgs", cachedir=ctx.cachedir)
    finally:
        chroot.teardown(root)
    provision.record_packages(build, packages)
    return {"states": applied["states"], "changed": len(applied["changed"]), "salt": applied["salt"],
            "packages": len(packages)}


def undo(build, ctx):
    """The mount step's undo takes the chroot down."""
