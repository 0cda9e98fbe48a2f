#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The support matrix (docs/support-matrix.md): every lifecycle operation for
# every TPM version x model x key custody mode, over the wire, on two hosts.
#
# Run under tests/integration.sh with two hosts on a network:
#   integration.sh --net --hosts 2 tests/test_matrix.sh VTPMCTL VTPMD
#
# Each column (2.0/tpm-tis, 2.0/tpm-crb, 1.2/tpm-tis, each in user, host and
# deployment custody) drives one firmware-only instance through the rows
#   spawn, power_cycle, live_migration, cold_migration, resize, revert, shelve,
#   rebuild, vtpm_change, destroy
# and checks what each reply says about the TPM (version, model, custody,
# vtpm_state restored / kept / fresh / deleted), that the state file is
# where it belongs and that the domain's TPM is encrypted with the
# instance's secret.  Every check line is "ok - [ROW COLUMN] what" so that
# the matrix document can name the exact cells this test proves
# (tests/test_support_matrix.sh checks the document against this list).
# What the guest itself sees is the acceptance suite's part; byte-level
# state proofs are test_lifecycle's and test_secrets'.
# shellcheck source-path=SCRIPTDIR disable=SC2153,SC2317
set -uo pipefail

ROWS="spawn power_cycle live_migration cold_migration resize revert shelve rebuild vtpm_change destroy"
COLUMNS="2.0/tpm-tis/user 2.0/tpm-tis/host 2.0/tpm-tis/deployment
2.0/tpm-crb/user 2.0/tpm-crb/host 2.0/tpm-crb/deployment
1.2/tpm-tis/user 1.2/tpm-tis/host 1.2/tpm-tis/deployment"
# MATRIX_COLUMNS (a subset of COLUMNS) narrows a run while debugging.
if [ "${1:-}" = --list ]; then
    for c in $COLUMNS; do for r in $ROWS; do echo "$r $c"; done; done
    exit 0
fi

[ $# -eq 2 ] || { echo "usage: integration.sh --net --hosts 2 $0 VTPMCTL VTPMD | $0 --list" >&2; exit 2; }
vtpmctl=$(readlink -f "$1")
vtpmd=$(readlink -f "$2")
tests=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/env.sh
source "$tests/lib/env.sh"
# shellcheck source=acceptance/guest.sh
source "$tests/acceptance/guest.sh"
guest_need_two_hosts
# Firmware-only guests do not answer ACPI: power_off falls back to a hard
# stop after shutdown_timeout (1 s).
shutdown_timeout=1
start_two_hosts

# ---- one column ------------------------------------------------------------------

ver= model= mode= col=
flavor() { # NAME VERSION
    printf '{"name": "%s", "vcpus": 1, "memory_mb": 64, "extra_specs": {"hw:tpm_version": "%s", "hw:tpm_secret_security": "%s"}}' \
        "$1" "$2" "$mode"
}
image() { printf '{"id": "%s", "name": "%s", "properties": {"hw_tpm_model": "%s"}}' "$1" "$1" "$2"; }
inst() { # UUID FLAVOR IMAGE
    printf '{"uuid": "%s", "name": "matrix", "flavor": %s, "image": %s%s}' "$1" "$2" "$3" "$(vtpm_member)"
}

# cell ROW WHAT ACTUAL EXPECTED
cell() { check "[$1 $col] $2" "$3" "$4"; }
# op ROW WORKER METHOD ARGS: the call must succeed.
op() {
    if call "$2" "$3" "$4"; then
        ok "[$1 $col] $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "[$1 $col] $3 on host ${host_of[$2]}: $reply"
    return 1
}
state_file() { # HOST UUID VERSION
    local d
    d=$(vt_host_root "$1")/var/lib/libvirt/swtpm/$2
    if [ "$3" = 1.2 ]; then echo "$d/tpm1.2/tpm-00.permall"; else echo "$d/tpm2/tpm2-00.permall"; fi
}
has_state() { [ -s "$(state_file "$1" "$2" "$3")" ] && echo yes || echo no; }
# The domain's TPM as libvirt has it: "VERSION MODEL encrypted|plain".
dom_tpm() {
    virsh -q -c "$(vt_host_uri "$1")" dumpxml --inactive "instance-$2" 2>/dev/null | python3 -c '
import sys, xml.etree.ElementTree as ET
try:
    t = ET.fromstring(sys.stdin.read()).find("devices/tpm")
    b = t.find("backend")
    print(b.get("version"), t.get("model"), "encrypted" if b.find("encryption") is not None else "plain")
except Exception:
    print("none")'
}
vtpm_of() { echo "$(rget vtpm.version) $(rget vtpm.model) $(rget vtpm.secret_security)"; }
# The whole result of $reply as JSON (a migrate_data to pass on).
result_json() { python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["result"]))' "$reply"; }

