#!/usr/bin/env bash
# Stops what start.sh started (only the processes whose pids it recorded), with SIGTERM so that
# Azurite writes its metadata out first. Data in $SERVICES_DIR is kept; delete the folder to reset.
set -uo pipefail
SERVICES_DIR=${SERVICES_DIR:-/tmp/switchyard-services}
for name in azurite s3; do
  pidfile=$SERVICES_DIR/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "services/stop.sh: $name ($pid) ignored SIGTERM; killing" >&2; kill -KILL "$pid"; }
  fi
  rm -f "$pidfile"
done
