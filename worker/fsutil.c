/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "fsutil.h"

int
vtpm_fs_confine(const char *dir, const char *path, const char *what, char **out,
                vtpm_error *err)
{
    g_autofree char *rdir = realpath(dir, NULL);
    g_autofree char *rpath = NULL;
    size_t n;

    if (!rdir)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: images directory %s: %s",
                              what, dir, g_strerror(errno));
    rpath = realpath(path, NULL);
    if (!rpath)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s: %s", what, path,
                              g_strerror(errno));
    n = strlen(rdir);
    /* Resolved first, compared second: a symlink inside the folder that
     * points outside it is refused too. */
    if (strncmp(rpath, rdir, n) != 0 || (rpath[n] != '/' && strcmp(rdir, "/") != 0) ||
        rpath[n + 1] == '\0')
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s: %s is outside the images directory %s", what, path, dir);
    *out = g_steal_pointer(&rpath);
    return 0;
}

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    int rc = (flag == FTW_DP) ? rmdir(p) : unlink(p);

    return rc < 0 && errno != ENOENT ? -1 : 0;
}

int
vtpm_fs_rmtree(const char *path, vtpm_error *err)
{
    struct stat st;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: %s", path, g_strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && errno != ENOENT)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "removing %s: %s", path,
                                  g_strerror(errno));
        return 0;
    }
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "removing %s: %s", path,
                              g_strerror(errno));
    return 0;
}

int
vtpm_fs_mkdirs(const char *path, int mode, vtpm_error *err)
{
    if (g_mkdir_with_parents(path, mode) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "creating %s: %s", path,
                              g_strerror(errno));
    return 0;
}

bool
vtpm_fs_is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
