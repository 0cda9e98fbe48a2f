/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The checkpointer: keeps a checkpoint of every TPM on this host in the
 * state store (ops/checkpoint.h; docs/lifecycle.md, "Checkpoints and
 * evacuation"), after every state-moving operation and every [store]
 * checkpoint_interval seconds for a TPM whose state changed.
 *
 * Who does what:
 *  - the dispatcher (worker/dispatch.c) runs the snapshots as internal
 *    jobs through each instance's queue, so that a snapshot never races an
 *    operation moving the same state: right after such an operation
 *    (forced), and for the instances vtpm_checkpointer_due() names;
 *  - this module's own thread uploads the snapshots, outside any
 *    instance's slot (a slow or dead store holds nothing but this thread),
 *    one at a time, the newest snapshot of an instance replacing an older
 *    one not yet sent; every interval it names the instances due, checks
 *    those whose ownership is in doubt, retries the removals destroy could
 *    not make, and now and then prunes generation records.
 *
 * A checkpoint that fails is logged, counted (worker/metrics.h), and
 * tried again at the next interval: the state counts as changed until an
 * upload of it succeeds.  The instance itself is never touched by it.
 */
#pragma once

#include <glib.h>

#include "vtpm/error.h"
#include "worker.h"

/*
 * Start checkpointing for @w.  First, before anything is served, every
 * instance of this host is judged against the ownership records: a host
 * that comes back fences what was evacuated away and removes it once the
 * new owner is confirmed (ops/fencing.h); a store out of reach leaves that
 * to the thread.  *out is NULL when checkpoints are off ([store] uri unset
 * or checkpoint_interval 0; logged).  Internal when the thread cannot
 * start.
 */
int vtpm_checkpointer_start(vtpm_worker *w, vtpm_checkpointer **out, vtpm_error *err);
/* Stop and join the thread (an upload in progress ends first; snapshots
 * not yet sent are dropped: the next vtpmd finds their state changed).
 * Accepts NULL. */
void vtpm_checkpointer_stop(vtpm_checkpointer *c);

/* The I/O thread, on every wake-up: the instances whose slot the
 * checkpointer asks for (canonical UUIDs; empty most of the time).  Takes
 * a lock for a moment, never waits on I/O. */
GPtrArray *vtpm_checkpointer_due(vtpm_checkpointer *c);

/* A pool thread, in @uuid's slot: settle a stale copy, or take a snapshot
 * and queue it for upload: when the state changed (@after NULL), or
 * whatever it is (@after: the method that just moved it).  Never fails:
 * what goes wrong is logged and counted. */
void vtpm_checkpointer_slot(vtpm_checkpointer *c, const char *uuid, const char *after);

/* In @uuid's slot, when destroy removes the instance from this host: no
 * snapshot of it pending or being sent, and its checkpoints and ownership
 * record deleted from the store when they are this host's; a store out of
 * reach is retried at every interval.  Accepts NULL (checkpoints off). */
void vtpm_checkpointer_drop(vtpm_checkpointer *c, const char *uuid);
