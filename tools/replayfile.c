/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Length + CRC framing rather than bare msgpack values back to back: a
 * msgpack stream cut or scribbled over mid-value can still parse as some
 * other value, so damage would go unnoticed or be reported records later.
 * With a frame, the first bad byte is caught at its own frame's offset.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vtpm/proto.h"
#include "replayfile.h"

enum { FRAME_HEAD = 8, PATH_MAX_LEN = 4096 };

const char *const vtpm_replay_redaction_rules[] = {
    "args.instance.vtpm.secret",
    "any map key with a word secret(s), password, passwd, passphrase, token, "
    "credential(s), privkey, keymaterial, private+key or key+material (words split at "
    "_-.: and camelCase, case-insensitive), except secret+security (a policy mode)",
    "any map key named key",
    NULL,
};

/* ---- CRC-32 ----------------------------------------------------------------------- */

static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t
vtpm_replay_crc32(const void *data, size_t len)
{
    static GOnce once = G_ONCE_INIT;
    const uint8_t *p = data;
    uint32_t c = 0xFFFFFFFFu;

    g_once(&once, (GThreadFunc)(void (*)(void))crc_init, NULL);
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- redaction and re-packing ------------------------------------------------------ */

/* Words of a key: split at '_', '-', '.', ':', ' ' and lower-to-upper
 * case changes, lower-cased. */
static GPtrArray *
key_words(const char *key, size_t len)
{
    GPtrArray *words = g_ptr_array_new_with_free_func(g_free);
    GString *w = g_string_new(NULL);

    for (size_t i = 0; i <= len; i++) {
        char ch = i < len ? key[i] : '\0';
        bool sep = !ch || strchr("_-.: ", ch);
        bool hump = i > 0 && g_ascii_isupper(ch) && g_ascii_islower(key[i - 1]);

        if ((sep || hump) && w->len) {
            g_ptr_array_add(words, g_string_free(g_steal_pointer(&w), FALSE));
            w = g_string_new(NULL);
        }
        if (!sep)
            g_string_append_c(w, g_ascii_tolower(ch));
    }
    g_string_free(w, TRUE);
    return words;
}

bool
vtpm_replay_secret_key(const char *key, size_t len)
{
    static const char *const words[] = { "secret", "secrets", "password", "passwd",
                                         "passphrase", "token", "credential", "credentials",
                                         "privkey", "keymaterial" };
    g_autoptr(GPtrArray) kw = NULL;

    if (len > PATH_MAX_LEN || memchr(key, 0, len))
        return false;
    kw = key_words(key, len);
    if (kw->len == 1 && strcmp(g_ptr_array_index(kw, 0), "key") == 0)
        return true;
    for (guint i = 0; i < kw->len; i++) {
        const char *w = g_ptr_array_index(kw, i);
        const char *next = i + 1 < kw->len ? g_ptr_array_index(kw, i + 1) : "";

        /* secret_security (and the COMPUTE_SECURITY_TPM_SECRET_SECURITY_*
         * traits) name a policy mode, not a secret. */
        if (strcmp(w, "secret") == 0 && strcmp(next, "security") == 0)
            continue;
        if ((strcmp(w, "private") == 0 && strcmp(next, "key") == 0) ||
            (strcmp(w, "key") == 0 && strcmp(next, "material") == 0))
            return true;
        for (size_t j = 0; j < G_N_ELEMENTS(words); j++)
            if (strcmp(w, words[j]) == 0)
                return true;
    }
    return false;
}

GBytes *
vtpm_replay_sbuffer_bytes(msgpack_sbuffer *sb)
{
    size_t size = sb->size; /* release() zeroes it */
    char *data = msgpack_sbuffer_release(sb);

    /* The free function gets the user data: the buffer itself. */
    return g_bytes_new_with_free_func(data, size, free, data);
}

void
vtpm_replay_pack_raw(msgpack_packer *pk, const void *data, size_t len)
{
    pk->callback(pk->data, data, len);
}

static void
repack(const msgpack_object *obj, GString *path, vtpm_replay_subst_fn fn, void *data,
       msgpack_packer *pk)
{
    size_t mark = path->len;

    switch (obj->type) {
    case MSGPACK_OBJECT_MAP:
        msgpack_pack_map(pk, obj->via.map.size);
        for (uint32_t i = 0; i < obj->via.map.size; i++) {
            const msgpack_object_kv *kv = &obj->via.map.ptr[i];

            msgpack_pack_object(pk, kv->key);
            if (path->len)
                g_string_append_c(path, '.');
            if (kv->key.type == MSGPACK_OBJECT_STR)
                g_string_append_len(path, kv->key.via.str.ptr, kv->key.via.str.size);
            else
                g_string_append(path, "?");
            if (!fn || kv->key.type != MSGPACK_OBJECT_STR ||
                !fn(path->str, kv->key.via.str.ptr, kv->key.via.str.size, &kv->val, pk, data))
                repack(&kv->val, path, fn, data, pk);
            g_string_truncate(path, mark);
        }
        break;
    case MSGPACK_OBJECT_ARRAY:
        msgpack_pack_array(pk, obj->via.array.size);
        for (uint32_t i = 0; i < obj->via.array.size; i++) {
            g_string_append_printf(path, "[%u]", i);
            repack(&obj->via.array.ptr[i], path, fn, data, pk);
            g_string_truncate(path, mark);
        }
        break;
    default:
        msgpack_pack_object(pk, *obj);
        break;
    }
}

void
vtpm_replay_repack(const msgpack_object *obj, const char *root, vtpm_replay_subst_fn fn,
                   void *data, msgpack_packer *pk)
{
    g_autoptr(GString) path = g_string_new(root ? root : "");

    repack(obj, path, fn, data, pk);
}

static bool
redact_one(const char *path, const char *key, size_t key_len, const msgpack_object *val,
           msgpack_packer *pk, void *data)
{
    GPtrArray *paths = data;

    if (!vtpm_replay_secret_key(key, key_len))
        return false;
    vtpm_pack_str(pk, VTPM_REPLAY_REDACTED);
    if (paths)
        g_ptr_array_add(paths, g_strdup(path));
    return true;
}

/* Limits for decoding a recorded body: those of the worker's maximum
 * message size, with the depth kept so a record stays unpackable. */
static void
body_limits(vtpm_proto_limits *lim)
{
    vtpm_proto_limits_init(lim);
    lim->max_body = (size_t)64 << 20;
    lim->max_depth = VTPM_REPLAY_MAX_BODY_DEPTH;
    lim->max_str = lim->max_bin = (size_t)64 << 20;
    lim->max_container = 1 << 20;
    lim->max_objects = 1 << 22;
}

/* Pack @bytes (one msgpack value) redacted, with @root as path prefix;
 * false (nothing packed) when it is not one value within the limits. */
static bool
pack_redacted(msgpack_packer *pk, GBytes *bytes, const char *root, GPtrArray *paths,
              char **why)
{
    vtpm_proto_limits lim;
    vtpm_error err = { 0 };
    msgpack_unpacked up;
    size_t len, off = 0;
    const char *data = g_bytes_get_data(bytes, &len);

    body_limits(&lim);
    if (vtpm_proto_check(data, len, &lim, &err) < 0) {
        *why = g_strdup(err.message);
        return false;
    }
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        *why = g_strdup("msgpack-c cannot unpack it");
        return false;
    }
    vtpm_replay_repack(&up.data, root, redact_one, paths, pk);
    msgpack_unpacked_destroy(&up);
    return true;
}

