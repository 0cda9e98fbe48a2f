#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vtpm-fanout against vtpmd workers it spawns itself (libvirt test:///default:
# get_capabilities and destroy of a missing instance touch no vTPM state),
# on the private broker of tests/integration.sh (VT_AMQP_URL; host "a" that
# integration.sh starts is not used).  Checks that a load of 2000 calls over
# three workers is answered exactly once per call, that a broadcast reaches
# every worker, and that the accounting does notice lost, duplicate,
# unmatched and late replies (the last three with vtpm-echo, next to
# vtpm-fanout in the build tree, which breaks the protocol on request).
# Usage: integration.sh test_fanout.sh PATH/TO/vtpm-fanout PATH/TO/vtpmd
#
# Checks given to eval expand $ERR etc. when they run, hence single quotes.
# shellcheck disable=SC2016
#
# Prints one "ok - ..." / "not ok - ..." line per check, then "N passed, M
# failed"; exits 1 if any check failed.
set -u

F=${1:?usage: integration.sh test_fanout.sh PATH/TO/vtpm-fanout PATH/TO/vtpmd}
VTPMD=${2:?usage: integration.sh test_fanout.sh PATH/TO/vtpm-fanout PATH/TO/vtpmd}
ECHO=$(dirname "$F")/vtpm-echo
if [ ! -x "$F" ] || [ ! -x "$VTPMD" ] || [ -z "${VT_AMQP_URL:-}" ]; then
    echo "not ok - needs executables vtpm-fanout ($F), vtpmd ($VTPMD) and VT_AMQP_URL" \
         "(run under integration.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
URL=$VT_AMQP_URL

