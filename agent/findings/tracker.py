"""Fire once per cause, clear when the cause goes.

Each evaluation hands the tracker the findings active now. A new key is
raised; a key already raised is repeated only when its severity changes
(finding-updated); a key missing for `clear_after` consecutive evaluations
is cleared (one missed sample — a quiet 10 s in the middle of an incident —
does not flap the alert).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from netagent.findings.model import Finding
from netagent.timefmt import iso_timestamp


@dataclass
class _Active:
    finding: Finding
    first_seen: str
    missing: int = 0


class FindingTracker:
    def __init__(self, clear_after: int = 3):
        if clear_after < 1:
            raise ValueError("clear_after must be at least 1")
        self.clear_after = clear_after
        self._active: dict[tuple[str, str], _Active] = {}
        self.raised = 0
        self.cleared = 0

    @property
    def active(self) -> list[Finding]:
        return [a.finding for a in self._active.values()]

    def update(self, found: list[Finding], now: float | None = None) -> list[dict]:
        """Events for what changed: finding-raised, finding-updated, finding-cleared."""
        now = time.time() if now is None else now
        events = []
        current = {}
        for f in found:
            # two findings with one key in one evaluation: keep the worse
            if f.key not in current or f.severity_value > current[f.key].severity_value:
                current[f.key] = f
        for key, f in current.items():
            entry = self._active.get(key)
            if entry is None:
                stamp = iso_timestamp(now)
                self._active[key] = _Active(f, stamp)
                self.raised += 1
                events.append(f.to_event("finding-raised", "active", now, stamp))
                continue
            entry.missing = 0
            if f.severity != entry.finding.severity:
                events.append(f.to_event("finding-updated", "active", now, entry.first_seen))
            entry.finding = f  # keep the latest evidence for the clear event
        for key in [k for k in self._active if k not in current]:
            entry = self._active[key]
            entry.missing += 1
            if entry.missing >= self.clear_after:
                del self._active[key]
                self.cleared += 1
                events.append(entry.finding.to_event("finding-cleared", "cleared", now, entry.first_seen))
        return events