static void
kv_str_opt(msgpack_packer *pk, const char *key, const char *val)
{
    if (val)
        vtpm_pack_kv_str(pk, key, val);
}

static void
pack_kv_int(msgpack_packer *pk, const char *key, int64_t v)
{
    vtpm_pack_str(pk, key);
    msgpack_pack_int64(pk, v);
}

GBytes *
vtpm_replay_redact(GBytes *packed, GPtrArray *paths)
{
    g_autofree char *why = NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (!pack_redacted(&pk, packed, "", paths, &why)) {
        msgpack_sbuffer_destroy(&sb);
        return NULL;
    }
    return vtpm_replay_sbuffer_bytes(&sb);
}

GBytes *
vtpm_replay_record_pack(const vtpm_replay_msg *m, guint *out_nredacted)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *body_why = NULL;
    g_autofree char *hdr_why = NULL;
    msgpack_sbuffer body_sb, hdr_sb, sb;
    msgpack_packer body_pk, hdr_pk, pk;
    bool body_ok, hdr_ok = false;
    uint32_t nprops = 0, n;

    /* Redact first: the record lists what was redacted. */
    msgpack_sbuffer_init(&body_sb);
    msgpack_packer_init(&body_pk, &body_sb, msgpack_sbuffer_write);
    body_ok = pack_redacted(&body_pk, m->body, "", paths, &body_why);
    msgpack_sbuffer_init(&hdr_sb);
    msgpack_packer_init(&hdr_pk, &hdr_sb, msgpack_sbuffer_write);
    if (m->headers)
        hdr_ok = pack_redacted(&hdr_pk, m->headers, "properties.headers", paths, &hdr_why);

    nprops = !!m->correlation_id + !!m->reply_to + !!m->message_id + !!m->content_type + hdr_ok;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    n = 8 + (m->has_request_seq ? 1 : 0) + (paths->len ? 1 : 0) + (body_ok ? 0 : 2);
    msgpack_pack_map(&pk, n);
    vtpm_pack_kv_str(&pk, "kind", m->kind);
    vtpm_pack_kv_uint(&pk, "seq", m->seq);
    pack_kv_int(&pk, "t_rel_us", m->t_rel_us);
    pack_kv_int(&pk, "t_unix_us", m->t_unix_us);
    vtpm_pack_kv_str(&pk, "exchange", m->exchange ? m->exchange : "");
    vtpm_pack_kv_str(&pk, "routing_key", m->routing_key ? m->routing_key : "");
    vtpm_pack_str(&pk, "properties");
    msgpack_pack_map(&pk, nprops);
    kv_str_opt(&pk, "correlation_id", m->correlation_id);
    kv_str_opt(&pk, "reply_to", m->reply_to);
    kv_str_opt(&pk, "message_id", m->message_id);
    kv_str_opt(&pk, "content_type", m->content_type);
    if (hdr_ok) {
        vtpm_pack_str(&pk, "headers");
        vtpm_replay_pack_raw(&pk, hdr_sb.data, hdr_sb.size);
    }
    if (m->has_request_seq)
        vtpm_pack_kv_uint(&pk, "request_seq", m->request_seq);
    vtpm_pack_str(&pk, "body");
    if (body_ok) {
        vtpm_replay_pack_raw(&pk, body_sb.data, body_sb.size);
    } else {
        size_t len;
        const void *raw = g_bytes_get_data(m->body, &len);

        /* Kept as received: nothing could be looked into. */
        msgpack_pack_bin(&pk, len);
        if (len) /* an empty GBytes may hold NULL */
            msgpack_pack_bin_body(&pk, raw, len);
        vtpm_pack_kv_bool(&pk, "body_undecodable", true);
        vtpm_pack_kv_str(&pk, "body_error", body_why);
    }
    if (paths->len) {
        vtpm_pack_str(&pk, "redacted");
        msgpack_pack_array(&pk, paths->len);
        for (guint i = 0; i < paths->len; i++)
            vtpm_pack_str(&pk, g_ptr_array_index(paths, i));
    }
    msgpack_sbuffer_destroy(&body_sb);
    msgpack_sbuffer_destroy(&hdr_sb);
    if (out_nredacted)
        *out_nredacted = paths->len;
    return vtpm_replay_sbuffer_bytes(&sb);
}

