/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The harness's calls (harness.h, "calls"): through the message level of
 * libvtpmclient (client/msg.h), which sends what a suite asks for, however
 * wrong, and shows replies as they arrived.  A file of its own: the rest of
 * the harness uses only <vtpm/client.h>, so a suite of the public library
 * (test_client) links it with libvtpmclient.so and without this.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

/* ---- calls ------------------------------------------------------------- */

static vtpm_client *shared_client;

vtpm_client *
vt_client_new(void)
{
    vtpm_client_options p = { .url = vt_env("VT_AMQP_URL") };
    vtpm_client *c = NULL;
    vtpm_error err = { 0 };

    /* Right after a broker restart the port may need a moment. */
    for (int i = 0; i < 100; i++) {
        if (vtpm_client_msg_connect(&p, &c, &err) == 0)
            return c;
        g_usleep(200 * 1000);
    }
    fail_msg("cannot connect a client to the broker: %s", err.message);
    return NULL;
}

vtpm_client *
vt_client(void)
{
    if (!shared_client)
        shared_client = vt_client_new();
    return shared_client;
}

void
vt_client_drop(void)
{
    g_clear_pointer(&shared_client, vtpm_client_free);
}

void
vt_reply_free(vt_reply *r)
{
    if (!r)
        return;
    vtpm_client_msg_free(r->msg);
    vtpm_reply_free(r->rep);
    g_free(r);
}

vt_reply *
vt_reply_decode(vtpm_client_msg *m)
{
    vt_reply *r = g_new0(vt_reply, 1);
    vtpm_proto_limits lim;
    vtpm_error err = { 0 };

    r->msg = m;
    vtpm_proto_limits_init(&lim);
    if (!m->body || vtpm_proto_decode_reply(g_bytes_get_data(m->body, NULL),
                                            g_bytes_get_size(m->body), &lim, &r->rep, &err) < 0) {
        r->rep = NULL;
        g_strlcpy(r->error, m->body ? err.message : "no body", sizeof(r->error));
    }
    return r;
}

vt_reply *
vt_recv_reply(const char *corr, int timeout_ms, const char *what)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vtpm_error err = { 0 };

    for (;;) {
        vtpm_client_msg *m = NULL;
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        int rc = left > 0 ? vtpm_client_msg_recv(vt_client(), (int)left, &m, &err) : 1;

        if (rc < 0) {
            vt_client_drop();
            fail_msg("%s: waiting for the reply: %s", what, err.message);
        }
        if (rc > 0)
            fail_msg("%s: no reply within %d ms of the restarted vtpmd (the redelivered "
                     "request never completed)", what, timeout_ms);
        if (m->correlation_id && strcmp(m->correlation_id, corr) == 0)
            return vt_reply_decode(m);
        vtpm_client_msg_free(m);
    }
}

/* The call, and its reply; @d (NULL: unknown) is the vtpmd called, whose
 * log says what it was doing when no reply came. */
static vt_reply *
call_body(const vt_vtpmd *d, const char *routing_key, const char *what, const void *body,
          size_t len, int timeout_ms)
{
    vtpm_client_msg *m = NULL;
    vtpm_error err = { 0 };
    int rc = vtpm_client_msg_call(vt_client(), routing_key, body, len, timeout_ms, &m, &err);

    if (rc < 0) {
        vt_client_drop();
        fail_msg("%s to %s: %s", what, routing_key, err.message);
    }
    if (rc > 0) {
        if (d)
            vt_vtpmd_dump(d);
        fail_msg("%s to %s (%zu-byte body): no reply within %d ms%s", what, routing_key, len,
                 timeout_ms, d ? " (its log above)" : "");
    }
    return vt_reply_decode(m);
}

vt_reply *
vt_call_body(const char *routing_key, const void *body, size_t len, int timeout_ms)
{
    return call_body(NULL, routing_key, "call", body, len, timeout_ms);
}

