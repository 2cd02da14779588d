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
