/* SPDX-License-Identifier: Apache-2.0 */
/* Checkpoints of TPM state in the state store (ops/checkpoint.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "fsutil.h"
#include "keywrap.h"
#include "ops/checkpoint.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/ownership.h"
#include "ops/state.h"
#include "secret.h"
#include "store.h"

#define CKPT_INFIX ".ckpt-"
#define CKPT_SUFFIX ".vtpm.tar"

/* ---- prints -------------------------------------------------------------------- */

void
vtpm_ckpt_print_clear(vtpm_ckpt_print *p)
{
    g_clear_pointer(&p->stat, g_free);
    g_clear_pointer(&p->content, g_free);
}

bool
vtpm_ckpt_print_equal(const vtpm_ckpt_print *a, const vtpm_ckpt_print *b)
{
    return a && b && a->content && b->content && strcmp(a->content, b->content) == 0;
}

/* What the archive leaves out leaves the print alone too: swtpm's lock,
 * sockets, its temporary files (worker/archive.c). */
static bool
print_skips(const char *name, const struct stat *st)
{
    return strcmp(name, ".lock") == 0 || vtpm_archive_swtpm_temp_file(name) ||
           !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode));
}

static gint
by_name(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Regular files below @dir (two levels: <uuid>/tpm2/...), "rel" sorted. */
static void
collect(const char *dir, const char *rel, int depth, GPtrArray *files)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *n;

    while (d && (n = g_dir_read_name(d)))
        g_ptr_array_add(names, g_strdup(n));
    g_ptr_array_sort(names, by_name);
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        g_autofree char *path = g_build_filename(dir, name, NULL);
        g_autofree char *r = *rel ? g_strconcat(rel, "/", name, NULL) : g_strdup(name);
        struct stat st;

        if (lstat(path, &st) < 0 || print_skips(name, &st))
            continue;
        if (S_ISDIR(st.st_mode) && depth < 2)
            collect(path, r, depth + 1, files);
        else if (S_ISREG(st.st_mode))
            g_ptr_array_add(files, g_steal_pointer(&r));
    }
}

