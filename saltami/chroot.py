"""Apply Salt to a mounted root filesystem through a chroot, as the volume bake and the local
provider do: no boot of the image, so no keys, logs or caches of the build are made in it.

``prepare`` mounts what packages expect (proc, sys, dev, devpts, a tmpfs on /run), gives the
chroot the host's resolv.conf and a policy-rc.d that keeps packages from starting daemons;
``teardown`` undoes it from what it finds (mounts below the root, backup files beside the
replaced ones), so it also cleans up after a bake that was killed. Everything the bake brings
in (salt's config, the SLS tree, the pillar, salt-thin, salt's cache and log) lives under
/run/salt-ami, on the tmpfs, and never reaches the image.

No init system runs in the chroot: the service states go through the chroot's own service
provider (_modules/chroot_service.py), for which a start means "enabled at boot", and the
bake's result lists the services so enabled. A daemon that an SLS starts by hand (or a
package's maintainer script that bypasses policy-rc.d) is stopped by ``teardown`` before
anything is unmounted. States that run ``salt-call`` themselves find on their PATH the
salt-call of the bake, with its config.
"""
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import time
from pathlib import Path

import salt.utils.thin

from . import disk, saltext
from .command import completed
from .errors import AmiError
from .saltfiles import states_outcome

log = logging.getLogger(__name__)

WORK = "/run/salt-ami"
BINDS = (  # (target below the root, source, fstype, options), in mount order
    ("proc", "proc", "proc", ()),
    ("sys", "sysfs", "sysfs", ()),
    ("dev", "/dev", None, ("bind",)),
    ("dev/pts", "devpts", "devpts", ("newinstance", "ptmxmode=0666")),
    ("run", "tmpfs", "tmpfs", ("mode=0755",)),
)
POLICY_RC_D = "#!/bin/sh\n# salt-ami: no daemon starts while the image is baked\nexit 101\n"
ORIGINAL, ABSENT = ".salt-ami-orig", ".salt-ami-none"
# salt installed in the image, in the places installers put it; otherwise salt-thin is pushed in
SALT_CALLS = ("/opt/salt/bin/salt-call", "/opt/saltstack/salt/bin/salt-call", "/usr/bin/salt-call",
              "/usr/local/bin/salt-call")
CACHEDIR = "/var/cache/salt-ami"
# first on the PATH of salt in the chroot: the bake's salt-call, for states that run it
BIN = f"{WORK}/bin"
PATH = f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_PROVIDER = Path(saltext.HERE, "_modules", "chroot_service.py")
SERVICES = f"{WORK}/services.json"
# what _modules/chroot_service.py records when a state asks a service to run or to stop
# (service.running, service.dead, a watch that fires), as opposed to enabling it only
RUN_OR_STOP = ("status", "start", "stop")
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL for what still runs in the chroot


class ChrootFailed(AmiError):
    """Salt failed inside the chroot; the message lists the failed states."""


def _replace(root, path, content, mode):
    """Put ``content`` at ``path`` in the image, keeping what was there for ``_restore``."""
    target = Path(root, path.lstrip("/"))
    if not (Path(f"{target}{ORIGINAL}").exists() or Path(f"{target}{ABSENT}").exists()):
        if target.exists() or target.is_symlink():
            os.rename(target, f"{target}{ORIGINAL}")
        else:
            Path(f"{target}{ABSENT}").touch()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    target.write_text(content)
    target.chmod(mode)


def _restore(root, path):
    target = Path(root, path.lstrip("/"))
    if Path(f"{target}{ORIGINAL}").exists() or Path(f"{target}{ORIGINAL}").is_symlink():
        if target.exists() or target.is_symlink():
            target.unlink()
        os.rename(f"{target}{ORIGINAL}", target)
    elif Path(f"{target}{ABSENT}").exists():
        if target.exists() or target.is_symlink():
            target.unlink()
        Path(f"{target}{ABSENT}").unlink()


REPLACED = ("/etc/resolv.conf", "/usr/sbin/policy-rc.d")


