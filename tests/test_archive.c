/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "archive.h"

#define UUID "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
#define INTEGRITY VTPM_FAULT_STATE_INTEGRITY
#define INTERNAL VTPM_FAULT_INTERNAL
#define PERMALL "tpm2/tpm2-00.permall"
/* A fixed mtime, so that archives of separately made trees compare. */
#define MTIME 1700000000

/* ---- file system helpers --------------------------------------------------- */

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static void
rm_rf(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *
tmp_dir(void)
{
    char *d = g_dir_make_tmp("test-archive-XXXXXX", NULL);

    assert_non_null(d);
    return d;
}

static void
set_mtime(const char *path, time_t t)
{
    struct timespec ts[2] = { { .tv_sec = t }, { .tv_sec = t } };

    assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void
put_file(const char *dir, const char *rel, const void *data, size_t n)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);

    assert_true(g_file_set_contents(p, data, (gssize)n, NULL));
    assert_int_equal(chmod(p, 0640), 0);
    set_mtime(p, MTIME);
}

static void
put_dir(const char *dir, const char *rel)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);

    assert_int_equal(mkdir(p, 0711), 0);
}

static GBytes *
slurp(const char *dir, const char *rel)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);
    char *data = NULL;
    gsize n = 0;

    assert_true(g_file_get_contents(p, &data, &n, NULL));
    return g_bytes_new_take(data, n);
}

static mode_t
mode_of(const char *dir, const char *rel)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);
    struct stat st;

    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode;
}

static bool
exists(const char *dir, const char *rel)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);
    struct stat st;

    return lstat(p, &st) == 0;
}

static guint
count_entries_in(const char *dir, const char *rel)
{
    g_autofree char *p = g_build_filename(dir, rel, NULL);
    g_autoptr(GDir) d = g_dir_open(p, 0, NULL);
    guint n = 0;

    assert_non_null(d);
    while (g_dir_read_name(d))
        n++;
    return n;
}

static GBytes *
random_bytes(size_t n, guint32 seed)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(seed);
    guint8 *p = g_malloc(n);

    for (size_t i = 0; i < n; i++)
        p[i] = (guint8)g_rand_int_range(r, 0, 256);
    return g_bytes_new_take(p, n);
}

/* A state dir the way swtpm leaves one: <sub>/<file> with @state and
 * an empty .lock next to it.  Mtimes are fixed. */
static char *
make_state(const char *sub, const char *file, GBytes *state)
{
    char *dir = tmp_dir();
    g_autofree char *rel = g_build_filename(sub, file, NULL);
    g_autofree char *lock = g_build_filename(sub, ".lock", NULL);
    g_autofree char *subp = g_build_filename(dir, sub, NULL);

    put_dir(dir, sub);
    put_file(dir, rel, g_bytes_get_data(state, NULL), g_bytes_get_size(state));
    put_file(dir, lock, "", 0);
    set_mtime(subp, MTIME);
    return dir;
}

static bool
bytes_equal(GBytes *a, GBytes *b)
{
    return g_bytes_equal(a, b);
}

/* ---- meta ------------------------------------------------------------------------ */

static void
fill_meta(vtpm_archive_meta *m)
{
    vtpm_archive_meta_init(m);
    memcpy(m->uuid, UUID, sizeof(m->uuid));
    m->tpm_version = g_strdup("2.0");
    m->tpm_model = g_strdup("tpm-crb");
    m->secret_security = g_strdup("user");
    m->generation = 7;
    m->created_ms = 1700000000123;
    m->reason = g_strdup("migrate");
    m->domain_xml = g_strdup("<domain type='kvm'>\n  <name>\"instance\"</name>\n"
                             "  <description>tab\there, back\\slash, ctl\x01, "
                             "caf\xc3\xa9</description>\n"
                             "</domain>\n");
    g_hash_table_replace(m->extra, g_strdup("wrapped_secret"), g_strdup("c2VjcmV0"));
    g_hash_table_replace(m->extra, g_strdup("note"), g_strdup("line1\nline2 \"quoted\""));
}

static void
assert_meta_equal(const vtpm_archive_meta *a, const vtpm_archive_meta *b)
{
    GHashTableIter it;
    gpointer k, v;

    assert_int_equal(a->format, VTPM_ARCHIVE_FORMAT);
    assert_string_equal(a->uuid, b->uuid);
    assert_true(g_strcmp0(a->tpm_version, b->tpm_version) == 0);
    assert_true(g_strcmp0(a->tpm_model, b->tpm_model) == 0);
    assert_true(g_strcmp0(a->secret_security, b->secret_security) == 0);
    assert_true(a->generation == b->generation);
    assert_true(a->created_ms == b->created_ms);
    assert_true(g_strcmp0(a->reason, b->reason) == 0);
    assert_true(g_strcmp0(a->domain_xml, b->domain_xml) == 0);
    assert_non_null(a->extra);
    assert_int_equal(g_hash_table_size(a->extra), b->extra ? g_hash_table_size(b->extra) : 0);
    if (!b->extra)
        return;
    g_hash_table_iter_init(&it, b->extra);
    while (g_hash_table_iter_next(&it, &k, &v))
        assert_string_equal(g_hash_table_lookup(a->extra, k), v);
}

static GBytes *
pack_ok(const char *dir, const vtpm_archive_meta *m)
{
    vtpm_error err = { 0 };
    GBytes *out = NULL;
    int rc = vtpm_archive_pack(dir, m, &out, &err);

    if (rc != 0)
        fail_msg("pack: %s", err.message);
    assert_non_null(out);
    assert_int_equal(g_bytes_get_size(out) % 512, 0);
    return out;
}

static void
verify_ok(GBytes *a, vtpm_archive_meta *m)
{
    vtpm_error err = { 0 };
    int rc = vtpm_archive_verify(g_bytes_get_data(a, NULL), g_bytes_get_size(a), m, &err);

    if (rc != 0)
        fail_msg("verify: %s", err.message);
}

static void
extract_raw(const void *data, size_t len, const char *dest, int uid, int gid,
            vtpm_archive_meta *m)
{
    vtpm_error err = { 0 };
    int rc = vtpm_archive_extract(data, len, dest, uid, gid, m, &err);

    if (rc != 0)
        fail_msg("extract: %s", err.message);
}

static void
extract_ok(GBytes *a, const char *dest, int uid, int gid, vtpm_archive_meta *m)
{
    extract_raw(g_bytes_get_data(a, NULL), g_bytes_get_size(a), dest, uid, gid, m);
}

/* A meta with recognisable contents, to see that failures leave it be. */
static void
sentinel_meta(vtpm_archive_meta *m)
{
    vtpm_archive_meta_init(m);
    m->generation = 4242;
    m->reason = g_strdup("sentinel");
}

static void
assert_sentinel(const vtpm_archive_meta *m)
{
    assert_true(m->generation == 4242);
    assert_string_equal(m->reason, "sentinel");
    assert_string_equal(m->uuid, "");
}

/* Verify fails with StateIntegrity, mentioning @needle. */
static void
expect_bad(const void *data, size_t len, const char *needle)
{
    g_auto(vtpm_archive_meta) m = { 0 };
    vtpm_error err = { 0 };
    int rc;

    sentinel_meta(&m);
    rc = vtpm_archive_verify(data, len, &m, &err);
    if (rc == 0)
        fail_msg("verify accepted an archive that should fail with '%s'", needle);
    if (rc != -(int)INTEGRITY || err.code != INTEGRITY || !strstr(err.message, needle))
        fail_msg("expected StateIntegrity with '%s', got %s: %s", needle,
                 vtpm_fault_name(err.code), err.message);
    assert_sentinel(&m);
}

static void
expect_bad_ba(GByteArray *a, const char *needle)
{
    expect_bad(a->data, a->len, needle);
}

/* ---- a ustar writer for hostile archives --------------------------------------- */

enum {
    F_NAME = 0,
    F_MODE = 100,
    F_SIZE = 124,
    F_MTIME = 136,
    F_CHKSUM = 148,
    F_TYPE = 156,
    F_LINK = 157,
    F_MAGIC = 257,
    F_VERSION = 263,
    F_PREFIX = 345,
};

static void
fix_cksum(guint8 *h)
{
    unsigned sum = 0;

    memset(h + F_CHKSUM, ' ', 8);
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + F_CHKSUM, 7, "%06o", sum);
}

