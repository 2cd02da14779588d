// netagent drop sensor: every kernel packet drop (skb:kfree_skb), aggregated
// in the kernel per flow and reason.
//
// Struct offsets are NOT taken from kernel headers (the installed headers
// may be of another kernel version). User space reads them from the running
// kernel's BTF and passes them as macros:
//   OFF_SKB_HEAD OFF_SKB_LEN OFF_SKB_PROTOCOL OFF_SKB_NETWORK_HEADER
//   OFF_SKB_TRANSPORT_HEADER OFF_SKB_DEV OFF_SKB_SK
//   OFF_DEV_IFINDEX OFF_DEV_NET OFF_NET_INUM OFF_SK_NET
// The tracepoint record layout (struct netagent_kfree_skb_args) is generated
// from the tracefs format file and prepended to this source; HAVE_REASON and
// HAVE_RX_SK say which optional fields that kernel's record has.
//
// Filters (0 / -1 = off): FILTER_NETNS FILTER_IFINDEX FILTER_PROTO_CLASS
// FILTER_PORT FILTER_HOST_FAMILY FILTER_HOST_W0..W3 FILTER_REASONS.
//
// Cost per drop is what this program is judged by (bench/drop_cost_bench.py):
// a per-CPU hash (no atomic adds, no shared cache lines), a coarse clock,
// one read of the packet headers, and on the tp_btf path plain loads from
// the BTF-typed sk_buff instead of one helper call per field (and, from
// Linux 6.2, from the packet headers too: see rdonly_cast).

#include <uapi/linux/ptrace.h>

#define ETH_P_IP_BE   0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86   /* htons(0x86DD) */
#define HDR_UNSET     0xFFFF

#ifndef MAX_FLOWS
#define MAX_FLOWS 10240
#endif
#ifndef MAX_REASONS
#define MAX_REASONS 1024
#endif

struct flow_key {
    u32 netns;
    u32 ifindex;
    u32 reason;
    u16 l3;          /* ethertype, host order; 0 = unknown */
    u8  l4;          /* IPPROTO_*, 0 when not IP */
    u8  pad;
    u64 location;
    u32 saddr[4];
    u32 daddr[4];
    u16 sport;       /* host order; ICMP: type */
    u16 dport;       /* host order; ICMP: code */
    u32 pad2;
};

struct flow_val {
    u64 count;
    u64 bytes;
    u64 first_ns;
    u64 last_ns;
};

// Two buffers swapped by user space through a one-slot array of maps.
// Replacing the slot from user space waits for an RCU grace period
// (maybe_wait_bpf_programs() in kernel/bpf/syscall.c), so once the swap
// returns no program still writes into the old buffer: it can be read and
// cleared without losing or double-counting a single increment.
// Per-CPU values: each CPU adds to its own copy with plain stores; user
// space sums the copies (count, bytes) and takes the earliest first_ns and
// the latest last_ns. A copy a CPU never wrote stays zero.
BPF_TABLE("percpu_hash", struct flow_key, struct flow_val, flows_a, MAX_FLOWS);
BPF_TABLE("percpu_hash", struct flow_key, struct flow_val, flows_b, MAX_FLOWS);
BPF_ARRAY_OF_MAPS(active_flows, "flows_a", 1);

// In front of each buffer, a small direct-mapped per-CPU cache of the flows
// seen last: a hit (consecutive drops of one flow, the common case in a
// storm) costs an array index and a key compare instead of a hash of the
// 64-byte key. A flow pushed out of its slot is added to the hash buffer.
// The caches swap with the buffers (active_cache first, then active_flows:
// a program that saw the old cache ends before the buffers swap, so what it
// pushes out lands in the old buffer, which user space drains after both).
#ifndef CACHE_SLOTS
#define CACHE_SLOTS 64   /* a power of two */
#endif
struct flow_slot {
    struct flow_key key;
    struct flow_val val;   /* count == 0: empty */
};
BPF_PERCPU_ARRAY(cache_a, struct flow_slot, CACHE_SLOTS);
BPF_PERCPU_ARRAY(cache_b, struct flow_slot, CACHE_SLOTS);
BPF_ARRAY_OF_MAPS(active_cache, "cache_a", 1);

