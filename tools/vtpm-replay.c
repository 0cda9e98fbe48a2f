/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm-replay: record vtpmd worker traffic, replay it, compare the replies.
 *
 *   vtpm-replay record [BROKER OPTIONS] --out FILE [--bind ROUTING_KEY]... [--duration S | --count N]
 *   vtpm-replay replay FILE [BROKER OPTIONS] [--speed X | --as-fast-as-possible]
 *                           [--host-map OLD=NEW]... [--compare]
 *   vtpm-replay show FILE
 *
 * The format, the redaction, the firehose and the compare rules are in
 * docs/replay.md; the broker options are every tool's (tools/amqpopt.h).
 * Exit codes: 0 ok, 1 failure (a mismatch, a missing reply, a damaged
 * file, a broker error), 2 usage.
 *
 * Replies go to the default exchange, which no binding can see: only
 * RabbitMQ's firehose (amq.rabbitmq.trace) shows them.  So record looks
 * for the firehose first and taps the worker exchanges directly (requests
 * only, said in the file's header) when it is off.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "amqpopt.h"
#include "client/msg.h"
#include "mpjson.h"
#include "replaycmp.h"
#include "replayfile.h"

#ifndef VTPM_VERSION
#define VTPM_VERSION "unknown"
#endif

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define TRACE_EXCHANGE "amq.rabbitmq.trace"
#define POLL_MS 200                       /* signals are looked at this often */
#define PROBE_US (3 * G_USEC_PER_SEC)     /* the firehose must show the probe by then */
#define COUNT_GRACE_US (5 * G_USEC_PER_SEC) /* replies awaited after --count requests */
#define MAX_CALLS_TRACKED 100000          /* calls whose replies record still matches */
#define MAX_BIND 64
#define MAX_SECRET 4096                   /* the protocol's limit of vtpm.secret */

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    stop_requested = 1;
}

static int
usage_error(GOptionContext *ctx, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static int
usage_error(GOptionContext *ctx, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", g_get_prgname(), msg);
    if (ctx) {
        g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);

        fprintf(stderr, "%s", help);
    }
    return EXIT_USAGE;
}

static int
failure(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static int
failure(const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", g_get_prgname(), msg);
    return EXIT_FAIL;
}

/* A command's whole --help, for vtpm-replay --help (the command function
 * called without argv). */
static int
print_help(GOptionContext *ctx)
{
    g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);

    printf("%s", help);
    return 0;
}

static int
parse_options(GOptionContext *ctx, int *argc, char ***argv)
{
    g_autoptr(GError) gerr = NULL;

    if (!g_option_context_parse(ctx, argc, argv, &gerr))
        return usage_error(ctx, "%s", gerr->message);
    return 0;
}

/* The broker options of @o, or a usage error naming the value at fault. */
static int
broker_params(GOptionContext *ctx, vtpm_amqpopt *o, vtpm_client_options *p)
{
    vtpm_error err = { 0 };

    if (vtpm_amqpopt_load(o, p, &err) < 0)
        return usage_error(ctx, "%s", err.message);
    return 0;
}

/* ---- AMQP topic matching (firehose mode filters requests itself) ------------------ */

static bool
topic_words_match(char **pat, char **words)
{
    if (!*pat)
        return !*words;
    if (strcmp(*pat, "#") == 0) {
        for (char **w = words;; w++) {
            if (topic_words_match(pat + 1, w))
                return true;
            if (!*w)
                return false;
        }
    }
    if (!*words)
        return false;
    if (strcmp(*pat, "*") != 0 && strcmp(*pat, *words) != 0)
        return false;
    return topic_words_match(pat + 1, words + 1);
}

static bool
topic_match(const char *pattern, const char *key)
{
    g_auto(GStrv) p = g_strsplit(pattern, ".", -1);
    g_auto(GStrv) k = g_strsplit(key, ".", -1);

    return topic_words_match(p, k);
}

/* ---- record ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    guint nreplies;
} rec_call;

typedef struct {
    vtpm_replay_writer *w;
    const char *path;
    const char *exchange, *fanout_exchange;
    char **binds;
    bool firehose;
    GHashTable *calls; /* "reply_to\037correlation_id" -> rec_call */
    GQueue order;      /* the keys, oldest first, to bound the table */
    uint64_t seq, nrequests, nreplies, unmatched, redacted;
    gint64 t0_us;
} rec_state;

static char *
call_key(const char *reply_to, const char *corr)
{
    return g_strdup_printf("%s\037%s", reply_to, corr);
}

static void
track_call(rec_state *s, const char *reply_to, const char *corr, uint64_t seq)
{
    rec_call *c = g_new0(rec_call, 1);
    char *key = call_key(reply_to, corr);

    c->seq = seq;
    if (g_hash_table_contains(s->calls, key)) {
        g_hash_table_replace(s->calls, key, c); /* a redelivery: the latest copy wins */
        return;
    }
    g_hash_table_insert(s->calls, key, c);
    g_queue_push_tail(&s->order, key);
    if (s->order.length > MAX_CALLS_TRACKED)
        g_hash_table_remove(s->calls, g_queue_pop_head(&s->order));
}

/* Calls with no reply yet. */
static guint
calls_open(rec_state *s)
{
    GHashTableIter it;
    gpointer v;
    guint n = 0;

    g_hash_table_iter_init(&it, s->calls);
    while (g_hash_table_iter_next(&it, NULL, &v))
        n += ((rec_call *)v)->nreplies == 0;
    return n;
}

static int
write_record(rec_state *s, vtpm_replay_msg *m, vtpm_error *err)
{
    g_autoptr(GBytes) rec = NULL;
    guint nredacted = 0;

    m->seq = s->seq;
    rec = vtpm_replay_record_pack(m, &nredacted);
    if (vtpm_replay_writer_put(s->w, rec, err) < 0)
        return -1;
    s->redacted += nredacted > 0;
    s->seq++;
    return 0;
}

static const char *
obj_str(const msgpack_object *o, char **keep)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    *keep = g_strndup(o->via.str.ptr, o->via.str.size);
    return *keep;
}

/* One message as it arrived (direct tap) or as the firehose describes it. */
typedef struct {
    char *exchange, *routing_key, *corr, *reply_to, *message_id, *content_type;
    GBytes *headers;
} wire_view;

static void
wire_view_clear(wire_view *v)
{
    g_free(v->exchange);
    g_free(v->routing_key);
    g_free(v->corr);
    g_free(v->reply_to);
    g_free(v->message_id);
    g_free(v->content_type);
    if (v->headers)
        g_bytes_unref(v->headers);
}

