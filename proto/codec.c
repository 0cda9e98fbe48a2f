/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <string.h>

#include <uuid/uuid.h>

#include "vtpm/proto.h"

#define BAD VTPM_FAULT_BAD_REQUEST

/* Context strings end up in logs; a bound keeps one request from flooding
 * them. */
#define MAX_CONTEXT_STR 256
#define MAX_METHOD 64
#define MAX_NAME 255
/* Reply fault messages come from vtpm_error (511 bytes) but a peer may be a
 * newer implementation; the field limit is generous and still bounded. */
#define MAX_FAULT_CODE 64
/* msgpack-c's unpacker has a fixed stack of this many nested containers
 * (MSGPACK_EMBED_STACK_SIZE, private to its unpack_template.h); anything
 * deeper would fail inside msgpack_unpack_next() as "out of memory".  The
 * check caps max_depth here so that a body it passes is always decodable. */
#define UNPACK_MAX_DEPTH 32u

void
vtpm_proto_limits_init(vtpm_proto_limits *lim)
{
    lim->max_body = 1024 * 1024;
    lim->max_depth = 16;
    lim->max_str = 64 * 1024;
    lim->max_bin = 64 * 1024;
    lim->max_container = 4096;
    lim->max_objects = 65536;
}

/* ---- structural check -------------------------------------------------- */

enum kind { K_SCALAR, K_STR, K_BIN, K_ARRAY, K_MAP, K_EXT, K_RESERVED };

/* What one leading byte announces: @lenbytes big-endian length/count bytes
 * follow it, or (when 0) @fixed is the payload size (scalars, str) or the
 * entry count (containers). */
static enum kind
classify(uint8_t b, unsigned *lenbytes, uint64_t *fixed)
{
    *lenbytes = 0;
    *fixed = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return K_SCALAR;
    if (b <= 0x8f) {
        *fixed = b & 0x0f;
        return K_MAP;
    }
    if (b <= 0x9f) {
        *fixed = b & 0x0f;
        return K_ARRAY;
    }
    if (b <= 0xbf) {
        *fixed = b & 0x1f;
        return K_STR;
    }
    switch (b) {
    case 0xc4: *lenbytes = 1; return K_BIN;
    case 0xc5: *lenbytes = 2; return K_BIN;
    case 0xc6: *lenbytes = 4; return K_BIN;
    case 0xca: *fixed = 4; return K_SCALAR;
    case 0xcb: *fixed = 8; return K_SCALAR;
    case 0xcc: case 0xd0: *fixed = 1; return K_SCALAR;
    case 0xcd: case 0xd1: *fixed = 2; return K_SCALAR;
    case 0xce: case 0xd2: *fixed = 4; return K_SCALAR;
    case 0xcf: case 0xd3: *fixed = 8; return K_SCALAR;
    case 0xd9: *lenbytes = 1; return K_STR;
    case 0xda: *lenbytes = 2; return K_STR;
    case 0xdb: *lenbytes = 4; return K_STR;
    case 0xdc: *lenbytes = 2; return K_ARRAY;
    case 0xdd: *lenbytes = 4; return K_ARRAY;
    case 0xde: *lenbytes = 2; return K_MAP;
    case 0xdf: *lenbytes = 4; return K_MAP;
    case 0xc1: return K_RESERVED;
    default: return K_EXT; /* 0xc7..0xc9, 0xd4..0xd8 */
    }
}

