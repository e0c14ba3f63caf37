"""A server of the cloud that comes up as a minion of this master: the builder, and later the
instance that validates the new image. Its minion makes its own key at its first start; the
master accepts it because the minion presents a one-time token of this build (Salt's
``autosign_grains``), which the build revokes as soon as that minion is in. The user-data
carries only that token and the master's address: no key, and nothing that works once the
minion is accepted or the build is over. Salt is installed first where the image has none
(waiting for apt's lock, which first-boot upgrades hold, through the flavour's ``proxy``).

The minion keeps its configuration, keys, cache and log under /run (a tmpfs), never on the
disk that becomes the image: what it writes after the scrub (job and state caches, a key
after a re-auth) cannot end up in the snapshot. It compiles no pillar from the master's top
file unless the flavour says ``master_pillar: true`` (its pillarenv is one the master does
not have); the flavour's own pillar comes from the ami ext_pillar (build_pillar.py)."""
import json
import shlex

from ..cloud import cinder, glance, nova
from ..errors import CloudError
from ..saltmaster import AUTOSIGN_GRAIN, NO_PILLARENV, token_id
from . import manifest

# where a salt built for the image lives; the base images this project makes carry it
SALT_BIN = "/opt/salt/bin"
RUN = "/run/salt-ami"
# what the bootstrap below installed, for the scrub's `salt: remove` (scrub.py reads it)
INSTALLED = f"{RUN}/installed"
APT_LOCK_SECONDS = 900
INSTALL_SALT = """\
if ! command -v salt-minion >/dev/null 2>&1; then
  {proxy}
  if command -v apt-get >/dev/null 2>&1 && ! python3 -c 'import ensurepip' 2>/dev/null; then
    dpkg-query -W -f '${{Package}}\\n' | sort > {run}/packages.before
    # first-boot apt-daily and unattended-upgrades hold apt's locks for minutes
    for attempt in $(seq 1 60); do apt-get -o DPkg::Lock::Timeout={lock} update -q && break; sleep 10; done
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout={lock} install -y -q python3-venv
    dpkg-query -W -f '${{Package}}\\n' | sort | comm -13 {run}/packages.before - | sed 's/^/package /' >> {installed}
  fi
  echo "directory {salt_bin_parent}" >> {installed}
  python3 -m venv {salt_bin_parent} && {salt_bin}/pip install -q 'salt=={salt_version}'
  for name in salt-minion salt-call; do
    ln -sf {salt_bin}/$name /usr/bin/$name && echo "file /usr/bin/$name" >> {installed}
  done
fi
"""


def minion_config(minion_id, token, address, master_pillar=False):
    conf = {"id": minion_id, "master": address["master"], "master_port": address["master_port"],
            "publish_port": address["publish_port"], "pki_dir": f"{RUN}/pki", "cachedir": f"{RUN}/cache",
            "sock_dir": f"{RUN}/sock", "pidfile": f"{RUN}/minion.pid", "log_file": f"{RUN}/minion.log",
            # a builder must not wait minutes between retries while the master is busy
            "acceptance_wait_time": 2, "acceptance_wait_time_max": 5, "random_reauth_delay": 0,
            # the token goes with the minion's first authentication, and the master accepts it
            "autosign_grains": [AUTOSIGN_GRAIN], "grains": {AUTOSIGN_GRAIN: token}}
    if not master_pillar:
        conf["pillarenv"] = NO_PILLARENV
    return conf


def user_data(minion_id, token, address, salt_version, proxy=None, master_pillar=False):
    """The builder's user-data: a shell script (cloud-init runs it once, at first boot) that
    configures a minion under /run, installs salt if the image has none, and starts it."""
    q = shlex.quote
    conf = minion_config(minion_id, token, address, master_pillar)
    proxy_env = (f"export http_proxy={q(proxy)} https_proxy={q(proxy)} HTTP_PROXY={q(proxy)} "
                 f"HTTPS_PROXY={q(proxy)}") if proxy else ":"
    return "\n".join([
        "#!/bin/sh",
        "set -e",
        "umask 077",
        f"mkdir -p {RUN}/pki {RUN}/etc",
        # JSON is YAML
        f"printf '%s\\n' {q(json.dumps(conf))} > {RUN}/etc/minion",
        "umask 022",
        f"export PATH={SALT_BIN}:$PATH",
        INSTALL_SALT.format(salt_bin=SALT_BIN, salt_bin_parent=SALT_BIN.rsplit("/", 1)[0],
                            salt_version=salt_version, run=RUN, installed=INSTALLED, lock=APT_LOCK_SECONDS,
                            proxy=proxy_env),
        f"salt-minion -c {RUN}/etc -d",
        f"echo 'ami: salt-minion {minion_id} started'",
        "",
    ])


