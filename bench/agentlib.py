"""`netagent run` as the benchmarks start it: default sensors, stdout sink, a config of its own."""

import os
import tempfile
import time

import psutil

from benchlib import HERE

from agent_proc import AgentProcess  # noqa: E402 (tests/ on sys.path via benchlib)

DEFAULT_CONFIG = os.path.join(HERE, "..", "agent", "default.toml")


def default_config() -> str:
    """A copy of the embedded default configuration (so /etc/netagent/netagent.toml cannot interfere)."""
    path = os.path.join(tempfile.mkdtemp(prefix="netagent-bench-"), "agent.toml")
    with open(DEFAULT_CONFIG) as src, open(path, "w") as dst:
        dst.write(src.read())
    return path


def start_agent(config: str) -> tuple[AgentProcess, float]:
    """`netagent run` with every default sensor attached, and the seconds from exec to 'started'."""
    t0 = time.monotonic()
    agent = AgentProcess("run", "--config", config)
    agent.wait_for_stderr("started (pid", timeout=120)
    return agent, time.monotonic() - t0


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its threads."""
    t = psutil.Process(pid).cpu_times()
    return t.user, t.system
