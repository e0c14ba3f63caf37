"""An image booted under qemu on this machine, as the local provider's validate step boots
its first output (pipeline/local/validate.py): a real guest, cloud-init fed by a NoCloud
seed, the flavour's test run in it, and the result read on its serial console.

- the image is never written to: the guest's disk is a qcow2 overlay backed by it; an AMI
  triplet boots its kernel and initrd directly (``-kernel``, ``-initrd``, ``-append`` with
  its command line), its root filesystem the overlay's virtio disk;
- the seed is an ISO 9660 image labelled ``cidata`` (genisoimage) on an IDE cdrom, as
  nova's config drive: ``meta-data`` with a fresh instance-id, ``user-data`` whose runcmd
  starts a script (``script``) that waits for cloud-init to be done, runs the test, prints
  what it found after a marker of this boot on the serial console, and powers off;
- KVM where /dev/kvm really runs a guest, else TCG with a baseline CPU (``accel``: a /dev/kvm
  can exist and open, yet hang every guest kernel; a short boot tells, and the answer is kept
  for this boot of the host);
- one NIC on qemu's user-mode network with ``restrict=on``: the guest gets its DHCP lease
  from qemu and reaches nothing, neither the host nor beyond; nothing listens on the host.
"""
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from .command import run
from .errors import AmiError, InvalidArgument

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
ISO_TOOLS = ("genisoimage", "mkisofs")
# what boots of each output: its format as a disk (an AMI triplet's is its root filesystem)
FORMATS = {"qcow2": "qcow2", "qcow2-zstd": "qcow2", "raw": "raw", "ami": "raw"}
RAM_MB = 1024
# a baseline model, whose code TCG runs faster than that of "max", whose AVX and the like it emulates
TCG_CPU = "qemu64"
# a guest kernel that runs prints one of these within seconds under KVM; a /dev/kvm that
# cannot run guest kernels prints nothing, or qemu exits at once
PROBE_SECONDS = 30
PROBE_MARKERS = (b"Run /", b"Freeing unused kernel", b"systemd[1]")
# the probe's answer, for this boot of the host and this qemu
ACCEL_CACHE = "/var/cache/salt-ami/accel.json"
KILL_SECONDS = 5
# once the guest said its result: how long it may take to power itself off before it is stopped
POWEROFF_SECONDS = 10
POLL_SECONDS = 0.5
TAIL_LINES = 25
# what the guest says of its test's output: its last lines
TEST_OUTPUT_LINES = 100
# in the guest: where the seed's files go, and its serial console
GUEST_DIR = "/run/salt-ami-validate"
GUEST_CONSOLE = "/dev/ttyS0"
# the terminal's control sequences systemd and getty write: CSI (colours, erasing), charsets, ESC M
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[()][A-Za-z0-9]|[@-Z\\-_])")


class GuestFailed(AmiError):
    """The guest did not boot, did not say its result in time, or said a bad one."""


# ------------------------------------------------------------------------------ what boots
def bootable(kinds, files, command_lines):
    """(kind, machine) of the first of ``kinds`` (the flavour's outputs, in order) that can
    boot, made from the build's output ``files`` ({kind: {part: path}}) and the triplet's
    kernel ``command_lines``: machine is {disk, format} and for a triplet kernel, initrd and
    append. None when none can."""
    for kind in kinds:
        parts = files.get(kind) or {}
        if kind == "ami" and {"kernel", "ramdisk", "root"} <= set(parts) and command_lines.get(kind):
            return kind, {"disk": parts["root"], "format": FORMATS[kind], "kernel": parts["kernel"],
                          "initrd": parts["ramdisk"], "append": command_lines[kind]}
        if kind in FORMATS and kind != "ami" and parts.get("image"):
            return kind, {"disk": parts["image"], "format": FORMATS[kind]}
    return None


# ------------------------------------------------------------------------------ the seed
def new_marker():
    """What starts the lines the guest says its result with: unique to one boot."""
    return f"salt-ami-validate-{secrets.token_hex(6)}"


