/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <amqp.h>
#include <cmocka.h>

#include "amqp/conn.h"
#include "amqp/url.h"
#include "harness.h"

/* ---- environment ------------------------------------------------------- */

bool
vt_env_ready(const char **missing)
{
    static const char *const need[] = { "VT_AMQP_URL", "VT_ROOT", "VT_HOST_A_URI",
                                         "VT_HOST_A_ROOT", "VT_VTPMD", "VT_SRCDIR" };

    for (size_t i = 0; i < G_N_ELEMENTS(need); i++) {
        const char *v = g_getenv(need[i]);

        if (!v || !*v) {
            if (missing)
                *missing = need[i];
            return false;
        }
    }
    return true;
}

const char *
vt_env(const char *name)
{
    const char *v = g_getenv(name);

    if (!v || !*v)
        fail_msg("environment variable %s is not set (run through tests/integration.sh)",
                 name);
    return v;
}

static char *
host_var(const char *h, const char *what)
{
    g_autofree char *up = g_ascii_strup(h, -1);

    return g_strdup_printf("VT_HOST_%s_%s", up, what);
}

const char *
vt_host_uri(const char *h)
{
    g_autofree char *var = host_var(h, "URI");

    return vt_env(var);
}

char *
vt_host_path(const char *h, const char *path)
{
    g_autofree char *var = host_var(h, "ROOT");

    return g_build_filename(vt_env(var), path, NULL);
}

char *
vt_host_pathf(const char *h, const char *fmt, ...)
{
    g_autofree char *rel = NULL;
    va_list ap;

    va_start(ap, fmt);
    rel = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return vt_host_path(h, rel);
}

pid_t
vt_host_libvirtd_pid(const char *h)
{
    g_autofree char *pidfile = vt_host_path(h, "run/libvirtd.pid");
    g_autofree char *text = NULL;
    guint64 pid = 0;

    if (!g_file_get_contents(pidfile, &text, NULL, NULL) ||
        !g_ascii_string_to_unsigned(g_strstrip(text), 10, 1, G_MAXINT32, &pid, NULL))
        fail_msg("host %s: cannot read libvirtd's pid from %s", h, pidfile);
    return (pid_t)pid;
}

char *
vt_uuid(void)
{
    return g_uuid_string_random();
}

char *
vt_unique(const char *tag)
{
    static unsigned seq;

    return g_strdup_printf("wt-%d-%s-%u", (int)getpid(), tag, ++seq);
}

/* ---- vtpmd ------------------------------------------------------------- */

char *
vt_config_write(const vt_config_opts *o)
{
    g_autoptr(GString) t = g_string_new(NULL);
    g_autoptr(GError) gerr = NULL;
    g_autofree char *name = g_strdup_printf("vtpmd-%s.conf", o->worker_host);
    char *path = g_build_filename(vt_env("VT_ROOT"), name, NULL);

    g_string_append_printf(t, "[amqp]\nurl = %s\n", vt_env("VT_AMQP_URL"));
    g_string_append_printf(t, "[worker]\nhost = %s\n", o->worker_host);
    if (o->workers)
        g_string_append_printf(t, "workers = %u\n", o->workers);
    if (o->worker_extra)
        g_string_append_printf(t, "%s\n", o->worker_extra);
    g_string_append_printf(t, "[libvirt]\nuri = %s\nswtpm_enabled = %s\n",
                           o->libvirt_uri ? o->libvirt_uri : "qemu:///system",
                           o->swtpm_disabled ? "false" : "true");
    if (o->libvirt_extra)
        g_string_append_printf(t, "%s\n", o->libvirt_extra);
    g_string_append_printf(t, "[vtpm]\nallow_unencrypted = %s\n",
                           o->require_secret ? "false" : "true");
    if (o->vtpm_extra)
        g_string_append_printf(t, "%s\n", o->vtpm_extra);
    if (o->tail)
        g_string_append_printf(t, "%s\n", o->tail);
    /* 0600: it holds the broker password, and vtpmd refuses such a file
     * when others can read it.  CONSISTENT (a new file renamed over the
     * old): GLib 2.74 writes G_FILE_SET_CONTENTS_NONE in place without
     * truncating, so a shorter rewrite kept the old file's tail. */
    if (!g_file_set_contents_full(path, t->str, (gssize)t->len,
                                  G_FILE_SET_CONTENTS_CONSISTENT, 0600, &gerr))
        fail_msg("writing %s: %s", path, gerr->message);
    return path;
}

