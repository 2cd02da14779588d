from pathlib import Path

from netagent.kallsyms import Symbolizer

SAMPLE = (Path(__file__).parent.parent / "fixtures" / "kallsyms" / "sample.kallsyms").read_text()


def test_address_inside_a_function_gets_name_and_offset():
    s = Symbolizer(SAMPLE)
    assert s.symbolize(0xFFFFFFFF82048C10 + 0x4BC) == "__udp4_lib_rcv+0x4bc"
    assert s.symbolize(0xFFFFFFFF81F2AF50) == "nf_hook_slow+0x0"


def test_module_symbols_keep_their_module():
    s = Symbolizer(SAMPLE)
    assert s.symbolize(0xFFFFFFFFC0A01010) == "nf_conntrack_in+0x10 [nf_conntrack]"


def test_data_symbols_and_hidden_addresses_are_ignored():
    s = Symbolizer(SAMPLE)
    # 0x...204a010 is past the data symbol: still attributed to the last text symbol
    assert s.symbolize(0xFFFFFFFF8204A010).startswith("__udp4_lib_rcv+")
    assert not s.has("hidden_by_kptr_restrict")
    assert s.has("tcp_v4_rcv")


def test_unknown_and_zero_addresses_stay_numeric():
    s = Symbolizer(SAMPLE)
    assert s.symbolize(0x1000) == "0x1000"
    assert s.symbolize(0) == "0x0"
    empty = Symbolizer("0000000000000000 T a\n")
    assert not empty.available
    assert empty.symbolize(0xFFFFFFFF81000000) == "0xffffffff81000000"
