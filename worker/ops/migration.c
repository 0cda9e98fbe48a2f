/* SPDX-License-Identifier: Apache-2.0 */
/* Cold migration and resize (ops/migration.h). */
#include <string.h>

#include "fsutil.h"
#include "inject.h"
#include "metrics.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/manufacture.h"
#include "ops/migration.h"
#include "ops/nvram.h"
#include "ops/state.h"
#include "secret.h"
#include "store.h"

/* ---- migrate_disk_and_power_off (source) ------------------------------------ */

/* The kept copy of the stopped state, made once: a redelivery reuses it
 * (same bytes, same checksum). */
static int
keep_copy(vtpm_worker *w, virDomainPtr dom, const char *uuid, const char *dest,
          const vtpm_domxml_meta *dm, GBytes **out, vtpm_error *err)
{
    g_autofree char *kept = vtpm_state_kept_path(w, uuid);
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(GHashTable) extra = NULL;
    g_auto(vtpm_archive_meta) km = { 0 };
    int rc;

    if (vtpm_state_read_kept(w, uuid, &archive, NULL) == 0 &&
        vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive), &km,
                            NULL) == 0 &&
        strcmp(km.uuid, uuid) == 0 &&
        g_strcmp0(g_hash_table_lookup(km.extra, "dest_host"), dest) == 0) {
        g_message("instance %s: reusing the kept copy %s", uuid, kept);
        *out = g_steal_pointer(&archive);
        return 0;
    }
    g_clear_pointer(&archive, g_bytes_unref);
    extra = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(extra, "dest_host", (gpointer)dest);
    g_hash_table_insert(extra, "source_host", w->cfg->worker.host);
    vtpm_custody_key_extra(w, dm, extra);
    if ((rc = vtpm_state_pack(w, dom, uuid, &dm->tpm, "migrate", extra, &archive, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(w->cfg->store.kept_dir, 0700, err)) < 0 ||
        (rc = vtpm_fs_write_atomic(kept, g_bytes_get_data(archive, NULL),
                                   g_bytes_get_size(archive), 0600, err)) < 0)
        return rc;
    *out = g_steal_pointer(&archive);
    return 0;
}

/* Upload the state to @dest's incoming pool; in host mode the
 * destination gets the same key, through its own libvirt, next to the
 * state it opens. */
static int
send_state(vtpm_worker *w, virConnectPtr conn, const char *uuid, const char *dest,
           const vtpm_domxml_meta *dm, GBytes *archive, vtpm_error *err)
{
    g_autofree char *vol = vtpm_state_volume_name(uuid);
    g_autoptr(virConnect) dconn = NULL;
    g_autoptr(GBytes) value = NULL;
    int rc;

    if ((rc = vtpm_ops_host_conn(w, dest, &dconn, err)) < 0 ||
        (rc = vtpm_state_ensure_pool(w, dconn, w->cfg->store.incoming_pool, err)) < 0 ||
        (rc = vtpm_store_put(dconn, w->cfg->store.incoming_pool, vol, archive, err)) < 0) {
        vtpm_error_prefix(err, "transferring the vTPM state of %s to %s", uuid, dest);
        return rc;
    }
    vtpm_metrics_state_bytes(VTPM_METRICS_OUT, g_bytes_get_size(archive));
    if (!dm->encrypted || dm->tpm.secret_security != VTPM_SECRET_HOST ||
        strcmp(dest, w->cfg->worker.host) == 0)
        return 0;
    if ((rc = vtpm_secret_get(conn, w->cfg->worker.host, uuid, &value, err)) < 0 ||
        (rc = vtpm_secret_define(dconn, uuid, VTPM_SECRET_PERSISTENT, value, err)) < 0) {
        vtpm_error_prefix(err, "handing the TPM secret of %s to %s", uuid, dest);
        return rc;
    }
    return 0;
}

