/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Notes on rabbitmq-c 0.11, which this module leans on (librabbitmq/
 * amqp_socket.c, wait_frame_inner):
 *
 *   - amqp_simple_wait_frame_noblock(), once its buffer is drained, sends a
 *     heartbeat frame when the send deadline has passed (every frame sent
 *     moves that deadline), so calling it once per wake-up keeps our side
 *     of the heartbeat going.
 *   - It reports a missed broker heartbeat (AMQP_STATUS_HEARTBEAT_TIMEOUT,
 *     two intervals without a byte) only when that deadline is earlier than
 *     the caller's.  A zero timeval is the "immediate" deadline, earlier
 *     than any, so the check would never fire: the loop passes 1 us instead
 *     (still a poll(0)).  Checking it ourselves does not work: heartbeat
 *     frames are swallowed inside the library, and one that arrives between
 *     our poll() and its recv() leaves no trace.
 *   - Heartbeat frames read by wait_frame_inner are swallowed, but the ones
 *     amqp_basic_publish() reads through amqp_try_recv() are queued and come
 *     back from amqp_simple_wait_frame_noblock(): they are ignored here.
 *   - Decoded frames live in per-channel pools; everything a delivery needs
 *     is copied out at once, so the pool is recycled after every frame.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <amqp.h>

#include "amqp/conn.h"
#include "amqp/props.h"
#include "amqp/topology.h"
#include "amqp/url.h"
#include "broker.h"
#include "log.h"
#include "vtpm/proto.h"

enum {
    CHANNEL = 1,
    FRAME_BUDGET = 256,         /* frames per wake-up before posted actions get a turn */
    TICK_MS = 1000,
    BACKOFF_START_MS = 100,
    RECONNECT_MAX_DEFAULT_MS = 30000,
    STABLE_CONNECTION_S = 10,   /* a connection that lived this long resets the backoff */
    PREFETCH_DEFAULT = 16,
};

#define MAX_MESSAGE_DEFAULT ((size_t)1 << 20)
#define MAX_MESSAGE_LIMIT ((size_t)1 << 30)
#define CONTENT_TYPE "application/msgpack"
#define TAG_DIRECT "vtpmd.direct"
#define TAG_FANOUT "vtpmd.fanout"

typedef enum { ACT_REPLY, ACT_REQUEUE, ACT_PUBLISH, ACT_CALL } act_kind;

typedef struct {
    act_kind kind;
    char *exchange;
    char *routing_key; /* ACT_REPLY: the reply_to queue */
    char *correlation_id;
    GBytes *body;
    bool ack;
    uint64_t delivery_tag; /* ACT_REPLY, ACT_REQUEUE */
    uint64_t generation;
    void (*fn)(void *data);
    void *data;
} act;

typedef enum { RX_IDLE, RX_HEADER, RX_BODY } rx_stage;

/* A delivery of this connection not acked yet; ready once its reply went
 * out (acks wait for the end of the batch, see flush_acks()). */
typedef struct {
    uint64_t tag;
    bool ready;
} unacked;

struct vtpm_broker {
    /* Immutable after vtpm_broker_new(). */
    GPtrArray *nodes;                /* vtpm_amqp_node *: url's, then failover_urls' */
    /* I/O thread only: the node in use (nodes[cur]), moved on when a
     * connection cannot be made or is lost. */
    unsigned cur;
    const vtpm_amqp_node *node;
    char *cacert, *cert, *key;
    char *exchange, *queue_type;
    char *queue;                     /* <topic>.<host>, also its routing key */
    char *fanout_exchange;           /* <topic>_fanout */
    char *conn_name;
    unsigned prefetch, heartbeat, reconnect_max_ms;
    size_t max_message_bytes;
    vtpm_broker_callbacks cb;
    int wake_fd;

    /* Any thread. */
    atomic_bool stop_requested;
    GMutex lock;
    GQueue acts;                     /* act *, guarded by lock */
    bool (*drained)(void *user);     /* guarded by lock */
    GThread *io_thread;              /* set by vtpm_broker_run before any post */

    /* I/O thread only. */
    amqp_connection_state_t conn;
    uint64_t generation;
    bool cancelled;                  /* basic.cancel sent for both consumers */
    char *broken;                    /* first reason the connection must go */
    int hb;                          /* negotiated heartbeat, seconds */
    GArray *unacked;                 /* unacked, in delivery (= tag) order */
    rx_stage rx;
    vtpm_broker_delivery *rx_d;
    uint8_t *rx_buf;
    uint64_t rx_got;
};

/* ---- small helpers ------------------------------------------------------- */

void
vtpm_broker_delivery_free(vtpm_broker_delivery *d)
{
    if (!d)
        return;
    g_free(d->exchange);
    g_free(d->routing_key);
    g_free(d->reply_to);
    g_free(d->correlation_id);
    g_free(d->message_id);
    g_free(d->content_type);
    if (d->body)
        g_bytes_unref(d->body);
    g_free(d);
}

