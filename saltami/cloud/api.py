"""What the three clients raise, turned into the library's errors with the service's words."""
import contextlib

from keystoneauth1 import exceptions as ks_exc

from ..errors import CloudError


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


@contextlib.contextmanager
def service_errors(what):
    """Re-raise API failures inside the block as CloudError("<what>: <service message>")."""
    try:
        yield
    except ks_exc.ConnectionError as e:  # refused, timed out (api_timeout), TLS
        raise CloudError(f"{what}: service unreachable or not answering: {e}") from None
    except ks_exc.EndpointNotFound as e:
        raise CloudError(f"{what}: {e}") from None
    except _client_errors() as e:
        raise CloudError(f"{what}: {_service_message(e)}", http_status(e)) from None


def get_or_none(what, fetch):
    """``fetch()`` with the service's errors translated, or None when it answers 404."""
    try:
        with service_errors(what):
            return fetch()
    except CloudError as e:
        if e.http_status == 404:
            return None
        raise
