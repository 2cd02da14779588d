"""Loss-free SIEM shipping with a real rsyslogd as the TLS collector (root).

The agent is the real `netagent run` process with the drops sensor filtered
to a namespace this test creates, where a sender keeps making UDP packets to
closed ports (kernel drop reason NO_SOCKET). rsyslogd (imtcp + gtls driver,
StreamDriver.Mode 1) runs with its own configuration, certificates and work
directory under tmp, on 127.0.0.1, and writes every message it receives to a
file (%rawmsg%), which is what these tests read.

What a SIEM user checks: every event arrives, in order, `event.sequence`
without gaps, across a collector outage and an agent restart. Delivery is
at-least-once (see docs/syslog.md): events from the last moments before an
outage may arrive twice, and a SIEM drops repeats by (PROCID, sequence); the
tests do the same and bound the number of repeats.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from agent_proc import AgentProcess, read_events
from rsyslog_lab import Rsyslog, dedupe_sequences, fill_filesystem, make_ca, make_certs, parse_message
from waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

DROP_SENDER = r"""
import itertools, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in itertools.count():
    # a different closed port each time: each is its own flow, so its own event
    s.sendto(b"x" * 32, ("127.0.0.1", 20000 + i % 20000))
    time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def rsyslog(tmp_path, certs):
    rs = Rsyslog(str(tmp_path / "rsyslog"), certs).start()
    yield rs
    rs.stop()


@pytest.fixture
def dropping_ns(netns_factory):
    """A namespace where ~100 UDP packets a second are dropped (no socket)."""
    ns = netns_factory()
    sender = ns.popen(sys.executable, "-c", DROP_SENDER)
    yield ns
    sender.kill()
    sender.wait(5)


def write_config(tmp_path, ns, address, ca_file, name="netagent.toml", events_file=None, **syslog):
    """events_file: also write every event there (a file sink), to watch heartbeats
    while the collector receives nothing."""
    table = {
        "type": "syslog", "address": address, "ca_file": ca_file, "spool_dir": str(tmp_path / "spool"),
        "reconnect_min": "100ms", "reconnect_max": "1s", **syslog,
    }
    sinks = "[[sinks]]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items())
    if events_file:
        sinks += f'[[sinks]]\ntype = "file"\npath = "{events_file}"\n'
    text = f"""
[agent]
heartbeat = "2s"
shutdown_timeout = "5s"
[sensors.drops]
netns = "{ns.name}"
interval = "250ms"
[sensors.conntrack]
enabled = false
[sensors.host]
enabled = false
[sensors.dns]
enabled = false
[sensors.mtu]
enabled = false
{sinks}"""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def start_agent(config):
    agent = AgentProcess("run", "--config", config)
    wait_said(agent, "started (pid")
    return agent


def stop_agent(agent) -> int:
    """SIGTERM; returns how many events the run emitted (from its final line)."""
    code, elapsed = agent.stop(timeout=20)
    err = "\n".join(agent.messages())
    assert code == 0, err
    m = re.search(r"stopped \(SIGTERM\): (\d+) events emitted, lost: (.*)", err)
    assert m, err
    assert m.group(2).strip() == "kernel 0, queue 0, sink 0, spool 0", m.group(0)
    return int(m.group(1))


def received(rs: Rsyslog) -> list[tuple[int, dict]]:
    """(PROCID, event) for every message rsyslog wrote, in arrival order."""
    out = []
    for line in rs.raw_lines():
        header, event = parse_message(line)
        assert header["app"] == "netagent"
        assert int(header["pri"]) == 16 * 8 + 6  # local0.info
        out.append((int(header["procid"]), event))
    return out


def said(agent, needle) -> str | None:
    """A stderr line containing `needle`, however long ago it was written."""
    return next((line for line in agent.stderr_lines if needle in line), None)


def wait_said(agent, needle, timeout=20.0) -> str:
    assert wait_until(lambda: said(agent, needle) or agent.proc.poll() is not None, timeout), \
        f"no {needle!r} on stderr within {timeout}s: {''.join(agent.stderr_lines)}"
    line = said(agent, needle)
    assert line, f"agent exited without saying {needle!r}: {''.join(agent.stderr_lines)}"
    return line


def spool_causes(rs) -> list[dict]:
    """The syslog sink's spool losses by cause, as each heartbeat that arrived said them."""
    return [s["lost_causes"]["spool"] for _, e in received(rs) if e["event"]["action"] == "heartbeat"
            for s in e["netagent"]["agent"]["sinks"] if s["type"] == "syslog"]


