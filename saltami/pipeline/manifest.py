"""A build's manifest, a JSON file (like Packer's manifest) saved after every change: the
state of one build, and what lets each step run as a separate call (one state per step in
the orchestration) and a later cleanup undo what a killed build made.

Its plan names the build's steps by module, as a path in this package (``resolve``,
``chroot.provision``): what a cleanup undoes, whatever the flavour says by then (plans.py
maps the names back to modules).

``SCHEMA`` below is the one list of the manifest's keys: for each, its type, which step (or
function) writes it and what it means, and the keys of what it holds. Code that writes or
reads a key it does not list fails tests/unit/test_manifest_schema.py; the reference renders
it (docs/manifest.rst)."""
import json
import os
import secrets
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import AmiError

# the package whose modules are the steps a plan names
STEPS_PACKAGE = __name__.rpartition(".")[0]
# step modules renamed since manifests recorded their plan: the name an older manifest gives
# the step, and its name now
RENAMED = {"bake_remote": "bake", "local_disk": "disk", "chroot_provision": "chroot.provision",
           "chroot_scrub": "chroot.scrub"}


class Key(NamedTuple):
    """A key of the manifest: its JSON type, who writes it, what it means, and for a mapping
    (or a list of records) the keys it holds, each with its type and meaning."""
    type: str
    by: str
    meaning: str
    keys: dict = {}


# a process as claims.this_process records it, to tell whether it still runs
PROCESS = "{host, boot, pid, start}: the host, its boot id, the pid and the process's start time"
# the resources made for each minion server (minion_server.start), <role>_<kind> (the ext_pillar
# finds a build by its <role>_key): what each kind is
_ROLE_KINDS = {"admission": "the hash of the token that admits its minion to the master (revoked once in)",
               "key": "the id of its minion, whose key the master accepted",
               "server": "its nova server",
               "volume": "the volume nova made for it to boot from"}


def _server_keys(role):
    """The keys of the record of the role's minion server (minion_server.start)."""
    return {"server": "str: its nova server", "minion": f"str: its minion's id, ami-{role}-<build id>",
            "volume_gib": "int: the size of the volume it boots from, when it boots from one"}


