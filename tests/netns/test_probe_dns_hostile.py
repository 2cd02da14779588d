"""A hostile DNS responder in the server namespace: malformed and spoofed answers.

For every query it sends, before the genuine answer: an answer from the
right address but another port, one from another address, and one packet
per variant in dns_lab.hostile_variants (wrong ID, short header, truncated
packet, compression loop, over-long name, bad label type, control
characters in a name, question mismatch, QR clear, wrong opcode, trailing
junk). netagent must count each as invalid, keep waiting, take the
genuine answer, and write clean JSON.
"""

import pytest
from dns_lab import SERVER_IP, SPARE_IP, DnsLab, HostileResponder, by_question, json_events, run_netagent

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

REASONS = [
    "wrong_source", "wrong_id", "short_header", "truncated_packet", "bad_compression_pointer",
    "name_too_long", "bad_label_type", "control_characters_in_name", "question_mismatch",
    "not_a_response", "wrong_opcode", "trailing_junk",
]


@pytest.fixture
def lab(netns_factory, tmp_path):
    lab = DnsLab(netns_factory, tmp_path)
    yield lab
    lab.close()


def start_hostile(lab, genuine=True):
    h = HostileResponder(
        lab.server_socket(bind=(SERVER_IP, 53)),
        lab.server_socket(bind=(SERVER_IP, 5353)),
        lab.server_socket(bind=(SPARE_IP, 53)),
        genuine=genuine,
    )
    lab.threads.append(h)
    return h


def assert_clean(stdout: str):
    """Every line parses as JSON and no raw control character is anywhere in the output."""
    assert not [c for c in stdout if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F]
    return json_events(stdout)


def test_hostile_answers_are_counted_and_the_genuine_one_is_used(lab, netagent_bin):
    h = start_hostile(lab)
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.", "--server",
                     SERVER_IP, "--type", "A", "--count", "3", "--interval", "0", "--timeout", "2s", "-o", "json")
    assert r.returncode == 0, r.stderr
    (event,) = assert_clean(r.stdout)
    d = event["netagent"]["dns"]
    assert d["answered"] == 3 and d["timeouts"] == 0
    assert event["dns"]["resolved_ip"] == ["10.9.9.9"]  # never the 10.66.66.66 of the forgeries
    assert d["invalid"] == 3 * h.expected_invalid_per_query() == 3 * (len(REASONS) + 1)
    assert d["invalid_reasons"]["wrong_source"] == 6  # wrong port + wrong address, per query
    for reason in REASONS[1:]:
        assert d["invalid_reasons"][reason] == 3, reason
    assert h.queries == 3 and h.errors == []
    # a few samples say what was wrong with which packet
    assert d["invalid_samples"][:2] == [f"wrong_source: from {SERVER_IP} port 5353",
                                        f"wrong_source: from {SPARE_IP} port 53"]


def test_pairs_on_one_socket_account_for_every_invalid_packet(lab, netagent_bin):
    h = start_hostile(lab)
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.", "--server",
                     SERVER_IP, "--count", "2", "--interval", "0", "--timeout", "2s", "-o", "json")
    assert r.returncode == 0, r.stderr
    events = by_question(assert_clean(r.stdout))
    total_invalid = sum(e["netagent"]["dns"]["invalid"] for e in events.values())
    assert total_invalid == 4 * h.expected_invalid_per_query()
    assert events[("www.lab.test", "AAAA")]["dns"]["resolved_ip"] == ["fd09::9"]
    assert events[("www.lab.test", "A")]["netagent"]["dns"]["answered"] == 2


def test_only_garbage_times_out_and_exits_69_with_clean_output(lab, netagent_bin):
    h = start_hostile(lab, genuine=False)
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.", "--server",
                     SERVER_IP, "--type", "A", "--count", "2", "--interval", "0", "--timeout", "500ms",
                     "-o", "json")
    assert r.returncode == 69
    assert r.stderr.count("\n") == 1 and "invalid packets" in r.stderr
    (event,) = assert_clean(r.stdout)
    d = event["netagent"]["dns"]
    assert d["timeouts"] == 2 and d["answered"] == 0
    assert d["invalid"] == 2 * h.expected_invalid_per_query()  # every forgery counted, nothing accepted
    assert "resolved_ip" not in event["dns"]


def test_table_output_is_clean_too(lab, netagent_bin):
    start_hostile(lab)
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.", "--server",
                     SERVER_IP, "--count", "1", "--timeout", "2s", "-o", "table")
    assert r.returncode == 0, r.stderr
    assert not [c for c in r.stdout if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F]
    assert "10.9.9.9" in r.stdout