static void
act_free(act *x)
{
    if (!x)
        return;
    g_free(x->exchange);
    g_free(x->routing_key);
    g_free(x->correlation_id);
    if (x->body)
        g_bytes_unref(x->body);
    g_free(x);
}

static void
wake(vtpm_broker *a)
{
    uint64_t one = 1;

    /* Only fails when the counter is saturated: a wake-up is pending anyway. */
    if (write(a->wake_fd, &one, sizeof(one)) < 0)
        return;
}

static void
set_broken(vtpm_broker *a, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void
set_broken(vtpm_broker *a, const char *fmt, ...)
{
    va_list ap;

    if (a->broken)
        return;
    va_start(ap, fmt);
    a->broken = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

/* ---- construction ------------------------------------------------------- */

int
vtpm_broker_new(const vtpm_broker_params *params, const vtpm_broker_callbacks *cb,
                vtpm_broker **out, vtpm_error *err)
{
    vtpm_amqp_target target = {
        .url = params ? params->url : NULL,
        .failover_urls = params ? params->failover_urls : NULL,
        .tls = { .cacert = params ? params->cacert : NULL,
                 .cert = params ? params->cert : NULL,
                 .key = params ? params->key : NULL },
    };
    g_autoptr(GPtrArray) nodes = NULL;
    g_autofree char *queue = NULL;
    g_autofree char *fanout = NULL;
    const char *exchange, *topic, *qtype;
    vtpm_broker *a;
    int fd, rc;

    if (!params || !cb || !cb->on_delivery)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "amqp: no parameters or on_delivery");
    if ((rc = vtpm_amqp_target_nodes(&target, &nodes, err)) < 0)
        return rc;
    exchange = params->exchange ? params->exchange : "vtpm";
    topic = params->topic ? params->topic : "vtpm";
    qtype = params->queue_type ? params->queue_type : "classic";
    if (!params->host || !*params->host)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp: no host name");
    if (!*exchange || !*topic)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp: empty exchange or topic");
    if (strcmp(qtype, "classic") != 0 && strcmp(qtype, "quorum") != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "amqp: queue type must be classic or quorum, not \"%s\"", qtype);
    queue = g_strdup_printf("%s.%s", topic, params->host);
    fanout = g_strdup_printf("%s_fanout", topic);
    if (!vtpm_amqp_shortstr_ok(exchange) || !vtpm_amqp_shortstr_ok(queue) ||
        !vtpm_amqp_shortstr_ok(fanout))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "amqp: exchange, queue or fanout exchange name over %d bytes",
                              VTPM_AMQP_SHORTSTR_MAX);
    if (params->prefetch > UINT16_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp: prefetch must be 1..65535");
    if (params->heartbeat > UINT16_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp: heartbeat must be 0..65535 s");
    if (params->max_message_bytes > MAX_MESSAGE_LIMIT)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "amqp: max_message_bytes over %zu",
                              MAX_MESSAGE_LIMIT);

    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "eventfd: %s", g_strerror(errno));

    a = g_new0(vtpm_broker, 1);
    a->nodes = g_steal_pointer(&nodes);
    a->node = a->nodes->pdata[0];
    a->cacert = g_strdup(params->cacert);
    a->cert = g_strdup(params->cert);
    a->key = g_strdup(params->key);
    a->exchange = g_strdup(exchange);
    a->queue_type = g_strdup(qtype);
    a->queue = g_steal_pointer(&queue);
    a->fanout_exchange = g_steal_pointer(&fanout);
    a->conn_name = g_strdup_printf("vtpmd@%s", params->host);
    /* 0 would mean "unlimited" to the broker: deliveries in flight are the
     * one input the broker pushes at us, so they are always bounded. */
    a->prefetch = params->prefetch ? params->prefetch : PREFETCH_DEFAULT;
    a->heartbeat = params->heartbeat;
    a->max_message_bytes = params->max_message_bytes ? params->max_message_bytes
                                                     : MAX_MESSAGE_DEFAULT;
    a->reconnect_max_ms = params->reconnect_max_ms ? params->reconnect_max_ms
                                                   : RECONNECT_MAX_DEFAULT_MS;
    a->cb = *cb;
    a->wake_fd = fd;
    atomic_init(&a->stop_requested, false);
    g_mutex_init(&a->lock);
    g_queue_init(&a->acts);
    a->unacked = g_array_new(FALSE, FALSE, sizeof(unacked));
    *out = a;
    return 0;
}

static void
rx_reset(vtpm_broker *a)
{
    vtpm_broker_delivery_free(g_steal_pointer(&a->rx_d));
    g_clear_pointer(&a->rx_buf, g_free);
    a->rx = RX_IDLE;
    a->rx_got = 0;
}

/* Unexecuted actions are dropped, post_call data included: the loop that
 * could run them is gone. */
