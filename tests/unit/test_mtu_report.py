"""Target parsing, size ranges, the ECS event, the table, the daemon sensor and CLI usage errors."""

import json
import os
import sys

import orjson
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from test_mtu_fakes import blackhole, icmp  # noqa: E402

from netagent.cli import main  # noqa: E402
from netagent.configschema import SchemaError, apply_schema  # noqa: E402
from netagent.errors import ProbeUnavailable, UsageError  # noqa: E402
from netagent.jsonline import dumps_line  # noqa: E402
from netagent.mtu import sensor as sensor_mod  # noqa: E402
from netagent.mtu.probe import MtuOptions, MtuReport, size_range  # noqa: E402
from netagent.mtu.report import error_event, is_finding, render, to_event  # noqa: E402
from netagent.mtu.search import search  # noqa: E402
from netagent.mtu.target import Target, check_syntax, resolve  # noqa: E402
from netagent.registry import SENSOR_MODULES, load_modules  # noqa: E402

# -- targets ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["10.0.0.1", "fd00::1", "fe80::1%lo", "db.internal", "a-b.example.", "localhost"])
def test_valid_target_syntax(text):
    check_syntax(text)


@pytest.mark.parametrize("text", ["", " 10.0.0.1", "999.1.1.1", "10.1", "-bad.example", "a..b", "has space",
                                  "x" * 300, "10.0.0.1%eth0", "under_score!", "foo/bar"])
def test_bad_target_syntax_is_a_usage_error(text):
    with pytest.raises(UsageError):
        check_syntax(text)


def test_resolve_literals_without_lookups():
    assert resolve("10.0.0.1") == Target("10.0.0.1", "10.0.0.1", 4)
    t = resolve("FD00::0001")
    assert (t.ip, t.family, t.sockaddr) == ("fd00::1", 6, ("fd00::1", 0, 0, 0))
    with pytest.raises(UsageError, match="link-local"):
        resolve("fe80::1")
    with pytest.raises(UsageError, match="unicast"):
        resolve("224.0.0.1")
    with pytest.raises(UsageError, match="IPv4"):
        resolve("10.0.0.1", family=6)
    with pytest.raises(UsageError, match="no interface"):
        resolve("fe80::1%nosuchif0")


# -- sizes -----------------------------------------------------------------


def test_size_range_defaults():
    assert size_range(MtuOptions(), 4, 1500) == (552, 1500)
    assert size_range(MtuOptions(), 6, 1500) == (1280, 1500)
    assert size_range(MtuOptions(), 4, 65536) == (552, 65535)  # loopback
    assert size_range(MtuOptions(), 6, 1000) == (1000, 1000)  # below the IPv6 minimum: probe what there is
    assert size_range(MtuOptions(max_size=9000), 4, 1500) == (552, 9000)


@pytest.mark.parametrize("opts,msg", [
    (MtuOptions(min_size=30, proto="tcp"), "at least 40"),
    (MtuOptions(min_size=2000), "above the egress interface MTU"),
    (MtuOptions(max_size=40, proto="tcp", family=6), "at least 60"),
])
def test_size_range_errors(opts, msg):
    with pytest.raises(UsageError, match=msg):
        size_range(opts, opts.family or 4, 1500)


@pytest.mark.parametrize("kwargs", [dict(proto="sctp"), dict(port=80), dict(proto="udp", port=70000),
                                    dict(timeout=0), dict(retries=11), dict(min_size=1500, max_size=1400)])
def test_option_validation(kwargs):
    with pytest.raises(UsageError):
        MtuOptions(**kwargs).validate()


# -- the event ---------------------------------------------------------------


def make_report(result, *, overlay=None, proto="icmp", name=None, interface="eth0", mtu=1500):
    return MtuReport(
        target=Target(name or "10.2.0.2", "10.2.0.2", 4, name=name), netns="client", netns_inode=4026531840, options=MtuOptions(proto=proto),
        source="10.1.0.2", interface=interface, interface_type="vxlan" if overlay else "veth", interface_mtu=mtu,
        overlay=overlay, lo=552, hi=mtu, result=result, kernel_mtu_before=None, kernel_mtu_after=1400,
        started=1700000000.0, duration_ns=123456789,
    )


def test_event_fields_for_a_blackhole():
    ev = to_event(make_report(search(blackhole(1400), 552, 1500)))
    assert ev["event"]["dataset"] == "netagent.mtu"
    assert ev["event"]["duration"] == 123456789
    assert ev["destination"]["ip"] == "10.2.0.2" and ev["source"]["ip"] == "10.1.0.2"
    assert ev["network"] == {"type": "ipv4", "transport": "icmp"}
    m = ev["netagent"]["mtu"]
    for key in ("path_mtu", "status", "interface", "interface_mtu", "probes", "icmp_from", "largest_ok",
                "smallest_lost", "overlay"):
        assert key in m, key
    assert (m["path_mtu"], m["status"], m["largest_ok"], m["smallest_lost"]) == (1400, "blackhole", 1400, 1401)
    assert m["probes"] == len(m["trace"])
    assert "black hole" in ev["message"]
    # valid JSON, one line
    line = dumps_line(ev)
    assert line.count(b"\n") == 1 and orjson.loads(line)["netagent"]["mtu"]["status"] == "blackhole"


