/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <string.h>

#include "fsutil.h"
#include "metrics.h"

/* Upper bounds in seconds, 1 ms .. 10 min: a get_capabilities answers in
 * about a millisecond; a spawn on TCG with swtpm_setup takes seconds, a
 * clean shutdown waits up to [libvirt] shutdown_timeout (60 s default,
 * 3600 max) before a migration or shelve packs the state.  Written as
 * text so that the le labels are exactly these strings. */
static const struct {
    double le;
    const char *text;
} buckets[] = {
    { 0.001, "0.001" }, { 0.0025, "0.0025" }, { 0.005, "0.005" }, { 0.01, "0.01" },
    { 0.025, "0.025" }, { 0.05, "0.05" },     { 0.1, "0.1" },     { 0.25, "0.25" },
    { 0.5, "0.5" },     { 1, "1" },           { 2.5, "2.5" },     { 5, "5" },
    { 10, "10" },       { 30, "30" },         { 60, "60" },       { 120, "120" },
    { 300, "300" },     { 600, "600" },
};
#define NBUCKETS G_N_ELEMENTS(buckets)

typedef struct {
    GHashTable *outcomes;        /* outcome -> guint64 * */
    guint64 counts[NBUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    guint64 count;
    double sum;
} method_stats;

static struct {
    GMutex lock;
    char *version;
    double start_time;       /* Unix seconds */
    bool up;
    GHashTable *methods;     /* method -> method_stats */
    gint64 in_flight;
    guint64 broker_reconnects;
    guint64 libvirt_reconnects;
    guint64 bytes[2];        /* by vtpm_metrics_direction */
    guint64 checkpoints[2];  /* failed, ok */
    GHashTable *ckpt_since;  /* uuid -> double *: Unix seconds of the last checkpoint */
} reg;

static void
method_stats_free(gpointer p)
{
    method_stats *m = p;

    g_hash_table_destroy(m->outcomes);
    g_free(m);
}

void
vtpm_metrics_reset(const char *version)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    g_free(reg.version);
    reg.version = g_strdup(version ? version : "");
    reg.start_time = (double)g_get_real_time() / G_USEC_PER_SEC;
    reg.up = true;
    if (reg.methods)
        g_hash_table_remove_all(reg.methods);
    else
        reg.methods = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, method_stats_free);
    reg.in_flight = 0;
    reg.broker_reconnects = 0;
    reg.libvirt_reconnects = 0;
    memset(reg.bytes, 0, sizeof(reg.bytes));
    memset(reg.checkpoints, 0, sizeof(reg.checkpoints));
    if (reg.ckpt_since)
        g_hash_table_remove_all(reg.ckpt_since);
}

/* The registry works without a reset too (a tool linking the worker
 * library): it is created on first use. */
static void
ensure_locked(void)
{
    if (!reg.methods)
        reg.methods = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, method_stats_free);
    if (!reg.ckpt_since)
        reg.ckpt_since = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

void
vtpm_metrics_set_up(bool up)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    reg.up = up;
}

void
vtpm_metrics_request_begin(void)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    reg.in_flight++;
}

void
vtpm_metrics_request_end(void)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    if (reg.in_flight > 0)
        reg.in_flight--;
}

void
vtpm_metrics_request_done(const char *method, const char *outcome, double seconds)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);
    method_stats *m;
    guint64 *n;
    size_t b = 0;

    ensure_locked();
    if (!method || !*method)
        method = "unknown";
    m = g_hash_table_lookup(reg.methods, method);
    if (!m && g_hash_table_size(reg.methods) >= VTPM_METRICS_MAX_METHODS - 1 &&
        strcmp(method, "other") != 0) {
        method = "other";
        m = g_hash_table_lookup(reg.methods, method);
    }
    if (!m) {
        m = g_new0(method_stats, 1);
        m->outcomes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_insert(reg.methods, g_strdup(method), m);
    }
    n = g_hash_table_lookup(m->outcomes, outcome);
    if (!n) {
        n = g_new0(guint64, 1);
        g_hash_table_insert(m->outcomes, g_strdup(outcome), n);
    }
    (*n)++;
    if (!(seconds >= 0)) /* NaN or a clock that went backwards */
        seconds = 0;
    while (b < NBUCKETS && seconds > buckets[b].le)
        b++;
    m->counts[b]++;
    m->count++;
    m->sum += seconds;
}

