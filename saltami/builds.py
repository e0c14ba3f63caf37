"""Builds as the master runs them: the runner (``salt-run ami.build``), the orchestration
(one ``ami.step`` per state, ``ami.cleanup`` on failure) and the ``ami.present`` state all
come through here."""
import os

from . import flavour, pipeline, report
from .errors import InvalidArgument
from .pipeline import claims
from .pipeline.context import Context
from .saltmaster import Master


def builds_dir(opts):
    """Build manifests live in the master's cache, next to the job cache."""
    return os.path.join(opts["cachedir"], "ami", "builds")


def master_pillar(opts, saltenv="base"):
    """The master's own pillar. The opts may be those of another minion's pillar compile (the
    ami ext_pillar's), whose pillarenv, a build minion's, has no top file: not the master's."""
    import salt.pillar

    from .saltmaster import NO_PILLARENV

    if opts.get("pillarenv") == NO_PILLARENV:
        opts = {**opts, "pillarenv": None}
    return salt.pillar.Pillar(opts, {}, opts["id"], saltenv).compile_pillar()


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


def master_step(opts, context, flavour_name, build_id, step_name, owner=None, cloud=None):
    """One step of an orchestrated build, with the master's pillar and cloud: what the
    orchestration's ``ami.step`` states and ``salt-run ami.step`` run."""
    from . import saltglue

    key = (os.getpid(), build_id)
    if key not in _BUILD_PILLARS:
        _BUILD_PILLARS.clear()
        _BUILD_PILLARS[key] = master_pillar(opts)
    pillar = _BUILD_PILLARS[key]
    clients = saltglue.master_clients(opts, context, pillar, cloud)
    return step(opts, pillar.get("ami") or {}, flavour_name, build_id, step_name, clients, owner=owner)


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


def cleanup(opts, pillar_ami, build_id, clients):
    """Undo what build ``build_id`` made; without one, what every abandoned build made (see
    pipeline/claims.py)."""
    if build_id is None:
        return {"cleaned": claims.reap(
            builds_dir(opts), lambda name: context(opts, pillar_ami, name, clients))}
    b = pipeline.Build.load(builds_dir(opts), build_id)
    ctx = context(opts, pillar_ami, b.data["flavour"], clients)
    return pipeline.cleanup(b, ctx, pipeline.steps_of(b, ctx.spec["strategy"]))


def status(opts, pillar_ami, flavour_name, clients):
    """Whether the flavour's image is up to date, and if not why: the fingerprint it would
    have now against the newest promoted image's provenance, and for the SLS the files its
    build recorded they used (saltfiles.py), each named when it changed."""
    from . import provenance, saltfiles
    from .pipeline import resolve

    ctx = context(opts, pillar_ami, flavour_name, clients)
    base, parts, fingerprint, render = resolve.current(ctx)
    promoted = provenance.find_promoted(clients, flavour_name)
    current = next((i for i in promoted if i.get("ami_fingerprint") == fingerprint), None)
    newest = promoted[0] if promoted else None
    if current:
        why = []
    elif newest is None:
        why = [f"no image of flavour {flavour_name} exists"]
    else:
        changed = [part for part in sorted(parts)
                   if str(parts[part]) != str(newest.get(f"ami_{part}", parts[part]))]
        why = [f"{part} changed" for part in changed if part != "sls_hash"]
        if "sls_hash" in changed:
            before = render["before"]
            why += (saltfiles.changed_files(before["files"], render["files"]) if before else []) or [
                "sls_hash changed (no record of the files its build used: "
                f"{newest.get('ami_build')} has no manifest here)"]
        why = why or ["the flavour's settings changed"]
    return {"flavour": flavour_name, "fingerprint": fingerprint, "up_to_date": current is not None,
            # the base a build would start from now
            "base": {key: base[key] for key in ("id", "name", "path") if base.get(key)},
            "image": current and {"id": current["id"], "name": current["name"]},
            "newest": newest and {"id": newest["id"], "name": newest["name"],
                                  "fingerprint": newest.get("ami_fingerprint")},
            "why": why}
