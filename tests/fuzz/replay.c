/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main() of a fuzz target built as a corpus replay test (fuzz.h): every
 * file or directory named on the command line is a seed; each seed and
 * MUTATIONS seeded mutations of it go through LLVMFuzzerTestOneInput.
 * The mutations are deterministic (fixed seed), so a failure reproduces.
 */
#include <string.h>

#include "fuzz.h"

#define MUTATIONS 500

static unsigned checked;

static void
check_one(const uint8_t *data, size_t size)
{
    /* A private copy of exactly @size bytes, so that ASan sees a read past
     * the end of the input as what it is. */
    g_autofree uint8_t *copy = g_memdup2(data, size);

    LLVMFuzzerTestOneInput(copy, size);
    checked++;
}

static void
mutate_and_check(const uint8_t *seed, size_t size, GRand *rng)
{
    size_t block = vtpm_fuzz_replay_target.block;
    g_autofree uint8_t *buf = g_malloc(size + 16);

    for (int i = 0; i < MUTATIONS && size > 0; i++) {
        size_t len = size;

        memcpy(buf, seed, size);
        switch (g_rand_int_range(rng, 0, 4)) {
        case 0: /* flip a few bytes */
            for (int k = g_rand_int_range(rng, 1, 9); k > 0; k--)
                buf[g_rand_int_range(rng, 0, (gint32)size)] ^= (uint8_t)g_rand_int_range(rng, 1, 256);
            break;
        case 1: /* truncate */
            len = (size_t)g_rand_int_range(rng, 0, (gint32)size);
            break;
        case 2: /* set one byte to a boundary value (lengths, type bytes) */
            buf[g_rand_int_range(rng, 0, (gint32)size)] =
                (uint8_t[]){ 0x00, 0x7f, 0x80, 0xc0, 0xdc, 0xde, 0xdf, 0xff }[g_rand_int_range(rng, 0, 8)];
            break;
        default: /* copy one block over another, or append junk */
            if (block && size >= 2 * block) {
                size_t from = block * (size_t)g_rand_int_range(rng, 0, (gint32)(size / block));
                size_t to = block * (size_t)g_rand_int_range(rng, 0, (gint32)(size / block));

                memmove(buf + to, seed + from, MIN(block, MIN(size - from, size - to)));
            } else {
                size_t extra = (size_t)g_rand_int_range(rng, 1, 17);

                for (size_t k = 0; k < extra; k++)
                    buf[size + k] = (uint8_t)g_rand_int_range(rng, 0, 256);
                len = size + extra;
            }
            break;
        }
        check_one(buf, len);
    }
}

static int
replay_file(const char *path, GRand *rng)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) gerr = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, &gerr)) {
        fprintf(stderr, "%s: %s\n", vtpm_fuzz_replay_target.name, gerr->message);
        return -1;
    }
    if (vtpm_fuzz_replay_target.seed_check) {
        g_autofree char *why = NULL;

        if (vtpm_fuzz_replay_target.seed_check(path, (const uint8_t *)data, len, &why) < 0) {
            fprintf(stderr, "%s: seed %s: %s\n", vtpm_fuzz_replay_target.name, path, why);
            return -1;
        }
    }
    check_one((const uint8_t *)data, len);
    mutate_and_check((const uint8_t *)data, len, rng);
    return 0;
}

static int
cmp_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A directory's files in name order (a stable order keeps the mutations
 * of each seed the same from run to run); README files are not seeds. */
static int
replay_dir(const char *dir, GRand *rng, int *seeds)
{
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GDir) d = g_dir_open(dir, 0, &gerr);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *n;

    if (!d) {
        fprintf(stderr, "%s: %s\n", vtpm_fuzz_replay_target.name, gerr->message);
        return -1;
    }
    while ((n = g_dir_read_name(d))) {
        if (!g_str_has_prefix(n, "README") && n[0] != '.')
            g_ptr_array_add(names, g_strdup(n));
    }
    g_ptr_array_sort(names, cmp_names);
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(dir, (const char *)names->pdata[i], NULL);

        if (replay_file(path, rng) < 0)
            return -1;
        (*seeds)++;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    g_autoptr(GRand) rng = g_rand_new_with_seed(20261126);
    int seeds = 0;

    for (int i = 1; i < argc; i++) {
        int rc;

        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            rc = replay_dir(argv[i], rng, &seeds);
        } else {
            rc = replay_file(argv[i], rng);
            seeds++;
        }
        if (rc < 0)
            return 1;
    }
    if (seeds == 0) {
        fprintf(stderr, "%s: no seeds given\n", vtpm_fuzz_replay_target.name);
        return 1;
    }
    printf("%s: %d seeds, %u inputs, every one ended in a documented result\n",
           vtpm_fuzz_replay_target.name, seeds, checked);
    return 0;
}