void
vtpm_metrics_broker_reconnect(void)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    reg.broker_reconnects++;
}

void
vtpm_metrics_set_libvirt_reconnects(uint64_t total)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    reg.libvirt_reconnects = total;
}

void
vtpm_metrics_state_bytes(vtpm_metrics_direction dir, uint64_t n)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    if ((unsigned)dir < G_N_ELEMENTS(reg.bytes))
        reg.bytes[dir] += n;
}

static double
now_s(void)
{
    return (double)g_get_real_time() / G_USEC_PER_SEC;
}

void
vtpm_metrics_checkpoint(const char *uuid, bool ok)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);
    double *since;

    ensure_locked();
    reg.checkpoints[ok ? 1 : 0]++;
    since = g_hash_table_lookup(reg.ckpt_since, uuid);
    if (!since) {
        since = g_new(double, 1);
        *since = now_s();
        g_hash_table_insert(reg.ckpt_since, g_strdup(uuid), since);
    }
    if (ok)
        *since = now_s();
}

void
vtpm_metrics_checkpoint_current(const char *uuid)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);
    double *since;

    ensure_locked();
    since = g_hash_table_lookup(reg.ckpt_since, uuid);
    if (!since) {
        since = g_new(double, 1);
        g_hash_table_insert(reg.ckpt_since, g_strdup(uuid), since);
    }
    *since = now_s();
}

void
vtpm_metrics_checkpoint_track(const char *uuid)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);
    double *since;

    ensure_locked();
    if (g_hash_table_contains(reg.ckpt_since, uuid))
        return;
    since = g_new(double, 1);
    *since = now_s();
    g_hash_table_insert(reg.ckpt_since, g_strdup(uuid), since);
}

void
vtpm_metrics_checkpoint_forget(const char *uuid)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);

    ensure_locked();
    g_hash_table_remove(reg.ckpt_since, uuid);
}

/* ---- exposition ---------------------------------------------------------- */

/* Label values: backslash, double quote and line feed are escaped. */
static void
append_label(GString *s, const char *name, const char *value)
{
    g_string_append_printf(s, "%s=\"", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            g_string_append(s, "\\\\");
        else if (*p == '"')
            g_string_append(s, "\\\"");
        else if (*p == '\n')
            g_string_append(s, "\\n");
        else
            g_string_append_c(s, *p);
    }
    g_string_append_c(s, '"');
}

static void
family(GString *s, const char *name, const char *type, const char *help)
{
    g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
append_double(GString *s, const char *fmt, double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    /* Not printf: a locale's decimal comma would break the format. */
    g_string_append(s, g_ascii_formatd(buf, sizeof(buf), fmt, v));
}

static gint
cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Keys of @t, sorted: the same values always render the same text. */
static GPtrArray *
sorted_keys(GHashTable *t)
{
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, t);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(keys, k);
    g_ptr_array_sort(keys, cmp_str);
    return keys;
}

static void
render_requests(GString *s, GPtrArray *methods)
{
    family(s, "vtpmd_requests_total", "counter",
           "Requests answered, by method and outcome (ok or the fault code).");
    for (guint i = 0; i < methods->len; i++) {
        const char *method = g_ptr_array_index(methods, i);
        method_stats *m = g_hash_table_lookup(reg.methods, method);
        g_autoptr(GPtrArray) outcomes = sorted_keys(m->outcomes);

        for (guint j = 0; j < outcomes->len; j++) {
            const char *outcome = g_ptr_array_index(outcomes, j);
            guint64 *n = g_hash_table_lookup(m->outcomes, outcome);

            g_string_append(s, "vtpmd_requests_total{");
            append_label(s, "method", method);
            g_string_append_c(s, ',');
            append_label(s, "outcome", outcome);
            g_string_append_printf(s, "} %" G_GUINT64_FORMAT "\n", *n);
        }
    }
}

