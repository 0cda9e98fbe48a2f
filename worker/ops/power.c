/* SPDX-License-Identifier: Apache-2.0 */
/* Power handlers (ops/power.h). */
#include "ops/domain.h"
#include "ops/power.h"

int
vtpm_op_power_off(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    bool forced = false;
    char uuid[37];
    int rc;

    /* The state dir stays: libvirt only removes it on undefine. */
    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, &forced,
                                 err)) < 0)
        return rc;
    msgpack_pack_map(result, 2);
    vtpm_pack_kv_str(result, "state", "shutoff");
    vtpm_pack_kv_bool(result, "forced", forced);
    return 0;
}

int
vtpm_op_power_on(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                 vtpm_error *err)
{
    g_autoptr(GBytes) secret = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_start(w, dom, secret, err)) < 0)
        return rc;
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_str(result, "state", "running");
    return 0;
}
