"""Sending queries and collecting their answers: sockets, deadlines, TC -> TCP.

One `Exchange` is one query until it is answered, times out or fails. A
`UdpChannel` is one UDP socket (one source port) carrying one or more
exchanges to one server; a `TcpChannel` is one TCP connection. `Engine`
waits on all of them with a selector until every exchange is finished.

UDP sockets are deliberately *not* connected: a connected socket makes the
kernel drop datagrams from any other address or port silently, and we
want to see and count those (a spoofer, or a server answering from the
wrong address). IP_RECVERR makes ICMP errors (port unreachable) reach the
unconnected socket all the same.
"""

import collections
import errno
import ipaddress
import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

from netagent.dns import wire

IP_RECVERR = 11  # linux/in.h
IPV6_RECVERR = 25  # linux/in6.h
RECV_BUFFER = 65535

_ICMP_ERRORS = {
    errno.ECONNREFUSED: "refused",  # ICMP port unreachable (UDP) or RST (TCP)
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.EACCES: "unreachable",  # ICMP administratively prohibited, or a local firewall
    errno.EPERM: "unreachable",
}


@dataclass(frozen=True)
class Server:
    ip: str
    port: int = 53
    scope: str = ""  # IPv6 zone

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.ip else socket.AF_INET

    def sockaddr(self):
        if self.family == socket.AF_INET:
            return (self.ip, self.port)
        scope_id = 0
        if self.scope:
            scope_id = int(self.scope) if self.scope.isdigit() else socket.if_nametoindex(self.scope)
        return (self.ip, self.port, 0, scope_id)

    def __str__(self):
        host = f"{self.ip}%{self.scope}" if self.scope else self.ip
        return f"[{host}]:{self.port}" if self.family == socket.AF_INET6 else f"{host}:{self.port}"


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


@dataclass
class Exchange:
    """One query and everything that happened to it."""

    query: wire.Query
    server: Server
    timeout: float
    transport: str = "udp"
    status: str = "pending"  # answer, timeout, refused, unreachable, error
    error: str | None = None
    source_port: int | None = None
    sent_ns: int = 0
    deadline_ns: int = 0
    latency_ns: int | None = None
    finished_ns: int | None = None
    response: wire.Response | None = None
    truncated: bool = False  # a UDP answer came back with TC set
    tcp_retry: bool = False  # ... and we asked again over TCP, as resolvers do
    late_answers: int = 0  # genuine answers that arrived after the deadline
    invalid: collections.Counter = field(default_factory=collections.Counter)
    invalid_samples: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status != "pending"

    def finish(self, status: str, now_ns: int, error: str | None = None) -> None:
        if self.done:
            return
        self.status = status
        self.error = error
        self.finished_ns = now_ns
        if status == "answer":
            self.latency_ns = now_ns - self.sent_ns

    def count_invalid(self, reason: str, detail: str = "") -> None:
        self.invalid[reason] += 1
        if detail and len(self.invalid_samples) < 5:
            self.invalid_samples.append(f"{reason}: {detail}")


