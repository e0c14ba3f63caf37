"""Making the local cloud fail on request, for fault tests.

Two ways, both limited to the test that asks, since other sessions share the cloud:

- ``injected(point, match, action)``: a fault inside a test-only driver (drivers/faultfile.py
  lists the points and actions: a spawn that fails or hangs, user-data that never runs, a
  snapshot that fails or hangs, an attach that fails, cinder create or image copy errors),
  for resources whose name matches ``match``; the drivers read it at the moment they act.
- ``FaultProxy(upstream)``: an HTTP proxy on its own port in front of one API. Only a client
  pointed at it (an endpoint override, or an auth_url for keystone) goes through it; rules
  make it answer a status (5xx, 409, 429 with Retry-After), for the first N matches or the
  nth, before or after the service performed the request, hang (before it, or with
  ``held`` after it: the caller waits for the answer to a create that was made), reset the
  connection, or cut a request body after some bytes; ``cap_microversion`` makes nova or cinder behind it
  an older release (its version documents and its 406 for a newer microversion).
"""
import configparser
import contextlib
import http.client
import http.server
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from . import cli
from .drivers import faultfile

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}
CHUNK = 64 * 1024
HANG_SECONDS = 600
# the root and version roots (/, /v2.1, /v3/): where nova and cinder serve version documents
VERSION_DOCUMENT = re.compile(r"/(v\d+(\.\d+)?/?)?")
# the lowest microversion of each major API version, as nova (2.1) and cinder (3.0) have it
MIN_MICROVERSION = {2: "2.1", 3: "3.0"}


