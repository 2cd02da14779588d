"""The node session of tests/node/test_node.py, startable in the background.

tests/conftest.py starts it as soon as the node tests are collected, so the
node's VM boots and runs while the host tests run (in `make test` they come
before tests/node); test_node.py's `node` fixture waits for it, or starts one
itself when nothing started it (NETAGENT_NODE_RECORD replays a saved one).
A module of its own so that conftest.py and test_node.py share one registry.
"""

import os
import shutil
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL = os.environ.get("NETAGENT_NODE_KERNEL", "6.1")


def node_command() -> list[str]:
    runner = os.path.join(REPO, "packaging", "vm", "run")
    if os.access(runner, os.X_OK):
        return [runner, "--kernel", KERNEL, "--node", "--"]
    return [os.path.join(REPO, "packaging", "vm", "node-boot"), "--kernel", KERNEL, "--"]


class NodeSession:
    """One node session (`node_command() python3 node_checks.py`) running in the background,
    its stdout and stderr in files. tests/conftest.py starts it as soon as the node tests are
    collected, so its VM boots while the rest of `make test` runs on the host."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.stdout_path = os.path.join(out_dir, "node-stdout.txt")
        self.stderr_path = os.path.join(out_dir, "node-stderr.txt")
        self.started = time.monotonic()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*node_command(), "python3", os.path.join(REPO, "tests", "node", "node_checks.py")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO, start_new_session=True)

    def wait(self, timeout: float) -> tuple[int | None, str, str]:
        """(exit status or None if killed at the bound, stdout, stderr)."""
        try:
            code = self.proc.wait(max(0.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        with open(self.stdout_path, errors="replace") as out, open(self.stderr_path, errors="replace") as err:
            return code, out.read(), err.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)  # the runner, node-boot and qemu: one session of ours
            self.proc.wait()

    def close(self) -> None:
        """At the end of the test run: no VM and no output files left behind."""
        self.kill()
        shutil.rmtree(self.out_dir, ignore_errors=True)


BACKGROUND: list["NodeSession"] = []  # the session tests/conftest.py started, if any


def start_in_background(out_dir: str) -> None:
    if not BACKGROUND and not os.environ.get("NETAGENT_NODE_RECORD"):
        BACKGROUND.append(NodeSession(out_dir))
