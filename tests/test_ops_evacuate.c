/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ops/evacuate.c in-process on libvirt's test:///default driver
 * (tests/lib/optest.h): its argument checks and faults, the evacuation of
 * an instance without a vTPM (no TPM state, no store), and a redelivery.
 * Also what evacuate decides with, without a store: which checkpoint it
 * restores (ops/checkpoint.h, vtpm_ckpt_pick, on real archives) and the
 * ownership rules (ops/ownership.h).  The TPM itself, the store and the
 * other host are test_evacuate's (tests/test_evacuate.c).
 */
#include <string.h>

#include <glib/gstdio.h>

#include "lib/optest.h"
#include "ops/checkpoint.h"
#include "ops/evacuate.h"
#include "ops/ownership.h"
#include "ops/basics.h"

#define BAD VTPM_FAULT_BAD_REQUEST
#define CONFLICT VTPM_FAULT_INSTANCE_CONFLICT

static void
test_evacuate_args(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");

    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD, "args.instance: missing required key",
                    "{'from_host': 'host-a'}");
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD, "args.from_host: missing required key",
                    "{'instance': %s}", inst);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD, "args.from_host: expected str, got unsigned integer",
                    "{'instance': %s, 'from_host': 7}", inst);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD,
                    "args.from_host: character 0x2f not allowed in a host name",
                    "{'instance': %s, 'from_host': 'host/a'}", inst);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD,
                    "args.from_host: " OT_HOST " is this host; evacuate brings an instance here "
                    "from another, dead host",
                    "{'instance': %s, 'from_host': '" OT_HOST "'}", inst);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD, "args.fresh: expected bool, got str",
                    "{'instance': %s, 'from_host': 'host-a', 'fresh': 'yes'}", inst);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", BAD, "args.fenced: expected bool, got unsigned integer",
                    "{'instance': %s, 'from_host': 'host-a', 'fenced': 1}", inst);
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* A vTPM this host cannot give (the test driver has no TPM) is refused
 * before anything else is asked. */
static void
test_evacuate_tpm_unsupported(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "'hw:tpm_version': '2.0'", "img-1", "");
    g_auto(ot_reply) r = { 0 };

    ot_call(h, vtpm_op_evacuate, "evacuate", &r, "{'instance': %s, 'from_host': 'host-a'}", inst);
    assert_int_equal(r.rc, -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_true(g_str_has_prefix(r.err.message, "host " OT_HOST " cannot provide TPM 2.0/"));
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* Without fenced: true the old host is asked first, through the broker;
 * one that cannot be reached is a retryable fault, and nothing is made. */
static void
test_evacuate_asks_old_host(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_auto(ot_reply) r = { 0 };

    g_free(h->cfg->amqp.url);
    h->cfg->amqp.url = g_strdup("amqp://guest:guest@127.0.0.1:1/%2f");
    ot_call(h, vtpm_op_evacuate, "evacuate", &r, "{'instance': %s, 'from_host': 'host-a'}", inst);
    assert_int_equal(r.rc, -(int)VTPM_FAULT_BUSY);
    assert_true(g_str_has_prefix(r.err.message,
                                 "asking whether the vtpmd of host host-a answers: "));
    assert_true(vtpm_error_retryable(&r.err));
    assert_false(ot_domain_exists(h, uuid, NULL));
}

/* An instance without a vTPM, its host fenced: defined and started here;
 * the same request again answers the same; another spec, or another old
 * host, is refused for good, and so is an instance that lives here. */
static void
test_evacuate_no_vtpm(void **state)
{
    ot_host *h = *state;
    g_autofree char *uuid = ot_uuid();
    g_autofree char *other = ot_uuid();
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *inst2 = ot_instance(uuid, "", "img-2", "");
    g_autofree char *here = ot_instance(other, "", "img-1", "");
    g_autofree char *want = g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, "
                                            "'firmware': {'type': 'bios', 'secure_boot': "
                                            "false, 'machine': 'q35'}, 'vtpm_state': 'none', "
                                            "'nvram_state': 'none', 'identity_changed': false, "
                                            "'checkpoint': null}",
                                            uuid);
#define CONFLICT_MSG "instance %s already has a domain on host " OT_HOST ", not one evacuated " \
                     "here from host %s with this spec"
    g_autofree char *c1 = g_strdup_printf(CONFLICT_MSG, uuid, "host-a");
    g_autofree char *c2 = g_strdup_printf(CONFLICT_MSG, uuid, "host-c");
    g_autofree char *c3 = g_strdup_printf(CONFLICT_MSG, other, "host-a");
    g_auto(ot_reply) r = { 0 };
    gboolean running = FALSE;

    for (int i = 0; i < 2; i++) {
        ot_expect_ok(h, vtpm_op_evacuate, "evacuate", want,
                     "{'instance': %s, 'from_host': 'host-a', 'fenced': true}", inst);
        assert_true(ot_domain_exists(h, uuid, &running));
        assert_true(running);
    }
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", CONFLICT, c1,
                    "{'instance': %s, 'from_host': 'host-a', 'fenced': true}", inst2);
    ot_expect_fault(h, vtpm_op_evacuate, "evacuate", CONFLICT, c2,
                    "{'instance': %s, 'from_host': 'host-c', 'fenced': true}", inst);
    ot_spawn(h, other, FALSE);
    ot_call(h, vtpm_op_evacuate, "evacuate", &r,
            "{'instance': %s, 'from_host': 'host-a', 'fenced': true}", here);
    assert_int_equal(r.rc, -(int)CONFLICT);
    assert_string_equal(r.err.message, c3);
    assert_false(vtpm_error_retryable(&r.err));
    /* destroy forgets the evacuation: a new one is possible. */
    ot_expect_ok(h, vtpm_op_destroy, "destroy",
                 "{'destroyed': true, 'vtpm_state': 'none', 'nvram_state': 'none'}",
                 "{'instance': {'uuid': '%s'}}", uuid);
    ot_expect_ok(h, vtpm_op_evacuate, "evacuate", want,
                 "{'instance': %s, 'from_host': 'host-c', 'fenced': true}", inst);
}