/* The firehose's headers: exchange_name, routing_keys[0] and the original
 * properties (RabbitMQ 3.10: see docs/replay.md).  False when they are not
 * there. */
static bool
firehose_view(const vtpm_client_msg *m, wire_view *v)
{
    const msgpack_object *rks, *props;
    msgpack_unpacked up;
    size_t off = 0;
    bool ok = false;

    if (!m->headers)
        return false;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, g_bytes_get_data(m->headers, NULL),
                            g_bytes_get_size(m->headers), &off) != MSGPACK_UNPACK_SUCCESS)
        goto out;
    if (!obj_str(vtpm_proto_map_get(&up.data, "exchange_name"), &v->exchange))
        goto out;
    rks = vtpm_proto_map_get(&up.data, "routing_keys");
    if (!rks || rks->type != MSGPACK_OBJECT_ARRAY || rks->via.array.size < 1 ||
        !obj_str(&rks->via.array.ptr[0], &v->routing_key))
        goto out;
    props = vtpm_proto_map_get(&up.data, "properties");
    if (props && props->type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *h = vtpm_proto_map_get(props, "headers");

        obj_str(vtpm_proto_map_get(props, "correlation_id"), &v->corr);
        obj_str(vtpm_proto_map_get(props, "reply_to"), &v->reply_to);
        obj_str(vtpm_proto_map_get(props, "message_id"), &v->message_id);
        obj_str(vtpm_proto_map_get(props, "content_type"), &v->content_type);
        if (h && h->type == MSGPACK_OBJECT_MAP) {
            msgpack_sbuffer sb;
            msgpack_packer pk;

            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, *h);
            v->headers = vtpm_replay_sbuffer_bytes(&sb);
        }
    }
    ok = true;
out:
    msgpack_unpacked_destroy(&up);
    return ok;
}

static void
direct_view(const vtpm_client_msg *m, wire_view *v)
{
    v->exchange = g_strdup(m->exchange);
    v->routing_key = g_strdup(m->routing_key);
    v->corr = g_strdup(m->correlation_id);
    v->reply_to = g_strdup(m->reply_to);
    v->message_id = g_strdup(m->message_id);
    v->content_type = g_strdup(m->content_type);
    v->headers = m->headers ? g_bytes_ref(m->headers) : NULL;
}

static bool
bound(const rec_state *s, const char *routing_key)
{
    for (char **b = s->binds; *b; b++)
        if (topic_match(*b, routing_key))
            return true;
    return false;
}

static int
record_msg(rec_state *s, const vtpm_client_msg *m, vtpm_error *err)
{
    wire_view v = { 0 };
    vtpm_replay_msg rm = { 0 };
    int rc = 0;

    if (s->firehose) {
        if (strcmp(m->exchange, TRACE_EXCHANGE) != 0 || !firehose_view(m, &v))
            goto out; /* not a trace message, or not one this tool understands */
    } else {
        if (strcmp(m->exchange, s->exchange) != 0 && strcmp(m->exchange, s->fanout_exchange) != 0)
            goto out; /* (nothing else is consumed) */
        direct_view(m, &v);
    }
    rm.exchange = v.exchange;
    rm.routing_key = v.routing_key;
    rm.correlation_id = v.corr;
    rm.reply_to = v.reply_to;
    rm.message_id = v.message_id;
    rm.content_type = v.content_type;
    rm.headers = v.headers;
    rm.body = m->body;
    rm.t_rel_us = m->received_us - s->t0_us;
    rm.t_unix_us = g_get_real_time();
    if (*v.exchange == '\0') {
        g_autofree char *key = NULL;
        rec_call *c;

        /* A reply (default exchange, routing key = the caller's queue):
         * only those to calls recorded here. */
        if (!v.corr)
            goto out;
        key = call_key(v.routing_key, v.corr);
        if (!(c = g_hash_table_lookup(s->calls, key))) {
            s->unmatched++;
            goto out;
        }
        rm.kind = "reply";
        rm.has_request_seq = true;
        rm.request_seq = c->seq;
        if ((rc = write_record(s, &rm, err)) == 0) {
            c->nreplies++;
            s->nreplies++;
        }
        goto out;
    }
    if (strcmp(v.exchange, s->exchange) == 0) {
        if (!bound(s, v.routing_key))
            goto out;
    } else if (strcmp(v.exchange, s->fanout_exchange) != 0) {
        goto out;
    }
    rm.kind = "request";
    if (v.reply_to && v.corr)
        track_call(s, v.reply_to, v.corr, s->seq);
    if ((rc = write_record(s, &rm, err)) == 0)
        s->nrequests++;
out:
    wire_view_clear(&v);
    return rc;
}

/* Whether the firehose is on for this vhost: a message published to our
 * own queue must show up on amq.rabbitmq.trace too.  A connection of its
 * own, so that nothing of the probe stays bound to the recorder's. */
static int
firehose_on(const vtpm_client_options *cp, bool *on, vtpm_error *err)
{
    g_autoptr(vtpm_client) c = NULL;
    g_autofree char *probe_id = g_uuid_string_random();
    const char *keys[] = { "publish." };
    vtpm_client_msg_opts so = { 0 };
    gint64 end;
    int rc;

    if ((rc = vtpm_client_msg_connect(cp, &c, err)) < 0)
        return rc;
    if ((rc = vtpm_client_tap(c, TRACE_EXCHANGE, keys, 1, NULL, err)) < 0)
        return vtpm_error_prefix(err, "tap %s", TRACE_EXCHANGE);
    so.exchange = "";
    so.routing_key = vtpm_client_reply_queue(c);
    so.cast = true;
    so.message_id = probe_id;
    if ((rc = vtpm_client_msg_send(c, &so, "\x80", 1, NULL, err)) < 0)
        return rc;
    end = g_get_monotonic_time() + PROBE_US;
    *on = false;
    for (;;) {
        g_autoptr(vtpm_client_msg) m = NULL;
        wire_view v = { 0 };
        gint64 left = (end - g_get_monotonic_time()) / 1000;

        if (left <= 0)
            return 0;
        if ((rc = vtpm_client_msg_recv(c, (int)left, &m, err)) < 0)
            return rc;
        if (rc == 1)
            return 0;
        if (strcmp(m->exchange, TRACE_EXCHANGE) == 0 && firehose_view(m, &v) &&
            g_strcmp0(v.message_id, probe_id) == 0)
            *on = true;
        wire_view_clear(&v);
        if (*on)
            return 0;
        /* The probe itself arrived: the firehose publishes its copy before
         * routing, so it would have come first. */
        if (g_strcmp0(m->message_id, probe_id) == 0 && *m->exchange == '\0')
            end = MIN(end, g_get_monotonic_time() + 500 * 1000);
    }
}

