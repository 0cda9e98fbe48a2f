#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Python client's throughput (docs/performance.md, "Python client"):
# get_capabilities calls/s at 1 and 16 in flight, side by side with
#   - the C tool client (vtpm-fanout, as benchmark 1 runs it) against the
#     same vtpmd, and
#   - oslo.messaging's RPC client (python3-oslo.messaging, Debian 12)
#     against an oslo.messaging RPC server that answers get_capabilities
#     with vtpmd's own result (an echo: the same payload both ways),
# all on one private RabbitMQ node (tests/lib/env.sh), vtpmd on libvirt's
# test:///default driver.  The clients take turns within each round, so a
# machine's noise hits all alike; medians over ROUNDS rounds are reported,
# with the ratios vtpmclient/oslo and vtpmclient/C.
#
# Prints a table on stderr and one JSON line on stdout.  Run by hand as
# root (env.sh wants it), not by meson.
#
# Usage: bench/pyclient.sh [BUILD_DIR]      (default: ./build)
# Environment: CALLS (5000), WARMUP (500), ROUNDS (5), CONCURRENCY ("1 16"),
# PYTHON (/usr/bin/python3: the interpreter with python3-pika and the rest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
VTPMD=$B/worker/vtpmd
PY=${PYTHON:-/usr/bin/python3}
CALLS=${CALLS:-5000}
WARMUP=${WARMUP:-500}
ROUNDS=${ROUNDS:-5}
CONCURRENCY=${CONCURRENCY:-1 16}
for x in "$FAN" "$VTPMD"; do
    [ -x "$x" ] || { echo "pyclient: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done
export PYTHONPATH=$src/python
"$PY" -c 'import vtpmclient' || { echo "pyclient: $PY cannot import vtpmclient (python3-pika, python3-msgpack)" >&2; exit 2; }
oslo=1
if ! "$PY" -c 'import oslo_messaging' 2> /dev/null; then
    oslo=
    echo "pyclient: no oslo.messaging for $PY (apt-get install python3-oslo.messaging): skipped" >&2
fi

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
vt_init
trap vt_cleanup EXIT
vt_rmq_start
res=$VT_ROOT/results
mkdir -p "$res"
# oslo's transport_url form of the same broker.
OSLO_URL="rabbit://guest:guest@127.0.0.1:$VT_RMQ_PORT/"

conf=$(bench_test_conf vtpmd)
"$VTPMD" --config "$conf" 2> "$VT_ROOT/vtpmd.log" < /dev/null &
VT_DAEMONS+=("$!")
ready=
for _ in $(seq 1 60); do
    if "$FAN" --url "$VT_AMQP_URL" --hosts vtpmd --calls 2 --timeout 1 --settle 0 \
        > /dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
[ -n "$ready" ] || { tail -n 20 "$VT_ROOT/vtpmd.log" >&2; vt_die "vtpmd does not answer"; }

if [ -n "$oslo" ]; then
    # vtpmd's own get_capabilities result, for the oslo server to return.
    result=$("$PY" -c 'import json, sys, vtpmclient
with vtpmclient.Client(sys.argv[1]) as c:
    print(json.dumps(c.call("vtpmd", "get_capabilities", {})))' "$VT_AMQP_URL")
    "$PY" "$here/pyclient.py" oslo-server "$OSLO_URL" vtpm_bench echo "$result" \
        2> "$VT_ROOT/oslo-server.err" < /dev/null &
    VT_DAEMONS+=("$!")
    for _ in $(seq 1 100); do
        grep -q 'oslo-server: ready' "$VT_ROOT/oslo-server.err" && break
        sleep 0.2
    done
    "$PY" "$here/pyclient.py" oslo-client "$OSLO_URL" vtpm_bench echo 2 0 1 > /dev/null ||
        { cat "$VT_ROOT/oslo-server.err" >&2; vt_die "the oslo server does not answer"; }
fi

clients="c vtpmclient${oslo:+ oslo}"
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for client in $clients; do
            out=$res/$client-c$c-r$round.json
            case $client in
            c)
                "$FAN" --url "$VT_AMQP_URL" --hosts vtpmd --calls "$CALLS" --warmup "$WARMUP" \
                    --concurrency "$c" --mix get_capabilities=100 --settle 0.2 --json \
                    > "$out" 2> "$out.err" || true ;;
            vtpmclient)
                "$PY" "$here/pyclient.py" vtpmclient "$VT_AMQP_URL" vtpmd "$CALLS" "$WARMUP" "$c" \
                    > "$out" 2> "$out.err" || true ;;
            oslo)
                "$PY" "$here/pyclient.py" oslo-client "$OSLO_URL" vtpm_bench echo "$CALLS" \
                    "$WARMUP" "$c" > "$out" 2> "$out.err" || true ;;
            esac
            vt_log "round $round c=$c $client: $("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.0f calls/s, p99 %.2f ms, result %s" % (d["calls_per_s"], d["latency_ms"]["p99"],
      d["result"]))' "$out" 2>&1 | tail -1)"
        done
    done
