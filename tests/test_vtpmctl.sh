#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The vtpmctl CLI's documented behaviour: resolve, render-xml, capabilities
# (against libvirt's test driver), call (against an unreachable broker),
# the top-level command dispatch and the bash completion.
# Usage: test_vtpmctl.sh PATH/TO/vtpmctl PATH/TO/vtpmctl.bash
#
# Prints one "ok - ..." / "not ok - ..." line per check, then "N passed, M
# failed"; exits 1 if any check failed.
#
# Checks given to eval expand $OUT etc. when they run, hence single quotes.
# shellcheck disable=SC2016
set -u

V=${1:?usage: test_vtpmctl.sh PATH/TO/vtpmctl PATH/TO/vtpmctl.bash}
COMPLETION=${2:?usage: test_vtpmctl.sh PATH/TO/vtpmctl PATH/TO/vtpmctl.bash}
[ -x "$V" ] || { echo "not ok - $V is not executable"; echo "0 passed, 1 failed"; exit 1; }

tmp=$(mktemp -d /tmp/test_vtpmctl.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0

# Unreachable broker: nothing listens on TCP port 1.
DEAD_URL='amqp://guest:guest@127.0.0.1:1/%2f'
UUID=0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001
SECRET=6f1c2b3a-9d8e-4f70-a1b2-c3d4e5f60718

FAULT_CODES='BadRequest UnsupportedVersion UnknownMethod Expired InvalidTPMConfig
FlavorImageConflict TPMUnsupported SecretRequired InstanceNotFound InstanceConflict
StateNotFound StateIntegrity StateTransferFailed HypervisorError Busy Internal'
TRAITS='COMPUTE_SECURITY_TPM_1_2 COMPUTE_SECURITY_TPM_2_0 COMPUTE_SECURITY_TPM_TIS
COMPUTE_SECURITY_TPM_CRB COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER
COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT
CUSTOM_VTPM_PCR_BANK_SHA1 CUSTOM_VTPM_PCR_BANK_SHA256 CUSTOM_VTPM_PCR_BANK_SHA384
CUSTOM_VTPM_PCR_BANK_SHA512 CUSTOM_VTPM_EK_DEPLOYMENT_CA'
export FAULT_CODES TRAITS

# ---- harness -----------------------------------------------------------------

# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"




# run ARGS...: vtpmctl with stdin from $IN (default: nothing).
run() {
    timeout 60 "$V" "$@" < "${IN:-/dev/null}" > "$OUT" 2> "$ERR"
    RC=$?
}

# runin TEXT ARGS...: vtpmctl with TEXT on stdin.
runin() {
    local text=$1
    shift
    printf '%s' "$text" > "$tmp/in"
    IN=$tmp/in run "$@"
}


# One python3 answers every JSON/XML question (starting python3 per check
# costs ~0.5 s on a loaded host).  Request: MODE<TAB>FILE<TAB>PYEXPR[<TAB>SUB]...
# on one line; answer: 1 (PYEXPR true) or 0 (false, or FILE unparsable).
# MODE json: d is the parsed value; MODE xml: r is the root element; subs
# are the SUBs, codes the fault codes and traits the trait names.
coproc PY {
    exec python3 -u -c '
import json, os, sys, xml.etree.ElementTree as ET
codes = os.environ["FAULT_CODES"].split()
traits = os.environ["TRAITS"].split()
for line in sys.stdin:
    mode, path, expr, *subs = line.rstrip("\n").split("\t")
    ns = {"codes": codes, "traits": traits, "subs": subs}
    try:
        if mode == "json":
            with open(path) as f:
                ns["d"] = json.load(f)
        else:
            ns["r"] = ET.parse(path).getroot()
        ok = bool(eval("(" + expr + ")", ns))
    except Exception:
        ok = False
    print(1 if ok else 0, flush=True)
'
}

# pyq MODE PYEXPR [SUB...]: ask the python3 coprocess about $OUT.
pyq() {
    local mode=$1 expr=${2//$'\n'/ } ans
    shift 2
    {
        printf '%s\t%s\t%s' "$mode" "$OUT" "$expr"
        [ $# -eq 0 ] || printf '\t%s' "$@"
        printf '\n'
    } >&"${PY[1]}"
    read -r ans <&"${PY[0]}" || return 1
    [ "$ans" = 1 ]
}

# js PYEXPR: stdout is one JSON value d for which PYEXPR is true.
js() { pyq json "$@"; }

# xq PYEXPR: stdout is XML whose root element r makes PYEXPR true.
xq() { pyq xml "$@"; }

# Expect exit 0 and a JSON stdout for which PYEXPR holds.
expect_json() {
    local desc=$1 expr=$2
    if rc_is 0 && js "$expr"; then pass "$desc"; else fail "$desc"; fi
}

# expect_fault DESC CODE [SUBSTRING...]: exit 1 and exactly
# {"fault": {"code": CODE, "message": "...SUBSTRING...", "retryable": R}} on
# stdout, R being what the protocol says of CODE (only Busy and the
# worker-side transient faults are retryable).
expect_fault() {
    local desc=$1 code=$2 retry=False
    shift 2
    case $code in Busy | HypervisorError | StateTransferFailed | InstanceConflict) retry=True ;; esac
    if rc_is 1 && js "list(d) == ['fault'] and sorted(d['fault']) == ['code', 'message', 'retryable'] and
                      d['fault']['code'] == '$code' and isinstance(d['fault']['message'], str) and
                      d['fault']['retryable'] is $retry and
                      all(s in d['fault']['message'] for s in subs)" "$@"; then
        pass "$desc"
    else
        fail "$desc"
    fi
}

# expect_usage DESC [STDERR-SUBSTRING]: exit 2, nothing on stdout, a
# "vtpmctl: ..." diagnostic on stderr.
expect_usage() {
    local desc=$1 sub=${2:-vtpmctl: }
    if rc_is 2 && [ ! -s "$OUT" ] && grep -qF -- "$sub" "$ERR"; then
        pass "$desc"
    else
        fail "$desc"
    fi
}

echo '{"ok": [1]}' > "$OUT"
if ! js "d == {'ok': [1]}" || js "d == {'ok': [2]}"; then
    echo "not ok - the python3 helper answers"
    echo "0 passed, 1 failed"
    exit 1
fi

# ---- top level -----------------------------------------------------------------

run
expect_usage "no command: exit 2 with usage on stderr" "Usage: vtpmctl COMMAND"
run --help
check "--help: exit 0, usage on stdout naming every command" \
    eval 'rc_is 0 && grep -q "^Usage: vtpmctl COMMAND" "$OUT" && grep -q "^  resolve " "$OUT" &&
          grep -q "^  capabilities " "$OUT" && grep -q "^  render-xml " "$OUT" &&
          grep -q "^  call " "$OUT" && [ ! -s "$ERR" ]'
run -h
check "-h: exit 0 with usage on stdout" eval 'rc_is 0 && grep -q "^Usage: vtpmctl" "$OUT"'
run help
check "help: exit 0 with usage on stdout" eval 'rc_is 0 && grep -q "^Usage: vtpmctl" "$OUT"'
run frobnicate
expect_usage "unknown command: exit 2 naming it" "unknown command 'frobnicate'"
for cmd in resolve capabilities render-xml call identity; do
    run "$cmd" --help
    check "$cmd --help: exit 0 with usage on stdout" \
        eval 'rc_is 0 && grep -q "vtpmctl $cmd" "$OUT" && grep -q -- "--help" "$OUT"'
done

# ---- resolve -------------------------------------------------------------------

# The firmware decision beside the vTPM decision: BIOS on q35 unless asked.
BIOS="{'type': 'bios', 'secure_boot': 'disabled', 'machine': 'q35', 'required_traits': []}"
run resolve
expect_json "resolve: no specs -> {\"vtpm\": null, \"firmware\": BIOS}" \
    "d == {'vtpm': None, 'firmware': $BIOS}"
run resolve -f hw:tpm_model=tpm-crb
expect_json "resolve: only hw:tpm_model -> no vTPM" "d['vtpm'] is None"
run resolve -i hw_tpm_model=tpm-tis
expect_json "resolve: only hw_tpm_model image property -> no vTPM" "d['vtpm'] is None"
run resolve -f hw:tpm_secret_security=host
expect_json "resolve: only hw:tpm_secret_security -> no vTPM" "d['vtpm'] is None"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=forbidden
expect_json "resolve: only a forbidden version trait -> no vTPM" "d['vtpm'] is None"

run resolve -f hw:tpm_version=2.0
expect_json "resolve: flavor hw:tpm_version=2.0 -> 2.0, tpm-tis, user, required traits" \
    "d == {'vtpm': {'version': '2.0', 'model': 'tpm-tis', 'secret_security': 'user',
           'required_traits': ['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_TIS',
                               'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER']},
           'firmware': $BIOS}"
