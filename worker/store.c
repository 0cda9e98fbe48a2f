/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "store.h"
#include "timing.h"
#include "virt.h"

/* Stream chunk: libvirt's remote protocol carries at most 256 KiB of
 * stream data per message, so a larger buffer gains nothing. */
#define CHUNK (256u * 1024)
#define NAME_MAX_LEN 200
/* How long a refresh that fails while the pool stays active is retried
 * (libvirt refuses to refresh while another client builds a volume). */
#define REFRESH_TRIES 50
#define REFRESH_WAIT_US (100 * 1000)

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virStoragePool, virStoragePoolFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virStorageVol, virStorageVolFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virStream, virStreamFree)

/* Pool and volume names end up as file names on a peer host: keep them to
 * a portable, traversal-free alphabet. */
static int
check_name(const char *what, const char *name, vtpm_error *err)
{
    size_t n;

    if (!name || !*name)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s name is empty", what);
    n = strlen(name);
    if (n > NAME_MAX_LEN)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s name is longer than %d bytes",
                              what, NAME_MAX_LEN);
    if (name[0] == '.')
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s name \"%.64s\" starts with '.'",
                              what, name);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];

        if (!g_ascii_isalnum(c) && c != '.' && c != '_' && c != '-')
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "%s name \"%.64s\" has a character outside [A-Za-z0-9._-]",
                                  what, name);
    }
    return 0;
}

static bool
last_error_is(int code)
{
    const virError *e = virGetLastError();

    return e && e->code == code;
}

/*
 * Look up @name.  *out is NULL (and 0 returned) when the pool does not
 * exist, so each caller decides what "missing" means for it.
 */
static int
lookup_pool(virConnectPtr conn, const char *name, vtpm_fault code, virStoragePoolPtr *out,
            vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virStoragePoolPtr p = virStoragePoolLookupByName(conn, name);

    if (!p) {
        if (last_error_is(VIR_ERR_NO_STORAGE_POOL)) {
            virResetLastError();
            *out = NULL;
            return 0;
        }
        return vtpm_virt_error(NULL, code, err, "looking up storage pool %s", name);
    }
    *out = p;
    return 0;
}

/*
 * Re-scan the pool's directory: a volume written through another libvirtd
 * client or by another process is otherwise unknown to this daemon's
 * cached volume list and would be reported missing.
 */
static int
refresh_pool(virStoragePoolPtr pool, const char *name, vtpm_fault code, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    for (int i = 0;; i++) {
        int active = virStoragePoolIsActive(pool);

        if (active < 0)
            return vtpm_virt_error(NULL, code, err, "reading state of storage pool %s", name);
        /* An inactive pool's volumes are unknowable: refusing is the
         * only answer that cannot be mistaken for "no state here". */
        if (!active)
            return vtpm_error_set(err, code, "storage pool %s is not active", name);
        if (virStoragePoolRefresh(pool, 0) == 0)
            return 0;
        if (i + 1 >= REFRESH_TRIES)
            return vtpm_virt_error(NULL, code, err, "refreshing storage pool %s", name);
        virResetLastError();
        g_usleep(REFRESH_WAIT_US);
    }
}

/* Volume @vol of the (refreshed) pool; *out NULL when it does not exist. */
static int
lookup_vol(virStoragePoolPtr pool, const char *pname, const char *vol, vtpm_fault code,
           virStorageVolPtr *out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virStorageVolPtr v = virStorageVolLookupByName(pool, vol);

    if (!v) {
        if (last_error_is(VIR_ERR_NO_STORAGE_VOL)) {
            virResetLastError();
            *out = NULL;
            return 0;
        }
        return vtpm_virt_error(NULL, code, err, "looking up volume %s in pool %s", vol, pname);
    }
    *out = v;
    return 0;
}

/* Pool and volume, both optional: 0 with *out NULL when either is missing. */
static int
open_vol(virConnectPtr conn, const char *pool, const char *vol, vtpm_fault code,
         virStorageVolPtr *out, vtpm_error *err)
{
    g_autoptr(virStoragePool) p = NULL;
    int rc;

    if ((rc = check_name("pool", pool, err)) < 0 || (rc = check_name("volume", vol, err)) < 0)
        return rc;
    if ((rc = lookup_pool(conn, pool, code, &p, err)) < 0)
        return rc;
    if (!p) {
        *out = NULL;
        return 0;
    }
    if ((rc = refresh_pool(p, pool, code, err)) < 0)
        return rc;
    return lookup_vol(p, pool, vol, code, out, err);
}

