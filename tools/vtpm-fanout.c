/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm-fanout: load generator and delivery checker for vtpmd workers.
 *
 *   vtpm-fanout [BROKER OPTIONS] (--hosts H1,H2,... | --discover | --spawn-workers K [--vtpmd PATH])
 *               --calls N [--concurrency C] [--mix get_capabilities=70,spawn=10,destroy=20]
 *               [--spawn-tpm 2.0|1.2] [--warmup W] [--timeout S] [--settle S]
 *               [--broadcast] [--json]
 *
 * Sends N calls round-robin over the hosts with C in flight on one client
 * connection and accounts for every one of them: exactly one reply per
 * correlation id.  It reports lost, duplicate, late and unmatched replies,
 * ok vs fault per code, throughput and latency percentiles per method and
 * per host.  Every instance a spawn call may have created is destroyed
 * again after the load (cleanup, outside the statistics), on the host the
 * spawn went to, before any spawned worker is stopped.  Exit: 0 nothing
 * lost, duplicated, unmatched or undecodable, every cleanup destroy
 * succeeded (and, with --broadcast, every host answered; with
 * --spawn-workers, every worker started and exited 0); 1 otherwise; 2 usage.
 *
 * Single-threaded on purpose: one loop sends while fewer than C calls are
 * outstanding and otherwise waits in vtpm_client_wait() for the next reply
 * or the next call's timeout, whichever is first.  The tool measures the
 * workers and the broker, so it must not add queueing of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "amqpopt.h"
#include "client/internal.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define LIST_MAX 20                                  /* ids listed per problem */
#define DISCOVER_WINDOW_US (2 * G_USEC_PER_SEC)
#define READY_TIMEOUT_US (60 * G_USEC_PER_SEC)       /* a spawned worker must answer by then */
#define READY_PROBE_MS 500
#define STOP_TIMEOUT_US (60 * G_USEC_PER_SEC)        /* SIGTERM drains: in-flight work finishes */
#define MAX_SPAWN 64
#define MAX_CALLS 100000000u

/* Methods this tool can generate from nothing: get_capabilities; spawn of
 * a new instance with a fresh random UUID and a minimal spec (no vTPM
 * unless --spawn-tpm), destroyed again by the cleanup; destroy of a fresh
 * random UUID, which succeeds and touches nothing.  The other methods need
 * an existing instance in a given state. */
typedef enum { M_GET_CAPABILITIES, M_SPAWN, M_DESTROY, M__COUNT } fan_method;

static const char *const method_names[M__COUNT] = { "get_capabilities", "spawn", "destroy" };

typedef struct {
    char *corr;           /* correlation id; also keys by_corr */
    char *uuid;           /* spawn and cleanup: the instance; NULL otherwise */
    char *fault_msg;      /* cleanup: the fault's message */
    const char *fault;    /* interned fault code of the first reply; NULL = ok */
    gint64 sent_us;
    gint64 reply_us;      /* first reply; 0 = none */
    gint64 deadline_us;
    guint host;
    guint nreplies;
    guint8 method;
    bool measured;        /* not a warm-up call */
    bool timed_out;       /* its timeout passed before the first reply */
    bool cleanup;         /* a destroy of the cleanup: outside every count */
    bool existed;         /* cleanup: the reply said destroyed: true */
} fan_call;

/* One fanout get_capabilities (--discover, --broadcast). */
typedef struct {
    char *corr;
    gint64 sent_us, end_us;
    GHashTable *answered; /* host -> GINT64 latency us, replies within the window */
    guint late;           /* replies after the window */
} fan_bcast;

typedef struct {
    char *host;
    char *conf, *log;
    GPid pid;             /* 0: not running */
    double ready_ms;      /* -1: never answered */
    int status;           /* waitpid status; -1: unknown */
    bool started;
    bool ok;
} fan_worker;

/* Accounting for one problem kind: a count and the first LIST_MAX ids. */
typedef struct {
    guint n;
    GPtrArray *ids;
} fan_tally;

/* The destroys of every instance a spawn call was sent for. */
typedef struct {
    fan_call *calls;
    guint n;              /* spawn calls sent = cleanup destroys due */
    guint destroyed;      /* answered ok */
    guint existed;        /* of those, the instance was there */
    fan_tally failed;     /* "uuid@host: why" */
    gint64 elapsed_us;
} fan_cleanup;

typedef struct {
    /* options */
    vtpm_client_options broker; /* strings of the tool's vtpm_amqpopt */
    guint concurrency;
    gint64 timeout_us, settle_us;
    guint weights[M__COUNT];
    guint weight_sum;
    const char *spawn_tpm;  /* hw:tpm_version of spawned instances; NULL: none */
    GRand *rand;

    vtpm_client *client;    /* sees every reply (VTPM_CLIENT_ALL_REPLIES) */
    char *run_id;
    GPtrArray *hosts;       /* char * */

    fan_call *calls;        /* warm-up calls first, then the measured ones */
    guint ncalls, nwarmup;
    GHashTable *by_corr;    /* corr -> fan_call * */
    GHashTable *bcasts;     /* corr -> fan_bcast * */
    GQueue outstanding;     /* fan_call *, in send order (= deadline order) */
    guint inflight;         /* sent, no reply yet, not timed out */
    guint answered;         /* calls with at least one reply */
    guint64 reply_bytes;    /* bodies of those first replies, summed */
    guint sent;

    fan_tally lost, duplicate, late, unmatched, invalid;
    fan_cleanup cleanup;
    gint64 t0_us, t1_us;    /* measured phase: first send, last first-reply */
    char *error;            /* fatal: why the run stopped early */
} fan_run;

static void
tally_init(fan_tally *t)
{
    t->n = 0;
    t->ids = g_ptr_array_new_with_free_func(g_free);
}

static void
tally_add(fan_tally *t, char *id_take)
{
    t->n++;
    if (t->ids->len < LIST_MAX)
        g_ptr_array_add(t->ids, id_take);
    else
        g_free(id_take);
}

static gint64
now_us(void)
{
    return g_get_monotonic_time();
}

/* ---- usage ---------------------------------------------------------------- */

static int
usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static int
usage_error(const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "vtpm-fanout: %s\n(vtpm-fanout --help explains the options)\n", msg);
    return EXIT_USAGE;
}

/* "get_capabilities=70,destroy=30" -> weights.  A method named without a
 * weight gets 1. */
static int
parse_mix(fan_run *r, const char *mix)
{
    g_auto(GStrv) parts = g_strsplit(mix, ",", -1);

    memset(r->weights, 0, sizeof(r->weights));
    r->weight_sum = 0;
    for (guint i = 0; parts[i]; i++) {
        g_autofree char *name = NULL;
        const char *eq;
        guint64 w = 1;
        int m = -1;

        g_strstrip(parts[i]);
        if (!*parts[i])
            continue;
        eq = strchr(parts[i], '=');
        name = eq ? g_strndup(parts[i], eq - parts[i]) : g_strdup(parts[i]);
        if (eq && (!g_ascii_string_to_unsigned(eq + 1, 10, 0, 1000000, &w, NULL)))
            return usage_error("--mix: weight of '%s' must be an integer 0..1000000", name);
        for (int k = 0; k < M__COUNT; k++) {
            if (strcmp(name, method_names[k]) == 0)
                m = k;
        }
        if (m < 0)
            return usage_error("--mix: method '%s' is not supported: vtpm-fanout generates "
                               "only get_capabilities, spawn (a new instance, destroyed "
                               "again after the run) and destroy (of a fresh UUID); the "
                               "other methods need an existing instance in a given state",
                               name);
        r->weights[m] += (guint)w;
        r->weight_sum += (guint)w;
    }
    if (r->weight_sum == 0)
        return usage_error("--mix: no method with a weight above 0");
    return 0;
}

static fan_method
pick_method(fan_run *r)
{
    guint x = (guint)g_rand_int_range(r->rand, 0, (gint32)r->weight_sum);

    for (int m = 0; m < M__COUNT; m++) {
        if (x < r->weights[m])
            return m;
        x -= r->weights[m];
    }
    return M_GET_CAPABILITIES;
}

static bool
host_name_ok(const char *h)
{
    if (!*h || strlen(h) > 200)
        return false;
    for (const char *p = h; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '.' && *p != '_' && *p != '-')
            return false;
    }
    return true;
}

static void
add_host(fan_run *r, const char *h)
{
    for (guint i = 0; i < r->hosts->len; i++) {
        if (strcmp(g_ptr_array_index(r->hosts, i), h) == 0)
            return;
    }
    g_ptr_array_add(r->hosts, g_strdup(h));
}

/* ---- requests -------------------------------------------------------------- */

