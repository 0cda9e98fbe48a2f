/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/migration.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): the cold migration and resize handlers, their
 * argument checks and faults, and the steps of an instance without a vTPM
 * (its kept copy holds only the manifest and the domain definition).
 */
#include "lib/optest.h"
#include "ops/migration.h"

#define BAD VTPM_FAULT_BAD_REQUEST

static char *
kept_copy(ot_host *h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("kept/%s.tar", uuid);

    return ot_path(h, rel);
}

static void
test_migrate_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *missing = g_strdup_printf("instance %s has no domain on host " OT_HOST, uuid);

    ot_expect_fault(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off", BAD,
                    "args.instance: missing required key", "{'dest_host': 'b'}");
    ot_expect_fault(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off", BAD,
                    "args.dest_host: missing required key", "{'instance': {'uuid': '%s'}}", uuid);
    ot_expect_fault(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off", BAD,
                    "args.dest_host: character 0x2f not allowed in a host name",
                    "{'instance': {'uuid': '%s'}, 'dest_host': 'b/system?x'}", uuid);
    ot_expect_fault(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off", BAD,
                    "args.dest_host: 1..255 characters",
                    "{'instance': {'uuid': '%s'}, 'dest_host': ''}", uuid);
    ot_expect_fault(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                    VTPM_FAULT_INSTANCE_NOT_FOUND, missing,
                    "{'instance': {'uuid': '%s'}, 'dest_host': 'b'}", uuid);
}

/* Away and confirmed: the domain and the kept copy go, once. */
static void
test_migrate_confirm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *kept = kept_copy(h, uuid);
    gboolean running = TRUE;

    ot_spawn(h, uuid, TRUE);
    for (int i = 0; i < 2; i++) { /* the second is a redelivery */
        ot_expect_ok(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                     "{'vtpm_transfer': null}", "{'instance': {'uuid': '%s'}, 'dest_host': 'b'}",
                     uuid);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_false(running);
        assert_true(g_file_test(kept, G_FILE_TEST_IS_REGULAR));
    }
    ot_expect_ok(h, vtpm_op_confirm_migration, "confirm_migration", "{'confirmed': true}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    assert_false(ot_domain_exists(h, uuid, NULL));
    assert_false(g_file_test(kept, G_FILE_TEST_EXISTS));
    ot_expect_ok(h, vtpm_op_confirm_migration, "confirm_migration", "{'confirmed': false}",
                 "{'instance': {'uuid': '%s'}}", uuid);
}

/* A resize on the same host: confirm keeps the (new) domain. */
static void
test_resize_confirm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *kept = kept_copy(h, uuid);

    ot_spawn(h, uuid, TRUE);
    ot_expect_ok(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                 "{'vtpm_transfer': null}",
                 "{'instance': {'uuid': '%s'}, 'dest_host': '" OT_HOST "'}", uuid);
    ot_expect_ok(h, vtpm_op_confirm_migration, "confirm_migration", "{'confirmed': true}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    assert_true(ot_domain_exists(h, uuid, NULL));
    assert_false(g_file_test(kept, G_FILE_TEST_EXISTS));
}

/* Reverted: the old domain runs again, the kept copy is gone; a
 * redelivery finds the domain back. */
static void
test_migrate_revert(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *kept = kept_copy(h, uuid);
    g_autofree char *reverted = g_strdup_printf("{'domain': 'instance-%s', 'vtpm_state': 'none', "
                                                "'nvram_state': 'none'}",
                                                uuid);
    gboolean running = FALSE;

    ot_spawn(h, uuid, TRUE);
    ot_expect_ok(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                 "{'vtpm_transfer': null}", "{'instance': {'uuid': '%s'}, 'dest_host': 'b'}",
                 uuid);
    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_finish_revert_migration, "finish_revert_migration", reverted,
                     "{'instance': {'uuid': '%s'}}", uuid);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
        assert_false(g_file_test(kept, G_FILE_TEST_EXISTS));
    }
}

/* A revert that finds no domain (the resize destination's destroy took
 * it) defines it again from the kept copy. */
static void
test_revert_redefines(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *reverted = g_strdup_printf("{'domain': 'instance-%s', 'vtpm_state': 'none', "
                                                "'nvram_state': 'none'}",
                                                uuid);
    gboolean running = TRUE;

    ot_spawn(h, uuid, TRUE);
    ot_expect_ok(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                 "{'vtpm_transfer': null}",
                 "{'instance': {'uuid': '%s'}, 'dest_host': '" OT_HOST "'}", uuid);
    ot_undefine(h, uuid);
    ot_expect_ok(h, vtpm_op_finish_revert_migration, "finish_revert_migration", reverted,
                 "{'instance': {'uuid': '%s'}, 'power_on': false}", uuid);
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_false(running);
}

