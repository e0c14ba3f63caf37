"""TEST-ONLY: the qemu virtual machines behind the local cloud's real-guest instances.

nova_qemu.py (beside this file) runs an instance whose flavor asks for it as a VM through the
helpers here; they need only the standard library and qemu, so that a test can use them
too. One VM per instance directory:

- the machine is i440fx (``pc``) with ACPI, so that PCI hot-plug and a clean ACPI shutdown
  work as on a KVM cloud; KVM where /dev/kvm really runs a guest, else TCG (``accel``
  probes once per machine and remembers the answer);
- every disk is a virtio-blk device with its own serial (a volume's is its id, of which the
  guest's udev shows the first 20 characters in /dev/disk/by-id/virtio-...); the root disk
  boots (GRUB in its MBR, or whatever the image has); the config drive is nova's ISO 9660
  image on an IDE cdrom, as nova's libvirt driver attaches it on x86;
- discard is ignored unless asked for, as on a nova whose ``hw_disk_discard`` is unset: the
  guest's fstrim succeeds and frees nothing;
- one NIC on qemu's user-mode network: the guest is 10.0.2.15 (DHCP), the host's loopback
  services are at 10.0.2.2, and nothing listens on the host but qemu's own sockets (the QMP
  socket in the instance directory, and a forward of the guest's SSH port on 127.0.0.1);
- the serial console is appended to ``console.log`` across boots; the QMP socket is
  ``qmp.sock``; the qemu process is known by ``qemu.pid`` (and its command line, which
  names the instance directory, so that a reused pid is not taken for it).
"""
import json
import os
import signal
import socket
import subprocess
import time

QEMU = "qemu-system-x86_64"
# a kernel that runs prints these within seconds under KVM; a /dev/kvm that cannot run
# ordinary guest kernels (a paravirtual variant) prints nothing, or aborts qemu at once
PROBE_SECONDS = 30
# the CPU a TCG guest gets: a baseline model, whose code TCG runs about 15% faster than that of
# "max" (measured: boot to cloud-init done 91 s against 105 s, salt-call 15 s against 18 s),
# whose AVX and the like it must emulate
TCG_CPU = "qemu64"
PROBE_MARKERS = (b"Run /", b"Freeing unused kernel", b"systemd[1]")
START_SECONDS = 30
KILL_GRACE_SECONDS = 5
UNPLUG_SECONDS = 60
CONSOLE = "console.log"
QMP_SOCKET = "qmp.sock"
PIDFILE = "qemu.pid"
QEMU_LOG = "qemu.log"
DISCARD = ("ignore", "unmap")


class VMError(Exception):
    """qemu failed or refused; the message carries what it said."""


# ------------------------------------------------------------------------------ accelerator
def _qemu_version():
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def _kvm_openable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"/dev/kvm cannot be opened: {e.strerror}"
    os.close(fd)
    return True, ""


def accel(probe_disk, cache_file, workdir, log=lambda msg: None):
    """("kvm" or "tcg", why): KVM if /dev/kvm boots the kernel of ``probe_disk`` (a bootable
    disk image, opened read-only) to userspace within PROBE_SECONDS, else TCG. The answer is
    kept in ``cache_file`` for this qemu and this host kernel."""
    key = {"qemu": _qemu_version(), "kernel": os.uname().release}
    try:
        with open(cache_file) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["accel"], cached["why"]
    except (OSError, ValueError, KeyError):
        pass
    ok, why = _kvm_openable()
    if ok:
        ok, why = _probe_kvm(probe_disk, workdir)
    result = ("kvm", why) if ok else ("tcg", why)
    log(f"accelerator: {result[0]} ({result[1]})")
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    with open(cache_file + ".tmp", "w") as f:
        json.dump({"key": key, "accel": result[0], "why": result[1]}, f)
    os.replace(cache_file + ".tmp", cache_file)
    return result


