/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The message level of libvtpmclient, below the RPC calls of
 * <vtpm/client.h>: AMQP messages as they are, sent with any properties to
 * any exchange and received from any queue the client consumes.  Not
 * installed and not exported from the shared library: the project's own
 * tools (vtpm-replay records and republishes raw traffic) and test suites
 * (which send what no caller should) link the library's code statically
 * and use it on the same vtpm_client.
 *
 * Mixing this level with the calls of <vtpm/client.h> on one client is
 * not supported: both take messages from the same reply queue.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "client/internal.h"
#include "vtpm/client.h"
#include "vtpm/error.h"

/* vtpm_client_connect with the project's error type. */
int vtpm_client_msg_connect(const vtpm_client_options *o, vtpm_client **out, vtpm_error *err);

/* The exclusive reply queue of this client (server-named). */
const char *vtpm_client_reply_queue(const vtpm_client *c);

typedef struct {
    const char *exchange;       /* NULL: the topic exchange; "" = default exchange */
    const char *routing_key;    /* e.g. "vtpm.<host>"; for fanout: "" */
    bool fanout;                /* publish to <topic>_fanout */
    bool cast;                  /* no reply_to */
    const char *correlation_id; /* NULL: generated */
    const char *message_id;     /* NULL: generated (a UUID) */
    const char *reply_to;       /* NULL: this client's reply queue */
    const char *content_type;   /* NULL: application/msgpack */
} vtpm_client_msg_opts;

/* Publish one body.  @out_corr (optional) receives the correlation id used
 * (caller frees).  Busy when the connection is (or just got) lost. */
int vtpm_client_msg_send(vtpm_client *c, const vtpm_client_msg_opts *o, const void *body,
                         size_t len, char **out_corr, vtpm_error *err);

typedef struct {
    char *correlation_id;
    char *message_id;
    char *routing_key;
    char *exchange;
    char *reply_to;
    char *content_type;
    GBytes *body;
    /* The AMQP headers table as one packed msgpack map (longstr -> str when
     * valid UTF-8, else bin; nested tables -> maps; arrays -> arrays;
     * timestamps -> uint; decimals -> float); NULL when there is none.
     * The RabbitMQ firehose carries a message's original exchange, routing
     * keys and properties here (vtpm-replay record). */
    GBytes *headers;
    int64_t received_us; /* g_get_monotonic_time() at arrival */
} vtpm_client_msg;

void vtpm_client_msg_free(vtpm_client_msg *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client_msg, vtpm_client_msg_free)

/* Wait up to @timeout_ms (-1 = forever) for the next message on any queue
 * this client consumes.  Returns 0 with *out set, 1 on timeout (*out
 * untouched), negative on error (connection lost: the client is dead). */
int vtpm_client_msg_recv(vtpm_client *c, int timeout_ms, vtpm_client_msg **out, vtpm_error *err);

/* Send and wait for the message with the same correlation id; messages
 * for other correlation ids that arrive meanwhile are kept and returned by
 * later vtpm_client_msg_recv calls.  Returns like vtpm_client_msg_recv. */
int vtpm_client_msg_call(vtpm_client *c, const char *routing_key, const void *body, size_t len,
                         int timeout_ms, vtpm_client_msg **out, vtpm_error *err);

/* The client's topic exchange and <topic>_fanout: made as vtpmd makes them
 * (amqp/topology.h), or with @passive only checked to exist (a missing one
 * closes the channel: the client is dead then). */
int vtpm_client_declare_exchanges(vtpm_client *c, bool passive, vtpm_error *err);

/* Declare an exclusive queue bound to @exchange with each key in @keys and
 * consume it too (vtpm-replay record).  The exchange is declared
 * passively: it must exist. */
int vtpm_client_tap(vtpm_client *c, const char *exchange, const char *const *keys,
                    size_t nkeys, char **out_queue, vtpm_error *err);
