"""The one-off commands take pod attribution from `--config`'s [kubernetes] section, as `netagent
run` does (issue 11): the API server names remote pods, `runtime_socket` finds `--pod`, and
`node_name` names the node. The FAKE API server (apiserver_lab.py) and FAKE CRI server
(fake_cri.py) on loopback stand in for a cluster; the DNS server is a real UDP responder on
loopback. Each case is checked against the same command without that section.
"""

import json
import os
import select
import socket
import threading

import pytest

from apiserver_lab import FakeApiServer, owner, pod_object
from dns_lab import answer
from fake_cri import FakePod
from lab import Namespace
from pod_agent import Sandbox

from netagent import config as config_mod
from netagent.cli import main

pytest.importorskip("lightkube")
pytestmark = pytest.mark.timeout(120)

DNS_IP = "127.0.0.77"  # the "pod" the API server lists: loopback, so the probe never leaves the node


class Responder:
    """Answers every A query with 192.0.2.1, on DNS_IP (any port)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_IP, 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if select.select([self.sock], [], [], 0.05)[0]:
                query, client = self.sock.recvfrom(65535)
                self.sock.sendto(answer(query, ["192.0.2.1"]), client)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def api(tmp_path):
    server = FakeApiServer(str(tmp_path / "apiserver")).start()
    yield server
    server.stop()


@pytest.fixture
def no_default_config(tmp_path, monkeypatch):
    """Without --config: the embedded default, whatever this machine has in /etc/netagent."""
    monkeypatch.setattr(config_mod, "DEFAULT_PATH", str(tmp_path / "no-such-netagent.toml"))


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, [json.loads(line) for line in out.splitlines()], err


def write_config(tmp_path, kubernetes: dict) -> str:
    path = tmp_path / "netagent.toml"
    path.write_text("[kubernetes]\n" + "".join(f'{key} = "{value}"\n' for key, value in kubernetes.items()))
    return str(path)


def test_probe_dns_names_the_server_pod_from_the_configured_api_server(api, cri, tmp_path, capsys,
                                                                       no_default_config):
    api.put_object("ReplicaSet", "apps/v1", "kube-system", "coredns-5d78c", owners=[owner("Deployment", "coredns")])
    api.put_pod(pod_object("kube-system", "coredns-5d78c-abcde", DNS_IP, labels={"pod-template-hash": "5d78c"},
                           owners=[owner("ReplicaSet", "coredns-5d78c")]))
    config = write_config(tmp_path, {"apiserver": api.kubeconfig(str(tmp_path / "kubeconfig")),
                                     "runtime_socket": cri.socket_path, "node_name": "node-under-test"})
    responder = Responder()
    try:
        probe = ["probe", "dns", "www.example.", "--server", f"{DNS_IP}:{responder.port}", "--type", "A",
                 "--count", "2", "--interval", "0", "--timeout", "2s", "-o", "json"]
        code, events, err = run_main([*probe, "--config", config], capsys)
        assert code == 0, err
        assert err == ""
        [event] = events
        assert event["destination"]["ip"] == DNS_IP and event["dns"]["resolved_ip"] == ["192.0.2.1"]
        assert event["netagent"]["kubernetes"]["destination"] == {
            "namespace": "kube-system", "pod": "coredns-5d78c-abcde", "workload": "Deployment/coredns"}
        assert event["kubernetes"]["node"]["name"] == "node-under-test"

        # the same probe without the file: no API server, so the server is not named
        code, events, err = run_main(probe, capsys)
        assert code == 0, err
        [event] = events
        assert event["destination"]["ip"] == DNS_IP and "destination" not in event["netagent"].get("kubernetes", {})
    finally:
        responder.stop()


def test_api_server_down_the_probe_still_answers_and_says_why_in_one_line(api, cri, tmp_path, capsys):
    config = write_config(tmp_path, {"apiserver": api.kubeconfig(str(tmp_path / "kubeconfig")),
                                     "runtime_socket": cri.socket_path})
    api.stop()
    responder = Responder()
    try:
        code, events, err = run_main(["probe", "dns", "www.example.", "--server", f"{DNS_IP}:{responder.port}",
                                      "--type", "A", "--count", "1", "--timeout", "2s", "-o", "json",
                                      "--config", config], capsys)
    finally:
        responder.stop()
    assert code == 0, err
    [event] = events
    assert event["dns"]["resolved_ip"] == ["192.0.2.1"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "API server: unavailable for now" in lines[0], err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace for the fake pod's sandbox)")
def test_check_pod_is_found_through_the_configured_runtime_socket(cri, tmp_path, capsys, no_default_config):
    sandbox = Sandbox(Namespace())
    try:
        cri.pods.append(FakePod("shop", "cache-0", sandbox.pid, containers=["cache"]))
        config = write_config(tmp_path, {"runtime_socket": cri.socket_path, "node_name": "node-under-test"})
        check = ["check", "--pod", "shop/cache-0", "--window", "200ms", "-o", "json"]
        code, events, err = run_main([*check, "--config", config], capsys)
        assert code in (0, 1), err  # 1: findings in the bare namespace (no interface up) are fine here
        [summary] = [e for e in events if e["event"]["action"] == "check-summary"]
        assert summary["netagent"]["check"]["netns"] == [{"name": "pod shop/cache-0", "inode": sandbox.ns.inode}]

        # without the file the runtime is looked for where containerd and CRI-O put theirs: not this one
        code, events, err = run_main(check, capsys)
        assert code == 69 and events == [], err
        assert "pod shop/cache-0" in err and len(err.strip().splitlines()) == 1, err
    finally:
        sandbox.kill()
        sandbox.ns.delete()
