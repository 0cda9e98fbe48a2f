/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>

#include "child.h"
#include "fsutil.h"
#include "policy.h"
#include "rekey.h"
#include "timing.h"
#include "tpm2.h"
#include "vtpm/proto.h"

/* A TPM 2.0 permanent state is ~5 KB, a 1.2 one less; anything near this
 * is not a state swtpm wrote. */
#define MAX_BLOB (1024 * 1024)

const char *
vtpm_rekey_subdir(vtpm_version version)
{
    return version == VTPM_VERSION_1_2 ? "tpm1.2" : "tpm2";
}

const char *
vtpm_rekey_state_file(vtpm_version version)
{
    return version == VTPM_VERSION_1_2 ? "tpm-00.permall" : "tpm2-00.permall";
}

static int
sys_error(vtpm_error *err, const char *what, const char *path)
{
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: %s %s: %s", what, path,
                          g_strerror(errno));
}

/* An anonymous memory file: the plaintext blob's only home outside this
 * process (never on a file system, gone with the last descriptor). */
static int
blob_fd(GBytes *data, int *out, vtpm_error *err)
{
    int fd = memfd_create("vtpmd-rekey", MFD_CLOEXEC);
    gsize len = 0;
    const guint8 *p = data ? g_bytes_get_data(data, &len) : NULL;

    if (fd < 0)
        return sys_error(err, "creating", "a memfd");
    if (len && write(fd, p, len) != (ssize_t)len) {
        close(fd);
        return sys_error(err, "writing", "a memfd");
    }
    *out = fd;
    return 0;
}

static int
blob_read(int fd, GBytes **out, vtpm_error *err)
{
    struct stat st;
    guint8 *buf;

    if (fstat(fd, &st) < 0)
        return sys_error(err, "reading", "the memfd");
    if (st.st_size <= 0 || st.st_size > MAX_BLOB)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "rekey: swtpm handed out a state blob of %lld bytes",
                              (long long)st.st_size);
    buf = g_malloc(st.st_size);
    if (pread(fd, buf, st.st_size, 0) != st.st_size) {
        explicit_bzero(buf, st.st_size);
        g_free(buf);
        return sys_error(err, "reading", "the memfd");
    }
    *out = vtpm_bytes_new_wiped(buf, st.st_size);
    return 0;
}

/* swtpm_ioctl --unix @ctrl @args...; @fd3 (>= 0) becomes its fd 3. */
static int
ioctl_run(const char *ctrl, const char *const *args, int fd3, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(vtpm_child) p = NULL;
    g_autofree char *errout = NULL, *how = NULL;
    int fds[1] = { -1 }, status = 0, rc;

    g_ptr_array_add(argv, (gpointer) "swtpm_ioctl");
    g_ptr_array_add(argv, (gpointer) "--unix");
    g_ptr_array_add(argv, (gpointer)ctrl);
    for (size_t i = 0; args[i]; i++)
        g_ptr_array_add(argv, (gpointer)args[i]);
    g_ptr_array_add(argv, NULL);
    if (fd3 >= 0 && (fds[0] = fcntl(fd3, F_DUPFD_CLOEXEC, 3)) < 0)
        return sys_error(err, "duplicating", "a descriptor");
    if ((rc = vtpm_child_spawn((const char *const *)argv->pdata, fds, fd3 >= 0 ? 1 : 0,
                               VTPM_CHILD_STDERR, &p, err)) < 0 ||
        (rc = vtpm_child_finish(p, &status, &errout, err)) < 0)
        {
        vtpm_error_prefix(err, "rekey: swtpm_ioctl %s", args[0]);
        return rc;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    how = vtpm_child_describe_status(status);
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: swtpm_ioctl %s failed (%s): %s",
                          args[0], how, g_strstrip(errout));
}

typedef struct {
    vtpm_child *proc;
    char *ctrl, *log;
} swtpm;

static void
swtpm_stop(swtpm *s, bool graceful)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    if (s->proc) {
        vtpm_error ignore = { 0 };
        const char *const stop[] = { "-s", NULL };

        int status;

        /* vtpm_child_free kills what did not stop. */
        if (graceful && ioctl_run(s->ctrl, stop, -1, &ignore) == 0)
            (void)vtpm_child_finish(s->proc, &status, NULL, &ignore);
        g_clear_pointer(&s->proc, vtpm_child_free);
    }
    if (s->ctrl)
        (void)unlink(s->ctrl);
    g_clear_pointer(&s->ctrl, g_free);
    g_clear_pointer(&s->log, g_free);
}

