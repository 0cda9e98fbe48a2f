/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A vtpmd RPC client over AMQP, shared by vtpmctl, vtpm-fanout,
 * vtpm-replay, the benchmarks and the integration tests.  Single-threaded:
 * one client = one connection = one thread.  Many calls may be in flight;
 * replies are matched by correlation id.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "vtpm/error.h"

typedef struct vtpm_client vtpm_client;

typedef struct {
    const char *url;                 /* one or more nodes (amqp/url.h) */
    const char *const *failover_urls; /* more nodes, NULL-terminated; may be NULL */
    const char *cacert, *cert, *key; /* TLS nodes */
    const char *exchange;            /* default "vtpm" */
    const char *topic;               /* default "vtpm" */
} vtpm_client_params;

/* Connect to the first node of @p's URLs that can be reached, in order,
 * and consume a reply queue of our own.  BadRequest: the URLs or TLS
 * files are not usable; Busy: no node could be reached or let us in. */
int vtpm_client_connect(const vtpm_client_params *p, vtpm_client **out, vtpm_error *err);
void vtpm_client_free(vtpm_client *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client, vtpm_client_free)

/* The node connected to, as "amqp[s]://host:port/vhost": no credentials. */
const char *vtpm_client_broker(const vtpm_client *c);

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
} vtpm_client_send_opts;

/* Publish one request body.  @out_corr (optional) receives the correlation
 * id used (caller frees). */
int vtpm_client_send(vtpm_client *c, const vtpm_client_send_opts *o, const void *body,
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
int vtpm_client_recv(vtpm_client *c, int timeout_ms, vtpm_client_msg **out, vtpm_error *err);

/* Send and wait for the reply with the same correlation id, discarding
 * nothing: replies for other correlation ids that arrive meanwhile are
 * kept and returned by later vtpm_client_recv calls.  Returns like
 * vtpm_client_recv: 0 with *out set, 1 on timeout, negative on error. */
int vtpm_client_call(vtpm_client *c, const char *routing_key, const void *body, size_t len,
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
