"""`netagent config check|show` and the validation behind `netagent run`."""

import json
import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest
from click.testing import CliRunner

from netagent import config as config_mod
from netagent.cli import cli, main
from netagent.configschema import SchemaError, apply_schema, parse_address
from netagent.errors import ConfigError


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def write(tmp_path, text, name="netagent.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(scope="module")
def real_ca(tmp_path_factory):
    """A real self-signed CA certificate: the syslog sink loads the CA to check it."""
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
                    "-subj", "/CN=netagent test CA"], check=True, capture_output=True)
    return d


@pytest.fixture
def ca_file(tmp_path, real_ca):
    path = tmp_path / "ca.pem"
    shutil.copy(real_ca / "ca.pem", path)
    return str(path)


def issue_example(tmp_path, ca_file):
    """The configuration shape the issue documents, with paths under tmp_path."""
    return write(tmp_path, f"""
        [agent]
        heartbeat = "60s"
        [sensors.drops]
        enabled = true
        interval = "1s"
        [[sinks]]
        type = "stdout"
        [[sinks]]
        type = "syslog"
        address = "127.0.0.1:6514"
        tls = true
        ca_file = "{ca_file}"
        cert_file = ""
        key_file = ""
        spool_dir = "{tmp_path}/spool"
        spool_max_bytes = "256MiB"
        [[sinks]]
        type = "file"
        path = "{tmp_path}/log/events.json"
        max_bytes = "100MiB"
        backups = 5
        [[sinks]]
        type = "prometheus"
        listen = "127.0.0.1:9847"
        """)


def test_embedded_default_is_valid_and_has_a_stdout_sink(capsys, monkeypatch):
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", "/nonexistent/netagent.toml")
    cfg = config_mod.load(None)
    assert cfg.source == config_mod.EMBEDDED
    assert [s["type"] for s in cfg.sinks] == ["stdout"]
    assert cfg.agent["heartbeat"] == 60.0
    assert cfg.sensors["drops"]["enabled"] is True
    code, out, err = run_main(["config", "check"], capsys)
    assert code == 0 and "<embedded default>: OK" in out


def test_default_path_is_used_when_present(tmp_path, monkeypatch):
    path = write(tmp_path, '[agent]\nheartbeat = "5s"\n')
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", path)
    cfg = config_mod.load(None)
    assert cfg.source == path and cfg.agent["heartbeat"] == 5.0


def test_issue_example_is_valid_and_values_are_coerced(tmp_path, ca_file, capsys):
    path = issue_example(tmp_path, ca_file)
    code, out, err = run_main(["config", "check", path], capsys)
    assert code == 0, err
    assert f"{path}: OK" in out and "syslog" in out
    cfg = config_mod.load(path)
    syslog = next(s for s in cfg.sinks if s["type"] == "syslog")
    assert syslog["spool_max_bytes"] == 256 * 2**20
    assert syslog["tls"] is True
    file_sink = next(s for s in cfg.sinks if s["type"] == "file")
    assert file_sink["max_bytes"] == 100 * 2**20 and file_sink["backups"] == 5
    assert cfg.sensors["drops"]["interval"] == 1.0


def test_durations_and_sizes_in_user_units(tmp_path):
    path = write(tmp_path, f"""
        [agent]
        heartbeat = "500ms"
        shutdown_timeout = 3
        [[sinks]]
        type = "file"
        path = "{tmp_path}/e.json"
        max_bytes = "1.5KiB"
        """)
    cfg = config_mod.load(path)
    assert cfg.agent["heartbeat"] == 0.5 and cfg.agent["shutdown_timeout"] == 3.0
    assert cfg.sinks[0]["max_bytes"] == 1536