@contextlib.contextmanager
def injected(point, match, action="error", message=None):
    """A driver fault at ``point`` for resources whose name matches the regex ``match``,
    for the duration of the block."""
    if action not in faultfile.POINTS.get(point, ()):
        raise ValueError(f"no fault {action!r} at {point!r} (have: {faultfile.POINTS})")
    re.compile(match)
    path = f"{faultfile.DIR}/{uuid.uuid4().hex}.json"
    fault = {"point": point, "match": match, "action": action, "message": message or f"{point} {action}"}
    os.makedirs(faultfile.DIR, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(fault, f)
    os.replace(path + ".tmp", path)
    try:
        yield fault
    finally:
        os.unlink(path)


DRIVER_OF = {"nova-compute": ("nova_chroot.py", "nova_qemu.py", "qemu_vm.py"), "cinder-volume": ("cinder_file.py",)}


def stale_drivers():
    """The services that loaded their driver before it (or faultfile.py) last changed: their
    fault hooks may be missing until the cloud is restarted."""
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    stale = []
    for service, driver in DRIVER_OF.items():
        pid = cli.started_pids().get(service)
        # field 22 of /proc/PID/stat: start time in clock ticks after boot
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
        changed = max((cli.HERE / "drivers" / f).stat().st_mtime for f in (*driver, "faultfile.py"))
        if started < changed:
            stale.append(service)
    return stale


class Rule:
    """What the proxy does to requests matching ``method`` and the regex ``path``: only the
    ``nth`` match (1-based), the ``first`` N, or every one. ``status``: answer it (after
    ``after_bytes`` of the body reached the service, when given; with ``headers``; with
    ``performed``, once the service performed the request, in place of its answer); ``hang``:
    never answer; ``cut``: close the connection after ``after_bytes`` of the body, with no
    answer; ``reset``: reset the connection (TCP RST) with no answer, before the service
    sees the request or, with ``performed``, after it performed it."""

    def __init__(self, action, method, path, status=None, nth=None, after_bytes=None, first=None,
                 headers=None, performed=False):
        self.action, self.method, self.path = action, method.upper(), re.compile(path)
        self.status, self.nth, self.after_bytes = status, nth, after_bytes
        self.first, self.headers, self.performed = first, dict(headers or {}), performed
        self.matches = 0
        self.fired = 0

    def fires(self, method, path):
        if method != self.method or not self.path.search(path):
            return False
        self.matches += 1
        if self.nth is not None and self.matches != self.nth:
            return False
        if self.first is not None and self.matches > self.first:
            return False
        self.fired += 1
        return True


class FaultProxy:
    """A transparent HTTP proxy to ``upstream`` (scheme://host:port) on a free loopback port;
    ``url_for(endpoint)`` is an endpoint of the upstream service as seen through it."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.rules = []
        self.requests = []     # (method, path, what happened), for the test to look at
        # the same with when (time.monotonic()) and the microversion asked for, if any
        self.log = []
        self.microversion_cap = None    # (minimum, maximum) as (major, minor) tuples
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

            def _any(self):
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()          # ends the hangs
        self.server.shutdown()
        self.server.server_close()

    def url_for(self, endpoint):
        """``endpoint`` (a URL of the upstream service, as in the catalog) through the proxy."""
        parts = urllib.parse.urlsplit(endpoint)
        return urllib.parse.urlunsplit(parts._replace(scheme="http", netloc=f"127.0.0.1:{self.port}"))

    # --------------------------------------------------------------------- rules
    def answer(self, method, path, status, nth=None, after_bytes=None, first=None, headers=None,
               performed=False):
        return self._add(Rule("status", method, path, status=status, nth=nth, after_bytes=after_bytes,
                              first=first, headers=headers, performed=performed))

    def reset(self, method, path, nth=None, first=None, performed=False):
        return self._add(Rule("reset", method, path, nth=nth, first=first, performed=performed))

    def cap_microversion(self, maximum, minimum=None):
        """Behave as an older nova or cinder whose newest microversion is ``maximum`` (and
        oldest ``minimum``, default 2.1 or 3.0): version documents say so, and a request for a
        newer microversion is refused with the service's own 406."""
        top = _version(maximum)
        self.microversion_cap = (_version(minimum or MIN_MICROVERSION[top[0]]), top)
        return self

    def hang(self, method, path, nth=None):
        return self._add(Rule("hang", method, path, nth=nth))

    def held(self, method, path, nth=None):
        """The service performs the request, and its answer is held until the proxy closes:
        the caller sits between a create and knowing what it made."""
        return self._add(Rule("hang", method, path, nth=nth, performed=True))

    def cut(self, method, path, after_bytes, nth=None):
        return self._add(Rule("cut", method, path, nth=nth, after_bytes=after_bytes))

    def _add(self, rule):
        with self._lock:
            self.rules.append(rule)
        return rule

    def _rule_for(self, method, path):
        with self._lock:
            return next((r for r in self.rules if r.fires(method, path)), None)

    # --------------------------------------------------------------------- serving
    def _handle(self, h):
        method, path = h.command, h.path
        asked = _asked_microversion(h.headers)
        refused = self._refused_microversion(asked)
        rule = None if refused else self._rule_for(method, path)
        what = "refused-microversion" if refused else rule.action if rule else "forwarded"
        self.requests.append((method, path, what))
        self.log.append({"time": time.monotonic(), "method": method, "path": path, "what": what,
                         "microversion": asked})
        h.close_connection = True
        if refused:
            for _ in self._body(h):
                pass
            return self._send_error(h, 406, message=refused, fault="computeFault")
        if rule and rule.action == "hang" and not rule.performed:
            self._stop.wait(HANG_SECONDS)
            return
        if rule and rule.action == "reset" and not rule.performed:
            return self._reset(h)
        body = self._body(h)
        if rule and rule.after_bytes is None and not rule.performed:      # refuse at once
            for _ in body:
                pass
            return self._send_error(h, rule.status, rule.headers)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=HANG_SECONDS)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            chunked = "content-length" not in {k.lower() for k in headers} and \
                h.headers.get("Transfer-Encoding", "").lower() == "chunked"
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.upstream.netloc)
            for k, v in headers.items():
                conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            sent = 0
            for data in body:
                if rule and rule.after_bytes is not None and sent + len(data) >= rule.after_bytes:
                    data = data[:rule.after_bytes - sent]
                    conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                    conn.close()           # the service sees the body end short
                    if rule.action == "status":
                        self._send_error(h, rule.status)
                    return
                conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                sent += len(data)
            if chunked:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            if rule and rule.performed:        # the service did it; its answer is lost
                resp.read()
                if rule.action == "hang":
                    self._stop.wait(HANG_SECONDS)
                    return
                return self._reset(h) if rule.action == "reset" else self._send_error(h, rule.status, rule.headers)
            if self.microversion_cap and method == "GET" and VERSION_DOCUMENT.fullmatch(path.split("?")[0]):
                return self._relay_version_document(h, resp)
            self._relay(h, resp, method, self._upstream_to_proxy)
        finally:
            conn.close()

    # --------------------------------------------------------------------- an older service
    def _refused_microversion(self, asked):
        """The message of the service's 406 for a microversion newer than the cap, or None."""
        if not self.microversion_cap or asked is None or asked == "latest":
            return None
        low, high = self.microversion_cap
        if low <= _version(asked) <= high:
            return None
        return (f"Version {asked} is not supported by the API. Minimum is {_format(low)} and "
                f"maximum is {_format(high)}.")

    def _relay_version_document(self, h, resp):
        """A version document (or list of them) saying the cap, its links through the proxy."""
        body = resp.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            low, high = self.microversion_cap
            for version in [doc.get("version")] + list(doc.get("versions") or []):
                if isinstance(version, dict) and version.get("version"):
                    version["version"] = _format(min(_version(version["version"]), high))
                    version["min_version"] = _format(low)
            body = self._upstream_to_proxy(json.dumps(doc)).encode()
        h.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP | {"content-length"}:
                h.send_header(k, self._upstream_to_proxy(v))
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)

    def _upstream_to_proxy(self, text):
        """Links and redirects (Location) of the service point at the proxy, as a reverse
        proxy's do: a client that follows them stays behind it."""
        return text.replace(f"//{self.upstream.netloc}", f"//127.0.0.1:{self.port}")

    @staticmethod
    def _reset(h):
        # SO_LINGER 0: closing sends a TCP RST, as a crashed or restarted service does
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()

    @staticmethod
    def _body(h):
        """The request body, chunk by chunk, as it arrives."""
        length = h.headers.get("Content-Length")
        if length is not None:
            left = int(length)
            while left:
                data = h.rfile.read(min(CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data
        elif h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = h.rfile.read(size)
                h.rfile.readline()
                yield data

    @staticmethod
    def _relay(h, resp, method, rewrite=lambda v: v):
        h.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and not (k.lower() == "content-length" and resp.chunked):
                h.send_header(k, rewrite(v) if k.lower() == "location" else v)
        h.send_header("Connection", "close")
        h.end_headers()
        if method != "HEAD":
            for data in iter(lambda: resp.read(CHUNK), b""):
                h.wfile.write(data)

    @staticmethod
    def _send_error(h, status, headers=None, message=None, fault="error"):
        reason = http.client.responses.get(status, "Error")
        body = json.dumps({fault: {"code": status, "title": reason,
                                   "message": message or f"injected by the fault proxy: {status} {reason}"}}).encode()
        h.send_response_only(status, reason)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)


def _version(text):
    major, minor = str(text).split(".")
    return int(major), int(minor)


def _format(version):
    return f"{version[0]}.{version[1]}"


def _asked_microversion(headers):
    """The microversion a request asks for: ``OpenStack-API-Version: <service> <version>``
    (nova >= 2.27, cinder), else nova's own ``X-OpenStack-Nova-API-Version``; None if none."""
    value = headers.get("OpenStack-API-Version")
    if value and len(value.split()) == 2:
        return value.split()[1]
    return headers.get("X-OpenStack-Nova-API-Version") or None


class OwnGlance:
    """A Glance API of the test's own, configured otherwise than the cloud's, on a free
    loopback port: its own process (gunicorn, as the cloud runs Glance), config, policy and
    data directories under ``workdir``, sharing the cloud's database and keystone (images
    it makes are in the cloud's image list, their data in its own store). Reach it with the
    clouds.yaml key ``image_endpoint_override: <url>``. The cloud's Glance is left alone.

    ``policy``: rules over Glance's defaults, such as ``{"upload_image": "!"}`` (a cloud that
    allows only import); ``import_plugins``: the import flow's plugins, such as
    ``["image_conversion"]`` with ``conversion_format`` its ``output_format``; ``options``:
    {section: {key: value}} more for glance-api.conf."""

    START_TIMEOUT = 120

    def __init__(self, workdir, policy=None, import_plugins=(), conversion_format="raw", options=None):
        self.dir = Path(workdir)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        etc, data = self.dir / "etc", self.dir / "data"
        for d in (etc, data / "images", data / "staging", data / "tasks", data / "cache", data / "locks"):
            d.mkdir(parents=True, exist_ok=True)
        conf = configparser.RawConfigParser(interpolation=None, strict=False)
        conf.optionxform = str
        conf.read(cli.ETC / "glance-api.conf")     # the database and keystone of the cloud
        overrides = {
            "DEFAULT": {"log_file": str(self.dir / "glance-api.log"), "image_cache_dir": str(data / "cache"),
                        # the stage host of glance-direct: the worker that holds the staged data
                        "worker_self_reference_url": self.url},
            "fs": {"filesystem_store_datadir": f"{data / 'images'}/"},
            "os_glance_staging_store": {"filesystem_store_datadir": f"{data / 'staging'}/"},
            "os_glance_tasks_store": {"filesystem_store_datadir": f"{data / 'tasks'}/"},
            "oslo_concurrency": {"lock_path": str(data / "locks")},
            "oslo_policy": {"policy_file": str(etc / "policy.yaml")},
        }
        for section, values in {**overrides, **(options or {})}.items():
            if section != "DEFAULT" and not conf.has_section(section):
                conf.add_section(section)
            for key, value in values.items():
                conf.set(section, key, str(value))
        self._write(etc / "glance-api.conf", conf)
        plugins = configparser.RawConfigParser(interpolation=None)
        plugins["image_import_opts"] = {"image_import_plugins": json.dumps(list(import_plugins))}
        plugins["image_conversion"] = {"output_format": conversion_format}
        self._write(etc / "glance-image-import.conf", plugins)
        (etc / "policy.yaml").write_text(json.dumps(policy or {}) + "\n")
        self.etc = etc
        self.process = None

    @staticmethod
    def _write(path, conf):
        with open(path, "w") as f:
            conf.write(f)
        path.chmod(0o600)          # the cloud's service passwords are in it

    def __enter__(self):
        argv = [cli.VENV / "bin" / "gunicorn", "--no-control-socket", "-w", "1", "-k", "gthread",
                "--threads", "4", "--timeout", "600", "-b", f"127.0.0.1:{self.port}",
                "glance.wsgi.api:application"]
        log = open(self.dir / "gunicorn.log", "ab")
        self.process = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=log,
                                              env=cli.venv_env(OS_GLANCE_CONFIG_DIR=str(self.etc)),
                                              start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.START_TIMEOUT
        while not cli.http_ok(f"{self.url}/healthcheck"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the test's Glance on {self.url} did not start: "
                                   f"{(self.dir / 'gunicorn.log').read_text()[-2000:]}")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        """Stops the process by its PID (gunicorn's master stops its worker)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self):
        path = self.dir / "glance-api.log"
        return path.read_text() if path.exists() else ""
