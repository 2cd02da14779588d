"""What the benchmarks share: the UDP flood, kernel counters, statistics, result files.

Every benchmark compares against a baseline measured in the same run,
interleaved round by round, and reports median, minimum and maximum.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))

# A benchmark stopped by SIGTERM (`make bench` interrupted; bench/run_all.py passes its own
# on) exits as on an error: its finally blocks stop the agents and floods and remove the
# namespaces it made, and atexit removes its scratch directories (scratch_dir).
def _exit_on_signal(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean-up short
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_signal)


def scratch_dir(prefix: str = "netagent-bench-") -> str:
    """A temporary directory that is removed when the benchmark exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path
# The flood runs on this CPU; agents and reference tools are left to the others.
FLOOD_WINDOW_SECONDS = 0.1  # udp_flood.c's WINDOW
FLOOD_CPU = os.environ.get("BENCH_FLOOD_CPU", str(max(os.cpu_count() - 1, 0)))


def other_cpus() -> set[int]:
    """The CPUs the flood does not run on (all of them on a one-CPU machine)."""
    return (os.sched_getaffinity(0) - {int(FLOOD_CPU)}) or os.sched_getaffinity(0)


def build_flood() -> str:
    return build("udp_flood")


def flood(ns, binary: str, seconds: float, addr: str = "127.0.0.1", port: int = 9) -> tuple[int, float]:
    """Datagrams sent to a closed port inside namespace `ns`, and the seconds it took."""
    sent, elapsed, _windows = flood_windows(ns, binary, seconds, addr, port)
    return sent, elapsed


def flood_windows(ns, binary: str, seconds: float, addr: str = "127.0.0.1",
                  port: int = 9) -> tuple[int, float, list[int]]:
    """As flood(), with the datagrams sent in each 100 ms window (FLOOD_WINDOW_SECONDS).
    The seconds are the flood's own sending time, not counting its process start."""
    out = ns.run("taskset", "-c", FLOOD_CPU, binary, addr, str(port), str(seconds), timeout=seconds + 60)
    sent, elapsed = out.stdout.split()
    return int(sent), float(elapsed), [int(n) for n in out.stderr.split()]


def noports(ns) -> int:
    """Udp NoPorts of namespace `ns`: the kernel's own count of closed-port drops."""
    lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def noports_all(ns) -> int:
    """Udp NoPorts + Udp6 NoPorts of namespace `ns`."""
    six = next(int(ln.split()[1]) for ln in ns.read_proc("net/snmp6").splitlines() if ln.startswith("Udp6NoPorts"))
    return noports(ns) + six


def build(source: str) -> str:
    """Compile bench/<source>.c; the path of the binary."""
    out = os.path.join(scratch_dir(), source)
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, f"{source}.c")], check=True)
    return out


def spread(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def rounded(d: dict, digits: int = 3) -> dict:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in d.items()}


def utc_now() -> str:
    """A result's written_at, and when `make bench` started and finished (bench/run_all.py):
    one form, so bench/report.py can compare them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_result(name: str, result: dict, path: str | None = None) -> str:
    """bench/results/<name>.json (or `path`), stamped with time, kernel and CPU count."""
    result = dict(result, written_at=utc_now(),
                  kernel=os.uname().release, cpus=os.cpu_count())
    path = path or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    summary = {k: v for k, v in result.items() if not k.startswith(("rounds", "runs", "scenarios"))}
    print(json.dumps(summary, indent=2))
    return path


class BpfStats:
    """kernel.bpf_stats_enabled = 1 while in use (run_time_ns / run_cnt are counted only then)."""

    PATH = "/proc/sys/kernel/bpf_stats_enabled"

    def __enter__(self):
        with open(self.PATH) as f:
            self._saved = f.read().strip()
        with open(self.PATH, "w") as f:
            f.write("1")
        return self

    def __exit__(self, *exc):
        with open(self.PATH, "w") as f:
            f.write(self._saved)
        return False


def one_line_parser(prog: str) -> argparse.ArgumentParser:
    """An argument parser whose errors are one line on stderr and exit 2 (EXIT_USAGE), no usage dump."""
    from netagent.errors import EXIT_USAGE  # noqa: PLC0415

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            print(f"{prog}: {message}", file=sys.stderr)
            sys.exit(EXIT_USAGE)

    return Parser(prog=f"{prog}.py")


class EmptyProgramOnKfreeSkb:
    """A BPF program that does nothing, attached where netagent's drop program goes
    (tp_btf skb:kfree_skb): the floor of what any program on that tracepoint costs a
    dropped packet (the kernel's dispatch to it), to read the agent's figures against."""

    def __enter__(self):
        from netagent import bpfsys
        from netagent.btf import TYPEDEF, kernel_btf

        self.prog = bpfsys.prog_load(bpfsys.PROG_TYPE_TRACING, bpfsys.RETURN_ZERO, name="bench_empty",
                                     expected_attach_type=bpfsys.TRACE_RAW_TP,
                                     attach_btf_id=kernel_btf().find("btf_trace_kfree_skb", TYPEDEF))
        try:
            self.link = bpfsys.raw_tracepoint_open(self.prog)
        except BaseException:
            os.close(self.prog)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.link)
        os.close(self.prog)
        return False
