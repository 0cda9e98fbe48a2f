/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mpjson.h"
#include "vtpm/proto.h"

#define BAD VTPM_FAULT_BAD_REQUEST

/* JSON text -> msgpack, unpacked into @up (destroy it). */
static msgpack_object
json_to_obj(const char *json, msgpack_sbuffer *sb, msgpack_unpacked *up)
{
    vtpm_error err = { 0 };
    size_t off = 0;

    msgpack_sbuffer_init(sb);
    if (vtpm_mpjson_from_string(json, -1, sb, &err) != 0) {
        print_error("%s: %s\n", json, err.message);
        fail();
    }
    msgpack_unpacked_init(up);
    assert_int_equal(msgpack_unpack_next(up, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sb->size);
    return up->data;
}

static char *
round_trip(const char *json)
{
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    msgpack_object o = json_to_obj(json, &sb, &up);
    char *s = vtpm_mpjson_to_string(&o, false);

    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return s;
}

static void
test_round_trip(void **state)
{
    /* Written in json-glib's compact form, so the text must come back. */
    static const char *const docs[] = {
        "{\"a\":1,\"b\":[true,false,null,\"x\"],\"c\":{\"d\":-5,\"e\":1.5},\"f\":\"\"}",
        "[]",
        "{}",
        "[0,-1,9223372036854775807,-9223372036854775808]",
        "\"caf\xc3\xa9 \\u00e9\"",
        "{\"bin\":{\"$bin\":\"AAEC/w==\"},\"empty\":{\"$bin\":\"\"}}",
        "{\"nested\":[[[[{\"k\":[]}]]]]}",
        "{\"z\":1,\"a\":2,\"m\":3}",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(docs); i++) {
        g_autofree char *back = round_trip(docs[i]);
        g_autoptr(JsonNode) want = json_from_string(docs[i], NULL);
        g_autofree char *want_s = json_to_string(want, false);

        assert_string_equal(back, want_s);
    }
}

static void
test_types(void **state)
{
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    msgpack_object o = json_to_obj(
        "[1,-1,1.0,2.5,true,false,null,\"s\",{\"$bin\":\"AAEC\"},{},[],0]", &sb, &up);
    const msgpack_object *a = o.via.array.ptr;

    assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.array.size, 12);
    assert_int_equal(a[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(a[0].via.u64, 1);
    assert_int_equal(a[1].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(a[1].via.i64, -1);
    assert_int_equal(a[2].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(a[2].via.f64 == 1.0);
    assert_int_equal(a[3].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(a[3].via.f64 == 2.5);
    assert_int_equal(a[4].type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(a[4].via.boolean);
    assert_false(a[5].via.boolean);
    assert_int_equal(a[6].type, MSGPACK_OBJECT_NIL);
    assert_int_equal(a[7].type, MSGPACK_OBJECT_STR);
    assert_int_equal(a[7].via.str.size, 1);
    assert_int_equal(a[8].type, MSGPACK_OBJECT_BIN);
    assert_int_equal(a[8].via.bin.size, 3);
    assert_memory_equal(a[8].via.bin.ptr, "\x00\x01\x02", 3);
    assert_int_equal(a[9].type, MSGPACK_OBJECT_MAP);
    assert_int_equal(a[10].type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(a[11].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

static void
test_bin_forms(void **state)
{
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    msgpack_object o;

    /* "$bin" next to other members is an ordinary map. */
    o = json_to_obj("{\"$bin\":\"AA==\",\"x\":1}", &sb, &up);
    assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(o.via.map.size, 2);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);

    o = json_to_obj("{\"$bin\":\"AA==\"}", &sb, &up);
    assert_int_equal(o.type, MSGPACK_OBJECT_BIN);
    assert_int_equal(o.via.bin.size, 1);
    assert_int_equal(o.via.bin.ptr[0], 0);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

static void
test_errors(void **state)
{
    static const struct {
        const char *json;
        const char *msg;
    } cases[] = {
        { "{\"$bin\":\"!!!!\"}", "JSON: \"$bin\" is not valid base64" },
        { "{\"$bin\":\"AAE\"}", "JSON: \"$bin\" is not valid base64" },
        { "{\"$bin\":\"A===\"}", "JSON: \"$bin\" is not valid base64" },
        { "{\"$bin\":\"AA=A\"}", "JSON: \"$bin\" is not valid base64" },
        { "{\"$bin\":\"AA AA\"}", "JSON: \"$bin\" is not valid base64" },
        { "{\"$bin\":5}", "JSON: \"$bin\" must hold a base64 string" },
        { "{\"$bin\":null}", "JSON: \"$bin\" must hold a base64 string" },
        { "[{\"$bin\":\"@@@@\"}]", "JSON: \"$bin\" is not valid base64" },
        { "{", "JSON: " },
        { "{\"a\":}", "JSON: " },
        { "[1,2", "JSON: " },
        { "", "JSON: " },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        msgpack_sbuffer sb;
        vtpm_error err = { 0 };

        msgpack_sbuffer_init(&sb);
        msgpack_sbuffer_write(&sb, "x", 1);
        assert_int_equal(vtpm_mpjson_from_string(cases[i].json, -1, &sb, &err), -(int)BAD);
        assert_int_equal(err.code, BAD);
        if (!g_str_has_prefix(err.message, cases[i].msg)) {
            print_error("%s: got '%s'\n", cases[i].json, err.message);
            fail();
        }
        assert_true(strlen(err.message) > strlen("JSON: "));
        /* The output buffer is untouched on failure. */
        assert_int_equal(sb.size, 1);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void
test_depth(void **state)
{
    char ok[2 * VTPM_MPJSON_MAX_DEPTH + 1];
    char over[2 * (VTPM_MPJSON_MAX_DEPTH + 1) + 1];
    g_autofree char *huge = g_malloc(2 * 200000 + 1);
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };

    memset(ok, '[', VTPM_MPJSON_MAX_DEPTH);
    memset(ok + VTPM_MPJSON_MAX_DEPTH, ']', VTPM_MPJSON_MAX_DEPTH);
    ok[sizeof(ok) - 1] = '\0';
    memset(over, '[', VTPM_MPJSON_MAX_DEPTH + 1);
    memset(over + VTPM_MPJSON_MAX_DEPTH + 1, ']', VTPM_MPJSON_MAX_DEPTH + 1);
    over[sizeof(over) - 1] = '\0';
    memset(huge, '[', 200000);
    memset(huge + 200000, ']', 200000);
    huge[400000] = '\0';

    msgpack_sbuffer_init(&sb);
    assert_int_equal(vtpm_mpjson_from_string(ok, -1, &sb, &err), 0);
    assert_true(sb.size == VTPM_MPJSON_MAX_DEPTH);
    assert_int_equal(vtpm_mpjson_from_string(over, -1, &sb, &err), -(int)BAD);
    assert_string_equal(err.message, "JSON: nesting deeper than 32 levels");
    /* Refused before json-glib recurses through it: json-glib 1.6 itself
     * overflows the stack on 200000 levels. */
    assert_int_equal(vtpm_mpjson_from_string(huge, -1, &sb, &err), -(int)BAD);
    assert_string_equal(err.message, "JSON: nesting deeper than 32 levels");
    /* Brackets inside strings (escaped quotes included) are not nesting. */
    {
        g_autofree char *s = g_strdup_printf("[\"\\\"%.*s\",\"%.*s\"]", 1000, huge, 1000, huge);
        msgpack_unpacked up;
        size_t off = 0;

        msgpack_sbuffer_destroy(&sb);
        msgpack_sbuffer_init(&sb);
        assert_int_equal(vtpm_mpjson_from_string(s, -1, &sb, &err), 0);
        msgpack_unpacked_init(&up);
        assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(up.data.via.array.size, 2);
        assert_int_equal(up.data.via.array.ptr[0].via.str.size, 1001);
        assert_int_equal(up.data.via.array.ptr[0].via.str.ptr[0], '"');
        msgpack_unpacked_destroy(&up);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void
test_from_json_depth_direct(void **state)
{
    /* A tree built in code never went through the text pre-scan. */
    JsonNode *root = json_node_init_array(json_node_alloc(), json_array_new());
    JsonNode *cur = root;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    vtpm_error err = { 0 };

    for (int i = 0; i < VTPM_MPJSON_MAX_DEPTH; i++) {
        JsonNode *child = json_node_init_array(json_node_alloc(), json_array_new());

        json_array_add_element(json_node_get_array(cur), child);
        cur = child;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(vtpm_mpjson_from_json(root, &pk, &err), -(int)BAD);
    assert_string_equal(err.message, "JSON: nesting deeper than 32 levels");
    msgpack_sbuffer_destroy(&sb);
    json_node_unref(root);
}

static void
test_to_json_special(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    size_t off = 0;
    g_autofree char *s = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    msgpack_pack_uint64(&pk, 1); /* non-str keys are stringified */
    vtpm_pack_str(&pk, "one");
    msgpack_pack_nil(&pk);
    vtpm_pack_str(&pk, "nil");
    vtpm_pack_str(&pk, "ext");
    msgpack_pack_ext(&pk, 1, 5);
    msgpack_pack_ext_body(&pk, "\x01", 1);
    vtpm_pack_str(&pk, "big");
    msgpack_pack_uint64(&pk, UINT64_MAX);
    vtpm_pack_str(&pk, "nan");
    msgpack_pack_double(&pk, NAN);
    vtpm_pack_str(&pk, "bad");
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "a\xff\0b", 4);
    vtpm_pack_str(&pk, "bin");
    msgpack_pack_bin(&pk, 2);
    msgpack_pack_bin_body(&pk, "\xfb\xff", 2);
    vtpm_pack_str(&pk, "f32");
    msgpack_pack_float(&pk, 0.5f);

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    s = vtpm_mpjson_to_string(&up.data, false);
    assert_string_equal(s, "{\"1\":\"one\",\"null\":\"nil\",\"ext\":null,\"big\":\"18446744073709551615\","
                           "\"nan\":null,\"bad\":\"a\xef\xbf\xbd\xef\xbf\xbd" "b\",\"bin\":{\"$bin\":\"+/8=\"},"
                           "\"f32\":0.5}");
    g_clear_pointer(&s, g_free);
    s = vtpm_mpjson_to_string(&up.data, true);
    assert_non_null(strchr(s, '\n'));
    assert_true(g_utf8_validate(s, -1, NULL));
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);

    g_clear_pointer(&s, g_free);
    s = vtpm_mpjson_to_string(NULL, false);
    assert_string_equal(s, "null");
}

static void
test_explicit_length(void **state)
{
    const char text[] = "[1,2][garbage";
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    vtpm_error err = { 0 };
    size_t off = 0;

    msgpack_sbuffer_init(&sb);
    assert_int_equal(vtpm_mpjson_from_string(text, 5, &sb, &err), 0);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(up.data.via.array.size, 2);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

/* The CLI path end to end: JSON args with a $bin secret become a request
 * the worker's decoder accepts. */
static void
test_request_from_json(void **state)
{
    const char *args =
        "{\"instance\":{\"uuid\":\"0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001\","
        "\"flavor\":{\"name\":\"m1\",\"vcpus\":2,\"memory_mb\":1024,\"extra_specs\":{\"hw:tpm_version\":\"2.0\"}},"
        "\"image\":{\"id\":\"img\"},\"vtpm\":{\"secret\":{\"$bin\":\"c2VjcmV0\"}}}}";
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };
    g_autoptr(GBytes) body = NULL;
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_instance) inst = NULL;
    size_t len;
    const void *d;

    msgpack_sbuffer_init(&sb);
    assert_int_equal(vtpm_mpjson_from_string(args, -1, &sb, &err), 0);
    body = vtpm_proto_request_new("create", sb.data, sb.size, "r1", 0);
    msgpack_sbuffer_destroy(&sb);
    d = g_bytes_get_data(body, &len);
    assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, NULL, &err), 0);
    assert_int_equal(vtpm_proto_arg_instance(req, &inst, &err), 0);
    assert_int_equal(g_bytes_get_size(inst->secret), 6);
    assert_memory_equal(g_bytes_get_data(inst->secret, NULL), "secret", 6);
    assert_int_equal(inst->flavor->memory_mb, 1024);

    /* And the reply side reads back as JSON. */
    {
        g_autoptr(GBytes) rep = vtpm_proto_reply_fault(&(vtpm_error){ VTPM_FAULT_BUSY, "try later" });
        msgpack_unpacked up;
        size_t off = 0;
        g_autofree char *s = NULL;

        msgpack_unpacked_init(&up);
        d = g_bytes_get_data(rep, &len);
        assert_int_equal(msgpack_unpack_next(&up, d, len, &off), MSGPACK_UNPACK_SUCCESS);
        s = vtpm_mpjson_to_string(&up.data, false);
        assert_string_equal(s, "{\"v\":1,\"ok\":false,\"fault\":{\"code\":\"Busy\",\"message\":\"try later\","
                               "\"retryable\":true}}");
        msgpack_unpacked_destroy(&up);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_bin_forms),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_from_json_depth_direct),
        cmocka_unit_test(test_to_json_special),
        cmocka_unit_test(test_explicit_length),
        cmocka_unit_test(test_request_from_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
