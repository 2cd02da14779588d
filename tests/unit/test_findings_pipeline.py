"""The correlator plugged into the daemon pipeline through its processors hook."""

import orjson

from netagent.events import new_event
from netagent.findings import Correlator
from netagent.pipeline import Pipeline


class ListSink:
    def __init__(self):
        self.lines = []

    def submit(self, line, event):
        self.lines.append(orjson.loads(line))

    def losses(self):
        return {}

    def status(self):
        return {}


def test_findings_flow_through_the_pipeline_with_sequence_numbers():
    sink = ListSink()
    pipe = Pipeline([sink], capacity=100, processors=[Correlator()])
    iface = {"index": 3, "name": "flannel.1", "type": "vxlan", "mtu": 1500, "up": True,
             "underlay": {"device": "eth0", "mtu": 1500, "effective_mtu": 1500, "family": "ipv4",
                          "found_by": "dev"},
             "overhead": 50, "expected_mtu": 1450, "mtu_exceeds": True}
    pipe.publish([
        new_event(dataset="netagent.overlay", action="interface-seen", kind="state",
                  netagent={"overlay": {"interface": iface, "netns": {"name": "host", "inode": 1}}}),
        new_event(dataset="netagent.host", action="node-counters", kind="metric",
                  netagent={"host": {"interval_s": 10.0, "cpu": {}, "softnet": {}}}),
    ])
    pipe.start()
    assert pipe.drain(5.0)
    pipe.stop(1.0)
    datasets = [e["event"]["dataset"] for e in sink.lines]
    assert datasets == ["netagent.overlay", "netagent.host", "netagent.finding"]
    assert [e["event"]["sequence"] for e in sink.lines] == [1, 2, 3]
    assert sink.lines[2]["netagent"]["finding"]["evidence"]["expected_mtu"] == 1450
    assert pipe.processor_failed == 0


def test_a_failing_processor_passes_events_on():
    def broken(event):
        raise RuntimeError("bug")

    sink = ListSink()
    pipe = Pipeline([sink], capacity=10, processors=[broken])
    pipe.publish([new_event(dataset="x", action="y")])
    pipe.start()
    assert pipe.drain(5.0)
    pipe.stop(1.0)
    assert len(sink.lines) == 1 and pipe.processor_failed == 1
