"""netagent on a real node: the .deb installed by apt, run by systemd (PID 1), Debian's 6.1 kernel.

One VM boot (packaging/vm/run --node, i.e. packaging/vm/node-boot) runs
tests/node/node_checks.py inside the node, which drives the node the way an
operator does (systemctl, journalctl, apt-get, logrotate) and records what it
saw. Each test below asserts one property the issue asks for on that record.
The first run on a machine builds the node root (debootstrap, ~4 min, cached
in /var/cache/netagent-vm). The first complete session took 51 min under TCG
on a 2-core machine at load 14-22 (docs/daemon.md "The node").
"""

import json
import os
import re
import sys
import time

import pytest

import nodesession
import runsummary

KERNEL = nodesession.KERNEL

# Bounds, not expectations (docs/daemon.md has the measured times): the .deb
# build and the image (~8 min when the source changed), the boot (~5 min under
# TCG) and the session; node-boot kills the VM after NODE_VM_TIMEOUT.
NODE_VM_TIMEOUT = 3600
pytestmark = [pytest.mark.root, pytest.mark.timeout(NODE_VM_TIMEOUT + 1200)]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The record of one node session; the VM's stderr is echoed for the CI log.
    NETAGENT_NODE_RECORD=FILE: assert on a session's saved stdout instead of
    booting (to re-check assertions against a run that took half an hour).
    Each booted session's stdout is saved (its path is on stderr) to be read or
    replayed that way: a failed assertion shows only part of the record."""
    saved = os.environ.get("NETAGENT_NODE_RECORD")
    if saved:
        with open(saved) as f:
            line = next((x for x in f.read().splitlines() if x.startswith("NODE-RESULTS ")), None)
        assert line, f"{saved}: no NODE-RESULTS line"
        return json.loads(line[len("NODE-RESULTS "):])
    session = nodesession.BACKGROUND[0] if nodesession.BACKGROUND else nodesession.NodeSession(
        str(tmp_path_factory.mktemp("node-session")))
    code, stdout, stderr = session.wait(NODE_VM_TIMEOUT + 1100)
    sys.stderr.write(stderr[-20000:])
    saved_to = tmp_path_factory.mktemp("node") / "record.txt"
    saved_to.write_text(stdout)
    sys.stderr.write(f"node session record: {saved_to} (NETAGENT_NODE_RECORD={saved_to} replays it)\n")
    line = next((x for x in stdout.splitlines() if x.startswith("NODE-RESULTS ")), None)
    assert code == 0 and line, f"node session failed (exit {code}):\n{stderr[-6000:]}"
    rec = json.loads(line[len("NODE-RESULTS "):])
    rec["wall_seconds"] = round(time.monotonic() - session.started, 1)
    rec["stderr"] = stderr
    return rec


def step(node, name: str) -> dict:
    """A step's record; a step that raised fails its test with the node's traceback."""
    key = {"kill": "kill_and_spool", "remove": "apt_remove", "purge": "apt_purge", "install": "apt_install"}
    err = node["errors"].get(key.get(name, name))
    assert not err, f"step {name} raised in the node:\n{err}"
    return node["steps"][name]


def held_by_agent(bpf: dict) -> set[int]:
    """Programs an agent process holds: bpftool's holders, or (Debian's bpftool
    names none in `prog show`) the programs of its perf-event links."""
    pids = {int(line.split()[0]) for line in bpf["agent_processes"]}
    return set(bpf["held_ids"]) | {link["prog_id"] for link in bpf["perf_links"] if link.get("pid") in pids}


def sensors_by_name(sensors: list[dict]) -> dict:
    return {s["name"]: s for s in sensors}


def test_the_node_runs_debian_kernel_systemd_and_the_package(node):
    f = step(node, "facts")
    assert f["kernel"].startswith(KERNEL + "."), f
    assert f["systemd"].startswith("systemd 252"), f
    assert f["package"].startswith("netagent ") and f["package"].endswith("install ok installed"), f
    assert f["enabled"] == "enabled"  # postinst (deb-systemd-helper) enabled it
    assert f["conffiles"][0::2] == ["/etc/netagent/netagent.toml", "/etc/logrotate.d/netagent"], f


def test_startup_active_ready_and_every_attach_path_in_the_journal(node):
    s = step(node, "startup")
    assert s["is_active"] == "active"
    props = s["props"]
    # Type=notify: "active" only after READY=1; STATUS= came in the same message
    assert props["Type"] == "notify" and props["ActiveState"] == "active" and props["SubState"] == "running"
    assert re.match(r"\d+ sensor\(s\) on: ", props["StatusText"]), props
    assert props["NRestarts"] == "0"
    sensors = sensors_by_name(s["agent_started"]["sensors"])
    assert sensors["drops"]["state"] == "on" and sensors["drops"]["attach_path"], sensors
    assert sensors["conntrack"]["state"] == "on", sensors
    assert sensors["host"]["state"] == "on", sensors
    for name, sensor in sensors.items():
        if sensor["state"] == "on":
            assert sensor["attach_path"] in s["started_line"], (name, s["started_line"])
    # the programs are in the kernel, held by the agent
    assert held_by_agent(s["bpf"]), s["bpf"]
    # the drop program's bytecode was kept (CacheDirectory= is writable under
    # ProtectSystem=strict): the restarts below load it without compiling
    assert any(f.startswith("drops-") and f.endswith(".json") for f in s["bytecode_cache"]), s["bytecode_cache"]


def test_startup_conntrack_on_the_kprobe_path(node):
    """The issue's kprobe conntrack path: per-packet events from the kernel's functions, not
    correlation. Under the unit they are fentry/fexit programs (BPF trampolines on
    nf_conntrack's functions, loaded against the module's BTF), which the sensor prefers
    to kprobes where the kernel takes them; the kprobe path itself is proven in the VM lab
    (tests/kernel/test_conntrack_programs.py, table-full[kprobe])."""
    s = step(node, "startup")
    ct = sensors_by_name(s["agent_started"]["sensors"])["conntrack"]
    assert ct["state"] == "on" and "fexit __nf_conntrack_confirm" in ct["attach_path"], ct


def test_drops_counted_exactly_from_the_journal(node):
    d = step(node, "drops")
    assert d["marker_seen"], d
    assert d["noports_delta"] == sum(d["sent"].values()), d
    counts = {int(p): v["count"] for p, v in d["journal"].items()}
    assert counts == {int(p): n for p, n in d["sent"].items()}, d
    assert d["journal_total"] == d["noports_delta"]
    assert d["netns_name"] == "nodepod"


def test_interface_names_in_a_pod_namespace_under_the_hardened_unit(node):
    d = step(node, "drops")
    # the host namespace has a link with eth0's ifindex and another name
    assert d["decoy"].get("host_link") not in (None, "eth0"), d["decoy"]
    by_port = {int(p): v for p, v in d["journal"].items()}
    assert by_port[30003]["interfaces"] == ["eth0"], by_port[30003]
    assert by_port[30003]["ifindexes"] == [str(d["eth0_ifindex"])]
    assert by_port[30001]["interfaces"] == ["lo"] and by_port[30002]["interfaces"] == ["lo"], by_port


def test_drop_locations_are_named_with_proc_kallsyms_hidden(node):
    """ProtectKernelTunables=yes makes /proc/kallsyms inaccessible to the unit; the agent
    reads the same file bound at /run/netagent/kallsyms and names the kernel function of
    every drop (a bare address would mean it read nothing, or addresses hidden as 0)."""
    d = step(node, "drops")
    by_port = {int(p): v for p, v in d["journal"].items()}
    locations = {loc for v in by_port.values() for loc in v["locations"]}
    assert locations and all(re.fullmatch(r"[A-Za-z_][\w.]*\+0x[0-9a-f]+( \[\w+\])?", loc) for loc in locations), \
        locations


def test_reload_applies_a_valid_configuration(node):
    r = step(node, "reload")
    assert r["config_check"] == 0 and r["reload_rc"] == 0, r
    assert "syslog" in r["reloaded_event"]["sinks_started"], r["reloaded_event"]
    assert r["reloaded_lines"], r
    assert r["syslog_events"] >= 2  # the new sink delivers
    assert r["same_pid_after_valid"]
    # the new heartbeat period (5s instead of 60s) is in effect
    t = [_epoch(x) for x in r["heartbeat_stamps"]]
    # (the old period was 60 s; a loaded TCG guest delays a beat by seconds)
    assert len(t) == 3 and all(3.0 < b - a < 30.0 for a, b in zip(t, t[1:])), r["heartbeat_stamps"]
    assert r["mtu_events"], "the MTU sensor added by the reload produced no event"


def test_reload_rejects_an_invalid_configuration_in_one_journal_line(node):
    r = step(node, "reload")
    assert r["invalid_check_rc"] == 78
    assert r["invalid_reload_rc"] == 0 and r["active_after_invalid"] == "active" and r["same_pid_after_invalid"]
    assert len(r["rejected_lines"]) == 1, r["log_lines_after_invalid"]
    line = r["rejected_lines"][0]
    assert "/etc/netagent/netagent.toml" in line and "sensors.drops.interval" in line, line
    assert not any("Traceback" in x for x in r["log_lines_after_invalid"])
    assert r["drops_after_invalid"] == 40  # the old configuration keeps counting


def test_sigkill_restart_delivers_the_spool_left_behind(node):
    k = step(node, "kill")
    assert k["kill_rc"] == 0 and k["old_process_gone"]
    assert k["restarts"] == 1 and k["props_after"]["ActiveState"] == "active", k
    assert k["new_pid"] != k["old_pid"]
    assert k["spool_left_of_killed"] >= 10, k  # the killed agent left undelivered events
    assert k["spool_missing"] == [] and k["spool_delivered"] == k["spool_left"], k
    assert k["spool_line"], "no 'left in the spool by a previous run' line"
    assert k["drops_after_restart"] == 25  # events keep flowing
    assert k["syslog_from_new"] > 0


def test_logrotate_loses_no_event_and_the_sink_writes_the_new_file(node):
    lr = step(node, "logrotate")
    assert lr["conf"] and "postrotate" in lr["conf"]
    assert lr["logrotate_rc"] == 0, lr["logrotate_stderr"]
    assert lr["rotated_files"], lr
    assert lr["new_inode"] and lr["new_file"]["n"] > 0, lr
    assert lr["old_file"]["n"] > 0, lr
    assert lr["file_contiguous"], lr
    assert lr["journal_missing_from_files"] == [], lr


def test_live_security_exposure_at_most_2_7_with_every_sensor_on(node):
    # 2.7: the goal was 2.5, which would need no CAP_SYS_ADMIN (0.3): the
    # per-packet conntrack events need it by either path on Debian's kernels (module
    # BTF objects for fentry/fexit, perf_event_open for kprobes); systemd/netagent.service
    s = step(node, "security")
    runsummary.note("Debian node (systemd, the .deb)",
                    f"systemd-analyze security netagent.service (live): {s['score']}; {len(s['exposed'])} settings exposed")
    assert s["score"] is not None and s["score"] <= 2.7, s["exposed"]
    sensors = sensors_by_name(s["sensors"])
    assert all(sensors[n]["state"] == "on" for n in ("drops", "conntrack", "host")), sensors
    assert {"netagent.drops", "netagent.agent"} <= set(s["datasets"]), s["datasets"]


def test_stop_exits_0_in_time_and_leaves_nothing_in_the_kernel(node):
    s = step(node, "stop")
    assert s["rc"] == 0 and s["props"]["Result"] == "success", s
    assert s["props"]["ExecMainStatus"] == "0"
    assert s["seconds"] < 30  # TimeoutStopSec
    assert held_by_agent(s["before"]), s["before"]
    assert s["still_there"] == [] and s["after"]["tracing"] == [], s["after"]
    assert s["after"]["kprobe_events"] == [] and s["after"]["perf_links"] == [], s["after"]
    assert s["stopped_line"] and s["stopped_line"].endswith("lost: kernel 0, queue 0, sink 0, spool 0"), s


def test_bad_configuration_at_start_exits_78_without_a_restart_loop(node):
    b = step(node, "bad_config")
    assert b["props"]["ActiveState"] == "failed" and b["props"]["ExecMainStatus"] == "78", b["props"]
    assert b["restarts"] == 0 and b["states_seen"] == ["failed"], b
    reason = [x for x in b["status"].splitlines() if "sensors.drops.interval" in x]
    assert len(reason) == 1, b["status"]
    assert "Traceback" not in b["status"]


def test_apt_remove_stops_the_service_and_leaves_no_bpf(node):
    r = step(node, "remove")
    assert r["running_before"] and held_by_agent(r["before"]), r
    assert r["rc"] == 0, r["output"]
    assert r["is_active"] in ("inactive", "unknown"), r
    assert r["still_there"] == [] and r["after"]["tracing"] == [] and r["after"]["kprobe_events"] == [], r["after"]
    assert r["after"]["agent_processes"] == []
    assert r["status"].startswith("deinstall ok config-files"), r
    assert all(r["kept"].values()), r["kept"]  # configuration, spool and log stay


def test_apt_purge_removes_configuration_spool_and_logs(node):
    p = step(node, "purge")
    assert p["rc"] == 0, p["output"]
    assert not any(p["left"].values()), p["left"]


def test_fresh_apt_install_enables_and_starts_the_service(node):
    i = step(node, "install")
    assert i["rc"] == 0, i["output"]
    assert i["is_active_when_apt_returned"] == "active" and i["is_enabled"] == "enabled", i
    assert i["config_restored"]
    assert sensors_by_name(i["sensors"])["drops"]["state"] == "on"


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
