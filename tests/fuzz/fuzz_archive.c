/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the archive reader, which takes archives
 * from other hosts and the shelve store: every input must end in 0 or a
 * StateIntegrity fault, never a crash, a hang or a leak.  Not built by
 * meson yet; by hand, from the source root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Iinclude -Iworker $(pkg-config --cflags glib-2.0 json-glib-1.0 uuid) \
 *     tests/fuzz/fuzz_archive.c worker/archive.c proto/error.c \
 *     $(pkg-config --libs glib-2.0 json-glib-1.0 uuid) -o fuzz_archive
 *   ./fuzz_archive tests/fixtures/archive/
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "archive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vtpm_archive_meta meta;
    vtpm_error err = { 0 };
    int rc;

    vtpm_archive_meta_init(&meta);
    rc = vtpm_archive_verify(data, size, &meta, &err);
    /* Any other fault would be a bug in the reader, not in the input. */
    if (rc != 0 && (rc != -(int)VTPM_FAULT_STATE_INTEGRITY ||
                    err.code != VTPM_FAULT_STATE_INTEGRITY))
        abort();
    vtpm_archive_meta_clear(&meta);
    return 0;
}
