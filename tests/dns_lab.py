"""DNS labs for tests: a client and a server namespace, a real dnsmasq, helpers.

    lab = DnsLab(netns_factory, tmp_path)          client 10.53.0.1 <-veth-> server 10.53.0.2
    server = lab.dnsmasq({"www.lab.test": ["10.1.1.1"]})
    lab.resolv_conf("nameserver 10.53.0.2\\nsearch a.lab.test\\n")   # /etc/netns/<client>/resolv.conf
    ...
    server.queries(since=mark)  -> what dnsmasq logged (name, type, client port), in order
    lab.close()

Everything stays inside the two namespaces the lab creates. The only thing
written outside tmp_path is /etc/netns/<client>/ (what `ip netns exec` and
netagent read for a named namespace); close() removes it.
"""

import json
import os
import re
import select as _select
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from lab import Namespace, veth_pair

from netagent import netns as netns_mod

CLIENT_IP = "10.53.0.1"
SERVER_IP = "10.53.0.2"
SPARE_IP = "10.53.0.3"  # a second server-side address (proxies, wrong-source answers)
CLIENT_IP6 = "fd53::1"
SERVER_IP6 = "fd53::2"

_QUERY_LINE = re.compile(
    r"dnsmasq\[\d+\]: (?P<serial>\d+) (?P<client>[0-9a-fA-F.:]+)/(?P<port>\d+) "
    r"query\[(?P<type>[A-Za-z0-9]+)\] (?P<name>\S+) from (?P<src>\S+)"
)


@dataclass
class LoggedQuery:
    serial: int
    client: str
    port: int
    qtype: str
    name: str


class Dnsmasq:
    """dnsmasq in the foreground inside a namespace, logging every query to a file."""

    def __init__(self, ns: Namespace, workdir: str, hosts: dict[str, list[str]], listen: list[str],
                 local_domains=("lab.test",), port: int = 53, extra_args=()):
        self.ns = ns
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.hosts_path = os.path.join(workdir, "hosts")
        self.log_path = os.path.join(workdir, "dnsmasq.log")
        self.pid_path = os.path.join(workdir, "dnsmasq.pid")
        with open(self.hosts_path, "w") as f:
            for name, addrs in hosts.items():
                for addr in addrs:
                    f.write(f"{addr} {name}\n")
        open(self.log_path, "w").close()
        args = [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--addn-hosts={self.hosts_path}", "--log-queries=extra", f"--log-facility={self.log_path}",
            f"--pid-file={self.pid_path}", f"--dhcp-leasefile={os.path.join(workdir, 'leases')}",
            "--bind-interfaces", f"--port={port}", "--user=root", "--group=root",
            # answer, never forward: there is no upstream inside a test namespace
            *(f"--local=/{d}/" for d in local_domains),
            *(f"--listen-address={a}" for a in listen),
            *extra_args,
        ]
        self.stderr_path = os.path.join(workdir, "dnsmasq.stderr")
        self._stderr = open(self.stderr_path, "w")
        self.proc = ns.popen(*args, stdout=subprocess.DEVNULL, stderr=self._stderr)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {open(self.stderr_path).read()[-2000:]}")
            # the hosts file is read after the sockets are bound
            with open(self.log_path) as f:
                if f"read {self.hosts_path}" in f.read():
                    return
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not start within 10 s")

    def mark(self) -> int:
        return os.path.getsize(self.log_path)

    def queries(self, since: int = 0) -> list[LoggedQuery]:
        with open(self.log_path) as f:
            f.seek(since)
            text = f.read()
        out = []
        for m in _QUERY_LINE.finditer(text):
            out.append(LoggedQuery(int(m["serial"]), m["client"], int(m["port"]), m["type"], m["name"]))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()


