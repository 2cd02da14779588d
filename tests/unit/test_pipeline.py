"""The pipeline: one bounded queue, independent sinks, contiguous sequence, counted losses."""

import threading
import time

import orjson
import pytest

from netagent.events import new_event
from netagent.pipeline import EventQueue, Pipeline
from netagent.sinks.base import BufferedSink
from netagent.watchdog import IDLE_WAKE
from waiting import wait_until


class RecordingSink(BufferedSink):
    """Keeps what it was given; optionally slow (seconds per batch) or failing."""

    TYPE = "test"

    def __init__(self, name, capacity=100000, delay=0.0, fail=False, block: threading.Event | None = None):
        super().__init__(name, capacity)
        self.delay, self.fail, self.block = delay, fail, block
        self.lines: list[bytes] = []

    def deliver(self, batch):
        if self.block is not None:
            self.block.wait()
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise OSError("target is down")
        self.lines.extend(line for line, _ in batch)


class RaisingSink(RecordingSink):
    """A sink whose submit itself raises (a bug): the others must not notice."""

    def submit(self, line, event):
        raise RuntimeError("bug in a sink")


def events(n, dataset="netagent.test"):
    return [new_event(dataset=dataset, action="tick", netagent={"i": i}) for i in range(n)]


def sequences(sink):
    return [orjson.loads(line)["event"]["sequence"] for line in sink.lines]


@pytest.mark.timeout(30)
def test_a_stalled_sink_does_not_stall_sensors_or_other_sinks():
    gate = threading.Event()  # the stalled sink's target never answers until the end
    stalled = RecordingSink("stalled", capacity=1000, block=gate)
    fast = RecordingSink("fast")
    pipe = Pipeline([stalled, fast], capacity=100000)
    for s in (stalled, fast):
        s.start()
    pipe.start()
    t0 = time.monotonic()
    for _ in range(20):
        assert pipe.publish(events(1000)) == 1000
    publish_time = time.monotonic() - t0
    assert pipe.drain(10)
    assert fast.flush(10)
    # every event reached the healthy sink, in sequence order, while the other was stuck
    assert sequences(fast) == list(range(1, 20001))
    lost = pipe.losses()
    # the stalled sink holds its 1000-event buffer plus the batch it is stuck on; the rest is counted
    assert stalled.losses()["sink"] >= 20000 - 1000 - stalled.batch_max
    assert lost["sink"] == stalled.losses()["sink"] and lost["queue"] == 0
    assert publish_time < 5.0  # publishing never waited for a sink
    gate.set()
    stalled.close(5)
    fast.close(5)
    pipe.stop(5)
    # conservation: everything the dispatcher handed out was delivered or counted lost
    assert len(stalled.lines) + stalled.losses()["sink"] == 20000


@pytest.mark.timeout(30)
def test_slow_sink_keeps_up_with_its_buffer_and_loses_nothing():
    slow = RecordingSink("slow", delay=0.02)
    fast = RecordingSink("fast")
    pipe = Pipeline([slow, fast], capacity=100000)
    slow.start(), fast.start(), pipe.start()
    for _ in range(10):
        pipe.publish(events(500))
    assert pipe.drain(10) and slow.flush(20) and fast.flush(10)
    assert sequences(slow) == sequences(fast) == list(range(1, 5001))
    assert sum(pipe.losses().values()) == 0
    pipe.stop(5)


