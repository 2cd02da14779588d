"""One kfree_skb program for the drop sensor and the conntrack correlation (issue 12).

On a kernel without kprobes the conntrack sensor names the flows a full
table dropped by joining NETFILTER_DROP drops to its counter rises. With
the drop sensor attached in the same process (as `netagent run` does), it
takes the drop sensor's flows (drops.FEED) instead of loading a second
program that every drop on the node would pay for; the counts stay the
kernel's. When the drop sensor goes, the conntrack sensor loads its own.
"""

import contextlib

import pytest

from netagent.probes.conntrack import ConntrackSensor, kprobes_unavailable_reason
from netagent.probes.drops import DropSensor
from test_conntrack_lab import ct_pair  # noqa: F401 - a fixture
from test_conntrack_table_full import actions, fill_the_table
from timescale import scaled

pytestmark = pytest.mark.skipif(kprobes_unavailable_reason() is None,
                                reason="kernel has kprobes: the conntrack sensor uses them, not correlation")


@contextlib.contextmanager
def drops_and_conntrack(server, notes=None):
    """The drop sensor, then the conntrack sensor watching `server`, as `netagent run` attaches them."""
    drops = DropSensor()
    drops.attach()
    sensor = ConntrackSensor(netns=[server.name], interval=0.5, per_packet="correlation",
                             announce=(notes.append if notes is not None else None))
    try:
        sensor.attach()
        assert "shared with the drop sensor" in sensor.attach_path, sensor.attach_path
        yield drops, sensor
    finally:
        sensor.detach()
        drops.detach()


@pytest.mark.timeout(scaled(120))
def test_table_full_flows_come_from_the_drop_sensors_program(ct_pair):
    client, server = ct_pair
    with drops_and_conntrack(server) as (drops, sensor):
        def poll():
            drops.poll()  # the daemon's drop runner polls too, every second
            return sensor.poll()

        events, kernel, _ = fill_the_table(client, server, poll)
        losses = sensor.losses()
    assert kernel["drop"] >= 1
    flows = [e for e in actions(events, "table-full") if "count" in e["netagent"]["conntrack"]]
    assert sum(e["netagent"]["conntrack"]["count"] for e in flows) == kernel["drop"]
    for e in flows:
        assert e["netagent"]["conntrack"]["attribution"] == "correlation"
        assert e["destination"] == {"ip": "10.78.0.2", "port": 9999}
    assert losses == {"kernel": 0}


@pytest.mark.timeout(scaled(120))
def test_without_the_drop_sensor_the_conntrack_sensor_loads_its_own(ct_pair):
    _, server = ct_pair
    notes = []
    with drops_and_conntrack(server, notes) as (drops, sensor):
        drops.detach()  # a reload turned the drop sensor off
        sensor.poll()
        assert sensor.per_packet_mode == "correlation"
        assert "shared" not in sensor.attach_path and "correlation" in sensor.attach_path, sensor.attach_path
        assert any("the drop sensor stopped" in n for n in notes), notes