class DnsLab:
    """client <-> server namespaces over one veth; removes everything it made."""

    def __init__(self, netns_factory, tmp_path, ipv6: bool = False):
        self.tmp = str(tmp_path)
        self.client = netns_factory()
        self.server = netns_factory()
        veth_pair(self.client, self.server, f"{CLIENT_IP}/24", f"{SERVER_IP}/24",
                  a_addr6=f"{CLIENT_IP6}/64" if ipv6 else None, b_addr6=f"{SERVER_IP6}/64" if ipv6 else None)
        self.server.run("ip", "addr", "add", f"{SPARE_IP}/24", "dev", "eth0")
        self.servers: list[Dnsmasq] = []
        self.threads = []
        self.etc_dir = f"/etc/netns/{self.client.name}"

    def dnsmasq(self, hosts: dict[str, list[str]], listen=(SERVER_IP,), **kwargs) -> Dnsmasq:
        server = Dnsmasq(self.server, os.path.join(self.tmp, f"dnsmasq{len(self.servers)}"), hosts,
                         list(listen), **kwargs)
        self.servers.append(server)
        return server

    def resolv_conf(self, text: str) -> str:
        os.makedirs(self.etc_dir, exist_ok=True)
        path = os.path.join(self.etc_dir, "resolv.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def server_socket(self, family=socket.AF_INET, kind=socket.SOCK_DGRAM, bind=None):
        """A socket living in the server namespace (sockets keep the namespace they were made in)."""
        ns = netns_mod.resolve(self.server.name)

        def make():
            s = socket.socket(family, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind is not None:
                s.bind(bind)
            return s

        return netns_mod.run_in(ns, make)

    def iptables(self, *args) -> str:
        return self.server.run("iptables", "-w", *args).stdout

    def close(self) -> None:
        for t in self.threads:
            t.stop()
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.etc_dir, ignore_errors=True)


def run_netagent(netagent_bin: str, *args, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([netagent_bin, *args], capture_output=True, text=True, timeout=timeout, env=env)


def json_events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON object: parse each, fail on anything else."""
    events = []
    for line in stdout.splitlines():
        events.append(json.loads(line))
    return events


def dig(ns: Namespace, *args) -> str:
    return ns.run("dig", "+tries=1", "+time=2", *args, check=False).stdout


def dig_query_time_ms(output: str) -> int | None:
    m = re.search(r";; Query time: (\d+) msec", output)
    return int(m.group(1)) if m else None


def dig_answers(output: str, qtype: str = "A") -> list[str]:
    """Addresses in dig's ANSWER SECTION."""
    out = []
    section = False
    for line in output.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            section = True
            continue
        if section:
            if not line.strip() or line.startswith(";;"):
                break
            parts = line.split()
            if len(parts) >= 5 and parts[3] == qtype:
                out.append(parts[4])
    return out


def by_question(events: list[dict]) -> dict[tuple[str, str], dict]:
    return {(e["dns"]["question"]["name"], e["dns"]["question"]["type"]): e for e in events}




# --- hand-built packets and a hostile responder --------------------------------
# Built byte by byte (not with dnspython) so they can be as broken as we like.


def encode_name(name: str | bytes) -> bytes:
    raw = name.encode("latin-1") if isinstance(name, str) else name
    raw = raw.rstrip(b".")
    out = b""
    for label in raw.split(b".") if raw else []:
        out += bytes([len(label)]) + label
    return out + b"\x00"


def split_query(query: bytes) -> tuple[int, bytes, int]:
    """(id, question section bytes, qtype) of a well-formed query."""
    (qid,) = struct.unpack_from("!H", query)
    pos = 12
    while query[pos] != 0:
        pos += 1 + query[pos]
    end = pos + 1 + 4
    (qtype,) = struct.unpack_from("!H", query, pos + 1)
    return qid, query[12:end], qtype


def header(qid: int, flags: int = 0x8180, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 30, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def answer(query: bytes, addresses: list[str], flags: int = 0x8180, qid: int | None = None) -> bytes:
    """A correct answer to `query` with A/AAAA records (owner: pointer to the question)."""
    query_id, question, qtype = split_query(query)
    records = b""
    count = 0
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if (qtype == 28) != (family == socket.AF_INET6):
            continue
        records += rr(b"\xc0\x0c", qtype, socket.inet_pton(family, addr))
        count += 1
    return header(query_id if qid is None else qid, flags, 1, count) + question + records


def hostile_variants(query: bytes) -> list[tuple[str, bytes]]:
    """(expected invalid reason, packet) for answers a resolver must reject."""
    qid, question, qtype = split_query(query)
    good = answer(query, ["10.66.66.66", "fd66::66"])
    evil_target = encode_name(b"\x1b[2J\x1b]0;pwned\x07.evil\x00x.example")
    mismatch_q = encode_name(b"\x1b[31mred\x7f.example") + struct.pack("!HH", qtype, 1)
    return [
        ("wrong_id", answer(query, ["10.66.66.66", "fd66::66"], qid=qid ^ 0x5A5A)),
        ("short_header", good[:7]),
        ("truncated_packet", good[:-2] if len(good) > len(question) + 14 else good[:len(good) - 3]),
        # question name is a pointer to itself: a compression loop
        ("bad_compression_pointer", header(qid) + b"\xc0\x0c" + struct.pack("!HH", qtype, 1)),
        # answer owner of 5 x 63-octet labels: over 255 octets
        ("name_too_long", header(qid, an=1) + question
         + rr(b"".join(bytes([63]) + b"a" * 63 for _ in range(5)) + b"\x00", qtype, b"\x00" * (16 if qtype == 28 else 4))),
        ("bad_label_type", header(qid, an=1) + question + rr(b"\x41abc\x00", qtype, b"\x00" * (16 if qtype == 28 else 4))),
        ("control_characters_in_name", header(qid, an=1) + question + rr(b"\xc0\x0c", 5, evil_target)),
        ("question_mismatch", header(qid) + mismatch_q),
        ("not_a_response", header(qid, flags=0x0100) + question),
        ("wrong_opcode", header(qid, flags=0x8180 | (5 << 11)) + question),
        ("trailing_junk", good + b"JUNK\x00\x1b"),
    ]


class HostileResponder:
    """Answers each query with every hostile variant, from the right and wrong sources.

    main:       the socket queries arrive on (the server address, port 53)
    other_port: same address, another port     -> wrong_source
    other_addr: another address, port 53       -> wrong_source
    genuine:    also send the correct answer last (else only garbage: the query times out)
    """

    def __init__(self, main, other_port, other_addr, genuine: bool = True, answer_addresses=None):
        self.main, self.other_port, self.other_addr = main, other_port, other_addr
        self.genuine = genuine
        self.addresses = answer_addresses or ["10.9.9.9", "fd09::9"]
        self.queries = 0
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def expected_invalid_per_query(self) -> int:
        return len(hostile_variants(self._sample_query())) + 2

    @staticmethod
    def _sample_query() -> bytes:
        return header(1, 0x0100) + encode_name("x.example") + struct.pack("!HH", 1, 1)

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = _select.select([self.main], [], [], 0.05)
            if not ready:
                continue
            try:
                query, client = self.main.recvfrom(65535)
                self.queries += 1
                good = answer(query, self.addresses)
                self.other_port.sendto(good, client)
                self.other_addr.sendto(good, client)
                for _reason, packet in hostile_variants(query):
                    self.main.sendto(packet, client)
                    self.sent += 1
                if self.genuine:
                    self.main.sendto(good, client)
            except OSError as exc:
                if not self._stop.is_set():
                    self.errors.append(str(exc))
            except Exception as exc:  # a malformed query: note it, keep serving
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        for s in (self.main, self.other_port, self.other_addr):
            s.close()


class DelayProxy:
    """Forwards queries to a real server after a fixed delay: a slow path to measure.

    Listens on `listen_sock`, forwards to `upstream` from `upstream_sock`, and
    returns each answer to the client as soon as it comes back.
    """

    def __init__(self, listen_sock, upstream_sock, upstream: tuple, delay: float):
        self.listen, self.up, self.upstream, self.delay = listen_sock, upstream_sock, upstream, delay
        self.clients: dict[int, tuple] = {}
        self._pending: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic()
            while self._pending and self._pending[0][0] <= now:
                _, data = self._pending.pop(0)
                self.up.sendto(data, self.upstream)
            timeout = 0.05 if not self._pending else max(0.0, self._pending[0][0] - now)
            ready, _, _ = _select.select([self.listen, self.up], [], [], timeout)
            for s in ready:
                data, addr = s.recvfrom(65535)
                if len(data) < 2:
                    continue
                (qid,) = struct.unpack_from("!H", data)
                if s is self.listen:
                    self.clients[qid] = addr
                    self._pending.append((time.monotonic() + self.delay, data))
                elif qid in self.clients:
                    self.listen.sendto(data, self.clients.pop(qid))

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.listen.close()
        self.up.close()
