"""Builds as the master runs them: the runner (``salt-run ami.build``), the orchestration
(one ``ami.step`` per state, ``ami.cleanup`` on failure) and the ``ami.present`` state all
come through here."""
import os

from . import flavour, pipeline, provenance, report
from .errors import InvalidArgument
from .pipeline import claims, manifest
from .pipeline.context import Context
from .pipeline.manifest import builds_dir
from .saltmaster import Master, master_pillar


def context(opts, pillar_ami, flavour_name, clients):
    """The flavour, validated (nothing is created if it is wrong), with the cloud and master."""
    spec = flavour.resolve(pillar_ami, flavour_name)
    if spec["strategy"] == "volume" and spec["flavor"] is None:
        raise InvalidArgument(f"flavour {flavour_name!r}: key 'flavor': required when the master builds "
                              "strategy 'volume', which boots a builder (allowed: the name or id of a nova "
                              "flavor; salt-call --local ami.bake needs none)")
    return Context(clients, Master(opts), spec, builds_dir(opts))


def summary(build):
    """What salt-run ami.build, ami.present and the end event say of a build (report.py)."""
    return report.summary(build)


def build(opts, pillar_ami, flavour_name, clients, build_id=None):
    """A whole build in this process; raises StepFailed after cleaning up."""
    ctx = context(opts, pillar_ami, flavour_name, clients)
    steps = pipeline.steps_of_spec(ctx.spec)
    b = pipeline.Build.create(ctx.builds_dir, flavour_name, steps, build_id)
    b.data["orchestrator"] = claims.this_process()
    pipeline.run_all(b, ctx, steps)
    return summary(b)


# the master's pillar as the steps of a build found it: compiled by the first step that a
# process runs of the build (the orchestration runs them all in one process, one for each
# flavour built side by side), by (process, build)
_BUILD_PILLARS = {}


def _master_inputs(opts, context, build_id=None, cloud=None):
    """The master's pillar ``ami`` and its cloud's clients (for the steps of build
    ``build_id``, the pillar compiled once in this process)."""
    from . import saltglue

    key = (os.getpid(), build_id)
    if build_id is None or key not in _BUILD_PILLARS:
        _BUILD_PILLARS.clear()
        _BUILD_PILLARS[key] = master_pillar(opts)
    pillar = _BUILD_PILLARS[key]
    return pillar.get("ami") or {}, saltglue.master_clients(opts, context, pillar, cloud)


def master_step(opts, context, flavour_name, build_id, step_name, owner=None, cloud=None):
    """One step of an orchestrated build, with the master's pillar and cloud: what the
    orchestration's ``ami.step`` states and ``salt-run ami.step`` run."""
    ami, clients = _master_inputs(opts, context, build_id, cloud)
    return step(opts, ami, flavour_name, build_id, step_name, clients, owner=owner)


def master_dry_run(opts, context, flavour_name, cloud=None):
    """``dry_run`` with the master's pillar and cloud (the orchestration with test=True)."""
    ami, clients = _master_inputs(opts, context, cloud=cloud)
    return dry_run(opts, ami, flavour_name, clients)


def step(opts, pillar_ami, flavour_name, build_id, step_name, clients, owner=None):
    """One step of an orchestrated build; the first one opens the build's manifest.
    ``owner`` is the process that drives the build (the orchestration): while it lives,
    the build is not abandoned between two steps."""
    ctx = context(opts, pillar_ami, flavour_name, clients)
    plan = pipeline.steps_of_spec(ctx.spec)
    steps = {s.NAME: s for s in plan}
    if step_name not in steps:
        raise InvalidArgument(f"step {step_name!r} is not one of {', '.join(steps)}")
    try:
        b = pipeline.Build.load(ctx.builds_dir, build_id)
    except pipeline.AmiError:
        b = pipeline.Build.create(ctx.builds_dir, flavour_name, plan, build_id)
    if owner and not b.data.get("orchestrator"):
        b.data["orchestrator"] = owner
    return pipeline.run_step(b, ctx, steps[step_name])


