#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a guest's TPM secrets survive every operation of the
# instance's life, asked of the guest's own TPM.
#
# Run under tests/integration.sh with two hosts on a network:
#   integration.sh --net --hosts 2 tests/acceptance/test_guest_lifecycle.sh VTPMCTL VTPMD
#       [--mode user|host|deployment] [--short | --quick]
#
# Through `vtpmctl call` only, against a vtpmd in each of hosts a and b
# (worker host = the host's address; migration and the shelve store over
# qemu+tcp), one TPM 2.0 guest (flavor hw:tpm_version=2.0, image
# hw_tpm_model=tpm-tis) boots the test guest's "life" script after every
# operation: the first boot writes a random NV secret and a persistent
# primary key, every later boot reads them back.  The suite checks that the
# guest reads the same secret and key after
#   power_off/power_on; cold migration a -> b (finish + confirm); resize to
#   a bigger flavor with the same vTPM (b -> a); migration a -> b followed by
#   revert; shelve with offload on a, unshelve on b; rebuild with a new
#   image and the same vTPM config,
# and that the guest sees a fresh TPM (secret gone) after a rebuild to an
# image that changes the model (TIS -> CRB) and, with a second instance,
# after a resize to a flavor with another TPM version (2.0 -> 1.2).
#
# The TPM state is encrypted at rest in every mode (docs/security.md):
# --mode (default user) sets the flavor's hw:tpm_secret_security; in user
# mode every request that starts the TPM carries instance.vtpm.secret, in
# host and deployment mode the hosts hold the key (both vtpmds share one
# deployment key file).  After every step no file on either host (state
# dirs, kept copies, transfer volumes, the shelve store, logs) holds the
# guest's NV secret bytes; after destroy no libvirt secret of the instance
# is left on either host either.
#
# --short (the README demo): spawn, power cycle, migration a -> b, shelve on
# b and unshelve on a, destroy.  --quick: the same without the power cycle
# (what the host and deployment runs do: the user run covers the rest).
#
# Prints "ok - " / "not ok - " lines and "N passed, M failed"; exits 1 on
# any failure.  VTPM_GUEST_CACHE and VT_BOOT_TIMEOUT as in guest.sh.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

usage() {
    echo "usage: integration.sh --net --hosts 2 $0 VTPMCTL VTPMD [--mode user|host|deployment] [--short | --quick]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
shift 2
short= quick= mode=user
while [ $# -gt 0 ]; do
    case $1 in
        --short) short=1 ;;
        --quick) short=1 quick=1 ;;
        --mode) [ $# -ge 2 ] || usage; mode=$2; shift ;;
        *) usage ;;
    esac
    shift
done
case $mode in user | host | deployment) ;; *) usage ;; esac
tests=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=guest.sh
source "$tests/acceptance/guest.sh"
guest_need_two_hosts

guest_build a b
guest_second_image a b
start_two_hosts

# ---- specs ------------------------------------------------------------------------

flavor() { # NAME MEMORY_MB TPM_VERSION
    printf '{"name": "%s", "vcpus": 1, "memory_mb": %s, "extra_specs": {"hw:tpm_version": "%s", "hw:tpm_secret_security": "%s"}}' \
        "$1" "$2" "$3" "$mode"
}
F_TPM=$(flavor m1.tpm 256 2.0)
F_TPM_BIG=$(flavor m1.tpm.big 320 2.0)
F_TPM12=$(flavor m1.tpm12 256 1.2)

image() { # ID KERNEL INITRD [MODEL]
    local props='{}'
    [ -n "${4:-}" ] && props="{\"hw_tpm_model\": \"$4\"}"
    printf '{"id": "%s", "name": "%s", "properties": %s}\t{"kernel": "%s/%s", "initrd": "%s/%s", "cmdline": "console=ttyS0 vtpm.script=life"}' \
        "$1" "$1" "$props" "$images" "$2" "$images" "$3"
}
I_TIS=$(image guest-1 vmlinuz initrd.img tpm-tis)
I_TIS_NEW=$(image guest-2 vmlinuz-2 initrd-2.img tpm-tis)
I_CRB=$(image guest-3 vmlinuz-2 initrd-2.img tpm-crb)
I_PLAIN=$(image guest-plain vmlinuz initrd.img)

