/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Re-encrypting a stopped TPM state under a new key with swtpm 0.7's own
 * tooling (docs/security.md, Rekey), no re-manufacture: a standalone swtpm
 * opens the state with the old key and hands out its permanent state blob
 * (swtpm_ioctl --save permanent); a second swtpm on an empty directory
 * with the new key takes it (--load permanent) and writes it on CMD_INIT.
 * The plaintext blob only ever exists in memfds and in this process's
 * memory (wiped on free): swtpm_ioctl reads and writes /dev/fd/3, which
 * is a memfd, so no plaintext touches a file system.
 *
 * Every swtpm runs on a copy of the state file in a scratch directory, so
 * nothing here ever writes a state it was given.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

#include "vtpm/error.h"
#include "policy.h"

/* The permanent state blob of the TPM whose state dir (libvirt's <uuid>
 * dir, holding tpm2/ or tpm1.2/) is @state_dir, opened with @key; a
 * wiped-on-free GBytes.  @scratch: an existing private directory on which
 * sockets and copies are made (emptied again before returning).
 * SecretInvalid when @key does not open the state, StateNotFound when
 * there is no state file. */
int vtpm_rekey_export(const char *state_dir, vtpm_version version, GBytes *key,
                      const char *scratch, GBytes **out, vtpm_error *err);

/*
 * Write @blob (from vtpm_rekey_export under @old_key) as a new state
 * under @new_key into @new_dir (an existing empty directory: it gets
 * tpm2/ or tpm1.2/ with the state file) and verify it: the blob read back
 * from the new state with @new_key must equal the blob read back from the
 * same transfer done under @old_key (swtpm's CMD_INIT after a load
 * settles a few bytes such as pending PCR allocations, the same way under
 * either key; the seeds, hence the EK, and the NV indices, hence the EK
 * certificate, are compared byte for byte).  StateIntegrity when they
 * differ, Internal when swtpm fails.
 */
int vtpm_rekey_write(const char *new_dir, vtpm_version version, GBytes *blob, GBytes *old_key,
                     GBytes *new_key, const char *scratch, vtpm_error *err);

/* Whether swtpm wrote into its log @path, in the VTPM_REKEY_LOG_SCAN bytes
 * after offset @from, that it could not decrypt the state (swtpm 0.7:
 * "Verification of HMAC failed", "Error from SWTPM_NVRAM_GetDecryptedData"):
 * a wrong key, told apart from other start failures. */
#define VTPM_REKEY_LOG_SCAN 65536
bool vtpm_rekey_log_says_bad_key(const char *path, off_t from);

/* The name swtpm gives the state subdirectory / file of @version. */
const char *vtpm_rekey_subdir(vtpm_version version);
const char *vtpm_rekey_state_file(vtpm_version version);
