#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 3, head-of-line blocking: does a scheduler's get_capabilities
# poll wait behind slow operations?
#
# Starts a private RabbitMQ node and a libvirt host (QEMU/TCG + swtpm,
# tests/lib/env.sh) with one vtpmd (default [worker] workers = 4).  Measures
# get_capabilities latency with vtpm-fanout at concurrency 1, first idle,
# then while SLOW callers each keep one spawn (TPM 2.0, firmware-only
# guest: swtpm_setup + QEMU start) or its destroy in flight all the time —
# twice as many slow operations as the pool has threads.  Idle and loaded
# runs alternate, ROUNDS times; medians are reported.  The loaded p99
# includes what the QEMU and swtpm processes the spawns start take from a
# 2-core machine: it is the latency a scheduler would see, not vtpmd's
# alone.
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand,
# as root.  Usage: bench/head_of_line.sh [BUILD_DIR]    (default ./build)
# Environment: CALLS (1000), ROUNDS (3), SLOW (8).
# Target: loaded p99 < 3x idle p99.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
CTL=$B/tools/vtpmctl
VTPMD=$B/worker/vtpmd
CALLS=${CALLS:-1000}
ROUNDS=${ROUNDS:-3}
SLOW=${SLOW:-8}
for x in "$FAN" "$CTL" "$VTPMD"; do
    [ -x "$x" ] || { echo "head_of_line: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
vt_init
slow_pids=()
# Only the callers: a bare `wait` would wait for vtpmd too.
stop_slow() {
    touch "$VT_ROOT/stop"
    [ ${#slow_pids[@]} -eq 0 ] || wait "${slow_pids[@]}" 2>/dev/null || true
    slow_pids=()
}
trap 'stop_slow; vt_cleanup' EXIT
vt_rmq_start
vt_host_start a
res=$VT_ROOT/results
mkdir -p "$res"
export VTPM_AMQP_URL=$VT_AMQP_URL

cat > "$VT_ROOT/vtpmd.conf" <<EOF
[amqp]
url = $VT_AMQP_URL
[worker]
host = hol
[libvirt]
uri = qemu:///system
swtpm_enabled = true
shutdown_timeout = 1
EOF
chmod 600 "$VT_ROOT/vtpmd.conf" # holds the broker password (docs/security.md)
vt_host_spawn a "$VTPMD" --config "$VT_ROOT/vtpmd.conf" --log-file "$VT_ROOT/vtpmd.log"
for _ in $(seq 1 100); do
    "$CTL" call --host hol --timeout 1 get_capabilities > /dev/null 2>&1 && break
    sleep 0.2
done

# One slow caller: spawn, destroy, again, until $VT_ROOT/stop exists.
# Counts its operations in $res/slow-N.
slow_caller() {
    local n=0 u
    while [ ! -e "$VT_ROOT/stop" ]; do
        u=$(cat /proc/sys/kernel/random/uuid)
        "$CTL" call --host hol --timeout 120 spawn "{\"instance\": {\"uuid\": \"$u\",
            \"flavor\": {\"name\": \"m1.tpm\", \"vcpus\": 1, \"memory_mb\": 64,
                         \"extra_specs\": {\"hw:tpm_version\": \"2.0\"}},
            \"image\": {\"id\": \"none\", \"properties\": {}}}}" > /dev/null 2>&1 || true
        "$CTL" call --host hol --timeout 120 destroy "{\"instance\": {\"uuid\": \"$u\"}}" \
            > /dev/null 2>&1 || true
        n=$((n + 2))
        echo "$n" > "$res/slow-$1"
    done
}

measure() { # OUT
    "$FAN" --url "$VT_AMQP_URL" --hosts hol --calls "$CALLS" --warmup 50 --concurrency 1 \
        --mix get_capabilities=100 --settle 0.2 --json > "$1" 2> "$1.err" || true
}

for round in $(seq 1 "$ROUNDS"); do
    measure "$res/idle-r$round.json"
    rm -f "$VT_ROOT/stop" "$res"/slow-*
    for i in $(seq 1 "$SLOW"); do
        slow_caller "$i" &
        slow_pids+=($!)
    done
    # Let every caller get its first spawn going.
    sleep 3
    pids=$(pgrep -f "vtpmctl call --host hol --timeout 120" | wc -l)
    t0=$(date +%s%N)
    measure "$res/loaded-r$round.json"
    t1=$(date +%s%N)
    inflight=$(pgrep -f "vtpmctl call --host hol --timeout 120" | wc -l)
    stop_slow
    ops=$(cat "$res"/slow-* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    echo "$pids $inflight $ops $(( (t1 - t0) / 1000000 ))" > "$res/loaded-r$round.slow"
    vt_log "round $round: $(python3 -c '
import json, sys
i = json.load(open(sys.argv[1])); l = json.load(open(sys.argv[2]))
print("idle p99 %.2f ms, loaded p99 %.2f ms (%.2fx); slow ops in flight at start/end: %s"
      % (i["latency_ms"]["p99"], l["latency_ms"]["p99"],
         l["latency_ms"]["p99"] / i["latency_ms"]["p99"], sys.argv[3]))' \
        "$res/idle-r$round.json" "$res/loaded-r$round.json" "$pids/$inflight" 2>&1)"
    # Leftover domains of interrupted callers would load the next round.
    for d in $(virsh -q -c "$(vt_host_uri a)" list --all --name 2>/dev/null); do
        "$CTL" call --host hol --timeout 60 destroy "{\"instance\": {\"uuid\": \"${d#instance-}\"}}" \
            > /dev/null 2>&1 || true
    done
done

python3 - "$res" "$ROUNDS" "$CALLS" "$SLOW" <<'EOF'
import json, os, statistics, sys, time
res, rounds, calls, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(name):
    try:
        return json.load(open(os.path.join(res, name)))
    except Exception:
        return None
idle = [load("idle-r%d.json" % r) for r in range(1, rounds + 1)]
loaded = [load("loaded-r%d.json" % r) for r in range(1, rounds + 1)]
slowinfo = []
for r in range(1, rounds + 1):
    try:
        a, b, ops, ms = (int(x) for x in open(os.path.join(res, "loaded-r%d.slow" % r)).read().split())
        slowinfo.append({"inflight_start": a, "inflight_end": b, "slow_ops": ops, "window_ms": ms})
    except Exception:
        slowinfo.append(None)
clean = all(d and d["result"] == "ok" for d in idle + loaded)
def med(runs, k):
    v = [d["latency_ms"][k] for d in runs if d]
    return round(statistics.median(v), 3) if v else None
out = {"benchmark": "head_of_line", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "calls": calls, "rounds": rounds, "slow_callers": slow,
       "idle_ms": {k: med(idle, k) for k in ("p50", "p90", "p99", "max")},
       "loaded_ms": {k: med(loaded, k) for k in ("p50", "p90", "p99", "max")},
       "p99_ratio_runs": [round(l["latency_ms"]["p99"] / i["latency_ms"]["p99"], 3) if i and l else None
                          for i, l in zip(idle, loaded)],
       "slow": slowinfo, "all_runs_clean": clean}
if out["idle_ms"]["p99"] and out["loaded_ms"]["p99"]:
    out["p99_ratio"] = round(out["loaded_ms"]["p99"] / out["idle_ms"]["p99"], 3)
    out["target_met"] = clean and out["p99_ratio"] < 3
print(json.dumps(out))
w = sys.stderr.write
w("\nHead-of-line: get_capabilities at concurrency 1, %d calls per run, median of %d rounds\n"
  % (calls, rounds))
w("%-8s %9s %9s %9s %9s\n" % ("", "p50 ms", "p90 ms", "p99 ms", "max ms"))
for k in ("idle", "loaded"):
    m = out[k + "_ms"]
    w("%-8s %9s %9s %9s %9s\n" % (k, m["p50"], m["p90"], m["p99"], m["max"]))
w("loaded = %d callers each keeping a spawn or destroy in flight; p99 ratio %s (target < 3x: %s)\n"
  % (slow, out.get("p99_ratio"), "met" if out.get("target_met") else "NOT met"))
EOF
