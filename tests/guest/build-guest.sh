#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Build a tiny bootable guest that exercises its TPM: Debian's 6.1 kernel
# (TPM TIS, CRB and the TPM core are built in) and an initramfs holding
# busybox-static, tpm2-tools' `tpm2` with the libraries it needs, and an
# /init that runs one of the scripts below, chosen by `vtpm.script=NAME` on
# the kernel command line.  Results go to the serial console as lines
#     VTPM-RESULT key=value
# ending with `VTPM-RESULT done`; then the guest powers off.
#
# Scripts (under /scripts/ in the initramfs):
#   probe    which driver bound (tpm_tis / tpm_crb), tpm_version_major,
#            whether /dev/tpm0 and /dev/tpmrm0 exist
#   write    TPM 2.0: a fresh random NV secret at 0x1500016 and a persistent
#            ECC primary at 0x81000016 (replacing old ones); prints both
#   read     prints the NV secret and the key's public sha256, or "none"
#   persist  read, then write only what is absent (boot 1 writes, boot 2
#            reads the same values back)
#   life     probe, then (TPM 2.0 only) persist: what the lifecycle suite
#            boots after every operation
#   uefi     life, then UEFI: SecureBoot and SetupMode as the firmware
#            reports them (efivarfs), a non-volatile EFI variable of the
#            guest's own (a random value written on the first boot, read
#            back on every later one), PCR 7 (sha256 bank) and the sha256 of
#            the firmware's event log: what the UEFI suite boots after
#            every operation
#   tick     life, then it keeps running (the live migration suite moves it
#            while it does): extends PCR 16 once with a random value, and
#            every second increments a TPM NV counter (0x1500017, defined
#            with nt=counter) and prints "VTPM-TICK n=<loop> counter=<NV
#            counter> pcr16=<hex>"; every 5th tick also the life script's
#            NV secret and key as "VTPM-STATE n=<loop> nv_secret=..." and
#            "VTPM-STATE n=<loop> key_pub_sha256=...".  vtpm.ticks=N
#            (default 600) ticks, then it reports done and powers off.
#   second   life, then a second random NV secret at 0x1500018 (printed as
#            second_nv_secret), then "holding" and no power-off: the
#            evacuation suite kills the host under the running guest
#   identity probe, then (TPM 2.0) the EK certificates in NV (RSA
#            0x01c00002, ECC 0x01c0000a, DER as hex, or "none"), the EK
#            public keys tpm2_createek recreates from the TCG templates
#            (-G rsa / -G ecc: the base64 of their SubjectPublicKeyInfo),
#            and the active PCR banks: what the identity suite compares
#            with get_vtpm_identity
# read, persist and life also print the second secret (nv2_secret) or "none".
#
# The watchdog that powers off a guest whose TPM command hangs fires after
# vtpm.watchdog=SECONDS (default 90) of the kernel command line.
#
# Usage: build-guest.sh OUTDIR     -> OUTDIR/vmlinuz, OUTDIR/initrd.img
#
# Everything comes from Debian packages: `apt-get download` of the kernel
# (the linux-image-6.1.*-amd64 that linux-image-amd64 depends on; its
# vmlinuz and efivarfs.ko, which Debian builds as a module) and
# busybox-static, unpacked with dpkg-deb (no maintainer scripts, no
# initramfs hooks), and tpm2-tools as installed on this machine.  The cpio
# archive is written by busybox-static's own cpio.  Nothing else is needed
# on the host besides apt, dpkg, gzip, ldd, perl and sha256sum.
#
# Cached by content: OUTDIR/.key holds a hash of the package versions, this
# script and the /init it generates; when it matches, nothing is done and
# "cached" is printed.  The downloaded .debs stay in OUTDIR/debs, so a
# change of this script alone rebuilds without downloading again.
set -Eeuo pipefail

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] FATAL: %s\n' "$*" >&2; exit 1; }
# set -e alone stops silently, which left CI with a bare "not ok": name the line.
trap 'rc=$?; printf "[build-guest] FATAL: line %s: \"%s\" failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$rc" >&2' ERR

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
out=$(cd "$1" && pwd)
self=$(readlink -f "$0")
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }

# ---- the guest's scripts ---------------------------------------------------

