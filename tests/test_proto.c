/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vtpm/proto.h"

#define BAD VTPM_FAULT_BAD_REQUEST

/* ---- builders ------------------------------------------------------------ */

static const char SECRET[] = "0123456789abcdef";

static GBytes *
sbuf_take(msgpack_sbuffer *sb)
{
    GBytes *b = g_bytes_new(sb->data, sb->size);

    msgpack_sbuffer_destroy(sb);
    return b;
}

static void
pack_strmap2(msgpack_packer *pk, const char *k1, const char *v1, const char *k2, const char *v2)
{
    msgpack_pack_map(pk, k2 ? 2 : 1);
    vtpm_pack_kv_str(pk, k1, v1);
    if (k2)
        vtpm_pack_kv_str(pk, k2, v2);
}

static void
pack_instance(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    vtpm_pack_kv_str(pk, "uuid", "6F9619FF-8B86-D011-B42D-00C04FC964FF");
    vtpm_pack_kv_str(pk, "name", "vm-1");

    vtpm_pack_str(pk, "flavor");
    msgpack_pack_map(pk, 4);
    vtpm_pack_kv_str(pk, "name", "m1.small");
    vtpm_pack_kv_uint(pk, "vcpus", 2);
    vtpm_pack_kv_uint(pk, "memory_mb", 2048);
    vtpm_pack_str(pk, "extra_specs");
    pack_strmap2(pk, "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-crb");

    vtpm_pack_str(pk, "image");
    msgpack_pack_map(pk, 3);
    vtpm_pack_kv_str(pk, "id", "img-1");
    vtpm_pack_kv_str(pk, "name", "ubuntu");
    vtpm_pack_str(pk, "properties");
    pack_strmap2(pk, "hw_tpm_version", "2.0", NULL, NULL);

    vtpm_pack_str(pk, "boot");
    msgpack_pack_map(pk, 3);
    vtpm_pack_kv_str(pk, "kernel", "/var/lib/vtpmd/images/vmlinuz");
    vtpm_pack_kv_str(pk, "initrd", "/var/lib/vtpmd/images/initrd.img");
    vtpm_pack_kv_str(pk, "cmdline", "console=ttyS0");

    vtpm_pack_str(pk, "vtpm");
    msgpack_pack_map(pk, 1);
    vtpm_pack_str(pk, "secret");
    msgpack_pack_bin(pk, sizeof(SECRET) - 1);
    msgpack_pack_bin_body(pk, SECRET, sizeof(SECRET) - 1);
}

static GBytes *
valid_request(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    vtpm_pack_kv_uint(&pk, "v", 1);
    vtpm_pack_kv_str(&pk, "method", "create");
    vtpm_pack_str(&pk, "args");
    msgpack_pack_map(&pk, 1);
    vtpm_pack_str(&pk, "instance");
    pack_instance(&pk);
    vtpm_pack_str(&pk, "context");
    msgpack_pack_map(&pk, 3);
    vtpm_pack_kv_str(&pk, "request_id", "req-1");
    vtpm_pack_kv_str(&pk, "user_id", "user-1");
    vtpm_pack_kv_str(&pk, "project_id", "proj-1");
    vtpm_pack_kv_uint(&pk, "deadline_ms", UINT64_C(1700000000000));
    return sbuf_take(&sb);
}

/* ---- mutation of a packed document -------------------------------------- */

enum op { OP_DEL, OP_SET, OP_LONGSTR, OP_LONGBIN };

static msgpack_object *
member(msgpack_object *map, const char *key, msgpack_zone *z, bool create)
{
    msgpack_object_kv *kv;
    uint32_t n;

    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    n = map->via.map.size;
    for (uint32_t i = 0; i < n; i++) {
        msgpack_object *k = &map->via.map.ptr[i].key;

        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    if (!create)
        return NULL;
    kv = msgpack_zone_malloc(z, (n + 1) * sizeof(*kv));
    assert_non_null(kv);
    if (n)
        memcpy(kv, map->via.map.ptr, n * sizeof(*kv));
    kv[n].key = (msgpack_object){ .type = MSGPACK_OBJECT_STR,
                                  .via.str = { .size = (uint32_t)strlen(key), .ptr = key } };
    kv[n].val = (msgpack_object){ .type = MSGPACK_OBJECT_NIL };
    map->via.map.ptr = kv;
    map->via.map.size = n + 1;
    return &kv[n].val;
}

/* Copy of @in with the value at dotted @path deleted or replaced (created
 * when missing). */
static GBytes *
mutate(GBytes *in, const char *path, enum op op, const msgpack_object *val, size_t n)
{
    g_auto(GStrv) parts = g_strsplit(path, ".", -1);
    guint np = g_strv_length(parts);
    g_autofree char *filler = NULL;
    msgpack_unpacked up;
    msgpack_object *cur;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t len, off = 0;
    const char *data = g_bytes_get_data(in, &len);

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    cur = &up.data;
    for (guint i = 0; i + 1 < np; i++) {
        cur = member(cur, parts[i], up.zone, false);
        assert_non_null(cur);
    }
    if (op == OP_DEL) {
        msgpack_object *v = member(cur, parts[np - 1], up.zone, false);
        msgpack_object_kv *kv;
        size_t idx;

        assert_non_null(v);
        kv = (msgpack_object_kv *)((char *)v - offsetof(msgpack_object_kv, val));
        idx = (size_t)(kv - cur->via.map.ptr);
        memmove(kv, kv + 1, (cur->via.map.size - idx - 1) * sizeof(*kv));
        cur->via.map.size--;
    } else {
        msgpack_object *v = member(cur, parts[np - 1], up.zone, true);

        if (op == OP_SET) {
            *v = *val;
        } else {
            /* An absolute path of @n bytes: valid wherever a path or a
             * plain string is expected, so only the length can fail. */
            filler = g_malloc(n ? n : 1);
            memset(filler, 'a', n);
            if (n)
                filler[0] = '/';
            if (op == OP_LONGSTR)
                *v = (msgpack_object){ .type = MSGPACK_OBJECT_STR,
                                       .via.str = { .size = (uint32_t)n, .ptr = filler } };
            else
                *v = (msgpack_object){ .type = MSGPACK_OBJECT_BIN,
                                       .via.bin = { .size = (uint32_t)n, .ptr = filler } };
        }
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_object(&pk, up.data), 0);
    msgpack_unpacked_destroy(&up);
    return sbuf_take(&sb);
}

#define OSTR(s) { .type = MSGPACK_OBJECT_STR, .via.str = { .size = sizeof(s) - 1, .ptr = s } }
#define OBIN(s) { .type = MSGPACK_OBJECT_BIN, .via.bin = { .size = sizeof(s) - 1, .ptr = s } }
#define OUINT(n) { .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = (n) }
#define ONEG(n) { .type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = (n) }
#define OF64(d) { .type = MSGPACK_OBJECT_FLOAT64, .via.f64 = (d) }
#define OBOOL(b) { .type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = (b) }
#define OARRAY { .type = MSGPACK_OBJECT_ARRAY }
#define OMAP { .type = MSGPACK_OBJECT_MAP }
#define ONIL { .type = MSGPACK_OBJECT_NIL }

/* Decode the request and, when that succeeds, its instance. */
static int
decode_all(GBytes *b, vtpm_error *err)
{
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_instance) inst = NULL;
    size_t len;
    const void *d = g_bytes_get_data(b, &len);
    int rc = vtpm_proto_decode_request(d, len, NULL, &req, NULL, err);

    if (rc < 0)
        return rc;
    return vtpm_proto_arg_instance(req, &inst, err);
}

typedef struct {
    const char *path;
    enum op op;
    msgpack_object val;
    size_t n;
    vtpm_fault fault;
    const char *msg; /* expected substring of the message */
} mcase;

static void
run_cases(const mcase *cases, size_t count)
{
    g_autoptr(GBytes) base = valid_request();

    for (size_t i = 0; i < count; i++) {
        const mcase *c = &cases[i];
        g_autoptr(GBytes) b = mutate(base, c->path, c->op, &c->val, c->n);
        vtpm_error err = { 0 };
        int rc = decode_all(b, &err);

        if (rc != -(int)c->fault || err.code != c->fault || !strstr(err.message, c->msg)) {
            print_error("case %zu (%s): rc %d code %d message '%s', expected %d '%s'\n", i, c->path, rc,
                        err.code, err.message, -(int)c->fault, c->msg);
            fail();
        }
    }
}

/* ---- envelope ------------------------------------------------------------ */

static void
test_limits_defaults(void **state)
{
    vtpm_proto_limits lim;

    vtpm_proto_limits_init(&lim);
    assert_int_equal(lim.max_body, 1024 * 1024);
    assert_int_equal(lim.max_depth, 16);
    assert_int_equal(lim.max_str, 64 * 1024);
    assert_int_equal(lim.max_bin, 64 * 1024);
    assert_int_equal(lim.max_container, 4096);
    assert_int_equal(lim.max_objects, 65536);
}