/* ---- which checkpoint: vtpm_ckpt_pick on real archives --------------------------------- */

#define UUID_1 "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
#define UUID_2 "7f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

/* A checkpoint archive of @uuid at @gen, of a state dir holding @content;
 * @tpm false: a manifest-only archive (an instance without a vTPM). */
static GBytes *
archive(const char *uuid, uint64_t gen, const char *content, bool tpm)
{
    g_autofree char *dir = g_dir_make_tmp("test_ops_evacuate-XXXXXX", NULL);
    g_autofree char *sub = g_build_filename(dir, "tpm2", NULL);
    g_autofree char *file = g_build_filename(sub, "tpm2-00.permall", NULL);
    g_auto(vtpm_archive_meta) m = { 0 };
    vtpm_error err = { 0 };
    GBytes *out = NULL;

    vtpm_archive_meta_init(&m);
    m.format = VTPM_ARCHIVE_FORMAT;
    g_strlcpy(m.uuid, uuid, sizeof(m.uuid));
    if (tpm) {
        m.tpm_version = g_strdup("2.0");
        m.tpm_model = g_strdup("tpm-tis");
        m.secret_security = g_strdup("user");
    }
    m.generation = gen;
    m.created_ms = (int64_t)gen;
    m.reason = g_strdup("checkpoint");
    assert_int_equal(g_mkdir(sub, 0700), 0);
    assert_true(g_file_set_contents(file, content, -1, NULL));
    if (vtpm_archive_pack(dir, &m, &out, &err) < 0)
        fail_msg("pack: %s", err.message);
    g_unlink(file);
    g_rmdir(sub);
    g_rmdir(dir);
    return out;
}

typedef struct {
    GHashTable *vols;  /* name -> GBytes */
    const char *fail;  /* this volume's read fails as the store would */
} mem_store;

static int
mem_read(const char *name, GBytes **out, vtpm_error *err, void *user)
{
    mem_store *s = user;
    GBytes *b = g_hash_table_lookup(s->vols, name);

    if (s->fail && strcmp(name, s->fail) == 0)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED, "store went away");
    if (!b)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND, "no volume %s", name);
    *out = g_bytes_ref(b);
    return 0;
}