@pytest.mark.timeout(30)
def test_sequence_is_contiguous_across_concurrent_producers():
    sink = RecordingSink("all")
    pipe = Pipeline([sink], capacity=1000000)
    sink.start(), pipe.start()

    def producer(tag):
        for _ in range(50):
            pipe.publish(events(100, dataset=f"netagent.{tag}"))

    threads = [threading.Thread(target=producer, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipe.drain(10) and sink.flush(10)
    assert sequences(sink) == list(range(1, 20001))
    assert pipe.snapshot()["by_dataset"] == {f"netagent.p{i}": 5000 for i in range(4)}
    assert pipe.emitted == 20000 and pipe.sequencer.last == 20000
    pipe.stop(5)


def test_full_queue_drops_newest_and_counts_them():
    pipe = Pipeline([], capacity=100)  # dispatcher not started: nothing drains
    assert pipe.publish(events(60)) == 60
    assert pipe.publish(events(60)) == 40
    assert pipe.publish(events(5)) == 0
    assert pipe.losses()["queue"] == 25
    assert len(pipe.queue) == 100
    # the agent's own events wait a little for room, then count as lost too
    t0 = time.monotonic()
    assert pipe.publish_internal(events(1)[0], timeout=0.2) is False
    assert 0.15 < time.monotonic() - t0 < 2
    assert pipe.losses()["queue"] == 26


@pytest.mark.timeout(30)
def test_queue_losses_when_the_dispatcher_cannot_keep_up_are_exact():
    gate = threading.Event()
    sink = RecordingSink("gated", capacity=10**6)
    pipe = Pipeline([sink], capacity=1000)
    sink.start()
    accepted = sum(pipe.publish(events(100)) for _ in range(30))  # 3000 offered, 1000 fit
    pipe.start()
    gate.set()
    assert pipe.drain(10) and sink.flush(10)
    assert accepted == 1000 and pipe.losses()["queue"] == 2000
    # losses before the dispatcher are not sequence gaps: the sequence stays contiguous
    assert sequences(sink) == list(range(1, 1001))
    pipe.stop(5)


@pytest.mark.timeout(30)
def test_failing_and_raising_sinks_are_counted_and_isolated():
    down = RecordingSink("down", fail=True)
    buggy = RaisingSink("buggy")
    ok = RecordingSink("ok")
    pipe = Pipeline([down, buggy, ok], capacity=10000)
    for s in (down, buggy, ok):
        s.start()
    pipe.start()
    pipe.publish(events(300))
    assert pipe.drain(10) and down.flush(10) and ok.flush(10)
    assert len(ok.lines) == 300
    assert down.losses()["sink"] == 300 and "target is down" in down.status()["last_error"]
    assert pipe.losses()["sink"] == 300 + 300  # down's failures + buggy's submit errors
    pipe.stop(5)


@pytest.mark.timeout(30)
def test_close_is_bounded_and_counts_what_is_left():
    gate = threading.Event()
    stuck = RecordingSink("stuck", capacity=10000, block=gate)
    stuck.start()
    for line, ev in ((b"x\n", {}) for _ in range(2000)):
        stuck.submit(line, ev)
    t0 = time.monotonic()
    stuck.close(0.5)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0
    # the batch in flight may still finish later; everything else was abandoned and counted
    assert stuck.losses()["sink"] >= 2000 - stuck.batch_max
    assert stuck.submit(b"late\n", {}) is False  # closed sinks refuse, and count
    gate.set()


def test_event_queue_batches_in_order():
    q = EventQueue(10)
    q.put_many([{"n": i} for i in range(7)])
    assert [e["n"] for e in q.get_batch(5, 0)] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in q.get_batch(5, 0)] == [5, 6]
    assert q.get_batch(5, 0.01) == []


@pytest.mark.timeout(60)
def test_idle_threads_sleep_until_work_yet_stop_at_once():
    """The dispatcher and a sink's delivery thread wait IDLE_WAKE between looks when idle
    (issue 12: fewer wakeups); stop() and close() end them at once, not at their next look."""
    assert IDLE_WAKE >= 2.0  # longer than the joins below: only a prompt wakeup can pass
    sink = RecordingSink("idle")
    sink.start()
    pipeline = Pipeline([sink], capacity=100)
    pipeline.start()
    pipeline.publish(events(1))
    assert wait_until(lambda: len(sink.lines) == 1), "the event did not go through"
    pipeline.stop(1.0)  # joins the dispatcher for at most 1 s
    assert not pipeline._thread.is_alive(), "stop() left the dispatcher asleep"
    sink.close(1.0)  # joins the delivery thread for at most 1 s
    assert not sink._thread.is_alive(), "close() left the delivery thread asleep"


class ListSink:
    name, TYPE = "list", "test"

    def __init__(self):
        self.events = []

    def submit(self, line, event):
        self.events.append((orjson.loads(line), event))

    def losses(self):
        return {}

    def status(self):
        return {}


def test_processors_get_a_batch_in_chunks_each_serialised_before_the_next():
    """The dispatcher runs the processors on CHUNK events, then serialises those, then the
    next CHUNK (cache locality, see pipeline.CHUNK): every event still goes through every
    processor once, in order, with contiguous sequence numbers, and what a per-event
    processor adds travels with its chunk."""
    from netagent.pipeline import CHUNK

    seen_sizes, emitted_before = [], []
    sink = ListSink()

    class BatchStage:
        def process_batch(self, batch):
            seen_sizes.append(len(batch))
            emitted_before.append(len(sink.events))
            for event in batch:
                event["netagent"]["enriched"] = True
            return batch

    def finding_every_100th(event):
        out = [event]
        if event["netagent"]["i"] % 100 == 99:
            out.append(new_event(dataset="netagent.finding", action="found", netagent={"i": -1}))
        return out

    n = 3 * CHUNK + 5
    pipe = Pipeline([sink], capacity=1000, processors=[BatchStage(), finding_every_100th])
    assert pipe.publish(events(n)) == n  # before start: one batch of n for the dispatcher
    pipe.start()
    assert pipe.drain(5.0)
    pipe.stop(1.0)
    assert seen_sizes == [CHUNK, CHUNK, CHUNK, 5]
    # each chunk was sent on (with the findings its events made) before the next was processed
    findings_before = [sum(1 for i in range(k * CHUNK) if i % 100 == 99) for k in range(4)]
    assert emitted_before == [k * CHUNK + findings_before[k] for k in range(4)]
    lines = [line for line, _ in sink.events]
    assert [e["event"]["sequence"] for e in lines] == list(range(1, n + 1 + n // 100))
    assert [e["netagent"]["i"] for e in lines if e["event"]["dataset"] == "netagent.test"] == list(range(n))
    assert all(e["netagent"]["enriched"] for e in lines if e["event"]["dataset"] == "netagent.test")
    assert pipe.processor_failed == 0 and pipe.losses()["queue"] == 0


def test_a_dispatch_failure_in_a_later_chunk_counts_exactly_the_rest_lost():
    """A bug that ends dispatch in the middle of a batch: what was sent stays sent, the
    rest of the batch (the failed chunk's remainder and the chunks after it) is counted
    at 'queue', exactly."""
    from netagent.pipeline import CHUNK

    sink = ListSink()
    pipe = Pipeline([sink], capacity=1000, processors=[lambda event: [event]])
    real_stamp, calls = pipe.sequencer.stamp, {"n": 0}
    fail_at = CHUNK + 10  # the 11th event of the second chunk

    def stamp(event):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("a bug in dispatch")
        return real_stamp(event)

    pipe.sequencer.stamp = stamp
    n = 3 * CHUNK
    assert pipe.publish(events(n)) == n
    pipe.start()
    assert wait_until(lambda: pipe.losses()["queue"] > 0, timeout=10)
    assert pipe.drain(5.0)
    pipe.stop(1.0)
    assert len(sink.events) == fail_at - 1
    assert pipe.losses()["queue"] == n - (fail_at - 1)
