"""Which cloud, and one keystoneauth session shared by the nova, cinder and Glance clients.

A cloud is given as one of:
- a name in clouds.yaml (read by openstacksdk's config loader, which also honours
  OS_CLIENT_CONFIG_FILE, secure.yaml, application credentials and cacert/verify);
- a profile: a dict with the same keys a clouds.yaml entry has (``auth``, ``auth_type``,
  ``region_name``, ``cacert``, ``verify``, ...), optionally with ``cloud: NAME`` to start from
  a clouds.yaml entry and override parts of it, and ``clouds_yaml: PATH`` to read that
  file rather than the standard places;
- nothing: then OS_CLOUD, or the OS_* variables of the environment.
"""
import functools
import os
import re

import openstack.config
from keystoneauth1 import exceptions as ks_exc

from ..errors import CloudError, InvalidArgument

NOVA_MICROVERSION = "2.96"     # the newest novaclient speaks
CINDER_MICROVERSION = "3.71"   # the newest cinderclient speaks; upload-to-image needs >= 3.1
# seconds a request may wait for a connection or for the next bytes of an answer, unless the
# cloud sets api_timeout: a service that accepts and never answers must not hang a build
API_TIMEOUT = 120
SECRET_KEYS = frozenset({"password", "token", "application_credential_secret", "secret",
                         "client_secret", "passcode", "totp"})
# the same words inside longer keys, as pillar names them: db_password, api_token, ssh_key
SECRET_KEY_WORDS = re.compile(r"pass(word|wd|phrase|code)|secret|token|credential|private|(^|[_-])key$", re.I)


def is_secret_key(key):
    return isinstance(key, str) and (key in SECRET_KEYS or bool(SECRET_KEY_WORDS.search(key)))


def redact(value):
    """A copy of a profile (nested dicts and lists) with every secret replaced, for logs,
    return values and error messages."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def secrets(value, where="", secret=False):
    """{where: string} of every secret in nested dicts and lists (what ``redact`` hides: the
    strings under a secret key, at any depth below it), ``where`` the keys joined with ':'
    as in pillar."""
    found = {}
    if isinstance(value, dict):
        for k, v in value.items():
            found.update(secrets(v, f"{where}:{k}" if where else str(k), secret or is_secret_key(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found.update(secrets(v, f"{where}:{i}", secret))
    elif secret and isinstance(value, str) and value:
        found[where] = value
    return found


class Clients:
    """nova, cinder and Glance clients over one session, made when first used."""

    def __init__(self, region):
        self.region = region
        self.session = region.get_session()
        self.region_name = region.region_name
        self.interface = region.get_interface()

    def endpoint_override(self, service_type):
        """clouds.yaml's ``<service>_endpoint_override`` (``image_endpoint_override``...): the
        URL to use instead of the catalog's, as for a service behind a proxy."""
        return self.region.get_endpoint(service_type)

    def _kw(self, service_type):
        kw = {"session": self.session, "region_name": self.region_name,
              "interface": self.interface, "service_type": service_type}
        if self.endpoint_override(service_type):
            kw["endpoint_override"] = self.endpoint_override(service_type)
        return kw

    @functools.cached_property
    def nova(self):
        from novaclient import client
        kw = self._kw("compute")
        kw["endpoint_type"] = kw.pop("interface")
        return client.Client(NOVA_MICROVERSION, **kw)

    @functools.cached_property
    def cinder(self):
        from cinderclient import client
        kw = self._kw("block-storage")
        kw["endpoint_type"] = kw.pop("interface")
        return client.Client(CINDER_MICROVERSION, **kw)

    @functools.cached_property
    def glance(self):
        from glanceclient import client
        return client.Client("2", **self._kw("image"))

    @property
    def project_id(self):
        return self.session.get_project_id()


def connect(cloud=None, profile=None):
    """Clients for a cloud given by name, by profile, or by the environment (module doc)."""
    if cloud is not None and not isinstance(cloud, str):
        raise InvalidArgument(f"cloud must be the name of a clouds.yaml entry, not {type(cloud).__name__}")
    if profile is not None and not isinstance(profile, dict):
        raise InvalidArgument(f"a cloud profile must be a mapping of clouds.yaml keys, not {redact(profile)!r}")
    kwargs = dict(profile or {})
    cloud = cloud or kwargs.pop("cloud", None)
    files = kwargs.pop("clouds_yaml", None)
    if files is not None:
        files = [files] if isinstance(files, str) else list(files)
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise InvalidArgument(f"clouds_yaml {missing[0]!r} is not a readable file")
    config = openstack.config.OpenStackConfig(app_name="salt-ami", config_files=files)
    try:
        region = config.get_one(cloud=cloud, **kwargs)
    except openstack.exceptions.ConfigException as e:
        known = ", ".join(sorted(config.get_cloud_names())) or "none"
        raise InvalidArgument(f"cloud {cloud!r}: {e} (clouds known from clouds.yaml: {known})") from None
    except ks_exc.MissingRequiredOptions as e:
        raise InvalidArgument(f"cloud {cloud or '(from environment)'!r} lacks auth options: "
                              f"{', '.join(o.dest for o in e.options)}") from None
    if region.config.get("api_timeout") is None:
        region.config["api_timeout"] = API_TIMEOUT
    return Clients(region)


def check_auth(clients):
    """Authenticate now, so that bad credentials fail before anything else is attempted."""
    auth = clients.region.config.get("auth", {})
    try:
        clients.session.get_token()
    except ks_exc.Unauthorized as e:
        who = auth.get("username") or auth.get("user_id") or auth.get("application_credential_id") \
            or auth.get("application_credential_name")
        raise CloudError(f"authentication refused by {auth.get('auth_url')} (user {who!r}): {e.message}") from None
    except ks_exc.ConnectionError as e:  # refused, timed out (api_timeout), TLS
        raise CloudError(f"identity service {auth.get('auth_url')} unreachable or not answering: {e}") from None
    except ks_exc.HttpError as e:  # the identity service is there but failing (5xx)
        # keystoneauth's message ends with the HTTP status already
        raise CloudError(f"identity service {auth.get('auth_url')} failed to authenticate: {e}",
                         e.http_status) from None
    return clients
