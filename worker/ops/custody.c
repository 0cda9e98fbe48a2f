/* SPDX-License-Identifier: Apache-2.0 */
/* Key custody (ops/custody.h). */
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "keywrap.h"
#include "ops/custody.h"
#include "secret.h"

int
vtpm_custody_plan_key(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
                      vtpm_ops_domain *d, const vtpm_domxml_meta *cont, vtpm_error *err)
{
    g_autoptr(GBytes) secret = NULL;
    bool exists = false, current = true;
    int rc;

    if (d->dev.version == VTPM_VERSION_NONE)
        return 0;
    d->new_host_secret = false;
    g_clear_pointer(&d->wrapped_secret, g_free);
    /* A continued TPM keeps its EKs, so its identity record goes on; a
     * new one has none until vtpmd makes it (ops/manufacture.h). */
    g_free(d->identity);
    d->identity = cont ? g_strdup(cont->identity) : NULL;
    switch (d->dev.secret_security) {
    case VTPM_SECRET_USER:
        if (cont) {
            d->encrypted = cont->encrypted;
        } else if (inst->secret) {
            d->encrypted = true;
        } else if (w->cfg->vtpm.allow_unencrypted) {
            d->encrypted = false;
        } else {
            return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                                  "instance %s asks for an encrypted TPM in secret security "
                                  "mode 'user' but args.instance.vtpm.secret is missing",
                                  inst->uuid);
        }
        break;
    case VTPM_SECRET_HOST:
        d->encrypted = cont ? cont->encrypted : true;
        if (!d->encrypted)
            break;
        if ((rc = vtpm_secret_exists(conn, inst->uuid, &exists, err)) < 0)
            return rc;
        if (exists)
            break;
        if (cont && cont->tpm.secret_security == VTPM_SECRET_USER && inst->secret) {
            /* user -> host (resize): the host keeps the caller's secret. */
            secret = g_bytes_ref(inst->secret);
        } else if (cont) {
            return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                                  "host %s has no TPM secret for instance %s (secret security "
                                  "'host')",
                                  w->cfg->worker.host, inst->uuid);
        } else if ((rc = vtpm_keyring_random_secret(&secret, err)) < 0) {
            return rc;
        }
        if ((rc = vtpm_secret_define(conn, inst->uuid, VTPM_SECRET_PERSISTENT, secret, err)) < 0)
            return rc;
        d->new_host_secret = true;
        break;
    case VTPM_SECRET_DEPLOYMENT:
        d->encrypted = true;
        if (cont && cont->wrapped_secret) {
            /* Proves this host holds the key before anything changes. */
            if ((rc = vtpm_keyring_unwrap(w->keys, inst->uuid, cont->wrapped_secret, &secret,
                                          &current, err)) < 0)
                return rc;
            if (current) {
                d->wrapped_secret = g_strdup(cont->wrapped_secret);
                break;
            }
        } else if (cont) {
            return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                  "the TPM of instance %s has secret security 'deployment' but "
                                  "no wrapped secret",
                                  inst->uuid);
        } else if ((rc = vtpm_keyring_random_secret(&secret, err)) < 0) {
            return rc;
        }
        if ((rc = vtpm_keyring_wrap(w->keys, inst->uuid, secret, &d->wrapped_secret, err)) < 0)
            return rc;
        break;
    default:
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown secret security %d",
                              (int)d->dev.secret_security);
    }
    return vtpm_ops_build_xml(w, inst, d, err);
}

/* destroy(keep_vtpm) keeps how the TPM state is keyed next to the kept
 * copies, so that a later spawn adopting the state can open it: the
 * domain definition that recorded it is gone. */
static char *
kept_key_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/%s.key.xml", w->cfg->store.kept_dir, uuid);
}

int
vtpm_custody_write_kept(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m,
                        vtpm_error *err)
{
    g_autofree char *path = kept_key_path(w, uuid);
    g_autofree char *head = g_markup_printf_escaped(
        "<vtpmd:instance xmlns:vtpmd='%s'><vtpmd:vtpm version='%s' model='%s' "
        "secret_security='%s' encrypted='%s' wrapped_secret='%s'",
        VTPM_DOMXML_NS, vtpm_version_str(m->tpm.version), vtpm_model_str(m->tpm.model),
        vtpm_secret_security_str(m->tpm.secret_security), m->encrypted ? "yes" : "no",
        m->wrapped_secret ? m->wrapped_secret : "");
    /* The identity record too: the TPM adopted later is the same one. */
    g_autofree char *id =
        m->identity ? g_markup_printf_escaped(" identity='%s'", m->identity) : g_strdup("");
    g_autofree char *xml = g_strconcat(head, id, "/></vtpmd:instance>\n", NULL);
    int rc;

    if ((rc = vtpm_fs_mkdirs(w->cfg->store.kept_dir, 0700, err)) < 0)
        return rc;
    return vtpm_fs_write_atomic(path, xml, strlen(xml), 0600, err);
}

