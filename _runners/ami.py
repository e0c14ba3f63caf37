"""Image builds on the master: ``salt-run ami.build flavour=NAME`` runs a whole build; the
orchestration ``salt-run state.orch ami.build`` runs the same steps one state at a time
through ``ami.step`` and ``ami.cleanup``.

Flavours come from the master's pillar (``ami:flavours``, see pillar.example); the cloud from
``ami:cloud`` in pillar or the master config.
"""
try:
    from saltami import builds, provenance, saltglue
    from saltami import flavour as flavour_lib

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
    return saltglue.clients(__context__, saltglue.config_getter(__opts__, pillar), cloud)


def build(flavour=None, definition=None, cloud=None):
    """
    Build one flavour's image, all steps in this process: resolve, boot, provision, scrub,
    snapshot, release, validate, promote, prune. On failure everything the build made is
    removed and the error names the failing step. Without ``flavour``, builds every flavour
    one after the other.

    CLI Example:

    .. code-block:: bash

        salt-run ami.build flavour=debian-postgres
    """
    pillar, ami = _pillar(flavour, definition)
    if flavour:
        return _reported(lambda: builds.build(__opts__, ami, flavour, _clients(pillar, cloud)))
    with saltglue.salt_errors():
        clients = _clients(pillar, cloud)
        results, failed = {}, []
        for name in flavour_lib.names(ami):
            try:
                results[name] = builds.build(__opts__, ami, name, clients)
            except saltglue.errors.AmiError as e:
                results[name] = {"error": str(e)}
                failed.append(name)
        if failed:
            raise saltglue.CommandExecutionError(f"builds of {', '.join(failed)} failed", info=results)
        return results


def status(flavour, definition=None, cloud=None):
    """
    Whether a flavour's newest image is up to date: the fingerprint it would have now and,
    when no promoted image has it, what changed (base, SLS, pillar, salt, settings).

    CLI Example:

    .. code-block:: bash

        salt-run ami.status debian-postgres
    """
    pillar, ami = _pillar(flavour, definition)
    with saltglue.salt_errors():
        return builds.status(__opts__, ami, flavour, _clients(pillar, cloud))


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
    pillar, ami = _pillar()
    return _reported(lambda: builds.step(__opts__, ami, flavour, build, step, _clients(pillar, cloud),
                                         owner=owner))


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
