"""Find the base image and compute the build's fingerprint; stop here when an image with that
fingerprint is already promoted. Check that the builder's flavor, networks, key pair and
security groups exist; clean up the flavour's abandoned builds; take the flavour's claim,
waiting for a build of it that is running (pipeline/claims.py)."""
import json
import os
from pathlib import Path

from .. import __version__, build_pillar, flavour, provenance, saltfiles
from ..cloud import auth, glance, nova
from . import claims, disk, outputs

NAME = "resolve"


def find_base(ctx):
    """The flavour's base: {id, name, hash}, and path for a local base (an image file on this
    machine, or a vanilla image made here), whose id says which and whose hash is its content's.
    A base found by a name or a filter is never an image a build made, unless the filter asks
    for one (provenance.base_skip): else the flavour's own images, which inherit the base's
    properties, would be its base from the second build on. A flavour with from_parent asks for
    one: its parent's newest promoted image (NoParentImage when there is none)."""
    base = ctx.spec["base"]
    if ctx.spec.get("from_parent"):
        image = provenance.parent_image(ctx.clients, ctx.spec)
    elif flavour.is_local_base(base):
        return disk.find_base(base)
    else:
        image = glance.find_image(ctx.clients, base, skip=provenance.base_skip(base))
    snapshots = glance.volume_snapshots(image)
    # a volume-backed image's Glance hash is that of no bytes: its content is its snapshots
    content = f"volume-snapshots:{','.join(snapshots)}" if snapshots else None
    return {**image, "hash": content or image.get("os_hash_value") or image.get("checksum")}


def current(ctx):
    """(base image, fingerprint parts, fingerprint, render) of the flavour as it stands now.
    The SLS part hashes the files that the newest image's build recorded its SLS used (see
    saltfiles.py), with their content now; render says which: {"entries", "files" (their
    hashes now), "before" (what that build recorded: {"build", "entries", "files"}, or None
    for a flavour's first build, which hashes saltfiles.first_entries)}."""
    spec = ctx.spec
    flavour.check_sls(spec, ctx.master.sls_exists)
    base = find_base(ctx)
    before = previous_render(ctx)
    entries = before["entries"] if before else saltfiles.first_entries(spec["sls"])
    files = ctx.master.render_files(entries)
    parts = {
        "base_id": base["id"],
        "base_hash": base["hash"],
        "sls_hash": saltfiles.files_hash(files),
        "pillar_hash": flavour.canonical_hash(spec.get("pillar") or {}),
        "salt_version": ctx.master.salt_version(),
        "version": __version__,
        "settings_hash": flavour.canonical_hash(flavour.image_settings(spec)),
    }
    if spec.get("from_parent"):
        # a new image of the parent makes its children out of date, and ami.status says so
        parts["parent_fingerprint"] = base.get("ami_fingerprint")
    return base, parts, flavour.fingerprint(parts), {"entries": entries, "files": files, "before": before}


def previous_render(ctx):
    """What the build of the flavour's newest image (promoted in Glance, or without a cloud
    the newest output directory) recorded its SLS used, from its manifest in the builds
    directory; None when there is no such image or its manifest is gone."""
    build_id = _newest_build(ctx)
    try:
        data = json.loads(Path(ctx.builds_dir, f"{build_id}.json").read_text()) if build_id else {}
    except (OSError, ValueError):
        return None
    render = data.get("render") or {}
    if "entries" not in render or "files" not in render:
        return None
    return {"build": build_id, "entries": render["entries"], "files": render["files"]}


def _newest_build(ctx):
    if ctx.clients is not None:
        promoted = provenance.find_promoted(ctx.clients, ctx.spec["name"])
        return promoted[0].get("ami_build") if promoted else None
    for manifest in sorted(outputs.output_root(ctx.spec, ctx.cachedir).glob(f"*/{outputs.MANIFEST}"),
                           reverse=True):
        try:
            return json.loads(manifest.read_text())["build"]
        except (OSError, ValueError, KeyError):
            continue
    return None


def record_render(build, ctx, entries):
    """Once the SLS ran: what they used of the file server (saltfiles.render_entries) goes in
    the build's manifest, for the next build to hash again, and the build's fingerprint is
    over those files from now on. A builder's own part of a volume bake (no fingerprint)
    records the entries only, for the master's build."""
    if entries is None:  # a builder whose salt-ami records nothing
        return
    build.data["render"] = {"entries": list(entries)}
    if "parts" in build.data:
        files = ctx.master.render_files(entries)
        build.data["render"]["files"] = files
        build.data["parts"]["sls_hash"] = saltfiles.files_hash(files)
        build.data["fingerprint"] = flavour.fingerprint(build.data["parts"])
    build.save()


