/* SPDX-License-Identifier: Apache-2.0 */
/* The vtpm-replay recording format: framing, damage reporting, redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "mpjson.h"
#include "replayfile.h"
#include "vtpm/proto.h"

static const char SECRET[] = "s3cr3t-TPM-passphrase";

/* JSON -> packed msgpack ("$bin" objects become bin). */
static GBytes *
pack_json(const char *json)
{
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };

    msgpack_sbuffer_init(&sb);
    if (vtpm_mpjson_from_string(json, -1, &sb, &err) < 0) {
        print_error("%s: %s\n", json, err.message);
        fail();
    }
    return vtpm_replay_sbuffer_bytes(&sb);
}

static char *
obj_json(const msgpack_object *o)
{
    return vtpm_mpjson_to_string(o, false);
}

/* A spawn request whose instance carries SECRET (base64 of it). */
static GBytes *
secret_request(void)
{
    g_autofree char *b64 = g_base64_encode((const guchar *)SECRET, strlen(SECRET));
    g_autofree char *json = g_strdup_printf(
        "{\"v\":1,\"method\":\"spawn\",\"args\":{\"instance\":{\"uuid\":"
        "\"6f1d7c52-0b47-4b8a-9d51-1f0e3c1b2a77\",\"vtpm\":{\"secret\":{\"$bin\":\"%s\"}},"
        "\"flavor\":{\"name\":\"f\",\"extra_specs\":{\"hw:tpm_version\":\"2.0\"}}},"
        "\"list\":[{\"x\":1},{\"Password\":\"hunter2\"}]}}",
        b64);

    return pack_json(json);
}

static void
test_crc32(void **state)
{
    /* The check value of CRC-32/ISO-HDLC (zlib's crc32). */
    assert_int_equal(vtpm_replay_crc32("123456789", 9), 0xCBF43926u);
    assert_int_equal(vtpm_replay_crc32("", 0), 0);
}

static void
test_secret_keys(void **state)
{
    static const char *const yes[] = { "secret", "Secret", "password", "db_password",
                                       "Password", "passwd", "passphrase", "auth_token",
                                       "authToken", "x-auth-token", "credentials", "key",
                                       "private_key", "PrivateKey", "key_material", "privkey",
                                       "client_secret" };
    static const char *const no[] = { "secret_security", "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER",
                                      "routing_key", "keep_vtpm", "monkey", "host", "keys",
                                      "tokenizer", "uuid", "" };

    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (!vtpm_replay_secret_key(yes[i], strlen(yes[i]))) {
            print_error("'%s' should be a secret key\n", yes[i]);
            fail();
        }
    }
    for (size_t i = 0; i < G_N_ELEMENTS(no); i++) {
        if (vtpm_replay_secret_key(no[i], strlen(no[i]))) {
            print_error("'%s' should not be a secret key\n", no[i]);
            fail();
        }
    }
    assert_false(vtpm_replay_secret_key("sec\0ret", 7));
}

static void
test_record_redacts(void **state)
{
    g_autoptr(GBytes) body = secret_request();
    g_autoptr(GBytes) headers = pack_json("{\"x-auth-token\":\"tok-123\",\"x-trace\":\"t1\"}");
    g_autoptr(GBytes) rec = NULL;
    g_autoptr(vtpm_replay_record) r = NULL;
    g_autofree char *json = NULL;
    vtpm_replay_msg m = {
        .kind = "request", .seq = 7, .t_rel_us = 1500, .t_unix_us = 1700000000000000,
        .exchange = "vtpm", .routing_key = "vtpm.host-a", .correlation_id = "c-1",
        .reply_to = "amq.gen-x", .message_id = "m-1", .content_type = "application/msgpack",
        .headers = headers, .body = body,
    };
    vtpm_error err = { 0 };
    guint nred = 0;
    size_t len;
    const char *data;

    rec = vtpm_replay_record_pack(&m, &nred);
    assert_int_equal(nred, 3);
    data = g_bytes_get_data(rec, &len);
    /* Neither the secret nor the other credentials are anywhere in it. */
    assert_null(memmem(data, len, SECRET, strlen(SECRET)));
    assert_null(memmem(data, len, "hunter2", 7));
    assert_null(memmem(data, len, "tok-123", 7));
    assert_non_null(memmem(data, len, "t1", 2)); /* not a credential: kept */

    assert_int_equal(vtpm_replay_record_parse(rec, &r, &err), 0);
    assert_string_equal(r->kind, "request");
    assert_int_equal(r->seq, 7);
    assert_int_equal(r->t_rel_us, 1500);
    assert_string_equal(r->exchange, "vtpm");
    assert_string_equal(r->routing_key, "vtpm.host-a");
    assert_string_equal(r->correlation_id, "c-1");
    assert_string_equal(r->reply_to, "amq.gen-x");
    assert_string_equal(r->message_id, "m-1");
    assert_false(r->has_request_seq);
    assert_false(r->body_raw);
    assert_int_equal(r->redacted->len, 3);
    assert_string_equal(g_ptr_array_index(r->redacted, 0), "args.instance.vtpm.secret");
    assert_string_equal(g_ptr_array_index(r->redacted, 1), "args.list[1].Password");
    assert_string_equal(g_ptr_array_index(r->redacted, 2), "properties.headers.x-auth-token");
    json = obj_json(r->body);
    assert_non_null(strstr(json, "\"vtpm\":{\"secret\":\"<redacted>\"}"));
    /* The rest of the body is as sent. */
    assert_non_null(strstr(json, "\"extra_specs\":{\"hw:tpm_version\":\"2.0\"}"));
    assert_non_null(strstr(json, "\"method\":\"spawn\""));
}

