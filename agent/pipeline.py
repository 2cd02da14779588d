"""The event pipeline: sensors -> one bounded queue -> dispatcher -> sinks.

    sensor threads --publish()--> EventQueue (bounded) --> dispatcher thread
                                                            | stamps event.sequence
                                                            | serialises once (orjson)
                                                            v
                                      sink.submit(line, event) for every sink
                                      (each sink: own bounded buffer + thread)

Nothing here blocks a sensor: a full queue drops the newest events and
counts them ("queue"); a slow sink fills only its own buffer and counts
its own drops ("sink"). event.sequence is stamped by the single dispatcher,
so the sequence order is the delivery order and it is contiguous across
everything that reaches the sinks: a gap a SIEM sees is a loss after the
queue (a sink or spool), and the agent reports the same loss in its counters.
"""

import collections
import threading
import time

from netagent.events import Sequencer
from netagent.jsonline import dumps_line
from netagent.watchdog import IDLE_WAKE, WATCHDOG

PLACES = ("kernel", "queue", "sink", "spool")
# The dispatcher runs the processors and serialises a batch this many events at a time. The first
# processor (the enrichment stage) is the first to touch an event's dicts since the sensor built
# them, mostly from main memory; serialising those events right after, while they are still in the
# CPU's cache, is cheaper than the stage's pass over a whole batch (1024 events, a few MB of dicts)
# followed by a second pass that fetches them again. bench/enrich_micro.py, stage + encoding per
# event (median of 5): 3.8 us in passes of 1000, 3.3 of 256, 3.0 of 64 and of 16, 3.4 of 1 (the
# processors' calls per chunk take over).
CHUNK = 64


