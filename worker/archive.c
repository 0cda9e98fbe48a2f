/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <json-glib/json-glib.h>

#include "vtpm/proto.h"
#include "archive.h"
#include "fsutil.h"

#define BLOCK 512
#define NAME_LEN 100
/* The domain XML makes up most of it; libvirt's own limit for a domain
 * definition is far below this. */
#define MANIFEST_MAX (1024u * 1024)
/* The manifest nests three levels deep ({"files":{"x":{...}}}). */
#define JSON_MAX_DEPTH 8
/* Largest value of an 11-digit octal field (mtime). */
#define OCTAL11_MAX 077777777777LL

#define INTEGRITY VTPM_FAULT_STATE_INTEGRITY
#define INTERNAL VTPM_FAULT_INTERNAL

/* POSIX.1-1988 ustar header. */
typedef struct {
    char name[100];
    char mode[8];
    char uid[8];
    char gid[8];
    char size[12];
    char mtime[12];
    char chksum[8];
    char typeflag;
    char linkname[100];
    char magic[6];
    char version[2];
    char uname[32];
    char gname[32];
    char devmajor[8];
    char devminor[8];
    char prefix[155];
    char pad[12];
} ustar_header;

G_STATIC_ASSERT(sizeof(ustar_header) == BLOCK);

/* One member of an archive being read; data points into the caller's
 * buffer. */
typedef struct {
    char name[NAME_LEN + 1]; /* a directory's without its trailing '/' */
    bool dir;
    size_t off; /* of the header, for messages */
    const guint8 *data;
    size_t size;
    int64_t mtime;
} member;

/* One member of an archive being written. */
typedef struct {
    char *name; /* a directory's ends in '/' */
    bool dir;
    GBytes *data;
    int64_t mtime;
} entry;

/* What the manifest says about one file. */
typedef struct {
    size_t size;
    char sha256[65];
} file_rec;

typedef int afd;

static void
afd_close(afd fd)
{
    close(fd);
}

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(afd, afd_close, -1)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DIR, closedir)

/* ---- meta ------------------------------------------------------------------ */

void
vtpm_archive_meta_init(vtpm_archive_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->format = VTPM_ARCHIVE_FORMAT;
    m->extra = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

/* Leaves @m zeroed (extra NULL), not re-initialised: a cleared meta owns
 * nothing, so forgetting it afterwards leaks nothing. */
void
vtpm_archive_meta_clear(vtpm_archive_meta *m)
{
    if (!m)
        return;
    g_free(m->tpm_version);
    g_free(m->tpm_model);
    g_free(m->secret_security);
    g_free(m->reason);
    g_free(m->domain_xml);
    if (m->extra)
        g_hash_table_unref(m->extra);
    if (m->files)
        g_ptr_array_unref(m->files);
    memset(m, 0, sizeof(*m));
}

bool
vtpm_archive_holds(const vtpm_archive_meta *m, const char *name)
{
    for (guint i = 0; m && m->files && i < m->files->len; i++) {
        if (strcmp(m->files->pdata[i], name) == 0)
            return true;
    }
    return false;
}

/* Hands @src over to the caller's @dst, dropping what @dst held. */
static void
meta_move(vtpm_archive_meta *dst, vtpm_archive_meta *src)
{
    vtpm_archive_meta_clear(dst);
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

static char *
hex_lower(const guint8 *p, size_t n)
{
    GString *s = g_string_sized_new(2 * n);

    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", p[i]);
    return g_string_free(s, FALSE);
}

/* GLib's SHA-256 (GChecksum) is portable C, ~160 instructions a byte: the
 * 540 KB variable store of a UEFI instance, hashed in pack, verify and
 * extract, cost ~50 ms a move of the state.  GnuTLS (nettle) uses the CPU's
 * SHA extensions; GChecksum stays as the fallback should it refuse. */
char *
vtpm_archive_sha256(const void *data, size_t len)
{
    guint8 md[32];
    g_autoptr(GChecksum) c = NULL;
    const guint8 *p = data;

    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, md) == 0)
        return hex_lower(md, sizeof(md));
    c = g_checksum_new(G_CHECKSUM_SHA256);
    /* g_checksum_update takes a signed length. */
    while (len > 0) {
        size_t n = MIN(len, (size_t)G_MAXINT32);

        g_checksum_update(c, p, (gssize)n);
        p += n;
        len -= n;
    }
    return g_strdup(g_checksum_get_string(c));
}

/* ---- shared checks ----------------------------------------------------------- */

static bool
name_char(char c)
{
    return g_ascii_isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/';
}

/* Why @name may not be a member name, or NULL when it may.  @dir allows
 * one trailing '/'.  The character set leaves no room for anything a
 * shell, a log line or a path join could misread. */
static const char *
bad_name(const char *name, bool dir)
{
    size_t n = strlen(name);
    const char *p;

    if (n == 0)
        return "empty name";
    if (n > NAME_LEN)
        return "name longer than 100 bytes";
    if (name[0] == '/')
        return "absolute name";
    for (p = name; *p; p++) {
        if (!name_char(*p))
            return "name has characters outside [A-Za-z0-9._/-]";
    }
    if (dir && name[n - 1] == '/')
        n--;
    for (p = name; p < name + n;) {
        const char *slash = memchr(p, '/', (size_t)(name + n - p));
        size_t len = slash ? (size_t)(slash - p) : (size_t)(name + n - p);

        if (len == 0)
            return "empty path component";
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return "'.' or '..' path component";
        p += len + (slash ? 1 : 0);
        if (slash && p == name + n)
            return "empty path component";
    }
    return NULL;
}

/* ---- ustar headers ---------------------------------------------------------- */

/* Numeric fields: optional leading spaces, octal digits, then NUL/space
 * padding to the end of the field.  GNU base-256 and anything else is
 * refused: only what ustar writers produce is read. */
static bool
octal(const char *f, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    bool any = false;

    while (i < n && f[i] == ' ')
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v > (UINT64_MAX >> 3))
            return false;
        v = (v << 3) | (uint64_t)(f[i] - '0');
        any = true;
    }
    for (; i < n; i++) {
        if (f[i] != '\0' && f[i] != ' ')
            return false;
    }
    if (!any)
        return false;
    *out = v;
    return true;
}

/* The checksum counts the checksum field itself as eight spaces. */
static uint64_t
header_sum(const guint8 *h)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < BLOCK; i++)
        sum += (i >= offsetof(ustar_header, chksum) && i < offsetof(ustar_header, typeflag))
                   ? (uint64_t)' '
                   : h[i];
    return sum;
}

static bool
all_zero(const guint8 *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i])
            return false;
    }
    return true;
}