static uint64_t
be_read(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Validates a single header at @at; advances *pos past the header and, for
 * scalars, str and bin, past the payload too.  *items is the number of
 * child objects a container announces (2 per map entry). */
static int
check_one(const uint8_t *p, size_t len, size_t at, unsigned depth, unsigned max_depth,
          const vtpm_proto_limits *lim, size_t *pos, uint64_t *items, vtpm_error *err)
{
    unsigned lenbytes;
    uint64_t n;
    size_t cur = at + 1, left;
    enum kind k = classify(p[at], &lenbytes, &n);

    if (k == K_RESERVED)
        return vtpm_error_set(err, BAD, "reserved byte 0xc1 at offset %zu", at);
    if (k == K_EXT)
        return vtpm_error_set(err, BAD, "ext type 0x%02x at offset %zu is not allowed", p[at], at);
    if (lenbytes) {
        if (len - cur < lenbytes)
            return vtpm_error_set(err, BAD, "truncated at offset %zu", at);
        n = be_read(p + cur, lenbytes);
        cur += lenbytes;
    }
    left = len - cur;
    *items = 0;
    switch (k) {
    case K_STR:
        if (n > lim->max_str)
            return vtpm_error_set(err, BAD, "str of %" PRIu64 " bytes at offset %zu exceeds limit of %zu",
                                  n, at, lim->max_str);
        break;
    case K_BIN:
        if (n > lim->max_bin)
            return vtpm_error_set(err, BAD, "bin of %" PRIu64 " bytes at offset %zu exceeds limit of %zu",
                                  n, at, lim->max_bin);
        break;
    case K_ARRAY:
    case K_MAP: {
        const char *what = k == K_MAP ? "map" : "array";

        if (depth + 1 > max_depth)
            return vtpm_error_set(err, BAD, "%s at offset %zu nests deeper than limit of %u", what, at,
                                  max_depth);
        if (n > lim->max_container)
            return vtpm_error_set(err, BAD, "%s of %" PRIu64 " entries at offset %zu exceeds limit of %zu",
                                  what, n, at, lim->max_container);
        /* Every child takes at least one byte; checking this here is what
         * keeps msgpack-c from allocating for entries that cannot exist. */
        *items = k == K_MAP ? 2 * n : n;
        if (*items > left)
            return vtpm_error_set(err, BAD, "%s at offset %zu claims %" PRIu64 " entries but only %zu bytes remain",
                                  what, at, n, left);
        *pos = cur;
        return 0;
    }
    default:
        break;
    }
    if (n > left)
        return vtpm_error_set(err, BAD, "truncated at offset %zu", at);
    *pos = cur + n;
    return 0;
}

int
vtpm_proto_check(const void *data, size_t len, const vtpm_proto_limits *lim, vtpm_error *err)
{
    vtpm_proto_limits dflt;
    const uint8_t *p = data;
    size_t pos = 0, objects = 0;
    unsigned max_depth;
    /* Children still expected by each open container; its length is the
     * current depth, capped by max_depth, so it stays small. */
    g_autoptr(GArray) open = g_array_new(FALSE, FALSE, sizeof(uint64_t));

    if (!lim) {
        vtpm_proto_limits_init(&dflt);
        lim = &dflt;
    }
    max_depth = MIN(lim->max_depth, UNPACK_MAX_DEPTH);
    if (len > lim->max_body)
        return vtpm_error_set(err, BAD, "body of %zu bytes exceeds limit of %zu", len, lim->max_body);

    for (;;) {
        uint64_t items;
        int rc;

        if (pos >= len)
            return vtpm_error_set(err, BAD, "truncated at offset %zu", pos);
        if (++objects > lim->max_objects)
            return vtpm_error_set(err, BAD, "object at offset %zu exceeds limit of %zu objects", pos,
                                  lim->max_objects);
        rc = check_one(p, len, pos, open->len, max_depth, lim, &pos, &items, err);
        if (rc < 0)
            return rc;
        if (items) {
            g_array_append_val(open, items);
            continue;
        }
        /* One object is complete; close every container it completes. */
        while (open->len) {
            uint64_t *top = &g_array_index(open, uint64_t, open->len - 1);

            if (--*top > 0)
                break;
            g_array_set_size(open, open->len - 1);
        }
        if (!open->len)
            break;
    }
    if (pos != len)
        return vtpm_error_set(err, BAD, "%zu trailing bytes at offset %zu", len - pos, pos);
    return 0;
}

/* ---- helpers ----------------------------------------------------------- */

static const char *
type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative integer";
    case MSGPACK_OBJECT_FLOAT32: return "float32";
    case MSGPACK_OBJECT_FLOAT64: return "float64";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    }
    return "unknown";
}

/* "where.key", or "key" at the top level (where NULL or ""). */
static char *
path_join(const char *where, const char *key)
{
    if (!where || !*where)
        return g_strdup(key);
    return g_strconcat(where, ".", key, NULL);
}

/* Peer-chosen map keys appear in messages; escape them so that a message
 * stays printable ASCII. */
static char *
path_join_escaped(const char *where, const char *key)
{
    g_autofree char *esc = g_strescape(key, NULL);

    return path_join(where, esc);
}

static int
bad_type(const char *where, const char *key, const char *expected, const msgpack_object *got,
         vtpm_error *err)
{
    g_autofree char *path = path_join(where, key);

    return vtpm_error_set(err, BAD, "%s: expected %s, got %s", path, expected, type_name(got));
}

/* NULL when @s is acceptable text of at most @max bytes, else the reason. */
static const char *
str_problem(const msgpack_object_str *s, size_t max, char *buf, size_t bufsz)
{
    if (s->size > max) {
        g_snprintf(buf, bufsz, "string of %" PRIu32 " bytes exceeds limit of %zu", s->size, max);
        return buf;
    }
    if (s->size && memchr(s->ptr, '\0', s->size))
        return "string contains a NUL byte";
    if (s->size && !g_utf8_validate_len(s->ptr, s->size, NULL))
        return "string is not valid UTF-8";
    return NULL;
}

static int
str_copy(const msgpack_object *o, const char *where, const char *key, size_t max, char **out,
         vtpm_error *err)
{
    char buf[96];
    const char *why;

    if (o->type != MSGPACK_OBJECT_STR)
        return bad_type(where, key, "str", o, err);
    why = str_problem(&o->via.str, max, buf, sizeof(buf));
    if (why) {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: %s", path, why);
    }
    *out = g_strndup(o->via.str.ptr, o->via.str.size);
    return 0;
}

static bool
str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);

    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}

/* ---- accessors --------------------------------------------------------- */

const msgpack_object *
vtpm_proto_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP || !key)
        return NULL;
    /* First match wins; duplicates are not rejected, but every reader in
     * vtpmd goes through here so they all see the same value. */
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];

        if (str_eq(&kv->key, key))
            return kv->val.type == MSGPACK_OBJECT_NIL ? NULL : &kv->val;
    }
    return NULL;
}

