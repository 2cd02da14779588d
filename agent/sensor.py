"""The one contract every sensor follows (after Retina's plugin interface).

    check()  -> SensorStatus   can it run here, by which attach path; no side effects
    attach() -> str            load and attach; returns the attach path; undoes
                               partial setup and raises ProbeUnavailable /
                               InsufficientPrivilege on failure
    poll()   -> list[dict]     ECS events for everything seen since the last poll
                               (without event.sequence: the emitter stamps it)
    detach()                   idempotent; leaves nothing behind in the kernel
    losses() -> dict[str, int] cumulative counts of what this sensor lost, by
                               place ("kernel" for a full BPF map or buffer, ...)

The CLI (`netagent trace ...`) and the daemon (`netagent run`) drive
sensors the same way: attach, then poll every `interval` seconds, then detach.
"""

import abc
from dataclasses import dataclass, field


@dataclass
class SensorStatus:
    name: str
    can_run: bool
    attach_path: str | None = None  # e.g. "tracepoint skb:kfree_skb"
    reason: str | None = None  # why it cannot run, or a caveat
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {"name": self.name, "can_run": self.can_run, "attach_path": self.attach_path}
        if self.reason:
            out["reason"] = self.reason
        if self.details:
            out["details"] = self.details
        return out


class Sensor(abc.ABC):
    name: str = ""
    dataset: str = ""
    interval: float = 1.0

    @abc.abstractmethod
    def check(self) -> SensorStatus: ...

    @abc.abstractmethod
    def attach(self) -> str: ...

    @abc.abstractmethod
    def poll(self) -> list[dict]: ...

    @abc.abstractmethod
    def detach(self) -> None: ...

    def losses(self) -> dict[str, int]:
        return {}

    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()
        return False


class CounterHandover:
    """Exact reload hand-over for a sensor that reports rises of kernel counters between polls.

    On a reload the changed sensor's successor attaches before the predecessor detaches
    (netagent.daemon SensorRunner), so for a while both read the same counters. The
    successor starts in standby: its polls report nothing and leave its state alone.
    After the predecessor's last poll, release_predecessor() makes the predecessor's last
    readings the successor's baselines, so each rise is reported by exactly one of the
    two, whatever the timing. A subclass calls _standby_for(predecessor) in attach() and
    names in _adopt(predecessor) which readings it takes over.
    """

    supports_handover = True
    _predecessor = None

    def arm_handover(self) -> None:
        """The predecessor goes on counting as before until its last poll."""

    def disarm_handover(self) -> None:
        """Nothing to undo: arming changed nothing."""

    def retire(self) -> None:
        """Its runner is paused: the last poll after this is its last reading."""

    def _standby_for(self, predecessor) -> None:
        self._predecessor = predecessor

    @property
    def in_standby(self) -> bool:
        return self._predecessor is not None

    def release_predecessor(self) -> None:
        predecessor = self._predecessor
        if predecessor is not None:
            self._adopt(predecessor)
        self._predecessor = None  # last: a concurrent poll sees standby or the adopted baselines

    def _adopt(self, predecessor) -> None:
        raise NotImplementedError
