/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key custody (docs/security.md): how an instance's TPM state is keyed in
 * each secret security mode, and how the key follows the state between
 * domain definitions, archives and hosts.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "archive.h"
#include "domxml.h"
#include "ops/domain.h"
#include "policy.h"
#include "worker.h"

/*
 * Decide how the TPM state of @inst is keyed and rebuild d->xml with it
 * (docs/security.md).  @cont is the metadata of the TPM this definition
 * continues (the current domain's, or that of the domain in an archive);
 * NULL for a new TPM.  user: encrypted with instance.vtpm.secret (a new TPM
 * without it is SecretRequired unless [vtpm] allow_unencrypted); host: the
 * host's persistent secret, created for a new TPM (the caller fetches it
 * for a continued one first); deployment: a random secret wrapped with the
 * deployment key, re-wrapped under the current key when needed.
 */
int vtpm_custody_plan_key(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
                          vtpm_ops_domain *d, const vtpm_domxml_meta *cont, vtpm_error *err);

/* destroy(keep_vtpm) records how the kept state is keyed; a spawn that
 * adopts the state reads the record (0 with *out filled when one exists
 * for the same mode as @dev) and drops it. */
int vtpm_custody_write_kept(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m,
                            vtpm_error *err);
int vtpm_custody_read_kept(vtpm_worker *w, const char *uuid, const vtpm_device *dev,
                           vtpm_domxml_meta *out);
void vtpm_custody_drop_kept(vtpm_worker *w, const char *uuid);

/* The vtpmd metadata of the domain definition an archive carries: how the
 * TPM in it is keyed.  Zeroed (version NONE) when there is none. */
void vtpm_custody_archive_meta(const vtpm_archive_meta *am, vtpm_domxml_meta *out);
/* The extra manifest fields that say how the TPM in an archive is keyed. */
void vtpm_custody_key_extra(vtpm_worker *w, const vtpm_domxml_meta *dm, GHashTable *extra);
/* InvalidTPMConfig for a secret security change this project refuses. */
int vtpm_custody_check_mode_change(vtpm_secret_security from, vtpm_secret_security to,
                                   const char *uuid, vtpm_error *err);
/* Host mode: make sure this host has the instance's secret, fetching it
 * from @origin (the archive's "secret_host"); *fetched tells whether it
 * came from elsewhere. */
int vtpm_custody_ensure_host_secret(vtpm_worker *w, virConnectPtr conn, const char *uuid,
                                    const char *origin, bool *fetched, vtpm_error *err);
/* Remove a fetched host secret from @origin (best effort). */
void vtpm_custody_drop_origin_secret(vtpm_worker *w, const char *uuid, const char *origin);
