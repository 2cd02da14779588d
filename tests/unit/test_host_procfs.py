"""The /proc parsers on layouts from several kernel versions (tests/fixtures/host/)."""

import os

import pytest

from netagent.host import procfs
from netagent.host.snapshot import _decode_proc_address, parse_proc_net_udp, parse_sockstat

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "host")


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


# --- softnet_stat ---------------------------------------------------------------------


@pytest.mark.parametrize("name,columns,rows", [
    ("softnet_stat.3.10", 10, 2),
    ("softnet_stat.4.19", 11, 4),
    ("softnet_stat.5.15", 13, 3),
    ("softnet_stat.6.18", 15, 2),
])
def test_softnet_column_counts(name, columns, rows):
    parsed = procfs.parse_softnet_stat(fixture(name))
    assert len(parsed) == rows
    assert {r.columns for r in parsed} == {columns}


def test_softnet_values_by_column():
    old = procfs.parse_softnet_stat(fixture("softnet_stat.3.10"))
    assert (old[1].processed, old[1].dropped, old[1].time_squeeze) == (0x03E1F2A4, 0x12, 7)
    assert old[1].flow_limit_count is None and old[1].backlog_len is None  # 3.10 has neither
    assert [r.cpu for r in old] == [0, 1]  # numbered by row: all we can do before 5.10

    four = procfs.parse_softnet_stat(fixture("softnet_stat.4.19"))
    assert four[1].dropped == 0x29 and four[2].time_squeeze == 0x55 and four[3].flow_limit_count == 0

    new = procfs.parse_softnet_stat(fixture("softnet_stat.5.15"))
    # the kernel prints the CPU number from 5.10 on: CPU 2 is offline and skipped
    assert [r.cpu for r in new] == [0, 1, 3]
    assert new[1].received_rps == 0x10 and new[2].backlog_len == 5 and new[2].flow_limit_count == 2


def test_softnet_rejects_garbage():
    with pytest.raises(ValueError):
        procfs.parse_softnet_stat("0000 0001\n")
    assert procfs.parse_softnet_stat("") == []


# --- /proc/stat ------------------------------------------------------------------------


@pytest.mark.parametrize("name,steal0", [
    ("stat.2.6.9", 0),  # no steal column yet: reported as 0, not an error
    ("stat.2.6.18", 44060),
    ("stat.3.10", 151105),
])
def test_proc_stat_old_layouts(name, steal0):
    cpus = procfs.parse_proc_stat(fixture(name))
    assert set(cpus) == {"cpu", "cpu0", "cpu1"}
    assert cpus["cpu0"].steal == steal0


def test_proc_stat_current_kernel():
    cpus = procfs.parse_proc_stat(fixture("stat.6.18"))
    assert cpus["cpu"].user == 11838 and cpus["cpu1"].softirq == 1008 and cpus["cpu"].steal == 13
    assert "intr" not in cpus and "ctxt" not in cpus


def test_guest_is_not_counted_twice():
    t = procfs.CpuTimes(user=100, guest=80, guest_nice=5, idle=100)
    assert t.total == 200


def test_cpu_percentages():
    a = procfs.CpuTimes(user=100, system=50, idle=800, steal=50)
    b = procfs.CpuTimes(user=130, system=60, idle=830, steal=80, softirq=0)
    shares = procfs.cpu_percentages(a, b)
    # 100 ticks: 30 user+system... user 30 + system 10 busy, 30 idle, 30 stolen
    assert shares["steal_pct"] == 30.0
    assert shares["idle_pct"] == 30.0
    assert shares["busy_pct"] == 40.0
    assert procfs.cpu_percentages(b, b)["steal_pct"] == 0.0  # no ticks: no division by zero


# --- snmp / netstat / snmp6 ------------------------------------------------------------


@pytest.mark.parametrize("name", ["snmp.3.10", "snmp.4.19", "snmp.6.18"])
def test_snmp_tables(name):
    t = procfs.parse_snmp_table(fixture(name))
    assert {"Ip", "Icmp", "Tcp", "Udp"} <= set(t)
    assert t["Tcp"]["MaxConn"] == -1  # the one negative value
    assert "RcvbufErrors" in t["Udp"] and "FragCreates" in t["Ip"]