static char *
stat_part(const char *dir, GPtrArray *files)
{
    GString *s = g_string_new(NULL);

    for (guint i = 0; i < files->len; i++) {
        g_autofree char *path = g_build_filename(dir, g_ptr_array_index(files, i), NULL);
        struct stat st;

        if (lstat(path, &st) < 0)
            continue;
        g_string_append_printf(s, "%s:%ju:%jd:%jd.%09ld;", (char *)g_ptr_array_index(files, i),
                               (uintmax_t)st.st_ino, (intmax_t)st.st_size,
                               (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    }
    return g_string_free(s, FALSE);
}

/* One open and read per file: swtpm replaces its files by rename, so the
 * bytes read are one whole version of each. */
static int
content_part(const char *dir, GPtrArray *files, char **out, vtpm_error *err)
{
    g_autoptr(GChecksum) ck = g_checksum_new(G_CHECKSUM_SHA256);

    for (guint i = 0; i < files->len; i++) {
        const char *rel = g_ptr_array_index(files, i);
        g_autofree char *path = g_build_filename(dir, rel, NULL);
        g_autoptr(GBytes) data = NULL;
        int rc = vtpm_fs_read(path, VTPM_ARCHIVE_MAX_FILE, &data, err);

        if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND)
            continue; /* gone since the listing */
        if (rc < 0)
            return rc;
        g_checksum_update(ck, (const guchar *)rel, (gssize)strlen(rel) + 1);
        g_checksum_update(ck, g_bytes_get_data(data, NULL), (gssize)g_bytes_get_size(data));
    }
    *out = g_strdup(g_checksum_get_string(ck));
    return 0;
}

/* The print of @uuid's state; the content is only read when the stat
 * part differs from @last's. */
static int
print_state(vtpm_worker *w, const char *uuid, const vtpm_ckpt_print *last,
            vtpm_ckpt_print *out, vtpm_error *err)
{
    g_autofree char *dir = vtpm_ops_state_dir(w, uuid);
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    g_auto(vtpm_ckpt_print) p = { 0 };
    int rc;

    if (!vtpm_fs_is_dir(dir)) {
        *out = p;
        return 0;
    }
    collect(dir, "", 1, files);
    p.stat = stat_part(dir, files);
    if (last && last->stat && last->content && strcmp(last->stat, p.stat) == 0)
        p.content = g_strdup(last->content);
    else if ((rc = content_part(dir, files, &p.content, err)) < 0)
        return rc;
    *out = p;
    p = (vtpm_ckpt_print){ 0 };
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------ */

void
vtpm_ckpt_snapshot_free(vtpm_ckpt_snapshot *s)
{
    if (!s)
        return;
    g_clear_pointer(&s->archive, g_bytes_unref);
    vtpm_ckpt_print_clear(&s->print);
    g_free(s->reason);
    g_free(s);
}

/* Host mode keeps the key on the host, which may die with the TPM: with
 * a deployment key configured, the checkpoint carries the host's secret
 * wrapped under it, and any host with the key can open the TPM after an
 * evacuation (docs/security.md, "Evacuation").  *out NULL when there is
 * no deployment key. */
static int
wrap_host_secret(vtpm_worker *w, virConnectPtr conn, const char *uuid, char **out,
                 vtpm_error *err)
{
    g_autoptr(GBytes) value = NULL;
    int rc;

    *out = NULL;
    if (!vtpm_keyring_ready(w->keys))
        return 0;
    if ((rc = vtpm_secret_get(conn, w->cfg->worker.host, uuid, &value, err)) < 0)
        return rc;
    return vtpm_keyring_wrap(w->keys, uuid, value, out, err);
}

/* The sha256 of @uuid's variable store; NULL when it has none. */
static char *
store_sha256(vtpm_worker *w, const char *uuid)
{
    g_autofree char *dir = vtpm_ops_state_dir(w, uuid);
    g_autofree char *path = g_build_filename(dir, VTPM_FIRMWARE_NVRAM_FILE, NULL);
    g_autoptr(GBytes) data = NULL;

    if (vtpm_fs_read(path, VTPM_ARCHIVE_MAX_FILE, &data, NULL) < 0)
        return NULL;
    return vtpm_archive_sha256(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
}

#define STORE_PACK_TRIES 5

/* swtpm replaces its files by rename, but QEMU writes a running UEFI
 * guest's variable store in place: a pack that read it during a write
 * would hold a torn store. The store is read before and after the pack;
 * equal reads mean the pack's read saw no write (the writes are single
 * short pwrite calls), else it is taken again. A store that never holds
 * still fails the checkpoint, which is counted and retried at the next
 * interval, and never replaces a whole one. */
static int
pack_whole_store(vtpm_worker *w, virDomainPtr dom, const char *uuid,
                 const vtpm_domxml_meta *dm, GHashTable *extra, GBytes **out,
                 vtpm_error *err)
{
    for (int i = 0; i < STORE_PACK_TRIES; i++) {
        g_autofree char *before = store_sha256(w, uuid);
        g_autofree char *after = NULL;
        g_autoptr(GBytes) archive = NULL;
        int rc = vtpm_state_pack(w, dom, uuid, &dm->tpm, "checkpoint", extra, &archive, err);

        if (rc < 0)
            return rc;
        after = store_sha256(w, uuid);
        if (g_strcmp0(before, after) == 0) {
            *out = g_steal_pointer(&archive);
            return 0;
        }
    }
    return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                          "instance %s: its UEFI variable store changed during each of %d "
                          "checkpoint attempts", uuid, STORE_PACK_TRIES);
}

/* The archive of the state, with what a restore on another host needs in
 * its manifest: how it is keyed, who took it and why. */
static int
pack_snapshot(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const char *uuid,
              const vtpm_domxml_meta *dm, const char *reason, GBytes **out, vtpm_error *err)
{
    g_autoptr(GHashTable) extra = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) key = g_hash_table_new(g_str_hash, g_str_equal);
    g_autofree char *wrapped = NULL;
    GHashTableIter it;
    gpointer k, v;
    int rc;

    vtpm_custody_key_extra(w, dm, key);
    g_hash_table_iter_init(&it, key);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_hash_table_insert(extra, g_strdup(k), g_strdup(v));
    if (dm->tpm.secret_security == VTPM_SECRET_HOST && dm->encrypted) {
        if ((rc = wrap_host_secret(w, conn, uuid, &wrapped, err)) < 0)
            return rc;
        if (wrapped)
            g_hash_table_insert(extra, g_strdup("wrapped_host_secret"), g_steal_pointer(&wrapped));
    }
    g_hash_table_insert(extra, g_strdup("checkpoint_host"), g_strdup(w->cfg->worker.host));
    g_hash_table_insert(extra, g_strdup("checkpoint_reason"), g_strdup(reason));
    /* A UEFI instance's variable store lives in its state dir (ops/nvram.h)
     * and so is in the archive, as in a shelve's: an evacuation restores it
     * with the TPM, to the same point in time. */
    return pack_whole_store(w, dom, uuid, dm, extra, out, err);
}

/* Whether @uuid's domain may be checkpointed now: *status GONE / WAIT
 * when not, with *dom and *dm set when it may. */
static int
eligible(vtpm_worker *w, virConnectPtr conn, const char *uuid, virDomainPtr *dom,
         vtpm_domxml_meta *dm, vtpm_ckpt_status *status, vtpm_error *err)
{
    g_autoptr(virDomain) d = NULL;
    vtpm_error fenced = { 0 };
    int rc;

    *status = VTPM_CKPT_GONE;
    if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &d, err)) < 0)
        return rc;
    if (!d)
        return 0;
    if ((rc = vtpm_ops_get_meta(w, d, dm, err)) < 0)
        return rc;
    if (dm->tpm.version == VTPM_VERSION_NONE)
        return 0;
    /* A migration from here is pending: the kept copy is the state a
     * revert restores, and the destination checkpoints the new one. */
    *status = VTPM_CKPT_WAIT;
    if (vtpm_state_has_kept(w, uuid) || vtpm_generation_check_fence(w, uuid, &fenced) < 0)
        return 0;
    *status = VTPM_CKPT_TAKEN;
    *dom = g_steal_pointer(&d);
    return 0;
}

