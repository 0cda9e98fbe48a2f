/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AMQP runtime: one broker connection, owned by one thread (the I/O
 * thread), because rabbitmq-c connections are not thread-safe and service
 * heartbeats only while one of their calls runs.  That thread never blocks
 * on anything but the socket and a wake-up eventfd: work is handed to the
 * worker pool by the on_delivery callback, and replies come back through
 * vtpm_broker_post(), which any thread may call.
 *
 * Topology (declared on every (re)connect):
 *   - durable topic exchange <exchange>
 *   - durable queue <topic>.<host> (classic or quorum), bound to <exchange>
 *     with routing key <topic>.<host>
 *   - fanout exchange <topic>_fanout, and an exclusive, server-named queue
 *     of this process bound to it
 * Consumption uses manual acks and basic.qos(prefetch).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "vtpm/error.h"

typedef struct vtpm_broker vtpm_broker;

typedef struct {
    /* amqp://user:pass@host:port/vhost, amqps://, rabbit://, rabbits://, and
     * several nodes as rabbit://u:p@h1,u:p@h2/vhost (amqp/url.h) */
    const char *url;
    /* More nodes of the same cluster (NULL-terminated, may be NULL): when a
     * connection cannot be made or is lost, the next node in turn is tried
     * (url's, then these). */
    const char *const *failover_urls;
    const char *cacert;     /* amqps: CA file; the peer is always verified */
    const char *cert;       /* amqps: optional client cert + key */
    const char *key;
    const char *exchange;
    const char *topic;
    const char *host;
    const char *queue_type; /* "classic" | "quorum" */
    unsigned prefetch;
    unsigned heartbeat;     /* seconds; 0 = off */
    size_t max_message_bytes;
    unsigned reconnect_max_ms; /* cap of the exponential backoff (default 30000 if 0) */
} vtpm_broker_params;
/* Defaults for 0/NULL: exchange and topic "vtpm", queue_type "classic",
 * prefetch 16 (0 would let the broker push without limit), max_message_bytes
 * 1 MiB.  on_delivery is required. */

/* One received request.  Owned by the callee of on_delivery from then on
 * (free with vtpm_broker_delivery_free). */
typedef struct {
    uint64_t delivery_tag;
    uint64_t generation;   /* connection generation it arrived on */
    bool redelivered;
    /* From this process's fanout queue, which is deleted with its
     * connection: handing such a delivery back loses it. */
    bool broadcast;
    bool oversized;        /* body exceeded max_message_bytes: body is NULL */
    uint64_t body_size;    /* as announced by the content header */
    char *exchange;
    char *routing_key;
    char *reply_to;        /* NULL: a cast */
    char *correlation_id;
    char *message_id;
    char *content_type;
    GBytes *body;
} vtpm_broker_delivery;

void vtpm_broker_delivery_free(vtpm_broker_delivery *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_broker_delivery, vtpm_broker_delivery_free)

typedef struct {
    /* A request arrived (I/O thread).  Must not block. */
    void (*on_delivery)(vtpm_broker_delivery *d, void *user);
    /* Connected and topology declared (I/O thread); generation increments
     * on every successful (re)connect. */
    void (*on_connected)(uint64_t generation, void *user);
    /* The connection was lost (I/O thread): deliveries of that generation
     * can no longer be acked; the broker redelivers them. */
    void (*on_disconnected)(uint64_t generation, const char *why, void *user);
    /* Called on the I/O thread each time it wakes up (after posted actions
     * ran); lets the owner run I/O-thread-only bookkeeping.  May be NULL. */
    void (*on_wakeup)(void *user);
    void *user;
} vtpm_broker_callbacks;

int vtpm_broker_new(const vtpm_broker_params *params, const vtpm_broker_callbacks *cb,
                  vtpm_broker **out, vtpm_error *err);
void vtpm_broker_free(vtpm_broker *a);

/*
 * Run the I/O loop on the calling thread until vtpm_broker_stop() was called
 * and vtpm_broker_drained() says nothing is left (see below).  Connects,
 * reconnects with capped exponential backoff (logging each transition once
 * through g_message/g_warning), declares, consumes.  Returns 0 after a clean
 * stop, negative when the configuration makes connecting impossible (bad
 * URL, TLS files unreadable, authentication refused is retried).
 */
int vtpm_broker_run(vtpm_broker *a, vtpm_error *err);

/*
 * Thread-safe.  Queue an action for the I/O thread:
 *   - publish @body (may be NULL: nothing is published) to the default
 *     exchange with routing key @reply_to and @correlation_id, content
 *     type application/msgpack;
 *   - then, if @ack, basic.ack @delivery_tag — but only if @generation is
 *     still the current connection generation (after a reconnect the tag
 *     is void and the broker redelivers the request instead).
 * Publishing happens before the ack, so a crash between the two redelivers
 * the request (at-least-once).  Not connected when the action runs: both
 * are dropped; the request, never acked, is redelivered.
 */
void vtpm_broker_post_reply(vtpm_broker *a, const char *reply_to, const char *correlation_id,
                          GBytes *body, bool ack, uint64_t delivery_tag, uint64_t generation);

/* Thread-safe.  Hand a delivery back to its queue unanswered
 * (basic.reject with requeue), for the next consumer to take; only if
 * @generation is still current (after a reconnect the broker has
 * requeued it already). */
void vtpm_broker_post_requeue(vtpm_broker *a, uint64_t delivery_tag, uint64_t generation);

/* Thread-safe.  Publish @body to @exchange with @routing_key (e.g. the
 * capability announcements); dropped if not connected. */
void vtpm_broker_post_publish(vtpm_broker *a, const char *exchange, const char *routing_key,
                            GBytes *body);

/* Thread-safe.  Run @fn(@data) on the I/O thread at its next wake-up. */
void vtpm_broker_post_call(vtpm_broker *a, void (*fn)(void *data), void *data);

/*
 * Thread-safe (and async-signal-safe: only writes to the eventfd).  Stop
 * consuming (basic.cancel on both queues); vtpm_broker_run() then keeps
 * servicing posted actions until the @drained callback given to
 * vtpm_broker_set_drain_check() returns true, and returns.  Deliveries
 * still arriving after stop() are requeued (basic.reject), not delivered.
 */
void vtpm_broker_stop(vtpm_broker *a);
void vtpm_broker_set_drain_check(vtpm_broker *a, bool (*drained)(void *user));

/* Current generation (I/O thread only). */
uint64_t vtpm_broker_generation(const vtpm_broker *a);
