"""One keystone token for all the steps of a build.

An orchestrated build runs each step as its own runner call, and flavours built side by side
run theirs in processes of their own: each would authenticate again, and read the nova and
cinder version documents again. Instead, the first call authenticates and leaves the
session's auth state (keystoneauth's: the token and the catalog it came with) and what the
services offer here; the next calls take them up, until the token is about to expire.

Never in clear: the state is encrypted (Fernet: AES and an HMAC) with a key derived from a
secret the caller holds and nothing else may read (the master's private key), in a file only
its owner may read, named by an HMAC, under that key, of keystoneauth's cache id of the
credentials (so the name says nothing of them, and other credentials never get the token).
A file that cannot be read or decrypted is as good as none: the call authenticates.
"""
import base64
import hashlib
import hmac
import json
import logging
import os
import time

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)

# a token this close to its expiry is not handed on: the call authenticates anew
FRESH_SECONDS = 300


class TokenCache:
    def __init__(self, directory, secret):
        """``secret``: bytes only the caller can read (a private key file's content)."""
        self.directory = directory
        key = hmac.new(secret, b"salt-ami token cache", hashlib.sha256).digest()
        self._names = hmac.new(key, b"names", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @classmethod
    def from_key_file(cls, directory, key_file):
        """A cache under ``directory`` whose key comes from ``key_file``; None when it cannot
        be read (then nothing is kept: each call authenticates)."""
        try:
            with open(key_file, "rb") as f:
                return cls(directory, f.read())
        except OSError as e:
            log.info("no token cache: %s", e)
            return None

    def _path(self, clients):
        """The file of these credentials (keystoneauth's cache id) at these endpoints (the
        rest of the cloud's settings: another endpoint for a service offers other versions),
        or None when the auth plugin cannot say who it is."""
        auth = clients.session.auth
        cache_id = auth.get_cache_id() if hasattr(auth, "get_cache_id") else None
        if not cache_id:
            return None
        settings = {k: v for k, v in clients.region.config.items() if k != "auth"}
        identity = cache_id + json.dumps(settings, sort_keys=True, default=str)
        name = hmac.new(self._names, identity.encode(), hashlib.sha256).hexdigest()[:32]
        return os.path.join(self.directory, f"{name}.token")

    def attach(self, clients):
        """Give ``clients`` the kept token (and the services' versions) if there is a fresh
        one for its credentials; from now on, keep every token its session gets (it
        authenticates when it first needs to, as without a cache: a failure is the step's)."""
        auth = clients.session.auth
        path = self._path(clients)
        if path is None or not hasattr(auth, "set_auth_state") or not hasattr(auth, "get_access"):
            return clients
        clients.keeper = self
        kept = self._read(path)
        if kept:
            auth.set_auth_state(kept["auth"])
            if auth.auth_ref is not None and not auth.auth_ref.will_expire_soon(FRESH_SECONDS):
                clients.restore_offered(kept.get("offered") or {})
            else:
                auth.set_auth_state(None)
        get_access = auth.get_access

        def get_access_and_keep(*args, **kwargs):
            before = auth.auth_ref
            access = get_access(*args, **kwargs)
            if access is not before:
                self.keep(clients)
            return access

        auth.get_access = get_access_and_keep
        return clients

    def keep(self, clients):
        """Keep the session's auth state (and what the services offer, as far as known)."""
        auth = clients.session.auth
        path = self._path(clients)
        state = auth.get_auth_state() if path else None
        if not state:
            return
        data = json.dumps({"auth": state, "offered": clients.offered_known(), "at": time.time()})
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self._fernet.encrypt(data.encode()))
        os.replace(tmp, path)

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return json.loads(self._fernet.decrypt(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, InvalidToken, ValueError) as e:
            log.info("token cache %s unusable (%s): authenticating", path, type(e).__name__)
            return None