static void
render_durations(GString *s, GPtrArray *methods)
{
    family(s, "vtpmd_request_duration_seconds", "histogram",
           "Time the handler took to answer a request, by method.");
    for (guint i = 0; i < methods->len; i++) {
        const char *method = g_ptr_array_index(methods, i);
        method_stats *m = g_hash_table_lookup(reg.methods, method);
        guint64 cum = 0;

        for (size_t b = 0; b <= NBUCKETS; b++) {
            cum += m->counts[b];
            g_string_append(s, "vtpmd_request_duration_seconds_bucket{");
            append_label(s, "method", method);
            g_string_append_c(s, ',');
            append_label(s, "le", b < NBUCKETS ? buckets[b].text : "+Inf");
            g_string_append_printf(s, "} %" G_GUINT64_FORMAT "\n", cum);
        }
        g_string_append(s, "vtpmd_request_duration_seconds_sum{");
        append_label(s, "method", method);
        g_string_append(s, "} ");
        append_double(s, "%.6f", m->sum);
        g_string_append(s, "\nvtpmd_request_duration_seconds_count{");
        append_label(s, "method", method);
        g_string_append_printf(s, "} %" G_GUINT64_FORMAT "\n", m->count);
    }
}

/* Under the lock. */
static void
render_checkpoints(GString *s)
{
    g_autoptr(GPtrArray) uuids = sorted_keys(reg.ckpt_since);
    double now = now_s();

    family(s, "vtpmd_checkpoints_total", "counter",
           "Checkpoints of TPM state to the state store, by outcome (ok or failed).");
    g_string_append_printf(s, "vtpmd_checkpoints_total{outcome=\"failed\"} %" G_GUINT64_FORMAT
                              "\nvtpmd_checkpoints_total{outcome=\"ok\"} %" G_GUINT64_FORMAT "\n",
                           reg.checkpoints[0], reg.checkpoints[1]);
    family(s, "vtpmd_checkpoint_age_seconds", "gauge",
           "Seconds since the state store last held an instance's current TPM state (since "
           "vtpmd first tried, while it has none).");
    for (guint i = 0; i < uuids->len; i++) {
        const char *uuid = g_ptr_array_index(uuids, i);
        double *since = g_hash_table_lookup(reg.ckpt_since, uuid);

        g_string_append(s, "vtpmd_checkpoint_age_seconds{");
        append_label(s, "instance", uuid);
        g_string_append(s, "} ");
        append_double(s, "%.3f", MAX(now - *since, 0.0));
        g_string_append_c(s, '\n');
    }
}

char *
vtpm_metrics_render(void)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&reg.lock);
    GString *s = g_string_sized_new(4096);
    g_autoptr(GPtrArray) methods = NULL;
    static const char *const dirs[] = { [VTPM_METRICS_IN] = "in", [VTPM_METRICS_OUT] = "out" };

    ensure_locked();
    methods = sorted_keys(reg.methods);

    family(s, "vtpmd_build_info", "gauge", "Always 1; the version of vtpmd as a label.");
    g_string_append(s, "vtpmd_build_info{");
    append_label(s, "version", reg.version ? reg.version : "");
    g_string_append(s, "} 1\n");
    family(s, "vtpmd_up", "gauge", "1 while vtpmd serves; 0 once it has stopped cleanly.");
    g_string_append_printf(s, "vtpmd_up %d\n", reg.up ? 1 : 0);
    family(s, "vtpmd_start_time_seconds", "gauge", "When vtpmd started, in Unix seconds.");
    g_string_append(s, "vtpmd_start_time_seconds ");
    append_double(s, "%.3f", reg.start_time);
    g_string_append_c(s, '\n');

    render_requests(s, methods);
    render_durations(s, methods);

    family(s, "vtpmd_requests_in_flight", "gauge",
           "Requests taken and not answered yet (running or queued behind their instance).");
    g_string_append_printf(s, "vtpmd_requests_in_flight %" G_GINT64_FORMAT "\n", reg.in_flight);
    family(s, "vtpmd_broker_reconnects_total", "counter",
           "Times the connection to the AMQP broker was established again after a loss.");
    g_string_append_printf(s, "vtpmd_broker_reconnects_total %" G_GUINT64_FORMAT "\n",
                           reg.broker_reconnects);
    family(s, "vtpmd_libvirt_reconnects_total", "counter",
           "Times the libvirt connection was established again after a loss.");
    g_string_append_printf(s, "vtpmd_libvirt_reconnects_total %" G_GUINT64_FORMAT "\n",
                           reg.libvirt_reconnects);
    family(s, "vtpmd_state_bytes_moved_total", "counter",
           "Bytes of vTPM state archives: out = uploaded to a store, in = restored here.");
    for (size_t d = 0; d < G_N_ELEMENTS(dirs); d++) {
        g_string_append(s, "vtpmd_state_bytes_moved_total{");
        append_label(s, "direction", dirs[d]);
        g_string_append_printf(s, "} %" G_GUINT64_FORMAT "\n", reg.bytes[d]);
    }
    render_checkpoints(s);
    return g_string_free(s, FALSE);
}

