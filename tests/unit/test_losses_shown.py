"""Losses and degraded modes reach the heartbeat, agent-stopped and Prometheus (issue 13, item 7).

The daemon runs in-process with fake sensors (no signals: start, heartbeat
and stop are called directly), so the real registry, runner, pipeline,
correlator and file sink are used.
"""

import sys
import textwrap
import time
import types

import orjson
import pytest
from test_sinks_prometheus import free_port, scrape

from netagent import config as config_mod
from netagent import registry
from netagent.daemon import Daemon
from netagent.events import new_event
from netagent.sensor import Sensor, SensorStatus

COUNTERS_ONLY = "per-packet part failed: kprobes unavailable; counters only"


class NarratingSensor(Sensor):
    """Like the conntrack sensor: can run, with a caveat, and announces a degraded mode at attach."""

    name = "narrator"

    def __init__(self, interval):
        self.interval = interval
        self.announce = None  # the daemon gives it a callable
        self.polled = 0

    def check(self):
        return SensorStatus(self.name, True, "counters", "kprobes unavailable: counters and correlation",
                            {"caveat": "insert_failed counts clash resolutions on this kernel"})

    def attach(self):
        self.announce(COUNTERS_ONLY)
        return "counters"

    def poll(self):
        self.polled += 1
        if self.polled > 1:
            return []
        # a drop event the correlator cannot read (count is not a number): it fails on it
        bad = new_event(dataset="netagent.drops", action="packet-dropped", netagent={"drop": {"count": "many"}})
        return [bad, new_event(dataset="netagent.narrator", action="fine")]

    def detach(self):
        pass

    def losses(self):
        return {"kernel": 5}


@pytest.fixture
def narrator(monkeypatch):
    mod = types.ModuleType("netagent_test_narrator")
    mod.CONFIG_SECTION = "narrator"
    mod.CONFIG_SCHEMA = {"interval": ("duration", 0.05)}
    mod.from_config = lambda cfg: NarratingSensor(cfg["interval"])
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(registry, "SENSOR_MODULES", ["netagent_test_narrator"])
    return mod


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.timeout(60)
def test_processor_failures_findings_and_sensor_notes_are_shown(tmp_path, narrator):
    port = free_port()
    path = tmp_path / "agent.toml"
    path.write_text(textwrap.dedent(f"""
        [agent]
        heartbeat = "1h"
        [[sinks]]
        type = "file"
        path = "{tmp_path}/events.json"
        [[sinks]]
        type = "prometheus"
        listen = "127.0.0.1:{port}"
        """))
    daemon = Daemon(config_mod.load(str(path)), str(path))
    daemon.start()
    try:
        assert wait_for(lambda: daemon.pipeline.processor_failed >= 1)
        hb = daemon.heartbeat_event()["netagent"]["agent"]
        (prometheus,) = [s for s in daemon.pipeline.sinks if s.TYPE == "prometheus"]
        samples = scrape(prometheus)
    finally:
        daemon.stop("test")

    assert hb["processing"]["failed"] == 1
    assert hb["processing"]["findings"]["rule_errors"] == 0 and "records_evicted" in hb["processing"]["findings"]
    (sensor,) = hb["sensors"]
    assert COUNTERS_ONLY in sensor["notes"]
    assert "kprobes unavailable: counters and correlation" in sensor["notes"]
    assert "insert_failed counts clash resolutions on this kernel" in sensor["notes"]

    assert samples[("netagent_processor_failures_total", ())] == 1
    assert samples[("netagent_events_lost_total", (("place", "kernel"), ("sensor", "narrator")))] == 5
    assert samples[("netagent_sensor_notes_total", (("sensor", "narrator"),))] == 3
    assert ("netagent_findings_active", ()) in samples

    events = [orjson.loads(line) for line in (tmp_path / "events.json").read_bytes().splitlines()]
    stopped = events[-1]["netagent"]["agent"]
    assert events[-1]["event"]["action"] == "agent-stopped"
    assert stopped["processing"]["failed"] == 1
    assert COUNTERS_ONLY in stopped["sensors"][0]["notes"]
