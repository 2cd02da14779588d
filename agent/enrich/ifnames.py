"""ifindex -> interface name in any network namespace, without entering it.

Entering a namespace (setns) needs CAP_SYS_ADMIN, which the hardened unit
does not have. rtnetlink can instead answer for another namespace when the
request names it by its *netnsid* (the id our namespace gives a peer
namespace): RTM_GETNSID with the namespace's file descriptor returns the id
(RTM_NEWNSID assigns one when there is none yet; that needs CAP_NET_ADMIN,
which the agent has), and an RTM_GETLINK dump carrying IFLA_TARGET_NETNSID
(also called IFLA_IF_NETNSID) lists that namespace's links. Plain netlink
messages, packed here: pyroute2 0.9 builds the dump but drops the
attribute from the request.
"""

import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWNSID, RTM_GETNSID = 88, 90
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
IFLA_IFNAME = 3
IFLA_TARGET_NETNSID = 46
NETNSA_NSID, NETNSA_FD = 1, 3
NSID_NOT_ASSIGNED = -1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTGENMSG = struct.Struct("=Bxxx")
_RTATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    pass


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    data = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return data + b"\0" * (_align(len(data)) - len(data))


def _attrs(buf: bytes, offset: int, end: int):
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, buf[offset + _RTATTR.size:offset + length]
        offset += _align(length)


class RtNetlink:
    """One rtnetlink socket in the agent's own namespace; not thread-safe (one owner)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        self._seq += 1
        seq = self._seq
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        out = []
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                payload = data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(length)
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                    return out  # the ACK
                out.append((mtype, payload))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return out
            if length < _NLMSGHDR.size:
                raise NetlinkError(0, "malformed netlink reply")

    def netnsid(self, ns_fd: int, assign: bool = True) -> int:
        """Our id for the namespace open at `ns_fd`, assigning one if it has none."""
        body = _RTGENMSG.pack(socket.AF_UNSPEC) + _attr(NETNSA_FD, struct.pack("=I", ns_fd))
        nsid = NSID_NOT_ASSIGNED
        for _mtype, payload in self._request(RTM_GETNSID, 0, body):
            for kind, value in _attrs(payload, _RTGENMSG.size, len(payload)):
                if kind == NETNSA_NSID:
                    (nsid,) = struct.unpack("=i", value[:4])
        if nsid == NSID_NOT_ASSIGNED and assign:
            body = (_RTGENMSG.pack(socket.AF_UNSPEC) + _attr(NETNSA_FD, struct.pack("=I", ns_fd))
                    + _attr(NETNSA_NSID, struct.pack("=i", NSID_NOT_ASSIGNED)))  # -1: the kernel picks
            self._request(RTM_NEWNSID, NLM_F_ACK, body)
            return self.netnsid(ns_fd, assign=False)
        return nsid

    def links(self, nsid: int | None = None) -> dict[int, str]:
        """ifindex -> name of every link in our namespace, or in the one with id `nsid`."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        if nsid is not None:
            body += _attr(IFLA_TARGET_NETNSID, struct.pack("=i", nsid))
        names = {}
        for mtype, payload in self._request(RTM_GETLINK, NLM_F_DUMP, body):
            if mtype != RTM_NEWLINK:
                continue
            _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
            for kind, value in _attrs(payload, _IFINFOMSG.size, len(payload)):
                if kind == IFLA_IFNAME:
                    names[index] = value.rstrip(b"\0").decode("utf-8", "backslashreplace")
        return names


def links_of(rtnl: RtNetlink, ns_path: str | None) -> dict[int, str]:
    """ifindex -> name in the namespace at `ns_path` (None: our own)."""
    if ns_path is None:
        return rtnl.links()
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return rtnl.links(rtnl.netnsid(fd))
    finally:
        os.close(fd)
