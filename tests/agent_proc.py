"""Running `netagent` as a real process in tests and reading what it says."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import orjson
from timescale import scaled

NETAGENT = os.path.join(sys.prefix, "bin", "netagent")


class AgentProcess:
    """`netagent ARGS` with stdout and stderr collected on background threads."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen([NETAGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.stdout_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self._stderr_q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self):
        for line in self.proc.stdout:
            self.stdout_lines.append(line)

    def _pump_err(self):
        for line in self.proc.stderr:
            text = line.decode(errors="replace")
            self.stderr_lines.append(text)
            self._stderr_q.put(text)

    def wait_for_stderr(self, needle: str, timeout: float = 20.0) -> str:
        timeout = scaled(timeout)  # longer in a TCG guest (tests/timescale.py)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._stderr_q.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._stderr_q.empty():
                    break
                continue
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} on stderr within {timeout}s; stderr so far: {''.join(self.stderr_lines)}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`, return (exit code, seconds it took to exit)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        elapsed = time.monotonic() - start
        time.sleep(0.2)  # let the pump threads drain the pipes
        return code, elapsed

    def events(self) -> list[dict]:
        return [orjson.loads(line) for line in self.stdout_lines if line.strip()]

    def messages(self) -> list[str]:
        """The `message` of each diagnostic line (JSON when stderr is not a TTY, see netagent.log)."""
        return [diagnostic_message(line) for line in self.stderr_lines]


def diagnostic_message(line: str) -> str:
    """The message of one stderr line: a JSON diagnostic's `message`, or the line itself."""
    text = line.strip()
    if text.startswith("<") and ">" in text[:4]:
        text = text[text.index(">") + 1:]  # journald priority prefix
    if text.startswith("{"):
        try:
            return orjson.loads(text).get("message", text)
        except orjson.JSONDecodeError:
            pass
    return text


def read_events(path) -> list[dict]:
    """The complete lines of a file sink's events ([] before the agent created the file)."""
    try:
        with open(path, "rb") as f:
            return [orjson.loads(line) for line in f if line.endswith(b"\n")]
    except FileNotFoundError:
        return []


def sensor_polls(path, name: str) -> int:
    """How often sensor `name` has polled, as the latest heartbeat in the event file says."""
    beats = [e for e in read_events(path) if e["event"]["action"] == "heartbeat"]
    if not beats:
        return 0
    return next((s.get("polls", 0) for s in beats[-1]["netagent"]["agent"]["sensors"] if s["name"] == name), 0)