def prepare(root):
    """Make ``root`` ready for packages and salt; undone by ``teardown``."""
    root = os.path.realpath(root)
    if not Path(root, "etc").is_dir() or not Path(root, "usr").is_dir():
        raise AmiError(f"{root} does not look like a root filesystem (no /etc or /usr)")
    for target, source, fstype, options in BINDS:
        disk.mount(source, os.path.join(root, target), *options, fstype=fstype)
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    _replace(root, "/etc/resolv.conf", resolv.read_text() if resolv.exists() else "", 0o644)
    _replace(root, "/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)


def teardown(root):
    """Stop what still runs in the chroot, unmount what ``prepare`` mounted (and anything a
    package left mounted below the root) and put back the files it replaced. The root's own
    mount stays. Returns the processes it stopped."""
    root = os.path.realpath(root)
    stopped = stop_processes(root)
    for point in disk.mounts_below(root):
        if point != root:
            disk.unmount_below(point)
    for path in REPLACED:
        _restore(root, path)
    return stopped


def processes_in(root):
    """{pid: command name} of the processes whose root directory is ``root`` or below it."""
    root = os.path.realpath(root)
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            proc_root = os.readlink(f"/proc/{pid}/root")
            if proc_root == root or proc_root.startswith(root.rstrip("/") + "/"):
                found[int(pid)] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


def stop_processes(root, grace=STOP_GRACE):
    """SIGTERM, then after ``grace`` seconds SIGKILL, to every process in the chroot at
    ``root`` (a daemon an SLS started, a package's that ignored policy-rc.d): a process left
    there would keep the image's filesystem busy. Returns ["name[pid]"] of those stopped."""
    stopped = {}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        deadline = time.monotonic() + wait
        while True:
            running = processes_in(root)
            if not running or time.monotonic() > deadline:
                break
            for pid, name in running.items():
                if pid not in stopped:
                    log.warning("stopping %s (pid %d), which still runs in the chroot at %s", name, pid, root)
                stopped[pid] = name
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.2)
    left = processes_in(root)
    if left:
        raise AmiError(f"processes in the chroot at {root} survived SIGKILL: "
                       + ", ".join(f"{name}[{pid}]" for pid, name in sorted(left.items())))
    return [f"{name}[{pid}]" for pid, name in sorted(stopped.items())]


# ------------------------------------------------------------------------------ salt in the chroot
def _salt_command(root, thin_cachedir):
    """salt-call inside the chroot: the image's own salt, else salt-thin pushed onto /run.
    Puts the bake's ``salt-call`` in BIN, with the bake's config (a ``-c`` given to it wins)."""
    command, how = _salt(root, thin_cachedir)
    wrapper = Path(root, BIN.lstrip("/"), "salt-call")
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\n# salt-ami: the salt of this bake ({how}), with its config\n"
                       f"exec {shlex.join(command)} -c {WORK}/etc \"$@\"\n")
    wrapper.chmod(0o755)
    return [f"{BIN}/salt-call"], how


def _salt(root, thin_cachedir):
    for candidate in SALT_CALLS:
        if os.access(Path(root, candidate.lstrip("/")), os.X_OK):
            return [candidate], f"salt in the image ({candidate})"
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if os.access(Path(root, p.lstrip("/")), os.X_OK)), None)
    if not python:
        raise AmiError(f"the image at {root} has neither salt ({', '.join(SALT_CALLS)}) nor python3 "
                       "for salt-thin: install salt or python3 in the base image")
    dest = Path(root, WORK.lstrip("/"), "thin")
    if not (dest / "salt-call").exists():
        # made once per salt version on this machine, unpacked into each chroot's /run
        dest.mkdir(parents=True, exist_ok=True)
        shutil.unpack_archive(salt.utils.thin.gen_thin(thin_cachedir), dest, "gztar")
    return [python, f"{WORK}/thin/salt-call"], "salt-thin"


