"""Waiting on a condition, the one way tests do it (never a fixed sleep as a check).

wait_for: the condition must come; its value is returned, or the test fails
naming what it waited for. wait_until: whether it came, for a test that
asserts with its own message (the condition is asked once more at the end).
"""

import time


def wait_for(predicate, timeout=20.0, what="condition", step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_until(predicate, timeout=20.0, step=0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
