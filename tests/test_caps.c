/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <libvirt/virterror.h>

#include "caps.h"

#define TIS_BIT (1u << VTPM_MODEL_TIS)
#define CRB_BIT (1u << VTPM_MODEL_CRB)
#define PASS_BIT (1u << VTPM_CAPS_BACKEND_PASSTHROUGH)
#define EMU_BIT (1u << VTPM_CAPS_BACKEND_EMULATOR)
#define EXT_BIT (1u << VTPM_CAPS_BACKEND_EXTERNAL)
#define V12_BIT (1u << VTPM_VERSION_1_2)
#define V20_BIT (1u << VTPM_VERSION_2_0)
#define ALL_SECRETS \
    ((1u << VTPM_SECRET_USER) | (1u << VTPM_SECRET_HOST) | (1u << VTPM_SECRET_DEPLOYMENT))

/* Index into this table = bit in the "provided" masks below: the vTPM
 * traits (the first NTPM), then the firmware traits. */
static const char *const all_traits[] = {
    VTPM_TRAIT_TPM_1_2,
    VTPM_TRAIT_TPM_2_0,
    VTPM_TRAIT_TPM_TIS,
    VTPM_TRAIT_TPM_CRB,
    VTPM_TRAIT_SECRET_USER,
    VTPM_TRAIT_SECRET_HOST,
    VTPM_TRAIT_SECRET_DEPLOYMENT,
    "CUSTOM_VTPM_PCR_BANK_SHA1",
    "CUSTOM_VTPM_PCR_BANK_SHA256",
    "CUSTOM_VTPM_PCR_BANK_SHA384",
    "CUSTOM_VTPM_PCR_BANK_SHA512",
    VTPM_TRAIT_EK_DEPLOYMENT_CA,
    VTPM_TRAIT_FIRMWARE_UEFI,
    VTPM_TRAIT_UEFI_SECURE_BOOT,
};
enum {
    B12 = 1,
    B20 = 2,
    BTIS = 4,
    BCRB = 8,
    BUSER = 16,
    BHOST = 32,
    BDEPL = 64,
    BSHA1 = 128,
    BSHA256 = 256,
    BSHA384 = 512,
    BSHA512 = 1024,
    BBANKS = BSHA1 | BSHA256 | BSHA384 | BSHA512,
    BEKCA = 2048,
    BTPM = 4095,
    BUEFI = 4096,
    BSB = 8192,
    BFW = BUEFI | BSB,
    BALL = BTPM | BFW,
    NTPM = 12
};
#define ALL_BANKS                                                                         \
    ((1u << VTPM_PCR_SHA1) | (1u << VTPM_PCR_SHA256) | (1u << VTPM_PCR_SHA384) |          \
     (1u << VTPM_PCR_SHA512))

static char *
fixture(const char *name)
{
    g_autofree char *path = g_build_filename(VTPM_FIXTURES, name, NULL);
    g_autoptr(GError) gerr = NULL;
    char *data = NULL;

    if (!g_file_get_contents(path, &data, NULL, &gerr))
        fail_msg("%s: %s", path, gerr->message);
    return data;
}

/* ---- parse -------------------------------------------------------------- */

typedef struct {
    const char *file;
    bool supported;
    unsigned models, backends;
    bool versions_listed;
    unsigned versions;
} parse_case;

static void
test_parse_fixtures(void **state)
{
    static const parse_case cases[] = {
        { "domcaps-libvirt9-q35.xml", true, TIS_BIT | CRB_BIT, PASS_BIT | EMU_BIT | EXT_BIT, true,
          V12_BIT | V20_BIT },
        { "domcaps-tpm-unsupported.xml", false, 0, 0, false, 0 },
        { "domcaps-no-tpm.xml", false, 0, 0, false, 0 },
        { "domcaps-tis-only.xml", true, TIS_BIT, PASS_BIT | EMU_BIT | EXT_BIT, true,
          V12_BIT | V20_BIT },
        { "domcaps-no-emulator.xml", true, TIS_BIT | CRB_BIT, PASS_BIT | EXT_BIT, true, 0 },
        { "domcaps-no-backend-version.xml", true, TIS_BIT | CRB_BIT, PASS_BIT | EMU_BIT, false, 0 },
        /* tpm-spapr and an unknown backend are ignored */
        { "domcaps-tpm2-only.xml", true, TIS_BIT | CRB_BIT, PASS_BIT | EMU_BIT | EXT_BIT, true,
          V20_BIT },
    };

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const parse_case *c = &cases[i];
        g_autofree char *xml = fixture(c->file);
        vtpm_host_facts f = { 0 };
        vtpm_error err;

        /* A previous failure is forgotten once domcaps are read. */
        f.domcaps_error = g_strdup("earlier failure");
        f.arch = g_strdup("x86_64");
        f.libvirt_version = 9000000;
        if (vtpm_caps_parse_domcaps(xml, &f, &err) != 0)
            fail_msg("%s: %s", c->file, err.message);
        if (!f.domcaps_read || f.domcaps_error || f.tpm_supported != c->supported ||
            f.models != c->models || f.backends != c->backends ||
            f.versions_listed != c->versions_listed || f.versions != c->versions)
            fail_msg("%s: read %d error %s supported %d models %x backends %x listed %d "
                     "versions %x",
                     c->file, f.domcaps_read, f.domcaps_error, f.tpm_supported, f.models,
                     f.backends, f.versions_listed, f.versions);
        /* Only the tpm fields are touched. */
        assert_string_equal(f.arch, "x86_64");
        assert_int_equal(f.libvirt_version, 9000000);
        vtpm_host_facts_clear(&f);
    }
}

