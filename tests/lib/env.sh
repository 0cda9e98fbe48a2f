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
# A host started with vt_host_start_net also gets a network namespace of
# its own (an address of its own, reached over a veth pair), so that one
# host's vtpmd can talk to another host's libvirtd over TCP as in
# production.
#
# Sourced by tests/integration.sh, tools/quickstart and the acceptance suite.
# Everything lives under $VT_ROOT and is removed by vt_cleanup.

VT_ROOT=${VT_ROOT:-}
# The checkout this file belongs to: nothing a run writes may land in it.
VT_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
VT_RMQ_NODE=
VT_RMQ_PORT=
VT_HOSTS=()
VT_DAEMONS=()
VT_NETNS=()
VT_VETHS=()

vt_log() { printf '[env] %s\n' "$*" >&2; }
vt_die() { printf '[env] FATAL: %s\n' "$*" >&2; exit 1; }

vt_init() {
    [ "$(id -u)" = 0 ] || vt_die "integration suites need root (libvirtd, namespaces)"
    if [ -z "$VT_ROOT" ]; then
        VT_ROOT=$(mktemp -d /tmp/vtpm-test.XXXXXX)
    fi
    # A run directory holds broker data, logs and crash dumps, and is
    # removed with rm -rf: never inside the checkout.
    case "$(realpath -m "$VT_ROOT")/" in
        "$VT_SRC"/*) vt_die "VT_ROOT=$VT_ROOT is inside the checkout $VT_SRC; use a directory under /tmp" ;;
    esac
    mkdir -p "$VT_ROOT"
    export VT_ROOT
}

# A TCP port nobody listens on (best effort), whose Erlang distribution port
# (vt_dist_port) is free too. Both stay below Linux's ephemeral range
# (32768-60999 by default): a broker's distribution port up there lost a race
# with some client's outgoing connection ("dist_port_already_used ...
# not_erlang") when suites ran side by side.
vt_free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 6000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
           ! (exec 3<>"/dev/tcp/127.0.0.1/$(vt_dist_port "$p")") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    vt_die "no free TCP port"
}

# The Erlang distribution port of a broker node listening on AMQP port $1.
vt_dist_port() { echo $(($1 + 6000)); }

# ---- RabbitMQ ---------------------------------------------------------------

vt_rmq_env() {
    local d=$VT_ROOT/rabbitmq
    export HOME=$d
    export RABBITMQ_NODENAME=$VT_RMQ_NODE
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$VT_RMQ_PORT
    export RABBITMQ_DIST_PORT=$(vt_dist_port "$VT_RMQ_PORT")
    export RABBITMQ_MNESIA_BASE=$d/mnesia
    export RABBITMQ_LOG_BASE=$d/log
    export RABBITMQ_PID_FILE=$d/pid
    export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
    export RABBITMQ_CONFIG_FILE=$d/rabbitmq
    # Erlang's schedulers busy-wait by default; on 2 cores that starves
    # QEMU/TCG guests of CPU.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"
    # An Erlang VM that dies writes erl_crash.dump into its working
    # directory: for rabbitmqctl that is the caller's (the checkout, when
    # a suite runs from there).
    export ERL_CRASH_DUMP=$d/erl_crash.dump
}

vt_rmqctl() {
    ( vt_rmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -n "$VT_RMQ_NODE" "$@" )
}

# vt_rmq_launch starts the node in the background; vt_rmq_wait waits until
# it serves and exports VT_AMQP_URL.  RabbitMQ takes ~8 s to boot: a caller
# with other things to start (integration.sh: the hosts) does them between
# the two.  vt_rmq_start is both.
vt_rmq_start() {
    vt_rmq_launch
    vt_rmq_wait
}

vt_rmq_launch() {
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
    if [ "${VT_RMQ_TLS:-}" = 1 ]; then
        vt_rmq_tls_listener >> "$d/rabbitmq.conf"
    fi
    # From its own directory: a node killed mid-write (the soak, the broker
    # restart tests) leaves MnesiaCore.* dumps in its working directory.
    (
        vt_rmq_env
        cd "$d"
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$d/server.out" 2>&1 < /dev/null &
    )
    export VT_RMQ_PORT VT_RMQ_NODE
}

vt_rmq_wait() {
    local d=$VT_ROOT/rabbitmq
    if ! vt_rmqctl wait "$d/pid" --timeout 90 > "$d/wait.out" 2>&1; then
        cat "$d/wait.out" "$d/server.out" >&2
        vt_die "RabbitMQ did not start"
    fi
    export VT_AMQP_URL="amqp://guest:guest@127.0.0.1:$VT_RMQ_PORT/%2f"
    export VT_RMQ_PORT VT_RMQ_NODE
    vt_log "RabbitMQ $VT_RMQ_NODE on 127.0.0.1:$VT_RMQ_PORT"
    if [ "${VT_RMQ_TLS:-}" = 1 ]; then
        vt_rmq_tls_wait
        export VT_AMQPS_URL="amqps://guest:guest@localhost:$VT_RMQ_TLS_PORT/%2f"
        vt_log "RabbitMQ TLS on localhost:$VT_RMQ_TLS_PORT (127.0.0.1 and 127.0.0.2), CA $VT_TLS_DIR/ca.pem"
    fi
}

vt_rmq_stop() {
    local pid
    [ -n "$VT_RMQ_NODE" ] || return 0
    pid=$(cat "$VT_ROOT/rabbitmq/pid" 2>/dev/null)
    vt_rmqctl stop > /dev/null 2>&1 && return 0
    # rabbitmqctl needs the node's cookie and a node that answers; a run
    # whose tree went away, or a hung node, would otherwise leave the
    # Erlang VM running for good.
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    return 0
}

# Stop the broker and start it again on the same port and data (tests of
# reconnection).
vt_rmq_restart() {
    vt_rmq_stop
    vt_rmq_start
}

# ---- vtpmd configurations ----------------------------------------------------

# vt_vtpmd_conf FILE [GROUP.KEY=VALUE ...]: write a vtpmd configuration,
# mode 0600 (it holds the broker password; vtpmd refuses it readable by
# others).  [amqp] url defaults to $VT_AMQP_URL; a later GROUP.KEY
# replaces an earlier one, so a caller's arguments override defaults it
# was handed.  Groups come out in the order they are first named.  The one
# writer of the tests' and benchmarks' configurations: a key renamed in
# vtpmd is renamed here once.
vt_vtpmd_conf() {
    local f=$1
    shift
    python3 - "$f" "amqp.url=${VT_AMQP_URL:-}" "$@" <<'PY' || vt_die "vt_vtpmd_conf $f: bad argument"
import os, sys
path, groups = sys.argv[1], {}
for arg in sys.argv[2:]:
    key, eq, value = arg.partition("=")
    group, dot, name = key.partition(".")
    if not (eq and dot and group and name):
        sys.exit(f"vt_vtpmd_conf: '{arg}' is not GROUP.KEY=VALUE")
    if group == "amqp" and name == "url" and not value:
        continue  # no broker in this run: leave vtpmd's default
    groups.setdefault(group, {})[name] = value
text = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
               for g, kv in groups.items())
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.fchmod(fd, 0o600)
os.write(fd, text.encode())
os.close(fd)
PY
}

# ---- TLS for the broker (VT_RMQ_TLS=1) ---------------------------------------
#
# With VT_RMQ_TLS=1 in the environment, vt_rmq_start also opens an AMQPS
# listener on a second free port, bound to 127.0.0.1 and 127.0.0.2 only (the
# node lets guest in from anywhere), with a certificate for DNS:localhost and
# IP:127.0.0.1 issued by a test CA, and exports VT_AMQPS_URL
# (amqps://guest:guest@localhost:PORT/%2f), VT_RMQ_TLS_PORT and VT_TLS_DIR.
# The node asks for a client certificate (verify_peer) but does not insist
# (fail_if_no_peer_cert = false).  127.0.0.2 reaches the same listener under
# a name the certificate does not carry (hostname verification tests).
# Without VT_RMQ_TLS nothing changes.
#
# vt_rmq_tls_setup makes, once per $VT_ROOT, in $VT_ROOT/tls (VT_TLS_DIR):
#   ca.pem, ca.key              the test CA
#   server.pem, server.key      CN=localhost, SAN DNS:localhost, IP:127.0.0.1,
#                               serverAuth, issued by ca
#   client.pem, client.key      CN=vtpmd-test-client, clientAuth, issued by ca
#   other-ca.pem, other-ca.key  an unrelated CA (verification must fail)
# Keys are unencrypted, mode 0600: the test node runs as root.

vt_rmq_tls_setup() {
    local d
    [ -n "$VT_ROOT" ] || vt_die "vt_rmq_tls_setup: VT_ROOT is not set (vt_init first)"
    d=$VT_ROOT/tls
    export VT_TLS_DIR=$d
    if [ -s "$d/server.pem" ] && [ -s "$d/client.pem" ] && [ -s "$d/other-ca.pem" ]; then
        return 0
    fi
    mkdir -p "$d"
    cat > "$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    if ! (
        set -e
        cd "$d"
        umask 077
        ca() { # NAME CN
            openssl req -x509 -config openssl.cnf -extensions ca_ext -newkey rsa:2048 -nodes \
                -keyout "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2"
        }
        leaf() { # NAME CN EXTENSIONS
            openssl req -new -config openssl.cnf -newkey rsa:2048 -nodes \
                -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
            openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key \
                -set_serial "0x$(openssl rand -hex 8)" -days 30 \
                -extfile openssl.cnf -extensions "$3" -out "$1.pem"
            rm -f "$1.csr"
        }
        ca ca "vtpmd test CA"
        ca other-ca "unrelated test CA"
        leaf server localhost server_ext
        leaf client vtpmd-test-client client_ext
        chmod 0644 ./*.pem
        openssl verify -CAfile ca.pem server.pem client.pem
    ) > "$d/openssl.out" 2>&1; then
        cat "$d/openssl.out" >&2
        vt_die "vt_rmq_tls_setup: openssl failed"
    fi
}

# rabbitmq.conf lines of the TLS listener (picks VT_RMQ_TLS_PORT, kept across
# vt_rmq_restart).
vt_rmq_tls_listener() {
    vt_rmq_tls_setup
    if [ -z "${VT_RMQ_TLS_PORT:-}" ]; then
        VT_RMQ_TLS_PORT=$(vt_free_port)
        while [ "$VT_RMQ_TLS_PORT" = "$VT_RMQ_PORT" ]; do VT_RMQ_TLS_PORT=$(vt_free_port); done
    fi
    export VT_RMQ_TLS_PORT
    cat <<EOF
listeners.ssl.default = 127.0.0.1:$VT_RMQ_TLS_PORT
listeners.ssl.alt = 127.0.0.2:$VT_RMQ_TLS_PORT
ssl_options.cacertfile = $VT_TLS_DIR/ca.pem
ssl_options.certfile = $VT_TLS_DIR/server.pem
ssl_options.keyfile = $VT_TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
EOF
}

# The node is up (vt_rmq_start waited for it): its TLS listener must answer
# too, or the configuration was not taken.
vt_rmq_tls_wait() {
    for _ in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$VT_RMQ_TLS_PORT") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    cat "$VT_ROOT/rabbitmq/server.out" >&2
    vt_die "RabbitMQ: no TLS listener on 127.0.0.1:$VT_RMQ_TLS_PORT"
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

# Each host has a host_uuid of its own, kept in its tree across libvirtd
# restarts: libvirt refuses a live migration between two libvirtds that
# report the same one ("Attempt to migrate guest to the same host"), and on
# one machine they would all read the same SMBIOS UUID.
vt_host_uuid() {
    local f=$1/host-uuid
    [ -s "$f" ] || cat /proc/sys/kernel/random/uuid > "$f"
    cat "$f"
}

vt_host_write_config() {
    local r=$1
    cat > "$r/etc/libvirt/libvirtd.conf" <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "2:file:/var/log/libvirt/libvirtd.log"
host_uuid = "$(vt_host_uuid "$r")"
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

# The host's tree: mount points, directories, ownership, configuration.
vt_host_prepare_tree() {
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
}

# Wait until host $1's libvirtd answers on its socket (and on every further
# URI given), then count the host as started.
vt_host_wait() {
    local h=$1 r uri u ok
    shift
    r=$(vt_host_root "$h")
    uri=$(vt_host_uri "$h")
    for _ in $(seq 1 100); do
        ok=1
        for u in "$uri" "$@"; do
            virsh -q -c "$u" version > /dev/null 2>&1 || { ok=; break; }
        done
        if [ -n "$ok" ]; then
            VT_HOSTS+=("$h")
            vt_log "host $h: libvirtd pid $(vt_host_pid "$h"), $uri${1:+, $*}"
            return 0
        fi
        sleep 0.2
    done
    cat "$r/var/log/libvirt/libvirtd.log" >&2 2>/dev/null
    vt_die "host $h: libvirtd not answering"
}

# The start of a host's namespace script (run by bash in a fresh mount
# namespace): the host's private paths, and what VT_KVM asks of /dev/kvm.
#   VT_KVM=hide  the host has no /dev/kvm (a machine without KVM)
#   VT_KVM=fake  /dev/kvm is /dev/null and /proc/cpuinfo lists vmx: a
#                device that opens but is no KVM, on a CPU that claims to
#                virtualize (only vtpmd's ioctl checks, and the guest
#                suites' probe boot, can tell)
# Either way /dev becomes a tmpfs holding a bind mount of every other entry
# of the machine's /dev, so nothing else changes for libvirtd, QEMU or swtpm.
vt_host_ns_script() {
    local r=$1
    printf '%s\n' "set -e" \
        "for p in ${VT_HOST_PATHS[*]}; do mount --bind \"$r\$p\" \"\$p\"; done"
    case ${VT_KVM:-} in
        '') return 0 ;;
        hide | fake) ;;
        *) vt_die "VT_KVM must be hide or fake, got '$VT_KVM'" ;;
    esac
    cat <<EOF
mkdir -p "$r/dev.real"
mount --rbind /dev "$r/dev.real"
mount -t tmpfs -o mode=0755 vtpm-dev /dev
for e in "$r/dev.real"/*; do
    n=\${e##*/}
    [ "\$n" = kvm ] && continue
    if [ -L "\$e" ]; then cp -a "\$e" /dev/
    elif [ -d "\$e" ]; then mkdir "/dev/\$n"; mount --rbind "\$e" "/dev/\$n"
    else touch "/dev/\$n"; mount --bind "\$e" "/dev/\$n"
    fi
