/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd's log writer (worker/log.c): the line format, level filtering, and
 * the holding of per-request lines — held until vtpm_log_flush(), written
 * before any other line so that the file keeps the order of the calls, a
 * warning never held, a full hold buffer written without a flush, what is
 * held on reopen written to the old file.
 *
 * GLib takes one writer per process: the writer is installed once, on a
 * file of the test's own, and every test reads what that file gained.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "log.h"

static char *dir, *path;
static gsize seen; /* bytes of the file the tests before have read */

/* What the file gained since the last call. */
static char *
gained(void)
{
    g_autofree char *all = NULL;
    gsize len = 0;
    char *s;

    if (!g_file_get_contents(path, &all, &len, NULL))
        return g_strdup("");
    s = g_strndup(all + MIN(seen, len), len - MIN(seen, len));
    seen = len;
    return s;
}

static void
test_parse_level(void **state)
{
    GLogLevelFlags l = 0;

    (void)state;
    assert_true(vtpm_log_parse_level("debug", &l));
    assert_int_equal(l, G_LOG_LEVEL_DEBUG);
    assert_true(vtpm_log_parse_level("WARNING", &l));
    assert_int_equal(l, G_LOG_LEVEL_WARNING);
    assert_true(vtpm_log_parse_level("error", &l));
    assert_int_equal(l, G_LOG_LEVEL_CRITICAL);
    l = G_LOG_LEVEL_INFO;
    assert_false(vtpm_log_parse_level("verbose", &l));
    assert_int_equal(l, G_LOG_LEVEL_INFO); /* untouched on failure */
}

static void
test_format(void **state)
{
    g_autofree char *got = NULL;
    g_autofree char *re = NULL;

    (void)state;
    g_message("plain %d", 42);
    got = gained();
    re = g_strdup_printf("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z vtpmd\\[%d\\]: "
                         "info: plain 42\n$", (int)getpid());
    if (!g_regex_match_simple(re, got, 0, 0))
        fail_msg("line %s does not match %s", got, re);
}

static void
test_filtered(void **state)
{
    g_autofree char *got = NULL;

    (void)state;
    g_debug("below the level");
    VTPM_LOG_REQUEST("request_id=r0");
    vtpm_log_flush();
    got = gained();
    assert_null(strstr(got, "below the level"));
    assert_non_null(strstr(got, "request_id=r0"));
}

static void
test_held_until_flush(void **state)
{
    g_autofree char *before = NULL, *after = NULL, *again = NULL;

    (void)state;
    VTPM_LOG_REQUEST("request_id=r1 outcome=ok");
    VTPM_LOG_REQUEST("request_id=r2 outcome=ok");
    before = gained();
    assert_string_equal(before, "");
    vtpm_log_flush();
    after = gained();
    assert_non_null(strstr(after, "info: request_id=r1 outcome=ok\n"));
    assert_true(strstr(after, "request_id=r1") < strstr(after, "request_id=r2"));
    vtpm_log_flush(); /* nothing twice */
    again = gained();
    assert_string_equal(again, "");
}

static void
test_other_line_writes_held_first(void **state)
{
    g_autofree char *got = NULL;
    const char *r3, *w, *r4;

    (void)state;
    VTPM_LOG_REQUEST("request_id=r3");
    g_warning("a warning is never held");
    got = gained();
    r3 = strstr(got, "info: request_id=r3");
    w = strstr(got, "warning: a warning is never held");
    assert_non_null(r3);
    assert_non_null(w);
    assert_true(r3 < w);
    g_free(got);

    VTPM_LOG_REQUEST("request_id=r4");
    g_message("an info line is not held either");
    got = gained();
    r4 = strstr(got, "request_id=r4");
    assert_non_null(r4);
    assert_true(r4 < strstr(got, "an info line is not held either"));
}

static void
test_full_hold_is_written(void **state)
{
    g_autofree char *got = NULL;
    g_autofree char *pad = g_strnfill(1000, 'p');
    int n = 0;

    (void)state;
    /* 100 lines of ~1 KB exceed what is held (64 KiB): most must be on
     * disk before any flush. */
    for (int i = 0; i < 100; i++)
        VTPM_LOG_REQUEST("request_id=big%d %s", i, pad);
    got = gained();
    for (const char *p = got; (p = strstr(p, "request_id=big")); p++)
        n++;
    assert_in_range(n, 60, 99);
    vtpm_log_flush();
    g_free(got);
    got = gained();
    assert_non_null(strstr(got, "request_id=big99 "));
}

static void
test_reopen_writes_held_to_old_file(void **state)
{
    g_autofree char *rotated = g_build_filename(dir, "vtpmd.log.1", NULL);
    g_autofree char *old = NULL, *fresh = NULL;

    (void)state;
    VTPM_LOG_REQUEST("request_id=before-rotation");
    assert_int_equal(g_rename(path, rotated), 0);
    assert_int_equal(vtpm_log_reopen(), 0);
    seen = 0;
    g_message("after rotation");
    assert_true(g_file_get_contents(rotated, &old, NULL, NULL));
    assert_non_null(strstr(old, "request_id=before-rotation"));
    fresh = gained();
    assert_null(strstr(fresh, "before-rotation"));
    assert_non_null(strstr(fresh, "info: after rotation"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_filtered),
        cmocka_unit_test(test_held_until_flush),
        cmocka_unit_test(test_other_line_writes_held_first),
        cmocka_unit_test(test_full_hold_is_written),
        cmocka_unit_test(test_reopen_writes_held_to_old_file),
    };
    int rc;

    dir = g_dir_make_tmp("test_log-XXXXXX", NULL);
    path = g_build_filename(dir, "vtpmd.log", NULL);
    if (vtpm_log_init(path, G_LOG_LEVEL_INFO) < 0) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    /* g_warning() must not abort the test. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    vtpm_log_flush();
    g_autofree char *rotated = g_build_filename(dir, "vtpmd.log.1", NULL);
    g_unlink(rotated);
    g_unlink(path);
    g_rmdir(dir);
    return rc;
}
