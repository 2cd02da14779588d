"""The test lab's command runner: it returns when the command exits, whoever else holds its output."""

import os
import signal
import subprocess

import pytest

from lab import sh


def test_returns_when_the_command_exits_though_its_child_still_holds_the_output():
    # The shell exits at once; its background child keeps a copy of stdout and
    # stderr for 30 s. A pipe reader would wait those 30 s and hit the timeout.
    done = sh("sh", "-c", "sleep 30 & echo $!", timeout=10)
    os.kill(int(done.stdout), signal.SIGKILL)
    assert done.returncode == 0 and done.stderr == ""


def test_input_output_and_exit_status_as_subprocess_run_gives_them():
    done = sh("sh", "-c", "cat; echo oops >&2; exit 3", input="line\n", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "line\n", "oops\n")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        sh("sh", "-c", "echo why >&2; exit 4")
    assert failed.value.returncode == 4 and failed.value.stderr == "why\n"


def test_a_command_past_its_timeout_is_killed_and_the_error_says_where_it_waited():
    with pytest.raises(subprocess.TimeoutExpired) as late:
        sh("sleep", "30", timeout=0.5)
    assert "timed out after 0.5 seconds; still running at the timeout: status: State: S (sleeping)" in str(late.value)