vt_reply *
vt_call_bytes(const char *routing_key, GBytes *body, int timeout_ms)
{
    return vt_call_body(routing_key, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                        timeout_ms);
}

vt_reply *
vt_call(const vt_vtpmd *d, const char *method, GBytes *args, int timeout_ms)
{
    g_autofree char *rid = g_strdup_printf("req-%s", method);
    g_autoptr(GBytes) body = vt_request(method, args, rid, 0);

    return call_body(d, d->routing_key, method, g_bytes_get_data(body, NULL),
                     g_bytes_get_size(body), timeout_ms);
}

const char *
vt_reply_summary(const vt_reply *r)
{
    static char buf[1024];

    if (!r)
        g_snprintf(buf, sizeof(buf), "(no reply)");
    else if (!r->rep)
        g_snprintf(buf, sizeof(buf), "(undecodable reply: %s)", r->error);
    else if (r->rep->ok)
        g_snprintf(buf, sizeof(buf), "ok");
    else
        g_snprintf(buf, sizeof(buf), "%s%s: %s", r->rep->fault_code,
                   r->rep->retryable ? " (retryable)" : "", r->rep->fault_message);
    return buf;
}

vt_reply *
vt_call_ok(const vt_vtpmd *d, const char *method, GBytes *args, int timeout_ms,
           const char *what)
{
    vt_reply *r = vt_call(d, method, args, timeout_ms);

    g_bytes_unref(args);
    if (!r->rep || !r->rep->ok) {
        g_autofree char *msg = g_strdup_printf("%s (%s on host %s): expected ok, got %s", what,
                                               method, d->lv_host, vt_reply_summary(r));

        vt_reply_free(r);
        fail_msg("%s", msg);
    }
    return r;
}

void
vt_assert_res_str(const vt_reply *r, const char *path, const char *want, const char *what)
{
    g_autofree char *got = vt_obj_str(&r->rep->result, path);

    if (g_strcmp0(got, want) != 0)
        fail_msg("%s: result.%s should be \"%s\", got %s%s%s", what, path, want,
                 got ? "\"" : "", got ? got : "nothing", got ? "\"" : "");
}

void
vt_assert_ok(const vt_reply *r, const char *what)
{
    if (!r || !r->rep || !r->rep->ok)
        fail_msg("%s: expected ok, got %s", what, vt_reply_summary(r));
}

static void
assert_fault(const vt_reply *r, vtpm_fault code, const char *fragment, bool retryable,
             const char *what)
{
    if (!r || !r->rep)
        fail_msg("%s: expected fault %s, got %s", what, vtpm_fault_name(code),
                 vt_reply_summary(r));
    if (r->rep->ok)
        fail_msg("%s: expected fault %s, got ok", what, vtpm_fault_name(code));
    if (r->rep->fault != code || g_strcmp0(r->rep->fault_code, vtpm_fault_name(code)) != 0)
        fail_msg("%s: expected fault %s, got %s", what, vtpm_fault_name(code),
                 vt_reply_summary(r));
    if (fragment && !strstr(r->rep->fault_message ? r->rep->fault_message : "", fragment))
        fail_msg("%s: fault message should contain \"%s\", got %s", what, fragment,
                 vt_reply_summary(r));
    if (r->rep->retryable != retryable)
        fail_msg("%s: %s%s must have retryable=%s (docs/protocol.md), got %s", what,
                 retryable == vtpm_fault_retryable(code) ? "" : "a final ",
                 vtpm_fault_name(code), retryable ? "true" : "false", vt_reply_summary(r));
}

void
vt_assert_fault(const vt_reply *r, vtpm_fault code, const char *fragment, const char *what)
{
    assert_fault(r, code, fragment, vtpm_fault_retryable(code), what);
}

void
vt_assert_final_fault(const vt_reply *r, vtpm_fault code, const char *fragment, const char *what)
{
    assert_fault(r, code, fragment, false, what);
}
