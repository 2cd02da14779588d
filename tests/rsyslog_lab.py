"""A real rsyslogd for tests: certificates, a private configuration, start/stop, received messages.

Every rsyslogd started here has its own configuration, pid file and work
directory under the test's tmp directory and listens on 127.0.0.1 only;
the system rsyslog (if any) is never touched. The first start lets the
kernel pick a free port (imtcp port="0" + listenPortFileName); restarts
reuse that port so the agent reconnects to the same address.
"""

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

RSYSLOGD = "/usr/sbin/rsyslogd"


def run(*args, cwd=None):
    """Run a short tool (openssl): wait for it to exit, not for its pipes to close.

    Output goes through temporary files. A fresh-clone run once timed out here
    after openssl had exited 0: communicate() was still waiting for EOF on the
    pipes, which some other process still held. No stdin either: nothing waits for input."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, timeout=60)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(args), stdout, stderr)
    return subprocess.CompletedProcess(list(args), proc.returncode, stdout, stderr)


@dataclass
class CertSet:
    ca: str  # CA certificate (PEM)
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_ca(directory: str, name: str = "ca", cn: str = "netagent test CA") -> tuple[str, str]:
    """A self-signed CA (EC P-256, valid 2 days): returns (cert, key) paths."""
    cert, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def issue_cert(directory: str, name: str, ca: tuple[str, str], cn: str, san: str, usage: str) -> tuple[str, str]:
    """A leaf certificate signed by `ca` with the given subjectAltName and extendedKeyUsage."""
    cert, key, csr = (os.path.join(directory, f"{name}.{ext}") for ext in ("pem", "key", "csr"))
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"basicConstraints=CA:FALSE\nsubjectAltName={san}\nextendedKeyUsage={usage}\n"
                "keyUsage=critical,digitalSignature,keyAgreement\n")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


def make_certs(directory: str) -> CertSet:
    """CA, server certificate for 127.0.0.1/localhost, client certificate client.netagent.test."""
    os.makedirs(directory, exist_ok=True)
    ca = make_ca(directory)
    server = issue_cert(directory, "server", ca, "127.0.0.1", "IP:127.0.0.1,DNS:localhost", "serverAuth")
    client = issue_cert(directory, "client", ca, "client.netagent.test", "DNS:client.netagent.test", "clientAuth")
    return CertSet(ca[0], ca[1], server[0], server[1], client[0], client[1])


class Rsyslog:
    """rsyslogd as a TLS (or plain TCP) syslog collector writing every message to a file.

    auth: "anon" (server-only TLS), "x509/name" (mutual TLS: the client must
    present a certificate from the CA whose name is in permitted_peers), or
    None for plain TCP.
    """

    def __init__(self, directory: str, certs: CertSet | None, auth: str | None = "anon",
                 permitted_peers: tuple[str, ...] = ("client.netagent.test",)):
        self.dir = directory
        self.certs = certs
        self.auth = auth
        self.permitted_peers = permitted_peers
        self.work = os.path.join(directory, "work")
        self.out = os.path.join(directory, "received.log")
        self.conf = os.path.join(directory, "rsyslog.conf")
        self.pidfile = os.path.join(directory, "rsyslogd.pid")
        self.portfile = os.path.join(directory, "port")
        self.log = os.path.join(directory, "rsyslogd.stderr")
        self.port = 0
        self.proc: subprocess.Popen | None = None
        os.makedirs(self.work, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [f'global(workDirectory="{self.work}" maxMessageSize="64k"']
        if self.auth:
            c = self.certs
            lines[0] += (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{c.ca}"'
                         f' DefaultNetstreamDriverCertFile="{c.server_cert}"'
                         f' DefaultNetstreamDriverKeyFile="{c.server_key}"')
        lines[0] += ")"
        if self.auth:
            peers = ""
            if self.auth == "x509/name":
                peers = " PermittedPeer=[" + ",".join(f'"{p}"' for p in self.permitted_peers) + "]"
            lines.append(f'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                         f'StreamDriver.AuthMode="{self.auth}"{peers})')
        else:
            lines.append('module(load="imtcp")')
        lines.append(f'input(type="imtcp" address="127.0.0.1" port="{self.port}" '
                     f'listenPortFileName="{self.portfile}")')
        # %rawmsg%: the message exactly as received, so tests check our RFC 5424 output
        lines.append('template(name="raw" type="string" string="%rawmsg%\\n")')
        lines.append(f'action(type="omfile" file="{self.out}" template="raw" flushOnTXEnd="on")')
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60.0) -> "Rsyslog":
        # returns as soon as rsyslogd listens; the bound is for a loaded machine
        # (a restart once took over 10 s while VM tests ran beside it)
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.conf, "w") as f:
            f.write(self._config())
        if os.path.exists(self.portfile):
            os.unlink(self.portfile)
        stderr = open(self.log, "ab")
        # -n: stay in the foreground (we own the process); -i: our own pid file
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                                     stdout=stderr, stderr=stderr, stdin=subprocess.DEVNULL)
        stderr.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {self.stderr_text()}")
            if self.port == 0:
                try:
                    with open(self.portfile) as f:
                        self.port = int(f.read().strip() or 0)
                except (FileNotFoundError, ValueError):
                    pass
            if self.port and _listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rsyslogd did not start listening within {timeout}s: {self.stderr_text()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def stderr_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    # -- what arrived ---------------------------------------------------------------------
    def raw_lines(self) -> list[str]:
        try:
            with open(self.out, errors="replace") as f:
                return [line for line in f.read().split("\n") if line]
        except FileNotFoundError:
            return []

    def events(self) -> list[dict]:
        """The JSON events carried in the received messages, in arrival order."""
        return [parse_message(line)[1] for line in self.raw_lines()]

    def wait_for(self, predicate, timeout: float = 20.0, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if predicate(events):
                return events
            if time.monotonic() >= deadline:
                return events
            time.sleep(interval)


_RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[[^\]]*\])+) (?P<msg>\{.*\})$"
)


def parse_message(line: str) -> tuple[dict, dict]:
    """(header fields, JSON event) of one RFC 5424 message carrying a JSON event."""
    m = _RFC5424.match(line)
    if not m:
        raise AssertionError(f"not an RFC 5424 message with a JSON MSG: {line[:200]!r}")
    return m.groupdict(), json.loads(m.group("msg"))


def _listening(port: int) -> bool:
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return True
    return False


def dedupe_sequences(events: list[dict], key=lambda e: e["event"]["sequence"]) -> tuple[list[int], int]:
    """Sequences in first-arrival order with repeats removed, and how many repeats there were.

    Delivery is at-least-once: after a reconnect the last events before the
    outage may arrive twice; a SIEM drops them by event.sequence.
    """
    seen = set()
    order = []
    repeats = 0
    for ev in events:
        k = key(ev)
        if k in seen:
            repeats += 1
            continue
        seen.add(k)
        order.append(k)
    return order, repeats


class OctetReceiver:
    """A minimal syslog-over-TCP/TLS collector in Python for unit tests and the benchmark.

    Parses RFC 6587 octet-counted frames strictly (a framing error fails the
    test through `errors`) and keeps every message. `stop()` drops the
    listener and every connection abruptly, like a crashed collector;
    `start()` again listens on the same port.
    """

    def __init__(self, ssl_context=None, keep=True):
        import threading

        self.ctx = ssl_context
        self.keep = keep
        self.port = 0
        self.messages: list[bytes] = []
        self.count = 0
        self.bytes = 0
        self.errors: list[str] = []
        self.handshake_errors: list[str] = []
        self.peer_certs: list[dict] = []
        self._lock = threading.Lock()
        self._listener = None
        self._conns: list = []
        self._threads: list = []
        self._running = False
        # set: connections stay open but nothing is read, like a collector
        # stuck on its output; the kernel still acknowledges what fits in the
        # receive buffer, and stop() then discards it (RST)
        self.paused = threading.Event()
        self._reading = 0  # serving loops between their pause check and the end of a read

    def pause(self, timeout: float = 10.0) -> None:
        """Stop reading; returns once no read is under way, so `count` stays as it is."""
        self.paused.set()
        deadline = time.monotonic() + timeout
        while self._reading and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not self._reading, f"a read still under way after {timeout}s"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "OctetReceiver":
        import socket
        import threading

        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self.port = srv.getsockname()[1]
        self._listener = srv
        self._running = True
        t = threading.Thread(target=self._accept_loop, args=(srv,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        import socket

        self._running = False
        self.paused.clear()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()
        for t in self._threads:
            t.join(5)
        self._threads.clear()

    def _accept_loop(self, srv) -> None:
        import threading

        while self._running:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn) -> None:
        import ssl

        if self.ctx is not None:
            try:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                conn.close()
                return
            cert = conn.getpeercert()
            if cert:
                self.peer_certs.append(cert)
        self._conns.append(conn)
        buf = bytearray()
        try:
            while True:
                if not self._running:
                    return
                with self._lock:
                    if self.paused.is_set():
                        reading = False
                    else:
                        self._reading += 1  # pause() waits for this read to end
                        reading = True
                if not reading:
                    time.sleep(0.01)
                    continue
                try:
                    # wait with a timeout so a pause takes effect before the next read
                    has_tls_data = hasattr(conn, "pending") and conn.pending()
                    if not has_tls_data and not select.select([conn], [], [], 0.05)[0]:
                        continue
                    try:
                        data = conn.recv(262144)
                    except (OSError, ValueError):
                        return
                    if not data:
                        return
                    buf += data
                    self._parse(buf)
                finally:
                    with self._lock:
                        self._reading -= 1
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _parse(self, buf: bytearray) -> None:
        pos = 0
        got = []
        while True:
            sp = buf.find(b" ", pos, pos + 12)
            if sp < 0:
                if len(buf) - pos > 11:
                    self.errors.append(f"no MSG-LEN at {bytes(buf[pos:pos + 20])!r}")
                break
            length_text = bytes(buf[pos:sp])
            if not length_text.isdigit() or length_text.startswith(b"0"):
                self.errors.append(f"bad MSG-LEN {length_text!r}")
                pos = len(buf)
                break
            end = sp + 1 + int(length_text)
            if end > len(buf):
                break
            got.append(bytes(buf[sp + 1:end]))
            pos = end
        del buf[:pos]
        with self._lock:
            self.count += len(got)
            self.bytes += sum(len(m) for m in got)
            if self.keep:
                self.messages.extend(got)

    def events(self) -> list[dict]:
        with self._lock:
            msgs = list(self.messages)
        return [parse_message(m.decode("ascii"))[1] for m in msgs]


def server_context(certs: CertSet, require_client_cert: bool = False):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    return ctx


def fill_filesystem(path) -> None:
    """Write zeros to `path` until its filesystem refuses (ENOSPC): nothing is left on it."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
