"""Find the base image and compute the build's fingerprint; stop here when an image with that
fingerprint is already promoted. Check that the builder's flavor, networks, key pair and
security groups exist; clean up the flavour's abandoned builds; take the flavour's claim,
waiting for a build of it that is running (pipeline/claims.py)."""
from .. import __version__, build_pillar, flavour, provenance
from ..cloud import auth, glance, nova
from . import claims, local_disk, outputs

NAME = "resolve"


def find_base(ctx):
    """The flavour's base: {id, name, hash}, and path for a local base (an image file on this
    machine, or a vanilla image made here), whose id says which and whose hash is its content's."""
    base = ctx.spec["base"]
    if flavour.is_local_base(base):
        return local_disk.find_base(base)
    image = glance.find_image(ctx.clients, base)
    return {**image, "hash": image.get("os_hash_value") or image.get("checksum")}


def current(ctx):
    """(base image, fingerprint parts, fingerprint) of the flavour as it stands now."""
    spec = ctx.spec
    flavour.check_sls(spec, ctx.master.sls_exists)
    base = find_base(ctx)
    parts = {
        "base_id": base["id"],
        "base_hash": base["hash"],
        "sls_hash": ctx.master.sls_hash(spec["sls"]),
        "pillar_hash": flavour.canonical_hash(spec.get("pillar") or {}),
        "salt_version": ctx.master.salt_version(),
        "version": __version__,
        "settings_hash": flavour.canonical_hash(flavour.image_settings(spec)),
    }
    return base, parts, flavour.fingerprint(parts)


def run(build, ctx):
    spec = ctx.spec
    if ctx.clients is not None:
        # bad credentials or a cloud that does not answer: said as such, before anything else
        auth.check_auth(ctx.clients)
    base, parts, fingerprint = current(ctx)
    if "boot" in build.data["plan"]:
        # what the builder boots with must exist before anything is made for it
        nova.check_boot(ctx.clients, spec["flavor"], spec.get("networks"), spec.get("key_name"),
                        spec.get("security_groups"))
        # and the master can give the builder the flavour's pillar
        build_pillar.prepare(build, ctx)
        # the volume strategy's builder needs salt-ami: it may be another image than the base
        builder = glance.find_image(ctx.clients, spec["builder"]) if spec.get("builder") else base
        build.data["builder_image"] = builder["id"]
    build.data.update(base={key: base[key] for key in ("id", "name", "path") if base.get(key)},
                      parts=parts, fingerprint=fingerprint)
    cleaned = claims.reap(ctx.builds_dir, lambda _name: ctx, spec["name"], skip=build.id)
    waited = {}
    # one build of a flavour at a time: one that waited finds the other's image
    if not _already_built(build, ctx, fingerprint):
        waited = claims.acquire(build, ctx, spec["timeouts"]["claim"])
        if _already_built(build, ctx, fingerprint):
            claims.release(build)
    build.save()
    return {"fingerprint": fingerprint, "base": base["id"], "nothing_to_do": build.data.get("nothing_to_do"),
            **waited, **({"cleaned_abandoned": [c["build"] for c in cleaned]} if cleaned else {})}


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
