#!/usr/bin/env bash
# End to end for the Node package clients/node (npm "credbroker"): installs
# its pinned dependencies (npm ci, cache in ~/.cache/credbroker/npm) and runs
# its node:test files, clients/node/test/*.test.js, against the real daemon
# ($CREDBROKER_BIN) with a file store and the Twilio fake
# (tests/support/twilio_fake.py, python3 standard library only). The tests
# start and stop those processes themselves, by PID.
#
#   CREDBROKER_BIN=path/to/credbroker bash tests/clients_node.sh
#
# CREDBROKER_BIN defaults to $CARGO_TARGET_DIR/debug/credbroker, else
# ~/.cache/credbroker/target/debug/credbroker (this script does not build it).
# Every secret the tests make or see is written to a 0600 file under a
# temporary directory; afterwards none may appear in the test output or the
# daemons' and fake's logs. Prints "N passed, M failed" last and exits
# non-zero on any failure; a skipped or cancelled test is a failure. Runs as
# root (the tests' configs set allow_root = true).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PKG="$ROOT/clients/node"

CACHE="$HOME/.cache/credbroker"
BIN="${CREDBROKER_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/credbroker}"

# shellcheck source=support/harness.sh
. "$ROOT/tests/support/harness.sh"
TMP=

cleanup() {
  local rc=$?
  if [ "$SUMMARY_DONE" = 0 ]; then
    echo "clients_node.sh: stopped early (exit $rc)" >&2
    FAILED=$((FAILED + 1)); summary
    rc=1
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || { echo "clients_node.sh: no credbroker binary at $BIN (build it, or set CREDBROKER_BIN)" >&2; exit 1; }
command -v node >/dev/null || { echo "clients_node.sh: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "clients_node.sh: npm is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "clients_node.sh: python3 (for the Twilio fake) is not installed" >&2; exit 1; }
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || { echo "clients_node.sh: node $(node --version) is older than 20" >&2; exit 1; }

# --- npm ci: the pinned packages of package-lock.json ----------------------------
export npm_config_cache="$CACHE/npm"
mkdir -p "$npm_config_cache"
echo "== npm ci in clients/node (node $(node --version), npm $(npm --version), cache $npm_config_cache)"
(cd "$PKG" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
TWILIO_NODE=$(cd "$PKG" && node -p 'require("twilio/package.json").version')
[ "$TWILIO_NODE" = 5.13.1 ] || { echo "clients_node.sh: twilio-node $TWILIO_NODE installed, not 5.13.1" >&2; exit 1; }

# --- node --test ---------------------------------------------------------------------
# Short paths: the tests' Unix sockets live under $TMP (108-byte limit).
TMP=$(mktemp -d /tmp/cbnode.XXXXXX)
chmod 700 "$TMP"
: > "$TMP/secrets"; chmod 600 "$TMP/secrets"
mkdir "$TMP/work"
TESTS=("$PKG"/test/*.test.js)
echo "== node --test: ${TESTS[*]#"$PKG/"}"
set +e
(cd "$PKG" && CREDBROKER_BIN="$BIN" CREDBROKER_TEST_TMP="$TMP/work" CREDBROKER_TEST_SECRETS="$TMP/secrets" \
  node --test --test-concurrency=1 --test-timeout=180000 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$TMP/tap" \
    "${TESTS[@]}") > "$TMP/out" 2>&1
NODE_RC=$?
set -e
# The spec report, without the secrets it must not hold (checked just below).
OUT_SAFE=$(grep -vFf "$TMP/secrets" "$TMP/out" 2>/dev/null || cat "$TMP/out")
[ -s "$TMP/secrets" ] || OUT_SAFE=$(cat "$TMP/out")
echo "$OUT_SAFE"

count() { sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$TMP/tap" | tail -1; }
N_PASS=$(count pass); N_FAIL=$(count fail); N_CANCELLED=$(count cancelled)
N_SKIPPED=$(count skipped); N_TODO=$(count todo)
if [ "$NODE_RC" = 0 ] && [ -n "$N_PASS" ] && [ "$N_PASS" -gt 0 ] && [ "${N_FAIL:-1}" = 0 ] \
   && [ "${N_CANCELLED:-1}" = 0 ] && [ "${N_SKIPPED:-1}" = 0 ] && [ "${N_TODO:-1}" = 0 ]; then
  pass "node --test: $N_PASS tests passed, none failed, cancelled or skipped"
else
  fail "node --test: exit $NODE_RC; pass ${N_PASS:-?}, fail ${N_FAIL:-?}, cancelled ${N_CANCELLED:-?}, skipped ${N_SKIPPED:-?}, todo ${N_TODO:-?}"
fi
# Each node test counts in the summary line.
if [ -n "$N_PASS" ]; then PASSED=$((PASSED + N_PASS)); fi
if [ -n "$N_FAIL" ]; then FAILED=$((FAILED + N_FAIL)); fi

# --- the package as npm pack makes it, installed into an empty app ----------------
# prepack checks the shipped proto against the repository's; the installed
# package must load its own copy (here it fails to connect, as it should).
mkdir "$TMP/app"
if (cd "$PKG" && npm pack --pack-destination "$TMP" --loglevel=error >/dev/null) \
   && (cd "$TMP/app" && npm init -y >/dev/null \
       && npm install --prefer-offline --no-audit --no-fund --loglevel=error "$TMP"/credbroker-*.tgz >/dev/null) \
   && OUT=$(cd "$TMP/app" && node -e '
        const cb = require("credbroker");
        const path = require.resolve("credbroker/proto/credbroker/v1/broker.proto");
        if (!path.includes("node_modules/credbroker/")) throw new Error("proto not from the package: " + path);
        new cb.Broker("/nonexistent/broker.sock", { deadlineMs: 2000 }).list().then(
          () => { throw new Error("listed without a daemon"); },
          (e) => { if (!(e instanceof cb.UnavailableError)) throw e; console.log("UNAVAILABLE as expected"); process.exit(0); });
      ' 2>&1) && grep -q "UNAVAILABLE as expected" <<<"$OUT"; then
  pass "npm pack, then npm install of the tarball into an empty app: require(\"credbroker\") loads its shipped proto"
else fail "npm pack, then npm install of the tarball into an empty app: require(\"credbroker\") loads its shipped proto" "${OUT:-npm pack or npm install failed}"; fi

# --- no secret anywhere ------------------------------------------------------------------
N_SECRETS=$(grep -c . "$TMP/secrets" || true)
if [ "$N_SECRETS" -ge 5 ]; then
  pass "the tests recorded the secrets they made and saw ($N_SECRETS)"
else fail "the tests recorded the secrets they made and saw (only ${N_SECRETS})"; fi
if grep -qFf "$TMP/secrets" "$TMP/out" "$TMP/tap"; then
  fail "no secret in the test output" "$(grep -cFf "$TMP/secrets" "$TMP/out") line(s) of the output hold one (not shown)"
else pass "no secret in the test output"; fi
LOGS=$(find "$TMP/work" -name '*.log' | sort)
if [ -z "$LOGS" ]; then
  fail "no secret in the daemons' and the fake's logs" "no log found under $TMP/work"
elif grep -lFf "$TMP/secrets" $LOGS > "$TMP/leaky"; then
  fail "no secret in the daemons' and the fake's logs" "$(sed "s|$TMP/work/||" "$TMP/leaky")"
else pass "no secret in the daemons' and the fake's logs ($(echo "$LOGS" | wc -l) files)"; fi

summary
[ "$FAILED" = 0 ]