run resolve -i hw_tpm_version=1.2
expect_json "resolve: image hw_tpm_version=1.2 -> 1.2, tpm-tis, user" \
    "d['vtpm'] == {'version': '1.2', 'model': 'tpm-tis', 'secret_security': 'user',
                   'required_traits': ['COMPUTE_SECURITY_TPM_1_2', 'COMPUTE_SECURITY_TPM_TIS',
                                       'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER']}"
run resolve -f hw:tpm_version=2.0 -i hw_tpm_version=2.0
expect_json "resolve: flavor and image agree on 2.0" "d['vtpm']['version'] == '2.0'"
run resolve -f hw:tpm_version= -i hw_tpm_version=1.2
expect_json "resolve: an empty flavor value falls through to the image (Nova)" \
    "d['vtpm']['version'] == '1.2'"
run resolve -f hw:tpm_version=2.0 -i hw_tpm_pcr_banks=sha384,SHA256
expect_json "resolve: PCR banks from the image, listed in bank order, one trait each" \
    "d['vtpm']['pcr_banks'] == ['sha256', 'sha384'] and d['vtpm']['required_traits'][3:] ==
     ['CUSTOM_VTPM_PCR_BANK_SHA256', 'CUSTOM_VTPM_PCR_BANK_SHA384']"
run resolve -f hw:tpm_version=1.2 -f hw:tpm_pcr_banks=sha1
expect_fault "resolve: PCR banks with TPM 1.2 -> InvalidTPMConfig naming both settings" \
    InvalidTPMConfig "hw:tpm_pcr_banks=sha1" "hw:tpm_version=1.2"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=tpm-crb
expect_json "resolve: flavor 2.0 + tpm-crb -> CRB with its trait" \
    "d['vtpm']['model'] == 'tpm-crb' and d['vtpm']['required_traits'] ==
     ['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_CRB',
      'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER']"
run resolve -f hw:tpm_version=2.0 -i hw_tpm_model=tpm-crb
expect_json "resolve: flavor version + image model tpm-crb -> CRB" \
    "d['vtpm']['version'] == '2.0' and d['vtpm']['model'] == 'tpm-crb'"
run resolve -i hw_tpm_version=2.0 -i hw_tpm_model=tpm-tis
expect_json "resolve: image version + image model tpm-tis -> TIS" \
    "d['vtpm']['version'] == '2.0' and d['vtpm']['model'] == 'tpm-tis'"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_secret_security=host
expect_json "resolve: hw:tpm_secret_security=host -> host and its trait" \
    "d['vtpm']['secret_security'] == 'host' and d['vtpm']['required_traits'] ==
     ['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_TIS',
      'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST']"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_secret_security=user
expect_json "resolve: hw:tpm_secret_security=user -> user" \
    "d['vtpm']['secret_security'] == 'user'"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=tpm-crb -f hw:tpm_secret_security=deployment
expect_json "resolve: CRB + deployment -> all three traits" \
    "d['vtpm']['required_traits'] == ['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_CRB',
     'COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT']"
