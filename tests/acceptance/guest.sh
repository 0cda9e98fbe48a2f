# SPDX-License-Identifier: Apache-2.0
#
# Shared by the acceptance suites (sourced, after tests/lib/env.sh): build
# the test guest, run vtpmd in a test host, call it with vtpmctl, wait for a
# guest to power itself off and read what it reported on its serial console.
#
# The caller sets: tests (the tests/ directory), vtpmctl, vtpmd (absolute
# paths) and VT_ROOT (from integration.sh).  TAP-style output comes from
# tests/lib/tap.sh-like helpers defined here so that every line carries the
# suite's clock: "ok - ", "not ok - ", "# [  12.345s] note".
# shellcheck shell=bash disable=SC2153,SC2317

# The two-host suites run under integration.sh --net --hosts 2: say so
# plainly when they do not, and point vtpmctl at the test broker.
guest_need_two_hosts() {
    local v
    for v in VT_ROOT VT_AMQP_URL VT_HOST_A_ADDR VT_HOST_B_ADDR; do
        [ -n "${!v:-}" ] || {
            echo "$v is not set: run this under tests/integration.sh --net --hosts 2" >&2
            exit 2
        }
    done
    export VTPM_AMQP_URL=$VT_AMQP_URL
}

guest_cache=${VTPM_GUEST_CACHE:-/var/cache/vtpmd-test-guest}
boot_timeout=${VT_BOOT_TIMEOUT:-120}
images=/var/lib/vtpmd/images        # as vtpmd sees it, inside a test host