void
vtpm_broker_free(vtpm_broker *a)
{
    act *x;

    if (!a)
        return;
    if (a->conn)
        amqp_destroy_connection(a->conn);
    rx_reset(a);
    while ((x = g_queue_pop_head(&a->acts)))
        act_free(x);
    close(a->wake_fd);
    g_array_free(a->unacked, TRUE);
    g_mutex_clear(&a->lock);
    g_free(a->broken);
    g_ptr_array_unref(a->nodes);
    g_free(a->cacert);
    g_free(a->cert);
    g_free(a->key);
    g_free(a->exchange);
    g_free(a->queue_type);
    g_free(a->queue);
    g_free(a->fanout_exchange);
    g_free(a->conn_name);
    g_free(a);
}

/* ---- posting (any thread) ----------------------------------------------- */

static void
post(vtpm_broker *a, act *x)
{
    g_mutex_lock(&a->lock);
    g_queue_push_tail(&a->acts, x);
    g_mutex_unlock(&a->lock);
    /* The I/O thread runs the actions before it polls again (serve() runs
     * them after every pump): waking itself would only cost an eventfd
     * write, a read and an extra poll() per request. */
    if (g_thread_self() != a->io_thread)
        wake(a);
}

void
vtpm_broker_post_reply(vtpm_broker *a, const char *reply_to, const char *correlation_id,
                     GBytes *body, bool ack, uint64_t delivery_tag, uint64_t generation)
{
    act *x = g_new0(act, 1);

    x->kind = ACT_REPLY;
    x->routing_key = g_strdup(reply_to);
    x->correlation_id = g_strdup(correlation_id);
    x->body = body ? g_bytes_ref(body) : NULL;
    x->ack = ack;
    x->delivery_tag = delivery_tag;
    x->generation = generation;
    post(a, x);
}

void
vtpm_broker_post_requeue(vtpm_broker *a, uint64_t delivery_tag, uint64_t generation)
{
    act *x = g_new0(act, 1);

    x->kind = ACT_REQUEUE;
    x->delivery_tag = delivery_tag;
    x->generation = generation;
    post(a, x);
}

void
vtpm_broker_post_publish(vtpm_broker *a, const char *exchange, const char *routing_key,
                         GBytes *body)
{
    act *x = g_new0(act, 1);

    x->kind = ACT_PUBLISH;
    x->exchange = g_strdup(exchange ? exchange : "");
    x->routing_key = g_strdup(routing_key ? routing_key : "");
    x->body = body ? g_bytes_ref(body) : NULL;
    post(a, x);
}

void
vtpm_broker_post_call(vtpm_broker *a, void (*fn)(void *data), void *data)
{
    act *x = g_new0(act, 1);

    x->kind = ACT_CALL;
    x->fn = fn;
    x->data = data;
    post(a, x);
}

void
vtpm_broker_stop(vtpm_broker *a)
{
    atomic_store(&a->stop_requested, true);
    wake(a);
}

void
vtpm_broker_set_drain_check(vtpm_broker *a, bool (*drained)(void *user))
{
    g_mutex_lock(&a->lock);
    a->drained = drained;
    g_mutex_unlock(&a->lock);
}

uint64_t
vtpm_broker_generation(const vtpm_broker *a)
{
    return a->generation;
}

/* ---- actions (I/O thread) ------------------------------------------------ */

static void
publish(vtpm_broker *a, const char *exchange, const char *routing_key, const char *corr,
        GBytes *body)
{
    amqp_basic_properties_t props = { 0 };
    amqp_bytes_t b;
    gsize len;
    int rc;

    if (!vtpm_amqp_shortstr_ok(exchange) || !vtpm_amqp_shortstr_ok(routing_key) ||
        !vtpm_amqp_shortstr_ok(corr)) {
        g_warning("amqp: not publishing to %.64s/%.64s: name over %d bytes", exchange,
                  routing_key, VTPM_AMQP_SHORTSTR_MAX);
        return;
    }
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes(CONTENT_TYPE);
    /* Persistent: a caller that waits on a durable reply queue must not
     * lose an answer to a broker restart (its request is acked by then).
     * Transient reply queues ignore the flag at no cost. */
    props.delivery_mode = 2;
    if (corr) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = amqp_cstring_bytes(corr);
    }
    /* rabbitmq-c takes the body mutable but only reads it. */
    b.bytes = (void *)g_bytes_get_data(body, &len);
    b.len = len;
    rc = amqp_basic_publish(a->conn, CHANNEL, amqp_cstring_bytes(exchange),
                            amqp_cstring_bytes(routing_key), 0, 0, &props, b);
    if (rc != AMQP_STATUS_OK)
        set_broken(a, "publish: %s", amqp_error_string2(rc));
}

static void
ack(vtpm_broker *a, uint64_t tag, bool multiple)
{
    if (!a->broken && amqp_basic_ack(a->conn, CHANNEL, tag, multiple) != AMQP_STATUS_OK)
        set_broken(a, "basic.ack failed");
}