static void
test_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "<domainCapabilities><devices><tpm supported='yes'></devices></domainCapabilities>",
        "<capabilities><host/></capabilities>",
        "<domainCapabilities><devices>",
        "not xml at all",
    };
    g_autofree char *xml = fixture("domcaps-malformed.xml");
    vtpm_host_facts f = { 0 };
    vtpm_error err;

    (void)state;
    f.models = 0x55;
    f.domcaps_error = g_strdup("kept");
    vtpm_error_clear(&err);
    assert_int_equal(vtpm_caps_parse_domcaps(xml, &f, &err), -(int)VTPM_FAULT_HYPERVISOR_ERROR);
    assert_int_equal(err.code, VTPM_FAULT_HYPERVISOR_ERROR);
    assert_non_null(strstr(err.message, "cannot parse domain capabilities: "));
    /* Untouched on failure. */
    assert_false(f.domcaps_read);
    assert_int_equal(f.models, 0x55);
    assert_string_equal(f.domcaps_error, "kept");

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        vtpm_error_clear(&err);
        if (vtpm_caps_parse_domcaps(bad[i], &f, &err) != -(int)VTPM_FAULT_HYPERVISOR_ERROR)
            fail_msg("accepted: %s", bad[i]);
        assert_true(strlen(err.message) > strlen("cannot parse domain capabilities: "));
    }
    assert_non_null(strstr(err.message, "cannot parse domain capabilities"));
    assert_int_equal(vtpm_caps_parse_domcaps(NULL, &f, &err), -(int)VTPM_FAULT_HYPERVISOR_ERROR);
    assert_false(f.domcaps_read);
    vtpm_host_facts_clear(&f);
}

static void
test_parse_wrong_root_names_it(void **state)
{
    vtpm_host_facts f = { 0 };
    vtpm_error err;

    (void)state;
    assert_int_equal(vtpm_caps_parse_domcaps("<capabilities/>", &f, &err),
                     -(int)VTPM_FAULT_HYPERVISOR_ERROR);
    assert_non_null(strstr(err.message, "<capabilities>"));
}

/* Only <domainCapabilities><devices><tpm> counts, and only its own enums. */
static void
test_parse_scoping(void **state)
{
    static const char xml[] =
        "<?xml version='1.0'?>\n"
        "<domainCapabilities>\n"
        "  <tpm supported='yes'><enum name='model'><value>tpm-crb</value></enum></tpm>\n"
        "  <devices>\n"
        "    <video supported='yes'><enum name='model'><value>tpm-crb</value></enum></video>\n"
        "    <rng supported='yes'><enum name='backendModel'><value>emulator</value></enum></rng>\n"
        "    <tpm supported='yes'>\n"
        "      <!-- a comment -->\n"
        "      <enum name='model'><value>\n  tpm-tis\n  </value></enum>\n"
        "      <enum name='backendModel'><value>passthrough</value></enum>\n"
        "      <enum name='somethingNew'><value>2.0</value><value>emulator</value></enum>\n"
        "      <future><enum name='model'><value>tpm-crb</value></enum></future>\n"
        "      <enum name='backendModel'><alt><value>external</value></alt></enum>\n"
        "    </tpm>\n"
        "  </devices>\n"
        "  <features><tpm supported='no'/></features>\n"
        "</domainCapabilities>\n";
    vtpm_host_facts f = { 0 };
    vtpm_error err;

    (void)state;
    assert_int_equal(vtpm_caps_parse_domcaps(xml, &f, &err), 0);
    assert_true(f.domcaps_read);
    assert_true(f.tpm_supported);
    assert_int_equal(f.models, TIS_BIT);
    assert_int_equal(f.backends, PASS_BIT);
    assert_false(f.versions_listed);
    assert_int_equal(f.versions, 0);
}

static void
test_parse_supported_attribute(void **state)
{
    static const char *const xmls[] = {
        "<domainCapabilities><devices><tpm/></devices></domainCapabilities>",
        "<domainCapabilities><devices><tpm supported='YES'/></devices></domainCapabilities>",
        "<domainCapabilities><devices><tpm supported='no'><enum name='model'>"
        "<value>tpm-tis</value></enum></tpm></devices></domainCapabilities>",
    };

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(xmls); i++) {
        vtpm_host_facts f = { 0 };
        vtpm_error err;

        assert_int_equal(vtpm_caps_parse_domcaps(xmls[i], &f, &err), 0);
        assert_true(f.domcaps_read);
        assert_false(f.tpm_supported);
    }
}

/* ---- evaluate ----------------------------------------------------------- */

static void
good_facts(vtpm_host_facts *f, vtpm_caps_config *cfg)
{
    *f = (vtpm_host_facts){
        .arch = g_strdup("x86_64"),
        .libvirt_version = 9000000,
        .qemu_version = 7002000,
        .have_swtpm = true,
        .have_swtpm_setup = true,
        .have_swtpm_user = true,
        .have_swtpm_group = true,
        .domcaps_read = true,
        .tpm_supported = true,
        .models = TIS_BIT | CRB_BIT,
        .backends = PASS_BIT | EMU_BIT | EXT_BIT,
        .versions_listed = true,
        .versions = V12_BIT | V20_BIT,
        /* Debian 12 with the ovmf package */
        .firmware = { .domcaps_read = true, .machine = "pc-q35-7.2", .efi_autoselect = true,
                      .pflash = true, .secure = true, .descriptors = 3, .plain_uefi = true,
                      .secure_enrolled = true },
    };
    *cfg = (vtpm_caps_config){
        .swtpm_enabled = true,
        .swtpm_user = "tss",
        .swtpm_group = "tss",
        .secret_modes = ALL_SECRETS,
        .deployment_key_file = "/etc/vtpmd/deployment.key",
        .virt_type = "qemu",
        .virt_type_reason = "auto: no /dev/kvm",
        .pcr_banks = ALL_BANKS,
        .ek_ca_subject = "CN=Test EK CA,O=vtpmd test",
        .ek_ca_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    };
}