class EventQueue:
    """A bounded FIFO of events, put in and taken out in batches."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self._closing = False  # see set_closing

    def __len__(self):
        return len(self._items)

    def put_many(self, events: list[dict]) -> int:
        """Enqueue what fits; return how many were accepted. Never blocks."""
        with self._cond:
            room = self.capacity - len(self._items)
            accepted = events if len(events) <= room else events[:max(room, 0)]
            self._items.extend(accepted)
            self.dropped += len(events) - len(accepted)
            if accepted:
                self._cond.notify()
        return len(accepted)

    def put_wait(self, event: dict, timeout: float) -> bool:
        """Enqueue one event, waiting up to `timeout` for room (agent's own events)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.dropped += 1
                    return False
                self._cond.wait(min(left, 0.05))
            self._items.append(event)
            self._cond.notify()
        return True

    def set_closing(self, closing: bool) -> None:
        """While closing, get_batch() never waits: the dispatcher sees its stop at once,
        however long its idle wait, and whenever the stop came."""
        with self._cond:
            self._closing = closing
            self._cond.notify_all()

    def get_batch(self, max_items: int, timeout: float) -> list[dict]:
        with self._cond:
            if not self._items and not self._closing:
                self._cond.wait(timeout)
            n = min(max_items, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            if batch:
                self._cond.notify_all()  # wake put_wait() callers waiting for room
            return batch


class Pipeline:
    def __init__(self, sinks: list, capacity: int = 65536, sequencer: Sequencer | None = None, batch: int = 1024,
                 processors: list | None = None):
        self.queue = EventQueue(capacity)
        self.sequencer = sequencer or Sequencer()
        self.batch = batch
        self._sinks = list(sinks)
        self._retired_losses: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._busy = False
        self.emitted = 0
        self.by_dataset: dict[str, int] = {}
        self.encode_failed = 0
        self.dispatch_failed = 0  # events of a batch whose dispatch raised (watchdog restarted it)
        self._batch_mark: tuple[int, int] | None = None  # (batch size, emitted+encode_failed before it)
        self.submit_failed = 0
        # structlog-style processors run on the dispatcher thread before stamping:
        # each is (event) -> list of events (the event itself plus anything it adds,
        # e.g. netagent.findings.Correlator); one that raises passes the event on as it was.
        # One with process_batch(events) -> events gets the whole batch in one call
        # (netagent.enrich.stage.Enricher: per-event calls would cost more than its work).
        self.processors = list(processors or [])
        self.processor_failed = 0

    # -- producers ------------------------------------------------------------------
    def publish(self, events: list[dict]) -> int:
        """From sensor threads: never blocks; what does not fit is counted as queue loss."""
        if not events:
            return 0
        return self.queue.put_many(events)

    def publish_internal(self, event: dict, timeout: float = 2.0) -> bool:
        """The agent's own lifecycle/heartbeat events: worth a short wait for room."""
        return self.queue.put_wait(event, timeout)

    # -- consumer -------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self.queue.set_closing(False)
        # a bug in dispatch must not end the agent's only path to its sinks:
        # the watchdog restarts the loop, counts it and says why (heartbeat)
        self._thread = WATCHDOG.start("pipeline-dispatch", self._run, self._stop, on_failure=self._after_failure)

    def _after_failure(self, exc: BaseException) -> None:
        # what was left of the batch when dispatch failed never reached a sink: counted
        if self._batch_mark is not None:
            size, before = self._batch_mark
            self.dispatch_failed += max(0, size - (self.emitted + self.encode_failed - before))
            self._batch_mark = None
        self._busy = False

    def _run(self) -> None:
        while True:
            batch = self.queue.get_batch(self.batch, IDLE_WAKE)  # woken by a publish or by stop()
            if not batch:
                self._busy = False
                if self._stop.is_set():
                    return
                continue
            self._busy = True
            sinks = self._sinks  # one reference per batch: a reload swaps the list whole
            processors = self.processors
            self._batch_mark = (len(batch), self.emitted + self.encode_failed)
            for start in range(0, len(batch), CHUNK):
                part = batch[start:start + CHUNK]
                if processors:
                    part = self._process(part)
                    # what a failure from here on would lose: this part (as processed) and the rest
                    self._batch_mark = (len(part) + max(0, len(batch) - start - CHUNK),
                                        self.emitted + self.encode_failed)
                self._emit(part, sinks)
            self._batch_mark = None
            self._busy = len(self.queue) > 0

    def _emit(self, events: list[dict], sinks: list) -> None:
        """Stamp, serialise once and hand to every sink."""
        stamp = self.sequencer.stamp
        by_dataset = self.by_dataset
        for event in events:
            stamp(event)
            try:
                line = dumps_line(event)
            except Exception:
                # the sequence number is spent: a visible gap, counted here
                self.encode_failed += 1
                continue
            self.emitted += 1
            dataset = event["event"].get("dataset", "")
            by_dataset[dataset] = by_dataset.get(dataset, 0) + 1
            for sink in sinks:
                try:
                    sink.submit(line, event)
                except Exception:
                    self.submit_failed += 1

    def _process(self, batch: list[dict]) -> list[dict]:
        for processor in self.processors:
            whole = getattr(processor, "process_batch", None)
            if whole is not None:
                # a batch processor (the enrichment stage): one call per batch, it never drops an event
                try:
                    batch = whole(batch)
                except Exception:
                    self.processor_failed += len(batch)
                continue
            out: list[dict] = []
            for event in batch:
                try:
                    out.extend(processor(event))
                except Exception:
                    self.processor_failed += 1
                    out.append(event)
            batch = out
        return batch

    def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and the dispatcher has handed everything to the sinks."""
        deadline = time.monotonic() + timeout
        while len(self.queue) or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float) -> bool:
        drained = self.drain(timeout)
        self._stop.set()
        self.queue.set_closing(True)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        return drained

    # -- sinks ----------------------------------------------------------------------
    @property
    def sinks(self) -> list:
        return list(self._sinks)

    def set_sinks(self, sinks: list) -> None:
        """Swap the sink set (reload). Removed sinks must be closed by the caller,
        then passed to retire() so their losses stay in the totals."""
        self._sinks = list(sinks)

    def retire(self, sink) -> None:
        for place, n in sink.losses().items():
            self._retired_losses[place] = self._retired_losses.get(place, 0) + n

    # -- counters -------------------------------------------------------------------
    def losses(self) -> dict[str, int]:
        """Losses downstream of the sensors; the daemon adds the sensors' "kernel" count."""
        lost = {place: 0 for place in PLACES}
        lost["queue"] = self.queue.dropped + self.encode_failed + self.dispatch_failed
        for place, n in self._retired_losses.items():
            lost[place] = lost.get(place, 0) + n
        lost["sink"] += self.submit_failed
        for sink in self._sinks:
            for place, n in sink.losses().items():
                lost[place] = lost.get(place, 0) + n
        return lost

    def processing(self) -> dict:
        """The processors' own health: events a processor failed on (passed on unprocessed,
        so not lost, but unenriched or uncorrelated) and each status() a processor offers
        (the correlator's under its `status_name`, e.g. "findings")."""
        out: dict = {"failed": self.processor_failed}
        for processor in self.processors:
            status = getattr(processor, "status", None)
            if callable(status):
                name = getattr(processor, "status_name", None) or type(processor).__name__.lower()
                try:
                    out[name] = status()
                except Exception as exc:  # a status bug must not break the heartbeat
                    out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    def snapshot(self) -> dict:
        return {
            "emitted": self.emitted,
            "processing": self.processing(),
            "last_sequence": self.sequencer.last,
            "by_dataset": dict(self.by_dataset),
            "lost": self.losses(),
            "queue_depth": len(self.queue),
            "queue_capacity": self.queue.capacity,
            "sinks": [sink.status() for sink in self._sinks],
        }
