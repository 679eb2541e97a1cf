#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine (root; CI runs it from .ci/run):
# builds two packages of the current tree (0.1.0-1 and a higher 0.1.1-1), installs the first
# with dpkg, checks the user, the private data directory, the generated admin key and the
# systemd unit (systemd-analyze verify), starts /usr/bin/switchyard with the packaged config
# as the switchyard user, creates a tenant through the API and places two SIPp calls (the echo
# test, and a voicemail message), upgrades to the second package and finds tenant, call logs
# and voicemail intact with the config and key unchanged, then purges and finds the data gone.
# Prints "N passed, N failed" at the end. Leaves nothing installed.
#   bash integration/package/test.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
work=$(mktemp -d)
SIP_PORT=${PKG_TEST_SIP_PORT:-35060}
API_PORT=${PKG_TEST_API_PORT:-35080}
passed=0
failed=0
server_pid=""

ok() { passed=$((passed + 1)); printf '  ok: %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAILED: %s\n' "$*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  dpkg --purge switchyard >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0 >/dev/null 2>&1
command -v sipp >/dev/null 2>&1 || { echo "sipp is required (apt-get install sip-tester)"; exit 1; }
if dpkg -s switchyard >/dev/null 2>&1; then
  echo "a switchyard package is installed already: not touching it"; exit 1
fi

echo "== building the packages =="
# The release build (.ci/run made it already, so this costs nothing there). cargo-deb packs it
# without building again (its own build overrides profile settings and would rebuild every
# crate) and strips it. The second package is the same tree under a higher version.
cargo build --release --locked >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
cargo deb -p switchyard --no-build -o "$work/a.deb" >>"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
cargo deb -p switchyard --no-build --deb-version 0.1.1-1 -o "$work/b.deb" >>"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }

api() { # METHOD PATH [BODY]
  local key; key=$(sed -n 's/^SWITCHYARD_API_ADMIN_KEY=//p' /etc/switchyard/switchyard.env)
  curl -sS -X "$1" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    ${3:+--data-binary "$3"} "http://127.0.0.1:$API_PORT$2"
}

start_server() {
  # As systemd would: the switchyard user, the data directory as working directory, the
  # environment file; the ports moved off 5060/8080 so the test cannot meet another server.
  (
    cd /var/lib/switchyard
    set -a; . /etc/switchyard/switchyard.env; set +a
    exec runuser -u switchyard -- env SWITCHYARD_API_ADMIN_KEY="$SWITCHYARD_API_ADMIN_KEY" \
      SWITCHYARD_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT,tcp:127.0.0.1:$SIP_PORT" \
      SWITCHYARD_API_LISTEN="127.0.0.1:$API_PORT" SWITCHYARD_MEDIA_RTP_PORTS=36000-36099 \
      SWITCHYARD_TENANT_DEFAULT=demo SWITCHYARD_LOG_FORMAT=pretty \
      /usr/bin/switchyard serve --config /etc/switchyard/switchyard.toml
  ) >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$API_PORT/health/live" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start:"; cat "$work/server.log"; return 1
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  wait "$server_pid" 2>/dev/null
  server_pid=""
}

figures() { # tenants call-logs voicemail, as one line
  local t c v
  t=$(api GET /v1/tenants | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  c=$(api GET "/v1/tenants/demo/call-logs?limit=100" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  v=$(api GET /v1/tenants/demo/mailboxes/100/messages | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  echo "$t $c $v"
}

echo "== install =="
dpkg -i "$work/a.deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; exit 1; }
check "switchyard system user exists" bash -c "getent passwd switchyard >/dev/null"
check "data directory is /var/lib/switchyard, 0700, owned by switchyard" \
  test "$(stat -c '%a %U' /var/lib/switchyard)" = "700 switchyard"
check "admin key generated, readable by root and the service group only" \
  bash -c 'grep -Eq "^SWITCHYARD_API_ADMIN_KEY=[0-9a-f]{64}$" /etc/switchyard/switchyard.env &&
           test "$(stat -c %a /etc/switchyard/switchyard.env)" = 640'
check "config is a conffile" grep -qx /etc/switchyard/switchyard.toml /var/lib/dpkg/info/switchyard.conffiles
check "systemd-analyze verify passes on the unit" \
  bash -c "systemd-analyze verify /usr/lib/systemd/system/switchyard.service >'$work/verify.log' 2>&1 \
           || { cat '$work/verify.log'; false; }"
check "packaged config is valid" /usr/bin/switchyard check-config /etc/switchyard/switchyard.toml
key_before=$(md5sum /etc/switchyard/switchyard.env)

echo "== first run: a tenant, two calls =="
start_server || exit 1
check "tenant created through the API" \
  bash -c "test \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer $(sed -n 's/^SWITCHYARD_API_ADMIN_KEY=//p' /etc/switchyard/switchyard.env)' -H 'Content-Type: application/json' --data-binary @$ROOT/config/demo-tenant.json http://127.0.0.1:$API_PORT/v1/tenants)\" = 201"
python3 - "$work/audio.wav" <<'PY'
# 8 s of quiet (the voicemail greeting), 2 s of 700 Hz, 1 s of quiet: a µ-law WAV for SIPp.
import math, struct, sys
def ulaw(x):
    s = 0x80 if x < 0 else 0; x = min(abs(x), 32635) + 132; e = 7
    while e > 0 and not (x & (0x4000 >> (7 - e))): e -= 1
    return ~(s | (e << 4) | ((x >> (e + 3)) & 0x0F)) & 0xFF
pcm = [0] * 64000 + [int(8000 * math.sin(2 * math.pi * 700 * i / 8000)) for i in range(16000)] + [0] * 8000
data = bytes(ulaw(v) for v in pcm)
hdr = b'RIFF' + struct.pack('<I', 38 + len(data)) + b'WAVEfmt ' + struct.pack('<IHHIIHHH', 18, 7, 1, 8000, 8000, 1, 8, 0)
open(sys.argv[1], 'wb').write(hdr + b'data' + struct.pack('<I', len(data)) + data)
PY
sipp_call() { # NUMBER HOLD_MS
  (cd "$work" && sipp -sf "$ROOT/integration/sipp/media_stream.xml" "127.0.0.1:$SIP_PORT" \
    -i 127.0.0.1 -p 35061 -mp 35064 -s "$1" -d "$2" -m 1 -nostdin -timeout 40s -timeout_error \
    >>"$work/sipp.log" 2>&1)
}
check "SIPp call to the echo test" sipp_call +15550600 2000
check "SIPp call leaves a voicemail message" sipp_call +15550300 12000
for _ in $(seq 1 50); do
  [ "$(figures)" = "1 2 1" ] && break
  sleep 0.2
done
before=$(figures)
check "before the upgrade: 1 tenant, 2 call logs, 1 message (got $before)" test "$before" = "1 2 1"
stop_server

echo "== upgrade =="
dpkg -i "$work/b.deb" >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; exit 1; }
check "package upgraded to 0.1.1-1" test "$(dpkg-query -W -f '${Version}' switchyard)" = "0.1.1-1"
check "admin key kept" test "$(md5sum /etc/switchyard/switchyard.env)" = "$key_before"
start_server || exit 1
after=$(figures)
check "after the upgrade: tenant, call logs and voicemail intact (got $after)" test "$after" = "$before"
check "voicemail audio still downloadable" \
  bash -c "id=\$(curl -s -H 'Authorization: Bearer $(sed -n 's/^SWITCHYARD_API_ADMIN_KEY=//p' /etc/switchyard/switchyard.env)' http://127.0.0.1:$API_PORT/v1/tenants/demo/mailboxes/100/messages | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"items\"][0][\"id\"])') &&
           test \"\$(curl -s -H 'Authorization: Bearer $(sed -n 's/^SWITCHYARD_API_ADMIN_KEY=//p' /etc/switchyard/switchyard.env)' http://127.0.0.1:$API_PORT/v1/tenants/demo/mailboxes/100/messages/\$id/audio | head -c 4)\" = RIFF"
stop_server

echo "== remove and purge =="
dpkg --remove switchyard >>"$work/dpkg.log" 2>&1
check "remove keeps the data" test -d /var/lib/switchyard/db
dpkg --purge switchyard >>"$work/dpkg.log" 2>&1
check "purge removes data and key" bash -c '! test -e /var/lib/switchyard && ! test -e /etc/switchyard/switchyard.env'

if [ "$failed" -ne 0 ]; then
  echo "--- server log ---"; tail -50 "$work/server.log"
  echo "--- sipp ---"; tail -30 "$work/sipp.log"
fi
echo "package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
