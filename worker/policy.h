/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vTPM policy: turns a flavor's extra specs and an image's properties into
 * "no vTPM" or the vTPM device to give, exactly as OpenStack Nova's
 * hardware.get_vtpm_constraint does, plus the seed spec's trait and
 * upper-case model forms.  Pure: no I/O, no global state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

#include "vtpm/error.h"

typedef enum {
    VTPM_VERSION_NONE = 0, /* no vTPM */
    VTPM_VERSION_1_2,
    VTPM_VERSION_2_0,
} vtpm_version;

typedef enum {
    VTPM_MODEL_TIS = 0,
    VTPM_MODEL_CRB,
} vtpm_model;

typedef enum {
    VTPM_SECRET_USER = 0,
    VTPM_SECRET_HOST,
    VTPM_SECRET_DEPLOYMENT,
    VTPM_SECRET__COUNT
} vtpm_secret_security;

/* The PCR banks a TPM 2.0 can turn on (hw:tpm_pcr_banks). */
typedef enum {
    VTPM_PCR_SHA1 = 0,
    VTPM_PCR_SHA256,
    VTPM_PCR_SHA384,
    VTPM_PCR_SHA512,
    VTPM_PCR__COUNT
} vtpm_pcr_bank;

typedef struct {
    vtpm_version version; /* VTPM_VERSION_NONE: the instance gets no vTPM */
    vtpm_model model;
    vtpm_secret_security secret_security;
    /* bit (1u << vtpm_pcr_bank): exactly these banks are active; 0: none
     * asked for, the TPM keeps what it was made with (swtpm_setup's
     * default, sha256) */
    unsigned pcr_banks;
} vtpm_device;

#define VTPM_TRAIT_TPM_1_2 "COMPUTE_SECURITY_TPM_1_2"
#define VTPM_TRAIT_TPM_2_0 "COMPUTE_SECURITY_TPM_2_0"
#define VTPM_TRAIT_TPM_TIS "COMPUTE_SECURITY_TPM_TIS"
#define VTPM_TRAIT_TPM_CRB "COMPUTE_SECURITY_TPM_CRB"
#define VTPM_TRAIT_SECRET_USER "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER"
#define VTPM_TRAIT_SECRET_HOST "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST"
#define VTPM_TRAIT_SECRET_DEPLOYMENT "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT"
/* A PCR bank this host can turn on: CUSTOM_VTPM_PCR_BANK_SHA256, ... */
#define VTPM_TRAIT_PCR_BANK_PREFIX "CUSTOM_VTPM_PCR_BANK_"

/* Most traits one device needs: version, model, secret security, banks. */
#define VTPM_POLICY_MAX_TRAITS (3 + VTPM_PCR__COUNT)

/*
 * @extra_specs and @image_props map str -> str; either may be NULL (empty).
 * Faults: InvalidTPMConfig, FlavorImageConflict; the message names the
 * offending key(s), value(s) and source(s) (flavor / image).  PCR banks
 * (hw:tpm_pcr_banks / hw_tpm_pcr_banks, a comma list) follow the same
 * rules as the model, and ask for TPM 2.0.
 */
int vtpm_policy_resolve(GHashTable *extra_specs, GHashTable *image_props,
                        vtpm_device *out, vtpm_error *err);

/* The traits a host must provide for @dev (version, model, secret
 * security, then one per PCR bank asked for), in that order.  Returns how
 * many were stored (0 when the device is VTPM_VERSION_NONE). */
size_t vtpm_policy_required_traits(const vtpm_device *dev,
                                   const char *out[VTPM_POLICY_MAX_TRAITS]);

bool vtpm_device_equal(const vtpm_device *a, const vtpm_device *b);

/* How faults name where a value came from. */
#define VTPM_POLICY_SRC_FLAVOR "flavor extra spec"
#define VTPM_POLICY_SRC_IMAGE "image property"

/* One value of a flavor extra spec / image property pair, and where it
 * came from (source NULL: neither sets it). */
typedef struct {
    const char *source; /* VTPM_POLICY_SRC_FLAVOR / _IMAGE */
    const char *key;
    const char *value;  /* borrowed from the tables */
} vtpm_policy_value;

/* Nova's _get_unique_flavor_image_meta for @fkey / @ikey, the rule every
 * vTPM key follows too: FlavorImageConflict when both are non-empty and
 * differ (naming both); else the flavor's value unless it is empty, else
 * the image's (even an empty one, which the caller then refuses). */
int vtpm_policy_unique_value(GHashTable *extra_specs, GHashTable *image_props, const char *fkey,
                             const char *ikey, vtpm_policy_value *out, vtpm_error *err);

/* "1.2" / "2.0" (NULL for NONE), "tpm-tis" / "tpm-crb", "user" / "host" / "deployment" */
const char *vtpm_version_str(vtpm_version v);
const char *vtpm_model_str(vtpm_model m);
const char *vtpm_secret_security_str(vtpm_secret_security s);
/* Strict parsers of the canonical strings; -1 when not recognised. */
int vtpm_version_parse(const char *s);
int vtpm_model_parse(const char *s);
int vtpm_secret_security_parse(const char *s);
/* "sha1" / "sha256" / "sha384" / "sha512" (NULL out of range), and the
 * strict parser of those names (-1 when not one). */
const char *vtpm_pcr_bank_str(vtpm_pcr_bank b);
int vtpm_pcr_bank_parse(const char *s);
/* "sha256,sha384": the banks of @bits in their fixed order ("" for 0). */
char *vtpm_pcr_banks_format(unsigned bits);
/* The traits naming a version / model / secret-security mode / PCR bank. */
const char *vtpm_version_trait(vtpm_version v);
const char *vtpm_model_trait(vtpm_model m);
const char *vtpm_secret_security_trait(vtpm_secret_security s);
const char *vtpm_pcr_bank_trait(vtpm_pcr_bank b);