int
vtpm_op_migrate_disk_and_power_off(vtpm_worker *w, const vtpm_request *req,
                                   msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *dest = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_domxml_meta) dm = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool has_tpm;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "dest_host", true, 255, &dest, err)) < 0 ||
        (rc = vtpm_proto_check_host(dest, "args.dest_host", err)) < 0)
        return rc;
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        return rc;
    vtpm_inject("migrate_disk_and_power_off.after_power_off");
    if ((rc = keep_copy(w, dom, uuid, dest, &dm, &archive, err)) < 0)
        return rc;
    vtpm_inject("migrate_disk_and_power_off.after_kept_copy");
    has_tpm = dm.tpm.version != VTPM_VERSION_NONE;
    if (has_tpm) {
        if ((rc = send_state(w, conn, uuid, dest, &dm, archive, err)) < 0)
            return rc;
        vtpm_inject("migrate_disk_and_power_off.after_upload");
    }
    msgpack_pack_map(result, 1);
    vtpm_state_pack_transfer(result, "vtpm_transfer", has_tpm ? archive : NULL, NULL);
    return 0;
}

/* ---- finish_migration (destination) ----------------------------------------- */

typedef struct {
    vtpm_instance *inst;
    vtpm_flavor *old_flavor;
    vtpm_device old_dev;
    const msgpack_object *expected; /* args.vtpm_transfer, borrowed */
    bool power_on, force;
} finish_args;

static void
finish_args_clear(finish_args *a)
{
    g_clear_pointer(&a->inst, vtpm_instance_free);
    g_clear_pointer(&a->old_flavor, vtpm_flavor_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(finish_args, finish_args_clear)

static int
finish_args_get(const vtpm_request *req, finish_args *a, vtpm_error *err)
{
    const msgpack_object *oflo = NULL;
    int rc;

    a->power_on = true;
    if ((rc = vtpm_proto_arg_instance(req, &a->inst, err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "old_flavor", true, &oflo, err)) < 0 ||
        (rc = vtpm_proto_decode_flavor(oflo, "args.old_flavor", &a->old_flavor, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &a->power_on,
                                  err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "vtpm_transfer", false, &a->expected,
                                 err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &a->force, err)) < 0)
        return rc;
    if ((rc = vtpm_policy_resolve(a->old_flavor->extra_specs, a->inst->image->properties,
                                  &a->old_dev, err)) < 0)
        vtpm_error_prefix(err, "args.old_flavor");
    return rc;
}

/*
 * Done before (redelivery): the domain is defined with this spec, which
 * happens only after the state was restored (or dropped).  The guest
 * may run on that state already, and then it is newer than the
 * transfer volume: never stop it or restore over it, only finish.
 */
static bool
finished_before(vtpm_worker *w, virDomainPtr dom, const char *uuid, const vtpm_ops_domain *d,
                vtpm_ops_outcome outcome)
{
    g_auto(vtpm_domxml_meta) dm = { 0 };
    g_autofree char *state_dir = NULL;

    if (!dom || vtpm_ops_get_meta(w, dom, &dm, NULL) < 0 || !dm.spec_digest ||
        strcmp(dm.spec_digest, d->digest) != 0)
        return false;
    if (outcome != VTPM_OPS_OUTCOME_RESTORED)
        return true;
    state_dir = vtpm_ops_state_dir(w, uuid);
    return vtpm_fs_is_dir(state_dir);
}

/* The incoming state replaces whatever is here, its key first. */
static int
finish_restore(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const finish_args *a,
               vtpm_ops_domain *d, bool have_vol, vtpm_error *err)
{
    const char *uuid = a->inst->uuid;
    g_autofree char *vol = vtpm_state_volume_name(uuid);
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_archive_meta) am = { 0 };
    g_auto(vtpm_domxml_meta) cont = { 0 };
    bool fetched = false;
    int rc;

    if (!have_vol)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "no incoming vTPM state for %s in pool %s on host %s", uuid,
                              w->cfg->store.incoming_pool, w->cfg->worker.host);
    if ((rc = vtpm_store_get(conn, w->cfg->store.incoming_pool, vol, &archive, err)) < 0 ||
        (rc = vtpm_state_check_expected(a->expected, "args.vtpm_transfer", archive, err)) < 0 ||
        (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  &am, err)) < 0)
        return rc;
    if (strcmp(am.uuid, uuid) != 0)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "incoming archive belongs to instance %s, not %s", am.uuid, uuid);
    if ((rc = vtpm_generation_check(w, uuid, &am, a->force, "the incoming archive", err)) < 0)
        return rc;
    /* The key first: a refusal here leaves everything as it was. */
    vtpm_custody_archive_meta(&am, &cont);
    if (cont.tpm.version != VTPM_VERSION_NONE &&
        (rc = vtpm_custody_check_mode_change(cont.tpm.secret_security, d->dev.secret_security,
                                             uuid, err)) < 0)
        return rc;
    /* A host key travels only from host mode; user -> host keeps the
     * caller's secret (vtpm_custody_plan_key). */
    if (d->dev.secret_security == VTPM_SECRET_HOST &&
        cont.tpm.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
        (rc = vtpm_custody_ensure_host_secret(w, conn, uuid,
                                              g_hash_table_lookup(am.extra, "secret_host"),
                                              &fetched, err)) < 0)
        return rc;
    if ((rc = vtpm_custody_plan_key(w, conn, a->inst, d,
                                    cont.tpm.version != VTPM_VERSION_NONE ? &cont : NULL,
                                    err)) < 0)
        return rc;
    /* Ours before the domain exists: nothing else may hold it. */
    if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
        return rc;
    if ((rc = vtpm_state_restore(w, uuid, archive, err)) < 0 ||
        (rc = vtpm_generation_record(w, uuid, am.generation, err)) < 0 ||
        (rc = vtpm_nvram_settle(w, uuid, &am, d, err)) < 0)
        return rc;
    vtpm_inject("finish_migration.after_restore");
    return 0;
}

