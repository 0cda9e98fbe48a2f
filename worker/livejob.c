/* SPDX-License-Identifier: Apache-2.0 */
#include <libvirt/virterror.h>

#include "livejob.h"
#include "timing.h"

/* How often the watcher looks at its job; and how long it leaves libvirt
 * between two aborts: the first may come before libvirt has started the
 * job, or in a phase that cannot be stopped yet. */
#define WATCH_TICK_US (200 * 1000)
#define ABORT_RETRY_US (500 * 1000)

/* Why the watcher aborted a migration. */
typedef enum {
    VTPM_LIVEJOB_RAN,       /* it did not: libvirt's answer stands */
    VTPM_LIVEJOB_TIMED_OUT, /* at its deadline */
    VTPM_LIVEJOB_ABORTED,   /* live_migration_abort asked */
} vtpm_livejob_end;

struct vtpm_livejob {
    char uuid[37];
    /* Guarded by reg_lock, as every field below. */
    GCond cond;   /* a change of abort, done, or a watcher's stop */
    unsigned refs; /* the handler's, and one per waiting abort */
    bool abort;   /* live_migration_abort asked */
    bool done;
    bool migrated; /* when done */
};

/* Few jobs, rare events: one lock for the registry and every job in it. */
static GMutex reg_lock;
static GHashTable *reg; /* uuid -> job; NULL while no job runs */

vtpm_livejob *
vtpm_livejob_begin(const char *uuid)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg_lock);
    vtpm_livejob *j = g_new0(vtpm_livejob, 1);

    g_strlcpy(j->uuid, uuid, sizeof(j->uuid));
    g_cond_init(&j->cond);
    j->refs = 1;
    if (!reg)
        reg = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_replace(reg, j->uuid, j);
    return j;
}

static void
unref_locked(vtpm_livejob *j)
{
    if (--j->refs > 0)
        return;
    g_cond_clear(&j->cond);
    g_free(j);
}

void
vtpm_livejob_finish(vtpm_livejob *j, bool migrated)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg_lock);

    j->done = true;
    j->migrated = migrated;
    g_cond_broadcast(&j->cond);
    if (reg && g_hash_table_lookup(reg, j->uuid) == j)
        g_hash_table_remove(reg, j->uuid);
    /* Nothing stays allocated between migrations. */
    if (reg && g_hash_table_size(reg) == 0)
        g_clear_pointer(&reg, g_hash_table_destroy);
    unref_locked(j);
}

bool
vtpm_livejob_abort_requested(vtpm_livejob *j)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg_lock);

    return j->abort;
}

/* ---- the watcher ------------------------------------------------------- */

typedef struct {
    vtpm_livejob *j;
    virDomainPtr dom;
    gint64 deadline;      /* monotonic us; 0: none */
    bool stop;            /* the migration returned; guarded by reg_lock */
    vtpm_livejob_end how; /* why the watcher aborted; guarded by reg_lock */
} watch;

static bool
want_abort_locked(watch *wt, gint64 now)
{
    if (wt->j->abort) {
        if (wt->how == VTPM_LIVEJOB_RAN)
            wt->how = VTPM_LIVEJOB_ABORTED;
        return true;
    }
    if (wt->deadline && now >= wt->deadline) {
        if (wt->how == VTPM_LIVEJOB_RAN)
            wt->how = VTPM_LIVEJOB_TIMED_OUT;
        return true;
    }
    return false;
}

/* Aborts the job until the migration returns: libvirt ends a migration
 * that is aborted in time with an error, and completes one that is not. */
static gpointer
watch_run(gpointer data)
{
    watch *wt = data;
    gint64 next_try = 0;

    g_mutex_lock(&reg_lock);
    while (!wt->stop) {
        gint64 now = g_get_monotonic_time();

        if (want_abort_locked(wt, now) && now >= next_try) {
            g_mutex_unlock(&reg_lock);
            /* "no job" before libvirt began it: tried again. */
            if (virDomainAbortJob(wt->dom) < 0)
                virResetLastError();
            g_mutex_lock(&reg_lock);
            next_try = now + ABORT_RETRY_US;
            continue;
        }
        g_cond_wait_until(&wt->j->cond, &reg_lock, now + WATCH_TICK_US);
    }
    g_mutex_unlock(&reg_lock);
    return NULL;
}

/* The fault of a migration that failed, from libvirt's error on this
 * thread and why it ended. */