SCHEMA = {
    "id": Key("str", "Build.create", "the build's id, <flavour>-<YYYYmmdd-HHMMSS>-<6 hex> in UTC (new_id), also "
              "the manifest's file name, <id>.json; a builder's part of an orchestrated volume bake is "
              "<build id>-builder"),
    "flavour": Key("str", "Build.create", "the flavour built (the builder's part of a volume bake: its id)"),
    "status": Key("str", "Build.create, run_step, cleanup", "running from the start; done once its last step "
                  "ran, or resolve found nothing to do; failed when a step failed, before the cleanup; then "
                  "cleaned (everything it made is gone) or cleanup-failed (see cleanup.problems and "
                  "resources). A dry run's build, never written, says dry-run"),
    "plan": Key("list of str", "Build.create", "the steps' modules in order, as paths in saltami.pipeline "
                "(plan_name: resolve, chroot.provision); names since renamed are in RENAMED. Missing in "
                "manifests older than plans (Build.plan is then None)"),
    "created": Key("float", "Build.create", "when the build started (UNIX time); the image's date and "
                   "ami_built_at"),
    "updated": Key("float", "Build.save", "when the manifest was last saved (UNIX time): a build idle too long "
                   "is abandoned (claims.abandoned)"),
    "steps": Key("list of records", "run_step", "one record for each step started, in order", keys={
        "name": "str: the step's NAME",
        "status": "str: running, done or failed",
        "started": "float: when it started (UNIX time)",
        "process": f"mapping: the process that runs it, {PROCESS}",
        "seconds": "float: how long it ran, once done or failed",
        "error": "str: why it failed",
        "services": "list: the services the SLS asked to start that were enabled at boot instead "
                    "(chroot.provision)",
        "stopped": "list: the processes still running in the chroot at its end, which were stopped "
                   "(chroot.provision)",
        "output": "str: the output booted to validate it (local.validate)",
        "accel": "str: the accelerator it booted under, kvm or tcg (local.validate)",
        "cloud_init": "str: the status cloud-init ended with in it, done (local.validate)",
    }),
    "resources": Key("mapping of kind: list of str", "Build.add, Build.forget", "what the build made and has not "
                     "removed or handed over yet, by kind; recorded before it is made, so that a cleanup "
                     "(its steps' undo) finds what a killed build made", keys={
                         "image": "Glance images: the candidate (snapshot, upload, publish), a volume-backed "
                                  "builder's snapshot image; forgotten once promoted",
                         "volume": "the cinder volume the volume strategy bakes (volume)",
                         "snapshot_volume": "the volume made of a volume-backed builder's snapshot (snapshot)",
                         "volume_snapshot": "the cinder snapshots a volume-backed builder's snapshot image "
                                            "names (snapshot)",
                         "file": "the local provider's work disk image (disk)",
                         "mount": "the directories the disk is mounted on (mount, outputs)",
                         "output": "the local provider's output directory, until it is the product "
                                   "(outputs, publish)",
                         "validation": "the directory of the guest that validates a local output: its "
                                       "overlay, NoCloud seed and console, <id>.validate (local.validate)",
                         "qemu": "the qemu process of that guest, <pid>:<start time in clock ticks since "
                                 "boot> (local.validate)",
                         **{f"{role}_{kind}": f"the {role}'s: {text} ({step})"
                            for role, step in (("builder", "boot"), ("validator", "validate"))
                            for kind, text in _ROLE_KINDS.items()},
                     }),
    "outputs": Key("mapping", "the steps that make images", "what the build made to keep", keys={
        "candidate": "{id, size}: the image before it is promoted (snapshot, upload, publish); a "
                     "volume-backed builder's also volume_snapshot: {image, snapshots}, what it was made of",
        "image": "the product: {id, name} once promoted (promote), or the promoted image resolve found with "
                 "the fingerprint; the local provider's {directory, files} (publish), or {directory} found "
                 "by resolve",
        "directory": "str: the local provider's output directory (outputs)",
        "files": "{kind: {part: path}}: the local provider's output files (outputs)",
        "command_lines": "{kind: str}: the kernel command line of an ami triplet (outputs)",
        "uploaded": "{kind: {part: image id}}: each local output uploaded to Glance (publish)",
        "stored": "{kind: {part: {disk_format, import_method, verification, converted_from}}}: what "
                  "Glance made of each upload and how it was checked (publish)",
    }),
    "orchestrator": Key("mapping", "builds.build, builds.step, bake.bake", f"the process that drives the build, "
                        f"{PROCESS}: while it runs the build is not abandoned between two steps"),
    "reaper": Key("mapping", "claims.reap", f"the process cleaning up the build as abandoned, {PROCESS}"),
    "claimed": Key("float", "resolve (claims.acquire)", "when the build took its flavour's claim (UNIX time)"),
    "waited_for": Key("str", "resolve (claims.acquire)", "the build of the flavour it waited for to finish "
                      "before taking the claim; only when it waited"),
    "error": Key("str", "run_step", "why the build failed: step <name>: <reason>"),
    "failed_step": Key("str", "run_step", "the name of the step that failed"),
    "cleanup": Key("mapping", "cleanup", "the last cleanup (pipeline.cleanup, salt-run ami.cleanup)", keys={
        "at": "float: when (UNIX time)",
        "problems": "list of str: the undos that failed, and why",
    }),
    "nothing_to_do": Key("str", "resolve", "why the build has nothing to do (an image or output with its "
                         "fingerprint exists): its other steps are skipped and it is done"),
    "base": Key("mapping", "resolve", "the base image", keys={
        "id": "str: its Glance id, or a local base's: vanilla:<name>, file:<path>",
        "name": "str: its name",
        "path": "str: a local base's file on this machine",
    }),
    "parts": Key("mapping", "resolve, provision (record_render)", "what the fingerprint is a hash of, each part "
                 "on the image as ami_<part>", keys={
                     "base_id": "str: the base's id",
                     "base_hash": "str: the base's content hash",
                     "sls_hash": "str: the hash of the files the SLS used (render.files); provision puts in "
                                 "what this build's SLS used",
                     "pillar_hash": "str: the hash of the flavour's pillar",
                     "salt_version": "str: the master's Salt version",
                     "version": "str: salt-ami's version",
                     "settings_hash": "str: the hash of the flavour's settings that shape the image",
                     "parent_fingerprint": "str: the parent's image's fingerprint (from_parent only)",
                 }),
    "fingerprint": Key("str", "resolve, provision (record_render)", "sha256 of parts: the image's "
                       "ami_fingerprint, what tells whether a build has anything to do"),
    "render_from": Key("str or null", "resolve", "the build whose render the SLS part hashed (that of the "
                       "flavour's newest image), null for a flavour's first build"),
    "render": Key("mapping", "provision, bake (resolve.record_render)", "what the SLS used of the master's file "
                  "server, for the next build (and ami.status) to hash again", keys={
                      "entries": "list of str: the files and directories the state run used",
                      "files": "{path: hash or null}: the files of the entries, with their content's hash "
                               "(not in a builder's part of a volume bake)",
                  }),
    "builder_image": Key("str", "resolve", "the Glance image the builder boots (the base, or the flavour's "
                         "builder); plans that boot one"),
    "extends": Key("str or null", "resolve (build_pillar.prepare)", "the flavour's extends: whose pillar "
                   "the ami ext_pillar gives a flavour defined inline"),
    "builder": Key("mapping", "boot (minion_server.start); bake.bake", "the server the SLS are applied on; a bake "
                   "here of strategy volume records only its own server", keys=_server_keys("builder")),
    "validator": Key("mapping", "validate (minion_server.start)", "the server of the candidate image that tests "
                     "it", keys=_server_keys("validator")),
    "device": Key("str", "attach, loop; ami.builder_bake", "the block device of the disk baked: the volume on "
                  "the builder, or the local provider's loop device"),
    "packages": Key("mapping", "provision, bake", "the package manifest (pkg.list_pkgs), in a file beside the "
                    "manifest; the image carries its count and hash", keys={
                        "file": "str: its path, <builds dir>/<id>.packages.json",
                        "count": "int: how many packages",
                        "sha256": "str: the file's hash (the image's ami_packages_sha256)",
                    }),
    "pruned": Key("mapping", "prune", "what the prune did (provenance.pruning_report)", keys={
        "deleted": "list of str: the images deleted",
        "hidden": "list of str: the images hidden",
        "deactivated": "list of str: the images deactivated",
        "kept_in_use": "{image: [server]}: the images kept because servers use them",
        "failed": "{image: str}: the images that could not be pruned, and why",
        "must_be_empty": "bool: keep is 0",
    }),
}