static vtpm_ckpt_snapshot *
snapshot_new(const char *uuid, GBytes *archive, uint64_t base, uint64_t gen,
             vtpm_ckpt_print *print, const char *reason)
{
    vtpm_ckpt_snapshot *s = g_new0(vtpm_ckpt_snapshot, 1);

    g_strlcpy(s->uuid, uuid, sizeof(s->uuid));
    s->archive = archive;
    s->base = base;
    s->generation = gen;
    s->print.stat = g_strdup(print->stat);
    s->print.content = g_strdup(print->content);
    s->reason = g_strdup(reason);
    return s;
}

int
vtpm_ckpt_take(vtpm_worker *w, const char *uuid, const vtpm_ckpt_want *want,
               vtpm_ckpt_status *status, vtpm_ckpt_print *print, vtpm_ckpt_snapshot **out,
               vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_auto(vtpm_domxml_meta) dm = { 0 };
    g_auto(vtpm_ckpt_print) p = { 0 };
    g_autoptr(GBytes) archive = NULL;
    uint64_t base;
    int rc;

    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = eligible(w, conn, uuid, &dom, &dm, status, err)) < 0 ||
        *status != VTPM_CKPT_TAKEN || (rc = print_state(w, uuid, want->last, &p, err)) < 0)
        return rc;
    if (!p.stat)
        *status = VTPM_CKPT_WAIT; /* a TPM never started has no state yet */
    else if (!want->forced && vtpm_ckpt_print_equal(&p, want->last))
        *status = VTPM_CKPT_SAME;
    if (*status == VTPM_CKPT_TAKEN) {
        base = vtpm_generation_last(w, uuid);
        if ((rc = pack_snapshot(w, conn, dom, uuid, &dm, want->reason, &archive, err)) < 0)
            return rc;
        /* vtpm_state_pack recorded the archive's generation. */
        *out = snapshot_new(uuid, g_steal_pointer(&archive), base, vtpm_generation_last(w, uuid),
                            &p, want->reason);
    }
    *print = p;
    p = (vtpm_ckpt_print){ 0 };
    return 0;
}

