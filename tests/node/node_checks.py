"""The node session: everything tests/node/test_node.py asserts, measured in one boot.

Runs INSIDE the node VM (packaging/vm/node-boot), as root, with the node's
own python3 (standard library only) against the netagent the .deb installed
and systemd started at boot. It measures and records; it decides nothing.
The host-side tests assert on what it records, so a failed step here is a
recorded error there, and the later steps still run.

stdout: one line `NODE-RESULTS {json}` at the end. stderr: progress.

Steps, in the order a node lives them, in one boot, so that the agent starts
(BCC compiles, slow under TCG) only three times: at boot, after the SIGKILL,
and at the fresh install:
  startup, drops (+ interface names in a pod namespace), reload, kill and
  spool, logrotate, live security score, apt remove, apt purge, fresh apt
  install, stop, bad configuration at start.
"""

import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import traceback
import zlib

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS)

from lab import Namespace, sh  # noqa: E402
from rsyslog_lab import Rsyslog, parse_message  # noqa: E402
from timescale import scaled  # noqa: E402

UNIT = "netagent.service"
CONFIG = "/etc/netagent/netagent.toml"
EVENT_FILE = "/var/log/netagent/events.json"
SPOOL = "/var/lib/netagent/spool"
LAB = "/var/tmp/netagent-node-lab"
# Bounds on waiting, stretched by NETAGENT_TIME_SCALE (node-boot sets it: 6
# under TCG). An agent start compiles BPF (~3 s natively, 50-170 s under TCG
# on a loaded 2-core host); an event reaches the journal within a few seconds.
START_TIMEOUT = scaled(150.0)
EVENT_TIMEOUT = scaled(30.0)

results: dict = {"steps": {}, "errors": {}}
T0 = time.monotonic()


def log(message: str) -> None:
    sys.stderr.write(f"[node {time.monotonic() - T0:6.1f}s] {message}\n")
    sys.stderr.flush()


def run(*args, timeout=scaled(20), check=False, input=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check, input=input)


