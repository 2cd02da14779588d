"""tracefs: finding (or mounting) it, and parsing tracepoint format files.

A format file describes a tracepoint's record: each field's C type, offset
and size, and the `print fmt` line, whose __print_symbolic(...) lists map
numbers to names (e.g. skb_drop_reason). Reading names from here, at run
time, is what keeps us free of per-kernel reason tables.
"""

import os
import re
import subprocess
from dataclasses import dataclass, field

from netagent.errors import MalformedData, ProbeUnavailable

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d);"
)
_SYMBOL_ENTRY = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


class TracefsFormatError(MalformedData):
    """A tracepoint format file we cannot read."""


def _number(text: str, base: int, what: str) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise TracefsFormatError(f"{what}: {text[:40]!r} is not a number") from None


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool
    array_len: int | None = None


@dataclass
class TracepointFormat:
    system: str
    event: str
    id: int | None
    fields: list[Field]
    print_fmt: str
    symbolic: dict[str, dict[int, str]] = field(default_factory=dict)  # arg -> {value: name}

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def has_field(self, name: str) -> bool:
        return self.field(name) is not None

    def record_size(self) -> int:
        return max((f.offset + f.size for f in self.fields), default=0)

    def c_struct(self, struct_name: str) -> str:
        """A packed C struct matching this record, with explicit padding.

        Fields are emitted as fixed-width integers (or byte arrays) at their
        exact offsets, so the struct does not depend on any kernel header
        (the format may name types, like enum skb_drop_reason, that the
        installed headers lack).
        """
        lines = [f"struct {struct_name} {{"]
        pos = 0
        int_types = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.offset < pos:
                continue  # overlapping/duplicate description: keep the first
            if f.offset > pos:
                lines.append(f"    u8 __pad_{pos}[{f.offset - pos}];")
            ident = re.sub(r"\W", "_", f.name)
            if f.array_len is None and f.size in int_types:
                ctype = int_types[f.size]
                if f.signed and f.size < 8:
                    ctype = "s" + ctype[1:]
                lines.append(f"    {ctype} {ident};")
            else:
                lines.append(f"    u8 {ident}[{f.size}];")
            pos = f.offset + f.size
        lines.append("} __attribute__((packed));")
        return "\n".join(lines)


def parse_format(text: str, system: str = "", event: str = "") -> TracepointFormat:
    fields: list[Field] = []
    tp_id = None
    print_fmt = ""
    for line in text.splitlines():
        if line.startswith("name:") and not event:
            event = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            tp_id = _number(line.split(":", 1)[1].strip(), 10, "ID")
        elif line.startswith("print fmt:"):
            print_fmt = line.split(":", 1)[1].strip()
        else:
            m = _FIELD.match(line)
            if m:
                fields.append(_parse_field(m))
    fmt = TracepointFormat(system, event, tp_id, fields, print_fmt)
    fmt.symbolic = parse_print_symbolic(print_fmt)
    return fmt


def _parse_field(m: re.Match) -> Field:
    decl = m.group("decl").strip()
    array_len = None
    arr = re.search(r"\[(\d*)\]\s*$", decl)
    if arr:
        array_len = _number(arr.group(1), 10, "array length") if arr.group(1) else 0
        decl = decl[: arr.start()].strip()
    name = re.split(r"[\s*]+", decl)[-1]
    ctype = decl[: len(decl) - len(name)].strip()
    return Field(name, ctype, _number(m.group("offset"), 10, "offset"), _number(m.group("size"), 10, "size"),
                 m.group("signed") == "1", array_len)


def parse_print_symbolic(print_fmt: str) -> dict[str, dict[int, str]]:
    """{'reason': {2: 'NOT_SPECIFIED', ...}} from every __print_symbolic(REC->x, ...)."""
    out: dict[str, dict[int, str]] = {}
    for m in re.finditer(r"__print_symbolic\(\s*REC->(\w+)\s*,", print_fmt):
        body = _balanced_args(print_fmt, m.end())
        table = {_number(v, 0, f"__print_symbolic value of {m.group(1)}"): name
                 for v, name in _SYMBOL_ENTRY.findall(body)}
        out.setdefault(m.group(1), {}).update(table)
    return out


def _balanced_args(text: str, start: int) -> str:
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def find_tracefs() -> str | None:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs(announce=None) -> str:
    """Path of a mounted tracefs, mounting it on /sys/kernel/tracing if needed."""
    path = find_tracefs()
    if path:
        return path
    target = TRACEFS_CANDIDATES[0]
    try:
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "-t", "tracefs", "nodev", target], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ProbeUnavailable(f"tracefs is not mounted and mounting it on {target} failed: {detail.strip()}") from None
    if announce:
        announce(f"mounted tracefs on {target}")
    return target


def tracepoint_format(system: str, event: str, tracefs: str | None = None) -> TracepointFormat:
    base = tracefs or ensure_tracefs()
    path = os.path.join(base, "events", system, event, "format")
    try:
        with open(path) as f:
            return parse_format(f.read(), system, event)
    except FileNotFoundError:
        raise ProbeUnavailable(f"tracepoint {system}:{event} does not exist on this kernel ({path})") from None
    except PermissionError:
        raise ProbeUnavailable(f"cannot read {path}: permission denied") from None
