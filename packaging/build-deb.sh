#!/usr/bin/env bash
# Build dist/netagent_<version>_<arch>.deb: the netagent package with its Python
# dependencies bundled under /usr/lib/netagent/python (Debian 12 lacks some,
# e.g. orjson, and has older ones than we test with), the systemd unit, the
# default configuration and the spool directory. BCC is a dependency on
# python3-bpfcc, never bundled: it must match the distribution's libbcc.
#
#   packaging/build-deb.sh [OUTDIR]     (`make deb` runs it after `make setup`)
#
# Needs: dpkg-deb, the project's .venv (its pip resolves the dependencies from
# PyPI or pip's cache). No root needed: --root-owner-group sets ownership.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-dist}
VENV=${VENV:-.venv}
PY=$VENV/bin/python
say() { printf 'build-deb: %s\n' "$*" >&2; }

[[ -x $PY ]] || { say "no $PY: run 'make setup' first"; exit 69; }
command -v dpkg-deb >/dev/null || { say "dpkg-deb missing: apt-get install dpkg-dev"; exit 69; }

VERSION=$("$PY" -c 'import netagent; print(netagent.__version__)')
ARCH=$(dpkg --print-architecture)
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [[ $PYVER != 3.11 ]]; then
  # the bundled compiled wheels (orjson, psutil) are for the target's python3
  say "the venv runs Python $PYVER; the package targets Debian 12's python3 3.11"; exit 69
fi

# A package is rebuilt only when what goes into it changed: built packages are
# kept under a hash of those files' contents (pip resolving and bundling the
# dependencies takes ~100 s here, and `make test` needs the package three
# times). NETAGENT_DEB_CACHE=DIR moves the cache; an unwritable one is skipped.
DEB_NAME=netagent_${VERSION}_${ARCH}.deb
CACHE_DIR=${NETAGENT_DEB_CACHE:-/var/cache/netagent-deb}
SRC_KEY=$( (printf '%s %s\n' "$PYVER" "$ARCH"
            find agent probes systemd packaging/debian packaging/build-deb.sh pyproject.toml README.md docs \
              -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
          | sha256sum | cut -c1-16)
CACHED=$CACHE_DIR/$SRC_KEY/$DEB_NAME
if [[ -f $CACHED ]]; then
  mkdir -p "$OUT"
  cp "$CACHED" "$OUT/$DEB_NAME"
  say "unchanged sources ($SRC_KEY): $OUT/$DEB_NAME from $CACHED"
  echo "$OUT/$DEB_NAME"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/netagent-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
LIB=$ROOT/usr/lib/netagent
mkdir -p "$LIB/python" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/etc/netagent" "$ROOT/etc/logrotate.d" \
         "$ROOT/var/lib/netagent/spool" "$ROOT/var/log/netagent" "$ROOT/usr/share/doc/netagent" "$ROOT/DEBIAN"

say "bundling netagent $VERSION and its dependencies (pip --target)"
# --no-compile: byte-compiled below with the installed path, so tracebacks name
# /usr/lib/netagent, not this temporary directory. Not editable: a real copy.
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --no-warn-script-location \
  --target "$LIB/python" . >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; say "pip failed"; exit 69; }
rm -rf "$LIB/python/bin"  # console scripts of the deps point at the build venv
find "$LIB/python" -name '__pycache__' -prune -exec rm -rf {} +
"$PY" -m pip freeze --path "$LIB/python" > "$LIB/requirements.txt"
if [[ -e $LIB/python/bcc ]]; then
  say "a 'bcc' package got bundled (the unrelated PyPI one?): refusing"; exit 70
fi
/usr/bin/python3 -m compileall -q -j 0 -d /usr/lib/netagent/python "$LIB/python" >/dev/null \
  || { say "byte-compiling failed"; exit 70; }

install -m 0755 packaging/debian/launcher "$ROOT/usr/bin/netagent"
install -m 0644 systemd/netagent.service "$ROOT/lib/systemd/system/netagent.service"
install -m 0640 systemd/netagent.toml "$ROOT/etc/netagent/netagent.toml"
install -m 0644 packaging/debian/logrotate "$ROOT/etc/logrotate.d/netagent"
install -m 0644 packaging/debian/copyright "$ROOT/usr/share/doc/netagent/copyright"
for doc in README.md docs/*.md; do
  [[ -f $doc ]] && install -m 0644 "$doc" "$ROOT/usr/share/doc/netagent/$(basename "$doc")"
done
chmod 0750 "$ROOT/etc/netagent" "$ROOT/var/lib/netagent" "$ROOT/var/lib/netagent/spool" "$ROOT/var/log/netagent"

install -m 0644 packaging/debian/conffiles "$ROOT/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$ROOT/DEBIAN/$script"
done
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$SIZE/" \
  packaging/debian/control.in > "$ROOT/DEBIAN/control"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' md5sum) \
  > "$ROOT/DEBIAN/md5sums"

mkdir -p "$OUT"
DEB=$OUT/$DEB_NAME
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
say "built $DEB ($(du -h "$DEB" | cut -f1), installed size ${SIZE} KiB)"
# keep only this sources' package; a cache that can't be written is no error
if mkdir -p "$CACHE_DIR/$SRC_KEY.tmp" 2>/dev/null && cp "$DEB" "$CACHE_DIR/$SRC_KEY.tmp/$DEB_NAME" 2>/dev/null; then
  find "$CACHE_DIR" -mindepth 1 -maxdepth 1 ! -name "$SRC_KEY.tmp" -exec rm -rf {} +
  mv "$CACHE_DIR/$SRC_KEY.tmp" "$CACHE_DIR/$SRC_KEY"
else
  rm -rf "$CACHE_DIR/$SRC_KEY.tmp" 2>/dev/null || true
fi
echo "$DEB"
