#!/usr/bin/env python3
"""`make bench`: run every bench/*_bench.py; each writes its own bench/results/<name>.json.

Then bench/results/run.json (when this run started and finished, and how each
benchmark ended), and last the figure (plot.py) and the tables (report.py, which
also writes them into README.md and checks that every result is from this run).

Exit status: 0 if every benchmark ran and met its targets, 1 if any did not
(their names are printed; a benchmark that missed a target still wrote its figures).
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from benchlib import utc_now

HERE = os.path.dirname(os.path.abspath(__file__))


def run_one(script: str) -> int:
    """One benchmark to its end. A SIGTERM to `make bench` is passed on to it, and waited
    for: the benchmark stops its agents and removes its namespaces before this exits."""
    child = subprocess.Popen([sys.executable, script], cwd=os.path.dirname(HERE))
    stopped = []

    def pass_on(signum, frame):
        # only passed on here: the wait below (not a second one inside this handler, which
        # would deadlock on Popen's lock) sees the benchmark finish its clean-up
        stopped.append(signum)
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    try:
        rc = child.wait()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stopped:
        sys.exit(128 + stopped[0])
    return rc


def main() -> int:
    scripts = sorted(glob.glob(os.path.join(HERE, "*_bench.py")))
    if not scripts:
        print("run_all: no bench/*_bench.py found", file=sys.stderr)
        return 1
    failed = []
    run = {"started": utc_now(), "benchmarks": {}}
    for script in scripts:
        name = os.path.basename(script)
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        rc = run_one(script)
        seconds = time.monotonic() - t0
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.1f}s", flush=True)
        run["benchmarks"][name] = {"exit": rc, "seconds": round(seconds, 1)}
        if rc != 0:
            failed.append(name)
    run["finished"] = utc_now()
    with open(os.path.join(HERE, "results", "run.json.tmp"), "w") as f:
        json.dump(run, f, indent=2)
    os.replace(os.path.join(HERE, "results", "run.json.tmp"), os.path.join(HERE, "results", "run.json"))
    # The figure the README embeds, from the results just written.
    for tool in ("plot.py", "report.py"):  # the figure and the table the README quotes
        if subprocess.call([sys.executable, os.path.join(HERE, tool)], cwd=os.path.dirname(HERE)) != 0:
            failed.append(tool)
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"run_all: {len(scripts)} benchmark(s) ok; results in bench/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