inst() { # UUID FLAVOR IMAGE: the instance spec
    local img=${3%%$'\t'*} boot=${3#*$'\t'}
    printf '{"uuid": "%s", "name": "accept-%s", "flavor": %s, "image": %s, "boot": %s%s}' \
        "$1" "${1:0:8}" "$2" "$img" "$boot" "$(vtpm_member)"
}


# ---- steps --------------------------------------------------------------------------

# op LABEL WORKER METHOD ARGS: one call, checked ok; the result in $reply.
op() {
    if call "$2" "$3" "$4"; then
        ok "$1: $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$1: $3 on host ${host_of[$2]}: $reply"
    return 1
}

# expect_field LABEL PATH WANT: a field of the last reply's result.
expect_field() { check "$1: result.$2" "$(rget "$2")" "$3"; }

secret=
keysum=
# guest_same HOST UUID LABEL: the guest on HOST booted and read back the
# secret and key of the first boot, writing nothing.
guest_same() {
    boot_and_read "$1" "$2" "$3" || return 1
    check "$3: guest sees TPM 2.0" "$(get version_major <<< "$res")" 2
    check "$3: guest's TPM kept its NV secret" "$(get nv_secret <<< "$res")" "$secret"
    check "$3: guest's TPM kept its persistent key" "$(get key_pub_sha256 <<< "$res")" "$keysum"
    check "$3: guest had nothing to rewrite" "$(get persist <<< "$res")" kept
    note "$3: guest read NV secret ${secret:0:16}... and key ${keysum:0:16}... back"
    no_plaintext "$3" "$secret"
}

# guest_fresh HOST UUID LABEL: the guest found an empty TPM 2.0 and wrote a
# new secret; it is in $new_secret.
new_secret=
guest_fresh() {
    boot_and_read "$1" "$2" "$3" || return 1
    check "$3: guest finds no NV secret (fresh TPM)" "$(get nv_secret <<< "$res")" none
    check "$3: guest finds no persistent key (fresh TPM)" "$(get key_pub_sha256 <<< "$res")" none
    check "$3: guest wrote a new secret" "$(get written_readback <<< "$res")" match
    new_secret=$(get written_nv_secret <<< "$res")
    no_plaintext "$3" "$new_secret"
}

# holders SECRET_HEX DIR...: the files under DIR... that contain the bytes.
holders() {
    python3 - "$@" <<'PY'
import os, sys
needle = bytes.fromhex(sys.argv[1])
for top in sys.argv[2:]:
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        print(p)
            except OSError:
                pass
PY
}

hosts_trees() { echo "$(vt_host_root a)" "$(vt_host_root b)"; }

# The search must find what is there: a file holding the bytes between
# others is found, the same bytes split across a boundary are not.
probe_dir=$VT_ROOT/search-selftest
mkdir -p "$probe_dir"
marker=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
{ head -c 5000 /dev/urandom
  python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$marker"
  head -c 5000 /dev/urandom; } > "$probe_dir/holds"
check "the byte search finds a planted secret" "$(holders "$marker" "$probe_dir" | tr '\n' ' ')" "$probe_dir/holds "

# no_plaintext LABEL SECRET...: no file on either host holds these bytes
# (the state is encrypted at rest wherever it is).
no_plaintext() {
    local label=$1 s left
    shift
    for s in "$@"; do
        [ -n "$s" ] || continue
        # shellcheck disable=SC2046
        left=$(holders "$s" $(hosts_trees) | tr '\n' ' ')
        check "$label: no file on either host holds secret ${s:0:16}... in plaintext" "$left" ""
    done
}

# libvirt_secrets HOST: the libvirt secrets' usage ids on the host.
libvirt_secrets() { virsh -q -c "$(vt_host_uri "$1")" secret-list 2>/dev/null | tr -s ' ' | tr '\n' ' '; }
state_dir() { echo "$(vt_host_root "$1")/var/lib/libvirt/swtpm/$2"; }

# ---- instance 1: one TPM 2.0 guest through its life -----------------------------------

U=$(cat /proc/sys/kernel/random/uuid)
note "instance $U: TPM 2.0 (flavor hw:tpm_version=2.0, hw:tpm_secret_security=$mode; image hw_tpm_model=tpm-tis)"

label="spawn"
op "$label" "$A" spawn "{\"instance\": $(inst "$U" "$F_TPM" "$I_TIS")}" || finish
expect_field "$label" vtpm.version 2.0
expect_field "$label" vtpm.model tpm-tis
if boot_and_read a "$U" "$label"; then
    check "$label: guest's driver" "$(get driver <<< "$res")" tpm_tis
    check "$label: guest sees TPM 2.0" "$(get version_major <<< "$res")" 2
    check "$label: guest wrote its secret and key" "$(get persist <<< "$res")" writing
    check "$label: guest read the NV secret back in the same boot" "$(get written_readback <<< "$res")" match
    secret=$(get written_nv_secret <<< "$res")
    keysum=$(get written_key_pub_sha256 <<< "$res")
fi
if ! [[ $secret =~ ^[0-9a-f]{64}$ && $keysum =~ ^[0-9a-f]{64}$ ]]; then
    nok "$label: the guest reported a 32-byte secret and a key hash (got '$secret', '$keysum')"
    finish
fi
note "$label: guest wrote NV secret ${secret:0:16}... at 0x1500016, key ${keysum:0:16}... at 0x81000016"
no_plaintext "$label" "$secret"

if [ -z "$quick" ]; then
    label="power cycle"
    op "$label" "$A" power_off "{\"instance\": {\"uuid\": \"$U\"}}" && expect_field "$label" state shutoff
    op "$label" "$A" power_on "{\"instance\": $(inst_id "$U")}" && guest_same a "$U" "$label"
fi

label="cold migration a -> b"
if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$U" "$F_TPM" "$I_TIS"), \"dest_host\": \"$B\"}"; then
    xfer=$(rget vtpm_transfer)
    note "$label: state archive of $(rget vtpm_transfer.bytes) bytes, sha256 $(rget vtpm_transfer.sha256 | cut -c1-16)..."
    no_plaintext "$label: kept copy on a, transfer volume on b" "$secret"
    if op "$label" "$B" finish_migration "{\"instance\": $(inst "$U" "$F_TPM" "$I_TIS"), \"old_flavor\": $F_TPM, \"vtpm_transfer\": $xfer}"; then
        expect_field "$label" vtpm_state restored
        guest_same b "$U" "$label"
    fi
    op "$label" "$A" confirm_migration "{\"instance\": {\"uuid\": \"$U\"}}" && expect_field "$label" confirmed true
    check "$label: no state left on host a" "$(test -e "$(state_dir a "$U")" && echo present || echo gone)" gone
fi
at=$B

if [ -z "$short" ]; then
    label="resize b -> a (m1.tpm -> m1.tpm.big, same vTPM)"
    if op "$label" "$B" migrate_disk_and_power_off "{\"instance\": $(inst "$U" "$F_TPM" "$I_TIS"), \"dest_host\": \"$A\", \"new_flavor\": $F_TPM_BIG}"; then
        xfer=$(rget vtpm_transfer)
        if op "$label" "$A" finish_migration "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_TIS"), \"old_flavor\": $F_TPM, \"vtpm_transfer\": $xfer}"; then
            expect_field "$label" vtpm_state restored
            guest_same a "$U" "$label"
        fi
        op "$label" "$B" confirm_migration "{\"instance\": {\"uuid\": \"$U\"}}"
    fi

    label="migration a -> b, reverted"
    if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_TIS"), \"dest_host\": \"$B\"}"; then
        xfer=$(rget vtpm_transfer)
        op "$label" "$B" finish_migration "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_TIS"), \"old_flavor\": $F_TPM_BIG, \"power_on\": false, \"vtpm_transfer\": $xfer}" &&
            expect_field "$label" vtpm_state restored
        # Nova's revert: destroy on the destination, then finish on the source.
        op "$label" "$B" destroy "{\"instance\": {\"uuid\": \"$U\"}}"
        check "$label: no state left on host b" "$(test -e "$(state_dir b "$U")" && echo present || echo gone)" gone
        if op "$label" "$A" finish_revert_migration "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_TIS")}"; then
            expect_field "$label" vtpm_state restored
            guest_same a "$U" "$label"
        fi
    fi
    shelver=$A unshelver=$B
