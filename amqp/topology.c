/* SPDX-License-Identifier: Apache-2.0 */
#include <glib.h>

#include "conn.h"
#include "props.h"
#include "topology.h"

int
vtpm_amqp_declare_exchange(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                           vtpm_amqp_exchange_type type, vtpm_error *err)
{
    bool fanout = type == VTPM_AMQP_EXCHANGE_FANOUT;

    amqp_exchange_declare(c, ch, amqp_cstring_bytes(name),
                          amqp_cstring_bytes(fanout ? "fanout" : "topic"), 0 /* passive */,
                          1 /* durable */, 0 /* auto-delete */, 0 /* internal */,
                          amqp_empty_table);
    return vtpm_amqp_rpc_check(c, fanout ? "exchange.declare (fanout)" : "exchange.declare", err);
}

int
vtpm_amqp_declare_request_queue(amqp_connection_state_t c, amqp_channel_t ch, const char *queue,
                                const char *exchange, bool quorum, vtpm_error *err)
{
    amqp_table_entry_t quorum_arg = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = { .kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum") },
    };
    amqp_table_t args = amqp_empty_table;
    int rc;

    if (quorum) {
        args.num_entries = 1;
        args.entries = &quorum_arg;
    }
    amqp_queue_declare(c, ch, amqp_cstring_bytes(queue), 0 /* passive */, 1 /* durable */,
                       0 /* exclusive */, 0 /* auto-delete */, args);
    if ((rc = vtpm_amqp_rpc_check(c, "queue.declare", err)) < 0)
        return rc;
    amqp_queue_bind(c, ch, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(queue), amqp_empty_table);
    return vtpm_amqp_rpc_check(c, "queue.bind", err);
}

int
vtpm_amqp_declare_private_queue(amqp_connection_state_t c, amqp_channel_t ch, char **name,
                                vtpm_error *err)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(c, ch, amqp_empty_bytes, 0 /* passive */,
                                                     0 /* durable */, 1 /* exclusive */,
                                                     1 /* auto-delete */, amqp_empty_table);
    int rc;

    if ((rc = vtpm_amqp_rpc_check(c, "queue.declare (private)", err)) < 0)
        return rc;
    *name = vtpm_amqp_bytes_dup(ok->queue);
    return 0;
}
