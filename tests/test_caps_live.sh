#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `vtpmctl capabilities` against a real libvirtd (QEMU driver, swtpm): the
# traits a host offers and why the others are missing, as the [libvirt] and
# [vtpm] settings change.  Runs under tests/integration.sh, which starts
# libvirt host "a" and exports VT_HOST_A_URI.
# Usage: integration.sh test_caps_live.sh PATH/TO/vtpmctl
#
# Prints one "ok - ..." / "not ok - ..." line per check, then "N passed, M
# failed"; exits 1 if any check failed.
set -u

V=${1:?usage: integration.sh test_caps_live.sh PATH/TO/vtpmctl}
if [ ! -x "$V" ] || [ -z "${VT_HOST_A_URI:-}" ]; then
    echo "not ok - needs an executable vtpmctl ($V) and VT_HOST_A_URI (run under integration.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
URI=$VT_HOST_A_URI

tmp=$(mktemp -d /tmp/test_caps_live.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0

T12=COMPUTE_SECURITY_TPM_1_2
T20=COMPUTE_SECURITY_TPM_2_0
TIS=COMPUTE_SECURITY_TPM_TIS
CRB=COMPUTE_SECURITY_TPM_CRB
USER=COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER
HOST=COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST
DEPL=COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT
UEFI=COMPUTE_FIRMWARE_UEFI
SB=COMPUTE_SECURITY_UEFI_SECURE_BOOT
B1=CUSTOM_VTPM_PCR_BANK_SHA1
B256=CUSTOM_VTPM_PCR_BANK_SHA256
B384=CUSTOM_VTPM_PCR_BANK_SHA384
B512=CUSTOM_VTPM_PCR_BANK_SHA512
CA=CUSTOM_VTPM_EK_DEPLOYMENT_CA
export T12 T20 TIS CRB USER HOST DEPL UEFI SB B1 B256 B384 B512 CA
TPM_TRAITS="[T12, T20, TIS, CRB]"
# Debian 12's swtpm (libtpms 0.9) has all four banks: probed at start.
BANKS="[B1, B256, B384, B512]"
ALL_TRAITS="[T12, T20, TIS, CRB, USER, HOST, DEPL, B1, B256, B384, B512, CA]"
# The firmware traits do not depend on the vTPM settings: the machine has
# the ovmf package (tools/install-deps), so every configuration offers them.
FW="[UEFI, SB]"

# ---- harness -----------------------------------------------------------------

# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"





# One python3 answers every JSON question (starting python3 per check costs
# ~0.5 s on a loaded host).  Request: FILE<TAB>PYEXPR on one line; answer: 1
# (PYEXPR true for d, the parsed FILE) or 0 (false, or FILE unparsable).
# The trait names above are Python names too; m is d["missing"].
coproc PY {
    exec python3 -u -c '
import json, os, sys
names = {k: os.environ[k] for k in ("T12", "T20", "TIS", "CRB", "USER", "HOST", "DEPL", "UEFI",
                                    "SB", "B1", "B256", "B384", "B512", "CA")}
for line in sys.stdin:
    path, expr = line.rstrip("\n").split("\t", 1)
    try:
        with open(path) as f:
            d = json.load(f)
        ns = dict(names, d=d, m=d.get("missing", {}) if isinstance(d, dict) else {})
        ok = bool(eval("(" + expr + ")", ns))
    except Exception:
        ok = False
    print(1 if ok else 0, flush=True)
'
}

# js PYEXPR: stdout is one JSON value d for which PYEXPR is true.
js() {
    local ans
    printf '%s\t%s\n' "$OUT" "${1//$'\n'/ }" >&"${PY[1]}"
    read -r ans <&"${PY[0]}" || return 1
    [ "$ans" = 1 ]
}

echo '{"missing": {"a": 1}}' > "$OUT"
if ! js "m == {'a': 1} and T12 == 'COMPUTE_SECURITY_TPM_1_2'" || js "m == {}"; then
    echo "not ok - the python3 helper answers"
    echo "0 passed, 1 failed"
    exit 1
fi

# caps NAME CONFIG-TEXT: vtpmctl capabilities with that config file.
caps() {
    printf '%s\n' "$2" > "$tmp/$1.conf"
    timeout 120 "$V" capabilities --connect "$URI" --config "$tmp/$1.conf" > "$OUT" 2> "$ERR"
    RC=$?
}

ENABLED='[worker]
host = caps-live-a
[libvirt]
swtpm_enabled = true'

# ---- swtpm enabled: everything but the deployment mode ---------------------

caps enabled "$ENABLED"
check "enabled: exit 0 with JSON on stdout" eval 'rc_is 0 && js "isinstance(d, dict)"'
check "enabled: host is [worker] host" js "d['host'] == 'caps-live-a'"
check "enabled: offers TPM 1.2, 2.0, TIS, CRB, secret security user and host, 4 PCR banks, UEFI, Secure Boot" \
    js "sorted(d['traits']) == sorted([T12, T20, TIS, CRB, USER, HOST] + $BANKS + $FW)"
check "enabled: only DEPLOYMENT and the EK CA missing, because neither is configured" \
    js "sorted(m) == sorted([DEPL, CA]) and 'deployment' in m[DEPL] and
        'supported_secret_security' in m[DEPL] and
        m[CA].startswith('[vtpm] ek_ca_cert is not set') and 'host-local CA' in m[CA]"
check "enabled: tpm.pcr_banks are the four probed" \
    js "sorted(d['tpm']['pcr_banks']) == ['sha1', 'sha256', 'sha384', 'sha512']"
check "enabled: ek_ca not configured" js "d['ek_ca']['configured'] is False"
check "enabled: libvirt_version 9.0.0" js "d['libvirt_version'] == '9.0.0'"
check "enabled: qemu_version 7.2.x" js "d['qemu_version'].startswith('7.2')"
check "enabled: arch x86_64" js "d['arch'] == 'x86_64'"
check "enabled: tpm.supported" js "d['tpm']['supported'] is True"
check "enabled: tpm.models has tpm-tis and tpm-crb" \
    js "{'tpm-tis', 'tpm-crb'} <= set(d['tpm']['models'])"
check "enabled: tpm.versions has 1.2 and 2.0" js "{'1.2', '2.0'} <= set(d['tpm']['versions'])"
check "enabled: tpm.backends has emulator" js "'emulator' in d['tpm']['backends']"

# The tpm part agrees with what libvirtd itself says.
if virsh -q -c "$URI" domcapabilities > "$tmp/domcaps.xml" 2> "$tmp/domcaps.err"; then
    cp "$OUT" "$tmp/enabled.json"
    check "enabled: tpm.models equal virsh domcapabilities' TPM models" \
        python3 -c '
import json, sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
want = sorted(v.text.strip() for v in r.findall("devices/tpm/enum[@name=\"model\"]/value")
              if v.text.strip() in ("tpm-tis", "tpm-crb"))
got = sorted(json.load(open(sys.argv[2]))["tpm"]["models"])
sys.exit(0 if want == got else 1)' "$tmp/domcaps.xml" "$tmp/enabled.json"
else
    fail "virsh domcapabilities on host a"
    sed 's/^/#   /' "$tmp/domcaps.err"
fi

# ---- swtpm disabled --------------------------------------------------------

caps disabled '[libvirt]
swtpm_enabled = false'
check "disabled: exit 0" rc_is 0
check "disabled: no vTPM traits, the firmware ones still" js "sorted(d['traits']) == sorted($FW)"
check "disabled: all 12 vTPM traits missing" js "sorted(m) == sorted($ALL_TRAITS)"
check "disabled: every reason mentions swtpm_enabled" \
    js "all('swtpm_enabled' in v for v in m.values())"
check "disabled: host facts still reported" \
    js "d['arch'] == 'x86_64' and d['libvirt_version'] == '9.0.0' and
        d['qemu_version'].startswith('7.2')"

# The default configuration has swtpm disabled.
printf '' > "$tmp/empty.conf"
timeout 120 "$V" capabilities --connect "$URI" --config "$tmp/empty.conf" > "$OUT" 2> "$ERR"
RC=$?
check "empty config (default): no vTPM traits, reasons mention swtpm_enabled" \
    eval 'rc_is 0 && js "sorted(d[\"traits\"]) == sorted($FW) and all(\"swtpm_enabled\" in v for v in m.values())"'

# ---- swtpm user / group that do not exist ----------------------------------

caps nouser "$ENABLED
swtpm_user = nosuchuser"
check "swtpm_user=nosuchuser: exit 0" rc_is 0
check "swtpm_user=nosuchuser: no TPM traits" \
    js "not set(d['traits']) & set($TPM_TRAITS)"
check "swtpm_user=nosuchuser: no vTPM traits at all" js "sorted(d['traits']) == sorted($FW)"
check "swtpm_user=nosuchuser: every reason names nosuchuser" \
    js "sorted(m) == sorted($ALL_TRAITS) and all('nosuchuser' in v for v in m.values())"
check "swtpm_user=nosuchuser: reasons no longer mention swtpm_enabled" \
    js "not any('swtpm_enabled' in v for v in m.values())"

caps nogroup "$ENABLED
swtpm_group = nosuchgroup"
check "swtpm_group=nosuchgroup: no vTPM traits, every reason names nosuchgroup" \
    eval 'rc_is 0 && js "sorted(d[\"traits\"]) == sorted($FW) and all(\"nosuchgroup\" in v for v in m.values())"'

# ---- secret security modes --------------------------------------------------

caps useronly "$ENABLED
[vtpm]
supported_secret_security = user"
check "supported_secret_security=user: exit 0" rc_is 0
check "supported_secret_security=user: HOST missing with a reason" \
    js "HOST not in d['traits'] and 'host' in m.get(HOST, '') and
        'supported_secret_security' in m[HOST]"
check "supported_secret_security=user: USER, the TPM and the bank traits still offered" \
    js "sorted(d['traits']) == sorted([T12, T20, TIS, CRB, USER] + $BANKS + $FW)"

caps nokey "$ENABLED
[vtpm]
supported_secret_security = user;host;deployment"
check "deployment without deployment_key_file: DEPLOYMENT missing, says the key file is not set" \
    eval 'rc_is 0 && js "DEPL not in d[\"traits\"] and \"deployment_key_file\" in m.get(DEPL, \"\")"'

# Capabilities only ask whether a key file is set; vtpmd's configuration
# check wants it private (0600) like any key.
head -c 32 /dev/urandom > "$tmp/deployment.key"
chmod 600 "$tmp/deployment.key"
caps deployment "$ENABLED
[vtpm]
supported_secret_security = user;host;deployment
deployment_key_file = $tmp/deployment.key"
check "deployment + deployment_key_file: exit 0" rc_is 0
check "deployment + deployment_key_file: DEPLOYMENT offered" js "DEPL in d['traits']"
check "deployment + deployment_key_file: every trait but the EK CA's" \
    js "sorted(d['traits']) == sorted([t for t in $ALL_TRAITS if t != CA] + $FW) and list(m) == [CA]"

# ---- the deployment's EK CA -------------------------------------------------

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/O=caps-live/CN=vTPM EK CA" -keyout "$tmp/ek-ca.key" -out "$tmp/ek-ca.pem" \
    2> "$tmp/openssl.err" || sed 's/^/#   /' "$tmp/openssl.err"
chmod 600 "$tmp/ek-ca.key"
ca_sha=$(openssl x509 -in "$tmp/ek-ca.pem" -outform der | sha256sum | cut -d' ' -f1)
DEPLOYMENT_CA="$ENABLED
[vtpm]
supported_secret_security = user;host;deployment
deployment_key_file = $tmp/deployment.key
ek_ca_cert = $tmp/ek-ca.pem"
caps ekca "$DEPLOYMENT_CA
ek_ca_key = $tmp/ek-ca.key"
check "EK CA configured: every trait, nothing missing" \
    eval 'rc_is 0 && js "sorted(d[\"traits\"]) == sorted($ALL_TRAITS + $FW) and m == {}"'
check "EK CA configured: ek_ca names its subject and the sha256 of its DER" \
    js "d['ek_ca'] == {'configured': True, 'subject': 'CN=vTPM EK CA,O=caps-live',
                       'sha256': '$ca_sha'}"

