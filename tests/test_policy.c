/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "policy.h"
#include "lib/resolve_case.h"

#define MAX_KV 12

typedef struct {
    const char *name;
    const char *flavor[MAX_KV]; /* key, value, ..., NULL */
    const char *image[MAX_KV];
    vtpm_fault fault;           /* VTPM_FAULT_NONE: success expected */
    vtpm_version version;
    vtpm_model model;
    vtpm_secret_security secret;
    const char *msg[4];         /* substrings the fault message must hold */
    unsigned banks;             /* PCR banks on success (bits of vtpm_pcr_bank) */
} policy_case;

static const vtpm_device sentinel = { VTPM_VERSION_1_2, VTPM_MODEL_CRB, VTPM_SECRET_HOST };

static void
run_case(const policy_case *c)
{
    g_autoptr(GHashTable) f = resolve_case_table(c->flavor);
    g_autoptr(GHashTable) i = resolve_case_table(c->image);
    vtpm_device dev = sentinel;
    vtpm_error err;
    int rc;

    vtpm_error_clear(&err);
    rc = vtpm_policy_resolve(f, i, &dev, &err);
    if (c->fault == VTPM_FAULT_NONE) {
        if (rc != 0)
            fail_msg("%s: expected success, got %s: %s", c->name, vtpm_fault_name(err.code),
                     err.message);
        if (dev.version != c->version)
            fail_msg("%s: version %d, expected %d", c->name, dev.version, c->version);
        if (c->version != VTPM_VERSION_NONE && dev.model != c->model)
            fail_msg("%s: model %d, expected %d", c->name, dev.model, c->model);
        if (c->version != VTPM_VERSION_NONE && dev.secret_security != c->secret)
            fail_msg("%s: secret security %d, expected %d", c->name, dev.secret_security,
                     c->secret);
        if (dev.pcr_banks != (c->version == VTPM_VERSION_NONE ? 0 : c->banks))
            fail_msg("%s: PCR banks 0x%x, expected 0x%x", c->name, dev.pcr_banks, c->banks);
        return;
    }
    resolve_case_fault(c->name, c->fault, rc, &err, &dev, &sentinel, sizeof(dev), c->msg,
                       G_N_ELEMENTS(c->msg));
}

static void
run_cases(const policy_case *cases, size_t n)
{
    for (size_t k = 0; k < n; k++)
        run_case(&cases[k]);
}

#define OK VTPM_FAULT_NONE
#define CONFLICT VTPM_FAULT_FLAVOR_IMAGE_CONFLICT
#define INVALID VTPM_FAULT_INVALID_TPM_CONFIG
#define V12 VTPM_VERSION_1_2
#define V20 VTPM_VERSION_2_0
#define NOTPM VTPM_VERSION_NONE
#define TIS VTPM_MODEL_TIS
#define CRB VTPM_MODEL_CRB
#define USER VTPM_SECRET_USER
#define HOST VTPM_SECRET_HOST
#define DEPL VTPM_SECRET_DEPLOYMENT
#define FLV "flavor extra spec"
#define IMG "image property"
#define T12 "trait:COMPUTE_SECURITY_TPM_1_2"
#define T20 "trait:COMPUTE_SECURITY_TPM_2_0"

