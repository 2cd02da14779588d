#!/usr/bin/env python3
"""Two timings behind choices in the enrichment path, on bench/enrich_bench.py's events.

    .venv/bin/python bench/enrich_micro.py

1. Stage + serialisation per event when the dispatcher takes a batch in
   chunks of 1000, 256, 64, 16 and 1 events (netagent.pipeline.CHUNK): fresh
   events each time, as a sensor's are; best and median of 5 passes over
   100,000 events, one thread, CPU time.
2. One enriched drop event (warm, timeit) encoded as it is, with the pod's three
   top-level objects as orjson.Fragment (pre-encoded), and through a copy of
   the event holding Fragments: whether pre-encoding the shared fields pays.
Prints only; not part of `make bench`.
"""

import gc
import os
import statistics
import sys
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import orjson  # noqa: E402

import enrich_bench as eb  # noqa: E402
from netagent.jsonline import dumps_line  # noqa: E402

EVENTS = 100_000
TOP = ("orchestrator", "kubernetes", "container")  # what the stage adds at the top of a pod's event


def by_chunks(pods, chunk: int | None, passes: int = 5) -> str:
    enricher = eb.make_enricher(pods) if chunk else None
    step = chunk or 1000
    times = []
    for _ in range(passes):
        events = eb.make_events(EVENTS, pods)
        gc.collect()
        t0 = time.thread_time()
        for i in range(0, EVENTS, step):
            part = enricher.process_batch(events[i:i + step]) if enricher else events[i:i + step]
            for event in part:
                dumps_line(event)
        times.append(1e9 * (time.thread_time() - t0) / EVENTS)
    return f"best {min(times):5.0f} ns, median {statistics.median(times):5.0f} ns per event"


def fragments(pods) -> None:
    events = eb.make_events(10, pods)
    eb.make_enricher(pods).process_batch(events)
    event = events[1]  # a pod's drop, between two pods
    held = {**event, **{k: orjson.Fragment(orjson.dumps(event[k])) for k in TOP}}
    assert orjson.dumps(held) == orjson.dumps(event)
    f1, f2, f3 = (held[k] for k in TOP)
    ways = {"as it is": lambda: orjson.dumps(event),
            "Fragments held in the event": lambda: orjson.dumps(held),
            "a copy holding Fragments": lambda: orjson.dumps({**event, "orchestrator": f1, "kubernetes": f2,
                                                              "container": f3})}
    for name, call in ways.items():
        best = min(timeit.repeat(call, number=100_000, repeat=5)) / 100_000
        print(f"  {name:30s} {1e9 * best:5.0f} ns")


def main() -> int:
    pods = eb.make_pods()
    print(f"serialisation alone:            {by_chunks(pods, None)}")
    for chunk in (1000, 256, 64, 16, 1):
        print(f"stage + serialisation, {chunk:4d}:   {by_chunks(pods, chunk)}")
    print("one enriched drop event, encoded:")
    fragments(pods)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
