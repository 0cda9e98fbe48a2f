/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An AMQP headers table as msgpack, so that tools can keep and compare it
 * without rabbitmq-c's types (the RabbitMQ firehose carries a message's
 * original exchange, routing keys and properties there).
 */
#pragma once

#include <amqp.h>
#include <glib.h>

/* The headers of @p as one packed msgpack map: longstr -> str when valid
 * UTF-8 without NUL, else bin; nested tables -> maps; arrays -> arrays;
 * timestamps -> uint; decimals -> float; nesting beyond 16 -> nil.  NULL
 * when @p has no headers. */
GBytes *vtpm_client_headers_pack(const amqp_basic_properties_t *p);
