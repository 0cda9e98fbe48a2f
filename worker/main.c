/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd: the per-host vTPM worker.  Wiring only: configuration, logging,
 * signals, and the three parts (worker context, dispatcher, AMQP runtime).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <glib.h>

#include "amqp/url.h"
#include "broker.h"
#include "config.h"
#include "dispatch.h"
#include "inject.h"
#include "log.h"
#include "metrics.h"
#include "preflight.h"
#include "worker.h"

#define DEFAULT_CONFIG "/etc/vtpmd/vtpmd.conf"

/* ---- signals -------------------------------------------------------------- */

/* Signals go to one thread that waits for them; every other thread (pool,
 * libvirt, AMQP) inherits the blocked mask. */
typedef struct {
    sigset_t set;
    vtpm_dispatch *dispatch;
    gint quit;      /* atomic: set before the wake-up that ends the thread */
    GThread *thread;
} signals;

static gpointer
signal_thread(gpointer data)
{
    signals *s = data;
    int sig;

    for (;;) {
        if (sigwait(&s->set, &sig) != 0)
            continue;
        if (g_atomic_int_get(&s->quit))
            return NULL;
        if (sig == SIGHUP) {
            int rc = vtpm_log_reopen();

            if (rc < 0)
                g_warning("SIGHUP: cannot reopen %s: %s", vtpm_log_path(), g_strerror(-rc));
            else
                g_message("SIGHUP: log reopened");
            continue;
        }
        g_message("%s: draining: no new requests; finishing those running, handing back "
                  "those not started", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        vtpm_dispatch_stop(s->dispatch);
    }
}

/* Before any thread starts: they all inherit the mask. */
static void
signals_block(signals *s)
{
    sigemptyset(&s->set);
    sigaddset(&s->set, SIGTERM);
    sigaddset(&s->set, SIGINT);
    sigaddset(&s->set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s->set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void
signals_start(signals *s, vtpm_dispatch *dispatch)
{
    s->dispatch = dispatch;
    s->thread = g_thread_new("signals", signal_thread, s);
}

/* Ends the thread: a signal it waits for (blocked everywhere, so sigwait
 * takes it) with the quit flag set.  A real signal in the meantime is
 * taken as the wake-up just the same. */
static void
signals_stop(signals *s)
{
    if (!s->thread)
        return;
    g_atomic_int_set(&s->quit, 1);
    kill(getpid(), SIGHUP);
    g_thread_join(g_steal_pointer(&s->thread));
}

/* ---- metrics ---------------------------------------------------------------- */

/* Values kept elsewhere, pulled before each write of the metrics file. */
static void
metrics_collect(void *user)
{
    vtpm_worker *w = user;

    vtpm_metrics_set_libvirt_reconnects(vtpm_virt_reconnects(w->virt));
}

/* ---- main ------------------------------------------------------------------ */

int
main(int argc, char **argv)
{
    g_autofree char *config_path = NULL;
    g_autofree char *level = NULL;
    g_autofree char *log_path = NULL;
    GLogLevelFlags log_max = G_LOG_LEVEL_INFO;
    gboolean check_only = FALSE, version = FALSE;
    GOptionEntry entries[] = {
        { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
          "configuration file (default " DEFAULT_CONFIG ")", "FILE" },
        { "log-level", 'l', 0, G_OPTION_ARG_STRING, &level,
          "debug, info (default), warning or error", "LEVEL" },
        { "log-file", 0, 0, G_OPTION_ARG_FILENAME, &log_path,
          "append logs to FILE instead of stderr (SIGHUP reopens it)", "FILE" },
        { "check-config", 0, 0, G_OPTION_ARG_NONE, &check_only,
          "validate the configuration and exit", NULL },
        { "version", 0, 0, G_OPTION_ARG_NONE, &version, "print the version and exit", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- emulated vTPM worker for cloud instances");
    g_autoptr(GError) gerr = NULL;
    g_autoptr(vtpm_config) cfg = NULL;
    vtpm_worker w;
    vtpm_dispatch *d = NULL;
    vtpm_broker *a = NULL;
    vtpm_broker_params ap = { 0 };
    g_auto(GStrv) failover = NULL;
    vtpm_broker_callbacks cb = { 0 };
    vtpm_metrics_writer *mw = NULL;
    vtpm_error err = { 0 };
    signals sigs = { 0 };
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Consumes vTPM lifecycle requests from RabbitMQ (docs/protocol.md) and drives\n"
        "libvirt/QEMU/swtpm.  SIGTERM drains and exits 0; SIGHUP reopens the log file.\n");
    if (!g_option_context_parse(ctx, &argc, &argv, &gerr)) {
        fprintf(stderr, "vtpmd: %s\n", gerr->message);
        return 2;
    }
    if (version) {
        printf("vtpmd %s\n", VTPM_VERSION);
        return 0;
    }
    if (level && !vtpm_log_parse_level(level, &log_max)) {
        fprintf(stderr, "vtpmd: --log-level: unknown level '%s' (debug, info, warning, error)\n", level);
        return 2;
    }
    /* Nothing vtpmd runs (swtpm, swtpm_ioctl, swtpm_setup) needs to gain
     * privileges through setuid or file capabilities: refuse them for
     * good, under systemd (NoNewPrivileges=yes does the same) or not. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        fprintf(stderr, "vtpmd: PR_SET_NO_NEW_PRIVS: %s\n", g_strerror(errno));
        return 1;
    }
#ifndef __SANITIZE_ADDRESS__
    /* A core file of vtpmd would hold what it holds in memory: users'
     * passphrases of requests in flight, libvirt secret values, the
     * deployment keys.  No core, and no ptrace by anyone without
     * CAP_SYS_PTRACE; a crash is debugged from its log and a vtpm-replay
     * recording instead.  (Not in the sanitizer build: LeakSanitizer
     * ptraces the process to stop it at exit.) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        fprintf(stderr, "vtpmd: PR_SET_DUMPABLE: %s\n", g_strerror(errno));
        return 1;
    }
#endif
    if ((rc = vtpm_log_init(log_path, log_max)) < 0) {
        fprintf(stderr, "vtpmd: --log-file %s: %s\n", log_path, g_strerror(-rc));
        return 1;
    }

    if (vtpm_config_load(config_path ? config_path : DEFAULT_CONFIG, &cfg, &err) < 0) {
        g_critical("configuration: %s", err.message);
        return 1;
    }
    if (check_only) {
        printf("%s: OK\n", cfg->path);
        return 0;
    }

    vtpm_inject_init();
    vtpm_metrics_reset(VTPM_VERSION);

    signals_block(&sigs);

    if (vtpm_preflight_swtpm(cfg, &err) < 0) {
        g_critical("start-up check: %s", err.message);
        return 1;
    }
    if (vtpm_worker_init(&w, cfg, &err) < 0) {
        g_critical("start-up: %s", err.message);
        return 1;
    }
    if (!cfg->libvirt.swtpm_enabled) {
        g_autoptr(virConnect) conn = NULL;

        /* vtpmd starts without libvirtd and reconnects later; then it
         * cannot look, and says so rather than refusing to start. */
        if ((rc = vtpm_virt_conn(w.virt, &conn, NULL, &err)) == 0)
            rc = vtpm_preflight_domains(conn, cfg, &err);
        if (rc == -(int)VTPM_FAULT_HYPERVISOR_ERROR) {
            g_warning("start-up check skipped: cannot list the domains of %s to make sure "
                      "none has an emulated TPM while swtpm_enabled is false: %s",
                      cfg->libvirt.uri, err.message);
        } else if (rc < 0) {
            g_critical("start-up check: %s", err.message);
            vtpm_worker_clear(&w);
            return 1;
        }
    }
    if (vtpm_dispatch_new(&w, cfg->worker.workers, cfg->worker.dedupe_size, &d, &err) < 0) {
        g_critical("start-up: %s", err.message);
        vtpm_worker_clear(&w);
        return 1;
    }
    vtpm_dispatch_callbacks(d, &cb);
    ap.url = cfg->amqp.url;
    failover = vtpm_amqp_url_list_split(cfg->amqp.failover_urls);
    ap.failover_urls = (const char *const *)failover;
    ap.cacert = cfg->amqp.cacert;
    ap.cert = cfg->amqp.cert;
    ap.key = cfg->amqp.key;
    ap.exchange = cfg->amqp.exchange;
    ap.topic = cfg->amqp.topic;
    ap.host = cfg->worker.host;
    ap.queue_type = cfg->amqp.queue_type;
    ap.prefetch = cfg->amqp.prefetch;
    ap.heartbeat = cfg->amqp.heartbeat;
    ap.max_message_bytes = cfg->worker.max_message_bytes;
    if (vtpm_broker_new(&ap, &cb, &a, &err) < 0) {
        g_critical("start-up: %s", err.message);
        vtpm_dispatch_free(d);
        vtpm_worker_clear(&w);
        return 1;
    }
    vtpm_dispatch_set_amqp(d, a);
    vtpm_broker_set_drain_check(a, vtpm_dispatch_drained);
    w.amqp = a;
    signals_start(&sigs, d);

    {
        g_autoptr(vtpm_caps_snapshot) s = vtpm_worker_caps(&w);
        g_message("vtpmd %s starting: host=%s queue=%s.%s libvirt=%s virt_type=%s (%s) "
                  "workers=%u traits=%u",
                  VTPM_VERSION, cfg->worker.host, cfg->amqp.topic, cfg->worker.host,
                  cfg->libvirt.uri, w.virt_type, w.virt_type_reason, cfg->worker.workers, s->caps->traits->len);
    }
    /* Metrics are for the operator: a file that cannot be written is
     * logged by the writer, never a reason not to serve. */
    if (cfg->metrics.textfile &&
        vtpm_metrics_writer_start(cfg->metrics.textfile, cfg->metrics.interval, metrics_collect,
                                  &w, &mw, &err) < 0)
        g_warning("%s", err.message);
    else if (mw)
        g_message("metrics: writing %s every %u s", cfg->metrics.textfile, cfg->metrics.interval);
    rc = vtpm_broker_run(a, &err);
    if (rc < 0)
        g_critical("AMQP: %s", err.message);
    else
        g_message("stopped cleanly");

    /* Before the broker goes: a signal until now still reaches it. */
    signals_stop(&sigs);
    w.amqp = NULL;
    vtpm_dispatch_free(d);
    /* After the pool finished, before libvirt goes: the last write
     * counts every request and says vtpmd_up 0. */
    vtpm_metrics_writer_stop(mw);
    vtpm_broker_free(a);
    vtpm_worker_clear(&w);
    vtpm_log_flush();
    return rc < 0 ? 1 : 0;
}