/* 0 with *out filled when a record exists for the same vTPM mode. */
int
vtpm_custody_read_kept(vtpm_worker *w, const char *uuid, const vtpm_device *dev,
                       vtpm_domxml_meta *out)
{
    g_autofree char *path = kept_key_path(w, uuid);
    g_autoptr(GBytes) data = NULL;
    g_autofree char *text = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };

    if (vtpm_fs_read(path, 64 * 1024, &data, NULL) < 0)
        return -1;
    text = g_strndup(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
    if (vtpm_domxml_parse_metadata(text, &m, NULL) < 0)
        return -1;
    if (m.tpm.secret_security != dev->secret_security)
        return -1;
    if (m.wrapped_secret && !m.wrapped_secret[0])
        g_clear_pointer(&m.wrapped_secret, g_free);
    *out = m;
    m = (vtpm_domxml_meta){ 0 };
    return 0;
}

void
vtpm_custody_drop_kept(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = kept_key_path(w, uuid);

    (void)unlink(path);
}

void
vtpm_custody_archive_meta(const vtpm_archive_meta *am, vtpm_domxml_meta *out)
{
    const char *wrapped = g_hash_table_lookup(am->extra, "wrapped_secret");

    memset(out, 0, sizeof(*out));
    out->tpm.version = VTPM_VERSION_NONE;
    /* Unreadable metadata leaves *out as it is: nothing known. */
    if (am->domain_xml)
        (void)vtpm_domxml_parse_domain_metadata(am->domain_xml, out, NULL);
    /* The manifest's copy is the one the archive promises to carry. */
    if (wrapped) {
        g_free(out->wrapped_secret);
        out->wrapped_secret = g_strdup(wrapped);
    }
}

/* Secret security changes across a resize or rebuild follow Nova:
 * deployment <-> another mode is refused.  host -> user is refused too:
 * the caller does not know the host's key (rekey first, then resize). */
int
vtpm_custody_check_mode_change(vtpm_secret_security from, vtpm_secret_security to,
                               const char *uuid, vtpm_error *err)
{
    if (from == to)
        return 0;
    if (from == VTPM_SECRET_DEPLOYMENT || to == VTPM_SECRET_DEPLOYMENT ||
        (from == VTPM_SECRET_HOST && to == VTPM_SECRET_USER))
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "instance %s: the TPM secret security cannot change from '%s' "
                              "to '%s'",
                              uuid, vtpm_secret_security_str(from), vtpm_secret_security_str(to));
    return 0;
}

/* Host mode: make sure this host has the instance's secret, fetching it
 * from @origin (the host that had it: recorded as "secret_host" in the
 * archive) through [libvirt] migration_uri_template.  *fetched tells
 * whether it came from elsewhere. */
int
vtpm_custody_ensure_host_secret(vtpm_worker *w, virConnectPtr conn, const char *uuid,
                                const char *origin, bool *fetched, vtpm_error *err)
{
    g_autoptr(virConnect) oconn = NULL;
    g_autoptr(GBytes) value = NULL;
    bool exists = false;
    int rc;

    *fetched = false;
    if ((rc = vtpm_secret_exists(conn, uuid, &exists, err)) < 0)
        return rc;
    if (exists)
        return 0;
    if (!origin || strcmp(origin, w->cfg->worker.host) == 0)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "host %s has no TPM secret for instance %s and the archive names "
                              "no other host holding it",
                              w->cfg->worker.host, uuid);
    if ((rc = vtpm_ops_host_conn(w, origin, &oconn, err)) < 0 ||
        (rc = vtpm_secret_get(oconn, origin, uuid, &value, err)) < 0) {
        vtpm_error_prefix(err, "fetching the TPM secret of %s from host %s", uuid, origin);
        return rc;
    }
    if ((rc = vtpm_secret_define(conn, uuid, VTPM_SECRET_PERSISTENT, value, err)) < 0)
        return rc;
    *fetched = true;
    return 0;
}

/* After the TPM runs here, the origin's copy of a fetched host secret has
 * no state left to open: remove it (a failure only leaves a stale key). */
void
vtpm_custody_drop_origin_secret(vtpm_worker *w, const char *uuid, const char *origin)
{
    g_autoptr(virConnect) oconn = NULL;
    vtpm_error e = { 0 };

    if (vtpm_ops_host_conn(w, origin, &oconn, &e) < 0 || vtpm_secret_undefine(oconn, uuid, &e) < 0)
        g_warning("instance %s: cannot remove its TPM secret from host %s: %s", uuid, origin,
                  e.message);
}

void
vtpm_custody_key_extra(vtpm_worker *w, const vtpm_domxml_meta *dm, GHashTable *extra)
{
    if (dm->tpm.version == VTPM_VERSION_NONE || !dm->encrypted)
        return;
    if (dm->tpm.secret_security == VTPM_SECRET_HOST)
        g_hash_table_insert(extra, "secret_host", w->cfg->worker.host);
    if (dm->tpm.secret_security == VTPM_SECRET_DEPLOYMENT && dm->wrapped_secret)
        g_hash_table_insert(extra, "wrapped_secret", dm->wrapped_secret);
}
