# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Throwaway services for vtpmd's integration suites: a private RabbitMQ node
# and "compute hosts", each a libvirtd + virtlogd of its own inside a mount
# namespace whose /etc/libvirt, /var/lib/libvirt, /run, ... are directories
# of a per-host tree.  Two plain libvirtds cannot coexist on one machine
# (privileged paths are compiled in), so every test host gets a namespace,
# and processes that belong to a host (vtpmd) run inside it via nsenter,
# seeing exactly the paths they would see in production.
#
# Sourced by tests/integration.sh, tools/quickstart and the acceptance suite.
# Everything lives under $VT_ROOT and is removed by vt_cleanup.

VT_ROOT=${VT_ROOT:-}
VT_RMQ_NODE=
VT_RMQ_PORT=
VT_HOSTS=()
VT_DAEMONS=()

vt_log() { printf '[env] %s\n' "$*" >&2; }
vt_die() { printf '[env] FATAL: %s\n' "$*" >&2; exit 1; }

vt_init() {
    [ "$(id -u)" = 0 ] || vt_die "integration suites need root (libvirtd, namespaces)"
    if [ -z "$VT_ROOT" ]; then
        VT_ROOT=$(mktemp -d /tmp/vtpm-test.XXXXXX)
    fi
    mkdir -p "$VT_ROOT"
    export VT_ROOT
}

# A TCP port nobody listens on (best effort; the range avoids ephemeral ports).
vt_free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    vt_die "no free TCP port"
}

# ---- RabbitMQ ---------------------------------------------------------------

vt_rmq_env() {
    local d=$VT_ROOT/rabbitmq
    export HOME=$d
    export RABBITMQ_NODENAME=$VT_RMQ_NODE
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$VT_RMQ_PORT
    export RABBITMQ_DIST_PORT=$((VT_RMQ_PORT + 20000))
    export RABBITMQ_MNESIA_BASE=$d/mnesia
    export RABBITMQ_LOG_BASE=$d/log
    export RABBITMQ_PID_FILE=$d/pid
    export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
    export RABBITMQ_CONFIG_FILE=$d/rabbitmq
    # Erlang's schedulers busy-wait by default; on 2 cores that starves
    # QEMU/TCG guests of CPU.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
}

vt_rmqctl() {
    ( vt_rmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -n "$VT_RMQ_NODE" "$@" )
}

vt_rmq_start() {
    local d=$VT_ROOT/rabbitmq
    mkdir -p "$d"
    if [ -z "$VT_RMQ_PORT" ]; then
        VT_RMQ_PORT=$(vt_free_port)
        VT_RMQ_NODE="vtpmtest$VT_RMQ_PORT@localhost"
    fi
    echo '[].' > "$d/enabled_plugins"
    cat > "$d/rabbitmq.conf" <<EOF
loopback_users = none
log.file.level = warning
EOF
    (
        vt_rmq_env
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$d/server.out" 2>&1 < /dev/null &
    )
    if ! vt_rmqctl wait "$d/pid" --timeout 90 > "$d/wait.out" 2>&1; then
        cat "$d/wait.out" "$d/server.out" >&2
        vt_die "RabbitMQ did not start"
    fi
    export VT_AMQP_URL="amqp://guest:guest@127.0.0.1:$VT_RMQ_PORT/%2f"
    export VT_RMQ_PORT VT_RMQ_NODE
    vt_log "RabbitMQ $VT_RMQ_NODE on 127.0.0.1:$VT_RMQ_PORT"
}

vt_rmq_stop() {
    [ -n "$VT_RMQ_NODE" ] || return 0
    vt_rmqctl stop > /dev/null 2>&1 || true
}

# Stop the broker and start it again on the same port and data (tests of
# reconnection).
vt_rmq_restart() {
    vt_rmq_stop
    vt_rmq_start
}

# ---- compute hosts ------------------------------------------------------------

# Paths a host gets privately (bind-mounted from its tree).
VT_HOST_PATHS=(/etc/libvirt /var/lib/libvirt /var/log/libvirt /var/log/swtpm
               /var/lib/swtpm-localca /var/cache/libvirt /var/lib/vtpmd /run)

vt_users() {
    getent group kvm > /dev/null || groupadd -r kvm
    getent group libvirt-qemu > /dev/null || groupadd -r libvirt-qemu
    # libvirt's compiled-in default QEMU user must exist even though
    # qemu.conf names root.
    id libvirt-qemu > /dev/null 2>&1 ||
        useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
    getent group tss > /dev/null || groupadd -r tss
    id tss > /dev/null 2>&1 || useradd -r -g tss -d /var/lib/tpm -s /usr/sbin/nologin tss
}

vt_host_root() { echo "$VT_ROOT/hosts/$1"; }
vt_host_pid() { cat "$(vt_host_root "$1")/run/libvirtd.pid"; }
vt_host_uri() { echo "qemu:///system?socket=$(vt_host_root "$1")/run/libvirt/libvirt-sock"; }

