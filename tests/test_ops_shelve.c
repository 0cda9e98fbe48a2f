/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/shelve.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): shelve and unshelve, their argument checks and
 * faults, and an instance without a vTPM (nothing goes to the store).
 */
#include "lib/optest.h"
#include "ops/basics.h"
#include "ops/shelve.h"

#define BAD VTPM_FAULT_BAD_REQUEST

static void
test_shelve_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *nothing = g_strdup_printf(
        "instance %s has no domain on host " OT_HOST " and nothing shelved", uuid);

    ot_expect_fault(h, vtpm_op_shelve, "shelve", BAD, "args.instance: missing required key",
                    "{'offload': true}");
    ot_expect_fault(h, vtpm_op_shelve, "shelve", BAD, "args.offload: expected bool, got str",
                    "{'instance': {'uuid': '%s'}, 'offload': 'true'}", uuid);
    ot_expect_fault(h, vtpm_op_shelve, "shelve", VTPM_FAULT_INSTANCE_NOT_FOUND, nothing,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

static void
test_unshelve_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");

    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", BAD, "args.instance: missing required key",
                    "{'shelved': {'ref': 'vtpm-shelved/x'}}");
    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", BAD, "args.shelved: expected map, got str",
                    "{'instance': %s, 'shelved': 'vtpm-shelved/x'}", inst);
    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", BAD, "args.force: expected bool, got map",
                    "{'instance': %s, 'force': {}}", inst);
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* A shelved vTPM archive for an instance that now asks for no vTPM: the
 * ref is checked as ever, then the unshelve is refused, so the archive is
 * not forgotten in the store. */
static void
test_unshelve_archive_without_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *ref = g_strdup_printf("vtpm-shelved/%s.vtpm.tar", uuid);
    g_autofree char *bad_ref = g_strdup_printf("args.shelved.ref: expected vtpm-shelved/%s.vtpm.tar",
                                               uuid);
    g_autofree char *refused = g_strdup_printf(
        "args.shelved names the shelved vTPM state %s but the instance asks for no vTPM; "
        "state left in the store", ref);

    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", BAD, bad_ref,
                    "{'instance': %s, 'shelved': {'ref': 'other-pool/x'}}", inst);
    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", VTPM_FAULT_INVALID_TPM_CONFIG, refused,
                    "{'instance': %s, 'shelved': {'ref': '%s'}}", inst, ref);
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* Shelve with offload: the domain goes.  A redelivery answers from the
 * store, where an instance without a vTPM left nothing: InstanceNotFound.
 * Unshelve brings it back (twice: the second finds it done). */
static void
test_shelve_unshelve(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *other = ot_instance(uuid, "", "img-2", "");
    g_autofree char *back = g_strdup_printf(
        "{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS ", 'vtpm_state': 'none', "
        "'nvram_state': 'none', 'identity_changed': false}",
        uuid);
    g_autofree char *conflict = g_strdup_printf(
        "instance %s already has a different domain on host " OT_HOST, uuid);
    g_autofree char *nothing = g_strdup_printf(
        "instance %s has no domain on host " OT_HOST " and nothing shelved", uuid);
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    ot_expect_ok(h, vtpm_op_shelve, "shelve", "{'shelved': null, 'offloaded': true}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    assert_false(ot_domain_exists(h, uuid, NULL));
    ot_expect_fault(h, vtpm_op_shelve, "shelve", VTPM_FAULT_INSTANCE_NOT_FOUND, nothing,
                    "{'instance': {'uuid': '%s'}}", uuid);
    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_unshelve, "unshelve", back, "{'instance': %s}", inst);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
    }
    ot_expect_fault(h, vtpm_op_unshelve, "unshelve", VTPM_FAULT_INSTANCE_CONFLICT, conflict,
                    "{'instance': %s}", other);
    {
        /* No retry can make the specs agree: the fault says so. */
        g_auto(ot_reply) r = { 0 };

        ot_call(h, vtpm_op_unshelve, "unshelve", &r, "{'instance': %s}", other);
        assert_false(vtpm_error_retryable(&r.err));
    }
}

/* Without offload the domain stays, stopped. */
static void
test_shelve_no_offload(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    gboolean running = TRUE;

    ot_spawn(h, uuid, TRUE);
    ot_expect_ok(h, vtpm_op_shelve, "shelve", "{'shelved': null, 'offloaded': false}",
                 "{'instance': {'uuid': '%s'}, 'offload': false}", uuid);
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_false(running);
}

/* An instance with a vTPM is refused before its shelved archive is
 * looked for: the test driver offers no TPM. */
static void
test_unshelve_tpm_unsupported(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "'hw:tpm_version': '1.2'", "img-1", "");
    g_auto(ot_reply) r = { 0 };

    ot_call(h, vtpm_op_unshelve, "unshelve", &r, "{'instance': %s}", inst);
    assert_int_equal(r.rc, -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message, "host " OT_HOST " cannot provide TPM "
                                                "1.2/tpm-tis/user: COMPUTE_SECURITY_TPM_1_2 ("));
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* A UEFI instance without a vTPM shelves nothing: unshelved, it starts a
 * fresh store of libvirt's. */
static void
test_uefi_without_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance_props(uuid, "", "img-1", "'hw_firmware_type': 'uefi'", "");
    g_autofree char *back = g_strdup_printf(
        "{'domain': 'instance-%s', 'vtpm': null, 'firmware': {'type': 'uefi', 'secure_boot': "
        "false, 'machine': 'q35'}, 'vtpm_state': 'none', 'nvram_state': 'fresh', "
        "'identity_changed': false}",
        uuid);

    ot_offer_firmware(h, FALSE);
    ot_expect_ok(h, vtpm_op_spawn, "spawn", NULL, "{'instance': %s}", inst);
    ot_expect_ok(h, vtpm_op_shelve, "shelve", "{'shelved': null, 'offloaded': true}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    for (int i = 0; i < 2; i++)
        ot_expect_ok(h, vtpm_op_unshelve, "unshelve", back, "{'instance': %s}", inst);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_uefi_without_vtpm),
        OT_TEST(test_shelve_args),
        OT_TEST(test_unshelve_args),
        OT_TEST(test_unshelve_archive_without_vtpm),
        OT_TEST(test_shelve_unshelve),
        OT_TEST(test_shelve_no_offload),
        OT_TEST(test_unshelve_tpm_unsupported),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
