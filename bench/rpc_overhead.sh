#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 1, RPC overhead: what vtpmd costs on top of the broker itself.
#
# Starts a private RabbitMQ node (tests/lib/env.sh), and on it, side by side,
# vtpm-echo as host "echo" (a bare rabbitmq-c consumer that answers every
# request with a fixed 20-byte reply: the broker's own limit), vtpmd as host
# "vtpmd" (libvirt test:///default, default [worker] and [amqp] settings,
# logging at info to a file as in production), and a second vtpm-echo as
# host "echo-sized" whose reply is padded to the size of vtpmd's
# get_capabilities reply (the broker's CPU per call grows with the body it
# routes: this is the broker's limit for vtpmd's traffic).  Then vtpm-fanout
# measures get_capabilities against each, at each concurrency, ROUNDS times,
# the targets taking turns so that a machine's noise hits all alike; the
# medians over the rounds are reported, and vtpmd's ratios to both echoes.  Also reads vtpmd's RSS (VmRSS of
# /proc/PID/status) idle, before the first run, and after the last, and the
# CPU time (utime + stime of /proc/PID/stat) that echo, vtpmd and the broker
# spend per call: on a shared or small machine the wall-clock figures move
# with whatever else runs, the CPU cost per call hardly does.
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand
# (as root: env.sh wants it), not by meson; docs/performance.md has the
# latest figures.
#
# With CLIENT_BEFORE=DIR (another build directory, e.g. of the commit before
# a change to the client side), vtpmd is measured a second time in every
# round by DIR's vtpm-fanout ("vtpmd-before"), back to back with this
# build's, which of the two goes first alternating from round to round (the
# first run after the echoes is slower): the two clients side by side
# against the same vtpmd, their ratio, and each client's CPU per call.
#
# Usage: bench/rpc_overhead.sh [BUILD_DIR]      (default: ./build)
# Environment: CALLS (5000), WARMUP (500), ROUNDS (5), CONCURRENCY ("1 16"),
# CLIENT_BEFORE (unset).
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
FAN_BEFORE=
TARGETS="echo echo-sized vtpmd"
if [ -n "${CLIENT_BEFORE:-}" ]; then
    FAN_BEFORE=$(cd "$CLIENT_BEFORE" && pwd)/tools/vtpm-fanout
    TARGETS="$TARGETS vtpmd-before"
fi
for x in "$FAN" "$ECHO" "$VTPMD" $FAN_BEFORE; do
    [ -x "$x" ] || { echo "rpc_overhead: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
vt_init
trap vt_cleanup EXIT
vt_rmq_start
res=$VT_ROOT/results
mkdir -p "$res" "$VT_ROOT/vtpmd/console" "$VT_ROOT/vtpmd/swtpm" "$VT_ROOT/vtpmd/images"

"$ECHO" --url "$VT_AMQP_URL" --host echo 2> "$VT_ROOT/echo.err" < /dev/null &
echo_pid=$!
VT_DAEMONS+=("$echo_pid")

conf=$(bench_test_conf vtpmd)
"$VTPMD" --config "$conf" 2> "$VT_ROOT/vtpmd.log" < /dev/null &
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

# The size of vtpmd's reply, for the sized echo.
reply_bytes=$("$FAN" --url "$VT_AMQP_URL" --hosts vtpmd --calls 10 --settle 0 --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["reply_bytes_mean"])')
"$ECHO" --url "$VT_AMQP_URL" --host echo-sized --reply-bytes "$reply_bytes" \
    2> "$VT_ROOT/echo-sized.err" < /dev/null &
sized_pid=$!
VT_DAEMONS+=("$sized_pid")
ready=
for _ in $(seq 1 60); do
    if "$FAN" --url "$VT_AMQP_URL" --hosts echo-sized --calls 2 --timeout 1 --settle 0 \
        > /dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
[ -n "$ready" ] || vt_die "the sized echo does not answer: $(cat "$VT_ROOT/echo-sized.err")"
vt_log "vtpmd's get_capabilities reply: $reply_bytes bytes (echo-sized pads to it)"

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
        order=$TARGETS
        if [ -n "$FAN_BEFORE" ] && [ $((round % 2)) = 0 ]; then
            order="echo echo-sized vtpmd-before vtpmd"
        fi
        for target in $order; do
            out=$res/$target-c$c-r$round.json
            fan=$FAN host=$target
            case $target in
            echo) pid=$echo_pid ;;
            echo-sized) pid=$sized_pid ;;
            vtpmd-before) pid=$vtpmd_pid fan=$FAN_BEFORE host=vtpmd ;;
            *) pid=$vtpmd_pid ;;
            esac
            t0=$(ticks "$pid")
            b0=$(ticks "$broker_pid")
            # The client's own CPU time (bash's time: user, system seconds).
            { TIMEFORMAT='%3U %3S'; time "$fan" --url "$VT_AMQP_URL" --hosts "$host" \
                --calls "$CALLS" --warmup "$WARMUP" --concurrency "$c" \
                --mix get_capabilities=100 --settle 0.2 --json > "$out" 2> "$out.err" || true; } \
                2> "$out.client"
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
PYTHONPATH=$here python3 - "$res" "$ROUNDS" "$CALLS" "$WARMUP" "$rss_idle" "$rss_after" "$rss_peak" \
    "$(getconf CLK_TCK)" "${rss_rounds[*]}" "$reply_bytes" "$TARGETS" $CONCURRENCY <<'EOF'
