"""Drop sensor overhead: a UDP closed-port flood with and without the agent.

Rounds alternate (without, with, without, with, ...) in one run so machine
noise hits both sides alike; the figures are ratios against the rounds
without the agent. All traffic stays on the loopback of a namespace this
script creates and removes.

Writes bench/results/drops.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from agent_proc import AgentProcess  # noqa: E402
from lab import Namespace  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


def build_flood() -> str:
    out = os.path.join(tempfile.mkdtemp(prefix="netagent-bench-"), "udp_flood")
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, "udp_flood.c")], check=True)
    return out


def noports(ns) -> int:
    lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def flood(ns, binary) -> tuple[int, float]:
    start = time.monotonic()
    out = ns.run(binary, "127.0.0.1", "9", str(SECONDS), timeout=SECONDS + 30)
    return int(out.stdout), time.monotonic() - start


def round_with_agent(ns, binary) -> dict:
    t0 = time.monotonic()
    agent = AgentProcess("trace", "drops", "--netns", ns.name, "--output", "json", "--interval", "1")
    agent.wait_for_stderr("attached to", timeout=30)
    attach_s = time.monotonic() - t0
    proc = psutil.Process(agent.proc.pid)
    cpu0 = proc.cpu_times()
    before = noports(ns)
    sent, elapsed = flood(ns, binary)
    time.sleep(0.2)
    after = noports(ns)
    cpu1 = proc.cpu_times()
    with open(f"/proc/{agent.proc.pid}/status") as f:
        hwm_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    code, _ = agent.stop()
    counted = sum(e["netagent"]["drop"]["count"] for e in agent.events()
                  if e["event"]["reason"] == "NO_SOCKET" and e["network"].get("transport") == "udp")
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
    return {"sent": sent, "pps": sent / elapsed, "noports_delta": after - before, "counted": counted,
            "agent_cpu_fraction_of_core": cpu, "attach_seconds": attach_s, "peak_rss_mb": hwm_kb / 1024,
            "exit_code": code}


def main() -> int:
    binary = build_flood()
    ns = Namespace()
    try:
        without, with_agent = [], []
        for _ in range(ROUNDS):
            sent, elapsed = flood(ns, binary)
            without.append({"sent": sent, "pps": sent / elapsed})
            with_agent.append(round_with_agent(ns, binary))
    finally:
        ns.delete()
    base_pps = statistics.median(r["pps"] for r in without)
    agent_pps = statistics.median(r["pps"] for r in with_agent)
    result = {
        "benchmark": "udp closed-port flood on a namespace loopback, sendmmsg x64, 64-byte payload",
        "rounds": ROUNDS, "seconds_per_round": SECONDS,
        "pps_without_agent_median": round(base_pps),
        "pps_with_agent_median": round(agent_pps),
        "rate_ratio_with_over_without": round(agent_pps / base_pps, 4),
        "agent_cpu_fraction_of_core_max": round(max(r["agent_cpu_fraction_of_core"] for r in with_agent), 4),
        "attach_seconds_max": round(max(r["attach_seconds"] for r in with_agent), 3),
        "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in with_agent), 1),
        "accounted_equals_sent_all_rounds": all(r["counted"] == r["sent"] == r["noports_delta"] for r in with_agent),
        "targets": {"rate_ratio_min": 0.95, "agent_cpu_max": 0.05, "attach_seconds_max": 3.0, "peak_rss_mb_aim": 200},
        "rounds_detail": {"without": without, "with": with_agent},
    }
    result["targets_met"] = (result["rate_ratio_with_over_without"] >= 0.95
                             and result["agent_cpu_fraction_of_core_max"] <= 0.05
                             and result["attach_seconds_max"] <= 3.0
                             and result["accounted_equals_sent_all_rounds"])
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "drops.json"), "w") as f:
        json.dump(result, f, indent=2)
    summary = {k: v for k, v in result.items() if k != "rounds_detail"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