def script(marker):
    """The guest's side: once cloud-init is done, its long status and that command's exit
    code, then the test's output (its last lines) and exit code when there is a test, each
    after the marker, on the serial console; then the guest powers off. What it says is
    written once it is all known, to consoles opened anew (a getty that starts meanwhile
    hangs up the files open on its tty), to ttyS0 and to /dev/console (which a getty's hangup
    leaves alone; the same console when the kernel's last console= is ttyS0)."""
    return f"""#!/bin/sh
# salt-ami: the validation of this image, started by cloud-init's runcmd
m={marker}
d={GUEST_DIR}
export HOME=/root
cloud-init status --wait --long >$d/status 2>&1
ci=$?
if [ -e $d/test ]; then
  (cd /root 2>/dev/null || cd /; exec /bin/sh $d/test) </dev/null >$d/output 2>&1
  rc=$?
fi
say() {{
  echo "$m cloud-init-status"
  cat $d/status
  echo "$m cloud-init $ci"
  if [ -e $d/test ]; then
    echo "$m test-output"
    tail -n {TEST_OUTPUT_LINES} $d/output
    echo "$m test $rc"
  fi
  echo "$m end"
}}
say >{GUEST_CONSOLE} 2>&1
say >/dev/console 2>&1
sync
poweroff
"""


class _Readable(yaml.SafeDumper):
    """YAML whose multi-line strings are literal blocks: a seed a person can read."""


_Readable.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def user_data(marker, cmd=None):
    """The seed's user-data: the script (and the test, ``cmd``, when there is one) written to
    GUEST_DIR, and runcmd starting the script outside cloud-init (it waits for cloud-init to
    be done, and runcmd is part of what cloud-init does)."""
    files = [{"path": f"{GUEST_DIR}/run", "permissions": "0700", "content": script(marker)}]
    if cmd:
        files.append({"path": f"{GUEST_DIR}/test", "permissions": "0700", "content": cmd})
    start = (f"systemd-run --quiet --no-block --unit=salt-ami-validate /bin/sh {GUEST_DIR}/run "
             f"|| (setsid /bin/sh {GUEST_DIR}/run </dev/null >/dev/null 2>&1 &)")
    return "#cloud-config\n" + yaml.dump({"write_files": files, "runcmd": [["sh", "-c", start]]}, Dumper=_Readable,
                                         sort_keys=False, default_flow_style=False)


def meta_data(instance_id, hostname="salt-ami-validate"):
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def iso_tool():
    """The program that makes the seed, once qemu and it are found on this machine."""
    tool = next((t for t in ISO_TOOLS if shutil.which(t)), None)
    missing = [what for what, found in ((f"{QEMU} (apt-get install qemu-system-x86)", shutil.which(QEMU)),
                                        ("genisoimage (apt-get install genisoimage)", tool)) if not found]
    if missing:
        raise InvalidArgument(f"validating an image here boots it under qemu and needs {' and '.join(missing)} "
                              "(allowed: validate: false)")
    return tool


def seed_iso(directory, user, meta):
    """The NoCloud seed: an ISO 9660 image labelled cidata holding user-data and meta-data."""
    tool = iso_tool()
    seed = Path(directory, "seed")
    seed.mkdir()
    (seed / "user-data").write_text(user)
    (seed / "meta-data").write_text(meta)
    target = Path(directory, "seed.iso")
    run(tool, "-quiet", "-output", target, "-volid", "cidata", "-joliet", "-rock",
        seed / "user-data", seed / "meta-data")
    return target


def overlay(directory, machine):
    """A qcow2 file backed by the machine's disk: what the guest writes goes there."""
    target = Path(directory, "overlay.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(machine["disk"]),
        "-F", machine["format"], target)
    return target


# ------------------------------------------------------------------------------ qemu's command line
def _escape(path):
    """A path as a value of qemu's comma-separated options."""
    return str(path).replace(",", ",,")


