/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request path between the AMQP I/O thread and the worker pool:
 * decode and validate -> answer duplicates from the cache -> pick the
 * handler -> serialize per instance -> run in the pool -> hand the reply
 * back to the I/O thread, which publishes it and then acks.
 *
 * All bookkeeping (dedupe cache, in-flight and per-instance queues) is
 * owned by the I/O thread: jobs only come back to it through
 * vtpm_broker_post_call, so none of it needs a lock.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vtpm/error.h"
#include "broker.h"
#include "worker.h"

typedef struct vtpm_dispatch vtpm_dispatch;

int vtpm_dispatch_new(vtpm_worker *w, unsigned workers, size_t dedupe_size,
                      vtpm_dispatch **out, vtpm_error *err);
/* Waits for the pool to finish.  Accepts NULL. */
void vtpm_dispatch_free(vtpm_dispatch *d);

/* Fills the callbacks that connect @d to a vtpm_broker. */
void vtpm_dispatch_callbacks(vtpm_dispatch *d, vtpm_broker_callbacks *cb);
void vtpm_dispatch_set_amqp(vtpm_dispatch *d, vtpm_broker *a);

/* Thread-safe (the signal thread).  Begin the drain: stop the broker's
 * consumers, and hand every request taken but not started back to its
 * queue for the next vtpmd of the host (a broadcast, whose queue goes
 * with this process, is answered Busy); those running finish. */
void vtpm_dispatch_stop(vtpm_dispatch *d);

/* True when no request is running or queued (drain check for SIGTERM). */
bool vtpm_dispatch_drained(void *d);
