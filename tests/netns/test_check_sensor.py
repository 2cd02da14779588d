"""The host sensor and the correlator on live namespaces, as the daemon runs them (root)."""

import os
import socket
import threading
import time

import pytest

from netagent import netns as netns_mod
from netagent.findings import Correlator
from netagent.host.sensor import HostSensor

from test_check import findings, run_check, vxlan_lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def test_sensor_and_correlator_raise_then_clear_overlay_mtu(netns_factory):
    a, b = vxlan_lab(netns_factory)
    sensor = HostSensor(namespaces=[a.name], interval=0.5, kube_proxy_interval=3600)
    correlator = Correlator(window=30, clear_after=1)
    sensor.attach()
    a.run("ping", "-q", "-c", "20", "-i", "0.02", "-s", "1472", "-M", "dont", "10.10.0.2")
    out = correlator.process(sensor.poll())
    raised = [e for e in out if e["event"]["dataset"] == "netagent.finding"]
    assert [e["event"]["action"] for e in raised] == ["finding-raised"]
    f = raised[0]["netagent"]["finding"]
    assert f["rule"] == "overlay-mtu" and f["evidence"]["fragments_created"] >= 40
    assert f["netns"] == {"name": a.name, "inode": a.inode}
    # the operator fixes the MTU: the inventory event says so and the finding clears
    a.run("ip", "link", "set", "vx0", "mtu", "1450")
    out = correlator.process(sensor.poll())
    changed = [e for e in out if e["event"]["action"] == "interface-changed"]
    assert changed and changed[0]["netagent"]["overlay"]["interface"]["mtu"] == 1450
    assert [e["event"]["action"] for e in out if e["event"]["dataset"] == "netagent.finding"] == ["finding-cleared"]
    sensor.detach()


def test_star_follows_namespaces_that_come_and_go(netns_factory):
    sensor = HostSensor(namespaces=["*"], interval=0.5, kube_proxy_interval=3600)
    sensor.attach()
    late = netns_factory()
    first = sensor.poll()
    seen = {e["netagent"]["overlay"]["netns"]["inode"] for e in first if e["event"]["dataset"] == "netagent.overlay"}
    assert late.inode in seen
    late.delete()
    second = sensor.poll()
    removed = [e for e in second if e["event"]["action"] == "interface-removed"
               and e["netagent"]["overlay"]["netns"]["inode"] == late.inode]
    assert removed  # its loopback went with it
    assert all(e["netagent"]["host"]["netns"]["inode"] != late.inode
               for e in second if e["event"]["action"] == "netns-counters")
    sensor.detach()


def _unread_socket_and_sender(port: int):
    """Inside the namespace: a UDP socket with a tiny buffer that nobody reads, and a sender."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    rx.bind(("127.0.0.1", port))
    return rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def test_udp_rcvbuf_names_the_socket_and_process(netns, netagent_bin):
    ns = netns_mod.resolve(netns.name)
    # sockets keep the namespace they were created in, so the flood can be
    # sent from a thread of ours while `check` (another process) samples
    rx, tx = netns_mod.run_in(ns, _unread_socket_and_sender, 5399)
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            for _ in range(100):
                tx.sendto(b"x" * 512, ("127.0.0.1", 5399))
            time.sleep(0.02)

    t = threading.Thread(target=flood)
    t.start()
    try:
        proc, events = run_check(netagent_bin, "--netns", netns.name, "--window", "500ms")
    finally:
        stop.set()
        t.join()
        tx.close()
    try:
        assert proc.returncode == 1, proc.stderr
        (f,) = findings(events, "udp-rcvbuf")
        assert f["evidence"]["rcvbuf_errors"] > 100
        sock = f["evidence"]["sockets"][0]
        assert (sock["address"], sock["port"]) == ("127.0.0.1", 5399)
        assert sock["process"]["pid"] == os.getpid()
        assert f["subject"] == f"{netns.name}/127.0.0.1:5399"
        assert sock["drops"] > 100  # read a moment after the snmp counter, so not equal to it
    finally:
        rx.close()
