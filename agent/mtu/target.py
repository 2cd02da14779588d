"""The probe's target and route: address or name, source address, egress facts.

Everything here runs inside the namespace being probed from (the caller
uses netns.run_in), because names resolve, routes exist and addresses are
local only relative to a network namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from dataclasses import dataclass

from netagent.errors import ProbeUnavailable, UsageError

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Target:
    text: str  # what the user gave
    ip: str  # the address probed
    family: int  # 4 or 6
    scope_id: int = 0  # IPv6 link-local zone
    name: str | None = None  # the host name, when one was given

    @property
    def sockaddr(self) -> tuple:
        return (self.ip, 0) if self.family == 4 else (self.ip, 0, 0, self.scope_id)


@dataclass(frozen=True)
class Route:
    source: str  # the address the kernel would send from
    kernel_mtu: int | None  # the route's MTU as the kernel holds it (a locked route MTU or a learnt PMTU)


def check_syntax(text: str) -> None:
    """UsageError unless `text` could be an IP address or a host name (no lookups)."""
    if not text or text != text.strip():
        raise UsageError(f"bad target {text!r}: give an IP address or a host name")
    addr, _, zone = text.partition("%")
    try:
        ipaddress.ip_address(addr)
        if zone and ipaddress.ip_address(addr).version != 6:
            raise UsageError(f"bad target {text!r}: only IPv6 addresses take a %zone")
        return
    except ValueError:
        pass
    if zone:
        raise UsageError(f"bad target {text!r}: not an IP address")
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise UsageError(f"bad target {text!r}: not an IP address or a valid host name")
    if all(label.isdigit() for label in labels):
        # "999.1.1.1" or "10.1": looks like an address, is not one
        raise UsageError(f"bad target {text!r}: not a valid IP address")


def resolve(text: str, family: int | None = None) -> Target:
    """The address to probe (first answer of the resolver for a name)."""
    check_syntax(text)
    addr, _, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ip = None
    if ip is not None:
        if family and ip.version != family:
            raise UsageError(f"target {text} is IPv{ip.version} but -{family} was given")
        if ip.is_multicast or ip.is_unspecified or (ip.version == 4 and ip == ipaddress.ip_address("255.255.255.255")):
            raise UsageError(f"bad target {text}: path MTU needs a unicast address")
        scope = 0
        if zone:
            try:
                scope = socket.if_nametoindex(zone)
            except OSError:
                raise UsageError(f"bad target {text!r}: no interface {zone!r} in this namespace") from None
        elif ip.version == 6 and ip.is_link_local:
            raise UsageError(f"target {text} is link-local: add the interface, e.g. {text}%eth0")
        return Target(text, str(ip), ip.version, scope)
    fam = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(text, None, fam, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise UsageError(f"cannot resolve {text!r}: no such host") from None
        raise ProbeUnavailable(f"cannot resolve {text!r}: {exc.strerror}") from None
    for fam_found, _, _, _, sockaddr in infos:
        if fam_found in (socket.AF_INET, socket.AF_INET6):
            version = 4 if fam_found == socket.AF_INET else 6
            scope = sockaddr[3] if version == 6 else 0
            return Target(text, sockaddr[0].split("%", 1)[0], version, scope, name=text)
    raise ProbeUnavailable(f"cannot resolve {text!r}: no IPv4 or IPv6 address")


_ROUTE_ERRORS = {
    errno.ENETUNREACH: "no route to network",
    errno.EHOSTUNREACH: "no route to host",
    errno.EACCES: "route prohibits it",
    errno.EPERM: "route prohibits it",
    errno.EINVAL: "blackhole route",
}


def route_to(target: Target) -> Route:
    """Ask the kernel for the source address (a UDP connect sends nothing) and the route MTU."""
    fam = socket.AF_INET if target.family == 4 else socket.AF_INET6
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target.ip, 9) if target.family == 4 else (target.ip, 9, 0, target.scope_id))
        except OSError as exc:
            why = _ROUTE_ERRORS.get(exc.errno, os.strerror(exc.errno or 0))
            raise ProbeUnavailable(f"{target.text} is unreachable from here: {why}") from None
        source = s.getsockname()[0]
    return Route(source=source, kernel_mtu=kernel_route_mtu(target))


def kernel_route_mtu(target: Target) -> int | None:
    """RTAX_MTU of the route to the target: what ordinary sockets will use as PMTU."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return None
    fam = socket.AF_INET if target.family == 4 else socket.AF_INET6
    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=target.ip, family=fam)
    except Exception:  # NetlinkError for unroutable targets: nothing to report
        return None
    for route in routes or []:
        metrics = route.get("RTA_METRICS")
        if metrics is not None and metrics.get("RTAX_MTU"):
            return int(metrics.get("RTAX_MTU"))
    return None


def local_addresses() -> set[str]:
    """Every address configured in this namespace (ICMP from one of them is our own kernel)."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return set()
    out = set()
    try:
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                # IFA_LOCAL first: on point-to-point links IFA_ADDRESS is the peer
                value = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
                if value:
                    out.add(str(ipaddress.ip_address(value)))
    except Exception:
        return out
    return out
