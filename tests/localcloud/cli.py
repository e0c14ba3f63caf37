"""localcloud: keystone, glance, placement, nova, cinder and neutron (API only) on 127.0.0.1.

TEST AND DEVELOPMENT INFRASTRUCTURE ONLY. Instances are chroots running as root on this
machine (see drivers/nova_chroot.py), or for the flavor localcloud.vm qemu VMs (drivers/
nova_qemu.py): nothing here is isolated or secure.

    localcloud install   create the services' virtualenv (pinned, reused when unchanged)
    localcloud up        install if needed, reset the cloud's state and start everything
    localcloud down      stop every process by PID, unmount and detach what instances left
    localcloud restart-compute   nova-compute alone, to load changed test drivers
    localcloud restart-volume    cinder-volume alone, for the same
    localcloud status    what is running and answering
    localcloud env       shell exports for the non-admin user (--admin for admin)

Everything lives under $LOCALCLOUD_HOME (default /var/lib/localcloud): venv/ and cache/
survive `up`; state/ (databases, logs, instances, volumes, images) is made anew by `up`.
This file needs only the standard library: it runs before the venv exists.
"""
import argparse
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOME = Path(os.environ.get("LOCALCLOUD_HOME", "/var/lib/localcloud"))
VENV = HOME / "venv"
STATE = HOME / "state"
PIDS = STATE / "pids"
LOGS = STATE / "logs"
ETC = STATE / "etc"
CLOUDS_YAML = HOME / "clouds.yaml"
SECRETS = STATE / "secrets.json"
INSTANCES = STATE / "nova" / "instances"

AUTH_URL = "http://127.0.0.1:5000/v3"
REGION = "RegionOne"
DB_NAMES = ("keystone", "glance", "nova_api", "nova_cell0", "nova", "placement", "cinder", "neutron")
APT_PACKAGES = ("rabbitmq-server", "mariadb-server", "qemu-utils", "genisoimage", "debootstrap",
                "e2fsprogs", "fdisk", "util-linux", "curl", "qemu-system-x86", "openssh-client")

# name -> (port, health path); all gunicorn apps, one worker with threads, bound to loopback
APIS = {
    "keystone": (5000, "/v3"),
    "glance": (9292, "/healthcheck"),
    "placement": (8778, "/"),
    "nova-api": (8774, "/"),
    "cinder-api": (8776, "/"),
    "neutron-api": (9696, "/"),
}


def log(msg):
    print(f"[localcloud +{time.monotonic() - T0:5.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def run(*cmd, env=None, check=True, capture=False, logfile=None):
    kw = {}
    if logfile:
        kw["stdout"] = open(logfile, "ab")
        kw["stderr"] = subprocess.STDOUT
    elif capture:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    r = subprocess.run([str(c) for c in cmd], env=env, text=capture, **kw)
    if check and r.returncode:
        where = f" (see {logfile})" if logfile else (f": {r.stderr.strip()}" if capture else "")
        raise SystemExit(f"localcloud: {' '.join(map(str, cmd[:4]))} failed with {r.returncode}{where}")
    return r


def venv_env(**extra):
    env = dict(os.environ)
    env["PATH"] = f"{STATE / 'bin'}:{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------- install
def _venv_stamp():
    h = hashlib.sha256()
    for f in ("requirements.txt", "constraints.txt"):
        h.update((HERE / f).read_bytes())
    return h.hexdigest()


def install():
    missing = [p for p in APT_PACKAGES if run("dpkg-query", "-W", "-f=${Status}", p, check=False,
                                               capture=True).stdout.strip() != "install ok installed"]
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", *missing,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    stamp = VENV / ".localcloud-stamp"
    if stamp.exists() and stamp.read_text() == _venv_stamp():
        return
    log(f"creating the services' venv in {VENV}")
    shutil.rmtree(VENV, ignore_errors=True)
    HOME.mkdir(parents=True, exist_ok=True)
    run(sys.executable, "-m", "venv", VENV)
    pip = [VENV / "bin" / "python", "-m", "pip", "install", "-q"]
    run(*pip, "-U", "pip", "wheel", "setuptools")
    run(*pip, "-r", HERE / "requirements.txt", "-c", HERE / "constraints.txt")
    stamp.write_text(_venv_stamp())
    log("venv ready")


# ------------------------------------------------------------------------------- processes
def spawn(name, argv, env=None):
    out = open(LOGS / f"{name}.out", "ab")
    p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env or venv_env(), cwd=STATE,
                         start_new_session=True)
    (PIDS / f"{name}.pid").write_text(str(p.pid))
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def started_pids():
    pids = {}
    for f in sorted(PIDS.glob("*.pid")) if PIDS.is_dir() else []:
        try:
            pids[f.stem] = int(f.read_text())
        except ValueError:
            continue
    return pids


