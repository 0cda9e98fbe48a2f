/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The broker options every tool takes (vtpmctl call, vtpm-fanout,
 * vtpm-replay, vtpm-echo), read one way; vtpm-amqp(7) documents them:
 *
 *   --url URL            the broker (amqp/url.h: rabbit://, several nodes...)
 *   --failover-url URL   more nodes, tried after those of --url (repeatable)
 *   --cacert, --cert, --key FILE   TLS, as [amqp] cacert, cert and key
 *   --exchange, --topic NAME       (where the tool sends or records)
 *   --config FILE        a vtpmd configuration: its [amqp] keys are the
 *                        defaults of the options above
 *
 * The URL is the first of: --url, [amqp] url of --config, $VTPM_AMQP_URL,
 * $VT_AMQP_URL (the test harness's), the default [amqp] url.  Every other
 * option overrides its [amqp] key.  A bad value is reported with the
 * option, variable or file line it came from.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "vtpm/client.h"
#include "config.h"
#include "vtpm/error.h"

typedef enum {
    VTPM_AMQPOPT_NAMES = 1u << 0, /* --exchange and --topic too */
} vtpm_amqpopt_flags;

typedef struct {
    /* As given on the command line. */
    char *url;
    char **failover;
    char *cacert, *cert, *key;
    char *exchange, *topic;
    char *config;
    /* Set by vtpm_amqpopt_load(). */
    vtpm_config *cfg;     /* --config, or the defaults */
    const char *url_source;
    char **failover_urls; /* what the client is given */
} vtpm_amqpopt;

/* Add the options to @ctx's main group (they show in --help). */
void vtpm_amqpopt_add(GOptionContext *ctx, vtpm_amqpopt *o, unsigned flags);

/*
 * After the command line was parsed: read --config (BadRequest
 * "FILE:LINE: [amqp] KEY: ..." when it is refused), choose every value,
 * check the URLs (BadRequest "--url: port: ...") and fill @p, whose
 * strings stay @o's.
 */
int vtpm_amqpopt_load(vtpm_amqpopt *o, vtpm_client_options *p, vtpm_error *err);

/* Whether the error of vtpm_amqpopt_load() came from the --config file
 * (tools report it as a usage error) rather than an option's value. */
bool vtpm_amqpopt_config_refused(const vtpm_amqpopt *o);

void vtpm_amqpopt_clear(vtpm_amqpopt *o);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_amqpopt, vtpm_amqpopt_clear)
