/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The connection and the message level.  A client is used by one thread at
 * a time, so this uses rabbitmq-c's blocking helpers
 * (amqp_consume_message) and no heartbeat: a caller that sits between calls
 * without calling into the library would otherwise be disconnected by the
 * broker.  Every wait is bounded by the caller's timeout instead, and a
 * connection found lost is opened again at the next call (call.c).
 */
#include <stdarg.h>
#include <string.h>

#include <amqp.h>

#include "amqp/conn.h"
#include "amqp/props.h"
#include "amqp/topology.h"
#include "amqp/url.h"
#include "client/headers.h"
#include "client/private.h"

enum {
    CHANNEL = 1,
    MAX_PENDING = 65536,  /* unclaimed messages kept in the stash */
    MAX_TAP_KEYS = 1024,
};

/* rabbitmq-c reads a whole body before its size can be looked at (the
 * broker's max_message_size bounds that); larger bodies are then dropped
 * rather than handed on. */
#define MAX_BODY ((size_t)64 << 20)

void
vtpm_client_msg_free(vtpm_client_msg *m)
{
    if (!m)
        return;
    g_free(m->correlation_id);
    g_free(m->message_id);
    g_free(m->routing_key);
    g_free(m->exchange);
    g_free(m->reply_to);
    g_free(m->content_type);
    if (m->body)
        g_bytes_unref(m->body);
    if (m->headers)
        g_bytes_unref(m->headers);
    g_free(m);
}

/* The connection is unusable from here on; says why. */
static int
die(vtpm_client *c, vtpm_error *err, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static int
die(vtpm_client *c, vtpm_error *err, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    c->dead = true;
    /* Not reaching the broker is not a bug of anyone's: Busy is the
     * retryable "the service cannot be reached now". */
    return vtpm_error_set(err, VTPM_FAULT_BUSY, "amqp client: %s", msg);
}

static int
check_alive(const vtpm_client *c, vtpm_error *err)
{
    if (c->dead)
        return vtpm_error_set(err, VTPM_FAULT_BUSY, "amqp client: connection lost");
    return 0;
}

/* After an RPC: 0, or the client is dead and @err says which step failed. */
static int
rpc_check(vtpm_client *c, const char *what, vtpm_error *err)
{
    g_autofree char *why = vtpm_amqp_rpc_why(amqp_get_rpc_reply(c->conn), what);

    return why ? die(c, err, "%s", why) : 0;
}

static int
open_any(vtpm_client *c, vtpm_error *err)
{
    vtpm_amqp_tls tls = { .cacert = c->cacert, .cert = c->cert, .key = c->key };
    vtpm_error e = { 0 };
    guint i = 0;
    int rc = vtpm_amqp_connect_first(c->nodes, &tls, NULL, &c->conn, &i, &e);

    if (rc == -(int)VTPM_FAULT_BUSY)
        return die(c, err, "cannot connect to the broker at %s", e.message);
    if (rc < 0)
        return vtpm_error_set(err, e.code, "amqp client: %s", e.message);
    g_free(c->broker);
    c->broker = vtpm_amqp_node_display(c->nodes->pdata[i]);
    return 0;
}

/* The exclusive reply queue, consumed. */
static int
consume_replies(vtpm_client *c, vtpm_error *err)
{
    vtpm_error e = { 0 };
    int rc;

    amqp_channel_open(c->conn, CHANNEL);
    if ((rc = rpc_check(c, "channel.open", err)) < 0)
        return rc;
    g_clear_pointer(&c->reply_queue, g_free);
    if (vtpm_amqp_declare_private_queue(c->conn, CHANNEL, &c->reply_queue, &e) < 0)
        return die(c, err, "replies: %s", e.message);
    amqp_basic_consume(c->conn, CHANNEL, amqp_cstring_bytes(c->reply_queue), amqp_empty_bytes, 0,
                       1, 1, amqp_empty_table);
    return rpc_check(c, "basic.consume (replies)", err);
}

/* Open the connection and the reply queue: the client is alive after 0. */
static int
open_conn(vtpm_client *c, vtpm_error *err)
{
    int rc;

    c->dead = true;
    if (c->conn) {
        amqp_destroy_connection(c->conn);
        c->conn = NULL;
    }
    if ((rc = open_any(c, err)) < 0 || (rc = consume_replies(c, err)) < 0)
        return rc;
    amqp_maybe_release_buffers(c->conn);
    c->dead = false;
    return 0;
}

/* The names of @o, checked and kept. */
static int
set_names(vtpm_client *c, const vtpm_client_options *o, vtpm_error *err)
{
    c->exchange = g_strdup(o->exchange ? o->exchange : "vtpm");
    c->topic = g_strdup(o->topic ? o->topic : "vtpm");
    c->fanout_exchange = g_strdup_printf("%s_fanout", c->topic);
    if (!*c->exchange || !*c->topic)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "amqp client: %s: empty", *c->exchange ? "topic" : "exchange");
    /* The routing keys <topic>.<host> must fit too: leave room for a host. */
    if (!vtpm_amqp_shortstr_ok(c->exchange) || !vtpm_amqp_shortstr_ok(c->fanout_exchange))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "amqp client: %s over %d bytes",
                              vtpm_amqp_shortstr_ok(c->exchange) ? "topic" : "exchange",
                              VTPM_AMQP_SHORTSTR_MAX);
    return 0;
}

