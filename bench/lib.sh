# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared by the benchmarks, after tests/lib/env.sh (VT_ROOT, VT_AMQP_URL).

# A vtpmd configuration for worker HOST on libvirt's test:///default driver
# (no libvirtd, no TPM: the RPC path alone), every path under
# $VT_ROOT/HOST; written to $VT_ROOT/HOST.conf, whose name is printed.
bench_test_conf() { # HOST
    local h=$1 d=$VT_ROOT/$1
    mkdir -p "$d"/{console,swtpm,images,pools,kept}
    vt_vtpmd_conf "$VT_ROOT/$h.conf" "worker.host=$h" libvirt.uri=test:///default \
        "libvirt.images_dir=$d/images" "libvirt.console_dir=$d/console" \
        "libvirt.state_dir=$d/swtpm" "store.pool_dir=$d/pools" "store.kept_dir=$d/kept"
    echo "$VT_ROOT/$h.conf"
}