static void
tar_put(GByteArray *a, const char *name, char type, const void *data, size_t size)
{
    static const guint8 zeros[512];
    guint8 h[512] = { 0 };

    memcpy(h + F_NAME, name, MIN(strlen(name), 100));
    memcpy(h + F_MODE, "0000644", 7);
    memcpy(h + 108, "0001750", 7);
    memcpy(h + 116, "0001750", 7);
    snprintf((char *)h + F_SIZE, 12, "%011o", (unsigned)size);
    snprintf((char *)h + F_MTIME, 12, "%011o", (unsigned)MTIME);
    h[F_TYPE] = (guint8)type;
    memcpy(h + F_MAGIC, "ustar", 6);
    memcpy(h + F_VERSION, "00", 2);
    memcpy(h + 265, "user", 4);
    fix_cksum(h);
    g_byte_array_append(a, h, 512);
    if (size) {
        g_byte_array_append(a, data, (guint)size);
        if (size % 512)
            g_byte_array_append(a, zeros, (guint)(512 - size % 512));
    }
}

static void
tar_end(GByteArray *a)
{
    static const guint8 zeros[1024];

    g_byte_array_append(a, zeros, sizeof(zeros));
}

typedef struct {
    const char *name; /* a directory's ends in '/' */
    char type;
    const char *data; /* NULL: empty */
} mspec;

static const mspec std_ms[] = {
    { "tpm2/", '5', NULL },
    { PERMALL, '0', "permanent state" },
};

static bool
is_file(char t)
{
    return t == '0' || t == '\0';
}

/* The manifest verify wants for @ms, then @patch ({"key": value, ...};
 * the value "<delete>" removes the key) applied to its top level. */
static char *
manifest_for(const mspec *ms, size_t n, const char *patch)
{
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    JsonObject *o = json_object_new();
    JsonObject *tpm = json_object_new();
    JsonObject *files = json_object_new();
    JsonArray *dirs = json_array_new();

    json_object_set_int_member(o, "format", 1);
    json_object_set_string_member(o, "uuid", UUID);
    json_object_set_string_member(tpm, "version", "2.0");
    json_object_set_string_member(tpm, "model", "tpm-tis");
    json_object_set_string_member(tpm, "secret_security", "host");
    json_object_set_object_member(o, "tpm", tpm);
    json_object_set_int_member(o, "generation", 1);
    json_object_set_int_member(o, "created_ms", 0);
    json_object_set_string_member(o, "reason", "test");
    json_object_set_null_member(o, "domain_xml");
    json_object_set_object_member(o, "extra", json_object_new());
    for (size_t i = 0; i < n; i++) {
        const char *d = ms[i].data ? ms[i].data : "";
        g_autofree char *sha = vtpm_archive_sha256(d, strlen(d));
        JsonObject *f;

        if (ms[i].type == '5') {
            g_autofree char *dn = g_strdup(ms[i].name);
            size_t len = strlen(dn);

            if (len && dn[len - 1] == '/')
                dn[len - 1] = '\0';
            json_array_add_string_element(dirs, dn);
            continue;
        }
        if (!is_file(ms[i].type))
            continue;
        f = json_object_new();
        json_object_set_int_member(f, "size", (gint64)strlen(d));
        json_object_set_string_member(f, "sha256", sha);
        json_object_set_object_member(files, ms[i].name, f);
    }
    json_object_set_object_member(o, "files", files);
    json_object_set_array_member(o, "dirs", dirs);
    if (patch) {
        g_autoptr(JsonParser) p = json_parser_new();
        JsonObjectIter it;
        const char *k;
        JsonNode *v;

        assert_true(json_parser_load_from_data(p, patch, -1, NULL));
        json_object_iter_init(&it, json_node_get_object(json_parser_get_root(p)));
        while (json_object_iter_next(&it, &k, &v)) {
            if (JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_STRING &&
                strcmp(json_node_get_string(v), "<delete>") == 0)
                json_object_remove_member(o, k);
            else
                json_object_set_member(o, k, json_node_copy(v));
        }
    }
    json_node_take_object(root, o);
    json_generator_set_root(gen, root);
    return json_generator_to_data(gen, NULL);
}

/* A manifest (@manifest, or the right one when NULL, or none when "")
 * followed by @ms, and the end marker. */
static GByteArray *
craft(const mspec *ms, size_t n, const char *manifest)
{
    GByteArray *a = g_byte_array_new();
    g_autofree char *mf = manifest ? g_strdup(manifest) : manifest_for(ms, n, NULL);

    if (*mf)
        tar_put(a, VTPM_ARCHIVE_MANIFEST, '0', mf, strlen(mf));
    for (size_t i = 0; i < n; i++)
        tar_put(a, ms[i].name, ms[i].type, ms[i].data, ms[i].data ? strlen(ms[i].data) : 0);
    tar_end(a);
    return a;
}

/* Header offset of member @idx of a well-formed archive. */
static size_t
member_off(const guint8 *d, guint idx)
{
    size_t off = 0;

    for (guint i = 0; i < idx; i++) {
        char f[13] = { 0 };

        memcpy(f, d + off + F_SIZE, 12);
        off += 512 + (strtoull(f, NULL, 8) + 511) / 512 * 512;
    }
    return off;
}

/* Overwrites a header field of member @idx and fixes the checksum. */
static void
set_field(GByteArray *a, guint idx, size_t field, size_t flen, const void *v, size_t vlen)
{
    guint8 *h = a->data + member_off(a->data, idx);

    memset(h + field, 0, flen);
    memcpy(h + field, v, vlen);
    fix_cksum(h);
}

static void
assert_valid(GByteArray *a)
{
    vtpm_error err = { 0 };

    if (vtpm_archive_verify(a->data, a->len, NULL, &err) != 0)
        fail_msg("verify: %s", err.message);
}

/* ---- basics ------------------------------------------------------------------------ */

static void
test_sha256(void **state)
{
    g_autofree char *empty = vtpm_archive_sha256(NULL, 0);
    g_autofree char *abc = vtpm_archive_sha256("abc", 3);

    assert_string_equal(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_string_equal(abc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void
test_meta_init_clear(void **state)
{
    vtpm_archive_meta m;

    vtpm_archive_meta_init(&m);
    assert_int_equal(m.format, VTPM_ARCHIVE_FORMAT);
    assert_non_null(m.extra);
    assert_null(m.tpm_version);
    m.reason = g_strdup("x");
    vtpm_archive_meta_clear(&m);
    assert_null(m.extra);
    assert_null(m.reason);
    vtpm_archive_meta_clear(&m);
    vtpm_archive_meta_clear(NULL);
}

/* ---- round trips ---------------------------------------------------------------- */

static void
test_round_trip_tpm2(void **state)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, 1);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) in = { 0 };
    g_auto(vtpm_archive_meta) v = { 0 };
    g_auto(vtpm_archive_meta) x = { 0 };
    g_autoptr(GBytes) a = NULL;
    g_autoptr(GBytes) got = NULL;

    fill_meta(&in);
    a = pack_ok(src, &in);
    vtpm_archive_meta_init(&v);
    verify_ok(a, &v);
    assert_meta_equal(&v, &in);
    vtpm_archive_meta_init(&x);
    extract_ok(a, dest, -1, -1, &x);
    assert_meta_equal(&x, &in);

    got = slurp(dest, PERMALL);
    assert_true(bytes_equal(got, content));
    assert_int_equal(count_entries_in(dest, "."), 1);
    assert_int_equal(count_entries_in(dest, "tpm2"), 1);
    assert_int_equal(mode_of(dest, "tpm2"), S_IFDIR | 0700);
    assert_int_equal(mode_of(dest, PERMALL), S_IFREG | 0600);
    assert_false(exists(dest, "tpm2/.lock"));
    rm_rf(src);
    rm_rf(dest);
}

/* A UEFI instance's state dir: the TPM state and, beside it, the variable
 * store (540672 bytes, OVMF_VARS_4M's size).  Both go into the archive,
 * both are checked, both come back; and a second flipped byte in the
 * store is as fatal as one in the TPM state. */