done
EOF
    [ "$VT_KVM" = fake ] || return 0
    cat <<EOF
touch /dev/kvm
mount --bind /dev/null /dev/kvm
sed 's/^flags[[:space:]]*:/& vmx/' /proc/cpuinfo > "$r/cpuinfo.fake"
mount --bind "$r/cpuinfo.fake" /proc/cpuinfo
EOF
}

# libvirtd runs on one CPU: it validates its cached QEMU capabilities
# against the CPUID of the CPU it happens to run on, and where CPUs report
# different CPUID values (a firecracker VM does) every other start threw the
# cache away and probed QEMU again, 8 s each.  Guests are not pinned by this:
# libvirt gives QEMU all host CPUs.
vt_libvirtd_cpu() {
    local cpus
    cpus=$(taskset -pc $$ 2>/dev/null | sed 's/.*: //')
    echo "${cpus%%[-,]*}"
}

vt_host_start() {
    local h=$1 r
    r=$(vt_host_root "$h")
    vt_host_prepare_tree "$h"
    local script
    script="$(vt_host_ns_script "$r")
virtlogd -d
exec taskset -c $(vt_libvirtd_cpu) libvirtd -d"
    unshare --mount --propagation private -- bash -c "$script" \
        > "$r/start.out" 2>&1 || { cat "$r/start.out" >&2; vt_die "host $h: libvirtd did not start"; }
    vt_host_wait "$h"
}

