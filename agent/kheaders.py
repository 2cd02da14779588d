"""Which kernel headers BCC will compile against, and how close they are."""

import os
import platform
import re
from dataclasses import dataclass


@dataclass
class HeadersStatus:
    status: str  # "exact", "nearest" or "none"
    path: str | None
    version: str | None
    running: str

    def describe(self) -> str:
        if self.status == "exact":
            return f"exact ({self.path})"
        if self.status == "nearest":
            return (f"nearest: {self.version} for running {self.running} ({self.path}); "
                    "struct offsets are taken from BTF, not from these headers")
        return "none: BCC sensors cannot compile (run `make setup`, or install linux-headers)"


def headers_status(release: str | None = None) -> HeadersStatus:
    release = release or platform.release()
    build = f"/lib/modules/{release}/build"
    if not os.path.isdir(os.path.join(build, "include")):
        return HeadersStatus("none", None, None, release)
    target = os.path.realpath(build)
    m = re.search(r"linux-headers-(.+)$", target)
    version = m.group(1) if m else os.path.basename(target)
    # A build dir named after the running release (or a kernel's own tree) is exact.
    if version == release or release in target:
        return HeadersStatus("exact", target, version, release)
    return HeadersStatus("nearest", target, version, release)
