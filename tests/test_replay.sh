#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vtpm-replay through its CLI, on the private broker of tests/integration.sh
# (host "a" that integration.sh starts is not used): vtpmd workers of our
# own on libvirt test:///default (get_capabilities, destroy of instances
# that do not exist and requests that fault touch no vTPM state).
#
# Records a session of vtpmctl calls (faults, a broadcast, a request with
# instance.vtpm.secret) from the RabbitMQ firehose, shows it, replays it
# against a fresh worker under another name with --compare, and checks that
# a worker configured differently, a missing worker, a recording without
# replies and a truncated file are each reported as they should be.
# Usage: integration.sh test_replay.sh PATH/TO/vtpm-replay PATH/TO/vtpmctl PATH/TO/vtpmd
#
# Checks given to eval expand $OUT etc. when they run, hence single quotes.
# shellcheck disable=SC2016
set -u

R=${1:?usage: integration.sh test_replay.sh PATH/TO/vtpm-replay PATH/TO/vtpmctl PATH/TO/vtpmd}
CTL=${2:?usage: integration.sh test_replay.sh PATH/TO/vtpm-replay PATH/TO/vtpmctl PATH/TO/vtpmd}
VTPMD=${3:?usage: integration.sh test_replay.sh PATH/TO/vtpm-replay PATH/TO/vtpmctl PATH/TO/vtpmd}
if [ ! -x "$R" ] || [ ! -x "$CTL" ] || [ ! -x "$VTPMD" ] || [ -z "${VT_AMQP_URL:-}" ] ||
   [ -z "${VT_RMQ_NODE:-}" ]; then
    echo "not ok - needs executables vtpm-replay ($R), vtpmctl ($CTL), vtpmd ($VTPMD)," \
         "VT_AMQP_URL and VT_RMQ_NODE (run under integration.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
URL=$VT_AMQP_URL

# rabbitmqctl for integration.sh's node (env.sh resets the node's name
# when sourced: keep it).
node=$VT_RMQ_NODE
port=$VT_RMQ_PORT
# shellcheck source=lib/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
VT_RMQ_NODE=$node
VT_RMQ_PORT=$port

tmp=$(mktemp -d /tmp/test_replay.XXXXXX)
PIDS=()
REC_PID=
cleanup() {
    local p
    [ -n "$REC_PID" ] && kill "$REC_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0

# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"

# A secret nobody else would write: it must never reach a recording.
SECRET_TEXT="replay-test-secret-$$-$RANDOM"
SECRET_B64=$(printf '%s' "$SECRET_TEXT" | base64 -w0)
UUID=6f1d7c52-0b47-4b8a-9d51-1f0e3c1b2a77

# ---- helpers -----------------------------------------------------------------

# start_worker HOST [EXTRA_LIBVIRT_LINE [EXCHANGE TOPIC]]: a vtpmd on
# test:///default, once it answers.
start_worker() {
    local h=$1 extra=${2:-} x=${3:-vtpm} t=${4:-vtpm} d=$tmp/$1
    mkdir -p "$d"/{images,console,swtpm,pools,kept}
    cat > "$d.conf" <<EOF
[amqp]
url = $URL
exchange = $x
topic = $t
[worker]
host = $h
workers = 2
[libvirt]
uri = test:///default
images_dir = $d/images
console_dir = $d/console
state_dir = $d/swtpm
$extra
[store]
pool_dir = $d/pools
kept_dir = $d/kept
EOF
    chmod 600 "$d.conf" # holds the broker password (docs/security.md)
    "$VTPMD" --config "$d.conf" > "$d.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 60); do
        if "$CTL" call --url "$URL" --exchange "$x" --topic "$t" --host "$h" --timeout 2 \
            get_capabilities > /dev/null 2>&1; then
            return 0
        fi
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.2
    done
    sed 's/^/#   vtpmd: /' "$d.log" | tail -20
    return 1
}

# run ARGS...: vtpm-replay ARGS, bounded in time.
run() {
    timeout 120 "$R" "$@" > "$OUT" 2> "$ERR"
    RC=$?
}

# start_recording FILE ARGS...: vtpm-replay record in the background, once bound.
start_recording() {
    local f=$1
    shift
    "$R" record --url "$URL" --out "$f" "$@" > "$tmp/rec.out" 2> "$tmp/rec.err" &
    REC_PID=$!
    for _ in $(seq 1 150); do
        grep -q 'vtpm-replay: recording' "$tmp/rec.err" 2>/dev/null && return 0
        kill -0 "$REC_PID" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/#   record: /' "$tmp/rec.err"
    return 1
}

# stop_recording: SIGTERM, as an operator ends a session; RC = its exit status.
stop_recording() {
    kill -TERM "$REC_PID" 2>/dev/null
    wait "$REC_PID"
    RC=$?
    REC_PID=
    cp "$tmp/rec.err" "$ERR"
    : > "$OUT"
}

ctl() { "$CTL" call --url "$URL" --timeout 30 "$@" > /dev/null 2>&1; }

# js FILE PYEXPR: FILE holds JSON lines; l is the list of parsed lines.
js() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        l = [json.loads(x) for x in f if x.strip()]
    sys.exit(0 if eval("(" + sys.argv[2] + ")", {"l": l}) else 1)
except Exception as e:
    print("#   js: %s" % e)
    sys.exit(1)
EOF
}