# ---- hosts with an address of their own ------------------------------------------
#
# vt_host_start_net NAME INDEX makes a host as vt_host_start does, whose
# libvirtd and virtlogd also run in network namespace vtpm-NAME-$$, joined
# to the root namespace by a veth pair: root side vt<INDEX><$$> with
# 10.199.INDEX.1/24, host side eth0 with 10.199.INDEX.2/24.  libvirtd
# listens there on TCP 16509 without authentication
# (qemu+tcp://10.199.INDEX.2/system), besides its unix socket.  Daemons
# started with vt_host_spawn stay in the root network namespace (they reach
# RabbitMQ on 127.0.0.1) but see the host's files.  The tree records the
# namespace and the address ($r/netns, $r/addr) for shells that source this
# file later (vt_host_restart_libvirtd from a test).

VT_NET_PREFIX=10.199
VT_NET_PORT=16509

vt_host_addr() { cat "$(vt_host_root "$1")/addr"; }
vt_host_tcp_uri() { echo "qemu+tcp://$(vt_host_addr "$1")/system"; }

# Whether no root-namespace address or route lies in 10.199.$1.0/24:
# another run's host, or a leftover of a killed run, would make the subnet
# ambiguous.
vt_net_index_free() {
    local net=$VT_NET_PREFIX.$1.0/24
    [ -z "$(ip -4 -o addr show to "$net")" ] && [ -z "$(ip -4 route show "$net")" ]
}

