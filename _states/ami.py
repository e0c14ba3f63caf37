"""Images as states: ``ami.present`` (an image of a flavour, built only when its fingerprint
differs from the newest image's), ``ami.absent`` and ``ami.pruned``.

These call the ``ami`` runner, so they run where runners can be called: in an
orchestration (``salt-run state.orch``) or on the master's own minion.

.. code-block:: yaml

    debian-postgres:
      ami.present:
        - base: {properties: {os_distro: debian, os_version: "12"}}
        - sls: [postgres, postgres.python]
        - flavor: m1.small

Without flavour keys, ``name`` is a flavour of pillar ``ami:flavours``.
"""
try:
    from saltami import builds, provenance, saltglue

    HAS_LIBS = True
except ImportError as _e:  # pragma: no cover - depends on the installation
    HAS_LIBS, _MISSING = False, str(_e)

__virtualname__ = "ami"


def __virtual__():
    if not HAS_LIBS:
        return False, f"the ami states need the salt-ami library: {_MISSING}"
    return __virtualname__


def _runner(fun, **kwargs):
    return __salt__["saltutil.runner"](f"ami.{fun}", **kwargs)


def _failed(ret, out):
    """saltutil.runner hands back a runner's failure as a string or as a dict with a
    non-empty ``Error`` (the ami runner's, see _runners/ami.py) or ``error``; a build's
    summary carries ``error: None`` when it succeeded."""
    if isinstance(out, dict):
        error = out.get("Error") or out.get("error")
        if not error:
            return False
    else:
        error = out
    ret.update(result=False, comment=str(error))
    return True


def present(name, **definition):
    """
    An up-to-date image of flavour ``name`` exists: one whose fingerprint (base image and its
    hash, SLS content, pillar, salt and salt-ami versions, image settings) is the flavour's
    current one. Otherwise a build runs (not with ``test=True``, which says what would be
    built and why).

    name
        the flavour's name (images carry it as ``ami_flavour``)
    definition
        the flavour's keys (see pillar.example); none to use pillar ``ami:flavours:<name>``
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    definition = {k: v for k, v in definition.items() if not k.startswith("__")} or None
    status = _runner("status", flavour=name, definition=definition)
    if _failed(ret, status):
        return ret
    if status["up_to_date"]:
        ret["comment"] = (f"image {status['image']['name']} ({status['image']['id']}) has fingerprint "
                          f"{status['fingerprint']}: nothing to build")
        return ret
    why = "; ".join(status["why"])
    if __opts__["test"]:
        ret.update(result=None, comment=f"flavour {name} would be built: {why}",
                   changes={"image": {"old": status["newest"], "new": f"fingerprint {status['fingerprint']}"}})
        return ret
    built = _runner("build", flavour=name, definition=definition)
    if _failed(ret, built):
        return ret
    if built.get("nothing_to_do"):
        # another build of the flavour made it meanwhile
        ret["comment"] = built["nothing_to_do"]
        return ret
    pruned = provenance.outcomes(built.get("pruned"))
    in_use = pruned.get("kept_in_use") or {}
    ret.update(comment=f"built image {built['image']['name']} because {why}"
                       + (f"; kept {len(in_use)} older image(s) in use by servers: {in_use}" if in_use else ""),
               changes={"image": {"old": status["newest"], "new": built["image"]},
                        "build": {"id": built["build"], "manifest": built["manifest"]},
                        **({"pruned": pruned} if pruned else {})})
    return ret


def absent(name, force=False):
    """
    No image of flavour ``name`` is left (one a server uses makes the state fail unless
    ``force``).
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    out = _runner("remove", flavour=name, keep=0, force=force, test=__opts__["test"])
    if _failed(ret, out):
        return ret
    return _report(ret, name, out)


