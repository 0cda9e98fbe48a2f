/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/identity.c: a TPM's identity record built from EK certificates
 * (made here with openssl, as a CA would), its text form and every way a
 * damaged record is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "identity.h"
#include "lib/testca.h"
#include "vtpm/proto.h"

static tc_ca *CA;

#define EK_SUBJECT "/CN=0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001"

static int
group_setup(void **state)
{
    CA = tc_ca_new();
    tc_make_cert(CA, "rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", EK_SUBJECT);
    tc_make_cert(CA, "ecc", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", EK_SUBJECT);
    tc_make_cert(CA, "rsa3072", "-algorithm RSA -pkeyopt rsa_keygen_bits:3072", EK_SUBJECT);
    tc_make_cert(CA, "p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384", EK_SUBJECT);
    tc_make_cert(CA, "other", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", EK_SUBJECT);
    return 0;
}

static int
group_teardown(void **state)
{
    g_clear_pointer(&CA, tc_ca_free);
    return 0;
}

static GBytes *
file_bytes(const char *name)
{
    return tc_bytes(CA, name);
}

static char *
file_text(const char *name)
{
    return tc_text(CA, name);
}

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* A TPM 2.0 record with both EKs, their keys as "the TPM" reported them. */
static vtpm_identity *
two_eks(void)
{
    vtpm_identity *id = vtpm_identity_new(VTPM_VERSION_2_0, "CN=Test EK CA,O=vtpmd test", SHA_A);
    g_autoptr(GBytes) rsa = file_bytes("rsa.der");
    g_autoptr(GBytes) ecc = file_bytes("ecc.der");
    g_autofree char *rsa_pub = file_text("rsa.pub");
    g_autofree char *ecc_pub = file_text("ecc.pub");
    vtpm_error err = { 0 };

    if (vtpm_identity_add_ek(id, rsa_pub, rsa, &err) < 0 ||
        vtpm_identity_add_ek(id, ecc_pub, ecc, &err) < 0)
        fail_msg("add_ek: %s", err.message);
    return id;
}

static void
test_build(void **state)
{
    g_autoptr(vtpm_identity) id = two_eks();
    g_autofree char *rsa_pub = file_text("rsa.pub");
    g_autofree char *ecc_pub = file_text("ecc.pub");
    g_autofree char *ca_subject = NULL, *ca_sha = NULL, *want_sha = NULL;
    g_autoptr(GBytes) ca = file_bytes("ca.der");
    vtpm_error err = { 0 };

    assert_int_equal(id->n_ek, 2);
    assert_int_equal(id->ek[0].alg, VTPM_EK_RSA2048);
    assert_int_equal(id->ek[1].alg, VTPM_EK_ECC_NIST_P256);
    /* The same SubjectPublicKeyInfo PEM as openssl writes (and
     * tpm2_readpublic -f pem in a guest). */
    assert_string_equal(id->ek[0].public_pem, rsa_pub);
    assert_string_equal(id->ek[1].public_pem, ecc_pub);
    assert_true(g_str_has_prefix(id->ek[0].cert_pem, "-----BEGIN CERTIFICATE-----\n"));
    assert_true(g_str_has_suffix(id->ek[1].cert_pem, "-----END CERTIFICATE-----\n"));

    assert_int_equal(vtpm_identity_describe_ca(ca, &ca_subject, &ca_sha, &err), 0);
    assert_string_equal(ca_subject, "CN=Test EK CA,O=vtpmd test");
    want_sha = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, ca);
    assert_string_equal(ca_sha, want_sha);
    assert_string_equal(vtpm_ek_alg_str(VTPM_EK_RSA2048), "rsa2048");
    assert_string_equal(vtpm_ek_alg_str(VTPM_EK_ECC_NIST_P256), "ecc-nist-p256");
    assert_null(vtpm_ek_alg_str(VTPM_EK__COUNT));
    assert_int_equal(vtpm_ek_alg_parse("ecc-nist-p256"), VTPM_EK_ECC_NIST_P256);
    assert_int_equal(vtpm_ek_alg_parse("ecc"), -1);
    assert_int_equal(vtpm_ek_alg_parse(NULL), -1);
}

/* A TPM 1.2's EK is taken from its certificate. */
static void
test_build_without_tpm_key(void **state)
{
    g_autoptr(vtpm_identity) id = vtpm_identity_new(VTPM_VERSION_1_2, "CN=x", SHA_A);
    g_autoptr(GBytes) rsa = file_bytes("rsa.der");
    g_autofree char *rsa_pub = file_text("rsa.pub");
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_identity_add_ek(id, NULL, rsa, &err), 0);
    assert_string_equal(id->ek[0].public_pem, rsa_pub);
}

