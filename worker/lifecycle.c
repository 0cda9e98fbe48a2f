/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state-moving operations: power cycle, cold migration / resize
 * (migrate_disk_and_power_off -> finish_migration -> confirm_migration, or
 * destroy on the destination + finish_revert_migration on the source),
 * shelve / unshelve and rebuild.
 *
 * The rule every step follows: the TPM state is always somewhere whole and
 * checksummed — the local state dir, the kept copy, the transfer volume or
 * the shelve store — and a copy is deleted only after the next one has been
 * verified.  Every handler is idempotent, so a redelivery after a crash at
 * any named injection point (vtpm_inject) completes the operation.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "archive.h"
#include "fsutil.h"
#include "inject.h"
#include "methods.h"
#include "metrics.h"
#include "rekey.h"
#include "secret.h"
#include "store.h"

/* ---- small helpers ---------------------------------------------------------- */

static int
arg_uuid(const vtpm_request *req, char uuid[37], vtpm_error *err)
{
    const msgpack_object *io = NULL;
    g_autofree char *s = NULL;
    int rc;

    if ((rc = vtpm_proto_get_map(&req->args, "args", "instance", true, &io, err)) < 0 ||
        (rc = vtpm_proto_get_str(io, "args.instance", "uuid", true, 64, &s, err)) < 0)
        return rc;
    return vtpm_proto_parse_uuid(s, "args.instance.uuid", uuid, err);
}

/* Looks the domain up; InstanceNotFound when it does not exist. */
static int
find_domain(vtpm_worker *w, virConnectPtr conn, const char *uuid, virDomainPtr *out,
            vtpm_error *err)
{
    g_autoptr(virDomain) dom = NULL;
    int rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err);

    if (rc < 0)
        return rc;
    if (!dom)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_NOT_FOUND,
                              "instance %s has no domain on host %s", uuid, w->cfg->worker.host);
    *out = g_steal_pointer(&dom);
    return 0;
}

static char *
kept_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/%s.tar", w->cfg->store.kept_dir, uuid);
}

static char *
volume_name(const char *uuid)
{
    return g_strdup_printf("%s.vtpm.tar", uuid);
}

static int
swtpm_ids(vtpm_worker *w, int *uid, int *gid, vtpm_error *err)
{
    struct passwd *pw = getpwnam(w->cfg->libvirt.swtpm_user);
    struct group *gr = getgrnam(w->cfg->libvirt.swtpm_group);

    if (!pw || !gr)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm user %s or group %s does not exist",
                              w->cfg->libvirt.swtpm_user, w->cfg->libvirt.swtpm_group);
    *uid = (int)pw->pw_uid;
    *gid = (int)gr->gr_gid;
    return 0;
}

/*
 * Replace the instance's state dir with the archive's contents.  Extract
 * into a fresh sibling directory first, then swap it in with one
 * renameat2(RENAME_EXCHANGE): a crash leaves either the old state or the
 * new one in place, never a mix.
 */
static int
restore_state(vtpm_worker *w, const char *uuid, GBytes *archive, vtpm_error *err)
{
    g_autofree char *final = vtpm_ops_state_dir(w, uuid);
    g_autofree char *tmp = g_strdup_printf("%s/.%s.restore-XXXXXX", w->cfg->libvirt.state_dir, uuid);
    int uid = -1, gid = -1, rc;

    if ((rc = swtpm_ids(w, &uid, &gid, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(w->cfg->libvirt.state_dir, 0711, err)) < 0)
        return rc;
    if (!g_mkdtemp_full(tmp, 0711))
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", tmp,
                              g_strerror(errno));
    /* libvirt keeps <uuid>/ root-owned 0711 and what is inside for swtpm. */
    chmod(tmp, 0711);
    if ((rc = vtpm_archive_extract(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                   tmp, uid, gid, NULL, err)) < 0) {
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

/* ---- generations ---------------------------------------------------------------- */
/*
 * Every archive carries a generation that grows with every archive made of
 * the instance.  Each host remembers the newest generation it has made or
 * restored per instance (<[store] kept_dir>/generations/<uuid>), and
 * refuses to restore an older one (StateIntegrity) unless the caller passes
 * force: true: an old shelved archive restored over a newer TPM would roll
 * back its counters, NV indices and keys (docs/security.md).
 */
static char *
gen_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/generations/%s", w->cfg->store.kept_dir, uuid);
}

static uint64_t
gen_last(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = gen_path(w, uuid);
    g_autoptr(GBytes) data = NULL;
    g_autofree char *text = NULL;
    guint64 v = 0;

    if (vtpm_fs_read(path, 64, &data, NULL) < 0)
        return 0;
    text = g_strndup(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
    if (!g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, G_MAXINT64, &v, NULL))
        return 0;
    return v;
}

static int
gen_record(vtpm_worker *w, const char *uuid, uint64_t gen, vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.kept_dir, "generations", NULL);
    g_autofree char *path = gen_path(w, uuid);
    g_autofree char *text = NULL;
    int rc;

    if (gen <= gen_last(w, uuid))
        return 0;
    text = g_strdup_printf("%" G_GUINT64_FORMAT "\n", gen);
    if ((rc = vtpm_fs_mkdirs(dir, 0700, err)) < 0)
        return rc;
    return vtpm_fs_write_atomic(path, text, strlen(text), 0600, err);
}

void
vtpm_lifecycle_forget_generation(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = gen_path(w, uuid);

    (void)unlink(path);
}

/* Before a restore: refuse an archive older than what this host saw. */
static int
gen_check(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am, bool force,
          const char *what, vtpm_error *err)
{
    uint64_t last = gen_last(w, uuid);

    if (am->generation >= last)
        return 0;
    if (force) {
        g_warning("instance %s: restoring %s of generation %" G_GUINT64_FORMAT
                  ", older than generation %" G_GUINT64_FORMAT " seen here (forced)",
                  uuid, what, am->generation, last);
        return 0;
    }
    return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                          "%s of instance %s has generation %" G_GUINT64_FORMAT
                          ", older than generation %" G_GUINT64_FORMAT " that host %s has seen: "
                          "restoring it would roll the TPM back; pass force: true to do it "
                          "anyway",
                          what, uuid, am->generation, last, w->cfg->worker.host);
}

/* The archive of the instance's current state plus what is needed to
 * recreate its domain.  An instance without vTPM gets a manifest-only
 * archive. */
static int
pack_state(vtpm_worker *w, virDomainPtr dom, const char *uuid, const vtpm_device *dev,
           const char *reason, GHashTable *extra, GBytes **out, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *empty = NULL;
    char *xml = VTPM_LV(virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE));
    vtpm_archive_meta meta;
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
    meta.generation = MAX((uint64_t)(g_get_real_time() / 1000), gen_last(w, uuid) + 1);
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
        if (!empty) {
            vtpm_archive_meta_clear(&meta);
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot create a temporary dir");
        }
    }
    rc = vtpm_archive_pack(empty ? empty : state_dir, &meta, out, err);
    if (empty)
        rmdir(empty);
    if (rc == 0 && (rc = gen_record(w, uuid, meta.generation, err)) < 0)
        g_clear_pointer(out, g_bytes_unref);
    vtpm_archive_meta_clear(&meta);
    return rc;
}

/* Whether the archive carries TPM state (not manifest-only). */
static bool
meta_has_tpm(const vtpm_archive_meta *m)
{
    return m->tpm_version != NULL;
}

