/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What vtpmd declares on the broker, in one place, so that a tool that
 * declares the same (vtpm-replay record, vtpm-echo) cannot declare it
 * differently: the broker refuses a second declaration with other flags
 * (406 PRECONDITION_FAILED), and the worker would then not start.
 */
#pragma once

#include <stdbool.h>
#include <amqp.h>

#include "vtpm/error.h"

typedef enum {
    VTPM_AMQP_EXCHANGE_TOPIC,   /* requests to one worker: routing key <topic>.<host> */
    VTPM_AMQP_EXCHANGE_FANOUT,  /* broadcasts to every worker: <topic>_fanout */
} vtpm_amqp_exchange_type;

/* Declare exchange @name of @type: durable, not auto-deleted, not internal. */
int vtpm_amqp_declare_exchange(amqp_connection_state_t c, amqp_channel_t ch, const char *name,
                               vtpm_amqp_exchange_type type, vtpm_error *err);

/* A worker's request queue @queue: durable, neither exclusive nor
 * auto-deleted (a quorum queue must be all that; a classic one is the same
 * so that switching types only takes a delete), bound to @exchange with
 * its own name as routing key. */
int vtpm_amqp_declare_request_queue(amqp_connection_state_t c, amqp_channel_t ch,
                                    const char *queue, const char *exchange, bool quorum,
                                    vtpm_error *err);

/* A queue of this connection only: server-named, exclusive, auto-deleted
 * (a reply queue, a worker's broadcast queue, a tap); *name is its name. */
int vtpm_amqp_declare_private_queue(amqp_connection_state_t c, amqp_channel_t ch, char **name,
                                    vtpm_error *err);