vt_vtpmd *
vt_vtpmd_spawn(const char *lv_host, const char *config, const char *worker_host,
               const char *const *env)
{
    vt_vtpmd *d = g_new0(vt_vtpmd, 1);
    g_autofree char *ns = NULL;
    g_autofree char *ns_arg = NULL;
    g_autofree char *valgrind = NULL;
    g_auto(GStrv) envp = g_get_environ();
    g_autoptr(GError) gerr = NULL;
    const char *argv[20];
    size_t n;
    int fd;

    d->lv_host = g_strdup(lv_host);
    d->worker_host = g_strdup(worker_host);
    d->routing_key = g_strdup_printf("vtpm.%s", worker_host);
    d->config = g_strdup(config);
    d->log_path = g_strdup_printf("%s/vtpmd-%s.log", vt_env("VT_ROOT"), worker_host);
    d->out_path = g_strdup_printf("%s/vtpmd-%s.out", vt_env("VT_ROOT"), worker_host);
    for (size_t i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        g_autofree char *k = NULL;

        if (!eq)
            fail_msg("environment entry '%s' is not NAME=value", env[i]);
        k = g_strndup(env[i], eq - env[i]);
        envp = g_environ_setenv(envp, k, eq + 1, TRUE);
    }
    /* vtpmd belongs to the host: it must see the host's /var/lib/libvirt,
     * /run/libvirt etc., exactly as in production.  nsenter execs it, so
     * the pid is vtpmd's own and signals reach it directly. */
    ns_arg = g_strdup_printf("--mount=/proc/%d/ns/mnt", (int)vt_host_libvirtd_pid(lv_host));
    n = 0;
    argv[n++] = "nsenter";
    argv[n++] = ns_arg;
    argv[n++] = "--";
    /* VT_VALGRIND=1: under memcheck, which reports to stderr (out_path),
     * where vt_vtpmd_sanitizer_report() finds it.  Possible leaks count
     * as well as definite ones: vtpmd joins every thread it starts, so a
     * thread's stack "possibly lost" at exit is a thread left running. */
    if (g_strcmp0(g_getenv("VT_VALGRIND"), "1") == 0) {
        /* By absolute path: a test may give vtpmd a PATH without it. */
        valgrind = g_find_program_in_path("valgrind");
        if (!valgrind)
            fail_msg("VT_VALGRIND=1 but valgrind is not on PATH");
        argv[n++] = valgrind;
        argv[n++] = "--tool=memcheck";
        argv[n++] = "--leak-check=full";
        argv[n++] = "--show-leak-kinds=definite,possible";
        argv[n++] = "--errors-for-leak-kinds=definite,possible";
        argv[n++] = "--error-exitcode=" G_STRINGIFY(VT_VALGRIND_EXIT);
        argv[n++] = "--num-callers=30";
        argv[n++] = "--trace-children=no";
    }
    argv[n++] = vt_env("VT_VTPMD");
    argv[n++] = "--config";
    argv[n++] = config;
    argv[n++] = "--log-file";
    argv[n++] = d->log_path;
    argv[n] = NULL;
    g_assert(n < G_N_ELEMENTS(argv));
    fd = open(d->out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        fail_msg("%s: %s", d->out_path, g_strerror(errno));
    if (!g_spawn_async_with_fds(NULL, (char **)argv, envp,
                                G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                &d->pid, -1, fd, fd, &gerr)) {
        close(fd);
        fail_msg("starting vtpmd for %s: %s", worker_host, gerr->message);
    }
    close(fd);
    return d;
}

bool
vt_vtpmd_running(vt_vtpmd *d)
{
    int st;
    pid_t r;

    if (d->reaped)
        return false;
    r = waitpid(d->pid, &st, WNOHANG);
    if (r == d->pid) {
        d->reaped = true;
        d->wait_status = st;
        return false;
    }
    return true;
}

static int
status_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int
vt_vtpmd_wait_exit(vt_vtpmd *d, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    while (vt_vtpmd_running(d)) {
        if (g_get_monotonic_time() >= end)
            return -1;
        g_usleep(10 * 1000);
    }
    return status_code(d->wait_status);
}

int
vt_vtpmd_term(vt_vtpmd *d, int timeout_ms)
{
    if (vt_vtpmd_running(d))
        kill(d->pid, SIGTERM);
    return vt_vtpmd_wait_exit(d, timeout_ms);
}

void
vt_vtpmd_stop_ok(vt_vtpmd *d)
{
    int code = vt_vtpmd_term(d, 30000);
    g_autofree char *report = vt_vtpmd_sanitizer_report(d);

    if (code != 0 || report) {
        vt_vtpmd_dump(d);
        fail_msg("vtpmd %s exited %d on SIGTERM, expected 0%s%s%s", d->worker_host, code,
                 code == -1 ? " (still running after 30 s)" : "",
                 report ? "; sanitizer: " : "", report ? report : "");
    }
}

void
vt_vtpmd_kill(vt_vtpmd *d)
{
    if (!vt_vtpmd_running(d))
        return;
    kill(d->pid, SIGKILL);
    if (vt_vtpmd_wait_exit(d, 10000) < 0)
        print_error("vtpmd %s (pid %d) survived SIGKILL for 10 s\n", d->worker_host,
                    (int)d->pid);
}

void
vt_vtpmd_free(vt_vtpmd *d)
{
    if (!d)
        return;
    vt_vtpmd_kill(d);
    g_free(d->lv_host);
    g_free(d->worker_host);
    g_free(d->routing_key);
    g_free(d->config);
    g_free(d->log_path);
    g_free(d->out_path);
    g_free(d);
}

static char *
slurp(const char *path)
{
    char *text = NULL;

    if (!path || !g_file_get_contents(path, &text, NULL, NULL))
        return g_strdup("");
    return text;
}

char *
vt_vtpmd_log(const vt_vtpmd *d)
{
    return slurp(d->log_path);
}

char *
vt_vtpmd_output(const vt_vtpmd *d)
{
    return slurp(d->out_path);
}

char *
vt_vtpmd_sanitizer_report(const vt_vtpmd *d)
{
    static const char *const marks[] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                         "runtime error:", "WARNING: AddressSanitizer",
                                         /* memcheck, when killed before its summary */
                                         "Invalid read of size", "Invalid write of size",
                                         "Invalid free()", "uninitialised value",
                                         "are definitely lost in loss record",
                                         "are possibly lost in loss record" };
    g_autofree char *out = vt_vtpmd_output(d);
    const char *vg;

    /* memcheck (VT_VALGRIND=1): every error, and every definite or
     * possible leak, counts in its summary at exit. */
    for (vg = strstr(out, "ERROR SUMMARY: "); vg; vg = strstr(vg + 1, "ERROR SUMMARY: ")) {
        if (g_ascii_strtoull(vg + strlen("ERROR SUMMARY: "), NULL, 10) > 0) {
            const char *eol = strchr(vg, '\n');

            return eol ? g_strndup(vg, eol - vg) : g_strdup(vg);
        }
    }
    for (size_t i = 0; i < G_N_ELEMENTS(marks); i++) {
        const char *p = strstr(out, marks[i]);

        if (p) {
            const char *bol = p, *eol = strchr(p, '\n');

            while (bol > out && bol[-1] != '\n')
                bol--;
            return eol ? g_strndup(bol, eol - bol) : g_strdup(bol);
        }
    }
    return NULL;
}