def command(machine, accel, console, root=None, seed=None, pidfile=None, vcpus=None):
    """qemu's command line for ``machine`` (``bootable``) under ``accel`` (kvm or tcg), its
    serial console appended to the file ``console``. ``root`` is the disk the guest boots
    (the overlay; by default the machine's disk, opened read-only, its writes thrown away),
    ``seed`` the NoCloud ISO."""
    kvm = accel == "kvm"
    vcpus = vcpus or min(2, os.cpu_count() or 1)
    cmd = [QEMU, "-machine", "pc", "-accel", "kvm" if kvm else "tcg,thread=multi",
           "-cpu", "host" if kvm else TCG_CPU, "-smp", str(vcpus), "-m", str(RAM_MB),
           "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-rtc", "base=utc",
           "-no-reboot", "-chardev", f"file,id=console,path={_escape(console)},append=on",
           "-serial", "chardev:console"]
    if pidfile:
        cmd += ["-pidfile", str(pidfile)]
    if root is None:
        drive = f"file={_escape(machine['disk'])},format={machine['format']},readonly=on"
        cmd.append("-snapshot")
    else:
        drive = f"file={_escape(root)},format=qcow2"
    # a direct kernel boot is qemu's boot index 0 itself
    cmd += ["-drive", f"{drive},if=none,id=root",
            "-device", "virtio-blk-pci,drive=root" + ("" if machine.get("kernel") else ",bootindex=0")]
    if seed:
        cmd += ["-drive", f"file={_escape(seed)},format=raw,if=none,id=seed,media=cdrom,readonly=on",
                "-device", "ide-cd,drive=seed"]
    cmd += ["-netdev", "user,id=net0,restrict=on", "-device", "virtio-net-pci,netdev=net0"]
    if machine.get("kernel"):
        cmd += ["-kernel", str(machine["kernel"]), "-initrd", str(machine["initrd"]),
                "-append", machine["append"]]
    return cmd


# ------------------------------------------------------------------------------ the console
def clean(text):
    """Console text as a person reads it: no colour codes, no carriage returns."""
    return ANSI.sub("", text).replace("\r", "")


def tail(text, lines=TAIL_LINES, until=None):
    """The last non-blank ``lines`` of console ``text``, up to the first line that holds
    ``until`` (what the guest said last: what comes after is its shutdown)."""
    kept = [line for line in clean(text).splitlines() if line.strip()]
    if until is not None:
        ends = [i for i, line in enumerate(kept) if until in line]
        kept = kept[:ends[0] + 1] if ends else kept
    return "\n".join(kept[-lines:])


def _nothing_said():
    return {"end": False, "cloud_init": None, "cloud_init_exit": None, "cloud_init_long": "",
            "test": None, "test_output": ""}


def result(text, marker):
    """What the guest said after ``marker`` on its console ``text``: {"end": bool, "cloud_init":
    its status (done, error, ...) or None, "cloud_init_exit", "cloud_init_long": the long
    status, "test": the test's exit code or None (no test, or not run yet), "test_output"}.
    The guest says it twice when its two consoles are one: the first whole saying counts."""
    said = re.compile(rf"{re.escape(marker)} (cloud-init-status|cloud-init|test-output|test|end)(?: (\d+))?\s*$")
    found, section = _nothing_said(), None
    for line in clean(text).splitlines():
        m = said.search(line)
        if m is None:
            if section == "cloud_init_long":
                status = re.match(r"\.*status: (\S+)", line.strip())
                if status:
                    found["cloud_init"] = status.group(1)
                line = line.lstrip(".")
            if section:
                found[section] += line + "\n"
            continue
        word, code = m.group(1), m.group(2)
        if word == "cloud-init-status":
            found = _nothing_said()
        section = {"cloud-init-status": "cloud_init_long", "test-output": "test_output"}.get(word)
        if word in ("cloud-init", "test") and code is not None:
            found["cloud_init_exit" if word == "cloud-init" else "test"] = int(code)
        elif word == "end":
            found["end"] = True
            break
    found["cloud_init_long"] = found["cloud_init_long"].strip()
    found["test_output"] = found["test_output"].strip()
    return found


# ------------------------------------------------------------------------------ the accelerator
def _boot_id():
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _qemu_version():
    try:
        out = run(QEMU, "--version", check=False)
    except OSError:
        return "none"
    return out.splitlines()[0] if out else "unknown"


