#!/usr/bin/env bash
# RustyVault (crates.io `rusty_vault`, binary `rvault`) as a real, Vault-API
# compatible server for credbroker's tests.
#
# Usage:
#   rustyvault.sh install          build/install rvault if missing; prints its path
#   rustyvault.sh start  DIR PORT  write DIR/config.hcl, start the server in the
#                                  background on 127.0.0.1:PORT (plain HTTP, file
#                                  storage in DIR/data), log to DIR/server.log,
#                                  pid to DIR/pid; wait until it answers
#   rustyvault.sh setup  DIR PORT  init (if needed) + unseal; keys in DIR (mode 600),
#                                  DIR/root_token; KV v1 at `kv`; policy `credbroker`
#                                  (see note below); AppRole at `approle`, role
#                                  `credbroker`; writes DIR/role_id, DIR/secret_id
#   rustyvault.sh unseal DIR PORT  unseal a restarted server on the same DIR
#   rustyvault.sh stop   DIR       stop the server whose pid is in DIR/pid
#
# Environment:
#   RV_TOKEN_TTL      token_ttl of role credbroker (default 30s)
#   RV_TOKEN_MAX_TTL  token_max_ttl of role credbroker (default 1h)
#   RV_VERSION        rusty_vault version to install (default 0.2.1, the newest
#                     on crates.io; builds with Rust 1.95 in ~10 min on 2 cores)
#   RV_LOG_LEVEL      server log level (default info: one line per request)
#   RV_START_TIMEOUT  seconds `start` waits for the server (default 30)
#
# Files written in DIR: config.hcl, data/, server.log, pid, addr, init.json,
# unseal_key, root_token, role_id, secret_id, credbroker-policy.hcl.
#
# Known limits of RustyVault 0.2.1 (checked against its source and by hand):
#   * sys/policy/* is not routed over HTTP (404, empty body) and the policy
#     handlers are no-ops; there is no ACL enforcement at all: any valid token
#     may read/write any path (even mount engines). `setup` still tries to write
#     the policy so a later version that supports it gets it, and tolerates 404.
#   * auth/token/renew-self does not exist (500 "Logical backend path not
#     supported."); auth/token/renew/<token> exists but is a no-op for AppRole
#     tokens (204, TTL unchanged).
#   * Errors come back as {"error":"..."} (Vault uses {"errors":[...]}); a read
#     of a missing KV path is 404 with an empty body.
#   * Responses lack request_id/accessor/..., which vaultrs 0.8 requires for
#     kv1::get, token::lookup_self and approle::login (ResponseParseError).
set -euo pipefail

RV_VERSION="${RV_VERSION:-0.2.1}"
RV_ROOT="${RV_ROOT:-$HOME/.cache/credbroker/rustyvault}"
RV_BIN="$RV_ROOT/bin/rvault"
# Debian packages the build (openssl-sys, aws-lc-sys, zstd-sys) and this
# script (curl, jq) need. All are in the stock Rust machine image.
APT_PACKAGES=(build-essential pkg-config libssl-dev curl jq)

die() { echo "rustyvault.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Install any of APT_PACKAGES that are missing (needs root, as on our machines).
ensure_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "rustyvault.sh: installing Debian packages: ${missing[*]}" >&2
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
    fi
}

cmd_install() {
    if [[ ! -x "$RV_BIN" ]]; then
        ensure_apt_packages
        echo "rustyvault.sh: building rusty_vault $RV_VERSION (about 10 minutes on 2 cores)" >&2
        # --locked: use the crate's own Cargo.lock (a fresh resolve may not build).
        cargo install --locked rusty_vault --version "$RV_VERSION" --root "$RV_ROOT" >&2
    fi
    echo "$RV_BIN"
}

# ---- helpers for a running server ----------------------------------------