typedef void (*mutator)(vtpm_host_facts *f, vtpm_caps_config *c);

#define MUT(name, body) \
    static void name(vtpm_host_facts *f, vtpm_caps_config *c) { (void)f; (void)c; body; }

MUT(m_none, )
MUT(m_disabled, c->swtpm_enabled = false)
MUT(m_libvirt_old, f->libvirt_version = 4004000)
MUT(m_libvirt_min, f->libvirt_version = 4005000)
MUT(m_qemu_old, f->qemu_version = 2010000)
MUT(m_qemu_min, f->qemu_version = 2011000)
MUT(m_qemu_unknown, f->qemu_version = 0)
MUT(m_arch_arm, g_free(f->arch); f->arch = g_strdup("aarch64"))
MUT(m_arch_i686, g_free(f->arch); f->arch = g_strdup("i686"))
MUT(m_arch_unknown, g_clear_pointer(&f->arch, g_free))
MUT(m_no_swtpm, f->have_swtpm = false)
MUT(m_no_setup, f->have_swtpm_setup = false)
MUT(m_no_user, f->have_swtpm_user = false)
MUT(m_user_unset, c->swtpm_user = NULL; f->have_swtpm_user = false)
MUT(m_no_group, f->have_swtpm_group = false; c->swtpm_group = "swtpm")
MUT(m_group_unset, c->swtpm_group = ""; f->have_swtpm_group = false)
MUT(m_no_domcaps, f->domcaps_read = false; f->tpm_supported = false; f->models = 0;
    f->backends = 0; f->versions_listed = false; f->versions = 0;
    f->domcaps_error = g_strdup("this function is not supported by the connection driver");
    f->firmware.domcaps_read = false)
MUT(m_domcaps_unread, f->domcaps_read = false; f->firmware.domcaps_read = false)
MUT(m_tpm_unsupported, f->tpm_supported = false; f->models = 0; f->backends = 0;
    f->versions_listed = false; f->versions = 0)
MUT(m_no_emulator, f->backends = PASS_BIT | EXT_BIT)
MUT(m_tis_only, f->models = TIS_BIT)
MUT(m_crb_only, f->models = CRB_BIT)
MUT(m_tpm2_only, f->versions = V20_BIT)
MUT(m_tpm12_only, f->versions = V12_BIT)
MUT(m_versions_empty, f->versions = 0)
MUT(m_versions_unlisted, f->versions_listed = false; f->versions = 0)
MUT(m_no_deployment_mode, c->secret_modes = (1u << VTPM_SECRET_USER) | (1u << VTPM_SECRET_HOST))
MUT(m_user_mode_only, c->secret_modes = 1u << VTPM_SECRET_USER)
MUT(m_no_modes, c->secret_modes = 0)
MUT(m_no_key, c->deployment_key_file = NULL)
MUT(m_empty_key, c->deployment_key_file = "")
MUT(m_no_deployment_at_all, c->secret_modes = 1u << VTPM_SECRET_HOST; c->deployment_key_file = NULL)
MUT(m_no_ek_ca, c->ek_ca_subject = NULL; c->ek_ca_sha256 = NULL)
MUT(m_banks_unknown, c->pcr_banks = 0; c->pcr_banks_error = "swtpm: running swtpm: not found")
MUT(m_no_sha1, c->pcr_banks = ALL_BANKS & ~(1u << VTPM_PCR_SHA1))
MUT(m_several, c->swtpm_enabled = false; f->have_swtpm_setup = false; f->qemu_version = 2010000;
    f->models = TIS_BIT)
MUT(m_no_ovmf, f->firmware.efi_autoselect = false; f->firmware.secure = false;
    f->firmware.descriptors = 0; f->firmware.plain_uefi = false;
    f->firmware.secure_enrolled = false)
MUT(m_no_enrolled, f->firmware.secure_enrolled = false)
MUT(m_pinned, c->firmware.loader = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd";
    c->firmware.nvram_template = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
    f->firmware.pinned = true; f->firmware.loader_secure = true;
    f->firmware.secure_enrolled = false)
MUT(m_pinned_unreadable, c->firmware.loader = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd";
    c->firmware.nvram_template = "/srv/keys/VARS.fd"; f->firmware.pinned = true;
    f->firmware.loader_secure = true; f->firmware.template_errno = EACCES)

typedef struct {
    const char *name;
    mutator mutate;
    unsigned provided;        /* bits of all_traits */
    const char *reason[3];    /* each missing trait's reason holds these */
    const char *specific;     /* and the reason of this trait ... */
    const char *specific_has; /* ... holds this */
    const char *fw_reason;    /* each missing firmware trait's reason holds this */
} eval_case;

#define FW(s) .fw_reason = s