run resolve -f hw:tpm_version=2.0 -i hw_tpm_secret_security=host
expect_json "resolve: secret security is a flavor setting only (image value ignored)" \
    "d['vtpm']['secret_security'] == 'user'"
run resolve -f hw:tpm_version=1.2 -f hw:tpm_secret_security=host
expect_json "resolve: 1.2 + host -> the 1.2 trait set" \
    "d['vtpm']['required_traits'] == ['COMPUTE_SECURITY_TPM_1_2', 'COMPUTE_SECURITY_TPM_TIS',
     'COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST']"

# Seed-spec forms.
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=required
expect_json "resolve: flavor trait:COMPUTE_SECURITY_TPM_2_0=required -> 2.0 TIS user" \
    "d['vtpm'] == {'version': '2.0', 'model': 'tpm-tis', 'secret_security': 'user',
                   'required_traits': ['COMPUTE_SECURITY_TPM_2_0', 'COMPUTE_SECURITY_TPM_TIS',
                                       'COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER']}"
run resolve -i trait:COMPUTE_SECURITY_TPM_1_2=required
expect_json "resolve: image trait:COMPUTE_SECURITY_TPM_1_2=required -> 1.2" \
    "d['vtpm']['version'] == '1.2'"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=required -i hw_tpm_version=2.0
expect_json "resolve: a required trait and the same version agree" "d['vtpm']['version'] == '2.0'"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=forbidden -f hw:tpm_version=1.2
expect_json "resolve: forbidding 2.0 while asking for 1.2 -> 1.2" "d['vtpm']['version'] == '1.2'"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=CRB
expect_json "resolve: model \"CRB\" -> tpm-crb" "d['vtpm']['model'] == 'tpm-crb'"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=tis
expect_json "resolve: model \"tis\" -> tpm-tis" "d['vtpm']['model'] == 'tpm-tis'"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=required -i hw_tpm_model=Crb
expect_json "resolve: trait + image model \"Crb\" (any case) -> 2.0 tpm-crb" \
    "d['vtpm']['version'] == '2.0' and d['vtpm']['model'] == 'tpm-crb' and
     'COMPUTE_SECURITY_TPM_CRB' in d['vtpm']['required_traits']"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=CRB -i hw_tpm_model=tpm-crb
expect_json "resolve: \"CRB\" and tpm-crb are the same model, no conflict" \
    "d['vtpm']['model'] == 'tpm-crb'"

# InvalidTPMConfig.
run resolve -f hw:tpm_version=3.0
expect_fault "resolve: flavor version 3.0 -> InvalidTPMConfig naming key and source" \
    InvalidTPMConfig "flavor extra spec" "hw:tpm_version=3.0"
run resolve -i hw_tpm_version=2
expect_fault "resolve: image version 2 -> InvalidTPMConfig naming key and source" \
    InvalidTPMConfig "image property" "hw_tpm_version=2"
run resolve -i hw_tpm_version=
expect_fault "resolve: empty image version -> InvalidTPMConfig (Nova)" \
    InvalidTPMConfig "hw_tpm_version"
run resolve -f hw:tpm_version=1.2 -f hw:tpm_model=tpm-crb
expect_fault "resolve: CRB with 1.2 -> InvalidTPMConfig naming both settings" \
    InvalidTPMConfig "hw:tpm_model=tpm-crb" "hw:tpm_version=1.2"
run resolve -i hw_tpm_version=1.2 -f hw:tpm_model=CRB
expect_fault "resolve: \"CRB\" with image 1.2 -> InvalidTPMConfig" \
    InvalidTPMConfig "hw:tpm_model=CRB" "image property hw_tpm_version=1.2"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=tpm-foo
expect_fault "resolve: bad model -> InvalidTPMConfig naming it" \
    InvalidTPMConfig "flavor extra spec" "hw:tpm_model=tpm-foo"
run resolve -f hw:tpm_version=2.0 -i hw_tpm_model=bogus
expect_fault "resolve: bad image model -> InvalidTPMConfig naming the image property" \
    InvalidTPMConfig "image property" "hw_tpm_model=bogus"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_secret_security=nobody
expect_fault "resolve: bad secret security -> InvalidTPMConfig naming it" \
    InvalidTPMConfig "flavor extra spec" "hw:tpm_secret_security=nobody"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=preferred
expect_fault "resolve: bad trait value -> InvalidTPMConfig" \
    InvalidTPMConfig "trait:COMPUTE_SECURITY_TPM_2_0=preferred"

# FlavorImageConflict.
run resolve -f hw:tpm_version=2.0 -i hw_tpm_version=1.2
expect_fault "resolve: flavor 2.0 vs image 1.2 -> FlavorImageConflict naming both" \
    FlavorImageConflict "flavor extra spec hw:tpm_version=2.0" "image property hw_tpm_version=1.2"
run resolve -f hw:tpm_version=2.0 -f hw:tpm_model=tpm-tis -i hw_tpm_model=tpm-crb
expect_fault "resolve: flavor tpm-tis vs image tpm-crb -> FlavorImageConflict" \
    FlavorImageConflict "flavor extra spec hw:tpm_model=tpm-tis" "image property hw_tpm_model=tpm-crb"
run resolve -f trait:COMPUTE_SECURITY_TPM_1_2=required -f hw:tpm_version=2.0
expect_fault "resolve: trait 1.2 vs version 2.0 -> FlavorImageConflict naming both" \
    FlavorImageConflict "trait:COMPUTE_SECURITY_TPM_1_2=required" "hw:tpm_version=2.0"
run resolve -i trait:COMPUTE_SECURITY_TPM_2_0=required -i hw_tpm_version=1.2
expect_fault "resolve: image trait 2.0 vs image version 1.2 -> FlavorImageConflict" \
    FlavorImageConflict "image property trait:COMPUTE_SECURITY_TPM_2_0=required" \
    "image property hw_tpm_version=1.2"