static void
put_octal(char *field, size_t n, uint64_t v)
{
    snprintf(field, n, "%0*" PRIo64, (int)(n - 1), v);
}

static void
pad_block(GByteArray *a)
{
    static const guint8 zeros[BLOCK];

    if (a->len % BLOCK)
        g_byte_array_append(a, zeros, BLOCK - a->len % BLOCK);
}

/* Mode, owner and names are fixed so that the bytes depend on the
 * content and mtimes only; extract applies its own anyway. */
static void
put_member(GByteArray *a, const char *name, bool dir, const void *data, size_t size,
           int64_t mtime)
{
    ustar_header h;

    memset(&h, 0, sizeof(h));
    memcpy(h.name, name, strlen(name));
    put_octal(h.mode, sizeof(h.mode), dir ? 0700 : 0600);
    put_octal(h.uid, sizeof(h.uid), 0);
    put_octal(h.gid, sizeof(h.gid), 0);
    put_octal(h.size, sizeof(h.size), size);
    put_octal(h.mtime, sizeof(h.mtime), (uint64_t)CLAMP(mtime, 0, OCTAL11_MAX));
    h.typeflag = dir ? '5' : '0';
    memcpy(h.magic, "ustar", 6);
    memcpy(h.version, "00", 2);
    put_octal(h.devmajor, sizeof(h.devmajor), 0);
    put_octal(h.devminor, sizeof(h.devminor), 0);
    memset(h.chksum, ' ', sizeof(h.chksum));
    /* Six digits, NUL, space: what POSIX tar writes. */
    snprintf(h.chksum, 7, "%06" PRIo64, header_sum((const guint8 *)&h));
    g_byte_array_append(a, (const guint8 *)&h, BLOCK);
    if (size) {
        g_byte_array_append(a, data, (guint)size);
        pad_block(a);
    }
}

/* ---- reading ------------------------------------------------------------------ */

static int bad(vtpm_error *err, const char *name, size_t off, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* "member <name> at offset <off>: ...", the name escaped because it may
 * be anything at all before it is validated. */
static int
bad(vtpm_error *err, const char *name, size_t off, const char *fmt, ...)
{
    g_autofree char *shown = g_strescape(name, NULL);
    g_autofree char *what = NULL;
    va_list ap;

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return vtpm_error_set(err, INTEGRITY, "member %s at offset %zu: %s",
                          *shown ? shown : "(unnamed)", off, what);
}

static const char *
type_name(char t)
{
    switch (t) {
    case '1': return "hard link";
    case '2': return "symbolic link";
    case '3': return "character device";
    case '4': return "block device";
    case '6': return "FIFO";
    case '7': return "contiguous file";
    case 'x': return "pax extended header";
    case 'g': return "pax global header";
    case 'L': return "GNU long name";
    case 'K': return "GNU long link name";
    default: return NULL;
    }
}

static int
check_type(const ustar_header *h, const char *name, size_t off, vtpm_error *err)
{
    const char *what = type_name(h->typeflag);

    if (h->typeflag == '0' || h->typeflag == '\0' || h->typeflag == '5')
        return 0;
    if (what)
        return bad(err, name, off, "%s members are not allowed", what);
    return bad(err, name, off, "member type 0x%02x is not allowed",
               (unsigned)(unsigned char)h->typeflag);
}

/* Parses the header at @off into @m: everything about one member that
 * can be checked on its own. */
static int
read_header(const guint8 *d, size_t len, size_t off, member *m, vtpm_error *err)
{
    const ustar_header *h = (const ustar_header *)(d + off);
    uint64_t stored, v, size;
    const char *why;
    size_t padded;
    int rc;

    memset(m, 0, sizeof(*m));
    memcpy(m->name, h->name, NAME_LEN);
    m->off = off;
    /* The checksum first: nothing in a damaged header means anything. */
    if (!octal(h->chksum, sizeof(h->chksum), &stored))
        return bad(err, m->name, off, "malformed header checksum field");
    if (stored != header_sum(d + off))
        return bad(err, m->name, off, "header checksum mismatch (stored %" PRIo64
                   ", computed %" PRIo64 ")", stored, header_sum(d + off));
    if (memcmp(h->magic, "ustar", 6) != 0 || memcmp(h->version, "00", 2) != 0)
        return bad(err, m->name, off, "not a POSIX ustar header");
    if ((rc = check_type(h, m->name, off, err)) < 0)
        return rc;
    m->dir = h->typeflag == '5';
    if (h->prefix[0])
        return bad(err, m->name, off, "the prefix field is in use (long names are not allowed)");
    if ((why = bad_name(m->name, m->dir)))
        return bad(err, m->name, off, "%s", why);
    if (h->linkname[0])
        return bad(err, m->name, off, "link name on a %s", m->dir ? "directory" : "regular file");
    if (!octal(h->mode, sizeof(h->mode), &v) || !octal(h->uid, sizeof(h->uid), &v) ||
        !octal(h->gid, sizeof(h->gid), &v))
        return bad(err, m->name, off, "malformed mode, uid or gid field");
    if (!octal(h->mtime, sizeof(h->mtime), &v) || v > (uint64_t)G_MAXINT64)
        return bad(err, m->name, off, "malformed mtime field");
    m->mtime = (int64_t)v;
    if (!octal(h->size, sizeof(h->size), &size))
        return bad(err, m->name, off, "malformed size field");
    if (m->dir && size != 0)
        return bad(err, m->name, off, "directory with a non-zero size");
    if (size > VTPM_ARCHIVE_MAX_FILE)
        return bad(err, m->name, off, "size %" PRIu64 " exceeds the limit of %u bytes", size,
                   VTPM_ARCHIVE_MAX_FILE);
    padded = ((size_t)size + BLOCK - 1) / BLOCK * BLOCK;
    if (padded > len - off - BLOCK)
        return bad(err, m->name, off, "truncated: %" PRIu64 " bytes of data announced, %zu left",
                   size, len - off - BLOCK);
    /* Directories are known by their plain name from here on ("tpm2"),
     * as in the manifest. */
    if (m->dir && m->name[strlen(m->name) - 1] == '/')
        m->name[strlen(m->name) - 1] = '\0';
    m->data = d + off + BLOCK;
    m->size = (size_t)size;
    return 0;
}

/* What may follow the end-of-archive marker: zero padding (tar pads to
 * its record size), nothing else. */
static int
check_end(const guint8 *d, size_t len, size_t off, vtpm_error *err)
{
    if (len - off < 2 * BLOCK)
        return vtpm_error_set(err, INTEGRITY,
                              "truncated at offset %zu: incomplete end-of-archive marker", off);
    if (!all_zero(d + off + BLOCK, BLOCK))
        return vtpm_error_set(err, INTEGRITY, "lone zero block at offset %zu", off);
    for (size_t i = off + 2 * BLOCK; i < len; i++) {
        if (d[i])
            return vtpm_error_set(err, INTEGRITY,
                                  "trailing data at offset %zu after the end of the archive", i);
    }
    return 0;
}

/* How the member relates to those before it: unique, inside a directory
 * that came earlier (so extraction never has to invent one). */
static int
check_place(const member *m, GHashTable *seen, vtpm_error *err)
{
    const char *slash = strrchr(m->name, '/');
    g_autofree char *parent = slash ? g_strndup(m->name, (gsize)(slash - m->name)) : NULL;

    if (g_hash_table_contains(seen, m->name))
        return bad(err, m->name, m->off, "duplicate member");
    if (parent && GPOINTER_TO_INT(g_hash_table_lookup(seen, parent)) != 2)
        return bad(err, m->name, m->off, "its directory %s is not an earlier directory member",
                   parent);
    if (m->dir || strcmp(m->name, VTPM_ARCHIVE_MANIFEST) != 0)
        return 0;
    if (m->off != 0)
        return bad(err, m->name, m->off, "the manifest must be the first member");
    if (m->size > MANIFEST_MAX)
        return bad(err, m->name, m->off, "manifest larger than %u bytes", MANIFEST_MAX);
    return 0;
}

/* Every header up to the end-of-archive marker into @out. */
static int
read_members(const guint8 *d, size_t len, GArray *out, vtpm_error *err)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    uint64_t total = 0;
    size_t off = 0;
    member m;
    int rc;

    for (;;) {
        if (len - off < BLOCK)
            return vtpm_error_set(err, INTEGRITY,
                                  "truncated at offset %zu: no end-of-archive marker", off);
        if (all_zero(d + off, BLOCK))
            break;
        if (out->len >= VTPM_ARCHIVE_MAX_ENTRIES)
            return vtpm_error_set(err, INTEGRITY, "offset %zu: more than %d members", off,
                                  VTPM_ARCHIVE_MAX_ENTRIES);
        if ((rc = read_header(d, len, off, &m, err)) < 0 ||
            (rc = check_place(&m, seen, err)) < 0)
            return rc;
        total += m.size;
        if (total > VTPM_ARCHIVE_MAX_TOTAL)
            return bad(err, m.name, off, "contents exceed the limit of %u bytes",
                       VTPM_ARCHIVE_MAX_TOTAL);
        g_hash_table_insert(seen, g_strdup(m.name), GINT_TO_POINTER(m.dir ? 2 : 1));
        g_array_append_val(out, m);
        off += BLOCK + (m.size + BLOCK - 1) / BLOCK * BLOCK;
    }
    if ((rc = check_end(d, len, off, err)) < 0)
        return rc;
    if (out->len == 0 || g_array_index(out, member, 0).dir ||
        strcmp(g_array_index(out, member, 0).name, VTPM_ARCHIVE_MANIFEST) != 0)
        return vtpm_error_set(err, INTEGRITY, "missing manifest (%s is not the first member)",
                              VTPM_ARCHIVE_MANIFEST);
    return 0;
}

