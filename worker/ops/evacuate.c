/* SPDX-License-Identifier: Apache-2.0 */
/* evacuate (ops/evacuate.h). */
#include <string.h>

#include "fsutil.h"
#include "keywrap.h"
#include "ops/checkpoint.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/evacuate.h"
#include "ops/generation.h"
#include "ops/manufacture.h"
#include "ops/nvram.h"
#include "ops/ownership.h"
#include "ops/state.h"
#include "peer.h"
#include "secret.h"
#include "store.h"

typedef struct {
    vtpm_instance *inst;
    char *from;  /* args.from_host: the dead host */
    bool fresh;  /* a new TPM, whatever the store holds */
    bool fenced; /* the caller vouches that the old host is dead */
} evac_args;

static void
evac_args_clear(evac_args *a)
{
    g_clear_pointer(&a->inst, vtpm_instance_free);
    g_clear_pointer(&a->from, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(evac_args, evac_args_clear)

static int
evac_args_get(vtpm_worker *w, const vtpm_request *req, evac_args *a, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_proto_arg_instance(req, &a->inst, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "from_host", true, 255, &a->from, err)) < 0 ||
        (rc = vtpm_proto_check_host(a->from, "args.from_host", err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "fresh", false, false, &a->fresh, err)) < 0 ||
        (rc = vtpm_proto_get_bool(&req->args, "args", "fenced", false, false, &a->fenced, err)) < 0)
        return rc;
    if (strcmp(a->from, w->cfg->worker.host) == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.from_host: %s is this host; evacuate brings an instance here "
                              "from another, dead host",
                              a->from);
    return 0;
}

/* ---- is the old host dead? ------------------------------------------------------- */

static int
refuse_alive(const evac_args *a, const char *why, vtpm_error *err)
{
    return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                "instance %s cannot be evacuated from host %s: %s; evacuate is "
                                "for a dead host (move a live one by migration, or fence host "
                                "%s and say fenced: true)",
                                a->inst->uuid, a->from, why, a->from);
}

/* Refused (final) while the old host's vtpmd answers, or its libvirt runs
 * the domain: then the instance, TPM and all, may still be in use there. */
static int
check_source_dead(vtpm_worker *w, const evac_args *a, vtpm_error *err)
{
    g_autoptr(virConnect) oconn = NULL;
    g_autoptr(virDomain) odom = NULL;
    bool answers = false;
    int rc;

    if ((rc = vtpm_peer_answers(w->cfg, a->from, VTPM_PEER_TIMEOUT_MS, &answers, err)) < 0)
        return rc;
    if (answers)
        return refuse_alive(a, "its vtpmd answers", err);
    /* Unreachable counts as dead: that is what a dead host is.  (NULL
     * vtpm_virt: a failure there says nothing of the local libvirt.) */
    if (vtpm_ops_host_conn(w, a->from, &oconn, NULL) == 0 &&
        vtpm_virt_lookup(NULL, oconn, a->inst->uuid, &odom, NULL) == 0 && odom &&
        VTPM_LV(virDomainIsActive(odom)) != 0)
        return refuse_alive(a, "its libvirt runs the domain", err);
    return 0;
}

/* The ownership record must name the dead host (or this one, or none):
 * one naming a third host says the instance lives there now. */
static int
check_owner(vtpm_worker *w, const evac_args *a, const vtpm_owner *cur, vtpm_error *err)
{
    if (!cur->host || strcmp(cur->host, a->from) == 0 ||
        strcmp(cur->host, w->cfg->worker.host) == 0)
        return 0;
    return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                "instance %s cannot be evacuated from host %s: its ownership "
                                "record names host %s (generation %" G_GUINT64_FORMAT
                                "), where its TPM lives now",
                                a->inst->uuid, a->from, cur->host, cur->generation);
}

/* ---- the TPM ------------------------------------------------------------------------- */

/* Host mode: the key stayed on the dead host.  The checkpoint carries it
 * wrapped under the deployment key when the hosts have one. */
