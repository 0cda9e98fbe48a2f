#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a UEFI guest with Secure Boot keeps its EFI variables and its
# measured boot (PCR 7) through every operation of its life, in every
# custody mode, asked of the guest itself.
#
# Run under tests/integration.sh with two hosts on a network:
#   integration.sh --net --hosts 2 tests/acceptance/test_guest_uefi.sh VTPMCTL VTPMD
#
# Both vtpmds pin Debian's snakeoil test pair for Secure Boot guests
# ([libvirt] uefi_loader = OVMF_CODE_4M.snakeoil.fd, uefi_nvram_template =
# OVMF_VARS_4M.snakeoil.fd, docs/operations.md): q35, SMM, a secure pflash
# loader and a per-instance copy of the key store, which lives in the
# instance's state dir and moves with the TPM state.  The test guest boots
# directly (kernel + initrd) under OVMF with the "uefi" script
# (tests/guest/build-guest.sh): it reads SecureBoot from efivarfs, writes a
# random non-volatile EFI variable on its first boot and reads it back on
# every later one, reads PCR 7 and the sha256 of the firmware's event log,
# and keeps an NV secret in its TPM.  The suite checks that the variable,
# PCR 7, the event log and the TPM secret are the same after
#   user custody:       power_off/power_on; cold migration a -> b;
#                       migration b -> a reverted; shelve on b, unshelve on
#                       a; rebuild with a new image (same firmware)
#   host custody:       cold migration a -> b
#   deployment custody: shelve on b, unshelve on a
# so that every operation runs once and every custody mode at least once
# (UEFI boots take ~15-25 s under TCG), and that destroy leaves no store.
# Then that Secure Boot is enforced: disk boots of one kernel unsigned,
# with Debian's signature and with the snakeoil db key's; only the last
# starts.
# The firmware's event log (its sha256) must be the first boot's too: both
# hosts run the same pinned firmware and keys, and the guest boots the same
# kernel, so every measurement repeats.  (PCR 7 alone would also repeat
# with a fresh store made from the same template: the guest's own variable
# is what shows that its store travelled.)
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

CODE=/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd
VARS=/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd
for f in "$CODE" "$VARS"; do
    [ -r "$f" ] || { nok "$f is readable (apt-get install ovmf)"; finish; }
done

guest_build a b
guest_second_image a b
start_two_hosts "libvirt.uefi_loader=$CODE" "libvirt.uefi_nvram_template=$VARS"
for h in a b; do
    call "$([ $h = a ] && echo "$A" || echo "$B")" get_capabilities '{}'
    check "host $h offers COMPUTE_SECURITY_UEFI_SECURE_BOOT with the snakeoil pair pinned" \
        "$(rget traits | grep -o COMPUTE_SECURITY_UEFI_SECURE_BOOT)" COMPUTE_SECURITY_UEFI_SECURE_BOOT
done

# ---- specs ------------------------------------------------------------------------

flavor() { # NAME MODE
    printf '{"name": "%s", "vcpus": 1, "memory_mb": 256, "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_secret_security": "%s"}}' \
        "$1" "$2"
}
image() { # ID KERNEL INITRD
    printf '{"id": "%s", "name": "%s", "properties": {"hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_tpm_model": "tpm-crb"}}\t{"kernel": "%s/%s", "initrd": "%s/%s", "cmdline": "console=ttyS0 vtpm.script=uefi"}' \
        "$1" "$1" "$images" "$2" "$images" "$3"
}
I_UEFI=$(image uefi-1 vmlinuz initrd.img)
I_UEFI_NEW=$(image uefi-2 vmlinuz-2 initrd-2.img)

