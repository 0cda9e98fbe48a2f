/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "mpjson.h"

#define BAD VTPM_FAULT_BAD_REQUEST
#define BIN_KEY "$bin"

/* ---- JSON -> msgpack ---------------------------------------------------- */

static bool
b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* g_base64_decode() skips characters it does not know, so it would turn a
 * typo into silently different bytes; insist on canonical padded base64. */
static bool
b64_valid(const char *s)
{
    size_t n = strlen(s), pad = 0;

    if (n % 4)
        return false;
    while (pad < 2 && n > pad && s[n - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < n - pad; i++) {
        if (!b64_char(s[i]))
            return false;
    }
    return true;
}

static int
pack_rc(int rc, vtpm_error *err)
{
    return rc == 0 ? 0 : vtpm_error_set(err, VTPM_FAULT_INTERNAL, "msgpack: out of memory");
}

static int
pack_text(msgpack_packer *pk, const char *s, vtpm_error *err)
{
    size_t n = strlen(s);

    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0)
        return pack_rc(-1, err);
    return 0;
}

/* The object is exactly {"$bin": ...}. */
static bool
is_bin_object(JsonObject *o)
{
    return json_object_get_size(o) == 1 && json_object_has_member(o, BIN_KEY);
}

static int
pack_bin(JsonObject *o, msgpack_packer *pk, vtpm_error *err)
{
    JsonNode *v = json_object_get_member(o, BIN_KEY);
    g_autofree guchar *bytes = NULL;
    gsize n = 0;
    const char *s;

    if (json_node_get_value_type(v) != G_TYPE_STRING)
        return vtpm_error_set(err, BAD, "JSON: \"" BIN_KEY "\" must hold a base64 string");
    s = json_node_get_string(v);
    if (!b64_valid(s))
        return vtpm_error_set(err, BAD, "JSON: \"" BIN_KEY "\" is not valid base64");
    bytes = g_base64_decode(s, &n);
    if (msgpack_pack_bin(pk, n) != 0 || msgpack_pack_bin_body(pk, bytes, n) != 0)
        return pack_rc(-1, err);
    return 0;
}

static int from_node(JsonNode *node, msgpack_packer *pk, unsigned depth, vtpm_error *err);

static int
pack_object(JsonObject *o, msgpack_packer *pk, unsigned depth, vtpm_error *err)
{
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    int rc;

    if (is_bin_object(o))
        return pack_bin(o, pk, err);
    if ((rc = pack_rc(msgpack_pack_map(pk, json_object_get_size(o)), err)) < 0)
        return rc;
    json_object_iter_init_ordered(&it, o);
    while (json_object_iter_next_ordered(&it, &name, &member)) {
        if ((rc = pack_text(pk, name, err)) < 0 || (rc = from_node(member, pk, depth, err)) < 0)
            return rc;
    }
    return 0;
}

static int
pack_array(JsonArray *a, msgpack_packer *pk, unsigned depth, vtpm_error *err)
{
    guint n = json_array_get_length(a);
    int rc;

    if ((rc = pack_rc(msgpack_pack_array(pk, n), err)) < 0)
        return rc;
    for (guint i = 0; i < n; i++) {
        if ((rc = from_node(json_array_get_element(a, i), pk, depth, err)) < 0)
            return rc;
    }
    return 0;
}

static int
pack_value(JsonNode *node, msgpack_packer *pk, vtpm_error *err)
{
    GType t = json_node_get_value_type(node);

    if (t == G_TYPE_INT64) {
        gint64 v = json_node_get_int(node);

        return pack_rc(v >= 0 ? msgpack_pack_uint64(pk, (uint64_t)v) : msgpack_pack_int64(pk, v), err);
    }
    if (t == G_TYPE_DOUBLE)
        return pack_rc(msgpack_pack_double(pk, json_node_get_double(node)), err);
    if (t == G_TYPE_BOOLEAN)
        return pack_rc(json_node_get_boolean(node) ? msgpack_pack_true(pk) : msgpack_pack_false(pk), err);
    if (t == G_TYPE_STRING)
        return pack_text(pk, json_node_get_string(node), err);
    return vtpm_error_set(err, BAD, "JSON: unsupported value type %s", g_type_name(t));
}

static int
from_node(JsonNode *node, msgpack_packer *pk, unsigned depth, vtpm_error *err)
{
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return pack_rc(msgpack_pack_nil(pk), err);
    if (JSON_NODE_HOLDS_VALUE(node))
        return pack_value(node, pk, err);
    if (depth >= VTPM_MPJSON_MAX_DEPTH)
        return vtpm_error_set(err, BAD, "JSON: nesting deeper than %d levels", VTPM_MPJSON_MAX_DEPTH);
    if (JSON_NODE_HOLDS_OBJECT(node))
        return pack_object(json_node_get_object(node), pk, depth + 1, err);
    return pack_array(json_node_get_array(node), pk, depth + 1, err);
}

int
vtpm_mpjson_from_json(JsonNode *node, msgpack_packer *pk, vtpm_error *err)
{
    return from_node(node, pk, 0, err);
}

/* json-glib's parser recurses once per nesting level, so deep input must be
 * refused before it is parsed.  Strings and comments are skipped so that
 * brackets in them do not count; being wrong about exotic syntax only
 * matters past a token the parser rejects anyway. */
static int
prescan_depth(const char *s, size_t n, vtpm_error *err)
{
    unsigned depth = 0;
    char quote = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (quote) {
            if (c == '\\')
                i++;
            else if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '/' && i + 1 < n && s[i + 1] == '/') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            const char *end = g_strstr_len(s + i + 2, (gssize)(n - i - 2), "*/");

            i = end ? (size_t)(end - s) + 1 : n;
        } else if (c == '[' || c == '{') {
            if (++depth > VTPM_MPJSON_MAX_DEPTH)
                return vtpm_error_set(err, BAD, "JSON: nesting deeper than %d levels", VTPM_MPJSON_MAX_DEPTH);
        } else if ((c == ']' || c == '}') && depth) {
            depth--;
        }
    }
    return 0;
}