# A CA key others may read is refused, as vtpmd would refuse to start.
cp "$tmp/ek-ca.key" "$tmp/ek-ca-open.key"
chmod 644 "$tmp/ek-ca-open.key"
caps ekca_open "$DEPLOYMENT_CA
ek_ca_key = $tmp/ek-ca-open.key"
check "EK CA key mode 0644: refused, naming the key and ek_ca_key" \
    eval '! rc_is 0 && grep -q "ek-ca-open.key has mode 0644 and holds a private key (\[vtpm\] ek_ca_key)" "$ERR"'

# ---- UEFI and Secure Boot ----------------------------------------------------

# What libvirtd itself says for q35: auto-selection offers efi, and a
# secure loader.
if virsh -q -c "$URI" domcapabilities --machine q35 > "$tmp/q35.xml" 2> "$tmp/q35.err"; then
    check "virsh domcapabilities --machine q35: efi auto-selection and a secure loader" \
        python3 -c '
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
fw = [v.text for v in r.findall("os/enum[@name=\"firmware\"]/value")]
sec = [v.text for v in r.findall("os/loader/enum[@name=\"secure\"]/value")]
sys.exit(0 if "efi" in fw and "yes" in sec else 1)' "$tmp/q35.xml"
else
    fail "virsh domcapabilities --machine q35 on host a"
    sed 's/^/#   /' "$tmp/q35.err"
