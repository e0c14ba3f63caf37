"""Errors the library raises. Salt modules turn them into CommandExecutionError or
SaltInvocationError; their messages are written for the person running the build."""


class AmiError(Exception):
    """Base of everything this library raises on purpose."""


class InvalidArgument(AmiError, ValueError):
    """Bad input, found before any cloud resource was created: the message names the value
    and what is allowed."""


class NotFound(InvalidArgument):
    """A name, id or filter that matches nothing (or, for a name, more than one thing)."""


class CloudError(AmiError):
    """A service refused or failed a request; the message carries the service's own words."""

    def __init__(self, message, http_status=None):
        super().__init__(message)
        self.http_status = http_status


class ResourceFailed(CloudError):
    """A resource ended in an error state (server ERROR, volume error, image killed)."""


class Timeout(AmiError):
    """A wait ran out; the message says what was awaited, for how long, and the last state."""


class CommandFailed(AmiError):
    """A command run on this machine (command.run) exited non-zero; the message names the
    command, its exit status and the end of its error output. What it wrote is kept for the
    callers that read a failure's output: ``cmd`` (the argument list), ``returncode``,
    ``stdout``, ``stderr``."""

    def __init__(self, message, cmd=(), returncode=None, stdout="", stderr=""):
        super().__init__(message)
        self.cmd, self.returncode, self.stdout, self.stderr = list(cmd), returncode, stdout, stderr
