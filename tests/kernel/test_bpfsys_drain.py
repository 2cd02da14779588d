"""Draining maps with batch calls (netagent.bpfsys.RawMap): the room the kernel writes into
is kept from one drain to the next (an idle drop-sensor poll then costs one system call,
issue 12), so every drain must return exactly what the map held then, never an earlier
drain's leftovers."""

import os
import struct

from netagent import bpfsys

BPF_MAP_TYPE_PERCPU_HASH = 5
KEY_SIZE, VALUE_SIZE, MAX_ENTRIES = 64, 32, 4096


def percpu_hash() -> bpfsys.RawMap:
    fd = bpfsys.map_create(BPF_MAP_TYPE_PERCPU_HASH, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES, name="drain_test")
    return bpfsys.RawMap(fd, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES, per_cpu=True, name="drain_test")


def fill(m: bpfsys.RawMap, keys: range, tag: int) -> None:
    for k in keys:
        # one copy per possible CPU, each telling which key, which fill and which CPU it is
        value = b"".join(struct.pack("<QQQQ", k, tag, cpu, 0).ljust(m.stride, b"\0") for cpu in range(m.cpus))
        m.update(struct.pack("<Q", k).ljust(KEY_SIZE, b"\0"), value)


def drained(m: bpfsys.RawMap) -> dict[int, list[tuple[int, int, int]]]:
    out = {}
    for keys, values, count in m.drain_blocks():
        for i in range(count):
            (k,) = struct.unpack_from("<Q", keys, i * KEY_SIZE)
            out[k] = [struct.unpack_from("<QQQ", values, i * m.value_bytes + cpu * m.stride) for cpu in range(m.cpus)]
    return out


def test_each_drain_returns_what_the_map_held_then_and_empties_it():
    m = percpu_hash()
    try:
        fill(m, range(3000), tag=1)
        first = drained(m)
        assert sorted(first) == list(range(3000))
        assert all(first[k] == [(k, 1, cpu) for cpu in range(m.cpus)] for k in first)
        assert drained(m) == {}  # emptied: nothing left, and nothing of the first drain's room

        fill(m, range(5000, 5003), tag=2)
        assert drained(m) == {k: [(k, 2, cpu) for cpu in range(m.cpus)] for k in range(5000, 5003)}
        assert drained(m) == {}
    finally:
        os.close(m.fd)