static void
dump_tail(const char *what, const char *text, size_t max)
{
    size_t n = strlen(text);

    print_error("---- %s (%s%zu bytes) ----\n%s\n", what, n > max ? "last " : "",
                MIN(n, max), n > max ? text + n - max : text);
}

void
vt_vtpmd_dump(const vt_vtpmd *d)
{
    g_autofree char *log = vt_vtpmd_log(d);
    g_autofree char *out = vt_vtpmd_output(d);

    dump_tail(d->log_path, log, 6000);
    dump_tail(d->out_path, out, 6000);
}

unsigned
vt_count_lines(const char *text, const char *const *needles)
{
    g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);
    unsigned n = 0;

    for (size_t i = 0; lines[i]; i++) {
        bool all = true;

        for (size_t k = 0; needles[k] && all; k++)
            all = strstr(lines[i], needles[k]) != NULL;
        if (all && lines[i][0])
            n++;
    }
    return n;
}

unsigned
vt_swtpm_log_lines(const char *host, const char *uuid, const char *needle)
{
    g_autofree char *log =
        vt_host_pathf(host, "var/log/swtpm/libvirt/qemu/instance-%s-swtpm.log", uuid);
    g_autofree char *text = NULL;
    const char *needles[] = { needle, NULL };

    if (!g_file_get_contents(log, &text, NULL, NULL))
        return 0;
    return vt_count_lines(text, needles);
}

bool
vt_vtpmd_wait_log(const vt_vtpmd *d, const char *const *needles, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        g_autofree char *log = vt_vtpmd_log(d);

        if (vt_count_lines(log, needles) > 0)
            return true;
        if (g_get_monotonic_time() >= end)
            return false;
        g_usleep(50 * 1000);
    }
}