static int
swtpm_start(swtpm *s, const char *dir, vtpm_version version, GBytes *key, const char *scratch,
            vtpm_error *err)
{
    g_autofree char *state = g_strdup_printf("dir=%s", dir);
    g_autofree char *srv_path = g_build_filename(scratch, "srv", NULL);
    g_autofree char *srv = g_strdup_printf("type=unixio,path=%s", srv_path);
    g_autofree char *logopt = NULL;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int kfd = -1, cfd = -1, rc;
    const char *argv[16];
    size_t n = 0;

    memset(s, 0, sizeof(*s));
    s->ctrl = g_build_filename(scratch, "ctrl", NULL);
    s->log = g_build_filename(scratch, "swtpm.log", NULL);
    logopt = g_strdup_printf("file=%s", s->log);
    if (strlen(s->ctrl) >= sizeof(sa.sun_path) || strlen(srv_path) >= sizeof(sa.sun_path)) {
        rc = vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                            "rekey: %s is too long for a unix socket path", s->ctrl);
        goto fail;
    }
    (void)unlink(s->ctrl);
    (void)unlink(srv_path);
    strcpy(sa.sun_path, s->ctrl);
    cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || bind(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(cfd, 4) < 0) {
        rc = sys_error(err, "binding", s->ctrl);
        goto fail;
    }
    if ((rc = vtpm_tpm2_passphrase_fd(key, &kfd, err)) < 0)
        goto fail;

    argv[n++] = "swtpm";
    argv[n++] = "socket";
    if (version == VTPM_VERSION_2_0)
        argv[n++] = "--tpm2";
    argv[n++] = "--tpmstate";
    argv[n++] = state;
    argv[n++] = "--ctrl";
    argv[n++] = "type=unixio,fd=4";
    argv[n++] = "--server";
    argv[n++] = srv;
    argv[n++] = "--key";
    argv[n++] = "pwdfd=3,mode=aes-256-cbc";
    argv[n++] = "--log";
    argv[n++] = logopt;
    argv[n] = NULL;
    {
        VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
        int fds[2] = { g_steal_fd(&kfd), g_steal_fd(&cfd) };

        if ((rc = vtpm_child_spawn(argv, fds, 2, VTPM_CHILD_SILENT, &s->proc, err)) < 0) {
            vtpm_error_prefix(err, "rekey");
            goto fail;
        }
    }
    return 0;
fail:
    if (kfd >= 0)
        close(kfd);
    if (cfd >= 0)
        close(cfd);
    swtpm_stop(s, false);
    return rc;
}

bool
vtpm_rekey_log_says_bad_key(const char *path, off_t from)
{
    g_autofree char *buf = NULL;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return false;
    buf = g_malloc0(VTPM_REKEY_LOG_SCAN + 1);
    n = pread(fd, buf, VTPM_REKEY_LOG_SCAN, from);
    close(fd);
    return n > 0 && (strstr(buf, "GetDecryptedData") || strstr(buf, "Verification of HMAC failed"));
}

/* Run one swtpm on @dir with @key: load @in (when given) as its permanent
 * state, CMD_INIT, and hand the permanent state out into *out (when
 * asked). */
static int
swtpm_session(const char *dir, vtpm_version version, GBytes *key, GBytes *in, GBytes **out,
              const char *scratch, vtpm_error *err)
{
    static const char *const init[] = { "-i", NULL };
    static const char *const load[] = { "--load", "permanent", "/dev/fd/3", NULL };
    static const char *const save[] = { "--save", "permanent", "/dev/fd/3", NULL };
    swtpm s;
    int fd = -1, rc;

    if ((rc = swtpm_start(&s, dir, version, key, scratch, err)) < 0)
        return rc;
    if (in && ((rc = blob_fd(in, &fd, err)) < 0 || (rc = ioctl_run(s.ctrl, load, fd, err)) < 0))
        goto out;
    if ((rc = ioctl_run(s.ctrl, init, -1, err)) < 0) {
        if (vtpm_rekey_log_says_bad_key(s.log, 0))
            rc = vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                                "the key does not decrypt the TPM state in %s", dir);
        goto out;
    }
    if (out) {
        if (fd >= 0)
            close(fd);
        if ((rc = blob_fd(NULL, &fd, err)) < 0 || (rc = ioctl_run(s.ctrl, save, fd, err)) < 0 ||
            (rc = blob_read(fd, out, err)) < 0)
            goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    swtpm_stop(&s, true);
    {
        g_autofree char *log = g_build_filename(scratch, "swtpm.log", NULL);
        (void)unlink(log);
    }
    return rc;
}