run resolve -f trait:COMPUTE_SECURITY_TPM_1_2=required -i trait:COMPUTE_SECURITY_TPM_2_0=required
expect_fault "resolve: both version traits required -> FlavorImageConflict naming both" \
    FlavorImageConflict "flavor extra spec trait:COMPUTE_SECURITY_TPM_1_2=required" \
    "image property trait:COMPUTE_SECURITY_TPM_2_0=required"
run resolve -f trait:COMPUTE_SECURITY_TPM_2_0=forbidden -i hw_tpm_version=2.0
expect_fault "resolve: 2.0 forbidden and asked for -> FlavorImageConflict" \
    FlavorImageConflict "trait:COMPUTE_SECURITY_TPM_2_0=forbidden" "hw_tpm_version=2.0"

# The firmware (Nova's keys).
run resolve -f hw:tpm_version=2.0 -i hw_firmware_type=uefi -i os_secure_boot=required
expect_json "resolve: UEFI + Secure Boot required beside a 2.0 vTPM" \
    "d['vtpm']['version'] == '2.0' and d['firmware'] == {'type': 'uefi', 'secure_boot': 'required',
     'machine': 'q35', 'required_traits': ['COMPUTE_FIRMWARE_UEFI',
     'COMPUTE_SECURITY_UEFI_SECURE_BOOT']}"
run resolve -i hw_firmware_type=uefi
expect_json "resolve: UEFI alone -> COMPUTE_FIRMWARE_UEFI, no vTPM" \
    "d['vtpm'] is None and d['firmware'] == {'type': 'uefi', 'secure_boot': 'disabled',
     'machine': 'q35', 'required_traits': ['COMPUTE_FIRMWARE_UEFI']}"
run resolve -i hw_firmware_type=uefi -f os:secure_boot=optional -i hw_machine_type=pc-q35-7.2
expect_json "resolve: optional -> what UEFI needs; Secure Boot where the host offers it" \
    "d['firmware'] == {'type': 'uefi', 'secure_boot': 'optional', 'machine': 'pc-q35-7.2',
     'required_traits': ['COMPUTE_FIRMWARE_UEFI']}"
run resolve -i hw_machine_type=pc
expect_json "resolve: hw_machine_type=pc, BIOS" "d['firmware']['machine'] == 'pc'"
run resolve -i hw_firmware_type=efi
expect_fault "resolve: hw_firmware_type=efi -> BadRequest naming key, value, source" \
    BadRequest "image property hw_firmware_type=efi" "uefi, bios"
run resolve -i hw_firmware_type=uefi -f os:secure_boot=always
expect_fault "resolve: os:secure_boot=always -> BadRequest naming key, value, source" \
    BadRequest "flavor extra spec os:secure_boot=always" "required, disabled, optional"
run resolve -i hw_firmware_type=uefi -f os:secure_boot=required -i os_secure_boot=disabled
expect_fault "resolve: os:secure_boot vs os_secure_boot -> FlavorImageConflict naming both" \
    FlavorImageConflict "flavor extra spec os:secure_boot=required" \
    "image property os_secure_boot=disabled"
run resolve -i os_secure_boot=required
expect_fault "resolve: Secure Boot without UEFI -> BadRequest" \
    BadRequest "image property os_secure_boot=required" "needs UEFI"
run resolve -i hw_firmware_type=uefi -i os_secure_boot=required -i hw_machine_type=pc
expect_fault "resolve: Secure Boot on pc -> BadRequest naming the machine type" \
    BadRequest "q35" "image property hw_machine_type=pc"
run resolve -i hw_machine_type=virt
expect_fault "resolve: hw_machine_type=virt -> BadRequest" BadRequest "hw_machine_type=virt"
run resolve -f hw:tpm_version=3.0 -i hw_firmware_type=efi
expect_fault "resolve: a bad vTPM and a bad firmware -> the vTPM's fault first" \
    InvalidTPMConfig "hw:tpm_version=3.0"

# Usage errors.
run resolve -f hw:tpm_version
expect_usage "resolve: --flavor-spec without '=' -> exit 2" "expects KEY=VALUE"
run resolve -i hw_tpm_version
expect_usage "resolve: --image-prop without '=' -> exit 2" "expects KEY=VALUE"
run resolve -f =2.0
expect_usage "resolve: empty key -> exit 2" "expects KEY=VALUE"
run resolve --flavour-spec hw:tpm_version=2.0
expect_usage "resolve: unknown option -> exit 2" "--flavour-spec"
run resolve hw:tpm_version=2.0
expect_usage "resolve: stray argument -> exit 2" "unexpected argument 'hw:tpm_version=2.0'"

# ---- render-xml ----------------------------------------------------------------

# spec SPECS_JSON PROPS_JSON: an instance spec with those extra specs/properties.
spec() {
    printf '{"uuid": "%s", "name": "web-1", "flavor": {"name": "m1.small", "vcpus": 1,
"memory_mb": 128, "extra_specs": %s}, "image": {"id": "img-1", "properties": %s}}' \
        "$UUID" "${1:-{\}}" "${2:-{\}}"
}

# validate DESC: stdout is a libvirt domain XML per libvirt's schema.
validate() {
    cp "$OUT" "$tmp/domain.xml"
    if virt-xml-validate "$tmp/domain.xml" domain > "$tmp/validate.out" 2>&1; then
        pass "$1"
    else
        fail "$1"
        sed 's/^/#   virt-xml-validate: /' "$tmp/validate.out"
    fi
}

TPM="r.find('devices/tpm')"
BACKEND="r.find('devices/tpm/backend')"

runin "$(spec '{"hw:tpm_version": "2.0"}')" render-xml
check "render-xml: bare spec with 2.0 -> exit 0, nothing on stderr" eval 'rc_is 0 && [ ! -s "$ERR" ]'
check "render-xml: <tpm model='tpm-tis'><backend type='emulator' version='2.0'>" \
    xq "r.tag == 'domain' and len(r.findall('devices/tpm')) == 1 and
        $TPM.get('model') == 'tpm-tis' and $BACKEND.get('type') == 'emulator' and
        $BACKEND.get('version') == '2.0'"
