#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run one integration test binary against real services it starts itself:
# a private RabbitMQ node and a libvirt "compute host" (own libvirtd in a
# mount namespace).
# Usage: integration.sh [--kvm hide|fake] [--net] [--hosts N] BINARY [ARGS...]
# Exports VT_ROOT, VT_AMQP_URL, VT_RMQ_*, VT_HOST_A_URI (+ _B_ for --hosts 2).
# --net gives every host a network namespace and an address of its own
# (env.sh's vt_host_start_net; libvirtd also on qemu+tcp://ADDR/system) and
# exports VT_HOST_<H>_ADDR too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/env.sh
source "$here/lib/env.sh"

# --kvm hide|fake: every host's /dev/kvm is hidden, or is /dev/null with a
# CPU that claims vmx (tests/lib/env.sh, VT_KVM): a machine without KVM, or
# one whose /dev/kvm cannot run a guest.
if [ "${1:-}" = "--kvm" ]; then
    export VT_KVM=$2
    shift 2
fi
net=
if [ "${1:-}" = "--net" ]; then
    net=1
    shift
fi
nhosts=1
if [ "${1:-}" = "--hosts" ]; then
    nhosts=$2
    shift 2
fi
[ $# -ge 1 ] || { echo "usage: integration.sh [--kvm hide|fake] [--net] [--hosts N] BINARY [ARGS...]" >&2; exit 2; }

vt_init
trap vt_cleanup EXIT
# The broker boots while the hosts start.
vt_rmq_launch
names=(a b c d)
if [ -n "$net" ]; then
    # Runs started in parallel (meson runs suites side by side) must not
    # pick the same subnet: choose and claim under one lock.  The daemons
    # the hosts start do not inherit it (9>&-).
    exec 9> /run/lock/vtpm-test-net.lock
    flock 9
    idx=0
fi
for ((i = 0; i < nhosts; i++)); do
    h=${names[$i]}
    H=${h^^}
    if [ -n "$net" ]; then
        idx=$(vt_net_next_index $((idx + 1)))
        vt_host_start_net "$h" "$idx" 9>&-
        export "VT_HOST_${H}_ADDR=$(vt_host_addr "$h")"
    else
        vt_host_start "$h"
    fi
    export "VT_HOST_${H}_URI=$(vt_host_uri "$h")"
    export "VT_HOST_${H}_ROOT=$(vt_host_root "$h")"
done
if [ -n "$net" ]; then
    flock -u 9
    exec 9>&-
fi
vt_rmq_wait
export VT_SRCDIR=$(cd "$here/.." && pwd)
"$@"
