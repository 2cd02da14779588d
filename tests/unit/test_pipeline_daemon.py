"""`netagent run` with test-double sensors.

The sensors here are fakes registered as modules under a test-only name, so
the daemon's real paths run: registry, config validation, attach, polling
threads, the pipeline, the file sink, signals, reload and sd_notify. Tests
that signal the agent run it as its own process (fake_sensors.py registers
the fakes there) and wait on what it writes; only the start-up refusals
(exit 69/77/78, no signal involved) run in-process through netagent.cli.main.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types

import orjson
import pytest

from netagent import registry
from netagent.cli import main
from netagent.errors import InsufficientPrivilege, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.sensor import Sensor, SensorStatus


class FakeSensor(Sensor):
    def __init__(self, name, interval, per_poll, kernel_lost, can_run=True, attach_error=None):
        self.name = name
        self.interval = interval
        self.per_poll = per_poll
        self.kernel_lost = kernel_lost
        self.can_run = can_run
        self.attach_error = attach_error
        self.attached = False
        self.detached = False
        self.n = 0

    def check(self):
        return SensorStatus(self.name, self.can_run, "fake hook" if self.can_run else None,
                            None if self.can_run else "fake kernel lacks the hook")

    def attach(self):
        if self.attach_error:
            raise self.attach_error
        self.attached = True
        return f"fake hook ({self.name})"

    def poll(self):
        out = []
        for _ in range(self.per_poll):
            self.n += 1
            out.append(new_event(dataset=f"netagent.{self.name}", action="fake", netagent={"n": self.n}))
        return out

    def detach(self):
        self.detached = True

    def losses(self):
        return {"kernel": self.kernel_lost}


def fake_module(name, monkeypatch, **behaviour):
    """A sensor module following the registry contract, importable as netagent_test_<name>."""
    mod = types.ModuleType(f"netagent_test_{name}")
    mod.CONFIG_SECTION = name
    mod.CONFIG_SCHEMA = {"enabled": ("bool", True), "interval": ("duration", 0.05), "per_poll": ("int", 3),
                         "kernel_lost": ("int", 0)}
    mod.instances = []

    def from_config(cfg):
        s = FakeSensor(name, cfg["interval"], cfg["per_poll"], cfg["kernel_lost"], **behaviour)
        mod.instances.append(s)
        return s

    mod.from_config = from_config
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


@pytest.fixture
def sensors(monkeypatch):
    """Two working fakes, one that cannot run here, one whose module does not import."""
    mods = {
        "alpha": fake_module("alpha", monkeypatch),
        "beta": fake_module("beta", monkeypatch),
        "gamma": fake_module("gamma", monkeypatch, can_run=False),
    }
    monkeypatch.setattr(registry, "SENSOR_MODULES", [
        "netagent_test_alpha", "netagent_test_beta", "netagent_test_gamma", "netagent_test_missing"])
    return mods


def write(tmp_path, text, name="agent.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def base_config(tmp_path, extra=""):
    return f"""
        [agent]
        heartbeat = "200ms"
        shutdown_timeout = "3s"
        [sensors.beta]
        kernel_lost = 7
        [[sinks]]
        type = "file"
        path = "{tmp_path}/events.json"
        {extra}
        """


def read_events(path):
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


class Agent:
    """`netagent run` with the fake sensors (fake_sensors.py) as a real process: the test
    signals that process, never itself, and waits on what it writes, not on delays."""

    SPEC = {"modules": ["alpha", "beta", "gamma", "missing:missing"],
            "behaviour": {"gamma": {"can_run": False}}}

    def __init__(self, tmp_path, config, env=None, spec=None):
        self.spec = spec or self.SPEC
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        self.events_path = tmp_path / "events.json"
        self.proc = subprocess.Popen(
            [sys.executable, FAKES, str(self.state), json.dumps(self.spec), "run", "--config", config],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.wait(lambda: self.actions().count("agent-started"), "agent-started")

    def events(self):
        try:
            with open(self.events_path, "rb") as f:
                return [orjson.loads(line) for line in f if line.endswith(b"\n")]
        except FileNotFoundError:
            return []

    def actions(self):
        return [e["event"]["action"] for e in self.events()]

    def wait(self, predicate, what, timeout=60.0):  # generous: the machine may be loaded
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}) before {what}: "
                                     f"{self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode(), time.monotonic() - t0

    def instances(self, name):
        return sorted(p.name for p in self.state.iterdir() if p.name.startswith(f"{name}.") and p.name.endswith(".created"))

    def detached(self, name, k):
        p = self.state / f"{name}.{k}.detached"
        return int(p.read_text()) if p.exists() else None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


FAKES = os.path.join(os.path.dirname(__file__), "fake_sensors.py")


@pytest.fixture
def agents():
    made = []

    def start(*args, **kwargs):
        a = Agent(*args, **kwargs)
        made.append(a)
        return a

    yield start
    for a in made:
        a.kill()


@pytest.mark.timeout(180)
def test_run_lifecycle_sequence_and_totals(tmp_path, agents):
    agent = agents(tmp_path, write(tmp_path, base_config(tmp_path)))
    agent.wait(lambda: sum(1 for e in agent.events() if e["event"]["dataset"] == "netagent.alpha") >= 30
               and agent.actions().count("heartbeat") >= 3, "30 alpha events and 3 heartbeats")
    code, out, err, elapsed = agent.stop()
    assert code == 0, err
    events = agent.events()
    seqs = [e["event"]["sequence"] for e in events]
    assert seqs == list(range(1, len(events) + 1))  # contiguous, in file order

    started, stopped = events[0], events[-1]
    assert started["event"]["action"] == "agent-started" and started["event"]["dataset"] == "netagent.agent"
    by_name = {s["name"]: s for s in started["netagent"]["agent"]["sensors"]}
    assert by_name["alpha"]["state"] == "on" and by_name["alpha"]["attach_path"] == "fake hook (alpha)"
    assert by_name["gamma"]["state"] == "off" and "fake kernel lacks the hook" in by_name["gamma"]["reason"]
    missing = by_name["netagent_test_missing"]  # section named after the module when it cannot load
    assert missing["state"] == "off" and "cannot import netagent_test_missing" in missing["reason"]

    assert stopped["event"]["action"] == "agent-stopped"
    totals = stopped["netagent"]["agent"]
    assert totals["reason"] == "SIGTERM"
    assert totals["events_emitted"] == stopped["event"]["sequence"] == len(events)
    assert totals["lost"] == {"kernel": 7, "queue": 0, "sink": 0, "spool": 0}

    fake = [e for e in events if e["event"]["action"] == "fake"]
    alpha = [e["netagent"]["n"] for e in fake if e["event"]["dataset"] == "netagent.alpha"]
    # every event the sensor produced arrived, including the final poll made at detach
    assert alpha == list(range(1, agent.detached("alpha", 0) + 1)) and len(alpha) >= 30
    assert totals["events_by_dataset"]["netagent.alpha"] == len(alpha)
    assert agent.detached("beta", 0) is not None

    beats = [e for e in events if e["event"]["action"] == "heartbeat"]
    assert len(beats) >= 3
    hb = beats[-1]
    assert hb["event"]["kind"] == "metric"
    agent_fields = hb["netagent"]["agent"]
    assert agent_fields["rss_bytes"] > 10_000_000 and agent_fields["cpu_seconds"] > 0
    assert agent_fields["lost"]["kernel"] == 7
    assert agent_fields["events_emitted"] == hb["event"]["sequence"] - 1
    assert {s["name"]: s["state"] for s in agent_fields["sensors"]}["alpha"] == "on"
    watchdog = agent_fields["watchdog"]
    assert (watchdog["restarts"], watchdog["threads"]) == (0, [])
    # every long-lived thread of a running agent is one the watchdog started
    assert {"pipeline-dispatch", "sensor-alpha", "sensor-beta", "sink-file"} <= set(watchdog["running"])
    assert "started (pid" in err and "stopped (SIGTERM)" in err
    assert elapsed < 6


@pytest.mark.timeout(180)
def test_sighup_with_invalid_config_keeps_the_old_one(tmp_path, agents):
    path = write(tmp_path, base_config(tmp_path))
    agent = agents(tmp_path, path)
    with open(path, "a") as f:
        f.write('\n[sensors.alpha]\ninterval = "soon"\n')
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: "config-reload-failed" in agent.actions(), "config-reload-failed")

    def alpha_after_failure():
        events = agent.events()
        failed = next(i for i, e in enumerate(events) if e["event"]["action"] == "config-reload-failed")
        return sum(1 for e in events[failed:] if e["event"]["dataset"] == "netagent.alpha") >= 5

    agent.wait(alpha_after_failure, "the sensors to go on after the rejected reload")
    code, out, err, _ = agent.stop()
    assert code == 0, err
    assert "reload rejected, keeping the running configuration" in err and "sensors.alpha.interval" in err
    events = agent.events()
    assert [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    failed = [e for e in events if e["event"]["action"] == "config-reload-failed"]
    assert len(failed) == 1
    assert "sensors.alpha.interval" in failed[0]["netagent"]["agent"]["error"]
    assert agent.instances("alpha") == ["alpha.0.created"]  # never re-created


@pytest.mark.timeout(180)
def test_sighup_applies_a_valid_change_and_reopens_files(tmp_path, agents):
    path = write(tmp_path, base_config(tmp_path))
    agent = agents(tmp_path, path)
    second = tmp_path / "second.json"
    os.rename(tmp_path / "events.json", tmp_path / "events.json.rotated")  # logrotate
    with open(path, "a") as f:
        f.write(f'\n[[sinks]]\ntype = "file"\npath = "{second}"\n[sensors.alpha]\nper_poll = 1\n')
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: (tmp_path / "events.json").exists() and second.exists()
               and agent.detached("alpha", 0) is not None, "the reload (new file, new sink, alpha replaced)")
    agent.wait(lambda: "heartbeat" in agent.actions(), "a heartbeat in the reopened file")
    code, out, err, _ = agent.stop()
    assert code == 0, err
    assert "configuration reloaded" in err
    rotated = read_events(tmp_path / "events.json.rotated")
    current = read_events(tmp_path / "events.json")  # reopened at the same path
    seqs = [e["event"]["sequence"] for e in rotated + current]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost across the reopen
    reloaded = next(e for e in current + rotated if e["event"]["action"] == "config-reloaded")
    assert reloaded["netagent"]["agent"]["sinks_started"] == ["file-2"]
    assert reloaded["netagent"]["agent"]["sensors_restarted"] == ["alpha"]
    new_sink = read_events(second)
    assert new_sink and new_sink[-1]["event"]["action"] == "agent-stopped"
    assert agent.instances("alpha") == ["alpha.0.created", "alpha.1.created"]
    assert agent.detached("alpha", 0) is not None
    assert agent.instances("beta") == ["beta.0.created"]  # unchanged sensors keep running


@pytest.mark.timeout(180)
def test_sd_notify_ready_after_sensors_attached(tmp_path, agents):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    try:
        agent = agents(tmp_path, write(tmp_path, base_config(tmp_path)), env={"NOTIFY_SOCKET": sock_path})
        messages = [sock.recv(4096).decode()]
        agent.proc.send_signal(signal.SIGHUP)
        while not messages[-1].startswith("RELOADING=1"):
            messages.append(sock.recv(4096).decode())
        messages.append(sock.recv(4096).decode())  # READY=1 after the reload
        code, out, err, _ = agent.stop()
        assert code == 0, err
        while not messages[-1].startswith("STOPPING=1"):
            messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
    assert messages[0].startswith("READY=1\n")
    assert "STATUS=2 sensor(s) on: alpha (fake hook (alpha)), beta (fake hook (beta))" in messages[0]
    assert any(m.startswith("RELOADING=1") for m in messages)
    assert messages[-1].startswith("STOPPING=1")


def test_no_sensor_can_attach_exits_69(tmp_path, monkeypatch, capsys):
    fake_module("delta", monkeypatch, attach_error=ProbeUnavailable("no such tracepoint"))
    monkeypatch.setattr(registry, "SENSOR_MODULES", ["netagent_test_delta"])
    path = write(tmp_path, f'[[sinks]]\ntype = "file"\npath = "{tmp_path}/e.json"\n')
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", path])
    assert exc.value.code == 69
    assert "no sensor could attach: delta: no such tracepoint" in capsys.readouterr().err


def test_no_privilege_for_any_sensor_exits_77(tmp_path, monkeypatch, capsys):
    fake_module("eps", monkeypatch, attach_error=InsufficientPrivilege("need root or CAP_BPF"))
    monkeypatch.setattr(registry, "SENSOR_MODULES", ["netagent_test_eps"])
    path = write(tmp_path, f'[[sinks]]\ntype = "file"\npath = "{tmp_path}/e.json"\n')
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", path])
    assert exc.value.code == 77


def test_sensor_rejecting_its_configuration_exits_78(tmp_path, monkeypatch, capsys):
    mod = fake_module("zeta", monkeypatch, attach_error=UsageError("unknown drop reason FOO"))
    monkeypatch.setattr(registry, "SENSOR_MODULES", ["netagent_test_zeta"])
    path = write(tmp_path, f'[[sinks]]\ntype = "file"\npath = "{tmp_path}/e.json"\n')
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", path])
    assert exc.value.code == 78
    assert f"{path}:sensors.zeta: unknown drop reason FOO" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e.json") or os.path.getsize(tmp_path / "e.json") == 0
    assert mod.instances[0].attached is False


def test_unusable_sink_exits_78_before_any_sensor_attaches(tmp_path, sensors, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = write(tmp_path, f'[[sinks]]\ntype = "file"\npath = "{blocker}/events.json"\n')
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", path])
    assert exc.value.code == 78
    assert f"{path}:sinks[1].path: cannot open" in capsys.readouterr().err
    assert not sensors["alpha"].instances  # nothing attached


@pytest.mark.timeout(180)
def test_reload_moves_a_prometheus_sink_to_new_settings_on_the_same_port(tmp_path, agents):
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prom = f'\n[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:{port}"\n'
    path = write(tmp_path, base_config(tmp_path) + prom)
    agent = agents(tmp_path, path)
    with open(path, "a") as f:
        f.write("max_interfaces = 8\n")  # same port, other settings: a new sink must take the port over
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: "config-reloaded" in agent.actions(), "config-reloaded")

    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    scraped = agent.wait(scrape, "the new prometheus sink to answer on the same port")
    code, out, err, _ = agent.stop()
    assert code == 0, err
    assert "configuration reloaded" in err and "reload rejected" not in err
    assert 'netagent_events_total{dataset="netagent.alpha"}' in scraped


@pytest.mark.timeout(180)
def test_reload_hands_a_sensor_over_in_the_exact_order(tmp_path, agents):
    """The order that makes the drop sensor's reload exact (see SensorRunner.hand_over):
    the old one is armed before the new one attaches on top of it; only after every
    new runner started is the old one retired, polled a last time (what it counted
    up to the switch), the new one told to forget it, and then the old one detached."""
    spec = {"modules": ["alpha", "beta"], "behaviour": {"alpha": {"handover": True}}}
    path = write(tmp_path, base_config(tmp_path))
    agent = agents(tmp_path, path, spec=spec)
    with open(path, "a") as f:
        f.write('\n[sensors.alpha]\nper_poll = 2\n')
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: "config-reloaded" in agent.actions(), "config-reloaded")
    code, out, err, _ = agent.stop()
    assert code == 0, err
    steps = (tmp_path / "state" / "handover.log").read_text().splitlines()
    assert steps[:6] == ["alpha.0 arm", "alpha.1 attach after alpha.0", "alpha.0 retire",
                         "alpha.0 poll after retire", "alpha.1 release predecessor", "alpha.0 detach"], steps
    events = agent.events()
    alpha = [e for e in events if e["event"]["dataset"] == "netagent.alpha"]
    # the old sensor's last poll (after retire) arrived before the reload was announced
    reloaded_at = next(i for i, e in enumerate(events) if e["event"]["action"] == "config-reloaded")
    old_last = agent.detached("alpha", 0)
    old_events = [e["netagent"]["n"] for e in events[:reloaded_at]
                  if e["event"]["dataset"] == "netagent.alpha" and e["netagent"]["k"] == 0]
    assert old_events == list(range(1, old_last + 1)), "all of the old sensor's events, the last poll included"
    assert alpha and [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.timeout(180)
def test_a_rejected_reload_leaves_the_armed_sensor_counting(tmp_path, agents):
    """A reload that attached the new sensor but failed on another one: the new one is
    detached and the old one disarmed; it keeps running and polling."""
    spec = {"modules": ["alpha", "beta"], "behaviour": {"alpha": {"handover": True}}}
    path = write(tmp_path, base_config(tmp_path))
    agent = agents(tmp_path, path, spec=spec)
    write(tmp_path, base_config(tmp_path).replace("kernel_lost = 7", "kernel_lost = 7\n        reject = true")
          + "\n        [sensors.alpha]\n        per_poll = 2\n")
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait(lambda: (tmp_path / "state" / "alpha.1.detached").exists(), "the new alpha to be given up")

    def old_alpha_after(n):
        return sum(1 for e in agent.events() if e["event"]["dataset"] == "netagent.alpha") >= n

    seen = sum(1 for e in agent.events() if e["event"]["dataset"] == "netagent.alpha")
    agent.wait(lambda: old_alpha_after(seen + 10), "the old alpha to go on polling")
    code, out, err, _ = agent.stop()
    assert code == 0, err
    assert "reload: sensors keep their running configuration" in err and "sensors.beta" in err
    steps = [s for s in (tmp_path / "state" / "handover.log").read_text().splitlines() if s.startswith("alpha")]
    assert steps == ["alpha.0 arm", "alpha.1 attach after alpha.0", "alpha.0 disarm", "alpha.1 detach",
                     "alpha.0 detach"], steps
    # the old instance ran on through the failed reload, to the end, nothing missing
    alpha = [e["netagent"]["n"] for e in agent.events()
             if e["event"]["dataset"] == "netagent.alpha" and e["netagent"]["k"] == 0]
    assert alpha == list(range(1, agent.detached("alpha", 0) + 1))


def test_a_failing_dispatch_is_restarted_and_its_batch_counted_lost(capfd):
    """A bug in the dispatcher (here: stamping raises once) must not stop the flow to
    the sinks: the watchdog restarts the loop, and the events of the failed batch are
    counted at 'queue', so the gap a SIEM sees is a counted one."""
    from netagent.pipeline import Pipeline
    from netagent.watchdog import WATCHDOG

    class Collect:
        name, TYPE = "collect", "test"

        def __init__(self):
            self.got = []

        def submit(self, line, event):
            self.got.append(event["event"]["sequence"])

        def losses(self):
            return {}

        def status(self):
            return {}

    sink = Collect()
    pipeline = Pipeline([sink])
    real_stamp, fail = pipeline.sequencer.stamp, {"left": 1}

    def stamp(event):
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("a bug in dispatch")
        return real_stamp(event)

    pipeline.sequencer.stamp = stamp
    before = WATCHDOG.status()["restarts"]
    pipeline.start()
    try:
        assert pipeline.publish([new_event(dataset="netagent.t", action="a") for _ in range(5)]) == 5
        deadline = time.monotonic() + 30
        while WATCHDOG.status()["restarts"] == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pipeline.publish([new_event(dataset="netagent.t", action="b") for _ in range(5)]) == 5
        assert pipeline.drain(30)
    finally:
        pipeline.stop(5)
    assert sink.got == [1, 2, 3, 4, 5]  # the second batch went through after the restart
    assert pipeline.losses()["queue"] == 5  # the first, failed batch: counted
    assert WATCHDOG.status()["restarts"] == before + 1
    assert "watchdog: thread pipeline-dispatch failed (RuntimeError: a bug in dispatch" in capfd.readouterr().err
