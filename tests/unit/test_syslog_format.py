"""RFC 5424 formatting, RFC 6587 octet framing, reconnect backoff, syslog sink configuration."""

import json
import os
import re
import sys

import pytest

from netagent import __version__
from netagent.configschema import SchemaError, apply_schema
from netagent.events import Sequencer, new_event
from netagent.jsonline import dumps_line
from netagent.sinks import sink_class
from netagent.sinks.base import COMMON_SCHEMA
from netagent.sinks.syslog import Backoff, SyslogSink, format_message, octet_frame, severity_of

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from rsyslog_lab import make_ca, make_certs, parse_message  # noqa: E402

# RFC 5424 section 6 ABNF, specialised to what we emit (SD present, MSG is JSON)
SD_NAME = r"[!#-<>-\\^-~]{1,32}"  # PRINTUSASCII except '=', ']', '"' (and SP)
PARAM_VALUE = r'"(?:[^"\\\]]|\\["\\\]])*"'  # '"', '\' and ']' escaped
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 "
    r"(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    r"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    rf"(?P<sd>(?:\[{SD_NAME}(?: {SD_NAME}={PARAM_VALUE})*\])+) "
    r"(?P<msg>.*)$",
    re.S,
)


def drop_event(seq=1, **extra):
    ev = new_event(dataset="netagent.drops", action="packet-dropped", category=["network"], type=["denied"],
                   timestamp=1714557600.123456, **extra)
    ev["event"]["sequence"] = seq
    return ev


def fmt(ev, **kw):
    kw.setdefault("facility", 16)
    return format_message(dumps_line(ev), ev, **kw)


def test_message_fields_follow_rfc5424():
    ev = drop_event(seq=17, host={"name": "node-1"})
    msg = fmt(ev, app_name="netagent", procid=4242)
    text = msg.decode("ascii")
    m = RFC5424.match(text)
    assert m, text
    assert int(m["pri"]) == 16 * 8 + 6  # local0, informational
    assert m["ts"] == "2024-05-01T10:00:00.123456Z" == ev["@timestamp"]
    assert m["host"] == "node-1"
    assert m["app"] == "netagent"
    assert m["procid"] == "4242"
    assert m["msgid"] == "netagent.drops"
    assert m["sd"] == f'[meta sequenceId="17"][origin software="netagent" swVersion="{__version__}"]'
    assert json.loads(m["msg"]) == json.loads(dumps_line(ev))
    assert not m["msg"].endswith("\n")


def test_parse_helper_agrees():
    header, event = parse_message(fmt(drop_event(seq=3)).decode())
    assert header["msgid"] == "netagent.drops" and event["event"]["sequence"] == 3


def test_non_ascii_json_is_sent_as_ascii_escapes_without_bom():
    ev = drop_event(netagent={"drop": {"interface": "vxlan.café", "note": "日本 \U0001F600"}})
    msg = fmt(ev)
    assert msg.isascii()
    assert b"\xef\xbb\xbf" not in msg  # no BOM needed: MSG is ASCII
    _, decoded = parse_message(msg.decode())
    assert decoded["netagent"]["drop"] == {"interface": "vxlan.café", "note": "日本 \U0001F600"}


def test_hostile_header_values_are_made_printable():
    ev = drop_event(host={"name": "bad host\nname"})
    ev["event"]["dataset"] = "x" * 40 + " y"
    text = fmt(ev, app_name="netagent").decode()
    m = RFC5424.match(text)
    assert m, text
    assert m["host"] == "bad_host_name"
    assert len(m["msgid"]) == 32 and " " not in m["msgid"]


def test_missing_or_odd_timestamp_is_replaced_by_now():
    ev = drop_event()
    ev["@timestamp"] = "yesterday"
    m = RFC5424.match(fmt(ev).decode())
    assert m and m["ts"] != "yesterday" and m["ts"].endswith("Z")


def test_sequence_id_wraps_as_rfc5424_says_but_json_keeps_it():
    ev = drop_event(seq=2147483647 + 5)
    header, decoded = parse_message(fmt(ev).decode())
    assert '[meta sequenceId="5"]' in header["sd"]
    assert decoded["event"]["sequence"] == 2147483652


def test_event_without_sequence_has_no_meta():
    ev = new_event(dataset="netagent.agent", action="agent-started")
    assert "meta" not in fmt(ev).decode().split("{", 1)[0]