need_dir_port() {
    [[ $# -eq 2 ]] || usage
    DIR=$1 PORT=$2
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "bad port: $PORT"
    ADDR="http://127.0.0.1:$PORT"
}

# api METHOD PATH [JSON]: call the HTTP API; sets HTTP_STATUS and RESP (body).
# Sends the token in DIR/root_token when that file exists.
api() {
    local method=$1 path=$2 body=${3-}
    local args=(-sS -o "$DIR/.resp" -w '%{http_code}' -X "$method" --max-time 10)
    if [[ -s "$DIR/root_token" ]]; then
        args+=(-H "X-Vault-Token: $(cat "$DIR/root_token")")
    fi
    if [[ -n "$body" ]]; then
        args+=(-H 'Content-Type: application/json' --data "$body")
    fi
    HTTP_STATUS=$(curl "${args[@]}" "$ADDR/v1/$path") || die "$method $path: curl failed"
    RESP=$(cat "$DIR/.resp")
    rm -f "$DIR/.resp"
}

# api_ok METHOD PATH [JSON]: like api, but fails unless the status is 2xx.
api_ok() {
    api "$@"
    [[ "$HTTP_STATUS" == 2* ]] || die "$1 $2: HTTP $HTTP_STATUS $RESP"
}

# write_secret FILE VALUE: write VALUE to FILE with mode 600.
write_secret() {
    (umask 077 && printf '%s\n' "$2" >"$1")
    chmod 600 "$1"
}

# is_running PID: true if PID is alive and not a zombie.
is_running() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# ---- subcommands -----------------------------------------------------------

cmd_start() {
    need_dir_port "$@"
    [[ -x "$RV_BIN" ]] || die "$RV_BIN missing: run '$0 install' first"
    mkdir -p "$DIR/data"
    DIR=$(cd "$DIR" && pwd)
    if [[ -s "$DIR/pid" ]] && is_running "$(cat "$DIR/pid")"; then
        die "a server is already running from $DIR (pid $(cat "$DIR/pid"))"
    fi
    # Config: one tcp listener without TLS, file storage. RustyVault has no
    # in-memory storage that its config accepts; a fresh DIR gives a fresh vault.
    cat >"$DIR/config.hcl" <<EOF
storage "file" {
  path = "$DIR/data"
}

listener "tcp" {
  address     = "127.0.0.1:$PORT"
  tls_disable = "true"
}

api_addr  = "$ADDR"
work_dir  = "$DIR"
log_level = "${RV_LOG_LEVEL:-info}"
EOF
    echo "$ADDR" >"$DIR/addr"
    # Refuse a port that something already listens on: the readiness probe
    # below would otherwise get its answer from that other process.
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        die "port $PORT on 127.0.0.1 is already in use"
    fi
    # Plain background child: $! is rvault's own pid. stdin from /dev/null and
    # stdout/stderr to the log so no caller's pipe is held open.
    nohup "$RV_BIN" server --config "$DIR/config.hcl" </dev/null >>"$DIR/server.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$DIR/pid"

    local deadline=$((SECONDS + ${RV_START_TIMEOUT:-30})) code
    while :; do
        if ! is_running "$pid"; then
            echo "rustyvault.sh: server exited during start; last log lines:" >&2
            tail -n 30 "$DIR/server.log" >&2
            rm -f "$DIR/pid"
            exit 1
        fi
        # sys/init answers 200 whether or not the vault is initialized/sealed.
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ADDR/v1/sys/init" || true)
        # A bind failure makes rvault exit at once; re-check that it is ours.
        if [[ "$code" == 200 ]] && sleep 0.2 && is_running "$pid"; then
            break
        fi
        if ((SECONDS >= deadline)); then
            echo "rustyvault.sh: server did not answer on $ADDR within ${RV_START_TIMEOUT:-30}s; last log lines:" >&2
            tail -n 30 "$DIR/server.log" >&2
            kill "$pid" 2>/dev/null || true
            rm -f "$DIR/pid"
            exit 1
        fi
        sleep 0.2
    done
    echo "rustyvault.sh: server pid $pid on $ADDR" >&2
}

cmd_unseal() {
    need_dir_port "$@"
    [[ -s "$DIR/unseal_key" ]] || die "$DIR/unseal_key missing: run setup first"
    # RustyVault 0.2.1, just restarted, sometimes fails an unseal with 500
    # ("delay_timer error ... DisInitTime") while it re-schedules the expiry
    # of tokens about to lapse, or answers 200 and stays sealed. Retry until
    # seal-status says unsealed.
    local tries=0
    while :; do
        api PUT sys/unseal "{\"key\":\"$(cat "$DIR/unseal_key")\"}"
        case "$HTTP_STATUS" in
            200|500) ;;
            400) [[ "$RESP" == *'is unsealed'* ]] || die "unseal: HTTP 400 $RESP" ;; # already unsealed
            *) die "unseal: HTTP $HTTP_STATUS $RESP" ;;
        esac
        api GET sys/seal-status
        if [[ "$HTTP_STATUS" == 200 && $(jq -r .sealed <<<"$RESP") == false ]]; then
            return 0
        fi
        tries=$((tries + 1))
        [[ $tries -lt 40 ]] || die "still sealed after $tries attempts: $RESP"
        sleep 0.5
    done
}