guest_init() {
    cat <<'EOF'
#!/bin/sh
# vtpmd test guest: run /scripts/$vtpm.script, report on the console, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
# Kernel messages would interleave with the result lines from here on.
echo 1 > /proc/sys/kernel/printk
exec < /dev/console > /dev/console 2>&1

res() { echo "VTPM-RESULT $*"; }
off() {
    sync
    poweroff -f
    # poweroff only halts without ACPI; make the VM stop anyway.
    echo o > /proc/sysrq-trigger
    sleep 5
}

script=
watchdog=90
for a in $(cat /proc/cmdline); do
    case $a in
        vtpm.script=*) script=${a#vtpm.script=} ;;
        vtpm.watchdog=*) watchdog=${a#vtpm.watchdog=} ;;
    esac
done
res "start script=${script:-none} uptime=$(cut -d' ' -f1 /proc/uptime)"
res "kernel=$(uname -r)"
# A hung TPM command must not keep the test waiting forever.
( sleep "$watchdog"; res "error=watchdog"; res done; off ) &

case $script in
    '' | */* | .*) res "error=no-script" ;;
    *)
        if [ -f "/scripts/$script" ]; then
            ( . /scripts/common.sh; . "/scripts/$script" )
            res "script_rc=$?"
        else
            res "error=unknown-script:$script"
        fi ;;
esac
dmesg | grep -i tpm | sed 's/^/VTPM-LOG /'
res "uptime_end=$(cut -d' ' -f1 /proc/uptime)"
res done
off
EOF
}

guest_common() {
    cat <<'EOF'
# Sourced by every script.
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
NV=0x1500016
NV2=0x1500018
KEY=0x81000016
# Files' bytes as lower-case hex, no separators.
hex() { od -An -v -tx1 "$1" | tr -d ' \n'; }
nv_present() { tpm2_getcap handles-nv-index 2>/dev/null | grep -qi "$NV"; }
nv2_present() { tpm2_getcap handles-nv-index 2>/dev/null | grep -qi "$NV2"; }
key_present() { tpm2_getcap handles-persistent 2>/dev/null | grep -qi "$KEY"; }
# Print the current NV secret and the persistent key's public sha256 (or none).
read_state() {
    if nv_present; then
        if tpm2_nvread -C o -s 32 -o /tmp/nv.bin "$NV" > /dev/null; then
            res "nv_secret=$(hex /tmp/nv.bin)"
        else
            res "nv_secret=error"
        fi
    else
        res "nv_secret=none"
    fi
    if key_present; then
        if tpm2_readpublic -c "$KEY" -o /tmp/pub > /dev/null; then
            res "key_pub_sha256=$(sha256sum /tmp/pub | cut -d' ' -f1)"
        else
            res "key_pub_sha256=error"
        fi
    else
        res "key_pub_sha256=none"
    fi
    if nv2_present; then
        if tpm2_nvread -C o -s 32 -o /tmp/nv2.bin "$NV2" > /dev/null; then
            res "nv2_secret=$(hex /tmp/nv2.bin)"
        else
            res "nv2_secret=error"
        fi
    else
        res "nv2_secret=none"
    fi
}
# Write a fresh secret and key (replacing old ones); print them with prefix $1.
write_state() {
    p=${1:-}
    head -c 32 /dev/urandom > /tmp/secret
    if nv_present; then tpm2_nvundefine -C o "$NV" || res "${p}error=nvundefine"; fi
    tpm2_nvdefine -C o -s 32 -a "ownerread|ownerwrite|authread|authwrite" "$NV" > /dev/null ||
        res "${p}error=nvdefine"
    tpm2_nvwrite -C o -i /tmp/secret "$NV" || res "${p}error=nvwrite"
    if key_present; then tpm2_evictcontrol -C o -c "$KEY" > /dev/null || res "${p}error=evict"; fi
    tpm2_createprimary -C o -g sha256 -G ecc -c /tmp/p.ctx > /dev/null ||
        res "${p}error=createprimary"
    tpm2_evictcontrol -C o -c /tmp/p.ctx "$KEY" > /dev/null || res "${p}error=evictcontrol"
    rm -f /tmp/pub
    tpm2_readpublic -c "$KEY" -o /tmp/pub > /dev/null || res "${p}error=readpublic"
    res "${p}nv_secret=$(hex /tmp/secret)"
    res "${p}key_pub_sha256=$(sha256sum /tmp/pub 2>/dev/null | cut -d' ' -f1)"
    # Read the index back in the same boot: the write really reached the TPM.
    if tpm2_nvread -C o -s 32 -o /tmp/nv.bin "$NV" > /dev/null && cmp -s /tmp/nv.bin /tmp/secret; then
        res "${p}readback=match"
    else
        res "${p}readback=mismatch"
    fi
}
EOF
}

guest_probe() {
    cat <<'EOF'
d=/sys/class/tpm/tpm0
if [ -e "$d" ]; then
    drv=$(readlink -f "$d/device/driver" 2>/dev/null)
    res "driver=${drv:+$(basename "$drv")}"
    res "device=$(basename "$(readlink -f "$d/device")")"
    res "version_major=$(cat "$d/tpm_version_major" 2>/dev/null || echo unknown)"
else
    res "driver=none"
    res "version_major=none"
fi
for n in tpm0 tpmrm0; do
    if [ -c "/dev/$n" ]; then res "dev_$n=yes"; else res "dev_$n=no"; fi
done
# A TPM 2.0 that answers a command, not just a device node.
if [ -c /dev/tpmrm0 ]; then
    if r=$(tpm2_getrandom --hex 8 2>/dev/null) && [ ${#r} -eq 16 ]; then
        res "getrandom=ok"
    else
        res "getrandom=failed"
    fi
    m=$(tpm2_getcap properties-fixed 2>/dev/null | grep -A2 TPM2_PT_MANUFACTURER | sed -n 's/.*value: *"\(.*\)".*/\1/p' | head -1)
    res "manufacturer=${m:-unknown}"
fi
# TPM 1.2: the kernel's caps file names the TCG version the TPM reports.
for c in "$d/caps" "$d/device/caps"; do
    if [ -r "$c" ]; then
        v=$(sed -n 's/^TCG version: *//p' "$c" | head -1)
        res "tcg_version=${v:-unknown}"
        break
    fi
done
EOF
}

