"""`netagent run` end to end: real drops in a test namespace, the real drop sensor,
the file sink and the Prometheus sink scraped by a real Prometheus server.

The count the agent reports is compared with the kernel's own counter for the
same packets (Udp NoPorts of the receiving namespace).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import urllib.parse
import urllib.request

import pytest

from agent_proc import read_events, sensor_polls
from lab import veth_pair
from netagent import registry
from waiting import wait_for

SENDER = r"""
import socket, sys
src, dst, dport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
sent = 0
while sent < count:
    try:
        s.sendto(b"x" * 64, (dst, dport))
        sent += 1
    except OSError:
        pass  # an ICMP error reported on this unconnected socket: send again
print(sent)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_ports(ns) -> int:
    lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


class Prometheus:
    """A real Prometheus server (Debian package `prometheus`) scraping the agent on loopback."""

    def __init__(self, tmp_path, target: str):
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: `make setup` installs the Debian package"
        self.port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(textwrap.dedent(f"""
            global:
              scrape_interval: 1s
              scrape_timeout: 900ms
            scrape_configs:
              - job_name: netagent
                static_configs:
                  - targets: ['{target}']
            """))
        self.log = open(tmp_path / "prometheus.log", "wb")
        self.proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 30, "prometheus /-/ready")

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.mark.timeout(120)
def test_drops_flow_to_file_and_to_a_real_prometheus(netns_factory, tmp_path, netagent_bin):
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.78.0.1/24", "10.78.0.2/24")
    metrics_port = free_port()
    port = 47000 + os.getpid() % 1000  # nothing listens on it in the fresh namespace
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "drops")
    config = tmp_path / "agent.toml"
    config.write_text(textwrap.dedent(f"""
        [agent]
        heartbeat = "1s"
        [sensors.drops]
        netns = "{server.name}"
        interval = "500ms"
        [[sinks]]
        type = "file"
        path = "{tmp_path}/events.json"
        [[sinks]]
        type = "prometheus"
        listen = "127.0.0.1:{metrics_port}"
        """) + others)
    events_path = tmp_path / "events.json"
    agent = subprocess.Popen([netagent_bin, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    prom = None
    try:
        wait_for(lambda: any(e["event"]["action"] == "agent-started" for e in read_events(events_path))
                 or agent.poll() is not None, 60, "agent-started")
        assert agent.poll() is None, agent.communicate()[1].decode()
        started = read_events(events_path)[0]
        drops_status = next(s for s in started["netagent"]["agent"]["sensors"] if s["name"] == "drops")
        assert drops_status["state"] == "on", drops_status

        prom = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
        wait_for(lambda: prom.value('up{job="netagent"}') == 1, 30, "the first scrape")
        selector = f'netagent_drops_total{{reason="NO_SOCKET",interface="eth0"}}'
        before = prom.value(selector) or 0.0

        base = no_ports(server)
        n = 300
        out = client.run("python3", "-c", SENDER, "10.78.0.1", "10.78.0.2", str(port), str(n), timeout=60)
        assert int(out.stdout) == n
        kernel_count = no_ports(server) - base
        assert kernel_count == n  # the kernel saw every packet arrive at a closed port

        def ours():
            return sum(e["netagent"]["drop"]["count"] for e in read_events(events_path)
                       if e["event"]["dataset"] == "netagent.drops" and e.get("destination", {}).get("port") == port)

        wait_for(lambda: ours() >= kernel_count, 20, f"{kernel_count} drops in the event file")
        # nothing extra may arrive: wait for three more polls (heartbeats report them), not a fixed time
        polls = sensor_polls(events_path, "drops")
        wait_for(lambda: sensor_polls(events_path, "drops") >= polls + 3, 30, "three more polls")
        assert ours() == kernel_count
        sample = next(e for e in read_events(events_path) if e.get("destination", {}).get("port") == port)
        assert sample["event"]["reason"] == "NO_SOCKET"
        assert sample["netagent"]["drop"]["interface"] == "eth0"
        assert sample["netagent"]["drop"]["netns"] == server.inode
        assert sample["source"]["ip"] == "10.78.0.1" and sample["destination"]["ip"] == "10.78.0.2"

        # every NO_SOCKET drop on eth0 in this namespace, as the file recorded them
        file_total = sum(e["netagent"]["drop"]["count"] for e in read_events(events_path)
                         if e["event"]["dataset"] == "netagent.drops" and e["event"]["reason"] == "NO_SOCKET"
                         and e["netagent"]["drop"]["interface"] == "eth0")
        wait_for(lambda: (prom.value(selector) or 0) >= file_total, 20, "Prometheus to see the drops")
        after = prom.value(selector)
        assert after == file_total and after - before >= kernel_count
        assert prom.value('netagent_sensor_up{sensor="drops"}') == 1
        lost = prom.query("netagent_events_lost_total")
        assert {r["metric"]["place"] for r in lost} == {"kernel", "queue", "sink", "spool"}
        assert all(float(r["value"][1]) == 0 for r in lost)
    finally:
        if prom:
            prom.stop()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()
    events = read_events(events_path)
    assert events[-1]["event"]["action"] == "agent-stopped"
    assert events[-1]["netagent"]["agent"]["lost_total"] == 0
    assert [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))


FLOOD = r"""
import socket, sys, time
src, dst, dport, stop_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
sent = 0
while not os.path.exists(stop_file):
    for _ in range(500):
        try:
            s.sendto(b"x" * 32, (dst, dport))
            sent += 1
        except OSError:
            pass
print(sent)
"""


def drops_config(path, tmp_path, netns: str, interval: str):
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "drops")
    path.write_text(textwrap.dedent(f"""
        [agent]
        heartbeat = "500ms"
        [sensors.drops]
        netns = "{netns}"
        interval = "{interval}"
        [[sinks]]
        type = "file"
        path = "{tmp_path}/events.json"
        """) + others)


