// netagent conntrack sensor, per-packet part: the conntrack failures that no
// tracepoint shows, seen through fentry/fexit programs or kprobes/kretprobes
// and aggregated in the kernel per (netns, kind, flow).
//
//   kind 1 INSERT_FAILED  __nf_conntrack_confirm() returned NF_DROP: the new
//                         entry could not be inserted (clash not resolvable,
//                         hash chain too long, entry dying).
//   kind 2 CLASH_RESOLVED nf_ct_resolve_clash() returned NF_ACCEPT: two
//                         packets of one new flow raced (UDP from one socket
//                         on several CPUs, e.g. A and AAAA lookups); the loser
//                         was merged without a drop.
//   kind 3 TABLE_FULL     early_drop() found nothing to evict: the table is
//                         full and this packet is dropped.
//   kind 4 EARLY_DROP     early_drop() evicted an unreplied entry to make room
//                         for this flow (the table is full; no packet lost).
//
// Each probe is written once (on_*) and has two ways in:
//   kprobe/kretprobe  (struct pt_regs *): needs perf events, which Debian's and
//                     Ubuntu's kernel.perf_event_paranoid=3 give CAP_SYS_ADMIN only;
//   fentry/fexit      (u64 *ctx: the arguments in order, then, at fexit, the
//                     return value): BPF trampolines, loaded with bpf(2) alone.
// A return probe sees only the return value, so each entry probe saves what
// the return probe needs (the flow and its netns) keyed by the running task
// (the CPU for idle tasks, whose pid 0 is shared by all CPUs).
//
// Struct offsets come from the running kernel's BTF, never from headers
// (the installed headers may be of another version):
//   OFF_SKB_NFCT  OFF_CT_TUPLE_ORIG  OFF_CT_NET  OFF_NET_INUM
//   OFF_TUPLE_SRC_U3 OFF_TUPLE_SRC_PORT OFF_TUPLE_L3NUM
//   OFF_TUPLE_DST_U3 OFF_TUPLE_DST_PORT OFF_TUPLE_PROTONUM
// Argument positions (1-based) also come from BTF function prototypes:
//   CONFIRM_SKB_ARG CLASH_SKB_ARG ALLOC_NET_ARG ALLOC_ORIG_ARG
// and, for fexit (where the return value follows the arguments), their counts:
//   CONFIRM_NARGS CLASH_NARGS ALLOC_NARGS EARLY_DROP_NARGS
// FILTER_NETNS: only this namespace inode (0 = all).

#include <uapi/linux/ptrace.h>

#define NF_DROP   0
#define NF_ACCEPT 1
#define NFCT_PTRMASK (~7UL)

#define KIND_INSERT_FAILED  1
#define KIND_CLASH_RESOLVED 2
#define KIND_TABLE_FULL     3
#define KIND_EARLY_DROP     4

#ifndef MAX_FLOWS
#define MAX_FLOWS 4096
#endif
#ifndef MAX_PENDING
#define MAX_PENDING 4096
#endif
#ifndef FILTER_NETNS
#define FILTER_NETNS 0
#endif

struct ct_flow {
    u32 netns;
    u8  kind;
    u8  l4;          /* IPPROTO_* */
    u16 l3;          /* AF_INET / AF_INET6 (the tuple's l3num) */
    u32 saddr[4];
    u32 daddr[4];
    u16 sport;       /* host order; ICMP: type */
    u16 dport;       /* host order; ICMP: code */
};

struct ct_count {
    u64 count;
    u64 first_ns;
    u64 last_ns;
};

// What an entry probe leaves for its return probe.
struct pending {
    struct ct_flow flow;
    u64 ct;          /* the nf_conn (0 when taken from a bare tuple) */
};

BPF_TABLE("lru_hash", u64, struct pending, pending_confirm, MAX_PENDING);
BPF_TABLE("lru_hash", u64, struct pending, pending_clash, MAX_PENDING);
BPF_TABLE("lru_hash", u64, struct pending, pending_alloc, MAX_PENDING);

// Double-buffered aggregation, swapped by user space through a one-slot
// array of maps (the update waits for an RCU grace period, so no program
// still writes into the buffer user space then drains): exact counts.
BPF_TABLE("hash", struct ct_flow, struct ct_count, flows_a, MAX_FLOWS);
BPF_TABLE("hash", struct ct_flow, struct ct_count, flows_b, MAX_FLOWS);
BPF_ARRAY_OF_MAPS(active_flows, "flows_a", 1);

// Counted, never silent: [0] events that found the buffer full,
// [1] return probes that found no saved entry (context lost).
BPF_PERCPU_ARRAY(lost, u64, 2);

// How often each probe ran. A kretprobe can be skipped when the kernel runs
// out of return instances (maxactive); user space compares entries with
// returns to count those misses on any kernel.
#define HIT_CONFIRM_ENTRY 0
#define HIT_CONFIRM_RETURN 1
#define HIT_CLASH_ENTRY 2
#define HIT_CLASH_RETURN 3
#define HIT_EARLY_DROP_ENTRY 4
#define HIT_EARLY_DROP_RETURN 5
#define HIT_ALLOC_ENTRY 6
#define HIT_ALLOC_RETURN 7
BPF_PERCPU_ARRAY(hits, u64, 8);

