#!/usr/bin/env python3
"""Pipeline throughput: events/s the agent sustains into each sink, and CPU per 10k events.

    .venv/bin/python bench/pipeline_bench.py [--events N] [--sink file] [--rounds 10]

Each sink has one function `bench_<sink>(events, workdir) -> dict` registered
in SINK_BENCHES; it runs the real pipeline (EventQueue -> dispatcher stamping
event.sequence and serialising -> the sink's buffer and delivery thread) on
pre-built drop events shaped like the drop sensor's, published in batches the
way a sensor's poll() does, with the process pinned to ONE CPU.

The baseline, measured in the same run on the same events, is the least any
agent must do: serialise each event with orjson and write it to a file from
a single thread. The ratio pipeline/baseline shows what the queue, the
threads and the sink's own buffer cost. Each round runs the baseline and every
sink once, in rotating order (BENCH_ROUNDS rounds, 10); the ratio is taken
round by round, and each figure is reported as its median, minimum and maximum.

Results: bench/results/pipeline.json.
"""

import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

from benchlib import ROUNDS, one_line_parser, rounded, spread, write_result  # noqa: E402
from netagent.events import new_event  # noqa: E402
from netagent.jsonline import dumps_line  # noqa: E402
from netagent.pipeline import Pipeline  # noqa: E402

RESULTS = os.path.join(HERE, "results", "pipeline.json")
BATCH = 1000  # events per publish, like one busy sensor poll
TARGET_EVENTS_PER_S = 50_000  # the aim for the file sink on one core


def make_events(n: int) -> list[dict]:
    """Drop events with the drop sensor's shape and typical field sizes."""
    out = []
    for i in range(n):
        ev = new_event(
            dataset="netagent.drops", action="packet-dropped", type=["denied"],
            network={"type": "ipv4", "transport": "udp", "iana_number": "17"},
            netagent={"drop": {"count": 1 + i % 50, "bytes": 84 * (1 + i % 50), "reason_raw": 3,
                               "location": "__udp4_lib_rcv+0x4bc", "location_raw": "0xffffffff81e4d9c7",
                               "interface": f"veth{i % 64:02d}", "ifindex": 10 + i % 64, "netns": 4026532527,
                               "netns_name": "cni-4f2a9c1e"}},
            source={"ip": f"10.244.{i % 250}.{i % 200 + 1}", "port": 30000 + i % 30000},
            destination={"ip": "10.96.0.10", "port": 53},
        )
        ev["event"]["reason"] = "NO_SOCKET"
        ev["event"]["start"] = ev["event"]["end"] = ev["@timestamp"]
        out.append(ev)
    return out


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def drive(sink, events: list[dict]) -> dict:
    """Push `events` through a real Pipeline into `sink`; time until the sink has delivered them all."""
    pipe = Pipeline([sink], capacity=65536)
    sink.start()
    pipe.start()
    c0, t0 = cpu_seconds(), time.perf_counter()
    retries = 0
    for i in range(0, len(events), BATCH):
        chunk = events[i:i + BATCH]
        while chunk:
            # sustained throughput without loss: offer only what fits and wait for
            # room, where a real sensor would publish everything and count the drops
            room = pipe.queue.capacity - len(pipe.queue)
            if room <= 0:
                retries += 1
                time.sleep(0.0005)
                continue
            accepted = pipe.publish(chunk[:room])
            chunk = chunk[accepted:]
    assert pipe.drain(120), "pipeline did not drain"
    assert sink.flush(120), "sink did not flush"
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    pipe.stop(5)
    sink.close(5)
    lost = sum(sink.losses().values()) + pipe.losses()["queue"]
    return {"events": len(events), "seconds": elapsed, "cpu_seconds": cpu, "lost": lost,
            "producer_waits": retries, "delivered": getattr(sink, "delivered", None)}


