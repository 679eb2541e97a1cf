#!/usr/bin/env bash
# media_load.sh - RTP engine load benchmark for Switchyard (NOT a test).
#
# Drives target/release/switchyard (`serve --demo`) with SIPp: N concurrent trunk calls, each
# streaming a looping 1 kHz tone into the server (SIPp rtp_stream), to
#   playback: +15550601 (looping speech prompt while the engine listens for DTMF)
#   record:   +15550300 (voicemail: 5 s greeting, then recording the caller)
# For each N it waits until all calls are up, then measures over MEASURE seconds:
#   - server CPU time per call-second (utime+stime from /proc/PID/stat),
#   - server memory per call (RSS with calls up minus RSS before, / N; prompt cache included),
#   - timing of what the server sends, from a tcpdump capture of CAPTURE seconds analysed by
#     rtp_timing.py: p50/p99/max deviation from the 20 ms grid, gaps over 40 ms, sequence
#     and timestamp jumps,
#   - failed calls reported by SIPp.
# SIPp and tcpdump share the machine's cores with the server; on a 2-core box their load
# limits the levels that can be hosted.
#
# Usage (repo root): cargo build --release && bash integration/bench/media_load.sh
# Env: LEVELS (default "100 500 1000 2000"), TABLES ("playback record"), MEASURE (10),
#      CAPTURE (3), RAMP (calls started per second, 200), SIP_PORT (15070).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
BIN="${SWITCHYARD_BIN:-target/release/switchyard}"
[ -x "$BIN" ] || { echo "build first: cargo build --release"; exit 2; }
LEVELS="${LEVELS:-100 500 1000 2000}"
TABLES="${TABLES:-playback record}"
MEASURE="${MEASURE:-10}"
CAPTURE="${CAPTURE:-3}"
RAMP="${RAMP:-200}"
SIP_PORT="${SIP_PORT:-15070}"
RTP_FIRST=20000
RTP_LAST=29999
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/media_load.XXXXXX)
ulimit -n 65536 2>/dev/null || true

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

SRV_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
  pkill -f "sipp.*$SIP_PORT" 2>/dev/null
  [ "${KEEP_LOGS:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

start_server() {
  rm -rf "$WORK/data"
  SWITCHYARD_DATA_DIR="$WORK/data" SWITCHYARD_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT" \
  SWITCHYARD_MEDIA_RTP_PORTS="$RTP_FIRST-$RTP_LAST" SWITCHYARD_MEDIA_PROMPTS_DIR="$ROOT/prompts" \
  SWITCHYARD_MEDIA_RTP_TIMEOUT_SECS=60 RUST_LOG=warn "$BIN" serve --demo > "$WORK/server.log" 2>&1 &
  SRV_PID=$!
  sleep 1.5
}

sox -n -r 8000 -c 1 -e u-law -t wav "$WORK/audio.wav" synth 2 sine 1000 vol 0.3 2>/dev/null || {
  echo "sox is needed to make the caller's audio (apt-get install sox)"; exit 2; }

printf '\nSwitchyard media load: %s, %s cores, %s GiB RAM, %s\n' "$(date -u +%F)" "$(nproc)" \
  "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$BIN"
for table in $TABLES; do
  # settle: seconds after the last call starts before measuring (the voicemail greeting and
  # beep take about 5 s before recording starts).
  case $table in
    playback) number=+15550601; settle=4 ;;
    record) number=+15550300; settle=8 ;;
    *) echo "unknown table $table"; continue ;;
  esac
  printf '\n== %s (%s)\n' "$table" "$number"
  printf '%6s %8s %12s %10s %8s %8s %8s %8s %6s %6s\n' calls up cpu_ms/cs KiB/call p50_ms p99_ms max_ms 'gaps>40' jumps failed
  for n in $LEVELS; do
    start_server
    base_rss=$(rss_kib "$SRV_PID")
    ramp_s=$(( (n + RAMP - 1) / RAMP ))
    hold_ms=$(( (ramp_s + settle + MEASURE + CAPTURE + 2) * 1000 ))
    (cd "$WORK" && sipp -sf "$ROOT/integration/sipp/media_stream_loop.xml" "127.0.0.1:$SIP_PORT" \
      -s "$number" -r "$RAMP" -l "$n" -m "$n" -d "$hold_ms" -nostdin -timeout $(( hold_ms / 1000 + 60 ))s \
      -p $((SIP_PORT + 1)) -mp 40000 \
      -trace_stat -stf "$WORK/stat.csv" -fd 1 > "$WORK/sipp.out" 2>&1) &
    sipp_pid=$!
    sleep $(( ramp_s + settle ))
    t0=$(cpu_ticks "$SRV_PID")
    sleep "$MEASURE"
    t1=$(cpu_ticks "$SRV_PID")
    rss=$(rss_kib "$SRV_PID")
    timeout $(( CAPTURE + 1 )) tcpdump -i lo -n -U -w "$WORK/cap.pcap" "udp and src portrange $RTP_FIRST-$RTP_LAST" >/dev/null 2>&1
    timing=$(python3 "$ROOT/integration/bench/rtp_timing.py" "$WORK/cap.pcap" $RTP_FIRST $RTP_LAST)
    up=$(echo "$timing" | sed -n 's/.*streams=\([0-9]*\).*/\1/p')
    wait "$sipp_pid"
    failed=$(python3 -c "import csv;r=list(csv.reader(open('$WORK/stat.csv'),delimiter=';'));print(r[-1][r[0].index('FailedCall(C)')])" 2>/dev/null || echo "?")
    cpu_ms=$(awk -v a="$t0" -v b="$t1" -v hz="$TICK" -v n="$n" -v s="$MEASURE" 'BEGIN {printf "%.3f", (b-a)*1000/hz/(n*s)}')
    per_call=$(( (rss - base_rss) / n ))
    p50=$(echo "$timing" | sed -n 's/.*p50=\([0-9.]*\).*/\1/p')
    p99=$(echo "$timing" | sed -n 's/.*p99=\([0-9.]*\).*/\1/p')
    mx=$(echo "$timing" | sed -n 's/.*max=\([0-9.]*\).*/\1/p')
    gaps=$(echo "$timing" | sed -n 's/.*gaps_over_40ms=\([0-9]*\).*/\1/p')
    jumps=$(echo "$timing" | awk -F'seq_jumps=' '{split($2,a," "); s=a[1]} END {print s}')
    printf '%6s %8s %12s %10s %8s %8s %8s %8s %6s %6s\n' "$n" "$up" "$cpu_ms" "$per_call" "$p50" "$p99" "$mx" "$gaps" "$jumps" "$failed"
    kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; SRV_PID=""
    sleep 2
  done
done
