#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# One node of a 3-node RabbitMQ cluster stopped mid-stream (issue 8's fault
# matrix, docs/reliability.md).  Three nodes on this machine, clustered,
# vtpmd with [amqp] queue_type = quorum connected to node 1, with node 2 in
# the same [amqp] url (oslo's multi-host form, as nova.conf writes it) and
# node 3 as [amqp] failover_urls (libvirt test:///default: get_capabilities
# and destroy of unknown instances move no TPM state), vtpm-fanout sending
# through node 3.  Node 1 is stopped while calls are in flight: vtpmd must
# fail over to another node, the quorum queue keeps the requests, the ones
# vtpmd held unacknowledged are redelivered, and every call is answered
# (lost, unmatched and invalid all 0; duplicates, the same reply sent again
# for a request whose ack died with node 1, are counted and reported).
# Usage: test_cluster.sh VTPM-FANOUT VTPMD  (as root; starts its own nodes)
# shellcheck source-path=SCRIPTDIR disable=SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: $0 VTPM-FANOUT VTPMD" >&2; exit 2; }
fanout=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/env.sh
source "$tests/lib/env.sh"
OUT=
ERR=
# shellcheck source=lib/tap.sh
source "$tests/lib/tap.sh"
CALLS=${CLUSTER_CALLS:-3000}

vt_init
declare -a CL_NODE CL_PORT
VTPMD_PID=
cleanup() {
    local i
    [ -n "$VTPMD_PID" ] && kill "$VTPMD_PID" 2>/dev/null
    for i in 1 2 3; do [ -n "${CL_NODE[$i]:-}" ] && cl_ctl "$i" stop > /dev/null 2>&1; done
    [ -z "${VT_KEEP:-}" ] && rm -rf "$VT_ROOT"
}
trap cleanup EXIT

# ---- the cluster ------------------------------------------------------------------
# As env.sh's private node, three times: one HOME (one Erlang cookie), one
# mnesia base (a directory per node name), a pid file per node.

cl_env() {
    local d=$VT_ROOT/rabbitmq
    export HOME=$d RABBITMQ_NODENAME=${CL_NODE[$1]} RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=${CL_PORT[$1]} RABBITMQ_DIST_PORT=$(vt_dist_port "${CL_PORT[$1]}")
    export RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log RABBITMQ_PID_FILE=$d/pid.$1
    export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins RABBITMQ_CONFIG_FILE=$d/rabbitmq
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
    # Crash dumps of the nodes and of rabbitmqctl in the run directory,
    # never in the caller's working directory (env.sh does the same).
    export ERL_CRASH_DUMP=$d/erl_crash.dump.$1
}
cl_ctl() { local i=$1; shift; ( cl_env "$i"; /usr/lib/rabbitmq/bin/rabbitmqctl -n "${CL_NODE[$i]}" "$@" ); }
cl_url() { echo "amqp://guest:guest@127.0.0.1:${CL_PORT[$1]}/%2f"; }
cl_launch() {
    local d=$VT_ROOT/rabbitmq
    ( cl_env "$1"; cd "$d"; setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$d/server.$1.out" 2>&1 < /dev/null & )
}
cl_wait() { cl_ctl "$1" wait "$VT_ROOT/rabbitmq/pid.$1" --timeout 120 > "$VT_ROOT/rabbitmq/wait.$1.out" 2>&1; }

mkdir -p "$VT_ROOT/rabbitmq"
echo '[].' > "$VT_ROOT/rabbitmq/enabled_plugins"
printf 'loopback_users = none\nlog.file.level = warning\n' > "$VT_ROOT/rabbitmq/rabbitmq.conf"
for i in 1 2 3; do
    CL_PORT[i]=$(vt_free_port)
    while [ "$i" -gt 1 ] && { [ "${CL_PORT[$i]}" = "${CL_PORT[1]}" ] || [ "${CL_PORT[$i]}" = "${CL_PORT[$((i - 1))]}" ]; }; do
        CL_PORT[i]=$(vt_free_port)
    done
    CL_NODE[i]="vtpmcl$i-${CL_PORT[1]}@localhost"
done
# Node 1 first: it writes the cookie the others read.
t0=$(date +%s)
cl_launch 1
cl_wait 1 || { cat "$VT_ROOT/rabbitmq/wait.1.out" >&2; fail "node 1 starts"; tap_done; exit; }
cl_launch 2
cl_launch 3
for i in 2 3; do
    if ! cl_wait "$i" || ! cl_ctl "$i" stop_app > /dev/null ||
        ! cl_ctl "$i" join_cluster "${CL_NODE[1]}" > "$VT_ROOT/rabbitmq/join.$i.out" 2>&1 ||
        ! cl_ctl "$i" start_app > /dev/null; then
        cat "$VT_ROOT/rabbitmq/wait.$i.out" "$VT_ROOT/rabbitmq/join.$i.out" >&2
        fail "node $i joins the cluster"
        tap_done
        exit
    fi
done
running=$(cl_ctl 1 cluster_status --formatter json 2>/dev/null |
          python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))')
