#!/usr/bin/env python3
"""The enrichment stage of another commit against this tree's, interleaved in one process.

    .venv/bin/python bench/enrich_ab.py --rev COMMIT [--rounds 10]

bench/enrich_bench.py's figure swings with the machine's load, so two of its
runs an hour apart cannot tell a change of a microsecond. Here each round runs
bench/enrich_bench.py's paced pipeline (50k drop events/s, 200 pods, one CPU)
three times, in a rotating order: without the stage (baseline), with COMMIT's
Attributor and Pipeline (old), and with this tree's (new). Both are set up as
enrich_bench sets up the stage (the same index and warm interface names: only
the Attributor object differs); COMMIT's files are read with `git show`.
Prints the extra CPU per event of each over the round's baseline and
old - new per round; writes bench/results/enrich_ab.json.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import enrich_bench as eb  # noqa: E402

RESULTS = os.path.join(HERE, "results", "enrich_ab.json")
WAYS = ("baseline", "old", "new")


def module_at(rev: str, path: str, name: str, workdir: str):
    """`path` (under agent/) as it is at `rev`, imported as module `name` (its own imports are
    this tree's netagent: only the Attributor's and the Pipeline's own code is COMMIT's)."""
    source = subprocess.run(["git", "-C", os.path.dirname(HERE), "show", f"{rev}:{path}"],
                            capture_output=True, check=True).stdout
    file = os.path.join(workdir, f"{name}.py")
    with open(file, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def old_enricher(pods, processors_module):
    enricher = eb.make_enricher(pods)
    new = enricher.processors[0]
    enricher.processors[0] = processors_module.Attributor(new.pods, new.directory, new.failures, new.node, new.namer)
    return enricher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="the commit whose stage is 'old'")
    parser.add_argument("--rounds", type=int, default=10)
    args, pods, n = eb.paced_setup(parser)
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="enrich-ab-") as workdir:
        old_processors = module_at(args.rev, "agent/enrich/processors.py", "old_processors", workdir)
        old_pipeline = module_at(args.rev, "agent/pipeline.py", "old_pipeline", workdir)
        for r in range(args.rounds):
            for way in WAYS[r % 3:] + WAYS[:r % 3]:
                enricher = (None if way == "baseline" else
                            old_enricher(pods, old_processors) if way == "old" else eb.make_enricher(pods))
                pipeline_class = old_pipeline.Pipeline if way == "old" else eb.Pipeline
                result = eb.run(eb.make_events(n, pods), workdir, enricher, eb.RATE, pipeline_class)
                cpu[way].append(result["cpu_seconds"])
    extra = {way: [1e6 * (c - b) / n for c, b in zip(cpu[way], cpu["baseline"])] for way in ("old", "new")}
    saved = [o - w for o, w in zip(extra["old"], extra["new"])]
    result = {"benchmark": "enrich_ab", "command": "bench/enrich_ab.py " + " ".join(sys.argv[1:]), "rev": args.rev,
              "rounds": args.rounds, "paced_events_per_run": n, "rate_events_per_s": eb.RATE,
              "baseline_us_per_event": eb.summary([1e6 * c / n for c in cpu["baseline"]], 3),
              "extra_us_per_event": {way: eb.summary(extra[way], 3) for way in extra},
              "old_minus_new_us_per_event": eb.summary(saved, 3), "old_minus_new_by_round": saved,
              "rounds_new_cheaper": sum(1 for s in saved if s > 0),
              "load_average_at_end": os.getloadavg()[0], "cpu_seconds": cpu}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(RESULTS + ".tmp", RESULTS)
    for way in ("old", "new"):
        s = result["extra_us_per_event"][way]
        print(f"{way}: extra {s['median']:.2f} us/event ({s['min']:.2f}..{s['max']:.2f}), "
              f"{s['median'] * eb.RATE / 1e4:.1f}% of a core at {eb.RATE} events/s")
    print(f"old - new: median {statistics.median(saved):.2f} us/event, new cheaper in "
          f"{result['rounds_new_cheaper']} of {args.rounds} rounds; load average at the end "
          f"{result['load_average_at_end']:.2f}; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
