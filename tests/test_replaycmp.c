/* SPDX-License-Identifier: Apache-2.0 */
/* vtpm-replay --compare: which reply differences count and how they read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

#include "mpjson.h"
#include "replaycmp.h"
#include "vtpm/proto.h"

/* A reply envelope: {"ok": RESULT_JSON} or {"fault": CODE}. */
static GBytes *
ok_reply(const char *result_json)
{
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };
    GBytes *b;

    msgpack_sbuffer_init(&sb);
    if (vtpm_mpjson_from_string(result_json, -1, &sb, &err) < 0) {
        print_error("%s: %s\n", result_json, err.message);
        fail();
    }
    b = vtpm_proto_reply_ok(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return b;
}

static GBytes *
fault_reply(vtpm_fault code, const char *msg)
{
    vtpm_error err = { 0 };

    vtpm_error_set(&err, code, "%s", msg);
    return vtpm_proto_reply_fault(&err);
}

/* Compare and return the first difference (NULL when they match). */
static char *
cmp(GBytes *a, GBytes *b, const char *const *extra, guint *ndiff)
{
    g_autoptr(vtpm_replay_ignore) ig = vtpm_replay_ignore_new(extra);
    vtpm_replay_cmp c = { 0 };
    char *first;

    vtpm_replay_compare(g_bytes_get_data(a, NULL), g_bytes_get_size(a),
                        g_bytes_get_data(b, NULL), g_bytes_get_size(b), ig, &c);
    assert_true(c.match == (c.first == NULL));
    if (ndiff)
        *ndiff = c.ndiff;
    first = g_steal_pointer(&c.first);
    vtpm_replay_cmp_clear(&c);
    return first;
}

#define CAPS_A "{\"host\":\"a\",\"libvirt_version\":\"9.0.0\",\"traits\":[\"T1\",\"T2\"]," \
               "\"tpm\":{\"supported\":true,\"models\":[\"tpm-tis\"]},\"took_ms\":3}"

static void
test_equal_and_ignored(void **state)
{
    g_autoptr(GBytes) a = ok_reply(CAPS_A);
    /* Other host, versions and timings: expected to differ. */
    g_autoptr(GBytes) b = ok_reply("{\"took_ms\":70,\"host\":\"b\",\"libvirt_version\":\"10.1\","
                                   "\"traits\":[\"T1\",\"T2\"],\"tpm\":{\"models\":[\"tpm-tis\"],"
                                   "\"supported\":true}}");
    g_autofree char *d1 = cmp(a, a, NULL, NULL);
    g_autofree char *d2 = cmp(a, b, NULL, NULL);

    assert_null(d1);
    assert_null(d2); /* key order does not matter either */
}

static void
test_result_differs(void **state)
{
    g_autoptr(GBytes) a = ok_reply(CAPS_A);
    g_autoptr(GBytes) b = ok_reply("{\"host\":\"a\",\"libvirt_version\":\"9.0.0\","
                                   "\"traits\":[\"T1\"],\"tpm\":{\"supported\":false,"
                                   "\"models\":[\"tpm-tis\"]},\"took_ms\":3,\"new\":1}");
    guint n = 0;
    g_autofree char *d = cmp(a, b, NULL, &n);

    assert_non_null(d);
    assert_string_equal(d, "result.traits[1]: recorded \"T2\", replayed absent");
    assert_int_equal(n, 3); /* traits[1], tpm.supported, new */
}

static void
test_extra_key(void **state)
{
    g_autoptr(GBytes) a = ok_reply("{\"x\":1}");
    g_autoptr(GBytes) b = ok_reply("{\"x\":1,\"y\":{\"z\":[]}}");
    g_autofree char *d = cmp(a, b, NULL, NULL);

    assert_string_equal(d, "result.y: recorded absent, replayed {\"z\":[]}");
}

