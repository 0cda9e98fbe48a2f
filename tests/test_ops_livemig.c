/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/livemig.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): the live migration handlers' argument checks and
 * faults, each naming its field, and what they decide from where a guest
 * is.  The "destination" of live_migration is a test driver of its own
 * (test:///<tree>/<host>.xml, an empty node), which runs no QEMU and
 * cannot migrate: what a real migration does is test_livemig's.  Also
 * worker/livejob.c's abort: it reaches a job from another thread and
 * waits for it to end.
 */
#include <string.h>

#include "lib/optest.h"
#include "livejob.h"
#include "ops/livemig.h"

#define BAD VTPM_FAULT_BAD_REQUEST
#define MD "'migrate_data': {'dest_host': 'b', 'inbound_addr': '192.0.2.7'}"

/* live_migration's destination "b": an empty test driver node of its own. */
static void
dest_b(ot_host *h)
{
    g_autofree char *node = ot_path(h, "b.xml");

    assert_true(g_file_set_contents(node, "<node/>\n", -1, NULL));
    g_free(h->cfg->libvirt.live_migration_uri_template);
    h->cfg->libvirt.live_migration_uri_template = g_strdup_printf("test://%s/%%s.xml", h->root);
}

static void
test_check_destination(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *plain = ot_instance(uuid, "", "img-1", "");
    g_autofree char *tpm = ot_instance(uuid, "'hw:tpm_version': '2.0'", "img-1", "");
    g_autofree char *bad = ot_instance(uuid, "'hw:tpm_version': '3.0'", "img-1", "");
    g_autofree char *here =
        g_strdup_printf("instance %s already has a domain on host " OT_HOST " (running); a live "
                        "migration needs a destination without one "
                        "(rollback_live_migration_at_destination removes a failed one's)",
                        uuid);
    g_auto(ot_reply) r = { 0 };

    ot_expect_fault(h, vtpm_op_check_can_live_migrate_destination,
                    "check_can_live_migrate_destination", BAD,
                    "args.instance: missing required key", "{}");
    ot_expect_fault(h, vtpm_op_check_can_live_migrate_destination,
                    "check_can_live_migrate_destination", VTPM_FAULT_INVALID_TPM_CONFIG,
                    "flavor extra spec hw:tpm_version=3.0: invalid TPM version; allowed: 1.2, 2.0",
                    "{'instance': %s}", bad);
    /* The fault a spawn here would get. */
    ot_call(h, vtpm_op_check_can_live_migrate_destination, "check_can_live_migrate_destination",
            &r, "{'instance': %s}", tpm);
    assert_int_equal(r.err.code, VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message,
                                 "host " OT_HOST " cannot provide TPM 2.0/tpm-tis/user: "
                                 "COMPUTE_SECURITY_TPM_2_0"));
    ot_expect_ok(h, vtpm_op_check_can_live_migrate_destination,
                 "check_can_live_migrate_destination", "{'ok': true}", "{'instance': %s}", plain);
    ot_spawn(h, uuid, TRUE);
    ot_expect_fault(h, vtpm_op_check_can_live_migrate_destination,
                    "check_can_live_migrate_destination", VTPM_FAULT_INSTANCE_CONFLICT, here,
                    "{'instance': %s}", plain);
}

/* A UEFI instance live-migrates: the destination checks that it offers
 * the firmware, as a spawn would.  Without a vTPM its store is libvirt's
 * own (not in a state dir): pre_live_migration makes nothing for it. */
static void
test_check_destination_uefi(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance_props(uuid, "", "img-1", "'hw_firmware_type': 'uefi'", "");
    g_autofree char *sd = g_build_filename(h->cfg->libvirt.state_dir, uuid, NULL);
    g_auto(ot_reply) r = { 0 };

    ot_call(h, vtpm_op_check_can_live_migrate_destination, "check_can_live_migrate_destination",
            &r, "{'instance': %s}", inst);
    assert_int_equal(r.err.code, VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message, "host " OT_HOST " cannot provide UEFI firmware: "));
    ot_offer_firmware(h, TRUE);
    ot_expect_ok(h, vtpm_op_check_can_live_migrate_destination,
                 "check_can_live_migrate_destination", "{'ok': true}", "{'instance': %s}", inst);
    ot_expect_ok(h, vtpm_op_pre_live_migration, "pre_live_migration",
                 "{'dest_host': '" OT_HOST "', 'inbound_addr': '" OT_HOST "'}",
                 "{'instance': %s}", inst);
    assert_false(g_file_test(sd, G_FILE_TEST_EXISTS));
}

