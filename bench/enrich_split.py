#!/usr/bin/env python3
"""Where the enrichment stage's extra CPU goes: the stage's work, or the bigger events it makes.

    .venv/bin/python bench/enrich_split.py [--rounds 8]

Runs bench/enrich_bench.py's paced pipeline (50k drop events/s, 200 pods, one
CPU) in three ways, interleaved: without the stage (baseline), with it
(enriched), and without it on events that were built with the stage's fields
already in them (born enriched: what carrying, serialising and writing those
fields costs with no stage at all). Each as extra process CPU per event over
the baseline of its round. Not part of
`make bench` (it explains enrich_bench's figure; the bound is enrich_bench's).
Prints one summary line per way and writes bench/results/enrich_split.json.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import enrich_bench as eb  # noqa: E402

RESULTS = os.path.join(HERE, "results", "enrich_split.json")
WAYS = ("baseline", "enriched", "born_enriched")


def born_enriched_events(n: int, pods) -> list[dict]:
    """The bench's events with the stage's fields, each dict built again after enriching so that
    the fields sit in it as if the sensor had written them (no dict grown later, nothing shared
    with an enricher that runs in the measured pipeline)."""
    enricher = eb.make_enricher(pods)
    out = []
    for i in range(0, n, eb.BATCH):
        for event in enricher.process_batch(eb.make_events(min(eb.BATCH, n - i), pods)):
            event["netagent"]["drop"] = dict(event["netagent"]["drop"])
            event["netagent"] = dict(event["netagent"])
            out.append(dict(event))
    return out


def measure(way: str, n: int, pods, workdir: str) -> dict:
    events = born_enriched_events(n, pods) if way == "born_enriched" else eb.make_events(n, pods)
    enricher = eb.make_enricher(pods) if way == "enriched" else None
    return eb.run(events, workdir, enricher, eb.RATE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args, pods, n = eb.paced_setup(parser)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="enrich-split-") as workdir:
        for r in range(args.rounds):
            order = WAYS[r % 3:] + WAYS[:r % 3]
            rounds.append({way: measure(way, n, pods, workdir) for way in order})
    summary = {}
    for way in WAYS:
        cpu = [1e6 * rnd[way]["cpu_seconds"] / n for rnd in rounds]
        extra = [1e6 * (rnd[way]["cpu_seconds"] - rnd["baseline"]["cpu_seconds"]) / n for rnd in rounds]
        summary[way] = {"cpu_us_per_event": eb.summary(cpu, 3), "extra_us_per_event": eb.summary(extra, 3)}
        print(f"{way:14s} {statistics.median(cpu):5.2f} us/event, extra {statistics.median(extra):+5.2f} "
              f"({min(extra):+.2f}..{max(extra):+.2f})")
    result = {"benchmark": "enrich_split", "command": "bench/enrich_split.py " + " ".join(sys.argv[1:]),
              "rounds": args.rounds, "paced_events_per_run": n, "rate_events_per_s": eb.RATE,
              "load_average_at_end": os.getloadavg()[0], "summary": summary, "runs": rounds}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(RESULTS + ".tmp", RESULTS)
    print(f"load average at the end {result['load_average_at_end']:.2f}; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
