/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RPC calls over the message level: requests sent with a call id (the
 * correlation id) and a message id, replies matched back by call id.  The
 * client remembers its calls in flight so that it can drop what nobody
 * waits for (a second copy of a reply, a reply to a cancelled call) and
 * tell a caller whose call was on a connection lost since.  With
 * VTPM_CLIENT_ALL_REPLIES it remembers nothing and drops nothing.
 */
#include <string.h>

#include "amqp/props.h"
#include "client/private.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_TIMEOUT_MS (24 * 3600 * 1000)
#define MAX_REQUEST_ID 256 /* context.request_id */
#define MAX_STASH 65536    /* replies received and not yet collected */

typedef struct {
    bool fanout;   /* collects every reply until cancelled */
    bool answered; /* a reply of a directed call is in the stash: more copies are dropped */
    bool lost;     /* sent on a connection lost since */
} inflight;

/* One request, its ids resolved. */
typedef struct {
    const char *host;   /* NULL: a broadcast */
    const char *method;
    const void *args;
    size_t len;
    uint64_t deadline_ms;
    char call_id[VTPM_CLIENT_ID_MAX];
    char message_id[VTPM_CLIENT_ID_MAX];
    char request_id[MAX_REQUEST_ID + 1];
} request;

static bool
all_replies(const vtpm_client *c)
{
    return c->flags & VTPM_CLIENT_ALL_REPLIES;
}

/* An optional id of @o: 1..255 bytes, copied to @dst; NULL: a new UUID
 * with @prefix. */
static int
take_id(const char *name, const char *v, const char *prefix, char *dst, size_t size,
        vtpm_error *err)
{
    g_autofree char *uuid = NULL;

    if (v && (!*v || strlen(v) >= size))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s", name,
                              *v ? "too long" : "empty");
    if (v) {
        g_strlcpy(dst, v, size);
        return 0;
    }
    uuid = g_uuid_string_random();
    g_snprintf(dst, size, "%s%s", prefix, uuid);
    return 0;
}

static int
check_args(const void *args, size_t len, vtpm_error *err)
{
    const unsigned char *p = args;

    if (!args || !len)
        return 0;
    /* fixmap, map16, map32 */
    if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "args: not a msgpack map");
    if (vtpm_proto_check(args, len, NULL, err) < 0)
        return vtpm_error_prefix(err, "args");
    return 0;
}

/* The request @q from the caller's arguments, every one checked. */
static int
prepare(request *q, const char *host, const char *method, const void *args, size_t len,
        const vtpm_client_call_opts *o, vtpm_error *err)
{
    static const vtpm_client_call_opts none = { 0 };
    g_autofree char *why = NULL;
    int rc;

    o = o ? o : &none;
    if (host && (!*host || (why = vtpm_proto_worker_host_problem(host))))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host: %s", why ? why : "empty");
    if ((rc = vtpm_proto_check_method(method, err)) < 0 || (rc = check_args(args, len, err)) < 0)
        return rc;
    if (o->timeout_ms < 0 || o->timeout_ms > MAX_TIMEOUT_MS)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "timeout_ms: %d is not in 0..%d",
                              o->timeout_ms, MAX_TIMEOUT_MS);
    *q = (request){ .host = host, .method = method, .args = args, .len = len,
                    .deadline_ms = o->deadline_ms };
    if ((rc = take_id("call_id", o->call_id, "", q->call_id, sizeof(q->call_id), err)) < 0 ||
        (rc = take_id("message_id", o->message_id, "", q->message_id, sizeof(q->message_id),
                      err)) < 0 ||
        (rc = take_id("request_id", o->request_id, "req-", q->request_id,
                      sizeof(q->request_id), err)) < 0)
        return rc;
    return 0;
}

/* Every call in flight was on the connection that was lost. */
static void
lose_all(vtpm_client *c)
{
    GHashTableIter it;
    inflight *e;

    g_hash_table_iter_init(&it, c->calls);
    while (g_hash_table_iter_next(&it, NULL, (gpointer *)&e))
        e->lost = true;
    c->any_lost = g_hash_table_size(c->calls) > 0;
}