static void
test_record_undecodable_body(void **state)
{
    static const char raw[] = { (char)0xc1, 'x' };
    g_autoptr(GBytes) body = g_bytes_new(raw, sizeof(raw));
    g_autoptr(GBytes) rec = NULL;
    g_autoptr(vtpm_replay_record) r = NULL;
    vtpm_replay_msg m = { .kind = "reply", .exchange = "", .routing_key = "q", .body = body,
                          .has_request_seq = true, .request_seq = 3 };
    const msgpack_object *why;
    vtpm_error err = { 0 };

    rec = vtpm_replay_record_pack(&m, NULL);
    assert_int_equal(vtpm_replay_record_parse(rec, &r, &err), 0);
    assert_true(r->body_raw);
    assert_int_equal(r->body->type, MSGPACK_OBJECT_BIN);
    assert_int_equal(r->body->via.bin.size, sizeof(raw));
    assert_memory_equal(r->body->via.bin.ptr, raw, sizeof(raw));
    assert_true(r->has_request_seq);
    assert_int_equal(r->request_seq, 3);
    why = vtpm_proto_map_get(&r->root, "body_error");
    assert_non_null(why);
    assert_int_equal(why->type, MSGPACK_OBJECT_STR);
}

/* Renames every dest_host "a" to "z" and records the paths it saw. */
static bool
subst_dest(const char *path, const char *key, size_t key_len, const msgpack_object *val,
           msgpack_packer *pk, void *data)
{
    g_ptr_array_add(data, g_strdup(path));
    if (key_len == 9 && memcmp(key, "dest_host", 9) == 0 && val->type == MSGPACK_OBJECT_STR &&
        val->via.str.size == 1 && val->via.str.ptr[0] == 'a') {
        vtpm_pack_str(pk, "z");
        return true;
    }
    return false;
}

static void
test_repack(void **state)
{
    g_autoptr(GBytes) in =
        pack_json("{\"args\":{\"dest_host\":\"a\",\"x\":[{\"dest_host\":\"b\"},{\"dest_host\":\"a\"}]}}");
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GBytes) out = NULL;
    g_autoptr(GBytes) undecodable = g_bytes_new("\xc1", 1);
    g_autofree char *json = NULL;
    msgpack_unpacked up;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t off = 0;

    /* Nothing to redact: the same bytes, no paths. */
    out = vtpm_replay_redact(in, paths);
    assert_non_null(out);
    assert_int_equal(paths->len, 0);
    assert_true(g_bytes_equal(in, out));
    assert_null(vtpm_replay_redact(undecodable, paths));

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, g_bytes_get_data(in, NULL), g_bytes_get_size(in),
                                         &off),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_replay_repack(&up.data, "", subst_dest, paths, &pk);
    msgpack_unpacked_destroy(&up);
    g_clear_pointer(&out, g_bytes_unref);
    out = vtpm_replay_sbuffer_bytes(&sb);
    msgpack_unpacked_init(&up);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&up, g_bytes_get_data(out, NULL),
                                         g_bytes_get_size(out), &off),
                     MSGPACK_UNPACK_SUCCESS);
    json = obj_json(&up.data);
    msgpack_unpacked_destroy(&up);
    assert_string_equal(json, "{\"args\":{\"dest_host\":\"z\",\"x\":[{\"dest_host\":\"b\"},"
                              "{\"dest_host\":\"z\"}]}}");
    assert_int_equal(paths->len, 5);
    assert_string_equal(g_ptr_array_index(paths, 0), "args");
    assert_string_equal(g_ptr_array_index(paths, 1), "args.dest_host");
    assert_string_equal(g_ptr_array_index(paths, 2), "args.x");
    assert_string_equal(g_ptr_array_index(paths, 3), "args.x[0].dest_host");
    assert_string_equal(g_ptr_array_index(paths, 4), "args.x[1].dest_host");
}