static int
meta_device(const vtpm_archive_meta *m, vtpm_device *out)
{
    int v, mo, s;

    if (!meta_has_tpm(m)) {
        memset(out, 0, sizeof(*out));
        out->version = VTPM_VERSION_NONE;
        return 0;
    }
    v = vtpm_version_parse(m->tpm_version);
    mo = vtpm_model_parse(m->tpm_model);
    s = vtpm_secret_security_parse(m->secret_security ? m->secret_security : "user");
    if (v < 0 || mo < 0 || s < 0)
        return -1;
    out->version = v;
    out->model = mo;
    out->secret_security = s;
    return 0;
}

/* The spec digest that a domain XML (as libvirt formats it) records in its
 * vtpmd metadata; NULL when it has none.  The first literal "<metadata>" is
 * the element: text content that spells it is escaped. */
static char *
xml_spec_digest(const char *xml)
{
    const char *b = xml ? strstr(xml, "<metadata>") : NULL;
    const char *e = b ? strstr(b, "</metadata>") : NULL;
    g_autofree char *md = NULL;
    vtpm_domxml_meta m = { 0 };
    char *out = NULL;

    if (!e)
        return NULL;
    md = g_strndup(b, (gsize)(e + strlen("</metadata>") - b));
    if (vtpm_domxml_parse_metadata(md, &m, NULL) == 0) {
        out = g_steal_pointer(&m.spec_digest);
        vtpm_domxml_meta_clear(&m);
    }
    return out;
}

/* The connection holding the shelve pool ([store] uri or the local one). */
static int
store_conn(vtpm_worker *w, virConnectPtr *out, vtpm_error *err)
{
    virConnectPtr c;

    if (!w->cfg->store.uri || strcmp(w->cfg->store.uri, w->cfg->libvirt.uri) == 0)
        return vtpm_virt_conn(w->virt, out, NULL, err);
    c = VTPM_LV(virConnectOpen(w->cfg->store.uri));
    if (!c)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "cannot connect to the state store at %s: %s", w->cfg->store.uri,
                              virGetLastErrorMessage());
    *out = c;
    return 0;
}

static int
ensure_pool(vtpm_worker *w, virConnectPtr conn, const char *pool, vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.pool_dir, pool, NULL);

    return vtpm_store_ensure_pool(conn, pool, dir, err);
}

static void
pack_transfer(msgpack_packer *pk, const char *key, GBytes *archive, const char *ref)
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
static int
check_expected(const msgpack_object *map, const char *where, GBytes *archive, vtpm_error *err)
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

/* ---- keys ------------------------------------------------------------------- */

/* The vtpmd metadata of the domain definition an archive carries: how the
 * TPM in it is keyed.  Zeroed (version NONE) when there is none. */
static void
archive_key_meta(const vtpm_archive_meta *am, vtpm_domxml_meta *out)
{
    const char *xml = am->domain_xml;
    const char *b = xml ? strstr(xml, "<metadata>") : NULL;
    const char *e = b ? strstr(b, "</metadata>") : NULL;
    const char *wrapped = g_hash_table_lookup(am->extra, "wrapped_secret");

    memset(out, 0, sizeof(*out));
    out->tpm.version = VTPM_VERSION_NONE;
    if (e) {
        g_autofree char *md = g_strndup(b, (gsize)(e + strlen("</metadata>") - b));

        if (vtpm_domxml_parse_metadata(md, out, NULL) < 0) {
            memset(out, 0, sizeof(*out));
            out->tpm.version = VTPM_VERSION_NONE;
        }
    }
    /* The manifest's copy is the one the archive promises to carry. */
    if (wrapped) {
        g_free(out->wrapped_secret);
        out->wrapped_secret = g_strdup(wrapped);
    }
}

/* Secret security changes across a resize or rebuild follow Nova:
 * deployment <-> another mode is refused.  host -> user is refused too:
 * the caller does not know the host's key (rekey first, then resize). */
static int
check_mode_change(vtpm_secret_security from, vtpm_secret_security to, const char *uuid,
                  vtpm_error *err)
{
    if (from == to)
        return 0;
    if (from == VTPM_SECRET_DEPLOYMENT || to == VTPM_SECRET_DEPLOYMENT ||
        (from == VTPM_SECRET_HOST && to == VTPM_SECRET_USER))
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "instance %s: the TPM secret security cannot change from '%s' "
                              "to '%s'",
                              uuid, vtpm_secret_security_str(from), vtpm_secret_security_str(to));
    return 0;
}

static int host_conn(vtpm_worker *w, const char *host, virConnectPtr *out, vtpm_error *err);

/* Host mode: make sure this host has the instance's secret, fetching it
 * from @origin (the host that had it: recorded as "secret_host" in the
 * archive) through [libvirt] migration_uri_template.  *fetched tells
 * whether it came from elsewhere. */
static int
ensure_host_secret(vtpm_worker *w, virConnectPtr conn, const char *uuid, const char *origin,
                   bool *fetched, vtpm_error *err)
{
    g_autoptr(virConnect) oconn = NULL;
    g_autoptr(GBytes) value = NULL;
    bool exists = false;
    int rc;

    *fetched = false;
    if ((rc = vtpm_secret_exists(conn, uuid, &exists, err)) < 0)
        return rc;
    if (exists)
        return 0;
    if (!origin || strcmp(origin, w->cfg->worker.host) == 0)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "host %s has no TPM secret for instance %s and the archive names "
                              "no other host holding it",
                              w->cfg->worker.host, uuid);
    if ((rc = host_conn(w, origin, &oconn, err)) < 0 ||
        (rc = vtpm_secret_get(oconn, origin, uuid, &value, err)) < 0) {
        vtpm_error_prefix(err, "fetching the TPM secret of %s from host %s", uuid, origin);
        return rc;
    }
    if ((rc = vtpm_secret_define(conn, uuid, VTPM_SECRET_PERSISTENT, value, err)) < 0)
        return rc;
    *fetched = true;
    return 0;
}

/* After the TPM runs here, the origin's copy of a fetched host secret has
 * no state left to open: remove it (a failure only leaves a stale key). */
static void
drop_origin_secret(vtpm_worker *w, const char *uuid, const char *origin)
{
    g_autoptr(virConnect) oconn = NULL;
    vtpm_error e = { 0 };

    if (host_conn(w, origin, &oconn, &e) < 0 || vtpm_secret_undefine(oconn, uuid, &e) < 0)
        g_warning("instance %s: cannot remove its TPM secret from host %s: %s", uuid, origin,
                  e.message);
}

/* The extra manifest fields that say how the TPM in an archive is keyed. */
static void
key_extra(vtpm_worker *w, const vtpm_domxml_meta *dm, GHashTable *extra)
{
    if (dm->tpm.version == VTPM_VERSION_NONE || !dm->encrypted)
        return;
    if (dm->tpm.secret_security == VTPM_SECRET_HOST)
        g_hash_table_insert(extra, "secret_host", w->cfg->worker.host);
    if (dm->tpm.secret_security == VTPM_SECRET_DEPLOYMENT && dm->wrapped_secret)
        g_hash_table_insert(extra, "wrapped_secret", dm->wrapped_secret);
}

/* ---- power ------------------------------------------------------------------ */