static void
put(mem_store *s, const char *uuid, uint64_t gen, GBytes *b)
{
    g_hash_table_replace(s->vols, vtpm_ckpt_volume(uuid, gen), b);
}

/* A copy of @b with one byte of the state file flipped: the checksum in
 * the manifest no longer matches. */
static GBytes *
damaged(GBytes *b)
{
    gsize n;
    const guint8 *d = g_bytes_get_data(b, &n);
    guint8 *copy = g_memdup2(d, n);

    /* The state file's data follows the manifest's and the directory's
     * headers; the last 1024 bytes are the end-of-archive blocks. */
    copy[n - 1024 - 512 + 3] ^= 0x40;
    return g_bytes_new_take(copy, n);
}

static GPtrArray *
names_of(mem_store *s)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, s->vols);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(out, g_strdup(k));
    return out;
}

static uint64_t
pick_gen(mem_store *s, GString *passed, int *rc, vtpm_error *err)
{
    g_autoptr(GPtrArray) names = names_of(s);
    g_autoptr(vtpm_ckpt_found) f = NULL;

    g_string_truncate(passed, 0);
    *rc = vtpm_ckpt_pick(UUID_1, names, mem_read, s, &f, passed, err);
    return f ? f->meta.generation : 0;
}

static void
test_checkpoint_pick(void **state)
{
    g_autoptr(GHashTable) vols = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                      (GDestroyNotify)g_bytes_unref);
    g_autoptr(GString) passed = g_string_new(NULL);
    g_autofree char *v300 = vtpm_ckpt_volume(UUID_1, 300);
    g_autofree char *v200 = vtpm_ckpt_volume(UUID_1, 200);
    mem_store s = { vols, NULL };
    vtpm_error err = { 0 };
    int rc = 0;

    /* Nothing at all: no checkpoint, no fault (a fresh TPM follows). */
    assert_int_equal(pick_gen(&s, passed, &rc, &err), 0);
    assert_int_equal(rc, 0);
    put(&s, UUID_1, 100, archive(UUID_1, 100, "state-100", true));
    put(&s, UUID_1, 300, archive(UUID_1, 300, "state-300", true));
    put(&s, UUID_1, 200, archive(UUID_1, 200, "state-200", true));
    /* Another instance's, newer, and names that are no checkpoint. */
    put(&s, UUID_2, 900, archive(UUID_2, 900, "other", true));
    g_hash_table_replace(vols, g_strdup(UUID_1 ".ckpt-x.vtpm.tar"), g_bytes_new("x", 1));
    g_hash_table_replace(vols, g_strdup(UUID_1 ".owner-999"), g_bytes_new("{}", 2));
    assert_int_equal(pick_gen(&s, passed, &rc, &err), 300);
    assert_int_equal(rc, 0);
    assert_int_equal(passed->len, 0);

    /* The newest fails its checksum: the one before it. */
    put(&s, UUID_1, 300, damaged(g_hash_table_lookup(vols, v300)));
    assert_int_equal(pick_gen(&s, passed, &rc, &err), 200);
    assert_true(g_str_has_prefix(passed->str, v300));
    /* A checkpoint that says another generation than its name, and one
     * without TPM state, are passed over too. */
    put(&s, UUID_1, 200, archive(UUID_1, 250, "state-250", true));
    put(&s, UUID_1, 100, archive(UUID_1, 100, "", false));
    assert_int_equal(pick_gen(&s, passed, &rc, &err), 0);
    assert_int_equal(rc, -(int)VTPM_FAULT_STATE_INTEGRITY);
    assert_true(g_str_has_prefix(err.message, "none of the 3 checkpoints of instance " UUID_1
                                              " verifies: " UUID_1 ".ckpt-300.vtpm.tar: "));
    assert_non_null(strstr(passed->str, "generation 250"));
    assert_non_null(strstr(passed->str, "TPM none"));

    /* A store that fails ends the choice: no verdict on the checkpoints. */
    put(&s, UUID_1, 200, archive(UUID_1, 200, "state-200", true));
    s.fail = v300;
    assert_int_equal(pick_gen(&s, passed, &rc, &err), 0);
    assert_int_equal(rc, -(int)VTPM_FAULT_STATE_TRANSFER_FAILED);
    assert_string_equal(err.message, "store went away");
    s.fail = NULL;
    /* One gone since the listing is passed over. */
    g_hash_table_remove(vols, v300);
    {
        g_autoptr(GPtrArray) names = names_of(&s);
        g_autoptr(vtpm_ckpt_found) f = NULL;

        g_ptr_array_add(names, g_strdup(v300));
        assert_int_equal(vtpm_ckpt_pick(UUID_1, names, mem_read, &s, &f, passed, &err), 0);
        assert_non_null(f);
        assert_int_equal(f->meta.generation, 200);
        assert_string_equal(f->name, v200);
    }
}