// Drops that matched the filters but found the buffer full: counted, never silent.
BPF_PERCPU_ARRAY(overflow, struct flow_val, 1);
// Reasons selected by --reason (FILTER_REASONS=1): 1 = keep.
BPF_ARRAY(reason_filter, u8, MAX_REASONS);

// Hand-over on a configuration reload (netagent.daemon): the running program
// (the predecessor) and its successor are both attached for a moment, and
// every drop must be counted by exactly one of them. Programs on one hook run
// one after the other for each drop, in attach order, so the predecessor
// always sees a drop first. handover_state of a program:
//   0 normal;
//   1 armed (predecessor): count, and note the counted skb in handover_marker;
//   2 retired (predecessor): count nothing, clear the note;
//   3 standby (successor, attached but not yet given pred_marker): count nothing.
// A successor whose pred_marker slot holds the predecessor's handover_marker
// skips the drop its predecessor noted just before. So the counting moves
// from one program to the other between two drops, when user space switches
// the predecessor from 1 to 2: no gap, no drop counted twice.
BPF_ARRAY(handover_state, u32, 1);
BPF_PERCPU_ARRAY(handover_marker, u64, 1);
BPF_ARRAY_OF_MAPS(pred_marker, "handover_marker", 1);

// The clock of first_ns/last_ns: bpf_ktime_get_ns at most once per jiffy
// per CPU. It costs ~70 ns on virtual machines, reading jiffies costs ~2;
// an aggregate's first and last time need no finer grain than a tick.
// (bpf_ktime_get_coarse_ns would do, but tracing programs may not call it.)
struct clock_cache {
    u64 jiffies;
    u64 ns;
};
BPF_PERCPU_ARRAY(clock_cache, struct clock_cache, 1);

static __always_inline u64 tick_now(void)
{
#if USE_TICK_CLOCK
    int zero = 0;
    struct clock_cache *c = clock_cache.lookup(&zero);
    u64 j = bpf_jiffies64();
    if (!c)
        return bpf_ktime_get_ns();
    if (c->jiffies != j) {
        c->jiffies = j;
        c->ns = bpf_ktime_get_ns();
    }
    return c->ns;
#else
    return bpf_ktime_get_ns();
#endif
}

