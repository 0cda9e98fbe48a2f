/* SPDX-License-Identifier: Apache-2.0 */
/* The checkpointer (checkpointer.h). */
#include <stdlib.h>
#include <string.h>

#include "checkpointer.h"
#include "domxml.h"
#include "metrics.h"
#include "ops/checkpoint.h"
#include "ops/fencing.h"
#include "ops/generation.h"
#include "ops/ownership.h"
#include "store.h"

/* Generation records are pruned at start and then this often. */
#define PRUNE_INTERVAL_US ((gint64)3600 * G_USEC_PER_SEC)
/* A failure that goes on is logged again at most this often. */
#define FAIL_LOG_INTERVAL_US ((gint64)3600 * G_USEC_PER_SEC)

/* What the checkpointer knows of one instance; under the lock. */
typedef struct {
    vtpm_ckpt_print last;  /* the state at the last upload that worked */
    vtpm_ckpt_print seen;  /* the state when last looked at (a stat cache) */
    bool unverified;       /* its ownership is to be checked against the store */
    bool stale;            /* evacuated away: settle it in its slot */
    bool failing;
    gint64 fail_logged_us;
} inst;

/* A snapshot waiting for its upload. */
typedef struct {
    vtpm_ckpt_snapshot *snap;
    double snapshot_ms;    /* what it cost in the instance's slot */
} pending;

struct vtpm_checkpointer {
    vtpm_worker *w;
    gint64 interval_us;
    GThread *thread;

    GMutex lock;
    GCond cond;              /* new pending work, stop, an upload done */
    bool stop;
    GHashTable *insts;       /* uuid -> inst */
    GHashTable *due;         /* uuid set, for the I/O thread */
    GQueue queue;            /* pending *, oldest first; one per instance */
    char uploading[37];      /* the instance being sent, "" when none */
    bool unverified_all;     /* the start could not read the store */
};

static void
inst_free(gpointer p)
{
    inst *i = p;

    vtpm_ckpt_print_clear(&i->last);
    vtpm_ckpt_print_clear(&i->seen);
    g_free(i);
}

static void
pending_free(pending *p)
{
    vtpm_ckpt_snapshot_free(p->snap);
    g_free(p);
}

static void
copy_print(vtpm_ckpt_print *dst, const vtpm_ckpt_print *src)
{
    vtpm_ckpt_print_clear(dst);
    dst->stat = g_strdup(src->stat);
    dst->content = g_strdup(src->content);
}

/* Under the lock. */
static inst *
inst_get(vtpm_checkpointer *c, const char *uuid)
{
    inst *i = g_hash_table_lookup(c->insts, uuid);

    if (!i) {
        i = g_new0(inst, 1);
        i->unverified = c->unverified_all;
        /* What an earlier vtpmd checkpointed last: unchanged, it is not
         * checkpointed again. */
        if (vtpm_ckpt_print_load(c->w, uuid, &i->last) == 0)
            copy_print(&i->seen, &i->last);
        g_hash_table_insert(c->insts, g_strdup(uuid), i);
    }
    return i;
}

/* Under the lock: the pending snapshot of @uuid, taken out of the queue. */
static pending *
unqueue(vtpm_checkpointer *c, const char *uuid)
{
    for (GList *l = c->queue.head; l; l = l->next) {
        pending *p = l->data;

        if (strcmp(p->snap->uuid, uuid) == 0) {
            g_queue_delete_link(&c->queue, l);
            return p;
        }
    }
    return NULL;
}

/* The instance left this host (or never had a vTPM here). */
static void
forget(vtpm_checkpointer *c, const char *uuid)
{
    pending *p;

    g_mutex_lock(&c->lock);
    if ((p = unqueue(c, uuid)))
        pending_free(p);
    while (strcmp(c->uploading, uuid) == 0)
        g_cond_wait(&c->cond, &c->lock);
    g_hash_table_remove(c->insts, uuid);
    g_hash_table_remove(c->due, uuid);
    g_mutex_unlock(&c->lock);
    vtpm_ckpt_print_forget(c->w, uuid);
    vtpm_metrics_checkpoint_forget(uuid);
}

/* ---- failures ------------------------------------------------------------------ */

/* Count a failed checkpoint of @uuid and log it when it starts failing,
 * then at most hourly while it goes on. */