/* ---- reading records -------------------------------------------------------------- */

void
vtpm_replay_record_free(vtpm_replay_record *r)
{
    if (!r)
        return;
    g_free(r->kind);
    g_free(r->exchange);
    g_free(r->routing_key);
    g_free(r->correlation_id);
    g_free(r->reply_to);
    g_free(r->message_id);
    g_free(r->content_type);
    if (r->redacted)
        g_ptr_array_unref(r->redacted);
    if (r->zone)
        msgpack_zone_free(r->zone);
    if (r->payload)
        g_bytes_unref(r->payload);
    g_free(r);
}

static int
get_int(const msgpack_object *map, const char *key, int64_t *out, vtpm_error *err)
{
    const msgpack_object *v = vtpm_proto_map_get(map, key);

    if (!v)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= G_MAXINT64)
        *out = (int64_t)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: expected an integer", key);
    return 0;
}

int
vtpm_replay_record_parse(GBytes *payload, vtpm_replay_record **out, vtpm_error *err)
{
    g_autoptr(vtpm_replay_record) r = g_new0(vtpm_replay_record, 1);
    const msgpack_object *props = NULL, *redacted, *v;
    vtpm_proto_limits lim;
    size_t len, off = 0;
    const char *data = g_bytes_get_data(payload, &len);
    bool raw = false;
    int rc;

    body_limits(&lim);
    lim.max_body = VTPM_REPLAY_MAX_RECORD;
    lim.max_depth = 32;
    if ((rc = vtpm_proto_check(data, len, &lim, err)) < 0)
        return rc;
    r->payload = g_bytes_ref(payload);
    r->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (msgpack_unpack(data, len, &off, r->zone, &r->root) != MSGPACK_UNPACK_SUCCESS ||
        r->root.type != MSGPACK_OBJECT_MAP)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "record is not a msgpack map");
    if ((rc = vtpm_proto_get_str(&r->root, "record", "kind", true, 64, &r->kind, err)) < 0)
        return rc;
    if (strcmp(r->kind, "header") == 0) {
        *out = g_steal_pointer(&r);
        return 0;
    }
    if (strcmp(r->kind, "request") != 0 && strcmp(r->kind, "reply") != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "record: unknown kind '%s'", r->kind);
    if ((rc = vtpm_proto_get_uint(&r->root, "record", "seq", true, 0, &r->seq, err)) < 0 ||
        (rc = get_int(&r->root, "t_rel_us", &r->t_rel_us, err)) < 0 ||
        (rc = get_int(&r->root, "t_unix_us", &r->t_unix_us, err)) < 0 ||
        (rc = vtpm_proto_get_str(&r->root, "record", "exchange", true, 255, &r->exchange, err)) <
            0 ||
        (rc = vtpm_proto_get_str(&r->root, "record", "routing_key", true, 255, &r->routing_key,
                                 err)) < 0 ||
        (rc = vtpm_proto_get_map(&r->root, "record", "properties", false, &props, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&r->root, "record", "body_undecodable", false, false, &raw,
                                  err)) < 0)
        return rc;
    if (props &&
        ((rc = vtpm_proto_get_str(props, "record.properties", "correlation_id", false, 255,
                                  &r->correlation_id, err)) < 0 ||
         (rc = vtpm_proto_get_str(props, "record.properties", "reply_to", false, 255,
                                  &r->reply_to, err)) < 0 ||
         (rc = vtpm_proto_get_str(props, "record.properties", "message_id", false, 255,
                                  &r->message_id, err)) < 0 ||
         (rc = vtpm_proto_get_str(props, "record.properties", "content_type", false, 255,
                                  &r->content_type, err)) < 0))
        return rc;
    if ((v = vtpm_proto_map_get(&r->root, "request_seq"))) {
        if ((rc = vtpm_proto_get_uint(&r->root, "record", "request_seq", true, 0,
                                      &r->request_seq, err)) < 0)
            return rc;
        r->has_request_seq = true;
    }
    r->body = vtpm_proto_map_get(&r->root, "body");
    r->body_raw = raw;
    if (raw && (!r->body || r->body->type != MSGPACK_OBJECT_BIN))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "record.body: expected bin for an undecodable body");
    r->redacted = g_ptr_array_new_with_free_func(g_free);
    redacted = vtpm_proto_map_get(&r->root, "redacted");
    if (redacted && redacted->type != MSGPACK_OBJECT_ARRAY)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "record.redacted: expected array");
    for (uint32_t i = 0; redacted && i < redacted->via.array.size; i++) {
        const msgpack_object *p = &redacted->via.array.ptr[i];

        if (p->type != MSGPACK_OBJECT_STR)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "record.redacted[%u]: expected str", i);
        g_ptr_array_add(r->redacted, g_strndup(p->via.str.ptr, p->via.str.size));
    }
    *out = g_steal_pointer(&r);
    return 0;
}

