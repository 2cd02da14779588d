"""Host context: CPU steal, softirq, softnet backlog, NIC and protocol counters, conntrack fill.

procfs.py parses /proc text (pure), snapshot.py reads it (and netlink)
per node and per namespace, metrics.py turns two snapshots into deltas,
sensor.py is the daemon sensor emitting `netagent.host` metric events.
"""