# live_migration FROM TO UUID FLAVOR IMAGE: the running guest from host FROM to TO, Nova's
# whole sequence.
live_migration() {
    local from=$1 to=$2 u=$3 i md
    i=$(inst "$u" "$4" "$5")
    op live_migration "$to" check_can_live_migrate_destination "{\"instance\": $i}" || return
    op live_migration "$to" pre_live_migration "{\"instance\": $i}" || return
    md=$(result_json)
    op live_migration "$from" live_migration "{\"instance\": $i, \"dest_host\": \"$to\", \"migrate_data\": $md}" &&
        cell live_migration "migrated ${host_of[$from]} -> ${host_of[$to]}" "$(rget migrated)" true
    op live_migration "$to" post_live_migration_at_destination "{\"instance\": {\"uuid\": \"$u\"}}" &&
        cell live_migration "post on ${host_of[$to]}" "$(vtpm_of)" "$ver $model $mode"
    cell live_migration "running on ${host_of[$to]}" "$(domstate "${host_of[$to]}" "$u")" running
    cell live_migration "no state left on ${host_of[$from]}" "$(has_state "${host_of[$from]}" "$u" "$ver")" no
    cell live_migration "domain's TPM on ${host_of[$to]}" "$(dom_tpm "${host_of[$to]}" "$u")" "$ver $model encrypted"
}