/* The value under @key; NULL (and 0) when absent and optional. */
static int
lookup(const msgpack_object *map, const char *where, const char *key, bool required,
       const msgpack_object **out, vtpm_error *err)
{
    const msgpack_object *o;

    if (!map || map->type != MSGPACK_OBJECT_MAP) {
        if (!map)
            return vtpm_error_set(err, BAD, "%s: missing map", where && *where ? where : "body");
        return vtpm_error_set(err, BAD, "%s: expected map, got %s", where && *where ? where : "body",
                              type_name(map));
    }
    o = vtpm_proto_map_get(map, key);
    if (!o && required) {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: missing required key", path);
    }
    *out = o;
    return 0;
}

int
vtpm_proto_get_bool(const msgpack_object *map, const char *where, const char *key, bool required,
                    bool dflt, bool *out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    int rc = lookup(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    if (!o) {
        *out = dflt;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return bad_type(where, key, "bool", o, err);
    *out = o->via.boolean;
    return 0;
}

int
vtpm_proto_get_uint(const msgpack_object *map, const char *where, const char *key, bool required,
                    uint64_t dflt, uint64_t *out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    int rc = lookup(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    if (!o) {
        *out = dflt;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bad_type(where, key, "unsigned integer", o, err);
    *out = o->via.u64;
    return 0;
}

int
vtpm_proto_get_str(const msgpack_object *map, const char *where, const char *key, bool required,
                   size_t max_len, char **out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    char *s = NULL;
    int rc = lookup(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    if (o) {
        rc = str_copy(o, where, key, max_len, &s, err);
        if (rc < 0)
            return rc;
    }
    *out = s;
    return 0;
}

int
vtpm_proto_get_bin(const msgpack_object *map, const char *where, const char *key, bool required,
                   size_t max_len, GBytes **out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    int rc = lookup(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    if (!o) {
        *out = NULL;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_BIN)
        return bad_type(where, key, "bin", o, err);
    if (o->via.bin.size > max_len) {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: bin of %" PRIu32 " bytes exceeds limit of %zu", path,
                              o->via.bin.size, max_len);
    }
    /* bin carries only secrets: wiped when the last reference goes. */
    *out = vtpm_bytes_new_wiped(g_memdup2(o->via.bin.ptr, o->via.bin.size), o->via.bin.size);
    return 0;
}

int
vtpm_proto_get_map(const msgpack_object *map, const char *where, const char *key, bool required,
                   const msgpack_object **out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    int rc = lookup(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    if (o && o->type != MSGPACK_OBJECT_MAP)
        return bad_type(where, key, "map", o, err);
    *out = o;
    return 0;
}

int
vtpm_proto_get_strmap(const msgpack_object *map, const char *where, const char *key, bool required,
                      GHashTable **out, vtpm_error *err)
{
    const msgpack_object *o = NULL;
    g_autoptr(GHashTable) tab = NULL;
    g_autofree char *path = NULL;
    int rc = vtpm_proto_get_map(map, where, key, required, &o, err);

    if (rc < 0)
        return rc;
    tab = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (!o) {
        *out = g_steal_pointer(&tab);
        return 0;
    }
    path = path_join(where, key);
    if (o->via.map.size > VTPM_PROTO_MAX_STRMAP)
        return vtpm_error_set(err, BAD, "%s: %" PRIu32 " entries exceed limit of %d", path,
                              o->via.map.size, VTPM_PROTO_MAX_STRMAP);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        g_autofree char *k = NULL;
        g_autofree char *v = NULL;
        g_autofree char *kpath = NULL;
        char buf[96];
        const char *why;

        if (kv->key.type != MSGPACK_OBJECT_STR)
            return vtpm_error_set(err, BAD, "%s: key of entry %" PRIu32 ": expected str, got %s", path, i,
                                  type_name(&kv->key));
        why = str_problem(&kv->key.via.str, VTPM_PROTO_MAX_KEY, buf, sizeof(buf));
        if (why)
            return vtpm_error_set(err, BAD, "%s: key of entry %" PRIu32 ": %s", path, i, why);
        k = g_strndup(kv->key.via.str.ptr, kv->key.via.str.size);
        kpath = path_join_escaped(path, k);
        if (g_hash_table_contains(tab, k))
            return vtpm_error_set(err, BAD, "%s: duplicate key", kpath);
        if (kv->val.type != MSGPACK_OBJECT_STR)
            return vtpm_error_set(err, BAD, "%s: expected str, got %s", kpath, type_name(&kv->val));
        why = str_problem(&kv->val.via.str, VTPM_PROTO_MAX_FIELD, buf, sizeof(buf));
        if (why)
            return vtpm_error_set(err, BAD, "%s: %s", kpath, why);
        v = g_strndup(kv->val.via.str.ptr, kv->val.via.str.size);
        g_hash_table_insert(tab, g_steal_pointer(&k), g_steal_pointer(&v));
    }
    *out = g_steal_pointer(&tab);
    return 0;
}

/* ---- request envelope -------------------------------------------------- */

/* Copy the body, unpack it and require a map at the top.  msgpack-c points
 * str/bin objects into the buffer it parsed, hence the copy. */
static int
unpack_body(const void *data, size_t len, const vtpm_proto_limits *lim, const char *what,
            char **out_body, msgpack_zone **out_zone, msgpack_object *out_obj, vtpm_error *err)
{
    g_autofree char *body = NULL;
    msgpack_unpacked up;
    msgpack_unpack_return ur;
    size_t off = 0;
    int rc = vtpm_proto_check(data, len, lim, err);

    if (rc < 0)
        return rc;
    body = g_memdup2(data, len);
    msgpack_unpacked_init(&up);
    ur = msgpack_unpack_next(&up, body, len, &off);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        msgpack_unpacked_destroy(&up);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: out of memory while decoding", what);
    }
    /* Unreachable after a passed check; kept so that a disagreement
     * between the walker and msgpack-c fails closed. */
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&up);
        return vtpm_error_set(err, BAD, "%s: undecodable msgpack", what);
    }
    if (up.data.type != MSGPACK_OBJECT_MAP) {
        rc = vtpm_error_set(err, BAD, "%s: expected map, got %s", what, type_name(&up.data));
        msgpack_unpacked_destroy(&up);
        return rc;
    }
    *out_obj = up.data;
    *out_zone = msgpack_unpacked_release_zone(&up);
    *out_body = g_steal_pointer(&body);
    return 0;
}

/* `v` must be 1.  @who names our side in the UnsupportedVersion message. */
static int
check_version(const msgpack_object *top, const char *who, vtpm_error *err)
{
    const msgpack_object *v = vtpm_proto_map_get(top, "v");

    if (!v)
        return vtpm_error_set(err, BAD, "v: missing required key");
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_VERSION,
                              "unsupported protocol version %" PRId64 "; this %s speaks %d", v->via.i64,
                              who, VTPM_PROTO_VERSION);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return vtpm_error_set(err, BAD, "v: expected integer, got %s", type_name(v));
    if (v->via.u64 != VTPM_PROTO_VERSION)
        return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_VERSION,
                              "unsupported protocol version %" PRIu64 "; this %s speaks %d", v->via.u64,
                              who, VTPM_PROTO_VERSION);
    return 0;
}

