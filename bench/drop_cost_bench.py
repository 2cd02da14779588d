"""Kernel cost per drop: netagent's drop program on each attach path vs bpftrace.

The reference is the simplest peer counter,
    bpftrace -e 'tracepoint:skb:kfree_skb { @[args->reason] = count(); }'
which counts drops by reason only; netagent attributes each drop to
(netns, ifindex, reason, location, 5-tuple) with bytes and first/last time.
The floor is an empty program (`empty`) attached where netagent's goes
(tp_btf skb:kfree_skb): what bpf_stats itself adds to every run here.
Cost = run_time_ns / run_cnt of the program (kernel.bpf_stats_enabled), over
a closed-port UDP flood to 127.0.0.1:9 in a namespace this script creates.
Each round runs every variant once, alone, in a rotating order; netagent's
counts are checked against the kernel's Udp NoPorts every round.

Target (issue 12): netagent on its default path <= 0.8 x bpftrace.
Writes bench/results/drop_cost.json.

    drop_cost_bench.py [--paths all|VARIANT,...] [--together] [--json-out FILE]

--paths: the variants to run, from bpftrace, empty, tp_btf, raw_tracepoint,
tracepoint and kprobe (default: bpftrace, empty and the three tracepoint
paths, the set drop_cost.json holds). `all` is every attach path this kernel has, plus
bpftrace if it attaches here; the others are listed under "unavailable" with
the reason. --together attaches every variant once for all rounds, so each
round's flood runs every program on the same drops (under TCG one load takes
minutes, so attaching per round does not fit). --json-out writes the result
there instead (bench/vm_drop_cost_bench.py runs this inside VMs with all three).
Exit codes: 2 usage, 69 a variant named in --paths is unavailable on this kernel.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

from benchlib import (ROUNDS, BpfStats, EmptyProgramOnKfreeSkb, build_flood, flood, noports, one_line_parser, rounded,
                      spread, write_result)

from lab import Namespace  # noqa: E402 (tests/ on sys.path via benchlib)
from timescale import scaled  # noqa: E402
from netagent import bpfsys  # noqa: E402
from netagent.bpfinfo import prog_stats  # noqa: E402
from netagent.errors import EXIT_UNAVAILABLE, ProbeUnavailable  # noqa: E402
from netagent.probes.drops import DropSensor  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
BPFTRACE = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"
NETAGENT_PATHS = ("tp_btf", "raw_tracepoint", "tracepoint")
ALL_NETAGENT_PATHS = NETAGENT_PATHS + ("kprobe",)
# not netagent: the peer counter, and an empty program (the floor of run_time_ns / run_cnt)
REFERENCES = ("bpftrace", "empty")
DEFAULT_VARIANTS = REFERENCES + NETAGENT_PATHS
TARGET_RATIO = 0.8


class Unavailable(Exception):
    """A variant this kernel (or this machine) cannot run; the message says why."""


def measure_all(prog_fds: dict[str, int], ns, binary: str) -> dict[str, dict]:
    """One flood; each program's ns per drop over it (all attached programs see the same drops)."""
    s0 = {v: prog_stats(fd) for v, fd in prog_fds.items()}
    before = noports(ns)
    sent, elapsed = flood(ns, binary, SECONDS)
    s1 = {v: prog_stats(fd) for v, fd in prog_fds.items()}
    delta = noports(ns) - before
    out = {}
    for v in prog_fds:
        runs = s1[v].run_cnt - s0[v].run_cnt
        if runs == 0 and delta > 0:
            raise RuntimeError(f"{v or 'program'} did not run over {delta} drops (kernel.bpf_stats_enabled off?)")
        out[v] = {"ns_per_drop": (s1[v].run_time_ns - s0[v].run_time_ns) / max(runs, 1), "runs": runs,
                  "sent": sent, "noports_delta": delta, "pps": sent / elapsed}
    return out


def measure(prog_fd: int, ns, binary: str) -> dict:
    return measure_all({"": prog_fd}, ns, binary)[""]


def attach_netagent(path: str) -> tuple[DropSensor, float]:
    """An attached drop sensor on `path` and the seconds attaching took; Unavailable if this kernel lacks it."""
    sensor = DropSensor(attach=path)
    t0 = time.monotonic()
    try:
        sensor.attach()
    except ProbeUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    return sensor, time.monotonic() - t0


def checked(out: dict, sensor: DropSensor, ns) -> dict:
    """`out` with what the sensor counted for the flood, and whether that equals NoPorts and the datagrams sent."""
    counted = sum(e["netagent"]["drop"]["count"] for e in sensor.poll()
                  if e["netagent"]["drop"]["netns"] == ns.inode and e["event"]["reason"] == "NO_SOCKET"
                  and e["network"].get("transport") == "udp")
    return dict(out, attach_path=sensor.attach_path, counted=counted,
                exact=counted == out["noports_delta"] == out["sent"])


