"""`netagent run` with the default sensors: start-up time, memory, idle CPU.

  start   seconds from exec to "started" (every default sensor attached),
          BENCH_ROUNDS rounds interleaved with the floor of starting the same
          program at all (`netagent --version`); warm BPF bytecode cache, as on
          every restart after the first; one cold start (empty cache) apart.
          Python bytecode is compiled first (compileall), as the .deb does at
          install: with PYTHONDONTWRITEBYTECODE set (as in this lab) every
          start would otherwise compile ~100 modules from source
  memory  RSS a few seconds after start, and its growth over a soak under a
          drop storm (BENCH_SOAK_SECONDS, default 600 as the issue's target),
          sampled every 5 s, growth counted from the first sample after
          BENCH_SOAK_WARMUP (10 s)
  compile the peak RSS of the short-lived compile process (cold cache), which
          the service's MemoryMax must leave room for
  idle    CPU of the agent over BENCH_IDLE_SECONDS (default 300 as the
          issue's target) with no traffic of ours

Targets (issue 12): start <= 1.5 s, RSS <= 100 MB, growth <= 5 MB, idle <= 0.5%.
Writes bench/results/daemon.json.
"""

import os
import resource
import subprocess
import sys
import threading
import time

from agentlib import cpu_seconds, default_config, rss_mb, start_agent
from benchlib import FLOOD_CPU, ROUNDS, build, rounded, scratch_dir, spread, write_result

from agent_proc import NETAGENT  # noqa: E402
from lab import Namespace  # noqa: E402

SOAK = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
SOAK_WARMUP = float(os.environ.get("BENCH_SOAK_WARMUP", "10"))
IDLE = float(os.environ.get("BENCH_IDLE_SECONDS", "300"))
TARGETS = {"start_seconds_max": 1.5, "rss_mb_max": 100, "rss_growth_mb_max": 5, "idle_cpu_max": 0.005}


def compile_bytecode() -> list[str]:
    """Byte-compile the netagent package (agent/ and probes/), as packaging/build-deb.sh does."""
    import importlib.util

    spec = importlib.util.find_spec("netagent")
    roots = list(spec.submodule_search_locations or [])
    probes = importlib.util.find_spec("netagent.probes")
    roots += [p for p in (probes.submodule_search_locations or []) if not any(p.startswith(r) for r in roots)]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *roots], check=True, stdout=subprocess.DEVNULL)
    return roots