/* context.request_id if it is usable as is; never fails, because it only
 * serves to label a fault that something else caused. */
static char *
peek_request_id(const msgpack_object *top)
{
    const msgpack_object *ctx = vtpm_proto_map_get(top, "context");
    const msgpack_object *rid = vtpm_proto_map_get(ctx, "request_id");
    char buf[96];

    if (!rid || rid->type != MSGPACK_OBJECT_STR ||
        str_problem(&rid->via.str, MAX_CONTEXT_STR, buf, sizeof(buf)))
        return NULL;
    return g_strndup(rid->via.str.ptr, rid->via.str.size);
}

int
vtpm_proto_check_method(const char *m, vtpm_error *err)
{
    if (!m || !*m)
        return vtpm_error_set(err, BAD, "method: must not be empty");
    if (strlen(m) > MAX_METHOD)
        return vtpm_error_set(err, BAD, "method: longer than %d bytes", MAX_METHOD);
    for (const char *c = m; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || *c == '_'))
            return vtpm_error_set(err, BAD, "method: only [a-z_] allowed, found 0x%02x at position %zu",
                                  (unsigned char)*c, (size_t)(c - m));
    }
    return 0;
}

char *
vtpm_proto_worker_host_problem(const char *h)
{
    size_t n = strlen(h);

    if (n > 255)
        return g_strdup_printf("longer than 255 characters (%zu)", n);
    for (const char *p = h; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
            return g_strdup_printf("'%s' contains '%c' (allowed: A-Z a-z 0-9 . _ -)", h, *p);
    }
    return NULL;
}

static int
decode_envelope(vtpm_request *req, const msgpack_object *top, vtpm_error *err)
{
    const msgpack_object *args = NULL, *ctx = NULL;
    int rc;

    rc = check_version(top, "worker", err);
    if (rc < 0)
        return rc;
    rc = vtpm_proto_get_str(top, NULL, "method", true, MAX_METHOD, &req->method, err);
    if (rc < 0)
        return rc;
    rc = vtpm_proto_check_method(req->method, err);
    if (rc < 0)
        return rc;
    rc = vtpm_proto_get_map(top, NULL, "args", false, &args, err);
    if (rc < 0)
        return rc;
    if (args)
        req->args = *args;
    else
        req->args = (msgpack_object){ .type = MSGPACK_OBJECT_MAP };
    rc = vtpm_proto_get_map(top, NULL, "context", false, &ctx, err);
    if (rc < 0)
        return rc;
    if (ctx) {
        if ((rc = vtpm_proto_get_str(ctx, "context", "request_id", false, MAX_CONTEXT_STR,
                                     &req->request_id, err)) < 0 ||
            (rc = vtpm_proto_get_str(ctx, "context", "user_id", false, MAX_CONTEXT_STR, &req->user_id,
                                     err)) < 0 ||
            (rc = vtpm_proto_get_str(ctx, "context", "project_id", false, MAX_CONTEXT_STR,
                                     &req->project_id, err)) < 0)
            return rc;
    }
    req->has_deadline = vtpm_proto_map_get(top, "deadline_ms") != NULL;
    return vtpm_proto_get_uint(top, NULL, "deadline_ms", false, 0, &req->deadline_ms, err);
}

