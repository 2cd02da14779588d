"""resolv.conf as glibc reads it (resolv/res_init.c, glibc 2.36), not as it looks.

The quirks kept on purpose, because the probe must predict what the
resolver of the namespace does, not what the file seems to say:

- a keyword counts only at the start of a line and only when followed by a
  space or tab; `;` or `#` starts a comment only in column one, so
  `search a b # c` searches "#" and "c" too, as glibc does;
- `domain` and `search` replace each other: the last one wins;
- no search list at all -> the domain part of the host name (after the
  first dot), if there is one;
- nameserver: IPv4 through inet_aton (so `10.1` is 10.0.0.1), else IPv6
  with an optional %scope; no usable nameserver -> 127.0.0.1; only the first
  three (MAXNS) are used;
- a NUL byte ends a line (C strings);
- options match by prefix (`edns0x` sets edns0), `ndots:` is capped at 15
  and stored in a 4-bit field, `timeout:` at 30, `attempts:` at 5.

The LOCALDOMAIN and RES_OPTIONS environment variables change the resolver
of the process that sets them, not the namespace, so they are not applied.
"""

import ipaddress
import os
import socket
from dataclasses import dataclass, field

MAXNS = 3  # glibc uses the first three nameservers
RES_MAXNDOTS = 15
RES_MAXRETRANS = 30
RES_MAXRETRY = 5
DEFAULT_TIMEOUT = 5  # RES_TIMEOUT
DEFAULT_ATTEMPTS = 2  # RES_DFLRETRY

# glibc's flag options, in the order res_setoptions tests them (prefix match,
# so "single-request-reopen" must come before "single-request").
_FLAG_OPTIONS = (
    ("inet6", "inet6"),
    ("rotate", "rotate"),
    ("edns0", "edns0"),
    ("single-request-reopen", "single-request-reopen"),
    ("single-request", "single-request"),
    ("no_tld_query", "no-tld-query"),
    ("no-tld-query", "no-tld-query"),
    ("no-reload", "no-reload"),
    ("use-vc", "use-vc"),
    ("trust-ad", "trust-ad"),
    ("no-aaaa", "no-aaaa"),
)


@dataclass
class Nameserver:
    address: str  # textual IP, no scope
    scope: str = ""  # IPv6 zone (interface name or number), "" if none

    def __str__(self):
        return f"{self.address}%{self.scope}" if self.scope else self.address


@dataclass
class ResolvConf:
    path: str | None
    nameservers: list[Nameserver] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    search_source: str = "none"  # "search", "domain", "hostname" or "none"
    ndots: int = 1
    timeout: int = DEFAULT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS
    options: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # what we defaulted or ignored, for the operator

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "nameservers": [str(n) for n in self.nameservers],
            "search": list(self.search),
            "search_source": self.search_source,
            "ndots": self.ndots,
            "timeout": self.timeout,
            "attempts": self.attempts,
            "options": sorted(self.options),
        }


def _keyword(line: str, name: str) -> str | None:
    """The rest of the line after `name` + blank, glibc's MATCH macro; else None."""
    if line.startswith(name) and len(line) > len(name) and line[len(name)] in " \t":
        return line[len(name):]
    return None


def _atoi(text: str) -> int:
    """C atoi: optional blanks and sign, then leading digits; 0 if none."""
    text = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _set_options(conf: ResolvConf, text: str) -> None:
    for token in text.replace("\t", " ").split(" "):
        if not token:
            continue
        if token.startswith("ndots:"):
            value = _atoi(token[6:])
            # stored in `unsigned ndots:4`: a negative value wraps
            conf.ndots = min(value, RES_MAXNDOTS) if value >= 0 else value & 0xF
        elif token.startswith("timeout:"):
            conf.timeout = min(_atoi(token[8:]), RES_MAXRETRANS)
        elif token.startswith("attempts:"):
            conf.attempts = min(_atoi(token[9:]), RES_MAXRETRY)
        else:
            for prefix, flag in _FLAG_OPTIONS:
                if token.startswith(prefix):
                    conf.options.add(flag)
                    break


def _parse_nameserver(rest: str) -> Nameserver | None:
    value = rest.strip(" \t")
    if not value or value[0] == "\n":
        return None
    try:
        # inet_aton accepts what glibc's does: shorthand forms, trailing blanks
        return Nameserver(socket.inet_ntoa(socket.inet_aton(value)))
    except (OSError, ValueError):
        pass
    token = value
    for sep in " \t\n":
        token = token.split(sep, 1)[0]
    address, _, scope = token.partition("%")
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    return Nameserver(str(ip), scope)


