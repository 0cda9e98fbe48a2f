/* SPDX-License-Identifier: Apache-2.0 */
/* The TPM state in archives, kept copies and volumes (ops/state.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "metrics.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/nvram.h"
#include "ops/state.h"
#include "store.h"

char *
vtpm_state_kept_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/%s.tar", w->cfg->store.kept_dir, uuid);
}

int
vtpm_state_read_kept(vtpm_worker *w, const char *uuid, GBytes **out, vtpm_error *err)
{
    g_autofree char *kept = vtpm_state_kept_path(w, uuid);

    /* Room for the manifest and the tar headers around the state. */
    return vtpm_fs_read(kept, VTPM_ARCHIVE_MAX_TOTAL + 1024 * 1024, out, err);
}

bool
vtpm_state_has_kept(vtpm_worker *w, const char *uuid)
{
    g_autofree char *kept = vtpm_state_kept_path(w, uuid);

    return access(kept, F_OK) == 0;
}

int
vtpm_state_drop_kept(vtpm_worker *w, const char *uuid, vtpm_error *err)
{
    g_autofree char *kept = vtpm_state_kept_path(w, uuid);

    if (unlink(kept) < 0 && errno != ENOENT)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "removing %s: %s", kept,
                              g_strerror(errno));
    return 0;
}

char *
vtpm_state_volume_name(const char *uuid)
{
    return g_strdup_printf("%s.vtpm.tar", uuid);
}

/*
 * Replace the instance's state dir with the archive's contents (the TPM
 * state and, of a UEFI instance, its variable store).  Extract into a
 * fresh sibling directory first, then swap it in with one
 * renameat2(RENAME_EXCHANGE): a crash leaves either the old state or the
 * new one in place, never a mix, of both files at once.
 */
int
vtpm_state_restore(vtpm_worker *w, const char *uuid, GBytes *archive, vtpm_error *err)
{
    g_autofree char *final = vtpm_ops_state_dir(w, uuid);
    g_autofree char *tmp =
        g_strdup_printf("%s/.%s.restore-XXXXXX", w->cfg->libvirt.state_dir, uuid);
    int uid = -1, gid = -1, rc;

    if ((rc = vtpm_ops_swtpm_ids(w, &uid, &gid, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(w->cfg->libvirt.state_dir, 0711, err)) < 0)
        return rc;
    if (!g_mkdtemp_full(tmp, 0711))
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", tmp,
                              g_strerror(errno));
    /* libvirt keeps <uuid>/ root-owned 0711 and what is inside for swtpm. */
    chmod(tmp, 0711);
    if ((rc = vtpm_archive_extract(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                   tmp, uid, gid, NULL, err)) < 0 ||
        (rc = vtpm_nvram_own(tmp, err)) < 0) {
        vtpm_error ignore;
        vtpm_fs_rmtree(tmp, &ignore);
        return rc;
    }
    if (vtpm_fs_is_dir(final)) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) < 0) {
            int e = errno;
            vtpm_error ignore;

            vtpm_fs_rmtree(tmp, &ignore);
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swapping in %s: %s", final,
                                  g_strerror(e));
        }
        vtpm_metrics_state_bytes(VTPM_METRICS_IN, g_bytes_get_size(archive));
        /* tmp now holds the previous state. */
        if ((rc = vtpm_fs_sync_dir(w->cfg->libvirt.state_dir, err)) < 0)
            return rc;
        return vtpm_fs_rmtree(tmp, err);
    }
    if (rename(tmp, final) < 0) {
        int e = errno;
        vtpm_error ignore;

        vtpm_fs_rmtree(tmp, &ignore);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "moving state to %s: %s", final,
                              g_strerror(e));
    }
    vtpm_metrics_state_bytes(VTPM_METRICS_IN, g_bytes_get_size(archive));
    return vtpm_fs_sync_dir(w->cfg->libvirt.state_dir, err);
}

/* The archive of the instance's current state plus what is needed to
 * recreate its domain.  An instance without vTPM gets a manifest-only
 * archive. */