fi

# Debian's snakeoil test pair pinned: the loader is a link to the secboot
# build a descriptor names.
caps snakeoil "$ENABLED
uefi_loader = /usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd
uefi_nvram_template = /usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
check "snakeoil pair pinned: UEFI and Secure Boot offered" \
    eval 'rc_is 0 && js "UEFI in d[\"traits\"] and SB in d[\"traits\"]"'

# A plain (non Secure Boot) loader pinned: no Secure Boot, and why.
caps plain "$ENABLED
uefi_loader = /usr/share/OVMF/OVMF_CODE_4M.fd
uefi_nvram_template = /usr/share/OVMF/OVMF_VARS_4M.fd"
check "a plain loader pinned: Secure Boot missing, no descriptor says secure-boot; UEFI still" \
    eval 'rc_is 0 && js "SB not in d[\"traits\"] and UEFI in d[\"traits\"] and
          \"describes [libvirt] uefi_loader /usr/share/OVMF/OVMF_CODE_4M.fd\" in m.get(SB, \"\")"'

caps notemplate "$ENABLED
uefi_loader = /usr/share/OVMF/OVMF_CODE_4M.secboot.fd
uefi_nvram_template = $tmp/no-such-vars.fd"
check "a missing template pinned: Secure Boot missing, the reason names it" \
    eval 'rc_is 0 && js "SB not in d[\"traits\"] and \"uefi_nvram_template $tmp/no-such-vars.fd: No such file\" in m.get(SB, \"\")"'

tap_done
