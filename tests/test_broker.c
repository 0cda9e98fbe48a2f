/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm_broker and vtpm_client against a real broker ($VT_AMQP_URL, started by
 * tests/integration.sh).  The server side runs vtpm_broker_run() in a thread
 * with an echo behaviour; bodies starting with "hold" or "stale" change
 * what it does with the delivery (see on_delivery).  Each test gets its
 * own host name, hence its own durable queue, so leftovers of one test
 * cannot reach the next.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "broker.h"
#include "client/msg.h"

#define WAIT_S 60
#define CALL_MS 20000

typedef struct {
    char *body; /* bodies are text here; "" when absent */
    char *exchange;
    char *routing_key;
    char *reply_to;
    char *content_type;
    char *message_id;
    bool redelivered, oversized, has_body;
    uint64_t body_size, generation;
} rec;

typedef struct {
    vtpm_broker *amqp;
    GThread *thread;
    int run_rc;
    vtpm_error run_err;
    char *host;
    char *queue;
    char *rk;

    GMutex lock;
    GCond cond;
    GThread *io_thread;
    uint64_t gen;
    unsigned n_connected, n_disconnected;
    uint64_t lost_gen;
    char *lost_why;
    GPtrArray *recs;      /* rec * */
    GPtrArray *held;      /* vtpm_broker_delivery *, never acked by on_delivery */
    bool returned;
    gint drained;         /* atomic: the drain check's answer */
    gint drain_checks;    /* atomic */
    gint calls_on_io;     /* atomic: post_call callbacks that ran on the I/O thread */
} server;

static const char *amqp_url;
static unsigned host_seq;

/* ---- broker control -------------------------------------------------------- */

static bool
have_rmqctl(void)
{
    return g_getenv("VT_RMQ_NODE") && g_getenv("VT_RMQ_PORT") && g_getenv("VT_ROOT");
}

/* Run an env.sh function (vt_rmqctl ARGS, vt_rmq_restart) on our broker. */
static char *
env_sh(const char *const *args)
{
    const char *src = g_getenv("VT_SRCDIR") ? g_getenv("VT_SRCDIR") : VTPM_SRCDIR;
    g_autofree char *env = g_build_filename(src, "tests", "lib", "env.sh", NULL);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(GError) gerr = NULL;
    g_autofree char *err_out = NULL;
    char *out = NULL;
    int status = 0;

    g_ptr_array_add(argv, (char *)"bash");
    g_ptr_array_add(argv, (char *)"-c");
    /* env.sh empties VT_RMQ_PORT/NODE when sourced: put ours back. */
    g_ptr_array_add(argv, (char *)"p=$VT_RMQ_PORT; n=$VT_RMQ_NODE; source \"$0\"; "
                                  "VT_RMQ_PORT=$p; VT_RMQ_NODE=$n; \"$@\"");
    g_ptr_array_add(argv, env);
    for (size_t i = 0; args[i]; i++)
        g_ptr_array_add(argv, (char *)args[i]);
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      &err_out, &status, &gerr))
        fail_msg("spawn bash: %s", gerr->message);
    if (!g_spawn_check_wait_status(status, NULL)) {
        print_error("%s %s failed:\n%s%s\n", args[0], args[1] ? args[1] : "", out, err_out);
        g_free(out);
        fail();
    }
    return out;
}

static void
close_all_connections(void)
{
    static const char *const args[] = { "vt_rmqctl", "close_all_connections", "vtpm test", NULL };

    g_free(env_sh(args));
}

/* messages_ready + messages_unacknowledged of @queue, -1 when not listed. */
static int
queue_counts(const char *queue, int *ready, int *unacked)
{
    static const char *const args[] = { "vt_rmqctl", "-q", "list_queues", "name",
                                        "messages_ready", "messages_unacknowledged", NULL };
    g_autofree char *out = env_sh(args);
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);

    for (size_t i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit_set(g_strstrip(lines[i]), " \t", -1);

        if (g_strv_length(f) >= 3 && strcmp(f[0], queue) == 0) {
            *ready = atoi(f[1]);
            *unacked = atoi(f[2]);
            return 0;
        }
    }
    return -1;
}

static bool
wait_queue_counts(const char *queue, int want_ready, int want_unacked)
{
    gint64 end = g_get_monotonic_time() + WAIT_S * G_USEC_PER_SEC;
    int ready = -1, unacked = -1;

    do {
        if (queue_counts(queue, &ready, &unacked) == 0 && ready == want_ready &&
            unacked == want_unacked)
            return true;
        g_usleep(200 * 1000);
    } while (g_get_monotonic_time() < end);
    print_error("queue %s: ready %d unacked %d, wanted %d %d\n", queue, ready, unacked,
                want_ready, want_unacked);
    return false;
}