/* {instance: {uuid, flavor, image}}: the least vtpmd's decoder takes.  No
 * boot: the guest runs firmware only.  With @tpm_version the flavor asks
 * for a vTPM whose key the host keeps (hw:tpm_secret_security host), so no
 * secret travels with the request. */
static void
pack_spawn_args(msgpack_packer *pk, const char *uuid, const char *tpm_version)
{
    msgpack_pack_map(pk, 1);
    vtpm_pack_str(pk, "instance");
    msgpack_pack_map(pk, 3);
    vtpm_pack_kv_str(pk, "uuid", uuid);
    vtpm_pack_str(pk, "flavor");
    msgpack_pack_map(pk, 4);
    vtpm_pack_kv_str(pk, "name", "fanout");
    vtpm_pack_kv_uint(pk, "vcpus", 1);
    vtpm_pack_kv_uint(pk, "memory_mb", 64);
    vtpm_pack_str(pk, "extra_specs");
    if (tpm_version) {
        msgpack_pack_map(pk, 2);
        vtpm_pack_kv_str(pk, "hw:tpm_version", tpm_version);
        vtpm_pack_kv_str(pk, "hw:tpm_secret_security", "host");
    } else {
        msgpack_pack_map(pk, 0);
    }
    vtpm_pack_str(pk, "image");
    msgpack_pack_map(pk, 2);
    vtpm_pack_kv_str(pk, "id", "none");
    vtpm_pack_str(pk, "properties");
    msgpack_pack_map(pk, 0);
}

/* The args of method @m; @uuid: the instance of a spawn or destroy, NULL
 * for a destroy means a fresh random one. */
static GBytes *
request_args(fan_method m, const char *uuid, const char *tpm_version)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    GBytes *args;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (m == M_SPAWN) {
        pack_spawn_args(&pk, uuid, tpm_version);
    } else if (m == M_DESTROY) {
        g_autofree char *fresh = uuid ? NULL : g_uuid_string_random();

        /* A fresh UUID: no instance has it, so the destroy succeeds
         * without touching anything. */
        msgpack_pack_map(&pk, 1);
        vtpm_pack_str(&pk, "instance");
        msgpack_pack_map(&pk, 1);
        vtpm_pack_kv_str(&pk, "uuid", uuid ? uuid : fresh);
    } else {
        msgpack_pack_map(&pk, 0);
    }
    args = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return args;
}

static int
send_call(fan_run *r, fan_call *c, vtpm_error *err)
{
    g_autofree char *msg_id = g_strdup_printf("m-%s", c->corr);
    g_autoptr(GBytes) args = request_args(c->method, c->uuid, r->spawn_tpm);
    vtpm_client_call_opts o = { .call_id = c->corr, .message_id = msg_id, .request_id = c->corr };
    vtpm_client_fault f;

    c->sent_us = now_us();
    c->deadline_us = c->sent_us + r->timeout_us;
    if (c->measured && !r->t0_us)
        r->t0_us = c->sent_us;
    if (!c->cleanup)
        r->sent++;
    if (vtpm_client_call_send(r->client, g_ptr_array_index(r->hosts, c->host),
                              method_names[c->method], g_bytes_get_data(args, NULL),
                              g_bytes_get_size(args), &o, NULL, &f) < 0)
        return vtpm_client_error_from_fault(err, &f);
    return 0;
}

/* The fault code of a reply (NULL: ok), interned: a code from a newer
 * worker as received; "(invalid reply)" when it is no reply.  *why gets
 * the fault's message; @res (may be NULL) the result map of an ok reply. */
static const char *
reply_outcome(const vtpm_client_reply *rep, msgpack_unpacked *res, char **why)
{
    const void *data = NULL;
    size_t len = 0, off = 0;
    vtpm_client_fault f;

    if (vtpm_client_reply_result(rep, res ? &data : NULL, res ? &len : NULL, &f) == 0) {
        if (res)
            msgpack_unpack_next(res, data, len, &off);
        return NULL;
    }
    *why = g_strdup(f.message);
    if (f.details.source == VTPM_CLIENT_SOURCE_CLIENT)
        return g_intern_static_string("(invalid reply)");
    return g_intern_string(*f.details.received_code ? f.details.received_code : f.name);
}

/* ---- replies --------------------------------------------------------------- */

static char *
call_label(const fan_run *r, const fan_call *c)
{
    return g_strdup_printf("%s %s@%s", c->corr, method_names[c->method],
                           (const char *)g_ptr_array_index(r->hosts, c->host));
}

/* A reply to a cleanup destroy: only whether the instance is gone counts
 * (a second copy changes nothing). */
static void
on_cleanup_reply(fan_run *r, fan_call *c, const vtpm_client_reply *m)
{
    msgpack_unpacked res;
    bool existed = false;

    if (++c->nreplies > 1)
        return;
    c->reply_us = vtpm_client_reply_received_us(m);
    if (!c->timed_out)
        r->inflight--;
    msgpack_unpacked_init(&res);
    c->fault = reply_outcome(m, &res, &c->fault_msg);
    if (!c->fault && vtpm_proto_get_bool(&res.data, "result", "destroyed", false, false,
                                         &existed, NULL) == 0)
        c->existed = existed;
    msgpack_unpacked_destroy(&res);
}

static void
on_call_reply(fan_run *r, fan_call *c, const vtpm_client_reply *m)
{
    g_autofree char *why = NULL;
    size_t len = 0;

    if (c->cleanup) {
        on_cleanup_reply(r, c, m);
        return;
    }
    if (++c->nreplies > 1) {
        tally_add(&r->duplicate, call_label(r, c));
        return;
    }
    c->reply_us = vtpm_client_reply_received_us(m);
    r->answered++;
    vtpm_client_reply_body(m, &len);
    r->reply_bytes += len;
    if (c->measured && c->reply_us > r->t1_us)
        r->t1_us = c->reply_us;
    if (c->timed_out)
        tally_add(&r->late, call_label(r, c));
    else
        r->inflight--;
    c->fault = reply_outcome(m, NULL, &why);
    /* Counted apart, and in the groups as a fault of its own. */
    if (c->fault && strcmp(c->fault, "(invalid reply)") == 0)
        tally_add(&r->invalid, g_strdup_printf("%s: %s", c->corr, why));
}

static void
on_bcast_reply(fan_run *r, fan_bcast *b, const vtpm_client_reply *m)
{
    g_autofree char *host = NULL;
    g_autofree char *why = NULL;
    gint64 at = vtpm_client_reply_received_us(m);
    vtpm_error err = { 0 };
    msgpack_unpacked res;
    const char *fault;

    msgpack_unpacked_init(&res);
    fault = reply_outcome(m, &res, &why);
    if (!fault && vtpm_proto_get_str(&res.data, "result", "host", true, 255, &host, &err) < 0)
        why = g_strdup(err.message);
    msgpack_unpacked_destroy(&res);
    if (fault || !host) {
        /* get_capabilities cannot fail; a fault says which worker is broken
         * only in its log, so name the code at least. */
        bool worker = fault && strcmp(fault, "(invalid reply)") != 0;

        tally_add(&r->invalid, g_strdup_printf("%s (broadcast): %s%s%s%s", b->corr,
                                               worker ? "fault " : "", worker ? fault : "",
                                               worker ? ": " : "", why ? why : ""));
        return;
    }
    if (g_hash_table_contains(b->answered, host)) {
        tally_add(&r->duplicate, g_strdup_printf("%s broadcast@%s", b->corr, host));
        return;
    }
    if (at > b->end_us) {
        b->late++;
        return;
    }
    g_hash_table_insert(b->answered, g_steal_pointer(&host),
                        g_memdup2(&(gint64){ at - b->sent_us }, sizeof(gint64)));
}

static void
on_message(fan_run *r, const vtpm_client_reply *m)
{
    const char *id = vtpm_client_reply_id(m);
    fan_call *c = id ? g_hash_table_lookup(r->by_corr, id) : NULL;
    fan_bcast *b;

    if (c) {
        on_call_reply(r, c, m);
        return;
    }
    b = id ? g_hash_table_lookup(r->bcasts, id) : NULL;
    if (b) {
        on_bcast_reply(r, b, m);
        return;
    }
    tally_add(&r->unmatched, g_strdup(id ? id : "(no correlation id)"));
}

/* Wait until @until_us (monotonic) for one message and handle it.
 * 0: handled or timed out; negative: the connection is gone. */