/* ---- the store --------------------------------------------------------------------- */

static char *
ckpt_prefix(const char *uuid)
{
    return g_strconcat(uuid, CKPT_INFIX, NULL);
}

char *
vtpm_ckpt_volume(const char *uuid, uint64_t gen)
{
    return g_strdup_printf("%s" CKPT_INFIX "%" G_GUINT64_FORMAT CKPT_SUFFIX, uuid, gen);
}

/* The generation in a checkpoint's volume name; 0 when it is none. */
static uint64_t
ckpt_generation(const char *name, const char *prefix)
{
    g_autofree char *digits = NULL;
    size_t n = strlen(name), p = strlen(prefix), s = strlen(CKPT_SUFFIX);
    guint64 g = 0;

    if (n <= p + s || !g_str_has_prefix(name, prefix) || !g_str_has_suffix(name, CKPT_SUFFIX))
        return 0;
    digits = g_strndup(name + p, n - p - s);
    if (!g_ascii_string_to_unsigned(digits, 10, 1, G_MAXINT64, &g, NULL))
        return 0;
    return g;
}

static gint
newest_first(gconstpointer a, gconstpointer b, gpointer prefix)
{
    uint64_t ga = ckpt_generation(*(const char *const *)a, prefix);
    uint64_t gb = ckpt_generation(*(const char *const *)b, prefix);

    return ga < gb ? 1 : ga > gb ? -1 : 0;
}

/* Of @names, @uuid's checkpoints, newest first; names that are not one
 * are left out. */
static GPtrArray *
order(const char *uuid, GPtrArray *names)
{
    g_autofree char *prefix = ckpt_prefix(uuid);
    GPtrArray *ok = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; i < names->len; i++) {
        if (ckpt_generation(g_ptr_array_index(names, i), prefix))
            g_ptr_array_add(ok, g_strdup(g_ptr_array_index(names, i)));
    }
    g_ptr_array_sort_with_data(ok, newest_first, prefix);
    return ok;
}

/* @uuid's checkpoints in the store, newest first. */
static int
list_ckpts(vtpm_worker *w, virConnectPtr sconn, const char *uuid, GPtrArray **out,
           vtpm_error *err)
{
    g_autofree char *prefix = ckpt_prefix(uuid);
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = vtpm_store_list(sconn, w->cfg->store.checkpoint_pool, prefix, &names, err)) < 0)
        return rc;
    *out = order(uuid, names);
    return 0;
}

/* Keep the newest [store] checkpoint_keep. */
static int
prune(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_error *err)
{
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = list_ckpts(w, sconn, uuid, &names, err)) < 0)
        return rc;
    for (guint i = w->cfg->store.checkpoint_keep; i < names->len; i++) {
        if ((rc = vtpm_store_delete(sconn, w->cfg->store.checkpoint_pool,
                                    g_ptr_array_index(names, i), err)) < 0)
            return rc;
    }
    return 0;
}

int
vtpm_ckpt_upload(vtpm_worker *w, virConnectPtr sconn, const vtpm_ckpt_snapshot *s,
                 vtpm_error *err)
{
    const char *pool = w->cfg->store.checkpoint_pool;
    g_autofree char *name = vtpm_ckpt_volume(s->uuid, s->generation);
    g_auto(vtpm_owner) cur = { 0 };
    int rc;

    if ((rc = vtpm_state_ensure_pool(w, sconn, pool, err)) < 0 ||
        (rc = vtpm_owner_read(w, sconn, s->uuid, &cur, err)) < 0)
        return rc;
    if (!vtpm_owner_may_claim(w, &cur, s->base))
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "the ownership record of instance %s names host %s with generation "
                              "%" G_GUINT64_FORMAT ", newer than generation %" G_GUINT64_FORMAT
                              " this host's state descends from: not the owner",
                              s->uuid, cur.host, cur.generation, s->base);
    if ((rc = vtpm_store_put(sconn, pool, name, s->archive, err)) < 0)
        return rc;
    /* The record only ever moves forward. */
    if ((!cur.host || strcmp(cur.host, w->cfg->worker.host) != 0 ||
         cur.generation < s->generation) &&
        (rc = vtpm_owner_write(w, sconn, s->uuid, s->generation, err)) < 0)
        return rc;
    return prune(w, sconn, s->uuid, err);
}