check "render-xml: <acpi/>, <on_poweroff>destroy</on_poweroff>, <uuid>" \
    xq "r.find('features/acpi') is not None and r.findtext('on_poweroff') == 'destroy' and
        r.findtext('uuid') == '$UUID'"
check "render-xml: no <encryption> without --secret-uuid" \
    xq "r.find('devices/tpm/backend/encryption') is None"
check "render-xml: domain type qemu by default" xq "r.get('type') == 'qemu'"
validate "render-xml: TIS 2.0 domain passes virt-xml-validate"

runin "{\"instance\": $(spec '{"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"}')}" \
    render-xml --secret-uuid "$SECRET"
check "render-xml: {\"instance\": spec} + --secret-uuid -> exit 0" rc_is 0
check "render-xml: CRB -> <tpm model='tpm-crb'> with version 2.0" \
    xq "$TPM.get('model') == 'tpm-crb' and $BACKEND.get('type') == 'emulator' and
        $BACKEND.get('version') == '2.0'"
check "render-xml: --secret-uuid adds <encryption secret='UUID'/>" \
    xq "[e.get('secret') for e in r.findall('devices/tpm/backend/encryption')] == ['$SECRET']"
check "render-xml: wrapped spec keeps <uuid> and <acpi/>" \
    xq "r.findtext('uuid') == '$UUID' and r.find('features/acpi') is not None"
validate "render-xml: CRB domain with <encryption> passes virt-xml-validate"

runin "$(spec '{}' '{"hw_tpm_version": "1.2"}')" render-xml -s "${SECRET^^}" --virt-type kvm
check "render-xml: image 1.2 -> TIS 1.2 backend" \
    xq "$TPM.get('model') == 'tpm-tis' and $BACKEND.get('version') == '1.2'"
check "render-xml: --secret-uuid in upper case is written in libvirt's lower case" \
    xq "r.find('devices/tpm/backend/encryption').get('secret') == '$SECRET'"
check "render-xml: --virt-type kvm -> <domain type='kvm'>" xq "r.get('type') == 'kvm'"
validate "render-xml: TIS 1.2 kvm domain passes virt-xml-validate"

# UEFI with Secure Boot: auto-selection by feature, SMM, the store in the
# instance's state dir (vtpmd's default) next to the TPM state.
runin "$(spec '{"hw:tpm_version": "2.0", "os:secure_boot": "required"}' '{"hw_firmware_type": "uefi"}')" \
    render-xml
check "render-xml: UEFI + Secure Boot -> <os firmware='efi'> with secure-boot and enrolled-keys" \
    xq "r.find('os').get('firmware') == 'efi' and
        {f.get('name'): f.get('enabled') for f in r.findall('os/firmware/feature')} ==
        {'secure-boot': 'yes', 'enrolled-keys': 'yes'}"
check "render-xml: Secure Boot -> <smm state='on'/>" \
    xq "r.find('features/smm').get('state') == 'on'"
check "render-xml: the variable store in the state dir, next to the TPM state" \
    xq "r.findtext('os/nvram') == '/var/lib/libvirt/swtpm/$UUID/nvram.fd'"
validate "render-xml: UEFI Secure Boot domain passes virt-xml-validate"
runin "$(spec '{}' '{"hw_firmware_type": "uefi", "os_secure_boot": "optional", "hw_machine_type": "pc-q35-7.2"}')" \
    render-xml
check "render-xml: optional on a host that offers it -> Secure Boot; no vTPM -> libvirt's store" \
    xq "r.find('os/type').get('machine') == 'pc-q35-7.2' and
        r.find('features/smm') is not None and r.find('os/nvram') is None"
validate "render-xml: UEFI domain without vTPM passes virt-xml-validate"
runin "$(spec '{}' '{"os_secure_boot": "required"}')" render-xml
expect_fault "render-xml: Secure Boot without UEFI -> BadRequest" BadRequest "needs UEFI"

runin "$(spec)" render-xml --secret-uuid "$SECRET"
check "render-xml: no vTPM -> exit 0 and a domain" eval 'rc_is 0 && xq "r.tag == \"domain\""'
check "render-xml: no vTPM -> no <tpm>, no <encryption>" \
    xq "r.find('.//tpm') is None and r.find('.//encryption') is None"
check "render-xml: no vTPM still has <acpi/>, <on_poweroff>, <uuid>" \
    xq "r.find('features/acpi') is not None and r.findtext('on_poweroff') == 'destroy' and
        r.findtext('uuid') == '$UUID'"
validate "render-xml: domain without vTPM passes virt-xml-validate"

runin "$(spec '{"hw:tpm_version": "1.2", "hw:tpm_model": "tpm-crb"}')" render-xml
expect_fault "render-xml: CRB + 1.2 -> exit 1 InvalidTPMConfig" InvalidTPMConfig "hw:tpm_model=tpm-crb"
check "render-xml: CRB + 1.2 -> no XML on stdout" eval '! grep -q "<" "$OUT"'
runin "$(spec '{"hw:tpm_version": "2.0"}' '{"hw_tpm_version": "1.2"}')" render-xml
expect_fault "render-xml: flavor/image conflict -> FlavorImageConflict" FlavorImageConflict \
    "hw:tpm_version=2.0" "hw_tpm_version=1.2"
check "render-xml: conflict -> no XML on stdout" eval '! grep -q "<" "$OUT"'

