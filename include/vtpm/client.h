/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvtpmclient: call vtpmd workers over RabbitMQ (docs/protocol.md,
 * docs/client.md, libvtpmclient(3)).
 *
 * Build with `pkg-config --cflags --libs vtpmclient`.  This header needs
 * only the C library's headers and <vtpm/fault.h>; msgpack bytes go in and
 * out as plain buffers, so any msgpack implementation can pack the
 * arguments and read the results (or use the small args builder below).
 *
 * Conventions
 *   - Functions that can fail return 0 on success and a negative value,
 *     -(code), on failure, and then fill the vtpm_client_fault the caller
 *     passed (which may be NULL).  Output parameters are set on success
 *     only.  A few return 1 for "nothing arrived in time", as documented.
 *   - Whatever a function returns through an output parameter belongs to
 *     the caller and is freed with the matching *_free function (each
 *     accepts NULL).  Strings returned by the accessors (const char *)
 *     belong to the object they were read from and live as long as it.
 *   - Strings are NUL-terminated UTF-8.  Times: timeouts and windows in
 *     milliseconds, deadlines as Unix epoch milliseconds.
 *
 * Thread safety
 *   A vtpm_client is not locked inside: it must not be used by two threads
 *   at the same time.  Give each thread a client of its own, or serialise
 *   the calls on a shared one with a lock of yours (a client may move from
 *   thread to thread).  Clients share nothing with each other, so any
 *   number of them may be used in parallel.  A vtpm_client_reply and a
 *   vtpm_client_replies never change after they are returned and are
 *   independent of their client: any thread may read them, also at the same
 *   time, and free them (once), also after the client was freed.  A
 *   vtpm_client_args is used by one thread at a time, like a client.
 *
 * ABI
 *   The library's soname is libvtpmclient.so.0 and its symbols carry the
 *   version VTPMCLIENT_0.1.  The structs below are part of the ABI: a new
 *   field in one of them comes with a new soname.
 */
#ifndef VTPM_CLIENT_H
#define VTPM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vtpm/fault.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- faults ------------------------------------------------------------- */

/* A fault code made by this library only, never sent by a worker: no
 * reply arrived within the call's timeout.  Retryable: the same request
 * sent again with the same message_id is answered from the worker's reply
 * cache, or joins the copy still running, instead of running twice. */
#define VTPM_CLIENT_TIMEOUT 256

#define VTPM_CLIENT_NAME_MAX 65     /* a fault code's or a method's name, with its NUL */
#define VTPM_CLIENT_MESSAGE_MAX 4097 /* a fault message (4096 bytes on the wire), with its NUL */
#define VTPM_CLIENT_ID_MAX 256      /* a call id, message id or host name, with its NUL */

/* Where a fault was made. */
typedef enum {
    VTPM_CLIENT_SOURCE_NONE = 0,
    VTPM_CLIENT_SOURCE_WORKER, /* a worker's fault reply */
    VTPM_CLIENT_SOURCE_CLIENT, /* this library: a bad argument, the broker out of reach, a
                                * connection lost, no reply in time, an undecodable reply */
} vtpm_client_source;

/*
 * Why a call failed.  Fixed-size, so that filling it never allocates
 * (about 5 KiB: fine on the stack); nothing in it needs freeing.  Zero it
 * before use, or not: every function that fails fills all of it.
 */
typedef struct {
    /* A vtpm_fault (docs/protocol.md, "Fault codes") or VTPM_CLIENT_TIMEOUT.
     * A code from a newer worker that this library does not know is
     * VTPM_FAULT_INTERNAL, its name kept in details.received_code. */
    int code;
    char name[VTPM_CLIENT_NAME_MAX];         /* "BadRequest", ..., "Timeout" */
    char message[VTPM_CLIENT_MESSAGE_MAX];   /* for people; do not parse it */
    /* Whether the same request, sent again unchanged (same message_id), may
     * succeed later: as the worker said, or as the code's table says for
     * faults made here (Busy and Timeout are retryable). */
    bool retryable;
    struct {
        vtpm_client_source source;
        char received_code[VTPM_CLIENT_NAME_MAX]; /* an unknown code as received; else "" */
        char host[VTPM_CLIENT_ID_MAX];            /* the worker called; "" for a broadcast */
        char method[VTPM_CLIENT_NAME_MAX];        /* "" when not known */
        char message_id[VTPM_CLIENT_ID_MAX];      /* "" when not known */
        char call_id[VTPM_CLIENT_ID_MAX];         /* "" when not known */
        unsigned attempts;                        /* vtpm_client_call_with_retry: sent so often */
    } details;
} vtpm_client_fault;

