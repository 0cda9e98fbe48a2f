/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a connection to one broker node, the same way for the worker
 * and every tool: plain TCP, or TLS 1.2 and later with the broker's
 * certificate and host name always verified; every step bounded in time.
 * And what a failed RPC means, in words.
 */
#pragma once

#include <amqp.h>

#include "amqp/url.h"
#include "vtpm/error.h"

typedef struct {
    unsigned heartbeat;          /* seconds, 0..65535; 0 = none */
    /* Client properties; NULL: none are sent.  With a name, the broker
     * also learns that we handle basic.cancel (consumer_cancel_notify):
     * without it, it deletes a queue under a consumer silently. */
    const char *connection_name;
    const char *product;
} vtpm_amqp_login;

/*
 * Connect to @node (its TLS files in @tls) and log in (@login may be NULL:
 * no heartbeat, no properties); *out is the open connection, channel-less.
 * Faults: BadRequest when a TLS file cannot be used (retrying will not
 * help; the message names the file), Busy when the node cannot be reached
 * or refuses the handshake or the login ("connect: ...", "login: ..."),
 * Internal otherwise.
 */
int vtpm_amqp_connect(const vtpm_amqp_node *node, const vtpm_amqp_tls *tls,
                      const vtpm_amqp_login *login, amqp_connection_state_t *out,
                      vtpm_error *err);

/*
 * The first node of @nodes (vtpm_amqp_node *) that lets us in, in order;
 * *index says which.  Busy when none did, naming each node and why
 * ("h1:5672: connect: ...; h2:5672: login: ..."); BadRequest and Internal
 * at once (a TLS file that cannot be used fails on every node).
 */
int vtpm_amqp_connect_first(GPtrArray *nodes, const vtpm_amqp_tls *tls,
                            const vtpm_amqp_login *login, amqp_connection_state_t *out,
                            guint *index, vtpm_error *err);

/* Why @r is not a normal reply, as "@what: why" (just "why" when @what is
 * NULL); NULL when it is. */
char *vtpm_amqp_rpc_why(amqp_rpc_reply_t r, const char *what);

/* After a synchronous method on @c: 0, or Busy with "@what: why". */
int vtpm_amqp_rpc_check(amqp_connection_state_t c, const char *what, vtpm_error *err);