def syslog_status(events_file, pid: int | None = None) -> dict:
    """The syslog sink's status in the last heartbeat (of agent `pid`) in the file sink's output."""
    for event in reversed(read_events(events_file)):
        if event["event"]["action"] == "heartbeat" and pid in (None, event["process"]["pid"]):
            return next((s for s in event["netagent"]["agent"]["sinks"] if s["type"] == "syslog"), {})
    return {}


def syslog_delivery_failures(events_file) -> int:
    """The syslog sink's failed connects and broken connections."""
    return syslog_status(events_file).get("delivery_failures", 0)


def spooled_on_disk(events_file, pid: int | None = None) -> int:
    status = syslog_status(events_file, pid)
    return status.get("spooled", 0) - status.get("spool_held", 0)


def drops_in_file(events_file, start: float, end: float) -> int:
    """Drop events the agent emitted with a timestamp between start and end (wall clock)."""
    return sum(1 for e in read_events(events_file) if e["event"]["dataset"] == "netagent.drops"
               and start < _epoch(e["@timestamp"]) < end)


def drops_received(rs):
    return sum(1 for _, e in received(rs) if e["event"]["dataset"] == "netagent.drops")


def test_collector_outage_every_event_arrives_in_order(tmp_path, rsyslog, dropping_ns, certs):
    events_file = tmp_path / "events.json"
    config = write_config(tmp_path, dropping_ns, rsyslog.address, certs.ca, events_file=str(events_file))
    agent = start_agent(config)
    try:
        wait_said(agent, "connected (TLS")
        assert wait_until(lambda: drops_received(rsyslog) >= 20)
        rsyslog.stop()
        outage_start = time.time()
        wait_said(agent, "cannot deliver")
        # drops continue; the agent spools (the file sink shows them being emitted)
        assert wait_until(lambda: drops_in_file(events_file, outage_start + 0.5, time.time() - 0.5) >= 30,
                          timeout=60)
        outage_end = time.time()
        assert agent.proc.poll() is None
        rsyslog.start()
        wait_said(agent, "spooled events first, in order")
        mark = drops_received(rsyslog)
        assert wait_until(lambda: drops_received(rsyslog) >= mark + 20, timeout=60), "delivery goes on"
    finally:
        emitted = stop_agent(agent)
    events = [e for _, e in received(rsyslog)]
    order, repeats = dedupe_sequences(events)
    assert order == list(range(1, emitted + 1)), "every event, in order, event.sequence without gaps"
    assert repeats <= 300, "at-least-once repeats only the last moments before the outage"
    by_seq = {e["event"]["sequence"]: e for e in events}
    # the outage really happened while drops were being reported
    during = [e for e in by_seq.values() if e["event"]["dataset"] == "netagent.drops"
              and outage_start + 0.5 < _epoch(e["@timestamp"]) < outage_end - 0.5]
    assert len(during) >= 30, "the drop events produced during the outage arrived"
    assert all(e["event"]["reason"] == "NO_SOCKET" for e in during)
    assert by_seq[emitted]["event"]["action"] == "agent-stopped"
    assert by_seq[1]["event"]["action"] == "agent-started"


def test_agent_restarted_while_collector_down(tmp_path, rsyslog, dropping_ns, certs):
    events_file = tmp_path / "events.json"
    config = write_config(tmp_path, dropping_ns, rsyslog.address, certs.ca, events_file=str(events_file))
    first = start_agent(config)
    try:
        wait_said(first, "connected (TLS")
        assert wait_until(lambda: drops_received(rsyslog) >= 10)
        rsyslog.stop()
        wait_said(first, "cannot deliver")
        assert wait_until(lambda: spooled_on_disk(events_file, first.proc.pid) >= 10, timeout=60)
    finally:
        emitted_first = stop_agent(first)
    assert any("stay in the spool" in line for line in first.stderr_lines)
    pid_first = first.proc.pid

    second = start_agent(config)
    try:
        line = wait_said(second, "left in the spool by a previous run will be sent first")
        left = int(re.search(r"(\d+) events left", line).group(1))
        # the new run spools events of its own while the collector is still down
        assert wait_until(lambda: spooled_on_disk(events_file, second.proc.pid) >= left + 10, timeout=60)
        rsyslog.start()
        wait_said(second, "spooled events first, in order")
        mark = drops_received(rsyslog)
        assert wait_until(lambda: drops_received(rsyslog) >= mark + 10, timeout=60), "delivery goes on"
    finally:
        emitted_second = stop_agent(second)
    pid_second = second.proc.pid

    got = received(rsyslog)
    assert {pid for pid, _ in got} == {pid_first, pid_second}
    first_run = [e for pid, e in got if pid == pid_first]
    second_run = [e for pid, e in got if pid == pid_second]
    assert dedupe_sequences(first_run)[0] == list(range(1, emitted_first + 1))
    assert dedupe_sequences(second_run)[0] == list(range(1, emitted_second + 1))
    # the previous run's spool goes out before anything of the new run
    last_first = max(i for i, (pid, _) in enumerate(got) if pid == pid_first)
    first_second = min(i for i, (pid, _) in enumerate(got) if pid == pid_second)
    assert last_first < first_second
    assert sum(1 for _ in got) - emitted_first - emitted_second <= 300


