"""Path MTU probe speed: `netagent probe mtu` beside tracepath on the same paths.

Lab (namespaces this script creates and removes): client -(1500)- router -(N)- server.
Scenarios:
  icmp       the router answers frag-needed (PMTUD works): both tools, same path
  blackhole  the router drops its own frag-needed (iptables OUTPUT): the case
             the issue budgets at <= 3 s and <= 14 probes with default settings,
             for several path MTUs including the search's worst case (1281)
tracepath runs with its defaults (30 hops); on a black hole it walks every
hop and reports the interface MTU, which is the behaviour users meet.

Writes bench/results/mtu.json. Exit 1 if a budget is missed or an answer is wrong.
In the icmp case netagent (IPv4, IPv6) and tracepath take turns, one run each
per round, in rotating order; every scenario has BENCH_ROUNDS runs (10), and
figures are the median, minimum and maximum of them. tracepath runs once on
the black hole: it walks all its hops there (~90 s) and answers the same way
every time.
Environment: BENCH_ROUNDS (default 10, at least 10), BENCH_TRACEPATH_HOPS (default 30).
"""

import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from benchlib import rounded, spread, write_result  # noqa: E402
from lab import Namespace, veth_pair  # noqa: E402

RUNS = int(os.environ.get("BENCH_ROUNDS", "10"))
TRACEPATH_HOPS = int(os.environ.get("BENCH_TRACEPATH_HOPS", "30"))
NETAGENT = os.path.join(ROOT, ".venv", "bin", "netagent")
BUDGET_SECONDS, BUDGET_PROBES = 3.0, 14
SERVER4, SERVER6 = "10.2.0.2", "fd02::2"


class Lab:
    def __init__(self):
        self.client, self.router, self.server = Namespace(), Namespace(), Namespace()
        try:
            for ns in (self.client, self.router, self.server):
                ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
                ns.sysctl("net.ipv6.conf.default.accept_dad", 0)
            veth_pair(self.client, self.router, "10.1.0.2/24", "10.1.0.1/24", a_addr6="fd01::2/64",
                      b_addr6="fd01::1/64")
            veth_pair(self.router, self.server, "10.2.0.1/24", f"{SERVER4}/24", a_if="eth1",
                      a_addr6="fd02::1/64", b_addr6=f"{SERVER6}/64")
            self.router.sysctl("net.ipv4.ip_forward", 1)
            self.router.sysctl("net.ipv6.conf.all.forwarding", 1)
            self.client.run("ip route add default via 10.1.0.1")
            self.client.run("ip -6 route add default via fd01::1")
            self.server.run("ip route add default via 10.2.0.1")
            self.server.run("ip -6 route add default via fd02::1")
            for addr in (SERVER4, SERVER6):
                self.client.run("ping", "-c1", "-W2", addr, check=False)
        except BaseException:
            self.delete()
            raise

    def set_path_mtu(self, mtu: int) -> None:
        self.router.run("ip", "link", "set", "eth1", "mtu", str(mtu))
        self.server.run("ip", "link", "set", "eth0", "mtu", str(mtu))

    def blackhole(self, on: bool) -> None:
        op = "-A" if on else "-D"
        self.router.run("iptables", op, "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP")
        self.router.run("ip6tables", op, "OUTPUT", "-p", "ipv6-icmp", "--icmpv6-type", "packet-too-big",
                        "-j", "DROP")

    def flush(self) -> None:
        self.client.run("ip route flush cache")
        self.client.run("ip -6 route flush cache")

    def delete(self) -> None:
        for ns in (self.client, self.router, self.server):
            ns.delete()


def run_netagent(lab: Lab, target: str, *args) -> dict:
    lab.flush()
    t0 = time.monotonic()
    proc = subprocess.run([NETAGENT, "probe", "mtu", target, "--netns", lab.client.name, "-o", "json", *args],
                          capture_output=True, text=True, timeout=60)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"netagent exit {proc.returncode}: {proc.stderr.strip()}")
    m = json.loads(proc.stdout)["netagent"]["mtu"]
    event_seconds = json.loads(proc.stdout)["event"]["duration"] / 1e9
    return {"status": m["status"], "path_mtu": m["path_mtu"], "probes": m["probes"],
            "probe_seconds": round(event_seconds, 4), "process_seconds": round(wall, 4)}


def run_tracepath(lab: Lab, target: str) -> dict:
    lab.flush()
    t0 = time.monotonic()
    proc = lab.client.run("tracepath", "-n", "-m", str(TRACEPATH_HOPS), target, check=False, timeout=300)
    wall = time.monotonic() - t0
    m = re.search(r"Resume: pmtu (\d+)", proc.stdout)
    probes = len(re.findall(r"^\s*\d+\??:", proc.stdout, re.M))
    return {"pmtu": int(m.group(1)) if m else None, "seconds": round(wall, 4), "output_lines": probes}


def stats(values: list[float]) -> dict:
    return rounded(spread(values), 4)


def scenario_netagent(lab, name, target, expect_status, expect_mtu, *args) -> dict:
    return scenario_summary(name, target, expect_status, expect_mtu, args,
                            [run_netagent(lab, target, *args) for _ in range(RUNS)])


