/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "caps.h"

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_host_facts, vtpm_host_facts_clear)

static const char *const backend_names[] = {
    [VTPM_CAPS_BACKEND_PASSTHROUGH] = "passthrough",
    [VTPM_CAPS_BACKEND_EMULATOR] = "emulator",
    [VTPM_CAPS_BACKEND_EXTERNAL] = "external",
};

static const char *const known_traits[] = {
    VTPM_TRAIT_TPM_1_2,
    VTPM_TRAIT_TPM_2_0,
    VTPM_TRAIT_TPM_TIS,
    VTPM_TRAIT_TPM_CRB,
    VTPM_TRAIT_SECRET_USER,
    VTPM_TRAIT_SECRET_HOST,
    VTPM_TRAIT_SECRET_DEPLOYMENT,
    VTPM_TRAIT_PCR_BANK_PREFIX "SHA1",
    VTPM_TRAIT_PCR_BANK_PREFIX "SHA256",
    VTPM_TRAIT_PCR_BANK_PREFIX "SHA384",
    VTPM_TRAIT_PCR_BANK_PREFIX "SHA512",
    VTPM_TRAIT_EK_DEPLOYMENT_CA,
};

/* Independent of swtpm: a host without vTPM may well boot UEFI guests. */
static const char *const firmware_traits[] = { VTPM_TRAIT_FIRMWARE_UEFI,
                                               VTPM_TRAIT_UEFI_SECURE_BOOT };

#define ALL_VERSIONS ((1u << VTPM_VERSION_1_2) | (1u << VTPM_VERSION_2_0))

void
vtpm_host_facts_clear(vtpm_host_facts *facts)
{
    if (!facts)
        return;
    g_free(facts->arch);
    g_free(facts->domcaps_error);
    memset(facts, 0, sizeof(*facts));
}

char *
vtpm_caps_version_string(unsigned long v)
{
    return g_strdup_printf("%lu.%lu.%lu", v / 1000000, v / 1000 % 1000, v % 1000);
}

/* ---- domcaps ------------------------------------------------------------ */

typedef enum { ENUM_OTHER, ENUM_MODEL, ENUM_BACKEND, ENUM_VERSION } tpm_enum;

typedef struct {
    bool in_tpm;
    bool in_enum;
    tpm_enum kind; /* of the enum we are in */
    bool in_value;
    GString *text;
    vtpm_host_facts tpm; /* only the tpm fields are used */
} domcaps_parse;

static const char *
attr(const char **names, const char **values, const char *name)
{
    for (size_t i = 0; names[i]; i++) {
        if (strcmp(names[i], name) == 0)
            return values[i];
    }
    return NULL;
}

/* The element stack, innermost first, must be exactly @path. */
static bool
at_path(GMarkupParseContext *ctx, const char *const *path)
{
    const GSList *s = g_markup_parse_context_get_element_stack(ctx);

    for (; *path; path++, s = s->next) {
        if (!s || strcmp(s->data, *path) != 0)
            return false;
    }
    return s == NULL;
}

static void
domcaps_start(GMarkupParseContext *ctx, const char *name, const char **names,
              const char **values, gpointer data, GError **error)
{
    static const char *const tpm_path[] = { "tpm", "devices", "domainCapabilities", NULL };
    domcaps_parse *p = data;
    const GSList *stack = g_markup_parse_context_get_element_stack(ctx);

    if (!stack->next && strcmp(name, "domainCapabilities") != 0) {
        g_set_error(error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT,
                    "root element is <%s>, not <domainCapabilities>", name);
        return;
    }
    if (at_path(ctx, tpm_path)) {
        const char *supported = attr(names, values, "supported");

        p->in_tpm = true;
        p->tpm.tpm_supported = supported && strcmp(supported, "yes") == 0;
    } else if (p->in_tpm && !p->in_enum && strcmp(name, "enum") == 0 &&
               strcmp(stack->next->data, "tpm") == 0) {
        const char *ename = attr(names, values, "name");

        p->in_enum = true;
        p->kind = ENUM_OTHER;
        if (ename && strcmp(ename, "model") == 0) {
            p->kind = ENUM_MODEL;
        } else if (ename && strcmp(ename, "backendModel") == 0) {
            p->kind = ENUM_BACKEND;
        } else if (ename && strcmp(ename, "backendVersion") == 0) {
            p->kind = ENUM_VERSION;
            p->tpm.versions_listed = true;
        }
    } else if (p->in_enum && strcmp(name, "value") == 0 &&
               strcmp(stack->next->data, "enum") == 0) {
        p->in_value = true;
        g_string_truncate(p->text, 0);
    }
}

