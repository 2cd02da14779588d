"""Turning SIGTERM/SIGINT (and SIGHUP) into events a loop can wait on."""

import signal
import threading


class StopSignals:
    """Sets `stop` on SIGTERM/SIGINT; `hup` on SIGHUP when asked to."""

    def __init__(self, handle_hup: bool = False):
        self.stop = threading.Event()
        self.hup = threading.Event()
        self.received: str | None = None
        self._previous = {}
        self._signals = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if handle_hup else [])

    def _handler(self, signum, _frame):
        if signum == signal.SIGHUP:
            self.hup.set()
            return
        self.received = signal.Signals(signum).name
        self.stop.set()

    def __enter__(self):
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
