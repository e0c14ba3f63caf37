"""Which cloud, and one keystoneauth session shared by the nova, cinder and Glance clients.

A cloud is given as one of:
- a name in clouds.yaml (read by openstacksdk's config loader, which also honours
  OS_CLIENT_CONFIG_FILE, secure.yaml, application credentials and cacert/verify);
- a profile: a dict with the same keys a clouds.yaml entry has (``auth``, ``auth_type``,
  ``region_name``, ``cacert``, ``verify``, ...), optionally with ``cloud: NAME`` to start from
  a clouds.yaml entry and override parts of it, and ``clouds_yaml: PATH`` to read that
  file rather than the standard places;
- nothing: then OS_CLOUD, or the OS_* variables of the environment.

Every service is reached in the cloud's region and through its interface (clouds.yaml's
``region_name`` and ``interface``, or ``<service>_region_name``, ``<service>_interface`` for
one service), or at its ``<service>_endpoint_override``.

Nova and cinder speak the highest microversion that both the service (its version
document, read once per session) and the client library know; a call that needs a newer
one than the cloud offers (FEATURES) fails naming what it needs, before it makes anything.
"""
import functools
import os
import re

import openstack.config
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exc

from ..errors import CloudError, InvalidArgument
from . import api

# what the library asks of nova and cinder that their oldest microversion (2.1, 3.0) lacks:
# feature -> (service type, microversion, what it is, in the error that names it)
FEATURES = {
    "boot-networks": ("compute", (2, 37), "booting a server with networks 'none' or 'auto'"),
    "nic-tags": ("compute", (2, 42), "tags on a server's network interfaces"),
    "action-events": ("compute", (2, 51), "instance action events (why nova rolled an attach back)"),
    "upload-to-image": ("block-storage", (3, 1), "volume upload-to-image with visibility and protected"),
    "user-messages": ("block-storage", (3, 3), "cinder user messages (why a volume failed)"),
}
SERVICE_NAMES = {"compute": "nova (compute)", "block-storage": "cinder (block-storage)"}
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


def _version(text):
    """(major, minor) of "2.95"; None for None or ""."""
    if not text:
        return None
    major, minor = str(text).split(".")
    return int(major), int(minor)


def version_string(version):
    return f"{version[0]}.{version[1]}"


def client_range(service_type):
    """(oldest, newest) microversion the installed client library speaks, and its name."""
    if service_type == "compute":
        import novaclient
        return (_version(novaclient.API_MIN_VERSION.get_string()),
                _version(novaclient.API_MAX_VERSION.get_string()), "python-novaclient")
    from cinderclient import api_versions
    return _version(api_versions.MIN_VERSION), _version(api_versions.MAX_VERSION), "python-cinderclient"


def pick_microversion(service_type, offered, speaks, url, pinned=None):
    """The microversion to use: ``pinned`` (clouds.yaml's ``<service>_default_microversion``)
    if the service offers it, else the highest that both the service (``offered``: its
    (min_version, version), None for a service without microversions) and the client library
    (``speaks``: (oldest, newest, its name)) know."""
    low, high, library = speaks
    name = SERVICE_NAMES[service_type]
    if offered is None or offered[1] is None:
        # a service without microversions behaves as their first
        offered = (low, low)
    smin, smax = offered[0] or low, offered[1]
    said = f"the {name} API at {url} offers microversions {version_string(smin)} to {version_string(smax)}"
    if pinned is not None:
        if not smin <= pinned <= smax or not low <= pinned <= high:
            raise CloudError(f"{service_type.replace('-', '_')}_default_microversion {version_string(pinned)}: "
                             f"{said}, and {library} speaks {version_string(low)} to {version_string(high)}")
        return pinned
    if smin > high or smax < low:
        raise CloudError(f"{said}; {library} speaks {version_string(low)} to {version_string(high)}, "
                         f"none of them")
    return min(high, smax)