# ---- usage -------------------------------------------------------------------

run
check "no command: exit 2" rc_is 2
run record --url "$URL"
check "record without --out: exit 2, says so" eval 'rc_is 2 && grep -q -- "--out" "$ERR"'
run record --url "$URL" --out "$tmp/x" --duration 1 --count 1
check "record --duration with --count: exit 2" rc_is 2
run replay "$tmp/none" --url "$URL" --speed 2 --as-fast-as-possible
check "replay --speed with --as-fast-as-possible: exit 2" rc_is 2
run replay "$tmp/none" --url "$URL" --host-map nonsense
check "replay --host-map without =: exit 2" rc_is 2
run show "$tmp/none"
check "show of a missing file: exit 1" rc_is 1
run replay --help
check "replay --help lists the ignored result fields" \
    eval 'rc_is 0 && grep -q "libvirt_version" "$OUT" && grep -q "sha256" "$OUT"'

# ---- the worker being recorded --------------------------------------------------

if ! start_worker rec-a; then
    fail "worker rec-a starts"
    tap_done
    exit 1
fi

# ---- without the firehose: requests only ------------------------------------------

vt_rmqctl trace_off > /dev/null 2>&1
NOFH=$tmp/nofirehose.vrec
if start_recording "$NOFH"; then
    ctl --host rec-a get_capabilities
    ctl --host rec-a destroy "{\"instance\":{\"uuid\":\"$UUID\"}}"
    stop_recording
    check "firehose off: record exits 0 on SIGTERM" rc_is 0
    check "firehose off: stderr says requests only" grep -q "requests only" "$ERR"
    run show "$NOFH"
    check "firehose off: header says replies_recorded false, with a note" \
        js "$OUT" 'l[0]["source"] == "exchanges" and l[0]["replies_recorded"] is False and
                   "firehose" in l[0]["note"]'
    check "firehose off: both requests, no replies" \
        js "$OUT" '[r["kind"] for r in l[1:]] == ["request", "request"] and
                   [r["body"]["method"] for r in l[1:]] == ["get_capabilities", "destroy"]'
    run replay "$NOFH" --url "$URL" --compare
    check "firehose off: --compare exits 1 and says it cannot compare" \
        eval 'rc_is 1 && grep -q "cannot compare" "$ERR"'
else
    fail "record starts without the firehose"
fi

# ---- record before any worker: the exchanges declared as vtpmd declares them ------
#
# Nothing has declared early-x and early-t_fanout yet: record declares
# them (with the firehose off, it taps them), and a worker started after it
# on those exchanges must find them as it would have made them (the broker
# refuses a declaration with other flags: the worker would not start).