static void
failed(vtpm_checkpointer *c, const char *uuid, const char *what, const vtpm_error *e)
{
    gint64 now = g_get_monotonic_time();
    bool say;

    vtpm_metrics_checkpoint(uuid, false);
    g_mutex_lock(&c->lock);
    {
        inst *i = inst_get(c, uuid);

        say = !i->failing || now - i->fail_logged_us >= FAIL_LOG_INTERVAL_US;
        if (say)
            i->fail_logged_us = now;
        i->failing = true;
    }
    g_mutex_unlock(&c->lock);
    if (say)
        g_warning("checkpoint of instance %s failed (%s): %s; the instance is not affected, "
                  "retried every %u s%s",
                  uuid, what, e->message, c->w->cfg->store.checkpoint_interval,
                  " (logged again hourly while it fails)");
}

/* ---- in the instance's slot ------------------------------------------------------ */

/* A copy of this host that the store says is stale: settle it. */
static void
slot_settle(vtpm_checkpointer *c, const char *uuid)
{
    g_autoptr(virConnect) sconn = NULL;
    g_autofree char *owner = NULL;
    vtpm_fence_verdict v = VTPM_FENCE_CURRENT;
    vtpm_error e = { 0 };

    if (vtpm_store_open(c->w->virt, c->w->cfg->store.uri, &sconn, &e) < 0 ||
        vtpm_fence_reconcile(c->w, sconn, uuid, &v, &owner, &e) < 0) {
        g_warning("instance %s: cannot settle its stale copy yet: %s", uuid, e.message);
        return;
    }
    if (v == VTPM_FENCE_REMOVED) {
        g_warning("instance %s was evacuated to host %s: its stale domain and TPM state are "
                  "removed from this host", uuid, owner);
        forget(c, uuid);
        return;
    }
    g_mutex_lock(&c->lock);
    inst_get(c, uuid)->stale = v != VTPM_FENCE_CURRENT;
    g_mutex_unlock(&c->lock);
}

static void
queue_snapshot(vtpm_checkpointer *c, vtpm_ckpt_snapshot *snap, double ms)
{
    pending *p = g_new0(pending, 1);
    pending *older;

    p->snap = snap;
    p->snapshot_ms = ms;
    g_mutex_lock(&c->lock);
    /* The newer snapshot is the one worth sending. */
    if ((older = unqueue(c, snap->uuid)))
        pending_free(older);
    g_queue_push_tail(&c->queue, p);
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

void
vtpm_checkpointer_slot(vtpm_checkpointer *c, const char *uuid, const char *after)
{
    g_auto(vtpm_ckpt_print) last = { 0 };
    g_auto(vtpm_ckpt_print) seen = { 0 };
    vtpm_ckpt_snapshot *snap = NULL;
    vtpm_ckpt_status st = VTPM_CKPT_WAIT;
    vtpm_error e = { 0 };
    gint64 t0 = g_get_monotonic_time();
    bool stale;

    g_mutex_lock(&c->lock);
    {
        inst *i = inst_get(c, uuid);

        stale = i->stale;
        /* The stat cache, with the content hash of the last upload. */
        last.stat = g_strdup(i->seen.stat);
        last.content = g_strdup(i->last.content && i->seen.content &&
                                        strcmp(i->last.content, i->seen.content) == 0
                                    ? i->last.content
                                    : NULL);
    }
    g_mutex_unlock(&c->lock);
    if (stale) {
        slot_settle(c, uuid);
        return;
    }
    {
        vtpm_ckpt_want want = { .reason = after ? after : "interval", .forced = after != NULL,
                                .last = &last };

        if (vtpm_ckpt_take(c->w, uuid, &want, &st, &seen, &snap, &e) < 0) {
            failed(c, uuid, "snapshot", &e);
            return;
        }
    }
    if (st == VTPM_CKPT_GONE) {
        forget(c, uuid);
        return;
    }
    if (st == VTPM_CKPT_WAIT)
        return;
    if (st == VTPM_CKPT_SAME)
        vtpm_metrics_checkpoint_current(uuid);
    else
        vtpm_metrics_checkpoint_track(uuid);
    g_mutex_lock(&c->lock);
    copy_print(&inst_get(c, uuid)->seen, &seen);
    g_mutex_unlock(&c->lock);
    if (snap)
        queue_snapshot(c, snap, (g_get_monotonic_time() - t0) / 1000.0);
}

void
vtpm_checkpointer_drop(vtpm_checkpointer *c, const char *uuid)
{
    g_autoptr(virConnect) sconn = NULL;
    vtpm_error e = { 0 };
    bool removed = false;

    if (!c)
        return;
    forget(c, uuid);
    if (vtpm_store_open(c->w->virt, c->w->cfg->store.uri, &sconn, &e) < 0 ||
        vtpm_ckpt_remove(c->w, sconn, uuid, &removed, &e) < 0) {
        vtpm_error e2 = { 0 };

        if (vtpm_ckpt_drop_later(c->w, uuid, &e2) < 0)
            g_warning("instance %s: cannot note its checkpoints for removal: %s", uuid,
                      e2.message);
        g_warning("instance %s: its checkpoints are not removed from the store yet: %s; "
                  "retried every %u s", uuid, e.message, c->w->cfg->store.checkpoint_interval);
        return;
    }
    if (!removed)
        g_message("instance %s: its checkpoints belong to another host now; left in the store",
                  uuid);
}

/* ---- the I/O thread ------------------------------------------------------------------ */

GPtrArray *
vtpm_checkpointer_due(vtpm_checkpointer *c)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;

    g_mutex_lock(&c->lock);
    g_hash_table_iter_init(&it, c->due);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(out, g_strdup(k));
    g_hash_table_remove_all(c->due);
    g_mutex_unlock(&c->lock);
    return out;
}

