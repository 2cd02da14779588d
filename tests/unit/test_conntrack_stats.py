"""/proc/net/stat/nf_conntrack parsing against captured and reconstructed layouts."""

import os

import pytest

from netagent.conntrack.stats import StatFormatError, delta, parse, watched_deltas

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "conntrack")


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def conntrack_dash_s(name: str) -> list[dict[str, int]]:
    """`conntrack -S` output (one line per CPU, key=value) as dicts."""
    rows = []
    for line in fixture(name).splitlines():
        fields = dict(part.split("=") for part in line.split() if "=" in part)
        rows.append({k: int(v) for k, v in fields.items()})
    return rows


# conntrack -S names -> our names (conntrack -S calls icmp_error "error")
DASH_S_NAMES = {"found": "found", "invalid": "invalid", "insert": "insert", "insert_failed": "insert_failed",
                "drop": "drop", "early_drop": "early_drop", "error": "icmp_error",
                "search_restart": "search_restart", "clash_resolve": "clash_resolve",
                "chaintoolong": "chaintoolong"}


@pytest.mark.parametrize("stem", ["linux-6.18-2cpu-clash", "linux-6.18-2cpu-table-full"])
def test_captured_file_agrees_with_conntrack_dash_s_per_cpu(stem):
    table = parse(fixture(f"{stem}.stat"))
    netlink = conntrack_dash_s(f"{stem}.conntrack-S")
    assert table.cpus == len(netlink) == 2
    for cpu, row in enumerate(netlink):
        for theirs, ours in DASH_S_NAMES.items():
            assert table.per_cpu[cpu][table.columns.index(ours)] == row[theirs], (cpu, ours)


def test_new_layout_names_columns_as_the_kernel_struct_does():
    table = parse(fixture("linux-6.18-2cpu-clash.stat"))
    assert table.header[1] == "clashres" and table.header[7] == "chainlength"
    assert table.has("clash_resolve") and table.has("chaintoolong")
    assert not table.has("clashres") and not table.has("searched")
    # the values are hex: 0x0b + 0x21 clashes, 0x1a + 0x19 failed inserts
    assert table.total("clash_resolve") == 0x0B + 0x21 == 44
    assert table.total("insert_failed") == 0x1A + 0x19 == 51
    assert table.total("drop") == 51


def test_entries_is_the_namespace_count_taken_once_not_summed_over_cpus():
    table = parse(fixture("linux-6.18-2cpu-table-full.stat"))
    assert table.entries == 0x14 == 20
    assert "entries" not in table.columns
    assert table.total("drop") == 0x82 == 130
    assert table.total("early_drop") == 1


def test_old_layout_with_searched_column():
    table = parse(fixture("linux-4.19-4cpu.stat"))
    assert table.cpus == 4
    assert table.entries == 0x1E23A
    assert table.has("searched") and table.has("delete_list") and table.has("search_restart")
    assert not table.has("clash_resolve") and not table.has("chaintoolong")
    assert table.total("insert_failed") == 0x2C + 0x31 + 0x27 + 0x2E
    assert table.total("icmp_error") == 0x19 + 0x11 + 0x1C + 0x14
    watched = watched_deltas(delta(table, table))
    assert watched["clash_resolve"] is None and watched["chaintoolong"] is None
    assert watched["insert_failed"] == 0 and watched["searched"] == 0


def test_intermediate_layout_with_clashres_and_delete_list():
    table = parse(fixture("linux-5.10-2cpu.stat"))
    assert table.has("clash_resolve") and table.has("delete_list") and not table.has("chaintoolong")
    assert table.total("clash_resolve") == 0x15 + 0x0C


def test_oldest_layout_without_search_restart_and_with_trailing_space():
    table = parse(fixture("linux-2.6.32-2cpu.stat"))
    assert table.cpus == 2 and table.entries == 0xA3C
    assert not table.has("search_restart")
    assert table.total("insert_failed") == 0x09 + 0x11
    assert watched_deltas(delta(table, table))["search_restart"] is None


def _one_cpu(header: str, *values: str) -> str:
    return header + "\n" + "\n".join(values) + "\n"


HEADER = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop " \
         "icmp_error  expect_new expect_create expect_delete search_restart"


def _row(entries=0, insert_failed=0, drop=0) -> str:
    cols = [entries, 0, 0, 0, 0, 0, 0, 0, 0, insert_failed, drop, 0, 0, 0, 0, 0, 0]
    return " ".join(f"{v:08x}" for v in cols)


def test_delta_survives_a_per_cpu_counter_wrapping_past_2_to_the_32():
    before = parse(_one_cpu(HEADER, _row(drop=0xFFFFFFFE), _row(drop=5)))
    after = parse(_one_cpu(HEADER, _row(drop=0x00000003), _row(drop=7)))
    assert delta(before, after)["drop"] == 5 + 2  # 0xfffffffe -> 3 is +5 on CPU 0


def test_delta_of_readings_with_different_layouts_is_refused():
    a = parse(_one_cpu(HEADER, _row()))
    b = parse(_one_cpu(HEADER, _row(), _row()))
    with pytest.raises(StatFormatError):
        delta(a, b)


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("00000001 00000002\n", "no header"),
    ("entries drop\n", "no per-CPU lines"),
    ("entries drop\n00000001\n", "line 2 has 1 values"),
    ("entries drop\n00000001 zz\n", "not hexadecimal"),
    ("entries drop drop\n0 0 0\n", "duplicate"),
])
def test_malformed_files_are_refused_with_a_reason(text, needle):
    with pytest.raises(StatFormatError, match=needle):
        parse(text)
