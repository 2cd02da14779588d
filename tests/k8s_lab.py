"""The Kubernetes lab node (packaging/lab) driven from tests.

A LabNode runs packaging/lab/node and packaging/lab/pod as subprocesses, the
way the docs show them, and returns what they print. `name`/`subnet` select a
lab node of its own (NETAGENT_LAB_NAME / NETAGENT_LAB_SUBNET), so a test that
takes its node down never disturbs the default node other tests use.
"""

import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE = os.path.join(REPO, "packaging", "lab", "node")
POD = os.path.join(REPO, "packaging", "lab", "pod")


class LabError(AssertionError):
    pass


class LabNode:
    def __init__(self, name: str | None = None, subnet: str | None = None):
        self.env = dict(os.environ)
        if name:
            self.env["NETAGENT_LAB_NAME"] = name
        if subnet:
            self.env["NETAGENT_LAB_SUBNET"] = subnet
        self.info: dict = {}

    def run(self, script: str, *args: str, check: bool = True, timeout: float = 180):
        done = subprocess.run([script, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"{os.path.basename(script)} {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr.strip()}")
        return done

    def up(self) -> dict:
        self.info = json.loads(self.run(NODE, "up").stdout)
        return self.info

    def down(self) -> None:
        self.run(NODE, "down")

    @property
    def socket(self) -> str:
        """The lab containerd's CRI socket: give it to the agent as [kubernetes] runtime_socket."""
        return self.info["socket"]

    def create_pod(self, ref: str, host_network: bool = False, labels: dict | None = None,
                   dns_server: str | None = None) -> dict:
        args = ["create", ref] + (["--host-network"] if host_network else [])
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        if dns_server:
            args += ["--dns-server", dns_server]
        return json.loads(self.run(POD, *args).stdout)

    def delete_pod(self, ref: str) -> None:
        self.run(POD, "delete", ref)

    def pods(self) -> list[dict]:
        return [json.loads(line) for line in self.run(POD, "list").stdout.splitlines()]
