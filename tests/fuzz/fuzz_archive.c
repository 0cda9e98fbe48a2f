/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the archive reader, which takes archives
 * from other hosts and the shelve store: every input must end in 0 or a
 * StateIntegrity fault, never a crash, a hang or a leak.
 *
 * Seeds: the golden archives in tests/fixtures/archive/ (which must keep
 * verifying, or the corpus no longer reaches the deep paths of the
 * reader) and tests/fuzz/corpus/archive/.  See fuzz.h and docs/fuzzing.md.
 */
#include <string.h>

#include "fuzz.h"

#include "archive.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const vtpm_fault ok[] = { VTPM_FAULT_STATE_INTEGRITY, VTPM_FAULT_NONE };
    vtpm_archive_meta meta;
    vtpm_error err = { 0 };
    int rc;

    vtpm_archive_meta_init(&meta);
    rc = vtpm_archive_verify(data, size, &meta, &err);
    /* Any other fault would be a bug in the reader, not in the input. */
    vtpm_fuzz_expect("vtpm_archive_verify", rc, &err, ok);
    vtpm_archive_meta_clear(&meta);
    return 0;
}

#ifdef VTPM_FUZZ_REPLAY
static int
seed_check(const char *path, const uint8_t *data, size_t size, char **why)
{
    vtpm_archive_meta meta;
    vtpm_error err = { 0 };
    int rc;

    /* Only the golden archives; crash inputs kept in the corpus are
     * invalid by nature. */
    if (!strstr(path, "fixtures/archive/"))
        return 0;
    vtpm_archive_meta_init(&meta);
    rc = vtpm_archive_verify(data, size, &meta, &err);
    vtpm_archive_meta_clear(&meta);
    if (rc < 0) {
        *why = g_strdup_printf("a golden archive no longer verifies: %s", err.message);
        return -1;
    }
    return 0;
}

const vtpm_fuzz_target vtpm_fuzz_replay_target = {
    .name = "fuzz_archive",
    .block = 512,
    .seed_check = seed_check,
};
#endif
