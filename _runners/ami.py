"""Image builds on the master: ``salt-run ami.build flavour=NAME`` runs a whole build; the
orchestration ``salt-run state.orch ami.build`` runs the same steps one state at a time
through ``ami.step`` and ``ami.cleanup``; ``salt-run ami.watch`` follows running builds.
What a build made answers questions: ``ami.packages`` and ``ami.diff``.

Flavours come from the master's pillar (``ami:flavours``, see pillar.example); the cloud from
``ami:cloud`` in pillar or the master config.
"""
import sys

try:
    from saltami import builds, families, images, provenance, report, saltglue
    from saltami import flavour as flavour_lib
    from saltami.pipeline import context as pipeline_context

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami"


def __virtual__():
    if not HAS_LIBS:
        return False, f"the ami runner needs the salt-ami library: {_MISSING}"
    return __virtualname__


def _pillar(flavour=None, definition=None):
    """The master's pillar and its ``ami`` part; ``definition`` adds (or replaces) the
    flavour ``flavour`` there, for the ami.present state's inline flavours."""
    pillar = builds.master_pillar(__opts__)
    ami = dict(pillar.get("ami") or {})
    if definition is not None:
        ami["flavours"] = dict(ami.get("flavours") or {}, **{flavour: definition})
    return pillar, ami


def _clients(pillar, cloud):
    return saltglue.master_clients(__opts__, __context__, pillar, cloud)


def _say():
    """Where a person reads progress: salt-run prints a runner's progress events as they come,
    each as its line alone with the ami_progress outputter. None when ``--out`` asks for
    data (JSON, YAML...), which must stay one document: the progress is on the master's bus
    all the same (``salt-run ami.watch``)."""
    if __opts__.get("output"):
        return None

    def say(line):
        __jid_event__.fire_event({"message": line, "outputter": "ami_progress"}, "progress")
        # salt-run prints it in this process, and print does not flush a pipe (| tee build.log)
        sys.stdout.flush()

    return say


def _printing(say):
    """The block's builds say their progress through ``say`` (nothing without one)."""
    import contextlib

    if say is None:
        return contextlib.nullcontext()
    return pipeline_context.listening(report.Progress().printer(say))


def build(flavour=None, definition=None, cloud=None, test=False):
    """
    Build one flavour's image, all steps in this process: resolve, boot, provision, scrub,
    snapshot, release, validate, promote, prune. On failure everything the build made is
    removed and the error names the failing step. Without ``flavour``, builds every flavour
    one after the other (a list of flavours: those). Prints each step as it starts and ends
    with its duration, transfers with their bytes and rate, and at the end a summary (image,
    size, duration of each step, what was pruned).

    A flavour built from its parent's image (``from_parent``) builds after its parent, and
    after the parent's own parent if it too builds from its parent's image: those are built
    first (or found up to date at their resolve) even when not asked for, and one that fails
    stops the flavours built from it. One flavour's summary then has theirs under ``parents``.

    ``test=True``: a dry run. For each flavour, whether it would build and why, what it would
    create (servers, volumes, images and their names) and what its prune would remove; it
    checks what a build checks first (a bad flavour fails as it would) and creates, claims
    and writes nothing.

    CLI Example:

    .. code-block:: bash

        salt-run ami.build flavour=debian-postgres
        salt-run ami.build flavour='[debian-postgres, debian-redis]'
        salt-run ami.build flavour=debian-postgres test=True
    """
    pillar, ami = _pillar(flavour if isinstance(flavour, str) else None, definition)
    if test:
        def dry_runs():
            with saltglue.salt_errors():
                clients = _clients(pillar, cloud)
                names = families.names_in_order(ami, [flavour] if isinstance(flavour, str) else flavour or None)
                return {name: builds.dry_run(__opts__, ami, name, clients) for name in names}
        return _reported(dry_runs)
    say = _say()
    if isinstance(flavour, str):
        with _printing(say):
            return _reported(lambda: families.build(__opts__, ami, flavour, _clients(pillar, cloud)))
    with saltglue.salt_errors(), _printing(say):
        clients = _clients(pillar, cloud)
        results, failed = families.build_all(__opts__, ami, flavour or None, clients, say=say)
        if failed:
            raise saltglue.CommandExecutionError(f"builds of {', '.join(failed)} failed", info=results)
        return results


def status(flavour=None, definition=None, cloud=None):
    """
    Whether a flavour's newest image is up to date: the fingerprint it would have now, the
    base image it would start from, and, when no promoted image has that fingerprint, what
    changed (base, SLS, pillar, salt, settings).

    Image families: ``parent`` is the flavour whose image this one builds from
    (``from_parent``), and this one is out of date too while its parent is, or when the
    parent's image changed since its own was made (the why names the parent); ``children``
    has the status of each flavour built from its image, each with its own children. Without
    ``flavour``, every flavour's, as trees: the flavours built from no other's image, each with
    its children.

    CLI Example:

    .. code-block:: bash

        salt-run ami.status debian-postgres
        salt-run ami.status
    """
    pillar, ami = _pillar(flavour, definition)
    with saltglue.salt_errors():
        if flavour is None:
            return families.statuses(__opts__, ami, _clients(pillar, cloud))
        return families.status(__opts__, ami, flavour, _clients(pillar, cloud))


