"""The transport under the three clients, and what they raise turned into the library's errors
with the service's words.

Retries (README, "Which cloud"): the keystoneauth session repeats a request after a failure
that says the service did not act on it (429, 503, a connection that was never made), and,
when the request is safe to repeat (GET, HEAD, OPTIONS, PUT, DELETE, a token request, a
read-only server action) and its body can be sent again, also after 502, 504 or a connection
that broke before the answer came. It waits as long as the service's Retry-After says (at
most RETRY_AFTER_MAX), else 1, 2, 4 ... seconds (clouds.yaml's ``connect_retry_delay`` and
``status_code_retry_delay`` fix the wait), at most ``connect_retries`` and
``status_code_retries`` times (clouds.yaml's keys, prefixed by a service type for one service:
``compute_status_code_retries``; DEFAULT_RETRIES each unless set); ``retriable_status_codes``
replaces the statuses. A request that got no answer within ``api_timeout`` is not repeated,
nor one whose connection failed to a host that never answered this session (a wrong
address fails at once; a service restarting in the middle of a build is waited for).

A create is never repeated blindly: ``create_once`` looks up what a create whose answer was
lost may have made, carries on with it if it was made, and asks again only once it is known
not to exist.
"""
import contextlib
import email.utils
import logging
import time
import urllib.parse

import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session

from ..errors import CloudError

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 5
RETRIABLE_STATUSES = (429, 502, 503, 504)
# what a service (or the load balancer in front of it) answers without acting on the request
NOT_PERFORMED = frozenset({429, 503})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# server actions that only read
READ_ONLY_ACTIONS = frozenset({"os-getConsoleOutput"})
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
# a longer Retry-After (a rate limit by the hour) fails the request rather than stalling a build
RETRY_AFTER_MAX = 60.0
# keystoneauth's own retries, which this session replaces
_KSA_RETRY_ARGS = ("connect_retries", "status_code_retries", "retriable_status_codes",
                   "connect_retry_delay", "status_code_retry_delay")

CREATE_ATTEMPTS = 3
# how long a create whose connection broke may still take to show up in a listing
LOOKUP_SETTLE = 2.0


# ------------------------------------------------------------------------------- retries
def safe_to_repeat(method, url, json_body=None):
    """Whether doing the request twice does what doing it once does."""
    if method in IDEMPOTENT:
        return True
    if method != "POST":
        return False
    if str(url).rstrip("/").endswith("/auth/tokens"):
        return True
    return isinstance(json_body, dict) and len(json_body) == 1 and next(iter(json_body)) in READ_ONLY_ACTIONS


def replayable(data):
    """Whether a request body can be sent again: a file or a stream is consumed by sending."""
    return data is None or isinstance(data, (bytes, str))


