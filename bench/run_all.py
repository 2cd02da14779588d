#!/usr/bin/env python3
"""`make bench`: run every bench/*_bench.py; each writes its own bench/results/<name>.json.

Exit status: 0 if every benchmark ran, 1 if any failed (their names are printed).
"""

import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    scripts = sorted(glob.glob(os.path.join(HERE, "*_bench.py")))
    if not scripts:
        print("run_all: no bench/*_bench.py found", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        name = os.path.basename(script)
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, script], cwd=os.path.dirname(HERE))
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.monotonic() - t0:.1f}s", flush=True)
        if rc != 0:
            failed.append(name)
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
