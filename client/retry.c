/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Retrying is safe because every attempt carries the same message_id: a
 * worker that ran the request already answers from its reply cache, one
 * that is still running it answers the repeat with that run's reply.
 */
#include <string.h>

#include "client/private.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_BACKOFF_MS 500
#define DEFAULT_MAX_BACKOFF_MS 10000
#define JITTER 0.2

typedef struct {
    gint64 end_us;        /* replies are awaited until then (monotonic) */
    gint64 last_start_us; /* no attempt starts after it */
    int attempt_ms;       /* 0: all the time left */
    double pause_ms;
    int max_pause_ms;
} schedule;

static int
make_schedule(const vtpm_client_call_opts *o, const vtpm_client_retry_opts *r, schedule *s,
              vtpm_client_fault *f)
{
    gint64 now = g_get_monotonic_time();
    int timeout = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;

    if (r->attempt_timeout_ms < 0 || r->backoff_ms < 0 || r->max_backoff_ms < 0)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: negative",
                                     r->attempt_timeout_ms < 0 ? "attempt_timeout_ms"
                                     : r->backoff_ms < 0       ? "backoff_ms"
                                                               : "max_backoff_ms");
    *s = (schedule){
        .end_us = now + (gint64)timeout * 1000,
        .attempt_ms = r->attempt_timeout_ms,
        .pause_ms = r->backoff_ms ? r->backoff_ms : DEFAULT_BACKOFF_MS,
        .max_pause_ms = r->max_backoff_ms ? r->max_backoff_ms : DEFAULT_MAX_BACKOFF_MS,
    };
    s->last_start_us = s->end_us;
    if (o->deadline_ms) {
        /* The deadline is on the wall clock; the schedule runs on the
         * monotonic one. */
        gint64 left_us = ((gint64)o->deadline_ms - g_get_real_time() / 1000) * 1000;

        s->last_start_us = MIN(s->last_start_us, now + left_us);
    }
    return 0;
}

/* The next pause, in microseconds, varied at random; -1 when it would
 * reach past the last start. */
static gint64
next_pause(schedule *s)
{
    gint64 pause_us = (gint64)(s->pause_ms * g_random_double_range(1 - JITTER, 1 + JITTER) * 1000);

    s->pause_ms = MIN(s->pause_ms * 2, (double)s->max_pause_ms);
    if (g_get_monotonic_time() + pause_us >= s->last_start_us)
        return -1;
    return pause_us;
}

static int
attempt_timeout(const schedule *s)
{
    gint64 left_ms = (s->end_us - g_get_monotonic_time()) / 1000;

    left_ms = MAX(left_ms, 1);
    return (int)(s->attempt_ms ? MIN(left_ms, s->attempt_ms) : left_ms);
}

/* One message_id and request_id for every attempt: the caller's, or new. */
static void
fix_ids(vtpm_client_call_opts *a, char *mid, char *rid)
{
    g_autofree char *uuid = g_uuid_string_random();

    if (!a->message_id) {
        g_strlcpy(mid, uuid, VTPM_CLIENT_ID_MAX);
        a->message_id = mid;
    }
    if (!a->request_id) {
        g_snprintf(rid, VTPM_CLIENT_ID_MAX, "req-%s", uuid);
        a->request_id = rid;
    }
}

int
vtpm_client_call_with_retry(vtpm_client *c, const char *host, const char *method,
                            const void *args, size_t len, const vtpm_client_call_opts *o,
                            const vtpm_client_retry_opts *r, vtpm_client_reply **out,
                            vtpm_client_fault *f)
{
    static const vtpm_client_call_opts no_opts = { 0 };
    static const vtpm_client_retry_opts no_retry = { 0 };
    vtpm_client_call_opts a = o ? *o : no_opts;
    char mid[VTPM_CLIENT_ID_MAX], rid[VTPM_CLIENT_ID_MAX];
    vtpm_client_fault last;
    schedule s = { 0 };
    unsigned attempts = 0;
    int rc;

    if ((rc = make_schedule(&a, r ? r : &no_retry, &s, f)) < 0)
        return rc;
    fix_ids(&a, mid, rid);
    for (;;) {
        gint64 pause_us;

        a.timeout_ms = attempt_timeout(&s);
        attempts++;
        rc = vtpm_client_call(c, host, method, args, len, &a, out, &last);
        if (rc == 0)
            memset(&last, 0, sizeof(last));
        last.details.attempts = attempts;
        if (rc == 0 || !last.retryable || (pause_us = next_pause(&s)) < 0)
            break;
        g_usleep((gulong)pause_us);
    }
    if (f)
        *f = last;
    return rc;
}
