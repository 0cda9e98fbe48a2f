/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/power.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): power_off and power_on, their argument checks and
 * faults, and a power cycle of an instance without a vTPM.
 */
#include "lib/optest.h"
#include "ops/power.h"

#define BAD VTPM_FAULT_BAD_REQUEST

static void
test_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();

    ot_expect_fault(h, vtpm_op_power_off, "power_off", BAD, "args.instance: missing required key",
                    "{}");
    ot_expect_fault(h, vtpm_op_power_off, "power_off", BAD,
                    "args.instance.uuid: expected str, got unsigned integer",
                    "{'instance': {'uuid': 7}}");
    ot_expect_fault(h, vtpm_op_power_on, "power_on", BAD,
                    "args.instance.uuid: not a UUID in canonical 8-4-4-4-12 hex form",
                    "{'instance': {'uuid': '{%s}'}}", uuid);
    ot_expect_fault(h, vtpm_op_power_on, "power_on", BAD,
                    "args.instance.vtpm.secret: expected bin, got str",
                    "{'instance': {'uuid': '%s', 'vtpm': {'secret': 'pw'}}}", uuid);
    ot_expect_fault(h, vtpm_op_power_on, "power_on", BAD,
                    "args.instance.vtpm.secret: must not be empty",
                    "{'instance': {'uuid': '%s', 'vtpm': {'secret': {'$bin': ''}}}}", uuid);
}

static void
test_not_found(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *message =
        g_strdup_printf("instance %s has no domain on host " OT_HOST, uuid);

    ot_expect_fault(h, vtpm_op_power_off, "power_off", VTPM_FAULT_INSTANCE_NOT_FOUND, message,
                    "{'instance': {'uuid': '%s'}}", uuid);
    ot_expect_fault(h, vtpm_op_power_on, "power_on", VTPM_FAULT_INSTANCE_NOT_FOUND, message,
                    "{'instance': {'uuid': '%s'}}", uuid);
}

/* Off and on, each twice (a redelivery finds it done).  The test driver
 * has no ACPI power button, so the first power_off is the hard stop
 * after it; the second finds the domain off. */
static void
test_power_cycle(void **state)
{
    static const char *const off[] = {
        "{'state': 'shutoff', 'forced': true}",
        "{'state': 'shutoff', 'forced': false}",
    };
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_power_off, "power_off", off[i], "{'instance': {'uuid': '%s'}}",
                     uuid);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_false(running);
    }
    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_power_on, "power_on", "{'state': 'running'}",
                     "{'instance': {'uuid': '%s'}}", uuid);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_args),
        OT_TEST(test_not_found),
        OT_TEST(test_power_cycle),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
