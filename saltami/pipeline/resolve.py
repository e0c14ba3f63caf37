"""Find the base image and compute the build's fingerprint; stop here when an image with that
fingerprint is already promoted."""
from .. import __version__, flavour, provenance
from ..cloud import glance

NAME = "resolve"


def current(ctx):
    """(base image, fingerprint parts, fingerprint) of the flavour as it stands now."""
    spec = ctx.spec
    flavour.check_sls(spec, ctx.master.sls_exists)
    base = glance.find_image(ctx.clients, spec["base"])
    parts = {
        "base_id": base["id"],
        "base_hash": base.get("os_hash_value") or base.get("checksum"),
        "sls_hash": ctx.master.sls_hash(spec["sls"]),
        "pillar_hash": flavour.canonical_hash(spec.get("pillar") or {}),
        "salt_version": ctx.master.salt_version(),
        "version": __version__,
        "settings_hash": flavour.canonical_hash(flavour.image_settings(spec)),
    }
    return base, parts, flavour.fingerprint(parts)


def run(build, ctx):
    base, parts, fingerprint = current(ctx)
    build.data.update(base={"id": base["id"], "name": base.get("name")}, parts=parts, fingerprint=fingerprint)
    existing = provenance.find_promoted(ctx.clients, ctx.spec["name"], fingerprint=fingerprint)
    if existing:
        image = existing[0]
        build.data["nothing_to_do"] = f"image {image['name']} ({image['id']}) already has fingerprint {fingerprint}"
        build.data["outputs"]["image"] = {"id": image["id"], "name": image["name"]}
    build.save()
    return {"fingerprint": fingerprint, "base": base["id"], "nothing_to_do": build.data.get("nothing_to_do")}


def undo(build, ctx):
    """Nothing to undo: resolve only reads."""