/*
 * Started before any worker, the worker exchanges do not exist yet and
 * cannot be tapped.  They are then declared here exactly as vtpmd declares
 * them (amqp/topology.c: the same types and flags), so the first worker
 * finds them as it would have made them.  Checked first on a connection of
 * its own, which a missing exchange closes: a user allowed to read the
 * exchanges but not to configure them can still record.
 */
static int
ensure_exchanges(const vtpm_client_options *cp, vtpm_error *err)
{
    g_autoptr(vtpm_client) probe = NULL;
    vtpm_error missing = { 0 };
    int rc;

    if ((rc = vtpm_client_msg_connect(cp, &probe, err)) < 0)
        return rc;
    if (vtpm_client_declare_exchanges(probe, true, &missing) == 0)
        return 0;
    g_clear_pointer(&probe, vtpm_client_free);
    if ((rc = vtpm_client_msg_connect(cp, &probe, err)) < 0 ||
        (rc = vtpm_client_declare_exchanges(probe, false, err)) < 0)
        return vtpm_error_prefix(err, "declaring the worker exchanges");
    fprintf(stderr, "vtpm-replay: no worker has declared the exchanges yet (%s): declared %s "
                    "(topic) and %s_fanout (fanout), durable, as vtpmd declares them\n",
            missing.message, cp->exchange, cp->topic);
    return 0;
}

static GBytes *
header_record(const char *broker, const char *exchange, const char *topic, const char *fanout,
              char **binds, bool firehose)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *iso = g_date_time_format_iso8601(now);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    guint nbind = g_strv_length(binds), nrules = 0;

    while (vtpm_replay_redaction_rules[nrules])
        nrules++;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, firehose ? 15 : 16);
    vtpm_pack_kv_str(&pk, "kind", "header");
    vtpm_pack_kv_str(&pk, "format", VTPM_REPLAY_FORMAT);
    vtpm_pack_kv_uint(&pk, "format_version", VTPM_REPLAY_FORMAT_VERSION);
    vtpm_pack_kv_str(&pk, "tool", "vtpm-replay");
    vtpm_pack_kv_str(&pk, "tool_version", VTPM_VERSION);
    vtpm_pack_str(&pk, "started_unix_us");
    msgpack_pack_int64(&pk, g_get_real_time());
    vtpm_pack_kv_str(&pk, "started", iso);
    vtpm_pack_kv_str(&pk, "broker", broker);
    vtpm_pack_kv_str(&pk, "source", firehose ? "firehose" : "exchanges");
    vtpm_pack_kv_str(&pk, "exchange", exchange);
    vtpm_pack_kv_str(&pk, "topic", topic);
    vtpm_pack_kv_str(&pk, "fanout_exchange", fanout);
    vtpm_pack_str(&pk, "bound");
    msgpack_pack_array(&pk, nbind + 1);
    for (guint i = 0; i < nbind; i++)
        vtpm_pack_str(&pk, binds[i]);
    vtpm_pack_str(&pk, fanout); /* every broadcast */
    vtpm_pack_str(&pk, "redacted");
    msgpack_pack_array(&pk, nrules);
    for (guint i = 0; i < nrules; i++)
        vtpm_pack_str(&pk, vtpm_replay_redaction_rules[i]);
    vtpm_pack_kv_bool(&pk, "replies_recorded", firehose);
    if (!firehose)
        vtpm_pack_kv_str(&pk, "note",
                         "replies were not recorded: the RabbitMQ firehose was off "
                         "(rabbitmqctl trace_on), so only the worker exchanges were tapped");
    return vtpm_replay_sbuffer_bytes(&sb);
}

/* What `record` was asked to do. */
typedef struct {
    vtpm_amqpopt broker;
    char *out;
    char *source;      /* NULL: auto */
    char **binds;      /* the default (<topic>.#) once checked */
    double duration;
    gint64 count;
} rec_opts;

