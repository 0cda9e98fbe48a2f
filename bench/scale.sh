#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 2, scale across workers: WORKERS vtpmd processes (libvirt
# test:///default, started by vtpm-fanout --spawn-workers) on one private
# RabbitMQ node, CALLERS calls in flight (a caller = one outstanding call,
# as a synchronous RPC client has), CALLS calls of a 90/10
# get_capabilities/destroy mix spread round-robin over the workers.
# vtpm-fanout accounts for every reply: lost, duplicate, late, unmatched
# and invalid must all be 0.  Also runs the same load against a single
# worker, side by side, to show what the extra processes buy on this
# machine (with 2 cores, the broker is the limit long before 8 workers).
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand,
# as root.  Usage: bench/scale.sh [BUILD_DIR]    (default ./build)
# Environment: CALLS (100000), WORKERS (8), CALLERS (16).
# Target: no lost or duplicate reply over CALLS calls.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
VTPMD=$B/worker/vtpmd
CALLS=${CALLS:-100000}
WORKERS=${WORKERS:-8}
CALLERS=${CALLERS:-16}
for x in "$FAN" "$VTPMD"; do
    [ -x "$x" ] || { echo "scale: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
vt_init
trap vt_cleanup EXIT
vt_rmq_start
res=$VT_ROOT/results
mkdir -p "$res"

run() { # K OUT
    local rc=0
    "$FAN" --url "$VT_AMQP_URL" --spawn-workers "$1" --vtpmd "$VTPMD" --calls "$CALLS" \
        --warmup 1000 --concurrency "$CALLERS" --mix get_capabilities=90,destroy=10 \
        --timeout 30 --settle 2 --json > "$2" 2> "$2.err" || rc=$?
    echo "$rc" > "$2.rc"
    vt_log "$1 worker(s): exit $rc, $(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.0f calls/s, p99 %.2f ms, lost %d, duplicate %d" % (d["calls_per_s"],
      d["latency_ms"]["p99"], d["lost"], d["duplicate"]))' "$2" 2>&1)"
}
run 1 "$res/w1.json"
run "$WORKERS" "$res/w$WORKERS.json"

python3 - "$res" "$WORKERS" "$CALLS" "$CALLERS" <<'PY'
import json, os, sys, time
res, k, calls, callers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(n):
    try:
        d = json.load(open(os.path.join(res, "w%d.json" % n)))
        d["exit"] = int(open(os.path.join(res, "w%d.json.rc" % n)).read())
        return d
    except Exception:
        return None
runs = {1: load(1), k: load(k)}
out = {"benchmark": "scale", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "calls": calls, "callers": callers, "mix": "get_capabilities=90,destroy=10"}
for n, d in runs.items():
    if not d:
        out["workers_%d" % n] = None
        continue
    out["workers_%d" % n] = {
        "calls_per_s": round(d["calls_per_s"], 1), "latency_ms": d["latency_ms"],
        "ok": d["ok"], "faulted": d["faulted"], "lost": d["lost"], "duplicate": d["duplicate"],
        "late": d["late"], "unmatched": d["unmatched"], "invalid": d["invalid"],
        "per_host_calls_per_s": {h: round(v["calls_per_s"], 1) for h, v in d.get("per_host", {}).items()},
        "exit": d["exit"]}
big = out.get("workers_%d" % k)
out["target_met"] = bool(big and big["exit"] == 0 and big["lost"] == 0 and big["duplicate"] == 0
                         and big["ok"] + big["faulted"] >= calls)
print(json.dumps(out))
w = sys.stderr.write
w("\nScale: %d calls (+1000 warm-up), %d in flight, get_capabilities=90,destroy=10\n" % (calls, callers))
w("%-8s %10s %8s %8s %8s %8s %6s %6s %6s\n" % ("workers", "calls/s", "p50 ms", "p99 ms", "max ms",
                                          "ok", "lost", "dup", "exit"))
for n in (1, k):
    d = out.get("workers_%d" % n)
    if not d:
        w("%-8d  no result\n" % n)
        continue
    l = d["latency_ms"]
    w("%-8d %10.1f %8.2f %8.2f %8.2f %8d %6d %6d %6d\n" % (n, d["calls_per_s"], l["p50"], l["p99"],
      l["max"], d["ok"] + d["faulted"], d["lost"], d["duplicate"], d["exit"]))
w("target (no lost or duplicate reply over %d calls with %d workers): %s\n"
  % (calls, k, "met" if out["target_met"] else "NOT met"))
PY