static void
test_pre(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *plain = ot_instance(uuid, "", "img-1", "");
    g_autofree char *sd = NULL, *sd_tpm = NULL;

    ot_expect_fault(h, vtpm_op_pre_live_migration, "pre_live_migration", BAD,
                    "args.source_host: expected str, got unsigned integer",
                    "{'instance': %s, 'source_host': 7}", plain);
    ot_expect_fault(h, vtpm_op_pre_live_migration, "pre_live_migration", BAD,
                    "args.source_host: character 0x2f not allowed in a host name",
                    "{'instance': %s, 'source_host': 'a/system'}", plain);
    ot_expect_fault(h, vtpm_op_pre_live_migration, "pre_live_migration", BAD,
                    "args.source_host: " OT_HOST " is this host; a live migration comes from "
                    "another one",
                    "{'instance': %s, 'source_host': '" OT_HOST "'}", plain);
    /* Nothing to key for an instance without a vTPM; twice the same. */
    for (int i = 0; i < 2; i++)
        ot_expect_ok(h, vtpm_op_pre_live_migration, "pre_live_migration",
                     "{'dest_host': '" OT_HOST "', 'inbound_addr': '" OT_HOST "'}",
                     "{'instance': %s}", plain);
    assert_false(ot_domain_exists(h, uuid, NULL));
    h->cfg->libvirt.live_migration_inbound_addr = g_strdup("fd00::7");
    ot_expect_ok(h, vtpm_op_pre_live_migration, "pre_live_migration",
                 "{'dest_host': '" OT_HOST "', 'inbound_addr': 'fd00::7'}", "{'instance': %s}",
                 plain);
    /* An empty state dir is what pre_live_migration makes for a UEFI
     * guest's store: a redelivery finds it. */
    sd = g_build_filename(h->cfg->libvirt.state_dir, uuid, NULL);
    assert_int_equal(g_mkdir_with_parents(sd, 0700), 0);
    ot_expect_ok(h, vtpm_op_pre_live_migration, "pre_live_migration",
                 "{'dest_host': '" OT_HOST "', 'inbound_addr': 'fd00::7'}", "{'instance': %s}",
                 plain);
    /* A TPM state here that the incoming one would overwrite. */
    sd_tpm = g_build_filename(sd, "tpm2", NULL);
    assert_int_equal(g_mkdir_with_parents(sd_tpm, 0700), 0);
    {
        g_autofree char *want = g_strdup_printf(
            "host " OT_HOST " holds a TPM state of instance %s (%s) that a live migration here "
            "would overwrite (kept by destroy, or left by a failed migration: "
            "rollback_live_migration_at_destination removes that)",
            uuid, sd);

        ot_expect_fault(h, vtpm_op_pre_live_migration, "pre_live_migration",
                        VTPM_FAULT_INSTANCE_CONFLICT, want, "{'instance': %s}", plain);
    }
}

/* Every argument of live_migration is checked before anything is done. */
static void
test_live_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *u = ot_uuid();

#define LM(code, msg, ...)                                                                       \
    ot_expect_fault(h, vtpm_op_live_migration, "live_migration", code, msg,                     \
                    "{'instance': {'uuid': '%s'}" __VA_ARGS__ "}", u)
    LM(BAD, "args.dest_host: missing required key", );
    LM(BAD, "args.dest_host: character 0x40 not allowed in a host name", ", 'dest_host': 'u@b'");
    LM(BAD, "args.dest_host: " OT_HOST " is this host; a live migration goes to another one",
       ", 'dest_host': '" OT_HOST "'");
    LM(BAD, "args.migrate_data: missing required key", ", 'dest_host': 'b'");
    LM(BAD, "args.migrate_data: expected map, got str", ", 'dest_host': 'b', 'migrate_data': 'x'");
    LM(BAD, "args.migrate_data.inbound_addr: missing required key",
       ", 'dest_host': 'b', 'migrate_data': {}");
    LM(BAD, "args.migrate_data.inbound_addr: character 0x2f not allowed in a host name",
       ", 'dest_host': 'b', 'migrate_data': {'inbound_addr': 'b/x'}");
    LM(BAD,
       "args.migrate_data.dest_host: the migrate_data is host c's, not args.dest_host b's (pass "
       "pre_live_migration's reply unchanged)",
       ", 'dest_host': 'b', 'migrate_data': {'dest_host': 'c', 'inbound_addr': 'c'}");
    LM(BAD, "args.migrate_data.deployment_keys: expected an array of at most 8 key ids",
       ", 'dest_host': 'b', 'migrate_data': {'inbound_addr': 'b', 'deployment_keys': 'k'}");
    LM(BAD,
       "args.migrate_data.deployment_keys[1]: expected a key id of 16 lower-case hex digits",
       ", 'dest_host': 'b', 'migrate_data': {'inbound_addr': 'b', 'deployment_keys': "
       "['0123456789abcdef', '0123456789ABCDEF']}");
    LM(BAD, "args.max_downtime_ms: 0 is out of range 1..600000", ", 'dest_host': 'b', " MD
       ", 'max_downtime_ms': 0");
    LM(BAD, "args.max_downtime_ms: expected unsigned integer, got str",
       ", 'dest_host': 'b', " MD ", 'max_downtime_ms': '50'");
    LM(BAD, "args.timeout_s: 86401 is out of range 0..86400", ", 'dest_host': 'b', " MD
       ", 'timeout_s': 86401");
