"""The ``service`` provider of salt-ami's chroot bakes (strategies volume and local).

No init system runs in a chroot: a daemon started there would run on the build machine, hold
the image's filesystem busy and never reach the image, and Salt's own service modules refuse
(systemd_service only answers "offline", debian_service would run the init script). Chroot
image builders block service starts the same way. With this module as the provider, the
service states keep their meaning for the image that is being made:

- a service "runs" when it starts at boot of the image: ``service.status`` is whether it is
  enabled at boot (and not masked);
- a start, restart or reload (``service.running``, a ``watch``/``watch_in`` that fires) enables
  the service at boot instead;
- a stop (``service.dead``) disables it at boot instead;
- ``service.enabled``/``service.disabled`` and ``enable:`` make or remove the boot links
  with the image's ``systemctl`` (it works offline in a chroot), or in an image without
  systemctl the links the unit's [Install] section asks for, as its package's maintainer
  scripts make them.

Each of these is recorded with the service's boot state after it. The bake reads the record
(``chroot_service_record`` in the chroot's minion config) and says in its result which
services were enabled at boot instead of started, and which disabled instead of stopped.

Selected by the chroot's minion config (``providers: {service: chroot_service}``, the module
in its ``module_dirs``), never loaded otherwise. It runs under whatever salt the image has (its
own, 3006 or later, or salt-thin), where the salt-ami library is not installed: unlike the
other loader modules it is self-contained.
"""
import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import subprocess

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "chroot_service"

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount", ".swap", ".automount")


def __virtual__():
    return (False, "chroot_service is only the service provider of salt-ami's chroot bakes, where "
                   "the chroot's minion config selects it (providers: {service: chroot_service})")


# ------------------------------------------------------------------------------ the record
def _record_path():
    return __opts__.get("chroot_service_record") or os.path.join(__opts__["cachedir"], "chroot_services.json")


@contextlib.contextmanager
def _record():
    """The record, locked: salt-call processes a state runs (a check_cmd, a cmd.run) share it."""
    path = _record_path()
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        yield data
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)


def _note(name, asked):
    """What a state asked of the service, and its boot state after it."""
    boot = _boot(name)
    with _record() as data:
        entry = data.setdefault(_unit(name), {"asked": []})
        if asked not in entry["asked"]:
            entry["asked"].append(asked)
        entry["boot"] = boot
    return boot


# ------------------------------------------------------------------------------ units
def _unit(name):
    """systemd's name of a service: ``redis-server`` is ``redis-server.service``."""
    return name if name.endswith(UNIT_SUFFIXES) else name + ".service"


def _unit_file(name):
    """The unit's file, or for an instance (``redis-server@cache``) its template's."""
    unit = _unit(name)
    candidates = [unit]
    if "@" in unit:
        prefix, rest = unit.split("@", 1)
        candidates.append(prefix + "@" + rest[rest.rindex("."):])
    for directory in UNIT_DIRS:
        for candidate in candidates:
            path = os.path.join(directory, candidate)
            if os.path.exists(path):
                return path
    return None


def _init_script(name):
    path = os.path.join("/etc/init.d", name[:-len(".service")] if name.endswith(".service") else name)
    return path if os.access(path, os.X_OK) else None


def _systemctl():
    """systemctl, which works offline in a chroot (on the unit files, not on a systemd)."""
    return shutil.which("systemctl")


def _install_section(path):
    """{key: [values]} of a unit file's [Install] section."""
    found, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Install" and "=" in line and not line.startswith(("#", ";")):
                key, value = line.split("=", 1)
                found.setdefault(key.strip(), []).extend(value.split())
    return found


def _links(name, seen=None):
    """[(link, target)] that enable the unit, as systemctl makes them from its [Install]
    section (WantedBy, RequiredBy, Alias, Also): for an image without systemctl, whose
    packages' maintainer scripts make the same links."""
    unit, path = _unit(name), _unit_file(name)
    seen = seen if seen is not None else set()
    if unit in seen or path is None:
        return []
    seen.add(unit)
    install = _install_section(path)
    links = [(os.path.join("/etc/systemd/system", target + suffix, unit), path)
             for key, suffix in (("WantedBy", ".wants"), ("RequiredBy", ".requires"))
             for target in install.get(key, ())]
    links += [(os.path.join("/etc/systemd/system", alias), path) for alias in install.get("Alias", ())]
    for also in install.get("Also", ()):
        links += _links(also, seen)
    return links


def _change_boot(name, action):
    """``enable`` or ``disable`` the service at boot, and record it; raises with the tool's
    message."""
    if not available(name):
        raise CommandExecutionError("service {} is not installed in the image (no unit file or init "
                                    "script)".format(name))
    if not _unit_file(name):  # an init script only
        cmd = ["update-rc.d", os.path.basename(_init_script(name)), "defaults" if action == "enable" else "disable"]
    elif _systemctl():
        cmd = [_systemctl(), action, _unit(name)]
    else:
        cmd = None
        for link, target in _links(name):
            if action == "enable" and not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(target, link)
            elif action == "disable" and os.path.islink(link):
                os.unlink(link)
    if cmd:
        code, out = _run(*cmd)
        if code:
            raise CommandExecutionError("{} {} at boot failed (exit {}): {}".format(action, name, code, out))
    _note(name, action)
    return True


def _run(*cmd):
    p = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    return p.returncode, p.stdout.strip()


def _boot(name):
    if not available(name):
        return "absent"
    return "enabled" if enabled(name) and not masked(name) else "disabled"