def parse(text: str, path: str | None = None, hostname: str | None = None) -> ResolvConf:
    """Parse resolv.conf text exactly as glibc's res_vinit_1 would."""
    conf = ResolvConf(path=path)
    servers: list[Nameserver] = []
    for raw in text.splitlines(keepends=True):
        # glibc handles each line as a C string: a NUL byte ends it
        line = raw.split("\x00", 1)[0]
        if line[:1] in (";", "#"):
            continue
        if (rest := _keyword(line, "domain")) is not None:
            rest = rest.lstrip(" \t")
            if not rest or rest[0] == "\n":
                continue
            domain = rest
            for sep in " \t\n":
                domain = domain.split(sep, 1)[0]
            conf.search = [domain]
            conf.search_source = "domain"
            continue
        if (rest := _keyword(line, "search")) is not None:
            rest = rest.lstrip(" \t")
            if not rest or rest[0] == "\n":
                continue
            rest = rest.split("\n", 1)[0]
            conf.search = [d for d in rest.replace("\t", " ").split(" ") if d]
            conf.search_source = "search"
            continue
        if (rest := _keyword(line, "nameserver")) is not None:
            server = _parse_nameserver(rest)
            if server is None:
                conf.notes.append(f"ignored unparsable nameserver line: {line.strip()!r}")
            else:
                servers.append(server)
            continue
        if (rest := _keyword(line, "options")) is not None:
            _set_options(conf, rest.rstrip("\n"))
            continue
    if not servers:
        servers = [Nameserver("127.0.0.1")]
        conf.notes.append("no usable nameserver line: glibc falls back to 127.0.0.1")
    if len(servers) > MAXNS:
        conf.notes.append(
            f"{len(servers)} nameservers listed: glibc uses only the first {MAXNS} "
            f"(ignored: {', '.join(str(s) for s in servers[MAXNS:])})"
        )
        servers = servers[:MAXNS]
    conf.nameservers = servers
    if not conf.search:
        if hostname is None:
            hostname = socket.gethostname()
        if "." in hostname:
            conf.search = [hostname.split(".", 1)[1]]
            conf.search_source = "hostname"
    return conf


def load(path: str, hostname: str | None = None) -> ResolvConf:
    """Read and parse a file; a missing file gives glibc's defaults, as it does."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        conf = parse("", path=None, hostname=hostname)
        conf.notes.insert(0, f"{path} does not exist: using glibc's defaults")
        return conf
    except (PermissionError, IsADirectoryError) as exc:
        conf = parse("", path=None, hostname=hostname)
        conf.notes.insert(0, f"cannot read {path} ({exc.strerror}): glibc ignores it and uses its defaults")
        return conf
    return parse(text, path=path, hostname=hostname)


def path_for_netns(ns_spec: str | None, ns_name: str | None = None) -> tuple[str, str | None, str | None]:
    """Which resolv.conf a process in that namespace reads, and the host name it sees.

    Returns (path, hostname, note). A named namespace gets
    /etc/netns/NAME/resolv.conf when present (what `ip netns exec` bind-mounts
    over /etc/resolv.conf); `pid:N` gets that process's own root file system
    (a pod's container sees the resolv.conf the kubelet wrote for it).
    """
    if not ns_spec:
        return "/etc/resolv.conf", None, None
    if ns_spec.startswith("pid:"):
        pid = ns_spec[4:]
        candidate = f"/proc/{pid}/root/etc/resolv.conf"
        hostname = None
        try:
            with open(f"/proc/{pid}/root/etc/hostname", encoding="utf-8", errors="replace") as f:
                hostname = f.read().strip() or None
        except OSError:
            pass
        if os.path.exists(candidate):
            return candidate, hostname, None
        return "/etc/resolv.conf", hostname, f"{candidate} not readable: using /etc/resolv.conf"
    name = ns_name or ns_spec
    if "/" in ns_spec:
        # /run/netns/NAME and /var/run/netns/NAME are named namespaces too
        parent = os.path.dirname(os.path.abspath(ns_spec))
        if parent not in ("/run/netns", "/var/run/netns"):
            return "/etc/resolv.conf", None, f"{ns_spec} is not a named namespace: using /etc/resolv.conf"
        name = os.path.basename(ns_spec)
    candidate = os.path.join("/etc/netns", name, "resolv.conf")
    if os.path.exists(candidate):
        return candidate, None, None
    return "/etc/resolv.conf", None, None
