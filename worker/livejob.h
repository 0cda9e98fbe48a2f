/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A live migration job on its source host (worker/ops/livemig.c).
 *
 * virDomainMigrate3 blocks the handler's thread for as long as the guest
 * streams, so the job runs a watcher thread of its own beside it that
 * aborts the migration (virDomainAbortJob) when its time is up or when
 * live_migration_abort asks, from another thread.  Running jobs are
 * registered by instance UUID so that the abort finds the one it stops;
 * the abort waits until the job has ended and learns whether the guest
 * stayed (aborted) or had already moved (too late to stop).
 *
 * Also here: libvirt's statistics of a completed job, and whether a
 * domain has a job at all.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"

typedef struct vtpm_livejob vtpm_livejob;

/* Register the live migration of instance @uuid (one at a time per
 * instance: the dispatcher serializes them). */
vtpm_livejob *vtpm_livejob_begin(const char *uuid);
/* Unregister it; an abort waiting for it learns @migrated.  Frees @j
 * (once no abort holds it any more). */
void vtpm_livejob_finish(vtpm_livejob *j, bool migrated);

/* Whether live_migration_abort asked this job to stop. */
bool vtpm_livejob_abort_requested(vtpm_livejob *j);

/*
 * virDomainMigrate3 on this thread, aborted after @timeout_s seconds (0:
 * never) or when an abort asks.  *out: the domain on the destination.  A
 * migration that timed out or was aborted is StateTransferFailed, one
 * libvirt refuses for this guest (storage not shared, a device it cannot
 * migrate) UnsupportedOperation, any other failure HypervisorError; the
 * message says why (the caller prefixes what was migrated).  An abort that
 * comes too late (the guest has moved) changes nothing: success.
 */
int vtpm_livejob_migrate(vtpm_livejob *j, virDomainPtr dom, virConnectPtr dconn,
                         virTypedParameterPtr params, int nparams, unsigned flags,
                         unsigned timeout_s, virDomainPtr *out, vtpm_error *err);

/*
 * Ask the live migration of @uuid to stop and wait until it has ended, at
 * most @wait_s seconds.  *found: one was registered; *aborted: it ended
 * without migrating.  HypervisorError (retryable) when it did not end in
 * time.
 */
int vtpm_livejob_abort(const char *uuid, unsigned wait_s, bool *found, bool *aborted,
                       vtpm_error *err);

/* libvirt's statistics of the last completed job of @dom (the outgoing
 * migration on a source, the incoming one on a destination), left for
 * later reads; -1 when libvirt has none. */
int vtpm_livejob_stats(virDomainPtr dom, uint64_t *total_ms, uint64_t *downtime_ms);

/* Whether @dom has a job running (1), none (0), or libvirt cannot say
 * (-1, its error on this thread). */
int vtpm_livejob_active(virDomainPtr dom);