bool
vt_vtpmd_wait_ready(vt_vtpmd *d, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vtpm_client_options o = { .url = vt_env("VT_AMQP_URL") };
    vtpm_client_call_opts co = { .timeout_ms = 1000, .request_id = "wt-ready" };
    g_autoptr(vtpm_client) c = NULL;
    bool ready = false;

    /* Its own client: until vtpmd has declared its queue, requests are
     * unroutable and dropped, and until some vtpmd has declared the
     * exchange, publishing closes the channel (the client connects again
     * at its next call).  So: short calls, again. */
    while (!ready) {
        vtpm_client_fault f;

        if (!vt_vtpmd_running(d)) {
            print_error("vtpmd %s exited with %d before answering get_capabilities\n",
                        d->worker_host, status_code(d->wait_status));
            vt_vtpmd_dump(d);
            break;
        }
        if (g_get_monotonic_time() >= end) {
            print_error("vtpmd %s did not answer get_capabilities within %d ms\n",
                        d->worker_host, timeout_ms);
            vt_vtpmd_dump(d);
            break;
        }
        if (!c && vtpm_client_connect(&o, &c, &f) < 0) {
            g_usleep(200 * 1000);
            continue;
        }
        ready = vtpm_client_call(c, d->worker_host, "get_capabilities", NULL, 0, &co, NULL,
                                 &f) == 0;
        if (!ready && f.details.source == VTPM_CLIENT_SOURCE_WORKER)
            print_error("vtpmd %s: get_capabilities answered %s: %s\n", d->worker_host, f.name,
                        f.message);
        else if (!ready && f.code != VTPM_CLIENT_TIMEOUT)
            g_usleep(200 * 1000);
    }
    return ready;
}

vt_vtpmd *
vt_vtpmd_start(const char *lv_host, const vt_config_opts *o, const char *const *env)
{
    g_autofree char *cfg = vt_config_write(o);
    vt_vtpmd *d = vt_vtpmd_spawn(lv_host, cfg, o->worker_host, env);

    if (!vt_vtpmd_wait_ready(d, VT_READY_MS)) {
        vt_vtpmd_free(d);
        fail_msg("vtpmd for %s did not become ready", o->worker_host);
    }
    return d;
}

/* ---- metrics files ------------------------------------------------------ */

bool
vt_prom_value(const char *path, const char *series, double *out)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    size_t n = strlen(series);

    if (!g_file_get_contents(path, &text, NULL, NULL))
        return false;
    lines = g_strsplit(text, "\n", -1);
    for (size_t i = 0; lines[i]; i++) {
        if (strncmp(lines[i], series, n) == 0 && lines[i][n] == ' ') {
            *out = g_ascii_strtod(lines[i] + n + 1, NULL);
            return true;
        }
    }
    return false;
}

bool
vt_prom_wait(const char *path, const char *series, double min, int timeout_ms, double *last)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    double v = -1;

    for (;;) {
        if (!vt_prom_value(path, series, &v))
            v = -1;
        if (v >= min || g_get_monotonic_time() > end)
            break;
        g_usleep(100 * 1000);
    }
    if (last)
        *last = v;
    return v >= min;
}

/* ---- services ---------------------------------------------------------- */

/* bash -c running @script with env.sh sourced and this run's broker
 * variables restored. */
static void
env_sh_argv(const char *script, char **env_path, const char *argv[6])
{
    *env_path = g_build_filename(vt_env("VT_SRCDIR"), "tests", "lib", "env.sh", NULL);
    argv[0] = "bash";
    argv[1] = "-c";
    /* env.sh empties VT_RMQ_PORT/NODE when sourced: put ours back. */
    argv[2] = "p=$VT_RMQ_PORT; n=$VT_RMQ_NODE; source \"$0\"; "
              "VT_RMQ_PORT=$p; VT_RMQ_NODE=$n; eval \"$1\"";
    argv[3] = *env_path;
    argv[4] = script;
    argv[5] = NULL;
}

int
vt_env_sh(const char *script, char **out)
{
    g_autofree char *env = NULL;
    g_autofree char *o = NULL, *e = NULL;
    g_autoptr(GError) gerr = NULL;
    const char *argv[6];
    int status = 0, code;

    env_sh_argv(script, &env, argv);
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e,
                      &status, &gerr))
        fail_msg("running bash: %s", gerr->message);
    code = status_code(status);
    if (code != 0)
        print_error("env.sh: '%s' exited %d:\n%s%s\n", script, code, o, e);
    if (out)
        *out = g_steal_pointer(&o);
    return code;
}

GPid
vt_env_sh_start(const char *script)
{
    g_autofree char *env = NULL;
    g_autoptr(GError) gerr = NULL;
    const char *argv[6];
    GPid pid = 0;

    env_sh_argv(script, &env, argv);
    if (!g_spawn_async(NULL, (char **)argv, NULL,
                       G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid,
                       &gerr))
        fail_msg("running bash: %s", gerr->message);
    return pid;
}