static void
rec_opts_clear(rec_opts *o)
{
    vtpm_amqpopt_clear(&o->broker);
    g_free(o->out);
    g_free(o->source);
    g_strfreev(o->binds);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(rec_opts, rec_opts_clear)

static GOptionContext *
rec_context(rec_opts *o)
{
    GOptionEntry entries[] = {
        { "out", 0, 0, G_OPTION_ARG_FILENAME, &o->out, "the recording to write (replaced)",
          "FILE" },
        { "bind", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->binds,
          "topic routing key pattern of requests to record (repeatable; default "
          "<topic>.#, all workers); broadcasts are always recorded",
          "ROUTING_KEY" },
        { "duration", 0, 0, G_OPTION_ARG_DOUBLE, &o->duration, "stop after S seconds", "S" },
        { "count", 0, 0, G_OPTION_ARG_INT64, &o->count,
          "stop after N requests (and their replies, awaited up to 5 s)", "N" },
        { "source", 0, 0, G_OPTION_ARG_STRING, &o->source,
          "auto (default): the firehose when it is on, else the exchanges; firehose; "
          "exchanges (requests only)",
          "WHERE" },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- record worker requests (and replies) to a file");

    vtpm_amqpopt_add(ctx, &o->broker, VTPM_AMQPOPT_NAMES);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "With the RabbitMQ firehose on (rabbitmqctl trace_on) records requests and the\n"
        "replies to them; without it taps the exchanges and records requests only (the\n"
        "file's header says replies_recorded: false).  Secrets in bodies and headers are\n"
        "replaced by \"<redacted>\" before anything is written; the URL's password never is.\n"
        "Stops at --duration, after --count requests, or on SIGINT/SIGTERM; every record is\n"
        "written as it arrives.  Says \"recording\" on stderr once bound.\n"
        "The broker options are described in vtpm-amqp(7).\n"
        "Exit: 0 ok, 1 failure, 2 usage.  Format: docs/replay.md.\n");
    return ctx;
}

/* After parsing: 0, or the usage error. */
static int
rec_check(GOptionContext *ctx, int argc, char **argv, rec_opts *o, vtpm_client_options *cp)
{
    int rc;

    if (argc > 1)
        return usage_error(ctx, "unexpected argument '%s'", argv[1]);
    if (!o->out)
        return usage_error(ctx, "--out FILE is required");
    if (o->duration && o->count)
        return usage_error(ctx, "--duration and --count are mutually exclusive");
    if (o->duration < 0 || o->duration > 31 * 86400 || o->duration != o->duration)
        return usage_error(ctx, "--duration must be in (0, 2678400] seconds");
    if (o->count < 0)
        return usage_error(ctx, "--count must be positive");
    if (o->binds && g_strv_length(o->binds) > MAX_BIND)
        return usage_error(ctx, "at most %d --bind keys", MAX_BIND);
    if (o->source && strcmp(o->source, "auto") && strcmp(o->source, "firehose") &&
        strcmp(o->source, "exchanges"))
        return usage_error(ctx, "--source must be auto, firehose or exchanges");
    if ((rc = broker_params(ctx, &o->broker, cp)))
        return rc;
    if (!o->binds) {
        o->binds = g_new0(char *, 2);
        o->binds[0] = g_strdup_printf("%s.#", cp->topic);
    }
    return 0;
}

/* Whether to record from the firehose (--source, or a probe). */
static int
rec_source(const rec_opts *o, const vtpm_client_options *cp, bool *firehose)
{
    vtpm_error err = { 0 };

    *firehose = false;
    if (o->source && strcmp(o->source, "exchanges") == 0)
        return 0;
    if (firehose_on(cp, firehose, &err) < 0)
        return failure("firehose probe: %s", err.message);
    if (!*firehose && o->source && strcmp(o->source, "firehose") == 0)
        return failure("the RabbitMQ firehose is off for this vhost "
                       "(turn it on with rabbitmqctl trace_on)");
    return 0;
}

/* Bind the recorder's queues: the firehose's copies of what goes to the
 * worker exchanges and of the replies, or the exchanges themselves. */
static int
rec_tap(vtpm_client *c, const rec_state *s, vtpm_error *err)
{
    const char *fkeys[] = { "" };
    int rc;

    if (s->firehose) {
        g_autofree char *k1 = g_strdup_printf("publish.%s", s->exchange);
        g_autofree char *k2 = g_strdup_printf("publish.%s", s->fanout_exchange);
        const char *keys[] = { k1, k2, "publish." }; /* the last: replies */

        return vtpm_client_tap(c, TRACE_EXCHANGE, keys, G_N_ELEMENTS(keys), NULL, err);
    }
    rc = vtpm_client_tap(c, s->exchange, (const char *const *)s->binds,
                         g_strv_length(s->binds), NULL, err);
    if (rc == 0)
        rc = vtpm_client_tap(c, s->fanout_exchange, fkeys, 1, NULL, err);
    if (rc < 0)
        return vtpm_error_prefix(err, "tap %s and %s", s->exchange, s->fanout_exchange);
    return 0;
}

/* Until a signal, --duration or --count (and the replies of the last
 * calls): EXIT_OK, or EXIT_FAIL after saying why. */
static int
rec_loop(vtpm_client *c, rec_state *s, const rec_opts *o)
{
    gint64 end_us = o->duration > 0 ? s->t0_us + (gint64)(o->duration * G_USEC_PER_SEC) : -1;
    vtpm_error err = { 0 };

    while (!stop_requested) {
        g_autoptr(vtpm_client_msg) m = NULL;
        gint64 now = g_get_monotonic_time();
        bool counted = o->count && (gint64)s->nrequests >= o->count;
        int wait_ms = POLL_MS, r;

        if (end_us >= 0 && now >= end_us)
            break;
        if (counted) {
            /* The replies of the last calls are part of the session. */
            if (!s->firehose || calls_open(s) == 0)
                break;
            if (end_us < 0)
                end_us = now + COUNT_GRACE_US;
        }
        if (end_us >= 0)
            wait_ms = (int)MIN(wait_ms, (end_us - now) / 1000 + 1);
        if ((r = vtpm_client_msg_recv(c, wait_ms, &m, &err)) < 0)
            return failure("%s", err.message);
        if (r == 1)
            continue;
        if (counted && *m->exchange != '\0' &&
            !(s->firehose && g_str_equal(m->routing_key, "publish.")))
            continue; /* past --count: replies only */
        if (record_msg(s, m, &err) < 0)
            return failure("%s", err.message);
    }
    return EXIT_OK;
}

static int
cmd_record(int argc, char **argv)
{
    g_auto(rec_opts) o = { 0 };
    g_autoptr(GOptionContext) ctx = rec_context(&o);
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_replay_writer) w = NULL;
    g_autoptr(GBytes) header = NULL;
    g_autoptr(GHashTable) calls = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *fanout = NULL;
    vtpm_client_options cp = { 0 };
    rec_state s = { 0 };
    vtpm_error err = { 0 };
    struct sigaction sa = { .sa_handler = on_signal };
    int rc;

    if (!argv)
        return print_help(ctx);
    if ((rc = parse_options(ctx, &argc, &argv)) || (rc = rec_check(ctx, argc, argv, &o, &cp)))
        return rc;
    fanout = g_strdup_printf("%s_fanout", cp.topic);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if ((rc = rec_source(&o, &cp, &s.firehose)))
        return rc;
    s = (rec_state){ .path = o.out, .exchange = cp.exchange, .fanout_exchange = fanout,
                     .binds = o.binds, .firehose = s.firehose, .calls = calls };
    if ((!s.firehose && ensure_exchanges(&cp, &err) < 0) ||
        vtpm_client_msg_connect(&cp, &c, &err) < 0 || rec_tap(c, &s, &err) < 0 ||
        vtpm_replay_writer_open(o.out, &w, &err) < 0)
        return failure("%s", err.message);
    /* The header names the broker: without its password. */
    header = header_record(vtpm_client_broker(c), cp.exchange, cp.topic, fanout, o.binds,
                           s.firehose);
    if (vtpm_replay_writer_put(w, header, &err) < 0)
        return failure("%s", err.message);
    s.w = w;
    g_queue_init(&s.order);
    s.t0_us = g_get_monotonic_time();
    fprintf(stderr, "vtpm-replay: recording %s to %s (%s)\n",
            s.firehose ? "from the firehose" : "from the exchanges", o.out,
            s.firehose ? "requests and replies" : "requests only: the firehose is off");
    rc = rec_loop(c, &s, &o);
    fprintf(stderr,
            "vtpm-replay: recorded %" G_GUINT64_FORMAT " requests and %" G_GUINT64_FORMAT
            " replies to %s (%" G_GUINT64_FORMAT " records with redacted fields)\n",
            s.nrequests, s.nreplies, o.out, s.redacted);
    g_queue_clear(&s.order);
    return rc;
}

