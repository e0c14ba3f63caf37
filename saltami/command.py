"""Running a command on this machine (a disk tool, qemu-img, mount, salt-call in a chroot):
the one helper the library runs them with. The command's output is captured as text; it may
be given input, an environment and a timeout; a failure raises errors.CommandFailed, whose
message names the command, its exit status and the end of its error output, and a command
that outlives its timeout is killed and raises errors.Timeout.

Not for a process that runs on while the caller watches it (qemu's guests: qemu.start), nor
for the parts of saltami that run where the library is not installed and so import nothing
of it (scrub.py, _modules/chroot_service.py), nor for the build commands of vanilla.run, which run
in a session of their own so that an interrupt kills what they started (debootstrap's dpkg).
"""
import subprocess

from .errors import CommandFailed, Timeout

# how much of a failed command's error output its error message carries: the end, where a
# tool says why it stopped
TAIL = 2000


def completed(*cmd, input=None, env=None, timeout=None, what=None):
    """``cmd`` (its items made strings: paths, numbers) run to its end, whatever its exit
    status: the subprocess.CompletedProcess, stdout and stderr as text. For a caller to which
    an exit status is an answer (qemu-img compare exits 1 for "they differ"), or which reads
    the output of a failure; the others call ``run``. Timeout when it runs longer than
    ``timeout`` seconds, saying ``what`` did not finish, else the command."""
    argv = [str(c) for c in cmd]
    try:
        return subprocess.run(argv, input=input, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Timeout(f"{what or ' '.join(argv)} did not finish within {timeout}s") from None


def run(*cmd, check=True, input=None, env=None, timeout=None, what=None):
    """``cmd``'s stdout. CommandFailed when it exits non-zero, unless ``check`` is false (then
    its stdout all the same); Timeout as for ``completed``."""
    p = completed(*cmd, input=input, env=env, timeout=timeout, what=what)
    if check and p.returncode:
        raise CommandFailed(f"{' '.join(p.args)} failed (exit {p.returncode}): "
                            f"{(p.stderr or p.stdout).strip()[-TAIL:]}",
                            p.args, p.returncode, p.stdout, p.stderr)
    return p.stdout
