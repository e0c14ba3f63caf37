"""This project's build against Packer's OpenStack builder on the same local cloud in the same
run: wall time and API requests, median of several rounds, for a full build and for a
rebuild with unchanged inputs; Packer's volume path (use_blockstorage_volume); and the size
of the images both produce against the bytes their filesystems use.

    apt-get install -y --no-install-recommends packer     # Debian's 1.6.6, OpenStack builder built in
    LOCALCLOUD_KEEP=1 .venv/bin/python -m pytest bench/packer.py -p no:logging -s      # BENCH_ROUNDS=3

Both tools build the flavour `amitest` from the local cloud's base image on flavor
localcloud.small. Ours runs `salt-run state.orch ami.build` on a real master (the tests'
fixtures); Packer runs bench/packer.json with `communicator: none`: its user-data writes the
amitest SLS and pillar and runs `salt-call --local state.apply amitest`, and a shell-local
provisioner (this file with --wait-console) polls the server's console until that has
finished, so that Packer stops and snapshots a provisioned server.

Requests are counted by a reverse proxy in front of every API, which the tools reach
through a clouds.yaml (ours) or OS_* variables (Packer) naming the proxy's keystone; the
proxy rewrites the catalog and version documents so that every later request also comes
through it. Requests the services make to each other (nova to glance, cinder, placement,
token validation) go straight to the services and are not counted; nor are the console
polls of the wait glue, which are reported apart.
"""
import argparse
import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cinderclient import exceptions as cinder_exc
from novaclient import exceptions as nova_exc

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))

from build_times import orchestrate  # noqa: E402
from helpers import leftovers  # noqa: E402
from localcloud import cli  # noqa: E402
from report import write_section  # noqa: E402
from saltami import disk, pipeline, provenance  # noqa: E402
from saltami.cloud import glance  # noqa: E402
from saltami.cloud.auth import connect  # noqa: E402
from saltami.errors import AmiError  # noqa: E402

FLAVOUR = "amitest-packer"
# the same without the second boot that checks the image (flavour key validate: false), which
# Packer does not do: Packer's own job, head to head
NOVALIDATE_FLAVOUR = "amitest-packer-novalidate"
VOLUME_FLAVOUR = "amitest-packer-volume"
TEMPLATE = BENCH / "packer.json"
# what the user-data prints on the console when salt-call is done; written so that the
# command itself (which the console may echo) does not match
DONE = re.compile(r"bench-packer-done-rc=(\d+)")
WAIT_INTERVAL = 1.0
WAIT_TIMEOUT = 600
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# the API services of the local cloud, by the port of their catalog endpoints
APIS = {"keystone": 5000, "glance": 9292, "nova": 8774, "cinder": 8776, "neutron": 9696, "placement": 8778}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}
ID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|packer_[0-9a-f-]+")


