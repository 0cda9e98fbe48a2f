/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vTPM state archive: one swtpm state directory plus a manifest, as a
 * POSIX ustar file (inspectable with `tar -tvf`).  This is the unit that
 * moves between hosts and into the shelve store, so the reader is built
 * for hostile input: it accepts only regular files and directories with
 * relative names (no absolute paths, no "..", no links, devices or FIFOs),
 * enforces size/count limits, verifies every header checksum and the
 * manifest's sha256 of every file, and never writes outside the
 * directory it is given.
 *
 * Layout: the first member is "vtpmd-manifest.json"; then the state
 * directory's contents ("tpm2/", "tpm2/tpm2-00.permall", ...; and
 * "nvram.fd", the variable store, for a UEFI instance: the archive then
 * holds two files, in format 1 still, which readers from before the store
 * extract like any file of the state dir).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "vtpm/error.h"

#define VTPM_ARCHIVE_MANIFEST "vtpmd-manifest.json"
#define VTPM_ARCHIVE_FORMAT 1
#define VTPM_ARCHIVE_MAX_ENTRIES 64
#define VTPM_ARCHIVE_MAX_FILE (16u * 1024 * 1024)
#define VTPM_ARCHIVE_MAX_TOTAL (64u * 1024 * 1024)

/* What the manifest records besides the per-file checksums. */
typedef struct {
    int format;             /* VTPM_ARCHIVE_FORMAT */
    char uuid[37];          /* instance */
    char *tpm_version;      /* "1.2" / "2.0" */
    char *tpm_model;        /* "tpm-tis" / "tpm-crb" */
    char *secret_security;  /* "user" / "host" / "deployment" */
    uint64_t generation;    /* per-instance counter, grows with every archive made */
    int64_t created_ms;     /* Unix epoch ms */
    char *reason;           /* "migrate" / "shelve" / ... */
    char *domain_xml;       /* the domain's inactive XML at archive time (may be NULL) */
    GHashTable *extra;      /* str -> str, free-form (e.g. wrapped secrets later); never NULL */
    /* The regular files the archive holds (names as in the state dir,
     * sorted); set by verify and extract, NULL before. */
    GPtrArray *files;
} vtpm_archive_meta;

void vtpm_archive_meta_init(vtpm_archive_meta *m);
void vtpm_archive_meta_clear(vtpm_archive_meta *m);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_archive_meta, vtpm_archive_meta_clear)

/*
 * Pack every regular file and directory under @state_dir (not following
 * links; swtpm's ".lock" file and sockets are skipped) with @meta.
 * Deterministic for identical inputs (fixed ordering; mtimes taken from
 * the files).  Faults: StateNotFound when @state_dir is missing, Internal
 * on I/O errors or when a limit would be exceeded.
 */
int vtpm_archive_pack(const char *state_dir, const vtpm_archive_meta *meta, GBytes **out,
                      vtpm_error *err);

/* Whether @name is one of swtpm's temporary state files (TMP2-00.<name>,
 * TPM 1.2: TMP-00.<name>): a write in progress or never committed, which
 * no archive carries. */
bool vtpm_archive_swtpm_temp_file(const char *name);

/*
 * Parse and verify @data (headers, names, limits, manifest, sha256 of
 * every file) without touching the file system.  StateIntegrity on any
 * damage or violation, naming what and where (member name / offset).
 * @meta (optional) receives the manifest.
 */
int vtpm_archive_verify(const void *data, size_t len, vtpm_archive_meta *meta,
                        vtpm_error *err);

/*
 * Verify, then extract into @dest_dir, which must exist and be empty.
 * Directories get mode 0700 and files 0600 whatever the archive says, and
 * both are chowned to @uid:@gid (pass -1 to leave ownership alone): the
 * modes libvirt itself sets on swtpm state.  Every file is fsync'ed, then
 * the directories.
 */
int vtpm_archive_extract(const void *data, size_t len, const char *dest_dir, int uid, int gid,
                         vtpm_archive_meta *meta, vtpm_error *err);

/* Whether @m (a verified archive's) lists the regular file @name. */
bool vtpm_archive_holds(const vtpm_archive_meta *m, const char *name);

/* Lower-case hex sha256 of @data (64 chars + NUL). */
char *vtpm_archive_sha256(const void *data, size_t len);
