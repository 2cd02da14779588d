"""[sensors.dns]: schema, validation through the agent's config loader, sensor contract."""

import socket

import pytest

from netagent import config as config_mod
from netagent.dns import sensor as dns_sensor
from netagent.errors import ConfigError


def load(text):
    return config_mod.parse(text, "test.toml")


def test_registered_and_defaults_leave_it_off_without_names():
    cfg = load("")
    table = cfg.sensors["dns"]
    assert table["names"] == [] and table["interval"] == 60.0 and table["timeout"] == 2.0
    s = dns_sensor.from_config(table)
    status = s.check()
    assert not status.can_run and "no names configured" in status.reason


@pytest.mark.parametrize("text, key", [
    ('[sensors.dns]\ntype = "MX"\n', "sensors.dns.type"),
    ('[sensors.dns]\nmode = "burst"\n', "sensors.dns.mode"),
    ('[sensors.dns]\ntransport = "quic"\n', "sensors.dns.transport"),
    ('[sensors.dns]\ncount = 0\n', "sensors.dns.count"),
    ('[sensors.dns]\nnames = [""]\n', "sensors.dns.names"),
    ('[sensors.dns]\nservers = ["dns.google"]\n', "sensors.dns.servers"),
    ('[sensors.dns]\ninterval = "0s"\n', "sensors.dns.interval"),
    ('[sensors.dns]\nnmes = ["x"]\n', "sensors.dns.nmes"),
])
def test_bad_values_are_config_errors_naming_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        load(text)
    assert key in str(info.value)


def test_attach_rejects_a_bad_name_as_usage():
    from netagent.errors import UsageError

    cfg = load('[sensors.dns]\nnames = ["bad..name"]\nservers = ["127.0.0.1"]\n')
    s = dns_sensor.from_config(cfg.sensors["dns"])
    assert s.check().can_run
    with pytest.raises(UsageError):
        s.attach()


def test_poll_on_loopback_returns_events_and_error_events():
    # a port nothing listens on: ICMP port unreachable, immediately
    probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe_sock.bind(("127.0.0.1", 0))
    port = probe_sock.getsockname()[1]
    probe_sock.close()
    cfg = load(f'[sensors.dns]\nnames = ["www.example.", "other.example."]\nservers = ["127.0.0.1:{port}"]\n'
               'count = 1\ntype = "A"\ninterval = "10s"\n')
    s = dns_sensor.from_config(cfg.sensors["dns"])
    assert "2 names" in s.attach()
    events = s.poll()
    assert [e["dns"]["question"]["name"] for e in events] == ["www.example", "other.example"]
    assert all(e["netagent"]["dns"]["refused"] == 1 for e in events)
    assert all("sequence" not in e["event"] for e in events)  # the emitter stamps it
    # the daemon's extra poll right after (at shutdown) does not probe again
    assert s.poll() == []
    assert s.losses() == {}
    s.detach()
