"""The local provider's validate step (saltami/pipeline/local/validate.py) and what it boots with
(saltami/qemu.py): which output boots, the NoCloud seed, qemu's command line for a disk and for
an AMI triplet, what the guest says on its console, the accelerator's probe and its cache; and
the step itself over a fake qemu (a script that writes a console as the guest would), its
record, its errors and what it leaves: nothing. No guest boots here
(tests/integration/test_local_validate.py boots real ones)."""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from saltami import pipeline, qemu
from saltami.errors import InvalidArgument
from saltami.pipeline import plans

MARKER = "salt-ami-validate-0123456789ab"
FILES = {"qcow2": {"image": "/out/f.qcow2"}, "qcow2-zstd": {"image": "/out/f-zstd.qcow2"},
         "raw": {"image": "/out/f.raw"},
         "ami": {"kernel": "/out/f.vmlinuz", "ramdisk": "/out/f.initrd", "root": "/out/f.root.img"}}
LINES = {"ami": "root=LABEL=rootfs ro console=tty0 console=ttyS0"}


# ------------------------------------------------------------------------------ what boots
@pytest.mark.parametrize("kinds, kind, disk, fmt", [
    (["qcow2-zstd", "ami"], "qcow2-zstd", "/out/f-zstd.qcow2", "qcow2"),
    (["raw", "qcow2"], "raw", "/out/f.raw", "raw"),
    (["ami", "qcow2"], "ami", "/out/f.root.img", "raw"),
])
def test_the_first_output_in_the_flavours_order_boots(kinds, kind, disk, fmt):
    chosen, machine = qemu.bootable(kinds, FILES, LINES)
    assert (chosen, machine["disk"], machine["format"]) == (kind, disk, fmt)
    assert ("kernel" in machine) == (kind == "ami")


def test_a_triplet_boots_its_kernel_and_initrd_with_its_command_line():
    kind, machine = qemu.bootable(["ami"], FILES, LINES)
    assert machine == {"disk": "/out/f.root.img", "format": "raw", "kernel": "/out/f.vmlinuz",
                       "initrd": "/out/f.initrd", "append": LINES["ami"]}
    # without its command line (a manifest of an older build), the next output boots
    assert qemu.bootable(["ami", "raw"], FILES, {})[0] == "raw"
    assert qemu.bootable(["ami"], FILES, {}) is None


# ------------------------------------------------------------------------------ the seed
def test_the_user_data_starts_the_script_that_says_the_result_on_the_serial_console():
    data = qemu.user_data(MARKER, "set -e\ntest -e /etc/never\n")
    assert data.startswith("#cloud-config\n")
    config = yaml.safe_load(data)
    files = {f["path"]: f for f in config["write_files"]}
    assert files[f"{qemu.GUEST_DIR}/test"]["content"] == "set -e\ntest -e /etc/never\n"
    script = files[f"{qemu.GUEST_DIR}/run"]["content"]
    assert f"m={MARKER}\n" in script and "cloud-init status --wait --long" in script
    assert 'echo "$m test $rc"' in script and "cloud-init status --wait --long >$d/status" in script
    # said once all is known, on both consoles, each opened anew
    assert f"say >{qemu.GUEST_CONSOLE} 2>&1\nsay >/dev/console 2>&1\n" in script
    assert script.rstrip().endswith("poweroff")
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    # started by runcmd, outside cloud-init (whose end the script waits for)
    [start] = config["runcmd"]
    assert start[:2] == ["sh", "-c"] and "systemd-run --quiet --no-block" in start[2]
    assert f"/bin/sh {qemu.GUEST_DIR}/run" in start[2]


def test_without_a_test_command_the_guest_says_cloud_inits_status_only():
    config = yaml.safe_load(qemu.user_data(MARKER))
    assert [f["path"] for f in config["write_files"]] == [f"{qemu.GUEST_DIR}/run"]


