"""syslog sink: RFC 5424 messages over TCP (RFC 6587 octet counting), TLS per RFC 5425.

Every event becomes one RFC 5424 message whose MSG is the event's JSON:

    <165>1 2024-05-01T10:00:00.123456Z node-1 netagent 4242 netagent.drops
      [meta sequenceId="17"][origin software="netagent" swVersion="0.1.0"] {"@timestamp":...}

framed for the stream as `MSG-LEN SP SYSLOG-MSG` (RFC 6587 3.4.1 / RFC 5425 4.3).

Delivery: at-least-once, in order
---------------------------------
Every event is appended to the disk spool (netagent.spool) first and the
sender reads the spool in order, so events spooled while the collector was
down are always sent before newer ones, and a spool left by a previous run
is sent first on the next start.

TCP acceptance is not delivery: the collector's kernel acknowledges bytes
its process may never read (it is stopped, it crashes, it rejects our client
certificate after the handshake). RFC 5425 has no application-level
acknowledgement, so the sender keeps each record in the spool until

  1. the collector's TCP stack has acknowledged every byte of it (our send
     queue, SIOCOUTQ, has drained past its last byte), and
  2. `resend_window` seconds have passed since then with the connection
     still up (no FIN, RST or TLS alert seen).

Only then is it committed (removed from the spool). When the connection
breaks, everything not committed is sent again after reconnecting. A SIEM
therefore sees every event, in order, but may see a few of the last events
before an outage twice; the RFC 5424 `meta sequenceId` and `event.sequence`
let it drop the repeats. On a clean shutdown (SIGTERM) the sink closes the
stream in an orderly way (TLS close_notify, then our FIN) and waits for the
collector to close its side: a collector only does that after reading our
end of stream, which proves it read everything, so a clean restart repeats
nothing.

Losses are counted by place: "sink" when the in-memory buffer in front of
the spool is full, "spool" when the spool is at spool_max_bytes (new events
are dropped, the oldest are kept because the SIEM has not seen them yet),
a damaged record had to be skipped, or the spool's disk refused writes for
longer than `spool_memory_bytes` of events could wait in memory.
"""

import errno
import functools
import os
import random
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque

import fcntl
import termios

from netagent import __version__
from netagent.configschema import SchemaError, parse_address, positive
from netagent.sinks import syslog_config
from netagent.sinks.base import Sink
from netagent.spool import Spool, SpoolBusy, SpoolError
from netagent.watchdog import WATCHDOG

