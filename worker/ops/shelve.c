/* SPDX-License-Identifier: Apache-2.0 */
/* shelve / unshelve (ops/shelve.h). */
#include <string.h>

#include "fsutil.h"
#include "inject.h"
#include "metrics.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/nvram.h"
#include "ops/shelve.h"
#include "ops/state.h"
#include "store.h"

static int
meta_device(const vtpm_archive_meta *m, vtpm_device *out)
{
    int v, mo, s;

    if (!vtpm_state_has_tpm(m)) {
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

/* ---- shelve ------------------------------------------------------------------ */

/* Offloaded already (redelivery): answer from the store. */
static int
shelved_before(vtpm_worker *w, virConnectPtr sconn, const char *uuid, const char *vol,
               GBytes **out, vtpm_error *err)
{
    g_autoptr(GBytes) archive = NULL;
    bool exists = false;
    int rc;

    if ((rc = vtpm_store_exists(sconn, w->cfg->store.shelve_pool, vol, &exists, err)) < 0)
        return rc;
    if (!exists)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_NOT_FOUND,
                              "instance %s has no domain on host %s and nothing shelved", uuid,
                              w->cfg->worker.host);
    if ((rc = vtpm_store_get(sconn, w->cfg->store.shelve_pool, vol, &archive, err)) < 0 ||
        (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  NULL, err)) < 0)
        return rc;
    *out = g_steal_pointer(&archive);
    return 0;
}

/* Archive the stopped state into the shelve store, and read it back and
 * check it whole before the local copy may go. */
static int
store_state(vtpm_worker *w, virConnectPtr sconn, virDomainPtr dom, const char *uuid,
            const vtpm_domxml_meta *dm, const char *vol, const char *ref, GBytes **out,
            vtpm_error *err)
{
    g_autoptr(GHashTable) extra = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(GBytes) back = NULL;
    int rc;

    /* Host mode: the key stays here; the archive says where. */
    vtpm_custody_key_extra(w, dm, extra);
    if ((rc = vtpm_state_pack(w, dom, uuid, &dm->tpm, "shelve", extra, &archive, err)) < 0 ||
        (rc = vtpm_state_ensure_pool(w, sconn, w->cfg->store.shelve_pool, err)) < 0 ||
        (rc = vtpm_store_put(sconn, w->cfg->store.shelve_pool, vol, archive, err)) < 0)
        return rc;
    vtpm_metrics_state_bytes(VTPM_METRICS_OUT, g_bytes_get_size(archive));
    if ((rc = vtpm_store_get(sconn, w->cfg->store.shelve_pool, vol, &back, err)) < 0)
        return rc;
    if (!g_bytes_equal(back, archive) ||
        vtpm_archive_verify(g_bytes_get_data(back, NULL), g_bytes_get_size(back), NULL, err) < 0)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "shelved archive %s did not read back intact; local state kept",
                              ref);
    *out = g_steal_pointer(&archive);
    return 0;
}

static int
shelve_domain(vtpm_worker *w, virConnectPtr sconn, virDomainPtr dom, const char *uuid,
              const char *vol, const char *ref, bool offload, GBytes **out, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_auto(vtpm_domxml_meta) dm = { 0 };
    int rc;

    if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        return rc;
    vtpm_inject("shelve.after_power_off");
    if (dm.tpm.version != VTPM_VERSION_NONE) {
        if ((rc = store_state(w, sconn, dom, uuid, &dm, vol, ref, out, err)) < 0)
            return rc;
        vtpm_inject("shelve.after_store");
    }
    if (!offload)
        return 0;
    if ((rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0 ||
        (rc = vtpm_fs_rmtree(state_dir, err)) < 0)
        return rc;
    vtpm_ops_forget_console(w, uuid);
    vtpm_inject("shelve.after_offload");
    return 0;
}

int
vtpm_op_shelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *vol = NULL, *ref = NULL;
    g_autoptr(GBytes) archive = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool offload = true;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "offload", false, true, &offload, err)) < 0)
        return rc;
    vol = vtpm_state_volume_name(uuid);
    ref = g_strdup_printf("%s/%s", w->cfg->store.shelve_pool, vol);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_store_open(w->virt, w->cfg->store.uri, &sconn, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        return rc;
    if (!dom)
        rc = shelved_before(w, sconn, uuid, vol, &archive, err);
    else
        rc = shelve_domain(w, sconn, dom, uuid, vol, ref, offload, &archive, err);
    if (rc < 0)
        return rc;
    msgpack_pack_map(result, 2);
    vtpm_state_pack_transfer(result, "shelved", archive, ref);
    vtpm_pack_kv_bool(result, "offloaded", offload || !dom);
    return 0;
}

/* ---- unshelve ------------------------------------------------------------------ */

typedef struct {
    vtpm_instance *inst;
    const msgpack_object *shelved; /* args.shelved, borrowed */
    bool power_on, force;
    /* Where the archive is, for an instance with a vTPM (else NULL). */
    char *ref, *pool, *vol;
} unshelve_args;

