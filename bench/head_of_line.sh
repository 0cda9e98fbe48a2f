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
# runs alternate, ROUNDS times; medians are reported.
#
# The QEMU/TCG and swtpm processes the spawns start are CPU hogs: on a
# small machine they take the CPU from the broker and vtpmd alike, which is
# not head-of-line blocking in vtpmd.  Two things separate the two:
#   - a control: vtpm-echo (its reply padded to the size of vtpmd's) is
#     measured in the same windows, idle and loaded; what the load does to
#     the echo it does to any consumer of this broker on this machine;
#   - with PIN=1 (the default on 2 or more CPUs) the guests get a CPU of
#     their own, as on a compute host that reserves cores for its control
#     plane (Nova's cpu_shared_set / reserved_host_cpus): cpuset cgroups put
#     the test host's libvirtd, and so every QEMU, swtpm and swtpm_setup it
#     starts (qemu.conf cgroup_controllers = [], so they stay in its
#     cgroup), on the last CPU, and the broker, vtpmd and the measuring
#     client on the others.  The slow callers go with the guests: they
#     stand for a control plane on other machines, and a vtpmctl process
#     per call (~40 ms of CPU to start) is this script's cost, not the
#     host's.  PIN=0 shares every CPU.
# And SLOW_MODE=held takes the CPU hogs away altogether: vtpmd runs on
# libvirt's test:///default driver with VTPMD_DELAY_AT=spawn.start=HOLD_MS
# (the fault-injection delay of the test suites), so each spawn holds a
# pool thread for HOLD_MS doing nothing: what is left is vtpmd's queueing
# alone, which is what head-of-line blocking is about.
#
# Prints a human table on stderr and one JSON line on stdout.  Run by hand,
# as root.  Usage: bench/head_of_line.sh [BUILD_DIR]    (default ./build)
# Environment: CALLS (1000), ROUNDS (3), SLOW (8), PIN (1 with >= 2 CPUs),
# SLOW_MODE (real: spawns of TPM 2.0 guests on QEMU/TCG; held: see above),
# HOLD_MS (2000).
# Target: loaded p99 < 3x idle p99.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
B=$(cd "${1:-$src/build}" && pwd)
FAN=$B/tools/vtpm-fanout
ECHO=$B/tools/vtpm-echo
CTL=$B/tools/vtpmctl
VTPMD=$B/worker/vtpmd
CALLS=${CALLS:-1000}
ROUNDS=${ROUNDS:-3}
SLOW=${SLOW:-8}
ncpu=$(nproc)
PIN=${PIN:-$([ "$ncpu" -ge 2 ] && echo 1 || echo 0)}
SLOW_MODE=${SLOW_MODE:-real}
HOLD_MS=${HOLD_MS:-2000}
case $SLOW_MODE in
real | held) ;;
*) echo "head_of_line: SLOW_MODE is real or held" >&2; exit 2 ;;
esac
CG=/sys/fs/cgroup/cpuset
for x in "$FAN" "$ECHO" "$CTL" "$VTPMD"; do
    [ -x "$x" ] || { echo "head_of_line: $x missing: build first (ninja -C $B)" >&2; exit 2; }
done

# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
vt_init
slow_pids=()
# Only the callers: a bare `wait` would wait for vtpmd too.
stop_slow() {
    touch "$VT_ROOT/stop"
    [ ${#slow_pids[@]} -eq 0 ] || wait "${slow_pids[@]}" 2>/dev/null || true
    slow_pids=()
}
cg_host=$CG/vtpm-hol-host.$$
cg_guests=$CG/vtpm-hol-guests.$$
unpin() {
    [ "$PIN" = 1 ] || return 0
    echo $$ > "$CG/cgroup.procs" 2>/dev/null || true
    # The last daemons may take a moment to go.
    for _ in $(seq 1 50); do
        rmdir "$cg_host" "$cg_guests" 2>/dev/null || true
        [ -d "$cg_host" ] || [ -d "$cg_guests" ] || return 0
        sleep 0.2
    done
    vt_log "could not remove $cg_host / $cg_guests: $(cat "$cg_host/cgroup.procs" "$cg_guests/cgroup.procs" 2>/dev/null | tr '\n' ' ')"
}
trap 'stop_slow; vt_cleanup; unpin' EXIT
if [ "$PIN" = 1 ]; then
    [ "$ncpu" -ge 2 ] && [ -w "$CG/cgroup.procs" ] ||
        vt_die "PIN=1 needs 2 or more CPUs and the cgroup v1 cpuset hierarchy at $CG"
    mkdir -p "$cg_host" "$cg_guests"
    cat "$CG/cpuset.mems" > "$cg_host/cpuset.mems"
    cat "$CG/cpuset.mems" > "$cg_guests/cpuset.mems"
    echo "0-$((ncpu - 2))" > "$cg_host/cpuset.cpus"
    echo "$((ncpu - 1))" > "$cg_guests/cpuset.cpus"
    # Everything this script starts from here on inherits it.
    echo $$ > "$cg_host/cgroup.procs"
fi
vt_rmq_start
[ "$SLOW_MODE" = held ] || vt_host_start a
if [ "$PIN" = 1 ] && [ "$SLOW_MODE" = real ]; then
    # Guests stay in libvirtd's cgroup (not libvirt's own /machine ones).
    echo "cgroup_controllers = [ ]" >> "$(vt_host_root a)/etc/libvirt/qemu.conf"
    vt_host_restart_libvirtd a
    echo "$(vt_host_pid a)" > "$cg_guests/cgroup.procs"
    vlpid=$(cat "$(vt_host_root a)/run/virtlogd.pid" 2>/dev/null || true)
    [ -z "$vlpid" ] || echo "$vlpid" > "$cg_guests/cgroup.procs"
fi
[ "$PIN" != 1 ] ||
    vt_log "pinned: guests (libvirtd, QEMU, swtpm) and the slow callers on CPU $((ncpu - 1)), the rest on 0-$((ncpu - 2))"

res=$VT_ROOT/results
mkdir -p "$res"
export VTPM_AMQP_URL=$VT_AMQP_URL

if [ "$SLOW_MODE" = real ]; then
    vt_vtpmd_conf "$VT_ROOT/vtpmd.conf" worker.host=hol libvirt.uri=qemu:///system \
        libvirt.swtpm_enabled=true libvirt.shutdown_timeout=1
    vt_host_spawn a "$VTPMD" --config "$VT_ROOT/vtpmd.conf" --log-file "$VT_ROOT/vtpmd.log"
    tpm_specs='"hw:tpm_version": "2.0"'
else
    VTPMD_DELAY_AT="spawn.start=$HOLD_MS" "$VTPMD" --config "$(bench_test_conf hol)" \
        --log-file "$VT_ROOT/vtpmd.log" < /dev/null &
    VT_DAEMONS+=($!)
    tpm_specs= # the test driver has no TPM
fi
for _ in $(seq 1 100); do
    "$CTL" call --host hol --timeout 1 get_capabilities > /dev/null 2>&1 && break
    sleep 0.2
done

# The control: an echo consumer whose reply is as big as vtpmd's.
reply_bytes=$("$FAN" --url "$VT_AMQP_URL" --hosts hol --calls 10 --settle 0 --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["reply_bytes_mean"])')
"$ECHO" --url "$VT_AMQP_URL" --host hol-echo --reply-bytes "$reply_bytes" \
    2> "$VT_ROOT/echo.err" < /dev/null &
VT_DAEMONS+=($!)
for _ in $(seq 1 100); do
    "$FAN" --url "$VT_AMQP_URL" --hosts hol-echo --calls 2 --timeout 1 --settle 0 \
        > /dev/null 2>&1 && break
    sleep 0.2
done

# One slow caller: spawn, destroy, again, until $VT_ROOT/stop exists.
# Counts its operations in $res/slow-N.
slow_caller() {
    local n=0 u
    [ "$PIN" != 1 ] || echo "$BASHPID" > "$cg_guests/cgroup.procs"
    while [ ! -e "$VT_ROOT/stop" ]; do
        u=$(cat /proc/sys/kernel/random/uuid)
        "$CTL" call --host hol --timeout 120 spawn "{\"instance\": {\"uuid\": \"$u\",
            \"flavor\": {\"name\": \"m1.tpm\", \"vcpus\": 1, \"memory_mb\": 64,
                         \"extra_specs\": {$tpm_specs}},
            \"image\": {\"id\": \"none\", \"properties\": {}}}}" > /dev/null 2>&1 || true
        "$CTL" call --host hol --timeout 120 destroy "{\"instance\": {\"uuid\": \"$u\"}}" \
            > /dev/null 2>&1 || true
        n=$((n + 2))
        echo "$n" > "$res/slow-$1"
    done
}

measure() { # OUT [HOST]
    "$FAN" --url "$VT_AMQP_URL" --hosts "${2:-hol}" --calls "$CALLS" --warmup 50 \
        --concurrency 1 --mix get_capabilities=100 --settle 0.2 --json > "$1" 2> "$1.err" || true
}

for round in $(seq 1 "$ROUNDS"); do
    measure "$res/idle-r$round.json"
    measure "$res/echo-idle-r$round.json" hol-echo
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
    measure "$res/echo-loaded-r$round.json" hol-echo
    inflight=$(pgrep -f "vtpmctl call --host hol --timeout 120" | wc -l)
    stop_slow
    ops=$(cat "$res"/slow-* 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    echo "$pids $inflight $ops $(( (t1 - t0) / 1000000 ))" > "$res/loaded-r$round.slow"
    vt_log "round $round: $(python3 -c '
import json, sys
i = json.load(open(sys.argv[1])); l = json.load(open(sys.argv[2]))
ei = json.load(open(sys.argv[4])); el = json.load(open(sys.argv[5]))
print("idle p99 %.2f ms, loaded p99 %.2f ms (%.2fx); echo %.2f / %.2f ms (%.2fx); "
      "slow ops in flight at start/end: %s"
      % (i["latency_ms"]["p99"], l["latency_ms"]["p99"],
         l["latency_ms"]["p99"] / i["latency_ms"]["p99"], ei["latency_ms"]["p99"],
         el["latency_ms"]["p99"], el["latency_ms"]["p99"] / ei["latency_ms"]["p99"],
         sys.argv[3]))' \
        "$res/idle-r$round.json" "$res/loaded-r$round.json" "$pids/$inflight" \
        "$res/echo-idle-r$round.json" "$res/echo-loaded-r$round.json" 2>&1)"
    # Leftover domains of interrupted callers would load the next round.
    [ "$SLOW_MODE" = real ] || continue
    for d in $(virsh -q -c "$(vt_host_uri a)" list --all --name 2>/dev/null); do
        "$CTL" call --host hol --timeout 60 destroy "{\"instance\": {\"uuid\": \"${d#instance-}\"}}" \
            > /dev/null 2>&1 || true
    done
done

python3 - "$res" "$ROUNDS" "$CALLS" "$SLOW" "$PIN" "$reply_bytes" "$SLOW_MODE" "$HOLD_MS" <<'EOF'
import json, os, statistics, sys, time
res, rounds, calls, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pin, reply_bytes = sys.argv[5] == "1", int(sys.argv[6])
slow_mode, hold_ms = sys.argv[7], int(sys.argv[8])
def load(name):
    try:
        return json.load(open(os.path.join(res, name)))
    except Exception:
        return None
idle = [load("idle-r%d.json" % r) for r in range(1, rounds + 1)]
loaded = [load("loaded-r%d.json" % r) for r in range(1, rounds + 1)]
echo_idle = [load("echo-idle-r%d.json" % r) for r in range(1, rounds + 1)]
echo_loaded = [load("echo-loaded-r%d.json" % r) for r in range(1, rounds + 1)]
slowinfo = []
for r in range(1, rounds + 1):
    try:
        a, b, ops, ms = (int(x) for x in open(os.path.join(res, "loaded-r%d.slow" % r)).read().split())
        slowinfo.append({"inflight_start": a, "inflight_end": b, "slow_ops": ops, "window_ms": ms})
    except Exception:
        slowinfo.append(None)
clean = all(d and d["result"] == "ok" for d in idle + loaded + echo_idle + echo_loaded)
def med(runs, k):
    v = [d["latency_ms"][k] for d in runs if d]
    return round(statistics.median(v), 3) if v else None
out = {"benchmark": "head_of_line", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "calls": calls, "rounds": rounds, "slow_callers": slow,
       "guests_pinned": pin, "reply_bytes": reply_bytes, "slow_mode": slow_mode,
       "hold_ms": hold_ms if slow_mode == "held" else None,
       "idle_ms": {k: med(idle, k) for k in ("p50", "p90", "p99", "max")},
       "loaded_ms": {k: med(loaded, k) for k in ("p50", "p90", "p99", "max")},
       "echo_idle_ms": {k: med(echo_idle, k) for k in ("p50", "p90", "p99", "max")},
       "echo_loaded_ms": {k: med(echo_loaded, k) for k in ("p50", "p90", "p99", "max")},
       "p99_ratio_runs": [round(l["latency_ms"]["p99"] / i["latency_ms"]["p99"], 3) if i and l else None
                          for i, l in zip(idle, loaded)],
       "slow": slowinfo, "all_runs_clean": clean}
if out["idle_ms"]["p99"] and out["loaded_ms"]["p99"]:
    out["p99_ratio"] = round(out["loaded_ms"]["p99"] / out["idle_ms"]["p99"], 3)
    out["target_met"] = clean and out["p99_ratio"] < 3
if out["echo_idle_ms"]["p99"] and out["echo_loaded_ms"]["p99"]:
    out["echo_p99_ratio"] = round(out["echo_loaded_ms"]["p99"] / out["echo_idle_ms"]["p99"], 3)
    # What vtpmd adds under load beyond what the load does to any consumer.
    out["loaded_p99_vs_echo"] = round(out["loaded_ms"]["p99"] / out["echo_loaded_ms"]["p99"], 3)
print(json.dumps(out))
w = sys.stderr.write
w("\nHead-of-line: get_capabilities at concurrency 1, %d calls per run, median of %d rounds; "
  "slow operations: %s; %s\n" % (calls, rounds,
  "real spawns (TPM 2.0, QEMU/TCG)" if slow_mode == "real" else
  "spawns held %d ms in the pool (test:///default, no CPU load)" % hold_ms,
  "guests and slow callers on a CPU of their own" if pin else "every CPU shared"))
w("%-12s %9s %9s %9s %9s\n" % ("", "p50 ms", "p90 ms", "p99 ms", "max ms"))
for k in ("idle", "loaded", "echo_idle", "echo_loaded"):
    m = out[k + "_ms"]
    w("%-12s %9s %9s %9s %9s\n" % (k.replace("_", " "), m["p50"], m["p90"], m["p99"], m["max"]))
w("control: the echo's loaded/idle p99 %s; vtpmd's loaded p99 / the echo's %s\n"
  % (out.get("echo_p99_ratio"), out.get("loaded_p99_vs_echo")))
w("loaded = %d callers each keeping a spawn or destroy in flight; p99 ratio %s (target < 3x: %s)\n"
  % (slow, out.get("p99_ratio"), "met" if out.get("target_met") else "NOT met"))
EOF
