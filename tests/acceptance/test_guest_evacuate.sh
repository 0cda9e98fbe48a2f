#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a guest's TPM secrets survive the death of its host, asked of
# the guest's own TPM (docs/lifecycle.md, "Checkpoints and evacuation").
#
# Run under tests/integration.sh with three hosts on a network:
#   integration.sh --net --hosts 3 tests/acceptance/test_guest_evacuate.sh VTPMCTL VTPMD
#
# vtpmd runs in hosts a and b; host c is the state store ([store] uri of
# both: its libvirtd only, storage every host reaches and that survives
# them).  Checkpoints are taken after operations only here
# ([store] checkpoint_interval = 3600): the suite decides what the last
# checkpoint holds.  One TPM 2.0 guest per custody mode (user, host with
# the hosts' deployment key, deployment):
#
#   1. the guest writes an NV secret and a persistent key, powers off;
#      power_off takes a checkpoint, which must hold a's state file;
#   2. (user mode) a rebuild boots the guest again with a script that
#      writes a second secret and holds, running: no checkpoint has it;
#   3. evacuate on b while a lives: refused (InstanceConflict, final);
#   4. host a dies: its vtpmd, QEMU, swtpm and libvirtd are killed, its
#      disk stays as it was;
#   5. evacuate on b (no fenced: the dead vtpmd does not answer, its
#      libvirt is gone): restored; the guest on b reads its secret and key
#      back, and the second secret is gone, as documented (a rollback to
#      the checkpoint);
#   6. host a comes back (libvirtd over the same tree, a new vtpmd): its
#      vtpmd removes the stale domains and their state;
#   7. destroy on b removes the checkpoints from the store.
#
# Prints "ok - " / "not ok - " lines and "N passed, M failed"; exits 1 on
# any failure.  VTPM_GUEST_CACHE and VT_BOOT_TIMEOUT as in guest.sh.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh --net --hosts 3 $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=guest.sh
source "$tests/acceptance/guest.sh"
guest_need_two_hosts
[ -n "${VT_HOST_C_ADDR:-}" ] || {
    echo "VT_HOST_C_ADDR is not set: run this under tests/integration.sh --net --hosts 3" >&2
    exit 2
}

guest_build a b
A=$VT_HOST_A_ADDR
B=$VT_HOST_B_ADDR
C=$VT_HOST_C_ADDR
declare -A host_of=([$A]=a [$B]=b)
key=$VT_ROOT/deployment.key
head -c 32 /dev/urandom > "$key"
chmod 0600 "$key"
extra=("libvirt.migration_uri_template=qemu+tcp://%s/system"
       "store.uri=qemu+tcp://$C/system"
       "store.checkpoint_interval=3600"
       "vtpm.supported_secret_security=user;host;deployment"
       "vtpm.deployment_key_file=$key")
start_vtpmd a "$A" "${extra[@]}"
start_vtpmd b "$B" "${extra[@]}"

pool=$(vt_host_root c)/var/lib/vtpmd/pools/vtpm-checkpoints
modes="user host deployment"
declare -A U=() secret=() keysum=()

# spec UUID MODE SCRIPT: the instance, booting the test guest with SCRIPT.
spec() {
    local vt=
    [ "$2" = user ] && vt=", \"vtpm\": $(vtpm_user_secret)"
    printf '{"uuid": "%s", "name": "evac-%s", "flavor": {"name": "m1.evac", "vcpus": 1, "memory_mb": 256, "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_secret_security": "%s"}}, "image": {"id": "guest-%s", "name": "guest-%s", "properties": {"hw_tpm_model": "tpm-tis"}}, "boot": {"kernel": "%s/vmlinuz", "initrd": "%s/initrd.img", "cmdline": "console=ttyS0 vtpm.script=%s"}%s}' \
        "$1" "${1:0:8}" "$2" "$3" "$3" "$images" "$images" "$3" "$vt"
}

# op LABEL WORKER METHOD ARGS: one call, checked ok; the result in $reply.
op() {
    if call "$2" "$3" "$4"; then
        ok "$1: $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$1: $3 on host ${host_of[$2]}: $reply"
    return 1
}

