"""`netagent probe dns` through netagent.cli.main: usage errors, exit codes, clean output.

Traffic only to loopback responders started here; no privileges needed
(plain UDP to an address the process can reach needs none).
"""

import json
import socket

import pytest
from dns_lab import HostileResponder

from netagent.cli import main

pytestmark = pytest.mark.timeout(60)


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "dns", *args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("args, needle", [
    (["a..b", "--server", "127.0.0.1"], "empty label"),
    (["x" * 64 + ".example", "--server", "127.0.0.1"], "longer than 63"),
    (["." + "a" * 10, "--server", "127.0.0.1"], "empty first label"),
    (["www.example", "--server", "dns.google"], "not an IP address"),
    (["www.example", "--server", "10.0.0.1:99999"], "port must be 1-65535"),
    (["www.example", "--server", "[fd00::1"], "missing ']'"),
    (["www.example", "--server", "10.0.0.1%eth0"], "only applies to IPv6"),
    (["www.example", "--count", "0"], "1<=x<=1000000"),
    (["www.example", "--interval", "soon"], "bad duration"),
    (["www.example", "--timeout", "-1s"], "bad duration"),
    (["www.example", "--mode", "burst"], "parallel-same-socket"),
    (["www.example", "--type", "MX"], "'A', 'AAAA', 'both'"),
    (["www.example", "--netns", "no-such-netns-xyz"], "no such namespace"),
    (["www.example", "--resolv-conf", "/nonexistent/resolv.conf"], "no such file"),
])
def test_usage_errors_exit_2_with_one_line(args, needle, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert out == ""


def _closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_nothing_listening_exits_69_with_the_reason(capsys):
    port = _closed_port()
    code, out, err = run_main(["www.example.", "--server", f"127.0.0.1:{port}", "--count", "2",
                               "--interval", "0", "--timeout", "1s", "-o", "json"], capsys)
    assert code == 69
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no DNS server answered" in lines[0] and "refused" in lines[0], err
    # the measurements are still on stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["dns"]["question"]["type"] for e in events} == {"A", "AAAA"}
    assert all(e["netagent"]["dns"]["refused"] == 2 for e in events)


def test_hostile_server_output_is_clean_json(capsys, tmp_path):
    main_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main_sock.bind(("127.0.0.1", 0))
    port = main_sock.getsockname()[1]
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port.bind(("127.0.0.1", 0))
    other_addr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_addr.bind(("127.0.0.2", port))
    h = HostileResponder(main_sock, other_port, other_addr)
    resolv = tmp_path / "resolv.conf"
    # a search domain with control characters too: it reaches the names we report
    resolv.write_text("nameserver 127.0.0.1\nsearch \x1b[31mevil.example ok.example\noptions ndots:2\n")
    try:
        code, out, err = run_main(["www", "--resolv-conf", str(resolv), "--server", f"127.0.0.1:{port}",
                                   "--count", "2", "--interval", "0", "--timeout", "1s", "-o", "json"], capsys)
    finally:
        h.stop()
    assert code == 0, err
    assert not any(ord(c) < 0x20 and c != "\n" for c in out)
    events = [json.loads(line) for line in out.splitlines()]
    first = events[0]
    assert first["dns"]["question"]["name"] == "www.\\x1b[31mevil.example"
    assert first["dns"]["resolved_ip"] == ["10.9.9.9"]
    per_query = h.expected_invalid_per_query()
    assert sum(e["netagent"]["dns"]["invalid"] for e in events) == per_query * sum(
        e["netagent"]["dns"]["queries"] for e in events)
    assert [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))


def test_table_output(capsys):
    port = _closed_port()
    code, out, err = run_main(["www.example.", "--server", f"127.0.0.1:{port}", "--count", "1",
                               "--timeout", "1s", "-o", "table"], capsys)
    assert code == 69
    assert "NAME" in out and "P95 ms" in out and f"127.0.0.1:{port}" in out
    assert "tries: www.example." in out
