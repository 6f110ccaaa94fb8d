#!/usr/bin/env bash
# Stoplight Prism as a spec-checking proxy in front of tests/support/twilio_fake.py:
# every request and response that crosses it is validated against Twilio's own
# OpenAPI documents, and with --errors a response that breaks the spec is
# replaced by a 500 problem+json (see "How a violation looks" below).
#
# Usage:
#   prism.sh install
#       idempotent: installs @stoplight/prism-cli under $PRISM_ROOT (npm --prefix)
#       and extracts Twilio's specs (from the npm package @twilio-alpha/mcp) into
#       $SPEC_DIR; prints PRISM=<bin> and SPECS=<dir>
#   prism.sh start SPEC_NAME UPSTREAM_URL PORT LOGFILE
#       starts `prism proxy --errors` for SPEC_NAME on 127.0.0.1:PORT forwarding
#       to UPSTREAM_URL (e.g. http://127.0.0.1:8080), in the background, output
#       to LOGFILE; prints PID=<pid>; waits (bounded) until it answers, else
#       kills it and fails with the tail of LOGFILE
#   prism.sh stop PID
#       stops a proxy that `start` started (SIGTERM, then SIGKILL)
#   prism.sh spec SPEC_NAME
#       prints the path of a spec file
#
# SPEC_NAME: api_v2010 | iam_v1 | accounts_v1 | verify_v2 | oauth_v1 |
# oauth_v2_derived (file twilio_<name>.json), or the path of any OpenAPI
# file. Which one serves what:
#   api_v2010    /2010-04-01/...            (twilio.api_base)
#   iam_v1       /v1/Keys...                (twilio.iam_base)
#   accounts_v1  /v1/AuthTokens/...         (twilio.accounts_base)
#   verify_v2    /v2/Services/.../Verifications
#   oauth_v1     /v1/token  (GrantType, ClientId, ClientSecret; 201)
#   oauth_v2_derived  /v2/token  (twilio.oauth_base: what the daemon and
#                twilio-python call; see PATCH_ID below)
# A proxy answers only the paths of its own spec (any other path: 404
# problem+json NO_PATH_MATCHED_ERROR, not forwarded), so each base URL needs
# its own proxy; all of them may forward to the same fake.
#
# How a violation looks (Prism 5.14.2, proxy mode, --errors):
#   * response breaks the spec (2xx status not in the spec, wrong media type,
#     a body field of the wrong type/pattern/enum/format): status 500,
#     content-type application/problem+json, header sl-violations (JSON array),
#     body {"type": "https://stoplight.io/prism/errors#VIOLATIONS",
#           "title": "Request/Response not valid", "status": 500, "detail": "",
#           "validation": [{"location": ["response","body",...], "severity":
#           "Error", "code": "...", "message": "..."}]}
#   * request breaks the spec: NOT forwarded; status 422, problem+json,
#     type ...#UNPROCESSABLE_ENTITY, "validation": [...] (location
#     ["body"|"query"|"path", ...]); a missing or non-Basic Authorization
#     header: status 401, type ...#UNAUTHORIZED, WWW-Authenticate: Basic realm="*"
#   * a path or method not in the spec: 404 ...#NO_PATH_MATCHED_ERROR /
#     405 ...#NO_METHOD_MATCHED_ERROR
#   * a non-2xx status the spec does not define (Twilio's 400/401/404/429...):
#     passed through unchanged, with an sl-violations header holding a
#     Warning ("Unable to match the returned status code ..."): not an error.
#   So "no violation" = the answer is not application/problem+json with a
#   type under https://stoplight.io/prism/errors# (the fake never sends
#   problem+json), and any sl-violations header holds only Warnings.
#   In LOGFILE each refused exchange is one line "Request terminated with
#   error: https://stoplight.io/prism/errors#VIOLATIONS" (or #UNPROCESSABLE_ENTITY,
#   #UNAUTHORIZED, ...), so a test can also assert that no such line exists
#   at its end. (`start`'s readiness probe, GET /, leaves one harmless
#   #NO_PATH_MATCHED_ERROR line.) At the default level the log holds no
#   header or body, so no credential.
#
# Environment:
#   CREDBROKER_CACHE      default $HOME/.cache/credbroker
#   PRISM_VERSION         default 5.14.2
#   PRISM_ROOT            default $CREDBROKER_CACHE/prism
#   TWILIO_OAI_PACKAGE    default @twilio-alpha/mcp@0.7.0 (ships twilio-oai specs)
#   SPEC_DIR              default $CREDBROKER_CACHE/twilio-oai
#   PRISM_START_TIMEOUT   seconds `start` waits (default 90: the 2010 spec is 2 MB)
#   PRISM_LOG_LEVEL       prism -v level (default info; debug logs headers,
#                         i.e. credentials: never use it in CI)
set -euo pipefail