int
vtpm_proto_decode_request(const void *data, size_t len, const vtpm_proto_limits *lim,
                          vtpm_request **out, char **out_id, vtpm_error *err)
{
    g_autoptr(vtpm_request) req = g_new0(vtpm_request, 1);
    g_autofree char *id = NULL;
    msgpack_object top;
    int rc;

    rc = unpack_body(data, len, lim, "request", &req->body, &req->zone, &top, err);
    if (rc < 0)
        return rc;
    req->body_len = len;
    id = peek_request_id(&top);
    rc = decode_envelope(req, &top, err);
    if (out_id && id)
        *out_id = g_steal_pointer(&id);
    if (rc < 0)
        return rc;
    *out = g_steal_pointer(&req);
    return 0;
}

void
vtpm_request_free(vtpm_request *req)
{
    if (!req)
        return;
    g_free(req->method);
    g_free(req->request_id);
    g_free(req->user_id);
    g_free(req->project_id);
    if (req->zone)
        msgpack_zone_free(req->zone);
    /* The body may hold instance.vtpm.secret. */
    if (req->body)
        explicit_bzero(req->body, req->body_len);
    g_free(req->body);
    g_free(req);
}

/* ---- secrets ------------------------------------------------------------ */

typedef struct {
    void *data;
    size_t len;
} wiped_buf;

static void
wiped_free(gpointer p)
{
    wiped_buf *b = p;

    if (b->data) {
        explicit_bzero(b->data, b->len);
        g_free(b->data);
    }
    g_free(b);
}

GBytes *
vtpm_bytes_new_wiped(gpointer data, gsize len)
{
    wiped_buf *b = g_new(wiped_buf, 1);

    b->data = data;
    b->len = len;
    return g_bytes_new_with_free_func(data, len, wiped_free, b);
}

/* ---- instance spec ----------------------------------------------------- */

int
vtpm_proto_parse_uuid(const char *s, const char *where, char out[37], vtpm_error *err)
{
    uuid_t u;
    const char *w = where && *where ? where : "uuid";

    if (!s)
        return vtpm_error_set(err, BAD, "%s: missing UUID", w);
    /* uuid_parse() has accepted other lengths in some libuuid versions;
     * the canonical form is exactly 36 characters. */
    if (strlen(s) != 36 || uuid_parse(s, u) != 0)
        return vtpm_error_set(err, BAD, "%s: not a UUID in canonical 8-4-4-4-12 hex form", w);
    if (uuid_is_null(u))
        return vtpm_error_set(err, BAD, "%s: the nil UUID is not a valid instance UUID", w);
    uuid_unparse_lower(u, out);
    return 0;
}

bool
vtpm_proto_is_lower_hex(const char *s, size_t len)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++) {
        if (g_ascii_xdigit_value(s[n]) < 0 || g_ascii_isupper(s[n]))
            return false;
    }
    return n == len;
}

int
vtpm_proto_check_host(const char *h, const char *where, vtpm_error *err)
{
    size_t n = h ? strlen(h) : 0;

    if (n == 0 || n > 255)
        return vtpm_error_set(err, BAD, "%s: 1..255 characters", where);
    for (const char *p = h; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-' && *p != '_' && *p != ':')
            return vtpm_error_set(err, BAD, "%s: character 0x%02x not allowed in a host name",
                                  where, (unsigned)(unsigned char)*p);
    }
    return 0;
}

/* A range-checked required uint. */
static int
get_uint_range(const msgpack_object *map, const char *where, const char *key, uint64_t lo, uint64_t hi,
               uint64_t *out, vtpm_error *err)
{
    uint64_t v = 0;
    int rc = vtpm_proto_get_uint(map, where, key, true, 0, &v, err);

    if (rc < 0)
        return rc;
    if (v < lo || v > hi) {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64, path, v,
                              lo, hi);
    }
    *out = v;
    return 0;
}

/* A required, non-empty string. */
static int
get_name(const msgpack_object *map, const char *where, const char *key, char **out, vtpm_error *err)
{
    g_autofree char *s = NULL;
    int rc = vtpm_proto_get_str(map, where, key, true, MAX_NAME, &s, err);

    if (rc < 0)
        return rc;
    if (!*s) {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: must not be empty", path);
    }
    *out = g_steal_pointer(&s);
    return 0;
}

static int
expect_map(const msgpack_object *obj, const char *where, vtpm_error *err)
{
    if (!obj)
        return vtpm_error_set(err, BAD, "%s: missing map", where);
    if (obj->type != MSGPACK_OBJECT_MAP)
        return vtpm_error_set(err, BAD, "%s: expected map, got %s", where, type_name(obj));
    return 0;
}

