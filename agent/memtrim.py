"""Give back what start-up needed and steady state does not; keep the heap from creeping.

Attaching sensors parses the kernel's BTF (about 30 MB of Python objects
for struct offsets and type ids) and leaves freed heap behind. Once every
sensor is attached, the daemon drops the parsed BTF (a later attach, on a
reload, parses it again) and asks glibc to return free heap to the kernel.

`tune_allocator()`, called before the daemon starts any thread, fixes two
glibc malloc settings for the long run (issue 12, RSS growth under a drop
storm):
  M_MMAP_THRESHOLD  each poll allocates and frees buffers of hundreds of KB
                    (a map drained in one batch). glibc serves the first from
                    mmap and then, by its dynamic threshold, the following
                    ones from the heap, where small objects allocated in
                    between pin them and the heap only grows. A fixed
                    threshold keeps them in mmap: unmapped when freed.
  M_ARENA_MAX       every thread (sensor runners, pipeline, sinks) would get
                    an arena of its own, each fragmenting on its own; two are
                    plenty for threads that take turns on the GIL.
"""

import ctypes
import ctypes.util
import gc

from netagent import btf

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, kept fixed
ARENA_MAX = 2


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> None:
    """The malloc settings above; nothing where libc is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        mallopt(M_ARENA_MAX, ARENA_MAX)


def release_startup_memory() -> None:
    btf.forget_kernel_btf()
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:  # glibc only; elsewhere nothing to do
        trim(0)
