/* SPDX-License-Identifier: Apache-2.0 */
#include "timing.h"

static __thread struct {
    gint64 total_us[VTPM_TIMING_KINDS];
    unsigned depth;
    /* The outermost open bracket. */
    gint64 open_start_us;
    vtpm_timing_kind open_kind;
} tl;

void
vtpm_timing_reset(void)
{
    for (int k = 0; k < VTPM_TIMING_KINDS; k++)
        tl.total_us[k] = 0;
    /* An open bracket keeps counting, from now on. */
    if (tl.depth > 0)
        tl.open_start_us = g_get_monotonic_time();
}

gint64
vtpm_timing_total_us(vtpm_timing_kind kind)
{
    gint64 t = tl.total_us[kind];

    if (tl.depth > 0 && tl.open_kind == kind)
        t += g_get_monotonic_time() - tl.open_start_us;
    return t;
}

vtpm_timing_span
vtpm_timing_enter(vtpm_timing_kind kind)
{
    vtpm_timing_span s = { tl.depth };

    if (tl.depth++ == 0) {
        tl.open_start_us = g_get_monotonic_time();
        tl.open_kind = kind;
    }
    return s;
}

void
vtpm_timing_leave(vtpm_timing_span *span)
{
    /* Unwind to where this bracket opened, so that a bracket left open by
     * mistake inside it cannot keep the totals from ever counting again. */
    if (tl.depth <= span->depth)
        return;
    tl.depth = span->depth;
    if (tl.depth == 0)
        tl.total_us[tl.open_kind] += g_get_monotonic_time() - tl.open_start_us;
}
