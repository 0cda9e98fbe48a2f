/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The args builder: msgpack-c's packer behind a check of the structure
 * (counts, key types, exactly one map), so that a caller's slip is a
 * BadRequest naming the value instead of a body the worker refuses or,
 * worse, reads differently.  The buffer grows by copying and wiping, never
 * by realloc: a secret (instance.vtpm.secret) must not stay behind in freed
 * memory.
 */
#include <string.h>

#include <msgpack.h>

#include "client/private.h"

/* A container being filled. */
typedef struct {
    uint64_t left;      /* values still due (a map: 2 per entry) */
    uint64_t announced; /* entries (map) or items (array) */
    size_t opened_at;   /* its value number */
    bool map;
} frame;

struct vtpm_client_args {
    char *buf;
    size_t len, cap;
    msgpack_packer pk;
    GArray *open;       /* frame: innermost last */
    size_t values;      /* written so far; messages count from 1 */
    bool done;          /* the top-level map is complete */
    char *error;        /* the first mistake */
};

static int
write_cb(void *data, const char *bytes, size_t len)
{
    vtpm_client_args *a = data;

    if (a->len + len > a->cap) {
        size_t cap = MAX(MAX(a->cap * 2, a->len + len), 256);
        char *n = g_malloc(cap);

        if (a->buf) {
            memcpy(n, a->buf, a->len);
            explicit_bzero(a->buf, a->cap);
            g_free(a->buf);
        }
        a->buf = n;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, bytes, len);
    a->len += len;
    return 0;
}

vtpm_client_args *
vtpm_client_args_new(void)
{
    vtpm_client_args *a = g_new0(vtpm_client_args, 1);

    a->open = g_array_new(FALSE, FALSE, sizeof(frame));
    msgpack_packer_init(&a->pk, a, write_cb);
    return a;
}

void
vtpm_client_args_free(vtpm_client_args *a)
{
    if (!a)
        return;
    if (a->buf)
        explicit_bzero(a->buf, a->cap);
    g_free(a->buf);
    g_array_unref(a->open);
    g_free(a->error);
    g_free(a);
}

static bool
mistake(vtpm_client_args *a, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool
mistake(vtpm_client_args *a, const char *fmt, ...)
{
    g_autofree char *why = NULL;
    va_list ap;

    if (a->error)
        return false;
    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    a->error = g_strdup_printf("args: value %zu: %s", a->values, why);
    return false;
}

/* Whether a value of @kind may come next; counts it in its container. */
static bool
admit(vtpm_client_args *a, const char *kind, bool is_str)
{
    frame *f;

    if (!a || a->error)
        return false;
    a->values++;
    if (a->done)
        return mistake(a, "%s after the end of the args map", kind);
    if (a->open->len == 0)
        return strcmp(kind, "map") == 0 || mistake(a, "the args must be a map, got %s", kind);
    f = &g_array_index(a->open, frame, a->open->len - 1);
    if (f->map && f->left % 2 == 0 && !is_str)
        return mistake(a, "a map key must be a str, got %s", kind);
    f->left--;
    return true;
}

/* Close every container that got all its values. */
static void
close_full(vtpm_client_args *a)
{
    while (a->open->len && g_array_index(a->open, frame, a->open->len - 1).left == 0)
        g_array_set_size(a->open, a->open->len - 1);
    if (a->open->len == 0)
        a->done = true;
}

static void
open_container(vtpm_client_args *a, bool map, uint32_t n)
{
    frame f = { .left = map ? 2 * (uint64_t)n : n, .announced = n, .map = map };

    if (!admit(a, map ? "map" : "array", false))
        return;
    f.opened_at = a->values;
    if (map)
        msgpack_pack_map(&a->pk, n);
    else
        msgpack_pack_array(&a->pk, n);
    g_array_append_val(a->open, f);
    close_full(a);
}

void
vtpm_client_args_map(vtpm_client_args *a, uint32_t entries)
{
    open_container(a, true, entries);
}

void
vtpm_client_args_array(vtpm_client_args *a, uint32_t items)
{
    open_container(a, false, items);
}

void
vtpm_client_args_str(vtpm_client_args *a, const char *s)
{
    size_t n;

    if (!admit(a, "str", true))
        return;
    if (!s) {
        mistake(a, "a NULL str");
        return;
    }
    n = strlen(s);
    if (!g_utf8_validate_len(s, n, NULL)) {
        mistake(a, "a str that is not valid UTF-8");
        return;
    }
    msgpack_pack_str_with_body(&a->pk, s, n);
    close_full(a);
}

void
vtpm_client_args_bin(vtpm_client_args *a, const void *data, size_t len)
{
    if (!admit(a, "bin", false))
        return;
    if ((!data && len) || len > UINT32_MAX) {
        mistake(a, "a bin of %zu bytes at %s", len, data ? "a too large size" : "NULL");
        return;
    }
    msgpack_pack_bin_with_body(&a->pk, data, len);
    close_full(a);
}

void
vtpm_client_args_uint(vtpm_client_args *a, uint64_t v)
{
    if (!admit(a, "uint", false))
        return;
    msgpack_pack_uint64(&a->pk, v);
    close_full(a);
}

void
vtpm_client_args_int(vtpm_client_args *a, int64_t v)
{
    if (!admit(a, "int", false))
        return;
    msgpack_pack_int64(&a->pk, v);
    close_full(a);
}

void
vtpm_client_args_bool(vtpm_client_args *a, bool v)
{
    if (!admit(a, "bool", false))
        return;
    v ? msgpack_pack_true(&a->pk) : msgpack_pack_false(&a->pk);
    close_full(a);
}

void
vtpm_client_args_nil(vtpm_client_args *a)
{
    if (!admit(a, "nil", false))
        return;
    msgpack_pack_nil(&a->pk);
    close_full(a);
}

int
vtpm_client_args_data(const vtpm_client_args *a, const void **data, size_t *len,
                      vtpm_client_fault *f)
{
    const frame *open;

    if (!a || !data || !len)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "args: %s: NULL",
                                     !a ? "the builder" : !data ? "data" : "len");
    if (a->error)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s", a->error);
    if (a->values == 0)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST,
                                     "args: empty (an empty map is vtpm_client_args_map(a, 0))");
    if (!a->done) {
        open = &g_array_index(a->open, frame, a->open->len - 1);
        return vtpm_client_fault_set(
            f, VTPM_FAULT_BAD_REQUEST, "args: the %s opened at value %zu has %" G_GUINT64_FORMAT
            " of its %" G_GUINT64_FORMAT " %s",
            open->map ? "map" : "array", open->opened_at,
            open->announced - (open->map ? (open->left + 1) / 2 : open->left), open->announced,
            open->map ? "entries" : "items");
    }
    *data = a->buf;
    *len = a->len;
    return 0;
}
