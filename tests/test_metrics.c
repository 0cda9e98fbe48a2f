/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics registry and its Prometheus text exposition: exact sample
 * lines, label escaping, cumulative histogram buckets, the series cap,
 * concurrent updates, and the atomic file write of the writer thread.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "metrics.h"

static int
reset(void **state)
{
    vtpm_metrics_reset("1.2.3");
    return 0;
}

/* The text must hold @line as a whole line. */
static void
assert_line(const char *text, const char *line)
{
    g_autofree char *needle = g_strdup_printf("\n%s\n", line);
    g_autofree char *padded = g_strdup_printf("\n%s", text);

    if (!strstr(padded, needle))
        fail_msg("expected the line\n  %s\nin:\n%s", line, text);
}

static void
assert_no_line_prefix(const char *text, const char *prefix)
{
    g_autofree char *needle = g_strdup_printf("\n%s", prefix);
    g_autofree char *padded = g_strdup_printf("\n%s", text);

    if (strstr(padded, needle))
        fail_msg("no line should start with '%s' in:\n%s", prefix, text);
}

/* The value of the sample line that starts with @series (name and labels
 * exactly as rendered); fails when there is none. */
static double
sample(const char *text, const char *series)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    size_t n = strlen(series);

    for (size_t i = 0; lines[i]; i++) {
        if (strncmp(lines[i], series, n) == 0 && lines[i][n] == ' ')
            return g_ascii_strtod(lines[i] + n + 1, NULL);
    }
    fail_msg("no sample %s in:\n%s", series, text);
    return -1;
}

/*
 * A checker of the text format (exposition format 0.0.4): every line is
 * "# HELP name text", "# TYPE name type" or "name{label="value",...} value";
 * names and label names have the allowed characters; every sample belongs
 * to the family of the last TYPE line (histograms: _bucket/_sum/_count),
 * which comes once per name, before its samples; the text ends with a
 * line feed; label values have only the escapes \\ \" \n.
 */
static void
assert_valid_exposition(const char *text)
{
    g_autoptr(GRegex) help_re = g_regex_new("^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \\S.*$", 0, 0, NULL);
    g_autoptr(GRegex) type_re = g_regex_new(
        "^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$", 0, 0,
        NULL);
    g_autoptr(GRegex) sample_re = g_regex_new(
        "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
        "(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\\n]|\\\\[\\\\\"n])*\")"
        "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\\n]|\\\\[\\\\\"n])*\")*\\})? "
        "(-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|\\+Inf|-Inf|NaN)$",
        0, 0, NULL);
    g_autoptr(GHashTable) typed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_auto(GStrv) lines = NULL;
    g_autofree char *family = NULL, *type = NULL;
    size_t len = strlen(text);

    assert_true(len > 0 && text[len - 1] == '\n');
    lines = g_strsplit(text, "\n", -1);
    for (size_t i = 0; lines[i] && lines[i + 1]; i++) {
        g_autoptr(GMatchInfo) m = NULL;
        const char *l = lines[i];

        if (g_regex_match(help_re, l, 0, NULL))
            continue;
        if (g_regex_match(type_re, l, 0, &m)) {
            g_free(family);
            g_free(type);
            family = g_match_info_fetch(m, 1);
            type = g_match_info_fetch(m, 2);
            if (g_hash_table_contains(typed, family))
                fail_msg("line %zu: second TYPE line for %s", i + 1, family);
            g_hash_table_add(typed, g_strdup(family));
            continue;
        }
        g_clear_pointer(&m, g_match_info_unref);
        if (!g_regex_match(sample_re, l, 0, &m))
            fail_msg("line %zu is not valid exposition text: '%s'", i + 1, l);
        {
            g_autofree char *name = g_match_info_fetch(m, 1);
            bool ok = family && strcmp(name, family) == 0;

            if (!ok && family && strcmp(type, "histogram") == 0) {
                const char *suffixes[] = { "_bucket", "_sum", "_count" };

                for (size_t s = 0; s < G_N_ELEMENTS(suffixes) && !ok; s++) {
                    g_autofree char *full = g_strconcat(family, suffixes[s], NULL);

                    ok = strcmp(name, full) == 0;
                }
            }
            if (!ok)
                fail_msg("line %zu: sample %s outside its family (last TYPE: %s)", i + 1, name,
                         family ? family : "none");
        }
    }
}

