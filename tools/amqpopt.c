/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "amqp/url.h"
#include "amqpopt.h"

void
vtpm_amqpopt_add(GOptionContext *ctx, vtpm_amqpopt *o, unsigned flags)
{
    GOptionEntry entries[] = {
        { "url", 'u', 0, G_OPTION_ARG_STRING, &o->url,
          "broker URL: amqp[s]://, rabbit[s]://, several nodes as rabbit://u:p@h1,u:p@h2/ "
          "(default: [amqp] url of --config, else $VTPM_AMQP_URL)",
          "URL" },
        { "failover-url", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->failover,
          "another node of the cluster, tried after those of --url (repeatable; default: "
          "[amqp] failover_urls of --config)",
          "URL" },
        { "cacert", 0, 0, G_OPTION_ARG_FILENAME, &o->cacert,
          "CA file verifying an amqps:// broker (default: [amqp] cacert of --config)", "FILE" },
        { "cert", 0, 0, G_OPTION_ARG_FILENAME, &o->cert,
          "TLS client certificate, with --key (default: [amqp] cert of --config)", "FILE" },
        { "key", 0, 0, G_OPTION_ARG_FILENAME, &o->key,
          "its private key (default: [amqp] key of --config)", "FILE" },
        { "config", 0, 0, G_OPTION_ARG_FILENAME, &o->config,
          "vtpmd configuration whose [amqp] keys are the defaults of these options", "FILE" },
        { NULL }
    };
    GOptionEntry names[] = {
        { "exchange", 0, 0, G_OPTION_ARG_STRING, &o->exchange,
          "the workers' topic exchange (default: [amqp] exchange of --config, vtpm)", "NAME" },
        { "topic", 0, 0, G_OPTION_ARG_STRING, &o->topic,
          "the workers' topic: queues <topic>.<host>, broadcasts to <topic>_fanout (default: "
          "[amqp] topic of --config, vtpm)",
          "NAME" },
        { NULL }
    };

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (flags & VTPM_AMQPOPT_NAMES)
        g_option_context_add_main_entries(ctx, names, NULL);
}

/* The URL and where it came from, in the documented order. */
static const char *
choose_url(vtpm_amqpopt *o, const char **source)
{
    static const char *const vars[] = { "VTPM_AMQP_URL", "VT_AMQP_URL" };
    static const char *const var_names[] = { "$VTPM_AMQP_URL", "$VT_AMQP_URL" };

    if (o->url) {
        *source = "--url";
        return o->url;
    }
    if (o->config) {
        *source = "[amqp] url";
        return o->cfg->amqp.url;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(vars); i++) {
        if (g_getenv(vars[i])) {
            *source = var_names[i];
            return g_getenv(vars[i]);
        }
    }
    *source = "the default [amqp] url";
    return o->cfg->amqp.url;
}

/* Each URL checked on its own, named by its source. */
static int
check_urls(vtpm_amqpopt *o, const char *url, vtpm_error *err)
{
    g_autoptr(GPtrArray) nodes = NULL;
    guint n = o->failover ? g_strv_length(o->failover) : 0;

    if (vtpm_amqp_url_parse(url, &nodes, err) < 0)
        return o->config && !o->url
                   ? vtpm_error_prefix(err, "%s of %s", o->url_source, o->config)
                   : vtpm_error_prefix(err, "%s", o->url_source);
    for (guint i = 0; i < n; i++) {
        g_autoptr(GPtrArray) more = NULL;

        if (vtpm_amqp_url_parse(o->failover[i], &more, err) < 0)
            return n > 1 ? vtpm_error_prefix(err, "--failover-url %u", i + 1)
                         : vtpm_error_prefix(err, "--failover-url");
    }
    return 0;
}

int
vtpm_amqpopt_load(vtpm_amqpopt *o, vtpm_client_options *p, vtpm_error *err)
{
    vtpm_amqp_target t = { 0 };
    vtpm_client_options cp = { 0 };
    g_autoptr(GPtrArray) nodes = NULL;
    const char *url;
    int rc;

    if (o->config && (rc = vtpm_config_load(o->config, &o->cfg, err)) < 0)
        return rc;
    if (!o->cfg)
        o->cfg = vtpm_config_new_default();
    url = choose_url(o, &o->url_source);
    o->failover_urls = o->failover ? g_strdupv(o->failover)
                                   : vtpm_amqp_url_list_split(o->cfg->amqp.failover_urls);
    cp = (vtpm_client_options){
        .url = url,
        .failover_urls = (const char *const *)o->failover_urls,
        .cacert = o->cacert ? o->cacert : o->cfg->amqp.cacert,
        .cert = o->cert ? o->cert : o->cfg->amqp.cert,
        .key = o->key ? o->key : o->cfg->amqp.key,
        .exchange = o->exchange ? o->exchange : o->cfg->amqp.exchange,
        .topic = o->topic ? o->topic : o->cfg->amqp.topic,
    };
    if ((rc = check_urls(o, url, err)) < 0)
        return rc;
    /* Together: how many nodes, TLS files for TLS nodes. */
    t = (vtpm_amqp_target){ .url = cp.url, .failover_urls = cp.failover_urls,
                            .tls = { .cacert = cp.cacert, .cert = cp.cert, .key = cp.key } };
    if ((rc = vtpm_amqp_target_nodes(&t, &nodes, err)) < 0)
        return vtpm_error_prefix(err, "broker options");
    if (!*cp.exchange || !*cp.topic)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "--exchange and --topic must not be empty");
    *p = cp;
    return 0;
}

bool
vtpm_amqpopt_config_refused(const vtpm_amqpopt *o)
{
    return o->config && !o->cfg;
}

void
vtpm_amqpopt_clear(vtpm_amqpopt *o)
{
    g_free(o->url);
    g_strfreev(o->failover);
    g_free(o->cacert);
    g_free(o->cert);
    g_free(o->key);
    g_free(o->exchange);
    g_free(o->topic);
    g_free(o->config);
    g_clear_pointer(&o->cfg, vtpm_config_free);
    g_strfreev(o->failover_urls);
    memset(o, 0, sizeof(*o));
}
