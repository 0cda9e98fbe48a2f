/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd's log: one line per record, "TIMESTAMP vtpmd[PID]: LEVEL: MESSAGE",
 * appended to a file (reopened on SIGHUP) or written to stderr, through
 * GLib's structured logging so that every g_message() and g_warning() of
 * the daemon lands here.
 *
 * The per-request line (VTPM_LOG_REQUEST) is the hot path: it is held in a
 * buffer and written with the others of the same loop turn in one write(),
 * when the AMQP I/O thread calls vtpm_log_flush() before it publishes
 * replies — a request's line is on disk before its reply leaves — or when
 * any other line is logged (that one is written at once, after what was
 * held, so the file keeps the order of the calls).  A warning or worse is
 * therefore never held, nor anything logged before it.
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

/* A per-request outcome line: info level, may be held until the next flush. */
#define VTPM_LOG_REQUEST(...)                                                          \
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "VTPM_BATCH", "1", "MESSAGE", \
                     __VA_ARGS__)

/* "debug", "info", "warning" or "error" (any case); false if unknown. */
bool vtpm_log_parse_level(const char *name, GLogLevelFlags *out);

/* Install the writer: records above @max are dropped; @path NULL is stderr.
 * 0 or -errno (the file cannot be opened; nothing installed). */
int vtpm_log_init(const char *path, GLogLevelFlags max);

/* Reopen the file (after logrotate moved it); 0 or -errno, the old file
 * kept then.  No-op on stderr. */
int vtpm_log_reopen(void);

/* Write what is held.  Cheap when nothing is. */
void vtpm_log_flush(void);

/* The file's path, NULL for stderr. */
const char *vtpm_log_path(void);
