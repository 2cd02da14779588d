"""Reloads hand counting sensors over exactly: totals equal the kernel's counters.

The agent runs as a subprocess (tests/agent_proc.py) with the conntrack sensor
watching a namespace this test creates, where conntrack is active (an iptables
conntrack rule) and a sender keeps making packets conntrack calls invalid (TCP
with SYN and FIN set, which no connection can carry). SIGHUP with a changed
conntrack interval restarts the sensor several times while the packets flow.
The sum of the `invalid` rises the agent reported must equal the kernel's own
counter rise (/proc/net/stat/nf_conntrack read inside the namespace by another
process), exactly: nothing counted twice while the old and the new sensor
overlap (netagent.sensor.CounterHandover), nothing missed in between.

The drop sensor's own exact hand-over is tested in test_daemon_drops.py
(Udp NoPorts across SIGHUP).
"""

import os
import signal
import sys
import textwrap

import pytest

from agent_proc import AgentProcess, read_events, sensor_polls
from lab import veth_pair
from netagent import registry
from netagent.conntrack.stats import parse
from waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

INVALID_TCP = r"""
import os, socket, struct, sys
src, dst, stop = sys.argv[1], sys.argv[2], sys.argv[3]
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
def packet(sport):
    hdr = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x03, 65535, 0, 0)  # SYN|FIN
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    return hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]
packets = [packet(10000 + i) for i in range(256)]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
sent = 0
while not os.path.exists(stop):
    for p in packets:
        s.sendto(p, (dst, 0))
    sent += len(packets)
print(sent)
"""


def invalid_count(ns) -> int:
    return parse(ns.read_proc("net/stat/nf_conntrack")).total("invalid")


def reported_invalid(path, inode: int) -> int:
    return sum(e["netagent"]["conntrack"]["deltas"].get("invalid") or 0 for e in read_events(path)
               if e["event"]["action"] == "counters" and e["netagent"]["conntrack"]["netns"] == inode)


def write_config(path, events, netns: str, interval: str):
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "conntrack")
    path.write_text(textwrap.dedent(f"""
        [agent]
        heartbeat = "500ms"
        [sensors.conntrack]
        netns = ["{netns}"]
        interval = "{interval}"
        per_packet = "off"
        counters = "always"
        [[sinks]]
        type = "file"
        path = "{events}"
        """) + others)


def reload_four_times(agent, rewrite_config, events, kernel_count, counted):
    """Four SIGHUPs, each with a changed poll interval (so every sensor is replaced), with the
    kernel's counter moving by more than 2000 after each reload is recorded."""
    for i, interval in enumerate(["300ms", "250ms", "350ms", "200ms"], start=1):
        rewrite_config(interval)
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: sum(1 for e in read_events(events) if e["event"]["action"] == "config-reloaded") >= i,
                 60, f"reload {i} recorded")
        mark = kernel_count()
        wait_for(lambda: kernel_count() - mark > 2000, 30, f"{counted} between reloads")