guest_write() { echo 'write_state'; }
guest_read() { echo 'read_state'; }
guest_persist() {
    cat <<'EOF'
out=$(read_state)
echo "$out"
# The first secret and the key only: the second one is the second script's.
case $out in
    *" nv_secret=none"* | *" key_pub_sha256=none"*) res "persist=writing"; write_state written_ ;;
    *) res "persist=kept" ;;
esac
EOF
}

guest_life() {
    cat <<'EOF'
. /scripts/probe
if [ -c /dev/tpmrm0 ]; then . /scripts/persist; fi
EOF
}

guest_uefi() {
    cat <<'EOF'
. /scripts/life
GLOBAL=8be4df61-93ca-11d2-aa0d-00e098032b8c
EFIVARS=/sys/firmware/efi/efivars
# The guest's own variable: a vendor GUID of its own, non-volatile.
VAR=$EFIVARS/VtpmdTest-5b3a7f2e-4c1d-4e8a-9b6f-0d2c4e6a8b10
if [ -d /sys/firmware/efi ]; then res "efi=yes"; else res "efi=no"; fi
insmod /lib/modules/efivarfs.ko || res "error=insmod-efivarfs"
mount -t efivarfs efivarfs "$EFIVARS" || res "error=mount-efivarfs"
# A variable's data after its 4 attribute bytes, as hex ("" when absent).
efivar() { if [ -f "$1" ]; then tail -c +5 "$1" | od -An -v -tx1 | tr -d ' \n'; fi; }
res "secure_boot=$(efivar "$EFIVARS/SecureBoot-$GLOBAL")"
res "setup_mode=$(efivar "$EFIVARS/SetupMode-$GLOBAL")"
v=$(efivar "$VAR")
if [ -n "$v" ]; then
    res "efivar=$v"
    res "efivar_written=no"
else
    # One write(2): attributes NV|BS|RT (0x07, little-endian), then 16
    # random bytes.
    printf '\007\000\000\000' > /tmp/var
    head -c 16 /dev/urandom >> /tmp/var
    dd if=/tmp/var of="$VAR" bs=20 count=1 2>/dev/null || res "error=efivar-write"
    res "efivar=$(efivar "$VAR")"
    res "efivar_written=yes"
fi
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
log=/sys/kernel/security/tpm0/binary_bios_measurements
if [ -r "$log" ]; then
    res "eventlog_sha256=$(sha256sum "$log" | cut -d' ' -f1)"
    res "eventlog_bytes=$(wc -c < "$log")"
else
    res "eventlog_sha256=none"
fi
if [ -c /dev/tpmrm0 ]; then
    p=$(tpm2_pcrread sha256:7 2>/dev/null | sed -n 's/^ *7 *: *0x\([0-9A-Fa-f]*\).*/\1/p')
    res "pcr7=${p:-error}"
fi
EOF
}


