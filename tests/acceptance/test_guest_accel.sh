#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: guests come up on a machine whose /dev/kvm cannot run them,
# and on one without /dev/kvm.  Run under tests/integration.sh with
# --kvm fake (host a's /dev/kvm is /dev/null and its CPU claims vmx: a
# device that opens but is no KVM) or --kvm hide (no /dev/kvm):
#   integration.sh --kvm fake tests/acceptance/test_guest_accel.sh VTPMCTL VTPMD
#
# Checks, through the documented interfaces only: the suites' probe
# (tests/guest/probe-accel.sh) chooses TCG and honours VTPM_TEST_VIRT_TYPE;
# vtpmd with [libvirt] virt_type = auto chooses qemu and says why on its
# start-up line and in get_capabilities; a TPM 2.0 guest it spawns boots
# under TCG and finds its TPM; and a guest that never comes up fails within
# VT_BOOT_TIMEOUT with its console, its QEMU log and its accelerator shown.
# (The machine's own /dev/kvm — working, absent, or present and unable to
# boot, as on this project's CI machines — is what every other guest suite
# runs with.)
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh --kvm fake|hide $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")/.." && pwd)
for v in VT_ROOT VT_AMQP_URL VT_HOST_A_ROOT VT_KVM; do
    [ -n "${!v:-}" ] || { echo "$v is not set: run this under tests/integration.sh --kvm fake|hide" >&2; exit 2; }
done
# shellcheck source=../lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=guest.sh
source "$tests/acceptance/guest.sh"
export VTPM_AMQP_URL=$VT_AMQP_URL

case $VT_KVM in
    fake) vtpmd_why="auto: /dev/kvm present, not a KVM device (KVM_GET_API_VERSION: Inappropriate ioctl for device)" ;;
    hide) vtpmd_why="auto: no /dev/kvm" ;;
esac

# ---- the suites' probe ----------------------------------------------------------------

guest_build a
check "the probe chose TCG for /dev/kvm=$VT_KVM" "$guest_virt_type" qemu
probe() { vt_host_exec a env "$@" "$tests/guest/probe-accel.sh" "$guest_cache" 2>&1; }
out=$(probe VTPM_TEST_VIRT_TYPE=kvm)
check "VTPM_TEST_VIRT_TYPE=kvm is taken without a probe" "$out" \
    "accelerator: kvm (VTPM_TEST_VIRT_TYPE)
kvm"
out=$(probe VTPM_TEST_VIRT_TYPE=xen)
check "VTPM_TEST_VIRT_TYPE=xen is refused, naming it" \
    "$(grep -c "VTPM_TEST_VIRT_TYPE must be kvm or qemu, got 'xen'" <<< "$out")" 1

# ---- vtpmd's own choice ---------------------------------------------------------------

start_vtpmd a compute-a libvirt.virt_type=auto
check "vtpmd's start-up line says virt_type=qemu and why" \
    "$(grep -c -F "virt_type=qemu ($vtpmd_why)" "${vtpmd_log[a]}")" 1
call compute-a get_capabilities '{}'
check "get_capabilities: virt_type" "$(rget virt_type)" qemu
check "get_capabilities: virt_type_reason" "$(rget virt_type_reason)" "$vtpmd_why"

instance() { # UUID CMDLINE
    cat <<JSON
{"instance": {"uuid": "$1", "name": "guest-accel",
  "flavor": {"name": "m1.tpm", "vcpus": 1, "memory_mb": 256,
             "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"}},
  "image": {"id": "vtpm-test-guest", "name": "vtpm-test-guest", "properties": {}},
  "vtpm": $(vtpm_user_secret),
  "boot": {"kernel": "$images/vmlinuz", "initrd": "$images/initrd.img", "cmdline": "$2"}}}
JSON
}
destroy() {
    if call compute-a destroy "{\"instance\": {\"uuid\": \"$1\"}}"; then ok "$2: destroy"
    else nok "$2: destroy: $reply"; fi
}

uuid=$(cat /proc/sys/kernel/random/uuid)
if call compute-a spawn "$(instance "$uuid" "console=ttyS0 vtpm.script=probe")"; then
    ok "spawn a TPM 2.0/CRB guest ($(secs "$call_ms") s)"
    check "its domain type" "$(virsh -q -c "$(vt_host_uri a)" dumpxml "instance-$uuid" |
        sed -n "s/^<domain type='\([a-z]*\)'.*/\1/p")" qemu
    if boot_and_read a "$uuid" "TCG guest"; then
        check "TCG guest: tpm_crb bound" "$(get driver <<< "$res")" tpm_crb
        check "TCG guest: TPM 2.0" "$(get version_major <<< "$res")" 2
    fi
    destroy "$uuid" "TCG guest"
else
    nok "spawn a TPM 2.0/CRB guest: $reply"
fi

# ---- a guest that never comes up ------------------------------------------------------

# Once is enough, and in the cheaper mode: with a fake /dev/kvm libvirt
# probes QEMU again on every lookup (~30 s a spawn on 2 CPUs).
[ "$VT_KVM" = hide ] || finish

# No init (rdinit= fails, then init= fails): the kernel panics and waits
# forever.  The wait must end at
# VT_BOOT_TIMEOUT and show what there is to see.
uuid=$(cat /proc/sys/kernel/random/uuid)
if call compute-a spawn "$(instance "$uuid" "console=ttyS0 rdinit=/no-such-init init=/no-such-init")"; then
    # The panic first (how long the kernel takes to get there depends on
    # the machine's load), then the wait that must give up.
    for _ in $(seq 1 $((boot_timeout * 2))); do
        grep -q 'Kernel panic' "$(console_log a "$uuid")" 2>/dev/null && break
        sleep 0.5
    done
    t0=$(now_ms)
    out=$(boot_timeout=15 boot_and_read a "$uuid" "hung guest")
    rc=$?
    waited=$(( ($(now_ms) - t0) / 1000 ))
    check "a hung guest fails its check" "$rc:$(grep -c '^not ok - hung guest: guest powered off within 15 s' <<< "$out")" 1:1
    check "... after the boot timeout, not much later ($waited s: 15 to 45)" \
        "$([ "$waited" -ge 15 ] && [ "$waited" -le 45 ] && echo yes)" yes
    check "... showing the accelerator it ran on" \
        "$(grep -c "ran on: qemu (chosen: qemu)" <<< "$out")" 1
    check "... and its console (the kernel's panic)" \
        "$(grep -q '#   | .*Kernel panic' <<< "$out" && echo shown)" shown
    # The end of QEMU's command line in its log: the TPM device.
    check "... and its QEMU log" "$(grep -q -- '#   | -tpmdev emulator' <<< "$out" && echo shown)" shown
    [ "$failed" -eq 0 ] || sed 's/^/#     /' <<< "$out"
    destroy "$uuid" "hung guest"
else
    nok "spawn a guest without init: $reply"
fi

finish
