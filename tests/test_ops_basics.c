/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/basics.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): get_capabilities, spawn and destroy, their
 * argument checks and faults, and the life of an instance without a vTPM.
 */
#include <string.h>

#include <glib/gstdio.h>

#include "lib/optest.h"
#include "mpjson.h"
#include "ops/basics.h"
#include "virt.h"

#define BAD VTPM_FAULT_BAD_REQUEST

/* Served from the worker's snapshot, byte for byte. */
static void
test_get_capabilities(void **state)
{
    ot_host *h = *state;
    g_autoptr(vtpm_caps_snapshot) snap = vtpm_worker_caps(&h->w);
    g_auto(ot_reply) r = { 0 };
    g_autofree char *want = NULL;
    msgpack_unpacked up;

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, g_bytes_get_data(snap->packed, NULL),
                                         g_bytes_get_size(snap->packed), NULL),
                     MSGPACK_UNPACK_SUCCESS);
    want = vtpm_mpjson_to_string(&up.data, false);
    msgpack_unpacked_destroy(&up);
    ot_call(h, vtpm_op_get_capabilities, "get_capabilities", &r, "{}");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.result, want);
    assert_true(g_str_has_prefix(r.result, "{\"host\":\"" OT_HOST "\","));
    assert_non_null(strstr(r.result, "\"traits\":[]"));
}

static void
test_spawn_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *bad_tpm = ot_instance(uuid, "'hw:tpm_version': '3.0'", "img-1", "");
    g_autofree char *outside = ot_path(h, "outside.img");
    g_autofree char *images = ot_path(h, "images");
    g_autofree char *escaping = NULL;
    g_autofree char *message = NULL;

    ot_expect_fault(h, vtpm_op_spawn, "spawn", BAD, "args.instance: missing required key", "{}");
    ot_expect_fault(h, vtpm_op_spawn, "spawn", BAD, "args.instance: expected map, got str",
                    "{'instance': 'vm'}");
    ot_expect_fault(h, vtpm_op_spawn, "spawn", BAD,
                    "args.instance.uuid: not a UUID in canonical 8-4-4-4-12 hex form",
                    "{'instance': {'uuid': '%.35s', 'flavor': {}, 'image': {}}}", uuid);
    ot_expect_fault(h, vtpm_op_spawn, "spawn", BAD, "args.power_on: expected bool, got str",
                    "{'instance': %s, 'power_on': 'yes'}", inst);
    ot_expect_fault(h, vtpm_op_spawn, "spawn", VTPM_FAULT_INVALID_TPM_CONFIG,
                    "flavor extra spec hw:tpm_version=3.0: invalid TPM version; allowed: 1.2, 2.0",
                    "{'instance': %s}", bad_tpm);
    /* A boot path outside [libvirt] images_dir, even through a link. */
    assert_true(g_file_set_contents(outside, "", 0, NULL));
    escaping = g_strdup_printf(", 'boot': {'disk': '%s'}", outside);
    g_free(inst);
    inst = ot_instance(uuid, "", "img-1", escaping);
    message = g_strdup_printf("args.instance.boot.disk: %s is outside the images directory %s",
                              outside, images);
    ot_expect_fault(h, vtpm_op_spawn, "spawn", BAD, message, "{'instance': %s}", inst);
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* The test driver offers no TPM: refused before anything is defined,
 * naming the trait and why it is missing. */
static void
test_spawn_tpm_unsupported(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "'hw:tpm_version': '2.0'", "img-1", "");
    g_auto(ot_reply) r = { 0 };

    ot_call(h, vtpm_op_spawn, "spawn", &r, "{'instance': %s}", inst);
    assert_int_equal(r.rc, -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_int_equal(r.err.code, VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message,
                                 "host " OT_HOST " cannot provide TPM 2.0/tpm-tis/user: "
                                 "COMPUTE_SECURITY_TPM_2_0 ([libvirt] swtpm_enabled is false"));
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* Spawn, a redelivered spawn, a conflicting one, destroy and its
 * redelivery, for an instance without a vTPM. */
static void
test_spawn_destroy(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *other = ot_instance(uuid, "", "img-2", "");
    g_autofree char *spawned = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, "
                                               "'firmware': {'type': 'bios', 'secure_boot': "
                                               "false, 'machine': 'q35'}}",
                                               uuid);
    g_autofree char *conflict = g_strdup_printf("instance %s already exists on host " OT_HOST
                                                " with a different spec; destroy or rebuild it "
                                                "instead",
                                                uuid);
    gboolean running = TRUE;

    ot_expect_ok(h, vtpm_op_spawn, "spawn", spawned, "{'instance': %s, 'power_on': false}", inst);
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_false(running);
    ot_expect_ok(h, vtpm_op_spawn, "spawn", spawned, "{'instance': %s}", inst);
    assert_true(ot_domain_exists(h, uuid, &running));
    assert_true(running);
    ot_expect_fault(h, vtpm_op_spawn, "spawn", VTPM_FAULT_INSTANCE_CONFLICT, conflict,
                    "{'instance': %s}", other);

    ot_expect_ok(h, vtpm_op_destroy, "destroy",
                 "{'destroyed': true, 'vtpm_state': 'none', 'nvram_state': 'none'}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    assert_false(ot_domain_exists(h, uuid, NULL));
    ot_expect_ok(h, vtpm_op_destroy, "destroy",
                 "{'destroyed': false, 'vtpm_state': 'none', 'nvram_state': 'none'}",
                 "{'instance': {'uuid': '%s'}}", uuid);
}

