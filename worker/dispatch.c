/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "dispatch.h"
#include "inject.h"
#include "log.h"
#include "methods.h"
#include "metrics.h"
#include "pool.h"
#include "timing.h"

typedef struct job job;

struct vtpm_dispatch {
    vtpm_worker *w;
    vtpm_broker *amqp;
    vtpm_pool *pool;
    uint64_t generation;     /* current connection generation */

    /* I/O thread only: */
    GHashTable *inflight;    /* message_id -> job (running or queued) */
    GHashTable *busy;        /* instance uuid -> GQueue of jobs waiting behind the running one */
    GHashTable *cache;       /* message_id -> GBytes reply (NULL for casts) */
    GQueue cache_order;      /* message_ids, oldest first */
    size_t cache_max;
    unsigned jobs;           /* running + queued */
    gint64 next_caps_us;
    /* [worker] capabilities_interval: how often the capabilities are probed
     * again, so a scheduler learns of a change (swtpm installed, libvirt
     * upgraded) without a restart. */
    gint64 caps_interval_us;
    bool caps_refreshing;
};

struct job {
    vtpm_dispatch *d;
    vtpm_broker_delivery *delivery;
    GPtrArray *waiters;       /* duplicate deliveries (redeliveries) of the same message */
    vtpm_request *req;
    const vtpm_method *method;
    char key[37];             /* instance uuid, "" when not per-instance */
    GBytes *reply;
    bool caps_refresh;        /* internal job: refresh capabilities */
};

static void
job_free(job *j)
{
    if (!j)
        return;
    vtpm_broker_delivery_free(j->delivery);
    if (j->waiters)
        g_ptr_array_free(j->waiters, TRUE);
    vtpm_request_free(j->req);
    if (j->reply)
        g_bytes_unref(j->reply);
    g_free(j);
}

static uint64_t
now_ms(void)
{
    return (uint64_t)(g_get_real_time() / 1000);
}

/* ---- replies (I/O thread) ---------------------------------------------- */

static void
answer(vtpm_dispatch *d, vtpm_broker_delivery *dv, GBytes *reply)
{
    /* A delivery of an earlier connection cannot be acked any more; the
     * broker redelivers it and the cache answers then. */
    if (dv->generation != d->generation)
        return;
    vtpm_broker_post_reply(d->amqp, dv->reply_to, dv->correlation_id,
                         dv->reply_to ? reply : NULL, true, dv->delivery_tag, dv->generation);
}

static void
cache_put(vtpm_dispatch *d, const char *message_id, GBytes *reply)
{
    char *key;

    if (!message_id || d->cache_max == 0 || g_hash_table_contains(d->cache, message_id))
        return;
    while (g_queue_get_length(&d->cache_order) >= d->cache_max) {
        char *old = g_queue_pop_head(&d->cache_order);
        g_hash_table_remove(d->cache, old); /* frees old */
    }
    key = g_strdup(message_id);
    g_hash_table_insert(d->cache, key, reply ? g_bytes_ref(reply) : NULL);
    g_queue_push_tail(&d->cache_order, key);
}

static const char *
delivery_label(const vtpm_broker_delivery *dv)
{
    return dv->message_id ? dv->message_id : "-";
}

/* Answer a request that never reached a handler. */
static void
answer_fault(vtpm_dispatch *d, vtpm_broker_delivery *dv, const char *request_id,
             const char *method, const vtpm_error *err)
{
    g_autoptr(GBytes) reply = vtpm_proto_reply_fault(err);

    /* A peer's string is not a label value: only known method names are. */
    vtpm_metrics_request_done(method && vtpm_methods_find(method) ? method : "unknown",
                              vtpm_fault_name(err->code), 0);
    VTPM_LOG_REQUEST("request_id=%s message_id=%s method=%s instance=- outcome=%s "
                     "duration_ms=0.0 libvirt_ms=0.0 helpers_ms=0.0 error=\"%s\"",
                     request_id ? request_id : "-", delivery_label(dv), method ? method : "-",
                     vtpm_fault_name(err->code), err->message);
    cache_put(d, dv->message_id, reply);
    answer(d, dv, reply);
}

