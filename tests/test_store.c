/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm_store against two real libvirtds (tests/integration.sh --net
 * --hosts 2): host a through its unix socket, host b over TCP at its own
 * address ($VT_HOST_B_ADDR) as a source host's vtpmd reaches a migration
 * destination, and through b's socket as a second, independent client.
 * What libvirt wrote is checked in the hosts' trees ($VT_HOST_<H>_ROOT +
 * the pool's directory).  Every test uses pools of its own, so a failure
 * cannot leak into the next one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "store.h"

/* Pools live below a bind-mounted path, so they land in the host's tree. */
#define POOL_BASE "/var/lib/vtpmd/pools"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virStoragePool, virStoragePoolFree)

typedef struct {
    const char *root;     /* the host's tree */
    virConnectPtr conn;   /* the connection the test drives */
} host;

static host host_a, host_b;
static virConnectPtr b_unix; /* a second client of b (its unix socket) */

#define assert_fault(rc, err, want)                                                  \
    do {                                                                             \
        int rc_ = (rc);                                                              \
        if (rc_ != -(int)(want) || (err).code != (want))                             \
            fail_msg("rc %d, fault %d (%s), want %d: %s", rc_, (int)(err).code,      \
                     vtpm_fault_name((err).code), (int)(want), (err).message);       \
    } while (0)

#define assert_ok(rc, err)                                                           \
    do {                                                                             \
        int rc_ = (rc);                                                              \
        if (rc_ != 0)                                                                \
            fail_msg("rc %d (%s): %s", rc_, vtpm_fault_name((err).code),             \
                     (err).message);                                                 \
    } while (0)

static void
silent_error(void *data, virErrorPtr e)
{
    /* The code under test reads errors with virGetLastError; libvirt's
     * default handler would print every expected failure. */
}

static GBytes *
random_bytes(size_t n)
{
    guint8 *p = g_malloc(n ? n : 1);

    for (size_t i = 0; i < n; i++)
        p[i] = (guint8)g_random_int_range(0, 256);
    return g_bytes_new_take(p, n);
}

static char *
pool_dir(const char *pool)
{
    return g_build_filename(POOL_BASE, pool, NULL);
}

/* Where host @h keeps volume @vol of @pool, seen from here. */
static char *
tree_path(const host *h, const char *pool, const char *vol)
{
    return g_build_filename(h->root, POOL_BASE, pool, vol, NULL);
}

static void
assert_bytes_equal(GBytes *got, GBytes *want)
{
    assert_non_null(got);
    assert_int_equal(g_bytes_get_size(got), g_bytes_get_size(want));
    assert_true(g_bytes_equal(got, want));
}

static void
assert_file_equal(const char *path, GBytes *want)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    g_autoptr(GError) gerr = NULL;

    if (!g_file_get_contents(path, &text, &len, &gerr))
        fail_msg("%s: %s", path, gerr->message);
    assert_int_equal(len, g_bytes_get_size(want));
    assert_memory_equal(text, g_bytes_get_data(want, NULL), len);
}

static int
file_mode(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        fail_msg("%s: %s", path, g_strerror(errno));
    return (int)(st.st_mode & 07777);
}

/* A pool of this test's own on @h, created through the store. */
static void
make_pool(const host *h, const char *pool)
{
    g_autofree char *dir = pool_dir(pool);
    vtpm_error err = { 0 };

    assert_ok(vtpm_store_ensure_pool(h->conn, pool, dir, &err), err);
}

/* Remove the pool definition (the directory stays: no test needs it gone). */
static void
drop_pool(virConnectPtr conn, const char *pool)
{
    g_autoptr(virStoragePool) p = virStoragePoolLookupByName(conn, pool);

    if (!p)
        return;
    if (virStoragePoolIsActive(p) == 1)
        virStoragePoolDestroy(p);
    virStoragePoolUndefine(p);
}

static void
put_get_roundtrip(const host *h, const char *pool, size_t size)
{
    g_autofree char *vol = g_strdup_printf("rt-%zu.tar", size);
    g_autofree char *path = tree_path(h, pool, vol);
    g_autoptr(GBytes) data = random_bytes(size);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };
    bool there = false;

    assert_ok(vtpm_store_put(h->conn, pool, vol, data, &err), err);
    assert_ok(vtpm_store_exists(h->conn, pool, vol, &there, &err), err);
    assert_true(there);
    assert_ok(vtpm_store_get(h->conn, pool, vol, &back, &err), err);
    assert_bytes_equal(back, data);
    /* It is a plain file of exactly that content, for the owner only. */
    assert_file_equal(path, data);
    assert_int_equal(file_mode(path), 0600);
}

