"""file sink: JSON lines in a size-rotated file, logrotate-friendly.

Rotation follows the logrotate/RotatingFileHandler naming: events.json is
current, events.json.1 the newest backup, events.json.<backups> the oldest.
A rotation happens only between lines, so no line is ever split across
files. SIGHUP reopens the path, so an external logrotate with `create` or
a plain `mv` works too. Files are created with mode 0640 whatever the umask:
events carry addresses and a SIEM shipper in the file's group may read them.
"""

import errno
import os
import stat

from netagent.configschema import SchemaError, non_negative, positive
from netagent.sinks.base import BufferedSink

FILE_MODE = 0o640
DIR_MODE = 0o750


class FileSink(BufferedSink):
    TYPE = "file"
    CONFIG_SCHEMA = {
        "path": ("str", "/var/log/netagent/events.json"),
        # rotate before the file would grow past this
        "max_bytes": ("size", 100 * 2**20, positive),
        # rotated files kept (events.json.1 .. events.json.N); 0 keeps none
        "backups": ("int", 5, non_negative),
        # fsync after every batch: survives a power cut, costs throughput
        "fsync": ("bool", False),
    }

    def __init__(self, name: str, path: str, max_bytes: int, backups: int, capacity: int = 20000,
                 fsync: bool = False):
        super().__init__(name, capacity)
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._fd: int | None = None
        self._regular = True
        self._size = 0
        self.rotations = 0

    @classmethod
    def from_config(cls, cfg: dict) -> "FileSink":
        return cls(cfg["name"] or cls.TYPE, cfg["path"], cfg["max_bytes"], cfg["backups"], cfg["buffer_events"],
                   cfg["fsync"])

    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        path = cfg["path"]
        if not path or not os.path.isabs(path):
            raise SchemaError("path", f"{path!r} must be an absolute path")
        if path.endswith("/") or os.path.isdir(path):
            raise SchemaError("path", f"{path!r} is a directory; name a file in it")

    # -- target -------------------------------------------------------------------
    def open(self):
        try:
            self._open()
        except OSError as exc:
            raise SchemaError("path", f"cannot open {self.path}: {exc.strerror}") from None

    def _open(self):
        parent = os.path.dirname(self.path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
            # the umask may have changed it; never touch devices (/dev/stdout, /dev/full)
            try:
                os.fchmod(fd, FILE_MODE)
            except OSError:
                pass
        self._fd = fd
        self._regular = stat.S_ISREG(st.st_mode)  # only regular files are ever rotated
        self._size = st.st_size if self._regular else 0

    def _close_fd(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)

    def reopen_target(self):
        self._close_fd()
        self._open()

    def shutdown(self):
        self._close_fd()

    # -- writing --------------------------------------------------------------------
    def deliver(self, batch):
        if self._fd is None:
            self._open()  # a failed reopen earlier; try again
        written = 0
        try:
            pending: list[bytes] = []
            pending_size = 0
            for line, _ in batch:
                n = len(line)
                if self._regular and self._size + pending_size + n > self.max_bytes and self._size + pending_size > 0:
                    self._write(pending)
                    written += len(pending)
                    pending, pending_size = [], 0
                    self._rotate()
                pending.append(line)
                pending_size += n
            self._write(pending)
            written += len(pending)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            # count only what did not reach the file, and keep going with the next batch
            self._failed += len(batch) - written
            self.record_error(exc)
            if exc.errno in (errno.EBADF, errno.ENOENT, errno.ESTALE):
                self._fd = None
        return written

    def _write(self, lines: list[bytes]):
        if not lines:
            return
        data = memoryview(b"".join(lines))
        while data:
            n = os.write(self._fd, data)
            data = data[n:]
            self._size += n

    def _rotate(self):
        self._close_fd()
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = f"{self.path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self.rotations += 1
        self._open()

    def status(self):
        out = super().status()
        out["path"] = self.path
        out["rotations"] = self.rotations
        return out
