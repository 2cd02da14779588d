"""The command line through click's CliRunner and netagent.cli.main."""

import sys

import pytest
from click.testing import CliRunner

from netagent import __version__
from netagent.cli import cli, main


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_version_and_help():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(cli, ["trace", "drops", "--help"])
    assert r.exit_code == 0 and "--reason" in r.output and "--netns" in r.output


@pytest.mark.parametrize("args,needle", [
    (["trace", "drops", "--output", "xml"], "'table', 'json'"),
    (["trace", "drops", "--proto", "sctp"], "'tcp', 'udp', 'icmp', 'other'"),
    (["trace", "drops", "--port", "70000"], "1<=x<=65535"),
    (["trace", "drops", "--interval", "0"], "0.05<=x<=3600"),
    (["trace", "drops", "--bogus"], "No such option"),
    (["doctor", "--output", "yaml"], "'table', 'json'"),
])
def test_bad_option_values_exit_2_with_one_line_naming_the_choices(args, needle, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert out == ""


def test_missing_bcc_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    # An entry of None in sys.modules makes `import bcc` raise ImportError.
    monkeypatch.setitem(sys.modules, "bcc", None)
    monkeypatch.setenv("NETAGENT_CACHE_DIR", str(tmp_path))  # nothing compiled before: BCC is needed
    from netagent import privileges

    monkeypatch.setattr(privileges, "missing_for_bpf", lambda: [])
    code, _, err = run_main(["trace", "drops", "--duration", "1"], capsys)
    assert code == 69
    assert "apt-get install python3-bpfcc" in err and len(err.strip().splitlines()) == 1


def test_not_root_exits_77_naming_the_missing_capabilities(monkeypatch, capsys):
    from netagent import privileges

    monkeypatch.setattr(privileges, "effective_capabilities", lambda: set())
    code, _, err = run_main(["trace", "drops", "--duration", "1"], capsys)
    assert code == 77
    assert "CAP_BPF" in err and "CAP_PERFMON" in err and len(err.strip().splitlines()) == 1


def test_bad_netns_is_a_usage_error(capsys):
    code, _, err = run_main(["trace", "drops", "--netns", "no-such-ns-xyz", "--duration", "1"], capsys)
    assert code in (2, 77)  # 77 when run without privileges: checked first
    assert len(err.strip().splitlines()) == 1


def test_endpoints_bracket_ipv6_before_a_port():
    from netagent.output import endpoint, host_port

    assert host_port("10.0.0.1", 53) == "10.0.0.1:53"
    assert host_port("fd00::1", 53) == "[fd00::1]:53"
    assert endpoint({"ip": "fd00::1"}) == "fd00::1"
    assert endpoint({"ip": "10.0.0.1", "port": 9}) == "10.0.0.1:9"
    assert endpoint(None) == "-" and endpoint({}, missing="?") == "?"
