#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# amqps:// end to end with peer and hostname verification on: vtpmd,
# vtpmctl and vtpm-fanout against a RabbitMQ TLS listener whose certificate (CN=localhost,
# SAN DNS:localhost, IP:127.0.0.1) a test CA issued.  Runs under
# tests/integration.sh with VT_RMQ_TLS=1 (env.sh's vt_rmq_start then opens the
# TLS listener and exports VT_AMQPS_URL, VT_RMQ_TLS_PORT and VT_TLS_DIR with
# ca.pem, client.pem/key and other-ca.pem), which also starts libvirt host "a";
# the vtpmds run in that host's namespace.
# Usage: VT_RMQ_TLS=1 integration.sh test_tls.sh PATH/TO/vtpmctl PATH/TO/vtpmd PATH/TO/vtpm-fanout
#
# Prints one "ok - ..." / "not ok - ..." line per check, then "N passed, M
# failed"; exits 1 if any check failed.
set -u

V=${1:?usage: VT_RMQ_TLS=1 integration.sh test_tls.sh PATH/TO/vtpmctl PATH/TO/vtpmd}
D=${2:?usage: VT_RMQ_TLS=1 integration.sh test_tls.sh PATH/TO/vtpmctl PATH/TO/vtpmd PATH/TO/vtpm-fanout}
F=${3:?usage: VT_RMQ_TLS=1 integration.sh test_tls.sh PATH/TO/vtpmctl PATH/TO/vtpmd PATH/TO/vtpm-fanout}
if [ ! -x "$V" ] || [ ! -x "$D" ] || [ ! -x "$F" ] || [ -z "${VT_AMQPS_URL:-}" ] || [ -z "${VT_TLS_DIR:-}" ] ||
    [ -z "${VT_RMQ_TLS_PORT:-}" ] || [ -z "${VT_HOST_A_URI:-}" ] || [ -z "${VT_ROOT:-}" ]; then
    echo "not ok - needs executable vtpmctl ($V), vtpmd ($D), vtpm-fanout ($F), VT_AMQPS_URL, VT_TLS_DIR," \
        "VT_RMQ_TLS_PORT, VT_HOST_A_URI (run under integration.sh with VT_RMQ_TLS=1)"
    echo "0 passed, 1 failed"
    exit 1
fi

# env.sh for vt_host_spawn / vt_host_exec / vt_rmqctl: it finds host a's
# namespace through the tree under $VT_ROOT, but resets the broker's node and
# port, which integration.sh exported.
rmq_node=$VT_RMQ_NODE
rmq_port=$VT_RMQ_PORT
# shellcheck source=lib/env.sh
source "$(cd "$(dirname "$0")" && pwd)/lib/env.sh"
VT_RMQ_NODE=$rmq_node
VT_RMQ_PORT=$rmq_port

TLS=$VT_TLS_DIR
PORT=$VT_RMQ_TLS_PORT
URL=$VT_AMQPS_URL
tmp=$(mktemp -d "$VT_ROOT/test_tls.XXXXXX")
OUT=$tmp/out
ERR=$tmp/err
RC=0
declare -A PID LOG

cleanup() {
    local p
    for p in "${PID[@]}"; do
        kill -TERM "$p" 2> /dev/null || true
    done
    for p in "${PID[@]}"; do
        wait "$p" 2> /dev/null || true
    done
}
trap cleanup EXIT

# ---- harness -----------------------------------------------------------------

# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"


# The log of vtpmd NAME, as a diagnostic.
diag_log() {
    [ -s "${LOG[$1]:-/nonexistent}" ] && tail -n 15 "${LOG[$1]}" | sed "s/^/#   $1 log: /"
    return 0
}



# Like check, with vtpmd NAME's log as the diagnostic.
check_log() {
    local name=$1 desc=$2
    shift 2
    if "$@"; then
        pass "$desc"
    else
        echo "not ok - $desc"
        fail=$((fail + 1))
        diag_log "$name"
    fi
}

# Like check, with the broker's connection list as the diagnostic.
check_conn() {
    local desc=$1
    shift
    if "$@"; then
        pass "$desc"
    else
        echo "not ok - $desc"
        fail=$((fail + 1))
        head -c 3000 "$tmp/connections.json" | sed 's/^/#   connections: /'
    fi
}


# py EXPR: EXPR is true for d, the JSON object on stdout.
py() {
    python3 -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    sys.exit(0 if eval(sys.argv[2]) else 1)
except Exception:
    sys.exit(1)' "$OUT" "$1"
}

