#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run one integration test binary against real services it starts itself:
# a private RabbitMQ node and a libvirt "compute host" (own libvirtd in a
# mount namespace).  Usage: integration.sh [--hosts N] BINARY [ARGS...]
# Exports VT_ROOT, VT_AMQP_URL, VT_RMQ_*, VT_HOST_A_URI (+ _B_ for --hosts 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/env.sh
source "$here/lib/env.sh"

nhosts=1
if [ "${1:-}" = "--hosts" ]; then
    nhosts=$2
    shift 2
fi
[ $# -ge 1 ] || { echo "usage: integration.sh [--hosts N] BINARY [ARGS...]" >&2; exit 2; }

vt_init
trap vt_cleanup EXIT
vt_rmq_start
names=(a b c d)
for ((i = 0; i < nhosts; i++)); do
    h=${names[$i]}
    vt_host_start "$h"
    H=${h^^}
    export "VT_HOST_${H}_URI=$(vt_host_uri "$h")"
    export "VT_HOST_${H}_ROOT=$(vt_host_root "$h")"
done
export VT_SRCDIR=$(cd "$here/.." && pwd)
"$@"
