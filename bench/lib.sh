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

# Outside tests/integration.sh, run the calling script (@0, with its
# arguments) again under `integration.sh --net --hosts 2`, which starts
# the broker and two libvirt hosts with addresses of their own; inside it,
# return.
bench_under_two_hosts() { # SCRIPT ARGS...
    local script=$1
    shift
    [ -z "${VT_BENCH_INNER:-}" ] || return 0
    export VT_BENCH_INNER=1
    exec "$(dirname "${BASH_SOURCE[0]}")/../tests/integration.sh" --net --hosts 2 "$script" "$@"
}

# One vtpmd ($VTPMD) in each of the hosts a and b of such a run, answering
# as the host's address, on its libvirtd with swtpm, migrating over
# qemu+tcp; GROUP.KEY=VALUE arguments add to or replace its configuration
# (vt_vtpmd_conf).  Configurations and logs in RESDIR (vtpmd-a.log, ...).
# Waits until both answer get_capabilities ($CTL); bench_stop_vtpmds (run
# on exit too) stops them with SIGTERM and waits, after which their logs
# are complete.
bench_vtpmd_pids=()
bench_stop_vtpmds() {
    local p
    for p in "${bench_vtpmd_pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${bench_vtpmd_pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    bench_vtpmd_pids=()
}

bench_two_vtpmds() { # RESDIR [GROUP.KEY=VALUE ...]
    local res=$1 h addr
    shift
    trap bench_stop_vtpmds EXIT
    for h in a b; do
        addr=$(vt_host_addr "$h")
        vt_vtpmd_conf "$res/vtpmd-$h.conf" "worker.host=$addr" libvirt.uri=qemu:///system \
            libvirt.swtpm_enabled=true "libvirt.migration_uri_template=qemu+tcp://%s/system" "$@"
        vt_host_spawn "$h" "$VTPMD" --config "$res/vtpmd-$h.conf" --log-file "$res/vtpmd-$h.log"
        bench_vtpmd_pids+=("$VT_LAST_PID")
    done
    for h in a b; do
        addr=$(vt_host_addr "$h")
        for _ in $(seq 1 150); do
            "$CTL" call --host "$addr" --timeout 1 get_capabilities > /dev/null 2>&1 && continue 2
            sleep 0.2
        done
        vt_die "vtpmd $addr does not answer"
    done
}

# The build a benchmark runs: B (the build directory @2), CTL (vtpmctl) and
# VTPMD; ends the run (status 2) when one is missing.
bench_binaries() { # NAME BUILD_DIR
    B=$(cd "$2" && pwd)
    CTL=$B/tools/vtpmctl
    VTPMD=$B/worker/vtpmd
    local x
    for x in "$CTL" "$VTPMD"; do
        [ -x "$x" ] || { echo "$1: $x missing: build first (ninja -C $B)" >&2; exit 2; }
    done
}
