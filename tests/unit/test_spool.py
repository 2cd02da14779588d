"""The disk spool: order, bound, restart, torn and damaged records, locking."""

import os
import subprocess
import sys
import textwrap

import pytest

from netagent.spool import HEADER_SIZE, Position, Spool, SpoolError, segment_name

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from rsyslog_lab import fill_filesystem  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def payloads(n, start=0, size=40):
    return [f"record-{i:06d}-".encode().ljust(size, b"x") for i in range(start, start + n)]


def read_all(spool, commit=True):
    out = []
    while True:
        batch = spool.read(max_records=100)
        if not batch:
            return out
        out.extend(p for p, _ in batch)
        if commit:
            spool.commit(batch[-1][1], len(batch))


def segments(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".seg"))


@pytest.fixture
def spool_dir(tmp_path):
    return str(tmp_path / "spool")


def test_fifo_order_across_segments(spool_dir):
    sp = Spool(spool_dir, 1 << 20, segment_bytes=1024).open()
    data = payloads(300)
    assert sp.append(data[:100]) == 100
    assert sp.append(data[100:]) == 200
    assert len(segments(spool_dir)) > 5, "small segments must rotate"
    assert sp.backlog == 300
    assert read_all(sp) == data
    assert sp.backlog == 0
    # delivered segments are deleted; at most the writer's segment remains
    assert len(segments(spool_dir)) <= 1
    sp.close()


def test_rewind_resends_everything_not_committed(spool_dir):
    sp = Spool(spool_dir, 1 << 20).open()
    data = payloads(10)
    sp.append(data)
    first = sp.read(max_records=4)
    sp.commit(first[1][1], 2)  # only two confirmed
    assert [p for p, _ in sp.read(max_records=100)] == data[4:]
    sp.rewind()
    assert [p for p, _ in sp.read(max_records=100)] == data[2:]
    sp.close()


def test_bound_drops_new_records_and_counts_them(spool_dir):
    max_bytes = 8192
    sp = Spool(spool_dir, max_bytes, segment_bytes=2048).open()
    data = payloads(500)
    stored = sp.append(data)
    assert 0 < stored < 500
    assert sp.dropped_full == 500 - stored
    assert sp.losses() == 500 - stored
    assert sp.disk_bytes() <= max_bytes
    assert sum(os.path.getsize(os.path.join(spool_dir, n)) for n in segments(spool_dir)) <= max_bytes
    # the oldest records are kept: they are the ones the SIEM has not seen
    assert read_all(sp) == data[:stored]
    # once delivered, space is free again
    assert sp.append(payloads(5, start=1000)) == 5
    sp.close()


def test_restart_resumes_after_the_committed_position(spool_dir):
    sp = Spool(spool_dir, 1 << 20, segment_bytes=1024, cursor_interval=0).open()
    data = payloads(100)
    sp.append(data)
    batch = sp.read(max_records=30)
    sp.commit(batch[-1][1], 30)
    sp.read(max_records=30)  # read but not committed: must come back
    sp.close()

    again = Spool(spool_dir, 1 << 20, segment_bytes=1024).open()
    assert again.recovered == 70
    assert again.backlog == 70
    again.append(payloads(5, start=100))
    assert read_all(again) == data[30:] + payloads(5, start=100)
    again.close()


def test_cursor_is_written_lazily_but_on_close(spool_dir):
    sp = Spool(spool_dir, 1 << 20, cursor_interval=3600).open()
    sp.append(payloads(10))
    batch = sp.read(max_records=3)
    sp.commit(batch[0][1], 1)  # first commit writes (no cursor yet)
    batch2 = sp.read(max_records=3)
    sp.commit(batch2[-1][1], 5)  # within cursor_interval: memory only
    with open(os.path.join(spool_dir, "cursor")) as f:
        assert f.read().split() != [str(batch2[-1][1].segment), str(batch2[-1][1].offset)]
    sp.close()
    with open(os.path.join(spool_dir, "cursor")) as f:
        assert f.read().split() == [str(batch2[-1][1].segment), str(batch2[-1][1].offset)]