int
vtpm_client_msg_connect(const vtpm_client_options *o, vtpm_client **out, vtpm_error *err)
{
    static const vtpm_client_options defaults = { 0 };
    vtpm_amqp_target t;
    g_autoptr(vtpm_client) c = NULL;
    int rc;

    if (!o)
        o = &defaults;
    if (o->flags & ~(unsigned)VTPM_CLIENT_ALL_REPLIES)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp client: flags: unknown 0x%x",
                              o->flags & ~(unsigned)VTPM_CLIENT_ALL_REPLIES);
    t = (vtpm_amqp_target){
        .url = o->url ? o->url : VTPM_AMQP_DEFAULT_URL,
        .failover_urls = o->failover_urls,
        .tls = { .cacert = o->cacert, .cert = o->cert, .key = o->key },
    };
    c = g_new0(vtpm_client, 1);
    g_queue_init(&c->stash);
    c->calls = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    c->flags = o->flags;
    vtpm_proto_limits_init(&c->lim);
    c->lim.max_body = MAX_BODY;
    c->dead = true;
    /* Never echo the URL: it may hold a password. */
    if ((rc = vtpm_amqp_target_nodes(&t, &c->nodes, err)) < 0)
        return vtpm_error_prefix(err, "amqp client");
    c->cacert = g_strdup(o->cacert);
    c->cert = g_strdup(o->cert);
    c->key = g_strdup(o->key);
    if ((rc = set_names(c, o, err)) < 0 || (rc = open_conn(c, err)) < 0)
        return rc;
    *out = g_steal_pointer(&c);
    return 0;
}

int
vtpm_client_connect(const vtpm_client_options *o, vtpm_client **out, vtpm_client_fault *f)
{
    vtpm_error err = { 0 };

    if (!out)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "out: NULL");
    if (vtpm_client_msg_connect(o, out, &err) < 0)
        return vtpm_client_fault_from_error(f, &err);
    return 0;
}

int
vtpm_client_msg_revive(vtpm_client *c, vtpm_error *err)
{
    if (!c->dead)
        return 0;
    return open_conn(c, err);
}

