"""Scrub the mounted disk with the orchestration's own scrub, then trim its free space."""
from ... import scrub
from .. import mount

NAME = "scrub"
# nothing to undo: scrubbing only removes things


def run(build, ctx):
    report = scrub.scrub(root=mount.root_of(build), trim=True, salt=ctx.spec.get("salt", "disable"))
    return {"removed_bytes": report["bytes"], "trim": report["trim"]["method"],
            "trim_detail": report["trim"]["detail"]}