def test_torn_last_record_is_cut_and_counted(spool_dir):
    sp = Spool(spool_dir, 1 << 20).open()
    data = payloads(20)
    sp.append(data)
    sp.close()
    seg = os.path.join(spool_dir, segments(spool_dir)[-1])
    size = os.path.getsize(seg)
    # a crash mid-write: the last record only half there
    with open(seg, "r+b") as f:
        f.truncate(size - 10)
    again = Spool(spool_dir, 1 << 20).open()
    assert again.corrupt == 1
    assert again.recovered == 19
    # appends continue cleanly after the cut
    again.append([b"after-crash"])
    assert read_all(again) == data[:19] + [b"after-crash"]
    again.close()


def test_torn_header_only(spool_dir):
    sp = Spool(spool_dir, 1 << 20).open()
    sp.append(payloads(3))
    sp.close()
    seg = os.path.join(spool_dir, segments(spool_dir)[-1])
    with open(seg, "ab") as f:
        f.write(b"\xa5Z\x10")  # 3 bytes of a header
    again = Spool(spool_dir, 1 << 20).open()
    assert again.corrupt == 1
    assert read_all(again) == payloads(3)
    again.close()


def test_damaged_record_in_an_older_segment_is_skipped_not_fatal(spool_dir):
    sp = Spool(spool_dir, 1 << 20, segment_bytes=600).open()
    data = payloads(40)
    sp.append(data)
    names = segments(spool_dir)
    assert len(names) >= 3
    sp.close()
    # flip a payload byte in the first segment's second record
    first = os.path.join(spool_dir, names[0])
    rec = HEADER_SIZE + len(data[0])
    with open(first, "r+b") as f:
        f.seek(rec + HEADER_SIZE + 3)
        f.write(b"!")
    per_segment = os.path.getsize(first) // rec
    again = Spool(spool_dir, 1 << 20, segment_bytes=600).open()
    got = read_all(again)
    assert got[0] == data[0]
    # the rest of the damaged segment is skipped; later segments are intact
    assert got[1:] == data[per_segment:]
    assert again.corrupt == 1
    again.close()


