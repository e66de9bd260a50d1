#!/usr/bin/env bash
# The web console's tests (tests/console): its pure modules in node, then the browser suite in
# headless Chromium (playwright-core) against the real binary and PostgreSQL.
#     scripts/console-tests.sh
# Needs DATABASE_URL and CHATLEDGER_TEST_SUPERUSER_URL (scripts/test.sh sets both) and runs
# CHATLEDGER_BIN, else the binary cargo builds. Without node 20+, npm or Chromium it says it
# skipped and why, and exits 0; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bin.sh
source scripts/cargo-bin.sh

skip() {
    echo "skipped: the console tests, because $*"
    exit 0
}

CHROMIUM="${CHATLEDGER_CHROMIUM:-/usr/bin/chromium}"
command -v node >/dev/null || skip "node is not installed (apt-get install nodejs)"
command -v npm >/dev/null || skip "npm is not installed (apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || skip "node $(node --version) is older than 20, which playwright-core needs"
[[ -x "$CHROMIUM" ]] || skip "there is no Chromium at $CHROMIUM (apt-get install chromium)"

: "${DATABASE_URL:?DATABASE_URL must be set (scripts/test.sh sets it)}"
: "${CHATLEDGER_TEST_SUPERUSER_URL:?CHATLEDGER_TEST_SUPERUSER_URL must be set (scripts/test.sh sets it)}"
CHATLEDGER_BIN="${CHATLEDGER_BIN:-$(cargo_bin chatledger)}"
export CHATLEDGER_BIN CHATLEDGER_CHROMIUM="$CHROMIUM"

# The lock file pins playwright-core; reinstall when it changed since the last install.
if [[ ! -f tests/console/node_modules/.package-lock.json ]] ||
    [[ tests/console/package-lock.json -nt tests/console/node_modules/.package-lock.json ]]; then
    (cd tests/console && npm ci --no-audit --no-fund --loglevel=error)
fi

cd tests/console
node --test --test-reporter=spec units.test.js console.test.js