guest_tick() {
    cat <<'EOF'
. /scripts/life
ticks=600
for a in $(cat /proc/cmdline); do
    case $a in vtpm.ticks=*) ticks=${a#vtpm.ticks=} ;; esac
done
CTR=0x1500017
pcr16() { tpm2_pcrread sha256:16 2>/dev/null | sed -n 's/^ *16 *: *0x\([0-9A-Fa-f]*\).*/\1/p' | tr 'A-F' 'a-f'; }
# A restarted TPM resets its PCRs: the value proves the volatile state
# moved with the guest.
head -c 32 /dev/urandom > /tmp/r
tpm2_pcrextend "16:sha256=$(hex /tmp/r)" || res "error=pcrextend"
res "pcr16=$(pcr16)"
if ! tpm2_getcap handles-nv-index 2>/dev/null | grep -qi "$CTR"; then
    tpm2_nvdefine -C o -s 8 -a "ownerread|ownerwrite|nt=counter" "$CTR" > /dev/null ||
        res "error=nvdefine-counter"
fi
res "ticking"
n=0
while [ "$n" -lt "$ticks" ]; do
    c=error
    if tpm2_nvincrement -C o "$CTR" > /dev/null 2>&1 &&
       tpm2_nvread -C o -s 8 -o /tmp/c "$CTR" > /dev/null 2>&1; then
        c=$((0x$(hex /tmp/c)))
    fi
    echo "VTPM-TICK n=$n counter=$c pcr16=$(pcr16)"
    if [ $((n % 5)) -eq 0 ]; then
        ( res() { echo "VTPM-STATE n=$n $*"; }; read_state )
    fi
    n=$((n + 1))
    sleep 1
done
EOF
}

guest_second() {
    cat <<'EOF'
. /scripts/life
if [ -c /dev/tpmrm0 ]; then
    head -c 32 /dev/urandom > /tmp/secret2
    if nv2_present; then tpm2_nvundefine -C o "$NV2" || res "error=nv2undefine"; fi
    tpm2_nvdefine -C o -s 32 -a "ownerread|ownerwrite|authread|authwrite" "$NV2" > /dev/null ||
        res "error=nv2define"
    tpm2_nvwrite -C o -i /tmp/secret2 "$NV2" || res "error=nv2write"
    res "second_nv_secret=$(hex /tmp/secret2)"
fi
# The host is killed under the running guest (before the watchdog's 90 s).
res "holding"
sleep 3600
EOF
}

guest_identity() {
    cat <<'EOF'
. /scripts/probe
if [ -c /dev/tpmrm0 ]; then
    for alg in rsa ecc; do
        idx=0x01c00002
        [ $alg = ecc ] && idx=0x01c0000a
        if tpm2_nvread -C o -o /tmp/ek-$alg.der $idx > /dev/null 2>&1; then
            res "ek_${alg}_cert=$(hex /tmp/ek-$alg.der)"
        else
            res "ek_${alg}_cert=none"
        fi
        if tpm2_createek -G $alg -c /tmp/ek-$alg.ctx -u /tmp/ek-$alg.pem -f pem > /dev/null 2>&1; then
            res "ek_${alg}_pub=$(grep -v -- ----- /tmp/ek-$alg.pem | tr -d '\n')"
        else
            res "ek_${alg}_pub=error"
        fi
    done
    # The banks with PCRs selected; tpm2_getcap lists the others as "[ ]".
    b=$(tpm2_getcap pcrs | sed -n 's/^ *- \([a-z0-9]*\): \[ *[0-9].*/\1/p' | tr '\n' ',')
    res "pcr_banks=${b%,}"
fi
EOF
}

scripts="probe write read persist life uefi tick second identity"

# ---- inputs and the cache key ----------------------------------------------