def test_kill_minus_9_mid_append_keeps_earlier_records(spool_dir, tmp_path):
    """A real process killed with SIGKILL while appending in a loop."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from netagent.spool import Spool
        sp = Spool({spool_dir!r}, 1 << 30, segment_bytes=1 << 16).open()
        i = 0
        while True:
            sp.append([f"r{{j:08d}}".encode() * 20 for j in range(i, i + 50)])
            i += 50
            if i == 5000:
                print("ready", flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait(10)
    sp = Spool(spool_dir, 1 << 30, segment_bytes=1 << 16).open()
    got = read_all(sp)
    assert len(got) >= 5000
    # a contiguous prefix of what was written, nothing garbled
    assert got == [f"r{j:08d}".encode() * 20 for j in range(len(got))]
    sp.close()


def test_second_process_cannot_share_a_spool(spool_dir):
    sp = Spool(spool_dir, 1 << 20).open()
    code = (
        "from netagent.spool import Spool, SpoolError\n"
        f"try:\n    Spool({spool_dir!r}, 1 << 20).open()\nexcept SpoolError as e:\n    print(e.strerror)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert "in use by another process" in out and str(os.getpid()) in out
    sp.close()


def test_unusable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError) as err:
        Spool(str(blocker / "spool"), 1 << 20).open()
    assert "spool directory" in err.value.strerror


def test_segment_numbers_only_grow_across_restarts(spool_dir):
    sp = Spool(spool_dir, 1 << 20, segment_bytes=512).open()
    sp.append(payloads(50))
    read_all(sp)
    last = sp.commit_position.segment
    sp.close()
    again = Spool(spool_dir, 1 << 20, segment_bytes=512).open()
    again.append([b"new"])
    assert int(segments(spool_dir)[-1].split(".")[0]) >= last
    assert read_all(again) == [b"new"]
    again.close()


def test_cursor_past_all_segments_resends_nothing(spool_dir):
    sp = Spool(spool_dir, 1 << 20).open()
    sp.append(payloads(3))
    sp.close()
    with open(os.path.join(spool_dir, "cursor"), "w") as f:
        f.write("99 0\n")
    again = Spool(spool_dir, 1 << 20).open()
    assert again.recovered == 0
    assert read_all(again) == []
    again.append([b"x"])
    assert segments(spool_dir) == [segment_name(99)]
    assert read_all(again) == [b"x"]
    again.close()


def test_position_ordering():
    assert Position(1, 500) < Position(2, 0)
    assert Position(2, 10) > Position(2, 9)


def test_fsync_only_in_durable_mode(spool_dir, monkeypatch):
    import netagent.spool as spool_mod

    calls = []
    real = os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    sp = Spool(spool_dir, 1 << 20, segment_bytes=1024, fsync_interval=0).open()
    calls.clear()
    sp.durable = False  # collector keeping up: records live seconds, the page cache is enough
    sp.append(payloads(100))  # several segment rotations
    batch = sp.read(max_records=50)
    sp.commit(batch[-1][1], 50)
    assert calls == []
    sp.durable = True  # collector gone: what waits must survive a power cut
    assert len(calls) == 1
    before = len(calls)
    sp.append(payloads(1, start=100))
    assert len(calls) > before  # appended data is fsynced (plus a rotation's, if one happened)
    sp.close()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs: a disk that really fills up (ENOSPC), mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_drops_and_counts_by_cause_and_resumes_by_itself(small_tmpfs):
    sp = Spool(str(small_tmpfs / "spool"), 10 << 20, segment_bytes=8192).open()
    data = payloads(4000, size=60)
    stored_payloads = []
    offered = 0
    for i in range(0, len(data), 100):
        batch = data[i:i + 100]
        offered += len(batch)
        before = sp.dropped_error
        n = sp.append(batch)
        assert n + (sp.dropped_error - before) == len(batch), "every record stored or counted"
        stored_payloads.extend(batch[:n])
    assert sp.error_causes.get("ENOSPC", 0) > 0, sp.error_causes
    assert sp.loss_causes() == {"ENOSPC": sp.dropped_error}
    assert len(stored_payloads) + sp.dropped_error == offered
    # the rest of the disk goes too: even the cursor cannot be written now
    fill_filesystem(small_tmpfs / "filler")
    errors_before = sp.disk_errors
    got = read_all(sp)  # commits delete delivered segments; must not raise
    assert got == stored_payloads, "what was stored comes back, in order"
    assert sp.disk_errors > errors_before, "the cursor write failed (ENOSPC) and was noted, not raised"
    # the delivered segments are gone even though the cursor could not be written
    assert len(segments(str(small_tmpfs / "spool"))) <= 1
    os.unlink(small_tmpfs / "filler")  # space comes back
    more = payloads(50, start=9000)
    assert sp.append(more) == 50, "appends resume by themselves once the disk takes writes"
    assert read_all(sp) == more
    sp.close()
    # the cursor written at close is valid: a restart resends nothing
    sp2 = Spool(str(small_tmpfs / "spool"), 10 << 20, segment_bytes=8192).open()
    assert sp2.backlog == 0 and read_all(sp2) == []
    sp2.close()


def test_delivered_records_free_space_on_a_disk_smaller_than_a_default_segment(small_tmpfs):
    """Space is freed a segment at a time. With max_bytes of 64 MB the default
    segment is 8 MB, larger than this 64 KiB disk: segments are kept to a
    sixteenth of the filesystem so what was delivered is freed before the disk
    fills; three times the disk's size flows through without a loss."""
    sp = Spool(str(small_tmpfs / "spool"), 64 << 20).open()
    assert sp.segment_bytes <= 4096
    sent = []
    for round_ in range(100):
        batch = payloads(20, start=round_ * 20, size=100)
        assert sp.append(batch) == 20, (round_, sp.loss_causes())
        sent.extend(batch)
        assert read_all(sp) == batch
    assert sp.losses() == 0
    sp.close()


