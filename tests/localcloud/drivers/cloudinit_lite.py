"""The subset of cloud-init that test instances of the chroot driver need (TEST ONLY).

nova_chroot.py starts this file as a program for each boot of an instance:

    cloudinit_lite.py --root MNT --user-data FILE --hostname NAME --ready-fd N [--first-boot]

It parses the user-data, takes the instance's hostname (the driver starts it in its own UTS
namespace), chroots into the instance, tells the driver so through fd N, and then does what
cloud-init would, with all output on stdout (the instance's console):

* every boot: `bootcmd`;
* first boot only: `write_files` (path, content, encoding text/b64/gzip/gz+b64, permissions,
  owner, append), then the user-data's shell scripts and `runcmd`, sorted by name as
  cloud-init's scripts_user does (parts are named `part-001`... unless MIME names them,
  runcmd's script is `runcmd`). A failing step does not stop the others.

User-data can be a `#!` script, `#cloud-config`, or MIME multipart of those (gzip allowed,
as a whole or per part). When several cloud-config parts set the same top-level key, the
later part wins. Anything else (`#include`, boothooks, other cloud-config modules) is
reported on the console and ignored.

Everything is parsed before the chroot: afterwards the host's Python library is out of reach.
"""
import argparse
import base64
import email
import gzip
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import yaml

SHELL = "text/x-shellscript"
CLOUD_CONFIG = "text/cloud-config"
# cloud-init's own detection of undeclared parts: by their first characters
STARTS_WITH = {"#!": SHELL, "#cloud-config": CLOUD_CONFIG, "#include": "text/x-include-url",
               "#cloud-boothook": "text/cloud-boothook", "#part-handler": "text/part-handler",
               "## template: jinja": "text/jinja2"}
# the instance's tmpfs /run: what this writes there is not part of snapshots
SCRIPTS_DIR = "run/localcloud/scripts"
SUPPORTED_KEYS = {"bootcmd", "write_files", "runcmd"}


@dataclass
class Plan:
    boot_script: str = ""  # bootcmd as a shell script
    write_files: list = field(default_factory=list)
    scripts: list = field(default_factory=list)  # (name, content), in the order they run
    warnings: list = field(default_factory=list)


def _gunzip(data):
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def split_parts(data):
    """(name, content type, payload) of each part of the user-data."""
    data = _gunzip(data)
    head = data[:200].lower()
    if not (head.startswith(b"content-type:") or head.startswith(b"mime-version:")):
        return [("part-001", detect_type(data), data)]
    parts = []
    for part in email.message_from_bytes(data).walk():
        if part.is_multipart():
            continue
        payload = _gunzip(part.get_payload(decode=True) or b"")
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/x-not-multipart", "application/octet-stream"):
            ctype = detect_type(payload)
        name = part.get_filename() or "part-%03d" % (len(parts) + 1)
        parts.append((name, ctype, payload))
    return parts


def detect_type(payload):
    for prefix, ctype in STARTS_WITH.items():
        if payload.startswith(prefix.encode()):
            return ctype
    return "text/plain"


def parse(data):
    """The Plan for raw user-data bytes (as nova stores them, base64-decoded)."""
    plan = Plan()
    config = {}
    for name, ctype, payload in split_parts(data):
        if ctype == SHELL:
            plan.scripts.append((os.path.basename(name), payload))
        elif ctype == CLOUD_CONFIG:
            config.update(_load_cloud_config(name, payload, plan.warnings))
        elif payload.strip():
            plan.warnings.append("%s: %s is not supported, ignored" % (name, ctype))
    plan.boot_script = _commands_script(config, "bootcmd", plan.warnings)
    runcmd = _commands_script(config, "runcmd", plan.warnings)
    if runcmd:
        plan.scripts.append(("runcmd", runcmd))
    plan.scripts.sort(key=lambda script: script[0])
    plan.write_files = _write_files_entries(config, plan.warnings)
    ignored = sorted(set(config) - SUPPORTED_KEYS)
    if ignored:
        plan.warnings.append("cloud-config keys not supported, ignored: %s" % ", ".join(ignored))
    return plan


def _commands_script(config, key, warnings):
    commands = config.get(key) or []
    try:
        if not isinstance(commands, list):
            raise TypeError("not a list")
        return shellify(commands) if commands else ""
    except TypeError as e:
        warnings.append("%s ignored: %s" % (key, e))
        return ""


def _write_files_entries(config, warnings):
    entries = config.get("write_files") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        warnings.append("write_files ignored: not a list of mappings")
        return []
    return entries


