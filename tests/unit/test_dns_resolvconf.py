"""resolv.conf parsed the way glibc 2.36's res_vinit_1 reads it."""

import pytest

from netagent.dns import resolvconf
from netagent.dns.resolvconf import parse


def test_kubernetes_pod_resolv_conf():
    conf = parse(
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n",
        hostname="pod-1",
    )
    assert [str(n) for n in conf.nameservers] == ["10.96.0.10"]
    assert conf.search == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert conf.search_source == "search"
    assert conf.ndots == 5
    assert conf.timeout == 5 and conf.attempts == 2
    assert conf.notes == []


def test_defaults_without_a_file_use_loopback_and_the_hostname_domain():
    conf = parse("", hostname="node7.dc1.example.net")
    assert [str(n) for n in conf.nameservers] == ["127.0.0.1"]
    assert conf.search == ["dc1.example.net"]
    assert conf.search_source == "hostname"
    assert conf.ndots == 1
    assert any("127.0.0.1" in n for n in conf.notes)


def test_hostname_without_a_dot_gives_no_search_list():
    conf = parse("nameserver 10.0.0.1\n", hostname="node7")
    assert conf.search == [] and conf.search_source == "none"


def test_last_of_domain_and_search_wins():
    assert parse("search a b\ndomain c.example d\n", hostname="h").search == ["c.example"]
    assert parse("domain c.example\nsearch a b\n", hostname="h").search == ["a", "b"]
    # an empty search line is ignored, the earlier one stays
    assert parse("search a b\nsearch   \n", hostname="h").search == ["a", "b"]


def test_keywords_need_a_blank_after_them_and_comments_only_in_column_one():
    conf = parse(
        "searchx bad.example\n"
        "# search commented.example\n"
        "; nameserver 10.9.9.9\n"
        " nameserver 10.8.8.8\n"  # leading blank: not a keyword line for glibc
        "search\ta.example b.example # note\n"
        "nameserver\t10.0.0.1\n",
        hostname="h",
    )
    # glibc does not strip an inline comment from a search line
    assert conf.search == ["a.example", "b.example", "#", "note"]
    assert [str(n) for n in conf.nameservers] == ["10.0.0.1"]


def test_nameserver_forms_like_inet_aton_and_ipv6_scopes():
    conf = parse(
        "nameserver 10.1\n"  # inet_aton shorthand: 10.0.0.1
        "nameserver fe80::1%eth0\n"
        "nameserver not-an-address\n"
        "nameserver 10.0.0.9  # trailing text after a blank is accepted by inet_aton\n",
        hostname="h",
    )
    assert [str(n) for n in conf.nameservers] == ["10.0.0.1", "fe80::1%eth0", "10.0.0.9"]
    assert conf.nameservers[1].scope == "eth0"
    assert any("not-an-address" in n for n in conf.notes)


def test_only_three_nameservers_are_used():
    conf = parse("".join(f"nameserver 10.0.0.{i}\n" for i in range(1, 6)), hostname="h")
    assert [str(n) for n in conf.nameservers] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert any("10.0.0.4" in n and "10.0.0.5" in n for n in conf.notes)


@pytest.mark.parametrize(
    "options, ndots, timeout, attempts",
    [
        ("ndots:5", 5, 5, 2),
        ("ndots:99", 15, 5, 2),  # capped at RES_MAXNDOTS
        ("ndots:0", 0, 5, 2),
        ("ndots:x", 0, 5, 2),  # atoi("x") == 0
        ("ndots:-1", 15, 5, 2),  # stored in a 4-bit field
        ("ndots:3abc", 3, 5, 2),  # atoi stops at the first non-digit
        ("timeout:1 attempts:1", 1, 1, 1),
        ("timeout:100 attempts:9", 1, 30, 5),
        ("ndots:2\tndots:4", 4, 5, 2),
    ],
)
def test_numeric_options_follow_glibc(options, ndots, timeout, attempts):
    conf = parse(f"options {options}\n", hostname="h")
    assert (conf.ndots, conf.timeout, conf.attempts) == (ndots, timeout, attempts)


def test_flag_options_match_by_prefix_and_accumulate():
    conf = parse("options single-request-reopen\noptions edns0x use-vc trust-ad no-aaaa no_tld_query\n",
                 hostname="h")
    assert conf.options == {"single-request-reopen", "edns0", "use-vc", "trust-ad", "no-aaaa", "no-tld-query"}
    assert "single-request" not in conf.options
    assert parse("options single-request\n", hostname="h").options == {"single-request"}


def test_load_missing_file_gives_defaults(tmp_path):
    conf = resolvconf.load(str(tmp_path / "nope.conf"), hostname="h.example")
    assert conf.path is None
    assert [str(n) for n in conf.nameservers] == ["127.0.0.1"]
    assert conf.search == ["example"]
    assert "does not exist" in conf.notes[0]


def test_binary_garbage_does_not_crash(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_bytes(b"nameserver 10.0.0.1\n\xff\xfe\x00search x.example\nsearch ok.example\x00 cut.example\n"
                     b"domain \x1b[31m.example\n")
    conf = resolvconf.load(str(path), hostname="h")
    assert [str(n) for n in conf.nameservers] == ["10.0.0.1"]
    # a NUL ends the line as it ends a C string; control characters are kept
    # (glibc sends them), the report escapes them
    assert conf.search == ["\x1b[31m.example"]
    conf = resolvconf.parse("search ok.example\x00 cut.example\n", hostname="h")
    assert conf.search == ["ok.example"]


def test_path_for_named_and_pid_namespaces(tmp_path, monkeypatch):
    assert resolvconf.path_for_netns(None) == ("/etc/resolv.conf", None, None)
    # a named namespace without /etc/netns/NAME/resolv.conf reads the host's, as `ip netns exec` does
    path, _, note = resolvconf.path_for_netns("surely-not-a-netns-name-xyz")
    assert path == "/etc/resolv.conf" and note is None
    path, _, note = resolvconf.path_for_netns("/tmp/some/ns")
    assert path == "/etc/resolv.conf" and "not a named namespace" in note
    path, _, note = resolvconf.path_for_netns("pid:999999999")
    assert path == "/etc/resolv.conf" and "not readable" in note
    import os

    path, _, note = resolvconf.path_for_netns(f"pid:{os.getpid()}")
    assert path == f"/proc/{os.getpid()}/root/etc/resolv.conf"