/* ---- the manifest ----------------------------------------------------------------- */

/* json-glib's parser recurses once per nesting level, so deep input is
 * refused before it is parsed.  Outside strings only JSON's own syntax is
 * allowed: comments or single quotes (which json-glib tolerates) could
 * hide brackets from this scan. */
static int
prescan(const char *s, size_t n, vtpm_error *err)
{
    unsigned depth = 0;
    bool quoted = false;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (quoted) {
            if (c == '\\')
                i++;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '/' || c == '\'') {
            return vtpm_error_set(err, INTEGRITY, "manifest: not plain JSON at byte %zu", i);
        } else if (c == '[' || c == '{') {
            if (++depth > JSON_MAX_DEPTH)
                return vtpm_error_set(err, INTEGRITY, "manifest: nested deeper than %d levels",
                                      JSON_MAX_DEPTH);
        } else if ((c == ']' || c == '}') && depth) {
            depth--;
        }
    }
    return 0;
}

static int
want(JsonObject *o, const char *where, const char *key, JsonNode **out, vtpm_error *err)
{
    JsonNode *n = json_object_get_member(o, key);

    if (!n)
        return vtpm_error_set(err, INTEGRITY, "%s: missing \"%s\"", where, key);
    *out = n;
    return 0;
}

static int
get_int(JsonObject *o, const char *where, const char *key, gint64 lo, gint64 hi, gint64 *out,
        vtpm_error *err)
{
    JsonNode *n = NULL;
    gint64 v;
    int rc;

    if ((rc = want(o, where, key, &n, err)) < 0)
        return rc;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
        return vtpm_error_set(err, INTEGRITY, "%s: \"%s\" is not an integer", where, key);
    v = json_node_get_int(n);
    if (v < lo || v > hi)
        return vtpm_error_set(err, INTEGRITY, "%s: \"%s\" %" G_GINT64_FORMAT " is out of range",
                              where, key, v);
    *out = v;
    return 0;
}

