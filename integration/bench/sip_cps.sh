#!/usr/bin/env bash
# sip_cps.sh - SIP calls-per-second benchmark for Switchyard (NOT a test).
#
# Starts target/release/switchyard (`serve --demo`) on a UDP port on
# 127.0.0.1 and runs SIPp at rising call rates against it, each step for
# DURATION seconds:
#   table 1 "trunk": integration/sipp/invite_trunk.xml, INVITE to the DID
#                    +15550100 from 127.0.0.1 (no auth): 100/180/200, ACK,
#                    hold HOLD_MS, BYE/200.
#   table 2 "auth":  integration/sipp/invite_auth.xml, INVITE from user 100
#                    to extension 500 with the 407 digest round trip.
#   table 3 "b2bua": integration/sipp/invite_trunk.xml to the DID +15550101,
#                    which rings user 101: a second SIPp registered as 101
#                    answers (uas_answer.xml: 180, 500 ms, 200, echoing RTP)
#                    and the server bridges both legs' media. Two dialogs,
#                    two RTP legs and a call record per call; setup_ms
#                    includes the phone's 500 ms of ringing.
# For every rate it prints: calls attempted, completed, failed (failed
# plus unfinished), SIPp retransmissions (and their share of the requests
# SIPp sent), the average call-setup time (INVITE -> 200, as SIPp measures
# it), the server CPU time per call (utime+stime from /proc/PID/stat over
# the step) and the server RSS (now / peak). At the end it names, per
# table, the highest rate with zero failed calls and retransmissions
# below 1% of the requests sent.
#
# SIPp runs on the same machine and needs CPU too: on a small box the
# limit found may be SIPp's. SERVER_CPUS / SIPP_CPUS (taskset lists, e.g.
# SERVER_CPUS=0 SIPP_CPUS=1) pin them apart; the "cps" column shows the
# rate SIPp actually achieved.
#
# Usage (from the repo root):
#   cargo build --release
#   bash integration/bench/sip_cps.sh                 # default rates
#   bash integration/bench/sip_cps.sh 100 500 1000    # rates as arguments
# Environment knobs (defaults in brackets):
#   RATES        rates in calls/s       [200 400 600 800 1000 1200 1500 2000]
#   DURATION     seconds per step                                        [10]
#   HOLD_MS      call hold time (sipp -d) in ms                        [1000]
#   TABLES       which tables to run: any of "trunk auth b2bua"
#   TRANSPORT    sipp transport: u1 (UDP), t1 (TCP: server must listen tcp)
#                                                                        [u1]
#   SIP_PORT     server SIP port                       [a free one, 15000+]
#   STOP_FAIL_PCT  stop a table's ramp once failed% exceeds this          [20]
#   PAUSE_S      pause between steps, to let the server settle             [3]
#   SWITCHYARD_BIN  server binary          [target/release/switchyard]
#   SIPP         sipp binary                                          [sipp]
#   SERVER_CPUS / SIPP_CPUS  taskset CPU lists                      [unset]
#   KEEP_LOGS=1  keep the work directory (logs, SIPp CSVs) on exit      [0]
#   CALL_LIMIT   max simultaneous calls in SIPp (-l)                  [10000]
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1

BIN="${SWITCHYARD_BIN:-target/release/switchyard}"
SIPP="${SIPP:-sipp}"
SCEN_DIR="$ROOT/integration/sipp"
if [ "$#" -gt 0 ]; then RATES="$*"; fi
RATES="${RATES:-200 400 600 800 1000 1200 1500 2000}"
DURATION="${DURATION:-10}"
HOLD_MS="${HOLD_MS:-1000}"
TABLES="${TABLES:-trunk auth b2bua}"
TRANSPORT="${TRANSPORT:-u1}"
STOP_FAIL_PCT="${STOP_FAIL_PCT:-20}"
PAUSE_S="${PAUSE_S:-3}"
KEEP_LOGS="${KEEP_LOGS:-0}"

if [ ! -x "$BIN" ]; then
    echo "sip_cps: server binary '$BIN' not found." >&2
    echo "  build it first:  cargo build --release" >&2
    echo "  (or point SWITCHYARD_BIN at a build)" >&2
    exit 2
fi
if ! command -v "$SIPP" >/dev/null 2>&1; then
    echo "sip_cps: '$SIPP' not found; install SIPp (Debian: apt-get install sip-tester)" >&2
    exit 2
