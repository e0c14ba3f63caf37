"""The steps of each strategy, in order: each plan is a list of step modules.

``pipeline.steps_for`` picks one. This module imports every step, and the steps import the
pipeline package: the package imports this module only when it is asked for a plan."""
from ..errors import AmiError
from . import (
    attach,
    bake,
    boot,
    chroot,
    detach,
    disk,
    local,
    loop,
    mount,
    outputs,
    promote,
    provision,
    prune,
    publish,
    release,
    release_disk,
    release_loop,
    release_volume,
    resolve,
    scrub,
    snapshot,
    unmount,
    upload,
    validate,
    volume,
)
from .manifest import plan_name

# The steps of each strategy, in order, by module. "here" is a bake run where it is called
# (salt-call --local ami.bake), the others are run by the master.
PLANS = {
    ("snapshot", False): [resolve, boot, provision, scrub, snapshot, release, validate, promote, prune],
    # the builder is a minion of the master; the chroot part runs on it (bake)
    ("volume", False): [resolve, boot, volume, attach, bake, detach, upload, release_volume, release,
                        validate, promote, prune],
    ("volume", True): [resolve, volume, attach, mount, chroot.provision, chroot.scrub, unmount, detach, upload,
                       release_volume, promote, prune],
    # a loop device over a copy of a local base image; its first output booted under qemu here
    # (local.validate); publish uploads only with a cloud
    ("local", True): [resolve, disk, loop, mount, chroot.provision, chroot.scrub, unmount, release_loop, outputs,
                      release_disk, local.validate, publish],
    # what the orchestration's builder minion runs during bake
    ("volume-builder", True): [mount, chroot.provision, chroot.scrub, unmount],
}

# every step, by the name a build's plan gives it (manifest.py)
STEPS = {plan_name(step): step for plan in PLANS.values() for step in plan}


def step(name):
    """The step module that a build's plan names ``name`` (manifest.Build.plan)."""
    try:
        return STEPS[name]
    except KeyError:
        raise AmiError(f"a build's plan names step {name!r}, which is not one of this version's steps "
                       f"({', '.join(sorted(STEPS))})") from None