static void
domcaps_value(domcaps_parse *p, const char *v)
{
    int i;

    switch (p->kind) {
    case ENUM_MODEL:
        if ((i = vtpm_model_parse(v)) >= 0)
            p->tpm.models |= 1u << i;
        break;
    case ENUM_BACKEND:
        for (i = 0; i < (int)G_N_ELEMENTS(backend_names); i++) {
            if (strcmp(backend_names[i], v) == 0)
                p->tpm.backends |= 1u << i;
        }
        break;
    case ENUM_VERSION:
        if ((i = vtpm_version_parse(v)) >= 0)
            p->tpm.versions |= 1u << i;
        break;
    case ENUM_OTHER:
        break;
    }
}

static void
domcaps_end(GMarkupParseContext *ctx, const char *name, gpointer data, GError **error)
{
    domcaps_parse *p = data;

    if (p->in_value && strcmp(name, "value") == 0) {
        p->in_value = false;
        domcaps_value(p, g_strstrip(p->text->str));
    } else if (p->in_enum && strcmp(name, "enum") == 0) {
        p->in_enum = false;
    } else if (p->in_tpm && strcmp(name, "tpm") == 0) {
        p->in_tpm = false;
    }
}

static void
domcaps_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data,
             GError **error)
{
    domcaps_parse *p = data;

    if (p->in_value)
        g_string_append_len(p->text, text, len);
}

static bool
markup_parse(const GMarkupParser *parser, const char *xml, gpointer data, GError **error)
{
    g_autoptr(GMarkupParseContext) ctx = g_markup_parse_context_new(parser, 0, data, NULL);

    return g_markup_parse_context_parse(ctx, xml, -1, error) &&
           g_markup_parse_context_end_parse(ctx, error);
}

int
vtpm_caps_parse_domcaps(const char *xml, vtpm_host_facts *facts, vtpm_error *err)
{
    static const GMarkupParser parser = { domcaps_start, domcaps_end, domcaps_text, NULL, NULL };
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GString) text = g_string_new(NULL);
    domcaps_parse p = { .text = text };

    if (!xml)
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "no domain capabilities");
    if (!markup_parse(&parser, xml, &p, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                              "cannot parse domain capabilities: %s", gerr->message);

    facts->domcaps_read = true;
    g_clear_pointer(&facts->domcaps_error, g_free);
    facts->tpm_supported = p.tpm.tpm_supported;
    facts->models = p.tpm.models;
    facts->backends = p.tpm.backends;
    facts->versions_listed = p.tpm.versions_listed;
    facts->versions = p.tpm.versions;
    return 0;
}

/* ---- probe -------------------------------------------------------------- */

typedef struct {
    const char *const *path; /* innermost first */
    bool in;
    GString *text;
    bool found;
} text_parse;

static void
text_start(GMarkupParseContext *ctx, const char *name, const char **names, const char **values,
           gpointer data, GError **error)
{
    text_parse *p = data;

    if (!p->found && at_path(ctx, p->path)) {
        p->in = true;
        g_string_truncate(p->text, 0);
    }
}

static void
text_end(GMarkupParseContext *ctx, const char *name, gpointer data, GError **error)
{
    text_parse *p = data;

    if (p->in) {
        p->in = false;
        p->found = true;
    }
}

static void
text_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data, GError **error)
{
    text_parse *p = data;

    if (p->in)
        g_string_append_len(p->text, text, len);
}

/* Text of the first element at @path (innermost first); NULL if absent. */
static int
xml_text(const char *xml, const char *const *path, const char *what, char **out,
         vtpm_error *err)
{
    static const GMarkupParser parser = { text_start, text_end, text_text, NULL, NULL };
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GString) text = g_string_new(NULL);
    text_parse p = { .path = path, .text = text };

    if (!markup_parse(&parser, xml, &p, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "cannot parse %s: %s", what,
                              gerr->message);
    g_strstrip(text->str);
    *out = p.found && *text->str ? g_strdup(text->str) : NULL;
    return 0;
}

static int
virt_error(vtpm_error *err, const char *call)
{
    return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "%s: %s", call,
                          virGetLastErrorMessage());
}

