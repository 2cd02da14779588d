#!/usr/bin/env python3
"""What naming peers from the API server's pods costs: the enrichment stage with and without
its API-server processor (netagent.enrich.apiserver.ApiPeerAttributor), per event.

    .venv/bin/python bench/apiserver_bench.py [--rounds 10] [--events 100000]

The cluster index holds 2,200 pods (as the list + watch leaves it; filled in
process, no server). Drop events in batches of 1,000, like one sensor poll:
half between two cluster pods, a quarter from a pod to an address that is no
pod's, a quarter between addresses that are no pods'. Each round times,
interleaved (order alternating), the stage without the processor (baseline)
and with it, in CPU seconds of this process pinned to one CPU. Reported: the
processor's extra CPU per event, and that times 50,000 events/s (the share of
one core it takes at the rate of the issue's bound), median, min and max.
Results: bench/results/apiserver.json.
"""

import argparse
import os
import platform
import sys
import time

from benchlib import ROUNDS, rounded, spread, write_result

from netagent.enrich.apiserver import ClusterPods
from netagent.enrich.stage import Enricher

CLUSTER_PODS = 2200
RATE = 50_000
BATCH = 1000


def cluster() -> ClusterPods:
    pods = ClusterPods(None, "bench: in-process index", grace=30.0)
    pods.by_ip = {f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}":
                  {"namespace": f"ns{i % 40}", "pod": f"app{i}-x", "workload": f"Deployment/app{i % 300}"}
                  for i in range(CLUSTER_PODS)}
    pods.healthy = True
    return pods


def make_events(n: int, ips: list[str]) -> list[dict]:
    out = []
    for i in range(n):
        kind = i % 4
        src = ips[i % len(ips)] if kind < 3 else f"192.168.{i % 250}.1"
        dst = ips[(i * 7) % len(ips)] if kind < 2 else f"172.16.{i % 250}.2"
        out.append({"event": {"dataset": "netagent.drops"}, "source": {"ip": src, "port": 40000},
                    "destination": {"ip": dst, "port": 53},
                    "netagent": {"drop": {"netns": 0, "ifindex": 0, "interface": None}}})
    return out


def timed(enricher: Enricher, events: list[dict]) -> float:
    t0 = time.process_time()
    for i in range(0, len(events), BATCH):
        enricher.process_batch(events[i:i + BATCH])
    return time.process_time() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    pods = cluster()
    ips = list(pods.by_ip)
    rounds = []
    for r in range(args.rounds):
        row = {}
        for mode in ("baseline", "apiserver") if r % 2 == 0 else ("apiserver", "baseline"):
            enricher = Enricher(None, cluster=pods if mode == "apiserver" else None)
            events = make_events(args.events, ips)
            row[mode] = timed(enricher, events)
            if mode == "apiserver":
                named = sum(1 for e in events if "kubernetes" in e["netagent"])
                assert named == args.events * 3 // 4, named  # the processor did its work
                assert not enricher.failures.by_cause, enricher.failures.by_cause
        extra = (row["apiserver"] - row["baseline"]) / args.events
        row["cost_us_per_event"] = 1e6 * extra
        row["core_share_at_rate"] = extra * RATE
        rounds.append(row)
        print(f"round {r + 1}/{args.rounds}: +{row['cost_us_per_event']:.3f} us/event, "
              f"{row['core_share_at_rate']:+.2%} of a core at {RATE} ev/s", flush=True)
    result = {
        "benchmark": "apiserver",
        "command": "bench/apiserver_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus_used": 1, "cpus_online": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "cluster_pods": CLUSTER_PODS, "rate_events_per_s": RATE, "events_per_round": args.events, "rounds": args.rounds,
        "cost_us_per_event": rounded(spread(r["cost_us_per_event"] for r in rounds)),
        "core_share_at_rate": rounded(spread(r["core_share_at_rate"] for r in rounds), 4),
        "baseline_us_per_event": rounded(spread(1e6 * r["baseline"] / args.events for r in rounds)),
        "load_average_at_end": os.getloadavg()[0],
        "rounds_detail": rounds,
    }
    write_result("apiserver", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
