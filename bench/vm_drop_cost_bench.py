"""Kernel cost per drop on Debian's 6.1 and 6.12 kernels, for every attach path each has.

One VM per kernel (packaging/vm/run, both at once) runs
    bench/drop_cost_bench.py --paths all --together --json-out SHARED/<series>.json
inside: netagent's drop program on tp_btf, raw_tracepoint, tracepoint and
kprobe (kfree_skb_reason on 6.1, sk_skb_reason_drop on 6.12) and the bpftrace
counter where it attaches, all attached at once, so each of the BENCH_ROUNDS
rounds (>= 10) runs every program on the same drops; each round's counts are
checked against Udp NoPorts. (Attaching per round, as on the host, takes
about 10 minutes a round under TCG on a loaded machine.) This side collects both results
into bench/results/drop_cost_vm.json: per kernel and path the ns per drop
(median, min, max) and the per-round ratio to the fastest path and to bpftrace.

The guests run under TCG here (docs/kernels.md): run_time_ns is emulated
time, so only the ratios between paths mean something, not the nanoseconds.

    vm_drop_cost_bench.py [--kernels 6.1,6.12] [--sequential]

--kernels runs some of them and keeps the other kernels' last entries (each
entry has its own written_at).

Environment: BENCH_ROUNDS (10), BENCH_VM_SECONDS (flood seconds per round in
the guest, 1), BENCH_VM_TIMEOUT (seconds one guest may take, 5400).
Exit codes: 0 both kernels measured; 1 a guest's benchmark failed; 2 usage;
69 no VM can boot here (the runner's own one-line reason is shown).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from benchlib import HERE, RESULTS, ROUNDS, one_line_parser, scratch_dir, write_result

from netagent.errors import EXIT_UNAVAILABLE  # noqa: E402

REPO = os.path.dirname(HERE)
RUNNER = os.path.join(REPO, "packaging", "vm", "run")
GUEST_BENCH = os.path.join(HERE, "drop_cost_bench.py")
KERNELS = ("6.1", "6.12")
SECONDS = os.environ.get("BENCH_VM_SECONDS", "1")
TIMEOUT = float(os.environ.get("BENCH_VM_TIMEOUT", "5400"))
# BPF bytecode compiled in a guest, kept across runs (keyed by kernel release
# inside): a BCC compile under TCG takes minutes, a cached load seconds.
BYTECODE_CACHE = os.environ.get("BENCH_VM_CACHE", "/var/cache/netagent-bench-vm")


def guest_command(result_file: str) -> list[str]:
    python = os.path.join(REPO, ".venv", "bin", "python")
    return ["env", f"BENCH_ROUNDS={ROUNDS}", f"BENCH_SECONDS={SECONDS}", python, GUEST_BENCH,
            "--paths", "all", "--together", "--json-out", result_file]


class Guest:
    """One VM running the drop-cost benchmark; its output is echoed with the kernel as prefix."""

    def __init__(self, series: str, share: str):
        self.series, self.share = series, share
        self.result_file = os.path.join(share, f"{series}.json")
        self.rc: int | None = None
        self.stderr_tail: list[str] = []
        self.seconds = 0.0

    def run(self) -> None:
        env = dict(os.environ, NETAGENT_CACHE_DIR=BYTECODE_CACHE)
        cmd = [RUNNER, "--kernel", self.series, "--cpus", "2", "--share", self.share, "--share", BYTECODE_CACHE,
               "--", *guest_command(self.result_file)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        pumps = [threading.Thread(target=self._pump, args=(stream, tail), daemon=True)
                 for stream, tail in ((proc.stdout, None), (proc.stderr, self.stderr_tail))]
        for t in pumps:
            t.start()
        try:
            self.rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.rc = proc.wait()
            self.stderr_tail.append(f"guest run exceeded BENCH_VM_TIMEOUT={TIMEOUT:.0f} s and was killed")
        for t in pumps:
            t.join(timeout=30)
        self.seconds = time.monotonic() - t0

    def _pump(self, stream, tail) -> None:
        for line in stream:
            print(f"[{self.series}] {line.rstrip()}", flush=True)
            if tail is not None:
                tail[:] = (tail + [line.rstrip()])[-20:]

    def result(self) -> dict | None:
        try:
            with open(self.result_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def summarize(guest: dict) -> dict:
    """Per path: ns per drop, ratios, exactness, as the guest measured them."""
    paths = {}
    for variant, cost in guest["ns_per_drop"].items():
        name = variant.removeprefix("netagent ")
        entry = {"ns_per_drop": cost}
        if variant != "bpftrace":
            entry.update(attach=guest["attach_paths"][variant], ratio_to_fastest=guest["ratio_to_fastest"][variant],
                         exact_all_rounds=guest["exact_all_rounds"][variant])
            if "ratio_to_bpftrace" in guest:
                entry["ratio_to_bpftrace"] = guest["ratio_to_bpftrace"][variant]
        paths[name] = entry
    return {"kernel": guest["kernel"], "accelerator": guest.get("vm", {}).get("accelerator"),
            "cpus": guest["cpus"], "rounds": guest["rounds"], "seconds_per_round": guest["seconds_per_round"],
            "fastest_path": guest["fastest_netagent_path"].removeprefix("netagent "),
            "paths": paths, "unavailable": {k.removeprefix("netagent "): v for k, v in guest["unavailable"].items()},
            "written_at": guest["written_at"]}


def load_previous() -> dict:
    try:
        with open(os.path.join(RESULTS, "drop_cost_vm.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def parse_args(argv) -> argparse.Namespace:
    p = one_line_parser("vm_drop_cost_bench")
    p.add_argument("--kernels", default=",".join(KERNELS), help="comma list of kernel series (6.1, 6.12)")
    p.add_argument("--sequential", action="store_true", help="one VM after the other instead of both at once")
    args = p.parse_args(argv)
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if not args.kernels or any(k not in KERNELS for k in args.kernels):
        p.error(f"--kernels: choose from {', '.join(KERNELS)}")
    if ROUNDS < 10:
        p.error(f"BENCH_ROUNDS={ROUNDS}: at least 10 rounds")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("NETAGENT_VM"):
        print("vm_drop_cost_bench: already inside a lab VM (NETAGENT_VM is set); VMs are not nested",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    os.makedirs(BYTECODE_CACHE, exist_ok=True)
    share = scratch_dir("netagent-vm-bench-")
    guests = [Guest(k, share) for k in args.kernels]
    if args.sequential:
        for g in guests:
            g.run()
    else:
        threads = [threading.Thread(target=g.run, name=f"vm-{g.series}") for g in guests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    kernels, detail, failed = {}, {}, []
    for g in guests:
        data = g.result()
        if g.rc == EXIT_UNAVAILABLE and data is None:
            print(f"vm_drop_cost_bench: {g.series}: no VM here: {' | '.join(g.stderr_tail[-3:])}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        if g.rc != 0 or data is None:
            failed.append(f"{g.series} (exit {g.rc}): {' | '.join(g.stderr_tail[-5:])}")
            continue
        kernels[g.series] = dict(summarize(data), guest_run_seconds=round(g.seconds))
        detail[g.series] = data["rounds_detail"]
    for line in failed:
        print(f"vm_drop_cost_bench: {line}", file=sys.stderr)
    if kernels:
        # A run of some kernels (--kernels) keeps the others' last results; each says when it was measured.
        previous = load_previous()
        merged = {**previous.get("kernels", {}), **kernels}
        kernels = {k: merged[k] for k in sorted(merged, key=lambda k: [int(n) for n in k.split(".")])}
        detail = {**previous.get("rounds_detail", {}), **detail}
        write_result("drop_cost_vm", {
            "benchmark": "kernel ns per kfree_skb drop (run_time_ns/run_cnt) by attach path, in a VM per kernel",
            "command": "make bench (bench/vm_drop_cost_bench.py, which runs "
                       "`bench/drop_cost_bench.py --paths all` in packaging/vm/run --kernel K)",
            "caveat": "under TCG run_time_ns is emulated time: compare ratios between paths, not nanoseconds",
            "kernels": kernels, "rounds_detail": detail})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