exchange_row() {
    vt_rmqctl -q list_exchanges name type durable auto_delete internal 2>/dev/null |
        awk -v n="$1" '$1 == n { print $2, $3, $4, $5 }'
}
EARLY=$tmp/early.vrec
if start_recording "$EARLY" --exchange early-x --topic early-t --source exchanges; then
    check "record before any worker: it says it declared the exchanges" \
        grep -q "declared early-x (topic) and early-t_fanout (fanout)" "$tmp/rec.err"
    check "record before any worker: early-x as vtpmd's exchange ($(exchange_row early-x))" \
        eval '[ "$(exchange_row early-x)" = "topic true false false" ] &&
              [ "$(exchange_row early-x)" = "$(exchange_row vtpm)" ]'
    check "record before any worker: early-t_fanout as vtpmd's ($(exchange_row early-t_fanout))" \
        eval '[ "$(exchange_row early-t_fanout)" = "fanout true false false" ] &&
              [ "$(exchange_row early-t_fanout)" = "$(exchange_row vtpm_fanout)" ]'
    if start_worker early-w "" early-x early-t; then
        pass "record before any worker: a worker on those exchanges starts and answers"
        "$CTL" call --url "$URL" --exchange early-x --topic early-t --host early-w --timeout 30 \
            get_capabilities > /dev/null 2>&1
    else
        fail "record before any worker: a worker on those exchanges starts and answers"
    fi
    stop_recording
    check "record before any worker: exits 0 on SIGTERM" rc_is 0
    run show "$EARLY"
    check "record before any worker: the worker's requests are recorded" \
        js "$OUT" 'l[0]["exchange"] == "early-x" and len(l) >= 2 and
                   all(r["kind"] == "request" and r["body"]["method"] == "get_capabilities"
                       for r in l[1:])'
else
    fail "record starts before any worker (no exchange early-x yet)"
fi

run record --url "$URL" --out "$tmp/x" --source firehose
check "--source firehose while it is off: exit 1, says how to turn it on" \
    eval 'rc_is 1 && grep -q "trace_on" "$ERR"'

# ---- the session, from the firehose -----------------------------------------------

if ! vt_rmqctl trace_on > "$tmp/trace.out" 2>&1; then
    sed 's/^/#   /' "$tmp/trace.out"
    fail "rabbitmqctl trace_on"
fi
REC=$tmp/session.vrec
if start_recording "$REC"; then
    ctl --host rec-a get_capabilities
    ctl --host rec-a destroy '{"instance":{"uuid":"not-a-uuid"}}'          # BadRequest
    ctl --host rec-a destroy "{\"instance\":{\"uuid\":\"$UUID\",\"vtpm\":{\"secret\":{\"\$bin\":\"$SECRET_B64\"}}}}"
    ctl --host rec-a no_such_method                                          # UnknownMethod
    ctl --host rec-a destroy "{\"instance\":{\"uuid\":\"$UUID\"},\"keep_vtpm\":true}"
    ctl --fanout --timeout 3 get_capabilities                                # a broadcast
    sleep 1 # the broadcast's replies
    stop_recording
    check "session: record exits 0 on SIGTERM" rc_is 0
    check "session: stderr counts 6 requests and 6 replies" \
        grep -q "recorded 6 requests and 6 replies" "$ERR"
else
    fail "record starts with the firehose on"
fi

run show "$REC"
cp "$OUT" "$tmp/session.json"
check "show: exit 0, one JSON line per record (1 header + 12)" \
    eval 'rc_is 0 && js "$OUT" "len(l) == 13"'
check "show: header names format, version, source and what was bound" \
    js "$OUT" 'l[0]["kind"] == "header" and l[0]["format"] == "vtpm-replay" and
               l[0]["format_version"] == 1 and l[0]["source"] == "firehose" and
               l[0]["replies_recorded"] is True and l[0]["bound"] == ["vtpm.#", "vtpm_fanout"] and
               "args.instance.vtpm.secret" in l[0]["redacted"]'
check "show: the six requests in the order they were made" \
    js "$OUT" '[r["body"]["method"] for r in l if r["kind"] == "request"] ==
               ["get_capabilities", "destroy", "destroy", "no_such_method", "destroy",
                "get_capabilities"]'
check "show: requests carry properties, arrival times increase" \
    js "$OUT" 'len(l) == 13 and all(r["properties"]["reply_to"] and r["properties"]["correlation_id"] and
                   r["properties"]["message_id"] for r in l if r["kind"] == "request") and
               [r["t_rel_us"] for r in l[1:]] == sorted(r["t_rel_us"] for r in l[1:]) and
               all(r["t_unix_us"] > 0 for r in l[1:])'
