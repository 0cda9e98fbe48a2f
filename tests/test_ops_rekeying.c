/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/rekeying.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): rekey's argument checks and the faults it gives
 * before any TPM state is read.
 */
#include "lib/optest.h"
#include "ops/rekeying.h"

#define BAD VTPM_FAULT_BAD_REQUEST

static void
test_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *missing = g_strdup_printf("instance %s has no domain on host " OT_HOST, uuid);

    ot_expect_fault(h, vtpm_op_rekey, "rekey", BAD, "args.instance: missing required key",
                    "{'new_secret': {'$bin': 'c2VjcmV0'}}");
    ot_expect_fault(h, vtpm_op_rekey, "rekey", BAD, "args.new_secret: expected bin, got str",
                    "{'instance': {'uuid': '%s'}, 'new_secret': 'secret'}", uuid);
    ot_expect_fault(h, vtpm_op_rekey, "rekey", BAD, "args.new_secret: must not be empty",
                    "{'instance': {'uuid': '%s'}, 'new_secret': {'$bin': ''}}", uuid);
    ot_expect_fault(h, vtpm_op_rekey, "rekey", BAD,
                    "args.instance.vtpm.secret: expected bin, got unsigned integer",
                    "{'instance': {'uuid': '%s', 'vtpm': {'secret': 1}}}", uuid);
    ot_expect_fault(h, vtpm_op_rekey, "rekey", VTPM_FAULT_INSTANCE_NOT_FOUND, missing,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

/* An instance without a vTPM has no state to re-encrypt. */
static void
test_no_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *message =
        g_strdup_printf("instance %s has no vTPM: there is no state to rekey", uuid);
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    ot_expect_fault(h, vtpm_op_rekey, "rekey", VTPM_FAULT_INVALID_TPM_CONFIG, message,
                    "{'instance': {'uuid': '%s'}, 'new_secret': {'$bin': 'c2VjcmV0'}}", uuid);
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_true(running);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_args),
        OT_TEST(test_no_vtpm),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