int
vtpm_op_power_off(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err)
{
    char uuid[37];
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool forced = false;
    int rc;

    if ((rc = arg_uuid(req, uuid, err)) < 0 || (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    if ((rc = find_domain(w, conn, uuid, &dom, err)) < 0)
        goto out;
    /* The state dir stays: libvirt only removes it on undefine. */
    if ((rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, &forced, err)) < 0)
        goto out;
    msgpack_pack_map(result, 2);
    vtpm_pack_kv_str(result, "state", "shutoff");
    vtpm_pack_kv_bool(result, "forced", forced);
out:
    return rc;
}

int
vtpm_op_power_on(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                 vtpm_error *err)
{
    char uuid[37];
    g_autoptr(GBytes) secret = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if ((rc = arg_uuid(req, uuid, err)) < 0 || (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    if ((rc = find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
        goto out;
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_str(result, "state", "running");
out:
    return rc;
}

/* ---- cold migration / resize ------------------------------------------------- */

/* A connection to @host's libvirtd: the local one for ourselves.  @host
 * is a request's dest_host, or an archive manifest's secret_host (which
 * whoever can write the shelve store controls): it is checked here, where
 * it becomes part of a URI, whatever its source. */
static int
host_conn(vtpm_worker *w, const char *host, virConnectPtr *out, vtpm_error *err)
{
    g_autofree char *uri = NULL;
    virConnectPtr c;
    int rc;

    if ((rc = vtpm_proto_check_host(host, "host", err)) < 0)
        return rc;
    if (strcmp(host, w->cfg->worker.host) == 0)
        return vtpm_virt_conn(w->virt, out, NULL, err);
    /* The template was validated at start: exactly one %s. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    uri = g_strdup_printf(w->cfg->libvirt.migration_uri_template, host);
#pragma GCC diagnostic pop
    c = VTPM_LV(virConnectOpen(uri));
    if (!c)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "cannot connect to destination %s (%s): %s", host, uri,
                              virGetLastErrorMessage());
    *out = c;
    return 0;
}

int
vtpm_op_migrate_disk_and_power_off(vtpm_worker *w, const vtpm_request *req,
                                   msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *dest = NULL, *kept = NULL, *vol = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(GHashTable) extra = g_hash_table_new(g_str_hash, g_str_equal);
    vtpm_domxml_meta dm = { 0 };
    vtpm_archive_meta km;
    char uuid[37];
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) dconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    vtpm_archive_meta_init(&km);
    if ((rc = arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "dest_host", true, 255, &dest, err)) < 0 ||
        (rc = vtpm_proto_check_host(dest, "args.dest_host", err)) < 0)
        goto out;
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        goto out;
    if ((rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        goto out;
    vtpm_inject("migrate_disk_and_power_off.after_power_off");

    kept = kept_path(w, uuid);
    /* A redelivery reuses the kept copy: same bytes, same checksum. */
    if (vtpm_fs_read(kept, VTPM_ARCHIVE_MAX_TOTAL + 1024 * 1024, &archive, NULL) == 0 &&
        vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive), &km,
                            NULL) == 0 &&
        strcmp(km.uuid, uuid) == 0 && g_strcmp0(g_hash_table_lookup(km.extra, "dest_host"), dest) == 0) {
        g_message("instance %s: reusing the kept copy %s", uuid, kept);
    } else {
        g_clear_pointer(&archive, g_bytes_unref);
        g_hash_table_insert(extra, "dest_host", dest);
        g_hash_table_insert(extra, "source_host", w->cfg->worker.host);
        key_extra(w, &dm, extra);
        if ((rc = pack_state(w, dom, uuid, &dm.tpm, "migrate", extra, &archive, err)) < 0 ||
            (rc = vtpm_fs_mkdirs(w->cfg->store.kept_dir, 0700, err)) < 0 ||
            (rc = vtpm_fs_write_atomic(kept, g_bytes_get_data(archive, NULL),
                                       g_bytes_get_size(archive), 0600, err)) < 0)
            goto out;
    }
    vtpm_inject("migrate_disk_and_power_off.after_kept_copy");

    if (dm.tpm.version != VTPM_VERSION_NONE) {
        vol = volume_name(uuid);
        if ((rc = host_conn(w, dest, &dconn, err)) < 0 ||
            (rc = ensure_pool(w, dconn, w->cfg->store.incoming_pool, err)) < 0 ||
            (rc = vtpm_store_put(dconn, w->cfg->store.incoming_pool, vol, archive, err)) < 0) {
            vtpm_error_prefix(err, "transferring the vTPM state of %s to %s", uuid, dest);
            goto out;
        }
        vtpm_metrics_state_bytes(VTPM_METRICS_OUT, g_bytes_get_size(archive));
        /* Host mode: the destination gets the same key, through its own
         * libvirt, next to the state it opens. */
        if (dm.encrypted && dm.tpm.secret_security == VTPM_SECRET_HOST &&
            strcmp(dest, w->cfg->worker.host) != 0) {
            g_autoptr(GBytes) value = NULL;

            if ((rc = vtpm_secret_get(conn, w->cfg->worker.host, uuid, &value, err)) < 0 ||
                (rc = vtpm_secret_define(dconn, uuid, VTPM_SECRET_PERSISTENT, value, err)) < 0) {
                vtpm_error_prefix(err, "handing the TPM secret of %s to %s", uuid, dest);
                goto out;
            }
        }
        vtpm_inject("migrate_disk_and_power_off.after_upload");
    }

    msgpack_pack_map(result, 1);
    pack_transfer(result, "vtpm_transfer", dm.tpm.version != VTPM_VERSION_NONE ? archive : NULL,
                  NULL);
    rc = 0;
out:
    vtpm_archive_meta_clear(&km);
    vtpm_domxml_meta_clear(&dm);
    return rc;
}

int
vtpm_op_finish_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                         vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_autoptr(vtpm_flavor) old_flavor = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(GBytes) archive = NULL;
    g_autofree char *vol = NULL, *state_dir = NULL;
    const msgpack_object *oflo = NULL, *expected = NULL;
    vtpm_domxml_meta dm = { 0 };
    vtpm_archive_meta am;
    vtpm_domxml_meta cont = { 0 };
    vtpm_device old_dev;
    const char *outcome;
    bool power_on = true, have_vol = false, fetched = false, force = false;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    vtpm_archive_meta_init(&am);
    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "old_flavor", true, &oflo, err)) < 0 ||
        (rc = vtpm_proto_decode_flavor(oflo, "args.old_flavor", &old_flavor, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &power_on, err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "vtpm_transfer", false, &expected, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &force, err)) < 0)
        goto out;
    if ((rc = vtpm_policy_resolve(old_flavor->extra_specs, inst->image->properties, &old_dev,
                                  err)) < 0) {
        vtpm_error_prefix(err, "args.old_flavor");
        goto out;
    }
    if ((rc = vtpm_ops_prepare(w, inst, &d, err)) < 0)
        goto out;

    vol = volume_name(inst->uuid);
    state_dir = vtpm_ops_state_dir(w, inst->uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_store_exists(conn, w->cfg->store.incoming_pool, vol, &have_vol, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, inst->uuid, &dom, err)) < 0)
        goto out;

    if (d.dev.version == VTPM_VERSION_NONE) {
        outcome = "none";
    } else if (old_dev.version == VTPM_VERSION_NONE || old_dev.version != d.dev.version ||
               old_dev.model != d.dev.model) {
        /* As Nova: a changed vTPM (or a newly requested one) starts fresh. */
        outcome = "fresh";
    } else {
        outcome = "restored";
    }

    /*
     * Done before (redelivery): the domain is defined with this spec, which
     * happens only after the state was restored (or dropped).  The guest
     * may run on that state already, and then it is newer than the
     * transfer volume: never stop it or restore over it, only finish.
     */
    if (dom && vtpm_ops_get_meta(w, dom, &dm, NULL) == 0 && dm.spec_digest &&
        strcmp(dm.spec_digest, d.digest) == 0 &&
        (strcmp(outcome, "restored") != 0 || vtpm_fs_is_dir(state_dir))) {
        if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
            goto out;
        if (have_vol && (rc = vtpm_store_delete(conn, w->cfg->store.incoming_pool, vol, err)) < 0)
            goto out;
        goto reply;
    }

    if (strcmp(outcome, "restored") == 0) {
        if (!have_vol) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                                "no incoming vTPM state for %s in pool %s on host %s",
                                inst->uuid, w->cfg->store.incoming_pool, w->cfg->worker.host);
            goto out;
        }
        if ((rc = vtpm_store_get(conn, w->cfg->store.incoming_pool, vol, &archive, err)) < 0 ||
            (rc = check_expected(expected, "args.vtpm_transfer", archive, err)) < 0 ||
            (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                      &am, err)) < 0)
            goto out;
        if (strcmp(am.uuid, inst->uuid) != 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                "incoming archive belongs to instance %s, not %s", am.uuid,
                                inst->uuid);
            goto out;
        }
        if ((rc = gen_check(w, inst->uuid, &am, force, "the incoming archive", err)) < 0)
            goto out;
        /* The key first: a refusal here leaves everything as it was. */
        archive_key_meta(&am, &cont);
        if (cont.tpm.version != VTPM_VERSION_NONE &&
            (rc = check_mode_change(cont.tpm.secret_security, d.dev.secret_security, inst->uuid,
                                    err)) < 0)
            goto out;
        if (d.dev.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
            (rc = ensure_host_secret(w, conn, inst->uuid,
                                     g_hash_table_lookup(am.extra, "secret_host"), &fetched,
                                     err)) < 0)
            goto out;
        if ((rc = vtpm_ops_plan_key(w, conn, inst, &d,
                                    cont.tpm.version != VTPM_VERSION_NONE ? &cont : NULL, err)) < 0)
            goto out;
        /* Ours before the domain exists: nothing else may hold it. */
        if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
            goto out;
        if ((rc = restore_state(w, inst->uuid, archive, err)) < 0 ||
            (rc = gen_record(w, inst->uuid, am.generation, err)) < 0)
            goto out;
        vtpm_inject("finish_migration.after_restore");
    } else {
        /* A fresh TPM gets a fresh key (or the host's, in host mode). */
        if ((rc = vtpm_ops_plan_key(w, conn, inst, &d, NULL, err)) < 0)
            goto out;
        /* A resize in place leaves the old state here; the kept copy holds
         * it for a revert. */
        if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
            goto out;
        if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0)
            goto out;
    }

    g_clear_pointer(&dom, vtpm_virt_domain_release);
    if ((rc = vtpm_ops_define(w, conn, d.xml, &dom, err)) < 0)
        goto out;
    vtpm_inject("finish_migration.after_define");
    if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
        goto out;
    vtpm_inject("finish_migration.after_start");
    if (have_vol && (rc = vtpm_store_delete(conn, w->cfg->store.incoming_pool, vol, err)) < 0)
        goto out;