# ----------------------------------------------------------------------------- counting proxy
class CountingProxy:
    """One listener per API on a free loopback port, forwarding to the real service and
    counting each request as (service, method, path with ids replaced by {id}, status).

    Every request it forwards carries the global request id of the current phase (a new one
    at each ``take``), which the services pass on in the requests they make to each other:
    their access logs then tell which requests a phase caused."""

    def __init__(self, apis):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.phase = f"req-{uuid.uuid4()}"
        self.servers = {}
        for service, port in apis.items():
            handler = type(f"Forward_{service}", (_Forward,), {"proxy": self, "service": service, "upstream": port})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[service] = server
        self.ports = {s: srv.server_address[1] for s, srv in self.servers.items()}
        self.replacements = [(f"127.0.0.1:{apis[s]}".encode(), f"127.0.0.1:{p}".encode())
                             for s, p in self.ports.items()]

    def rewrite(self, data):
        for real, ours in self.replacements:
            data = data.replace(real, ours)
        return data

    def unrewrite(self, text):
        for real, ours in self.replacements:
            text = text.replace(ours.decode(), real.decode())
        return text

    def count(self, service, method, path, status):
        key = (service, method, ID.sub("{id}", path.split("?")[0]), status)
        with self.lock:
            self.counts[key] += 1

    def take(self):
        """(global request id, requests counted) of the phase that ends; a new phase starts."""
        with self.lock:
            ended = self.phase, self.counts
            self.phase, self.counts = f"req-{uuid.uuid4()}", collections.Counter()
        return ended

    def close(self):
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy = service = upstream = None

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if not size:
                    return b"".join(chunks)
                chunks.append(chunk)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self):
        body = self._body()
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() != "x-openstack-request-id"}
        headers["X-OpenStack-Request-ID"] = self.proxy.phase
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=900)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            # every body here is a small JSON document (neither tool moves image data itself)
            data = self.proxy.rewrite(response.read())
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        for k, v in response.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, self.proxy.rewrite(v.encode("latin-1")).decode("latin-1"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.proxy.count(self.service, self.command, self.path, response.status)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


def by_service(counts):
    per = collections.Counter()
    for (service, *_), n in counts.items():
        per[service] += n
    return per


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def api_proxy(localcloud):
    proxy = CountingProxy(APIS)
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def cloud_entry(localcloud):
    """The non-admin entry of the local cloud's clouds.yaml (what both tools log in as)."""
    return yaml.safe_load(Path(localcloud.clouds_yaml).read_text())["clouds"]["localcloud"]


@pytest.fixture(scope="session")
def cloud_profile(api_proxy, cloud_entry, tmp_path_factory):
    """Overrides the tests' profile: the master reaches the cloud through the counting proxy."""
    entry = json.loads(json.dumps(cloud_entry))
    entry["auth"]["auth_url"] = f"http://127.0.0.1:{api_proxy.ports['keystone']}/v3"
    path = tmp_path_factory.mktemp("proxied") / "clouds.yaml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump({"clouds": {"localcloud": entry}}))
    return {"cloud": "localcloud", "clouds_yaml": str(path)}


def volume_strategy():
    """Whether this project's build has a volume strategy yet, and if not why."""
    try:
        pipeline.steps_for("volume")
        return None
    except AmiError as e:
        return str(e)


@pytest.fixture(scope="session")
def flavours(flavours):
    """The tests' flavours plus this bench's own copies of amitest, so that pruning between
    rounds touches no one else's images."""
    extra = {FLAVOUR: {"extends": "amitest"}, NOVALIDATE_FLAVOUR: {"extends": "amitest", "validate": False}}
    if volume_strategy() is None:
        extra[VOLUME_FLAVOUR] = {"extends": "amitest-volume"}
    return {**flavours, **extra}


# ----------------------------------------------------------------------------- Packer
def packer_user_data(flavour):
    """cloud-config that writes the flavour's SLS and pillar and applies them with
    salt-call --local, then prints the DONE marker with salt-call's status."""
    (sls,) = flavour["sls"]
    files = [{"path": f"/srv/salt/{sls}/init.sls",
              "content": (REPO / "salt" / "formulas" / sls / "init.sls").read_text()},
             {"path": "/srv/pillar/top.sls", "content": f"base:\n  '*':\n    - {sls}\n"},
             # only what the SLS reads: the test pillar's fake secret has no business in an image
             {"path": f"/srv/pillar/{sls}.sls",
              "content": yaml.safe_dump({sls: {"mark": flavour["pillar"][sls]["mark"]}})}]
    apply = (f"PATH=/opt/salt/bin:$PATH salt-call --local --retcode-passthrough --state-output=terse "
             f"state.apply {sls}; echo bench-packer-done\"-rc=$?\"")
    return "#cloud-config\n" + yaml.safe_dump({"write_files": files, "runcmd": [["sh", "-c", apply]]})


def packer_env(entry, proxy, workdir):
    """Packer logs in as the same user, through the proxy; nothing secret on a command line."""
    auth = entry["auth"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=f"http://127.0.0.1:{proxy.ports['keystone']}/v3", OS_USERNAME=auth["username"],
               OS_PASSWORD=auth["password"], OS_PROJECT_NAME=auth["project_name"],
               OS_USER_DOMAIN_NAME=auth["user_domain_name"], OS_PROJECT_DOMAIN_NAME=auth["project_domain_name"],
               OS_REGION_NAME=entry["region_name"], OS_IDENTITY_API_VERSION="3",
               CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=str(workdir / "cache"))
    return env


def run_packer(builder, variables, env, workdir):
    """``packer build -only=builder``: (seconds, exit status, output)."""
    var_file = workdir / f"{variables['instance_name']}.json"
    var_file.write_text(json.dumps(variables))
    started = time.monotonic()
    p = subprocess.run(["packer", "build", "-color=false", f"-only={builder}", f"-var-file={var_file}",
                        str(TEMPLATE)], cwd=workdir, env=env, capture_output=True, text=True)
    return time.monotonic() - started, p.returncode, p.stdout + p.stderr


def packer_error(output, proxy):
    """Packer's error line and the service's answer on the line after it, with the proxy's
    ports put back to the services' own."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    at = next((i for i, ln in enumerate(lines) if "errored" in ln), len(lines) - 1)
    return proxy.unrewrite(" ".join(lines[at:at + 2]))


def wait_console(instance_name, clouds_yaml):
    """Packer's shell-local provisioner: wait until salt-call has finished in the server
    named ``instance_name``; exit with its status. Prints how many API requests it made."""
    for k in [k for k in os.environ if k.startswith("OS_")]:
        del os.environ[k]
    clients = connect(profile={"cloud": "localcloud", "clouds_yaml": clouds_yaml})
    requests = []
    clients.session.session.hooks["response"].append(lambda r, *a, **kw: requests.append(r.url))
    deadline = time.monotonic() + WAIT_TIMEOUT
    try:
        (server,) = clients.nova.servers.list(search_opts={"name": f"^{instance_name}$"})
        while time.monotonic() < deadline:
            found = DONE.findall(server.get_console_output(length=50) or "")
            if found:
                print(f"salt-call --local finished with status {found[-1]}")
                return int(found[-1])
            time.sleep(WAIT_INTERVAL)
        print(f"salt-call did not finish within {WAIT_TIMEOUT}s")
        return 1
    finally:
        print(f"bench-wait-requests={len(requests)}")


def failed_step(builds, flavour):
    """Which step of the flavour's newest build failed, and why (from its manifest)."""
    manifests = sorted((m for m in builds.glob(f"{flavour}-*.json")
                        if re.fullmatch(rf"{re.escape(flavour)}-\d{{8}}-\d{{6}}-[0-9a-f]+\.json", m.name)),
                       key=lambda m: m.stat().st_mtime)
    steps = json.loads(manifests[-1].read_text())["steps"] if manifests else []
    failed = [s for s in steps if s.get("status") == "failed"]
    return f"step {failed[0]['name']}: {failed[0].get('error')}" if failed else "the orchestration failed"


def wait_requests(output):
    found = re.findall(r"bench-wait-requests=(\d+)", output)
    return int(found[-1]) if found else 0


# ----------------------------------------------------------------------------- image size
def nonzero_bytes(path, block=4096):
    zero = bytes(block)
    count = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            count += sum(block for i in range(0, len(chunk), block) if chunk[i:i + block] != zero)
    return count


def image_usage(clients, image_id, workdir):
    """Glance's size of the image, the bytes its root filesystem uses, and its non-zero bytes
    (what a sparse or compressed copy needs), from a downloaded copy mounted read-only."""
    path = workdir / f"{image_id}.raw"
    mnt = workdir / f"{image_id}.mnt"
    stored = glance.show(clients, image_id)
    glance.download(clients, image_id, str(path))
    if stored["disk_format"] != "raw":
        # a qcow2 (the base, hence the snapshots, are qcow2): its raw disk is what a loop opens
        converted = path.with_suffix(".converted")
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(converted)], check=True)
        converted.replace(path)
    try:
        loop = disk.attach_loop(path, read_only=True)
        try:
            disk.mount_root(loop, mnt)
            used, _ = disk.filesystem_usage(mnt)
        finally:
            disk.unmount_root(loop, mnt)
            disk.detach_loops_of(path)
        return {"size": stored["size"], "used": used, "nonzero": nonzero_bytes(path)}
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- cleanup
def mine(items, prefix, attr="name"):
    return [i for i in items if (getattr(i, attr, None) or "").startswith(prefix)]