cmd_setup() {
    need_dir_port "$@"
    # 1. init (1 key share, threshold 1) unless already done.
    api_ok GET sys/init
    if [[ $(jq -r .initialized <<<"$RESP") != true ]]; then
        rm -f "$DIR/root_token" # a stale token must not go with the init call
        api_ok PUT sys/init '{"secret_shares":1,"secret_threshold":1}'
        write_secret "$DIR/init.json" "$RESP"
        write_secret "$DIR/unseal_key" "$(jq -r '.keys[0]' <<<"$RESP")"
        write_secret "$DIR/root_token" "$(jq -r .root_token <<<"$RESP")"
    fi
    [[ -s "$DIR/root_token" ]] || die "vault in $DIR is initialized but $DIR/root_token is missing"

    # 2. unseal (no-op when already unsealed).
    cmd_unseal "$DIR" "$PORT"

    # 3. KV v1 at kv/ (RustyVault's "kv" engine is v1 only).
    api_ok GET sys/mounts
    if [[ $(jq 'has("kv/")' <<<"$RESP") != true ]]; then
        api_ok POST sys/mounts/kv '{"type":"kv","description":"credbroker tests, KV v1"}'
    fi

    # 4. Policy credbroker. RustyVault 0.2.1 answers 404 (not routed) and would
    #    not enforce it anyway; kept for versions that do.
    cat >"$DIR/credbroker-policy.hcl" <<'EOF'
path "kv/*" {
  capabilities = ["create", "read", "update", "list"]
}
path "kv/data/*" {
  capabilities = ["create", "read", "update", "list"]
}
EOF
    api PUT sys/policy/credbroker "$(jq -Rs '{policy: .}' <"$DIR/credbroker-policy.hcl")"
    case "$HTTP_STATUS" in
        2*) ;;
        404) echo "rustyvault.sh: note: this RustyVault has no sys/policy endpoint (404); no ACL is enforced" >&2 ;;
        *) die "PUT sys/policy/credbroker: HTTP $HTTP_STATUS $RESP" ;;
    esac

    # 5. AppRole at approle/ and role credbroker (role write is an upsert).
    api_ok GET sys/auth
    if [[ $(jq 'has("approle/")' <<<"$RESP") != true ]]; then
        api_ok POST sys/auth/approle '{"type":"approle"}'
    fi
    api_ok POST auth/approle/role/credbroker "$(jq -nc \
        --arg ttl "${RV_TOKEN_TTL:-30s}" --arg max "${RV_TOKEN_MAX_TTL:-1h}" \
        '{token_policies: ["credbroker"], token_ttl: $ttl, token_max_ttl: $max}')"

    # 6. role_id and a fresh secret_id (no TTL, unlimited uses).
    api_ok GET auth/approle/role/credbroker/role-id
    jq -r .data.role_id <<<"$RESP" >"$DIR/role_id"
    api_ok POST auth/approle/role/credbroker/secret-id '{}'
    write_secret "$DIR/secret_id" "$(jq -r .data.secret_id <<<"$RESP")"
    echo "rustyvault.sh: set up $ADDR (root token, role_id, secret_id in $DIR)" >&2
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 pid i
    [[ -s "$dir/pid" ]] || { echo "rustyvault.sh: no $dir/pid; nothing to stop" >&2; return 0; }
    pid=$(cat "$dir/pid")
    # Only signal the pid if it is still our rvault (pids get reused).
    if is_running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'rvault server'; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do # up to 10 s for a graceful stop
            is_running "$pid" || break
            sleep 0.1
        done
        if is_running "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                is_running "$pid" || break
                sleep 0.1
            done
        fi
        is_running "$pid" && die "pid $pid did not exit"
    fi
    rm -f "$dir/pid"
}

case "${1-}" in
    install) shift; [[ $# -eq 0 ]] || usage; cmd_install ;;
    start) shift; cmd_start "$@" ;;
    setup) shift; cmd_setup "$@" ;;
    unseal) shift; cmd_unseal "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