def dry_run(opts, pillar_ami, flavour_name, clients):
    """What a build of the flavour would do now, without doing any of it: whether it would
    build and why, what it would create (servers, volumes, images and their names) and what
    its prune would remove. It checks all that a build checks before it makes anything
    (the flavour, the credentials, the base, the builder's flavor, networks and key pair,
    the master's admission and pillar: resolve.check), and fails as the build would; it
    writes, claims and creates nothing."""
    from .pipeline import minion_server, outputs, resolve

    ctx = context(opts, pillar_ami, flavour_name, clients)
    spec, steps = ctx.spec, pipeline.steps_of_spec(ctx.spec)
    b = pipeline.Build.unsaved(flavour_name, steps)
    try:
        found = resolve.check(b, ctx)
    except provenance.NoParentImage:
        # its parent builds first (a build of the family does), and it from the parent's new
        # image: what that build would need of the cloud is not known before that image is
        found = None
    now = _status(opts, pillar_ami, flavour_name, ctx, found, {})
    if found is None:
        return {"flavour": flavour_name, "would_build": True, "why": now["why"], "fingerprint": None,
                "base": None, "steps": [s.NAME for s in steps]}
    base = found[0]
    report_ = {"flavour": flavour_name, "would_build": not now["up_to_date"], "why": now["why"],
               "fingerprint": now["fingerprint"], "base": now["base"], "steps": [s.NAME for s in steps]}
    if now["up_to_date"]:
        return {**report_, "image": now["image"]}
    create = {"servers": [], "volumes": [], "images": []}
    if "boot" in b.data["plan"]:
        volume = minion_server.boot_volume_size(ctx, b.data["builder_image"])
        for role, image in (("builder", b.data["builder_image"]), ("validator", "the candidate image")):
            if role == "validator" and "validate" not in b.data["plan"]:
                continue
            create["servers"].append({"role": role, "name": manifest.minion_id(role, b.id), "image": image,
                                      "flavor": spec["flavor"], "networks": spec["networks"],
                                      **({"boot_volume_gib": volume} if volume else {})})
    if "volume" in b.data["plan"]:
        create["volumes"].append({"name": f"ami-bake-{b.id}", "size_gib": spec["volume_size"], "from": base["id"]})
    if spec["strategy"] == "local":
        create["outputs"] = {"kinds": spec["outputs"], "uploaded": clients is not None,
                             **({} if clients is not None else
                                {"directory": str(outputs.output_root(spec, ctx.cachedir) / b.id)})}
    report_["would_create"] = create
    if clients is not None:
        create["images"].append({"name": provenance.candidate_name(b), "then": provenance.final_name(b, spec),
                                 "visibility": spec["visibility"], "tags": spec["tags"]})
        # the new image counts among the keep newest
        pruned = provenance.prune(clients, flavour_name, max(spec["keep"] - 1, 0), dry_run=True,
                                  shared=spec["prune_shared"])
        report_["would_prune"] = provenance.outcomes(pruned)
    return report_


def cleanup(opts, pillar_ami, build_id, clients):
    """Undo what build ``build_id`` made; without one, what every abandoned build made (see
    pipeline/claims.py)."""
    if build_id is None:
        return {"cleaned": claims.reap(
            builds_dir(opts), lambda name: context(opts, pillar_ami, name, clients))}
    b = pipeline.Build.load(builds_dir(opts), build_id)
    return context(opts, pillar_ami, b.data["flavour"], clients).cleanup(b)


def status(opts, pillar_ami, flavour_name, clients, _known=None):
    """Whether the flavour's image is up to date, and if not why: the fingerprint it would
    have now against the newest promoted image's provenance, and for the SLS the files its
    build recorded they used (saltfiles.py), each named when it changed. A flavour built from
    its parent's image (from_parent, ``parent``) is out of date too while its parent is: the
    parent's next image is its next base. ``_known``: the statuses found so far, by flavour."""
    from .pipeline import resolve

    known = {} if _known is None else _known
    if flavour_name in known:
        return known[flavour_name]
    ctx = context(opts, pillar_ami, flavour_name, clients)
    try:
        found = resolve.current(ctx)
    except provenance.NoParentImage:
        found = None
    return _status(opts, pillar_ami, flavour_name, ctx, found, known)


def _status(opts, pillar_ami, flavour_name, ctx, found, known):
    """``status`` from what resolve.current found (None: the flavour's parent has no image yet)."""
    clients = ctx.clients
    parent = ctx.spec["extends"] if ctx.spec["from_parent"] else None
    above = status(opts, pillar_ami, parent, clients, known) if parent else None
    promoted = provenance.find_promoted(clients, flavour_name)
    newest = promoted[0] if promoted else None
    base, parts, fingerprint, render = found or ({}, None, None, None)
    current = next((i for i in promoted if i.get("ami_fingerprint") == fingerprint), None) if fingerprint else None
    if parts is None:
        why = [f"its parent {parent} has no promoted image: {parent} builds first, then {flavour_name} from it"]
    elif current:
        why = []
    elif newest is None:
        why = [f"no image of flavour {flavour_name} exists"]
    else:
        why = _changes(parts, newest, render, parent)
    if parts is not None and above and not above["up_to_date"]:
        why.append(f"parent {parent} is out of date: {'; '.join(above['why'])}")
    known[flavour_name] = {
        "flavour": flavour_name, "fingerprint": fingerprint, "up_to_date": current is not None and not why,
        # the base a build would start from now
        "base": {key: base[key] for key in ("id", "name", "path") if base.get(key)} or None,
        "image": current and {"id": current["id"], "name": current["name"]},
        "newest": newest and {"id": newest["id"], "name": newest["name"],
                              "fingerprint": newest.get("ami_fingerprint")},
        "why": why, "parent": parent}
    return known[flavour_name]


def _changes(parts, newest, render, parent):
    """What changed of the fingerprint's ``parts`` since the ``newest`` image was made."""
    from . import saltfiles

    changed = [part for part in sorted(parts)
               if str(parts[part]) != str(newest.get(f"ami_{part}", parts[part]))]
    why = []
    if "parent_fingerprint" in changed:
        # the parent's new image is the new base: said as that
        old, new = (str(v)[:12] for v in (newest.get("ami_parent_fingerprint"), parts["parent_fingerprint"]))
        why.append(f"parent {parent}'s image changed: fingerprint {old} -> {new}")
        changed = [part for part in changed if part not in ("parent_fingerprint", "base_id", "base_hash")]
    why += [f"{part} changed" for part in changed if part != "sls_hash"]
    if "sls_hash" in changed:
        before = render["before"]
        why += (saltfiles.changed_files(before["files"], render["files"]) if before else []) or [
            "sls_hash changed (no record of the files its build used: "
            f"{newest.get('ami_build')} has no manifest here)"]
    return why or ["the flavour's settings changed"]
