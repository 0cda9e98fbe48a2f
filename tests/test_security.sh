#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Security review promises that need a running vtpmd (docs/security.md,
# "Security review"), on one host of tests/integration.sh with a real
# libvirtd and swtpm:
#   - a user-mode secret (instance.vtpm.secret) reaches no log (vtpmd's,
#     libvirtd's, the domain's swtpm and QEMU logs) and no process's
#     command line, raw or base64, through spawn, a refused wrong secret,
#     a resize on this host, shelve and unshelve;
#   - the TPM state, after spawn and after a restore from the shelve store,
#     is tss-owned 0700 (dirs) / 0600 (files), and so are the shelve
#     archive, its pool directory, the kept copy of a resize on this host
#     and the generations record: root-only 0700 / 0600; shelved.ref
#     reaches no other volume;
#   - vtpmd runs with no_new_privs;
#   - vtpmd --check-config and the start-up refuse a config file that holds
#     the broker password and that others can read.
#   integration.sh tests/test_security.sh VTPMCTL VTPMD
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: integration.sh $0 VTPMCTL VTPMD" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")" && pwd)
for v in VT_ROOT VT_AMQP_URL VT_HOST_A_URI; do
    [ -n "${!v:-}" ] || { echo "$v is not set: run this under tests/integration.sh" >&2; exit 2; }
done
# shellcheck source=lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=acceptance/guest.sh
source "$tests/acceptance/guest.sh"
export VTPM_AMQP_URL=$VT_AMQP_URL
shutdown_timeout=1

# Printable, so that grep -F finds it as is; nobody else writes it.
SECRET="sec-review-$$-$RANDOM$RANDOM-passphrase"
SECRET_B64=$(printf '%s' "$SECRET" | base64 -w0)
WRONG_B64=$(printf 'not-%s' "$SECRET" | base64 -w0)
# ---- a config file with the broker password that others can read ----------------

cfg=$VT_ROOT/sec-open.conf
printf '[amqp]\nurl = %s\n[worker]\nhost = sec-open\n' "$VT_AMQP_URL" > "$cfg"
chmod 0644 "$cfg"
out=$("$vtpmd" --check-config --config "$cfg" 2>&1)
check "vtpmd --check-config refuses a 0644 config holding the broker password, naming file and mode" \
    "$?:$(grep -c "$cfg has mode 0644 and holds the broker password (\[amqp\] url, line 2)" <<< "$out")" "1:1"
out=$(timeout 60 "$vtpmd" --config "$cfg" 2>&1)
check "vtpmd refuses to start on it (exit 1), with the same message" \
    "$?:$(grep -c "$cfg has mode 0644" <<< "$out")" "1:1"
chmod 0640 "$cfg"
out=$("$vtpmd" --check-config --config "$cfg" 2>&1)
check "a 0640 one passes --check-config" "$?" 0

W=sec-a
start_vtpmd a "$W"
vpid=${vtpmd_pid[a]}

# callin METHOD ARGS_JSON: like guest.sh's call, but the args go through
# stdin (vtpmctl call METHOD -), so that the secret is on no command line
# of ours either and the /proc scan below means something.
callin() {
    local rc=0
    reply=$(printf '%s' "$2" | "$vtpmctl" call --host "$W" --timeout 300 "$1" - 2>&1) || rc=$?
    [ "$rc" -eq 0 ] && [[ $reply == *'"ok":true'* || $reply == *'"ok": true'* ]]
}
expect() { # DESCRIPTION METHOD ARGS
    if callin "$2" "$3"; then ok "$1"; else nok "$1: $reply"; fi
}