def record_minion(build, ctx, minion):
    """record_render for an SLS applied by a minion of the master (the builder): the files in
    its cache (kept under /run, so only this boot's) and the sources its states name."""
    sls = ",".join(ctx.spec["sls"])
    fetched = ctx.master.call(minion, "cp.list_minion", timeout=300)
    low = ctx.master.call(minion, "state.show_low_sls", [sls], timeout=ctx.spec["timeouts"]["apply"])
    record_render(build, ctx, saltfiles.render_entries(saltfiles.cached_on_minion(fetched), low))


def record_chroot(build, ctx, root):
    """record_render for an SLS applied in the chroot at ``root`` (chroot.apply): the files in
    the chroot's salt cache and the sources its states name. Before the chroot's teardown,
    which takes its /run (and that cache) away."""
    from .. import chroot

    cache = os.path.join(root, chroot.WORK.lstrip("/"), "cache", "files", "base")
    low = chroot.call(root, "state.show_low_sls", ",".join(ctx.spec["sls"]), cachedir=ctx.cachedir)
    record_render(build, ctx, saltfiles.render_entries(saltfiles.cached(cache), low))


def check(build, ctx):
    """Everything a build checks before it makes anything (a dry run checks the same): the
    credentials, the base, the fingerprint, and what the plan's steps will need of the cloud
    and the master. Returns what ``current`` found: (base, parts, fingerprint, render)."""
    spec = ctx.spec
    if ctx.clients is not None:
        # bad credentials or a cloud that does not answer: said as such, before anything else
        auth.check_auth(ctx.clients)
    found = _resolved(build, ctx)
    base = found[0]
    if "upload" in build.data["plan"]:
        # an old cinder cannot upload the volume: said now, before the volume is made
        ctx.clients.require("upload-to-image")
    if "boot" in build.data["plan"]:
        # what the builder boots with must exist before anything is made for it
        nova.check_boot(ctx.clients, spec["flavor"], spec.get("networks"), spec.get("key_name"),
                        spec.get("security_groups"))
        # the master can admit the builder's minion, and give it the flavour's pillar
        ctx.master.check_admission()
        build_pillar.prepare(build, ctx)
        # the volume strategy's builder needs salt-ami: it may be another image than the base
        builder = glance.find_image(ctx.clients, spec["builder"]) if spec.get("builder") else base
        build.data["builder_image"] = builder["id"]
    return found


def run(build, ctx):
    spec = ctx.spec
    base = check(build, ctx)[0]
    cleaned = claims.reap(ctx.builds_dir, lambda _name: ctx, spec["name"], skip=build.id)
    waited = {}
    # one build of a flavour at a time: one that waited finds the other's image
    if not _already_built(build, ctx, build.data["fingerprint"]):
        waited = claims.acquire(build, ctx, spec["timeouts"]["claim"])
        if waited or _newest_build(ctx) != build.data["render_from"]:
            # a build that ended meanwhile recorded what the SLS use: the fingerprint is over that now
            base = _resolved(build, ctx)[0]
        if _already_built(build, ctx, build.data["fingerprint"]):
            claims.release(build)
    build.save()
    return {"fingerprint": build.data["fingerprint"], "base": base["id"],
            "nothing_to_do": build.data.get("nothing_to_do"),
            **waited, **({"cleaned_abandoned": [c["build"] for c in cleaned]} if cleaned else {})}


def _resolved(build, ctx):
    """The base and the fingerprint as they stand now (``current``), in the build."""
    found = base, parts, fingerprint, render = current(ctx)
    build.data.update(base={key: base[key] for key in ("id", "name", "path") if base.get(key)},
                      parts=parts, fingerprint=fingerprint,
                      render_from=render["before"] and render["before"]["build"])
    return found


def _already_built(build, ctx, fingerprint):
    if ctx.clients is None:
        # the local provider without a cloud: its outputs are on this machine
        found = outputs.find_built(ctx.spec, ctx.cachedir, fingerprint)
        if found:
            build.data["nothing_to_do"] = f"{found} already holds the outputs of fingerprint {fingerprint}"
            build.data["outputs"]["image"] = {"directory": str(found)}
        return bool(found)
    existing = provenance.find_promoted(ctx.clients, ctx.spec["name"], fingerprint=fingerprint)
    if existing:
        image = existing[0]
        build.data["nothing_to_do"] = f"image {image['name']} ({image['id']}) already has fingerprint {fingerprint}"
        build.data["outputs"]["image"] = {"id": image["id"], "name": image["name"]}
    return bool(existing)


def undo(build, ctx):
    """Nothing to undo: resolve only reads."""