static void
test_valid_request_all_fields(void **state)
{
    g_autoptr(GBytes) b = valid_request();
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_instance) inst = NULL;
    g_autofree char *id = NULL;
    vtpm_error err = { 0 };
    size_t len;
    const void *d = g_bytes_get_data(b, &len);
    const void *secret;
    size_t secret_len;

    assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, &id, &err), 0);
    assert_string_equal(req->method, "create");
    assert_string_equal(req->request_id, "req-1");
    assert_string_equal(req->user_id, "user-1");
    assert_string_equal(req->project_id, "proj-1");
    assert_true(req->has_deadline);
    assert_int_equal(req->deadline_ms, UINT64_C(1700000000000));
    assert_int_equal(req->args.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(req->args.via.map.size, 1);
    assert_string_equal(id, "req-1");
    /* args borrows from the request's own copy, not from the input. */
    assert_true((const char *)req->args.via.map.ptr[0].key.via.str.ptr >= req->body &&
                (const char *)req->args.via.map.ptr[0].key.via.str.ptr < req->body + req->body_len);

    assert_int_equal(vtpm_proto_arg_instance(req, &inst, &err), 0);
    assert_string_equal(inst->uuid, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    assert_string_equal(inst->name, "vm-1");
    assert_string_equal(inst->flavor->name, "m1.small");
    assert_int_equal(inst->flavor->vcpus, 2);
    assert_int_equal(inst->flavor->memory_mb, 2048);
    assert_int_equal(g_hash_table_size(inst->flavor->extra_specs), 2);
    assert_string_equal(g_hash_table_lookup(inst->flavor->extra_specs, "hw:tpm_version"), "2.0");
    assert_string_equal(g_hash_table_lookup(inst->flavor->extra_specs, "hw:tpm_model"), "tpm-crb");
    assert_string_equal(inst->image->id, "img-1");
    assert_string_equal(inst->image->name, "ubuntu");
    assert_int_equal(g_hash_table_size(inst->image->properties), 1);
    assert_string_equal(g_hash_table_lookup(inst->image->properties, "hw_tpm_version"), "2.0");
    assert_true(inst->boot.present);
    assert_string_equal(inst->boot.kernel, "/var/lib/vtpmd/images/vmlinuz");
    assert_string_equal(inst->boot.initrd, "/var/lib/vtpmd/images/initrd.img");
    assert_string_equal(inst->boot.cmdline, "console=ttyS0");
    assert_null(inst->boot.disk);
    assert_non_null(inst->secret);
    secret = g_bytes_get_data(inst->secret, &secret_len);
    assert_int_equal(secret_len, sizeof(SECRET) - 1);
    assert_memory_equal(secret, SECRET, secret_len);

    /* The instance is a copy and outlives the request. */
    g_clear_pointer(&req, vtpm_request_free);
    assert_string_equal(inst->flavor->name, "m1.small");
}

static void
test_minimal_request(void **state)
{
    const uint8_t min[] = { 0x82, 0xa1, 'v', 0x01, 0xa6, 'm', 'e', 't', 'h', 'o', 'd', 0xa4, 'p', 'i', 'n', 'g' };
    g_autoptr(vtpm_request) req = NULL;
    char *id = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_proto_decode_request(min, sizeof(min), NULL, &req, &id, &err), 0);
    assert_null(id);
    assert_string_equal(req->method, "ping");
    assert_null(req->request_id);
    assert_null(req->user_id);
    assert_null(req->project_id);
    assert_false(req->has_deadline);
    assert_int_equal(req->args.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(req->args.via.map.size, 0);
}

static void
test_optional_instance_fields(void **state)
{
    g_autoptr(GBytes) b0 = valid_request();
    g_autoptr(GBytes) b1 = mutate(b0, "args.instance.name", OP_DEL, NULL, 0);
    g_autoptr(GBytes) b2 = mutate(b1, "args.instance.boot", OP_DEL, NULL, 0);
    g_autoptr(GBytes) b3 = mutate(b2, "args.instance.vtpm", OP_DEL, NULL, 0);
    g_autoptr(GBytes) b4 = mutate(b3, "args.instance.image.name", OP_DEL, NULL, 0);
    g_autoptr(GBytes) b5 = mutate(b4, "args.instance.image.properties", OP_DEL, NULL, 0);
    const msgpack_object nil = ONIL;
    g_autoptr(GBytes) b6 = mutate(b5, "args.instance.flavor.extra_specs", OP_SET, &nil, 0);
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_instance) inst = NULL;
    vtpm_error err = { 0 };
    size_t len;
    const void *d = g_bytes_get_data(b6, &len);

    assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, NULL, &err), 0);
    assert_int_equal(vtpm_proto_arg_instance(req, &inst, &err), 0);
    assert_null(inst->name);
    assert_false(inst->boot.present);
    assert_null(inst->boot.kernel);
    assert_null(inst->secret);
    assert_string_equal(inst->image->name, "");
    assert_non_null(inst->image->properties);
    assert_int_equal(g_hash_table_size(inst->image->properties), 0);
    assert_non_null(inst->flavor->extra_specs);
    assert_int_equal(g_hash_table_size(inst->flavor->extra_specs), 0);
}

