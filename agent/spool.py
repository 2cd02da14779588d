"""A durable on-disk FIFO of records: the syslog sink's spool.

Layout of a spool directory:

    lock                  flock()ed while a process owns the spool
    cursor                "<segment> <offset>": everything before it is delivered
    00000000000000000007.seg, 00000000000000000008.seg, ...   segment files

A segment is a plain append-only file of framed records:

    magic (2 bytes "\\xa5Z") | length (u32 LE) | crc32 of payload (u32 LE) | payload

Why it is shaped like this:
- Append-only segments: a crash (kill -9, power loss) can only tear the last
  record of the last segment. On open that tail is found by its length/CRC
  and cut off, so every earlier record survives intact.
- Two positions: `commit` (persisted in `cursor`, delivered) and `read`
  (next record to hand to the sender). The sender may read ahead; when its
  connection breaks it `rewind()`s to `commit`, which is what makes delivery
  at-least-once. The cursor is written atomically (tmp + fsync + rename) and
  lazily (every `cursor_interval`), so a crash repeats at most that much.
- Whole segments are deleted once the commit position has passed them;
  disk use is bounded by `max_bytes`, counting every segment file. When a
  record does not fit, it is dropped and counted (place "spool"): old
  records are never overwritten, since the oldest are the ones a SIEM has
  not seen yet.
- A disk error (ENOSPC, EIO, EROFS) never escapes from append() or
  commit(). Records the disk refuses are held in memory, in order, up to
  `memory_bytes`, and written out (before any newer record) as soon as the
  disk takes writes again: retried at each append() and retry(), at most
  every RETRY_HELD seconds. Only what overflows that bound is dropped, counted
  by its cause (`error_causes`, e.g. {"ENOSPC": 12}), as is what is still
  held when the spool is closed. A cursor that cannot be written is retried
  at the next commit (a crash meanwhile resends, never loses), and a
  delivered segment is deleted even then, which is what gives the space
  back (and lets the held records out). Held records are not on disk: a
  crash loses them like the sink's in-memory buffer.
- fsync policy: a process crash (kill -9) loses nothing write() returned
  for: the page cache keeps it. Against power loss, data is fsynced every
  `fsync_interval` seconds, on segment rotation and on close, but only
  while `durable` is set. The sink sets it while records actually wait
  (collector unreachable or behind); while the collector keeps up, records
  are confirmed and their segments deleted within seconds, usually before
  the kernel writes them back at all, so a healthy agent causes almost no
  disk writes. The cursor is fsynced only in durable mode too: a stale
  cursor after a power cut means records are sent again, never lost.

The spool is used by one thread (the sink's delivery thread); it does no
locking of its own beyond the cross-process directory lock.
"""

import collections
import errno
import fcntl
import os
import struct
import time
import zlib
from typing import NamedTuple

MAGIC = b"\xa5Z"
HEADER = struct.Struct("<2sII")
HEADER_SIZE = HEADER.size
SEGMENT_SUFFIX = ".seg"
CURSOR_NAME = "cursor"
LOCK_NAME = "lock"
# A record longer than this is certainly garbage in a length field.
MAX_RECORD = 64 * 2**20
# while records wait in memory for a disk that refused them, a write is tried this often
RETRY_HELD = 0.1
# held records are written back in slices of about this size (a failed try costs one write)
HELD_SLICE_BYTES = 256 * 1024


class SpoolError(OSError):
    """The spool directory cannot be used (permissions, in use by another process)."""


class SpoolBusy(SpoolError):
    """Another owner holds the spool; `holder_pid` is its process (maybe this one)."""

    def __init__(self, err: int, message: str, holder_pid: int | None):
        super().__init__(err, message)
        self.holder_pid = holder_pid


class Position(NamedTuple):
    segment: int
    offset: int