/* Where @tag is in the unacked deliveries; false when it is not there. */
static bool
unacked_find(const vtpm_broker *a, uint64_t tag, guint *index)
{
    guint lo = 0, hi = a->unacked->len;

    while (lo < hi) {
        guint mid = lo + (hi - lo) / 2;

        if (g_array_index(a->unacked, unacked, mid).tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    *index = lo;
    return lo < a->unacked->len && g_array_index(a->unacked, unacked, lo).tag == tag;
}

/* The reply of @tag went out: its ack goes with the batch's. */
static void
ack_later(vtpm_broker *a, uint64_t tag)
{
    guint i;

    if (unacked_find(a, tag, &i))
        g_array_index(a->unacked, unacked, i).ready = true;
    else
        ack(a, tag, false); /* not tracked: never happens, but never leave it */
}

/* Out of the unacked ones at once: a later ack must not name it again. */
static void
requeue(vtpm_broker *a, uint64_t tag)
{
    guint i;

    if (unacked_find(a, tag, &i))
        g_array_remove_index(a->unacked, i);
    if (amqp_basic_reject(a->conn, CHANNEL, tag, 1) != AMQP_STATUS_OK)
        set_broken(a, "basic.reject failed");
}

/* Ack what is ready.  An ack with "multiple" covers every delivery of the
 * channel up to its tag, so it may only cover a run, from the oldest
 * unacked delivery on, whose replies have all gone out: a batch of 16
 * answered requests is one basic.ack instead of 16 frames for us to send
 * and the broker to process.  Ready deliveries behind one still in work
 * (a slow operation in the pool) are acked one by one. */
static void
flush_acks(vtpm_broker *a)
{
    guint run = 0, i = 0;

    if (!a->conn || a->broken)
        return;
    while (run < a->unacked->len && g_array_index(a->unacked, unacked, run).ready)
        run++;
    if (run) {
        ack(a, g_array_index(a->unacked, unacked, run - 1).tag, run > 1);
        g_array_remove_range(a->unacked, 0, run);
    }
    while (i < a->unacked->len) {
        unacked *u = &g_array_index(a->unacked, unacked, i);

        if (!u->ready) {
            i++;
            continue;
        }
        ack(a, u->tag, false);
        g_array_remove_index(a->unacked, i);
    }
}

static void
run_act(vtpm_broker *a, act *x)
{
    if (x->kind == ACT_CALL) {
        x->fn(x->data);
        return;
    }
    /* Not connected: a reply is dropped and its request, never acked, comes
     * back from the broker; an announcement is repeated on reconnect. */
    if (!a->conn || a->broken) {
        g_debug("amqp: not connected: dropping a %s",
                x->kind == ACT_REPLY ? "reply" : x->kind == ACT_REQUEUE ? "requeue" : "publish");
        return;
    }
    if (x->kind == ACT_PUBLISH) {
        if (x->body)
            publish(a, x->exchange, x->routing_key, NULL, x->body);
        return;
    }
    if (x->kind == ACT_REQUEUE) {
        if (x->generation == a->generation)
            requeue(a, x->delivery_tag);
        return;
    }
    if (x->body && x->routing_key)
        publish(a, "", x->routing_key, x->correlation_id, x->body);
    if (!x->ack || a->broken)
        return;
    if (x->generation != a->generation) {
        g_debug("amqp: not acking tag %" PRIu64 " of generation %" PRIu64 " (now %" PRIu64 ")",
                x->delivery_tag, x->generation, a->generation);
        return;
    }
    ack_later(a, x->delivery_tag);
}

/* Hold back what the actions write until they are all written: a reply
 * is three frames and its ack a fourth, each its own send(), and without
 * the cork the ack (and every further reply of the batch) goes out as a
 * segment of its own, waking the broker for each.  Corked, a batch is one
 * transmission.  Best effort: a socket that refuses just sends as before. */
static void
cork(vtpm_broker *a, int on)
{
    int fd = a->conn && !a->broken ? amqp_get_sockfd(a->conn) : -1;

    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}

static void
run_acts(vtpm_broker *a)
{
    GQueue batch;
    act *x;
    bool corked = false;

    /* Until empty: an action may post more (a job's completion posts its
     * reply), and those should go out now, not after another poll(). */
    for (;;) {
        g_mutex_lock(&a->lock);
        batch = a->acts;
        g_queue_init(&a->acts);
        g_mutex_unlock(&a->lock);
        if (g_queue_is_empty(&batch))
            break;
        /* The request lines of these replies go out before the replies. */
        vtpm_log_flush();
        if (!corked) {
            cork(a, 1);
            corked = true;
        }
        while ((x = g_queue_pop_head(&batch))) {
            run_act(a, x);
            act_free(x);
        }
    }
    /* Uncorking sends what is held, also after an action broke the
     * connection (then there is nothing to send). */
    if (corked) {
        flush_acks(a);
        cork(a, 0);
    }
}

static bool
acts_pending(vtpm_broker *a)
{
    bool pending;

    g_mutex_lock(&a->lock);
    pending = !g_queue_is_empty(&a->acts);
    g_mutex_unlock(&a->lock);
    return pending;
}

static bool
drained(vtpm_broker *a)
{
    bool (*fn)(void *user);

    g_mutex_lock(&a->lock);
    fn = a->drained;
    g_mutex_unlock(&a->lock);
    return !fn || fn(a->cb.user);
}

static void
wakeup_done(vtpm_broker *a)
{
    if (a->cb.on_wakeup)
        a->cb.on_wakeup(a->cb.user);
}

static void
eat_wakeups(vtpm_broker *a)
{
    uint64_t n;

    if (read(a->wake_fd, &n, sizeof(n)) < 0)
        return; /* EAGAIN: nothing pending */
}

/* Sleep up to @ms while disconnected, still serving posted actions; returns
 * early on stop. */
static int
idle_wait(vtpm_broker *a, unsigned ms, vtpm_error *err)
{
    int64_t end = g_get_monotonic_time() + (int64_t)ms * 1000;

    for (;;) {
        int64_t left = (end - g_get_monotonic_time()) / 1000;
        struct pollfd p = { .fd = a->wake_fd, .events = POLLIN };

        if (left <= 0 || atomic_load(&a->stop_requested))
            return 0;
        if (poll(&p, 1, (int)MIN(left, TICK_MS)) < 0 && errno != EINTR)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "poll: %s", g_strerror(errno));
        eat_wakeups(a);
        run_acts(a);
        wakeup_done(a);
    }
}

/* Stopped while disconnected: nothing to cancel, just finish the work. */
static int
drain_disconnected(vtpm_broker *a, vtpm_error *err)
{
    for (;;) {
        struct pollfd p = { .fd = a->wake_fd, .events = POLLIN };

        eat_wakeups(a);
        run_acts(a);
        wakeup_done(a);
        if (drained(a)) {
            run_acts(a);
            return 0;
        }
        if (poll(&p, 1, TICK_MS) < 0 && errno != EINTR)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "poll: %s", g_strerror(errno));
    }
}