static __always_inline u16 swap16(u16 v)
{
    return (v >> 8) | ((v & 0xFF) << 8);
}

static __always_inline void count_lost(int slot)
{
    u64 *v = lost.lookup(&slot);
    if (v)
        *v += 1;   /* per-CPU slot: no atomics needed */
}

static __always_inline void count_hit(int slot)
{
    u64 *v = hits.lookup(&slot);
    if (v)
        *v += 1;
}

static __always_inline u64 task_key(void)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id == 0)   /* an idle task: pid 0 on every CPU */
        return 0xFFFFFFFF00000000ULL | bpf_get_smp_processor_id();
    return id;
}

static __always_inline u32 netns_of_net(const void *net)
{
    return net ? read_u32(net, OFF_NET_INUM) : 0;
}

// struct nf_conntrack_tuple -> flow (addresses stay in network order).
static __always_inline void read_tuple(const void *tuple, struct ct_flow *flow)
{
    flow->l3 = read_u16(tuple, OFF_TUPLE_L3NUM);
    bpf_probe_read_kernel(&flow->l4, 1, (const char *)tuple + OFF_TUPLE_PROTONUM);
    bpf_probe_read_kernel(&flow->saddr, 16, (const char *)tuple + OFF_TUPLE_SRC_U3);
    bpf_probe_read_kernel(&flow->daddr, 16, (const char *)tuple + OFF_TUPLE_DST_U3);
    if (flow->l4 == 1 || flow->l4 == 58) {
        /* ICMP: dst.u.icmp holds type then code */
        u8 tc[2] = {};
        bpf_probe_read_kernel(&tc, 2, (const char *)tuple + OFF_TUPLE_DST_PORT);
        flow->sport = tc[0];
        flow->dport = tc[1];
    } else {
        flow->sport = swap16(read_u16(tuple, OFF_TUPLE_SRC_PORT));
        flow->dport = swap16(read_u16(tuple, OFF_TUPLE_DST_PORT));
    }
}

// The conntrack entry attached to an skb, its original-direction flow and netns.
static __always_inline int pending_from_skb(const void *skb, struct pending *p)
{
    u64 nfct = read_u64(skb, OFF_SKB_NFCT) & NFCT_PTRMASK;
    if (!nfct)
        return -1;
    p->ct = nfct;
    read_tuple((const void *)(nfct + OFF_CT_TUPLE_ORIG), &p->flow);
    p->flow.netns = netns_of_net((const void *)read_u64((const void *)nfct, OFF_CT_NET));
#if FILTER_NETNS
    if (p->flow.netns != FILTER_NETNS)
        return -1;
#endif
    return 0;
}

static __always_inline void record(struct ct_flow *flow, u8 kind)
{
    int zero = 0;
    u64 now = bpf_ktime_get_ns();

    flow->kind = kind;
    void *flows = active_flows.lookup(&zero);
    if (!flows)
        return;
    struct ct_count *val = bpf_map_lookup_elem(flows, flow);
    if (!val) {
        struct ct_count init = {.count = 1, .first_ns = now, .last_ns = now};
        if (bpf_map_update_elem(flows, flow, &init, BPF_NOEXIST) == 0)
            return;
        // -EEXIST: another CPU inserted this flow just now; add to it.
        val = bpf_map_lookup_elem(flows, flow);
        if (!val) {
            count_lost(0);
            return;
        }
    }
    __sync_fetch_and_add(&val->count, 1);
    val->last_ns = now;
}

static __always_inline const void *arg_n(struct pt_regs *ctx, int n)
{
    switch (n) {
    case 1: return (const void *)PT_REGS_PARM1(ctx);
    case 2: return (const void *)PT_REGS_PARM2(ctx);
    case 3: return (const void *)PT_REGS_PARM3(ctx);
    case 4: return (const void *)PT_REGS_PARM4(ctx);
    case 5: return (const void *)PT_REGS_PARM5(ctx);
    }
    return 0;
}

// fentry/fexit: argument n (1-based) and the return value, from the trampoline's ctx
#define TARG(ctx, n) ((const void *)(ctx)[(n) - 1])
#ifndef CONFIRM_NARGS
#define CONFIRM_NARGS 1
#define CLASH_NARGS 4
#define ALLOC_NARGS 5
#define EARLY_DROP_NARGS 2
#endif

// --- __nf_conntrack_confirm(skb): insert failures -------------------------------

static __always_inline int on_confirm_entry(const void *skb)
{
    struct pending p = {};
    u64 key = task_key();
    count_hit(HIT_CONFIRM_ENTRY);
    if (pending_from_skb(skb, &p) == 0)
        pending_confirm.update(&key, &p);
    return 0;
}

static __always_inline int on_confirm_return(int rc)
{
    u64 key = task_key();
    count_hit(HIT_CONFIRM_RETURN);
    struct pending *p = pending_confirm.lookup(&key);
    if (!p)
        return 0;   /* filtered out at entry, or no conntrack entry */
    struct pending copy = *p;
    pending_confirm.delete(&key);
    if (rc == NF_DROP)
        record(&copy.flow, KIND_INSERT_FAILED);
    return 0;
}

