/* SPDX-License-Identifier: Apache-2.0 */
/* Asking another host's vtpmd whether it answers (peer.h). */
#include "amqp/url.h"
#include "client/internal.h"
#include "peer.h"

static int
peer_fault(vtpm_error *err, const char *host, const vtpm_client_fault *f)
{
    vtpm_client_error_from_fault(err, f);
    return vtpm_error_prefix(err, "asking whether the vtpmd of host %s answers", host);
}

int
vtpm_peer_answers(const vtpm_config *cfg, const char *host, int timeout_ms, bool *out,
                  vtpm_error *err)
{
    g_auto(GStrv) failover = vtpm_amqp_url_list_split(cfg->amqp.failover_urls);
    vtpm_client_options p = {
        .url = cfg->amqp.url,
        .failover_urls = (const char *const *)failover,
        .cacert = cfg->amqp.cacert,
        .cert = cfg->amqp.cert,
        .key = cfg->amqp.key,
        .exchange = cfg->amqp.exchange,
        .topic = cfg->amqp.topic,
    };
    /* Expired by the time a vtpmd that comes back later would take it:
     * the request waits in the host's durable queue meanwhile. */
    vtpm_client_call_opts o = {
        .timeout_ms = timeout_ms,
        .deadline_ms = (uint64_t)(g_get_real_time() / 1000) + (uint64_t)timeout_ms,
        .request_id = "evacuate-liveness",
    };
    g_autoptr(vtpm_client) c = NULL;
    g_autoptr(vtpm_client_reply) r = NULL;
    vtpm_client_fault f;
    int rc;

    if (vtpm_client_connect(&p, &c, &f) < 0)
        return peer_fault(err, host, &f);
    rc = vtpm_client_call(c, host, "get_capabilities", NULL, 0, &o, &r, &f);
    if (rc < 0 && f.code != VTPM_CLIENT_TIMEOUT && f.details.source != VTPM_CLIENT_SOURCE_WORKER)
        return peer_fault(err, host, &f);
    /* A result or a worker's fault: alive either way. */
    *out = rc == 0 || f.details.source == VTPM_CLIENT_SOURCE_WORKER;
    return 0;
}