static bool
user_exists(const char *name)
{
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);

    if (!name || !*name)
        return false;
    for (size = size > 0 ? size : 4096;; size *= 2) {
        g_autofree char *buf = g_malloc(size);
        struct passwd pw, *res = NULL;
        int rc = getpwnam_r(name, &pw, buf, size, &res);

        if (rc != ERANGE || size >= 1 << 20)
            return rc == 0 && res;
    }
}

static bool
group_exists(const char *name)
{
    long size = sysconf(_SC_GETGR_R_SIZE_MAX);

    if (!name || !*name)
        return false;
    for (size = size > 0 ? size : 4096;; size *= 2) {
        g_autofree char *buf = g_malloc(size);
        struct group gr, *res = NULL;
        int rc = getgrnam_r(name, &gr, buf, size, &res);

        if (rc != ERANGE || size >= 1 << 20)
            return rc == 0 && res;
    }
}

static bool
in_path(const char *prog)
{
    g_autofree char *path = g_find_program_in_path(prog);

    return path != NULL;
}

/* Domain capabilities the host cannot give are a fact (domcaps_error);
 * a connection that went away while asking is not, and fails the probe:
 * otherwise a libvirtd killed between two calls would look like a host
 * without TPM support. */
static int
probe_domcaps(virConnectPtr conn, const char *virt_type, vtpm_host_facts *f, vtpm_error *err)
{
    g_autofree char *xml = NULL;
    vtpm_error perr;

    /* The type and machine domains will get; without a type libvirt
     * picks the best it sees (kvm whenever /dev/kvm exists, usable or
     * not), without a machine its default (i440fx), whose firmware
     * differs: Secure Boot needs q35. */
    xml = virConnectGetDomainCapabilities(conn, NULL, f->arch, "q35", virt_type, 0);
    if (!xml)
        xml = virConnectGetDomainCapabilities(conn, NULL, f->arch, "q35", "qemu", 0);
    if (!xml) {
        virErrorPtr e = virGetLastError();
        bool rpc = e && e->domain == VIR_FROM_RPC;
        /* Taken now: virConnectIsAlive() resets libvirt's last error. */
        g_autofree char *msg = g_strdup(virGetLastErrorMessage());

        if (rpc || virConnectIsAlive(conn) != 1)
            return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                                  "virConnectGetDomainCapabilities: %s", msg);
        f->domcaps_error = g_steal_pointer(&msg);
        return 0;
    }
    if (vtpm_caps_parse_domcaps(xml, f, &perr) < 0 ||
        vtpm_firmware_parse_domcaps(xml, &f->firmware, &perr) < 0)
        f->domcaps_error = g_strdup(perr.message);
    return 0;
}

int
vtpm_caps_probe(virConnectPtr conn, const vtpm_caps_config *cfg, vtpm_host_facts *facts,
                vtpm_error *err)
{
    static const char *const arch_path[] = { "arch", "cpu", "host", "capabilities", NULL };
    g_auto(vtpm_host_facts) f = { 0 };
    g_autofree char *capsxml = NULL;
    const char *type;

    capsxml = virConnectGetCapabilities(conn);
    if (!capsxml)
        return virt_error(err, "virConnectGetCapabilities");
    if (xml_text(capsxml, arch_path, "host capabilities", &f.arch, err) < 0)
        return -(int)VTPM_FAULT_HYPERVISOR_ERROR;
    if (virConnectGetLibVersion(conn, &f.libvirt_version) < 0)
        return virt_error(err, "virConnectGetLibVersion");
    type = virConnectGetType(conn);
    if (!type)
        return virt_error(err, "virConnectGetType");
    /* Only the QEMU driver's hypervisor version is QEMU's. */
    if (strcmp(type, "QEMU") == 0 && virConnectGetVersion(conn, &f.qemu_version) < 0)
        return virt_error(err, "virConnectGetVersion");

    if (probe_domcaps(conn, cfg ? cfg->virt_type : NULL, &f, err) < 0)
        return -(int)VTPM_FAULT_HYPERVISOR_ERROR;
    f.have_swtpm = in_path("swtpm");
    f.have_swtpm_setup = in_path("swtpm_setup");
    f.have_swtpm_user = cfg && user_exists(cfg->swtpm_user);
    f.have_swtpm_group = cfg && group_exists(cfg->swtpm_group);
    vtpm_firmware_scan(cfg ? &cfg->firmware : NULL, &f.firmware);

    vtpm_host_facts_clear(facts);
    *facts = f;
    memset(&f, 0, sizeof(f));
    return 0;
}

