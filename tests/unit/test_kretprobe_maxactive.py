"""The conntrack kretprobes' maxactive follows whether BCC can write kprobe_events.

Under the systemd unit /sys is read-only (ReadOnlyPaths=/sys); a maxactive there
made BCC write tracefs and the whole kprobe attach failed on the Debian node
("create_probe_event: open(/sys/kernel/debug/tracing/kprobe_events): Read-only
file system"). There the kprobe PMU attaches them with the kernel's default.
"""

import os
import subprocess

import pytest

from netagent.probes.conntrack import KRETPROBE_MAXACTIVE, bcc_kprobe_events, kretprobe_maxactive


def test_writable_events_file_keeps_the_larger_maxactive(tmp_path):
    events = tmp_path / "kprobe_events"
    events.write_text("")
    assert kretprobe_maxactive(str(events)) == KRETPROBE_MAXACTIVE


def test_the_file_is_where_bcc_writes_it(tmp_path):
    debugfs, tracefs = tmp_path / "debug" / "tracing", tmp_path / "tracing"
    tracefs.mkdir()
    assert bcc_kprobe_events((str(debugfs), str(tracefs))) == str(tracefs / "kprobe_events")
    debugfs.mkdir(parents=True)  # debugfs mounted: BCC takes its tracing directory first
    assert bcc_kprobe_events((str(debugfs), str(tracefs))) == str(debugfs / "kprobe_events")


def test_no_events_file_leaves_it_to_the_kernel(tmp_path):
    assert kretprobe_maxactive(str(tmp_path / "absent" / "kprobe_events")) == 0


@pytest.mark.root
def test_read_only_mount_leaves_it_to_the_kernel(tmp_path):
    """What the unit's ReadOnlyPaths= does: a read-only bind mount (root ignores file modes)."""
    if os.geteuid() != 0:
        pytest.fail("needs root for a bind mount (CI runs as root)")
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    (tracing / "kprobe_events").write_text("")
    subprocess.run(["mount", "--bind", str(tracing), str(tracing)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(tracing)], check=True)
        assert kretprobe_maxactive(str(tracing / "kprobe_events")) == 0
    finally:
        subprocess.run(["umount", str(tracing)], check=True)
