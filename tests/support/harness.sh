# Sourced by the shell test scripts (tests/python_client.sh,
# tests/clients_python.sh, tests/clients_node.sh): the pass/fail counters,
# one line per check, the summary line, stopping a process, and the check
# that a venv holds the pinned packages.

PASSED=0
FAILED=0
SUMMARY_DONE=0

pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() { # NAME [DETAIL...]: each detail line is indented under the check
  FAILED=$((FAILED + 1)); echo "FAIL - $1"
  shift; if [ $# -gt 0 ]; then printf '%s\n' "$@" | sed 's/^/       | /'; fi
}
summary() { SUMMARY_DONE=1; echo "$PASSED passed, $FAILED failed"; }

stop_pid() { # PID: SIGTERM, up to 15 s for a clean exit, then SIGKILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# VENV REQUIREMENTS_FILE [PIN...]: does the venv hold every pinned version?
pins_present() {
  local venv=$1
  shift
  "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
pins = [l.split("#")[0].strip() for l in open(sys.argv[1])] + sys.argv[2:]
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in pins if p)))
PY
}

# VENV REQUIREMENTS_FILE [PIN...]: creates the venv when missing and installs
# the pins unless every one is there already; fails the script when they are
# still missing afterwards.
ensure_pins() {
  local venv=$1 reqs=$2
  shift 2
  pins_present "$venv" "$reqs" "$@" && return 0
  echo "== installing $(grep -v '^#' "$reqs" | xargs) $* into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" "$@"
  pins_present "$venv" "$reqs" "$@" || { echo "$(basename "$0"): pinned packages still missing after pip install" >&2; exit 1; }
}
