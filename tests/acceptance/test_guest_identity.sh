#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Acceptance: a guest's own TPM proves the identity get_vtpm_identity
# reports (docs/security.md, TPM identity).
#
# Run under tests/integration.sh with two hosts on a network:
#   integration.sh --net --hosts 2 tests/acceptance/test_guest_identity.sh VTPMCTL VTPMD
#
# Both vtpmds have the deployment's EK CA ([vtpm] ek_ca_cert, ek_ca_key: a
# test CA made here with openssl) and hold the TPM's key (host custody).
# One TPM 2.0 guest asking for the PCR banks sha256,sha384 boots the test
# guest's "identity" script: it reads its EK certificates from NV
# (tpm2_nvread -C o 0x01c00002 / 0x01c0000a), recreates its EKs from the
# TCG templates (tpm2_createek -G rsa / -G ecc) and lists its active PCR
# banks.  The suite checks that
#   - the certificates and public keys equal get_vtpm_identity's, and
#     openssl verify chains the guest's certificates to the CA, with the
#     instance UUID as their subject;
#   - vtpmctl identity --verify says both verified;
#   - the guest sees exactly the banks sha256 and sha384;
#   - after a migration a -> b, a shelve on b and an unshelve on a, and a
#     rekey, the guest and the API report the same identity.
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

# ---- the deployment's EK CA --------------------------------------------------------

ca=$VT_ROOT/ek-ca
mkdir -p "$ca"
if ! (cd "$ca" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj '/O=vtpmd acceptance/CN=Deployment EK CA' \
        -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign) \
        > "$ca/openssl.out" 2>&1; then
    sed 's/^/#   /' "$ca/openssl.out"
    nok "make a test EK CA with openssl"
    finish
fi
chmod 0600 "$ca/ca.key"

guest_build a b
start_two_hosts "vtpm.ek_ca_cert=$ca/ca.pem" "vtpm.ek_ca_key=$ca/ca.key"

# ---- the instance --------------------------------------------------------------------

U=$(cat /proc/sys/kernel/random/uuid)
FLAVOR='{"name": "m1.id", "vcpus": 1, "memory_mb": 256, "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_secret_security": "host"}}'
INST=$(printf '{"uuid": "%s", "name": "accept-id", "flavor": %s, "image": {"id": "guest-id", "properties": {"hw_tpm_pcr_banks": "sha256,sha384"}}, "boot": {"kernel": "%s/vmlinuz", "initrd": "%s/initrd.img", "cmdline": "console=ttyS0 vtpm.script=identity"}}' \
    "$U" "$FLAVOR" "$images" "$images")
note "instance $U: TPM 2.0 with PCR banks sha256,sha384, host custody, the deployment's EK CA"

op() { # LABEL WORKER METHOD ARGS
    if call "$2" "$3" "$4"; then
        ok "$1: $3 on host ${host_of[$2]} ($(secs "$call_ms") s)"
        return 0
    fi
    nok "$1: $3 on host ${host_of[$2]}: $reply"
    return 1
}

# identity_json WORKER: the get_vtpm_identity result, compact JSON ("" on a fault).
identity_json() {
    if call "$1" get_vtpm_identity "{\"instance\": {\"uuid\": \"$U\"}}"; then
        python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["result"]))' "$reply"
    else
        note "get_vtpm_identity on host ${host_of[$1]}: $reply"
    fi
}

# What the record says, in the guest's terms: the certificates' DER as hex
# and the public keys' base64, "alg=value" per line.
record_view() {
    python3 -c '
import base64, json, sys
r = json.loads(sys.argv[1])
def body(pem): return "".join(l for l in pem.splitlines() if "-----" not in l)
name = {"rsa2048": "rsa", "ecc-nist-p256": "ecc"}
for e in r["ek"]:
    a = name[e["alg"]]
    print(f"ek_{a}_cert=" + base64.b64decode(body(e["cert_pem"])).hex())
    print(f"ek_{a}_pub=" + body(e["public_pem"]))' "$1"
}