/* ---- the server under test ------------------------------------------------- */

static void
rec_free(rec *r)
{
    g_free(r->body);
    g_free(r->exchange);
    g_free(r->routing_key);
    g_free(r->reply_to);
    g_free(r->content_type);
    g_free(r->message_id);
    g_free(r);
}

static bool
body_is(const vtpm_broker_delivery *d, const char *prefix)
{
    gsize n;
    const char *b;

    if (!d->body)
        return false;
    b = g_bytes_get_data(d->body, &n);
    return n >= strlen(prefix) && memcmp(b, prefix, strlen(prefix)) == 0;
}

static void
on_delivery(vtpm_broker_delivery *d, void *user)
{
    server *s = user;
    rec *r = g_new0(rec, 1);
    g_autoptr(GBytes) reply = NULL;

    r->has_body = d->body != NULL;
    r->body = d->body ? g_strndup(g_bytes_get_data(d->body, NULL),
                                  MIN(g_bytes_get_size(d->body), 256))
                      : g_strdup("");
    r->exchange = g_strdup(d->exchange);
    r->routing_key = g_strdup(d->routing_key);
    r->reply_to = g_strdup(d->reply_to);
    r->content_type = g_strdup(d->content_type);
    r->message_id = g_strdup(d->message_id);
    r->redelivered = d->redelivered;
    r->oversized = d->oversized;
    r->body_size = d->body_size;
    r->generation = d->generation;
    g_mutex_lock(&s->lock);
    g_ptr_array_add(s->recs, r);
    g_cond_broadcast(&s->cond);
    if (body_is(d, "hold") && !d->redelivered) {
        g_ptr_array_add(s->held, d);
        g_mutex_unlock(&s->lock);
        return;
    }
    g_mutex_unlock(&s->lock);

    if (body_is(d, "stale") && !d->redelivered) {
        /* Answer, but ack under a generation that is not the current one. */
        vtpm_broker_post_reply(s->amqp, d->reply_to, d->correlation_id, d->body, true,
                             d->delivery_tag, d->generation + 1000);
        vtpm_broker_delivery_free(d);
        return;
    }
    reply = d->oversized ? g_bytes_new_static("oversized", 9) : g_bytes_ref(d->body);
    vtpm_broker_post_reply(s->amqp, d->reply_to, d->correlation_id, d->reply_to ? reply : NULL,
                         true, d->delivery_tag, d->generation);
    vtpm_broker_delivery_free(d);
}

static void
on_connected(uint64_t generation, void *user)
{
    server *s = user;

    g_mutex_lock(&s->lock);
    s->io_thread = g_thread_self();
    s->gen = generation;
    s->n_connected++;
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
}

static void
on_disconnected(uint64_t generation, const char *why, void *user)
{
    server *s = user;

    g_mutex_lock(&s->lock);
    s->lost_gen = generation;
    g_free(s->lost_why);
    s->lost_why = g_strdup(why);
    s->n_disconnected++;
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
}

static bool
drain_check(void *user)
{
    server *s = user;

    g_atomic_int_inc(&s->drain_checks);
    return g_atomic_int_get(&s->drained);
}

static gpointer
server_thread(gpointer data)
{
    server *s = data;
    int rc = vtpm_broker_run(s->amqp, &s->run_err);

    g_mutex_lock(&s->lock);
    s->run_rc = rc;
    s->returned = true;
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
    return NULL;
}

typedef struct {
    const char *url;       /* NULL: $VT_AMQP_URL */
    const char *queue_type;
    size_t max_message_bytes;
    unsigned heartbeat;
    bool drain;
} server_opts;

typedef bool (*pred_fn)(server *s, const void *arg);

/* Wait (up to WAIT_S) until @pred holds; it runs under s->lock. */
static bool
wait_for(server *s, pred_fn pred, const void *arg)
{
    gint64 end = g_get_monotonic_time() + WAIT_S * G_USEC_PER_SEC;
    bool ok;

    g_mutex_lock(&s->lock);
    while (!(ok = pred(s, arg)) && g_cond_wait_until(&s->cond, &s->lock, end))
        ;
    if (!ok)
        ok = pred(s, arg);
    g_mutex_unlock(&s->lock);
    return ok;
}

static bool
connected_n(server *s, const void *arg)
{
    return s->n_connected >= *(const unsigned *)arg;
}

static bool
has_returned(server *s, const void *arg)
{
    return s->returned;
}

typedef struct {
    const char *body;
    int redelivered; /* -1: either */
} rec_match;

