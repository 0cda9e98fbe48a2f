#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 1, RPC overhead: what vtpmd costs on top of the broker itself.
#
# Starts a private RabbitMQ node (tests/lib/env.sh), and on it, side by side,
# vtpm-echo as host "echo" (a bare rabbitmq-c consumer that answers every
# request with a fixed reply: the broker's own limit) and vtpmd as host
# "vtpmd" (libvirt test:///default, default [worker] and [amqp] settings,
# logging at info to a file as in production).  Then vtpm-fanout measures
# get_capabilities against each, at each concurrency, ROUNDS times, the
# targets taking turns so that a machine's noise hits both alike; the
# medians over the rounds are reported.  Also reads vtpmd's RSS (VmRSS of
# /proc/PID/status) idle, before the first run, and after the last, and the
# CPU time (utime + stime of /proc/PID/stat) that echo, vtpmd and the broker
# spend per call: on a shared or small machine the wall-clock figures move
# with whatever else runs, the CPU cost per call hardly does.
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand
# (as root: env.sh wants it), not by meson; docs/performance.md has the
# latest figures.
#
# Usage: bench/rpc_overhead.sh [BUILD_DIR]      (default: ./build)
# Environment: CALLS (5000), WARMUP (500), ROUNDS (5), CONCURRENCY ("1 16").
# Targets: vtpmd/echo calls/s >= 0.9 and p99 <= 1.2 at every concurrency.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
ECHO=$B/tools/vtpm-echo
VTPMD=$B/worker/vtpmd
CALLS=${CALLS:-5000}
WARMUP=${WARMUP:-500}
ROUNDS=${ROUNDS:-5}
CONCURRENCY=${CONCURRENCY:-1 16}
for x in "$FAN" "$ECHO" "$VTPMD"; do
    [ -x "$x" ] || { echo "rpc_overhead: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
vt_init
trap vt_cleanup EXIT
vt_rmq_start
res=$VT_ROOT/results
mkdir -p "$res" "$VT_ROOT/vtpmd/console" "$VT_ROOT/vtpmd/swtpm" "$VT_ROOT/vtpmd/images"

"$ECHO" --url "$VT_AMQP_URL" --host echo 2> "$VT_ROOT/echo.err" < /dev/null &
echo_pid=$!
VT_DAEMONS+=("$echo_pid")

cat > "$VT_ROOT/vtpmd.conf" <<EOF
[amqp]
url = $VT_AMQP_URL
[worker]
host = vtpmd
[libvirt]
uri = test:///default
images_dir = $VT_ROOT/vtpmd/images
console_dir = $VT_ROOT/vtpmd/console
state_dir = $VT_ROOT/vtpmd/swtpm
[store]
pool_dir = $VT_ROOT/vtpmd/pools
kept_dir = $VT_ROOT/vtpmd/kept
EOF
chmod 600 "$VT_ROOT/vtpmd.conf" # holds the broker password (docs/security.md)
"$VTPMD" --config "$VT_ROOT/vtpmd.conf" 2> "$VT_ROOT/vtpmd.log" < /dev/null &
vtpmd_pid=$!
VT_DAEMONS+=("$vtpmd_pid")

# Both answer (a publish before vtpmd declared the exchange closes the
# client's channel: vtpm-fanout then just fails, and we try again).
ready=
for _ in $(seq 1 60); do
    if "$FAN" --url "$VT_AMQP_URL" --hosts echo,vtpmd --calls 2 --timeout 1 --settle 0 \
        > /dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
if [ -z "$ready" ]; then
    tail -n 20 "$VT_ROOT/echo.err" "$VT_ROOT/vtpmd.log" >&2
    vt_die "echo or vtpmd does not answer"
fi

rss() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# utime + stime of a process, all its threads, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
broker_pid=$(cat "$VT_ROOT/rabbitmq/pid")
sleep 2
rss_idle=$(rss "$vtpmd_pid" VmRSS)
vt_log "vtpmd pid $vtpmd_pid idle: VmRSS $rss_idle kB"

rss_rounds=()
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for target in echo vtpmd; do
            out=$res/$target-c$c-r$round.json
            if [ "$target" = echo ]; then pid=$echo_pid; else pid=$vtpmd_pid; fi
            t0=$(ticks "$pid")
            b0=$(ticks "$broker_pid")
            "$FAN" --url "$VT_AMQP_URL" --hosts "$target" --calls "$CALLS" --warmup "$WARMUP" \
                --concurrency "$c" --mix get_capabilities=100 --settle 0.2 --json \
                > "$out" 2> "$out.err" || true
            echo "$(($(ticks "$pid") - t0)) $(($(ticks "$broker_pid") - b0))" > "$out.cpu"
            vt_log "round $round c=$c $target: $(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.0f calls/s, p99 %.2f ms, lost %d, result %s" % (d["calls_per_s"],
      d["latency_ms"]["p99"], d["lost"], d["result"]))' "$out" 2>&1)"
        done
    done
    # A plateau is the reply cache and the allocator filling up; a rise
    # every round would be a leak.
    rss_rounds+=("$(rss "$vtpmd_pid" VmRSS)")
    vt_log "vtpmd after round $round: VmRSS ${rss_rounds[-1]} kB"
done
rss_after=$(rss "$vtpmd_pid" VmRSS)
rss_peak=$(rss "$vtpmd_pid" VmHWM)
vt_log "vtpmd after the runs: VmRSS $rss_after kB (peak $rss_peak kB)"