reply_ok() { py 'd.get("ok") is True and isinstance(d.get("result"), dict)'; }
# fault_says REGEX: a vtpmctl fault ({"fault": {code, message}}) whose message matches.
fault_says() {
    py 'isinstance(d.get("fault"), dict)' && grep -Eiq -- "$1" "$OUT"
}

# conf NAME [KEY=VALUE...]: $tmp/NAME.conf with [amqp] keys (url defaults to
# $URL) and [worker] host = NAME.
conf() {
    local name=$1 kv url=$URL
    shift
    {
        echo '[amqp]'
        for kv in "$@"; do
            case $kv in
            url=*) url=${kv#url=} ;;
            *) echo "${kv%%=*} = ${kv#*=}" ;;
            esac
        done
        echo "url = $url"
        echo '[worker]'
        echo "host = $name"
    } > "$tmp/$name.conf"
    chmod 600 "$tmp/$name.conf" # holds the broker password (docs/security.md)
}

# start NAME: vtpmd with $tmp/NAME.conf in host a's namespace, logging (debug)
# to $tmp/NAME.log.
start() {
    LOG[$1]=$tmp/$1.log
    vt_host_spawn a "$D" --config "$tmp/$1.conf" --log-file "${LOG[$1]}" --log-level debug
    PID[$1]=$VT_LAST_PID
}

# wait_log NAME ERE [SECONDS]: vtpmd NAME's log gets a line matching ERE.
wait_log() {
    local i
    for ((i = 0; i < ${3:-30} * 5; i++)); do
        grep -Eq -- "$2" "${LOG[$1]}" 2> /dev/null && return 0
        kill -0 "${PID[$1]}" 2> /dev/null || break
        sleep 0.2
    done
    grep -Eq -- "$2" "${LOG[$1]}" 2> /dev/null
}

alive() { kill -0 "${PID[$1]}" 2> /dev/null; }

# call CONF-NAME WORKER [SECONDS]: vtpmctl call ... get_capabilities.
call() {
    timeout 120 "$V" call --config "$tmp/$1.conf" --host "$2" --timeout "${3:-30}" \
        get_capabilities > "$OUT" 2> "$ERR"
    RC=$?
}

# The broker's view of vtpmd NAME's connection (rabbitmqctl list_connections):
# "ssl=true|false protocol=P subject=CN..." ("" when not connected).  The raw
# listing stays in $tmp/connections.json.
broker_conn() {
    vt_rmqctl list_connections -q --formatter json client_properties ssl ssl_protocol \
        peer_cert_subject > "$tmp/connections.json" 2>&1
    python3 -c '
import json, sys
try:
    conns = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
for c in conns:
    props = {p[0]: p[2] for p in c.get("client_properties", [])}
    if props.get("connection_name") == sys.argv[2]:
        print("ssl=%s protocol=%s subject=%s" % (str(c.get("ssl")).lower(),
              c.get("ssl_protocol"), c.get("peer_cert_subject")))' "$tmp/connections.json" "vtpmd@$1"
}

# stop NAME: SIGTERM; true when vtpmd exits 0 within 30 s.
stop() {
    local p=${PID[$1]} rc
    unset "PID[$1]"
    kill -TERM "$p" 2> /dev/null || return 1
    for _ in $(seq 1 150); do
        kill -0 "$p" 2> /dev/null || break
        sleep 0.2
    done
    kill -0 "$p" 2> /dev/null && { kill -KILL "$p"; return 1; }
    wait "$p"
    rc=$?
    [ "$rc" = 0 ]
}

CONNECTED="amqp: connected to localhost:$PORT "

# ---- the broker's certificate, checked by vtpmd and vtpmctl ----------------

conf tls-good "cacert=$TLS/ca.pem"
conf tls-cert "cacert=$TLS/ca.pem" "cert=$TLS/client.pem" "key=$TLS/client.key"
conf tls-other "cacert=$TLS/other-ca.pem"
conf tls-name "cacert=$TLS/ca.pem" "url=amqps://guest:guest@127.0.0.2:$PORT/%2f"
conf tls-ip "cacert=$TLS/ca.pem" "url=amqps://guest:guest@127.0.0.1:$PORT/%2f"
conf tls-badcert "cacert=$TLS/ca.pem" "cert=$TLS/other-ca.pem" "key=$TLS/other-ca.key"
conf tls-nocacert
conf tls-nofile "cacert=$tmp/no-such-ca.pem"

