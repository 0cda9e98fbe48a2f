/* SPDX-License-Identifier: Apache-2.0 */
/* shelve / unshelve (ops/shelve.h). */
#include <string.h>

#include <libvirt/virterror.h>

#include "fsutil.h"
#include "inject.h"
#include "metrics.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/shelve.h"
#include "ops/state.h"
#include "store.h"

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

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "offload", false, true, &offload, err)) < 0)
        return rc;
    vol = vtpm_state_volume_name(uuid);
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
        vtpm_custody_key_extra(w, &dm, extra);
        if ((rc = vtpm_state_pack(w, dom, uuid, &dm.tpm, "shelve", extra, &archive, err)) < 0 ||
            (rc = vtpm_state_ensure_pool(w, sconn, w->cfg->store.shelve_pool, err)) < 0 ||
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
    vtpm_state_pack_transfer(result, "shelved", archive, ref);
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
        vol = vtpm_state_volume_name(inst->uuid);
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
            (rc = vtpm_state_check_expected(shelved, "args.shelved", archive, err)) < 0 ||
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
        if ((rc = vtpm_generation_check(w, inst->uuid, &am, force, "the shelved archive", err)) < 0)
            goto out;
        /* The key before the state: a refusal leaves the archive alone. */
        vtpm_custody_archive_meta(&am, &cont);
        if ((rc = vtpm_custody_check_mode_change(adev.secret_security, d.dev.secret_security, inst->uuid,
                                    err)) < 0)
            goto out;
        if (d.dev.secret_security == VTPM_SECRET_HOST && cont.encrypted &&
            (rc = vtpm_custody_ensure_host_secret(w, conn, inst->uuid,
                                     g_hash_table_lookup(am.extra, "secret_host"), &fetched,
                                     err)) < 0)
            goto out;
        if ((rc = vtpm_custody_plan_key(w, conn, inst, &d, &cont, err)) < 0)
            goto out;
        if ((rc = vtpm_state_restore(w, inst->uuid, archive, err)) < 0 ||
            (rc = vtpm_generation_record(w, inst->uuid, am.generation, err)) < 0)
            goto out;
        vtpm_inject("unshelve.after_restore");
    } else if ((rc = vtpm_custody_plan_key(w, conn, inst, &d, NULL, err)) < 0) {
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
        vtpm_custody_drop_origin_secret(w, inst->uuid, g_hash_table_lookup(am.extra, "secret_host"));
reply:
    vtpm_ops_pack_domain_result(result, w, inst->uuid, &d, pool ? "restored" : "none");
    rc = 0;
out:
    vtpm_archive_meta_clear(&am);
    vtpm_domxml_meta_clear(&dm);
    vtpm_domxml_meta_clear(&cont);
    return rc;
}