def test_event_for_icmp_names_the_router():
    ev = to_event(make_report(search(icmp(1400, router="10.1.0.1"), 552, 1500), proto="tcp", name="web.lab"))
    m = ev["netagent"]["mtu"]
    assert (m["status"], m["path_mtu"], m["icmp_from"], m["icmp_mtu"], m["port"]) == ("icmp", 1400, "10.1.0.1", 1400, 443)
    assert ev["destination"] == {"ip": "10.2.0.2", "domain": "web.lab", "port": 443}
    assert "10.1.0.1" in ev["message"]


def test_overlay_mismatch_is_a_finding_and_explained():
    overlay = {"type": "vxlan", "underlay": "eth0", "underlay_mtu": 1500, "overhead": 50, "expected_mtu": 1450,
               "configured_mtu": 1500, "mismatch": True}
    report = make_report(search(icmp(1500), 552, 1500), overlay=overlay, interface="vx0")
    assert is_finding(report)
    ev = to_event(report)
    assert ev["netagent"]["mtu"]["overlay"]["mismatch"] is True
    assert "leaves room for 1450" in ev["message"] and "fragmented them" in ev["message"]
    assert "MISMATCH" in render(ev)


def test_icmp_path_without_overlay_is_not_a_finding():
    assert not is_finding(make_report(search(icmp(1400), 552, 1500)))
    assert is_finding(make_report(search(blackhole(1400), 552, 1500)))


def test_table_view():
    ev = to_event(make_report(search(icmp(1400, router="10.1.0.1"), 552, 1500)))
    text = render(ev, verbose=True)
    header = text.splitlines()[0].split()
    assert header[:6] == ["TARGET", "PROTO", "IFACE", "IF_MTU", "PATH_MTU", "STATUS"]
    row = text.splitlines()[1].split()
    assert row[:6] == ["10.2.0.2", "icmp", "eth0", "1500", "1400", "icmp"]
    assert "too_big" in text  # the per-probe listing


def test_error_event_is_valid_json():
    ev = error_event("db.internal", "pid:1", MtuOptions(), "cannot resolve 'db.internal': no such host", 1.0, 5)
    assert ev["netagent"]["mtu"]["status"] == "unreachable" and ev["event"]["outcome"] == "failure"
    assert ev["destination"] == {"address": "db.internal", "domain": "db.internal"}
    json.loads(dumps_line(ev))


# -- the daemon sensor -------------------------------------------------------


def test_registered_for_the_daemon():
    assert "netagent.mtu.sensor" in SENSOR_MODULES
    mod = next(m for m in load_modules() if m.path == "netagent.mtu.sensor")
    assert mod.loaded and mod.section == "mtu"
    cfg = apply_schema(mod.schema, {"enabled": True, "interval": "2m",
                                    "targets": ["10.0.0.7", {"target": "db.internal", "proto": "tcp", "port": 5432}]})
    assert cfg["interval"] == 120.0 and cfg["targets"][1] == {"target": "db.internal", "proto": "tcp", "port": 5432}
    s = mod.from_config(cfg)
    assert s.period == 120.0 and s.interval <= 5.0


@pytest.mark.parametrize("targets,msg", [
    (["999.1.1.1"], "not a valid IP"),
    ([{"target": "x", "color": "red"}], "unknown key 'color'"),
    ([{"proto": "icmp"}], "needs target"),
    ([{"target": "x", "proto": "sctp"}], "proto must be"),
    ([{"target": "x", "port": 0}], "port must be"),
    ([42], "expected a host"),
])
def test_sensor_config_errors_name_the_target(targets, msg):
    schema = dict(sensor_mod.CONFIG_SCHEMA)
    with pytest.raises(SchemaError, match=msg):
        apply_schema(schema, {"targets": targets})


def test_sensor_is_off_by_default_and_without_targets():
    cfg = apply_schema(sensor_mod.CONFIG_SCHEMA, {})
    assert cfg["enabled"] is False
    status = sensor_mod.from_config(cfg).check()
    assert not status.can_run and "no targets" in status.reason


def test_sensor_poll_turns_failures_into_events(monkeypatch):
    calls = []

    def fake_probe(text, ns, opts):
        calls.append((text, opts.proto, opts.port))
        if text == "10.9.9.9":
            raise ProbeUnavailable("10.9.9.9 is unreachable from here: no route to host")
        return make_report(search(icmp(1400), 552, 1500))

    monkeypatch.setattr(sensor_mod, "probe_path", fake_probe)
    s = sensor_mod.MtuSensor([{"target": "10.2.0.2"}, {"target": "10.9.9.9", "proto": "udp"}], interval=60)
    events = s.poll()
    assert [e["netagent"]["mtu"]["status"] for e in events] == ["icmp", "unreachable"]
    assert "no route" in events[1]["netagent"]["mtu"]["error"]
    assert calls == [("10.2.0.2", "icmp", None), ("10.9.9.9", "udp", None)]
    assert s.poll() == []  # not due again until `interval` has passed
    assert s.probe_failures == 1


# -- the command line ----------------------------------------------------------


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("argv", [
    ["probe", "mtu", "999.1.1.1"],
    ["probe", "mtu", "not a host"],
    ["probe", "mtu", "10.0.0.1", "--min", "1500", "--max", "1400"],
    ["probe", "mtu", "10.0.0.1", "--proto", "sctp"],
    ["probe", "mtu", "10.0.0.1", "--port", "80"],
    ["probe", "mtu", "10.0.0.1", "--timeout", "soon"],
    ["probe", "mtu", "10.0.0.1", "--netns", "nat-no-such-namespace-xyz"],
])
def test_usage_errors_are_one_line_exit_2(argv, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
