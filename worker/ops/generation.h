/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Generation records.  Every archive carries a generation that grows with
 * every archive made of the instance.  Each host remembers the newest
 * generation it has made or restored per instance (<[store]
 * kept_dir>/generations/<uuid>), and refuses to restore an older one
 * (StateIntegrity) unless the caller passes force: true: an old shelved
 * archive restored over a newer TPM would roll back its counters, NV
 * indices and keys (docs/security.md).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vtpm/error.h"
#include "archive.h"
#include "worker.h"

/* The newest generation this host remembers for @uuid; 0 when none. */
uint64_t vtpm_generation_last(vtpm_worker *w, const char *uuid);
/* Remember @gen when it is newer than what is remembered. */
int vtpm_generation_record(vtpm_worker *w, const char *uuid, uint64_t gen, vtpm_error *err);
/* Drop the newest generation this host remembers for the instance (after
 * a destroy nothing of it may be restored here that the record protects). */
void vtpm_generation_forget(vtpm_worker *w, const char *uuid);
/* Before a restore: refuse an archive older than what this host saw
 * (@what names it in the fault), unless @force.  A host without a record
 * of its own (never saw the instance, or pruned it) asks the fleet-wide
 * ownership record (ops/ownership.h) when checkpoints are on; a store it
 * cannot reach leaves the local answer. */
int vtpm_generation_check(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am,
                          bool force, const char *what, vtpm_error *err);
/* The instances this host keeps a record of (canonical UUIDs). */
GPtrArray *vtpm_generation_list(vtpm_worker *w);

/*
 * Fences: this host's copy of an instance is stale, because the instance
 * was evacuated to @owner, which holds generation @gen (newer than any
 * this host saw).  A fenced TPM is never started here (vtpm_ops_start:
 * InstanceConflict, final) until its domain and state are removed.
 */
int vtpm_generation_fence(vtpm_worker *w, const char *uuid, const char *owner, uint64_t gen,
                          vtpm_error *err);
/* InstanceConflict (final), naming the owner, when @uuid is fenced. */
int vtpm_generation_check_fence(vtpm_worker *w, const char *uuid, vtpm_error *err);
void vtpm_generation_unfence(vtpm_worker *w, const char *uuid);
