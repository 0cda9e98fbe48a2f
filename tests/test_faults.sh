#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The fault matrix (docs/reliability.md): what a caller gets, and where the
# TPM state is, when the machine fails under vtpmd.  Two hosts on a network:
#   integration.sh --net --hosts 2 tests/test_faults.sh VTPMCTL VTPMD
#
# Faults, each made for real (no part of vtpmd is mocked):
#   - disk full: the state dir ([libvirt] state_dir), the store's pools
#     ([store] pool_dir) and the kept copies ([store] kept_dir) of both hosts
#     are small tmpfs mounts inside the host's mount namespace; a test fills
#     one with a file, runs a state-moving operation, deletes the file and
#     sends the same request again;
#   - a swtpm that fails to start: a state file swtpm cannot read (mode 000:
#     swtpm runs as tss), a state file swtpm cannot load (truncated), and a
#     state dir so full that swtpm_setup cannot manufacture a TPM;
#   - an unreachable destination: a name that does not resolve, and a host
#     whose libvirtd is down.
# Every case checks the fault code and its retryable flag, that the TPM
# state's sha256 is what it was before, that nothing half-written is left
# (no partial volume, no temporary files) and the instance's domain state;
# then that the same request succeeds once the fault is gone (or the
# documented way back, a revert, works).
# FAULTS_CASES="name ..." runs some cases only.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh --net --hosts 2 $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=acceptance/guest.sh
source "$tests/acceptance/guest.sh"
guest_need_two_hosts
# Firmware-only guests do not answer ACPI: power_off is a hard stop after 1 s.
shutdown_timeout=1
mode=none
A=$VT_HOST_A_ADDR
B=$VT_HOST_B_ADDR

# Paths as vtpmd and libvirtd see them, inside a host.
SD=/var/lib/libvirt/swtpm
POOLS=/var/lib/vtpmd/pools
KEPT=/var/lib/vtpmd/kept
SMALL=4m

hx() { local h=$1; shift; vt_host_exec "$h" "$@"; }
state_file() { echo "$SD/$1/tpm2/tpm2-00.permall"; }
shelved_vol() { echo "$POOLS/vtpm-shelved/$1.vtpm.tar"; }    # the store is host a
incoming_vol() { echo "$POOLS/vtpm-incoming/$1.vtpm.tar"; }
kept_copy() { echo "$KEPT/$1.tar"; }
hsha() { hx "$1" sha256sum "$2" 2>/dev/null | cut -c1-64; }
present() { hx "$1" test -e "$2" && echo present || echo absent; }
# Temporary files vtpmd or libvirt would leave half-written.
leftovers() {
    hx "$1" sh -c "ls -A $SD $KEPT $POOLS/* 2>/dev/null | grep -E 'restore-|\\.tmp-|\\.part' || true" | tr '\n' ' '
}

# small_disks HOST: the three directories become tmpfs of $SMALL each.
small_disks() {
    local h=$1
    hx "$h" mkdir -p "$SD" "$POOLS" "$KEPT"
    hx "$h" mount -t tmpfs -o "size=$SMALL,mode=0711" vtpm-faults-state "$SD" &&
        hx "$h" mount -t tmpfs -o "size=$SMALL,mode=0755" vtpm-faults-pools "$POOLS" &&
        hx "$h" mount -t tmpfs -o "size=$SMALL,mode=0700" vtpm-faults-kept "$KEPT"
}
# fill HOST DIR / unfill HOST DIR: no byte left in DIR's file system, and back.
fill() {
    hx "$1" dd if=/dev/zero of="$2/.vtpm-faults-fill" bs=4k 2>/dev/null
    hx "$1" dd if=/dev/zero of="$2/.vtpm-faults-fill2" bs=512 2>/dev/null
    note "filled $2 on host $1: $(hx "$1" df -k --output=avail "$2" | tail -1 | tr -d ' ') KiB free"
}
unfill() { hx "$1" rm -f "$2/.vtpm-faults-fill" "$2/.vtpm-faults-fill2"; }

# The reply's fault as "Code retryable|final"; "ok" for a result.
fault_of() {
    python3 -c '
import json, sys
try:
    r = json.loads(sys.argv[1])
except Exception:
    print("no-reply"); sys.exit()
if r.get("ok"): print("ok")
else:
    f = r.get("fault") or {}
    print(f.get("code"), "retryable" if f.get("retryable") else "final")' "$reply"
}
fault_msg() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("fault", {}).get("message", ""))' "$reply" 2>/dev/null
}

flavor='{"name": "m1.faults", "vcpus": 1, "memory_mb": 64, "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis"}}'
inst() { printf '{"uuid": "%s", "name": "faults", "flavor": %s, "image": {"id": "img-1", "name": "img-1", "properties": {}}}' "$1" "$flavor"; }
uuid() { cat /proc/sys/kernel/random/uuid; }

