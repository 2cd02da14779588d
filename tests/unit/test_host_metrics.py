"""Deltas between snapshots: wraps, resets, vanished interfaces, per-CPU shares."""

from netagent.host import procfs
from netagent.host.metrics import counter_delta, netns_delta, node_delta
from netagent.host.snapshot import NetnsSnapshot, NodeSnapshot
from netagent.netns import Netns

NS = Netns("x", "/run/netns/x", 4242, "x")


def stat(*rows: str) -> dict:
    return procfs.parse_proc_stat("\n".join(rows))


def test_counter_delta():
    assert counter_delta(10, 15) == 5
    assert counter_delta(0xFFFFFFF0, 0x10, bits=32) == 0x20  # softnet counters are u32 and wrap
    assert counter_delta(1000, 5) == 5  # 64-bit going back: a reset, count from zero
    assert counter_delta(None, 5) is None


def test_node_delta_steal_and_softnet():
    a = NodeSnapshot(100.0, stat("cpu  100 0 100 800 0 0 0 0", "cpu0 50 0 50 400 0 0 0 0", "cpu1 50 0 50 400 0 0 0 0"),
                     procfs.parse_softnet_stat("00000010 00000000 00000000 0 0 0 0 0 0 0 0 0 00000000\n"
                                               "ffffff00 00000001 00000002 0 0 0 0 0 0 0 0 0 00000001\n"))
    b = NodeSnapshot(110.0, stat("cpu  150 0 150 850 0 0 10 40", "cpu0 60 0 60 450 0 0 0 30",
                                 "cpu1 90 0 90 400 0 0 10 10"),
                     procfs.parse_softnet_stat("00000020 00000000 00000000 0 0 0 0 0 0 0 0 0 00000000\n"
                                               "00000100 00000004 00000009 0 0 0 0 0 0 0 0 3 00000001\n"))
    d = node_delta(a, b)
    assert d["interval_s"] == 10.0
    # overall: 200 ticks, 40 stolen; cpu0: 100 ticks, 30 stolen; cpu1: 100 ticks, 10 stolen
    assert d["cpu"]["steal_pct"] == 20.0
    assert d["cpu"]["steal_max_cpu"] == 0 and d["cpu"]["steal_max_pct"] == 30.0
    assert d["cpus"][1]["steal_pct"] == 10.0 and d["cpus"][1]["softirq_pct"] == 10.0
    assert [c["cpu"] for c in d["cpus"]] == [0, 1]
    sn = d["softnet"]
    assert sn["processed"] == 0x10 + 0x200 and sn["dropped"] == 3 and sn["time_squeeze"] == 7
    assert sn["dropped_max_cpu"] == 1 and sn["backlog_len_max"] == 3 and sn["columns"] == 13


def test_node_delta_without_per_cpu():
    a = NodeSnapshot(0.0, stat("cpu  1 0 0 1 0 0 0 0", "cpu0 1 0 0 1 0 0 0 0"), [])
    d = node_delta(a, a, per_cpu=False)
    assert "cpus" not in d and "softnet_cpus" not in d and d["softnet"]["processed"] == 0


def _ns_snap(t, **kw):
    return NetnsSnapshot(t, NS, **kw)


def test_netns_delta():
    a = _ns_snap(0.0, snmp={"Udp.RcvbufErrors": 10, "Ip.FragCreates": 4, "TcpExt.TCPMTUPFail": 0},
                 nic={"eth0": {"rx_dropped": 5, "tx_dropped": 0, "rx_packets": 100, "tx_packets": 10,
                               "rx_missed_errors": 0},
                      "gone0": {"rx_dropped": 1}},
                 conntrack_count=10, conntrack_max=100, conntrack_stat={"insert_failed": 1, "drop": 1,
                                                                       "clashres": 0, "chainlength": 0},
                 udp_socket_drops={("0.0.0.0", 53, "udp", 7): {"address": "0.0.0.0", "port": 53, "drops": 4,
                                                               "inode": 7, "transport": "udp"}})
    b = _ns_snap(2.0, snmp={"Udp.RcvbufErrors": 25, "Ip.FragCreates": 4, "TcpExt.TCPMTUPFail": 2},
                 nic={"eth0": {"rx_dropped": 9, "tx_dropped": 0, "rx_packets": 200, "tx_packets": 20,
                               "rx_missed_errors": 1},
                      "lo": {"rx_dropped": 0}, "new0": {"rx_dropped": 50}},
                 conntrack_count=95, conntrack_max=100, conntrack_stat={"insert_failed": 4, "drop": 3,
                                                                       "clashres": 2, "chainlength": 1},
                 udp_socket_drops={("0.0.0.0", 53, "udp", 7): {"address": "0.0.0.0", "port": 53, "drops": 19,
                                                               "inode": 7, "transport": "udp"}},
                 sockstat={"TCP": {"inuse": 3, "tw": 9}})
    d = netns_delta(a, b)
    assert d["netns"] == {"name": "x", "inode": 4242}
    assert d["snmp"] == {"udp_rcvbuf_errors": 15, "ip_frag_creates": 0, "tcp_mtup_fail": 2}
    # only interfaces present in both samples, and only those that lost something
    assert [i["name"] for i in d["interfaces"]] == ["eth0"]
    assert d["interfaces"][0]["rx_dropped"] == 4 and d["interfaces"][0]["rx_packets"] == 100
    assert d["interfaces_total"]["rx_missed_errors"] == 1
    ct = d["conntrack"]
    assert ct["fill_pct"] == 95.0 and ct["insert_failed"] == 3 and ct["clash_resolve"] == 2
    assert ct["chain_too_long"] == 1
    assert d["udp_sockets"][0]["drops"] == 15 and d["udp_sockets"][0]["drops_total"] == 19
    assert d["sockets"]["tcp_time_wait"] == 9