column() {
    local u f f2 i i2 other xfer shelved want_model
    ver=${1%%/*} model=${1#*/}; model=${model%/*} mode=${1##*/} col=$1
    u=$(cat /proc/sys/kernel/random/uuid)
    f=$(flavor m1.tpm "$ver")
    f2=$(flavor m1.tpm.big "$ver")
    i=$(image img-1 "$model")
    i2=$(image img-2 "$model")
    note "column $col: instance $u"

    # spawn on a (started once: libvirt runs swtpm_setup on the first start)
    if ! op spawn "$A" spawn "{\"instance\": $(inst "$u" "$f" "$i")}"; then
        call "$A" destroy "{\"instance\": {\"uuid\": \"$u\"}}"
        return
    fi
    cell spawn "reply's vTPM" "$(vtpm_of)" "$ver $model $mode"
    cell spawn "domain's TPM" "$(dom_tpm a "$u")" "$ver $model encrypted"
    cell spawn "state file on a" "$(has_state a "$u" "$ver")" yes

    op power_cycle "$A" power_off "{\"instance\": {\"uuid\": \"$u\"}}" &&
        cell power_cycle "state after power_off" "$(has_state a "$u" "$ver")" yes
    op power_cycle "$A" power_on "{\"instance\": $(inst_id "$u")}" &&
        cell power_cycle "running again" "$(domstate a "$u")" running

    # The running guest a -> b -> a, its TPM inside QEMU's stream.
    live_migration "$A" "$B" "$u" "$f" "$i"
    live_migration "$B" "$A" "$u" "$f" "$i"

    if op cold_migration "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u" "$f" "$i"), \"dest_host\": \"$B\"}"; then
        xfer=$(rget vtpm_transfer)
        op cold_migration "$B" finish_migration "{\"instance\": $(inst "$u" "$f" "$i"), \"old_flavor\": $f, \"power_on\": false, \"vtpm_transfer\": $xfer}" &&
            cell cold_migration "finish_migration" "$(rget vtpm_state)" restored
        op cold_migration "$A" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}"
        cell cold_migration "state on b" "$(has_state b "$u" "$ver")" yes
        cell cold_migration "no state on a" "$(has_state a "$u" "$ver")" no
        cell cold_migration "domain's TPM on b" "$(dom_tpm b "$u")" "$ver $model encrypted"
    fi

    if op resize "$B" migrate_disk_and_power_off "{\"instance\": $(inst "$u" "$f" "$i"), \"dest_host\": \"$B\", \"new_flavor\": $f2}"; then
        xfer=$(rget vtpm_transfer)
        op resize "$B" finish_migration "{\"instance\": $(inst "$u" "$f2" "$i"), \"old_flavor\": $f, \"power_on\": false, \"vtpm_transfer\": $xfer}" &&
            cell resize "finish_migration in place" "$(rget vtpm_state)" restored
        op resize "$B" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}"
        cell resize "state on b" "$(has_state b "$u" "$ver")" yes
    fi

    if op revert "$B" migrate_disk_and_power_off "{\"instance\": $(inst "$u" "$f2" "$i"), \"dest_host\": \"$A\"}"; then
        xfer=$(rget vtpm_transfer)
        op revert "$A" finish_migration "{\"instance\": $(inst "$u" "$f2" "$i"), \"old_flavor\": $f2, \"power_on\": false, \"vtpm_transfer\": $xfer}"
        op revert "$A" destroy "{\"instance\": {\"uuid\": \"$u\"}}"
        op revert "$B" finish_revert_migration "{\"instance\": $(inst "$u" "$f2" "$i"), \"power_on\": false}" &&
            cell revert "finish_revert_migration" "$(rget vtpm_state)" restored
        cell revert "state back on b" "$(has_state b "$u" "$ver")" yes
        cell revert "none left on a" "$(has_state a "$u" "$ver")" no
    fi

    if op shelve "$B" shelve "{\"instance\": $(inst "$u" "$f2" "$i"), \"offload\": true}"; then
        shelved=$(rget shelved)
        cell shelve "offloaded from b" "$(has_state b "$u" "$ver")" no
        op shelve "$A" unshelve "{\"instance\": $(inst "$u" "$f2" "$i"), \"shelved\": $shelved, \"power_on\": false}" &&
            cell shelve "unshelve on a" "$(rget vtpm_state)" restored
        cell shelve "state on a" "$(has_state a "$u" "$ver")" yes
    fi

    op rebuild "$A" rebuild "{\"instance\": $(inst "$u" "$f2" "$i2")}" &&
        cell rebuild "same vTPM config" "$(rget vtpm_state)" kept

    # A changed vTPM config gives a fresh TPM: the model for 2.0 (rebuild
    # with an image asking for the other one), the version for 1.2 (resize
    # to a 2.0 flavor: 1.2 has only TIS).
    if [ "$ver" = 2.0 ]; then
        [ "$model" = tpm-tis ] && other=tpm-crb || other=tpm-tis
        op vtpm_change "$A" rebuild "{\"instance\": $(inst "$u" "$f2" "$(image img-3 "$other")")}" &&
            cell vtpm_change "rebuild to an image asking for $other" "$(rget vtpm_state)" replaced
        want_model=$other
        cell vtpm_change "domain's TPM" "$(dom_tpm a "$u")" "2.0 $want_model encrypted"
    else
        if op vtpm_change "$A" migrate_disk_and_power_off "{\"instance\": $(inst "$u" "$f2" "$i2"), \"dest_host\": \"$A\", \"new_flavor\": $(flavor m1.tpm2 2.0)}"; then
            xfer=$(rget vtpm_transfer)
            # Started, so that the fresh TPM exists (libvirt makes it at the first start).
            op vtpm_change "$A" finish_migration "{\"instance\": $(inst "$u" "$(flavor m1.tpm2 2.0)" "$i2"), \"old_flavor\": $f2, \"vtpm_transfer\": $xfer}" &&
                cell vtpm_change "resize 1.2 -> 2.0" "$(rget vtpm_state)" fresh
            op vtpm_change "$A" confirm_migration "{\"instance\": {\"uuid\": \"$u\"}}"
            cell vtpm_change "domain's TPM" "$(dom_tpm a "$u")" "2.0 $model encrypted"
            cell vtpm_change "a TPM 2.0 state on a" "$(has_state a "$u" 2.0)" yes
            cell vtpm_change "no TPM 1.2 state left" "$(has_state a "$u" 1.2)" no
        fi
    fi

    op destroy "$A" destroy "{\"instance\": {\"uuid\": \"$u\"}}" &&
        cell destroy "destroy" "$(rget vtpm_state)" deleted
    for h in a b; do
        cell destroy "no state dir on $h" \
            "$(test -e "$(vt_host_root "$h")/var/lib/libvirt/swtpm/$u" && echo present || echo gone)" gone
        cell destroy "no libvirt secret on $h" \
            "$(virsh -q -c "$(vt_host_uri "$h")" secret-list 2>/dev/null | grep -c "$u")" 0
    done
}

# Three columns at a time (one per custody mode: different instances,
# vtpmd runs them in parallel); each writes its lines to a file of its own,
# printed in order, and the counts are taken from the lines.
out=$VT_ROOT/matrix
mkdir -p "$out"
# shellcheck disable=SC2086
set -- ${MATRIX_COLUMNS:-$COLUMNS}
while [ $# -gt 0 ]; do
    pids=()
    for c in "$1" "${2:-}" "${3:-}"; do
        [ -n "$c" ] || continue
        f=$out/${c//\//_}
        ( column "$c" ) > "$f" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    for c in "$1" "${2:-}" "${3:-}"; do
        [ -n "$c" ] || continue
        f=$out/${c//\//_}
        cat "$f"
        passed=$((passed + $(grep -c '^ok - ' "$f")))
        failed=$((failed + $(grep -c '^not ok - ' "$f")))
    done
    shift $(( $# < 3 ? $# : 3 ))
done
finish