static void
test_envelope_faults(void **state)
{
    static const mcase cases[] = {
        { "v", OP_DEL, ONIL, 0, BAD, "v: missing required key" },
        { "v", OP_SET, ONIL, 0, BAD, "v: missing required key" },
        { "v", OP_SET, OSTR("1"), 0, BAD, "v: expected integer, got str" },
        { "v", OP_SET, OF64(1.0), 0, BAD, "v: expected integer, got float64" },
        { "v", OP_SET, OBOOL(true), 0, BAD, "v: expected integer, got bool" },
        { "v", OP_SET, OUINT(2), 0, VTPM_FAULT_UNSUPPORTED_VERSION,
          "unsupported protocol version 2; this worker speaks 1" },
        { "v", OP_SET, OUINT(0), 0, VTPM_FAULT_UNSUPPORTED_VERSION, "unsupported protocol version 0" },
        { "v", OP_SET, ONEG(-1), 0, VTPM_FAULT_UNSUPPORTED_VERSION, "unsupported protocol version -1" },
        { "method", OP_DEL, ONIL, 0, BAD, "method: missing required key" },
        { "method", OP_SET, OUINT(1), 0, BAD, "method: expected str, got unsigned integer" },
        { "method", OP_SET, OSTR(""), 0, BAD, "method: must not be empty" },
        { "method", OP_SET, OSTR("Create"), 0, BAD, "method: only [a-z_] allowed" },
        { "method", OP_SET, OSTR("create-x"), 0, BAD, "method: only [a-z_] allowed" },
        { "method", OP_SET, OSTR("cre\0ate"), 0, BAD, "method: string contains a NUL byte" },
        { "method", OP_LONGSTR, ONIL, 65, BAD, "method: string of 65 bytes exceeds limit of 64" },
        { "args", OP_SET, OARRAY, 0, BAD, "args: expected map, got array" },
        { "args", OP_SET, OSTR("x"), 0, BAD, "args: expected map, got str" },
        { "context", OP_SET, OSTR("x"), 0, BAD, "context: expected map, got str" },
        { "context.request_id", OP_SET, OUINT(5), 0, BAD,
          "context.request_id: expected str, got unsigned integer" },
        { "context.user_id", OP_SET, OBIN("u"), 0, BAD, "context.user_id: expected str, got bin" },
        { "context.project_id", OP_LONGSTR, ONIL, 257, BAD,
          "context.project_id: string of 257 bytes exceeds limit of 256" },
        { "deadline_ms", OP_SET, OSTR("soon"), 0, BAD, "deadline_ms: expected unsigned integer, got str" },
        { "deadline_ms", OP_SET, ONEG(-5), 0, BAD,
          "deadline_ms: expected unsigned integer, got negative integer" },
        { "args.instance", OP_DEL, ONIL, 0, BAD, "args.instance: missing required key" },
        { "args.instance", OP_SET, OSTR("x"), 0, BAD, "args.instance: expected map, got str" },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_instance_faults(void **state)
{
    static const mcase cases[] = {
        { "args.instance.uuid", OP_DEL, ONIL, 0, BAD, "args.instance.uuid: missing required key" },
        { "args.instance.uuid", OP_SET, OUINT(7), 0, BAD, "args.instance.uuid: expected str, got unsigned integer" },
        { "args.instance.uuid", OP_SET, OSTR("not-a-uuid"), 0, BAD, "args.instance.uuid: not a UUID" },
        { "args.instance.uuid", OP_SET, OSTR("00000000-0000-0000-0000-000000000000"), 0, BAD,
          "args.instance.uuid: the nil UUID" },
        { "args.instance.name", OP_SET, OUINT(1), 0, BAD, "args.instance.name: expected str, got unsigned integer" },
        { "args.instance.name", OP_LONGSTR, ONIL, 256, BAD,
          "args.instance.name: string of 256 bytes exceeds limit of 255" },
        { "args.instance.name", OP_SET, OSTR("ab\0cd"), 0, BAD, "args.instance.name: string contains a NUL byte" },
        { "args.instance.name", OP_SET, OSTR("\xff\xfe"), 0, BAD, "args.instance.name: string is not valid UTF-8" },
        { "args.instance.name", OP_SET, OSTR("\xc0\xaf"), 0, BAD, "args.instance.name: string is not valid UTF-8" },
        { "args.instance.name", OP_SET, OSTR("caf\xc3"), 0, BAD, "args.instance.name: string is not valid UTF-8" },

        { "args.instance.flavor", OP_DEL, ONIL, 0, BAD, "args.instance.flavor: missing required key" },
        { "args.instance.flavor", OP_SET, OARRAY, 0, BAD, "args.instance.flavor: expected map, got array" },
        { "args.instance.flavor.name", OP_DEL, ONIL, 0, BAD, "args.instance.flavor.name: missing required key" },
        { "args.instance.flavor.name", OP_SET, OBOOL(false), 0, BAD, "args.instance.flavor.name: expected str, got bool" },
        { "args.instance.flavor.name", OP_SET, OSTR(""), 0, BAD, "args.instance.flavor.name: must not be empty" },
        { "args.instance.flavor.vcpus", OP_DEL, ONIL, 0, BAD, "args.instance.flavor.vcpus: missing required key" },
        { "args.instance.flavor.vcpus", OP_SET, OSTR("2"), 0, BAD,
          "args.instance.flavor.vcpus: expected unsigned integer, got str" },
        { "args.instance.flavor.vcpus", OP_SET, ONEG(-2), 0, BAD,
          "args.instance.flavor.vcpus: expected unsigned integer, got negative integer" },
        { "args.instance.flavor.vcpus", OP_SET, OF64(2.0), 0, BAD,
          "args.instance.flavor.vcpus: expected unsigned integer, got float64" },
        { "args.instance.flavor.vcpus", OP_SET, OUINT(0), 0, BAD, "args.instance.flavor.vcpus: 0 is out of range 1..1024" },
        { "args.instance.flavor.vcpus", OP_SET, OUINT(1025), 0, BAD,
          "args.instance.flavor.vcpus: 1025 is out of range 1..1024" },
        { "args.instance.flavor.memory_mb", OP_DEL, ONIL, 0, BAD, "args.instance.flavor.memory_mb: missing required key" },
        { "args.instance.flavor.memory_mb", OP_SET, OUINT(15), 0, BAD,
          "args.instance.flavor.memory_mb: 15 is out of range 16..16777216" },
        { "args.instance.flavor.memory_mb", OP_SET, OUINT(16777217), 0, BAD,
          "args.instance.flavor.memory_mb: 16777217 is out of range" },
        { "args.instance.flavor.extra_specs", OP_SET, OARRAY, 0, BAD,
          "args.instance.flavor.extra_specs: expected map, got array" },
        { "args.instance.flavor.extra_specs.hw:tpm_model", OP_SET, OUINT(3), 0, BAD,
          "args.instance.flavor.extra_specs.hw:tpm_model: expected str, got unsigned integer" },
        { "args.instance.flavor.extra_specs.hw:tpm_model", OP_LONGSTR, ONIL, 4097, BAD,
          "args.instance.flavor.extra_specs.hw:tpm_model: string of 4097 bytes exceeds limit of 4096" },

        { "args.instance.image", OP_DEL, ONIL, 0, BAD, "args.instance.image: missing required key" },
        { "args.instance.image", OP_SET, OSTR("img"), 0, BAD, "args.instance.image: expected map, got str" },
        { "args.instance.image.id", OP_DEL, ONIL, 0, BAD, "args.instance.image.id: missing required key" },
        { "args.instance.image.id", OP_SET, OUINT(9), 0, BAD, "args.instance.image.id: expected str, got unsigned integer" },
        { "args.instance.image.id", OP_SET, OSTR(""), 0, BAD, "args.instance.image.id: must not be empty" },
        { "args.instance.image.name", OP_SET, OMAP, 0, BAD, "args.instance.image.name: expected str, got map" },
        { "args.instance.image.properties", OP_SET, OSTR("p"), 0, BAD,
          "args.instance.image.properties: expected map, got str" },
        { "args.instance.image.properties.hw_tpm_version", OP_SET, OBOOL(true), 0, BAD,
          "args.instance.image.properties.hw_tpm_version: expected str, got bool" },

        { "args.instance.boot", OP_SET, OSTR("disk"), 0, BAD, "args.instance.boot: expected map, got str" },
        { "args.instance.boot", OP_SET, OMAP, 0, BAD, "args.instance.boot: one of kernel or disk is required" },
        { "args.instance.boot.kernel", OP_DEL, ONIL, 0, BAD, "args.instance.boot: one of kernel or disk is required" },
        { "args.instance.boot.kernel", OP_SET, OSTR("vmlinuz"), 0, BAD,
          "args.instance.boot.kernel: must be an absolute path" },
        { "args.instance.boot.kernel", OP_SET, OUINT(1), 0, BAD,
          "args.instance.boot.kernel: expected str, got unsigned integer" },
        { "args.instance.boot.kernel", OP_LONGSTR, ONIL, 4097, BAD,
          "args.instance.boot.kernel: string of 4097 bytes exceeds limit of 4096" },
        { "args.instance.boot.initrd", OP_SET, OSTR("initrd.img"), 0, BAD,
          "args.instance.boot.initrd: must be an absolute path" },
        { "args.instance.boot.cmdline", OP_LONGSTR, ONIL, 4097, BAD,
          "args.instance.boot.cmdline: string of 4097 bytes exceeds limit of 4096" },
        { "args.instance.boot.disk", OP_SET, OSTR("/images/disk.qcow2"), 0, BAD,
          "args.instance.boot: kernel and disk are mutually exclusive" },

        { "args.instance.vtpm", OP_SET, OBIN("s"), 0, BAD, "args.instance.vtpm: expected map, got bin" },
        { "args.instance.vtpm.secret", OP_SET, OSTR("s"), 0, BAD, "args.instance.vtpm.secret: expected bin, got str" },
        { "args.instance.vtpm.secret", OP_SET, OBIN(""), 0, BAD, "args.instance.vtpm.secret: must not be empty" },
        { "args.instance.vtpm.secret", OP_LONGBIN, ONIL, 4097, BAD,
          "args.instance.vtpm.secret: bin of 4097 bytes exceeds limit of 4096" },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_unknown_keys_ignored(void **state)
{
    static const char *const paths[] = {
        "future", "context.trace_id", "args.other", "args.instance.future", "args.instance.flavor.future",
        "args.instance.image.future", "args.instance.boot.future", "args.instance.vtpm.future",
    };
    const msgpack_object val = OARRAY;
    g_autoptr(GBytes) b = valid_request();

    for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) {
        GBytes *next = mutate(b, paths[i], OP_SET, &val, 0);
        vtpm_error err = { 0 };

        g_bytes_unref(b);
        b = next;
        if (decode_all(b, &err) != 0) {
            print_error("after adding %s: %s\n", paths[i], err.message);
            fail();
        }
    }
}

static void
test_request_id_on_failure(void **state)
{
    const msgpack_object v2 = OUINT(2), bad_method = OUINT(3), bad_rid = OSTR("\xff");
    g_autoptr(GBytes) base = valid_request();
    g_autoptr(GBytes) b1 = mutate(base, "v", OP_SET, &v2, 0);
    g_autoptr(GBytes) b2 = mutate(base, "method", OP_SET, &bad_method, 0);
    g_autoptr(GBytes) b3 = mutate(b1, "context.request_id", OP_SET, &bad_rid, 0);
    vtpm_request *req = NULL;
    vtpm_error err = { 0 };
    size_t len;
    const void *d;

    {
        g_autofree char *id = NULL;

        d = g_bytes_get_data(b1, &len);
        assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, &id, &err),
                         -(int)VTPM_FAULT_UNSUPPORTED_VERSION);
        assert_null(req);
        assert_string_equal(id, "req-1");
    }
    {
        g_autofree char *id = NULL;

        d = g_bytes_get_data(b2, &len);
        assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, &id, &err), -(int)BAD);
        assert_null(req);
        assert_string_equal(id, "req-1");
    }
    {
        g_autofree char *id = NULL;

        /* An unusable request_id is not passed on; the fault is about v. */
        d = g_bytes_get_data(b3, &len);
        assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, &id, &err),
                         -(int)VTPM_FAULT_UNSUPPORTED_VERSION);
        assert_null(id);
    }
    {
        g_autofree char *id = NULL;

        /* Undecodable: nothing to report. */
        d = g_bytes_get_data(base, &len);
        assert_int_equal(vtpm_proto_decode_request(d, len - 1, NULL, &req, &id, &err), -(int)BAD);
        assert_null(id);
    }
}

static void
test_top_level_not_map(void **state)
{
    const uint8_t arr[] = { 0x91, 0x01 };
    const uint8_t str[] = { 0xa1, 'x' };
    vtpm_request *req = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_proto_decode_request(arr, sizeof(arr), NULL, &req, NULL, &err), -(int)BAD);
    assert_string_equal(err.message, "request: expected map, got array");
    assert_int_equal(vtpm_proto_decode_request(str, sizeof(str), NULL, &req, NULL, &err), -(int)BAD);
    assert_string_equal(err.message, "request: expected map, got str");
    assert_null(req);
}