/* A fresh TPM gets a fresh key (or the host's, in host mode). */
static int
finish_fresh(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const finish_args *a,
             vtpm_ops_domain *d, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, a->inst->uuid);
    int rc;

    if ((rc = vtpm_custody_plan_key(w, conn, a->inst, d, NULL, err)) < 0)
        return rc;
    /* A resize in place leaves the old state here; the kept copy holds
     * it for a revert.  The variable store goes with the old TPM state:
     * the new TPM's PCR 7 is measured from a store of its own. */
    if (dom && (rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
        return rc;
    d->nvram_state = vtpm_nvram_now(w, a->inst->uuid, d, VTPM_OPS_OUTCOME_FRESH);
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0)
        return rc;
    return vtpm_manufacture_fresh(w, conn, a->inst, d, false, err);
}

/* The state in place, define the new domain and start it. */
static int
finish_domain(vtpm_worker *w, virConnectPtr conn, virDomainPtr old, const finish_args *a,
              vtpm_ops_domain *d, vtpm_ops_outcome outcome, bool have_vol, vtpm_error *err)
{
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if (outcome == VTPM_OPS_OUTCOME_RESTORED)
        rc = finish_restore(w, conn, old, a, d, have_vol, err);
    else
        rc = finish_fresh(w, conn, old, a, d, err);
    if (rc < 0 || (rc = vtpm_ops_define(w, conn, d->xml, &dom, err)) < 0)
        return rc;
    vtpm_inject("finish_migration.after_define");
    if (a->power_on && (rc = vtpm_ops_start(w, dom, a->inst->secret, err)) < 0)
        return rc;
    vtpm_inject("finish_migration.after_start");
    return 0;
}

/* A redelivery's nvram_state: from the incoming archive while it is still
 * there, else from what is in the state dir. */
