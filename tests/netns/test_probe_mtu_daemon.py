"""`netagent run` with [sensors.mtu]: configured targets probed on an interval, one event each."""

import time
from datetime import datetime

import pytest
from agent_proc import AgentProcess
from test_probe_mtu import SERVER4, drop_frag_needed, make_pmtu_lab

from netagent.registry import load_modules

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]


def write_config(path, client, targets_toml: str) -> None:
    # only the MTU sensor: every other sensor is switched off so this test
    # measures nothing but the MTU events
    others = "\n".join(f"[sensors.{m.section}]\nenabled = false\n" for m in load_modules() if m.section != "mtu")
    path.write_text(f"""
{others}
[sensors.mtu]
enabled = true
interval = "2s"
netns = "{client.name}"
targets = {targets_toml}

[[sinks]]
type = "stdout"
""")


def mtu_events(agent):
    return [e for e in agent.events() if e.get("event", {}).get("dataset") == "netagent.mtu"]


def test_daemon_probes_configured_targets_on_an_interval(netns_factory, tmp_path):
    client, router, server = make_pmtu_lab(netns_factory)
    drop_frag_needed(router)  # the path black-holes above 1400: the finding the daemon must report
    cfg = tmp_path / "netagent.toml"
    write_config(cfg, client, f'["{SERVER4}", {{ target = "10.2.0.2", proto = "tcp", port = 8443 }}, "10.55.0.1"]')
    agent = AgentProcess("run", "--config", str(cfg))
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(mtu_events(agent)) < 6:
            if agent.proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        code, _ = agent.stop()
    events = mtu_events(agent)
    assert code == 0, "".join(agent.stderr_lines)
    assert len(events) >= 6, (len(events), "".join(agent.stderr_lines))
    by_round = [events[i:i + 3] for i in range(0, 6, 3)]
    for icmp_ev, tcp_ev, unreachable_ev in by_round:
        m = icmp_ev["netagent"]["mtu"]
        assert (icmp_ev["destination"]["ip"], m["status"], m["path_mtu"]) == (SERVER4, "blackhole", 1400)
        t = tcp_ev["netagent"]["mtu"]
        assert (t["proto"], t["port"], t["status"], t["path_mtu"]) == ("tcp", 8443, "blackhole", 1400)
        u = unreachable_ev["netagent"]["mtu"]
        assert u["status"] == "unreachable" and "unreachable" in u["error"]
        assert unreachable_ev["event"]["outcome"] == "failure"
    # the daemon numbers events in order; rounds are an interval (2 s) apart
    seqs = [e["event"]["sequence"] for e in events]
    assert seqs == sorted(seqs)
    first, second = (datetime.fromisoformat(e["@timestamp"].replace("Z", "+00:00")) for e in (events[0], events[3]))
    assert (second - first).total_seconds() >= 1.5