runin '{"uuid": "'"$UUID"'", "flavor": ' render-xml
expect_fault "render-xml: truncated JSON -> BadRequest about standard input" BadRequest "standard input"
runin '' render-xml
expect_fault "render-xml: empty input -> BadRequest" BadRequest "standard input"
runin '[1, 2]' render-xml
expect_fault "render-xml: a JSON array -> BadRequest naming instance" BadRequest "instance"
runin "$(spec | sed "s/$UUID/0e5c8b0f-1a54-4d36-9a3b/")" render-xml
expect_fault "render-xml: bad uuid -> BadRequest naming instance.uuid" BadRequest "instance.uuid"
runin "{\"instance\": $(spec | sed "s/$UUID/{$UUID}/")}" render-xml
expect_fault "render-xml: braced uuid in {\"instance\"} -> BadRequest naming instance.uuid" \
    BadRequest "instance.uuid"
runin '{"uuid": "'"$UUID"'", "image": {"id": "img-1"}}' render-xml
expect_fault "render-xml: missing flavor -> BadRequest naming instance.flavor" \
    BadRequest "instance.flavor" "missing"
runin '{"uuid": "'"$UUID"'", "flavor": {"name": "m", "vcpus": "1", "memory_mb": 128}, "image": {"id": "i"}}' render-xml
expect_fault "render-xml: vcpus as a string -> BadRequest naming instance.flavor.vcpus" \
    BadRequest "instance.flavor.vcpus"

runin "$(spec '{"hw:tpm_version": "2.0"}')" render-xml --secret-uuid not-a-uuid
expect_usage "render-xml: bad --secret-uuid -> exit 2" "--secret-uuid"
runin "$(spec '{"hw:tpm_version": "2.0"}')" render-xml --virt-type xen
expect_usage "render-xml: bad --virt-type -> exit 2" "--virt-type"
runin "$(spec '{"hw:tpm_version": "2.0"}')" render-xml extra
expect_usage "render-xml: stray argument -> exit 2" "unexpected argument 'extra'"

# ---- capabilities (libvirt's test driver) --------------------------------------

CAPS_SHAPE="sorted(d) == sorted(['host', 'arch', 'libvirt_version', 'qemu_version', 'traits',
            'missing', 'tpm', 'virt_type', 'virt_type_reason', 'ek_ca']) and isinstance(d['host'], str)
            and d['host'] != ''"
# The vTPM traits and the firmware traits (the test driver offers neither).
MISSING_ALL="sorted(d['missing']) == sorted(traits + ['COMPUTE_FIRMWARE_UEFI',
             'COMPUTE_SECURITY_UEFI_SECURE_BOOT']) and
             all(isinstance(v, str) and v.strip() for v in d['missing'].values())"

run capabilities --connect test:///default
check "capabilities (test driver): exit 0" rc_is 0
check "capabilities: JSON with host, arch, versions, traits, missing, tpm" js "$CAPS_SHAPE"
check "capabilities: no traits offered" js "d['traits'] == []"
check "capabilities: virt_type auto resolves to kvm or qemu, with its reason" \
    js "d['virt_type'] in ('kvm', 'qemu') and d['virt_type_reason'].startswith('auto: ')"
check "capabilities: all 14 traits missing, each with a non-empty reason" js "$MISSING_ALL"
check "capabilities: default config -> every vTPM reason mentions swtpm_enabled" \
    js "all('swtpm_enabled' in d['missing'][t] for t in traits)"
check "capabilities: the firmware traits do not depend on swtpm_enabled" \
    js "not any('swtpm_enabled' in d['missing'][t] for t in ['COMPUTE_FIRMWARE_UEFI',
        'COMPUTE_SECURITY_UEFI_SECURE_BOOT'])"
check "capabilities: tpm part says unsupported" \
    js "d['tpm'] == {'supported': False, 'models': [], 'backends': [], 'versions': [],
                     'pcr_banks': []}"
check "capabilities: no EK CA configured -> the host-local CA, said as such" \
    js "d['ek_ca'] == {'configured': False, 'subject': None, 'sha256': None} and
        'host-local CA' in d['missing']['CUSTOM_VTPM_EK_DEPLOYMENT_CA']"

printf '[libvirt]\nswtpm_enabled = true\n' > "$tmp/enabled.conf"
run capabilities --connect test:///default --config "$tmp/enabled.conf"
check "capabilities --config swtpm_enabled=true: exit 0" rc_is 0
check "capabilities --config: still no traits, 14 reasons" \
    js "$CAPS_SHAPE and d['traits'] == [] and $MISSING_ALL"
# The deployment's EK CA: checked as vtpmd checks it at start.
(cd "$tmp" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ekca.key -out ekca.pem -days 2 \
    -subj '/O=vtpmctl test/CN=EK CA' -addext basicConstraints=critical,CA:true) > /dev/null 2>&1
chmod 600 "$tmp/ekca.key"
printf '[vtpm]\nek_ca_cert = %s\nek_ca_key = %s\n' "$tmp/ekca.pem" "$tmp/ekca.key" > "$tmp/ekca.conf"
run capabilities --connect test:///default --config "$tmp/ekca.conf"
check "capabilities --config with an EK CA: its subject and sha256" \
    js "d['ek_ca']['configured'] is True and d['ek_ca']['subject'] == 'CN=EK CA,O=vtpmctl test' and
        len(d['ek_ca']['sha256']) == 64 and
        'ek_ca_cert' not in d['missing']['CUSTOM_VTPM_EK_DEPLOYMENT_CA']"
chmod 640 "$tmp/ekca.key"
run capabilities --connect test:///default --config "$tmp/ekca.conf"
expect_fault "capabilities: an EK CA key of mode 0640 -> BadRequest as vtpmd's start" \
    BadRequest "ek_ca_key" "has mode 0640; it must be 0600"
printf '[libvirt]\nswtpm_enabled = true\nvirt_type = qemu\n' > "$tmp/tcg.conf"
run capabilities --connect test:///default --config "$tmp/tcg.conf"
check "capabilities --config virt_type=qemu: said, with the key as the reason" \
    js "d['virt_type'] == 'qemu' and d['virt_type_reason'] == '[libvirt] virt_type = qemu'"
run capabilities --connect test:///default --config "$tmp/enabled.conf"
check "capabilities --config: reasons no longer mention swtpm_enabled" \
    js "not any('swtpm_enabled' in v for v in d['missing'].values())"
