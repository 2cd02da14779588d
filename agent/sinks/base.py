"""The sink contract: where the pipeline's events go.

The pipeline serialises each event once and hands the same bytes to every
sink with `submit(line, event)`. A sink must never block the caller: it
keeps its own bounded buffer and its own delivery thread, and counts what
it has to drop. That is what lets a dead syslog collector or a full disk
leave the sensors and the other sinks untouched.

    start()                 open resources, start the delivery thread; raise
                            configschema.SchemaError(key, message) if the
                            configured target cannot be used at all (unwritable
                            path, port in use): the daemon reports it as
                            `<file>: sinks[N].<key>: <message>`, exit 78
    submit(line, event)     non-blocking; False (and counted) when dropped
    flush(timeout)          wait until everything accepted so far is delivered
    close(timeout)          stop accepting, deliver what is buffered within
                            `timeout`, release resources; leftovers are counted
    reopen()                SIGHUP: reopen files (logrotate), reconnect
    losses()                cumulative counts by place: "sink" (buffer full,
                            write failed, left over at close), "spool" (syslog)
    status()                for heartbeats: name, type, health, buffered, delivered

Configuration: each class has TYPE (the `type = "..."` of its [[sinks]]
table), CONFIG_SCHEMA in the netagent.configschema format (COMMON_SCHEMA
keys are added for every sink) and `from_config(cfg)`. Optional
`validate_config(cfg)` checks rules that span keys and raises SchemaError.
Register new classes in netagent.sinks.SINK_TYPES. The syslog sink's keys
and rules are in netagent.sinks.syslog_config (SCHEMA, validate).

Most sinks subclass `BufferedSink`, which implements the buffer, the
thread and the counting; they only write `deliver(batch)`.
"""

import abc
import collections
import threading
import time

from netagent.configschema import positive
from netagent.watchdog import IDLE_WAKE, WATCHDOG

# Keys every [[sinks]] table may have, whatever its type.
COMMON_SCHEMA = {
    "type": ("str", ""),
    # shown in heartbeats and metrics; defaults to the type ("file", "file-2", ...)
    "name": ("str", ""),
    # events this sink may hold while its target is slow; beyond that it drops and counts
    "buffer_events": ("int", 20000, positive),
}


