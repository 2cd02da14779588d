"""What the enrichment stage makes of events, byte for byte, through the real pipeline.

tests/fixtures/enrich/enriched.jsonl holds the JSON lines that
`enriched_lines()` produced with the stage and the dispatcher of commit
711e083 (before the stage answered by subscripts and the dispatcher
serialised a batch in chunks), so a change made for speed must give the same
bytes. The events cover every kind the stage treats apart, and the pod index
changes in the middle: names of the new index must appear at once.

    .venv/bin/python tests/unit/test_enrich_output.py --write   # only for an intended change of output
"""

import os
import sys

import orjson

from netagent.enrich.cri import PodInfo
from netagent.enrich.stage import Enricher
from netagent.events import new_event
from netagent.pipeline import Pipeline

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "enrich", "enriched.jsonl")
HOST = os.stat("/proc/self/ns/net").st_ino  # differs between machines: written as HOST_INODE
UNKNOWN = 4026530777  # no namespace has it: no pod, no name

API = PodInfo("sb1", "payments", "api-0", "u-1", pid=None, netns_inode=4026539001, ips=["10.1.0.2"],
              containers=[("c1", "api")])
WEB = PodInfo("sb2", "shop", "web-1", "u-2", pid=None, netns_inode=4026539002, ips=["10.1.0.3", "fd00::3"],
              containers=[("c2", "web"), ("c3", "sidecar")])  # two containers: none named
NEW = PodInfo("sb3", "ops", "new-0", "u-3", pid=None, netns_inode=4026539003, ips=["10.1.0.4"],
              containers=[("c4", "job")])


class Index:
    """The part of a PodIndex the stage reads, set by the test."""

    healthy = True

    def __init__(self, pods):
        self.generation = 0
        self.set(pods)

    def set(self, pods):
        self.by_netns = {p.netns_inode: p for p in pods}
        self.by_ip = {ip: p for p in pods for ip in p.ips}
        self.by_name = {p.key: p for p in pods}
        self.generation += 1  # what a refresh that found a change publishes

    def note_miss(self, inode):
        pass


class Collect:
    name, TYPE = "collect", "test"

    def __init__(self):
        self.lines = []

    def submit(self, line, event):
        self.lines.append(line)

    def losses(self):
        return {}

    def status(self):
        return {}


def event(dataset, n, **fields):
    ev = new_event(dataset=dataset, action="a", timestamp=1764672000.0 + n, **fields)
    ev["host"]["name"] = "test-host"  # fixed: the golden lines must not depend on the machine
    ev["agent"]["version"] = "test"
    return ev


def drop(n, netns, src=None, dst=None, ifindex=2, **extra):
    body = {"count": 1 + n % 5, "bytes": 84, "reason_raw": 3, "location": "__udp4_lib_rcv+0x4bc",
            "interface": None, "ifindex": ifindex, "netns": netns, **extra}
    ev = event("netagent.drops", n, network={"transport": "udp"}, netagent={"drop": body},
               source={"ip": src, "port": 1000 + n}, destination={"ip": dst, "port": 53})
    ev["event"]["reason"] = "NO_SOCKET"
    return ev


def first_events() -> list[dict]:
    """Every kind of event the stage treats apart, while API and WEB are the node's pods."""
    kinds = [
        lambda n: drop(n, API.netns_inode, WEB.ips[0], API.ips[0]),  # pod to pod
        lambda n: drop(n, API.netns_inode, "192.0.2.7", API.ips[0]),  # from outside to a pod
        lambda n: drop(n, WEB.netns_inode, API.ips[0], "198.51.100.1"),  # from a pod to outside
        lambda n: drop(n, WEB.netns_inode, WEB.ips[1], "fd00::99"),  # IPv6, second address of a pod
        lambda n: drop(n, HOST, "192.0.2.8", "10.96.0.10"),  # the node's namespace: host_network
        lambda n: drop(n, UNKNOWN, "172.16.0.1", "172.16.0.2", ifindex=0),  # no pod's, no name
        lambda n: _named(drop(n, API.netns_inode, WEB.ips[0], API.ips[0], ifindex=5)),
        lambda n: _without(drop(n, API.netns_inode, WEB.ips[0], API.ips[0]), "interface"),
        lambda n: drop(n, None, API.ips[0], WEB.ips[0], ifindex=0),  # no namespace: peers only
        lambda n: event("netagent.conntrack", n, netagent={"conntrack": {"netns": WEB.netns_inode, "drop": 1}},
                        source={"ip": WEB.ips[0]}, destination={"ip": API.ips[0]}),
        lambda n: event("netagent.mtu", n, netagent={"mtu": {"netns_inode": API.netns_inode, "pmtu": 1450}},
                        destination={"ip": WEB.ips[0]}),
        lambda n: event("netagent.dns", n, netagent={"dns": {"netns": "host", "rcode": "NOERROR"}},
                        source={"ip": "10.0.0.1"}, destination={"ip": "10.96.0.10"}),
        lambda n: event("netagent.agent", n, kind="state", netagent={"agent": {"uptime_s": n}}),
        lambda n: event("netagent.drops", n, netagent={"drop": {}}, source={"ip": API.ips[0]}),  # empty object
        lambda n: event("netagent.drops", n, netagent={"drop": {"count": 1, "netns": API.netns_inode, "ifindex": 0,
                                                                "interface": None}}),  # no addresses at all
        lambda n: drop(n, API.netns_inode, None, API.ips[0]),  # an address that is None
    ]
    # enough rounds for a batch of several of the dispatcher's chunks
    return [kinds[i % len(kinds)](i) for i in range(len(kinds) * 7)]