static int
receive_one(fan_run *r, gint64 until_us, vtpm_error *err)
{
    g_autoptr(vtpm_client_reply) m = NULL;
    gint64 left = until_us - now_us();
    vtpm_client_fault f;
    int rc;

    /* Round up: waking a little late costs nothing, waking early spins. */
    rc = vtpm_client_wait(r->client, NULL,
                          left <= 0 ? 0 : (int)MIN((left + 999) / 1000, G_MAXINT), &m, &f);
    if (rc < 0)
        return vtpm_client_error_from_fault(err, &f);
    if (rc == 0)
        on_message(r, m);
    return 0;
}

/* ---- the load ---------------------------------------------------------------- */

/* Drop answered calls from the head of the outstanding queue and time out
 * the ones whose deadline passed (they free their slot). */
static void
expire(fan_run *r, gint64 now)
{
    fan_call *c;

    while ((c = g_queue_peek_head(&r->outstanding))) {
        if (c->nreplies == 0 && c->deadline_us > now)
            return;
        if (c->nreplies == 0) {
            c->timed_out = true;
            r->inflight--;
        }
        g_queue_pop_head(&r->outstanding);
    }
}

static int
run_calls(fan_run *r, fan_call *calls, guint from, guint to, vtpm_error *err)
{
    guint next = from;

    while (next < to || r->inflight > 0) {
        fan_call *head;
        int rc;

        while (next < to && r->inflight < r->concurrency) {
            fan_call *c = &calls[next++];

            if ((rc = send_call(r, c, err)) < 0)
                return rc;
            g_queue_push_tail(&r->outstanding, c);
            r->inflight++;
        }
        expire(r, now_us());
        if (r->inflight == 0)
            continue;
        head = g_queue_peek_head(&r->outstanding);
        if ((rc = receive_one(r, head->deadline_us, err)) < 0)
            return rc;
    }
    return 0;
}

/* After the last call: wait up to --timeout for the replies still missing,
 * then --settle more for duplicates and strays. */
