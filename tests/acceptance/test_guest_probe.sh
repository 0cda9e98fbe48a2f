#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a real guest uses the vTPM vtpmd gives it.
#
# Run under tests/integration.sh (one host "a"):
#   integration.sh tests/acceptance/test_guest_probe.sh VTPMCTL VTPMD
#
# Builds (or takes from its cache) the test guest of tests/guest/build-guest.sh,
# starts vtpmd in host a and, through `vtpmctl call` only:
#   - for TPM 2.0/TIS, 2.0/CRB and 1.2/TIS: spawns a guest that reports which
#     driver bound, the TPM's major version and its device nodes, then checks
#     them and destroys the instance;
#   - for TPM 2.0: boots a guest that writes an NV secret and a persistent key
#     (boot 1), powers it on again and checks that boot 2 reads the same
#     values from the same swtpm state.
# Boots run one after another (QEMU/TCG; ~10 s each, up to ~35 s when the
# machine is loaded).  Prints "ok - " / "not ok - " lines and a final
# "N passed, M failed"; exits 1 on any failure.
#
# Environment: VTPM_GUEST_CACHE (default /var/cache/vtpmd-test-guest) is where
# the guest is built and cached; VT_BOOT_TIMEOUT (default 120) seconds a boot
# may take from start to "shut off".
# VT_* come from integration.sh; stop_vtpmd runs from the EXIT trap.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")/.." && pwd)
for v in VT_ROOT VT_AMQP_URL VT_HOST_A_URI VT_HOST_A_ROOT; do
    [ -n "${!v:-}" ] || { echo "$v is not set: run this under tests/integration.sh" >&2; exit 2; }
done
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"

cache=${VTPM_GUEST_CACHE:-/var/cache/vtpmd-test-guest}
boot_timeout=${VT_BOOT_TIMEOUT:-120}
uri=$VT_HOST_A_URI
hroot=$VT_HOST_A_ROOT
images=/var/lib/vtpmd/images        # as vtpmd sees it, inside host a
console_dir=$hroot/var/lib/vtpmd/console
export VTPM_AMQP_URL=$VT_AMQP_URL

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
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

vtpmd_pid=
stop_vtpmd() {
    [ -n "$vtpmd_pid" ] || return 0
    kill -TERM "$vtpmd_pid" 2>/dev/null || true
    wait "$vtpmd_pid" 2>/dev/null || true
    vtpmd_pid=
}
trap stop_vtpmd EXIT

# ---- the guest ---------------------------------------------------------------

note "building the test guest (cache $cache)"
t=$(now_ms)
if ! how=$("$tests/guest/build-guest.sh" "$cache" 2> "$VT_ROOT/build-guest.err"); then
    sed 's/^/#   /' "$VT_ROOT/build-guest.err"
    nok "build the test guest"
    finish
fi
sed 's/^/# /' "$VT_ROOT/build-guest.err"
ok "test guest ${how:-?} in $(secs $(($(now_ms) - t))) s" \
   "(vmlinuz $(stat -c %s "$cache/vmlinuz") B, initrd.img $(stat -c %s "$cache/initrd.img") B)"
cp "$cache/vmlinuz" "$cache/initrd.img" "$hroot$images/"

# ---- vtpmd in host a ------------------------------------------------------------

cfg=$VT_ROOT/vtpmd-accept.conf
cat > "$cfg" <<EOF
[amqp]
url = $VT_AMQP_URL
[worker]
host = compute-a
[libvirt]
uri = qemu:///system
swtpm_enabled = true
EOF
vtpmd_log=$VT_ROOT/vtpmd-accept.log
vt_host_spawn a "$vtpmd" --config "$cfg" --log-file "$vtpmd_log"
vtpmd_pid=$VT_LAST_PID
up=
for _ in $(seq 1 100); do
    if "$vtpmctl" call --host compute-a --timeout 1 get_capabilities > "$VT_ROOT/caps.json" 2>&1; then
        up=1
        break
    fi
    kill -0 "$vtpmd_pid" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$up" ]; then
    nok "vtpmd answers get_capabilities"
    sed 's/^/#   /' "$vtpmd_log" 2>/dev/null | tail -20
    finish
