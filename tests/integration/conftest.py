"""Fixtures of the integration tier: the local cloud, salt-factories' master and minions,
the library's clients."""
from pathlib import Path

import pytest
import yaml

from helpers import GUEST_IMAGE, GUEST_SECRET, REPO, RUN, RUN_FLAVOUR, ZERO_DISK_FLAVOR, ZERO_DISK_FLAVOUR, leftovers
from localcloud import fixture as localcloud_fixture
from saltami.cloud.auth import connect


@pytest.fixture(scope="session")
def localcloud():
    """The local cloud (tests/localcloud): started for this test run unless one is running
    already; stopped at the end of the run only if the run started it (tests/conftest.py;
    LOCALCLOUD_KEEP=1 keeps it)."""
    return localcloud_fixture.start()


@pytest.fixture(scope="session")
def builder_wheels(localcloud, tmp_path_factory):
    """Wheels of this project and of what it needs in a builder (BUILDER_PACKAGES), for
    builders that cannot reach a package index: {"dir", "packages"} (the names to install)."""
    import hashlib
    import shutil
    import subprocess
    import sys

    constraints = REPO / "requirements" / "constraints.txt"
    key = hashlib.sha256("\n".join(BUILDER_PACKAGES).encode() + constraints.read_bytes()).hexdigest()[:12]
    deps = localcloud.home / "cache" / f"builder-wheels-{key}"
    if not deps.is_dir():
        partial = deps.with_name(deps.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(partial),
                        "-c", str(constraints), *BUILDER_PACKAGES], check=True)
        partial.rename(deps)
    work = tmp_path_factory.mktemp("builder-wheels")
    # built from a copy: a build in the work tree would leave build/ and egg-info behind
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "__pycache__", "docs", "bench"))
    wheels = work / "wheels"
    shutil.copytree(deps, wheels)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True)
    shutil.rmtree(source)
    return {"dir": wheels, "packages": ("salt-ami", *BUILDER_PACKAGES)}


@pytest.fixture(scope="session")
def builder_vm(localcloud, base_image, cloud_profile, builder_wheels):
    """A builder VM as a user prepares one: an instance of the base image (which has salt)
    with this project and its OpenStack clients installed in salt's venv (no credentials:
    tests that need them put a clouds.yaml in and take it out). Yields (clients, server,
    root), root being the instance's filesystem on this host."""
    import shutil
    import subprocess
    import uuid

    from saltami.cloud import nova

    clients = connect(profile=cloud_profile)
    server = nova.boot(clients, f"ami-builder-{uuid.uuid4().hex[:8]}", image=base_image["id"],
                       flavor="localcloud.small")
    root = localcloud.instances_path / server["id"] / "mnt"
    try:
        # the instance has no network
        shutil.copytree(builder_wheels["dir"], root / "tmp" / "wheels")
        subprocess.run(["chroot", str(root), "/opt/salt/bin/pip", "install", "--quiet", "--isolated", "--no-index",
                        "--find-links", "/tmp/wheels", *builder_wheels["packages"]], check=True)
        shutil.rmtree(root / "tmp" / "wheels")
        yield clients, server, root
    finally:
        nova.delete(clients, server["id"])


@pytest.fixture(scope="session")
def builder_image(builder_vm):
    """A builder image (what a volume-strategy flavour's ``builder`` names): a snapshot of
    the builder VM, named so that the test flavours can refer to it."""
    from saltami.cloud import glance, nova

    clients, server, root = builder_vm
    assert not (root / "etc" / "openstack" / "clouds.yaml").exists()
    image = nova.create_snapshot(clients, server["id"], BUILDER_IMAGE)
    yield image
    glance.delete(clients, image["id"], force=True)


BUILDER_IMAGE = f"{RUN}-builder"

def _requirements():
    """What salt-ami needs beside salt (setup.py's install_requires, as installed here)."""
    import importlib.metadata
    import re

    names = (re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0] for r in importlib.metadata.requires("salt-ami") or ())
    return tuple(n for n in names if n.lower() != "salt")


BUILDER_PACKAGES = _requirements()


@pytest.fixture
def drivers_with_faults():
    """For tests of the drivers' fault hooks (tests/localcloud/faults.py): skipped while the
    running cloud's services loaded their driver before its hooks last changed."""
    from localcloud.faults import stale_drivers

    if stale_drivers():
        pytest.skip(f"{', '.join(stale_drivers())} started before the fault hooks of its driver changed: "
                    "restart the local cloud")


@pytest.fixture(scope="session")
def guest_image(localcloud):
    """The real guests' base image in Glance (Debian 12 with systemd, cloud-init, sshd and
    salt), made by the local provider, cached on disk, uploaded once per cloud."""
    return localcloud.guest_image(GUEST_IMAGE)


