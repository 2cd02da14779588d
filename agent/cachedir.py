"""Where netagent keeps what it may rebuild: compiled bytecode, BTF facts, header trees.

One directory, NETAGENT_CACHE_DIR (default /var/cache/netagent, the unit's
CacheDirectory=), with a subdirectory per kind. Losing it costs a slower
start, never correctness.
"""

import os

DEFAULT_CACHE_DIR = "/var/cache/netagent"


def cache_path(kind: str) -> str:
    """The subdirectory for one kind of cached thing ("bpf", "btf", "kheaders")."""
    return os.path.join(os.environ.get("NETAGENT_CACHE_DIR", DEFAULT_CACHE_DIR), kind)