/* ---- tests ----------------------------------------------------------------- */

static void
test_fresh(void **state)
{
    g_autofree char *t = vtpm_metrics_render();
    const char *families[][2] = {
        { "vtpmd_build_info", "gauge" },
        { "vtpmd_up", "gauge" },
        { "vtpmd_start_time_seconds", "gauge" },
        { "vtpmd_requests_total", "counter" },
        { "vtpmd_request_duration_seconds", "histogram" },
        { "vtpmd_requests_in_flight", "gauge" },
        { "vtpmd_broker_reconnects_total", "counter" },
        { "vtpmd_libvirt_reconnects_total", "counter" },
        { "vtpmd_state_bytes_moved_total", "counter" },
        { "vtpmd_checkpoints_total", "counter" },
        { "vtpmd_checkpoint_age_seconds", "gauge" },
    };
    double start;

    assert_valid_exposition(t);
    for (size_t i = 0; i < G_N_ELEMENTS(families); i++) {
        g_autofree char *type = g_strdup_printf("# TYPE %s %s", families[i][0], families[i][1]);
        g_autofree char *help = g_strdup_printf("# HELP %s ", families[i][0]);

        assert_line(t, type);
        assert_non_null(strstr(t, help));
    }
    assert_line(t, "vtpmd_build_info{version=\"1.2.3\"} 1");
    assert_line(t, "vtpmd_up 1");
    assert_line(t, "vtpmd_requests_in_flight 0");
    assert_line(t, "vtpmd_broker_reconnects_total 0");
    assert_line(t, "vtpmd_libvirt_reconnects_total 0");
    assert_line(t, "vtpmd_state_bytes_moved_total{direction=\"in\"} 0");
    assert_line(t, "vtpmd_state_bytes_moved_total{direction=\"out\"} 0");
    assert_line(t, "vtpmd_checkpoints_total{outcome=\"failed\"} 0");
    assert_line(t, "vtpmd_checkpoints_total{outcome=\"ok\"} 0");
    assert_no_line_prefix(t, "vtpmd_checkpoint_age_seconds{");
    /* No request yet: the families are declared, without samples. */
    assert_no_line_prefix(t, "vtpmd_requests_total{");
    assert_no_line_prefix(t, "vtpmd_request_duration_seconds_");
    start = sample(t, "vtpmd_start_time_seconds");
    assert_true(start > 1.6e9);
    assert_true(start <= (double)g_get_real_time() / G_USEC_PER_SEC + 1);
}

/* Checkpoints: counted by outcome; the age of an instance's last one,
 * which a failure does not reset, and which starts when the instance is
 * first tracked; forgetting an instance ends its series. */
