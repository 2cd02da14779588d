"""The drop sensor: every kernel packet drop, its reason, counted exactly.

Attach path: the skb:kfree_skb tracepoint (its record layout and reason
names come from the tracefs format file; struct offsets from BTF). A kprobe
variant exists for kernels with kprobes whose tracepoint lacks the reason.
Drops are aggregated in the kernel per (netns, ifindex, reason, location,
L3/L4, addresses, ports) and flushed every interval by swapping two
buffers, which loses and double-counts nothing (see drops.bpf.c).
"""

import ctypes
import functools
import heapq
import ipaddress
import platform
import socket
import struct
import threading
import time
import typing
from dataclasses import dataclass, field

from netagent import netns as netns_mod
from netagent import bpfchild, bpfsys, gcpause
from netagent.bccloader import compile_program
from netagent.bpfinfo import prog_recursion_misses
from netagent import btf as btf_mod
from netagent import btfcache
from netagent.btf import BtfError, kernel_btf
from netagent.configschema import non_negative, one_of
from netagent.errors import ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.kallsyms import Symbolizer, shared_symbolizer
from netagent.nodefacts import kprobes_unavailable_reason
from netagent.privileges import require_bpf
from netagent.sensor import Sensor, SensorStatus
from netagent.timefmt import MonotonicToWall, iso_timestamp
from netagent.tracefs import TracepointFormat, ensure_tracefs, tracepoint_format

TRACEPOINT = ("skb", "kfree_skb")
ATTACH_TRACEPOINT = "tracepoint skb:kfree_skb"
ATTACH_RAW_TRACEPOINT = "raw_tracepoint skb:kfree_skb"
ATTACH_TP_BTF = "tp_btf skb:kfree_skb"
# --attach / [sensors.drops] attach: "auto" takes the first this kernel offers, in this order.
# tp_btf first: the cheapest per drop (plain loads from the BTF-typed sk_buff).
ATTACH_MODES = ("auto", "tp_btf", "raw_tracepoint", "tracepoint", "kprobe")
# Kernel functions a drop passes through, newest first: 6.11+ sk_skb_reason_drop(sk, skb, reason),
# 5.17-6.10 kfree_skb_reason(skb, reason).
KPROBE_FUNCTIONS = ("sk_skb_reason_drop", "kfree_skb_reason")
MAX_FLOWS = 10240
# Flows a poll reports as events of their own, the busiest first; the rest become one
# summary event per (namespace, interface, reason, kernel location, protocol) with their
# counts added up. A storm over 10k flows then costs hundreds of events a second, not
# ten thousand, in every stage after the sensor and in the SIEM; no drop goes uncounted.
FLOW_EVENTS = 500
# Per-CPU direct-mapped cache slots in front of the flow buffer (drops.bpf.c):
# a power of two. Flows in them count on top of MAX_FLOWS until the next poll.
CACHE_SLOTS = 64
MAX_REASONS = 1024
PROTO_CLASSES = {"tcp": 1, "udp": 2, "icmp": 3, "other": 4}
# handover_state values (drops.bpf.c), as the u32 the map holds
HANDOVER_NORMAL, HANDOVER_ARMED, HANDOVER_RETIRED, HANDOVER_STANDBY = (
    v.to_bytes(4, "little") for v in (0, 1, 2, 3))
_ZERO_KEY = b"\0\0\0\0"

# IANA protocol keywords, as ECS network.transport wants them.
TRANSPORT_NAMES = {1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre",
                   50: "esp", 51: "ah", 58: "ipv6-icmp", 132: "sctp"}
ETHERTYPE_NAMES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp", 0x8100: "vlan", 0x88CC: "lldp"}