# Run a command inside host $1's mount namespace.
vt_host_exec() {
    local h=$1
    shift
    nsenter --mount="/proc/$(vt_host_pid "$h")/ns/mnt" -- "$@"
}

vt_host_write_config() {
    local r=$1
    cat > "$r/etc/libvirt/libvirtd.conf" <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "2:file:/var/log/libvirt/libvirtd.log"
EOF
    cat > "$r/etc/libvirt/qemu.conf" <<EOF
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 1
swtpm_user = "tss"
swtpm_group = "tss"
EOF
    cat > "$r/etc/libvirt/virtlogd.conf" <<EOF
log_outputs = "2:file:/var/log/libvirt/virtlogd.log"
EOF
    cp /etc/libvirt/libvirt.conf "$r/etc/libvirt/" 2>/dev/null || true
}

vt_host_start() {
    local h=$1 r p
    r=$(vt_host_root "$h")
    vt_users
    # Mount points must exist on the real tree too.
    for p in "${VT_HOST_PATHS[@]}"; do mkdir -p "$r$p" "$p"; done
    mkdir -p "$r/etc/libvirt/qemu" "$r/var/log/swtpm/libvirt/qemu" "$r/var/lib/libvirt/swtpm" \
             "$r/var/lib/vtpmd/images" "$r/var/lib/vtpmd/console"
    chown tss:tss "$r/var/lib/swtpm-localca" "$r/var/log/swtpm/libvirt/qemu"
    chmod 0711 "$r/var/lib/libvirt/swtpm"
    vt_host_write_config "$r"
    local script="set -e
for p in ${VT_HOST_PATHS[*]}; do mount --bind \"$r\$p\" \"\$p\"; done
virtlogd -d
exec libvirtd -d"
    unshare --mount --propagation private -- bash -c "$script" \
        > "$r/start.out" 2>&1 || { cat "$r/start.out" >&2; vt_die "host $h: libvirtd did not start"; }
    local uri i
    uri=$(vt_host_uri "$h")
    for i in $(seq 1 100); do
        if virsh -q -c "$uri" version > /dev/null 2>&1; then
            VT_HOSTS+=("$h")
            vt_log "host $h: libvirtd pid $(vt_host_pid "$h"), $uri"
            return 0
        fi
        sleep 0.2
    done
    cat "$r/var/log/libvirt/libvirtd.log" >&2 2>/dev/null
    vt_die "host $h: libvirtd not answering"
}

vt_host_stop() {
    local h=$1 uri pid d
    uri=$(vt_host_uri "$h")
    for d in $(virsh -q -c "$uri" list --name 2>/dev/null); do
        virsh -q -c "$uri" destroy "$d" > /dev/null 2>&1 || true
    done
    pid=$(vt_host_pid "$h" 2>/dev/null) || return 0
    local vlpid
    vlpid=$(cat "$(vt_host_root "$h")/run/virtlogd.pid" 2>/dev/null || true)
    kill "$pid" 2>/dev/null || true
    [ -n "$vlpid" ] && kill "$vlpid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# Kill libvirtd of a host hard and start it again in a fresh namespace over
# the same tree (domains and swtpm state survive, as on a real host).
vt_host_restart_libvirtd() {
    local h=$1 pid
    pid=$(vt_host_pid "$h")
    kill -9 "$pid" 2>/dev/null || true
    local vlpid
    vlpid=$(cat "$(vt_host_root "$h")/run/virtlogd.pid" 2>/dev/null || true)
    [ -n "$vlpid" ] && kill "$vlpid" 2>/dev/null || true
    rm -f "$(vt_host_root "$h")/run/libvirtd.pid" "$(vt_host_root "$h")/run/virtlogd.pid"
    VT_HOSTS=("${VT_HOSTS[@]/$h}")
    vt_host_start "$h"
}

# Start a daemon inside host $1's mount namespace, in the background.
# VT_LAST_PID is the daemon's own PID (nsenter execs it), so signals reach
# it; its stdout/stderr go to $VT_ROOT/daemon-PID.out.  (Not meant for $(),
# which would wait for the daemon to close the pipe.)
vt_host_spawn() {
    local h=$1 ns
    shift
    ns="/proc/$(vt_host_pid "$h")/ns/mnt"
    nsenter --mount="$ns" -- "$@" > "$VT_ROOT/daemon.$$.$RANDOM.out" 2>&1 < /dev/null &
    VT_LAST_PID=$!
    VT_DAEMONS+=("$VT_LAST_PID")
}

vt_cleanup() {
    local h p
    for p in "${VT_DAEMONS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for h in "${VT_HOSTS[@]}"; do
        [ -n "$h" ] && vt_host_stop "$h"
    done
    vt_rmq_stop
    # Leave the tree when asked (debugging a failure).
    if [ -z "${VT_KEEP:-}" ] && [ -n "$VT_ROOT" ] && [ -d "$VT_ROOT" ]; then
        rm -rf "$VT_ROOT"
    fi
}