/* ---- connecting --------------------------------------------------------------- */

typedef struct vtpm_client vtpm_client;

/* vtpm_client_options.flags */
enum {
    /* vtpm_client_wait(c, NULL, ...) returns every message that arrives on
     * the reply queue: also a second copy of a reply, replies to calls
     * given up and replies nobody asked for.  For tools that check
     * delivery (vtpm-fanout); without it those are dropped.  The client
     * then keeps no calls in mind: it cannot tell an id that is not in
     * flight (vtpm_client_wait waits for it), vtpm_client_cancel has
     * nothing to drop, and a call lost with a connection is not named. */
    VTPM_CLIENT_ALL_REPLIES = 1u << 0,
};

/* Where the workers are: exactly vtpmd's [amqp] url, failover_urls,
 * cacert, cert, key, exchange and topic (vtpmd.conf(5), vtpm-amqp(7)).  The
 * strings are copied by vtpm_client_connect(). */
typedef struct {
    /* amqp://, amqps://, rabbit:// or rabbits://USER:PASSWORD@HOST:PORT/VHOST;
     * several nodes of a cluster as rabbit://u:p@h1:5672,u:p@h2:5672/ (tried
     * in order).  NULL: amqp://guest:guest@127.0.0.1:5672/%2f. */
    const char *url;
    const char *const *failover_urls; /* more nodes, tried after url's; NULL-terminated; may be NULL */
    const char *cacert;               /* CA file: needed by amqps:// nodes, which are always verified */
    const char *cert, *key;           /* a client certificate and its key: both or neither */
    const char *exchange;             /* NULL: "vtpm" */
    const char *topic;                /* NULL: "vtpm" (queues <topic>.<host>, <topic>_fanout) */
    unsigned flags;                   /* VTPM_CLIENT_ALL_REPLIES or 0; other bits: BadRequest */
} vtpm_client_options;

/*
 * Connect to the first node that lets us in (in order: the nodes of url,
 * then of each failover URL) and consume a reply queue of our own.
 * @o may be NULL (the default broker).  Faults: BadRequest for a URL, TLS
 * file or name that cannot be used (the message names which; it never
 * quotes a password), Busy when no node could be reached or let us in
 * (naming each node and why).
 *
 * A client whose connection is lost later connects again by itself, the
 * same way, at its next call; calls in flight on the lost connection fail
 * with Busy (see vtpm_client_wait).
 */
int vtpm_client_connect(const vtpm_client_options *o, vtpm_client **out, vtpm_client_fault *f);

/* Close the connection and free @c; replies not yet collected are lost. */
void vtpm_client_free(vtpm_client *c);

/* The node @c is connected to, as "amqp[s]://host:port/vhost" (no
 * credentials): valid until the next call on @c. */
const char *vtpm_client_broker(const vtpm_client *c);

/* ---- arguments ------------------------------------------------------------------ */

/*
 * A method's args map (docs/protocol.md, "Methods") built value by value,
 * in msgpack order: a map of n entries is followed by n keys and n values,
 * an array of n items by n values.  Map keys must be strings.  The first
 * mistake is remembered and reported by vtpm_client_args_data() (so the
 * calls in between need no checks); the others are then ignored.  The
 * buffer is overwritten with zeros when freed: a secret may be in it.
 *
 * Example: {"instance": {"uuid": U}, "keep_vtpm": true}
 *   vtpm_client_args_map(a, 2);
 *   vtpm_client_args_str(a, "instance");
 *   vtpm_client_args_map(a, 1);
 *   vtpm_client_args_str(a, "uuid");
 *   vtpm_client_args_str(a, U);
 *   vtpm_client_args_str(a, "keep_vtpm");
 *   vtpm_client_args_bool(a, true);
 */
typedef struct vtpm_client_args vtpm_client_args;

/* Never NULL (aborts when out of memory, as the rest of the library). */
vtpm_client_args *vtpm_client_args_new(void);
void vtpm_client_args_free(vtpm_client_args *a);
void vtpm_client_args_map(vtpm_client_args *a, uint32_t entries);
void vtpm_client_args_array(vtpm_client_args *a, uint32_t items);
void vtpm_client_args_str(vtpm_client_args *a, const char *s);  /* UTF-8 without NUL; NULL is a mistake */
void vtpm_client_args_bin(vtpm_client_args *a, const void *data, size_t len);
void vtpm_client_args_uint(vtpm_client_args *a, uint64_t v);
void vtpm_client_args_int(vtpm_client_args *a, int64_t v);
void vtpm_client_args_bool(vtpm_client_args *a, bool v);
void vtpm_client_args_nil(vtpm_client_args *a);