check "3 nodes running in one cluster ($(( $(date +%s) - t0 )) s to form)" [ "$running" = 3 ]

# ---- vtpmd on node 1, failing over to 2 and 3 --------------------------------------
# Nodes 1 and 2 in one rabbit:// URL ending in "/" (the vhost "/"), node 3
# from failover_urls: the three in that order.

cfg=$VT_ROOT/vtpmd-cluster.conf
log=$VT_ROOT/vtpmd-cluster.log
vt_vtpmd_conf "$cfg" \
    "amqp.url=rabbit://guest:guest@127.0.0.1:${CL_PORT[1]},guest:guest@127.0.0.1:${CL_PORT[2]}/" \
    "amqp.failover_urls=$(cl_url 3)" \
    amqp.queue_type=quorum worker.host=cl-w worker.workers=4 libvirt.uri=test:///default
"$vtpmd" --config "$cfg" --log-file "$log" > "$VT_ROOT/vtpmd-cluster.out" 2>&1 &
VTPMD_PID=$!
up=
for _ in $(seq 1 100); do
    grep -q "amqp: connected to 127.0.0.1:${CL_PORT[1]}" "$log" 2>/dev/null && { up=1; break; }
    sleep 0.2
done
check "vtpmd connects to node 1" [ -n "$up" ]
qtype=$(cl_ctl 2 list_queues name type 2>/dev/null | awk '$1 == "vtpm.cl-w" { print $2 }')
check "its request queue is a quorum queue (type: ${qtype:-none})" [ "$qtype" = quorum ]

# ---- node 1 stopped mid-stream ----------------------------------------------------

OUT=$VT_ROOT/fanout.json
ERR=$VT_ROOT/fanout.err
timeout 280 "$fanout" --url "$(cl_url 3)" --hosts cl-w --calls "$CALLS" --concurrency 8 \
    --mix get_capabilities=50,destroy=50 --timeout 120 --settle 3 --json > "$OUT" 2> "$ERR" &
fan_pid=$!
# Mid-stream: once vtpmd has answered a few hundred of them.
for _ in $(seq 1 300); do
    [ "$(grep -c 'method=' "$log" 2>/dev/null)" -ge 300 ] && break
    sleep 0.1
done
answered_before=$(grep -c 'method=' "$log")
cl_ctl 1 stop > /dev/null 2>&1
check "node 1 stopped after vtpmd answered $answered_before requests" \
    [ "$(cl_ctl 2 cluster_status --formatter json 2>/dev/null |
         python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))')" = 2 ]
wait "$fan_pid"
RC=$?
# Nothing lost, nothing unmatched or invalid; duplicates reported.
summary=$(python3 - "$OUT" "$CALLS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
answered = d["ok"] + d["faulted"]
print("calls=%d sent=%d answered=%d ok=%d faulted=%d lost=%d unmatched=%d invalid=%d duplicate=%d late=%d"
      % (d["calls"], d["sent"], answered, d["ok"], d["faulted"], d["lost"], d["unmatched"],
         d["invalid"], d["duplicate"], d["late"]))
sys.exit(0 if d["sent"] == n and answered == n and d["lost"] == 0 and d["unmatched"] == 0
         and d["invalid"] == 0 else 1)
PY
)
src=$?
echo "# vtpm-fanout: $summary"
check "every call answered through the failover: $summary" [ "$src" = 0 ]
check "vtpmd failed over to node 2 or 3" \
    grep -qE "amqp: connected to 127.0.0.1:(${CL_PORT[2]}|${CL_PORT[3]})" "$log"
grep -E "amqp: (lost|connected|next attempt|cannot)" "$log" | sed 's/^/# vtpmd: /'
kill -TERM "$VTPMD_PID"
wait "$VTPMD_PID"
check "vtpmd exits 0 on SIGTERM" [ $? = 0 ]
VTPMD_PID=
tap_done