def _write_tree(root, files, pillar):
    """The SLS tree, the pillar and a masterless minion config, all under /run/salt-ami."""
    work = Path(root, WORK.lstrip("/"))
    for rel, source in files.items():
        dest = work / "srv" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    (work / "srv").mkdir(parents=True, exist_ok=True)
    (work / "pillar").mkdir(parents=True, exist_ok=True)
    (work / "pillar" / "top.sls").write_text('base: {"*": [ami_bake]}\n')
    pillar_file = work / "pillar" / "ami_bake.sls"
    pillar_file.touch(mode=0o600)
    pillar_file.write_text(json.dumps(pillar or {}))  # JSON is YAML
    (work / "etc").mkdir(parents=True, exist_ok=True)
    (work / "modules").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SERVICE_PROVIDER, work / "modules" / SERVICE_PROVIDER.name)
    config = {"id": "salt-ami-bake", "file_client": "local", "file_roots": {"base": [f"{WORK}/srv"]},
              "pillar_roots": {"base": [f"{WORK}/pillar"]}, "cachedir": f"{WORK}/cache",
              "pki_dir": f"{WORK}/pki", "sock_dir": f"{WORK}/sock", "log_file": f"{WORK}/log/minion",
              "log_level_logfile": "info", "enable_fqdns_grains": False,
              # service states mean "at boot" here (_modules/chroot_service.py)
              "module_dirs": [f"{WORK}/modules"], "providers": {"service": SERVICE_PROVIDER.stem},
              "chroot_service_record": SERVICES}
    (work / "etc" / "minion").write_text(json.dumps(config))


def _run_salt(root, args, what, cachedir, timeout):
    """salt-call (masterless) inside the prepared chroot; its JSON return."""
    command, how = _salt_command(root, cachedir)
    cmd = ["chroot", root, "/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8",
           "DEBIAN_FRONTEND=noninteractive", *command, "--local", "--out", "json", "--log-level", "quiet",
           *args]
    log.info("%s with %s", what, how)
    # salt-call's JSON says what failed whatever its exit status; past the timeout it is killed
    p = completed(*cmd, timeout=timeout, what=what)
    try:
        return json.loads(p.stdout)["local"], how
    except (ValueError, KeyError, TypeError):
        raise ChrootFailed(f"{what} ({how}) failed (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()[-2000:]}") from None


def apply(root, sls, files, pillar=None, cachedir=CACHEDIR, timeout=1800):
    """state.apply of ``sls`` inside the prepared chroot at ``root``, with ``files``
    ({path in the salt tree: path on this machine}) as its file_roots and ``pillar`` as its
    pillar; salt-thin, when the image has no salt, is made in ``cachedir`` on this machine.
    Returns {"states", "changed", "salt", "services"}; raises ChrootFailed listing failed
    states."""
    _write_tree(root, files, pillar)
    what = f"state.apply {','.join(sls)} in the chroot"
    ret, how = _run_salt(root, ["state.apply", ",".join(sls)], what, cachedir, timeout)
    return {**states_outcome(ret, what, ChrootFailed), "salt": how, "services": services(root)}


def services(root):
    """What the service states asked in the chroot and what the bake did instead: the
    services they asked to run (start, restart, reload) now enabled at boot, none of them
    started, and those they asked to stop now disabled at boot (the record of
    _modules/chroot_service.py)."""
    try:
        record = json.loads(Path(root, SERVICES.lstrip("/")).read_text())
    except FileNotFoundError:
        record = {}
    asked = {unit: entry["boot"] for unit, entry in record.items() if set(entry["asked"]) & set(RUN_OR_STOP)}
    return {"enabled_instead_of_started": sorted(u for u, boot in asked.items() if boot == "enabled"),
            "disabled_instead_of_stopped": sorted(u for u, boot in asked.items() if boot != "enabled")}


def call(root, fun, *args, cachedir=CACHEDIR, timeout=600):
    """Another salt function in the chroot, after ``apply`` (which wrote salt's config)."""
    return _run_salt(root, [fun, *args], f"{fun} in the chroot", cachedir, timeout)[0]