static int
host_key(vtpm_worker *w, virConnectPtr conn, const evac_args *a, const vtpm_archive_meta *am,
         vtpm_error *err)
{
    const char *wrapped = g_hash_table_lookup(am->extra, "wrapped_host_secret");
    g_autoptr(GBytes) value = NULL;
    bool exists = false;
    int rc;

    if ((rc = vtpm_secret_exists(conn, a->inst->uuid, &exists, err)) < 0 || exists)
        return rc;
    if (!wrapped)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "instance %s has secret security 'host' and its key stayed on host "
                              "%s; its checkpoint carries no copy (one is kept, wrapped under the "
                              "deployment key, only when the host that took it has [vtpm] "
                              "deployment_key_file): evacuate with fresh: true for a new TPM",
                              a->inst->uuid, a->from);
    if ((rc = vtpm_keyring_unwrap(w->keys, a->inst->uuid, wrapped, &value, NULL, err)) < 0)
        return rc;
    return vtpm_secret_define(conn, a->inst->uuid, VTPM_SECRET_PERSISTENT, value, err);
}

/* The checkpoint's TPM fits the instance, and its key is at hand. */
static int
plan_restore(vtpm_worker *w, virConnectPtr conn, const evac_args *a, vtpm_ops_domain *d,
             const vtpm_archive_meta *am, vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) cont = { 0 };
    int rc;

    if (g_strcmp0(am->tpm_version, vtpm_version_str(d->dev.version)) != 0 ||
        g_strcmp0(am->tpm_model, vtpm_model_str(d->dev.model)) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "the checkpoint of instance %s is TPM %s/%s but the instance asks "
                              "for %s/%s; left in the store (fresh: true gives a new TPM)",
                              a->inst->uuid, am->tpm_version, am->tpm_model,
                              vtpm_version_str(d->dev.version), vtpm_model_str(d->dev.model));
    vtpm_custody_archive_meta(am, &cont);
    if ((rc = vtpm_custody_check_mode_change(cont.tpm.secret_security, d->dev.secret_security,
                                             a->inst->uuid, err)) < 0)
        return rc;
    if (cont.encrypted && d->dev.secret_security == VTPM_SECRET_USER && !a->inst->secret)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "instance %s has an encrypted TPM in secret security mode 'user': "
                              "args.instance.vtpm.secret is required to evacuate it",
                              a->inst->uuid);
    if (cont.encrypted && d->dev.secret_security == VTPM_SECRET_HOST &&
        (rc = host_key(w, conn, a, am, err)) < 0)
        return rc;
    return vtpm_custody_plan_key(w, conn, a->inst, d, &cont, err);
}

/* The TPM from @found, or a fresh one (@found NULL). */
static int
place_tpm(vtpm_worker *w, virConnectPtr conn, const evac_args *a, vtpm_ops_domain *d,
          const vtpm_ckpt_found *found, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, a->inst->uuid);
    int rc;

    /* A new TPM, made with the deployment's EK CA when there is one (its
     * identity record then goes into the definition); a restored one keeps
     * the record its checkpoint's domain metadata carries (plan_restore). */
    if (!found) {
        if ((rc = vtpm_custody_plan_key(w, conn, a->inst, d, NULL, err)) < 0 ||
            (rc = vtpm_fs_rmtree(state_dir, err)) < 0)
            return rc;
        return vtpm_manufacture_fresh(w, conn, a->inst, d, false, err);
    }
    if ((rc = plan_restore(w, conn, a, d, &found->meta, err)) < 0 ||
        (rc = vtpm_state_restore(w, a->inst->uuid, found->archive, err)) < 0)
        return rc;
    /* A UEFI variable store in the checkpoint comes back with the TPM
     * (the same archive, the same rollback) when it serves this firmware. */
    return vtpm_nvram_settle(w, a->inst->uuid, &found->meta, d, err);
}

/* The checkpoint to restore: the newest that verifies (older ones when a
 * newer is damaged; logged), none with fresh: true. */
static int
pick(vtpm_worker *w, virConnectPtr sconn, const evac_args *a, vtpm_ckpt_found **out,
     vtpm_error *err)
{
    g_autoptr(GString) passed = g_string_new(NULL);
    int rc;

    *out = NULL;
    if (a->fresh)
        return 0;
    if ((rc = vtpm_ckpt_newest(w, sconn, a->inst->uuid, out, passed, err)) < 0)
        return rc;
    if (passed->len)
        g_warning("instance %s: checkpoints passed over, they do not verify: %s", a->inst->uuid,
                  passed->str);
    return 0;
}

