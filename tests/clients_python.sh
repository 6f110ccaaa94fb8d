#!/usr/bin/env bash
# The Python package clients/python (importable as `credbroker`) end to end:
# its pytest suite (clients/python/tests/) against the real daemon on a Unix
# socket with a file store, and the Twilio fake (tests/support/twilio_fake.py)
# standing in for api/verify/oauth.twilio.com behind twilio-python 9.13.0.
#
#   CREDBROKER_BIN=path/to/credbroker bash tests/clients_python.sh
#
# CREDBROKER_BIN defaults to $CARGO_TARGET_DIR/debug/credbroker, else
# ~/.cache/credbroker/target/debug/credbroker (this script does not build it).
# Python packages, pinned, go into ~/.cache/credbroker/venv-clients; the
# package is installed from clients/python with pip (hatchling from PyPI).
# The tests start the fake and the daemon themselves and stop them by PID.
# Afterwards every secret value of the run (written by the tests to a 0600
# file, never printed) is looked for in the test output, the daemon's log (at
# debug), the fake's log and the output of `credbroker rotate`.
# Prints "N passed, M failed" last and exits non-zero on any failure; a
# skipped test counts as a failure. Runs as root (allow_root = true).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE="$HOME/.cache/credbroker"
VENV="$CACHE/venv-clients"
BIN="${CREDBROKER_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/credbroker}"
REQS="$ROOT/examples/python/requirements.txt" # grpcio, grpcio-tools, protobuf, pinned
PINS=(twilio==9.13.0 PyJWT==2.15.1 pytest==9.2.0)

# shellcheck source=support/harness.sh
. "$ROOT/tests/support/harness.sh"
PYTEST_PID=
TMP=



cleanup() {
  local rc=$? pid
  stop_pid "$PYTEST_PID"
  # What the tests started (daemon, fake), if pytest died before stopping them.
  if [ -n "$TMP" ] && [ -f "$TMP/pids" ]; then
    while read -r pid; do
      if grep -qaE 'credbroker|twilio_fake' "/proc/$pid/cmdline" 2>/dev/null; then stop_pid "$pid"; fi
    done < "$TMP/pids"
  fi
  if [ "$SUMMARY_DONE" = 0 ]; then
    echo "clients_python.sh: stopped early (exit $rc)" >&2
    FAILED=$((FAILED + 1)); summary
    rc=1
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || { echo "clients_python.sh: no credbroker binary at $BIN (build it, or set CREDBROKER_BIN)" >&2; exit 1; }

# --- Python packages, pinned; then the package itself from clients/python -----
ensure_pins "$VENV" "$REQS" "${PINS[@]}"
PY="$VENV/bin/python"
echo "== pip install clients/python into $VENV"
# --no-deps: the dependencies are the pins above; --force-reinstall: this tree's code.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$ROOT/clients/python"

TMP=$(mktemp -d /tmp/credbroker-clients-py.XXXXXX)
OUT=$(cd /tmp && "$PY" -c 'import credbroker, twilio; print(credbroker.__file__); print(twilio.__version__)' 2>&1) || true
if grep -q "site-packages/credbroker/__init__.py" <<<"$OUT" && grep -qx "9.13.0" <<<"$OUT"; then
  pass "pip-installed package imports as credbroker (twilio 9.13.0 beside it)"
else fail "pip-installed package imports as credbroker (twilio 9.13.0 beside it)" "$OUT"; fi

# --- the pytest suite -------------------------------------------------------------
echo "== pytest clients/python/tests against $BIN"
touch "$TMP/secrets" "$TMP/pids"
chmod 600 "$TMP/secrets"
set +e
(
  cd "$ROOT/clients/python"
  # --assert=plain and --tb=short: a failed assert shows its message, never
  # the values compared (which may be secrets).
  exec env CREDBROKER_BIN="$BIN" CREDBROKER_TEST_SECRETS_FILE="$TMP/secrets" \
    CREDBROKER_TEST_PIDS_FILE="$TMP/pids" CREDBROKER_TEST_KEEP_LOGS="$TMP" PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -p no:cacheprovider --assert=plain --tb=short -q -rfEs \
    --junitxml="$TMP/junit.xml" tests
) > "$TMP/pytest.out" 2>&1 &
PYTEST_PID=$!
wait "$PYTEST_PID"
PYTEST_RC=$?
PYTEST_PID=
set -e

# Print the output with any line holding a secret left out (the check below
# fails the run if there is one).
if [ -s "$TMP/secrets" ]; then
  grep -vF -f "$TMP/secrets" "$TMP/pytest.out" | sed 's/^/  pytest | /' || true
else
  sed 's/^/  pytest | /' "$TMP/pytest.out"
fi

# One line per test, from the JUnit report.
if [ -s "$TMP/junit.xml" ]; then
  TESTS=0
  while IFS=$'\t' read -r outcome name; do
    TESTS=$((TESTS + 1))
    case "$outcome" in
      passed) pass "pytest $name" ;;
      skipped) fail "pytest $name (skipped: a test that cannot run fails the run)" ;;
      *) fail "pytest $name ($outcome)" ;;
    esac
  done < <("$PY" - "$TMP/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).iter("testcase"):
    outcome = "passed"
    for child in case:
        if child.tag in ("failure", "error", "skipped"):
            outcome = child.tag
    name = case.get("classname", "").rsplit(".", 1)[-1] + "::" + case.get("name", "")
    print(f"{outcome}\t{name}")
EOF
  )
  if [ "$PYTEST_RC" = 0 ] && [ "$TESTS" -ge 20 ]; then
    pass "pytest exit 0 with $TESTS tests"
  else fail "pytest exit 0 with at least 20 tests" "exit $PYTEST_RC, $TESTS tests"; fi
else
  fail "pytest wrote its report" "exit $PYTEST_RC"
fi

# --- no secret anywhere ---------------------------------------------------------------
N_SECRETS=$(wc -l < "$TMP/secrets")
if [ "$N_SECRETS" -ge 15 ]; then
  pass "the tests listed the run's secrets ($N_SECRETS values, rotated ones included)"
else fail "the tests listed the run's secrets (at least 15 values)" "$N_SECRETS listed"; fi
# Control: the scan finds a listed secret where there is one.
if [ "$N_SECRETS" -gt 0 ] && { echo "x"; tail -1 "$TMP/secrets"; } | grep -qF -f "$TMP/secrets"; then
  pass "control: the secret scan finds a listed value"
else fail "control: the secret scan finds a listed value"; fi
for f in pytest.out daemon.log twilio-fake.log rotate.log; do
  if [ ! -s "$TMP/$f" ]; then
    fail "no secret in $f" "$f is missing or empty"
  elif [ "$N_SECRETS" -gt 0 ] && grep -qF -f "$TMP/secrets" "$TMP/$f"; then
    fail "no secret in $f" "$(grep -cF -f "$TMP/secrets" "$TMP/$f") line(s) hold a secret value (not shown)"
  else
    pass "no secret in $f"
  fi
done

summary
[ "$FAILED" = 0 ]
