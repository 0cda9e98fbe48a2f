/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archives in libvirt storage pools: the incoming pool of a destination
 * host (cold migration) and the shelve store.  Everything goes through a
 * libvirt connection the operator configured (storage volume upload and
 * download over streams), so state never leaves a host by another path.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"

/* Largest volume a download accepts (an archive is far smaller). */
#define VTPM_STORE_MAX_VOLUME (64u * 1024 * 1024)

typedef struct vtpm_virt vtpm_virt;

/* A connection to the state store at @uri: the local libvirt @local's
 * shared connection when @uri is NULL or its own URI, else a connection
 * of its own.  StateTransferFailed when the store cannot be reached. */
int vtpm_store_open(vtpm_virt *local, const char *uri, virConnectPtr *out, vtpm_error *err);

/*
 * Make sure a directory pool @name exists on @conn and is active: define
 * it with target @dir (created with mode 0700) if missing, build, start,
 * and mark it autostart.  An existing pool of that name is used as it is.
 */
int vtpm_store_ensure_pool(virConnectPtr conn, const char *name, const char *dir,
                           vtpm_error *err);

/*
 * Write @data as volume @vol of pool @pool (raw, exact size).  An existing
 * volume with the same name is replaced (delete + create), so a retried
 * upload converges.  Then it is read back and compared byte for byte
 * (StateTransferFailed on any mismatch or error).
 */
int vtpm_store_put(virConnectPtr conn, const char *pool, const char *vol, GBytes *data,
                   vtpm_error *err);

/* Read volume @vol of @pool.  StateNotFound when the pool has no such
 * volume; StateTransferFailed on stream errors; StateIntegrity when it is
 * larger than VTPM_STORE_MAX_VOLUME. */
int vtpm_store_get(virConnectPtr conn, const char *pool, const char *vol, GBytes **out,
                   vtpm_error *err);

/* Delete volume @vol of @pool; a missing volume (or pool) is success. */
int vtpm_store_delete(virConnectPtr conn, const char *pool, const char *vol, vtpm_error *err);

/* The names of the volumes of @pool that start with @prefix, sorted
 * (strcmp); an empty array when the pool does not exist.  The pool is
 * refreshed first, so volumes written by other hosts are seen.  Faults:
 * BadRequest for a bad pool name, StateTransferFailed otherwise. */
int vtpm_store_list(virConnectPtr conn, const char *pool, const char *prefix, GPtrArray **out,
                    vtpm_error *err);

/* Whether the volume exists (a missing pool counts as "no"). */
int vtpm_store_exists(virConnectPtr conn, const char *pool, const char *vol, bool *out,
                      vtpm_error *err);