/* ---- the ownership rules ------------------------------------------------------------- */

static void
test_ownership_rules(void **state)
{
    ot_host *h = *state;
    vtpm_owner none = { 0 };
    vtpm_owner mine = { .host = (char *)OT_HOST, .generation = 500 };
    vtpm_owner other = { .host = (char *)"host-b", .generation = 500 };

    /* Claiming: no record, this host's, or a generation this state
     * descends from. */
    assert_true(vtpm_owner_may_claim(&h->w, &none, 0));
    assert_true(vtpm_owner_may_claim(&h->w, &mine, 1));
    assert_true(vtpm_owner_may_claim(&h->w, &other, 500));
    assert_true(vtpm_owner_may_claim(&h->w, &other, 501));
    assert_false(vtpm_owner_may_claim(&h->w, &other, 499));
    /* Stale here: another host, newer than anything seen here. */
    assert_false(vtpm_owner_moved_away(&h->w, &none, 0));
    assert_false(vtpm_owner_moved_away(&h->w, &mine, 1));
    assert_false(vtpm_owner_moved_away(&h->w, &other, 500));
    assert_true(vtpm_owner_moved_away(&h->w, &other, 499));
}

static void
test_ownership_record(void **state)
{
    ot_host *h = *state;
    g_autofree char *text = vtpm_owner_format(&h->w, UUID_1, 1234);
    g_auto(vtpm_owner) o = { 0 };
    vtpm_owner none = { 0 };
    const char *bad[] = {
        "not json",
        "[]",
        "{\"format\": 2, \"instance\": \"" UUID_1 "\", \"host\": \"h\", \"generation\": 1234}",
        "{\"format\": 1, \"instance\": \"" UUID_2 "\", \"host\": \"h\", \"generation\": 1234}",
        "{\"format\": 1, \"instance\": \"" UUID_1 "\", \"host\": \"h\", \"generation\": 1235}",
        "{\"format\": 1, \"instance\": \"" UUID_1 "\", \"host\": \"h/x\", \"generation\": 1234}",
        "{\"format\": 1, \"instance\": \"" UUID_1 "\", \"generation\": 1234}",
    };

    assert_true(vtpm_owner_parse(text, strlen(text), UUID_1, 1234, &o));
    assert_string_equal(o.host, OT_HOST);
    assert_int_equal(o.generation, 1234);
    assert_true(o.written_ms > 0);
    /* The generation the volume's name says must be the record's. */
    assert_false(vtpm_owner_parse(text, strlen(text), UUID_1, 1233, &none));
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        if (vtpm_owner_parse(bad[i], strlen(bad[i]), UUID_1, 1234, &none))
            fail_msg("parsed as a record: %s", bad[i]);
        assert_null(none.host);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        OT_TEST(test_evacuate_args),
        OT_TEST(test_evacuate_tpm_unsupported),
        OT_TEST(test_evacuate_asks_old_host),
        OT_TEST(test_evacuate_no_vtpm),
        cmocka_unit_test(test_checkpoint_pick),
        OT_TEST(test_ownership_rules),
        OT_TEST(test_ownership_record),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
