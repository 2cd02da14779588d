"""The host sensor in the agent's own namespace (no privileges needed)."""

import time

from netagent import registry
from netagent.host import sensor as host_sensor


def test_registered_for_the_daemon():
    assert "netagent.host.sensor" in registry.SENSOR_MODULES
    (mod,) = registry.load_modules(["netagent.host.sensor"])
    assert mod.loaded and mod.section == "host" and mod.schema["interval"] == ("duration", 10.0)


def test_poll_emits_deltas_node_last_and_inventory_once():
    s = host_sensor.from_config({"interval": 0.1, "netns": [], "per_cpu": True, "all_interfaces": True,
                                 "inventory": True, "kube_proxy_interval": 3600.0})
    assert s.check().can_run
    assert s.attach() == "procfs + netlink"
    time.sleep(0.1)
    first = s.poll()
    assert first[-1]["event"]["action"] == "node-counters"
    assert all(e["event"]["kind"] in ("metric", "state") for e in first)
    inventory = [e for e in first if e["event"]["dataset"] == "netagent.overlay"]
    assert any(e["netagent"]["overlay"]["interface"]["name"] == "lo" for e in inventory)
    netns_events = [e for e in first if e["event"]["action"] == "netns-counters"]
    assert len(netns_events) == 1
    body = netns_events[0]["netagent"]["host"]
    assert body["netns"]["name"] == "host" and "snmp" in body and "conntrack" in body
    assert any(i["name"] == "lo" for i in body["interfaces"])  # all_interfaces
    node = first[-1]["netagent"]["host"]
    assert node["cpu"]["count"] == len(node["cpus"]) >= 1
    assert node["sample"] == body["sample"] == 1
    assert "kube_proxy" in node
    time.sleep(0.1)
    second = s.poll()
    # lo did not change: no repeat (other interfaces of the root namespace may come and
    # go while other tests run, so only lo is asserted on)
    assert not [e for e in second if e["event"]["dataset"] == "netagent.overlay"
                and e["netagent"]["overlay"]["interface"]["name"] == "lo"]
    assert second[-1]["netagent"]["host"]["sample"] == 2
    s.detach()


def test_unknown_namespace_is_reported_by_check():
    s = host_sensor.HostSensor(namespaces=["no-such-namespace-xyz"])
    status = s.check()
    assert not status.can_run and "no such namespace" in status.reason
