"""A server of the cloud that comes up as a minion of this master: the builder, and later the
instance that validates the new image. Its key pair is made on the master and pre-accepted
(as salt-cloud does), and handed to the server in its user-data with the master's address,
so that no key waits for a human; salt is installed first where the image has none.

The minion keeps its configuration, keys, cache and log under /run (a tmpfs), never on the
disk that becomes the image: what it writes after the scrub (job and state caches, a key
after a re-auth) cannot end up in the snapshot."""
import shlex

from ..cloud import nova

# where a salt built for the image lives; the base images this project makes carry it
SALT_BIN = "/opt/salt/bin"
INSTALL_SALT = """\
if ! command -v salt-minion >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  fi
  python3 -m venv {salt_bin_parent} && {salt_bin}/pip install -q 'salt=={salt_version}'
  ln -sf {salt_bin}/salt-minion {salt_bin}/salt-call /usr/bin/
fi
"""


RUN = "/run/salt-ami"


def user_data(minion_id, keys, address, salt_version):
    conf = "\n".join([f"id: {minion_id}", f"master: {address['master']}",
                      f"master_port: {address['master_port']}", f"publish_port: {address['publish_port']}",
                      f"pki_dir: {RUN}/pki", f"cachedir: {RUN}/cache", f"sock_dir: {RUN}/sock",
                      f"pidfile: {RUN}/minion.pid", f"log_file: {RUN}/minion.log",
                      # a builder must not wait minutes between retries while the master is busy
                      "acceptance_wait_time: 2", "acceptance_wait_time_max: 5", "random_reauth_delay: 0"])
    q = shlex.quote
    return "\n".join([
        "#!/bin/sh",
        "set -e",
        "umask 077",
        f"mkdir -p {RUN}/pki {RUN}/etc",
        f"printf '%s\\n' {q(keys['priv'])} > {RUN}/pki/minion.pem",
        f"printf '%s\\n' {q(keys['pub'])} > {RUN}/pki/minion.pub",
        f"printf '%s\\n' {q(conf)} > {RUN}/etc/minion",
        "umask 022",
        f"export PATH={SALT_BIN}:$PATH",
        INSTALL_SALT.format(salt_bin=SALT_BIN, salt_bin_parent=SALT_BIN.rsplit("/", 1)[0],
                            salt_version=salt_version),
        f"salt-minion -c {RUN}/etc -d",
        f"echo 'ami: salt-minion {minion_id} started'",
        "",
    ])


def start(build, ctx, role, image_id):
    """Boot a minion server for ``role`` ("builder" or "validator") and record it."""
    spec = ctx.spec
    minion_id = f"ami-{role}-{build.id}"
    keys = ctx.master.new_minion_key(minion_id)
    build.add(f"{role}_key", minion_id)
    data = user_data(minion_id, keys, ctx.master.address(spec.get("master")), ctx.master.salt_version())
    server = nova.boot(ctx.clients, minion_id, image=image_id, flavor=spec["flavor"],
                       networks=spec.get("networks"), key_name=spec.get("key_name"),
                       security_groups=spec.get("security_groups"), user_data=data,
                       metadata={"ami_build": build.id, "ami_role": role}, wait=False)
    build.add(f"{role}_server", server["id"])
    build.data[role] = {"server": server["id"], "minion": minion_id}
    build.save()
    nova.wait_status(ctx.clients, server["id"], "ACTIVE", spec["timeouts"]["boot"])
    ctx.master.wait_minion(minion_id, spec["timeouts"]["minion"])
    return build.data[role]


def release(build, ctx, role):
    """Delete the role's server (nova removes the ports and the volumes it made for it)
    and its minion key."""
    for server_id in build.made(f"{role}_server"):
        nova.delete(ctx.clients, server_id, wait=True, timeout=ctx.spec["timeouts"]["boot"])
        build.forget(f"{role}_server", server_id)
    for minion_id in build.made(f"{role}_key"):
        ctx.master.delete_minion_key(minion_id)
        build.forget(f"{role}_key", minion_id)