# must WORKER METHOD ARGS WHAT: the call succeeds.
must() {
    if call "$1" "$2" "$3"; then
        ok "$4: $2 on host ${host_of[$1]} succeeds ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$4: $2 on host ${host_of[$1]}: $reply"
    return 1
}
# faults WORKER METHOD ARGS WHAT "CODE retryable|final": the call fails so.
faults() {
    call "$1" "$2" "$3"
    local got
    got=$(fault_of)
    check "$4: $2 on host ${host_of[$1]} answers $5" "$got" "$5"
    [ "$got" = "$5" ] || note "reply: $reply"
    [ "$got" != ok ] && note "$4: fault message: $(fault_msg)"
}

spawn_off() { # HOST UUID: spawn (started: the TPM is manufactured), then power off
    must "$1" spawn "{\"instance\": $(inst "$2")}" "setup" &&
        must "$1" power_off "{\"instance\": {\"uuid\": \"$2\"}}" "setup"
}
destroy() { call "$1" destroy "{\"instance\": {\"uuid\": \"$2\"}}" > /dev/null; }

# The instance the cases work on, $u: on host a, shut off, the sha256 of
# its TPM state in $S.  Cases hand it on to the next (spawns are what takes
# time here: one TPM serves many cases); a case run alone spawns its own.
u=
S=
instance_on_a() {
    [ -n "$u" ] && return 0
    u=$(uuid)
    spawn_off "$A" "$u" || { u=; return 1; }
    S=$(hsha a "$(state_file "$u")")
}

start_hosts() {
    local extra=("libvirt.migration_uri_template=qemu+tcp://%s/system"
                 "store.uri=qemu+tcp://$A/system" vtpm.allow_unencrypted=true)
    declare -gA host_of=([$A]=a [$B]=b [no-such-host.invalid]=none)
    start_vtpmd a "$A" "${extra[@]}"
    start_vtpmd b "$B" "${extra[@]}"
}

want() { [ -z "${FAULTS_CASES:-}" ] || [[ " $FAULTS_CASES " == *" $1 "* ]]; }

# ---- 1. disk full ---------------------------------------------------------------------

# After a restore into a full state dir of HOST failed: no domain, no state
# dir, no half-extracted directory.
nothing_restored() {
    check "state dir full: no domain on $1" "$(domstate "$1" "$u")" ""
    check "state dir full: no state dir on $1" "$(present "$1" "$SD/$u")" absent
    check "state dir full: nothing half-written on $1" "$(leftovers "$1")" ""
}

# shelve into a full store, then unshelve into a full state dir.
case_shelve_full() {
    local sh vsha
    instance_on_a || return
    note "disk full: shelve / unshelve, instance $u"

    fill a "$POOLS"
    faults "$A" shelve "{\"instance\": $(inst "$u"), \"offload\": true}" "store full" \
        "StateTransferFailed retryable"
    check "store full: domain still on a" "$(domstate a "$u")" "shut off"
    check "store full: state unchanged" "$(hsha a "$(state_file "$u")")" "$S"
    check "store full: no shelved volume" "$(present a "$(shelved_vol "$u")")" absent
    check "store full: nothing half-written" "$(leftovers a)" ""
    unfill a "$POOLS"
    must "$A" shelve "{\"instance\": $(inst "$u"), \"offload\": true}" "store freed" || return
    sh=$(rget shelved)
    vsha=$(rget shelved.sha256)
    check "store freed: shelved volume is the reply's" "$(hsha a "$(shelved_vol "$u")")" "$vsha"
    check "store freed: offloaded from a" "$(present a "$SD/$u")" absent

    fill a "$SD"
    faults "$A" unshelve "{\"instance\": $(inst "$u"), \"shelved\": $sh, \"power_on\": false}" \
        "state dir full" "StateTransferFailed retryable"
    check "state dir full: shelved volume kept" "$(hsha a "$(shelved_vol "$u")")" "$vsha"
    nothing_restored a
    unfill a "$SD"
    must "$A" unshelve "{\"instance\": $(inst "$u"), \"shelved\": $sh, \"power_on\": false}" \
        "state dir freed" &&
        check "state dir freed: unshelve restored" "$(rget vtpm_state)" restored
    check "state dir freed: state on a is the state before" "$(hsha a "$(state_file "$u")")" "$S"
    check "state dir freed: shelved volume deleted" "$(present a "$(shelved_vol "$u")")" absent
}

