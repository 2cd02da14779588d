"""bench/results/performance.png from the last benchmark results (run by `make bench` after them).

Left: kernel ns per drop by attach path against bpftrace, median with the
min-max range of the rounds (drop_cost.json). Right: the undisturbed packet
rate (90th percentile of 100 ms windows) of each round without, with
`netagent run` and with an empty program on skb:kfree_skb, in the order
they ran (drops.json).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OUT = os.path.join(RESULTS, "performance.png")


def load(name: str) -> dict | None:
    try:
        with open(os.path.join(RESULTS, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def plot_vm_ratios(ax, vm: dict) -> None:
    """Per VM kernel, each attach path's ns per drop over the fastest path's (drop_cost_vm.json)."""
    kernels = list(vm["kernels"].items())
    paths = sorted({p for _, k in kernels for p in k["paths"] if p != "bpftrace"})
    width = 0.8 / max(len(kernels), 1)
    for i, (series, k) in enumerate(kernels):
        xs, med, lo, hi = [], [], [], []
        for j, p in enumerate(paths):
            r = k["paths"].get(p, {}).get("ratio_to_fastest")
            if r:
                xs.append(j + i * width)
                med.append(r["median"])
                lo.append(r["median"] - r["min"])
                hi.append(r["max"] - r["median"])
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=f"{k['kernel']} ({k['accelerator']})")
    ax.set_xticks([j + width * (len(kernels) - 1) / 2 for j in range(len(paths))], paths)
    ax.set_ylabel("ns per drop / fastest path's, same round")
    ax.set_title("VM lab: cost per drop relative to the fastest path (median, min-max)")
    ax.legend(loc="upper left", fontsize=8)


def main() -> int:
    cost, rate = load("drop_cost"), load("drops")
    if cost is None and rate is None:
        print("plot: no drop_cost.json or drops.json to plot", file=sys.stderr)
        return 1
    vm = load("drop_cost_vm")
    if vm:
        fig, (left, right, third) = plt.subplots(1, 3, figsize=(18, 4.5))
        plot_vm_ratios(third, vm)
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if cost:
        names = list(cost["ns_per_drop"])
        med = [cost["ns_per_drop"][n]["median"] for n in names]
        lo = [m - cost["ns_per_drop"][n]["min"] for n, m in zip(names, med)]
        hi = [cost["ns_per_drop"][n]["max"] - m for n, m in zip(names, med)]
        colors = ["#2b7bba" if n.startswith("netagent") else "#e69f00" if n == "empty program" else "#888888"
                  for n in names]
        left.bar(range(len(names)), med, yerr=[lo, hi], capsize=4, color=colors)
        left.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names])
        left.set_ylabel("ns per drop (run_time_ns / run_cnt)")
        left.set_title(f"Kernel cost per drop, {cost['rounds']} rounds (median, min-max)")
        ref = cost["ns_per_drop"].get("bpftrace", {}).get("median")
        if ref:
            left.axhline(0.8 * ref, color="#c0392b", linestyle="--", linewidth=1, label="0.8 x bpftrace (target)")
            left.legend(loc="upper left")
    if rate:
        t0 = min(r["t"] for r in rate["rounds_without"] + rate["rounds_with"])
        for key, label, color in (("rounds_without", "without agent", "#888888"),
                                  ("rounds_with", "with netagent run", "#2b7bba"),
                                  ("rounds_empty_program", "empty program on kfree_skb", "#e69f00")):
            rounds = rate[key]
            right.plot([r["t"] - t0 for r in rounds], [r["pps_undisturbed"] / 1000 for r in rounds], "o-",
                       label=label, color=color, markersize=3)
        ratio, floor = rate["undisturbed_rate_ratio"], rate["empty_program_undisturbed_rate_ratio"]
        right.set_title(f"UDP flood, undisturbed rate per round\nwith/without median {ratio['median']:.3f} "
                        f"({ratio['min']:.2f}-{ratio['max']:.2f}); empty program {floor['median']:.3f}",
                        fontsize=10)
        right.set_xlabel("seconds into the benchmark")
        right.set_ylabel("thousand packets per second")
        right.legend(loc="lower left")
    fig.suptitle(f"netagent, kernel {(cost or rate)['kernel']}, {(cost or rate)['cpus']} CPUs, "
                 f"{(cost or rate)['written_at']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"plot: wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
