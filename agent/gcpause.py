"""Pausing Python's cyclic garbage collector while a poll builds thousands of events.

A drop-sensor poll in a storm renders ten thousand events of a dozen small
dicts each. The collector counts every one of them as an allocation and,
every 700, walks the young objects, the middle generation every tenth time
and the whole heap now and then: about 40% of such a poll's CPU time, spent
looking for cycles that events never form (plain trees, freed by reference
counting). Inside `paused()` the collector does not run; on leaving, one
young-generation pass takes what accumulated, on the caller's thread, so
the cost is still counted where it arose (bench/storm_bench.py).

Process-wide, like the collector: nested or concurrent pauses (two sensors)
keep it off until the last one ends, and a collector someone else disabled
stays disabled.
"""

import contextlib
import gc
import threading

_lock = threading.Lock()
_depth = 0
_disabled_by_us = False


@contextlib.contextmanager
def paused():
    global _depth, _disabled_by_us
    with _lock:
        if _depth == 0:
            _disabled_by_us = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            resume = _depth == 0 and _disabled_by_us
            if resume:
                _disabled_by_us = False
                gc.enable()
        if resume:
            gc.collect(0)
