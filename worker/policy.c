/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <strings.h>

#include "policy.h"

#define SRC_FLAVOR VTPM_POLICY_SRC_FLAVOR
#define SRC_IMAGE VTPM_POLICY_SRC_IMAGE

#define KEY_VERSION_FLAVOR "hw:tpm_version"
#define KEY_VERSION_IMAGE "hw_tpm_version"
#define KEY_MODEL_FLAVOR "hw:tpm_model"
#define KEY_MODEL_IMAGE "hw_tpm_model"
#define KEY_SECRET_FLAVOR "hw:tpm_secret_security"
#define KEY_BANKS_FLAVOR "hw:tpm_pcr_banks"
#define KEY_BANKS_IMAGE "hw_tpm_pcr_banks"

/* Where a value came from, so that every fault can name it. */
typedef struct {
    const char *source; /* SRC_FLAVOR / SRC_IMAGE; NULL: not set */
    const char *key;
    const char *value;  /* as given */
    const char *norm;   /* after normalisation (model aliases) */
} setting;

typedef enum { TRAIT_REQUIRED, TRAIT_FORBIDDEN } trait_want;

typedef struct {
    setting where;
    vtpm_version version;
    trait_want want;
} version_trait;

static const char *const version_names[] = {
    [VTPM_VERSION_1_2] = "1.2",
    [VTPM_VERSION_2_0] = "2.0",
};
static const char *const model_names[] = {
    [VTPM_MODEL_TIS] = "tpm-tis",
    [VTPM_MODEL_CRB] = "tpm-crb",
};
static const char *const secret_names[] = {
    [VTPM_SECRET_USER] = "user",
    [VTPM_SECRET_HOST] = "host",
    [VTPM_SECRET_DEPLOYMENT] = "deployment",
};
static const char *const version_traits[] = {
    [VTPM_VERSION_1_2] = VTPM_TRAIT_TPM_1_2,
    [VTPM_VERSION_2_0] = VTPM_TRAIT_TPM_2_0,
};
static const char *const model_traits[] = {
    [VTPM_MODEL_TIS] = VTPM_TRAIT_TPM_TIS,
    [VTPM_MODEL_CRB] = VTPM_TRAIT_TPM_CRB,
};
static const char *const secret_traits[] = {
    [VTPM_SECRET_USER] = VTPM_TRAIT_SECRET_USER,
    [VTPM_SECRET_HOST] = VTPM_TRAIT_SECRET_HOST,
    [VTPM_SECRET_DEPLOYMENT] = VTPM_TRAIT_SECRET_DEPLOYMENT,
};
static const char *const bank_names[] = {
    [VTPM_PCR_SHA1] = "sha1",
    [VTPM_PCR_SHA256] = "sha256",
    [VTPM_PCR_SHA384] = "sha384",
    [VTPM_PCR_SHA512] = "sha512",
};
static const char *const bank_traits[] = {
    [VTPM_PCR_SHA1] = VTPM_TRAIT_PCR_BANK_PREFIX "SHA1",
    [VTPM_PCR_SHA256] = VTPM_TRAIT_PCR_BANK_PREFIX "SHA256",
    [VTPM_PCR_SHA384] = VTPM_TRAIT_PCR_BANK_PREFIX "SHA384",
    [VTPM_PCR_SHA512] = VTPM_TRAIT_PCR_BANK_PREFIX "SHA512",
};
G_STATIC_ASSERT(VTPM_PCR__COUNT == 4);
/* Every set of banks in canonical form, indexed by its bits: what two
 * lists are compared as ("sha384, SHA256" and "sha256,sha384" agree). */
static const char *const bank_sets[1u << VTPM_PCR__COUNT] = {
    "",
    "sha1",
    "sha256",
    "sha1,sha256",
    "sha384",
    "sha1,sha384",
    "sha256,sha384",
    "sha1,sha256,sha384",
    "sha512",
    "sha1,sha512",
    "sha256,sha512",
    "sha1,sha256,sha512",
    "sha384,sha512",
    "sha1,sha384,sha512",
    "sha256,sha384,sha512",
    "sha1,sha256,sha384,sha512",
};
/* The seed spec's trait keys; both sources use the flavor spelling. */
static const char *const version_trait_keys[] = {
    [VTPM_VERSION_1_2] = "trait:" VTPM_TRAIT_TPM_1_2,
    [VTPM_VERSION_2_0] = "trait:" VTPM_TRAIT_TPM_2_0,
};

static int
lookup_name(const char *const *names, size_t n, size_t first, const char *s)
{
    if (!s)
        return -1;
    for (size_t i = first; i < n; i++) {
        if (names[i] && strcmp(names[i], s) == 0)
            return (int)i;
    }
    return -1;
}