fi

CLK_TCK="$(getconf CLK_TCK)"
WORK="$(mktemp -d /tmp/sip_cps.XXXXXX)"
DATA_DIR="$(mktemp -d /tmp/sip_cps_data.XXXXXX)"
SERVER_PID=""
SIPP_PID=""

cleanup() {
    if [ -n "${PHONE_PID:-}" ] && kill -0 "$PHONE_PID" 2>/dev/null; then
        kill "$PHONE_PID" 2>/dev/null
        wait "$PHONE_PID" 2>/dev/null
    fi
    if [ -n "$SIPP_PID" ] && kill -0 "$SIPP_PID" 2>/dev/null; then
        kill "$SIPP_PID" 2>/dev/null
        wait "$SIPP_PID" 2>/dev/null
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.3
        done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$DATA_DIR"
    if [ "$KEEP_LOGS" = 1 ]; then
        echo "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() {
    # UDP and TCP listeners on that port, any address
    ss -Hlnu "sport = :$1" 2>/dev/null | grep -q . && return 0
    ss -Hlnt "sport = :$1" 2>/dev/null | grep -q . && return 0
    return 1
}
pick_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((15000 + RANDOM % 4000))
        port_in_use "$p" || { echo "$p"; return; }
    done
    echo 15060
}
PORT="${SIP_PORT:-$(pick_port)}"

case "$TRANSPORT" in
    t1|tn) LISTEN="tcp:127.0.0.1:$PORT" ;;
    *)     LISTEN="udp:127.0.0.1:$PORT" ;;
esac

# Commands are started as plain simple commands (no function or subshell
# wrapper), so that $! is the PID of the server / sipp itself.
SERVER_CMD=("$BIN" serve --demo)
SIPP_CMD=("$SIPP")
if [ -n "${SERVER_CPUS:-}" ]; then SERVER_CMD=(taskset -c "$SERVER_CPUS" "${SERVER_CMD[@]}"); fi
if [ -n "${SIPP_CPUS:-}" ]; then SIPP_CMD=(taskset -c "$SIPP_CPUS" "${SIPP_CMD[@]}"); fi

# ---------------------------------------------------------------- server
echo "sip_cps: starting $BIN serve --demo on $LISTEN (work dir $WORK)"
SWITCHYARD_DATA_DIR="$DATA_DIR" \
SWITCHYARD_SIP_LISTEN="$LISTEN" \
SWITCHYARD_MEDIA_RTP_PORTS=20000-29999 \
SWITCHYARD_API_LISTEN="127.0.0.1:$((PORT + 1))" \
SWITCHYARD_API_ADMIN_KEY=bench-admin-key \
RUST_LOG="${RUST_LOG:-warn}" \
    "${SERVER_CMD[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# wait until it answers OPTIONS
ready=0
for _ in $(seq 1 40); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "sip_cps: server exited during start-up; last log lines:" >&2
        tail -n 20 "$WORK/server.log" >&2
        exit 1
    fi
    if timeout 5 "$SIPP" -sf "$SCEN_DIR/options.xml" "127.0.0.1:$PORT" -t "$TRANSPORT" \
            -m 1 -nostdin -recv_timeout 500 -timeout 3s >"$WORK/ready.txt" 2>&1; then
        ready=1; break
    fi
    sleep 0.25
done
if [ "$ready" != 1 ]; then
    echo "sip_cps: server did not answer OPTIONS on $LISTEN; last log lines:" >&2
    tail -n 20 "$WORK/server.log" >&2
    exit 1
fi