CREDBROKER_CACHE="${CREDBROKER_CACHE:-$HOME/.cache/credbroker}"
PRISM_VERSION="${PRISM_VERSION:-5.14.2}"
PRISM_ROOT="${PRISM_ROOT:-$CREDBROKER_CACHE/prism}"
PRISM_BIN="$PRISM_ROOT/node_modules/.bin/prism"
TWILIO_OAI_PACKAGE="${TWILIO_OAI_PACKAGE:-@twilio-alpha/mcp@0.7.0}"
SPEC_DIR="${SPEC_DIR:-$CREDBROKER_CACHE/twilio-oai}"
SPECS=(twilio_api_v2010.json twilio_iam_v1.json twilio_accounts_v1.json twilio_verify_v2.json twilio_oauth_v1.json)
PRISM_START_TIMEOUT="${PRISM_START_TIMEOUT:-90}"
PRISM_LOG_LEVEL="${PRISM_LOG_LEVEL:-info}"

die() { echo "prism.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# Prism installed at the wanted version?
prism_ok() {
    [[ -x "$PRISM_BIN" ]] && [[ "$("$PRISM_BIN" --version 2>/dev/null)" == "$PRISM_VERSION" ]]
}

# The one change made to Twilio's documents: the 2010 API's list envelopes
# declare uri/first_page_uri/next_page_uri/previous_page_uri `format: uri`
# (absolute), but Twilio sends them relative ("/2010-04-01/Accounts/...",
# as its paging docs show). Those four fields of list envelopes become
# `uri-reference`, which still refuses anything that is not a URI path;
# nothing else is touched.
# One document is derived, not changed: the package has no OAuth v2 spec,
# but twilio-python 9.13 and the daemon call POST /v2/token with the form
# fields grant_type, client_id, client_secret (snake_case) and Twilio
# answers 200 (RFC 6749 §5.1). twilio_oauth_v2_derived.json is
# twilio_oauth_v1.json's /v1/token with that path, those field names and
# status 200; its answer schema is oauth.v1.token, untouched.
# Bump PATCH_ID when any of this changes.
PATCH_ID="paging-uri-reference-1+oauth-v2-derived-1"

patch_specs() {
    python3 - "$SPEC_DIR/twilio_api_v2010.json" <<'PY' || die "cannot patch twilio_api_v2010.json"
import json, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    spec = json.load(f)
changed = 0
for schema in spec.get("components", {}).get("schemas", {}).values():
    props = schema.get("properties", {})
    if "next_page_uri" not in props:
        continue
    for name in ("uri", "first_page_uri", "next_page_uri", "previous_page_uri"):
        if props.get(name, {}).get("format") == "uri":
            props[name]["format"] = "uri-reference"
            changed += 1
def walk(v):
    global changed
    if isinstance(v, dict):
        props = v.get("properties")
        if isinstance(props, dict) and "next_page_uri" in props:
            for name in ("uri", "first_page_uri", "next_page_uri", "previous_page_uri"):
                if isinstance(props.get(name), dict) and props[name].get("format") == "uri":
                    props[name]["format"] = "uri-reference"
                    changed += 1
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(spec.get("paths", {}))
if changed < 4:
    sys.exit(f"expected list envelopes to patch, changed {changed} fields")
with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(spec, f)
import os
os.replace(path + ".tmp", path)
print(f"prism.sh: {changed} paging fields of twilio_api_v2010.json set to uri-reference", file=sys.stderr)
PY
    python3 - "$SPEC_DIR/twilio_oauth_v1.json" "$SPEC_DIR/twilio_oauth_v2_derived.json" <<'PY' || die "cannot derive twilio_oauth_v2_derived.json"
import copy, json, os, re, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    spec = json.load(f)
v1 = spec["paths"]["/v1/token"]
op = copy.deepcopy(v1)
post = op["post"]
created = post["responses"].pop("201")
assert created["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/oauth.v1.token"
post["responses"] = {"200": created}
form = post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
snake = lambda n: re.sub(r"(?<!^)([A-Z])", r"_\1", n).lower()
form["properties"] = {snake(k): v for k, v in form["properties"].items()}
form["required"] = [snake(k) for k in form.get("required", [])]
if not form["required"]:
    form.pop("required")
assert {"grant_type", "client_id", "client_secret"} <= set(form["properties"]), form["properties"].keys()
spec["paths"] = {"/v2/token": op}
with open(dst + ".tmp", "w", encoding="utf-8") as f:
    json.dump(spec, f)
os.replace(dst + ".tmp", dst)
print("prism.sh: twilio_oauth_v2_derived.json: /v2/token, snake_case form, 200 oauth.v1.token", file=sys.stderr)
PY
    echo "$PATCH_ID" > "$SPEC_DIR/PATCHED"
}

specs_ok() {
    local s
    for s in "${SPECS[@]}"; do
        [[ -s "$SPEC_DIR/$s" ]] || return 1
    done
    [[ "$(cat "$SPEC_DIR/PATCHED" 2>/dev/null)" == "$PATCH_ID" ]]
}

install_prism() {
    prism_ok && return 0
    need node "install Node.js 18+ (apt-get install nodejs npm)"
    need npm "install npm (apt-get install npm)"
    mkdir -p "$PRISM_ROOT"
    echo "prism.sh: installing @stoplight/prism-cli@$PRISM_VERSION into $PRISM_ROOT" >&2
    npm install --prefix "$PRISM_ROOT" --no-audit --no-fund --loglevel=error \
        "@stoplight/prism-cli@$PRISM_VERSION" >&2 \
        || die "npm install @stoplight/prism-cli@$PRISM_VERSION failed (is the npm registry reachable?)"
    prism_ok || die "prism installed but '$PRISM_BIN --version' is not $PRISM_VERSION"
}

install_specs() {
    specs_ok && return 0
    need npm "install npm (apt-get install npm)"
    need tar "install tar"
    local tmp tgz s
    tmp="$(mktemp -d)"
    CLEANUP="$tmp"
    trap 'rm -rf "$CLEANUP"' EXIT
    echo "prism.sh: fetching Twilio's OpenAPI documents from $TWILIO_OAI_PACKAGE" >&2
    tgz="$(cd "$tmp" && npm pack --silent "$TWILIO_OAI_PACKAGE" 2>/dev/null | tail -n1)" \
        || die "npm pack $TWILIO_OAI_PACKAGE failed (is the npm registry reachable?)"
    [[ -n "$tgz" && -f "$tmp/$tgz" ]] || die "npm pack $TWILIO_OAI_PACKAGE produced no tarball"
    tar -xzf "$tmp/$tgz" -C "$tmp" || die "cannot unpack $tgz"
    mkdir -p "$SPEC_DIR"
    rm -f "$SPEC_DIR/PATCHED"
    for s in "${SPECS[@]}"; do
        [[ -s "$tmp/package/twilio-oai/spec/json/$s" ]] \
            || die "$TWILIO_OAI_PACKAGE has no twilio-oai/spec/json/$s"
        cp "$tmp/package/twilio-oai/spec/json/$s" "$SPEC_DIR/$s.tmp"
        mv "$SPEC_DIR/$s.tmp" "$SPEC_DIR/$s"
    done
    patch_specs
}

spec_path() {
    local name="$1"
    if [[ -f "$name" ]]; then
        echo "$name"
        return
    fi
    name="${name#twilio_}"
    name="${name%.json}"
    [[ -s "$SPEC_DIR/twilio_$name.json" ]] \
        || die "no spec $SPEC_DIR/twilio_$name.json (known: api_v2010 iam_v1 accounts_v1 verify_v2 oauth_v1 oauth_v2_derived; run 'prism.sh install')"
    echo "$SPEC_DIR/twilio_$name.json"
}

# Does anything answer HTTP on 127.0.0.1:$1? (Prism answers / with 404.)
answers() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" && return 0
        return 1
    fi
    # Fallback without curl: a TCP connect.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    [[ $# -eq 4 ]] || usage
    local spec upstream="$2" port="$3" log="$4" pid deadline
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
    [[ "$upstream" =~ ^https?:// ]] || die "UPSTREAM_URL must be http(s)://host:port, not '$upstream'"
    prism_ok || die "prism $PRISM_VERSION is not installed in $PRISM_ROOT: run 'tests/support/prism.sh install'"
    spec="$(spec_path "$1")"
    if answers "$port"; then
        die "something already answers on 127.0.0.1:$port"
    fi
    mkdir -p "$(dirname "$log")"
    # The bin is a node script: $! is node's own pid (no wrapper to orphan).
    nohup "$PRISM_BIN" proxy --errors -h 127.0.0.1 -p "$port" -v "$PRISM_LOG_LEVEL" \
        "$spec" "$upstream" </dev/null >"$log" 2>&1 &
    pid=$!
    echo "PID=$pid"
    deadline=$((SECONDS + PRISM_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "prism.sh: prism exited before answering; last lines of $log:" >&2
            tail -n 30 "$log" >&2 || true
            exit 1
        fi
        # "Prism is listening" is logged once the routes are loaded.
        if grep -q "Prism is listening" "$log" 2>/dev/null && answers "$port"; then
            return 0
        fi
        sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    echo "prism.sh: prism did not answer on 127.0.0.1:$port within ${PRISM_START_TIMEOUT}s; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
}

stop() {
    [[ $# -eq 1 && "$1" =~ ^[0-9]+$ ]] || usage
    local pid="$1" i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
    install)
        install_prism
        install_specs
        echo "PRISM=$PRISM_BIN"
        echo "SPECS=$SPEC_DIR"
        ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    spec) shift; [[ $# -eq 1 ]] || usage; spec_path "$1" ;;
    *) usage ;;
esac
