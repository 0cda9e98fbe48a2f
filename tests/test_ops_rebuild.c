/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/rebuild.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): rebuild, its argument checks and faults, and the
 * rebuild of an instance without a vTPM.
 */
#include "lib/optest.h"
#include "ops/basics.h"
#include "ops/rebuild.h"

#define BAD VTPM_FAULT_BAD_REQUEST

static void
test_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *missing = g_strdup_printf("instance %s has no domain on host " OT_HOST, uuid);

    ot_expect_fault(h, vtpm_op_rebuild, "rebuild", BAD, "args.instance: missing required key",
                    "{}");
    ot_expect_fault(h, vtpm_op_rebuild, "rebuild", BAD, "args.instance.image: missing required key",
                    "{'instance': {'uuid': '%s', 'flavor': {'name': 'm1.tiny', 'vcpus': 1, "
                    "'memory_mb': 64}}}",
                    uuid);
    ot_expect_fault(h, vtpm_op_rebuild, "rebuild", VTPM_FAULT_INSTANCE_NOT_FOUND, missing,
                    "{'instance': %s}", inst);
}

/* A new image for the same machine; the redelivery finds it done. */
static void
test_rebuild(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-2", "");
    g_autofree char *done = g_strdup_printf(
        "{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS ", 'vtpm_state': 'none', "
        "'nvram_state': 'none', 'identity_changed': false}",
        uuid);
    g_autofree char *spawned =
        g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS "}", uuid);
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_rebuild, "rebuild", done, "{'instance': %s}", inst);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
    }
    /* The domain is the new spec's: spawning that is a redelivery. */
    ot_expect_ok(h, vtpm_op_spawn, "spawn", spawned, "{'instance': %s}", inst);
}

/* Asking for a vTPM the host cannot give leaves the instance as it was. */
static void
test_rebuild_tpm_unsupported(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "'hw:tpm_version': '2.0'", "img-2", "");
    g_autofree char *old = ot_instance(uuid, "", "img-1", "");
    g_autofree char *spawned =
        g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS "}", uuid);
    g_auto(ot_reply) r = { 0 };
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    ot_call(h, vtpm_op_rebuild, "rebuild", &r, "{'instance': %s}", inst);
    assert_int_equal(r.rc, -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message, "host " OT_HOST " cannot provide TPM "
                                                "2.0/tpm-tis/user: COMPUTE_SECURITY_TPM_2_0 ("));
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_true(running);
    ot_expect_ok(h, vtpm_op_spawn, "spawn", spawned, "{'instance': %s}", old);
}

/* The firmware of a result: uefi with Secure Boot @on, on q35. */
static char *
uefi(gboolean on)
{
    return g_strdup_printf("'firmware': {'type': 'uefi', 'secure_boot': %s, 'machine': 'q35'}",
                           on ? "true" : "false");
}

/* Without a vTPM the store is libvirt's on this host: kept when the
 * firmware stays, gone with UEFI, new (libvirt resets it) when Secure
 * Boot changes; the reply says which, on the redelivery too. */
static void
test_rebuild_firmware(void **state)
{
    static const struct {
        const char *from, *to; /* image properties */
        gboolean to_uefi, on;
        const char *nvram;
    } cases[] = {
        { "'hw_firmware_type': 'uefi'", "'hw_firmware_type': 'uefi'", TRUE, FALSE, "kept" },
        { "'hw_firmware_type': 'uefi'", "", FALSE, FALSE, "deleted" },
        { "'hw_firmware_type': 'uefi'", "'hw_firmware_type': 'uefi', 'os_secure_boot': 'required'",
          TRUE, TRUE, "replaced" },
        { "", "'hw_firmware_type': 'uefi'", TRUE, FALSE, "replaced" },
        { "", "", FALSE, FALSE, "none" },
    };
    ot_host *h = *state;

    ot_offer_firmware(h, TRUE);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *uuid = ot_uuid();
        g_autofree char *old = ot_instance_props(uuid, "", "img-1", cases[i].from, "");
        g_autofree char *inst = ot_instance_props(uuid, "", "img-2", cases[i].to, "");
        g_autofree char *fw = cases[i].to_uefi ? uefi(cases[i].on) : g_strdup(OT_BIOS);
        g_autofree char *done = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, %s, "
                                                "'vtpm_state': 'none', 'nvram_state': '%s', "
                                                "'identity_changed': false}",
                                                uuid, fw, cases[i].nvram);
        g_autofree char *again = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, %s, "
                                                 "'vtpm_state': 'none', 'nvram_state': '%s', "
                                                 "'identity_changed': false}",
                                                 uuid, fw,
                                                 !cases[i].to_uefi ? "none" : "kept");
        gboolean running = FALSE;

        ot_expect_ok(h, vtpm_op_spawn, "spawn", NULL, "{'instance': %s}", old);
        ot_expect_ok(h, vtpm_op_rebuild, "rebuild", done, "{'instance': %s}", inst);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
        /* Done already: nothing was set aside, so nothing changes now. */
        ot_expect_ok(h, vtpm_op_rebuild, "rebuild", again, "{'instance': %s}", inst);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_args),
        OT_TEST(test_rebuild),
        OT_TEST(test_rebuild_tpm_unsupported),
        OT_TEST(test_rebuild_firmware),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
