"""saltami.cloud.api's retries and create_once, and saltami.cloud.auth's microversion
picking. Pure logic: the keystoneauth session runs over a fake transport (a requests adapter
that answers from a list), sleeps are recorded instead of slept, and the clients are fakes."""
import email.utils
import time

import pytest
import requests
import urllib3
from keystoneauth1 import exceptions as ks_exc
from novaclient import exceptions as nova_exc

from saltami.cloud import api, auth
from saltami.errors import CloudError

URL = "http://cloud.example:8774/v2.1"


@pytest.fixture
def slept(monkeypatch):
    waits = []
    monkeypatch.setattr(api.time, "sleep", waits.append)
    return waits


# ----------------------------------------------------------------------------- the session
class Transport(requests.adapters.HTTPAdapter):
    """Answers each request with the next of ``answers``: a status (int), (status, headers),
    or an exception to raise; records (method, url) of each request."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.sent = list(answers), []

    def send(self, request, **kwargs):
        self.sent.append((request.method, request.url))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            answer.request = request     # as requests' own adapter raises them
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        resp = requests.Response()
        resp.status_code, resp.url, resp.request = status, request.url, request
        resp.headers.update(headers)
        resp._content = b"{}"
        return resp


def session(*answers, region=None):
    transport = Transport(answers)
    http = requests.Session()
    http.mount("http://", transport)
    return api.Session(session=http, region=region), transport


def reset():
    return requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))


def refused():
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, URL, urllib3.exceptions.NewConnectionError(None, "Connection refused")))


def test_a_get_is_repeated_after_503_502_and_504_with_growing_waits(slept):
    s, t = session(503, 502, 504, 200)
    assert s.get(URL).status_code == 200
    assert len(t.sent) == 4 and slept == [1.0, 2.0, 4.0]


def test_retry_after_is_honoured_in_seconds_and_as_a_date(slept):
    s, _ = session((429, {"Retry-After": "3"}), (503, {"Retry-After": "0"}), 200)
    assert s.get(URL).status_code == 200
    assert slept == [3.0, 0.0]
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < api.retry_after(when) <= 20
    assert api.retry_after("soon") is None and api.retry_after(None) is None


def test_a_retry_after_beyond_the_limit_fails_at_once(slept):
    s, t = session((429, {"Retry-After": str(int(api.RETRY_AFTER_MAX) + 1)}), 200)
    with pytest.raises(ks_exc.HttpError) as e:
        s.get(URL)
    assert e.value.http_status == 429 and len(t.sent) == 1 and slept == []


def test_the_retries_end_and_the_last_answer_is_the_error(slept):
    s, t = session(*[503] * (api.DEFAULT_RETRIES + 1), 200)
    with pytest.raises(ks_exc.HttpError) as e:
        s.get(URL)
    assert e.value.http_status == 503 and len(t.sent) == api.DEFAULT_RETRIES + 1
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_create_is_repeated_only_after_what_says_it_was_not_performed(slept):
    s, t = session(503, (429, {"Retry-After": "1"}), 502)
    resp = s.post(URL + "/servers", json={"server": {"name": "x"}}, raise_exc=False)
    assert resp.status_code == 502 and len(t.sent) == 3 and slept == [1.0, 1.0]


def test_a_create_whose_connection_broke_is_not_repeated(slept):
    s, t = session(200, reset())
    s.get(URL)
    with pytest.raises(ks_exc.ConnectFailure):
        s.post(URL + "/servers", json={"server": {"name": "x"}})
    assert len(t.sent) == 2 and slept == []


def test_safe_requests_are_repeated_after_a_reset_to_a_host_that_answered(slept):
    s, t = session(200, reset(), 204, reset(), 200)
    s.get(URL)
    assert s.delete(URL + "/servers/1").status_code == 204
    # a token request and a read-only action are safe to repeat too
    assert s.post(URL + "/servers/1/action", json={"os-getConsoleOutput": {}}).status_code == 200
    assert len(t.sent) == 5 and slept == [1.0, 1.0]


def test_a_host_that_never_answered_is_not_waited_for(slept):
    s, t = session(refused(), 200)
    with pytest.raises(ks_exc.ConnectFailure):
        s.get(URL)
    assert len(t.sent) == 1 and slept == []


def test_no_answer_within_the_timeout_is_not_repeated(slept):
    s, t = session(200, requests.exceptions.ReadTimeout("read timed out"), 200)
    s.get(URL)
    with pytest.raises(ks_exc.ConnectTimeout):
        s.get(URL + "/flavors")
    assert len(t.sent) == 2 and slept == []


def test_a_streamed_body_is_never_sent_twice(slept):
    s, t = session(503, 204)
    resp = s.put(URL.replace(":8774/v2.1", ":9292") + "/v2/images/1/file", data=iter([b"x" * 10]), raise_exc=False)
    assert resp.status_code == 503 and len(t.sent) == 1 and slept == []


class Region:
    """What RetryPolicy.of reads of an openstacksdk CloudRegion: clouds.yaml's keys, a
    service's own first."""

    def __init__(self, **config):
        self.config = config

    def _get(self, key, service_type):
        return self.config.get(f"{service_type}_{key}", self.config.get(key))

    def get_connect_retries(self, st):
        return self._get("connect_retries", st)

    def get_status_code_retries(self, st):
        return self._get("status_code_retries", st)

    def get_retriable_status_codes(self, st):
        return self._get("retriable_status_codes", st)

    def get_connect_retry_delay(self, st):
        return self._get("connect_retry_delay", st)

    def get_status_code_retry_delay(self, st):
        return self._get("status_code_retry_delay", st)


