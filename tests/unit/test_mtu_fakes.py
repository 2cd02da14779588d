"""Helpers for the MTU unit tests (no tests here): a simulated path with hops, ICMP or silence, scripted loss."""

from netagent.mtu.search import LOCAL, LOST, OK, TOO_BIG, ERROR, Outcome


class FakePath:
    """hops: [(mtu, sender, answers_icmp)] in path order; the target answers anything that passes.

    drop: {size: n} loses the first n sends of that size (random loss).
    late: {size: n} the first n sends of that size are answered only after
          their probe was given up (reported through late()).
    local_mtu: sizes above it are refused by our own kernel (EMSGSIZE).
    error: (outcome kind ERROR detail, sender) answered to every probe (a dead target with a router saying why).
    """

    def __init__(self, hops, *, drop=None, late=None, local_mtu=None, error=None, dead=False):
        self.hops = hops
        self.drop = dict(drop or {})
        self.late_sizes = dict(late or {})
        self.local_mtu = local_mtu
        self.error = error
        self.dead = dead
        self.sent = []  # (size, attempt)
        self._late = []

    def _fate(self, size):
        if self.local_mtu is not None and size > self.local_mtu:
            return Outcome(LOCAL, mtu=self.local_mtu, detail="EMSGSIZE")
        if self.error:
            return Outcome(ERROR, sender=self.error[1], detail=self.error[0])
        if self.dead:
            return Outcome(LOST)
        for mtu, sender, icmp in self.hops:
            if size > mtu:
                return Outcome(TOO_BIG, mtu=mtu, sender=sender, rtt=0.001) if icmp else Outcome(LOST)
        return Outcome(OK, sender="target", rtt=0.002)

    def probe(self, sizes, attempt=0):
        out = []
        for size in sizes:
            self.sent.append((size, attempt))
            fate = self._fate(size)
            if self.drop.get(size, 0) > 0:
                self.drop[size] -= 1
                fate = Outcome(LOST)
            elif self.late_sizes.get(size, 0) > 0 and fate.kind == OK:
                self.late_sizes[size] -= 1
                self._late.append((size, fate))
                fate = Outcome(LOST)
            out.append(fate)
        return out

    def late(self):
        out, self._late = self._late, []
        return out


def blackhole(mtu, router="10.1.0.1"):
    return FakePath([(mtu, router, False)])


def icmp(mtu, router="10.1.0.1"):
    return FakePath([(mtu, router, True)])
