/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the archive reader, which takes archives
 * from other hosts and the shelve store: every input must end in 0 or a
 * StateIntegrity fault, never a crash, a hang or a leak.
 *
 * Built by meson with -DVTPM_FUZZ_REPLAY as a regression test: it replays
 * every file named on the command line (the seed corpus, and every crash
 * the fuzzer ever found, which is added there), plus seeded mutations of
 * each, and fails if any input ends in anything but 0 or StateIntegrity.
 * For a real fuzzing run, build it with libFuzzer from the source root:
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

#include <stdio.h>
#include <string.h>

#include <glib.h>

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

#ifdef VTPM_FUZZ_REPLAY
/* Mutations per seed: byte flips, truncations and block swaps. */
#define MUTATIONS 500

static unsigned checked;

static void
check_one(const uint8_t *data, size_t size)
{
    LLVMFuzzerTestOneInput(data, size); /* aborts on a reader bug */
    checked++;
}

static void
mutate_and_check(const uint8_t *seed, size_t size, GRand *rng)
{
    g_autofree uint8_t *buf = g_malloc(size ? size : 1);

    for (int i = 0; i < MUTATIONS && size > 0; i++) {
        size_t len = size;

        memcpy(buf, seed, size);
        switch (g_rand_int_range(rng, 0, 3)) {
        case 0: /* flip a few bytes */
            for (int k = g_rand_int_range(rng, 1, 9); k > 0; k--)
                buf[g_rand_int_range(rng, 0, (gint32)size)] ^= (uint8_t)g_rand_int_range(rng, 1, 256);
            break;
        case 1: /* truncate */
            len = (size_t)g_rand_int_range(rng, 0, (gint32)size);
            break;
        default: /* copy one 512-byte block over another */
            if (size >= 1024) {
                size_t from = 512 * (size_t)g_rand_int_range(rng, 0, (gint32)(size / 512));
                size_t to = 512 * (size_t)g_rand_int_range(rng, 0, (gint32)(size / 512));

                memmove(buf + to, seed + from, MIN(512, MIN(size - from, size - to)));
            }
            break;
        }
        check_one(buf, len);
    }
}

int
main(int argc, char **argv)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(20261126);
    int seeds = 0;

    for (int i = 1; i < argc; i++) {
        g_autofree char *data = NULL;
        gsize len = 0;

        if (!g_str_has_suffix(argv[i], ".tar"))
            continue;
        if (!g_file_get_contents(argv[i], &data, &len, NULL)) {
            fprintf(stderr, "fuzz_archive: cannot read %s\n", argv[i]);
            return 1;
        }
        /* A seed must be valid, or the corpus no longer exercises the
         * deep paths of the reader. */
        {
            vtpm_archive_meta meta;
            vtpm_error err = { 0 };

            vtpm_archive_meta_init(&meta);
            if (vtpm_archive_verify(data, len, &meta, &err) < 0) {
                fprintf(stderr, "fuzz_archive: seed %s does not verify: %s\n", argv[i],
                        err.message);
                return 1;
            }
            vtpm_archive_meta_clear(&meta);
        }
        check_one((const uint8_t *)data, len);
        mutate_and_check((const uint8_t *)data, len, rng);
        seeds++;
    }
    if (seeds == 0) {
        fprintf(stderr, "fuzz_archive: no seed archives given\n");
        return 1;
    }
    printf("fuzz_archive: %d seeds, %u inputs, all ended in 0 or StateIntegrity\n", seeds, checked);
    return 0;
}
#endif
