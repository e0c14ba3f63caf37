"""Boot the build's first output under qemu here and run the flavour's test in it, before it is
published: the first of the flavour's outputs that boots (qcow2, qcow2-zstd and raw as a disk,
the AMI triplet by its kernel, initrd and command line), never written to (the guest writes
to an overlay), with cloud-init fed by a NoCloud seed (saltami/qemu.py). The step fails unless
cloud-init ends done without errors and the test (``test: {cmd: ...}``) exits 0; ``test.sls``
needs a master and is not applied here.

Its record says which output booted, under which accelerator and what cloud-init ended with.
The guest's files are in ``<builds dir>/<build id>.validate`` and its qemu is recorded before
the boot, so that a cleanup of a killed bake stops it and removes them."""
import shutil
import time
from pathlib import Path

from ... import qemu, report
from ...errors import InvalidArgument

NAME = "validate"
LOG = "qemu.log"


def work_dir(build):
    return build.path.with_suffix(".validate")


def run(build, ctx):
    spec = ctx.spec
    found = qemu.bootable(spec["outputs"], build.data["outputs"]["files"],
                          build.data["outputs"].get("command_lines") or {})
    if found is None:
        raise InvalidArgument(f"none of the outputs {', '.join(spec['outputs'])} can boot to be validated "
                              "(allowed: validate: false)")
    kind, machine = found
    qemu.iso_tool()
    directory = work_dir(build)
    build.add("validation", str(directory))  # before it exists: a kill must still remove it
    directory.mkdir()
    try:
        return _validate(build, ctx, kind, machine, directory)
    finally:
        _remove(build, directory)


def _validate(build, ctx, kind, machine, directory):
    spec, cmd = ctx.spec, ctx.spec["test"].get("cmd")
    what = f"{kind} ({Path(machine['disk']).name})"
    accel, why, cached = qemu.accel(machine, directory, probing=lambda: ctx.event(build, NAME, {
        "status": f"probing KVM (up to {qemu.PROBE_SECONDS}s, once per boot of this machine)"}))
    marker = qemu.new_marker()
    seed = qemu.seed_iso(directory, qemu.user_data(marker, cmd), qemu.meta_data(f"{build.id}-{marker}"))
    console = directory / "console.log"
    cmd_line = qemu.command(machine, accel, console, root=qemu.overlay(directory, machine), seed=seed,
                            pidfile=directory / "qemu.pid")
    timeout = spec["timeouts"]["validate"]
    # why not KVM, the first time it is found
    ctx.event(build, NAME, {"status": f"booting {what} under {accel.upper()}"
                            + (f" ({why})" if accel == "tcg" and not cached else "")})
    t0 = time.monotonic()
    proc = qemu.start(cmd_line, directory / LOG)
    recorded = qemu.process_id(proc.pid)
    build.add("qemu", recorded)
    try:
        said = qemu.wait(proc, console, marker, timeout)
    finally:
        qemu.stop(recorded)
        build.forget("qemu", recorded)
    seconds = round(time.monotonic() - t0, 1)
    problems = _problems(said, cmd, timeout)
    if problems:
        text = console.read_text(errors="replace") if console.exists() else ""
        raise qemu.GuestFailed(f"validation of {what}: {'; '.join(problems)}\n"
                               f"the console's last lines ({accel.upper()}, {report.duration(seconds)}):\n"
                               f"{qemu.tail(text, until=f'{marker} end') or '(nothing)'}"
                               + _qemu_said(directory, said))
    record = next(s for s in reversed(build.data["steps"]) if s["name"] == NAME)
    record.update(output=kind, accel=accel, cloud_init=said["cloud_init"])
    build.save()
    return {"output": kind, "accel": accel, "accel_why": why, "cloud_init": said["cloud_init"],
            "test": None if cmd is None else f"exit {said['test']}", "boot_seconds": seconds}


def _problems(said, cmd, timeout):
    """What is wrong with what the guest said (qemu.wait), as the step's error says it."""
    if said["timed_out"]:
        return [f"no result from the guest within {report.duration(timeout)} (timeouts.validate): did it "
                "boot, and does it run cloud-init, which starts the test from a NoCloud seed?"]
    if not said["end"]:
        return [f"the guest stopped before it said its result (qemu exited {said['exited']})"]
    problems = []
    if said["cloud_init"] != "done" or said["cloud_init_exit"] != 0:
        problems.append(f"cloud-init ended with status {said['cloud_init']} (cloud-init status exited "
                        f"{said['cloud_init_exit']}): {said['cloud_init_long'] or 'no status'}")
    if cmd and said["test"] is None:
        problems.append(f"the test `{report.first_line(cmd)}` did not run: cloud-init did not write it")
    elif cmd and said["test"] != 0:
        problems.append(f"the test `{report.first_line(cmd)}` exited {said['test']}")
    return problems


def _qemu_said(directory, said):
    """What qemu itself wrote, when it exited of its own accord without a result."""
    log = directory / LOG
    if said["end"] or said["exited"] in (None, 0) or not log.exists():
        return ""
    return f"\nqemu said: {qemu.tail(log.read_text(errors='replace'), 5)}"


def _remove(build, directory):
    qemu.stop_in(directory)
    shutil.rmtree(directory, ignore_errors=True)
    build.forget("validation", str(directory))


def undo(build, ctx):
    for recorded in build.made("qemu"):
        qemu.stop(recorded)
        build.forget("qemu", recorded)
    for directory in build.made("validation"):
        _remove(build, Path(directory))
