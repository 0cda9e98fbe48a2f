/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "checkpointer.h"
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
    vtpm_pool *side;         /* methods that run beside their instance's queue */
    uint64_t generation;     /* current connection generation */

    /* I/O thread only: */
    GHashTable *inflight;    /* message_id -> job (running or queued) */
    GHashTable *busy;        /* instance uuid -> GQueue of jobs waiting behind the running one */
    GHashTable *ckpts;       /* instance uuid -> its checkpoint job waiting in busy, if any */
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
    bool draining;           /* stop asked: nothing more starts */
};

struct job {
    vtpm_dispatch *d;
    vtpm_broker_delivery *delivery;
    GPtrArray *waiters;       /* duplicate deliveries (redeliveries) of the same message */
    vtpm_request *req;
    const vtpm_method *method;
    char key[37];             /* instance uuid, "" when not per-instance */
    GBytes *reply;
    /* The reply may answer a redelivery: not a fault that says "try
     * again", which a retry with the same message_id must be able to get
     * past once the cause is gone. */
    bool cacheable;
    bool ok;                  /* the handler succeeded */
    bool caps_refresh;        /* internal job: refresh capabilities */
    bool beside;              /* runs in the side pool, outside its instance's queue */
    /* Internal job in the instance's slot: a checkpoint (checkpointer.h),
     * forced after the method ckpt_after when set. */
    bool ckpt;
    const char *ckpt_after;
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
    if (!vtpm_error_retryable(err))
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
    j->cacheable = rc == 0 || !vtpm_error_retryable(&err);
    j->ok = rc == 0;
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
    else if (j->ckpt)
        vtpm_checkpointer_slot(j->d->w->ckpt, j->key, j->ckpt_after);
    else
        job_execute(j);
    vtpm_broker_post_call(j->d->amqp, job_done, j);
}

static void
submit(vtpm_dispatch *d, job *j)
{
    vtpm_error err = { 0 };

    /* Only when the system cannot create a thread at all. */
    if (vtpm_pool_push(j->beside ? d->side : d->pool, j, &err) < 0)
        g_warning("cannot run a job: %s", err.message);
}

/* Off the books, run or not.  False for an internal job (freed here):
 * it has no request to answer. */
static bool
job_retire(vtpm_dispatch *d, job *j)
{
    d->jobs--;
    if (j->caps_refresh)
        d->caps_refreshing = false;
    if (j->caps_refresh || j->ckpt)
        return false;
    vtpm_metrics_request_end();
    if (j->delivery->message_id)
        g_hash_table_remove(d->inflight, j->delivery->message_id);
    return true;
}

/* The next job of @key's queue runs, or the slot is free. */
static void
release_slot(vtpm_dispatch *d, const char *key)
{
    GQueue *q = g_hash_table_lookup(d->busy, key);
    job *next = q ? g_queue_pop_head(q) : NULL;

    if (!next) {
        g_hash_table_remove(d->busy, key);
        return;
    }
    if (next->ckpt)
        g_hash_table_remove(d->ckpts, key);
    submit(d, next);
}

/*
 * A checkpoint of instance @key in its slot (checkpointer.h): at the head
 * of its queue right after a state-moving method @after (so that the
 * snapshot is of the state that method left), else at the tail.  One
 * waiting per instance: a due one asked for again changes nothing, and
 * becomes forced when a method asks.
 */
static void
ckpt_enqueue(vtpm_dispatch *d, const char *key, const char *after)
{
    job *j = g_hash_table_lookup(d->ckpts, key);
    GQueue *q;

    if (!d->w->ckpt || d->draining)
        return;
    if (j) {
        if (after && !j->ckpt_after)
            j->ckpt_after = after;
        return;
    }
    j = g_new0(job, 1);
    j->d = d;
    j->ckpt = true;
    j->ckpt_after = after;
    g_strlcpy(j->key, key, sizeof(j->key));
    d->jobs++;
    q = g_hash_table_lookup(d->busy, key);
    if (!q) {
        g_hash_table_insert(d->busy, g_strdup(key), g_queue_new());
        submit(d, j);
        return;
    }
    if (after)
        g_queue_push_head(q, j);
    else
        g_queue_push_tail(q, j);
    g_hash_table_insert(d->ckpts, g_strdup(key), j);
}

/* Back on the I/O thread. */
static void
job_done(void *data)
{
    job *j = data;
    vtpm_dispatch *d = j->d;

    if (job_retire(d, j)) {
        /* The cache makes redelivered state changes answer instead of run
         * again; a read served from memory is as cheap to answer afresh,
         * and caching a scheduler's polls would fill it (and ~2 MB) with
         * capability maps, pushing out the replies it exists for. */
        if (!j->method->on_io_thread && j->cacheable)
            cache_put(d, j->delivery->message_id, j->reply);
        answer(d, j->delivery, j->reply);
        for (guint i = 0; i < j->waiters->len; i++)
            answer(d, g_ptr_array_index(j->waiters, i), j->reply);
        if (j->ok && j->method->checkpoint && j->key[0])
            ckpt_enqueue(d, j->key, j->method->name);
    }
    /* A job beside its instance's queue holds no place in it. */
    if (j->key[0] && !j->beside)
        release_slot(d, j->key);
    job_free(j);
}

/* ---- the drain (I/O thread) ---------------------------------------------- */

/* A request that will not start here goes back to its queue, where the
 * next vtpmd of the host takes it: to its caller a restart is only a
 * delay.  A broadcast cannot go back (its queue belongs to this process
 * and goes with it): it is answered Busy, so its caller need not wait for
 * a reply that will never come. */
