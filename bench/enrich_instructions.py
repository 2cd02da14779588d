#!/usr/bin/env python3
"""Instructions per event of the enrichment stage, counted by valgrind (cachegrind), not timed.

    .venv/bin/python bench/enrich_instructions.py

A timed benchmark on a shared, loaded machine (bench/enrich_bench.py) swings
by a factor of two between rounds; an instruction count does not depend on
the load. Each figure is (instructions with 25,000 events - with 5,000) /
20,000 for the work, minus the same for building the events alone, over the
bench's 200 pods' events (pod namespaces only: the hot path). Counts repeat
to within ~50 instructions per event between runs (PYTHONHASHSEED fixed).
Not part of `make bench` (valgrind runs the interpreter ~50x slower).
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("none", "stage", "encode_plain", "encode_enriched")


def child(mode: str, n: int) -> None:
    import gc

    sys.path.insert(0, HERE)
    import enrich_bench as eb
    from netagent.jsonline import dumps_line

    gc.disable()  # collections depend on what else the process allocated: counted apart from the work
    pods = eb.make_pods()
    enricher = eb.make_enricher(pods)
    events = [e for e in eb.make_events(n * 10 // 8 + 10, pods)
              if eb.POD_INODE0 <= e["netagent"]["drop"]["netns"] < eb.POD_INODE0 + eb.PODS][:n]
    if mode in ("stage", "encode_enriched"):
        for i in range(0, n, 1000):
            enricher.process_batch(events[i:i + 1000])
    if mode.startswith("encode"):
        for event in events:
            dumps_line(event)


def instructions(mode: str, n: int) -> int:
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, os.path.abspath(__file__), "--child", mode, str(n)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=True)
    return int(re.search(r"I\s+refs:\s+([\d,]+)", out.stderr).group(1).replace(",", ""))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    if shutil.which("valgrind") is None:  # not installed by make setup: this count is run by hand
        print("enrich_instructions: valgrind missing (apt-get install valgrind)", file=sys.stderr)
        return 69
    per_event = {m: (instructions(m, 25000) - instructions(m, 5000)) / 20000 for m in MODES}
    base = per_event["none"]
    print(f"enrichment stage: {per_event['stage'] - base:.0f} instructions per event")
    print(f"serialising a drop event: {per_event['encode_plain'] - base:.0f} without the stage's fields, "
          f"{per_event['encode_enriched'] - per_event['stage']:.0f} with them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