fi
ok "vtpmd answers get_capabilities"

# ---- helpers ---------------------------------------------------------------------

# call METHOD ARGS_JSON: the reply in $reply; status 0 when ok.
reply=
call() {
    local rc=0
    reply=$("$vtpmctl" call --host compute-a --timeout 180 "$1" "$2" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] && [[ $reply == *'"ok":true'* || $reply == *'"ok": true'* ]]
}

instance() { # UUID VERSION MODEL SCRIPT
    cat <<EOF
{"instance": {"uuid": "$1", "name": "guest-$4",
  "flavor": {"name": "m1.tpm", "vcpus": 1, "memory_mb": 256,
             "extra_specs": {"hw:tpm_version": "$2", "hw:tpm_model": "$3"}},
  "image": {"id": "vtpm-test-guest", "name": "vtpm-test-guest", "properties": {}},
  "boot": {"kernel": "$images/vmlinuz", "initrd": "$images/initrd.img",
           "cmdline": "console=ttyS0 vtpm.script=$4"}}}
EOF
}

domstate() { virsh -q -c "$uri" domstate "instance-$1" 2>/dev/null | head -1; }

# wait_off UUID: wait until the guest has powered itself off; the time it
# took (ms) in $boot_ms.  Status 1 on timeout.
boot_ms=0
wait_off() {
    local t0 s
    t0=$(date +%s%N)
    while :; do
        s=$(domstate "$1")
        boot_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        [ "$s" = "shut off" ] && return 0
        [ "$boot_ms" -ge $((boot_timeout * 1000)) ] && return 1
        sleep 0.5
    done
}