class UdpChannel:
    """One UDP socket: one source port shared by the exchanges sent on it."""

    def __init__(self, server: Server):
        self.server = server
        self.sock = socket.socket(server.family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        if server.family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        self.exchanges: list[Exchange] = []
        self.local_port: int | None = None
        self.stray = collections.Counter()  # invalid packets with no exchange to blame

    def wants_write(self) -> bool:
        return False

    def send(self, exchange: Exchange, now_ns: int) -> None:
        self.exchanges.append(exchange)
        exchange.sent_ns = now_ns
        exchange.deadline_ns = now_ns + int(exchange.timeout * 1e9)
        for attempt in (1, 2):
            earlier = [e for e in self.exchanges if not e.done and e is not exchange]
            try:
                self.sock.sendto(exchange.query.wire, self.server.sockaddr())
                break
            except OSError as exc:
                status = _ICMP_ERRORS.get(exc.errno, "error")
                if attempt == 1 and earlier and exc.errno in _ICMP_ERRORS:
                    # A pending socket error is reported by whatever call comes
                    # next, this send included: it is the ICMP answer to a
                    # datagram sent before on this socket, not to this one.
                    self._drain_error_queue()
                    for e in earlier:
                        e.finish(status, time.monotonic_ns(), exc.strerror or str(exc))
                    continue
                exchange.finish(status, time.monotonic_ns(), f"send: {exc.strerror or exc}")
                return
        if self.local_port is None:
            self.local_port = self.sock.getsockname()[1]
        exchange.source_port = self.local_port

    def _waiting(self) -> list[Exchange]:
        return [e for e in self.exchanges if not e.done]

    def _blame(self, query_id: int | None) -> Exchange | None:
        """The exchange an invalid packet is counted against.

        The one whose ID it carries if any (waiting or not), else the oldest
        one still waiting, else the last one sent on this socket.
        """
        if query_id is not None:
            for e in self.exchanges:
                if e.query.id == query_id:
                    return e
        waiting = self._waiting()
        if waiting:
            return waiting[0]
        return self.exchanges[-1] if self.exchanges else None

    def _invalid(self, reason: str, detail: str, query_id: int | None) -> None:
        target = self._blame(query_id)
        if target is None:
            self.stray[reason] += 1
        else:
            target.count_invalid(reason, detail)

    def on_ready(self, now_ns: int, engine: "Engine") -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(RECV_BUFFER)
            except BlockingIOError:
                return
            except OSError as exc:
                # an ICMP error reported through IP_RECVERR: it concerns what
                # we sent to this server, so every query still waiting here
                status = _ICMP_ERRORS.get(exc.errno, "error")
                self._drain_error_queue()
                for e in self._waiting():
                    e.finish(status, now_ns, exc.strerror or str(exc))
                continue
            self.dispatch(data, source, now_ns, engine)

    def _drain_error_queue(self) -> None:
        while True:
            try:
                self.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:
                return

    def dispatch(self, data: bytes, source, now_ns: int, engine: "Engine") -> None:
        query_id = wire.peek_id(data)
        if source[1] != self.server.port or not _same_address(source[0], self.server.ip):
            self._invalid(wire.WRONG_SOURCE, f"from {source[0]} port {source[1]}", query_id)
            return
        target = None
        if query_id is not None:
            for e in self.exchanges:
                if e.query.id == query_id:
                    target = e
                    break
        if target is None:
            self._invalid(wire.SHORT_HEADER if query_id is None or len(data) < 12 else wire.WRONG_ID,
                          f"{len(data)} bytes" if len(data) < 12 else f"id {query_id}", query_id)
            return
        try:
            response = wire.parse_response(data, target.query)
        except wire.InvalidResponse as bad:
            target.count_invalid(bad.reason, bad.detail)
            return
        if target.done or target.tcp_retry:
            if target.status == "timeout":
                target.late_answers += 1
            elif target.status == "answer" or target.tcp_retry:
                target.count_invalid(wire.DUPLICATE, f"id {query_id}")
            return
        if response.truncated:
            target.truncated = True
            engine.retry_over_tcp(target, now_ns)
            return
        target.response = response
        target.finish("answer", now_ns)

    def close(self) -> None:
        self.sock.close()


class TcpChannel:
    """One TCP connection to the server; queries on it are pipelined."""

    def __init__(self, server: Server):
        self.server = server
        self.sock = socket.socket(server.family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.exchanges: list[Exchange] = []
        self.outbuf = b""
        self.inbuf = b""
        self.connected = False
        self.failed = False
        self.local_port: int | None = None
        self.stray = collections.Counter()
        err = self.sock.connect_ex(server.sockaddr())
        if err not in (0, errno.EINPROGRESS):
            self.failed = True
            self.connect_error = err
        else:
            self.connect_error = 0

    def wants_write(self) -> bool:
        return not self.failed and (not self.connected or bool(self.outbuf))

    def send(self, exchange: Exchange, now_ns: int, *, keep_clock: bool = False) -> None:
        self.exchanges.append(exchange)
        exchange.transport = "tcp"
        if not keep_clock:
            exchange.sent_ns = now_ns
        exchange.deadline_ns = now_ns + int(exchange.timeout * 1e9)
        if self.failed:
            self._fail_all(now_ns, self.connect_error)
            return
        self.outbuf += wire.tcp_frame(exchange.query)

    def _fail_all(self, now_ns: int, err: int) -> None:
        self.failed = True
        status = _ICMP_ERRORS.get(err, "error") if err else "error"
        text = f"tcp: {os.strerror(err)}" if err else "tcp: connection closed by the server"
        for e in self.exchanges:
            e.finish(status, now_ns, text)

    def on_ready(self, now_ns: int, engine: "Engine") -> None:
        if self.failed:
            return
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail_all(now_ns, err)
                return
            try:
                self.local_port = self.sock.getsockname()[1]
            except OSError:
                pass
            self.connected = True
            for e in self.exchanges:
                e.source_port = self.local_port
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
                self.outbuf = self.outbuf[sent:]
            except BlockingIOError:
                pass
            except OSError as exc:
                self._fail_all(now_ns, exc.errno or 0)
                return
        while True:
            try:
                chunk = self.sock.recv(RECV_BUFFER)
            except BlockingIOError:
                break
            except OSError as exc:
                self._fail_all(now_ns, exc.errno or 0)
                return
            if not chunk:
                self._fail_all(now_ns, 0)
                return
            self.inbuf += chunk
        while len(self.inbuf) >= 2:
            (length,) = struct.unpack_from("!H", self.inbuf)
            if len(self.inbuf) < 2 + length:
                break
            data, self.inbuf = self.inbuf[2:2 + length], self.inbuf[2 + length:]
            self.dispatch(data, now_ns)

    def dispatch(self, data: bytes, now_ns: int) -> None:
        query_id = wire.peek_id(data)
        target = next((e for e in self.exchanges if e.query.id == query_id), None)
        if target is None:
            waiting = [e for e in self.exchanges if not e.done] or self.exchanges
            reason = wire.SHORT_HEADER if len(data) < 12 else wire.WRONG_ID
            if waiting:
                waiting[0].count_invalid(reason, f"id {query_id}")
            else:
                self.stray[reason] += 1
            return
        try:
            response = wire.parse_response(data, target.query)
        except wire.InvalidResponse as bad:
            target.count_invalid(bad.reason, bad.detail)
            return
        if target.done:
            if target.status == "timeout":
                target.late_answers += 1
            return
        target.response = response
        target.finish("answer", now_ns)

    def close(self) -> None:
        self.sock.close()


class Engine:
    """Waits on every channel until each exchange is answered, failed or out of time."""

    def __init__(self):
        self.channels: list = []
        self.exchanges: list[Exchange] = []

    def udp(self, server: Server) -> UdpChannel:
        channel = UdpChannel(server)
        self.channels.append(channel)
        return channel

    def tcp(self, server: Server) -> TcpChannel:
        channel = TcpChannel(server)
        self.channels.append(channel)
        return channel

    def send(self, channel, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        channel.send(exchange, time.monotonic_ns())

    def retry_over_tcp(self, exchange: Exchange, now_ns: int) -> None:
        """TC set: ask again over TCP; latency keeps counting from the UDP send."""
        exchange.tcp_retry = True
        self.tcp(exchange.server).send(exchange, now_ns, keep_clock=True)

    def wait(self) -> None:
        selector = selectors.DefaultSelector()
        registered: dict = {}
        try:
            while True:
                now = time.monotonic_ns()
                for e in self.exchanges:
                    if not e.done and now >= e.deadline_ns:
                        e.finish("timeout", now)
                pending = [e for e in self.exchanges if not e.done]
                if not pending:
                    return
                for channel in self.channels:
                    if getattr(channel, "failed", False):
                        if channel in registered:
                            selector.unregister(channel.sock)
                            del registered[channel]
                        continue
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if channel.wants_write() else 0)
                    if channel not in registered:
                        selector.register(channel.sock, events, channel)
                        registered[channel] = events
                    elif registered[channel] != events:
                        selector.modify(channel.sock, events, channel)
                        registered[channel] = events
                next_deadline = min(e.deadline_ns for e in pending)
                ready = selector.select(max(0.0, (next_deadline - now) / 1e9))
                now = time.monotonic_ns()
                for key, _mask in ready:
                    key.data.on_ready(now, self)
        finally:
            selector.close()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()

    def stray_invalid(self) -> collections.Counter:
        total = collections.Counter()
        for channel in self.channels:
            total.update(channel.stray)
        return total
