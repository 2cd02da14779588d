"""Typed errors and the exit codes they map to.

Exit codes follow sysexits(3) so scripts and systemd can tell a
configuration mistake (78, do not restart) from a missing capability (77)
or an unavailable kernel feature (69).
"""

EXIT_OK = 0
EXIT_FINDINGS = 1  # `netagent check` found something
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: kernel feature, BCC or target missing
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug in netagent
EXIT_NOPERM = 77  # EX_NOPERM: not root / missing capabilities
EXIT_CONFIG = 78  # EX_CONFIG: invalid configuration


class AgentError(Exception):
    """Base of every error shown to the user as one line."""

    exit_code = EXIT_SOFTWARE


class UsageError(AgentError):
    exit_code = EXIT_USAGE


class ProbeUnavailable(AgentError):
    """A sensor or check cannot run on this node (kernel, BCC, target)."""

    exit_code = EXIT_UNAVAILABLE


class BccMissing(ProbeUnavailable):
    def __init__(self, detail: str = ""):
        msg = (
            "BCC's Python bindings are not importable"
            + (f" ({detail})" if detail else "")
            + ": install them with `apt-get install python3-bpfcc` (Debian/Ubuntu)"
            " or run `make setup`; the PyPI package named 'bcc' is unrelated"
        )
        super().__init__(msg)


class MalformedData(ProbeUnavailable):
    """Input from the kernel or the network that is not in the format we read:
    a /proc file, a tracefs format file, a DNS packet. Parsers raise only this
    (or a subclass) whatever the bytes, so a hostile or new-format input is
    one clear line, never a traceback. Deliberately not a ValueError: the
    daemon reads ValueError from a sensor as a rejected configuration."""


class InsufficientPrivilege(AgentError):
    exit_code = EXIT_NOPERM


class ConfigError(AgentError):
    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        where = ":".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