check "show: the broadcast went to vtpm_fanout, the rest to vtpm.rec-a" \
    js "$OUT" '[(r["exchange"], r["routing_key"]) for r in l if r["kind"] == "request"] ==
               [("vtpm", "vtpm.rec-a")] * 5 + [("vtpm_fanout", "")]'
check "show: every reply names its request and has its correlation id" \
    js "$OUT" 'len(l) == 13 and all(l[1 + r["request_seq"]]["kind"] == "request" and
                   l[1 + r["request_seq"]]["properties"]["correlation_id"] ==
                   r["properties"]["correlation_id"] and r["exchange"] == "" and
                   r["routing_key"] == l[1 + r["request_seq"]]["properties"]["reply_to"]
                   for r in l if r["kind"] == "reply")'
check "show: the replies as the worker sent them (ok, BadRequest, ok, UnknownMethod, ok, ok)" \
    js "$OUT" '[r["body"]["ok"] or r["body"]["fault"]["code"] for r in l if r["kind"] == "reply"]
               == [True, "BadRequest", True, "UnknownMethod", True, True]'
check "show: the secret is redacted and the record says where" \
    js "$OUT" '[r for r in l[1:] if r.get("redacted")] ==
               [r for r in l if r["kind"] == "request" and r["seq"] == 4] and
               l[5]["redacted"] == ["args.instance.vtpm.secret"] and
               l[5]["body"]["args"]["instance"]["vtpm"]["secret"] == "<redacted>"'
check "file: the secret is nowhere in it (raw or base64)" \
    eval '[ -s "$REC" ] && ! grep -q -a -- "$SECRET_TEXT" "$REC" && ! grep -q -a -- "$SECRET_B64" "$REC" &&
          ! grep -q -- "$SECRET_B64" "$tmp/session.json"'
check "file: no broker password (header names amqp://127.0.0.1:PORT/%2f)" \
    eval '! grep -q -a "guest:guest" "$REC" && js "$tmp/session.json" \
          "l[0][\"broker\"].lower() == \"amqp://127.0.0.1:$VT_RMQ_PORT/%2f\""'

# ---- replay against a fresh worker under another name --------------------------------

if start_worker rec-b; then
    run replay "$REC" --url "$URL" --host-map rec-a=rec-b --compare
    check "replay to rec-b --compare: exit 0" rc_is 0
    check "replay to rec-b: summary, 6 requests, 6 matched, none missing" \
        grep -q "summary: replayed 6 requests (6 calls, 0 casts), 6 calls answered; compared: 6 matched, 0 mismatched, 0 missing replies, 0 not compared" "$OUT"
    check "replay to rec-b: says the secret request went out redacted" \
        grep -q 'redacted: request 4 destroy (vtpm.rec-b)' "$OUT"
    check "replay to rec-b: rec-b ran the requests (its log)" \
        eval 'grep -q "method=no_such_method" "$tmp/rec-b.log" &&
              [ "$(grep -c "method=destroy" "$tmp/rec-b.log")" -ge 3 ]'
    run replay "$REC" --url "$URL" --host-map rec-a=rec-b --compare --as-fast-as-possible
    check "replay --as-fast-as-possible --compare: exit 0, 6 matched" \
        eval 'rc_is 0 && grep -q "6 matched, 0 mismatched" "$OUT"'
    printf 'k%.0s' $(seq 1 32) > "$tmp/secret"
    run replay "$REC" --url "$URL" --host-map rec-a=rec-b --compare --speed 4 \
        --secret-file "$tmp/secret"
    check "replay --speed 4 --secret-file: exit 0, the secret request not reported redacted" \
        eval 'rc_is 0 && ! grep -q "^redacted:" "$OUT" && grep -q "6 matched" "$OUT"'
else
    fail "worker rec-b starts"
fi

# ---- a worker that answers differently -------------------------------------------------