static void
test_round_trip_two_files(void **state)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, 1);
    g_autoptr(GBytes) vars = random_bytes(540672, 2);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) in = { 0 };
    g_auto(vtpm_archive_meta) v = { 0 };
    g_auto(vtpm_archive_meta) x = { 0 };
    g_autoptr(GBytes) a = NULL;
    g_autoptr(GBytes) got = NULL;
    g_autofree guint8 *bad = NULL;
    gsize n = 0, off = 0;
    const guint8 *d;
    vtpm_error err = { 0 };

    put_file(src, "nvram.fd", g_bytes_get_data(vars, NULL), g_bytes_get_size(vars));
    fill_meta(&in);
    a = pack_ok(src, &in);
    vtpm_archive_meta_init(&v);
    verify_ok(a, &v);
    assert_int_equal(v.files->len, 2);
    assert_string_equal(v.files->pdata[0], "nvram.fd");
    assert_string_equal(v.files->pdata[1], PERMALL);
    assert_true(vtpm_archive_holds(&v, "nvram.fd"));
    assert_true(vtpm_archive_holds(&v, PERMALL));
    assert_false(vtpm_archive_holds(&v, "tpm2"));
    vtpm_archive_meta_init(&x);
    extract_ok(a, dest, -1, -1, &x);
    assert_true(vtpm_archive_holds(&x, "nvram.fd"));
    got = slurp(dest, "nvram.fd");
    assert_true(bytes_equal(got, vars));
    g_bytes_unref(got);
    got = slurp(dest, PERMALL);
    assert_true(bytes_equal(got, content));
    assert_int_equal(count_entries_in(dest, "."), 2);
    assert_int_equal(mode_of(dest, "nvram.fd"), S_IFREG | 0600);

    /* One byte of the store flipped: StateIntegrity naming it. */
    d = g_bytes_get_data(a, &n);
    bad = g_memdup2(d, n);
    for (gsize i = 0; i + 512 <= n; i += 512) {
        if (memcmp(bad + i, "nvram.fd", 9) == 0) {
            off = i + 512 + 1000;
            break;
        }
    }
    assert_true(off > 0);
    bad[off] ^= 0x40;
    assert_int_equal(vtpm_archive_verify(bad, n, NULL, &err), -(int)INTEGRITY);
    assert_non_null(strstr(err.message, "member nvram.fd"));
    assert_non_null(strstr(err.message, "sha256 mismatch"));
    rm_rf(src);
    rm_rf(dest);
}

static void
test_deterministic(void **state)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, 2);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *src2 = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL, b = NULL, c = NULL, d = NULL;

    fill_meta(&m);
    a = pack_ok(src, &m);
    b = pack_ok(src, &m);
    assert_true(bytes_equal(a, b));
    /* Another tree with the same contents and mtimes. */
    c = pack_ok(src2, &m);
    assert_true(bytes_equal(a, c));
    /* Extraction restores mtimes, so an unchanged restored state packs
     * to the very bytes it came from. */
    extract_ok(a, dest, -1, -1, NULL);
    d = pack_ok(dest, &m);
    assert_true(bytes_equal(a, d));
    rm_rf(src);
    rm_rf(src2);
    rm_rf(dest);
}

static void
test_round_trip_tpm12(void **state)
{
    g_autoptr(GBytes) content = random_bytes(3000, 3);
    g_autofree char *src = make_state("tpm1.2", "tpm-00.permall", content);
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_auto(vtpm_archive_meta) x = { 0 };
    g_autoptr(GBytes) a = NULL, got = NULL;

    fill_meta(&m);
    g_free(m.tpm_version);
    m.tpm_version = g_strdup("1.2");
    g_free(m.tpm_model);
    m.tpm_model = g_strdup("tpm-tis");
    a = pack_ok(src, &m);
    vtpm_archive_meta_init(&x);
    extract_ok(a, dest, -1, -1, &x);
    assert_meta_equal(&x, &m);
    got = slurp(dest, "tpm1.2/tpm-00.permall");
    assert_true(bytes_equal(got, content));
    assert_int_equal(mode_of(dest, "tpm1.2"), S_IFDIR | 0700);
    assert_int_equal(mode_of(dest, "tpm1.2/tpm-00.permall"), S_IFREG | 0600);
    assert_false(exists(dest, "tpm1.2/.lock"));
    rm_rf(src);
    rm_rf(dest);
}

static void
test_meta_round_trip(void **state)
{
    g_autofree char *src = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL, b = NULL;
    g_autofree char *big = NULL;

    fill_meta(&m);
    m.generation = G_MAXINT64;
    m.created_ms = -5;
    for (int i = 0; i < 20; i++)
        g_hash_table_replace(m.extra, g_strdup_printf("k%02d", i), g_strdup_printf("v\"%d\"\n", i));
    g_hash_table_replace(m.extra, g_strdup("empty"), g_strdup(""));
    a = pack_ok(src, &m);
    {
        g_auto(vtpm_archive_meta) v = { 0 };

        verify_ok(a, &v);
        assert_meta_equal(&v, &m);
    }

    /* A manifest-only archive: no vTPM, nothing optional set. */
    vtpm_archive_meta_clear(&m);
    vtpm_archive_meta_init(&m);
    memcpy(m.uuid, UUID, sizeof(m.uuid));
    b = pack_ok(src, &m);
    {
        g_auto(vtpm_archive_meta) v = { 0 };

        verify_ok(b, &v);
        assert_meta_equal(&v, &m);
        assert_null(v.tpm_version);
        assert_null(v.domain_xml);
        assert_null(v.reason);
    }

    /* A big domain XML fits; one past the manifest limit does not. */
    g_clear_pointer(&a, g_bytes_unref);
    big = g_malloc(900 * 1024 + 1);
    memset(big, 'x', 900 * 1024);
    big[900 * 1024] = '\0';
    m.domain_xml = g_steal_pointer(&big);
    a = pack_ok(src, &m);
    verify_ok(a, NULL);
    {
        vtpm_error err = { 0 };
        GBytes *out = NULL;

        g_free(m.domain_xml);
        m.domain_xml = g_malloc(1024 * 1024 + 1);
        memset(m.domain_xml, 'x', 1024 * 1024);
        m.domain_xml[1024 * 1024] = '\0';
        assert_int_equal(vtpm_archive_pack(src, &m, &out, &err), -(int)INTERNAL);
        assert_non_null(strstr(err.message, "manifest"));
        assert_null(out);
    }
    rm_rf(src);
}

/* The manifest as the spec describes it, read with json-glib. */
static void
test_manifest_layout(void **state)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, 4);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *sha = vtpm_archive_sha256(g_bytes_get_data(content, NULL), 6 * 1024);
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL;
    g_autoptr(JsonParser) p = json_parser_new();
    const guint8 *d;
    JsonObject *o, *f;
    JsonArray *dirs;
    size_t size;
    char sf[13] = { 0 };

    fill_meta(&m);
    a = pack_ok(src, &m);
    d = g_bytes_get_data(a, NULL);
    assert_string_equal((const char *)d, VTPM_ARCHIVE_MANIFEST);
    assert_memory_equal(d + F_MAGIC, "ustar\0" "00", 8);
    assert_memory_equal(d + F_MODE, "0000600", 8);
    memcpy(sf, d + F_SIZE, 12);
    size = strtoull(sf, NULL, 8);
    assert_true(json_parser_load_from_data(p, (const char *)d + 512, (gssize)size, NULL));
    o = json_node_get_object(json_parser_get_root(p));
    assert_int_equal(json_object_get_int_member(o, "format"), 1);
    assert_string_equal(json_object_get_string_member(o, "uuid"), UUID);
    f = json_object_get_object_member(o, "tpm");
    assert_string_equal(json_object_get_string_member(f, "model"), "tpm-crb");
    assert_int_equal(json_object_get_int_member(o, "generation"), 7);
    assert_string_equal(json_object_get_string_member(o, "reason"), "migrate");
    assert_string_equal(json_object_get_string_member(json_object_get_object_member(o, "extra"),
                                                      "wrapped_secret"),
                        "c2VjcmV0");
    assert_int_equal(json_object_get_size(json_object_get_object_member(o, "files")), 1);
    f = json_object_get_object_member(json_object_get_object_member(o, "files"), PERMALL);
    assert_non_null(f);
    assert_int_equal(json_object_get_int_member(f, "size"), 6 * 1024);
    assert_string_equal(json_object_get_string_member(f, "sha256"), sha);
    dirs = json_object_get_array_member(o, "dirs");
    assert_int_equal(json_array_get_length(dirs), 1);
    assert_string_equal(json_array_get_string_element(dirs, 0), "tpm2");
    /* Then the directory, then the file, with fixed modes and owners. */
    d += 512 + (size + 511) / 512 * 512;
    assert_string_equal((const char *)d, "tpm2/");
    assert_int_equal(d[F_TYPE], '5');
    assert_memory_equal(d + F_MODE, "0000700", 8);
    assert_memory_equal(d + 108, "0000000", 8);
    d += 512;
    assert_string_equal((const char *)d, PERMALL);
    assert_int_equal(d[F_TYPE], '0');
    rm_rf(src);
}

static bool
run(const char *cmd, char **out)
{
    g_autoptr(GError) gerr = NULL;
    int status = 0;

    if (!g_spawn_command_line_sync(cmd, out, NULL, &status, &gerr))
        return false;
    return g_spawn_check_wait_status(status, NULL);
}