reply:
    vtpm_ops_pack_domain_result(result, w, inst->uuid, &d, outcome);
    rc = 0;
out:
    vtpm_archive_meta_clear(&am);
    vtpm_domxml_meta_clear(&dm);
    vtpm_domxml_meta_clear(&cont);
    return rc;
}

int
vtpm_op_confirm_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                          vtpm_error *err)
{
    g_autofree char *kept = NULL, *state_dir = NULL;
    g_autoptr(GBytes) archive = NULL;
    vtpm_archive_meta km;
    const char *dest;
    char uuid[37];
    bool moved;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    vtpm_archive_meta_init(&km);
    if ((rc = arg_uuid(req, uuid, err)) < 0)
        return rc;
    kept = kept_path(w, uuid);
    rc = vtpm_fs_read(kept, VTPM_ARCHIVE_MAX_TOTAL + 1024 * 1024, &archive, err);
    if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND) {
        /* Confirmed already (redelivery), or never migrated from here. */
        msgpack_pack_map(result, 1);
        vtpm_pack_kv_bool(result, "confirmed", false);
        return 0;
    }
    if (rc < 0)
        return rc;
    if ((rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  &km, err)) < 0) {
        vtpm_error_prefix(err, "kept copy %s", kept);
        goto out;
    }
    dest = g_hash_table_lookup(km.extra, "dest_host");
    /* After a resize in place the domain here is the new one: keep it. */
    moved = !dest || strcmp(dest, w->cfg->worker.host) != 0;
    if (moved) {
        if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
            (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
            goto out;
        if (dom && ((rc = vtpm_virt_stop(w->virt, dom, err)) < 0 ||
                    (rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0))
            goto out;
        state_dir = vtpm_ops_state_dir(w, uuid);
        if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0)
            goto out;
        vtpm_ops_forget_console(w, uuid);
        vtpm_inject("confirm_migration.after_undefine");
        /* Host mode: the destination has its own copy of the key. */
        if ((rc = vtpm_secret_undefine(conn, uuid, err)) < 0)
            goto out;
        vtpm_inject("confirm_migration.after_cleanup");
    }
    if (unlink(kept) < 0 && errno != ENOENT) {
        rc = vtpm_error_set(err, VTPM_FAULT_INTERNAL, "removing %s: %s", kept, g_strerror(errno));
        goto out;
    }
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_bool(result, "confirmed", true);
    rc = 0;
out:
    vtpm_archive_meta_clear(&km);
    return rc;
}