int confirm_entry(struct pt_regs *ctx) { return on_confirm_entry(arg_n(ctx, CONFIRM_SKB_ARG)); }
int confirm_return(struct pt_regs *ctx) { return on_confirm_return((int)PT_REGS_RC(ctx)); }
int confirm_fentry(u64 *ctx) { return on_confirm_entry(TARG(ctx, CONFIRM_SKB_ARG)); }
int confirm_fexit(u64 *ctx) { return on_confirm_return((int)ctx[CONFIRM_NARGS]); }

// --- nf_ct_resolve_clash(skb, h, ...): clashes resolved without a drop -------------

static __always_inline int on_clash_entry(const void *skb)
{
    struct pending p = {};
    u64 key = task_key();
    count_hit(HIT_CLASH_ENTRY);
    if (pending_from_skb(skb, &p) == 0)
        pending_clash.update(&key, &p);
    return 0;
}

static __always_inline int on_clash_return(int rc)
{
    u64 key = task_key();
    count_hit(HIT_CLASH_RETURN);
    struct pending *p = pending_clash.lookup(&key);
    if (!p)
        return 0;
    struct pending copy = *p;
    pending_clash.delete(&key);
    // NF_DROP is counted once, as INSERT_FAILED, by confirm_return.
    if (rc == NF_ACCEPT)
        record(&copy.flow, KIND_CLASH_RESOLVED);
    return 0;
}

int clash_entry(struct pt_regs *ctx) { return on_clash_entry(arg_n(ctx, CLASH_SKB_ARG)); }
int clash_return(struct pt_regs *ctx) { return on_clash_return((int)PT_REGS_RC(ctx)); }
int clash_fentry(u64 *ctx) { return on_clash_entry(TARG(ctx, CLASH_SKB_ARG)); }
int clash_fexit(u64 *ctx) { return on_clash_return((int)ctx[CLASH_NARGS]); }

// --- __nf_conntrack_alloc(net, zone, orig, ...) + early_drop(): table full --------

static __always_inline int on_alloc_entry(const void *net, const void *orig)
{
    struct pending p = {};
    u64 key = task_key();

    count_hit(HIT_ALLOC_ENTRY);
    p.flow.netns = netns_of_net(net);
#if FILTER_NETNS
    if (p.flow.netns != FILTER_NETNS)
        return 0;
#endif
    if (orig)
        read_tuple(orig, &p.flow);
    pending_alloc.update(&key, &p);
    return 0;
}

// early_drop() runs only when the table is over its maximum; its bool says
// whether it made room. The entry probe only counts (see `hits`).
static __always_inline int on_early_drop_entry(void)
{
    count_hit(HIT_EARLY_DROP_ENTRY);
    return 0;
}

static __always_inline int on_early_drop_return(u64 made_room)
{
    u64 key = task_key();
    count_hit(HIT_EARLY_DROP_RETURN);
    struct pending *p = pending_alloc.lookup(&key);
    if (!p) {
#if FILTER_NETNS
        return 0;   /* most likely another namespace, filtered at entry */
#else
        count_lost(1);
        return 0;
#endif
    }
    struct pending copy = *p;
    pending_alloc.delete(&key);
    record(&copy.flow, (made_room & 0xFF) ? KIND_EARLY_DROP : KIND_TABLE_FULL);
    return 0;
}

// Fallback for kernels where early_drop() is inlined: a failed
// __nf_conntrack_alloc() (ERR_PTR) is the table-full drop (or, rarely, a
// failed slab allocation).
static __always_inline int on_alloc_return(u64 rc)
{
    u64 key = task_key();
    count_hit(HIT_ALLOC_RETURN);
    struct pending *p = pending_alloc.lookup(&key);
    if (!p)
        return 0;
    struct pending copy = *p;
    pending_alloc.delete(&key);
    if (rc >= (u64)-4095)   /* IS_ERR_VALUE */
        record(&copy.flow, KIND_TABLE_FULL);
    return 0;
}

int alloc_entry(struct pt_regs *ctx) { return on_alloc_entry(arg_n(ctx, ALLOC_NET_ARG), arg_n(ctx, ALLOC_ORIG_ARG)); }
int alloc_return(struct pt_regs *ctx) { return on_alloc_return(PT_REGS_RC(ctx)); }
int early_drop_entry(struct pt_regs *ctx) { return on_early_drop_entry(); }
int early_drop_return(struct pt_regs *ctx) { return on_early_drop_return(PT_REGS_RC(ctx)); }
int alloc_fentry(u64 *ctx) { return on_alloc_entry(TARG(ctx, ALLOC_NET_ARG), TARG(ctx, ALLOC_ORIG_ARG)); }
int alloc_fexit(u64 *ctx) { return on_alloc_return(ctx[ALLOC_NARGS]); }
int early_drop_fentry(u64 *ctx) { return on_early_drop_entry(); }
int early_drop_fexit(u64 *ctx) { return on_early_drop_return(ctx[EARLY_DROP_NARGS]); }