/* ---- tests ------------------------------------------------------------------------ */

static void
test_ensure_pool_creates(void **state)
{
    const char *pool = "st-create";
    g_autofree char *dir = pool_dir(pool);
    g_autofree char *tree = g_build_filename(host_a.root, dir, NULL);
    g_autoptr(virStoragePool) p = NULL;
    g_autoptr(virStoragePool) again = NULL;
    char uuid1[VIR_UUID_STRING_BUFLEN], uuid2[VIR_UUID_STRING_BUFLEN];
    g_autofree char *xml = NULL;
    vtpm_error err = { 0 };
    int autostart = 0;

    drop_pool(host_a.conn, pool);
    assert_ok(vtpm_store_ensure_pool(host_a.conn, pool, dir, &err), err);
    assert_true(g_file_test(tree, G_FILE_TEST_IS_DIR));
    assert_int_equal(file_mode(tree), 0700);

    p = virStoragePoolLookupByName(host_a.conn, pool);
    assert_non_null(p);
    assert_int_equal(virStoragePoolIsActive(p), 1);
    assert_int_equal(virStoragePoolIsPersistent(p), 1);
    assert_int_equal(virStoragePoolGetAutostart(p, &autostart), 0);
    assert_int_equal(autostart, 1);
    xml = virStoragePoolGetXMLDesc(p, 0);
    assert_non_null(xml);
    assert_non_null(strstr(xml, "type='dir'"));
    assert_non_null(strstr(xml, dir));
    assert_int_equal(virStoragePoolGetUUIDString(p, uuid1), 0);

    /* Idempotent: the same pool, still active. */
    assert_ok(vtpm_store_ensure_pool(host_a.conn, pool, dir, &err), err);
    again = virStoragePoolLookupByName(host_a.conn, pool);
    assert_non_null(again);
    assert_int_equal(virStoragePoolGetUUIDString(again, uuid2), 0);
    assert_string_equal(uuid1, uuid2);
    assert_int_equal(virStoragePoolIsActive(again), 1);
    drop_pool(host_a.conn, pool);
}

/* A directory that is already there (with looser permissions) is taken
 * over and tightened; what it holds stays. */
static void
test_ensure_pool_existing_dir(void **state)
{
    const char *pool = "st-existing-dir";
    g_autofree char *dir = pool_dir(pool);
    g_autofree char *tree = g_build_filename(host_a.root, dir, NULL);
    g_autofree char *old = g_build_filename(tree, "old.tar", NULL);
    g_autoptr(GBytes) data = random_bytes(1000);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };

    drop_pool(host_a.conn, pool);
    assert_int_equal(g_mkdir_with_parents(tree, 0755), 0);
    assert_int_equal(chmod(tree, 0755), 0);
    assert_true(g_file_set_contents(old, g_bytes_get_data(data, NULL),
                                    (gssize)g_bytes_get_size(data), NULL));
    assert_ok(vtpm_store_ensure_pool(host_a.conn, pool, dir, &err), err);
    assert_int_equal(file_mode(tree), 0700);
    assert_ok(vtpm_store_get(host_a.conn, pool, "old.tar", &back, &err), err);
    assert_bytes_equal(back, data);
    drop_pool(host_a.conn, pool);
}

/* A defined but stopped pool is started, not redefined. */
static void
test_ensure_pool_inactive(void **state)
{
    const char *pool = "st-inactive";
    g_autofree char *dir = pool_dir(pool);
    g_autoptr(virStoragePool) p = NULL;
    g_autoptr(GBytes) data = random_bytes(512);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };
    bool there = true;
    int rc;

    drop_pool(host_b.conn, pool);
    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "v", data, &err), err);
    p = virStoragePoolLookupByName(host_b.conn, pool);
    assert_non_null(p);
    assert_int_equal(virStoragePoolDestroy(p), 0);

    /* While stopped, the volume is neither found nor reported missing:
     * "not found" would tell a caller the state is gone. */
    rc = vtpm_store_get(host_b.conn, pool, "v", &back, &err);
    assert_fault(rc, err, VTPM_FAULT_HYPERVISOR_ERROR);
    assert_null(back);
    rc = vtpm_store_exists(host_b.conn, pool, "v", &there, &err);
    assert_fault(rc, err, VTPM_FAULT_HYPERVISOR_ERROR);
    assert_true(there); /* untouched on failure */
    rc = vtpm_store_put(host_b.conn, pool, "v", data, &err);
    assert_fault(rc, err, VTPM_FAULT_STATE_TRANSFER_FAILED);

    assert_ok(vtpm_store_ensure_pool(host_b.conn, pool, dir, &err), err);
    assert_int_equal(virStoragePoolIsActive(p), 1);
    assert_ok(vtpm_store_get(host_b.conn, pool, "v", &back, &err), err);
    assert_bytes_equal(back, data);
    drop_pool(host_b.conn, pool);
}

