"""The agent's own diagnostics (netagent.log): JSON lines with the events' base fields
where a machine reads them, structlog's console renderer on a terminal, and the
commands' one-line error contract untouched. Runs `netagent run` as a real process."""

import os
import pty
import signal
import subprocess
import sys
import time

import orjson
import pytest

from netagent import registry

NETAGENT = os.path.join(sys.prefix, "bin", "netagent")
pytestmark = pytest.mark.timeout(180)


def config(tmp_path) -> str:
    path = tmp_path / "agent.toml"
    off = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules() if m.loaded)
    path.write_text(f'[agent]\nheartbeat = "1h"\n{off}[[sinks]]\ntype = "file"\npath = "{tmp_path}/e.json"\n')
    return str(path)


def wait_started(tmp_path, proc):
    deadline = time.monotonic() + 60  # generous: the machine may be loaded
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if b"agent-started" in (tmp_path / "e.json").read_bytes():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError("agent-started never written")


def run_and_stop(tmp_path, env=None, stderr=subprocess.PIPE):
    proc = subprocess.Popen([NETAGENT, "run", "--config", config(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=stderr, env={**os.environ, "NETAGENT_LOG_FORMAT": "", **(env or {})})
    wait_started(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


def test_not_a_tty_one_json_object_a_line_with_the_events_base_fields(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    proc = subprocess.Popen([NETAGENT, "run", "--config", config(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**env, "NETAGENT_LOG_FORMAT": ""})
    wait_started(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = err.decode().splitlines()
    assert lines
    records = [orjson.loads(line) for line in lines]  # every line parses: nothing else on stderr
    event = orjson.loads((tmp_path / "e.json").read_bytes().splitlines()[0])
    for rec in records:
        assert rec["@timestamp"].endswith("Z")
        assert rec["log"]["level"] in ("info", "warning", "error", "notice")
        assert rec["agent"] == event["agent"] and rec["host"] == event["host"] and rec["ecs"] == event["ecs"]
        assert rec["event"]["dataset"] == "netagent.log"
    messages = [r["message"] for r in records]
    assert any(m.startswith("started (pid ") for m in messages), messages
    assert any(m.startswith("stopped (SIGTERM)") for m in messages), messages
    assert any(m == "every sensor is disabled in the configuration: only heartbeats will be emitted"
               and r["log"]["level"] == "warning" for m, r in zip(messages, records))


def test_under_systemd_each_json_line_carries_the_journal_priority(tmp_path):
    err = run_and_stop(tmp_path, env={"JOURNAL_STREAM": "8:12345"}).decode()
    lines = err.splitlines()
    assert lines and all(line[0] == "<" and line[2] == ">" for line in lines), lines
    recs = [(int(line[1]), orjson.loads(line[3:])) for line in lines]
    assert all({"info": 6, "warning": 4, "error": 3, "notice": 5}[r["log"]["level"]] == prio for prio, r in recs)


def test_on_a_terminal_the_console_renderer(tmp_path):
    main, sub = pty.openpty()
    try:
        proc = subprocess.Popen([NETAGENT, "run", "--config", config(tmp_path)], stdout=subprocess.DEVNULL,
                                stderr=sub, env={**{k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"},
                                                 "NETAGENT_LOG_FORMAT": ""})
        os.close(sub)
        wait_started(tmp_path, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        out = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child side is closed and everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
    text = out.decode(errors="replace")
    assert "started (pid" in text and "stopped (SIGTERM)" in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines()), text
    assert "info" in text  # the level, as the console renderer shows it


def test_a_command_error_stays_one_plain_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nheartbeat = "often"\n')
    r = subprocess.run([NETAGENT, "run", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"netagent: {bad}:agent.heartbeat: "), r.stderr