static void
test_checkpoints(void **state)
{
    const char *u1 = "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001";
    const char *u2 = "1e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd002";
    const char *u3 = "2e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd003";
    g_autofree char *s1 = g_strdup_printf("vtpmd_checkpoint_age_seconds{instance=\"%s\"}", u1);
    g_autofree char *s2 = g_strdup_printf("vtpmd_checkpoint_age_seconds{instance=\"%s\"}", u2);
    g_autofree char *s3 = g_strdup_printf("vtpmd_checkpoint_age_seconds{instance=\"%s\"}", u3);
    g_autofree char *t = NULL;
    g_autofree char *t2 = NULL;
    double a1, a2, a3, b1, b2;

    vtpm_metrics_checkpoint_track(u3);
    vtpm_metrics_checkpoint(u1, true);
    vtpm_metrics_checkpoint(u2, false);
    vtpm_metrics_checkpoint(u2, false);
    vtpm_metrics_checkpoint_track(u1); /* tracked already: no reset */
    t = vtpm_metrics_render();
    assert_valid_exposition(t);
    assert_line(t, "vtpmd_checkpoints_total{outcome=\"failed\"} 2");
    assert_line(t, "vtpmd_checkpoints_total{outcome=\"ok\"} 1");
    a1 = sample(t, s1);
    a2 = sample(t, s2);
    a3 = sample(t, s3);
    assert_true(a1 >= 0 && a2 >= 0 && a3 >= 0);
    /* Sorted by instance. */
    assert_true(strstr(t, u1) < strstr(t, u2) && strstr(t, u2) < strstr(t, u3));
    g_usleep(20 * 1000);
    vtpm_metrics_checkpoint(u2, true);
    vtpm_metrics_checkpoint_forget(u3);
    /* An unchanged state: the store's copy is current, nothing counted. */
    vtpm_metrics_checkpoint_current(u3);
    t2 = vtpm_metrics_render();
    assert_valid_exposition(t2);
    b1 = sample(t2, s1);
    b2 = sample(t2, s2);
    assert_true(b1 >= a1 + 0.015); /* u1's clock goes on */
    assert_true(b2 < b1);          /* u2's was reset by its success */
    assert_true(sample(t2, s3) <= b2);
    assert_line(t2, "vtpmd_checkpoints_total{outcome=\"ok\"} 2");
    assert_line(t2, "vtpmd_checkpoints_total{outcome=\"failed\"} 2");
    vtpm_metrics_checkpoint_forget(u3);
    {
        g_autofree char *t3 = vtpm_metrics_render();

        assert_null(strstr(t3, u3));
    }
}

static void
test_counters(void **state)
{
    g_autofree char *t = NULL;

    vtpm_metrics_request_done("spawn", "ok", 0.5);
    vtpm_metrics_request_done("spawn", "ok", 1.5);
    vtpm_metrics_request_done("spawn", "InvalidTPMConfig", 0.0001);
    vtpm_metrics_request_done("destroy", "ok", 0.002);
    vtpm_metrics_request_done(NULL, "BadRequest", 0);
    vtpm_metrics_broker_reconnect();
    vtpm_metrics_broker_reconnect();
    vtpm_metrics_set_libvirt_reconnects(5);
    vtpm_metrics_set_libvirt_reconnects(7); /* a total, not an increment */
    vtpm_metrics_state_bytes(VTPM_METRICS_OUT, 10240);
    vtpm_metrics_state_bytes(VTPM_METRICS_OUT, 20480);
    vtpm_metrics_state_bytes(VTPM_METRICS_IN, 10240);
    vtpm_metrics_request_begin();
    vtpm_metrics_request_begin();
    vtpm_metrics_request_begin();
    vtpm_metrics_request_end();

    t = vtpm_metrics_render();
    assert_valid_exposition(t);
    assert_line(t, "vtpmd_requests_total{method=\"spawn\",outcome=\"ok\"} 2");
    assert_line(t, "vtpmd_requests_total{method=\"spawn\",outcome=\"InvalidTPMConfig\"} 1");
    assert_line(t, "vtpmd_requests_total{method=\"destroy\",outcome=\"ok\"} 1");
    assert_line(t, "vtpmd_requests_total{method=\"unknown\",outcome=\"BadRequest\"} 1");
    assert_line(t, "vtpmd_request_duration_seconds_count{method=\"spawn\"} 3");
    assert_line(t, "vtpmd_request_duration_seconds_sum{method=\"spawn\"} 2.000100");
    assert_line(t, "vtpmd_request_duration_seconds_sum{method=\"destroy\"} 0.002000");
    assert_line(t, "vtpmd_requests_in_flight 2");
    assert_line(t, "vtpmd_broker_reconnects_total 2");
    assert_line(t, "vtpmd_libvirt_reconnects_total 7");
    assert_line(t, "vtpmd_state_bytes_moved_total{direction=\"in\"} 10240");
    assert_line(t, "vtpmd_state_bytes_moved_total{direction=\"out\"} 30720");
    /* Sorted by method, then outcome: the same state renders the same. */
    assert_true(strstr(t, "{method=\"destroy\",outcome") < strstr(t, "{method=\"spawn\",outcome"));
    assert_true(strstr(t, "outcome=\"InvalidTPMConfig\"") < strstr(t, "method=\"spawn\",outcome=\"ok\""));

    /* In flight never goes below zero. */
    vtpm_metrics_request_end();
    vtpm_metrics_request_end();
    vtpm_metrics_request_end();
    g_free(t);
    t = vtpm_metrics_render();
    assert_line(t, "vtpmd_requests_in_flight 0");

    vtpm_metrics_reset("1.2.3");
    g_free(t);
    t = vtpm_metrics_render();
    assert_no_line_prefix(t, "vtpmd_requests_total{");
    assert_line(t, "vtpmd_broker_reconnects_total 0");
}