# RFC 5424 severities used for events (facility comes from the configuration)
SEVERITY = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
_LOG_LEVEL = {
    "critical": 2, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4,
    "notice": 5, "info": 6, "informational": 6, "debug": 7,
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_NILVALUE = "-"
# RFC 5424 7.3.1: sequenceId runs 1..2147483647
_MAX_SEQUENCE_ID = 2147483647

EXTRA_SCHEMA = {
    # records the collector's TCP stack acknowledged less than this long ago
    # are sent again after a reconnect (TCP acceptance is not delivery)
    "resend_window": ("duration", 2.0, positive),
    # TCP connect + TLS handshake must finish within this
    "connect_timeout": ("duration", 5.0, positive),
    # spooled data is fsynced at least this often (power-loss window)
    "spool_fsync_interval": ("duration", 1.0, positive),
}


# -- RFC 5424 formatting ---------------------------------------------------------------
@functools.lru_cache(maxsize=1024)  # host names and datasets repeat: sanitise each once
def _printusascii(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 6.2), cut to `limit`."""
    clean = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return clean or _NILVALUE


def _sd_value(text: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _ascii_json(line: bytes) -> bytes:
    """The JSON event as pure ASCII (non-ASCII characters as \\uXXXX escapes).

    RFC 5424 says UTF-8 MSG must start with a byte-order mark, which many
    SIEM JSON parsers choke on; ASCII JSON needs no BOM and means the same.
    Non-ASCII can only occur inside JSON strings, where \\u escapes are valid.
    """
    line = line.rstrip(b"\r\n")
    if line.isascii():
        return line
    out = []
    for ch in line.decode("utf-8", errors="backslashreplace"):
        code = ord(ch)
        if code < 0x80:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out).encode("ascii")


def severity_of(event: dict) -> int:
    """Severity from the event: log.level if set, warning for alerts, else informational."""
    level = (event.get("log") or {}).get("level") if isinstance(event.get("log"), dict) else None
    if isinstance(level, str) and level.lower() in _LOG_LEVEL:
        return _LOG_LEVEL[level.lower()]
    kind = (event.get("event") or {}).get("kind")
    if kind == "alert":
        return SEVERITY["warning"]
    return SEVERITY["info"]


def format_message(
    line: bytes,
    event: dict,
    *,
    facility: int,
    app_name: str = "netagent",
    hostname: str | None = None,
    procid: int | None = None,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG (without transport framing) carrying the JSON event."""
    stamp = event.get("@timestamp")
    if not isinstance(stamp, str) or not _RFC3339.match(stamp):
        from netagent.timefmt import iso_timestamp

        stamp = iso_timestamp()
    host = event.get("host")
    host_name = (host.get("name") if isinstance(host, dict) else None) or hostname or socket.gethostname()
    ev = event.get("event")
    if not isinstance(ev, dict):
        ev = {}
    fields = _header_fields(str(host_name), app_name, procid if procid is not None else os.getpid(),
                            str(ev.get("dataset") or ""))
    seq = ev.get("sequence")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        # wraps as RFC 5424 7.3.1 asks; event.sequence in the JSON stays exact
        sd = f'[meta sequenceId="{(seq - 1) % _MAX_SEQUENCE_ID + 1}"]{_ORIGIN_SD}'
    else:
        sd = _ORIGIN_SD
    header = f"<{facility * 8 + severity_of(event)}>1 {stamp} {fields}{sd} "
    return header.encode("ascii") + _ascii_json(line)


_ORIGIN_SD = f'[origin software="netagent" swVersion="{_sd_value(__version__)}"]'


@functools.lru_cache(maxsize=256)
def _header_fields(host_name: str, app_name: str, procid: int, dataset: str) -> str:
    """HOSTNAME APP-NAME PROCID MSGID, sanitised once per distinct combination."""
    return (f"{_printusascii(host_name, 255)} {_printusascii(app_name, 48)} "
            f"{_printusascii(str(procid), 128)} {_printusascii(dataset, 32)} ")


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return b"%d %s" % (len(message), message)


# -- reconnect policy -------------------------------------------------------------------
class Backoff:
    """Exponential reconnect delays: initial, x2 each failure, capped, with jitter.

    Jitter only shortens a delay (by up to `jitter`), so the cap holds and a
    fleet of agents restarted together does not reconnect in lockstep.
    """

    def __init__(self, initial: float, cap: float, factor: float = 2.0, jitter: float = 0.2, rand=random.random):
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return base * (1.0 - self.jitter * self.rand())

    def reset(self) -> None:
        self.failures = 0


# -- transport --------------------------------------------------------------------------
class DeliveryError(Exception):
    """The collector cannot be reached or dropped us; str() is the reason for the operator."""


class Connection:
    """A non-blocking TCP stream, optionally TLS over memory BIOs.

    TLS runs over memory BIOs (not ssl.SSLSocket) so we know exactly how
    many bytes went on the wire for each message; comparing that with the
    kernel's unacknowledged count (SIOCOUTQ) tells which messages the
    collector's TCP stack has acknowledged.
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject | None, incoming, outgoing):
        self.sock = sock
        self.tls = tls
        self._in = incoming
        self._out_bio = outgoing
        self._out = bytearray()
        self.produced = 0  # wire bytes generated so far
        self.sent = 0  # wire bytes handed to the kernel
        self.description = ""

    def fileno(self) -> int:
        return self.sock.fileno()

    def write(self, data: bytes) -> int:
        """Queue application bytes; returns the wire offset just after them."""
        if self.tls is not None:
            self.tls.write(data)
            self._take_tls_output()
        else:
            self._out += data
            self.produced += len(data)
        return self.produced

    def _take_tls_output(self) -> None:
        pending = self._out_bio.read()
        if pending:
            self._out += pending
            self.produced += len(pending)

    @property
    def pending(self) -> int:
        return len(self._out)

    def flush(self) -> None:
        """Send what the kernel takes without blocking; DeliveryError if the stream broke."""
        while self._out:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise DeliveryError(_os_reason(exc)) from None
            del self._out[:n]
            self.sent += n

    def acked(self) -> int:
        """Wire bytes the peer's TCP stack has acknowledged."""
        try:
            buf = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # == SIOCOUTQ
            unacked = struct.unpack("i", buf)[0]
        except OSError:
            return 0
        return self.sent - unacked

    def pump(self) -> None:
        """Read whatever the collector sent; DeliveryError if it closed or sent an alert.

        A syslog collector never sends application data; what arrives is TLS
        housekeeping (session tickets), an alert, or the end of the stream.
        """
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise DeliveryError(_os_reason(exc)) from None
            if not data:
                if self.tls is not None:
                    self._in.write_eof()
                    self._drain_tls()
                raise DeliveryError("the collector closed the connection")
            if self.tls is not None:
                self._in.write(data)
                self._drain_tls()

    def _drain_tls(self) -> None:
        while True:
            try:
                if not self.tls.read(65536):
                    raise DeliveryError("the collector closed the TLS session")
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                raise DeliveryError("the collector closed the TLS session (close_notify)") from None
            except ssl.SSLError as exc:
                raise DeliveryError(f"TLS error from the collector: {_ssl_reason(exc)}") from None
        self._take_tls_output()

    def close_orderly(self, deadline: float) -> bool:
        """Send our end of stream and wait for the collector's; True if it closed cleanly.

        A collector closes its side only after it has read our end of stream,
        i.e. every byte before it; a clean EOF therefore confirms delivery of
        everything sent on this connection.
        """
        try:
            if self.tls is not None:
                try:
                    self.tls.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLError):
                    pass
                self._take_tls_output()
            while self._out:
                self.flush()
                if self._out and not _wait(self.sock, write=True, deadline=deadline):
                    return False
            self.sock.shutdown(socket.SHUT_WR)
            while True:
                if not _wait(self.sock, read=True, deadline=deadline):
                    return False
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return False  # RST: it closed with our data unread
                if not data:
                    return True
        except (OSError, DeliveryError):
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _wait(sock, *, read=False, write=False, deadline: float) -> bool:
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    r, w, _ = select.select([sock] if read else [], [sock] if write else [], [], left)
    return bool(r or w)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused (is the collector listening?)"
    if exc.errno == errno.ECONNRESET:
        return "connection reset by the collector"
    if exc.errno == errno.EPIPE:
        return "the collector closed the connection"
    if exc.errno in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return exc.strerror.lower() if exc.strerror else str(exc)
    return exc.strerror or str(exc)


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    return (reason or str(exc)).replace("_", " ").lower() if reason else str(exc)