def _named(ev):
    ev["netagent"]["drop"]["interface"] = "veth-by-sensor"  # the sensor named it: kept
    return ev


def _without(ev, key):
    del ev["netagent"]["drop"][key]
    return ev


def after_change_events() -> list[dict]:
    """After the index changed: API gone, NEW arrived (same addresses and namespaces as before)."""
    return [
        drop(0, NEW.netns_inode, API.ips[0], NEW.ips[0]),  # the new pod, from the gone pod's address
        drop(1, API.netns_inode, WEB.ips[0], API.ips[0]),  # the gone pod's namespace: no name now
        drop(2, WEB.netns_inode, NEW.ips[0], WEB.ips[0]),
        drop(3, NEW.netns_inode, "192.0.2.7", NEW.ips[0]),
    ]


def enricher_for(index) -> Enricher:
    enricher = Enricher(index, node="node-1")
    for inode in (API.netns_inode, WEB.netns_inode, NEW.netns_inode, HOST):  # no netlink in a unit test
        enricher.namer._names[inode] = {1: "lo", 2: "ens5" if inode == HOST else "eth0"}
    return enricher


def enriched_lines() -> list[bytes]:
    index = Index([API, WEB])
    sink = Collect()
    pipeline = Pipeline([sink], capacity=1000, processors=[enricher_for(index)])
    first = first_events()
    assert pipeline.publish(first) == len(first)  # before start: the dispatcher takes one batch
    pipeline.start()
    try:
        assert pipeline.drain(10)
        index.set([WEB, NEW])
        later = after_change_events()
        assert pipeline.publish(later) == len(later)
        assert pipeline.drain(10)
    finally:
        pipeline.stop(5)
    return [line.replace(str(HOST).encode(), b"\"HOST_INODE\"") for line in sink.lines]


def test_enriched_events_are_byte_for_byte_what_they_were():
    lines = enriched_lines()
    with open(GOLDEN, "rb") as f:
        golden = f.read().splitlines(keepends=True)
    assert len(lines) == len(golden)
    for got, want in zip(lines, golden):
        assert got == want


def test_after_the_index_changes_the_new_pods_names_appear():
    """Independent of the golden file: the change itself is visible in the output."""
    lines = [orjson.loads(line) for line in enriched_lines()]
    later = lines[-len(after_change_events()):]
    assert later[0]["kubernetes"]["pod"]["name"] == "new-0"
    assert later[0]["netagent"]["drop"]["netns_name"] == "pod ops/new-0"
    assert later[0]["netagent"]["kubernetes"] == {"destination": {"namespace": "ops", "pod": "new-0"}}
    assert "orchestrator" not in later[1] and "netns_name" not in later[1]["netagent"]["drop"]
    assert later[1]["netagent"]["kubernetes"] == {"source": {"namespace": "shop", "pod": "web-1"}}
    assert later[2]["netagent"]["kubernetes"] == {"source": {"namespace": "ops", "pod": "new-0"},
                                                  "destination": {"namespace": "shop", "pod": "web-1"}}
    before = lines[0]  # the same addresses named the old pods before the change
    assert before["kubernetes"]["pod"]["name"] == "api-0"
    assert before["netagent"]["kubernetes"]["destination"]["pod"] == "api-0"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "wb") as f:
        f.writelines(enriched_lines())