static void
test_revert_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *nothing =
        g_strdup_printf("no kept copy of %s on host " OT_HOST " to revert to", uuid);

    ot_expect_fault(h, vtpm_op_finish_revert_migration, "finish_revert_migration", BAD,
                    "args.power_on: expected bool, got str",
                    "{'instance': {'uuid': '%s'}, 'power_on': 'no'}", uuid);
    ot_expect_fault(h, vtpm_op_finish_revert_migration, "finish_revert_migration", BAD,
                    "args.force: expected bool, got array", "{'instance': {'uuid': '%s'}, 'force': []}",
                    uuid);
    ot_expect_fault(h, vtpm_op_finish_revert_migration, "finish_revert_migration",
                    VTPM_FAULT_STATE_NOT_FOUND, nothing, "{'instance': {'uuid': '%s'}}", uuid);
    ot_expect_fault(h, vtpm_op_confirm_migration, "confirm_migration", BAD,
                    "args.instance: expected map, got array", "{'instance': []}");
}

static void
test_finish_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");

    ot_expect_fault(h, vtpm_op_finish_migration, "finish_migration", BAD,
                    "args.old_flavor: missing required key", "{'instance': %s}", inst);
    ot_expect_fault(h, vtpm_op_finish_migration, "finish_migration", BAD,
                    "args.old_flavor.vcpus: missing required key",
                    "{'instance': %s, 'old_flavor': {'name': 'm1.old'}}", inst);
    ot_expect_fault(h, vtpm_op_finish_migration, "finish_migration", VTPM_FAULT_INVALID_TPM_CONFIG,
                    "args.old_flavor: flavor extra spec hw:tpm_model=tpm-xyz: invalid TPM model; "
                    "allowed: tpm-tis, tpm-crb (or TIS, CRB)",
                    "{'instance': %s, 'old_flavor': {'name': 'm1.old', 'vcpus': 1, "
                    "'memory_mb': 64, 'extra_specs': {'hw:tpm_version': '2.0', "
                    "'hw:tpm_model': 'tpm-xyz'}}}",
                    inst);
    ot_expect_fault(h, vtpm_op_finish_migration, "finish_migration", BAD,
                    "args.vtpm_transfer: expected map, got str",
                    "{'instance': %s, 'old_flavor': {'name': 'm1.old', 'vcpus': 1, "
                    "'memory_mb': 64}, 'vtpm_transfer': 'sha256'}",
                    inst);
}

/* The destination of an instance without a vTPM defines and starts it;
 * a redelivery finds it done. */
static void
test_finish(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *done = g_strdup_printf(
        "{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS ", 'vtpm_state': 'none', "
        "'nvram_state': 'none', 'identity_changed': false}",
        uuid);
    gboolean running = FALSE;

    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_finish_migration, "finish_migration", done,
                     "{'instance': %s, 'old_flavor': {'name': 'm1.old', 'vcpus': 2, "
                     "'memory_mb': 128}}",
                     inst);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
    }
}

/* A UEFI instance without a vTPM: its store is libvirt's, on each host:
 * the destination starts a fresh one; a revert on the source, where the
 * old domain stayed, keeps it. */
static void
test_uefi_without_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance_props(uuid, "", "img-1", "'hw_firmware_type': 'uefi'", "");
    g_autofree char *done = g_strdup_printf(
        "{'domain': 'instance-%s', 'vtpm': null, 'firmware': {'type': 'uefi', 'secure_boot': "
        "false, 'machine': 'q35'}, 'vtpm_state': 'none', 'nvram_state': 'fresh', "
        "'identity_changed': false}",
        uuid);
    g_autofree char *reverted = g_strdup_printf("{'domain': 'instance-%s', 'vtpm_state': 'none', "
                                                "'nvram_state': 'kept'}",
                                                uuid);

    ot_offer_firmware(h, FALSE);
    for (int i = 0; i < 2; i++)
        ot_expect_ok(h, vtpm_op_finish_migration, "finish_migration", done,
                     "{'instance': %s, 'old_flavor': {'name': 'm1.old', 'vcpus': 1, "
                     "'memory_mb': 64}}",
                     inst);
    ot_expect_ok(h, vtpm_op_migrate_disk_and_power_off, "migrate_disk_and_power_off",
                 "{'vtpm_transfer': null}", "{'instance': {'uuid': '%s'}, 'dest_host': 'b'}",
                 uuid);
    for (int i = 0; i < 2; i++)
        ot_expect_ok(h, vtpm_op_finish_revert_migration, "finish_revert_migration", reverted,
                     "{'instance': {'uuid': '%s'}}", uuid);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_migrate_args),
        OT_TEST(test_migrate_confirm),
        OT_TEST(test_resize_confirm),
        OT_TEST(test_migrate_revert),
        OT_TEST(test_revert_redefines),
        OT_TEST(test_uefi_without_vtpm),
        OT_TEST(test_revert_args),
        OT_TEST(test_finish_args),
        OT_TEST(test_finish),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