def bench_file(events: list[dict], workdir: str) -> dict:
    from netagent.sinks.file import FileSink

    path = os.path.join(workdir, "events.json")
    # rotation on, as in production, so its cost is in the figure
    sink = FileSink("file", path, max_bytes=64 * 2**20, backups=2, capacity=50000)
    result = drive(sink, events)
    result["rotations"] = sink.rotations
    return result


def baseline_file(events: list[dict], workdir: str) -> dict:
    """One thread: orjson + write(2) in 512-event batches to a file."""
    path = os.path.join(workdir, "events.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    c0, t0 = cpu_seconds(), time.perf_counter()
    seq = 0
    for i in range(0, len(events), 512):
        lines = []
        for ev in events[i:i + 512]:
            seq += 1
            ev["event"]["sequence"] = seq
            lines.append(dumps_line(ev))
        os.write(fd, b"".join(lines))
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    os.close(fd)
    return {"events": len(events), "seconds": elapsed, "cpu_seconds": cpu, "lost": 0}


# --- syslog sink (RFC 5424 over TLS into a real rsyslogd on loopback) -----------------
def _start_rsyslog(workdir: str):
    """A real rsyslogd (gtls, anon auth) on 127.0.0.1, running on the CPUs this process does NOT use.

    The benchmark pins itself to one CPU; rsyslogd is started from a helper
    thread whose affinity is the other CPUs, so the collector's work is not
    counted in, and does not compete with, the agent's one core.
    """
    import threading

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from rsyslog_lab import Rsyslog, make_certs

    certs = make_certs(os.path.join(workdir, "certs"))
    rs = Rsyslog(os.path.join(workdir, "rsyslog"), certs)
    mine = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - mine or mine
    err = []

    def start():
        try:
            os.sched_setaffinity(0, others)  # this thread only; rsyslogd inherits it
            rs.start()
        except Exception as exc:  # reported by the caller
            err.append(exc)

    t = threading.Thread(target=start)
    t.start()
    t.join()
    if err:
        raise err[0]
    return rs, certs


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def baseline_syslog_tls(events: list[dict], address: str, ca_file: str) -> dict:
    """The least a syslog-over-TLS shipper does: one thread, orjson + RFC 5424 header +
    octet framing, sendall() on a blocking TLS socket in 512-event batches. No spool,
    no confirmation, nothing survives a collector outage."""
    import socket
    import ssl

    from netagent.sinks.syslog import format_message, octet_frame

    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    c0, t0 = cpu_seconds(), time.perf_counter()
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        seq = 0
        for i in range(0, len(events), 512):
            out = []
            for ev in events[i:i + 512]:
                seq += 1
                ev["event"]["sequence"] = seq
                out.append(octet_frame(format_message(dumps_line(ev), ev, facility=16)))
            tls.sendall(b"".join(out))
        tls.unwrap()  # close_notify: the collector has everything when this returns
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"events": len(events), "seconds": elapsed, "cpu_seconds": cpu, "lost": 0}


