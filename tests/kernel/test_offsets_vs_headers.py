"""A self-check of the BTF reader: where this kernel's exact headers are
installed, every struct offset a sensor takes from BTF must equal the
headers' offsetof, as clang computes it from those headers.

Each offset becomes a _Static_assert in one C file that clang compiles with
the kernel's own include paths and config (as Kbuild, and BCC, set them up:
the arch and generic include trees of the headers package, generated headers,
kconfig.h); clang reports every failed assertion, naming the field and both
numbers. Not through BCC itself: BCC 0.26 puts its own copy of the bpf UAPI
header first, older than 6.12's (no struct bpf_wq), and 6.12's linux/bpf.h
then does not compile, whatever the offsets.
"""

import os
import shutil
import subprocess

import pytest

from netagent.btf import kernel_btf
from netagent.kheaders import headers_status
from netagent.probes import conntrack, drops
from timescale import scaled

HEADERS = headers_status()
pytestmark = pytest.mark.skipif(HEADERS.status != "exact",
                                reason=f"exact kernel headers for this kernel (have: {HEADERS.describe()})")

INCLUDES = ["linux/skbuff.h", "linux/netdevice.h", "net/sock.h", "net/net_namespace.h",
            "net/netfilter/nf_conntrack.h", "net/netfilter/nf_conntrack_tuple.h"]
# The clang of BCC's own LLVM (Debian's python3-bpfcc 0.26 links LLVM 14); make setup installs it.
CLANG = "clang-14"


def kernel_cflags(release: str) -> list[str]:
    """Kbuild's include paths and forced includes for this release's headers:
    /lib/modules/R/build holds the generated files, /lib/modules/R/source
    (Debian's -common package) the rest; in a full kernel tree both are one."""
    build = os.path.realpath(f"/lib/modules/{release}/build")
    source = os.path.realpath(f"/lib/modules/{release}/source")
    if not os.path.isdir(os.path.join(source, "include", "linux")):
        source = build
    arch = "x86"
    flags = ["-nostdinc", "-target", "x86_64-linux-gnu", "-std=gnu11", "-D__KERNEL__",
             '-DKBUILD_MODNAME="netagent_offsets"', "-fsyntax-only", "-ferror-limit=0", "-Wno-everything"]
    for inc in (f"{source}/arch/{arch}/include", f"{build}/arch/{arch}/include/generated",
                f"{source}/include", f"{build}/include",
                f"{source}/arch/{arch}/include/uapi", f"{build}/arch/{arch}/include/generated/uapi",
                f"{source}/include/uapi", f"{build}/include/generated/uapi"):
        flags.append(f"-I{inc}")
    for forced in ("include/linux/compiler-version.h", "include/linux/kconfig.h", "include/linux/compiler_types.h"):
        if os.path.exists(os.path.join(source, forced)):
            flags += ["-include", os.path.join(source, forced)]
    return flags


def fields() -> dict[tuple[str, str], int]:
    """(struct, member path) -> BTF byte offset, for every field either sensor reads."""
    from kmod import ensure_nf_conntrack

    ensure_nf_conntrack()  # on a modular kernel, nf_conn may be described only by the module's BTF
    btf = kernel_btf()
    wanted = {*drops.BTF_FIELDS.values(), *conntrack.BTF_FIELDS.values()}
    return {(s, m): btf.member_offset(s, m) for s, m in sorted(wanted)}


# One offset asserted off by one beside the real ones: the comparison must name it
# (proof that it can fail), in the same compile (a compile takes minutes under TCG).
DELIBERATE = ("nf_conntrack_tuple", "dst.protonum")


def assertions(offsets: dict[tuple[str, str], int]) -> str:
    lines = [f"#include <{h}>" for h in INCLUDES]
    checks = [(key, value, "BTF says") for key, value in offsets.items()]
    checks.append((DELIBERATE, offsets[DELIBERATE] + 1, "deliberately wrong,"))
    for (struct, path), value, says in checks:
        label = f"{struct}.{path}: {says} {value}"
        lines.append(f'_Static_assert(__builtin_offsetof(struct {struct}, {path}) == {value}, "{label}");')
    lines.append("int unused(void *ctx) { return 0; }")
    return "\n".join(lines) + "\n"


def compile_errors(source: str) -> list[str]:
    """clang's error lines for `source` compiled against this kernel's headers; [] when it compiles."""
    clang = shutil.which(CLANG)
    if clang is None:
        pytest.fail(f"{CLANG} not found (make setup installs it)")
    out = subprocess.run([clang, *kernel_cflags(HEADERS.running), "-x", "c", "-"], input=source,
                         capture_output=True, text=True, timeout=scaled(300))
    if out.returncode == 0:
        return []
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    other = [ln for ln in errors if "static_assert failed" not in ln and "static assertion failed" not in ln]
    # anything but a failed assertion means the header set itself did not compile: no comparison happened
    assert errors and not other, f"the kernel's headers did not compile: {(other or [out.stderr.strip()])[0][-400:]}"
    return errors


@pytest.fixture(scope="module")
def checked() -> tuple[dict, list[str]]:
    """(offsets, clang's failed assertions) from one compile."""
    offsets = fields()
    return offsets, compile_errors(assertions(offsets))


def test_every_btf_offset_equals_the_headers_offsetof(checked):
    offsets, errors = checked
    assert len(offsets) >= 20  # both sensors' fields
    assert [e for e in errors if "deliberately wrong" not in e] == []


def test_the_check_fails_when_an_offset_is_wrong(checked):
    """The comparison can fail: the one offset asserted off by one is named by clang."""
    _, errors = checked
    wrong = [e for e in errors if "deliberately wrong" in e]
    assert len(wrong) == 1 and "nf_conntrack_tuple.dst.protonum: deliberately wrong" in wrong[0], errors