static rec *
find_rec(server *s, const rec_match *m)
{
    for (guint i = 0; i < s->recs->len; i++) {
        rec *r = s->recs->pdata[i];

        if (strcmp(r->body, m->body) == 0 &&
            (m->redelivered < 0 || (int)r->redelivered == m->redelivered))
            return r;
    }
    return NULL;
}

static bool
has_rec(server *s, const void *arg)
{
    return find_rec(s, arg) != NULL;
}

static server *
server_start(const server_opts *o)
{
    server *s = g_new0(server, 1);
    vtpm_broker_params p = { 0 };
    vtpm_broker_callbacks cb = {
        .on_delivery = on_delivery,
        .on_connected = on_connected,
        .on_disconnected = on_disconnected,
        .user = s,
    };
    vtpm_error err = { 0 };
    unsigned one = 1;

    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    s->recs = g_ptr_array_new_with_free_func((GDestroyNotify)rec_free);
    s->held = g_ptr_array_new_with_free_func((GDestroyNotify)vtpm_broker_delivery_free);
    s->host = g_strdup_printf("t%d-%u", (int)getpid(), ++host_seq);
    s->queue = g_strdup_printf("vtpm.%s", s->host);
    s->rk = g_strdup(s->queue);
    p.url = o->url ? o->url : amqp_url;
    p.exchange = "vtpm";
    p.topic = "vtpm";
    p.host = s->host;
    p.queue_type = o->queue_type;
    p.prefetch = 16;
    p.heartbeat = o->heartbeat ? o->heartbeat : 5;
    p.max_message_bytes = o->max_message_bytes ? o->max_message_bytes : 65536;
    p.reconnect_max_ms = 1000;
    if (vtpm_broker_new(&p, &cb, &s->amqp, &err) < 0)
        fail_msg("vtpm_broker_new: %s", err.message);
    if (o->drain)
        vtpm_broker_set_drain_check(s->amqp, drain_check);
    s->thread = g_thread_new("amqp-io", server_thread, s);
    assert_true(wait_for(s, connected_n, &one));
    return s;
}

static void
server_free(server *s)
{
    if (!s)
        return;
    g_atomic_int_set(&s->drained, 1);
    vtpm_broker_stop(s->amqp);
    g_thread_join(s->thread);
    if (s->run_rc != 0)
        print_error("vtpm_broker_run: %d %s\n", s->run_rc, s->run_err.message);
    assert_int_equal(s->run_rc, 0);
    vtpm_broker_free(s->amqp);
    g_ptr_array_free(s->recs, TRUE);
    g_ptr_array_free(s->held, TRUE);
    g_free(s->lost_why);
    g_free(s->host);
    g_free(s->queue);
    g_free(s->rk);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s);
}

static vtpm_client *
client_new(void)
{
    vtpm_client_options p = { .url = amqp_url, .exchange = "vtpm", .topic = "vtpm" };
    vtpm_client *c = NULL;
    vtpm_error err = { 0 };

    if (vtpm_client_msg_connect(&p, &c, &err) < 0)
        fail_msg("vtpm_client_connect: %s", err.message);
    return c;
}

static void
assert_body(const vtpm_client_msg *m, const char *want)
{
    gsize n;
    const char *b = g_bytes_get_data(m->body, &n);

    assert_int_equal(n, strlen(want));
    assert_memory_equal(b, want, n);
}

static vtpm_client_msg *
call(vtpm_client *c, const char *rk, const char *body)
{
    vtpm_client_msg *m = NULL;
    vtpm_error err = { 0 };
    int rc = vtpm_client_msg_call(c, rk, body, strlen(body), CALL_MS, &m, &err);

    if (rc < 0)
        fail_msg("vtpm_client_call: %s", err.message);
    assert_int_equal(rc, 0);
    return m;
}

/* ---- unit level (the URLs themselves: test_amqp_url) ------------------------------ */

static void
test_new_rejects(void **state)
{
    vtpm_broker_callbacks cb = { .on_delivery = on_delivery };
    vtpm_broker_params base = {
        .url = "amqp://guest:guest@127.0.0.1:5672/%2f", .host = "h", .prefetch = 4,
    };
    vtpm_broker_params p;
    vtpm_broker *a = NULL;
    vtpm_error err = { 0 };
    g_autofree char *longhost = g_strnfill(251, 'h');

    p = base;
    p.url = "amqps://guest:guest@127.0.0.1:5671/%2f";
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);
    assert_null(a);
    assert_non_null(strstr(err.message, "cacert"));

    p = base;
    p.url = "amqps://guest:guest@127.0.0.1:5671/%2f";
    p.cacert = "/etc/ssl/certs/ca-certificates.crt";
    p.cert = "/tmp/cert.pem";
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);

    p = base;
    p.queue_type = "lazy";
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);

    p = base;
    p.host = NULL;
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);

    p = base;
    /* <topic>.<host> is a queue name: an AMQP short string. */
    p.host = longhost;
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);

    p = base;
    p.url = "amqp://h/a/b";
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);
    assert_null(a);

    p = base;
    /* A TLS node among the failover ones needs the CA file too. */
    p.failover_urls = (const char *const[]){ "rabbits://u:p@h2/", NULL };
    assert_true(vtpm_broker_new(&p, &cb, &a, &err) < 0);
    assert_non_null(strstr(err.message, "cacert"));

    p = base;
    assert_int_equal(vtpm_broker_new(&p, &cb, &a, &err), 0);
    assert_non_null(a);
    assert_int_equal(vtpm_broker_generation(a), 0);
    vtpm_broker_free(a);
    vtpm_broker_free(NULL);
    vtpm_broker_delivery_free(NULL);
    vtpm_client_free(NULL);
    vtpm_client_msg_free(NULL);
}

