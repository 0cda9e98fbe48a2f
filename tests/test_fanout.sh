#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vtpm-fanout against vtpmd workers it spawns itself (libvirt test:///default:
# get_capabilities, spawn of an instance without a vTPM and destroy touch no
# vTPM state), on the private broker of tests/integration.sh (VT_AMQP_URL).
# Checks that a load of 2000 calls over three workers is answered exactly
# once per call and every instance it spawned is destroyed again, that a
# broadcast reaches every worker, and that the accounting does notice lost,
# duplicate, unmatched and late replies (the last three with vtpm-echo, next
# to vtpm-fanout in the build tree, which breaks the protocol on request).
# Last, a few spawns on host "a" that integration.sh starts (QEMU/TCG): no
# domain may be left there after the run (test:///default keeps its domains
# inside each worker process, out of sight).
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
REAL_PID=
cleanup() {
    [ -n "$ECHO_PID" ] && kill -CONT "$ECHO_PID" 2>/dev/null && kill "$ECHO_PID" 2>/dev/null
    [ -n "$REAL_PID" ] && kill "$REAL_PID" 2>/dev/null && wait "$REAL_PID" 2>/dev/null
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
"$F" --url "$URL" --hosts x --calls 10 --mix get_capabilities=1,power_off=1 > "$OUT" 2> "$ERR"
RC=$?
check "--mix power_off (needs an existing instance): exit 2, names the method" \
    eval 'rc_is 2 && grep -q "power_off.*not supported.*existing instance" "$ERR"'
"$F" --url "$URL" --hosts x --calls 10 --mix resize=1 > "$OUT" 2> "$ERR"
RC=$?
check "--mix resize: exit 2, names the method" \
    eval 'rc_is 2 && grep -q "resize.*not supported" "$ERR"'
"$F" --url "$URL" --hosts x --calls 10 --mix spawn=1 --spawn-tpm 3.0 > "$OUT" 2> "$ERR"
RC=$?
check "--spawn-tpm 3.0: exit 2" eval 'rc_is 2 && grep -q "spawn-tpm must be 2.0 or 1.2" "$ERR"'

# ---- the load: 2000 calls over three spawned workers ---------------------------

fan --spawn-workers 3 --vtpmd "$VTPMD" --calls 2000 --concurrency 16 \
    --mix get_capabilities=70,spawn=10,destroy=20
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
check "load: the three methods of the mix used, ~70/10/20" \
    js "set(d['methods']) == {'get_capabilities', 'spawn', 'destroy'} and
        1200 <= d['methods']['get_capabilities']['calls'] <= 1600 and
        100 <= d['methods']['spawn']['calls'] <= 320 and
        250 <= d['methods']['destroy']['calls'] <= 550 and
        sum(m['calls'] for m in d['methods'].values()) == 2000"
# A fault would show a spec vtpmd's decoder refuses or a domain that the
# test driver cannot define or undefine.
check "load: every spawn ok, no fault, latency reported" \
    js "d['methods']['spawn']['ok'] == d['methods']['spawn']['calls'] and
        d['methods']['spawn']['faults'] == {} and d['methods']['spawn']['latency_ms']['p50'] > 0"
check "load: cleanup destroyed every spawned instance, each one found there" \
    js "d['cleanup']['spawns_sent'] == d['methods']['spawn']['calls'] and
        d['cleanup']['destroyed'] == d['cleanup']['spawns_sent'] and
        d['cleanup']['existed'] == d['cleanup']['spawns_sent'] and
        d['cleanup']['failed'] == 0 and d['cleanup']['failures'] == []"
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

# ---- --spawn-workers without --vtpmd ------------------------------------------------
# The vtpmd beside vtpm-fanout (here the build tree's ../worker/vtpmd), else
# the first on PATH, and the run says which one it started.

fan --spawn-workers 1 --calls 10
check "--spawn-workers without --vtpmd: exit 0, 10 calls answered" \
    eval 'rc_is 0 && js "d[\"ok\"] == 10"'
check "--spawn-workers without --vtpmd: says it started the vtpmd beside it" \
    grep -qF "starting 1 worker: $(readlink -f "$VTPMD") (installed beside vtpm-fanout)" "$ERR"
mkdir -p "$tmp/alone"
cp "$F" "$tmp/alone/vtpm-fanout"
PATH="$(dirname "$VTPMD"):$PATH" timeout 280 "$tmp/alone/vtpm-fanout" --url "$URL" --json \
    --spawn-workers 1 --calls 10 > "$OUT" 2> "$ERR"
RC=$?
check "--spawn-workers, no vtpmd beside vtpm-fanout: the one on PATH, and it says so" \
    eval 'rc_is 0 && js "d[\"ok\"] == 10" &&
          grep -qF "starting 1 worker: $(dirname "$VTPMD")/vtpmd (found on PATH)" "$ERR"'
PATH=/nonexistent "$tmp/alone/vtpm-fanout" --url "$URL" --spawn-workers 1 --calls 10 \
    > "$OUT" 2> "$ERR"
RC=$?
check "--spawn-workers, no vtpmd beside it or on PATH: exit 2 asking for --vtpmd" \
    eval 'rc_is 2 && grep -q -- "give --vtpmd PATH" "$ERR"'

# ---- the accounting notices what goes wrong --------------------------------------

fan --hosts nosuchhost --calls 3 --timeout 1 --settle 0
check "lost: no worker for the host: exit 1, 3 lost, each listed" \
    eval 'rc_is 1 && js "d[\"lost\"] == 3 and len(d[\"lost_ids\"]) == 3 and d[\"ok\"] == 0"'

fan --hosts nosuchhost --calls 3 --mix spawn=1 --timeout 1 --settle 0
check "lost spawns: their instances may exist: cleanup sent anyway, 3 failed, listed" \
    eval 'rc_is 1 && js "d[\"lost\"] == 3 and d[\"cleanup\"][\"spawns_sent\"] == 3 and
                         d[\"cleanup\"][\"failed\"] == 3 and
                         all(\"@nosuchhost: no reply\" in f for f in d[\"cleanup\"][\"failures\"])"'

# Every destroy held 3 s in the workers (the fault-injection delay, which
# the workers inherit), 1 s allowed: the load is clean, the cleanup is
# not, and that alone fails the run.
VTPMD_DELAY_AT=destroy.start=3000 \
    fan --spawn-workers 1 --vtpmd "$VTPMD" --calls 4 --concurrency 4 --mix spawn=1 \
    --timeout 1 --settle 0
check "cleanup that times out: exit 1 with nothing lost, each instance listed, stderr says so" \
    eval 'rc_is 1 && js "d[\"ok\"] == 4 and d[\"lost\"] == 0 and d[\"cleanup\"][\"failed\"] == 4 and
                         d[\"cleanup\"][\"destroyed\"] == 0 and
                         len(d[\"cleanup\"][\"failures\"]) == 4" &&
          grep -q "cleanup: 4 of 4 spawned instances may be left behind" "$ERR"'

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

# ---- a real libvirt host: no domain left behind ------------------------------------
#
# One vtpmd in host a's namespace (QEMU/TCG, as tests/acceptance/guest.sh
# starts it).  Spawns of firmware-only guests take seconds each here: few.

if [ -z "${VT_HOST_A_URI:-}" ] || [ -z "${VT_ROOT:-}" ]; then
    skip "real host: spawns cleaned up, no domain left" "no host a (VT_HOST_A_URI, VT_ROOT)"
else
    # shellcheck source=lib/env.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
    REAL=fanout-real-$$
    conf=$tmp/$REAL.conf
    printf '[amqp]\nurl = %s\n[worker]\nhost = %s\n[libvirt]\nuri = qemu:///system\nshutdown_timeout = 1\n' \
        "$URL" "$REAL" > "$conf"
    chmod 600 "$conf" # holds the broker password (docs/security.md)
    vt_host_spawn a "$VTPMD" --config "$conf" --log-file "$tmp/$REAL.log"
    REAL_PID=$VT_LAST_PID
    up=
    for _ in $(seq 1 150); do
        if "$F" --url "$URL" --hosts "$REAL" --calls 1 --timeout 1 --settle 0 \
            > /dev/null 2>&1; then
            up=1
            break
        fi
        kill -0 "$REAL_PID" 2>/dev/null || break
        sleep 0.2
    done
    if [ -z "$up" ]; then
        RC=-; : > "$OUT"; cp "$tmp/$REAL.log" "$ERR" 2>/dev/null
        fail "real host: vtpmd on host a answers get_capabilities"
    else
        fan --hosts "$REAL" --calls 40 --concurrency 4 --timeout 120 --settle 0.5 \
            --mix get_capabilities=50,spawn=25,destroy=25
        check "real host: exit 0, every call answered, spawns ok" \
            js "d['result'] == 'ok' and d['ok'] == 40 and d['lost'] == 0 and
                d['methods']['spawn']['calls'] >= 1 and
                d['methods']['spawn']['ok'] == d['methods']['spawn']['calls']"
        check "real host: cleanup destroyed each spawned domain, each one found" \
            js "d['cleanup']['spawns_sent'] == d['methods']['spawn']['calls'] and
                d['cleanup']['destroyed'] == d['cleanup']['spawns_sent'] and
                d['cleanup']['existed'] == d['cleanup']['spawns_sent'] and
                d['cleanup']['failed'] == 0"
        virsh -q -c "$VT_HOST_A_URI" list --all --name > "$OUT" 2> "$ERR"
        RC=$?
        check "real host: no instance-* domain left (virsh list --all)" \
            eval 'rc_is 0 && ! grep -q "^instance-" "$OUT"'
        ls -A "$(vt_host_root a)/var/lib/vtpmd/console" > "$OUT" 2> "$ERR"
        RC=$?
        check "real host: no console log left" eval 'rc_is 0 && [ ! -s "$OUT" ]'
    fi
    kill -TERM "$REAL_PID" 2>/dev/null
    wait "$REAL_PID"
    RC=$?
    REAL_PID=
    : > "$OUT"; tail -n 30 "$tmp/$REAL.log" > "$ERR" 2>/dev/null
    check "real host: vtpmd exits 0 on SIGTERM" rc_is 0
fi

tap_done