def pruned(name, keep=3):
    """
    At most ``keep`` images of flavour ``name`` are left, the newest; images that servers
    use are kept and reported.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    out = _runner("remove", flavour=name, keep=keep, force=False, test=__opts__["test"])
    if _failed(ret, out):
        return ret
    return _report(ret, name, out)


def _report(ret, name, out):
    done = provenance.outcomes(out)
    in_use, failed = done.pop("kept_in_use", {}), done.pop("failed", {})
    if done:
        ret["changes"] = done
        if __opts__["test"]:
            ret["result"] = None
    verbs = {"deleted": ("deleted", "would delete"), "hidden": ("hid", "would hide"),
             "deactivated": ("deactivated", "would deactivate")}
    said = [f"{verbs['deleted'][bool(__opts__['test'])]} {len(out['deleted'])} image(s) of {name}"]
    said += [f"{verbs[k][bool(__opts__['test'])]} {len(done[k])} shared image(s)" for k in ("hidden", "deactivated")
             if done.get(k)]
    if in_use:
        said.append(f"kept {len(in_use)} in use by servers: {in_use}")
    if failed:
        said.append(f"could not remove {len(failed)}: {failed}")
    ret["comment"] = "; ".join(said)
    if (in_use and out.get("must_be_empty")) or failed:
        ret["result"] = False
    return ret


def step(name, flavour, build, owner=None):
    """
    One step of an orchestrated build, as the orchestration ``ami.build``
    (salt/formulas/ami/build.sls) lays them out, one state each: not a state to write by
    hand. ``name`` is the step (resolve, boot, provision...), ``build`` the build's id, and
    ``owner`` the process that drives it. Its changes are what the step did; a resolve that
    finds the flavour's image up to date has none, and the build's other steps, which need
    its changes (onchanges), do not run. With ``test=True`` nothing runs: resolve says
    whether the flavour would be built and why.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __opts__["test"]:
        return _step_test(ret, name, flavour, build)
    try:
        with saltglue.salt_errors():
            out = builds.master_step(__opts__, __context__, flavour, build, name, owner=owner)
    except (saltglue.SaltInvocationError, saltglue.CommandExecutionError) as e:
        ret.update(result=False, comment=str(e))
        return ret
    if out.get("nothing_to_do") or out.get("skipped"):
        ret["comment"] = f"build {build}: nothing to do: {out.get('nothing_to_do') or out['skipped']}"
        return ret
    ret["changes"] = {k: v for k, v in out.items() if k not in ("step", "seconds") and v not in (None, {}, [])} \
        or {"done": name}
    ret["comment"] = f"build {build}: step {name} done in {out.get('seconds', 0):.1f}s"
    return ret


def _step_test(ret, name, flavour, build):
    """A dry run: resolve says whether the flavour would be built and why, what the build
    would create and prune, after checking what a build checks (a bad flavour fails as it
    would); the other steps say they would run. Nothing is created or claimed."""
    if name != "resolve":
        ret.update(result=None, comment=f"build {build}: step {name} would run")
        return ret
    try:
        with saltglue.salt_errors():
            plan = builds.master_dry_run(__opts__, __context__, flavour)
    except (saltglue.SaltInvocationError, saltglue.CommandExecutionError) as e:
        ret.update(result=False, comment=str(e))
        return ret
    if not plan["would_build"]:
        ret["comment"] = (f"image {plan['image']['name']} ({plan['image']['id']}) has fingerprint "
                          f"{plan['fingerprint']}: nothing to build")
        return ret
    ret.update(result=None, comment=f"flavour {flavour} would be built: {'; '.join(plan['why'])}",
               changes={k: plan[k] for k in ("would_create", "would_prune", "fingerprint") if plan.get(k)})
    return ret


def cleanup(name):
    """
    Undo what the build ``name`` (its id) made: servers, volumes, minion keys, images. The
    orchestration ``ami.build`` runs it when a step of the build failed.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __opts__["test"]:
        ret.update(result=None, comment=f"would undo what build {name} made")
        return ret
    out = _runner("cleanup", build=name)
    if _failed(ret, out):
        return ret
    ret["changes"] = {k: v for k, v in out.items() if k in ("status", "left", "problems") and v}
    ret["comment"] = f"build {name}: {out['status']}"
    if out.get("problems"):
        ret.update(result=False, comment=f"build {name}: cleanup could not remove everything: "
                                         f"{'; '.join(out['problems'])}")
    return ret
