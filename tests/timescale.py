"""Test time bounds that stretch with the machine: a VM under TCG emulation
runs a BCC compile 5-10x slower than the host.

NETAGENT_TIME_SCALE (a number, default 1) multiplies every bound a test
waits for; the VM runner sets it for the accelerator it used.
"""

import os


def time_scale() -> float:
    try:
        return max(1.0, float(os.environ.get("NETAGENT_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


def scaled(seconds: float) -> float:
    """`seconds` on this host, longer where everything runs slower."""
    return seconds * time_scale()
