/* SPDX-License-Identifier: Apache-2.0 */
/* rebuild (ops/rebuild.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fsutil.h"
#include "inject.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/rebuild.h"

/* Rebuilt already (redelivery).  A state set aside by that run means it
 * stopped before the new TPM ran: it is being replaced.  Dropped only
 * after the start, as in redefine. */
static int
rebuilt_before(vtpm_worker *w, virDomainPtr dom, const vtpm_instance *inst, vtpm_ops_outcome *state,
               vtpm_error *err)
{
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, inst->uuid);
    bool aside = vtpm_fs_is_dir(replaced);
    int rc;

    if ((rc = vtpm_ops_start(w, dom, inst->secret, err)) < 0)
        return rc;
    if (aside) {
        if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
            return rc;
        *state = VTPM_OPS_OUTCOME_REPLACED;
    }
    return 0;
}

/* Define the new domain for @d in place of @dom.  A changing vTPM (!@same)
 * sets the old state aside before the new definition exists, so that a
 * crash after the define cannot start the new TPM on the old state, and a
 * failed define can put it back. */
static int
redefine(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const vtpm_instance *inst,
         const vtpm_ops_domain *d, bool same, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, inst->uuid);
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, inst->uuid);
    g_autoptr(virDomain) ndom = NULL;
    vtpm_error ignore;
    int rc;

    if (!same && vtpm_fs_is_dir(state_dir)) {
        if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
            return rc;
        if (rename(state_dir, replaced) < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "setting aside %s: %s", state_dir,
                                  g_strerror(errno));
    }
    if ((rc = vtpm_ops_define(w, conn, d->xml, &ndom, err)) < 0) {
        /* The old definition is still in place; so is its state again. */
        if (!same && vtpm_fs_is_dir(replaced) && !vtpm_fs_is_dir(state_dir) &&
            rename(replaced, state_dir) < 0)
            g_warning("instance %s: cannot put %s back: %s", inst->uuid, replaced,
                      g_strerror(errno));
        vtpm_ops_start(w, dom, inst->secret, &ignore);
        return rc;
    }
    vtpm_inject("rebuild.after_define");
    if ((rc = vtpm_ops_start(w, ndom, inst->secret, err)) < 0)
        return rc;
    /* Only once the new TPM runs: until then the state set aside is what
     * tells a retry (after libvirtd failed the start) that the TPM is
     * being replaced, not kept. */
    if (!same && (rc = vtpm_fs_rmtree(replaced, err)) < 0)
        return rc;
    return 0;
}

/* The same TPM keeps its key; a new one gets a new key. */
static int
rebuild_domain(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const vtpm_instance *inst,
               vtpm_ops_domain *d, const vtpm_domxml_meta *dm, bool same, vtpm_error *err)
{
    int rc;

    if (same && d->dev.version != VTPM_VERSION_NONE &&
        (rc = vtpm_custody_check_mode_change(dm->tpm.secret_security, d->dev.secret_security,
                                             inst->uuid, err)) < 0)
        return rc;
    if ((rc = vtpm_custody_plan_key(w, conn, inst, d,
                                    same && dm->tpm.version != VTPM_VERSION_NONE ? dm : NULL,
                                    err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        return rc;
    vtpm_inject("rebuild.after_power_off");
    return redefine(w, conn, dom, inst, d, same, err);
}

int
vtpm_op_rebuild(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_auto(vtpm_domxml_meta) dm = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    vtpm_ops_outcome state;
    bool same;
    int rc;

    /* TPMUnsupported in prepare leaves the instance exactly as it was. */
    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_ops_prepare(w, inst, &d, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, inst->uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        return rc;
    /* The TPM belongs to the machine, not the disk: kept unless the vTPM
     * configuration itself changes. */
    same = dm.tpm.version == d.dev.version &&
           (d.dev.version == VTPM_VERSION_NONE || dm.tpm.model == d.dev.model);
    state = d.dev.version == VTPM_VERSION_NONE ? VTPM_OPS_OUTCOME_NONE
            : same                             ? VTPM_OPS_OUTCOME_KEPT
                                               : VTPM_OPS_OUTCOME_REPLACED;
    if (dm.spec_digest && strcmp(dm.spec_digest, d.digest) == 0)
        rc = rebuilt_before(w, dom, inst, &state, err);
    else
        rc = rebuild_domain(w, conn, dom, inst, &d, &dm, same, err);
    if (rc < 0)
        return rc;
    vtpm_ops_pack_domain_outcome(result, w, inst->uuid, &d, state);
    return 0;
}