def test_show_prints_every_default_and_round_trips(tmp_path, capsys):
    path = write(tmp_path, f"""
        [[sinks]]
        type = "file"
        path = "{tmp_path}/e.json"
        """)
    r = CliRunner().invoke(cli, ["config", "show", path])
    assert r.exit_code == 0, r.output
    assert 'heartbeat = "1m"' in r.output
    assert 'max_bytes = "100MiB"' in r.output and "backups = 5" in r.output
    assert "[sensors.drops]" in r.output and 'interval = "1s"' in r.output
    # what `show` prints is itself a valid configuration with the same meaning
    shown = write(tmp_path, r.output, "shown.toml")
    assert config_mod.load(shown).as_document() == config_mod.load(path).as_document()
    r = CliRunner().invoke(cli, ["config", "show", path, "--output", "json"])
    doc = json.loads(r.output)
    assert doc["sinks"][0]["path"] == f"{tmp_path}/e.json" and doc["agent"]["shutdown_timeout"] == "5s"


# Every invalid case: exit 78, one line on stderr naming the file and the key.
INVALID = [
    ("unknown top-level section", '[agnet]\nheartbeat = "1s"\n', "agnet", "unknown section"),
    ("unknown agent key", '[agent]\nhearbeat = "1s"\n', "agent.hearbeat", "unknown key"),
    ("bad duration", '[agent]\nheartbeat = "1 fortnight"\n', "agent.heartbeat", "bad duration"),
    ("negative duration", '[agent]\nheartbeat = "-1s"\n', "agent.heartbeat", "bad duration"),
    ("zero duration", '[agent]\nheartbeat = "0s"\n', "agent.heartbeat", "must be positive"),
    ("duration of wrong type", "[agent]\nheartbeat = true\n", "agent.heartbeat", "expected a duration"),
    ("int of wrong type", '[agent]\nqueue_events = "many"\n', "agent.queue_events", "expected an integer"),
    ("int not positive", "[agent]\nqueue_events = 0\n", "agent.queue_events", "must be more than 0"),
    ("unknown sensor", "[sensors.dorps]\nenabled = true\n", "sensors.dorps", "unknown sensor"),
    ("unknown sensor key", '[sensors.drops]\nintreval = "1s"\n', "sensors.drops.intreval", "unknown key"),
    ("sensor bool of wrong type", '[sensors.drops]\nenabled = "yes"\n', "sensors.drops.enabled", "true or false"),
    ("sensor table of wrong shape", "sensors = 3\n", "sensors", "must be a table"),
    ("sink without type", '[[sinks]]\npath = "/x"\n', "sinks[1].type", "missing"),
    ("unknown sink type", '[[sinks]]\ntype = "kafka"\n', "sinks[1].type", "unknown sink type 'kafka'"),
    ("unknown sink key", '[[sinks]]\ntype = "stdout"\n[[sinks]]\ntype = "file"\npth = "/x"\n', "sinks[2].pth",
     "unknown key"),
    ("sinks not an array of tables", 'sinks = "stdout"\n', "sinks", "array of tables"),
    ("no sinks", "sinks = []\n", "sinks", "events would go nowhere"),
    ("file sink relative path", '[[sinks]]\ntype = "file"\npath = "events.json"\n', "sinks[1].path",
     "absolute path"),
    ("file sink backups wrong type", '[[sinks]]\ntype = "file"\npath = "/tmp/x.json"\nbackups = "5"\n',
     "sinks[1].backups", "expected an integer"),
    ("file sink negative backups", '[[sinks]]\ntype = "file"\npath = "/tmp/x.json"\nbackups = -1\n',
     "sinks[1].backups", "0 or more"),
    ("bad size", '[[sinks]]\ntype = "file"\npath = "/tmp/x.json"\nmax_bytes = "100 MegaBytes"\n',
     "sinks[1].max_bytes", "bad size"),
    ("two sinks on one file", '[[sinks]]\ntype = "file"\npath = "/tmp/x.json"\n[[sinks]]\ntype = "file"\n'
     'path = "/tmp/x.json"\n', "sinks[2].path", "already used by sinks[1]"),
    ("duplicate sink names", '[[sinks]]\ntype = "stdout"\nname = "a"\n[[sinks]]\ntype = "prometheus"\nname = "a"\n',
     "sinks[2].name", "duplicate sink name"),
    ("prometheus address without port", '[[sinks]]\ntype = "prometheus"\nlisten = "localhost"\n',
     "sinks[1].listen", "bad address"),
    ("prometheus port out of range", '[[sinks]]\ntype = "prometheus"\nlisten = "127.0.0.1:99999"\n',
     "sinks[1].listen", "port must be 1-65535"),
    ("prometheus bare IPv6", '[[sinks]]\ntype = "prometheus"\nlisten = "::1:9847"\n', "sinks[1].listen",
     "[addr]:port"),
]