static void
test_roundtrip_unix(void **state)
{
    const char *pool = "st-rt-a";

    make_pool(&host_a, pool);
    put_get_roundtrip(&host_a, pool, 6 * 1024);
    put_get_roundtrip(&host_a, pool, 100 * 1024);
    drop_pool(host_a.conn, pool);
}

static void
test_roundtrip_tcp(void **state)
{
    const char *pool = "st-rt-b";
    g_autoptr(GBytes) data = random_bytes(100 * 1024);
    g_autoptr(GBytes) back = NULL;
    g_autofree char *on_a = tree_path(&host_a, pool, "from-a.tar");
    g_autofree char *on_b = tree_path(&host_b, pool, "from-a.tar");
    vtpm_error err = { 0 };

    /* The pool is made over TCP too: as a source host prepares the
     * destination's incoming pool. */
    drop_pool(host_b.conn, pool);
    make_pool(&host_b, pool);
    put_get_roundtrip(&host_b, pool, 6 * 1024);
    put_get_roundtrip(&host_b, pool, 100 * 1024);

    /* The bytes are on b, not on the machine that sent them. */
    assert_ok(vtpm_store_put(host_b.conn, pool, "from-a.tar", data, &err), err);
    assert_file_equal(on_b, data);
    assert_false(g_file_test(on_a, G_FILE_TEST_EXISTS));
    /* And b's own clients see them. */
    assert_ok(vtpm_store_get(b_unix, pool, "from-a.tar", &back, &err), err);
    assert_bytes_equal(back, data);
    drop_pool(host_b.conn, pool);
}

static void
test_put_replaces(void **state)
{
    const char *pool = "st-replace";
    g_autofree char *path = tree_path(&host_b, pool, "r.tar");
    g_autoptr(GBytes) big = random_bytes(100 * 1024);
    g_autoptr(GBytes) small = random_bytes(6 * 1024);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };

    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "r.tar", big, &err), err);
    /* A retried upload of the same bytes converges... */
    assert_ok(vtpm_store_put(host_b.conn, pool, "r.tar", big, &err), err);
    assert_file_equal(path, big);
    /* ...and different (shorter) bytes leave nothing of the old. */
    assert_ok(vtpm_store_put(host_b.conn, pool, "r.tar", small, &err), err);
    assert_ok(vtpm_store_get(host_b.conn, pool, "r.tar", &back, &err), err);
    assert_bytes_equal(back, small);
    assert_file_equal(path, small);
    g_clear_pointer(&back, g_bytes_unref);
    /* The replacing client need not be the one that wrote first. */
    assert_ok(vtpm_store_put(b_unix, pool, "r.tar", big, &err), err);
    assert_ok(vtpm_store_get(host_b.conn, pool, "r.tar", &back, &err), err);
    assert_bytes_equal(back, big);
    drop_pool(host_b.conn, pool);
}

static void
test_get_missing(void **state)
{
    const char *pool = "st-missing";
    g_autoptr(GBytes) data = random_bytes(16);
    GBytes *back = NULL;
    vtpm_error err = { 0 };
    bool there = true;
    int rc;

    make_pool(&host_a, pool);
    rc = vtpm_store_get(host_a.conn, pool, "nothing.tar", &back, &err);
    assert_fault(rc, err, VTPM_FAULT_STATE_NOT_FOUND);
    assert_null(back);
    assert_ok(vtpm_store_exists(host_a.conn, pool, "nothing.tar", &there, &err), err);
    assert_false(there);

    rc = vtpm_store_get(host_b.conn, "st-no-such-pool", "x.tar", &back, &err);
    assert_fault(rc, err, VTPM_FAULT_STATE_NOT_FOUND);
    assert_null(back);
    there = true;
    assert_ok(vtpm_store_exists(host_b.conn, "st-no-such-pool", "x.tar", &there, &err), err);
    assert_false(there);
    assert_ok(vtpm_store_delete(host_b.conn, "st-no-such-pool", "x.tar", &err), err);
    /* A put has nowhere to go. */
    rc = vtpm_store_put(host_b.conn, "st-no-such-pool", "x.tar", data, &err);
    assert_fault(rc, err, VTPM_FAULT_STATE_TRANSFER_FAILED);
    drop_pool(host_a.conn, pool);
}

