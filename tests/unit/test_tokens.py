"""The token cache that lets every step of a build use one keystone token (cloud/tokens.py),
over keystoneauth's real v3 password plugin with an auth state of the shape keystone gives,
and no keystone: each 'step' is a new plugin, as a new runner call makes."""
import datetime
import json
import os
import stat

from keystoneauth1.identity import v3

from saltami.cloud.tokens import TokenCache

TOKEN = "gAAAAABnot-a-real-keystone-token-but-as-long-as-one-0123456789abcdefghijklmnop"


class Session:
    def __init__(self, auth):
        self.auth = auth


class Region:
    def __init__(self, config):
        self.config = config


class Clients:
    """What TokenCache needs of saltami.cloud.auth.Clients."""

    def __init__(self, password="pw", project="demo", **settings):
        self.session = Session(v3.Password(auth_url="http://keystone:5000/v3", username="demo",
                                           password=password, project_name=project,
                                           user_domain_name="Default", project_domain_name="Default"))
        self.region = Region({"auth": {"password": password}, "region_name": "RegionOne", **settings})
        self.keeper = None
        self.offered = {}

    def offered_known(self):
        return self.offered

    def restore_offered(self, known):
        self.offered = dict(known)


def state(minutes_left, token=TOKEN):
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes_left)
    return json.dumps({"auth_token": token, "body": {"token": {
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), "methods": ["password"],
        "user": {"id": "u1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "project": {"id": "p1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "catalog": []}}})


def authenticated(cache, clients, minutes_left=60, token=TOKEN):
    """A step that authenticated: what the plugin's get_access does when keystone answers."""
    cache.attach(clients)
    auth = clients.session.auth
    auth.get_auth_ref = lambda session, **kw: _ref(minutes_left, token)
    return auth.get_access(clients.session)


def _ref(minutes_left, token):
    from keystoneauth1 import access

    data = json.loads(state(minutes_left, token))
    return access.create(body=data["body"], auth_token=data["auth_token"])


def test_the_next_step_takes_up_the_token_and_the_versions_without_authenticating(tmp_path):
    cache = TokenCache(str(tmp_path / "tokens"), b"the master's private key")
    first = Clients()
    first.offered = {"compute": ["http://nova:8774/v2.1", [[2, 1], [2, 96]]]}
    authenticated(cache, first)
    # the next runner call: a new plugin, which must not ask keystone
    second = Clients()
    second.session.auth.get_auth_ref = lambda *a, **kw: (_ for _ in ()).throw(AssertionError("authenticated"))
    cache.attach(second)
    assert second.session.auth.get_access(second.session).auth_token == TOKEN
    assert second.offered == first.offered


def test_the_token_is_kept_encrypted_in_a_file_only_its_owner_reads(tmp_path):
    cache = TokenCache(str(tmp_path / "tokens"), b"the master's private key")
    authenticated(cache, Clients())
    (path,) = (tmp_path / "tokens").iterdir()
    data = path.read_bytes()
    assert TOKEN.encode() not in data and b"demo" not in data and b"pw" not in path.name.encode()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "tokens").st_mode) == 0o700


def test_other_credentials_or_another_key_never_get_the_token(tmp_path):
    cache = TokenCache(str(tmp_path / "tokens"), b"the master's private key")
    authenticated(cache, Clients())
    for other, key in ((Clients(password="other"), b"the master's private key"),
                       (Clients(project="admin"), b"the master's private key"),
                       # the same user at another endpoint (a proxy, an older API's): not its versions
                       (Clients(compute_endpoint_override="http://proxy:1234/v2.1"), b"the master's private key"),
                       (Clients(), b"another master's key")):
        TokenCache(str(tmp_path / "tokens"), key).attach(other)
        assert other.session.auth.auth_ref is None


def test_a_token_about_to_expire_is_not_handed_on_and_the_new_one_is_kept(tmp_path):
    cache = TokenCache(str(tmp_path / "tokens"), b"the master's private key")
    authenticated(cache, Clients(), minutes_left=2, token="old-" + TOKEN)
    nearly_expired = Clients()
    cache.attach(nearly_expired)
    assert nearly_expired.session.auth.auth_ref is None
    authenticated(cache, nearly_expired, token="new-" + TOKEN)
    later = Clients()
    cache.attach(later)
    assert later.session.auth.auth_ref.auth_token == "new-" + TOKEN


def test_an_unreadable_cache_is_no_cache(tmp_path):
    cache = TokenCache(str(tmp_path / "tokens"), b"the master's private key")
    authenticated(cache, Clients())
    (path,) = (tmp_path / "tokens").iterdir()
    path.write_bytes(b"garbage")
    clients = Clients()
    cache.attach(clients)
    assert clients.session.auth.auth_ref is None
    assert TokenCache.from_key_file(str(tmp_path / "t"), str(tmp_path / "no-such-key.pem")) is None