/* Real tar reads what pack writes, and verify reads what tar writes. */
static void
test_tar_compat(void **state)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, 5);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_autofree char *work = tmp_dir();
    g_autofree char *tarfile = g_build_filename(work, "a.tar", NULL);
    g_autofree char *retar = g_build_filename(work, "b.tar", NULL);
    g_autofree char *xdir = g_build_filename(work, "x", NULL);
    g_autofree char *cmd = NULL;
    g_autofree char *listing = NULL;
    g_autofree char *gnu = NULL;
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL, got = NULL;
    gsize n = 0;

    g_autofree char *tar = g_find_program_in_path("tar");

    if (!tar) {
        rm_rf(src);
        rm_rf(work);
        skip();
    }
    fill_meta(&m);
    a = pack_ok(src, &m);
    assert_true(g_file_set_contents(tarfile, g_bytes_get_data(a, NULL), (gssize)g_bytes_get_size(a),
                                    NULL));
    cmd = g_strdup_printf("tar -tf %s", tarfile);
    assert_true(run(cmd, &listing));
    assert_string_equal(listing, VTPM_ARCHIVE_MANIFEST "\ntpm2/\n" PERMALL "\n");
    assert_int_equal(mkdir(xdir, 0700), 0);
    g_free(cmd);
    cmd = g_strdup_printf("tar -xf %s -C %s", tarfile, xdir);
    assert_true(run(cmd, NULL));
    got = slurp(xdir, PERMALL);
    assert_true(bytes_equal(got, content));
    /* GNU tar's own ustar output (other owners, record padding) passes. */
    g_free(cmd);
    cmd = g_strdup_printf("tar --format=ustar -cf %s -C %s " VTPM_ARCHIVE_MANIFEST " tpm2", retar,
                          xdir);
    assert_true(run(cmd, NULL));
    assert_true(g_file_get_contents(retar, &gnu, &n, NULL));
    assert_int_equal(n % 10240, 0);
    {
        g_auto(vtpm_archive_meta) v = { 0 };
        vtpm_error err = { 0 };

        if (vtpm_archive_verify(gnu, n, &v, &err) != 0)
            fail_msg("verify of GNU tar output: %s", err.message);
        assert_meta_equal(&v, &m);
    }
    rm_rf(src);
    rm_rf(work);
}

/* ---- pack refusals ---------------------------------------------------------------------- */

static void
expect_pack_fault(const char *dir, const vtpm_archive_meta *m, vtpm_fault code,
                  const char *needle)
{
    GBytes *sentinel = (GBytes *)&sentinel;
    GBytes *out = sentinel;
    vtpm_error err = { 0 };
    int rc = vtpm_archive_pack(dir, m, &out, &err);

    if (rc != -(int)code || err.code != code || !strstr(err.message, needle))
        fail_msg("expected %s with '%s', got %d %s: %s", vtpm_fault_name(code), needle, rc,
                 vtpm_fault_name(err.code), err.message);
    assert_ptr_equal(out, sentinel);
}

static void
test_pack_refusals(void **state)
{
    g_autofree char *src = tmp_dir();
    g_autofree char *missing = g_build_filename(src, "nope", NULL);
    g_autofree char *p = NULL;
    g_auto(vtpm_archive_meta) m = { 0 };
    int fd;

    fill_meta(&m);
    expect_pack_fault(missing, &m, VTPM_FAULT_STATE_NOT_FOUND, "does not exist");

    put_dir(src, "tpm2");
    p = g_build_filename(src, "tpm2", "link", NULL);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    expect_pack_fault(src, &m, INTERNAL, "symlink in state dir: tpm2/link");
    unlink(p);

    assert_int_equal(mkfifo(p, 0600), 0);
    expect_pack_fault(src, &m, INTERNAL, "unsupported file type in state dir: tpm2/link");
    unlink(p);

    put_file(src, "tpm2/bad name", "x", 1);
    expect_pack_fault(src, &m, INTERNAL, "characters outside");
    g_free(p);
    p = g_build_filename(src, "tpm2", "bad name", NULL);
    unlink(p);

    put_file(src, VTPM_ARCHIVE_MANIFEST, "{}", 2);
    expect_pack_fault(src, &m, INTERNAL, "contains a file named " VTPM_ARCHIVE_MANIFEST);
    g_free(p);
    p = g_build_filename(src, VTPM_ARCHIVE_MANIFEST, NULL);
    unlink(p);

    /* Sparse, so the test stays cheap. */
    g_free(p);
    p = g_build_filename(src, "tpm2", "huge", NULL);
    fd = open(p, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, VTPM_ARCHIVE_MAX_FILE + 1), 0);
    close(fd);
    expect_pack_fault(src, &m, INTERNAL, "exceed the limit");
    unlink(p);

    for (int i = 0; i < VTPM_ARCHIVE_MAX_ENTRIES - 1; i++) {
        g_autofree char *rel = g_strdup_printf("tpm2/f%02d", i);

        put_file(src, rel, "x", 1);
    }
    expect_pack_fault(src, &m, INTERNAL, "more than");
    rm_rf(src);

    memcpy(m.uuid, "not-a-uuid", 11);
    expect_pack_fault(missing, &m, INTERNAL, "uuid");
    memset(m.uuid, 'a', sizeof(m.uuid));
    expect_pack_fault(missing, &m, INTERNAL, "uuid");
    memcpy(m.uuid, UUID, sizeof(m.uuid));
    g_free(m.reason);
    m.reason = g_strdup("bad \xff utf8");
    expect_pack_fault(missing, &m, INTERNAL, "reason is not valid UTF-8");
}

/* The limit counts the manifest too: 63 state entries fit. */
static void
test_pack_entry_limit(void **state)
{
    g_autofree char *src = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL;

    fill_meta(&m);
    put_dir(src, "tpm2");
    for (int i = 0; i < VTPM_ARCHIVE_MAX_ENTRIES - 2; i++) {
        g_autofree char *rel = g_strdup_printf("tpm2/f%02d", i);

        put_file(src, rel, "x", 1);
    }
    a = pack_ok(src, &m);
    verify_ok(a, NULL);
    rm_rf(src);
}

static void
test_pack_skips_sockets_and_locks(void **state)
{
    g_autofree char *src = tmp_dir();
    g_autofree char *sock = g_build_filename(src, "tpm2", "swtpm-sock", NULL);
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    fill_meta(&m);
    put_dir(src, "tpm2");
    put_file(src, "tpm2/.lock", "", 0);
    put_file(src, ".lock", "", 0);
    put_file(src, PERMALL, "state", 5);
    assert_true(strlen(sock) < sizeof(sa.sun_path));
    strcpy(sa.sun_path, sock);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    a = pack_ok(src, &m);
    close(fd);
    extract_ok(a, dest, -1, -1, NULL);
    assert_int_equal(count_entries_in(dest, "."), 1);
    assert_int_equal(count_entries_in(dest, "tpm2"), 1);
    assert_true(exists(dest, PERMALL));
    rm_rf(src);
    rm_rf(dest);
}

/* swtpm writes every state blob to TMP2-00.<name> (TPM 1.2: TMP-00.<name>)
 * and renames it into place: a packer that meets one (a running TPM, or
 * a crash mid-write) leaves it out; names that only look alike stay. */
static void
test_pack_skips_swtpm_temp_files(void **state)
{
    g_autofree char *src = tmp_dir();
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL;

    fill_meta(&m);
    put_dir(src, "tpm2");
    put_dir(src, "tpm1.2");
    put_file(src, PERMALL, "state", 5);
    put_file(src, "tpm2/TMP2-00.permall", "torn", 4);
    put_file(src, "tpm2/TMP2-00.volatilestate", "", 0);
    put_file(src, "tpm1.2/TMP-00.permall", "torn", 4);
    put_file(src, "tpm2/TMP2-0x.permall", "kept", 4);
    put_file(src, "tpm2/TMP3-00.permall", "kept", 4);
    a = pack_ok(src, &m);
    extract_ok(a, dest, -1, -1, NULL);
    assert_true(exists(dest, PERMALL));
    assert_false(exists(dest, "tpm2/TMP2-00.permall"));
    assert_false(exists(dest, "tpm2/TMP2-00.volatilestate"));
    assert_false(exists(dest, "tpm1.2/TMP-00.permall"));
    assert_true(exists(dest, "tpm2/TMP2-0x.permall"));
    assert_true(exists(dest, "tpm2/TMP3-00.permall"));
    assert_int_equal(count_entries_in(dest, "tpm2"), 3);
    assert_int_equal(count_entries_in(dest, "tpm1.2"), 0);
    rm_rf(src);
    rm_rf(dest);
}

/* ---- hostile archives -------------------------------------------------------------------- */

static GByteArray *
packed_copy(guint32 seed)
{
    g_autoptr(GBytes) content = random_bytes(6 * 1024, seed);
    g_autofree char *src = make_state("tpm2", "tpm2-00.permall", content);
    g_auto(vtpm_archive_meta) m = { 0 };
    g_autoptr(GBytes) a = NULL;
    GByteArray *ba = g_byte_array_new();

    fill_meta(&m);
    a = pack_ok(src, &m);
    g_byte_array_append(ba, g_bytes_get_data(a, NULL), (guint)g_bytes_get_size(a));
    rm_rf(src);
    return ba;
}

