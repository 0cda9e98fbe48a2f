/* SPDX-License-Identifier: Apache-2.0 */
/* The instance basics (ops/basics.h). */
#include <string.h>
#include <unistd.h>

#include "checkpointer.h"
#include "fsutil.h"
#include "inject.h"
#include "ops/basics.h"
#include "ops/checkpoint.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/manufacture.h"
#include "ops/nvram.h"
#include "ops/state.h"
#include "secret.h"
#include "store.h"

int
vtpm_op_get_capabilities(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                         vtpm_error *err)
{
    g_autoptr(vtpm_caps_snapshot) snap = vtpm_worker_caps(w);

    /* Served from the snapshot: a scheduler may poll this often, and a
     * probe costs libvirt round trips. */
    return msgpack_sbuffer_write(result->data, g_bytes_get_data(snap->packed, NULL),
                                 g_bytes_get_size(snap->packed)) == 0
               ? 0
               : vtpm_error_set(err, VTPM_FAULT_INTERNAL, "out of memory");
}

/* Undo a host secret that vtpm_custody_plan_key created for a failed spawn. */
static void
drop_new_secret(vtpm_worker *w, virConnectPtr conn, const char *uuid, const vtpm_ops_domain *d)
{
    vtpm_error e = { 0 };

    if (d->new_host_secret && vtpm_secret_undefine(conn, uuid, &e) < 0)
        g_warning("instance %s: cleanup after failed spawn: %s", uuid, e.message);
}

/* A redelivery, or a retry after a crash: same spec means done. */
static int
spawn_again(vtpm_worker *w, virDomainPtr dom, const vtpm_instance *inst,
            const vtpm_ops_domain *d, bool power_on, vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) meta = { 0 };
    int rc;

    if ((rc = vtpm_ops_get_meta(w, dom, &meta, err)) < 0)
        return rc;
    /* Final: no retry of this request can make the specs agree. */
    if (!meta.spec_digest || strcmp(meta.spec_digest, d->digest) != 0)
        return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                    "instance %s already exists on host %s with a different "
                                    "spec; destroy or rebuild it instead",
                                    inst->uuid, w->cfg->worker.host);
    if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
        return rc;
    return 0;
}

/* Undo what a failed spawn made: a state it created (vtpmd's or
 * libvirt's) with its record, a host secret it defined. */
static void
undo_state(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
           const vtpm_ops_domain *d, bool state_existed)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, inst->uuid);
    vtpm_error cleanup = { 0 };

    if (!state_existed) {
        if (vtpm_fs_rmtree(state_dir, &cleanup) < 0)
            g_warning("instance %s: cleanup after failed spawn: %s", inst->uuid,
                      cleanup.message);
        vtpm_custody_drop_kept(w, inst->uuid);
    }
    drop_new_secret(w, conn, inst->uuid, d);
}

/* Undo a spawn whose start failed: the domain, and undo_state. */
static void
undo_spawn(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const vtpm_instance *inst,
           const vtpm_ops_domain *d, bool state_existed)
{
    vtpm_error cleanup = { 0 };

    if (vtpm_virt_undefine(w->virt, dom, state_existed, &cleanup) < 0)
        g_warning("instance %s: cleanup after failed start: %s", inst->uuid, cleanup.message);
    undo_state(w, conn, inst, d, state_existed);
}

static int
spawn_new(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst, vtpm_ops_domain *d,
          bool power_on, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, inst->uuid);
    g_auto(vtpm_domxml_meta) kept = { 0 };
    g_autoptr(virDomain) dom = NULL;
    bool state_existed, have_kept;
    int rc;

    /* State kept by an earlier destroy(keep_vtpm) is adopted by the new
     * domain; it must survive a failed start just as it was. */
    state_existed = vtpm_fs_is_dir(state_dir);
    /* ... and so is how it was keyed, when destroy recorded that. */
    have_kept = state_existed && vtpm_custody_read_kept(w, inst->uuid, &d->dev, &kept) == 0;
    if ((rc = vtpm_custody_plan_key(w, conn, inst, d, have_kept ? &kept : NULL, err)) < 0)
        return rc;
    /* With the deployment's EK CA the TPM is made now, so that the
     * definition carries its identity; libvirt then finds a state. */
    if ((!state_existed && (rc = vtpm_manufacture_fresh(w, conn, inst, d, true, err)) < 0) ||
        (rc = vtpm_ops_define(w, conn, d->xml, &dom, err)) < 0) {
        undo_state(w, conn, inst, d, state_existed);
        return rc;
    }
    if (power_on && (rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0) {
        undo_spawn(w, conn, dom, inst, d, state_existed);
        return rc;
    }
    vtpm_custody_drop_kept(w, inst->uuid);
    return 0;
}

int
vtpm_op_spawn(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool power_on = true;
    int rc;

    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "power_on", false, true, &power_on,
                                  err)) < 0 ||
        (rc = vtpm_ops_prepare(w, inst, &d, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, inst->uuid, &dom, err)) < 0)
        return rc;
    if (dom)
        rc = spawn_again(w, dom, inst, &d, power_on, err);
    else
        rc = spawn_new(w, conn, inst, &d, power_on, err);
    if (rc < 0)
        return rc;
    vtpm_ops_pack_domain_result(result, w, inst->uuid, &d);
    return 0;
}

