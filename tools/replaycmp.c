/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "vtpm/proto.h"
#include "mpjson.h"
#include "replaycmp.h"

enum { SHOW_MAX = 120 };

const char *const vtpm_replay_default_ignore[] = {
    "host",            /* the worker's name: replays go to other hosts */
    "libvirt_version", /* the hosts' software */
    "qemu_version",
    "arch",
    "state_dir",       /* per-host / per-run directories */
    "domain_xml",
    "console_log",
    "ref",             /* storage volume names of shelved state */
    "sha256",          /* state archives hold fresh TPMs' own keys */
    "bytes",
    "*_ms",            /* timings and timestamps */
    "*_us",
    "*_s",
    "*_at",
    "elapsed",
    "duration",
    "time",
    NULL,
};

vtpm_replay_ignore *
vtpm_replay_ignore_new(const char *const *extra)
{
    vtpm_replay_ignore *ig = g_new0(vtpm_replay_ignore, 1);

    ig->rules = g_ptr_array_new_with_free_func(g_free);
    for (const char *const *p = vtpm_replay_default_ignore; *p; p++)
        g_ptr_array_add(ig->rules, g_strdup(*p));
    for (const char *const *p = extra; p && *p; p++)
        g_ptr_array_add(ig->rules, g_strdup(*p));
    return ig;
}

void
vtpm_replay_ignore_free(vtpm_replay_ignore *ig)
{
    if (!ig)
        return;
    g_ptr_array_unref(ig->rules);
    g_free(ig);
}

bool
vtpm_replay_ignored(const vtpm_replay_ignore *ig, const char *path, const char *key)
{
    for (guint i = 0; ig && i < ig->rules->len; i++) {
        const char *rule = g_ptr_array_index(ig->rules, i);

        if (strchr(rule, '.')) {
            if (strcmp(rule, path) == 0)
                return true;
        } else if (rule[0] == '*') {
            if (key && g_str_has_suffix(key, rule + 1))
                return true;
        } else if (key && strcmp(rule, key) == 0) {
            return true;
        }
    }
    return false;
}

void
vtpm_replay_cmp_clear(vtpm_replay_cmp *c)
{
    g_clear_pointer(&c->first, g_free);
    c->ndiff = 0;
    c->match = true;
}

static char *
show(const msgpack_object *o)
{
    g_autofree char *s = NULL;

    if (!o)
        return g_strdup("absent");
    s = vtpm_mpjson_to_string(o, false);
    if (strlen(s) > SHOW_MAX)
        return g_strdup_printf("%.*s...", SHOW_MAX, s);
    return g_steal_pointer(&s);
}

static void
differ(vtpm_replay_cmp *out, const char *path, const msgpack_object *rec,
       const msgpack_object *new)
{
    out->match = false;
    out->ndiff++;
    if (!out->first) {
        g_autofree char *a = show(rec);
        g_autofree char *b = show(new);

        out->first = g_strdup_printf("%s: recorded %s, replayed %s", path, a, b);
    }
}