u=$(cat /proc/sys/kernel/random/uuid)
flavor='{"name": "m1.sec", "vcpus": 1, "memory_mb": 64, "extra_specs": {"hw:tpm_version": "2.0"}}'
flavor2='{"name": "m1.sec2", "vcpus": 1, "memory_mb": 96, "extra_specs": {"hw:tpm_version": "2.0"}}'
image='{"id": "img-sec", "name": "img-sec"}'
inst() { # FLAVOR SECRET_B64
    printf '{"uuid": "%s", "name": "sec", "flavor": %s, "image": %s, "vtpm": {"secret": {"$bin": "%s"}}}' \
        "$u" "$1" "$image" "$2"
}

# ---- process command lines while the secret is in use ------------------------------

scan_cmdlines() { # prints the PIDs whose command line holds the secret
    local f
    for f in /proc/[0-9]*/cmdline; do
        if { tr '\0' ' ' < "$f"; } 2>/dev/null | grep -qF -e "$SECRET" -e "$SECRET_B64"; then
            echo "${f#/proc/}"
        fi
    done
}
# Scanned in the background during the calls (vtpmctl, vtpmd's children,
# libvirtd's swtpm_setup/swtpm/QEMU come and go), and once more after.
hits=$VT_ROOT/cmdline-hits
: > "$hits"
(while [ ! -e "$VT_ROOT/scan-stop" ]; do scan_cmdlines >> "$hits"; sleep 0.2; done) &
scanner=$!

expect "spawn (user mode, the secret through stdin)" spawn "{\"instance\": $(inst "$flavor" "$SECRET_B64")}"
expect "power_off" power_off "{\"instance\": {\"uuid\": \"$u\"}}"
if callin power_on "{\"instance\": {\"uuid\": \"$u\", \"vtpm\": {\"secret\": {\"\$bin\": \"$WRONG_B64\"}}}}"; then
    nok "power_on with a wrong secret is refused"
else
    check "power_on with a wrong secret is refused" "$(grep -o SecretInvalid <<< "$reply" | head -1)" SecretInvalid
fi

# ---- modes: the state as libvirt leaves it ------------------------------------------

# mode_of PATH: "MODE OWNER" as vtpmd's host sees it.
mode_of() { vt_host_exec a stat -c '%a %U' "$1" 2>/dev/null || echo missing; }
# state_modes: every dir and file under the state's tpm2/, as "d MODE OWNER"
# / "f MODE OWNER" lines, sorted and counted.  Not swtpm's .lock: a running
# swtpm holds it (empty, 0640), and it is swtpm's business.
state_modes() {
    vt_host_exec a find "/var/lib/libvirt/swtpm/$u/tpm2" ! -name .lock -printf '%y %m %u\n' 2>/dev/null |
        sort | uniq -c | sed 's/^ *//' | tr '\n' ';'
}
lock_info() {
    vt_host_exec a find "/var/lib/libvirt/swtpm/$u/tpm2" -name .lock -printf '%m %u %s' 2>/dev/null
}
check "after spawn: <uuid>/ is root 0711 (libvirt's layout)" "$(mode_of "/var/lib/libvirt/swtpm/$u")" "711 root"
check "after spawn: tpm2/ 0700 and the state file 0600, owned by tss" "$(state_modes)" "1 d 700 tss;1 f 600 tss;"
note "swtpm's lock file while it runs: $(lock_info) (mode, owner, bytes)"

# ---- resize on this host: the kept copy ----------------------------------------------

expect "migrate_disk_and_power_off to this host (resize in place)" migrate_disk_and_power_off \
    "{\"instance\": $(inst "$flavor2" "$SECRET_B64"), \"dest_host\": \"$W\", \"new_flavor\": $flavor2}"
xfer=$(rget vtpm_transfer)
check "the kept copy of the source is root 0600" "$(mode_of "/var/lib/vtpmd/kept/$u.tar")" "600 root"
check "the kept dir is root 0700" "$(mode_of /var/lib/vtpmd/kept)" "700 root"
expect "finish_migration on this host" finish_migration \
    "{\"instance\": $(inst "$flavor2" "$SECRET_B64"), \"old_flavor\": $flavor, \"power_on\": false, \"vtpm_transfer\": $xfer}"