int
vtpm_proto_decode_flavor(const msgpack_object *obj, const char *where, vtpm_flavor **out,
                         vtpm_error *err)
{
    g_autoptr(vtpm_flavor) f = g_new0(vtpm_flavor, 1);
    const char *w = where && *where ? where : "flavor";
    int rc;

    if ((rc = expect_map(obj, w, err)) < 0 ||
        (rc = get_name(obj, w, "name", &f->name, err)) < 0 ||
        (rc = get_uint_range(obj, w, "vcpus", 1, 1024, &f->vcpus, err)) < 0 ||
        (rc = get_uint_range(obj, w, "memory_mb", 16, 16777216, &f->memory_mb, err)) < 0 ||
        (rc = vtpm_proto_get_strmap(obj, w, "extra_specs", false, &f->extra_specs, err)) < 0)
        return rc;
    *out = g_steal_pointer(&f);
    return 0;
}

static int
decode_image(const msgpack_object *obj, const char *where, vtpm_image **out, vtpm_error *err)
{
    g_autoptr(vtpm_image) img = g_new0(vtpm_image, 1);
    int rc;

    if ((rc = expect_map(obj, where, err)) < 0 ||
        (rc = get_name(obj, where, "id", &img->id, err)) < 0 ||
        (rc = vtpm_proto_get_str(obj, where, "name", false, MAX_NAME, &img->name, err)) < 0 ||
        (rc = vtpm_proto_get_strmap(obj, where, "properties", false, &img->properties, err)) < 0)
        return rc;
    if (!img->name)
        img->name = g_strdup("");
    *out = g_steal_pointer(&img);
    return 0;
}

static int
get_path(const msgpack_object *map, const char *where, const char *key, char **out, vtpm_error *err)
{
    g_autofree char *s = NULL;
    int rc = vtpm_proto_get_str(map, where, key, false, VTPM_PROTO_MAX_FIELD, &s, err);

    if (rc < 0)
        return rc;
    if (s && s[0] != '/') {
        g_autofree char *path = path_join(where, key);

        return vtpm_error_set(err, BAD, "%s: must be an absolute path", path);
    }
    *out = g_steal_pointer(&s);
    return 0;
}

static void
boot_clear(vtpm_boot *b)
{
    g_clear_pointer(&b->kernel, g_free);
    g_clear_pointer(&b->initrd, g_free);
    g_clear_pointer(&b->cmdline, g_free);
    g_clear_pointer(&b->disk, g_free);
    b->present = false;
}

static int
decode_boot(const msgpack_object *obj, const char *where, vtpm_boot *out, vtpm_error *err)
{
    vtpm_boot b = { .present = true };
    int rc;

    if ((rc = get_path(obj, where, "kernel", &b.kernel, err)) < 0 ||
        (rc = get_path(obj, where, "initrd", &b.initrd, err)) < 0 ||
        (rc = vtpm_proto_get_str(obj, where, "cmdline", false, VTPM_PROTO_MAX_FIELD, &b.cmdline, err)) < 0 ||
        (rc = get_path(obj, where, "disk", &b.disk, err)) < 0)
        goto fail;
    if (b.kernel && b.disk)
        rc = vtpm_error_set(err, BAD, "%s: kernel and disk are mutually exclusive", where);
    else if (!b.kernel && !b.disk)
        rc = vtpm_error_set(err, BAD, "%s: one of kernel or disk is required", where);
    else if (b.disk && (b.initrd || b.cmdline))
        rc = vtpm_error_set(err, BAD, "%s: initrd and cmdline require kernel, not disk", where);
    if (rc < 0)
        goto fail;
    *out = b;
    return 0;

fail:
    boot_clear(&b);
    return rc;
}

int
vtpm_proto_decode_instance(const msgpack_object *obj, const char *where, vtpm_instance **out,
                           vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = g_new0(vtpm_instance, 1);
    const char *w = where && *where ? where : "instance";
    g_autofree char *uuid = NULL;
    g_autofree char *uuid_path = path_join(w, "uuid");
    g_autofree char *flavor_path = path_join(w, "flavor");
    g_autofree char *image_path = path_join(w, "image");
    g_autofree char *boot_path = path_join(w, "boot");
    const msgpack_object *sub = NULL;
    int rc;

    if ((rc = expect_map(obj, w, err)) < 0 ||
        (rc = vtpm_proto_get_str(obj, w, "uuid", true, VTPM_PROTO_MAX_FIELD, &uuid, err)) < 0 ||
        (rc = vtpm_proto_parse_uuid(uuid, uuid_path, inst->uuid, err)) < 0 ||
        (rc = vtpm_proto_get_str(obj, w, "name", false, MAX_NAME, &inst->name, err)) < 0)
        return rc;

    if ((rc = vtpm_proto_get_map(obj, w, "flavor", true, &sub, err)) < 0 ||
        (rc = vtpm_proto_decode_flavor(sub, flavor_path, &inst->flavor, err)) < 0)
        return rc;
    if ((rc = vtpm_proto_get_map(obj, w, "image", true, &sub, err)) < 0 ||
        (rc = decode_image(sub, image_path, &inst->image, err)) < 0)
        return rc;
    if ((rc = vtpm_proto_get_map(obj, w, "boot", false, &sub, err)) < 0)
        return rc;
    if (sub && (rc = decode_boot(sub, boot_path, &inst->boot, err)) < 0)
        return rc;
    if ((rc = vtpm_proto_decode_secret(obj, w, &inst->secret, err)) < 0)
        return rc;
    *out = g_steal_pointer(&inst);
    return 0;
}