/* ---- structural check ---------------------------------------------------- */

static int
check(const void *d, size_t n, vtpm_error *err)
{
    vtpm_error_clear(err);
    return vtpm_proto_check(d, n, NULL, err);
}

static void
test_check_all_formats(void **state)
{
    /* One array holding every accepted format. */
    const uint8_t all[] = {
        0xdc, 0x00, 0x1c,                               /* array16 of 28 */
        0x05, 0xe0, 0xc0, 0xc2, 0xc3,                   /* fixints, nil, bools */
        0xcc, 0xff, 0xcd, 0xff, 0xff, 0xce, 0, 0, 0, 1, /* uint8/16/32 */
        0xcf, 0, 0, 0, 0, 0, 0, 0, 1,                   /* uint64 */
        0xd0, 0x80, 0xd1, 0x80, 0, 0xd2, 0x80, 0, 0, 0, /* int8/16/32 */
        0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0,                /* int64 */
        0xca, 0x3f, 0x80, 0, 0,                         /* float32 */
        0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0,             /* float64 */
        0xa2, 'h', 'i', 0xd9, 0x01, 'a', 0xda, 0, 1, 'b', 0xdb, 0, 0, 0, 1, 'c', /* str */
        0xc4, 0x01, 0x00, 0xc5, 0, 1, 0x00, 0xc6, 0, 0, 0, 1, 0x00, /* bin */
        0x90, 0xdc, 0, 1, 0x01, 0xdd, 0, 0, 0, 1, 0x01, /* arrays */
        0x80, 0xde, 0, 1, 0x01, 0x02, 0xdf, 0, 0, 0, 1, 0x01, 0x02, /* maps */
    };
    vtpm_error err;
    msgpack_unpacked up;
    size_t off = 0;

    assert_int_equal(check(all, sizeof(all), &err), 0);
    /* msgpack-c agrees on the layout. */
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, (const char *)all, sizeof(all), &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sizeof(all));
    assert_int_equal(up.data.via.array.size, 28);
    msgpack_unpacked_destroy(&up);
}

static void
test_check_rejects_ext_and_reserved(void **state)
{
    static const uint8_t exts[] = { 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8 };
    vtpm_error err;

    for (size_t i = 0; i < G_N_ELEMENTS(exts); i++) {
        /* {"a": <ext with ample payload>} */
        uint8_t b[32] = { 0x81, 0xa1, 'a', exts[i], 0x01, 0x01 };
        char want[64];

        assert_int_equal(check(b, sizeof(b), &err), -(int)BAD);
        g_snprintf(want, sizeof(want), "ext type 0x%02x at offset 3 is not allowed", exts[i]);
        assert_string_equal(err.message, want);
    }
    {
        const uint8_t b[] = { 0x91, 0xc1 };

        assert_int_equal(check(b, sizeof(b), &err), -(int)BAD);
        assert_string_equal(err.message, "reserved byte 0xc1 at offset 1");
    }
}