# A TLS collector that only decrypts and counts octet-counted frames: it shows
# what the sink itself sustains when the collector is not the bottleneck.
_NULL_COLLECTOR = r"""
import os, socket, ssl, sys, threading, time
cert, key, portfile = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
count = 0
def publish():
    while True:
        time.sleep(0.02)
        with open(portfile + ".count.tmp", "w") as f:
            f.write(str(count))
        os.rename(portfile + ".count.tmp", portfile + ".count")
def serve(c):
    global count
    try:
        c = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError):
        return
    buf = bytearray()
    while True:
        try:
            data = c.recv(1 << 20)
        except (OSError, ssl.SSLError):
            break
        if not data:
            break
        buf += data
        pos, n, size = 0, 0, len(buf)
        while True:
            sp = buf.find(b" ", pos, pos + 12)
            if sp < 0:
                break
            end = sp + 1 + int(buf[pos:sp])
            if end > size:
                break
            pos, n = end, n + 1
        del buf[:pos]
        count += n
    c.close()
threading.Thread(target=publish, daemon=True).start()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class _NullCollector:
    def __init__(self, workdir: str, certs):
        import subprocess

        self.portfile = os.path.join(workdir, "null-collector.port")
        mine = os.sched_getaffinity(0)
        others = set(range(os.cpu_count() or 1)) - mine or mine
        self.proc = subprocess.Popen([sys.executable, "-c", _NULL_COLLECTOR, certs.server_cert, certs.server_key,
                                      self.portfile], preexec_fn=lambda: os.sched_setaffinity(0, others))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.portfile):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("null collector did not start")
            time.sleep(0.02)
        with open(self.portfile) as f:
            self.address = f"127.0.0.1:{int(f.read())}"

    def received(self) -> int:
        try:
            with open(self.portfile + ".count") as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


def _wait_count(counter, want: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while counter() < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return counter()


def _syslog_run(events: list[dict], workdir: str, address: str, ca_file: str, counter) -> dict:
    """Baseline then SyslogSink against one collector; `counter()` = messages it has received."""
    from netagent.configschema import apply_schema
    from netagent.sinks.base import COMMON_SCHEMA
    from netagent.sinks.syslog import SyslogSink

    base = baseline_syslog_tls(events, address, ca_file)
    before = _wait_count(counter, len(events))
    cfg = apply_schema({**COMMON_SCHEMA, **SyslogSink.CONFIG_SCHEMA}, {
        "type": "syslog", "address": address, "ca_file": ca_file,
        "spool_dir": os.path.join(workdir, "spool"), "buffer_events": 50000,
    })
    SyslogSink.validate_config(cfg)

    class PacedSyslogSink(SyslogSink):
        """Bench only: when the sink's buffer is full, submit() waits for room instead
        of dropping (and counting) the event, so the figure is the rate the whole
        chain sustains WITHOUT loss. The real sink never blocks the pipeline."""

        def submit(self, line, event):
            while len(self._queue) >= self.capacity:
                time.sleep(0.0005)
            return super().submit(line, event)

    sink = PacedSyslogSink.from_config(cfg)
    # Timed until flush(): every event spooled, sent and acknowledged by the
    # collector's TCP stack. The collector's own count is checked afterwards.
    result = drive(sink, events)
    result["received_by_collector"] = _wait_count(counter, before + len(events)) - before
    result["resent"] = sink.resent
    result["lost_by_place"] = sink.losses()
    result["baseline_tls_send"] = {
        "events_per_s": round(base["events"] / base["seconds"]),
        "cpu_ms_per_10k_events": round(base["cpu_seconds"] / base["events"] * 10_000 * 1000, 1),
    }
    result["ratio_to_tls_baseline"] = round((result["events"] / result["seconds"]) / (base["events"] / base["seconds"]), 3)
    shutil_rmtree(os.path.join(workdir, "spool"))
    return result


def shutil_rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def bench_syslog(events: list[dict], workdir: str) -> dict:
    """Pipeline -> SyslogSink (disk spool, TLS, delivery confirmation) -> a real rsyslogd
    (imtcp + gtls, writing every message to a file) on loopback, on the other CPU."""
    rs, certs = _start_rsyslog(workdir)
    try:
        result = _syslog_run(events, workdir, rs.address, certs.ca, lambda: _count_lines(rs.out))
        result["collector"] = "rsyslogd imtcp/gtls -> omfile, 127.0.0.1, other CPU"
        return result
    finally:
        rs.stop()


def bench_syslog_nullcollector(events: list[dict], workdir: str) -> dict:
    """The same sink into a collector that only decrypts and counts: the sink's own ceiling."""
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from rsyslog_lab import make_certs

    certs = make_certs(os.path.join(workdir, "certs"))
    null = _NullCollector(workdir, certs)
    try:
        result = _syslog_run(events, workdir, null.address, certs.ca, null.received)
        result["collector"] = "python TLS reader counting frames, 127.0.0.1, other CPU"
        return result
    finally:
        null.stop()