static void
test_delete_idempotent(void **state)
{
    const char *pool = "st-delete";
    g_autofree char *path = tree_path(&host_b, pool, "d.tar");
    g_autoptr(GBytes) data = random_bytes(6 * 1024);
    GBytes *back = NULL;
    vtpm_error err = { 0 };
    bool there = false;
    int rc;

    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "d.tar", data, &err), err);
    assert_ok(vtpm_store_exists(b_unix, pool, "d.tar", &there, &err), err);
    assert_true(there);
    assert_ok(vtpm_store_delete(host_b.conn, pool, "d.tar", &err), err);
    assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    assert_ok(vtpm_store_delete(host_b.conn, pool, "d.tar", &err), err);
    assert_ok(vtpm_store_delete(b_unix, pool, "d.tar", &err), err);
    assert_ok(vtpm_store_exists(host_b.conn, pool, "d.tar", &there, &err), err);
    assert_false(there);
    rc = vtpm_store_get(host_b.conn, pool, "d.tar", &back, &err);
    assert_fault(rc, err, VTPM_FAULT_STATE_NOT_FOUND);
    drop_pool(host_b.conn, pool);
}

/* A file that reached the pool's directory without this libvirtd's
 * knowledge (another process, a shared directory) is found: the store
 * refreshes the pool before it looks. */
static void
test_sees_foreign_volume(void **state)
{
    const char *pool = "st-foreign";
    g_autofree char *path = tree_path(&host_b, pool, "dropped.tar");
    g_autoptr(GBytes) data = random_bytes(3000);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };
    bool there = false;

    make_pool(&host_b, pool);
    /* Make libvirt list the pool before the file appears. */
    assert_ok(vtpm_store_exists(host_b.conn, pool, "dropped.tar", &there, &err), err);
    assert_false(there);
    assert_true(g_file_set_contents(path, g_bytes_get_data(data, NULL),
                                    (gssize)g_bytes_get_size(data), NULL));
    assert_ok(vtpm_store_exists(host_b.conn, pool, "dropped.tar", &there, &err), err);
    assert_true(there);
    assert_ok(vtpm_store_get(host_b.conn, pool, "dropped.tar", &back, &err), err);
    assert_bytes_equal(back, data);
    assert_ok(vtpm_store_delete(host_b.conn, pool, "dropped.tar", &err), err);
    assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    drop_pool(host_b.conn, pool);
}

/* The list sees every volume with the prefix, sorted, also ones another
 * client wrote; a missing pool lists nothing. */
static void
test_list(void **state)
{
    const char *pool = "st-list";
    g_autofree char *path = tree_path(&host_b, pool, "u1.ckpt-3.tar");
    g_autoptr(GBytes) data = random_bytes(100);
    g_autoptr(GPtrArray) names = NULL;
    g_autoptr(GPtrArray) none = NULL;
    g_autoptr(GPtrArray) all = NULL;
    vtpm_error err = { 0 };

    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "u1.ckpt-2.tar", data, &err), err);
    assert_ok(vtpm_store_put(b_unix, pool, "u1.ckpt-1.tar", data, &err), err);
    assert_ok(vtpm_store_put(host_b.conn, pool, "u2.ckpt-1.tar", data, &err), err);
    assert_true(g_file_set_contents(path, "x", 1, NULL));
    assert_ok(vtpm_store_list(host_b.conn, pool, "u1.", &names, &err), err);
    assert_int_equal(names->len, 3);
    assert_string_equal(g_ptr_array_index(names, 0), "u1.ckpt-1.tar");
    assert_string_equal(g_ptr_array_index(names, 1), "u1.ckpt-2.tar");
    assert_string_equal(g_ptr_array_index(names, 2), "u1.ckpt-3.tar");
    assert_ok(vtpm_store_list(host_b.conn, pool, "", &all, &err), err);
    assert_int_equal(all->len, 4);
    assert_ok(vtpm_store_list(host_b.conn, "st-no-such-pool", "u1.", &none, &err), err);
    assert_int_equal(none->len, 0);
    assert_fault(vtpm_store_list(host_b.conn, "../x", "", &none, &err), err,
                 VTPM_FAULT_BAD_REQUEST);
    for (guint i = 0; i < all->len; i++)
        assert_ok(vtpm_store_delete(host_b.conn, pool, g_ptr_array_index(all, i), &err), err);
    drop_pool(host_b.conn, pool);
}