static void
test_crafted_ok(void **state)
{
    g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);
    static const mspec no_slash[] = { { "tpm2", '5', NULL }, { "tpm2/x", '\0', "old-style" } };
    g_autoptr(GByteArray) b = craft(no_slash, G_N_ELEMENTS(no_slash), NULL);
    /* A name filling the whole field, without a terminating NUL. */
    g_autofree char *d98 = g_strnfill(98, 'd');
    g_autofree char *dir = g_strconcat(d98, "/", NULL);
    g_autofree char *file = g_strconcat(d98, "/z", NULL);
    const mspec longest[] = { { dir, '5', NULL }, { file, '0', "z" } };
    g_autoptr(GByteArray) c = craft(longest, G_N_ELEMENTS(longest), NULL);

    assert_valid(a);
    assert_valid(b);
    assert_int_equal(strlen(longest[1].name), 100);
    assert_valid(c);
}

static void
test_flipped_body(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(10);
    size_t off = member_off(a->data, 2);

    a->data[off + 512 + 1000] ^= 0x40;
    expect_bad_ba(a, "member " PERMALL " at offset");
    expect_bad_ba(a, "sha256 mismatch");
}

/* Any single changed bit in any header is caught. */
static void
test_flipped_header(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(11);

    for (guint m = 0; m < 3; m++) {
        size_t off = member_off(a->data, m);

        for (size_t i = 0; i < 512; i++) {
            g_autoptr(GByteArray) b = g_byte_array_new();

            g_byte_array_append(b, a->data, a->len);
            b->data[off + i] ^= 0x01;
            expect_bad_ba(b, "offset");
        }
    }
    a->data[member_off(a->data, 2) + 3] ^= 0x20;
    expect_bad_ba(a, "header checksum mismatch");
}

static void
test_truncated(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(12);
    g_autoptr(GRand) r = g_rand_new_with_seed(12);

    assert_valid(a);
    for (size_t n = 0; n < a->len; n += 512)
        expect_bad(a->data, n, "truncated");
    for (int i = 0; i < 300; i++) {
        size_t n = (size_t)g_rand_int_range(r, 0, (gint32)a->len);

        expect_bad(a->data, n, "truncated");
    }
    expect_bad(a->data, a->len - 1, "truncated");
    expect_bad(NULL, 0, "truncated");
    /* A body cut short of what its header announces. */
    expect_bad(a->data, member_off(a->data, 2) + 512 + 4096,
               "truncated: 6144 bytes of data announced");
}

static void
test_member_types(void **state)
{
    static const struct {
        char type;
        const char *what;
    } cases[] = {
        { '1', "hard link members are not allowed" },
        { '2', "symbolic link members are not allowed" },
        { '3', "character device members are not allowed" },
        { '4', "block device members are not allowed" },
        { '6', "FIFO members are not allowed" },
        { '7', "contiguous file members are not allowed" },
        { 'x', "pax extended header members are not allowed" },
        { 'g', "pax global header members are not allowed" },
        { 'L', "GNU long name members are not allowed" },
        { 'K', "GNU long link name members are not allowed" },
        { 'S', "member type 0x53 is not allowed" },
        { (char)0xff, "member type 0xff is not allowed" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const mspec ms[] = { { "tpm2/", '5', NULL }, { "tpm2/evil", cases[i].type, NULL } };
        g_autoptr(GByteArray) a = craft(ms, G_N_ELEMENTS(ms), NULL);

        /* Links get a target, as a real one would. */
        if (cases[i].type == '1' || cases[i].type == '2')
            set_field(a, 2, F_LINK, 100, "/etc/shadow", 11);
        expect_bad_ba(a, "member tpm2/evil at offset 1536: ");
        expect_bad_ba(a, cases[i].what);
    }
}

static void
test_names(void **state)
{
    static const struct {
        const char *name;
        const char *why;
    } cases[] = {
        { "/etc/passwd", "absolute name" },
        { "/", "absolute name" },
        { "../x", "'.' or '..' path component" },
        { "a/../../x", "'.' or '..' path component" },
        { "x/..", "'.' or '..' path component" },
        { "..", "'.' or '..' path component" },
        { "./x", "'.' or '..' path component" },
        { "a//b", "empty path component" },
        { "x/", "empty path component" },
        { "", "empty name" },
        { "a b", "characters outside" },
        { "tab\tx", "characters outside" },
        { "nl\nx", "characters outside" },
        { "caf\xc3\xa9", "characters outside" },
        { "back\\slash", "characters outside" },
        { "star*", "characters outside" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const mspec ms[] = { { cases[i].name, '0', "x" } };
        g_autoptr(GByteArray) a = craft(ms, 1, NULL);

        expect_bad_ba(a, cases[i].why);
    }
    {
        /* Directory names get the same treatment. */
        const mspec ms[] = { { "../d/", '5', NULL } };
        g_autoptr(GByteArray) a = craft(ms, 1, NULL);

        expect_bad_ba(a, "member ../d/ at offset 1024: '.' or '..' path component");
    }
    {
        const mspec ms[] = { { "d//", '5', NULL } };
        g_autoptr(GByteArray) a = craft(ms, 1, NULL);

        expect_bad_ba(a, "empty path component");
    }
    {
        /* Control characters are escaped in the message. */
        const mspec ms[] = { { "nl\nx", '0', "x" } };
        g_autoptr(GByteArray) a = craft(ms, 1, NULL);

        expect_bad_ba(a, "member nl\\nx at offset 1024");
    }
}

static void
test_header_fields(void **state)
{
    static const struct {
        size_t field, flen;
        const char *value;
        size_t vlen;
        const char *why;
    } cases[] = {
        { F_SIZE, 12, "77777777777", 11, "exceeds the limit" },
        { F_SIZE, 12, "777777777777", 12, "exceeds the limit" },
        { F_SIZE, 12, "00100000001", 11, "size 16777217 exceeds the limit" },
        { F_SIZE, 12, "0000000001x", 11, "malformed size field" },
        { F_SIZE, 12, "9", 1, "malformed size field" },
        { F_SIZE, 12, "-1", 2, "malformed size field" },
        { F_SIZE, 12, "", 0, "malformed size field" },
        { F_SIZE, 12, "\x80\0\0\0\0\0\0\0\0\0\0\x0f", 12, "malformed size field" },
        { F_SIZE, 12, "1 1", 3, "malformed size field" },
        { F_MODE, 8, "rwx", 3, "malformed mode" },
        { F_MTIME, 12, "\xff", 1, "malformed mtime" },
        { F_MAGIC, 6, "ustar ", 6, "not a POSIX ustar header" },
        { F_VERSION, 2, " \0", 2, "not a POSIX ustar header" },
        { F_PREFIX, 155, "tpm2", 4, "prefix field is in use" },
        { F_LINK, 100, "x", 1, "link name on a regular file" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);

        set_field(a, 2, cases[i].field, cases[i].flen, cases[i].value, cases[i].vlen);
        expect_bad_ba(a, "member " PERMALL " at offset 1536");
        expect_bad_ba(a, cases[i].why);
    }
    {
        /* Leading spaces and a space terminator are valid octal fields. */
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);

        set_field(a, 2, F_SIZE, 12, "        17 ", 11);
        assert_valid(a);
    }
    {
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);

        set_field(a, 1, F_SIZE, 12, "00000000001", 11);
        expect_bad_ba(a, "member tpm2/ at offset 1024: directory with a non-zero size");
    }
    {
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);

        set_field(a, 1, F_LINK, 100, "x", 1);
        expect_bad_ba(a, "link name on a directory");
    }
    {
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), NULL);

        set_field(a, 2, F_CHKSUM, 8, "0", 1);
        a->data[member_off(a->data, 2) + F_CHKSUM] = 'z';
        expect_bad_ba(a, "malformed header checksum field");
    }
}