state_file() { echo "$(vt_host_root "$1")/var/lib/libvirt/swtpm/$2/tpm2/tpm2-00.permall"; }
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
# newest_ckpt UUID: the newest checkpoint volume of the instance in the store.
newest_ckpt() {
    find "$pool" -maxdepth 1 -name "$1.ckpt-*.vtpm.tar" 2>/dev/null |
        sed 's/.*\.ckpt-\([0-9]*\)\.vtpm\.tar$/\1 &/' | sort -n | tail -1 | cut -d' ' -f2
}
ckpt_sha() { tar -xOf "$1" tpm2/tpm2-00.permall 2>/dev/null | sha256sum | cut -d' ' -f1; }

# wait_ckpt LABEL HOST UUID: until the store's newest checkpoint holds the
# state file HOST has now.
wait_ckpt() {
    local want got c t0
    want=$(sha "$(state_file "$2" "$3")")
    t0=$(now_ms)
    while :; do
        c=$(newest_ckpt "$3")
        got=$([ -n "$c" ] && ckpt_sha "$c")
        [ -n "$want" ] && [ "$got" = "$want" ] && break
        if [ $(($(now_ms) - t0)) -gt 120000 ]; then
            nok "$1: a checkpoint holds host $2's state file (newest: ${c:-none})"
            return 1
        fi
        sleep 0.5
    done
    ok "$1: the store's newest checkpoint ${c##*/} holds host $2's state"
}

# wait_holding HOST UUID LABEL: the running guest reported "holding".
wait_holding() {
    local t0
    t0=$(now_ms)
    while ! results "$1" "$2" | grep -qx holding; do
        if [ $(($(now_ms) - t0)) -gt $((boot_timeout * 1000)) ]; then
            nok "$3: the guest wrote its second secret and holds"
            show_console "$1" "$2"
            return 1
        fi
        sleep 0.5
    done
    res=$(results "$1" "$2")
    ok "$3: the guest wrote its second secret and holds, running"
}

# ---- 1. the guests write their secrets; power_off checkpoints them ------------------

for m in $modes; do
    U[$m]=$(cat /proc/sys/kernel/random/uuid)
    label="$m: spawn on a"
    op "$label" "$A" spawn "{\"instance\": $(spec "${U[$m]}" "$m" life)}" || finish
    if boot_and_read a "${U[$m]}" "$label"; then
        check "$label: guest wrote its secret and key" "$(get persist <<< "$res")" writing
        secret[$m]=$(get written_nv_secret <<< "$res")
        keysum[$m]=$(get written_key_pub_sha256 <<< "$res")
    fi
    [[ ${secret[$m]:-} =~ ^[0-9a-f]{64}$ ]] || { nok "$label: a 32-byte secret"; finish; }
    note "$label: NV secret ${secret[$m]:0:16}..., key ${keysum[$m]:0:16}..."
    label="$m: checkpoint"
    op "$label" "$A" power_off "{\"instance\": {\"uuid\": \"${U[$m]}\"}}"
    wait_ckpt "$label" a "${U[$m]}"
done

# ---- 2. a second secret after the last checkpoint (user mode) ------------------------

u=${U[user]}
label="user: a second secret after the last checkpoint"
op "$label" "$A" rebuild "{\"instance\": $(spec "$u" user second)}" &&
    check "$label: rebuild keeps the TPM" "$(rget vtpm_state)" kept
second=
if wait_holding a "$u" "$label"; then
    check "$label: the guest still reads its first secret" "$(get nv_secret <<< "$res")" "${secret[user]}"
    second=$(get second_nv_secret <<< "$res")
fi
[[ $second =~ ^[0-9a-f]{64}$ ]] || nok "$label: a 32-byte second secret (got '$second')"
c=$(newest_ckpt "$u")
if [ "$(ckpt_sha "$c")" != "$(sha "$(state_file a "$u")")" ]; then
    ok "$label: no checkpoint holds the state with the second secret"
