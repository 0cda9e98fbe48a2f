/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm-echo: the broker's own limit, for benchmark 1 (bench/rpc_overhead.sh).
 *
 *   vtpm-echo [BROKER OPTIONS] --host HOST [--prefetch N]
 *
 * Consumes vtpm.<HOST> exactly as vtpmd declares it (durable queue bound to
 * the durable topic exchange with its own name as routing key, manual acks,
 * basic.qos prefetch) and answers every delivery that has a reply_to with
 * one fixed, valid reply envelope ({v:1, ok:true, result:{}}), published
 * persistent to the default exchange with the request's correlation id,
 * then acks it: the same AMQP work per call as vtpmd, and nothing else.
 * The simplest fast way: one thread, rabbitmq-c's blocking consume.  The
 * broker options are every tool's (tools/amqpopt.h), TLS included.
 *
 * --reply-bytes N pads the result ({pad: "xx..."}) so that the reply
 * envelope is about N bytes: the broker's cost per call grows with the
 * body it routes, so a baseline answering 20 bytes is not the limit for a
 * worker whose reply is 2 KB (benchmark 1 measures both).
 *
 * Two knobs break the protocol on purpose, to check that vtpm-fanout
 * notices (tests/test_fanout.sh): --copies N publishes every reply N times,
 * --foreign-corr answers with a correlation id that no caller sent.
 *
 * Prints "vtpm-echo: ready" on stderr once it consumes; SIGTERM/SIGINT stop
 * it (exit 0, after printing how many it answered).  Exit 1 on a broker
 * error, 2 on usage.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <amqp.h>
#include <glib.h>

#include <msgpack.h>

#include "amqp/conn.h"
#include "amqp/topology.h"
#include "amqp/url.h"
#include "vtpm/proto.h"
#include "amqpopt.h"

enum { CHANNEL = 1, WAKE_MS = 200 };

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    stop_requested = 1;
}

typedef struct {
    vtpm_amqpopt broker;
    char *host;
    gint64 prefetch, copies, reply_bytes;
    gboolean foreign;
} echo_opts;

