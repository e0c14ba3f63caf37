"""A formula written in the saltstack-formulas style, baked as users bake it: the redis
formula of tests/formulas (map.jinja over defaults.yaml and osfamilymap.yaml, TOFS templates
overridable by pillar, a pkgrepo, an include of another formula, services running and
enabled with watch_in, ACL users set in the running server, a check_cmd that runs salt-call)
with the python formula it includes.

- the local strategy (``salt-call --local ami.bake`` on this machine, salt-thin in the
  vanilla Debian image): the formulas come from gitfs (a file:// repository), a TOFS
  override from an extra file_roots;
- the volume strategy inside a builder VM (the image's own salt): the formulas and the
  override from extra file_roots of the builder's config;
- on a master with the same gitfs and extra file_roots, ``salt-run ami.status`` resolves a
  flavour of the formula (its SLS found and fingerprinted through the master's file server,
  which the orchestration's builders fetch from).

Each image is opened and checked as a user would: the packages, the config from the map and
the pillar, the services enabled at boot (their wants links), the users the running server
saved; the build's result says which services were enabled instead of started and which
daemon it stopped; no process, mount or loop device of the bake is left."""
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import REPO, local_minion, mounted_image, salt_call_inside, salt_call_local
from saltami import chroot, disk, provenance, vanilla
from saltami.cloud import glance

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and chroot need root")

RUN = uuid.uuid4().hex[:6]
LOCAL = f"redis-local-{RUN}"
VOLUME = f"redis-volume-{RUN}"
MASTER = f"redis-master-{RUN}"
FORMULAS = ("redis", "python")
PASSWORD_SHA256 = hashlib.sha256(f"app-password-{RUN}".encode()).hexdigest()
# the TOFS override of the client's rc file (redis:tofs:source_files), kept outside the formula
SITE_TEMPLATE = ("redis/files/default/site-redisclirc.jinja",
                 "# the site's redisclirc, not the formula's\n:set {{ 'hints' if client.hints else 'nohints' }}\n")
SERVICES = {"enabled_instead_of_started": ["redis-server.service", "redis-server@cache.service"],
            "disabled_instead_of_stopped": []}
WANTS = "etc/systemd/system/multi-user.target.wants"


def pillar():
    """The formulas' pillar, as a user writes it for Debian 12: the repository (the Debian
    mirror this machine's apt uses; bookworm-backports, which neither test image lists),
    settings, an extra instance, an ACL user, the TOFS override, and for the python formula
    an extra package."""
    return {
        "redis": {
            "repo": {"url": vanilla.debian_mirror("bookworm"), "dist": "bookworm-backports", "comps": ["main"]},
            "settings": {"maxmemory": "100mb", "maxmemory-policy": "allkeys-lru"},
            "instances": {"cache": {"maxmemory": "32mb", "save": ""}},
            "users": {"app": {"rules": "on ~app:* &* +@all -@dangerous", "password_sha256": [PASSWORD_SHA256]}},
            "tofs": {"source_files": {"redis-client-rc": [Path(SITE_TEMPLATE[0]).name, "redisclirc.jinja"]}},
        },
        "python": {"pkgs": ["python3", "python3-six"]},
    }


