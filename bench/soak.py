#!/usr/bin/env python3
"""`make soak`: the agent under every fault at once, for 10 minutes (root).

    python3 bench/soak.py [--duration SECONDS] [--out bench/results/soak.json]

What runs, all on loopback or inside two network namespaces made here:
  - `netagent run` with the drop sensor on a namespace where a drop storm
    (UDP to 64 closed ports, as fast as one sender goes) makes drops nonstop;
  - the syslog sink delivering over TLS to a real rsyslogd (tests/rsyslog_lab.py),
    which is stopped every 30 s and started again 10 s later;
  - SIGHUP every 20 s, each with a changed drop interval, so the drop sensor is
    handed over to a new program every time (netagent.daemon SensorRunner.hand_over);
  - the spool on a small tmpfs, filled up once (ENOSPC for 10 s) while rsyslog is
    down (from 2 s into the first outage until 2 s after it).

Afterwards (the figures go to --out as JSON; exit 1 if a check fails):
  - every event.sequence 1..N reached rsyslog: no gap, nothing counted lost anywhere.
    While the disk is full the syslog sink holds the events in memory
    (spool_memory_bytes) and spools them when space returns; the fill must really
    have made it hold events (the agent says so), or the fault was not exercised.
    Duplicates (at-least-once resends after an outage) are counted;
  - no thread died: the watchdog restarted nothing, the last heartbeat lists the
    agent's threads as running, and the agent's stderr has no traceback;
  - RSS flat: at most 5 MB growth after the first minute (median of the last 20 s
    against the median of the 20 s after the first minute: a reload parses BTF again,
    a transient that is trimmed right after);
  - the agent exits 0 on SIGTERM with its totals.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from agent_proc import AgentProcess  # noqa: E402
from netagent import registry  # noqa: E402
from lab import Namespace, veth_pair  # noqa: E402
from rsyslog_lab import Rsyslog, fill_filesystem, make_certs, parse_message  # noqa: E402

STORM = r"""
import os, socket, sys
dst, stop = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
i = 0
while not os.path.exists(stop):
    for _ in range(256):
        try:
            s.sendto(b"x" * 32, (dst, 40000 + i % 64))
        except OSError:
            pass
        i += 1
"""

COLLECTOR_EVERY = 30.0  # rsyslog stopped this often...
COLLECTOR_DOWN = 10.0  # ...for this long
SIGHUP_EVERY = 20.0
FILL_FOR = 10.0
RSS_EVERY = 2.0
RSS_BOUND = 5 * 2**20


def config_text(tmp: str, netns: str, address: str, ca: str, spool: str, interval_ms: int) -> str:
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "drops")
    return f"""