static const msgpack_object *
map_find(const msgpack_object *map, const msgpack_object *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (msgpack_object_equal(map->via.map.ptr[i].key, *key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static char *
key_path(const char *path, const msgpack_object *key, char **out_key)
{
    *out_key = key->type == MSGPACK_OBJECT_STR
                   ? g_strndup(key->via.str.ptr, key->via.str.size)
                   : vtpm_mpjson_to_string(key, false);
    return g_strdup_printf("%s%s%s", path, *path ? "." : "", *out_key);
}

static void
diff_maps(const msgpack_object *rec, const msgpack_object *new, const char *path,
          const vtpm_replay_ignore *ig, vtpm_replay_cmp *out)
{
    for (int side = 0; side < 2; side++) {
        const msgpack_object *a = side ? new : rec, *b = side ? rec : new;

        for (uint32_t i = 0; i < a->via.map.size; i++) {
            const msgpack_object_kv *kv = &a->via.map.ptr[i];
            const msgpack_object *other = map_find(b, &kv->key);
            g_autofree char *key = NULL;
            g_autofree char *p = key_path(path, &kv->key, &key);

            if (vtpm_replay_ignored(ig, p, key))
                continue;
            if (!other)
                differ(out, p, side ? NULL : &kv->val, side ? &kv->val : NULL);
            else if (!side) /* keys on both sides: compared once */
                vtpm_replay_diff(&kv->val, other, p, ig, out);
        }
    }
}

void
vtpm_replay_diff(const msgpack_object *rec, const msgpack_object *new, const char *path,
                 const vtpm_replay_ignore *ig, vtpm_replay_cmp *out)
{
    if (rec->type == MSGPACK_OBJECT_MAP && new->type == MSGPACK_OBJECT_MAP) {
        diff_maps(rec, new, path, ig, out);
        return;
    }
    if (rec->type == MSGPACK_OBJECT_ARRAY && new->type == MSGPACK_OBJECT_ARRAY) {
        uint32_t n = MAX(rec->via.array.size, new->via.array.size);

        for (uint32_t i = 0; i < n; i++) {
            g_autofree char *p = g_strdup_printf("%s[%u]", path, i);

            if (i >= rec->via.array.size || i >= new->via.array.size)
                differ(out, p, i < rec->via.array.size ? &rec->via.array.ptr[i] : NULL,
                       i < new->via.array.size ? &new->via.array.ptr[i] : NULL);
            else
                vtpm_replay_diff(&rec->via.array.ptr[i], &new->via.array.ptr[i], p, ig, out);
        }
        return;
    }
    if (!msgpack_object_equal(*rec, *new))
        differ(out, path, rec, new);
}

static int
decode(const void *data, size_t len, vtpm_reply **out, vtpm_error *err)
{
    vtpm_proto_limits lim;

    vtpm_proto_limits_init(&lim);
    lim.max_body = (size_t)64 << 20;
    lim.max_str = lim.max_bin = lim.max_body;
    lim.max_container = 1 << 20;
    lim.max_objects = 1 << 22;
    return vtpm_proto_decode_reply(data, len, &lim, out, err);
}

void
vtpm_replay_compare(const void *rec, size_t rec_len, const void *new, size_t new_len,
                    const vtpm_replay_ignore *ig, vtpm_replay_cmp *out)
{
    g_autoptr(vtpm_reply) a = NULL;
    g_autoptr(vtpm_reply) b = NULL;
    vtpm_error err = { 0 };

    vtpm_replay_cmp_clear(out);
    if (decode(rec, rec_len, &a, &err) < 0) {
        out->match = false;
        out->ndiff = 1;
        out->first = g_strdup_printf("recorded reply undecodable: %s", err.message);
        return;
    }
    if (decode(new, new_len, &b, &err) < 0) {
        out->match = false;
        out->ndiff = 1;
        out->first = g_strdup_printf("replayed reply undecodable: %s", err.message);
        return;
    }
    if (a->ok != b->ok) {
        out->match = false;
        out->ndiff = 1;
        if (a->ok)
            out->first = g_strdup_printf("ok: recorded true, replayed false (fault %s: %s)",
                                         b->fault_code, b->fault_message);
        else
            out->first = g_strdup_printf("ok: recorded false (fault %s), replayed true",
                                         a->fault_code);
        return;
    }
    if (!a->ok) {
        if (strcmp(a->fault_code, b->fault_code) != 0) {
            out->match = false;
            out->ndiff = 1;
            out->first = g_strdup_printf("fault.code: recorded \"%s\", replayed \"%s\" (%s)",
                                         a->fault_code, b->fault_code, b->fault_message);
        }
        return;
    }
    vtpm_replay_diff(&a->result, &b->result, "result", ig, out);
}
