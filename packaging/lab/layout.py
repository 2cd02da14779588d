"""Where the lab node keeps everything: one place for every path and name.

The lab runs its own containerd beside anything else on the machine: its own
socket, root and state directories, CNI configuration and bridge, so `node down`
can remove exactly what `node up` made and nothing else.
"""

import hashlib
import ipaddress
import os
import re
import sys

LAB_DIR = os.path.dirname(os.path.abspath(__file__))

# One machine can hold several lab nodes side by side (the lab's own tests use a
# second one so they never take down the node other tests are using): each has
# a name, and its directories, socket, bridge and subnet follow from it.
DEFAULT_NAME = "netagent-lab"
NAME = os.environ.get("NETAGENT_LAB_NAME", DEFAULT_NAME)


def _bad_setting(message: str):
    print(f"lab: {message}", file=sys.stderr)
    sys.exit(2)  # usage


if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", NAME):
    _bad_setting(f"NETAGENT_LAB_NAME={NAME!r}: use 1-32 of a-z 0-9 -")

RUN_DIR = f"/run/{NAME}"               # sockets, state, CNI config (gone at reboot)
LIB_DIR = f"/var/lib/{NAME}"           # containerd's content store and snapshots
SOCKET = f"{RUN_DIR}/containerd.sock"  # the CRI endpoint (tests pass it to the agent)
CONTAINERD_CONFIG = f"{RUN_DIR}/containerd.toml"
CONTAINERD_LOG = f"{RUN_DIR}/containerd.log"
PIDFILE = f"{RUN_DIR}/containerd.pid"
STATEFILE = f"{RUN_DIR}/state.json"    # what the host had before `up`, for `down`
NETNS_LOG = f"{RUN_DIR}/netns.list"    # every pod netns path, for `down` after a crash
CNI_CONF_DIR = f"{RUN_DIR}/net.d"
CNI_BIN_DIR = "/usr/lib/cni"           # Debian containernetworking-plugins
CNI_NETWORK = NAME
IPAM_DIR = f"{LIB_DIR}/ipam"
RUNC_ROOT = f"{RUN_DIR}/runc"

# the containerd namespace that CRI (kubelet's pods) lives in
K8S_NAMESPACE = "k8s.io"

# interface names are at most 15 characters
BRIDGE = "nalab0" if NAME == DEFAULT_NAME else "nalab-" + hashlib.sha1(NAME.encode()).hexdigest()[:8]
# private, used only on this machine: the bridge (the pods' gateway) takes .1
SUBNET = os.environ.get("NETAGENT_LAB_SUBNET", "10.244.77.0/24")
try:
    _net = ipaddress.IPv4Network(SUBNET)
except ValueError as exc:
    _bad_setting(f"NETAGENT_LAB_SUBNET={SUBNET!r}: {exc}")
GATEWAY = str(_net.network_address + 1)
GATEWAY_CIDR = f"{GATEWAY}/{_net.prefixlen}"
CLUSTER_DOMAIN = "cluster.local"

PAUSE_IMAGE = "localhost/netagent-lab/pause:1"
PAUSE_SOURCE = os.path.join(LAB_DIR, "pause.c")

# containerd answers its first call within a second here; the bound is for a loaded CI box
START_TIMEOUT = 60.0
CRI_TIMEOUT = 120.0

# exit codes (the project's: see README)
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_NOPERM = 77
