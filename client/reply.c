/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A reply is decoded once, when it is received, and never changes after:
 * so any thread may read it, and it keeps nothing of its client.
 */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "client/private.h"

struct vtpm_client_reply {
    char *id;
    GBytes *body;
    GBytes *result;             /* the packed result map of an ok reply */
    int code;                   /* 0: ok */
    vtpm_client_source source;  /* of a fault: WORKER, or CLIENT when undecodable */
    char *received_code;        /* a fault code this library does not know */
    char *message;
    bool retryable;
    char *caps_host;            /* result.host, when it is a str */
    int64_t received_us;
};

void
vtpm_client_reply_free(vtpm_client_reply *r)
{
    if (!r)
        return;
    g_free(r->id);
    g_bytes_unref(r->body);
    if (r->result)
        g_bytes_unref(r->result);
    g_free(r->received_code);
    g_free(r->message);
    g_free(r->caps_host);
    g_free(r);
}

static GBytes *
pack_object(const msgpack_object *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t size;
    char *data;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *o);
    size = sb.size; /* release() zeroes it */
    data = msgpack_sbuffer_release(&sb);
    return g_bytes_new_with_free_func(data, size, free, data);
}

static void
take_decoded(vtpm_client_reply *r, const vtpm_reply *rep)
{
    if (rep->ok) {
        r->result = pack_object(&rep->result);
        /* Only get_capabilities results have it; a wrong type is no host. */
        vtpm_proto_get_str(&rep->result, "result", "host", false, VTPM_CLIENT_ID_MAX - 1,
                           &r->caps_host, NULL);
        return;
    }
    r->code = rep->fault;
    r->source = VTPM_CLIENT_SOURCE_WORKER;
    if (vtpm_fault_from_name(rep->fault_code) < 0)
        r->received_code = g_strdup(rep->fault_code);
    r->message = g_strdup(rep->fault_message);
    r->retryable = rep->retryable;
}

vtpm_client_reply *
vtpm_client_reply_new(vtpm_client_msg *m, const vtpm_proto_limits *lim)
{
    vtpm_client_reply *r = g_new0(vtpm_client_reply, 1);
    g_autoptr(vtpm_reply) rep = NULL;
    vtpm_error err = { 0 };

    r->id = g_steal_pointer(&m->correlation_id);
    r->body = g_steal_pointer(&m->body);
    r->received_us = m->received_us;
    vtpm_client_msg_free(m);
    if (vtpm_proto_decode_reply(g_bytes_get_data(r->body, NULL), g_bytes_get_size(r->body), lim,
                                &rep, &err) == 0) {
        take_decoded(r, rep);
        return r;
    }
    r->code = VTPM_FAULT_BAD_REQUEST;
    r->source = VTPM_CLIENT_SOURCE_CLIENT;
    r->message = g_strdup_printf("reply: %s", err.message);
    return r;
}

const char *
vtpm_client_reply_caps_host(const vtpm_client_reply *r)
{
    return r->code == 0 ? r->caps_host : NULL;
}

const char *
vtpm_client_reply_id(const vtpm_client_reply *r)
{
    return r->id;
}

const void *
vtpm_client_reply_body(const vtpm_client_reply *r, size_t *len)
{
    return g_bytes_get_data(r->body, len);
}

int64_t
vtpm_client_reply_received_us(const vtpm_client_reply *r)
{
    return r->received_us;
}

int
vtpm_client_reply_result(const vtpm_client_reply *r, const void **result, size_t *len,
                         vtpm_client_fault *f)
{
    if (r->code == 0) {
        size_t n = 0;
        const void *data = g_bytes_get_data(r->result, &n);

        if (result)
            *result = data;
        if (len)
            *len = n;
        return 0;
    }
    if (!f)
        return -r->code;
    vtpm_client_fault_set(f, r->code, "%s", r->message);
    f->retryable = r->retryable;
    f->details.source = r->source;
    if (r->received_code)
        g_strlcpy(f->details.received_code, r->received_code, sizeof(f->details.received_code));
    vtpm_client_fault_where(f, NULL, NULL, NULL, r->id);
    return -r->code;
}