# One apt-cache call (the package cache is not kept on disk here, so each
# call parses every list: ~2 s).
apt_info() { apt-cache show --no-all-versions linux-image-amd64 busybox-static 2>/dev/null; }
info=$(apt_info) || true
if ! grep -q '^Package: busybox-static' <<< "$info"; then
    log "apt-cache knows no packages yet: apt-get update"
    apt-get update -qq > /dev/null || die "apt-get update failed"
    info=$(apt_info) || die "apt-cache show linux-image-amd64 busybox-static failed"
fi
field() { # field PACKAGE NAME
    awk -v pkg="$1" -v f="$2" '
        /^Package: / { cur = $2 }
        cur == pkg && index($0, f ": ") == 1 { print substr($0, length(f) + 3); exit }' <<< "$info"
}
kdep=$(field linux-image-amd64 Depends)
kpkg=$(sed -n 's/.*\(linux-image-6\.1\.[^ ,]*-amd64\) (= \([^)]*\)).*/\1/p' <<< "$kdep")
kver=$(sed -n 's/.*linux-image-6\.1\.[^ ,]*-amd64 (= \([^)]*\)).*/\1/p' <<< "$kdep")
if [ -z "$kpkg" ] || [ -z "$kver" ]; then
    # linux-image-amd64 points elsewhere: take the newest 6.1 kernel there is.
    kpkg=$(apt-cache pkgnames linux-image-6.1. 2>/dev/null |
           { grep -E '^linux-image-6\.1\.[0-9.]+-[0-9]+-amd64$' || true; } | sort -V | tail -1)
    [ -n "$kpkg" ] || die "no linux-image-6.1.*-amd64 package (linux-image-amd64 depends: $kdep)"
    kver=$(apt-cache show --no-all-versions "$kpkg" | awk '/^Version: / && !v { v = $2 } END { print v }')
fi
bver=$(field busybox-static Version)
[ -n "$bver" ] || die "no busybox-static version"

command -v tpm2 > /dev/null || die "tpm2-tools is not installed (apt-get install tpm2-tools)"
tpm2_bin=$(readlink -f "$(command -v tpm2)")
# awk reads to the end: exiting early would SIGPIPE ldconfig, whose ~60 KB
# listing can outgrow the pipe, and pipefail would then end this script.
tcti=$(ldconfig -p | awk '$1 == "libtss2-tcti-device.so.0" && /x86-64/ && !t { t = $NF } END { print t }')
[ -n "$tcti" ] || die "libtss2-tcti-device.so.0 not found (tpm2-tools installs it)"
# dpkg-query exits 1 when a name matches nothing; the key only needs what is there.
host_pkgs=$( { dpkg-query -W -f '${Package}=${Version}\n' tpm2-tools 'libtss2-*' libssl3 libc6 \
               2>/dev/null || true; } | sort)

key=$(
    {
        echo "kernel $kpkg=$kver"
        echo "busybox-static=$bver"
        echo "$host_pkgs"
        sha256sum < "$self"
        guest_init | sha256sum
        for s in common $scripts; do "guest_$s" | sha256sum; done
    } | sha256sum | cut -d' ' -f1
)