def clean_packer(clients, prefix, keypairs_before):
    """Delete whatever Packer's runs left: servers, volumes and images named ``prefix``*,
    and temporary key pairs packer_* that appeared during the bench."""
    for server in mine(clients.nova.servers.list(), prefix):
        with contextlib.suppress(nova_exc.NotFound):
            server.delete()
    deadline = time.monotonic() + 300
    while mine(clients.nova.servers.list(), prefix) and time.monotonic() < deadline:
        time.sleep(1)
    for volume in mine(clients.cinder.volumes.list(), prefix):
        with contextlib.suppress(cinder_exc.NotFound):
            clients.cinder.volumes.delete(volume)
    for image in glance.find_images(clients, owner=clients.project_id, active_only=False):
        if (image.get("name") or "").startswith(prefix):
            glance.delete(clients, image["id"], force=True)
    for kp in clients.nova.keypairs.list():
        if kp.name.startswith("packer_") and kp.name not in keypairs_before:
            with contextlib.suppress(nova_exc.NotFound):
                clients.nova.keypairs.delete(kp.name)
    while mine(clients.cinder.volumes.list(), prefix) and time.monotonic() < deadline:
        time.sleep(1)


# ----------------------------------------------------------------------------- the bench
def median(values):
    return statistics.median(values) if values else float("nan")