static void
hand_back(vtpm_dispatch *d, vtpm_broker_delivery *dv, const vtpm_request *req, const char *key)
{
    const char *request_id = req && req->request_id ? req->request_id : "-";
    const char *method = req ? req->method : "-";
    const char *instance = key && key[0] ? key : "-";
    g_autoptr(GBytes) reply = NULL;
    vtpm_error err = { 0 };

    /* Of a lost connection: the broker has requeued it already. */
    if (dv->generation != d->generation)
        return;
    if (!dv->broadcast) {
        g_message("request_id=%s message_id=%s method=%s instance=%s handed back to the queue: "
                  "not started before the drain", request_id, delivery_label(dv), method,
                  instance);
        vtpm_broker_post_requeue(d->amqp, dv->delivery_tag, dv->generation);
        return;
    }
    vtpm_error_set(&err, VTPM_FAULT_BUSY,
                   "the worker of host %s is shutting down and did not start this broadcast",
                   d->w->cfg->worker.host);
    reply = vtpm_proto_reply_fault(&err);
    vtpm_metrics_request_done(req ? req->method : "unknown", vtpm_fault_name(err.code), 0);
    VTPM_LOG_REQUEST("request_id=%s message_id=%s method=%s instance=%s outcome=%s "
                     "duration_ms=0.0 libvirt_ms=0.0 helpers_ms=0.0 error=\"%s\"",
                     request_id, delivery_label(dv), method, instance,
                     vtpm_fault_name(err.code), err.message);
    answer(d, dv, reply);
}

static void
job_hand_back(vtpm_dispatch *d, job *j)
{
    if (!job_retire(d, j)) {
        job_free(j);
        return;
    }
    hand_back(d, j->delivery, j->req, j->key);
    for (guint i = 0; i < j->waiters->len; i++)
        hand_back(d, g_ptr_array_index(j->waiters, i), j->req, j->key);
    job_free(j);
}

static gint
by_delivery_tag(gconstpointer a, gconstpointer b)
{
    const job *x = *(job *const *)a, *y = *(job *const *)b;
    uint64_t tx = x->delivery ? x->delivery->delivery_tag : 0;
    uint64_t ty = y->delivery ? y->delivery->delivery_tag : 0;

    return tx < ty ? -1 : tx > ty;
}

/* Every job that has not started: those the pool holds and those waiting
 * behind a running one of their instance.  Handed back in delivery order,
 * so that the queue keeps each instance's requests in the order sent. */
static void
drain_begin(void *data)
{
    vtpm_dispatch *d = data;
    g_autoptr(GPtrArray) held = vtpm_pool_take_queued(d->pool);
    g_autoptr(GPtrArray) side = vtpm_pool_take_queued(d->side);
    guint heads = held->len;
    GHashTableIter it;
    gpointer q;

    d->draining = true;
    g_hash_table_iter_init(&it, d->busy);
    while (g_hash_table_iter_next(&it, NULL, &q)) {
        job *j;

        while ((j = g_queue_pop_head(q)))
            g_ptr_array_add(held, j);
    }
    /* The pool's jobs head their instance's queue: none runs it now. */
    for (guint i = 0; i < heads; i++) {
        job *j = g_ptr_array_index(held, i);

        if (j->key[0])
            g_hash_table_remove(d->busy, j->key);
    }
    /* After the heads: these hold no place in their instance's queue. */
    g_ptr_array_extend_and_steal(held, g_steal_pointer(&side));
    /* Checkpoint jobs waiting go with the rest (dropped, unanswered). */
    g_hash_table_remove_all(d->ckpts);
    g_ptr_array_sort(held, by_delivery_tag);
    for (guint i = 0; i < held->len; i++)
        job_hand_back(d, g_ptr_array_index(held, i));
    if (held->len)
        g_message("draining: %u job(s) not started handed back; waiting for %u running",
                  held->len, d->jobs);
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

    if (d->draining) {
        /* Taken in the moment between the stop and the cancel. */
        hand_back(d, dv, NULL, NULL);
        vtpm_broker_delivery_free(dv);
        return;
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
    if (m->beside) {
        j->beside = true;
        submit(d, j);
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

/* The instances the checkpointer wants a slot of. */
static void
ckpt_due(vtpm_dispatch *d)
{
    g_autoptr(GPtrArray) due = NULL;

    if (!d->w->ckpt || d->draining)
        return;
    due = vtpm_checkpointer_due(d->w->ckpt);
    for (guint i = 0; i < due->len; i++)
        ckpt_enqueue(d, g_ptr_array_index(due, i), NULL);
}

static void
on_wakeup(void *user)
{
    vtpm_dispatch *d = user;
    gint64 now = g_get_monotonic_time();
    job *j;

    ckpt_due(d);

    if (now < d->next_caps_us || d->caps_refreshing || d->draining)
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
vtpm_dispatch_stop(vtpm_dispatch *d)
{
    vtpm_broker_stop(d->amqp);
    /* After the stop: by the time it runs, the consumers are cancelled
     * or being cancelled, and on_delivery hands back what slips in. */
    vtpm_broker_post_call(d->amqp, drain_begin, d);
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
    /* Two: an abort waits for the job it stops, so one stuck abort must
     * not hold up the next. */
    if ((rc = vtpm_pool_new("beside", 2, job_run, d, &d->side, err)) < 0) {
        vtpm_pool_free(d->pool);
        g_free(d);
        return rc;
    }
    d->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    d->busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, queue_free);
    d->ckpts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
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
    vtpm_pool_free(d->side);
    g_hash_table_destroy(d->inflight);
    g_hash_table_destroy(d->busy);
    g_hash_table_destroy(d->ckpts);
    g_queue_clear(&d->cache_order); /* keys are owned by the cache table */
    g_hash_table_destroy(d->cache);
    g_free(d);
}