check "capabilities --config: reasons give the domain capabilities reason" \
    js "all('domain capabilities' in v for v in d['missing'].values())"

printf '[libvirt]\nswtpm_enabled = true\nswtpm_enabld = true\n' > "$tmp/typo.conf"
run capabilities --connect test:///default --config "$tmp/typo.conf"
expect_usage "capabilities: unknown config key -> exit 2 with FILE:LINE" "$tmp/typo.conf:3"
check "capabilities: the config error names the key" grep -q "swtpm_enabld" "$ERR"
run capabilities --connect test:///default --config "$tmp/no-such.conf"
expect_usage "capabilities: missing config file -> exit 2 naming it" "$tmp/no-such.conf"
run capabilities --connect test:///default extra
expect_usage "capabilities: stray argument -> exit 2" "unexpected argument 'extra'"
run capabilities --connect "qemu:///system?socket=$tmp/no-such-sock"
expect_fault "capabilities: unreachable libvirt -> HypervisorError naming the URI" \
    HypervisorError "cannot connect to libvirt" "$tmp/no-such-sock"

# ---- call ----------------------------------------------------------------------

run call --url "$DEAD_URL" --timeout 5 get_capabilities
check "call: unreachable broker -> exit 1" rc_is 1
check "call: unreachable broker -> a known fault code" \
    js "list(d) == ['fault'] and d['fault']['code'] in codes"
check "call: the fault message names the connection problem and the broker" \
    js "'connect' in d['fault']['message'] and '127.0.0.1:1' in d['fault']['message']"
VTPM_AMQP_URL=$DEAD_URL run call --timeout 5 get_capabilities
check "call: \$VTPM_AMQP_URL is the default broker" \
    eval 'rc_is 1 && js "\"127.0.0.1:1\" in d[\"fault\"][\"message\"]"'
run call --url 'http://example.invalid/' get_capabilities
expect_fault "call: a URL that is not amqp[s]:// -> BadRequest" BadRequest "amqp"

# Usage errors come before any connection attempt (a connection would fail:
# exit 1 with a fault).
run call --url "$DEAD_URL"
expect_usage "call: no METHOD -> exit 2" "expected METHOD"
run call --url "$DEAD_URL" get_capabilities '{}' extra
expect_usage "call: too many arguments -> exit 2" "expected METHOD"
run call --url "$DEAD_URL" --host compute-1 --fanout get_capabilities
expect_usage "call: --host with --fanout -> exit 2" "mutually exclusive"
run call --url "$DEAD_URL" spawn '[1, 2]'
expect_usage "call: ARGS_JSON an array -> exit 2" "JSON object"
run call --url "$DEAD_URL" spawn '"instance"'
expect_usage "call: ARGS_JSON a string -> exit 2" "JSON object"
run call --url "$DEAD_URL" spawn '{"instance": '
expect_usage "call: ARGS_JSON not JSON -> exit 2" "ARGS_JSON"
for t in 0 -1 86401 abc nan inf; do
    run call --url "$DEAD_URL" --timeout "$t" get_capabilities
    expect_usage "call: --timeout $t -> exit 2" "--timeout"
done
run call --url "$DEAD_URL" --deadline 9223372036854775807 get_capabilities
expect_usage "call: --deadline overflowing the clock -> exit 2" "--deadline"
run call --url "$DEAD_URL" --bogus get_capabilities
expect_usage "call: unknown option -> exit 2" "--bogus"

# Errors name the argument, variable or config key the bad value came from.
run call --url 'amqp://guest:guest@127.0.0.1:1/a/b' get_capabilities
expect_fault "call: --url with a raw '/' in the vhost -> BadRequest naming --url and the fix" \
    BadRequest "--url: " "vhost: contains '/'" "%2f"
# nova.conf's form: rabbit://, and the trailing '/' is the vhost "/": the
# URL is taken, and only the connection fails (nothing listens on port 1).
run call --url 'rabbit://guest:guest@127.0.0.1:1/' --timeout 5 get_capabilities
check "call: --url rabbit://...:1/ (oslo's form) is taken: the fault is the connection's" \
    eval 'rc_is 1 && js "d[\"fault\"][\"code\"] != \"BadRequest\" and \"127.0.0.1:1\" in d[\"fault\"][\"message\"]"'
run call --url 'rabbit://guest:s3cret@127.0.0.1:1,guest:s3cret@127.0.0.1:2/' --timeout 5 get_capabilities
check "call: --url with two nodes: both tried, neither password shown" \
    eval 'rc_is 1 && grep -q "127.0.0.1:2" "$OUT" && ! grep -q s3cret "$OUT" "$ERR"'
run call --url "$DEAD_URL" --failover-url 'amqp://h:0/' get_capabilities
expect_fault "call: a bad --failover-url -> BadRequest naming it" BadRequest \
    "--failover-url: port: 0 is out of range"
run call --url 'rabbits://guest:guest@127.0.0.1:1/' get_capabilities
expect_fault "call: a TLS URL without --cacert -> BadRequest naming cacert" BadRequest "cacert"
run call --url "$DEAD_URL" --cert /nonexistent.pem get_capabilities
expect_fault "call: --cert without --key -> BadRequest" BadRequest "cert and key"
VTPM_AMQP_URL='http://example.invalid/' run call get_capabilities
expect_fault "call: a bad \$VTPM_AMQP_URL -> BadRequest naming the variable" \
    BadRequest '$VTPM_AMQP_URL: '
run call --host 'compute 1' get_capabilities
expect_usage "call: --host with a space -> exit 2 naming --host and the character" \
    "--host: 'compute 1' contains ' '"
run call --host '' get_capabilities
expect_usage "call: empty --host -> exit 2 naming --host" "--host: "
printf '[amqp]\nurl = amqp://guest:guest@127.0.0.1:1/a/b\n' > "$tmp/badvhost.conf"
run call --config "$tmp/badvhost.conf" get_capabilities
expect_usage "call --config: a raw '/' in the vhost -> exit 2 with FILE:LINE: [amqp] url" \
    "$tmp/badvhost.conf:2: [amqp] url: vhost: contains '/'"