static void
test_extra_ignore_rules(void **state)
{
    static const char *const by_path[] = { "result.tpm.supported", "traits", NULL };
    static const char *const by_suffix[] = { "*_id", NULL };
    g_autoptr(GBytes) a = ok_reply(CAPS_A);
    g_autoptr(GBytes) b = ok_reply("{\"traits\":[],\"tpm\":{\"supported\":false,"
                                   "\"models\":[\"tpm-tis\"]}}");
    g_autoptr(GBytes) c = ok_reply("{\"job_id\":\"1\",\"x\":{\"supported\":true}}");
    g_autoptr(GBytes) d = ok_reply("{\"job_id\":\"2\",\"x\":{\"supported\":false}}");
    g_autofree char *d1 = cmp(a, b, by_path, NULL);
    g_autofree char *d2 = cmp(c, d, by_suffix, NULL);
    g_autofree char *d3 = cmp(c, d, by_path, NULL);

    assert_null(d1);
    /* A path rule ignores that path only, not the same key elsewhere. */
    assert_string_equal(d2, "result.x.supported: recorded true, replayed false");
    assert_non_null(d3);
    assert_string_equal(d3, "result.job_id: recorded \"1\", replayed \"2\"");
}

static void
test_ok_vs_fault(void **state)
{
    g_autoptr(GBytes) a = ok_reply("{}");
    g_autoptr(GBytes) b = fault_reply(VTPM_FAULT_INSTANCE_NOT_FOUND, "no such instance");
    g_autofree char *d1 = cmp(a, b, NULL, NULL);
    g_autofree char *d2 = cmp(b, a, NULL, NULL);

    assert_string_equal(d1, "ok: recorded true, replayed false (fault InstanceNotFound: "
                            "no such instance)");
    assert_string_equal(d2, "ok: recorded false (fault InstanceNotFound), replayed true");
}

static void
test_faults(void **state)
{
    g_autoptr(GBytes) a = fault_reply(VTPM_FAULT_BAD_REQUEST, "args.instance.uuid: bad");
    /* Same code, other words: fault.message is for people. */
    g_autoptr(GBytes) b = fault_reply(VTPM_FAULT_BAD_REQUEST, "something else");
    g_autoptr(GBytes) c = fault_reply(VTPM_FAULT_UNKNOWN_METHOD, "unknown method 'x'");
    g_autofree char *d1 = cmp(a, b, NULL, NULL);
    g_autofree char *d2 = cmp(a, c, NULL, NULL);

    assert_null(d1);
    assert_string_equal(d2, "fault.code: recorded \"BadRequest\", replayed \"UnknownMethod\" "
                            "(unknown method 'x')");
}

static void
test_undecodable(void **state)
{
    g_autoptr(GBytes) a = ok_reply("{}");
    g_autoptr(GBytes) junk = g_bytes_new("\x93\x01", 2);
    g_autofree char *d1 = cmp(a, junk, NULL, NULL);
    g_autofree char *d2 = cmp(junk, a, NULL, NULL);

    assert_non_null(strstr(d1, "replayed reply undecodable"));
    assert_non_null(strstr(d2, "recorded reply undecodable"));
}

static void
test_ignored_rules(void **state)
{
    g_autoptr(vtpm_replay_ignore) ig = vtpm_replay_ignore_new(NULL);

    assert_true(vtpm_replay_ignored(ig, "result.host", "host"));
    assert_true(vtpm_replay_ignored(ig, "result.x.elapsed_ms", "elapsed_ms"));
    assert_true(vtpm_replay_ignored(ig, "result.vtpm_transfer.sha256", "sha256"));
    assert_false(vtpm_replay_ignored(ig, "result.traits", "traits"));
    assert_false(vtpm_replay_ignored(ig, "result.hosts", "hosts"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_and_ignored),
        cmocka_unit_test(test_result_differs),
        cmocka_unit_test(test_extra_key),
        cmocka_unit_test(test_extra_ignore_rules),
        cmocka_unit_test(test_ok_vs_fault),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_undecodable),
        cmocka_unit_test(test_ignored_rules),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