def build_tls_context(ca_file: str, cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """Client context per RFC 5425: verify the collector's chain and name, TLS 1.2+."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise SchemaError("ca_file", f"cannot load CA certificates from {ca_file}: {_load_reason(exc)}") from None
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file or None)
        except (ssl.SSLError, OSError) as exc:
            raise SchemaError(
                "cert_file", f"cannot load client certificate {cert_file} with key {key_file}: {_load_reason(exc)}"
            ) from None
    return ctx


def _load_reason(exc) -> str:
    if isinstance(exc, ssl.SSLError):
        return _ssl_reason(exc) or "not a PEM certificate"
    return exc.strerror or str(exc)


def open_connection(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    server_name: str,
    timeout: float,
    stop: threading.Event | None = None,
) -> Connection:
    """Connect (and handshake) without blocking longer than `timeout`; DeliveryError on failure."""
    deadline = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc.strerror}") from None
    last = "no address"
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto)
        sock.setblocking(False)
        try:
            try:
                sock.connect(addr)
            except BlockingIOError:
                pass
            while True:
                if stop is not None and stop.is_set():
                    raise DeliveryError("stopping")
                left = min(deadline - time.monotonic(), 0.1)
                if deadline - time.monotonic() <= 0:
                    raise DeliveryError(f"connect timed out after {timeout:g}s")
                _, w, _ = select.select([], [sock], [], max(left, 0))
                if w:
                    break
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise DeliveryError(_os_reason(OSError(err, os.strerror(err))))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn = _handshake(sock, ctx, server_name, deadline, stop) if ctx else Connection(sock, None, None, None)
            conn.description = _describe(conn)
            return conn
        except DeliveryError as exc:
            sock.close()
            last = str(exc)
    raise DeliveryError(last)


def _handshake(sock, ctx, server_name, deadline, stop) -> Connection:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name)
    conn = Connection(sock, tls, incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
            conn._take_tls_output()
            return conn
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(_verify_reason(exc, server_name)) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS handshake failed: {_ssl_reason(exc)}") from None
        conn._take_tls_output()
        while conn.pending:
            conn.flush()
            if conn.pending and not _wait(sock, write=True, deadline=deadline):
                raise DeliveryError("TLS handshake timed out")
        while True:
            if stop is not None and stop.is_set():
                raise DeliveryError("stopping")
            if deadline - time.monotonic() <= 0:
                raise DeliveryError("TLS handshake timed out")
            r, _, _ = select.select([sock], [], [], min(0.1, max(deadline - time.monotonic(), 0)))
            if r:
                break
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            raise DeliveryError(f"TLS handshake failed: {_os_reason(exc)}") from None
        if not data:
            raise DeliveryError(
                "the collector closed the connection during the TLS handshake "
                "(does it require a client certificate, or speak plain TCP?)"
            )
        incoming.write(data)


def _verify_reason(exc: ssl.SSLCertVerificationError, server_name: str) -> str:
    msg = exc.verify_message or _ssl_reason(exc)
    code = exc.verify_code
    if code in (20, 21, 2):  # unable to get (local) issuer certificate
        why = "the collector's certificate is not signed by a CA in ca_file"
    elif code == 19 or code == 18:  # self-signed
        why = "the collector presents a self-signed certificate that is not in ca_file"
    elif code == 62:  # hostname mismatch
        why = f"the collector's certificate is not valid for {server_name!r} (set server_name to the name it carries)"
    elif code == 10:
        why = "the collector's certificate has expired"
    elif code == 9:
        why = "the collector's certificate is not valid yet (check the clock)"
    else:
        why = "the collector's certificate was refused"
    return f"TLS certificate verification failed ({msg}): {why}"


def _describe(conn: Connection) -> str:
    if conn.tls is None:
        return "plain TCP"
    version = conn.tls.version() or "TLS"
    return f"{version}, certificate verified"


# -- the sink -----------------------------------------------------------------------------
class SyslogSink(Sink):
    TYPE = "syslog"
    CONFIG_SCHEMA = {**syslog_config.SCHEMA, **EXTRA_SCHEMA}

    # How much the sender reads ahead of the collector's acknowledgements:
    # enough to fill a fast loopback/LAN pipe, small enough that a reconnect
    # resends little beyond the resend window.
    READ_AHEAD_BYTES = 1 << 20
    MAX_UNCONFIRMED = 2_000_000
    # a collector that has not kept up for this long: spooled data is fsynced
    BEHIND_DURABLE_AFTER = 2.0
    REMIND_EVERY = 300.0  # repeat an unchanged failure reason this often
    # A collector whose TCP stack acknowledges nothing for this long while we
    # have data outstanding is hung (it neither reads nor closes): reconnect,
    # which may also reach another collector behind the same name.
    STALL_TIMEOUT = 60.0

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.name = cfg.get("name") or self.TYPE
        self.address = cfg["address"]
        self.host, self.port = parse_address(cfg["address"])
        self.server_name = cfg.get("server_name") or self.host
        self.facility = syslog_config.FACILITIES[cfg["facility"]]
        self.app_name = cfg["app_name"]
        self.capacity = cfg.get("buffer_events", 20000)
        self.resend_window = cfg["resend_window"]
        self.connect_timeout = cfg["connect_timeout"]
        self.spool = Spool(cfg["spool_dir"], cfg["spool_max_bytes"], fsync_interval=cfg["spool_fsync_interval"],
                           memory_bytes=cfg["spool_memory_bytes"])
        self.backoff = Backoff(cfg["reconnect_min"], cfg["reconnect_max"])
        self._ctx: ssl.SSLContext | None = None
        self._queue: deque = deque()
        self._accepting = False
        self._wake_fd = -1
        self._signalled = False
        self._stop = threading.Event()
        self._close_deadline = 0.0
        self._reopen = False
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        # Batches of records written to the connection and not yet committed,
        # in order: _unacked holds (spool position after the batch, records,
        # wire offset after the batch) until the collector's TCP stack has
        # acknowledged all of it; _acked holds (position, records, time
        # acknowledged) until resend_window has passed.
        self._unacked: deque = deque()
        self._acked: deque = deque()
        self._unconfirmed = 0  # records in both
        self._connected_at = 0.0
        self._last_acked = -1
        self._last_ack_progress = 0.0
        self._spool_open = False
        self._behind_since: float | None = None
        self._backlog_at_connect = 0
        self._announced = False
        self._submitted = 0  # events accepted by submit()
        self._idle_upto = 0  # everything submitted up to this count is sent and acknowledged
        self._next_attempt = 0.0
        self._last_reason: str | None = None
        self._last_reason_time = 0.0
        self._hostname = socket.gethostname()
        self._disk_said_at = float("-inf")
        self._holding = False
        self._disk_lost_unsaid = 0
        self._pid = os.getpid()
        # counters
        self.dropped = 0  # buffer full / not accepting
        self.abandoned = 0  # still in memory when close() had to give up
        self.delivered = 0  # committed (confirmed) records
        self.sent = 0  # records written to a connection (resends included)
        self.resent = 0  # records sent more than once because a connection broke
        self.connects = 0
        self.delivery_failures = 0  # connects that failed and connections that broke (refused, TLS, reset)
        self.last_error: str | None = None
        self.last_error_time: float | None = None

    # -- configuration ---------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: dict) -> "SyslogSink":
        return cls(cfg)

    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        syslog_config.validate(cfg)
        if cfg["tls"]:
            # a CA file that exists but is not PEM fails `config check`, not the daemon
            build_tls_context(cfg["ca_file"], cfg["cert_file"], cfg["key_file"])

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg["tls"]:
            self._ctx = build_tls_context(self.cfg["ca_file"], self.cfg["cert_file"], self.cfg["key_file"])
        try:
            self._open_spool()
        except SpoolBusy as exc:
            if exc.holder_pid != os.getpid():
                raise SchemaError("spool_dir", exc.strerror or str(exc)) from None
            # A configuration reload replacing this sink: its predecessor in
            # this process still owns the spool and is closed right after we
            # start. Accept events now (in memory) and open the spool on the
            # delivery thread once it is free, so the predecessor's leftovers
            # stay ahead of our events.
            self._spool_open = False
        except SpoolError as exc:
            raise SchemaError("spool_dir", exc.strerror or str(exc)) from None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._accepting = True
        # The watchdog restarts the loop when it raises (a bug, a disk error
        # the spool could not absorb): delivery resumes from the spool, whose
        # unconfirmed records are sent again.
        self._thread = WATCHDOG.start(f"sink-{self.name}", self._deliver, self._stop,
                                      on_failure=self._after_failure, after=self._finish_if_stopped)

    def _open_spool(self) -> None:
        self.spool.open()
        self._spool_open = True
        if self.spool.recovered:
            self._note(f"{self.spool.recovered} events left in the spool by a previous run will be sent first")
        if self.spool.corrupt:
            self._note(f"cut {self.spool.corrupt} torn record(s) from the spool (an earlier run was killed mid-write)")

    def _await_spool(self) -> bool:
        """On the delivery thread: wait for a predecessor to release the spool."""
        started = time.monotonic()
        warned = False
        while True:
            try:
                self._open_spool()
                return True
            except SpoolError as exc:
                if not warned and time.monotonic() - started > 30:
                    warned = True
                    self._note(f"still waiting for the spool: {exc.strerror} (do two [[sinks]] tables "
                               f"name the same spool_dir?); holding up to {self.capacity} events in memory",
                               level=3)
            if self._stop.wait(0.05):
                return False

    def submit(self, line: bytes, event: dict) -> bool:
        if not self._accepting or len(self._queue) >= self.capacity:
            self.dropped += 1
            return False
        self._queue.append((line, event))
        self._submitted += 1
        if not self._signalled:
            self._signalled = True
            self._poke()
        return True

    def _poke(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def flush(self, timeout: float) -> bool:
        """True once everything accepted so far is spooled, sent and TCP-acknowledged."""
        deadline = time.monotonic() + timeout
        target = self._submitted
        while True:
            if self._idle_upto >= target:
                return True
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._poke()
            time.sleep(0.01)

    def close(self, timeout: float) -> None:
        self._accepting = False
        if self._thread is None:
            return
        self._close_deadline = time.monotonic() + timeout
        self._stop.set()
        self._poke()
        self._thread.join(timeout + 1.0)
        # Whatever is still in memory now never reaches the spool: the thread
        # is stuck (it still owns the spool) or gone. Count it, one by one,
        # so an item the thread takes meanwhile is not also counted.
        while True:
            try:
                self._queue.popleft()
            except IndexError:
                break
            self.abandoned += 1
        if self._thread.is_alive():
            return
        if self._wake_fd >= 0:
            os.close(self._wake_fd)
            self._wake_fd = -1

    def reopen(self) -> None:
        """SIGHUP: reload certificates and reconnect (an orderly close confirms what was sent)."""
        self._reopen = True
        self._poke()

    def losses(self) -> dict[str, int]:
        return {"sink": self.dropped + self.abandoned, "spool": self.spool.losses()}

    def status(self) -> dict:
        out = {
            "name": self.name,
            "type": self.TYPE,
            "address": self.address,
            "connected": self._conn is not None,
            "buffered": len(self._queue),
            "spooled": self.spool.backlog + self.spool.held,
            "spool_held": self.spool.held,
            "delivered": self.delivered,
            "resent": self.resent,
            "delivery_failures": self.delivery_failures,
            "lost": self.losses(),
            "lost_causes": {"spool": self.spool.loss_causes()},
            "healthy": self._conn is not None,
        }
        if self.spool.last_disk_error:
            out["spool_disk_error"] = self.spool.last_disk_error
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- diagnostics ----------------------------------------------------------------------
    def _note(self, message: str, level: int = 5) -> None:
        # the agent's stderr diagnostics (journal priority prefix under systemd)
        from netagent.log import log

        log(f"syslog sink {self.name!r} ({self.address}): {message}", level)

    def _failed(self, reason: str, hint: str = "") -> None:
        """Say why delivery fails: once per distinct reason (hints aside), then every REMIND_EVERY."""
        self.delivery_failures += 1
        self.last_error = reason + hint
        self.last_error_time = time.time()
        now = time.monotonic()
        if reason != self._last_reason or now - self._last_reason_time >= self.REMIND_EVERY:
            self._announced = False
            self._last_reason = reason
            self._last_reason_time = now
            self._note(
                f"cannot deliver: {reason}{hint}; spooling to {self.cfg['spool_dir']} "
                f"({self.spool.backlog} events waiting), retrying with backoff up to "
                f"{self.cfg['reconnect_max']:g}s",
                level=4,
            )

    def _disk_trouble(self, lost: int) -> None:
        """Events the spool could not store: counted there; said once a minute at most."""
        self._disk_lost_unsaid += lost
        now = time.monotonic()
        if now - self._disk_said_at < 60.0:
            return
        self._disk_said_at = now
        causes = ", ".join(f"{c} {n}" for c, n in sorted(self.spool.error_causes.items()))
        self._note(f"spool {self.cfg['spool_dir']}: cannot write ({self.spool.last_disk_error}); "
                   f"{self._disk_lost_unsaid} events lost (counted at 'spool'; by cause so far: {causes}); "
                   "spooling resumes by itself when the disk takes writes again", level=3)
        self._disk_lost_unsaid = 0

    # -- delivery thread --------------------------------------------------------------------
    def _finish_if_stopped(self) -> None:
        if self._stop.is_set() and self._spool_open:
            try:
                self._finish()
            except Exception as exc:
                self._note(f"could not finish cleanly: {type(exc).__name__}: {exc}", level=3)
                self.spool.close()

    def _deliver(self) -> None:
        if not self._spool_open and not self._await_spool():
            # closed before the predecessor let go: nothing to keep them in
            self.abandoned += len(self._queue)
            self._queue.clear()
            return
        while not self._stop.is_set():
            self._step()

    def _after_failure(self, exc: BaseException) -> None:
        self.last_error = f"internal: {type(exc).__name__}: {exc}"
        self.last_error_time = time.time()
        self._drop_connection(None)  # resend whatever was not confirmed
        self._next_attempt = 0.0

    def _step(self) -> None:
        submitted = self._submitted  # all of these are in the queue or beyond
        self._spool_queue()
        now = time.monotonic()
        if self._reopen:
            self._reopen = False
            self._reload()
        if self._conn is None and now >= self._next_attempt:
            self._connect()
        if self._conn is not None:
            try:
                self._conn.pump()
                self._send_ahead()
                self._conn.flush()
                self._confirm(time.monotonic())
            except DeliveryError as exc:
                self._drop_connection(str(exc))
        # fsync only while events really wait in the spool (see netagent.spool):
        # the collector is unreachable, or has been behind for a while
        if self._conn is not None and self.spool.unread():
            if self._behind_since is None:
                self._behind_since = time.monotonic()
        else:
            self._behind_since = None
        self.spool.durable = self._conn is None or (
            self._behind_since is not None and time.monotonic() - self._behind_since > self.BEHIND_DURABLE_AFTER
        )
        if (
            self._conn is not None
            and self._conn.pending == 0
            and not self._unacked
            and not self.spool.unread()
        ):
            self._idle_upto = submitted
        self._wait()

    def _spool_queue(self) -> None:
        """Move accepted events from memory into the spool, formatted, in order."""
        self._signalled = False
        try:
            os.eventfd_read(self._wake_fd)
        except (BlockingIOError, OSError):
            pass
        while self._queue:
            batch = []
            for _ in range(1024):
                try:
                    line, event = self._queue.popleft()
                except IndexError:
                    break
                batch.append(
                    format_message(line, event, facility=self.facility, app_name=self.app_name,
                                   hostname=self._hostname, procid=self._pid)
                )
            before = self.spool.dropped_error
            self.spool.append(batch)
            if self.spool.dropped_error != before:
                self._disk_trouble(self.spool.dropped_error - before)
        if self.spool.held:
            self.spool.retry()  # the disk may take them again (space freed by delivery or by someone)
        self._say_holding()

    def _say_holding(self) -> None:
        """Say when events start waiting in memory for the spool's disk, and when they are written."""
        held = self.spool.held
        if held and not self._holding:
            self._holding = True
            self._note(f"spool {self.cfg['spool_dir']}: cannot write ({self.spool.last_disk_error}); holding events "
                       f"in memory (up to {self.cfg['spool_memory_bytes'] // 2**20} MiB, beyond that they are "
                       "counted lost at 'spool') until the disk takes writes again", level=4)
        elif not held and self._holding:
            self._holding = False
            self._note(f"spool {self.cfg['spool_dir']}: the disk takes writes again; the events held in memory "
                       f"are spooled ({self.spool.held_peak} at most at once)", level=5)

    def _connect(self) -> None:
        try:
            conn = open_connection(self.host, self.port, self._ctx, self.server_name, self.connect_timeout, self._stop)
        except DeliveryError as exc:
            if not self._stop.is_set():
                self._schedule_retry()
                self._failed(str(exc))
            return
        self._conn = conn
        self.connects += 1
        self._connected_at = time.monotonic()
        self._last_acked, self._last_ack_progress = -1, self._connected_at
        self._backlog_at_connect = self.spool.backlog
        self.last_error = None

    def _announce_up(self) -> None:
        """Say "connected" once the connection has carried confirmed events.

        Announcing at the first commit rather than at connect keeps a
        flapping collector (accepts, then resets) from filling the log with
        connected/failed pairs: the failure line is repeated only when its
        reason changes.
        """
        if self._announced:
            return
        self._announced = True
        self._last_reason = None
        backlog = self._backlog_at_connect
        self._note(
            f"connected ({self._conn.description})"
            + (f"; sending {backlog} spooled events first, in order" if backlog else ""),
            level=6,
        )

    def _schedule_retry(self) -> None:
        self._next_attempt = time.monotonic() + self.backoff.next_delay()

    def _drop_connection(self, reason: str | None) -> None:
        """The stream broke: resend everything not confirmed, after a backoff."""
        hint = ""
        if self._conn is not None:
            if reason is not None and not self._announced and time.monotonic() - self._connected_at < 1.0:
                hint = self._early_close_hint()
            self._conn.close()
            self._conn = None
        self.resent += self._unconfirmed
        self._unconfirmed = 0
        self._unacked.clear()
        self._acked.clear()
        self.spool.rewind()
        if reason is not None:
            # a connection that carried traffic for a while earns a fresh backoff
            if time.monotonic() - self._connected_at > 10:
                self.backoff.reset()
            self._schedule_retry()
            self._failed(reason, hint)

    def _early_close_hint(self) -> str:
        # A collector that completes the handshake and then drops us at once
        # usually rejects what we are (rsyslog's AuthMode x509/name resets
        # the connection without a TLS alert), so say what to check.
        if not self.cfg["tls"]:
            return " right after connecting (does the collector expect TLS?)"
        if not self.cfg["cert_file"]:
            return (" right after the TLS handshake (does the collector require a client certificate? "
                    "set cert_file and key_file)")
        return " right after the TLS handshake (does the collector accept our client certificate's name and CA?)"

    def _send_ahead(self) -> None:
        conn = self._conn
        # The bound on unconfirmed records caps how much a reconnect resends
        # and the memory of the bookkeeping; it is far above what a
        # resend_window of traffic holds at any realistic rate.
        while conn.pending < self.READ_AHEAD_BYTES and self._unconfirmed < self.MAX_UNCONFIRMED:
            records = self.spool.read(max_records=512, max_bytes=256 * 1024)
            if not records:
                return
            # One TLS write per batch: a batch counts as acknowledged when its
            # last byte is, which is exact enough and far cheaper than per record.
            end = conn.write(b"".join([octet_frame(payload) for payload, _ in records]))
            self._unacked.append((records[-1][1], len(records), end))
            self._unconfirmed += len(records)
            self.sent += len(records)
            conn.flush()

    def _confirm(self, now: float) -> None:
        """Commit records acknowledged by TCP at least resend_window ago."""
        unacked, acked_q = self._unacked, self._acked
        if unacked:
            acked = self._conn.acked()
            if acked != self._last_acked:
                self._last_acked, self._last_ack_progress = acked, now
            elif now - self._last_ack_progress > self.STALL_TIMEOUT:
                raise DeliveryError(
                    f"the collector acknowledged nothing for {self.STALL_TIMEOUT:g}s (hung or overloaded)"
                )
            while unacked and unacked[0][2] <= acked:
                pos, records, _ = unacked.popleft()
                acked_q.append((pos, records, now))
        else:
            self._last_ack_progress = now  # nothing outstanding: nothing can stall
        last = None
        count = 0
        horizon = now - self.resend_window
        while acked_q and acked_q[0][2] <= horizon:
            last, records, _ = acked_q.popleft()
            count += records
        if last is not None:
            self.spool.commit(last, count)
            self._unconfirmed -= count
            self.delivered += count
            self._announce_up()

    def _commit_all(self) -> None:
        """The collector confirmed reading everything sent on this connection."""
        pending = list(self._acked) + list(self._unacked)
        if pending:
            self.spool.commit(pending[-1][0], self._unconfirmed)
            self.delivered += self._unconfirmed
        self._unconfirmed = 0
        self._acked.clear()
        self._unacked.clear()

    def _wait(self) -> None:
        now = time.monotonic()
        if self._conn is None:
            timeout = max(0.0, min(self._next_attempt - now, 1.0))
        elif self._unacked or self._acked:
            timeout = 0.05  # acknowledgements are polled (SIOCOUTQ), not signalled
        else:
            timeout = 1.0
        readers = [self._wake_fd]
        writers = []
        if self._conn is not None:
            readers.append(self._conn.fileno())
            if self._conn.pending:
                writers.append(self._conn.fileno())
        if self._stop.is_set():
            return
        try:
            select.select(readers, writers, [], timeout)
        except (OSError, ValueError):
            time.sleep(min(timeout, 0.05))

    def _reload(self) -> None:
        if self.cfg["tls"]:
            try:
                self._ctx = build_tls_context(self.cfg["ca_file"], self.cfg["cert_file"], self.cfg["key_file"])
            except SchemaError as exc:
                self._note(f"keeping the previous TLS settings: {exc}")
        if self._conn is not None:
            if self._conn.close_orderly(time.monotonic() + min(5.0, self.connect_timeout)):
                self._commit_all()
            self._drop_connection(None)
            self._next_attempt = 0.0

    def _finish(self) -> None:
        """close(): spool what is in memory, send what we can in time, close confirming delivery."""
        deadline = self._close_deadline
        self._spool_queue()
        try:
            while self._conn is not None and time.monotonic() < deadline:
                self.spool.retry()
                self._conn.pump()
                self._send_ahead()
                self._conn.flush()
                self._confirm(time.monotonic())
                if not self.spool.unread() and self._conn.pending == 0:
                    break
                _wait(self._conn.sock, write=True, deadline=min(deadline, time.monotonic() + 0.05))
            if self._conn is not None and not self.spool.unread():
                if self._conn.close_orderly(deadline):
                    self._commit_all()
        except DeliveryError:
            pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._unacked.clear()
        self._acked.clear()
        self._unconfirmed = 0
        self.spool.rewind()
        lost_before = self.spool.dropped_error
        self.spool.close()
        if self.spool.dropped_error > lost_before:
            self._note(f"spool {self.cfg['spool_dir']}: {self.spool.dropped_error - lost_before} events held in "
                       f"memory were lost at exit: the disk still refuses writes ({self.spool.last_disk_error}); "
                       "counted at 'spool'", level=3)
        waiting = self.spool.backlog
        if waiting:
            self._note(f"{waiting} events stay in the spool {self.cfg['spool_dir']} for the next start")