exec 9> "$out/.lock"
flock 9
if [ -f "$out/.key" ] && [ "$(cat "$out/.key")" = "$key" ] &&
   [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    echo "cached"
    log "$out: $kpkg $kver, busybox-static $bver (key ${key:0:12}, $(ms) ms)"
    exit 0
fi
log "building into $out: $kpkg $kver, busybox-static $bver"

# ---- packages ---------------------------------------------------------------

debs=$out/debs
mkdir -p "$debs"
# apt-get download drops to the _apt user, who must be able to write here.
chmod 0755 "$out" "$debs"
chown _apt "$debs" 2>/dev/null || true
kdeb=$debs/${kpkg}_${kver//:/%3a}_amd64.deb
bdeb=$debs/busybox-static_${bver//:/%3a}_amd64.deb
want=()
[ -s "$kdeb" ] || want+=("$kpkg=$kver")
[ -s "$bdeb" ] || want+=("busybox-static=$bver")
if [ ${#want[@]} -gt 0 ]; then
    # Older versions are of no use any more.
    find "$debs" -maxdepth 1 -name '*.deb' ! -path "$kdeb" ! -path "$bdeb" -delete
    log "apt-get download ${want[*]}"
    (cd "$debs" && apt-get download -q "${want[@]}" > /dev/null) || die "apt-get download failed"
    log "downloaded ($(ms) ms)"
fi
[ -s "$kdeb" ] || die "$kdeb missing after download"
[ -s "$bdeb" ] || die "$bdeb missing after download"

scratch=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The kernel package is ~70 MB of modules; only the kernel image is needed,
# so take just that member instead of unpacking the whole tree (dpkg-deb -x).
mkdir -p "$scratch/kernel" "$scratch/busybox"
dpkg-deb --fsys-tarfile "$kdeb" | tar -xf - -C "$scratch/kernel" --wildcards './boot/vmlinuz-*' \
    './lib/modules/*/kernel/fs/efivarfs/efivarfs.ko*'
vmlinuz=$(find "$scratch/kernel/boot" -name 'vmlinuz-*' -print -quit)
[ -n "$vmlinuz" ] || die "no vmlinuz in $kdeb"
efivarfs=$(find "$scratch/kernel/lib/modules" -name 'efivarfs.ko*' -print -quit)
[ -n "$efivarfs" ] || die "no efivarfs.ko in $kdeb"
dpkg-deb -x "$bdeb" "$scratch/busybox"
bb=$scratch/busybox/bin/busybox
[ -x "$bb" ] || die "no bin/busybox in $bdeb"
log "unpacked ($(ms) ms)"

# ---- the initramfs tree ----------------------------------------------------

root=$scratch/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,tmp,etc,scripts,root}
ln -s ../lib "$root/usr/lib"
install -m 0755 "$bb" "$root/bin/busybox"
# ~270 applet links: one perl (Essential in Debian) instead of a fork each.
"$bb" --list-full | (cd "$root" && perl -nle 'symlink("/bin/busybox", $_) unless -e $_ || -l $_')
[ -L "$root/bin/sh" ] || die "busybox applet links missing"

install -m 0755 "$tpm2_bin" "$root/usr/bin/tpm2"
# tpm2_* are links to tpm2 (tpm2-tools dispatches on its name): copy them as links.
find "$(dirname "$(command -v tpm2)")" -maxdepth 1 -name 'tpm2_*' -lname tpm2 \
    -exec cp -P -t "$root/usr/bin" {} +

# Shared libraries: what ldd lists for tpm2 and for the device TCTI, which
# libtss2-tctildr dlopen()s at run time by its soname.  Each goes where the
# loader looks without an ld.so.cache: the multiarch directory, the
# program interpreter at its absolute path.
copy_lib() {
    local src=$1 dst
    case $src in
        */ld-linux-x86-64.so.2) dst=$root/lib64/${src##*/} ;;
        *) dst=$root/lib/x86_64-linux-gnu/${src##*/} ;;
    esac
    [ -e "$dst" ] || cp -L "$src" "$dst"
}
for l in $( { ldd "$tpm2_bin"; ldd "$tcti"; } | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u); do
    copy_lib "$l"
done
copy_lib "$tcti"

mkdir -p "$root/lib/modules"
case $efivarfs in
    *.xz) "$bb" unxz -c "$efivarfs" > "$root/lib/modules/efivarfs.ko" ;;
    *) install -m 0644 "$efivarfs" "$root/lib/modules/efivarfs.ko" ;;
esac

guest_init > "$root/init"
chmod 0755 "$root/init"
guest_common > "$root/scripts/common.sh"
for s in $scripts; do "guest_$s" > "$root/scripts/$s"; done
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

# newc cpio written by busybox's own cpio, gzip-compressed.
(cd "$root" && find . | sort | "$bb" cpio -o -H newc 2> /dev/null) | gzip -6 -n > "$scratch/initrd.img"
cp "$vmlinuz" "$scratch/vmlinuz"
chmod 0644 "$scratch/vmlinuz" "$scratch/initrd.img"
mv -f "$scratch/vmlinuz" "$out/vmlinuz"
mv -f "$scratch/initrd.img" "$out/initrd.img"
echo "$key" > "$out/.key"
log "vmlinuz $(stat -c %s "$out/vmlinuz") bytes, initrd.img $(stat -c %s "$out/initrd.img") bytes" \
    "($(du -sk "$root" | cut -f1) KiB unpacked, $(find "$root" | wc -l) entries), $(ms) ms"
echo "built"