static int
copy_state(const char *from_dir, const char *to_dir, vtpm_version version, vtpm_error *err)
{
    g_autofree char *src =
        g_build_filename(from_dir, vtpm_rekey_subdir(version), vtpm_rekey_state_file(version), NULL);
    g_autofree char *sub = g_build_filename(to_dir, vtpm_rekey_subdir(version), NULL);
    g_autofree char *dst = g_build_filename(sub, vtpm_rekey_state_file(version), NULL);
    g_autoptr(GBytes) data = NULL;
    g_autoptr(GError) gerr = NULL;
    int rc;

    if ((rc = vtpm_fs_read(src, MAX_BLOB * 2, &data, err)) < 0)
        return rc;
    if ((rc = vtpm_fs_mkdirs(sub, 0700, err)) < 0)
        return rc;
    if (!g_file_set_contents_full(dst, g_bytes_get_data(data, NULL), g_bytes_get_size(data),
                                  G_FILE_SET_CONTENTS_CONSISTENT, 0600, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: writing %s: %s", dst,
                              gerr->message);
    return 0;
}

int
vtpm_rekey_export(const char *state_dir, vtpm_version version, GBytes *key,
                  const char *scratch, GBytes **out, vtpm_error *err)
{
    g_autofree char *copy = g_build_filename(scratch, "copy", NULL);
    g_autofree char *sub = g_build_filename(copy, vtpm_rekey_subdir(version), NULL);
    vtpm_error ignore = { 0 };
    int rc;

    if ((rc = vtpm_fs_rmtree(copy, err)) < 0)
        return rc;
    if ((rc = copy_state(state_dir, copy, version, err)) == 0)
        rc = swtpm_session(sub, version, key, NULL, out, scratch, err);
    vtpm_fs_rmtree(copy, &ignore);
    return rc;
}

static int
import(const char *dir, vtpm_version version, GBytes *blob, GBytes *key, const char *scratch,
       vtpm_error *err)
{
    g_autofree char *sub = g_build_filename(dir, vtpm_rekey_subdir(version), NULL);
    g_autofree char *file = g_build_filename(sub, vtpm_rekey_state_file(version), NULL);
    int rc;

    if ((rc = vtpm_fs_mkdirs(sub, 0700, err)) < 0 ||
        (rc = swtpm_session(sub, version, key, blob, NULL, scratch, err)) < 0)
        return rc;
    /* CMD_INIT after the load is what writes the state: make sure it did. */
    if (access(file, F_OK) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "rekey: swtpm wrote no state file %s",
                              file);
    return 0;
}

int
vtpm_rekey_write(const char *new_dir, vtpm_version version, GBytes *blob, GBytes *old_key,
                 GBytes *new_key, const char *scratch, vtpm_error *err)
{
    g_autofree char *ref = g_build_filename(scratch, "ref", NULL);
    g_autoptr(GBytes) want = NULL, got = NULL;
    vtpm_error ignore = { 0 };
    int rc;

    if ((rc = import(new_dir, version, blob, new_key, scratch, err)) < 0)
        return rc;
    /* The same transfer under the old key is the reference: it differs
     * from the new state in nothing but the key. */
    if ((rc = vtpm_fs_rmtree(ref, err)) < 0 ||
        (rc = import(ref, version, blob, old_key, scratch, err)) < 0 ||
        (rc = vtpm_rekey_export(ref, version, old_key, scratch, &want, err)) < 0)
        goto out;
    if ((rc = vtpm_rekey_export(new_dir, version, new_key, scratch, &got, err)) < 0) {
        if (err && err->code == VTPM_FAULT_SECRET_INVALID)
            rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                                "rekey: the new key does not open the state just written");
        goto out;
    }
    if (!g_bytes_equal(want, got))
        rc = vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                            "rekey: the re-encrypted state differs from the original (%zu vs %zu "
                            "bytes)",
                            g_bytes_get_size(got), g_bytes_get_size(want));
out:
    vtpm_fs_rmtree(ref, &ignore);
    return rc;
}