static void
test_histogram(void **state)
{
    /* Bounds are inclusive (le): 0.001 counts in le="0.001". */
    const double obs[] = { 0, 0.001, 0.0011, 0.003, 0.2, 1, 1, 59.9, 600, 601, 1e9, -1 };
    const char *les[] = { "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                          "0.5",   "1",      "2.5",   "5",    "10",    "30",   "60",  "120",
                          "300",   "600",    "+Inf" };
    const double want[] = { 3, 4, 5, 5, 5, 5, 5, 6, 6, 8, 8, 8, 8, 8, 9, 9, 9, 10, 12 };
    g_autofree char *t = NULL;
    double prev = 0;

    for (size_t i = 0; i < G_N_ELEMENTS(obs); i++)
        vtpm_metrics_request_done("shelve", "ok", obs[i]);
    t = vtpm_metrics_render();
    assert_valid_exposition(t);
    for (size_t i = 0; i < G_N_ELEMENTS(les); i++) {
        g_autofree char *series = g_strdup_printf(
            "vtpmd_request_duration_seconds_bucket{method=\"shelve\",le=\"%s\"}", les[i]);
        double v = sample(t, series);

        if (v != want[i])
            fail_msg("%s is %g, expected %g (cumulative)", series, v, want[i]);
        assert_true(v >= prev);
        prev = v;
    }
    /* +Inf equals _count; a negative duration counts as 0. */
    assert_line(t, "vtpmd_request_duration_seconds_count{method=\"shelve\"} 12");
    assert_true(fabs(sample(t, "vtpmd_request_duration_seconds_sum{method=\"shelve\"}") -
                     1000001263.1051) < 1e-4);
    /* Buckets come in order, +Inf last, then _sum and _count. */
    assert_true(strstr(t, "le=\"0.001\"") < strstr(t, "le=\"600\""));
    assert_true(strstr(t, "le=\"600\"") < strstr(t, "le=\"+Inf\""));
    assert_true(strstr(t, "le=\"+Inf\"") < strstr(t, "_sum{method=\"shelve\"}"));
    assert_true(strstr(t, "_sum{method=\"shelve\"}") < strstr(t, "_count{method=\"shelve\"}"));
}

static void
test_label_escaping(void **state)
{
    g_autofree char *t = NULL;

    vtpm_metrics_reset("1.0\"beta\\2\nx");
    vtpm_metrics_request_done("we\"ird\\name\n", "ok", 0.01);
    t = vtpm_metrics_render();
    assert_valid_exposition(t);
    assert_line(t, "vtpmd_build_info{version=\"1.0\\\"beta\\\\2\\nx\"} 1");
    assert_line(t, "vtpmd_requests_total{method=\"we\\\"ird\\\\name\\n\",outcome=\"ok\"} 1");
    assert_line(t, "vtpmd_request_duration_seconds_count{method=\"we\\\"ird\\\\name\\n\"} 1");
}

