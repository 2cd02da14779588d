"""`--config` on the one-off commands (trace drops, trace conntrack, probe mtu, probe dns, check):
the file `netagent run` reads, validated by the same loader before the command does anything.

Nothing here attaches BPF or sends a packet: each case ends at the configuration or at the
usage check. tests/k8s/test_commands_config.py shows the [kubernetes] section reaching events.
"""

import pytest

from netagent import config as config_mod
from netagent.cli import main

pytestmark = pytest.mark.timeout(60)

COMMANDS = {
    "trace drops": ["trace", "drops"],
    "trace conntrack": ["trace", "conntrack"],
    "probe mtu": ["probe", "mtu", "127.0.0.1"],
    "probe dns": ["probe", "dns", "www.example."],
    "check": ["check"],
}


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_invalid_kubernetes_key_exits_78_naming_it(command, tmp_path, capsys):
    path = tmp_path / "netagent.toml"
    path.write_text('[kubernetes]\nrefesh = "5s"\n')
    code, out, err = run_main([*COMMANDS[command], "--config", str(path)], capsys)
    assert code == 78, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{path}:kubernetes.refesh: unknown key" in lines[0]
    assert out == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_a_named_file_that_is_missing_exits_78(command, tmp_path, capsys):
    path = tmp_path / "absent.toml"
    code, _, err = run_main([*COMMANDS[command], "--config", str(path)], capsys)
    assert code == 78 and err.strip() == f"netagent: {path}: no such file", err


@pytest.mark.parametrize("command", COMMANDS)
def test_pod_with_netns_still_exits_2_with_a_valid_config(command, tmp_path, capsys):
    path = tmp_path / "netagent.toml"
    path.write_text('[kubernetes]\nrefresh = "5s"\nnode_name = "node-a"\n')
    code, out, err = run_main([*COMMANDS[command], "--config", str(path), "--pod", "shop/api-0",
                               "--netns", "host"], capsys)
    assert code == 2, err
    assert err.strip().splitlines() == ["netagent: --pod and --netns both select a namespace: give one of them"]


def test_without_config_a_missing_default_file_is_the_embedded_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", str(tmp_path / "no-such-netagent.toml"))
    code, _, err = run_main(["check", "--pod", "shop/api-0", "--netns", "host"], capsys)
    assert code == 2, err  # got past the configuration to the usage check


def test_an_invalid_default_file_is_rejected_as_run_rejects_it(tmp_path, monkeypatch, capsys):
    path = tmp_path / "netagent.toml"
    path.write_text("[kubernetes]\nenabled = 3\n")
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", str(path))
    code, _, err = run_main(["check"], capsys)
    assert code == 78 and f"{path}:kubernetes.enabled" in err, err


def test_probe_dns_keeps_c_for_count(capsys):
    code, _, err = run_main(["probe", "dns", "www.example.", "-c", "0"], capsys)
    assert code == 2 and "--count" in err and "1<=x<=1000000" in err, err
