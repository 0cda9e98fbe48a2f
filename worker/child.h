/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The helper programs vtpmd runs (swtpm, swtpm_setup, swtpm_ioctl), each
 * reaped by the thread that started it with waitpid().  Not GSubprocess:
 * that watches children from GLib's own worker thread, which GLib starts
 * on first use and never joins, so a vtpmd that ran one helper would exit
 * with a thread still alive (valgrind's "possibly lost" at every start
 * probe).  Descriptors given to a child are numbered from 3 in order.
 */
#pragma once

#include <sys/types.h>
#include <glib.h>

#include "vtpm/error.h"

typedef struct vtpm_child vtpm_child;

/* What becomes of the child's standard output and error. */
typedef enum {
    VTPM_CHILD_SILENT,  /* both to /dev/null */
    VTPM_CHILD_STDERR,  /* stderr collected, stdout to /dev/null */
    VTPM_CHILD_MERGED,  /* stdout and stderr collected together */
} vtpm_child_output;

/* Start @argv (NULL-terminated, argv[0] looked up in PATH), its fd 3 + i
 * the parent's @fds[i] for i < @n_fds.  The @fds are the child's from now
 * on: closed here whether or not it starts.  Internal when it cannot. */
int vtpm_child_spawn(const char *const *argv, int *fds, size_t n_fds, vtpm_child_output output,
                     vtpm_child **out, vtpm_error *err);

/* Read what the child writes (the last 64 KiB of it are kept) until it
 * closes its output, then reap it: *status a waitpid status.  A child
 * started SILENT is only reaped. */
int vtpm_child_finish(vtpm_child *c, int *status, char **output, vtpm_error *err);

/* Spawn, finish: Internal naming argv[0] and the end of its output when it
 * does not exit with 0. */
int vtpm_child_run(const char *const *argv, int *fds, size_t n_fds, vtpm_child_output output,
                   char **output_out, vtpm_error *err);

/* "exit 3", "signal 9": for messages. */
char *vtpm_child_describe_status(int status);

/* Kill (SIGKILL) and reap a child still running; NULL is fine. */
void vtpm_child_free(vtpm_child *c);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_child, vtpm_child_free)