def measured(proxy, fn):
    """(seconds, requests by (service, method, path, status), fn's result, global request id)."""
    proxy.take()
    started = time.monotonic()
    result = fn()
    seconds = time.monotonic() - started
    phase, counts = proxy.take()
    return seconds, counts, result, phase


def internal_requests(client_counts):
    """Requests the services received that carry a phase's global request id, less the
    tool's own (which carry it too): {phase: Counter(service)} from {phase: client counts}.
    None when the local cloud writes no access logs (one started before they were added)."""
    logs = sorted(cli.LOGS.glob("*.access.log"))
    if not logs:
        return None
    wanted = set(client_counts)
    seen = {phase: collections.Counter() for phase in client_counts}
    for log in logs:
        service = log.name.split(".")[0].removesuffix("-api")
        with open(log, errors="replace") as f:
            for line in f:
                phase = line.rsplit(None, 1)[-1]
                if phase in wanted:
                    seen[phase][service] += 1
    return {phase: seen[phase] - by_service(counts) for phase, counts in client_counts.items()}


def fmt_requests(counts):
    per = by_service(counts)
    return f"{sum(per.values())} (" + ", ".join(f"{s} {n}" for s, n in per.most_common()) + ")"


def test_packer_figures(request, salt_master, salt_run, api_proxy, cloud_entry, flavours, base_image,
                        localcloud, tmp_path):
    if not shutil.which("packer"):
        pytest.fail("packer is not installed: apt-get install -y --no-install-recommends packer")
    version = subprocess.run(["packer", "version"], capture_output=True, text=True).stdout.split()[1]
    rounds = ROUNDS
    clients = connect(profile={"cloud": "localcloud", "clouds_yaml": str(localcloud.clouds_yaml)})
    prefix = f"bench-packer-{uuid.uuid4().hex[:8]}"
    keypairs_before = {kp.name for kp in clients.nova.keypairs.list()}
    user_data = tmp_path / "user-data"
    user_data.write_text(packer_user_data(flavours["amitest"]))
    env = packer_env(cloud_entry, api_proxy, tmp_path)
    wait = f"{sys.executable} {Path(__file__).resolve()} --wait-console {{}} {localcloud.clouds_yaml}"
    results = collections.defaultdict(list)   # what -> [(seconds, counts, extra)]
    sizes = {}
    volume_missing = volume_strategy()
    if volume_missing is None:
        request.getfixturevalue("builder_image")  # what the tests' volume flavour builds with

    def packer(builder, name, instance):
        variables = {"source_image": base_image["id"], "flavor": flavours["amitest"]["flavor"],
                     "image_name": name, "instance_name": instance, "volume_name": instance,
                     "volume_size": "1", "user_data_file": str(user_data),
                     "wait_command": wait.format(instance)}
        seconds, counts, (_, status, output), phase = measured(
            api_proxy, lambda: run_packer(builder, variables, env, tmp_path))
        print(f"packer {builder} {instance}: {seconds:.1f} s, status {status}, {fmt_requests(counts)}")
        if status:
            print(output[-3000:])
        return seconds, counts, {"status": status, "error": packer_error(output, api_proxy) if status else None,
                                 "wait": wait_requests(output), "phase": phase}

    builds = Path(salt_master.config["cachedir"]) / "ami" / "builds"

    def ours(flavour):
        def build():
            try:
                orchestrate(salt_run, flavour)
            except AssertionError:  # the orchestration failed: a figure, not the bench's end
                return failed_step(builds, flavour)
        seconds, counts, error, phase = measured(api_proxy, build)
        print(f"ours {flavour}: {seconds:.1f} s, {fmt_requests(counts)}" + (f", FAILED: {error}" if error else ""))
        return seconds, counts, {"phase": phase, "status": 1 if error else 0, "error": error}

    try:
        for r in range(rounds):
            provenance.prune(clients, FLAVOUR, keep=0, force=True)
            results["ours full"].append(ours(FLAVOUR))
            promoted = provenance.find_promoted(clients, FLAVOUR)
            built = promoted[0]["id"] if promoted else None
            if built:
                manifest = builds / f"{promoted[0]['ami_build']}.json"
                results["ours full"][-1][2]["steps"] = {s["name"]: s["seconds"]
                                                        for s in json.loads(manifest.read_text())["steps"]}
                results["ours rebuild"].append(ours(FLAVOUR))
                # others editing this tree between the two builds change the fingerprint (salt-ami's
                # settings, the SLS): then the rebuild built, and it is not counted as one
                if provenance.find_promoted(clients, FLAVOUR)[0]["id"] != built:
                    print("the rebuild was not a no-op: the inputs changed in between; not counted")
                    results["ours rebuild"][-1][2]["status"] = "built again"

            provenance.prune(clients, NOVALIDATE_FLAVOUR, keep=0, force=True)
            results["ours full, no validation"].append(ours(NOVALIDATE_FLAVOUR))
            promoted = provenance.find_promoted(clients, NOVALIDATE_FLAVOUR)
            if promoted:
                manifest = builds / f"{promoted[0]['ami_build']}.json"
                results["ours full, no validation"][-1][2]["steps"] = {
                    s["name"]: s["seconds"] for s in json.loads(manifest.read_text())["steps"]}

            name = f"{prefix}-{r}"
            results["packer full"].append(packer("createimage", name, f"{prefix}-{r}-a"))
            # Packer has no notion of unchanged inputs: the same template again builds again
            results["packer rebuild"].append(packer("createimage", name, f"{prefix}-{r}-b"))
            results["packer volume"].append(packer("volume", f"{prefix}-{r}-vol", f"{prefix}-{r}-v"))
            if volume_missing is None:
                provenance.prune(clients, VOLUME_FLAVOUR, keep=0, force=True)
                results["ours volume"].append(ours(VOLUME_FLAVOUR))
            # the first image each tool built
            if built and "ours" not in sizes:
                sizes["ours"] = image_usage(clients, built, tmp_path)
            packer_images = [i for i in glance.find_images(clients, owner=clients.project_id) if i.get("name") == name]
            if packer_images and "packer" not in sizes:
                sizes["packer"] = image_usage(clients, packer_images[0]["id"], tmp_path)
            clean_packer(clients, prefix, keypairs_before)
    finally:
        # the services close idle keep-alive connections; a reset here must not skip the cleanup
        for attempt in range(3):
            try:
                clean_packer(clients, prefix, keypairs_before)
                for f in (FLAVOUR, NOVALIDATE_FLAVOUR, VOLUME_FLAVOUR):
                    provenance.prune(clients, f, keep=0, force=True)
                break
            except AmiError as e:
                print(f"cleanup failed ({e}); again")
                time.sleep(2)
        ours_prefixes = [FLAVOUR] + [f"ami-{what}-{f}" for what in ("candidate", "builder", "validator")
                                     for f in (FLAVOUR, NOVALIDATE_FLAVOUR)]
        left = [x for p in [prefix, *ours_prefixes] for x in leftovers(clients, p)]
        assert left == [], f"the bench left {left}"

    time.sleep(5)  # what services still do for the last phase (deleting a server) reaches their logs
    internal = internal_requests({x[2]["phase"]: x[1] for runs in results.values() for x in runs})
    report(results, sizes, rounds, version, volume_missing, internal)