def site_root(directory):
    """An extra file_roots root with the site's TOFS override of the redis formula."""
    path = Path(directory, SITE_TEMPLATE[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SITE_TEMPLATE[1])
    return Path(directory)


def provision_step(result):
    return next(s for s in result["steps"] if s["name"] == "provision")


def assert_formula_applied(root):
    """What the SLS redis and redis.python must have left in the image mounted at ``root``."""
    status = (root / "var/lib/dpkg/status").read_text()
    for package in ("redis-server", "redis-tools", "python3-redis", "python3-six"):
        assert f"Package: {package}\nStatus: install ok installed" in status, package
    # the repository of the pillar, through pkgrepo
    assert (root / "etc/apt/sources.list.d/redis.list").read_text().split() == [
        "deb", "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]", vanilla.debian_mirror("bookworm"),
        "bookworm-backports", "main"]
    # the config from the formula's template: defaults.yaml, Debian's osfamilymap.yaml, pillar
    conf = (root / "etc/redis/redis.conf").read_text().splitlines()
    assert conf[0].startswith("# redis.conf: managed by Salt")
    for line in ("unixsocket /run/redis/redis-server.sock", "pidfile /run/redis/redis-server.pid",
                 "maxmemory 100mb", "maxmemory-policy allkeys-lru", "aclfile /etc/redis/users.acl",
                 "port 6379", "daemonize yes", "appendonly no"):
        assert line in conf, line
    cache = (root / "etc/redis/redis-cache.conf").read_text().splitlines()
    for line in ("unixsocket /run/redis-cache/redis-server.sock", "port 0", "maxmemory 32mb", 'save ""',
                 "maxmemory-policy allkeys-lru", "aclfile /etc/redis/users-cache.acl"):
        assert line in cache, line
    # the client's rc file from the site's override, found through the pillar's TOFS list
    assert (root / "etc/redis/redisclirc").read_text() == "# the site's redisclirc, not the formula's\n:set hints\n"
    assert "REDISCLI_RCFILE=/etc/redis/redisclirc" in (root / "etc/profile.d/redis-cli.sh").read_text()
    # both services enabled at boot: the wants links systemd follows
    assert os.readlink(root / WANTS / "redis-server.service") == "/lib/systemd/system/redis-server.service"
    assert os.readlink(root / WANTS / "redis-server@cache.service") == "/lib/systemd/system/redis-server@.service"
    # the ACL user that the running server saved: the daemon was started and talked to
    users = (root / "etc/redis/users.acl").read_text().splitlines()
    assert any(line.startswith("user app on ") and f"#{PASSWORD_SHA256}" in line and "~app:*" in line
               for line in users), users
    # the Python bindings load the settings file (checked at bake time by salt-call's JSON renderer)
    settings = json.loads((root / "etc/redis/python-client.json").read_text())
    assert settings["unix_socket_path"] == "/run/redis/redis-server.sock"
    probe = subprocess.run(["chroot", str(root), "python3", "-c",
                            "import json, redis; c = redis.Redis(**json.load(open('/etc/redis/python-client.json')));"
                            "print(c.connection_pool.connection_kwargs['path'])"],
                           capture_output=True, text=True, env={"PATH": chroot.PATH})
    assert probe.stdout.strip() == "/run/redis/redis-server.sock", probe.stderr
    # nothing of the chroot: its /run was a tmpfs, its policy-rc.d is gone
    assert not (root / "run/salt-ami").exists() and not (root / "usr/sbin/policy-rc.d").exists()
    assert not [p for p in (root / "run").rglob("*") if not p.is_dir()]


def assert_nothing_left(builds):
    """No process whose root is below ``builds``, no mount, no loop device over its files."""
    assert chroot.processes_in(builds) == {}
    assert disk.mounts_below(builds) == []
    loops = json.loads(disk.run("losetup", "--json", "--list", "--output", "NAME,BACK-FILE") or '{"loopdevices": []}')
    assert not [d for d in loops["loopdevices"] if (d.get("back-file") or "").startswith(f"{builds}/")]


def assert_services_reported(result):
    step = provision_step(result)
    assert step["services"] == SERVICES, step
    # the redis-server the users state started, stopped before the unmount
    assert [p.split("[")[0] for p in step["stopped"]] == ["redis-server"], step


# ------------------------------------------------------------------------------ local strategy
@pytest.fixture(scope="module")
def formulas_git(tmp_path_factory):
    """The two formulas in a git repository of their own, as users keep formulas: the local
    bake's gitfs serves them from its file:// URL."""
    repo = tmp_path_factory.mktemp("formulas-git")
    for formula in FORMULAS:
        shutil.copytree(REPO / "tests" / "formulas" / formula, repo / formula)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "formulas"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    return repo


def gitfs_config(formulas_git, site):
    """What a user adds to a salt config for the formulas: gitfs for them, an extra root
    for the site's override (and the project's own formulas)."""
    return {"file_roots": {"base": [str(REPO / "salt" / "formulas"), str(site)]},
            "fileserver_backend": ["roots", "gitfs"], "gitfs_provider": "gitpython",
            "gitfs_remotes": [f"file://{formulas_git}"], "gitfs_base": "main"}


@pytest.fixture(scope="module")
def local_baked(tmp_path_factory, formulas_git):
    vanilla.ensure()
    root = tmp_path_factory.mktemp("formulas-local")
    flavour = {"strategy": "local", "base": {"vanilla": "debian-12"}, "sls": ["redis", "redis.python"],
               "pillar": pillar(), "outputs": ["raw"], "output_dir": str(root / "images"),
               "timeouts": {"apply": 900}, "validate": False}
    minion = local_minion(root, {LOCAL: flavour})
    config = yaml.safe_load((root / "minion").read_text())
    # redis and python from gitfs only (not tests/formulas, which local_minion serves)
    config.update(gitfs_config(formulas_git, site_root(root / "site")))
    (root / "minion").write_text(yaml.safe_dump(config))
    listed = salt_call_local(root, "cp.list_master")
    assert "redis/map.jinja" in listed and "python/init.sls" in listed and SITE_TEMPLATE[0] in listed

    t0 = time.monotonic()
    result = salt_call_local(root, "ami.bake", f"flavour={LOCAL}")
    print(f"local bake of the redis formula: {time.monotonic() - t0:.0f}s",
          {s["name"]: s.get("seconds") for s in result["steps"]})
    assert result["status"] == "done", result
    manifest = json.loads((Path(result["image"]["directory"]) / "manifest.json").read_text())
    image = Path(result["image"]["directory"]) / manifest["outputs"]["raw"]["files"]["image"]["file"]
    return {"result": result, "image": image, "builds": Path(minion["cachedir"]) / "ami" / "builds"}


def test_local_bake_says_which_services_it_enabled_instead_of_starting(local_baked):
    assert_services_reported(local_baked["result"])
    assert_nothing_left(local_baked["builds"])


def test_local_bake_image_has_the_formula_applied(local_baked, tmp_path):
    with mounted_image(local_baked["image"], tmp_path) as root:
        assert_formula_applied(root)


# ------------------------------------------------------------------------------ volume strategy
@pytest.fixture(scope="module")
def builder(builder_vm, base_image, localcloud):
    """The builder VM as a user sets it up for these formulas: the formulas and the site's
    override in extra file_roots of its salt, the flavour in its pillar, the demo cloud, and
    a resolver (the bake's chroot reaches the Debian mirror through the builder's network).
    Everything added goes at the end, for the other tests of the builder."""
    clients, server, root = builder_vm
    added = [root / "srv" / "formulas", root / "srv" / "site", root / "srv" / "pillar-formulas",
             root / "etc" / "salt" / "minion.d" / "formulas.conf", root / "etc" / "openstack" / "clouds.yaml"]
    resolv = root / "etc" / "resolv.conf"
    resolv_before = resolv.read_bytes() if resolv.exists() else None
    for formula in FORMULAS:
        shutil.copytree(REPO / "tests" / "formulas" / formula, root / "srv" / "formulas" / formula)
    site_root(root / "srv" / "site")
    flavour = {"strategy": "volume", "base": {"name": base_image["name"]}, "volume_size": 1,
               "sls": ["redis", "redis.python"], "pillar": pillar(), "keep": 1,
               "timeouts": {"apply": 900, "snapshot": 600}}
    (root / "srv" / "pillar-formulas").mkdir()
    (root / "srv" / "pillar-formulas" / "top.sls").write_text("base: {'*': [ami]}\n")
    (root / "srv" / "pillar-formulas" / "ami.sls").write_text(
        json.dumps({"ami": {"cloud": "localcloud", "flavours": {VOLUME: flavour}}}))
    (root / "etc" / "salt" / "minion.d").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "salt" / "minion.d" / "formulas.conf").write_text(yaml.safe_dump({
        "file_roots": {"base": ["/srv/salt", "/srv/formulas", "/srv/site"]},
        "pillar_roots": {"base": ["/srv/pillar-formulas"]}}))
    (root / "etc" / "openstack").mkdir(exist_ok=True)
    shutil.copyfile(localcloud.clouds_yaml, root / "etc" / "openstack" / "clouds.yaml")
    if resolv.is_symlink() or resolv_before is None:
        resolv.unlink(missing_ok=True)
    shutil.copyfile(os.path.realpath("/etc/resolv.conf"), resolv)
    try:
        yield clients, server, root
    finally:
        for path in added:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        if resolv_before is None:
            resolv.unlink(missing_ok=True)
        else:
            resolv.write_bytes(resolv_before)
        for image in provenance.find_promoted(clients, VOLUME):
            glance.delete(clients, image["id"], force=True)


