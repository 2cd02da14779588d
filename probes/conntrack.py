"""The conntrack sensor: insert failures, clashes and a full table, per namespace.

Two layers:

* Counters, always: /proc/net/stat/nf_conntrack read inside every watched
  namespace (netagent.conntrack), diffed per interval, with alerts.
* Per packet, where the kernel allows: kprobes/kretprobes on
  __nf_conntrack_confirm, nf_ct_resolve_clash and early_drop (conntrack.bpf.c)
  name the flow and namespace of every refusal, aggregated in the kernel and
  flushed exactly by swapping two buffers. On kernels without kprobes the
  drop sensor's NETFILTER_DROP drops in the same namespace and interval are
  joined to the counter rises instead, and the events say so.
"""

import ipaddress
import os
import struct
import time
from collections import namedtuple

from netagent import bpfchild, btfcache
from netagent import netns as netns_mod
from netagent.bccloader import compile_program, import_bcc
from netagent.btf import BtfError, kernel_btf
from netagent.configschema import one_of
from netagent.conntrack.correlate import NETFILTER_DROP, correlated_events
from netagent.conntrack.flows import MergedFlow, merge
from netagent.conntrack.module import LOADABLE, STAT_PATH, module_state
from netagent.conntrack.namespaces import (
    ConntrackAbsent,
    NamespaceGone,
    Snapshot,
    candidate_namespaces,
    read_snapshot,
)
from netagent.conntrack.report import DATASET, DEFAULT_THRESHOLD, Interval, kernel_caveat
from netagent.conntrack.stats import StatFormatError, StatTable
from netagent.errors import AgentError, InsufficientPrivilege, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.kallsyms import Symbolizer, kallsyms_path
from netagent.nodefacts import fentry_refused_reason, kprobes_unavailable_reason
from netagent.privileges import effective_capabilities, require_bpf
from netagent.sensor import CounterHandover, Sensor, SensorStatus
from netagent.timefmt import MonotonicToWall, iso_timestamp

WAITING = "waiting for nf_conntrack"
WAITING_PATH = f"{WAITING} (counters and per-packet probes attach when the module loads)"
COUNTERS_PATH = "counters /proc/net/stat/nf_conntrack"
CORRELATION_PATH = "correlation with the drop sensor's NETFILTER_DROP ({})"
# auto: fentry/fexit where the kernel allows, else kprobes, else correlation
PER_PACKET_MODES = ("auto", "fentry", "kprobe", "correlation", "off")
FUNCTION_PROBE_MODES = ("fentry", "kprobe")
PROBES_NAMED = {"fentry": "fentry/fexit programs", "kprobe": "kprobes"}
COUNTER_MODES = ("always", "changes", "never")
MAX_FLOWS = 4096
REDISCOVER_SECONDS = 5.0
# struct ct_flow and struct ct_count of conntrack.bpf.c, as the maps hold them
CT_FLOW = struct.Struct("<IBBH4I4IHH")
CT_COUNT = struct.Struct("<QQQ")
CtFlow = namedtuple("CtFlow", "netns kind l4 l3 saddr daddr sport dport")
# the maps user space keeps: the two flow buffers, the slot that says which one the programs
# fill, and the loss and hit counters
PROBE_MAPS = ["flows_a", "flows_b", "active_flows", "lost", "hits"]

KIND_ACTIONS = {1: "insert-failed", 2: "clash-resolved", 3: "table-full", 4: "table-full"}
KIND_OUTCOMES = {1: "dropped", 2: "merged", 3: "dropped", 4: "evicted-other-entry"}
HIT_PAIRS = {"__nf_conntrack_confirm": (0, 1), "nf_ct_resolve_clash": (2, 3), "early_drop": (4, 5),
             "__nf_conntrack_alloc": (6, 7)}
TRANSPORT_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "ipv6-icmp", 132: "sctp",
                   136: "udplite"}
AF_INET, AF_INET6 = 2, 10

