"""`netagent run` as the benchmarks start it: default sensors, stdout sink, a config of its own."""

import atexit
import os
import time

import psutil

from benchlib import HERE, scratch_dir

from agent_proc import AgentProcess  # noqa: E402 (tests/ on sys.path via benchlib)

DEFAULT_CONFIG = os.path.join(HERE, "..", "agent", "default.toml")


def default_config() -> str:
    """A copy of the embedded default configuration (so /etc/netagent/netagent.toml cannot interfere)."""
    path = os.path.join(scratch_dir(), "agent.toml")
    with open(DEFAULT_CONFIG) as src, open(path, "w") as dst:
        dst.write(src.read())
    return path


def start_agent(config: str) -> tuple[AgentProcess, float]:
    """`netagent run` with every default sensor attached, and the seconds from exec to 'started'."""
    t0 = time.monotonic()
    agent = AgentProcess("run", "--config", config)
    atexit.register(stop_if_running, agent)  # a benchmark stopped midway leaves no agent behind
    agent.wait_for_stderr("started (pid", timeout=120)
    return agent, time.monotonic() - t0


def stop_if_running(agent: AgentProcess) -> None:
    if agent.proc.poll() is None:
        agent.stop()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its threads."""
    t = psutil.Process(pid).cpu_times()
    return t.user, t.system
