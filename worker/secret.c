/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "secret.h"
#include "timing.h"
#include "vtpm/proto.h"

static int
lv_error(vtpm_error *err, const char *what, const char *uuid)
{
    return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "%s the TPM secret of %s: %s", what,
                          uuid, virGetLastErrorMessage());
}

static int
lookup(virConnectPtr conn, const char *uuid, virSecretPtr *out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virSecretPtr s = virSecretLookupByUUIDString(conn, uuid);

    if (!s) {
        const virError *e = virGetLastError();

        /* A connection without a secret driver (test:///, a hypervisor
         * that cannot encrypt) holds no secret either: a destroy there must
         * not fail on the key it never had.  Defining one still fails. */
        if (e && (e->code == VIR_ERR_NO_SECRET || e->code == VIR_ERR_NO_SUPPORT)) {
            virResetLastError();
            *out = NULL;
            return 0;
        }
        return lv_error(err, "looking up", uuid);
    }
    *out = s;
    return 0;
}

int
vtpm_secret_define(virConnectPtr conn, const char *uuid, vtpm_secret_kind kind,
                   GBytes *value, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    bool eph = kind == VTPM_SECRET_EPHEMERAL;
    /* @uuid is always a parsed, canonical UUID; escaped all the same, so
     * that no XML vtpmd writes is pasted together from raw strings. */
    g_autofree char *xml = g_markup_printf_escaped(
        "<secret ephemeral='%s' private='%s'>\n"
        "  <uuid>%s</uuid>\n"
        "  <description>vtpmd: TPM state key of instance %s</description>\n"
        "  <usage type='vtpm'><name>%s</name></usage>\n"
        "</secret>\n",
        eph ? "yes" : "no", eph ? "yes" : "no", uuid, uuid, uuid);
    virSecretPtr s = NULL, old = NULL;
    gsize len = 0;
    const unsigned char *v = g_bytes_get_data(value, &len);
    int rc;

    /* A secret of the other kind left by an earlier run (a crash between
     * define and undefine, a mode change) cannot be redefined in place:
     * libvirt refuses to change ephemeral/private of an existing secret. */
    if ((rc = lookup(conn, uuid, &old, err)) < 0)
        return rc;
    if (old) {
        if (virSecretUndefine(old) < 0) {
            virSecretFree(old);
            return lv_error(err, "replacing", uuid);
        }
        virSecretFree(old);
    }
    s = virSecretDefineXML(conn, xml, 0);
    if (!s)
        return lv_error(err, "defining", uuid);
    if (virSecretSetValue(s, v, len, 0) < 0) {
        rc = lv_error(err, "setting", uuid);
        virSecretUndefine(s);
        virSecretFree(s);
        return rc;
    }
    virSecretFree(s);
    return 0;
}

int
vtpm_secret_undefine(virConnectPtr conn, const char *uuid, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virSecretPtr s = NULL;
    int rc;

    if ((rc = lookup(conn, uuid, &s, err)) < 0)
        return rc;
    if (!s)
        return 0;
    if (virSecretUndefine(s) < 0) {
        const virError *e = virGetLastError();

        virSecretFree(s);
        /* Gone in between (another undefine): what we wanted. */
        if (e && e->code == VIR_ERR_NO_SECRET) {
            virResetLastError();
            return 0;
        }
        return lv_error(err, "undefining", uuid);
    }
    virSecretFree(s);
    return 0;
}

int
vtpm_secret_exists(virConnectPtr conn, const char *uuid, bool *out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virSecretPtr s = NULL;
    int rc = lookup(conn, uuid, &s, err);

    if (rc < 0)
        return rc;
    *out = s != NULL;
    if (s)
        virSecretFree(s);
    return 0;
}

int
vtpm_secret_get(virConnectPtr conn, const char *host, const char *uuid, GBytes **out,
                vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virSecretPtr s = NULL;
    unsigned char *v;
    size_t len = 0;
    int rc;

    if ((rc = lookup(conn, uuid, &s, err)) < 0)
        return rc;
    if (!s)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "host %s has no TPM secret for instance %s", host, uuid);
    v = virSecretGetValue(s, &len, 0);
    virSecretFree(s);
    if (!v)
        return lv_error(err, "reading", uuid);
    *out = vtpm_bytes_new_wiped(g_memdup2(v, len), len);
    explicit_bzero(v, len);
    free(v);
    return 0;
}

int
vtpm_secret_set_value(virConnectPtr conn, const char *uuid, GBytes *value, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virSecretPtr s = NULL;
    gsize len = 0;
    const unsigned char *v = g_bytes_get_data(value, &len);
    int rc;

    if ((rc = lookup(conn, uuid, &s, err)) < 0)
        return rc;
    if (!s)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED, "no TPM secret for instance %s",
                              uuid);
    rc = virSecretSetValue(s, v, len, 0) < 0 ? lv_error(err, "setting", uuid) : 0;
    virSecretFree(s);
    return rc;
}