def version_floor() -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `netagent --version`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run([NETAGENT, "--version"], capture_output=True, check=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compile_peak_mb(cache_dir: str) -> float:
    """Peak RSS of the compile child for the drop program, cold cache."""
    code = ("import resource\nfrom netagent.probes.drops import DropSensor\n"
            "s = DropSensor(); s.attach(); s.detach()\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, NETAGENT_CACHE_DIR=cache_dir))
    return int(out.stdout.split()[-1]) / 1024


def soak(config: str, storm: str) -> dict:
    ns = Namespace()
    agent, _ = start_agent(config)
    pid = agent.proc.pid
    samples = []
    stop = threading.Event()

    def storm_loop():
        while not stop.is_set():  # 1000 flows, paced at 50k drops/s, IPv4
            ns.run("taskset", "-c", FLOOD_CPU, storm, "4", "2", "500", "50000", "5", timeout=120)

    t = threading.Thread(target=storm_loop, daemon=True)
    try:
        time.sleep(3)
        rss_start = rss_mb(pid)
        t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < SOAK:
            time.sleep(5)
            samples.append({"t": round(time.monotonic() - t0, 1), "rss_mb": round(rss_mb(pid), 2)})
    finally:
        stop.set()
        t.join(timeout=60)
        agent.stop()
        ns.delete()
    after_warmup = [s for s in samples if s["t"] >= SOAK_WARMUP] or samples
    return {"rss_mb_after_start": rss_start, "rss_mb_end": samples[-1]["rss_mb"],
            "rss_growth_mb": samples[-1]["rss_mb"] - after_warmup[0]["rss_mb"],
            "rss_mb_max": max(s["rss_mb"] for s in samples), "samples": samples}


def idle(config: str) -> dict:
    agent, _ = start_agent(config)
    pid = agent.proc.pid
    try:
        time.sleep(5)  # the first polls after start
        u0, s0 = cpu_seconds(pid)
        t0 = time.monotonic()
        time.sleep(IDLE)
        u1, s1 = cpu_seconds(pid)
        elapsed = time.monotonic() - t0
        rss = rss_mb(pid)
    finally:
        agent.stop()
    return {"cpu_fraction_of_core": (u1 - u0 + s1 - s0) / elapsed, "user": (u1 - u0) / elapsed,
            "system": (s1 - s0) / elapsed, "seconds": elapsed, "rss_mb": rss}


def main() -> int:
    config = default_config()
    compiled = compile_bytecode()
    storm = build("udp_storm")
    cold_dir = scratch_dir("netagent-cold-")
    t0 = time.monotonic()
    agent = subprocess.Popen([NETAGENT, "run", "--config", config], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, NETAGENT_CACHE_DIR=cold_dir))
    cold = None
    try:
        for line in agent.stderr:
            if "started (pid" in line:
                cold = time.monotonic() - t0
                break
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    floors, floor_cpus, starts, start_cpus, rss_after = [], [], [], [], []
    for i in range(ROUNDS):
        wall, cpu = version_floor()
        floors.append(wall)
        floor_cpus.append(cpu)
        a, seconds = start_agent(config)
        starts.append(seconds)
        # CPU the agent spent up to "started": the part of the start-up time a
        # loaded machine does not inflate (wall time waits for the CPUs too)
        start_cpus.append(sum(cpu_seconds(a.proc.pid)))
        time.sleep(2)
        rss_after.append(rss_mb(a.proc.pid))
        a.stop()
        print(f"start round {i}: {seconds:.2f}s, {start_cpus[-1]:.2f} CPU s (floor {wall:.2f}s, {cpu:.2f} CPU s), "
              f"rss {rss_after[-1]:.1f} MB", flush=True)
    soaked = soak(config, storm)
    print(f"soak {SOAK:.0f}s: growth {soaked['rss_growth_mb']:.2f} MB", flush=True)
    quiet = idle(config)
    print(f"idle {IDLE:.0f}s: {quiet['cpu_fraction_of_core']:.4f} of a core", flush=True)
    peak = compile_peak_mb(scratch_dir("netagent-cold-"))
    result = {
        "benchmark": "`netagent run --config <embedded default>` (drops, conntrack, host; stdout sink)",
        "rounds": ROUNDS,
        "python_bytecode": f"compiled before the rounds (compileall {' '.join(compiled)})",
        "start_seconds_warm_cache": rounded(spread(starts), 3),
        "start_seconds_floor_netagent_version": rounded(spread(floors), 3),
        "start_cpu_seconds_warm_cache": rounded(spread(start_cpus), 3),
        "start_cpu_seconds_floor_netagent_version": rounded(spread(floor_cpus), 3),
        "load_average_at_end": os.getloadavg(),
        "start_seconds_cold_cache": round(cold, 3) if cold else None,
        "rss_mb_steady": rounded(spread(rss_after), 1),
        "soak_seconds": SOAK, "soak": soaked,
        "idle_seconds": IDLE, "idle": quiet,
        "compile_child_peak_rss_mb": round(peak, 1),
        "targets": TARGETS,
    }
    result["targets_met"] = {
        "start": result["start_seconds_warm_cache"]["median"] <= TARGETS["start_seconds_max"],
        "rss": result["rss_mb_steady"]["max"] <= TARGETS["rss_mb_max"],
        "growth": soaked["rss_growth_mb"] <= TARGETS["rss_growth_mb_max"],
        "idle": quiet["cpu_fraction_of_core"] <= TARGETS["idle_cpu_max"],
    }
    write_result("daemon", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