/* ---- files ------------------------------------------------------------------------ */

struct vtpm_replay_writer {
    int fd;
    char *path;
};

static void
put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

GBytes *
vtpm_replay_frame(GBytes *payload)
{
    size_t len;
    const void *data = g_bytes_get_data(payload, &len);
    uint8_t *buf = g_malloc(FRAME_HEAD + len);

    put_be32(buf, (uint32_t)len);
    put_be32(buf + 4, vtpm_replay_crc32(data, len));
    if (len)
        memcpy(buf + FRAME_HEAD, data, len);
    return g_bytes_new_take(buf, FRAME_HEAD + len);
}

static int
write_all(vtpm_replay_writer *w, const void *data, size_t len, vtpm_error *err)
{
    const char *p = data;

    while (len) {
        ssize_t n = write(w->fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: write: %s", w->path,
                                  g_strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int
vtpm_replay_writer_open(const char *path, vtpm_replay_writer **out, vtpm_error *err)
{
    g_autoptr(vtpm_replay_writer) w = g_new0(vtpm_replay_writer, 1);
    int rc;

    w->path = g_strdup(path);
    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: %s", path, g_strerror(errno));
    if ((rc = write_all(w, VTPM_REPLAY_MAGIC, VTPM_REPLAY_MAGIC_LEN, err)) < 0)
        return rc;
    *out = g_steal_pointer(&w);
    return 0;
}

int
vtpm_replay_writer_put(vtpm_replay_writer *w, GBytes *payload, vtpm_error *err)
{
    g_autoptr(GBytes) frame = NULL;
    size_t len;
    const void *data;

    if (g_bytes_get_size(payload) > VTPM_REPLAY_MAX_RECORD)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "record of %zu bytes exceeds %zu",
                              g_bytes_get_size(payload), VTPM_REPLAY_MAX_RECORD);
    frame = vtpm_replay_frame(payload);
    data = g_bytes_get_data(frame, &len);
    return write_all(w, data, len, err);
}

void
vtpm_replay_writer_free(vtpm_replay_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    g_free(w->path);
    g_free(w);
}

struct vtpm_replay_reader {
    FILE *f;
    char *path;
    uint64_t offset;
    uint64_t index;
    bool done;
};

int
vtpm_replay_reader_open(const char *path, vtpm_replay_reader **out, vtpm_error *err)
{
    g_autoptr(vtpm_replay_reader) r = g_new0(vtpm_replay_reader, 1);
    char magic[VTPM_REPLAY_MAGIC_LEN];

    r->path = g_strdup(path);
    if (!(r->f = fopen(path, "rbe")))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s", path, g_strerror(errno));
    if (fread(magic, 1, sizeof(magic), r->f) != sizeof(magic) ||
        memcmp(magic, VTPM_REPLAY_MAGIC, sizeof(magic)) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s: not a vtpm-replay recording (bad magic)", path);
    r->offset = VTPM_REPLAY_MAGIC_LEN;
    *out = g_steal_pointer(&r);
    return 0;
}

/* A later format may change anything: refuse it rather than misread it. */
static int
check_header(const vtpm_replay_record *h, vtpm_error *err)
{
    g_autofree char *format = NULL;
    uint64_t version = 0;

    if (vtpm_proto_get_str(&h->root, "header", "format", true, 64, &format, err) < 0 ||
        vtpm_proto_get_uint(&h->root, "header", "format_version", true, 0, &version, err) < 0)
        return vtpm_error_prefix(err, "not a vtpm-replay header");
    if (strcmp(format, VTPM_REPLAY_FORMAT) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "header: format '%s', expected '%s'",
                              format, VTPM_REPLAY_FORMAT);
    if (version != VTPM_REPLAY_FORMAT_VERSION)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "unsupported format version %" G_GUINT64_FORMAT
                              " (this vtpm-replay reads version %d)",
                              version, VTPM_REPLAY_FORMAT_VERSION);
    return 0;
}

static int
damaged(vtpm_replay_reader *r, uint64_t *out_offset, vtpm_error *err, const char *why)
{
    r->done = true;
    if (out_offset)
        *out_offset = r->offset;
    return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                          "damaged at offset %" G_GUINT64_FORMAT " (record %" G_GUINT64_FORMAT
                          "): %s",
                          r->offset, r->index, why);
}

int
vtpm_replay_reader_next(vtpm_replay_reader *r, vtpm_replay_record **out, uint64_t *out_offset,
                        vtpm_error *err)
{
    g_autoptr(GBytes) payload = NULL;
    vtpm_replay_record *rec = NULL;
    uint8_t head[FRAME_HEAD];
    uint32_t len, crc;
    size_t n;
    char *buf;

    if (r->done)
        return 1;
    n = fread(head, 1, sizeof(head), r->f);
    if (n == 0 && feof(r->f)) {
        r->done = true;
        return 1;
    }
    if (n != sizeof(head))
        return damaged(r, out_offset, err, "truncated frame header");
    len = get_be32(head);
    crc = get_be32(head + 4);
    if (len > VTPM_REPLAY_MAX_RECORD)
        return damaged(r, out_offset, err, "frame length over the limit");
    buf = g_malloc(len ? len : 1);
    if (fread(buf, 1, len, r->f) != len) {
        g_free(buf);
        return damaged(r, out_offset, err, "truncated record");
    }
    payload = g_bytes_new_take(buf, len);
    if (vtpm_replay_crc32(buf, len) != crc)
        return damaged(r, out_offset, err, "CRC mismatch");
    if (vtpm_replay_record_parse(payload, &rec, err) < 0) {
        g_autofree char *why = g_strdup(err->message);

        return damaged(r, out_offset, err, why);
    }
    if ((r->index == 0) != (strcmp(rec->kind, "header") == 0)) {
        vtpm_replay_record_free(rec);
        return damaged(r, out_offset, err,
                       r->index == 0 ? "the first record is not the header"
                                     : "a second header record");
    }
    if (r->index == 0 && check_header(rec, err) < 0) {
        vtpm_replay_record_free(rec);
        r->done = true;
        if (out_offset)
            *out_offset = r->offset;
        return -VTPM_FAULT_BAD_REQUEST;
    }
    r->offset += FRAME_HEAD + len;
    r->index++;
    *out = rec;
    return 0;
}

void
vtpm_replay_reader_free(vtpm_replay_reader *r)
{
    if (!r)
        return;
    if (r->f)
        fclose(r->f);
    g_free(r->path);
    g_free(r);
}