static int
get_str(JsonObject *o, const char *where, const char *key, bool nullable, char **out,
        vtpm_error *err)
{
    JsonNode *n = NULL;
    int rc;

    if ((rc = want(o, where, key, &n, err)) < 0)
        return rc;
    if (nullable && JSON_NODE_HOLDS_NULL(n)) {
        *out = NULL;
        return 0;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        return vtpm_error_set(err, INTEGRITY, "%s: \"%s\" is not a string%s", where, key,
                              nullable ? " or null" : "");
    *out = g_strdup(json_node_get_string(n));
    return 0;
}

/* *out is NULL for a JSON null when @nullable. */
static int
get_obj(JsonObject *o, const char *where, const char *key, bool nullable, JsonObject **out,
        vtpm_error *err)
{
    JsonNode *n = NULL;
    int rc;

    if ((rc = want(o, where, key, &n, err)) < 0)
        return rc;
    if (nullable && JSON_NODE_HOLDS_NULL(n)) {
        *out = NULL;
        return 0;
    }
    if (!JSON_NODE_HOLDS_OBJECT(n))
        return vtpm_error_set(err, INTEGRITY, "%s: \"%s\" is not an object", where, key);
    *out = json_node_get_object(n);
    return 0;
}

/* Unknown keys are refused rather than ignored: what format 1 means is
 * fixed, and anything new comes with a new format number. */
static int
only_keys(JsonObject *o, const char *where, const char *const *keys, vtpm_error *err)
{
    JsonObjectIter it;
    const char *name;
    JsonNode *n = NULL;

    json_object_iter_init_ordered(&it, o);
    while (json_object_iter_next_ordered(&it, &name, &n)) {
        if (!g_strv_contains(keys, name)) {
            g_autofree char *shown = g_strescape(name, NULL);

            return vtpm_error_set(err, INTEGRITY, "%s: unknown key \"%s\"", where, shown);
        }
    }
    return 0;
}

static int
parse_tpm(JsonObject *o, vtpm_archive_meta *m, vtpm_error *err)
{
    static const char *const keys[] = { "version", "model", "secret_security", NULL };
    JsonObject *t;
    int rc;

    /* null: the instance has no vTPM (a manifest-only archive). */
    if ((rc = get_obj(o, "manifest", "tpm", true, &t, err)) < 0 || !t)
        return rc;
    if ((rc = only_keys(t, "manifest.tpm", keys, err)) < 0 ||
        (rc = get_str(t, "manifest.tpm", "version", false, &m->tpm_version, err)) < 0 ||
        (rc = get_str(t, "manifest.tpm", "model", true, &m->tpm_model, err)) < 0 ||
        (rc = get_str(t, "manifest.tpm", "secret_security", true, &m->secret_security, err)) < 0)
        return rc;
    return 0;
}

static int
parse_extra(JsonObject *o, vtpm_archive_meta *m, vtpm_error *err)
{
    JsonObjectIter it;
    JsonObject *x;
    const char *k;
    JsonNode *n = NULL;
    int rc;

    if ((rc = get_obj(o, "manifest", "extra", false, &x, err)) < 0)
        return rc;
    json_object_iter_init_ordered(&it, x);
    while (json_object_iter_next_ordered(&it, &k, &n)) {
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
            g_autofree char *shown = g_strescape(k, NULL);

            return vtpm_error_set(err, INTEGRITY, "manifest.extra: \"%s\" is not a string",
                                  shown);
        }
        g_hash_table_replace(m->extra, g_strdup(k), g_strdup(json_node_get_string(n)));
    }
    return 0;
}

static int
parse_files(JsonObject *o, GHashTable *files, vtpm_error *err)
{
    static const char *const keys[] = { "size", "sha256", NULL };
    JsonObjectIter it;
    JsonObject *fs;
    const char *k;
    JsonNode *n = NULL;
    int rc;

    if ((rc = get_obj(o, "manifest", "files", false, &fs, err)) < 0)
        return rc;
    json_object_iter_init_ordered(&it, fs);
    while (json_object_iter_next_ordered(&it, &k, &n)) {
        g_autofree char *shown = g_strescape(k, NULL);
        g_autofree char *where = g_strdup_printf("manifest.files[\"%s\"]", shown);
        g_autofree char *sha = NULL;
        g_autofree file_rec *rec = g_new0(file_rec, 1);
        gint64 size;

        if (!JSON_NODE_HOLDS_OBJECT(n))
            return vtpm_error_set(err, INTEGRITY, "%s: not an object", where);
        if ((rc = only_keys(json_node_get_object(n), where, keys, err)) < 0 ||
            (rc = get_int(json_node_get_object(n), where, "size", 0, VTPM_ARCHIVE_MAX_FILE,
                          &size, err)) < 0 ||
            (rc = get_str(json_node_get_object(n), where, "sha256", false, &sha, err)) < 0)
            return rc;
        if (!vtpm_proto_is_lower_hex(sha, 64))
            return vtpm_error_set(err, INTEGRITY, "%s: \"sha256\" is not 64 lower-case hex digits",
                                  where);
        rec->size = (size_t)size;
        memcpy(rec->sha256, sha, sizeof(rec->sha256));
        g_hash_table_replace(files, g_strdup(k), g_steal_pointer(&rec));
    }
    return 0;
}

static int
parse_dirs(JsonObject *o, GHashTable *dirs, vtpm_error *err)
{
    JsonNode *n = NULL;
    JsonArray *a;
    int rc;

    if ((rc = want(o, "manifest", "dirs", &n, err)) < 0)
        return rc;
    if (!JSON_NODE_HOLDS_ARRAY(n))
        return vtpm_error_set(err, INTEGRITY, "manifest: \"dirs\" is not an array");
    a = json_node_get_array(n);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonNode *e = json_array_get_element(a, i);

        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING)
            return vtpm_error_set(err, INTEGRITY, "manifest.dirs[%u]: not a string", i);
        if (!g_hash_table_add(dirs, g_strdup(json_node_get_string(e))))
            return vtpm_error_set(err, INTEGRITY, "manifest.dirs[%u]: listed twice", i);
    }
    return 0;
}

/* The manifest into @m, its file table into @files (name -> file_rec)
 * and its directory list into @dirs (a set). */
static int
parse_manifest(const member *mf, vtpm_archive_meta *m, GHashTable *files, GHashTable *dirs,
               vtpm_error *err)
{
    static const char *const keys[] = { "format", "uuid", "tpm", "generation", "created_ms",
                                        "reason", "domain_xml", "extra", "files", "dirs", NULL };
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GError) gerr = NULL;
    g_autofree char *uuid = NULL;
    const char *text = (const char *)mf->data;
    JsonNode *root;
    JsonObject *o;
    gint64 v;
    int rc;

    /* Also refuses NUL bytes, which would cut strings short unseen. */
    if (!g_utf8_validate(text, (gssize)mf->size, NULL))
        return vtpm_error_set(err, INTEGRITY, "manifest: not valid UTF-8");
    if ((rc = prescan(text, mf->size, err)) < 0)
        return rc;
    parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, text, (gssize)mf->size, &gerr))
        return vtpm_error_set(err, INTEGRITY, "manifest: %s", gerr->message);
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root))
        return vtpm_error_set(err, INTEGRITY, "manifest: not a JSON object");
    o = json_node_get_object(root);
    /* The format first: a later one may change everything else. */
    if ((rc = get_int(o, "manifest", "format", G_MININT64, G_MAXINT64, &v, err)) < 0)
        return rc;
    if (v != VTPM_ARCHIVE_FORMAT)
        return vtpm_error_set(err, INTEGRITY,
                              "manifest: unsupported archive format %" G_GINT64_FORMAT, v);
    m->format = (int)v;
    if ((rc = only_keys(o, "manifest", keys, err)) < 0 ||
        (rc = get_str(o, "manifest", "uuid", false, &uuid, err)) < 0)
        return rc;
    if (vtpm_proto_parse_uuid(uuid, NULL, m->uuid, NULL) < 0)
        return vtpm_error_set(err, INTEGRITY, "manifest: \"uuid\" is not a canonical UUID");
    if ((rc = parse_tpm(o, m, err)) < 0 ||
        (rc = get_int(o, "manifest", "generation", 0, G_MAXINT64, &v, err)) < 0)
        return rc;
    m->generation = (uint64_t)v;
    if ((rc = get_int(o, "manifest", "created_ms", G_MININT64, G_MAXINT64, &m->created_ms,
                      err)) < 0 ||
        (rc = get_str(o, "manifest", "reason", true, &m->reason, err)) < 0 ||
        (rc = get_str(o, "manifest", "domain_xml", true, &m->domain_xml, err)) < 0 ||
        (rc = parse_extra(o, m, err)) < 0 || (rc = parse_files(o, files, err)) < 0 ||
        (rc = parse_dirs(o, dirs, err)) < 0)
        return rc;
    return 0;
}

