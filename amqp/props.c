/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include <glib.h>

#include "props.h"

char *
vtpm_amqp_bytes_dup(amqp_bytes_t b)
{
    return b.len ? g_strndup(b.bytes, b.len) : g_strdup("");
}

char *
vtpm_amqp_prop_dup(const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t b)
{
    return (p->_flags & flag) && b.len ? g_strndup(b.bytes, b.len) : NULL;
}

bool
vtpm_amqp_shortstr_ok(const char *s)
{
    return !s || strlen(s) <= VTPM_AMQP_SHORTSTR_MAX;
}