const char *
vtpm_version_str(vtpm_version v)
{
    if (v != VTPM_VERSION_1_2 && v != VTPM_VERSION_2_0)
        return NULL;
    return version_names[v];
}

const char *
vtpm_model_str(vtpm_model m)
{
    if ((unsigned)m >= G_N_ELEMENTS(model_names))
        return NULL;
    return model_names[m];
}

const char *
vtpm_secret_security_str(vtpm_secret_security s)
{
    if ((unsigned)s >= G_N_ELEMENTS(secret_names))
        return NULL;
    return secret_names[s];
}

int
vtpm_version_parse(const char *s)
{
    return lookup_name(version_names, G_N_ELEMENTS(version_names), VTPM_VERSION_1_2, s);
}

int
vtpm_model_parse(const char *s)
{
    return lookup_name(model_names, G_N_ELEMENTS(model_names), 0, s);
}

int
vtpm_secret_security_parse(const char *s)
{
    return lookup_name(secret_names, G_N_ELEMENTS(secret_names), 0, s);
}

const char *
vtpm_pcr_bank_str(vtpm_pcr_bank b)
{
    if ((unsigned)b >= G_N_ELEMENTS(bank_names))
        return NULL;
    return bank_names[b];
}

int
vtpm_pcr_bank_parse(const char *s)
{
    return lookup_name(bank_names, G_N_ELEMENTS(bank_names), 0, s);
}

char *
vtpm_pcr_banks_format(unsigned bits)
{
    return g_strdup(bank_sets[bits & ((1u << VTPM_PCR__COUNT) - 1)]);
}

const char *
vtpm_pcr_bank_trait(vtpm_pcr_bank b)
{
    if ((unsigned)b >= G_N_ELEMENTS(bank_traits))
        return NULL;
    return bank_traits[b];
}

const char *
vtpm_version_trait(vtpm_version v)
{
    if (v != VTPM_VERSION_1_2 && v != VTPM_VERSION_2_0)
        return NULL;
    return version_traits[v];
}

const char *
vtpm_model_trait(vtpm_model m)
{
    if ((unsigned)m >= G_N_ELEMENTS(model_traits))
        return NULL;
    return model_traits[m];
}

const char *
vtpm_secret_security_trait(vtpm_secret_security s)
{
    if ((unsigned)s >= G_N_ELEMENTS(secret_traits))
        return NULL;
    return secret_traits[s];
}

size_t
vtpm_policy_required_traits(const vtpm_device *dev, const char *out[VTPM_POLICY_MAX_TRAITS])
{
    size_t n = 3;

    if (!dev || dev->version == VTPM_VERSION_NONE)
        return 0;
    out[0] = vtpm_version_trait(dev->version);
    out[1] = vtpm_model_trait(dev->model);
    out[2] = vtpm_secret_security_trait(dev->secret_security);
    for (int b = 0; b < VTPM_PCR__COUNT; b++) {
        if (dev->pcr_banks & (1u << b))
            out[n++] = bank_traits[b];
    }
    return n;
}

bool
vtpm_device_equal(const vtpm_device *a, const vtpm_device *b)
{
    if (!a || !b)
        return a == b;
    if (a->version != b->version)
        return false;
    /* Without a vTPM the model and secret security mean nothing. */
    if (a->version == VTPM_VERSION_NONE)
        return true;
    return a->model == b->model && a->secret_security == b->secret_security &&
           a->pcr_banks == b->pcr_banks;
}

/* Python truthiness, as Nova tests values: "" counts as unset. */
static bool
truthy(const char *s)
{
    return s && *s;
}

static const char *
lookup(GHashTable *t, const char *key)
{
    return t ? g_hash_table_lookup(t, key) : NULL;
}

/* The seed spec's short model names, in any case, are the canonical
 * ones; everything else is kept as is and judged later. */
static const char *
norm_model(const char *s)
{
    if (s && g_ascii_strcasecmp(s, "tis") == 0)
        return model_names[VTPM_MODEL_TIS];
    if (s && g_ascii_strcasecmp(s, "crb") == 0)
        return model_names[VTPM_MODEL_CRB];
    return s;
}

static const char *
norm_none(const char *s)
{
    return s;
}

static int
conflict(vtpm_error *err, const setting *a, const setting *b)
{
    return vtpm_error_set(err, VTPM_FAULT_FLAVOR_IMAGE_CONFLICT, "%s %s=%s conflicts with %s %s=%s",
                          a->source, a->key, a->value, b->source, b->key, b->value);
}

/*
 * Nova's _get_unique_flavor_image_meta: a conflict only when both values
 * are non-empty and differ; the result is `flavor or image`, so an empty
 * flavor value falls through to the image, and an empty image value is
 * returned (and later rejected) rather than ignored.
 */