static void
finished_nvram(vtpm_worker *w, virConnectPtr conn, const char *uuid, vtpm_ops_domain *d,
               vtpm_ops_outcome outcome, bool have_vol)
{
    g_autofree char *vol = vtpm_state_volume_name(uuid);
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_archive_meta) am = { 0 };

    d->nvram_state = vtpm_nvram_now(w, uuid, d, outcome == VTPM_OPS_OUTCOME_RESTORED
                                                    ? VTPM_OPS_OUTCOME_RESTORED
                                                    : VTPM_OPS_OUTCOME_FRESH);
    if (outcome == VTPM_OPS_OUTCOME_RESTORED && have_vol &&
        vtpm_store_get(conn, w->cfg->store.incoming_pool, vol, &archive, NULL) == 0 &&
        vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive), &am,
                            NULL) == 0)
        d->nvram_state = vtpm_nvram_outcome(&am, d);
}

int
vtpm_op_finish_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                         vtpm_error *err)
{
    g_auto(finish_args) a = { 0 };
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autofree char *vol = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    vtpm_ops_outcome outcome;
    bool have_vol = false;
    int rc;

    if ((rc = finish_args_get(req, &a, err)) < 0 || (rc = vtpm_ops_prepare(w, a.inst, &d, err)) < 0)
        return rc;
    vol = vtpm_state_volume_name(a.inst->uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_store_exists(conn, w->cfg->store.incoming_pool, vol, &have_vol, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, a.inst->uuid, &dom, err)) < 0)
        return rc;

    if (d.dev.version == VTPM_VERSION_NONE)
        outcome = VTPM_OPS_OUTCOME_NONE;
    else if (a.old_dev.version == VTPM_VERSION_NONE || a.old_dev.version != d.dev.version ||
             a.old_dev.model != d.dev.model)
        /* As Nova: a changed vTPM (or a newly requested one) starts fresh. */
        outcome = VTPM_OPS_OUTCOME_FRESH;
    else
        outcome = VTPM_OPS_OUTCOME_RESTORED;

    if (finished_before(w, dom, a.inst->uuid, &d, outcome)) {
        finished_nvram(w, conn, a.inst->uuid, &d, outcome, have_vol);
        rc = a.power_on ? vtpm_ops_start(w, dom, a.inst->secret, err) : 0;
    } else
        rc = finish_domain(w, conn, dom, &a, &d, outcome, have_vol, err);
    if (rc < 0 ||
        (have_vol && (rc = vtpm_store_delete(conn, w->cfg->store.incoming_pool, vol, err)) < 0))
        return rc;
    vtpm_ops_pack_domain_outcome(result, w, a.inst->uuid, &d, outcome);
    return 0;
}

/* ---- confirm_migration (source) --------------------------------------------- */

/* The instance moved away: nothing of it stays here. */
static int
forget_instance(vtpm_worker *w, const char *uuid, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        return rc;
    if (dom && ((rc = vtpm_virt_stop(w->virt, dom, err)) < 0 ||
                (rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0))
        return rc;
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0)
        return rc;
    vtpm_ops_forget_console(w, uuid);
    vtpm_inject("confirm_migration.after_undefine");
    /* Host mode: the destination has its own copy of the key. */
    if ((rc = vtpm_secret_undefine(conn, uuid, err)) < 0)
        return rc;
    vtpm_inject("confirm_migration.after_cleanup");
    return 0;
}

int
vtpm_op_confirm_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                          vtpm_error *err)
{
    g_autofree char *kept = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_archive_meta) km = { 0 };
    const char *dest;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0)
        return rc;
    kept = vtpm_state_kept_path(w, uuid);
    rc = vtpm_state_read_kept(w, uuid, &archive, err);
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
        return rc;
    }
    dest = g_hash_table_lookup(km.extra, "dest_host");
    /* After a resize in place the domain here is the new one: keep it. */
    if ((!dest || strcmp(dest, w->cfg->worker.host) != 0) &&
        (rc = forget_instance(w, uuid, err)) < 0)
        return rc;
    if ((rc = vtpm_state_drop_kept(w, uuid, err)) < 0)
        return rc;
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_bool(result, "confirmed", true);
    return 0;
}