void
vtpm_client_free(vtpm_client *c)
{
    if (!c)
        return;
    if (c->conn) {
        if (!c->dead) {
            amqp_channel_close(c->conn, CHANNEL, AMQP_REPLY_SUCCESS);
            amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(c->conn);
    }
    g_queue_clear_full(&c->stash, (GDestroyNotify)vtpm_client_msg_free);
    g_clear_pointer(&c->calls, g_hash_table_unref);
    g_clear_pointer(&c->nodes, g_ptr_array_unref);
    g_free(c->cacert);
    g_free(c->cert);
    g_free(c->key);
    g_free(c->broker);
    g_free(c->exchange);
    g_free(c->topic);
    g_free(c->fanout_exchange);
    g_free(c->reply_queue);
    g_free(c);
}

const char *
vtpm_client_broker(const vtpm_client *c)
{
    return c ? c->broker : NULL;
}

const char *
vtpm_client_reply_queue(const vtpm_client *c)
{
    return c->reply_queue;
}

/* The names and ids of one publication, checked against AMQP's limits. */
static int
check_shortstrs(const char *const *s, size_t n, vtpm_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!vtpm_amqp_shortstr_ok(s[i]))
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "amqp client: a name or id is over %d bytes",
                                  VTPM_AMQP_SHORTSTR_MAX);
    }
    return 0;
}

int
vtpm_client_msg_send(vtpm_client *c, const vtpm_client_msg_opts *o, const void *body, size_t len,
                     char **out_corr, vtpm_error *err)
{
    static const vtpm_client_msg_opts defaults = { 0 };
    g_autofree char *corr = NULL;
    g_autofree char *msg_id = NULL;
    amqp_basic_properties_t props = { 0 };
    const char *exchange, *rk, *reply_to = NULL;
    amqp_bytes_t b;
    int rc;

    if (!o)
        o = &defaults;
    if ((rc = check_alive(c, err)) < 0)
        return rc;
    exchange = o->fanout ? c->fanout_exchange : o->exchange ? o->exchange : c->exchange;
    rk = o->routing_key ? o->routing_key : "";
    if (!o->cast)
        reply_to = o->reply_to ? o->reply_to : c->reply_queue;
    corr = o->correlation_id ? g_strdup(o->correlation_id) : g_uuid_string_random();
    msg_id = o->message_id ? g_strdup(o->message_id) : g_uuid_string_random();
    if ((rc = check_shortstrs((const char *const[]){ exchange, rk, reply_to, corr, msg_id,
                                                     o->content_type },
                              6, err)) < 0)
        return rc;

    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.content_type =
        amqp_cstring_bytes(o->content_type ? o->content_type : VTPM_PROTO_CONTENT_TYPE);
    props.delivery_mode = 2; /* a request should survive a broker restart */
    props.correlation_id = amqp_cstring_bytes(corr);
    props.message_id = amqp_cstring_bytes(msg_id);
    if (reply_to) {
        props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props.reply_to = amqp_cstring_bytes(reply_to);
    }
    /* rabbitmq-c takes the body mutable but only reads it. */
    b.bytes = (void *)body;
    b.len = body ? len : 0;
    rc = amqp_basic_publish(c->conn, CHANNEL, amqp_cstring_bytes(exchange), amqp_cstring_bytes(rk),
                            0, 0, &props, b);
    if (rc != AMQP_STATUS_OK)
        return die(c, err, "publish: %s", amqp_error_string2(rc));
    if (out_corr)
        *out_corr = g_steal_pointer(&corr);
    return 0;
}

