#!/usr/bin/env bash
# Installs PostgreSQL 15 and builds pgvector for it on Debian 12 (bookworm).
#
# Bookworm ships no pgvector package for PostgreSQL 15, but Debian trixie has
# its source package: we add a deb-src-only trixie entry (binaries stay from
# bookworm), fetch the source and build it against bookworm's server headers.
# Safe to run again: every step is skipped when its result is already there.
set -euo pipefail

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config
SRC_LIST=/etc/apt/sources.list.d/trixie-src.sources
WORK_DIR=${PGVECTOR_BUILD_DIR:-/tmp/pgvector-build}

if [ "$(id -u)" -ne 0 ]; then
  echo "install-pgvector: run as root (apt-get and make install need it)" >&2
  exit 1
fi

need_pkgs=()
for p in postgresql-${PG_MAJOR} postgresql-server-dev-${PG_MAJOR} dpkg-dev build-essential; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
apt_updated=0
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "install-pgvector: installing ${need_pkgs[*]}"
  apt-get update -q
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}"
fi

ext_dir="$("$PG_CONFIG" --sharedir)/extension"
if [ -f "$ext_dir/vector.control" ]; then
  echo "install-pgvector: vector.control already in $ext_dir, nothing to do"
  exit 0
fi

if [ ! -f "$SRC_LIST" ]; then
  cat > "$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi
if [ "$apt_updated" -eq 0 ]; then
  apt-get update -q
fi

rm -rf "$WORK_DIR"
mkdir -p "$WORK_DIR"
cd "$WORK_DIR"
# --download-only + dpkg-source -x avoids needing the source's build-deps
# (they name trixie's PostgreSQL); we build against PostgreSQL 15 by hand.
apt-get source --download-only pgvector/trixie
dsc="$(ls ./pgvector_*.dsc | head -n1)"
dpkg-source -x "$dsc" src
cd src
make -j"$(nproc)" PG_CONFIG="$PG_CONFIG"
make install PG_CONFIG="$PG_CONFIG"
test -f "$ext_dir/vector.control"
echo "install-pgvector: installed $(grep default_version "$ext_dir/vector.control")"