/* ---- finish_revert_migration (source) --------------------------------------- */

typedef struct {
    char uuid[37];
    GBytes *secret;
    bool power_on, force;
} revert_args;

static void
revert_args_clear(revert_args *a)
{
    g_clear_pointer(&a->secret, g_bytes_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(revert_args, revert_args_clear)

/* What a revert leaves of the variable store of the old definition (@fw):
 * with a vTPM the one in the state dir, restored with the TPM state (new
 * when the kept copy held none); without, libvirt's on this host, kept
 * when the old domain stayed defined here. */
static vtpm_ops_outcome
reverted_nvram(vtpm_worker *w, const char *uuid, const vtpm_firmware *fw, bool has_tpm,
               bool dom_stayed)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);

    if (fw->type != VTPM_FIRMWARE_UEFI)
        return VTPM_OPS_OUTCOME_NONE;
    if (!has_tpm)
        return dom_stayed ? VTPM_OPS_OUTCOME_KEPT : VTPM_OPS_OUTCOME_FRESH;
    return vtpm_nvram_in(state_dir) ? VTPM_OPS_OUTCOME_RESTORED : VTPM_OPS_OUTCOME_FRESH;
}

/* The firmware of the definition in @xml (BIOS when unreadable). */
static vtpm_firmware
firmware_of(const char *xml)
{
    g_auto(vtpm_domxml_meta) m = { 0 };

    if (xml)
        (void)vtpm_domxml_parse_domain_metadata(xml, &m, NULL);
    return m.firmware;
}

/* Reverted already (redelivery): the domain is back. */
static int
reverted_before(vtpm_worker *w, virConnectPtr conn, const revert_args *a, vtpm_ops_outcome *state,
                vtpm_ops_outcome *nvram, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, a->uuid);
    g_auto(vtpm_domxml_meta) m = { 0 };
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if ((rc = vtpm_virt_lookup(w->virt, conn, a->uuid, &dom, err)) < 0)
        return rc;
    if (!dom)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "no kept copy of %s on host %s to revert to", a->uuid,
                              w->cfg->worker.host);
    if ((a->power_on && (rc = vtpm_ops_start(w, dom, a->secret, err)) < 0) ||
        (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0)
        return rc;
    *state = vtpm_fs_is_dir(state_dir) ? VTPM_OPS_OUTCOME_RESTORED : VTPM_OPS_OUTCOME_NONE;
    *nvram = reverted_nvram(w, a->uuid, &m.firmware, m.tpm.version != VTPM_VERSION_NONE, true);
    return 0;
}

/* Whether @dom is the old domain with its state in place: the destination
 * was another host, or an earlier delivery reverted and died before
 * dropping the kept copy.  That state is as new as or newer than the kept
 * copy (the guest may have run on it): never restore over it. */
static int
old_domain_in_place(vtpm_worker *w, virDomainPtr dom, const char *uuid,
                    const vtpm_archive_meta *km, bool *out, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_auto(vtpm_domxml_meta) kept = { 0 };
    g_auto(vtpm_domxml_meta) dm = { 0 };
    int rc;

    /* Unreadable: no spec digest, so not the old domain. */
    (void)vtpm_domxml_parse_domain_metadata(km->domain_xml, &kept, NULL);
    if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        return rc;
    *out = kept.spec_digest && dm.spec_digest && strcmp(kept.spec_digest, dm.spec_digest) == 0 &&
           (!vtpm_state_has_tpm(km) || vtpm_fs_is_dir(state_dir));
    return 0;
}

