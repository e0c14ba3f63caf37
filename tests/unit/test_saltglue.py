"""saltami.saltglue, what every loader module shares: the library's errors as Salt's
exceptions, which cloud a call uses, one session per call chain, config.get for runners, and
progress events. The session itself (keystoneauth against a real keystone) is tested in
tests/integration/test_auth.py; here auth.connect is a fake that records its calls."""
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltami import errors, saltglue
from saltami.cloud import auth


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("raised, expected", [
    (errors.InvalidArgument("no image 'debian-13' (allowed: debian-12)"), SaltInvocationError),
    (errors.NotFound("no flavor 'm1.huge'"), SaltInvocationError),
    (errors.CloudError("glance: 503 Service Unavailable", http_status=503), CommandExecutionError),
    (errors.ResourceFailed("server went to ERROR: No valid host"), CommandExecutionError),
    (errors.Timeout("volume v1 to become available: waited 60s, last status creating"), CommandExecutionError),
    (errors.AmiError("build b1 exists already"), CommandExecutionError),
])
def test_library_errors_become_salt_s_with_the_same_message(raised, expected):
    with pytest.raises(expected) as e:
        with saltglue.salt_errors():
            raise raised
    assert str(e.value) == str(raised)
    # raised "from None": Salt shows the message, not a chain of tracebacks
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_other_errors_are_not_disguised():
    with pytest.raises(ZeroDivisionError):
        with saltglue.salt_errors():
            1 / 0


# ------------------------------------------------------------------------------ which cloud
def getter(**config):
    return lambda key, default=None: config.get(key, default)


@pytest.mark.parametrize("argument, configured, expected", [
    (None, None, (None, None)),                                   # the OS_* environment
    (None, "", (None, None)),
    ("production", "staging", ("production", None)),              # the argument wins
    (None, "staging", ("staging", None)),
    (None, {"cloud": "staging", "region_name": "r2"}, (None, {"cloud": "staging", "region_name": "r2"})),
    ({"auth_type": "v3applicationcredential"}, "staging", (None, {"auth_type": "v3applicationcredential"})),
])
def test_cloud_spec(argument, configured, expected):
    config = {} if configured is None else {"ami:cloud": configured}
    assert saltglue.cloud_spec(getter(**config), argument) == expected


def test_cloud_spec_refuses_other_types():
    with pytest.raises(SaltInvocationError, match="a clouds.yaml name or a profile mapping, not list"):
        saltglue.cloud_spec(getter(), ["production"])


@pytest.fixture
def connects(monkeypatch):
    calls = []

    def connect(cloud=None, profile=None):
        calls.append((cloud, profile))
        if cloud == "bad-password":
            raise errors.CloudError("keystone: 401 The request you have made requires authentication.")
        if cloud == "no-such-cloud":
            raise errors.InvalidArgument("no cloud 'no-such-cloud' in clouds.yaml (allowed: production)")
        return object()

    monkeypatch.setattr(auth, "connect", connect)
    return calls


def test_one_session_serves_a_whole_call_chain(connects):
    context = {}
    first = saltglue.clients(context, getter(**{"ami:cloud": "production"}))
    assert saltglue.clients(context, getter(**{"ami:cloud": "production"})) is first
    assert saltglue.clients(context, getter(), "production") is first
    other = saltglue.clients(context, getter(), {"cloud": "production", "region_name": "r2"})
    assert other is not first
    assert saltglue.clients(context, getter(), {"region_name": "r2", "cloud": "production"}) is other
    assert connects == [("production", None), (None, {"cloud": "production", "region_name": "r2"})]
    # another job, another __context__: a new session
    assert saltglue.clients({}, getter(), "production") is not first


@pytest.mark.parametrize("cloud, expected", [("bad-password", CommandExecutionError),
                                             ("no-such-cloud", SaltInvocationError)])
def test_a_failed_connection_is_salt_s_error_and_not_kept(connects, cloud, expected):
    context = {}
    with pytest.raises(expected):
        saltglue.clients(context, getter(), cloud)
    assert context == {}


# ------------------------------------------------------------------------------ runners' config.get
def test_config_getter_looks_in_pillar_then_the_master_config():
    get = saltglue.config_getter({"ami": {"cloud": "from-config", "master": "10.0.0.1"}, "cachedir": "/var/cache"},
                                 {"ami": {"cloud": "from-pillar"}})
    assert get("ami:cloud") == "from-pillar"
    assert get("ami:master") == "10.0.0.1"
    assert get("cachedir") == "/var/cache"
    assert get("ami:missing") is None and get("ami:missing", "dflt") == "dflt"
    # a value that is false is still a value
    assert saltglue.config_getter({"ami": {"cloud": "c"}}, {"ami": {"cloud": ""}})("ami:cloud") == ""


# ------------------------------------------------------------------------------ progress
def test_progress_reporter_fires_its_tag():
    fired = []
    report = saltglue.progress_reporter(lambda tag, data: fired.append((tag, data)), "salt/ami/transfer/x", "x")
    report(512, 1024)
    report(0, 0)
    (tag, half), (_, empty) = fired
    assert tag == "salt/ami/transfer/x"
    assert {k: half[k] for k in ("what", "bytes", "total", "percent")} == {"what": "x", "bytes": 512, "total": 1024,
                                                                           "percent": 50.0}
    assert half["mib_per_s"] >= 0 and empty["percent"] == 100.0