def _probe_kvm(disk, workdir):
    console = os.path.join(workdir, "kvm-probe.log")
    fmt = image_format(disk)
    cmd = [QEMU, "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "512", "-smp", "1", "-nodefaults",
           "-no-user-config", "-display", "none", "-snapshot", "-no-reboot",
           "-drive", f"file={disk},format={fmt},if=virtio,readonly=on", "-serial", f"file:{console}"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - started < PROBE_SECONDS:
            if proc.poll() is not None:
                said = proc.stdout.read().decode(errors="replace").strip().splitlines()
                return False, f"qemu -accel kvm exited {proc.returncode}: {said[-1] if said else 'no output'}"
            if os.path.exists(console):
                with open(console, "rb") as f:
                    if any(m in f.read() for m in PROBE_MARKERS):
                        return True, f"a guest kernel reached userspace under KVM in " \
                                     f"{time.monotonic() - started:.1f}s"
            time.sleep(0.5)
        return False, f"a guest kernel did not reach userspace under KVM within {PROBE_SECONDS}s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for path in (console,):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def image_format(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True)
    if out.returncode:
        raise VMError(f"qemu-img info {path}: {out.stderr.strip()}")
    return json.loads(out.stdout)["format"]


# ------------------------------------------------------------------------------ QMP
class QMP:
    """A QMP session on the VM's socket: commands, and the events that came meanwhile."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise VMError(f"QMP socket {path}: {e}") from None
        self.file = self.sock.makefile("rwb")
        self.events = []
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise VMError("qemu closed its QMP socket")
        return json.loads(line)

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise VMError(f"QMP {command}: {reply['error'].get('desc')}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name, timeout, match=lambda data: True):
        """The first event ``name`` whose data ``match`` accepts, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name and match(event.get("data", {})):
                    self.events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                self.events.append(self._read())
            except (socket.timeout, TimeoutError):
                return None


# ------------------------------------------------------------------------------ the process
def pid(directory):
    """The pid of the VM's qemu, or None when it does not run."""
    try:
        with open(os.path.join(directory, PIDFILE)) as f:
            found = int(f.read().strip())
        with open(f"/proc/{found}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{found}/stat") as f:
            state = f.read().rsplit(") ", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return found if directory.encode() in cmdline and state != "Z" else None


def running(directory):
    return pid(directory) is not None


def _node(name):
    # QEMU node names and device ids: a letter first, then letters, digits, '-', '_'
    return "d-" + "".join(c if c.isalnum() else "-" for c in name)[:28]


def _blockdev(name, disk):
    fmt = disk.get("format") or image_format(disk["path"])
    discard = disk.get("discard", "ignore")
    return {"node-name": _node(name), "driver": fmt, "read-only": bool(disk.get("read_only")),
            "discard": discard,
            "file": {"driver": "file", "filename": disk["path"], "discard": discard,
                     "read-only": bool(disk.get("read_only")), "aio": "threads"}}


def _device(name, disk, bootindex=None):
    if disk.get("cdrom"):
        dev = {"driver": "ide-cd", "drive": _node(name), "id": f"dev-{_node(name)}"}
    else:
        dev = {"driver": "virtio-blk-pci", "drive": _node(name), "id": f"dev-{_node(name)}"}
        if disk.get("serial"):
            dev["serial"] = disk["serial"]
    if bootindex is not None:
        dev["bootindex"] = bootindex
    return dev


def _opts(d):
    return ",".join(f"{k}={'on' if v is True else 'off' if v is False else v}" for k, v in d.items())


def command(directory, spec):
    """qemu's command line for ``spec``: name, accel, vcpus, ram_mb, mac, ssh_port (or None),
    disks {name: {path, format, serial, read_only, cdrom, discard}}, the root first, and for a
    direct kernel boot kernel, initrd and cmdline."""
    kvm = spec["accel"] == "kvm"
    cmd = [QEMU, "-name", f"guest={spec['name']},debug-threads=on", "-machine", "pc",
           "-accel", "kvm" if kvm else "tcg,thread=multi", "-cpu", "host" if kvm else TCG_CPU,
           "-smp", str(spec["vcpus"]), "-m", str(spec["ram_mb"]),
           "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-rtc", "base=utc",
           "-chardev", f"file,id=console,path={os.path.join(directory, CONSOLE)},append=on",
           "-serial", "chardev:console",
           "-qmp", f"unix:{os.path.join(directory, QMP_SOCKET)},server=on,wait=off",
           "-pidfile", os.path.join(directory, PIDFILE)]
    for index, (name, disk) in enumerate(spec["disks"].items()):
        blockdev = _blockdev(name, disk)
        file_node = blockdev.pop("file")
        cmd += ["-blockdev", _opts({**blockdev, **{f"file.{k}": v for k, v in file_node.items()}})]
        # a direct kernel boot is qemu's boot index 0 itself (its linuxboot option ROM)
        first = index == 0 and not spec.get("kernel")
        cmd += ["-device", _opts(_device(name, disk, bootindex=0 if first else None))]
    if spec.get("kernel"):
        cmd += ["-kernel", spec["kernel"], "-append", spec.get("cmdline") or ""]
        if spec.get("initrd"):
            cmd += ["-initrd", spec["initrd"]]
    netdev = "user,id=net0"
    if spec.get("ssh_port"):
        netdev += f",hostfwd=tcp:127.0.0.1:{spec['ssh_port']}-:22"
    cmd += ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=net0,mac={spec['mac']}"]
    return cmd


def start(directory, spec):
    """Start the VM; returns its pid once qemu answers on its QMP socket."""
    if running(directory):
        return pid(directory)
    for stale in (QMP_SOCKET, PIDFILE):
        try:
            os.unlink(os.path.join(directory, stale))
        except FileNotFoundError:
            pass
    cmd = command(directory, spec)
    with open(os.path.join(directory, QEMU_LOG), "ab") as out:
        out.write(("[%s] %s\n" % (time.strftime("%H:%M:%S"), " ".join(cmd))).encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=directory, start_new_session=True)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VMError(f"qemu exited {proc.returncode} at start: {_tail(directory, QEMU_LOG)}")
        if os.path.exists(os.path.join(directory, QMP_SOCKET)) and running(directory):
            try:
                QMP(os.path.join(directory, QMP_SOCKET)).close()
                return proc.pid
            except VMError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise VMError(f"qemu did not open its QMP socket within {START_SECONDS}s: {_tail(directory, QEMU_LOG)}")


def _tail(directory, name, size=2000):
    try:
        with open(os.path.join(directory, name), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def qmp(directory, timeout=30):
    return QMP(os.path.join(directory, QMP_SOCKET), timeout)


def _wait_gone(directory, timeout):
    deadline = time.monotonic() + timeout
    while running(directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def shutdown(directory, timeout=60, retry_interval=10):
    """An ACPI power-off (the power button, sent again every ``retry_interval`` seconds),
    and once ``timeout`` seconds pass, a hard stop. True if the guest shut itself down."""
    if not running(directory):
        return True
    deadline = time.monotonic() + timeout
    while timeout > 0 and time.monotonic() < deadline:
        try:
            with qmp(directory) as q:
                q.execute("system_powerdown")
        except VMError:
            break  # gone meanwhile, or not answering: the hard stop decides
        if _wait_gone(directory, min(max(retry_interval, 1), max(deadline - time.monotonic(), 0))):
            return True
    kill(directory)
    return False


def kill(directory):
    """Stop qemu now (SIGTERM, then SIGKILL), as pulling the plug."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        found = pid(directory)
        if found is None:
            return
        try:
            os.kill(found, sig)
        except ProcessLookupError:
            return
        if _wait_gone(directory, KILL_GRACE_SECONDS):
            return
    raise VMError(f"qemu of {directory} survives SIGKILL")


# ------------------------------------------------------------------------------ hot-plug
def plug(directory, name, disk):
    """Hot-plug ``disk`` as a virtio disk (PCI hot-plug: the guest sees a new /dev/vdX)."""
    blockdev = _blockdev(name, disk)
    with qmp(directory) as q:
        q.execute("blockdev-add", **blockdev)
        try:
            q.execute("device_add", **_device(name, disk))
        except VMError:
            q.execute("blockdev-del", **{"node-name": blockdev["node-name"]})
            raise


def unplug(directory, name, timeout=UNPLUG_SECONDS):
    """Ask the guest to release the disk (ACPI eject), wait until qemu says it did, then drop
    its backend. VMError if the guest does not let go in time."""
    device = f"dev-{_node(name)}"
    with qmp(directory, timeout=timeout) as q:
        q.execute("device_del", id=device)
        if q.wait_event("DEVICE_DELETED", timeout, lambda data: data.get("device") == device) is None:
            raise VMError(f"the guest did not release {device} within {timeout}s")
        q.execute("blockdev-del", **{"node-name": _node(name)})


def pause(directory):
    """Stop the vCPUs; qemu drains and flushes every disk first, so the files are consistent."""
    with qmp(directory) as q:
        q.execute("stop")


def resume(directory):
    with qmp(directory) as q:
        q.execute("cont")


def free_port():
    """A free TCP port on the host's loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