def _load_cloud_config(name, payload, warnings):
    try:
        config = yaml.safe_load(payload)
    except yaml.YAMLError as e:
        warnings.append("%s: cloud-config is not valid YAML, ignored: %s" % (name, e))
        return {}
    if not isinstance(config, dict):
        warnings.append("%s: cloud-config is not a mapping, ignored" % name)
        return {}
    return config


def shellify(commands):
    """A /bin/sh script running each command: strings as shell lines, lists as argv."""
    lines = ["#!/bin/sh"]
    for cmd in commands:
        if isinstance(cmd, (list, tuple)):
            lines.append(" ".join(shlex.quote(str(a)) for a in cmd))
        elif isinstance(cmd, str):
            lines.append(cmd)
        else:
            raise TypeError("command %r is neither a string nor a list" % (cmd,))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ write_files
ENCODINGS = {"b64": ("base64",), "base64": ("base64",), "gz": ("gzip",), "gzip": ("gzip",),
             "gz+b64": ("base64", "gzip"), "gz+base64": ("base64", "gzip"),
             "gzip+b64": ("base64", "gzip"), "gzip+base64": ("base64", "gzip")}


def decode_content(content, encoding):
    if content is None:
        content = b""
    data = content if isinstance(content, bytes) else str(content).encode()
    for step in ENCODINGS.get(str(encoding or "text").lower(), ()):
        data = base64.b64decode(data) if step == "base64" else gzip.decompress(data)
    return data


def decode_permissions(perms):
    if perms is None:
        return 0o644
    return perms if isinstance(perms, int) else int(str(perms), 8)


def _ids(root, table):
    """name -> id from the instance's own /etc/passwd or /etc/group."""
    ids = {"root": 0}  # even in images without those files
    try:
        with open(os.path.join(root, "etc", table)) as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2].isdigit():
                    ids[fields[0]] = int(fields[2])
    except FileNotFoundError:
        pass
    return ids


def resolve_owner(owner, root):
    """(uid, gid) for "user[:group]" (names or numbers), -1 where not given."""
    user, _, group = str(owner).partition(":")
    return (_resolve_id(user, _ids(root, "passwd"), "user"),
            _resolve_id(group, _ids(root, "group"), "group"))


def _resolve_id(name, table, what):
    if not name:
        return -1
    if name.isdigit():
        return int(name)
    if name not in table:
        raise KeyError("no %s %r in the instance" % (what, name))
    return table[name]


def write_file(entry, root):
    path = entry.get("path")
    if not path:
        raise ValueError("write_files entry without a path")
    target = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "ab" if entry.get("append") else "wb") as f:
        f.write(decode_content(entry.get("content"), entry.get("encoding")))
    os.chmod(target, decode_permissions(entry.get("permissions")))
    os.chown(target, *resolve_owner(entry.get("owner", "root:root"), root))
    return path


# ------------------------------------------------------------------ running
def say(msg):
    print("[cloudinit-lite] %s" % msg, flush=True)


def run_script(name, content, root):
    """Run one script the way cloud-init's runparts does; True if it exited 0."""
    path = os.path.join(root, SCRIPTS_DIR, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    os.chmod(path, 0o700)
    say("running %s" % name)
    try:
        rc = subprocess.run([path], stdin=subprocess.DEVNULL, cwd=root).returncode
    except OSError as e:
        say("%s could not run: %s" % (name, e))
        return False
    say("%s exited with %d" % (name, rc))
    return rc == 0


def run(plan, root="/", first_boot=True):
    """Carry out the plan inside root; returns the number of failed steps."""
    for warning in plan.warnings:
        say("warning: " + warning)
    failures = 0
    if plan.boot_script:
        failures += not run_script("bootcmd", plan.boot_script, root)
    if not first_boot:
        return failures
    for entry in plan.write_files:
        try:
            say("wrote %s" % write_file(entry, root))
        except (OSError, ValueError, KeyError) as e:
            say("write_files: %r failed: %s" % (entry.get("path"), e))
            failures += 1
    for name, content in plan.scripts:
        failures += not run_script(name, content, root)
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--user-data", required=True)
    ap.add_argument("--hostname", required=True)
    ap.add_argument("--ready-fd", type=int, required=True)
    ap.add_argument("--first-boot", action="store_true")
    args = ap.parse_args(argv)
    with open(args.user_data, "rb") as f:
        plan = parse(f.read())
    socket.sethostname(args.hostname)
    os.chroot(args.root)
    os.chdir("/")
    os.write(args.ready_fd, b"ready")
    os.close(args.ready_fd)
    failures = run(plan, first_boot=args.first_boot)
    say("finished, %d failures" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
