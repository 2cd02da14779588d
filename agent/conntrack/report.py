"""One interval of one namespace's conntrack counters, as ECS events.

Every interval gives a `counters` event (event.kind "metric") with the
rises of the counters, the entry count, the limit and the fill ratio.
On top of it, alerts say what the rises mean:

  table-full      the fill ratio crossed the threshold, or the kernel evicted
                  entries to make room (early_drop rose: that happens only
                  when the table is over nf_conntrack_max), or packets were
                  dropped because no entry could be allocated (drop rose by
                  more than the insert failures explain)
  insert-failed   insert_failed rose: new entries lost the insert race and
                  could not be merged (the UDP race behind 5 s DNS
                  timeouts), or hash chains grew too long
  clash-resolved  clash_resolve rose: the race happened but the kernel
                  merged the entries without dropping (event.kind "event")

How the kernel counts (net/netfilter/nf_conntrack_core.c, 5.15+):
  table full, nothing evictable       drop +1            (packet dropped)
  table full, an entry evicted        early_drop +n      (packet kept)
  clash merged                        clash_resolve +1   (packet kept)
  clash not mergeable                 drop +1, insert_failed +1
  chain too long at confirm           chaintoolong +1, insert_failed +1
"""

import platform
import re

from netagent.conntrack.namespaces import Snapshot
from netagent.conntrack.stats import delta, watched_deltas
from netagent.events import new_event
from netagent.timefmt import iso_timestamp

DATASET = "netagent.conntrack"
DEFAULT_THRESHOLD = 0.9
ACTIONS = ("insert-failed", "table-full", "clash-resolved", "counters")


def kernel_version(release: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def kernel_caveat(snapshot: Snapshot, release: str | None = None) -> str | None:
    """Why insert_failed may overstate trouble on this kernel, or None."""
    release = release or platform.release()
    if snapshot.table.has("clash_resolve") and kernel_version(release) >= (5, 10):
        return None
    return (f"kernel {release} is older than 5.10: its insert_failed also counts clashes that were "
            "resolved without dropping the packet (there is no separate clash_resolve counter); "
            "count lost packets with drop instead")


class Interval:
    """The counters of one namespace between two snapshots, classified."""

    def __init__(self, before: Snapshot, after: Snapshot, *, threshold: float = DEFAULT_THRESHOLD,
                 was_full: bool = False, caveat: str | None = None):
        self.before = before
        self.after = after
        self.threshold = threshold
        self.was_full = was_full
        self.caveat = caveat
        self.rises = delta(before.table, after.table)
        self.deltas = watched_deltas(self.rises)

    def rise(self, name: str) -> int:
        return self.rises.get(name, 0)

    @property
    def above_threshold(self) -> bool:
        ratio = self.after.fill_ratio
        return ratio is not None and ratio >= self.threshold

    @property
    def allocation_drops(self) -> int:
        """Drops not explained by insert failures: packets for which no entry
        could be allocated (table full, or rarely out of memory)."""
        insert_drops = max(0, self.rise("insert_failed") - self.rise("chaintoolong"))
        return max(0, self.rise("drop") - insert_drops)

    @property
    def table_full(self) -> bool:
        if self.rise("early_drop") or self.allocation_drops:
            return True
        if self.above_threshold:
            return not self.was_full or bool(self.rise("drop"))
        return False

    @property
    def insert_failed(self) -> bool:
        return bool(self.rise("insert_failed"))

    @property
    def clash_resolved(self) -> bool:
        return bool(self.rise("clash_resolve"))

    @property
    def counter_drops(self) -> int:
        """Packets conntrack dropped by its counters' own account."""
        return self.rise("drop") + self.rise("chaintoolong")

    @property
    def troubled(self) -> bool:
        return self.table_full or self.insert_failed

    def body(self) -> dict:
        """The netagent.conntrack object shared by every event of this interval."""
        ratio = self.after.fill_ratio
        body = {
            "netns": self.after.netns.inode,
            "netns_name": self.after.netns.name,
            "interval": round(self.after.monotonic - self.before.monotonic, 6),
            "entries": self.after.entries,
            "max": self.after.max,
            "fill_ratio": round(ratio, 6) if ratio is not None else None,
            "deltas": self.deltas,
        }
        if self.caveat:
            body["caveat"] = self.caveat
        return body

    def _event(self, action: str, kind: str, type_: list[str], message: str | None) -> dict:
        event = new_event(
            dataset=DATASET, action=action, kind=kind, category=["network"], type=type_,
            timestamp=self.after.wall, netagent={"conntrack": self.body()},
        )
        event["event"]["start"] = iso_timestamp(self.before.wall)
        event["event"]["end"] = iso_timestamp(self.after.wall)
        if message:
            event["message"] = message
            event["event"]["reason"] = message
        return event

    def events(self, *, counters: bool = True) -> list[dict]:
        """The counters event (unless counters=False) and any alerts."""
        out = []
        if counters:
            out.append(self._event("counters", "metric", ["info"], None))
        where = f"netns {self.after.netns.name}"
        if self.table_full:
            out.append(self._event("table-full", "alert", ["error"], self._table_full_message(where)))
        if self.insert_failed:
            msg = (f"conntrack insert_failed +{self.rise('insert_failed')} in {where} "
                   f"(drop +{self.rise('drop')}, chaintoolong +{self.rise('chaintoolong')}, "
                   f"clash_resolve +{self.rise('clash_resolve')}): new entries lost the insert race and could "
                   "not be merged (parallel UDP from one socket, e.g. A+AAAA DNS queries through DNAT) "
                   "or hash chains are too long; the packets were dropped")
            if self.caveat:
                msg += f" [{self.caveat}]"
            out.append(self._event("insert-failed", "alert", ["error"], msg))
        if self.clash_resolved:
            msg = (f"conntrack clash_resolve +{self.rise('clash_resolve')} in {where}: packets of a new flow "
                   "raced on several CPUs; the kernel merged them without a drop")
            out.append(self._event("clash-resolved", "event", ["info"], msg))
        return out

    def _table_full_message(self, where: str) -> str:
        ratio = self.after.fill_ratio
        now = (f"{self.after.entries} of {self.after.max} entries" if ratio is not None
               else f"{self.after.entries} entries, no limit")
        if self.allocation_drops or self.rise("early_drop"):
            parts = [f"conntrack table full in {where}"]
            if self.allocation_drops:
                parts.append(f"{_plural(self.allocation_drops, 'packet')} dropped for want of an entry "
                             f"(drop +{self.rise('drop')})")
            if self.rise("early_drop"):
                parts.append(f"{_plural(self.rise('early_drop'), 'unreplied entry', 'unreplied entries')} "
                             "evicted early to make room")
            parts.append(f"now {now}" + (f" ({ratio:.0%})" if ratio is not None else ""))
        else:
            parts = [f"conntrack table {ratio:.0%} full in {where} ({now}), above the {self.threshold:.0%} threshold"]
        return "; ".join(parts) + " (raise net.netfilter.nf_conntrack_max, or find the flood of new flows)"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