static int
publish(vtpm_client *c, const request *q, vtpm_error *err)
{
    g_autofree char *rk = q->host ? g_strdup_printf("%s.%s", c->topic, q->host) : NULL;
    vtpm_client_msg_opts so = { .routing_key = rk ? rk : "", .fanout = !q->host,
                                .correlation_id = q->call_id, .message_id = q->message_id };
    GBytes *body;
    void *data;
    size_t len = 0;
    int rc;

    if (rk && !vtpm_amqp_shortstr_ok(rk))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "host: the routing key <topic>.<host> is over %d bytes",
                              VTPM_AMQP_SHORTSTR_MAX);
    if (c->dead)
        lose_all(c);
    if ((rc = vtpm_client_msg_revive(c, err)) < 0)
        return rc;
    body = vtpm_proto_request_new(q->method, q->args, q->len, q->request_id, q->deadline_ms);
    data = g_bytes_unref_to_data(body, &len);
    rc = vtpm_client_msg_send(c, &so, data, len, NULL, err);
    /* The args may hold a secret. */
    explicit_bzero(data, len);
    g_free(data);
    return rc;
}

/* Send @q and remember it as in flight. */
static int
send_request(vtpm_client *c, const request *q, char *id, vtpm_error *err)
{
    inflight *e;
    int rc;

    if (!all_replies(c) && g_hash_table_contains(c->calls, q->call_id))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "call_id: %s is already in flight",
                              q->call_id);
    if ((rc = publish(c, q, err)) < 0)
        return rc;
    if (!all_replies(c)) {
        e = g_new0(inflight, 1);
        e->fanout = !q->host;
        g_hash_table_insert(c->calls, g_strdup(q->call_id), e);
    }
    if (id)
        g_strlcpy(id, q->call_id, VTPM_CLIENT_ID_MAX);
    return 0;
}

static int
fault_of(vtpm_client_fault *f, const vtpm_error *err, const request *q, const char *host,
         const char *method)
{
    int rc = vtpm_client_fault_from_error(f, err);

    vtpm_client_fault_where(f, host, method, q->message_id, q->call_id);
    return rc;
}

int
vtpm_client_call_send(vtpm_client *c, const char *host, const char *method, const void *args,
                      size_t len, const vtpm_client_call_opts *o, char *id, vtpm_client_fault *f)
{
    request q = { 0 };
    vtpm_error err = { 0 };

    if (!c || !host)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: NULL",
                                     !c ? "client" : "host");
    if (prepare(&q, host, method, args, len, o, &err) < 0 || send_request(c, &q, id, &err) < 0)
        return fault_of(f, &err, &q, host, method);
    return 0;
}

int
vtpm_client_fanout_send(vtpm_client *c, const char *method, const void *args, size_t len,
                        const vtpm_client_call_opts *o, char *id, vtpm_client_fault *f)
{
    request q = { 0 };
    vtpm_error err = { 0 };

    if (!c)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "client: NULL");
    if (prepare(&q, NULL, method, args, len, o, &err) < 0 || send_request(c, &q, id, &err) < 0)
        return fault_of(f, &err, &q, NULL, method);
    return 0;
}

/* ---- collecting ------------------------------------------------------------ */

/* The first stashed message of call @id (any call: NULL), unlinked. */
static vtpm_client_msg *
stash_take(vtpm_client *c, const char *id)
{
    for (GList *l = c->stash.head; l; l = l->next) {
        vtpm_client_msg *m = l->data;

        if (!id || g_strcmp0(m->correlation_id, id) == 0) {
            g_queue_delete_link(&c->stash, l);
            return m;
        }
    }
    return NULL;
}

/* Whether a message just read is kept for a caller. */
static bool
wanted(vtpm_client *c, const vtpm_client_msg *m)
{
    inflight *e;

    if (all_replies(c))
        return true;
    e = m->correlation_id ? g_hash_table_lookup(c->calls, m->correlation_id) : NULL;
    if (!e || (!e->fanout && e->answered))
        return false;
    e->answered = true;
    return true;
}

/* @m handed to the caller: a directed call is done. */
static vtpm_client_reply *
deliver(vtpm_client *c, vtpm_client_msg *m)
{
    inflight *e = m->correlation_id ? g_hash_table_lookup(c->calls, m->correlation_id) : NULL;

    if (e && !e->fanout)
        g_hash_table_remove(c->calls, m->correlation_id);
    return vtpm_client_reply_new(m, &c->lim);
}

/* A call lost with its connection (@id, or any: NULL): forgotten, and
 * Busy naming it.  0 when there is none. */
static int
report_lost(vtpm_client *c, const char *id, vtpm_client_fault *f)
{
    GHashTableIter it;
    const char *key;
    inflight *e;
    int rc;

    if (!c->any_lost)
        return 0;
    g_hash_table_iter_init(&it, c->calls);
    while (g_hash_table_iter_next(&it, (gpointer *)&key, (gpointer *)&e)) {
        if (!e->lost || (id && strcmp(key, id) != 0))
            continue;
        rc = vtpm_client_fault_set(f, VTPM_FAULT_BUSY,
                                   "the connection to the broker was lost with the call in "
                                   "flight: send it again with the same message_id");
        vtpm_client_fault_where(f, NULL, NULL, NULL, key);
        g_hash_table_iter_remove(&it);
        return rc;
    }
    /* A search for any call found none: all were reported. */
    if (!id)
        c->any_lost = false;
    return 0;
}