def segment_name(index: int) -> str:
    return f"{index:020d}{SEGMENT_SUFFIX}"


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def default_segment_bytes(max_bytes: int) -> int:
    # Small enough that a fully delivered segment is freed soon (at most an
    # eighth of the bound sits delivered but undeleted), large enough that
    # rotation (create + fsync dir) is rare.
    return max(4096, min(16 * 2**20, max_bytes // 8))


class Spool:
    def __init__(
        self,
        directory: str,
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        fsync_interval: float = 1.0,
        cursor_interval: float = 0.5,
        memory_bytes: int = 0,
    ):
        self.directory = directory
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes  # bound of the records held while the disk refuses writes
        self.segment_bytes = segment_bytes or default_segment_bytes(max_bytes)
        self.fsync_interval = fsync_interval
        self.cursor_interval = cursor_interval
        # counters (read by other threads for status; plain ints are fine)
        self.dropped_full = 0  # appends refused: spool at max_bytes
        self.dropped_error = 0  # appends failed: disk error (ENOSPC, EIO)
        self.error_causes: dict[str, int] = {}  # dropped_error by errno name
        self.held_total = 0  # records that had to wait in memory for the disk
        self.held_peak = 0  # most records held at once
        self.disk_errors = 0  # failed disk operations of any kind (write, fsync, cursor, unlink)
        self.last_disk_error: str | None = None
        self.corrupt = 0  # torn or damaged records found and skipped
        self.recovered = 0  # records found waiting when the spool was opened
        self.backlog = 0  # records appended and not yet committed
        self._segments: list[int] = []  # existing segment indices, ascending
        self._sizes: dict[int, int] = {}
        self._commit = Position(0, 0)
        self._read = Position(0, 0)
        self._persisted = Position(-1, -1)
        self._write_fd = -1
        self._read_fd = -1
        self._read_fd_seg = -1
        self._lock_fd = -1
        self._dir_fd = -1
        self._dirty = False
        self._last_fsync = float("-inf")
        self._last_cursor_write = float("-inf")
        self._durable = True
        self._damaged: set[Position] = set()
        self._held: collections.deque[bytes] = collections.deque()  # framed records the disk refused, in order
        self._held_bytes = 0
        self._held_cause = ""
        self._next_held_try = 0.0
        # the disk filled up: new records go to a new segment, so the delivered
        # part of the current one can be deleted (space is only freed by segment)
        self._rotate_requested = False

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> "Spool":
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            self._lock_fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._close_fds()
            raise SpoolError(exc.errno, f"spool directory {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_small(self._lock_fd).strip() or "?"
            self._close_fds()
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                pid = int(holder) if holder.isdigit() else None
                who = "another sink of this process" if pid == os.getpid() else f"another process (pid {holder})"
                raise SpoolBusy(
                    exc.errno, f"spool directory {self.directory} is in use by {who}", pid
                ) from None
            raise SpoolError(exc.errno, f"spool directory {self.directory}: {exc.strerror}") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self._fit_segments_to_disk()
        self._recover()
        return self

    def _fit_segments_to_disk(self) -> None:
        """Delivered records are freed a whole segment at a time: on a small
        filesystem a segment sized from max_bytes alone could fill the disk
        before it is ever deleted. Keep segments at most 1/16 of the filesystem."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return
        fs_bytes = st.f_blocks * st.f_frsize
        if fs_bytes > 0:
            self.segment_bytes = min(self.segment_bytes, max(4096, fs_bytes // 16))

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        try:
            self._durable = True  # what stays behind must survive anything
            self._next_held_try = 0.0
            self.retry()
            if self._held:  # the disk still refuses them: nothing is left to keep them in
                self._drop_held(len(self._held))
            self.sync()
            self._write_cursor(force=True)
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_write_fd", "_read_fd", "_dir_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)
        self._read_fd_seg = -1

    # -- recovery ------------------------------------------------------------------
    def _recover(self) -> None:
        self._segments = sorted(self._list_segments())
        self._sizes = {i: os.path.getsize(self._path(i)) for i in self._segments}
        cursor = self._load_cursor()
        if self._segments:
            first, last = self._segments[0], self._segments[-1]
            if cursor is None or cursor.segment < first:
                cursor = Position(first, 0)
            # Only the last segment can end in a torn record: cut it off.
            self._truncate_torn_tail(last)
            # (a cursor past the last segment means all of them were
            # delivered; they are deleted below, never resent)
            cursor = Position(cursor.segment, min(cursor.offset, self._sizes.get(cursor.segment, 0)))
        else:
            cursor = cursor or Position(0, 0)
            cursor = Position(cursor.segment, 0)
        self._commit = self._read = cursor
        self._persisted = cursor
        # Segments wholly before the cursor were delivered; a crash between
        # cursor write and unlink can leave them.
        for index in [i for i in self._segments if i < cursor.segment]:
            self._delete_segment(index)
        if cursor.segment not in self._sizes:
            cursor = Position(cursor.segment, 0)
            self._commit = self._read = cursor
        self.recovered = self.backlog = self._count_from(cursor)

    def _list_segments(self):
        for name in os.listdir(self.directory):
            if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit():
                yield int(name[: -len(SEGMENT_SUFFIX)])

    def _load_cursor(self) -> Position | None:
        try:
            with open(os.path.join(self.directory, CURSOR_NAME), "rb") as f:
                parts = f.read(200).split()
            return Position(int(parts[0]), int(parts[1]))
        except (OSError, ValueError, IndexError):
            return None  # no cursor (fresh spool) or unreadable: start at the oldest record

    def _truncate_torn_tail(self, index: int) -> None:
        size = self._sizes[index]
        good = 0
        with open(self._path(index), "rb") as f:
            for _payload, end in _scan(f, 0, size):
                good = end
        if good < size:
            # A partial record left by a crash mid-write: it was never fully
            # accepted, count it and cut it so appends continue cleanly.
            self.corrupt += 1
            fd = os.open(self._path(index), os.O_WRONLY)
            try:
                os.ftruncate(fd, good)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._sizes[index] = good

    def _count_from(self, pos: Position) -> int:
        count = 0
        for index in self._segments:
            if index < pos.segment:
                continue
            start = pos.offset if index == pos.segment else 0
            with open(self._path(index), "rb") as f:
                for _ in _scan(f, start, self._sizes[index], headers_only=True):
                    count += 1
        return count

    # -- writing -----------------------------------------------------------------------
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    def append(self, payloads) -> int:
        """Append records in order; returns how many went to disk now (held ones included).

        A record that would push the spool past max_bytes is dropped and
        counted. Later (smaller) records may still fit; they are stored
        after the earlier ones, so order is kept among stored records.
        Records the disk refuses wait in memory (see the module docstring),
        and every later record waits behind them.
        """
        records = [frame(p) for p in payloads]
        earlier = self.retry() if self._held else 0
        if self._held:
            self._hold(records, None)
            return earlier
        stored, refused, exc = self._store(records)
        if refused:
            self._hold(refused, exc)
        self.backlog += stored
        self._maybe_fsync()
        return earlier + stored

    @property
    def held(self) -> int:
        """Records waiting in memory for the disk to take writes again."""
        return len(self._held)

    def retry(self) -> int:
        """Write held records out if the disk takes them now (at most every RETRY_HELD s);
        returns how many were written."""
        if not self._held or time.monotonic() < self._next_held_try:
            return 0
        written = 0
        while self._held:
            piece, size = [], 0
            while self._held and (not piece or size + len(self._held[0]) <= HELD_SLICE_BYTES):
                rec = self._held.popleft()
                piece.append(rec)
                size += len(rec)
            self._held_bytes -= size
            stored, refused, _ = self._store(piece)
            written += stored
            self.backlog += stored
            if refused:
                self._held.extendleft(reversed(refused))
                self._held_bytes += sum(len(r) for r in refused)
                self._next_held_try = time.monotonic() + RETRY_HELD
                break
        self._maybe_fsync()
        return written

    def _hold(self, records: list[bytes], exc: OSError | None) -> None:
        """Keep records the disk refused, in order, within memory_bytes; count what overflows."""
        if exc is not None:
            self._held_cause = self._note_disk_error(exc)
            self._next_held_try = time.monotonic() + RETRY_HELD
        overflow = 0
        for rec in records:
            if self._held_bytes + len(rec) > self.memory_bytes:
                overflow += 1  # the newest go: the held ones are older and not yet seen by anyone
                continue
            self._held.append(rec)
            self._held_bytes += len(rec)
            self.held_total += 1
        self.held_peak = max(self.held_peak, len(self._held))
        if overflow:
            self._count_lost(self._held_cause or "EIO", overflow)

    def _drop_held(self, count: int) -> None:
        for _ in range(count):
            self._held_bytes -= len(self._held.popleft())
        self._count_lost(self._held_cause or "EIO", count)

    def _store(self, records: list[bytes]) -> tuple[int, list[bytes], OSError | None]:
        """Write framed records in order until the disk refuses one.
        Returns (records stored, records from the first refused one on, the error)."""
        stored = 0
        chunk: list[bytes] = []
        chunk_len = 0
        used = self.disk_bytes()
        seg = self._segments[-1] if self._segments else None
        for i, rec in enumerate(records):
            if used + len(rec) > self.max_bytes:
                self.dropped_full += 1
                continue
            fill = (self._sizes[seg] if seg is not None else 0) + chunk_len
            full = fill > 0 and fill + len(rec) > self.segment_bytes
            # a segment the disk filled is left for a new one, so its delivered part can be deleted
            rotate = self._rotate_requested and seg is not None and self._sizes[seg] > 0
            if seg is None or full or rotate:
                if chunk:
                    exc = self._write(chunk)
                    if exc is not None:
                        return stored, chunk + records[i:], exc
                    stored += len(chunk)
                    chunk, chunk_len = [], 0
                try:
                    seg = self._new_segment()
                except OSError as exc:
                    return stored, records[i:], exc
                self._rotate_requested = False
            chunk.append(rec)
            chunk_len += len(rec)
            used += len(rec)
        if chunk:
            exc = self._write(chunk)
            if exc is not None:
                return stored, chunk, exc
            stored += len(chunk)
        return stored, [], None

    def _write(self, records: list[bytes]) -> OSError | None:
        """One write() for a run of records into the last segment; the error if it failed."""
        index = self._segments[-1]
        data = b"".join(records)
        try:
            if self._write_fd < 0:
                self._write_fd = os.open(self._path(index), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            written = os.write(self._write_fd, data)
            failure = None if written == len(data) else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            failure = exc
        if failure is not None:
            # Disk full or I/O error: cut whatever partial record got out so
            # the segment stays a clean sequence of whole records.
            self._rotate_requested = True
            if self._write_fd >= 0:
                try:
                    os.ftruncate(self._write_fd, self._sizes[index])
                except OSError:
                    pass
            return failure
        self._sizes[index] += written
        self._dirty = True
        return None

    def _new_segment(self) -> int:
        """Start the next segment; OSError if it cannot be created (nothing changed then)."""
        if self._write_fd >= 0:
            # the finished segment goes to disk before the next one exists
            if self._durable:
                self._guarded(os.fsync, self._write_fd)
            os.close(self._write_fd)
            self._write_fd = -1
            self._dirty = False
        # indices only grow, across restarts too (the cursor names one)
        index = max((self._segments[-1] + 1) if self._segments else 0, self._commit.segment)
        path = self._path(index)
        try:
            self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # left by a create whose directory fsync failed: empty it and use it
            self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_TRUNC, 0o600)
        self._segments.append(index)
        self._sizes[index] = 0
        if self._durable:
            self._guarded(os.fsync, self._dir_fd)
        return index

    def _guarded(self, fn, *args) -> bool:
        """A disk operation whose failure loses no record (fsync, unlink): noted, not raised."""
        try:
            fn(*args)
            return True
        except OSError as exc:
            self._note_disk_error(exc)
            return False

    def _note_disk_error(self, exc: OSError) -> str:
        cause = errno.errorcode.get(exc.errno or 0, "EIO") if exc.errno else type(exc).__name__
        self.disk_errors += 1
        self.last_disk_error = f"{cause}: {exc.strerror or exc}"
        return cause

    def _count_lost(self, cause: str, records: int) -> None:
        self.dropped_error += records
        self.error_causes[cause] = self.error_causes.get(cause, 0) + records

    @property
    def durable(self) -> bool:
        return self._durable

    @durable.setter
    def durable(self, value: bool) -> None:
        if value and not self._durable:
            self._durable = True
            self.sync()  # what is already there goes to disk now
        self._durable = value

    def _maybe_fsync(self) -> None:
        if self._durable and self._dirty and time.monotonic() - self._last_fsync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """Force appended data to disk."""
        if self._dirty and self._write_fd >= 0:
            self._guarded(os.fsync, self._write_fd)
        self._dirty = False
        self._last_fsync = time.monotonic()

    # -- reading -------------------------------------------------------------------------
    def read(self, max_records: int = 512, max_bytes: int = 256 * 1024) -> list[tuple[bytes, Position]]:
        """The next records after the read position, each with the position after it.

        Advances the read position; `rewind()` goes back to the last commit.
        """
        out: list[tuple[bytes, Position]] = []
        taken = 0
        pos = self._read
        while len(out) < max_records and taken < max_bytes:
            if pos.segment not in self._sizes:
                nxt = [i for i in self._segments if i > pos.segment]
                if not nxt:
                    break
                pos = Position(nxt[0], 0)
                continue
            size = self._sizes[pos.segment]
            if pos.offset >= size:
                if pos.segment == self._segments[-1]:
                    break  # caught up with the writer
                pos = Position(self._next_segment(pos.segment), 0)
                continue
            fd = self._reader_fd(pos.segment)
            want = min(size - pos.offset, max(max_bytes - taken, HEADER_SIZE) + HEADER_SIZE)
            buf = os.pread(fd, want, pos.offset)
            parsed = 0
            damaged = False
            while parsed + HEADER_SIZE <= len(buf) and len(out) < max_records and taken < max_bytes:
                magic, length, crc = HEADER.unpack_from(buf, parsed)
                if magic != MAGIC or length > MAX_RECORD or pos.offset + parsed + HEADER_SIZE + length > size:
                    damaged = True
                    break
                end = parsed + HEADER_SIZE + length
                if end > len(buf):
                    # record longer than what we read: fetch it whole
                    if parsed == 0:
                        buf = os.pread(fd, HEADER_SIZE + length, pos.offset)
                        if len(buf) < HEADER_SIZE + length:
                            damaged = True
                        continue
                    break
                payload = bytes(buf[parsed + HEADER_SIZE : end])
                if zlib.crc32(payload) != crc:
                    damaged = True
                    break
                parsed = end
                out.append((payload, Position(pos.segment, pos.offset + parsed)))
                taken += len(payload)
            if damaged:
                # A damaged record in the middle of the spool (disk error,
                # outside interference): its length cannot be trusted, so
                # the rest of this segment is skipped and counted.
                pos = Position(pos.segment, pos.offset + parsed)
                if pos not in self._damaged:  # a rewind reads it again: count once
                    self._damaged.add(pos)
                    self.corrupt += 1
                if pos.segment == self._segments[-1]:
                    # cannot skip past the writer: cut the segment here
                    self._truncate_at(pos)
                    self.backlog = self._count_from(self._commit)
                    break
                pos = Position(self._next_segment(pos.segment), 0)
                self.backlog = self._count_from(self._commit)
                continue
            pos = Position(pos.segment, pos.offset + parsed)
        self._read = pos
        return out

    def _truncate_at(self, pos: Position) -> None:
        if self._write_fd >= 0:
            os.ftruncate(self._write_fd, pos.offset)
        else:
            fd = os.open(self._path(pos.segment), os.O_WRONLY)
            try:
                os.ftruncate(fd, pos.offset)
            finally:
                os.close(fd)
        self._sizes[pos.segment] = pos.offset

    def _next_segment(self, index: int) -> int:
        for i in self._segments:
            if i > index:
                return i
        return index + 1

    def _reader_fd(self, index: int) -> int:
        if self._read_fd_seg != index:
            if self._read_fd >= 0:
                os.close(self._read_fd)
            self._read_fd = os.open(self._path(index), os.O_RDONLY)
            self._read_fd_seg = index
        return self._read_fd

    def rewind(self) -> None:
        """Back to the last committed position: resend everything not confirmed."""
        self._read = self._commit

    def unread(self) -> bool:
        """True if there are records after the read position (or held, waiting for the disk)."""
        if self._held:
            return True
        pos = self._read
        if pos.segment in self._sizes and pos.offset < self._sizes[pos.segment]:
            return True
        return any(i > pos.segment and self._sizes[i] > 0 for i in self._segments)

    # -- committing ----------------------------------------------------------------------
    def commit(self, pos: Position, records: int) -> None:
        """Records up to `pos` are delivered: free their space, remember lazily."""
        if pos <= self._commit:
            return
        self._commit = pos
        self.backlog = max(0, self.backlog - records)
        # delete segments the commit position has left behind; the segment
        # being written stays (it is reused until full)
        last = self._segments[-1] if self._segments else None
        for index in list(self._segments):
            finished = index < pos.segment or (pos.segment == index and pos.offset >= self._sizes[index])
            if finished and index != last:
                self._write_cursor(force=True)  # cursor first, then unlink: a crash between repeats nothing
                self._delete_segment(index)
        if last is not None and pos.segment == last and pos.offset >= self._sizes[last] > 0 and (
                self._sizes[last] >= self.segment_bytes or self._rotate_requested):
            # the writer's segment is full and fully delivered: start afresh
            self._rotate_empty()
        self._write_cursor()

    def _rotate_empty(self) -> None:
        old = self._segments[-1]
        try:
            self._new_segment()
        except OSError as exc:
            self._note_disk_error(exc)  # keep appending to the old one; rotate next time
            return
        self._rotate_requested = False
        self._commit = self._read = Position(self._segments[-1], 0)
        self._write_cursor(force=True)
        self._delete_segment(old)

    def _delete_segment(self, index: int) -> None:
        if self._read_fd_seg == index:
            os.close(self._read_fd)
            self._read_fd, self._read_fd_seg = -1, -1
        try:
            os.unlink(self._path(index))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._note_disk_error(exc)  # a read-only disk: forgotten here, resent after a restart at worst
        if index in self._sizes:
            del self._sizes[index]
        if index in self._segments:
            self._segments.remove(index)

    def _write_cursor(self, force: bool = False) -> None:
        if self._commit == self._persisted:
            return
        now = time.monotonic()
        if not force and now - self._last_cursor_write < self.cursor_interval:
            return
        path = os.path.join(self.directory, CURSOR_NAME)
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                text = f"{self._commit.segment} {self._commit.offset}\n".encode()
                if os.write(fd, text) != len(text):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            # The old cursor stays: a crash now resends from it (never loses).
            # Deleting delivered segments goes on regardless: that is how a
            # full disk gets its space back. Tried again at the next commit.
            self._note_disk_error(exc)
            self._last_cursor_write = now
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        if self._durable and self._dir_fd >= 0:
            self._guarded(os.fsync, self._dir_fd)
        self._persisted = self._commit
        self._last_cursor_write = now

    def flush_cursor(self) -> None:
        self._write_cursor(force=True)

    # -- introspection ---------------------------------------------------------------------
    @property
    def commit_position(self) -> Position:
        return self._commit

    @property
    def read_position(self) -> Position:
        return self._read

    def losses(self) -> int:
        return self.dropped_full + self.dropped_error + self.corrupt

    def loss_causes(self) -> dict[str, int]:
        """losses() by cause: "full" (at max_bytes), "corrupt" (damaged records
        skipped), and the errno name of each disk error ("ENOSPC", "EIO", ...)."""
        causes = {"full": self.dropped_full, "corrupt": self.corrupt, **self.error_causes}
        return {cause: n for cause, n in causes.items() if n}

    def _path(self, index: int) -> str:
        return os.path.join(self.directory, segment_name(index))


def _scan(f, start: int, size: int, headers_only: bool = False):
    """Yield (payload or None, end offset) for each intact record from `start`."""
    pos = start
    f.seek(pos)
    while pos + HEADER_SIZE <= size:
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            return
        magic, length, crc = HEADER.unpack(header)
        if magic != MAGIC or length > MAX_RECORD or pos + HEADER_SIZE + length > size:
            return
        if headers_only:
            f.seek(length, os.SEEK_CUR)
            payload = None
        else:
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
        pos += HEADER_SIZE + length
        yield payload, pos


def _read_small(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace")
    except OSError:
        return ""
