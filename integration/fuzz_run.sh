#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each, default 20), seeded
# from what the repository already has (the SIP torture corpus, prompts, the demo tenant), and
# fails on the first crash. Needs cargo-fuzz (installed here when missing) and a toolchain
# that takes -Z flags: nightly when installed, else stable with RUSTC_BOOTSTRAP=1.
#   bash integration/fuzz_run.sh            # all targets
#   FUZZ_SECONDS=300 bash integration/fuzz_run.sh sip_parse
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2 >/dev/null
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  FUZZ=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  FUZZ=(cargo fuzz)
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && "${FUZZ[@]}" list)
fi
# Debug build without a sanitizer: the point here is panics and hangs on hostile input, and
# a release build of the whole tree under coverage would cost CI several minutes more.
"${FUZZ[@]}" build --dev -s none >/dev/null 2>&1 || "${FUZZ[@]}" build --dev -s none
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
for t in "${targets[@]}"; do
  corpus="$seeds/$t"
  mkdir -p "$corpus"
  case "$t" in
    sip_parse|stream_framing|sip_bodies|digest) cp tests/torture/*/*.sip "$corpus"/ 2>/dev/null || true ;;
    prompt_upload) cp prompts/system/beep.wav prompts/system/digit-1.wav "$corpus"/ 2>/dev/null || true ;;
    tenant_json) cp config/demo-tenant.json "$corpus"/ ;;
  esac
  echo "fuzz: $t for ${SECONDS_EACH}s"
  status=0
  "${FUZZ[@]}" run --dev -s none "$t" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$seeds/$t.log" 2>&1 || status=$?
  grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$seeds/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$seeds/$t.log" >&2
    echo "fuzz: $t found a crash (artifact under fuzz/artifacts/$t)" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets, ${SECONDS_EACH}s each, no crash"