static const eval_case eval_cases[] = {
    { "all good", m_none, BALL },
    /* The firmware traits do not depend on swtpm. */
    { "swtpm disabled", m_disabled, BFW,
      { "[libvirt] swtpm_enabled is false (set it to true to offer vTPM)" } },
    { "libvirt too old", m_libvirt_old, 0, { "libvirt 4.4.0 is older than 4.5.0" },
      FW("libvirt 4.4.0 is older than 7.2.0 (UEFI guests)") },
    { "libvirt 4.5.0 is enough for a vTPM", m_libvirt_min, BTPM, .fw_reason = "older than 7.2.0" },
    { "QEMU too old", m_qemu_old, 0, { "QEMU 2.10.0 is older than 2.11.0" },
      FW("QEMU 2.10.0 is older than 4.1.0") },
    { "QEMU 2.11.0 is enough for a vTPM", m_qemu_min, BTPM, FW("QEMU 2.11.0 is older than 4.1.0") },
    { "QEMU unknown", m_qemu_unknown, 0, { "QEMU version unknown" }, FW("QEMU version unknown") },
    { "aarch64", m_arch_arm, 0, { "aarch64 is not x86_64" }, FW("aarch64 is not x86_64") },
    { "i686", m_arch_i686, 0, { "i686 is not x86_64" }, FW("i686 is not x86_64") },
    { "arch unknown", m_arch_unknown, 0, { "host architecture unknown" },
      FW("host architecture unknown") },
    { "no swtpm", m_no_swtpm, BFW, { "swtpm not found in PATH (install swtpm)" } },
    { "no swtpm_setup", m_no_setup, BFW, { "swtpm_setup not found in PATH (install swtpm-tools)" } },
    { "no swtpm user", m_no_user, BFW, { "swtpm_user 'tss' does not exist" } },
    { "swtpm user unset", m_user_unset, BFW, { "[libvirt] swtpm_user is not set" } },
    { "no swtpm group", m_no_group, BFW, { "swtpm_group 'swtpm' does not exist" } },
    { "swtpm group unset", m_group_unset, BFW, { "[libvirt] swtpm_group is not set" } },
    { "no domcaps", m_no_domcaps, 0,
      { "domain capabilities unavailable: this function is not supported" },
      FW("domain capabilities unavailable: this function is not supported") },
    { "domcaps unread, no error recorded", m_domcaps_unread, 0,
      { "domain capabilities unavailable: not read" },
      FW("domain capabilities unavailable: not read") },
    { "tpm unsupported", m_tpm_unsupported, BFW,
      { "domain capabilities do not report TPM support" } },
    { "no emulator backend", m_no_emulator, BFW,
      { "domain capabilities do not list the emulator TPM backend" } },
    { "tpm-tis only", m_tis_only, BALL & ~BCRB, { "tpm-crb not in domain capabilities' TPM models" } },
    { "tpm-crb only", m_crb_only, BALL & ~BTIS, { "tpm-tis not in domain capabilities' TPM models" } },
    { "TPM 2.0 only", m_tpm2_only, BALL & ~B12,
      { "TPM 1.2 not in domain capabilities' TPM backend versions" } },
    { "TPM 1.2 only: no banks either", m_tpm12_only, BALL & ~(B20 | BBANKS),
      { "2.0" }, "CUSTOM_VTPM_PCR_BANK_SHA384",
      "PCR banks need TPM 2.0, which domain capabilities do not offer" },
    { "no backend versions", m_versions_empty, BALL & ~(B12 | B20 | BBANKS), { "TPM" },
      VTPM_TRAIT_TPM_1_2, "TPM 1.2" },
    { "no deployment EK CA", m_no_ek_ca, BALL & ~BEKCA,
      { "[vtpm] ek_ca_cert is not set: new TPMs get EK certificates of libvirt's host-local CA, "
        "not verifiable across hosts" } },
    { "PCR banks not probed", m_banks_unknown, BALL & ~BBANKS,
      { "PCR banks unknown: swtpm: running swtpm: not found" } },
    { "no sha1 bank", m_no_sha1, BALL & ~BSHA1, { "this host's swtpm has no sha1 PCR bank" } },
    { "versions not listed: both assumed", m_versions_unlisted, BALL },
    { "deployment mode not configured", m_no_deployment_mode, BALL & ~BDEPL,
      { "secret security 'deployment' not in [vtpm] supported_secret_security" } },
    { "user mode only", m_user_mode_only, BALL & ~(BHOST | BDEPL),
      { "not in [vtpm] supported_secret_security" }, VTPM_TRAIT_SECRET_HOST,
      "secret security 'host'" },
    { "no modes", m_no_modes, B12 | B20 | BTIS | BCRB | BBANKS | BEKCA | BFW,
      { "supported_secret_security" },
      VTPM_TRAIT_SECRET_USER, "secret security 'user'" },
    { "no deployment key", m_no_key, BALL & ~BDEPL, { "[vtpm] deployment_key_file is not set" } },
    { "empty deployment key", m_empty_key, BALL & ~BDEPL, { "[vtpm] deployment_key_file is not set" } },
    { "deployment: both reasons", m_no_deployment_at_all, BALL & ~(BUSER | BDEPL),
      { "supported_secret_security" }, VTPM_TRAIT_SECRET_DEPLOYMENT,
      "secret security 'deployment' not in [vtpm] supported_secret_security; "
      "[vtpm] deployment_key_file is not set" },
    { "several failures are all listed", m_several, 0,
      { "[libvirt] swtpm_enabled is false (set it to true to offer vTPM); QEMU 2.10.0 is older "
        "than 2.11.0; swtpm_setup not found in PATH (install swtpm-tools)" },
      VTPM_TRAIT_TPM_CRB,
      "swtpm_setup not found in PATH (install swtpm-tools); tpm-crb not in domain "
      "capabilities' TPM models", FW("QEMU 2.10.0 is older than 4.1.0") },
    { "no OVMF", m_no_ovmf, BTPM, FW("install the ovmf package") },
    { "no descriptor with enrolled keys", m_no_enrolled, BALL & ~BSB,
      FW("offers Secure Boot with enrolled keys") },
    { "the snakeoil pair pinned", m_pinned, BALL },
    { "a pinned template vtpmd cannot read", m_pinned_unreadable, BALL & ~BSB,
      FW("[libvirt] uefi_nvram_template /srv/keys/VARS.fd: Permission denied") },
};