void
vtpm_ckpt_found_free(vtpm_ckpt_found *f)
{
    if (!f)
        return;
    g_free(f->name);
    g_clear_pointer(&f->archive, g_bytes_unref);
    vtpm_archive_meta_clear(&f->meta);
    g_free(f);
}

/* Read and verify checkpoint @name; the reason it is not usable in @why. */
static int
read_ckpt(const char *uuid, const char *name, vtpm_ckpt_reader read, void *user,
          vtpm_ckpt_found **out, vtpm_error *why)
{
    g_autofree char *prefix = ckpt_prefix(uuid);
    g_autoptr(vtpm_ckpt_found) f = g_new0(vtpm_ckpt_found, 1);
    int rc;

    vtpm_archive_meta_init(&f->meta);
    if ((rc = read(name, &f->archive, why, user)) < 0 ||
        (rc = vtpm_archive_verify(g_bytes_get_data(f->archive, NULL),
                                  g_bytes_get_size(f->archive), &f->meta, why)) < 0)
        return rc;
    if (strcmp(f->meta.uuid, uuid) != 0 ||
        f->meta.generation != ckpt_generation(name, prefix) || !vtpm_state_has_tpm(&f->meta))
        return vtpm_error_set(why, VTPM_FAULT_STATE_INTEGRITY,
                              "its manifest is of instance %s, generation %" G_GUINT64_FORMAT
                              ", TPM %s",
                              f->meta.uuid, f->meta.generation,
                              f->meta.tpm_version ? f->meta.tpm_version : "none");
    f->name = g_strdup(name);
    *out = g_steal_pointer(&f);
    return 0;
}

/* vtpm_ckpt_pick; *vanished counts the checkpoints gone since the
 * listing. */
static int
pick(const char *uuid, GPtrArray *names, vtpm_ckpt_reader read, void *user,
     vtpm_ckpt_found **out, GString *passed, unsigned *vanished, vtpm_error *err)
{
    g_autoptr(GPtrArray) newest = order(uuid, names);
    int rc;

    *vanished = 0;
    for (guint i = 0; i < newest->len; i++) {
        const char *name = g_ptr_array_index(newest, i);
        vtpm_error why = { 0 };

        rc = read_ckpt(uuid, name, read, user, out, &why);
        if (rc == 0)
            return 0;
        /* The store itself failing is no verdict on the checkpoint. */
        if (rc != -(int)VTPM_FAULT_STATE_INTEGRITY && rc != -(int)VTPM_FAULT_STATE_NOT_FOUND) {
            if (err)
                *err = why;
            return rc;
        }
        if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND)
            (*vanished)++;
        g_string_append_printf(passed, "%s: %s; ", name, why.message);
    }
    *out = NULL;
    if (newest->len)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "none of the %u checkpoints of instance %s verifies: %s",
                              newest->len, uuid, passed->str);
    return 0;
}

int
vtpm_ckpt_pick(const char *uuid, GPtrArray *names, vtpm_ckpt_reader read, void *user,
               vtpm_ckpt_found **out, GString *passed, vtpm_error *err)
{
    unsigned vanished = 0;

    return pick(uuid, names, read, user, out, passed, &vanished, err);
}

typedef struct {
    vtpm_worker *w;
    virConnectPtr sconn;
} store_reader;

