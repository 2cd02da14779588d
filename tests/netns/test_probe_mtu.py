"""`netagent probe mtu` against real kernels: client - router - server labs and a VXLAN overlay.

Every lab is made of namespaces this test creates (fresh kernel PMTU state
each time, so no test depends on another's route exceptions); traffic
stays inside them.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
from lab import Namespace, veth_pair

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

CLIENT4, ROUTER4, SERVER4 = "10.1.0.2", "10.1.0.1", "10.2.0.2"
CLIENT6, ROUTER6, SERVER6 = "fd01::2", "fd01::1", "fd02::2"


def _no_dad(ns: Namespace) -> None:
    # IPv6 duplicate address detection would hold addresses (link-local
    # ones too) tentative for a second after the links come up.
    ns.sysctl("net.ipv6.conf.all.accept_dad", 0)
    ns.sysctl("net.ipv6.conf.default.accept_dad", 0)


def make_pmtu_lab(make, link_mtu=1400):
    """client -(1500)- router -(link_mtu)- server, IPv4 and IPv6, routed through the router."""
    client, router, server = make(), make(), make()
    for ns in (client, router, server):
        _no_dad(ns)
    veth_pair(client, router, f"{CLIENT4}/24", f"{ROUTER4}/24", a_addr6=f"{CLIENT6}/64", b_addr6=f"{ROUTER6}/64")
    veth_pair(router, server, "10.2.0.1/24", f"{SERVER4}/24", mtu=link_mtu, a_if="eth1",
              a_addr6="fd02::1/64", b_addr6=f"{SERVER6}/64")
    router.sysctl("net.ipv4.ip_forward", 1)
    router.sysctl("net.ipv6.conf.all.forwarding", 1)
    client.run("ip route add default via 10.1.0.1")
    client.run("ip -6 route add default via fd01::1")
    server.run("ip route add default via 10.2.0.1")
    server.run("ip -6 route add default via fd02::1")
    # resolve neighbours once so the numbers below are about MTU, not ARP/ND
    for addr in (SERVER4, SERVER6):
        client.run("ping", "-c1", "-W2", addr, check=False)
    flush_pmtu(client)
    return client, router, server


def flush_pmtu(ns: Namespace) -> None:
    """Forget learnt PMTUs (route exceptions) in `ns`."""
    ns.run("ip route flush cache")
    ns.run("ip -6 route flush cache")


def drop_frag_needed(router: Namespace) -> None:
    """Make the router a PMTU black hole: it still drops big packets, but its ICMP never leaves."""
    router.run("iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP")
    router.run("ip6tables", "-A", "OUTPUT", "-p", "ipv6-icmp", "--icmpv6-type", "packet-too-big", "-j", "DROP")


def probe(netagent_bin, ns, target, *args, expect_rc=0):
    proc = subprocess.run([netagent_bin, "probe", "mtu", target, "--netns", ns.name, "-o", "json", *args],
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == expect_rc, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0]), proc


def tracepath_pmtu(ns: Namespace, target: str) -> int:
    out = ns.run("tracepath", "-n", "-m", "5", target, timeout=30).stdout
    m = re.search(r"Resume: pmtu (\d+)", out)
    assert m, out
    return int(m.group(1))


@pytest.mark.parametrize("proto", ["icmp", "udp", "tcp"])
def test_ipv4_router_announces_frag_needed(netns_factory, netagent_bin, proto):
    client, _, _ = make_pmtu_lab(netns_factory)
    ev, _ = probe(netagent_bin, client, SERVER4, "--proto", proto)
    m = ev["netagent"]["mtu"]
    assert ev["event"]["dataset"] == "netagent.mtu"
    assert ev["destination"]["ip"] == SERVER4
    assert (m["status"], m["path_mtu"], m["icmp_from"], m["icmp_mtu"]) == ("icmp", 1400, ROUTER4, 1400)
    assert (m["interface"], m["interface_mtu"], m["largest_ok"]) == ("eth0", 1500, 1400)
    assert m["probes"] == 3
    assert ev["event"]["duration"] > 0


def test_tracepath_agrees_in_the_icmp_case(netns_factory, netagent_bin):
    client, _, _ = make_pmtu_lab(netns_factory, link_mtu=1420)
    for target in (SERVER4, SERVER6):
        flush_pmtu(client)
        reference = tracepath_pmtu(client, target)
        flush_pmtu(client)
        ev, _ = probe(netagent_bin, client, target)
        assert ev["netagent"]["mtu"]["status"] == "icmp"
        assert ev["netagent"]["mtu"]["path_mtu"] == reference == 1420, target


def test_ipv4_blackhole_exact_mtu(netns_factory, netagent_bin):
    client, router, _ = make_pmtu_lab(netns_factory)
    drop_frag_needed(router)
    ev, proc = probe(netagent_bin, client, SERVER4, expect_rc=1)  # a black hole is a finding
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"], m["largest_ok"], m["smallest_lost"]) == ("blackhole", 1400, 1400, 1401)
    assert m["icmp_from"] is None
    assert m["probes"] <= 14
    assert proc.stderr == ""


def test_tcp_probe_finds_the_blackhole_too(netns_factory, netagent_bin):
    client, router, _ = make_pmtu_lab(netns_factory, link_mtu=1450)
    drop_frag_needed(router)
    ev, _ = probe(netagent_bin, client, SERVER4, "--proto", "tcp", "--port", "8443", expect_rc=1)
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"], m["port"]) == ("blackhole", 1450, 8443)


def test_ipv6_packet_too_big(netns_factory, netagent_bin):
    client, _, _ = make_pmtu_lab(netns_factory)
    ev, _ = probe(netagent_bin, client, SERVER6)
    m = ev["netagent"]["mtu"]
    assert ev["network"] == {"type": "ipv6", "transport": "ipv6-icmp"}
    assert (m["status"], m["path_mtu"], m["icmp_from"]) == ("icmp", 1400, ROUTER6)


def test_ipv6_packet_too_big_filtered_is_a_blackhole(netns_factory, netagent_bin):
    client, router, _ = make_pmtu_lab(netns_factory)
    drop_frag_needed(router)
    ev, _ = probe(netagent_bin, client, SERVER6, "--proto", "udp", expect_rc=1)
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"], m["smallest_lost"], m["icmp_from"]) == ("blackhole", 1400, 1401, None)
    assert m["probes"] <= 14


def test_not_fooled_by_a_route_exception_from_an_earlier_run(netns_factory, netagent_bin):
    client, router, server = make_pmtu_lab(netns_factory, link_mtu=1300)
    ev, _ = probe(netagent_bin, client, SERVER4)
    assert ev["netagent"]["mtu"]["path_mtu"] == 1300
    # the kernel now holds a 1300 PMTU exception toward the server ...
    assert "mtu 1300" in client.run("ip", "route", "get", SERVER4).stdout
    # ... but the path has grown to 1450 since: the probe must find that, not the cache
    router.run("ip link set eth1 mtu 1450")
    server.run("ip link set eth0 mtu 1450")
    ev, _ = probe(netagent_bin, client, SERVER4)
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"]) == ("icmp", 1450)


def test_pid_namespace_spec(netns_factory, netagent_bin):
    client, _, _ = make_pmtu_lab(netns_factory)
    sleeper = client.popen("sleep", "30")
    try:
        proc = subprocess.run([netagent_bin, "probe", "mtu", SERVER4, "--netns", f"pid:{sleeper.pid}", "-o", "json"],
                              capture_output=True, text=True, timeout=40)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["netagent"]["mtu"]["path_mtu"] == 1400


def test_table_output(netns_factory, netagent_bin):
    client, _, _ = make_pmtu_lab(netns_factory)
    proc = subprocess.run([netagent_bin, "probe", "mtu", SERVER4, "--netns", client.name, "-o", "table", "-v"],
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["TARGET", "PROTO", "IFACE", "IF_MTU", "PATH_MTU", "STATUS"]
    assert lines[1].split()[:6] == [SERVER4, "icmp", "eth0", "1500", "1400", "icmp"]
    assert any("too_big" in line and ROUTER4 in line for line in lines)


# -- overlays ------------------------------------------------------------------


def make_vxlan_lab(make, df: str | None):
    """Two namespaces over a 1500-byte veth underlay, VXLAN between them set to MTU 1500 (should be 1450)."""
    a, b = make(), make()
    veth_pair(a, b, "192.168.50.1/24", "192.168.50.2/24")
    for ns, local, remote, addr in ((a, "192.168.50.1", "192.168.50.2", "10.99.0.1/24"),
                                    (b, "192.168.50.2", "192.168.50.1", "10.99.0.2/24")):
        # no `dev`: like Calico/flannel/Cilium, and the kernel then allows an MTU above underlay - 50
        ns.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "remote", remote,
               "dstport", "4789", *(("df", df) if df else ()))
        ns.run("ip link set vx0 mtu 1500")
        ns.run("ip", "addr", "add", addr, "dev", "vx0")
        ns.run("ip link set vx0 up")
    a.run("ping", "-c1", "-W2", "10.99.0.2", check=False)
    flush_pmtu(a)
    return a, b


def test_vxlan_mtu_above_underlay_with_df_reports_effective_mtu_and_mismatch(netns_factory, netagent_bin):
    a, _ = make_vxlan_lab(netns_factory, df="set")
    ev, _ = probe(netagent_bin, a, "10.99.0.2", expect_rc=1)  # the overlay mismatch is a finding
    m = ev["netagent"]["mtu"]
    # our own VXLAN device refuses (outer DF on a 1500 underlay): effective 1450
    assert (m["status"], m["path_mtu"], m["interface"], m["interface_mtu"]) == ("local", 1450, "vx0", 1500)
    o = m["overlay"]
    assert (o["type"], o["underlay"], o["underlay_mtu"], o["overhead"], o["expected_mtu"], o["mismatch"]) == \
        ("vxlan", "eth0", 1500, 50, 1450, True)
    assert "leaves room for 1450" in ev["message"]


def test_vxlan_mtu_above_underlay_fragmenting(netns_factory, netagent_bin):
    a, _ = make_vxlan_lab(netns_factory, df=None)
    ev, _ = probe(netagent_bin, a, "10.99.0.2", expect_rc=1)
    m = ev["netagent"]["mtu"]
    # without outer DF the underlay fragments: 1500 arrives, but only in pieces
    assert (m["status"], m["path_mtu"]) == ("ok", 1500)
    assert m["overlay"]["mismatch"] is True and m["overlay"]["expected_mtu"] == 1450
    assert m["kernel_pmtu"] == 1450  # the kernel itself now uses 1450 toward the peer
    assert "fragmented them" in ev["message"]


def test_vxlan_with_correct_mtu_is_clean(netns_factory, netagent_bin):
    a, b = make_vxlan_lab(netns_factory, df="set")
    for ns in (a, b):
        ns.run("ip link set vx0 mtu 1450")
    flush_pmtu(a)
    ev, _ = probe(netagent_bin, a, "10.99.0.2")
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"], m["overlay"]["mismatch"]) == ("ok", 1450, False)


# -- errors ----------------------------------------------------------------------


def test_no_route_is_unavailable(netns_factory, netagent_bin):
    lonely = netns_factory()
    proc = subprocess.run([netagent_bin, "probe", "mtu", "10.77.0.1", "--netns", lonely.name],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 69
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "unreachable" in proc.stderr


def test_rejected_target_is_unreachable_with_the_reason(netns_factory, netagent_bin):
    client, router, _ = make_pmtu_lab(netns_factory)
    router.run("ip route add prohibit 10.3.0.0/24")
    client.run("ip route add 10.3.0.0/24 via 10.1.0.1")
    ev, proc = probe(netagent_bin, client, "10.3.0.9", expect_rc=69)
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["error_from"], m["path_mtu"]) == ("unreachable", ROUTER4, None)
    assert "prohibited" in m["error"]
    assert len(proc.stderr.strip().splitlines()) == 1


def test_name_that_cannot_be_resolved(netns_factory, netagent_bin):
    # An isolated namespace: the resolver's query cannot leave it.
    lonely = netns_factory()
    proc = subprocess.run([netagent_bin, "probe", "mtu", "no-such-host.invalid", "--netns", lonely.name],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode in (2, 69)
    assert len(proc.stderr.strip().splitlines()) == 1 and "resolve" in proc.stderr


def test_loopback_by_name(netns_factory, netagent_bin):
    ns = netns_factory()
    ev, _ = probe(netagent_bin, ns, "localhost", "-4")
    m = ev["netagent"]["mtu"]
    assert ev["destination"] == {"ip": "127.0.0.1", "domain": "localhost"}
    assert (m["status"], m["interface"], m["path_mtu"]) == ("ok", "lo", 65535)


def test_not_root_exits_77(netagent_bin):
    from unprivileged import run_as_nobody

    proc = run_as_nobody([netagent_bin, "probe", "mtu", "127.0.0.1"])
    assert proc.returncode == 77, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "CAP_NET_RAW" in proc.stderr


def test_not_root_exits_77_even_when_scapys_cache_is_unreadable(netagent_bin):
    # A fresh clone in /root failed this way: as nobody, HOME still /root, scapy's import
    # found root's ~/.cache/scapy/services.pickle, could not read it, tried to delete it and
    # raised: "internal error" (70) instead of the one line naming CAP_NET_RAW (77).
    from unprivileged import run_as_nobody

    home = tempfile.mkdtemp(prefix="netagent-home-", dir="/var/tmp")  # nobody can reach it (pytest's tmp it cannot)
    try:
        cache = os.path.join(home, ".cache", "scapy")
        os.makedirs(cache)
        for d in (home, os.path.dirname(cache), cache):
            os.chmod(d, 0o755)
        pickle = os.path.join(cache, "services.pickle")
        with open(pickle, "wb") as f:
            f.write(b"root's cache")
        os.chmod(pickle, 0o600)  # root's own: nobody can neither read nor remove it
        proc = run_as_nobody([netagent_bin, "probe", "mtu", "127.0.0.1"],
                             env={**os.environ, "HOME": home, "XDG_CACHE_HOME": os.path.join(home, ".cache")})
    finally:
        shutil.rmtree(home)
    assert proc.returncode == 77, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "CAP_NET_RAW" in proc.stderr
