/* SPDX-License-Identifier: Apache-2.0 */
/* rekey (ops/rekeying.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "inject.h"
#include "keywrap.h"
#include "ops/domain.h"
#include "ops/nvram.h"
#include "ops/rekeying.h"
#include "ops/state.h"
#include "rekey.h"
#include "secret.h"

/*
 * Re-encrypt a TPM state under a new key (docs/security.md, Rekey).  The
 * new state is built and verified in <state root>/.<uuid>.rekey/new while
 * the old one stays in place; one renameat2(RENAME_EXCHANGE) swaps it in,
 * and only then is the new key stored (host: the libvirt secret's value;
 * deployment: the wrapped secret in the domain's metadata; user: nowhere).
 * Between the swap and the key update the old state waits in
 * .<uuid>.rekey/new under the old key.  A rekey that finds that
 * directory (a crash, a redelivery) settles it by trying keys: the stored
 * key opens the state dir -> the update happened, drop the leftover; it
 * opens the leftover -> swap back, the old state and key belong together.
 */

/* libvirt's ownership of a state dir: <uuid>/ root 0711, the rest swtpm's,
 * 0700 / 0600. */
static int
rekey_own(vtpm_worker *w, const char *dir, vtpm_version version, vtpm_error *err)
{
    g_autofree char *sub = g_build_filename(dir, vtpm_rekey_subdir(version), NULL);
    g_autoptr(GDir) d = NULL;
    const char *name;
    int uid, gid, rc;

    if ((rc = vtpm_ops_swtpm_ids(w, &uid, &gid, err)) < 0)
        return rc;
    if (chmod(dir, 0711) < 0 || chown(sub, uid, gid) < 0 || chmod(sub, 0700) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: setting ownership of %s: %s",
                              dir, g_strerror(errno));
    if (!(d = g_dir_open(sub, 0, NULL)))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: reading %s", sub);
    while ((name = g_dir_read_name(d))) {
        g_autofree char *f = g_build_filename(sub, name, NULL);

        if (lchown(f, uid, gid) < 0 || chmod(f, 0600) < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: setting ownership of %s: %s",
                                  f, g_strerror(errno));
    }
    return 0;
}

static int
rekey_swap(vtpm_worker *w, const char *a, const char *b, vtpm_error *err)
{
    if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: swapping %s and %s: %s", a, b,
                              g_strerror(errno));
    return vtpm_fs_sync_dir(w->cfg->libvirt.state_dir, err);
}

/* The key the state is encrypted under now, as this host stores it (or
 * as the caller gave it, in user mode). */
static int
rekey_current_key(vtpm_worker *w, virConnectPtr conn, const char *uuid,
                  const vtpm_domxml_meta *m, GBytes *user_secret, GBytes **out, vtpm_error *err)
{
    switch (m->tpm.secret_security) {
    case VTPM_SECRET_USER:
        *out = g_bytes_ref(user_secret);
        return 0;
    case VTPM_SECRET_HOST:
        return vtpm_secret_get(conn, w->cfg->worker.host, uuid, out, err);
    default:
        if (!m->wrapped_secret)
            return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                  "the TPM of instance %s has secret security 'deployment' but "
                                  "no wrapped secret",
                                  uuid);
        return vtpm_keyring_unwrap(w->keys, uuid, m->wrapped_secret, out, NULL, err);
    }
}

/* Store @key as the instance's key the mode's way (nothing in user mode). */
static int
rekey_store_key(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
                const vtpm_domxml_meta *m, GBytes *key, vtpm_error *err)
{
    g_autofree char *wrapped = NULL, *md = NULL;
    g_autoptr(GString) x = NULL;
    int rc;

    if (m->tpm.secret_security == VTPM_SECRET_USER)
        return 0;
    if (m->tpm.secret_security == VTPM_SECRET_HOST)
        return vtpm_secret_set_value(conn, uuid, key, err);
    if ((rc = vtpm_keyring_wrap(w->keys, uuid, key, &wrapped, err)) < 0 ||
        (rc = vtpm_virt_get_metadata(w->virt, dom, &md, err)) < 0)
        return rc;
    /* Only the wrapped secret changes; the rest of the element (spec
     * digest, flavor, image) stays as spawn wrote it.  A wrapped secret is
     * random base64: it occurs once. */
    x = g_string_new(md);
    if (!md || g_string_replace(x, m->wrapped_secret, wrapped, 0) != 1)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "rekey: the metadata of instance %s does not hold its wrapped "
                              "secret once",
                              uuid);
    if (VTPM_LV(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, x->str,
                                     VTPM_DOMXML_NS_PREFIX, VTPM_DOMXML_NS,
                                     VIR_DOMAIN_AFFECT_CONFIG)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "storing the new wrapped secret");
    return 0;
}