static int
cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first of @names (sorted, so messages are stable) that is not in
 * @present, or NULL. */
static const char *
first_missing(GHashTable *names, GHashTable *present)
{
    g_autofree gpointer *keys = g_hash_table_get_keys_as_array(names, NULL);
    guint n = g_hash_table_size(names);

    qsort(keys, n, sizeof(*keys), cmp_str);
    for (guint i = 0; i < n; i++) {
        if (!g_hash_table_contains(present, keys[i]))
            return keys[i];
    }
    return NULL;
}

/* The members after the manifest against what the manifest lists: the
 * same files with the same sizes and digests, the same directories. */
static int
match_manifest(GArray *members, GHashTable *files, GHashTable *dirs, vtpm_error *err)
{
    g_autoptr(GHashTable) present = g_hash_table_new(g_str_hash, g_str_equal);
    const char *missing;

    for (guint i = 1; i < members->len; i++) {
        const member *m = &g_array_index(members, member, i);
        const file_rec *rec = g_hash_table_lookup(files, m->name);
        g_autofree char *sha = NULL;

        g_hash_table_add(present, (gpointer)m->name);
        if (m->dir) {
            if (!g_hash_table_contains(dirs, m->name))
                return bad(err, m->name, m->off, "directory not listed in the manifest");
            continue;
        }
        if (!rec)
            return bad(err, m->name, m->off, "file not listed in the manifest");
        if (rec->size != m->size)
            return bad(err, m->name, m->off, "size %zu, the manifest says %zu", m->size,
                       rec->size);
        sha = vtpm_archive_sha256(m->data, m->size);
        if (strcmp(sha, rec->sha256) != 0)
            return bad(err, m->name, m->off, "sha256 mismatch (manifest %s, content %s)",
                       rec->sha256, sha);
    }
    if ((missing = first_missing(files, present)) || (missing = first_missing(dirs, present))) {
        g_autofree char *shown = g_strescape(missing, NULL);

        return vtpm_error_set(err, INTEGRITY, "manifest lists %s, which the archive lacks",
                              shown);
    }
    return 0;
}

/* The keys of @files, sorted. */
static GPtrArray *
file_names(GHashTable *files)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, files);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(names, g_strdup(k));
    g_ptr_array_sort(names, cmp_str);
    return names;
}

/* Everything verify promises, keeping the parsed members for extract. */
static int
verify_all(const void *data, size_t len, vtpm_archive_meta *meta_out, GArray **members_out,
           vtpm_error *err)
{
    g_autoptr(GArray) members = g_array_new(FALSE, TRUE, sizeof(member));
    g_autoptr(GHashTable) files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) dirs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_auto(vtpm_archive_meta) m = { 0 };
    int rc;

    if (!data && len)
        return vtpm_error_set(err, INTERNAL, "archive: no data");
    vtpm_archive_meta_init(&m);
    if ((rc = read_members(data, len, members, err)) < 0 ||
        (rc = parse_manifest(&g_array_index(members, member, 0), &m, files, dirs, err)) < 0 ||
        (rc = match_manifest(members, files, dirs, err)) < 0)
        return rc;
    m.files = file_names(files);
    meta_move(meta_out, &m);
    *members_out = g_steal_pointer(&members);
    return 0;
}

/* On success *@meta's previous contents (an initialised or zeroed meta)
 * are released and replaced. */
int
vtpm_archive_verify(const void *data, size_t len, vtpm_archive_meta *meta, vtpm_error *err)
{
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GArray) members = NULL;
    int rc;

    if ((rc = verify_all(data, len, &m, &members, err)) < 0)
        return rc;
    if (meta)
        meta_move(meta, &m);
    return 0;
}

/* ---- pack ------------------------------------------------------------------------ */

static void
entry_free(gpointer p)
{
    entry *e = p;

    if (!e)
        return;
    g_free(e->name);
    if (e->data)
        g_bytes_unref(e->data);
    g_free(e);
}

/* The names in @dfd, sorted so that the archive does not depend on the
 * file system's directory order. */
static int
list_dir(int dfd, const char *path, GPtrArray **out, vtpm_error *err)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(DIR) d = NULL;
    int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    struct dirent *e;

    if (fd < 0 || !(d = fdopendir(fd))) {
        int e0 = errno;

        if (fd >= 0)
            close(fd);
        return vtpm_error_set(err, INTERNAL, "reading %s: %s", path, g_strerror(e0));
    }
    errno = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            g_ptr_array_add(names, g_strdup(e->d_name));
        errno = 0;
    }
    if (errno)
        return vtpm_error_set(err, INTERNAL, "reading %s: %s", path, g_strerror(errno));
    g_ptr_array_sort(names, cmp_str);
    *out = g_steal_pointer(&names);
    return 0;
}

/* The whole of a regular file, refusing one that changes under us: a
 * torn copy of TPM state must not pass for a good one. */
static int
read_file(int dfd, const char *name, const char *rel, GBytes **data, int64_t *mtime,
          vtpm_error *err)
{
    /* O_NONBLOCK: should it have become a FIFO since it was looked at,
     * opening it must not hang. */
    g_auto(afd) fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    g_autofree guint8 *buf = NULL;
    struct stat st;
    size_t got = 0;
    guint8 extra;
    ssize_t n;

    if (fd < 0 || fstat(fd, &st) < 0)
        return vtpm_error_set(err, INTERNAL, "reading %s: %s", rel, g_strerror(errno));
    if (!S_ISREG(st.st_mode))
        return vtpm_error_set(err, INTERNAL, "reading %s: no longer a regular file", rel);
    if ((uint64_t)st.st_size > VTPM_ARCHIVE_MAX_FILE)
        return vtpm_error_set(err, INTERNAL, "%s: %jd bytes exceed the limit of %u", rel,
                              (intmax_t)st.st_size, VTPM_ARCHIVE_MAX_FILE);
    buf = g_malloc(MAX((size_t)st.st_size, 1));
    while (got < (size_t)st.st_size) {
        n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vtpm_error_set(err, INTERNAL, "reading %s: %s", rel, g_strerror(errno));
        if (n == 0)
            return vtpm_error_set(err, INTERNAL, "reading %s: it shrank while being read", rel);
        got += (size_t)n;
    }
    while ((n = read(fd, &extra, 1)) < 0 && errno == EINTR)
        ;
    if (n != 0)
        return vtpm_error_set(err, INTERNAL, "reading %s: it grew while being read", rel);
    *data = g_bytes_new_take(g_steal_pointer(&buf), got);
    *mtime = st.st_mtim.tv_sec;
    return 0;
}

