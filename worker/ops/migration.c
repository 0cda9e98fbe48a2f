/* SPDX-License-Identifier: Apache-2.0 */
/* Cold migration and resize (ops/migration.h). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "inject.h"
#include "metrics.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/migration.h"
#include "ops/state.h"
#include "secret.h"
#include "store.h"

/* The spec digest that a domain XML (as libvirt formats it) records in its
 * vtpmd metadata; NULL when it has none. */
static char *
xml_spec_digest(const char *xml)
{
    g_auto(vtpm_domxml_meta) m = { 0 };

    if (!xml || vtpm_domxml_parse_domain_metadata(xml, &m, NULL) < 0)
        return NULL;
    return g_steal_pointer(&m.spec_digest);
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
    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "dest_host", true, 255, &dest, err)) < 0 ||
        (rc = vtpm_proto_check_host(dest, "args.dest_host", err)) < 0)
        goto out;
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        goto out;
    if ((rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        goto out;
    vtpm_inject("migrate_disk_and_power_off.after_power_off");

    kept = vtpm_state_kept_path(w, uuid);
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
        vtpm_custody_key_extra(w, &dm, extra);
        if ((rc = vtpm_state_pack(w, dom, uuid, &dm.tpm, "migrate", extra, &archive, err)) < 0 ||
            (rc = vtpm_fs_mkdirs(w->cfg->store.kept_dir, 0700, err)) < 0 ||
            (rc = vtpm_fs_write_atomic(kept, g_bytes_get_data(archive, NULL),
                                       g_bytes_get_size(archive), 0600, err)) < 0)
            goto out;
    }
    vtpm_inject("migrate_disk_and_power_off.after_kept_copy");

    if (dm.tpm.version != VTPM_VERSION_NONE) {
        vol = vtpm_state_volume_name(uuid);
        if ((rc = vtpm_ops_host_conn(w, dest, &dconn, err)) < 0 ||
            (rc = vtpm_state_ensure_pool(w, dconn, w->cfg->store.incoming_pool, err)) < 0 ||
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
    vtpm_state_pack_transfer(result, "vtpm_transfer", dm.tpm.version != VTPM_VERSION_NONE ? archive : NULL,
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

    vol = vtpm_state_volume_name(inst->uuid);
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
            (rc = vtpm_state_check_expected(expected, "args.vtpm_transfer", archive, err)) < 0 ||
            (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                      &am, err)) < 0)
            goto out;
        if (strcmp(am.uuid, inst->uuid) != 0) {
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                "incoming archive belongs to instance %s, not %s", am.uuid,
                                inst->uuid);
            goto out;
        }
        if ((rc = vtpm_generation_check(w, inst->uuid, &am, force, "the incoming archive", err)) < 0)
            goto out;
        /* The key first: a refusal here leaves everything as it was. */
        vtpm_custody_archive_meta(&am, &cont);
        if (cont.tpm.version != VTPM_VERSION_NONE &&
            (rc = vtpm_custody_check_mode_change(cont.tpm.secret_security, d.dev.secret_security, inst->uuid,
                                    err)) < 0)
            goto out;
        if (d.dev.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
            (rc = vtpm_custody_ensure_host_secret(w, conn, inst->uuid,
                                     g_hash_table_lookup(am.extra, "secret_host"), &fetched,
                                     err)) < 0)
            goto out;
        if ((rc = vtpm_custody_plan_key(w, conn, inst, &d,
                                    cont.tpm.version != VTPM_VERSION_NONE ? &cont : NULL, err)) < 0)
            goto out;
        /* Ours before the domain exists: nothing else may hold it. */
        if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
            goto out;
        if ((rc = vtpm_state_restore(w, inst->uuid, archive, err)) < 0 ||
            (rc = vtpm_generation_record(w, inst->uuid, am.generation, err)) < 0)
            goto out;
        vtpm_inject("finish_migration.after_restore");
    } else {
        /* A fresh TPM gets a fresh key (or the host's, in host mode). */
        if ((rc = vtpm_custody_plan_key(w, conn, inst, &d, NULL, err)) < 0)
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
    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0)
        return rc;
    kept = vtpm_state_kept_path(w, uuid);
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
    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &power_on, err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &force, err)) < 0)
        return rc;
    name = vtpm_domxml_domain_name(uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    kept = vtpm_state_kept_path(w, uuid);
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
            (!vtpm_state_has_tpm(&km) || vtpm_fs_is_dir(sd))) {
            /* The old domain is defined with its state in place: the
             * destination was another host, or an earlier delivery
             * reverted and died before dropping the kept copy.  That state
             * is as new as or newer than the kept copy (the guest may have
             * run on it): never restore over it. */
            g_message("instance %s: the old domain and its state are in place; not restoring %s",
                      uuid, kept);
            if (power_on && (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
                goto out;
            state = vtpm_state_has_tpm(&km) ? "restored" : "none";
            goto drop_kept;
        }
    }
    if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
        goto out;
    if (vtpm_state_has_tpm(&km)) {
        if ((rc = vtpm_generation_check(w, uuid, &km, force, "the kept copy", err)) < 0 ||
            (rc = vtpm_state_restore(w, uuid, archive, err)) < 0)
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
