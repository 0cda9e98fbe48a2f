/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpm-echo: the broker's own limit, for benchmark 1 (bench/rpc_overhead.sh).
 *
 *   vtpm-echo --url URL --host HOST [--prefetch N] [--exchange vtpm] [--topic vtpm]
 *
 * Consumes vtpm.<HOST> exactly as vtpmd declares it (durable queue bound to
 * the durable topic exchange with its own name as routing key, manual acks,
 * basic.qos prefetch) and answers every delivery that has a reply_to with
 * one fixed, valid reply envelope ({v:1, ok:true, result:{}}), published
 * persistent to the default exchange with the request's correlation id,
 * then acks it: the same AMQP work per call as vtpmd, and nothing else.
 * The simplest fast way: one thread, rabbitmq-c's blocking consume.
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
#include <amqp_tcp_socket.h>
#include <glib.h>

#include <msgpack.h>

#include "vtpm/proto.h"

enum { CHANNEL = 1, FRAME_MAX = 131072, WAKE_MS = 200 };

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    stop_requested = 1;
}

static amqp_bytes_t
cbytes(const char *s)
{
    return amqp_cstring_bytes(s);
}

/* NULL when fine, else why the last RPC failed. */
static char *
rpc_why(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return NULL;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return g_strdup_printf("%s: %s", what, amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r.reply.decoded;

            return g_strdup_printf("%s: connection closed: %u %.*s", what, m->reply_code,
                                   (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        }
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r.reply.decoded;

            return g_strdup_printf("%s: channel closed: %u %.*s", what, m->reply_code,
                                   (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        }
        return g_strdup_printf("%s: unexpected method 0x%08x", what, r.reply.id);
    default:
        return g_strdup_printf("%s: no reply", what);
    }
}

#define CHECK(what)                                                          \
    do {                                                                     \
        if ((why = rpc_why(amqp_get_rpc_reply(conn), what)) != NULL)         \
            goto fail;                                                       \
    } while (0)

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

int
main(int argc, char **argv)
{
    g_autofree char *url = NULL, *host = NULL, *exchange = NULL, *topic = NULL;
    gint64 prefetch = 16, copies = 1, reply_bytes = 0;
    gboolean foreign = FALSE;
    GOptionEntry entries[] = {
        { "url", 'u', 0, G_OPTION_ARG_STRING, &url,
          "broker URL (default $VTPM_AMQP_URL, else $VT_AMQP_URL)", "URL" },
        { "host", 'H', 0, G_OPTION_ARG_STRING, &host, "consume queue <topic>.HOST", "HOST" },
        { "prefetch", 'p', 0, G_OPTION_ARG_INT64, &prefetch,
          "unacknowledged deliveries at once (1..65535, default 16 as vtpmd)", "N" },
        { "exchange", 0, 0, G_OPTION_ARG_STRING, &exchange, "topic exchange (default vtpm)",
          "NAME" },
        { "topic", 0, 0, G_OPTION_ARG_STRING, &topic, "queue prefix (default vtpm)", "NAME" },
        { "copies", 0, 0, G_OPTION_ARG_INT64, &copies,
          "publish every reply N times (1..100; >1 breaks the protocol on purpose)", "N" },
        { "reply-bytes", 0, 0, G_OPTION_ARG_INT64, &reply_bytes,
          "pad the reply envelope to about N bytes (0..65536, default: no padding)", "N" },
        { "foreign-corr", 0, 0, G_OPTION_ARG_NONE, &foreign,
          "reply with a correlation id no caller sent (breaks the protocol on purpose)", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- answer vtpmd requests with a fixed reply (broker baseline)");
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GBytes) reply = NULL;
    g_autofree char *queue = NULL;
    g_autofree char *url_buf = NULL;
    struct amqp_connection_info ci;
    amqp_connection_state_t conn = NULL;
    amqp_socket_t *sock;
    amqp_bytes_t body;
    struct sigaction sa = { .sa_handler = on_signal };
    char *why = NULL;
    guint64 answered = 0;
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        fprintf(stderr, "vtpm-echo: %s\n", gerr->message);
        return 2;
    }
    if (!url)
        url = g_strdup(g_getenv("VTPM_AMQP_URL") ? g_getenv("VTPM_AMQP_URL")
                                                 : g_getenv("VT_AMQP_URL"));
    if (!url || !host || !*host || prefetch < 1 || prefetch > 65535 || copies < 1 ||
        copies > 100 || reply_bytes < 0 || reply_bytes > 65536) {
        fprintf(stderr, "vtpm-echo: needs --url (or $VTPM_AMQP_URL), --host, a --prefetch "
                        "of 1..65535, --copies of 1..100 and --reply-bytes of 0..65536\n");
        return 2;
    }
    reply = padded_reply((size_t)reply_bytes);
    queue = g_strdup_printf("%s.%s", topic ? topic : "vtpm", host);
    if (!exchange)
        exchange = g_strdup("vtpm");
    url_buf = g_strdup(url);
    if (amqp_parse_url(url_buf, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "vtpm-echo: expected amqp://user:pass@host:port/vhost\n");
        return 2;
    }

    /* No SA_RESTART: the blocking wait returns, and the flag is seen. */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    if (!sock || (rc = amqp_socket_open(sock, ci.host, ci.port)) != AMQP_STATUS_OK) {
        why = g_strdup_printf("connect to %s:%d: %s", ci.host, ci.port,
                              sock ? amqp_error_string2(rc) : "no socket");
        goto fail;
    }
    if ((why = rpc_why(amqp_login(conn, ci.vhost, 1, FRAME_MAX, 0, AMQP_SASL_METHOD_PLAIN,
                                  ci.user, ci.password),
                       "login")))
        goto fail;
    amqp_channel_open(conn, CHANNEL);
    CHECK("channel.open");
    amqp_basic_qos(conn, CHANNEL, 0, (uint16_t)prefetch, 0);
    CHECK("basic.qos");
    /* The same declarations as vtpmd (worker/broker.c, declare()). */
    amqp_exchange_declare(conn, CHANNEL, cbytes(exchange), cbytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    CHECK("exchange.declare");
    amqp_queue_declare(conn, CHANNEL, cbytes(queue), 0, 1, 0, 0, amqp_empty_table);
    CHECK("queue.declare");
    amqp_queue_bind(conn, CHANNEL, cbytes(queue), cbytes(exchange), cbytes(queue),
                    amqp_empty_table);
    CHECK("queue.bind");
    amqp_basic_consume(conn, CHANNEL, cbytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    CHECK("basic.consume");
    fprintf(stderr, "vtpm-echo: ready: consuming %s, prefetch %" G_GINT64_FORMAT "\n", queue,
            prefetch);

    body.bytes = (void *)g_bytes_get_data(reply, &body.len);
    while (!stop_requested) {
        struct timeval tv = { 0, WAKE_MS * 1000 };
        amqp_envelope_t e;
        amqp_rpc_reply_t r;

        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &e, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            const amqp_basic_properties_t *in = &e.message.properties;

            if ((in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len) {
                amqp_basic_properties_t out = { 0 };
                g_autofree char *corr = NULL;

                /* As vtpmd's replies: content type, persistent, correlation id. */
                out._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
                out.content_type = cbytes(VTPM_PROTO_CONTENT_TYPE);
                out.delivery_mode = 2;
                if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
                    out._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
                    out.correlation_id = in->correlation_id;
                    if (foreign) {
                        corr = g_strdup_printf("foreign-%.*s", (int)in->correlation_id.len,
                                               (const char *)in->correlation_id.bytes);
                        out.correlation_id = cbytes(corr);
                    }
                }
                rc = AMQP_STATUS_OK;
                for (gint64 i = 0; i < copies && rc == AMQP_STATUS_OK; i++)
                    rc = amqp_basic_publish(conn, CHANNEL, amqp_empty_bytes, in->reply_to, 0,
                                            0, &out, body);
                if (rc != AMQP_STATUS_OK) {
                    amqp_destroy_envelope(&e);
                    why = g_strdup_printf("publish: %s", amqp_error_string2(rc));
                    goto fail;
                }
                answered++;
            }
            rc = amqp_basic_ack(conn, CHANNEL, e.delivery_tag, 0);
            amqp_destroy_envelope(&e);
            if (rc != AMQP_STATUS_OK) {
                why = g_strdup_printf("ack: %s", amqp_error_string2(rc));
                goto fail;
            }
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t f;

            /* A method that is not a delivery: only a close matters. */
            if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK) {
                why = g_strdup("connection lost");
                goto fail;
            }
            if (f.frame_type == AMQP_FRAME_METHOD &&
                (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                 f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
                 f.payload.method.id == AMQP_BASIC_CANCEL_METHOD)) {
                why = g_strdup_printf("the broker closed the channel or consumer (0x%08x)",
                                      f.payload.method.id);
                goto fail;
            }
            continue;
        }
        if (stop_requested)
            break;
        why = rpc_why(r, "consume");
        goto fail;
    }
    amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    fprintf(stderr, "vtpm-echo: stopped after %" G_GUINT64_FORMAT " replies\n", answered);
    return 0;

fail:
    fprintf(stderr, "vtpm-echo: %s\n", why);
    g_free(why);
    if (conn)
        amqp_destroy_connection(conn);
    return 1;
}