class Clients:
    """nova, cinder, Glance and neutron clients over one session, made when first used."""

    def __init__(self, region):
        self.region = region
        self.session = region.get_session()
        self.region_name = region.region_name
        self.interface = region.get_interface()
        self._offered = {}
        self._microversions = {}
        # a tokens.TokenCache that keeps this session's token, and what the services offer
        self.keeper = None

    def endpoint_override(self, service_type):
        """clouds.yaml's ``<service>_endpoint_override`` (``image_endpoint_override``...): the
        URL to use instead of the catalog's, as for a service behind a proxy."""
        return self.region.get_endpoint(service_type)

    def _kw(self, service_type):
        """Where a service is: the cloud's region and interface (or the service's own, when
        clouds.yaml sets ``<service>_region_name`` or ``<service>_interface``), or its
        endpoint override."""
        kw = {"session": self.session, "service_type": service_type,
              "region_name": self.region.get_region_name(service_type) or self.region_name,
              "interface": self.region.get_interface(service_type) or self.interface}
        if self.endpoint_override(service_type):
            kw["endpoint_override"] = self.endpoint_override(service_type)
        return kw

    def adapter(self, service_type):
        """A keystoneauth adapter for raw requests to a service (``.get("/v2.0/networks")``)."""
        return ks_adapter.Adapter(**self._kw(service_type))

    # --------------------------------------------------------------------- microversions
    def offered(self, service_type):
        """(url, (min_version, version)) of the service, from its version document: read
        once for these clients (keystoneauth caches the document in the session)."""
        if service_type not in self._offered:
            what = f"reading the versions of the {SERVICE_NAMES[service_type]} API"
            try:
                with api.service_errors(what):
                    data = self.adapter(service_type).get_endpoint_data()
            except ks_exc.DiscoveryFailure as e:
                raise CloudError(f"{what}: {e}") from None
            if data is None:
                raise CloudError(f"{what}: no endpoint for it in region {self.region_name!r}")
            self._offered[service_type] = (data.url or data.catalog_url, (data.min_microversion, data.max_microversion))
            if self.keeper is not None:
                self.keeper.keep(self)
        return self._offered[service_type]

    def offered_known(self):
        """What ``offered`` has read so far, as JSON can keep it (tokens.TokenCache)."""
        return {service: [url, [list(v) if v else None for v in versions]]
                for service, (url, versions) in self._offered.items()}

    def restore_offered(self, known):
        """Take up what another call read of the services' versions (``offered_known``)."""
        for service, (url, versions) in known.items():
            self._offered.setdefault(service, (url, tuple(tuple(v) if v else None for v in versions)))

    def microversion(self, service_type):
        """The microversion this cloud's nova or cinder is spoken at, as (major, minor)."""
        if service_type not in self._microversions:
            url, offered = self.offered(service_type)
            pinned = _version(self.region.get_default_microversion(service_type))
            self._microversions[service_type] = pick_microversion(
                service_type, offered, client_range(service_type), url, pinned)
        return self._microversions[service_type]

    def supports(self, feature):
        service_type, needs, _what = FEATURES[feature]
        return self.microversion(service_type) >= needs

    def require(self, feature):
        """CloudError naming the feature and the microversion it needs, unless this cloud
        has it."""
        service_type, needs, what = FEATURES[feature]
        if self.supports(feature):
            return
        url, (smin, smax) = self.offered(service_type)
        offers = (f"offers microversions up to {version_string(smax)}" if smax
                  else "has no microversions")
        low, high, library = client_range(service_type)
        why = (f"{library} speaks at most {version_string(high)}" if high < needs
               else f"the {SERVICE_NAMES[service_type]} API at {url} {offers}")
        raise CloudError(f"{what} needs {service_type} API microversion {version_string(needs)} or "
                         f"later: {why}")

    # --------------------------------------------------------------------- clients
    @functools.cached_property
    def nova(self):
        from novaclient import client
        kw = self._kw("compute")
        kw["endpoint_type"] = kw.pop("interface")
        return client.Client(version_string(self.microversion("compute")), **kw)

    @functools.cached_property
    def cinder(self):
        from cinderclient import client
        kw = self._kw("block-storage")
        kw["endpoint_type"] = kw.pop("interface")
        return client.Client(version_string(self.microversion("block-storage")), **kw)

    @functools.cached_property
    def glance(self):
        from glanceclient import client
        return client.Client("2", **self._kw("image"))

    @functools.cached_property
    def network(self):
        return self.adapter("network")

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
    # its requests are repeated as clouds.yaml's retry keys say (api.Session)
    region.set_session_constructor(functools.partial(api.Session, region=region))
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