static int walk(int dfd, const char *prefix, GPtrArray *entries, uint64_t *total,
                vtpm_error *err);

static entry *
add_entry(GPtrArray *entries, char *name, bool dir, GBytes *data, int64_t mtime)
{
    entry *e = g_new0(entry, 1);

    e->name = name;
    e->dir = dir;
    e->data = data;
    e->mtime = mtime;
    g_ptr_array_add(entries, e);
    return e;
}

/* swtpm's temporary file: swtpm 0.7 (swtpm_nvstore_dir.c) writes every
 * state blob as TMP2-00.<name> (TPM 1.2: TMP-00.<name>), then renames it
 * over tpm2-00.<name>.  One seen in a running TPM's directory is a write
 * in progress, maybe torn; one left by a crash was never committed.
 * Neither is state: swtpm never reads it. */
bool
vtpm_archive_swtpm_temp_file(const char *name)
{
    const char *p = g_str_has_prefix(name, "TMP2-") ? name + 5
                    : g_str_has_prefix(name, "TMP-") ? name + 4
                                                     : NULL;

    return p && g_ascii_isxdigit(p[0]) && g_ascii_isxdigit(p[1]) && p[2] == '.';
}

/* Whether @name (in directory @prefix, as @st describes it) goes into
 * the archive: 1 yes, 0 skipped, negative refused. */
static int
wanted(const char *prefix, const char *name, const struct stat *st, vtpm_error *err)
{
    g_autofree char *rel = g_strconcat(prefix, name, S_ISDIR(st->st_mode) ? "/" : "", NULL);
    g_autofree char *shown = g_strescape(rel, NULL);
    const char *why;

    /* swtpm's lock is recreated by every swtpm; it carries no state. */
    if (strcmp(name, ".lock") == 0 || S_ISSOCK(st->st_mode))
        return 0;
    if (S_ISREG(st->st_mode) && vtpm_archive_swtpm_temp_file(name))
        return 0;
    if (S_ISLNK(st->st_mode))
        return vtpm_error_set(err, INTERNAL, "symlink in state dir: %s", shown);
    if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode))
        return vtpm_error_set(err, INTERNAL, "unsupported file type in state dir: %s", shown);
    if (!*prefix && strcmp(name, VTPM_ARCHIVE_MANIFEST) == 0)
        return vtpm_error_set(err, INTERNAL, "state dir contains a file named %s",
                              VTPM_ARCHIVE_MANIFEST);
    /* What verify would refuse is refused here, where it can be fixed. */
    if ((why = bad_name(rel, S_ISDIR(st->st_mode))))
        return vtpm_error_set(err, INTERNAL, "cannot archive %s: %s", shown, why);
    return 1;
}

/* One name found in a state directory: skipped, refused, or added. */
static int
walk_one(int dfd, const char *prefix, const char *name, GPtrArray *entries, uint64_t *total,
         vtpm_error *err)
{
    g_autofree char *rel = NULL;
    g_autoptr(GBytes) data = NULL;
    struct stat st;
    int64_t mtime = 0;
    int rc;

    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return vtpm_error_set(err, INTERNAL, "%s%s: %s", prefix, name, g_strerror(errno));
    if ((rc = wanted(prefix, name, &st, err)) <= 0)
        return rc;
    if (entries->len + 1 >= VTPM_ARCHIVE_MAX_ENTRIES)
        return vtpm_error_set(err, INTERNAL, "state dir has more than %d entries",
                              VTPM_ARCHIVE_MAX_ENTRIES - 1);
    rel = g_strconcat(prefix, name, S_ISDIR(st.st_mode) ? "/" : "", NULL);
    if (S_ISDIR(st.st_mode)) {
        g_auto(afd) sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        entry *e;

        if (sub < 0)
            return vtpm_error_set(err, INTERNAL, "opening %s: %s", rel, g_strerror(errno));
        e = add_entry(entries, g_steal_pointer(&rel), true, NULL, st.st_mtim.tv_sec);
        return walk(sub, e->name, entries, total, err);
    }
    if ((rc = read_file(dfd, name, rel, &data, &mtime, err)) < 0)
        return rc;
    *total += g_bytes_get_size(data);
    if (*total > VTPM_ARCHIVE_MAX_TOTAL)
        return vtpm_error_set(err, INTERNAL, "state dir holds more than %u bytes",
                              VTPM_ARCHIVE_MAX_TOTAL);
    add_entry(entries, g_steal_pointer(&rel), false, g_steal_pointer(&data), mtime);
    return 0;
}

/* Pre-order, so that every directory precedes what is in it. */
static int
walk(int dfd, const char *prefix, GPtrArray *entries, uint64_t *total, vtpm_error *err)
{
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = list_dir(dfd, *prefix ? prefix : ".", &names, err)) < 0)
        return rc;
    for (guint i = 0; i < names->len; i++) {
        if ((rc = walk_one(dfd, prefix, names->pdata[i], entries, total, err)) < 0)
            return rc;
    }
    return 0;
}

static int
check_text(const char *what, const char *s, vtpm_error *err)
{
    if (s && !g_utf8_validate(s, -1, NULL))
        return vtpm_error_set(err, INTERNAL, "archive meta: %s is not valid UTF-8", what);
    return 0;
}

/* Caller mistakes are caught before the state dir is read.  Strings
 * must be UTF-8 because json-glib would copy invalid bytes into the
 * manifest as they are, producing one that verify refuses. */
