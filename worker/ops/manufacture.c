/* SPDX-License-Identifier: Apache-2.0 */
/* A new TPM made with the deployment's EK CA (ops/manufacture.h). */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "ek.h"
#include "fsutil.h"
#include "identity.h"
#include "inject.h"
#include "keywrap.h"
#include "ops/custody.h"
#include "ops/manufacture.h"
#include "secret.h"

/* The passphrase the new state is encrypted with: the one libvirt will
 * hand swtpm when it starts the domain of @d. */
static int
state_key(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst, const vtpm_ops_domain *d,
          GBytes **out, vtpm_error *err)
{
    *out = NULL;
    if (!d->encrypted)
        return 0;
    switch (d->dev.secret_security) {
    case VTPM_SECRET_USER:
        if (!inst->secret)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                                  "an encrypted new TPM for %s without a secret", inst->uuid);
        *out = g_bytes_ref(inst->secret);
        return 0;
    case VTPM_SECRET_HOST:
        return vtpm_secret_get(conn, w->cfg->worker.host, inst->uuid, out, err);
    default:
        return vtpm_keyring_unwrap(w->keys, inst->uuid, d->wrapped_secret, out, NULL, err);
    }
}

/* What a spawn retried after a crash needs to adopt the made TPM. */
static int
record_adoptable(vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d, vtpm_error *err)
{
    vtpm_domxml_meta m = { 0 };

    m.tpm = d->dev;
    m.encrypted = d->encrypted;
    m.wrapped_secret = d->wrapped_secret;
    m.identity = d->identity;
    return vtpm_custody_write_kept(w, uuid, &m, err);
}

/* Make the state in @tmp/state and move it to @final; d->identity set. */
static int
make_in(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst, vtpm_ops_domain *d,
        const char *tmp, const char *final, bool adoptable, vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(tmp, "state", NULL);
    g_autofree char *work = g_build_filename(tmp, "work", NULL);
    g_autoptr(GBytes) key = NULL;
    g_autoptr(vtpm_identity) id = NULL;
    vtpm_ek_params p = { dir, work, d->dev.version, inst->uuid, d->dev.pcr_banks, NULL, -1, -1 };
    int rc;

    if ((rc = state_key(w, conn, inst, d, &key, err)) < 0 ||
        (rc = vtpm_ops_swtpm_ids(w, &p.uid, &p.gid, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(work, 0700, err)) < 0)
        return rc;
    p.key = key;
    if ((rc = vtpm_ek_manufacture(w->ek_ca, &p, &id, err)) < 0) {
        vtpm_error_prefix(err, "making the TPM of instance %s", inst->uuid);
        return rc;
    }
    g_free(d->identity);
    d->identity = vtpm_identity_encode(id);
    if (adoptable && (rc = record_adoptable(w, inst->uuid, d, err)) < 0)
        return rc;
    if (rename(dir, final) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "moving the new TPM to %s: %s", final,
                              g_strerror(errno));
    return vtpm_fs_sync_dir(w->cfg->libvirt.state_dir, err);
}

int
vtpm_manufacture_fresh(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
                       vtpm_ops_domain *d, bool adoptable, vtpm_error *err)
{
    g_autofree char *final = vtpm_ops_state_dir(w, inst->uuid);
    g_autofree char *tmp = g_strdup_printf("%s/.%s.make", w->cfg->libvirt.state_dir, inst->uuid);
    vtpm_error ignore = { 0 };
    int rc;

    if (d->dev.version == VTPM_VERSION_NONE || !w->ek_ca)
        return 0;
    /* What an attempt killed half-way left goes first. */
    if ((rc = vtpm_fs_rmtree(tmp, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(w->cfg->libvirt.state_dir, 0711, err)) < 0)
        return rc;
    if (mkdir(tmp, 0700) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", tmp,
                              g_strerror(errno));
    rc = make_in(w, conn, inst, d, tmp, final, adoptable, err);
    /* The tools' files (certificates, logs, configuration) go; the made
     * state was moved out, or goes with them. */
    if (vtpm_fs_rmtree(tmp, &ignore) < 0)
        g_warning("instance %s: removing %s: %s", inst->uuid, tmp, ignore.message);
    if (rc < 0)
        return rc;
    g_message("instance %s: made a TPM %s with EK certificates of the deployment's CA",
              inst->uuid, vtpm_version_str(d->dev.version));
    vtpm_inject("manufacture.after_state");
    return vtpm_ops_build_xml(w, inst, d, err);
}
