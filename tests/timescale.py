"""How much longer than on this machine a test may wait: the one place tests read it.

packaging/vm/run sets NETAGENT_TIME_SCALE inside its guests (6 under TCG,
where a BCC compile takes ~14 s instead of ~3 s; 2 under KVM). Anywhere else
it is unset and waits are as written. Scale bounds on waiting for a
condition, never a duration a test asserts about the product itself.
"""

import os


def _scale() -> float:
    try:
        value = float(os.environ.get("NETAGENT_TIME_SCALE", "1"))
    except ValueError:
        return 1.0
    return value if value >= 1 else 1.0


TIME_SCALE = _scale()


def scaled(seconds: float) -> float:
    """`seconds` stretched for the machine the tests run on."""
    return seconds * TIME_SCALE
