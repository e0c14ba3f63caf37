"""Detaching a loop device, over a stand-in of losetup's list: a device that another process
takes as soon as it is free is no failure of the detach (the whole-suite run failed so when
the other test process's build attached the image it mounted on the device just freed); one
still attached to our file after the retries is."""
import json

import pytest

from saltami import disk


class Losetup:
    """losetup's list and detach: ``after_detach`` is what the device is backed by once
    detached (None: free; another path: another process's), ``busy`` how many detaches fail."""

    def __init__(self, device, backing, after_detach, busy=0):
        self.attached = {device: backing}
        self.device, self.after_detach, self.busy, self.detaches = device, after_detach, busy, 0

    def run(self, *cmd, check=True, **_kwargs):
        if cmd[:2] == ("losetup", "--json"):
            return json.dumps({"loopdevices": [{"name": n, "back-file": b} for n, b in self.attached.items()]})
        assert cmd[0] == "partx", cmd
        return ""

    def completed(self, *cmd, **_kwargs):
        assert cmd == ("losetup", "--detach", self.device), cmd
        self.detaches += 1
        if self.detaches <= self.busy:
            return type("P", (), {"returncode": 1})()
        self.attached.pop(self.device)
        if self.after_detach:
            self.attached[self.device] = self.after_detach
        return type("P", (), {"returncode": 0})()


@pytest.fixture
def losetup(monkeypatch):
    def make(*args, **kwargs):
        fake = Losetup(*args, **kwargs)
        monkeypatch.setattr(disk, "run", fake.run)
        monkeypatch.setattr(disk, "completed", fake.completed)
        monkeypatch.setattr(disk.time, "sleep", lambda _s: None)
        return fake
    return make


@pytest.mark.parametrize("after", [None, "/var/lib/other/disk.raw"], ids=["freed", "taken-at-once-by-another"])
def test_a_detached_device_is_detached_whoever_takes_it_next(losetup, after):
    fake = losetup("/dev/loop2", "/tmp/ours.qcow2.raw", after)
    disk.detach_loop("/dev/loop2")
    assert fake.detaches == 1


def test_a_busy_device_is_detached_again_until_it_goes(losetup):
    fake = losetup("/dev/loop2", "/tmp/ours.raw", None, busy=3)
    disk.detach_loop("/dev/loop2")
    assert fake.detaches == 4


def test_a_device_that_stays_ours_fails_naming_it_and_its_file(losetup):
    fake = losetup("/dev/loop2", "/tmp/ours.raw", None, busy=100)
    with pytest.raises(disk.DiskError, match=r"loop device /dev/loop2 is still attached \(to /tmp/ours.raw\)"):
        disk.detach_loop("/dev/loop2")
    assert fake.detaches == 10


def test_a_device_not_attached_is_left_alone(losetup):
    fake = losetup("/dev/loop3", "/tmp/other.raw", None)
    disk.detach_loop("/dev/loop2")
    assert fake.detaches == 0