passed=0
failed=0
t_suite=$(date +%s%N)
now_ms() { echo $(( ($(date +%s%N) - t_suite) / 1000000 )); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
note() { printf '# [%7ss] %s\n' "$(secs "$(now_ms)")" "$*"; }
ok() { passed=$((passed + 1)); echo "ok - $*"; }
nok() { failed=$((failed + 1)); echo "not ok - $*"; }
# check DESCRIPTION ACTUAL EXPECTED
check() {
    if [ "$2" = "$3" ]; then ok "$1 ($2)"; else nok "$1: got '$2', want '$3'"; fi
}
finish() {
    stop_all_vtpmd
    note "total $(secs "$(now_ms)") s"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# ---- the guest ---------------------------------------------------------------------

# guest_build HOST...: build (or take from the cache) the guest, copy
# vmlinuz and initrd.img into each host's images_dir and choose the
# accelerator (guest_accel, on the first HOST).  Ends the suite when the
# guest cannot be built.
guest_build() {
    local t how h
    note "building the test guest (cache $guest_cache)"
    t=$(now_ms)
    if ! how=$("$tests/guest/build-guest.sh" "$guest_cache" 2> "$VT_ROOT/build-guest.err"); then
        sed 's/^/#   /' "$VT_ROOT/build-guest.err"
        [ -s "$VT_ROOT/build-guest.err" ] || note "(build-guest.sh printed nothing on stderr)"
        nok "build the test guest"
        finish
    fi
    sed 's/^/# /' "$VT_ROOT/build-guest.err"
    ok "test guest ${how:-?} in $(secs $(($(now_ms) - t))) s" \
       "(vmlinuz $(stat -c %s "$guest_cache/vmlinuz") B, initrd.img $(stat -c %s "$guest_cache/initrd.img") B)"
    for h in "$@"; do
        cp "$guest_cache/vmlinuz" "$guest_cache/initrd.img" "$(vt_host_root "$h")$images/"
    done
    guest_accel "$1"
}

# guest_second_image HOST...: the same guest under other file names
# (vmlinuz-2, initrd-2.img) in each host's images_dir, for a rebuild's "new
# image" that libvirt must really switch to.
guest_second_image() {
    local h r
    for h in "$@"; do
        r=$(vt_host_root "$h")$images
        cp "$r/vmlinuz" "$r/vmlinuz-2"
        cp "$r/initrd.img" "$r/initrd-2.img"
    done
}

# guest_accel HOST: which accelerator the guests get (guest_virt_type: kvm
# or qemu), chosen by a real boot of the test guest under KVM inside test
# host HOST (so a faked or hidden /dev/kvm counts), cached per machine boot
# (tests/guest/probe-accel.sh; VTPM_TEST_VIRT_TYPE overrides).  Ends the
# suite when the probe cannot run.
guest_virt_type=
guest_accel() {
    local t why
    t=$(now_ms)
    if ! guest_virt_type=$(vt_host_exec "$1" "$tests/guest/probe-accel.sh" "$guest_cache" \
                           2> "$VT_ROOT/probe-accel.err"); then
        sed 's/^/#   /' "$VT_ROOT/probe-accel.err"
        nok "choose the guests' accelerator"
        finish
    fi
    why=$(tail -1 "$VT_ROOT/probe-accel.err")
    ok "guests run with ${why#accelerator: } ($(secs $(($(now_ms) - t))) s)"
}

# ---- vtpmd per test host -------------------------------------------------------------

declare -A vtpmd_pid=() vtpmd_log=()

# start_vtpmd HOST WORKER_HOST [GROUP.KEY=VALUE ...]: vtpmd in test host
# HOST answering as WORKER_HOST, its domains on the accelerator guest_accel
# chose; waits until it answers get_capabilities.  The arguments add to or
# replace keys of the configuration (tests/lib/env.sh, vt_vtpmd_conf).
# Every vTPM is encrypted (docs/security.md): the suites send a secret
# (user mode) or configure host/deployment custody.
start_vtpmd() {
    local h=$1 wh=$2 cfg="$VT_ROOT/vtpmd-accept-$1.conf" up=
    shift 2
    vt_vtpmd_conf "$cfg" "worker.host=$wh" libvirt.uri=qemu:///system \
        libvirt.swtpm_enabled=true "libvirt.shutdown_timeout=${shutdown_timeout:-5}" \
        "libvirt.virt_type=${guest_virt_type:-auto}" "$@"
    vtpmd_log[$h]=$VT_ROOT/vtpmd-accept-$h.log
    vt_host_spawn "$h" "$vtpmd" --config "$cfg" --log-file "${vtpmd_log[$h]}"
    vtpmd_pid[$h]=$VT_LAST_PID
    for _ in $(seq 1 100); do
        if "$vtpmctl" call --host "$wh" --timeout 1 get_capabilities > /dev/null 2>&1; then
            up=1
            break
        fi
        kill -0 "${vtpmd_pid[$h]}" 2>/dev/null || break
        sleep 0.2
    done
    if [ -z "$up" ]; then
        nok "vtpmd of host $h answers get_capabilities"
        tail -20 "${vtpmd_log[$h]}" 2>/dev/null | sed 's/^/#   /'
        finish
    fi
    ok "vtpmd of host $h ($wh) answers get_capabilities"
}

# stop_vtpmd HOST: SIGTERM, and check that it exits 0.
stop_vtpmd() {
    local h=$1 rc=0
    [ -n "${vtpmd_pid[$h]:-}" ] || return 0
    kill -TERM "${vtpmd_pid[$h]}" 2>/dev/null
    wait "${vtpmd_pid[$h]}" || rc=$?
    unset "vtpmd_pid[$h]"
    check "vtpmd of host $h exits 0 on SIGTERM" "$rc" 0
    if [ "$failed" -gt 0 ]; then
        note "vtpmd log of host $h (last 30 lines):"
        tail -30 "${vtpmd_log[$h]}" 2>/dev/null | sed 's/^/#   /'
    fi
}
stop_all_vtpmd() {
    local h
    for h in "${!vtpmd_pid[@]}"; do stop_vtpmd "$h"; done
}
trap 'for p in "${vtpmd_pid[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait' EXIT

# The user-mode passphrase every instance of a suite is spawned with, as
# the JSON tools write bytes (docs/protocol.md, "Binary fields in JSON tools").
user_secret_b64=$(head -c 32 /dev/urandom | base64 -w0)
vtpm_user_secret() { printf '{"secret": {"$bin": "%s"}}' "$user_secret_b64"; }

# start_two_hosts [GROUP.KEY=VALUE ...]: vtpmd in hosts a and b of an
# `integration.sh --net --hosts 2` run, each answering as its address ($A,
# $B; host_of maps them back to a/b), migrating and unshelving over
# qemu+tcp, the shelve store on a, every custody mode offered, one
# deployment key file for both (as an operator distributes it); the
# arguments add to both configurations.
start_two_hosts() {
    A=$VT_HOST_A_ADDR
    B=$VT_HOST_B_ADDR
    declare -gA host_of=([$A]=a [$B]=b)
    local key=$VT_ROOT/deployment.key extra
    head -c 32 /dev/urandom > "$key"
    chmod 0600 "$key"
    extra=("libvirt.migration_uri_template=qemu+tcp://%s/system"
           "store.uri=qemu+tcp://$A/system"
           "vtpm.supported_secret_security=user;host;deployment"
           "vtpm.deployment_key_file=$key")
    start_vtpmd a "$A" "${extra[@]}" "$@"
    start_vtpmd b "$B" "${extra[@]}" "$@"
}

# With $mode the instance's custody mode: the spec's vtpm member (the
# passphrase in user mode, nothing otherwise), and {uuid, vtpm} for the
# calls that read only those (power_on).
vtpm_member() { [ "$mode" = user ] && printf ', "vtpm": %s' "$(vtpm_user_secret)"; }
inst_id() { printf '{"uuid": "%s"%s}' "$1" "$(vtpm_member)"; }

# ---- calls ---------------------------------------------------------------------------

# call WORKER_HOST METHOD ARGS_JSON: the reply (JSON) in $reply, its time in
# $call_ms; status 0 when the reply says ok.
reply=
call_ms=0
call() {
    local rc=0 t0
    t0=$(date +%s%N)
    reply=$("$vtpmctl" call --host "$1" --timeout 300 "$2" "$3" 2>&1) || rc=$?
    call_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ "$rc" -eq 0 ] && [[ $reply == *'"ok":true'* || $reply == *'"ok": true'* ]]
}

# rget PATH: a field of $reply's result ("a.b.c"), as JSON text for
# objects, bare for strings and numbers; empty when absent.
rget() {
    python3 -c '
import json, sys
v = json.loads(sys.argv[1]).get("result")
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
if v is None: print("")
elif isinstance(v, (dict, list)): print(json.dumps(v, separators=(",", ":")))
elif isinstance(v, bool): print("true" if v else "false")
else: print(v)' "$reply" "$1" 2>/dev/null
}

# ---- guests --------------------------------------------------------------------------

domstate() { virsh -q -c "$(vt_host_uri "$1")" domstate "instance-$2" 2>/dev/null | head -1; }
console_log() { echo "$(vt_host_root "$1")/var/lib/vtpmd/console/$2.log"; }

# wait_off HOST UUID: wait until the guest has powered itself off; the time
# it took (ms) in $boot_ms.  Status 1 on timeout.
boot_ms=0
wait_off() {
    local t0 s
    t0=$(date +%s%N)
    while :; do
        s=$(domstate "$1" "$2")
        boot_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        [ "$s" = "shut off" ] && return 0
        [ "$boot_ms" -ge $((boot_timeout * 1000)) ] && return 1
        sleep 0.5
    done
}

# results HOST UUID: the VTPM-RESULT lines of the last boot in the console
# log, as key=value lines (each boot starts with "VTPM-RESULT start").
results() {
    tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null |
        awk '/VTPM-RESULT start/ { n = 0; delete r }
             { i = index($0, "VTPM-RESULT ") }
             i { r[n++] = substr($0, i + 12) }
             END { for (j = 0; j < n; j++) print r[j] }'
}
# get KEY < results: the value of the first KEY=... line ("" when absent).
get() { awk -v k="$1=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }'; }

# What a guest that did not come up leaves to look at: its console, QEMU's
# log and the accelerator it ran on.
show_console() {
    local qlog
    qlog="$(vt_host_root "$1")/var/log/libvirt/qemu/instance-$2.log"
    note "guest $2 on host $1 ran on: $(virsh -q -c "$(vt_host_uri "$1")" dumpxml "instance-$2" \
        2>/dev/null | sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p" | head -1) (chosen: ${guest_virt_type:-auto})"
    note "console of $2 on host $1 (last 30 lines):"
    tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null | tail -30 | sed 's/^/#   | /'
    note "QEMU log of $2 on host $1 (last 15 lines):"
    tail -15 "$qlog" 2>/dev/null | sed 's/^/#   | /'
}

# boot_and_read HOST UUID LABEL: wait for the guest to power off; its
# results in $res.  Status 1 (and a failed check) when it did not finish.
res=
boot_and_read() {
    local up0 up1
    res=
    if ! wait_off "$1" "$2"; then
        nok "$3: guest powered off within ${boot_timeout} s (state: $(domstate "$1" "$2"))"
        show_console "$1" "$2"
        return 1
    fi
    res=$(results "$1" "$2")
    if ! grep -qx "done" <<< "$res"; then
        nok "$3: guest reported 'done' (boot $(secs "$boot_ms") s)"
        show_console "$1" "$2"
        return 1
    fi
    ok "$3: guest booted, ran its script and powered off in $(secs "$boot_ms") s"
    up0=$(sed -n 's/^start .*uptime=\([0-9.]*\).*/\1/p' <<< "$res")
    up1=$(get uptime_end <<< "$res")
    note "$3: guest kernel $(get kernel <<< "$res"), /init at ${up0:-?} s, done at ${up1:-?} s of uptime"
    grep '^error=' <<< "$res" | sed 's/^/# guest: /'
    return 0
}