/*
 * Bring an interrupted earlier rekey to a consistent end, then read the
 * permanent state with @key into *blob.  *done: a user-mode rekey to
 * @new_secret already happened (a redelivery).
 */
static int
rekey_settle(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m, const char *state_dir,
             const char *work, GBytes *key, GBytes *new_secret, GBytes **blob, bool *done,
             vtpm_error *err)
{
    g_autofree char *scratch = g_build_filename(work, "scratch", NULL);
    g_autofree char *fresh = g_build_filename(work, "new", NULL);
    vtpm_version v = m->tpm.version;
    vtpm_error probe = { 0 };
    int rc;

    *done = false;
    if ((rc = vtpm_fs_mkdirs(scratch, 0700, err)) < 0)
        return rc;
    rc = vtpm_rekey_export(state_dir, v, key, scratch, blob, &probe);
    if (rc == 0)
        return vtpm_fs_rmtree(fresh, err);
    if (probe.code != VTPM_FAULT_SECRET_INVALID) {
        *err = probe;
        return rc;
    }
    if (new_secret && vtpm_rekey_export(state_dir, v, new_secret, scratch, blob, &probe) == 0) {
        *done = true;
        return vtpm_fs_rmtree(work, err);
    }
    /* Only where the key is stored: that it still opens the old state
     * proves the new key was never stored, so the new state never ran.  In
     * user mode the swap is the commit; the caller may have started the
     * new state since, and swapping back would roll the TPM back. */
    if (m->tpm.secret_security != VTPM_SECRET_USER && vtpm_fs_is_dir(fresh) &&
        vtpm_rekey_export(fresh, v, key, scratch, blob, &probe) == 0) {
        g_warning("instance %s: an interrupted rekey swapped in a state whose key was never "
                  "stored; swapping the old state back",
                  uuid);
        if ((rc = rekey_swap(w, fresh, state_dir, err)) < 0)
            return rc;
        return vtpm_fs_rmtree(fresh, err);
    }
    return vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                          "the %s does not decrypt the TPM state of instance %s; the state is "
                          "left untouched",
                          m->tpm.secret_security == VTPM_SECRET_USER ? "secret given"
                                                                     : "TPM secret on this host",
                          uuid);
}

static int
rekey_check_args(const char *uuid, const vtpm_domxml_meta *m, GBytes *secret, GBytes *new_secret,
                 vtpm_error *err)
{
    const char *mode = vtpm_secret_security_str(m->tpm.secret_security);

    if (m->tpm.version == VTPM_VERSION_NONE)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "instance %s has no vTPM: there is no state to rekey", uuid);
    if (!m->encrypted)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "the TPM state of instance %s is not encrypted (a plaintext TPM); "
                              "rekey only re-encrypts an encrypted state",
                              uuid);
    if (m->tpm.secret_security != VTPM_SECRET_USER) {
        if (new_secret)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "args.new_secret: not allowed for instance %s in secret "
                                  "security mode '%s': vtpmd makes and stores the new key itself",
                                  uuid, mode);
        return 0;
    }
    if (!new_secret)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "rekey of instance %s (secret security 'user'): args.new_secret, "
                              "the new passphrase, is required",
                              uuid);
    if (!secret)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "rekey of instance %s (secret security 'user'): "
                              "args.instance.vtpm.secret, the current passphrase, is required",
                              uuid);
    return 0;
}

/* Stop the running domain for the rekey.  The mark @again (in the work
 * dir) stays until it runs again, so that a rekey retried after the start
 * failed (libvirtd died, vtpmd crashed) starts it. */