/* ---- show ------------------------------------------------------------------------------ */

static int
cmd_show(int argc, char **argv)
{
    GOptionEntry entries[] = { { NULL } };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("FILE - print a recording as JSON lines");
    g_autoptr(vtpm_replay_reader) r = NULL;
    vtpm_error err = { 0 };
    uint64_t n = 0, off = 0;
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "One JSON object per line: the header first, then every record (binary fields as\n"
        "{\"$bin\": \"<base64>\"}).  A damaged file prints the records before the damage and\n"
        "says \"damaged at offset N\" on stderr.  Exit: 0 ok, 1 damaged/unreadable, 2 usage.\n");
    if (!argv)
        return print_help(ctx);
    if ((rc = parse_options(ctx, &argc, &argv)))
        return rc;
    if (argc != 2)
        return usage_error(ctx, "expected FILE");
    if (vtpm_replay_reader_open(argv[1], &r, &err) < 0)
        return failure("%s", err.message);
    for (;;) {
        g_autoptr(vtpm_replay_record) rec = NULL;
        g_autofree char *json = NULL;

        rc = vtpm_replay_reader_next(r, &rec, &off, &err);
        if (rc == 1)
            break;
        if (rc < 0) {
            fflush(stdout);
            return failure("%s: %s; the %" G_GUINT64_FORMAT " records before it are above",
                           argv[1], err.message, n);
        }
        json = vtpm_mpjson_to_string(&rec->root, false);
        printf("%s\n", json);
        n++;
    }
    return EXIT_OK;
}

/* ---- replay ---------------------------------------------------------------------------- */

typedef struct {
    vtpm_replay_record *req;   /* borrowed from the loaded records */
    GPtrArray *rec_replies;    /* vtpm_replay_record *, borrowed */
    GPtrArray *new_replies;    /* GBytes * */
    char *method;
    char *corr;
    char *rk;                  /* the routing key replayed to (after --host-map) */
    bool fanout, cast, sent, redacted_sent;
    gint64 deadline_us;
} rp_call;

static void
rp_call_free(gpointer p)
{
    rp_call *c = p;

    g_ptr_array_unref(c->rec_replies);
    g_ptr_array_unref(c->new_replies);
    g_free(c->method);
    g_free(c->corr);
    g_free(c->rk);
    g_free(c);
}

typedef struct {
    GHashTable *host_map; /* OLD -> NEW */
    gint64 now_unix_ms;   /* when the request being built is sent */
    GBytes *secret;       /* --secret-file, or NULL */
    const char *topic;
    rp_call *call;        /* being built */
} rp_ctx;

static bool
in_list(GPtrArray *list, const char *s)
{
    for (guint i = 0; i < list->len; i++)
        if (strcmp(g_ptr_array_index(list, i), s) == 0)
            return true;
    return false;
}

static bool
subst_for_replay(const char *path, const char *key, size_t key_len, const msgpack_object *val,
                 msgpack_packer *pk, void *data)
{
    rp_ctx *x = data;

    /* An absolute deadline recorded back then has passed now: keep the
     * budget the caller gave (deadline - arrival), from the new send time. */
    if (strcmp(path, "deadline_ms") == 0 && val->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        x->call->req->t_unix_us > 0 && val->via.u64 <= (uint64_t)G_MAXINT64) {
        gint64 budget = (gint64)val->via.u64 - x->call->req->t_unix_us / 1000;

        msgpack_pack_uint64(pk, (uint64_t)MAX(1, x->now_unix_ms + budget));
        return true;
    }
    if (val->type != MSGPACK_OBJECT_STR)
        return false;
    if (key_len == 9 && memcmp(key, "dest_host", 9) == 0) {
        g_autofree char *old = g_strndup(val->via.str.ptr, val->via.str.size);
        const char *new = g_hash_table_lookup(x->host_map, old);

        if (new) {
            vtpm_pack_str(pk, new);
            return true;
        }
        return false;
    }
    if (!in_list(x->call->req->redacted, path))
        return false;
    if (x->secret && key_len == 6 && memcmp(key, "secret", 6) == 0) {
        msgpack_pack_bin_with_body(pk, g_bytes_get_data(x->secret, NULL),
                                   g_bytes_get_size(x->secret));
        return true;
    }
    x->call->redacted_sent = true;
    return false;
}

static GBytes *
replay_body(rp_ctx *x)
{
    const vtpm_replay_record *req = x->call->req;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    if (!req->body)
        return g_bytes_new(NULL, 0);
    if (req->body_raw)
        return g_bytes_new(req->body->via.bin.ptr, req->body->via.bin.size);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_replay_repack(req->body, "", subst_for_replay, x, &pk);
    return vtpm_replay_sbuffer_bytes(&sb);
}

static char *
replay_routing_key(const rp_ctx *x, const char *rk)
{
    size_t tl = strlen(x->topic);

    if (strncmp(rk, x->topic, tl) == 0 && rk[tl] == '.') {
        const char *new = g_hash_table_lookup(x->host_map, rk + tl + 1);

        if (new)
            return g_strdup_printf("%s.%s", x->topic, new);
    }
    return g_strdup(rk);
}

static GBytes *
packed_object(const msgpack_object *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    if (o->type == MSGPACK_OBJECT_BIN)
        return g_bytes_new(o->via.bin.ptr, o->via.bin.size);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
    return vtpm_replay_sbuffer_bytes(&sb);
}

/* "ok" or "fault:CODE" of a packed reply ("undecodable" when it is not one). */
static char *
outcome(GBytes *body)
{
    g_autoptr(vtpm_reply) rep = NULL;
    vtpm_proto_limits lim;
    vtpm_error err = { 0 };

    vtpm_proto_limits_init(&lim);
    lim.max_body = (size_t)64 << 20;
    if (vtpm_proto_decode_reply(g_bytes_get_data(body, NULL), g_bytes_get_size(body), &lim, &rep,
                                &err) < 0)
        return g_strdup("undecodable");
    return rep->ok ? g_strdup("ok") : g_strdup_printf("fault:%s", rep->fault_code);
}

static bool
call_done(const rp_call *c)
{
    if (c->cast || !c->sent)
        return c->sent;
    if (!c->fanout)
        return c->new_replies->len >= 1;
    /* A broadcast: as many answers as recorded, else all until the timeout. */
    return c->rec_replies->len && c->new_replies->len >= c->rec_replies->len;
}