def test_conntrack_counters_across_reloads_equal_the_kernels_exactly(netns_factory, tmp_path):
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.76.0.1/24", "10.76.0.2/24")
    server.run("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
    client.run("ping", "-c1", "-q", "-W", "2", "10.76.0.2")
    config, events = tmp_path / "agent.toml", tmp_path / "events.json"
    write_config(config, events, server.name, "250ms")
    agent = AgentProcess("run", "--config", str(config))
    stop_file = tmp_path / "stop"
    sender = None
    try:
        agent.wait_for_stderr("started (pid", timeout=90)
        # the agent's baseline is taken; nothing moves the counter until the sender starts
        wait_for(lambda: sensor_polls(events, "conntrack") >= 2, 30, "the conntrack sensor polling")
        base = invalid_count(server)
        sender = client.popen(sys.executable, "-c", INVALID_TCP, "10.76.0.1", "10.76.0.2", str(stop_file),
                              stdout=-1, text=True)
        wait_for(lambda: invalid_count(server) - base > 2000, 30, "invalid packets counted by the kernel")
        reload_four_times(agent, lambda interval: write_config(config, events, server.name, interval), events,
                          lambda: invalid_count(server), "invalid packets")
        stop_file.write_text("")
        sender.communicate(timeout=30)
        kernel = invalid_count(server) - base
        wait_for(lambda: reported_invalid(events, server.inode) >= kernel, 30, f"{kernel} invalid in the events")
        # and nothing more arrives: three more polls of the running sensor
        polls = sensor_polls(events, "conntrack")
        wait_for(lambda: sensor_polls(events, "conntrack") >= polls + 3, 30, "three more polls")
        assert invalid_count(server) - base == kernel, "the counter moved without the sender"
        assert reported_invalid(events, server.inode) == kernel, \
            f"reported {reported_invalid(events, server.inode)} invalid, the kernel counted {kernel}"
        reloaded = [e for e in read_events(events) if e["event"]["action"] == "config-reloaded"]
        assert [r["netagent"]["agent"]["sensors_restarted"] for r in reloaded] == [["conntrack"]] * 4
    finally:
        stop_file.write_text("")
        if sender is not None and sender.poll() is None:
            sender.kill()
        code, _ = agent.stop(timeout=30)
    assert code == 0, "".join(agent.stderr_lines)


UDP_FLOOD = r"""
import os, socket, sys
dst, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
while not os.path.exists(stop):
    for _ in range(200):
        try:
            s.sendto(b"x" * 32, (dst, port))
            sent += 1
        except OSError:
            pass  # an ICMP port unreachable reported on this socket: send on
print(sent)
"""


def no_ports(ns) -> int:
    lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def reported_no_ports(path, inode: int) -> int:
    return sum(e["netagent"]["host"]["snmp"].get("udp_no_ports") or 0 for e in read_events(path)
               if e["event"]["action"] == "netns-counters" and e["netagent"]["host"]["netns"]["inode"] == inode)


def host_config(path, events, netns: str, interval: str):
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "host")
    path.write_text(textwrap.dedent(f"""
        [agent]
        heartbeat = "500ms"
        [sensors.host]
        netns = ["{netns}"]
        interval = "{interval}"
        [[sinks]]
        type = "file"
        path = "{events}"
        """) + others)


def test_host_counters_across_reloads_equal_the_kernels_exactly(netns_factory, tmp_path):
    """The host sensor's netns counters (Udp NoPorts of a namespace it watches) across
    four SIGHUPs that change its interval: the reported rises sum to the kernel's."""
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.75.0.1/24", "10.75.0.2/24")
    config, events = tmp_path / "agent.toml", tmp_path / "events.json"
    host_config(config, events, server.name, "250ms")
    agent = AgentProcess("run", "--config", str(config))
    stop_file = tmp_path / "stop"
    sender = None
    try:
        agent.wait_for_stderr("started (pid", timeout=90)
        wait_for(lambda: sensor_polls(events, "host") >= 2, 30, "the host sensor polling")
        base = no_ports(server)
        sender = client.popen(sys.executable, "-c", UDP_FLOOD, "10.75.0.2", "47999", str(stop_file),
                              stdout=-1, text=True)
        wait_for(lambda: no_ports(server) - base > 2000, 30, "UDP to a closed port counted by the kernel")
        reload_four_times(agent, lambda interval: host_config(config, events, server.name, interval), events,
                          lambda: no_ports(server), "NoPorts")
        stop_file.write_text("")
        sender.communicate(timeout=30)
        kernel = no_ports(server) - base
        wait_for(lambda: reported_no_ports(events, server.inode) >= kernel, 30, f"{kernel} NoPorts in the events")
        polls = sensor_polls(events, "host")
        wait_for(lambda: sensor_polls(events, "host") >= polls + 3, 30, "three more polls")
        assert no_ports(server) - base == kernel, "the counter moved without the sender"
        assert reported_no_ports(events, server.inode) == kernel, \
            f"reported {reported_no_ports(events, server.inode)} NoPorts, the kernel counted {kernel}"
        reloaded = [e for e in read_events(events) if e["event"]["action"] == "config-reloaded"]
        assert [r["netagent"]["agent"]["sensors_restarted"] for r in reloaded] == [["host"]] * 4
        seen = [e for e in read_events(events) if e["event"]["action"] == "interface-seen"]
        assert len(seen) == len({e["netagent"]["overlay"]["interface"]["name"] for e in seen}), \
            "no interface announced again by a successor"
    finally:
        stop_file.write_text("")
        if sender is not None and sender.poll() is None:
            sender.kill()
        code, _ = agent.stop(timeout=30)
    assert code == 0, "".join(agent.stderr_lines)