/* ---- the pool ------------------------------------------------------------ */

static void job_done(void *data);

/* Run the handler of @j and log the outcome; the reply in j->reply. */
static void
job_execute(job *j)
{
    vtpm_dispatch *d = j->d;
    vtpm_error err = { 0 };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    gint64 t0 = g_get_monotonic_time(), took;
    double libvirt_ms, helpers_ms;
    int rc;

    vtpm_timing_reset();
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (j->req->has_deadline && now_ms() > j->req->deadline_ms) {
        /* It waited behind another request of the same instance. */
        rc = vtpm_error_set(&err, VTPM_FAULT_EXPIRED,
                            "deadline passed %" G_GUINT64_FORMAT " ms ago while queued",
                            now_ms() - j->req->deadline_ms);
    } else {
        g_autofree char *point = g_strdup_printf("%s.start", j->req->method);

        vtpm_inject(point);
        rc = j->method->fn(d->w, j->req, &pk, &err);
        if (rc < 0 && err.code == VTPM_FAULT_NONE)
            vtpm_error_set(&err, VTPM_FAULT_INTERNAL, "handler failed without a reason");
    }
    j->reply = rc == 0 ? vtpm_proto_reply_ok(sb.data, sb.size) : vtpm_proto_reply_fault(&err);
    msgpack_sbuffer_destroy(&sb);
    took = g_get_monotonic_time() - t0;
    libvirt_ms = vtpm_timing_total_us(VTPM_TIMING_LIBVIRT) / 1000.0;
    helpers_ms = vtpm_timing_total_us(VTPM_TIMING_HELPERS) / 1000.0;
    vtpm_metrics_request_done(j->method->name, rc == 0 ? "ok" : vtpm_fault_name(err.code),
                              took / (double)G_USEC_PER_SEC);

    if (rc == 0)
        VTPM_LOG_REQUEST("request_id=%s message_id=%s method=%s instance=%s outcome=ok "
                         "duration_ms=%.1f libvirt_ms=%.1f helpers_ms=%.1f",
                         j->req->request_id ? j->req->request_id : "-",
                         delivery_label(j->delivery), j->req->method, j->key[0] ? j->key : "-",
                         took / 1000.0, libvirt_ms, helpers_ms);
    else
        VTPM_LOG_REQUEST("request_id=%s message_id=%s method=%s instance=%s outcome=%s "
                         "duration_ms=%.1f libvirt_ms=%.1f helpers_ms=%.1f error=\"%s\"",
                         j->req->request_id ? j->req->request_id : "-",
                         delivery_label(j->delivery), j->req->method, j->key[0] ? j->key : "-",
                         vtpm_fault_name(err.code), took / 1000.0, libvirt_ms, helpers_ms,
                         err.message);
}

static void
job_run(void *data, void *user)
{
    job *j = data;

    if (j->caps_refresh)
        vtpm_worker_refresh_caps(j->d->w, false);
    else
        job_execute(j);
    vtpm_broker_post_call(j->d->amqp, job_done, j);
}

static void
submit(vtpm_dispatch *d, job *j)
{
    vtpm_error err = { 0 };

    /* Only when the system cannot create a thread at all. */
    if (vtpm_pool_push(d->pool, j, &err) < 0)
        g_warning("cannot run a job: %s", err.message);
}