/* Unreadable TLS files make connecting impossible: run() fails, no retry. */
static void
test_tls_unreadable_cacert(void **state)
{
    vtpm_broker_callbacks cb = { .on_delivery = on_delivery };
    vtpm_broker_params p = {
        .url = "amqps://guest:guest@127.0.0.1:1/%2f", .host = "h",
        .cacert = "/nonexistent/vtpm-test-ca.pem",
    };
    vtpm_client_options cp = { .url = p.url, .cacert = p.cacert };
    vtpm_client *c = NULL;
    vtpm_broker *a = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_broker_new(&p, &cb, &a, &err), 0);
    assert_true(vtpm_broker_run(a, &err) < 0);
    assert_non_null(strstr(err.message, "/nonexistent/vtpm-test-ca.pem"));
    vtpm_broker_free(a);

    memset(&err, 0, sizeof(err));
    assert_true(vtpm_client_msg_connect(&cp, &c, &err) < 0);
    assert_null(c);
    assert_non_null(strstr(err.message, "/nonexistent/vtpm-test-ca.pem"));
}

/* ---- against the broker ---------------------------------------------------------- */

static void
test_call_roundtrip(void **state)
{
    server_opts o = { 0 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = call(c, s->rk, "hello");
    rec_match want = { "hello", 0 };
    rec *r;

    assert_body(m, "hello");
    assert_non_null(m->correlation_id);
    assert_string_equal(m->content_type, "application/msgpack");
    assert_string_equal(m->routing_key, vtpm_client_reply_queue(c));
    assert_true(wait_for(s, has_rec, &want));
    g_mutex_lock(&s->lock);
    r = find_rec(s, &want);
    assert_string_equal(r->exchange, "vtpm");
    assert_string_equal(r->routing_key, s->rk);
    assert_string_equal(r->reply_to, vtpm_client_reply_queue(c));
    assert_string_equal(r->content_type, "application/msgpack");
    assert_non_null(r->message_id);
    assert_int_equal(r->generation, 1);
    g_mutex_unlock(&s->lock);
    server_free(s);
}

static void
test_quorum_roundtrip(void **state)
{
    server_opts o = { .queue_type = "quorum" };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = call(c, s->rk, "quorum");

    assert_body(m, "quorum");
    server_free(s);
}

/* oslo's multi-host form, as nova.conf writes it: the first node (nothing
 * listens on port 1) is tried first, then the broker's; the trailing '/'
 * is the default vhost.  The worker and the client alike. */
static void
test_multi_host_url(void **state)
{
    const char *auth = strstr(amqp_url, "://") + 3;
    g_autofree char *authority = g_strndup(auth, strcspn(auth, "/"));
    g_autofree char *creds = g_strndup(authority, strcspn(authority, "@"));
    g_autofree char *url = g_strdup_printf("rabbit://%s@127.0.0.1:1,%s/", creds, authority);
    server_opts o = { .url = url };
    vtpm_client_options cp = { .url = url };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;
    vtpm_error err = { 0 };

    if (!strchr(authority, '@'))
        skip();
    s = server_start(&o);
    /* The client goes through the nodes the same way. */
    if (vtpm_client_msg_connect(&cp, &c, &err) < 0)
        fail_msg("vtpm_client_connect: %s", err.message);
    m = call(c, s->rk, "second node");
    assert_body(m, "second node");
    server_free(s);
}

static void
test_fanout(void **state)
{
    server_opts o = { 0 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = NULL;
    g_autofree char *corr = NULL;
    vtpm_client_msg_opts so = { .fanout = true, .routing_key = "" };
    rec_match want = { "to-all", 0 };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_client_msg_send(c, &so, "to-all", 6, &corr, &err), 0);
    assert_int_equal(vtpm_client_msg_recv(c, CALL_MS, &m, &err), 0);
    assert_string_equal(m->correlation_id, corr);
    assert_body(m, "to-all");
    g_mutex_lock(&s->lock);
    assert_string_equal(find_rec(s, &want)->exchange, "vtpm_fanout");
    g_mutex_unlock(&s->lock);
    server_free(s);
}

static void
test_cast(void **state)
{
    server_opts o = { 0 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = NULL;
    vtpm_client_msg_opts so = { .routing_key = s->rk, .cast = true };
    rec_match want = { "cast-1", 0 };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_client_msg_send(c, &so, "cast-1", 6, NULL, &err), 0);
    assert_true(wait_for(s, has_rec, &want));
    g_mutex_lock(&s->lock);
    assert_null(find_rec(s, &want)->reply_to);
    g_mutex_unlock(&s->lock);
    assert_int_equal(vtpm_client_msg_recv(c, 1000, &m, &err), 1);
    assert_null(m);
    if (have_rmqctl())
        assert_true(wait_queue_counts(s->queue, 0, 0));
    server_free(s);
}

static void
test_oversized(void **state)
{
    server_opts o = { .max_message_bytes = 1024 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autofree char *big = g_strnfill(10 * 1024, 'x');
    vtpm_client_msg *m;
    rec *r;

    m = call(c, s->rk, big);
    assert_body(m, "oversized");
    vtpm_client_msg_free(m);
    g_mutex_lock(&s->lock);
    assert_int_equal(s->recs->len, 1);
    r = s->recs->pdata[0];
    assert_true(r->oversized);
    assert_false(r->has_body);
    assert_int_equal(r->body_size, 10 * 1024);
    g_mutex_unlock(&s->lock);

    /* Spread over several body frames (frame max 128 KiB), all dropped. */
    {
        g_autofree char *huge = g_strnfill(400 * 1024, 'y');

        m = call(c, s->rk, huge);
        assert_body(m, "oversized");
        vtpm_client_msg_free(m);
    }

    /* Exactly at the limit is fine, and the connection is still usable. */
    big[1024] = '\0';
    m = call(c, s->rk, big);
    assert_body(m, big);
    vtpm_client_msg_free(m);
    m = call(c, s->rk, "after");
    assert_body(m, "after");
    vtpm_client_msg_free(m);
    g_mutex_lock(&s->lock);
    assert_int_equal(s->n_disconnected, 0);
    g_mutex_unlock(&s->lock);
    server_free(s);
}

/* Bodies over one frame are reassembled in order. */
static void
test_large_body(void **state)
{
    server_opts o = { .max_message_bytes = 1 << 20 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = NULL;
    g_autofree char *body = g_malloc(600 * 1024 + 1);
    vtpm_error err = { 0 };

    for (size_t i = 0; i < 600 * 1024; i++)
        body[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    body[600 * 1024] = '\0';
    assert_int_equal(vtpm_client_msg_call(c, s->rk, body, 600 * 1024, CALL_MS, &m, &err), 0);
    assert_body(m, body);
    server_free(s);
}

static void
test_many_calls(void **state)
{
    enum { N = 1000, INFLIGHT = 16 };
    server_opts o = { 0 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(GHashTable) outstanding = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    unsigned answered[N] = { 0 };
    unsigned sent = 0, done = 0;
    vtpm_client_msg_opts so = { .routing_key = s->rk };
    vtpm_error err = { 0 };

    while (done < N) {
        g_autoptr(vtpm_client_msg) m = NULL;
        gpointer idx;

        while (sent < N && sent - done < INFLIGHT) {
            g_autofree char *body = g_strdup_printf("m-%u", sent);
            char *corr = NULL;

            assert_int_equal(vtpm_client_msg_send(c, &so, body, strlen(body), &corr, &err), 0);
            g_hash_table_insert(outstanding, corr, GUINT_TO_POINTER(sent));
            sent++;
        }
        if (vtpm_client_msg_recv(c, CALL_MS, &m, &err) != 0)
            fail_msg("no reply after %u of %u: %s", done, N, err.message);
        assert_true(g_hash_table_lookup_extended(outstanding, m->correlation_id, NULL, &idx));
        {
            g_autofree char *want = g_strdup_printf("m-%u", GPOINTER_TO_UINT(idx));

            assert_body(m, want);
        }
        answered[GPOINTER_TO_UINT(idx)]++;
        g_hash_table_remove(outstanding, m->correlation_id);
        done++;
    }
    /* Nothing answered twice: no stray reply arrives afterwards. */
    {
        g_autoptr(vtpm_client_msg) m = NULL;

        assert_int_equal(vtpm_client_msg_recv(c, 500, &m, &err), 1);
    }
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(answered[i], 1);
    g_mutex_lock(&s->lock);
    assert_int_equal(s->recs->len, N);
    g_mutex_unlock(&s->lock);
    /* Acked, batches with one "multiple" ack included. */
    if (have_rmqctl())
        assert_true(wait_queue_counts(s->queue, 0, 0));
    server_free(s);
}

static bool
disconnected_n(server *s, const void *arg)
{
    return s->n_disconnected >= *(const unsigned *)arg;
}

/* Acks go out per batch, a run of answered deliveries as one "multiple"
 * ack: one still in work must stay unacked however many after it are
 * answered, and come back if the connection drops, alone. */
static void
test_acks_behind_held(void **state)
{
    enum { N = 40 };
    server_opts o = { 0 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    vtpm_client_msg_opts so = { .cast = true };
    rec_match held_first = { "hold-2", 0 }, held_again = { "hold-2", 1 };
    unsigned one = 1, two = 2;
    vtpm_error err = { 0 };

    (void)state;
    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    c = client_new();
    so.routing_key = s->rk;
    assert_int_equal(vtpm_client_msg_send(c, &so, "hold-2", 6, NULL, &err), 0);
    assert_true(wait_for(s, has_rec, &held_first));
    for (unsigned i = 0; i < N; i++) {
        g_autofree char *body = g_strdup_printf("after-%u", i);

        assert_int_equal(vtpm_client_msg_send(c, &so, body, strlen(body), NULL, &err), 0);
    }
    /* Every later one acked, the held one not. */
    assert_true(wait_queue_counts(s->queue, 0, 1));

    /* The connection drops: only the held one comes back. */
    close_all_connections();
    assert_true(wait_for(s, disconnected_n, &one));
    assert_true(wait_for(s, connected_n, &two));
    assert_true(wait_for(s, has_rec, &held_again));
    assert_true(wait_queue_counts(s->queue, 0, 0));
    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->recs->len; i++) {
        rec *r = g_ptr_array_index(s->recs, i);

        if (r->redelivered && strcmp(r->body, "hold-2") != 0)
            fail_msg("%s came back: its ack was lost", r->body);
    }
    assert_int_equal(s->recs->len, N + 2);
    /* The redelivered copy was answered (not held again): the first,
     * still held from the old connection, is void. */
    while (s->held->len)
        vtpm_broker_delivery_free(g_ptr_array_steal_index(s->held, 0));
    g_mutex_unlock(&s->lock);
    server_free(s);
}

/* A delivery never acked before the connection drops comes back. */
static void
test_redelivery_after_reconnect(void **state)
{
    server_opts o = { 0 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    g_autofree char *corr = NULL;
    vtpm_client_msg_opts so = { .cast = true };
    rec_match first = { "hold-1", 0 }, again = { "hold-1", 1 };
    unsigned one = 1;
    unsigned two = 2;
    vtpm_broker_delivery *held;
    uint64_t gen0;
    vtpm_error err = { 0 };
    rec *r;

    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    c = client_new();
    so.routing_key = s->rk;
    assert_int_equal(vtpm_client_msg_send(c, &so, "hold-1", 6, &corr, &err), 0);
    assert_true(wait_for(s, has_rec, &first));
    g_mutex_lock(&s->lock);
    gen0 = s->gen;
    assert_int_equal(s->held->len, 1);
    held = g_ptr_array_steal_index(s->held, 0);
    g_mutex_unlock(&s->lock);
    assert_int_equal(held->generation, gen0);

    close_all_connections();
    assert_true(wait_for(s, disconnected_n, &one));
    assert_true(wait_for(s, connected_n, &two));
    assert_true(wait_for(s, has_rec, &again));
    g_mutex_lock(&s->lock);
    assert_int_equal(s->n_disconnected, 1);
    assert_int_equal(s->lost_gen, gen0);
    assert_non_null(s->lost_why);
    assert_int_equal(s->gen, gen0 + 1);
    r = find_rec(s, &again);
    assert_int_equal(r->generation, gen0 + 1);
    g_mutex_unlock(&s->lock);

    /* The old delivery's tag is void now: acking it must be a no-op (the
     * same tag number on the new channel is another message). */
    vtpm_broker_post_reply(s->amqp, NULL, NULL, NULL, true, held->delivery_tag, held->generation);
    vtpm_broker_delivery_free(held);
    assert_true(wait_queue_counts(s->queue, 0, 0));
    /* Acking a void tag would have made the broker close the channel. */
    g_usleep(300 * 1000);
    g_mutex_lock(&s->lock);
    assert_int_equal(s->n_disconnected, 1);
    g_mutex_unlock(&s->lock);
    server_free(s);
}

static void
test_stale_generation(void **state)
{
    server_opts o = { 0 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    vtpm_client_msg *m;
    rec_match again = { "stale-1", 1 };
    unsigned two = 2;

    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    c = client_new();
    /* Published regardless of the generation... */
    m = call(c, s->rk, "stale-1");
    assert_body(m, "stale-1");
    vtpm_client_msg_free(m);
    /* ...but not acked. */
    assert_true(wait_queue_counts(s->queue, 0, 1));

    close_all_connections();
    assert_true(wait_for(s, connected_n, &two));
    assert_true(wait_for(s, has_rec, &again));
    assert_true(wait_queue_counts(s->queue, 0, 0));
    server_free(s);
}

/* The broker cancels our consumer when the queue goes: reconnect and
 * declare it again. */
static void
test_queue_deleted(void **state)
{
    server_opts o = { 0 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;
    unsigned one = 1;
    unsigned two = 2;

    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    {
        const char *const args[] = { "vt_rmqctl", "delete_queue", s->queue, NULL };

        g_free(env_sh(args));
    }
    assert_true(wait_for(s, disconnected_n, &one));
    assert_true(wait_for(s, connected_n, &two));
    g_mutex_lock(&s->lock);
    assert_non_null(strstr(s->lost_why, "cancelled by the broker"));
    g_mutex_unlock(&s->lock);
    c = client_new();
    m = call(c, s->rk, "redeclared");
    assert_body(m, "redeclared");
    server_free(s);
}

/* A refused login is retried (the operator may fix the user), not fatal. */
static void
test_auth_refused_retried(void **state)
{
    vtpm_broker_callbacks cb = { .on_delivery = on_delivery };
    g_autofree char *url = NULL;
    vtpm_broker_params p = { .host = "auth", .reconnect_max_ms = 200 };
    server *s = g_new0(server, 1);
    const char *at = strchr(amqp_url + 7, '@');

    if (!at)
        skip();
    url = g_strdup_printf("amqp://vtpm-nobody:wrong%s", at);
    p.url = url;
    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    cb.user = s;
    assert_int_equal(vtpm_broker_new(&p, &cb, &s->amqp, &s->run_err), 0);
    s->thread = g_thread_new("amqp-auth", server_thread, s);
    g_usleep(1500 * 1000);
    g_mutex_lock(&s->lock);
    assert_false(s->returned);
    assert_int_equal(s->n_connected, 0);
    g_mutex_unlock(&s->lock);
    vtpm_broker_stop(s->amqp);
    g_thread_join(s->thread);
    assert_int_equal(s->run_rc, 0);
    vtpm_broker_free(s->amqp);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s);
}

static void
test_broker_restart(void **state)
{
    static const char *const restart[] = { "vt_rmq_restart", NULL };
    server_opts o = { 0 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;
    unsigned one = 1;
    unsigned two = 2;

    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    g_free(env_sh(restart));
    assert_true(wait_for(s, disconnected_n, &one));
    assert_true(wait_for(s, connected_n, &two));
    g_mutex_lock(&s->lock);
    assert_int_equal(s->gen, 2);
    g_mutex_unlock(&s->lock);
    c = client_new();
    m = call(c, s->rk, "after-restart");
    assert_body(m, "after-restart");
    server_free(s);
}

/* Both sides keep the heartbeat going while idle. */
static void
test_heartbeat_idle(void **state)
{
    server_opts o = { .heartbeat = 1 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;

    g_usleep(6 * G_USEC_PER_SEC);
    g_mutex_lock(&s->lock);
    assert_int_equal(s->n_disconnected, 0);
    g_mutex_unlock(&s->lock);
    c = client_new();
    m = call(c, s->rk, "still-there");
    assert_body(m, "still-there");
    server_free(s);
}

/* A broker that stops answering (here: SIGSTOPped) is given up after two
 * heartbeat intervals, and reconnected to once it is back. */
static void
test_broker_silent(void **state)
{
    static const char *const freeze[] = {
        "bash", "-c", "kill -STOP $(cat \"$VT_ROOT/rabbitmq/pid\")", NULL };
    static const char *const thaw[] = {
        "bash", "-c", "kill -CONT $(cat \"$VT_ROOT/rabbitmq/pid\")", NULL };
    server_opts o = { .heartbeat = 1 };
    server *s;
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;
    unsigned one = 1;
    unsigned two = 2;
    bool lost;

    if (!have_rmqctl())
        skip();
    s = server_start(&o);
    g_free(env_sh(freeze));
    lost = wait_for(s, disconnected_n, &one);
    g_free(env_sh(thaw));
    assert_true(lost);
    g_mutex_lock(&s->lock);
    assert_non_null(strstr(s->lost_why, "missed heartbeats"));
    g_mutex_unlock(&s->lock);
    assert_true(wait_for(s, connected_n, &two));
    c = client_new();
    m = call(c, s->rk, "thawed");
    assert_body(m, "thawed");
    server_free(s);
}

static void
on_io_thread(void *data)
{
    server *s = data;

    if (g_thread_self() == s->io_thread)
        g_atomic_int_inc(&s->calls_on_io);
}

static void
test_publish_and_tap(void **state)
{
    server_opts o = { 0 };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = NULL;
    g_autoptr(GBytes) body = g_bytes_new_static("caps", 4);
    g_autofree char *rk = g_strdup_printf("capabilities.%s", s->host);
    g_autofree char *tapq = NULL;
    const char *keys[] = { "capabilities.#" };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_client_tap(c, "vtpm", keys, 1, &tapq, &err), 0);
    assert_non_null(tapq);
    vtpm_broker_post_publish(s->amqp, "vtpm", rk, body);
    vtpm_broker_post_call(s->amqp, on_io_thread, s);
    assert_int_equal(vtpm_client_msg_recv(c, CALL_MS, &m, &err), 0);
    assert_string_equal(m->routing_key, rk);
    assert_string_equal(m->exchange, "vtpm");
    assert_body(m, "caps");
    for (int i = 0; i < WAIT_S * 100 && !g_atomic_int_get(&s->calls_on_io); i++)
        g_usleep(10 * 1000);
    assert_int_equal(g_atomic_int_get(&s->calls_on_io), 1);
    server_free(s);

    /* A missing exchange is an error (and the client is done). */
    assert_true(vtpm_client_tap(c, "vtpm-no-such-exchange", keys, 1, NULL, &err) < 0);
}

/* stop() cancels the consumers and waits for the drain check; replies
 * posted meanwhile still go out. */
static void
test_stop_drain(void **state)
{
    server_opts o = { .drain = true };
    server *s = server_start(&o);
    g_autoptr(vtpm_client) c = client_new();
    g_autoptr(vtpm_client_msg) m = NULL;
    g_autofree char *corr = NULL;
    vtpm_client_msg_opts so = { .routing_key = s->rk };
    rec_match want = { "hold-drain", 0 };
    vtpm_broker_delivery *held;
    vtpm_error err = { 0 };
    bool returned;

    assert_int_equal(vtpm_client_msg_send(c, &so, "hold-drain", 10, &corr, &err), 0);
    assert_true(wait_for(s, has_rec, &want));
    vtpm_broker_stop(s->amqp);
    g_usleep(700 * 1000);
    g_mutex_lock(&s->lock);
    returned = s->returned;
    held = g_ptr_array_steal_index(s->held, 0);
    g_mutex_unlock(&s->lock);
    assert_false(returned);
    assert_true(g_atomic_int_get(&s->drain_checks) > 0);

    vtpm_broker_post_reply(s->amqp, held->reply_to, held->correlation_id, held->body, true,
                         held->delivery_tag, held->generation);
    vtpm_broker_delivery_free(held);
    g_atomic_int_set(&s->drained, 1);
    vtpm_broker_post_call(s->amqp, on_io_thread, s);
    assert_true(wait_for(s, has_returned, NULL));
    assert_int_equal(s->run_rc, 0);

    assert_int_equal(vtpm_client_msg_recv(c, CALL_MS, &m, &err), 0);
    assert_string_equal(m->correlation_id, corr);
    assert_body(m, "hold-drain");
    if (have_rmqctl())
        assert_true(wait_queue_counts(s->queue, 0, 0));
    server_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects),
        cmocka_unit_test(test_tls_unreadable_cacert),
        cmocka_unit_test(test_call_roundtrip),
        cmocka_unit_test(test_multi_host_url),
        cmocka_unit_test(test_quorum_roundtrip),
        cmocka_unit_test(test_fanout),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_large_body),
        cmocka_unit_test(test_many_calls),
        cmocka_unit_test(test_redelivery_after_reconnect),
        cmocka_unit_test(test_acks_behind_held),
        cmocka_unit_test(test_stale_generation),
        cmocka_unit_test(test_heartbeat_idle),
        cmocka_unit_test(test_broker_silent),
        cmocka_unit_test(test_publish_and_tap),
        cmocka_unit_test(test_stop_drain),
        cmocka_unit_test(test_queue_deleted),
        cmocka_unit_test(test_auth_refused_retried),
        cmocka_unit_test(test_broker_restart),
    };

    amqp_url = g_getenv("VT_AMQP_URL");
    if (!amqp_url || !*amqp_url) {
        fprintf(stderr, "test_broker: VT_AMQP_URL is not set; run it through "
                        "tests/integration.sh (skipped)\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
