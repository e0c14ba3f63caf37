"""The local cloud's bootable base image for real guests (flavor localcloud.vm): Debian 12
with a kernel, GRUB, systemd, cloud-init, openssh-server and salt 3007 in /opt/salt, whose
salt-minion service is enabled as salt's own packages leave it.

It is made as a user of this project would make it: by the local provider (``salt-call
--local ami.bake`` of a ``strategy: local`` flavour) from the vanilla Debian image, with an
SLS that installs salt from wheels fetched on this host. The result (the zstd qcow2 output)
is cached as ``<home>/cache/guest-<key>.qcow2``, the key hashing what goes into it: the
vanilla image's key, the salt pins, the SLS and this file; callers copy it, never change it.

    python3 tests/localcloud/guestimage.py      # build if needed, print the path (root)
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# run as a script: the localcloud package is in tests/
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from localcloud import baseimage  # noqa: E402
from saltami import vanilla  # noqa: E402

FLAVOUR = "localcloud-guest"
# salt as salt's packages install it: a venv, links on PATH, a minion service enabled at boot
SLS = """\
localcloud-guest-python:
  pkg.installed:
    - pkgs: [python3-venv]
    - refresh: true

localcloud-guest-wheels:
  file.recurse:
    - name: /tmp/localcloud-wheels
    - source: salt://localcloudguest/wheels

localcloud-guest-salt:
  cmd.run:
    - name: >-
        python3 -m venv /opt/salt &&
        /opt/salt/bin/pip install --quiet --no-index --no-cache-dir --root-user-action=ignore
        --find-links /tmp/localcloud-wheels --requirement /tmp/localcloud-wheels/requirements.txt
    - creates: /opt/salt/bin/salt-minion
    - require:
      - pkg: localcloud-guest-python
      - file: localcloud-guest-wheels

{% for name in ['salt-call', 'salt-minion'] %}
/usr/bin/{{ name }}:
  file.symlink:
    - target: /opt/salt/bin/{{ name }}
    - require:
      - cmd: localcloud-guest-salt
{% endfor %}

/etc/salt/minion:
  file.managed:
    - makedirs: true
    - contents: "# salt-minion's defaults (master: salt)\\n"

/etc/systemd/system/salt-minion.service:
  file.managed:
    - contents: |
        [Unit]
        Description=The Salt Minion
        After=network.target
        [Service]
        KillMode=process
        Type=simple
        ExecStart=/opt/salt/bin/salt-minion
        Restart=on-failure
        [Install]
        WantedBy=multi-user.target

# no init system runs in the chroot: enabling is making the unit's link
localcloud-guest-minion-enabled:
  file.symlink:
    - name: /etc/systemd/system/multi-user.target.wants/salt-minion.service
    - target: /etc/systemd/system/salt-minion.service
    - makedirs: true

localcloud-guest-wheels-gone:
  file.absent:
    - name: /tmp/localcloud-wheels
    - require:
      - cmd: localcloud-guest-salt
"""


def cache_key():
    digest = hashlib.sha256()
    for part in (vanilla.cache_key(vanilla.DEFAULT_RELEASE), baseimage.REQUIREMENTS.read_text(), SLS,
                 Path(__file__).read_text()):
        digest.update(len(part).to_bytes(8, "big") + part.encode())
    return digest.hexdigest()


def image_path(home=None):
    return baseimage.localcloud_home(home) / "cache" / f"guest-{cache_key()[:16]}.qcow2"


def ensure_guest_image(home=None):
    """The cached guest image, built first if needed (about 2 minutes once the vanilla image
    exists; the vanilla image itself takes about 3 more the first time)."""
    image = image_path(home)
    if image.exists():
        return image
    image.parent.mkdir(parents=True, exist_ok=True)
    with vanilla.locked(image.parent / "guest.lock"):
        if not image.exists():
            _build(image)
    return image


def _build(image):
    wheels = baseimage._fetch_wheels(image.parent)
    work = Path(tempfile.mkdtemp(prefix="localcloud-guest-", dir=image.parent))
    try:
        tree = work / "srv" / "localcloudguest"
        (tree / "wheels").mkdir(parents=True)
        for wheel in wheels.iterdir():
            os.link(wheel, tree / "wheels" / wheel.name)
        shutil.copy(baseimage.REQUIREMENTS, tree / "wheels" / "requirements.txt")
        (tree / "init.sls").write_text(SLS)
        (work / "pillar").mkdir()
        (work / "pillar" / "top.sls").write_text("base: {'*': [ami]}\n")
        flavour = {"strategy": "local", "base": {"vanilla": vanilla.DEFAULT_RELEASE}, "sls": ["localcloudguest"],
                   "outputs": ["qcow2-zstd"], "output_dir": str(work / "out"), "timeouts": {"apply": 1200}}
        (work / "pillar" / "ami.sls").write_text(yaml.safe_dump({"ami": {"flavours": {FLAVOUR: flavour}}}))
        (work / "minion").write_text(yaml.safe_dump({
            "id": "localcloud-guest-baker", "root_dir": str(work), "file_client": "local",
            "file_roots": {"base": [str(work / "srv")]}, "pillar_roots": {"base": [str(work / "pillar")]},
            "log_file": str(work / "minion.log"), "log_level_logfile": "info"}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        salt_call = Path(sys.executable).with_name("salt-call")
        r = subprocess.run([str(salt_call), "--local", "-c", str(work), "--out=json", "--log-level=quiet",
                            "ami.bake", f"flavour={FLAVOUR}"], env=env, capture_output=True, text=True)
        try:
            result = json.loads(r.stdout)["local"]
        except (ValueError, KeyError):
            result = None
        if r.returncode or not isinstance(result, dict) or result.get("status") != "done":
            raise baseimage.BuildError(f"the local provider could not bake the guest image: "
                                       f"{(r.stdout + r.stderr)[-3000:]}")
        partial = image.with_name(image.name + ".partial")
        shutil.move(result["image"]["files"]["qcow2-zstd"]["image"], partial)
        partial.rename(image)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(ensure_guest_image())