@pytest.fixture(scope="module")
def volume_baked(builder, tmp_path_factory):
    clients, server, root = builder
    attached = [a.volumeId for a in clients.nova.volumes.get_server_volumes(server["id"])]
    t0 = time.monotonic()
    rc, out, err = salt_call_inside(root, "ami.bake", f"flavour={VOLUME}", timeout=1500)
    print(f"volume bake of the redis formula: {time.monotonic() - t0:.0f}s")
    assert rc == 0, (out[-3000:], err[-3000:])
    result = json.loads(out)["local"]
    assert result["status"] == "done", result
    image = tmp_path_factory.mktemp("formulas-volume") / "image.qcow2"
    glance.download(clients, result["image"]["id"], str(image))
    return {"result": result, "image": image, "attached_before": attached,
            "builds": root / "var" / "cache" / "salt" / "minion" / "ami" / "builds"}


def test_volume_bake_says_which_services_it_enabled_instead_of_starting(volume_baked, builder):
    clients, server, _root = builder
    result = volume_baked["result"]
    assert_services_reported(result)
    assert provision_step(result)["status"] == "done"
    assert_nothing_left(volume_baked["builds"])
    assert [a.volumeId for a in clients.nova.volumes.get_server_volumes(server["id"])] == \
        volume_baked["attached_before"]
    assert not [v for v in clients.cinder.volumes.list() if (v.name or "").startswith(f"ami-bake-{VOLUME}")]