/* The connection is gone: a fault for @id's caller. */
static int
on_dead(vtpm_client *c, const char *id, const vtpm_error *err, vtpm_client_fault *f)
{
    int rc;

    lose_all(c);
    if ((rc = report_lost(c, id, f)) < 0)
        return rc;
    /* In ALL_REPLIES mode, or every lost call was reported already. */
    rc = vtpm_client_fault_from_error(f, err);
    vtpm_client_fault_where(f, NULL, NULL, NULL, id);
    return rc;
}

static int
check_wait(vtpm_client *c, const char *id, vtpm_client_reply **out, vtpm_client_fault *f)
{
    if (!c || !out)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: NULL",
                                     !c ? "client" : "out");
    if (id && !all_replies(c) && !g_hash_table_contains(c->calls, id))
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "call %s is not in flight", id);
    return 0;
}

int
vtpm_client_wait(vtpm_client *c, const char *id, int timeout_ms, vtpm_client_reply **out,
                 vtpm_client_fault *f)
{
    gint64 end_us = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vtpm_client_msg *m;
    vtpm_error err = { 0 };
    int rc;

    if ((rc = check_wait(c, id, out, f)) < 0)
        return rc;
    if ((m = stash_take(c, id))) {
        *out = deliver(c, m);
        return 0;
    }
    if ((rc = report_lost(c, id, f)) < 0)
        return rc;
    for (;;) {
        if ((rc = vtpm_client_msg_read(c, end_us, &m, &err)) == 1)
            return 1;
        if (rc < 0)
            return on_dead(c, id, &err, f);
        if (!wanted(c, m)) {
            vtpm_client_msg_free(m);
        } else if (!id || g_strcmp0(m->correlation_id, id) == 0) {
            *out = deliver(c, m);
            return 0;
        } else if (c->stash.length >= MAX_STASH) {
            vtpm_client_msg_free(m);
            return vtpm_client_fault_set(f, VTPM_FAULT_INTERNAL,
                                         "over %d replies received and not collected",
                                         MAX_STASH);
        } else {
            g_queue_push_tail(&c->stash, m);
        }
    }
}

int
vtpm_client_cancel(vtpm_client *c, const char *id, vtpm_client_fault *f)
{
    vtpm_client_msg *m;

    if (!c || !id)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: NULL",
                                     !c ? "client" : "id");
    if (all_replies(c))
        return 0;
    if (!g_hash_table_remove(c->calls, id))
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "call %s is not in flight", id);
    while ((m = stash_take(c, id)))
        vtpm_client_msg_free(m);
    return 0;
}

/* ---- one call, start to end ------------------------------------------------ */

/* The reply to @id within @timeout_ms, and what it says. */
static int
await(vtpm_client *c, const request *q, int timeout_ms, vtpm_client_reply **out,
      vtpm_client_fault *f)
{
    vtpm_client_reply *r = NULL;
    int rc = vtpm_client_wait(c, q->call_id, timeout_ms, &r, f);

    if (rc == 1) {
        vtpm_client_cancel(c, q->call_id, NULL);
        return vtpm_client_fault_set(f, VTPM_CLIENT_TIMEOUT, "no reply from %s within %d ms",
                                     q->host, timeout_ms);
    }
    if (rc < 0)
        return rc;
    if ((rc = vtpm_client_reply_result(r, NULL, NULL, f)) < 0) {
        vtpm_client_reply_free(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        vtpm_client_reply_free(r);
    return 0;
}

int
vtpm_client_call(vtpm_client *c, const char *host, const char *method, const void *args,
                 size_t len, const vtpm_client_call_opts *o, vtpm_client_reply **out,
                 vtpm_client_fault *f)
{
    request q = { 0 };
    vtpm_error err = { 0 };
    int rc;

    if (!c || !host)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: NULL",
                                     !c ? "client" : "host");
    if (prepare(&q, host, method, args, len, o, &err) < 0 || send_request(c, &q, NULL, &err) < 0)
        return fault_of(f, &err, &q, host, method);
    rc = await(c, &q, o && o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS, out, f);
    if (rc < 0)
        vtpm_client_fault_where(f, host, method, q.message_id, q.call_id);
    return rc;
}
