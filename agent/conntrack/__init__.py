"""Conntrack health: the kernel's own counters, per network namespace.

stats       parse /proc/net/stat/nf_conntrack (by header name) and diff it
namespaces  read a namespace's counters from inside it; find the active ones
report      one interval of counters -> ECS events (counters and alerts)
correlate   join NETFILTER_DROP drops to counter rises when kprobes are absent

The per-packet BPF part and the sensor that drives all of this live in
netagent.probes.conntrack.
"""