static int
read_store(const char *name, GBytes **out, vtpm_error *err, void *user)
{
    store_reader *r = user;
    int rc = vtpm_store_get(r->sconn, r->w->cfg->store.checkpoint_pool, name, out, err);

    /* A lookup that failed is the store's failure, not the volume's. */
    if (rc == -(int)VTPM_FAULT_HYPERVISOR_ERROR)
        err->code = VTPM_FAULT_STATE_TRANSFER_FAILED;
    return rc == -(int)VTPM_FAULT_HYPERVISOR_ERROR ? -(int)VTPM_FAULT_STATE_TRANSFER_FAILED : rc;
}

int
vtpm_ckpt_newest(vtpm_worker *w, virConnectPtr sconn, const char *uuid,
                 vtpm_ckpt_found **out, GString *passed, vtpm_error *err)
{
    g_autofree char *prefix = ckpt_prefix(uuid);
    g_autoptr(GPtrArray) names = NULL;
    store_reader r = { w, sconn };
    int rc;

    unsigned vanished = 0;

    /* A host that prunes its checkpoints while this one reads them (only
     * a live one writes) may leave none of those listed: list again. */
    for (int attempt = 0; attempt < 3; attempt++) {
        g_clear_pointer(&names, g_ptr_array_unref);
        g_string_truncate(passed, 0);
        if ((rc = vtpm_store_list(sconn, w->cfg->store.checkpoint_pool, prefix, &names,
                                  err)) < 0 ||
            (rc = pick(uuid, names, read_store, &r, out, passed, &vanished, err)) == 0 ||
            !vanished)
            return rc;
    }
    return rc;
}

int
vtpm_ckpt_remove(vtpm_worker *w, virConnectPtr sconn, const char *uuid, bool *removed,
                 vtpm_error *err)
{
    g_autoptr(GPtrArray) names = NULL;
    g_auto(vtpm_owner) cur = { 0 };
    int rc;

    *removed = false;
    if ((rc = vtpm_owner_read(w, sconn, uuid, &cur, err)) < 0)
        return rc;
    /* A host the instance left (evacuated, or migrated while the store
     * was away) must not take the new owner's checkpoints with it. */
    if (cur.host && strcmp(cur.host, w->cfg->worker.host) != 0)
        return 0;
    if ((rc = list_ckpts(w, sconn, uuid, &names, err)) < 0)
        return rc;
    for (guint i = 0; i < names->len; i++) {
        if ((rc = vtpm_store_delete(sconn, w->cfg->store.checkpoint_pool,
                                    g_ptr_array_index(names, i), err)) < 0)
            return rc;
    }
    if ((rc = vtpm_owner_drop(w, sconn, uuid, err)) < 0)
        return rc;
    *removed = true;
    return 0;
}

/* ---- local records --------------------------------------------------------------- */

static char *
local_path(vtpm_worker *w, const char *dir, const char *uuid)
{
    return g_build_filename(w->cfg->store.kept_dir, dir, uuid, NULL);
}

static int
local_write(vtpm_worker *w, const char *dir, const char *uuid, const char *text,
            vtpm_error *err)
{
    g_autofree char *d = g_build_filename(w->cfg->store.kept_dir, dir, NULL);
    g_autofree char *path = local_path(w, dir, uuid);
    int rc;

    if ((rc = vtpm_fs_mkdirs(d, 0700, err)) < 0)
        return rc;
    return vtpm_fs_write_atomic(path, text, strlen(text), 0600, err);
}

int
vtpm_ckpt_print_save(vtpm_worker *w, const char *uuid, const vtpm_ckpt_print *p,
                     vtpm_error *err)
{
    g_autofree char *text = g_strdup_printf("%s\n%s\n", p->stat ? p->stat : "",
                                            p->content ? p->content : "");

    return local_write(w, "checkpoint-prints", uuid, text, err);
}