static int
linger(fan_run *r, vtpm_error *err)
{
    gint64 end = now_us() + r->timeout_us;
    int rc;

    while (r->answered < r->sent && now_us() < end) {
        if ((rc = receive_one(r, end, err)) < 0)
            return rc;
    }
    end = now_us() + r->settle_us;
    while (now_us() < end) {
        if ((rc = receive_one(r, end, err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- cleanup ------------------------------------------------------------------ */

/* Destroy, on the host it went to, the instance of every spawn call that
 * was sent (answered or not: a lost reply may still have created it).
 * Per-instance ordering in vtpmd runs each destroy after its spawn, even
 * one still running.  A connection that failed during the load is
 * replaced.  Failures are tallied in r->cleanup; nothing else counts. */
static void
cleanup_spawns(fan_run *r, const vtpm_client_options *cp)
{
    fan_cleanup *cl = &r->cleanup;
    g_autofree char *why = NULL;
    vtpm_client_fault f;
    vtpm_error err = { 0 };
    gint64 start = now_us();
    guint n = 0;

    for (guint i = 0; i < r->ncalls; i++) {
        if (r->calls[i].method == M_SPAWN && r->calls[i].sent_us)
            n++;
    }
    if (!n)
        return;
    cl->calls = g_new0(fan_call, n);
    for (guint i = 0; i < r->ncalls; i++) {
        const fan_call *s = &r->calls[i];
        fan_call *c;

        if (s->method != M_SPAWN || !s->sent_us)
            continue;
        c = &cl->calls[cl->n++];
        c->corr = g_strdup_printf("%s.cleanup%u", r->run_id, cl->n - 1);
        c->uuid = g_strdup(s->uuid);
        c->host = s->host;
        c->method = M_DESTROY;
        c->cleanup = true;
        g_hash_table_insert(r->by_corr, c->corr, c);
    }

    /* The load's own calls have all been answered or timed out. */
    g_queue_clear(&r->outstanding);
    r->inflight = 0;
    if (r->error || !r->client) {
        g_clear_pointer(&r->client, vtpm_client_free);
        if (vtpm_client_connect(cp, &r->client, &f) < 0)
            why = g_strdup_printf("not sent: %s", f.message);
    }
    if (!why && run_calls(r, cl->calls, 0, cl->n, &err) < 0)
        why = g_strdup_printf("connection lost: %s", err.message);

    for (guint i = 0; i < cl->n; i++) {
        fan_call *c = &cl->calls[i];
        const char *host = g_ptr_array_index(r->hosts, c->host);

        if (c->nreplies && !c->fault) {
            cl->destroyed++;
            cl->existed += c->existed;
        } else if (c->nreplies) {
            tally_add(&cl->failed, g_strdup_printf("%s@%s: %s: %s", c->uuid, host, c->fault,
                                                   c->fault_msg));
        } else {
            /* Not timed out: the loop stopped before it was sent or
             * answered, and @why says why. */
            tally_add(&cl->failed,
                      g_strdup_printf("%s@%s: %s", c->uuid, host,
                                      c->timed_out ? "no reply within --timeout"
                                                   : (why ? why : "not sent")));
        }
    }
    cl->elapsed_us = now_us() - start;
}

/* One fanout get_capabilities; collects answers until @window_us passed or,
 * when @expect is given, every host in it answered. */
static int
broadcast(fan_run *r, gint64 window_us, GPtrArray *expect, fan_bcast **out, vtpm_error *err)
{
    g_autofree char *msg_id = NULL;
    vtpm_client_call_opts o = { 0 };
    vtpm_client_fault f;
    fan_bcast *b = g_new0(fan_bcast, 1);
    int rc;

    b->corr = g_strdup_printf("%s.bcast%u", r->run_id, g_hash_table_size(r->bcasts));
    b->answered = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert(r->bcasts, b->corr, b);
    *out = b;
    msg_id = g_strdup_printf("m-%s", b->corr);
    o = (vtpm_client_call_opts){ .call_id = b->corr, .message_id = msg_id,
                                 .request_id = b->corr };
    b->sent_us = now_us();
    b->end_us = b->sent_us + window_us;
    if (vtpm_client_fanout_send(r->client, method_names[M_GET_CAPABILITIES], NULL, 0, &o, NULL,
                                &f) < 0)
        return vtpm_client_error_from_fault(err, &f);
    while (now_us() < b->end_us) {
        bool all = expect != NULL;

        for (guint i = 0; expect && i < expect->len; i++)
            all = all && g_hash_table_contains(b->answered, g_ptr_array_index(expect, i));
        if (all)
            break;
        if ((rc = receive_one(r, b->end_us, err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- spawned workers ----------------------------------------------------------- */

static void
child_setup(gpointer data)
{
    /* Workers must not outlive the tool, however it ends. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
}

/* The broker of this run as a worker's [amqp] (its paths absolute, as
 * vtpmd wants them). */
static char *
amqp_section(const vtpm_client_options *b)
{
    GString *t = g_string_new("[amqp]\n");
    const struct {
        const char *key, *path;
    } files[] = { { "cacert", b->cacert }, { "cert", b->cert }, { "key", b->key } };

    g_string_append_printf(t, "url = %s\nexchange = %s\ntopic = %s\n", b->url, b->exchange,
                           b->topic);
    if (b->failover_urls && *b->failover_urls) {
        g_autofree char *list = g_strjoinv(" ", (char **)b->failover_urls);

        g_string_append_printf(t, "failover_urls = %s\n", list);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        g_autofree char *abs = files[i].path ? g_canonicalize_filename(files[i].path, NULL) : NULL;

        if (abs)
            g_string_append_printf(t, "%s = %s\n", files[i].key, abs);
    }
    return g_string_free(t, FALSE);
}

static int
write_worker_config(const fan_run *r, fan_worker *w, const char *dir, const char *libvirt_uri,
                    GError **gerr)
{
    static const char *const subdirs[] = { "images", "console", "swtpm", "pools", "kept" };
    g_autofree char *base = g_build_filename(dir, w->host, NULL);
    g_autofree char *amqp = NULL;
    g_autofree char *text = NULL;

    for (size_t i = 0; i < G_N_ELEMENTS(subdirs); i++) {
        g_autofree char *p = g_build_filename(base, subdirs[i], NULL);

        if (g_mkdir_with_parents(p, 0700) < 0) {
            g_set_error(gerr, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", p,
                        g_strerror(errno));
            return -1;
        }
    }
    /* Every path inside the temporary directory: the calls touch no vTPM
     * state, but nothing of the machine's own vtpmd must be in reach. */
    amqp = amqp_section(&r->broker);
    text = g_strdup_printf("%s[worker]\nhost = %s\nworkers = 4\n"
                           "[libvirt]\nuri = %s\nimages_dir = %s/images\n"
                           "console_dir = %s/console\nstate_dir = %s/swtpm\n"
                           "[store]\npool_dir = %s/pools\nkept_dir = %s/kept\n",
                           amqp, w->host, libvirt_uri, base, base, base, base, base);
    w->conf = g_strdup_printf("%s/%s.conf", dir, w->host);
    w->log = g_strdup_printf("%s/%s.log", dir, w->host);
    return g_file_set_contents_full(w->conf, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, gerr)
               ? 0
               : -1;
}

/*
 * The vtpmd to spawn when --vtpmd does not say: the one installed or built
 * beside this vtpm-fanout (the same directory, ../sbin when installed,
 * ../worker in the build tree), else the first on PATH; NULL when there is
 * none.  *how says which, for the message that names it.
 */
static char *
find_vtpmd(const char **how)
{
    static const char *const beside[] = { "vtpmd", "../sbin/vtpmd", "../worker/vtpmd" };
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *dir = self ? g_path_get_dirname(self) : NULL;
    char *found;

    for (size_t i = 0; dir && i < G_N_ELEMENTS(beside); i++) {
        g_autofree char *p = g_canonicalize_filename(beside[i], dir);

        /* g_file_test() with two flags is either of them: asked apart. */
        if (g_file_test(p, G_FILE_TEST_IS_REGULAR) && g_file_test(p, G_FILE_TEST_IS_EXECUTABLE)) {
            *how = "installed beside vtpm-fanout";
            return g_steal_pointer(&p);
        }
    }
    if ((found = g_find_program_in_path("vtpmd"))) {
        *how = "found on PATH";
        return found;
    }
    return NULL;
}

static int
start_worker(fan_worker *w, const char *vtpmd, GError **gerr)
{
    const char *argv[] = { vtpmd, "--config", w->conf, NULL };
    int fd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok;

    if (fd < 0) {
        g_set_error(gerr, G_FILE_ERROR, g_file_error_from_errno(errno), "%s: %s", w->log,
                    g_strerror(errno));
        return -1;
    }
    ok = g_spawn_async_with_pipes_and_fds(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                          child_setup, NULL, -1, fd, fd, NULL, NULL, 0, &w->pid,
                                          NULL, NULL, NULL, gerr);
    close(fd);
    w->started = ok;
    return ok ? 0 : -1;
}

/* Whether the worker still runs; reaps it when not. */
static bool
worker_alive(fan_worker *w)
{
    int st;
    pid_t p;

    if (!w->pid)
        return false;
    p = waitpid(w->pid, &st, WNOHANG);
    if (p == 0)
        return true;
    if (p == w->pid)
        w->status = st;
    w->pid = 0;
    return false;
}

static void
print_log_tail(const fan_worker *w)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    const char *start;

    if (!g_file_get_contents(w->log, &text, &len, NULL))
        return;
    start = len > 3000 ? text + len - 3000 : text;
    fprintf(stderr, "vtpm-fanout: --- end of %s ---\n%s\n---\n", w->log, start);
}

/* Each worker answers a get_capabilities on its own queue.  A probe client
 * of its own, which drops late answers: answers to probes that timed out
 * must not show up as unmatched in the measured run.  Until the first
 * worker has declared the exchange, publishing closes the channel: the
 * client connects again by itself at the next call. */
static int
wait_ready(fan_run *r, GPtrArray *workers, vtpm_error *err)
{
    g_autoptr(vtpm_client) probe = NULL;
    vtpm_client_options cp = r->broker;
    vtpm_client_call_opts co = { .timeout_ms = READY_PROBE_MS,
                                 .request_id = "vtpm-fanout-probe" };
    gint64 start = now_us(), end = start + READY_TIMEOUT_US;

    cp.flags &= ~(unsigned)VTPM_CLIENT_ALL_REPLIES;
    for (guint i = 0; i < workers->len; i++) {
        fan_worker *w = g_ptr_array_index(workers, i);

        for (;;) {
            vtpm_client_fault f;

            if (!worker_alive(w))
                return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                                      "worker %s exited before it answered (log %s)", w->host,
                                      w->log);
            if (now_us() > end)
                return vtpm_error_set(err, VTPM_FAULT_BUSY,
                                      "worker %s did not answer within %d s (log %s)", w->host,
                                      (int)(READY_TIMEOUT_US / G_USEC_PER_SEC), w->log);
            if (!probe && vtpm_client_connect(&cp, &probe, &f) < 0) {
                g_usleep(200 * 1000);
                continue;
            }
            if (vtpm_client_call(probe, w->host, method_names[M_GET_CAPABILITIES], NULL, 0, &co,
                                 NULL, &f) == 0 ||
                f.details.source == VTPM_CLIENT_SOURCE_WORKER) {
                w->ready_ms = (now_us() - start) / 1000.0;
                break;
            }
            if (f.code != VTPM_CLIENT_TIMEOUT)
                g_usleep(200 * 1000);
        }
    }
    return 0;
}

/* SIGTERM drains: a worker finishes what it has and exits 0. */
static void
stop_workers(GPtrArray *workers)
{
    gint64 end = now_us() + STOP_TIMEOUT_US;

    for (guint i = 0; i < workers->len; i++) {
        fan_worker *w = g_ptr_array_index(workers, i);

        if (w->pid)
            kill(w->pid, SIGTERM);
    }
    for (guint i = 0; i < workers->len; i++) {
        fan_worker *w = g_ptr_array_index(workers, i);

        while (worker_alive(w) && now_us() < end)
            g_usleep(20 * 1000);
        if (w->pid) {
            fprintf(stderr, "vtpm-fanout: worker %s (pid %d) ignored SIGTERM for %d s: killed\n",
                    w->host, (int)w->pid, (int)(STOP_TIMEOUT_US / G_USEC_PER_SEC));
            kill(w->pid, SIGKILL);
            waitpid(w->pid, NULL, 0);
            w->pid = 0;
            w->status = -1;
        }
        w->ok = w->status != -1 && WIFEXITED(w->status) && WEXITSTATUS(w->status) == 0;
        if (!w->ok && w->started) {
            fprintf(stderr, "vtpm-fanout: worker %s did not exit 0 (%s %d)\n", w->host,
                    w->status == -1            ? "killed"
                    : WIFEXITED(w->status)     ? "exit"
                                               : "signal",
                    w->status == -1 ? SIGKILL
                    : WIFEXITED(w->status) ? WEXITSTATUS(w->status)
                                           : WTERMSIG(w->status));
            print_log_tail(w);
        }
    }
}

static void
worker_free(gpointer p)
{
    fan_worker *w = p;

    g_free(w->host);
    g_free(w->conf);
    g_free(w->log);
    g_free(w);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path) < 0 ? -1 : 0;
}

/* ---- statistics ------------------------------------------------------------------ */

typedef struct {
    guint calls, ok, faulted, lost;
    GArray *lat;          /* gint64 us, of the first replies */
    GHashTable *faults;   /* interned code -> count */
} fan_group;

static void
group_init(fan_group *g)
{
    memset(g, 0, sizeof(*g));
    g->lat = g_array_new(FALSE, FALSE, sizeof(gint64));
    g->faults = g_hash_table_new(g_direct_hash, g_direct_equal);
}

static void
group_clear(fan_group *g)
{
    g_array_free(g->lat, TRUE);
    g_hash_table_destroy(g->faults);
}

static void
group_add(fan_group *g, const fan_call *c)
{
    g->calls++;
    if (!c->nreplies) {
        g->lost++;
        return;
    }
    g_array_append_val(g->lat, (gint64){ c->reply_us - c->sent_us });
    if (!c->fault) {
        g->ok++;
        return;
    }
    g->faulted++;
    g_hash_table_insert(g->faults, (gpointer)c->fault,
                        GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(g->faults, c->fault)) + 1));
}

static gint
cmp_i64(gconstpointer a, gconstpointer b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;

    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least @permille of the values
 * at or below it. */
static double
percentile_ms(const GArray *sorted, guint permille)
{
    guint n = sorted->len, k;

    if (!n)
        return 0;
    k = (guint)(((guint64)permille * n + 999) / 1000);
    k = CLAMP(k, 1, n);
    return g_array_index(sorted, gint64, k - 1) / 1000.0;
}

typedef struct {
    double p50, p90, p99, max;
} fan_pcts;

static fan_pcts
group_pcts(fan_group *g)
{
    fan_pcts p = { 0 };

    g_array_sort(g->lat, cmp_i64);
    p.p50 = percentile_ms(g->lat, 500);
    p.p90 = percentile_ms(g->lat, 900);
    p.p99 = percentile_ms(g->lat, 990);
    p.max = percentile_ms(g->lat, 1000);
    return p;
}

static double
elapsed_s(const fan_run *r)
{
    return r->t1_us > r->t0_us ? (r->t1_us - r->t0_us) / (double)G_USEC_PER_SEC : 0;
}

static double
rate(const fan_run *r, guint n)
{
    double s = elapsed_s(r);

    return s > 0 ? n / s : 0;
}

static void
json_faults(JsonBuilder *b, GHashTable *faults)
{
    GHashTableIter it;
    gpointer k, v;

    json_builder_begin_object(b);
    g_hash_table_iter_init(&it, faults);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        json_builder_set_member_name(b, k);
        json_builder_add_int_value(b, GPOINTER_TO_UINT(v));
    }
    json_builder_end_object(b);
}

static void
json_pcts(JsonBuilder *jb, const fan_pcts *p)
{
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "p50");
    json_builder_add_double_value(jb, p->p50);
    json_builder_set_member_name(jb, "p90");
    json_builder_add_double_value(jb, p->p90);
    json_builder_set_member_name(jb, "p99");
    json_builder_add_double_value(jb, p->p99);
    json_builder_set_member_name(jb, "max");
    json_builder_add_double_value(jb, p->max);
    json_builder_end_object(jb);
}

static void
json_group(JsonBuilder *b, const fan_run *r, fan_group *g)
{
    fan_pcts p = group_pcts(g);

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "calls");
    json_builder_add_int_value(b, g->calls);
    json_builder_set_member_name(b, "ok");
    json_builder_add_int_value(b, g->ok);
    json_builder_set_member_name(b, "faults");
    json_faults(b, g->faults);
    json_builder_set_member_name(b, "lost");
    json_builder_add_int_value(b, g->lost);
    json_builder_set_member_name(b, "calls_per_s");
    json_builder_add_double_value(b, rate(r, g->ok + g->faulted));
    json_builder_set_member_name(b, "latency_ms");
    json_pcts(b, &p);
    json_builder_end_object(b);
}

static void
json_tally(JsonBuilder *b, const char *name, const fan_tally *t)
{
    g_autofree char *ids = g_strdup_printf("%s_ids", name);

    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, t->n);
    json_builder_set_member_name(b, ids);
    json_builder_begin_array(b);
    for (guint i = 0; i < t->ids->len; i++)
        json_builder_add_string_value(b, g_ptr_array_index(t->ids, i));
    json_builder_end_array(b);
}

static void
json_strings(JsonBuilder *b, GPtrArray *a)
{
    json_builder_begin_array(b);
    for (guint i = 0; a && i < a->len; i++)
        json_builder_add_string_value(b, g_ptr_array_index(a, i));
    json_builder_end_array(b);
}

static void
print_row(const char *label, const fan_run *r, fan_group *g)
{
    fan_pcts p = group_pcts(g);

    printf("%-28s %7u %7u %6u %6u %9.1f %8.2f %8.2f %8.2f %8.2f\n", label, g->calls, g->ok,
           g->faulted, g->lost, rate(r, g->ok + g->faulted), p.p50, p.p90, p.p99, p.max);
}

static void
print_tally(const char *name, const fan_tally *t)
{
    if (!t->n)
        return;
    printf("%s: %u%s\n", name, t->n, t->n > t->ids->len ? " (first ones listed)" : "");
    for (guint i = 0; i < t->ids->len; i++)
        printf("  %s\n", (const char *)g_ptr_array_index(t->ids, i));
}

static gint
cmp_strp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hosts of a broadcast that did not answer / that were not expected. */
static void
bcast_compare(const fan_bcast *b, GPtrArray *expect, GPtrArray **missing, GPtrArray **extra)
{
    g_autoptr(GHashTable) want = g_hash_table_new(g_str_hash, g_str_equal);
    GHashTableIter it;
    gpointer k;

    *missing = g_ptr_array_new();
    *extra = g_ptr_array_new();
    for (guint i = 0; i < expect->len; i++) {
        g_hash_table_add(want, g_ptr_array_index(expect, i));
        if (!g_hash_table_contains(b->answered, g_ptr_array_index(expect, i)))
            g_ptr_array_add(*missing, g_ptr_array_index(expect, i));
    }
    g_hash_table_iter_init(&it, b->answered);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!g_hash_table_contains(want, k))
            g_ptr_array_add(*extra, k);
    }
    g_ptr_array_sort(*extra, cmp_strp);
}

static GPtrArray *
bcast_hosts(const fan_bcast *b)
{
    GPtrArray *a = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, b->answered);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(a, k);
    g_ptr_array_sort(a, cmp_strp);
    return a;
}