/* Start @p unless it runs; started by someone else in the meantime is
 * just as good. */
static int
start_pool(virStoragePoolPtr p, const char *name, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    int active = virStoragePoolIsActive(p);

    if (active < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "reading state of storage pool %s", name);
    if (active)
        return 0;
    if (virStoragePoolCreate(p, 0) == 0)
        return 0;
    /* Two workers moving TPMs to this host at once both find the pool
     * inactive; the loser's create fails while the winner's is still
     * starting it ("is starting up"). Wait for the winner. The error is
     * kept first: every libvirt call resets it, and the fault said
     * "unknown libvirt error" when the pool never came up. */
    vtpm_error failed;

    vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, &failed,
                    "starting storage pool %s", name);
    for (int i = 0; i < REFRESH_TRIES; i++) {
        if (virStoragePoolIsActive(p) == 1) {
            virResetLastError();
            return 0;
        }
        g_usleep(REFRESH_WAIT_US);
    }
    virResetLastError();
    if (err)
        *err = failed;
    return -(int)failed.code;
}

/* Define, build, start and autostart a new pool.  *out is the pool of
 * that name, ours or, after losing a race, another client's. */
static int
define_pool(virConnectPtr conn, const char *name, const char *dir, virStoragePoolPtr *out,
            vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    g_autofree char *xml = g_markup_printf_escaped(
        "<pool type='dir'><name>%s</name><target><path>%s</path>"
        "<permissions><mode>0700</mode></permissions></target></pool>",
        name, dir);
    g_autoptr(virStoragePool) p = virStoragePoolDefineXML(conn, xml, 0);
    int rc;

    if (!p) {
        /* Another worker may have defined it first: then use theirs. */
        vtpm_error first;

        vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, &first,
                        "defining storage pool %s", name);
        if ((rc = lookup_pool(conn, name, VTPM_FAULT_HYPERVISOR_ERROR, &p, err)) < 0)
            return rc;
        if (!p) {
            if (err)
                *err = first;
            return -(int)first.code;
        }
        *out = g_steal_pointer(&p);
        return 0;
    }
    /* Build creates the directory with mode 0700 (and enforces that mode
     * on an existing one); it never touches what the directory holds. */
    if (virStoragePoolBuild(p, 0) < 0) {
        rc = vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, err,
                             "building storage pool %s at %s", name, dir);
        goto undo;
    }
    if ((rc = start_pool(p, name, err)) < 0)
        goto undo;
    if (virStoragePoolSetAutostart(p, 1) < 0) {
        rc = vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, err,
                             "marking storage pool %s autostart", name);
        goto undo;
    }
    *out = g_steal_pointer(&p);
    return 0;
undo:
    /* A defined pool that cannot start would be "used as it is" by the
     * next call and fail there forever: remove ours (the directory and
     * anything in it stay). */
    if (virStoragePoolIsActive(p) == 1)
        virStoragePoolDestroy(p);
    virStoragePoolUndefine(p);
    virResetLastError();
    return rc;
}

int
vtpm_store_open(vtpm_virt *local, const char *uri, virConnectPtr *out, vtpm_error *err)
{
    virConnectPtr c;

    if (!uri || strcmp(uri, vtpm_virt_uri(local)) == 0)
        return vtpm_virt_conn(local, out, NULL, err);
    c = VTPM_LV(virConnectOpen(uri));
    if (!c)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "cannot connect to the state store at %s: %s", uri,
                              virGetLastErrorMessage());
    *out = c;
    return 0;
}

int
vtpm_store_ensure_pool(virConnectPtr conn, const char *name, const char *dir,
                       vtpm_error *err)
{
    g_autoptr(virStoragePool) p = NULL;
    int rc;

    if ((rc = check_name("pool", name, err)) < 0)
        return rc;
    if (!dir || dir[0] != '/')
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "storage pool %s: directory \"%s\" is not absolute", name,
                              dir ? dir : "");
    if ((rc = lookup_pool(conn, name, VTPM_FAULT_HYPERVISOR_ERROR, &p, err)) < 0)
        return rc;
    if (!p && (rc = define_pool(conn, name, dir, &p, err)) < 0)
        return rc;
    return start_pool(p, name, err);
}

/*
 * Read the whole volume through a blocking stream (length 0: up to its
 * end, so a file that changed size since GetInfo is still read exactly).
 */