# inst UUID MODE FLAVOR IMAGE: the instance spec (the passphrase in user mode).
inst() {
    local img=${4%%$'\t'*} boot=${4#*$'\t'} member=
    [ "$2" = user ] && member=", \"vtpm\": $(vtpm_user_secret)"
    printf '{"uuid": "%s", "name": "uefi-%s", "flavor": %s, "image": %s, "boot": %s%s}' \
        "$1" "${1:0:8}" "$3" "$img" "$boot" "$member"
}
inst_id() { # UUID MODE
    local member=
    [ "$2" = user ] && member=", \"vtpm\": $(vtpm_user_secret)"
    printf '{"uuid": "%s"%s}' "$1" "$member"
}

op() { # LABEL WORKER METHOD ARGS
    if call "$2" "$3" "$4"; then
        ok "$1: $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$1: $3 on host ${host_of[$2]}: $reply"
    return 1
}
expect_field() { check "$1: result.$2" "$(rget "$2")" "$3"; }
state_dir() { echo "$(vt_host_root "$1")/var/lib/libvirt/swtpm/$2"; }

# ---- the guest's view ---------------------------------------------------------------

declare -A var=() pcr7=() secret=() evlog=()

# uefi_first HOST UUID LABEL: the first boot: Secure Boot on, a variable
# and a TPM secret written; remembered for the instance.
uefi_first() {
    boot_and_read "$1" "$2" "$3" || return 1
    check "$3: booted by UEFI" "$(get efi <<< "$res")" yes
    check "$3: SecureBoot = 1 (efivarfs)" "$(get secure_boot <<< "$res")" 01
    check "$3: not in setup mode (keys enrolled)" "$(get setup_mode <<< "$res")" 00
    check "$3: wrote its EFI variable" "$(get efivar_written <<< "$res")" yes
    check "$3: wrote its TPM secret" "$(get persist <<< "$res")" writing
    var[$2]=$(get efivar <<< "$res")
    pcr7[$2]=$(get pcr7 <<< "$res")
    secret[$2]=$(get written_nv_secret <<< "$res")
    evlog[$2]=$(get eventlog_sha256 <<< "$res")
    if [[ ${var[$2]} =~ ^[0-9a-f]{32}$ && ${pcr7[$2]} =~ ^[0-9A-Fa-f]{64}$ &&
          ${evlog[$2]} =~ ^[0-9a-f]{64}$ ]]; then
        ok "$3: variable ${var[$2]:0:12}..., PCR 7 ${pcr7[$2]:0:12}..., event log $(get eventlog_sha256 <<< "$res" | cut -c1-12)... ($(get eventlog_bytes <<< "$res") bytes)"
    else
        nok "$3: a 16-byte variable, PCR 7 and an event log (got '${var[$2]}', '${pcr7[$2]}', '${evlog[$2]}')"
        return 1
    fi
}

# uefi_same HOST UUID LABEL: the guest reads back what its first boot wrote,
# and PCR 7 is what it was.
uefi_same() {
    boot_and_read "$1" "$2" "$3" || return 1
    check "$3: SecureBoot = 1" "$(get secure_boot <<< "$res")" 01
    check "$3: the EFI variable is the one written on the first boot" "$(get efivar <<< "$res")" "${var[$2]}"
    check "$3: nothing to rewrite" "$(get efivar_written <<< "$res")" no
    check "$3: PCR 7 is the same" "$(get pcr7 <<< "$res")" "${pcr7[$2]}"
    check "$3: the TPM kept its NV secret" "$(get nv_secret <<< "$res")" "${secret[$2]}"
    check "$3: the firmware's event log is the first boot's" "$(get eventlog_sha256 <<< "$res")" "${evlog[$2]}"
}

# The store is in the state dir, next to the TPM state; gone with it.
store_at() { # HOST UUID LABEL
    check "$3: the variable store is in the state dir on host $1" \
        "$(test -f "$(state_dir "$1" "$2")/nvram.fd" && echo present || echo gone)" present
}
nothing_left() { # UUID LABEL
    local x
    for x in a b; do
        check "$2: no domain on host $x" "$(domstate "$x" "$1")" ""
        check "$2: no state dir (nor store) on host $x" \
            "$(test -e "$(state_dir "$x" "$1")" && echo present || echo gone)" gone
        check "$2: no store of libvirt's on host $x" \
            "$(find "$(vt_host_root "$x")/var/lib/libvirt/qemu/nvram" -name "*$1*" 2>/dev/null | wc -l)" 0
    done
}

# ---- user custody: every operation --------------------------------------------------------

U=$(cat /proc/sys/kernel/random/uuid)
F_U=$(flavor m1.uefi user)
note "instance $U: UEFI + Secure Boot, TPM 2.0 CRB, custody user"

label="spawn"
op "$label" "$A" spawn "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI")}" || finish
expect_field "$label" firmware.type uefi
expect_field "$label" firmware.secure_boot true
xml=$(virsh -q -c "$(vt_host_uri a)" dumpxml "instance-$U" 2>/dev/null)
check "$label: the domain runs the pinned snakeoil loader, with SMM" \
    "$(grep -c -e "$CODE" -e "<smm state='on'/>" <<< "$xml")" 2
uefi_first a "$U" "$label" || finish
store_at a "$U" "$label"

label="power cycle"
op "$label" "$A" power_off "{\"instance\": {\"uuid\": \"$U\"}}" &&
    op "$label" "$A" power_on "{\"instance\": $(inst_id "$U" user)}" && uefi_same a "$U" "$label"

label="cold migration a -> b"
if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"dest_host\": \"$B\"}"; then
    xfer=$(rget vtpm_transfer)
    if op "$label" "$B" finish_migration "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"old_flavor\": $F_U, \"vtpm_transfer\": $xfer}"; then
        expect_field "$label" vtpm_state restored
        expect_field "$label" nvram_state restored
        uefi_same b "$U" "$label"
    fi
    op "$label" "$A" confirm_migration "{\"instance\": {\"uuid\": \"$U\"}}"
    check "$label: no state (nor store) left on host a" \
        "$(test -e "$(state_dir a "$U")" && echo present || echo gone)" gone
