/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-request accounting of where a handler's time goes: blocked in libvirt
 * calls, waiting for helper processes vtpmd runs itself (swtpm,
 * swtpm_ioctl), or vtpmd's own work (the rest of duration_ms).  The request
 * log line reports the first two as libvirt_ms and helpers_ms.
 *
 * A request runs on one thread from start to end, so the accumulator is
 * thread-local: no locks, one monotonic clock read per bracket edge.
 * Brackets nest and only the outermost one counts, so a wrapper
 * (vtpm_virt_stop) and the libvirt calls inside it are not counted twice;
 * time inside a nested bracket of another kind counts for the outer kind.
 */
#pragma once

#include <glib.h>

typedef enum {
    VTPM_TIMING_LIBVIRT,
    VTPM_TIMING_HELPERS,
    VTPM_TIMING_KINDS
} vtpm_timing_kind;

/* One open bracket: the nesting depth it opened at. */
typedef struct {
    unsigned depth;
} vtpm_timing_span;

/* Zero this thread's totals: at the start of each request. */
void vtpm_timing_reset(void);

/* Microseconds of @kind on this thread since the last reset, counting
 * brackets still open up to now. */
gint64 vtpm_timing_total_us(vtpm_timing_kind kind);

vtpm_timing_span vtpm_timing_enter(vtpm_timing_kind kind);
/* Takes a pointer so it can be a cleanup function (VTPM_TIMED_SCOPE). */
void vtpm_timing_leave(vtpm_timing_span *span);

/* The rest of the enclosing block counts as @kind. */
#define VTPM_TIMED_SCOPE(kind)                                                  \
    __attribute__((cleanup(vtpm_timing_leave))) vtpm_timing_span G_PASTE(       \
        vtpm_timed_scope_, __LINE__) = vtpm_timing_enter(kind)

/* One libvirt call (an expression with a value) counted as libvirt time. */
#define VTPM_LV(expr)                                                           \
    ({                                                                          \
        vtpm_timing_span vtpm_lv_span_ = vtpm_timing_enter(VTPM_TIMING_LIBVIRT); \
        __auto_type vtpm_lv_value_ = (expr);                                    \
        vtpm_timing_leave(&vtpm_lv_span_);                                      \
        vtpm_lv_value_;                                                         \
    })

/* The same for a call without a value (virStreamAbort). */
#define VTPM_LV_VOID(expr)                                                      \
    do {                                                                        \
        vtpm_timing_span vtpm_lv_span_ = vtpm_timing_enter(VTPM_TIMING_LIBVIRT); \
        (void)(expr);                                                           \
        vtpm_timing_leave(&vtpm_lv_span_);                                      \
    } while (0)