def http_ok(url, timeout=2):
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # answering, even if it wants a token
    except (OSError, ValueError):
        return False


def wait_for(what, check, timeout=180, interval=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(interval)
    raise SystemExit(f"localcloud: timed out after {timeout}s waiting for {what} (logs: {LOGS})")


# ------------------------------------------------------------------------------- configuration
def ksauth(user, pw, project="service"):
    return (f"auth_url = {AUTH_URL}\nauth_type = password\nproject_domain_id = default\n"
            f"user_domain_id = default\nproject_name = {project}\nusername = {user}\npassword = {pw}\n")


def authtoken(user, pw):
    return (f"[keystone_authtoken]\nwww_authenticate_uri = {AUTH_URL}\n{ksauth(user, pw)}"
            "service_token_roles_required = true\nmemcached_servers =\n")


def write_configs(sec):
    site = Path(run(VENV / "bin" / "python", "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])",
                    capture=True).stdout.strip())
    veti = VENV / "etc"
    db = f"mysql+pymysql://os:{sec['db']}@127.0.0.1"
    spw = sec["service"]
    files = {}
    files["keystone.conf"] = f"""
[DEFAULT]
log_file = {LOGS}/keystone.log
[database]
connection = {db}/keystone?charset=utf8
[token]
provider = fernet
expiration = 86400
[identity]
# fewer bcrypt rounds: every test authenticates; this is not a production cloud
password_hash_rounds = 4
[fernet_tokens]
key_repository = {STATE}/fernet-keys
[fernet_receipts]
key_repository = {STATE}/fernet-keys
[credential]
key_repository = {STATE}/credential-keys
"""
    files["glance-api.conf"] = f"""
[DEFAULT]
log_file = {LOGS}/glance-api.log
enabled_backends = fs:file
image_cache_dir = {STATE}/glance/cache
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {STATE}/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = {STATE}/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = {STATE}/glance/tasks/
[database]
connection = {db}/glance?charset=utf8
[paste_deploy]
flavor = keystone
config_file = {ETC}/glance-api-paste.ini
[oslo_concurrency]
lock_path = {STATE}/locks
{authtoken('glance', spw)}
"""
    files["placement.conf"] = f"""
[DEFAULT]
log_file = {LOGS}/placement.log
[placement_database]
connection = {db}/placement?charset=utf8
[api]
auth_strategy = keystone
{authtoken('placement', spw)}
"""
    files["nova.conf"] = f"""
[DEFAULT]
log_dir = {LOGS}
state_path = {STATE}/nova
instances_path = {INSTANCES}
transport_url = rabbit://guest:guest@127.0.0.1:5672/
compute_driver = nova_qemu.QemuDriver
host = localcloud-compute
my_ip = 127.0.0.1
# instances have no metadata service to reach: they always get a config drive,
# as on clouds that force one
force_config_drive = True
mkisofs_cmd = genisoimage
heal_instance_info_cache_interval = -1
[api_database]
connection = {db}/nova_api?charset=utf8
[database]
connection = {db}/nova?charset=utf8
{authtoken('nova', spw)}
[service_user]
send_service_user_token = true
{ksauth('nova', spw)}
[placement]
region_name = {REGION}
{ksauth('nova', spw)}
[glance]
region_name = {REGION}
[cinder]
os_region_name = {REGION}
{ksauth('nova', spw)}
[neutron]
region_name = {REGION}
{ksauth('nova', spw)}
[scheduler]
discover_hosts_in_cells_interval = 2
workers = 1
[conductor]
workers = 1
[oslo_concurrency]
lock_path = {STATE}/locks
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[os_vif_ovs]
# there is no OVS here; the chroot driver plugs no VIF
per_port_bridge = false
"""
    files["cinder.conf"] = f"""
[DEFAULT]
log_dir = {LOGS}
state_path = {STATE}/cinder
transport_url = rabbit://guest:guest@127.0.0.1:5672/
auth_strategy = keystone
api_paste_config = {veti}/cinder/api-paste.ini
enabled_backends = file
default_volume_type = __DEFAULT__
host = localcloud-cinder
my_ip = 127.0.0.1
rootwrap_config = {ETC}/cinder-rootwrap.conf
# without it cinder refuses every list filter of a non-admin user
resource_query_filters_file = {veti}/cinder/resource_filters.json
image_conversion_dir = {STATE}/cinder/conversion
[database]
connection = {db}/cinder?charset=utf8
{authtoken('cinder', spw)}
[service_user]
send_service_user_token = true
{ksauth('cinder', spw)}
[nova]
region_name = {REGION}
{ksauth('cinder', spw)}
[oslo_concurrency]
lock_path = {STATE}/locks
[oslo_messaging_notifications]
driver = noop
[file]
volume_driver = cinder_file.FileVolumeDriver
volume_backend_name = file
file_volumes_dir = {STATE}/cinder/volumes
"""
    files["neutron.conf"] = f"""
[DEFAULT]
log_dir = {LOGS}
state_path = {STATE}/neutron
core_plugin = ml2
service_plugins = router,port_forwarding
auth_strategy = keystone
transport_url = rabbit://guest:guest@127.0.0.1:5672/
api_paste_config = {veti}/neutron/api-paste.ini
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
rpc_workers = 1
[database]
connection = {db}/neutron?charset=utf8
{authtoken('neutron', spw)}
[oslo_concurrency]
lock_path = {STATE}/locks
"""
    files["ml2_conf.ini"] = """
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers =
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
"""
    for name, text in files.items():
        (ETC / name).write_text(text.lstrip())
        (ETC / name).chmod(0o600)
    shutil.copy(veti / "glance" / "glance-api-paste.ini", ETC)
    shutil.copy(veti / "nova" / "api-paste.ini", ETC)
    rw = (veti / "cinder" / "rootwrap.conf").read_text().splitlines()
    rw = [f"filters_path={veti}/cinder/rootwrap.d" if ln.startswith("filters_path=") else
          f"exec_dirs={VENV}/bin,/sbin,/usr/sbin,/bin,/usr/bin,/usr/local/bin,/usr/local/sbin"
          if ln.startswith("exec_dirs=") else ln for ln in rw]
    (ETC / "cinder-rootwrap.conf").write_text("\n".join(rw) + "\n")
    # cinder starts its privsep helper through sudo; we already are root
    (STATE / "bin" / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (STATE / "bin" / "sudo").chmod(0o755)
    return site


# ------------------------------------------------------------------------------- bring-up steps
def fresh_state():
    shutil.rmtree(STATE, ignore_errors=True)
    for d in ("pids", "logs", "etc", "bin", "locks", "rabbit/mnesia", "rabbit/log", "mysql/data",
              "mysql/run", "fernet-keys", "credential-keys", "glance/images", "glance/staging",
              "glance/tasks", "glance/cache", "nova/instances", "cinder/volumes", "cinder/conversion",
              "neutron"):
        (STATE / d).mkdir(parents=True, exist_ok=True)
    for d in ("fernet-keys", "credential-keys"):
        (STATE / d).chmod(0o700)
    sec = {k: secrets.token_urlsafe(18) for k in ("db", "service", "admin", "demo")}
    SECRETS.write_text(json.dumps(sec))
    SECRETS.chmod(0o600)
    return sec


def start_mariadb(sec):
    cnf = STATE / "mysql" / "my.cnf"
    cnf.write_text(f"""[mysqld]
user = root
datadir = {STATE}/mysql/data
socket = {STATE}/mysql/run/mysqld.sock
pid-file = {STATE}/mysql/run/mysqld.pid
bind-address = 127.0.0.1
port = 3306
skip-name-resolve
log-error = {LOGS}/mysqld.err
innodb_buffer_pool_size = 128M
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
max_connections = 1000
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
[client]
socket = {STATE}/mysql/run/mysqld.sock
""")
    run("mariadb-install-db", f"--defaults-file={cnf}", "--auth-root-authentication-method=normal",
        logfile=LOGS / "mysql-install.log")
    spawn("mariadb", ["/usr/sbin/mariadbd", f"--defaults-file={cnf}"])
    client = ["mariadb", f"--defaults-file={cnf}", "-uroot"]
    wait_for("mariadb", lambda: run(*client, "-e", "select 1", check=False, capture=True).returncode == 0)
    sql = f"CREATE USER 'os'@'127.0.0.1' IDENTIFIED BY '{sec['db']}'; GRANT ALL ON *.* TO 'os'@'127.0.0.1';"
    sql += "".join(f"CREATE DATABASE {d};" for d in DB_NAMES)
    # on stdin: the password must not show in the process list
    subprocess.run(client, input=sql.encode(), check=True)


def start_rabbitmq():
    rb = STATE / "rabbit"
    (rb / "rabbitmq.conf").write_text("listeners.tcp.default = 127.0.0.1:5672\nloopback_users.guest = true\n")
    (rb / "enabled_plugins").write_text("[].\n")
    env = {**venv_env(), "HOME": str(rb), "ERL_EPMD_ADDRESS": "127.0.0.1"}
    # our own epmd in the foreground, so that it has a PID we started (rabbitmq would daemonize one)
    spawn("epmd", ["epmd", "-address", "127.0.0.1"], env)
    env.update(RABBITMQ_NODENAME="rabbit@localhost", RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
               RABBITMQ_DIST_PORT="25672",
               RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
               RABBITMQ_CONFIG_FILE=str(rb / "rabbitmq.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(rb / "enabled_plugins"),
               RABBITMQ_MNESIA_BASE=str(rb / "mnesia"), RABBITMQ_LOG_BASE=str(rb / "log"),
               RABBITMQ_PID_FILE=str(rb / "beam.pid"))
    spawn("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env)


def db_syncs():
    c = lambda f: f"--config-file={ETC / f}"  # noqa: E731
    nc = c("nova.conf")
    sec = json.loads(SECRETS.read_text())
    cell0 = f"mysql+pymysql://os:{sec['db']}@127.0.0.1/nova_cell0?charset=utf8"
    jobs = {
        "keystone": [["keystone-manage", c("keystone.conf"), "db_sync"],
                     ["keystone-manage", c("keystone.conf"), "fernet_setup", "--keystone-user", "root",
                      "--keystone-group", "root"],
                     ["keystone-manage", c("keystone.conf"), "credential_setup", "--keystone-user", "root",
                      "--keystone-group", "root"]],
        "glance": [["glance-manage", c("glance-api.conf"), "db_sync"]],
        "placement": [["placement-manage", c("placement.conf"), "db", "sync"]],
        "cinder": [["cinder-manage", c("cinder.conf"), "db", "sync"]],
        "neutron": [["neutron-db-manage", c("neutron.conf"), c("ml2_conf.ini"), "upgrade", "heads"]],
        "nova": [["nova-manage", nc, "api_db", "sync"],
                 ["nova-manage", nc, "cell_v2", "map_cell0", "--database_connection", cell0],
                 ["nova-manage", nc, "cell_v2", "create_cell", "--name", "cell1"],
                 ["nova-manage", nc, "db", "sync"]],
    }

    def one(name):
        for cmd in jobs[name]:
            run(*cmd, env=venv_env(), logfile=LOGS / f"{name}-dbsync.log")

    with ThreadPoolExecutor(len(jobs)) as ex:
        list(ex.map(one, jobs))


# one line per request with the client and the global request id, which services pass on to
# each other: how benchmarks count a tool's requests and those it causes (bench/packer.py)
ACCESS_LOG_FORMAT = '%(t)s "%(r)s" %(s)s "%(a)s" %({x-openstack-request-id}i)s'


def gunicorn(name, port, app, extra_env):
    argv = [VENV / "bin" / "gunicorn", "--no-control-socket", "-w", "1", "-k", "gthread", "--threads", "8",
            "--timeout", "600", "--pythonpath", HERE / "shims", "-b", f"127.0.0.1:{port}",
            "--access-logfile", LOGS / f"{name}.access.log", "--access-logformat", ACCESS_LOG_FORMAT, app]
    spawn(name, argv, venv_env(**extra_env))


def start_keystone(sec):
    # the password goes through the environment, not the command line that ps shows
    run("keystone-manage", f"--config-file={ETC / 'keystone.conf'}", "bootstrap",
        "--bootstrap-region-id", REGION,
        *[a for i in ("admin", "public", "internal") for a in (f"--bootstrap-{i}-url", AUTH_URL)],
        env=venv_env(OS_BOOTSTRAP_PASSWORD=sec["admin"]), logfile=LOGS / "keystone-bootstrap.log")
    gunicorn("keystone", 5000, "ks_wsgi:application", {"OS_KEYSTONE_CONFIG_FILES": str(ETC / "keystone.conf")})
    wait_for("keystone", lambda: http_ok(AUTH_URL))


def start_services(site):
    etc = str(ETC)
    gunicorn("glance", 9292, "glance.wsgi.api:application", {"OS_GLANCE_CONFIG_DIR": etc})
    gunicorn("placement", 8778, "placement.wsgi.api:application", {"OS_PLACEMENT_CONFIG_DIR": etc})
    gunicorn("nova-api", 8774, "nova_api_wsgi:application", {"OS_NOVA_CONFIG_DIR": etc})
    gunicorn("cinder-api", 8776, "cinder_api_wsgi:application", {"CINDER_CONF": str(ETC / "cinder.conf")})
    gunicorn("neutron-api", 9696, "neutron_api_wsgi:application",
             {"OS_NEUTRON_CONFIG_DIR": etc, "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini"})
    spawn("neutron-rpc", ["neutron-rpc-server", f"--config-file={ETC / 'neutron.conf'}",
                          f"--config-file={ETC / 'ml2_conf.ini'}"])
    for s in ("conductor", "scheduler"):
        spawn(f"nova-{s}", [f"nova-{s}", f"--config-file={ETC / 'nova.conf'}"])
    start_compute(site)
    spawn_cinder("scheduler")
    spawn_cinder("volume")


def spawn_cinder(service):
    # its volume driver (drivers/cinder_file.py) and its fault hooks are on the PYTHONPATH
    spawn(f"cinder-{service}", [f"cinder-{service}", f"--config-file={ETC / 'cinder.conf'}"],
          venv_env(PYTHONPATH=str(HERE / "drivers")))


def start_compute(site):
    # nova loads compute_driver only from inside nova.virt: link the test drivers in there
    for driver in ("nova_chroot.py", "nova_qemu.py"):
        link = site / "nova" / "virt" / driver
        link.unlink(missing_ok=True)
        link.symlink_to(HERE / "drivers" / driver)
    spawn("nova-compute", ["nova-compute", f"--config-file={ETC / 'nova.conf'}"])


def restart_compute(args=None):
    """nova-compute alone, by its PID, to load changed drivers: running instances stay (chroots
    stay mounted, VMs keep running) and the driver takes them back when it starts."""
    pid = started_pids().get("nova-compute")
    if pid:
        kill_all([pid])
    site = Path(run(VENV / "bin" / "python", "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])",
                    capture=True).stdout.strip())
    start_compute(site)
    log("nova-compute restarted")


def restart_volume(args=None):
    """cinder-volume alone, by its PID, to load a changed volume driver: volumes stay (they
    are files), and a volume it was making meanwhile stays in creating."""
    pid = started_pids().get("cinder-volume")
    if pid:
        kill_all([pid])
    spawn_cinder("volume")
    log("cinder-volume restarted")


def write_clouds_yaml(sec):
    def cloud(user, project, pw):
        return (f"  {{name}}:\n    region_name: {REGION}\n    identity_api_version: 3\n    auth:\n"
                f"      auth_url: {AUTH_URL}\n      username: {user}\n      password: {pw}\n"
                f"      project_name: {project}\n      user_domain_name: Default\n"
                f"      project_domain_name: Default\n")
    text = ("# written by tests/localcloud/localcloud up; the passwords change on every up\nclouds:\n"
            + cloud("demo", "demo", sec["demo"]).format(name="localcloud")
            + cloud("admin", "admin", sec["admin"]).format(name="localcloud-admin"))
    tmp = CLOUDS_YAML.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(CLOUDS_YAML)


def exclusive(fn):
    """One up or down at a time on a machine: a second caller waits, then sees the first's
    work (two test sessions starting together share one cloud)."""
    def locked(*args, **kwargs):
        HOME.mkdir(parents=True, exist_ok=True)
        with open(HOME / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return fn(*args, **kwargs)
    return locked


def alive():
    """Every service of a complete start still runs: judged by its process, not by how fast
    its API answers (a loaded machine, TCG guests on both cores, can keep an API from
    answering within seconds, and taking that for a dead cloud reset it under a running test)."""
    pids = started_pids()
    return bool(pids) and all(pid_alive(p) for p in pids.values()) and all(
        http_ok(f"http://127.0.0.1:{port}{path}", timeout=60) for port, path in APIS.values())


@exclusive
def up(args):
    if alive():
        log("already up; reusing it")
        return
    install()
    stop(quiet=True)
    sec = fresh_state()
    log("state reset; starting mariadb and rabbitmq")
    with ThreadPoolExecutor(2) as ex:
        db = ex.submit(start_mariadb, sec)
        ex.submit(start_rabbitmq).result()
        db.result()
    site = write_configs(sec)
    log("mariadb up; syncing schemas")
    db_syncs()
    log("schemas ready; starting keystone")
    start_keystone(sec)
    run(VENV / "bin" / "python", HERE / "setup_cloud.py", "--catalog", env=venv_env(LOCALCLOUD_SECRETS=str(SECRETS)))
    log("keystone and catalog ready; starting the services")
    start_services(site)
    for name, (port, path) in APIS.items():
        wait_for(name, lambda: http_ok(f"http://127.0.0.1:{port}{path}"))
    log("APIs answering; waiting for compute and volume services")
    run(VENV / "bin" / "python", HERE / "setup_cloud.py", "--resources",
        env=venv_env(LOCALCLOUD_SECRETS=str(SECRETS)))
    # map the compute host to its cell now rather than at the scheduler's next periodic run
    run("nova-manage", f"--config-file={ETC / 'nova.conf'}", "cell_v2", "discover_hosts",
        env=venv_env(), logfile=LOGS / "discover-hosts.log")
    write_clouds_yaml(sec)
    log(f"cloud ready: {CLOUDS_YAML}")


# ------------------------------------------------------------------------------- teardown
def instance_pids():
    """Processes that instances started: their root is inside an instance's mount."""
    inst = str(INSTANCES)
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/root").startswith(inst + "/"):
                    found.append(int(p))
            except OSError:
                continue
    return found


def vm_pids():
    """qemu processes of VM instances: each names its instance directory in its pidfile and on
    its command line."""
    found = []
    for pidfile in INSTANCES.glob("*/qemu.pid") if INSTANCES.is_dir() else []:
        try:
            pid = int(pidfile.read_text().strip())
            if str(pidfile.parent).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except (OSError, ValueError):
            continue
    return found


def our_mounts():
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f]
    return sorted((m for m in points if m.startswith(str(STATE) + "/")), key=lambda m: -m.count("/"))


def our_loops():
    out = run("losetup", "--list", "--json", "--output", "NAME,BACK-FILE", check=False, capture=True).stdout
    devs = json.loads(out or '{"loopdevices": []}')["loopdevices"]
    return [d["name"] for d in devs if (d.get("back-file") or "").startswith(str(STATE) + "/")]


def kill_all(pids, grace=10):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
                try:
                    target()
                    break
                except (ProcessLookupError, PermissionError):
                    continue
        end = time.monotonic() + grace
        while time.monotonic() < end and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        if not any(pid_alive(p) for p in pids):
            return


@exclusive
def down(args=None, quiet=False):
    stop(quiet)


def stop(quiet=False):
    pids = started_pids()
    if pids and not quiet:
        log(f"stopping {len(pids)} processes")
    # compute first, so that it cannot start anything new while instances are swept
    if "nova-compute" in pids:
        kill_all([pids.pop("nova-compute")])
    guests = instance_pids() + vm_pids()
    kill_all(guests, grace=5)
    kill_all(list(pids.values()))
    for m in our_mounts():
        if run("umount", m, check=False, capture=True).returncode:
            run("umount", "-l", m, check=False)
    for dev in our_loops():
        run("partx", "-d", dev, check=False, capture=True)
        run("losetup", "-d", dev, check=False)
    for f in PIDS.glob("*.pid") if PIDS.is_dir() else []:
        f.unlink()
    left = [n for n, p in pids.items() if pid_alive(p)] + [str(p) for p in guests if pid_alive(p)]
    if left or our_mounts() or our_loops():
        raise SystemExit(f"localcloud: left behind: processes {left}, mounts {our_mounts()}, loops {our_loops()}")
    if not quiet:
        log("stopped; no process, mount or loop device left")


# ------------------------------------------------------------------------------- status / env
def running_apis():
    return {n for n, (port, path) in APIS.items() if http_ok(f"http://127.0.0.1:{port}{path}", timeout=1)}


def status(args):
    pids = started_pids()
    apis = running_apis()
    for name, pid in pids.items():
        print(f"{name:14} pid {pid:<8} {'running' if pid_alive(pid) else 'DEAD'}")
    for name in APIS:
        print(f"{name:14} http   {'answering' if name in apis else 'not answering'}")
    print(f"instances: {len(list(INSTANCES.glob('*/state.json'))) if INSTANCES.is_dir() else 0}, "
          f"mounts: {len(our_mounts())}, loop devices: {len(our_loops())}")
    up_ = alive()
    print("localcloud is", "UP" if up_ else "DOWN")
    return 0 if up_ else 3


def env(args):
    cloud = "localcloud-admin" if args.admin else "localcloud"
    print(f"export OS_CLIENT_CONFIG_FILE={CLOUDS_YAML}\nexport OS_CLOUD={cloud}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="localcloud", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install").set_defaults(fn=lambda a: install())
    sub.add_parser("up").set_defaults(fn=up)
    sub.add_parser("down").set_defaults(fn=down)
    sub.add_parser("restart-compute").set_defaults(fn=lambda a: exclusive(restart_compute)(a))
    sub.add_parser("restart-volume").set_defaults(fn=lambda a: exclusive(restart_volume)(a))
    sub.add_parser("status").set_defaults(fn=status)
    e = sub.add_parser("env")
    e.add_argument("--admin", action="store_true")
    e.set_defaults(fn=env)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("localcloud: must run as root (nova-compute loop-mounts instance disks)")
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