int
vt_env_sh_finish(GPid pid)
{
    int status = 0;

    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return status_code(status);
}

void
vt_rmq_restart(void)
{
    if (vt_env_sh("vt_rmq_restart", NULL) != 0)
        fail_msg("restarting the broker failed");
}

void
vt_libvirtd_kill(const char *h)
{
    pid_t pid = vt_host_libvirtd_pid(h);

    if (kill(pid, SIGKILL) < 0)
        fail_msg("host %s: kill -9 libvirtd (pid %d): %s", h, (int)pid, g_strerror(errno));
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++) {
        /* Our child it is not: it is gone when kill(0) fails (or a zombie
         * of another parent, which is as good). */
        g_autofree char *stat = NULL;
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);

        if (g_file_get_contents(path, &stat, NULL, NULL) && strstr(stat, ") Z "))
            break;
        g_usleep(10 * 1000);
    }
}

void
vt_libvirtd_restart(const char *h)
{
    g_autofree char *script = g_strdup_printf("vt_host_restart_libvirtd %s", h);

    if (vt_env_sh(script, NULL) != 0)
        fail_msg("host %s: restarting libvirtd failed", h);
}

int
vt_virsh(const char *h, char **out, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autofree char *o = NULL, *e = NULL;
    g_autoptr(GError) gerr = NULL;
    int status = 0;
    va_list ap;
    const char *a;

    g_ptr_array_add(argv, (char *)"virsh");
    g_ptr_array_add(argv, (char *)"-c");
    g_ptr_array_add(argv, (char *)vt_host_uri(h));
    va_start(ap, out);
    while ((a = va_arg(ap, const char *)))
        g_ptr_array_add(argv, (char *)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e,
                      &status, &gerr))
        fail_msg("running virsh: %s", gerr->message);
    if (out)
        *out = g_steal_pointer(&o);
    return status_code(status);
}

char *
vt_dom_state(const char *h, const char *uuid)
{
    g_autofree char *name = g_strdup_printf("instance-%s", uuid);
    char *out = NULL;

    if (vt_virsh(h, &out, "domstate", name, NULL) != 0) {
        g_free(out);
        return g_strdup("(no domain)");
    }
    return g_strstrip(out);
}

bool
vt_host_has_secret(const char *h, const char *uuid)
{
    g_autofree char *out = NULL;

    if (vt_virsh(h, &out, "secret-list", NULL) != 0)
        fail_msg("virsh secret-list on host %s failed", h);
    return strstr(out, uuid) != NULL;
}

void
vt_assert_dom_state(const char *h, const char *uuid, const char *want, const char *what)
{
    g_autofree char *st = vt_dom_state(h, uuid);

    if (strcmp(st, want) != 0)
        fail_msg("%s: domain of %s on host %s should be \"%s\", virsh says \"%s\"", what,
                 uuid, h, want, st);
}

void
vt_virsh_cleanup(const char *h)
{
    g_autofree char *out = NULL;
    g_auto(GStrv) names = NULL;

    if (vt_virsh(h, &out, "list", "--all", "--name", NULL) != 0)
        return;
    names = g_strsplit(out, "\n", -1);
    for (size_t i = 0; names[i]; i++) {
        const char *n = g_strstrip(names[i]);

        if (!g_str_has_prefix(n, "instance-"))
            continue;
        print_message("cleanup: removing leftover domain %s\n", n);
        vt_virsh(h, NULL, "destroy", n, NULL);
        vt_virsh(h, NULL, "undefine", n, "--tpm", NULL);
    }
}

/* ---- /proc and files --------------------------------------------------- */

GArray *
vt_find_procs(const char *prog, const char *needle)
{
    GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
    DIR *dir = opendir("/proc");
    struct dirent *e;

    if (!dir)
        fail_msg("/proc: %s", g_strerror(errno));
    while ((e = readdir(dir))) {
        g_autofree char *path = NULL, *cmd = NULL;
        guint64 pid;
        gsize len;
        const char *base;

        if (!g_ascii_string_to_unsigned(e->d_name, 10, 1, G_MAXINT32, &pid, NULL))
            continue;
        path = g_strdup_printf("/proc/%s/cmdline", e->d_name);
        if (!g_file_get_contents(path, &cmd, &len, NULL) || len == 0)
            continue;
        /* argv[0] ends at the first NUL */
        base = strrchr(cmd, '/');
        base = base ? base + 1 : cmd;
        if (strcmp(base, prog) != 0)
            continue;
        for (gsize i = 0; i + 1 < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        if (strstr(cmd, needle)) {
            pid_t p = (pid_t)pid;

            g_array_append_val(pids, p);
        }
    }
    closedir(dir);
    return pids;
}

bool
vt_wait_procs(const char *prog, const char *needle, bool want_running, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

    for (;;) {
        g_autoptr(GArray) pids = vt_find_procs(prog, needle);

        if ((pids->len > 0) == want_running)
            return true;
        if (g_get_monotonic_time() >= end)
            return false;
        g_usleep(50 * 1000);
    }
}

char *
vt_key_file_new(const char *name)
{
    char *path = g_build_filename(vt_env("VT_ROOT"), name, NULL);
    guint8 k[32];
    g_autoptr(GError) gerr = NULL;

    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (guint8)g_random_int();
    if (!g_file_set_contents_full(path, (const char *)k, sizeof(k), G_FILE_SET_CONTENTS_CONSISTENT,
                                  0600, &gerr))
        fail_msg("writing %s: %s", path, gerr->message);
    return path;
}

char *
vt_sha256_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, NULL))
        return NULL;
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