int
vtpm_op_finish_revert_migration(vtpm_worker *w, const vtpm_request *req,
                                msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *kept = NULL, *name = NULL;
    g_autoptr(GBytes) archive = NULL;
    vtpm_domxml_meta dm = { 0 };
    vtpm_archive_meta km;
    char uuid[37];
    g_autoptr(GBytes) secret = NULL;
    bool power_on = true, force = false;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    const char *state = "none";
    int rc;

    vtpm_archive_meta_init(&km);
    if ((rc = arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &power_on, err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &force, err)) < 0)
        return rc;
    name = vtpm_domxml_domain_name(uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    kept = kept_path(w, uuid);
    rc = vtpm_fs_read(kept, VTPM_ARCHIVE_MAX_TOTAL + 1024 * 1024, &archive, err);
    if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND) {
        /* Reverted already (redelivery): the domain is back. */
        if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
            goto out;
        if (!dom) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                                "no kept copy of %s on host %s to revert to", uuid,
                                w->cfg->worker.host);
            goto out;
        }
        if (power_on && (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
            goto out;
        {
            g_autofree char *sd = vtpm_ops_state_dir(w, uuid);

            state = vtpm_fs_is_dir(sd) ? "restored" : "none";
        }
        goto reply;
    }
    if (rc < 0)
        goto out;
    if ((rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  &km, err)) < 0) {
        vtpm_error_prefix(err, "kept copy %s", kept);
        goto out;
    }
    if (!km.domain_xml) {
        rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY, "kept copy %s has no domain XML", kept);
        goto out;
    }
    if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        goto out;
    if (dom) {
        g_autofree char *want = xml_spec_digest(km.domain_xml);
        g_autofree char *sd = vtpm_ops_state_dir(w, uuid);

        if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
            goto out;
        if (want && dm.spec_digest && strcmp(want, dm.spec_digest) == 0 &&
            (!meta_has_tpm(&km) || vtpm_fs_is_dir(sd))) {
            /* The old domain is defined with its state in place: the
             * destination was another host, or an earlier delivery
             * reverted and died before dropping the kept copy.  That state
             * is as new as or newer than the kept copy (the guest may have
             * run on it): never restore over it. */
            g_message("instance %s: the old domain and its state are in place; not restoring %s",
                      uuid, kept);
            if (power_on && (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
                goto out;
            state = meta_has_tpm(&km) ? "restored" : "none";
            goto drop_kept;
        }
    }
    if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
        goto out;
    if (meta_has_tpm(&km)) {
        if ((rc = gen_check(w, uuid, &km, force, "the kept copy", err)) < 0 ||
            (rc = restore_state(w, uuid, archive, err)) < 0)
            goto out;
        state = "restored";
    }
    vtpm_inject("finish_revert_migration.after_restore");
    g_clear_pointer(&dom, vtpm_virt_domain_release);
    if ((rc = vtpm_ops_define(w, conn, km.domain_xml, &dom, err)) < 0)
        goto out;
    vtpm_inject("finish_revert_migration.after_define");
    if (power_on && (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
        goto out;
    vtpm_inject("finish_revert_migration.after_start");
drop_kept:
    if (unlink(kept) < 0 && errno != ENOENT) {
        rc = vtpm_error_set(err, VTPM_FAULT_INTERNAL, "removing %s: %s", kept, g_strerror(errno));
        goto out;
    }
reply:
    msgpack_pack_map(result, 2);
    vtpm_pack_kv_str(result, "domain", name);
    vtpm_pack_kv_str(result, "vtpm_state", state);
    rc = 0;
out:
    vtpm_archive_meta_clear(&km);
    vtpm_domxml_meta_clear(&dm);
    return rc;
}

/* ---- shelve / unshelve ------------------------------------------------------- */

int
vtpm_op_shelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *vol = NULL, *ref = NULL, *state_dir = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(GBytes) back = NULL;
    vtpm_domxml_meta dm = { 0 };
    char uuid[37];
    bool offload = true, exists = false;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if ((rc = arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "offload", false, true, &offload, err)) < 0)
        return rc;
    vol = volume_name(uuid);
    ref = g_strdup_printf("%s/%s", w->cfg->store.shelve_pool, vol);
    state_dir = vtpm_ops_state_dir(w, uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = store_conn(w, &sconn, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        goto out;

    if (!dom) {
        /* Offloaded already (redelivery): answer from the store. */
        if ((rc = vtpm_store_exists(sconn, w->cfg->store.shelve_pool, vol, &exists, err)) < 0)
            goto out;
        if (!exists) {
            rc = vtpm_error_set(err, VTPM_FAULT_INSTANCE_NOT_FOUND,
                                "instance %s has no domain on host %s and nothing shelved", uuid,
                                w->cfg->worker.host);
            goto out;
        }
        if ((rc = vtpm_store_get(sconn, w->cfg->store.shelve_pool, vol, &archive, err)) < 0 ||
            (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                      NULL, err)) < 0)
            goto out;
        goto reply;
    }

    if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        goto out;
    vtpm_inject("shelve.after_power_off");
    if (dm.tpm.version != VTPM_VERSION_NONE) {
        g_autoptr(GHashTable) extra = g_hash_table_new(g_str_hash, g_str_equal);

        /* Host mode: the key stays here; the archive says where. */
        key_extra(w, &dm, extra);
        if ((rc = pack_state(w, dom, uuid, &dm.tpm, "shelve", extra, &archive, err)) < 0 ||
            (rc = ensure_pool(w, sconn, w->cfg->store.shelve_pool, err)) < 0 ||
            (rc = vtpm_store_put(sconn, w->cfg->store.shelve_pool, vol, archive, err)) < 0)
            goto out;
        vtpm_metrics_state_bytes(VTPM_METRICS_OUT, g_bytes_get_size(archive));
        /* Read it back and check it whole before the local copy may go. */
        if ((rc = vtpm_store_get(sconn, w->cfg->store.shelve_pool, vol, &back, err)) < 0)
            goto out;
        if (!g_bytes_equal(back, archive) ||
            vtpm_archive_verify(g_bytes_get_data(back, NULL), g_bytes_get_size(back), NULL,
                                err) < 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                                "shelved archive %s did not read back intact; local state kept",
                                ref);
            goto out;
        }
        vtpm_inject("shelve.after_store");
    }
    if (offload) {
        if ((rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0 ||
            (rc = vtpm_fs_rmtree(state_dir, err)) < 0)
            goto out;
        vtpm_ops_forget_console(w, uuid);
        vtpm_inject("shelve.after_offload");
    }
reply:
    msgpack_pack_map(result, 2);
    pack_transfer(result, "shelved", archive, ref);
    vtpm_pack_kv_bool(result, "offloaded", offload || !dom);
    rc = 0;
out:
    vtpm_domxml_meta_clear(&dm);
    return rc;
}

int
vtpm_op_unshelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                 vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(GBytes) archive = NULL;
    g_autofree char *ref = NULL, *vol = NULL, *pool = NULL;
    const msgpack_object *shelved = NULL;
    vtpm_domxml_meta dm = { 0 };
    vtpm_archive_meta am;
    vtpm_domxml_meta cont = { 0 };
    vtpm_device adev;
    bool power_on = true, exists = false, fetched = false, force = false;
    const char *slash;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    vtpm_archive_meta_init(&am);
    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "shelved", false, &shelved, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &power_on, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &force, err)) < 0)
        goto out;
    if ((rc = vtpm_ops_prepare(w, inst, &d, err)) < 0)
        goto out;
    if (d.dev.version != VTPM_VERSION_NONE) {
        if (!shelved) {
            rc = vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                "args.shelved: required for an instance with a vTPM");
            goto out;
        }
        if ((rc = vtpm_proto_get_str(shelved, "args.shelved", "ref", true, 512, &ref, err)) < 0)
            goto out;
        slash = strchr(ref, '/');
        vol = volume_name(inst->uuid);
        /* Only this instance's archive in the configured store: a ref must
         * not let a caller read another volume. */
        if (!slash || strncmp(ref, w->cfg->store.shelve_pool, slash - ref) != 0 ||
            strlen(w->cfg->store.shelve_pool) != (size_t)(slash - ref) || strcmp(slash + 1, vol) != 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                "args.shelved.ref: expected %s/%s", w->cfg->store.shelve_pool, vol);
            goto out;
        }
        pool = g_strndup(ref, slash - ref);
    }

    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, inst->uuid, &dom, err)) < 0)
        goto out;
    if (pool && ((rc = store_conn(w, &sconn, err)) < 0 ||
                 (rc = vtpm_store_exists(sconn, pool, vol, &exists, err)) < 0))
        goto out;

    if (dom) {
        /* Unshelved already here (redelivery): finish the clean-up. */
        if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
            goto out;
        if (!dm.spec_digest || strcmp(dm.spec_digest, d.digest) != 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                "instance %s already has a different domain on host %s",
                                inst->uuid, w->cfg->worker.host);
            goto out;
        }
        if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
            goto out;
        if (exists && (rc = vtpm_store_delete(sconn, pool, vol, err)) < 0)
            goto out;
        goto reply;
    }

    if (pool) {
        if (!exists) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND, "shelved archive %s does not exist",
                                ref);
            goto out;
        }
        if ((rc = vtpm_store_get(sconn, pool, vol, &archive, err)) < 0 ||
            (rc = check_expected(shelved, "args.shelved", archive, err)) < 0 ||
            (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                      &am, err)) < 0)
            goto out;
        if (strcmp(am.uuid, inst->uuid) != 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                "shelved archive belongs to instance %s, not %s", am.uuid,
                                inst->uuid);
            goto out;
        }
        if (meta_device(&am, &adev) < 0 || adev.version != d.dev.version ||
            adev.model != d.dev.model) {
            rc = vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                                "shelved state is TPM %s/%s but the instance asks for %s/%s; "
                                "state left in the store",
                                am.tpm_version ? am.tpm_version : "none",
                                am.tpm_model ? am.tpm_model : "none",
                                vtpm_version_str(d.dev.version), vtpm_model_str(d.dev.model));
            goto out;
        }
        if ((rc = gen_check(w, inst->uuid, &am, force, "the shelved archive", err)) < 0)
            goto out;
        /* The key before the state: a refusal leaves the archive alone. */
        archive_key_meta(&am, &cont);
        if ((rc = check_mode_change(adev.secret_security, d.dev.secret_security, inst->uuid,
                                    err)) < 0)
            goto out;
        if (d.dev.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
            (rc = ensure_host_secret(w, conn, inst->uuid,
                                     g_hash_table_lookup(am.extra, "secret_host"), &fetched,
                                     err)) < 0)
            goto out;
        if ((rc = vtpm_ops_plan_key(w, conn, inst, &d, &cont, err)) < 0)
            goto out;
        if ((rc = restore_state(w, inst->uuid, archive, err)) < 0 ||
            (rc = gen_record(w, inst->uuid, am.generation, err)) < 0)
            goto out;
        vtpm_inject("unshelve.after_restore");
    } else if ((rc = vtpm_ops_plan_key(w, conn, inst, &d, NULL, err)) < 0) {
        goto out;
    }
    if ((rc = vtpm_ops_define(w, conn, d.xml, &dom, err)) < 0)
        goto out;
    vtpm_inject("unshelve.after_define");
    if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
        goto out;
    vtpm_inject("unshelve.after_start");
    if (pool && (rc = vtpm_store_delete(sconn, pool, vol, err)) < 0)
        goto out;
    if (fetched)
        drop_origin_secret(w, inst->uuid, g_hash_table_lookup(am.extra, "secret_host"));
