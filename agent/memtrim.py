"""Give back what start-up needed and steady state does not.

Attaching sensors parses the kernel's BTF (about 30 MB of Python objects
for struct offsets and type ids) and leaves freed heap behind. Once every
sensor is attached, the daemon drops the parsed BTF (a later attach, on a
reload, parses it again) and asks glibc to return free heap to the kernel.
"""

import ctypes
import ctypes.util
import gc

from netagent import btf


def release_startup_memory() -> None:
    btf.forget_kernel_btf()
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)  # glibc only; elsewhere nothing to do
    except (OSError, AttributeError):
        pass
