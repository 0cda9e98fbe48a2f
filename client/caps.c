/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every worker can do, from one broadcast: a scheduler's view of the
 * hosts (the announcements on capabilities.<host> are the other way).
 */
#include "client/private.h"

#define MAX_WINDOW_MS 3600000

struct vtpm_client_replies {
    GPtrArray *replies; /* vtpm_client_reply *, one per host, in order of arrival */
    GPtrArray *hosts;   /* char *: the host of each */
    GHashTable *seen;   /* the hosts (hosts' strings) */
};

void
vtpm_client_replies_free(vtpm_client_replies *l)
{
    if (!l)
        return;
    g_hash_table_unref(l->seen);
    g_ptr_array_unref(l->replies);
    g_ptr_array_unref(l->hosts);
    g_free(l);
}

size_t
vtpm_client_replies_count(const vtpm_client_replies *l)
{
    return l->replies->len;
}

const vtpm_client_reply *
vtpm_client_replies_get(const vtpm_client_replies *l, size_t i)
{
    return i < l->replies->len ? g_ptr_array_index(l->replies, i) : NULL;
}

const char *
vtpm_client_replies_host(const vtpm_client_replies *l, size_t i)
{
    return i < l->hosts->len ? g_ptr_array_index(l->hosts, i) : NULL;
}

/* Keep @r if it is the first ok reply of its host. */
static void
add(vtpm_client_replies *l, vtpm_client_reply *r)
{
    char *host = vtpm_client_reply_caps_host(r);

    if (!host || g_hash_table_contains(l->seen, host)) {
        g_free(host);
        vtpm_client_reply_free(r);
        return;
    }
    g_hash_table_add(l->seen, host);
    g_ptr_array_add(l->hosts, host);
    g_ptr_array_add(l->replies, r);
}

/* The replies to broadcast @id until @end_us. */
static int
collect(vtpm_client *c, const char *id, gint64 end_us, vtpm_client_replies *l,
        vtpm_client_fault *f)
{
    for (;;) {
        gint64 left_ms = (end_us - g_get_monotonic_time()) / 1000;
        vtpm_client_reply *r = NULL;
        int rc;

        if (left_ms <= 0)
            return 0;
        if ((rc = vtpm_client_wait(c, id, (int)left_ms, &r, f)) == 1)
            return 0;
        if (rc < 0)
            return rc;
        add(l, r);
    }
}

int
vtpm_client_capabilities_all(vtpm_client *c, int window_ms, vtpm_client_replies **out,
                             vtpm_client_fault *f)
{
    g_autoptr(vtpm_client_replies) l = NULL;
    char id[VTPM_CLIENT_ID_MAX];
    gint64 end_us;
    int rc;

    if (!c || !out)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "%s: NULL",
                                     !c ? "client" : "out");
    if (window_ms < 1 || window_ms > MAX_WINDOW_MS)
        return vtpm_client_fault_set(f, VTPM_FAULT_BAD_REQUEST, "window_ms: %d is not in 1..%d",
                                     window_ms, MAX_WINDOW_MS);
    if ((rc = vtpm_client_fanout_send(c, "get_capabilities", NULL, 0, NULL, id, f)) < 0)
        return rc;
    end_us = g_get_monotonic_time() + (gint64)window_ms * 1000;
    l = g_new0(vtpm_client_replies, 1);
    l->replies = g_ptr_array_new_with_free_func((GDestroyNotify)vtpm_client_reply_free);
    l->hosts = g_ptr_array_new_with_free_func(g_free);
    l->seen = g_hash_table_new(g_str_hash, g_str_equal);
    rc = collect(c, id, end_us, l, f);
    /* In ALL_REPLIES mode there is nothing to cancel: the rest is the
     * caller's to read. */
    vtpm_client_cancel(c, id, NULL);
    if (rc < 0)
        return rc;
    *out = g_steal_pointer(&l);
    return 0;
}