int
vtpm_state_pack(vtpm_worker *w, virDomainPtr dom, const char *uuid, const vtpm_device *dev,
                const char *reason, GHashTable *extra, GBytes **out, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *empty = NULL;
    char *xml = VTPM_LV(virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE));
    g_auto(vtpm_archive_meta) meta = { 0 };
    int rc;

    if (!xml)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "reading the definition of %s", uuid);
    vtpm_archive_meta_init(&meta);
    meta.format = VTPM_ARCHIVE_FORMAT;
    memcpy(meta.uuid, uuid, sizeof(meta.uuid));
    if (dev->version != VTPM_VERSION_NONE) {
        meta.tpm_version = g_strdup(vtpm_version_str(dev->version));
        meta.tpm_model = g_strdup(vtpm_model_str(dev->model));
        meta.secret_security = g_strdup(vtpm_secret_security_str(dev->secret_security));
    }
    /* Wall-clock ms keeps generations comparable across hosts; never
     * below the last one this host saw, so it always grows here. */
    meta.generation =
        MAX((uint64_t)(g_get_real_time() / 1000), vtpm_generation_last(w, uuid) + 1);
    meta.created_ms = g_get_real_time() / 1000;
    meta.reason = g_strdup(reason);
    meta.domain_xml = g_strdup(xml);
    free(xml);
    if (extra) {
        GHashTableIter it;
        gpointer k, v;

        g_hash_table_iter_init(&it, extra);
        while (g_hash_table_iter_next(&it, &k, &v))
            g_hash_table_replace(meta.extra, g_strdup(k), g_strdup(v));
    }
    if (dev->version == VTPM_VERSION_NONE) {
        empty = g_dir_make_tmp("vtpmd-empty-XXXXXX", NULL);
        if (!empty)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot create a temporary dir");
    }
    rc = vtpm_archive_pack(empty ? empty : state_dir, &meta, out, err);
    if (empty)
        rmdir(empty);
    if (rc == 0 && (rc = vtpm_generation_record(w, uuid, meta.generation, err)) < 0)
        g_clear_pointer(out, g_bytes_unref);
    return rc;
}

/* Whether the archive carries TPM state (not manifest-only). */
bool
vtpm_state_has_tpm(const vtpm_archive_meta *m)
{
    return m->tpm_version != NULL;
}

int
vtpm_state_ensure_pool(vtpm_worker *w, virConnectPtr conn, const char *pool, vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.pool_dir, pool, NULL);

    return vtpm_store_ensure_pool(conn, pool, dir, err);
}

void
vtpm_state_pack_transfer(msgpack_packer *pk, const char *key, GBytes *archive, const char *ref)
{
    g_autofree char *sha = NULL;

    vtpm_pack_str(pk, key);
    if (!archive) {
        msgpack_pack_nil(pk);
        return;
    }
    sha = vtpm_archive_sha256(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive));
    msgpack_pack_map(pk, ref ? 3 : 2);
    if (ref)
        vtpm_pack_kv_str(pk, "ref", ref);
    vtpm_pack_kv_uint(pk, "bytes", g_bytes_get_size(archive));
    vtpm_pack_kv_str(pk, "sha256", sha);
}

/* Optional {bytes, sha256} the caller passes back: checked when given. */
int
vtpm_state_check_expected(const msgpack_object *map, const char *where, GBytes *archive,
                          vtpm_error *err)
{
    g_autofree char *want = NULL, *have = NULL;
    uint64_t bytes = 0;
    int rc;

    if (!map)
        return 0;
    if ((rc = vtpm_proto_get_str(map, where, "sha256", false, 64, &want, err)) < 0 ||
        (rc = vtpm_proto_get_uint(map, where, "bytes", false, 0, &bytes, err)) < 0)
        return rc;
    if (bytes && bytes != g_bytes_get_size(archive))
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "archive is %zu bytes, %s.bytes says %" G_GUINT64_FORMAT,
                              g_bytes_get_size(archive), where, bytes);
    if (!want)
        return 0;
    have = vtpm_archive_sha256(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive));
    if (g_ascii_strcasecmp(want, have) != 0)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "archive sha256 %s does not match %s.sha256 %s", have, where, want);
    return 0;
}
