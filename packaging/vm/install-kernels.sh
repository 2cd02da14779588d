#!/usr/bin/env bash
# Install Debian 12's own kernels for the VM lab (packaging/vm/run): for each
# series the newest linux-image-<release>-amd64 and the matching
# linux-headers-<release>-amd64 (BCC in the guest compiles against
# /lib/modules/<release>/build). Idempotent: a series with an installed
# image+headers pair is left alone. Called by packaging/setup-node.sh.
#
# These kernels are only ever booted by qemu. This machine (and CI's) starts
# its own kernel from outside, without a bootloader, so installing them changes
# nothing about how it boots. On a machine with GRUB they would become menu
# entries, the newest first: there we install nothing unless asked to with
# NETAGENT_VM_KERNELS=install.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }
trap 'say "VM kernels: failed (exit $?) at install-kernels.sh line $LINENO: $BASH_COMMAND"' ERR

# series -> the Debian meta-package whose dependency names the newest release
declare -A META=([6.1]=linux-image-amd64 [6.12]=linux-image-6.12-amd64)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Newest release of series $1 whose image and headers are both installed; prints
# nothing when there is none. On a fresh machine no linux-image-* package exists
# at all: dpkg-query and grep then exit 1, which under pipefail must not end the
# script (it did, silently, before anything was installed).
installed_release() {
  local series=$1 re
  re="^linux-image-${series//./\\.}[.-][^ ]*-amd64$"
  { dpkg-query -W -f='${Package}\n' 'linux-image-*-amd64' 2>/dev/null || true; } \
    | { grep -E "$re" || true; } | { grep -vE -- '-(cloud|rt)-amd64$' || true; } \
    | sed 's/^linux-image-//' | sort -V \
    | while read -r rel; do
        if installed "linux-image-$rel" && installed "linux-headers-$rel"; then echo "$rel"; fi
      done | tail -n1
}

if [[ -e /boot/grub/grub.cfg || -x /usr/sbin/update-grub ]] && [[ ${NETAGENT_VM_KERNELS:-} != install ]]; then
  say "VM kernels: not installed, this machine boots with GRUB (NETAGENT_VM_KERNELS=install to install anyway)"
  exit 0
fi

want=()
for series in 6.1 6.12; do
  rel=$(installed_release "$series")
  if [[ -n $rel ]]; then
    say "VM kernel $series: $rel (image and headers installed)"
    continue
  fi
  if [[ $(id -u) -ne 0 ]]; then
    say "VM kernel $series: not installed (run as root to install it)"; continue
  fi
  rel=$(apt-cache depends "${META[$series]}" 2>/dev/null \
        | sed -nE "s/^ *Depends: linux-image-(${series//./\\.}[.-][^ ]*-amd64)$/\1/p" | sort -V | tail -n1)
  if [[ -z $rel ]]; then
    say "VM kernel $series: no package found (${META[$series]} names none; apt-get update?)"; continue
  fi
  want+=("linux-image-$rel" "linux-headers-$rel")
done

if ((${#want[@]})); then
  say "installing VM kernels: ${want[*]}"
  # initramfs-tools comes along (the image depends on it) and builds an initrd
  # in /boot for each; virtme-ng ignores those and builds its own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${want[@]}" >/dev/null
fi
