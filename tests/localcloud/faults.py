"""Making the local cloud fail on request, for fault tests.

Two ways, both limited to the test that asks, since other sessions share the cloud:

- ``injected(point, match, action)``: a fault inside a test-only driver (drivers/faultfile.py
  lists the points and actions: a spawn that fails or hangs, user-data that never runs, a
  snapshot that fails or hangs, an attach that fails, cinder create or image copy errors),
  for resources whose name matches ``match``; the drivers read it at the moment they act.
- ``FaultProxy(upstream)``: an HTTP proxy on its own port in front of one API. Only a client
  pointed at it (an endpoint override, or an auth_url for keystone) goes through it; rules
  make it answer a status (5xx, 409), hang, or cut a request body after some bytes.
"""
import contextlib
import http.client
import http.server
import json
import os
import re
import threading
import urllib.parse
import uuid
from pathlib import Path

from . import cli
from .drivers import faultfile

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}
CHUNK = 64 * 1024
HANG_SECONDS = 600


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


DRIVER_OF = {"nova-compute": "nova_chroot.py", "cinder-volume": "cinder_file.py"}


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
        changed = max((cli.HERE / "drivers" / f).stat().st_mtime for f in (driver, "faultfile.py"))
        if started < changed:
            stale.append(service)
    return stale


class Rule:
    """What the proxy does to requests matching ``method`` and the regex ``path``: only the
    ``nth`` match (1-based) or every one. ``status``: answer it (after ``after_bytes`` of the
    body reached the service, when given); ``hang``: never answer; ``cut``: close the
    connection after ``after_bytes`` of the body, with no answer."""

    def __init__(self, action, method, path, status=None, nth=None, after_bytes=None):
        self.action, self.method, self.path = action, method.upper(), re.compile(path)
        self.status, self.nth, self.after_bytes = status, nth, after_bytes
        self.matches = 0
        self.fired = 0

    def fires(self, method, path):
        if method != self.method or not self.path.search(path):
            return False
        self.matches += 1
        if self.nth is None or self.matches == self.nth:
            self.fired += 1
            return True
        return False


class FaultProxy:
    """A transparent HTTP proxy to ``upstream`` (scheme://host:port) on a free loopback port;
    ``url_for(endpoint)`` is an endpoint of the upstream service as seen through it."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.rules = []
        self.requests = []     # (method, path, what happened), for the test to look at
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
    def answer(self, method, path, status, nth=None, after_bytes=None):
        return self._add(Rule("status", method, path, status=status, nth=nth, after_bytes=after_bytes))

    def hang(self, method, path, nth=None):
        return self._add(Rule("hang", method, path, nth=nth))

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
        rule = self._rule_for(method, path)
        self.requests.append((method, path, rule.action if rule else "forwarded"))
        h.close_connection = True
        if rule and rule.action == "hang":
            self._stop.wait(HANG_SECONDS)
            return
        body = self._body(h)
        if rule and rule.after_bytes is None:      # refuse at once
            for _ in body:
                pass
            return self._send_error(h, rule.status)
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
                if rule and sent + len(data) >= rule.after_bytes:
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
            self._relay(h, conn.getresponse(), method)
        finally:
            conn.close()

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
    def _relay(h, resp, method):
        h.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and not (k.lower() == "content-length" and resp.chunked):
                h.send_header(k, v)
        h.send_header("Connection", "close")
        h.end_headers()
        if method != "HEAD":
            for data in iter(lambda: resp.read(CHUNK), b""):
                h.wfile.write(data)

    @staticmethod
    def _send_error(h, status):
        reason = http.client.responses.get(status, "Error")
        body = json.dumps({"error": {"code": status, "title": reason,
                                     "message": f"injected by the fault proxy: {status} {reason}"}}).encode()
        h.send_response_only(status, reason)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)