[agent]
heartbeat = "5s"
shutdown_timeout = "20s"
[sensors.drops]
netns = "{netns}"
interval = "{interval_ms}ms"
{others}[[sinks]]
type = "syslog"
address = "{address}"
ca_file = "{ca}"
spool_dir = "{spool}"
spool_max_bytes = "64MB"
reconnect_min = "100ms"
reconnect_max = "2s"
"""


def rss_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of faults (default 600)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "soak.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (namespaces, tmpfs, BPF)", file=sys.stderr)
        return 77
    if args.duration < 90:
        print("soak: --duration must be at least 90 s (RSS is judged after the first minute)", file=sys.stderr)
        return 2

    tmp = tempfile.mkdtemp(prefix="netagent-soak-")
    disk = os.path.join(tmp, "spooldisk")
    os.makedirs(disk)
    # big enough for a 10 s outage of the storm's events, so only the deliberate fill
    # (not the outages) runs the spool out of space
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", disk], check=True)
    client, server = Namespace(), Namespace()
    stop_storm = os.path.join(tmp, "stop-storm")
    storm = agent = rs = None
    result: dict = {"duration_s": args.duration}
    failures: list[str] = []
    try:
        veth_pair(client, server, "10.90.0.1/24", "10.90.0.2/24")
        certs = make_certs(os.path.join(tmp, "certs"))
        rs = Rsyslog(os.path.join(tmp, "rsyslog"), certs).start(timeout=60)
        config = os.path.join(tmp, "agent.toml")
        spool = os.path.join(disk, "spool")
        interval = 250
        with open(config, "w") as f:
            f.write(config_text(tmp, server.name, rs.address, certs.ca, spool, interval))
        storm = client.popen(sys.executable, "-c", STORM, "10.90.0.2", stop_storm)
        agent = AgentProcess("run", "--config", config)
        agent.wait_for_stderr("started (pid", timeout=120)
        t0 = time.monotonic()
        next_down, next_hup, up_at = t0 + COLLECTOR_EVERY, t0 + SIGHUP_EVERY, None
        fill_at = t0 + COLLECTOR_EVERY + 2.0  # once, during the first outage: nothing frees space meanwhile
        fill_done = unfill_at = None
        rss: list[tuple[float, int]] = []
        next_rss = t0
        reloads = outages = 0
        while (now := time.monotonic()) < t0 + args.duration:
            if agent.proc.poll() is not None:
                failures.append(f"the agent exited early with {agent.proc.returncode}")
                break
            if now >= next_rss:
                value = rss_of(agent.proc.pid)
                if value:
                    rss.append((round(now - t0, 1), value))
                next_rss += RSS_EVERY
            if now >= next_down and up_at is None:
                rs.stop()
                outages += 1
                up_at = now + COLLECTOR_DOWN
                next_down += COLLECTOR_EVERY
            elif up_at is not None and now >= up_at:
                start_collector(rs, failures)
                up_at = None
            if fill_done is None and now >= fill_at:
                fill_filesystem(os.path.join(disk, "filler"))
                fill_done, unfill_at = now - t0, now + FILL_FOR
            if unfill_at is not None and now >= unfill_at:
                os.unlink(os.path.join(disk, "filler"))
                unfill_at = None
            if now >= next_hup:
                interval = 300 if interval == 250 else 250
                with open(config, "w") as f:
                    f.write(config_text(tmp, server.name, rs.address, certs.ca, spool, interval))
                agent.proc.send_signal(signal.SIGHUP)
                reloads += 1
                next_hup += SIGHUP_EVERY
            time.sleep(0.1)
        if unfill_at is not None:
            os.unlink(os.path.join(disk, "filler"))
        if rs.proc is None or rs.proc.poll() is not None:
            start_collector(rs, failures)
        with open(stop_storm, "w"):
            pass
        storm.wait(30)
        # let the spool drain to the collector before stopping (bounded): a heartbeat
        # that arrived says the syslog sink has nothing spooled or buffered
        drained_by = time.monotonic() + 120
        while time.monotonic() < drained_by and not _drained(rs):
            time.sleep(0.5)
        code, took = agent.stop(timeout=60)
        result.update(exit_code=code, stop_seconds=round(took, 2), reloads=reloads, collector_outages=outages,
                      spool_filled_at_s=fill_done)
        if code != 0:
            failures.append(f"agent exit code {code}")
        messages = agent.messages()
        result["agent_warnings"] = [m for m in messages if "cannot" in m or "failed" in m or "watchdog" in m][-20:]
        held_said = [m for m in messages if "holding events in memory" in m or "disk takes writes again" in m]
        result["spool_holding_said"] = held_said[:4]
        if fill_done is not None and not held_said:
            failures.append("the full disk never made the spool hold events in memory (fault not exercised)")
        final = next((m for m in messages if m.startswith("stopped (SIGTERM)")), "")
        m = re.search(r"(\d+) events emitted, lost: kernel (\d+), queue (\d+), sink (\d+), spool (\d+)", final)
        if not m:
            failures.append(f"no final totals line: {final or messages[-3:]}")
            emitted, lost = 0, {}
        else:
            emitted = int(m.group(1))
            lost = dict(zip(("kernel", "queue", "sink", "spool"), map(int, m.groups()[1:])))
        # what reached rsyslog
        seqs, dup, stopped, beats = [], 0, None, []
        for line in rs.raw_lines():
            _, event = parse_message(line)
            if event["event"]["action"] == "agent-stopped":
                stopped = event
            elif event["event"]["action"] == "heartbeat":
                beats.append(event)
            seqs.append(event["event"]["sequence"])
        seen = set()
        for s in seqs:
            if s in seen:
                dup += 1
            seen.add(s)
        missing = sorted(set(range(1, emitted + 1)) - seen)
        # from the heartbeats (every 5 s): spool losses by cause, most events held in memory
        causes, held_max, running = {}, 0, []
        for beat in sorted(beats, key=lambda e: e["event"]["sequence"]):
            fields = beat["netagent"]["agent"]
            running = fields.get("watchdog", {}).get("running", [])
            syslog = [s for s in fields.get("sinks", []) if s.get("type") == "syslog"]
            if syslog:
                causes = syslog[0].get("lost_causes", {}).get("spool", {})
                held_max = max(held_max, syslog[0].get("spool_held", 0))
        result.update(events_emitted=emitted, events_received_unique=len(seen), duplicates=dup,
                      missing=len(missing), lost=lost, spool_loss_causes=causes, spool_held_max_in_heartbeats=held_max,
                      missing_first_last=[missing[0], missing[-1]] if missing else None)
        if missing:
            failures.append(f"{len(missing)} event.sequence numbers never reached the collector "
                            f"({sum(lost.values())} counted lost)")
        if any(lost.values()):
            failures.append(f"events lost: {lost} (spool causes {causes})")
        watchdog = (stopped or {}).get("netagent", {}).get("agent", {}).get("watchdog", {})
        result["watchdog_restarts"] = watchdog.get("restarts")
        result["threads_running_at_last_heartbeat"] = running
        if watchdog.get("restarts"):
            failures.append(f"threads failed and were restarted: {watchdog}")
        expected = {"pipeline-dispatch", "sensor-drops", "sink-syslog"}
        if not expected <= set(running):
            failures.append(f"threads not running at the last heartbeat: {sorted(expected - set(running))}")
        if stopped is None:
            failures.append("agent-stopped never reached the collector")
        if any("Traceback" in line for line in agent.stderr_lines):
            failures.append("a traceback on the agent's stderr")
        # RSS: growth from the end of the first minute to the end
        # Growth after the first minute: the median RSS of the last 20 s against the
        # median of the 20 s after the first minute. Medians, because every reload
        # parses the kernel's BTF again (a transient ~10 MB, trimmed right after).
        early = sorted(v for t, v in rss if 60.0 <= t < 80.0)
        late = sorted(v for t, v in rss if t >= rss[-1][0] - 20.0)
        if early and late:
            growth = late[len(late) // 2] - early[len(early) // 2]
            result.update(rss_median_60_80s_bytes=early[len(early) // 2], rss_median_last_20s_bytes=late[len(late) // 2],
                          rss_max_bytes=max(v for _, v in rss), rss_growth_after_first_minute_bytes=growth,
                          rss_samples=len(rss))
            if growth > RSS_BOUND:
                failures.append(f"RSS grew {growth / 2**20:.1f} MB after the first minute (bound 5 MB)")
        result["rss_series"] = rss
    except Exception as exc:  # the soak's own machinery failed: say so in the results, exit 1
        failures.append(f"soak aborted: {type(exc).__name__}: {exc}")
    finally:
        if storm is not None and storm.poll() is None:
            storm.kill()
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()
        if rs is not None:
            rs.stop()
        client.delete()
        server.delete()
        subprocess.run(["umount", "-l", disk], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    result["failures"] = failures
    result["ok"] = not failures
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    summary = {k: v for k, v in result.items() if k != "rss_series"}
    print(json.dumps(summary, indent=1))
    for failure in failures:
        print(f"soak: FAILED: {failure}", file=sys.stderr)
    return 0 if not failures else 1


def start_collector(rs: Rsyslog, failures: list) -> None:
    """Start rsyslogd again (same port); a loaded machine may need a while, and a
    failed start is a failure of the soak's own setup, recorded, not a traceback."""
    for attempt in range(3):
        try:
            rs.start(timeout=60)
            return
        except RuntimeError as exc:
            last = str(exc)
    failures.append(f"could not restart the collector: {last}")


def _drained(rs: Rsyslog) -> bool:
    for line in reversed(rs.raw_lines()):
        _, event = parse_message(line)
        if event["event"]["action"] == "heartbeat":
            sinks = event["netagent"]["agent"].get("sinks", [])
            return all(s.get("spooled", 0) <= 1 and s.get("buffered", 0) <= 1 for s in sinks)
    return False


if __name__ == "__main__":
    sys.exit(main())