/* Only the UUID matters to a destroy: a caller that lost the rest of the
 * spec must still be able to clean up. */
static int
destroy_args(const vtpm_request *req, char uuid[37], bool *keep, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "keep_vtpm", false, false, keep, err)) < 0)
        return rc;
    return 0;
}

/* Stop and undefine the domain; with @keep the state stays, and with
 * @record how it is keyed is written next to it for a later spawn. */
static int
destroy_domain(vtpm_worker *w, virDomainPtr dom, const char *uuid, bool keep, bool record,
               vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) m = { 0 };
    int rc;

    if ((rc = vtpm_virt_stop(w->virt, dom, err)) < 0)
        return rc;
    if (record && ((rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0 ||
                   (m.tpm.version != VTPM_VERSION_NONE &&
                    (rc = vtpm_custody_write_kept(w, uuid, &m, err)) < 0)))
        return rc;
    if ((rc = vtpm_virt_undefine(w->virt, dom, keep, err)) < 0)
        return rc;
    vtpm_inject("destroy.after_undefine");
    return 0;
}

/* Everything of the instance on this host besides its domain. */
static int
destroy_rest(vtpm_worker *w, virConnectPtr conn, const char *uuid, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, uuid);
    g_autofree char *rekey = vtpm_ops_rekey_dir(w, uuid);
    g_autofree char *incoming = vtpm_state_volume_name(uuid);
    int rc;

    /* The TPM's key goes with its state: a host-mode secret, or an
     * ephemeral one a crash left behind.  Except while this host holds a
     * kept copy of a migration or resize from here: a revert restores
     * that copy, which needs the key (confirm_migration removes both). */
    if (!vtpm_state_has_kept(w, uuid)) {
        if ((rc = vtpm_secret_undefine(conn, uuid, err)) < 0)
            return rc;
        /* Nothing of the instance stays behind on this host: the
         * record would only grow with every instance ever seen. */
        vtpm_generation_forget(w, uuid);
    }
    vtpm_custody_drop_kept(w, uuid);
    /* What an evacuation to here recorded, and a fence of a stale copy. */
    vtpm_ckpt_evacuation_forget(w, uuid);
    vtpm_generation_unfence(w, uuid);
    /* libvirt deletes the state only of domains it started at least once;
     * leftovers of a failed or interrupted operation go too, and what an
     * interrupted rekey left (docs/security.md, Rekey). */
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0 || (rc = vtpm_fs_rmtree(replaced, err)) < 0 ||
        (rc = vtpm_fs_rmtree(rekey, err)) < 0)
        return rc;
    /* On a migration destination, a revert starts with destroy: the
     * incoming state must not outlive it. */
    if ((rc = vtpm_store_delete(conn, w->cfg->store.incoming_pool, incoming, err)) < 0)
        return rc;
    vtpm_ops_forget_console(w, uuid);
    return 0;
}

/* Whether the instance has a UEFI variable store: its domain says UEFI
 * (the store may be libvirt's), or one is in its state dir (left by an
 * interrupted operation). */
static int
had_store(vtpm_worker *w, virDomainPtr dom, const char *state_dir, bool *out, vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) m = { 0 };
    int rc;

    if (dom && (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0)
        return rc;
    *out = m.firmware.type == VTPM_FIRMWARE_UEFI || vtpm_nvram_in(state_dir);
    return 0;
}

static vtpm_ops_outcome
destroyed(bool had, bool keep)
{
    return !had ? VTPM_OPS_OUTCOME_NONE : keep ? VTPM_OPS_OUTCOME_KEPT : VTPM_OPS_OUTCOME_DELETED;
}

int
vtpm_op_destroy(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autofree char *state_dir = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool keep = false, had_state, had_nvram = false;
    char uuid[37];
    int rc;

    if ((rc = destroy_args(req, uuid, &keep, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        return rc;
    state_dir = vtpm_ops_state_dir(w, uuid);
    had_state = vtpm_fs_is_dir(state_dir);
    if ((rc = had_store(w, dom, state_dir, &had_nvram, err)) < 0 ||
        (dom && (rc = destroy_domain(w, dom, uuid, keep, keep && had_state, err)) < 0))
        return rc;
    if (!keep && (rc = destroy_rest(w, conn, uuid, err)) < 0)
        return rc;
    /* The checkpoints go with the TPM, unless another host owns them. */
    if (!keep && had_state)
        vtpm_checkpointer_drop(w->ckpt, uuid);
    msgpack_pack_map(result, 3);
    vtpm_pack_kv_bool(result, "destroyed", dom != NULL);
    vtpm_pack_kv_str(result, "vtpm_state", vtpm_ops_outcome_str(destroyed(had_state, keep)));
    vtpm_pack_kv_str(result, "nvram_state", vtpm_ops_outcome_str(destroyed(had_nvram, keep)));
    return 0;
}
