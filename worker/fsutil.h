/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File-system helpers for paths that peers influence.  Nothing here
 * follows a symbolic link it did not resolve on purpose.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <glib.h>
#include "vtpm/error.h"

/* The fault for a failed write of TPM state: a full or failing disk is an
 * I/O error the operator can clear, after which the same request succeeds
 * (StateTransferFailed, retryable); anything else is unexpected. */
static inline vtpm_fault
vtpm_fs_fault(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EIO ? VTPM_FAULT_STATE_TRANSFER_FAILED
                                                 : VTPM_FAULT_INTERNAL;
}

/* Resolve @path (must exist) and require it to lie strictly inside @dir
 * (also resolved).  @what names the field in messages.  *out gets the
 * resolved path.  BadRequest otherwise. */
int vtpm_fs_confine(const char *dir, const char *path, const char *what, char **out,
                    vtpm_error *err);

/* Remove @path and everything below it without following links.  A
 * missing @path is success.  Internal on failure. */
int vtpm_fs_rmtree(const char *path, vtpm_error *err);

/* mkdir -p with @mode for the directories it creates. */
int vtpm_fs_mkdirs(const char *path, int mode, vtpm_error *err);

bool vtpm_fs_is_dir(const char *path);

/* Write @len bytes to @path atomically: a temporary file in the same
 * directory, fsync, rename over @path, fsync of the directory.  A crash
 * leaves either the old file or the new one, never a torn one. */
int vtpm_fs_write_atomic(const char *path, const void *data, size_t len, int mode,
                         vtpm_error *err);

/* Read a whole regular file of at most @max bytes.  StateNotFound when it
 * does not exist. */
int vtpm_fs_read(const char *path, size_t max, GBytes **out, vtpm_error *err);

/* The names in @dir that are canonical UUIDs (the per-instance records
 * vtpmd keeps under [store] kept_dir), nothing else; empty when @dir
 * cannot be read. */
GPtrArray *vtpm_fs_list_uuids(const char *dir);

/* fsync a directory (after a rename or unlink in it). */
int vtpm_fs_sync_dir(const char *dir, vtpm_error *err);
