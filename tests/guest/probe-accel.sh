#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Which accelerator the test guests can use on this machine: boot the test
# guest of build-guest.sh once under KVM, with a short timeout, and fall
# back to TCG when it does not reach its /init.  A /dev/kvm that exists is
# not proof: under nested virtualization without vmx/svm the device works
# while a Linux guest hangs in its firmware (docs/operations.md).
#
# Usage: probe-accel.sh GUEST_DIR     (GUEST_DIR holds vmlinuz, initrd.img)
# Prints "kvm" or "qemu" on stdout (the domain type to configure) and one
# line on stderr saying which and why.
#
# VTPM_TEST_VIRT_TYPE=kvm|qemu overrides (no probe).  The verdict of a real
# probe is cached per boot of the machine in GUEST_DIR/accel-verdict (a
# reboot may load or unload KVM); VT_KVM (a test host's faked or hidden
# /dev/kvm, tests/lib/env.sh) is never cached, since it is not the
# machine's.  VT_ACCEL_PROBE_TIMEOUT (default 20) bounds the KVM boot:
# under KVM the guest reaches /init in ~1 s.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 GUEST_DIR" >&2; exit 2; }
dir=$1
timeout_s=${VT_ACCEL_PROBE_TIMEOUT:-20}
cache=$dir/accel-verdict
boot_id=$(cat /proc/sys/kernel/random/boot_id)

verdict() { # TYPE WHY
    echo "accelerator: $1 ($2)" >&2
    echo "$1"
    exit 0
}

case ${VTPM_TEST_VIRT_TYPE:-} in
    kvm | qemu) verdict "$VTPM_TEST_VIRT_TYPE" "VTPM_TEST_VIRT_TYPE" ;;
    '') ;;
    *) echo "probe-accel: VTPM_TEST_VIRT_TYPE must be kvm or qemu, got '$VTPM_TEST_VIRT_TYPE'" >&2
       exit 2 ;;
esac
[ -e /dev/kvm ] || verdict qemu "no /dev/kvm"
if [ -z "${VT_KVM:-}" ] && [ -s "$cache" ]; then
    read -r id type why < "$cache"
    [ "$id" = "$boot_id" ] && verdict "$type" "cached for this boot: $why"
fi

for f in vmlinuz initrd.img; do
    [ -s "$dir/$f" ] || { echo "probe-accel: no $dir/$f (build-guest.sh first)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/vtpm-accel.XXXXXX)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s%N)
# The machine and CPU vtpmd's domains get (q35, QEMU's default CPU model:
# worker/domxml.c); no TPM and no disk: only reaching /init matters.
timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 -accel kvm -machine q35 \
    -m 256 -nodefaults -display none -no-reboot \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
    -append "console=ttyS0 panic=-1 vtpm.script=probe" \
    -serial "file:$work/console" > "$work/qemu.out" 2>&1
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if grep -q 'VTPM-RESULT start' "$work/console" 2>/dev/null; then
    type=kvm
    why="a KVM guest reached /init in $ms ms"
else
    type=qemu
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        why="a KVM guest did not reach /init within ${timeout_s} s"
    else
        why="QEMU with KVM failed (exit $rc): $(head -c 300 "$work/qemu.out" | tr '\n' ' ')"
    fi
fi
[ -z "${VT_KVM:-}" ] && echo "$boot_id $type $why" > "$cache"
verdict "$type" "probe: $why"