run capabilities --connect "qemu:///system?socket=$tmp/no-such-sock"
expect_fault "capabilities: unreachable libvirt names --connect as the source" \
    HypervisorError "(--connect)"
printf '[libvirt]\nuri = qemu:///system?socket=%s/no-such-sock\n' "$tmp" > "$tmp/deaduri.conf"
run capabilities --config "$tmp/deaduri.conf"
expect_fault "capabilities: unreachable libvirt names [libvirt] uri of the config file" \
    HypervisorError "([libvirt] uri of $tmp/deaduri.conf)"

# ---- identity (usage; the answers are test_vtpm_identity's) ------------------------

run identity
expect_usage "identity: no UUID -> exit 2" "expected UUID"
run identity not-a-uuid
expect_usage "identity: a malformed UUID -> exit 2 naming it" "UUID: not a UUID"
run identity --verify "$tmp/no-such-ca.pem" 0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001
expect_usage "identity: an unreadable --verify file -> exit 2 naming it" "--verify: "
run identity --url amqp://127.0.0.1:1/%2f --timeout 2 0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001
expect_fault "identity: unreachable broker -> Busy" Busy

# ---- bash completion -----------------------------------------------------------

check "completion: the script is valid bash" bash -n "$COMPLETION"

# comp LINE: the completions bash would offer with the cursor at the end of
# LINE (the script is sourced in a clean bash, as bash-completion does).
comp() {
    bash -c 'source "$1" || exit 9
             complete -p vtpmctl > /dev/null || exit 8
             COMP_LINE=$2 COMP_POINT=${#2}
             _vtpmctl
             printf "%s\n" "${COMPREPLY[@]}"' _ "$COMPLETION" "$1" > "$OUT" 2> "$ERR"
    RC=$?
}

# expect_comp DESC LINE WORD...: exactly these completions, in any order.
expect_comp() {
    local desc=$1 line=$2
    shift 2
    comp "$line"
    if rc_is 0 && [ ! -s "$ERR" ] &&
        [ "$(sort "$OUT" | grep -v '^$')" = "$(printf '%s\n' "$@" | sort | grep -v '^$')" ]; then
        pass "$desc"
    else
        fail "$desc"
        echo "#   expected: $*"
    fi
}

expect_comp "completion: the commands" "$V " resolve capabilities render-xml call identity help \
    --help
expect_comp "completion: a command's prefix" "$V re" resolve render-xml
for cmd in resolve capabilities render-xml call identity; do
    "$V" "$cmd" --help > "$tmp/help" 2>&1
    mapfile -t want < <(grep -oE '^ +(-[A-Za-z], )?--[a-z][a-z0-9-]*' "$tmp/help" | tr -d ' ' | tr ',' '\n')
    comp "$V $cmd -"
    missing=()
    for o in "${want[@]}"; do grep -qx -- "$o" "$OUT" || missing+=("$o"); done
    if rc_is 0 && [ ${#want[@]} -ge 3 ] && [ ${#missing[@]} -eq 0 ] &&
        [ "$(wc -l < "$OUT")" -eq ${#want[@]} ]; then
        pass "completion: $cmd - offers exactly the ${#want[@]} options of '$cmd --help'"
    else
        fail "completion: $cmd - offers exactly the options of '$cmd --help'"
        echo "#   missing: ${missing[*]:-}"
    fi
done
expect_comp "completion: --flavor-spec keys" "$V resolve -f " \
    hw:tpm_version= hw:tpm_model= hw:tpm_secret_security= hw:tpm_pcr_banks= \
    trait:COMPUTE_SECURITY_TPM_1_2= trait:COMPUTE_SECURITY_TPM_2_0=
expect_comp "completion: --image-prop keys" "$V resolve --image-prop " \
    hw_tpm_version= hw_tpm_model= hw_tpm_pcr_banks= trait:COMPUTE_SECURITY_TPM_1_2= \
    trait:COMPUTE_SECURITY_TPM_2_0=
expect_comp "completion: PCR banks" "$V resolve -i hw_tpm_pcr_banks=sha" \
    sha1 sha256 sha384 sha512 sha256,sha384
# bash splits words at ':' and '=': only the part after the last one is replaced.
expect_comp "completion: after 'hw:' only the rest of the key" "$V resolve -f hw:tpm_v" tpm_version=
expect_comp "completion: TPM versions" "$V resolve -f hw:tpm_version=" 1.2 2.0
expect_comp "completion: TPM models in --flavor-spec=KEY=VALUE form" \
    "$V resolve --flavor-spec=hw:tpm_model=tpm-" tpm-tis tpm-crb
expect_comp "completion: secret security modes" "$V resolve -f hw:tpm_secret_security=" \
    user host deployment
expect_comp "completion: trait values" "$V resolve -i trait:COMPUTE_SECURITY_TPM_2_0=" \
    required forbidden
expect_comp "completion: --virt-type" "$V render-xml --virt-type " qemu kvm
expect_comp "completion: the methods of call" "$V call --host compute-1 --timeout 5 " \
    get_capabilities spawn destroy power_off power_on migrate_disk_and_power_off \
    finish_migration confirm_migration finish_revert_migration shelve unshelve rebuild rekey \
    evacuate get_vtpm_identity
expect_comp "completion: nothing after the method (ARGS_JSON is free)" "$V call spawn "
mkdir "$tmp/cfgdir" && : > "$tmp/cfgdir/vtpmd.conf"
expect_comp "completion: --config completes file names" "$V capabilities --config $tmp/cfgdir/vt" \
    "$tmp/cfgdir/vtpmd.conf"
expect_comp "completion: --verify completes file names" "$V identity --verify $tmp/cfgdir/vt" \
    "$tmp/cfgdir/vtpmd.conf"

tap_done