static void
test_check_huge_headers(void **state)
{
    const uint8_t map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    const uint8_t arr32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
    const uint8_t str32[] = { 0xdb, 0xff, 0xff, 0xff, 0xff };
    const uint8_t bin32[] = { 0xc6, 0xff, 0xff, 0xff, 0xff };
    vtpm_proto_limits lim;
    vtpm_request *req = NULL;
    vtpm_error err;

    assert_int_equal(check(map32, sizeof(map32), &err), -(int)BAD);
    assert_string_equal(err.message, "map of 4294967295 entries at offset 0 exceeds limit of 4096");
    assert_int_equal(check(arr32, sizeof(arr32), &err), -(int)BAD);
    assert_string_equal(err.message, "array of 4294967295 entries at offset 0 exceeds limit of 4096");
    assert_int_equal(check(str32, sizeof(str32), &err), -(int)BAD);
    assert_string_equal(err.message, "str of 4294967295 bytes at offset 0 exceeds limit of 65536");
    assert_int_equal(check(bin32, sizeof(bin32), &err), -(int)BAD);
    assert_string_equal(err.message, "bin of 4294967295 bytes at offset 0 exceeds limit of 65536");

    /* Even with no count limits, a header may not claim more than remains. */
    vtpm_proto_limits_init(&lim);
    lim.max_container = SIZE_MAX;
    lim.max_str = SIZE_MAX;
    lim.max_bin = SIZE_MAX;
    assert_int_equal(vtpm_proto_check(map32, sizeof(map32), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "map at offset 0 claims 4294967295 entries but only 0 bytes remain");
    assert_int_equal(vtpm_proto_check(arr32, sizeof(arr32), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "array at offset 0 claims 4294967295 entries but only 0 bytes remain");
    assert_int_equal(vtpm_proto_check(str32, sizeof(str32), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "truncated at offset 0");
    assert_int_equal(vtpm_proto_check(bin32, sizeof(bin32), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "truncated at offset 0");
    /* A map of n entries needs 2n objects: 3 bytes cannot hold 2 entries. */
    {
        const uint8_t m[] = { 0x82, 0x01, 0x02, 0x03 };

        assert_int_equal(vtpm_proto_check(m, sizeof(m), &lim, &err), -(int)BAD);
        assert_string_equal(err.message, "map at offset 0 claims 2 entries but only 3 bytes remain");
    }
    assert_int_equal(vtpm_proto_decode_request(map32, sizeof(map32), &lim, &req, NULL, &err), -(int)BAD);
    assert_null(req);
}

static void
test_check_depth(void **state)
{
    uint8_t deep[1000];
    vtpm_proto_limits lim;
    vtpm_request *req = NULL;
    vtpm_error err;

    memset(deep, 0x91, sizeof(deep));
    deep[sizeof(deep) - 1] = 0x90;
    assert_int_equal(check(deep, sizeof(deep), &err), -(int)BAD);
    assert_string_equal(err.message, "array at offset 16 nests deeper than limit of 16");
    assert_int_equal(vtpm_proto_decode_request(deep, sizeof(deep), NULL, &req, NULL, &err), -(int)BAD);

    /* 16 levels are fine, the 17th is not. */
    assert_int_equal(check(deep + sizeof(deep) - 16, 16, &err), 0);
    assert_int_equal(check(deep + sizeof(deep) - 17, 17, &err), -(int)BAD);

    /* msgpack-c cannot unpack more than 32 levels, so a larger configured
     * limit is capped rather than let through to fail inside msgpack-c. */
    vtpm_proto_limits_init(&lim);
    lim.max_depth = 2000;
    {
        uint8_t m[3 + sizeof(deep)] = { 0x81, 0xa1, 'v' };

        memcpy(m + 3, deep, sizeof(deep));
        assert_int_equal(vtpm_proto_check(m, sizeof(m), &lim, &err), -(int)BAD);
        assert_string_equal(err.message, "array at offset 34 nests deeper than limit of 32");
        /* {v: 31 arrays}: 32 levels decode; the version fault proves it. */
        memcpy(m + 3, deep + sizeof(deep) - 31, 31);
        assert_int_equal(vtpm_proto_decode_request(m, 3 + 31, &lim, &req, NULL, &err), -(int)BAD);
        assert_string_equal(err.message, "v: expected integer, got array");
        memcpy(m + 3, deep + sizeof(deep) - 32, 32);
        assert_int_equal(vtpm_proto_decode_request(m, 3 + 32, &lim, &req, NULL, &err), -(int)BAD);
        assert_string_equal(err.message, "array at offset 34 nests deeper than limit of 32");
        assert_null(req);
    }
}

static void
test_check_body_size(void **state)
{
    const size_t n = 10 * 1024 * 1024;
    g_autofree uint8_t *big = g_malloc0(n);
    vtpm_request *req = NULL;
    vtpm_error err;

    big[0] = 0xc6; /* bin32 of the rest: well-formed but too large */
    big[1] = (uint8_t)((n - 5) >> 24);
    big[2] = (uint8_t)((n - 5) >> 16);
    big[3] = (uint8_t)((n - 5) >> 8);
    big[4] = (uint8_t)(n - 5);
    assert_int_equal(check(big, n, &err), -(int)BAD);
    assert_string_equal(err.message, "body of 10485760 bytes exceeds limit of 1048576");
    assert_int_equal(vtpm_proto_decode_request(big, n, NULL, &req, NULL, &err), -(int)BAD);
    assert_null(req);
}

static void
test_check_objects_limit(void **state)
{
    const uint8_t arr[] = { 0x9a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
    vtpm_proto_limits lim;
    vtpm_error err;

    vtpm_proto_limits_init(&lim);
    lim.max_objects = 11;
    assert_int_equal(vtpm_proto_check(arr, sizeof(arr), &lim, &err), 0);
    lim.max_objects = 10;
    assert_int_equal(vtpm_proto_check(arr, sizeof(arr), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "object at offset 10 exceeds limit of 10 objects");

    lim.max_objects = 65536;
    lim.max_container = 9;
    assert_int_equal(vtpm_proto_check(arr, sizeof(arr), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "array of 10 entries at offset 0 exceeds limit of 9");
}

static void
test_check_str_limits(void **state)
{
    vtpm_proto_limits lim;
    vtpm_error err;
    uint8_t s[12] = { 0xab }; /* fixstr of 11 */

    memset(s + 1, 'x', 11);
    vtpm_proto_limits_init(&lim);
    lim.max_str = 11;
    assert_int_equal(vtpm_proto_check(s, sizeof(s), &lim, &err), 0);
    lim.max_str = 10;
    assert_int_equal(vtpm_proto_check(s, sizeof(s), &lim, &err), -(int)BAD);
    assert_string_equal(err.message, "str of 11 bytes at offset 0 exceeds limit of 10");
}

static void
test_check_trailing_and_empty(void **state)
{
    g_autoptr(GBytes) b = valid_request();
    size_t len;
    const uint8_t *d = g_bytes_get_data(b, &len);
    g_autofree uint8_t *two = g_malloc(len * 2);
    vtpm_request *req = NULL;
    vtpm_error err;
    char want[80];

    memcpy(two, d, len);
    memcpy(two + len, d, len);
    assert_int_equal(check(two, len + 1, &err), -(int)BAD);
    g_snprintf(want, sizeof(want), "1 trailing bytes at offset %zu", len);
    assert_string_equal(err.message, want);
    assert_int_equal(vtpm_proto_decode_request(two, len * 2, NULL, &req, NULL, &err), -(int)BAD);
    assert_non_null(strstr(err.message, "trailing bytes"));
    assert_null(req);

    assert_int_equal(check(NULL, 0, &err), -(int)BAD);
    assert_string_equal(err.message, "truncated at offset 0");
}

static void
test_every_truncation(void **state)
{
    g_autoptr(GBytes) b = valid_request();
    size_t len;
    const uint8_t *d = g_bytes_get_data(b, &len);

    for (size_t i = 0; i < len; i++) {
        /* A heap copy of exactly i bytes lets ASan catch any overread. */
        g_autofree uint8_t *cut = g_memdup2(d, i ? i : 1);
        vtpm_request *req = NULL;
        char *id = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(vtpm_proto_decode_request(cut, i, NULL, &req, &id, &err), -(int)BAD);
        assert_null(req);
        assert_null(id);
        assert_true(strstr(err.message, "truncated at offset") || strstr(err.message, "claims"));
    }
}

static void
assert_clean_failure(int rc, const vtpm_error *err)
{
    assert_true(rc == 0 || rc == -(int)BAD || rc == -(int)VTPM_FAULT_UNSUPPORTED_VERSION);
    if (rc < 0) {
        assert_int_equal(-(int)err->code, rc);
        assert_true(err->message[0] != '\0');
        assert_true(g_utf8_validate(err->message, -1, NULL));
    }
}

static void
decode_hostile(const uint8_t *d, size_t n)
{
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_reply) rep = NULL;
    g_autofree char *id = NULL;
    vtpm_error err = { 0 };
    int rc = vtpm_proto_decode_request(d, n, NULL, &req, &id, &err);

    assert_clean_failure(rc, &err);
    if (rc == 0) {
        g_autoptr(vtpm_instance) inst = NULL;

        rc = vtpm_proto_arg_instance(req, &inst, &err);
        assert_clean_failure(rc, &err);
        assert_true(rc == 0 || rc == -(int)BAD);
    }
    rc = vtpm_proto_decode_reply(d, n, NULL, &rep, &err);
    assert_clean_failure(rc, &err);
}

static void
test_random_bytes(void **state)
{
    g_autoptr(GRand) rnd = g_rand_new_with_seed(20240601);
    uint8_t buf[96];

    for (int it = 0; it < 4000; it++) {
        size_t n = (size_t)g_rand_int_range(rnd, 0, sizeof(buf) + 1);
        g_autofree uint8_t *heap = NULL;

        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)g_rand_int(rnd);
        /* Bias towards container headers so that nesting gets exercised. */
        if (n && g_rand_boolean(rnd))
            buf[0] = (uint8_t)(0x80 | g_rand_int_range(rnd, 0, 16));
        heap = g_memdup2(buf, n ? n : 1);
        decode_hostile(heap, n);
    }
}

static void
test_mutated_requests(void **state)
{
    g_autoptr(GRand) rnd = g_rand_new_with_seed(7);
    g_autoptr(GBytes) b = valid_request();
    size_t len;
    const uint8_t *d = g_bytes_get_data(b, &len);
    int ok = 0;

    for (int it = 0; it < 4000; it++) {
        g_autofree uint8_t *m = g_memdup2(d, len);
        int flips = g_rand_int_range(rnd, 1, 5);
        size_t n = len;

        for (int f = 0; f < flips; f++)
            m[g_rand_int_range(rnd, 0, (gint32)len)] = (uint8_t)g_rand_int(rnd);
        if (g_rand_int_range(rnd, 0, 4) == 0)
            n = (size_t)g_rand_int_range(rnd, 0, (gint32)len);
        decode_hostile(m, n);
        {
            vtpm_request *req = NULL;
            vtpm_error err;

            if (vtpm_proto_decode_request(m, n, NULL, &req, NULL, &err) == 0)
                ok++;
            vtpm_request_free(req);
        }
    }
    /* The mutations must not all be trivially rejected at the first byte. */
    assert_true(ok > 0);
}

/* ---- accessors ----------------------------------------------------------- */

static msgpack_object
unpack_doc(GBytes *b, msgpack_unpacked *up)
{
    size_t len, off = 0;
    const char *d = g_bytes_get_data(b, &len);

    msgpack_unpacked_init(up);
    assert_int_equal(msgpack_unpack_next(up, d, len, &off), MSGPACK_UNPACK_SUCCESS);
    return up->data;
}

static GBytes *
accessor_doc(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    vtpm_pack_kv_bool(&pk, "power_on", true);
    vtpm_pack_kv_str(&pk, "name", "abc");
    vtpm_pack_kv_uint(&pk, "count", 42);
    vtpm_pack_str(&pk, "nothing");
    msgpack_pack_nil(&pk);
    vtpm_pack_str(&pk, "blob");
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\x00\x01\x02", 3);
    vtpm_pack_str(&pk, "neg");
    msgpack_pack_int64(&pk, -3);
    vtpm_pack_str(&pk, "sub");
    pack_strmap2(&pk, "a", "1", "b", "2");
    vtpm_pack_str(&pk, "dup");
    msgpack_pack_map(&pk, 2);
    vtpm_pack_kv_str(&pk, "k", "1");
    vtpm_pack_kv_str(&pk, "k", "2");
    return sbuf_take(&sb);
}

static void
test_accessors(void **state)
{
    g_autoptr(GBytes) b = accessor_doc();
    msgpack_unpacked up;
    msgpack_object m = unpack_doc(b, &up);
    vtpm_error err;
    bool bv = false;
    uint64_t uv = 7;
    char *sv = (char *)"untouched";
    GBytes *bin = NULL;
    const msgpack_object *sub = NULL;
    GHashTable *tab = NULL;

    assert_int_equal(vtpm_proto_get_bool(&m, "args", "power_on", true, false, &bv, &err), 0);
    assert_true(bv);
    assert_int_equal(vtpm_proto_get_bool(&m, "args", "name", true, false, &bv, &err), -(int)BAD);
    assert_string_equal(err.message, "args.name: expected bool, got str");
    assert_int_equal(vtpm_proto_get_bool(&m, "args", "absent", false, true, &bv, &err), 0);
    assert_true(bv);
    assert_int_equal(vtpm_proto_get_bool(&m, "args", "nothing", true, false, &bv, &err), -(int)BAD);
    assert_string_equal(err.message, "args.nothing: missing required key");

    assert_int_equal(vtpm_proto_get_uint(&m, "args", "count", true, 0, &uv, &err), 0);
    assert_int_equal(uv, 42);
    uv = 7;
    assert_int_equal(vtpm_proto_get_uint(&m, "args", "neg", true, 0, &uv, &err), -(int)BAD);
    assert_string_equal(err.message, "args.neg: expected unsigned integer, got negative integer");
    assert_int_equal(uv, 7);
    assert_int_equal(vtpm_proto_get_uint(&m, "args", "nothing", false, 99, &uv, &err), 0);
    assert_int_equal(uv, 99);

    assert_int_equal(vtpm_proto_get_str(&m, "args", "name", true, 2, &sv, &err), -(int)BAD);
    assert_string_equal(err.message, "args.name: string of 3 bytes exceeds limit of 2");
    assert_string_equal(sv, "untouched");
    assert_int_equal(vtpm_proto_get_str(&m, "args", "name", true, 3, &sv, &err), 0);
    assert_string_equal(sv, "abc");
    g_free(sv);
    assert_int_equal(vtpm_proto_get_str(&m, NULL, "absent", false, 3, &sv, &err), 0);
    assert_null(sv);
    assert_int_equal(vtpm_proto_get_str(&m, NULL, "absent", true, 3, &sv, &err), -(int)BAD);
    assert_string_equal(err.message, "absent: missing required key");

    assert_int_equal(vtpm_proto_get_bin(&m, "args", "blob", true, 3, &bin, &err), 0);
    assert_int_equal(g_bytes_get_size(bin), 3);
    assert_memory_equal(g_bytes_get_data(bin, NULL), "\x00\x01\x02", 3);
    g_bytes_unref(bin);
    bin = NULL;
    assert_int_equal(vtpm_proto_get_bin(&m, "args", "blob", true, 2, &bin, &err), -(int)BAD);
    assert_string_equal(err.message, "args.blob: bin of 3 bytes exceeds limit of 2");
    assert_int_equal(vtpm_proto_get_bin(&m, "args", "name", true, 64, &bin, &err), -(int)BAD);
    assert_string_equal(err.message, "args.name: expected bin, got str");
    assert_null(bin);

    assert_int_equal(vtpm_proto_get_map(&m, "args", "sub", true, &sub, &err), 0);
    assert_non_null(sub);
    assert_int_equal(sub->via.map.size, 2);
    assert_int_equal(vtpm_proto_get_map(&m, "args", "count", true, &sub, &err), -(int)BAD);
    assert_string_equal(err.message, "args.count: expected map, got unsigned integer");
    assert_int_equal(vtpm_proto_get_map(&m, "args", "nothing", false, &sub, &err), 0);
    assert_null(sub);

    assert_int_equal(vtpm_proto_get_strmap(&m, "args", "sub", true, &tab, &err), 0);
    assert_int_equal(g_hash_table_size(tab), 2);
    assert_string_equal(g_hash_table_lookup(tab, "b"), "2");
    g_hash_table_unref(tab);
    tab = NULL;
    assert_int_equal(vtpm_proto_get_strmap(&m, "args", "dup", true, &tab, &err), -(int)BAD);
    assert_string_equal(err.message, "args.dup.k: duplicate key");
    assert_null(tab);
    assert_int_equal(vtpm_proto_get_strmap(&m, "args", "absent", false, &tab, &err), 0);
    assert_non_null(tab);
    assert_int_equal(g_hash_table_size(tab), 0);
    g_hash_table_unref(tab);

    assert_null(vtpm_proto_map_get(&m, "nothing"));
    assert_null(vtpm_proto_map_get(&m, "absent"));
    assert_non_null(vtpm_proto_map_get(&m, "count"));
    assert_null(vtpm_proto_map_get(vtpm_proto_map_get(&m, "count"), "x"));
    assert_null(vtpm_proto_map_get(NULL, "x"));

    /* Looking into something that is not a map names it. */
    assert_int_equal(vtpm_proto_get_uint(vtpm_proto_map_get(&m, "name"), "args.name", "x", true, 0, &uv, &err),
                     -(int)BAD);
    assert_string_equal(err.message, "args.name: expected map, got str");
    msgpack_unpacked_destroy(&up);
}

static void
test_strmap_limits(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    g_autofree char *longkey = g_strnfill(256, 'k');
    g_autoptr(GBytes) b = NULL;
    msgpack_unpacked up;
    msgpack_object m;
    GHashTable *tab = NULL;
    vtpm_error err;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    vtpm_pack_str(&pk, "intkey"); /* {1: "x"} */
    msgpack_pack_map(&pk, 1);
    msgpack_pack_uint64(&pk, 1);
    vtpm_pack_str(&pk, "x");
    vtpm_pack_str(&pk, "longkey");
    pack_strmap2(&pk, longkey, "v", NULL, NULL);
    vtpm_pack_str(&pk, "many");
    msgpack_pack_map(&pk, 257);
    for (int i = 0; i < 257; i++) {
        char k[16];

        g_snprintf(k, sizeof(k), "k%d", i);
        vtpm_pack_kv_str(&pk, k, "v");
    }
    vtpm_pack_str(&pk, "ctl"); /* control bytes in a key are escaped in messages */
    msgpack_pack_map(&pk, 1);
    vtpm_pack_str(&pk, "a\nb");
    msgpack_pack_true(&pk);
    b = sbuf_take(&sb);
    m = unpack_doc(b, &up);

    assert_int_equal(vtpm_proto_get_strmap(&m, "x", "intkey", true, &tab, &err), -(int)BAD);
    assert_string_equal(err.message, "x.intkey: key of entry 0: expected str, got unsigned integer");
    assert_int_equal(vtpm_proto_get_strmap(&m, "x", "longkey", true, &tab, &err), -(int)BAD);
    assert_string_equal(err.message, "x.longkey: key of entry 0: string of 256 bytes exceeds limit of 255");
    assert_int_equal(vtpm_proto_get_strmap(&m, "x", "many", true, &tab, &err), -(int)BAD);
    assert_string_equal(err.message, "x.many: 257 entries exceed limit of 256");
    assert_int_equal(vtpm_proto_get_strmap(&m, "x", "ctl", true, &tab, &err), -(int)BAD);
    assert_string_equal(err.message, "x.ctl.a\\nb: expected str, got bool");
    assert_null(tab);
    msgpack_unpacked_destroy(&up);
}

/* ---- instance details ---------------------------------------------------- */

static void
test_parse_uuid(void **state)
{
    static const char *const bad[] = {
        "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
        "6f9619ff8b86d011b42d00c04fc964ff",
        "6f9619ff-8b86-d011-b42d-00c04fc964f",
        "6f9619ff-8b86-d011-b42d-00c04fc964ff ",
        " 6f9619ff-8b86-d011-b42d-00c04fc964f",
        "6f9619ff-8b86-d011-b42d-00c04fc964fg",
        "6f9619f-f8b86-d011-b42d-00c04fc964ff",
        "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "",
    };
    char out[37] = "sentinel";
    vtpm_error err;

    assert_int_equal(vtpm_proto_parse_uuid("6F9619FF-8B86-D011-B42D-00C04FC964FF", "x.uuid", out, &err), 0);
    assert_string_equal(out, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    assert_int_equal(vtpm_proto_parse_uuid("0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001", "x.uuid", out, &err), 0);
    assert_string_equal(out, "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001");

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        strcpy(out, "sentinel");
        assert_int_equal(vtpm_proto_parse_uuid(bad[i], "x.uuid", out, &err), -(int)BAD);
        assert_string_equal(err.message, "x.uuid: not a UUID in canonical 8-4-4-4-12 hex form");
        assert_string_equal(out, "sentinel");
    }
    assert_int_equal(vtpm_proto_parse_uuid("00000000-0000-0000-0000-000000000000", "x.uuid", out, &err), -(int)BAD);
    assert_string_equal(err.message, "x.uuid: the nil UUID is not a valid instance UUID");
    assert_string_equal(out, "sentinel");
}

/* Digests vtpmd writes and reads back: exactly so many lower-case hex
 * digits, nothing else. */
static void
test_is_lower_hex(void **state)
{
    static const char *const bad[] = {
        "0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg",
        "0123456789abcde ", " 123456789abcdef", "", "0x23456789abcdef",
    };

    assert_true(vtpm_proto_is_lower_hex("0123456789abcdef", 16));
    assert_true(vtpm_proto_is_lower_hex("", 0));
    assert_false(vtpm_proto_is_lower_hex(NULL, 0));
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
        assert_false(vtpm_proto_is_lower_hex(bad[i], 16));
}

/* Host names become part of a libvirt URI (migration_uri_template): a
 * request's dest_host, and an archive manifest's secret_host. */
static void
test_check_host(void **state)
{
    static const char *const good[] = { "compute-b", "host_2.example.org", "10.0.0.2",
                                        "fe80::1", "a" };
    static const struct {
        const char *h, *why;
    } bad[] = {
        { "", "x.host: 1..255 characters" },
        { "b/system?socket=/tmp/evil", "x.host: character 0x2f not allowed in a host name" },
        { "b?no_verify=1", "x.host: character 0x3f not allowed in a host name" },
        { "user@b", "x.host: character 0x40 not allowed in a host name" },
        { "b%2f", "x.host: character 0x25 not allowed in a host name" },
        { "../b", "x.host: character 0x2f not allowed in a host name" },
        { "b c", "x.host: character 0x20 not allowed in a host name" },
        { "b\nc", "x.host: character 0x0a not allowed in a host name" },
        { "[fe80::1]", "x.host: character 0x5b not allowed in a host name" },
        { "b'\"<&>", "x.host: character 0x27 not allowed in a host name" },
        { "h\xc3\xa9", "x.host: character 0xc3 not allowed in a host name" },
    };
    g_autofree char *longest = g_strnfill(255, 'h'), *too_long = g_strnfill(256, 'h');
    vtpm_error err = { 0 };

    for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
        assert_int_equal(vtpm_proto_check_host(good[i], "x.host", &err), 0);
    assert_int_equal(vtpm_proto_check_host(longest, "x.host", &err), 0);
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        assert_int_equal(vtpm_proto_check_host(bad[i].h, "x.host", &err), -(int)BAD);
        assert_string_equal(err.message, bad[i].why);
    }
    assert_int_equal(vtpm_proto_check_host(too_long, "x.host", &err), -(int)BAD);
    assert_string_equal(err.message, "x.host: 1..255 characters");
    assert_int_equal(vtpm_proto_check_host(NULL, "x.host", &err), -(int)BAD);
}

static int
decode_with(const char *path, enum op op, const msgpack_object *val, size_t n, vtpm_instance **out,
            vtpm_error *err)
{
    g_autoptr(GBytes) base = valid_request();
    g_autoptr(GBytes) b = mutate(base, path, op, val, n);
    g_autoptr(vtpm_request) req = NULL;
    size_t len;
    const void *d = g_bytes_get_data(b, &len);
    int rc = vtpm_proto_decode_request(d, len, NULL, &req, NULL, err);

    if (rc < 0)
        return rc;
    return vtpm_proto_arg_instance(req, out, err);
}

static void
test_boot_variants(void **state)
{
    g_autoptr(vtpm_instance) inst = NULL;
    vtpm_error err;
    const msgpack_object kernel_only = {
        .type = MSGPACK_OBJECT_MAP,
        .via.map = { .size = 1,
                     .ptr = (msgpack_object_kv[]){ { .key = OSTR("kernel"), .val = OSTR("/k") } } },
    };
    const msgpack_object disk_only = {
        .type = MSGPACK_OBJECT_MAP,
        .via.map = { .size = 1, .ptr = (msgpack_object_kv[]){ { .key = OSTR("disk"), .val = OSTR("/d.img") } } },
    };
    const msgpack_object disk_cmdline = {
        .type = MSGPACK_OBJECT_MAP,
        .via.map = { .size = 2,
                     .ptr = (msgpack_object_kv[]){ { .key = OSTR("disk"), .val = OSTR("/d.img") },
                                                   { .key = OSTR("cmdline"), .val = OSTR("quiet") } } },
    };
    const msgpack_object disk_rel = {
        .type = MSGPACK_OBJECT_MAP,
        .via.map = { .size = 1, .ptr = (msgpack_object_kv[]){ { .key = OSTR("disk"), .val = OSTR("d.img") } } },
    };

    assert_int_equal(decode_with("args.instance.boot", OP_SET, &kernel_only, 0, &inst, &err), 0);
    assert_true(inst->boot.present);
    assert_string_equal(inst->boot.kernel, "/k");
    assert_null(inst->boot.initrd);
    assert_null(inst->boot.cmdline);
    assert_null(inst->boot.disk);
    g_clear_pointer(&inst, vtpm_instance_free);

    assert_int_equal(decode_with("args.instance.boot", OP_SET, &disk_only, 0, &inst, &err), 0);
    assert_true(inst->boot.present);
    assert_null(inst->boot.kernel);
    assert_string_equal(inst->boot.disk, "/d.img");
    g_clear_pointer(&inst, vtpm_instance_free);

    assert_int_equal(decode_with("args.instance.boot", OP_SET, &disk_cmdline, 0, &inst, &err), -(int)BAD);
    assert_string_equal(err.message, "args.instance.boot: initrd and cmdline require kernel, not disk");
    assert_null(inst);
    assert_int_equal(decode_with("args.instance.boot", OP_SET, &disk_rel, 0, &inst, &err), -(int)BAD);
    assert_string_equal(err.message, "args.instance.boot.disk: must be an absolute path");

    /* Exactly at the limits. */
    assert_int_equal(decode_with("args.instance.boot.cmdline", OP_LONGSTR, NULL, 4096, &inst, &err), 0);
    assert_int_equal(strlen(inst->boot.cmdline), 4096);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.boot.kernel", OP_LONGSTR, NULL, 4096, &inst, &err), 0);
    assert_int_equal(strlen(inst->boot.kernel), 4096);
}

static void
test_secret_and_ranges(void **state)
{
    g_autoptr(vtpm_instance) inst = NULL;
    vtpm_error err;
    const msgpack_object one = OUINT(1), max_cpu = OUINT(1024), min_mem = OUINT(16), max_mem = OUINT(16777216);

    assert_int_equal(decode_with("args.instance.vtpm.secret", OP_LONGBIN, NULL, 4096, &inst, &err), 0);
    assert_int_equal(g_bytes_get_size(inst->secret), 4096);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.vtpm.secret", OP_LONGBIN, NULL, 1, &inst, &err), 0);
    assert_int_equal(g_bytes_get_size(inst->secret), 1);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.vtpm.secret", OP_DEL, NULL, 0, &inst, &err), 0);
    assert_null(inst->secret);
    g_clear_pointer(&inst, vtpm_instance_free);

    assert_int_equal(decode_with("args.instance.flavor.vcpus", OP_SET, &one, 0, &inst, &err), 0);
    assert_int_equal(inst->flavor->vcpus, 1);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.flavor.vcpus", OP_SET, &max_cpu, 0, &inst, &err), 0);
    assert_int_equal(inst->flavor->vcpus, 1024);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.flavor.memory_mb", OP_SET, &min_mem, 0, &inst, &err), 0);
    assert_int_equal(inst->flavor->memory_mb, 16);
    g_clear_pointer(&inst, vtpm_instance_free);
    assert_int_equal(decode_with("args.instance.flavor.memory_mb", OP_SET, &max_mem, 0, &inst, &err), 0);
    assert_int_equal(inst->flavor->memory_mb, 16777216);
}

static void
test_decode_flavor_direct(void **state)
{
    g_autoptr(vtpm_flavor) f = NULL;
    vtpm_error err;
    const msgpack_object notmap = OSTR("m1"), empty = OMAP;

    assert_int_equal(vtpm_proto_decode_flavor(&notmap, "args.flavor", &f, &err), -(int)BAD);
    assert_string_equal(err.message, "args.flavor: expected map, got str");
    assert_int_equal(vtpm_proto_decode_flavor(&empty, "args.flavor", &f, &err), -(int)BAD);
    assert_string_equal(err.message, "args.flavor.name: missing required key");
    assert_null(f);
    /* Destructors accept NULL, as error paths rely on. */
    vtpm_flavor_free(f);
    vtpm_image_free(NULL);
    vtpm_instance_free(NULL);
    vtpm_request_free(NULL);
    vtpm_reply_free(NULL);
}

/* ---- replies ------------------------------------------------------------- */

static void
test_reply_ok_round_trip(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    g_autoptr(GBytes) rb = NULL;
    g_autoptr(vtpm_reply) rep = NULL;
    vtpm_error err;
    size_t len;
    const void *d;
    uint64_t n = 0;
    char *state_str = NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    vtpm_pack_kv_uint(&pk, "n", 5);
    vtpm_pack_kv_str(&pk, "state", "running");
    rb = vtpm_proto_reply_ok(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);

    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
    assert_true(rep->ok);
    assert_int_equal(rep->fault, VTPM_FAULT_NONE);
    assert_null(rep->fault_code);
    assert_int_equal(rep->result.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(vtpm_proto_get_uint(&rep->result, "result", "n", true, 0, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(vtpm_proto_get_str(&rep->result, "result", "state", true, 64, &state_str, &err), 0);
    assert_string_equal(state_str, "running");
    g_free(state_str);
    g_clear_pointer(&rep, vtpm_reply_free);
    g_clear_pointer(&rb, g_bytes_unref);

    rb = vtpm_proto_reply_ok(NULL, 0);
    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
    assert_true(rep->ok);
    assert_int_equal(rep->result.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(rep->result.via.map.size, 0);
}

static void
test_reply_ok_malformed_result(void **state)
{
    const uint8_t not_map[] = { 0x91, 0x01 };
    const uint8_t truncated[] = { 0x82, 0xa1, 'a' };
    const uint8_t *bad[] = { not_map, truncated };
    const size_t lens[] = { sizeof(not_map), sizeof(truncated) };

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GBytes) rb = vtpm_proto_reply_ok(bad[i], lens[i]);
        g_autoptr(vtpm_reply) rep = NULL;
        vtpm_error err;
        size_t len;
        const void *d = g_bytes_get_data(rb, &len);

        assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
        assert_false(rep->ok);
        assert_int_equal(rep->fault, VTPM_FAULT_INTERNAL);
        assert_string_equal(rep->fault_message, "worker produced a malformed result");
    }
}

static void
test_reply_fault_all_codes(void **state)
{
    for (int code = 1; code < VTPM_FAULT__COUNT; code++) {
        vtpm_error e;
        g_autoptr(GBytes) rb = NULL;
        g_autoptr(vtpm_reply) rep = NULL;
        vtpm_error err;
        size_t len;
        const void *d;
        char want[64];

        vtpm_error_set(&e, (vtpm_fault)code, "failure number %d", code);
        rb = vtpm_proto_reply_fault(&e);
        d = g_bytes_get_data(rb, &len);
        assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
        assert_false(rep->ok);
        assert_int_equal(rep->fault, code);
        assert_string_equal(rep->fault_code, vtpm_fault_name((vtpm_fault)code));
        g_snprintf(want, sizeof(want), "failure number %d", code);
        assert_string_equal(rep->fault_message, want);
        assert_int_equal(rep->retryable, vtpm_fault_retryable((vtpm_fault)code));
        assert_int_equal(rep->result.type, MSGPACK_OBJECT_MAP);
        assert_int_equal(rep->result.via.map.size, 0);
    }
    assert_int_equal(VTPM_FAULT__COUNT - 1, 18);
}

/* A final error says retryable: false whatever its code; the next
 * vtpm_error_set() or a clear makes an error ordinary again, and a prefix
 * keeps it final. */
static void
test_reply_fault_final(void **state)
{
    vtpm_error e = { 0 };
    vtpm_error err;

    for (int code = 1; code < VTPM_FAULT__COUNT; code++) {
        g_autoptr(GBytes) rb = NULL;
        g_autoptr(vtpm_reply) rep = NULL;
        size_t len;
        const void *d;
        char want[32];

        assert_int_equal(vtpm_error_set_final(&e, (vtpm_fault)code, "final %d", code), -code);
        assert_int_equal(e.code, code);
        assert_true(e.final);
        g_snprintf(want, sizeof(want), "final %d", code);
        assert_string_equal(e.message, want);
        assert_false(vtpm_error_retryable(&e));
        rb = vtpm_proto_reply_fault(&e);
        d = g_bytes_get_data(rb, &len);
        assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
        assert_int_equal(rep->fault, code);
        assert_false(rep->retryable);
    }

    vtpm_error_set_final(&e, VTPM_FAULT_INSTANCE_CONFLICT, "another spec");
    vtpm_error_prefix(&e, "spawn");
    assert_true(e.final);
    assert_string_equal(e.message, "spawn: another spec");
    assert_false(vtpm_error_retryable(&e));
    vtpm_error_set(&e, VTPM_FAULT_INSTANCE_CONFLICT, "an operation holds it");
    assert_false(e.final);
    assert_true(vtpm_error_retryable(&e));
    vtpm_error_set_final(&e, VTPM_FAULT_HYPERVISOR_ERROR, "x");
    vtpm_error_clear(&e);
    assert_false(e.final);
    assert_int_equal(e.code, VTPM_FAULT_NONE);
    assert_false(vtpm_error_retryable(NULL));
}

static void
test_reply_fault_repairs_text(void **state)
{
    vtpm_error e = { 0 };
    g_autoptr(GBytes) rb = NULL;
    g_autoptr(vtpm_reply) rep = NULL;
    vtpm_error err;
    size_t len;
    const void *d;

    /* A message cut inside a multi-byte sequence. */
    e.code = VTPM_FAULT_BUSY;
    memset(e.message, 'x', sizeof(e.message));
    e.message[sizeof(e.message) - 2] = '\xc3';
    e.message[sizeof(e.message) - 1] = '\0';
    rb = vtpm_proto_reply_fault(&e);
    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
    assert_int_equal(rep->fault, VTPM_FAULT_BUSY);
    assert_true(rep->retryable);
    assert_true(g_utf8_validate(rep->fault_message, -1, NULL));
    assert_true(g_str_has_prefix(rep->fault_message, "xxxx"));
    g_clear_pointer(&rep, vtpm_reply_free);
    g_clear_pointer(&rb, g_bytes_unref);

    /* No error at all, or NONE, still yields a decodable Internal fault. */
    rb = vtpm_proto_reply_fault(NULL);
    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), 0);
    assert_int_equal(rep->fault, VTPM_FAULT_INTERNAL);
    assert_string_equal(rep->fault_code, "Internal");
}

static GBytes *
pack_reply(int v, int ok, const char *code, bool with_retryable)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, ok < 0 ? 2 : 3);
    vtpm_pack_kv_uint(&pk, "v", (uint64_t)v);
    if (ok >= 0)
        vtpm_pack_kv_bool(&pk, "ok", ok);
    vtpm_pack_str(&pk, "fault");
    msgpack_pack_map(&pk, with_retryable ? 3 : 2);
    vtpm_pack_kv_str(&pk, "code", code);
    vtpm_pack_kv_str(&pk, "message", "m");
    if (with_retryable)
        vtpm_pack_kv_bool(&pk, "retryable", true);
    return sbuf_take(&sb);
}

static void
test_decode_reply_faults(void **state)
{
    struct {
        int v, ok;
        const char *code;
        bool retryable;
        int rc;
        const char *msg;
    } cases[] = {
        { 1, 0, "Martian", true, 0, NULL },
        { 2, 0, "Busy", true, -(int)VTPM_FAULT_UNSUPPORTED_VERSION,
          "unsupported protocol version 2; this client speaks 1" },
        { 1, -1, "Busy", true, -(int)BAD, "ok: missing required key" },
        { 1, 1, "Busy", true, -(int)BAD, "result: missing required key" },
        { 1, 0, "Busy", false, -(int)BAD, "fault.retryable: missing required key" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GBytes) rb = pack_reply(cases[i].v, cases[i].ok, cases[i].code, cases[i].retryable);
        g_autoptr(vtpm_reply) rep = NULL;
        vtpm_error err = { 0 };
        size_t len;
        const void *d = g_bytes_get_data(rb, &len);

        assert_int_equal(vtpm_proto_decode_reply(d, len, NULL, &rep, &err), cases[i].rc);
        if (cases[i].rc == 0) {
            /* Unknown codes from a newer peer degrade to Internal. */
            assert_int_equal(rep->fault, VTPM_FAULT_INTERNAL);
            assert_string_equal(rep->fault_code, "Martian");
            assert_true(rep->retryable);
        } else {
            assert_null(rep);
            assert_string_equal(err.message, cases[i].msg);
        }
    }
}

static void
test_request_new_round_trip(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    g_autoptr(GBytes) rb = NULL;
    g_autoptr(vtpm_request) req = NULL;
    g_autoptr(vtpm_instance) inst = NULL;
    vtpm_error err;
    size_t len;
    const void *d;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    vtpm_pack_str(&pk, "instance");
    pack_instance(&pk);
    rb = vtpm_proto_request_new("create", sb.data, sb.size, "req-77", 1234);
    msgpack_sbuffer_destroy(&sb);

    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, NULL, &err), 0);
    assert_string_equal(req->method, "create");
    assert_string_equal(req->request_id, "req-77");
    assert_true(req->has_deadline);
    assert_int_equal(req->deadline_ms, 1234);
    assert_int_equal(vtpm_proto_arg_instance(req, &inst, &err), 0);
    assert_string_equal(inst->uuid, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    g_clear_pointer(&req, vtpm_request_free);
    g_clear_pointer(&rb, g_bytes_unref);

    rb = vtpm_proto_request_new("ping", NULL, 0, NULL, 0);
    d = g_bytes_get_data(rb, &len);
    assert_int_equal(vtpm_proto_decode_request(d, len, NULL, &req, NULL, &err), 0);
    assert_string_equal(req->method, "ping");
    assert_null(req->request_id);
    assert_false(req->has_deadline);
    assert_int_equal(req->args.via.map.size, 0);
    assert_int_equal(vtpm_proto_arg_instance(req, &inst, &err), -(int)BAD);
    assert_string_equal(err.message, "args.instance: missing required key");
}

static void
test_pack_helpers(void **state)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    size_t off = 0;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_array(&pk, 2), 0);
    assert_int_equal(vtpm_pack_str(&pk, NULL), 0);
    assert_int_equal(vtpm_pack_str(&pk, "x"), 0);
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(up.data.via.array.ptr[0].type, MSGPACK_OBJECT_NIL);
    assert_int_equal(up.data.via.array.ptr[1].type, MSGPACK_OBJECT_STR);
    assert_int_equal(up.data.via.array.ptr[1].via.str.size, 1);
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_defaults),
        cmocka_unit_test(test_valid_request_all_fields),
        cmocka_unit_test(test_minimal_request),
        cmocka_unit_test(test_optional_instance_fields),
        cmocka_unit_test(test_envelope_faults),
        cmocka_unit_test(test_instance_faults),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_request_id_on_failure),
        cmocka_unit_test(test_top_level_not_map),
        cmocka_unit_test(test_check_all_formats),
        cmocka_unit_test(test_check_rejects_ext_and_reserved),
        cmocka_unit_test(test_check_huge_headers),
        cmocka_unit_test(test_check_depth),
        cmocka_unit_test(test_check_body_size),
        cmocka_unit_test(test_check_objects_limit),
        cmocka_unit_test(test_check_str_limits),
        cmocka_unit_test(test_check_trailing_and_empty),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_mutated_requests),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_strmap_limits),
        cmocka_unit_test(test_parse_uuid),
        cmocka_unit_test(test_is_lower_hex),
        cmocka_unit_test(test_boot_variants),
        cmocka_unit_test(test_secret_and_ranges),
        cmocka_unit_test(test_decode_flavor_direct),
        cmocka_unit_test(test_reply_ok_round_trip),
        cmocka_unit_test(test_reply_ok_malformed_result),
        cmocka_unit_test(test_reply_fault_all_codes),
        cmocka_unit_test(test_reply_fault_final),
        cmocka_unit_test(test_reply_fault_repairs_text),
        cmocka_unit_test(test_decode_reply_faults),
        cmocka_unit_test(test_request_new_round_trip),
        cmocka_unit_test(test_pack_helpers),
        cmocka_unit_test(test_check_host),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