/* ---- files ---------------------------------------------------------------------- */

typedef struct {
    char *path;
    uint64_t frame_off[4]; /* offset of each frame: header + 3 records */
    uint64_t size;
} file_fixture;

static GBytes *
header_payload(void)
{
    return pack_json("{\"kind\":\"header\",\"format\":\"vtpm-replay\",\"format_version\":1}");
}

static int
setup_file(void **state)
{
    file_fixture *f = g_new0(file_fixture, 1);
    g_autoptr(vtpm_replay_writer) w = NULL;
    g_autoptr(GBytes) header = header_payload();
    vtpm_error err = { 0 };
    int fd = g_file_open_tmp("test_replayfile.XXXXXX", &f->path, NULL);

    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(vtpm_replay_writer_open(f->path, &w, &err), 0);
    f->frame_off[0] = VTPM_REPLAY_MAGIC_LEN;
    assert_int_equal(vtpm_replay_writer_put(w, header, &err), 0);
    f->frame_off[1] = f->frame_off[0] + 8 + g_bytes_get_size(header);
    for (int i = 0; i < 3; i++) {
        g_autoptr(GBytes) body = secret_request();
        g_autoptr(GBytes) rec = NULL;
        vtpm_replay_msg m = { .kind = "request", .seq = (uint64_t)i, .exchange = "vtpm",
                              .routing_key = "vtpm.a", .body = body };

        rec = vtpm_replay_record_pack(&m, NULL);
        assert_int_equal(vtpm_replay_writer_put(w, rec, &err), 0);
        if (i < 2)
            f->frame_off[i + 2] = f->frame_off[i + 1] + 8 + g_bytes_get_size(rec);
        else
            f->size = f->frame_off[3] + 8 + g_bytes_get_size(rec);
    }
    *state = f;
    return 0;
}

static int
teardown_file(void **state)
{
    file_fixture *f = *state;

    g_unlink(f->path);
    g_free(f->path);
    g_free(f);
    return 0;
}

/* Read every record; returns how many, *rc_out the final status. */
static int
read_all(const char *path, int *rc_out, uint64_t *off, vtpm_error *err)
{
    g_autoptr(vtpm_replay_reader) r = NULL;
    int n = 0, rc;

    if ((rc = vtpm_replay_reader_open(path, &r, err)) < 0) {
        *rc_out = rc;
        return 0;
    }
    for (;;) {
        g_autoptr(vtpm_replay_record) rec = NULL;

        rc = vtpm_replay_reader_next(r, &rec, off, err);
        if (rc != 0)
            break;
        assert_string_equal(rec->kind, n == 0 ? "header" : "request");
        if (n > 0)
            assert_int_equal(rec->seq, (uint64_t)(n - 1));
        n++;
    }
    *rc_out = rc;
    return n;
}

static void
test_file_round_trip(void **state)
{
    file_fixture *f = *state;
    g_autofree char *data = NULL;
    gsize len;
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    assert_true(g_file_get_contents(f->path, &data, &len, NULL));
    assert_int_equal(len, f->size);
    assert_memory_equal(data, VTPM_REPLAY_MAGIC, VTPM_REPLAY_MAGIC_LEN);
    assert_null(memmem(data, len, SECRET, strlen(SECRET)));
    assert_int_equal(read_all(f->path, &rc, &off, &err), 4);
    assert_int_equal(rc, 1);
}

static void
test_file_truncated(void **state)
{
    file_fixture *f = *state;
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    /* Cut inside the third record: the header and two records remain. */
    assert_int_equal(truncate(f->path, (off_t)f->frame_off[3] + 20), 0);
    assert_int_equal(read_all(f->path, &rc, &off, &err), 3);
    assert_true(rc < 0);
    assert_int_equal(off, f->frame_off[3]);
    {
        g_autofree char *want = g_strdup_printf("damaged at offset %" G_GUINT64_FORMAT
                                                " (record 3): truncated record",
                                                f->frame_off[3]);
        assert_string_equal(err.message, want);
    }
    /* Cut inside a frame header. */
    assert_int_equal(truncate(f->path, (off_t)f->frame_off[2] + 3), 0);
    assert_int_equal(read_all(f->path, &rc, &off, &err), 2);
    assert_int_equal(off, f->frame_off[2]);
    assert_non_null(strstr(err.message, "truncated frame header"));
}

