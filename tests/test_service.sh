#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dist/vtpmd.service as meson configures it: systemd-analyze verify finds
# nothing to say (systemd is installed but never started), the directives
# the design depends on are there, and docs/operations.md documents every
# directive the unit sets.
# Usage: test_service.sh SRCDIR UNIT_FILE VTPMD
set -u
SRC=${1:?usage: test_service.sh SRCDIR UNIT_FILE VTPMD}
UNIT=${2:?}
VTPMD=${3:?}

tmp=$(mktemp -d /tmp/test_service.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0
# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"

check "the unit was configured: $UNIT" test -s "$UNIT"
check "no @variable@ is left unreplaced" eval '! grep -n "@[a-z]*@" "$UNIT"'

# value KEY: the value of KEY= in the unit (the last one wins, as in systemd).
value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }

exec_start=$(value ExecStart)
check "ExecStart runs sbindir's vtpmd with sysconfdir's vtpmd.conf" \
    eval '[[ "$exec_start" =~ ^/[^\ ]*/vtpmd\ --config\ /[^\ ]*/vtpmd/vtpmd\.conf$ ]]'
# vtpmd has no sd_notify: Type=notify would make systemd wait forever.
check "vtpmd does not call sd_notify, so Type=exec" \
    eval '[ "$(value Type)" = exec ] && ! grep -rq "sd_notify\|NOTIFY_SOCKET" "$SRC/worker"'
check "KillSignal=SIGTERM (vtpmd drains on SIGTERM)" eval '[ "$(value KillSignal)" = SIGTERM ]'
check "Restart=on-failure" eval '[ "$(value Restart)" = on-failure ]'
check "TimeoutStopSec leaves at least 4 rounds of the default 60 s power-off for the drain" \
    eval '[ "$(value TimeoutStopSec)" -ge 240 ]'
check "After= and Wants= name libvirtd and rabbitmq-server" \
    eval 'for k in After Wants; do v=$(value $k); [[ $v == *libvirtd.service* && $v == *rabbitmq-server.service* ]] || exit 1; done'
check "ProtectSystem=strict, ProtectHome, PrivateTmp, NoNewPrivileges" \
    eval '[ "$(value ProtectSystem)" = strict ] && [ "$(value ProtectHome)" = yes ] &&
          [ "$(value PrivateTmp)" = yes ] && [ "$(value NoNewPrivileges)" = yes ]'
check "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" \
    eval '[ "$(value RestrictAddressFamilies)" = "AF_UNIX AF_INET AF_INET6" ]'
check "the bounding set keeps what chowning state to the swtpm user needs, and nothing wide" \
    eval 'v=$(value CapabilityBoundingSet); for c in CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE; do
              [[ " $v " == *" $c "* ]] || exit 1; done; [[ $v != *CAP_SYS_ADMIN* && $v != *"~"* ]]'
check "the state directories vtpmd writes are writable under ProtectSystem=strict" \
    eval 'v=$(value StateDirectory); [[ " $v " == *" vtpmd "* && " $v " == *" libvirt/swtpm "* ]]'
# The rest of what docs/security.md ("Privileges") says the unit drops.
check "kernel, clock, hostname, namespaces, realtime, SUID/SGID, personality, W^X and syscalls locked" \
    eval 'for k in ProtectKernelTunables ProtectKernelModules ProtectKernelLogs ProtectControlGroups \
                   ProtectClock ProtectHostname RestrictNamespaces RestrictRealtime RestrictSUIDSGID \
                   LockPersonality MemoryDenyWriteExecute; do [ "$(value $k)" = yes ] || exit 1; done
          [ "$(value SystemCallFilter)" = @system-service ] && [ "$(value SystemCallArchitectures)" = native ]'
check "no User= (vtpmd must be root to hand state to the swtpm user) and no ambient capabilities" \
    eval '! grep -qE "^(User|AmbientCapabilities)=" "$UNIT"'
check "no PrivateDevices (it would hide /dev/kvm from virt_type = auto)" \
    eval '! grep -q "^PrivateDevices=" "$UNIT"'

# Every directive set in the unit appears in operations.md's directive table.
undocumented=()
for k in $(grep -oE '^[A-Za-z]+=' "$UNIT" | tr -d = | sort -u); do
    grep -qE "^\| .*\`$k=" "$SRC/docs/operations.md" || undocumented+=("$k")
done
: > "$OUT"; : > "$ERR"
if [ ${#undocumented[@]} -eq 0 ]; then
    pass "docs/operations.md documents every directive of the unit"
else
    fail "docs/operations.md documents every directive of the unit"
    echo "#   undocumented: ${undocumented[*]}"
fi

# systemd-analyze verify, on a copy whose ExecStart is the vtpmd just built
# (verify checks that the binary exists).  It exits 0 even on unknown keys
# or bad values, so any output at all is a failure.
if command -v systemd-analyze > /dev/null; then
    mkdir "$tmp/unit"
    sed "s|^ExecStart=[^ ]*|ExecStart=$VTPMD|" "$UNIT" > "$tmp/unit/vtpmd.service"
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/unit/vtpmd.service" > "$OUT" 2> "$ERR"
    RC=$?
    check "systemd-analyze verify: no error, no warning" eval 'rc_is 0 && [ ! -s "$OUT" ] && [ ! -s "$ERR" ]'
    # The checker itself: a misspelt directive must be caught.
    sed 's/^ProtectHome=/ProtectHom=/' "$tmp/unit/vtpmd.service" > "$tmp/unit/vtpmd-bad.service"
    systemd-analyze verify --man=no "$tmp/unit/vtpmd-bad.service" > "$OUT" 2> "$ERR"
    RC=$?
    check "systemd-analyze verify reports a misspelt directive (the check can fail)" \
        grep -q "ProtectHom" "$ERR"
else
    fail "systemd-analyze is installed (tools/install-deps installs systemd, never started)"
fi

tap_done