/* ---- the thread: uploads ------------------------------------------------------------- */

static void
uploaded(vtpm_checkpointer *c, const pending *p, double ms)
{
    const vtpm_ckpt_snapshot *s = p->snap;
    vtpm_error e = { 0 };
    bool was_failing;

    vtpm_metrics_checkpoint(s->uuid, true);
    /* Not kept: the next vtpmd checkpoints this state once more. */
    if (vtpm_ckpt_print_save(c->w, s->uuid, &s->print, &e) < 0)
        g_warning("instance %s: %s", s->uuid, e.message);
    g_mutex_lock(&c->lock);
    {
        inst *i = inst_get(c, s->uuid);

        copy_print(&i->last, &s->print);
        was_failing = i->failing;
        i->failing = false;
        i->unverified = false;
    }
    g_mutex_unlock(&c->lock);
    if (was_failing)
        g_message("checkpoints of instance %s work again", s->uuid);
    g_message("checkpoint instance=%s generation=%" G_GUINT64_FORMAT " bytes=%zu reason=%s "
              "snapshot_ms=%.1f upload_ms=%.1f",
              s->uuid, s->generation, g_bytes_get_size(s->archive), s->reason, p->snapshot_ms, ms);
}

/* Send one snapshot; *sconn is opened when needed and kept for the next. */
static void
upload_one(vtpm_checkpointer *c, pending *p, virConnectPtr *sconn)
{
    gint64 t0 = g_get_monotonic_time();
    vtpm_error e = { 0 };
    int rc = 0;

    if (!*sconn)
        rc = vtpm_store_open(c->w->virt, c->w->cfg->store.uri, sconn, &e);
    if (rc == 0)
        rc = vtpm_ckpt_upload(c->w, *sconn, p->snap, &e);
    if (rc == 0) {
        uploaded(c, p, (g_get_monotonic_time() - t0) / 1000.0);
        return;
    }
    failed(c, p->snap->uuid, "upload", &e);
    if (rc == -(int)VTPM_FAULT_INSTANCE_CONFLICT) {
        /* Another host holds the instance: is this copy stale? */
        g_mutex_lock(&c->lock);
        inst_get(c, p->snap->uuid)->unverified = true;
        g_mutex_unlock(&c->lock);
    } else if (*sconn) {
        /* A store that failed may be a dead connection: open anew. */
        vtpm_virt_conn_release(g_steal_pointer(sconn));
    }
}

/* ---- the thread: every interval -------------------------------------------------- */

/* This host's instances: its domains named as vtpmd names them. */
static GPtrArray *
local_instances(vtpm_checkpointer *c)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(virConnect) conn = NULL;
    virDomainPtr *doms = NULL;
    int n;

    if (vtpm_virt_conn(c->w->virt, &conn, NULL, NULL) < 0 ||
        (n = virConnectListAllDomains(conn, &doms, 0)) < 0)
        return out;
    for (int i = 0; i < n; i++) {
        char uuid[VIR_UUID_STRING_BUFLEN];
        const char *name = virDomainGetName(doms[i]);
        g_autofree char *ours = NULL;

        if (virDomainGetUUIDString(doms[i], uuid) == 0 && name &&
            strcmp(name, (ours = vtpm_domxml_domain_name(uuid))) == 0)
            g_ptr_array_add(out, g_strdup(uuid));
        virDomainFree(doms[i]);
    }
    free(doms);
    return out;
}

/* Check the ownership of those in doubt: a stale one is settled in its
 * slot, the others are fine. */