/* Put the kept copy's state and domain back in place of @dom (if any). */
static int
revert_restore(vtpm_worker *w, virConnectPtr conn, virDomainPtr old, const revert_args *a,
               const vtpm_archive_meta *km, GBytes *archive, vtpm_ops_outcome *state,
               vtpm_error *err)
{
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if (old && (rc = vtpm_virt_stop(w->virt, old, err)) < 0)
        return rc;
    if (vtpm_state_has_tpm(km)) {
        if ((rc = vtpm_generation_check(w, a->uuid, km, a->force, "the kept copy", err)) < 0 ||
            (rc = vtpm_state_restore(w, a->uuid, archive, err)) < 0)
            return rc;
        *state = VTPM_OPS_OUTCOME_RESTORED;
    }
    vtpm_inject("finish_revert_migration.after_restore");
    if ((rc = vtpm_ops_define(w, conn, km->domain_xml, &dom, err)) < 0)
        return rc;
    vtpm_inject("finish_revert_migration.after_define");
    if (a->power_on && (rc = vtpm_ops_start(w, dom, a->secret, err)) < 0)
        return rc;
    vtpm_inject("finish_revert_migration.after_start");
    return 0;
}

/* Revert to the kept copy @archive, then drop it. */
static int
revert(vtpm_worker *w, virConnectPtr conn, const revert_args *a, GBytes *archive,
       vtpm_ops_outcome *state, vtpm_ops_outcome *nvram, vtpm_error *err)
{
    vtpm_firmware fw;
    g_autofree char *kept = vtpm_state_kept_path(w, a->uuid);
    g_auto(vtpm_archive_meta) km = { 0 };
    g_autoptr(virDomain) dom = NULL;
    bool in_place = false;
    int rc;

    if ((rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  &km, err)) < 0) {
        vtpm_error_prefix(err, "kept copy %s", kept);
        return rc;
    }
    if (!km.domain_xml)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY, "kept copy %s has no domain XML",
                              kept);
    if ((rc = vtpm_virt_lookup(w->virt, conn, a->uuid, &dom, err)) < 0 ||
        (dom && (rc = old_domain_in_place(w, dom, a->uuid, &km, &in_place, err)) < 0))
        return rc;
    if (in_place) {
        g_message("instance %s: the old domain and its state are in place; not restoring %s",
                  a->uuid, kept);
        if (a->power_on && (rc = vtpm_ops_start(w, dom, a->secret, err)) < 0)
            return rc;
        *state = vtpm_state_has_tpm(&km) ? VTPM_OPS_OUTCOME_RESTORED : VTPM_OPS_OUTCOME_NONE;
    } else if ((rc = revert_restore(w, conn, dom, a, &km, archive, state, err)) < 0) {
        return rc;
    }
    fw = firmware_of(km.domain_xml);
    *nvram = reverted_nvram(w, a->uuid, &fw, vtpm_state_has_tpm(&km), dom != NULL);
    return vtpm_state_drop_kept(w, a->uuid, err);
}

int
vtpm_op_finish_revert_migration(vtpm_worker *w, const vtpm_request *req,
                                msgpack_packer *result, vtpm_error *err)
{
    g_auto(revert_args) a = { .power_on = true };
    g_autofree char *name = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(virConnect) conn = NULL;
    vtpm_ops_outcome state = VTPM_OPS_OUTCOME_NONE, nvram = VTPM_OPS_OUTCOME_NONE;
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, a.uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &a.power_on,
                                  err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &a.secret, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &a.force, err)) < 0)
        return rc;
    name = vtpm_domxml_domain_name(a.uuid);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    rc = vtpm_state_read_kept(w, a.uuid, &archive, err);
    if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND)
        rc = reverted_before(w, conn, &a, &state, &nvram, err);
    else if (rc == 0)
        rc = revert(w, conn, &a, archive, &state, &nvram, err);
    if (rc < 0)
        return rc;
    msgpack_pack_map(result, 3);
    vtpm_pack_kv_str(result, "domain", name);
    vtpm_pack_kv_str(result, "vtpm_state", vtpm_ops_outcome_str(state));
    vtpm_pack_kv_str(result, "nvram_state", vtpm_ops_outcome_str(nvram));
    return 0;
}