# Started together: they connect (or fail to) side by side.
start tls-good
start tls-cert
start tls-other
start tls-name

check_log tls-good "vtpmd with the test CA connects over amqps (log: connected to localhost:$PORT)" \
    wait_log tls-good "$CONNECTED"
call tls-good tls-good
check "vtpmctl call over amqps (CA only): exit 0, ok true" eval 'rc_is 0 && reply_ok'

# ---- client certificates -------------------------------------------------------

check_log tls-cert "vtpmd with CA + client cert/key connects over amqps" \
    wait_log tls-cert "$CONNECTED"
call tls-cert tls-cert
check "vtpmctl call over amqps with client cert/key: exit 0, ok true" eval 'rc_is 0 && reply_ok'
call tls-cert tls-good
check "vtpmctl with client cert/key reaches the CA-only vtpmd too" eval 'rc_is 0 && reply_ok'

# The listener does not insist on a client certificate, so the call above
# would pass without one: the broker must have seen it.
bc=$(broker_conn tls-cert)
check_conn "the broker sees vtpmd@tls-cert over TLS with CN=vtpmd-test-client ($bc)" \
    eval '[[ $bc == "ssl=true "*"subject=CN=vtpmd-test-client" ]]'
bc=$(broker_conn tls-good)
check_conn "the broker sees vtpmd@tls-good over TLS without a client cert ($bc)" \
    eval '[[ $bc == "ssl=true "*"subject=" ]]'

call tls-badcert tls-good 10
check "vtpmctl with a client cert the broker's CA did not issue: exit 1, fault (SSL)" \
    eval 'rc_is 1 && fault_says "ssl|tls"'

# ---- a broker certificate from another CA --------------------------------------

check_log tls-other "vtpmd trusting another CA logs the peer verification failure" \
    wait_log tls-other "cannot connect to localhost:$PORT: .*SSL peer cert verification failed"
check_log tls-other "vtpmd trusting another CA keeps retrying (log: attempt N)" \
    wait_log tls-other "attempt [0-9]+: .*SSL peer cert verification failed"
check_log tls-other "vtpmd trusting another CA is still running and never connected" \
    eval 'alive tls-other && ! grep -q "amqp: connected" "${LOG[tls-other]}"'
call tls-good tls-other 2
check "nobody consumes vtpmd@tls-other's queue: a call to it times out (exit 3)" rc_is 3
call tls-other tls-good 10
check "vtpmctl trusting another CA: exit 1, fault says the peer verification failed" \
    eval 'rc_is 1 && fault_says "cannot connect.*SSL peer cert verification failed"'

# ---- hostname verification --------------------------------------------------------
#
# 127.0.0.2 reaches the same listener (env.sh binds it there too); the
# certificate, trusted, names localhost and 127.0.0.1 only.

check_log tls-name "vtpmd with a URL host the cert does not name logs the hostname verification failure" \
    wait_log tls-name "cannot connect to 127\.0\.0\.2:$PORT: .*SSL hostname verification failed"
check_log tls-name "vtpmd with the wrong host name keeps running, never connected" \
    eval 'alive tls-name && ! grep -q "amqp: connected" "${LOG[tls-name]}"'
call tls-name tls-good 10
check "vtpmctl with a URL host the cert does not name: exit 1, fault says hostname verification failed" \
    eval 'rc_is 1 && fault_says "cannot connect.*hostname verification failed"'

# 127.0.0.1 is in the certificate as an IP SAN, but rabbitmq-c 0.11 (Debian
# 12) matches the host against DNS SANs and the CN only, so it refuses the
# name.  Not a check (a library that honours IP SANs would accept it, which
# is right too): reported so the limitation stays visible.
call tls-ip tls-good 10
echo "# note: amqps://...@127.0.0.1 (cert has IP SAN 127.0.0.1): vtpmctl exit $RC: $(head -c 300 "$OUT")"

# ---- oslo's URL forms over TLS ---------------------------------------------------
#
# rabbits:// is amqps://, and a URL ending in "/" means the vhost "/", as
# nova.conf writes transport_url.

RABBITS="rabbits://guest:guest@localhost:$PORT/"
conf tls-rabbit "cacert=$TLS/ca.pem" "url=$RABBITS"
start tls-rabbit
check_log tls-rabbit "vtpmd with [amqp] url = rabbits://...:$PORT/ connects over TLS to the vhost /" \
    wait_log tls-rabbit "${CONNECTED}vhost / as vtpmd@tls-rabbit"