/* Record the evacuation: locally a generation newer than any the fleet
 * saw (the rollback guard: nothing the dead host made may come back over
 * this TPM), and in the store this host as the owner, so that the dead
 * host, should it return, knows its copy is stale. */
static int
claim(vtpm_worker *w, virConnectPtr sconn, const char *uuid, const vtpm_owner *cur,
      const vtpm_ckpt_found *found, vtpm_error *err)
{
    uint64_t seen = MAX(cur->generation, vtpm_generation_last(w, uuid));
    uint64_t gen;
    int rc;

    if (found)
        seen = MAX(seen, found->meta.generation);
    gen = MAX((uint64_t)(g_get_real_time() / 1000), seen + 1);
    if ((rc = vtpm_generation_record(w, uuid, gen, err)) < 0)
        return rc;
    return vtpm_owner_write(w, sconn, uuid, gen, err);
}

static void
fill_record(vtpm_worker *w, const evac_args *a, const vtpm_ops_domain *d,
            const vtpm_ckpt_found *found, vtpm_ckpt_evacuation *rec)
{
    const char *by = found ? g_hash_table_lookup(found->meta.extra, "checkpoint_host") : NULL;

    rec->from_host = g_strdup(a->from);
    rec->spec_digest = g_strdup(d->digest);
    rec->restored = found != NULL;
    rec->ckpt_host = g_strdup(by ? by : "");
    rec->generation = found ? found->meta.generation : 0;
    rec->taken_ms = found ? found->meta.created_ms : 0;
    rec->evacuated_ms = g_get_real_time() / 1000;
}

/* The instance has a vTPM: its TPM from the store (or fresh), claimed. */
static int
evacuate_tpm(vtpm_worker *w, virConnectPtr conn, const evac_args *a, vtpm_ops_domain *d,
             vtpm_ckpt_evacuation *rec, vtpm_error *err)
{
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(vtpm_ckpt_found) found = NULL;
    g_auto(vtpm_owner) cur = { 0 };
    int rc;

    if ((rc = vtpm_store_open(w->virt, w->cfg->store.uri, &sconn, err)) < 0 ||
        (rc = vtpm_owner_read(w, sconn, a->inst->uuid, &cur, err)) < 0 ||
        (rc = check_owner(w, a, &cur, err)) < 0 || (rc = pick(w, sconn, a, &found, err)) < 0 ||
        (rc = place_tpm(w, conn, a, d, found, err)) < 0 ||
        (rc = claim(w, sconn, a->inst->uuid, &cur, found, err)) < 0)
        return rc;
    fill_record(w, a, d, found, rec);
    if (found)
        g_warning("instance %s evacuated from host %s: its TPM is the checkpoint of generation "
                  "%" G_GUINT64_FORMAT " taken by host %s %" G_GINT64_FORMAT " s before: what the "
                  "guest wrote to its TPM since is gone (rolled back)",
                  a->inst->uuid, a->from, rec->generation, rec->ckpt_host,
                  (rec->evacuated_ms - rec->taken_ms) / 1000);
    else
        g_warning("instance %s evacuated from host %s with a fresh TPM (%s)", a->inst->uuid,
                  a->from, a->fresh ? "fresh: true" : "no checkpoint in the store");
    return 0;
}

/* ---- the handler ----------------------------------------------------------------------- */

/* Evacuated here before (a redelivery, or a retry after a start that
 * failed): start it and answer the same. */
static int
evacuated_before(vtpm_worker *w, virDomainPtr dom, const evac_args *a, vtpm_ops_domain *d,
                 vtpm_ckpt_evacuation *rec, vtpm_error *err)
{
    if (vtpm_ckpt_evacuation_read(w, a->inst->uuid, rec) < 0 ||
        strcmp(rec->spec_digest, d->digest) != 0 || strcmp(rec->from_host, a->from) != 0)
        return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                    "instance %s already has a domain on host %s, not one "
                                    "evacuated here from host %s with this spec",
                                    a->inst->uuid, w->cfg->worker.host, a->from);
    d->nvram_state = vtpm_nvram_now(w, a->inst->uuid, d,
                                    rec->restored ? VTPM_OPS_OUTCOME_RESTORED
                                                  : VTPM_OPS_OUTCOME_FRESH);
    return vtpm_ops_start(w, dom, a->inst->secret, err);
}