# ------------------------------------------------------------------------------ the service functions
def available(name):
    """
    Whether the image has the service (a unit file, a template's for an instance, or an init
    script).

    CLI Example:

    .. code-block:: bash

        salt-call service.available redis-server
    """
    return bool(_unit_file(name) or _init_script(name))


def missing(name):
    """
    The opposite of ``available``.

    CLI Example:

    .. code-block:: bash

        salt-call service.missing redis-server
    """
    return not available(name)


def get_all():
    """
    Every service of the image: its systemd service units and init scripts.

    CLI Example:

    .. code-block:: bash

        salt-call service.get_all
    """
    names = set()
    for directory in UNIT_DIRS:
        for path in glob.glob(os.path.join(directory, "*.service")):
            if not os.path.basename(path).endswith("@.service"):
                names.add(os.path.basename(path)[:-len(".service")])
    names.update(os.path.basename(p) for p in glob.glob("/etc/init.d/*") if os.access(p, os.X_OK))
    return sorted(names)


def enabled(name, **kwargs):
    """
    Whether the service starts at boot of the image: ``systemctl is-enabled`` (offline), or
    without systemctl whether the links its [Install] section asks for exist (a unit without
    one is static: started by others, as systemctl says), or an init script's start links.

    CLI Example:

    .. code-block:: bash

        salt-call service.enabled redis-server
    """
    if _unit_file(name):
        if _systemctl():
            return _run(_systemctl(), "is-enabled", _unit(name))[0] == 0
        return all(os.path.lexists(link) for link, _target in _links(name))
    script = _init_script(name)
    return bool(script and glob.glob("/etc/rc[2-5].d/S??" + os.path.basename(script)))


def disabled(name, **kwargs):
    """
    Whether the service does not start at boot of the image.

    CLI Example:

    .. code-block:: bash

        salt-call service.disabled redis-server
    """
    return not enabled(name)


def enable(name, **kwargs):
    """
    Start the service at boot of the image.

    CLI Example:

    .. code-block:: bash

        salt-call service.enable redis-server
    """
    return _change_boot(name, "enable")


def disable(name, **kwargs):
    """
    Do not start the service at boot of the image.

    CLI Example:

    .. code-block:: bash

        salt-call service.disable redis-server
    """
    return _change_boot(name, "disable")


def start(name, **kwargs):
    """
    In a chroot bake no daemon starts: the service is enabled at boot instead, and the
    request recorded. ``restart``, ``reload``, ``force_reload`` and ``full_restart`` (what a
    ``watch`` that fires calls) do the same.

    CLI Example:

    .. code-block:: bash

        salt-call service.start redis-server
    """
    if not enabled(name):
        _change_boot(name, "enable")
    log.info("%s: not started in the chroot bake, enabled at boot of the image instead", name)
    _note(name, "start")
    return True


restart = reload_ = force_reload = full_restart = start


def stop(name, **kwargs):
    """
    In a chroot bake the service is disabled at boot instead of stopped.

    CLI Example:

    .. code-block:: bash

        salt-call service.stop redis-server
    """
    if available(name) and enabled(name):
        _change_boot(name, "disable")
    log.info("%s: not stopped in the chroot bake, disabled at boot of the image instead", name)
    _note(name, "stop")
    return True


def status(name, sig=None, **kwargs):
    """
    Whether the service runs once the image boots: enabled at boot and not masked. No daemon
    of the image runs in the chroot bake; ``sig`` is ignored, since a daemon that a state
    started by hand is not the service.

    CLI Example:

    .. code-block:: bash

        salt-call service.status redis-server
    """
    return _note(name, "status") == "enabled"


def get_running():
    """
    The services that run once the image boots: those enabled at boot.

    CLI Example:

    .. code-block:: bash

        salt-call service.get_running
    """
    return get_enabled()


def get_enabled():
    """
    The services of the image that start at boot.

    CLI Example:

    .. code-block:: bash

        salt-call service.get_enabled
    """
    return [name for name in get_all() if enabled(name)]


def get_disabled():
    """
    The services of the image that do not start at boot.

    CLI Example:

    .. code-block:: bash

        salt-call service.get_disabled
    """
    return [name for name in get_all() if not enabled(name)]


def _mask_link(name, runtime):
    return os.path.join("/run/systemd/system" if runtime else "/etc/systemd/system", _unit(name))


def masked(name, runtime=False):
    """
    Whether the unit is masked (linked to /dev/null).

    CLI Example:

    .. code-block:: bash

        salt-call service.masked redis-server
    """
    link = _mask_link(name, runtime)
    return os.path.islink(link) and os.readlink(link) == "/dev/null"


def mask(name, runtime=False):
    """
    Mask the unit, as ``systemctl mask`` does (a link to /dev/null).

    CLI Example:

    .. code-block:: bash

        salt-call service.mask redis-server
    """
    link = _mask_link(name, runtime)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink("/dev/null", link)
    return True


def unmask_(name, runtime=False):
    """
    Unmask the unit.

    CLI Example:

    .. code-block:: bash

        salt-call service.unmask redis-server
    """
    if masked(name, runtime):
        os.unlink(_mask_link(name, runtime))
    return True


def offline():
    """
    False: the service states must run (Salt's systemd module answers True in a chroot, and
    the states then do nothing, not even enable).

    CLI Example:

    .. code-block:: bash

        salt-call service.offline
    """
    return False


def systemctl_reload():
    """
    Nothing to reload: no systemd runs in the chroot, and the image's reads its units at boot.

    CLI Example:

    .. code-block:: bash

        salt-call service.systemctl_reload
    """
    return True


__func_alias__ = {"reload_": "reload", "unmask_": "unmask"}