/* ---- TPM state and its keys ---------------------------------------------- */

GBytes *
vt_host_secret_value(const char *h, const char *uuid)
{
    g_autofree char *out = NULL;
    guchar *raw;
    gsize len = 0;

    if (vt_virsh(h, &out, "secret-get-value", uuid, NULL) != 0)
        fail_msg("virsh secret-get-value %s on host %s failed", uuid, h);
    raw = g_base64_decode(g_strstrip(out), &len);
    return g_bytes_new_take(raw, len);
}

static char *
tmp_dir_new(const char *tmpl)
{
    char *tmp = g_dir_make_tmp(tmpl, NULL);

    if (!tmp)
        fail_msg("cannot create a temporary directory");
    return tmp;
}

static void
tmp_dir_remove(const char *tmp)
{
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", tmp);

    g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL);
}

/*
 * A standalone swtpm (TPM 2.0) on the state directory @state, keyed with
 * the passphrase in <@tmp>/pw when @keyed, its sockets and log in @tmp;
 * the swtpm_ioctl commands @steps in order ($t is @tmp), then it is
 * stopped and gone.  Whether every step succeeded.
 */
static bool
swtpm_steps(const char *tmp, const char *state, bool keyed, const char *const *steps)
{
    g_autoptr(GString) script = g_string_new(NULL);
    g_autoptr(GError) gerr = NULL;
    int status = 0;
    const char *argv[] = { "bash", "-c", NULL, NULL };

    g_string_append_printf(script,
                           "t=%s; swtpm socket --tpm2 --tpmstate dir=%s "
                           "--ctrl type=unixio,path=$t/ctrl --server type=unixio,path=$t/srv %s "
                           "--log file=$t/log --daemon --pid file=$t/pid || exit 3; "
                           "for i in $(seq 50); do [ -S $t/ctrl ] && break; sleep 0.1; done; "
                           "rc=0; { true",
                           tmp, state, keyed ? "--key pwdfile=$t/pw,mode=aes-256-cbc" : "");
    for (size_t i = 0; steps[i]; i++)
        g_string_append_printf(script, " && swtpm_ioctl --unix $t/ctrl %s >/dev/null 2>&1",
                               steps[i]);
    g_string_append(script,
                    "; } || rc=1; swtpm_ioctl --unix $t/ctrl -s >/dev/null 2>&1; "
                    "for i in $(seq 50); do kill -0 $(cat $t/pid) 2>/dev/null || break; "
                    "sleep 0.1; done; kill $(cat $t/pid) 2>/dev/null; exit $rc");
    argv[2] = script->str;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                      &status, &gerr))
        fail_msg("running swtpm: %s", gerr->message);
    return g_spawn_check_wait_status(status, NULL);
}

GBytes *
vt_tpm_plaintext(const char *dir, GBytes *secret)
{
    static const char *const steps[] = { "-i", "--save permanent $t/plain", NULL };
    g_autofree char *tmp = tmp_dir_new("vt-decrypt-XXXXXX");
    g_autofree char *src = g_build_filename(dir, "tpm2", "tpm2-00.permall", NULL);
    g_autofree char *dst = g_build_filename(tmp, "tpm2-00.permall", NULL);
    g_autofree char *pw = g_build_filename(tmp, "pw", NULL);
    g_autofree char *plain = g_build_filename(tmp, "plain", NULL);
    g_autofree char *data = NULL, *text = NULL;
    g_autoptr(GError) gerr = NULL;
    GBytes *out = NULL;
    gsize len = 0;

    if (!g_file_get_contents(src, &data, &len, &gerr))
        fail_msg("reading %s: %s", src, gerr->message);
    if (!g_file_set_contents(dst, data, (gssize)len, &gerr))
        fail_msg("writing %s: %s", dst, gerr->message);
    if (secret && !g_file_set_contents_full(pw, g_bytes_get_data(secret, NULL),
                                            g_bytes_get_size(secret), G_FILE_SET_CONTENTS_CONSISTENT,
                                            0600, &gerr))
        fail_msg("writing %s: %s", pw, gerr->message);
    if (swtpm_steps(tmp, tmp, secret != NULL, steps) &&
        g_file_get_contents(plain, &text, &len, NULL) && len > 0)
        out = g_bytes_new_take(g_steal_pointer(&text), len);
    tmp_dir_remove(tmp);
    return out;
}