# Struct fields the BPF program reads: macro -> (struct, member path), from BTF.
BTF_FIELDS = {
    "OFF_SKB_NFCT": ("sk_buff", "_nfct"),
    "OFF_CT_TUPLEHASH": ("nf_conn", "tuplehash"),
    "OFF_CT_NET": ("nf_conn", "ct_net.net"),
    "OFF_HASH_TUPLE": ("nf_conntrack_tuple_hash", "tuple"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_TUPLE_SRC_U3": ("nf_conntrack_tuple", "src.u3"),
    "OFF_TUPLE_SRC_PORT": ("nf_conntrack_tuple", "src.u.all"),
    "OFF_TUPLE_L3NUM": ("nf_conntrack_tuple", "src.l3num"),
    "OFF_TUPLE_DST_U3": ("nf_conntrack_tuple", "dst.u3"),
    "OFF_TUPLE_DST_PORT": ("nf_conntrack_tuple", "dst.u.all"),
    "OFF_TUPLE_PROTONUM": ("nf_conntrack_tuple", "dst.protonum"),
}

# Kernel functions and the parameters the programs read (names as in the
# kernel source; positions are looked up in the BTF prototype).
PROBED_PARAMS = {
    "__nf_conntrack_confirm": {"CONFIRM_SKB_ARG": "skb"},
    "nf_ct_resolve_clash": {"CLASH_SKB_ARG": "skb"},
    "__nf_conntrack_alloc": {"ALLOC_NET_ARG": "net", "ALLOC_ORIG_ARG": "orig"},
    "early_drop": {},
}
# Positions used when BTF has no prototype (stable since 4.x for these two).
DEFAULT_PARAMS = {"CONFIRM_SKB_ARG": 1, "ALLOC_NET_ARG": 1, "ALLOC_ORIG_ARG": 3}

CONFIG_SECTION = "conntrack"
# The daemon reads every 10s: a counters event per namespace every second
# would flood a SIEM, and real damage (drop, early_drop, insert_failed) is
# counted exactly whatever the interval; only alert latency grows.
CONFIG_SCHEMA = {
    "enabled": ("bool", True),
    "interval": ("duration", 10.0),
    "netns": ("list", []),  # [] = the agent's own namespace; ["all"] = every namespace with conntrack
    "threshold": ("float", DEFAULT_THRESHOLD, lambda v: _check_threshold(v)),
    "per_packet": ("str", "auto", one_of(*PER_PACKET_MODES)),
    "counters": ("str", "always", one_of(*COUNTER_MODES)),
    "max_flow_events": ("int", 20),
}


def _check_threshold(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"must be a fraction above 0 and at most 1 (0.9 = 90%), got {value}")
    return value


def from_config(cfg: dict) -> "ConntrackSensor":
    return ConntrackSensor(netns=list(cfg.get("netns", [])), interval=cfg.get("interval", 10.0),
                           threshold=cfg.get("threshold", DEFAULT_THRESHOLD),
                           per_packet=cfg.get("per_packet", "auto"), counters=cfg.get("counters", "always"),
                           max_flow_events=cfg.get("max_flow_events", 20))


# --- kernel facts ------------------------------------------------------------------

def function_params(btf, name: str) -> list[str] | None:
    """Parameter names of kernel function `name` from its BTF prototype, or
    None when BTF has no such function (inlined, or no BTF for it)."""
    return btf.function_params(name)


# The two ways a probe goes on a kernel function: (entry kind, return kind, program suffixes)
PROBE_WAYS = {
    "kprobe": ("kprobe", "kretprobe", "_entry", "_return"),
    "fentry": ("fentry", "fexit", "_fentry", "_fexit"),
}
# the number of arguments each probed function's fexit program skips to reach the return value
NARGS_MACROS = {"__nf_conntrack_confirm": "CONFIRM_NARGS", "nf_ct_resolve_clash": "CLASH_NARGS",
                "__nf_conntrack_alloc": "ALLOC_NARGS", "early_drop": "EARLY_DROP_NARGS"}


class ProbePlan:
    """Which functions the kernel lets us probe, and how, with the macros the C needs.

    `via` "kprobe": kprobes/kretprobes (perf events of the kprobe PMU); "fentry":
    fentry/fexit programs (BPF trampolines), which need each function's BTF
    prototype (vmlinux's or its module's) and no perf event."""

    def __init__(self, symbolizer: Symbolizer | None = None, btf=None, kallsyms_text: str | None = None,
                 via: str = "kprobe"):
        self.symbolizer = symbolizer or Symbolizer()
        self.btf = btf
        self.via = via
        self.probes: list[tuple[str, str, str]] = []  # (kind, kernel function, program)
        self.macros: dict[str, int | str] = {}
        self.notes: dict[str, str] = {}  # function -> why it is not probed / how
        self.btf_functions: dict[str, list] = {}  # fentry/fexit: function -> [BTF id, BTF object]
        self._counts = symbol_counts(set(PROBED_PARAMS), kallsyms_text)
        if via == "fentry" and btf is None:
            raise ProbeUnavailable("fentry/fexit need this kernel's BTF")
        self._plan()

    def _has(self, function: str) -> bool:
        """Present exactly once: a static name defined in two files is ambiguous
        to a kprobe (the kernel refuses it), and the wrong one would be probed.
        A trampoline goes by BTF id: the function needs a BTF prototype, and is
        ambiguous only where /proc/kallsyms (when readable) has it twice."""
        if self.via == "fentry":
            if function_params(self.btf, function) is None:
                return False
            count = self._counts.get(function, 1) if self._counts else 1
        else:
            count = self._counts.get(function, 0) if self._counts else int(self.symbolizer.has(function))
        if count > 1:
            self.notes[function] = f"not probed: {count} kernel functions share this name"
            return False
        return count == 1

    def _params(self, function: str) -> dict[str, int] | None:
        wanted = PROBED_PARAMS[function]
        names = function_params(self.btf, function) if self.btf is not None else None
        if names is None:
            if self.via == "kprobe" and all(m in DEFAULT_PARAMS for m in wanted):
                self.notes.setdefault(function, "argument positions assumed (no BTF prototype)")
                return {m: DEFAULT_PARAMS[m] for m in wanted}
            return None
        out = {}
        for macro, param in wanted.items():
            if param not in names or names.index(param) >= 5:
                return None
            out[macro] = names.index(param) + 1
        return out

    def _probe(self, function: str, stem: str, entry: bool = True, ret: bool = True):
        """Probe `function` on entry and/or return with conntrack.bpf.c's `stem` programs."""
        entry_kind, return_kind, entry_suffix, return_suffix = PROBE_WAYS[self.via]
        if entry:
            self.probes.append((entry_kind, function, stem + entry_suffix))
        if ret:
            self.probes.append((return_kind, function, stem + return_suffix))
        if self.via == "fentry":
            self.btf_functions[function] = list(self.btf.function_id(function))
            self.macros[NARGS_MACROS[function]] = len(function_params(self.btf, function))

    def _plan(self):
        has = self._has
        if not has("__nf_conntrack_confirm"):
            if self.via == "fentry":
                raise ProbeUnavailable("__nf_conntrack_confirm has no BTF prototype (conntrack not loaded, or "
                                       "its module has no BTF)")
            raise ProbeUnavailable("__nf_conntrack_confirm is not in /proc/kallsyms (conntrack not loaded?)")
        params = self._params("__nf_conntrack_confirm")
        if params is None:
            raise ProbeUnavailable("__nf_conntrack_confirm has no skb parameter in this kernel's BTF")
        self.macros.update(params)
        self._probe("__nf_conntrack_confirm", "confirm")
        clash = self._params("nf_ct_resolve_clash") if has("nf_ct_resolve_clash") else None
        if clash is not None:
            self.macros.update(clash)
            self._probe("nf_ct_resolve_clash", "clash")
        else:
            self.macros["CLASH_SKB_ARG"] = 1
            self.notes.setdefault("nf_ct_resolve_clash", "not probed: inlined, absent or no BTF prototype (clash "
                                                         "counts come from the clash_resolve counter)")
        alloc = self._params("__nf_conntrack_alloc") if has("__nf_conntrack_alloc") else None
        if alloc is None:
            self.macros.update({"ALLOC_NET_ARG": 1, "ALLOC_ORIG_ARG": 3})
            self.notes.setdefault("__nf_conntrack_alloc",
                                  "not probed: inlined or absent (table-full flows from counters only)")
            return
        self.macros.update(alloc)
        if has("early_drop"):
            self._probe("__nf_conntrack_alloc", "alloc", ret=False)
            self._probe("early_drop", "early_drop")
        else:
            self._probe("__nf_conntrack_alloc", "alloc")
            self.notes.setdefault("early_drop", "inlined or absent")
            self.notes["early_drop"] += ": table-full drops seen as failed __nf_conntrack_alloc returns"

    def describe(self) -> str:
        return ", ".join(f"{kind} {fn}" for kind, fn, _ in self.probes)


def symbol_counts(names: set[str], text: str | None = None) -> dict[str, int]:
    """How many text symbols in /proc/kallsyms (or `text`) carry each name."""
    if text is None:
        try:
            with open(kallsyms_path()) as f:
                text = f.read()
        except OSError:
            return {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in names and parts[1] in ("t", "T", "w", "W"):
            counts[parts[2]] = counts.get(parts[2], 0) + 1
    return counts


def struct_offsets(btf) -> dict[str, int]:
    """Macro -> byte offset of every field the program reads, from BTF."""
    raw = {macro: btf.member_offset(s, m) for macro, (s, m) in BTF_FIELDS.items()}
    return {
        "OFF_SKB_NFCT": raw["OFF_SKB_NFCT"],
        # tuplehash[IP_CT_DIR_ORIGINAL].tuple
        "OFF_CT_TUPLE_ORIG": raw["OFF_CT_TUPLEHASH"] + raw["OFF_HASH_TUPLE"],
        "OFF_CT_NET": raw["OFF_CT_NET"],
        "OFF_NET_INUM": raw["OFF_NET_INUM"],
        **{k: raw[k] for k in ("OFF_TUPLE_SRC_U3", "OFF_TUPLE_SRC_PORT", "OFF_TUPLE_L3NUM",
                               "OFF_TUPLE_DST_U3", "OFF_TUPLE_DST_PORT", "OFF_TUPLE_PROTONUM")},
    }


class ConntrackBtf:
    """What the plan and the program read from BTF, and nothing else: the probed functions'
    prototypes and BTF ids, and the struct offsets. Kept per kernel in the BTF facts cache
    (btfcache), so a restart decides its path and builds its program without parsing BTF
    (about a second and 30 MB in Python: the daemon's start and peak memory)."""

    def __init__(self, facts: dict):
        self.functions = facts["functions"]
        self.offsets = facts["offsets"]

    def function_params(self, name: str) -> list[str] | None:
        known = self.functions.get(name)
        return known["params"] if known else None

    def function_id(self, name: str) -> tuple[int, str]:
        known = self.functions.get(name)
        if not known:
            raise BtfError(f"no BTF prototype of {name}")
        return known["id"], known["owner"]


class _NotLoadedYet(Exception):
    """nf_conntrack's BTF is not there yet: nothing to keep for this kernel."""


def _conntrack_facts() -> dict:
    btf = kernel_btf()
    functions = {}
    for name in PROBED_PARAMS:
        params = btf.function_params(name)
        functions[name] = None if params is None else dict(zip(("id", "owner"), btf.function_id(name)),
                                                            params=params)
    if functions["__nf_conntrack_confirm"] is None:
        raise _NotLoadedYet()
    return {"functions": functions, "offsets": struct_offsets(btf)}


def conntrack_btf():
    """ConntrackBtf from the facts cache (computed from BTF once per kernel), or, while
    nf_conntrack's BTF is not complete, the live BTF (None without any)."""
    try:
        return ConntrackBtf(btfcache.fact("conntrack.btf", _conntrack_facts))
    except (_NotLoadedYet, BtfError):
        return _btf_or_none()


def offsets_of(btf) -> dict[str, int]:
    """The program's struct offsets, from ConntrackBtf or from the live BTF."""
    return dict(btf.offsets) if isinstance(btf, ConntrackBtf) else struct_offsets(btf)


def build_macros(plan: ProbePlan, offsets: dict[str, int], filter_netns: int = 0, max_flows: int = MAX_FLOWS) -> dict:
    macros = dict(offsets)
    macros.update(plan.macros)
    macros["FILTER_NETNS"] = f"{filter_netns}U"
    macros["MAX_FLOWS"] = max_flows
    return macros


def compile_probes(macros: dict):
    """The compiled (not yet attached) BPF object for conntrack.bpf.c (tests of the verifier;
    the sensor loads through bpfchild, out of this process)."""
    return compile_program("conntrack", macros)


def probes_spec(plan: ProbePlan, macros: dict) -> bpfchild.ProgramSpec:
    """Every program of the plan, sharing conntrack.bpf.c's maps, as one spec for the loader
    (compiled in its child process, or loaded from the bytecode cache on a restart). The
    first buffer is active before any program is attached."""
    (kind, function, program), *more = plan.probes
    return bpfchild.ProgramSpec("conntrack", program, kind, function, macros, maps=list(PROBE_MAPS),
                                setup=[{"map": "active_flows", "key": 0, "map_fd": "flows_a"}],
                                more=[list(p) for p in more], btf_functions=dict(plan.btf_functions))


def unpack_flow(raw: bytes) -> CtFlow:
    f = CT_FLOW.unpack(raw)
    return CtFlow(f[0], f[1], f[2], f[3], f[4:8], f[8:12], f[12], f[13])


def per_cpu_totals(table: "bpfchild.bpfsys.RawMap") -> dict[int, int]:
    """Each slot of a per-CPU u64 array, summed over the CPUs (the whole array in one read)."""
    return {int.from_bytes(key, "little"): sum(int.from_bytes(v, "little") for v in table.per_cpu_values(value))
            for key, value in table.read_all()}


# --- rendering -------------------------------------------------------------------

def _address(words, family: int) -> str | None:
    raw = b"".join(int(w).to_bytes(4, "little") for w in words)
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    return None


def decode_flow(key) -> dict:
    """A kernel flow key as ECS-shaped pieces (for flows.merge)."""
    l3, l4 = int(key.l3), int(key.l4)
    network = {"type": {AF_INET: "ipv4", AF_INET6: "ipv6"}.get(l3, "unknown"),
               "transport": TRANSPORT_NAMES.get(l4, str(l4)), "iana_number": str(l4)}
    source = {"ip": _address(key.saddr, l3)}
    destination = {"ip": _address(key.daddr, l3)}
    icmp = None
    if l4 in (1, 58):
        icmp = {"type": int(key.sport), "code": int(key.dport)}
    else:
        source["port"] = int(key.sport)
        destination["port"] = int(key.dport)
    return {"network": network, "source": source, "destination": destination, "icmp": icmp}


def render_flow(flow: MergedFlow, kind: int, *, netns_name: str | None, now: float | None = None,
                seen_by: str = "kprobe") -> dict:
    """Flows of one kind and service, aggregated over an interval by the kernel;
    `seen_by`: the probes that saw them (kprobe or fentry)."""
    action = KIND_ACTIONS.get(kind, "insert-failed")
    body = {
        "netns": flow.netns,
        "netns_name": netns_name,
        "count": flow.count,
        "source_ports": len(flow.source_ports),
        "outcome": KIND_OUTCOMES.get(kind, "unknown"),
        "kind_raw": kind,
        "attribution": seen_by,
    }
    if flow.icmp:
        body["icmp"] = flow.icmp
    event = new_event(dataset=DATASET, action=action, kind="event" if kind == 2 else "alert",
                      category=["network"], type=["info"] if kind in (2, 4) else ["denied"],
                      timestamp=now, netagent={"conntrack": body}, **flow.ecs())
    event["event"]["start"] = flow.start
    event["event"]["end"] = flow.end
    what = {1: "could not be inserted (insert race lost, not mergeable) and were dropped",
            2: "raced another packet of the same new flow; merged without a drop",
            3: "found the table full with nothing to evict and were dropped",
            4: "found the table full; an unreplied entry was evicted to make room"}.get(kind, "?")
    where = f" in netns {netns_name}" if netns_name else f" in netns {flow.netns}"
    event["message"] = f"{flow.count} packets of {flow.describe()}{where} {what} (seen by {seen_by})"
    return event


# --- the sensor ----------------------------------------------------------------------

class ConntrackSensor(CounterHandover, Sensor):
    name = "conntrack"
    dataset = DATASET

    def __init__(self, netns: list[str] | tuple[str, ...] = (), interval: float = 1.0,
                 threshold: float = DEFAULT_THRESHOLD, per_packet: str = "auto", counters: str = "always",
                 max_flow_events: int = 20, announce=None):
        if per_packet not in PER_PACKET_MODES:
            raise UsageError(f"per_packet {per_packet!r}: choose from {', '.join(PER_PACKET_MODES)}")
        if counters not in COUNTER_MODES:
            raise UsageError(f"counters {counters!r}: choose from {', '.join(COUNTER_MODES)}")
        try:
            _check_threshold(threshold)
        except ValueError as exc:
            raise UsageError(f"threshold: {exc}") from None
        self.specs = [s for s in netns if s is not None] or [""]
        self.watch_all = "all" in self.specs
        if self.watch_all and len(self.specs) > 1:
            raise UsageError("--netns all already includes every namespace; give it alone")
        self.interval = interval
        self.threshold = threshold
        self.per_packet = per_packet
        self.counters = counters
        self.max_flow_events = max_flow_events
        self.announce = announce or (lambda msg: None)
        self.attach_path: str | None = None
        self.per_packet_mode = "off"  # what attach() ended up with
        self.per_packet_reason: str | None = None
        self._namespaces: dict[int, netns_mod.Netns] = {}
        self._last: dict[int, Snapshot] = {}
        self._full: dict[int, bool] = {}
        self._caveat: str | None = None
        self._next_discovery = 0.0
        self._function_probes: bpfchild.LoadedProgram | None = None  # programs and maps of the fentry or kprobe path
        self._active = 0
        self._plan: ProbePlan | None = None
        self._drops = None  # DropSensor of our own in correlation mode
        self._feed = None  # or a FlowSubscription to the running drop sensor's flows (one kfree_skb program)
        self._feed_lost = 0  # correlation flows the subscription could not keep (counted)
        self._to_wall = MonotonicToWall()
        self._lost_full = 0
        self._lost_context = 0
        self._missed_returns = 0
        self._entries_seen: dict[str, int] = {}
        self._drop_losses: dict[str, int] = {}
        self._drop_loss_details: dict[str, int] = {}
        self.waiting = False  # attached before nf_conntrack loaded; poll() finishes the attach
        self._waiting_since: tuple[float, float] | None = None  # (monotonic, wall) when we began waiting

    # -- contract -----------------------------------------------------------------
    def check(self) -> SensorStatus:
        if not os.path.exists(STAT_PATH):
            if module_state() == LOADABLE:
                return SensorStatus(self.name, True, WAITING_PATH,
                                    "nf_conntrack is a module and not loaded yet (no rule uses conntrack); the "
                                    "sensor waits for it and attaches within one interval of it loading",
                                    {"state": WAITING, "per_packet": self.per_packet})
            return SensorStatus(self.name, False, None,
                                f"{STAT_PATH} missing: nf_conntrack is not loaded (or CONFIG_NF_CONNTRACK_PROCFS "
                                "is off); nothing to watch")
        if self.watch_all or any(self.specs):
            caps = effective_capabilities()
            if "CAP_SYS_ADMIN" not in caps:
                return SensorStatus(self.name, False, None,
                                    "needs CAP_SYS_ADMIN to enter other network namespaces (setns) and read their "
                                    "counters; without it only the agent's own namespace can be watched")
        mode, path, reason, details = self._choose_per_packet()
        if mode == "unavailable":
            return SensorStatus(self.name, False, None, reason, details)
        attach = COUNTERS_PATH + (f" + {path}" if path else "")
        try:
            caveat = kernel_caveat(read_snapshot(netns_mod.current()))
        except (ProbeUnavailable, InsufficientPrivilege, StatFormatError, OSError):
            caveat = None
        if caveat:
            details["caveat"] = caveat
        details["per_packet"] = mode
        return SensorStatus(self.name, True, attach, reason, details)

    def attach(self, predecessor: "ConntrackSensor | None" = None) -> str:
        """`predecessor`: the running conntrack sensor this one replaces (reload): this one
        reports nothing until it takes over its baselines (CounterHandover)."""
        if predecessor is not None:
            self._standby_for(predecessor)
        if not os.path.exists(STAT_PATH) and module_state() == LOADABLE:
            # A freshly booted node: nothing loaded conntrack yet. Wait for it.
            self.waiting = True
            self._waiting_since = (time.monotonic(), time.time())
            self.attach_path = WAITING_PATH
            return self.attach_path
        return self._attach_now()

    def _attach_now(self, counted_from_load: bool = False) -> str:
        self._namespaces, self._last, self._full = {}, {}, {}
        self._start_counters(counted_from_load)
        mode, path, reason, _ = self._choose_per_packet()
        if mode == "unavailable":
            raise ProbeUnavailable(reason)
        self.per_packet_reason = reason
        if mode in FUNCTION_PROBE_MODES:
            try:
                path = self._attach_function_probes()
            except (ProbeUnavailable, InsufficientPrivilege) as exc:
                self._detach_per_packet()
                if self.per_packet != "auto":
                    raise
                # Probes planned but refused: correlation still names the flows.
                mode, path, reason = self._fall_back(f"{PROBES_NAMED[mode]} could not be attached: {exc}")
                self.announce(f"conntrack: {reason}")
        elif mode == "correlation":
            try:
                path = self._attach_correlation()
            except (ProbeUnavailable, InsufficientPrivilege) as exc:
                self._detach_per_packet()
                if self.per_packet != "auto":
                    raise
                mode, path = "off", None
                reason = f"{reason + '; ' if reason else ''}correlation failed: {exc}: counters only"
                self.announce(f"conntrack: {reason}")
        self.per_packet_reason = reason
        self.per_packet_mode = mode
        self.attach_path = COUNTERS_PATH + (f" + {path}" if path else "")
        return self.attach_path

    def _fall_back(self, why: str) -> tuple[str, str | None, str]:
        """Counters plus correlation after the kprobe path failed; counters alone
        if that fails too. The sensor never goes off for a per-packet problem."""
        try:
            path = self._attach_correlation()
            return "correlation", path, f"{why}: per-packet conntrack events by correlation with the drop " \
                                        "sensor's NETFILTER_DROP"
        except (ProbeUnavailable, InsufficientPrivilege) as exc:
            self._detach_per_packet()
            return "off", None, f"{why}; correlation failed too ({exc}): counters only"

    def _finish_waiting(self) -> list[dict]:
        """Attach now if nf_conntrack has loaded since attach(); an event says so."""
        if not os.path.exists(STAT_PATH):
            return []
        try:
            path = self._attach_now(counted_from_load=True)
        except AgentError as exc:
            self.announce(f"conntrack: nf_conntrack loaded but attaching failed ({exc}); retrying next interval")
            self._detach_per_packet()
            return []
        self.waiting = False
        since_mono, since_wall = self._waiting_since
        waited = time.monotonic() - since_mono
        message = (f"nf_conntrack loaded: conntrack sensor attached via {path} after waiting {waited:.1f}s; "
                   "counters count from the module's load")
        self.announce(f"conntrack: {message}")
        event = new_event(dataset=DATASET, action="sensor-attached", kind="event", category=["network"],
                          type=["start"], netagent={"conntrack": {"attach_path": path, "waited_seconds":
                                                                  round(waited, 3),
                                                                  "per_packet": self.per_packet_mode}})
        event["event"]["start"] = iso_timestamp(since_wall)
        event["message"] = message
        if self.per_packet_reason:
            event["event"]["reason"] = self.per_packet_reason
        return [event]

    def poll(self) -> list[dict]:
        if self.in_standby:
            # the predecessor reports these counters and packets until it hands over
            self._drain_per_packet(time.time())
            return []
        events: list[dict] = []
        if self.waiting:
            events = self._finish_waiting()
            if self.waiting:
                return events
        now = time.time()
        intervals: dict[int, Interval] = {}
        # Counters first, then the per-packet buffers: the swap happens right
        # after, so both cover (almost exactly) the same span.
        for inode, ns in list(self._namespaces.items()):
            try:
                snap = read_snapshot(ns)
            except (NamespaceGone, ConntrackAbsent) as exc:
                self.announce(f"conntrack: stop watching netns {ns.name}: {exc}")
                self._forget(inode)
                continue
            except (ProbeUnavailable, OSError, StatFormatError) as exc:
                # keep the baseline: the next good reading covers this interval too
                self.announce(f"conntrack: netns {ns.name} unreadable this interval ({exc}); retrying")
                continue
            prev = self._last[inode]
            try:
                interval = Interval(prev, snap, threshold=self.threshold, was_full=self._full.get(inode, False),
                                    caveat=self._caveat)
            except StatFormatError:
                self._last[inode] = snap  # the layout changed under us (module reload): new baseline
                continue
            self._last[inode] = snap
            self._full[inode] = interval.above_threshold
            intervals[inode] = interval
            events.extend(interval.events(counters=self._want_counters(interval)))
        per_packet = self._drain_per_packet(now)
        if self.per_packet_mode == "correlation":
            events.extend(correlated_events(intervals, per_packet, max_flows=self.max_flow_events, now=now))
        else:
            events.extend(per_packet)
        if self.watch_all and time.monotonic() >= self._next_discovery:
            self._discover()
        return events

    def detach(self) -> None:
        self._detach_per_packet()

    def _adopt(self, predecessor: "ConntrackSensor") -> None:
        """Count on from the predecessor's last readings in the namespaces both watch
        (a namespace only this one watches keeps the baseline taken at attach)."""
        if self.waiting or predecessor.waiting:
            return
        for inode, snap in list(predecessor._last.items()):
            if inode in self._last:
                self._last[inode] = snap
                self._full[inode] = predecessor._full.get(inode, False)

    def _detach_per_packet(self) -> None:
        if self._function_probes is not None:
            try:
                self._function_probes.close()
            finally:
                self._function_probes = None
        if self._drops is not None:
            try:
                self._note_drop_losses()
                self._drops.detach()
            finally:
                self._drops = None
        if self._feed is not None:
            self._feed_lost = self._feed.lost
            self._feed.close()
            self._feed = None

    def losses(self) -> dict[str, int]:
        self._note_drop_losses()
        kernel = self._lost_full + self._lost_context + self._missed_returns + self._drop_losses.get("kernel", 0)
        return {"kernel": kernel + self._shared_lost()}

    def loss_details(self) -> dict[str, int]:
        self._note_drop_losses()
        out = {"map_full": self._lost_full, "context_lost": self._lost_context,
               "kretprobe_missed": self._missed_returns}
        if self._feed is not None or self._feed_lost:
            out["shared_flows_full"] = self._shared_lost()
        out.update({f"drops_{k}": v for k, v in self._drop_loss_details.items()})
        return out

    def _shared_lost(self) -> int:
        return self._feed.lost if self._feed is not None else self._feed_lost

    def _note_drop_losses(self):
        """Keep the correlation drop sensor's (cumulative) losses past its detach."""
        if self._drops is not None:
            self._drop_losses = dict(self._drops.losses())
            self._drop_loss_details = dict(getattr(self._drops, "loss_details", dict)())

    @property
    def caveat(self) -> str | None:
        """Why insert_failed overstates trouble on this (old) kernel, if it does."""
        return self._caveat

    @property
    def namespaces(self) -> list[netns_mod.Netns]:
        return list(self._namespaces.values())

    # -- counters ----------------------------------------------------------------
    def _start_counters(self, counted_from_load: bool = False):
        """Baselines for every watched namespace. counted_from_load: nf_conntrack
        loaded while we waited, so its counters started at zero then and a zero
        baseline counts everything since (nothing is lost to the wait)."""
        if self.watch_all:
            self._discover(announce_new=False)
            if not self._namespaces:
                raise ProbeUnavailable("no network namespace has conntrack statistics (nf_conntrack not loaded?)")
        else:
            for spec in self.specs:
                ns = netns_mod.resolve(spec)
                snap = read_snapshot(ns)  # ConntrackAbsent / InsufficientPrivilege propagate: named explicitly
                self._watch(ns, snap)
        if counted_from_load and self._waiting_since:
            for inode, snap in self._last.items():
                self._last[inode] = zero_baseline(snap, *self._waiting_since)

    def _watch(self, ns, snap: Snapshot):
        self._namespaces[ns.inode] = ns
        self._last[ns.inode] = snap
        # not "already full": a table that is over the threshold when we start is alerted at once
        self._full[ns.inode] = False
        if self._caveat is None:
            self._caveat = kernel_caveat(snap)

    def _forget(self, inode: int):
        self._namespaces.pop(inode, None)
        self._last.pop(inode, None)
        self._full.pop(inode, None)

    def _discover(self, announce_new: bool = True):
        """Start watching every namespace that has conntrack statistics.

        All of them get a baseline at once, so counting starts when we first
        see a namespace; counters events are only emitted for namespaces
        where conntrack is in use (see _want_counters).
        """
        self._next_discovery = time.monotonic() + max(REDISCOVER_SECONDS, self.interval)
        for inode, ns in candidate_namespaces().items():
            if inode in self._namespaces:
                continue
            try:
                snap = read_snapshot(ns)
            except (ConntrackAbsent, NamespaceGone, StatFormatError):
                continue
            except InsufficientPrivilege:
                if not self._namespaces:
                    raise
                continue
            self._watch(ns, snap)
            if announce_new and snap.active:
                self.announce(f"conntrack: now watching netns {ns.name}")
        for inode in list(self._namespaces):
            if not os.path.exists(self._namespaces[inode].path):
                self._forget(inode)

    def _want_counters(self, interval: Interval) -> bool:
        if self.counters == "never":
            return False
        changed = any(interval.rises.values()) or interval.before.entries != interval.after.entries
        if self.counters == "changes":
            return changed
        # "always": every namespace named, or every one where conntrack is in use
        return not self.watch_all or interval.after.active

    # -- per packet -------------------------------------------------------------
    def _choose_per_packet(self) -> tuple[str, str | None, str | None, dict]:
        """(mode, attach path, reason, details) for the per-packet part."""
        details: dict = {}
        if self.per_packet == "off":
            return "off", None, "per-packet events disabled (per_packet = off)", details
        no_fentry = None
        if self.per_packet in ("auto", "fentry"):
            plan, no_fentry = self._function_plan("fentry")
            if plan is not None:
                details["kprobe_notes"] = plan.notes
                return "fentry", plan.describe(), None, details
            if self.per_packet == "fentry":
                return "unavailable", None, f"per-packet fentry/fexit requested but {no_fentry}", details
        no_kprobes = kprobes_unavailable_reason()
        plan_error = None
        if not no_kprobes and self.per_packet in ("auto", "kprobe"):
            plan, plan_error = self._function_plan("kprobe")
            if plan is not None:
                details["kprobe_notes"] = plan.notes
                if no_fentry:
                    details["fentry"] = no_fentry
                return "kprobe", plan.describe(), None, details
        if self.per_packet == "kprobe":
            return "unavailable", None, f"per-packet kprobes requested but {no_kprobes or plan_error}", details
        why = no_kprobes or f"kprobes cannot be used: {plan_error}"
        if no_fentry:
            why = f"{no_fentry}; {why}"
        from netagent.probes.drops import DropSensor  # noqa: PLC0415 - BCC only when needed

        drops_status = DropSensor().check()
        if not drops_status.can_run:
            reason = f"{why}, and the drop sensor cannot run ({drops_status.reason}): counters only"
            if self.per_packet == "correlation":
                return "unavailable", None, reason, details
            return "off", None, reason, details
        reason = f"{why}: per-packet conntrack events by correlation with the drop sensor's NETFILTER_DROP"
        if self.per_packet == "correlation" and not no_kprobes:
            reason = "per-packet conntrack events by correlation with the drop sensor's NETFILTER_DROP (as configured)"
        return "correlation", CORRELATION_PATH.format(drops_status.attach_path), reason, details

    def _filter_netns(self) -> int:
        if self.watch_all or len(self._namespaces) != 1:
            return 0
        return next(iter(self._namespaces))

    def _function_plan(self, via: str) -> tuple["ProbePlan | None", str | None]:
        """(the plan, None) when `via` (fentry or kprobe) can probe conntrack here, else (None, why).
        A fentry plan is kept only once the kernel took a trampoline on __nf_conntrack_confirm
        (a do-nothing test program): no compile for a path this kernel refuses."""
        btf = conntrack_btf()
        if via == "fentry" and btf is not None:
            # the kernel's answer first: it costs a bpf(2) call, a plan reads /proc/kallsyms
            try:
                refused = fentry_refused_reason("__nf_conntrack_confirm", *btf.function_id("__nf_conntrack_confirm"))
            except BtfError as exc:
                refused = str(exc)
            if refused:
                return None, f"{PROBES_NAMED[via]} cannot be used: {refused}"
        try:
            plan = ProbePlan(btf=btf, via=via)
        except ProbeUnavailable as exc:
            return None, f"{PROBES_NAMED[via]} cannot be used: {exc}"
        self._plan = plan
        return plan, None

    def _attach_function_probes(self) -> str:
        require_bpf(f"attach the conntrack {PROBES_NAMED[self._plan.via if self._plan else 'kprobe']}")
        btf = conntrack_btf()
        if btf is None:
            raise ProbeUnavailable("the conntrack probes read struct offsets from BTF, and this kernel has none")
        plan = self._plan or ProbePlan(btf=btf)
        loaded = bpfchild.load(probes_spec(plan, build_macros(plan, offsets_of(btf), self._filter_netns())))
        if loaded.maps["flows_a"].key_size != CT_FLOW.size:
            loaded.close()
            raise ProbeUnavailable(f"conntrack.bpf.c flow key is {loaded.maps['flows_a'].key_size} bytes, "
                                   f"conntrack.py expects {CT_FLOW.size}")
        self._function_probes = loaded
        self._active = 0
        self._plan = plan
        return plan.describe()

    def _attach_correlation(self) -> str:
        from netagent.probes.drops import FEED, DropFilters, DropSensor  # noqa: PLC0415

        only = self._filter_netns()
        # the drop sensor of `netagent run` already sees every drop: take its flows
        # rather than loading a second program that every drop would pay for
        feed = FEED.subscribe(NETFILTER_DROP, netns=only)
        if feed is not None:
            self._feed = feed
            return CORRELATION_PATH.format(feed.attach_path)
        spec = self._namespaces[only].path if only else ""
        sensor = DropSensor(DropFilters(netns=spec, reasons=[NETFILTER_DROP]), interval=self.interval,
                            announce=self.announce)
        path = sensor.attach()
        self._drops = sensor
        return CORRELATION_PATH.format(path)

    def _drain_per_packet(self, now: float) -> list[dict]:
        if self._feed is not None:
            events = self._feed.take(now)
            if self._feed.gone:  # the drop sensor went (a reload turned it off): load our own
                self._feed_lost = self._feed.lost
                self._feed.close()
                self._feed = None
                try:
                    path = self._attach_correlation()
                    self.attach_path = COUNTERS_PATH + f" + {path}"
                    self.announce(f"conntrack: the drop sensor stopped; correlation now through {path}")
                except (ProbeUnavailable, InsufficientPrivilege) as exc:
                    self.per_packet_mode, self.attach_path = "off", COUNTERS_PATH
                    self.announce(f"conntrack: the drop sensor stopped and correlation failed ({exc}): "
                                  "counters only")
            return self._named(events)
        if self._drops is not None:
            return self._named(self._drops.poll())
        if self._function_probes is None:
            return []
        maps = self._function_probes.maps
        buffers = (maps["flows_a"], maps["flows_b"])
        old = buffers[self._active]
        self._active ^= 1
        # waits out every program still writing into the old buffer (an RCU grace period)
        maps["active_flows"].update(b"\0\0\0\0", buffers[self._active].fd.to_bytes(4, "little"))
        merged: dict = {}
        for raw_key, raw_val in old.drain():
            key = unpack_flow(raw_key)
            if key.netns not in self._namespaces and not self.watch_all:
                continue  # several namespaces named: keep theirs only
            count, first_ns, last_ns = CT_COUNT.unpack(raw_val)
            merge(merged, netns=key.netns, count=count, start=iso_timestamp(self._to_wall(first_ns)),
                  end=iso_timestamp(self._to_wall(last_ns)), extra_key=(key.kind,), **decode_flow(key))
        events = []
        for flow_key, flow in merged.items():
            ns = self._namespaces.get(flow.netns)
            events.append(render_flow(flow, flow_key[-1][0], netns_name=ns.name if ns else None, now=now,
                                      seen_by=self._plan.via if self._plan else "kprobe"))
        events.sort(key=lambda e: e["netagent"]["conntrack"]["count"], reverse=True)
        self._update_bpf_losses()
        return events

    @staticmethod
    def _named(events: list[dict]) -> list[dict]:
        # the drop sensor leaves interface names to the enrichment stage; the
        # correlation (per-flow "interfaces") needs them before that stage
        from netagent.enrich.processors import interface_namer  # noqa: PLC0415

        name = interface_namer()
        return [name(e) for e in events]

    def _update_bpf_losses(self):
        lost, hits = per_cpu_totals(self._function_probes.maps["lost"]), per_cpu_totals(self._function_probes.maps["hits"])
        self._lost_full = lost.get(0, 0)
        self._lost_context = lost.get(1, 0)
        # Returns now against entries one poll ago: a call that entered an
        # interval ago has long returned, so the difference is what kretprobes missed.
        missed = 0
        seen = {}
        for function, (entry, ret) in HIT_PAIRS.items():
            returns = hits.get(ret, 0)
            seen[function] = hits.get(entry, 0)
            if function in self._entries_seen and self._probes_return(function):
                missed += max(0, self._entries_seen[function] - returns)
        self._entries_seen = seen
        self._missed_returns = max(self._missed_returns, missed)

    def _probes_return(self, function: str) -> bool:
        return any(kind == "kretprobe" and fn == function for kind, fn, _ in (self._plan.probes if self._plan else []))


def zero_baseline(snap: Snapshot, monotonic: float, wall: float) -> Snapshot:
    """The counters as they were when the module loaded: all zero (its per-CPU
    statistics are allocated zeroed when a namespace's conntrack starts)."""
    table = snap.table
    zeros = StatTable(table.columns, tuple((0,) * len(table.columns) for _ in table.per_cpu), 0, table.header)
    return Snapshot(snap.netns, monotonic, wall, zeros, 0, snap.max)


def _btf_or_none():
    try:
        return kernel_btf()
    except BtfError:
        return None


def bcc_kprobe_type():
    """BPF.KPROBE, for tests that load the programs without attaching them."""
    return import_bcc().BPF.KPROBE
