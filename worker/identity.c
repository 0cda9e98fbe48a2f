/* SPDX-License-Identifier: Apache-2.0 */
/* A vTPM's identity record (identity.h). */
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "identity.h"
#include "vtpm/proto.h"

#define PREFIX "v1:"
#define PEM_PUBLIC_BEGIN "-----BEGIN PUBLIC KEY-----\n"
#define PEM_PUBLIC_END "-----END PUBLIC KEY-----\n"
#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----\n"
#define PEM_CERT_END "-----END CERTIFICATE-----\n"
/* An RSA 2048 EK certificate of swtpm_cert is ~1 KB, its PEM ~1.4 KB. */
#define MAX_PEM 16384
#define MAX_SUBJECT 1024
/* A record of two EKs is ~5 KB; anything near this is no record. */
#define MAX_RECORD (64 * 1024)

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_pubkey_t, gnutls_pubkey_deinit, NULL)

static const char *const alg_names[] = {
    [VTPM_EK_RSA2048] = "rsa2048",
    [VTPM_EK_ECC_NIST_P256] = "ecc-nist-p256",
};

const char *
vtpm_ek_alg_str(vtpm_ek_alg a)
{
    return (unsigned)a < G_N_ELEMENTS(alg_names) ? alg_names[a] : NULL;
}

int
vtpm_ek_alg_parse(const char *s)
{
    for (size_t i = 0; s && i < G_N_ELEMENTS(alg_names); i++) {
        if (strcmp(alg_names[i], s) == 0)
            return (int)i;
    }
    return -1;
}

vtpm_identity *
vtpm_identity_new(vtpm_version version, const char *ca_subject, const char *ca_sha256)
{
    vtpm_identity *id = g_new0(vtpm_identity, 1);

    id->version = version;
    id->ca_subject = g_strdup(ca_subject);
    id->ca_sha256 = g_strdup(ca_sha256);
    return id;
}

void
vtpm_identity_free(vtpm_identity *id)
{
    if (!id)
        return;
    for (size_t i = 0; i < id->n_ek; i++) {
        g_free(id->ek[i].public_pem);
        g_free(id->ek[i].cert_pem);
    }
    g_free(id->ca_subject);
    g_free(id->ca_sha256);
    g_free(id);
}

/* ---- building from certificates ----------------------------------------- */

static int
tls_error(vtpm_error *err, const char *what, int rc)
{
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: %s", what, gnutls_strerror(rc));
}

/* @pub exported in @fmt as a NUL-terminated string (PEM) or bytes (DER). */
static int
export_key(gnutls_pubkey_t pub, gnutls_x509_crt_fmt_t fmt, GBytes **out, vtpm_error *err)
{
    gnutls_datum_t d = { 0 };
    int rc = gnutls_pubkey_export2(pub, fmt, &d);

    if (rc < 0)
        return tls_error(err, "exporting an EK public key", rc);
    *out = g_bytes_new(d.data, d.size);
    gnutls_free(d.data);
    return 0;
}

/* Which EK algorithm @pub is. */
static int
key_alg(gnutls_pubkey_t pub, vtpm_ek_alg *out, vtpm_error *err)
{
    unsigned bits = 0;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;

    if (pk == GNUTLS_PK_RSA && bits == 2048) {
        *out = VTPM_EK_RSA2048;
        return 0;
    }
    if (pk == GNUTLS_PK_ECDSA && gnutls_pubkey_export_ecc_raw(pub, &curve, NULL, NULL) >= 0 &&
        curve == GNUTLS_ECC_CURVE_SECP256R1) {
        *out = VTPM_EK_ECC_NIST_P256;
        return 0;
    }
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                          "an EK certificate certifies a %s key of %u bits, neither RSA 2048 "
                          "nor ECC NIST P-256",
                          gnutls_pk_get_name(pk), bits);
}

/* The certificate must certify the key the TPM reported. */
static int
same_key(gnutls_pubkey_t cert_key, const char *pub_pem, vtpm_error *err)
{
    g_auto(gnutls_pubkey_t) tpm_key = NULL;
    g_autoptr(GBytes) a = NULL, b = NULL;
    gnutls_datum_t d = { (unsigned char *)pub_pem, (unsigned)strlen(pub_pem) };
    int rc;

    if ((rc = gnutls_pubkey_init(&tpm_key)) < 0 ||
        (rc = gnutls_pubkey_import(tpm_key, &d, GNUTLS_X509_FMT_PEM)) < 0)
        return tls_error(err, "reading the TPM's EK public key", rc);
    if ((rc = export_key(cert_key, GNUTLS_X509_FMT_DER, &a, err)) < 0 ||
        (rc = export_key(tpm_key, GNUTLS_X509_FMT_DER, &b, err)) < 0)
        return rc;
    if (!g_bytes_equal(a, b))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "an EK certificate certifies another key than the TPM's EK");
    return 0;
}

