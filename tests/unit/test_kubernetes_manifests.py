"""packaging/kubernetes: the DaemonSet has what the agent needs, the alert rules work.

The DaemonSet is checked against the sources it must agree with: the systemd
unit's capabilities, the runtime sockets the CRI client looks for, the config
schema (its ConfigMap must validate) and the Prometheus sink's port. The rules
are run through promtool and their metric names checked against a live sink.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from netagent import config
from netagent.enrich.cri import RUNTIME_SOCKETS
from netagent.events import new_event
from netagent.sinks.prometheus import PrometheusSink

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(REPO, "packaging", "kubernetes")
DAEMONSET = os.path.join(K8S, "daemonset.yaml")
RBAC = os.path.join(K8S, "rbac-apiserver.yaml")
RULES = os.path.join(K8S, "prometheus-rules.yaml")
UNIT = os.path.join(REPO, "systemd", "netagent.service")
DAEMON_RESULTS = os.path.join(REPO, "bench", "results", "daemon.json")
# capabilities the DaemonSet adds beyond the unit's, each for a reason written beside it
EXTRA_CAPS = {"SYS_PTRACE"}
HOST_PATHS = ["/sys/kernel/btf", "/sys/kernel/tracing", "/lib/modules", "/usr/src", "/run/netns"]


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs):
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def ds_docs():
    return by_kind(documents(DAEMONSET))


@pytest.fixture(scope="module")
def pod_spec(ds_docs):
    return ds_docs["DaemonSet"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod_spec):
    (c,) = pod_spec["containers"]
    return c


def unit_capabilities() -> set[str]:
    with open(UNIT) as f:
        line = next(l for l in f if l.startswith("CapabilityBoundingSet="))
    return {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}


def test_own_namespace_and_service_account(ds_docs):
    ns = ds_docs["Namespace"]["metadata"]["name"]
    assert ns not in ("default", "kube-system")
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        assert ds_docs[kind]["metadata"]["namespace"] == ns
    spec = ds_docs["DaemonSet"]["spec"]
    assert spec["template"]["spec"]["serviceAccountName"] == ds_docs["ServiceAccount"]["metadata"]["name"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    # no API access in the default deployment: CRI needs no token
    assert ds_docs["ServiceAccount"]["automountServiceAccountToken"] is False
    assert not {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"} & set(ds_docs)


def test_rbac_is_optional_and_read_only_on_pods(ds_docs):
    docs = documents(RBAC)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    # pods: list + watch; the owners of ReplicaSets and Jobs (netagent.enrich.apiserver): get only
    allowed = {("", "pods"): {"get", "list", "watch"}, ("apps", "replicasets"): {"get"}, ("batch", "jobs"): {"get"}}
    granted = set()
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    assert set(rule["verbs"]) <= allowed[(group, resource)], rule
                    granted.add((group, resource))
    assert ("", "pods") in granted
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (subject,) = binding["subjects"]
    assert subject["name"] == ds_docs["ServiceAccount"]["metadata"]["name"]
    assert subject["namespace"] == ds_docs["Namespace"]["metadata"]["name"]


def test_host_namespaces_and_capabilities_not_privileged(pod_spec, container):
    assert pod_spec["hostPID"] is True and pod_spec["hostNetwork"] is True
    sc = container["securityContext"]
    assert sc.get("privileged") is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = set(sc["capabilities"]["add"])
    unit = unit_capabilities()
    assert unit <= added, f"the unit's capabilities missing from the DaemonSet: {unit - added}"
    assert added - unit <= EXTRA_CAPS, f"capabilities beyond the unit's without a reason: {added - unit - EXTRA_CAPS}"


def test_every_added_capability_is_explained():
    with open(DAEMONSET) as f:
        text = f.read()
    added = re.findall(r"^\s+- ([A-Z_]+)\s*$", text.split("add:", 1)[1].split("seccompProfile", 1)[0], re.M)
    assert added
    for cap in added:
        # a comment line "# CAP  <why>" right above its list entry
        assert re.search(rf"#\s+{cap}\s+\S.*\n(\s+#.*\n)*\s+- {cap}\s*\n", text), f"{cap} is not explained"


def test_mounts_reach_what_the_agent_reads(pod_spec, container):
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for m in container["volumeMounts"]:
        assert m["name"] in volumes
    for path in HOST_PATHS:
        assert path in mounts, f"{path} not mounted"
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    assert mounts["/run/netns"].get("mountPropagation") == "HostToContainer"
    # every runtime socket the CRI client auto-detects is inside a host directory mounted at the same path
    for sock in RUNTIME_SOCKETS:
        parent = os.path.dirname(sock)
        assert parent in mounts, f"{sock}: {parent} not mounted"
        assert volumes[mounts[parent]["name"]]["hostPath"]["path"] == parent
    # no write access to the host's kernel interfaces
    for path in HOST_PATHS[:4]:
        assert mounts[path].get("readOnly") is True


def test_configmap_is_a_valid_config_at_the_path_run_reads(ds_docs, pod_spec, container):
    text = ds_docs["ConfigMap"]["data"]["netagent.toml"]
    cfg = config.parse(text, "configmap:netagent.toml")
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    (mount,) = [m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == ds_docs["ConfigMap"]["metadata"]["name"]
    assert os.path.basename(config_path) in ds_docs["ConfigMap"]["data"]
    # the liveness probe asks the Prometheus sink's port
    (prom,) = [s for s in cfg.sinks if s["type"] == "prometheus"]
    port = int(prom["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert ports[probe["port"]] == port and probe["path"] == "/metrics"
    assert cfg.kubernetes.get("enabled", True) is True


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (Mi, Gi, M, plain bytes) in MiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[:-len(suffix)]) * factor / 2**20
    return float(quantity) / 2**20


def test_memory_request_and_limit_follow_the_measured_rss(container):
    """The request covers the agent's measured steady RSS; the limit covers its highest RSS plus
    the BPF compile child's peak (a child in the same cgroup, at start), with room but not
    arbitrarily: at most twice that. The numbers are bench/daemon_bench.py's (MiB)."""
    with open(DAEMON_RESULTS) as f:
        measured = json.load(f)
    steady = measured["rss_mb_steady"]
    highest = max(steady["max"], measured.get("soak", {}).get("rss_mb_max", 0))
    need = highest + measured["compile_child_peak_rss_mb"]
    res = container["resources"]
    request, limit = mebibytes(res["requests"]["memory"]), mebibytes(res["limits"]["memory"])
    assert request >= steady["median"], f"request {request} MiB below the steady RSS {steady['median']} MiB"
    assert need <= limit <= 2 * need, f"limit {limit} MiB for a measured need of {need:.0f} MiB"
    assert request <= limit and "cpu" in res["requests"] and "cpu" not in res.get("limits", {})  # no CPU throttling