def accel(machine, workdir, cache=ACCEL_CACHE, probe=None, probing=lambda: None, device="/dev/kvm"):
    """("kvm" or "tcg", why, cached): KVM if ``device`` opens and boots the machine's kernel to
    userspace within PROBE_SECONDS, else TCG. The answer is kept in ``cache`` for this boot of
    the host and this qemu; ``probe(machine, workdir)`` is ``probe_kvm`` unless given, and
    ``probing()`` is called before it runs."""
    key = {"boot": _boot_id(), "qemu": _qemu_version()}
    try:
        kept = json.loads(Path(cache).read_text())
        if kept.get("key") == key:
            return kept["accel"], kept["why"], True
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        ok, why = False, f"{device} cannot be opened: {e.strerror}"
    else:
        probing()
        ok, why = (probe or probe_kvm)(machine, workdir)
    found = "kvm" if ok else "tcg"
    log.info("accelerator for guests: %s (%s)", found, why)
    try:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{cache}.{os.getpid()}.tmp").write_text(json.dumps({"key": key, "accel": found, "why": why}))
        os.replace(f"{cache}.{os.getpid()}.tmp", cache)
    except OSError as e:  # asked again next time
        log.warning("cannot keep the accelerator's probe in %s: %s", cache, e)
    return found, why, False


def probe_kvm(machine, workdir):
    """(whether the machine's kernel reached userspace under KVM within PROBE_SECONDS, why)."""
    console = Path(workdir, "kvm-probe.log")
    proc = subprocess.Popen(command(machine, "kvm", console, vcpus=1), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while time.monotonic() - started < PROBE_SECONDS:
            if proc.poll() is not None:
                said = proc.stdout.read().decode(errors="replace").strip().splitlines()
                return False, f"qemu -accel kvm exited {proc.returncode}: {said[-1] if said else 'no output'}"
            if console.exists() and any(m in console.read_bytes() for m in PROBE_MARKERS):
                return True, f"a guest kernel reached userspace under KVM in {time.monotonic() - started:.1f}s"
            time.sleep(POLL_SECONDS)
        return False, f"a guest kernel did not reach userspace under KVM within {PROBE_SECONDS}s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        console.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ the process
def process_id(pid):
    """How a process is recorded: "<pid>:<start time in clock ticks since boot>", so that a
    reused pid is not taken for it."""
    return f"{pid}:{_start_time(pid)}"


def _start_time(pid):
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _kill(pid):
    """SIGKILL to ``pid``, and a wait for it to be gone (reaped, if it is our child)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_SECONDS
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # not ours: gone once /proc says so
            if _start_time(pid) is None:
                return
        time.sleep(0.1)


def stop(recorded):
    """Stop the qemu that ``process_id`` recorded, if that process still runs."""
    pid, _, start = recorded.partition(":")
    if start and str(_start_time(int(pid))) == start:
        _kill(int(pid))


def stop_in(directory, pidfile="qemu.pid"):
    """Stop the qemu whose pidfile is in ``directory``, if its command line names the directory."""
    try:
        pid = int(Path(directory, pidfile).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(directory).encode() in cmdline:
        _kill(pid)


def start(cmd, log_file):
    """Start qemu in a session of its own (a signal to the bake is for the bake: it stops the
    guest itself); its output goes to ``log_file``."""
    with open(log_file, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait(proc, console, marker, timeout, poll=POLL_SECONDS):
    """Wait up to ``timeout`` seconds for the guest's result (``result``), until it says its
    end or qemu exits; then up to POWEROFF_SECONDS for it to power off. Returns the result with
    ``exited`` (qemu's exit code, or None when it still ran) and ``timed_out``."""
    deadline = time.monotonic() + timeout
    found = result("", marker)
    while True:
        exited = proc.poll()
        text = Path(console).read_text(errors="replace") if Path(console).exists() else ""
        found = result(text, marker)
        if found["end"] or exited is not None or time.monotonic() > deadline:
            break
        time.sleep(poll)
    if found["end"] and exited is None:
        try:
            exited = proc.wait(POWEROFF_SECONDS)
        except subprocess.TimeoutExpired:
            exited = None
    return {**found, "exited": exited, "timed_out": not found["end"] and exited is None}
