/* SPDX-License-Identifier: Apache-2.0 */
#include "pool.h"

struct vtpm_pool {
    char *name;
    unsigned max_threads;
    void (*fn)(void *item, void *user);
    void *user;
    GAsyncQueue *queue;  /* items, then one stop marker per thread */
    GPtrArray *threads;  /* GThread *, joinable; the pushing thread only */
};

/* Never a pushed item: vtpm_pool_push refuses NULL. */
static char stop_marker;

static gpointer
pool_thread(gpointer data)
{
    vtpm_pool *p = data;
    void *item;

    while ((item = g_async_queue_pop(p->queue)) != &stop_marker)
        p->fn(item, p->user);
    return NULL;
}

int
vtpm_pool_new(const char *name, unsigned max_threads, void (*fn)(void *item, void *user),
              void *user, vtpm_pool **out, vtpm_error *err)
{
    vtpm_pool *p;

    if (max_threads == 0 || !fn)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "pool: no threads or no function");
    p = g_new0(vtpm_pool, 1);
    p->name = g_strdup(name);
    p->max_threads = max_threads;
    p->fn = fn;
    p->user = user;
    p->queue = g_async_queue_new();
    p->threads = g_ptr_array_new();
    *out = p;
    return 0;
}

int
vtpm_pool_push(vtpm_pool *p, void *item, vtpm_error *err)
{
    g_autoptr(GError) gerr = NULL;
    GThread *t;

    if (!item)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "pool: no item");
    g_async_queue_push(p->queue, item);
    /* The length is items minus threads waiting for one: above 0, no idle
     * thread is left for this item.  Threads are started only as needed,
     * so an idle vtpmd with workers = 256 does not hold 256 stacks. */
    if (g_async_queue_length(p->queue) <= 0 || p->threads->len >= p->max_threads)
        return 0;
    t = g_thread_try_new(p->name, pool_thread, p, &gerr);
    if (t) {
        g_ptr_array_add(p->threads, t);
        return 0;
    }
    if (p->threads->len > 0)
        return 0; /* the running threads take it in turn */
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "pool: cannot start a thread: %s",
                          gerr->message);
}

GPtrArray *
vtpm_pool_take_queued(vtpm_pool *p)
{
    GPtrArray *items = g_ptr_array_new();
    void *item;

    while ((item = g_async_queue_try_pop(p->queue)))
        g_ptr_array_add(items, item);
    return items;
}

void
vtpm_pool_free(vtpm_pool *p)
{
    if (!p)
        return;
    /* Behind what is queued: the threads finish it first. */
    for (guint i = 0; i < p->threads->len; i++)
        g_async_queue_push(p->queue, &stop_marker);
    for (guint i = 0; i < p->threads->len; i++)
        g_thread_join(g_ptr_array_index(p->threads, i));
    g_ptr_array_free(p->threads, TRUE);
    g_async_queue_unref(p->queue);
    g_free(p->name);
    g_free(p);
}