reply:
    vtpm_ops_pack_domain_result(result, w, inst->uuid, &d, pool ? "restored" : "none");
    rc = 0;
out:
    vtpm_archive_meta_clear(&am);
    vtpm_domxml_meta_clear(&dm);
    vtpm_domxml_meta_clear(&cont);
    return rc;
}

/* ---- rebuild ------------------------------------------------------------------ */

int
vtpm_op_rebuild(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autofree char *state_dir = NULL, *replaced = NULL;
    vtpm_domxml_meta dm = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autoptr(virDomain) ndom = NULL;
    const char *state;
    bool same;
    int rc;

    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0)
        return rc;
    /* TPMUnsupported here leaves the instance exactly as it was. */
    if ((rc = vtpm_ops_prepare(w, inst, &d, err)) < 0)
        return rc;
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    if ((rc = find_domain(w, conn, inst->uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        goto out;
    state_dir = vtpm_ops_state_dir(w, inst->uuid);
    replaced = vtpm_ops_replaced_dir(w, inst->uuid);
    /* The TPM belongs to the machine, not the disk: kept unless the vTPM
     * configuration itself changes. */
    same = dm.tpm.version == d.dev.version &&
           (d.dev.version == VTPM_VERSION_NONE || dm.tpm.model == d.dev.model);
    state = d.dev.version == VTPM_VERSION_NONE ? "none" : same ? "kept" : "replaced";
    if (dm.spec_digest && strcmp(dm.spec_digest, d.digest) == 0) {
        /* Rebuilt already (redelivery).  A state set aside by that run
         * means it stopped before the new TPM ran: it is being replaced.
         * Dropped only after the start, as below. */
        bool aside = vtpm_fs_is_dir(replaced);

        if ((rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
            goto out;
        if (aside) {
            if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
                goto out;
            state = "replaced";
        }
        goto reply;
    }
    /* The same TPM keeps its key; a new one gets a new key. */
    if (same && d.dev.version != VTPM_VERSION_NONE &&
        (rc = check_mode_change(dm.tpm.secret_security, d.dev.secret_security, inst->uuid,
                                err)) < 0)
        goto out;
    if ((rc = vtpm_ops_plan_key(w, conn, inst, &d,
                                same && dm.tpm.version != VTPM_VERSION_NONE ? &dm : NULL, err)) < 0)
        goto out;
    if ((rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        goto out;
    vtpm_inject("rebuild.after_power_off");
    /* A changing vTPM: set the old state aside before the new definition
     * exists, so that a crash after the define cannot start the new TPM on
     * the old state, and a failed define can put it back. */
    if (!same && vtpm_fs_is_dir(state_dir)) {
        if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
            goto out;
        if (rename(state_dir, replaced) < 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_INTERNAL, "setting aside %s: %s", state_dir,
                                g_strerror(errno));
            goto out;
        }
    }
    if ((rc = vtpm_ops_define(w, conn, d.xml, &ndom, err)) < 0) {
        vtpm_error ignore;

        /* The old definition is still in place; so is its state again. */
        if (!same && vtpm_fs_is_dir(replaced) && !vtpm_fs_is_dir(state_dir) &&
            rename(replaced, state_dir) < 0)
            g_warning("instance %s: cannot put %s back: %s", inst->uuid, replaced,
                      g_strerror(errno));
        vtpm_ops_start(w, dom, inst->secret, &ignore);
        goto out;
    }
    vtpm_inject("rebuild.after_define");
    if ((rc = vtpm_ops_start(w, ndom, inst->secret, err)) < 0)
        goto out;
    /* Only once the new TPM runs: until then the state set aside is what
     * tells a retry (after libvirtd failed the start) that the TPM is
     * being replaced, not kept. */
    if (!same && (rc = vtpm_fs_rmtree(replaced, err)) < 0)
        goto out;
reply:
    vtpm_ops_pack_domain_result(result, w, inst->uuid, &d, state);
    rc = 0;
out:
    vtpm_domxml_meta_clear(&dm);
    return rc;
}

/* ---- rekey --------------------------------------------------------------------- */
/*
 * Re-encrypt a TPM state under a new key (docs/security.md, Rekey).  The
 * new state is built and verified in <state root>/.<uuid>.rekey/new while
 * the old one stays in place; one renameat2(RENAME_EXCHANGE) swaps it in,
 * and only then is the new key stored (host: the libvirt secret's value;
 * deployment: the wrapped secret in the domain's metadata; user: nowhere).
 * Between the swap and the key update the old state waits in
 * .<uuid>.rekey/new under the old key.  A rekey that finds that
 * directory (a crash, a redelivery) settles it by trying keys: the stored
 * key opens the state dir -> the update happened, drop the leftover; it
 * opens the leftover -> swap back, the old state and key belong together.
 */

/* libvirt's ownership of a state dir: <uuid>/ root 0711, the rest swtpm's,
 * 0700 / 0600. */
static int
rekey_own(vtpm_worker *w, const char *dir, vtpm_version version, vtpm_error *err)
{
    g_autofree char *sub = g_build_filename(dir, vtpm_rekey_subdir(version), NULL);
    g_autoptr(GDir) d = NULL;
    const char *name;
    int uid, gid, rc;

    if ((rc = swtpm_ids(w, &uid, &gid, err)) < 0)
        return rc;
    if (chmod(dir, 0711) < 0 || chown(sub, uid, gid) < 0 || chmod(sub, 0700) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: setting ownership of %s: %s",
                              dir, g_strerror(errno));
    if (!(d = g_dir_open(sub, 0, NULL)))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: reading %s", sub);
    while ((name = g_dir_read_name(d))) {
        g_autofree char *f = g_build_filename(sub, name, NULL);

        if (lchown(f, uid, gid) < 0 || chmod(f, 0600) < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: setting ownership of %s: %s",
                                  f, g_strerror(errno));
    }
    return 0;
}

static int
rekey_swap(vtpm_worker *w, const char *a, const char *b, vtpm_error *err)
{
    if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: swapping %s and %s: %s", a, b,
                              g_strerror(errno));
    return vtpm_fs_sync_dir(w->cfg->libvirt.state_dir, err);
}

/* The key the state is encrypted under now, as this host stores it (or
 * as the caller gave it, in user mode). */
static int
rekey_current_key(vtpm_worker *w, virConnectPtr conn, const char *uuid,
                  const vtpm_domxml_meta *m, GBytes *user_secret, GBytes **out, vtpm_error *err)
{
    switch (m->tpm.secret_security) {
    case VTPM_SECRET_USER:
        *out = g_bytes_ref(user_secret);
        return 0;
    case VTPM_SECRET_HOST:
        return vtpm_secret_get(conn, w->cfg->worker.host, uuid, out, err);
    default:
        if (!m->wrapped_secret)
            return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                  "the TPM of instance %s has secret security 'deployment' but "
                                  "no wrapped secret",
                                  uuid);
        return vtpm_keyring_unwrap(w->keys, uuid, m->wrapped_secret, out, NULL, err);
    }
}

/* Store @key as the instance's key the mode's way (nothing in user mode). */
static int
rekey_store_key(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
                const vtpm_domxml_meta *m, GBytes *key, vtpm_error *err)
{
    g_autofree char *wrapped = NULL, *md = NULL;
    g_autoptr(GString) x = NULL;
    int rc;

    if (m->tpm.secret_security == VTPM_SECRET_USER)
        return 0;
    if (m->tpm.secret_security == VTPM_SECRET_HOST)
        return vtpm_secret_set_value(conn, uuid, key, err);
    if ((rc = vtpm_keyring_wrap(w->keys, uuid, key, &wrapped, err)) < 0 ||
        (rc = vtpm_virt_get_metadata(w->virt, dom, &md, err)) < 0)
        return rc;
    /* Only the wrapped secret changes; the rest of the element (spec
     * digest, flavor, image) stays as spawn wrote it.  A wrapped secret is
     * random base64: it occurs once. */
    x = g_string_new(md);
    if (!md || g_string_replace(x, m->wrapped_secret, wrapped, 0) != 1)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "rekey: the metadata of instance %s does not hold its wrapped "
                              "secret once",
                              uuid);
    if (VTPM_LV(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, x->str,
                                     VTPM_DOMXML_NS_PREFIX, VTPM_DOMXML_NS,
                                     VIR_DOMAIN_AFFECT_CONFIG)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "storing the new wrapped secret");
    return 0;
}

/*
 * Bring an interrupted earlier rekey to a consistent end, then read the
 * permanent state with @key into *blob.  *done: a user-mode rekey to
 * @new_secret already happened (a redelivery).
 */
static int
rekey_settle(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m, const char *state_dir,
             const char *work, GBytes *key, GBytes *new_secret, GBytes **blob, bool *done,
             vtpm_error *err)
{
    g_autofree char *scratch = g_build_filename(work, "scratch", NULL);
    g_autofree char *fresh = g_build_filename(work, "new", NULL);
    vtpm_version v = m->tpm.version;
    vtpm_error probe = { 0 };
    int rc;

    *done = false;
    if ((rc = vtpm_fs_mkdirs(scratch, 0700, err)) < 0)
        return rc;
    rc = vtpm_rekey_export(state_dir, v, key, scratch, blob, &probe);
    if (rc == 0)
        return vtpm_fs_rmtree(fresh, err);
    if (probe.code != VTPM_FAULT_SECRET_INVALID) {
        *err = probe;
        return rc;
    }
    if (new_secret && vtpm_rekey_export(state_dir, v, new_secret, scratch, blob, &probe) == 0) {
        *done = true;
        return vtpm_fs_rmtree(work, err);
    }
    /* Only where the key is stored: that it still opens the old state
     * proves the new key was never stored, so the new state never ran.  In
     * user mode the swap is the commit; the caller may have started the
     * new state since, and swapping back would roll the TPM back. */
    if (m->tpm.secret_security != VTPM_SECRET_USER && vtpm_fs_is_dir(fresh) &&
        vtpm_rekey_export(fresh, v, key, scratch, blob, &probe) == 0) {
        g_warning("instance %s: an interrupted rekey swapped in a state whose key was never "
                  "stored; swapping the old state back",
                  uuid);
        if ((rc = rekey_swap(w, fresh, state_dir, err)) < 0)
            return rc;
        return vtpm_fs_rmtree(fresh, err);
    }
    return vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                          "the %s does not decrypt the TPM state of instance %s; the state is "
                          "left untouched",
                          m->tpm.secret_security == VTPM_SECRET_USER ? "secret given"
                                                                     : "TPM secret on this host",
                          uuid);
}

static int
rekey_check_args(const char *uuid, const vtpm_domxml_meta *m, GBytes *secret, GBytes *new_secret,
                 vtpm_error *err)
{
    const char *mode = vtpm_secret_security_str(m->tpm.secret_security);

    if (m->tpm.version == VTPM_VERSION_NONE)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "instance %s has no vTPM: there is no state to rekey", uuid);
    if (!m->encrypted)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "the TPM state of instance %s is not encrypted (a plaintext TPM); "
                              "rekey only re-encrypts an encrypted state",
                              uuid);
    if (m->tpm.secret_security != VTPM_SECRET_USER) {
        if (new_secret)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "args.new_secret: not allowed for instance %s in secret "
                                  "security mode '%s': vtpmd makes and stores the new key itself",
                                  uuid, mode);
        return 0;
    }
    if (!new_secret)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "rekey of instance %s (secret security 'user'): args.new_secret, "
                              "the new passphrase, is required",
                              uuid);
    if (!secret)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "rekey of instance %s (secret security 'user'): "
                              "args.instance.vtpm.secret, the current passphrase, is required",
                              uuid);
    return 0;
}