else
    shelver=$B unshelver=$A
fi

label="shelve on ${host_of[$shelver]}, unshelve on ${host_of[$unshelver]}"
flv=$F_TPM
[ -z "$short" ] && flv=$F_TPM_BIG
if op "$label" "$shelver" shelve "{\"instance\": $(inst "$U" "$flv" "$I_TIS"), \"offload\": true}"; then
    expect_field "$label" offloaded true
    shelved=$(rget shelved)
    note "$label: shelved as $(rget shelved.ref), $(rget shelved.bytes) bytes"
    no_plaintext "$label: shelve store" "$secret"
    check "$label: no domain left on host ${host_of[$shelver]}" "$(domstate "${host_of[$shelver]}" "$U")" ""
    check "$label: no state left on host ${host_of[$shelver]}" \
        "$(test -e "$(state_dir "${host_of[$shelver]}" "$U")" && echo present || echo gone)" gone
    if op "$label" "$unshelver" unshelve "{\"instance\": $(inst "$U" "$flv" "$I_TIS"), \"shelved\": $shelved}"; then
        expect_field "$label" vtpm_state restored
        guest_same "${host_of[$unshelver]}" "$U" "$label"
    fi
fi
at=$unshelver

if [ -z "$short" ]; then
    label="rebuild with a new image, same vTPM"
    if op "$label" "$at" rebuild "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_TIS_NEW")}"; then
        expect_field "$label" vtpm_state kept
        guest_same "${host_of[$at]}" "$U" "$label"
    fi

    label="rebuild with an image that asks for TPM CRB"
    if op "$label" "$at" rebuild "{\"instance\": $(inst "$U" "$F_TPM_BIG" "$I_CRB")}"; then
        expect_field "$label" vtpm_state replaced
        expect_field "$label" vtpm.model tpm-crb
        if guest_fresh "${host_of[$at]}" "$U" "$label"; then
            check "$label: guest's driver" "$(get driver <<< "$res")" tpm_crb
            if [[ $new_secret =~ ^[0-9a-f]{64}$ ]] && [ "$new_secret" != "$secret" ]; then
                ok "$label: new secret ${new_secret:0:16}..."
            else
                nok "$label: new secret '$new_secret'"
            fi
        fi
    fi
