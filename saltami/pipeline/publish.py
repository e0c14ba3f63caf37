"""The local provider's product. Without a cloud it is the output directory, as the outputs
step wrote it. With one, every output goes to Glance under a candidate name with the
provenance properties (the triplet as aki, ari and ami linked by kernel_id and ramdisk_id),
then the first output listed takes the flavour's final name through the promote step and
the others that name followed by their kind; the local files then go. A failure deletes
what was uploaded.

A Glance that refuses direct uploads gets the outputs through its import (glance.upload's
``auto``); one whose import converts images (qcow2 to raw on Ceph-backed clouds) stores them
in its format, which the build records with how each was verified (``outputs.stored``)."""
from .. import provenance
from ..cloud import glance
from . import candidate, outputs, promote

NAME = "publish"
DISK_FORMATS = {"qcow2": "qcow2", "qcow2-zstd": "qcow2", "raw": "raw"}
# the other outputs' images: not promoted themselves (lookups and pruning find one image per
# build), they name the one that is
PART, PART_OF = "part", "ami_part_of"
# what the build records of each uploaded image: what Glance made of it and how it was checked
STORED_KEYS = ("disk_format", "import_method", "verification", "converted_from")


def run(build, ctx):
    spec = ctx.spec
    files = build.data["outputs"]["files"]
    if ctx.clients is None:
        # from here on the directory is the build's product, not something to clean up
        for directory in build.made("output"):
            build.forget("output", directory)
        build.data["outputs"]["image"] = {key: build.data["outputs"][key] for key in ("directory", "files")}
        build.save()
        return {"directory": build.data["outputs"]["directory"]}
    candidate = provenance.candidate_name(build)
    props = provenance.properties(build, spec)
    limits = {"min_disk": spec.get("min_disk"), "min_ram": spec.get("min_ram")}
    uploaded = {}  # kind -> {part: image id}, the bootable part under "image"
    stored = {}    # kind -> {part: STORED_KEYS of its image}
    sizes = {}     # kind -> bytes of its bootable image
    for kind in spec["outputs"]:
        own = {**props, "ami_output": kind}
        if kind == "ami":
            # the libvirt driver boots kernel_id and ramdisk_id with this command line, and
            # without it with root=/dev/vda, which a root found by its label does not need
            own["os_command_line"] = build.data["outputs"]["command_lines"]["ami"]
            made = glance.upload_ami_triplet(ctx.clients, files[kind]["kernel"], files[kind]["ramdisk"],
                                             files[kind]["root"], f"{candidate}-{kind}", properties=own,
                                             progress=ctx.transfer(build, f"{candidate}-{kind}"), **limits)
            made = {"kernel": made["kernel"], "ramdisk": made["ramdisk"], "image": made["root"]}
        else:
            made = {"image": glance.upload(ctx.clients, files[kind]["image"], f"{candidate}-{kind}",
                                           disk_format=DISK_FORMATS[kind], properties=own,
                                           progress=ctx.transfer(build, f"{candidate}-{kind}"), **limits)}
        uploaded[kind] = {part: image["id"] for part, image in made.items()}
        sizes[kind] = made["image"].get("size")
        stored[kind] = {part: {key: image.get(key) for key in STORED_KEYS if image.get(key)}
                        for part, image in made.items()}
        for image_id in uploaded[kind].values():
            build.add("image", image_id)
    primary, *others = spec["outputs"]
    # its size for the build's summary, as the snapshot step records it
    build.data["outputs"]["candidate"] = {"id": uploaded[primary]["image"], "size": sizes[primary]}
    build.data["outputs"]["uploaded"] = uploaded
    build.data["outputs"]["stored"] = stored
    build.save()
    final = provenance.final_name(build, spec)
    for kind in others:
        for part, image_id in uploaded[kind].items():
            name = f"{final}-{kind}" + ("" if part == "image" else f"-{part}")
            glance.set_properties(ctx.clients, image_id, **{provenance.STATUS: PART,
                                                            PART_OF: uploaded[primary]["image"]})
            _publish(ctx, spec, image_id, name)
    if primary == "ami":
        for part in ("kernel", "ramdisk"):
            _publish(ctx, spec, uploaded[primary][part], f"{final}-{part}")
    promoted = promote.run(build, ctx)
    for kind in uploaded:
        for image_id in uploaded[kind].values():
            build.forget("image", image_id)
    outputs.undo(build, ctx)
    return {**promoted, "uploaded": uploaded}


def _publish(ctx, spec, image_id, name):
    glance.rename(ctx.clients, image_id, name)
    glance.set_visibility(ctx.clients, image_id, spec["visibility"])
    for member in spec.get("members") or []:
        glance.add_member(ctx.clients, image_id, member)


# the uploaded images go as the snapshot step's do
undo = candidate.remove
