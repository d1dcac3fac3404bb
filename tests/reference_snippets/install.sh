#!/usr/bin/env bash
# Installs what tests/test_reference_snippets.py needs beyond the Python venv, idempotently:
#   - the Node packages the reference's Node snippets require (node-fetch v2, form-data, dotenv),
#     into tests/reference_snippets/node/node_modules from the pinned package.json / package-lock.json;
#   - a Go toolchain (Debian's golang-go) when `go` is missing and we are root with apt-get.
# Node itself (with npm) must already be on the machine. Safe to run again: it skips what is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: npm not found; install Node.js (>= 18) with npm first" >&2
  exit 1
fi
node_dir="$here/node"
stamp="$node_dir/node_modules/.qualgent-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$node_dir/package.json" ] \
  && { [ ! -f "$node_dir/package-lock.json" ] || [ "$stamp" -nt "$node_dir/package-lock.json" ]; }; then
  echo "install.sh: Node packages already installed"
else
  # `npm ci` when a lock file is there (reproducible), else `npm install` (which writes one).
  if [ -f "$node_dir/package-lock.json" ]; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error)
  fi
  touch "$stamp"
fi

if command -v go >/dev/null 2>&1; then
  echo "install.sh: $(go version) already installed"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q golang-go; then
    apt-get update -q
    apt-get install -y -q golang-go
  fi
  echo "install.sh: installed $(go version)"
else
  echo "install.sh: go not found and cannot apt-get install it (need root and apt-get); install Go >= 1.19" >&2
  exit 1
fi