int
vtpm_proto_decode_secret(const msgpack_object *obj, const char *where, GBytes **out,
                         vtpm_error *err)
{
    g_autofree char *vtpm_path = path_join(where, "vtpm");
    const msgpack_object *sub = NULL;
    GBytes *secret = NULL;
    int rc;

    if ((rc = vtpm_proto_get_map(obj, where, "vtpm", false, &sub, err)) < 0)
        return rc;
    if (sub && (rc = vtpm_proto_get_bin(sub, vtpm_path, "secret", false, VTPM_PROTO_MAX_FIELD,
                                        &secret, err)) < 0)
        return rc;
    if (secret && g_bytes_get_size(secret) == 0) {
        g_bytes_unref(secret);
        return vtpm_error_set(err, BAD, "%s.secret: must not be empty", vtpm_path);
    }
    *out = secret;
    return 0;
}

int
vtpm_proto_arg_instance(const vtpm_request *req, vtpm_instance **out, vtpm_error *err)
{
    const msgpack_object *obj = NULL;
    int rc = vtpm_proto_get_map(&req->args, "args", "instance", true, &obj, err);

    if (rc < 0)
        return rc;
    return vtpm_proto_decode_instance(obj, "args.instance", out, err);
}

void
vtpm_flavor_free(vtpm_flavor *f)
{
    if (!f)
        return;
    g_free(f->name);
    if (f->extra_specs)
        g_hash_table_unref(f->extra_specs);
    g_free(f);
}

void
vtpm_image_free(vtpm_image *img)
{
    if (!img)
        return;
    g_free(img->id);
    g_free(img->name);
    if (img->properties)
        g_hash_table_unref(img->properties);
    g_free(img);
}

void
vtpm_instance_free(vtpm_instance *inst)
{
    if (!inst)
        return;
    g_free(inst->name);
    vtpm_flavor_free(inst->flavor);
    vtpm_image_free(inst->image);
    boot_clear(&inst->boot);
    if (inst->secret)
        g_bytes_unref(inst->secret);
    g_free(inst);
}

/* ---- packing ----------------------------------------------------------- */

/* Packers that write into a GByteArray cannot fail: GLib aborts on OOM. */
static int
array_write(void *data, const char *buf, size_t len)
{
    g_byte_array_append(data, (const guint8 *)buf, (guint)len);
    return 0;
}

static void
packer_init(msgpack_packer *pk, GByteArray *buf)
{
    msgpack_packer_init(pk, buf, array_write);
}

int
vtpm_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n;

    if (!s)
        return msgpack_pack_nil(pk) == 0 ? 0 : -(int)VTPM_FAULT_INTERNAL;
    n = strlen(s);
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0)
        return -(int)VTPM_FAULT_INTERNAL;
    return 0;
}

int
vtpm_pack_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
    int rc = vtpm_pack_str(pk, key);

    return rc < 0 ? rc : vtpm_pack_str(pk, val);
}

int
vtpm_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val)
{
    int rc = vtpm_pack_str(pk, key);

    if (rc < 0)
        return rc;
    return msgpack_pack_uint64(pk, val) == 0 ? 0 : -(int)VTPM_FAULT_INTERNAL;
}

int
vtpm_pack_kv_bool(msgpack_packer *pk, const char *key, bool val)
{
    int rc = vtpm_pack_str(pk, key);

    if (rc < 0)
        return rc;
    rc = val ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    return rc == 0 ? 0 : -(int)VTPM_FAULT_INTERNAL;
}

static bool
is_map_header(uint8_t b)
{
    return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}

/* @raw must be one packed map; NULL/0 means {}. */
static void
pack_raw_map(msgpack_packer *pk, const void *raw, size_t len)
{
    if (raw && len)
        array_write(pk->data, raw, len);
    else
        msgpack_pack_map(pk, 0);
}

GBytes *
vtpm_proto_reply_ok(const void *result, size_t result_len)
{
    g_autoptr(GByteArray) buf = NULL;
    msgpack_packer pk;

    /* A malformed result would make the whole reply undecodable for the
     * caller; a fault is the only honest answer then. */
    if (result && result_len &&
        (!is_map_header(((const uint8_t *)result)[0]) || vtpm_proto_check(result, result_len, NULL, NULL) < 0)) {
        vtpm_error e;

        vtpm_error_set(&e, VTPM_FAULT_INTERNAL, "worker produced a malformed result");
        return vtpm_proto_reply_fault(&e);
    }
    buf = g_byte_array_new();
    packer_init(&pk, buf);
    msgpack_pack_map(&pk, 3);
    vtpm_pack_kv_uint(&pk, "v", VTPM_PROTO_VERSION);
    vtpm_pack_kv_bool(&pk, "ok", true);
    vtpm_pack_str(&pk, "result");
    pack_raw_map(&pk, result, result_len);
    return g_byte_array_free_to_bytes(g_steal_pointer(&buf));
}