GBytes *
vt_tpm_transferred(GBytes *plain)
{
    static const char *const steps[] = { "--load permanent $t/in", "-i", NULL };
    g_autofree char *tmp = tmp_dir_new("vt-transfer-XXXXXX");
    g_autofree char *in = g_build_filename(tmp, "in", NULL);
    g_autofree char *st = g_build_filename(tmp, "st", NULL);
    g_autofree char *sub = g_build_filename(st, "tpm2", NULL);
    g_autoptr(GError) gerr = NULL;
    GBytes *out = NULL;

    if (!g_file_set_contents(in, g_bytes_get_data(plain, NULL), g_bytes_get_size(plain), &gerr))
        fail_msg("writing %s: %s", in, gerr->message);
    if (g_mkdir_with_parents(sub, 0700) != 0)
        fail_msg("mkdir %s: %s", sub, g_strerror(errno));
    if (!swtpm_steps(tmp, sub, false, steps))
        fail_msg("swtpm could not take the permanent state back (--load permanent, CMD_INIT)");
    out = vt_tpm_plaintext(st, NULL);
    tmp_dir_remove(tmp);
    if (!out)
        fail_msg("swtpm could not read back the state it wrote from a permanent state blob");
    return out;
}

gsize
vt_bytes_differing(GBytes *a, GBytes *b)
{
    gsize la, lb, n = 0;
    const guint8 *pa = g_bytes_get_data(a, &la), *pb = g_bytes_get_data(b, &lb);

    for (gsize k = 0; k < MIN(la, lb); k++)
        n += pa[k] != pb[k];
    return n + (la > lb ? la - lb : lb - la);
}

/* ---- requests ---------------------------------------------------------- */

static void
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void
pack_strmap(msgpack_packer *pk, const char *const *kv)
{
    size_t n = 0;

    while (kv && kv[2 * n])
        n++;
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) {
        pack_str(pk, kv[2 * i]);
        pack_str(pk, kv[2 * i + 1] ? kv[2 * i + 1] : "");
    }
}

static GBytes *
sbuffer_bytes(msgpack_sbuffer *sb)
{
    GBytes *b = g_bytes_new(sb->data, sb->size);

    msgpack_sbuffer_destroy(sb);
    return b;
}

GBytes *
vt_args_spawn(const vt_spawn_spec *s)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, s->power_on >= 0 ? 2 : 1);
    pack_str(&pk, "instance");
    msgpack_pack_map(&pk, s->kernel ? 5 : 4);
    pack_str(&pk, "uuid");
    pack_str(&pk, s->uuid);
    pack_str(&pk, "name");
    pack_str(&pk, "wt-instance");
    pack_str(&pk, "flavor");
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "name");
    pack_str(&pk, s->flavor ? s->flavor : "m1.wt");
    pack_str(&pk, "vcpus");
    msgpack_pack_unsigned_int(&pk, s->vcpus ? s->vcpus : 1);
    pack_str(&pk, "memory_mb");
    msgpack_pack_unsigned_int(&pk, s->memory_mb ? s->memory_mb : 64);
    pack_str(&pk, "extra_specs");
    pack_strmap(&pk, s->extra_specs);
    pack_str(&pk, "image");
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "id");
    pack_str(&pk, s->image_id ? s->image_id : "firmware-only");
    pack_str(&pk, "name");
    pack_str(&pk, "none");
    pack_str(&pk, "properties");
    pack_strmap(&pk, s->properties);
    if (s->kernel) {
        pack_str(&pk, "boot");
        msgpack_pack_map(&pk, 1);
        pack_str(&pk, "kernel");
        pack_str(&pk, s->kernel);
    }
    if (s->power_on >= 0) {
        pack_str(&pk, "power_on");
        if (s->power_on)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    return sbuffer_bytes(&sb);
}