done

# $CONCURRENCY and $clients unquoted: one argument each.
# shellcheck disable=SC2086
PYTHONPATH=$here "$PY" - "$res" "$ROUNDS" "$CALLS" "$WARMUP" "$clients" $CONCURRENCY <<'EOF'
import json, os, platform, sys, time
from rounds import load, summary
res, rounds, calls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
clients = sys.argv[5].split()
concs = [int(c) for c in sys.argv[6:]]
NAMES = {"c": "C tool client (vtpm-fanout) -> vtpmd",
         "vtpmclient": "Python vtpmclient -> vtpmd",
         "oslo": "oslo.messaging RPCClient -> oslo echo server"}
out = {"benchmark": "pyclient", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
       "method": "get_capabilities", "calls": calls, "warmup": warmup, "rounds": rounds,
       "concurrency": {}}
ok = True
for c in concs:
    row = {}
    for cl in clients:
        good, row[cl] = summary(load(res, cl, c, rounds))
        ok = ok and len(good) == rounds
    py = row.get("vtpmclient", {}).get("calls_per_s")
    for base in ("oslo", "c"):
        b = row.get(base, {}).get("calls_per_s")
        if py and b:
            row["ratio_vtpmclient_to_" + base] = round(py / b, 2)
            # Per round (the runs were back to back): the spread.
            pairs = [round(p / q, 2) for p, q in zip(row["vtpmclient"]["calls_per_s_runs"],
                                                     row[base]["calls_per_s_runs"]) if p and q]
            row["ratio_vtpmclient_to_%s_runs" % base] = pairs
    out["concurrency"][str(c)] = row
out["all_runs_clean"] = ok
print(json.dumps(out))

w = sys.stderr.write
w("\nPython client: get_capabilities, %d calls (+%d warm-up) per run, median of %d rounds, "
  "%d CPUs\n" % (calls, warmup, rounds, os.cpu_count()))
w("%-5s %-46s %10s %9s %9s\n" % ("conc", "client", "calls/s", "p50 ms", "p99 ms"))
for c, r in out["concurrency"].items():
    for cl in clients:
        d = r[cl]
        if d["calls_per_s"] is None:
            w("%-5s %-46s  no clean run\n" % (c, NAMES[cl]))
            continue
        w("%-5s %-46s %10.1f %9.2f %9.2f\n" % (c, NAMES[cl], d["calls_per_s"], d["p50_ms"],
                                              d["p99_ms"]))
    w("      vtpmclient/oslo %s, vtpmclient/C %s (per round: %s; %s)\n" % (
        r.get("ratio_vtpmclient_to_oslo"), r.get("ratio_vtpmclient_to_c"),
        r.get("ratio_vtpmclient_to_oslo_runs"), r.get("ratio_vtpmclient_to_c_runs")))
if not ok:
    w("some runs were not clean (faults or missing replies): see the JSON\n")
EOF
