/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ownership records: which host an instance's TPM lives on, as the state
 * store ([store] uri, checkpoint_pool) sees it, with the newest generation
 * of its TPM state that host has checkpointed (docs/lifecycle.md,
 * "Checkpoints and evacuation").  One record per instance, for the whole
 * fleet, and so the fleet-wide rollback guard (docs/security.md,
 * "Rollback: generations"): a host writes checkpoints of an instance only
 * while the record names it, or names a generation its own state descends
 * from; a host whose copy of an instance is older than the record of
 * another host knows the instance was evacuated away from it.
 *
 * A record is a volume "<uuid>.owner-<generation>" holding
 * {"format": 1, "instance": ..., "host": ..., "generation": ..., "written_ms": ...}.
 * A new record is written before the older ones are deleted, so that a
 * reader always finds one; the newest generation wins.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"
#include "worker.h"

typedef struct {
    char *host;          /* NULL: there is no record */
    uint64_t generation; /* the newest generation that host checkpointed or claimed */
    int64_t written_ms;  /* Unix ms of the record */
} vtpm_owner;

/* Whether this host keeps checkpoints and ownership records: [store] uri
 * is set (a store other hosts reach) and [store] checkpoint_interval is
 * not 0. */
bool vtpm_owner_enabled(const vtpm_worker *w);

void vtpm_owner_clear(vtpm_owner *o);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_owner, vtpm_owner_clear)

/* The newest readable record of @uuid on @sconn (out->host NULL when none).
 * StateTransferFailed when the store cannot be read. */
int vtpm_owner_read(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_owner *out,
                    vtpm_error *err);
/* The same through a connection of its own to [store] uri. */
int vtpm_owner_read_store(vtpm_worker *w, const char *uuid, vtpm_owner *out, vtpm_error *err);

/* Record that this host owns @uuid at generation @gen; older records go. */
int vtpm_owner_write(vtpm_worker *w, virConnectPtr sconn, const char *uuid, uint64_t gen,
                     vtpm_error *err);
/* Delete every record of @uuid (none is fine). */
int vtpm_owner_drop(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_error *err);

/* A record of this host owning @uuid at generation @gen, as written. */
char *vtpm_owner_format(vtpm_worker *w, const char *uuid, uint64_t gen);
/* Parse @text into *out: false (and *out untouched) when it is not a
 * record of @uuid at generation @gen (the one its volume name says). */
bool vtpm_owner_parse(const char *text, size_t len, const char *uuid, uint64_t gen,
                      vtpm_owner *out);

/* Whether this host, whose state of the instance descends from generation
 * @base (the newest it had made or restored before), may write a record
 * over @cur: there is none, it names this host, or a generation @base
 * includes. */
bool vtpm_owner_may_claim(vtpm_worker *w, const vtpm_owner *cur, uint64_t base);

/* Whether @cur says the instance lives on another host with a state newer
 * than any this host has seen (@last: vtpm_generation_last): this host's
 * copy is stale, the instance was evacuated away. */
bool vtpm_owner_moved_away(vtpm_worker *w, const vtpm_owner *cur, uint64_t last);