def start(build, ctx, role, image_id):
    """Boot a minion server for ``role`` ("builder" or "validator") and record it."""
    spec = ctx.spec
    minion_id = manifest.minion_id(role, build.id)
    volume_size = boot_volume_size(ctx, image_id)
    token = ctx.master.new_token()
    # recorded before the master knows it: a build killed now still revokes it
    build.add(f"{role}_admission", token_id(token))
    build.add(f"{role}_key", minion_id)
    ctx.master.admit(token)
    data = user_data(minion_id, token, ctx.master.address(spec.get("master")), ctx.master.salt_version(),
                     proxy=spec.get("proxy"), master_pillar=spec.get("master_pillar", False))
    server = nova.boot(ctx.clients, minion_id, image=image_id, flavor=spec["flavor"],
                       networks=spec.get("networks"), key_name=spec.get("key_name"),
                       security_groups=spec.get("security_groups"), user_data=data,
                       config_drive=spec.get("config_drive"), volume_size=volume_size,
                       metadata={"ami_build": build.id, "ami_role": role}, wait=False)
    build.add(f"{role}_server", server["id"])
    build.data[role] = {"server": server["id"], "minion": minion_id}
    build.save()
    server = nova.wait_status(ctx.clients, server["id"], "ACTIVE", spec["timeouts"]["boot"])
    if volume_size:
        # nova names nothing of the volume it made: it says whose it is, and release deletes
        # it should nova not (a snapshot of it keeps it)
        for volume in server.get("os-extended-volumes:volumes_attached") or ():
            build.add(f"{role}_volume", volume["id"])
            cinder.label(ctx.clients, volume["id"], name=f"{minion_id}-root",
                         metadata={"ami_build": build.id, "ami_role": role})
        build.data[role]["volume_gib"] = volume_size
        build.save()
    ctx.master.wait_minion(minion_id, spec["timeouts"]["minion"])
    # the minion is in: from now on the token admits nobody
    revoke(build, ctx, role)
    return build.data[role]


def boot_volume_size(ctx, image_id):
    """GiB of the volume the role's server boots from, or None to boot it from the image on
    the flavor's own disk: the flavour's ``volume_size`` with strategy snapshot (with strategy
    volume it is the size of the volume baked), else, with a flavor that has no root disk
    (0 GiB, as on Ceph-backed clouds, where nova refuses anyone but an admin an image boot on
    it), what the image needs."""
    spec = ctx.spec
    if spec["strategy"] == "snapshot" and spec.get("volume_size"):
        return spec["volume_size"]
    if nova.find_flavor(ctx.clients, spec["flavor"]).disk:
        return None
    return max(cinder.min_gib(glance.show(ctx.clients, image_id)), 1)


def revoke(build, ctx, role):
    for token_hash in build.made(f"{role}_admission"):
        ctx.master.revoke(token_hash)
        build.forget(f"{role}_admission", token_hash)


def release(build, ctx, role, wait=True):
    """Delete the role's server (nova removes the ports and the volumes it made for it), its
    minion key and its admission token. Without ``wait`` the servers' deletion is asked for
    and ``settle`` finishes the release later, so that the build goes on meanwhile (a boot
    volume can only go once its server has: then it waits all the same)."""
    revoke(build, ctx, role)
    for server_id in build.made(f"{role}_server"):
        nova.delete(ctx.clients, server_id, wait=False)
    if wait or build.made(f"{role}_volume"):
        settle(build, ctx, role)


def settle(build, ctx, role):
    """The rest of ``release``: once the role's servers are gone, the boot volumes nova could
    not delete (cinder keeps a volume that has snapshots: a failed build's createImage made
    one) with their snapshots, and the minion keys (not before: a minion whose key goes while
    it runs asks again, and would leave a key waiting on the master)."""
    timeout = ctx.spec["timeouts"]["boot"]
    for server_id in build.made(f"{role}_server"):
        nova.wait_deleted(ctx.clients, server_id, timeout=timeout)
        build.forget(f"{role}_server", server_id)
    for volume_id in build.made(f"{role}_volume"):
        try:
            cinder.delete(ctx.clients, volume_id, cascade=True, timeout=timeout)
        except CloudError:
            # cinder refuses a second delete: nova's own got there first
            cinder.wait_status(ctx.clients, volume_id, "deleted", timeout)
        build.forget(f"{role}_volume", volume_id)
    for minion_id in build.made(f"{role}_key"):
        ctx.master.delete_minion_key(minion_id)
        build.forget(f"{role}_key", minion_id)
