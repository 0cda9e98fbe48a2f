/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strings in and out of rabbitmq-c's frames: what a delivery carries is
 * copied out at once (the library recycles its frame memory), and what
 * goes into a short string field is checked against its limit first.
 */
#pragma once

#include <stdbool.h>
#include <amqp.h>

#define VTPM_AMQP_SHORTSTR_MAX 255

/* @b as a string of its own ("" when empty). */
char *vtpm_amqp_bytes_dup(amqp_bytes_t b);

/* The property @flag of @p (@b is that field) as a string of its own; NULL
 * when absent or empty (an empty reply_to is a cast). */
char *vtpm_amqp_prop_dup(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t b);

/* Whether @s (NULL counts as fine) fits an AMQP short string. */
bool vtpm_amqp_shortstr_ok(const char *s);