def revision():
    """The commit this project's side ran from, and whether the tree had changes on top."""
    return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                          text=True).stdout.strip() or "unknown"


def report(results, sizes, rounds, version, volume_missing, internal):
    def ok(what):
        return [x for x in results[what] if not x[2].get("status")]

    def med(what):
        runs = ok(what)
        return (median([s for s, _, _ in runs]), median([sum(c.values()) for _, c, _ in runs]), runs)

    rows = []
    for label, ours_key, packer_key in (("full build, validation off (`validate: false`)", "ours full, no validation",
                                         "packer full"),
                                        ("full build, with validation (a second boot)", "ours full", "packer full"),
                                        ("rebuild, inputs unchanged", "ours rebuild", "packer rebuild")):
        (os_, oreq, oruns), (ps, preq, pruns) = med(ours_key), med(packer_key)
        rows.append(f"| {label} | {os_:.1f} s | {ps:.1f} s | **{os_ / ps:.2f}×** | {oreq:.0f} | {preq:.0f} | "
                    f"**{oreq / preq:.2f}×** | {len(oruns)}/{len(results[ours_key])}, "
                    f"{len(pruns)}/{len(results[packer_key])} |")
    body = (f"Packer {version} (Debian's package, OpenStack builder built in) and this project build the "
            f"flavour `amitest` (ours as `{FLAVOUR}`, which extends it) from the same base image (the local "
            f"cloud's 1 GiB raw Debian 12 with salt) on flavor localcloud.small, alternately, {rounds} rounds; "
            f"medians; this project at `{revision()}`. Requests are the tool's own API requests, counted by a "
            "proxy in front of every API (requests between services are counted apart, below).\n\n"
            "| what | this project | Packer | time, ours / Packer | requests, ours | requests, Packer "
            "| requests, ours / Packer | runs that succeeded (ours, Packer) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---|\n"
            + "\n".join(rows) + "\n")
    failures = [(what, x[2]["error"] or x[2]["status"]) for what in ("ours full", "ours full, no validation",
                                                                     "ours rebuild", "packer full", "packer rebuild")
                for x in results[what]
                if x[2].get("status")]
    if failures:
        body += "\nRuns left out of the medians:\n\n" + "".join(
            f"- {what}: {' '.join(str(why).split())[-400:]}\n" for what, why in failures)
    steps = [x[2]["steps"] for x in ok("ours full") if "steps" in x[2]]
    if steps:
        body += ("\nOf this project's full build, median seconds by step: "
                 + ", ".join(f"{n} {median([s.get(n, 0) for s in steps]):.1f}" for n in steps[0])
                 + ".\n")
    steps = [x[2]["steps"] for x in ok("ours full, no validation") if "steps" in x[2]]
    if steps:
        body += ("\nWith validation off, median seconds by step: "
                 + ", ".join(f"{n} {median([s.get(n, 0) for s in steps]):.1f}" for n in steps[0]) + ".\n")
    body += "\nRequests by service (median of each service's count):\n\n"
    for what in ("ours full", "ours full, no validation", "ours rebuild", "packer full", "packer rebuild"):
        per = [by_service(c) for _, c, _ in ok(what)]
        services = sorted({s for p in per for s in p})
        body += f"- {what}: " + ", ".join(f"{s} {median([p[s] for p in per]):.0f}" for s in services) + "\n"
    if internal is None:
        body += ("\nRequests between services: not measured (this local cloud was started before it wrote "
                 "access logs; the next `localcloud up` does).\n")
    else:
        body += ("\nRequests the services made to each other because of the tool's requests (access logs, by "
                 "the global request id the proxy gives every request; token validations carry none and are "
                 "not included), median:\n\n")
        for what in ("ours full", "ours full, no validation", "ours rebuild", "packer full", "packer rebuild",
                     "packer volume"):
            per = [internal[x[2]["phase"]] for x in results[what]]
            services = sorted({s for p in per for s in p})
            body += (f"- {what}: {median([sum(p.values()) for p in per]):.0f} ("
                     + ", ".join(f"{s} {median([p[s] for p in per]):.0f}" for s in services) + ")\n")
    waits = [x[2]["wait"] for x in ok("packer full") + ok("packer rebuild")]
    body += (f"\nNot counted for Packer: the bench's wait for salt-call (console polls every {WAIT_INTERVAL:g} s "
             f"through nova, median {median(waits):.0f} requests per build).\n")

    vol = results["packer volume"]
    body += "\n**Volume path** (`use_blockstorage_volume: true`): "
    if ok("packer volume"):
        s, req, _ = med("packer volume")
        body += f"Packer {s:.1f} s, {req:.0f} requests ({len(ok('packer volume'))}/{len(vol)} runs succeeded). "
    failed = [x for x in vol if x[2].get("status")]
    if failed:
        body += (f"Packer failed in {len(failed)} of {len(vol)} runs, after a median "
                 f"{median([x[0] for x in failed]):.1f} s "
                 f"and {median([sum(x[1].values()) for x in failed]):.0f} requests, with: `{failed[-1][2]['error']}`. "
                 "Packer 1.6.6 detaches the volume through cinder itself (`os-detach`), which a current cinder "
                 "refuses for a volume nova attached (OSSA-2023-003); its later plugin deletes the server "
                 "instead. Packer's own cleanup then deleted its server, volume and key pair. ")
    ours_vol = results["ours volume"]
    if volume_missing:
        body += f"This project's `volume` strategy does not exist yet (`{volume_missing}`), so there is no ratio."
    elif ok("ours volume"):
        s, req, runs = med("ours volume")
        body += (f"This project's `volume` strategy (flavour `{VOLUME_FLAVOUR}`, extending the tests' "
                 f"`amitest-volume`): {s:.1f} s, {req:.0f} requests ({len(runs)}/{len(ours_vol)} runs succeeded).")
    if [x for x in ours_vol if x[2].get("status")]:
        body += (f" This project's `volume` strategy failed in {len(ours_vol) - len(ok('ours volume'))} of "
                 f"{len(ours_vol)} runs, with: `{[x for x in ours_vol if x[2].get('status')][-1][2]['error']}`.")
    body += "\n\n" + WHAT_EACH_DOES
    write_section("packer", "Against Packer", body, command="pytest bench/packer.py")

    labels = {"ours": "this project (`snapshot` strategy)", "packer": "Packer, createImage path"}
    rows = "".join(f"| {labels[what]} | {u['size'] / 2**20:.0f} MiB | {u['used'] / 2**20:.0f} MiB | "
                   f"{u['nonzero'] / 2**20:.0f} MiB | {u['size'] / u['used']:.1f}× |\n" for what, u in sizes.items())
    write_section("image_size", "Image size against bytes used", (
        "The first image of a full build of `amitest` by each tool in the Packer benchmark, downloaded and its "
        "root filesystem mounted read-only: Glance's size, the bytes the filesystem uses (statvfs), and the "
        "bytes that are not zero (4 KiB blocks; what a sparse or compressed copy needs).\n\n"
        "| image | size in Glance | used in its filesystem | non-zero | size / used |\n"
        "|---|---:|---:|---:|---:|\n" + rows + "\n"
        "Both are raw images of the builder's whole disk (the base image's 1 GiB), so Glance stores the disk's "
        "size whatever the filesystem holds."), command="pytest bench/packer.py")


WHAT_EACH_DOES = """What each tool does that the other does not, inside these times:

- This project: checks the flavour and computes a fingerprint of its inputs, and does nothing when a
  promoted image has it (hence the rebuild); boots the builder as a minion of the master (its key made and
  accepted on the master) and applies the SLS from the master; scrubs the builder (host keys, machine-id,
  salt and cloud-init state, logs, histories, then fstrim); snapshots under a candidate name with
  provenance properties and the package manifest's hash; validates by booting an instance of the new
  image and re-applying the SLS with no changes; promotes (final name, tags) and prunes older images.
- Packer: makes and deletes a temporary key pair even with `communicator: none`; its provisioning here is
  the user-data (write the SLS and pillar, `salt-call --local`), so the SLS, pillar, salt's cache and the
  minion id stay in its image; no scrub, no validation, no up-to-date check (a rebuild is a full build
  and leaves a second image of the same name); it polls every 2 s."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wait-console", nargs=2, metavar=("INSTANCE_NAME", "CLOUDS_YAML"), required=True)
    args = ap.parse_args()
    sys.exit(wait_console(*args.wait_console))


if __name__ == "__main__":
    main()