def test_snmp_values_are_matched_by_name():
    old = procfs.parse_snmp_table(fixture("snmp.3.10"))
    assert old["Udp"]["RcvbufErrors"] == 5120 and old["Udp"]["NoPorts"] == 2180
    assert "IgnoredMulti" not in old["Udp"]
    assert old["Ip"]["FragCreates"] == 130 and old["Ip"]["ReasmFails"] == 4
    new = procfs.parse_snmp_table(fixture("snmp.6.18"))
    assert new["Ip"]["OutTransmits"] == 1744 and new["Udp"]["MemErrors"] == 0
    assert new["IcmpMsg"] == {"InType3": 101, "OutType3": 100}


@pytest.mark.parametrize("name", ["netstat.3.10", "netstat.6.18"])
def test_netstat(name):
    t = procfs.parse_snmp_table(fixture(name))
    assert "TCPMTUPFail" in t["TcpExt"] or name == "netstat.3.10"
    assert "TCPTimeouts" in t["TcpExt"] and "InOctets" in t["IpExt"]


def test_netstat_3_10_values():
    t = procfs.parse_snmp_table(fixture("netstat.3.10"))
    assert t["TcpExt"]["TCPPrequeued"] == 0 and t["TcpExt"]["TCPOrigDataSent"] == 50112221
    assert t["TcpExt"]["TCPTimeouts"] == 2203


def test_snmp_truncated_read_resynchronises():
    text = "Ip: A B\nTcp: X Y\nTcp: 1 2\n"
    assert procfs.parse_snmp_table(text) == {"Tcp": {"X": 1, "Y": 2}}


def test_snmp6():
    t = procfs.parse_snmp6(fixture("snmp6.6.18"))
    assert t["Ip6OutRequests"] == 10 and "Udp6RcvbufErrors" in t


# --- nf_conntrack stat -----------------------------------------------------------------


def test_conntrack_stat_by_header():
    old = procfs.parse_nf_conntrack_stat(fixture("nf_conntrack_stat.4.19"))
    assert old["entries"] == 0x1F4  # a gauge: taken once, not summed over CPUs
    assert old["insert_failed"] == 7 and old["drop"] == 8 and old["early_drop"] == 1
    assert "searched" in old and "clashres" not in old
    new = procfs.parse_nf_conntrack_stat(fixture("nf_conntrack_stat.6.18"))
    assert "clashres" in new and "chainlength" in new and new["insert_failed"] == 0


# --- sockets ---------------------------------------------------------------------------

UDP = """   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
16323: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 40123 2 000000000785f07f 0
16324: 00000000:14E9 00000000:0000 07 00000000:0003F000 00:00000000 00000000     0        0 40999 2 000000000785f080 1532
"""

UDP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 50001 2 0000000000000000 7
"""


def test_proc_net_udp_socket_drops():
    sockets = parse_proc_net_udp(UDP, "udp")
    assert len(sockets) == 1  # the socket without drops is left out
    (sock,) = sockets.values()
    assert sock["address"] == "0.0.0.0" and sock["port"] == 5353 and sock["drops"] == 1532
    assert sock["inode"] == 40999 and sock["rx_queue"] == 0x3F000
    six = list(parse_proc_net_udp(UDP6, "udp").values())
    assert six[0]["address"] == "::1" and six[0]["port"] == 53 and six[0]["drops"] == 7


def test_decode_address():
    assert _decode_proc_address("0100007F:0035") == ("127.0.0.1", 53)


def test_sockstat():
    t = parse_sockstat("sockets: used 16\nTCP: inuse 1 orphan 0 tw 7 alloc 2 mem 113\nUDP: inuse 3 mem 0\n")
    assert t["TCP"]["tw"] == 7 and t["UDP"]["inuse"] == 3 and t["sockets"]["used"] == 16