static void
check_caps(const eval_case *c, const vtpm_caps *caps)
{
    unsigned provided = 0, nprovided = 0;

    for (size_t t = 0; t < G_N_ELEMENTS(all_traits); t++) {
        const char *reason = g_hash_table_lookup(caps->missing, all_traits[t]);
        bool has = vtpm_caps_has_trait(caps, all_traits[t]);

        if (has == (reason != NULL))
            fail_msg("%s: %s provided %d, reason %s", c->name, all_traits[t], has, reason);
        if (has) {
            provided |= 1u << t;
            nprovided++;
            continue;
        }
        if (t >= NTPM) {
            if (!c->fw_reason || !strstr(reason, c->fw_reason))
                fail_msg("%s: %s: \"%s\" lacks \"%s\"", c->name, all_traits[t], reason,
                         c->fw_reason);
            continue;
        }
        for (size_t k = 0; k < G_N_ELEMENTS(c->reason) && c->reason[k]; k++) {
            if (!strstr(reason, c->reason[k]))
                fail_msg("%s: %s: \"%s\" lacks \"%s\"", c->name, all_traits[t], reason,
                         c->reason[k]);
        }
        if (c->specific && strcmp(c->specific, all_traits[t]) == 0 &&
            !strstr(reason, c->specific_has))
            fail_msg("%s: %s: \"%s\" lacks \"%s\"", c->name, all_traits[t], reason,
                     c->specific_has);
    }
    if (provided != c->provided)
        fail_msg("%s: provided %#x, expected %#x", c->name, provided, c->provided);
    assert_int_equal(caps->traits->len, nprovided);
    assert_int_equal(g_hash_table_size(caps->missing), G_N_ELEMENTS(all_traits) - nprovided);
    for (guint i = 1; i < caps->traits->len; i++)
        assert_true(strcmp(caps->traits->pdata[i - 1], caps->traits->pdata[i]) < 0);
}

static void
test_evaluate_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(eval_cases); i++) {
        const eval_case *c = &eval_cases[i];
        vtpm_host_facts f;
        vtpm_caps_config cfg;
        g_autoptr(vtpm_caps) caps = NULL;

        good_facts(&f, &cfg);
        c->mutate(&f, &cfg);
        caps = vtpm_caps_evaluate("compute-1", &f, &cfg);
        check_caps(c, caps);
        /* The facts were copied, not taken. */
        assert_string_equal(caps->host, "compute-1");
        assert_true(f.arch == NULL || caps->facts.arch != f.arch);
        vtpm_host_facts_clear(&f);
    }
}

/* The reason a single unmet condition gives applies to exactly the traits
 * it concerns, and the sorted trait list is the documented one. */
static void
test_evaluate_all_good_list(void **state)
{
    static const char *const sorted[] = {
        "COMPUTE_FIRMWARE_UEFI",
        "COMPUTE_SECURITY_TPM_1_2",
        "COMPUTE_SECURITY_TPM_2_0",
        "COMPUTE_SECURITY_TPM_CRB",
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT",
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST",
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER",
        "COMPUTE_SECURITY_TPM_TIS",
        "COMPUTE_SECURITY_UEFI_SECURE_BOOT",
        "CUSTOM_VTPM_EK_DEPLOYMENT_CA",
        "CUSTOM_VTPM_PCR_BANK_SHA1",
        "CUSTOM_VTPM_PCR_BANK_SHA256",
        "CUSTOM_VTPM_PCR_BANK_SHA384",
        "CUSTOM_VTPM_PCR_BANK_SHA512",
    };
    vtpm_host_facts f;
    vtpm_caps_config cfg;
    g_autoptr(vtpm_caps) caps = NULL;

    (void)state;
    good_facts(&f, &cfg);
    caps = vtpm_caps_evaluate_take("compute-1", &f, &cfg);
    /* Taken: the caller's struct is cleared. */
    assert_null(f.arch);
    assert_int_equal(f.libvirt_version, 0);
    assert_string_equal(caps->facts.arch, "x86_64");
    assert_int_equal(caps->traits->len, G_N_ELEMENTS(sorted));
    for (size_t i = 0; i < G_N_ELEMENTS(sorted); i++)
        assert_string_equal(caps->traits->pdata[i], sorted[i]);
    assert_int_equal(g_hash_table_size(caps->missing), 0);
    assert_false(vtpm_caps_has_trait(caps, "COMPUTE_SECURITY_SEV"));
    assert_false(vtpm_caps_has_trait(NULL, VTPM_TRAIT_TPM_2_0));
}

static void
test_evaluate_null_inputs(void **state)
{
    g_autoptr(vtpm_caps) a = vtpm_caps_evaluate(NULL, NULL, NULL);
    g_autoptr(vtpm_caps) b = vtpm_caps_evaluate_take("h", NULL, NULL);

    (void)state;
    assert_null(a->host);
    assert_int_equal(a->traits->len, 0);
    assert_int_equal(g_hash_table_size(a->missing), G_N_ELEMENTS(all_traits));
    assert_non_null(strstr(g_hash_table_lookup(a->missing, VTPM_TRAIT_TPM_2_0),
                           "swtpm_enabled is false"));
    assert_true(vtpm_caps_equal(a, b));
}

static vtpm_caps *
eval_with(mutator m, const char *host)
{
    vtpm_host_facts f;
    vtpm_caps_config cfg;

    good_facts(&f, &cfg);
    m(&f, &cfg);
    return vtpm_caps_evaluate_take(host, &f, &cfg);
}