static void
test_limits(void **state)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    g_autofree mspec *ms = g_new0(mspec, VTPM_ARCHIVE_MAX_ENTRIES);

    /* With the manifest: exactly the limit passes, one more fails. */
    for (int i = 0; i < VTPM_ARCHIVE_MAX_ENTRIES; i++) {
        g_ptr_array_add(names, g_strdup_printf("f%02d", i));
        ms[i] = (mspec){ names->pdata[i], '0', "x" };
    }
    {
        g_autoptr(GByteArray) a = craft(ms, VTPM_ARCHIVE_MAX_ENTRIES - 1, NULL);

        assert_valid(a);
    }
    {
        g_autoptr(GByteArray) a = craft(ms, VTPM_ARCHIVE_MAX_ENTRIES, NULL);

        expect_bad_ba(a, "more than 64 members");
    }
    g_ptr_array_unref(names);

    {
        /* An oversized member is refused from its header alone. */
        g_autoptr(GByteArray) a = g_byte_array_new();
        g_autofree char *mf = manifest_for(NULL, 0, NULL);
        guint8 h[512];

        tar_put(a, VTPM_ARCHIVE_MANIFEST, '0', mf, strlen(mf));
        tar_put(a, "big", '0', NULL, 0);
        memcpy(h, a->data + a->len - 512, 512);
        snprintf((char *)h + F_SIZE, 12, "%011o", VTPM_ARCHIVE_MAX_FILE + 1);
        fix_cksum(h);
        memcpy(a->data + a->len - 512, h, 512);
        tar_end(a);
        expect_bad_ba(a, "member big at offset");
        expect_bad_ba(a, "exceeds the limit of 16777216 bytes");
    }
    {
        /* Members each within the file limit, together over the total. */
        g_autoptr(GByteArray) a = g_byte_array_new();
        g_autofree char *mf = manifest_for(NULL, 0, NULL);
        g_autofree guint8 *zeros = g_malloc0(VTPM_ARCHIVE_MAX_FILE);

        tar_put(a, VTPM_ARCHIVE_MANIFEST, '0', mf, strlen(mf));
        for (int i = 0; i < 4; i++) {
            g_autofree char *name = g_strdup_printf("z%d", i);

            tar_put(a, name, '0', zeros, VTPM_ARCHIVE_MAX_FILE);
        }
        tar_end(a);
        expect_bad_ba(a, "member z3 at offset");
        expect_bad_ba(a, "contents exceed the limit of 67108864 bytes");
    }
    {
        /* A manifest over 1 MiB. */
        g_autofree char *mf = g_malloc(1024 * 1024 + 2);

        memset(mf, ' ', 1024 * 1024 + 1);
        mf[0] = '{';
        mf[1024 * 1024] = '}';
        mf[1024 * 1024 + 1] = '\0';
        {
            g_autoptr(GByteArray) a = craft(NULL, 0, mf);

            expect_bad_ba(a, "manifest larger than 1048576 bytes");
        }
    }
}

static void
test_manifest_placement(void **state)
{
    g_autofree char *mf = manifest_for(std_ms, G_N_ELEMENTS(std_ms), NULL);
    const mspec later[] = { std_ms[0], std_ms[1], { VTPM_ARCHIVE_MANIFEST, '0', mf } };
    const mspec as_dir[] = { { VTPM_ARCHIVE_MANIFEST "/", '5', NULL } };
    g_autoptr(GByteArray) none = craft(std_ms, G_N_ELEMENTS(std_ms), "");
    g_autoptr(GByteArray) not_first = craft(later, G_N_ELEMENTS(later), "");
    g_autoptr(GByteArray) dir = craft(as_dir, 1, "");
    g_autoptr(GByteArray) empty = g_byte_array_new();
    g_autoptr(GByteArray) twice = NULL;

    expect_bad_ba(none, "missing manifest");
    expect_bad_ba(not_first, "member " VTPM_ARCHIVE_MANIFEST
                             " at offset 1536: the manifest must be the first member");
    expect_bad_ba(dir, "missing manifest");
    tar_end(empty);
    expect_bad_ba(empty, "missing manifest");
    {
        const mspec again[] = { std_ms[0], { VTPM_ARCHIVE_MANIFEST, '0', mf } };

        twice = craft(again, G_N_ELEMENTS(again), mf);
        expect_bad_ba(twice, "duplicate member");
    }
}

static void
test_manifest_vs_members(void **state)
{
    const mspec three[] = { std_ms[0], std_ms[1], { "tpm2/extra", '0', "more" } };
    const mspec two_dirs[] = { std_ms[0], std_ms[1], { "other/", '5', NULL } };
    g_autofree char *mf2 = manifest_for(std_ms, 2, NULL);
    g_autofree char *mf3 = manifest_for(three, 3, NULL);
    g_autofree char *mfd = manifest_for(two_dirs, 3, NULL);

    {
        g_autoptr(GByteArray) a = craft(three, 3, mf2);

        expect_bad_ba(a, "member tpm2/extra at offset 2560: file not listed in the manifest");
    }
    {
        g_autoptr(GByteArray) a = craft(std_ms, 2, mf3);

        expect_bad_ba(a, "manifest lists tpm2/extra, which the archive lacks");
    }
    {
        g_autoptr(GByteArray) a = craft(two_dirs, 3, mf2);

        expect_bad_ba(a, "member other at offset 2560: directory not listed in the manifest");
    }
    {
        g_autoptr(GByteArray) a = craft(std_ms, 2, mfd);

        expect_bad_ba(a, "manifest lists other, which the archive lacks");
    }
    {
        /* Listed as a file, present as a directory. */
        const mspec swapped[] = { std_ms[0], { "tpm2/tpm2-00.permall/", '5', NULL } };
        g_autoptr(GByteArray) a = craft(swapped, 2, mf2);

        expect_bad_ba(a, "directory not listed in the manifest");
    }
}

static void
test_duplicates_and_parents(void **state)
{
    static const struct {
        mspec ms[3];
        size_t n;
        const char *why;
    } cases[] = {
        { { { "tpm2/", '5', NULL }, { PERMALL, '0', "a" }, { PERMALL, '0', "a" } }, 3,
          "member " PERMALL " at offset 2560: duplicate member" },
        { { { "tpm2/", '5', NULL }, { "tpm2", '0', "a" } }, 2, "duplicate member" },
        { { { "tpm2/", '5', NULL }, { "tpm2", '5', NULL } }, 2, "duplicate member" },
        { { { PERMALL, '0', "a" } }, 1, "its directory tpm2 is not an earlier directory member" },
        { { { "tpm2", '0', "a" }, { PERMALL, '0', "a" } }, 2,
          "its directory tpm2 is not an earlier directory member" },
        { { { PERMALL, '0', "a" }, { "tpm2/", '5', NULL } }, 2, "not an earlier directory member" },
        { { { "a/", '5', NULL }, { "a/b/c", '0', "x" } }, 2,
          "its directory a/b is not an earlier directory member" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GByteArray) a = craft(cases[i].ms, cases[i].n, NULL);

        expect_bad_ba(a, cases[i].why);
    }
}

static void
test_manifest_content(void **state)
{
    static const struct {
        const char *patch;
        const char *why;
    } cases[] = {
        { "{\"format\":2}", "manifest: unsupported archive format 2" },
        { "{\"format\":0}", "unsupported archive format 0" },
        { "{\"format\":\"1\"}", "manifest: \"format\" is not an integer" },
        { "{\"format\":1.0}", "\"format\" is not an integer" },
        { "{\"format\":\"<delete>\"}", "manifest: missing \"format\"" },
        { "{\"uuid\":\"nope\"}", "\"uuid\" is not a canonical UUID" },
        { "{\"uuid\":\"00000000-0000-0000-0000-000000000000\"}", "not a canonical UUID" },
        { "{\"uuid\":\"6f1c2d3e4b5a4c7d8e9f0a1b2c3d4e5f\"}", "not a canonical UUID" },
        { "{\"uuid\":\"{6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f}\"}", "not a canonical UUID" },
        { "{\"uuid\":7}", "\"uuid\" is not a string" },
        { "{\"uuid\":\"<delete>\"}", "missing \"uuid\"" },
        { "{\"bogus\":1}", "manifest: unknown key \"bogus\"" },
        { "{\"generation\":-1}", "\"generation\" -1 is out of range" },
        { "{\"generation\":1.5}", "\"generation\" is not an integer" },
        { "{\"generation\":\"<delete>\"}", "missing \"generation\"" },
        { "{\"created_ms\":null}", "\"created_ms\" is not an integer" },
        { "{\"reason\":[]}", "\"reason\" is not a string or null" },
        { "{\"domain_xml\":5}", "\"domain_xml\" is not a string or null" },
        { "{\"domain_xml\":\"<delete>\"}", "missing \"domain_xml\"" },
        { "{\"tpm\":[]}", "\"tpm\" is not an object" },
        { "{\"tpm\":{\"version\":\"2.0\"}}", "manifest.tpm: missing \"model\"" },
        { "{\"tpm\":{\"version\":null,\"model\":null,\"secret_security\":null}}",
          "manifest.tpm: \"version\" is not a string" },
        { "{\"tpm\":{\"version\":\"2.0\",\"model\":null,\"secret_security\":null,\"x\":1}}",
          "manifest.tpm: unknown key \"x\"" },
        { "{\"extra\":{\"a\":1}}", "manifest.extra: \"a\" is not a string" },
        { "{\"extra\":null}", "\"extra\" is not an object" },
        { "{\"files\":[]}", "\"files\" is not an object" },
        { "{\"files\":{\"" PERMALL "\":1}}", "manifest.files[\"" PERMALL "\"]: not an object" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":15}}}", "missing \"sha256\"" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":15,\"sha256\":\"ABC\"}}}",
          "\"sha256\" is not 64 lower-case hex digits" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":15,\"sha256\":"
          "\"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"}}}",
          "not 64 lower-case hex digits" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":-1,\"sha256\":"
          "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}}}",
          "\"size\" -1 is out of range" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":15,\"sha256\":"
          "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"mode\":1}}}",
          "unknown key \"mode\"" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":15,\"sha256\":"
          "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}}}",
          "member " PERMALL " at offset 1536: sha256 mismatch (manifest e3b0c442" },
        { "{\"files\":{\"" PERMALL "\":{\"size\":14,\"sha256\":"
          "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}}}",
          "size 15, the manifest says 14" },
        { "{\"dirs\":\"tpm2\"}", "\"dirs\" is not an array" },
        { "{\"dirs\":[\"tpm2\",\"tpm2\"]}", "manifest.dirs[1]: listed twice" },
        { "{\"dirs\":[1]}", "manifest.dirs[0]: not a string" },
        { "{\"dirs\":[]}", "member tpm2 at offset 1024: directory not listed in the manifest" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *mf = manifest_for(std_ms, G_N_ELEMENTS(std_ms), cases[i].patch);
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), mf);

        expect_bad_ba(a, cases[i].why);
    }
    {
        /* Accepted variants: no vTPM, upper-case UUID (normalised). */
        g_autofree char *mf = manifest_for(std_ms, G_N_ELEMENTS(std_ms),
                                           "{\"tpm\":null,\"reason\":null,"
                                           "\"uuid\":\"6F1C2D3E-4B5A-4C7D-8E9F-0A1B2C3D4E5F\"}");
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), mf);
        g_auto(vtpm_archive_meta) m = { 0 };
        vtpm_error err = { 0 };

        if (vtpm_archive_verify(a->data, a->len, &m, &err) != 0)
            fail_msg("%s", err.message);
        assert_string_equal(m.uuid, UUID);
        assert_null(m.tpm_version);
        assert_null(m.reason);
    }
}

