"""A FAKE Kubernetes API server on loopback, for the API-server enrichment tests.

No real kube-apiserver can be installed on this machine (only Debian's archive
and PyPI are reachable), so this serves the few requests netagent makes, with
the JSON shapes of the real API (core/v1 PodList and watch events, apps/v1
ReplicaSet, batch/v1 Job, meta/v1 Status for errors), over HTTPS with its own
CA and a bearer token:

    GET /api/v1/pods?limit=&continue=               list, paged, with metadata.resourceVersion
    GET /api/v1/pods?watch=true&resourceVersion=    watch: one JSON event a line, chunked;
                                                    a version older than the retained
                                                    history gets an ERROR event with 410
    GET /apis/apps/v1/namespaces/NS/replicasets/N   one ReplicaSet
    GET /apis/batch/v1/namespaces/NS/jobs/N         one Job

`stop()` closes the listener and every open connection (watches included),
as a crashed API server would; `start()` again listens on the same port.
"""

import itertools
import json
import os
import socket
import ssl
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rsyslog_lab import issue_cert, make_ca

TOKEN = "netagent-test-token"


def owner(kind: str, name: str, api_version: str = "apps/v1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": str(uuid.uuid4()),
            "controller": True, "blockOwnerDeletion": True}


def pod_object(namespace: str, name: str, ip: str | None, node: str = "node-b", owners=(), labels=None,
               host_network: bool = False) -> dict:
    """A Pod as the API returns it (trimmed of fields nobody reads, shapes kept)."""
    status = {"phase": "Running", "hostIP": "192.0.2.10"}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    spec = {"nodeName": node, "containers": [{"name": "main", "image": "example/main:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                         "labels": dict(labels or {}), "ownerReferences": list(owners),
                         "creationTimestamp": "2026-12-01T12:00:00Z"},
            "spec": spec, "status": status}


def status_object(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    def __init__(self, directory: str, history: int = 1000):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        ca = make_ca(directory, "apiserver-ca", "netagent fake apiserver CA")
        self.ca_file = ca[0]
        self.cert = issue_cert(directory, "apiserver", ca, "127.0.0.1", "IP:127.0.0.1", "serverAuth")
        self.port = 0
        self.history = history
        self.lock = threading.Condition()
        self.version = itertools.count(100)
        self.resource_version = next(self.version)
        self.pods: dict[tuple[str, str], dict] = {}
        self.objects: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> object
        self.events: list[tuple[int, str, dict]] = []  # (resourceVersion, type, pod)
        self.requests: list[str] = []
        self.forbidden_kinds: set[str] = set()  # kinds answered 403, as without RBAC for them
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- the cluster's state --------------------------------------------------------
    def _bump(self, obj: dict) -> int:
        self.resource_version = next(self.version)
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        return self.resource_version

    def put_pod(self, pod: dict) -> dict:
        with self.lock:
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            kind = "MODIFIED" if key in self.pods else "ADDED"
            self.pods[key] = pod
            rv = self._bump(pod)
            self.events.append((rv, kind, json.loads(json.dumps(pod))))
            del self.events[:-self.history]
            self.lock.notify_all()
        return pod

    def delete_pod(self, namespace: str, name: str) -> None:
        with self.lock:
            pod = self.pods.pop((namespace, name))
            rv = self._bump(pod)
            self.events.append((rv, "DELETED", json.loads(json.dumps(pod))))
            del self.events[:-self.history]
            self.lock.notify_all()

    def put_object(self, kind: str, api_version: str, namespace: str, name: str, owners=()) -> dict:
        """A ReplicaSet or Job, with the spec fields the API requires (selector, pod template)."""
        template = {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "example/main:1"}]}}
        spec = {"template": template}
        if kind == "ReplicaSet":
            spec.update(replicas=1, selector={"matchLabels": {"app": name}})
        obj = {"kind": kind, "apiVersion": api_version,
               "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                            "ownerReferences": list(owners)}, "spec": spec, "status": {}}
        with self.lock:
            self._bump(obj)
            self.objects[(kind, namespace, name)] = obj
        return obj

    def kubeconfig(self, path: str, token: str = TOKEN) -> str:
        """A kubeconfig (JSON is YAML) pointing at this server with its CA and the bearer token."""
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
               "clusters": [{"name": "lab", "cluster": {"server": f"https://127.0.0.1:{self.port}",
                                                        "certificate-authority": self.ca_file}}],
               "users": [{"name": "netagent", "user": {"token": token}}],
               "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "netagent"}}]}
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    # -- serving --------------------------------------------------------------------
    def start(self) -> "FakeApiServer":
        lab = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with lab.lock:
                    lab._connections.add(self.connection)

            def finish(self):
                with lab.lock:
                    lab._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self):
                lab.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                parts = url.path.strip("/").split("/")
                if url.path == "/api/v1/pods":
                    if query.get("watch") in ("true", "1"):
                        return self.watch(query)
                    return self.list_pods(query)
                if len(parts) == 7 and parts[:3] in (["apis", "apps", "v1"], ["apis", "batch", "v1"]) \
                        and parts[3] == "namespaces":
                    kind = {"replicasets": "ReplicaSet", "jobs": "Job"}.get(parts[5])
                    if kind in lab.forbidden_kinds:
                        return self.send_json(403, status_object(
                            403, "Forbidden", f'{parts[5]}.{parts[1]} "{parts[6]}" is forbidden'))
                    obj = lab.objects.get((kind, parts[4], parts[6]))
                    if obj is not None:
                        return self.send_json(200, obj)
                return self.send_json(404, status_object(404, "NotFound", f"{url.path} not found"))

            def send_json(self, code: int, doc: dict):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def list_pods(self, query):
                with lab.lock:
                    items = [lab.pods[k] for k in sorted(lab.pods)]
                    version = str(lab.resource_version)
                start = int(query.get("continue") or 0)
                limit = int(query.get("limit") or 0) or len(items) or 1
                page = items[start:start + limit]
                meta = {"resourceVersion": version}
                if start + limit < len(items):
                    meta["continue"] = str(start + limit)
                self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

            def chunk(self, doc: dict):
                data = json.dumps(doc).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def watch(self, query):
                since = int(query.get("resourceVersion") or 0)
                timeout = float(query.get("timeoutSeconds") or 1800)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = threading.Event()
                timer = threading.Timer(timeout, deadline.set)
                timer.start()
                try:
                    with lab.lock:
                        oldest = lab.events[0][0] if lab.events else lab.resource_version
                    if since and since < oldest - 1:
                        self.chunk({"type": "ERROR", "object": status_object(
                            410, "Expired", f"too old resource version: {since} ({oldest})")})
                    else:
                        while not deadline.is_set() and lab._server is not None:
                            with lab.lock:
                                pending = [e for e in lab.events if e[0] > since]
                                if not pending:
                                    lab.lock.wait(0.2)
                                    continue
                            for rv, kind, pod in pending:
                                self.chunk({"type": kind, "object": pod})
                                since = rv
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass  # the client went away, or stop() closed the connection
                finally:
                    timer.cancel()
                self.close_connection = True

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.cert)
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Down, as a crashed server: the listener closed and every connection cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            connections = list(self._connections)
            self.lock.notify_all()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass
        self._thread.join(timeout=10)

    @property
    def up(self) -> bool:
        return self._server is not None
