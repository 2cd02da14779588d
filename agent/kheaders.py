"""Which kernel headers BCC will compile against, and how close they are.

BCC looks for them in /lib/modules/<release>/build (and .../source where a
distribution splits them, as Debian does). Under systemd's
ProtectKernelModules=yes that directory is hidden, while the headers
packages' own directories under /usr/src are not: there they are found by
release, and BCC is pointed at them with BCC_KERNEL_SOURCE. BCC takes one
directory through that variable, so a split tree (Debian's -amd64 build
directory with the generated headers, -common with the rest) is joined
into one tree of symbolic links in the cache directory (merged_tree).
"""

import os
import platform
import re
from dataclasses import dataclass

from netagent.cachedir import cache_path

MODULES_DIR = "/lib/modules"
SRC_DIR = "/usr/src"
KCONFIG = os.path.join("include", "linux", "kconfig.h")  # what BCC checks a tree by


@dataclass
class HeadersStatus:
    status: str  # "exact", "nearest" or "none"
    path: str | None
    version: str | None
    running: str
    # where the headers are when /lib/modules is out of reach: (build dir, source dir or None)
    outside_modules: tuple[str, str | None] | None = None

    def describe(self) -> str:
        where = self.path
        if self.outside_modules:
            where = f"{self.path}, found under {SRC_DIR}: {MODULES_DIR} is not readable here"
        if self.status == "exact":
            return f"exact ({where})"
        if self.status == "nearest":
            return (f"nearest: {self.version} for running {self.running} ({where}); "
                    "struct offsets are taken from BTF, not from these headers")
        return "none: BCC sensors cannot compile (run `make setup`, or install linux-headers)"


def headers_status(release: str | None = None, modules_dir: str = MODULES_DIR, src_dir: str = SRC_DIR) -> HeadersStatus:
    release = release or platform.release()
    build = os.path.join(modules_dir, release, "build")
    if not os.path.isdir(os.path.join(build, "include")):
        tree = headers_outside_modules(release, src_dir)
        if tree is None:
            return HeadersStatus("none", None, None, release)
        return HeadersStatus("exact", tree[0], release, release, outside_modules=tree)
    target = os.path.realpath(build)
    m = re.search(r"linux-headers-(.+)$", target)
    version = m.group(1) if m else os.path.basename(target)
    # A build dir named after the running release (or a kernel's own tree) is exact.
    if version == release or release in target:
        return HeadersStatus("exact", target, version, release)
    return HeadersStatus("nearest", target, version, release)


def headers_outside_modules(release: str, src_dir: str = SRC_DIR) -> tuple[str, str | None] | None:
    """(build dir, source dir or None) of this release's headers package under /usr/src:
    Debian's and Ubuntu's linux-headers-<release>, Fedora's and RHEL's kernels/<release>.
    A build dir without the headers themselves names its source tree in its Makefile
    (Debian: `include /usr/src/linux-headers-<version>-common/Makefile`)."""
    for build in (os.path.join(src_dir, f"linux-headers-{release}"), os.path.join(src_dir, "kernels", release)):
        if not os.path.isdir(os.path.join(build, "include")):
            continue
        if os.path.isfile(os.path.join(build, KCONFIG)):
            return build, None
        source = _included_tree(build)
        if source and os.path.isfile(os.path.join(source, KCONFIG)):
            return build, source
    return None


def _included_tree(build: str) -> str | None:
    try:
        with open(os.path.join(build, "Makefile")) as f:
            for line in f:
                m = re.match(r"\s*include\s+(\S+)/Makefile\s*$", line)
                if m:
                    return os.path.normpath(os.path.join(build, m.group(1)))
    except OSError:
        pass
    return None


def bcc_kernel_source(status: HeadersStatus) -> str | None:
    """The directory to give BCC as BCC_KERNEL_SOURCE, or None when BCC finds the
    headers itself (/lib/modules readable). OSError if a merged tree cannot be made."""
    if not status.outside_modules:
        return None
    build, source = status.outside_modules
    if source is None:
        return build
    return merged_tree(build, source, os.path.join(cache_path("kheaders"), status.running))


def merged_tree(build: str, source: str, where: str) -> str:
    """One header tree at `where` made of symbolic links: every entry of `source`, with
    `build`'s own entries (generated headers, config) laid over it in include/ and in each
    arch/<arch>/include/. Made once; kept while it still resolves."""
    if os.path.isfile(os.path.join(where, KCONFIG)) and os.path.isdir(os.path.join(where, "include", "generated")):
        return where
    parent = os.path.dirname(where)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    staging = f"{where}.{os.getpid()}.tmp"
    _link_entries(source, staging, skip={"include", "arch"})
    _overlay(os.path.join(source, "include"), os.path.join(build, "include"), os.path.join(staging, "include"))
    for arch in _entries(os.path.join(source, "arch")):
        src_arch, out_arch = os.path.join(source, "arch", arch), os.path.join(staging, "arch", arch)
        build_arch = os.path.join(build, "arch", arch)
        if not os.path.isdir(build_arch):
            _link(src_arch, out_arch)
            continue
        _link_entries(src_arch, out_arch, skip={"include"})
        _overlay(os.path.join(src_arch, "include"), os.path.join(build_arch, "include"),
                 os.path.join(out_arch, "include"))
    if os.path.isdir(where):
        import shutil  # noqa: PLC0415

        shutil.rmtree(where)  # a stale tree (the headers moved): replaced whole
    os.replace(staging, where)
    return where


def _entries(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _link(target: str, link: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(target, link)


def _link_entries(directory: str, out: str, skip: set[str] = frozenset()) -> None:
    os.makedirs(out, exist_ok=True)
    for name in _entries(directory):
        if name not in skip:
            _link(os.path.join(directory, name), os.path.join(out, name))


def _overlay(lower: str, upper: str, out: str) -> None:
    """out/ holds a link to each entry of `lower`, replaced by `upper`'s entry of that name."""
    _link_entries(lower, out)
    for name in _entries(upper):
        link = os.path.join(out, name)
        if os.path.lexists(link):
            os.unlink(link)
        _link(os.path.join(upper, name), link)
