#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a running guest's TPM moves with it in a live migration, in
# every custody mode, asked of the guest's own TPM.
#
# Run under tests/integration.sh with two hosts on a network:
#   integration.sh --net --hosts 2 tests/acceptance/test_guest_livemig.sh VTPMCTL VTPMD
#
# Through `vtpmctl call` only, against a vtpmd in each of hosts a and b, one
# TPM 2.0 guest per custody mode (user, host, deployment) boots the test
# guest's "tick" script (tests/guest/build-guest.sh): the "life" script's
# NV secret and persistent key, then PCR 16 extended once with a random
# value, then a TPM NV counter (nt=counter) incremented every second, each
# tick printed on the serial console with the PCR, and every 5th tick the
# NV secret and key read back.  The guest keeps ticking
# while it is live-migrated a -> b -> a (check_can_live_migrate_destination,
# pre_live_migration, live_migration, post_live_migration_at_destination).
# After each move the guest runs on exactly one host and its TPM is the
# same running TPM: PCR 16 reads as before (a restarted TPM resets it),
# the NV counter went on from where it was (never backwards, never
# restarted), the loop counter too (the guest did not reboot), and the NV
# secret and key of its first boot read back unchanged.
#
# Fault cases, with the user-mode guest on a slow network (tc on b's
# veth): b's libvirtd killed mid-migration, live_migration_abort, and a
# timeout: each time the guest still runs on a with the same PCR 16 and its
# counter going on, the fault is retryable, and b keeps nothing after
# rollback_live_migration_at_destination.
#
# Prints "ok - " / "not ok - " lines and "N passed, M failed"; exits 1 on
# any failure.  VTPM_GUEST_CACHE and VT_BOOT_TIMEOUT as in guest.sh.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh --net --hosts 2 $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=guest.sh
source "$tests/acceptance/guest.sh"
guest_need_two_hosts

guest_build a b
start_two_hosts

# ---- specs and steps ---------------------------------------------------------------

mode=
inst() { # UUID
    printf '{"uuid": "%s", "name": "accept-lm", "flavor": {"name": "m1.tpm", "vcpus": 1, "memory_mb": 256, "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_secret_security": "%s"}}, "image": {"id": "guest-tick", "name": "guest-tick", "properties": {"hw_tpm_model": "tpm-tis"}}, "boot": {"kernel": "%s/vmlinuz", "initrd": "%s/initrd.img", "cmdline": "console=ttyS0 vtpm.script=tick vtpm.ticks=900 vtpm.watchdog=1200"}%s}' \
        "$1" "$mode" "$images" "$images" "$(vtpm_member)"
}

op() { # LABEL WORKER METHOD ARGS
    if call "$2" "$3" "$4"; then
        ok "$1: $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$1: $3 on host ${host_of[$2]}: $reply"
    return 1
}
result_json() { python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["result"]))' "$reply"; }