@pytest.fixture(scope="session")
def vm_flavor(localcloud, guest_image):
    """The nova flavor whose instances are qemu VMs; skipped while the running cloud's compute
    service predates its driver."""
    from localcloud.faults import stale_drivers
    from saltami.cloud import nova

    if "nova-compute" in stale_drivers():
        pytest.skip("nova-compute started before its drivers last changed: restart the local cloud")
    clients = connect(profile={"cloud": "localcloud-admin", "clouds_yaml": str(localcloud.clouds_yaml)})
    flavor = nova.find_flavor(clients, "localcloud.vm")
    assert flavor.get_keys().get("localcloud:vm") == "true"
    return flavor.name


@pytest.fixture(scope="session")
def demo_session(localcloud):
    """keystoneauth session of the non-admin user (project demo)."""
    return localcloud.session()


@pytest.fixture(scope="session")
def admin_session(localcloud):
    return localcloud.session(admin=True)


@pytest.fixture(scope="session")
def base_image(localcloud):
    """The base test image (Debian 12 + python3 + salt) in Glance: dict with id, name, path."""
    return localcloud.base_image()


# ----------------------------------------------------------------------------- salt daemons
# pytest-salt-factories' log server and event listener bind 0.0.0.0 by default: keep them
# on loopback like everything else here
@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    from saltfactories.plugins.event_listener import EventListener

    # it forgets events older than its timeout: a loaded machine's build takes longer than
    # the default 120 s, and tests read its events once it ends
    listener = EventListener(timeout=1800)
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    return {"root_dir": tmp_path_factory.mktemp("salt")}


@pytest.fixture(scope="session")
def cloud_profile(localcloud):
    """What a user puts in ``ami:cloud``: the non-admin cloud of the local clouds.yaml."""
    return {"cloud": "localcloud", "clouds_yaml": str(localcloud.clouds_yaml)}


BUILD_TIMEOUTS = {"boot": 300, "minion": 180, "apply": 600, "snapshot": 600, "validate": 300}


@pytest.fixture(scope="session")
def flavours(base_image):
    """The test flavours, as a user writes them in pillar: the base test image with the
    amitest formula (salt/formulas/amitest, no package downloads)."""
    base = {"base": {"name": base_image["name"]}, "sls": ["amitest"], "flavor": "localcloud.small",
            "pillar": {"amitest": {"mark": "baked-by-test", "secret": "pillar-secret-do-not-leak"}},
            "properties": {"os_distro": "debian", "os_version": "12"}, "keep": 2,
            "timeouts": BUILD_TIMEOUTS}
    return {
        "amitest": base,
        "amitest-extra": {"extends": "amitest", "sls": ["amitest.extra"], "tags": ["extra"]},
        "amitest-broken": {"extends": "amitest", "sls": ["amitestbroken"]},
        "amitest-badtest": {"extends": "amitest", "test": {"cmd": "test -e /etc/ami-test/never"}},
        # bad flavours: each must fail before anything is created
        "amitest-nosls": {"extends": "amitest", "sls": ["nosuchsls.here"]},
        "amitest-nobase": {"extends": "amitest", "base": {"name": "no-such-base-image"}},
        "amitest-typo": {"extends": "amitest", "flavr": "localcloud.small"},
        # the orchestration's volume strategy: a builder with salt-ami bakes a volume of the base
        "amitest-volume": {"extends": "amitest", "strategy": "volume", "volume_size": 1,
                           "builder": {"name": BUILDER_IMAGE},
                           "pillar": {"amitest": {"mark": "baked-by-a-builder"}}},
        # fault tests (tests/integration/test_faults.py): short waits, a tag (promote tags after renaming)
        # faults (tests/integration/test_faults.py): no second boot, but for the faults of
        # validate and promote, which turn it on
        "amitest-fault": {"extends": "amitest", "tags": ["fault"], "validate": False,
                          "timeouts": {"boot": 60, "minion": 60, "apply": 120, "snapshot": 300, "validate": 120}},
        # one build of a flavour at a time, killed builds (tests/integration/test_concurrency.py):
        # no second boot to check the image, which those tests are not about
        RUN_FLAVOUR: {"extends": "amitest", "validate": False},
        # a builder and a validator booted from volumes (tests/integration/test_volume_backed.py)
        ZERO_DISK_FLAVOUR: {"extends": "amitest", "flavor": ZERO_DISK_FLAVOR},
        # builds on real guests (tests/integration/test_real_guests.py): qemu VMs of the guest
        # image, whose minions reach the master at qemu's user-network address of the host
        "amitest-vm": {"extends": "amitest", "base": {"name": GUEST_IMAGE}, "sls": ["amiguest"],
                       "flavor": "localcloud.vm", "master": "10.0.2.2", "keep": 1,
                       "pillar": {"amitest": {"mark": "baked-on-a-real-guest", "secret": GUEST_SECRET}},
                       "timeouts": {"boot": 600, "minion": 900, "apply": 1200, "snapshot": 1200,
                                    "validate": 1200}},
        # an image family (tests/integration/test_families.py): the child is built from the
        # parent's image with its own SLS only, the grandchild from the child's; the child's
        # mark is not the parent's, so that an amitest SLS applied again would show in its image
        "amitest-fam": {"extends": "amitest", "validate": False, "pillar": {"amitest": {"mark": "fam-parent"}}},
        "amitest-fam-child": {"extends": "amitest-fam", "from_parent": True, "sls": ["amitest.extra"],
                              "pillar": {"amitest": {"mark": "fam-child", "extra": "fam-child-extra"}}},
        "amitest-fam-grandchild": {"extends": "amitest-fam-child", "from_parent": True, "sls": ["amitestfamily"]},
        # built from the image of a flavour whose builds fail
        "amitest-fam-orphan": {"extends": "amitest-broken", "from_parent": True, "sls": ["amitest.extra"],
                               "validate": False},
        # side by side builds (tests use two, bench/build_times.py four)
        **{f"amitest-p{i}": {"extends": "amitest", "pillar": {"amitest": {"mark": f"p{i}"}}} for i in range(1, 5)},
    }


