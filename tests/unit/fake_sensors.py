"""Test-double sensors for `netagent run` as a real process (tests/unit/test_pipeline_daemon.py).

The child process is started as

    python fake_sensors.py <state dir> <module spec JSON> run --config FILE

which registers fake sensor modules (netagent_test_<name>) in the registry and
then runs the real CLI, so signals go to that process and never to pytest.
Each fake writes what happened to it into the state directory, for the test
to read: <name>.<k>.created, .attached, and .detached (holding the last n).
"""

import json
import os
import sys
import types

from netagent import registry
from netagent.errors import InsufficientPrivilege, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.sensor import Sensor, SensorStatus

ERRORS = {"ProbeUnavailable": ProbeUnavailable, "InsufficientPrivilege": InsufficientPrivilege,
          "UsageError": UsageError}


class FakeSensor(Sensor):
    def __init__(self, name, k, state_dir, interval, per_poll, kernel_lost, can_run=True, attach_error=None,
                 reject=False):
        self.name, self.k, self.state_dir = name, k, state_dir
        self.interval = interval
        self.per_poll = per_poll
        self.kernel_lost = kernel_lost
        self.can_run = can_run
        self.attach_error = attach_error or (("UsageError", "this configuration is rejected") if reject else None)
        self.n = 0
        self._mark("created")

    def _mark(self, what, text=""):
        with open(os.path.join(self.state_dir, f"{self.name}.{self.k}.{what}"), "w") as f:
            f.write(text)

    def check(self):
        return SensorStatus(self.name, self.can_run, "fake hook" if self.can_run else None,
                            None if self.can_run else "fake kernel lacks the hook")

    def attach(self, predecessor=None):
        if self.attach_error:
            kind, message = self.attach_error
            raise ERRORS[kind](message)
        self._mark("attached")
        if predecessor is not None:
            self._step(f"attach after {predecessor.name}.{predecessor.k}")
        return f"fake hook ({self.name})"

    def _step(self, what):
        with open(os.path.join(self.state_dir, "handover.log"), "a") as f:
            f.write(f"{self.name}.{self.k} {what}\n")

    def poll(self):
        out = []
        for _ in range(self.per_poll):
            self.n += 1
            out.append(new_event(dataset=f"netagent.{self.name}", action="fake", netagent={"n": self.n, "k": self.k}))
        return out

    def detach(self):
        self._mark("detached", str(self.n))
        self._step("detach")

    def losses(self):
        return {"kernel": self.kernel_lost}


class HandoverFakeSensor(FakeSensor):
    """Follows the drop sensor's hand-over protocol (netagent.probes.drops) and logs each step."""

    supports_handover = True
    retired = False

    def arm_handover(self):
        self._step("arm")

    def disarm_handover(self):
        self._step("disarm")

    def retire(self):
        self.retired = True
        self._step("retire")

    def release_predecessor(self):
        self._step("release predecessor")

    def poll(self):
        if self.retired:
            self._step("poll after retire")
        return super().poll()


def fake_module(name, state_dir, **behaviour):
    mod = types.ModuleType(f"netagent_test_{name}")
    mod.CONFIG_SECTION = name
    mod.CONFIG_SCHEMA = {"enabled": ("bool", True), "interval": ("duration", 0.05), "per_poll": ("int", 3),
                         "kernel_lost": ("int", 0), "reject": ("bool", False)}
    made = []

    behaviour = dict(behaviour)
    cls = HandoverFakeSensor if behaviour.pop("handover", False) else FakeSensor

    def from_config(cfg):
        s = cls(name, len(made), state_dir, cfg["interval"], cfg["per_poll"], cfg["kernel_lost"],
                reject=cfg["reject"], **behaviour)
        made.append(s)
        return s

    mod.from_config = from_config
    sys.modules[mod.__name__] = mod
    return mod


def install(state_dir: str, spec: dict) -> None:
    """spec: {"modules": [name or "missing:<name>", ...], "behaviour": {name: {...}}}"""
    paths = []
    for name in spec["modules"]:
        if name.startswith("missing:"):
            paths.append(f"netagent_test_{name.split(':', 1)[1]}")
            continue
        fake_module(name, state_dir, **spec.get("behaviour", {}).get(name, {}))
        paths.append(f"netagent_test_{name}")
    registry.SENSOR_MODULES[:] = paths


if __name__ == "__main__":
    state, spec = sys.argv[1], json.loads(sys.argv[2])
    install(state, spec)
    from netagent.cli import main

    main(sys.argv[3:])