def test_the_seed_is_an_iso_labelled_cidata_with_a_fresh_instance_id(tmp_path):
    meta = qemu.meta_data(f"f-1-{MARKER}")
    assert yaml.safe_load(meta) == {"instance-id": f"f-1-{MARKER}", "local-hostname": "salt-ami-validate"}
    seed = qemu.seed_iso(tmp_path, qemu.user_data(MARKER, "true"), meta)
    info = subprocess.run(["isoinfo", "-d", "-i", str(seed)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in info
    listed = subprocess.run(["isoinfo", "-R", "-f", "-i", str(seed)], capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(listed) == ["/meta-data", "/user-data"]
    read = subprocess.run(["isoinfo", "-R", "-x", "/meta-data", "-i", str(seed)], capture_output=True,
                          text=True, check=True).stdout
    assert read == meta


def test_a_missing_tool_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda tool: None)
    with pytest.raises(InvalidArgument, match=r"needs qemu-system-x86_64 \(apt-get install qemu-system-x86\) "
                                              r"and genisoimage .*validate: false"):
        qemu.iso_tool()


# ------------------------------------------------------------------------------ the command line
def option(cmd, name):
    """The values of each ``name`` option of a command line."""
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == name]


def test_a_disk_boots_from_its_overlay_with_the_seed_under_tcg(tmp_path):
    _, machine = qemu.bootable(["qcow2"], FILES, LINES)
    cmd = qemu.command(machine, "tcg", tmp_path / "console.log", root=tmp_path / "over,lay.qcow2",
                       seed=tmp_path / "seed.iso", pidfile=tmp_path / "qemu.pid", vcpus=2)
    assert cmd[0] == "qemu-system-x86_64"
    assert option(cmd, "-accel") == ["tcg,thread=multi"] and option(cmd, "-cpu") == ["qemu64"]
    assert option(cmd, "-smp") == ["2"] and "-no-reboot" in cmd and "-snapshot" not in cmd
    # the overlay, never the output itself (a comma in a path is doubled for qemu)
    assert option(cmd, "-drive")[0] == f"file={tmp_path}/over,,lay.qcow2,format=qcow2,if=none,id=root"
    assert "/out/f.qcow2" not in " ".join(cmd)
    assert option(cmd, "-device")[:2] == ["virtio-blk-pci,drive=root,bootindex=0", "ide-cd,drive=seed"]
    assert option(cmd, "-drive")[1] == f"file={tmp_path}/seed.iso,format=raw,if=none,id=seed,media=cdrom,readonly=on"
    # the guest reaches nothing, not even the host
    assert option(cmd, "-netdev") == ["user,id=net0,restrict=on"]
    assert option(cmd, "-chardev") == [f"file,id=console,path={tmp_path}/console.log,append=on"]
    assert option(cmd, "-pidfile") == [f"{tmp_path}/qemu.pid"]
    assert "-kernel" not in cmd


def test_a_triplet_boots_directly_under_kvm(tmp_path):
    _, machine = qemu.bootable(["ami"], FILES, LINES)
    cmd = qemu.command(machine, "kvm", tmp_path / "console.log", root=tmp_path / "overlay.qcow2",
                       seed=tmp_path / "seed.iso")
    assert option(cmd, "-accel") == ["kvm"] and option(cmd, "-cpu") == ["host"]
    assert option(cmd, "-kernel") == ["/out/f.vmlinuz"] and option(cmd, "-initrd") == ["/out/f.initrd"]
    assert option(cmd, "-append") == [LINES["ami"]]
    # qemu's direct kernel boot is boot index 0 itself
    assert option(cmd, "-device")[0] == "virtio-blk-pci,drive=root"


def test_the_probe_opens_the_output_read_only_and_throws_its_writes_away(tmp_path):
    _, machine = qemu.bootable(["raw"], FILES, LINES)
    cmd = qemu.command(machine, "kvm", tmp_path / "probe.log", vcpus=1)
    assert "-snapshot" in cmd and option(cmd, "-drive") == ["file=/out/f.raw,format=raw,readonly=on,if=none,id=root"]
    assert "ide-cd,drive=seed" not in cmd


# ------------------------------------------------------------------------------ the console
def console(*said, marker=MARKER):
    """A console: the kernel's and systemd's noise, then what the guest's script says."""
    lines = ["[    0.000000] Linux version 6.1.0-28-amd64", "\x1b[0;32m  OK  \x1b[0m] Reached target Multi-User.",
             "debian login: "]
    for item in said:
        lines.append(f"{marker} {item}" if item.split()[0] in ("cloud-init-status", "cloud-init", "test-output",
                                                               "test", "end") else item)
    return "\r\n".join(lines) + "\r\n"


DONE = ["cloud-init-status", "......", "status: done", "boot_status_code: enabled-by-generator",
        "detail:", "DataSourceNoCloud [seed=/dev/sr0][dsmode=net]", "cloud-init 0"]


def test_the_guest_said_cloud_init_done_and_the_tests_exit_code():
    found = qemu.result(console(*DONE, "test-output", "test: '/etc/never': No such file", "test 1", "end"), MARKER)
    assert found["end"] and found["cloud_init"] == "done" and found["cloud_init_exit"] == 0
    assert found["cloud_init_long"].splitlines()[0] == "status: done"
    assert found["test"] == 1 and found["test_output"] == "test: '/etc/never': No such file"


def test_another_boots_marker_or_an_unfinished_console_says_nothing():
    assert qemu.result(console(*DONE, "end", marker="salt-ami-validate-other"), MARKER) == qemu.result("", MARKER)
    found = qemu.result(console(*DONE[:3]), MARKER)
    assert not found["end"] and found["cloud_init"] == "done" and found["cloud_init_exit"] is None
    assert found["test"] is None


def test_the_first_whole_saying_counts_when_the_guest_says_it_twice():
    said = [*DONE, "test-output", "fine", "test 0", "end"]
    once = qemu.result(console(*said), MARKER)
    assert once["end"] and once["test"] == 0 and once["test_output"] == "fine"
    # the second console's saying, whole or cut short
    assert qemu.result(console(*said, *said), MARKER) == once
    assert qemu.result(console(*said, *DONE[:2]), MARKER) == once


def test_cloud_init_in_error_is_read():
    found = qemu.result(console("cloud-init-status", "status: error", "errors:",
                                "\t('scripts_user', RuntimeError('runparts: 1 failures'))", "cloud-init 1", "end"),
                        MARKER)
    assert found["cloud_init"] == "error" and found["cloud_init_exit"] == 1
    assert "scripts_user" in found["cloud_init_long"]
    assert found["test"] is None and found["end"]


def test_the_console_tail_has_no_colour_codes_nor_blank_lines():
    assert qemu.tail("a\r\n\x1b[0;32m  OK  \x1b[0m] b\x1bM\r\n\r\r\nc\r\n", lines=2) == "  OK  ] b\nc"


def test_the_console_tail_ends_where_the_guest_said_its_result():
    text = console(*DONE, "test-output", "no such file", "test 1", "end", "[  OK  ] Stopped target Multi-User.")
    assert qemu.tail(text, lines=3, until=f"{MARKER} end").splitlines() == [
        "no such file", f"{MARKER} test 1", f"{MARKER} end"]


# ------------------------------------------------------------------------------ the accelerator
@pytest.fixture
def probed(monkeypatch):
    calls = []
    monkeypatch.setattr(qemu, "_boot_id", lambda: "boot-1")
    monkeypatch.setattr(qemu, "_qemu_version", lambda: "QEMU emulator version 7.2.0")

    def probe(machine, workdir):
        calls.append(machine)
        return False, "a guest kernel did not reach userspace under KVM within 30s"

    return calls, probe


def test_a_kvm_that_hangs_guests_means_tcg_and_is_probed_once_per_boot(tmp_path, monkeypatch, probed):
    calls, probe = probed
    kvm = tmp_path / "kvm"
    kvm.write_text("")
    cache, said = tmp_path / "cache" / "accel.json", []
    found = qemu.accel({"disk": "d"}, tmp_path, cache=cache, probe=probe, device=kvm,
                       probing=lambda: said.append("probing"))
    assert found == ("tcg", "a guest kernel did not reach userspace under KVM within 30s", False)
    assert calls == [{"disk": "d"}] and said == ["probing"]
    assert qemu.accel({"disk": "d"}, tmp_path, cache=cache, probe=probe, device=kvm)[2] is True
    assert len(calls) == 1 and json.loads(cache.read_text())["key"]["boot"] == "boot-1"
    # the next boot of the host probes again
    monkeypatch.setattr(qemu, "_boot_id", lambda: "boot-2")
    qemu.accel({"disk": "d"}, tmp_path, cache=cache, probe=probe, device=kvm)
    assert len(calls) == 2


def test_no_kvm_device_means_tcg_without_a_probe(tmp_path, probed):
    calls, probe = probed
    accel, why, _ = qemu.accel({}, tmp_path, cache=tmp_path / "accel.json", probe=probe, device=tmp_path / "none")
    assert accel == "tcg" and why.startswith(f"{tmp_path}/none cannot be opened") and calls == []


def test_a_cache_that_cannot_be_written_does_not_fail_the_build(tmp_path, probed):
    _, probe = probed
    (tmp_path / "file").write_text("")
    assert qemu.accel({}, tmp_path, cache=tmp_path / "file" / "accel.json", probe=probe,
                      device=tmp_path / "none")[0] == "tcg"


# ------------------------------------------------------------------------------ the step, over a fake qemu
# what the fake qemu does: writes the console a guest would (its lines after the marker), and
# its pidfile, then exits as a guest that powers off does, or sleeps as one that never ends
FAKE_QEMU = """
import os, sys, time
console, pidfile, behaviour = sys.argv[1:4]
open(pidfile, "w").write(str(os.getpid()))
m = sys.argv[4]
said = {
    "passes": ["cloud-init-status", "status: done", "cloud-init 0", "test-output", "fine", "test 0", "end"],
    "fails": ["cloud-init-status", "status: done", "cloud-init 0", "test-output",
              "test: '/etc/never': No such file", "test 1", "end"],
    "cloud-init-error": ["cloud-init-status", "status: error", "errors:", "  scripts_user failed", "cloud-init 1",
                         "end"],
    "hangs": [], "dies": [],
}[behaviour]
with open(console, "a") as f:
    f.write("[    0.000000] Linux version 6.1.0\\r\\n")
    for line in said:
        known = line.split()[0] in ("cloud-init-status", "cloud-init", "test-output", "test", "end")
        f.write((m + " " + line if known else line) + "\\r\\n")
    if said:  # the shutdown that follows
        f.write("[  OK  ] Stopped target shutdown-noise.\\r\\n")
if behaviour == "hangs":
    time.sleep(600)
if behaviour == "dies":
    print("qemu-system-x86_64: -drive file=x: Could not open 'x'", flush=True)
    sys.exit(1)
"""


@pytest.fixture
def fake(tmp_path, ctx, monkeypatch):
    """A build whose outputs are made, with a flavour that validates and a fake qemu that does
    what ``behaviour`` says."""
    image = tmp_path / "out" / "f.qcow2"
    image.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    script = tmp_path / "fake_qemu.py"
    script.write_text(FAKE_QEMU)
    state = {"behaviour": "passes", "pids": []}
    monkeypatch.setattr(qemu, "new_marker", lambda: MARKER)
    monkeypatch.setattr(qemu, "accel", lambda machine, workdir, probing: ("tcg", "no /dev/kvm", False))
    monkeypatch.setattr(qemu, "POWEROFF_SECONDS", 2)

    def command(machine, accel, console, root=None, seed=None, pidfile=None, vcpus=None):
        # what the step gives qemu: the overlay over the output, and the seed
        assert root.exists() and seed.exists() and str(root).endswith(".validate/overlay.qcow2")
        backing = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(root)],
                                            capture_output=True, text=True, check=True).stdout)
        assert backing["backing-filename"] == str(image)
        return [sys.executable, str(script), str(console), str(pidfile), state["behaviour"], MARKER]

    monkeypatch.setattr(qemu, "command", command)
    start = qemu.start

    def started(cmd, log_file):
        proc = start(cmd, log_file)
        state["pids"].append(proc.pid)
        return proc

    monkeypatch.setattr(qemu, "start", started)
    ctx.spec = {"name": "f", "strategy": "local", "outputs": ["qcow2"], "test": {"cmd": "test -e /etc/never"},
                "timeouts": {"validate": 60}}
    step = plans.step("local.validate")
    build = pipeline.Build.create(ctx.builds_dir, "f", [step])
    build.data["outputs"].update(files={"qcow2": {"image": str(image)}}, command_lines={})
    build.save()
    return {"build": build, "step": step, "state": state, "image": image}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(") ", 1)[1].split()[0] != "Z"