@pytest.mark.timeout(300)
def test_reloads_during_a_drop_flood_count_every_drop_exactly_once(netns_factory, tmp_path):
    """SIGHUP with a changed drop sensor while a flood runs: the new sensor attaches
    before the old one detaches (no gap) and the two hand over between two drops
    (no drop counted twice), so the total equals the kernel's Udp NoPorts exactly."""
    from agent_proc import AgentProcess

    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.79.0.1/24", "10.79.0.2/24")
    port = 48000 + os.getpid() % 1000
    config = tmp_path / "agent.toml"
    drops_config(config, tmp_path, server.name, "250ms")
    events_path = tmp_path / "events.json"
    agent = AgentProcess("run", "--config", str(config))
    stop_file = tmp_path / "stop-flood"
    flood = None
    try:
        agent.wait_for_stderr("started (pid", timeout=90)
        base = no_ports(server)
        flood = client.popen("python3", "-c", FLOOD, "10.79.0.1", "10.79.0.2", str(port), str(stop_file),
                             stdout=subprocess.PIPE, text=True)
        wait_for(lambda: no_ports(server) - base > 5000, 30, "the flood to start")
        for i, interval in enumerate(["300ms", "250ms", "350ms"], start=1):
            drops_config(config, tmp_path, server.name, interval)
            agent.proc.send_signal(signal.SIGHUP)
            agent.wait_for_stderr("configuration reloaded", timeout=90)
            wait_for(lambda: sum(1 for e in read_events(events_path)
                                 if e["event"]["action"] == "config-reloaded") >= i, 30, f"reload {i} recorded")
            mark = no_ports(server)
            wait_for(lambda: no_ports(server) - mark > 5000, 30, "drops between reloads")
        stop_file.write_text("")
        sent = int(flood.communicate(timeout=30)[0])
        kernel_count = no_ports(server) - base
        assert kernel_count == sent > 20000

        def ours():
            return sum(e["netagent"]["drop"]["count"] for e in read_events(events_path)
                       if e["event"]["dataset"] == "netagent.drops" and e.get("destination", {}).get("port") == port)

        wait_for(lambda: ours() >= kernel_count, 30, f"{kernel_count} drops in the event file")
        # nothing more may arrive: three more polls of the running drop sensor
        polls = sensor_polls(events_path, "drops")
        wait_for(lambda: sensor_polls(events_path, "drops") >= polls + 3, 30, "three more polls")
        assert ours() == kernel_count, f"counted {ours()} drops, the kernel {kernel_count}"
        reloaded = [e for e in read_events(events_path) if e["event"]["action"] == "config-reloaded"]
        assert [r["netagent"]["agent"]["sensors_restarted"] for r in reloaded] == [["drops"]] * 3
    finally:
        stop_file.write_text("")
        if flood and flood.poll() is None:
            flood.kill()
        code, _ = agent.stop(timeout=30)
    assert code == 0, "".join(agent.stderr_lines)
    events = read_events(events_path)
    assert events[-1]["event"]["action"] == "agent-stopped"
    assert events[-1]["netagent"]["agent"]["lost_total"] == 0