/* ---- connecting ------------------------------------------------------------ */

static int
declare(vtpm_broker *a, amqp_connection_state_t c, vtpm_error *err)
{
    g_autofree char *fq = NULL;
    int rc;

    amqp_channel_open(c, CHANNEL);
    if ((rc = vtpm_amqp_rpc_check(c, "channel.open", err)) < 0)
        return rc;
    amqp_basic_qos(c, CHANNEL, 0, (uint16_t)a->prefetch, 0);
    if ((rc = vtpm_amqp_rpc_check(c, "basic.qos", err)) < 0 ||
        (rc = vtpm_amqp_declare_exchange(c, CHANNEL, a->exchange, VTPM_AMQP_EXCHANGE_TOPIC,
                                         err)) < 0 ||
        (rc = vtpm_amqp_declare_request_queue(c, CHANNEL, a->queue, a->exchange,
                                              strcmp(a->queue_type, "quorum") == 0, err)) < 0 ||
        (rc = vtpm_amqp_declare_exchange(c, CHANNEL, a->fanout_exchange,
                                         VTPM_AMQP_EXCHANGE_FANOUT, err)) < 0 ||
        (rc = vtpm_amqp_declare_private_queue(c, CHANNEL, &fq, err)) < 0)
        return rc;
    amqp_queue_bind(c, CHANNEL, amqp_cstring_bytes(fq), amqp_cstring_bytes(a->fanout_exchange),
                    amqp_empty_bytes, amqp_empty_table);
    if ((rc = vtpm_amqp_rpc_check(c, "queue.bind (fanout)", err)) < 0)
        return rc;
    amqp_basic_consume(c, CHANNEL, amqp_cstring_bytes(a->queue), amqp_cstring_bytes(TAG_DIRECT),
                       0, 0, 0, amqp_empty_table);
    if ((rc = vtpm_amqp_rpc_check(c, "basic.consume", err)) < 0)
        return rc;
    amqp_basic_consume(c, CHANNEL, amqp_cstring_bytes(fq), amqp_cstring_bytes(TAG_FANOUT), 0, 0,
                       1, amqp_empty_table);
    return vtpm_amqp_rpc_check(c, "basic.consume (fanout)", err);
}

/* 0: connected; 1: failed, try again later (*why); negative: the
 * configuration makes connecting impossible. */