fi

label="destroy"
h=${host_of[$at]}
if op "$label" "$at" destroy "{\"instance\": {\"uuid\": \"$U\"}}"; then
    expect_field "$label" vtpm_state deleted
    for x in a b; do
        check "$label: no domain on host $x" "$(domstate "$x" "$U")" ""
        check "$label: no state dir on host $x" "$(test -e "$(state_dir "$x" "$U")" && echo present || echo gone)" gone
        # Except the rollback record of a host that shelved the instance
        # away: it guards that host against an older archive
        # (docs/security.md, "Rollback: generations").
        left=$(find "$(vt_host_root "$x")/var/lib" -name "*$U*" ! -path "*/kept/generations/*" \
               2>/dev/null | tr '\n' ' ')
        check "$label: no file named after the instance on host $x" "$left" ""
    done
    check "$label: no rollback record on host $h, where it was destroyed" \
        "$(test -e "$(vt_host_root "$h")/var/lib/vtpmd/kept/generations/$U" && echo present || echo gone)" gone
    no_plaintext "$label" "$secret" "$new_secret"
    for x in a b; do
        check "$label: no libvirt secret of the instance on host $x" \
            "$(libvirt_secrets "$x" | grep -o "$U" | head -1)" ""
    done
fi

# ---- instance 2: a resize to another TPM version gives a fresh TPM ---------------------

if [ -z "$short" ]; then
    V=$(cat /proc/sys/kernel/random/uuid)
    label="resize 2.0 -> 1.2"
    note "instance $V: TPM 2.0 (flavor hw:tpm_version=2.0, hw:tpm_secret_security=$mode; image without vTPM properties)"
    if op "$label" "$A" spawn "{\"instance\": $(inst "$V" "$F_TPM" "$I_PLAIN")}" &&
       guest_fresh a "$V" "$label: first boot"; then
        old=$new_secret
        if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$V" "$F_TPM" "$I_PLAIN"), \"dest_host\": \"$A\", \"new_flavor\": $F_TPM12}"; then
            xfer=$(rget vtpm_transfer)
            if op "$label" "$A" finish_migration "{\"instance\": $(inst "$V" "$F_TPM12" "$I_PLAIN"), \"old_flavor\": $F_TPM, \"vtpm_transfer\": $xfer}"; then
                expect_field "$label" vtpm_state fresh
                expect_field "$label" vtpm.version 1.2
                if boot_and_read a "$V" "$label"; then
                    check "$label: guest sees TPM 1.2" "$(get version_major <<< "$res")" 1
                    check "$label: guest's driver" "$(get driver <<< "$res")" tpm_tis
                    check "$label: no TPM 2.0 device (the 2.0 TPM and its secret are gone)" \
                        "$(get dev_tpmrm0 <<< "$res")" no
                fi
                check "$label: host a keeps no TPM 2.0 state" \
                    "$(test -e "$(state_dir a "$V")/tpm2" && echo present || echo gone)" gone
            fi
            op "$label" "$A" confirm_migration "{\"instance\": {\"uuid\": \"$V\"}}"
            no_plaintext "$label" "$old"
        fi
    fi
    op "$label" "$A" destroy "{\"instance\": {\"uuid\": \"$V\"}}"
fi

finish