/* Take replies until @until_us (or until @wait_for is done, when given). */
static int
pump(vtpm_client *cl, GHashTable *by_corr, gint64 until_us, rp_call *wait_for,
     vtpm_error *err)
{
    for (;;) {
        g_autoptr(vtpm_client_msg) m = NULL;
        gint64 left = until_us - g_get_monotonic_time();
        rp_call *c;
        int rc;

        if (wait_for && call_done(wait_for))
            return 0;
        if (left <= 0)
            return 0;
        rc = vtpm_client_msg_recv(cl, (int)MAX(1, left / 1000), &m, err);
        if (rc < 0)
            return rc;
        if (rc == 1)
            continue;
        if (!m->correlation_id || !(c = g_hash_table_lookup(by_corr, m->correlation_id)))
            continue; /* not ours */
        g_ptr_array_add(c->new_replies, g_bytes_ref(m->body));
    }
}

static int
load_recording(const char *path, vtpm_replay_record **out_header, GPtrArray *records,
               GPtrArray *calls)
{
    g_autoptr(vtpm_replay_reader) r = NULL;
    g_autoptr(GHashTable) by_seq = g_hash_table_new(g_int64_hash, g_int64_equal);
    vtpm_error err = { 0 };
    int rc;

    if (vtpm_replay_reader_open(path, &r, &err) < 0)
        return failure("%s", err.message);
    for (;;) {
        vtpm_replay_record *rec = NULL;

        rc = vtpm_replay_reader_next(r, &rec, NULL, &err);
        if (rc == 1)
            break;
        if (rc < 0) {
            if (!*out_header)
                return failure("%s: %s", path, err.message);
            fprintf(stderr, "vtpm-replay: %s: %s; replaying the %u records before it\n", path,
                    err.message, records->len);
            break;
        }
        if (!*out_header) {
            *out_header = rec;
            continue;
        }
        g_ptr_array_add(records, rec);
        if (strcmp(rec->kind, "request") == 0) {
            rp_call *c = g_new0(rp_call, 1);
            const msgpack_object *method = NULL;

            c->req = rec;
            c->rec_replies = g_ptr_array_new();
            c->new_replies = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
            c->cast = !rec->reply_to;
            if (rec->body && !rec->body_raw)
                method = vtpm_proto_map_get(rec->body, "method");
            c->method = method && method->type == MSGPACK_OBJECT_STR
                            ? g_strndup(method->via.str.ptr, method->via.str.size)
                            : g_strdup("?");
            g_ptr_array_add(calls, c);
            g_hash_table_insert(by_seq, &rec->seq, c);
        } else if (rec->has_request_seq) {
            rp_call *c = g_hash_table_lookup(by_seq, &rec->request_seq);

            if (c)
                g_ptr_array_add(c->rec_replies, rec);
        }
    }
    if (!*out_header)
        return failure("%s: no header record", path);
    return 0;
}

static const char *
header_str(const vtpm_replay_record *h, const char *key, const char *dflt, char **keep)
{
    const char *s = obj_str(vtpm_proto_map_get(&h->root, key), keep);

    return s ? s : dflt;
}

/* What `replay` was asked to do. */
typedef struct {
    vtpm_amqpopt broker;
    char **host_maps;
    char **ignores;
    char *secret_file;
    double speed, timeout;
    gboolean afap, compare;
    GHashTable *host_map;   /* OLD -> NEW, from host_maps */
    GBytes *secret;         /* --secret-file's bytes, or NULL */
} rp_opts;

