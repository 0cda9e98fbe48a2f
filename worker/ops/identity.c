/* SPDX-License-Identifier: Apache-2.0 */
/* get_vtpm_identity (ops/identity.h). */
#include "identity.h"
#include "ops/domain.h"
#include "ops/identity.h"

/* The record of the domain's TPM, or why there is none. */
static int
identity_of(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m, vtpm_identity **out,
            vtpm_error *err)
{
    g_autoptr(vtpm_identity) id = NULL;
    int rc;

    if (m->tpm.version == VTPM_VERSION_NONE)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "instance %s has no vTPM on host %s", uuid, w->cfg->worker.host);
    if (!m->identity)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "the vTPM of instance %s has no identity record: libvirt made it "
                              "with a host-local EK CA ([vtpm] ek_ca_cert was not set where it "
                              "was made), whose certificates verify against nothing a tenant "
                              "knows",
                              uuid);
    if ((rc = vtpm_identity_decode(m->identity, &id, err)) < 0) {
        vtpm_error_prefix(err, "instance %s", uuid);
        return rc;
    }
    if (id->version != m->tpm.version)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "instance %s: the identity record is of a TPM %s, the vTPM is %s",
                              uuid, vtpm_version_str(id->version),
                              vtpm_version_str(m->tpm.version));
    *out = g_steal_pointer(&id);
    return 0;
}

int
vtpm_op_get_vtpm_identity(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                          vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autoptr(vtpm_identity) id = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0 ||
        (rc = identity_of(w, uuid, &m, &id, err)) < 0)
        return rc;
    vtpm_identity_pack(id, result);
    return 0;
}