static int
rekey_stop(vtpm_worker *w, virDomainPtr dom, const char *again, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_fs_write_atomic(again, "", 0, 0600, err)) < 0)
        return rc;
    return vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err);
}

/* After a failed rekey nothing changed: the domain runs again as it did,
 * on the old key. */
static void
rekey_restart_old(vtpm_worker *w, virDomainPtr dom, GBytes *secret, const char *uuid,
                  const char *again)
{
    vtpm_error e = { 0 };

    if (vtpm_ops_start(w, dom, secret, &e) < 0)
        g_warning("instance %s: restart after a failed rekey: %s", uuid, e.message);
    else
        (void)unlink(again);
}

/* Best effort: a leftover is removed by the next rekey or destroy. */
static void
rekey_drop_work(const char *uuid, const char *work)
{
    vtpm_error e = { 0 };

    if (vtpm_fs_rmtree(work, &e) < 0)
        g_warning("instance %s: rekey: removing %s: %s", uuid, work, e.message);
}

/* Re-encrypt the stopped state in @state_dir and commit it (swap, key). */
static int
rekey_commit(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
             const vtpm_domxml_meta *m, const char *state_dir, const char *work, GBytes *blob,
             GBytes *old_key, GBytes *new_key, vtpm_error *err)
{
    g_autofree char *scratch = g_build_filename(work, "scratch", NULL);
    g_autofree char *fresh = g_build_filename(work, "new", NULL);
    int rc;

    if ((rc = vtpm_fs_rmtree(fresh, err)) < 0 || (rc = vtpm_fs_mkdirs(fresh, 0711, err)) < 0 ||
        (rc = vtpm_rekey_write(fresh, m->tpm.version, blob, old_key, new_key, scratch, err)) < 0 ||
        (rc = rekey_own(w, fresh, m->tpm.version, err)) < 0 ||
        /* The variable store is not under the TPM's key: the new state
         * dir shares it (a link), and either side of the swap has it. */
        (rc = vtpm_nvram_move(state_dir, fresh, true, err)) < 0)
        return rc;
    vtpm_inject("rekey.before_swap");
    if ((rc = rekey_swap(w, fresh, state_dir, err)) < 0)
        return rc;
    vtpm_inject("rekey.before_key");
    if ((rc = rekey_store_key(w, conn, dom, uuid, m, new_key, err)) < 0) {
        vtpm_error e = { 0 };

        /* The old key is still the stored one: the old state goes back. */
        if (rekey_swap(w, fresh, state_dir, &e) < 0)
            g_warning("instance %s: rekey: swapping the old state back: %s (a later rekey "
                      "settles it)",
                      uuid, e.message);
        return rc;
    }
    vtpm_inject("rekey.before_cleanup");
    {
        vtpm_error e = { 0 };

        /* Done: the new state and key are in place.  The leftover holds
         * the old state under the old key; a later rekey or destroy
         * removes it.  The work dir itself goes after the restart. */
        if (vtpm_fs_rmtree(fresh, &e) < 0 || vtpm_fs_rmtree(scratch, &e) < 0)
            g_warning("instance %s: rekey: removing %s: %s", uuid, work, e.message);
    }
    return 0;
}

/* args.new_secret, in a copy that is wiped when freed like the request
 * body it came from; NULL when absent. */
static int
arg_new_secret(const vtpm_request *req, GBytes **out, vtpm_error *err)
{
    g_autoptr(GBytes) given = NULL;
    const void *data;
    gsize len = 0;
    int rc;

    if ((rc = vtpm_proto_get_bin(&req->args, "args", "new_secret", false, VTPM_PROTO_MAX_FIELD,
                                 &given, err)) < 0)
        return rc;
    if (!given) {
        *out = NULL;
        return 0;
    }
    data = g_bytes_get_data(given, &len);
    if (len == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "args.new_secret: must not be empty");
    *out = vtpm_bytes_new_wiped(g_memdup2(data, len), len);
    return 0;
}

/* What a rekey of the instance's state needs in place: no pending
 * migration, a state to re-encrypt. */