if start_worker rec-c "swtpm_enabled = true"; then
    run replay "$REC" --url "$URL" --host-map rec-a=rec-c --compare
    check "replay to a differently configured worker: exit 1" rc_is 1
    check "...names the request and the first differing result path" \
        grep -q '^mismatch: request 0 get_capabilities (vtpm.rec-c): result\.missing\.COMPUTE_SECURITY_TPM_[A-Z0-9_]*: recorded "' "$OUT"
    check "...and counts it in the summary" grep -q "5 matched, 1 mismatched" "$OUT"
    run replay "$REC" --url "$URL" --host-map rec-a=rec-c --compare --ignore missing
    check "replay to it with --ignore missing: exit 0" \
        eval 'rc_is 0 && grep -q "6 matched, 0 mismatched" "$OUT"'
else
    fail "worker rec-c starts"
fi

run replay "$REC" --url "$URL" --host-map rec-a=nobody-home --timeout 1 --as-fast-as-possible --compare
check "replay to a host with no worker: exit 1, 5 missing replies listed" \
    eval 'rc_is 1 && [ "$(grep -c "^missing: " "$OUT")" = 5 ] &&
          grep -q "missing: request 0 get_capabilities (vtpm.nobody-home): no reply within 1 s" "$OUT"'

# ---- an edited recording: the recorded reply differs ---------------------------------------

# Rewrite one recorded fault code in place (same length, CRC fixed up):
# the replay must report exactly that request.
python3 - "$REC" "$tmp/edited.vrec" <<'EOF'
import struct, sys, zlib
data = bytearray(open(sys.argv[1], "rb").read())
off = 8
while off < len(data):
    n, _ = struct.unpack(">II", data[off:off + 8])
    p = data[off + 8:off + 8 + n]
    if b"UnknownMethod" in p:
        p = p.replace(b"UnknownMethod", b"UnknownMethoX")
        data[off + 8:off + 8 + n] = p
        data[off + 4:off + 8] = struct.pack(">I", zlib.crc32(bytes(p)))
    off += 8 + n
open(sys.argv[2], "wb").write(data)
EOF
run replay "$tmp/edited.vrec" --url "$URL" --host-map rec-a=rec-b --compare
check "edited recording: exit 1, the fault code mismatch named" \
    eval 'rc_is 1 && grep -q "^mismatch: request 6 no_such_method (vtpm.rec-b): fault.code: recorded \"UnknownMethoX\", replayed \"UnknownMethod\"" "$OUT"'

# A cast: the same recording with the reply_to of the no_such_method request
# renamed away (same length, CRC fixed up) is replayed as a cast: sent, not
# awaited, not compared.
python3 - "$REC" "$tmp/cast.vrec" <<'EOF'
import struct, sys, zlib
data = bytearray(open(sys.argv[1], "rb").read())
off = 8
while off < len(data):
    n, _ = struct.unpack(">II", data[off:off + 8])
    p = data[off + 8:off + 8 + n]
    if b"no_such_method" in p and b"\xa8reply_to" in p:
        p = p.replace(b"\xa8reply_to", b"\xa8reply_tX", 1)
        data[off + 8:off + 8 + n] = p
        data[off + 4:off + 8] = struct.pack(">I", zlib.crc32(bytes(p)))
    off += 8 + n
open(sys.argv[2], "wb").write(data)
EOF
before=$(grep -c "method=no_such_method" "$tmp/rec-b.log")
run replay "$tmp/cast.vrec" --url "$URL" --host-map rec-a=rec-b --compare
check "cast: replayed as a cast, the calls still all match" \
    eval 'rc_is 0 && grep -q "replayed 6 requests (5 calls, 1 casts), 5 calls answered; compared: 5 matched, 0 mismatched" "$OUT"'
for _ in $(seq 1 50); do
    [ "$(grep -c "method=no_such_method" "$tmp/rec-b.log")" -gt "$before" ] && break
    sleep 0.1
done
check "cast: rec-b ran it" eval '[ "$(grep -c "method=no_such_method" "$tmp/rec-b.log")" -gt "$before" ]'

# ---- damaged files -----------------------------------------------------------------------------