/* Back on the I/O thread. */
static void
job_done(void *data)
{
    job *j = data;
    vtpm_dispatch *d = j->d;

    d->jobs--;
    if (j->caps_refresh) {
        d->caps_refreshing = false;
        job_free(j);
        return;
    }
    vtpm_metrics_request_end();
    if (j->delivery->message_id)
        g_hash_table_remove(d->inflight, j->delivery->message_id);
    /* The cache makes redelivered state changes answer instead of run
     * again; a read served from memory is as cheap to answer afresh, and
     * caching a scheduler's polls would fill it (and ~2 MB) with
     * capability maps, pushing out the replies it exists for. */
    if (!j->method->on_io_thread)
        cache_put(d, j->delivery->message_id, j->reply);
    answer(d, j->delivery, j->reply);
    for (guint i = 0; i < j->waiters->len; i++)
        answer(d, g_ptr_array_index(j->waiters, i), j->reply);

    if (j->key[0]) {
        GQueue *q = g_hash_table_lookup(d->busy, j->key);
        job *next = q ? g_queue_pop_head(q) : NULL;

        if (next)
            submit(d, next);
        else
            g_hash_table_remove(d->busy, j->key);
    }
    job_free(j);
}

/* ---- intake (I/O thread) ------------------------------------------------- */

static int
instance_key(const vtpm_request *req, char out[37], vtpm_error *err)
{
    const msgpack_object *inst = NULL;
    g_autofree char *uuid = NULL;
    int rc;

    if ((rc = vtpm_proto_get_map(&req->args, "args", "instance", true, &inst, err)) < 0)
        return rc;
    if ((rc = vtpm_proto_get_str(inst, "args.instance", "uuid", true, 64, &uuid, err)) < 0)
        return rc;
    return vtpm_proto_parse_uuid(uuid, "args.instance.uuid", out, err);
}

static void
on_delivery(vtpm_broker_delivery *dv, void *user)
{
    vtpm_dispatch *d = user;
    g_autoptr(vtpm_request) req = NULL;
    g_autofree char *request_id = NULL;
    const vtpm_method *m;
    vtpm_error err = { 0 };
    job *j;

    if (dv->message_id) {
        gpointer cached;
        job *running;

        if (g_hash_table_lookup_extended(d->cache, dv->message_id, NULL, &cached)) {
            g_message("message_id=%s duplicate answered from the reply cache%s",
                      dv->message_id, dv->redelivered ? " (redelivered)" : "");
            answer(d, dv, cached);
            vtpm_broker_delivery_free(dv);
            return;
        }
        running = g_hash_table_lookup(d->inflight, dv->message_id);
        if (running) {
            /* Redelivered while the first copy still runs: answer both
             * with the one result instead of running it twice. */
            g_ptr_array_add(running->waiters, dv);
            return;
        }
    }

    if (dv->oversized) {
        vtpm_error_set(&err, VTPM_FAULT_BAD_REQUEST,
                       "body of %" G_GUINT64_FORMAT " bytes exceeds the limit of %zu bytes",
                       dv->body_size, d->w->limits.max_body);
        answer_fault(d, dv, NULL, NULL, &err);
        vtpm_broker_delivery_free(dv);
        return;
    }
    if (vtpm_proto_decode_request(g_bytes_get_data(dv->body, NULL), g_bytes_get_size(dv->body),
                                  &d->w->limits, &req, &request_id, &err) < 0) {
        answer_fault(d, dv, request_id, NULL, &err);
        vtpm_broker_delivery_free(dv);
        return;
    }
    m = vtpm_methods_find(req->method);
    if (!m) {
        vtpm_error_set(&err, VTPM_FAULT_UNKNOWN_METHOD, "unknown method '%s'", req->method);
        answer_fault(d, dv, req->request_id, req->method, &err);
        vtpm_broker_delivery_free(dv);
        return;
    }
    if (req->has_deadline && now_ms() > req->deadline_ms) {
        vtpm_error_set(&err, VTPM_FAULT_EXPIRED,
                       "deadline_ms %" G_GUINT64_FORMAT " passed %" G_GUINT64_FORMAT " ms ago",
                       req->deadline_ms, now_ms() - req->deadline_ms);
        answer_fault(d, dv, req->request_id, req->method, &err);
        vtpm_broker_delivery_free(dv);
        return;
    }

    j = g_new0(job, 1);
    j->d = d;
    j->method = m;
    if (m->per_instance && instance_key(req, j->key, &err) < 0) {
        g_free(j);
        answer_fault(d, dv, req->request_id, req->method, &err);
        vtpm_broker_delivery_free(dv);
        return;
    }
    j->delivery = dv;
    j->waiters = g_ptr_array_new_with_free_func((GDestroyNotify)vtpm_broker_delivery_free);
    j->req = g_steal_pointer(&req);
    d->jobs++;
    vtpm_metrics_request_begin();
    if (dv->message_id)
        g_hash_table_insert(d->inflight, g_strdup(dv->message_id), j);

    if (m->on_io_thread) {
        job_execute(j);
        job_done(j);
        return;
    }
    if (j->key[0]) {
        GQueue *q = g_hash_table_lookup(d->busy, j->key);

        if (q) {
            g_queue_push_tail(q, j);
            return;
        }
        g_hash_table_insert(d->busy, g_strdup(j->key), g_queue_new());
    }
    submit(d, j);
}