def round_netagent(path: str, ns, binary: str) -> dict:
    sensor, attach_s = attach_netagent(path)
    try:
        return dict(checked(measure(sensor.prog_fd, ns, binary), sensor, ns), attach_seconds=attach_s)
    finally:
        sensor.detach()


@contextlib.contextmanager
def bpftrace_attached():
    """The fd of the running bpftrace counter's program; bpftrace is stopped on exit."""
    before = set(bpfsys.prog_ids())
    proc = subprocess.Popen(["bpftrace", "-e", BPFTRACE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:  # warnings first (RLIMIT_MEMLOCK), then "Attaching 1 probe..."
            seen.append(line.strip())
            if "Attaching" in line or len(seen) > 20:
                break
        if not seen or "Attaching" not in seen[-1]:
            raise Unavailable(f"bpftrace did not attach: {' | '.join(seen)}")
        fds = []
        # "Attaching" comes before the load: under TCG the program appears tens of seconds later
        deadline = time.monotonic() + scaled(10)
        while not fds and time.monotonic() < deadline:
            for prog_id in set(bpfsys.prog_ids()) - before:
                try:
                    fd = bpfsys.prog_fd_by_id(prog_id)
                except FileNotFoundError:  # gone meanwhile: bpftrace's feature probes load and unload programs
                    continue
                if "kfree" in prog_stats(fd).name:  # bpftrace names it after the tracepoint
                    fds.append(fd)
                else:
                    os.close(fd)
            time.sleep(0.05)
        if not fds:
            raise Unavailable(f"no bpftrace kfree_skb program appeared within {scaled(10):.0f} s of 'Attaching'")
        if len(fds) != 1:
            raise RuntimeError(f"expected one bpftrace kfree_skb program, found {len(fds)}")
        try:
            yield fds[0]
        finally:
            os.close(fds[0])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def round_bpftrace(ns, binary: str) -> dict:
    with bpftrace_attached() as fd:
        return dict(measure(fd, ns, binary), program=prog_stats(fd).name)


def round_empty(ns, binary: str) -> dict:
    with EmptyProgramOnKfreeSkb() as empty:
        return measure(empty.prog, ns, binary)


def rounds_together(variants: list[str], ns, binary: str, unavailable: dict) -> dict[str, list[dict]]:
    """Every variant attached at once, for all rounds: each drop runs each program, so a round's
    ratios compare the programs over the very same drops (attach once: under TCG a load takes
    minutes). Programs on one hook run in attach order, which stays the same in every round."""
    with contextlib.ExitStack() as stack:
        fds, sensors = {}, {}
        for v in variants:
            try:
                if v == "bpftrace":
                    fds[v] = stack.enter_context(bpftrace_attached())
                    print(f"bpftrace: program {prog_stats(fds[v]).name}", flush=True)
                elif not is_netagent(v):
                    fds[v] = stack.enter_context(EmptyProgramOnKfreeSkb()).prog
                else:
                    sensor, _ = attach_netagent(variant_of(v))
                    stack.callback(sensor.detach)
                    sensors[v], fds[v] = sensor, sensor.prog_fd
            except Unavailable as exc:
                print(f"{v}: unavailable here: {exc}", flush=True)
                unavailable[v] = str(exc)
        rounds: dict[str, list[dict]] = {v: [] for v in fds}
        for i in range(ROUNDS):
            out = measure_all(fds, ns, binary)
            for v, r in out.items():
                r = checked(r, sensors[v], ns) if v in sensors else r
                r["round"], r["t"] = i, time.time()
                rounds[v].append(r)
                print(f"round {i} {v}: {r['ns_per_drop']:.0f} ns/drop over {r['runs']} runs"
                      + (f", counted {r['counted']} of {r['sent']} sent, NoPorts +{r['noports_delta']}"
                         if "exact" in r else ""), flush=True)
        return rounds


def parse_args(argv) -> argparse.Namespace:
    p = one_line_parser("drop_cost_bench")
    p.add_argument("--paths", default=",".join(DEFAULT_VARIANTS),
                   help="all, or a comma list of: " + ", ".join(REFERENCES + ALL_NETAGENT_PATHS))
    p.add_argument("--json-out", metavar="FILE", help="write the result here instead of bench/results/drop_cost.json")
    p.add_argument("--together", action="store_true",
                   help="attach every variant once, for all rounds, instead of each alone in every round")
    args = p.parse_args(argv)
    if args.paths == "all":
        args.variants, args.required = ("bpftrace",) + ALL_NETAGENT_PATHS, False
    else:
        args.variants, args.required = tuple(v.strip() for v in args.paths.split(",") if v.strip()), True
        unknown = [v for v in args.variants if v not in DEFAULT_VARIANTS + ALL_NETAGENT_PATHS]
        if unknown or not args.variants:
            p.error(f"--paths {args.paths!r}: choose all or from {', '.join(REFERENCES + ALL_NETAGENT_PATHS)}")
    return args


def run_variant(variant: str, ns, binary: str) -> dict:
    if variant == "bpftrace":
        return round_bpftrace(ns, binary)
    if variant == "empty":
        return round_empty(ns, binary)
    return round_netagent(variant, ns, binary)


_LABELS = {"bpftrace": "bpftrace", "empty": "empty program"}


def label(variant: str) -> str:
    return _LABELS.get(variant, f"netagent {variant}")


def variant_of(label_: str) -> str:
    return {v: k for k, v in _LABELS.items()}.get(label_) or label_.split()[-1]


def is_netagent(label_: str) -> bool:
    return label_.startswith("netagent ")


def per_round_ratios(rounds: dict[str, list[dict]], reference: str) -> dict:
    """Each variant's ns per drop over `reference`'s in the same round: noise common to a round cancels."""
    return {v: rounded(spread(a["ns_per_drop"] / b["ns_per_drop"] for a, b in zip(rs, rounds[reference])), 3)
            for v, rs in rounds.items() if v != reference and is_netagent(v)}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    unavailable: dict[str, str] = {}
    variants = [label(v) for v in args.variants]
    if "bpftrace" in args.variants and subprocess.run(["which", "bpftrace"], capture_output=True).returncode != 0:
        if args.required:
            print("drop_cost_bench: bpftrace not installed (make setup installs it)", file=sys.stderr)
            return EXIT_UNAVAILABLE
        unavailable["bpftrace"] = "bpftrace not installed"
        variants.remove("bpftrace")
    binary = build_flood()
    ns = Namespace()
    rounds: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        with BpfStats():
            if args.together:
                rounds = rounds_together(variants, ns, binary, unavailable)
                if args.required and unavailable:
                    print(f"drop_cost_bench: unavailable here: {unavailable}", file=sys.stderr)
                    return EXIT_UNAVAILABLE
            for i in range(0 if args.together else ROUNDS):
                order = variants[i % len(variants):] + variants[:i % len(variants)]
                for v in order:
                    try:
                        r = run_variant(variant_of(v), ns, binary)
                    except Unavailable as exc:
                        # Only the first round may find a variant missing; later it is a failure.
                        if args.required or i > 0:
                            print(f"drop_cost_bench: {v}: {exc}", file=sys.stderr)
                            return EXIT_UNAVAILABLE
                        print(f"round {i} {v}: unavailable here: {exc}", flush=True)
                        unavailable[v] = str(exc)
                        continue
                    r["round"], r["t"] = i, time.time()
                    rounds[v].append(r)
                    print(f"round {i} {v}: {r['ns_per_drop']:.0f} ns/drop over {r['runs']} runs"
                          + (f", exact={r['exact']}" if "exact" in r else ""), flush=True)
                if i == 0:
                    variants = [v for v in variants if v not in unavailable]
                    rounds = {v: rs for v, rs in rounds.items() if v not in unavailable}
    finally:
        ns.delete()
    if not any(is_netagent(v) for v in rounds):
        print(f"drop_cost_bench: no netagent attach path ran here: {unavailable}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    cost = {v: rounded(spread(r["ns_per_drop"] for r in rs), 1) for v, rs in rounds.items()}
    fastest = min((v for v in cost if is_netagent(v)), key=lambda v: cost[v]["median"])
    ratios_fastest = per_round_ratios(rounds, fastest)
    ratios_fastest[fastest] = rounded(spread([1.0] * ROUNDS), 3)
    result = {
        "benchmark": "kernel ns per kfree_skb drop (run_time_ns/run_cnt), UDP flood to 127.0.0.1:9 in a namespace",
        "reference": f"bpftrace -e '{BPFTRACE}'",
        "rounds": ROUNDS, "seconds_per_round": SECONDS,
        "method": ("all variants attached at once; each round one flood" if args.together
                   else "each variant alone, attached per round, in rotating order"),
        "attach_paths": {v: rs[0]["attach_path"] for v, rs in rounds.items() if is_netagent(v)},
        "unavailable": unavailable,
        "ns_per_drop": cost,
        "fastest_netagent_path": fastest,
        "ratio_to_fastest": {v: ratios_fastest[v] for v in cost if is_netagent(v)},
        "exact_all_rounds": {v: all(r["exact"] for r in rs) for v, rs in rounds.items() if is_netagent(v)},
        "rounds_detail": rounds,
    }
    if os.environ.get("NETAGENT_VM"):
        result["vm"] = {"series": os.environ["NETAGENT_VM"], "accelerator": os.environ.get("NETAGENT_VM_ACCEL")}
    if "bpftrace" in rounds:
        result["ratio_to_bpftrace"] = per_round_ratios(rounds, "bpftrace")
        default = "netagent " + NETAGENT_PATHS[0]
        if default in rounds:
            result["target"] = {"default_path": default, "ratio_to_bpftrace_max": TARGET_RATIO}
            result["target_met"] = (result["ratio_to_bpftrace"][default]["median"] <= TARGET_RATIO
                                    and result["exact_all_rounds"][default])
    write_result("drop_cost", result, path=args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
