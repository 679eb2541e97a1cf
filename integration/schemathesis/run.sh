#!/usr/bin/env bash
# run.sh - property-based test of the admin HTTP API with Schemathesis.
#
# Starts `switchyard serve --demo` on free loopback ports with a fresh data directory and a
# random admin key, waits for /health/ready, runs Schemathesis (all checks, all phases, a
# bounded number of examples per operation) against /openapi.json with the admin key, stops
# the server and exits with Schemathesis' status: non-zero on any failure.
#
# Usage (repo root): cargo build && bash integration/schemathesis/run.sh
# Env:
#   SWITCHYARD_BIN            server binary                          [target/debug/switchyard]
#   SCHEMATHESIS              schemathesis command to use; unset: a venv with
#                             integration/schemathesis/requirements.txt is made/reused
#   SCHEMATHESIS_VENV         that venv                              [target/schemathesis-venv]
#   SCHEMATHESIS_MAX_EXAMPLES test cases per operation                [50]
#   SCHEMATHESIS_SEED         random seed (fixed so CI is repeatable) [1]
#   SCHEMATHESIS_REPORT_DIR   JUnit + NDJSON reports and server log   [target/schemathesis-report]
#   SCHEMATHESIS_TIMEOUT      hard limit on the schemathesis run, s   [600]
#   SCHEMATHESIS_ARGS         extra arguments for `schemathesis run`
#
# One schemathesis run per server start: the admin API blocks an address for 300 s (valid
# key included) after 20 failed authentications in 60 s, and the ignored_auth check sends a
# wrong key about once per operation, so two runs against one server can trip it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE="integration/schemathesis"

BIN="${SWITCHYARD_BIN:-target/debug/switchyard}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
SEED="${SCHEMATHESIS_SEED:-1}"
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-target/schemathesis-report}"
RUN_TIMEOUT="${SCHEMATHESIS_TIMEOUT:-600}"
VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"

log() { printf '\n== %s ==\n' "$*"; }
die() { printf 'schemathesis run: %s\n' "$*" >&2; exit 2; }

[ -x "$BIN" ] || die "no server binary at $BIN (cargo build, or set SWITCHYARD_BIN)"
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed"

# --- schemathesis, at the pinned version -------------------------------------------------
if [ -n "${SCHEMATHESIS:-}" ]; then
  read -r -a ST <<<"$SCHEMATHESIS"
else
  want="$(sed -n 's/^schemathesis==//p' "$HERE/requirements.txt")"
  if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $want"; then
    log "installing schemathesis $want into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  fi
  ST=("$VENV/bin/schemathesis")
fi
"${ST[@]}" --version