@pytest.mark.parametrize("what,text,key,needle", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_configuration_exits_78_naming_file_and_key(tmp_path, capsys, what, text, key, needle):
    path = write(tmp_path, text)
    code, out, err = run_main(["config", "check", path], capsys)
    assert code == 78, (what, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"netagent: {path}:{key}: "), lines[0]
    assert needle in lines[0]
    assert out == ""


def syslog_table(tmp_path, **overrides):
    table = {"type": '"syslog"', "address": '"127.0.0.1:6514"', "ca_file": f'"{tmp_path}/ca.pem"',
             "spool_dir": f'"{tmp_path}/spool"'}
    table.update(overrides)
    return "[[sinks]]\n" + "".join(f"{k} = {v}\n" for k, v in table.items() if v is not None)


SYSLOG_INVALID = [
    ("missing CA file", {"ca_file": '"/nonexistent/ca.pem"'}, "sinks[1].ca_file", "no such file"),
    ("CA is a directory", {"ca_file": '"/etc"'}, "sinks[1].ca_file", "not a regular file"),
    ("tls without CA", {"ca_file": '""'}, "sinks[1].ca_file", "required when tls = true"),
    ("bad address", {"address": '"collector"'}, "sinks[1].address", "bad address"),
    ("bad host", {"address": '"col lector:6514"'}, "sinks[1].address", "not an IP address or host name"),
    ("tls of wrong type", {"tls": '"yes"'}, "sinks[1].tls", "true or false"),
    ("cert without key", {"cert_file": "CERT"}, "sinks[1].key_file", "go together"),
    ("bad spool size", {"spool_max_bytes": '"lots"'}, "sinks[1].spool_max_bytes", "bad size"),
    ("relative spool dir", {"spool_dir": '"spool"'}, "sinks[1].spool_dir", "absolute path"),
    ("unknown syslog key", {"adress": '"127.0.0.1:1"'}, "sinks[1].adress", "unknown key"),
]


@pytest.mark.parametrize("what,overrides,key,needle", SYSLOG_INVALID, ids=[c[0] for c in SYSLOG_INVALID])
def test_invalid_syslog_sink_exits_78_naming_the_key(tmp_path, ca_file, capsys, what, overrides, key, needle):
    overrides = {k: (f'"{ca_file}"' if v == "CERT" else v) for k, v in overrides.items()}
    path = write(tmp_path, syslog_table(tmp_path, **overrides))
    code, out, err = run_main(["config", "check", path], capsys)
    assert code == 78, (what, out, err)
    line = err.strip()
    assert line.startswith(f"netagent: {path}:{key}: "), line
    assert needle in line


def test_unreadable_ca_file_for_an_unprivileged_user(real_ca, capsys):
    """As root every file is readable, so check the rule the way an unprivileged user meets it."""
    d = tempfile.mkdtemp(prefix="netagent-cfg-")  # pytest's tmp dirs are 0700: nobody could not read them
    try:
        os.chmod(d, 0o755)
        ca = os.path.join(d, "ca.pem")
        shutil.copy(real_ca / "ca.pem", ca)
        os.chmod(ca, 0o600)
        path = os.path.join(d, "netagent.toml")
        with open(path, "w") as f:
            f.write(f'[[sinks]]\ntype = "syslog"\nca_file = "{ca}"\nspool_dir = "{d}/spool"\n')
        os.chmod(path, 0o644)
        if os.geteuid() != 0:
            os.chmod(ca, 0)
            code, out, err = run_main(["config", "check", path], capsys)
            assert code == 78 and f"{path}:sinks[1].ca_file:" in err and "not readable" in err
            return
        pid = os.fork()
        if pid == 0:  # child: become nobody and validate
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                config_mod.load(path)
                code = 0
            except ConfigError as exc:
                code = 78 if f"{path}:sinks[1].ca_file:" in str(exc) and "not readable" in str(exc) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 78, "an unreadable CA was not reported on sinks[1].ca_file"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_missing_and_broken_files_exit_78(tmp_path, capsys):
    code, out, err = run_main(["config", "check", str(tmp_path / "nope.toml")], capsys)
    assert code == 78 and "nope.toml: no such file" in err
    bad = write(tmp_path, "[agent\nheartbeat = 1\n")
    code, out, err = run_main(["config", "check", bad], capsys)
    assert code == 78 and err.startswith(f"netagent: {bad}: not valid TOML") and "line 1" in err
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[agent]\n")
    code, out, err = run_main(["config", "check", str(binary)], capsys)
    assert code == 78 and "not UTF-8" in err


def test_run_with_invalid_configuration_exits_78_before_attaching(tmp_path, capsys):
    path = write(tmp_path, '[sensors.drops]\nenabled = "yes"\n')
    code, out, err = run_main(["run", "--config", path], capsys)
    assert code == 78
    assert "sensors.drops.enabled" in err
    assert "started" not in err and out == ""


def test_sensor_module_that_fails_to_import_is_reported_not_fatal(tmp_path, capsys, monkeypatch):
    from netagent import registry

    monkeypatch.setattr(registry, "SENSOR_MODULES", ["netagent.probes.drops", "netagent.probes.nosuchsensor"])
    path = write(tmp_path, "[sensors.nosuchsensor]\nwhatever = 1\n")
    code, out, err = run_main(["config", "check", path], capsys)
    assert code == 0
    assert "nosuchsensor (not checked: cannot import netagent.probes.nosuchsensor" in out
    assert "warning: sensor nosuchsensor" in err


def test_schema_helpers():
    assert parse_address("[::1]:6514") == ("::1", 6514)
    assert parse_address("collector.example.org:6514") == ("collector.example.org", 6514)
    with pytest.raises(ValueError):
        parse_address("[::1]6514")
    with pytest.raises(SchemaError) as exc:
        apply_schema({"a": ("int", 1)}, {"b": 2})
    assert exc.value.key == "b" and "known keys: a" in exc.value.message
    assert apply_schema({"a": ("int", 1), "d": ("duration", 1.0)}, {"d": "250ms"}) == {"a": 1, "d": 0.25}


def test_findings_table_configures_the_daemon_correlator():
    from netagent import config as config_mod
    from netagent.daemon import _processors
    from netagent.findings.correlator import Correlator

    default = config_mod.parse("", "inline.toml")
    assert default.findings["steal_pct"] == 10.0 and default.findings["window"] == 60.0
    assert [type(p) for p in _processors(default)] == [Correlator]
    tuned = config_mod.parse('[findings]\nsteal_pct = 25.0\nwindow = "30s"\n', "inline.toml")
    assert tuned.findings["steal_pct"] == 25.0 and tuned.findings["window"] == 30.0
    assert _processors(config_mod.parse("[findings]\nenabled = false\n", "inline.toml")) == []


def test_two_syslog_sinks_on_one_spool_dir_are_rejected(tmp_path):
    from netagent import config as config_mod
    from netagent.errors import ConfigError

    text = ""
    for port in (6514, 6515):
        text += (f'[[sinks]]\ntype = "syslog"\naddress = "127.0.0.1:{port}"\ntls = false\n'
                 f'spool_dir = "{tmp_path}/spool"\n')
    with pytest.raises(ConfigError, match=r"sinks\[2\]\.spool_dir"):
        config_mod.parse(text, "inline.toml")