static void
test_caps_equal(void **state)
{
    g_autoptr(vtpm_caps) good1 = eval_with(m_none, "a");
    g_autoptr(vtpm_caps) good2 = eval_with(m_none, "b");
    g_autoptr(vtpm_caps) old1 = eval_with(m_libvirt_old, "a");
    g_autoptr(vtpm_caps) old2 = eval_with(m_qemu_old, "a");
    g_autoptr(vtpm_caps) tis = eval_with(m_tis_only, "a");
    g_autoptr(vtpm_caps) crb = eval_with(m_crb_only, "a");
    g_autoptr(vtpm_caps) nokey = eval_with(m_no_key, "a");
    g_autoptr(vtpm_caps) nomode = eval_with(m_no_deployment_mode, "a");

    (void)state;
    /* Only traits and reasons matter: the host name is not compared. */
    assert_true(vtpm_caps_equal(good1, good2));
    assert_true(vtpm_caps_equal(good1, good1));
    assert_false(vtpm_caps_equal(good1, old1));
    /* Same (empty) traits, different reasons. */
    assert_int_equal(old1->traits->len, old2->traits->len);
    assert_false(vtpm_caps_equal(old1, old2));
    /* Same number of traits, different ones. */
    assert_false(vtpm_caps_equal(tis, crb));
    /* Same traits, same missing key, different reason. */
    assert_false(vtpm_caps_equal(nokey, nomode));
    assert_false(vtpm_caps_equal(good1, NULL));
    assert_true(vtpm_caps_equal(NULL, NULL));
    vtpm_caps_free(NULL);
}

static void
test_version_string(void **state)
{
    static const struct {
        unsigned long v;
        const char *s;
    } cases[] = {
        { 9000000, "9.0.0" }, { 7002000, "7.2.0" }, { 4005000, "4.5.0" },
        { 2011000, "2.11.0" }, { 10010012, "10.10.12" }, { 0, "0.0.0" },
    };

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *s = vtpm_caps_version_string(cases[i].v);

        assert_string_equal(s, cases[i].s);
    }
}

/* ---- pack --------------------------------------------------------------- */

static const msgpack_object *
map_get(const msgpack_object *map, const char *key)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];

        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0)
            return &kv->val;
    }
    fail_msg("no key %s", key);
    return NULL;
}

static void
assert_str(const msgpack_object *o, const char *s)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(s));
    assert_memory_equal(o->via.str.ptr, s, o->via.str.size);
}

static void
assert_str_array(const msgpack_object *o, const char *const *want, size_t n)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o->via.array.size, n);
    for (size_t i = 0; i < n; i++)
        assert_str(&o->via.array.ptr[i], want[i]);
}

static void
pack(const vtpm_caps *caps, msgpack_sbuffer *sb)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    assert_int_equal(vtpm_caps_pack(caps, &pk), 0);
}