static void
test_manifest_syntax(void **state)
{
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        { "not json", "manifest: " },
        { "{", "manifest: " },
        { "[1]", "manifest: not a JSON object" },
        { "\"x\"", "manifest: not a JSON object" },
        { "  ", "manifest: " },
        { "{\"a\":[[[[[[[[[[]]]]]]]]]]}", "manifest: nested deeper than 8 levels" },
        { "// c\n{}", "manifest: not plain JSON at byte 0" },
        { "{'format':1}", "manifest: not plain JSON at byte 1" },
        { "{\"format\":1}\xff", "manifest: not valid UTF-8" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GByteArray) a = craft(std_ms, G_N_ELEMENTS(std_ms), cases[i].text);

        expect_bad_ba(a, cases[i].why);
    }
    {
        /* A NUL byte would end the JSON text early for a C-string reader. */
        g_autofree char *mf = manifest_for(std_ms, G_N_ELEMENTS(std_ms), NULL);
        g_autofree char *withnul = g_strdup_printf("%s \"junk\"", mf);
        g_autoptr(GByteArray) a = g_byte_array_new();

        withnul[strlen(mf)] = '\0';
        tar_put(a, VTPM_ARCHIVE_MANIFEST, '0', withnul, strlen(mf) + 8);
        for (size_t i = 0; i < G_N_ELEMENTS(std_ms); i++)
            tar_put(a, std_ms[i].name, std_ms[i].type, std_ms[i].data,
                    std_ms[i].data ? strlen(std_ms[i].data) : 0);
        tar_end(a);
        expect_bad_ba(a, "manifest: not valid UTF-8");
    }
}

static void
test_end_of_archive(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(13);
    g_autoptr(GByteArray) b = NULL;
    static const guint8 zeros[10240];

    b = g_byte_array_new();
    g_byte_array_append(b, a->data, a->len);
    g_byte_array_append(b, (const guint8 *)"garbage", 7);
    expect_bad_ba(b, "trailing data at offset");

    /* Zero padding to a tar record is not garbage. */
    g_byte_array_set_size(b, a->len);
    g_byte_array_append(b, zeros, sizeof(zeros));
    assert_valid(b);
    b->data[b->len - 1] = 1;
    expect_bad_ba(b, "trailing data at offset");

    /* A lone zero block, then a member. */
    g_byte_array_set_size(b, 0);
    g_byte_array_append(b, a->data, a->len - 1024);
    g_byte_array_append(b, zeros, 512);
    g_byte_array_append(b, a->data + member_off(a->data, 2), 512);
    g_byte_array_append(b, zeros, 1024);
    expect_bad_ba(b, "lone zero block");

    expect_bad(a->data, a->len - 512, "incomplete end-of-archive marker");
    expect_bad(a->data, a->len - 1024, "no end-of-archive marker");
}

/* Arbitrary input: always a clean StateIntegrity, never a crash. */
static void
test_random_bytes(void **state)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(0x5eed);

    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)g_rand_int_range(r, 0, 4 * 1024);
        g_autofree guint8 *d = g_malloc(MAX(n, 1));

        for (size_t j = 0; j < n; j++)
            d[j] = (guint8)g_rand_int_range(r, 0, 256);
        /* Half of them start with a plausible header. */
        if (i % 2 && n >= 512) {
            memcpy(d, VTPM_ARCHIVE_MANIFEST, sizeof(VTPM_ARCHIVE_MANIFEST));
            memcpy(d + F_MAGIC, "ustar\0" "00", 8);
            if (i % 4 == 1)
                fix_cksum(d);
        }
        {
            vtpm_error err = { 0 };
            int rc = vtpm_archive_verify(d, n, NULL, &err);

            if (rc != -(int)INTEGRITY || err.code != INTEGRITY)
                fail_msg("iteration %d: rc %d %s", i, rc, err.message);
        }
    }
}

/* Small mutations of a good archive, checksums sometimes repaired so
 * that they reach past the header check: never a crash, and whatever
 * passes is still consistent. */
static void
test_mutations(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(14);
    g_autoptr(GRand) r = g_rand_new_with_seed(0xbad);
    size_t heads[3];

    for (guint m = 0; m < 3; m++)
        heads[m] = member_off(a->data, m);
    for (int i = 0; i < 2000; i++) {
        g_autoptr(GByteArray) b = g_byte_array_new();
        g_auto(vtpm_archive_meta) meta = { 0 };
        vtpm_error err = { 0 };
        int flips = g_rand_int_range(r, 1, 5), rc;

        g_byte_array_append(b, a->data, a->len);
        for (int f = 0; f < flips; f++) {
            /* Mostly in headers, where the parsing is. */
            size_t h = heads[g_rand_int_range(r, 0, 3)];
            size_t pos = g_rand_boolean(r) ? h + (size_t)g_rand_int_range(r, 0, 512)
                                           : (size_t)g_rand_int_range(r, 0, (gint32)b->len);

            b->data[pos] = (guint8)g_rand_int_range(r, 0, 256);
        }
        if (g_rand_boolean(r)) {
            for (guint m = 0; m < 3; m++)
                fix_cksum(b->data + heads[m]);
        }
        rc = vtpm_archive_verify(b->data, b->len, &meta, &err);
        /* The manifest has no digest of its own (the caller checks the
         * archive's), so a changed but well-formed one may pass. */
        if (rc == 0)
            assert_int_equal(strlen(meta.uuid), 36);
        else if (rc != -(int)INTEGRITY || err.code != INTEGRITY)
            fail_msg("iteration %d: rc %d %s", i, rc, err.message);
    }
}

/* ---- extract ------------------------------------------------------------------------------ */

static void
expect_extract_fault(GByteArray *a, const char *dest, vtpm_fault code, const char *needle)
{
    g_auto(vtpm_archive_meta) m = { 0 };
    vtpm_error err = { 0 };
    int rc;

    sentinel_meta(&m);
    rc = vtpm_archive_extract(a->data, a->len, dest, -1, -1, &m, &err);
    if (rc != -(int)code || err.code != code || !strstr(err.message, needle))
        fail_msg("expected %s with '%s', got %d %s: %s", vtpm_fault_name(code), needle, rc,
                 vtpm_fault_name(err.code), err.message);
    assert_sentinel(&m);
}

