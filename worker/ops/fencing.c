/* SPDX-License-Identifier: Apache-2.0 */
/* Stale copies of evacuated instances (ops/fencing.h). */
#include <string.h>

#include "fsutil.h"
#include "ops/checkpoint.h"
#include "ops/domain.h"
#include "ops/fencing.h"
#include "ops/generation.h"
#include "ops/ownership.h"
#include "ops/state.h"
#include "secret.h"

/* Whether @owner's libvirt has the instance's domain: the evacuation
 * happened there, not just a record of it.  Unreachable is "not yet". */
static bool
owner_confirmed(vtpm_worker *w, const char *owner, const char *uuid)
{
    g_autoptr(virConnect) oconn = NULL;
    g_autoptr(virDomain) dom = NULL;

    /* NULL vtpm_virt: a failure there says nothing of the local libvirt. */
    return vtpm_ops_host_conn(w, owner, &oconn, NULL) == 0 &&
           vtpm_virt_lookup(NULL, oconn, uuid, &dom, NULL) == 0 && dom;
}

/* Everything of the instance on this host: the stale domain (shut off),
 * its TPM state and leftovers, its console log, its host-mode key and the
 * local records.  The new owner holds the TPM now. */
static int
remove_stale(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
             vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, uuid);
    g_autofree char *rekey = vtpm_ops_rekey_dir(w, uuid);
    int rc;

    if (dom && (rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0)
        return rc;
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0 || (rc = vtpm_fs_rmtree(replaced, err)) < 0 ||
        (rc = vtpm_fs_rmtree(rekey, err)) < 0 || (rc = vtpm_secret_undefine(conn, uuid, err)) < 0)
        return rc;
    vtpm_ops_forget_console(w, uuid);
    vtpm_generation_forget(w, uuid);
    vtpm_ckpt_evacuation_forget(w, uuid);
    vtpm_generation_unfence(w, uuid);
    return 0;
}

/* The stale copy: fenced now, removed once @owner is confirmed and the
 * domain does not run. */
static int
settle_stale(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
             const vtpm_owner *cur, vtpm_fence_verdict *out, vtpm_error *err)
{
    int active = dom ? VTPM_LV(virDomainIsActive(dom)) : 0;
    int rc;

    *out = VTPM_FENCE_STALE;
    if ((rc = vtpm_generation_fence(w, uuid, cur->host, cur->generation, err)) < 0)
        return rc;
    if (active < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "reading the state of domain %s", uuid);
    if (active) {
        *out = VTPM_FENCE_RUNNING;
        return 0;
    }
    if (!owner_confirmed(w, cur->host, uuid))
        return 0;
    if ((rc = remove_stale(w, conn, dom, uuid, err)) < 0)
        return rc;
    *out = VTPM_FENCE_REMOVED;
    return 0;
}

int
vtpm_fence_reconcile(vtpm_worker *w, virConnectPtr sconn, const char *uuid,
                     vtpm_fence_verdict *out, char **owner, vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_auto(vtpm_owner) cur = { 0 };
    int rc;

    *out = VTPM_FENCE_CURRENT;
    /* A migration from here is pending: the destination owns the new
     * state, and the kept copy is what a revert needs.  Never stale. */
    if (vtpm_state_has_kept(w, uuid))
        return 0;
    if ((rc = vtpm_owner_read(w, sconn, uuid, &cur, err)) < 0)
        return rc;
    if (!vtpm_owner_moved_away(w, &cur, vtpm_generation_last(w, uuid))) {
        vtpm_generation_unfence(w, uuid);
        return 0;
    }
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0 ||
        (rc = settle_stale(w, conn, dom, uuid, &cur, out, err)) < 0)
        return rc;
    if (owner)
        *owner = g_strdup(cur.host);
    return 0;
}

/* Whether anything of @uuid is on this host besides its generation record. */
static int
still_here(vtpm_worker *w, virConnectPtr conn, const char *uuid, bool *out, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autoptr(virDomain) dom = NULL;
    int rc;

    *out = true;
    if (vtpm_fs_is_dir(state_dir) || vtpm_state_has_kept(w, uuid))
        return 0;
    if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0)
        return rc;
    *out = dom != NULL;
    return 0;
}

int
vtpm_fence_prune_generations(vtpm_worker *w, virConnectPtr sconn, unsigned *pruned,
                             vtpm_error *err)
{
    g_autoptr(GPtrArray) uuids = vtpm_generation_list(w);
    g_autoptr(virConnect) conn = NULL;
    int rc;

    *pruned = 0;
    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0)
        return rc;
    for (guint i = 0; i < uuids->len; i++) {
        const char *uuid = g_ptr_array_index(uuids, i);
        g_auto(vtpm_owner) cur = { 0 };
        bool here = true;

        if ((rc = still_here(w, conn, uuid, &here, err)) < 0 ||
            (!here && (rc = vtpm_owner_read(w, sconn, uuid, &cur, err)) < 0))
            return rc;
        /* At least as new as this host's record, and elsewhere: restoring
         * anything older than the record is refused everywhere now. */
        if (!here && cur.host && strcmp(cur.host, w->cfg->worker.host) != 0 &&
            cur.generation >= vtpm_generation_last(w, uuid)) {
            vtpm_generation_forget(w, uuid);
            (*pruned)++;
        }
    }
    return 0;
}