static vtpm_client_msg *
msg_from_envelope(const amqp_envelope_t *e)
{
    const amqp_basic_properties_t *p = &e->message.properties;
    vtpm_client_msg *m = g_new0(vtpm_client_msg, 1);

    m->correlation_id = vtpm_amqp_prop_dup(p, AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id);
    m->message_id = vtpm_amqp_prop_dup(p, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    m->reply_to = vtpm_amqp_prop_dup(p, AMQP_BASIC_REPLY_TO_FLAG, p->reply_to);
    m->content_type = vtpm_amqp_prop_dup(p, AMQP_BASIC_CONTENT_TYPE_FLAG, p->content_type);
    m->routing_key = vtpm_amqp_bytes_dup(e->routing_key);
    m->exchange = vtpm_amqp_bytes_dup(e->exchange);
    m->body = g_bytes_new(e->message.body.bytes, e->message.body.len);
    m->headers = vtpm_client_headers_pack(p);
    m->received_us = g_get_monotonic_time();
    return m;
}

/* A closing method from the broker: answered, and the client is dead. */
static int
closed_by_broker(vtpm_client *c, const amqp_frame_t *f, vtpm_error *err)
{
    int rc;

    if (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        amqp_channel_close_ok_t ok = { 0 };

        rc = die(c, err, "channel closed by the broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_send_method(c->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    } else {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        amqp_connection_close_ok_t ok = { 0 };

        rc = die(c, err, "connection closed by the broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    return rc;
}

/* A frame other than basic.deliver is waiting: read and handle it. */
static int
other_frame(vtpm_client *c, vtpm_error *err)
{
    amqp_frame_t f;
    amqp_message_t m;
    int rc;

    if ((rc = amqp_simple_wait_frame(c->conn, &f)) != AMQP_STATUS_OK)
        return die(c, err, "%s", amqp_error_string2(rc));
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 0;
    switch (f.payload.method.id) {
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
        return closed_by_broker(c, &f, err);
    case AMQP_BASIC_CANCEL_METHOD:
        return die(c, err, "a consumed queue was deleted");
    case AMQP_BASIC_RETURN_METHOD:
        /* Not published mandatory, so not expected; read past it. */
        if (amqp_read_message(c->conn, f.channel, &m, 0).reply_type != AMQP_RESPONSE_NORMAL)
            return die(c, err, "cannot read a returned message");
        amqp_destroy_message(&m);
        return 0;
    default:
        return 0;
    }
}

/* The time left until @end_us in @tv; NULL (no limit) when @end_us < 0. */
static struct timeval *
time_left(gint64 end_us, struct timeval *tv)
{
    gint64 left;

    if (end_us < 0)
        return NULL;
    left = end_us - g_get_monotonic_time();
    if (left <= 0)
        left = 1; /* a zero timeval would be "no wait": still poll once */
    tv->tv_sec = left / G_USEC_PER_SEC;
    tv->tv_usec = left % G_USEC_PER_SEC;
    return tv;
}

int
vtpm_client_msg_read(vtpm_client *c, gint64 end_us, vtpm_client_msg **out, vtpm_error *err)
{
    for (;;) {
        amqp_envelope_t e;
        amqp_rpc_reply_t r;
        struct timeval tv;
        g_autofree char *why = NULL;
        int rc;

        if ((rc = check_alive(c, err)) < 0)
            return rc;
        amqp_maybe_release_buffers(c->conn);
        r = amqp_consume_message(c->conn, &e, time_left(end_us, &tv), 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            size_t len = e.message.body.len;
            vtpm_client_msg *m = len <= MAX_BODY ? msg_from_envelope(&e) : NULL;

            amqp_destroy_envelope(&e);
            if (!m) {
                g_warning("amqp client: dropped a %zu-byte message (over %zu)", len, MAX_BODY);
                continue;
            }
            *out = m;
            return 0;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return 1;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            if ((rc = other_frame(c, err)) < 0)
                return rc;
            continue;
        }
        why = vtpm_amqp_rpc_why(r, "receive");
        return die(c, err, "%s", why);
    }
}

static gint64
end_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
}

int
vtpm_client_msg_recv(vtpm_client *c, int timeout_ms, vtpm_client_msg **out, vtpm_error *err)
{
    vtpm_client_msg *m = g_queue_pop_head(&c->stash);

    if (m) {
        *out = m;
        return 0;
    }
    return vtpm_client_msg_read(c, end_of(timeout_ms), out, err);
}

int
vtpm_client_msg_call(vtpm_client *c, const char *routing_key, const void *body, size_t len,
                     int timeout_ms, vtpm_client_msg **out, vtpm_error *err)
{
    vtpm_client_msg_opts o = { .routing_key = routing_key };
    g_autofree char *corr = NULL;
    gint64 end_us = end_of(timeout_ms);
    int rc;

    if ((rc = vtpm_client_msg_send(c, &o, body, len, &corr, err)) < 0)
        return rc;
    for (;;) {
        vtpm_client_msg *m = NULL;

        if ((rc = vtpm_client_msg_read(c, end_us, &m, err)) != 0)
            return rc;
        if (g_strcmp0(m->correlation_id, corr) == 0) {
            *out = m;
            return 0;
        }
        if (c->stash.length >= MAX_PENDING) {
            vtpm_client_msg_free(m);
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                                  "amqp client: over %d unclaimed messages while waiting",
                                  MAX_PENDING);
        }
        g_queue_push_tail(&c->stash, m);
    }
}

int
vtpm_client_declare_exchanges(vtpm_client *c, bool passive, vtpm_error *err)
{
    vtpm_error e = { 0 };
    int rc;

    if ((rc = check_alive(c, err)) < 0)
        return rc;
    if (passive) {
        const char *names[] = { c->exchange, c->fanout_exchange };

        /* The type is not compared when passive: only existence is. */
        for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
            amqp_exchange_declare(c->conn, CHANNEL, amqp_cstring_bytes(names[i]),
                                  amqp_cstring_bytes("topic"), 1, 0, 0, 0, amqp_empty_table);
            if (rpc_check(c, "exchange.declare (passive)", err) < 0)
                return vtpm_error_prefix(err, "%s", names[i]);
        }
        return 0;
    }
    if (vtpm_amqp_declare_exchange(c->conn, CHANNEL, c->exchange, VTPM_AMQP_EXCHANGE_TOPIC,
                                   &e) < 0 ||
        vtpm_amqp_declare_exchange(c->conn, CHANNEL, c->fanout_exchange,
                                   VTPM_AMQP_EXCHANGE_FANOUT, &e) < 0)
        return die(c, err, "%s", e.message);
    return 0;
}

static int
check_tap(const char *exchange, const char *const *keys, size_t nkeys, vtpm_error *err)
{
    if (!exchange || !*exchange || !vtpm_amqp_shortstr_ok(exchange) || nkeys > MAX_TAP_KEYS)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "amqp client: tap needs an exchange name and at most %d keys",
                              MAX_TAP_KEYS);
    for (size_t i = 0; i < nkeys; i++) {
        if (!keys[i] || !vtpm_amqp_shortstr_ok(keys[i]))
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "amqp client: tap key %zu missing or over %d bytes", i,
                                  VTPM_AMQP_SHORTSTR_MAX);
    }
    return 0;
}

