/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-request accumulator of libvirt and helper time: brackets add up,
 * nested brackets count once (for the outermost kind), a scope bracket
 * closes with its block, a reset mid-bracket counts from the reset, a
 * bracket left open inside another cannot stop the counting, and each
 * thread has its own totals.
 *
 * Only bounds that hold on any machine are asserted: a bracket around a
 * sleep of S counts at least S, and a total never exceeds the wall time
 * measured around all of its brackets (double counting would).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>

#include "timing.h"

#define SLEEP_US 3000

static int
reset(void **state)
{
    vtpm_timing_reset();
    return 0;
}

static void
assert_between(gint64 v, gint64 lo, gint64 hi)
{
    if (v < lo || v > hi)
        fail_msg("%" G_GINT64_FORMAT " us not in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                 v, lo, hi);
}

static void
test_nothing_counted(void **state)
{
    g_usleep(SLEEP_US);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), 0);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_HELPERS), 0);
}

static void
test_brackets_add_up(void **state)
{
    gint64 t0 = g_get_monotonic_time(), wall;
    vtpm_timing_span s;

    for (int i = 0; i < 3; i++) {
        s = vtpm_timing_enter(VTPM_TIMING_LIBVIRT);
        g_usleep(SLEEP_US);
        vtpm_timing_leave(&s);
        g_usleep(SLEEP_US);   /* between brackets: not counted */
    }
    s = vtpm_timing_enter(VTPM_TIMING_HELPERS);
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&s);
    wall = g_get_monotonic_time() - t0;
    /* The three gaps are in the wall time but not in the libvirt total. */
    assert_between(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), 3 * SLEEP_US,
                   wall - 4 * SLEEP_US);
    assert_between(vtpm_timing_total_us(VTPM_TIMING_HELPERS), SLEEP_US, wall - 6 * SLEEP_US);
}

static void
test_nested_count_once(void **state)
{
    gint64 t0 = g_get_monotonic_time(), wall;
    vtpm_timing_span outer = vtpm_timing_enter(VTPM_TIMING_LIBVIRT), inner;

    inner = vtpm_timing_enter(VTPM_TIMING_LIBVIRT);
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&inner);
    /* Another kind inside: the outer bracket's kind gets it. */
    inner = vtpm_timing_enter(VTPM_TIMING_HELPERS);
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&inner);
    vtpm_timing_leave(&outer);
    wall = g_get_monotonic_time() - t0;
    assert_between(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), 2 * SLEEP_US, wall);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_HELPERS), 0);
}

static int
fake_call(int x)
{
    g_usleep(SLEEP_US);
    return x + 1;
}

static void
test_macros(void **state)
{
    gint64 t0 = g_get_monotonic_time(), wall, total;

    assert_int_equal(VTPM_LV(fake_call(41)), 42);
    VTPM_LV_VOID(fake_call(0));
    {
        VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
        g_usleep(SLEEP_US);
        /* Counted while still open. */
        assert_true(vtpm_timing_total_us(VTPM_TIMING_HELPERS) >= SLEEP_US);
    }
    wall = g_get_monotonic_time() - t0;
    assert_between(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), 2 * SLEEP_US, wall);
    total = vtpm_timing_total_us(VTPM_TIMING_HELPERS);
    assert_between(total, SLEEP_US, wall);
    /* The scope closed with its block: nothing counts any more. */
    g_usleep(SLEEP_US);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_HELPERS), total);
}

static void
test_reset_mid_bracket(void **state)
{
    vtpm_timing_span s = vtpm_timing_enter(VTPM_TIMING_LIBVIRT);
    gint64 t0;

    g_usleep(SLEEP_US);
    t0 = g_get_monotonic_time();
    vtpm_timing_reset();
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&s);
    /* Only what came after the reset: the next request's share. */
    assert_between(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), SLEEP_US,
                   g_get_monotonic_time() - t0);
}

static void
test_unbalanced_inner(void **state)
{
    vtpm_timing_span outer = vtpm_timing_enter(VTPM_TIMING_LIBVIRT), s;
    gint64 first;

    (void)vtpm_timing_enter(VTPM_TIMING_LIBVIRT);   /* never left */
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&outer);
    first = vtpm_timing_total_us(VTPM_TIMING_LIBVIRT);
    assert_true(first >= SLEEP_US);
    /* Closed for good: the next bracket is an outermost one again. */
    g_usleep(SLEEP_US);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), first);
    s = vtpm_timing_enter(VTPM_TIMING_HELPERS);
    g_usleep(SLEEP_US);
    vtpm_timing_leave(&s);
    assert_true(vtpm_timing_total_us(VTPM_TIMING_HELPERS) >= SLEEP_US);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), first);
    /* A second leave of a closed bracket changes nothing. */
    vtpm_timing_leave(&outer);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), first);
}

static gpointer
other_thread(gpointer data)
{
    vtpm_timing_span s = vtpm_timing_enter(VTPM_TIMING_LIBVIRT);

    g_usleep(4 * SLEEP_US);
    vtpm_timing_leave(&s);
    return GINT_TO_POINTER(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT) >= 4 * SLEEP_US);
}

static void
test_per_thread(void **state)
{
    GThread *t;
    vtpm_timing_span s = vtpm_timing_enter(VTPM_TIMING_HELPERS);

    /* Our open bracket does not leak into the other thread, nor its
     * libvirt time into ours. */
    t = g_thread_new("timing", other_thread, NULL);
    assert_true(GPOINTER_TO_INT(g_thread_join(t)));
    vtpm_timing_leave(&s);
    assert_int_equal(vtpm_timing_total_us(VTPM_TIMING_LIBVIRT), 0);
    assert_true(vtpm_timing_total_us(VTPM_TIMING_HELPERS) >= 4 * SLEEP_US);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_nothing_counted, reset),
        cmocka_unit_test_setup(test_brackets_add_up, reset),
        cmocka_unit_test_setup(test_nested_count_once, reset),
        cmocka_unit_test_setup(test_macros, reset),
        cmocka_unit_test_setup(test_reset_mid_bracket, reset),
        cmocka_unit_test_setup(test_unbalanced_inner, reset),
        cmocka_unit_test_setup(test_per_thread, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
