"""A finding: a named cause, the evidence for it, and what to do.

Findings are ECS alerts (event.kind "alert", event.dataset
"netagent.finding"). Each has a key (rule + subject): the tracker raises a
key once, re-raises it only when its severity changes, and clears it when
the cause has gone, so a SIEM gets one alert per cause, not one per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netagent.events import new_event

# Worst first. event.severity carries the number (ECS: higher is worse).
SEVERITIES = {"critical": 4, "high": 3, "medium": 2, "low": 1}


@dataclass
class Finding:
    rule: str  # stable id, e.g. "overlay-mtu"
    subject: str  # what it is about, e.g. "nsA/vx0"; (rule, subject) is the dedupe key
    severity: str  # critical, high, medium, low
    cause: str  # one sentence naming the cause, with the numbers
    remedy: str  # what to do about it
    evidence: dict = field(default_factory=dict)  # the counters/events used, with values
    netns: dict | None = None  # {"name", "inode"} when the cause is in one namespace
    category: str = ""  # overlay, cpu, conntrack, udp, field-guide

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    @property
    def severity_value(self) -> int:
        return SEVERITIES[self.severity]

    def as_dict(self) -> dict:
        out = {"rule": self.rule, "subject": self.subject, "severity": self.severity, "category": self.category,
               "cause": self.cause, "remedy": self.remedy, "evidence": self.evidence}
        if self.netns:
            out["netns"] = self.netns
        return out

    def to_event(self, action: str = "finding-raised", state: str = "active", timestamp: float | None = None,
                 first_seen: str | None = None) -> dict:
        """The ECS alert for this finding (action finding-raised, finding-updated or finding-cleared)."""
        body = self.as_dict()
        body["state"] = state
        if first_seen:
            body["first_seen"] = first_seen
        event = new_event(
            dataset="netagent.finding",
            action=action,
            kind="alert",
            category=["network"],
            type=["end"] if state == "cleared" else ["info"],
            timestamp=timestamp,
            message=(f"cleared: {self.cause}" if state == "cleared" else self.cause),
            rule={"id": self.rule, "name": self.rule, "category": self.category},
            netagent={"finding": body},
        )
        event["event"]["severity"] = self.severity_value
        event["event"]["reason"] = self.cause
        return event


def worst_first(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-f.severity_value, f.category, f.rule, f.subject))