static int
download(virConnectPtr conn, virStorageVolPtr vol, const char *name, GBytes **out,
         vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    g_autoptr(virStream) st = NULL;
    g_autoptr(GByteArray) buf = NULL;
    g_autofree char *chunk = NULL;
    virStorageVolInfo info;
    int rc;

    if (virStorageVolGetInfo(vol, &info) < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "reading size of volume %s", name);
    if (info.capacity > VTPM_STORE_MAX_VOLUME)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "volume %s has %llu bytes, more than the limit of %u", name,
                              info.capacity, VTPM_STORE_MAX_VOLUME);
    st = virStreamNew(conn, 0);
    if (!st)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "creating a stream for volume %s", name);
    if (virStorageVolDownload(vol, st, 0, 0, 0) < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "starting download of volume %s", name);
    buf = g_byte_array_sized_new((guint)info.capacity);
    chunk = g_malloc(CHUNK);
    for (;;) {
        int n = virStreamRecv(st, chunk, CHUNK);

        if (n == 0)
            break;
        if (n < 0) {
            /* -2 (EAGAIN) cannot happen on a blocking stream; treat it as
             * the error it would be. */
            rc = n == -2 ? vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                                          "downloading volume %s: unexpected EAGAIN", name)
                         : vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                                           "downloading volume %s", name);
            virStreamAbort(st);
            virResetLastError();
            return rc;
        }
        if ((size_t)buf->len + (size_t)n > VTPM_STORE_MAX_VOLUME) {
            virStreamAbort(st);
            virResetLastError();
            return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                  "volume %s grew beyond the limit of %u bytes while read",
                                  name, VTPM_STORE_MAX_VOLUME);
        }
        g_byte_array_append(buf, (const guint8 *)chunk, (guint)n);
    }
    if (virStreamFinish(st) < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "finishing download of volume %s", name);
    *out = g_byte_array_free_to_bytes(g_steal_pointer(&buf));
    return 0;
}

static int
upload(virConnectPtr conn, virStorageVolPtr vol, const char *name, const guint8 *data,
       size_t len, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    g_autoptr(virStream) st = NULL;
    size_t off = 0;
    int rc;

    /* Nothing to send; an upload of length 0 would mean "to the end". */
    if (len == 0)
        return 0;
    st = virStreamNew(conn, 0);
    if (!st)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "creating a stream for volume %s", name);
    if (virStorageVolUpload(vol, st, 0, len, 0) < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "starting upload of volume %s", name);
    while (off < len) {
        int n = virStreamSend(st, (const char *)data + off, MIN(len - off, CHUNK));

        if (n <= 0) {
            rc = n == -2 ? vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                                          "uploading volume %s: unexpected EAGAIN", name)
                         : vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                                           "uploading volume %s", name);
            virStreamAbort(st);
            virResetLastError();
            return rc;
        }
        off += (size_t)n;
    }
    if (virStreamFinish(st) < 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "finishing upload of volume %s", name);
    return 0;
}

static int
create_vol(virStoragePoolPtr pool, const char *pname, const char *name, size_t len,
           virStorageVolPtr *out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    /* Owner-only: the archive holds the TPM's secrets (possibly
     * encrypted, but not necessarily). */
    g_autofree char *xml = g_markup_printf_escaped(
        "<volume><name>%s</name>"
        "<capacity unit='bytes'>%" G_GSIZE_FORMAT "</capacity>"
        "<allocation unit='bytes'>%" G_GSIZE_FORMAT "</allocation>"
        "<target><format type='raw'/><permissions><mode>0600</mode></permissions></target>"
        "</volume>",
        name, len, len);
    virStorageVolPtr v = virStorageVolCreateXML(pool, xml, 0);

    if (!v)
        return vtpm_virt_error(NULL, VTPM_FAULT_STATE_TRANSFER_FAILED, err,
                               "creating volume %s in pool %s", name, pname);
    *out = v;
    return 0;
}

static int
delete_vol(virStorageVolPtr vol, const char *name, vtpm_fault code, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    if (virStorageVolDelete(vol, 0) < 0) {
        /* Gone in the meantime: the outcome asked for. */
        if (last_error_is(VIR_ERR_NO_STORAGE_VOL)) {
            virResetLastError();
            return 0;
        }
        return vtpm_virt_error(NULL, code, err, "deleting volume %s", name);
    }
    return 0;
}