def left(build):
    """What of the step is left: its directory, and the resources it recorded."""
    return (build.path.with_suffix(".validate").exists(), build.made("validation"), build.made("qemu"))


def test_a_guest_whose_test_passes_validates_the_output(ctx, fake):
    build = fake["build"]
    result = pipeline.run_step(build, ctx, fake["step"])
    assert result["output"] == "qcow2" and result["accel"] == "tcg" and result["cloud_init"] == "done"
    assert result["test"] == "exit 0"
    record = build.data["steps"][-1]
    assert {k: record[k] for k in ("name", "status", "output", "accel", "cloud_init")} == {
        "name": "validate", "status": "done", "output": "qcow2", "accel": "tcg", "cloud_init": "done"}
    assert record["seconds"] >= 0
    assert ("validate", "booting qcow2 (f.qcow2) under TCG (no /dev/kvm)") in ctx.statuses()
    assert left(build) == (False, [], []) and not alive(fake["state"]["pids"][0])
    assert subprocess.run(["qemu-img", "check", "-q", str(fake["image"])]).returncode == 0


@pytest.mark.parametrize("behaviour, error", [
    ("fails", "validation of qcow2 (f.qcow2): the test `test -e /etc/never` exited 1\n"),
    ("cloud-init-error", "validation of qcow2 (f.qcow2): cloud-init ended with status error (cloud-init status "
                         "exited 1): status: error"),
    ("dies", "validation of qcow2 (f.qcow2): the guest stopped before it said its result (qemu exited 1)"),
])
def test_a_guest_that_says_a_failure_fails_the_step_with_its_console(ctx, fake, behaviour, error):
    fake["state"]["behaviour"] = behaviour
    build = fake["build"]
    with pytest.raises(pipeline.StepFailed) as e:
        pipeline.run_step(build, ctx, fake["step"])
    assert f"step validate failed: {error}" in str(e.value)
    assert "the console's last lines (TCG, " in str(e.value) and "Linux version 6.1.0" in str(e.value)
    assert "shutdown-noise" not in str(e.value)
    if behaviour == "fails":
        assert "No such file" in str(e.value)
    if behaviour == "cloud-init-error":
        assert "; the test `test -e /etc/never` did not run" in str(e.value)
    if behaviour == "dies":
        assert "qemu said: qemu-system-x86_64: -drive file=x: Could not open 'x'" in str(e.value)
    assert left(build) == (False, [], [])