/* A stream of distinct method names (a bug upstream passing peer input)
 * must not grow the registry without bound. */
static void
test_method_cap(void **state)
{
    g_autofree char *t = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned series = 0;

    for (unsigned i = 0; i < 1000; i++) {
        g_autofree char *m = g_strdup_printf("m%04u", i);

        vtpm_metrics_request_done(m, "ok", 0.01);
    }
    t = vtpm_metrics_render();
    assert_valid_exposition(t);
    lines = g_strsplit(t, "\n", -1);
    for (size_t i = 0; lines[i]; i++)
        series += g_str_has_prefix(lines[i], "vtpmd_requests_total{");
    assert_int_equal(series, VTPM_METRICS_MAX_METHODS);
    assert_line(t, "vtpmd_requests_total{method=\"m0000\",outcome=\"ok\"} 1");
    assert_line(t, "vtpmd_requests_total{method=\"other\",outcome=\"ok\"} 937");
    assert_line(t, "vtpmd_request_duration_seconds_count{method=\"other\"} 937");
}

#define THREADS 4
#define PER_THREAD 5000

static gpointer
hammer(gpointer data)
{
    const char *method = data;

    for (unsigned i = 0; i < PER_THREAD; i++) {
        vtpm_metrics_request_begin();
        vtpm_metrics_request_done(method, i % 2 ? "ok" : "Busy", 0.003);
        vtpm_metrics_state_bytes(VTPM_METRICS_IN, 3);
        vtpm_metrics_request_end();
    }
    return NULL;
}

/* Handlers in the pool, the I/O thread and the writer at once: nothing
 * lost, nothing torn. */
static void
test_concurrent(void **state)
{
    const char *methods[THREADS] = { "spawn", "destroy", "spawn", "destroy" };
    GThread *th[THREADS];
    g_autofree char *t = NULL;

    for (int i = 0; i < THREADS; i++)
        th[i] = g_thread_new("hammer", hammer, (gpointer)methods[i]);
    for (int i = 0; i < 50; i++)
        g_free(vtpm_metrics_render());
    for (int i = 0; i < THREADS; i++)
        g_thread_join(th[i]);
    t = vtpm_metrics_render();
    assert_line(t, "vtpmd_requests_total{method=\"spawn\",outcome=\"ok\"} 5000");
    assert_line(t, "vtpmd_requests_total{method=\"spawn\",outcome=\"Busy\"} 5000");
    assert_line(t, "vtpmd_requests_total{method=\"destroy\",outcome=\"ok\"} 5000");
    assert_line(t, "vtpmd_request_duration_seconds_count{method=\"destroy\"} 10000");
    assert_line(t, "vtpmd_requests_in_flight 0");
    assert_line(t, "vtpmd_state_bytes_moved_total{direction=\"in\"} 60000");
}

static char *
tmpdir(void)
{
    g_autoptr(GError) gerr = NULL;
    char *d = g_dir_make_tmp("test_metrics-XXXXXX", &gerr);

    if (!d)
        fail_msg("%s", gerr->message);
    return d;
}

/* Names in @dir other than @keep. */
static unsigned
others_in(const char *dir, const char *keep)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *n;
    unsigned count = 0;

    while (d && (n = g_dir_read_name(d)))
        count += strcmp(n, keep) != 0;
    return count;
}

