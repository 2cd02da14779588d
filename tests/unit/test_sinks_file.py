"""The file sink: size rotation keeping `backups`, no line lost or split, mode 0640, reopen."""

import os
import stat

import orjson
import pytest

from netagent.sinks.file import FileSink


def line(i: int, pad: int = 40) -> bytes:
    return orjson.dumps({"event": {"sequence": i}, "pad": "x" * pad}) + b"\n"


def read_numbers(path) -> list[int]:
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a partial line"
    return [orjson.loads(raw)["event"]["sequence"] for raw in data.splitlines()]


def all_files(path, backups):
    """Oldest first: path.N ... path.1, path."""
    names = [f"{path}.{i}" for i in range(backups, 0, -1)] + [str(path)]
    return [n for n in names if os.path.exists(n)]


@pytest.mark.timeout(30)
def test_rotation_keeps_backups_and_loses_no_line(tmp_path):
    path = tmp_path / "log" / "events.json"
    sink = FileSink("file", str(path), max_bytes=4096, backups=3)
    sink.start()
    n = 2000  # ~ 130 KiB: dozens of rotations
    for i in range(1, n + 1):
        assert sink.submit(line(i), {})
    assert sink.flush(10)
    sink.close(5)
    assert sink.rotations > 10
    # exactly `backups` rotated files, none beyond
    assert all(os.path.exists(f"{path}.{i}") for i in (1, 2, 3))
    assert not os.path.exists(f"{path}.4")
    numbers = []
    for name in all_files(path, 3):
        assert os.path.getsize(name) <= 4096
        numbers += read_numbers(name)
    # what the kept files hold is the contiguous tail of what was written: nothing
    # missing or duplicated at a rotation boundary
    assert numbers == list(range(numbers[0], n + 1))
    assert sink.losses() == {"sink": 0} and sink.delivered == n


@pytest.mark.timeout(30)
def test_every_line_survives_when_backups_cover_everything(tmp_path):
    path = tmp_path / "events.json"
    sink = FileSink("file", str(path), max_bytes=1000, backups=1000)
    sink.start()
    for i in range(1, 501):
        sink.submit(line(i, pad=int(i % 7) * 13), {})  # uneven line lengths
    sink.close(5)
    files = all_files(path, 1000)
    numbers = [x for name in files for x in read_numbers(name)]
    assert numbers == list(range(1, 501))
    assert all(os.path.getsize(name) <= 1000 for name in files)


def test_oversized_line_goes_alone_into_a_fresh_file(tmp_path):
    path = tmp_path / "events.json"
    sink = FileSink("file", str(path), max_bytes=200, backups=2)
    sink.start()
    sink.submit(line(1), {})
    sink.submit(line(2, pad=500), {})
    sink.submit(line(3), {})
    sink.close(5)
    assert read_numbers(f"{path}.2") == [1]
    assert read_numbers(f"{path}.1") == [2]
    assert read_numbers(path) == [3]


def test_backups_zero_keeps_only_the_current_file(tmp_path):
    path = tmp_path / "events.json"
    sink = FileSink("file", str(path), max_bytes=500, backups=0)
    sink.start()
    for i in range(1, 101):
        sink.submit(line(i), {})
    sink.close(5)
    assert os.listdir(tmp_path) == ["events.json"]
    numbers = read_numbers(path)
    assert numbers == list(range(numbers[0], 101))


def test_mode_is_0640_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "events.json"
        sink = FileSink("file", str(path), max_bytes=300, backups=2)
        sink.start()
        for i in range(20):
            sink.submit(line(i), {})
        sink.close(5)
    finally:
        os.umask(old)
    for name in all_files(path, 2):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o640, name


def test_existing_file_is_appended_and_its_size_counts(tmp_path):
    path = tmp_path / "events.json"
    path.write_bytes(line(0) * 5)
    sink = FileSink("file", str(path), max_bytes=len(line(0)) * 6, backups=1)
    sink.start()
    sink.submit(line(1), {})
    sink.submit(line(2), {})
    sink.close(5)
    assert read_numbers(f"{path}.1") == [0, 0, 0, 0, 0, 1]
    assert read_numbers(path) == [2]


@pytest.mark.timeout(30)
def test_reopen_after_logrotate_style_move_loses_nothing(tmp_path):
    path = tmp_path / "events.json"
    sink = FileSink("file", str(path), max_bytes=10**9, backups=1)
    sink.start()
    for i in range(1, 101):
        sink.submit(line(i), {})
    assert sink.flush(5)
    os.rename(path, f"{path}.moved")  # logrotate without copytruncate
    for i in range(101, 151):  # still written to the moved file until the reopen
        sink.submit(line(i), {})
    assert sink.flush(5)
    sink.reopen()  # SIGHUP
    for i in range(151, 201):
        sink.submit(line(i), {})
    sink.close(5)
    assert read_numbers(f"{path}.moved") == list(range(1, 151))
    assert read_numbers(path) == list(range(151, 201))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_write_errors_are_counted_not_raised(tmp_path):
    # /dev/full fails every write with ENOSPC, like a full disk
    sink = FileSink("full", "/dev/full", max_bytes=10**9, backups=0)
    sink.start()
    for i in range(50):
        sink.submit(line(i), {})
    assert sink.flush(5)
    sink.close(5)
    assert sink.losses() == {"sink": 50}
    assert "No space left on device" in sink.status()["last_error"]


def test_unwritable_path_fails_start_naming_the_key(tmp_path):
    from netagent.configschema import SchemaError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink("file", str(blocker / "events.json"), max_bytes=1000, backups=1)
    with pytest.raises(SchemaError) as exc:
        sink.start()
    assert exc.value.key == "path" and "cannot open" in exc.value.message
