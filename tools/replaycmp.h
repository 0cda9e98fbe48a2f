/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reply comparison for vtpm-replay --compare (docs/replay.md, "Compare
 * rules"): a recorded reply and a replayed one match when both decode as
 * reply envelopes, agree on ok, on fault.code when not ok, and their result
 * maps are equal apart from ignored fields.  fault.message (text for
 * people) and fault.retryable (follows from the code and, for a final
 * fault, its cause) are not compared.
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <msgpack.h>

/* Result fields expected to differ between runs or hosts: a rule without
 * '.' names a map key ignored at any depth of result, one with '.' a full
 * path ("result.tpm.models"); "*_ms" matches keys ending in "_ms". */
extern const char *const vtpm_replay_default_ignore[];

typedef struct {
    GPtrArray *rules; /* char * */
} vtpm_replay_ignore;

/* The defaults plus @extra (NULL-terminated, may be NULL). */
vtpm_replay_ignore *vtpm_replay_ignore_new(const char *const *extra);
void vtpm_replay_ignore_free(vtpm_replay_ignore *ig);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_replay_ignore, vtpm_replay_ignore_free)

/* Whether the value at @path (dotted, "result.tpm.models"), under map key
 * @key, is ignored. */
bool vtpm_replay_ignored(const vtpm_replay_ignore *ig, const char *path, const char *key);

typedef struct {
    bool match;
    char *first;    /* the first difference: "result.traits[1]: recorded \"A\", replayed \"B\"" */
    guint ndiff;    /* differences found */
} vtpm_replay_cmp;

void vtpm_replay_cmp_clear(vtpm_replay_cmp *c);

/* Compare two packed reply bodies (@rec: recorded, @new: replayed).  An
 * undecodable body on either side is a mismatch that says so. */
void vtpm_replay_compare(const void *rec, size_t rec_len, const void *new, size_t new_len,
                         const vtpm_replay_ignore *ig, vtpm_replay_cmp *out);

/* Compare two msgpack values below @path (exposed for tests). */
void vtpm_replay_diff(const msgpack_object *rec, const msgpack_object *new, const char *path,
                      const vtpm_replay_ignore *ig, vtpm_replay_cmp *out);
