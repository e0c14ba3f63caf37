"""The flavour's pillar for the minions of a running build (its builder and its validator),
served by the master's ``ami`` ext_pillar (_pillar/ami.py), and to no other minion.

Not ``state.apply pillar=...``: Salt publishes a job's arguments, so the master logs them (at
debug level) and fires them on its bus (salt/job/<jid>/new), and the flavour's pillar may hold
secrets. A minion's own pillar goes to that minion alone, encrypted. The build's manifest
says which minions are the build's; the pillar itself is read from the master's pillar each
time it is asked for, and never written down."""
import json
import os
import re

from . import flavour
from .errors import AmiError, InvalidArgument
from .pipeline import manifest
from .pipeline.manifest import builds_dir
from .saltmaster import master_pillar

ROLES = ("builder", "validator")
# what the master config needs (README, Install)
MASTER_CONFIG = "ext_pillar:\n  - ami: {}"
# the minions' ids are ami-<role>-<build id> (pipeline/minion_server.py), and a build id is
# a file name in the builds folder: nothing that leads out of it
BUILD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def configured(opts):
    """Whether the master's config lists the ami ext_pillar."""
    return any(isinstance(entry, dict) and "ami" in entry for entry in opts.get("ext_pillar") or [])


def build_of(builds_dir, minion_id):
    """The manifest of the running build whose builder or validator ``minion_id`` is (the
    manifest names the minion's key before the server boots), else None."""
    for role in ROLES:
        build_id = manifest.build_of_minion(role, minion_id)
        if build_id is None or not BUILD_ID_RE.fullmatch(build_id):
            continue
        try:
            with open(os.path.join(builds_dir, f"{build_id}.json")) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        if data.get("status") == "running" and minion_id in data["resources"].get(f"{role}_key", []):
            return data
    return None


def flavour_pillar(opts, build_data):
    """The pillar of the build's flavour, from the master's pillar. A flavour given inline
    (ami.present's keys, ami.build's ``definition``) is not there: it has its parent's, and
    ``prepare`` made sure that is its own."""
    ami = dict(master_pillar(opts).get("ami") or {})
    flavours = dict(ami.get("flavours") or {})
    name = build_data["flavour"]
    if name not in flavours:
        flavours[name] = {"extends": build_data.get("extends")}
    return flavour.resolve({**ami, "flavours": flavours}, name).get("pillar") or {}


def served(opts, minion_id):
    """What the ext_pillar gives ``minion_id``: nothing, or for a minion of a running build its
    flavour's pillar and ``ami:build``, the build's id (what ``ensure`` looks for)."""
    data = build_of(builds_dir(opts), minion_id)
    if data is None:
        return {}
    pillar = flavour_pillar(opts, data)
    ami = pillar.get("ami") if isinstance(pillar.get("ami"), dict) else {}
    return {**pillar, "ami": {**ami, "build": data["id"]}}


def prepare(build, ctx):
    """At resolve, before anything is made: the builder will get the flavour's pillar from the
    master, or the build fails now saying why."""
    spec = ctx.spec
    build.data["extends"] = spec["extends"]
    if not spec["pillar"]:
        return
    opts = ctx.master.opts
    if not configured(opts):
        raise InvalidArgument(
            f"flavour {spec['name']!r} has a pillar, which the master gives to its builder through "
            f"the ami ext_pillar, and the master's config has none: add\n{MASTER_CONFIG}\n"
            "to the master's config and restart the master")
    if flavour.canonical_hash(flavour_pillar(opts, build.data)) != flavour.canonical_hash(spec["pillar"]):
        raise InvalidArgument(
            f"flavour {spec['name']!r}: its pillar is not the one of ami:flavours in the master's "
            "pillar, from which the builder gets it: a flavour given inline (ami.present's keys, "
            "ami.build definition=) cannot have a pillar of its own (it would go over the event bus "
            "with the call's arguments); put the flavour or its pillar in the master's pillar")


class PillarMissing(AmiError):
    """A build's minion does not have its build's pillar."""


def ensure(build, ctx, minion_id):
    """Before the SLS are applied: the minion has the flavour's pillar. It compiled its pillar
    when it started, and the manifest named it before that; if not, one refresh."""
    if not ctx.spec["pillar"]:
        return
    for refreshed in (False, True):
        if refreshed:
            ctx.master.call(minion_id, "saltutil.refresh_pillar", kwargs={"wait": True}, timeout=120)
        if ctx.master.call(minion_id, "pillar.get", ["ami:build"], timeout=120) == build.id:
            return
    raise PillarMissing(f"minion {minion_id} did not get the pillar of flavour {ctx.spec['name']!r} from "
                        f"the master's ami ext_pillar (master config: {MASTER_CONFIG!r})")