#undef LM
    ot_expect_fault(h, vtpm_op_live_migration, "live_migration", BAD,
                    "args.instance.vtpm.secret: expected bin, got str",
                    "{'instance': {'uuid': '%s', 'vtpm': {'secret': 's'}}, 'dest_host': 'b', " MD
                    "}",
                    u);
}

/* What live_migration decides from where the guest is, short of
 * migrating: the test driver cannot migrate. */
static void
test_live_where(void **state)
{
    ot_host *h = *state;
    g_autofree char *u = ot_uuid();
    g_autofree char *nowhere = g_strdup_printf(
        "instance %s has no domain on host " OT_HOST ", and host b does not run it (no domain)", u);
    g_autofree char *off = g_strdup_printf(
        "instance %s is shut off on host " OT_HOST ": a live migration moves a running guest (a "
        "cold migration moves a stopped one)",
        u);
    g_autofree char *failed = g_strdup_printf("live migration of %s to b: ", u);
    g_auto(ot_reply) r = { 0 };
    gboolean running = FALSE;

    h->cfg->libvirt.live_migration_uri_template =
        g_strdup_printf("qemu+unix:///system?socket=%s/none/%%s", h->root);
    ot_call(h, vtpm_op_live_migration, "live_migration", &r,
            "{'instance': {'uuid': '%s'}, 'dest_host': 'b', " MD "}", u);
    assert_int_equal(r.err.code, VTPM_FAULT_STATE_TRANSFER_FAILED);
    assert_true(g_str_has_prefix(r.err.message, "cannot connect to destination b ("));
    ot_reply_clear(&r);

    dest_b(h);
    ot_expect_fault(h, vtpm_op_live_migration, "live_migration", VTPM_FAULT_INSTANCE_NOT_FOUND,
                    nowhere, "{'instance': {'uuid': '%s'}, 'dest_host': 'b', " MD "}", u);
    ot_spawn(h, u, FALSE);
    ot_expect_fault(h, vtpm_op_live_migration, "live_migration",
                    VTPM_FAULT_UNSUPPORTED_OPERATION, off,
                    "{'instance': {'uuid': '%s'}, 'dest_host': 'b', " MD "}", u);
    /* Running: libvirt's failure is retryable, and the guest stays. */
    ot_undefine(h, u);
    ot_spawn(h, u, TRUE);
    ot_call(h, vtpm_op_live_migration, "live_migration", &r,
            "{'instance': {'uuid': '%s'}, 'dest_host': 'b', " MD ", 'max_downtime_ms': 50}", u);
    assert_int_equal(r.rc, -(int)r.err.code);
    assert_true(vtpm_fault_retryable(r.err.code));
    assert_true(g_str_has_prefix(r.err.message, failed));
    assert_true(g_str_has_suffix(r.err.message, "; the guest is running on host " OT_HOST));
    assert_true(ot_domain_exists(h, u, &running));
    assert_true(running);
}

static void
test_post(void **state)
{
    ot_host *h = *state;
    g_autofree char *u = ot_uuid();
    g_autofree char *missing = g_strdup_printf("instance %s has no domain on host " OT_HOST, u);
    g_autofree char *done = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null}", u);

    ot_expect_fault(h, vtpm_op_post_live_migration_at_destination,
                    "post_live_migration_at_destination", BAD,
                    "args.instance.uuid: missing required key", "{'instance': {}}");
    ot_expect_fault(h, vtpm_op_post_live_migration_at_destination,
                    "post_live_migration_at_destination", VTPM_FAULT_INSTANCE_NOT_FOUND, missing,
                    "{'instance': {'uuid': '%s'}}", u);
    ot_spawn(h, u, TRUE);
    for (int i = 0; i < 2; i++) /* the second is a redelivery */
        ot_expect_ok(h, vtpm_op_post_live_migration_at_destination,
                     "post_live_migration_at_destination", done, "{'instance': {'uuid': '%s'}}",
                     u);
}

