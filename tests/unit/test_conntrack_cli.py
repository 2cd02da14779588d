"""`netagent trace conntrack` options, errors and table rendering (no privileges)."""

import pytest

from netagent.cli import main
from netagent.commands import trace_conntrack as cmd
from netagent.conntrack.report import Interval
from test_conntrack_report import snap


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("args,needle", [
    (["--threshold", "abc"], "not a fraction or percentage"),
    (["--threshold", "120%"], "at most 100%"),
    (["--interval", "soon"], "bad duration"),
    (["--interval", "10ms"], "at least 50ms"),
    (["--duration", "-1"], "bad duration"),
    (["--per-packet", "always"], "'auto', 'fentry', 'kprobe', 'correlation', 'off'"),
    (["--counters", "sometimes"], "'always', 'changes', 'never'"),
    (["--output", "xml"], "'table', 'json'"),
])
def test_bad_values_exit_2_with_one_line(args, needle, capsys):
    code, out, err = run_main(["trace", "conntrack", *args], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and out == ""


def test_without_privileges_exit_77_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr("netagent.privileges.effective_capabilities", lambda: set())
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, out, err = run_main(["trace", "conntrack"], capsys)
    assert code == 77
    assert err.strip().count("\n") == 0 and "CAP_SYS_ADMIN" in err and out == ""


@pytest.mark.parametrize("text,expected", [("90%", 0.9), ("0.5", 0.5), ("75", 0.75), ("100%", 1.0)])
def test_threshold_forms(text, expected):
    assert cmd.RatioType().convert(text, None, None) == pytest.approx(expected)


def test_table_rows_for_counters_alerts_and_flows():
    iv = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=45))
    counters, alert = iv.events()
    row = cmd.table_row(counters)
    assert row["netns"] == "lab" and row["entries"] == "20/20" and row["fill"] == "100.0%"
    assert row["drop"] == 45 and row["insert_failed"] == 0 and row["detail"] == ""
    assert "45 packets dropped" in cmd.table_row(alert)["detail"]
    flow_event = {"@timestamp": "2026-01-01T10:00:00.000000Z", "event": {"action": "table-full"},
                  "network": {"transport": "udp"}, "source": {"ip": "10.0.0.1"},
                  "destination": {"ip": "10.0.0.2", "port": 53},
                  "netagent": {"conntrack": {"netns_name": "lab", "count": 45, "source_ports": 45,
                                             "attribution": "correlation"}}}
    assert cmd.table_row(flow_event)["detail"] == "45 pkts udp 10.0.0.1 -> 10.0.0.2:53 (45 src ports) [correlation]"

    printer = cmd.TablePrinter()
    first = printer.rows([counters]).splitlines()
    second = printer.rows([counters]).splitlines()
    assert first[0].startswith("TIME") and len(first) == 2 and len(second) == 1
    assert first[1].index("lab") == first[0].index("NETNS")  # fixed widths keep columns aligned
    assert printer.rows([]) is None


def test_run_summary_totals_counter_rises_per_namespace():
    totals = cmd.Totals()
    totals.add(Interval(snap(0, 20, 20), snap(1, 20, 20, drop=5)).events())
    totals.add(Interval(snap(1, 20, 20, drop=5), snap(2, 20, 20, drop=9, clash_resolve=1)).events())
    text = totals.render({"kernel": 0})
    assert "netns lab: insert_failed=0 drop=9 early_drop=0 clash_resolve=1" in text
    assert "alerts: table-full 2" in text and "lost: kernel 0" in text