static int
buffer_write(void *data, const char *buf, size_t len)
{
    g_byte_array_append(data, (const guint8 *)buf, (guint)len);
    return 0;
}

int
vtpm_mpjson_from_string(const char *json, gssize len, msgpack_sbuffer *out, vtpm_error *err)
{
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GByteArray) buf = NULL;
    size_t n = len < 0 ? strlen(json) : (size_t)len;
    msgpack_packer pk;
    JsonNode *root;
    int rc;

    if ((rc = prescan_depth(json, n, err)) < 0)
        return rc;
    parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, json, (gssize)n, &gerr))
        return vtpm_error_set(err, BAD, "JSON: %s", gerr->message);
    root = json_parser_get_root(parser);
    if (!root)
        return vtpm_error_set(err, BAD, "JSON: empty document");
    buf = g_byte_array_new();
    msgpack_packer_init(&pk, buf, buffer_write);
    if ((rc = vtpm_mpjson_from_json(root, &pk, err)) < 0)
        return rc;
    return pack_rc(msgpack_sbuffer_write(out, (const char *)buf->data, buf->len), err);
}

/* ---- msgpack -> JSON ---------------------------------------------------- */

/* Bounds recursion for objects that did not come through vtpm_proto_check;
 * msgpack-c itself never produces more than 32 levels. */
#define TO_JSON_MAX_DEPTH 64

static JsonNode *to_node(const msgpack_object *o, unsigned depth);

/* JSON strings here are C strings: an embedded NUL would silently cut the
 * text short, so it is shown as U+FFFD like any other invalid byte. */
static char *
valid_text(const char *p, uint32_t n)
{
    GString *s = g_string_sized_new(n);
    size_t i = 0;

    while (i < n) {
        const char *nul = memchr(p + i, '\0', n - i);
        size_t seg = nul ? (size_t)(nul - (p + i)) : n - i;
        g_autofree char *part = g_utf8_make_valid(p + i, (gssize)seg);

        g_string_append(s, part);
        if (nul)
            g_string_append(s, "\xef\xbf\xbd");
        i += seg + (nul ? 1 : 0);
    }
    return g_string_free(s, FALSE);
}

static JsonNode *
string_node(const char *p, uint32_t n)
{
    g_autofree char *s = valid_text(p, n);

    return json_node_init_string(json_node_alloc(), s);
}

static JsonNode *
bin_node(const msgpack_object_bin *b)
{
    g_autofree char *enc = g_base64_encode((const guchar *)b->ptr, b->size);
    g_autoptr(JsonObject) o = json_object_new();

    json_object_set_string_member(o, BIN_KEY, enc);
    return json_node_init_object(json_node_alloc(), o);
}

static char *
key_text(const msgpack_object *k, unsigned depth)
{
    g_autoptr(JsonNode) kn = NULL;

    if (k->type == MSGPACK_OBJECT_STR)
        return valid_text(k->via.str.ptr, k->via.str.size);
    kn = to_node(k, depth);
    return json_to_string(kn, FALSE);
}

static JsonNode *
map_node(const msgpack_object_map *m, unsigned depth)
{
    g_autoptr(JsonObject) o = json_object_new();

    for (uint32_t i = 0; i < m->size; i++) {
        g_autofree char *k = key_text(&m->ptr[i].key, depth);

        json_object_set_member(o, k, to_node(&m->ptr[i].val, depth));
    }
    return json_node_init_object(json_node_alloc(), o);
}

static JsonNode *
array_node(const msgpack_object_array *a, unsigned depth)
{
    g_autoptr(JsonArray) arr = json_array_sized_new(a->size);

    for (uint32_t i = 0; i < a->size; i++)
        json_array_add_element(arr, to_node(&a->ptr[i], depth));
    return json_node_init_array(json_node_alloc(), arr);
}

static JsonNode *
to_node(const msgpack_object *o, unsigned depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        return json_node_init_boolean(json_node_alloc(), o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX) {
            char buf[24];

            g_snprintf(buf, sizeof(buf), "%" PRIu64, o->via.u64);
            return json_node_init_string(json_node_alloc(), buf);
        }
        return json_node_init_int(json_node_alloc(), (gint64)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_node_init_int(json_node_alloc(), o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            break;
        return json_node_init_double(json_node_alloc(), o->via.f64);
    case MSGPACK_OBJECT_STR:
        return string_node(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return bin_node(&o->via.bin);
    case MSGPACK_OBJECT_MAP:
        if (depth >= TO_JSON_MAX_DEPTH)
            break;
        return map_node(&o->via.map, depth + 1);
    case MSGPACK_OBJECT_ARRAY:
        if (depth >= TO_JSON_MAX_DEPTH)
            break;
        return array_node(&o->via.array, depth + 1);
    case MSGPACK_OBJECT_NIL:
    case MSGPACK_OBJECT_EXT:
        break;
    }
    return json_node_init_null(json_node_alloc());
}

JsonNode *
vtpm_mpjson_to_json(const msgpack_object *obj)
{
    if (!obj)
        return json_node_init_null(json_node_alloc());
    return to_node(obj, 0);
}

char *
vtpm_mpjson_to_string(const msgpack_object *obj, bool pretty)
{
    g_autoptr(JsonNode) node = vtpm_mpjson_to_json(obj);

    return json_to_string(node, pretty);
}
