#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Soak: MINUTES of mixed traffic against two hosts while faults are injected
# at random, then a report of every request, fault, loss and vtpmd's RSS over
# time (docs/reliability.md, "Soak").  Not a test and not part of CI: run
# by hand, as root.
#
#   bench/soak.sh [BUILD_DIR]         (default ./build)
#
# It runs itself under tests/integration.sh --net --hosts 2 (a private
# RabbitMQ node, two libvirtd hosts with QEMU/TCG and swtpm) with vtpmd on
# both hosts, and for MINUTES keeps going at once:
#   - LOOPS lifecycle loops, each taking one firmware-only instance at a time
#     (random TPM version, model and key custody) through spawn, power_off,
#     migrate a -> b (migrate_disk_and_power_off, finish_migration,
#     confirm_migration), shelve on b, unshelve on a, destroy — retrying a
#     call that fails retryably or gets no reply, as a control plane does —
#     and checking after each move that the TPM state file is byte-for-byte
#     the one power_off left;
#   - vtpm-fanout runs (get_capabilities/destroy mix, FANOUT_CALLS calls at
#     FANOUT_CONC in flight) to both hosts, back to back;
#   - every FAULT_MIN..FAULT_MAX seconds one random fault: vtpmd SIGKILLed
#     and started again, libvirtd killed and started again (host a or b), or
#     the broker stopped and started again;
#   - vtpmd's VmRSS on both hosts sampled every 10 s.
# Losses must be 0: a call with no reply that no broker restart explains,
# a fan-out reply lost or duplicated outside a broker restart, a state file
# that changed or vanished across a move, an instance left behind.
# Prints a human report on stderr and one JSON line on stdout; exit 1 on a
# loss.  Environment: MINUTES (30), LOOPS (2), FAULT_MIN (20), FAULT_MAX
# (60), FANOUT_CALLS (400), FANOUT_CONC (4), FAULTS (all of
# "vtpmd libvirtd broker").
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)

if [ -z "${VT_ROOT:-}" ]; then
    B=$(cd "${1:-$src/build}" && pwd)
    for x in "$B/tools/vtpmctl" "$B/worker/vtpmd" "$B/tools/vtpm-fanout"; do
        [ -x "$x" ] || { echo "soak: $x missing: build first (ninja -C $B)" >&2; exit 2; }
    done
    exec "$src/tests/integration.sh" --net --hosts 2 "$here/soak.sh" "$B"
fi

B=$1
vtpmctl=$B/tools/vtpmctl
vtpmd=$B/worker/vtpmd
fanout=$B/tools/vtpm-fanout
tests=$src/tests
MINUTES=${MINUTES:-30}
LOOPS=${LOOPS:-2}
FAULT_MIN=${FAULT_MIN:-20}
FAULT_MAX=${FAULT_MAX:-60}
FANOUT_CALLS=${FANOUT_CALLS:-400}
FANOUT_CONC=${FANOUT_CONC:-4}
FAULTS=${FAULTS:-vtpmd libvirtd broker}
# env.sh empties VT_RMQ_PORT/NODE when sourced (it would start its own
# broker); the broker is integration.sh's, and the faults restart it.
rmq_port=${VT_RMQ_PORT:-} rmq_node=${VT_RMQ_NODE:-}
# shellcheck source=../tests/lib/env.sh
source "$tests/lib/env.sh"
VT_RMQ_PORT=$rmq_port VT_RMQ_NODE=$rmq_node
[ -n "$VT_RMQ_NODE" ] || { echo "soak: VT_RMQ_NODE is not set by tests/integration.sh" >&2; exit 2; }
# shellcheck source=../tests/acceptance/guest.sh
source "$tests/acceptance/guest.sh"
export VTPM_AMQP_URL=$VT_AMQP_URL
shutdown_timeout=1
start_two_hosts >&2 # its "ok" lines; stdout is the JSON line

res=$VT_ROOT/soak
mkdir -p "$res"
t0=$(date +%s)
end=$((t0 + MINUTES * 60))
echo "${vtpmd_pid[a]}" > "$res/pid.a"
echo "${vtpmd_pid[b]}" > "$res/pid.b"
event() { printf '%s\t%s\n' "$(date +%s.%N)" "$*" >> "$res/events.tsv"; }

# ---- lifecycle loops ---------------------------------------------------------------