def test_a_guest_that_never_says_its_result_is_stopped_at_the_timeout(ctx, fake):
    fake["state"]["behaviour"] = "hangs"
    ctx.spec["timeouts"]["validate"] = 2
    build = fake["build"]
    t0 = time.monotonic()
    with pytest.raises(pipeline.StepFailed, match=r"validation of qcow2 \(f.qcow2\): no result from the guest "
                                                  r"within 2.0s \(timeouts.validate\)"):
        pipeline.run_step(build, ctx, fake["step"])
    assert time.monotonic() - t0 < 15
    assert not alive(fake["state"]["pids"][0]) and left(build) == (False, [], [])


def test_the_undo_of_a_killed_validation_stops_its_qemu_and_removes_its_files(ctx, fake, tmp_path):
    """As a bake killed during the boot leaves it: the directory and the qemu recorded, and a
    second qemu the bake started but had no time to record (its pidfile names it)."""
    build = fake["build"]
    directory = build.path.with_suffix(".validate")
    directory.mkdir()
    procs = [qemu.start([sys.executable, str(tmp_path / "fake_qemu.py"), str(directory / "console.log"),
                         str(directory / name), "hangs", MARKER], directory / "qemu.log")
             for name in ("recorded.pid", "qemu.pid")]
    deadline = time.monotonic() + 10
    while not (directory / "qemu.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    build.add("validation", str(directory))
    build.add("qemu", qemu.process_id(procs[0].pid))
    fake["step"].undo(build, ctx)
    assert not [p.pid for p in procs if alive(p.pid)]
    assert left(build) == (False, [], [])


def test_no_output_that_boots_fails_before_anything_is_made(ctx, fake):
    build = fake["build"]
    build.data["outputs"]["files"] = {}
    with pytest.raises(pipeline.StepFailed, match="none of the outputs qcow2 can boot to be validated"):
        pipeline.run_step(build, ctx, fake["step"])
    assert left(build) == (False, [], [])