import json, os, statistics, sys, time
from rounds import load, summary
res, rounds, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rss_idle, rss_after, rss_peak, hz = (int(x) for x in sys.argv[5:9])
rss_rounds = [int(x) for x in sys.argv[9].split()]
reply_bytes = int(sys.argv[10])
TARGETS = tuple(sys.argv[11].split())
concs = [int(c) for c in sys.argv[12:]]

def cpu_us(path):
    """CPU us per call (target, broker) of one run, warm-up included."""
    try:
        t, b = (int(x) for x in open(path).read().split())
    except Exception:
        return None, None
    per = 1e6 / hz / (calls + warmup)
    return t * per, b * per

def client_cpu_us(path):
    """The client's (vtpm-fanout's) CPU us per call of one run, warm-up included."""
    try:
        u, s = (float(x) for x in open(path).read().split())
    except Exception:
        return None
    return (u + s) * 1e6 / (calls + warmup)

out = {"benchmark": "rpc_overhead", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "method": "get_capabilities", "calls": calls, "warmup": warmup,
       "rounds": rounds, "vtpmd_reply_bytes": reply_bytes, "concurrency": {},
       "vtpmd_rss_kb": {"idle": rss_idle, "after": rss_after, "peak": rss_peak,
                        "after_each_round": rss_rounds}}
ok = True
for c in concs:
    row = {}
    for t in TARGETS:
        good, row[t] = summary(load(res, t, c, rounds))
        ok = ok and len(good) == rounds
        cpu = [cpu_us("%s/%s-c%d-r%d.json.cpu" % (res, t, c, r)) for r in range(1, rounds + 1)]
        cpu = [x for x in cpu if x[0] is not None]
        ccpu = [client_cpu_us("%s/%s-c%d-r%d.json.client" % (res, t, c, r))
                for r in range(1, rounds + 1)]
        ccpu = [x for x in ccpu if x is not None]
        row[t].update({
            "client_cpu_us_per_call": round(statistics.median(ccpu), 1) if ccpu else None,
            "reply_bytes": good[0].get("reply_bytes_mean") if good else None,
            "cpu_us_per_call": round(statistics.median(x[0] for x in cpu), 1) if cpu else None,
            "broker_cpu_us_per_call": round(statistics.median(x[1] for x in cpu), 1) if cpu else None,
        })
    v = row["vtpmd"]
    # "ratio_*" against the 20-byte echo, "sized_ratio_*" against the echo
    # whose reply is as big as vtpmd's.
    for prefix, base in (("", "echo"), ("sized_", "echo-sized")):
        e = row[base]
        if not (e["calls_per_s"] and v["calls_per_s"]):
            continue
        row[prefix + "ratio_calls_per_s"] = round(v["calls_per_s"] / e["calls_per_s"], 3)
        row[prefix + "ratio_p99"] = round(v["p99_ms"] / e["p99_ms"], 3)
        # Each round's runs were back to back: their ratios show the spread.
        row[prefix + "ratio_calls_per_s_runs"] = [
            round(vv / ee, 3) if ee and vv else None
            for ee, vv in zip(e["calls_per_s_runs"], v["calls_per_s_runs"])]
        # The median of those pairs: less sensitive to a slow stretch that
        # hit only one target's run than the ratio of the medians.
        pairs = [x for x in row[prefix + "ratio_calls_per_s_runs"] if x]
        row[prefix + "ratio_calls_per_s_pairs_median"] = (
            round(statistics.median(pairs), 3) if pairs else None)
        row[prefix + "meets_calls_per_s"] = row[prefix + "ratio_calls_per_s"] >= 0.9
        row[prefix + "meets_p99"] = row[prefix + "ratio_p99"] <= 1.2
    b = row.get("vtpmd-before")
    if b and b["calls_per_s"] and v["calls_per_s"]:
        # This build's client against CLIENT_BEFORE's: same vtpmd, back to back.
        pairs = [round(vv / bb, 3) for bb, vv in zip(b["calls_per_s_runs"], v["calls_per_s_runs"])
                 if bb and vv]
        row["client_ratio_calls_per_s"] = round(v["calls_per_s"] / b["calls_per_s"], 3)
        row["client_ratio_calls_per_s_runs"] = pairs
        row["client_ratio_calls_per_s_pairs_median"] = (
            round(statistics.median(pairs), 3) if pairs else None)
        row["client_ratio_p99"] = round(v["p99_ms"] / b["p99_ms"], 3)
        if v["client_cpu_us_per_call"] and b["client_cpu_us_per_call"]:
            row["client_ratio_cpu_us_per_call"] = round(
                v["client_cpu_us_per_call"] / b["client_cpu_us_per_call"], 3)
    out["concurrency"][str(c)] = row
