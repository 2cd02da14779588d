#!/usr/bin/env bash
# The real proof of the .deb: install it into a clean Debian 12 root made with
# debootstrap and run `netagent --version` and `netagent doctor` there.
#
#   packaging/deb-install-proof.sh [DEB]    (root; default: builds one with build-deb.sh)
#
# Uses the Debian mirror of this machine's apt sources. Nothing is started in
# the chroot (policy-rc.d refuses service starts); /proc, /sys and /dev are
# bind-mounted so doctor sees the real kernel, and everything is unmounted and
# removed on exit. Timings are printed per step (docs/daemon.md has figures).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'deb-proof: %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { say "needs root (debootstrap, chroot, mounts)"; exit 77; }
command -v debootstrap >/dev/null || { say "debootstrap missing: apt-get install debootstrap"; exit 69; }

DEB=${1:-}
if [[ -z $DEB ]]; then
  DEB=$(bash packaging/build-deb.sh dist | tail -1)
fi
DEB=$(readlink -f "$DEB")
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# downloaded .debs are kept here between runs (debootstrap's and the chroot's apt),
# so a second proof on the same node takes well under a minute
CACHE=${CACHE:-/var/cache/netagent-proof}
mkdir -p "$CACHE"
ROOT=$(mktemp -d /var/tmp/netagent-proof.XXXXXX)
MOUNTS=()
cleanup() {
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -R -l "${MOUNTS[i]}" 2>/dev/null || true; done
  # never delete through a mount that is still there (it would be the host's /dev, /sys or the cache)
  if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
    say "mounts remain under $ROOT; not removing it"; return
  fi
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t() { date +%s.%N; }
step() { local s=$1; shift; local start; start=$(t); "$@"; say "$s: $(printf '%.1f' "$(echo "$(t) - $start" | bc)")s"; }

step "debootstrap bookworm (minbase) from $MIRROR" \
  debootstrap --variant=minbase --cache-dir="$CACHE" bookworm "$ROOT" "$MIRROR" >/dev/null
mount --bind "$CACHE" "$ROOT/var/cache/apt/archives"; MOUNTS+=("$ROOT/var/cache/apt/archives")
for m in proc sys dev; do
  mount --rbind "/$m" "$ROOT/$m"; mount --make-rslave "$ROOT/$m"; MOUNTS+=("$ROOT/$m")
done
# BCC compiles against the running kernel's headers: give the chroot the host's
mkdir -p "$ROOT/lib/modules" "$ROOT/usr/src"
mount --rbind -o ro /lib/modules "$ROOT/lib/modules"; MOUNTS+=("$ROOT/lib/modules")
mount --rbind -o ro /usr/src "$ROOT/usr/src"; MOUNTS+=("$ROOT/usr/src")
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
# the chroot uses debootstrap's sources.list (same mirror); no second copy of it
cp "$DEB" "$ROOT/tmp/netagent.deb"
export DEBIAN_FRONTEND=noninteractive
step "apt-get update" chroot "$ROOT" apt-get update -qq -o APT::Sandbox::User=root
step "apt-get install ./netagent.deb (and its dependencies)" \
  chroot "$ROOT" apt-get install -y -qq --no-install-recommends -o APT::Sandbox::User=root \
  -o Binary::apt::APT::Keep-Downloaded-Packages=true /tmp/netagent.deb >/dev/null
say "installed: $(chroot "$ROOT" dpkg-query -W -f='${Package} ${Version} ${Status}' netagent)"
chroot "$ROOT" netagent --version
set +e
chroot "$ROOT" netagent doctor --output table
rc=$?
set -e
say "netagent doctor exit code in the clean root: $rc"
# doctor reports what cannot run with its documented codes; a traceback (70) is a failure
[[ $rc -ne 70 ]]
