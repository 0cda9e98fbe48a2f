/* SPDX-License-Identifier: Apache-2.0 */
/*
 * File-system helpers for paths that peers influence.  Nothing here
 * follows a symbolic link it did not resolve on purpose.
 */
#pragma once

#include <stdbool.h>
#include "vtpm/error.h"

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