/* ---- evaluate ----------------------------------------------------------- */

static void
add_version_reason(GPtrArray *r, const char *what, unsigned long have, unsigned long min)
{
    g_autofree char *h = vtpm_caps_version_string(have);
    g_autofree char *m = vtpm_caps_version_string(min);

    g_ptr_array_add(r, g_strdup_printf("%s %s is older than %s", what, h, m));
}

static void
add_name_reason(GPtrArray *r, const char *key, const char *name, bool exists)
{
    if (!name || !*name)
        g_ptr_array_add(r, g_strdup_printf("[libvirt] %s is not set", key));
    else if (!exists)
        g_ptr_array_add(r, g_strdup_printf("%s '%s' does not exist (create it or change "
                                           "[libvirt] %s)", key, name, key));
}

/* Reasons that hold for every trait. */
static GPtrArray *
common_reasons(const vtpm_host_facts *f, const vtpm_caps_config *cfg)
{
    GPtrArray *r = g_ptr_array_new_with_free_func(g_free);

    if (!cfg->swtpm_enabled)
        g_ptr_array_add(r, g_strdup("[libvirt] swtpm_enabled is false (set it to true to offer vTPM)"));
    if (f->libvirt_version < VTPM_CAPS_MIN_LIBVIRT)
        add_version_reason(r, "libvirt", f->libvirt_version, VTPM_CAPS_MIN_LIBVIRT);
    if (f->qemu_version == 0)
        g_ptr_array_add(r, g_strdup("QEMU version unknown (the libvirt driver is not QEMU)"));
    else if (f->qemu_version < VTPM_CAPS_MIN_QEMU)
        add_version_reason(r, "QEMU", f->qemu_version, VTPM_CAPS_MIN_QEMU);
    if (!f->arch)
        g_ptr_array_add(r, g_strdup("host architecture unknown (not in libvirt's capabilities)"));
    else if (strcmp(f->arch, "x86_64") != 0)
        g_ptr_array_add(r, g_strdup_printf("host architecture %s is not x86_64", f->arch));
    if (!f->have_swtpm)
        g_ptr_array_add(r, g_strdup("swtpm not found in PATH (install swtpm)"));
    if (!f->have_swtpm_setup)
        g_ptr_array_add(r, g_strdup("swtpm_setup not found in PATH (install swtpm-tools)"));
    add_name_reason(r, "swtpm_user", cfg->swtpm_user, f->have_swtpm_user);
    add_name_reason(r, "swtpm_group", cfg->swtpm_group, f->have_swtpm_group);
    if (!f->domcaps_read)
        g_ptr_array_add(r, g_strdup_printf("domain capabilities unavailable: %s",
                                           f->domcaps_error ? f->domcaps_error : "not read"));
    else if (!f->tpm_supported)
        g_ptr_array_add(r, g_strdup("domain capabilities do not report TPM support"));
    else if (!(f->backends & (1u << VTPM_CAPS_BACKEND_EMULATOR)))
        g_ptr_array_add(r, g_strdup("domain capabilities do not list the emulator TPM backend"));
    return r;
}

/*
 * Reasons specific to @trait.  The domcaps enums are consulted only when
 * domcaps say TPM is supported: otherwise the common reason already says
 * why and the enums are absent anyway.
 */
static void
trait_reasons(GPtrArray *r, const char *trait, const vtpm_host_facts *f,
              const vtpm_caps_config *cfg)
{
    bool tpm_known = f->domcaps_read && f->tpm_supported;

    for (int v = VTPM_VERSION_1_2; v <= VTPM_VERSION_2_0; v++) {
        unsigned have = f->versions_listed ? f->versions : ALL_VERSIONS;

        if (strcmp(trait, vtpm_version_trait(v)) == 0 && tpm_known && !(have & (1u << v)))
            g_ptr_array_add(r, g_strdup_printf("TPM %s not in domain capabilities' TPM backend "
                                               "versions", vtpm_version_str(v)));
    }
    for (int m = VTPM_MODEL_TIS; m <= VTPM_MODEL_CRB; m++) {
        if (strcmp(trait, vtpm_model_trait(m)) == 0 && tpm_known && !(f->models & (1u << m)))
            g_ptr_array_add(r, g_strdup_printf("%s not in domain capabilities' TPM models",
                                               vtpm_model_str(m)));
    }
    for (int s = 0; s < VTPM_SECRET__COUNT; s++) {
        if (strcmp(trait, vtpm_secret_security_trait(s)) != 0)
            continue;
        if (!(cfg->secret_modes & (1u << s)))
            g_ptr_array_add(r, g_strdup_printf("secret security '%s' not in [vtpm] "
                                               "supported_secret_security",
                                               vtpm_secret_security_str(s)));
        if (s == VTPM_SECRET_DEPLOYMENT &&
            !(cfg->deployment_key_file && *cfg->deployment_key_file))
            g_ptr_array_add(r, g_strdup("[vtpm] deployment_key_file is not set"));
    }
}

