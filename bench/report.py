"""bench/results/performance.md and the README's figures, from the last results.

`make bench` runs this last. It writes the tables to bench/results/performance.md
and puts the same text into README.md between the two README_MARKERS lines, so
the README quotes only what the benchmarks wrote. The first line says when each
result was written, and whether all of them came from the last `make bench`
(bench/results/run.json, written by bench/run_all.py).
"""

import json
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
README_MARKERS = ("<!-- bench/report.py writes from here: do not edit by hand -->",
                  "<!-- bench/report.py writes up to here -->")


def load(name):
    try:
        with open(os.path.join(RESULTS, f"{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mmm(s, fmt="{:.0f}", scale=1.0) -> str:
    return f"{fmt.format(s['median'] * scale)} ({fmt.format(s['min'] * scale)}–{fmt.format(s['max'] * scale)})"


def yes(flag) -> str:
    return "met" if flag else "**not met**"


def vm_table(vm) -> list[str]:
    """Cost per drop by attach path on each VM kernel (bench/vm_drop_cost_bench.py)."""
    lines = ["", f"Cost per drop by attach path in the VM lab ({vm['written_at']}; {vm['caveat']}):", "",
             "| kernel | path | ns per drop | × fastest path | × bpftrace | rounds counted = NoPorts "
             "| rounds NoPorts = sent |",
             "|---|---|---|---|---|---|---|"]
    for series, k in vm["kernels"].items():
        for name, p in k["paths"].items():
            if name == "bpftrace":
                continue
            to_bpftrace = mmm(p["ratio_to_bpftrace"], "{:.2f}") if "ratio_to_bpftrace" in p else "—"
            # counted = NoPorts is the sensor's exactness; NoPorts < sent means datagrams the
            # kernel did not count as NoPorts, shown apart so it is not read as a miscount
            rounds = vm["rounds_detail"][series][f"netagent {name}"]
            counted = sum(r["counted"] == r["noports_delta"] for r in rounds)
            delivered = sum(r["noports_delta"] == r["sent"] for r in rounds)
            lines.append(f"| {k['kernel']} ({k['accelerator']}, {k['rounds']} rounds) | {p['attach']} | "
                         f"{mmm(p['ns_per_drop'])} | {mmm(p['ratio_to_fastest'], '{:.2f}')} | {to_bpftrace} | "
                         f"{counted}/{len(rounds)} | {delivered}/{len(rounds)} |")
        if "bpftrace" in k["paths"]:
            reference = mmm(k["paths"]["bpftrace"]["ns_per_drop"])
            lines.append(f"| {k['kernel']} | bpftrace (reference) | {reference} | | | | |")
        for name, why in k["unavailable"].items():
            lines.append(f"| {k['kernel']} | {name}: not measured | {why} | | | |")
    return lines


def _start_cpu(daemon: dict) -> str:
    """The CPU seconds of those starts, where the bench measured them (a loaded machine
    stretches the wall time; the CPU time much less)."""
    if "start_cpu_seconds_warm_cache" not in daemon:
        return ""
    load = daemon.get("load_average_at_end")
    return (f"; CPU {mmm(daemon['start_cpu_seconds_warm_cache'], '{:.2f}')} s, `--version` "
            f"{mmm(daemon['start_cpu_seconds_floor_netagent_version'], '{:.2f}')} s"
            + (f"; load average {load[0]:.1f}" if load else ""))


def enrich_rows(enrich, apiserver) -> list[tuple]:
    """The Kubernetes enrichment stage (bench/enrich_bench.py) and its API-server processor
    (bench/apiserver_bench.py), each as a share of one core at 50k events/s."""
    rows = []
    if enrich:
        share = enrich["cost_core_share_at_rate"]
        rows.append((f"Kubernetes enrichment, {enrich['pods']} pods, {enrich['rate_events_per_s'] // 1000}k "
                     "drop events/s into the file sink",
                     f"{mmm(share, '{:.0f}', 100)} % of a core: {mmm(enrich['cost_us_per_event'], '{:.2f}')} µs "
                     f"per event over the pipeline's {mmm(enrich['pipeline_without_stage_us_per_event'], '{:.1f}')} "
                     f"µs, the stage itself {mmm(enrich['stage_own_cpu_us_per_event'], '{:.1f}')} µs; unpaced "
                     f"throughput with / without {mmm(enrich['unpaced_events_per_s']['ratio'], '{:.2f}')}; "
                     f"lost {enrich['lost']}",
                     f"≤ {enrich['bound_core_share']:.0%} {yes(enrich['within_bound'])}"))
    if apiserver:
        rows.append((f"the stage's API-server processor (peers' names), {apiserver['cluster_pods']} cluster pods",
                     f"{mmm(apiserver['cost_us_per_event'], '{:.2f}')} µs per event, "
                     f"{mmm(apiserver['core_share_at_rate'], '{:.1f}', 100)} % of a core at "
                     f"{apiserver['rate_events_per_s'] // 1000}k events/s", ""))
    return rows


def pipeline_table(pipeline) -> list[str]:
    """Events/s into each sink on one CPU against orjson + write(2) (bench/pipeline_bench.py)."""
    base = pipeline["baseline_orjson_write"]
    lines = ["", f"Pipeline on one CPU, {pipeline['events_per_run']:,} drop events a run, "
             f"{pipeline['rounds']} rounds interleaved with the baseline "
             f"(one thread: orjson + write(2), {mmm(rates(base), '{:,.0f}')} events/s); "
             f"aim ≥ {pipeline['target_events_per_s_file']:,} events/s into the file sink:", "",
             "| into | events/s | CPU per 10k events | ratio to the baseline, by round | lost |",
             "|---|---|---|---|---|"]
    for name, sink in pipeline["sinks"].items():
        lines.append(f"| {name} | {mmm(rates(sink), '{:,.0f}')} | "
                     f"{sink['cpu_ms_per_10k_events']} ms | {mmm(sink['ratio_to_baseline_spread'], '{:.3f}')} | "
                     f"{sink['lost']} |")
    return lines


def rates(summary: dict) -> dict:
    """A pipeline_bench summary's events/s: its median, and the slowest and fastest run."""
    runs = summary["events_per_s_runs"]
    return {"median": summary["events_per_s"], "min": min(runs), "max": max(runs)}


def mtu_table(mtu) -> list[str]:
    """`netagent probe mtu` beside tracepath in the namespace lab (bench/mtu_bench.py)."""
    scenarios = mtu["scenarios"]
    tp_icmp, tp_bh = scenarios["tracepath"][0], scenarios["tracepath"][1]
    lines = ["", f"Path MTU probe, client-router-server namespaces, {mtu['runs_per_scenario']} runs per case "
             f"(seconds of probing; the process, with Python's start, in brackets); budget on a black hole "
             f"≤ {mtu['budget']['blackhole_seconds_max']:g} s and ≤ {mtu['budget']['blackhole_probes_max']} probes:", "",
             "| case | netagent | answer right every run | tracepath |", "|---|---|---|---|"]
    for s in scenarios["icmp"] + scenarios["blackhole"]:
        beside = ""
        if s["name"] == tp_icmp["name"]:
            beside = f"{mmm(tp_icmp['seconds'], '{:.3f}')} s, path MTU {', '.join(map(str, tp_icmp['pmtu']))}"
        elif s["name"] == tp_bh["name"]:
            beside = f"{tp_bh['seconds']['max']:.1f} s, path MTU {tp_bh['pmtu'][0]} (right: {tp_bh['correct']})"
        lines.append(f"| {s['name']} | {mmm(s['probe_seconds'], '{:.3f}')} s ({mmm(s['process_seconds'], '{:.2f}')} "
                     f"s), ≤ {s['probes_max']} probes | {s['correct']} | {beside} |")
    return lines


def provenance(results: dict) -> str:
    """When each result was written, and whether all are from the last `make bench`."""
    run = load("run")
    stamps = {name: r.get("written_at") for name, r in results.items() if r}
    dated = ", ".join(f"{name} {when}" for name, when in stamps.items() if when)
    if run and run.get("finished") and all(when and run["started"] <= when <= run["finished"]
                                           for when in stamps.values()):
        return (f"Every figure below is from the last `make bench`, {run['started']} to {run['finished']} "
                f"({dated}).")
    return f"Not all from one `make bench`: results written {dated}."


def main() -> int:
    rows = []
    cost, rate, storm, daemon = load("drop_cost"), load("drops"), load("storm"), load("daemon")
    enrich, apiserver, pipeline, mtu = load("enrich"), load("apiserver"), load("pipeline"), load("mtu")
    if cost:
        ref = cost["ns_per_drop"]["bpftrace"]
        floor = cost["ns_per_drop"].get("empty program")
        for name, s in cost["ns_per_drop"].items():
            if not name.startswith("netagent "):
                continue
            ratio = cost["ratio_to_bpftrace"][name]
            target = "≤ 0.8× bpftrace" if name == cost["target"]["default_path"] else "(fallback path)"
            met = yes(ratio["median"] <= 0.8) if "fallback" not in target else ""
            rows.append((f"kernel ns per drop, {name} (bpftrace: {mmm(ref)}"
                         + (f"; an empty program: {mmm(floor)}" if floor else "") + ")",
                         f"{mmm(s)} ns = {mmm(ratio, '{:.2f}')}× bpftrace; exact every round: "
                         f"{cost['exact_all_rounds'][name]}", f"{target} {met}".strip()))
    if rate:
        r = rate["undisturbed_rate_ratio"]
        rows.append(("packet rate with `netagent run` / without (undisturbed: 90th percentile of 100 ms windows)",
                     f"{mmm(r, '{:.3f}')}; mean rate {mmm(rate['mean_rate_ratio'], '{:.3f}')}; an empty program "
                     f"on skb:kfree_skb instead: {mmm(rate['empty_program_undisturbed_rate_ratio'], '{:.3f}')} "
                     f"(mean {mmm(rate['empty_program_mean_rate_ratio'], '{:.3f}')}); counts exact every round: "
                     f"{rate['exact_all_rounds']}", f"≥ 0.97 {yes(r['median'] >= 0.97)}"))
    if storm:
        f, c = storm["storms"]["flows"], storm["storms"]["cpu"]
        rows.append((f"flow storm, {f['distinct_flows']} flows in {f['namespaces']} namespaces, IPv4+IPv6",
                     f"{mmm(f['drops_per_s_with'])} drops/s; none uncounted: {f['none_uncounted_all_rounds']}, "
                     f"none double: {f['none_double_counted_all_rounds']}", "exact or overflow counted "
                     + yes(f["none_uncounted_all_rounds"] and f["none_double_counted_all_rounds"])))
        storm_cpu = c["agent_pipeline_cpu_fraction_of_core"]
        at_rate = c["drops_per_s_with"]["median"] >= 200_000
        rows.append((f"agent CPU in a storm over {c['distinct_flows']} flows: drop poll, enrichment, JSON",
                     f"{mmm(storm_cpu, '{:.1f}', 100)} % of a core (the poll alone "
                     f"{mmm(c['agent_poll_cpu_fraction_of_core'], '{:.1f}', 100)} %) at "
                     f"{mmm(c['drops_per_s_with'])} drops/s; {c['flow_events']} flows a poll reported one by one",
                     f"≤ 5 % at 200k drops/s {yes(storm_cpu['median'] <= 0.05 and at_rate)}"))
    if daemon:
        t = daemon["targets_met"]
        rows.append(("start to attached, warm cache", f"{mmm(daemon['start_seconds_warm_cache'], '{:.2f}')} s "
                     f"(starting `netagent --version`: {mmm(daemon['start_seconds_floor_netagent_version'], '{:.2f}')} s; "
                     f"cold cache: {daemon['start_seconds_cold_cache']} s)" + _start_cpu(daemon), f"≤ 1.5 s {yes(t['start'])}"))
        rows.append(("RSS steady, default sensors", f"{mmm(daemon['rss_mb_steady'], '{:.1f}')} MB "
                     f"(compile child peak {daemon['compile_child_peak_rss_mb']} MB, cold start only)",
                     f"≤ 100 MB {yes(t['rss'])}"))
        rows.append((f"RSS growth over a {daemon['soak_seconds']:.0f} s drop-storm soak",
                     f"{daemon['soak']['rss_growth_mb']:.1f} MB (max {daemon['soak']['rss_mb_max']:.1f} MB)",
                     f"≤ 5 MB over 600 s {yes(t['growth'])}"))
        rows.append((f"idle CPU over {daemon['idle_seconds']:.0f} s", f"{daemon['idle']['cpu_fraction_of_core'] * 100:.2f} % "
                     "of a core", f"≤ 0.5 % over 300 s {yes(t['idle'])}"))
    rows += enrich_rows(enrich, apiserver)
    vm = load("drop_cost_vm")
    if not rows and not vm:
        print("report: no results", file=sys.stderr)
        return 1
    results = {"drop_cost": cost, "drops": rate, "storm": storm, "daemon": daemon, "enrich": enrich,
               "apiserver": apiserver, "pipeline": pipeline, "mtu": mtu, "drop_cost_vm": vm}
    when = next(r for r in results.values() if r)
    lines = [provenance(results), "", f"On kernel {when.get('kernel')}, {when.get('cpus')} CPUs; median (min–max) "
             "over the rounds:"]
    if rows:
        lines += ["", "| figure | measured | target |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if pipeline:
        lines += pipeline_table(pipeline)
    if mtu:
        lines += mtu_table(mtu)
    if vm:
        lines += vm_table(vm)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "performance.md"), "w") as f:
        f.write(text)
    print(text)
    return 0 if into_readme(text) else 1


def into_readme(text: str) -> bool:
    """Replace what lies between README_MARKERS in README.md with `text`."""
    with open(README) as f:
        readme = f.read()
    begin, end = README_MARKERS
    try:
        head, rest = readme.split(begin + "\n", 1)
        _old, tail = rest.split(end, 1)
    except ValueError:
        print(f"report: README.md lacks the lines {begin!r} and {end!r}", file=sys.stderr)
        return False
    with open(README + ".tmp", "w") as f:
        f.write(f"{head}{begin}\n{text}{end}{tail}")
    os.replace(README + ".tmp", README)
    return True


if __name__ == "__main__":
    sys.exit(main())