/* Everything the report shows. */
typedef struct {
    fan_run *r;
    fan_group all, per_method[M__COUNT], *per_host;
    fan_bcast *bc;            /* the broadcast / discovery, NULL if none */
    bool discover, do_bcast;
    GPtrArray *missing, *extra; /* --broadcast: expected hosts that did not answer / others */
    GPtrArray *workers;       /* fan_worker * */
    bool failed;
} fan_report;

/* Latency, then the calls per method and per host. */
static void
json_groups(JsonBuilder *jb, fan_report *rep)
{
    fan_run *r = rep->r;
    fan_pcts p = group_pcts(&rep->all);

    json_builder_set_member_name(jb, "latency_ms");
    json_pcts(jb, &p);
    json_builder_set_member_name(jb, "methods");
    json_builder_begin_object(jb);
    for (int m = 0; m < M__COUNT; m++) {
        if (!rep->per_method[m].calls)
            continue;
        json_builder_set_member_name(jb, method_names[m]);
        json_group(jb, r, &rep->per_method[m]);
    }
    json_builder_end_object(jb);
    json_builder_set_member_name(jb, "per_host");
    json_builder_begin_object(jb);
    for (guint h = 0; h < r->hosts->len; h++) {
        if (!rep->per_host[h].calls)
            continue;
        json_builder_set_member_name(jb, g_ptr_array_index(r->hosts, h));
        json_group(jb, r, &rep->per_host[h]);
    }
    json_builder_end_object(jb);
}

static void
json_cleanup(JsonBuilder *jb, const fan_cleanup *cl)
{
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "spawns_sent");
    json_builder_add_int_value(jb, cl->n);
    json_builder_set_member_name(jb, "destroyed");
    json_builder_add_int_value(jb, cl->destroyed);
    json_builder_set_member_name(jb, "existed");
    json_builder_add_int_value(jb, cl->existed);
    json_builder_set_member_name(jb, "failed");
    json_builder_add_int_value(jb, cl->failed.n);
    /* The first LIST_MAX: "uuid@host: fault code: message". */
    json_builder_set_member_name(jb, "failures");
    json_strings(jb, cl->failed.ids);
    json_builder_set_member_name(jb, "elapsed_s");
    json_builder_add_double_value(jb, cl->elapsed_us / (double)G_USEC_PER_SEC);
    json_builder_end_object(jb);
}

static void
json_bcast(JsonBuilder *jb, fan_report *rep)
{
    g_autoptr(GPtrArray) answered = bcast_hosts(rep->bc);

    json_builder_set_member_name(jb, rep->discover ? "discover" : "broadcast");
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "answered");
    json_strings(jb, answered);
    if (rep->do_bcast) {
        json_builder_set_member_name(jb, "missing");
        json_strings(jb, rep->missing);
        json_builder_set_member_name(jb, "extra");
        json_strings(jb, rep->extra);
    }
    json_builder_set_member_name(jb, "late");
    json_builder_add_int_value(jb, rep->bc->late);
    json_builder_end_object(jb);
}

static void
json_workers(JsonBuilder *jb, GPtrArray *workers)
{
    json_builder_begin_array(jb);
    for (guint i = 0; i < workers->len; i++) {
        fan_worker *w = g_ptr_array_index(workers, i);

        json_builder_begin_object(jb);
        json_builder_set_member_name(jb, "host");
        json_builder_add_string_value(jb, w->host);
        json_builder_set_member_name(jb, "ready_ms");
        if (w->ready_ms >= 0)
            json_builder_add_double_value(jb, w->ready_ms);
        else
            json_builder_add_null_value(jb);
        json_builder_set_member_name(jb, "exit_ok");
        json_builder_add_boolean_value(jb, w->ok);
        json_builder_end_object(jb);
    }
    json_builder_end_array(jb);
}