@pytest.mark.parametrize("event,severity", [
    ({"event": {"kind": "event"}}, 6),
    ({"event": {"kind": "metric"}}, 6),
    ({"event": {"kind": "alert"}}, 4),
    ({"log": {"level": "error"}, "event": {"kind": "event"}}, 3),
    ({"log": {"level": "WARNING"}}, 4),
    ({"log": "not a dict"}, 6),
])
def test_severity(event, severity):
    assert severity_of(event) == severity


def test_facility_goes_into_pri():
    assert fmt(drop_event(), facility=3).startswith(b"<30>1 ")  # daemon.info


def test_octet_framing_counts_bytes():
    assert octet_frame(b"hello") == b"5 hello"
    msg = fmt(drop_event())
    framed = octet_frame(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)


def test_sequencer_and_formatter_together_are_contiguous():
    seq = Sequencer()
    got = [parse_message(fmt(seq.stamp(new_event(dataset="d", action="a"))).decode())[1]["event"]["sequence"]
           for _ in range(5)]
    assert got == [1, 2, 3, 4, 5]


def test_backoff_doubles_up_to_the_cap_and_resets():
    b = Backoff(0.5, 5.0, rand=lambda: 0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_jitter_only_shortens():
    b = Backoff(1.0, 8.0, jitter=0.2, rand=lambda: 1.0)
    delays = [b.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 6.4])
    assert all(d <= 8.0 for d in delays)


def test_backoff_survives_many_failures():
    b = Backoff(0.5, 30.0, rand=lambda: 0.0)
    for _ in range(10000):
        d = b.next_delay()
    assert d == 30.0


# -- configuration -------------------------------------------------------------------------
SCHEMA = {**COMMON_SCHEMA, **SyslogSink.CONFIG_SCHEMA}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


def cfg(tmp_path, **values):
    base = {"type": "syslog", "spool_dir": str(tmp_path / "spool")}
    base.update(values)
    out = apply_schema(SCHEMA, base)
    SyslogSink.validate_config(out)
    return out


def test_registered_as_the_syslog_type():
    assert sink_class("syslog") is SyslogSink
    for key in ("address", "tls", "ca_file", "cert_file", "key_file", "spool_dir", "spool_max_bytes",
                "app_name", "facility", "resend_window", "reconnect_max"):
        assert key in SyslogSink.CONFIG_SCHEMA


def test_valid_configuration(tmp_path, certs):
    c = cfg(tmp_path, address="127.0.0.1:6514", ca_file=certs.ca, cert_file=certs.client_cert,
            key_file=certs.client_key, spool_max_bytes="1MiB", resend_window="500ms")
    assert c["spool_max_bytes"] == 2**20 and c["resend_window"] == 0.5


def test_ca_file_that_is_not_a_certificate(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not PEM\n")
    with pytest.raises(SchemaError) as err:
        cfg(tmp_path, ca_file=str(bogus))
    assert err.value.key == "ca_file" and "cannot load CA certificates" in err.value.message


def test_missing_ca_file(tmp_path):
    with pytest.raises(SchemaError) as err:
        cfg(tmp_path, ca_file=str(tmp_path / "nope.pem"))
    assert err.value.key == "ca_file" and "no such file" in err.value.message


def test_client_key_not_matching_certificate(tmp_path, certs):
    with pytest.raises(SchemaError) as err:
        cfg(tmp_path, ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.server_key)
    assert err.value.key == "cert_file" and "cannot load client certificate" in err.value.message


@pytest.mark.parametrize("address", ["collector", "127.0.0.1:0", "127.0.0.1:99999", "::1:6514", "a b:1"])
def test_bad_address(tmp_path, certs, address):
    with pytest.raises(SchemaError) as err:
        cfg(tmp_path, ca_file=certs.ca, address=address)
    assert err.value.key == "address"


def test_plain_tcp_needs_no_ca(tmp_path):
    c = cfg(tmp_path, tls=False, ca_file="", address="[::1]:514")
    assert c["tls"] is False


def test_unknown_facility(tmp_path, certs):
    with pytest.raises(SchemaError) as err:
        cfg(tmp_path, ca_file=certs.ca, facility="kern")
    assert err.value.key == "facility"


def test_other_ca_still_loads(tmp_path):
    # a wrong CA is a valid file: configuration accepts it, the connection refuses (tested elsewhere)
    ca, _ = make_ca(str(tmp_path), "other", "other CA")
    assert cfg(tmp_path, ca_file=ca)["ca_file"] == ca