static void
test_file_corrupt(void **state)
{
    file_fixture *f = *state;
    g_autofree char *data = NULL;
    gsize len;
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    assert_true(g_file_get_contents(f->path, &data, &len, NULL));
    data[f->frame_off[2] + 8 + 5] ^= 0x40; /* one bit inside record 2 */
    assert_true(g_file_set_contents(f->path, data, (gssize)len, NULL));
    assert_int_equal(read_all(f->path, &rc, &off, &err), 2);
    assert_true(rc < 0);
    assert_int_equal(off, f->frame_off[2]);
    assert_non_null(strstr(err.message, "CRC mismatch"));

    /* A length beyond the limit is damage too, not an allocation. */
    data[f->frame_off[2] + 5] ^= 0x40;
    data[f->frame_off[1]] = 0x7f;
    assert_true(g_file_set_contents(f->path, data, (gssize)len, NULL));
    assert_int_equal(read_all(f->path, &rc, &off, &err), 1);
    assert_non_null(strstr(err.message, "over the limit"));
}

static void
test_file_not_a_recording(void **state)
{
    file_fixture *f = *state;
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    assert_true(g_file_set_contents(f->path, "{\"json\": true}\n", -1, NULL));
    assert_int_equal(read_all(f->path, &rc, &off, &err), 0);
    assert_int_equal(rc, -VTPM_FAULT_BAD_REQUEST);
    assert_non_null(strstr(err.message, "not a vtpm-replay recording"));
}

static void
test_file_header_first(void **state)
{
    file_fixture *f = *state;
    g_autoptr(vtpm_replay_writer) w = NULL;
    g_autoptr(GBytes) body = pack_json("{}");
    g_autoptr(GBytes) rec = NULL;
    vtpm_replay_msg m = { .kind = "request", .exchange = "vtpm", .routing_key = "k",
                          .body = body };
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    assert_int_equal(vtpm_replay_writer_open(f->path, &w, &err), 0);
    rec = vtpm_replay_record_pack(&m, NULL);
    assert_int_equal(vtpm_replay_writer_put(w, rec, &err), 0);
    assert_int_equal(read_all(f->path, &rc, &off, &err), 0);
    assert_true(rc < 0);
    assert_int_equal(off, VTPM_REPLAY_MAGIC_LEN);
    assert_non_null(strstr(err.message, "the first record is not the header"));
}

static void
test_file_other_version(void **state)
{
    file_fixture *f = *state;
    g_autoptr(vtpm_replay_writer) w = NULL;
    g_autoptr(GBytes) header =
        pack_json("{\"kind\":\"header\",\"format\":\"vtpm-replay\",\"format_version\":2}");
    vtpm_error err = { 0 };
    uint64_t off = 0;
    int rc;

    assert_int_equal(vtpm_replay_writer_open(f->path, &w, &err), 0);
    assert_int_equal(vtpm_replay_writer_put(w, header, &err), 0);
    assert_int_equal(read_all(f->path, &rc, &off, &err), 0);
    assert_int_equal(rc, -VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message,
                        "unsupported format version 2 (this vtpm-replay reads version 1)");
}

static void
test_record_empty_body(void **state)
{
    g_autoptr(GBytes) body = g_bytes_new(NULL, 0);
    g_autoptr(GBytes) rec = NULL;
    g_autoptr(vtpm_replay_record) r = NULL;
    vtpm_replay_msg m = { .kind = "request", .exchange = "vtpm", .routing_key = "vtpm.a",
                          .body = body };
    vtpm_error err = { 0 };

    rec = vtpm_replay_record_pack(&m, NULL);
    assert_int_equal(vtpm_replay_record_parse(rec, &r, &err), 0);
    assert_true(r->body_raw);
    assert_int_equal(r->body->via.bin.size, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_secret_keys),
        cmocka_unit_test(test_record_redacts),
        cmocka_unit_test(test_record_undecodable_body),
        cmocka_unit_test(test_record_empty_body),
        cmocka_unit_test(test_repack),
        cmocka_unit_test_setup_teardown(test_file_round_trip, setup_file, teardown_file),
        cmocka_unit_test_setup_teardown(test_file_truncated, setup_file, teardown_file),
        cmocka_unit_test_setup_teardown(test_file_corrupt, setup_file, teardown_file),
        cmocka_unit_test_setup_teardown(test_file_not_a_recording, setup_file, teardown_file),
        cmocka_unit_test_setup_teardown(test_file_header_first, setup_file, teardown_file),
        cmocka_unit_test_setup_teardown(test_file_other_version, setup_file, teardown_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