static void
test_destroy_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();

    ot_expect_fault(h, vtpm_op_destroy, "destroy", BAD, "args.instance: missing required key",
                    "{}");
    ot_expect_fault(h, vtpm_op_destroy, "destroy", BAD,
                    "args.instance.uuid: missing required key", "{'instance': {}}");
    ot_expect_fault(h, vtpm_op_destroy, "destroy", BAD,
                    "args.instance.uuid: the nil UUID is not a valid instance UUID",
                    "{'instance': {'uuid': '00000000-0000-0000-0000-000000000000'}}");
    ot_expect_fault(h, vtpm_op_destroy, "destroy", BAD,
                    "args.keep_vtpm: expected bool, got unsigned integer",
                    "{'instance': {'uuid': '%s'}, 'keep_vtpm': 1}", uuid);
}

/* keep_vtpm keeps the state dir and says so; a destroy without it
 * removes the dir and what else the instance left on the host. */
static void
test_destroy_keep(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *rel = g_strdup_printf("state/%s", uuid);
    g_autofree char *state_dir = ot_path(h, rel);
    g_autofree char *rel_log = g_strdup_printf("console/%s.log", uuid);
    g_autofree char *console = ot_path(h, rel_log);

    ot_spawn(h, uuid, TRUE);
    assert_int_equal(g_mkdir_with_parents(state_dir, 0700), 0);
    assert_true(g_file_set_contents(console, "boot\n", -1, NULL));
    ot_expect_ok(h, vtpm_op_destroy, "destroy",
                 "{'destroyed': true, 'vtpm_state': 'kept', 'nvram_state': 'none'}",
                 "{'instance': {'uuid': '%s'}, 'keep_vtpm': true}", uuid);
    assert_false(ot_domain_exists(h, uuid, NULL));
    assert_true(g_file_test(state_dir, G_FILE_TEST_IS_DIR));
    assert_true(g_file_test(console, G_FILE_TEST_EXISTS));
    ot_expect_ok(h, vtpm_op_destroy, "destroy",
                 "{'destroyed': false, 'vtpm_state': 'deleted', 'nvram_state': 'none'}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    assert_false(g_file_test(state_dir, G_FILE_TEST_EXISTS));
    assert_false(g_file_test(console, G_FILE_TEST_EXISTS));
}

/* Nova's firmware rules through spawn: each bad value a BadRequest naming
 * key, value and source, a disagreement a FlavorImageConflict, before
 * anything is defined. */
static void
test_spawn_firmware_faults(void **state)
{
    static const struct {
        const char *specs, *props;
        vtpm_fault code;
        const char *message;
    } cases[] = {
        { "", "'hw_firmware_type': 'efi'", BAD,
          "image property hw_firmware_type=efi: invalid firmware type; allowed: uefi, bios" },
        { "'os:secure_boot': 'on'", "'hw_firmware_type': 'uefi'", BAD,
          "flavor extra spec os:secure_boot=on: invalid secure boot policy; allowed: required, "
          "disabled, optional" },
        { "", "'os_secure_boot': 'required'", BAD,
          "image property os_secure_boot=required: Secure Boot needs UEFI firmware, but image "
          "property hw_firmware_type is not set (BIOS)" },
        { "", "'hw_firmware_type': 'uefi', 'os_secure_boot': 'required', 'hw_machine_type': 'pc'",
          BAD, "image property os_secure_boot=required: Secure Boot needs the q35 machine type, "
               "but image property hw_machine_type=pc" },
        { "", "'hw_machine_type': 'isapc'", BAD,
          "image property hw_machine_type=isapc: not an x86_64 machine type vtpmd builds "
          "domains for; allowed: q35, pc, pc-q35-<version>, pc-i440fx-<version>" },
        { "'os:secure_boot': 'disabled'",
          "'hw_firmware_type': 'uefi', 'os_secure_boot': 'required'",
          VTPM_FAULT_FLAVOR_IMAGE_CONFLICT,
          "flavor extra spec os:secure_boot=disabled conflicts with image property "
          "os_secure_boot=required" },
    };
    ot_host *h = *state;

    ot_offer_firmware(h, TRUE);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *uuid = ot_uuid();
        g_autofree char *inst = ot_instance_props(uuid, cases[i].specs, "img-1", cases[i].props,
                                                  "");

        ot_expect_fault(h, vtpm_op_spawn, "spawn", cases[i].code, cases[i].message,
                        "{'instance': %s}", inst);
        assert_false(ot_domain_exists(h, uuid, NULL));
    }
}