# The smallest free index >= $1 (default 1).
vt_net_next_index() {
    local i
    for ((i = ${1:-1}; i <= 254; i++)); do
        if vt_net_index_free "$i"; then
            echo "$i"
            return 0
        fi
    done
    vt_die "no free subnet in $VT_NET_PREFIX.0.0/16"
}

# (Re)start libvirtd and virtlogd of net host $1 in its network namespace
# and a fresh mount namespace.  nsenter --net rather than `ip netns exec`:
# the latter mounts a new /sys for the namespace, which drops the cgroup
# mounts below /sys/fs/cgroup, so libvirtd would run guests differently
# from a plain host's.  libvirtd 9 (not socket-activated) opens the TCP
# listener only with --listen, whatever listen_tcp says.
vt_host_launch_net() {
    local h=$1 r ns addr
    r=$(vt_host_root "$h")
    ns=$(cat "$r/netns")
    addr=$(vt_host_addr "$h")
    # /run/netns holds every test host's namespace handle; copied into
    # this mount namespace they would outlive their hosts as long as this
    # one's processes live.
    local script
    script="umount -l /run/netns 2>/dev/null || true
$(vt_host_ns_script "$r")
virtlogd -d
exec taskset -c $(vt_libvirtd_cpu) libvirtd -d --listen"
    nsenter --net="/run/netns/$ns" -- unshare --mount --propagation private -- bash -c "$script" \
        > "$r/start.out" 2>&1 || { cat "$r/start.out" >&2; vt_die "host $h: libvirtd did not start"; }
    vt_host_wait "$h" "qemu+tcp://$addr/system"
}