static void
on_connected(uint64_t generation, void *user)
{
    vtpm_dispatch *d = user;

    d->generation = generation;
    if (generation > 1)
        vtpm_metrics_broker_reconnect();
    vtpm_worker_announce_caps(d->w);
}

static void
on_disconnected(uint64_t generation, const char *why, void *user)
{
    /* Nothing to undo: replies of this generation are dropped by answer()
     * and the broker redelivers their requests. */
}

static void
on_wakeup(void *user)
{
    vtpm_dispatch *d = user;
    gint64 now = g_get_monotonic_time();
    job *j;

    if (now < d->next_caps_us || d->caps_refreshing)
        return;
    d->next_caps_us = now + d->caps_interval_us;
    d->caps_refreshing = true;
    j = g_new0(job, 1);
    j->d = d;
    j->caps_refresh = true;
    d->jobs++;
    submit(d, j);
}

bool
vtpm_dispatch_drained(void *user)
{
    vtpm_dispatch *d = user;

    return d->jobs == 0;
}

void
vtpm_dispatch_callbacks(vtpm_dispatch *d, vtpm_broker_callbacks *cb)
{
    cb->on_delivery = on_delivery;
    cb->on_connected = on_connected;
    cb->on_disconnected = on_disconnected;
    cb->on_wakeup = on_wakeup;
    cb->user = d;
}

void
vtpm_dispatch_set_amqp(vtpm_dispatch *d, vtpm_broker *a)
{
    d->amqp = a;
}

static void
queue_free(gpointer q)
{
    g_queue_free_full(q, (GDestroyNotify)job_free);
}

int
vtpm_dispatch_new(vtpm_worker *w, unsigned workers, size_t dedupe_size, vtpm_dispatch **out,
                  vtpm_error *err)
{
    vtpm_dispatch *d = g_new0(vtpm_dispatch, 1);
    int rc;

    d->w = w;
    if ((rc = vtpm_pool_new("worker", workers, job_run, d, &d->pool, err)) < 0) {
        g_free(d);
        return rc;
    }
    d->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    d->busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, queue_free);
    d->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     (GDestroyNotify)g_bytes_unref);
    g_queue_init(&d->cache_order);
    d->cache_max = dedupe_size;
    d->caps_interval_us = (gint64)w->cfg->worker.capabilities_interval * G_USEC_PER_SEC;
    if (d->caps_interval_us <= 0)
        d->caps_interval_us = 60 * G_USEC_PER_SEC;
    d->next_caps_us = g_get_monotonic_time() + d->caps_interval_us;
    *out = d;
    return 0;
}

void
vtpm_dispatch_free(vtpm_dispatch *d)
{
    if (!d)
        return;
    vtpm_pool_free(d->pool);
    g_hash_table_destroy(d->inflight);
    g_hash_table_destroy(d->busy);
    g_queue_clear(&d->cache_order); /* keys are owned by the cache table */
    g_hash_table_destroy(d->cache);
    g_free(d);
}