static int
migrate_fault(vtpm_livejob_end how, unsigned timeout_s, vtpm_error *err)
{
    const virError *e = virGetLastError();
    const char *msg = e && e->message ? e->message : "unknown libvirt error";

    switch (how) {
    case VTPM_LIVEJOB_TIMED_OUT:
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "it did not complete within %u s and was aborted (%s)", timeout_s,
                              msg);
    case VTPM_LIVEJOB_ABORTED:
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "it was aborted by live_migration_abort (%s)", msg);
    default:
        break;
    }
    /* What no retry changes: libvirt refuses this guest's migration
     * (storage that is not shared, a device it cannot migrate). */
    if (e && (e->code == VIR_ERR_MIGRATE_UNSAFE || e->code == VIR_ERR_OPERATION_UNSUPPORTED ||
              e->code == VIR_ERR_ARGUMENT_UNSUPPORTED))
        return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_OPERATION, "libvirt refuses it: %s",
                              msg);
    return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "%s", msg);
}

int
vtpm_livejob_migrate(vtpm_livejob *j, virDomainPtr dom, virConnectPtr dconn,
                     virTypedParameterPtr params, int nparams, unsigned flags, unsigned timeout_s,
                     virDomainPtr *out, vtpm_error *err)
{
    watch wt = { .j = j, .dom = dom, .how = VTPM_LIVEJOB_RAN };
    g_autoptr(GError) gerr = NULL;
    virDomainPtr moved;
    GThread *t;

    if (timeout_s)
        wt.deadline = g_get_monotonic_time() + (gint64)timeout_s * G_USEC_PER_SEC;
    /* Without its watcher a migration could neither time out nor be
     * aborted: not started then. */
    t = g_thread_try_new("livejob", watch_run, &wt, &gerr);
    if (!t)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot start a thread: %s",
                              gerr->message);
    moved = VTPM_LV(virDomainMigrate3(dom, dconn, params, (unsigned)nparams, flags));
    g_mutex_lock(&reg_lock);
    wt.stop = true;
    g_cond_broadcast(&j->cond);
    g_mutex_unlock(&reg_lock);
    g_thread_join(t);
    if (!moved)
        return migrate_fault(wt.how, timeout_s, err);
    *out = moved;
    return 0;
}

int
vtpm_livejob_abort(const char *uuid, unsigned wait_s, bool *found, bool *aborted,
                   vtpm_error *err)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg_lock);
    gint64 end = g_get_monotonic_time() + (gint64)wait_s * G_USEC_PER_SEC;
    vtpm_livejob *j = reg ? g_hash_table_lookup(reg, uuid) : NULL;
    bool ended, migrated;

    if (!j) {
        *found = false;
        *aborted = false;
        return 0;
    }
    j->refs++;
    j->abort = true;
    g_cond_broadcast(&j->cond);
    while (!j->done && g_cond_wait_until(&j->cond, &reg_lock, end))
        ;
    ended = j->done;
    migrated = j->migrated;
    unref_locked(j);
    if (!ended)
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                              "the live migration of %s did not stop within %u s", uuid, wait_s);
    *found = true;
    *aborted = !migrated;
    return 0;
}

int
vtpm_livejob_stats(virDomainPtr dom, uint64_t *total_ms, uint64_t *downtime_ms)
{
    virTypedParameterPtr params = NULL;
    unsigned long long total = 0, down = 0;
    int n = 0, type = VIR_DOMAIN_JOB_NONE, rc = -1;

    /* Kept: a redelivered request reads them again. */
    if (VTPM_LV(virDomainGetJobStats(dom, &type, &params, &n,
                                     VIR_DOMAIN_JOB_STATS_COMPLETED |
                                         VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)) < 0) {
        virResetLastError();
        return -1;
    }
    if (type == VIR_DOMAIN_JOB_COMPLETED &&
        virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED, &total) == 1 &&
        virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DOWNTIME, &down) == 1) {
        *total_ms = total;
        *downtime_ms = down;
        rc = 0;
    }
    virTypedParamsFree(params, n);
    return rc;
}

int
vtpm_livejob_active(virDomainPtr dom)
{
    virDomainJobInfo info;

    if (VTPM_LV(virDomainGetJobInfo(dom, &info)) < 0)
        return -1;
    return info.type != VIR_DOMAIN_JOB_NONE;
}