static void
test_pack_roundtrip_good(void **state)
{
    static const char *const models[] = { "tpm-tis", "tpm-crb" };
    static const char *const backends[] = { "passthrough", "emulator", "external" };
    static const char *const versions[] = { "1.2", "2.0" };
    static const char *const banks[] = { "sha1", "sha256", "sha384", "sha512" };
    g_autoptr(vtpm_caps) caps = eval_with(m_none, "compute-1");
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    size_t off = 0;
    const msgpack_object *root, *tpm, *ek_ca;

    (void)state;
    pack(caps, &sb);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sb.size);
    root = &up.data;
    assert_int_equal(root->via.map.size, 10);
    assert_str(map_get(root, "host"), "compute-1");
    assert_str(map_get(root, "virt_type"), "qemu");
    assert_str(map_get(root, "virt_type_reason"), "auto: no /dev/kvm");
    assert_str(map_get(root, "arch"), "x86_64");
    assert_str(map_get(root, "libvirt_version"), "9.0.0");
    assert_str(map_get(root, "qemu_version"), "7.2.0");
    assert_str_array(map_get(root, "traits"), (const char *const *)caps->traits->pdata,
                     caps->traits->len);
    assert_int_equal(map_get(root, "traits")->via.array.size, 14);
    assert_int_equal(map_get(root, "missing")->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(map_get(root, "missing")->via.map.size, 0);
    tpm = map_get(root, "tpm");
    assert_int_equal(tpm->via.map.size, 5);
    assert_int_equal(map_get(tpm, "supported")->type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(map_get(tpm, "supported")->via.boolean);
    assert_str_array(map_get(tpm, "models"), models, 2);
    assert_str_array(map_get(tpm, "backends"), backends, 3);
    assert_str_array(map_get(tpm, "versions"), versions, 2);
    assert_str_array(map_get(tpm, "pcr_banks"), banks, 4);
    ek_ca = map_get(root, "ek_ca");
    assert_int_equal(ek_ca->via.map.size, 3);
    assert_true(map_get(ek_ca, "configured")->via.boolean);
    assert_str(map_get(ek_ca, "subject"), "CN=Test EK CA,O=vtpmd test");
    assert_str(map_get(ek_ca, "sha256"),
               "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

static void
test_pack_roundtrip_missing(void **state)
{
    static const char *const versions[] = { "1.2", "2.0" };
    static const char *const tis[] = { "tpm-tis" };
    static const char *const backends[] = { "passthrough", "emulator" };
    vtpm_host_facts f;
    vtpm_caps_config cfg;
    g_autoptr(vtpm_caps) caps = NULL;
    msgpack_sbuffer sb, sb2;
    msgpack_unpacked up;
    size_t off = 0;
    const msgpack_object *root, *missing, *tpm;

    (void)state;
    good_facts(&f, &cfg);
    f.qemu_version = 0;
    g_clear_pointer(&f.arch, g_free);
    f.models = TIS_BIT;
    f.backends = PASS_BIT | EMU_BIT;
    f.versions_listed = false;
    f.versions = 0;
    caps = vtpm_caps_evaluate_take(NULL, &f, &cfg);

    pack(caps, &sb);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    root = &up.data;
    assert_int_equal(map_get(root, "host")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(map_get(root, "arch")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(map_get(root, "qemu_version")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(map_get(root, "traits")->via.array.size, 0);
    missing = map_get(root, "missing");
    /* QEMU unknown, arch unknown: the firmware traits are missing too */
    assert_int_equal(missing->via.map.size, 14);
    for (uint32_t i = 0; i < missing->via.map.size; i++) {
        const msgpack_object_kv *kv = &missing->via.map.ptr[i];
        g_autofree char *key = g_strndup(kv->key.via.str.ptr, kv->key.via.str.size);

        assert_str(&kv->val, g_hash_table_lookup(caps->missing, key));
        /* Sorted keys. */
        if (i > 0) {
            const msgpack_object *prev = &missing->via.map.ptr[i - 1].key;
            g_autofree char *pkey = g_strndup(prev->via.str.ptr, prev->via.str.size);

            assert_true(strcmp(pkey, key) < 0);
        }
    }
    assert_non_null(strstr(g_hash_table_lookup(caps->missing, VTPM_TRAIT_TPM_CRB),
                           "tpm-crb not in domain capabilities' TPM models"));
    tpm = map_get(root, "tpm");
    assert_true(map_get(tpm, "supported")->via.boolean);
    assert_str_array(map_get(tpm, "models"), tis, 1);
    assert_str_array(map_get(tpm, "backends"), backends, 2);
    /* No backendVersion enum: both versions are what the host offers. */
    assert_str_array(map_get(tpm, "versions"), versions, 2);
    msgpack_unpacked_destroy(&up);

    /* Same capabilities, same bytes. */
    pack(caps, &sb2);
    assert_int_equal(sb.size, sb2.size);
    assert_memory_equal(sb.data, sb2.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&sb2);
}

static void
test_pack_unsupported_tpm(void **state)
{
    g_autoptr(vtpm_caps) caps = eval_with(m_tpm_unsupported, "h");
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    size_t off = 0;
    const msgpack_object *tpm;

    (void)state;
    pack(caps, &sb);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    tpm = map_get(&up.data, "tpm");
    assert_false(map_get(tpm, "supported")->via.boolean);
    assert_int_equal(map_get(tpm, "models")->via.array.size, 0);
    assert_int_equal(map_get(tpm, "backends")->via.array.size, 0);
    assert_int_equal(map_get(tpm, "versions")->via.array.size, 0);
    /* Banks are offered only with a TPM 2.0 to turn them on. */
    assert_int_equal(map_get(tpm, "pcr_banks")->via.array.size, 0);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(vtpm_caps_pack(NULL, NULL), -(int)VTPM_FAULT_INTERNAL);
}

/* ---- fixtures through evaluate ----------------------------------------- */

static void
test_fixtures_evaluated(void **state)
{
    static const struct {
        const char *file;
        unsigned provided;
        const char *reason;
    } cases[] = {
        { "domcaps-libvirt9-q35.xml", BALL, NULL },
        { "domcaps-tpm-unsupported.xml", 0, "do not report TPM support" },
        { "domcaps-no-tpm.xml", 0, "do not report TPM support" },
        { "domcaps-tis-only.xml", BALL & ~BCRB, "tpm-crb not in" },
        { "domcaps-no-emulator.xml", 0, "emulator TPM backend" },
        { "domcaps-no-backend-version.xml", BALL, NULL },
        { "domcaps-tpm2-only.xml", BALL & ~B12, "TPM 1.2 not in" },
    };

    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = fixture(cases[i].file);
        vtpm_host_facts f;
        vtpm_caps_config cfg;
        vtpm_error err;
        g_autoptr(vtpm_caps) caps = NULL;
        unsigned provided = 0;

        good_facts(&f, &cfg);
        f.domcaps_read = false;
        f.tpm_supported = false;
        f.models = f.backends = f.versions = 0;
        f.versions_listed = false;
        assert_int_equal(vtpm_caps_parse_domcaps(xml, &f, &err), 0);
        caps = vtpm_caps_evaluate_take("h", &f, &cfg);
        /* The vTPM traits: the firmware ones are test_firmware's. */
        for (size_t t = 0; t < NTPM; t++) {
            const char *reason = g_hash_table_lookup(caps->missing, all_traits[t]);

            if (vtpm_caps_has_trait(caps, all_traits[t]))
                provided |= 1u << t;
            else if (!cases[i].reason || !strstr(reason, cases[i].reason))
                fail_msg("%s: %s: \"%s\" lacks \"%s\"", cases[i].file, all_traits[t], reason,
                         cases[i].reason);
        }
        if (provided != (cases[i].provided & BTPM))
            fail_msg("%s: provided %#x, expected %#x", cases[i].file, provided,
                     cases[i].provided & BTPM);
    }
}

/* ---- probe against libvirt's test driver ------------------------------- */

static void
silent(void *opaque, virErrorPtr e)
{
    (void)opaque;
    (void)e;
}

static int
open_test_conn(void **state)
{
    virConnectPtr conn;

    /* The test owns the process, so it may silence libvirt's default
     * stderr handler; the library never does. */
    virSetErrorFunc(NULL, silent);
    conn = virConnectOpen("test:///default");
    if (!conn)
        return -1;
    *state = conn;
    return 0;
}

static int
close_test_conn(void **state)
{
    if (*state)
        virConnectClose(*state);
    return 0;
}

static void
test_probe_test_driver(void **state)
{
    virConnectPtr conn = *state;
    vtpm_caps_config cfg = {
        .swtpm_enabled = true,
        .swtpm_user = "root",
        .swtpm_group = "root",
        .secret_modes = ALL_SECRETS,
        .deployment_key_file = "/etc/vtpmd/key",
    };
    vtpm_host_facts f = { 0 };
    vtpm_error err;
    g_autofree char *swtpm = g_find_program_in_path("swtpm");
    g_autofree char *setup = g_find_program_in_path("swtpm_setup");
    g_autoptr(vtpm_caps) caps = NULL;

    /* Whatever was there before is replaced (ASan checks it is freed). */
    f.arch = g_strdup("stale");
    f.domcaps_error = g_strdup("stale");
    vtpm_error_clear(&err);
    assert_int_equal(vtpm_caps_probe(conn, &cfg, &f, &err), 0);
    assert_true(f.libvirt_version >= 9000000);
    /* The test driver reports an i686 host and is not QEMU. */
    assert_string_equal(f.arch, "i686");
    assert_int_equal(f.qemu_version, 0);
    assert_false(f.domcaps_read);
    assert_non_null(f.domcaps_error);
    assert_non_null(strstr(f.domcaps_error, "not supported"));
    assert_false(f.tpm_supported);
    assert_int_equal(f.have_swtpm, swtpm != NULL);
    assert_int_equal(f.have_swtpm_setup, setup != NULL);
    assert_true(f.have_swtpm_user);
    assert_true(f.have_swtpm_group);

    caps = vtpm_caps_evaluate_take("test-host", &f, &cfg);
    assert_int_equal(caps->traits->len, 0);
    assert_int_equal(g_hash_table_size(caps->missing), G_N_ELEMENTS(all_traits));
    for (size_t t = 0; t < G_N_ELEMENTS(all_traits); t++) {
        const char *reason = g_hash_table_lookup(caps->missing, all_traits[t]);

        assert_non_null(reason);
        assert_non_null(strstr(reason, "domain capabilities unavailable: "));
        assert_non_null(strstr(reason, "i686 is not x86_64"));
        assert_non_null(strstr(reason, "QEMU version unknown"));
    }
}

static void
test_probe_missing_user_and_group(void **state)
{
    virConnectPtr conn = *state;
    vtpm_caps_config cfg = {
        .swtpm_enabled = true,
        .swtpm_user = "vtpmd-test-no-such-user",
        .swtpm_group = "vtpmd-test-no-such-group",
    };
    vtpm_host_facts f = { 0 };
    vtpm_error err;
    g_autoptr(vtpm_caps) caps = NULL;

    assert_int_equal(vtpm_caps_probe(conn, &cfg, &f, &err), 0);
    assert_false(f.have_swtpm_user);
    assert_false(f.have_swtpm_group);
    caps = vtpm_caps_evaluate_take("h", &f, &cfg);
    assert_non_null(strstr(g_hash_table_lookup(caps->missing, VTPM_TRAIT_TPM_2_0),
                           "swtpm_user 'vtpmd-test-no-such-user' does not exist"));
    assert_non_null(strstr(g_hash_table_lookup(caps->missing, VTPM_TRAIT_TPM_2_0),
                           "swtpm_group 'vtpmd-test-no-such-group' does not exist"));

    cfg.swtpm_user = NULL;
    cfg.swtpm_group = NULL;
    assert_int_equal(vtpm_caps_probe(conn, &cfg, &f, &err), 0);
    assert_false(f.have_swtpm_user);
    assert_false(f.have_swtpm_group);
    vtpm_host_facts_clear(&f);
    vtpm_host_facts_clear(NULL);
}

static void
test_probe_no_connection(void **state)
{
    vtpm_caps_config cfg = { .swtpm_enabled = true };
    vtpm_host_facts f = { 0 };
    vtpm_error err;

    (void)state;
    f.arch = g_strdup("kept");
    vtpm_error_clear(&err);
    assert_int_equal(vtpm_caps_probe(NULL, &cfg, &f, &err), -(int)VTPM_FAULT_HYPERVISOR_ERROR);
    assert_int_equal(err.code, VTPM_FAULT_HYPERVISOR_ERROR);
    assert_non_null(strstr(err.message, "virConnectGetCapabilities: "));
    assert_string_equal(f.arch, "kept");
    vtpm_host_facts_clear(&f);
    assert_null(f.arch);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fixtures),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_wrong_root_names_it),
        cmocka_unit_test(test_parse_scoping),
        cmocka_unit_test(test_parse_supported_attribute),
        cmocka_unit_test(test_evaluate_table),
        cmocka_unit_test(test_evaluate_all_good_list),
        cmocka_unit_test(test_evaluate_null_inputs),
        cmocka_unit_test(test_caps_equal),
        cmocka_unit_test(test_version_string),
        cmocka_unit_test(test_pack_roundtrip_good),
        cmocka_unit_test(test_pack_roundtrip_missing),
        cmocka_unit_test(test_pack_unsupported_tpm),
        cmocka_unit_test(test_fixtures_evaluated),
        cmocka_unit_test_setup_teardown(test_probe_test_driver, open_test_conn, close_test_conn),
        cmocka_unit_test_setup_teardown(test_probe_missing_user_and_group, open_test_conn,
                                        close_test_conn),
        cmocka_unit_test(test_probe_no_connection),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