/* A rollback removes only what a failed migration leaves, never a guest
 * that arrived. */
static void
test_rollback(void **state)
{
    ot_host *h = *state;
    g_autofree char *u = ot_uuid();
    g_autofree char *sd = g_build_filename(h->cfg->libvirt.state_dir, u, NULL);
    g_autofree char *runs = g_strdup_printf(
        "instance %s is running on host " OT_HOST ": its live migration completed, there is "
        "nothing to roll back (destroy removes it)",
        u);
    g_autofree char *off = g_strdup_printf(
        "instance %s is shut off on host " OT_HOST ": its live migration completed, there is "
        "nothing to roll back (destroy removes it)",
        u);

    ot_expect_fault(h, vtpm_op_rollback_live_migration_at_destination,
                    "rollback_live_migration_at_destination", BAD,
                    "args.instance: expected map, got str", "{'instance': 'x'}");
    ot_expect_ok(h, vtpm_op_rollback_live_migration_at_destination,
                 "rollback_live_migration_at_destination", "{'rolled_back': false}",
                 "{'instance': {'uuid': '%s'}}", u);
    /* A state dir a failed incoming migration left behind. */
    assert_int_equal(g_mkdir_with_parents(sd, 0700), 0);
    ot_expect_ok(h, vtpm_op_rollback_live_migration_at_destination,
                 "rollback_live_migration_at_destination", "{'rolled_back': true}",
                 "{'instance': {'uuid': '%s'}}", u);
    assert_false(g_file_test(sd, G_FILE_TEST_EXISTS));
    ot_spawn(h, u, TRUE);
    ot_expect_fault(h, vtpm_op_rollback_live_migration_at_destination,
                    "rollback_live_migration_at_destination", VTPM_FAULT_INSTANCE_CONFLICT, runs,
                    "{'instance': {'uuid': '%s'}}", u);
    ot_undefine(h, u);
    ot_spawn(h, u, FALSE);
    ot_expect_fault(h, vtpm_op_rollback_live_migration_at_destination,
                    "rollback_live_migration_at_destination", VTPM_FAULT_INSTANCE_CONFLICT, off,
                    "{'instance': {'uuid': '%s'}}", u);
    assert_true(ot_domain_exists(h, u, NULL));
}

typedef struct {
    const char *uuid;
    bool found, aborted;
    int rc;
} abort_call;

static gpointer
run_abort(gpointer data)
{
    abort_call *c = data;
    vtpm_error err = { 0 };

    c->rc = vtpm_livejob_abort(c->uuid, 60, &c->found, &c->aborted, &err);
    return NULL;
}

/* An abort reaches the job of its instance from another thread, and
 * answers only once the job has ended, with its outcome. */
static void
test_abort(void **state)
{
    ot_host *h = *state;
    g_autofree char *u = ot_uuid();
    abort_call c = { .uuid = u };
    vtpm_livejob *job;
    GThread *t;

    ot_expect_fault(h, vtpm_op_live_migration_abort, "live_migration_abort", BAD,
                    "args.instance.uuid: expected str, got unsigned integer",
                    "{'instance': {'uuid': 1}}");
    ot_expect_ok(h, vtpm_op_live_migration_abort, "live_migration_abort", "{'aborted': false}",
                 "{'instance': {'uuid': '%s'}}", u);

    for (int migrated = 0; migrated < 2; migrated++) {
        job = vtpm_livejob_begin(u);
        t = g_thread_new("abort", run_abort, &c);
        while (!vtpm_livejob_abort_requested(job))
            g_usleep(1000);
        /* Still waiting: the job has not ended. */
        g_usleep(50 * 1000);
        assert_false(c.found);
        vtpm_livejob_finish(job, migrated);
        g_thread_join(t);
        assert_int_equal(c.rc, 0);
        assert_true(c.found);
        /* Too late to stop one that had moved the guest. */
        assert_int_equal(c.aborted, !migrated);
        c.found = false;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_check_destination),
        OT_TEST(test_check_destination_uefi),
        OT_TEST(test_pre),
        OT_TEST(test_live_args),
        OT_TEST(test_live_where),
        OT_TEST(test_post),
        OT_TEST(test_rollback),
        OT_TEST(test_abort),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