static int
check_meta(const vtpm_archive_meta *meta, char uuid[37], vtpm_error *err)
{
    GHashTableIter it;
    gpointer k, v;
    int rc;

    if (!memchr(meta->uuid, '\0', sizeof(meta->uuid)) ||
        vtpm_proto_parse_uuid(meta->uuid, NULL, uuid, NULL) < 0)
        return vtpm_error_set(err, INTERNAL, "archive meta: uuid is not a canonical UUID");
    if (meta->generation > (uint64_t)G_MAXINT64)
        return vtpm_error_set(err, INTERNAL, "archive meta: generation %" PRIu64 " out of range",
                              meta->generation);
    if ((rc = check_text("tpm_version", meta->tpm_version, err)) < 0 ||
        (rc = check_text("tpm_model", meta->tpm_model, err)) < 0 ||
        (rc = check_text("secret_security", meta->secret_security, err)) < 0 ||
        (rc = check_text("reason", meta->reason, err)) < 0 ||
        (rc = check_text("domain_xml", meta->domain_xml, err)) < 0)
        return rc;
    if (!meta->extra)
        return 0;
    g_hash_table_iter_init(&it, meta->extra);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if ((rc = check_text("an extra key", k, err)) < 0 ||
            (rc = check_text("an extra value", v, err)) < 0)
            return rc;
    }
    return 0;
}

/* A string member, null when unset. */
static void
add_str(JsonBuilder *b, const char *key, const char *s)
{
    json_builder_set_member_name(b, key);
    if (s)
        json_builder_add_string_value(b, s);
    else
        json_builder_add_null_value(b);
}

static void
add_tpm(JsonBuilder *b, const vtpm_archive_meta *meta)
{
    json_builder_set_member_name(b, "tpm");
    if (!meta->tpm_version) {
        json_builder_add_null_value(b);
        return;
    }
    json_builder_begin_object(b);
    add_str(b, "version", meta->tpm_version);
    add_str(b, "model", meta->tpm_model);
    add_str(b, "secret_security", meta->secret_security);
    json_builder_end_object(b);
}

/* Sorted keys: a hash table's order would make packing non-deterministic.
 * A NULL value is written as "": the map is str -> str. */
static void
add_extra(JsonBuilder *b, GHashTable *extra)
{
    g_autofree gpointer *keys = extra ? g_hash_table_get_keys_as_array(extra, NULL) : NULL;
    guint n = extra ? g_hash_table_size(extra) : 0;

    json_builder_set_member_name(b, "extra");
    json_builder_begin_object(b);
    if (n)
        qsort(keys, n, sizeof(*keys), cmp_str);
    for (guint i = 0; i < n; i++) {
        const char *v = g_hash_table_lookup(extra, keys[i]);

        add_str(b, keys[i], v ? v : "");
    }
    json_builder_end_object(b);
}

static void
add_contents(JsonBuilder *b, GPtrArray *entries)
{
    json_builder_set_member_name(b, "files");
    json_builder_begin_object(b);
    for (guint i = 0; i < entries->len; i++) {
        const entry *e = entries->pdata[i];
        g_autofree char *sha = NULL;
        gsize size;
        const void *d;

        if (e->dir)
            continue;
        d = g_bytes_get_data(e->data, &size);
        sha = vtpm_archive_sha256(d, size);
        json_builder_set_member_name(b, e->name);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "size");
        json_builder_add_int_value(b, (gint64)size);
        json_builder_set_member_name(b, "sha256");
        json_builder_add_string_value(b, sha);
        json_builder_end_object(b);
    }
    json_builder_end_object(b);
    json_builder_set_member_name(b, "dirs");
    json_builder_begin_array(b);
    for (guint i = 0; i < entries->len; i++) {
        const entry *e = entries->pdata[i];
        g_autofree char *name = e->dir ? g_strndup(e->name, strlen(e->name) - 1) : NULL;

        if (e->dir)
            json_builder_add_string_value(b, name);
    }
    json_builder_end_array(b);
}

static int
build_manifest(const vtpm_archive_meta *meta, const char *uuid, GPtrArray *entries, char **out,
               size_t *out_len, vtpm_error *err)
{
    g_autoptr(JsonBuilder) b = json_builder_new_immutable();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;
    g_autofree char *text = NULL;
    gsize n = 0;

    json_builder_begin_object(b);
    /* Always the format this code writes, whatever meta->format says. */
    json_builder_set_member_name(b, "format");
    json_builder_add_int_value(b, VTPM_ARCHIVE_FORMAT);
    add_str(b, "uuid", uuid);
    add_tpm(b, meta);
    json_builder_set_member_name(b, "generation");
    json_builder_add_int_value(b, (gint64)meta->generation);
    json_builder_set_member_name(b, "created_ms");
    json_builder_add_int_value(b, meta->created_ms);
    add_str(b, "reason", meta->reason);
    add_str(b, "domain_xml", meta->domain_xml);
    add_extra(b, meta->extra);
    add_contents(b, entries);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    /* Pretty: `tar -xOf x.tar vtpmd-manifest.json` is meant for people. */
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 2);
    text = json_generator_to_data(gen, &n);
    if (n > MANIFEST_MAX)
        return vtpm_error_set(err, INTERNAL, "archive manifest would be %zu bytes, over %u",
                              (size_t)n, MANIFEST_MAX);
    *out = g_steal_pointer(&text);
    *out_len = n;
    return 0;
}

/* Why opening @path as a directory failed.  With O_NOFOLLOW|O_DIRECTORY
 * a link shows up as ELOOP or ENOTDIR, which would not say what is
 * wrong. */
static const char *
open_failure(const char *path, int e)
{
    struct stat st;

    if ((e == ELOOP || e == ENOTDIR) && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        return "it is a symlink";
    return g_strerror(e);
}

int
vtpm_archive_pack(const char *state_dir, const vtpm_archive_meta *meta, GBytes **out,
                  vtpm_error *err)
{
    g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(entry_free);
    g_autoptr(GByteArray) a = NULL;
    g_autofree char *manifest = NULL;
    g_auto(afd) dfd = -1;
    char uuid[37];
    uint64_t total = 0;
    size_t mlen = 0;
    int rc;

    if ((rc = check_meta(meta, uuid, err)) < 0)
        return rc;
    dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND, "state dir %s does not exist",
                              state_dir);
    if (dfd < 0)
        return vtpm_error_set(err, INTERNAL, "opening state dir %s: %s", state_dir,
                              open_failure(state_dir, errno));
    if ((rc = walk(dfd, "", entries, &total, err)) < 0 ||
        (rc = build_manifest(meta, uuid, entries, &manifest, &mlen, err)) < 0)
        return rc;
    if (total + mlen > VTPM_ARCHIVE_MAX_TOTAL)
        return vtpm_error_set(err, INTERNAL, "archive contents would exceed %u bytes",
                              VTPM_ARCHIVE_MAX_TOTAL);
    a = g_byte_array_sized_new((guint)(total + mlen + (entries->len + 4) * (size_t)BLOCK * 2));
    /* The manifest's mtime is its creation time, so it too depends only
     * on @meta. */
    put_member(a, VTPM_ARCHIVE_MANIFEST, false, manifest, mlen, meta->created_ms / 1000);
    for (guint i = 0; i < entries->len; i++) {
        const entry *e = entries->pdata[i];
        gsize size = 0;
        const void *d = e->data ? g_bytes_get_data(e->data, &size) : NULL;

        put_member(a, e->name, e->dir, d, size, e->mtime);
    }
    g_byte_array_set_size(a, a->len + 2 * BLOCK);
    memset(a->data + a->len - 2 * BLOCK, 0, 2 * BLOCK);
    *out = g_byte_array_free_to_bytes(g_steal_pointer(&a));
    return 0;
}