# --- server ------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-schemathesis.XXXXXX")"
SRV_PID=""
stop_server() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SRV_PID" 2>/dev/null && kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  SRV_PID=""
}
ST_PID=""
cleanup() {
  status=$?
  if [ -n "$ST_PID" ] && kill -0 "$ST_PID" 2>/dev/null; then
    kill -TERM "$ST_PID" 2>/dev/null || true   # `timeout` passes it on to schemathesis
    wait "$ST_PID" 2>/dev/null || true
  fi
  stop_server
  mkdir -p "$REPORT_DIR" 2>/dev/null && cp -f "$WORK/server.log" "$REPORT_DIR/server.log" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports: a TCP one for the API, a UDP one for SIP, 100 UDP ones for RTP.
read -r API_PORT SIP_PORT RTP_FIRST RTP_LAST < <(python3 - <<'PY'
import random, socket
def free(kind):
    s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]; s.close(); return p
def udp_range_free(first, n):
    socks = []
    try:
        for p in range(first, first + n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks: s.close()
api, sip = free(socket.SOCK_STREAM), free(socket.SOCK_DGRAM)
for _ in range(200):
    first = random.randrange(20000, 30000, 2)
    if not first <= sip < first + 100 and udp_range_free(first, 100):
        break
else:
    raise SystemExit("no free UDP range for RTP")
print(api, sip, first, first + 99)
PY
)
BASE="http://127.0.0.1:$API_PORT"
ADMIN_KEY="st-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

log "starting $BIN (API $BASE, SIP udp:127.0.0.1:$SIP_PORT, RTP $RTP_FIRST-$RTP_LAST)"
SWITCHYARD_DATA_DIR="$WORK/data" \
SWITCHYARD_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT" \
SWITCHYARD_API_LISTEN="127.0.0.1:$API_PORT" \
SWITCHYARD_API_ADMIN_KEY="$ADMIN_KEY" SWITCHYARD_API_AUTH_MAX_FAILURES=100000 \
SWITCHYARD_MEDIA_RTP_PORTS="$RTP_FIRST-$RTP_LAST" \
SWITCHYARD_MEDIA_PROMPTS_DIR="$ROOT/prompts" \
  "$BIN" serve --demo >"$WORK/server.log" 2>&1 </dev/null &
SRV_PID=$!

ready=""
for _ in $(seq 1 300); do   # up to 30 s
  if ! kill -0 "$SRV_PID" 2>/dev/null; then
    tail -n 40 "$WORK/server.log" >&2
    die "server exited before it was ready"
  fi
  if curl -fsS -m 2 -o /dev/null "$BASE/health/ready" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { tail -n 40 "$WORK/server.log" >&2; die "server not ready after 30 s"; }
echo "ready"

# --- schemathesis ------------------------------------------------------------------------
# ensure_resource_availability only judges links schemathesis infers on its own, and it infers
# POST /v1/tenants -> a user's registrations in the new tenant, where 404 is right (see the toml).
log "schemathesis: all checks, all phases, $MAX_EXAMPLES examples per operation, seed $SEED"
mkdir -p "$REPORT_DIR"
rm -f "$REPORT_DIR/junit.xml" "$REPORT_DIR/events.ndjson"
extra=()
[ -n "${SCHEMATHESIS_ARGS:-}" ] && read -r -a extra <<<"$SCHEMATHESIS_ARGS"
set +e
timeout --signal=TERM --kill-after=10 "$RUN_TIMEOUT" \
  "${ST[@]}" --config-file "$HERE/schemathesis.toml" run "$BASE/openapi.json" \
    --header "Authorization: Bearer $ADMIN_KEY" \
    --checks all \
    --exclude-checks ensure_resource_availability \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --continue-on-failure \
    --generation-database none \
    --request-timeout 10 \
    --wait-for-schema 10 \
    --no-color \
    --report junit,ndjson \
    --report-junit-path "$REPORT_DIR/junit.xml" \
    --report-ndjson-path "$REPORT_DIR/events.ndjson" \
    "${extra[@]}" </dev/null &
ST_PID=$!
wait "$ST_PID"   # in the background so a TERM/INT to this script is handled at once
rc=$?
ST_PID=""
set -e
[ "$rc" -eq 124 ] && echo "schemathesis run: timed out after ${RUN_TIMEOUT} s" >&2

# The server must still be up: a crash during the run is a failure of its own.
if ! kill -0 "$SRV_PID" 2>/dev/null; then
  echo "schemathesis run: the server died during the run; its log:" >&2
  tail -n 40 "$WORK/server.log" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
if grep -q "panicked" "$WORK/server.log"; then
  echo "schemathesis run: the server panicked:" >&2
  grep -m 5 -A 3 "panicked" "$WORK/server.log" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
stop_server

# One closing line a CI reader understands: operations (and the stateful suite) passed/failed.
python3 - "$REPORT_DIR/junit.xml" <<'PY' || true
import sys, xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError):
    sys.exit(0)
passed = failed = skipped = 0
for c in cases:
    if c.find("failure") is not None or c.find("error") is not None:
        failed += 1
    elif c.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
print(f"schemathesis: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit "$rc"