static void
unshelve_args_clear(unshelve_args *a)
{
    g_clear_pointer(&a->inst, vtpm_instance_free);
    g_clear_pointer(&a->ref, g_free);
    g_clear_pointer(&a->pool, g_free);
    g_clear_pointer(&a->vol, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(unshelve_args, unshelve_args_clear)

static int
unshelve_args_get(const vtpm_request *req, unshelve_args *a, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_proto_arg_instance(req, &a->inst, err)) < 0 ||
        (rc = vtpm_proto_get_map(&req->args, "args", "shelved", false, &a->shelved, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &a->power_on,
                                  err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "force", false, false, &a->force, err)) < 0)
        return rc;
    return 0;
}

/* args.shelved.ref (required with a vTPM): only this instance's
 * archive in the configured store, so that a ref cannot let a caller read
 * another volume. */
static int
shelved_ref(vtpm_worker *w, unshelve_args *a, vtpm_error *err)
{
    const char *pool = w->cfg->store.shelve_pool;
    const char *slash;
    int rc;

    if (!a->shelved)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.shelved: required for an instance with a vTPM");
    if ((rc = vtpm_proto_get_str(a->shelved, "args.shelved", "ref", true, 512, &a->ref, err)) < 0)
        return rc;
    slash = strchr(a->ref, '/');
    a->vol = vtpm_state_volume_name(a->inst->uuid);
    if (!slash || strncmp(a->ref, pool, slash - a->ref) != 0 ||
        strlen(pool) != (size_t)(slash - a->ref) || strcmp(slash + 1, a->vol) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "args.shelved.ref: expected %s/%s",
                              pool, a->vol);
    a->pool = g_strndup(a->ref, slash - a->ref);
    return 0;
}

/* A redelivery's nvram_state: from the shelved archive while it is still
 * in the store, else from what is in the state dir. */
static void
unshelved_nvram(vtpm_worker *w, virConnectPtr sconn, const unshelve_args *a, vtpm_ops_domain *d,
                bool exists)
{
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_archive_meta) am = { 0 };

    d->nvram_state = vtpm_nvram_now(w, a->inst->uuid, d, VTPM_OPS_OUTCOME_RESTORED);
    if (exists && vtpm_store_get(sconn, a->pool, a->vol, &archive, NULL) == 0 &&
        vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive), &am,
                            NULL) == 0)
        d->nvram_state = vtpm_nvram_outcome(&am, d);
}

/* Unshelved already here (redelivery): finish the clean-up. */
static int
unshelved_before(vtpm_worker *w, virConnectPtr sconn, virDomainPtr dom, const unshelve_args *a,
                 vtpm_ops_domain *d, bool exists, vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) dm = { 0 };
    int rc;

    if ((rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        return rc;
    if (!dm.spec_digest || strcmp(dm.spec_digest, d->digest) != 0)
        return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                    "instance %s already has a different domain on host %s",
                                    a->inst->uuid, w->cfg->worker.host);
    if (a->power_on && (rc = vtpm_ops_start(w, dom, a->inst->secret, err)) < 0)
        return rc;
    unshelved_nvram(w, sconn, a, d, exists);
    if (exists && (rc = vtpm_store_delete(sconn, a->pool, a->vol, err)) < 0)
        return rc;
    return 0;
}

/* The shelved archive @am of the instance, verified, may be restored. */
static int
check_archive(vtpm_worker *w, const unshelve_args *a, const vtpm_ops_domain *d,
              const vtpm_archive_meta *am, vtpm_device *adev, vtpm_error *err)
{
    if (strcmp(am->uuid, a->inst->uuid) != 0)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "shelved archive belongs to instance %s, not %s", am->uuid,
                              a->inst->uuid);
    if (meta_device(am, adev) < 0 || adev->version != d->dev.version ||
        adev->model != d->dev.model)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "shelved state is TPM %s/%s but the instance asks for %s/%s; "
                              "state left in the store",
                              am->tpm_version ? am->tpm_version : "none",
                              am->tpm_model ? am->tpm_model : "none",
                              vtpm_version_str(d->dev.version), vtpm_model_str(d->dev.model));
    return vtpm_generation_check(w, a->inst->uuid, am, a->force, "the shelved archive", err);
}

/* Restore the shelved state, its key first.  *origin: the host a host
 * mode secret was fetched from (NULL when none was). */
