#!/usr/bin/env bash
# Installs the Appium server and Appium's fake driver that tests/test_driver_appium.py runs against,
# pinned in package.json / package-lock.json, into tests/appium/node_modules. The fake driver is an
# ordinary npm dependency: with APPIUM_HOME set to this folder, `appium` finds it there.
# Node.js (^20.19, ^22.12 or >= 24, with npm) must already be on the machine.
# Safe to run again: it does nothing while the lock file is the one last installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install.sh: $tool not found; install Node.js (^20.19, ^22.12 or >= 24) with npm first" >&2
    exit 1
  fi
done
if ! node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  process.exit(major > 22 || (major === 22 && minor >= 12) || (major === 20 && minor >= 19) ? 0 : 1);
'; then
  echo "install.sh: Appium 3 needs Node.js ^20.19, ^22.12 or >= 24; this is $(node --version)" >&2
  exit 1
fi

stamp="$here/node_modules/.qualgent-lock.sha256"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$here/node_modules/.bin/appium" ]; then
  echo "install.sh: Appium and the fake driver already installed"
  exit 0
fi

(cd "$here" && npm install --no-audit --no-fund --loglevel=error)
# Appium records the drivers it finds in APPIUM_HOME on first use; do it now, and check the fake one is there.
if ! (cd "$here" && APPIUM_HOME="$here" node_modules/.bin/appium driver list --installed --json 2>/dev/null) | grep -q '"fake"'; then
  echo "install.sh: appium does not list the fake driver in $here" >&2
  exit 1
fi
# npm may have rewritten the lock file; stamp what is there now.
cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1 >"$stamp"
echo "install.sh: installed $(cd "$here" && node_modules/.bin/appium --version 2>/dev/null | tail -1) with the fake driver"
