#!/usr/bin/env bash
# `make image`: the netagent container image, built offline from Debian packages.
#
#   packaging/image/build-image.sh [OUTDIR]     (root; prints the image name last)
#
# No base image is pulled (none can be here): a Debian 12 root is made with
# debootstrap, the .deb of `make deb` is installed into it with dpkg, and
# `podman import` turns the tree into an OCI image localhost/netagent:VERSION,
# also saved as OUTDIR/netagent-image_VERSION.oci.tar (an OCI archive for
# `ctr -n k8s.io images import` or a registry push with skopeo).
#
# The Debian root with netagent's dependencies is cached as a tarball under
# $CACHE, keyed by the .deb's Depends and the mirror; debootstrap's and apt's
# downloads are shared with packaging/deb-install-proof.sh. A warm build only
# unpacks that tarball, installs the .deb and imports.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'image: %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { say "needs root (debootstrap, chroot)"; exit 77; }
for tool in debootstrap podman dpkg-deb; do
  command -v $tool >/dev/null || { say "$tool missing: run make setup (packaging/setup-node.sh)"; exit 69; }
done

OUT=${1:-dist}
mkdir -p "$OUT"
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DEB_CACHE=${DEB_CACHE:-/var/cache/netagent-proof}   # shared with deb-install-proof.sh
CACHE=${CACHE:-/var/cache/netagent-image}
mkdir -p "$DEB_CACHE" "$CACHE"

t0=$(date +%s)
# build-deb.sh rebuilds the package only when its sources changed (its cache);
# DEB=path uses a given one instead.
if [[ -z ${DEB:-} ]]; then
  DEB=$(bash packaging/build-deb.sh "$OUT" | tail -1)
fi
VERSION=$(dpkg-deb -f "$DEB" Version)
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
say "package $DEB ($(( $(date +%s) - t0 ))s)"
# the image runs the agent only: its hard dependencies, nothing recommended
# (kernel headers come from the node through the /usr/src and /lib/modules mounts)
BASE_PACKAGES=$(printf '%s' "$DEPENDS" | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g' | sort -u | paste -sd,)
KEY=$(printf '%s %s %s' "$SUITE" "$MIRROR" "$BASE_PACKAGES" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$SUITE-$KEY.tar

ROOT=$(mktemp -d /var/tmp/netagent-image.XXXXXX)
MOUNTS=()
cleanup() {
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
  if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then say "mounts remain under $ROOT; not removing it"; return; fi
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ! -f $BASE ]]; then
  t=$(date +%s)
  say "making the Debian root: debootstrap $SUITE (minbase) + $BASE_PACKAGES from $MIRROR"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$DEB_CACHE" \
    "$SUITE" "$ROOT" "$MIRROR" >/dev/null
  chroot "$ROOT" apt-get clean
  tar -C "$ROOT" --numeric-owner -cf "$BASE.tmp" .
  mv "$BASE.tmp" "$BASE"
  say "cached the Debian root as $BASE ($(( $(date +%s) - t ))s)"
else
  tar -C "$ROOT" --numeric-owner -xf "$BASE"
  say "Debian root from the cache ($BASE)"
fi

# dpkg in the chroot: no service may start (policy-rc.d), no network needed
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc")
cp "$DEB" "$ROOT/tmp/netagent.deb"
chroot "$ROOT" dpkg -i /tmp/netagent.deb >/dev/null
umount "$ROOT/proc"; MOUNTS=()
# what a container needs none of: package lists, docs, the policy file, the .deb
rm -rf "$ROOT/tmp/netagent.deb" "$ROOT/usr/sbin/policy-rc.d" "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log \
  "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/info/*
# keep netagent's own doc (the unit points at it)
mkdir -p "$ROOT/usr/share/doc/netagent"
dpkg-deb --fsys-tarfile "$DEB" | tar -C "$ROOT" -x ./usr/share/doc/netagent

IMAGE=localhost/netagent:$VERSION
t=$(date +%s)
tar -C "$ROOT" --numeric-owner -c . | podman import \
  --change 'ENTRYPOINT ["/usr/bin/netagent"]' \
  --change 'CMD ["run", "--config", "/etc/netagent/netagent.toml"]' \
  --change "LABEL org.opencontainers.image.title=netagent org.opencontainers.image.version=$VERSION" \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
  - "$IMAGE" >/dev/null
say "imported $IMAGE ($(( $(date +%s) - t ))s)"
if [[ ${SAVE:-1} == 1 ]]; then
  ARCHIVE=$OUT/netagent-image_$VERSION.oci.tar
  rm -f "$ARCHIVE"
  podman save --format oci-archive -o "$ARCHIVE" "$IMAGE" 2>/dev/null
  say "saved $ARCHIVE ($(du -m "$ARCHIVE" | cut -f1) MiB)"
fi
say "done in $(( $(date +%s) - t0 ))s"
echo "$IMAGE"
