"""Merging per-packet flows into what an operator reads: who talked to what.

Conntrack refusals come in floods of *new* flows: a full table drops
thousands of connections that differ only in their source port, and one
event per source port buries the answer. So flows are merged per
(namespace, protocol, source address, destination address and port) and
the event says how many source ports were involved; the source port is
kept only when there was exactly one (the UDP insert race: one socket).
"""

from dataclasses import dataclass, field

from netagent.output import host_port


@dataclass
class MergedFlow:
    netns: int
    network: dict
    source_ip: str | None
    destination_ip: str | None
    destination_port: int | None
    icmp: dict | None
    count: int = 0
    source_ports: set = field(default_factory=set)
    start: str | None = None
    end: str | None = None
    interfaces: set = field(default_factory=set)

    def add(self, count: int, source_port: int | None, start: str | None, end: str | None,
            interface: str | None = None) -> None:
        self.count += count
        if source_port is not None:
            self.source_ports.add(source_port)
        # ISO-8601 UTC strings of one format compare like the times they name
        self.start = min(filter(None, (self.start, start)), default=None)
        self.end = max(filter(None, (self.end, end)), default=None)
        if interface:
            self.interfaces.add(interface)

    def ecs(self) -> dict:
        """source / destination / network objects for the event."""
        out: dict = {"network": dict(self.network)}
        if self.source_ip or self.destination_ip:
            source: dict = {"ip": self.source_ip}
            if len(self.source_ports) == 1:
                source["port"] = next(iter(self.source_ports))
            destination: dict = {"ip": self.destination_ip}
            if self.destination_port is not None:
                destination["port"] = self.destination_port
            out["source"] = source
            out["destination"] = destination
        return out

    def describe(self) -> str:
        transport = self.network.get("transport") or self.network.get("type") or "?"
        src = self.source_ip or "?"
        if len(self.source_ports) == 1:
            src = host_port(src, next(iter(self.source_ports)))
        dst = self.destination_ip or "?"
        if self.destination_port is not None:
            dst = host_port(dst, self.destination_port)
        ports = f" from {len(self.source_ports)} source ports" if len(self.source_ports) > 1 else ""
        return f"{transport} {src} -> {dst}{ports}"


def merge(flows: dict, *, netns: int, network: dict, source: dict | None, destination: dict | None,
          icmp: dict | None, count: int, start: str | None, end: str | None, interface: str | None = None,
          extra_key: tuple = ()) -> MergedFlow:
    """Add one flow to `flows` (a dict keyed by service), returning its merged entry."""
    source, destination = source or {}, destination or {}
    key = (netns, network.get("type"), network.get("transport"), source.get("ip"), destination.get("ip"),
           destination.get("port"), (icmp or {}).get("type"), (icmp or {}).get("code"), extra_key)
    entry = flows.get(key)
    if entry is None:
        entry = flows[key] = MergedFlow(netns, dict(network), source.get("ip"), destination.get("ip"),
                                        destination.get("port"), dict(icmp) if icmp else None)
    entry.add(count, source.get("port"), start, end, interface)
    return entry
