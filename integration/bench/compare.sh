#!/usr/bin/env bash
# compare.sh - the benchmarks against two builds in one run (NOT a test).
#
# Runs sip_cps.sh (call set-up) and media_load.sh (the RTP engine) against a base build and a
# new build, alternating them ROUNDS times so both see the same machine, and prints each
# figure of the new build as a ratio of the base's (below 1: the new build spends less).
# Figures from other days or machines are not evidence; ratios from one run are.
#
# Usage (repo root):
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release)
#   cargo build --release
#   bash integration/bench/compare.sh /tmp/base/target/release/switchyard target/release/switchyard
# Env: ROUNDS (2), CPS_RATES ("300 600"), CPS_TABLES ("trunk b2bua"; empty skips sip_cps),
#      CPS_DURATION (8), MEDIA_LEVELS ("300"), MEDIA_TABLES ("playback"; empty skips it).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
BASE="${1:?usage: compare.sh BASE_BIN NEW_BIN}"
NEW="${2:?usage: compare.sh BASE_BIN NEW_BIN}"
ROUNDS="${ROUNDS:-2}"
CPS_RATES="${CPS_RATES:-300 600}"
CPS_TABLES="${CPS_TABLES-trunk b2bua}"
CPS_DURATION="${CPS_DURATION:-8}"
MEDIA_LEVELS="${MEDIA_LEVELS:-300}"
MEDIA_TABLES="${MEDIA_TABLES-playback}"
for b in "$BASE" "$NEW"; do
  [ -x "$b" ] || { echo "compare: $b is not an executable build" >&2; exit 2; }
done
OUT=$(mktemp -d /tmp/bench_compare.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

# One figure per line in $OUT/figures: build key value.
#   cps:TABLE:RATE:cpu_ms/call, cps:TABLE:RATE:setup_ms, cps:TABLE:RATE:failed,
#   media:TABLE:N:cpu_ms/cs, media:TABLE:N:p99_ms, media:TABLE:N:failed
run_build() { # run_build LABEL BIN
  local label="$1" bin="$2"
  : >"$OUT/cps.txt"
  [ -n "$CPS_TABLES" ] && SWITCHYARD_BIN="$bin" TABLES="$CPS_TABLES" DURATION="$CPS_DURATION" \
    PAUSE_S=2 bash integration/bench/sip_cps.sh $CPS_RATES >"$OUT/cps.txt" 2>&1
  awk -v b="$label" '
    /^================ summary/ { s = 1; next }
    s && /^[a-z0-9]+:$/ { t = substr($1, 1, length($1) - 1); next }
    s && t != "" && $1 ~ /^[0-9]+$/ {
      print b, "cps:" t ":" $1 ":cpu_ms/call", $9
      print b, "cps:" t ":" $1 ":setup_ms", $8
      print b, "cps:" t ":" $1 ":failed", $5
    }' "$OUT/cps.txt" >>"$OUT/figures"
  : >"$OUT/media.txt"
  [ -n "$MEDIA_TABLES" ] && SWITCHYARD_BIN="$bin" LEVELS="$MEDIA_LEVELS" TABLES="$MEDIA_TABLES" \
    bash integration/bench/media_load.sh >"$OUT/media.txt" 2>&1
  awk -v b="$label" '
    /^== / { t = $2; next }
    t != "" && $1 ~ /^[0-9]+$/ && NF >= 10 {
      print b, "media:" t ":" $1 ":cpu_ms/cs", $3
      print b, "media:" t ":" $1 ":p99_ms", $6
      print b, "media:" t ":" $1 ":failed", $10
    }' "$OUT/media.txt" >>"$OUT/figures"
}

printf 'Switchyard benchmark comparison: %s, %s cores\n  base %s\n  new  %s\n' \
  "$(date -u '+%F %H:%M UTC')" "$(nproc)" "$BASE" "$NEW"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS: base"; run_build base "$BASE"
  echo "round $r/$ROUNDS: new";  run_build new "$NEW"
done

# The median of each figure over the rounds, then new/base.
python3 - "$OUT/figures" <<'EOF'
import sys, statistics, collections
vals = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 3:
        continue
    build, key, v = parts
    try:
        vals[key][build].append(float(v))
    except ValueError:
        pass
print(f"\n{'figure':40} {'base':>10} {'new':>10} {'new/base':>9}")
for key in sorted(vals):
    b, n = vals[key].get("base"), vals[key].get("new")
    if not b or not n:
        continue
    mb, mn = statistics.median(b), statistics.median(n)
    ratio = f"{mn / mb:.2f}" if mb else "-"
    print(f"{key:40} {mb:10.3f} {mn:10.3f} {ratio:>9}")
print("\nmedians over the rounds; failed = calls SIPp counted as failed (want 0 for both)")
EOF