static void
test_write_file(void **state)
{
    g_autofree char *dir = tmpdir();
    g_autofree char *path = g_build_filename(dir, "vtpmd.prom", NULL);
    g_autofree char *bad = g_build_filename(dir, "missing", "vtpmd.prom", NULL);
    g_autofree char *data = NULL, *want = NULL;
    vtpm_error err = { 0 };
    struct stat st;
    mode_t old = umask(077);

    vtpm_metrics_request_done("spawn", "ok", 0.1);
    assert_int_equal(vtpm_metrics_write(path, &err), 0);
    umask(old);
    /* Readable by node_exporter whatever the umask. */
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_true(g_file_get_contents(path, &data, NULL, NULL));
    want = vtpm_metrics_render();
    assert_string_equal(data, want);
    assert_int_equal(others_in(dir, "vtpmd.prom"), 0);

    /* Over an existing file: replaced whole. */
    vtpm_metrics_request_done("spawn", "ok", 0.1);
    assert_int_equal(vtpm_metrics_write(path, &err), 0);
    g_free(data);
    assert_true(g_file_get_contents(path, &data, NULL, NULL));
    assert_line(data, "vtpmd_requests_total{method=\"spawn\",outcome=\"ok\"} 2");
    assert_int_equal(others_in(dir, "vtpmd.prom"), 0);

    /* A directory that does not exist: an error, nothing left behind. */
    assert_true(vtpm_metrics_write(bad, &err) < 0);
    assert_int_equal(err.code, VTPM_FAULT_INTERNAL);
    assert_non_null(strstr(err.message, "missing"));
    assert_int_equal(others_in(dir, "vtpmd.prom"), 0);

    g_unlink(path);
    g_rmdir(dir);
}

static void
collect(void *user)
{
    unsigned *calls = user;

    g_atomic_int_inc(calls);
    vtpm_metrics_set_libvirt_reconnects(42);
}

static void
test_writer(void **state)
{
    g_autofree char *dir = tmpdir();
    g_autofree char *path = g_build_filename(dir, "w.prom", NULL);
    g_autofree char *bad = g_build_filename(dir, "missing", "w.prom", NULL);
    g_autofree char *data = NULL;
    vtpm_metrics_writer *mw = NULL;
    vtpm_error err = { 0 };
    unsigned calls = 0;

    assert_true(vtpm_metrics_writer_start("relative.prom", 5, NULL, NULL, &mw, &err) < 0);
    assert_null(mw);
    assert_true(vtpm_metrics_writer_start(path, 0, NULL, NULL, &mw, &err) < 0);
    assert_null(mw);

    assert_int_equal(vtpm_metrics_writer_start(path, 1, collect, &calls, &mw, &err), 0);
    /* The first write happens at once; wait for the second (1 s later). */
    for (int i = 0; i < 600 && g_atomic_int_get(&calls) < 2; i++)
        g_usleep(100 * 1000);
    assert_true(g_atomic_int_get(&calls) >= 2);
    assert_true(g_file_get_contents(path, &data, NULL, NULL));
    assert_line(data, "vtpmd_up 1");
    assert_line(data, "vtpmd_libvirt_reconnects_total 42");
    vtpm_metrics_request_done("destroy", "ok", 0.01);

    /* Stopping writes once more, saying vtpmd is down. */
    vtpm_metrics_writer_stop(mw);
    g_free(data);
    assert_true(g_file_get_contents(path, &data, NULL, NULL));
    assert_line(data, "vtpmd_up 0");
    assert_line(data, "vtpmd_requests_total{method=\"destroy\",outcome=\"ok\"} 1");
    assert_int_equal(others_in(dir, "w.prom"), 0);
    vtpm_metrics_writer_stop(NULL);

    /* Writes that fail are never fatal: start and stop still work. */
    mw = NULL;
    assert_int_equal(vtpm_metrics_writer_start(bad, 1, NULL, NULL, &mw, &err), 0);
    vtpm_metrics_writer_stop(mw);
    assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));

    g_unlink(path);
    g_rmdir(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fresh, reset),
        cmocka_unit_test_setup(test_counters, reset),
        cmocka_unit_test_setup(test_checkpoints, reset),
        cmocka_unit_test_setup(test_histogram, reset),
        cmocka_unit_test_setup(test_label_escaping, reset),
        cmocka_unit_test_setup(test_method_cap, reset),
        cmocka_unit_test_setup(test_concurrent, reset),
        cmocka_unit_test_setup(test_write_file, reset),
        cmocka_unit_test_setup(test_writer, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