/* The packed map in *data (@a's; valid until the next change of @a or its
 * free) and *len.  BadRequest naming the first mistake ("args: value 4:
 * map key must be a str", "args: the map opened at value 2 has 1 of its 2
 * entries") when @a is not exactly one complete map. */
int vtpm_client_args_data(const vtpm_client_args *a, const void **data, size_t *len,
                          vtpm_client_fault *f);

/* ---- replies --------------------------------------------------------------------- */

typedef struct vtpm_client_reply vtpm_client_reply;

void vtpm_client_reply_free(vtpm_client_reply *r);

/* The id of the call it answers (its correlation id); NULL when it had
 * none (only seen with VTPM_CLIENT_ALL_REPLIES). */
const char *vtpm_client_reply_id(const vtpm_client_reply *r);

/* The reply envelope as received ({v, ok, result | fault}, msgpack). */
const void *vtpm_client_reply_body(const vtpm_client_reply *r, size_t *len);

/*
 * What the reply says.  0: the worker succeeded; *result (may be NULL) is
 * the packed result map (@r's, as long as @r lives), *len its size.  Else
 * -(code) with @f filled: the worker's fault (details.source WORKER), or
 * BadRequest (source CLIENT) when the body is no valid reply envelope.
 */
int vtpm_client_reply_result(const vtpm_client_reply *r, const void **result, size_t *len,
                             vtpm_client_fault *f);

/* When the reply was read from the connection: CLOCK_MONOTONIC, in
 * microseconds (for latencies). */
int64_t vtpm_client_reply_received_us(const vtpm_client_reply *r);

/* ---- calls ------------------------------------------------------------------------- */

/* How to send one request.  All zero (or a NULL pointer) is fine. */
typedef struct {
    /* vtpm_client_call and vtpm_client_call_with_retry: how long to wait
     * for the reply (with retries: in all); 0: 30000.  The sending
     * functions ignore it. */
    int timeout_ms;
    /* deadline_ms of the request (Unix epoch ms): a worker that takes it
     * from the queue later answers Expired without running it.  0: none. */
    uint64_t deadline_ms;
    /* The AMQP message_id, 1..255 bytes: a worker answers a repeat of an id
     * it has answered from its reply cache, without running it again.
     * NULL: a new UUID.  Send a retry with the id of the first attempt. */
    const char *message_id;
    /* context.request_id, 1..256 bytes, shown in the worker's log.
     * NULL: "req-" and a new UUID. */
    const char *request_id;
    /* The call's id (the AMQP correlation id), 1..255 bytes, unique among
     * the calls in flight on this client.  NULL: a new UUID. */
    const char *call_id;
} vtpm_client_call_opts;

/*
 * Call @method (1..64 of [a-z_]) on the worker of @host (1..255 of
 * A-Z a-z 0-9 . _ -, its [worker] host) with @args: one packed msgpack map
 * of @len bytes (NULL or 0 bytes: {}), and wait up to o->timeout_ms for the
 * reply.  0: the worker succeeded, and *out (if @out is not NULL) is the
 * reply (vtpm_client_reply_result gives the result).  Else -(code) with @f
 * filled: the worker's fault (details.source WORKER); BadRequest for a bad
 * argument, naming it; Busy when the broker cannot be reached or the
 * connection was lost (retryable); VTPM_CLIENT_TIMEOUT when no reply came
 * in time (retryable).  details names host, method, message_id and
 * call_id.
 */
int vtpm_client_call(vtpm_client *c, const char *host, const char *method, const void *args,
                     size_t len, const vtpm_client_call_opts *o, vtpm_client_reply **out,
                     vtpm_client_fault *f);

/* How vtpm_client_call_with_retry waits between attempts.  All zero (or
 * a NULL pointer) is fine. */
typedef struct {
    int attempt_timeout_ms; /* how long one attempt waits for its reply; 0: all the time left */
    int backoff_ms;         /* the pause before the second attempt; 0: 500 */
    int max_backoff_ms;     /* each further pause doubles, up to this; 0: 10000 */
} vtpm_client_retry_opts;