# $CONCURRENCY unquoted: one argument per concurrency.
# shellcheck disable=SC2086
python3 - "$res" "$ROUNDS" "$CALLS" "$WARMUP" "$rss_idle" "$rss_after" "$rss_peak" \
    "$(getconf CLK_TCK)" "${rss_rounds[*]}" $CONCURRENCY <<'EOF'
import json, os, statistics, sys, time
res, rounds, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rss_idle, rss_after, rss_peak, hz = (int(x) for x in sys.argv[5:9])
rss_rounds = [int(x) for x in sys.argv[9].split()]
concs = [int(c) for c in sys.argv[10:]]

def cpu_us(path):
    """CPU us per call (target, broker) of one run, warm-up included."""
    try:
        t, b = (int(x) for x in open(path).read().split())
    except Exception:
        return None, None
    per = 1e6 / hz / (calls + warmup)
    return t * per, b * per

out = {"benchmark": "rpc_overhead", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "method": "get_capabilities", "calls": calls, "warmup": warmup,
       "rounds": rounds, "concurrency": {}, "vtpmd_rss_kb": {"idle": rss_idle,
       "after": rss_after, "peak": rss_peak, "after_each_round": rss_rounds}}
ok = True
for c in concs:
    row = {}
    for t in ("echo", "vtpmd"):
        runs = []
        for r in range(1, rounds + 1):
            try:
                runs.append(json.load(open("%s/%s-c%d-r%d.json" % (res, t, c, r))))
            except Exception:
                runs.append(None)
        good = [d for d in runs if d and d["result"] == "ok"]
        ok = ok and len(good) == rounds
        cpu = [cpu_us("%s/%s-c%d-r%d.json.cpu" % (res, t, c, r)) for r in range(1, rounds + 1)]
        cpu = [x for x in cpu if x[0] is not None]
        row[t] = {
            "calls_per_s": round(statistics.median(d["calls_per_s"] for d in good), 1) if good else None,
            "p50_ms": round(statistics.median(d["latency_ms"]["p50"] for d in good), 3) if good else None,
            "p99_ms": round(statistics.median(d["latency_ms"]["p99"] for d in good), 3) if good else None,
            "calls_per_s_runs": [round(d["calls_per_s"], 1) if d else None for d in runs],
            "p99_ms_runs": [round(d["latency_ms"]["p99"], 3) if d else None for d in runs],
            "failed_runs": rounds - len(good),
            "cpu_us_per_call": round(statistics.median(x[0] for x in cpu), 1) if cpu else None,
            "broker_cpu_us_per_call": round(statistics.median(x[1] for x in cpu), 1) if cpu else None,
        }
    e, v = row["echo"], row["vtpmd"]
    if e["calls_per_s"] and v["calls_per_s"]:
        row["ratio_calls_per_s"] = round(v["calls_per_s"] / e["calls_per_s"], 3)
        row["ratio_p99"] = round(v["p99_ms"] / e["p99_ms"], 3)
        # Each round's pair ran back to back: their ratios show the spread.
        row["ratio_calls_per_s_runs"] = [
            round(vv / ee, 3) if ee and vv else None
            for ee, vv in zip(e["calls_per_s_runs"], v["calls_per_s_runs"])]
        row["meets_calls_per_s"] = row["ratio_calls_per_s"] >= 0.9
        row["meets_p99"] = row["ratio_p99"] <= 1.2
    out["concurrency"][str(c)] = row
out["all_runs_clean"] = ok
out["targets_met"] = ok and all(r.get("meets_calls_per_s") and r.get("meets_p99")
                                for r in out["concurrency"].values())
print(json.dumps(out))

w = sys.stderr.write
w("\nRPC overhead: get_capabilities, %d calls (+%d warm-up) per run, median of %d rounds, "
  "%d CPUs\n" % (calls, warmup, rounds, os.cpu_count()))
w("%-5s %12s %12s %8s %10s %10s %8s  %s\n" % ("conc", "echo c/s", "vtpmd c/s", "ratio",
  "echo p99", "vtpmd p99", "ratio", "targets (>=0.9x, <=1.2x)"))
for c, r in out["concurrency"].items():
    e, v = r["echo"], r["vtpmd"]
    if "ratio_calls_per_s" not in r:
        w("%-5s  no clean run\n" % c)
        continue
    w("%-5s %12.1f %12.1f %7.2fx %8.2f ms %7.2f ms %7.2fx  calls/s %s, p99 %s\n" % (
        c, e["calls_per_s"], v["calls_per_s"], r["ratio_calls_per_s"], e["p99_ms"],
        v["p99_ms"], r["ratio_p99"], "met" if r["meets_calls_per_s"] else "NOT met",
        "met" if r["meets_p99"] else "NOT met"))
w("CPU per call, median (the broker's in brackets):\n")
for c, r in out["concurrency"].items():
    e, v = r["echo"], r["vtpmd"]
    w("  c=%-3s echo %s us [%s], vtpmd %s us [%s]\n" % (c, e["cpu_us_per_call"],
      e["broker_cpu_us_per_call"], v["cpu_us_per_call"], v["broker_cpu_us_per_call"]))
w("vtpmd VmRSS: idle %d kB, after each round %s kB (peak %d kB)\n" % (rss_idle,
  ", ".join(str(x) for x in rss_rounds), rss_peak))
if not ok:
    w("some runs were not clean (lost/duplicate/unmatched replies): see the JSON\n")
EOF