tmp=$(mktemp -d /tmp/test_fanout.XXXXXX)
ECHO_PID=
cleanup() {
    [ -n "$ECHO_PID" ] && kill -CONT "$ECHO_PID" 2>/dev/null && kill "$ECHO_PID" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
# vtpm-fanout keeps the configs and logs of its workers after a failed run
# (some below fail on purpose): in here, they go with the rest.
export TMPDIR=$tmp
OUT=$tmp/out
ERR=$tmp/err
RC=0

# ---- harness -----------------------------------------------------------------

# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"


skip() { echo "ok - $1 # SKIP $2"; pass=$((pass + 1)); }



# js PYEXPR: stdout is one JSON line d for which PYEXPR is true.
js() {
    python3 - "$OUT" "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1]) as f:
        d = json.loads(f.readline())
    sys.exit(0 if eval("(" + sys.argv[2] + ")", {"d": d}) else 1)
except Exception as e:
    print("#   js: %s" % e)
    sys.exit(1)
EOF
}

# fan ARGS...: vtpm-fanout --url URL --json ARGS..., bounded in time.
fan() {
    timeout 280 "$F" --url "$URL" --json "$@" > "$OUT" 2> "$ERR"
    RC=$?
}

# start_echo HOST ARGS...: vtpm-echo in the background, once it consumes.
start_echo() {
    local h=$1
    shift
    stop_echo
    "$ECHO" --url "$URL" --host "$h" "$@" 2> "$tmp/echo.err" &
    ECHO_PID=$!
    for _ in $(seq 1 100); do
        grep -q 'vtpm-echo: ready' "$tmp/echo.err" 2>/dev/null && return 0
        kill -0 "$ECHO_PID" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/#   echo: /' "$tmp/echo.err"
    return 1
}

stop_echo() {
    if [ -n "$ECHO_PID" ]; then
        kill -CONT "$ECHO_PID" 2>/dev/null
        kill "$ECHO_PID" 2>/dev/null
        wait "$ECHO_PID" 2>/dev/null
        ECHO_PID=
    fi
}

HOSTS3="['fanout-1', 'fanout-2', 'fanout-3']"

# ---- usage -------------------------------------------------------------------

"$F" --url "$URL" --calls 10 > "$OUT" 2> "$ERR"
RC=$?
check "no --hosts, --discover or --spawn-workers: exit 2" rc_is 2
"$F" --url "$URL" --hosts x --calls 10 --mix spawn=1 > "$OUT" 2> "$ERR"
RC=$?
check "--mix spawn: exit 2, says it is not supported" \
    eval 'rc_is 2 && grep -q "spawn.*not supported" "$ERR"'

# ---- the load: 2000 calls over three spawned workers ---------------------------

fan --spawn-workers 3 --vtpmd "$VTPMD" --calls 2000 --concurrency 16 \
    --mix get_capabilities=70,destroy=30
check "load: exit 0" rc_is 0
check "load: one JSON line, result ok" js "d['result'] == 'ok'"
check "load: 2000 calls, all sent" js "d['calls'] == 2000 and d['sent'] == 2000"
check "load: 0 lost" js "d['lost'] == 0 and d['lost_ids'] == []"
check "load: 0 duplicate" js "d['duplicate'] == 0"
check "load: 0 unmatched, 0 invalid" js "d['unmatched'] == 0 and d['invalid'] == 0"
check "load: 2000 ok, no fault" js "d['ok'] == 2000 and d['faulted'] == 0 and d['faults'] == {}"
check "load: 3 hosts reported, fanout-1..3" \
    js "sorted(d['per_host']) == $HOSTS3 and sorted(d['hosts']) == $HOSTS3"
check "load: round-robin, 666 or 667 calls per host, all ok" \
    js "all(h['calls'] in (666, 667) and h['ok'] == h['calls'] for h in d['per_host'].values())
        and sum(h['calls'] for h in d['per_host'].values()) == 2000"
check "load: both methods of the mix used, ~70/30" \
    js "set(d['methods']) == {'get_capabilities', 'destroy'} and
        1200 <= d['methods']['get_capabilities']['calls'] <= 1600 and
        d['methods']['get_capabilities']['calls'] + d['methods']['destroy']['calls'] == 2000"
check "load: throughput and latency percentiles reported, ordered" \
    js "d['calls_per_s'] > 0 and
        0 < d['latency_ms']['p50'] <= d['latency_ms']['p90'] <= d['latency_ms']['p99']
          <= d['latency_ms']['max']"
check "load: every worker answered and exited 0 on SIGTERM" \
    js "[w['host'] for w in d['workers']] == $HOSTS3 and all(w['exit_ok'] for w in d['workers'])"

# ---- broadcast -----------------------------------------------------------------

fan --spawn-workers 3 --vtpmd "$VTPMD" --broadcast --calls 0
check "broadcast: exit 0" rc_is 0
# (Other workers on the broker would answer too: "extra", not a failure.)
check "broadcast: all three hosts answered, none missing" \
    js "set($HOSTS3) <= set(d['broadcast']['answered']) and d['broadcast']['missing'] == []"

fan --spawn-workers 3 --vtpmd "$VTPMD" --hosts fanout-1,fanout-2,fanout-3,fanout-9 \
    --broadcast --calls 0 --timeout 2
check "broadcast with a host that does not exist: exit 1" rc_is 1
check "broadcast with a host that does not exist: JSON names it missing" \
    js "d['result'] == 'fail' and d['broadcast']['missing'] == ['fanout-9'] and
        set($HOSTS3) <= set(d['broadcast']['answered'])"
check "broadcast with a host that does not exist: stderr names it" grep -q "fanout-9" "$ERR"

fan --spawn-workers 3 --vtpmd "$VTPMD" --hosts fanout-2 --broadcast --calls 0
check "broadcast: workers not in --hosts are listed as extra, not a failure" \
    eval 'rc_is 0 && js "d[\"broadcast\"][\"missing\"] == [] and
                         [\"fanout-1\", \"fanout-3\"] == [h for h in d[\"broadcast\"][\"extra\"]
                                                      if h.startswith(\"fanout-\")]"'

fan --spawn-workers 2 --vtpmd "$VTPMD" --discover --calls 100 --concurrency 4
check "discover: exit 0, both spawned workers found and called" \
    eval 'rc_is 0 && js "{\"fanout-1\", \"fanout-2\"} <= set(d[\"per_host\"]) and d[\"ok\"] == 100"'

# ---- the accounting notices what goes wrong --------------------------------------

fan --hosts nosuchhost --calls 3 --timeout 1 --settle 0
check "lost: no worker for the host: exit 1, 3 lost, each listed" \
    eval 'rc_is 1 && js "d[\"lost\"] == 3 and len(d[\"lost_ids\"]) == 3 and d[\"ok\"] == 0"'

if [ ! -x "$ECHO" ]; then
    for what in duplicate unmatched late; do
        skip "$what replies noticed" "no vtpm-echo next to vtpm-fanout"
    done
else
    if start_echo echo-dup --copies 2; then
        fan --hosts echo-dup --calls 50 --concurrency 4 --settle 1
        check "duplicate: every reply twice: exit 1, 50 duplicates, 50 ok, 0 lost" \
            eval 'rc_is 1 && js "d[\"duplicate\"] == 50 and d[\"ok\"] == 50 and d[\"lost\"] == 0
                                 and len(d[\"duplicate_ids\"]) == 20"'
    else
        fail "vtpm-echo --copies 2 starts"
    fi
    if start_echo echo-foreign --foreign-corr; then
        fan --hosts echo-foreign --calls 5 --concurrency 5 --timeout 1 --settle 0
        check "unmatched: replies with a foreign correlation id: exit 1, 5 unmatched, 5 lost" \
            eval 'rc_is 1 && js "d[\"unmatched\"] == 5 and d[\"lost\"] == 5"'
    else
        fail "vtpm-echo --foreign-corr starts"
    fi
    # Stopped echo: the calls time out (2 s); it resumes while vtpm-fanout
    # still waits for the missing replies (up to --timeout more).
    if start_echo echo-late; then
        kill -STOP "$ECHO_PID"
        "$F" --url "$URL" --json --hosts echo-late --calls 5 --concurrency 5 --timeout 2 \
            --settle 0 > "$OUT" 2> "$ERR" &
        fpid=$!
        sleep 3
        kill -CONT "$ECHO_PID"
        wait "$fpid"
        RC=$?
        check "late: replies after the call's timeout: exit 0, 5 late, 0 lost, 5 ok" \
            eval 'rc_is 0 && js "d[\"late\"] == 5 and d[\"lost\"] == 0 and d[\"ok\"] == 5"'
    else
        fail "vtpm-echo starts (late)"
    fi
    stop_echo
fi

tap_done
