"""From what the user typed (CLI flags or a [sensors.dns] table) to ProbeSettings.

Shared by `netagent probe dns` and the daemon sensor so both read the
namespace's resolv.conf, pick servers, mode and timeout the same way.
Every problem here is a UsageError (exit 2) with one line saying why.
"""

import ipaddress
import os
from dataclasses import dataclass

from netagent import netns as netns_mod
from netagent.dns import resolvconf
from netagent.dns.exchange import Server
from netagent.dns.probe import MODES, ProbeSettings, validate
from netagent.errors import UsageError
from netagent.privileges import require_caps

TYPES = {"A": ("A",), "AAAA": ("AAAA",), "both": ("A", "AAAA")}


def parse_server(spec: str, default_port: int = 53) -> Server:
    """'10.0.0.1', '10.0.0.1:5353', 'fd00::1', '[fd00::1]:53', 'fe80::1%eth0' -> Server."""
    text = spec.strip()
    port = default_port
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"--server {spec!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"--server {spec!r}: expected ':PORT' after ']'")
            port = _port(spec, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(spec, port_text)
    address, _, scope = host.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(
            f"--server {spec!r}: not an IP address (give the resolver's address, optionally with :PORT)"
        ) from None
    if scope and ip.version != 6:
        raise UsageError(f"--server {spec!r}: a %zone only applies to IPv6 addresses")
    return Server(str(ip), port, scope)


def _port(spec: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"--server {spec!r}: port must be 1-65535")
    return int(text)


@dataclass
class Prepared:
    settings: ProbeSettings
    netns: netns_mod.Netns
    notes: list[str]


def prepare(
    name: str,
    *,
    servers: list[str] | tuple = (),
    netns: str | None = None,
    resolv_conf: str | None = None,
    qtype: str | None = None,
    count: int = 1,
    interval: float = 1.0,
    timeout: float | None = None,
    mode: str | None = None,
    tcp: bool | None = None,
    all_candidates: bool = False,
) -> Prepared:
    notes: list[str] = []
    ns = netns_mod.resolve(netns)
    if ns.inode != netns_mod.current().inode:
        # setns(CLONE_NEWNET) needs CAP_SYS_ADMIN; nothing else here needs privileges
        require_caps(["CAP_SYS_ADMIN"], f"enter network namespace {ns.name}")
    if resolv_conf:
        if not os.path.isfile(resolv_conf):
            raise UsageError(f"--resolv-conf {resolv_conf!r}: no such file")
        path, hostname = resolv_conf, None
    else:
        path, hostname, note = resolvconf.path_for_netns(netns, ns.name)
        if note:
            notes.append(note)
    conf = resolvconf.load(path, hostname=hostname)
    notes.extend(conf.notes)

    if servers:
        targets = [parse_server(s) for s in servers]
    else:
        targets = [Server(n.address, 53, n.scope) for n in conf.nameservers]

    if qtype is None:
        qtype = "A" if "no-aaaa" in conf.options else "both"
    if qtype not in TYPES:
        raise UsageError(f"--type {qtype!r}: use A, AAAA or both")
    if mode is None:
        mode = "sequential" if "single-request" in conf.options else "parallel-same-socket"
    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if tcp is None:
        tcp = "use-vc" in conf.options
    if timeout is None:
        # glibc waits `timeout` seconds (at least 1) for the first try
        timeout = float(max(conf.timeout, 1))
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    if count < 1:
        raise UsageError("--count must be at least 1")
    if interval < 0:
        raise UsageError("--interval must not be negative")

    settings = ProbeSettings(
        name=name,
        servers=targets,
        conf=conf,
        types=TYPES[qtype],
        count=count,
        interval=interval,
        timeout=timeout,
        mode=mode,
        tcp=tcp,
        all_candidates=all_candidates,
        edns="edns0" in conf.options,
        ad="trust-ad" in conf.options,
    )
    problem = validate(settings)
    if problem:
        raise UsageError(problem)
    return Prepared(settings, ns, notes)


def unavailable_reason(result) -> str | None:
    """One line when no server gave a single valid answer, else None."""
    if any(res.answered for res in result.servers):
        return None
    parts = []
    for res in result.servers:
        statuses = {"timeouts": 0, "refused": 0, "unreachable": 0, "errors": 0}
        invalid = 0
        last_error = None
        for cand in res.candidates.values():
            for tally in cand.tallies.values():
                statuses["timeouts"] += tally.timeouts
                statuses["refused"] += tally.refused
                statuses["unreachable"] += tally.unreachable
                statuses["errors"] += tally.errors
                invalid += tally.invalid_total
                last_error = tally.last_error or last_error
        what = ", ".join(f"{n} {k}" for k, n in statuses.items() if n)
        if invalid:
            what += f", {invalid} invalid packets"
        if last_error and (statuses["unreachable"] or statuses["errors"] or statuses["refused"]):
            what += f" ({last_error})"
        parts.append(f"{res.server}: {res.queries} queries, {what}")
    return "no DNS server answered: " + "; ".join(parts)