check "after finish_migration: tpm2/ 0700 and the state file 0600, owned by tss" "$(state_modes)" "1 d 700 tss;1 f 600 tss;"
expect "confirm_migration" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}"

# ---- shelve and restore ---------------------------------------------------------------

expect "shelve (offload)" shelve "{\"instance\": $(inst "$flavor2" "$SECRET_B64"), \"offload\": true}"
shelved=$(rget shelved)
vol=/var/lib/vtpmd/pools/vtpm-shelved/$u.vtpm.tar
check "the shelve archive is root 0600" "$(mode_of "$vol")" "600 root"
check "the shelve pool's directory is root 0700" "$(mode_of /var/lib/vtpmd/pools/vtpm-shelved)" "700 root"
check "the generations record is root 0600" "$(mode_of "/var/lib/vtpmd/kept/generations/$u")" "600 root"
check "the generations dir is root 0700" "$(mode_of /var/lib/vtpmd/kept/generations)" "700 root"
# A ref reaches only this instance's archive in the configured pool.
for ref in "../vtpm-shelved/$u.vtpm.tar" "vtpm-shelved/../kept/$u.tar" "default/$u.vtpm.tar" \
           "vtpm-shelved/$(cat /proc/sys/kernel/random/uuid).vtpm.tar" "vtpm-shelved/$u.vtpm.tar/.."; do
    callin unshelve "{\"instance\": $(inst "$flavor2" "$SECRET_B64"), \"shelved\": {\"ref\": \"$ref\"}, \"power_on\": false}"
    check "unshelve with shelved.ref $ref is refused" \
        "$(grep -o 'BadRequest\|args.shelved.ref: expected vtpm-shelved/' <<< "$reply" | sort -u | tr '\n' ' ')" \
        "BadRequest args.shelved.ref: expected vtpm-shelved/ "
done
# power_on false: the modes are those the restore gives, not a start's.
expect "unshelve (restore)" unshelve \
    "{\"instance\": $(inst "$flavor2" "$SECRET_B64"), \"shelved\": $shelved, \"power_on\": false}"
check "after unshelve: restored, tpm2/ 0700 and the state file 0600, owned by tss" \
    "$(rget vtpm_state) $(state_modes)" "restored 1 d 700 tss;1 f 600 tss;"
check "after unshelve: <uuid>/ is root 0711" "$(mode_of "/var/lib/libvirt/swtpm/$u")" "711 root"

touch "$VT_ROOT/scan-stop"
wait "$scanner"
scan_cmdlines >> "$hits"
check "no process's command line held the secret, raw or base64, during the calls" \
    "$(sort -u "$hits" | tr '\n' ' ')" ""

# ---- privileges -----------------------------------------------------------------------------

check "vtpmd runs with no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$vpid/status")" 1

# ---- logs -------------------------------------------------------------------------------------

expect "destroy" destroy "{\"instance\": {\"uuid\": \"$u\"}}"
stop_vtpmd a
logs=("${vtpmd_log[a]}")
for f in "$(vt_host_root a)/var/log/swtpm/libvirt/qemu/instance-$u-swtpm.log" \
         "$(vt_host_root a)/var/log/libvirt/qemu/instance-$u.log" \
         "$(vt_host_root a)/var/log/libvirt/libvirtd.log"; do
    [ -f "$f" ] && logs+=("$f")
done
check "vtpmd's log is there and has the calls (${#logs[@]} logs searched)" \
    "$(grep -c "$u" "${vtpmd_log[a]}" | awk '{print ($1 > 0)}')" 1
leaks=$(grep -lF -a -e "$SECRET" -e "$SECRET_B64" "${logs[@]}" 2>/dev/null | tr '\n' ' ')
check "no log holds the secret, raw or base64 (vtpmd, swtpm, QEMU, libvirtd)" "$leaks" ""

finish