/* A bank is offered where TPM 2.0 is and this host's swtpm has it. */
static void
bank_reasons(GPtrArray *r, const char *trait, bool tpm2_missing, const vtpm_caps_config *cfg)
{
    for (int b = 0; b < VTPM_PCR__COUNT; b++) {
        if (strcmp(trait, vtpm_pcr_bank_trait(b)) != 0)
            continue;
        if (tpm2_missing)
            g_ptr_array_add(r, g_strdup("PCR banks need TPM 2.0, which domain capabilities "
                                        "do not offer"));
        if (cfg->pcr_banks_error)
            g_ptr_array_add(r, g_strdup_printf("PCR banks unknown: %s", cfg->pcr_banks_error));
        else if (!cfg->pcr_banks)
            g_ptr_array_add(r, g_strdup("the PCR banks of swtpm were not probed (vtpmd does at "
                                        "start when swtpm_enabled is true)"));
        else if (!(cfg->pcr_banks & (1u << b)))
            g_ptr_array_add(r, g_strdup_printf("this host's swtpm has no %s PCR bank",
                                               vtpm_pcr_bank_str(b)));
    }
}

/* The reasons of the traits that are not about what libvirt offers. */
static void
vtpmd_reasons(GPtrArray *r, const char *trait, const vtpm_host_facts *f,
              const vtpm_caps_config *cfg)
{
    bool tpm_known = f->domcaps_read && f->tpm_supported;
    unsigned have = f->versions_listed ? f->versions : ALL_VERSIONS;

    bank_reasons(r, trait, tpm_known && !(have & (1u << VTPM_VERSION_2_0)), cfg);
    if (strcmp(trait, VTPM_TRAIT_EK_DEPLOYMENT_CA) == 0 && !cfg->ek_ca_subject)
        g_ptr_array_add(r, g_strdup("[vtpm] ek_ca_cert is not set: new TPMs get EK certificates "
                                    "of libvirt's host-local CA, not verifiable across hosts"));
}

static gint
cmp_str_ptr(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* @trait into caps->traits, or into caps->missing with @why joined. */
static void
offer(vtpm_caps *caps, const char *trait, GPtrArray *why)
{
    if (why->len == 0) {
        g_ptr_array_add(caps->traits, g_strdup(trait));
        return;
    }
    g_ptr_array_add(why, NULL);
    g_hash_table_insert(caps->missing, g_strdup(trait), g_strjoinv("; ", (char **)why->pdata));
}

static void
evaluate_firmware(vtpm_caps *caps, const vtpm_caps_config *cfg)
{
    const vtpm_host_facts *f = &caps->facts;
    vtpm_firmware_host host = { f->libvirt_version, f->qemu_version, f->arch,
                                f->domcaps_error };

    for (size_t i = 0; i < G_N_ELEMENTS(firmware_traits); i++) {
        g_autoptr(GPtrArray) why = g_ptr_array_new_with_free_func(g_free);

        vtpm_firmware_trait_reasons(firmware_traits[i], &f->firmware, &cfg->firmware, &host, why);
        offer(caps, firmware_traits[i], why);
    }
}

static vtpm_caps *
evaluate(vtpm_caps *caps, const vtpm_caps_config *cfg)
{
    static const vtpm_caps_config nothing = { 0 };
    g_autoptr(GPtrArray) common = NULL;

    if (!cfg)
        cfg = &nothing;
    caps->virt_type = g_strdup(cfg->virt_type);
    caps->virt_type_reason = g_strdup(cfg->virt_type_reason);
    caps->pcr_banks = cfg->pcr_banks;
    caps->ek_ca_subject = g_strdup(cfg->ek_ca_subject);
    caps->ek_ca_sha256 = g_strdup(cfg->ek_ca_sha256);
    caps->traits = g_ptr_array_new_with_free_func(g_free);
    caps->missing = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    common = common_reasons(&caps->facts, cfg);
    for (size_t i = 0; i < G_N_ELEMENTS(known_traits); i++) {
        g_autoptr(GPtrArray) own = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) all = g_ptr_array_new(); /* borrows from common and own */

        trait_reasons(own, known_traits[i], &caps->facts, cfg);
        vtpmd_reasons(own, known_traits[i], &caps->facts, cfg);
        g_ptr_array_extend(all, common, NULL, NULL);
        g_ptr_array_extend(all, own, NULL, NULL);
        offer(caps, known_traits[i], all);
    }
    evaluate_firmware(caps, cfg);
    g_ptr_array_sort(caps->traits, cmp_str_ptr);
    return caps;
}

