/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
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
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", path,
                              g_strerror(errno));
    return 0;
}

bool
vtpm_fs_is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int
vtpm_fs_sync_dir(const char *dir, vtpm_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "opening %s: %s", dir, g_strerror(errno));
    if (fsync(fd) < 0) {
        int e = errno;

        close(fd);
        return vtpm_error_set(err, vtpm_fs_fault(e), "syncing %s: %s", dir, g_strerror(e));
    }
    close(fd);
    return 0;
}

int
vtpm_fs_write_atomic(const char *path, const void *data, size_t len, int mode, vtpm_error *err)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
    const char *p = data;
    size_t left = len;
    int fd, e;

    fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, mode);
    if (fd < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", tmp,
                              g_strerror(errno));
    while (left > 0) {
        ssize_t n = write(fd, p, left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        p += n;
        left -= (size_t)n;
    }
    if (fchmod(fd, mode) < 0 || fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    return vtpm_fs_sync_dir(dir, err);
fail:
    e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return vtpm_error_set(err, vtpm_fs_fault(e), "writing %s: %s", path, g_strerror(e));
}

int
vtpm_fs_read(const char *path, size_t max, GBytes **out, vtpm_error *err)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree char *buf = NULL;
    struct stat st;
    gsize len = 0;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND, "%s does not exist", path);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s: %s", path, g_strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s is not a regular file", path);
    if ((size_t)st.st_size > max)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY, "%s: %lld bytes exceed %zu", path,
                              (long long)st.st_size, max);
    if (!g_file_get_contents(path, &buf, &len, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s", gerr->message);
    *out = g_bytes_new_take(g_steal_pointer(&buf), len);
    return 0;
}

GPtrArray *
vtpm_fs_list_uuids(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        /* Canonical: the dashed form, lower case (vtpm_proto_parse_uuid's output). */
        g_autofree char *lower = g_ascii_strdown(name, -1);

        if (g_uuid_string_is_valid(name) && strcmp(lower, name) == 0)
            g_ptr_array_add(out, g_strdup(name));
    }
    return out;
}