# step LOOP NAME WORKER METHOD ARGS: call until ok (max 10 tries, retrying
# retryable faults and calls without a reply); each try is a line of
# calls.tsv.  Status 1 on a non-retryable fault or when the tries run out.
step() {
    local loop=$1 name=$2 wh=$3 method=$4 args=$5 try rc t1 t2 code
    for try in 1 2 3 4 5 6 7 8 9 10; do
        rc=0
        t1=$(date +%s.%N)
        reply=$("$vtpmctl" call --host "$wh" --timeout 120 "$method" "$args" 2>&1) || rc=$?
        t2=$(date +%s.%N)
        case $rc in
        0) code=ok ;;
        1) code=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["fault"]; print(f["code"] + ("/retryable" if f.get("retryable") else ""))' "$reply" 2>/dev/null || echo unparsable) ;;
        3) code=no_reply ;;
        *) code=client_error ;;
        esac
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t1" "$t2" "$loop" "$name" "${host_of[$wh]}" "$code" "$try" >> "$res/calls.tsv"
        [ "$code" = ok ] && return 0
        case $code in
        */retryable | no_reply | client_error) sleep 2 ;;
        *)
            printf '%s\t%s\t%s\n' "$loop" "$name" "$reply" >> "$res/nonretryable.tsv"
            return 1
            ;;
        esac
    done
    return 1
}

state_sha() { # HOST UUID VERSION
    local f
    f=$(state_file "$1" "$2" "$3")
    [ -s "$f" ] && sha256sum < "$f" | cut -c1-64 || echo none
}
state_file() {
    local d
    d=$(vt_host_root "$1")/var/lib/libvirt/swtpm/$2
    if [ "$3" = 1.2 ]; then echo "$d/tpm1.2/tpm-00.permall"; else echo "$d/tpm2/tpm2-00.permall"; fi
}
flavor() { printf '{"name": "soak", "vcpus": 1, "memory_mb": 64, "extra_specs": {"hw:tpm_version": "%s", "hw:tpm_secret_security": "%s"}}' "$1" "$mode"; }
image() { printf '{"id": "img", "name": "img", "properties": {"hw_tpm_model": "%s"}}' "$1"; }

verdict() { printf '%s\t%s\t%s\t%s\n' "$(date +%s.%N)" "$1" "$2" "$3" >> "$res/cycles.tsv"; }
# A cycle that failed: as a control plane would, destroy the instance on
# both hosts (a failed request may still have been carried out).
give_up() { # LOOP UUID STEP
    verdict "$2" failed "$3"
    cleanup "$1" "$2"
}
lost() { # LOOP UUID WHAT
    verdict "$2" loss "$3"
    cleanup "$1" "$2"
}
cleanup() { # LOOP UUID
    step "$1" cleanup_destroy "$A" destroy "{\"instance\": {\"uuid\": \"$2\"}}"
    step "$1" cleanup_destroy "$B" destroy "{\"instance\": {\"uuid\": \"$2\"}}"
}

cycle() { # LOOP
    local l=$1 u ver model f i spec sha xfer shelved s
    local modes=(user host deployment) models=(tpm-tis tpm-crb)
    u=$(cat /proc/sys/kernel/random/uuid)
    mode=${modes[RANDOM % 3]}
    if [ $((RANDOM % 2)) = 0 ]; then ver=2.0; model=${models[RANDOM % 2]}; else ver=1.2; model=tpm-tis; fi
    f=$(flavor "$ver")
    i=$(image "$model")
    spec="{\"uuid\": \"$u\", \"name\": \"soak\", \"flavor\": $f, \"image\": $i$(vtpm_member)}"
    step "$l" spawn "$A" spawn "{\"instance\": $spec}" || { give_up "$l" "$u" spawn; return; }
    step "$l" power_off "$A" power_off "{\"instance\": {\"uuid\": \"$u\"}}" || { give_up "$l" "$u" power_off; return; }
    sha=$(state_sha a "$u" "$ver")
    [ "$sha" = none ] && { lost "$l" "$u" "no state after power_off"; return; }
    step "$l" migrate_disk_and_power_off "$A" migrate_disk_and_power_off \
        "{\"instance\": $spec, \"dest_host\": \"$B\"}" || { give_up "$l" "$u" migrate; return; }
    xfer=$(rget vtpm_transfer)
    step "$l" finish_migration "$B" finish_migration \
        "{\"instance\": $spec, \"old_flavor\": $f, \"power_on\": false, \"vtpm_transfer\": $xfer}" ||
        { give_up "$l" "$u" finish_migration; return; }
    step "$l" confirm_migration "$A" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}" ||
        { give_up "$l" "$u" confirm_migration; return; }
    s=$(state_sha b "$u" "$ver")
    [ "$s" = "$sha" ] || { lost "$l" "$u" "state on b after migration: $s, expected $sha"; return; }
    step "$l" shelve "$B" shelve "{\"instance\": $spec, \"offload\": true}" || { give_up "$l" "$u" shelve; return; }
    shelved=$(rget shelved)
    step "$l" unshelve "$A" unshelve "{\"instance\": $spec, \"shelved\": $shelved, \"power_on\": false}" ||
        { give_up "$l" "$u" unshelve; return; }
    s=$(state_sha a "$u" "$ver")
    [ "$s" = "$sha" ] || { lost "$l" "$u" "state on a after unshelve: $s, expected $sha"; return; }
    step "$l" destroy "$A" destroy "{\"instance\": {\"uuid\": \"$u\"}}" || { give_up "$l" "$u" destroy; return; }
    for h in a b; do
        [ -e "$(vt_host_root "$h")/var/lib/libvirt/swtpm/$u" ] && { lost "$l" "$u" "state dir left on $h"; return; }
    done
    verdict "$u" ok "$ver/$model/$mode"
}

