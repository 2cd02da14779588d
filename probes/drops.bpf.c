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
BPF_TABLE("hash", struct flow_key, struct flow_val, flows_a, MAX_FLOWS);
BPF_TABLE("hash", struct flow_key, struct flow_val, flows_b, MAX_FLOWS);
BPF_ARRAY_OF_MAPS(active_flows, "flows_a", 1);

// Drops that matched the filters but found the buffer full: counted, never silent.
BPF_PERCPU_ARRAY(overflow, struct flow_val, 1);
// Reasons selected by --reason (FILTER_REASONS=1): 1 = keep.
BPF_ARRAY(reason_filter, u8, MAX_REASONS);

static __always_inline u32 netns_of(const void *skb, const void *dev)
{
    const void *net = 0;
    if (dev) {
        net = (const void *)read_u64(dev, OFF_DEV_NET);
    } else {
        const void *sk = (const void *)read_u64(skb, OFF_SKB_SK);
        if (sk)
            net = (const void *)read_u64(sk, OFF_SK_NET);
    }
    return net ? read_u32(net, OFF_NET_INUM) : 0;
}

static __always_inline void parse_headers(const void *skb, struct flow_key *key)
{
    const unsigned char *head = (const unsigned char *)read_u64(skb, OFF_SKB_HEAD);
    u16 nh = read_u16(skb, OFF_SKB_NETWORK_HEADER);
    u16 th = read_u16(skb, OFF_SKB_TRANSPORT_HEADER);
    u16 proto_be = read_u16(skb, OFF_SKB_PROTOCOL);
    const unsigned char *l4 = 0;
    u8 ip[40];

    if (!head || nh == HDR_UNSET)
        return;
    // One read covers the whole fixed IPv4 or IPv6 header.
    if (bpf_probe_read_kernel(ip, sizeof(ip), head + nh) < 0)
        return;
    u8 version = ip[0] >> 4;
    // skb->protocol is unset on some local output paths: trust the IP version nibble then.
    if (proto_be == ETH_P_IP_BE || (proto_be == 0 && version == 4)) {
        key->l3 = 0x0800;
        key->l4 = ip[9];
        __builtin_memcpy(&key->saddr[0], &ip[12], 4);
        __builtin_memcpy(&key->daddr[0], &ip[16], 4);
        l4 = (th != HDR_UNSET && th > nh) ? head + th : head + nh + (ip[0] & 0x0F) * 4;
    } else if (proto_be == ETH_P_IPV6_BE || (proto_be == 0 && version == 6)) {
        key->l3 = 0x86DD;
        key->l4 = ip[6];
        __builtin_memcpy(&key->saddr[0], &ip[8], 16);
        __builtin_memcpy(&key->daddr[0], &ip[24], 16);
        l4 = (th != HDR_UNSET && th > nh) ? head + th : head + nh + 40;
    } else {
        key->l3 = (proto_be >> 8) | ((proto_be & 0xFF) << 8);
        return;
    }
    if (key->l4 == 6 || key->l4 == 17 || key->l4 == 132) {  /* TCP, UDP, SCTP */
        u16 ports[2] = {};
        bpf_probe_read_kernel(&ports, sizeof(ports), l4);
        key->sport = (ports[0] >> 8) | ((ports[0] & 0xFF) << 8);
        key->dport = (ports[1] >> 8) | ((ports[1] & 0xFF) << 8);
    } else if (key->l4 == 1 || key->l4 == 58) {             /* ICMP, ICMPv6 */
        u8 tc[2] = {};
        bpf_probe_read_kernel(&tc, sizeof(tc), l4);
        key->sport = tc[0];
        key->dport = tc[1];
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

static __always_inline int record_drop(const void *skb, u64 location, u32 reason)
{
    struct flow_key key = {};
    int zero = 0;

    if (!skb)
        return 0;
#if FILTER_REASONS
    {
        u32 idx = reason;
        u8 *keep = reason_filter.lookup(&idx);
        if (!keep || !*keep)
            return 0;
    }
#endif
    const void *dev = (const void *)read_u64(skb, OFF_SKB_DEV);
    key.netns = netns_of(skb, dev);
#if FILTER_NETNS
    if (key.netns != FILTER_NETNS)
        return 0;
#endif
    key.ifindex = dev ? read_u32(dev, OFF_DEV_IFINDEX) : 0;
#if FILTER_IFINDEX
    if (key.ifindex != FILTER_IFINDEX)
        return 0;
#endif
    key.reason = reason;
    key.location = location;
    parse_headers(skb, &key);
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

    u64 len = read_u32(skb, OFF_SKB_LEN);
    u64 now = bpf_ktime_get_ns();
    void *flows = active_flows.lookup(&zero);
    if (!flows)
        return 0;
    struct flow_val *val = bpf_map_lookup_elem(flows, &key);
    if (!val) {
        struct flow_val init = {.count = 1, .bytes = len, .first_ns = now, .last_ns = now};
        int err = bpf_map_update_elem(flows, &key, &init, BPF_NOEXIST);
        if (err == 0)
            return 0;
        // -EEXIST: another CPU inserted the same flow just now; add to it.
        val = bpf_map_lookup_elem(flows, &key);
        if (!val) {
            struct flow_val *lost = overflow.lookup(&zero);
            if (lost) {
                lost->count += 1;   /* per-CPU slot: no atomics needed */
                lost->bytes += len;
                lost->last_ns = now;
            }
            return 0;
        }
    }
    __sync_fetch_and_add(&val->count, 1);
    __sync_fetch_and_add(&val->bytes, len);
    val->last_ns = now;
    return 0;
}

// The attach path on kernels with the tracepoint (all supported ones).
int on_kfree_skb(struct netagent_kfree_skb_args *args)
{
#if HAVE_REASON
    u32 reason = args->reason;
#else
    u32 reason = 0;
#endif
    return record_drop((const void *)args->skbaddr, (u64)args->location, reason);
}

// The preferred attach path where the kernel has BTF: a raw tracepoint on the
// same kfree_skb tracepoint. It receives the TP_PROTO arguments directly
// instead of a perf record built for every drop, which costs less per packet.
// RAW_ARG_* give each argument's position, read from BTF (btf_trace_kfree_skb).
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
    return record_drop((const void *)ctx->args[RAW_ARG_SKB], ctx->args[RAW_ARG_LOCATION], reason);
}

// Kprobe variant for kernels whose tracepoint lacks what we need but that
// have kprobes: kfree_skb_reason(skb, reason), or from 6.11
// sk_skb_reason_drop(sk, skb, reason). KPROBE_SKB_ARG selects the layout.
#ifndef KPROBE_SKB_ARG
#define KPROBE_SKB_ARG 1
#endif
int kprobe_drop(struct pt_regs *ctx)
{
    u64 ret_addr = 0;
    bpf_probe_read_kernel(&ret_addr, sizeof(ret_addr), (void *)PT_REGS_SP(ctx));
#if KPROBE_SKB_ARG == 1
    return record_drop((const void *)PT_REGS_PARM1(ctx), ret_addr, (u32)PT_REGS_PARM2(ctx));
#else
    return record_drop((const void *)PT_REGS_PARM2(ctx), ret_addr, (u32)PT_REGS_PARM3(ctx));
#endif
}