fi

label="migration b -> a, reverted"
if op "$label" "$B" migrate_disk_and_power_off "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"dest_host\": \"$A\"}"; then
    xfer=$(rget vtpm_transfer)
    op "$label" "$A" finish_migration "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"old_flavor\": $F_U, \"power_on\": false, \"vtpm_transfer\": $xfer}" &&
        expect_field "$label" nvram_state restored
    op "$label" "$A" destroy "{\"instance\": {\"uuid\": \"$U\"}}" && expect_field "$label" nvram_state deleted
    if op "$label" "$B" finish_revert_migration "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI")}"; then
        expect_field "$label" nvram_state restored
        uefi_same b "$U" "$label"
    fi
fi

label="shelve on b, unshelve on a"
if op "$label" "$B" shelve "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"offload\": true}"; then
    shelved=$(rget shelved)
    check "$label: the shelved archive holds the TPM state and the variable store" \
        "$(tar -tf "$(vt_host_root a)/var/lib/vtpmd/pools/vtpm-shelved/$U.vtpm.tar" 2>/dev/null | grep -c -e '^nvram.fd$' -e '^tpm2/tpm2-00.permall$')" 2
    if op "$label" "$A" unshelve "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI"), \"shelved\": $shelved}"; then
        expect_field "$label" nvram_state restored
        uefi_same a "$U" "$label"
    fi
fi

label="rebuild with a new image, same firmware"
if op "$label" "$A" rebuild "{\"instance\": $(inst "$U" user "$F_U" "$I_UEFI_NEW")}"; then
    expect_field "$label" vtpm_state kept
    expect_field "$label" nvram_state kept
    uefi_same a "$U" "$label"
fi

label="destroy"
op "$label" "$A" destroy "{\"instance\": {\"uuid\": \"$U\"}}" && expect_field "$label" nvram_state deleted
nothing_left "$U" "$label"

# ---- host custody: a cold migration --------------------------------------------------------

H=$(cat /proc/sys/kernel/random/uuid)
F_H=$(flavor m1.uefi.host host)
note "instance $H: the same, custody host"
label="host custody: spawn"
if op "$label" "$A" spawn "{\"instance\": $(inst "$H" host "$F_H" "$I_UEFI")}" && uefi_first a "$H" "$label"; then
    label="host custody: cold migration a -> b"
    if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$H" host "$F_H" "$I_UEFI"), \"dest_host\": \"$B\"}"; then
        xfer=$(rget vtpm_transfer)
        op "$label" "$B" finish_migration "{\"instance\": $(inst "$H" host "$F_H" "$I_UEFI"), \"old_flavor\": $F_H, \"vtpm_transfer\": $xfer}" &&
            uefi_same b "$H" "$label"
        op "$label" "$A" confirm_migration "{\"instance\": {\"uuid\": \"$H\"}}"
    fi
fi
op "host custody: destroy" "$B" destroy "{\"instance\": {\"uuid\": \"$H\"}}"
nothing_left "$H" "host custody: destroy"

# ---- deployment custody: shelve and unshelve elsewhere ---------------------------------------

D=$(cat /proc/sys/kernel/random/uuid)
F_D=$(flavor m1.uefi.deployment deployment)
note "instance $D: the same, custody deployment"
label="deployment custody: spawn"
if op "$label" "$B" spawn "{\"instance\": $(inst "$D" deployment "$F_D" "$I_UEFI")}" && uefi_first b "$D" "$label"; then
    label="deployment custody: shelve on b, unshelve on a"
    if op "$label" "$B" shelve "{\"instance\": $(inst "$D" deployment "$F_D" "$I_UEFI"), \"offload\": true}"; then
        shelved=$(rget shelved)
        op "$label" "$A" unshelve "{\"instance\": $(inst "$D" deployment "$F_D" "$I_UEFI"), \"shelved\": $shelved}" &&
            uefi_same a "$D" "$label"
    fi
fi
op "deployment custody: destroy" "$A" destroy "{\"instance\": {\"uuid\": \"$D\"}}"
nothing_left "$D" "deployment custody: destroy"


# ---- Secure Boot is enforced -----------------------------------------------------------------
#
# The guest above boots its kernel directly, which this OVMF does not
# verify (notes of the environment; docs/security.md).  A disk boot goes
# through the firmware's boot manager, which checks the image against db:
# one FAT disk (no partition table; the boot manager finds
# \EFI\BOOT\BOOTX64.EFI on it) per variant of the same kernel — its
# signatures removed, Debian's own signature (a key not in the snakeoil
# db), and signed with the snakeoil db key.  The first two must be refused
# (the boot manager's "Access Denied" on the serial console, and never the
# kernel's EFI stub), the last must start (its EFI stub says Secure Boot is
# on).  The same bytes but for the signature: what decides is Secure Boot.