@pytest.fixture(scope="session")
def pillar_tree(tmp_path_factory, flavours):
    root = tmp_path_factory.mktemp("pillar")
    (root / "top.sls").write_text("base:\n  '*':\n    - ami\n")
    (root / "ami.sls").write_text(yaml.safe_dump({"ami": {"flavours": flavours}}))
    return root


@pytest.fixture(scope="session")
def salt_master(salt_factories, cloud_profile, pillar_tree, tmp_path_factory):
    factory = salt_factories.salt_master_daemon("master", overrides={
        # the first root is where state_tree.base.temp_file writes: a directory of this session's,
        # not the checkout (a temporary _modules/x.py there would reach every salt loading saltami)
        "file_roots": {"base": [str(tmp_path_factory.mktemp("state-tree")), str(REPO / "salt" / "formulas"),
                                str(REPO / "tests" / "formulas")]},
        "pillar_roots": {"base": [str(pillar_tree)]},
        # builders get their flavour's pillar from it (saltami/build_pillar.py)
        "ext_pillar": [{"ami": {}}],
        # and their minions, which make their own keys, are accepted with a one-time token
        "autosign_grains_dir": str(tmp_path_factory.mktemp("autosign_grains")),
        "timeout": 120,
        "ami": {"cloud": cloud_profile},
    })
    with factory.started():
        yield factory


@pytest.fixture(scope="session")
def salt_minion(salt_master, cloud_profile):
    factory = salt_master.salt_minion_daemon("minion", overrides={"ami": {"cloud": cloud_profile}})
    with factory.started():
        yield factory


@pytest.fixture(scope="session")
def salt_call(salt_minion):
    return salt_minion.salt_call_cli(timeout=900)


@pytest.fixture(scope="session")
def salt_run(salt_master):
    return salt_master.salt_run_cli(timeout=900)


@pytest.fixture(scope="module")
def salt_key(salt_master):
    return salt_master.salt_key_cli()


@pytest.fixture(scope="module")
def builds_dir(salt_master):
    """Where the master keeps build manifests and claims (saltami.builds.builds_dir)."""
    return Path(salt_master.config["cachedir"]) / "ami" / "builds"


# ----------------------------------------------------------------------------- library clients
@pytest.fixture(scope="module")
def module_clients(cloud_profile):
    return connect(profile=cloud_profile)


def _connect(localcloud, monkeypatch, cloud):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(localcloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    return connect(cloud=cloud)


@pytest.fixture
def clients(localcloud, monkeypatch):
    """saltami Clients of the non-admin user."""
    return _connect(localcloud, monkeypatch, "localcloud")


@pytest.fixture
def admin_clients(localcloud, monkeypatch):
    return _connect(localcloud, monkeypatch, "localcloud-admin")


@pytest.fixture
def name(request, clients):
    """A name unique to this test for what it makes; nothing so named may outlive it."""
    prefix = f"{RUN}-{request.node.name}"
    yield prefix
    assert leftovers(clients, prefix) == []