static void
copy_facts(vtpm_host_facts *dst, const vtpm_host_facts *src)
{
    *dst = *src;
    dst->arch = g_strdup(src->arch);
    dst->domcaps_error = g_strdup(src->domcaps_error);
}

vtpm_caps *
vtpm_caps_evaluate(const char *host, const vtpm_host_facts *facts, const vtpm_caps_config *cfg)
{
    vtpm_caps *caps = g_new0(vtpm_caps, 1);

    caps->host = g_strdup(host);
    if (facts)
        copy_facts(&caps->facts, facts);
    return evaluate(caps, cfg);
}

vtpm_caps *
vtpm_caps_evaluate_take(const char *host, vtpm_host_facts *facts, const vtpm_caps_config *cfg)
{
    vtpm_caps *caps = g_new0(vtpm_caps, 1);

    caps->host = g_strdup(host);
    if (facts) {
        caps->facts = *facts;
        memset(facts, 0, sizeof(*facts));
    }
    return evaluate(caps, cfg);
}

bool
vtpm_caps_has_trait(const vtpm_caps *caps, const char *trait)
{
    if (!caps || !trait)
        return false;
    for (guint i = 0; i < caps->traits->len; i++) {
        if (strcmp(caps->traits->pdata[i], trait) == 0)
            return true;
    }
    return false;
}

bool
vtpm_caps_equal(const vtpm_caps *a, const vtpm_caps *b)
{
    GHashTableIter it;
    gpointer k, v;

    if (!a || !b)
        return a == b;
    if (a->traits->len != b->traits->len ||
        g_hash_table_size(a->missing) != g_hash_table_size(b->missing))
        return false;
    for (guint i = 0; i < a->traits->len; i++) {
        if (strcmp(a->traits->pdata[i], b->traits->pdata[i]) != 0)
            return false;
    }
    g_hash_table_iter_init(&it, a->missing);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *other = g_hash_table_lookup(b->missing, k);

        if (!other || strcmp(other, v) != 0)
            return false;
    }
    return true;
}

void
vtpm_caps_free(vtpm_caps *caps)
{
    if (!caps)
        return;
    g_free(caps->host);
    g_free(caps->virt_type);
    g_free(caps->virt_type_reason);
    g_free(caps->ek_ca_subject);
    g_free(caps->ek_ca_sha256);
    vtpm_host_facts_clear(&caps->facts);
    if (caps->traits)
        g_ptr_array_unref(caps->traits);
    if (caps->missing)
        g_hash_table_unref(caps->missing);
    g_free(caps);
}

/* ---- pack --------------------------------------------------------------- */

static int
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n;

    if (!s)
        return msgpack_pack_nil(pk);
    n = strlen(s);
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int
pack_version(msgpack_packer *pk, unsigned long v)
{
    g_autofree char *s = v ? vtpm_caps_version_string(v) : NULL;

    return pack_str(pk, s);
}

/* Names of the bits set in @bits, as an array. */
static int
pack_bits(msgpack_packer *pk, unsigned bits, const char *(*name)(int))
{
    int rc, n = 0;

    for (int i = 0; i < 32; i++)
        n += (bits >> i & 1u) && name(i);
    rc = msgpack_pack_array(pk, n);
    for (int i = 0; i < 32; i++) {
        if ((bits >> i & 1u) && name(i))
            rc |= pack_str(pk, name(i));
    }
    return rc;
}