/* @n is refused as a volume name and as a pool name by every call. */
static void
assert_name_refused(virConnectPtr conn, const char *pool, const char *n)
{
    g_autoptr(GBytes) data = random_bytes(64);
    GBytes *none = NULL;
    vtpm_error err = { 0 };
    bool there = true;

    assert_fault(vtpm_store_put(conn, pool, n, data, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_fault(vtpm_store_get(conn, pool, n, &none, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_null(none);
    assert_fault(vtpm_store_delete(conn, pool, n, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_fault(vtpm_store_exists(conn, pool, n, &there, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_true(there); /* untouched on failure */

    assert_fault(vtpm_store_put(conn, n, "ok.tar", data, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_fault(vtpm_store_get(conn, n, "ok.tar", &none, &err), err, VTPM_FAULT_BAD_REQUEST);
    assert_fault(vtpm_store_ensure_pool(conn, n, POOL_BASE "/x", &err), err,
                 VTPM_FAULT_BAD_REQUEST);
}

static void
test_bad_names(void **state)
{
    static const char *const bad[] = {
        "", ".", "..", ".hidden", "a/b", "../x", "a b", "a\nb", "t\xc3\xa4r", "x;y", "x'y",
        "<v>", "v\\w", NULL,
    };
    g_autofree char *long_name = g_strnfill(201, 'v');
    g_autofree char *max_name = g_strnfill(200, 'v');
    g_autoptr(GBytes) data = random_bytes(64);
    g_autoptr(GBytes) back = NULL;
    const char *pool = "st-names";
    vtpm_error err = { 0 };

    make_pool(&host_a, pool);
    for (size_t i = 0; bad[i]; i++)
        assert_name_refused(host_a.conn, pool, bad[i]);
    assert_name_refused(host_a.conn, pool, long_name);
    assert_name_refused(host_a.conn, pool, NULL);
    /* A pool directory must be absolute. */
    assert_fault(vtpm_store_ensure_pool(host_a.conn, "st-relative", "var/lib/x", &err), err,
                 VTPM_FAULT_BAD_REQUEST);
    assert_null(virStoragePoolLookupByName(host_a.conn, "st-relative"));

    /* The edges of what is allowed. */
    assert_ok(vtpm_store_put(host_a.conn, pool, max_name, data, &err), err);
    assert_ok(vtpm_store_get(host_a.conn, pool, max_name, &back, &err), err);
    assert_bytes_equal(back, data);
    assert_ok(vtpm_store_put(host_a.conn, pool, "A-z_0.9-..tar", data, &err), err);
    drop_pool(host_a.conn, pool);
}

/* The store hands out what the volume holds, damaged or not: detecting
 * damage is the archive's job (checksums), hiding it is nobody's. */
static void
test_changed_behind_libvirt(void **state)
{
    const char *pool = "st-changed";
    g_autofree char *path = tree_path(&host_b, pool, "c.tar");
    g_autoptr(GBytes) data = random_bytes(6 * 1024);
    g_autoptr(GBytes) other = random_bytes(6 * 1024);
    g_autoptr(GBytes) shorter = random_bytes(100);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };
    int fd;

    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "c.tar", data, &err), err);
    /* Overwritten in place, same size. */
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, g_bytes_get_data(other, NULL), g_bytes_get_size(other), 0),
                     (ssize_t)g_bytes_get_size(other));
    assert_int_equal(close(fd), 0);
    assert_ok(vtpm_store_get(host_b.conn, pool, "c.tar", &back, &err), err);
    assert_bytes_equal(back, other);
    g_clear_pointer(&back, g_bytes_unref);

    /* Truncated and rewritten: the new size counts, not libvirt's memory. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, g_bytes_get_data(shorter, NULL), g_bytes_get_size(shorter)),
                     (ssize_t)g_bytes_get_size(shorter));
    assert_int_equal(close(fd), 0);
    assert_ok(vtpm_store_get(host_b.conn, pool, "c.tar", &back, &err), err);
    assert_bytes_equal(back, shorter);
    drop_pool(host_b.conn, pool);
}

static void
test_too_large(void **state)
{
    const char *pool = "st-large";
    g_autofree char *path = tree_path(&host_a, pool, "huge.tar");
    g_autofree char *at_limit = tree_path(&host_a, pool, "limit.tar");
    g_autoptr(GBytes) big = NULL;
    GBytes *back = NULL;
    vtpm_error err = { 0 };
    int fd;

    make_pool(&host_a, pool);
    /* Sparse: costs no disk. */
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)VTPM_STORE_MAX_VOLUME + 1), 0);
    assert_int_equal(close(fd), 0);
    assert_fault(vtpm_store_get(host_a.conn, pool, "huge.tar", &back, &err), err,
                 VTPM_FAULT_STATE_INTEGRITY);
    assert_null(back);

    /* Exactly at the limit is read (the archive layer judges it). */
    fd = open(at_limit, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)VTPM_STORE_MAX_VOLUME), 0);
    assert_int_equal(close(fd), 0);
    assert_ok(vtpm_store_get(host_a.conn, pool, "limit.tar", &back, &err), err);
    assert_int_equal(g_bytes_get_size(back), VTPM_STORE_MAX_VOLUME);
    g_bytes_unref(back);

    /* And nothing larger is accepted for writing. */
    big = g_bytes_new_take(g_malloc0(VTPM_STORE_MAX_VOLUME + 1), VTPM_STORE_MAX_VOLUME + 1);
    assert_fault(vtpm_store_put(host_a.conn, pool, "big.tar", big, &err), err,
                 VTPM_FAULT_BAD_REQUEST);
    drop_pool(host_a.conn, pool);
}