def test_volume_bake_image_has_the_formula_applied(volume_baked, tmp_path):
    with mounted_image(volume_baked["image"], tmp_path) as root:
        assert_formula_applied(root)


# ------------------------------------------------------------------------------ on a master
@pytest.fixture(scope="module")
def gitfs_master(salt_factories, formulas_git, tmp_path_factory, cloud_profile, base_image):
    """A master whose file server has the formulas from gitfs and the site's root, with a
    snapshot flavour of the formula in its pillar."""
    root = tmp_path_factory.mktemp("formulas-master")
    flavour = {"base": {"name": base_image["name"]}, "sls": ["redis", "redis.python"],
               "flavor": "localcloud.small", "pillar": pillar()}
    (root / "pillar").mkdir()
    (root / "pillar" / "top.sls").write_text("base: {'*': [ami]}\n")
    (root / "pillar" / "ami.sls").write_text(json.dumps({"ami": {"flavours": {MASTER: flavour}}}))
    factory = salt_factories.salt_master_daemon(f"formulas-{RUN}", overrides={
        **gitfs_config(formulas_git, site_root(root / "site")),
        "pillar_roots": {"base": [str(root / "pillar")]}, "ami": {"cloud": cloud_profile}})
    with factory.started():
        yield factory


def test_master_resolves_a_flavour_of_the_formula_from_gitfs(gitfs_master):
    """What the orchestration's resolve step does first: the flavour's SLS are found and
    hashed through the master's file server; no image of it exists yet."""
    ret = gitfs_master.salt_run_cli(timeout=300).run("ami.status", MASTER)
    assert ret.returncode == 0, ret.stderr
    assert ret.data["up_to_date"] is False and ret.data["why"] == [f"no image of flavour {MASTER} exists"], ret.data
    files = gitfs_master.salt_run_cli(timeout=120).run("fileserver.file_list").data
    assert {"redis/map.jinja", "redis/server/users.sls", "python/init.sls", SITE_TEMPLATE[0]} <= set(files)