static const char *
model_name(int i)
{
    return vtpm_model_str(i);
}

static const char *
backend_name(int i)
{
    return i >= 0 && i < (int)G_N_ELEMENTS(backend_names) ? backend_names[i] : NULL;
}

static const char *
version_name(int i)
{
    return vtpm_version_str(i);
}

static const char *
bank_name(int i)
{
    return vtpm_pcr_bank_str(i);
}

static int
pack_tpm(msgpack_packer *pk, const vtpm_host_facts *f, unsigned banks)
{
    bool tpm_known = f->domcaps_read && f->tpm_supported;
    /* Without a backendVersion enum libvirt (>= 4.5) supports both. */
    unsigned versions = !tpm_known ? 0 : f->versions_listed ? f->versions : ALL_VERSIONS;
    int rc = msgpack_pack_map(pk, 5);

    rc |= pack_str(pk, "supported");
    rc |= tpm_known ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    rc |= pack_str(pk, "models");
    rc |= pack_bits(pk, tpm_known ? f->models : 0, model_name);
    rc |= pack_str(pk, "backends");
    rc |= pack_bits(pk, tpm_known ? f->backends : 0, backend_name);
    rc |= pack_str(pk, "versions");
    rc |= pack_bits(pk, versions, version_name);
    /* The banks a TPM 2.0 can be asked for (hw:tpm_pcr_banks). */
    rc |= pack_str(pk, "pcr_banks");
    rc |= pack_bits(pk, versions & (1u << VTPM_VERSION_2_0) ? banks : 0, bank_name);
    return rc;
}

/* {configured, subject, sha256}: which CA signs the EKs of new TPMs. */
static int
pack_ek_ca(msgpack_packer *pk, const vtpm_caps *caps)
{
    int rc = msgpack_pack_map(pk, 3);

    rc |= pack_str(pk, "configured");
    rc |= caps->ek_ca_subject ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    rc |= pack_str(pk, "subject");
    rc |= pack_str(pk, caps->ek_ca_subject);
    rc |= pack_str(pk, "sha256");
    rc |= pack_str(pk, caps->ek_ca_sha256);
    return rc;
}

int
vtpm_caps_pack(const vtpm_caps *caps, msgpack_packer *pk)
{
    g_autofree gpointer *keys = NULL;
    guint nkeys = 0;
    int rc;

    if (!caps || !pk)
        return -(int)VTPM_FAULT_INTERNAL;
    rc = msgpack_pack_map(pk, 10);

    rc |= pack_str(pk, "host");
    rc |= pack_str(pk, caps->host);
    rc |= pack_str(pk, "arch");
    rc |= pack_str(pk, caps->facts.arch);
    rc |= pack_str(pk, "libvirt_version");
    rc |= pack_version(pk, caps->facts.libvirt_version);
    rc |= pack_str(pk, "qemu_version");
    rc |= pack_version(pk, caps->facts.qemu_version);

    rc |= pack_str(pk, "traits");
    rc |= msgpack_pack_array(pk, caps->traits->len);
    for (guint i = 0; i < caps->traits->len; i++)
        rc |= pack_str(pk, caps->traits->pdata[i]);

    /* Sorted so that equal capabilities pack to equal bytes. */
    keys = g_hash_table_get_keys_as_array(caps->missing, &nkeys);
    qsort(keys, nkeys, sizeof(*keys), cmp_str_ptr);
    rc |= pack_str(pk, "missing");
    rc |= msgpack_pack_map(pk, nkeys);
    for (guint i = 0; i < nkeys; i++) {
        rc |= pack_str(pk, keys[i]);
        rc |= pack_str(pk, g_hash_table_lookup(caps->missing, keys[i]));
    }

    rc |= pack_str(pk, "tpm");
    rc |= pack_tpm(pk, &caps->facts, caps->pcr_banks);
    /* Which accelerator this host's domains get, and why (an "auto" that
     * fell back to TCG says what it found). */
    rc |= pack_str(pk, "virt_type");
    rc |= pack_str(pk, caps->virt_type);
    rc |= pack_str(pk, "virt_type_reason");
    rc |= pack_str(pk, caps->virt_type_reason);
    rc |= pack_str(pk, "ek_ca");
    rc |= pack_ek_ca(pk, caps);
    return rc ? -(int)VTPM_FAULT_INTERNAL : 0;
}
