/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The worker pool: at most N threads running one function over queued
 * items, started as work arrives.  Unlike GThreadPool, whose threads
 * outlive the pool in GLib's shared set of idle threads (and are still
 * alive when the process exits), these threads are the pool's own and
 * vtpm_pool_free() joins every one of them.  Items that no thread has
 * taken yet can be taken back (a drain hands them to the next vtpmd).
 */
#pragma once

#include <glib.h>

#include "vtpm/error.h"

typedef struct vtpm_pool vtpm_pool;

/* @fn(item, @user) runs on a pool thread for every pushed item. */
int vtpm_pool_new(const char *name, unsigned max_threads, void (*fn)(void *item, void *user),
                  void *user, vtpm_pool **out, vtpm_error *err);

/* Queue @item (not NULL).  Push and take_queued must come from one thread
 * (the dispatcher's I/O thread).  Fails only when the pool has no thread
 * and cannot start one; @item stays queued then. */
int vtpm_pool_push(vtpm_pool *p, void *item, vtpm_error *err);

/* Remove every item no thread has started yet and return them, oldest
 * first (an empty array when there are none). */
GPtrArray *vtpm_pool_take_queued(vtpm_pool *p);

/* Run what is still queued, then stop and join every thread.  Accepts
 * NULL. */
void vtpm_pool_free(vtpm_pool *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_pool, vtpm_pool_free)