static void
report_json(fan_report *rep)
{
    fan_run *r = rep->r;
    g_autoptr(JsonBuilder) jb = json_builder_new();
    g_autoptr(JsonNode) root = NULL;
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *text = NULL;

    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "result");
    json_builder_add_string_value(jb, rep->failed ? "fail" : "ok");
    if (r->error) {
        json_builder_set_member_name(jb, "error");
        json_builder_add_string_value(jb, r->error);
    }
    json_builder_set_member_name(jb, "calls");
    json_builder_add_int_value(jb, rep->all.calls);
    json_builder_set_member_name(jb, "warmup");
    json_builder_add_int_value(jb, r->nwarmup);
    json_builder_set_member_name(jb, "sent");
    json_builder_add_int_value(jb, r->sent);
    json_builder_set_member_name(jb, "concurrency");
    json_builder_add_int_value(jb, r->concurrency);
    json_builder_set_member_name(jb, "hosts");
    json_strings(jb, r->hosts);
    json_builder_set_member_name(jb, "mix");
    json_builder_begin_object(jb);
    for (int m = 0; m < M__COUNT; m++) {
        if (!r->weights[m])
            continue;
        json_builder_set_member_name(jb, method_names[m]);
        json_builder_add_int_value(jb, r->weights[m]);
    }
    json_builder_end_object(jb);
    json_builder_set_member_name(jb, "elapsed_s");
    json_builder_add_double_value(jb, elapsed_s(r));
    json_builder_set_member_name(jb, "calls_per_s");
    json_builder_add_double_value(jb, rate(r, rep->all.ok + rep->all.faulted));
    json_builder_set_member_name(jb, "ok");
    json_builder_add_int_value(jb, rep->all.ok);
    /* The broker's cost per call grows with the body: say what it carried. */
    json_builder_set_member_name(jb, "reply_bytes_mean");
    json_builder_add_int_value(jb, r->answered ? (gint64)(r->reply_bytes / r->answered) : 0);
    json_builder_set_member_name(jb, "faulted");
    json_builder_add_int_value(jb, rep->all.faulted);
    json_builder_set_member_name(jb, "faults");
    json_faults(jb, rep->all.faults);
    json_tally(jb, "lost", &r->lost);
    json_tally(jb, "duplicate", &r->duplicate);
    json_tally(jb, "late", &r->late);
    json_tally(jb, "unmatched", &r->unmatched);
    json_tally(jb, "invalid", &r->invalid);
    json_groups(jb, rep);
    if (r->weights[M_SPAWN]) {
        json_builder_set_member_name(jb, "cleanup");
        json_cleanup(jb, &r->cleanup);
    }
    if (rep->bc)
        json_bcast(jb, rep);
    if (rep->workers->len) {
        json_builder_set_member_name(jb, "workers");
        json_workers(jb, rep->workers);
    }
    json_builder_end_object(jb);
    root = json_builder_get_root(jb);
    json_generator_set_root(gen, root);
    text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

static void
report_table(fan_report *rep)
{
    fan_run *r = rep->r;

    printf("vtpm-fanout: %u calls (+%u warm-up) to %u host(s), concurrency %u: %.3f s, "
           "%.1f calls/s%s\n",
           rep->all.calls, r->nwarmup, r->hosts->len, r->concurrency, elapsed_s(r),
           rate(r, rep->all.ok + rep->all.faulted), rep->failed ? "  ** FAIL **" : "");
    printf("replies: ok %u, fault %u, lost %u, duplicate %u, late %u, unmatched %u, "
           "invalid %u\n\n",
           rep->all.ok, rep->all.faulted, r->lost.n, r->duplicate.n, r->late.n, r->unmatched.n,
           r->invalid.n);
    printf("%-28s %7s %7s %6s %6s %9s %8s %8s %8s %8s\n", "", "calls", "ok", "fault", "lost",
           "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms");
    print_row("all", r, &rep->all);
    for (int m = 0; m < M__COUNT; m++) {
        if (rep->per_method[m].calls) {
            g_autofree char *label = g_strdup_printf("method %s", method_names[m]);

            print_row(label, r, &rep->per_method[m]);
        }
    }
    for (guint h = 0; h < r->hosts->len; h++) {
        if (rep->per_host[h].calls) {
            g_autofree char *label =
                g_strdup_printf("host %s", (const char *)g_ptr_array_index(r->hosts, h));

            print_row(label, r, &rep->per_host[h]);
        }
    }
    if (g_hash_table_size(rep->all.faults)) {
        GHashTableIter it;
        gpointer k, v;

        printf("\nfaults:");
        g_hash_table_iter_init(&it, rep->all.faults);
        while (g_hash_table_iter_next(&it, &k, &v))
            printf(" %s %u", (const char *)k, GPOINTER_TO_UINT(v));
        printf("\n");
    }
    if (rep->bc) {
        g_autoptr(GPtrArray) answered = bcast_hosts(rep->bc);

        printf("\n%s: %u answered", rep->discover ? "discover" : "broadcast", answered->len);
        for (guint i = 0; i < answered->len; i++)
            printf("%s%s", i ? ", " : ": ", (const char *)g_ptr_array_index(answered, i));
        if (rep->missing && rep->missing->len)
            printf("; MISSING %u", rep->missing->len);
        if (rep->extra && rep->extra->len)
            printf("; %u not in --hosts", rep->extra->len);
        if (rep->bc->late)
            printf("; %u late", rep->bc->late);
        printf("\n");
    }
    printf("\n");
    print_tally("lost", &r->lost);
    print_tally("duplicate", &r->duplicate);
    print_tally("late", &r->late);
    print_tally("unmatched", &r->unmatched);
    print_tally("invalid", &r->invalid);
    if (r->weights[M_SPAWN]) {
        printf("cleanup: %u of %u spawned instances destroyed (%u existed), %u failed, "
               "%.3f s\n",
               r->cleanup.destroyed, r->cleanup.n, r->cleanup.existed, r->cleanup.failed.n,
               r->cleanup.elapsed_us / (double)G_USEC_PER_SEC);
        print_tally("cleanup failed", &r->cleanup.failed);
    }
    for (guint i = 0; i < rep->workers->len; i++) {
        fan_worker *w = g_ptr_array_index(rep->workers, i);

        if (w->ready_ms >= 0)
            printf("worker %s: ready after %.0f ms, %s\n", w->host, w->ready_ms,
                   w->ok ? "exited 0" : "did NOT exit 0");
        else
            printf("worker %s: never answered, %s\n", w->host,
                   w->ok ? "exited 0" : "did NOT exit 0");
    }
}

/* ---- main -------------------------------------------------------------------------- */

/* The command line. */
typedef struct {
    vtpm_amqpopt broker;
    char *hosts, *mix, *vtpmd, *libvirt_uri, *spawn_tpm;
    const char *vtpmd_how;  /* where vtpmd came from, for the message naming it */
    gint64 ncalls, warmup, concurrency, spawn, seed;
    double timeout, settle;
    gboolean discover, do_bcast, json;
} fan_opts;