static void
test_extract_refusals(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(20);
    g_autofree char *dest = tmp_dir();
    g_autofree char *missing = g_build_filename(dest, "missing", NULL);
    g_autofree char *link = NULL;
    g_autofree char *empty = tmp_dir();

    put_file(dest, "keep", "k", 1);
    expect_extract_fault(a, dest, INTERNAL, "is not empty");
    assert_int_equal(count_entries_in(dest, "."), 1);
    assert_true(exists(dest, "keep"));

    expect_extract_fault(a, missing, INTERNAL, "extract: opening");
    put_file(dest, "file", "f", 1);
    g_free(missing);
    missing = g_build_filename(dest, "file", NULL);
    expect_extract_fault(a, missing, INTERNAL, "extract: opening");

    link = g_build_filename(dest, "link", NULL);
    assert_int_equal(symlink(empty, link), 0);
    expect_extract_fault(a, link, INTERNAL, "symlink");
    assert_int_equal(count_entries_in(empty, "."), 0);

    /* A damaged archive writes nothing at all. */
    a->data[member_off(a->data, 2) + 512 + 7] ^= 1;
    expect_extract_fault(a, empty, INTEGRITY, "sha256 mismatch");
    assert_int_equal(count_entries_in(empty, "."), 0);
    a->data[member_off(a->data, 2) + 512 + 7] ^= 1;
    g_byte_array_set_size(a, a->len - 512);
    expect_extract_fault(a, empty, INTEGRITY, "truncated");
    assert_int_equal(count_entries_in(empty, "."), 0);
    rm_rf(dest);
    rm_rf(empty);
}

/* A write failing half-way (file size limit) leaves dest empty again. */
static void
test_extract_rollback(void **state)
{
    g_autofree char *big = g_malloc(64 * 1024 + 1);
    mspec ms[] = {
        { "tpm2/", '5', NULL },
        { "tpm2/a", '0', "small" },
        { "tpm2/sub/", '5', NULL },
        { "tpm2/sub/b", '0', NULL },
    };
    g_autoptr(GByteArray) a = NULL;
    g_autofree char *dest = tmp_dir();
    struct rlimit old, lim;
    void (*oldsig)(int);
    vtpm_error err = { 0 };
    int rc;

    memset(big, 'b', 64 * 1024);
    big[64 * 1024] = '\0';
    ms[3].data = big;
    a = craft(ms, G_N_ELEMENTS(ms), NULL);
    assert_valid(a);

    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    oldsig = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    rc = vtpm_archive_extract(a->data, a->len, dest, -1, -1, NULL, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);

    assert_int_equal(rc, -(int)INTERNAL);
    assert_non_null(strstr(err.message, "writing tpm2/sub/b"));
    assert_int_equal(count_entries_in(dest, "."), 0);

    /* And the same archive extracts once the limit is gone. */
    extract_raw(a->data, a->len, dest, -1, -1, NULL);
    {
        g_autoptr(GBytes) b = slurp(dest, "tpm2/sub/b");

        assert_int_equal(g_bytes_get_size(b), 64 * 1024);
    }
    rm_rf(dest);
}

static void
test_extract_owner(void **state)
{
    struct passwd *pw = getpwnam("tss");
    g_autoptr(GByteArray) a = packed_copy(21);
    g_autofree char *dest = NULL;
    g_autofree char *d = NULL;
    g_autofree char *f = NULL;
    struct stat st;

    if (!pw || geteuid() != 0)
        skip();
    dest = tmp_dir();
    extract_raw(a->data, a->len, dest, (int)pw->pw_uid, (int)pw->pw_gid, NULL);
    d = g_build_filename(dest, "tpm2", NULL);
    f = g_build_filename(dest, PERMALL, NULL);
    assert_int_equal(lstat(d, &st), 0);
    assert_int_equal(st.st_uid, pw->pw_uid);
    assert_int_equal(st.st_gid, pw->pw_gid);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(lstat(f, &st), 0);
    assert_int_equal(st.st_uid, pw->pw_uid);
    assert_int_equal(st.st_gid, pw->pw_gid);
    assert_int_equal(st.st_mode & 07777, 0600);
    /* dest itself is the caller's. */
    assert_int_equal(lstat(dest, &st), 0);
    assert_int_equal(st.st_uid, geteuid());
    rm_rf(dest);
}

/* Modes come out exact whatever the umask. */
static void
test_extract_umask(void **state)
{
    g_autoptr(GByteArray) a = packed_copy(22);
    g_autofree char *dest = tmp_dir();
    mode_t old = umask(0277);

    extract_raw(a->data, a->len, dest, -1, -1, NULL);
    umask(old);
    assert_int_equal(mode_of(dest, "tpm2"), S_IFDIR | 0700);
    assert_int_equal(mode_of(dest, PERMALL), S_IFREG | 0600);
    rm_rf(dest);
}

static void
test_extract_manifest_only(void **state)
{
    g_autofree char *src = tmp_dir();
    g_autofree char *dest = tmp_dir();
    g_auto(vtpm_archive_meta) m = { 0 };
    g_auto(vtpm_archive_meta) x = { 0 };
    g_autoptr(GBytes) a = NULL;

    vtpm_archive_meta_init(&m);
    memcpy(m.uuid, UUID, sizeof(m.uuid));
    m.reason = g_strdup("shelve");
    a = pack_ok(src, &m);
    extract_ok(a, dest, -1, -1, &x);
    assert_int_equal(count_entries_in(dest, "."), 0);
    assert_string_equal(x.reason, "shelve");
    assert_null(x.tpm_version);
    rm_rf(src);
    rm_rf(dest);
}

/* Archives written when format 1 was made: still read the same way.
 * Repacking pins the writer too; should it change on purpose, the
 * fixtures stay as they are and only that half of the test changes. */
static void
test_golden(void **state)
{
    static const struct {
        const char *file, *sub, *state, *version, *model;
    } cases[] = {
        { "tpm2-format1.tar", "tpm2", "tpm2/tpm2-00.permall", "2.0", "tpm-crb" },
        { "tpm12-format1.tar", "tpm1.2", "tpm1.2/tpm-00.permall", "1.2", "tpm-tis" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = g_build_filename(VTPM_FIXTURES, "archive", cases[i].file, NULL);
        g_autofree char *dest = tmp_dir();
        g_autofree char *sub = g_build_filename(dest, cases[i].sub, NULL);
        g_autofree char *data = NULL;
        g_auto(vtpm_archive_meta) m = { 0 };
        g_autoptr(GBytes) got = NULL, again = NULL;
        const guint8 *p;
        gsize n = 0, size = 0;

        assert_true(g_file_get_contents(path, &data, &n, NULL));
        extract_raw(data, n, dest, -1, -1, &m);
        assert_int_equal(m.format, 1);
        assert_string_equal(m.uuid, UUID);
        assert_string_equal(m.tpm_version, cases[i].version);
        assert_string_equal(m.tpm_model, cases[i].model);
        assert_string_equal(m.secret_security, "host");
        assert_true(m.generation == 3);
        assert_true(m.created_ms == 1700000000123);
        assert_string_equal(m.reason, "shelve");
        assert_non_null(strstr(m.domain_xml, "<name>instance-" UUID "</name>\n"));
        assert_string_equal(g_hash_table_lookup(m.extra, "note"), "golden \"format 1\" archive");
        assert_int_equal(g_hash_table_size(m.extra), 1);
        /* An archive from before the variable store: one file, read as ever. */
        assert_int_equal(m.files->len, 1);
        assert_string_equal(m.files->pdata[0], cases[i].state);
        assert_false(vtpm_archive_holds(&m, "nvram.fd"));
        got = slurp(dest, cases[i].state);
        p = g_bytes_get_data(got, &size);
        assert_int_equal(size, 1024);
        for (size_t j = 0; j < size; j++)
            assert_int_equal(p[j], (j * 7 + 3) & 0xff);

        again = pack_ok(dest, &m);
        assert_int_equal(g_bytes_get_size(again), n);
        assert_memory_equal(g_bytes_get_data(again, NULL), data, n);
        rm_rf(dest);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_meta_init_clear),
        cmocka_unit_test(test_round_trip_tpm2),
        cmocka_unit_test(test_round_trip_two_files),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_round_trip_tpm12),
        cmocka_unit_test(test_meta_round_trip),
        cmocka_unit_test(test_manifest_layout),
        cmocka_unit_test(test_tar_compat),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_pack_refusals),
        cmocka_unit_test(test_pack_entry_limit),
        cmocka_unit_test(test_pack_skips_sockets_and_locks),
        cmocka_unit_test(test_pack_skips_swtpm_temp_files),
        cmocka_unit_test(test_crafted_ok),
        cmocka_unit_test(test_flipped_body),
        cmocka_unit_test(test_flipped_header),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_member_types),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_manifest_placement),
        cmocka_unit_test(test_manifest_vs_members),
        cmocka_unit_test(test_duplicates_and_parents),
        cmocka_unit_test(test_manifest_content),
        cmocka_unit_test(test_manifest_syntax),
        cmocka_unit_test(test_end_of_archive),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_extract_refusals),
        cmocka_unit_test(test_extract_rollback),
        cmocka_unit_test(test_extract_owner),
        cmocka_unit_test(test_extract_umask),
        cmocka_unit_test(test_extract_manifest_only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
