/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A harness for integration suites that drive a real vtpmd over the wire.
 * tests/integration.sh starts the services (a private RabbitMQ node, the
 * libvirt "compute host" a in a mount namespace) and exports where they
 * are; the harness starts vtpmd inside that host's namespace, talks to it
 * through the message level of libvtpmclient (client/msg.h), and looks at the host the way
 * an operator would (virsh, /proc, the host's file tree).
 *
 * The harness is for cmocka tests: a helper whose failure means the test
 * environment is broken (vtpmd never answers, a fork fails) fails the
 * running test itself with a message saying what was expected; helpers
 * whose outcome is what a test examines return it instead.
 *
 * Environment: VT_AMQP_URL, VT_ROOT, VT_RMQ_NODE, VT_RMQ_PORT,
 * VT_HOST_<H>_URI, VT_HOST_<H>_ROOT (integration.sh), VT_VTPMD (the vtpmd
 * binary; meson passes it), VT_SRCDIR (the source tree, for env.sh).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>
#include <msgpack.h>

#include "client/msg.h"
#include "vtpm/error.h"
#include "vtpm/proto.h"

/* Generous: a spawn on TCG with swtpm_setup takes seconds, more under ASan. */
#define VT_CALL_MS 180000
#define VT_READY_MS 90000

/* ---- environment -------------------------------------------------------- */

/* Whether integration.sh set up the services (else a suite skips: 77). */
bool vt_env_ready(const char **missing);
/* g_getenv(@name); fails the test when it is unset. */
const char *vt_env(const char *name);
/* VT_HOST_<H>_URI of host @h ("a"). */
const char *vt_host_uri(const char *h);
/* $VT_HOST_<H>_ROOT/@path: a path as host @h sees it, from outside. */
char *vt_host_path(const char *h, const char *path);
/* vt_host_path of a path made from @fmt. */
char *vt_host_pathf(const char *h, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* The pid of host @h's libvirtd (its mount namespace is the host's). */
pid_t vt_host_libvirtd_pid(const char *h);
/* A fresh random UUID (lower case). */
char *vt_uuid(void);
/* A name unique in this run, e.g. "wt-<pid>-<tag>-<n>". */
char *vt_unique(const char *tag);

/* ---- vtpmd ----------------------------------------------------------------- */

typedef struct {
    const char *worker_host; /* [worker] host (required) */
    bool swtpm_disabled;     /* [libvirt] swtpm_enabled = false */
    unsigned workers;        /* [worker] workers; 0: vtpmd's default */
    const char *worker_extra;  /* lines added to [worker] */
    const char *libvirt_extra; /* lines added to [libvirt] */
    const char *libvirt_uri;   /* [libvirt] uri; NULL: qemu:///system */
    const char *vtpm_extra;    /* lines added to [vtpm] */
    /* Suites about moving state, not about its custody, run user-mode
     * TPMs without a secret ([vtpm] allow_unencrypted = true); a suite
     * that checks the refusal sets this. */
    bool require_secret;
    const char *tail;          /* text appended (further groups) */
} vt_config_opts;

/* Write a vtpmd config for the test services into $VT_ROOT; returns its
 * path ([amqp] url=$VT_AMQP_URL, [libvirt] uri=qemu:///system). */
char *vt_config_write(const vt_config_opts *o);

typedef struct {
    char *lv_host;     /* test host it runs on ("a") */
    char *worker_host; /* [worker] host */
    char *routing_key; /* vtpm.<worker_host>: where its requests go */
    char *config;
    char *log_path;    /* --log-file */
    char *out_path;    /* its stdout and stderr (sanitizer reports end here) */
    GPid pid;
    bool reaped;
    int wait_status;   /* when reaped */
} vt_vtpmd;

/* Start vtpmd in host @lv_host's mount namespace with @config, adding
 * @env ("NAME=value", NULL-terminated; may be NULL) to the environment.
 * Does not wait for it to be ready. */
vt_vtpmd *vt_vtpmd_spawn(const char *lv_host, const char *config, const char *worker_host,
                         const char *const *env);
/* Wait until it answers get_capabilities; false after @timeout_ms or when
 * it exited (the reason is printed). */
bool vt_vtpmd_wait_ready(vt_vtpmd *d, int timeout_ms);
/* Write a config from @o, spawn, wait until ready: fails the test if it
 * does not come up. */
vt_vtpmd *vt_vtpmd_start(const char *lv_host, const vt_config_opts *o, const char *const *env);
/* Whether it still runs (reaps it when it exited). */
bool vt_vtpmd_running(vt_vtpmd *d);
/* Wait for it to exit: its exit code, 128 + signal when killed, -1 when
 * still running after @timeout_ms. */
int vt_vtpmd_wait_exit(vt_vtpmd *d, int timeout_ms);
/* SIGTERM, then vt_vtpmd_wait_exit(). */
int vt_vtpmd_term(vt_vtpmd *d, int timeout_ms);
/* SIGTERM must drain and exit 0; under ASan a leak at exit makes the
 * status non-zero and leaves a report: fails the test with it. */
void vt_vtpmd_stop_ok(vt_vtpmd *d);
/* SIGKILL and reap. */
void vt_vtpmd_kill(vt_vtpmd *d);
/* Kill (if still running) and free. */
void vt_vtpmd_free(vt_vtpmd *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vt_vtpmd, vt_vtpmd_free)
/* Its log file / stdout+stderr ("" when absent). */
char *vt_vtpmd_log(const vt_vtpmd *d);
char *vt_vtpmd_output(const vt_vtpmd *d);
/* VT_VALGRIND=1 in the environment runs every vtpmd under valgrind
 * memcheck; its exit status is this when memcheck found errors or definite
 * or possible leaks. */
#define VT_VALGRIND_EXIT 99
/* The first line of a sanitizer report (ASan, LSan, UBSan "runtime
 * error", a memcheck error or a non-zero memcheck ERROR SUMMARY) in its
 * output, NULL when there is none. */
char *vt_vtpmd_sanitizer_report(const vt_vtpmd *d);
/* Print log and output tails to stderr (after a failure). */
void vt_vtpmd_dump(const vt_vtpmd *d);
/* Lines of @text containing every string of @needles (NULL-terminated). */
unsigned vt_count_lines(const char *text, const char *const *needles);
/* Lines of the swtpm log libvirt keeps for @uuid on test host @host that
 * contain @needle (0: no log); "Starting vTPM manufacturing" counts the
 * TPMs libvirt's swtpm_setup made for it there. */
unsigned vt_swtpm_log_lines(const char *host, const char *uuid, const char *needle);
/* Wait until its log has a line with every one of @needles. */
bool vt_vtpmd_wait_log(const vt_vtpmd *d, const char *const *needles, int timeout_ms);

/* ---- metrics files ------------------------------------------------------------ */

/* The value of @series (name{labels} exactly as vtpmd writes it) in the
 * [metrics] textfile @path; false when the file or the series is absent. */
bool vt_prom_value(const char *path, const char *series, double *out);
/* Wait until @series in @path is at least @min; false (with the last
 * value in *last, -1 when absent) after @timeout_ms. */
bool vt_prom_wait(const char *path, const char *series, double min, int timeout_ms,
                  double *last);

/* ---- services --------------------------------------------------------------- */

/* Run @script in bash with tests/lib/env.sh sourced and this run's broker
 * variables restored.  Returns the exit status code; *out (optional) gets
 * stdout.  stderr is printed when the script fails. */
int vt_env_sh(const char *script, char **out);
/* vt_env_sh in the background (its output goes to the suite's): the pid
 * of bash, for vt_env_sh_finish, which waits for it and gives its exit
 * status code (-1 when it cannot be waited for). */
GPid vt_env_sh_start(const char *script);
int vt_env_sh_finish(GPid pid);
/* Stop the broker and start it again on the same port and data. */
void vt_rmq_restart(void);
/* Kill host @h's libvirtd (SIGKILL) without starting a new one. */
void vt_libvirtd_kill(const char *h);
/* Start libvirtd of host @h again in a fresh namespace over the same tree
 * (env.sh's vt_host_restart_libvirtd; kills the old one if still there). */
void vt_libvirtd_restart(const char *h);
/* virsh -c <uri of @h> ARGS... (NULL-terminated): exit code; *out
 * (optional) gets stdout. */
int vt_virsh(const char *h, char **out, ...) G_GNUC_NULL_TERMINATED;
/* What virsh domstate says of instance @uuid's domain on host @h ("running",
 * "shut off", ...), "(no domain)" when there is none. */
char *vt_dom_state(const char *h, const char *uuid);
/* Whether host @h's libvirt holds a secret of instance @uuid (virsh
 * secret-list); fails the test when it cannot be asked. */
bool vt_host_has_secret(const char *h, const char *uuid);
/* Fail unless vt_dom_state() is @want. */
void vt_assert_dom_state(const char *h, const char *uuid, const char *want, const char *what);
/* Destroy and undefine (with TPM state) every "instance-*" domain of @h:
 * a failed test must not leave guests eating the CPU of the next one. */
void vt_virsh_cleanup(const char *h);

/* ---- /proc and files ----------------------------------------------------------- */

/* Pids of processes whose argv[0] ends in @prog and whose command line
 * contains @needle. */
GArray *vt_find_procs(const char *prog, const char *needle);
/* Wait until vt_find_procs() finds @want_running ? some : none. */
bool vt_wait_procs(const char *prog, const char *needle, bool want_running, int timeout_ms);
/* A new random 32-byte key file $VT_ROOT/@name (mode 0600), e.g. a
 * deployment key; its path. */
char *vt_key_file_new(const char *name);
/* sha256 of a file in hex, NULL when unreadable. */
char *vt_sha256_file(const char *path);

/* ---- TPM state and its keys ------------------------------------------------------ */

/* The value of host @h's libvirt secret @uuid (virsh secret-get-value);
 * fails the test when it cannot be read. */
GBytes *vt_host_secret_value(const char *h, const char *uuid);
/* The plaintext permanent state of the TPM 2.0 in state dir @dir, read by
 * a standalone swtpm from a copy, with @secret as its key (NULL: no key).
 * NULL when swtpm cannot open the state with that key. */
GBytes *vt_tpm_plaintext(const char *dir, GBytes *secret);
/* The permanent state @plain after one more transfer, as rekey makes it:
 * loaded into a swtpm on an empty directory (--load permanent), CMD_INIT
 * (which writes the state file), read out again.  CMD_INIT after a load
 * settles a few bytes that swtpm_setup left pending in a state no guest
 * firmware has used yet (docs/security.md, Rekey, "Verification"): a
 * rekeyed TPM equals this, not @plain; for a state a guest already used
 * the two are equal.  Fails the test when swtpm cannot do it. */
GBytes *vt_tpm_transferred(GBytes *plain);
/* Bytes in which @a and @b differ, a length difference counting. */
gsize vt_bytes_differing(GBytes *a, GBytes *b);

/* ---- requests -------------------------------------------------------------------- */

typedef struct {
    const char *uuid;
    const char *flavor;              /* default "m1.wt" */
    unsigned vcpus;                  /* default 1 */
    unsigned memory_mb;              /* default 64 */
    const char *const *extra_specs;  /* key, value, ..., NULL */
    const char *const *properties;   /* key, value, ..., NULL */
    const char *image_id;            /* default "firmware-only" */
    const char *kernel;              /* boot.kernel when set */
    int power_on;                    /* args.power_on: -1 absent (default), 0, 1 */
} vt_spawn_spec;

/* Packed args maps. */
GBytes *vt_args_spawn(const vt_spawn_spec *s);
GBytes *vt_args_destroy(const char *uuid, int keep_vtpm /* -1 absent */);
/* A whole request body (vtpm_proto_request_new). */
GBytes *vt_request(const char *method, GBytes *args, const char *request_id,
                   uint64_t deadline_ms);

/* ---- calls --------------------------------------------------------------------------- */

/* The harness's shared client; connected on first use and again after it
 * died (a broker restart).  Call vt_client_drop() when a call on it failed. */
vtpm_client *vt_client(void);
void vt_client_drop(void);
/* A new client of its own (fails the test when the broker is away). */
vtpm_client *vt_client_new(void);

typedef struct {
    vtpm_client_msg *msg; /* as received */
    vtpm_reply *rep;      /* decoded; NULL when it did not decode */
    char error[VTPM_ERROR_MSG_MAX]; /* why not */
} vt_reply;

void vt_reply_free(vt_reply *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vt_reply, vt_reply_free)
/* Decode a received message (takes @m). */
vt_reply *vt_reply_decode(vtpm_client_msg *m);
/* The reply with correlation id @corr on the harness's client (a request
 * sent before a vtpmd crashed, answered after its redelivery); fails the
 * test after @timeout_ms or on a broken connection. */
vt_reply *vt_recv_reply(const char *corr, int timeout_ms, const char *what);

/* Send @body to @routing_key and wait for the reply: fails the test on a
 * timeout or a broken connection. */
vt_reply *vt_call_body(const char *routing_key, const void *body, size_t len, int timeout_ms);
vt_reply *vt_call_bytes(const char *routing_key, GBytes *body, int timeout_ms);
/* Build the request and call. */
vt_reply *vt_call(const vt_vtpmd *d, const char *method, GBytes *args, int timeout_ms);

/* Fail unless ok / unless a fault with @code whose message contains
 * @fragment (NULL: any).  @what names the request in the message. */
void vt_assert_ok(const vt_reply *r, const char *what);
void vt_assert_fault(const vt_reply *r, vtpm_fault code, const char *fragment, const char *what);
/* The same for a fault that is final although its code is usually
 * retryable (docs/protocol.md): retryable must be false. */
void vt_assert_final_fault(const vt_reply *r, vtpm_fault code, const char *fragment,
                           const char *what);
/* vt_call, taking @args, and fail the test unless the reply is ok: @what
 * names the request in the message, with the method and d's host. */
vt_reply *vt_call_ok(const vt_vtpmd *d, const char *method, GBytes *args, int timeout_ms,
                     const char *what);
/* Fail unless result.@path (vt_obj_at) is the str @want. */
void vt_assert_res_str(const vt_reply *r, const char *path, const char *want, const char *what);
/* "ok" or "Code: message" (for messages). */
const char *vt_reply_summary(const vt_reply *r);

/* ---- msgpack objects ----------------------------------------------------------------- */

/* The value at a dotted path ("vtpm.version") of a map; NULL when absent. */
const msgpack_object *vt_obj_at(const msgpack_object *map, const char *path);
/* A copy of the str at @path; NULL when absent or not a str. */
char *vt_obj_str(const msgpack_object *map, const char *path);
/* The bool at @path; fails the test when absent or not a bool. */
bool vt_obj_bool(const msgpack_object *map, const char *path);
/* The unsigned integer at @path; fails the test (naming @what) when
 * absent or not one. */
uint64_t vt_obj_uint(const msgpack_object *map, const char *path, const char *what);
/* Whether @arr is an array holding the str @s. */
bool vt_array_has_str(const msgpack_object *arr, const char *s);

/* ---- raw AMQP (a durable reply queue of the test's own) ------------------------------ */

typedef struct vt_amqp vt_amqp;

/* Connect (NULL when the broker cannot be reached). */
vt_amqp *vt_amqp_open(const char *url);
void vt_amqp_close(vt_amqp *a);
/* Declare a durable, non-exclusive queue: 0 or negative. */
int vt_amqp_declare_durable(vt_amqp *a, const char *queue);
/* Consume @queue with manual acks. */
int vt_amqp_consume(vt_amqp *a, const char *queue);
/* Next message (acked): 0 with *corr and *body set, 1 on timeout,
 * negative when the connection is gone. */
int vt_amqp_next(vt_amqp *a, int timeout_ms, char **corr, GBytes **body);