static void
rp_opts_clear(rp_opts *o)
{
    vtpm_amqpopt_clear(&o->broker);
    g_strfreev(o->host_maps);
    g_strfreev(o->ignores);
    g_free(o->secret_file);
    g_clear_pointer(&o->host_map, g_hash_table_unref);
    g_clear_pointer(&o->secret, g_bytes_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(rp_opts, rp_opts_clear)

/* Every reply counted once, by what became of its call. */
typedef struct {
    guint ncalls, ncasts, answered, matched, mismatched, missing, not_compared;
} rp_tally;

static GOptionContext *
rp_context(rp_opts *o)
{
    GOptionEntry entries[] = {
        { "speed", 0, 0, G_OPTION_ARG_DOUBLE, &o->speed,
          "replay the recorded gaps divided by X (default 1; 2 = twice as fast)", "X" },
        { "as-fast-as-possible", 0, 0, G_OPTION_ARG_NONE, &o->afap,
          "no gaps: each call waits for its reply (or --timeout), then the next is sent", NULL },
        { "host-map", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->host_maps,
          "send what went to host OLD to NEW: routing key <topic>.OLD and dest_host fields "
          "(repeatable)",
          "OLD=NEW" },
        { "compare", 0, 0, G_OPTION_ARG_NONE, &o->compare,
          "compare every new reply with the recorded one; exit 1 on any mismatch", NULL },
        { "ignore", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->ignores,
          "another result field to ignore: a key (anywhere), *_SUFFIX or a dotted path "
          "from result (repeatable)",
          "FIELD" },
        { "timeout", 0, 0, G_OPTION_ARG_DOUBLE, &o->timeout,
          "seconds to wait for each call's reply (default 30)", "S" },
        { "secret-file", 0, 0, G_OPTION_ARG_FILENAME, &o->secret_file,
          "send the bytes of FILE in place of every redacted vtpm.secret", "FILE" },
        { NULL }
    };
    GOptionContext *ctx =
        g_option_context_new("FILE - republish recorded requests and compare the replies");
    g_autoptr(GString) desc = g_string_new(NULL);

    o->timeout = 30;
    vtpm_amqpopt_add(ctx, &o->broker, 0);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_string_append(desc,
        "Requests are sent in the recorded order with fresh correlation ids, message ids\n"
        "and this tool's own reply queue; at --speed X each one at its recorded offset / X\n"
        "(without waiting for replies, as they were recorded); casts stay casts; a\n"
        "deadline_ms keeps its recorded distance from the request's arrival.  Fields\n"
        "redacted at record time are sent as \"<redacted>\" (the worker will fault) unless\n"
        "--secret-file gives a vtpm.secret.\n"
        "--compare (needs a recording with replies): ok and fault.code must match and the\n"
        "result maps are diffed, ignoring fault.message and these result fields:\n  ");
    for (const char *const *p = vtpm_replay_default_ignore; *p; p++)
        g_string_append_printf(desc, "%s%s", *p, p[1] ? ", " : "\n");
    g_string_append(desc,
        "Broadcasts are compared by their outcomes only (the set of ok / fault codes).\n"
        "Prints one line per mismatch, missing reply or redacted request, then a summary.\n"
        "The broker options are described in vtpm-amqp(7).\n"
        "Exit: 0 all matched (without --compare: every call answered), 1 otherwise, 2 usage.\n");
    g_option_context_set_description(ctx, desc->str);
    return ctx;
}

static int
rp_read_secret(GOptionContext *ctx, rp_opts *o)
{
    g_autoptr(GError) gerr = NULL;
    char *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(o->secret_file, &data, &len, &gerr))
        return usage_error(ctx, "--secret-file: %s", gerr->message);
    o->secret = g_bytes_new_take(data, len);
    if (len < 1 || len > MAX_SECRET)
        return usage_error(ctx, "--secret-file must hold 1..%d bytes", MAX_SECRET);
    return 0;
}

/* After parsing: 0, or the usage error. */
static int
rp_check(GOptionContext *ctx, int argc, rp_opts *o, vtpm_client_options *cp)
{
    int rc;

    if (argc != 2)
        return usage_error(ctx, "expected FILE");
    if (o->speed && o->afap)
        return usage_error(ctx, "--speed and --as-fast-as-possible are mutually exclusive");
    if (o->speed < 0 || o->speed > 1e6 || o->speed != o->speed)
        return usage_error(ctx, "--speed must be a positive factor up to 1e6");
    if (!(o->timeout > 0 && o->timeout <= 86400))
        return usage_error(ctx, "--timeout must be in (0, 86400] seconds");
    o->host_map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (char **p = o->host_maps; p && *p; p++) {
        const char *eq = strchr(*p, '=');

        if (!eq || eq == *p || !eq[1])
            return usage_error(ctx, "--host-map expects OLD=NEW, got '%s'", *p);
        g_hash_table_replace(o->host_map, g_strndup(*p, eq - *p), g_strdup(eq + 1));
    }
    if (o->secret_file && (rc = rp_read_secret(ctx, o)))
        return rc;
    if ((rc = broker_params(ctx, &o->broker, cp)))
        return rc;
    if (!o->speed)
        o->speed = 1;
    return 0;
}

/* Send every recorded request, at its recorded offset / --speed or one
 * after the other's reply (--as-fast-as-possible). */
static int
rp_send_all(vtpm_client *cl, GPtrArray *calls, GHashTable *by_corr, rp_ctx *x,
            const rp_opts *o, rp_tally *t, vtpm_error *err)
{
    gint64 t_first = calls->len ? ((rp_call *)g_ptr_array_index(calls, 0))->req->t_rel_us : 0;
    gint64 start = g_get_monotonic_time(), prev_send = 0;
    int rc;

    for (guint i = 0; i < calls->len; i++) {
        rp_call *c = g_ptr_array_index(calls, i);
        g_autoptr(GBytes) body = NULL;
        vtpm_client_msg_opts so = { 0 };
        gint64 at = start + (gint64)((double)(c->req->t_rel_us - t_first) / o->speed);

        if (!o->afap && (rc = pump(cl, by_corr, MAX(at, prev_send), NULL, err)) < 0)
            return rc;
        x->call = c;
        x->now_unix_ms = g_get_real_time() / 1000;
        body = replay_body(x);
        c->rk = replay_routing_key(x, c->req->routing_key);
        so.exchange = c->req->exchange;
        so.routing_key = c->rk;
        so.cast = c->cast;
        so.content_type = c->req->content_type;
        if ((rc = vtpm_client_msg_send(cl, &so, g_bytes_get_data(body, NULL),
                                   g_bytes_get_size(body), &c->corr, err)) < 0)
            return vtpm_error_prefix(err, "request %" G_GUINT64_FORMAT " (%s)", c->req->seq,
                                     c->method);
        c->sent = true;
        prev_send = g_get_monotonic_time();
        c->deadline_us = prev_send + (gint64)(o->timeout * G_USEC_PER_SEC);
        g_hash_table_insert(by_corr, c->corr, c);
        if (c->redacted_sent)
            printf("redacted: request %" G_GUINT64_FORMAT " %s (%s) sent with its redacted "
                   "fields as recorded (\"%s\")\n",
                   c->req->seq, c->method, c->rk, VTPM_REPLAY_REDACTED);
        *(c->cast ? &t->ncasts : &t->ncalls) += 1;
        if (o->afap && !c->cast && (rc = pump(cl, by_corr, c->deadline_us, c, err)) < 0)
            return rc;
    }
    /* The replies still out, each until its own deadline. */
    for (guint i = 0; i < calls->len; i++) {
        rp_call *c = g_ptr_array_index(calls, i);

        if (!c->cast && (rc = pump(cl, by_corr, c->deadline_us, c, err)) < 0)
            return rc;
    }
    return 0;
}

/* A broadcast: the same set of outcomes (ok / fault codes) as recorded. */
static bool
rp_same_outcomes(const rp_call *c)
{
    g_autoptr(GHashTable) a = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) b = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTableIter it;
    gpointer k;

    for (guint j = 0; j < c->rec_replies->len; j++) {
        vtpm_replay_record *rr = g_ptr_array_index(c->rec_replies, j);
        g_autoptr(GBytes) rb = rr->body ? packed_object(rr->body) : g_bytes_new(NULL, 0);

        g_hash_table_add(a, outcome(rb));
    }
    for (guint j = 0; j < c->new_replies->len; j++)
        g_hash_table_add(b, outcome(g_ptr_array_index(c->new_replies, j)));
    if (g_hash_table_size(a) != g_hash_table_size(b))
        return false;
    g_hash_table_iter_init(&it, a);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!g_hash_table_contains(b, k))
            return false;
    }
    return true;
}

