"""`netagent check` command line: usage errors are one line and exit 2; JSON is well-formed."""

import json
import subprocess

import pytest


def run(netagent_bin, *args):
    return subprocess.run([netagent_bin, "check", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,words", [
    (["--netns", "no-such-ns-for-check"], "no such namespace"),
    (["--window", "soon"], "--window"),
    (["--window", "10m"], "at most 5m"),
    (["--threshold", "steal=5"], "expected NAME=VALUE"),
    (["--threshold", "steal_pct=lots"], "not a number"),
    (["--output", "xml"], "xml"),
])
def test_usage_errors(netagent_bin, args, words):
    proc = run(netagent_bin, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_json_report_of_this_namespace(netagent_bin):
    proc = run(netagent_bin, "--window", "100ms", "--output", "json")
    assert proc.returncode in (0, 1), proc.stderr  # this machine's own state decides which
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    actions = [e["event"]["action"] for e in events]
    assert "node-counters" in actions and "netns-counters" in actions
    assert [e["event"]["sequence"] for e in events] == list(range(1, len(events) + 1))
    summary = events[-1]["netagent"]["check"]
    found = [e for e in events if e["event"]["dataset"] == "netagent.finding"]
    assert summary["findings"] == len(found)
    assert summary["exit_code"] == proc.returncode == (1 if found else 0)
    node = next(e for e in events if e["event"]["action"] == "node-counters")["netagent"]["host"]
    assert 0.0 <= node["cpu"]["steal_pct"] <= 100.0 and node["softnet"]["columns"] >= 10