vt_host_start_net() {
    local h=$1 idx=$2 r ns veth addr
    if ! [[ $idx =~ ^[1-9][0-9]{0,2}$ ]] || ((idx > 254)); then
        vt_die "host $h: bad net index '$idx'"
    fi
    r=$(vt_host_root "$h")
    ns="vtpm-$h-$$"
    # At most 15 characters (IFNAMSIZ): "vt" + 3 + a 7-digit pid.
    veth="vt$idx$$"
    addr=$VT_NET_PREFIX.$idx.2
    vt_net_index_free "$idx" || vt_die "host $h: $VT_NET_PREFIX.$idx.0/24 is in use"
    ip netns add "$ns"
    VT_NETNS+=("$ns")
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    VT_VETHS+=("$veth")
    ip addr add "$VT_NET_PREFIX.$idx.1/24" dev "$veth"
    ip link set "$veth" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    # A live migration streams from one host's QEMU to another's: the other
    # hosts are reached through the root namespace, which forwards what
    # comes in on this host's veth only (the machine's own interfaces keep
    # their setting).
    ip -n "$ns" route add "$VT_NET_PREFIX.0.0/16" via "$VT_NET_PREFIX.$idx.1"
    sysctl -qw "net.ipv4.conf.$veth.forwarding=1"
    vt_host_prepare_tree "$h"
    echo "$ns" > "$r/netns"
    echo "$addr" > "$r/addr"
    cat >> "$r/etc/libvirt/libvirtd.conf" <<EOF
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
auth_tcp = "none"
tcp_port = "$VT_NET_PORT"
EOF
    export "VT_HOST_${h^^}_ADDR=$addr"
    vt_host_launch_net "$h"
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
    if [ -f "$(vt_host_root "$h")/netns" ]; then
        vt_host_launch_net "$h"
    else
        vt_host_start "$h"
    fi
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
    # Deleting the root side of a veth deletes the pair, even while a
    # leftover process still pins the namespace.
    for p in "${VT_VETHS[@]}"; do
        ip link del "$p" 2>/dev/null || true
    done
    for p in "${VT_NETNS[@]}"; do
        ip netns del "$p" 2>/dev/null || true
    done
    vt_rmq_stop
    # Leave the tree when asked (debugging a failure).
    if [ -z "${VT_KEEP:-}" ] && [ -n "$VT_ROOT" ] && [ -d "$VT_ROOT" ]; then
        rm -rf "$VT_ROOT"
    fi
}
