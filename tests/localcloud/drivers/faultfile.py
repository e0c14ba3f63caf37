"""TEST-ONLY: faults the local cloud's drivers inject when a test asks for them.

A test writes one JSON file per fault in $LOCALCLOUD_HOME/state/faults/ (tests/localcloud/
faults.py does it and removes it again); the drivers call ``find`` each time they act, so a
fault takes effect at once, without restarting a service. The cloud is shared by concurrent
test sessions: a fault names a point in a driver and a regular expression that must match
the resource's name (a server's display name, a volume's name), which carries the asking
test's unique name, so no other test's resources are touched.

A fault file: {"point": "nova.spawn", "match": "<regex>", "action": "...", "message": "..."}
with, per point, these actions:
  nova.spawn     error (the server goes to ERROR), hang (stays BUILD until deleted),
                 no-user-data (ACTIVE, but its user-data never runs), hold (stays BUILD
                 while the fault is in place, then boots as usual; a delete ends it too)
  nova.snapshot  error (nova deletes the image), hang (the image stays queued until deleted)
  nova.attach    error (nova rolls the attach back)
  cinder.create  error, hold (the volume stays creating while the fault is in place, then
                 is made as usual)
  cinder.from_image, cinder.to_image, cinder.connect   error

A hold is how a test catches a create in the act: the API has answered, the backend has not
finished, and the test decides when it goes on (by removing the fault).

Standard library only: the services' venv loads it (cinder through PYTHONPATH, the nova
driver by path).
"""
import glob
import json
import os
import re
import time

DIR = os.path.join(os.environ.get("LOCALCLOUD_HOME", "/var/lib/localcloud"), "state", "faults")
POINTS = {
    "nova.spawn": ("error", "hang", "no-user-data", "hold"),
    "nova.snapshot": ("error", "hang"),
    "nova.attach": ("error",),
    "cinder.create": ("error", "hold"),
    "cinder.from_image": ("error",),
    "cinder.to_image": ("error",),
    "cinder.connect": ("error",),
}
HANG_POLL_SECONDS = 1
HANG_MAX_SECONDS = 3600


class InjectedFault(Exception):
    """What a driver raises for an ``error`` fault; the message says it was injected."""


def find(point, *names):
    """The fault asked for at ``point`` for a resource with one of ``names``, or None."""
    for path in sorted(glob.glob(os.path.join(DIR, "*.json"))):
        try:
            with open(path) as f:
                fault = json.load(f)
        except (OSError, ValueError):  # removed or half-written meanwhile
            continue
        if fault.get("point") == point and any(n and re.search(fault["match"], n) for n in names):
            return fault
    return None


def fail(fault):
    raise InjectedFault("injected fault at %s: %s" % (fault["point"], fault.get("message") or fault["action"]))


def hang(until):
    """Block (a hung hypervisor or backend) until ``until()`` says the resource is gone."""
    end = time.monotonic() + HANG_MAX_SECONDS
    while time.monotonic() < end and not until():
        time.sleep(HANG_POLL_SECONDS)


def hold(point, names, until=lambda: False):
    """Block while a ``hold`` fault at ``point`` matches one of ``names``; True when
    ``until()`` ended it (the resource is being deleted) rather than the fault's removal."""
    end = time.monotonic() + HANG_MAX_SECONDS
    while time.monotonic() < end:
        fault = find(point, *names)
        if not (fault and fault["action"] == "hold"):
            return False
        if until():
            return True
        time.sleep(HANG_POLL_SECONDS)
    return False


def apply(point, *names):
    """Raise for an ``error`` fault; return the fault (or None) for the caller to act on."""
    fault = find(point, *names)
    if fault and fault["action"] == "error":
        fail(fault)
    return fault
