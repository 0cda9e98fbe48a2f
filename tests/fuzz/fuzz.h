/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the fuzz targets in tests/fuzz/ share.
 *
 * Every target is a libFuzzer entry point.  Built with -DVTPM_FUZZ_REPLAY
 * (meson does, in every normal and sanitizer build) it is linked with
 * replay.c instead of libFuzzer: that runs each file of its seed corpus
 * (tests/fuzz/corpus/<target>/, where every crash the fuzzer ever found is
 * kept) and seeded mutations of each through LLVMFuzzerTestOneInput, which
 * aborts on any outcome the code under test does not document.  So each
 * corpus file is a regression test.  docs/fuzzing.md has the rest.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib.h>

#include "vtpm/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const char *name;
    /* Mutations also copy blocks of this size over each other (tar's 512
     * bytes); 0 for none. */
    size_t block;
    /* NULL, or whether @path, a seed, may be in the corpus: 0 if so, else
     * -1 with *why set.  Lets a target insist that its golden seeds stay
     * valid, or the deep paths of the code go unexercised. */
    int (*seed_check)(const char *path, const uint8_t *data, size_t size, char **why);
} vtpm_fuzz_target;

#ifdef VTPM_FUZZ_REPLAY
/* Each target defines this for replay.c. */
extern const vtpm_fuzz_target vtpm_fuzz_replay_target;
#endif

/* An outcome the code under test does not document: print it and abort,
 * which libFuzzer and the replay test both report as a crash. */
static inline G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN void
vtpm_fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("fuzz target: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* Fail unless @rc is 0, or -code for one of @codes (VTPM_FAULT_NONE
 * terminated) with @err->code agreeing and a message set. */
static inline void
vtpm_fuzz_expect(const char *what, int rc, const vtpm_error *err, const vtpm_fault *codes)
{
    if (rc == 0)
        return;
    for (size_t i = 0; codes[i] != VTPM_FAULT_NONE; i++) {
        if (rc == -(int)codes[i]) {
            if (err->code != codes[i])
                vtpm_fuzz_fail("%s: returned %d but err.code is %d", what, rc, (int)err->code);
            if (!err->message[0])
                vtpm_fuzz_fail("%s: fault %s without a message", what, vtpm_fault_name(codes[i]));
            return;
        }
    }
    vtpm_fuzz_fail("%s: undocumented result %d (err.code %d: %s)", what, rc, (int)err->code,
                   err->message);
}