static int
rekey_check_host(vtpm_worker *w, const char *uuid, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);

    /* A kept copy (a migration or resize from here, not yet confirmed) is
     * encrypted under the old key, and a revert would restore it. */
    if (vtpm_state_has_kept(w, uuid))
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s has a migration or resize from host %s that is not "
                              "confirmed yet; confirm or revert it before a rekey",
                              uuid, w->cfg->worker.host);
    if (!vtpm_fs_is_dir(state_dir))
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "instance %s has no TPM state on host %s yet (never started): "
                              "there is nothing to re-encrypt",
                              uuid, w->cfg->worker.host);
    return 0;
}

/* Re-encrypt the stopped state (@blob as read while it may have still
 * run) under a new key and commit it. */
static int
rekey_run(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
          const vtpm_domxml_meta *m, const char *work, bool stopped, GBytes *blob,
          GBytes *old_key, GBytes *new_secret, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *scratch = g_build_filename(work, "scratch", NULL);
    g_autoptr(GBytes) now = NULL;
    g_autoptr(GBytes) new_key = NULL;
    int rc;

    /* The state as the stopped swtpm left it. */
    if (stopped &&
        (rc = vtpm_rekey_export(state_dir, m->tpm.version, old_key, scratch, &now, err)) < 0)
        return rc;
    if (new_secret)
        new_key = g_bytes_ref(new_secret);
    else if ((rc = vtpm_keyring_random_secret(&new_key, err)) < 0)
        return rc;
    if ((rc = rekey_commit(w, conn, dom, uuid, m, state_dir, work, now ? now : blob, old_key,
                           new_key, err)) < 0)
        return rc;
    g_message("instance %s: TPM state re-encrypted under a new key (secret security '%s')",
              uuid, vtpm_secret_security_str(m->tpm.secret_security));
    return 0;
}

int
vtpm_op_rekey(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(GBytes) new_secret = NULL, secret = NULL, old_key = NULL, blob = NULL;
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *state_dir = NULL, *work = NULL, *again = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };
    bool running = false, done = false, rerun, restart;
    char uuid[37];
    int active, rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &secret, err)) < 0 ||
        (rc = arg_new_secret(req, &new_secret, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0 ||
        (rc = rekey_check_args(uuid, &m, secret, new_secret, err)) < 0 ||
        (rc = rekey_check_host(w, uuid, err)) < 0 ||
        (rc = rekey_current_key(w, conn, uuid, &m, secret, &old_key, err)) < 0)
        return rc;
    if ((active = VTPM_LV(virDomainIsActive(dom))) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    state_dir = vtpm_ops_state_dir(w, uuid);
    work = vtpm_ops_rekey_dir(w, uuid);
    if ((rc = vtpm_fs_mkdirs(work, 0700, err)) < 0)
        return rc;
    /* An earlier rekey stopped the running domain and could not start it
     * again: this one does (rekey_stop). */
    again = g_build_filename(work, "restart", NULL);
    rerun = !active && access(again, F_OK) == 0;
    /* Checked while the domain still runs: a wrong key stops nothing.
     * swtpm replaces its state file by rename, so the copy is whole. */
    if ((rc = rekey_settle(w, uuid, &m, state_dir, work, old_key, new_secret, &blob, &done,
                           err)) < 0)
        return rc;
    /* A redelivered rekey that already happened leaves the domain as it is. */
    if (active && !done) {
        if ((rc = rekey_stop(w, dom, again, err)) < 0)
            return rc;
        running = true;
    }
    restart = running || rerun;
    if (!done && (rc = rekey_run(w, conn, dom, uuid, &m, work, running, blob, old_key, new_secret,
                                 err)) < 0) {
        if (restart)
            rekey_restart_old(w, dom, secret, uuid, again);
        return rc;
    }
    if (restart && (rc = vtpm_ops_start(w, dom, new_secret, err)) < 0) {
        vtpm_error_prefix(err, "instance %s was rekeyed, but restarting it failed", uuid);
        return rc;
    }
    rekey_drop_work(uuid, work);
    msgpack_pack_map(result, 3);
    vtpm_pack_kv_bool(result, "rekeyed", true);
    vtpm_pack_kv_str(result, "secret_security", vtpm_secret_security_str(m.tpm.secret_security));
    vtpm_pack_kv_bool(result, "restarted", restart);
    return 0;
}
