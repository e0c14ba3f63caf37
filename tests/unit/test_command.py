"""The one helper that runs a command (saltami/command.py): its stdout, input and environment;
a failure's error names the command, its exit status and the end of its error output, and
keeps what it wrote; a command past its timeout is killed and says so."""
import os
import sys

import pytest

from saltami import command
from saltami.errors import AmiError, CommandFailed, Timeout


def test_stdout_with_input_and_environment():
    assert command.run("cat", input="fed\n") == "fed\n"
    assert command.run("sh", "-c", 'echo "$SAID"', env={**os.environ, "SAID": "hello"}) == "hello\n"
    # arguments need not be strings
    assert command.run("echo", 12) == "12\n"


def test_a_failure_names_the_command_its_exit_status_and_the_end_of_its_stderr():
    with pytest.raises(CommandFailed) as failed:
        command.run("sh", "-c", "echo out; echo 'no such disk' >&2; exit 3")
    e = failed.value
    assert str(e) == "sh -c echo out; echo 'no such disk' >&2; exit 3 failed (exit 3): no such disk"
    assert isinstance(e, AmiError)
    assert (e.cmd[0], e.returncode, e.stdout, e.stderr) == ("sh", 3, "out\n", "no such disk\n")
    # without error output, the output
    with pytest.raises(CommandFailed, match=r"failed \(exit 1\): only out$"):
        command.run("sh", "-c", "echo only out; exit 1")
    # a long one: its end
    with pytest.raises(CommandFailed) as failed:
        command.run(sys.executable, "-c", "import sys; sys.stderr.write('x' * 5000 + 'why'); sys.exit(2)")
    assert str(failed.value).endswith("x" * (command.TAIL - 3) + "why") and len(str(failed.value)) < 2200


def test_unchecked_and_completed_give_the_failure_s_output():
    assert command.run("sh", "-c", "echo half; exit 1", check=False) == "half\n"
    p = command.completed("sh", "-c", "echo differ; exit 1")
    assert (p.returncode, p.stdout, p.stderr) == (1, "differ\n", "")


def test_a_command_past_its_timeout_is_killed():
    with pytest.raises(Timeout, match=r"^sleep 5 did not finish within 0.2s$"):
        command.run("sleep", 5, timeout=0.2)
    with pytest.raises(Timeout, match=r"^state.apply in the chroot did not finish within 0.2s$"):
        command.completed("sleep", 5, timeout=0.2, what="state.apply in the chroot")