static void
fan_opts_clear(fan_opts *o)
{
    vtpm_amqpopt_clear(&o->broker);
    g_free(o->hosts);
    g_free(o->mix);
    g_free(o->vtpmd);
    g_free(o->libvirt_uri);
    g_free(o->spawn_tpm);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(fan_opts, fan_opts_clear)

static GOptionContext *
fan_context(fan_opts *o)
{
    GOptionEntry entries[] = {
        { "hosts", 'H', 0, G_OPTION_ARG_STRING, &o->hosts,
          "comma-separated workers to call, round-robin", "H1,H2,..." },
        { "discover", 0, 0, G_OPTION_ARG_NONE, &o->discover,
          "call every worker that answers a fanout get_capabilities within 2 s", NULL },
        { "calls", 'n', 0, G_OPTION_ARG_INT64, &o->ncalls, "calls to measure (0: none)", "N" },
        { "warmup", 0, 0, G_OPTION_ARG_INT64, &o->warmup,
          "calls sent first and left out of the statistics (default 0)", "N" },
        { "concurrency", 'c', 0, G_OPTION_ARG_INT64, &o->concurrency,
          "calls in flight at once (default 1)", "C" },
        { "mix", 'm', 0, G_OPTION_ARG_STRING, &o->mix,
          "weighted methods (default get_capabilities=100; supported: get_capabilities, "
          "spawn, destroy)", "M=W,..." },
        { "spawn-tpm", 0, 0, G_OPTION_ARG_STRING, &o->spawn_tpm,
          "spawned instances get a vTPM of this version, host-held key (default: none; "
          "needs a real libvirt host, test:/// has no vTPM)", "2.0|1.2" },
        { "timeout", 't', 0, G_OPTION_ARG_DOUBLE, &o->timeout,
          "seconds a call may take before it counts as timed out (default 10); the run "
          "waits this long for missing replies at the end", "S" },
        { "settle", 0, 0, G_OPTION_ARG_DOUBLE, &o->settle,
          "seconds to keep listening for duplicates after the last reply (default 1)", "S" },
        { "broadcast", 'b', 0, G_OPTION_ARG_NONE, &o->do_bcast,
          "send one fanout get_capabilities first and check every host answered", NULL },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &o->json, "print one JSON line instead of a table",
          NULL },
        { "spawn-workers", 0, 0, G_OPTION_ARG_INT64, &o->spawn,
          "start K vtpmd workers (hosts fanout-1..fanout-K) for the run", "K" },
        { "vtpmd", 0, 0, G_OPTION_ARG_FILENAME, &o->vtpmd,
          "the vtpmd binary for --spawn-workers (default: the one beside vtpm-fanout, else "
          "on PATH)",
          "PATH" },
        { "libvirt-uri", 0, 0, G_OPTION_ARG_STRING, &o->libvirt_uri,
          "[libvirt] uri of spawned workers (default test:///default)", "URI" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &o->seed, "seed of the method mix (default: random)",
          "N" },
        { NULL }
    };
    GOptionContext *ctx =
        g_option_context_new("- fire RPC load at vtpmd workers and account for every reply");

    *o = (fan_opts){ .vtpmd_how = "--vtpmd", .ncalls = -1, .concurrency = 1, .timeout = 10.0,
                     .settle = 1.0 };
    vtpm_amqpopt_add(ctx, &o->broker, VTPM_AMQPOPT_NAMES);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Calls go round-robin over the hosts, each with a unique correlation id and\n"
        "message id.  Every call must get exactly one reply: the report counts lost\n"
        "(no reply by the end + --timeout), duplicate, late (after the call's own\n"
        "timeout), unmatched (unknown correlation id) and invalid replies, ok and\n"
        "faults per code, calls/s and latency p50/p90/p99/max per method and host.\n"
        "Warm-up calls are accounted for but left out of the statistics.\n"
        "--spawn-workers K starts K vtpmd (own config in a temporary directory,\n"
        "[worker] host fanout-<i>, workers 4), waits until each answers, calls them\n"
        "(unless --hosts or --discover says otherwise), and stops them with SIGTERM,\n"
        "expecting exit 0.\n"
        "spawn creates an instance with a fresh random UUID (flavor 1 vCPU, 64 MiB, no\n"
        "vTPM unless --spawn-tpm; no disk: firmware only); destroy names a fresh random\n"
        "UUID, so it succeeds and touches nothing.  After the load and --settle, every\n"
        "instance a spawn was sent for (warm-up included, answered or not) is destroyed\n"
        "on its host, before spawned workers stop; these cleanup calls (each with\n"
        "--timeout) are outside the statistics, and one that fails fails the run.\n"
        "The other methods need an existing instance and are refused.\n"
        "Spawned workers get this run's broker options as their [amqp]; the options\n"
        "are described in vtpm-amqp(7).\n"
        "Exit: 0 nothing lost, duplicated, unmatched or invalid, no instance left (and\n"
        "--broadcast: all hosts answered; --spawn-workers: all workers exited 0),\n"
        "1 otherwise, 2 usage.\n");
    return ctx;
}

/* The numbers and the workers to spawn: 0, or the usage error. */
static int
check_numbers(fan_opts *o)
{
    if (o->ncalls < 0 && !o->do_bcast && !o->discover)
        return usage_error("--calls is required");
    if (o->ncalls < 0)
        o->ncalls = 0;
    if ((guint64)o->ncalls > MAX_CALLS || o->warmup < 0 || (guint64)o->warmup > MAX_CALLS)
        return usage_error("--calls and --warmup must be 0..%u", MAX_CALLS);
    if (o->concurrency < 1 || o->concurrency > 65535)
        return usage_error("--concurrency must be 1..65535");
    /* Written so that NaN fails too. */
    if (!(o->timeout > 0 && o->timeout <= 3600))
        return usage_error("--timeout must be in (0, 3600] seconds");
    if (!(o->settle >= 0 && o->settle <= 3600))
        return usage_error("--settle must be in [0, 3600] seconds");
    if (o->spawn < 0 || o->spawn > MAX_SPAWN)
        return usage_error("--spawn-workers must be 0..%d", MAX_SPAWN);
    if (!o->spawn && (o->vtpmd || o->libvirt_uri))
        return usage_error("--vtpmd and --libvirt-uri go with --spawn-workers");
    if (o->vtpmd && !g_file_test(o->vtpmd, G_FILE_TEST_IS_EXECUTABLE))
        return usage_error("--vtpmd %s is not an executable", o->vtpmd);
    if (o->spawn && !o->vtpmd && !(o->vtpmd = find_vtpmd(&o->vtpmd_how)))
        return usage_error("--spawn-workers: no vtpmd beside vtpm-fanout (., ../sbin, "
                           "../worker) or on PATH; give --vtpmd PATH");
    return 0;
}

/* Everything the command line says, checked: 0, or the usage error.  @r
 * gets the broker and the method mix only: nothing allocated. */
static int
fan_check(fan_opts *o, fan_run *r, char ***hosts_out)
{
    g_auto(GStrv) hosts = NULL;
    vtpm_error err = { 0 };
    int rc;

    if (vtpm_amqpopt_load(&o->broker, &r->broker, &err) < 0)
        return usage_error("%s", err.message);
    /* The tool accounts for every reply itself: duplicates, late ones,
     * strays. */
    r->broker.flags = VTPM_CLIENT_ALL_REPLIES;
    if ((rc = check_numbers(o)))
        return rc;
    if (o->discover && o->hosts)
        return usage_error("--hosts and --discover are mutually exclusive");
    if (!o->discover && !o->hosts && !o->spawn)
        return usage_error("one of --hosts, --discover or --spawn-workers is required");
    if (o->do_bcast && o->discover)
        return usage_error("--broadcast checks the hosts of --hosts or --spawn-workers; "
                           "--discover accepts whoever answers");
    if ((rc = parse_mix(r, o->mix ? o->mix : "get_capabilities=100")))
        return rc;
    if (o->spawn_tpm && strcmp(o->spawn_tpm, "2.0") != 0 && strcmp(o->spawn_tpm, "1.2") != 0)
        return usage_error("--spawn-tpm must be 2.0 or 1.2");
    if (o->spawn_tpm && !r->weights[M_SPAWN])
        return usage_error("--spawn-tpm goes with spawn in --mix");
    hosts = g_strsplit(o->hosts ? o->hosts : "", ",", -1);
    for (guint i = 0; hosts[i]; i++) {
        g_strstrip(hosts[i]);
        if (!host_name_ok(hosts[i]))
            return usage_error("--hosts: '%s' is not a host name ([A-Za-z0-9._-], 1..200)",
                               hosts[i]);
    }
    *hosts_out = g_steal_pointer(&hosts);
    return 0;
}

static void
run_init(fan_run *r, const fan_opts *o, char **hosts)
{
    r->concurrency = (guint)o->concurrency;
    r->timeout_us = (gint64)(o->timeout * G_USEC_PER_SEC);
    r->settle_us = (gint64)(o->settle * G_USEC_PER_SEC);
    r->spawn_tpm = o->spawn_tpm;
    r->hosts = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; hosts[i]; i++)
        add_host(r, hosts[i]);
    r->rand = o->seed ? g_rand_new_with_seed((guint32)o->seed) : g_rand_new();
    r->run_id = g_uuid_string_random();
    r->by_corr = g_hash_table_new(g_str_hash, g_str_equal);
    r->bcasts = g_hash_table_new(g_str_hash, g_str_equal);
    g_queue_init(&r->outstanding);
    tally_init(&r->lost);
    tally_init(&r->duplicate);
    tally_init(&r->late);
    tally_init(&r->unmatched);
    tally_init(&r->invalid);
    tally_init(&r->cleanup.failed);
}

static void
tally_clear(fan_tally *t)
{
    g_ptr_array_free(t->ids, TRUE);
}

static void
calls_free(fan_call *calls, guint n)
{
    for (guint i = 0; i < n; i++) {
        g_free(calls[i].corr);
        g_free(calls[i].uuid);
        g_free(calls[i].fault_msg);
    }
    g_free(calls);
}

static void
run_clear(fan_run *r)
{
    GHashTableIter it;
    gpointer v;

    calls_free(r->calls, r->ncalls);
    calls_free(r->cleanup.calls, r->cleanup.n);
    g_hash_table_iter_init(&it, r->bcasts);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        fan_bcast *b = v;

        g_hash_table_destroy(b->answered);
        g_free(b->corr);
        g_free(b);
    }
    g_hash_table_destroy(r->bcasts);
    g_hash_table_destroy(r->by_corr);
    g_queue_clear(&r->outstanding);
    tally_clear(&r->cleanup.failed);
    tally_clear(&r->lost);
    tally_clear(&r->duplicate);
    tally_clear(&r->late);
    tally_clear(&r->unmatched);
    tally_clear(&r->invalid);
    g_ptr_array_free(r->hosts, TRUE);
    g_rand_free(r->rand);
    g_free(r->run_id);
    g_free(r->error);
}