def test_agent_killed_9_while_collector_down_keeps_its_spool(tmp_path, rsyslog, dropping_ns, certs):
    """kill -9 can lose what was still in memory, never what reached the spool:
    the killed run's events arrive as a gap-free prefix 1..K, then the new run."""
    events_file = tmp_path / "events.json"
    config = write_config(tmp_path, dropping_ns, rsyslog.address, certs.ca, events_file=str(events_file))
    rsyslog.stop()
    first = start_agent(config)
    wait_said(first, "cannot deliver")
    # a heartbeat says at least 20 events are in the spool's files (what kill -9 cannot take)
    assert wait_until(lambda: spooled_on_disk(events_file) >= 20, timeout=60), syslog_status(events_file)
    first.proc.kill()
    first.proc.wait(10)
    second = start_agent(config)
    try:
        line = wait_said(second, "left in the spool by a previous run")
        spooled = int(re.search(r"(\d+) events left", line).group(1))
        assert spooled >= 20
        rsyslog.start()
        wait_said(second, "spooled events first, in order")
        # the killed run's spool arrived, then the new run's own events
        assert wait_until(lambda: sum(1 for pid, _ in received(rsyslog) if pid == second.proc.pid) >= 10,
                          timeout=60)
    finally:
        emitted_second = stop_agent(second)
    got = received(rsyslog)
    killed = [e for pid, e in got if pid == first.proc.pid]
    assert dedupe_sequences(killed) == (list(range(1, spooled + 1)), 0)
    assert dedupe_sequences([e for pid, e in got if pid == second.proc.pid])[0] == list(range(1, emitted_second + 1))
    assert [pid for pid, _ in got[:spooled]] == [first.proc.pid] * spooled


def test_wrong_ca_refused_said_once_spooled_then_delivered(tmp_path, rsyslog, dropping_ns, certs):
    wrong_ca, _ = make_ca(str(tmp_path), "wrong", "a CA the collector does not use")
    events_file = tmp_path / "events.json"
    config = write_config(tmp_path, dropping_ns, rsyslog.address, wrong_ca, events_file=str(events_file))
    agent = start_agent(config)
    try:
        line = wait_said(agent, "certificate verification failed")
        # several reconnect attempts failed (backoff capped at 1s), as a heartbeat counts them
        assert wait_until(lambda: syslog_delivery_failures(events_file) >= 3, timeout=60), \
            syslog_delivery_failures(events_file)
        assert agent.proc.poll() is None, "the agent must keep running"
    finally:
        emitted = stop_agent(agent)
    assert "not signed by a CA in ca_file" in line and "spooling to" in line
    err = "".join(agent.stderr_lines)
    assert err.count("certificate verification failed") == 1, err
    assert not rsyslog.raw_lines(), "nothing may be sent over a connection we did not trust"
    assert f"{emitted} events stay in the spool" in err

    # with the right CA, the spooled run arrives complete and in order
    shutil.copy(certs.ca, wrong_ca)
    second = start_agent(config)
    try:
        assert wait_until(lambda: len(received(rsyslog)) >= emitted)
    finally:
        stop_agent(second)
    first_pid = agent.proc.pid
    got = [e for pid, e in received(rsyslog) if pid == first_pid]
    assert dedupe_sequences(got) == (list(range(1, emitted + 1)), 0)


