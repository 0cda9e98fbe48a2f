/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checkpoints (docs/lifecycle.md, "Checkpoints and evacuation"): copies of
 * an instance's TPM state in the state store ([store] uri,
 * checkpoint_pool), so that a host that dies does not take the TPM with
 * it.  A checkpoint is the same archive as a shelved one (worker/archive.h:
 * manifest, checksums, generation), as volume
 * "<uuid>.ckpt-<generation>.vtpm.tar"; the newest [store] checkpoint_keep
 * are kept, and an ownership record (ops/ownership.h) says whose they are.
 *
 * A checkpoint is taken in two steps: the snapshot, in the instance's slot
 * (nothing else moves its state meanwhile; milliseconds: the state dir is
 * read, swtpm's temporary files left out, see worker/archive.c), and the
 * upload, outside it (worker/checkpointer.h), so that a slow or dead store
 * never holds the instance.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"
#include "archive.h"
#include "worker.h"

/* What the state files of an instance look like: their names, inodes,
 * sizes and mtimes (cheap, stat only), and a hash of their content (read
 * only when the stat part changed). */
typedef struct {
    char *stat;    /* NULL: there is no state dir */
    char *content; /* hex sha256 */
} vtpm_ckpt_print;

void vtpm_ckpt_print_clear(vtpm_ckpt_print *p);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_ckpt_print, vtpm_ckpt_print_clear)
/* Whether two prints say the same state (their content hashes agree). */
bool vtpm_ckpt_print_equal(const vtpm_ckpt_print *a, const vtpm_ckpt_print *b);

/* A snapshot, ready to upload. */
typedef struct {
    char uuid[37];
    GBytes *archive;
    uint64_t generation; /* of the archive */
    uint64_t base;       /* the newest generation this host had before it */
    vtpm_ckpt_print print;
    char *reason;        /* "interval", or the method that moved the state */
} vtpm_ckpt_snapshot;

void vtpm_ckpt_snapshot_free(vtpm_ckpt_snapshot *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_ckpt_snapshot, vtpm_ckpt_snapshot_free)

typedef enum {
    VTPM_CKPT_TAKEN,   /* *out holds a snapshot */
    VTPM_CKPT_SAME,    /* the state is as @last says: nothing to do */
    VTPM_CKPT_WAIT,    /* not now: no state yet, a migration from here pending, fenced */
    VTPM_CKPT_GONE,    /* no domain with a vTPM here: forget the instance */
} vtpm_ckpt_status;

typedef struct {
    const char *reason;          /* "interval", or the method that moved the state */
    bool forced;                 /* even when the state is as @last says */
    const vtpm_ckpt_print *last; /* the state's print at the last upload; may be NULL */
} vtpm_ckpt_want;

/* In the instance's slot: a snapshot of @uuid's TPM state when one is due.
 * *print gets the state's print whatever the status (for the caller's
 * cache); *out a snapshot when the status is TAKEN. */
int vtpm_ckpt_take(vtpm_worker *w, const char *uuid, const vtpm_ckpt_want *want,
                   vtpm_ckpt_status *status, vtpm_ckpt_print *print, vtpm_ckpt_snapshot **out,
                   vtpm_error *err);

/* Upload @s to the store @sconn: refused (InstanceConflict) when the
 * ownership record names another host with a generation @s does not
 * descend from; then the record is written (this host, @s's generation)
 * and checkpoints beyond [store] checkpoint_keep are deleted, oldest
 * first.  StateTransferFailed when the store fails. */
int vtpm_ckpt_upload(vtpm_worker *w, virConnectPtr sconn, const vtpm_ckpt_snapshot *s,
                     vtpm_error *err);

/* A checkpoint read back from the store, verified. */
typedef struct {
    char *name;            /* the volume */
    GBytes *archive;
    vtpm_archive_meta meta;
} vtpm_ckpt_found;

void vtpm_ckpt_found_free(vtpm_ckpt_found *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_ckpt_found, vtpm_ckpt_found_free)

/* The newest checkpoint of @uuid in the store whose archive verifies
 * (checksums, instance, generation): when one fails, the one before it,
 * and so on; each one passed over is appended to @passed ("name: why; ").
 * *out NULL when there is none at all; StateIntegrity when none
 * verifies; StateTransferFailed when the store fails. */
int vtpm_ckpt_newest(vtpm_worker *w, virConnectPtr sconn, const char *uuid,
                     vtpm_ckpt_found **out, GString *passed, vtpm_error *err);

/* The choice itself, from the volume names @names (any order; names that
 * are no checkpoint of @uuid are ignored), each read by @read: a read
 * that fails with StateNotFound or StateIntegrity passes the checkpoint
 * over, any other fault ends the choice with it. */
typedef int (*vtpm_ckpt_reader)(const char *name, GBytes **out, vtpm_error *err, void *user);
int vtpm_ckpt_pick(const char *uuid, GPtrArray *names, vtpm_ckpt_reader read, void *user,
                   vtpm_ckpt_found **out, GString *passed, vtpm_error *err);
/* The volume name of @uuid's checkpoint of generation @gen. */
char *vtpm_ckpt_volume(const char *uuid, uint64_t gen);

/* Delete the checkpoints and ownership records of @uuid, unless the
 * record names another host (whose instance they are): *removed says
 * which. */
int vtpm_ckpt_remove(vtpm_worker *w, virConnectPtr sconn, const char *uuid, bool *removed,
                     vtpm_error *err);

/* The print of the state the last checkpoint that reached the store held,
 * kept across restarts (<kept_dir>/checkpoint-prints/<uuid>), so that a
 * new vtpmd does not checkpoint every unchanged TPM again.  Load: 0 with
 * *out filled, -1 when there is none. */
int vtpm_ckpt_print_save(vtpm_worker *w, const char *uuid, const vtpm_ckpt_print *p,
                         vtpm_error *err);
int vtpm_ckpt_print_load(vtpm_worker *w, const char *uuid, vtpm_ckpt_print *out);
void vtpm_ckpt_print_forget(vtpm_worker *w, const char *uuid);

/* A removal that could not reach the store, kept for a retry:
 * <kept_dir>/checkpoint-drops/<uuid>. */
int vtpm_ckpt_drop_later(vtpm_worker *w, const char *uuid, vtpm_error *err);
GPtrArray *vtpm_ckpt_drops(vtpm_worker *w);
void vtpm_ckpt_drop_done(vtpm_worker *w, const char *uuid);

/* What an evacuation to this host restored, so that a redelivered
 * evacuate answers the same: <kept_dir>/evacuated/<uuid>. */
typedef struct {
    char *from_host;
    char *spec_digest;     /* of the instance the domain was defined for */
    bool restored;         /* false: a fresh TPM */
    char *ckpt_host;       /* the host that took the checkpoint */
    uint64_t generation;   /* the checkpoint's */
    int64_t taken_ms;      /* when it was taken */
    int64_t evacuated_ms;  /* when it was restored */
} vtpm_ckpt_evacuation;

void vtpm_ckpt_evacuation_clear(vtpm_ckpt_evacuation *e);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_ckpt_evacuation, vtpm_ckpt_evacuation_clear)
int vtpm_ckpt_evacuation_write(vtpm_worker *w, const char *uuid, const vtpm_ckpt_evacuation *e,
                               vtpm_error *err);
/* 0 with *out filled; -1 when there is no (readable) record. */
int vtpm_ckpt_evacuation_read(vtpm_worker *w, const char *uuid, vtpm_ckpt_evacuation *out);
void vtpm_ckpt_evacuation_forget(vtpm_worker *w, const char *uuid);