# results UUID: the VTPM-RESULT lines of the last boot in the console log,
# as key=value lines (each boot starts with "VTPM-RESULT start").
results() {
    tr -d '\r' < "$console_dir/$1.log" 2>/dev/null |
        awk '/VTPM-RESULT start/ { n = 0; delete r }
             { i = index($0, "VTPM-RESULT ") }
             i { r[n++] = substr($0, i + 12) }
             END { for (j = 0; j < n; j++) print r[j] }'
}
# get KEY < results: the value of the first KEY=... line ("" when absent).
get() { awk -v k="$1=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }'; }

show_console() {
    note "console of $1 (last 30 lines):"
    tr -d '\r' < "$console_dir/$1.log" 2>/dev/null | tail -30 | sed 's/^/#   | /'
}

destroy() {
    if call destroy "{\"instance\": {\"uuid\": \"$1\"}}"; then
        ok "$2: destroy"
    else
        nok "$2: destroy: $reply"
    fi
}

# boot_and_read UUID LABEL: wait for the guest to power off, results in $res.
res=
boot_and_read() {
    if ! wait_off "$1"; then
        nok "$2: guest powered off within ${boot_timeout} s (state: $(domstate "$1"))"
        show_console "$1"
        res=
        return 1
    fi
    res=$(results "$1")
    if ! grep -qx "done" <<< "$res"; then
        nok "$2: guest reported 'done' (boot $(secs "$boot_ms") s)"
        show_console "$1"
        return 1
    fi
    ok "$2: guest booted, ran its script and powered off in $(secs "$boot_ms") s"
    # Guest uptime when /init started and when it finished its script.
    local up0 up1
    up0=$(sed -n 's/^start .*uptime=\([0-9.]*\).*/\1/p' <<< "$res")
    up1=$(get uptime_end <<< "$res")
    note "$2: guest kernel $(get kernel <<< "$res"), /init at ${up0:-?} s, done at ${up1:-?} s of uptime"
    grep '^error=' <<< "$res" | sed 's/^/# guest: /'
    return 0
}

# ---- probe: which driver, which version, which nodes ---------------------------

# version model driver version_major tpmrm0
cases=(
    "2.0 tpm-tis tpm_tis 2 yes"
    "2.0 tpm-crb tpm_crb 2 yes"
    "1.2 tpm-tis tpm_tis 1 no"
)
for c in "${cases[@]}"; do
    read -r ver model drv major rm <<< "$c"
    label="TPM $ver/$model"
    uuid=$(cat /proc/sys/kernel/random/uuid)
    note "$label: spawn $uuid (vtpm.script=probe)"
    t=$(now_ms)
    if ! call spawn "$(instance "$uuid" "$ver" "$model" probe)"; then
        nok "$label: spawn: $reply"
        continue
    fi
    ok "$label: spawn ($(secs $(($(now_ms) - t))) s)"
    if boot_and_read "$uuid" "$label"; then
        check "$label: driver bound" "$(get driver <<< "$res")" "$drv"
        check "$label: tpm_version_major" "$(get version_major <<< "$res")" "$major"
        check "$label: /dev/tpm0" "$(get dev_tpm0 <<< "$res")" yes
        check "$label: /dev/tpmrm0" "$(get dev_tpmrm0 <<< "$res")" "$rm"
        if [ "$major" = 2 ]; then
            check "$label: TPM2_GetRandom through /dev/tpmrm0" "$(get getrandom <<< "$res")" ok
        fi
        dev=$(get device <<< "$res")
        tcg=$(get tcg_version <<< "$res")
        man=$(get manufacturer <<< "$res")
        note "$label: device ${dev:-?}${man:+, manufacturer $man}${tcg:+, TCG version $tcg}"
    fi
    destroy "$uuid" "$label"
done

# ---- persist: NV secret and persistent key survive a power cycle ---------------

ver=2.0 model=tpm-crb
label="TPM $ver/$model persist"
uuid=$(cat /proc/sys/kernel/random/uuid)
note "$label: spawn $uuid (vtpm.script=persist), boot 1 writes"
t=$(now_ms)
if call spawn "$(instance "$uuid" "$ver" "$model" persist)"; then
    ok "$label: spawn ($(secs $(($(now_ms) - t))) s)"
    if boot_and_read "$uuid" "$label boot 1"; then
        check "$label boot 1: no NV secret yet" "$(get nv_secret <<< "$res")" none
        check "$label boot 1: no persistent key yet" "$(get key_pub_sha256 <<< "$res")" none
        check "$label boot 1: wrote" "$(get persist <<< "$res")" writing
        check "$label boot 1: NV read back in the same boot" "$(get written_readback <<< "$res")" match
        secret=$(get written_nv_secret <<< "$res")
        keysum=$(get written_key_pub_sha256 <<< "$res")
        if [[ $secret =~ ^[0-9a-f]{64}$ ]]; then ok "$label boot 1: secret ${secret:0:16}..."; else nok "$label boot 1: secret '$secret'"; fi
        if [[ $keysum =~ ^[0-9a-f]{64}$ ]]; then ok "$label boot 1: key ${keysum:0:16}..."; else nok "$label boot 1: key '$keysum'"; fi

        note "$label: power_on, boot 2 reads"
        t=$(now_ms)
        if call power_on "{\"instance\": {\"uuid\": \"$uuid\"}}"; then
            ok "$label: power_on ($(secs $(($(now_ms) - t))) s)"
            if boot_and_read "$uuid" "$label boot 2"; then
                check "$label boot 2: nothing rewritten" "$(get persist <<< "$res")" kept
                check "$label boot 2: NV secret of boot 1" "$(get nv_secret <<< "$res")" "$secret"
                check "$label boot 2: persistent key of boot 1" "$(get key_pub_sha256 <<< "$res")" "$keysum"
            fi
        else
            nok "$label: power_on: $reply"
        fi
    fi
    destroy "$uuid" "$label"
else
    nok "$label: spawn: $reply"
fi

# ---- vtpmd stops cleanly ------------------------------------------------------------

kill -TERM "$vtpmd_pid" 2>/dev/null
rc=0
wait "$vtpmd_pid" || rc=$?
vtpmd_pid=
check "vtpmd exits 0 on SIGTERM" "$rc" 0
if [ "$failed" -gt 0 ]; then
    note "vtpmd log (last 30 lines):"
    tail -30 "$vtpmd_log" 2>/dev/null | sed 's/^/#   /'
fi
note "total $(secs "$(now_ms)") s"
finish
