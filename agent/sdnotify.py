"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

systemd (Type=notify) waits for READY=1 before it considers the service
started, so `systemctl start netagent` returns only once the sensors are
attached. Outside systemd NOTIFY_SOCKET is unset and every call is a no-op.
"""

import os
import socket


def notify(*fields: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=2 sensors attached"); True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    elif not address.startswith("/"):
        return False  # e.g. vsock: not used on a node
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
        return True
    except OSError:
        return False  # systemd gone or socket not ours: readiness is best effort


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings if WatchdogSec= is set for us (half the limit)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