GBytes *
vt_args_destroy(const char *uuid, int keep_vtpm)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, keep_vtpm >= 0 ? 2 : 1);
    pack_str(&pk, "instance");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "uuid");
    pack_str(&pk, uuid);
    if (keep_vtpm >= 0) {
        pack_str(&pk, "keep_vtpm");
        if (keep_vtpm)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    return sbuffer_bytes(&sb);
}

GBytes *
vt_request(const char *method, GBytes *args, const char *request_id, uint64_t deadline_ms)
{
    return vtpm_proto_request_new(method, args ? g_bytes_get_data(args, NULL) : NULL,
                                  args ? g_bytes_get_size(args) : 0, request_id, deadline_ms);
}

/* ---- msgpack objects --------------------------------------------------- */

const msgpack_object *
vt_obj_at(const msgpack_object *map, const char *path)
{
    g_auto(GStrv) parts = g_strsplit(path, ".", -1);
    const msgpack_object *o = map;

    for (size_t i = 0; parts[i] && o; i++)
        o = vtpm_proto_map_get(o, parts[i]);
    return o;
}

char *
vt_obj_str(const msgpack_object *map, const char *path)
{
    const msgpack_object *o = vt_obj_at(map, path);

    if (!o || o->type != MSGPACK_OBJECT_STR)
        return NULL;
    return g_strndup(o->via.str.ptr, o->via.str.size);
}

bool
vt_obj_bool(const msgpack_object *map, const char *path)
{
    const msgpack_object *o = vt_obj_at(map, path);

    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        fail_msg("result.%s: expected a bool, got %s", path,
                 !o ? "nothing" : "another type");
    return o->via.boolean;
}

uint64_t
vt_obj_uint(const msgpack_object *map, const char *path, const char *what)
{
    const msgpack_object *o = vt_obj_at(map, path);

    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        fail_msg("%s: result.%s should be an unsigned integer", what, path);
    return o->via.u64;
}

bool
vt_array_has_str(const msgpack_object *arr, const char *s)
{
    size_t n = strlen(s);

    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];

        if (e->type == MSGPACK_OBJECT_STR && e->via.str.size == n &&
            memcmp(e->via.str.ptr, s, n) == 0)
            return true;
    }
    return false;
}

/* ---- raw AMQP ---------------------------------------------------------- */

struct vt_amqp {
    amqp_connection_state_t conn;
    bool dead;
};

static bool
rpc_ok(vt_amqp *a)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);

    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        a->dead = true;
    return !a->dead;
}

vt_amqp *
vt_amqp_open(const char *url)
{
    g_autoptr(GPtrArray) nodes = NULL;
    vtpm_amqp_tls no_tls = { 0 };
    vtpm_error err = { 0 };
    vt_amqp *a;

    if (vtpm_amqp_url_parse(url, &nodes, &err) < 0)
        fail_msg("the broker URL: %s", err.message);
    a = g_new0(vt_amqp, 1);
    if (vtpm_amqp_connect(nodes->pdata[0], &no_tls, NULL, &a->conn, &err) < 0) {
        g_free(a);
        return NULL;
    }
    amqp_channel_open(a->conn, 1);
    if (!rpc_ok(a)) {
        vt_amqp_close(a);
        return NULL;
    }
    return a;
}

void
vt_amqp_close(vt_amqp *a)
{
    if (!a)
        return;
    if (!a->dead) {
        amqp_channel_close(a->conn, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(a->conn);
    g_free(a);
}

int
vt_amqp_declare_durable(vt_amqp *a, const char *queue)
{
    amqp_queue_declare(a->conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    return rpc_ok(a) ? 0 : -1;
}

int
vt_amqp_consume(vt_amqp *a, const char *queue)
{
    amqp_basic_qos(a->conn, 1, 0, 100, 0);
    if (!rpc_ok(a))
        return -1;
    amqp_basic_consume(a->conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return rpc_ok(a) ? 0 : -1;
}

int
vt_amqp_next(vt_amqp *a, int timeout_ms, char **corr, GBytes **body)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    amqp_envelope_t e;
    amqp_rpc_reply_t r;
    const amqp_basic_properties_t *p;

    if (a->dead)
        return -1;
    amqp_maybe_release_buffers(a->conn);
    r = amqp_consume_message(a->conn, &e, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
        return 1;
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        a->dead = true;
        return -1;
    }
    p = &e.message.properties;
    *corr = (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
                ? g_strndup(p->correlation_id.bytes, p->correlation_id.len)
                : g_strdup("");
    *body = g_bytes_new(e.message.body.bytes, e.message.body.len);
    if (amqp_basic_ack(a->conn, 1, e.delivery_tag, 0) != AMQP_STATUS_OK)
        a->dead = true;
    amqp_destroy_envelope(&e);
    return 0;
}
