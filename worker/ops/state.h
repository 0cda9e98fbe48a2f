/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where an instance's TPM state lives besides its state dir, and how it
 * moves: the archive of the state (worker/archive.h) packed with its
 * domain definition, the kept copy a migration source holds until confirm
 * or revert, the transfer and shelve volumes, and the restore that swaps
 * an archive's state in whole.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "archive.h"
#include "policy.h"
#include "virt.h"
#include "worker.h"

/* The migration source's copy of the state: <[store] kept_dir>/<uuid>.tar */
char *vtpm_state_kept_path(vtpm_worker *w, const char *uuid);
/* Its bytes; StateNotFound when there is none. */
int vtpm_state_read_kept(vtpm_worker *w, const char *uuid, GBytes **out, vtpm_error *err);
/* Whether there is one: a migration or resize from here that is not
 * confirmed or reverted yet. */
bool vtpm_state_has_kept(vtpm_worker *w, const char *uuid);
/* Remove it; none is fine. */
int vtpm_state_drop_kept(vtpm_worker *w, const char *uuid, vtpm_error *err);
/* The state's volume in the incoming and shelve pools: <uuid>.vtpm.tar */
char *vtpm_state_volume_name(const char *uuid);

/* Replace the instance's state dir with the archive's contents. */
int vtpm_state_restore(vtpm_worker *w, const char *uuid, GBytes *archive, vtpm_error *err);
/* The archive of the instance's current state plus what is needed to
 * recreate its domain (its @extra manifest fields added); records its
 * generation. */
int vtpm_state_pack(vtpm_worker *w, virDomainPtr dom, const char *uuid, const vtpm_device *dev,
                    const char *reason, GHashTable *extra, GBytes **out, vtpm_error *err);
/* Whether the archive carries TPM state (not manifest-only). */
bool vtpm_state_has_tpm(const vtpm_archive_meta *m);

/* The store pool @pool on @conn, created under [store] pool_dir if missing. */
int vtpm_state_ensure_pool(vtpm_worker *w, virConnectPtr conn, const char *pool,
                           vtpm_error *err);
/* @key: nil, or {ref?, bytes, sha256} of @archive. */
void vtpm_state_pack_transfer(msgpack_packer *pk, const char *key, GBytes *archive,
                              const char *ref);
/* Optional {bytes, sha256} the caller passes back (@map, named @where):
 * StateIntegrity when @archive does not match. */
int vtpm_state_check_expected(const msgpack_object *map, const char *where, GBytes *archive,
                              vtpm_error *err);