def test_full_disk_holds_records_in_memory_and_writes_them_in_order_when_space_returns(small_tmpfs, monkeypatch):
    """memory_bytes set (the syslog sink's spool_memory_bytes): what the full disk refuses
    waits in memory, newer records wait behind it, and once space comes back all of them
    reach the disk in order; none is lost. Only what overflows the bound is counted."""
    import netagent.spool as spool_mod

    monkeypatch.setattr(spool_mod, "RETRY_HELD", 0.0)  # every append tries the disk again
    sp = Spool(str(small_tmpfs / "spool"), 10 << 20, segment_bytes=8192, memory_bytes=200 * 100).open()
    sp.append(payloads(10, size=60))
    read_all(sp)
    fill_filesystem(small_tmpfs / "filler")
    data = payloads(150, start=100, size=60)
    # (what still fits in the segment's last, partly used page goes to disk)
    on_disk = sp.append(data[:100])
    assert sp.held == 100 - on_disk > 0 and sp.losses() == 0 and sp.unread()
    assert len(sp.read()) == on_disk, "held records are not readable before they are on disk"
    # the bound (200 records of ~70 bytes here, 20000 bytes) is not reached: still no loss
    assert sp.append(data[100:]) == 0 and sp.held == 150 - on_disk and sp.losses() == 0
    os.unlink(small_tmpfs / "filler")  # space comes back
    later = payloads(5, start=900, size=60)
    assert sp.append(later) == 155 - on_disk, "the held records go first, then the new ones"
    assert sp.held == 0 and sp.losses() == 0 and sp.held_peak == 150 - on_disk
    sp.rewind()
    assert read_all(sp) == data + later, "every record, in order"
    # overflow: only what does not fit in memory_bytes is lost, counted by cause
    fill_filesystem(small_tmpfs / "filler")
    many = payloads(400, start=2000, size=60)
    on_disk = sp.append(many)
    assert on_disk + sp.held + sp.dropped_error == 400 and 0 < sp.held < 300
    assert sp.loss_causes() == {"ENOSPC": sp.dropped_error}
    kept = many[:on_disk + sp.held]
    os.unlink(small_tmpfs / "filler")
    assert sp.retry() == len(kept) - on_disk
    assert read_all(sp) == kept, "the oldest are kept, the newest overflow"
    # still held at close on a full disk: lost and counted, not silently forgotten
    fill_filesystem(small_tmpfs / "filler")
    lost_before = sp.dropped_error
    held = 20 - sp.append(payloads(20, start=5000, size=60))
    assert held > 0 and sp.held == held
    sp.close()
    assert sp.dropped_error == lost_before + held


def test_retry_is_rate_limited_while_the_disk_refuses(small_tmpfs, monkeypatch):
    import netagent.spool as spool_mod

    sp = Spool(str(small_tmpfs / "spool"), 10 << 20, segment_bytes=8192, memory_bytes=1 << 20).open()
    fill_filesystem(small_tmpfs / "filler")
    writes = []
    real_write = os.write
    monkeypatch.setattr(spool_mod.os, "write", lambda fd, data: (writes.append(1), real_write(fd, data))[1])
    on_disk = 0
    while not sp.held:
        on_disk += sp.append(payloads(10))
    tries = len(writes)
    for _ in range(50):
        sp.append(payloads(1))
        sp.retry()
    assert len(writes) - tries <= 2, "a refused disk is not hammered: one try per RETRY_HELD"
    assert sp.held > 50
    sp.close()