int
vtpm_metrics_write(const char *path, vtpm_error *err)
{
    g_autofree char *text = vtpm_metrics_render();

    return vtpm_fs_write_atomic(path, text, strlen(text), 0644, err);
}

/* ---- the writer thread ------------------------------------------------------ */

#define FAILURE_LOG_INTERVAL_US ((gint64)3600 * G_USEC_PER_SEC)

struct vtpm_metrics_writer {
    char *path;
    gint64 interval_us;
    void (*collect)(void *user);
    void *user;
    GThread *thread;
    GMutex lock;
    GCond cond;
    bool stop;          /* guarded by lock */
    bool failing;       /* writer thread, then the stopping thread */
    gint64 last_log_us; /* when a failure was last logged */
};

static void
write_once(vtpm_metrics_writer *mw)
{
    vtpm_error err = { 0 };
    gint64 now;

    if (mw->collect)
        mw->collect(mw->user);
    if (vtpm_metrics_write(mw->path, &err) == 0) {
        if (mw->failing)
            g_message("metrics: writing %s works again", mw->path);
        mw->failing = false;
        return;
    }
    now = g_get_monotonic_time();
    if (!mw->failing || now - mw->last_log_us >= FAILURE_LOG_INTERVAL_US) {
        g_warning("metrics: %s%s", err.message,
                  mw->failing ? " (still failing)" : " (logged again hourly while it fails)");
        mw->last_log_us = now;
    }
    mw->failing = true;
}

static gpointer
writer_thread(gpointer data)
{
    vtpm_metrics_writer *mw = data;

    for (;;) {
        gint64 until;

        write_once(mw);
        until = g_get_monotonic_time() + mw->interval_us;
        g_mutex_lock(&mw->lock);
        while (!mw->stop && g_cond_wait_until(&mw->cond, &mw->lock, until))
            ;
        if (mw->stop) {
            g_mutex_unlock(&mw->lock);
            return NULL;
        }
        g_mutex_unlock(&mw->lock);
    }
}

int
vtpm_metrics_writer_start(const char *path, unsigned interval_s, void (*collect)(void *user),
                          void *user, vtpm_metrics_writer **out, vtpm_error *err)
{
    g_autoptr(GError) gerr = NULL;
    vtpm_metrics_writer *mw;

    if (!path || !g_path_is_absolute(path) || interval_s == 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "metrics: need an absolute path and an interval of 1 s or more");
    mw = g_new0(vtpm_metrics_writer, 1);
    mw->path = g_strdup(path);
    mw->interval_us = (gint64)interval_s * G_USEC_PER_SEC;
    mw->collect = collect;
    mw->user = user;
    g_mutex_init(&mw->lock);
    g_cond_init(&mw->cond);
    mw->thread = g_thread_try_new("metrics", writer_thread, mw, &gerr);
    if (!mw->thread) {
        g_mutex_clear(&mw->lock);
        g_cond_clear(&mw->cond);
        g_free(mw->path);
        g_free(mw);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "metrics: cannot start the writer: %s",
                              gerr->message);
    }
    *out = mw;
    return 0;
}

void
vtpm_metrics_writer_stop(vtpm_metrics_writer *mw)
{
    if (!mw)
        return;
    g_mutex_lock(&mw->lock);
    mw->stop = true;
    g_cond_signal(&mw->cond);
    g_mutex_unlock(&mw->lock);
    g_thread_join(mw->thread);

    vtpm_metrics_set_up(false);
    write_once(mw);
    g_mutex_clear(&mw->lock);
    g_cond_clear(&mw->cond);
    g_free(mw->path);
    g_free(mw);
}