def builds_dir(opts):
    """Build manifests live in the master's cache (a bake's, in the minion's), next to the
    job cache."""
    return os.path.join(opts["cachedir"], "ami", "builds")


def minion_id(role, build_id):
    """The minion id of a build's ``role`` ("builder" or "validator"), which is its server's
    name too: the one place that says how."""
    return f"ami-{role}-{build_id}"


def build_of_minion(role, minion_id_):
    """The build id in ``minion_id_`` if it is the minion of a build's ``role``, else None."""
    build_id = minion_id_.removeprefix(minion_id(role, ""))
    return None if build_id == minion_id_ else build_id


class Build:
    """The state bag of one build, persisted as ``<builds_dir>/<id>.json``."""

    def __init__(self, path, data):
        self.path = Path(path)
        self.data = data

    @classmethod
    def create(cls, builds_dir, flavour_name, steps, build_id=None):
        build_id = build_id or new_id(flavour_name)
        path = Path(builds_dir) / f"{build_id}.json"
        if path.exists():
            raise AmiError(f"build {build_id} exists already ({path})")
        build = cls(path, _new(build_id, flavour_name, steps, "running"))
        build.save()
        return build

    @classmethod
    def unsaved(cls, flavour_name, steps):
        """A build that is never written (a dry run's): its steps can check, never make."""
        build = cls(os.devnull, _new(new_id(flavour_name), flavour_name, steps, "dry-run"))
        build.save = lambda: None
        return build

    @classmethod
    def load(cls, builds_dir, build_id):
        path = Path(builds_dir) / f"{build_id}.json"
        try:
            return cls(path, json.loads(path.read_text()))
        except FileNotFoundError:
            raise AmiError(f"no build {build_id} (no manifest {path})") from None

    @property
    def id(self):
        return self.data["id"]

    @property
    def plan(self):
        """The module names of the build's steps, in order, by their names now; None for a
        manifest written before plans were recorded."""
        if "plan" not in self.data:
            return None
        return [RENAMED.get(name, name) for name in self.data["plan"]]

    def save(self):
        # tells a build that moves from one that sits still (claims.abandoned)
        self.data["updated"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.path)

    # resources the build made, by kind (SCHEMA["resources"].keys)
    def add(self, kind, value):
        self.data["resources"].setdefault(kind, []).append(value)
        self.save()

    def forget(self, kind, value):
        values = self.data["resources"].get(kind, [])
        if value in values:
            values.remove(value)
            self.save()

    def made(self, kind):
        return list(self.data["resources"].get(kind, []))


def plan_name(step):
    """The name a plan gives the step module ``step``: its path in the steps' package,
    ``chroot.provision`` for saltami.pipeline.chroot.provision."""
    return step.__name__.removeprefix(f"{STEPS_PACKAGE}.")


def _new(build_id, flavour_name, steps, status):
    """A new build's manifest."""
    return {"id": build_id, "flavour": flavour_name, "status": status,
            "plan": [plan_name(s) for s in steps],
            "created": time.time(), "steps": [], "resources": {}, "outputs": {}}


def new_id(flavour_name):
    """Sortable by time, unique across parallel builds of one flavour."""
    return f"{flavour_name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