int
vtpm_client_tap(vtpm_client *c, const char *exchange, const char *const *keys, size_t nkeys,
                char **out_queue, vtpm_error *err)
{
    g_autofree char *queue = NULL;
    vtpm_error e = { 0 };
    int rc;

    if ((rc = check_alive(c, err)) < 0 || (rc = check_tap(exchange, keys, nkeys, err)) < 0)
        return rc;
    /* Passive: a tap observes, it must not create an exchange of a type of
     * its own choosing.  A missing exchange closes the channel (dead). */
    amqp_exchange_declare(c->conn, CHANNEL, amqp_cstring_bytes(exchange),
                          amqp_cstring_bytes("topic"), 1, 0, 0, 0, amqp_empty_table);
    if ((rc = rpc_check(c, "exchange.declare (passive)", err)) < 0)
        return rc;
    if (vtpm_amqp_declare_private_queue(c->conn, CHANNEL, &queue, &e) < 0)
        return die(c, err, "tap: %s", e.message);
    for (size_t i = 0; i < nkeys; i++) {
        amqp_queue_bind(c->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                        amqp_cstring_bytes(keys[i]), amqp_empty_table);
        if ((rc = rpc_check(c, "queue.bind (tap)", err)) < 0)
            return rc;
    }
    amqp_basic_consume(c->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 1,
                       amqp_empty_table);
    if ((rc = rpc_check(c, "basic.consume (tap)", err)) < 0)
        return rc;
    amqp_maybe_release_buffers(c->conn);
    if (out_queue)
        *out_queue = g_steal_pointer(&queue);
    return 0;
}