# sink name -> function(events, workdir) -> dict with events, seconds, cpu_seconds, lost
SINK_BENCHES = {
    "file": bench_file,
    "syslog": bench_syslog,
    "syslog_nullcollector": bench_syslog_nullcollector,
}


def summarise(runs: list[dict]) -> dict:
    rates = [r["events"] / r["seconds"] for r in runs]
    cpu10k = [r["cpu_seconds"] / r["events"] * 10_000 for r in runs]
    return {
        "events_per_s": round(statistics.median(rates)),
        "events_per_s_runs": [round(x) for x in rates],
        "cpu_ms_per_10k_events": round(statistics.median(cpu10k) * 1000, 1),
        "cpu_percent_of_one_core": round(100 * statistics.median(r["cpu_seconds"] / r["seconds"] for r in runs), 1),
        "lost": sum(r["lost"] for r in runs),
        "runs": runs,
    }


def main(argv=None) -> int:
    ap = one_line_parser("pipeline_bench")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (at least 10; BENCH_ROUNDS)")
    ap.add_argument("--sink", action="append", choices=sorted(SINK_BENCHES), help="default: every sink")
    ap.add_argument("--output", default=RESULTS)
    args = ap.parse_args(argv)
    if args.rounds < 10:
        ap.error(f"--rounds {args.rounds}: at least 10 rounds")

    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})  # "on one core": every thread of this process shares one CPU
    events = make_events(args.events)
    results: dict = {
        "benchmark": "pipeline",
        "command": "bench/pipeline_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus_used": 1, "cpus_online": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "events_per_run": args.events,
        "rounds": args.rounds,
        "target_events_per_s_file": TARGET_EVENTS_PER_S,
        "sinks": {},
    }
    names = args.sink or sorted(SINK_BENCHES)
    takers = ["baseline", *names]
    runs: dict[str, list[dict]] = {name: [] for name in takers}
    with tempfile.TemporaryDirectory(prefix="netagent-bench-") as workdir:
        for i in range(args.rounds):
            # every round runs the baseline and each sink once, starting with a different one,
            # so a slow spell of this shared machine falls on all of them alike
            for name in takers[i % len(takers):] + takers[:i % len(takers)]:
                run_dir = os.path.join(workdir, f"{name}-{i}")
                os.makedirs(run_dir)
                bench = baseline_file if name == "baseline" else SINK_BENCHES[name]
                runs[name].append(bench(events, run_dir))
                shutil_rmtree(run_dir)  # a run writes up to ~200 MB: not kept for the next
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{name} {runs[name][-1]['events'] / runs[name][-1]['seconds']:,.0f}/s" for name in takers), flush=True)
    results["baseline_orjson_write"] = summarise(runs["baseline"])
    for name in names:
        summary = summarise(runs[name])
        # each round's rate over the same round's baseline
        ratios = [(r["events"] / r["seconds"]) / (b["events"] / b["seconds"]) for r, b in zip(runs[name], runs["baseline"])]
        summary["ratio_to_baseline"] = round(statistics.median(ratios), 3)
        summary["ratio_to_baseline_spread"] = rounded(spread(ratios))
        results["sinks"][name] = summary
    file_result = results["sinks"].get("file")
    if file_result:
        results["file_meets_target"] = file_result["events_per_s"] >= TARGET_EVENTS_PER_S
    write_result("pipeline", results, args.output)
    base = results["baseline_orjson_write"]
    print(f"baseline (orjson + write, 1 thread): {base['events_per_s']:,} events/s, "
          f"{base['cpu_ms_per_10k_events']} ms CPU / 10k events")
    for name, s in results["sinks"].items():
        print(f"pipeline -> {name}: {s['events_per_s']:,} events/s, {s['cpu_ms_per_10k_events']} ms CPU / 10k events, "
              f"{s['ratio_to_baseline']}x baseline, lost {s['lost']}")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