out["all_runs_clean"] = ok
for prefix in ("", "sized_"):
    out[prefix + "targets_met"] = ok and all(
        r.get(prefix + "meets_calls_per_s") and r.get(prefix + "meets_p99")
        for r in out["concurrency"].values())
print(json.dumps(out))

w = sys.stderr.write
w("\nRPC overhead: get_capabilities, %d calls (+%d warm-up) per run, median of %d rounds, "
  "%d CPUs; vtpmd's reply %d bytes\n" % (calls, warmup, rounds, os.cpu_count(), reply_bytes))
w("%-5s %-11s %10s %8s %9s %8s %9s  %s\n" % ("conc", "target", "calls/s", "vtpmd/x",
  "p99 ms", "vtpmd/x", "reply B", "targets (>=0.9x, <=1.2x)"))
for c, r in out["concurrency"].items():
    for t in TARGETS:
        d = r[t]
        if d["calls_per_s"] is None:
            w("%-5s %-11s  no clean run\n" % (c, t))
            continue
        prefix = {"echo": "", "echo-sized": "sized_"}.get(t)
        if prefix is not None and prefix + "ratio_calls_per_s" in r:
            cmp_ = "%7.2fx %9.2f %7.2fx %9s  calls/s %s, p99 %s" % (
                r[prefix + "ratio_calls_per_s"], d["p99_ms"], r[prefix + "ratio_p99"],
                d["reply_bytes"], "met" if r[prefix + "meets_calls_per_s"] else "NOT met",
                "met" if r[prefix + "meets_p99"] else "NOT met")
        else:
            cmp_ = "%8s %9.2f %8s %9s" % ("", d["p99_ms"], "", d["reply_bytes"])
        w("%-5s %-11s %10.1f %s\n" % (c, t, d["calls_per_s"], cmp_))
if "vtpmd-before" in TARGETS:
    w("this build's client / CLIENT_BEFORE's, vtpmd calls/s: %s\n" % ", ".join(
      "c=%s %s (median of the pairs %s)" % (c, r.get("client_ratio_calls_per_s"),
                                            r.get("client_ratio_calls_per_s_pairs_median"))
      for c, r in out["concurrency"].items()))
w("calls/s ratio, median of the rounds' back-to-back pairs: %s\n" % ", ".join(
  "c=%s %s (sized %s)" % (c, r.get("ratio_calls_per_s_pairs_median"),
                          r.get("sized_ratio_calls_per_s_pairs_median"))
  for c, r in out["concurrency"].items()))
w("CPU per call, median (the broker's in brackets, the client's in braces):\n")
for c, r in out["concurrency"].items():
    w("  c=%-3s %s\n" % (c, ", ".join("%s %s us [%s] {%s}" % (t, r[t]["cpu_us_per_call"],
      r[t]["broker_cpu_us_per_call"], r[t]["client_cpu_us_per_call"]) for t in TARGETS)))
w("vtpmd VmRSS: idle %d kB, after each round %s kB (peak %d kB)\n" % (rss_idle,
  ", ".join(str(x) for x in rss_rounds), rss_peak))
if not ok:
    w("some runs were not clean (lost/duplicate/unmatched replies): see the JSON\n")
EOF