class Sink(abc.ABC):
    TYPE: str = ""
    CONFIG_SCHEMA: dict = {}

    name: str = ""

    @classmethod
    def from_config(cls, cfg: dict) -> "Sink":
        """Build from a validated table (defaults merged, durations in s, sizes in bytes)."""
        raise NotImplementedError

    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        """Cross-key rules; raise configschema.SchemaError(key, message)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def submit(self, line: bytes, event: dict) -> bool: ...

    @abc.abstractmethod
    def flush(self, timeout: float) -> bool: ...

    @abc.abstractmethod
    def close(self, timeout: float) -> None: ...

    def reopen(self) -> None:
        """SIGHUP: reopen files / reconnect. Default: nothing to reopen."""

    @abc.abstractmethod
    def losses(self) -> dict[str, int]: ...

    def status(self) -> dict:
        return {"name": self.name, "type": self.TYPE}

    def observe_agent(self, snapshot) -> None:
        """Give the sink a callable returning the agent's counters (see
        pipeline.Pipeline.snapshot). Only sinks that export agent state
        (prometheus) use it."""


class BufferedSink(Sink):
    """A bounded buffer drained by one delivery thread in batches.

    Subclasses implement `deliver(batch)` (a list of (line, event) tuples;
    raise OSError or any exception when the batch could not be delivered)
    and optionally `open()`, `shutdown()`, `reopen_target()` and
    `abandon(items)`. All of these run on the delivery thread except
    `open()`, which runs in `start()` so a bad target fails the start.
    """

    batch_max = 512

    def __init__(self, name: str, capacity: int = 20000):
        self.name = name
        self.capacity = capacity
        self._buf: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._reopen_requested = False
        self._shutdown_lock = threading.Lock()
        self._shut = False
        self.stopping = threading.Event()  # set by close(); long waits in deliver() should watch it
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._dropped = 0  # buffer full or not accepting
        self._failed = 0  # deliver() raised
        self._abandoned = 0  # still buffered at close
        self.delivered = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None

    # -- hooks for subclasses ---------------------------------------------------
    def open(self) -> None:
        """Open the target (runs in start(); raise to fail the start)."""

    @abc.abstractmethod
    def deliver(self, batch: list[tuple[bytes, dict]]) -> int | None:
        """Deliver a batch; return how many were delivered (None: all of them).
        A sink that counts its own partial failures returns the count; raising
        counts the whole batch lost via on_delivery_error()."""

    def reopen_target(self) -> None:
        """Reopen on the delivery thread after a SIGHUP."""

    def shutdown(self) -> None:
        """Release the target on the delivery thread at close."""

    def abandon(self, items: list[tuple[bytes, dict]]) -> None:
        """Items left when close() ran out of time. Default: count them lost.
        A sink with durable storage (syslog's spool) overrides this."""
        self._abandoned += len(items)

    def on_delivery_error(self, exc: BaseException, batch: list) -> None:
        """A batch failed. Default: count it lost and remember why."""
        self._failed += len(batch)
        self.record_error(exc)

    # -- the contract -----------------------------------------------------------
    def record_error(self, exc) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
        self.last_error_time = time.time()

    def start(self) -> None:
        self.open()
        self._accepting = True
        # a failure outside deliver() (a bug) restarts the loop, counted and
        # explained in the heartbeat (netagent.watchdog), instead of ending it
        self._thread = WATCHDOG.start(f"sink-{self.name}", self._loop, self.stopping,
                                      on_failure=self._after_failure, after=self._safe_shutdown)

    def submit(self, line: bytes, event: dict) -> bool:
        # deque append/len are atomic under the GIL; the bound is soft by at most
        # the number of concurrent submitters, which is one (the dispatcher).
        if not self._accepting or len(self._buf) >= self.capacity:
            self._dropped += 1
            return False
        self._buf.append((line, event))
        if not self._wake.is_set():
            self._wake.set()
        return True

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._buf or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float) -> None:
        self._accepting = False
        self.flush(timeout)
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            # deliver() of an in-flight batch may still be running; give it a
            # short grace so a dead target cannot hold up exit for long.
            self._thread.join(max(0.5, min(timeout, 2.0)))
        left = self._drain_all()
        if left:
            self.abandon(left)
        if self._thread is None or not self._thread.is_alive():
            self._safe_shutdown()

    def reopen(self) -> None:
        self._reopen_requested = True
        self._wake.set()

    def losses(self) -> dict[str, int]:
        return {"sink": self._dropped + self._failed + self._abandoned}

    def status(self) -> dict:
        out = {
            "name": self.name,
            "type": self.TYPE,
            "buffered": len(self._buf),
            "delivered": self.delivered,
            "lost": self.losses(),
            "healthy": self.last_error is None or (time.time() - (self.last_error_time or 0)) > 60,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- delivery thread ----------------------------------------------------------
    def _drain_all(self) -> list:
        items = []
        while True:
            try:
                items.append(self._buf.popleft())
            except IndexError:
                return items

    def _take_batch(self) -> list:
        batch = []
        buf = self._buf
        for _ in range(self.batch_max):
            try:
                batch.append(buf.popleft())
            except IndexError:
                break
        return batch

    def _after_failure(self, exc: BaseException) -> None:
        self.record_error(exc)
        with self._idle:
            self._in_flight = 0

    def _loop(self) -> None:
        while True:
            if self._reopen_requested:
                self._reopen_requested = False
                try:
                    self.reopen_target()
                except Exception as exc:  # keep running; deliver() will report again
                    self.record_error(exc)
            with self._idle:
                batch = self._take_batch()
                self._in_flight = len(batch)
            if not batch:
                with self._idle:
                    self._idle.notify_all()
                if self.stopping.is_set():
                    break
                self._wake.clear()
                # after clear(): whatever sets _wake after setting these (submit, reopen, close) wakes us
                if not self._buf and not self._reopen_requested and not self.stopping.is_set():
                    self._wake.wait(IDLE_WAKE)
                continue
            try:
                n = self.deliver(batch)
                self.delivered += len(batch) if n is None else n
            except Exception as exc:
                self.on_delivery_error(exc, batch)
            finally:
                with self._idle:
                    self._in_flight = 0

    def _safe_shutdown(self) -> None:
        # called by the thread when it ends, or by close() when the thread is gone
        with self._shutdown_lock:
            if self._shut:
                return
            self._shut = True
        try:
            self.shutdown()
        except Exception as exc:
            self.record_error(exc)
