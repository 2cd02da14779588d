"""Bounded, expiring label values for Prometheus metrics.

A label whose values come from the node (interface names, pods) grows with
churn: every pod brings a veth, every veth would become series that live
until the agent restarts. LabelSlots gives a value its own series while
there is a free slot and counts the rest under "other", like a fixed
table would; unlike one, it gives slots back:

  * a value whose `alive(value)` check says it is gone (the interface was
    deleted, the pod removed) is expired once it has been quiet for
    `grace` seconds (quiet, so a late event of a just-deleted veth does not
    flap its series);
  * any value quiet for `idle` seconds is expired, whatever `alive` says;
  * `forget(value)` expires it at once (a caller that knows, e.g. a pod
    watcher seeing the deletion).

Expiring a value removes every series created with it (register them with
`track(value, metric, labelvalues)`), so the number of series stays bounded
by the slots, not by the history. A value that comes back later gets a
fresh series: Prometheus reads that as a counter reset, which rate() and
increase() handle.

    slots = LabelSlots(64, alive=interface_exists)
    iface = slots("veth1a2b")             # "veth1a2b", or "other" when full
    drops.labels(reason, iface).inc(n)
    slots.track(iface, drops, (reason, iface))
    slots.sweep()                         # now and then (the sink does it on submit and scrape)
"""

from __future__ import annotations

import threading
import time
from typing import Callable

OVERFLOW_LABEL = "other"


class LabelSlots:
    def __init__(self, limit: int, *, alive: Callable[[str], bool] | None = None, grace: float = 60.0,
                 idle: float = 900.0, sweep_every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.alive = alive
        self.grace = grace
        self.idle = idle
        self.sweep_every = sweep_every
        self.clock = clock
        self._lock = threading.RLock()
        self._last_seen: dict[str, float] = {}
        self._series: dict[str, set[tuple]] = {}  # value -> {(metric, labelvalues)}
        self._next_sweep = clock() + sweep_every
        self.overflowed = 0  # values counted under "other" because every slot was taken
        self.expired = 0  # values whose slot was given back

    def __call__(self, value: str) -> str:
        """The label to use for `value`: itself while it has a slot, else "other"."""
        with self._lock:
            now = self.clock()
            if now >= self._next_sweep:
                self._sweep(now)
            if value in self._last_seen:
                self._last_seen[value] = now
                return value
            if len(self._last_seen) >= self.limit:
                self._sweep(now)  # a gone value may free a slot for this one
            if len(self._last_seen) < self.limit:
                self._last_seen[value] = now
                return value
            self.overflowed += 1
            return OVERFLOW_LABEL

    def track(self, value: str, metric, labelvalues: tuple) -> None:
        """Remember a series made with `value`, to remove it when the value expires."""
        if value == OVERFLOW_LABEL:
            return
        with self._lock:
            if value in self._last_seen:
                self._series.setdefault(value, set()).add((metric, tuple(labelvalues)))

    def forget(self, value: str) -> None:
        with self._lock:
            self._expire(value)

    def sweep(self) -> list[str]:
        """Expire what is gone or idle now; returns the values expired."""
        with self._lock:
            return self._sweep(self.clock())

    @property
    def values(self) -> list[str]:
        with self._lock:
            return sorted(self._last_seen)

    def status(self) -> dict:
        with self._lock:
            return {"used": len(self._last_seen), "limit": self.limit, "overflowed": self.overflowed,
                    "expired": self.expired}

    # -- internals (lock held) ----------------------------------------------------------
    def _sweep(self, now: float) -> list[str]:
        self._next_sweep = now + self.sweep_every
        gone = []
        for value, seen in list(self._last_seen.items()):
            quiet = now - seen
            if quiet >= self.idle or (quiet >= self.grace and self.alive is not None and not self._alive(value)):
                gone.append(value)
        for value in gone:
            self._expire(value)
        return gone

    def _alive(self, value: str) -> bool:
        try:
            return bool(self.alive(value))
        except Exception:
            return True  # cannot tell: keep it until it is idle

    def _expire(self, value: str) -> None:
        if self._last_seen.pop(value, None) is None:
            return
        self.expired += 1
        for metric, labelvalues in self._series.pop(value, ()):
            try:
                metric.remove(*labelvalues)
            except KeyError:
                pass
