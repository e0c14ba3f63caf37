"""What every Salt loader module of this project shares: which cloud to talk to, one
session per call chain, Salt's exceptions for the library's, and progress on the event bus.
The only library module that imports salt."""
import contextlib
import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

from . import errors

log = logging.getLogger(__name__)


def cloud_spec(config_get, cloud=None):
    """(name, profile) of the cloud to use: the ``cloud`` argument (a clouds.yaml name or a
    profile dict), else ``ami:cloud`` from pillar or config (the same two forms), else
    (None, None): the environment (OS_CLOUD or OS_*)."""
    spec = cloud if cloud is not None else config_get("ami:cloud", None)
    if spec in (None, ""):
        return None, None
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict):
        return None, dict(spec)
    raise SaltInvocationError(f"ami:cloud must be a clouds.yaml name or a profile mapping, not {type(spec).__name__}")


def clients(context, config_get, cloud=None):
    """Clients for this call chain, kept in ``__context__`` so that one session (and one
    token) serves every call of a job."""
    # imported here: functions that need no cloud (whoami inside a builder) must work
    # where the OpenStack clients are not installed
    from .cloud import auth

    name, profile = cloud_spec(config_get, cloud)
    key = ("saltami.clients", name, repr(sorted((profile or {}).items())))
    if key not in context:
        with salt_errors():
            context[key] = auth.connect(cloud=name, profile=profile)
    return context[key]


@contextlib.contextmanager
def salt_errors():
    """Bad input becomes SaltInvocationError, everything else the library raises
    CommandExecutionError, so Salt reports them as such without a traceback."""
    try:
        yield
    except errors.InvalidArgument as e:
        raise SaltInvocationError(str(e)) from None
    except errors.AmiError as e:
        raise CommandExecutionError(str(e)) from None


def progress_reporter(send_event, tag, what):
    """A ``progress(done, total)`` callback (the library already calls it sparingly) that
    logs and fires ``tag`` on the event bus."""
    start = time.monotonic()

    def report(done, total):
        pct = 100.0 * done / total if total else 100.0
        rate = done / max(time.monotonic() - start, 1e-6) / 2**20
        log.info("%s: %d/%d bytes (%.0f%%, %.1f MiB/s)", what, done, total, pct, rate)
        send_event(tag, {"what": what, "bytes": done, "total": total, "percent": round(pct, 1),
                         "mib_per_s": round(rate, 1)})

    return report


def config_getter(opts, pillar):
    """``config.get`` for runners, which have none: pillar first, then the master config."""
    from salt.utils.data import traverse_dict_and_list

    missing = object()

    def get(key, default=None):
        for source in (pillar, opts):
            value = traverse_dict_and_list(source, key, missing, delimiter=":")
            if value is not missing:
                return value
        return default

    return get