static void
echo_opts_clear(echo_opts *o)
{
    vtpm_amqpopt_clear(&o->broker);
    g_free(o->host);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(echo_opts, echo_opts_clear)

/* 0, or 2 after saying what is wrong. */
static int
parse_args(int argc, char **argv, echo_opts *o, vtpm_client_options *cp)
{
    GOptionEntry entries[] = {
        { "host", 'H', 0, G_OPTION_ARG_STRING, &o->host, "consume queue <topic>.HOST", "HOST" },
        { "prefetch", 'p', 0, G_OPTION_ARG_INT64, &o->prefetch,
          "unacknowledged deliveries at once (1..65535, default 16 as vtpmd)", "N" },
        { "copies", 0, 0, G_OPTION_ARG_INT64, &o->copies,
          "publish every reply N times (1..100; >1 breaks the protocol on purpose)", "N" },
        { "reply-bytes", 0, 0, G_OPTION_ARG_INT64, &o->reply_bytes,
          "pad the reply envelope to about N bytes (0..65536, default: no padding)", "N" },
        { "foreign-corr", 0, 0, G_OPTION_ARG_NONE, &o->foreign,
          "reply with a correlation id no caller sent (breaks the protocol on purpose)", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- answer vtpmd requests with a fixed reply (broker baseline)");
    g_autoptr(GError) gerr = NULL;
    vtpm_error err = { 0 };

    o->prefetch = 16;
    o->copies = 1;
    vtpm_amqpopt_add(ctx, &o->broker, VTPM_AMQPOPT_NAMES);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx, "The broker options are described in vtpm-amqp(7).\n");
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        fprintf(stderr, "vtpm-echo: %s\n", gerr->message);
        return 2;
    }
    if (!o->host || !*o->host || o->prefetch < 1 || o->prefetch > 65535 || o->copies < 1 ||
        o->copies > 100 || o->reply_bytes < 0 || o->reply_bytes > 65536) {
        fprintf(stderr, "vtpm-echo: needs --host, a --prefetch of 1..65535, --copies of "
                        "1..100 and --reply-bytes of 0..65536\n");
        return 2;
    }
    if (vtpm_amqpopt_load(&o->broker, cp, &err) < 0) {
        fprintf(stderr, "vtpm-echo: %s\n", err.message);
        return 2;
    }
    return 0;
}

/* {pad: "xx..."} so that the envelope around it is about @n bytes. */
static GBytes *
padded_reply(size_t n)
{
    enum { ENVELOPE = 24 }; /* {v:1, ok:true, result:{pad: str32 header}} */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    g_autofree char *pad = NULL;
    size_t len = n > ENVELOPE ? n - ENVELOPE : 0;
    GBytes *reply;

    if (!n)
        return vtpm_proto_reply_ok(NULL, 0);
    pad = g_malloc(len + 1);
    memset(pad, 'x', len);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "pad", 3);
    msgpack_pack_str_with_body(&pk, pad, len);
    reply = vtpm_proto_reply_ok(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return reply;
}

/* Consume @queue exactly as vtpmd declares it (amqp/topology.c): the
 * same AMQP work per call as vtpmd. */
static int
echo_open(const vtpm_client_options *cp, const char *queue, unsigned prefetch,
          amqp_connection_state_t *out, vtpm_error *err)
{
    vtpm_amqp_target t = { .url = cp->url, .failover_urls = cp->failover_urls,
                           .tls = { .cacert = cp->cacert, .cert = cp->cert, .key = cp->key } };
    g_autoptr(GPtrArray) nodes = NULL;
    amqp_connection_state_t c = NULL;
    guint i = 0;
    int rc;

    if ((rc = vtpm_amqp_target_nodes(&t, &nodes, err)) < 0 ||
        (rc = vtpm_amqp_connect_first(nodes, &t.tls, NULL, &c, &i, err)) < 0)
        return rc;
    amqp_channel_open(c, CHANNEL);
    if ((rc = vtpm_amqp_rpc_check(c, "channel.open", err)) == 0) {
        amqp_basic_qos(c, CHANNEL, 0, (uint16_t)prefetch, 0);
        rc = vtpm_amqp_rpc_check(c, "basic.qos", err);
    }
    if (rc == 0 && (rc = vtpm_amqp_declare_exchange(c, CHANNEL, cp->exchange,
                                                    VTPM_AMQP_EXCHANGE_TOPIC, err)) == 0 &&
        (rc = vtpm_amqp_declare_request_queue(c, CHANNEL, queue, cp->exchange, false, err)) == 0) {
        amqp_basic_consume(c, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        rc = vtpm_amqp_rpc_check(c, "basic.consume", err);
    }
    if (rc < 0) {
        amqp_destroy_connection(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* One delivery: the reply (if it wants one) @copies times, then the ack. */
static int
answer(amqp_connection_state_t c, const amqp_envelope_t *e, GBytes *reply, const echo_opts *o,
       guint64 *answered, char **why)
{
    const amqp_basic_properties_t *in = &e->message.properties;
    amqp_basic_properties_t out = { 0 };
    g_autofree char *corr = NULL;
    amqp_bytes_t body;
    int rc = AMQP_STATUS_OK;

    if ((in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len) {
        /* As vtpmd's replies: content type, persistent, correlation id. */
        out._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
        out.content_type = amqp_cstring_bytes(VTPM_PROTO_CONTENT_TYPE);
        out.delivery_mode = 2;
        if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
            out._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
            out.correlation_id = in->correlation_id;
            if (o->foreign) {
                corr = g_strdup_printf("foreign-%.*s", (int)in->correlation_id.len,
                                       (const char *)in->correlation_id.bytes);
                out.correlation_id = amqp_cstring_bytes(corr);
            }
        }
        body.bytes = (void *)g_bytes_get_data(reply, &body.len);
        for (gint64 i = 0; i < o->copies && rc == AMQP_STATUS_OK; i++)
            rc = amqp_basic_publish(c, CHANNEL, amqp_empty_bytes, in->reply_to, 0, 0, &out,
                                    body);
        if (rc != AMQP_STATUS_OK) {
            *why = g_strdup_printf("publish: %s", amqp_error_string2(rc));
            return -1;
        }
        (*answered)++;
    }
    if ((rc = amqp_basic_ack(c, CHANNEL, e->delivery_tag, 0)) != AMQP_STATUS_OK) {
        *why = g_strdup_printf("ack: %s", amqp_error_string2(rc));
        return -1;
    }
    return 0;
}

/* A method that is not a delivery: only a close or a cancel matters. */
static int
other_method(amqp_connection_state_t c, char **why)
{
    amqp_frame_t f;

    if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
        *why = g_strdup("connection lost");
        return -1;
    }
    if (f.frame_type == AMQP_FRAME_METHOD &&
        (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
         f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
         f.payload.method.id == AMQP_BASIC_CANCEL_METHOD)) {
        *why = g_strdup_printf("the broker closed the channel or consumer (0x%08x)",
                               f.payload.method.id);
        return -1;
    }
    return 0;
}

/* Until a signal: 0, or -1 with *why. */
static int
serve(amqp_connection_state_t c, GBytes *reply, const echo_opts *o, guint64 *answered,
      char **why)
{
    while (!stop_requested) {
        struct timeval tv = { 0, WAKE_MS * 1000 };
        amqp_envelope_t e;
        amqp_rpc_reply_t r;
        int rc;

        amqp_maybe_release_buffers(c);
        r = amqp_consume_message(c, &e, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            rc = answer(c, &e, reply, o, answered, why);
            amqp_destroy_envelope(&e);
            if (rc < 0)
                return rc;
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            if (other_method(c, why) < 0)
                return -1;
            continue;
        }
        if (stop_requested)
            break;
        *why = vtpm_amqp_rpc_why(r, "consume");
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    g_auto(echo_opts) o = { 0 };
    g_autoptr(GBytes) reply = NULL;
    g_autofree char *queue = NULL;
    g_autofree char *why = NULL;
    vtpm_client_options cp = { 0 };
    amqp_connection_state_t conn = NULL;
    struct sigaction sa = { .sa_handler = on_signal };
    vtpm_error err = { 0 };
    guint64 answered = 0;
    int rc;

    if ((rc = parse_args(argc, argv, &o, &cp)))
        return rc;
    reply = padded_reply((size_t)o.reply_bytes);
    queue = g_strdup_printf("%s.%s", cp.topic, o.host);
    /* No SA_RESTART: the blocking wait returns, and the flag is seen. */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (echo_open(&cp, queue, (unsigned)o.prefetch, &conn, &err) < 0) {
        fprintf(stderr, "vtpm-echo: %s\n", err.message);
        return 1;
    }
    fprintf(stderr, "vtpm-echo: ready: consuming %s, prefetch %" G_GINT64_FORMAT "\n", queue,
            o.prefetch);
    if (serve(conn, reply, &o, &answered, &why) < 0) {
        fprintf(stderr, "vtpm-echo: %s\n", why);
        amqp_destroy_connection(conn);
        return 1;
    }
    amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    fprintf(stderr, "vtpm-echo: stopped after %" G_GUINT64_FORMAT " replies\n", answered);
    return 0;
}