# Offset of the last frame, from the framing (8-byte magic, then length+CRC+payload).
last_off=$(python3 - "$REC" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
off, last = 8, 8
while off < len(data):
    last = off
    off += 8 + struct.unpack(">I", data[off:off + 4])[0]
print(last)
EOF
)
cp "$REC" "$tmp/cut.vrec"
truncate -s $((last_off + 11)) "$tmp/cut.vrec"
run show "$tmp/cut.vrec"
check "truncated file: show exits 1" rc_is 1
check "truncated file: the 12 records before the damage are printed" \
    eval 'js "$OUT" "len(l) == 12 and l[-1][\"seq\"] == 10"'
check "truncated file: stderr names the offset of the damaged record" \
    grep -q "damaged at offset $last_off (record 12): truncated record" "$ERR"
# (The broadcast has no recorded reply left: it is awaited for --timeout.)
run replay "$tmp/cut.vrec" --url "$URL" --host-map rec-a=rec-b --compare --timeout 3
check "truncated file: replay warns, replays the valid records; the reply cut off is not compared" \
    eval 'rc_is 0 && grep -q "damaged at offset $last_off" "$ERR" &&
          grep -q "5 matched, 0 mismatched, 0 missing replies, 1 not compared" "$OUT"'
printf 'not a recording\n' > "$tmp/junk"
run show "$tmp/junk"
check "not a recording: show exits 1, says so" \
    eval 'rc_is 1 && grep -q "not a vtpm-replay recording" "$ERR"'

# ---- --count, --duration and --bind --------------------------------------------------------------

# Deadlines: one call with a 5 s budget, one already past (Expired).
if start_recording "$tmp/count.vrec" --count 3; then
    ctl --host rec-a --deadline 5000 get_capabilities
    ctl --host rec-b get_capabilities
    ctl --host rec-a --deadline -1000 destroy "{\"instance\":{\"uuid\":\"$UUID\"}}"
    wait "$REC_PID"
    RC=$?
    REC_PID=
    cp "$tmp/rec.err" "$ERR"
    check "--count 3: record stops by itself, exit 0, 3 requests and their replies" \
        eval 'rc_is 0 && grep -q "recorded 3 requests and 3 replies" "$ERR"'
    run show "$tmp/count.vrec"
    cp "$OUT" "$tmp/count.json"
    check "deadlines: recorded with deadline_ms, answered ok and Expired" \
        js "$OUT" 'len(l) == 7 and "deadline_ms" in l[1]["body"] and
                   [r["body"]["ok"] or r["body"]["fault"]["code"] for r in l
                    if r["kind"] == "reply"] == [True, True, "Expired"]'
    # Replay once the recorded deadline has passed: the budget moves along.
    deadline_s=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[1])["body"]["deadline_ms"] / 1000)' "$tmp/count.json" 2>/dev/null || echo 0)
    while python3 -c 'import sys,time; sys.exit(0 if time.time() <= float(sys.argv[1]) + 0.2 else 1)' "$deadline_s"; do
        sleep 0.5
    done
    run replay "$tmp/count.vrec" --url "$URL" --host-map rec-a=rec-b --compare
    check "deadlines: replayed after the recorded deadline passed: still ok (and Expired stays Expired)" \
        eval 'rc_is 0 && grep -q "3 matched, 0 mismatched" "$OUT"'
else
    fail "record --count starts"
fi
if start_recording "$tmp/bind.vrec" --bind vtpm.rec-b; then
    ctl --host rec-a get_capabilities
    ctl --host rec-b destroy "{\"instance\":{\"uuid\":\"$UUID\"}}"
    stop_recording
    run show "$tmp/bind.vrec"
    check "--bind vtpm.rec-b: only rec-b's request and its reply" \
        js "$OUT" 'len(l) == 3 and l[0]["bound"][0] == "vtpm.rec-b" and
                   l[1]["kind"] == "request" and l[1]["routing_key"] == "vtpm.rec-b" and
                   l[2]["kind"] == "reply" and l[2]["request_seq"] == l[1]["seq"]'
else
    fail "record --bind starts"
fi
run record --url "$URL" --out "$tmp/idle.vrec" --duration 1
check "--duration 1 with no traffic: exit 0, a header and nothing else" \
    eval 'rc_is 0 && "$R" show "$tmp/idle.vrec" > "$OUT" && js "$OUT" "len(l) == 1"'

vt_rmqctl trace_off > /dev/null 2>&1
tap_done
