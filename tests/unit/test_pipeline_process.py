"""`netagent run` as a real process: signals, exit codes, readiness.

No privileges needed: the sensors are disabled, so the agent runs its
pipeline with lifecycle and heartbeat events only.
"""

import os
import signal
import socket
import subprocess
import textwrap
import time

import orjson
import pytest

from netagent import registry
from agent_proc import read_events
from waiting import wait_for


def sensors_off() -> str:
    """Every registered sensor disabled: these tests are about the agent, not the sensors."""
    return "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules() if m.loaded)


def write_config(tmp_path, heartbeat="200ms", extra=""):
    path = tmp_path / "agent.toml"
    path.write_text(f"[agent]\nheartbeat = \"{heartbeat}\"\n" + sensors_off() + textwrap.dedent(f"""
        [[sinks]]
        type = "stdout"
        [[sinks]]
        type = "file"
        path = "{tmp_path}/events.json"
        {extra}
        """))
    return str(path)


def start(netagent_bin, config, tmp_path, env=None):
    proc = subprocess.Popen([netagent_bin, "run", "--config", config], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    wait_for(lambda: any(e["event"]["action"] == "agent-started" for e in read_events(tmp_path / "events.json"))
             or proc.poll() is not None, what="agent-started")
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0_within_5s(netagent_bin, tmp_path, sig):
    proc = start(netagent_bin, write_config(tmp_path), tmp_path)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert elapsed < 5.0
    stdout_events = [orjson.loads(line) for line in out.splitlines()]
    file_events = read_events(tmp_path / "events.json")
    assert stdout_events == file_events  # both sinks got every event
    assert stdout_events[0]["event"]["action"] == "agent-started"
    assert stdout_events[-1]["event"]["action"] == "agent-stopped"
    assert stdout_events[-1]["netagent"]["agent"]["reason"] == signal.Signals(sig).name
    assert [e["event"]["sequence"] for e in stdout_events] == list(range(1, len(stdout_events) + 1))
    assert b"Traceback" not in err


@pytest.mark.timeout(180)
def test_sighup_with_invalid_config_keeps_running(netagent_bin, tmp_path):
    config = write_config(tmp_path)
    proc = start(netagent_bin, config, tmp_path)
    with open(config, "a") as f:
        f.write('\n[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:99999"\n')
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"]["action"] == "config-reload-failed" for e in read_events(tmp_path / "events.json")),
             what="config-reload-failed")
    n = len(read_events(tmp_path / "events.json"))
    # still alive and still emitting heartbeats with the old configuration
    wait_for(lambda: len(read_events(tmp_path / "events.json")) >= n + 3, what="heartbeats after the reload")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "reload rejected, keeping the running configuration" in err.decode()
    assert "sinks[3].listen: bad address '127.0.0.1:99999': port must be 1-65535" in err.decode()
    events = read_events(tmp_path / "events.json")
    assert [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.timeout(180)
def test_readiness_is_sent_over_notify_socket(netagent_bin, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(60)
        proc = start(netagent_bin, write_config(tmp_path, heartbeat="1h"), tmp_path, env={"NOTIFY_SOCKET": sock_path})
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\n") and f"MAINPID={proc.pid}" in ready
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode().startswith("STOPPING=1")
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_invalid_config_exits_78_with_one_line(netagent_bin, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[sinks]]\ntype = "file"\npath = "/tmp/x.json"\nbackups = "five"\n')
    r = subprocess.run([netagent_bin, "run", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert r.stderr.strip() == f"netagent: {config}:sinks[1].backups: expected an integer, got string 'five'"
    assert r.stdout == ""