def test_probes_ask_the_metrics_endpoint_after_the_compile(container):
    """Liveness only once the startup probe passed: the first start compiles the sensors for up to
    ~40 s on a small node, which a liveness probe alone would take for a hang."""
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    for probe in (startup, liveness):
        assert probe["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 30  # one slow scrape is no restart
    assert liveness["timeoutSeconds"] >= 2


def test_locked_down_where_the_agent_needs_nothing(container):
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    # what the agent writes: its state (syslog spool), its bytecode cache, /tmp
    assert writable == {"/var/lib/netagent", "/var/cache/netagent", "/tmp"}


def test_node_name_and_image(container):
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["args"][0] == "run"


# --- alert rules ------------------------------------------------------------------------

def test_promtool_checks_and_tests_the_rules():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (packaging/setup-node.sh)"
    check = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "prometheus-rules.test.yaml"], cwd=K8S,
                          capture_output=True, text=True, timeout=120)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pod(ev):
    ev["kubernetes"] = {"namespace": "payments", "pod": {"name": "api-0", "uid": "u1"}}
    return ev


def test_rules_name_only_series_the_agent_exports():
    """Feed the sink one event of each kind the rules are about, then every metric the rules
    name must be on /metrics (a renamed metric would silence an alert for good)."""
    sink = PrometheusSink("prometheus", f"127.0.0.1:{_free_port()}", pod_alive=lambda key: True)
    sink.observe_agent(lambda: {"lost": {"queue": 2}, "sensors": [], "sinks": [],
                                "enrich": {"pods": {"healthy": False}, "enrich_failed": {}}})
    sink.start()
    try:
        drop = _pod(new_event(dataset="netagent.drops", action="packet-dropped",
                              netagent={"drop": {"count": 3, "bytes": 300, "interface": "eth0"}}))
        drop["event"]["reason"] = "NO_SOCKET"
        sink.submit(b"", drop)
        sink.submit(b"", _pod(new_event(dataset="netagent.conntrack", action="counters",
                                        netagent={"conntrack": {"deltas": {"insert_failed": 2, "drop": 2,
                                                                           "early_drop": 1}}})))
        for status in ("ok", "blackhole", "blackhole"):
            sink.submit(b"", new_event(dataset="netagent.mtu", action="mtu-probe",
                                       netagent={"mtu": {"status": status, "path_mtu": 1400}}))
        sink.submit(b"", new_event(dataset="netagent.dns", action="dns-probe",
                                   netagent={"dns": {"queries": 20, "answered": 17}}))
        with urllib.request.urlopen(f"http://127.0.0.1:{sink.bound_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        sink.close(1)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    exported = {name for name, _ in samples}

    with open(RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    named = {m for r in rules for m in re.findall(r"\bnetagent_[a-z_]+\b", r["expr"])}
    assert named, "no netagent metric in the rules"
    assert named <= exported, f"rules name metrics the agent does not export: {sorted(named - exported)}"

    # and the values the probe alerts divide and count are the events' own
    assert samples[("netagent_mtu_probes_total", (("status", "blackhole"),))] == 2
    assert samples[("netagent_mtu_probes_total", (("status", "ok"),))] == 1
    assert samples[("netagent_dns_queries_total", ())] == 20
    assert samples[("netagent_dns_lost_total", ())] == 3
