/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A reply is decoded once, when it is received, and what it says never
 * changes after: any thread may read it, and it keeps nothing of its
 * client.  The packed result is made only when asked for (most callers of
 * a load generator never look at it), once, under g_once.
 */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "client/private.h"

struct vtpm_client_reply {
    char *id;
    GBytes *body;
    vtpm_reply *rep;       /* NULL when the body is no valid reply */
    char *invalid;         /* then: why */
    GBytes *result;        /* the packed result map, made on first use */
    gsize result_once;
    int64_t received_us;
};

void
vtpm_client_reply_free(vtpm_client_reply *r)
{
    if (!r)
        return;
    g_free(r->id);
    g_bytes_unref(r->body);
    vtpm_reply_free(r->rep);
    g_free(r->invalid);
    if (r->result)
        g_bytes_unref(r->result);
    g_free(r);
}

vtpm_client_reply *
vtpm_client_reply_new(vtpm_client_msg *m, const vtpm_proto_limits *lim)
{
    vtpm_client_reply *r = g_new0(vtpm_client_reply, 1);
    vtpm_error err = { 0 };

    r->id = g_steal_pointer(&m->correlation_id);
    r->body = g_steal_pointer(&m->body);
    r->received_us = m->received_us;
    vtpm_client_msg_free(m);
    if (vtpm_proto_decode_reply(g_bytes_get_data(r->body, NULL), g_bytes_get_size(r->body), lim,
                                &r->rep, &err) < 0) {
        r->rep = NULL;
        r->invalid = g_strdup_printf("reply: %s", err.message);
    }
    return r;
}

char *
vtpm_client_reply_caps_host(const vtpm_client_reply *r)
{
    char *host = NULL;

    /* Only get_capabilities results have it; a wrong type is no host. */
    if (r->rep && r->rep->ok)
        vtpm_proto_get_str(&r->rep->result, "result", "host", false, VTPM_CLIENT_ID_MAX - 1,
                           &host, NULL);
    return host;
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

/* The result map packed: made once, whichever thread asks first. */
static GBytes *
packed_result(const vtpm_client_reply *r)
{
    vtpm_client_reply *w = (vtpm_client_reply *)r;

    if (g_once_init_enter(&w->result_once)) {
        w->result = pack_object(&r->rep->result);
        g_once_init_leave(&w->result_once, 1);
    }
    return r->result;
}

/* @f from what the reply says: the worker's fault, or why it is none. */
static int
reply_fault(const vtpm_client_reply *r, vtpm_client_fault *f)
{
    const vtpm_reply *rep = r->rep;

    if (!rep) {
        vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s", r->invalid);
    } else {
        vtpm_client_fault_set(f, rep->fault, "%s", rep->fault_message);
        f->retryable = rep->retryable;
        f->details.source = VTPM_CLIENT_SOURCE_WORKER;
        if (vtpm_fault_from_name(rep->fault_code) < 0)
            g_strlcpy(f->details.received_code, rep->fault_code,
                      sizeof(f->details.received_code));
    }
    vtpm_client_fault_where(f, NULL, NULL, NULL, r->id);
    return -f->code;
}

int
vtpm_client_reply_result(const vtpm_client_reply *r, const void **result, size_t *len,
                         vtpm_client_fault *f)
{
    if (!r)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "reply: NULL");
    if (r->rep && r->rep->ok) {
        size_t n = 0;
        const void *data = result || len ? g_bytes_get_data(packed_result(r), &n) : NULL;

        if (result)
            *result = data;
        if (len)
            *len = n;
        return 0;
    }
    if (!f)
        return r->rep ? -(int)r->rep->fault : -(int)VTPM_FAULT_BAD_REQUEST;
    return reply_fault(r, f);
}
