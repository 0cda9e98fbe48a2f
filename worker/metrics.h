/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What vtpmd did, for operators: request counts and latencies, requests
 * in flight, reconnects, vTPM state bytes moved.  Written in the
 * Prometheus text exposition format (0.0.4) to a file that node_exporter's
 * textfile collector reads ([metrics] textfile; docs/metrics.md).
 *
 * One process-wide registry: handlers in the worker pool, the AMQP I/O
 * thread and the writer thread all update or read it, so every entry point
 * is thread-safe (one mutex; a request costs a handful of increments).
 * Label values must come from bounded sets (method names of the dispatch
 * table, fault names): a peer-chosen string would create a series per
 * request.  As a backstop the registry keeps at most
 * VTPM_METRICS_MAX_METHODS methods and counts the rest as "other".
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "vtpm/error.h"

#define VTPM_METRICS_MAX_METHODS 64
#define VTPM_METRICS_INTERVAL_DEFAULT 5

typedef enum {
    VTPM_METRICS_IN,  /* an archive restored into this host's swtpm state */
    VTPM_METRICS_OUT, /* an archive uploaded to a store (incoming pool, shelve store) */
} vtpm_metrics_direction;

/* Forget everything; the start time becomes now, vtpmd_up 1, the version
 * label @version.  Called once at start-up (and by tests). */
void vtpm_metrics_reset(const char *version);

/* vtpmd_up: 1 while serving, 0 in the last write at shutdown. */
void vtpm_metrics_set_up(bool up);

/* A request was taken (in flight until _request_end). */
void vtpm_metrics_request_begin(void);
void vtpm_metrics_request_end(void);
/* A request was answered: @outcome is "ok" or a fault name, @seconds
 * what its handler took (0 for requests refused before any handler). */
void vtpm_metrics_request_done(const char *method, const char *outcome, double seconds);

void vtpm_metrics_broker_reconnect(void);
/* libvirt keeps its own count (vtpm_virt_reconnects): set the total. */
void vtpm_metrics_set_libvirt_reconnects(uint64_t total);
void vtpm_metrics_state_bytes(vtpm_metrics_direction dir, uint64_t n);

/* Checkpoints of TPM state (docs/lifecycle.md): one more taken (@ok) or
 * failed for instance @uuid (a canonical UUID: the label set is the
 * instances on this host).  _track starts the age clock of an instance
 * that has none yet (its first checkpoint is still to come); _forget ends
 * its series (it left this host). */
void vtpm_metrics_checkpoint(const char *uuid, bool ok);
/* The state of @uuid is still the one its last checkpoint holds: the
 * store's copy is current, its age is 0 now (nothing counted). */
void vtpm_metrics_checkpoint_current(const char *uuid);
void vtpm_metrics_checkpoint_track(const char *uuid);
void vtpm_metrics_checkpoint_forget(const char *uuid);

/* The exposition text of the current values. */
char *vtpm_metrics_render(void);

/* Render and write to @path atomically (temporary file in the same
 * directory, fsync, rename; mode 0644).  Internal on I/O errors. */
int vtpm_metrics_write(const char *path, vtpm_error *err);

/*
 * A thread that writes @path now and every @interval_s seconds.  Before
 * each write it calls @collect(@user) (may be NULL) to pull values kept
 * elsewhere.  A failing write is logged when it starts failing, at most
 * hourly while it keeps failing, and when it works again; never fatal.
 */
typedef struct vtpm_metrics_writer vtpm_metrics_writer;

int vtpm_metrics_writer_start(const char *path, unsigned interval_s,
                              void (*collect)(void *user), void *user,
                              vtpm_metrics_writer **out, vtpm_error *err);
/* Stop the thread, then write once more with vtpmd_up 0 (clean
 * shutdown).  Accepts NULL. */
void vtpm_metrics_writer_stop(vtpm_metrics_writer *mw);