static int
unique_value(GHashTable *specs, GHashTable *props, const char *fkey, const char *ikey,
             const char *(*norm)(const char *), setting *out, vtpm_error *err)
{
    setting f = { SRC_FLAVOR, fkey, lookup(specs, fkey), NULL };
    setting i = { SRC_IMAGE, ikey, lookup(props, ikey), NULL };

    f.norm = norm(f.value);
    i.norm = norm(i.value);
    if (truthy(f.norm) && truthy(i.norm) && strcmp(f.norm, i.norm) != 0)
        return conflict(err, &f, &i);
    if (truthy(f.value))
        *out = f;
    else if (i.value)
        *out = i;
    else
        *out = (setting){ 0 };
    return 0;
}

int
vtpm_policy_unique_value(GHashTable *extra_specs, GHashTable *image_props, const char *fkey,
                         const char *ikey, vtpm_policy_value *out, vtpm_error *err)
{
    setting s;
    int rc = unique_value(extra_specs, image_props, fkey, ikey, norm_none, &s, err);

    if (rc < 0)
        return rc;
    *out = (vtpm_policy_value){ s.source, s.key, s.value };
    return 0;
}

/* Reads the version traits of one source into @traits. */
static int
read_version_traits(GHashTable *t, const char *source, version_trait *traits, size_t *n,
                    vtpm_error *err)
{
    for (int v = VTPM_VERSION_1_2; v <= VTPM_VERSION_2_0; v++) {
        const char *key = version_trait_keys[v];
        const char *val = lookup(t, key);
        version_trait *vt;

        if (!val)
            continue;
        vt = &traits[(*n)++];
        *vt = (version_trait){ { source, key, val, val }, v, TRAIT_REQUIRED };
        if (strcmp(val, "required") == 0)
            vt->want = TRAIT_REQUIRED;
        else if (strcmp(val, "forbidden") == 0)
            vt->want = TRAIT_FORBIDDEN;
        else
            return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                                  "%s %s=%s: invalid trait value; allowed: required, forbidden",
                                  source, key, val);
    }
    return 0;
}

static const version_trait *
first_required(const version_trait *traits, size_t n, vtpm_version v)
{
    for (size_t i = 0; i < n; i++) {
        if (traits[i].version == v && traits[i].want == TRAIT_REQUIRED)
            return &traits[i];
    }
    return NULL;
}

/*
 * Nova's version read, widened by the seed spec's version traits.  A
 * required trait requests its version exactly as hw:tpm_version would;
 * Nova's order is kept: conflicts first, then validity.
 */
static int
resolve_version(GHashTable *specs, GHashTable *props, vtpm_version *out, setting *origin,
                vtpm_error *err)
{
    version_trait traits[4];
    size_t n = 0;
    const version_trait *req12, *req20, *req;
    setting ver;
    int v;

    if (unique_value(specs, props, KEY_VERSION_FLAVOR, KEY_VERSION_IMAGE, norm_none, &ver, err) < 0)
        return -(int)err->code;
    if (read_version_traits(specs, SRC_FLAVOR, traits, &n, err) < 0 ||
        read_version_traits(props, SRC_IMAGE, traits, &n, err) < 0)
        return -(int)err->code;

    req12 = first_required(traits, n, VTPM_VERSION_1_2);
    req20 = first_required(traits, n, VTPM_VERSION_2_0);
    if (req12 && req20)
        return conflict(err, &req12->where, &req20->where);
    req = req12 ? req12 : req20;
    if (req && truthy(ver.value) && strcmp(ver.value, version_names[req->version]) != 0)
        return conflict(err, &req->where, &ver);

    if (truthy(ver.value)) {
        *origin = ver;
        v = vtpm_version_parse(ver.value);
    } else if (req) {
        *origin = req->where;
        v = req->version;
    } else if (ver.source) {
        /* Nova returns an empty image value rather than None, and
         * then rejects it as a version. */
        *origin = ver;
        v = -1;
    } else {
        *out = VTPM_VERSION_NONE;
        return 0;
    }
    if (v < 0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: invalid TPM version; allowed: 1.2, 2.0",
                              origin->source, origin->key, origin->value);

    /* The instance would demand and forbid the same TPM. */
    for (size_t i = 0; i < n; i++) {
        if (traits[i].want == TRAIT_FORBIDDEN && traits[i].version == (vtpm_version)v)
            return conflict(err, &traits[i].where, origin);
    }
    *out = v;
    return 0;
}