def connection_failure(exc):
    """'unsent' (refused, no route, a connect timeout: the service never saw the request),
    'timeout' (no answer within api_timeout), 'lost' (the connection broke once the request
    was sent), or None (TLS and the like: repeating would not help)."""
    if isinstance(exc, ks_exc.SSLError):
        return None
    cause = exc.__context__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return "unsent"
    if isinstance(cause, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(cause, requests.exceptions.ConnectionError):
        import urllib3.exceptions
        reason = cause.args[0] if cause.args else None
        if isinstance(getattr(reason, "reason", reason), urllib3.exceptions.NewConnectionError):
            return "unsent"
        return "lost"
    return "lost" if isinstance(exc, ks_exc.ConnectFailure) else None


def retry_after(value, now=None):
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class RetryPolicy:
    """How often and how long to wait before repeating the requests of one service."""

    def __init__(self, connect_retries=None, status_code_retries=None, retriable_status_codes=None,
                 connect_retry_delay=None, status_code_retry_delay=None):
        self.connect_retries = DEFAULT_RETRIES if connect_retries is None else connect_retries
        self.status_code_retries = DEFAULT_RETRIES if status_code_retries is None else status_code_retries
        self.statuses = frozenset(retriable_status_codes or RETRIABLE_STATUSES)
        self.connect_delay, self.status_delay = connect_retry_delay, status_code_retry_delay

    @classmethod
    def of(cls, region, service_type):
        """The policy clouds.yaml sets for a service (openstacksdk's keys and getters)."""
        return cls(region.get_connect_retries(service_type), region.get_status_code_retries(service_type),
                   region.get_retriable_status_codes(service_type),
                   region.get_connect_retry_delay(service_type),
                   region.get_status_code_retry_delay(service_type))

    @staticmethod
    def _backoff(fixed, retry):
        return fixed if fixed is not None else min(FIRST_DELAY * 2 ** retry, MAX_DELAY)

    def after_status(self, status, retry_after_header, safe, retry):
        """Seconds to wait before the ``retry``-th repeat (0-based) of a request answered
        ``status``, or None not to repeat it."""
        if status not in self.statuses or retry >= self.status_code_retries:
            return None
        if not safe and status not in NOT_PERFORMED:
            return None
        asked = retry_after(retry_after_header)
        if asked is not None:
            return asked if asked <= RETRY_AFTER_MAX else None
        return self._backoff(self.status_delay, retry)

    def after_connection_failure(self, kind, safe, retry):
        if kind is None or kind == "timeout" or retry >= self.connect_retries:
            return None
        if not safe and kind != "unsent":
            return None
        return self._backoff(self.connect_delay, retry)


class Session(ks_session.Session):
    """keystoneauth's session, repeating requests as the module doc says; ``region`` (an
    openstacksdk CloudRegion) gives clouds.yaml's retry settings."""

    def __init__(self, *args, region=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._region = region
        self._policies = {}
        self._answered = set()     # scheme://host:port that answered at least once

    def policy(self, service_type):
        if service_type not in self._policies:
            self._policies[service_type] = (RetryPolicy.of(self._region, service_type) if self._region
                                            else RetryPolicy())
        return self._policies[service_type]

    def request(self, url, method, raise_exc=True, **kwargs):
        for key in _KSA_RETRY_ARGS:
            kwargs.pop(key, None)
        method = method.upper()
        policy = self.policy((kwargs.get("endpoint_filter") or {}).get("service_type"))
        safe = safe_to_repeat(method, url, kwargs.get("json"))
        may_repeat = replayable(kwargs.get("data"))
        retries = {"status": 0, "connection": 0}
        while True:
            attempt = dict(kwargs)
            if kwargs.get("headers") is not None:
                attempt["headers"] = requests.structures.CaseInsensitiveDict(kwargs["headers"])
            try:
                resp = super().request(url, method, raise_exc=False, connect_retries=0, **attempt)
            except ks_exc.ConnectionError as e:
                delay = policy.after_connection_failure(connection_failure(e), safe, retries["connection"]) \
                    if may_repeat and _origin(getattr(e.__context__, "request", None)) in self._answered else None
                if delay is None:
                    raise
                retries["connection"] += 1
                log.warning("%s %s: %s; repeating it in %.1fs (retry %d)", method, url, e, delay,
                            retries["connection"])
            else:
                self._answered.add(_origin(resp))
                delay = policy.after_status(resp.status_code, resp.headers.get("Retry-After"), safe,
                                            retries["status"]) if may_repeat else None
                if delay is None:
                    break
                retries["status"] += 1
                log.warning("%s %s: HTTP %d; repeating it in %.1fs (retry %d)", method, resp.url,
                            resp.status_code, delay, retries["status"])
                resp.close()
            time.sleep(delay)
        if raise_exc and resp.status_code >= 400:
            raise ks_exc.from_response(resp, method, resp.url)
        return resp


def _origin(request_or_response):
    """scheme://host:port of a request or response (requests'), or None."""
    url = getattr(request_or_response, "url", None)
    return urllib.parse.urlsplit(url)._replace(path="", query="", fragment="").geturl() if url else None


# ------------------------------------------------------------------------------- errors
def _service_message(exc):
    # novaclient/cinderclient: .message and .code; glanceclient: .details and class .code;
    # keystoneauth: .message and .http_status
    msg = getattr(exc, "message", None) or getattr(exc, "details", None) or str(exc)
    code = getattr(exc, "code", None) or getattr(exc, "http_status", None)
    return f"{msg} (HTTP {code})" if code and code != "N/A" else str(msg)


def http_status(exc):
    code = getattr(exc, "code", None) or getattr(exc, "http_status", None)
    return code if isinstance(code, int) else None


def _client_errors():
    from cinderclient import exceptions as cinder_exc
    from glanceclient import exc as glance_exc
    from novaclient import exceptions as nova_exc
    return (nova_exc.ClientException, cinder_exc.ClientException, glance_exc.HTTPException,
            glance_exc.CommunicationError, ks_exc.HttpError)


def translated(what, exc):
    """The CloudError("<what>: <service message>") for an API failure, or None for anything
    else."""
    if isinstance(exc, ks_exc.ConnectionError):  # refused, timed out (api_timeout), TLS
        return CloudError(f"{what}: service unreachable or not answering: {exc}")
    if isinstance(exc, ks_exc.EndpointNotFound):
        return CloudError(f"{what}: {exc}")
    if isinstance(exc, _client_errors()):
        return CloudError(f"{what}: {_service_message(exc)}", http_status(exc))
    return None


@contextlib.contextmanager
def service_errors(what):
    """Re-raise API failures inside the block as CloudError("<what>: <service message>")."""
    try:
        yield
    except Exception as e:
        error = translated(what, e)
        if error is None:
            raise
        raise error from None


def get_or_none(what, fetch):
    """``fetch()`` with the service's errors translated, or None when it answers 404."""
    try:
        with service_errors(what):
            return fetch()
    except CloudError as e:
        if e.http_status == 404:
            return None
        raise


# ------------------------------------------------------------------------------- creates
def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def outcome_unknown(exc):
    """Whether a create that raised ``exc`` may have been made anyway: 'retry' when asking
    again is worth it once a lookup says it was not (502, 504, a connection that broke after
    the request went), 'look' when it may have been made but asking again would fail the same
    way (another 5xx, among them a 503 the session already repeated; no answer within
    api_timeout), None when it was not made (the service refused it, or never saw it)."""
    for e in _chain(exc):
        if isinstance(e, ks_exc.ConnectionError):
            kind = connection_failure(e)
            return {"lost": "retry", "timeout": "look"}.get(kind)
    status = http_status(exc)
    if status in (502, 504):
        return "retry"
    return "look" if status is not None and status >= 500 else None


def create_once(what, create, made):
    """``create()``, and what it made even when its answer was lost.

    ``made()`` lists what the create would have made that was not there before it (by the name
    and metadata the caller gave it). When the create fails with a 5xx or a broken connection,
    whatever ``made()`` finds is what the call returns; if nothing is found after LOOKUP_SETTLE,
    the create is asked again (up to CREATE_ATTEMPTS) when the failure was transient, else
    its error is raised.
    """
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return create()
        except Exception as e:
            error, unknown = translated(what, e), outcome_unknown(e)
            if error is None:
                raise
            if unknown is None:
                raise error from None
        found = _made(what, made, error)
        if found:
            if len(found) > 1:
                log.warning("%s: %d made by repeated attempts; using the first of %s", what, len(found), found)
            log.warning("%s: %s, but the service made it: carrying on with it", what, error)
            return found[0]
        if unknown != "retry" or attempt == CREATE_ATTEMPTS:
            raise CloudError(f"{error} (and it was not made)", error.http_status)
        delay = min(FIRST_DELAY * 2 ** attempt, MAX_DELAY)
        log.warning("%s: %s, and it was not made: asking again in %.0fs", what, error, delay)
        time.sleep(delay)


def _made(what, made, error):
    for wait in (0, LOOKUP_SETTLE):
        time.sleep(wait)
        try:
            with service_errors(f"{what}: looking for what it made"):
                found = made()
        except CloudError as e:
            raise CloudError(f"{error}; it may have been made, and looking for it failed too: {e}",
                             error.http_status) from None
        if found:
            return found
    return []