static int
restore_shelved(vtpm_worker *w, virConnectPtr conn, virConnectPtr sconn, const unshelve_args *a,
                vtpm_ops_domain *d, bool exists, char **origin, vtpm_error *err)
{
    const char *uuid = a->inst->uuid;
    g_autoptr(GBytes) archive = NULL;
    g_auto(vtpm_archive_meta) am = { 0 };
    g_auto(vtpm_domxml_meta) cont = { 0 };
    vtpm_device adev;
    bool fetched = false;
    int rc;

    if (!exists)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND, "shelved archive %s does not exist",
                              a->ref);
    if ((rc = vtpm_store_get(sconn, a->pool, a->vol, &archive, err)) < 0 ||
        (rc = vtpm_state_check_expected(a->shelved, "args.shelved", archive, err)) < 0 ||
        (rc = vtpm_archive_verify(g_bytes_get_data(archive, NULL), g_bytes_get_size(archive),
                                  &am, err)) < 0 ||
        (rc = check_archive(w, a, d, &am, &adev, err)) < 0)
        return rc;
    /* The key before the state: a refusal leaves the archive alone. */
    vtpm_custody_archive_meta(&am, &cont);
    if ((rc = vtpm_custody_check_mode_change(adev.secret_security, d->dev.secret_security, uuid,
                                             err)) < 0)
        return rc;
    /* A host key travels only from host mode; user -> host keeps the
     * caller's secret (vtpm_custody_plan_key). */
    if (d->dev.secret_security == VTPM_SECRET_HOST &&
        cont.tpm.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
        (rc = vtpm_custody_ensure_host_secret(w, conn, uuid,
                                              g_hash_table_lookup(am.extra, "secret_host"),
                                              &fetched, err)) < 0)
        return rc;
    if ((rc = vtpm_custody_plan_key(w, conn, a->inst, d, &cont, err)) < 0)
        return rc;
    if ((rc = vtpm_state_restore(w, uuid, archive, err)) < 0 ||
        (rc = vtpm_generation_record(w, uuid, am.generation, err)) < 0 ||
        (rc = vtpm_nvram_settle(w, uuid, &am, d, err)) < 0)
        return rc;
    vtpm_inject("unshelve.after_restore");
    if (fetched)
        *origin = g_strdup(g_hash_table_lookup(am.extra, "secret_host"));
    return 0;
}

static int
unshelve_domain(vtpm_worker *w, virConnectPtr conn, virConnectPtr sconn, const unshelve_args *a,
                vtpm_ops_domain *d, bool exists, vtpm_error *err)
{
    g_autofree char *origin = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    /* Without a vTPM nothing was shelved: libvirt's store on this host. */
    d->nvram_state = d->fw.type == VTPM_FIRMWARE_UEFI ? VTPM_OPS_OUTCOME_FRESH
                                                      : VTPM_OPS_OUTCOME_NONE;
    if (a->pool)
        rc = restore_shelved(w, conn, sconn, a, d, exists, &origin, err);
    else
        rc = vtpm_custody_plan_key(w, conn, a->inst, d, NULL, err);
    if (rc < 0 || (rc = vtpm_ops_define(w, conn, d->xml, &dom, err)) < 0)
        return rc;
    vtpm_inject("unshelve.after_define");
    if (a->power_on && (rc = vtpm_ops_start(w, dom, a->inst->secret, err)) < 0)
        return rc;
    vtpm_inject("unshelve.after_start");
    if (a->pool && (rc = vtpm_store_delete(sconn, a->pool, a->vol, err)) < 0)
        return rc;
    if (origin)
        vtpm_custody_drop_origin_secret(w, a->inst->uuid, origin);
    return 0;
}

int
vtpm_op_unshelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                 vtpm_error *err)
{
    g_auto(unshelve_args) a = { 0 };
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool exists = false;
    int rc;

    if ((rc = unshelve_args_get(req, &a, err)) < 0 ||
        (rc = vtpm_ops_prepare(w, a.inst, &d, err)) < 0 ||
        ((d.dev.version != VTPM_VERSION_NONE || a.shelved) &&
         (rc = shelved_ref(w, &a, err)) < 0))
        return rc;
    /* Only vTPM state is ever shelved (without a vTPM, shelve answers
     * shelved: null): unshelving without one would forget it there. */
    if (d.dev.version == VTPM_VERSION_NONE && a.shelved)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "args.shelved names the shelved vTPM state %s but the instance "
                              "asks for no vTPM; state left in the store", a.ref);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, a.inst->uuid, &dom, err)) < 0)
        return rc;
    if (a.pool && ((rc = vtpm_store_open(w->virt, w->cfg->store.uri, &sconn, err)) < 0 ||
                   (rc = vtpm_store_exists(sconn, a.pool, a.vol, &exists, err)) < 0))
        return rc;
    if (dom)
        rc = unshelved_before(w, sconn, dom, &a, &d, exists, err);
    else
        rc = unshelve_domain(w, conn, sconn, &a, &d, exists, err);
    if (rc < 0)
        return rc;
    vtpm_ops_pack_domain_outcome(result, w, a.inst->uuid, &d,
                                 a.pool ? VTPM_OPS_OUTCOME_RESTORED : VTPM_OPS_OUTCOME_NONE);
    return 0;
}