static void
verify(vtpm_checkpointer *c, virConnectPtr sconn, GPtrArray *uuids)
{
    for (guint k = 0; k < uuids->len; k++) {
        const char *uuid = g_ptr_array_index(uuids, k);
        g_auto(vtpm_owner) cur = { 0 };
        bool doubt;

        g_mutex_lock(&c->lock);
        doubt = inst_get(c, uuid)->unverified;
        g_mutex_unlock(&c->lock);
        if (!doubt || vtpm_owner_read(c->w, sconn, uuid, &cur, NULL) < 0)
            continue;
        g_mutex_lock(&c->lock);
        {
            inst *i = inst_get(c, uuid);

            i->unverified = false;
            i->stale = vtpm_owner_moved_away(c->w, &cur, vtpm_generation_last(c->w, uuid));
            doubt = i->stale;
        }
        g_mutex_unlock(&c->lock);
        if (doubt)
            g_warning("instance %s was evacuated to host %s: the copy on this host is stale; "
                      "fenced and settled in its slot", uuid, cur.host);
    }
}

/* Removals destroy could not make. */
static void
retry_drops(vtpm_checkpointer *c, virConnectPtr sconn)
{
    g_autoptr(GPtrArray) drops = vtpm_ckpt_drops(c->w);

    for (guint k = 0; k < drops->len; k++) {
        const char *uuid = g_ptr_array_index(drops, k);
        vtpm_error e = { 0 };
        bool removed = false;

        if (vtpm_ckpt_remove(c->w, sconn, uuid, &removed, &e) < 0)
            continue;
        vtpm_ckpt_drop_done(c->w, uuid);
        g_message("instance %s: its checkpoints are %s", uuid,
                  removed ? "removed from the store now" : "another host's now; left there");
    }
}

static void
prune(vtpm_checkpointer *c, virConnectPtr sconn)
{
    vtpm_error e = { 0 };
    unsigned n = 0;

    if (vtpm_fence_prune_generations(c->w, sconn, &n, &e) < 0)
        g_warning("generation records not pruned: %s", e.message);
    else if (n)
        g_message("dropped %u generation record(s) of instances that left this host: their "
                  "ownership records guard them now", n);
}

/* Whether an instance's ownership is in doubt, or the start could not
 * check it. */
static bool
in_doubt(vtpm_checkpointer *c)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&c->lock);
    GHashTableIter it;
    gpointer v;

    if (c->unverified_all)
        return true;
    g_hash_table_iter_init(&it, c->insts);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((inst *)v)->unverified)
            return true;
    }
    return false;
}

static void
tick(vtpm_checkpointer *c, gint64 *next_prune_us)
{
    g_autoptr(GPtrArray) uuids = local_instances(c);
    g_autoptr(GPtrArray) drops = vtpm_ckpt_drops(c->w);
    g_autoptr(virConnect) sconn = NULL;

    g_mutex_lock(&c->lock);
    for (guint k = 0; k < uuids->len; k++)
        g_hash_table_add(c->due, g_strdup(g_ptr_array_index(uuids, k)));
    g_mutex_unlock(&c->lock);
    /* The rest is the store's, when there is something to ask it; out of
     * reach, all of it waits a tick. */
    if ((!drops->len && !in_doubt(c) && g_get_monotonic_time() < *next_prune_us) ||
        vtpm_store_open(c->w->virt, c->w->cfg->store.uri, &sconn, NULL) < 0)
        return;
    verify(c, sconn, uuids);
    g_mutex_lock(&c->lock);
    c->unverified_all = false;
    g_mutex_unlock(&c->lock);
    retry_drops(c, sconn);
    if (g_get_monotonic_time() >= *next_prune_us) {
        prune(c, sconn);
        *next_prune_us = g_get_monotonic_time() + PRUNE_INTERVAL_US;
    }
}