# migrate with the source's kept_dir full, then the destination's incoming
# pool full, then finish_migration into a full state dir.
case_migrate_full() {
    local x xsha
    instance_on_a || return
    note "disk full: migrate / finish_migration, instance $u"

    fill a "$KEPT"
    faults "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u"), \"dest_host\": \"$B\"}" \
        "kept_dir full" "StateTransferFailed retryable"
    check "kept_dir full: domain still on a" "$(domstate a "$u")" "shut off"
    check "kept_dir full: state unchanged" "$(hsha a "$(state_file "$u")")" "$S"
    check "kept_dir full: no kept copy" "$(present a "$(kept_copy "$u")")" absent
    check "kept_dir full: nothing sent to b" "$(present b "$(incoming_vol "$u")")" absent
    check "kept_dir full: nothing half-written" "$(leftovers a)" ""
    unfill a "$KEPT"

    fill b "$POOLS"
    faults "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u"), \"dest_host\": \"$B\"}" \
        "incoming pool full" "StateTransferFailed retryable"
    check "incoming pool full: domain still on a" "$(domstate a "$u")" "shut off"
    check "incoming pool full: state unchanged" "$(hsha a "$(state_file "$u")")" "$S"
    check "incoming pool full: no partial volume on b" "$(present b "$(incoming_vol "$u")")" absent
    check "incoming pool full: nothing half-written on b" "$(leftovers b)" ""
    unfill b "$POOLS"

    must "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u"), \"dest_host\": \"$B\"}" \
        "space freed" || return
    x=$(rget vtpm_transfer)
    xsha=$(rget vtpm_transfer.sha256)
    check "space freed: incoming volume is the reply's" "$(hsha b "$(incoming_vol "$u")")" "$xsha"

    fill b "$SD"
    faults "$B" finish_migration "{\"instance\": $(inst "$u"), \"old_flavor\": $flavor, \"power_on\": false, \"vtpm_transfer\": $x}" \
        "state dir full" "StateTransferFailed retryable"
    check "state dir full: incoming volume kept" "$(hsha b "$(incoming_vol "$u")")" "$xsha"
    nothing_restored b
    check "state dir full: source untouched" "$(hsha a "$(state_file "$u")")" "$S"
    unfill b "$SD"
    must "$B" finish_migration "{\"instance\": $(inst "$u"), \"old_flavor\": $flavor, \"power_on\": false, \"vtpm_transfer\": $x}" \
        "state dir freed" &&
        check "state dir freed: finish_migration restored" "$(rget vtpm_state)" restored
    check "state dir freed: state on b is the state before" "$(hsha b "$(state_file "$u")")" "$S"
    must "$A" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}" "state dir freed"
    destroy "$B" "$u"
    u=
}

# spawn (the first start manufactures the TPM) into a full state dir.
case_spawn_full() {
    local v
    v=$(uuid)
    note "disk full: spawn, instance $v"
    fill a "$SD"
    faults "$A" spawn "{\"instance\": $(inst "$v")}" "state dir full" "HypervisorError retryable"
    check "state dir full: no domain left" "$(domstate a "$v")" ""
    check "state dir full: no state dir left" "$(present a "$SD/$v")" absent
    unfill a "$SD"
    must "$A" spawn "{\"instance\": $(inst "$v")}" "state dir freed" &&
        check "state dir freed: running" "$(domstate a "$v")" running
    check "state dir freed: state made" "$(present a "$(state_file "$v")")" present
    # Handed on to the next cases when none is.
    if [ -z "$u" ] && must "$A" power_off "{\"instance\": {\"uuid\": \"$v\"}}" "state dir freed"; then
        u=$v
        S=$(hsha a "$(state_file "$u")")
    else
        destroy "$A" "$v"
    fi
}

# ---- 2. a swtpm that fails to start ------------------------------------------------------

# power_on with a state file swtpm (user tss) cannot read, then one it
# cannot load (truncated): the fault names the failed start, the domain
# stays defined and shut off, vtpmd neither deletes nor replaces the state.
case_swtpm_fails() {
    local sf T
    instance_on_a || return
    sf=$(state_file "$u")
    note "swtpm fails to start: power_on, instance $u"

    hx a chmod 000 "$sf"
    faults "$A" power_on "{\"instance\": {\"uuid\": \"$u\"}}" "unreadable state" \
        "HypervisorError retryable"
    check "unreadable state: domain defined, shut off" "$(domstate a "$u")" "shut off"
    check "unreadable state: state unchanged" "$(hsha a "$sf")" "$S"
    hx a chmod 600 "$sf"
    must "$A" power_on "{\"instance\": {\"uuid\": \"$u\"}}" "readable again" &&
        check "readable again: running" "$(domstate a "$u")" running
    must "$A" power_off "{\"instance\": {\"uuid\": \"$u\"}}" "readable again"

    # Kept aside, then cut in half: libtpms refuses to load it.
    hx a cp -p "$sf" "$VT_ROOT/faults-$u.permall"
    hx a truncate -s 1000 "$sf"
    T=$(hsha a "$sf")
    faults "$A" power_on "{\"instance\": {\"uuid\": \"$u\"}}" "corrupt state" \
        "HypervisorError retryable"
    check "corrupt state: domain defined, shut off" "$(domstate a "$u")" "shut off"
    check "corrupt state: the state is left as it is (not replaced by a fresh TPM)" \
        "$(hsha a "$sf")" "$T"
    hx a cp -p "$VT_ROOT/faults-$u.permall" "$sf"
    must "$A" power_on "{\"instance\": {\"uuid\": \"$u\"}}" "state put back" &&
        check "state put back: running" "$(domstate a "$u")" running
    must "$A" power_off "{\"instance\": {\"uuid\": \"$u\"}}" "state put back"
    S=$(hsha a "$sf")
}