def remove(flavour, keep=0, force=False, test=False, cloud=None):
    """
    Delete the flavour's promoted images but the ``keep`` newest; images that servers use are
    kept (and reported) unless ``force``. ``test=True`` only says what would go.

    CLI Example:

    .. code-block:: bash

        salt-run ami.remove debian-postgres keep=2
    """
    pillar, _ami = _pillar()
    with saltglue.salt_errors():
        return provenance.prune(_clients(pillar, cloud), flavour, keep, force=force, dry_run=test)


def flavours():
    """
    The flavours defined in pillar, fully resolved (extends and defaults applied).

    CLI Example:

    .. code-block:: bash

        salt-run ami.flavours
    """
    _pillar_all, ami = _pillar()
    with saltglue.salt_errors():
        return flavour_lib.resolve_all(ami)


def step(step, flavour, build, owner=None, cloud=None):
    """
    One step of an orchestrated build (see salt/formulas/ami/build.sls). ``owner`` is the
    process that drives the build (``ami.plan`` gives it): while it lives, a build between
    two steps is not taken for abandoned.

    CLI Example:

    .. code-block:: bash

        salt-run ami.step resolve flavour=debian-postgres build=debian-postgres-20261121-101500-a1b2c3
    """
    return _reported(lambda: builds.master_step(__opts__, __context__, flavour, build, step, owner=owner,
                                                cloud=cloud))


def cleanup(build=None, cloud=None):
    """
    Undo what a failed or interrupted build made (servers, volumes, minion keys, images),
    from its manifest. Without ``build``, every abandoned build's: one whose process was
    killed (the next build of a flavour does this for its flavour by itself).

    CLI Example:

    .. code-block:: bash

        salt-run ami.cleanup debian-postgres-20261121-101500-a1b2c3
        salt-run ami.cleanup
    """
    pillar, ami = _pillar()
    return _reported(lambda: builds.cleanup(__opts__, ami, build, _clients(pillar, cloud)))


def watch(build=None, wait=300, timeout=None):
    """
    Follow the builds that run on this master (orchestrated or not), and those that start
    meanwhile, from its event bus until they end, printing what ``ami.build`` prints: each
    step as it starts and ends, transfers, and a summary at the end of each build (image,
    size, duration of each step, what was pruned). With ``build``, that build only (its
    summary at once if it is over). With nothing running, waits up to ``wait`` seconds for a
    build to start; ``timeout`` (seconds) stops watching builds that still run. Exits 1 when
    a build it followed failed.

    CLI Example:

    .. code-block:: bash

        salt-run ami.watch
        salt-run ami.watch debian-postgres-20261121-101500-a1b2c3
    """
    say = _say() or (lambda line: None)
    events = saltglue.master_events(__opts__)
    followed = report.watch(events, builds.builds_dir(__opts__), say, build_id=build, wait=wait, timeout=timeout)
    ended = followed["ended"]
    if build and build not in ended and build not in followed["running"]:
        __context__["retcode"] = 1
        return {"Error": f"no build {build} ran on this master within {wait}s (no manifest in "
                         f"{builds.builds_dir(__opts__)})", "retcode": 1}
    if not ended and not followed["running"]:
        say(f"no build ran, and none started within {wait}s")
    if any(s["status"] != "done" for s in ended.values()):
        __context__["retcode"] = 1
    return {**{b: {k: s.get(k) for k in ("flavour", "status", "image", "error", "seconds")} for b, s in ended.items()},
            **({"still_running": followed["running"]} if followed["running"] else {})}


def packages(image, cloud=None):
    """
    The package manifest ({name: version}) of an image a build made, ``image`` given by name
    (the newest of that name) or id: what its build recorded (checked against the hash the
    image carries), from this master's build records and Glance.

    CLI Example:

    .. code-block:: bash

        salt-run ami.packages debian-postgres-20261121-101500
    """
    pillar, _ami = _pillar()
    return _reported(lambda: images.packages(_clients(pillar, cloud), builds.builds_dir(__opts__), image))


def diff(image_a, image_b, cloud=None):
    """
    What changed from image ``image_a`` to image ``image_b`` (names or ids): packages added,
    removed, upgraded and downgraded (with both versions), and the parts of the fingerprint
    that differ (base, SLS, pillar, salt and salt-ami versions, settings, with both values;
    for the SLS, the files their builds used that differ), from this master's build records
    and the images' properties in Glance.

    CLI Example:

    .. code-block:: bash

        salt-run ami.diff debian-postgres-20261120-090000 debian-postgres-20261121-101500
    """
    pillar, _ami = _pillar()
    return _reported(lambda: images.diff(_clients(pillar, cloud), builds.builds_dir(__opts__), image_a, image_b))


def _reported(call):
    """A failure as ``{"Error": reason}``: the salt.runner state then fails and shows the
    reason (the step and why), and salt-run prints it without a traceback and exits 1 (its
    exit code comes from a ``retcode`` in what a runner returns; bad input, which Salt takes
    for bad arguments, would exit 0 with the usage)."""
    try:
        return call()
    except (saltglue.errors.AmiError, saltglue.SaltInvocationError, saltglue.CommandExecutionError) as e:
        __context__["retcode"] = 1
        return {"Error": str(e), "retcode": 1}