static int
evacuate_domain(vtpm_worker *w, virConnectPtr conn, const evac_args *a, vtpm_ops_domain *d,
                vtpm_ckpt_evacuation *rec, vtpm_error *err)
{
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if (a->fenced)
        g_warning("instance %s: evacuated from host %s, which the caller says is fenced: not "
                  "asked whether it is alive", a->inst->uuid, a->from);
    else if ((rc = check_source_dead(w, a, err)) < 0)
        return rc;
    /* libvirt's store from the template, unless the checkpoint brings one. */
    d->nvram_state = d->fw.type == VTPM_FIRMWARE_UEFI ? VTPM_OPS_OUTCOME_FRESH
                                                      : VTPM_OPS_OUTCOME_NONE;
    if (d->dev.version == VTPM_VERSION_NONE)
        fill_record(w, a, d, NULL, rec);
    else if ((rc = evacuate_tpm(w, conn, a, d, rec, err)) < 0)
        return rc;
    if ((rc = vtpm_ckpt_evacuation_write(w, a->inst->uuid, rec, err)) < 0 ||
        (rc = vtpm_ops_define(w, conn, d->xml, &dom, err)) < 0)
        return rc;
    return vtpm_ops_start(w, dom, a->inst->secret, err);
}

/* {domain, vtpm, firmware, vtpm_state, nvram_state, identity_changed,
 *  checkpoint: nil | {taken_at, generation, age_s, host}} */
static void
pack_result(msgpack_packer *pk, vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d,
            const vtpm_ckpt_evacuation *rec)
{
    vtpm_ops_outcome o = d->dev.version == VTPM_VERSION_NONE ? VTPM_OPS_OUTCOME_NONE
                         : rec->restored                     ? VTPM_OPS_OUTCOME_RESTORED
                                                             : VTPM_OPS_OUTCOME_FRESH;

    msgpack_pack_map(pk, 7);
    vtpm_pack_kv_str(pk, "domain", d->name);
    vtpm_pack_str(pk, "vtpm");
    vtpm_ops_pack_vtpm(pk, w, uuid, &d->dev);
    vtpm_pack_str(pk, "firmware");
    vtpm_ops_pack_firmware(pk, &d->fw);
    vtpm_pack_kv_str(pk, "vtpm_state", vtpm_ops_outcome_str(o));
    vtpm_pack_kv_str(pk, "nvram_state", vtpm_ops_outcome_str(d->nvram_state));
    /* A fresh TPM has new EKs, which a tenant must learn again. */
    vtpm_pack_kv_bool(pk, "identity_changed", o == VTPM_OPS_OUTCOME_FRESH);
    vtpm_pack_str(pk, "checkpoint");
    if (o != VTPM_OPS_OUTCOME_RESTORED) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 4);
    vtpm_pack_kv_uint(pk, "taken_at", (uint64_t)MAX(rec->taken_ms, 0) / 1000);
    vtpm_pack_kv_uint(pk, "generation", rec->generation);
    vtpm_pack_kv_uint(pk, "age_s", (uint64_t)MAX(rec->evacuated_ms - rec->taken_ms, 0) / 1000);
    vtpm_pack_kv_str(pk, "host", rec->ckpt_host);
}

int
vtpm_op_evacuate(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                 vtpm_error *err)
{
    g_auto(evac_args) a = { 0 };
    g_auto(vtpm_ops_domain) d = { 0 };
    g_auto(vtpm_ckpt_evacuation) rec = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if ((rc = evac_args_get(w, req, &a, err)) < 0 ||
        (rc = vtpm_ops_prepare(w, a.inst, &d, err)) < 0)
        return rc;
    if (d.dev.version != VTPM_VERSION_NONE && !vtpm_owner_enabled(w))
        return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_OPERATION,
                              "host %s keeps no checkpoints ([store] uri and "
                              "checkpoint_interval): it cannot evacuate an instance with a vTPM",
                              w->cfg->worker.host);
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, a.inst->uuid, &dom, err)) < 0)
        return rc;
    if (dom)
        rc = evacuated_before(w, dom, &a, &d, &rec, err);
    else
        rc = evacuate_domain(w, conn, &a, &d, &rec, err);
    if (rc < 0)
        return rc;
    pack_result(result, w, a.inst->uuid, &d, &rec);
    return 0;
}