GBytes *
vtpm_proto_reply_fault(const vtpm_error *err)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    vtpm_fault code = err ? err->code : VTPM_FAULT_INTERNAL;
    g_autofree char *msg = NULL;
    msgpack_packer pk;

    if ((int)code <= (int)VTPM_FAULT_NONE || (int)code >= (int)VTPM_FAULT__COUNT)
        code = VTPM_FAULT_INTERNAL;
    /* vtpm_error truncates by bytes and may cut a UTF-8 sequence; the
     * peer validates str fields, so repair rather than ship invalid text. */
    msg = err ? g_utf8_make_valid(err->message, strnlen(err->message, sizeof(err->message)))
              : g_strdup("unknown error");
    packer_init(&pk, buf);
    msgpack_pack_map(&pk, 3);
    vtpm_pack_kv_uint(&pk, "v", VTPM_PROTO_VERSION);
    vtpm_pack_kv_bool(&pk, "ok", false);
    vtpm_pack_str(&pk, "fault");
    msgpack_pack_map(&pk, 3);
    vtpm_pack_kv_str(&pk, "code", vtpm_fault_name(code));
    vtpm_pack_kv_str(&pk, "message", msg);
    vtpm_pack_kv_bool(&pk, "retryable", vtpm_fault_retryable(code) && !(err && err->final));
    return g_byte_array_free_to_bytes(g_steal_pointer(&buf));
}

GBytes *
vtpm_proto_request_new(const char *method, const void *args, size_t args_len, const char *request_id,
                       uint64_t deadline_ms)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    msgpack_packer pk;

    packer_init(&pk, buf);
    msgpack_pack_map(&pk, deadline_ms ? 5 : 4);
    vtpm_pack_kv_uint(&pk, "v", VTPM_PROTO_VERSION);
    vtpm_pack_kv_str(&pk, "method", method);
    vtpm_pack_str(&pk, "args");
    pack_raw_map(&pk, args, args_len);
    vtpm_pack_str(&pk, "context");
    msgpack_pack_map(&pk, request_id ? 1 : 0);
    if (request_id)
        vtpm_pack_kv_str(&pk, "request_id", request_id);
    if (deadline_ms)
        vtpm_pack_kv_uint(&pk, "deadline_ms", deadline_ms);
    return g_byte_array_free_to_bytes(g_steal_pointer(&buf));
}

/* ---- replies ------------------------------------------------------------ */

static int
decode_reply_fields(vtpm_reply *rep, const msgpack_object *top, vtpm_error *err)
{
    const msgpack_object *sub = NULL;
    int rc, code;

    if ((rc = check_version(top, "client", err)) < 0 ||
        (rc = vtpm_proto_get_bool(top, NULL, "ok", true, false, &rep->ok, err)) < 0)
        return rc;
    if (rep->ok) {
        if ((rc = vtpm_proto_get_map(top, NULL, "result", true, &sub, err)) < 0)
            return rc;
        rep->result = *sub;
        rep->fault = VTPM_FAULT_NONE;
        return 0;
    }
    if ((rc = vtpm_proto_get_map(top, NULL, "fault", true, &sub, err)) < 0 ||
        (rc = vtpm_proto_get_str(sub, "fault", "code", true, MAX_FAULT_CODE, &rep->fault_code, err)) < 0 ||
        (rc = vtpm_proto_get_str(sub, "fault", "message", true, VTPM_PROTO_MAX_FIELD, &rep->fault_message,
                                 err)) < 0 ||
        (rc = vtpm_proto_get_bool(sub, "fault", "retryable", true, false, &rep->retryable, err)) < 0)
        return rc;
    code = vtpm_fault_from_name(rep->fault_code);
    rep->fault = code < 0 ? VTPM_FAULT_INTERNAL : (vtpm_fault)code;
    rep->result = (msgpack_object){ .type = MSGPACK_OBJECT_MAP };
    return 0;
}

int
vtpm_proto_decode_reply(const void *data, size_t len, const vtpm_proto_limits *lim, vtpm_reply **out,
                        vtpm_error *err)
{
    g_autoptr(vtpm_reply) rep = g_new0(vtpm_reply, 1);
    msgpack_object top;
    int rc;

    rc = unpack_body(data, len, lim, "reply", &rep->body, &rep->zone, &top, err);
    if (rc < 0)
        return rc;
    rep->body_len = len;
    rc = decode_reply_fields(rep, &top, err);
    if (rc < 0)
        return rc;
    *out = g_steal_pointer(&rep);
    return 0;
}

void
vtpm_reply_free(vtpm_reply *rep)
{
    if (!rep)
        return;
    g_free(rep->fault_code);
    g_free(rep->fault_message);
    if (rep->zone)
        msgpack_zone_free(rep->zone);
    g_free(rep->body);
    g_free(rep);
}