def test_clouds_yaml_sets_the_retries_per_service(slept):
    region = Region(status_code_retries=1, compute_status_code_retries=3, status_code_retry_delay=0.5,
                    retriable_status_codes=[500, 503])
    s, t = session(500, 500, 500, 200, 500, 500, region=region)
    assert s.get("/servers", endpoint_filter={"service_type": "compute"}, endpoint_override=URL).status_code == 200
    assert slept == [0.5, 0.5, 0.5]
    with pytest.raises(ks_exc.HttpError):
        s.get("/v2/images", endpoint_filter={"service_type": "image"}, endpoint_override=URL)
    assert slept == [0.5] * 4 and len(t.sent) == 6


@pytest.mark.parametrize("method,url,body,safe", [
    ("GET", URL, None, True), ("PUT", URL, None, True), ("DELETE", URL, None, True),
    ("POST", "http://keystone/v3/auth/tokens", {"auth": {}}, True),
    ("POST", URL + "/servers/1/action", {"os-getConsoleOutput": {"length": 10}}, True),
    ("POST", URL + "/servers/1/action", {"createImage": {"name": "x"}}, False),
    ("POST", URL + "/servers", {"server": {}}, False), ("PATCH", URL, None, False),
])
def test_what_is_safe_to_repeat(method, url, body, safe):
    assert api.safe_to_repeat(method, url, body) is safe


# ----------------------------------------------------------------------------- create_once
def lost(status):
    return nova_exc.ClientException(status, f"answer replaced ({status})")


def test_a_create_performed_whose_answer_was_lost_is_found_and_not_asked_again(slept):
    asked = []

    def create():
        asked.append(1)
        raise lost(502)

    assert api.create_once("boot 'x'", create, lambda: ["server-1"]) == "server-1"
    assert asked == [1]


def test_a_create_not_made_is_asked_again_once_two_lookups_found_nothing(slept):
    answers = [lost(504), "server-2"]
    lookups = []

    def create():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def made():
        lookups.append(1)
        return []

    assert api.create_once("boot 'x'", create, made) == "server-2"
    assert len(lookups) == 2 and slept == [0, api.LOOKUP_SETTLE, 2.0]


