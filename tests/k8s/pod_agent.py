"""What the pod-attribution tests share: the agent run with only the drop sensor,
its event file, and UDP to a closed port (counted by the kernel as Udp NoPorts)."""

import os
import signal
import subprocess
import sys
import textwrap

import orjson

from netagent import registry
from agent_proc import read_events
from waiting import wait_for  # noqa: F401 (re-exported to the pod tests)

NETAGENT = os.path.join(sys.prefix, "bin", "netagent")

# argv: DST PORT COUNT [SRC]; prints how many were sent
SENDER = r"""
import socket, sys
dst, dport, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 4:
    s.bind((sys.argv[4], 0))
sent = 0
while sent < count:
    try:
        s.sendto(b"x" * 64, (dst, dport))
        sent += 1
    except OSError:
        pass  # an ICMP error reported on this unconnected socket: send again
print(sent)
"""


def udp_no_ports(snmp_text: str) -> int:
    """Udp NoPorts from the text of /proc/net/snmp."""
    lines = [ln.split() for ln in snmp_text.splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def no_socket_drops(events: list[dict], inode: int) -> list[dict]:
    return [e for e in events if e["event"]["dataset"] == "netagent.drops" and e["event"]["reason"] == "NO_SOCKET"
            and e["netagent"]["drop"]["netns"] == inode]


def total(events: list[dict]) -> int:
    return sum(e["netagent"]["drop"]["count"] for e in events)


class Sandbox:
    """A pod sandbox stand-in: a sleeping process in namespace `ns` (None: the node's)."""

    def __init__(self, ns):
        self.ns = ns
        self.proc = ns.popen("sleep", "600") if ns else subprocess.Popen(["sleep", "600"])
        want = ns.inode if ns else os.stat("/proc/self/ns/net").st_ino
        wait_for(lambda: os.stat(f"/proc/{self.proc.pid}/ns/net").st_ino == want, 10, "sandbox process")

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def start_agent(tmp_path, kubernetes: dict, agent_table: str = 'heartbeat = "1s"', drops_filter: str = ""):
    """`netagent run` with the drop sensor alone (500 ms), a file sink and this [kubernetes] table.
    `drops_filter`: more [sensors.drops] lines (host = "10.0.0.1": only that address's drops, so
    other tests' traffic on a shared machine neither mixes in nor rotates the event file away).
    Returns (process, events path); its stderr is tmp_path/agent.stderr."""
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.loaded and m.section != "drops")
    events_path = tmp_path / "events.json"
    k8s = "\n".join(f"{key} = {orjson.dumps(value).decode()}" for key, value in kubernetes.items())
    config = tmp_path / "agent.toml"
    config.write_text(textwrap.dedent(f"""
        [agent]
        {agent_table}
        [sensors.drops]
        interval = "500ms"
        {drops_filter}
        [[sinks]]
        type = "file"
        path = "{events_path}"
        """) + f"[kubernetes]\n{k8s}\n" + others)
    with open(tmp_path / "agent.stderr", "w") as stderr:
        agent = subprocess.Popen([NETAGENT, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                 stderr=stderr)
    wait_for(lambda: any(e["event"]["action"] == "agent-started" for e in read_events(events_path))
             or agent.poll() is not None, 120, "agent-started")
    assert agent.poll() is None, (tmp_path / "agent.stderr").read_text()
    return agent, events_path


def stop_agent(agent) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
