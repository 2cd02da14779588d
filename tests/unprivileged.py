"""Running `netagent` as an unprivileged user (nobody, no capabilities), wherever the checkout is.

A clone in /root (0700 on Debian) or in a `mktemp -d` directory (0700) cannot
be read by nobody, so `setpriv --reuid=65534 .venv/bin/netagent` would fail
with "Permission denied" before netagent runs at all. Only the process under
test must see the checkout: it runs in a private mount namespace in which
every directory on the way that others cannot search is overlaid
(read-only overlayfs) with an empty 0755 directory on top. The overlay's
root takes its mode from the top layer and its entries from the real
directory, so nobody can reach the checkout while the real directories keep
their modes and nothing outside this one process changes. The process
itself keeps uid 65534 and no capabilities: what the tests check (exit 77
and one line) is what an unprivileged user sees.
"""

import contextlib
import os
import shlex
import stat
import subprocess
import sys
import tempfile

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def needed_paths() -> list[str]:
    """What the console script touches: the venv, its interpreter, and the checkout (editable install)."""
    paths = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), REPO]
    return list(dict.fromkeys(paths + [os.path.realpath(p) for p in paths]))


def blocked_dirs(paths: list[str]) -> list[str]:
    """Directories on the way to each path (the path included) that others cannot search, top-down."""
    out: list[str] = []
    for path in paths:
        current = "/"
        for part in os.path.abspath(path).strip("/").split("/"):
            current = os.path.join(current, part)
            try:
                st = os.stat(current)
            except OSError:
                break
            if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH and current not in out:
                out.append(current)
    return sorted(out, key=lambda p: p.count("/"))


@contextlib.contextmanager
def nobody_prefix():
    """An argv prefix that runs the rest as nobody without capabilities, able to reach the checkout."""
    blocked = blocked_dirs(needed_paths())
    if not blocked:
        yield list(NOBODY)
        return
    with tempfile.TemporaryDirectory(prefix="netagent-open-") as empty:
        os.chmod(empty, 0o755)
        mounts = []
        for d in blocked:
            if any(c in d for c in ":,\\"):
                raise AssertionError(f"cannot overlay {d!r}: ':', ',' or '\\' in the path")
            mounts.append(f"mount -t overlay netagent-test -o ro,lowerdir={empty}:{d} {shlex.quote(d)}")
        script = " && ".join(mounts) + ' && exec "$@"'
        yield ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *NOBODY]


def run_as_nobody(argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    with nobody_prefix() as prefix:
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, **kwargs)
