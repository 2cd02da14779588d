#!/usr/bin/env bash
# Prepare this node for netagent: system packages, tracefs, kernel headers for
# BCC, and the project's .venv. Idempotent: a second run installs nothing and
# takes a few seconds. Run as root (CI does; `make setup` calls this).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SYSTEM_PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}

say() { printf 'setup: %s\n' "$*" >&2; }
# set -e alone ends setup without a word; say which step failed
trap 'say "failed (exit $?) at setup-node.sh line $LINENO: $BASH_COMMAND"' ERR

# --- system packages ---------------------------------------------------------
# python3-bpfcc: BCC (not on PyPI); bpftool: BTF and program listing;
# iproute2/iptables/nftables/conntrack: namespaces and rules in tests;
# iputils-tracepath: the reference tool the MTU probe is compared against;
# dnsmasq-base + bind9-dnsutils: a real DNS server and dig for the DNS tests;
# rsyslog + rsyslog-gnutls + gnutls-bin: a real TLS syslog collector in tests;
# prometheus: a real scraper in tests; dpkg-dev/fakeroot: `make deb`;
# debootstrap: installing the .deb into a clean Debian root in tests;
# containerd + containernetworking-plugins + gcc/libc6-dev (a static pause
# binary): the Kubernetes lab node (packaging/lab); podman: `make image`.
# bpftrace: the reference counter the drop benchmark measures itself against.
# qemu-system-x86 + busybox-static + zstd: the VM lab (packaging/vm/run).
# clang-14 (BCC's own LLVM version): the VM lab's offsets-vs-headers self-check
# compiles the kernel's headers with the kernel's include paths.
PACKAGES=(
  python3 python3-venv python3-pip python3-bpfcc bpfcc-tools bpftool
  linux-headers-amd64 kmod iproute2 iptables nftables conntrack ethtool
  iputils-ping iputils-tracepath dnsmasq-base bind9-dnsutils
  rsyslog rsyslog-gnutls gnutls-bin openssl prometheus
  dpkg-dev fakeroot systemd procps debootstrap
  containerd containernetworking-plugins gcc libc6-dev podman bpftrace
  qemu-system-x86 busybox-static zstd clang-14
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing packages: ${missing[*]} (run as root to install them)"; exit 77
  fi
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps prometheus from pulling its exporters;
  # policy-rc.d stops packages from starting daemons (rsyslog, prometheus)
  # that tests start themselves with their own configuration.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d; trap - EXIT
else
  say "system packages: all present"
fi

# --- tracefs -------------------------------------------------------------------
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
  mkdir -p /sys/kernel/tracing
  mount -t tracefs nodev /sys/kernel/tracing && say "mounted tracefs on /sys/kernel/tracing"
fi

# --- kernel headers for BCC ----------------------------------------------------
# BCC compiles against /lib/modules/$(uname -r)/build. When the running kernel
# has no headers package we point that at the nearest installed version. This
# is safe only because netagent takes every struct offset from the running
# kernel's BTF, never from these headers; `netagent doctor` reports it.
release=$(uname -r)
moddir=/lib/modules/$release
if [[ -e $moddir/build/include/generated ]]; then
  target=$(readlink -f "$moddir/build")
  if [[ $target == *"$release"* ]]; then
    say "kernel headers: exact ($target)"
  else
    say "kernel headers: NO exact package for $release; using nearest $(basename "$target") (struct offsets come from BTF)"
  fi
elif [[ $(id -u) -eq 0 ]]; then
  nearest=$(packaging/nearest-headers.sh "$release" || true)
  if [[ -n $nearest ]]; then
    mkdir -p "$moddir"
    ln -sfn "$nearest" "$moddir/build"
    common=${nearest%-*}-common
    [[ -d $common ]] && ln -sfn "$common" "$moddir/source"
    say "kernel headers: NO exact package for $release; using nearest $(basename "$nearest")"
    say "  ($moddir/build -> $nearest; struct offsets come from BTF, not these headers)"
  else
    say "kernel headers: none installed for $release; BCC sensors will not compile"
  fi
fi

# --- Debian kernels for the VM lab ---------------------------------------------
# After the headers step, so the nearest headers chosen above for the running
# kernel stay what they were before these packages existed.
bash packaging/vm/install-kernels.sh

# --- python environment --------------------------------------------------------
# --system-site-packages so `import bcc` (from python3-bpfcc) works in the venv.
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.base_prefix == "/usr" else 1)'; then
  rm -rf "$VENV"
  "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
  say "created $VENV from $SYSTEM_PYTHON"
fi
stamp=$VENV/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  "$VENV/bin/pip" install -qq --disable-pip-version-check -e '.[test]'
  touch "$stamp"
  say "installed netagent and its Python dependencies into $VENV"
else
  say "python environment: up to date"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null && say "bcc: importable" || say "bcc: NOT importable in $VENV"