/*
 * vtpm_client_call, sent again while the fault says retryable (as the
 * worker sent it: Busy, HypervisorError, StateTransferFailed, and an
 * InstanceConflict that is not final; and Timeout), every attempt with the same message_id and request_id (o->message_id, or one
 * new UUID for all), after a pause that starts at r->backoff_ms, doubles
 * up to r->max_backoff_ms and varies by +-20 % at random (so that many
 * clients do not retry in step).  It gives up at the deadline: the
 * earlier of o->deadline_ms (which every attempt carries) and
 * o->timeout_ms after the start; no attempt starts after it, no pause
 * reaches past it.  Returns like vtpm_client_call, with the last fault and
 * details.attempts.  On success @f (if not NULL) says how many attempts it
 * took: zeroed (code 0) but for details.attempts.  A lost connection is
 * connected again before the next attempt.
 */
int vtpm_client_call_with_retry(vtpm_client *c, const char *host, const char *method,
                                const void *args, size_t len, const vtpm_client_call_opts *o,
                                const vtpm_client_retry_opts *r, vtpm_client_reply **out,
                                vtpm_client_fault *f);

/*
 * Many calls in flight on one connection: send each with
 * vtpm_client_call_send (or broadcast with vtpm_client_fanout_send), then
 * collect the replies with vtpm_client_wait.  The call's id is copied to
 * @id (VTPM_CLIENT_ID_MAX bytes; may be NULL).  Faults as for
 * vtpm_client_call, before anything is sent.  Every call sent must be
 * collected (its reply returned by vtpm_client_wait) or cancelled
 * (vtpm_client_cancel), or the client keeps it in mind until freed.
 */
int vtpm_client_call_send(vtpm_client *c, const char *host, const char *method,
                          const void *args, size_t len, const vtpm_client_call_opts *o,
                          char *id, vtpm_client_fault *f);

/* The same request to every worker (<topic>_fanout): each answers it once.
 * Its id stays in flight, collecting replies, until vtpm_client_cancel. */
int vtpm_client_fanout_send(vtpm_client *c, const char *method, const void *args, size_t len,
                            const vtpm_client_call_opts *o, char *id, vtpm_client_fault *f);

/*
 * Wait up to @timeout_ms (-1: no limit; 0: only what has arrived) for the
 * reply to the call @id, or, with @id NULL, for the next reply to any call
 * in flight, in order of arrival.  Replies to other calls that arrive
 * meanwhile are kept for later.  0: *out is the reply (whatever it says:
 * see vtpm_client_reply_result); the call is then done, unless it is a
 * broadcast.  1: nothing within @timeout_ms (*out untouched; the call is
 * still in flight).  Negative with @f filled: BadRequest when @id is not
 * in flight; Busy (retryable) when the connection was lost with the call
 * in flight (with @id NULL: for one such call, named in details.call_id,
 * each in turn) - it is done then, and should be sent again with the same
 * message_id.  A second copy of a reply (a redelivery), and replies to
 * cancelled calls, are dropped, unless the client has
 * VTPM_CLIENT_ALL_REPLIES.
 */
int vtpm_client_wait(vtpm_client *c, const char *id, int timeout_ms, vtpm_client_reply **out,
                     vtpm_client_fault *f);

/* Give up the call @id: its replies, received or still to come, are
 * dropped.  0, or BadRequest when @id is not in flight. */
int vtpm_client_cancel(vtpm_client *c, const char *id, vtpm_client_fault *f);

/* ---- every worker's capabilities --------------------------------------------------- */

typedef struct vtpm_client_replies vtpm_client_replies;

/*
 * Broadcast get_capabilities to every worker and collect the replies that
 * arrive within @window_ms (1..3600000): one per host, as each result
 * names it (result.host), in order of arrival.  Fault replies name no host
 * and are left out (a worker shutting down answers Busy).  Faults: BadRequest
 * for a bad window, Busy when the broker cannot be reached.
 */
int vtpm_client_capabilities_all(vtpm_client *c, int window_ms, vtpm_client_replies **out,
                                 vtpm_client_fault *f);
size_t vtpm_client_replies_count(const vtpm_client_replies *l);
/* The host of entry @i (< count) and its reply (the result: vtpm_client_reply_result). */
const char *vtpm_client_replies_host(const vtpm_client_replies *l, size_t i);
const vtpm_client_reply *vtpm_client_replies_get(const vtpm_client_replies *l, size_t i);
void vtpm_client_replies_free(vtpm_client_replies *l);

#ifdef __cplusplus
}
#endif

#endif /* VTPM_CLIENT_H */
