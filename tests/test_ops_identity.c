/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/identity.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): get_vtpm_identity's argument checks, the faults of
 * instances without a vTPM or without a record, and the answer read from
 * the record a domain definition carries (EK certificates of a test CA
 * made with openssl; no swtpm runs here, nor is any needed).
 */
#include <string.h>

#include <json-glib/json-glib.h>
#include <libvirt/libvirt.h>

#include "domxml.h"
#include "identity.h"
#include "lib/optest.h"
#include "lib/testca.h"
#include "ops/identity.h"

#define BAD VTPM_FAULT_BAD_REQUEST
#define M "get_vtpm_identity"

static tc_ca *CA;

static int
group_setup(void **state)
{
    CA = tc_ca_new();
    tc_make_cert(CA, "rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", "/CN=instance");
    tc_make_cert(CA, "ecc", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", "/CN=instance");
    return 0;
}

static int
group_teardown(void **state)
{
    g_clear_pointer(&CA, tc_ca_free);
    return 0;
}

/* A TPM 2.0 record with both EKs of the test CA. */
static vtpm_identity *
record(void)
{
    g_autoptr(GBytes) ca = tc_bytes(CA, "ca.der");
    g_autoptr(GBytes) rsa = tc_bytes(CA, "rsa.der"), ecc = tc_bytes(CA, "ecc.der");
    g_autofree char *subject = NULL, *sha = NULL;
    vtpm_identity *id = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_identity_describe_ca(ca, &subject, &sha, &err), 0);
    id = vtpm_identity_new(VTPM_VERSION_2_0, subject, sha);
    if (vtpm_identity_add_ek(id, NULL, rsa, &err) < 0 ||
        vtpm_identity_add_ek(id, NULL, ecc, &err) < 0)
        fail_msg("record: %s", err.message);
    return id;
}

/* Define the domain of @uuid with a TPM of @version carrying @identity
 * (NULL: none), as vtpmd defines it. */
static void
define(ot_host *h, const char *uuid, vtpm_version version, const char *identity)
{
    vtpm_flavor fl = { .name = "m1.tiny", .vcpus = 1, .memory_mb = 64 };
    vtpm_image im = { .id = "img-1", .name = "" };
    vtpm_instance inst = { .flavor = &fl, .image = &im };
    vtpm_device dev = { version, VTPM_MODEL_TIS, VTPM_SECRET_USER, 0 };
    vtpm_domxml_params p = { .inst = &inst, .tpm = &dev, .identity = identity };
    g_autoptr(virConnect) conn = NULL;
    g_autofree char *xml = NULL;
    virDomainPtr dom;
    vtpm_error err = { 0 };

    g_strlcpy(inst.uuid, uuid, sizeof(inst.uuid));
    if (vtpm_domxml_build(&p, &xml, &err) < 0 || vtpm_virt_conn(h->w.virt, &conn, NULL, &err) < 0)
        fail_msg("define: %s", err.message);
    dom = virDomainDefineXML(conn, xml);
    assert_non_null(dom);
    virDomainFree(dom);
}

static void
test_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *missing = g_strdup_printf("instance %s has no domain on host " OT_HOST, uuid);

    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, BAD, "args.instance: missing required key",
                    "{}");
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, BAD,
                    "args.instance.uuid: missing required key", "{'instance': {}}");
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, BAD,
                    "args.instance.uuid: not a UUID in canonical 8-4-4-4-12 hex form",
                    "{'instance': {'uuid': 'x'}}");
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, VTPM_FAULT_INSTANCE_NOT_FOUND, missing,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

static void
test_no_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *m = g_strdup_printf("instance %s has no vTPM on host " OT_HOST, uuid);

    ot_spawn(h, uuid, FALSE);
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, VTPM_FAULT_STATE_NOT_FOUND, m,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

/* A TPM libvirt made (no deployment CA where it was made). */
static void
test_no_record(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *m = g_strdup_printf(
        "the vTPM of instance %s has no identity record: libvirt made it with a host-local EK CA "
        "([vtpm] ek_ca_cert was not set where it was made), whose certificates verify against "
        "nothing a tenant knows", uuid);

    define(h, uuid, VTPM_VERSION_2_0, NULL);
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, VTPM_FAULT_STATE_NOT_FOUND, m,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

static const char *
member(JsonObject *o, const char *name)
{
    const char *v = json_object_get_string_member(o, name);

    assert_non_null(v);
    return v;
}

/* The answer is the record: version, both EKs in order, the CA. */
static void
test_answer(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autoptr(vtpm_identity) id = record();
    g_autofree char *text = vtpm_identity_encode(id);
    g_autoptr(JsonParser) p = json_parser_new();
    g_auto(ot_reply) r = { 0 };
    JsonObject *root, *ca;
    JsonArray *ek;

    define(h, uuid, VTPM_VERSION_2_0, text);
    ot_call(h, vtpm_op_get_vtpm_identity, M, &r, "{'instance': {'uuid': '%s'}}", uuid);
    if (r.rc != 0)
        fail_msg("get_vtpm_identity: %s", r.err.message);
    assert_true(json_parser_load_from_data(p, r.result, -1, NULL));
    root = json_node_get_object(json_parser_get_root(p));
    assert_int_equal(json_object_get_size(root), 3);
    assert_string_equal(member(root, "version"), "2.0");
    ek = json_object_get_array_member(root, "ek");
    assert_int_equal(json_array_get_length(ek), 2);
    for (guint i = 0; i < 2; i++) {
        JsonObject *e = json_array_get_object_element(ek, i);

        assert_int_equal(json_object_get_size(e), 3);
        assert_string_equal(member(e, "alg"), i == 0 ? "rsa2048" : "ecc-nist-p256");
        assert_string_equal(member(e, "public_pem"), id->ek[i].public_pem);
        assert_string_equal(member(e, "cert_pem"), id->ek[i].cert_pem);
    }
    ca = json_object_get_object_member(root, "ca");
    assert_int_equal(json_object_get_size(ca), 2);
    assert_string_equal(member(ca, "subject"), "CN=Test EK CA,O=vtpmd test");
    assert_string_equal(member(ca, "sha256"), id->ca_sha256);
}

static void
test_damaged_record(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid(), *uuid2 = ot_uuid();
    g_autoptr(vtpm_identity) id = record();
    g_autofree char *text = NULL;
    g_autofree char *m1 = g_strdup_printf("instance %s: TPM identity record: not base64", uuid);
    g_autofree char *m2 = g_strdup_printf(
        "instance %s: the identity record is of a TPM 2.0, the vTPM is 1.2", uuid2);

    define(h, uuid, VTPM_VERSION_2_0, "v1:not*base64");
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, VTPM_FAULT_STATE_INTEGRITY, m1,
                    "{'instance': {'uuid': '%s'}}", uuid);
    /* A record that does not belong to the TPM it sits on. */
    text = vtpm_identity_encode(id);
    define(h, uuid2, VTPM_VERSION_1_2, text);
    ot_expect_fault(h, vtpm_op_get_vtpm_identity, M, VTPM_FAULT_STATE_INTEGRITY, m2,
                    "{'instance': {'uuid': '%s'}}", uuid2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_args),
        OT_TEST(test_no_vtpm),
        OT_TEST(test_no_record),
        OT_TEST(test_answer),
        OT_TEST(test_damaged_record),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