lifecycle_loop() {
    while [ "$(date +%s)" -lt "$end" ]; do cycle "$1"; done
}

fanout_loop() {
    local n=0 t1 rc
    while [ "$(date +%s)" -lt "$end" ]; do
        n=$((n + 1))
        t1=$(date +%s.%N)
        rc=0
        "$fanout" --url "$VT_AMQP_URL" --hosts "$A,$B" --calls "$FANOUT_CALLS" \
            --concurrency "$FANOUT_CONC" --mix get_capabilities=80,destroy=20 --timeout 60 \
            --settle 1 --json > "$res/fanout.$n.json" 2> "$res/fanout.$n.err" || rc=$?
        printf '%s\t%s\t%s\t%s\n' "$t1" "$(date +%s.%N)" "$n" "$rc" >> "$res/fanout.tsv"
    done
}

rss_loop() {
    local h p kb
    while [ "$(date +%s)" -lt "$end" ]; do
        for h in a b; do
            p=$(cat "$res/pid.$h" 2>/dev/null)
            kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
            printf '%s\t%s\t%s\t%s\n' "$(date +%s)" "$h" "$p" "${kb:-}" >> "$res/rss.tsv"
        done
        sleep 10
    done
}

note "soak: $MINUTES min, $LOOPS lifecycle loop(s), fan-out $FANOUT_CALLS calls at $FANOUT_CONC, faults ($FAULTS) every $FAULT_MIN..$FAULT_MAX s"
bg=()
for l in $(seq 1 "$LOOPS"); do
    lifecycle_loop "$l" &
    bg+=($!)
done
fanout_loop &
bg+=($!)
rss_loop &
bg+=($!)

# ---- faults (here, so that vtpmd_pid stays this shell's) ---------------------------

restart_vtpmd() { # HOST
    local h=$1 wh
    [ "$h" = a ] && wh=$A || wh=$B
    kill -9 "${vtpmd_pid[$h]}" 2>/dev/null
    wait "${vtpmd_pid[$h]}" 2>/dev/null
    vt_host_spawn "$h" "$vtpmd" --config "$VT_ROOT/vtpmd-accept-$h.conf" --log-file "${vtpmd_log[$h]}"
    vtpmd_pid[$h]=$VT_LAST_PID
    echo "$VT_LAST_PID" > "$res/pid.$h"
}
read -r -a kinds <<< "$FAULTS"
while :; do
    sleep $((FAULT_MIN + RANDOM % (FAULT_MAX - FAULT_MIN + 1)))
    [ "$(date +%s)" -lt "$end" ] || break
    k=${kinds[RANDOM % ${#kinds[@]}]}
    [ $((RANDOM % 2)) = 0 ] && h=a || h=b
    case $k in
    vtpmd)
        event "fault_start vtpmd_kill $h"
        restart_vtpmd "$h"
        event "fault_end vtpmd_kill $h"
        ;;
    libvirtd)
        event "fault_start libvirtd_kill $h"
        (vt_host_restart_libvirtd "$h") > "$res/libvirtd-restart.out" 2>&1 ||
            event "fault_failed libvirtd_kill $h"
        event "fault_end libvirtd_kill $h"
        ;;
    broker)
        event "fault_start broker_restart"
        (vt_rmq_restart) > "$res/broker-restart.out" 2>&1 || event "fault_failed broker_restart"
        event "fault_end broker_restart"
        ;;
    esac
done
note "soak: traffic ends; waiting for the loops to finish their cycles"
wait "${bg[@]}"

# Anything left behind: every cycle ends with destroy.
left=0
for h in a b; do
    n=$(virsh -q -c "$(vt_host_uri "$h")" list --all --name 2>/dev/null | grep -c instance-)
    left=$((left + n))
done
echo "$left" > "$res/left"
for h in a b; do echo "${vtpmd_pid[$h]}" > "$res/pid.$h"; done
for h in a b; do
    if kill -0 "${vtpmd_pid[$h]}" 2>/dev/null; then
        kill -TERM "${vtpmd_pid[$h]}"
        rc=0
        wait "${vtpmd_pid[$h]}" || rc=$?
        echo "$rc" > "$res/exit.$h"
        unset "vtpmd_pid[$h]"
    fi
done

python3 "$here/soak_report.py" "$res" "$MINUTES" "$LOOPS" "$FAULTS"
