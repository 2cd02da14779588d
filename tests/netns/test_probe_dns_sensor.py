"""DNS names probed on an interval by the real daemon (`netagent run`), from a namespace."""

import json
import os
import selectors
import signal
import subprocess
import time

import pytest
from dns_lab import SERVER_IP, DnsLab

from netagent import registry

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


@pytest.fixture
def lab(netns_factory, tmp_path):
    lab = DnsLab(netns_factory, tmp_path)
    lab.server_dnsmasq = lab.dnsmasq({"www.lab.test": ["10.1.1.1"]})
    yield lab
    lab.close()


def test_daemon_probes_names_on_an_interval(lab, netagent_bin, tmp_path):
    lab.resolv_conf(f"nameserver {SERVER_IP}\nsearch lab.test\noptions ndots:2\n")
    others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                     if m.section != "dns")
    config = tmp_path / "netagent.toml"
    config.write_text(
        others
        + "[sensors.dns]\n"
        + 'names = ["www", "nothere"]\n'
        + f'netns = "{lab.client.name}"\n'
        + 'interval = "1s"\ncount = 2\ntimeout = "1s"\n'
        + '[[sinks]]\ntype = "stdout"\n'
    )
    proc = subprocess.Popen([netagent_bin, "run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    dns_events = []
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        polls_seen = set()  # probe start times of www.lab.test: one per poll
        while time.monotonic() < deadline and len(polls_seen) < 2:
            if not sel.select(1.0):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event.get("event", {}).get("dataset") == "netagent.dns":
                dns_events.append(event)
                if event["dns"]["question"]["name"] == "www.lab.test":
                    polls_seen.add(event["@timestamp"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(polls_seen) >= 2, err  # probed again on the interval
    by_name = {}
    for e in dns_events:  # the first event of each name and type
        by_name.setdefault((e["dns"]["question"]["name"], e["dns"]["question"]["type"]), e)
    a = by_name[("www.lab.test", "A")]
    assert a["dns"]["resolved_ip"] == ["10.1.1.1"]
    assert a["netagent"]["dns"]["queries"] == 2 and a["netagent"]["dns"]["netns"] == lab.client.name
    assert a["netagent"]["dns"]["resolver_answer"] == "www.lab.test."
    assert by_name[("nothere.lab.test", "A")]["dns"]["response_code"] == "NXDOMAIN"
    assert by_name[("nothere", "A")]["netagent"]["dns"]["candidate_step"] == "as-is-last"
    # the stream is one contiguous sequence
    seqs = [e["event"]["sequence"] for e in dns_events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert os.path.exists(config)