# The guest's console lines of one kind on host H (the file is the host's own).
ticks() { tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null | grep -o 'VTPM-TICK .*'; }
states() { tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null | grep -o 'VTPM-STATE .*'; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

# wait_ticks HOST UUID AFTER_N: until the guest printed a tick with n > AFTER_N on
# HOST; status 1 when it did not within 120 s.
wait_ticks() {
    local n
    for _ in $(seq 1 240); do
        n=$(ticks "$1" "$2" | tail -1 | field n)
        [ -n "$n" ] && [ "$n" -gt "$3" ] && return 0
        sleep 0.5
    done
    return 1
}

# The last tick the guest printed on HOST: its n and NV counter in $t_n $t_c.
t_n= t_c=
last_tick() {
    local l
    l=$(ticks "$1" "$2" | tail -1)
    t_n=$(field n <<< "$l")
    t_c=$(field counter <<< "$l")
}

# The secret and key of the first boot, $secret and $keysum; PCR 16 after
# the extension, $pcr.
secret= keysum= pcr=
boot() { # LABEL UUID
    local r
    if ! wait_ticks a "$2" 0; then
        nok "$1: the guest is ticking on host a"
        show_console a "$2"
        return 1
    fi
    r=$(tr -d '\r' < "$(console_log a "$2")" | grep -o 'VTPM-RESULT .*' | sed 's/^VTPM-RESULT //')
    check "$1: guest wrote its secret and key" "$(get persist <<< "$r")" writing
    secret=$(get written_nv_secret <<< "$r")
    keysum=$(get written_key_pub_sha256 <<< "$r")
    pcr=$(get pcr16 <<< "$r")
    if ! [[ $secret =~ ^[0-9a-f]{64}$ && $keysum =~ ^[0-9a-f]{64}$ && $pcr =~ ^[0-9a-f]{64}$ ]]; then
        nok "$1: the guest reported a secret, a key and PCR 16 (got '$secret', '$keysum', '$pcr')"
        return 1
    fi
    check "$1: PCR 16 was extended (not the reset value)" "$([ "$pcr" != "$(printf '0%.0s' {1..64})" ] && echo yes)" yes
    ok "$1: guest ticking on host a, PCR 16 ${pcr:0:16}..., NV secret ${secret:0:16}..."
}

# same_tpm LABEL HOST UUID N C: the guest ticks on HOST past loop N and NV
# counter C, with the same PCR 16, and reads its first boot's secret and key.
same_tpm() {
    local label=$1 h=$2 u=$3 n0=$4 c0=$5 first st
    if ! wait_ticks "$h" "$u" "$n0"; then
        nok "$label: the guest goes on ticking on host $h"
        show_console "$h" "$u"
        return 1
    fi
    first=$(ticks "$h" "$u" | awk -v n="$n0" '{ split($2, a, "="); if (a[2] > n) { print; exit } }')
    check "$label: PCR 16 on host $h is the one before (the TPM was not restarted)" \
        "$(field pcr16 <<< "$first")" "$pcr"
    check "$label: the NV counter went on (was $c0)" \
        "$(c=$(field counter <<< "$first"); [[ $c =~ ^[0-9]+$ ]] && [ "$c" -gt "$c0" ] && echo "went on")" "went on"
    check "$label: the NV counter never went backwards on host $h" \
        "$(ticks "$h" "$u" | field counter | awk 'p != "" && $1 < p { print "backwards"; exit } { p = $1 }')" ""
    # The guest reads its secret and key every 5 ticks: the first read since.
    for _ in $(seq 1 120); do
        st=$(states "$h" "$u" | awk -v n="$n0" '{ split($2, a, "="); if (a[2] > n) print }')
        grep -q key_pub_sha256 <<< "$st" && break
        sleep 0.5
    done
    check "$label: NV secret of the first boot unchanged" "$(field nv_secret <<< "$st" | head -1)" "$secret"
    check "$label: persistent key of the first boot unchanged" "$(field key_pub_sha256 <<< "$st" | head -1)" "$keysum"
    check "$label: exactly one host runs the guest" \
        "$(domstate a "$u")|$(domstate b "$u")" "$([ "$h" = a ] && echo "running|" || echo "|running")"
}

# move LABEL FROM TO UUID: Nova's sequence; the running guest from FROM to TO.
move() {
    local label=$1 from=$2 to=$3 u=$4 fh md
    fh=${host_of[$from]}
    op "$label" "$to" check_can_live_migrate_destination "{\"instance\": $(inst "$u")}" || return 1
    op "$label" "$to" pre_live_migration "{\"instance\": $(inst "$u")}" || return 1
    md=$(result_json)
    last_tick "$fh" "$u"
    local n0=$t_n c0=$t_c
    if op "$label" "$from" live_migration "{\"instance\": {\"uuid\": \"$u\"}, \"dest_host\": \"$to\", \"migrate_data\": $md}"; then
        note "$label: libvirt: total $(rget total_ms) ms, downtime $(rget downtime_ms) ms, vTPM state $(rget vtpm_bytes) bytes"
        op "$label" "$to" post_live_migration_at_destination "{\"instance\": {\"uuid\": \"$u\"}}"
        same_tpm "$label" "${host_of[$to]}" "$u" "$n0" "$c0"
        check "$label: no state left on host $fh" "$(test -e "$(vt_host_root "$fh")/var/lib/libvirt/swtpm/$u" && echo present || echo gone)" gone
    fi
}

# ---- the network ------------------------------------------------------------------------

slow() { # on|off: host b's traffic through its veth
    local dev
    dev=$(ip -o -4 addr show | awk -v a="${B%.*}.1/24" '$4 == a { print $2 }')
    [ -n "$dev" ] || return 1
    if [ "$1" = on ]; then
        tc qdisc replace dev "$dev" root tbf rate "${VT_SLOW_RATE:-4mbit}" burst 32kbit latency 2s
    else
        tc qdisc del dev "$dev" root 2> /dev/null || true
    fi
}
trap 'slow off' EXIT

wait_job() { # UUID: until host a's libvirt migrates it
    for _ in $(seq 1 600); do
        virsh -q -c "$(vt_host_uri a)" domjobinfo "instance-$1" 2>/dev/null | grep -q Unbounded && return 0
        sleep 0.1
    done
    return 1
}

# stays LABEL UUID: after a failed migration, on host a with the same TPM,
# and nothing left on b after a rollback.
stays() {
    local label=$1 u=$2 n0 c0
    last_tick a "$u"
    n0=$t_n c0=$t_c
    check "$label: the fault is retryable" "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["fault"]["retryable"])' "$reply" 2>/dev/null)" True
    same_tpm "$label" a "$u" "$n0" "$c0"
    op "$label" "$B" rollback_live_migration_at_destination "{\"instance\": {\"uuid\": \"$u\"}}"
    check "$label: nothing left on host b" "$(domstate b "$u")|$(test -e "$(vt_host_root b)/var/lib/libvirt/swtpm/$u" && echo state)|$(virsh -q -c "$(vt_host_uri b)" secret-list 2>/dev/null | grep -c "$u")" "||0"
}

# fault LABEL UUID KIND: one failed migration a -> b, the guest streaming on
# the slow network when KIND (kill | abort) strikes, or it times out.
fault() {
    local label=$1 u=$2 kind=$3 md extra= out=$VT_ROOT/lm-$3.reply pid
    op "$label" "$B" pre_live_migration "{\"instance\": $(inst "$u")}" || return 1
    md=$(result_json)
    [ "$kind" = timeout ] && extra=', "timeout_s": 3'
    slow on
    "$vtpmctl" call --host "$A" --timeout 600 live_migration \
        "{\"instance\": {\"uuid\": \"$u\"}, \"dest_host\": \"$B\", \"migrate_data\": $md$extra}" > "$out" 2>&1 &
    pid=$!
    if ! wait_job "$u"; then
        nok "$label: the migration began"
    elif [ "$kind" = kill ]; then
        vt_host_restart_libvirtd b > /dev/null 2>&1 && ok "$label: host b's libvirtd killed mid-stream and started again"
    elif [ "$kind" = abort ]; then
        op "$label" "$A" live_migration_abort "{\"instance\": {\"uuid\": \"$u\"}}" &&
            check "$label: live_migration_abort says aborted" "$(rget aborted)" true
    fi
    wait "$pid"
    reply=$(cat "$out")
    slow off
    check "$label: live_migration answered a fault" "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["ok"])' "$reply" 2>/dev/null)" False
    note "$label: $(python3 -c 'import json, sys; f = json.loads(sys.argv[1])["fault"]; print(f["code"], f["message"][:200])' "$reply" 2>/dev/null)"
    stays "$label" "$u"
}

# ---- one guest per custody mode -----------------------------------------------------------

for mode in user host deployment; do
    U=$(cat /proc/sys/kernel/random/uuid)
    note "$mode: instance $U (TPM 2.0 TIS, secret security $mode), the tick script"
    op "$mode: spawn" "$A" spawn "{\"instance\": $(inst "$U")}" || continue
    boot "$mode: boot" "$U" || { call "$A" destroy "{\"instance\": {\"uuid\": \"$U\"}}"; continue; }
    move "$mode: live migration a -> b" "$A" "$B" "$U"
    move "$mode: live migration b -> a" "$B" "$A" "$U"
    if [ "$mode" = user ]; then
        fault "$mode: b's libvirtd killed mid-migration" "$U" kill
        fault "$mode: live_migration_abort" "$U" abort
        fault "$mode: timeout" "$U" timeout
    fi
    op "$mode: destroy" "$A" destroy "{\"instance\": {\"uuid\": \"$U\"}}"
done

finish
