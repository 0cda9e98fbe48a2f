#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a real guest finds the vTPM vtpmd gives it.
#
# Run under tests/integration.sh (one host "a"):
#   integration.sh tests/acceptance/test_guest_probe.sh VTPMCTL VTPMD
#
# Builds (or takes from its cache) the test guest of tests/guest/build-guest.sh,
# starts vtpmd in host a and, through `vtpmctl call` only, for TPM 2.0/TIS,
# 2.0/CRB and 1.2/TIS (encrypted, user mode): spawns a guest that reports which driver bound, the
# TPM's major version and its device nodes (and, for 2.0, that the TPM
# answers TPM2_GetRandom), checks them and destroys the instance.  What the
# TPM keeps through the instance's life is test_guest_lifecycle.sh's part.
# Boots run one after another (QEMU/TCG; ~10 s each, up to ~35 s when the
# machine is loaded).  Prints "ok - " / "not ok - " lines and a final
# "N passed, M failed"; exits 1 on any failure.
#
# Environment: VTPM_GUEST_CACHE (default /var/cache/vtpmd-test-guest) is where
# the guest is built and cached; VT_BOOT_TIMEOUT (default 120) seconds a boot
# may take from start to "shut off".
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")/.." && pwd)
for v in VT_ROOT VT_AMQP_URL VT_HOST_A_ROOT; do
    [ -n "${!v:-}" ] || { echo "$v is not set: run this under tests/integration.sh" >&2; exit 2; }
done
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=guest.sh
source "$tests/acceptance/guest.sh"
export VTPM_AMQP_URL=$VT_AMQP_URL

guest_build a
start_vtpmd a compute-a

instance() { # UUID VERSION MODEL
    cat <<JSON
{"instance": {"uuid": "$1", "name": "guest-probe",
  "flavor": {"name": "m1.tpm", "vcpus": 1, "memory_mb": 256,
             "extra_specs": {"hw:tpm_version": "$2", "hw:tpm_model": "$3"}},
  "image": {"id": "vtpm-test-guest", "name": "vtpm-test-guest", "properties": {}},
  "vtpm": $(vtpm_user_secret),
  "boot": {"kernel": "$images/vmlinuz", "initrd": "$images/initrd.img",
           "cmdline": "console=ttyS0 vtpm.script=probe"}}}
JSON
}

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
    if ! call compute-a spawn "$(instance "$uuid" "$ver" "$model")"; then
        nok "$label: spawn: $reply"
        continue
    fi
    ok "$label: spawn ($(secs "$call_ms") s)"
    if boot_and_read a "$uuid" "$label"; then
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
    if call compute-a destroy "{\"instance\": {\"uuid\": \"$uuid\"}}"; then
        ok "$label: destroy"
    else
        nok "$label: destroy: $reply"
    fi
done

finish