static int
resolve_model(GHashTable *specs, GHashTable *props, vtpm_version version,
              const setting *version_origin, vtpm_model *out, vtpm_error *err)
{
    setting model;
    int m;

    if (unique_value(specs, props, KEY_MODEL_FLAVOR, KEY_MODEL_IMAGE, norm_model, &model, err) < 0)
        return -(int)err->code;
    if (!model.source) {
        *out = VTPM_MODEL_TIS;
        return 0;
    }
    m = vtpm_model_parse(model.norm);
    if (m < 0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: invalid TPM model; allowed: tpm-tis, tpm-crb (or TIS, CRB)",
                              model.source, model.key, model.value);
    if (m == VTPM_MODEL_CRB && version != VTPM_VERSION_2_0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: TPM model CRB is only valid with TPM version 2.0, "
                              "but %s %s=%s",
                              model.source, model.key, model.value, version_origin->source,
                              version_origin->key, version_origin->value);
    *out = m;
    return 0;
}

/* Flavor only: an image property would lock the mode in for the life of
 * the instance, since rebuild cannot change it (Nova's reasoning). */
static int
resolve_secret(GHashTable *specs, vtpm_secret_security *out, vtpm_error *err)
{
    const char *val = lookup(specs, KEY_SECRET_FLAVOR);
    int s;

    if (!truthy(val)) {
        *out = VTPM_SECRET_USER;
        return 0;
    }
    s = vtpm_secret_security_parse(val);
    if (s < 0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: invalid TPM secret security; allowed: user, host, deployment",
                              SRC_FLAVOR, KEY_SECRET_FLAVOR, val);
    *out = s;
    return 0;
}

/* @s as a set of PCR banks (names in any case, blanks around them
 * allowed): NULL with *out set, or why it is not one. */
static char *
parse_banks(const char *s, unsigned *out)
{
    g_auto(GStrv) items = g_strsplit(s, ",", -1);
    unsigned bits = 0;

    for (char **it = items; *it; it++) {
        g_autofree char *name = g_ascii_strdown(g_strstrip(*it), -1);
        int b = vtpm_pcr_bank_parse(name);

        if (!*name)
            return g_strdup(items[1] ? "has an empty item" : "names no PCR bank");
        if (b < 0)
            return g_strdup_printf("'%s' is not a PCR bank", *it);
        if (bits & (1u << b))
            return g_strdup_printf("lists %s twice", name);
        bits |= 1u << b;
    }
    if (!bits)
        return g_strdup("names no PCR bank");
    *out = bits;
    return NULL;
}

/* The canonical form of a valid list; anything else is compared as given. */
static const char *
norm_banks(const char *s)
{
    g_autofree char *why = NULL;
    unsigned bits = 0;

    if (!s || (why = parse_banks(s, &bits)))
        return s;
    return bank_sets[bits];
}

static int
resolve_banks(GHashTable *specs, GHashTable *props, vtpm_version version,
              const setting *version_origin, unsigned *out, vtpm_error *err)
{
    g_autofree char *why = NULL;
    setting banks;
    unsigned bits = 0;

    if (unique_value(specs, props, KEY_BANKS_FLAVOR, KEY_BANKS_IMAGE, norm_banks, &banks, err) < 0)
        return -(int)err->code;
    if (!banks.source) {
        *out = 0;
        return 0;
    }
    if ((why = parse_banks(banks.value, &bits)))
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: %s; allowed: a comma-separated list of sha1, sha256, "
                              "sha384, sha512",
                              banks.source, banks.key, banks.value, why);
    if (version != VTPM_VERSION_2_0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "%s %s=%s: PCR banks are only valid with TPM version 2.0, but %s "
                              "%s=%s",
                              banks.source, banks.key, banks.value, version_origin->source,
                              version_origin->key, version_origin->value);
    *out = bits;
    return 0;
}

int
vtpm_policy_resolve(GHashTable *extra_specs, GHashTable *image_props, vtpm_device *out,
                    vtpm_error *err)
{
    vtpm_error local;
    vtpm_device dev = { VTPM_VERSION_NONE, VTPM_MODEL_TIS, VTPM_SECRET_USER, 0 };
    setting origin = { 0 };

    /* The helpers read err->code back, so they need somewhere to write. */
    if (!err)
        err = &local;
    if (resolve_version(extra_specs, image_props, &dev.version, &origin, err) < 0)
        return -(int)err->code;
    if (dev.version != VTPM_VERSION_NONE &&
        (resolve_model(extra_specs, image_props, dev.version, &origin, &dev.model, err) < 0 ||
         resolve_secret(extra_specs, &dev.secret_security, err) < 0 ||
         resolve_banks(extra_specs, image_props, dev.version, &origin, &dev.pcr_banks, err) < 0))
        return -(int)err->code;
    *out = dev;
    return 0;
}
