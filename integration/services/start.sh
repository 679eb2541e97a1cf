#!/usr/bin/env bash
# Starts the shared blob-store emulators the storage tests talk to, and prints `export` lines
# describing every test service. Idempotent: a service already answering on its port is reused.
#
#   exports=$(bash integration/services/start.sh)   # an assignment, so a failure stops `set -e`
#   eval "$exports"
#
# Starts (in the background, outliving this script; see README.md beside this file):
#   - Azurite blob service (Azure Blob emulator) on 127.0.0.1:$AZURITE_PORT (default 10000),
#     data kept in $SERVICES_DIR/azurite, with the container `switchyard` created;
#   - moto (S3 emulator, in memory) on 127.0.0.1:$S3_PORT (default 9000), bucket `switchyard`.
# Checks the machine's PostgreSQL (it is not started here) and prints where initdb/pg_ctl are,
# so a test can run a private cluster of its own.
# Quiet: prints only the export lines on stdout, and errors on stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

SERVICES_DIR=${SERVICES_DIR:-/tmp/switchyard-services}
AZURITE_PORT=${AZURITE_PORT:-10000}
S3_PORT=${S3_PORT:-9000}
# Azurite 3.36+ needs Node.js >= 21; the machine has Node.js 20, so stay on 3.35.0.
AZURITE_VERSION=3.35.0
NODE_DIR=${SWITCHYARD_NODE_DIR:-$ROOT/.ci/node} # git-ignored
AZURITE_BIN=$NODE_DIR/node_modules/.bin/azurite-blob
BUCKET=switchyard
CONTAINER=switchyard
POSTGRES_URL=${SWITCHYARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
WAIT_SECONDS=60

die() {
  printf 'services/start.sh: %s\n' "$*" >&2
  exit 1
}

mkdir -p "$SERVICES_DIR"

# ---- installs ------------------------------------------------------------------------------

installed_azurite_version() {
  [ -x "$AZURITE_BIN" ] || return 0
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$NODE_DIR/node_modules/azurite/package.json" 2>/dev/null | head -1
}

if [ "$(installed_azurite_version)" != "$AZURITE_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq nodejs npm; } >"$SERVICES_DIR/apt.log" 2>&1 ||
      { cat "$SERVICES_DIR/apt.log" >&2; die "could not install Node.js/npm"; }
  fi
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error \
    "azurite@$AZURITE_VERSION" >"$SERVICES_DIR/npm.log" 2>&1 ||
    { cat "$SERVICES_DIR/npm.log" >&2; die "npm install azurite@$AZURITE_VERSION failed"; }
  [ -x "$AZURITE_BIN" ] || die "azurite installed but $AZURITE_BIN is missing"
fi

if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt" \
    >"$SERVICES_DIR/pip.log" 2>&1 ||
    { cat "$SERVICES_DIR/pip.log" >&2; die "pip install -r $HERE/requirements.txt failed"; }
fi

# ---- helpers -------------------------------------------------------------------------------

azurite_answers() { # Azurite says who it is in its Server header, even on a 403
  curl -s -m 2 -D - -o /dev/null "http://127.0.0.1:$AZURITE_PORT/devstoreaccount1?comp=list" 2>/dev/null |
    grep -qi '^server: *azurite-blob'
}

s3_answers() { # moto lists buckets to anyone; a real S3 would answer with an <Error> document
  curl -s -m 2 "http://127.0.0.1:$S3_PORT/" 2>/dev/null | grep -q -e 'ListAllMyBucketsResult' -e '<Error>'
}

port_taken() { # something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start NAME CHECK_FN PORT -- COMMAND...: runs COMMAND in its own session (so it outlives this
# script and its terminal), records its pid in $SERVICES_DIR/NAME.pid, waits until CHECK_FN.
start() {
  local name=$1 check=$2 port=$3
  shift 4
  local log=$SERVICES_DIR/$name.log pidfile=$SERVICES_DIR/$name.pid
  "$check" && return 0
  port_taken "$port" && die "127.0.0.1:$port is taken by something that is not $name"
  : >"$log"
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$check"; do
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2
      die "$name exited during startup (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$log" >&2
      die "$name did not answer on 127.0.0.1:$port within ${WAIT_SECONDS}s (log: $log)"
    fi
    sleep 0.2
  done
}

# ---- services ------------------------------------------------------------------------------

mkdir -p "$SERVICES_DIR/azurite"
# --disableTelemetry: Azurite would otherwise try to send telemetry off the machine.
# Data is kept in --location; Azurite writes its metadata there every 5 s and on SIGTERM/SIGINT,
# so stop it with SIGTERM (stop.sh does), not SIGKILL, to keep the last seconds' writes.
start azurite azurite_answers "$AZURITE_PORT" -- \
  "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
  --location "$SERVICES_DIR/azurite" --skipApiVersionCheck --loose --silent \
  --disableTelemetry --disableProductStyleUrl

start s3 s3_answers "$S3_PORT" -- python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT"

# S3 bucket: moto takes unsigned requests from anyone (any key id/secret works, region us-east-1)
# and answers 200 again for a bucket that already exists.
code=$(curl -s -m 10 -o "$SERVICES_DIR/bucket.out" -w '%{http_code}' -X PUT \
  "http://127.0.0.1:$S3_PORT/$BUCKET") || true
case "$code" in
  200 | 409) ;; # 409: BucketAlreadyOwnedByYou on S3 servers other than moto
  *) cat "$SERVICES_DIR/bucket.out" >&2 2>/dev/null || true; die "creating S3 bucket $BUCKET: HTTP $code" ;;
esac

# Azure container: object_store's Azure client never creates containers.
python3 "$HERE/azurite_container.py" "$AZURITE_PORT" "$CONTAINER" ||
  die "creating Azurite container $CONTAINER failed"

# ---- PostgreSQL (the machine's; not started here) -------------------------------------------

PG_BIN=$(pg_config --bindir 2>/dev/null || true)
if [ ! -x "$PG_BIN/initdb" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || die "no initdb/pg_ctl found (PostgreSQL server packages)"
psql "$POSTGRES_URL" -Atqc 'select 1' >/dev/null 2>"$SERVICES_DIR/psql.err" ||
  { cat "$SERVICES_DIR/psql.err" >&2; die "PostgreSQL at $POSTGRES_URL does not answer"; }

# ---- what the tests read -------------------------------------------------------------------

cat <<EOF
export SWITCHYARD_TEST_POSTGRES_URL=$POSTGRES_URL
export SWITCHYARD_TEST_PG_BIN=$PG_BIN
export SWITCHYARD_TEST_AZURITE_ENDPOINT=http://127.0.0.1:$AZURITE_PORT/devstoreaccount1
export SWITCHYARD_TEST_AZURITE_CONTAINER=$CONTAINER
export SWITCHYARD_TEST_AZURITE_BIN=$AZURITE_BIN
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$AZURITE_PORT
export SWITCHYARD_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export SWITCHYARD_TEST_S3_BUCKET=$BUCKET
export SWITCHYARD_TEST_S3_REGION=us-east-1
export SWITCHYARD_TEST_S3_ACCESS_KEY_ID=test
export SWITCHYARD_TEST_S3_SECRET_ACCESS_KEY=test
EOF