def scenario_summary(name, target, expect_status, expect_mtu, args, runs: list[dict]) -> dict:
    correct = all(r["status"] == expect_status and r["path_mtu"] == expect_mtu for r in runs)
    out = {
        "name": name, "target": target, "args": list(args), "expected": {"status": expect_status, "path_mtu": expect_mtu},
        "runs": runs, "correct": correct,
        "probe_seconds": stats([r["probe_seconds"] for r in runs]),
        "process_seconds": stats([r["process_seconds"] for r in runs]),
        "probes_max": max(r["probes"] for r in runs),
    }
    print(f"  {name}: {'ok' if correct else 'WRONG'} mtu={runs[0]['path_mtu']} status={runs[0]['status']} "
          f"probes<={out['probes_max']} probe {out['probe_seconds']['median']}s (max {out['probe_seconds']['max']}s)",
          flush=True)
    return out


def main() -> int:
    if RUNS < 10:
        print(f"mtu_bench: BENCH_ROUNDS={RUNS}: at least 10 rounds", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("mtu_bench: needs root (namespaces, raw sockets)", file=sys.stderr)
        return 77
    lab = Lab()
    results = {"icmp": [], "blackhole": [], "tracepath": []}
    try:
        print("icmp (router answers frag-needed):", flush=True)
        lab.set_path_mtu(1400)
        # interleaved: each round runs the three once, starting with a different one
        takers = {"icmp4": lambda: run_netagent(lab, SERVER4), "icmp6": lambda: run_netagent(lab, SERVER6),
                  "tracepath": lambda: run_tracepath(lab, SERVER4)}
        runs: dict[str, list] = {name: [] for name in takers}
        order = list(takers)
        for i in range(RUNS):
            for name in order[i % 3:] + order[:i % 3]:
                runs[name].append(takers[name]())
        icmp4 = scenario_summary("icmp-ipv4-1400", SERVER4, "icmp", 1400, (), runs["icmp4"])
        icmp6 = scenario_summary("icmp-ipv6-1400", SERVER6, "icmp", 1400, (), runs["icmp6"])
        results["icmp"] += [icmp4, icmp6]
        tp_icmp = runs["tracepath"]
        tp_icmp_entry = {"name": "icmp-ipv4-1400", "runs": tp_icmp, "seconds": stats([r["seconds"] for r in tp_icmp]),
                         "pmtu": sorted({r["pmtu"] for r in tp_icmp}, key=str)}
        results["tracepath"].append(tp_icmp_entry)
        print(f"  tracepath icmp-ipv4-1400: pmtu={tp_icmp_entry['pmtu']} {tp_icmp_entry['seconds']['median']}s",
              flush=True)

        print("blackhole (router drops its frag-needed / Packet Too Big):", flush=True)
        lab.blackhole(True)
        for mtu in (1450, 1400, 1281):
            lab.set_path_mtu(mtu)
            results["blackhole"].append(scenario_netagent(lab, f"blackhole-ipv4-{mtu}", SERVER4, "blackhole", mtu))
        lab.set_path_mtu(1400)
        results["blackhole"].append(scenario_netagent(lab, "blackhole-ipv6-1400", SERVER6, "blackhole", 1400))
        results["blackhole"].append(scenario_netagent(lab, "blackhole-ipv4-1400-tcp", SERVER4, "blackhole", 1400,
                                                      "--proto", "tcp"))
        print(f"  tracepath on the black hole ({TRACEPATH_HOPS} hops, its defaults)...", flush=True)
        tp_bh = run_tracepath(lab, SERVER4)
        results["tracepath"].append({"name": "blackhole-ipv4-1400", "runs": [tp_bh], "seconds": stats([tp_bh["seconds"]]),
                                     "pmtu": [tp_bh["pmtu"]], "correct": tp_bh["pmtu"] == 1400})
        print(f"  tracepath blackhole-ipv4-1400: pmtu={tp_bh['pmtu']} after {tp_bh['seconds']}s", flush=True)
    finally:
        lab.delete()

    bh = results["blackhole"]
    within = all(s["probe_seconds"]["max"] <= BUDGET_SECONDS and s["probes_max"] <= BUDGET_PROBES for s in bh)
    correct = all(s["correct"] for s in results["icmp"] + bh)
    agrees = tp_icmp_entry["pmtu"] == [icmp4["runs"][0]["path_mtu"]]
    bh1400 = next(s for s in bh if s["name"] == "blackhole-ipv4-1400")
    summary = {
        "benchmark": "netagent probe mtu vs tracepath, client-router-server namespace lab",
        "kernel": platform.release(),
        "runs_per_scenario": RUNS,
        "budget": {"blackhole_seconds_max": BUDGET_SECONDS, "blackhole_probes_max": BUDGET_PROBES},
        "blackhole_probe_seconds_max": max(s["probe_seconds"]["max"] for s in bh),
        "blackhole_probes_max": max(s["probes_max"] for s in bh),
        "blackhole_within_budget": within,
        "all_answers_correct": correct,
        "icmp_agrees_with_tracepath": agrees,
        "icmp_probe_seconds_median": icmp4["probe_seconds"]["median"],
        "icmp_process_seconds_median": icmp4["process_seconds"]["median"],
        "tracepath_icmp_seconds_median": tp_icmp_entry["seconds"]["median"],
        "ratio_icmp_process_over_tracepath": round(icmp4["process_seconds"]["median"]
                                                   / max(tp_icmp_entry["seconds"]["median"], 1e-6), 2),
        "tracepath_blackhole_seconds": results["tracepath"][1]["seconds"]["max"],
        "tracepath_blackhole_pmtu": results["tracepath"][1]["pmtu"][0],
        "ratio_blackhole_netagent_over_tracepath": round(bh1400["process_seconds"]["median"]
                                                         / max(results["tracepath"][1]["seconds"]["max"], 1e-6), 4),
        "scenarios": results,
    }
    write_result("mtu", summary)
    return 0 if (within and correct and agrees) else 1


if __name__ == "__main__":
    sys.exit(main())