static char *
uefi_instance(const char *uuid, const char *secure_boot)
{
    g_autofree char *props = g_strdup_printf("'hw_firmware_type': 'uefi'%s%s%s",
                                             secure_boot ? ", 'os_secure_boot': '" : "",
                                             secure_boot ? secure_boot : "",
                                             secure_boot ? "'" : "");

    return ot_instance_props(uuid, "", "img-1", props, "");
}

/* The test driver offers no firmware: a UEFI spawn is refused naming the
 * trait and why; with Secure Boot, the other trait. */
static void
test_spawn_uefi_unsupported(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *plain = uefi_instance(uuid, NULL);
    g_autofree char *sb = uefi_instance(uuid, "required");
    g_auto(ot_reply) r = { 0 };
    g_auto(ot_reply) r2 = { 0 };

    ot_call(h, vtpm_op_spawn, "spawn", &r, "{'instance': %s}", plain);
    assert_int_equal(r.err.code, VTPM_FAULT_TPM_UNSUPPORTED);
    if (!g_str_has_prefix(r.err.message, "host " OT_HOST " cannot provide UEFI firmware: "
                                         "COMPUTE_FIRMWARE_UEFI (") ||
        !strstr(r.err.message, "domain capabilities unavailable"))
        fail_msg("unexpected message: %s", r.err.message);
    ot_offer_firmware(h, FALSE);
    ot_call(h, vtpm_op_spawn, "spawn", &r2, "{'instance': %s}", sb);
    assert_int_equal(r2.err.code, VTPM_FAULT_TPM_UNSUPPORTED);
    if (!g_str_has_prefix(r2.err.message,
                          "host " OT_HOST " cannot provide UEFI firmware with Secure Boot: "
                          "COMPUTE_SECURITY_UEFI_SECURE_BOOT ("))
        fail_msg("unexpected message: %s", r2.err.message);
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* The domain's inactive XML in the test driver. */
static char *
domain_xml(ot_host *h, const char *uuid)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    vtpm_error err = { 0 };
    char *xml;

    assert_int_equal(vtpm_virt_conn(h->w.virt, &conn, NULL, &err), 0);
    assert_int_equal(vtpm_virt_lookup(h->w.virt, conn, uuid, &dom, &err), 0);
    assert_non_null(dom);
    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    assert_non_null(xml);
    return xml;
}

/* A UEFI instance without a vTPM: libvirt's auto-selection, its store
 * libvirt's (no path of ours); optional Secure Boot as the host offers
 * it; destroy says the store went. */
static void
test_spawn_uefi(void **state)
{
    static const struct {
        gboolean host_sb;
        const char *policy;
        gboolean on;
    } cases[] = {
        { TRUE, NULL, FALSE },
        { TRUE, "required", TRUE },
        { TRUE, "optional", TRUE },
        { FALSE, "optional", FALSE },
        { TRUE, "disabled", FALSE },
    };
    ot_host *h = *state;

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *uuid = ot_uuid();
        g_autofree char *inst = uefi_instance(uuid, cases[i].policy);
        g_autofree char *want = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, "
                                                "'firmware': {'type': 'uefi', 'secure_boot': "
                                                "%s, 'machine': 'q35'}}",
                                                uuid, cases[i].on ? "true" : "false");
        g_autofree char *xml = NULL;

        ot_offer_firmware(h, cases[i].host_sb);
        ot_expect_ok(h, vtpm_op_spawn, "spawn", want, "{'instance': %s}", inst);
        xml = domain_xml(h, uuid);
        if (!strstr(xml, "<os firmware='efi'>") || strstr(xml, "<nvram") ||
            !strstr(xml, cases[i].on ? "<feature enabled='yes' name='secure-boot'/>"
                                     : "<feature enabled='no' name='secure-boot'/>") ||
            (strstr(xml, "<smm state='on'/>") != NULL) != cases[i].on)
            fail_msg("case %zu: the domain should be UEFI, Secure Boot %s:\n%s", i,
                     cases[i].on ? "on" : "off", xml);
        ot_expect_ok(h, vtpm_op_destroy, "destroy",
                     "{'destroyed': true, 'vtpm_state': 'none', 'nvram_state': 'deleted'}",
                     "{'instance': {'uuid': '%s'}}", uuid);
        assert_false(ot_domain_exists(h, uuid, NULL));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_get_capabilities),
        OT_TEST(test_spawn_args),
        OT_TEST(test_spawn_tpm_unsupported),
        OT_TEST(test_spawn_destroy),
        OT_TEST(test_destroy_args),
        OT_TEST(test_destroy_keep),
        OT_TEST(test_spawn_firmware_faults),
        OT_TEST(test_spawn_uefi_unsupported),
        OT_TEST(test_spawn_uefi),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
