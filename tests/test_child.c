/* SPDX-License-Identifier: Apache-2.0 */
/* vtpm_child: the helpers vtpmd runs, reaped with waitpid() by the thread
 * that started them (no GLib child-watch thread); descriptors numbered
 * from 3, output silenced or collected, a child freed while running is
 * killed and reaped. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib-unix.h>

#include "child.h"

static char *
run_sh(const char *script, vtpm_child_output output, int *fds, size_t n_fds, int *rc)
{
    const char *const argv[] = { "sh", "-c", script, NULL };
    vtpm_error err = { 0 };
    char *out = NULL;

    *rc = vtpm_child_run(argv, fds, n_fds, output, &out, &err);
    if (*rc < 0) {
        char *msg = g_strdup(err.message);

        vtpm_error_clear(&err);
        return msg;
    }
    return out;
}

static void
test_output_modes(void **state)
{
    g_autofree char *merged = NULL, *errs = NULL, *silent = NULL;
    int rc;

    (void)state;
    merged = run_sh("echo out; echo err >&2", VTPM_CHILD_MERGED, NULL, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(merged, "out\nerr\n");
    errs = run_sh("echo out; echo err >&2", VTPM_CHILD_STDERR, NULL, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(errs, "err\n");
    silent = run_sh("echo out; echo err >&2", VTPM_CHILD_SILENT, NULL, 0, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(silent, "");
}

static void
test_failure_says_how(void **state)
{
    g_autofree char *exit3 = NULL, *killed = NULL;
    int rc;

    (void)state;
    exit3 = run_sh("echo 'no such state' >&2; exit 3", VTPM_CHILD_STDERR, NULL, 0, &rc);
    assert_int_equal(rc, -VTPM_FAULT_INTERNAL);
    assert_string_equal(exit3, "sh failed (exit 3): no such state");
    killed = run_sh("kill -9 $$", VTPM_CHILD_MERGED, NULL, 0, &rc);
    assert_int_equal(rc, -VTPM_FAULT_INTERNAL);
    assert_string_equal(killed, "sh failed (signal 9): ");
}

static void
test_missing_program(void **state)
{
    const char *const argv[] = { "vtpm-no-such-helper", NULL };
    g_autoptr(vtpm_child) c = NULL;
    vtpm_error err = { 0 };
    int p[2];

    (void)state;
    assert_true(g_unix_open_pipe(p, FD_CLOEXEC, NULL));
    close(p[0]);
    assert_int_equal(vtpm_child_spawn(argv, &p[1], 1, VTPM_CHILD_MERGED, &c, &err),
                     -VTPM_FAULT_INTERNAL);
    assert_null(c);
    assert_non_null(strstr(err.message, "running vtpm-no-such-helper: "));
    /* The descriptor handed over is closed even so. */
    assert_int_equal(fcntl(p[1], F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    vtpm_error_clear(&err);
}

static void
test_descriptors_from_3(void **state)
{
    int a[2], b[2], rc;
    g_autofree char *out = NULL;

    (void)state;
    assert_true(g_unix_open_pipe(a, FD_CLOEXEC, NULL));
    assert_true(g_unix_open_pipe(b, FD_CLOEXEC, NULL));
    assert_int_equal(write(a[1], "three", 5), 5);
    assert_int_equal(write(b[1], "four", 4), 4);
    close(a[1]);
    close(b[1]);
    {
        int fds[2] = { a[0], b[0] };

        out = run_sh("cat <&3; echo; cat <&4; echo; if [ -e /dev/fd/5 ]; then echo five; fi",
                     VTPM_CHILD_MERGED, fds, 2, &rc);
        assert_int_equal(rc, 0);
        assert_string_equal(out, "three\nfour\n");
        /* Ours are closed: the child has them now. */
        assert_int_equal(fcntl(a[0], F_GETFD), -1);
        assert_int_equal(fcntl(b[0], F_GETFD), -1);
    }
}

static void
test_keeps_the_end(void **state)
{
    g_autofree char *out = NULL;
    int rc;

    (void)state;
    /* 1 MB of output, then the line a log tail needs. */
    out = run_sh("head -c 1048576 /dev/zero | tr '\\0' x; echo; echo the end", VTPM_CHILD_MERGED,
                 NULL, 0, &rc);
    assert_int_equal(rc, 0);
    assert_true(strlen(out) <= 64 * 1024);
    assert_true(g_str_has_suffix(out, "x\nthe end\n"));
}

static void
test_free_kills_and_reaps(void **state)
{
    const char *const argv[] = { "sleep", "600", NULL };
    vtpm_child *c = NULL;
    vtpm_error err = { 0 };
    gint64 t0 = g_get_monotonic_time();

    (void)state;
    assert_int_equal(vtpm_child_spawn(argv, NULL, 0, VTPM_CHILD_SILENT, &c, &err), 0);
    vtpm_child_free(c);
    vtpm_child_free(NULL);
    assert_true(g_get_monotonic_time() - t0 < 60 * G_USEC_PER_SEC);
    /* Reaped: no child of ours is left, zombie or not. */
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void
test_finish_status(void **state)
{
    const char *const argv[] = { "sh", "-c", "exit 7", NULL };
    g_autoptr(vtpm_child) c = NULL;
    g_autofree char *how = NULL, *out = NULL;
    vtpm_error err = { 0 };
    int status = 0;

    (void)state;
    assert_int_equal(vtpm_child_spawn(argv, NULL, 0, VTPM_CHILD_SILENT, &c, &err), 0);
    assert_int_equal(vtpm_child_finish(c, &status, &out, &err), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 7);
    assert_string_equal(out, "");
    how = vtpm_child_describe_status(status);
    assert_string_equal(how, "exit 7");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_modes),
        cmocka_unit_test(test_failure_says_how),
        cmocka_unit_test(test_missing_program),
        cmocka_unit_test(test_descriptors_from_3),
        cmocka_unit_test(test_keeps_the_end),
        cmocka_unit_test(test_free_kills_and_reaps),
        cmocka_unit_test(test_finish_status),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