# ---------------------------------------------------------------- helpers
cpu_ticks() { # utime+stime of the whole process (all threads), in ticks
    local line rest
    read -r line <"/proc/$1/stat" || { echo 0; return; }
    rest="${line##*) }"          # fields from 3 (state) on; comm may hold spaces
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))    # fields 14 (utime) and 15 (stime)
}
status_kb() { # VmRSS / VmHWM in kB
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
csv_field() { # csv_field FILE COLUMN-NAME -> value on the last line
    awk -F';' -v col="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        { last = $0 }
        END { if (c && last != "") { split(last, f, ";"); print f[c] } else print "" }' "$1"
}
hms_to_ms() { # "HH:MM:SS:uuuuuu" -> milliseconds with 1 decimal
    awk -F: 'NF == 4 { printf "%.1f", ($1 * 3600 + $2 * 60 + $3) * 1000 + $4 / 1000; next }
             { printf "-" }' <<<"$1"
}

declare -A BEST
ROWS_FILE="$WORK/rows.txt"
: >"$ROWS_FILE"
HDR=$(printf '%-6s %6s %7s %7s %7s %8s %7s %9s %10s %13s' \
    rate cps calls ok failed retrans retr% setup_ms cpu_ms/call "RSS MiB(peak)")

run_table() { # run_table NAME SCENARIO REQS_PER_CALL sipp-args...
    local name="$1" scen="$2" reqs="$3"; shift 3
    local rate calls csv out rc t0 t1 ticks created ok failed retr cps rtd
    local unfinished retr_pct cpu_ms rss hwm fail_pct
    BEST[$name]="none"
    echo
    echo "== $name: $(basename "$scen") over $TRANSPORT, ${DURATION}s per step, hold ${HOLD_MS} ms"
    echo "$HDR"
    echo "TABLE $name" >>"$ROWS_FILE"
    for rate in $RATES; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "sip_cps: the server has died; see the log below" >&2
            tail -n 30 "$WORK/server.log" >&2
            SERVER_DIED=1
            return
        fi
        calls=$((rate * DURATION))
        csv="$WORK/${name}_${rate}.csv"
        out="$WORK/${name}_${rate}.out"
        t0=$(cpu_ticks "$SERVER_PID")
        "${SIPP_CMD[@]}" -sf "$scen" "127.0.0.1:$PORT" -t "$TRANSPORT" \
            -r "$rate" -m "$calls" -l "${CALL_LIMIT:-10000}" -d "$HOLD_MS" \
            -nostdin -trace_stat -stf "$csv" -fd 1 \
            -trace_err -error_file "$WORK/${name}_${rate}_errors.log" \
            -recv_timeout 10000 -timeout "$((DURATION + HOLD_MS / 1000 + 40))s" \
            -max_recv_loops 100000 -max_sched_loops 100000 \
            -buff_size 8388608 "$@" >"$out" 2>&1 &
        SIPP_PID=$!
        wait "$SIPP_PID"; rc=$?
        SIPP_PID=""
        t1=$(cpu_ticks "$SERVER_PID")
        rss=$(status_kb "$SERVER_PID" VmRSS)
        hwm=$(status_kb "$SERVER_PID" VmHWM)
        ticks=$((t1 - t0))

        created=$(csv_field "$csv" "OutgoingCall(C)")
        ok=$(csv_field "$csv" "SuccessfulCall(C)")
        failed=$(csv_field "$csv" "FailedCall(C)")
        retr=$(csv_field "$csv" "Retransmissions(C)")
        cps=$(csv_field "$csv" "CallRate(C)")
        rtd=$(csv_field "$csv" "ResponseTime1(C)")
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
            # 0: all calls ok, 1: some failed; anything else is sipp trouble
            echo "   sipp exited with $rc; last lines of its output / error log:" >&2
            tail -n 5 "$out" >&2
            tail -n 5 "$WORK/${name}_${rate}_errors.log" >&2 2>/dev/null
        fi
        if [ -z "$created" ] || [ -z "$ok" ]; then
            echo "sip_cps: sipp (rc=$rc) produced no statistics for rate $rate; output:" >&2
            tail -n 15 "$out" >&2
            created=${created:-0}; ok=${ok:-0}; failed=${failed:-$calls}; retr=${retr:-0}
        fi
        # calls still running when sipp stopped count as failed
        unfinished=$((created - ok - failed)); [ "$unfinished" -lt 0 ] && unfinished=0
        failed=$((failed + unfinished))
        [ "$created" -lt "$calls" ] && failed=$((failed + calls - created))
        retr_pct=$(awk -v r="$retr" -v c="$created" -v q="$reqs" \
            'BEGIN { printf "%.2f", (c > 0) ? 100 * r / (c * q) : 0 }')
        cpu_ms=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v c="$created" \
            'BEGIN { printf "%.3f", (c > 0) ? t * 1000 / hz / c : 0 }')
        printf '%-6s %6.0f %7s %7s %7s %8s %7s %9s %10s %13s\n' \
            "$rate" "${cps:-0}" "$calls" "$ok" "$failed" "$retr" "$retr_pct" \
            "$(hms_to_ms "$rtd")" "$cpu_ms" \
            "$(awk -v a="$rss" -v b="$hwm" 'BEGIN { printf "%.1f(%.1f)", a / 1024, b / 1024 }')" \
            | tee -a "$ROWS_FILE"
        if [ "$failed" -eq 0 ] && awk -v p="$retr_pct" 'BEGIN { exit !(p < 1) }'; then
            BEST[$name]="$rate"
        fi
        fail_pct=$(awk -v f="$failed" -v c="$calls" 'BEGIN { printf "%d", (c > 0) ? 100 * f / c : 0 }')
        if [ "$fail_pct" -gt "$STOP_FAIL_PCT" ]; then
            echo "   (${fail_pct}% failed > STOP_FAIL_PCT=$STOP_FAIL_PCT: stopping this ramp)"
            break
        fi
        sleep "$PAUSE_S"
    done
}