static char *
datum_str(const gnutls_datum_t *d)
{
    char *s = g_strndup((const char *)d->data, d->size);

    gnutls_free(d->data);
    return s;
}

int
vtpm_identity_add_ek(vtpm_identity *id, const char *pub_pem, GBytes *cert_der, vtpm_error *err)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;
    g_auto(gnutls_pubkey_t) key = NULL;
    g_autoptr(GBytes) pem = NULL;
    gnutls_datum_t der = { (unsigned char *)g_bytes_get_data(cert_der, NULL),
                           (unsigned)g_bytes_get_size(cert_der) };
    gnutls_datum_t cert_pem = { 0 };
    vtpm_ek_alg alg = VTPM_EK__COUNT;
    int rc;

    if ((rc = gnutls_x509_crt_init(&crt)) < 0 ||
        (rc = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER)) < 0)
        return tls_error(err, "reading an EK certificate", rc);
    if ((rc = gnutls_pubkey_init(&key)) < 0 || (rc = gnutls_pubkey_import_x509(key, crt, 0)) < 0)
        return tls_error(err, "reading the key of an EK certificate", rc);
    if ((rc = key_alg(key, &alg, err)) < 0 || (pub_pem && (rc = same_key(key, pub_pem, err)) < 0))
        return rc;
    for (size_t i = 0; i < id->n_ek; i++) {
        if (id->ek[i].alg == alg)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "a second %s EK certificate",
                                  vtpm_ek_alg_str(alg));
    }
    if ((rc = export_key(key, GNUTLS_X509_FMT_PEM, &pem, err)) < 0)
        return rc;
    if ((rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cert_pem)) < 0)
        return tls_error(err, "writing an EK certificate as PEM", rc);
    id->ek[id->n_ek].alg = alg;
    id->ek[id->n_ek].public_pem =
        g_strndup(g_bytes_get_data(pem, NULL), g_bytes_get_size(pem));
    id->ek[id->n_ek].cert_pem = datum_str(&cert_pem);
    id->n_ek++;
    return 0;
}

int
vtpm_identity_describe_ca(GBytes *ca_der, char **subject, char **sha256, vtpm_error *err)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;
    gnutls_datum_t der = { (unsigned char *)g_bytes_get_data(ca_der, NULL),
                           (unsigned)g_bytes_get_size(ca_der) };
    gnutls_datum_t dn = { 0 };
    int rc;

    if ((rc = gnutls_x509_crt_init(&crt)) < 0 ||
        (rc = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER)) < 0)
        return tls_error(err, "reading the CA certificate", rc);
    if ((rc = gnutls_x509_crt_get_dn3(crt, &dn, 0)) < 0)
        return tls_error(err, "reading the subject of the CA certificate", rc);
    *subject = datum_str(&dn);
    *sha256 = g_compute_checksum_for_data(G_CHECKSUM_SHA256, der.data, der.size);
    return 0;
}

/* ---- the text form ------------------------------------------------------------ */

void
vtpm_identity_pack(const vtpm_identity *id, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    vtpm_pack_kv_str(pk, "version", vtpm_version_str(id->version));
    vtpm_pack_str(pk, "ek");
    msgpack_pack_array(pk, id->n_ek);
    for (size_t i = 0; i < id->n_ek; i++) {
        msgpack_pack_map(pk, 3);
        vtpm_pack_kv_str(pk, "alg", vtpm_ek_alg_str(id->ek[i].alg));
        vtpm_pack_kv_str(pk, "public_pem", id->ek[i].public_pem);
        vtpm_pack_kv_str(pk, "cert_pem", id->ek[i].cert_pem);
    }
    vtpm_pack_str(pk, "ca");
    msgpack_pack_map(pk, 2);
    vtpm_pack_kv_str(pk, "subject", id->ca_subject);
    vtpm_pack_kv_str(pk, "sha256", id->ca_sha256);
}

