"""`netagent doctor --config`: the configuration `run` would use, judged by the same code (issue 13, item 10)."""

import json
import textwrap

import pytest

from netagent import config as config_mod
from netagent import registry
from netagent.cli import main


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(autouse=True)
def quick_facts(monkeypatch):
    # the kernel facts (BTF, fentry probe, BCC) are doctor's other half, tested in tests/kernel
    monkeypatch.setattr("netagent.nodefacts.node_facts", lambda: {"kernel": "test"})


def write(tmp_path, text):
    path = tmp_path / "netagent.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


ONLY_DNS = """
    [sensors.drops]
    enabled = false
    [sensors.conntrack]
    enabled = false
    [sensors.host]
    enabled = false
    [sensors.mtu]
    enabled = false
    [sensors.dns]
    names = ["www.example.test."]
    servers = ["127.0.0.1"]
    """


def test_dns_with_names_configured_is_runnable(tmp_path, capsys):
    path = write(tmp_path, ONLY_DNS)
    code, out, err = run_main(["doctor", "--config", path, "-o", "json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["config"] == path
    sensors = {s["name"]: s for s in report["sensors"]}
    assert sensors["dns"]["can_run"] is True
    assert sensors["dns"]["attach_path"] == "active DNS probe (1 names, own netns)"
    for name in ("drops", "conntrack", "host", "mtu"):
        assert sensors[name]["can_run"] is False
        assert sensors[name]["details"]["state"] == "disabled in the configuration"
    # the same decision `run` makes before attaching
    cfg = config_mod.load(path)
    plans = {m.section: registry.plan_sensor(m, cfg.sensors[m.section]).state for m in cfg.sensor_modules}
    assert plans == {"drops": "disabled", "conntrack": "disabled", "host": "disabled", "mtu": "disabled",
                     "dns": "ready"}


def test_nothing_runnable_exits_69_with_the_reasons(tmp_path, capsys):
    path = write(tmp_path, ONLY_DNS.replace('names = ["www.example.test."]', "names = []"))
    code, out, _ = run_main(["doctor", "-c", path, "-o", "json"], capsys)
    assert code == 69
    (dns,) = [s for s in json.loads(out)["sensors"] if s["name"] == "dns"]
    assert not dns["can_run"] and dns["reason"].startswith("no names configured")


def test_invalid_configuration_exits_78_with_one_line_naming_the_key(tmp_path, capsys):
    path = write(tmp_path, "[sensors.dns]\nnames = 3\n")
    code, out, err = run_main(["doctor", "--config", path], capsys)
    assert code == 78 and out == ""
    assert err.count("\n") == 1 and f"{path}:sensors.dns.names" in err


def test_missing_configuration_file_exits_78(tmp_path, capsys):
    code, _, err = run_main(["doctor", "--config", str(tmp_path / "absent.toml")], capsys)
    assert code == 78 and "no such file" in err and err.count("\n") == 1


def test_doctor_names_the_architecture_facts(tmp_path, capsys):
    import platform

    from netagent.bpfsys import ARCHES

    path = write(tmp_path, ONLY_DNS)
    code, out, _ = run_main(["doctor", "--config", path, "-o", "json"], capsys)
    arch = json.loads(out)["architecture"]
    assert arch["machine"] == platform.machine() and arch["supported"] is True
    assert arch["bpf_syscall"] == ARCHES[platform.machine()].sys_bpf
    assert f"bpf(2) is syscall {arch['bpf_syscall']}" in arch["detail"]


def test_doctor_says_an_unknown_architecture_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "sparc64")
    path = write(tmp_path, ONLY_DNS)
    code, out, _ = run_main(["doctor", "--config", path, "-o", "json"], capsys)
    arch = json.loads(out)["architecture"]
    assert arch == {"machine": "sparc64", "supported": False, "detail": arch["detail"]}
    assert arch["detail"].startswith("refused: ") and "'sparc64'" in arch["detail"]