static void
expect_add_fault(vtpm_identity *id, const char *pub, const char *cert, const char *message)
{
    g_autoptr(GBytes) der = file_bytes(cert);
    g_autofree char *pem = pub ? file_text(pub) : NULL;
    size_t n = id->n_ek;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_identity_add_ek(id, pem, der, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_int_equal(err.code, VTPM_FAULT_INTERNAL);
    if (!strstr(err.message, message))
        fail_msg("expected \"%s\" in \"%s\"", message, err.message);
    assert_int_equal(id->n_ek, n);
}

static void
test_build_refused(void **state)
{
    g_autoptr(vtpm_identity) id = vtpm_identity_new(VTPM_VERSION_2_0, "CN=x", SHA_A);
    g_autoptr(GBytes) junk = g_bytes_new_static("not DER", 7);
    vtpm_error err = { 0 };

    expect_add_fault(id, "other.pub", "rsa.der", "certifies another key than the TPM's EK");
    expect_add_fault(id, NULL, "rsa3072.der", "RSA key of 3072 bits, neither RSA 2048 nor");
    expect_add_fault(id, NULL, "p384.der", "of 384 bits, neither RSA 2048 nor ECC NIST P-256");
    assert_int_equal(vtpm_identity_add_ek(id, NULL, junk, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_true(g_str_has_prefix(err.message, "reading an EK certificate: "));
    {
        g_autoptr(GBytes) rsa = file_bytes("rsa.der");

        assert_int_equal(vtpm_identity_add_ek(id, NULL, rsa, &err), 0);
    }
    expect_add_fault(id, NULL, "other.der", "a second rsa2048 EK certificate");
}

/* What get_vtpm_identity answers (the packed result map). */
static GBytes *
packed(const vtpm_identity *id)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    GBytes *b;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_identity_pack(id, &pk);
    b = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return b;
}

static void
test_round_trip(void **state)
{
    g_autoptr(vtpm_identity) id = two_eks();
    g_autoptr(vtpm_identity) back = NULL;
    g_autofree char *text = vtpm_identity_encode(id);
    g_autoptr(GBytes) a = packed(id);
    g_autoptr(GBytes) b = NULL;
    vtpm_error err = { 0 };

    assert_true(g_str_has_prefix(text, "v1:"));
    /* One attribute value: nothing XML or a parser would change. */
    assert_null(strpbrk(text, "<>&'\" \n\t"));
    assert_int_equal(vtpm_identity_decode(text, &back, &err), 0);
    b = packed(back);
    assert_true(g_bytes_equal(a, b));
    assert_int_equal(back->version, VTPM_VERSION_2_0);
    assert_string_equal(back->ca_subject, "CN=Test EK CA,O=vtpmd test");
    assert_string_equal(back->ek[1].cert_pem, id->ek[1].cert_pem);
}

/* ---- damaged records ------------------------------------------------------ */

typedef struct {
    const char *version;      /* NULL: absent */
    int n_ek;                 /* -1: "ek" is a string */
    const char *alg[3];
    const char *pub, *cert;   /* of every EK */
    const char *ca_subject, *ca_sha256;
    bool no_ca;
} rec;

#define PUB "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----\n"
#define CERT "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

static void
kv(msgpack_packer *pk, const char *k, const char *v)
{
    if (v)
        vtpm_pack_kv_str(pk, k, v);
}

static char *
encode_rec(const rec *r)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    g_autofree char *b64 = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (r->version ? 1 : 0) + 1 + (r->no_ca ? 0 : 1));
    kv(&pk, "version", r->version);
    vtpm_pack_str(&pk, "ek");
    if (r->n_ek < 0) {
        vtpm_pack_str(&pk, "rsa2048");
    } else {
        msgpack_pack_array(&pk, r->n_ek);
        for (int i = 0; i < r->n_ek; i++) {
            msgpack_pack_map(&pk, 1 + !!r->pub + !!r->cert);
            kv(&pk, "alg", r->alg[i]);
            kv(&pk, "public_pem", r->pub);
            kv(&pk, "cert_pem", r->cert);
        }
    }
    if (!r->no_ca) {
        vtpm_pack_str(&pk, "ca");
        msgpack_pack_map(&pk, !!r->ca_subject + !!r->ca_sha256);
        kv(&pk, "subject", r->ca_subject);
        kv(&pk, "sha256", r->ca_sha256);
    }
    b64 = g_base64_encode((const guchar *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return g_strconcat("v1:", b64, NULL);
}

static void
expect_decode_fault(const char *text, const char *message)
{
    vtpm_identity *id = (vtpm_identity *)&id;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_identity_decode(text, &id, &err), -(int)VTPM_FAULT_STATE_INTEGRITY);
    assert_int_equal(err.code, VTPM_FAULT_STATE_INTEGRITY);
    if (strcmp(err.message, message) != 0)
        fail_msg("%s\n expected: %s\n got:      %s", text, message, err.message);
    assert_ptr_equal(id, (vtpm_identity *)&id);
}

static void
test_decode_refused(void **state)
{
    static const struct {
        rec r;
        const char *message;
    } cases[] = {
        { { "2.0", 2, { "rsa2048", "ecc-nist-p256" }, PUB, CERT, "CN=x", SHA_A }, NULL },
        { { NULL, 1, { "rsa2048" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.version: missing required key" },
        { { "3.0", 1, { "rsa2048" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.version: '3.0' is no TPM version" },
        { { "2.0", 1, { "rsa2048" }, PUB, CERT, NULL, NULL, true },
          "TPM identity record: identity.ca: missing required key" },
        { { "2.0", 1, { "rsa2048" }, PUB, CERT, "CN=x", "ABCD" },
          "TPM identity record: identity.ca.sha256: not 64 lower-case hex digits" },
        { { "2.0", 1, { "rsa2048" }, PUB, CERT, NULL, SHA_A },
          "TPM identity record: identity.ca.subject: missing required key" },
        { { "2.0", 0, { NULL }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek: expected an array of 1 to 2 EKs" },
        { { "2.0", 3, { "rsa2048", "ecc-nist-p256", "rsa2048" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek: expected an array of 1 to 2 EKs" },
        { { "2.0", -1, { NULL }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek: expected an array of 1 to 2 EKs" },
        { { "2.0", 1, { "ecc-nist-p384" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek[0].alg: unknown algorithm 'ecc-nist-p384'" },
        { { "2.0", 2, { "ecc-nist-p256", "ecc-nist-p256" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek[1].alg: ecc-nist-p256 twice" },
        { { "1.2", 1, { "ecc-nist-p256" }, PUB, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek[0].alg: ecc-nist-p256 on a TPM 1.2" },
        { { "2.0", 1, { "rsa2048" }, CERT, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek[0].public_pem: not a PEM public key" },
        { { "2.0", 1, { "rsa2048" }, PUB, PUB, "CN=x", SHA_A },
          "TPM identity record: identity.ek[0].cert_pem: not a PEM certificate" },
        { { "2.0", 1, { "rsa2048" }, NULL, CERT, "CN=x", SHA_A },
          "TPM identity record: identity.ek[0].public_pem: missing required key" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *text = encode_rec(&cases[i].r);
        g_autoptr(vtpm_identity) id = NULL;
        vtpm_error err = { 0 };

        if (!cases[i].message) {
            if (vtpm_identity_decode(text, &id, &err) < 0)
                fail_msg("case %zu: %s", i, err.message);
            continue;
        }
        expect_decode_fault(text, cases[i].message);
    }
    expect_decode_fault(NULL, "TPM identity record: not in the v1:<base64> form");
    expect_decode_fault("v2:AAAA", "TPM identity record: not in the v1:<base64> form");
    expect_decode_fault("v1:AA AA", "TPM identity record: not base64");
    expect_decode_fault("v1:AAAA'/><x", "TPM identity record: not base64");
    /* 0x92 = an array of 2 where a map belongs; 0xdf... = a map header
     * that announces 2^32-1 entries (refused before msgpack-c allocates). */
    expect_decode_fault("v1:kgEC", "TPM identity record: identity: expected map");
    expect_decode_fault("v1:3/////8=", "TPM identity record: map of 4294967295 entries "
                                        "at offset 0 exceeds limit of 4096");
    expect_decode_fault("v1:", "TPM identity record: truncated at offset 0");
}

#define UUID "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001"

/* What vtpmctl identity --verify says of each EK. */
static void
test_verify(void **state)
{
    g_autoptr(vtpm_identity) id = two_eks();
    g_autoptr(GBytes) ca = tc_bytes(CA, "ca.pem");
    g_autoptr(tc_ca) other = tc_ca_new();
    g_autoptr(GBytes) other_pem = tc_bytes(other, "ca.pem");
    g_autoptr(GBytes) both = NULL;
    char *why = NULL;

    for (size_t i = 0; i < id->n_ek; i++) {
        assert_int_equal(vtpm_identity_verify_ek(id, i, UUID, ca, &why), 0);
        assert_null(why);
    }
    /* Another instance's UUID: the certificate does not name it. */
    assert_int_equal(vtpm_identity_verify_ek(id, 0, "11111111-2222-3333-4444-555555555555", ca,
                                             &why), -1);
    assert_string_equal(why, "the certificate's subject CN is '" UUID "', not the instance "
                             "11111111-2222-3333-4444-555555555555");
    g_clear_pointer(&why, g_free);
    /* Another CA (of the same name: only the signature tells them apart). */
    assert_int_equal(vtpm_identity_verify_ek(id, 1, UUID, other_pem, &why), -1);
    assert_non_null(strstr(why, "The certificate is NOT trusted"));
    g_clear_pointer(&why, g_free);
    /* A bundle holding the right CA among others verifies. */
    {
        GByteArray *b = g_byte_array_new();

        g_byte_array_append(b, g_bytes_get_data(other_pem, NULL), g_bytes_get_size(other_pem));
        g_byte_array_append(b, g_bytes_get_data(ca, NULL), g_bytes_get_size(ca));
        both = g_byte_array_free_to_bytes(b);
    }
    assert_int_equal(vtpm_identity_verify_ek(id, 1, UUID, both, &why), 0);
    /* A record whose public_pem is not the certificate's key. */
    g_free(id->ek[0].public_pem);
    id->ek[0].public_pem = file_text("other.pub");
    assert_int_equal(vtpm_identity_verify_ek(id, 0, UUID, ca, &why), -1);
    assert_string_equal(why, "the certificate certifies another key than public_pem");
    g_clear_pointer(&why, g_free);
    assert_int_equal(vtpm_identity_verify_ek(id, 1, UUID, g_bytes_new_static("junk", 4), &why),
                     -1);
    assert_true(g_str_has_prefix(why, "reading the CA certificates: "));
    g_free(why);
}

/* A client reads the reply map back into a record. */
static void
test_read(void **state)
{
    g_autoptr(vtpm_identity) id = two_eks();
    g_autoptr(vtpm_identity) back = NULL;
    g_autoptr(GBytes) b = packed(id);
    msgpack_unpacked up;
    size_t off = 0;
    vtpm_error err = { 0 };

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, g_bytes_get_data(b, NULL), g_bytes_get_size(b),
                                         &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(vtpm_identity_read(&up.data, &back, &err), 0);
    assert_string_equal(back->ek[1].cert_pem, id->ek[1].cert_pem);
    /* Not a map: a client's BadRequest, not a damaged record. */
    assert_int_equal(vtpm_identity_read(&up.data.via.map.ptr[0].val, &back, &err),
                     -(int)VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message, "identity: expected map");
    msgpack_unpacked_destroy(&up);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_build_without_tpm_key),
        cmocka_unit_test(test_build_refused),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_refused),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_read),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
