"""drops.FlowFeed: the drop sensor's flows passed on to the conntrack correlation (one program, not two)."""

from types import SimpleNamespace

from netagent.probes.drops import FlowFeed, FlowTuple

NETFILTER_DROP = 12


class Publisher(SimpleNamespace):
    """What the feed uses of a DropSensor: its reason names, attach path and renderer."""

    def flush_to_feed(self):
        self.flushed = getattr(self, "flushed", 0) + 1

    def render(self, flows, now):
        return [{"key": k, "count": v.count, "first": v.first_ns, "last": v.last_ns} for k, v in flows]


def publisher():
    return Publisher(_reasons={2: "NO_SOCKET", NETFILTER_DROP: "NETFILTER_DROP"}, attach_path="tp_btf skb:kfree_skb")


def flow(reason=NETFILTER_DROP, netns=7, sport=1000, count=1, first=10, last=20):
    """One drained flow as the sensor publishes it: the packed kernel key and its totals."""
    key = FlowTuple(netns, 2, reason, 0x0800, 17, 0xFFFF, b"\x0a" * 16, b"\x0b" * 16, sport, 9999)
    return key.pack(), [count, count * 30, first, last]


def test_no_publisher_no_subscription():
    assert FlowFeed().subscribe("NETFILTER_DROP") is None


def test_flows_of_the_reason_and_namespace_add_up_between_takes():
    feed, pub = FlowFeed(), publisher()
    feed.add_publisher(pub)
    sub = feed.subscribe("NETFILTER_DROP", netns=7)
    feed.publish(pub, dict([flow(count=2, first=10, last=20), flow(reason=2), flow(netns=8)]))
    feed.publish(pub, dict([flow(count=3, first=5, last=30)]))
    events = sub.take(now=0.0)
    assert [(e["count"], e["first"], e["last"]) for e in events] == [(5, 5, 30)]
    assert sub.take(now=0.0) == []
    assert pub.flushed == 2  # each take first has the publisher drain up to that moment
    assert "shared with the drop sensor" in sub.attach_path


def test_flows_past_the_bound_are_counted_as_lost():
    feed, pub = FlowFeed(), publisher()
    feed.add_publisher(pub)
    sub = feed.subscribe("NETFILTER_DROP", max_flows=3)
    feed.publish(pub, dict(flow(sport=p, count=2) for p in range(5)))
    assert len(sub.take(now=0.0)) == 3
    assert sub.lost == 4


def test_subscribers_learn_when_the_last_publisher_goes():
    feed, old, new = FlowFeed(), publisher(), publisher()
    feed.add_publisher(old)
    sub = feed.subscribe("NETFILTER_DROP")
    feed.add_publisher(new)  # a reload: the successor attaches before the predecessor detaches
    feed.remove_publisher(old)
    assert not sub.gone
    feed.publish(old, dict([flow()]))  # a detached sensor publishes nothing
    assert sub.take(now=0.0) == []
    feed.remove_publisher(new)
    assert sub.gone


def test_a_reason_this_kernel_does_not_name_cannot_be_subscribed():
    feed, pub = FlowFeed(), publisher()
    feed.add_publisher(pub)
    assert feed.subscribe("NO_SUCH_REASON") is None