# The b2bua table's phone: +15550101 → user 101 through the admin API, a SIPp registered as
# 101 from PHONE_PORT answering every call.
PHONE_PID=""
start_phone() {
    local phone_port=$((PORT + 2)) api="http://127.0.0.1:$((PORT + 1))/v1/tenants/demo"
    python3 - "$api" <<'PY' || return 1
import json, sys, urllib.request
api = sys.argv[1]
hdr = {"Authorization": "Bearer bench-admin-key"}
r = urllib.request.urlopen(urllib.request.Request(api, headers=hdr))
etag, doc = r.headers["ETag"], json.load(r)
doc["numbers"].append({"number": "+15550101", "target": {"type": "user", "extension": "101"}})
req = urllib.request.Request(api, data=json.dumps(doc).encode(), method="PUT",
    headers={**hdr, "If-Match": etag, "Content-Type": "application/json"})
urllib.request.urlopen(req)
PY
    "$SIPP" -sf "$SCEN_DIR/register_only.xml" "127.0.0.1:$PORT" -p "$phone_port" -m 1 \
        -s 101 -au 101 -ap demo101 -nostdin -timeout 5s >"$WORK/phone_register.txt" 2>&1 || return 1
    "${SIPP_CMD[@]}" -sf "$SCEN_DIR/uas_answer.xml" "127.0.0.1:$PORT" -p "$phone_port" \
        -mp $((PORT + 4)) -rtp_echo -nostdin -l "${CALL_LIMIT:-10000}" \
        -max_recv_loops 100000 -max_sched_loops 100000 -buff_size 8388608 \
        >"$WORK/phone.out" 2>&1 &
    PHONE_PID=$!
    sleep 0.5
}

SERVER_DIED=0
for table in $TABLES; do
    [ "$SERVER_DIED" = 1 ] && break
    case "$table" in
        trunk) run_table trunk "$SCEN_DIR/invite_trunk.xml" 3 -s +15550100 ;;
        auth)  run_table auth "$SCEN_DIR/invite_auth.xml" 5 \
                   -s 500 -key caller 100 -au 100 -ap demo100 ;;
        b2bua) if start_phone; then
                   run_table b2bua "$SCEN_DIR/invite_trunk.xml" 3 -s +15550101
               else
                   echo "sip_cps: could not set up the answering phone for b2bua" >&2
               fi ;;
        *) echo "sip_cps: unknown table '$table' (trunk|auth|b2bua)" >&2 ;;
    esac
done

# ---------------------------------------------------------------- summary
echo
echo "================ summary (server $BIN, $TRANSPORT, ${DURATION}s steps, hold ${HOLD_MS} ms)"
while IFS= read -r line; do
    case "$line" in
        "TABLE "*) echo; echo "${line#TABLE }:"; echo "$HDR" ;;
        *) echo "$line" ;;
    esac
done <"$ROWS_FILE"
echo
echo "retr% = SIPp retransmissions / requests SIPp sent (3 per trunk call, 5 per auth call)"
echo "cpu_ms/call = server utime+stime over the step / calls attempted"
for table in $TABLES; do
    [ -n "${BEST[$table]:-}" ] || continue
    if [ "${BEST[$table]}" = none ]; then
        echo "highest rate with 0 failed calls and retr% < 1: $table = none (no rate passed)"
    else
        echo "highest rate with 0 failed calls and retr% < 1: $table = ${BEST[$table]} calls/s"
    fi
done
if [ "$SERVER_DIED" = 1 ]; then
    echo "the server died during the run (log: $WORK/server.log)"
    KEEP_LOGS=1
    exit 1
fi
exit 0