else
    nok "$label: the newest checkpoint holds a's current state (the second secret)"
fi

# ---- 3. evacuate while a lives: refused ---------------------------------------------------

label="evacuate while host a lives"
if call "$B" evacuate "{\"instance\": $(spec "$u" user life), \"from_host\": \"$A\"}"; then
    nok "$label: refused"
else
    check "$label: refused with InstanceConflict" \
        "$(grep -o '"code": *"[A-Za-z]*"' <<< "$reply" | head -1 | tr -d ' ')" '"code":"InstanceConflict"'
    check "$label: for good (retryable false)" \
        "$(grep -o '"retryable": *[a-z]*' <<< "$reply" | head -1 | tr -d ' ')" '"retryable":false'
fi

# ---- 4. host a dies -----------------------------------------------------------------------

label="host a dies"
kill -KILL "${vtpmd_pid[a]}" 2>/dev/null
wait "${vtpmd_pid[a]}" 2>/dev/null
unset "vtpmd_pid[a]"
for m in $modes; do
    for p in $(pgrep -f "${U[$m]}"); do
        case $(cat "/proc/$p/comm" 2>/dev/null) in
            qemu-system*|swtpm*) kill -KILL "$p" ;;
        esac
    done
done
kill -KILL "$(vt_host_pid a)"
sleep 1
check "$label: no QEMU of its guests left" "$(pgrep -f "instance-$u" | wc -l)" 0
ok "$label: vtpmd, QEMU, swtpm and libvirtd killed; its disk as it was"

# ---- 5. evacuate on b ---------------------------------------------------------------------

for m in $modes; do
    label="$m: evacuate a -> b"
    if op "$label" "$B" evacuate "{\"instance\": $(spec "${U[$m]}" "$m" life), \"from_host\": \"$A\"}"; then
        check "$label: restored" "$(rget vtpm_state)" restored
        check "$label: from a's checkpoint" "$(rget checkpoint.host)" "$A"
        note "$label: checkpoint generation $(rget checkpoint.generation), taken at $(rget checkpoint.taken_at), $(rget checkpoint.age_s) s old"
        if boot_and_read b "${U[$m]}" "$label"; then
            check "$label: guest reads its secret back" "$(get nv_secret <<< "$res")" "${secret[$m]}"
            check "$label: guest reads its key back" "$(get key_pub_sha256 <<< "$res")" "${keysum[$m]}"
            check "$label: guest had nothing to rewrite" "$(get persist <<< "$res")" kept
            [ "$m" = user ] && check "$label: the second secret, written after the checkpoint, is gone" \
                "$(get nv2_secret <<< "$res")" none
        fi
    fi
done

# ---- 6. host a comes back ----------------------------------------------------------------

label="host a comes back"
vt_host_restart_libvirtd a
start_vtpmd a "$A" "${extra[@]}"
for m in $modes; do
    t0=$(now_ms)
    while [ -n "$(domstate a "${U[$m]}")" ] || [ -e "$(dirname "$(dirname "$(state_file a "${U[$m]}")")")" ]; do
        [ $(($(now_ms) - t0)) -gt 60000 ] && break
        sleep 0.5
    done
    check "$label: $m: no stale domain on a" "$(domstate a "${U[$m]}")" ""
    check "$label: $m: no stale state on a" \
        "$(test -e "$(vt_host_root a)/var/lib/libvirt/swtpm/${U[$m]}" && echo present || echo gone)" gone
done
check "$label: vtpmd says why" \
    "$(grep -c 'was evacuated to host .*: its stale domain and TPM state are removed' "${vtpmd_log[a]}")" 3

# ---- 7. destroy on b ----------------------------------------------------------------------

for m in $modes; do
    label="$m: destroy on b"
    op "$label" "$B" destroy "{\"instance\": {\"uuid\": \"${U[$m]}\"}}"
    check "$label: no checkpoint or ownership record left in the store" \
        "$(find "$pool" -maxdepth 1 -name "${U[$m]}*" | wc -l)" 0
done

finish
