/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A host that comes back after its instances were evacuated (docs/
 * lifecycle.md, "Checkpoints and evacuation"): its copy of each such TPM
 * is older than the one the new host runs.  The ownership record
 * (ops/ownership.h) tells: it names another host, with a generation newer
 * than any this host saw.  Such a copy is fenced at once (never started
 * again, ops/generation.h) and removed, domain, state, key and all, once
 * the new owner is confirmed: its libvirt has the domain.  Until then, or
 * while the stale domain runs (an evacuation with fenced: true of a host
 * that was not dead), it stays, fenced.
 *
 * The same records let a host drop the generation records of instances
 * that left it: the fleet-wide record guards them from then on.
 */
#pragma once

#include <stdbool.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"
#include "worker.h"

typedef enum {
    VTPM_FENCE_CURRENT, /* this host's copy is the live one, as far as the store says */
    VTPM_FENCE_STALE,   /* evacuated away: fenced here; the new owner is not confirmed yet */
    VTPM_FENCE_RUNNING, /* evacuated away, fenced, but the stale domain runs here (an
                         * evacuation with fenced: true of a host that lived): left alone
                         * until it stops */
    VTPM_FENCE_REMOVED, /* evacuated away and confirmed: nothing of it is left here */
} vtpm_fence_verdict;

/* Judge this host's copy of instance @uuid against the ownership record
 * on @sconn, fencing and removing a stale one.  *owner (may be NULL) gets
 * the owning host when the verdict is not CURRENT. */
int vtpm_fence_reconcile(vtpm_worker *w, virConnectPtr sconn, const char *uuid,
                         vtpm_fence_verdict *out, char **owner, vtpm_error *err);

/* Drop the generation record of every instance that left this host (no
 * domain, no state, no kept copy) whose ownership record names another
 * host with a generation at least as new; *pruned counts them. */
int vtpm_fence_prune_generations(vtpm_worker *w, virConnectPtr sconn, unsigned *pruned,
                                 vtpm_error *err);