def test_mutual_tls_with_rsyslog_x509_name(tmp_path, certs, dropping_ns):
    rs = Rsyslog(str(tmp_path / "rsyslog-mtls"), certs, auth="x509/name").start()
    try:
        # without a client certificate rsyslog refuses us, and the agent says so
        events_file = tmp_path / "anon-events.json"
        anon = write_config(tmp_path, dropping_ns, rs.address, certs.ca, name="anon.toml",
                            spool_dir=str(tmp_path / "spool-anon"), events_file=str(events_file))
        agent = start_agent(anon)
        try:
            line = wait_said(agent, "cannot deliver")
            # refused more than once (a heartbeat counts the attempts), and still nothing arrived
            assert wait_until(lambda: syslog_delivery_failures(events_file) >= 2, timeout=60), \
                syslog_delivery_failures(events_file)
        finally:
            stop_agent(agent)
        assert not rs.raw_lines()
        assert "does the collector require a client certificate" in line

        mutual = write_config(tmp_path, dropping_ns, rs.address, certs.ca, name="mtls.toml",
                              cert_file=certs.client_cert, key_file=certs.client_key)
        agent = start_agent(mutual)
        try:
            wait_said(agent, "connected (TLS")
            assert wait_until(lambda: drops_received(rs) >= 5)
        finally:
            emitted = stop_agent(agent)
        got = [e for pid, e in received(rs) if pid == agent.proc.pid]
        assert dedupe_sequences(got) == (list(range(1, emitted + 1)), 0)
    finally:
        rs.stop()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_rsyslog_lab_leaves_no_process_behind(tmp_path, certs):
    rs = Rsyslog(str(tmp_path / "rs"), certs).start()
    pid = rs.proc.pid
    rs.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.parametrize("memory", [None, "2KiB"], ids=["held-in-memory", "memory-bound-overflows"])
def test_full_spool_disk_while_collector_down_holds_events_and_resumes(tmp_path, rsyslog, dropping_ns, certs, memory):
    """The spool lives on a small tmpfs that fills up (ENOSPC) while rsyslog is down.
    Events the disk refuses wait in memory (spool_memory_bytes) and are spooled once
    the disk takes writes again: with the default bound nothing is lost. With a bound
    too small for the outage, what overflows is counted as `spool` losses with the
    cause. Either way, when the collector comes back (disk still full: even the cursor
    cannot be written) and then the space returns, delivery resumes by itself, and the
    sequence numbers missing at rsyslog are exactly the counted spool losses."""
    disk = tmp_path / "spooldisk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(disk)], check=True)
    extra = {"spool_memory_bytes": memory} if memory else {}
    try:
        config = write_config(tmp_path, dropping_ns, rsyslog.address, certs.ca,
                              spool_dir=str(disk / "spool"), spool_max_bytes="64MB", **extra)
        agent = start_agent(config)
        try:
            wait_said(agent, "connected (TLS")
            assert wait_until(lambda: drops_received(rsyslog) >= 10)
            rsyslog.stop()
            wait_said(agent, "cannot deliver")
            fill_filesystem(disk / "filler")  # the disk is full now: the spool gets ENOSPC
            line = wait_said(agent, "holding events in memory", timeout=30)
            assert "cannot write (ENOSPC" in line
            if memory:
                assert "counted at 'spool'" in wait_said(agent, "events lost (counted at 'spool'", timeout=30)
            rsyslog.start()  # the collector is back while the disk is still full
            wait_said(agent, "spooled events first, in order", timeout=30)
            os.unlink(disk / "filler")  # and the space returns
            mark = drops_received(rsyslog)
            assert wait_until(lambda: drops_received(rsyslog) >= mark + 50, timeout=30), \
                "delivery goes on once the space is back"
            wait_said(agent, "the disk takes writes again", timeout=30)
            if memory:
                # the next heartbeat (2 s interval) says why: spool losses by cause
                assert wait_until(lambda: any(c.get("ENOSPC", 0) > 0 for c in spool_causes(rsyslog)),
                                  timeout=60), spool_causes(rsyslog)
            assert agent.proc.poll() is None
        finally:
            code, _ = agent.stop(timeout=20)
        assert code == 0, "".join(agent.stderr_lines)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    msgs = "\n".join(agent.messages())
    m = re.search(r"stopped \(SIGTERM\): (\d+) events emitted, lost: kernel 0, queue 0, sink 0, spool (\d+)", msgs)
    assert m, msgs
    emitted, lost_spool = int(m.group(1)), int(m.group(2))
    if memory:
        assert lost_spool > 0, "a bound too small for the outage cost events, and they are counted"
    else:
        assert lost_spool == 0, "the events waited in memory while the disk was full: none lost"
    assert "watchdog" not in msgs, "no thread failed"
    events = [e for _, e in received(rsyslog)]
    got = {e["event"]["sequence"] for e in events}
    missing = set(range(1, emitted + 1)) - got
    assert len(missing) == lost_spool, "every event is delivered or counted as a spool loss, exactly"
    assert got <= set(range(1, emitted + 1))
    stopped = next(e for e in events if e["event"]["action"] == "agent-stopped")
    assert stopped["netagent"]["agent"]["lost"]["spool"] == lost_spool
    if memory:
        # the heartbeats said why: spool losses by cause, in the sink's status
        causes = spool_causes(rsyslog)
        assert any(c.get("ENOSPC", 0) > 0 for c in causes), causes