# Where each struct field the program reads lives, by BTF name.
BTF_FIELDS = {
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_LEN": ("sk_buff", "len"),
    "OFF_SKB_PROTOCOL": ("sk_buff", "protocol"),
    "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "OFF_SKB_TRANSPORT_HEADER": ("sk_buff", "transport_header"),
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_SKB_SK": ("sk_buff", "sk"),
    "OFF_DEV_IFINDEX": ("net_device", "ifindex"),
    "OFF_DEV_NET": ("net_device", "nd_net.net"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_SK_NET": ("sock_common", "skc_net.net"),
}

# The tp_btf program reads packet headers with plain loads through bpf_rdonly_cast
# (Linux 6.2+), cast to a struct whose first member spans the header window
# (HDR_READ, 64 bytes); see rdonly_cast in drops.bpf.c. The placeholder helper
# number is rewritten into the kfunc call by the loader (bpfchild.link_kfuncs).
RDONLY_CAST = "bpf_rdonly_cast"
HEADER_WINDOW = ("new_utsname", "sysname", 64)  # struct, its first member, the bytes it must span
KFUNC_RDONLY_CAST = 0x6E61

CONFIG_SECTION = "drops"
CONFIG_SCHEMA = {
    "enabled": ("bool", True),
    "interval": ("duration", 1.0),
    "netns": ("str", ""),
    "reasons": ("list", []),
    "iface": ("str", ""),
    "proto": ("str", ""),
    "host": ("str", ""),
    "port": ("int", 0),
    "max_flows": ("int", MAX_FLOWS),
    # flows per interval reported one by one (the busiest); the rest summed up per reason and
    # place (netagent.drop.flows says how many); 0 = every flow an event of its own
    "flow_events": ("int", FLOW_EVENTS, non_negative),
    "attach": ("str", "auto", one_of(*ATTACH_MODES)),
}


@dataclass
class DropFilters:
    netns: str = ""  # name under /run/netns, path, or pid:N
    reasons: list[str] = field(default_factory=list)
    iface: str = ""
    proto: str = ""  # tcp | udp | icmp | other
    host: str = ""
    port: int = 0


def from_config(cfg: dict) -> "DropSensor":
    filters = DropFilters(cfg.get("netns", ""), list(cfg.get("reasons", [])), cfg.get("iface", ""),
                          cfg.get("proto", ""), cfg.get("host", ""), int(cfg.get("port", 0)))
    return DropSensor(filters, interval=cfg.get("interval", 1.0), max_flows=cfg.get("max_flows", MAX_FLOWS),
                      attach=cfg.get("attach", "auto"), flow_events=cfg.get("flow_events", FLOW_EVENTS))


# --- kernel facts ------------------------------------------------------------------

def reason_names(fmt: TracepointFormat | None) -> tuple[dict[int, str], str]:
    """Drop reason value -> name, and where the names came from.

    The tracepoint's own __print_symbolic list first; the BTF enum
    skb_drop_reason second. Never a table of ours: numbers differ by kernel.
    """
    if fmt is not None and fmt.symbolic.get("reason"):
        return dict(fmt.symbolic["reason"]), "tracefs format"
    try:
        raw = kernel_btf().enum("skb_drop_reason")
    except BtfError:
        return {}, "none"
    names = {}
    for value, name in raw.items():
        for prefix in ("SKB_DROP_REASON_", "SKB_"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        names[value] = name
    return names, "BTF enum skb_drop_reason"


def struct_offsets() -> tuple[dict[str, int], str]:
    """Macro -> byte offset for every field the program reads, from BTF (remembered per kernel)."""
    def compute():
        btf = kernel_btf()
        return {macro: btf.member_offset(s, m) for macro, (s, m) in BTF_FIELDS.items()}

    return btfcache.fact("drops.struct_offsets", compute), "BTF"


def header_cast_ids() -> tuple[int, int] | None:
    """(BTF id of bpf_rdonly_cast, BTF id of the header window struct), or None where this
    kernel lacks the kfunc (before 6.2) or the struct: the program then reads headers with
    bpf_probe_read_kernel, as on every other attach path."""
    def compute():
        btf = kernel_btf()
        struct, member, size = HEADER_WINDOW
        try:
            ids = [btf.vmlinux.find(RDONLY_CAST, btf_mod.FUNC), btf.vmlinux.find(struct, btf_mod.STRUCT)]
            if btf.member_offset(struct, member) != 0 or btf.member_size(struct, member) < size:
                return None
        except BtfError:
            return None
        return ids

    ids = btfcache.fact("drops.header_cast_ids", compute)
    return tuple(ids) if ids else None


def raw_tracepoint_positions() -> dict[str, int] | None:
    """ctx->args[] positions of skb, location and reason for the raw tracepoint, from BTF.

    None when the kernel has no BTF description of the tracepoint (then the
    classic tracepoint, whose record layout tracefs describes, is used).
    """
    try:
        args = btfcache.fact("drops.raw_tracepoint_args", lambda: kernel_btf().raw_tracepoint_args(TRACEPOINT[1]))
    except BtfError:
        return None
    if "struct sk_buff *" not in args or "void *" not in args:
        return None
    return {
        "RAW_ARG_SKB": args.index("struct sk_buff *"),
        "RAW_ARG_LOCATION": args.index("void *"),
        "RAW_ARG_REASON": args.index("enum skb_drop_reason") if "enum skb_drop_reason" in args else -1,
    }


def header_offsets_prelude() -> str:
    """Only for kernels without BTF: offsets from the installed headers."""
    lines = ["#include <linux/skbuff.h>", "#include <linux/netdevice.h>", "#include <net/sock.h>",
             "#include <net/net_namespace.h>"]
    exprs = {
        "OFF_SKB_HEAD": "offsetof(struct sk_buff, head)", "OFF_SKB_LEN": "offsetof(struct sk_buff, len)",
        "OFF_SKB_PROTOCOL": "offsetof(struct sk_buff, protocol)",
        "OFF_SKB_NETWORK_HEADER": "offsetof(struct sk_buff, network_header)",
        "OFF_SKB_TRANSPORT_HEADER": "offsetof(struct sk_buff, transport_header)",
        "OFF_SKB_DEV": "offsetof(struct sk_buff, dev)", "OFF_SKB_SK": "offsetof(struct sk_buff, sk)",
        "OFF_DEV_IFINDEX": "offsetof(struct net_device, ifindex)",
        "OFF_DEV_NET": "offsetof(struct net_device, nd_net)", "OFF_NET_INUM": "offsetof(struct net, ns.inum)",
        "OFF_SK_NET": "offsetof(struct sock_common, skc_net)",
    }
    lines += [f"#define {k} ({v})" for k, v in exprs.items()]
    return "\n".join(lines) + "\n"


def kprobe_target(symbolizer: Symbolizer) -> tuple[str, int] | None:
    """(function, 1-based skb argument position) for the kprobe variant, if the
    kernel has one. The position is the BTF prototype's where BTF describes the
    function; the program reads the reason right after the skb."""
    for function, default_skb_arg in zip(KPROBE_FUNCTIONS, (2, 1)):
        if symbolizer.has(function):
            try:
                params = kernel_btf().function_params(function)
            except BtfError:
                params = None
            if params and "skb" in params:
                return function, params.index("skb") + 1
            return function, default_skb_arg
    return None


def kprobes_available() -> bool:
    return kprobes_unavailable_reason() is None


# --- rendering -------------------------------------------------------------------

def _address(words, l3: int) -> str | None:
    """The address in a flow key: 16 bytes, or four u32 words (as the kernel stored them: network byte order)."""
    if isinstance(words, bytes):
        raw = words
    else:
        raw = bytes(words) if isinstance(words, ctypes.Array) else struct.pack("<4I", *words)
    if l3 == 0x0800:
        return _ntop(socket.AF_INET, raw[:4])
    if l3 == 0x86DD:
        return _ntop(socket.AF_INET6, raw)
    return None


@functools.lru_cache(maxsize=16384)
def _ntop(family: int, raw: bytes) -> str:
    # inet_ntop (C) and a cache: a storm renders ten thousand flows a second, mostly of few hosts
    return socket.inet_ntop(family, raw)


@functools.lru_cache(maxsize=4)
def _event_template(now: float | None) -> dict:
    """The fields every drop event of one poll shares (one poll renders thousands: each event
    copies these instead of building them anew)."""
    return new_event(dataset="netagent.drops", action="packet-dropped", kind="event", category=["network"],
                     type=["denied"], timestamp=now)


def _from_template(template: dict) -> dict:
    """A new event with the template's fields, sharing no dict or list with it or its siblings."""
    event = {name: (value.copy() if type(value) is dict else value) for name, value in template.items()}
    common = event["event"]
    common["category"], common["type"] = list(common["category"]), list(common["type"])
    return event


def render_flow(key, val, *, reasons: dict[int, str], has_reason: bool, symbolize, interface: str | None,
                netns_name: str | None, to_wall, now: float | None = None, flows: int = 0) -> dict:
    """One aggregated flow of one interval as an ECS event (schema: docs/SCHEMA.md).

    flows > 0: `key` stands for that many flows summed up (see summarize_flows), and the
    event carries no addresses or ports, only what the flows share."""
    reason_raw = int(key.reason)
    if not has_reason:
        reason = "UNKNOWN"
    else:
        reason = reasons.get(reason_raw) or f"UNKNOWN_{reason_raw}"
    l3, l4 = int(key.l3), int(key.l4)
    network: dict = {"type": ETHERTYPE_NAMES.get(l3, f"0x{l3:04x}" if l3 else "unknown")}
    source: dict = {}
    destination: dict = {}
    drop: dict = {
        "count": int(val.count),
        "bytes": int(val.bytes),
        "reason_raw": reason_raw,
        "location": symbolize(int(key.location)),
        "location_raw": f"{int(key.location):#x}",
        "interface": interface,
        "ifindex": int(key.ifindex),
        "netns": int(key.netns),
    }
    if netns_name:
        drop["netns_name"] = netns_name
    if flows:
        drop["flows"] = flows
    if l3 in (0x0800, 0x86DD):
        network["transport"] = TRANSPORT_NAMES.get(l4, str(l4))
        network["iana_number"] = str(l4)
        if not flows:  # one flow: its addresses and ports (a summary's flows have many)
            source["ip"] = _address(key.saddr, l3)
            destination["ip"] = _address(key.daddr, l3)
            if l4 in (6, 17, 132):
                source["port"] = int(key.sport)
                destination["port"] = int(key.dport)
            elif l4 in (1, 58):
                drop["icmp"] = {"type": int(key.sport), "code": int(key.dport)}
    # `now` None: stamped with this moment (a template per call); a poll passes its own time
    event = _from_template(_event_template(now) if now is not None else _event_template.__wrapped__(None))
    event["network"] = network
    event["netagent"] = {"drop": drop}
    event["event"]["reason"] = reason
    event["event"]["start"] = iso_timestamp(to_wall(int(val.first_ns)))
    event["event"]["end"] = iso_timestamp(to_wall(int(val.last_ns)))
    if source:
        event["source"] = source
        event["destination"] = destination
    return event


# --- the sensor --------------------------------------------------------------------

class DropSensor(Sensor):
    name = "drops"
    dataset = "netagent.drops"

    def __init__(self, filters: DropFilters | None = None, interval: float = 1.0, max_flows: int = MAX_FLOWS,
                 announce=None, attach: str = "auto", flow_events: int = FLOW_EVENTS):
        if attach not in ATTACH_MODES:
            raise UsageError(f"attach {attach!r}: choose from {', '.join(ATTACH_MODES)}")
        self.attach_mode = attach
        self.filters = filters or DropFilters()
        self.interval = interval
        self.max_flows = max_flows
        self.flow_events = flow_events  # 0: every flow an event
        self.announce = announce  # callable(str) for operator notes (stderr)
        self.attach_path: str | None = None
        self._loaded: bpfchild.LoadedProgram | None = None
        self._buffers = None
        self._active = 0
        self._drain_lock = threading.Lock()
        self._held: list[RawFlows] = []  # drained by flush_to_feed, for the next poll
        self._reasons: dict[int, str] = {}
        self._has_reason = True
        self._symbolizer = shared_symbolizer()
        self._to_wall = MonotonicToWall()
        self._overflow_seen = 0
        self._lost_map_full = 0
        self._lost_recursion = 0
        self.reason_source = ""
        self.offset_source = ""
        self._program: bytes | None = None
        self._raw_positions = raw_tracepoint_positions()

    # -- contract ---------------------------------------------------------------
    def check(self) -> SensorStatus:
        try:
            ensure_tracefs()
            fmt = tracepoint_format(*TRACEPOINT)
        except ProbeUnavailable as exc:
            fmt, tracepoint_error = None, str(exc)
        else:
            tracepoint_error = None
        details = {"attach": self.attach_mode, "attach_paths": self.attach_paths(fmt)}
        try:
            path = self._plan_attach(fmt)[0]
        except ProbeUnavailable as exc:
            return SensorStatus(self.name, False, None, str(exc), details)
        if fmt is None:
            return SensorStatus(self.name, True, path, f"tracepoint unusable: {tracepoint_error}", details)
        if not fmt.has_field("reason"):
            details["caveat"] = "tracepoint has no reason field (kernel < 5.17): reasons reported as UNKNOWN"
        try:
            struct_offsets()
            details["offsets"] = "BTF"
        except BtfError:
            details["offsets"] = "kernel headers (no BTF)"
        return SensorStatus(self.name, True, path, None, details)

    def _plan_attach(self, fmt: TracepointFormat | None, mode: str | None = None) -> tuple[str, bytes, str | None]:
        """(attach path, program, kprobe function or None) for `mode` (default:
        the configured one); ProbeUnavailable in one line when this kernel lacks it."""
        mode = mode or self.attach_mode
        no_tracepoint = "no skb:kfree_skb tracepoint in tracefs"
        if mode == "auto":
            for candidate in ATTACH_MODES[1:]:
                try:
                    return self._plan_attach(fmt, candidate)
                except ProbeUnavailable:
                    continue
            raise ProbeUnavailable(f"drop sensor: {no_tracepoint} and {self._kprobe_problem()}")
        if mode == "tp_btf":
            if fmt is None or not self._raw_positions:
                why = no_tracepoint if fmt is None else "no BTF description of the tracepoint (btf_trace_kfree_skb)"
                raise ProbeUnavailable(f"attach path tp_btf is not available on this kernel: {why}")
            return ATTACH_TP_BTF, b"on_kfree_skb_btf", None
        if mode == "raw_tracepoint":
            if fmt is None or not self._raw_positions:
                why = no_tracepoint if fmt is None else "no BTF description of the tracepoint (btf_trace_kfree_skb)"
                raise ProbeUnavailable(f"attach path raw_tracepoint is not available on this kernel: {why}")
            return ATTACH_RAW_TRACEPOINT, b"on_kfree_skb_raw", None
        if mode == "tracepoint":
            if fmt is None:
                raise ProbeUnavailable(f"attach path tracepoint is not available on this kernel: {no_tracepoint}")
            return ATTACH_TRACEPOINT, b"on_kfree_skb", None
        problem = self._kprobe_problem()
        if problem:
            raise ProbeUnavailable(f"attach path kprobe is not available on this kernel: {problem}")
        function = kprobe_target(self._symbolizer)[0]
        return f"kprobe {function}", b"kprobe_drop", function

    def _kprobe_problem(self) -> str | None:
        why = kprobes_unavailable_reason()
        if why:
            return why
        if _kprobe_return_from() == 0:
            return f"the drop location (return address) is not known for architecture {platform.machine()}"
        if kprobe_target(self._symbolizer) is None:
            return f"none of {', '.join(KPROBE_FUNCTIONS)} is in /proc/kallsyms"
        return None

    def attach_paths(self, fmt: TracepointFormat | None) -> dict[str, str]:
        """Each attach path by hand: the path it takes here, or why this kernel lacks it."""
        out = {}
        for mode in ATTACH_MODES[1:]:
            try:
                out[mode] = self._plan_attach(fmt, mode)[0]
            except ProbeUnavailable as exc:
                out[mode] = f"unavailable: {str(exc).split(': ', 1)[-1]}"
        return out

    def attach(self, predecessor: "DropSensor | None" = None) -> str:
        """Load and attach. With `predecessor` (a reload; see handover_state in
        drops.bpf.c), the predecessor must be armed: this program starts on
        standby and, once attached, skips every drop the predecessor counts,
        until the predecessor is retired."""
        require_bpf("attach the drop sensor")
        tracefs = ensure_tracefs(announce=self.announce)
        try:
            fmt = tracepoint_format(*TRACEPOINT, tracefs=tracefs)
        except ProbeUnavailable:
            fmt = None
        self._reasons, self.reason_source = reason_names(fmt)
        self._has_reason = fmt is not None and fmt.has_field("reason")
        wanted_reasons = self._reason_values()  # usage errors before any kernel work
        path, program, function = self._plan_attach(fmt)  # a path this kernel lacks: before compiling
        if function is not None:
            self._has_reason = True  # the kprobe reads the reason argument itself
        macros, prelude = self._build_macros(fmt)
        setup = [{"map": "active_flows", "key": 0, "map_fd": "flows_a"},
                 {"map": "active_cache", "key": 0, "map_fd": "cache_a"}]
        setup += [{"map": "reason_filter", "key": v, "value": "01"} for v in wanted_reasons if v < MAX_REASONS]
        if predecessor is not None:
            setup.append({"map": "handover_state", "key": 0, "value": HANDOVER_STANDBY.hex()})
        try:
            loaded = self._load(path, program, function, macros, prelude, setup)
        except ProbeUnavailable as refused:
            if program != b"on_kfree_skb_btf":
                raise
            loaded, error = None, refused
            if macros.get("HDR_CAST_BTF_ID") and "kernel function" in str(refused):
                # The verifier refused the kfunc call itself ("calling kernel function ... is
                # not allowed"): tp_btf with helper reads. Any other refusal would only repeat.
                macros = dict(macros, HDR_CAST_BTF_ID=0)
                try:
                    loaded = self._load(path, program, function, macros, prelude, setup)
                except ProbeUnavailable as exc:
                    error = exc
            if loaded is None:
                if self.attach_mode != "auto":
                    raise error from None
                # A kernel that describes the tracepoint in BTF but refuses tp_btf programs.
                path, program, function = self._plan_attach(fmt, "raw_tracepoint")
                loaded = self._load(path, program, function, macros, prelude, setup)
        self._loaded, self._active = loaded, 0
        self._buffers = ((loaded.maps["cache_a"], loaded.maps["flows_a"]),
                         (loaded.maps["cache_b"], loaded.maps["flows_b"]))
        self.attach_path, self._program = path, program
        if predecessor is not None:
            # the predecessor's notes first (the slot update waits for an RCU
            # grace period), then count: from here each drop is counted once
            marker = predecessor._loaded.maps["handover_marker"].fd
            loaded.maps["pred_marker"].update(_ZERO_KEY, marker.to_bytes(4, "little"))
            self._set_handover(HANDOVER_NORMAL)
        if self.filters == DropFilters():  # every drop: what it sees, it can pass on (FEED)
            FEED.add_publisher(self)
        return self.attach_path

    # -- reload hand-over (handover_state in drops.bpf.c) ----------------------------
    supports_handover = True

    def arm_handover(self) -> None:
        """Before a successor attaches: keep counting, and note each counted drop for it."""
        self._set_handover(HANDOVER_ARMED)

    def disarm_handover(self) -> None:
        """The successor could not attach: count as before."""
        self._set_handover(HANDOVER_NORMAL)

    def retire(self) -> None:
        """The successor counts from the next drop on; this program counts nothing more.
        Poll once more afterwards: the swap waits out a program still running."""
        self._set_handover(HANDOVER_RETIRED)

    def release_predecessor(self) -> None:
        """The retired predecessor has been polled for the last time: stop consulting its notes
        (before it is detached, so a stale note can never hide a later drop)."""
        if self._loaded is not None:
            try:
                self._loaded.maps["pred_marker"].delete(_ZERO_KEY)
            except OSError:
                pass  # no predecessor was set

    def _set_handover(self, state: bytes) -> None:
        if self._loaded is not None:
            self._loaded.maps["handover_state"].update(_ZERO_KEY, state)

    def _load(self, path, program, function, macros, prelude, setup) -> bpfchild.LoadedProgram:
        """Compile, load and attach in a child process (bpfchild.py); keep the descriptors."""
        kind = path.split()[0]
        target = {"tp_btf": TRACEPOINT[1], "raw_tracepoint": TRACEPOINT[1],
                  "tracepoint": ":".join(TRACEPOINT)}.get(kind, function)
        spec = bpfchild.ProgramSpec("drops", program.decode(), kind, target, macros, prelude,
                                    maps=["flows_a", "flows_b", "active_flows", "cache_a", "cache_b", "active_cache",
                                          "overflow", "handover_state",
                                          "handover_marker", "pred_marker"], setup=setup,
                                    attach_btf_id=self._tp_btf_id() if kind == "tp_btf" else 0,
                                    inner_maps={"pred_marker": "handover_marker"},
                                    kfuncs=self._kfuncs(macros) if kind == "tp_btf" else {})
        loaded = bpfchild.load(spec)
        if loaded.maps["flows_a"].key_size != ctypes.sizeof(FlowKey):
            loaded.close()
            raise ProbeUnavailable(f"drops.bpf.c flow key is {loaded.maps['flows_a'].key_size} bytes, "
                                   f"drops.py expects {ctypes.sizeof(FlowKey)}")
        return loaded

    @staticmethod
    def _kfuncs(macros: dict) -> dict:
        """The loader's placeholder -> kfunc BTF id, for a program built with `macros`."""
        ids = header_cast_ids() if macros.get("HDR_CAST_BTF_ID") else None
        return {str(KFUNC_RDONLY_CAST): ids[0]} if ids else {}

    @staticmethod
    def _tp_btf_id() -> int:
        try:
            return btfcache.fact("drops.tp_btf_id",
                                 lambda: kernel_btf().find(f"btf_trace_{TRACEPOINT[1]}", btf_mod.TYPEDEF))
        except BtfError as exc:
            raise ProbeUnavailable(f"attach path tp_btf: {exc}") from None

    def compile(self, fmt: TracepointFormat | None):
        """Compile drops.bpf.c for this kernel and these filters (no load, no attach)."""
        macros, prelude = self._build_macros(fmt)
        return compile_program("drops", macros, prelude)

    def poll(self) -> list[dict]:
        with gcpause.paused():  # thousands of acyclic events: no cycle hunt while building them
            with self._drain_lock:  # a reload's final poll may race the runner's: one drain at a time
                if self._loaded is None:
                    return []
                flows = self._swap_and_drain()
                FEED.publish(self, flows)
                if self._held:  # drained early for a FEED subscriber (flush_to_feed): this poll's too
                    flows = _merged(self._held + [flows])
                    self._held = []
            now = time.time()
            if self.flow_events and len(flows) > self.flow_events:
                events = self.render(*summarize_flows(flows, self.flow_events), now=now)
            else:
                events = self.render(unpacked(flows), now=now)
        events.sort(key=_drop_count, reverse=True)
        self._update_losses()
        return events

    def flush_to_feed(self) -> None:
        """Drain now and pass the flows on to FEED's subscribers (a subscriber about to
        take them wants them up to this moment); this sensor's next poll reports them."""
        with self._drain_lock:
            if self._loaded is None:
                return
            flows = self._swap_and_drain()
            FEED.publish(self, flows)
            self._held.append(flows)

    def render(self, flows: list[tuple["FlowTuple", "FlowTotals"]],
               summaries: list[tuple["FlowTuple", "FlowTotals", int]] = (), *, now: float) -> list[dict]:
        """Flows drained by this sensor (or passed on by FEED) as events, then summarize_flows'
        summaries (key, totals, number of flows) as one event each."""
        # interface and namespace names are filled in by the enrichment stage (netagent.enrich)
        common = dict(reasons=self._reasons, has_reason=self._has_reason, symbolize=self._symbolizer.symbolize,
                      interface=None, netns_name=None, to_wall=self._to_wall, now=now)
        return ([render_flow(key, val, **common) for key, val in flows]
                + [render_flow(key, val, flows=count, **common) for key, val, count in summaries])

    def detach(self) -> None:
        FEED.remove_publisher(self)
        if self._loaded is not None:
            try:
                self._loaded.close()  # closing the link detaches; the last fd frees program and maps
            finally:
                self._loaded = None
                self._buffers = None

    def losses(self) -> dict[str, int]:
        return {"kernel": self._lost_map_full + self._lost_recursion}

    def loss_details(self) -> dict[str, int]:
        return {"map_full": self._lost_map_full, "recursion": self._lost_recursion}

    # -- internals ----------------------------------------------------------------
    def valid_reasons(self) -> list[str]:
        if not self._reasons:
            try:
                fmt = tracepoint_format(*TRACEPOINT)
            except ProbeUnavailable:
                fmt = None
            self._reasons, self.reason_source = reason_names(fmt)
        return sorted(set(self._reasons.values()) - {"MAX"})

    def _reason_values(self) -> list[int]:
        by_name = {name: value for value, name in self._reasons.items()}
        wanted, unknown = [], []
        for name in self.filters.reasons:
            value = by_name.get(name.upper())
            (wanted if value is not None else unknown).append(value if value is not None else name)
        if unknown:
            raise UsageError(
                f"unknown drop reason {', '.join(unknown)}; this kernel's reasons: {', '.join(self.valid_reasons())}")
        return wanted

    def _build_macros(self, fmt: TracepointFormat | None) -> tuple[dict, str]:
        prelude = ""
        try:
            macros, self.offset_source = struct_offsets()
        except BtfError:
            macros, self.offset_source = {}, "kernel headers (no BTF)"
            prelude += header_offsets_prelude()
        if fmt is not None:
            prelude += fmt.c_struct("netagent_kfree_skb_args") + "\n"
            macros["HAVE_REASON"] = int(fmt.has_field("reason"))
        else:
            prelude += "struct netagent_kfree_skb_args { u64 skbaddr; u64 location; u32 reason; };\n"
            macros["HAVE_REASON"] = 0
        # Only where kprobes exist: finding the target reads kallsyms and BTF (a second or more).
        target = kprobe_target(self._symbolizer) if kprobes_available() else None
        macros["KPROBE_SKB_ARG"] = target[1] if target else 1
        if self._raw_positions:
            macros.update(self._raw_positions)
        macros["KPROBE_RETURN_FROM"] = _kprobe_return_from()
        cast = header_cast_ids() if self._raw_positions else None  # only the tp_btf program uses it
        macros["HDR_CAST_BTF_ID"] = cast[1] if cast else 0
        macros["KFUNC_RDONLY_CAST"] = KFUNC_RDONLY_CAST
        macros["USE_TICK_CLOCK"] = 1
        macros["MAX_FLOWS"] = self.max_flows
        macros["CACHE_SLOTS"] = CACHE_SLOTS
        macros["MAX_REASONS"] = MAX_REASONS
        macros.update(self._filter_macros())
        return macros, prelude

    def _filter_macros(self) -> dict:
        f = self.filters
        m = {"FILTER_NETNS": 0, "FILTER_IFINDEX": 0, "FILTER_PROTO_CLASS": 0, "FILTER_PORT": 0,
             "FILTER_HOST_FAMILY": 0, "FILTER_REASONS": int(bool(f.reasons))}
        ns = None
        if f.netns:
            ns = netns_mod.resolve(f.netns)
            m["FILTER_NETNS"] = ns.inode
        if f.iface:
            ns = ns or netns_mod.current()
            names = {name: idx for idx, name in netns_mod.interface_names(ns).items()}
            if f.iface not in names:
                raise UsageError(f"--iface {f.iface!r}: no such interface in namespace {ns.name} "
                                 f"(have: {', '.join(sorted(names))})")
            m["FILTER_IFINDEX"] = names[f.iface]
            m["FILTER_NETNS"] = ns.inode
        if f.proto:
            if f.proto not in PROTO_CLASSES:
                raise UsageError(f"--proto {f.proto!r}: choose from {', '.join(PROTO_CLASSES)}")
            m["FILTER_PROTO_CLASS"] = PROTO_CLASSES[f.proto]
        if f.port:
            if not 0 < f.port < 65536:
                raise UsageError(f"--port {f.port}: must be 1-65535")
            m["FILTER_PORT"] = f.port
        if f.host:
            try:
                addr = ipaddress.ip_address(f.host)
            except ValueError:
                raise UsageError(f"--host {f.host!r}: not an IPv4 or IPv6 address") from None
            packed = addr.packed.ljust(16, b"\0")
            m["FILTER_HOST_FAMILY"] = addr.version
            for i in range(4):
                m[f"FILTER_HOST_W{i}"] = f"{int.from_bytes(packed[4 * i:4 * i + 4], 'little')}U"
        for i in range(4):
            m.setdefault(f"FILTER_HOST_W{i}", "0U")
        return m

    def _swap_and_drain(self) -> "RawFlows":
        """Point the program at the other cache and buffer, then empty the old ones.

        The update of an array-of-maps slot returns only after an RCU grace
        period, i.e. after every program that could still be writing into the
        old map has finished. The cache swaps first: a program that saw the
        old cache ends before the buffers swap, so what it pushes out of the
        cache lands in the old buffer. Reading then clearing both is exact.
        The buffer drains in one batch call; per-CPU copies are merged here.
        The keys stay packed (RawFlows): a storm drains ten thousand flows a poll
        and only a few hundred are ever unpacked (summarize_flows).
        """
        old_cache, old_flows = self._buffers[self._active]
        self._active ^= 1
        new_cache, new_flows = self._buffers[self._active]
        self._loaded.maps["active_cache"].update(_ZERO_KEY, new_cache.fd.to_bytes(4, "little"))
        self._loaded.maps["active_flows"].update(_ZERO_KEY, new_flows.fd.to_bytes(4, "little"))
        flows: RawFlows = {}
        key_size, stride, cpus = old_flows.key_size, old_flows.stride, old_flows.cpus
        for keys, values, count in old_flows.drain_blocks():
            # each key once (a hash map): its per-CPU copies add up; no bytes object per copy
            copies = _FLOW_VAL.iter_unpack(values) if stride == _FLOW_VAL.size else (
                _FLOW_VAL.unpack_from(values, i * stride) for i in range(count * cpus))
            for i, per_cpu in enumerate(zip(*[copies] * cpus)):
                # most flows are seen by one CPU in an interval: a copy, not a merge, for those
                total = None
                for copy in per_cpu:
                    if copy[0]:
                        if total is None:
                            total = list(copy)
                        else:
                            _merge(total, copy)
                if total is not None:
                    flows[keys[i * key_size:(i + 1) * key_size]] = total
        zeros = bytes(old_cache.value_bytes)
        for index, value in old_cache.read_all():  # one call for all slots; only used ones are cleared
            if not any(value):
                continue
            for copy in old_cache.per_cpu_values(value):
                val = _FLOW_VAL.unpack_from(copy, key_size)
                if val[0]:
                    key = copy[:key_size]
                    total = flows.get(key)
                    if total is None:
                        flows[key] = total = [0, 0, 0, 0]
                    _merge(total, val)
            old_cache.update(index, zeros)
        return flows

    def _update_losses(self) -> None:
        raw = self._loaded.maps["overflow"].lookup(b"\0\0\0\0")
        if raw is not None:
            self._lost_map_full = sum_per_cpu(self._loaded.maps["overflow"].per_cpu_values(raw)).count
        misses = prog_recursion_misses(self._loaded.prog_fd)
        if misses is not None:
            self._lost_recursion = misses

    @property
    def prog_fd(self) -> int | None:
        """The loaded program's descriptor (benchmarks read its run-time statistics)."""
        return self._loaded.prog_fd if self._loaded is not None else None


class FlowKey(ctypes.Structure):
    """struct flow_key of drops.bpf.c (checked against the map's key size at attach)."""

    _fields_ = [("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("reason", ctypes.c_uint32),
                ("l3", ctypes.c_uint16), ("l4", ctypes.c_uint8), ("pad", ctypes.c_uint8),
                ("location", ctypes.c_uint64), ("saddr", ctypes.c_uint32 * 4), ("daddr", ctypes.c_uint32 * 4),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16), ("pad2", ctypes.c_uint32)]


class FlowVal(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("bytes", ctypes.c_uint64), ("first_ns", ctypes.c_uint64),
                ("last_ns", ctypes.c_uint64)]


# struct flow_key / struct flow_val as struct formats: a poll unpacks thousands of them
# (checked against the ctypes layouts above at import).
_FLOW_KEY = struct.Struct("=IIIHBxQ16s16sHH4x")
_FLOW_VAL = struct.Struct("=QQQQ")
# The head of a packed flow_key: netns, ifindex, reason, l3, l4, (pad), location; what a
# summary keeps of its flows, and what a FEED subscription filters on.
_FLOW_PLACE = struct.Struct("=IIIHBxQ")
assert _FLOW_KEY.size == ctypes.sizeof(FlowKey) and _FLOW_VAL.size == ctypes.sizeof(FlowVal)


class FlowTuple(typing.NamedTuple):
    """One flow key, unpacked (addresses as 16 raw bytes)."""

    netns: int
    ifindex: int
    reason: int
    l3: int
    l4: int
    location: int
    saddr: bytes
    daddr: bytes
    sport: int
    dport: int

    def pack(self) -> bytes:
        """As the kernel keys the flow (a RawFlows key)."""
        return _FLOW_KEY.pack(*self)


class FlowTotals(typing.NamedTuple):
    count: int
    bytes: int
    first_ns: int
    last_ns: int


def _merge(total: list[int], val) -> None:
    """Add one per-CPU copy (or cache slot) (count, bytes, first_ns, last_ns) of a flow:
    counts add up; the earliest first time and the latest last time of the copies that
    saw it (a zero first time = a copy that never did)."""
    count, nbytes, first, last = val
    if not count:
        return
    total[0] += count
    total[1] += nbytes
    if first and (not total[2] or first < total[2]):
        total[2] = first
    if last > total[3]:
        total[3] = last


# Drained flows as the kernel keyed them: packed struct flow_key -> [count, bytes, first_ns, last_ns].
RawFlows = dict[bytes, list[int]]


def unpacked(flows: RawFlows) -> list[tuple[FlowTuple, FlowTotals]]:
    return [(FlowTuple._make(_FLOW_KEY.unpack(k)), FlowTotals._make(v)) for k, v in flows.items()]


def _merged(parts: list[RawFlows]) -> RawFlows:
    """Flows drained at different times, one per key (_merge's rules); the parts stay as they were."""
    totals: RawFlows = {}
    for part in parts:
        for key, val in part.items():
            total = totals.get(key)
            if total is None:
                totals[key] = list(val)
            else:
                _merge(total, val)
    return totals


def summarize_flows(flows: RawFlows, keep: int
                    ) -> tuple[list[tuple[FlowTuple, FlowTotals]], list[tuple[FlowTuple, FlowTotals, int]]]:
    """The `keep` flows with the most drops, unpacked, and the others summed up per
    (namespace, interface, reason, kernel location, L3, L4): (key with no addresses or
    ports, totals, number of flows). Counts and bytes add up, first and last times span
    the group's, so the events of one poll still add up to every drop it drained. Only the
    kept flows and one key head per group are unpacked: the rest are grouped by their
    packed head, which costs a slice per flow."""
    busiest = heapq.nlargest(keep, flows.items(), key=_flow_count)
    kept = {key for key, _ in busiest}
    head = _FLOW_PLACE.size
    groups: dict[bytes, list[int]] = {}
    for key, val in flows.items():
        if key in kept:
            continue
        place = key[:head]
        total = groups.get(place)
        if total is None:
            groups[place] = [*val, 1]
        else:
            _merge(total, val)
            total[4] += 1
    summaries = [(FlowTuple(*_FLOW_PLACE.unpack(place), _NO_ADDRESS, _NO_ADDRESS, 0, 0), FlowTotals(*total[:4]),
                  total[4])
                 for place, total in groups.items()]
    return unpacked(dict(busiest)), summaries


_NO_ADDRESS = bytes(16)


def _flow_count(flow: tuple[bytes, list[int]]) -> int:
    return flow[1][0]


def sum_per_cpu(copies: list[bytes]) -> FlowTotals:
    """The per-CPU copies of one value added up (_merge's rules)."""
    total = [0, 0, 0, 0]
    for raw in copies:
        _merge(total, _FLOW_VAL.unpack_from(raw))
    return FlowTotals._make(total)


class FlowFeed:
    """The flows of this process's unfiltered drop sensors, passed on to a consumer
    that would otherwise load a second kfree_skb program of its own.

    The conntrack sensor, on kernels without kprobes, joins NETFILTER_DROP flows
    to its counter rises; when `netagent run` runs the drop sensor too, every
    drop would pay for two programs. Instead the drop sensor, each time it
    drains its buffers, hands the flows to subscriptions here (FlowSubscription:
    one reason, optionally one namespace), which add them up until their owner
    takes them. Exactness: a reload's successor and predecessor hand over
    between two drops (drops.bpf.c handover_state), so the flows both publish
    are each counted once; a subscription that outgrows its bound counts what it
    could not keep. When the last publisher detaches, subscriptions learn it
    (`gone`) and their owner loads its own program.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._publishers: list[DropSensor] = []
        self._subscriptions: list[FlowSubscription] = []

    def _publishing(self, sensor) -> bool:
        return any(p is sensor for p in self._publishers)  # by identity: sensors never compare equal

    def add_publisher(self, sensor: "DropSensor") -> None:
        with self._lock:
            if not self._publishing(sensor):
                self._publishers.append(sensor)

    def remove_publisher(self, sensor: "DropSensor") -> None:
        with self._lock:
            self._publishers = [p for p in self._publishers if p is not sensor]
            if not self._publishers:
                for sub in self._subscriptions:
                    sub.gone = True

    def subscribe(self, reason_name: str, netns: int = 0, max_flows: int = MAX_FLOWS) -> "FlowSubscription | None":
        """A subscription to the flows of drop reason `reason_name` (in namespace inode
        `netns`, 0 = all), or None when no unfiltered drop sensor is attached here."""
        with self._lock:
            if not self._publishers:
                return None
            sensor = self._publishers[-1]
            value = next((v for v, name in sensor._reasons.items() if name == reason_name), None)
            if value is None:
                return None
            sub = FlowSubscription(self, sensor, value, netns, max_flows)
            self._subscriptions.append(sub)
            return sub

    def unsubscribe(self, sub: "FlowSubscription") -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def flush(self) -> None:
        """Every publisher drains now (DropSensor.flush_to_feed)."""
        with self._lock:
            publishers = list(self._publishers)
        for sensor in publishers:
            sensor.flush_to_feed()

    def publish(self, sensor: "DropSensor", flows: "RawFlows") -> None:
        with self._lock:
            if not self._publishing(sensor):
                return
            subs = list(self._subscriptions)
        for sub in subs:
            sub.add(flows)


class FlowSubscription:
    """Flows of one reason (and namespace) added up between two take() calls."""

    def __init__(self, feed: FlowFeed, sensor: "DropSensor", reason: int, netns: int, max_flows: int):
        self._feed, self.sensor, self.reason, self.netns, self.max_flows = feed, sensor, reason, netns, max_flows
        self._lock = threading.Lock()
        self._flows: RawFlows = {}
        self.lost = 0  # drops of flows past max_flows, counted, not kept
        self.gone = False  # no drop sensor publishes any more: nothing will arrive

    @property
    def attach_path(self) -> str:
        return f"{self.sensor.attach_path}, shared with the drop sensor"

    def add(self, flows: "RawFlows") -> None:
        with self._lock:
            for key, val in flows.items():
                netns, _ifindex, reason, *_ = _FLOW_PLACE.unpack_from(key)
                if reason != self.reason or (self.netns and netns != self.netns):
                    continue
                total = self._flows.get(key)
                if total is None:
                    if len(self._flows) >= self.max_flows:
                        self.lost += val[0]
                        continue
                    self._flows[key] = total = [0, 0, 0, 0]
                _merge(total, val)

    def take(self, now: float) -> list[dict]:
        """The flows up to now since the last take, as drop events."""
        self._feed.flush()
        with self._lock:
            flows, self._flows = self._flows, {}
        return self.sensor.render(unpacked(flows), now=now)

    def close(self) -> None:
        self._feed.unsubscribe(self)


FEED = FlowFeed()


def _drop_count(event: dict) -> int:
    return event["netagent"]["drop"]["count"]


def _kprobe_return_from() -> int:
    """KPROBE_RETURN_FROM for drops.bpf.c: where this architecture keeps a
    kprobed function's return address; 0 = unknown (kprobe path refused)."""
    try:
        where = bpfsys.current_arch().kprobe_return
    except ProbeUnavailable:
        return 0
    if where == "stack":
        return 1
    if where == "lr":
        return 2 if platform.machine() == "aarch64" else 3
    return 0