static int
conn_open(vtpm_broker *a, char **why, vtpm_error *err)
{
    vtpm_amqp_tls tls = { .cacert = a->cacert, .cert = a->cert, .key = a->key };
    vtpm_amqp_login login = {
        .heartbeat = a->heartbeat, .connection_name = a->conn_name, .product = "vtpmd",
    };
    amqp_connection_state_t c = NULL;
    vtpm_error e = { 0 };
    int rc = vtpm_amqp_connect(a->node, &tls, &login, &c, &e);

    /* Busy: the broker, not the configuration; tried again later. */
    if (rc == -(int)VTPM_FAULT_BUSY) {
        *why = g_strdup(e.message);
        return 1;
    }
    if (rc < 0) {
        *err = e;
        return rc;
    }
    if (declare(a, c, &e) < 0) {
        *why = g_strdup(e.message);
        amqp_destroy_connection(c);
        return 1;
    }
    amqp_maybe_release_buffers(c);
    a->conn = c;
    a->hb = amqp_get_heartbeat(c);
    a->cancelled = false;
    g_clear_pointer(&a->broken, g_free);
    return 0;
}

static void
conn_close(vtpm_broker *a)
{
    /* Best effort: unacked deliveries go back to the queue either way. */
    amqp_channel_close(a->conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
    rx_reset(a);
}

static void
conn_lost(vtpm_broker *a, const char *why)
{
    uint64_t gen = a->generation;

    rx_reset(a);
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
    g_warning("amqp: lost the connection to %s:%d (generation %" PRIu64 "): %s", a->node->host,
              a->node->port, gen, why);
    if (a->cb.on_disconnected)
        a->cb.on_disconnected(gen, why, a->cb.user);
}

/* ---- receiving ------------------------------------------------------------- */

static void
rx_finish(vtpm_broker *a)
{
    vtpm_broker_delivery *d = g_steal_pointer(&a->rx_d);

    if (!d->oversized)
        /* Wiped on free: a request body may carry instance.vtpm.secret. */
        d->body = a->rx_buf ? vtpm_bytes_new_wiped(g_steal_pointer(&a->rx_buf), d->body_size)
                            : g_bytes_new(NULL, 0);
    rx_reset(a);
    /* After stop() nothing new is started: hand it back to the queue now
     * rather than when the channel closes. */
    if (a->cancelled) {
        if (amqp_basic_reject(a->conn, CHANNEL, d->delivery_tag, 1) != AMQP_STATUS_OK)
            set_broken(a, "basic.reject failed");
        vtpm_broker_delivery_free(d);
        return;
    }
    g_array_append_val(a->unacked, ((unacked){ .tag = d->delivery_tag }));
    a->cb.on_delivery(d, a->cb.user);
}

static void
on_deliver(vtpm_broker *a, const amqp_basic_deliver_t *m)
{
    vtpm_broker_delivery *d = g_new0(vtpm_broker_delivery, 1);

    d->delivery_tag = m->delivery_tag;
    d->generation = a->generation;
    d->redelivered = m->redelivered;
    d->broadcast = m->consumer_tag.len == strlen(TAG_FANOUT) &&
                   memcmp(m->consumer_tag.bytes, TAG_FANOUT, m->consumer_tag.len) == 0;
    d->exchange = vtpm_amqp_bytes_dup(m->exchange);
    d->routing_key = vtpm_amqp_bytes_dup(m->routing_key);
    a->rx_d = d;
    a->rx = RX_HEADER;
}

static void
on_header(vtpm_broker *a, const amqp_frame_t *f)
{
    const amqp_basic_properties_t *p = f->payload.properties.decoded;
    vtpm_broker_delivery *d = a->rx_d;

    if (a->rx != RX_HEADER || f->channel != CHANNEL || f->payload.properties.class_id !=
        AMQP_BASIC_CLASS) {
        set_broken(a, "protocol error: unexpected content header");
        return;
    }
    d->body_size = f->payload.properties.body_size;
    d->reply_to = vtpm_amqp_prop_dup(p, AMQP_BASIC_REPLY_TO_FLAG, p->reply_to);
    d->correlation_id = vtpm_amqp_prop_dup(p, AMQP_BASIC_CORRELATION_ID_FLAG, p->correlation_id);
    d->message_id = vtpm_amqp_prop_dup(p, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    d->content_type = vtpm_amqp_prop_dup(p, AMQP_BASIC_CONTENT_TYPE_FLAG, p->content_type);
    /* The body of an oversized message is read and dropped frame by frame:
     * its size is announced by the peer and must not decide our memory. */
    if (d->body_size > a->max_message_bytes)
        d->oversized = true;
    else if (d->body_size)
        a->rx_buf = g_malloc(d->body_size);
    a->rx_got = 0;
    a->rx = RX_BODY;
    if (d->body_size == 0)
        rx_finish(a);
}

static void
on_body(vtpm_broker *a, const amqp_frame_t *f)
{
    const amqp_bytes_t *b = &f->payload.body_fragment;
    vtpm_broker_delivery *d = a->rx_d;

    if (a->rx != RX_BODY || f->channel != CHANNEL) {
        set_broken(a, "protocol error: unexpected body frame");
        return;
    }
    if (b->len > d->body_size - a->rx_got) {
        set_broken(a, "protocol error: body longer than announced");
        return;
    }
    if (!d->oversized)
        memcpy(a->rx_buf + a->rx_got, b->bytes, b->len);
    a->rx_got += b->len;
    if (a->rx_got == d->body_size)
        rx_finish(a);
}

static void
on_method(vtpm_broker *a, const amqp_frame_t *f)
{
    const amqp_method_t *m = &f->payload.method;

    if (f->channel == CHANNEL && a->rx != RX_IDLE) {
        set_broken(a, "protocol error: method 0x%08x inside a message", m->id);
        return;
    }
    switch (m->id) {
    case AMQP_BASIC_DELIVER_METHOD:
        on_deliver(a, m->decoded);
        return;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *c = m->decoded;
        amqp_channel_close_ok_t ok = { 0 };

        set_broken(a, "channel closed by the broker: %u %.*s", c->reply_code,
                   (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_send_method(a->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *c = m->decoded;
        amqp_connection_close_ok_t ok = { 0 };

        set_broken(a, "connection closed by the broker: %u %.*s", c->reply_code,
                   (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return;
    }
    case AMQP_BASIC_CANCEL_METHOD: {
        const amqp_basic_cancel_t *c = m->decoded;

        /* Queue deleted (or its node gone): reconnecting declares it again. */
        set_broken(a, "consumer %.*s cancelled by the broker", (int)c->consumer_tag.len,
                   (const char *)c->consumer_tag.bytes);
        return;
    }
    case AMQP_BASIC_RETURN_METHOD:
        /* Nothing is published mandatory: a return means the peer and we
         * disagree about the protocol state. */
        set_broken(a, "protocol error: unexpected basic.return");
        return;
    case AMQP_CHANNEL_FLOW_METHOD: {
        const amqp_channel_flow_t *fl = m->decoded;
        amqp_channel_flow_ok_t ok = { .active = fl->active };

        amqp_send_method(a->conn, CHANNEL, AMQP_CHANNEL_FLOW_OK_METHOD, &ok);
        return;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
        g_message("amqp: the broker blocks publishing (resource alarm)");
        return;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        g_message("amqp: the broker accepts publishing again");
        return;
    default:
        /* basic.cancel-ok after stop(), and anything harmless. */
        g_debug("amqp: ignoring method 0x%08x on channel %u", m->id, f->channel);
        return;
    }
}

/* Read what is there, without blocking; false when the budget ran out with
 * frames possibly left. */
static bool
pump(vtpm_broker *a)
{
    for (int i = 0; i < FRAME_BUDGET; i++) {
        struct timeval now = { 0, 1 }; /* not 0: see the top of the file */
        amqp_frame_t f;
        int rc;

        /* Once what was read is used up, serve()'s poll() says whether
         * more came: asking the library would cost a recv() that finds
         * nothing and a poll() of its own, per wake-up.  (The first call
         * of each pump always goes to the library: it sends our heartbeat
         * and notices a missed one of the broker's.)  Not over TLS: there
         * decrypted bytes can wait inside OpenSSL, where neither the
         * library's buffer nor poll() sees them. */
        if (i > 0 && !a->node->tls && !amqp_frames_enqueued(a->conn) &&
            !amqp_data_in_buffer(a->conn))
            return true;
        rc = amqp_simple_wait_frame_noblock(a->conn, &f, &now);
        if (rc == AMQP_STATUS_TIMEOUT)
            return true;
        if (rc == AMQP_STATUS_HEARTBEAT_TIMEOUT) {
            set_broken(a, "nothing from the broker for %d s (missed heartbeats)", a->hb * 2);
            return true;
        }
        if (rc != AMQP_STATUS_OK) {
            set_broken(a, "%s", amqp_error_string2(rc));
            return true;
        }
        switch (f.frame_type) {
        case AMQP_FRAME_METHOD:
            on_method(a, &f);
            break;
        case AMQP_FRAME_HEADER:
            on_header(a, &f);
            break;
        case AMQP_FRAME_BODY:
            on_body(a, &f);
            break;
        default:
            break; /* heartbeat queued by amqp_try_recv() */
        }
        amqp_maybe_release_buffers_on_channel(a->conn, f.channel);
        if (a->broken)
            return true;
    }
    return false;
}

static void
cancel_consumers(vtpm_broker *a)
{
    static const char *const tags[] = { TAG_DIRECT, TAG_FANOUT };

    a->cancelled = true;
    /* Sent without waiting: basic.cancel-ok arrives through pump(). */
    for (size_t i = 0; i < G_N_ELEMENTS(tags); i++) {
        amqp_basic_cancel_t c = { .consumer_tag = amqp_cstring_bytes(tags[i]), .nowait = 0 };

        if (amqp_send_method(a->conn, CHANNEL, AMQP_BASIC_CANCEL_METHOD, &c) != AMQP_STATUS_OK) {
            set_broken(a, "basic.cancel failed");
            return;
        }
    }
    g_message("amqp: consumers cancelled; no new requests will be taken");
}

/* Serve one connection: 0 after a clean stop, 1 when it was lost (*why),
 * negative on an internal failure. */
static int
serve(vtpm_broker *a, char **why, vtpm_error *err)
{
    bool more = false;
    /* Heartbeats are serviced from here only: wake up at least twice per
     * interval. */
    int tick = a->hb > 0 ? MIN(TICK_MS, a->hb * 500) : TICK_MS;

    for (;;) {
        struct pollfd p[2] = {
            { .fd = a->wake_fd, .events = POLLIN },
            { .fd = amqp_get_sockfd(a->conn), .events = POLLIN },
        };
        /* Posts of this thread do not wake it (post()): never sleep on them. */
        bool busy = more || amqp_frames_enqueued(a->conn) || amqp_data_in_buffer(a->conn) ||
                    acts_pending(a);

        if (poll(p, 2, busy ? 0 : tick) < 0 && errno != EINTR)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "poll: %s", g_strerror(errno));
        if (p[0].revents)
            eat_wakeups(a);
        if (atomic_load(&a->stop_requested) && !a->cancelled)
            cancel_consumers(a);
        run_acts(a);
        more = false;
        if (!a->broken) {
            more = !pump(a);
            /* What the deliveries just posted (inline replies, faults). */
            run_acts(a);
        }
        wakeup_done(a);
        if (a->broken) {
            *why = g_steal_pointer(&a->broken);
            return 1;
        }
        if (a->cancelled && drained(a)) {
            /* What was posted before the owner said "drained" still goes out. */
            run_acts(a);
            conn_close(a);
            return 0;
        }
    }
}

static unsigned
next_delay(const vtpm_broker *a, unsigned delay)
{
    return delay ? MIN(a->reconnect_max_ms, delay * 2) : MIN(a->reconnect_max_ms,
                                                             BACKOFF_START_MS);
}

/* Another node of the cluster for the next attempt (no-op with one URL). */
static void
next_url(vtpm_broker *a)
{
    if (a->nodes->len < 2)
        return;
    a->cur = (a->cur + 1) % a->nodes->len;
    a->node = a->nodes->pdata[a->cur];
    g_message("amqp: next attempt with broker node %u of %u (%s:%d)", a->cur + 1, a->nodes->len,
              a->node->host, a->node->port);
}

int
vtpm_broker_run(vtpm_broker *a, vtpm_error *err)
{
    g_autofree char *last_why = NULL;
    unsigned attempts = 0, delay = 0;
    int rc;

    a->io_thread = g_thread_self();
    for (;;) {
        g_autofree char *why = NULL;
        int64_t since;

        if (atomic_load(&a->stop_requested))
            return drain_disconnected(a, err);
        if (delay && (rc = idle_wait(a, delay + g_random_int_range(0, (gint32)(delay / 10) + 1),
                                     err)) < 0)
            return rc;
        if (atomic_load(&a->stop_requested))
            continue;
        attempts++;
        if ((rc = conn_open(a, &why, err)) < 0)
            return rc;
        if (rc > 0) {
            /* Once per outage, and again only if the reason changes. */
            if (g_strcmp0(why, last_why) != 0)
                g_warning("amqp: cannot connect to %s:%d: %s (retrying up to every %u ms)",
                          a->node->host, a->node->port, why, a->reconnect_max_ms);
            else
                g_debug("amqp: attempt %u: %s", attempts, why);
            g_free(last_why);
            last_why = g_steal_pointer(&why);
            delay = next_delay(a, delay);
            /* The next node, after the same backoff: a cluster whose
             * nodes are all down is not hammered. */
            next_url(a);
            continue;
        }
        a->generation++;
        /* Tags are per channel: the old connection's are gone with it. */
        g_array_set_size(a->unacked, 0);
        g_message("amqp: connected to %s:%d vhost %s as %s (generation %" PRIu64
                  ", %u attempt%s)",
                  a->node->host, a->node->port, a->node->vhost, a->conn_name, a->generation,
                  attempts, attempts == 1 ? "" : "s");
        attempts = 0;
        g_clear_pointer(&last_why, g_free);
        if (a->cb.on_connected)
            a->cb.on_connected(a->generation, a->cb.user);
        since = g_get_monotonic_time();
        if ((rc = serve(a, &why, err)) <= 0)
            return rc;
        conn_lost(a, why);
        next_url(a);
        /* A connection that dies right after it was made must not turn
         * into a tight reconnect loop. */
        if (g_get_monotonic_time() - since >= STABLE_CONNECTION_S * G_USEC_PER_SEC)
            delay = 0;
        else
            delay = next_delay(a, delay);
    }
}