/* Stop the running domain for the rekey.  The mark @again (in the work
 * dir) stays until it runs again, so that a rekey retried after the start
 * failed (libvirtd died, vtpmd crashed) starts it. */
static int
rekey_stop(vtpm_worker *w, virDomainPtr dom, const char *again, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_fs_write_atomic(again, "", 0, 0600, err)) < 0)
        return rc;
    return vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err);
}

/* After a failed rekey nothing changed: the domain runs again as it did,
 * on the old key. */
static void
rekey_restart_old(vtpm_worker *w, virDomainPtr dom, GBytes *secret, const char *uuid,
                  const char *again)
{
    vtpm_error e = { 0 };

    if (vtpm_ops_start(w, dom, secret, &e) < 0)
        g_warning("instance %s: restart after a failed rekey: %s", uuid, e.message);
    else
        (void)unlink(again);
}

/* Best effort: a leftover is removed by the next rekey or destroy. */
static void
rekey_drop_work(const char *uuid, const char *work)
{
    vtpm_error e = { 0 };

    if (vtpm_fs_rmtree(work, &e) < 0)
        g_warning("instance %s: rekey: removing %s: %s", uuid, work, e.message);
}

/* Re-encrypt the stopped state in @state_dir and commit it (swap, key). */
static int
rekey_commit(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
             const vtpm_domxml_meta *m, const char *state_dir, const char *work, GBytes *blob,
             GBytes *old_key, GBytes *new_key, vtpm_error *err)
{
    g_autofree char *scratch = g_build_filename(work, "scratch", NULL);
    g_autofree char *fresh = g_build_filename(work, "new", NULL);
    int rc;

    if ((rc = vtpm_fs_rmtree(fresh, err)) < 0 || (rc = vtpm_fs_mkdirs(fresh, 0711, err)) < 0 ||
        (rc = vtpm_rekey_write(fresh, m->tpm.version, blob, old_key, new_key, scratch, err)) < 0 ||
        (rc = rekey_own(w, fresh, m->tpm.version, err)) < 0)
        return rc;
    vtpm_inject("rekey.before_swap");
    if ((rc = rekey_swap(w, fresh, state_dir, err)) < 0)
        return rc;
    vtpm_inject("rekey.before_key");
    if ((rc = rekey_store_key(w, conn, dom, uuid, m, new_key, err)) < 0) {
        vtpm_error e = { 0 };

        /* The old key is still the stored one: the old state goes back. */
        if (rekey_swap(w, fresh, state_dir, &e) < 0)
            g_warning("instance %s: rekey: swapping the old state back: %s (a later rekey "
                      "settles it)",
                      uuid, e.message);
        return rc;
    }
    vtpm_inject("rekey.before_cleanup");
    {
        vtpm_error e = { 0 };

        /* Done: the new state and key are in place.  The leftover holds
         * the old state under the old key; a later rekey or destroy
         * removes it.  The work dir itself goes after the restart. */
        if (vtpm_fs_rmtree(fresh, &e) < 0 || vtpm_fs_rmtree(scratch, &e) < 0)
            g_warning("instance %s: rekey: removing %s: %s", uuid, work, e.message);
    }
    return 0;
}