timeout 120 "$V" call --url "$RABBITS" --cacert "$TLS/ca.pem" --host tls-rabbit --timeout 30 \
    get_capabilities > "$OUT" 2> "$ERR"
RC=$?
check "vtpmctl call --url rabbits://...:$PORT/ --cacert: exit 0, ok true" eval 'rc_is 0 && reply_ok'
check_log tls-rabbit "SIGTERM: vtpmd on rabbits:// drains and exits 0" stop tls-rabbit

# ---- vtpm-fanout over TLS: the same broker options as vtpmctl --------------------------

fanout() {
    timeout 200 "$F" --json --calls 20 --concurrency 4 --timeout 30 --settle 0 "$@" \
        > "$OUT" 2> "$ERR"
    RC=$?
}
fan_ok() { py 'd.get("result") == "ok" and d.get("ok") == 20 and d.get("lost") == 0'; }

fanout --url "$URL" --cacert "$TLS/ca.pem" --hosts tls-good
check "vtpm-fanout --url amqps:// --cacert: 20 calls answered" eval 'rc_is 0 && fan_ok'
fanout --config "$tmp/tls-cert.conf" --hosts tls-cert
check "vtpm-fanout --config with CA and client cert/key: 20 calls answered" eval 'rc_is 0 && fan_ok'
fanout --url "$URL" --cacert "$TLS/ca.pem" --cert "$TLS/client.pem" --key "$TLS/client.key" \
    --hosts tls-good
check "vtpm-fanout --cacert --cert --key: 20 calls answered" eval 'rc_is 0 && fan_ok'
fanout --url "$URL" --cacert "$TLS/other-ca.pem" --hosts tls-good
check "vtpm-fanout trusting another CA: exit 1, says the peer verification failed" \
    eval 'rc_is 1 && grep -q "SSL peer cert verification failed" "$ERR"'
fanout --url "$URL" --hosts tls-good
check "vtpm-fanout with amqps:// and no --cacert: usage error naming cacert" \
    eval 'rc_is 2 && grep -q "cacert" "$ERR"'
# Spawned workers get the TLS options as their [amqp] (relative paths made
# absolute): they must reach the broker over TLS to answer.
( cd "$TLS" && timeout 200 "$F" --json --url "$URL" --cacert ca.pem --spawn-workers 1 \
    --vtpmd "$D" --calls 10 --timeout 30 --settle 0 > "$OUT" 2> "$ERR" )
RC=$?
check "vtpm-fanout --spawn-workers over amqps (relative --cacert): the worker answers 10 calls" \
    eval 'rc_is 0 && py "d.get(\"ok\") == 10 and all(w[\"exit_ok\"] for w in d[\"workers\"])"'

# ---- configuration refused at start ---------------------------------------------

RC=0
vt_host_exec a timeout 60 "$D" --config "$tmp/tls-nocacert.conf" > "$OUT" 2> "$ERR" || RC=$?
check "vtpmd with amqps:// and no cacert exits non-zero at once" \
    eval '[ "$RC" != 0 ] && [ "$RC" != 124 ]'
check "... with FILE:LINE: [amqp] url: ... cacert" \
    grep -Eq -- "$tmp/tls-nocacert\.conf:[0-9]+: \[amqp\] url: .*cacert" "$ERR"
timeout 60 "$V" call --config "$tmp/tls-nocacert.conf" --host tls-good --timeout 5 \
    get_capabilities > "$OUT" 2> "$ERR"
RC=$?
check "vtpmctl with amqps:// and no cacert: exit 2 with FILE:LINE naming cacert" \
    eval 'rc_is 2 && grep -Eq -- "tls-nocacert\.conf:[0-9]+: .*cacert" "$ERR"'

RC=0
vt_host_exec a timeout 60 "$D" --config "$tmp/tls-nofile.conf" --log-file "$tmp/tls-nofile.log" \
    > "$OUT" 2> "$ERR" || RC=$?
check "vtpmd whose cacert file does not exist exits 1, naming the file" \
    eval 'rc_is 1 && grep -q "no-such-ca.pem" "$tmp/tls-nofile.log"'

# ---- a clean stop over TLS ----------------------------------------------------------

check_log tls-good "SIGTERM: vtpmd over amqps drains and exits 0" stop tls-good
check_log tls-cert "SIGTERM: vtpmd with a client cert drains and exits 0" stop tls-cert

tap_done