char *
vtpm_identity_encode(const vtpm_identity *id)
{
    g_autofree char *b64 = NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_identity_pack(id, &pk);
    b64 = g_base64_encode((const guchar *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return g_strconcat(PREFIX, b64, NULL);
}

static bool
pem_armored(const char *s, const char *begin, const char *end)
{
    return g_str_has_prefix(s, begin) && g_str_has_suffix(s, end) &&
           strlen(s) > strlen(begin) + strlen(end);
}

/* One element of "ek" into id->ek[id->n_ek]. */
static int
decode_ek(const msgpack_object *o, size_t i, vtpm_identity *id, vtpm_error *err)
{
    g_autofree char *where = g_strdup_printf("identity.ek[%zu]", i);
    g_autofree char *alg = NULL, *pub = NULL, *cert = NULL;
    int a, rc;

    if (o->type != MSGPACK_OBJECT_MAP)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: expected map", where);
    if ((rc = vtpm_proto_get_str(o, where, "alg", true, 32, &alg, err)) < 0 ||
        (rc = vtpm_proto_get_str(o, where, "public_pem", true, MAX_PEM, &pub, err)) < 0 ||
        (rc = vtpm_proto_get_str(o, where, "cert_pem", true, MAX_PEM, &cert, err)) < 0)
        return rc;
    if ((a = vtpm_ek_alg_parse(alg)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s.alg: unknown algorithm '%s'",
                              where, alg);
    if (a != VTPM_EK_RSA2048 && id->version != VTPM_VERSION_2_0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s.alg: %s on a TPM %s", where, alg,
                              vtpm_version_str(id->version));
    for (size_t k = 0; k < id->n_ek; k++) {
        if (id->ek[k].alg == (vtpm_ek_alg)a)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s.alg: %s twice", where, alg);
    }
    if (!pem_armored(pub, PEM_PUBLIC_BEGIN, PEM_PUBLIC_END))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s.public_pem: not a PEM public key",
                              where);
    if (!pem_armored(cert, PEM_CERT_BEGIN, PEM_CERT_END))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s.cert_pem: not a PEM certificate",
                              where);
    id->ek[id->n_ek] =
        (vtpm_identity_ek){ (vtpm_ek_alg)a, g_steal_pointer(&pub), g_steal_pointer(&cert) };
    id->n_ek++;
    return 0;
}

static int
read_map(const msgpack_object *m, vtpm_identity *id, vtpm_error *err)
{
    const msgpack_object *ek, *ca = NULL;
    g_autofree char *version = NULL;
    int v, rc;

    if (m->type != MSGPACK_OBJECT_MAP)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "identity: expected map");
    if ((rc = vtpm_proto_get_str(m, "identity", "version", true, 8, &version, err)) < 0 ||
        (rc = vtpm_proto_get_map(m, "identity", "ca", true, &ca, err)) < 0 ||
        (rc = vtpm_proto_get_str(ca, "identity.ca", "subject", true, MAX_SUBJECT,
                                 &id->ca_subject, err)) < 0 ||
        (rc = vtpm_proto_get_str(ca, "identity.ca", "sha256", true, 64, &id->ca_sha256, err)) < 0)
        return rc;
    if ((v = vtpm_version_parse(version)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "identity.version: '%s' is no TPM "
                              "version", version);
    id->version = v;
    if (!vtpm_proto_is_lower_hex(id->ca_sha256, 64))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "identity.ca.sha256: not 64 lower-case hex digits");
    ek = vtpm_proto_map_get(m, "ek");
    if (!ek || ek->type != MSGPACK_OBJECT_ARRAY || ek->via.array.size == 0 ||
        ek->via.array.size > VTPM_EK__COUNT)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "identity.ek: expected an array of 1 to %d EKs", VTPM_EK__COUNT);
    for (size_t i = 0; i < ek->via.array.size; i++) {
        if ((rc = decode_ek(&ek->via.array.ptr[i], i, id, err)) < 0)
            return rc;
    }
    return 0;
}

int
vtpm_identity_read(const msgpack_object *map, vtpm_identity **out, vtpm_error *err)
{
    g_autoptr(vtpm_identity) id = vtpm_identity_new(VTPM_VERSION_NONE, NULL, NULL);
    int rc;

    if ((rc = read_map(map, id, err)) < 0)
        return rc;
    *out = g_steal_pointer(&id);
    return 0;
}

/* The msgpack map of a record: its checks before msgpack-c allocates. */
static int
decode_bytes(const guchar *data, gsize len, vtpm_identity *id, vtpm_error *err)
{
    vtpm_proto_limits lim;
    msgpack_unpacked up;
    size_t off = 0;
    int rc;

    vtpm_proto_limits_init(&lim);
    lim.max_body = MAX_RECORD;
    if ((rc = vtpm_proto_check(data, len, &lim, err)) < 0)
        return rc;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, (const char *)data, len, &off) != MSGPACK_UNPACK_SUCCESS)
        rc = vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "identity: not msgpack");
    else
        rc = read_map(&up.data, id, err);
    msgpack_unpacked_destroy(&up);
    return rc;
}

