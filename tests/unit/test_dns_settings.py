"""From flags and resolv.conf options to probe settings."""

import pytest

from netagent.dns.exchange import Server
from netagent.dns.settings import parse_server, prepare
from netagent.errors import UsageError


@pytest.mark.parametrize("spec, server", [
    ("10.0.0.1", Server("10.0.0.1", 53)),
    ("10.0.0.1:5353", Server("10.0.0.1", 5353)),
    ("fd00::1", Server("fd00::1", 53)),
    ("[fd00::1]:5353", Server("fd00::1", 5353)),
    ("[FD00:0::1]", Server("fd00::1", 53)),
    ("fe80::1%eth0", Server("fe80::1", 53, "eth0")),
    ("[fe80::1%2]:53", Server("fe80::1", 53, "2")),
])
def test_parse_server(spec, server):
    assert parse_server(spec) == server


def test_server_text_round_trips():
    assert str(Server("10.0.0.1", 53)) == "10.0.0.1:53"
    assert str(Server("fd00::1", 5353)) == "[fd00::1]:5353"
    assert str(Server("fe80::1", 53, "eth0")) == "[fe80::1%eth0]:53"


@pytest.mark.parametrize("spec", ["", "example.com", "10.0.0.1:0", "10.0.0.1:x", "[fd00::1]x", "1.2.3.4.5"])
def test_bad_servers(spec):
    with pytest.raises(UsageError):
        parse_server(spec)


def write(tmp_path, text):
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    return str(path)


def test_defaults_follow_resolv_conf(tmp_path):
    p = prepare("www", resolv_conf=write(tmp_path, "nameserver 10.0.0.9\nnameserver fd00::9\noptions timeout:3\n"))
    s = p.settings
    assert s.servers == [Server("10.0.0.9"), Server("fd00::9")]
    assert s.types == ("A", "AAAA") and s.mode == "parallel-same-socket" and s.tcp is False
    assert s.timeout == 3.0 and s.edns is False and s.ad is False


def test_resolver_options_change_the_defaults(tmp_path):
    path = write(tmp_path, "nameserver 10.0.0.9\noptions single-request use-vc no-aaaa edns0 trust-ad timeout:0\n")
    s = prepare("www", resolv_conf=path).settings
    assert s.mode == "sequential" and s.tcp is True and s.types == ("A",)
    assert s.edns is True and s.ad is True
    assert s.timeout == 1.0  # glibc waits at least one second
    # flags win over the file
    s = prepare("www", resolv_conf=path, mode="parallel-sockets", tcp=False, qtype="both", timeout=0.5).settings
    assert s.mode == "parallel-sockets" and s.tcp is False and s.types == ("A", "AAAA") and s.timeout == 0.5


def test_notes_say_what_was_defaulted(tmp_path):
    p = prepare("www", resolv_conf=write(tmp_path, "search a.example\n"))
    assert p.settings.servers == [Server("127.0.0.1")]
    assert any("127.0.0.1" in n for n in p.notes)
