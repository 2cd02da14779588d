"""Correlation: from raw counters and events to "the cause is X".

model.py      Finding (cause, evidence, remedy) and its ECS alert form
rules.py      the rules, pure functions over a Context; RuleConfig thresholds
tracker.py    fire once per cause, clear when it goes
correlator.py the pipeline processor (event) -> [event, *findings] for the daemon
"""

from netagent.findings.correlator import Correlator
from netagent.findings.model import Finding
from netagent.findings.rules import Context, RuleConfig, evaluate

__all__ = ["Context", "Correlator", "Finding", "RuleConfig", "evaluate"]