def wait_until(fetch, ok, timeout: float, interval: float = 0.5):
    """Call fetch() until ok(value) or timeout; returns the last value.
    A wait that times out or takes long says so on stderr, with its line."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        value = fetch()
        done = ok(value)
        if done or time.monotonic() >= deadline:
            took = time.monotonic() - start
            if not done or took > 20:
                line = sys._getframe(1).f_lineno
                log(f"wait at line {line}: {'met' if done else 'TIMED OUT'} after {took:.1f}s")
            return value
        time.sleep(interval)


# --- systemd and the journal ------------------------------------------------------------
def show(*props: str) -> dict:
    out = run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main_pid() -> int:
    return int(show("MainPID")["MainPID"] or 0)


class Journal:
    """`journalctl -u netagent -o cat`: exactly what a user reads. Read on from
    the last cursor each time: rereading thousands of entries on every poll
    costs seconds each under TCG."""

    def __init__(self):
        self.lines: list[str] = []
        self.cursor = None

    def read(self) -> list[str]:
        args = ["journalctl", "-u", "netagent", "-o", "cat", "--no-pager", "--show-cursor"]
        if self.cursor:
            args += ["--after-cursor", self.cursor]
        out = run(*args, timeout=scaled(60)).stdout.splitlines()
        if out and out[-1].startswith("-- cursor: "):
            self.cursor = out.pop()[len("-- cursor: "):]
        self.lines.extend(out)
        return self.lines


JOURNAL = Journal()


def journal_lines() -> list[str]:
    return list(JOURNAL.read())


LOG_DATASET = "netagent.log"  # the agent's own diagnostics: JSON lines with a `message`


_PARSED: dict[str, object] = {}


def _parse(lines: list[str]) -> list:
    """JSON objects as dicts, anything else (systemd's own lines) as the text."""
    out = []
    for line in lines:
        if line not in _PARSED:
            try:
                _PARSED[line] = json.loads(line) if line.startswith("{") else line
            except ValueError:
                _PARSED[line] = line
        out.append(_PARSED[line])
    return out


def journal_events() -> list[dict]:
    """The events the agent emitted (its stdout sink), without its diagnostics."""
    return [e for e in _parse(journal_lines()) if isinstance(e, dict)
            and e.get("event", {}).get("dataset") != LOG_DATASET]


def log_messages(entries: list) -> list[str]:
    """What the journal says in words: the agent's diagnostics and systemd's lines."""
    return [e["message"] if isinstance(e, dict) else e for e in entries
            if not isinstance(e, dict) or e.get("event", {}).get("dataset") == LOG_DATASET]


def journal_log() -> list[str]:
    return log_messages(_parse(journal_lines()))


def events_of(pid: int, events=None) -> list[dict]:
    """Events of one agent process: the agent-started event carries its pid;
    the others follow it in the journal until the next agent-started."""
    events = journal_events() if events is None else events
    out, mine = [], False
    for ev in events:
        if ev.get("event", {}).get("action") == "agent-started":
            mine = ev.get("process", {}).get("pid") == pid
        if mine:
            out.append(ev)
    return out


def agent_started(pid: int) -> dict | None:
    return next((ev for ev in journal_events() if ev.get("event", {}).get("action") == "agent-started"
                 and ev.get("process", {}).get("pid") == pid), None)


def wait_active(timeout=START_TIMEOUT, not_pid: int = 0) -> dict:
    return wait_until(lambda: show("ActiveState", "SubState", "MainPID", "NRestarts", "Result"),
                      lambda p: (p["ActiveState"] == "active" and int(p["MainPID"] or 0) not in (0, not_pid))
                      or p["ActiveState"] == "failed", timeout, 1.0)


def start_to_ready() -> float | None:
    """Seconds from the agent's exec to READY=1, as systemd measured them."""
    p = show("ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    start_us = int(p["ExecMainStartTimestampMonotonic"] or 0)
    ready_us = int(p["ActiveEnterTimestampMonotonic"] or 0)
    return round((ready_us - start_us) / 1e6, 1) if start_us and ready_us > start_us else None


BYTECODE_CACHE = "/var/cache/netagent/bpf"  # CacheDirectory=netagent in the unit


def bytecode_cache() -> list[str]:
    """The compiled programs the agent kept (the next start loads them without BCC)."""
    try:
        return sorted(os.listdir(BYTECODE_CACHE))
    except OSError:
        return []


# --- BPF and kprobes --------------------------------------------------------------------
TRACING_TYPES = {"kprobe", "tracepoint", "raw_tracepoint", "tracing", "perf_event"}


def bpf_programs() -> list[dict]:
    r = run("bpftool", "-j", "prog", "show")
    try:
        return json.loads(r.stdout or "[]")
    except ValueError:
        return []


def our_bpf(pid: int | None = None) -> dict:
    """What the agent has in the kernel: programs it holds (bpftool's pids), all
    tracing programs, kprobe_events lines and perf-event links."""
    progs = bpf_programs()
    held = {p["id"] for p in progs if pid and any(h.get("pid") == pid for h in p.get("pids", []))}
    tracing = [{"id": p["id"], "type": p.get("type"), "name": p.get("name"),
                "pids": [h.get("comm") for h in p.get("pids", [])]} for p in progs if p.get("type") in TRACING_TYPES]
    try:
        with open("/sys/kernel/tracing/kprobe_events") as f:
            kprobe_events = [line.strip() for line in f if line.strip()]
    except OSError as exc:
        kprobe_events = [f"unreadable: {exc}"]
    perf = run("bpftool", "-j", "perf", "list").stdout
    try:
        perf_links = json.loads(perf or "[]")
    except ValueError:
        perf_links = []
    # Debian's bpftool names no holders in `prog show` (no pids); its perf
    # list names the process holding each attached program
    held |= {link["prog_id"] for link in perf_links if pid and link.get("pid") == pid}
    return {"held_ids": sorted(held), "tracing": tracing, "kprobe_events": kprobe_events, "perf_links": perf_links,
            "agent_processes": run("pgrep", "-a", "-f", "/usr/bin/netagent").stdout.splitlines()}


# --- the lab ------------------------------------------------------------------------------
def noports(ns: Namespace) -> dict:
    """The kernel's own count of UDP datagrams to closed ports in `ns`."""
    snmp = ns.read_proc("net/snmp").splitlines()
    udp = [line.split() for line in snmp if line.startswith("Udp:")]
    v4 = int(udp[1][udp[0].index("NoPorts")])
    v6 = next(int(line.split()[1]) for line in ns.read_proc("net/snmp6").splitlines() if line.startswith("Udp6NoPorts"))
    return {"v4": v4, "v6": v6}


SENDER = r"""
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"n" * 40, (sys.argv[1], int(sys.argv[2]) + (i % int(sys.argv[4]) if len(sys.argv) > 4 else 0)))
    time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0.001)
"""


def send_udp(ns: Namespace, addr: str, port: int, count: int, ports: int = 1, gap: float = 0.001) -> None:
    ns.run("python3", "-c", SENDER, addr, str(port), str(count), str(ports), str(gap), timeout=scaled(60))


def drops_in(events: list[dict], inode: int) -> dict:
    """NO_SOCKET UDP drops in the namespace `inode`, by destination port, from journal events."""
    by_port: dict[int, dict] = {}
    for ev in events:
        if ev.get("event", {}).get("action") != "packet-dropped":
            continue
        d = ev.get("netagent", {}).get("drop", {})
        if d.get("netns") != inode or ev.get("event", {}).get("reason") != "NO_SOCKET":
            continue
        if ev.get("network", {}).get("transport") != "udp":
            continue
        port = ev.get("destination", {}).get("port")
        entry = by_port.setdefault(port, {"count": 0, "interfaces": set(), "ifindexes": set(), "locations": set()})
        entry["count"] += d.get("count", 0)
        entry["interfaces"].add(d.get("interface"))
        entry["ifindexes"].add(d.get("ifindex"))
        entry["locations"].add(d.get("location"))
    return by_port


def wait_marker(ns: Namespace, port: int, target: str = "127.0.0.1", timeout=EVENT_TIMEOUT) -> bool:
    """One drop to `port`, then wait until the journal has it: the sensor reports
    intervals in order, so every earlier drop is in the journal by then."""
    send_udp(ns, target, port, 1)
    got = wait_until(lambda: drops_in(journal_events(), ns.inode).get(port, {}).get("count", 0),
                     lambda n: n >= 1, timeout)
    return got >= 1


def write_config(extra: str = "", drops_interval: str = "1s", heartbeat: str = "60s") -> str:
    """The packaged configuration with test changes; the default sinks stay."""
    text = f"""# written by tests/node/node_checks.py
[agent]
heartbeat = "{heartbeat}"

[sensors.drops]
enabled = true
interval = "{drops_interval}"

[[sinks]]
type = "stdout"

[[sinks]]
type = "file"
path = "{EVENT_FILE}"
max_bytes = "100MiB"
backups = 5

[[sinks]]
type = "prometheus"
listen = "127.0.0.1:9847"
{extra}"""
    with open(CONFIG, "w") as f:
        f.write(text)
    return text


def syslog_table(address: str) -> str:
    return f"""
[[sinks]]
type = "syslog"
address = "{address}"
tls = false
spool_dir = "{SPOOL}"
reconnect_min = "100ms"
reconnect_max = "1s"
"""


MTU_TABLE = """
[sensors.mtu]
enabled = true
interval = "20s"
targets = ["10.213.0.2"]
"""


# --- the spool, read independently of netagent's own reader --------------------------------
def spool_pending() -> list[tuple[int, int]]:
    """(PROCID, event.sequence) of every record after the cursor in the spool files."""
    try:
        with open(os.path.join(SPOOL, "cursor")) as f:
            seg, off = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        seg, off = 0, 0
    out = []
    for path in sorted(glob.glob(os.path.join(SPOOL, "*.seg"))):
        index = int(os.path.basename(path)[:-4])
        if index < seg:
            continue
        with open(path, "rb") as f:
            data = f.read()
        pos = off if index == seg else 0
        while pos + 10 <= len(data):
            magic, length, crc = struct.unpack_from("<2sII", data, pos)
            payload = data[pos + 10:pos + 10 + length]
            if magic != b"\xa5Z" or len(payload) < length or zlib.crc32(payload) != crc:
                break  # a torn tail: the agent cuts it at its next start
            header, event = parse_message(payload.decode("ascii"))
            out.append((int(header["procid"]), event["event"]["sequence"]))
            pos += 10 + length
    return out


def received(rs: Rsyslog) -> set[tuple[int, int]]:
    out = set()
    for line in rs.raw_lines():
        header, event = parse_message(line)
        out.add((int(header["procid"]), event["event"]["sequence"]))
    return out


# --- the steps ---------------------------------------------------------------------------
STEPS = []


def step(fn):
    STEPS.append(fn)
    return fn


CTX: dict = {}


@step
def facts():
    r = results["steps"]["facts"] = {}
    r["kernel"] = os.uname().release
    r["systemd"] = run("systemctl", "--version").stdout.splitlines()[0]
    r["boot"] = run("systemd-analyze", "time").stdout.strip().splitlines()[0:1]
    r["package"] = run("dpkg-query", "-W", "-f=${Package} ${Version} ${Status}", "netagent").stdout
    r["enabled"] = run("systemctl", "is-enabled", UNIT).stdout.strip()
    r["conffiles"] = run("dpkg-query", "-W", "-f=${Conffiles}", "netagent").stdout.split()
    r["debs"] = sorted(glob.glob("/root/netagent_*.deb"))
    # what the conntrack kprobes need: the module loaded, its symbols named
    r["nf_conntrack_loaded"] = os.path.isdir("/sys/module/nf_conntrack")
    r["kallsyms_confirm"] = run("grep", "-c", " __nf_conntrack_confirm", "/proc/kallsyms").stdout.strip()
    r["headers"] = os.path.isdir(f"/lib/modules/{os.uname().release}/build/include")
    # what the agent reads in place of /proc/kallsyms, which ProtectKernelTunables=yes hides
    r["kallsyms_env"] = run("systemctl", "show", "-p", "Environment", "--value", UNIT).stdout.strip()
    shutil.copy(CONFIG, "/root/netagent.toml.packaged")


@step
def startup():
    r = results["steps"]["startup"] = {}
    props = wait_active()
    r["props"] = show("Type", "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result",
                      "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic", "NotifyAccess")
    r["is_active"] = run("systemctl", "is-active", UNIT).stdout.strip()
    pid = int(props["MainPID"] or 0)
    CTX["pid"] = pid
    ev = wait_until(lambda: agent_started(pid), lambda e: e is not None, EVENT_TIMEOUT)
    r["agent_started"] = ev and ev["netagent"]["agent"]
    r["started_line"] = next((line for line in journal_log() if line.startswith(f"started (pid {pid},")), None)
    r["start_to_ready_s"] = start_to_ready()
    r["bpf"] = our_bpf(pid)
    r["bytecode_cache"] = bytecode_cache()


@step
def drops():
    """UDP to closed ports in a pod-like namespace: over its loopback (v4, v6)
    and over its eth0, a veth from the host namespace as a CNI makes it. A
    dummy link in the host namespace takes the same ifindex as the pod's eth0,
    so a name looked up in the wrong namespace shows up as 'decoy0'."""
    r = results["steps"]["drops"] = {}
    pod = Namespace("nodepod")
    CTX["pod"] = pod
    sh("ip", "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
    sh("ip", "addr", "add", "10.213.0.1/24", "dev", "veth-pod")
    sh("ip", "link", "set", "veth-pod", "up")
    pod.run("ip", "addr", "add", "10.213.0.2/24", "dev", "eth0")
    pod.run("ip", "link", "set", "eth0", "up")
    mac = pod.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    sh("ip", "neigh", "replace", "10.213.0.2", "lladdr", mac, "dev", "veth-pod")
    ifindex = int(pod.run("cat", "/sys/class/net/eth0/ifindex").stdout)
    decoy = run("ip", "link", "add", "decoy0", "index", str(ifindex), "type", "dummy")
    # the index may be taken already in the host namespace: that link is the decoy then
    taken = run("ip", "-o", "link", "show").stdout.splitlines()
    r["decoy"] = {"ifindex": ifindex, "made": decoy.returncode == 0, "error": decoy.stderr.strip(),
                  "host_link": next((line.split(":")[1].strip().split("@")[0] for line in taken
                                     if line.startswith(f"{ifindex}:")), None)}
    r["pod_inode"], r["eth0_ifindex"] = pod.inode, ifindex
    before = noports(pod)
    sent = {30001: 200, 30002: 100, 30003: 150}
    send_udp(pod, "127.0.0.1", 30001, sent[30001])
    send_udp(pod, "::1", 30002, sent[30002])
    subprocess.run(["python3", "-c", SENDER, "10.213.0.2", "30003", str(sent[30003]), "1", "0.001"],
                   check=True, timeout=scaled(60))
    after = noports(pod)
    r["sent"] = sent
    r["noports_delta"] = after["v4"] - before["v4"] + after["v6"] - before["v6"]
    r["marker_seen"] = wait_marker(pod, 30099)
    by_port = drops_in(journal_events(), pod.inode)
    r["journal"] = {port: {"count": v["count"], "interfaces": sorted(map(str, v["interfaces"])),
                           "ifindexes": sorted(map(str, v["ifindexes"])),
                           "locations": sorted(map(str, v["locations"]))}
                    for port, v in by_port.items() if port in sent}
    r["journal_total"] = sum(v["count"] for port, v in by_port.items() if port in sent)
    ev = next((e for e in journal_events() if e.get("netagent", {}).get("drop", {}).get("netns") == pod.inode), None)
    r["netns_name"] = ev and ev["netagent"]["drop"].get("netns_name")


@step
def reload():
    r = results["steps"]["reload"] = {}
    pid = CTX["pid"]
    # plain TCP: TLS to rsyslog is covered on the host (tests/netns/test_syslog_rsyslog.py);
    # here the point is the unit, the spool and the restart, and rsyslog's GnuTLS
    # set-up is slow under TCG
    rs = Rsyslog(os.path.join(LAB, "rsyslog"), None, auth=None).start(timeout=scaled(30))
    CTX["rsyslog"] = rs
    r["rsyslog"] = rs.address
    # what changes: a syslog sink, the MTU sensor (probing the pod), heartbeats every 5 s
    CTX["valid_config"] = write_config(syslog_table(rs.address) + MTU_TABLE, heartbeat="5s")
    r["config_check"] = run("netagent", "config", "check", CONFIG).returncode
    mark = len(journal_lines())
    rc = run("systemctl", "reload", UNIT)
    r["reload_rc"] = rc.returncode
    r["reload_stderr"] = rc.stderr.strip()
    ev = wait_until(lambda: [e for e in events_of(pid) if e["event"]["action"] == "config-reloaded"],
                    bool, EVENT_TIMEOUT)
    r["reloaded_event"] = ev and ev[-1]["netagent"]["agent"]
    r["reloaded_lines"] = [x for x in log_messages(_parse(journal_lines()[mark:])) if "configuration reloaded" in x]
    # applied: events reach the new syslog sink, and heartbeats now come every 5 s
    got = wait_until(lambda: [e for e in rs.events() if e.get("process", {}).get("pid") == pid
                              or e["event"]["action"] == "heartbeat"], lambda evs: len(evs) >= 2, EVENT_TIMEOUT)
    r["syslog_events"] = len(got)
    def beats_since_reload():
        events = events_of(pid)
        reloaded = max((i for i, e in enumerate(events) if e["event"]["action"] == "config-reloaded"), default=0)
        return [e for e in events[reloaded:] if e["event"]["action"] == "heartbeat"]

    beats = wait_until(beats_since_reload, lambda b: len(b) >= 3, EVENT_TIMEOUT)
    stamps = [e["@timestamp"] for e in beats[-3:]]
    r["heartbeat_stamps"] = stamps
    r["same_pid_after_valid"] = main_pid() == pid
    # the first probe imports scapy: under TCG that took longer than 180 s
    mtu = wait_until(lambda: [e for e in events_of(pid) if e["event"].get("dataset") == "netagent.mtu"],
                     bool, START_TIMEOUT)
    r["mtu_events"] = [{"action": e["event"]["action"], "mtu": e.get("netagent", {}).get("mtu")} for e in mtu[:3]]

    # an invalid file: rejected, the running configuration stays
    with open(CONFIG, "w") as f:
        f.write(CTX["valid_config"].replace('interval = "1s"', 'interval = "soon"'))
    r["invalid_check_rc"] = run("netagent", "config", "check", CONFIG).returncode
    mark = len(journal_lines())
    rc = run("systemctl", "reload", UNIT)
    r["invalid_reload_rc"] = rc.returncode
    lines = wait_until(lambda: log_messages(_parse(journal_lines()[mark:])),
                       lambda ls: any("reload rejected" in x for x in ls), EVENT_TIMEOUT)
    r["rejected_lines"] = [x for x in lines if "reload rejected" in x]
    r["log_lines_after_invalid"] = lines
    r["active_after_invalid"] = run("systemctl", "is-active", UNIT).stdout.strip()
    r["same_pid_after_invalid"] = main_pid() == pid
    # the old configuration keeps working: new drops are still counted
    pod = CTX["pod"]
    send_udp(pod, "127.0.0.1", 30011, 40)
    r["drops_after_invalid"] = wait_until(
        lambda: drops_in(events_of(pid), pod.inode).get(30011, {}).get("count", 0), lambda n: n >= 40, EVENT_TIMEOUT)
    with open(CONFIG, "w") as f:
        f.write(CTX["valid_config"])  # what runs is what the file says again


@step
def kill_and_spool():
    r = results["steps"]["kill"] = {}
    rs: Rsyslog = CTX["rsyslog"]
    pod = CTX["pod"]
    old = CTX["pid"]
    restarts = int(show("NRestarts")["NRestarts"])
    rs.stop()
    # events while the collector is down go to the spool
    send_udp(pod, "127.0.0.1", 31000, 30, ports=30, gap=0.05)
    r["spooling_line"] = wait_until(
        lambda: next((x for x in journal_log() if "cannot deliver" in x and "spooling" in x), None),
        lambda x: x is not None, EVENT_TIMEOUT)
    wait_until(spool_pending, lambda p: len({s for pid, s in p if pid == old}) >= 10, EVENT_TIMEOUT)
    r["kill_rc"] = run("systemctl", "kill", "-s", "KILL", UNIT).returncode
    gone = wait_until(lambda: run("kill", "-0", str(old)).returncode, lambda rc: rc != 0, scaled(5), 0.2)
    r["old_process_gone"] = gone != 0
    pending = spool_pending()
    r["spool_left"] = len(pending)
    r["spool_left_of_killed"] = len([p for p in pending if p[0] == old])
    props = wait_active(not_pid=old)
    new = int(props["MainPID"] or 0)
    CTX["pid"] = new
    r["props_after"] = show("ActiveState", "MainPID", "NRestarts", "Result")
    r["restarts"] = int(r["props_after"]["NRestarts"]) - restarts
    r["start_to_ready_s"] = start_to_ready()
    r["new_pid"], r["old_pid"] = new, old
    rs.start(timeout=scaled(30))
    want = set(pending)
    got = wait_until(lambda: received(rs), lambda g: want <= g, EVENT_TIMEOUT)
    r["spool_delivered"] = len(want & got)
    r["spool_missing"] = sorted(want - got)[:20]
    r["spool_line"] = next((x for x in journal_log() if "left in the spool by a previous run" in x), None)
    # events keep flowing from the restarted agent, to the journal and to syslog
    send_udp(pod, "127.0.0.1", 31100, 25)
    r["drops_after_restart"] = wait_until(
        lambda: drops_in(events_of(new), pod.inode).get(31100, {}).get("count", 0), lambda n: n >= 25, EVENT_TIMEOUT)
    r["syslog_from_new"] = len(wait_until(lambda: [g for g in received(rs) if g[0] == new], bool, EVENT_TIMEOUT))


@step
def logrotate():
    r = results["steps"]["logrotate"] = {}
    pid = CTX["pid"]
    pod = CTX["pod"]
    r["conf"] = open("/etc/logrotate.d/netagent").read() if os.path.exists("/etc/logrotate.d/netagent") else None
    sender = pod.popen("python3", "-c", SENDER, "127.0.0.1", "32000", "400", "40", "0.01",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: os.path.getsize(EVENT_FILE), lambda n: n > 20000, EVENT_TIMEOUT)
    inode = os.stat(EVENT_FILE).st_ino
    rot = run("logrotate", "-f", "/etc/logrotate.d/netagent")
    r["logrotate_rc"], r["logrotate_stderr"] = rot.returncode, rot.stderr.strip()[-2000:]
    r["new_inode"] = wait_until(lambda: os.stat(EVENT_FILE).st_ino if os.path.exists(EVENT_FILE) else None,
                                lambda i: i is not None and i != inode, scaled(5))
    r["new_file_grows"] = wait_until(lambda: os.path.getsize(EVENT_FILE), lambda n: n > 0, EVENT_TIMEOUT)
    sender.wait(300)
    wait_marker(pod, 32999)
    wait_until(lambda: open(EVENT_FILE).read(), lambda t: '"port":32999' in t, EVENT_TIMEOUT)
    rotated = sorted(glob.glob(EVENT_FILE + "-*"))
    r["rotated_files"] = [os.path.basename(p) for p in rotated]

    def seqs(path):
        with open(path) as f:
            return [json.loads(line)["event"]["sequence"] for line in f]

    # event.sequence restarts with each process: this agent's events in the
    # rotated file are those from its agent-started event on
    old_events = [json.loads(line) for p in rotated for line in open(p)]
    starts = [i for i, e in enumerate(old_events) if e["event"]["action"] == "agent-started"
              and e.get("process", {}).get("pid") == pid]
    mine_old = [e["event"]["sequence"] for e in old_events[starts[-1] if starts else 0:]]
    new_seqs = seqs(EVENT_FILE)
    journal = [e["event"]["sequence"] for e in events_of(pid) if "sequence" in e["event"]]
    r["old_file"] = {"first": mine_old[:1], "last": mine_old[-1:], "n": len(mine_old)}
    r["new_file"] = {"first": new_seqs[:1], "last": new_seqs[-1:], "n": len(new_seqs)}
    both = mine_old + new_seqs
    r["file_contiguous"] = both == list(range(both[0], both[0] + len(both))) if both else False
    r["journal_range"] = [min(journal), max(journal)] if journal else None
    top = max(both) if both else 0
    r["journal_missing_from_files"] = sorted(set(s for s in journal if s <= top) - set(both))[:20]


@step
def security():
    r = results["steps"]["security"] = {}
    out = run("systemd-analyze", "security", "--no-pager", UNIT).stdout
    m = re.search(r"Overall exposure level for netagent\.service: (\d+\.\d+)", out)
    r["score"] = float(m.group(1)) if m else None
    r["exposed"] = [line for line in out.splitlines() if line.startswith("✗")]
    pid = CTX["pid"]
    ev = agent_started(pid)
    r["sensors"] = ev and ev["netagent"]["agent"]["sensors"]
    # every sensor that is on produced its events in this boot under the unit
    r["datasets"] = sorted({e["event"].get("dataset") for e in journal_events()})
    r["caps"] = run("grep", "^Cap", f"/proc/{pid}/status").stdout.split("\n")


@step
def apt_remove():
    r = results["steps"]["remove"] = {}
    if run("systemctl", "is-active", UNIT).stdout.strip() != "active":  # an earlier step failed
        r["start_rc"] = run("systemctl", "start", UNIT, timeout=START_TIMEOUT).returncode
    props = wait_active()
    pid = int(props["MainPID"] or 0)
    r["running_before"] = props["ActiveState"] == "active"
    r["before"] = our_bpf(pid)
    rm = run("apt-get", "remove", "-y", "netagent", timeout=scaled(60))
    r["rc"], r["output"] = rm.returncode, (rm.stdout + rm.stderr)[-2000:]
    r["is_active"] = run("systemctl", "is-active", UNIT).stdout.strip()
    r["after"] = our_bpf(None)
    r["still_there"] = [i for i in r["before"]["held_ids"] if i in {p["id"] for p in bpf_programs()}]
    r["status"] = run("dpkg-query", "-W", "-f=${Status}", "netagent").stdout
    r["kept"] = {p: os.path.exists(p) for p in (CONFIG, "/var/log/netagent", "/var/lib/netagent")}


@step
def apt_purge():
    r = results["steps"]["purge"] = {}
    pg = run("apt-get", "purge", "-y", "netagent", timeout=scaled(60))
    r["rc"], r["output"] = pg.returncode, (pg.stdout + pg.stderr)[-2000:]
    r["left"] = {p: os.path.exists(p) for p in ("/etc/netagent", "/var/log/netagent", "/var/lib/netagent",
                                                "/etc/logrotate.d/netagent", "/lib/systemd/system/netagent.service")}
    r["status"] = run("dpkg-query", "-W", "-f=${Status}", "netagent").stdout


@step
def apt_install():
    r = results["steps"]["install"] = {}
    debs = sorted(glob.glob("/root/netagent_*.deb"))
    r["deb"] = debs[-1] if debs else None
    t = time.monotonic()
    inst = run("apt-get", "install", "-y", "--no-install-recommends", debs[-1], timeout=START_TIMEOUT + scaled(60))
    r["seconds"] = round(time.monotonic() - t, 1)
    r["rc"], r["output"] = inst.returncode, (inst.stdout + inst.stderr)[-2000:]
    # deb-systemd-invoke start waits for READY=1 (Type=notify): active when apt returns
    r["is_active_when_apt_returned"] = run("systemctl", "is-active", UNIT).stdout.strip()
    r["is_enabled"] = run("systemctl", "is-enabled", UNIT).stdout.strip()
    r["start_to_ready_s"] = start_to_ready()
    pid = main_pid()
    CTX["pid"] = pid
    ev = wait_until(lambda: agent_started(pid), lambda e: e is not None, EVENT_TIMEOUT)
    r["sensors"] = ev and ev["netagent"]["agent"]["sensors"]
    r["config_restored"] = os.path.exists(CONFIG) and open(CONFIG).read() == open("/root/netagent.toml.packaged").read()


@step
def stop():
    r = results["steps"]["stop"] = {}
    pid = CTX["pid"]
    r["before"] = our_bpf(pid)
    t = time.monotonic()
    rc = run("systemctl", "stop", UNIT, timeout=scaled(20))
    r["seconds"] = round(time.monotonic() - t, 2)
    r["rc"] = rc.returncode
    r["timeout_stop"] = show("TimeoutStopUSec")["TimeoutStopUSec"]
    r["props"] = show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    r["after"] = our_bpf(None)
    r["still_there"] = [i for i in r["before"]["held_ids"] if i in {p["id"] for p in bpf_programs()}]
    r["stopped_line"] = next((x for x in reversed(journal_log()) if x.startswith("stopped (SIGTERM)")), None)


@step
def bad_config():
    r = results["steps"]["bad_config"] = {}
    with open("/root/netagent.toml.packaged") as f:
        packaged = f.read()
    assert 'interval = "1s"' in packaged
    with open(CONFIG, "w") as f:
        f.write(packaged.replace('interval = "1s"', 'interval = "soon"'))
    restarts = int(show("NRestarts")["NRestarts"])
    rc = run("systemctl", "start", UNIT, timeout=scaled(30))
    r["start_rc"] = rc.returncode
    props = wait_until(lambda: show("ActiveState", "ExecMainStatus", "Result", "NRestarts", "RestartUSec"),
                       lambda p: p["ActiveState"] == "failed", scaled(20))
    r["props"] = props
    # no restart loop: still failed, no new restart, after three RestartSec periods
    restart_sec = float(props["RestartUSec"].rstrip("s") or 5) if props["RestartUSec"].endswith("s") else 5.0
    deadline = time.monotonic() + 3 * restart_sec
    states = set()
    while time.monotonic() < deadline:
        states.add(show("ActiveState")["ActiveState"])
        time.sleep(0.5)
    r["states_seen"] = sorted(states)
    r["restarts"] = int(show("NRestarts")["NRestarts"]) - restarts
    st = run("systemctl", "status", "--no-pager", "--full", "-n", "5", UNIT)
    r["status"] = st.stdout
    shutil.copy("/root/netagent.toml.packaged", CONFIG)
    run("systemctl", "reset-failed", UNIT)


def main() -> int:
    os.makedirs(LAB, exist_ok=True)
    # NETAGENT_NODE_STEPS=facts,startup,...: only those (to re-check a few steps in one boot)
    only = [x for x in os.environ.get("NETAGENT_NODE_STEPS", "").split(",") if x]
    for fn in [f for f in STEPS if not only or f.__name__ in only]:
        log(f"{fn.__name__} ...")
        t = time.monotonic()
        keys_before = set(results["steps"])
        try:
            fn()
        except Exception:
            results["errors"][fn.__name__] = traceback.format_exc()[-3000:]
            log(f"{fn.__name__}: ERROR\n{results['errors'][fn.__name__]}")
        results.setdefault("seconds", {})[fn.__name__] = round(time.monotonic() - t, 1)
        log(f"{fn.__name__}: {results['seconds'][fn.__name__]}s")
        # what the step recorded, at once: a session cut short still shows it
        record = {k: v for k, v in results["steps"].items() if k not in keys_before}
        log("record: " + json.dumps(record, default=sorted)[:4000])
    for name in ("rsyslog",):
        if name in CTX:
            CTX[name].stop()
    for ns in ("nodepod",):
        run("ip", "netns", "del", ns)
    print("NODE-RESULTS " + json.dumps(results, default=sorted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
