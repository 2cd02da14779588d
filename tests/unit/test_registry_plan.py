"""registry.plan_sensor: the one decision `run` and `doctor` share."""

import types

import pytest

from netagent.errors import UsageError
from netagent.host.procfs import ProcFormatError
from netagent.registry import SensorConfigRejected, SensorModule, plan_sensor
from netagent.sensor import SensorStatus


def module_raising(exc):
    class Sensor:
        def check(self):
            raise exc

    mod = types.SimpleNamespace(from_config=lambda cfg: Sensor())
    return SensorModule("test.mod", "probe", {}, mod)


def test_unreadable_node_data_is_off_not_a_configuration_error():
    plan = plan_sensor(module_raising(ProcFormatError("softnet_stat line 1 is not hexadecimal")), {})
    assert plan.state == "off" and "not hexadecimal" in plan.reason


@pytest.mark.parametrize("exc", [UsageError("unknown reason NOPE"), ValueError("bad filter")])
def test_a_rejected_table_is_a_configuration_error(exc):
    with pytest.raises(SensorConfigRejected):
        plan_sensor(module_raising(exc), {})


def test_ready_sensor_carries_its_caveats_as_notes():
    class Sensor:
        announce = None

        def check(self):
            return SensorStatus("probe", True, "hook", "degraded: counters only", {"caveat": "old kernel"})

    mod = types.SimpleNamespace(from_config=lambda cfg: Sensor())
    heard = []
    plan = plan_sensor(SensorModule("test.mod", "probe", {}, mod), {}, announce=heard.append)
    assert plan.state == "ready" and plan.notes == ["degraded: counters only", "old kernel"]
    assert plan.sensor.announce == heard.append
    assert plan_sensor(SensorModule("test.mod", "probe", {}, mod), {"enabled": False}).state == "disabled"


def test_daemon_runner_reads_unreadable_node_data_at_attach_as_off():
    from netagent.daemon import RateLimitedLog, SensorRunner

    class Sensor:
        def check(self):
            return SensorStatus("probe", True, "hook")

        def attach(self):
            raise ProcFormatError("softnet_stat line 3 is not hexadecimal")

    mod = types.SimpleNamespace(from_config=lambda cfg: Sensor())
    runner = SensorRunner("probe", SensorModule("test.mod", "probe", {}, mod), {}, None, RateLimitedLog())
    runner.start()  # not ConfigError (exit 78): the configuration is fine, the node's data is not
    assert runner.state == "off" and "not hexadecimal" in runner.reason