static void
test_empty_volume(void **state)
{
    const char *pool = "st-empty";
    g_autofree char *path = tree_path(&host_b, pool, "empty.tar");
    g_autoptr(GBytes) empty = g_bytes_new(NULL, 0);
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };

    make_pool(&host_b, pool);
    assert_ok(vtpm_store_put(host_b.conn, pool, "empty.tar", empty, &err), err);
    assert_true(g_file_test(path, G_FILE_TEST_IS_REGULAR));
    assert_ok(vtpm_store_get(host_b.conn, pool, "empty.tar", &back, &err), err);
    assert_int_equal(g_bytes_get_size(back), 0);
    drop_pool(host_b.conn, pool);
}

/* ---- set-up --------------------------------------------------------------------------- */

static virConnectPtr
open_conn(const char *uri)
{
    virConnectPtr c = virConnectOpen(uri);

    if (!c)
        fail_msg("connecting to %s: %s", uri, virGetLastErrorMessage());
    return c;
}

static int
setup(void **state)
{
    g_autofree char *b_tcp = g_strdup_printf("qemu+tcp://%s/system", g_getenv("VT_HOST_B_ADDR"));

    host_a.root = g_getenv("VT_HOST_A_ROOT");
    host_a.conn = open_conn(g_getenv("VT_HOST_A_URI"));
    host_b.root = g_getenv("VT_HOST_B_ROOT");
    host_b.conn = open_conn(b_tcp);
    b_unix = open_conn(g_getenv("VT_HOST_B_URI"));
    return 0;
}

static int
teardown(void **state)
{
    virConnectClose(host_a.conn);
    virConnectClose(host_b.conn);
    virConnectClose(b_unix);
    return 0;
}

int
main(void)
{
    static const char *const need[] = { "VT_HOST_A_URI", "VT_HOST_A_ROOT", "VT_HOST_B_URI",
                                        "VT_HOST_B_ROOT", "VT_HOST_B_ADDR", NULL };
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ensure_pool_creates),
        cmocka_unit_test(test_ensure_pool_existing_dir),
        cmocka_unit_test(test_ensure_pool_inactive),
        cmocka_unit_test(test_roundtrip_unix),
        cmocka_unit_test(test_roundtrip_tcp),
        cmocka_unit_test(test_put_replaces),
        cmocka_unit_test(test_get_missing),
        cmocka_unit_test(test_delete_idempotent),
        cmocka_unit_test(test_sees_foreign_volume),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_changed_behind_libvirt),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_empty_volume),
    };

    for (size_t i = 0; need[i]; i++) {
        if (!g_getenv(need[i]) || !*g_getenv(need[i])) {
            fprintf(stderr, "test_store: %s is not set; run it through "
                            "tests/integration.sh --net --hosts 2 (skipped)\n", need[i]);
            return 77;
        }
    }
    virSetErrorFunc(NULL, silent_error);
    return cmocka_run_group_tests(tests, setup, teardown);
}