// A field of a kernel struct: a plain load where the verifier knows the
// pointer's BTF type (tp_btf: `direct` = 1), a bpf_probe_read_kernel otherwise.
// `direct` is a constant at every call site, so each program keeps one branch.
#define FIELD(type, base, off, direct) \
    ((direct) ? *(const volatile type *)((const char *)(base) + (off)) : read_##type((base), (off)))

static __always_inline u32 netns_of(const void *skb, const void *dev, const int direct)
{
    // Each return loads through a pointer straight from the load before it:
    // a pointer merged from two paths (dev's or the socket's namespace)
    // loses its BTF type in the verifier's eyes, and a plain load from it
    // is refused.
    const void *net;
    if (dev) {
        net = (const void *)FIELD(u64, dev, OFF_DEV_NET, direct);
        return net ? FIELD(u32, net, OFF_NET_INUM, direct) : 0;
    }
    const void *sk = (const void *)FIELD(u64, skb, OFF_SKB_SK, direct);
    if (!sk)
        return 0;
    net = (const void *)FIELD(u64, sk, OFF_SK_NET, direct);
    return net ? FIELD(u32, net, OFF_NET_INUM, direct) : 0;
}

// The kfunc bpf_rdonly_cast(address, btf_id) (Linux 6.2+) gives a kernel address
// the BTF type btf_id, so the verifier lets the program read it with plain
// loads, each guarded against a fault (a read from a bad address yields 0, as
// bpf_probe_read_kernel would fail). The verifier turns the call itself into
// a register move: it costs nothing. BCC cannot emit a kfunc call, so the
// program calls the placeholder helper number KFUNC_RDONLY_CAST, which the
// loader (bpfchild.py, tp_btf only) rewrites into a call of the kfunc by its
// BTF id. HDR_CAST_BTF_ID: a vmlinux struct of at least HDR_READ bytes whose
// first member covers them (struct new_utsname, char sysname[65]), since the
// verifier checks each load against the type's layout; 0 = no kfunc here.
// Both come from drops.py.
#ifndef HDR_CAST_BTF_ID
#define HDR_CAST_BTF_ID 0
#endif
#if HDR_CAST_BTF_ID
static void *(*rdonly_cast)(const void *address, u32 btf_id) = (void *)KFUNC_RDONLY_CAST;
#endif

// Bytes read from the network header on: a whole IPv6 header (40) or an
// IPv4 header with options, plus the first 4 bytes of the transport header
// (ports, ICMP type/code). A power of two, so a mask bounds the index for
// the verifier; the buffer has 4 spare bytes for the last index.
#define HDR_READ 64

static __always_inline void parse_headers(const void *skb, struct flow_key *key, const int direct)
{
    const unsigned char *head = (const unsigned char *)FIELD(u64, skb, OFF_SKB_HEAD, direct);
    u16 nh = FIELD(u16, skb, OFF_SKB_NETWORK_HEADER, direct);
    u16 th = FIELD(u16, skb, OFF_SKB_TRANSPORT_HEADER, direct);
    u16 proto_be = FIELD(u16, skb, OFF_SKB_PROTOCOL, direct);
    u32 l4off;
    u8 hdr[HDR_READ + 4];

    if (!head || nh == HDR_UNSET)
        return;
    // One read covers the fixed IPv4 or IPv6 header and, usually, the ports.
#if HDR_CAST_BTF_ID
    if (direct) {
        // Eight plain loads instead of a helper call (about 70 ns of the
        // program's ~170 on this machine): see rdonly_cast above.
        const u64 *words = rdonly_cast(head + nh, HDR_CAST_BTF_ID);
#pragma unroll
        for (int w = 0; w < HDR_READ / 8; w++)
            ((u64 *)hdr)[w] = words[w];
    } else
#endif
    if (bpf_probe_read_kernel(hdr, HDR_READ, head + nh) < 0)
        return;
    *(u32 *)&hdr[HDR_READ] = 0;
    u8 version = hdr[0] >> 4;
    // skb->protocol is unset on some local output paths: trust the IP version nibble then.
    if (proto_be == ETH_P_IP_BE || (proto_be == 0 && version == 4)) {
        key->l3 = 0x0800;
        key->l4 = hdr[9];
        __builtin_memcpy(&key->saddr[0], &hdr[12], 4);
        __builtin_memcpy(&key->daddr[0], &hdr[16], 4);
        l4off = (th != HDR_UNSET && th > nh) ? (u32)(th - nh) : (u32)(hdr[0] & 0x0F) * 4;
    } else if (proto_be == ETH_P_IPV6_BE || (proto_be == 0 && version == 6)) {
        key->l3 = 0x86DD;
        key->l4 = hdr[6];
        __builtin_memcpy(&key->saddr[0], &hdr[8], 16);
        __builtin_memcpy(&key->daddr[0], &hdr[24], 16);
        l4off = (th != HDR_UNSET && th > nh) ? (u32)(th - nh) : 40;
    } else {
        key->l3 = (proto_be >> 8) | ((proto_be & 0xFF) << 8);
        return;
    }
    if (key->l4 != 6 && key->l4 != 17 && key->l4 != 132 && key->l4 != 1 && key->l4 != 58)
        return;
    u8 b[4] = {};
    if (l4off <= HDR_READ - 4) {
        u32 i = l4off;
        asm volatile("" : "+r"(i));   /* keep the mask below: the verifier needs it */
        i &= HDR_READ - 1;
        b[0] = hdr[i];
        b[1] = hdr[i + 1];
        b[2] = hdr[i + 2];
        b[3] = hdr[i + 3];
    } else {
        // IPv4 options or extension headers push the transport header past the first read.
        bpf_probe_read_kernel(b, sizeof(b), head + nh + l4off);
    }
    if (key->l4 == 1 || key->l4 == 58) {                      /* ICMP, ICMPv6: type, code */
        key->sport = b[0];
        key->dport = b[1];
    } else {                                                   /* TCP, UDP, SCTP: ports */
        key->sport = ((u16)b[0] << 8) | b[1];
        key->dport = ((u16)b[2] << 8) | b[3];
    }
}

static __always_inline int proto_class(u8 l4)
{
    if (l4 == 6) return 1;
    if (l4 == 17) return 2;
    if (l4 == 1 || l4 == 58) return 3;
    return 4;
}

static __always_inline int host_matches(const struct flow_key *key)
{
#if FILTER_HOST_FAMILY == 4
    return key->l3 == 0x0800 && (key->saddr[0] == FILTER_HOST_W0 || key->daddr[0] == FILTER_HOST_W0);
#elif FILTER_HOST_FAMILY == 6
    if (key->l3 != 0x86DD)
        return 0;
    return (key->saddr[0] == FILTER_HOST_W0 && key->saddr[1] == FILTER_HOST_W1 &&
            key->saddr[2] == FILTER_HOST_W2 && key->saddr[3] == FILTER_HOST_W3) ||
           (key->daddr[0] == FILTER_HOST_W0 && key->daddr[1] == FILTER_HOST_W1 &&
            key->daddr[2] == FILTER_HOST_W2 && key->daddr[3] == FILTER_HOST_W3);
#else
    return 1;
#endif
}

static __always_inline u32 slot_index(const struct flow_key *k)
{
    u32 h = k->netns ^ k->ifindex ^ k->reason ^ (u32)k->location ^ k->saddr[0] ^ k->saddr[3] ^
            k->daddr[0] ^ k->daddr[3] ^ (((u32)k->sport << 16) | k->dport) ^ k->l4;
    return (h * 0x9E3779B1u) >> 24 & (CACHE_SLOTS - 1);
}

static __always_inline int same_key(const struct flow_key *a, const struct flow_key *b)
{
    const u64 *x = (const u64 *)a, *y = (const u64 *)b;
#pragma unroll
    for (int i = 0; i < sizeof(struct flow_key) / 8; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

// Add a cache slot's counts to this CPU's copy of the flow in the active buffer.
static __always_inline void push_out(const struct flow_slot *slot)
{
    int zero = 0;
    void *flows = active_flows.lookup(&zero);
    if (!flows)
        return;
    struct flow_val *val = bpf_map_lookup_elem(flows, (void *)&slot->key);
    if (!val) {
        if (bpf_map_update_elem(flows, (void *)&slot->key, (void *)&slot->val, BPF_NOEXIST) == 0)
            return;
        // -EEXIST: another CPU inserted the same flow just now; our copy is zero.
        val = bpf_map_lookup_elem(flows, (void *)&slot->key);
        if (!val) {
            struct flow_val *lost = overflow.lookup(&zero);
            if (lost) {
                lost->count += slot->val.count;
                lost->bytes += slot->val.bytes;
                lost->last_ns = slot->val.last_ns;
            }
            return;
        }
    }
    if (!val->first_ns || slot->val.first_ns < val->first_ns)
        val->first_ns = slot->val.first_ns;
    val->count += slot->val.count;
    val->bytes += slot->val.bytes;
    if (slot->val.last_ns > val->last_ns)
        val->last_ns = slot->val.last_ns;
}

static __always_inline int record_drop(const void *skb, u64 location, u32 reason, const int direct)
{
    struct flow_key key = {};
    int zero = 0;

    if (!skb)
        return 0;
    u32 *state = handover_state.lookup(&zero);
    u32 handover = state ? *state : 0;
    if (handover) {
        if (handover == 3)
            return 0;
        u64 *note = handover_marker.lookup(&zero);
        if (note)
            *note = 0;
        if (handover == 2)
            return 0;
    }
    void *pred = pred_marker.lookup(&zero);
    if (pred) {
        u64 *noted = bpf_map_lookup_elem(pred, &zero);
        if (noted && *noted == (u64)skb)
            return 0;  // the predecessor counted this drop
    }
#if FILTER_REASONS
    {
        u32 idx = reason;
        u8 *keep = reason_filter.lookup(&idx);
        if (!keep || !*keep)
            return 0;
    }
#endif
    const void *dev = (const void *)FIELD(u64, skb, OFF_SKB_DEV, direct);
    key.netns = netns_of(skb, dev, direct);
#if FILTER_NETNS
    if (key.netns != FILTER_NETNS)
        return 0;
#endif
    key.ifindex = dev ? FIELD(u32, dev, OFF_DEV_IFINDEX, direct) : 0;
#if FILTER_IFINDEX
    if (key.ifindex != FILTER_IFINDEX)
        return 0;
#endif
    key.reason = reason;
    key.location = location;
    parse_headers(skb, &key, direct);
#if FILTER_PROTO_CLASS
    if (proto_class(key.l4) != FILTER_PROTO_CLASS)
        return 0;
#endif
#if FILTER_PORT
    if (key.sport != FILTER_PORT && key.dport != FILTER_PORT)
        return 0;
#endif
    if (!host_matches(&key))
        return 0;
    if (handover == 1) {
        u64 *note = handover_marker.lookup(&zero);
        if (note)
            *note = (u64)skb;
    }

    u64 len = FIELD(u32, skb, OFF_SKB_LEN, direct);
    u64 now = tick_now();
    void *cache = active_cache.lookup(&zero);
    if (!cache)
        return 0;
    u32 idx = slot_index(&key);
    struct flow_slot *slot = bpf_map_lookup_elem(cache, &idx);
    if (!slot)
        return 0;
    if (slot->val.count && same_key(&slot->key, &key)) {
        // This CPU's copy: no other CPU writes it, so no atomics.
        slot->val.count += 1;
        slot->val.bytes += len;
        slot->val.last_ns = now;
        return 0;
    }
    if (slot->val.count)
        push_out(slot);
    slot->key = key;
    slot->val.count = 1;
    slot->val.bytes = len;
    slot->val.first_ns = now;
    slot->val.last_ns = now;
    return 0;
}

// The classic tracepoint (every supported kernel): a perf record per drop.
int on_kfree_skb(struct netagent_kfree_skb_args *args)
{
#if HAVE_REASON
    u32 reason = args->reason;
#else
    u32 reason = 0;
#endif
    return record_drop((const void *)args->skbaddr, (u64)args->location, reason, 0);
}

// The raw tracepoint on the same kfree_skb tracepoint: the TP_PROTO arguments
// directly, no perf record. RAW_ARG_* give each argument's position, read
// from BTF (btf_trace_kfree_skb). Also the program of the tp_btf path, where
// the verifier knows ctx[RAW_ARG_SKB] is a struct sk_buff * and allows plain
// loads from it (on_kfree_skb_btf; loaded by bpfchild.py, not by BCC).
#ifndef RAW_ARG_SKB
#define RAW_ARG_SKB 0
#define RAW_ARG_LOCATION 1
#define RAW_ARG_REASON -1
#endif
int on_kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
#if RAW_ARG_REASON >= 0
    u32 reason = (u32)ctx->args[RAW_ARG_REASON];
#else
    u32 reason = 0;
#endif
    return record_drop((const void *)ctx->args[RAW_ARG_SKB], ctx->args[RAW_ARG_LOCATION], reason, 0);
}

int on_kfree_skb_btf(u64 *ctx)
{
#if RAW_ARG_REASON >= 0
    u32 reason = (u32)ctx[RAW_ARG_REASON];
#else
    u32 reason = 0;
#endif
    return record_drop((const void *)ctx[RAW_ARG_SKB], ctx[RAW_ARG_LOCATION], reason, 1);
}

// Kprobe variant for kernels whose tracepoint lacks what we need but that
// have kprobes: kfree_skb_reason(skb, reason), or from 6.11
// sk_skb_reason_drop(sk, skb, reason). KPROBE_SKB_ARG selects the layout.
// The drop location is the caller's return address, which sits in a
// different place per architecture (KPROBE_RETURN_FROM, set by drops.py from
// bpfsys.ARCHES): 1 = the word at the stack pointer (x86-64 CALL pushes it),
// 2 = the link register x30 (arm64), 3 = ra (riscv64). 0 = unknown: user space
// refuses the kprobe path and this stub records nothing.
#ifndef KPROBE_SKB_ARG
#define KPROBE_SKB_ARG 1
#endif
#ifndef KPROBE_RETURN_FROM
#define KPROBE_RETURN_FROM 0
#endif
int kprobe_drop(struct pt_regs *ctx)
{
    u64 ret_addr = 0;
#if KPROBE_RETURN_FROM == 1
    bpf_probe_read_kernel(&ret_addr, sizeof(ret_addr), (void *)PT_REGS_SP(ctx));
#elif KPROBE_RETURN_FROM == 2
    ret_addr = ctx->regs[30];
#elif KPROBE_RETURN_FROM == 3
    ret_addr = ctx->ra;
#else
    return 0;
#endif
#if KPROBE_SKB_ARG == 1
    return record_drop((const void *)PT_REGS_PARM1(ctx), ret_addr, (u32)PT_REGS_PARM2(ctx), 0);
#else
    return record_drop((const void *)PT_REGS_PARM2(ctx), ret_addr, (u32)PT_REGS_PARM3(ctx), 0);
#endif
}