/* nova/tests/unit/virt/test_hardware.py VTPMConfigTest.test_get_vtpm_constraint */
static void
test_nova_get_vtpm_constraint(void **state)
{
    static const policy_case cases[] = {
        { "nova: no configuration", { NULL }, { NULL }, OK, NOTPM },
        { "nova: flavor-only (TIS)", { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-tis", NULL },
          { NULL }, OK, V12, TIS, USER },
        { "nova: image-only (TIS)", { NULL },
          { "hw_tpm_version", "1.2", "hw_tpm_model", "tpm-tis", NULL }, OK, V12, TIS, USER },
        { "nova: identical image and flavor (TIS)",
          { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-tis", NULL },
          { "hw_tpm_version", "1.2", "hw_tpm_model", "tpm-tis", NULL }, OK, V12, TIS, USER },
        { "nova: identical image and flavor (CRB)",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-crb", NULL },
          { "hw_tpm_version", "2.0", "hw_tpm_model", "tpm-crb", NULL }, OK, V20, CRB, USER },
        { "nova: mismatched image and flavor",
          { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-tis", NULL },
          { "hw_tpm_version", "2.0", "hw_tpm_model", "tpm-crb", NULL }, CONFLICT, 0, 0, 0,
          { FLV " hw:tpm_version=1.2", IMG " hw_tpm_version=2.0" } },
        { "nova: invalid version", { "hw:tpm_version", "1.3", "hw:tpm_model", "tpm-tis", NULL },
          { NULL }, INVALID, 0, 0, 0, { FLV " hw:tpm_version=1.3", "1.2, 2.0" } },
        { "nova: invalid model", { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-foo", NULL },
          { NULL }, INVALID, 0, 0, 0, { FLV " hw:tpm_model=tpm-foo", "tpm-tis, tpm-crb" } },
        { "nova: invalid version/model combination",
          { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-crb", NULL }, { NULL }, INVALID, 0, 0,
          0, { FLV " hw:tpm_model=tpm-crb", "2.0", FLV " hw:tpm_version=1.2" } },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

/*
 * Nova's secret security cases (test_get_tpm_secret_security_constraint),
 * with the released rule that there is no image property: the image-only
 * cases give the default and the mismatch case is no conflict.  A version
 * is added because here secret security only exists with a vTPM.
 */
static void
test_nova_secret_security(void **state)
{
    static const policy_case cases[] = {
        { "secret: none", { "hw:tpm_version", "2.0", NULL }, { NULL }, OK, V20, TIS, USER },
        { "secret: flavor user", { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "user", NULL },
          { NULL }, OK, V20, TIS, USER },
        { "secret: flavor host", { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "host", NULL },
          { NULL }, OK, V20, TIS, HOST },
        { "secret: flavor deployment",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "deployment", NULL }, { NULL }, OK,
          V20, TIS, DEPL },
        { "secret: image user ignored", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_secret_security", "user", NULL }, OK, V20, TIS, USER },
        { "secret: image host ignored", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_secret_security", "host", NULL }, OK, V20, TIS, USER },
        { "secret: image deployment ignored", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_secret_security", "deployment", NULL }, OK, V20, TIS, USER },
        { "secret: identical user",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "user", NULL },
          { "hw_tpm_secret_security", "user", NULL }, OK, V20, TIS, USER },
        { "secret: identical host",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "host", NULL },
          { "hw_tpm_secret_security", "host", NULL }, OK, V20, TIS, HOST },
        { "secret: identical deployment",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "deployment", NULL },
          { "hw_tpm_secret_security", "deployment", NULL }, OK, V20, TIS, DEPL },
        { "secret: flavor user, image host: image ignored",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "user", NULL },
          { "hw_tpm_secret_security", "host", NULL }, OK, V20, TIS, USER },
        { "secret: invalid image value ignored", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_secret_security", "bogus", NULL }, OK, V20, TIS, USER },
        { "secret: invalid", { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "bogus", NULL },
          { NULL }, INVALID, 0, 0, 0,
          { FLV " hw:tpm_secret_security=bogus", "user, host, deployment" } },
        { "secret: case matters", { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "Host", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_secret_security=Host" } },
        { "secret: empty is the default (Nova: value or 'user')",
          { "hw:tpm_version", "2.0", "hw:tpm_secret_security", "", NULL }, { NULL }, OK, V20, TIS,
          USER },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

/* What Nova's control flow implies beyond its own test table. */
static void
test_nova_rules(void **state)
{
    static const policy_case cases[] = {
        { "no version: model alone is no vTPM", { "hw:tpm_model", "tpm-crb", NULL }, { NULL }, OK,
          NOTPM },
        { "no version: image model alone", { NULL }, { "hw_tpm_model", "tpm-tis", NULL }, OK, NOTPM },
        { "no version: a bad model is not an error", { "hw:tpm_model", "tpm-foo", NULL },
          { "hw_tpm_model", "bar", NULL }, OK, NOTPM },
        { "no version: a bad secret security is not an error",
          { "hw:tpm_secret_security", "bogus", NULL }, { NULL }, OK, NOTPM },
        { "no version: secret security alone", { "hw:tpm_secret_security", "host", NULL }, { NULL },
          OK, NOTPM },
        { "model defaults to tpm-tis (1.2)", { "hw:tpm_version", "1.2", NULL }, { NULL }, OK, V12,
          TIS, USER },
        { "model defaults to tpm-tis (2.0)", { NULL }, { "hw_tpm_version", "2.0", NULL }, OK, V20,
          TIS, USER },
        { "flavor version, image model", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_model", "tpm-crb", NULL }, OK, V20, CRB, USER },
        { "image version, flavor model", { "hw:tpm_model", "tpm-crb", NULL },
          { "hw_tpm_version", "2.0", NULL }, OK, V20, CRB, USER },
        { "version conflict comes before version validity", { "hw:tpm_version", "1.3", NULL },
          { "hw_tpm_version", "2.0", NULL }, CONFLICT, 0, 0, 0,
          { FLV " hw:tpm_version=1.3 conflicts with " IMG " hw_tpm_version=2.0" } },
        { "version validity comes before the model", { "hw:tpm_version", "3.0", NULL },
          { "hw_tpm_model", "foo", NULL }, INVALID, 0, 0, 0, { "hw:tpm_version=3.0" } },
        { "version conflict comes before a model conflict",
          { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-tis", NULL },
          { "hw_tpm_version", "2.0", "hw_tpm_model", "tpm-crb", NULL }, CONFLICT, 0, 0, 0,
          { "hw:tpm_version=1.2", "hw_tpm_version=2.0" } },
        { "model conflict", { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis", NULL },
          { "hw_tpm_model", "tpm-crb", NULL }, CONFLICT, 0, 0, 0,
          { FLV " hw:tpm_model=tpm-tis conflicts with " IMG " hw_tpm_model=tpm-crb" } },
        { "model conflict comes before model validity",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "foo", NULL }, { "hw_tpm_model", "bar", NULL },
          CONFLICT, 0, 0, 0, { "hw:tpm_model=foo", "hw_tpm_model=bar" } },
        { "invalid image model", { "hw:tpm_version", "2.0", NULL }, { "hw_tpm_model", "tpm-foo", NULL },
          INVALID, 0, 0, 0, { IMG " hw_tpm_model=tpm-foo" } },
        { "invalid image version", { NULL }, { "hw_tpm_version", "2", NULL }, INVALID, 0, 0, 0,
          { IMG " hw_tpm_version=2" } },
        { "CRB with 1.2 from the image", { "hw:tpm_version", "1.2", NULL },
          { "hw_tpm_model", "tpm-crb", NULL }, INVALID, 0, 0, 0,
          { IMG " hw_tpm_model=tpm-crb", FLV " hw:tpm_version=1.2" } },
        { "CRB check comes before secret security",
          { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-crb", "hw:tpm_secret_security", "x", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_model=tpm-crb" } },
        { "model validity comes before secret security",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "x", "hw:tpm_secret_security", "y", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_model=x" } },
        { "versions are not case folded or trimmed", { "hw:tpm_version", " 2.0", NULL }, { NULL },
          INVALID, 0, 0, 0, { "hw:tpm_version= 2.0" } },
        { "version 2.00", { "hw:tpm_version", "2.00", NULL }, { NULL }, INVALID, 0, 0, 0,
          { "hw:tpm_version=2.00" } },
        { "the flavor key in the image means nothing", { NULL }, { "hw:tpm_version", "2.0", NULL },
          OK, NOTPM },
        { "the image key in the flavor means nothing", { "hw_tpm_version", "2.0", NULL }, { NULL },
          OK, NOTPM },
        /* Python truthiness in _get_unique_flavor_image_meta. */
        { "empty flavor version is unset", { "hw:tpm_version", "", NULL }, { NULL }, OK, NOTPM },
        { "empty flavor version falls through to the image", { "hw:tpm_version", "", NULL },
          { "hw_tpm_version", "2.0", NULL }, OK, V20, TIS, USER },
        { "empty image version does not conflict", { "hw:tpm_version", "1.2", NULL },
          { "hw_tpm_version", "", NULL }, OK, V12, TIS, USER },
        { "empty image version is returned and rejected", { NULL }, { "hw_tpm_version", "", NULL },
          INVALID, 0, 0, 0, { IMG " hw_tpm_version=:" } },
        { "empty flavor and image version", { "hw:tpm_version", "", NULL },
          { "hw_tpm_version", "", NULL }, INVALID, 0, 0, 0, { IMG " hw_tpm_version=" } },
        { "empty flavor model falls through to the image",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "", NULL }, { "hw_tpm_model", "tpm-crb", NULL },
          OK, V20, CRB, USER },
        { "empty flavor model alone is the default",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "", NULL }, { NULL }, OK, V20, TIS, USER },
        { "empty image model is rejected", { "hw:tpm_version", "2.0", NULL },
          { "hw_tpm_model", "", NULL }, INVALID, 0, 0, 0, { IMG " hw_tpm_model=:" } },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_model_aliases(void **state)
{
    static const policy_case cases[] = {
        { "TIS", { "hw:tpm_version", "2.0", "hw:tpm_model", "TIS", NULL }, { NULL }, OK, V20, TIS, USER },
        { "tis", { "hw:tpm_version", "2.0", "hw:tpm_model", "tis", NULL }, { NULL }, OK, V20, TIS, USER },
        { "Tis", { "hw:tpm_version", "1.2", "hw:tpm_model", "Tis", NULL }, { NULL }, OK, V12, TIS, USER },
        { "CRB", { "hw:tpm_version", "2.0", "hw:tpm_model", "CRB", NULL }, { NULL }, OK, V20, CRB, USER },
        { "crb", { "hw:tpm_version", "2.0", "hw:tpm_model", "crb", NULL }, { NULL }, OK, V20, CRB, USER },
        { "cRb image", { "hw:tpm_version", "2.0", NULL }, { "hw_tpm_model", "cRb", NULL }, OK, V20,
          CRB, USER },
        { "TIS image", { NULL }, { "hw_tpm_version", "1.2", "hw_tpm_model", "TIS", NULL }, OK, V12,
          TIS, USER },
        { "flavor CRB, image tpm-crb agree", { "hw:tpm_version", "2.0", "hw:tpm_model", "CRB", NULL },
          { "hw_tpm_model", "tpm-crb", NULL }, OK, V20, CRB, USER },
        { "flavor tpm-tis, image tis agree", { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis", NULL },
          { "hw_tpm_model", "tis", NULL }, OK, V20, TIS, USER },
        { "flavor Crb, image CRB agree", { "hw:tpm_version", "2.0", "hw:tpm_model", "Crb", NULL },
          { "hw_tpm_model", "CRB", NULL }, OK, V20, CRB, USER },
        { "flavor TIS, image crb conflict", { "hw:tpm_version", "2.0", "hw:tpm_model", "TIS", NULL },
          { "hw_tpm_model", "crb", NULL }, CONFLICT, 0, 0, 0,
          { FLV " hw:tpm_model=TIS conflicts with " IMG " hw_tpm_model=crb" } },
        { "CRB alias with 1.2", { "hw:tpm_version", "1.2", "hw:tpm_model", "crb", NULL }, { NULL },
          INVALID, 0, 0, 0, { FLV " hw:tpm_model=crb", "hw:tpm_version=1.2" } },
        { "canonical names are strict", { "hw:tpm_version", "2.0", "hw:tpm_model", "TPM-CRB", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_model=TPM-CRB", "(or TIS, CRB)" } },
        { "aliases are not trimmed", { "hw:tpm_version", "2.0", "hw:tpm_model", "crb ", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_model=crb " } },
        { "spapr is not a model here", { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-spapr", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_model=tpm-spapr" } },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_version_traits(void **state)
{
    static const policy_case cases[] = {
        { "flavor trait 1.2", { T12, "required", NULL }, { NULL }, OK, V12, TIS, USER },
        { "flavor trait 2.0", { T20, "required", NULL }, { NULL }, OK, V20, TIS, USER },
        { "image trait 1.2", { NULL }, { T12, "required", NULL }, OK, V12, TIS, USER },
        { "image trait 2.0", { NULL }, { T20, "required", NULL }, OK, V20, TIS, USER },
        { "trait with CRB", { T20, "required", "hw:tpm_model", "tpm-crb", NULL }, { NULL }, OK, V20,
          CRB, USER },
        { "trait with secret security", { T20, "required", "hw:tpm_secret_security", "host", NULL },
          { NULL }, OK, V20, TIS, HOST },
        { "image trait, flavor CRB alias", { "hw:tpm_model", "CRB", NULL }, { T20, "required", NULL },
          OK, V20, CRB, USER },
        { "trait 1.2 with CRB", { T12, "required", "hw:tpm_model", "tpm-crb", NULL }, { NULL },
          INVALID, 0, 0, 0, { FLV " hw:tpm_model=tpm-crb", FLV " " T12 "=required" } },
        { "same trait in flavor and image", { T20, "required", NULL }, { T20, "required", NULL }, OK,
          V20, TIS, USER },
        { "trait agrees with flavor version", { T20, "required", "hw:tpm_version", "2.0", NULL },
          { NULL }, OK, V20, TIS, USER },
        { "trait agrees with image version", { T12, "required", NULL }, { "hw_tpm_version", "1.2", NULL },
          OK, V12, TIS, USER },
        { "image trait agrees with flavor version", { "hw:tpm_version", "2.0", NULL },
          { T20, "required", NULL }, OK, V20, TIS, USER },
        { "image trait agrees with image version", { NULL },
          { T20, "required", "hw_tpm_version", "2.0", NULL }, OK, V20, TIS, USER },
        { "flavor trait vs flavor version", { T20, "required", "hw:tpm_version", "1.2", NULL }, { NULL },
          CONFLICT, 0, 0, 0, { FLV " " T20 "=required conflicts with " FLV " hw:tpm_version=1.2" } },
        { "image trait vs image version", { NULL }, { T12, "required", "hw_tpm_version", "2.0", NULL },
          CONFLICT, 0, 0, 0, { IMG " " T12 "=required conflicts with " IMG " hw_tpm_version=2.0" } },
        { "image trait vs flavor version", { "hw:tpm_version", "2.0", NULL }, { T12, "required", NULL },
          CONFLICT, 0, 0, 0, { IMG " " T12 "=required conflicts with " FLV " hw:tpm_version=2.0" } },
        { "trait vs an invalid version is a conflict (conflicts first)",
          { T20, "required", "hw:tpm_version", "1.3", NULL }, { NULL }, CONFLICT, 0, 0, 0,
          { T20 "=required", "hw:tpm_version=1.3" } },
        { "trait vs an empty image version: no conflict", { T20, "required", NULL },
          { "hw_tpm_version", "", NULL }, OK, V20, TIS, USER },
        { "both traits in the flavor", { T12, "required", T20, "required", NULL }, { NULL }, CONFLICT,
          0, 0, 0, { FLV " " T12 "=required conflicts with " FLV " " T20 "=required" } },
        { "both traits in the image", { NULL }, { T12, "required", T20, "required", NULL }, CONFLICT,
          0, 0, 0, { IMG " " T12 "=required conflicts with " IMG " " T20 "=required" } },
        { "flavor 1.2 trait, image 2.0 trait", { T12, "required", NULL }, { T20, "required", NULL },
          CONFLICT, 0, 0, 0, { FLV " " T12 "=required conflicts with " IMG " " T20 "=required" } },
        { "flavor 2.0 trait, image 1.2 trait", { T20, "required", NULL }, { T12, "required", NULL },
          CONFLICT, 0, 0, 0, { IMG " " T12 "=required", FLV " " T20 "=required" } },
        { "both traits even with an agreeing version",
          { T12, "required", T20, "required", "hw:tpm_version", "2.0", NULL }, { NULL }, CONFLICT,
          0, 0, 0, { T12 "=required", T20 "=required" } },
        { "forbidden alone requests nothing", { T20, "forbidden", NULL }, { NULL }, OK, NOTPM },
        { "both forbidden request nothing", { T12, "forbidden", NULL }, { T20, "forbidden", NULL }, OK,
          NOTPM },
        { "forbidden with a model requests nothing", { T12, "forbidden", "hw:tpm_model", "tpm-crb", NULL },
          { NULL }, OK, NOTPM },
        { "forbidden other version", { T12, "forbidden", "hw:tpm_version", "2.0", NULL }, { NULL }, OK,
          V20, TIS, USER },
        { "forbidden other version from a trait", { T20, "required", NULL }, { T12, "forbidden", NULL },
          OK, V20, TIS, USER },
        { "forbidden same version", { T20, "forbidden", "hw:tpm_version", "2.0", NULL }, { NULL },
          CONFLICT, 0, 0, 0, { FLV " " T20 "=forbidden conflicts with " FLV " hw:tpm_version=2.0" } },
        { "image forbids what the flavor asks", { "hw:tpm_version", "1.2", NULL },
          { T12, "forbidden", NULL }, CONFLICT, 0, 0, 0,
          { IMG " " T12 "=forbidden conflicts with " FLV " hw:tpm_version=1.2" } },
        { "flavor forbids what the image trait asks", { T20, "forbidden", NULL },
          { T20, "required", NULL }, CONFLICT, 0, 0, 0,
          { FLV " " T20 "=forbidden conflicts with " IMG " " T20 "=required" } },
        { "forbidden vs an invalid version: invalid first", { T20, "forbidden", "hw:tpm_version", "9", NULL },
          { NULL }, INVALID, 0, 0, 0, { "hw:tpm_version=9" } },
        { "invalid trait value", { T20, "yes", NULL }, { NULL }, INVALID, 0, 0, 0,
          { FLV " " T20 "=yes", "required, forbidden" } },
        { "invalid image trait value", { NULL }, { T12, "true", NULL }, INVALID, 0, 0, 0,
          { IMG " " T12 "=true" } },
        { "trait values are case sensitive", { T12, "Required", NULL }, { NULL }, INVALID, 0, 0, 0,
          { T12 "=Required" } },
        { "empty trait value", { T12, "", NULL }, { NULL }, INVALID, 0, 0, 0, { T12 "=" } },
        { "invalid trait value even with a version", { "hw:tpm_version", "2.0", T12, "no", NULL },
          { NULL }, INVALID, 0, 0, 0, { T12 "=no" } },
        { "explicit version conflict comes before trait validity", { "hw:tpm_version", "1.2", NULL },
          { "hw_tpm_version", "2.0", T12, "bogus", NULL }, CONFLICT, 0, 0, 0,
          { "hw:tpm_version=1.2", "hw_tpm_version=2.0" } },
        { "trait validity comes before trait conflicts", { T12, "required", T20, "x", NULL },
          { NULL }, INVALID, 0, 0, 0, { T20 "=x" } },
        { "other TPM traits request nothing",
          { "trait:COMPUTE_SECURITY_TPM_CRB", "required", "trait:COMPUTE_SECURITY_TPM_TIS", "bogus",
            NULL }, { NULL }, OK, NOTPM },
        { "numbered trait groups are not the seed form", { "trait1:COMPUTE_SECURITY_TPM_2_0", "required",
          NULL }, { NULL }, OK, NOTPM },
        { "the image's traits_required is not the seed form", { NULL },
          { "traits_required", "COMPUTE_SECURITY_TPM_2_0", NULL }, OK, NOTPM },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

/* The brief's example message, verbatim. */
static void
test_conflict_message(void **state)
{
    static const char *const f[] = { T12, "required", NULL };
    static const char *const i[] = { "hw_tpm_version", "2.0", NULL };
    g_autoptr(GHashTable) specs = resolve_case_table(f);
    g_autoptr(GHashTable) props = resolve_case_table(i);
    vtpm_device dev;
    vtpm_error err;

    (void)state;
    assert_int_equal(vtpm_policy_resolve(specs, props, &dev, &err),
                     -(int)VTPM_FAULT_FLAVOR_IMAGE_CONFLICT);
    assert_string_equal(err.message, "flavor extra spec trait:COMPUTE_SECURITY_TPM_1_2=required "
                                     "conflicts with image property hw_tpm_version=2.0");
}

/*
 * Every combination of the version forms: each source may set
 * hw:tpm_version / hw_tpm_version and each of the two version traits
 * (absent, required, forbidden).  The expectation is computed from the
 * rules as stated, independently of the implementation's structure.
 */
enum { T_ABSENT, T_REQUIRED, T_FORBIDDEN };
static const char *const trait_values[] = { NULL, "required", "forbidden" };
static const char *const versions[] = { NULL, "1.2", "2.0" };

static vtpm_fault
expect_versions(int fv, int iv, const int ft[2], const int it[2], vtpm_version *out)
{
    int req = 0, forb = 0, ex = fv ? fv : iv, resolved;

    if (fv && iv && fv != iv)
        return CONFLICT;
    for (int k = 0; k < 2; k++) {
        if (ft[k] == T_REQUIRED || it[k] == T_REQUIRED)
            req |= 1 << k;
        if (ft[k] == T_FORBIDDEN || it[k] == T_FORBIDDEN)
            forb |= 1 << k;
    }
    if (req == 3)
        return CONFLICT;
    if (req && ex && req != 1 << (ex - 1))
        return CONFLICT;
    resolved = ex ? ex : (req == 1 ? 1 : req == 2 ? 2 : 0);
    if (!resolved) {
        *out = NOTPM;
        return OK;
    }
    if (forb & (1 << (resolved - 1)))
        return CONFLICT;
    *out = resolved == 1 ? V12 : V20;
    return OK;
}

static void
put(GHashTable *t, const char *k, const char *v)
{
    if (v)
        g_hash_table_insert(t, g_strdup(k), g_strdup(v));
}

static void
test_version_form_combinations(void **state)
{
    static const char *const tkeys[2] = { T12, T20 };
    unsigned n = 0, conflicts = 0, none = 0;

    (void)state;
    for (int fv = 0; fv < 3; fv++)
    for (int iv = 0; iv < 3; iv++)
    for (int f0 = 0; f0 < 3; f0++)
    for (int f1 = 0; f1 < 3; f1++)
    for (int i0 = 0; i0 < 3; i0++)
    for (int i1 = 0; i1 < 3; i1++) {
        const int ft[2] = { f0, f1 }, it[2] = { i0, i1 };
        g_autoptr(GHashTable) specs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GHashTable) props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        vtpm_version want = NOTPM;
        vtpm_fault fault = expect_versions(fv, iv, ft, it, &want);
        vtpm_device dev = sentinel;
        vtpm_error err;
        int rc;

        put(specs, "hw:tpm_version", versions[fv]);
        put(props, "hw_tpm_version", versions[iv]);
        for (int k = 0; k < 2; k++) {
            put(specs, tkeys[k], trait_values[ft[k]]);
            put(props, tkeys[k], trait_values[it[k]]);
        }
        vtpm_error_clear(&err);
        rc = vtpm_policy_resolve(specs, props, &dev, &err);
        if (fault == OK) {
            if (rc != 0 || dev.version != want)
                fail_msg("fv=%d iv=%d ft=%d,%d it=%d,%d: rc %d version %d (%s), expected %d", fv,
                         iv, f0, f1, i0, i1, rc, dev.version, err.message, want);
            none += want == NOTPM;
        } else {
            if (rc != -(int)fault || !strstr(err.message, " conflicts with "))
                fail_msg("fv=%d iv=%d ft=%d,%d it=%d,%d: rc %d (%s), expected conflict", fv, iv,
                         f0, f1, i0, i1, rc, err.message);
            assert_memory_equal(&dev, &sentinel, sizeof(dev));
            conflicts++;
        }
        n++;
    }
    assert_int_equal(n, 729);
    /* The table is not degenerate: it exercises all three outcomes. */
    assert_true(conflicts > 100);
    assert_true(none > 0);
}

/* Every combination of the model forms in flavor and image. */
static void
test_model_form_combinations(void **state)
{
    static const struct {
        const char *s;
        int model; /* -1: absent, -2: invalid */
    } forms[] = {
        { NULL, -1 }, { "tpm-tis", TIS }, { "tpm-crb", CRB }, { "TIS", TIS }, { "tis", TIS },
        { "Tis", TIS }, { "CRB", CRB }, { "crb", CRB }, { "cRB", CRB }, { "foo", -2 },
    };

    (void)state;
    for (size_t v = 1; v <= 2; v++)
    for (size_t a = 0; a < G_N_ELEMENTS(forms); a++)
    for (size_t b = 0; b < G_N_ELEMENTS(forms); b++) {
        g_autoptr(GHashTable) specs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GHashTable) props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        int fm = forms[a].model, im = forms[b].model, model;
        vtpm_fault want;
        vtpm_device dev = sentinel;
        vtpm_error err;
        int rc;

        put(specs, "hw:tpm_version", versions[v]);
        put(specs, "hw:tpm_model", forms[a].s);
        put(props, "hw_tpm_model", forms[b].s);
        /* Invalid values are compared raw, so they conflict with
         * anything but an identical string. */
        if (fm != -1 && im != -1 &&
            (fm == -2 || im == -2 ? strcmp(forms[a].s, forms[b].s) != 0 : fm != im))
            want = CONFLICT;
        else {
            model = fm != -1 ? fm : im != -1 ? im : TIS;
            if (model == -2 || (model == CRB && v == 1))
                want = INVALID;
            else
                want = OK;
        }
        vtpm_error_clear(&err);
        rc = vtpm_policy_resolve(specs, props, &dev, &err);
        if (want == OK) {
            model = fm != -1 ? fm : im != -1 ? im : TIS;
            if (rc != 0 || dev.version != (v == 1 ? V12 : V20) || (int)dev.model != model)
                fail_msg("version %s flavor %s image %s: rc %d model %d (%s)", versions[v],
                         forms[a].s, forms[b].s, rc, dev.model, err.message);
        } else if (rc != -(int)want) {
            fail_msg("version %s flavor %s image %s: rc %d (%s), expected %s", versions[v],
                     forms[a].s, forms[b].s, rc, err.message, vtpm_fault_name(want));
        } else {
            assert_true(strstr(err.message, "tpm_model=") != NULL);
        }
    }
}

static void
test_null_maps_and_null_err(void **state)
{
    static const char *const bad[] = { "hw:tpm_version", "7", NULL };
    g_autoptr(GHashTable) specs = resolve_case_table(bad);
    vtpm_device dev = sentinel;
    vtpm_error err;

    (void)state;
    assert_int_equal(vtpm_policy_resolve(NULL, NULL, &dev, &err), 0);
    assert_int_equal(dev.version, VTPM_VERSION_NONE);
    assert_int_equal(dev.model, VTPM_MODEL_TIS);
    assert_int_equal(dev.secret_security, VTPM_SECRET_USER);

    dev = sentinel;
    assert_int_equal(vtpm_policy_resolve(specs, NULL, &dev, NULL), -(int)INVALID);
    assert_memory_equal(&dev, &sentinel, sizeof(dev));
    assert_int_equal(vtpm_policy_resolve(NULL, specs, &dev, NULL), 0);
    assert_int_equal(dev.version, VTPM_VERSION_NONE);
}

#define B1 (1u << VTPM_PCR_SHA1)
#define B256 (1u << VTPM_PCR_SHA256)
#define B384 (1u << VTPM_PCR_SHA384)
#define B512 (1u << VTPM_PCR_SHA512)
#define PB "hw:tpm_pcr_banks"
#define PBI "hw_tpm_pcr_banks"
#define ALLOWED "allowed: a comma-separated list of sha1, sha256, sha384, sha512"

/* hw:tpm_pcr_banks / hw_tpm_pcr_banks: the rules of the other TPM keys
 * (conflict only between two non-empty values, an empty flavor value falls
 * through, an empty image value is refused), compared as sets, TPM 2.0
 * only, every fault naming key, value and source. */
static void
test_pcr_banks(void **state)
{
    static const policy_case cases[] = {
        { "banks: flavor", { "hw:tpm_version", "2.0", PB, "sha256,sha384", NULL }, { NULL }, OK,
          V20, TIS, USER, { NULL }, B256 | B384 },
        { "banks: image", { NULL }, { "hw_tpm_version", "2.0", PBI, "sha1", NULL }, OK, V20, TIS,
          USER, { NULL }, B1 },
        { "banks: all four, any order and case, blanks around names",
          { "hw:tpm_version", "2.0", PB, " SHA512,sha1 , Sha384,sha256", NULL }, { NULL }, OK,
          V20, TIS, USER, { NULL }, B1 | B256 | B384 | B512 },
        { "banks: flavor and image name the same set",
          { "hw:tpm_version", "2.0", PB, "sha384,sha256", NULL }, { PBI, "SHA256, sha384", NULL },
          OK, V20, TIS, USER, { NULL }, B256 | B384 },
        { "banks: flavor and image differ",
          { "hw:tpm_version", "2.0", PB, "sha256", NULL }, { PBI, "sha256,sha384", NULL },
          CONFLICT, 0, 0, 0, { FLV " " PB "=sha256", IMG " " PBI "=sha256,sha384" } },
        { "banks: an empty flavor value falls through to the image",
          { "hw:tpm_version", "2.0", PB, "", NULL }, { PBI, "sha512", NULL }, OK, V20, TIS, USER,
          { NULL }, B512 },
        { "banks: an empty flavor value alone is unset", { "hw:tpm_version", "2.0", PB, "", NULL },
          { NULL }, OK, V20, TIS, USER, { NULL }, 0 },
        { "banks: an empty image value is refused", { "hw:tpm_version", "2.0", NULL },
          { PBI, "", NULL }, INVALID, 0, 0, 0, { IMG " " PBI "=: names no PCR bank", ALLOWED } },
        { "banks: blanks only", { "hw:tpm_version", "2.0", PB, "  ", NULL }, { NULL }, INVALID, 0,
          0, 0, { FLV " " PB "=  : names no PCR bank" } },
        { "banks: unknown bank", { "hw:tpm_version", "2.0", PB, "sha256,md5", NULL }, { NULL },
          INVALID, 0, 0, 0, { FLV " " PB "=sha256,md5: 'md5' is not a PCR bank", ALLOWED } },
        { "banks: sm3 is not offered", { "hw:tpm_version", "2.0", NULL }, { PBI, "sm3-256", NULL },
          INVALID, 0, 0, 0, { IMG " " PBI "=sm3-256: 'sm3-256' is not a PCR bank" } },
        { "banks: a bank twice", { "hw:tpm_version", "2.0", PB, "sha256,SHA256", NULL }, { NULL },
          INVALID, 0, 0, 0, { FLV " " PB "=sha256,SHA256: lists sha256 twice" } },
        { "banks: an empty item", { "hw:tpm_version", "2.0", PB, "sha256,,sha384", NULL },
          { NULL }, INVALID, 0, 0, 0, { FLV " " PB "=sha256,,sha384: has an empty item" } },
        { "banks: a trailing comma", { "hw:tpm_version", "2.0", PB, "sha256,", NULL }, { NULL },
          INVALID, 0, 0, 0, { "has an empty item" } },
        { "banks: TPM 1.2 has no PCR banks to choose",
          { "hw:tpm_version", "1.2", PB, "sha1", NULL }, { NULL }, INVALID, 0, 0, 0,
          { FLV " " PB "=sha1: PCR banks are only valid with TPM version 2.0",
            FLV " hw:tpm_version=1.2" } },
        { "banks: TPM 1.2 from the image, banks from the flavor", { PB, "sha256", NULL },
          { "hw_tpm_version", "1.2", NULL }, INVALID, 0, 0, 0,
          { FLV " " PB "=sha256: PCR banks", "but " IMG " hw_tpm_version=1.2" } },
        { "banks: without a vTPM they are ignored", { PB, "sha1,md5", NULL }, { NULL }, OK,
          NOTPM },
        { "banks: with the version trait", { T20, "required", NULL }, { PBI, "sha384", NULL }, OK,
          V20, TIS, USER, { NULL }, B384 },
        { "banks: a version conflict comes first",
          { "hw:tpm_version", "2.0", PB, "md5", NULL }, { "hw_tpm_version", "1.2", NULL },
          CONFLICT, 0, 0, 0, { "hw:tpm_version=2.0", "hw_tpm_version=1.2" } },
        { "banks: an invalid model comes first",
          { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-foo", PB, "md5", NULL }, { NULL },
          INVALID, 0, 0, 0, { "hw:tpm_model=tpm-foo" } },
        { "banks: a conflict compares the sets, invalid lists as written",
          { "hw:tpm_version", "2.0", PB, "md5", NULL }, { PBI, "MD5", NULL }, CONFLICT, 0, 0, 0,
          { FLV " " PB "=md5", IMG " " PBI "=MD5" } },
    };

    (void)state;
    run_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_pcr_bank_names(void **state)
{
    g_autofree char *none = vtpm_pcr_banks_format(0);
    g_autofree char *two = vtpm_pcr_banks_format(B384 | B256);
    g_autofree char *all = vtpm_pcr_banks_format(B1 | B256 | B384 | B512);

    (void)state;
    assert_string_equal(none, "");
    assert_string_equal(two, "sha256,sha384");
    assert_string_equal(all, "sha1,sha256,sha384,sha512");
    for (int b = 0; b < VTPM_PCR__COUNT; b++) {
        g_autofree char *up = g_ascii_strup(vtpm_pcr_bank_str(b), -1);
        g_autofree char *trait = g_strconcat("CUSTOM_VTPM_PCR_BANK_", up, NULL);

        assert_int_equal(vtpm_pcr_bank_parse(vtpm_pcr_bank_str(b)), b);
        assert_string_equal(vtpm_pcr_bank_trait(b), trait);
    }
    assert_null(vtpm_pcr_bank_str(VTPM_PCR__COUNT));
    assert_null(vtpm_pcr_bank_trait(VTPM_PCR__COUNT));
    /* Strict: case and blanks belong to the resolver. */
    assert_int_equal(vtpm_pcr_bank_parse("SHA256"), -1);
    assert_int_equal(vtpm_pcr_bank_parse("sha3-256"), -1);
    assert_int_equal(vtpm_pcr_bank_parse(NULL), -1);
}

static void
test_required_traits(void **state)
{
    const char *t[VTPM_POLICY_MAX_TRAITS] = { NULL };
    vtpm_device none = { VTPM_VERSION_NONE, VTPM_MODEL_CRB, VTPM_SECRET_HOST };
    vtpm_device a = { VTPM_VERSION_2_0, VTPM_MODEL_CRB, VTPM_SECRET_DEPLOYMENT };
    vtpm_device b = { VTPM_VERSION_1_2, VTPM_MODEL_TIS, VTPM_SECRET_USER };

    (void)state;
    assert_int_equal(vtpm_policy_required_traits(&none, t), 0);
    assert_null(t[0]);
    assert_int_equal(vtpm_policy_required_traits(&a, t), 3);
    assert_string_equal(t[0], "COMPUTE_SECURITY_TPM_2_0");
    assert_string_equal(t[1], "COMPUTE_SECURITY_TPM_CRB");
    assert_string_equal(t[2], "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT");
    assert_int_equal(vtpm_policy_required_traits(&b, t), 3);
    assert_string_equal(t[0], "COMPUTE_SECURITY_TPM_1_2");
    assert_string_equal(t[1], "COMPUTE_SECURITY_TPM_TIS");
    assert_string_equal(t[2], "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER");
    b.secret_security = VTPM_SECRET_HOST;
    assert_int_equal(vtpm_policy_required_traits(&b, t), 3);
    assert_string_equal(t[2], "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST");
    /* One trait per bank asked for, after the others, in bank order. */
    a.pcr_banks = B512 | B256;
    assert_int_equal(vtpm_policy_required_traits(&a, t), 5);
    assert_string_equal(t[2], "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT");
    assert_string_equal(t[3], "CUSTOM_VTPM_PCR_BANK_SHA256");
    assert_string_equal(t[4], "CUSTOM_VTPM_PCR_BANK_SHA512");
    a.pcr_banks = B1 | B256 | B384 | B512;
    assert_int_equal(vtpm_policy_required_traits(&a, t), VTPM_POLICY_MAX_TRAITS);
}

/* A resolved device's traits are exactly the ones the resolver implies. */
static void
test_resolve_then_traits(void **state)
{
    static const char *const f[] = { T20, "required", "hw:tpm_model", "crb",
                                     "hw:tpm_secret_security", "host", NULL };
    g_autoptr(GHashTable) specs = resolve_case_table(f);
    const char *t[VTPM_POLICY_MAX_TRAITS];
    vtpm_device dev;
    vtpm_error err;

    (void)state;
    assert_int_equal(vtpm_policy_resolve(specs, NULL, &dev, &err), 0);
    assert_int_equal(vtpm_policy_required_traits(&dev, t), 3);
    assert_string_equal(t[0], VTPM_TRAIT_TPM_2_0);
    assert_string_equal(t[1], VTPM_TRAIT_TPM_CRB);
    assert_string_equal(t[2], VTPM_TRAIT_SECRET_HOST);
}

static void
test_device_equal(void **state)
{
    vtpm_device a = { VTPM_VERSION_2_0, VTPM_MODEL_CRB, VTPM_SECRET_HOST };
    vtpm_device b = a;
    vtpm_device n1 = { VTPM_VERSION_NONE, VTPM_MODEL_TIS, VTPM_SECRET_USER };
    vtpm_device n2 = { VTPM_VERSION_NONE, VTPM_MODEL_CRB, VTPM_SECRET_HOST };

    (void)state;
    assert_true(vtpm_device_equal(&a, &b));
    b.model = VTPM_MODEL_TIS;
    assert_false(vtpm_device_equal(&a, &b));
    b = a;
    b.secret_security = VTPM_SECRET_USER;
    assert_false(vtpm_device_equal(&a, &b));
    b = a;
    b.version = VTPM_VERSION_1_2;
    assert_false(vtpm_device_equal(&a, &b));
    b = a;
    b.pcr_banks = B384;
    assert_false(vtpm_device_equal(&a, &b));
    assert_false(vtpm_device_equal(&a, &n1));
    /* Without a vTPM the other fields carry no meaning. */
    assert_true(vtpm_device_equal(&n1, &n2));
    assert_true(vtpm_device_equal(NULL, NULL));
    assert_false(vtpm_device_equal(&a, NULL));
}

static void
test_strings_and_parsers(void **state)
{
    (void)state;
    assert_null(vtpm_version_str(VTPM_VERSION_NONE));
    assert_string_equal(vtpm_version_str(VTPM_VERSION_1_2), "1.2");
    assert_string_equal(vtpm_version_str(VTPM_VERSION_2_0), "2.0");
    assert_null(vtpm_version_str((vtpm_version)7));
    assert_string_equal(vtpm_model_str(VTPM_MODEL_TIS), "tpm-tis");
    assert_string_equal(vtpm_model_str(VTPM_MODEL_CRB), "tpm-crb");
    assert_null(vtpm_model_str((vtpm_model)2));
    assert_string_equal(vtpm_secret_security_str(VTPM_SECRET_USER), "user");
    assert_string_equal(vtpm_secret_security_str(VTPM_SECRET_HOST), "host");
    assert_string_equal(vtpm_secret_security_str(VTPM_SECRET_DEPLOYMENT), "deployment");
    assert_null(vtpm_secret_security_str(VTPM_SECRET__COUNT));

    assert_int_equal(vtpm_version_parse("1.2"), VTPM_VERSION_1_2);
    assert_int_equal(vtpm_version_parse("2.0"), VTPM_VERSION_2_0);
    assert_int_equal(vtpm_version_parse("2"), -1);
    assert_int_equal(vtpm_version_parse(""), -1);
    assert_int_equal(vtpm_version_parse(NULL), -1);
    assert_int_equal(vtpm_model_parse("tpm-tis"), VTPM_MODEL_TIS);
    assert_int_equal(vtpm_model_parse("tpm-crb"), VTPM_MODEL_CRB);
    /* Strict: the seed spec's aliases belong to the resolver only. */
    assert_int_equal(vtpm_model_parse("CRB"), -1);
    assert_int_equal(vtpm_model_parse("TPM-TIS"), -1);
    assert_int_equal(vtpm_model_parse(NULL), -1);
    assert_int_equal(vtpm_secret_security_parse("user"), VTPM_SECRET_USER);
    assert_int_equal(vtpm_secret_security_parse("host"), VTPM_SECRET_HOST);
    assert_int_equal(vtpm_secret_security_parse("deployment"), VTPM_SECRET_DEPLOYMENT);
    assert_int_equal(vtpm_secret_security_parse("User"), -1);
    assert_int_equal(vtpm_secret_security_parse(NULL), -1);

    assert_null(vtpm_version_trait(VTPM_VERSION_NONE));
    assert_string_equal(vtpm_version_trait(VTPM_VERSION_1_2), "COMPUTE_SECURITY_TPM_1_2");
    assert_string_equal(vtpm_version_trait(VTPM_VERSION_2_0), "COMPUTE_SECURITY_TPM_2_0");
    assert_string_equal(vtpm_model_trait(VTPM_MODEL_TIS), "COMPUTE_SECURITY_TPM_TIS");
    assert_string_equal(vtpm_model_trait(VTPM_MODEL_CRB), "COMPUTE_SECURITY_TPM_CRB");
    assert_null(vtpm_model_trait((vtpm_model)5));
    assert_string_equal(vtpm_secret_security_trait(VTPM_SECRET_USER),
                        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER");
    assert_string_equal(vtpm_secret_security_trait(VTPM_SECRET_HOST),
                        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST");
    assert_string_equal(vtpm_secret_security_trait(VTPM_SECRET_DEPLOYMENT),
                        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT");
    assert_null(vtpm_secret_security_trait(VTPM_SECRET__COUNT));
    for (int v = VTPM_VERSION_1_2; v <= VTPM_VERSION_2_0; v++)
        assert_int_equal(vtpm_version_parse(vtpm_version_str(v)), v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nova_get_vtpm_constraint),
        cmocka_unit_test(test_nova_secret_security),
        cmocka_unit_test(test_nova_rules),
        cmocka_unit_test(test_model_aliases),
        cmocka_unit_test(test_version_traits),
        cmocka_unit_test(test_conflict_message),
        cmocka_unit_test(test_version_form_combinations),
        cmocka_unit_test(test_model_form_combinations),
        cmocka_unit_test(test_null_maps_and_null_err),
        cmocka_unit_test(test_pcr_banks),
        cmocka_unit_test(test_pcr_bank_names),
        cmocka_unit_test(test_required_traits),
        cmocka_unit_test(test_resolve_then_traits),
        cmocka_unit_test(test_device_equal),
        cmocka_unit_test(test_strings_and_parsers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