int
vtpm_identity_decode(const char *text, vtpm_identity **out, vtpm_error *err)
{
    g_autoptr(vtpm_identity) id = vtpm_identity_new(VTPM_VERSION_NONE, NULL, NULL);
    g_autofree guchar *raw = NULL;
    gsize len = 0;
    int rc;

    if (!text || !g_str_has_prefix(text, PREFIX) || strlen(text) > MAX_RECORD * 2)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "TPM identity record: not in the v1:<base64> form");
    for (const char *c = text + strlen(PREFIX); *c; c++) {
        if (!g_ascii_isalnum(*c) && *c != '+' && *c != '/' && *c != '=')
            return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                  "TPM identity record: not base64");
    }
    raw = g_base64_decode(text + strlen(PREFIX), &len);
    if ((rc = decode_bytes(raw, len, id, err)) < 0) {
        /* Damage to what vtpmd wrote, not a bad request of the caller. */
        if (err) {
            vtpm_error_prefix(err, "TPM identity record");
            err->code = VTPM_FAULT_STATE_INTEGRITY;
        }
        return -(int)VTPM_FAULT_STATE_INTEGRITY;
    }
    *out = g_steal_pointer(&id);
    return 0;
}

/* ---- what a tenant checks ------------------------------------------------------ */

static char *
tls_why(const char *what, int rc)
{
    return g_strdup_printf("%s: %s", what, gnutls_strerror(rc));
}

/* The certificate of @ek chains to one of @cas: NULL, or why not. */
static char *
chain_why(gnutls_x509_crt_t crt, const gnutls_x509_crt_t *cas, unsigned n, bool sha1)
{
    unsigned status = 0;
    gnutls_datum_t out = { 0 };
    char *why;
    int rc = gnutls_x509_crt_list_verify(&crt, 1, cas, n, NULL, 0,
                                         sha1 ? GNUTLS_VERIFY_ALLOW_SIGN_WITH_SHA1 : 0, &status);

    if (rc < 0)
        return tls_why("verifying the certificate", rc);
    if (status == 0)
        return NULL;
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0)
        return g_strdup_printf("the certificate does not verify (GnuTLS status 0x%x)", status);
    why = g_strndup((const char *)out.data, out.size);
    gnutls_free(out.data);
    return why;
}

/* The certificate certifies the record's key and names the instance. */
static char *
content_why(gnutls_x509_crt_t crt, const vtpm_identity_ek *ek, const char *uuid, bool tpm2)
{
    g_auto(gnutls_pubkey_t) key = NULL;
    vtpm_error err = { 0 };
    char cn[256] = "";
    size_t len = sizeof(cn);
    int rc;

    if ((rc = gnutls_pubkey_init(&key)) < 0 || (rc = gnutls_pubkey_import_x509(key, crt, 0)) < 0)
        return tls_why("reading the certificate's key", rc);
    if (same_key(key, ek->public_pem, &err) < 0)
        return g_strdup(strstr(err.message, "another key")
                            ? "the certificate certifies another key than public_pem"
                            : err.message);
    if (tpm2 && (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn,
                                               &len) < 0 ||
                 g_ascii_strcasecmp(cn, uuid) != 0))
        return g_strdup_printf("the certificate's subject CN is '%s', not the instance %s", cn,
                               uuid);
    return NULL;
}

int
vtpm_identity_verify_ek(const vtpm_identity *id, size_t i, const char *uuid, GBytes *ca_pem,
                        char **why)
{
    g_auto(gnutls_x509_crt_t) crt = NULL;
    gnutls_x509_crt_t *cas = NULL;
    unsigned n = 0;
    gnutls_datum_t ca = { (unsigned char *)g_bytes_get_data(ca_pem, NULL),
                          (unsigned)g_bytes_get_size(ca_pem) };
    gnutls_datum_t cert = { (unsigned char *)id->ek[i].cert_pem,
                            (unsigned)strlen(id->ek[i].cert_pem) };
    int rc;

    if ((rc = gnutls_x509_crt_list_import2(&cas, &n, &ca, GNUTLS_X509_FMT_PEM, 0)) < 0) {
        *why = tls_why("reading the CA certificates", rc);
        return -1;
    }
    if ((rc = gnutls_x509_crt_init(&crt)) < 0 ||
        (rc = gnutls_x509_crt_import(crt, &cert, GNUTLS_X509_FMT_PEM)) < 0)
        *why = tls_why("reading the EK certificate", rc);
    else if (!(*why = chain_why(crt, cas, n, id->version == VTPM_VERSION_1_2)))
        *why = content_why(crt, &id->ek[i], uuid, id->version == VTPM_VERSION_2_0);
    for (unsigned k = 0; k < n; k++)
        gnutls_x509_crt_deinit(cas[k]);
    gnutls_free(cas);
    return *why ? -1 : 0;
}
