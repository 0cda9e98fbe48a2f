/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>

#include "child.h"

/* What is kept of a helper's output: enough for any log tail we quote. */
#define OUTPUT_KEEP (64 * 1024)

struct vtpm_child {
    GPid pid; /* 0 once reaped */
    int out;  /* read end of the output pipe, -1: none */
    char *name;
};

void
vtpm_child_free(vtpm_child *c)
{
    if (!c)
        return;
    if (c->out >= 0)
        close(c->out);
    if (c->pid > 0) {
        (void)kill(c->pid, SIGKILL);
        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    g_free(c->name);
    g_free(c);
}

static void
close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

int
vtpm_child_spawn(const char *const *argv, int *fds, size_t n_fds, vtpm_child_output output,
                 vtpm_child **out, vtpm_error *err)
{
    g_autoptr(vtpm_child) c = g_new0(vtpm_child, 1);
    g_autofree int *targets = g_new(int, n_fds + 1);
    g_autoptr(GError) gerr = NULL;
    GSpawnFlags flags = G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD;
    int pipefd[2] = { -1, -1 }, wfd = -1;
    gboolean ok;

    c->out = -1;
    c->name = g_strdup(argv[0]);
    for (size_t i = 0; i < n_fds; i++)
        targets[i] = 3 + (int)i;
    if (output == VTPM_CHILD_SILENT) {
        flags |= G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL;
    } else {
        if (!g_unix_open_pipe(pipefd, FD_CLOEXEC, &gerr)) {
            close_all(fds, n_fds);
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "running %s: %s", argv[0],
                                  gerr->message);
        }
        c->out = pipefd[0];
        wfd = pipefd[1];
        if (output == VTPM_CHILD_STDERR)
            flags |= G_SPAWN_STDOUT_TO_DEV_NULL;
    }
    ok = g_spawn_async_with_pipes_and_fds(
        NULL, argv, NULL, flags, NULL, NULL, -1, output == VTPM_CHILD_MERGED ? wfd : -1, wfd,
        fds, targets, n_fds, &c->pid, NULL, NULL, NULL, &gerr);
    if (wfd >= 0)
        close(wfd);
    close_all(fds, n_fds);
    if (!ok) {
        c->pid = 0;
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "running %s: %s", argv[0],
                              gerr->message);
    }
    *out = g_steal_pointer(&c);
    return 0;
}

static int
drain(vtpm_child *c, GString *buf, vtpm_error *err)
{
    char chunk[4096];

    for (;;) {
        ssize_t n = read(c->out, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "reading the output of %s: %s",
                                  c->name, g_strerror(errno));
        if (n == 0)
            return 0;
        g_string_append_len(buf, chunk, n);
        if (buf->len > 2 * OUTPUT_KEEP)
            g_string_erase(buf, 0, (gssize)(buf->len - OUTPUT_KEEP));
    }
}

int
vtpm_child_finish(vtpm_child *c, int *status, char **output, vtpm_error *err)
{
    g_autoptr(GString) buf = g_string_new(NULL);
    int st = 0, rc;

    if (c->out >= 0) {
        rc = drain(c, buf, err);
        close(c->out);
        c->out = -1;
        if (rc < 0)
            return rc;
    }
    while (waitpid(c->pid, &st, 0) < 0)
        if (errno != EINTR)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "waiting for %s: %s", c->name,
                                  g_strerror(errno));
    c->pid = 0;
    if (buf->len > OUTPUT_KEEP)
        g_string_erase(buf, 0, (gssize)(buf->len - OUTPUT_KEEP));
    *status = st;
    if (output)
        *output = g_string_free(g_steal_pointer(&buf), FALSE);
    return 0;
}

char *
vtpm_child_describe_status(int status)
{
    if (WIFEXITED(status))
        return g_strdup_printf("exit %d", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return g_strdup_printf("signal %d", WTERMSIG(status));
    return g_strdup_printf("status %d", status);
}

int
vtpm_child_run(const char *const *argv, int *fds, size_t n_fds, vtpm_child_output output,
               char **output_out, vtpm_error *err)
{
    g_autoptr(vtpm_child) c = NULL;
    g_autofree char *text = NULL, *how = NULL;
    int status = 0, rc;

    if ((rc = vtpm_child_spawn(argv, fds, n_fds, output, &c, err)) < 0 ||
        (rc = vtpm_child_finish(c, &status, &text, err)) < 0)
        return rc;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (output_out)
            *output_out = g_steal_pointer(&text);
        return 0;
    }
    how = vtpm_child_describe_status(status);
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s failed (%s): %s", argv[0], how,
                          text ? g_strstrip(text) : "");
}