sb=$VT_ROOT/secure-boot
mkdir -p "$sb"
esp() { # EFI-BINARY IMAGE
    rm -f "$2"
    mkfs.vfat -C "$2" 32768 > /dev/null && mmd -i "$2" ::/EFI ::/EFI/BOOT &&
        mcopy -i "$2" "$1" ::/EFI/BOOT/BOOTX64.EFI
}
if openssl rsa -in /usr/share/ovmf/PkKek-1-snakeoil.key -passin pass:snakeoil \
       -out "$sb/db.key" 2> "$sb/err" &&
   cp "$guest_cache/vmlinuz" "$sb/debian.efi" && cp "$guest_cache/vmlinuz" "$sb/unsigned.efi" &&
   sbattach --remove "$sb/unsigned.efi" 2>> "$sb/err" &&
   sbsign --key "$sb/db.key" --cert /usr/share/ovmf/PkKek-1-snakeoil.pem \
       --output "$sb/snakeoil.efi" "$sb/unsigned.efi" 2>> "$sb/err" &&
   esp "$sb/unsigned.efi" "$(vt_host_root a)$images/esp-unsigned.img" 2>> "$sb/err" &&
   esp "$sb/debian.efi" "$(vt_host_root a)$images/esp-debian.img" 2>> "$sb/err" &&
   esp "$sb/snakeoil.efi" "$(vt_host_root b)$images/esp-snakeoil.img" 2>> "$sb/err"; then
    ok "secure boot: three boot disks of one kernel: unsigned, Debian's signature, the snakeoil db key's"
else
    nok "secure boot: make the boot disks (openssl, sbattach, sbsign, mkfs.vfat, mtools)"
    sed 's/^/#   /' "$sb/err"
    finish
fi

# console_wait HOST UUID ERE: a line of the guest's console matches
# within the boot timeout.
console_wait() {
    local end=$((SECONDS + boot_timeout))
    while [ "$SECONDS" -lt "$end" ]; do
        tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null | grep -aqE "$3" && return 0
        sleep 1
    done
    return 1
}
console_has() { tr -d '\r' < "$(console_log "$1" "$2")" 2>/dev/null | grep -acE "$3"; }
disk_image() { # VARIANT HOST-LETTER
    printf '{"id": "esp-%s", "name": "esp-%s", "properties": {"hw_firmware_type": "uefi", "os_secure_boot": "required"}}\t{"disk": "%s/esp-%s.img"}' \
        "$1" "$1" "$images" "$1"
}

declare -A sb_uuid=() sb_host=([unsigned]=a [debian]=a [snakeoil]=b)
F_SB=$(flavor m1.uefi.sb user)
for v in unsigned debian snakeoil; do
    sb_uuid[$v]=$(cat /proc/sys/kernel/random/uuid)
    w=$([ "${sb_host[$v]}" = a ] && echo "$A" || echo "$B")
    op "secure boot, $v: spawn" "$w" spawn \
        "{\"instance\": $(inst "${sb_uuid[$v]}" user "$F_SB" "$(disk_image "$v")")}" &&
        expect_field "secure boot, $v: spawn" firmware.secure_boot true
done
for v in unsigned debian; do
    u=${sb_uuid[$v]}
    if console_wait a "$u" "BdsDxe: No bootable option"; then
        check "secure boot, $v: the firmware refuses the kernel (Access Denied)" \
            "$(console_has a "$u" "BdsDxe: failed to load Boot[0-9A-F]+ .*: Access Denied")" 1
        check "secure boot, $v: the kernel never ran" "$(console_has a "$u" "EFI stub")" 0
    else
        nok "secure boot, $v: the firmware's boot manager gave up within ${boot_timeout} s"
        show_console a "$u"
    fi
done
u=${sb_uuid[snakeoil]}
if console_wait b "$u" "EFI stub: UEFI Secure Boot is enabled"; then
    ok "secure boot, snakeoil: the firmware starts the kernel signed with its db key; its EFI stub says Secure Boot is enabled"
    check "secure boot, snakeoil: nothing refused" "$(console_has b "$u" "Access Denied")" 0
else
    nok "secure boot, snakeoil: the kernel signed with the db key started within ${boot_timeout} s"
    show_console b "$u"
fi
for v in unsigned debian snakeoil; do
    w=$([ "${sb_host[$v]}" = a ] && echo "$A" || echo "$B")
    op "secure boot, $v: destroy" "$w" destroy "{\"instance\": {\"uuid\": \"${sb_uuid[$v]}\"}}"
    nothing_left "${sb_uuid[$v]}" "secure boot, $v: destroy"
done

finish
