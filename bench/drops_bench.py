"""Packet rate with `netagent run` (default sensors) over the rate without it.

A closed-port UDP flood (sendmmsg, 64-byte datagrams) to 127.0.0.1:9 in a
namespace this script creates, pinned to one CPU (FLOOD_CPU); the agent runs
on the others, so the figure is what the agent costs the packet path (its
BPF program runs in the flood's context, on the flood's CPU), and the
agent's own CPU is reported beside it. Each round runs, in this order: the
flood with the agent (started, waited for until it says it started, stopped
after), without it, with an empty BPF program where the agent's goes (the
floor any program on skb:kfree_skb costs), and without it again. Each "with"
round, and each empty-program round, is compared with the mean of the
without-rounds just before and just after it, so a drift of the machine's
speed over the run does not count for or against the agent. Every "with"
round checks that the agent's NO_SOCKET drops in that namespace equal the
kernel's Udp NoPorts and the datagrams sent.

Two figures per round, both reported:
  undisturbed rate  the 90th percentile of the flood's 100 ms windows: the
                    rate it holds while nothing else on this shared machine
                    slows it. On a quiet machine the flood alone still
                    jumps between plateaus (e.g. ~150k and ~183k packets/s)
                    for a second or two at a time, so a round's mean says
                    more about when those came than about the agent, whose
                    cost is per packet and so shows in every window.
  mean rate         datagrams / sending time (noisier for that reason).
Target (issue 12): the median undisturbed-rate ratio >= 0.97. Writes
bench/results/drops.json.
"""

import os
import sys
import time

from agentlib import cpu_seconds, default_config, rss_mb, start_agent
from benchlib import (FLOOD_CPU, FLOOD_WINDOW_SECONDS, ROUNDS, EmptyProgramOnKfreeSkb, build_flood, flood_windows,
                      noports, other_cpus, rounded, spread, write_result)

from lab import Namespace  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
# Round means here swing by +-5% (the flood alone, from one round to the next), about twice the
# agent's whole effect: 20 rounds, not the usual 10.
RATE_ROUNDS = int(os.environ.get("BENCH_RATE_ROUNDS", str(max(ROUNDS, 20))))
TARGET_RATIO = 0.97
UNDISTURBED_QUANTILE = 0.9


def flood_round(ns, binary) -> dict:
    sent, elapsed, windows = flood_windows(ns, binary, SECONDS)
    ranked = sorted(windows)
    undisturbed = ranked[min(len(ranked) - 1, int(len(ranked) * UNDISTURBED_QUANTILE))] if ranked else 0
    return {"sent": sent, "pps": sent / elapsed, "pps_undisturbed": undisturbed / FLOOD_WINDOW_SECONDS,
            "t": time.time()}


def round_with(ns, binary, config) -> dict:
    agent, start_s = start_agent(config)
    pid = agent.proc.pid
    u0, s0 = cpu_seconds(pid)
    before = noports(ns)
    t0 = time.monotonic()
    row = flood_round(ns, binary)
    elapsed = time.monotonic() - t0
    u1, s1 = cpu_seconds(pid)
    delta = noports(ns) - before
    rss = rss_mb(pid)
    code, _ = agent.stop()
    counted = sum(e["netagent"]["drop"]["count"] for e in agent.events()
                  if e.get("event", {}).get("dataset") == "netagent.drops"
                  and e["netagent"]["drop"]["netns"] == ns.inode and e["event"].get("reason") == "NO_SOCKET"
                  and e.get("network", {}).get("transport") == "udp")
    return dict(row, noports_delta=delta, counted=counted, exact=counted == delta == row["sent"],
                start_seconds=start_s, rss_mb=rss, agent_user_cpu=(u1 - u0) / elapsed,
                agent_sys_cpu=(s1 - s0) / elapsed, exit_code=code)


def round_empty_program(ns, binary) -> dict:
    with EmptyProgramOnKfreeSkb():
        return flood_round(ns, binary)


def bracketed(rounds: list[dict], before: list[dict], after: list[dict], key: str) -> list[float]:
    """Each round's `key` over the mean of the without-rounds either side of it
    (rounds[i] ran between before[i] and after[i])."""
    return [r[key] / ((b[key] + a[key]) / 2) for r, b, a in zip(rounds, before, after, strict=True)]


def main() -> int:
    binary = build_flood()
    config = default_config()
    agent_cpus = other_cpus()
    os.sched_setaffinity(0, agent_cpus)  # the agent inherits it; the flood is pinned by taskset
    ns = Namespace()
    # without[2i] and without[2i+1] bracket with_agent[i]; without[2i+1] and without[2i+2] bracket empty[i]
    without, with_agent, empty = [flood_round(ns, binary)], [], []
    try:
        for i in range(RATE_ROUNDS):
            with_agent.append(round_with(ns, binary, config))
            without.append(flood_round(ns, binary))
            empty.append(round_empty_program(ns, binary))
            without.append(flood_round(ns, binary))
            print(f"round {i}: undisturbed pps without {without[-3]['pps_undisturbed']:.0f}, with "
                  f"{with_agent[-1]['pps_undisturbed']:.0f}, without {without[-2]['pps_undisturbed']:.0f}, "
                  f"empty program {empty[-1]['pps_undisturbed']:.0f}, without {without[-1]['pps_undisturbed']:.0f}; "
                  f"exact={with_agent[-1]['exact']}", flush=True)
    finally:
        ns.delete()
    n = len(with_agent)
    ratio, floor = ({key: rounded(spread(bracketed(rounds, without[first::2][:n], without[first + 1::2][:n], key)), 4)
                     for key in ("pps_undisturbed", "pps")} for rounds, first in ((with_agent, 0), (empty, 1)))
    result = {
        "benchmark": "UDP closed-port flood to 127.0.0.1:9 in a namespace, sendmmsg x64, 64-byte payload, "
                     "with and without `netagent run` (default sensors) and with an empty program on "
                     "skb:kfree_skb, interleaved; each round over the mean of the without-rounds before and "
                     "after it",
        "rounds": RATE_ROUNDS, "seconds_per_round": SECONDS, "window_seconds": FLOOD_WINDOW_SECONDS,
        "undisturbed_quantile": UNDISTURBED_QUANTILE,
        "flood_cpu": int(FLOOD_CPU), "agent_cpus": sorted(agent_cpus),
        "pps_without": rounded(spread(r["pps"] for r in without), 0),
        "pps_with": rounded(spread(r["pps"] for r in with_agent), 0),
        "undisturbed_pps_without": rounded(spread(r["pps_undisturbed"] for r in without), 0),
        "undisturbed_pps_with": rounded(spread(r["pps_undisturbed"] for r in with_agent), 0),
        "undisturbed_rate_ratio": ratio["pps_undisturbed"],
        "mean_rate_ratio": ratio["pps"],
        "empty_program_undisturbed_rate_ratio": floor["pps_undisturbed"],
        "empty_program_mean_rate_ratio": floor["pps"],
        "agent_user_cpu_fraction_of_core": rounded(spread(r["agent_user_cpu"] for r in with_agent), 4),
        "exact_all_rounds": all(r["exact"] for r in with_agent),
        "target": {"undisturbed_rate_ratio_median_min": TARGET_RATIO},
        "rounds_without": without, "rounds_with": with_agent, "rounds_empty_program": empty,
    }
    result["target_met"] = ratio["pps_undisturbed"]["median"] >= TARGET_RATIO and result["exact_all_rounds"]
    write_result("drops", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