/* ---- extract ---------------------------------------------------------------------- */

/* The directory holding @rel, opened one component at a time without
 * following links, and @rel's last component. */
static int
open_parent(int dfd, const char *rel, int *out, const char **leaf, vtpm_error *err)
{
    g_auto(afd) fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    const char *p = rel, *slash;

    if (fd < 0)
        return vtpm_error_set(err, INTERNAL, "extract: %s", g_strerror(errno));
    while ((slash = strchr(p, '/'))) {
        g_autofree char *comp = g_strndup(p, (gsize)(slash - p));
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (next < 0)
            return vtpm_error_set(err, INTERNAL, "extract: opening the directory of %s: %s", rel,
                                  g_strerror(errno));
        close(fd);
        fd = next;
        p = slash + 1;
    }
    *out = g_steal_fd(&fd);
    *leaf = p;
    return 0;
}

static int
write_all(int fd, const guint8 *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Ownership before mode: chown may clear mode bits. */
static int
own(int fd, mode_t mode, int uid, int gid)
{
    if ((uid != -1 || gid != -1) && fchown(fd, (uid_t)uid, (gid_t)gid) < 0)
        return -1;
    return fchmod(fd, mode);
}

static int
set_mtime(int fd, int64_t mtime)
{
    struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = (time_t)mtime } };

    return futimens(fd, ts);
}

/* Creates one member below @dfd and records it in @created at once, so
 * that a failure half-way through leaves nothing unaccounted for. */
static int
put_one(int dfd, const member *m, int uid, int gid, GPtrArray *created, vtpm_error *err)
{
    g_auto(afd) pfd = -1;
    g_auto(afd) fd = -1;
    const char *leaf;
    int rc, tmp;

    if ((rc = open_parent(dfd, m->name, &tmp, &leaf, err)) < 0)
        return rc;
    pfd = tmp;
    if (m->dir) {
        if (mkdirat(pfd, leaf, 0700) < 0)
            return vtpm_error_set(err, vtpm_fs_fault(errno), "extract: creating %s: %s", m->name,
                                  g_strerror(errno));
        g_ptr_array_add(created, (gpointer)m);
        fd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || own(fd, 0700, uid, gid) < 0)
            return vtpm_error_set(err, INTERNAL, "extract: %s: %s", m->name, g_strerror(errno));
        return 0;
    }
    fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "extract: creating %s: %s", m->name,
                              g_strerror(errno));
    g_ptr_array_add(created, (gpointer)m);
    if (own(fd, 0600, uid, gid) < 0 || write_all(fd, m->data, m->size) < 0 ||
        set_mtime(fd, m->mtime) < 0 || fsync(fd) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "extract: writing %s: %s", m->name,
                              g_strerror(errno));
    tmp = g_steal_fd(&fd);
    if (close(tmp) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "extract: writing %s: %s", m->name,
                              g_strerror(errno));
    return 0;
}

/* Directories last and deepest first: creating their contents changed
 * their mtimes, and each fsync records the entries made in it. */
static int
seal_dirs(int dfd, GPtrArray *created, vtpm_error *err)
{
    for (guint i = created->len; i-- > 0;) {
        const member *m = created->pdata[i];
        g_auto(afd) pfd = -1;
        g_auto(afd) fd = -1;
        const char *leaf;
        int rc, tmp;

        if (!m->dir)
            continue;
        if ((rc = open_parent(dfd, m->name, &tmp, &leaf, err)) < 0)
            return rc;
        pfd = tmp;
        fd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || set_mtime(fd, m->mtime) < 0 || fsync(fd) < 0)
            return vtpm_error_set(err, vtpm_fs_fault(errno), "extract: syncing %s: %s", m->name,
                                  g_strerror(errno));
    }
    return 0;
}

/* Best effort: removes what @created lists, newest first so that each
 * directory is empty by the time its turn comes. */
static void
rollback(int dfd, GPtrArray *created)
{
    for (guint i = created->len; i-- > 0;) {
        const member *m = created->pdata[i];
        g_auto(afd) pfd = -1;
        const char *leaf;
        int tmp;

        if (open_parent(dfd, m->name, &tmp, &leaf, NULL) < 0)
            continue;
        pfd = tmp;
        unlinkat(pfd, leaf, m->dir ? AT_REMOVEDIR : 0);
    }
    fsync(dfd);
}

static int
check_empty(int dfd, const char *path, vtpm_error *err)
{
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = list_dir(dfd, path, &names, err)) < 0)
        return vtpm_error_prefix(err, "extract");
    if (names->len)
        return vtpm_error_set(err, INTERNAL, "extract: %s is not empty", path);
    return 0;
}

int
vtpm_archive_extract(const void *data, size_t len, const char *dest_dir, int uid, int gid,
                     vtpm_archive_meta *meta, vtpm_error *err)
{
    g_autoptr(GPtrArray) created = g_ptr_array_new();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GArray) members = NULL;
    g_auto(afd) dfd = -1;
    int rc;

    if ((rc = verify_all(data, len, &m, &members, err)) < 0)
        return rc;
    /* A link in its place could point anywhere; refused like any other. */
    dfd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return vtpm_error_set(err, INTERNAL, "extract: opening %s: %s", dest_dir,
                              open_failure(dest_dir, errno));
    if ((rc = check_empty(dfd, dest_dir, err)) < 0)
        return rc;
    for (guint i = 1; i < members->len && rc == 0; i++)
        rc = put_one(dfd, &g_array_index(members, member, i), uid, gid, created, err);
    if (rc == 0)
        rc = seal_dirs(dfd, created, err);
    if (rc == 0 && fsync(dfd) < 0)
        rc = vtpm_error_set(err, vtpm_fs_fault(errno), "extract: syncing %s: %s", dest_dir,
                            g_strerror(errno));
    if (rc < 0) {
        rollback(dfd, created);
        return rc;
    }
    if (meta)
        meta_move(meta, &m);
    return 0;
}