int
vtpm_store_put(virConnectPtr conn, const char *pool, const char *vol, GBytes *data,
               vtpm_error *err)
{
    const vtpm_fault code = VTPM_FAULT_STATE_TRANSFER_FAILED;
    g_autoptr(virStoragePool) p = NULL;
    g_autoptr(virStorageVol) old = NULL;
    g_autoptr(virStorageVol) v = NULL;
    g_autoptr(GBytes) back = NULL;
    gsize len = 0;
    const guint8 *bytes = data ? g_bytes_get_data(data, &len) : NULL;
    int rc;

    if ((rc = check_name("pool", pool, err)) < 0 || (rc = check_name("volume", vol, err)) < 0)
        return rc;
    if (len > VTPM_STORE_MAX_VOLUME)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "volume %s: %" G_GSIZE_FORMAT " bytes exceed the limit of %u", vol,
                              len, VTPM_STORE_MAX_VOLUME);
    if ((rc = lookup_pool(conn, pool, code, &p, err)) < 0)
        return rc;
    if (!p)
        return vtpm_error_set(err, code, "storage pool %s does not exist", pool);
    if ((rc = refresh_pool(p, pool, code, err)) < 0)
        return rc;
    if ((rc = lookup_vol(p, pool, vol, code, &old, err)) < 0)
        return rc;
    if (old && (rc = delete_vol(old, vol, code, err)) < 0)
        return rc;
    if ((rc = create_vol(p, pool, vol, len, &v, err)) < 0)
        return rc;
    if ((rc = upload(conn, v, vol, bytes, len, err)) < 0 ||
        (rc = download(conn, v, vol, &back, err)) < 0)
        goto drop;
    if (g_bytes_get_size(back) != len ||
        (len > 0 && memcmp(g_bytes_get_data(back, NULL), bytes, len) != 0)) {
        rc = vtpm_error_set(err, code,
                            "volume %s in pool %s reads back differently from what was written "
                            "(%" G_GSIZE_FORMAT " bytes written, %" G_GSIZE_FORMAT " read)",
                            vol, pool, len, g_bytes_get_size(back));
        goto drop;
    }
    return 0;
drop:
    /* A half-written or wrong volume must not be mistaken for an archive
     * later; the source still holds the state, so dropping ours is safe. */
    VTPM_LV(virStorageVolDelete(v, 0));
    virResetLastError();
    return rc;
}

int
vtpm_store_get(virConnectPtr conn, const char *pool, const char *vol, GBytes **out,
               vtpm_error *err)
{
    g_autoptr(virStorageVol) v = NULL;
    int rc;

    if ((rc = open_vol(conn, pool, vol, VTPM_FAULT_HYPERVISOR_ERROR, &v, err)) < 0)
        return rc;
    if (!v)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "no volume %s in storage pool %s", vol, pool);
    return download(conn, v, vol, out, err);
}

int
vtpm_store_delete(virConnectPtr conn, const char *pool, const char *vol, vtpm_error *err)
{
    g_autoptr(virStorageVol) v = NULL;
    int rc;

    if ((rc = open_vol(conn, pool, vol, VTPM_FAULT_HYPERVISOR_ERROR, &v, err)) < 0)
        return rc;
    if (!v)
        return 0;
    return delete_vol(v, vol, VTPM_FAULT_HYPERVISOR_ERROR, err);
}

int
vtpm_store_exists(virConnectPtr conn, const char *pool, const char *vol, bool *out,
                  vtpm_error *err)
{
    g_autoptr(virStorageVol) v = NULL;
    int rc;

    if ((rc = open_vol(conn, pool, vol, VTPM_FAULT_HYPERVISOR_ERROR, &v, err)) < 0)
        return rc;
    *out = v != NULL;
    return 0;
}

static gint
cmp_name(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
vtpm_store_list(virConnectPtr conn, const char *pool, const char *prefix, GPtrArray **out,
                vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    const vtpm_fault code = VTPM_FAULT_STATE_TRANSFER_FAILED;
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(virStoragePool) p = NULL;
    virStorageVolPtr *vols = NULL;
    int n, rc;

    if ((rc = check_name("pool", pool, err)) < 0 ||
        (rc = lookup_pool(conn, pool, code, &p, err)) < 0)
        return rc;
    if (p) {
        if ((rc = refresh_pool(p, pool, code, err)) < 0)
            return rc;
        if ((n = virStoragePoolListAllVolumes(p, &vols, 0)) < 0)
            return vtpm_virt_error(NULL, code, err, "listing the volumes of pool %s", pool);
        for (int i = 0; i < n; i++) {
            const char *name = virStorageVolGetName(vols[i]);

            if (name && g_str_has_prefix(name, prefix ? prefix : ""))
                g_ptr_array_add(names, g_strdup(name));
            virStorageVolFree(vols[i]);
        }
        free(vols);
        g_ptr_array_sort(names, cmp_name);
    }
    *out = g_steal_pointer(&names);
    return 0;
}