# openssl verify of the guest's certificate of ALG (hex DER) against the CA,
# and its subject.
guest_cert_verifies() { # LABEL ALG HEX
    local f=$VT_ROOT/guest-ek-$2.pem v s
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$3" |
        openssl x509 -inform der -out "$f" 2>/dev/null
    v=$(openssl verify -CAfile "$ca/ca.pem" "$f" 2>&1)
    check "$1: openssl verify chains the guest's $2 EK certificate to the CA" "${v##*: }" OK
    s=$(openssl x509 -in "$f" -noout -subject -nameopt RFC2253 2>&1)
    check "$1: the guest's $2 EK certificate names the instance" "$s" "subject=CN=$U"
}

first=
# booted LABEL HOST: the guest ran "identity"; its view matches the API's
# on WORKER, and (after the first boot) the first boot's.
booted() {
    local label=$1 h=$2 worker view rec alg
    worker=$A
    [ "$h" = b ] && worker=$B
    boot_and_read "$h" "$U" "$label" || return 1
    check "$label: guest sees TPM 2.0" "$(get version_major <<< "$res")" 2
    check "$label: guest sees exactly the PCR banks asked for" "$(get pcr_banks <<< "$res")" \
        sha256,sha384
    view=$(grep -E '^ek_(rsa|ecc)_(cert|pub)=' <<< "$res" | sort)
    rec=$(record_view "$(identity_json "$worker")" 2>/dev/null | sort)
    for alg in rsa ecc; do
        check "$label: the $alg EK certificate in the guest's NV is the API's" \
            "$(get "ek_${alg}_cert" <<< "$view" | sha256sum | cut -c1-16)" \
            "$(get "ek_${alg}_cert" <<< "$rec" | sha256sum | cut -c1-16)"
        check "$label: the $alg EK tpm2_createek recreates is the API's public key" \
            "$(get "ek_${alg}_pub" <<< "$view" | sha256sum | cut -c1-16)" \
            "$(get "ek_${alg}_pub" <<< "$rec" | sha256sum | cut -c1-16)"
    done
    if [ -z "$first" ]; then
        first=$view
        for alg in rsa ecc; do
            guest_cert_verifies "$label" "$alg" "$(get "ek_${alg}_cert" <<< "$view")"
        done
    else
        check "$label: the guest's identity is the first boot's" \
            "$(sha256sum <<< "$view" | cut -c1-16)" "$(sha256sum <<< "$first" | cut -c1-16)"
    fi
}

label="spawn on a"
op "$label" "$A" spawn "{\"instance\": $INST}" || finish
booted "$label" a || finish
if out=$("$vtpmctl" identity --host "$A" --verify "$ca/ca.pem" "$U" 2>&1); then
    ok "$label: vtpmctl identity --verify: exit 0"
else
    nok "$label: vtpmctl identity --verify: $out"
fi
check "$label: vtpmctl identity --verify says rsa2048 verified" \
    "$(grep -c '^rsa2048: verified against' <<< "$out")" 1
check "$label: vtpmctl identity --verify says ecc-nist-p256 verified" \
    "$(grep -c '^ecc-nist-p256: verified against' <<< "$out")" 1

label="migration a -> b"
if op "$label" "$A" migrate_disk_and_power_off "{\"instance\": $INST, \"dest_host\": \"$B\"}"; then
    xfer=$(rget vtpm_transfer)
    if op "$label" "$B" finish_migration "{\"instance\": $INST, \"old_flavor\": $FLAVOR, \"vtpm_transfer\": $xfer}"; then
        check "$label: identity_changed" "$(rget identity_changed)" false
        booted "$label" b
    fi
    op "$label" "$A" confirm_migration "{\"instance\": {\"uuid\": \"$U\"}}"
fi

label="shelve on b, unshelve on a"
if op "$label" "$B" shelve "{\"instance\": $INST, \"offload\": true}"; then
    shelved=$(rget shelved)
    if op "$label" "$A" unshelve "{\"instance\": $INST, \"shelved\": $shelved}"; then
        check "$label: identity_changed" "$(rget identity_changed)" false
        booted "$label" a
    fi
fi

label="rekey on a"
if op "$label" "$A" rekey "{\"instance\": {\"uuid\": \"$U\"}}"; then
    op "$label" "$A" power_on "{\"instance\": {\"uuid\": \"$U\"}}" && booted "$label" a
fi

op "destroy" "$A" destroy "{\"instance\": {\"uuid\": \"$U\"}}"
finish