# finish_migration of a state swtpm cannot load: the destination faults with
# the domain defined and the restored state in place, the transfer volume
# kept; the revert on the source brings the instance back from its kept copy.
case_swtpm_fails_finish() {
    local T x xsha
    instance_on_a || return
    note "swtpm fails to start: finish_migration, instance $u"
    hx a cp -p "$(state_file "$u")" "$VT_ROOT/faults-$u.permall"
    hx a truncate -s 1000 "$(state_file "$u")"
    T=$(hsha a "$(state_file "$u")")
    must "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u"), \"dest_host\": \"$B\"}" \
        "setup" || return
    x=$(rget vtpm_transfer)
    xsha=$(rget vtpm_transfer.sha256)
    faults "$B" finish_migration "{\"instance\": $(inst "$u"), \"old_flavor\": $flavor, \"power_on\": true, \"vtpm_transfer\": $x}" \
        "swtpm fails" "HypervisorError retryable"
    check "swtpm fails: domain on b defined, shut off" "$(domstate b "$u")" "shut off"
    check "swtpm fails: restored state on b is the one sent" "$(hsha b "$(state_file "$u")")" "$T"
    check "swtpm fails: incoming volume kept" "$(hsha b "$(incoming_vol "$u")")" "$xsha"
    check "swtpm fails: kept copy on a" "$(hsha a "$(kept_copy "$u")")" "$xsha"
    must "$B" destroy "{\"instance\": {\"uuid\": \"$u\"}}" "revert"
    must "$A" finish_revert_migration "{\"instance\": $(inst "$u"), \"power_on\": false}" "revert"
    check "revert: state on a is the state before" "$(hsha a "$(state_file "$u")")" "$T"
    check "revert: domain on a shut off" "$(domstate a "$u")" "shut off"
    check "revert: kept copy gone" "$(present a "$(kept_copy "$u")")" absent
    # The good state back for the next case.
    hx a cp -p "$VT_ROOT/faults-$u.permall" "$(state_file "$u")"
}

# ---- 3. an unreachable destination ---------------------------------------------------------

# migrate_disk_and_power_off to a name that does not resolve, then to host b
# with its libvirtd killed (its address answers, nothing listens): each
# faults, the source keeps the guest, its state and its kept copy, and the
# revert restores it.  Last: b's libvirtd comes back in a new mount
# namespace (without the tmpfs).
case_dest_unreachable() {
    local dest what
    instance_on_a || return
    note "unreachable destination: instance $u"
    kill -9 "$(vt_host_pid b)"
    for dest in no-such-host.invalid "$B"; do
        [ "$dest" = "$B" ] && what="destination libvirtd down" || what="unresolvable destination"
        faults "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u"), \"dest_host\": \"$dest\"}" \
            "$what" "StateTransferFailed retryable"
        check "$what: domain still on a" "$(domstate a "$u")" "shut off"
        check "$what: state unchanged" "$(hsha a "$(state_file "$u")")" "$S"
        check "$what: kept copy on a" "$(present a "$(kept_copy "$u")")" present
        must "$A" finish_revert_migration "{\"instance\": $(inst "$u"), \"power_on\": false}" \
            "$what: revert"
        check "$what: revert: state is the state before" "$(hsha a "$(state_file "$u")")" "$S"
        check "$what: revert: kept copy gone" "$(present a "$(kept_copy "$u")")" absent
    done
    must "$A" power_on "{\"instance\": {\"uuid\": \"$u\"}}" "after the reverts" &&
        check "after the reverts: running" "$(domstate a "$u")" running
    destroy "$A" "$u"
    u=
    vt_host_restart_libvirtd b > /dev/null 2>&1
}

# ---- run ---------------------------------------------------------------------------------

start_hosts
if ! small_disks a || ! small_disks b; then
    nok "tmpfs of $SMALL for $SD, $POOLS and $KEPT in both hosts"
    finish
fi
for c in shelve_full migrate_full spawn_full swtpm_fails swtpm_fails_finish dest_unreachable; do
    want "$c" && "case_$c"
done
finish