/* Start --spawn-workers K vtpmd and wait until each answers; they are the
 * hosts called unless --hosts or --discover say otherwise.  A failure is
 * r->error (the run then only stops what did start). */
static void
spawn_workers(fan_run *r, const fan_opts *o, GPtrArray *workers, char **tmpdir)
{
    g_autoptr(GError) gerr = NULL;
    vtpm_error err = { 0 };

    if (!(*tmpdir = g_dir_make_tmp("vtpm-fanout-XXXXXX", &gerr))) {
        r->error = g_strdup_printf("temporary directory: %s", gerr->message);
        return;
    }
    fprintf(stderr, "vtpm-fanout: starting %" G_GINT64_FORMAT " worker%s: %s (%s)\n", o->spawn,
            o->spawn == 1 ? "" : "s", o->vtpmd, o->vtpmd_how);
    for (gint64 i = 1; i <= o->spawn && !r->error; i++) {
        fan_worker *w = g_new0(fan_worker, 1);

        w->host = g_strdup_printf("fanout-%" G_GINT64_FORMAT, i);
        w->ready_ms = -1;
        w->status = -1;
        g_ptr_array_add(workers, w);
        if (write_worker_config(r, w, *tmpdir,
                                o->libvirt_uri ? o->libvirt_uri : "test:///default", &gerr) < 0 ||
            start_worker(w, o->vtpmd, &gerr) < 0)
            r->error = g_strdup_printf("worker %s: %s", w->host, gerr->message);
    }
    if (!r->error && wait_ready(r, workers, &err) < 0)
        r->error = g_strdup(err.message);
    if (!o->hosts && !o->discover) {
        for (guint i = 0; i < workers->len; i++)
            add_host(r, ((fan_worker *)g_ptr_array_index(workers, i))->host);
    }
}

/* Connect, then the broadcast (--broadcast) or discovery (--discover). */
static void
connect_and_discover(fan_run *r, const fan_opts *o, fan_bcast **bc)
{
    vtpm_client_fault f;
    vtpm_error err = { 0 };

    if (!r->error && vtpm_client_connect(&r->broker, &r->client, &f) < 0)
        r->error = g_strdup(f.message);
    if (!r->error && (o->discover || o->do_bcast)) {
        if (broadcast(r, o->discover ? DISCOVER_WINDOW_US : r->timeout_us,
                      o->discover ? NULL : r->hosts, bc, &err) < 0) {
            r->error = g_strdup(err.message);
        } else if (o->discover) {
            g_autoptr(GPtrArray) found = bcast_hosts(*bc);

            for (guint i = 0; i < found->len; i++)
                add_host(r, g_ptr_array_index(found, i));
            if (!r->hosts->len && o->ncalls > 0)
                r->error = g_strdup("--discover: no worker answered the fanout within 2 s");
        }
    }
    if (!r->error && r->hosts->len == 0 && o->ncalls + o->warmup > 0)
        r->error = g_strdup("no host to call");
}

/* The warm-up and measured calls, each with its correlation id, host and
 * method, sent and answered (or timed out); then the lingering replies. */
static void
run_load(fan_run *r, const fan_opts *o)
{
    vtpm_error err = { 0 };

    r->nwarmup = (guint)o->warmup;
    r->ncalls = r->error ? 0 : (guint)(o->ncalls + o->warmup);
    r->calls = g_new0(fan_call, r->ncalls);
    for (guint i = 0; i < r->ncalls; i++) {
        fan_call *c = &r->calls[i];

        c->corr = g_strdup_printf("%s.%u", r->run_id, i);
        c->host = i % r->hosts->len;
        c->method = (guint8)pick_method(r);
        c->measured = i >= r->nwarmup;
        if (c->method == M_SPAWN)
            c->uuid = g_uuid_string_random();
        g_hash_table_insert(r->by_corr, c->corr, c);
    }
    if (!r->error && (run_calls(r, r->calls, 0, r->nwarmup, &err) < 0 ||
                      run_calls(r, r->calls, r->nwarmup, r->ncalls, &err) < 0 ||
                      linger(r, &err) < 0))
        r->error = g_strdup(err.message);
}

/* Every call into its groups and tallies; whether the run failed. */
static void
account(fan_report *rep, const fan_opts *o)
{
    fan_run *r = rep->r;

    group_init(&rep->all);
    for (int m = 0; m < M__COUNT; m++)
        group_init(&rep->per_method[m]);
    rep->per_host = g_new0(fan_group, r->hosts->len);
    for (guint h = 0; h < r->hosts->len; h++)
        group_init(&rep->per_host[h]);
    for (guint i = 0; i < r->ncalls; i++) {
        fan_call *c = &r->calls[i];

        if (!c->nreplies && c->sent_us)
            tally_add(&r->lost, call_label(r, c));
        if (!c->measured)
            continue;
        group_add(&rep->all, c);
        group_add(&rep->per_method[c->method], c);
        group_add(&rep->per_host[c->host], c);
    }
    if (rep->bc && o->do_bcast)
        bcast_compare(rep->bc, r->hosts, &rep->missing, &rep->extra);
    rep->failed = r->error || r->lost.n || r->duplicate.n || r->unmatched.n || r->invalid.n ||
                  (rep->missing && rep->missing->len) || r->sent < r->ncalls ||
                  r->cleanup.failed.n;
    for (guint i = 0; i < rep->workers->len; i++) {
        if (!((fan_worker *)g_ptr_array_index(rep->workers, i))->ok)
            rep->failed = true;
    }
}

static void
report(fan_report *rep, const fan_opts *o)
{
    const fan_run *r = rep->r;

    if (rep->missing && rep->missing->len) {
        g_autofree char *names = NULL;

        g_ptr_array_add(rep->missing, NULL);
        names = g_strjoinv(", ", (char **)rep->missing->pdata);
        g_ptr_array_remove_index(rep->missing, rep->missing->len - 1);
        fprintf(stderr, "vtpm-fanout: broadcast: no answer within %.1f s from: %s\n",
                o->timeout, names);
    }
    if (r->cleanup.failed.n)
        fprintf(stderr, "vtpm-fanout: cleanup: %u of %u spawned instances may be left behind "
                "(the report lists them)\n", r->cleanup.failed.n, r->cleanup.n);
    if (o->json)
        report_json(rep);
    else
        report_table(rep);
    fflush(stdout);
}

static void
report_clear(fan_report *rep)
{
    group_clear(&rep->all);
    for (int m = 0; m < M__COUNT; m++)
        group_clear(&rep->per_method[m]);
    for (guint h = 0; h < rep->r->hosts->len; h++)
        group_clear(&rep->per_host[h]);
    g_free(rep->per_host);
    if (rep->missing)
        g_ptr_array_free(rep->missing, TRUE);
    if (rep->extra)
        g_ptr_array_free(rep->extra, TRUE);
}

int
main(int argc, char **argv)
{
    g_auto(fan_opts) o = { 0 };
    g_autoptr(GOptionContext) ctx = fan_context(&o);
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GPtrArray) workers = g_ptr_array_new_with_free_func(worker_free);
    g_auto(GStrv) hosts = NULL;
    g_autofree char *tmpdir = NULL;
    fan_run r = { 0 };
    fan_report rep = { .r = &r, .workers = workers };
    int rc;

    if (!g_option_context_parse(ctx, &argc, &argv, &gerr))
        return usage_error("%s", gerr->message);
    if (argc > 1)
        return usage_error("unexpected argument '%s'", argv[1]);
    if ((rc = fan_check(&o, &r, &hosts)))
        return rc;
    run_init(&r, &o, hosts);
    if (o.spawn)
        spawn_workers(&r, &o, workers, &tmpdir);
    connect_and_discover(&r, &o, &rep.bc);
    run_load(&r, &o);
    /* Before the workers stop: they are the ones that destroy. */
    cleanup_spawns(&r, &r.broker);
    g_clear_pointer(&r.client, vtpm_client_free);
    if (r.error)
        fprintf(stderr, "vtpm-fanout: %s\n", r.error);
    if (o.spawn)
        stop_workers(workers);
    rep.discover = o.discover;
    rep.do_bcast = o.do_bcast;
    account(&rep, &o);
    report(&rep, &o);
    /* A failed run keeps the workers' logs for a look. */
    if (tmpdir && rep.failed)
        fprintf(stderr, "vtpm-fanout: worker configs and logs kept in %s\n", tmpdir);
    else if (tmpdir)
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    report_clear(&rep);
    run_clear(&r);
    return rep.failed ? EXIT_FAIL : EXIT_OK;
}