int
vtpm_op_rekey(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(GBytes) new_secret = NULL, secret = NULL, old_key = NULL, new_key = NULL;
    g_autoptr(GBytes) blob = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *state_dir = NULL, *work = NULL, *kept = NULL, *again = NULL;
    vtpm_domxml_meta m = { 0 };
    bool running = false, done = false, rerun;
    char uuid[37];
    int active, rc;

    if ((rc = arg_uuid(req, uuid, err)) < 0 || (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = vtpm_proto_get_bin(&req->args, "args", "new_secret", false, VTPM_PROTO_MAX_FIELD,
                                 &new_secret, err)) < 0)
        return rc;
    if (new_secret) {
        /* The request body is wiped when freed; so is this copy. */
        gsize len = 0;
        const void *d = g_bytes_get_data(new_secret, &len);
        GBytes *wiped;

        if (len == 0)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "args.new_secret: must not be empty");
        wiped = vtpm_bytes_new_wiped(g_memdup2(d, len), len);
        g_bytes_unref(new_secret);
        new_secret = wiped;
    }
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    if ((rc = find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0 ||
        (rc = rekey_check_args(uuid, &m, secret, new_secret, err)) < 0)
        goto out;
    /* A kept copy (a migration or resize from here, not yet confirmed) is
     * encrypted under the old key, and a revert would restore it. */
    kept = kept_path(w, uuid);
    if (access(kept, F_OK) == 0) {
        rc = vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                            "instance %s has a migration or resize from host %s that is not "
                            "confirmed yet; confirm or revert it before a rekey",
                            uuid, w->cfg->worker.host);
        goto out;
    }
    state_dir = vtpm_ops_state_dir(w, uuid);
    if (!vtpm_fs_is_dir(state_dir)) {
        rc = vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                            "instance %s has no TPM state on host %s yet (never started): "
                            "there is nothing to re-encrypt",
                            uuid, w->cfg->worker.host);
        goto out;
    }
    if ((rc = rekey_current_key(w, conn, uuid, &m, secret, &old_key, err)) < 0)
        goto out;
    if ((active = VTPM_LV(virDomainIsActive(dom))) < 0) {
        rc = vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
        goto out;
    }
    work = vtpm_ops_rekey_dir(w, uuid);
    if ((rc = vtpm_fs_mkdirs(work, 0700, err)) < 0)
        goto out;
    /* An earlier rekey stopped the running domain and could not start it
     * again: this one does (rekey_stop). */
    again = g_build_filename(work, "restart", NULL);
    rerun = !active && access(again, F_OK) == 0;
    /* Checked while the domain still runs: a wrong key stops nothing.
     * swtpm replaces its state file by rename, so the copy is whole. */
    if ((rc = rekey_settle(w, uuid, &m, state_dir, work, old_key, new_secret, &blob, &done,
                           err)) < 0)
        goto out;
    /* A redelivered rekey that already happened leaves the domain as it is. */
    if (active && !done) {
        if ((rc = rekey_stop(w, dom, again, err)) < 0)
            goto out;
        running = true;
    }
    if (!done) {
        g_autofree char *scratch = g_build_filename(work, "scratch", NULL);

        /* The state as the stopped swtpm left it. */
        if (running) {
            g_clear_pointer(&blob, g_bytes_unref);
            if ((rc = vtpm_rekey_export(state_dir, m.tpm.version, old_key, scratch, &blob,
                                        err)) < 0)
                goto restart;
        }
        if (new_secret)
            new_key = g_bytes_ref(new_secret);
        else if ((rc = vtpm_keyring_random_secret(&new_key, err)) < 0)
            goto restart;
        rc = rekey_commit(w, conn, dom, uuid, &m, state_dir, work, blob, old_key, new_key, err);
        if (rc < 0)
            goto restart;
        g_message("instance %s: TPM state re-encrypted under a new key (secret security '%s')",
                  uuid, vtpm_secret_security_str(m.tpm.secret_security));
    }
    if ((running || rerun) && (rc = vtpm_ops_start(w, dom, new_secret, err)) < 0) {
        vtpm_error_prefix(err, "instance %s was rekeyed, but restarting it failed", uuid);
        goto out;
    }
    rekey_drop_work(uuid, work);
    msgpack_pack_map(result, 3);
    vtpm_pack_kv_bool(result, "rekeyed", true);
    vtpm_pack_kv_str(result, "secret_security", vtpm_secret_security_str(m.tpm.secret_security));
    vtpm_pack_kv_bool(result, "restarted", running || rerun);
    rc = 0;
    goto out;
restart:
    if (running || rerun)
        rekey_restart_old(w, dom, secret, uuid, again);
out:
    vtpm_domxml_meta_clear(&m);
    return rc;
}