/* One call: the first new reply against the recorded one. */
static bool
rp_same_reply(const rp_call *c, const vtpm_replay_ignore *ig, const char *rk)
{
    vtpm_replay_record *rr = g_ptr_array_index(c->rec_replies, 0);
    g_autoptr(GBytes) rb = rr->body ? packed_object(rr->body) : g_bytes_new(NULL, 0);
    /* What record would have kept of the new reply: redaction must not
     * count as a difference. */
    g_autoptr(GBytes) nb = vtpm_replay_redact(g_ptr_array_index(c->new_replies, 0), NULL);
    vtpm_replay_cmp cmp = { 0 };
    bool match;

    if (!nb)
        nb = g_bytes_ref(g_ptr_array_index(c->new_replies, 0));
    vtpm_replay_compare(g_bytes_get_data(rb, NULL), g_bytes_get_size(rb),
                        g_bytes_get_data(nb, NULL), g_bytes_get_size(nb), ig, &cmp);
    match = cmp.match;
    if (!match) {
        printf("mismatch: request %" G_GUINT64_FORMAT " %s (%s): %s", c->req->seq, c->method,
               rk, cmp.first);
        if (cmp.ndiff > 1)
            printf(" (and %u more differences)", cmp.ndiff - 1);
        printf("\n");
    }
    vtpm_replay_cmp_clear(&cmp);
    return match;
}

/* What became of each call, one line for each that went wrong. */
static void
rp_judge(GPtrArray *calls, const rp_opts *o, const vtpm_replay_ignore *ig, rp_tally *t)
{
    for (guint i = 0; i < calls->len; i++) {
        rp_call *c = g_ptr_array_index(calls, i);
        const char *rk = c->fanout ? "broadcast" : c->rk;
        bool same;

        if (c->cast)
            continue;
        if (!c->new_replies->len) {
            t->missing++;
            printf("missing: request %" G_GUINT64_FORMAT " %s (%s): no reply within %g s\n",
                   c->req->seq, c->method, rk, o->timeout);
            continue;
        }
        t->answered++;
        if (!o->compare)
            continue;
        if (!c->rec_replies->len) {
            t->not_compared++;
            printf("not compared: request %" G_GUINT64_FORMAT " %s (%s): no reply in the "
                   "recording\n",
                   c->req->seq, c->method, rk);
            continue;
        }
        same = c->fanout ? rp_same_outcomes(c) : rp_same_reply(c, ig, rk);
        if (c->fanout && !same)
            printf("mismatch: request %" G_GUINT64_FORMAT " %s (%s): outcomes "
                   "differ (%u recorded replies, %u replayed)\n",
                   c->req->seq, c->method, rk, c->rec_replies->len, c->new_replies->len);
        *(same ? &t->matched : &t->mismatched) += 1;
    }
}

/* Mark the broadcasts among the recorded calls (sent to the header's
 * fanout exchange). */
static void
rp_mark_broadcasts(const vtpm_replay_record *header, GPtrArray *calls)
{
    g_autofree char *fo_keep = NULL;
    const char *fo = header_str(header, "fanout_exchange", "", &fo_keep);

    for (guint i = 0; i < calls->len; i++) {
        rp_call *c = g_ptr_array_index(calls, i);

        c->fanout = *fo && strcmp(c->req->exchange, fo) == 0;
    }
}

static int
cmd_replay(int argc, char **argv)
{
    g_auto(rp_opts) o = { 0 };
    g_autoptr(GOptionContext) ctx = rp_context(&o);
    g_autoptr(GPtrArray) records =
        g_ptr_array_new_with_free_func((GDestroyNotify)vtpm_replay_record_free);
    g_autoptr(GPtrArray) calls = g_ptr_array_new_with_free_func(rp_call_free);
    g_autoptr(GHashTable) by_corr = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(vtpm_replay_record) header = NULL;
    g_autoptr(vtpm_client) cl = NULL;
    g_autoptr(vtpm_replay_ignore) ig = NULL;
    g_autofree char *topic_keep = NULL;
    vtpm_client_options cp = { 0 };
    vtpm_error err = { 0 };
    rp_ctx x = { 0 };
    rp_tally t = { 0 };
    bool replies_recorded = false;
    int rc;

    if (!argv)
        return print_help(ctx);
    if ((rc = parse_options(ctx, &argc, &argv)) || (rc = rp_check(ctx, argc, &o, &cp)) ||
        (rc = load_recording(argv[1], &header, records, calls)))
        return rc;
    vtpm_proto_get_bool(&header->root, "header", "replies_recorded", false, false,
                        &replies_recorded, NULL);
    if (o.compare && !replies_recorded)
        return failure("--compare: %s holds no replies (recorded without the RabbitMQ "
                       "firehose): cannot compare",
                       argv[1]);
    x.host_map = o.host_map;
    x.secret = o.secret;
    x.topic = header_str(header, "topic", "vtpm", &topic_keep);
    rp_mark_broadcasts(header, calls);
    ig = vtpm_replay_ignore_new((const char *const *)o.ignores);
    if (vtpm_client_msg_connect(&cp, &cl, &err) < 0 ||
        rp_send_all(cl, calls, by_corr, &x, &o, &t, &err) < 0)
        return failure("%s", err.message);
    rp_judge(calls, &o, ig, &t);
    printf("summary: replayed %u requests (%u calls, %u casts), %u calls answered",
           calls->len, t.ncalls, t.ncasts, t.answered);
    if (o.compare)
        printf("; compared: %u matched, %u mismatched, %u missing replies, %u not compared\n",
               t.matched, t.mismatched, t.missing, t.not_compared);
    else
        printf(", %u missing replies\n", t.missing);
    return t.mismatched || t.missing ? EXIT_FAIL : EXIT_OK;
}

/* ---- main ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} commands[] = {
    { "record", cmd_record, "record worker requests (and, with the firehose, replies)" },
    { "replay", cmd_replay, "republish a recording; --compare checks the replies" },
    { "show", cmd_show, "print a recording as JSON lines" },
};

static int
main_usage(FILE *f)
{
    fprintf(f, "Usage: vtpm-replay COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'vtpm-replay COMMAND --help' describes a command; docs/replay.md the format.\n"
               "Exit codes: 0 ok, 1 failure or mismatch, 2 usage.\n");
    if (f != stdout)
        return EXIT_USAGE;
    /* --help: every command's options too, so that one page lists them all. */
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        g_autofree char *prg = g_strdup_printf("vtpm-replay %s", commands[i].name);

        g_set_prgname(prg);
        printf("\n");
        commands[i].fn(0, NULL);
    }
    return EXIT_OK;
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        return main_usage(stderr);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return main_usage(stdout);
    if (strcmp(argv[1], "--version") == 0) {
        printf("vtpm-replay %s (format %d)\n", VTPM_VERSION, VTPM_REPLAY_FORMAT_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            g_autofree char *prg = g_strdup_printf("vtpm-replay %s", commands[i].name);

            g_set_prgname(prg);
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "vtpm-replay: unknown command '%s'\n", argv[1]);
    return main_usage(stderr);
}