static gpointer
thread_main(gpointer data)
{
    vtpm_checkpointer *c = data;
    g_autoptr(virConnect) sconn = NULL;
    gint64 next_tick = g_get_monotonic_time() + c->interval_us;
    gint64 next_prune = g_get_monotonic_time() + PRUNE_INTERVAL_US;

    g_mutex_lock(&c->lock);
    while (!c->stop) {
        pending *p;

        if (g_get_monotonic_time() >= next_tick) {
            g_mutex_unlock(&c->lock);
            tick(c, &next_prune);
            g_mutex_lock(&c->lock);
            next_tick = g_get_monotonic_time() + c->interval_us;
            continue;
        }
        if (!(p = g_queue_pop_head(&c->queue))) {
            g_mutex_unlock(&c->lock);
            /* Idle: a store connection is not held open for nothing. */
            g_clear_pointer(&sconn, vtpm_virt_conn_release);
            g_mutex_lock(&c->lock);
            if (!c->stop && g_queue_is_empty(&c->queue))
                g_cond_wait_until(&c->cond, &c->lock, next_tick);
            continue;
        }
        g_strlcpy(c->uploading, p->snap->uuid, sizeof(c->uploading));
        g_mutex_unlock(&c->lock);
        upload_one(c, p, &sconn);
        pending_free(p);
        g_mutex_lock(&c->lock);
        c->uploading[0] = '\0';
        g_cond_broadcast(&c->cond);
    }
    g_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------------- */

/* Before anything is served: every instance of this host against the
 * ownership records, and the generation records pruned. */
static void
first_pass(vtpm_checkpointer *c)
{
    g_autoptr(GPtrArray) uuids = local_instances(c);
    g_autoptr(virConnect) sconn = NULL;
    vtpm_error e = { 0 };

    if (vtpm_store_open(c->w->virt, c->w->cfg->store.uri, &sconn, &e) < 0) {
        g_warning("checkpoints: the state store cannot be reached at start (%s): the ownership "
                  "of this host's instances is checked once it can", e.message);
        c->unverified_all = true;
        return;
    }
    for (guint k = 0; k < uuids->len; k++) {
        const char *uuid = g_ptr_array_index(uuids, k);
        g_autofree char *owner = NULL;
        vtpm_fence_verdict v = VTPM_FENCE_CURRENT;

        if (vtpm_fence_reconcile(c->w, sconn, uuid, &v, &owner, &e) < 0) {
            g_warning("instance %s: ownership not checked at start: %s", uuid, e.message);
            inst_get(c, uuid)->unverified = true;
        } else if (v == VTPM_FENCE_REMOVED) {
            g_warning("instance %s was evacuated to host %s: its stale domain and TPM state are "
                      "removed from this host", uuid, owner);
        } else if (v == VTPM_FENCE_STALE) {
            g_warning("instance %s was evacuated to host %s: its stale copy here is fenced (not "
                      "started) until that host is confirmed to run it", uuid, owner);
            inst_get(c, uuid)->stale = true;
        } else if (v == VTPM_FENCE_RUNNING) {
            g_warning("instance %s runs here although it was evacuated to host %s: this copy "
                      "is stale and fenced; it is removed once it stops", uuid, owner);
            inst_get(c, uuid)->stale = true;
        }
    }
    prune(c, sconn);
}

int
vtpm_checkpointer_start(vtpm_worker *w, vtpm_checkpointer **out, vtpm_error *err)
{
    g_autoptr(GError) gerr = NULL;
    vtpm_checkpointer *c;

    *out = NULL;
    if (!vtpm_owner_enabled(w)) {
        g_message("checkpoints: off (%s)", w->cfg->store.uri ? "[store] checkpoint_interval is 0"
                                                              : "[store] uri is not set: they "
                                                                "need a store other hosts reach");
        return 0;
    }
    c = g_new0(vtpm_checkpointer, 1);
    c->w = w;
    c->interval_us = (gint64)w->cfg->store.checkpoint_interval * G_USEC_PER_SEC;
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->insts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, inst_free);
    c->due = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_queue_init(&c->queue);
    first_pass(c);
    c->thread = g_thread_try_new("checkpoints", thread_main, c, &gerr);
    if (!c->thread) {
        vtpm_checkpointer_stop(c);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot start the checkpoint thread: %s",
                              gerr->message);
    }
    g_message("checkpoints: to pool %s on %s every %u s (and after every state-moving "
              "operation), the newest %u kept", w->cfg->store.checkpoint_pool, w->cfg->store.uri,
              w->cfg->store.checkpoint_interval, w->cfg->store.checkpoint_keep);
    *out = c;
    return 0;
}

void
vtpm_checkpointer_stop(vtpm_checkpointer *c)
{
    guint dropped;

    if (!c)
        return;
    g_mutex_lock(&c->lock);
    c->stop = true;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    if (c->thread)
        g_thread_join(c->thread);
    dropped = g_queue_get_length(&c->queue);
    if (dropped)
        g_message("checkpoints: %u snapshot(s) not sent before the stop", dropped);
    g_queue_clear_full(&c->queue, (GDestroyNotify)pending_free);
    g_hash_table_destroy(c->insts);
    g_hash_table_destroy(c->due);
    g_cond_clear(&c->cond);
    g_mutex_clear(&c->lock);
    g_free(c);
}