int
vtpm_ckpt_print_load(vtpm_worker *w, const char *uuid, vtpm_ckpt_print *out)
{
    g_autofree char *path = local_path(w, "checkpoint-prints", uuid);
    g_autoptr(GBytes) data = NULL;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    if (vtpm_fs_read(path, 64 * 1024, &data, NULL) < 0)
        return -1;
    text = g_strndup(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
    lines = g_strsplit(text, "\n", 3);
    if (g_strv_length(lines) < 2 || !*lines[0] || strlen(lines[1]) != 64)
        return -1;
    out->stat = g_strdup(lines[0]);
    out->content = g_strdup(lines[1]);
    return 0;
}

void
vtpm_ckpt_print_forget(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = local_path(w, "checkpoint-prints", uuid);

    (void)unlink(path);
}

int
vtpm_ckpt_drop_later(vtpm_worker *w, const char *uuid, vtpm_error *err)
{
    return local_write(w, "checkpoint-drops", uuid, "", err);
}

GPtrArray *
vtpm_ckpt_drops(vtpm_worker *w)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.kept_dir, "checkpoint-drops", NULL);

    return vtpm_fs_list_uuids(dir);
}

void
vtpm_ckpt_drop_done(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = local_path(w, "checkpoint-drops", uuid);

    (void)unlink(path);
}

void
vtpm_ckpt_evacuation_clear(vtpm_ckpt_evacuation *e)
{
    g_clear_pointer(&e->from_host, g_free);
    g_clear_pointer(&e->spec_digest, g_free);
    g_clear_pointer(&e->ckpt_host, g_free);
    memset(e, 0, sizeof(*e));
}

int
vtpm_ckpt_evacuation_write(vtpm_worker *w, const char *uuid, const vtpm_ckpt_evacuation *e,
                           vtpm_error *err)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;
    g_autofree char *text = NULL;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "from_host");
    json_builder_add_string_value(b, e->from_host);
    json_builder_set_member_name(b, "spec_digest");
    json_builder_add_string_value(b, e->spec_digest);
    json_builder_set_member_name(b, "restored");
    json_builder_add_boolean_value(b, e->restored);
    json_builder_set_member_name(b, "checkpoint_host");
    json_builder_add_string_value(b, e->ckpt_host ? e->ckpt_host : "");
    json_builder_set_member_name(b, "generation");
    json_builder_add_int_value(b, (gint64)e->generation);
    json_builder_set_member_name(b, "taken_ms");
    json_builder_add_int_value(b, e->taken_ms);
    json_builder_set_member_name(b, "evacuated_ms");
    json_builder_add_int_value(b, e->evacuated_ms);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    text = json_generator_to_data(gen, NULL);
    return local_write(w, "evacuated", uuid, text, err);
}

int
vtpm_ckpt_evacuation_read(vtpm_worker *w, const char *uuid, vtpm_ckpt_evacuation *out)
{
    g_autofree char *path = local_path(w, "evacuated", uuid);
    g_autoptr(JsonParser) p = json_parser_new();
    g_autoptr(GBytes) data = NULL;
    JsonObject *o;

    if (vtpm_fs_read(path, 64 * 1024, &data, NULL) < 0 ||
        !json_parser_load_from_data(p, g_bytes_get_data(data, NULL),
                                    (gssize)g_bytes_get_size(data), NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return -1;
    o = json_node_get_object(json_parser_get_root(p));
    memset(out, 0, sizeof(*out));
    out->from_host = g_strdup(json_object_get_string_member_with_default(o, "from_host", ""));
    out->spec_digest = g_strdup(json_object_get_string_member_with_default(o, "spec_digest", ""));
    out->restored = json_object_get_boolean_member_with_default(o, "restored", false);
    out->ckpt_host = g_strdup(json_object_get_string_member_with_default(o, "checkpoint_host", ""));
    out->generation = (uint64_t)json_object_get_int_member_with_default(o, "generation", 0);
    out->taken_ms = json_object_get_int_member_with_default(o, "taken_ms", 0);
    out->evacuated_ms = json_object_get_int_member_with_default(o, "evacuated_ms", 0);
    return 0;
}

void
vtpm_ckpt_evacuation_forget(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = local_path(w, "evacuated", uuid);

    (void)unlink(path);
}
