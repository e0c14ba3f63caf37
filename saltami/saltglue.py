"""What every Salt loader module of this project shares: which cloud to talk to, one
session per call chain, Salt's exceptions for the library's, and progress on the event bus.
The only library module that imports salt."""
import contextlib
import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

from . import errors, report

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


# the clients a master's process made, by cloud: the steps of an orchestrated build are
# runner calls of one process, each with a __context__ of its own
_PROCESS_CLIENTS = {}


def clients(context, config_get, cloud=None, tokens=None):
    """Clients for this call chain, kept in ``__context__`` so that one session (and one
    token) serves every call of a job. With ``tokens`` (a cloud.tokens.TokenCache: the
    master's runners) they also serve this process's later calls, and the token the calls
    of other processes: the steps of a build, and of builds that run side by side."""
    # imported here: functions that need no cloud (whoami inside a builder) must work
    # where the OpenStack clients are not installed
    from .cloud import auth

    name, profile = cloud_spec(config_get, cloud)
    key = ("saltami.clients", name, repr(sorted((profile or {}).items())))
    if key in context:
        return context[key]
    # a forked process must not share its parent's connections
    process_key = (os.getpid(), key)
    if tokens is not None and process_key in _PROCESS_CLIENTS:
        context[key] = _PROCESS_CLIENTS[process_key]
        return context[key]
    with salt_errors():
        made = auth.connect(cloud=name, profile=profile)
        if tokens is not None:
            made = _PROCESS_CLIENTS[process_key] = tokens.attach(made)
    context[key] = made
    return made


def master_clients(opts, context, pillar, cloud=None):
    """The clients of the master's runners and orchestration states: the cloud from the
    ``cloud`` argument, pillar or the master config, one token for every step of a build."""
    return clients(context, config_getter(opts, pillar), cloud, tokens=master_tokens(opts))


def master_tokens(opts):
    """The master's token cache (cloud/tokens.py): under its cachedir, keyed by its private
    key, which only the master's user may read."""
    from .cloud import tokens

    return tokens.TokenCache.from_key_file(os.path.join(opts["cachedir"], "ami", "tokens"),
                                           os.path.join(opts["pki_dir"], "master.pem"))


@contextlib.contextmanager
def salt_errors(usage=True):
    """Bad input becomes SaltInvocationError, everything else the library raises
    CommandExecutionError, so Salt reports them as such without a traceback. Salt takes a
    SaltInvocationError for arguments that do not fit the function and prints its usage
    after the message; with ``usage=False`` bad input is a CommandExecutionError too, for
    functions whose bad input is a definition (a flavour in pillar), where the usage text
    would only bury the message (salt-call exits 1 with the message alone)."""
    try:
        yield
    except errors.InvalidArgument as e:
        if usage:
            raise SaltInvocationError(str(e)) from None
        raise CommandExecutionError(str(e)) from None
    except errors.AmiError as e:
        raise CommandExecutionError(str(e)) from None


def progress_reporter(send_event, tag, what):
    """A ``progress(done, total)`` callback (the library already calls it sparingly) that
    logs and fires ``tag`` on the event bus."""
    return report.transfer_progress(send_event, tag, what)


def master_events(opts, prefix="salt/ami/", tick=1.0):
    """The master's events whose tag starts with ``prefix``, as (tag, data), and None after
    each ``tick`` seconds without one; subscribed now, so that none fired from now on is
    missed by the time they are read."""
    import salt.utils.event

    bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)

    def events():
        try:
            while True:
                event = bus.get_event(wait=tick, tag=prefix, full=True)
                yield (event["tag"], event["data"]) if event else None
        finally:
            bus.destroy()

    return events()


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
