// Helpers shared by every netagent BPF program; bccloader prepends this file.
// Kernel struct fields are read at byte offsets taken from BTF, never through
// C struct definitions from (possibly mismatched) kernel headers.

static __always_inline u64 read_u64(const void *base, long off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 read_u32(const void *base, long off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u16 read_u16(const void *base, long off)
{
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}
