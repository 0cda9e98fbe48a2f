#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 5, memory: vtpmd's resident memory idle and after CALLS calls,
# and a valgrind memcheck run of VG_CALLS calls.
#
# On a private RabbitMQ node, one vtpmd (libvirt test:///default, default
# settings) answers CALLS calls of a 90/10 get_capabilities/destroy mix from
# vtpm-fanout (16 in flight); VmRSS is read idle (after start-up settles),
# after the first 10% of the calls (the reply cache and the allocator's
# arenas fill up), and after all of them: growth after warm-up is what a
# leak would show.  Then a second vtpmd runs under valgrind memcheck
# (--leak-check=full) for VG_CALLS calls and a SIGTERM; "definitely lost"
# and the error count are reported.
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand,
# as root.  Usage: bench/memory.sh [BUILD_DIR]    (default ./build)
# Environment: CALLS (100000), VG_CALLS (1000).
# Targets: idle RSS < 8 MiB, growth after warm-up < 1 MiB, definitely lost 0,
# no memcheck errors.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
VTPMD=$B/worker/vtpmd
CALLS=${CALLS:-100000}
VG_CALLS=${VG_CALLS:-1000}
for x in "$FAN" "$VTPMD"; do
    [ -x "$x" ] || { echo "memory: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done
command -v valgrind > /dev/null || { echo "memory: valgrind is not installed" >&2; exit 2; }

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
vt_init
trap vt_cleanup EXIT
vt_rmq_start
res=$VT_ROOT/results
mkdir -p "$res"

wait_up() { # HOST
    for _ in $(seq 1 120); do
        "$FAN" --url "$VT_AMQP_URL" --hosts "$1" --calls 1 --timeout 1 --settle 0 > /dev/null 2>&1 &&
            return 0
        sleep 0.5
    done
    vt_die "vtpmd $1 does not answer"
}
load() { # HOST CALLS OUT
    "$FAN" --url "$VT_AMQP_URL" --hosts "$1" --calls "$2" --concurrency 16 \
        --mix get_capabilities=90,destroy=10 --settle 0.5 --json > "$3" 2> "$3.err" || true
}
rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
# Resident memory by kind (smaps_rollup): what the idle figure is made of.
# Shared_Clean is library code and read-only data mapped from files (the
# same pages as every other process using libvirt's dependency tree);
# Private_Dirty/Anonymous is vtpmd's own memory; Pss charges shared pages
# to each process that maps them in proportion.
rss_parts() {
    awk '$1 == "Rss:" || $1 == "Pss:" || $1 == "Anonymous:" || $1 == "Shared_Clean:" || $1 == "Private_Dirty:" { printf "%s%s %s", sep, $1, $2; sep = " " }' \
        "/proc/$1/smaps_rollup"
}

# ---- RSS ----
bench_test_conf mem > /dev/null
"$VTPMD" --config "$VT_ROOT/mem.conf" --log-file "$VT_ROOT/mem.log" < /dev/null &
pid=$!
VT_DAEMONS+=("$pid")
wait_up mem
sleep 2
idle=$(rss "$pid")
parts=$(rss_parts "$pid")
threads=$(ls "/proc/$pid/task" | wc -l)
vt_log "idle: VmRSS $idle kB ($parts), $threads threads"
warm=$((CALLS / 10))
load mem "$warm" "$res/warm.json"
after_warm=$(rss "$pid")
load mem $((CALLS - warm)) "$res/rest.json"
after=$(rss "$pid")
peak=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status")
vt_log "after $warm calls: $after_warm kB; after $CALLS: $after kB (peak $peak kB)"
kill -TERM "$pid"
wait "$pid" || true

# ---- valgrind ----
bench_test_conf vg > /dev/null
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,possible \
    --errors-for-leak-kinds=definite --track-fds=no \
    --log-file="$res/valgrind.log" --error-exitcode=99 \
    "$VTPMD" --config "$VT_ROOT/vg.conf" --log-file "$VT_ROOT/vg.log" < /dev/null &
vpid=$!
VT_DAEMONS+=("$vpid")
wait_up vg
load vg "$VG_CALLS" "$res/vg.json"
kill -TERM "$vpid"
vrc=0
wait "$vpid" || vrc=$?

python3 - "$res" "$CALLS" "$VG_CALLS" "$idle" "$after_warm" "$after" "$peak" "$threads" "$vrc" "$parts" <<'PY'
import json, os, re, sys, time
res, calls, vg_calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
idle, after_warm, after, peak, threads, vrc = (int(x) for x in sys.argv[4:10])
parts = dict(zip(sys.argv[10].split()[0::2], (int(x) for x in sys.argv[10].split()[1::2])))
def load(n):
    try:
        return json.load(open(os.path.join(res, n)))
    except Exception:
        return None
runs = [load("warm.json"), load("rest.json")]
vg = open(os.path.join(res, "valgrind.log")).read()
def num(pat):
    m = re.search(pat, vg)
    return int(m.group(1).replace(",", "")) if m else None
out = {"benchmark": "memory", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "calls": calls,
       "rss_kb": {"idle": idle, "after_warmup": after_warm, "after": after, "peak": peak,
                  "growth_after_warmup": after - after_warm, "idle_parts": parts},
       "threads": threads,
       "calls_clean": all(r and r["result"] == "ok" for r in runs),
       "valgrind": {"calls": vg_calls, "exit": vrc,
                    "definitely_lost_bytes": num(r"definitely lost: ([\d,]+) bytes"),
                    "indirectly_lost_bytes": num(r"indirectly lost: ([\d,]+) bytes"),
                    "possibly_lost_bytes": num(r"possibly lost: ([\d,]+) bytes"),
                    "errors": num(r"ERROR SUMMARY: ([\d,]+) errors"),
                    "calls_clean": bool(load("vg.json") and load("vg.json")["result"] == "ok")}}
v = out["valgrind"]
out["targets"] = {"idle_under_8mib": idle < 8 * 1024,
                  "growth_under_1mib": after - after_warm < 1024,
                  "valgrind_clean": (v["definitely_lost_bytes"] or 0) == 0 and v["errors"] == 0}
print(json.dumps(out))
w = sys.stderr.write
w("\nMemory: vtpmd, libvirt test:///default, %d calls get_capabilities=90,destroy=10\n" % calls)
w("  RSS idle        %7d kB  (%s; %d threads)  target < 8192 kB: %s\n" % (idle,
  ", ".join("%s %d" % kv for kv in parts.items()), threads,
  "met" if out["targets"]["idle_under_8mib"] else "NOT met"))
w("  RSS after %6d %7d kB\n" % (calls // 10, after_warm))
w("  RSS after %6d %7d kB  growth %d kB, target < 1024 kB: %s\n" % (calls, after, after - after_warm,
  "met" if out["targets"]["growth_under_1mib"] else "NOT met"))
w("  valgrind (%d calls): definitely lost %s B, indirectly %s B, possibly %s B, errors %s: %s\n" % (
  vg_calls, v["definitely_lost_bytes"], v["indirectly_lost_bytes"], v["possibly_lost_bytes"],
  v["errors"], "clean" if out["targets"]["valgrind_clean"] else "NOT clean"))
PY
