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
#include "checkpointer.h"
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

/* ---- options ----------------------------------------------------------------- */

/* What a step returns when main should go on; anything else is the exit
 * status. */
#define CONTINUE (-1)

typedef struct {
    char *config_path;
    char *level;
    char *log_path;
    gboolean check_only;
    gboolean version;
} options;

static void
options_clear(options *o)
{
    g_free(o->config_path);
    g_free(o->level);
    g_free(o->log_path);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(options, options_clear)

static int
parse_options(int *argc, char ***argv, options *o)
{
    GOptionEntry entries[] = {
        { "config", 'c', 0, G_OPTION_ARG_FILENAME, &o->config_path,
          "configuration file (default " DEFAULT_CONFIG ")", "FILE" },
        { "log-level", 'l', 0, G_OPTION_ARG_STRING, &o->level,
          "debug, info (default), warning or error", "LEVEL" },
        { "log-file", 0, 0, G_OPTION_ARG_FILENAME, &o->log_path,
          "append logs to FILE instead of stderr (SIGHUP reopens it)", "FILE" },
        { "check-config", 0, 0, G_OPTION_ARG_NONE, &o->check_only,
          "validate the configuration and exit", NULL },
        { "version", 0, 0, G_OPTION_ARG_NONE, &o->version, "print the version and exit", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- emulated vTPM worker for cloud instances");
    g_autoptr(GError) gerr = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Consumes vTPM lifecycle requests from RabbitMQ (docs/protocol.md) and drives\n"
        "libvirt/QEMU/swtpm.  SIGTERM drains and exits 0; SIGHUP reopens the log file.\n");
    if (!g_option_context_parse(ctx, argc, argv, &gerr)) {
        fprintf(stderr, "vtpmd: %s\n", gerr->message);
        return 2;
    }
    if (o->version) {
        printf("vtpmd %s\n", VTPM_VERSION);
        return 0;
    }
    return CONTINUE;
}

/* Nothing vtpmd runs (swtpm, swtpm_ioctl, swtpm_setup) needs to gain
 * privileges through setuid or file capabilities: refuse them for good,
 * under systemd (NoNewPrivileges=yes does the same) or not. */
static int
harden(void)
{
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
    return CONTINUE;
}

static int
open_log(const options *o)
{
    GLogLevelFlags log_max = G_LOG_LEVEL_INFO;
    int rc;

    if (o->level && !vtpm_log_parse_level(o->level, &log_max)) {
        fprintf(stderr, "vtpmd: --log-level: unknown level '%s' (debug, info, warning, error)\n",
                o->level);
        return 2;
    }
    if ((rc = vtpm_log_init(o->log_path, log_max)) < 0) {
        fprintf(stderr, "vtpmd: --log-file %s: %s\n", o->log_path, g_strerror(-rc));
        return 1;
    }
    return CONTINUE;
}

static int
load_config(const options *o, vtpm_config **out)
{
    vtpm_error err = { 0 };

    if (vtpm_config_load(o->config_path ? o->config_path : DEFAULT_CONFIG, out, &err) < 0) {
        g_critical("configuration: %s", err.message);
        return 1;
    }
    if (o->check_only) {
        printf("%s: OK\n", (*out)->path);
        return 0;
    }
    return CONTINUE;
}

/* ---- the daemon's parts ----------------------------------------------------------- */

typedef struct {
    vtpm_config *cfg;
    bool worker_up;          /* w needs vtpm_worker_clear */
    vtpm_worker w;
    vtpm_dispatch *d;
    vtpm_broker *a;
    vtpm_metrics_writer *mw;
    signals sigs;
} vtpmd;

/* Threads first (the signal thread may still stop the broker), then the
 * pool, then the checkpointer (whose snapshots the pool queued), then the
 * last metrics write (it counts every request and says vtpmd_up 0), then
 * the broker, then libvirt. */
static void
vtpmd_clear(vtpmd *v)
{
    signals_stop(&v->sigs);
    v->w.amqp = NULL;
    vtpm_dispatch_free(v->d);
    vtpm_checkpointer_stop(g_steal_pointer(&v->w.ckpt));
    vtpm_metrics_writer_stop(v->mw);
    vtpm_broker_free(v->a);
    if (v->worker_up)
        vtpm_worker_clear(&v->w);
    vtpm_config_free(v->cfg);
    vtpm_log_flush();
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpmd, vtpmd_clear)

/* With swtpm_enabled = false, no domain may have an emulated TPM.
 * vtpmd starts without libvirtd and reconnects later; then it cannot
 * look, and says so rather than refusing to start. */
static int
check_domains(vtpmd *v, vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    int rc;

    if ((rc = vtpm_virt_conn(v->w.virt, &conn, NULL, err)) == 0)
        rc = vtpm_preflight_domains(conn, v->cfg, err);
    if (rc == -(int)VTPM_FAULT_HYPERVISOR_ERROR) {
        g_warning("start-up check skipped: cannot list the domains of %s to make sure "
                  "none has an emulated TPM while swtpm_enabled is false: %s",
                  v->cfg->libvirt.uri, err->message);
        return 0;
    }
    return rc;
}

static int
start_broker(vtpmd *v, vtpm_error *err)
{
    const vtpm_config *cfg = v->cfg;
    g_auto(GStrv) failover = vtpm_amqp_url_list_split(cfg->amqp.failover_urls);
    vtpm_broker_params ap = {
        .url = cfg->amqp.url,
        .failover_urls = (const char *const *)failover,
        .cacert = cfg->amqp.cacert,
        .cert = cfg->amqp.cert,
        .key = cfg->amqp.key,
        .exchange = cfg->amqp.exchange,
        .topic = cfg->amqp.topic,
        .host = cfg->worker.host,
        .queue_type = cfg->amqp.queue_type,
        .prefetch = cfg->amqp.prefetch,
        .heartbeat = cfg->amqp.heartbeat,
        .max_message_bytes = cfg->worker.max_message_bytes,
    };
    vtpm_broker_callbacks cb = { 0 };
    int rc;

    vtpm_dispatch_callbacks(v->d, &cb);
    if ((rc = vtpm_broker_new(&ap, &cb, &v->a, err)) < 0)
        return rc;
    vtpm_dispatch_set_amqp(v->d, v->a);
    vtpm_broker_set_drain_check(v->a, vtpm_dispatch_drained);
    v->w.amqp = v->a;
    return 0;
}

/* Everything up to serving: checks, libvirt, the pool, the broker.  A
 * check that finds the host unfit is a "start-up check"; anything else
 * that fails is "start-up". */
static int
start(vtpmd *v)
{
    const vtpm_config *cfg = v->cfg;
    vtpm_error err = { 0 };

    if (vtpm_preflight_swtpm(cfg, &err) < 0) {
        g_critical("start-up check: %s", err.message);
        return 1;
    }
    v->worker_up = true;
    if (vtpm_worker_init(&v->w, v->cfg, &err) < 0) {
        g_critical("start-up: %s", err.message);
        return 1;
    }
    if (!cfg->libvirt.swtpm_enabled && check_domains(v, &err) < 0) {
        g_critical("start-up check: %s", err.message);
        return 1;
    }
    /* Before the broker: a host that comes back settles what was
     * evacuated away before it takes a request. */
    if (vtpm_checkpointer_start(&v->w, &v->w.ckpt, &err) < 0 ||
        vtpm_dispatch_new(&v->w, cfg->worker.workers, cfg->worker.dedupe_size, &v->d,
                          &err) < 0 ||
        start_broker(v, &err) < 0) {
        g_critical("start-up: %s", err.message);
        return 1;
    }
    return CONTINUE;
}

static void
log_start(vtpmd *v)
{
    const vtpm_config *cfg = v->cfg;
    g_autoptr(vtpm_caps_snapshot) s = vtpm_worker_caps(&v->w);

    g_message("vtpmd %s starting: host=%s queue=%s.%s libvirt=%s virt_type=%s (%s) "
              "workers=%u traits=%u",
              VTPM_VERSION, cfg->worker.host, cfg->amqp.topic, cfg->worker.host,
              cfg->libvirt.uri, v->w.virt_type, v->w.virt_type_reason, cfg->worker.workers,
              s->caps->traits->len);
    if (v->w.ek_ca)
        g_message("EK certificates of new TPMs: the deployment's CA %s (sha256 %s)",
                  vtpm_ek_ca_subject(v->w.ek_ca), vtpm_ek_ca_sha256(v->w.ek_ca));
    else
        g_message("EK certificates of new TPMs: libvirt's host-local CA ([vtpm] ek_ca_cert "
                  "is not set), not verifiable across hosts");
    if (v->w.pcr_banks_error)
        g_warning("PCR banks of this host's swtpm unknown: %s", v->w.pcr_banks_error);
}

/* Metrics are for the operator: a file that cannot be written is logged
 * by the writer, never a reason not to serve. */
static void
start_metrics(vtpmd *v)
{
    const vtpm_config *cfg = v->cfg;
    vtpm_error err = { 0 };

    if (!cfg->metrics.textfile)
        return;
    if (vtpm_metrics_writer_start(cfg->metrics.textfile, cfg->metrics.interval, metrics_collect,
                                  &v->w, &v->mw, &err) < 0)
        g_warning("%s", err.message);
    else
        g_message("metrics: writing %s every %u s", cfg->metrics.textfile,
                  cfg->metrics.interval);
}

/* Serve until a signal's drain ends (0) or the AMQP runtime fails (1). */
static int
serve(vtpmd *v)
{
    vtpm_error err = { 0 };

    signals_start(&v->sigs, v->d);
    log_start(v);
    start_metrics(v);
    if (vtpm_broker_run(v->a, &err) < 0) {
        g_critical("AMQP: %s", err.message);
        return 1;
    }
    g_message("stopped cleanly");
    return 0;
}

/* ---- main ------------------------------------------------------------------ */

int
main(int argc, char **argv)
{
    g_auto(options) o = { 0 };
    g_auto(vtpmd) v = { 0 };
    int rc;

    if ((rc = parse_options(&argc, &argv, &o)) != CONTINUE || (rc = harden()) != CONTINUE ||
        (rc = open_log(&o)) != CONTINUE || (rc = load_config(&o, &v.cfg)) != CONTINUE)
        return rc;
    vtpm_inject_init();
    vtpm_metrics_reset(VTPM_VERSION);
    /* Before any thread starts: they all inherit the mask. */
    signals_block(&v.sigs);
    if ((rc = start(&v)) != CONTINUE)
        return rc;
    return serve(&v);
}