def test_a_500_is_looked_up_but_not_asked_again(slept):
    with pytest.raises(CloudError) as e:
        api.create_once("boot 'x'", lambda: (_ for _ in ()).throw(lost(500)), lambda: [])
    assert str(e.value) == "boot 'x': answer replaced (500) (HTTP 500) (and it was not made)"
    assert e.value.http_status == 500


def test_a_refused_create_is_not_looked_up(slept):
    def made():
        raise AssertionError("looked up")

    with pytest.raises(CloudError, match="HTTP 409"):
        api.create_once("boot 'x'", lambda: (_ for _ in ()).throw(lost(409)), made)


def test_a_failing_lookup_says_the_resource_may_exist(slept):
    def made():
        raise lost(503)

    with pytest.raises(CloudError, match="may have been made, and looking for it failed too"):
        api.create_once("boot 'x'", lambda: (_ for _ in ()).throw(lost(502)), made)


def test_a_broken_connection_counts_as_lost_and_a_timeout_as_unknown():
    def failure(cause):
        try:
            raise cause
        except Exception:
            try:
                raise ks_exc.ConnectFailure("broken")
            except ks_exc.ConnectFailure as e:
                return e

    assert api.outcome_unknown(failure(reset())) == "retry"
    assert api.outcome_unknown(failure(refused())) is None
    assert api.outcome_unknown(failure(requests.exceptions.ReadTimeout())) == "look"


# ----------------------------------------------------------------------------- microversions
NOVACLIENT = ((2, 1), (2, 96), "python-novaclient")


@pytest.mark.parametrize("offered,picked", [
    (((2, 1), (2, 104)), (2, 96)),   # newer than the client: the client's newest
    (((2, 1), (2, 95)), (2, 95)),    # 2023.2
    (((2, 1), (2, 90)), (2, 90)),    # Zed
    (None, (2, 1)),                  # no microversions: their first
])
def test_the_highest_both_speak_is_picked(offered, picked):
    assert auth.pick_microversion("compute", offered, NOVACLIENT, URL) == picked


def test_a_pinned_microversion_is_used_if_offered():
    assert auth.pick_microversion("compute", ((2, 1), (2, 95)), NOVACLIENT, URL, pinned=(2, 60)) == (2, 60)
    with pytest.raises(CloudError, match=r"compute_default_microversion 2.99: the nova \(compute\) API at "):
        auth.pick_microversion("compute", ((2, 1), (2, 95)), NOVACLIENT, URL, pinned=(2, 99))


def test_no_common_microversion_names_both_ranges():
    with pytest.raises(CloudError) as e:
        auth.pick_microversion("compute", ((2, 97), (2, 104)), NOVACLIENT, URL)
    assert str(e.value) == (f"the nova (compute) API at {URL} offers microversions 2.97 to 2.104; "
                            "python-novaclient speaks 2.1 to 2.96, none of them")


class OldCloud(auth.Clients):
    """Clients of a cloud whose services offer the given ranges (no session, no requests)."""

    def __init__(self, **offered):
        self.region = type("Region", (), {"get_default_microversion": lambda self, st: None})()
        self._offered = {st.replace("_", "-"): (f"http://{st}.example/", r) for st, r in offered.items()}
        self._microversions = {}


def test_a_feature_newer_than_the_cloud_names_itself_and_the_version():
    clients = OldCloud(compute=((2, 1), (2, 36)), block_storage=((3, 0), (3, 2)))
    with pytest.raises(CloudError) as e:
        clients.require("boot-networks")
    assert str(e.value) == ("booting a server with networks 'none' or 'auto' needs compute API microversion "
                            "2.37 or later: the nova (compute) API at http://compute.example/ offers "
                            "microversions up to 2.36")
    clients.require("upload-to-image")
    assert not clients.supports("user-messages") and clients.supports("upload-to-image")


def test_every_feature_is_within_what_the_client_libraries_speak():
    for service_type, needs, _what in auth.FEATURES.values():
        low, high, _library = auth.client_range(service_type)
        assert low < needs <= high
