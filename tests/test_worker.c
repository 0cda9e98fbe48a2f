/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd end to end: the real daemon, inside the namespace of the libvirt
 * host "a" that tests/integration.sh starts, driven over the real broker
 * with the wire protocol.  Everything is checked where an operator would
 * look: the reply, virsh, /proc (swtpm), the host's file tree, vtpmd's log
 * and exit status.
 *
 * One vtpmd (swtpm enabled) serves the group; tests that need fault
 * injection, another configuration, or that stop the daemon start their
 * own, with a host name (hence a queue) of their own.  Guests are
 * firmware-only QEMU/TCG domains of 64 MiB; each test destroys what it
 * spawns, and the teardown removes leftovers of a failed test.
 */
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "lib/harness.h"
#include "policy.h"

#define H "a" /* the libvirt host every test runs on */
#define SHORT_MS 30000

static vt_vtpmd *group_d;    /* the group's vtpmd (swtpm enabled) */
static char *group_prom;     /* its [metrics] textfile */
static GPtrArray *own_daemons; /* vt_vtpmd * a test started; killed at teardown */

static const char *const all_traits[] = {
    VTPM_TRAIT_TPM_1_2,     VTPM_TRAIT_TPM_2_0,     VTPM_TRAIT_TPM_TIS,
    VTPM_TRAIT_TPM_CRB,     VTPM_TRAIT_SECRET_USER, VTPM_TRAIT_SECRET_HOST,
    VTPM_TRAIT_SECRET_DEPLOYMENT,
};

/* ---- helpers ----------------------------------------------------------- */

/* A vtpmd of the test's own; the teardown kills it if the test did not. */
static vt_vtpmd *
start_own(const vt_config_opts *o, const char *const *env)
{
    vt_vtpmd *d = vt_vtpmd_start(H, o, env);

    g_ptr_array_add(own_daemons, d);
    return d;
}

static vt_vtpmd *
spawn_own(const char *config, const char *worker_host, const char *const *env)
{
    vt_vtpmd *d = vt_vtpmd_spawn(H, config, worker_host, env);

    g_ptr_array_add(own_daemons, d);
    return d;
}

static char *
domain_name(const char *uuid)
{
    return g_strdup_printf("instance-%s", uuid);
}

static bool
domain_exists(const char *uuid)
{
    g_autofree char *name = domain_name(uuid);

    return vt_virsh(H, NULL, "dominfo", name, NULL) == 0;
}

static char *
domain_state(const char *uuid)
{
    g_autofree char *name = domain_name(uuid);
    char *out = NULL;

    if (vt_virsh(H, &out, "domstate", name, NULL) != 0) {
        g_free(out);
        return g_strdup("(none)");
    }
    return g_strstrip(out);
}

static char *
domain_xml(const char *uuid)
{
    g_autofree char *name = domain_name(uuid);
    char *out = NULL;

    if (vt_virsh(H, &out, "dumpxml", name, NULL) != 0)
        fail_msg("virsh dumpxml %s failed", name);
    return out;
}

/* How many domains (any state) carry @uuid. */
static unsigned
domains_with(const char *uuid)
{
    g_autofree char *out = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned n = 0;

    if (vt_virsh(H, &out, "list", "--all", "--uuid", NULL) != 0)
        fail_msg("virsh list failed");
    lines = g_strsplit(out, "\n", -1);
    for (size_t i = 0; lines[i]; i++)
        n += strcmp(g_strstrip(lines[i]), uuid) == 0;
    return n;
}

static char *
state_dir(const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/%s", uuid);

    return vt_host_path(H, rel);
}

static char *
state_file(const char *uuid, const char *version)
{
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/%s", uuid,
                                           strcmp(version, "1.2") == 0 ? "tpm1.2/tpm-00.permall"
                                                                       : "tpm2/tpm2-00.permall");

    return vt_host_path(H, rel);
}

static vt_reply *
spawn(const vt_vtpmd *d, const vt_spawn_spec *s)
{
    g_autoptr(GBytes) args = vt_args_spawn(s);

    return vt_call(d, "spawn", args, VT_CALL_MS);
}

static vt_reply *
destroy(const vt_vtpmd *d, const char *uuid, int keep)
{
    g_autoptr(GBytes) args = vt_args_destroy(uuid, keep);

    return vt_call(d, "destroy", args, VT_CALL_MS);
}

static void
assert_result_str(const vt_reply *r, const char *path, const char *want, const char *what)
{
    g_autofree char *got = vt_obj_str(&r->rep->result, path);

    if (g_strcmp0(got, want) != 0)
        fail_msg("%s: result.%s should be \"%s\", got %s%s%s", what, path, want,
                 got ? "\"" : "", got ? got : "nothing", got ? "\"" : "");
}

/* destroy that must succeed, and leave nothing of the instance behind. */
static void
destroy_ok(const char *uuid, bool existed, const char *vtpm_state)
{
    g_autoptr(vt_reply) r = destroy(group_d, uuid, -1);
    g_autofree char *sd = state_dir(uuid);

    vt_assert_ok(r, "destroy");
    if (vt_obj_bool(&r->rep->result, "destroyed") != existed)
        fail_msg("destroy %s: result.destroyed should be %s", uuid, existed ? "true" : "false");
    assert_result_str(r, "vtpm_state", vtpm_state, "destroy");
    if (domain_exists(uuid))
        fail_msg("destroy %s answered ok but virsh still lists the domain", uuid);
    if (g_file_test(sd, G_FILE_TEST_EXISTS))
        fail_msg("destroy %s answered ok but the state dir %s is still there", uuid, sd);
    if (!vt_wait_procs("swtpm", uuid, false, 10000))
        fail_msg("destroy %s answered ok but swtpm of the instance still runs 10 s later",
                 uuid);
}

/* Wait until the file's digest stays the same for a second (swtpm writes
 * it while the firmware initialises the TPM). */
static char *
settled_sha256(const char *path)
{
    g_autofree char *prev = vt_sha256_file(path);

    for (int i = 0; i < 15; i++) {
        g_autofree char *cur = NULL;

        g_usleep(G_USEC_PER_SEC);
        cur = vt_sha256_file(path);
        if (cur && g_strcmp0(cur, prev) == 0)
            return g_steal_pointer(&cur);
        g_free(prev);
        prev = g_steal_pointer(&cur);
    }
    return g_steal_pointer(&prev);
}

static void
mp_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static GBytes *
mp_bytes(msgpack_sbuffer *sb)
{
    GBytes *b = g_bytes_new(sb->data, sb->size);

    msgpack_sbuffer_destroy(sb);
    return b;
}

#define MP_BEGIN(sb, pk)                                                \
    msgpack_sbuffer sb;                                                 \
    msgpack_packer pk;                                                  \
    msgpack_sbuffer_init(&sb);                                          \
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write)

/* A spawn request packed by hand, for bodies the codec cannot produce:
 * @vcpus_str sends flavor.vcpus as a str, @flavor_name may be any bytes
 * (@flavor_len of them). */
static GBytes *
spawn_body_custom(const char *uuid, const char *flavor_name, size_t flavor_len, bool vcpus_str)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 3);
    mp_str(&pk, "v");
    msgpack_pack_uint8(&pk, 1);
    mp_str(&pk, "method");
    mp_str(&pk, "spawn");
    mp_str(&pk, "args");
    msgpack_pack_map(&pk, 1);
    mp_str(&pk, "instance");
    msgpack_pack_map(&pk, 3);
    mp_str(&pk, "uuid");
    mp_str(&pk, uuid);
    mp_str(&pk, "flavor");
    msgpack_pack_map(&pk, 3);
    mp_str(&pk, "name");
    msgpack_pack_str(&pk, flavor_len);
    msgpack_pack_str_body(&pk, flavor_name, flavor_len);
    mp_str(&pk, "vcpus");
    if (vcpus_str)
        mp_str(&pk, "1");
    else
        msgpack_pack_uint8(&pk, 1);
    mp_str(&pk, "memory_mb");
    msgpack_pack_uint16(&pk, 64);
    mp_str(&pk, "image");
    msgpack_pack_map(&pk, 1);
    mp_str(&pk, "id");
    mp_str(&pk, "firmware-only");
    return mp_bytes(&sb);
}

/* get_capabilities answers ok: the worker still serves. */
static void
assert_serving(const vt_vtpmd *d, const char *after)
{
    g_autoptr(vt_reply) r = vt_call(d, "get_capabilities", NULL, SHORT_MS);

    if (!r->rep || !r->rep->ok)
        fail_msg("after %s, get_capabilities answered %s", after, vt_reply_summary(r));
}

/* Send @body, expect a fault, then check the worker still serves. */
static void
hostile(const void *body, size_t len, vtpm_fault code, const char *fragment, const char *what)
{
    g_autoptr(vt_reply) r = vt_call_body(group_d->routing_key, body, len, SHORT_MS);

    vt_assert_fault(r, code, fragment, what);
    assert_serving(group_d, what);
}

/* ---- metrics files ------------------------------------------------------ */

/* A [metrics] section writing $VT_ROOT/<name>.prom every second; *path
 * gets the file's name. */
static char *
metrics_tail(const char *name, char **path)
{
    *path = g_strdup_printf("%s/%s.prom", vt_env("VT_ROOT"), name);
    return g_strdup_printf("[metrics]\ntextfile = %s\ninterval = 1\n", *path);
}

/* Wait (the file is rewritten every second) until @series is at least
 * @min; fails the test with the file's last value otherwise. */
static void
wait_prom_at_least(const char *path, const char *series, double min)
{
    double v;

    if (!vt_prom_wait(path, series, min, 60000, &v))
        fail_msg("%s: %s should reach %g within 60 s; last value %g", path, series, min, v);
}

static void
assert_prom(const char *path, const char *series, double want)
{
    double v = -1;

    if (!vt_prom_value(path, series, &v) || v != want) {
        g_autofree char *text = NULL;

        g_file_get_contents(path, &text, NULL, NULL);
        fail_msg("%s: %s should be %g, is %g%s; file:\n%s", path, series, want, v,
                 v == -1 ? " (absent?)" : "", text ? text : "(unreadable)");
    }
}

/* Parse the file with the Prometheus client library's own parser (an
 * implementation that is not ours): every family it finds, with its
 * type, as "name type" lines. */
static char *
prom_parse(const char *path)
{
    const char *argv[] = {
        "/usr/bin/python3", "-c",
        "import sys\n"
        "from prometheus_client.parser import text_string_to_metric_families as parse\n"
        "for f in parse(open(sys.argv[1]).read()):\n"
        "    print(f.name, f.type, len(f.samples))\n",
        path, NULL,
    };
    g_autofree char *out = NULL, *errout = NULL;
    g_autoptr(GError) gerr = NULL;
    int status;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, &errout, &status, &gerr))
        fail_msg("running python3: %s", gerr->message);
    if (!g_spawn_check_wait_status(status, NULL))
        fail_msg("prometheus_client cannot parse %s:\n%s", path, errout);
    return g_steal_pointer(&out);
}

/* ---- fixtures ---------------------------------------------------------- */

static int
group_setup(void **state)
{
    g_autofree char *host = vt_unique("grp");
    g_autofree char *tail = metrics_tail(host, &group_prom);
    /* Probes often, so test_libvirtd_restart sees probes during the outage. */
    vt_config_opts o = { .worker_host = host, .tail = tail,
                         .worker_extra = "capabilities_interval = 1\n" };

    own_daemons = g_ptr_array_new_with_free_func((GDestroyNotify)vt_vtpmd_free);
    group_d = vt_vtpmd_start(H, &o, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    vt_virsh_cleanup(H);
    g_ptr_array_unref(own_daemons);
    /* Normally test_group_sigterm stopped it already. */
    vt_vtpmd_free(group_d);
    vt_client_drop();
    g_free(group_prom);
    return 0;
}

static int
test_setup(void **state)
{
    if (!vt_vtpmd_running(group_d)) {
        vt_vtpmd_dump(group_d);
        fail_msg("the group's vtpmd is gone (exit status %d)", group_d->wait_status);
    }
    return 0;
}

static int
test_teardown(void **state)
{
    int rc = 0;

    /* Daemons the test started: a failed test may have left them. */
    for (guint i = 0; i < own_daemons->len; i++) {
        vt_vtpmd *d = g_ptr_array_index(own_daemons, i);
        g_autofree char *report = NULL;

        if (vt_vtpmd_running(d)) {
            int code = vt_vtpmd_term(d, 30000);

            if (code != 0)
                print_error("vtpmd %s exited %d on SIGTERM at teardown\n", d->worker_host, code);
        }
        /* A memory error (sanitizer, or memcheck with VT_VALGRIND=1)
         * fails the test even when the daemon was left to the teardown. */
        report = vt_vtpmd_sanitizer_report(d);
        if (report) {
            vt_vtpmd_dump(d);
            print_error("vtpmd %s: %s\n", d->worker_host, report);
            rc = -1;
        }
    }
    g_ptr_array_set_size(own_daemons, 0);
    vt_virsh_cleanup(H);
    return rc;
}

/* ---- 1. capabilities --------------------------------------------------- */

static void
test_get_capabilities(void **state)
{
    g_autoptr(vt_reply) r = vt_call(group_d, "get_capabilities", NULL, SHORT_MS);
    const msgpack_object *res, *traits, *missing, *dep;
    g_autofree char *host = NULL, *arch = NULL, *lv = NULL, *qemu = NULL;
    g_autofree char *off_host = vt_unique("noswtpm");
    vt_config_opts off = { .worker_host = off_host, .swtpm_disabled = true };
    const char *want[] = { VTPM_TRAIT_TPM_2_0, VTPM_TRAIT_TPM_1_2, VTPM_TRAIT_TPM_TIS,
                           VTPM_TRAIT_TPM_CRB, VTPM_TRAIT_SECRET_USER, VTPM_TRAIT_SECRET_HOST };
    vt_vtpmd *d2;

    vt_assert_ok(r, "get_capabilities");
    res = &r->rep->result;
    host = vt_obj_str(res, "host");
    if (g_strcmp0(host, group_d->worker_host) != 0)
        fail_msg("result.host is \"%s\", the configured host is \"%s\"", host ? host : "(none)",
                 group_d->worker_host);
    traits = vt_obj_at(res, "traits");
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++)
        if (!vt_array_has_str(traits, want[i]))
            fail_msg("traits do not include %s (swtpm is enabled and installed)", want[i]);
    missing = vt_obj_at(res, "missing");
    if (!missing || missing->type != MSGPACK_OBJECT_MAP)
        fail_msg("result.missing is not a map");
    dep = vtpm_proto_map_get(missing, VTPM_TRAIT_SECRET_DEPLOYMENT);
    if (!dep || dep->type != MSGPACK_OBJECT_STR || dep->via.str.size == 0)
        fail_msg("missing.%s should give a reason (deployment is not configured)",
                 VTPM_TRAIT_SECRET_DEPLOYMENT);
    if (vt_array_has_str(traits, VTPM_TRAIT_SECRET_DEPLOYMENT))
        fail_msg("%s is both offered and missing", VTPM_TRAIT_SECRET_DEPLOYMENT);
    arch = vt_obj_str(res, "arch");
    lv = vt_obj_str(res, "libvirt_version");
    qemu = vt_obj_str(res, "qemu_version");
    if (!arch || !*arch || !lv || !*lv || !qemu || !*qemu)
        fail_msg("arch/libvirt_version/qemu_version missing: arch=%s libvirt=%s qemu=%s",
                 arch ? arch : "-", lv ? lv : "-", qemu ? qemu : "-");
    if (!isdigit((unsigned char)lv[0]) || !strchr(lv, '.') || !isdigit((unsigned char)qemu[0]))
        fail_msg("versions should read like 9.0.0: libvirt=%s qemu=%s", lv, qemu);

    /* swtpm_enabled = false: nothing offered, and each trait says why. */
    d2 = start_own(&off, NULL);
    {
        g_autoptr(vt_reply) r2 = vt_call(d2, "get_capabilities", NULL, SHORT_MS);
        const msgpack_object *t2, *m2;
        g_autofree char *h2 = NULL;

        vt_assert_ok(r2, "get_capabilities (swtpm disabled)");
        h2 = vt_obj_str(&r2->rep->result, "host");
        assert_string_equal(h2, off_host);
        t2 = vt_obj_at(&r2->rep->result, "traits");
        if (!t2 || t2->type != MSGPACK_OBJECT_ARRAY)
            fail_msg("with swtpm_enabled=false, traits should be an array");
        /* No vTPM trait; the firmware ones do not depend on swtpm. */
        for (uint32_t i = 0; i < t2->via.array.size; i++) {
            const msgpack_object *t = &t2->via.array.ptr[i];
            g_autofree char *name = t->type == MSGPACK_OBJECT_STR
                                        ? g_strndup(t->via.str.ptr, t->via.str.size)
                                        : g_strdup("(not a str)");

            if (strcmp(name, "COMPUTE_FIRMWARE_UEFI") != 0 &&
                strcmp(name, "COMPUTE_SECURITY_UEFI_SECURE_BOOT") != 0)
                fail_msg("with swtpm_enabled=false, traits should hold no vTPM trait, got %s",
                         name);
        }
        m2 = vt_obj_at(&r2->rep->result, "missing");
        for (size_t i = 0; i < G_N_ELEMENTS(all_traits); i++) {
            const msgpack_object *why = vtpm_proto_map_get(m2, all_traits[i]);
            g_autofree char *w = why && why->type == MSGPACK_OBJECT_STR
                                     ? g_strndup(why->via.str.ptr, why->via.str.size)
                                     : NULL;

            if (!w || !strstr(w, "swtpm_enabled"))
                fail_msg("with swtpm_enabled=false, missing.%s should mention swtpm_enabled, "
                         "got %s", all_traits[i], w ? w : "nothing");
        }
    }
    vt_vtpmd_stop_ok(d2);
}

/* ---- 2. announcement --------------------------------------------------- */

static void
test_capabilities_announcement(void **state)
{
    g_autoptr(vtpm_client) c = vt_client_new();
    g_autofree char *host = vt_unique("announce");
    g_autofree char *rk = g_strdup_printf("capabilities.%s", host);
    const char *keys[] = { "capabilities.#" };
    vt_config_opts o = { .worker_host = host };
    gint64 end;
    vtpm_error err = { 0 };
    bool seen = false;

    /* The tap exists before the worker does: what it receives was
     * published by the worker's start-up. */
    if (vtpm_client_tap(c, "vtpm", keys, 1, NULL, &err) < 0)
        fail_msg("tap on exchange vtpm: %s", err.message);
    start_own(&o, NULL);
    end = g_get_monotonic_time() + SHORT_MS * 1000;
    while (!seen && g_get_monotonic_time() < end) {
        g_autoptr(vtpm_client_msg) m = NULL;
        g_autoptr(vt_reply) r = NULL;
        g_autofree char *h = NULL;
        int rc = vtpm_client_msg_recv(c, 1000, &m, &err);

        if (rc < 0)
            fail_msg("tap: %s", err.message);
        if (rc > 0 || strcmp(m->routing_key, rk) != 0)
            continue; /* another worker's periodic announcement */
        assert_string_equal(m->exchange, "vtpm");
        r = vt_reply_decode(g_steal_pointer(&m));
        vt_assert_ok(r, "capability announcement");
        h = vt_obj_str(&r->rep->result, "host");
        assert_string_equal(h, host);
        if (!vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("the announcement lacks %s", VTPM_TRAIT_TPM_2_0);
        seen = true;
    }
    if (!seen)
        fail_msg("no announcement with routing key %s within %d ms of vtpmd starting", rk,
                 SHORT_MS);
}

/* The next announcement of @host on tap @c (NULL after @timeout_ms);
 * other workers' announcements are skipped. */
static vt_reply *
next_announcement(vtpm_client *c, const char *host, int timeout_ms)
{
    g_autofree char *rk = g_strdup_printf("capabilities.%s", host);
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vtpm_error err = { 0 };

    while (g_get_monotonic_time() < end) {
        g_autoptr(vtpm_client_msg) m = NULL;
        vt_reply *r;
        int rc = vtpm_client_msg_recv(c, 500, &m, &err);

        if (rc < 0)
            fail_msg("tap: %s", err.message);
        if (rc > 0 || strcmp(m->routing_key, rk) != 0)
            continue;
        r = vt_reply_decode(g_steal_pointer(&m));
        vt_assert_ok(r, "capability announcement");
        return r;
    }
    return NULL;
}

/* The broker closes vtpmd @d's connection (as on a broker node restart
 * or a network cut), leaving every other client alone. */
static void
close_broker_connection(const vt_vtpmd *d)
{
    g_autofree char *script = g_strdup_printf(
        "pid=$(vt_rmqctl list_connections pid client_properties -q | "
        "grep -F '{\"connection_name\",\"vtpmd@%s\"}' | cut -f1); "
        "[ -n \"$pid\" ] && vt_rmqctl close_connection \"$pid\" 'test: reconnect'",
        d->worker_host);

    if (vt_env_sh(script, NULL) != 0)
        fail_msg("closing the broker connection of vtpmd@%s failed", d->worker_host);
}

/* docs/protocol.md: the worker announces its capabilities at start, on
 * every broker reconnect and whenever the traits change, and not
 * otherwise.  vtpmd runs with a PATH of its own (links to swtpm,
 * swtpm_setup, swtpm_ioctl) and probes every second; taking swtpm_setup
 * away withdraws the traits, putting it back offers them again. */
static void
test_capabilities_reannounce(void **state)
{
    g_autoptr(vtpm_client) c = vt_client_new();
    g_autofree char *host = vt_unique("reannounce");
    g_autofree char *bin = g_strdup_printf("%s/caps-bin-%d", vt_env("VT_ROOT"), (int)getpid());
    g_autofree char *path_env = g_strdup_printf("PATH=%s", bin);
    g_autofree char *setup_link = g_build_filename(bin, "swtpm_setup", NULL);
    g_autofree char *setup_real = g_find_program_in_path("swtpm_setup");
    const char *env[] = { path_env, NULL };
    const char *progs[] = { "swtpm", "swtpm_setup", "swtpm_ioctl" };
    const char *keys[] = { "capabilities.#" };
    const char *gen2[] = { "amqp: connected", "generation 2", NULL };
    vt_config_opts o = { .worker_host = host, .worker_extra = "capabilities_interval = 1" };
    vtpm_error err = { 0 };
    vt_vtpmd *d;

    if (g_mkdir_with_parents(bin, 0755) != 0)
        fail_msg("mkdir %s failed", bin);
    for (size_t i = 0; i < G_N_ELEMENTS(progs); i++) {
        g_autofree char *real = g_find_program_in_path(progs[i]);
        g_autofree char *link = g_build_filename(bin, progs[i], NULL);

        if (!real || symlink(real, link) < 0)
            fail_msg("linking %s into %s failed", progs[i], bin);
    }
    if (vtpm_client_tap(c, "vtpm", keys, 1, NULL, &err) < 0)
        fail_msg("tap on exchange vtpm: %s", err.message);
    d = start_own(&o, env);
    {
        g_autoptr(vt_reply) r = next_announcement(c, host, SHORT_MS);

        if (!r)
            fail_msg("no announcement of %s at start", host);
        if (!vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("the start-up announcement lacks %s", VTPM_TRAIT_TPM_2_0);
    }
    /* Probes that find nothing new announce nothing. */
    {
        g_autoptr(vt_reply) r = next_announcement(c, host, 3500);

        if (r)
            fail_msg("an announcement without a reconnect or a change: %s", vt_reply_summary(r));
    }

    /* A reconnect announces again, the traits unchanged. */
    close_broker_connection(d);
    {
        g_autoptr(vt_reply) r = next_announcement(c, host, SHORT_MS);

        if (!r)
            fail_msg("no announcement after the broker closed vtpmd's connection");
        if (!vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("the announcement after the reconnect lacks %s", VTPM_TRAIT_TPM_2_0);
    }
    if (!vt_vtpmd_wait_log(d, gen2, SHORT_MS))
        fail_msg("vtpmd's log does not show the reconnect (generation 2)");

    /* A trait change is announced: swtpm_setup gone, then back. */
    if (unlink(setup_link) < 0)
        fail_msg("unlink %s: %s", setup_link, g_strerror(errno));
    {
        g_autoptr(vt_reply) r = next_announcement(c, host, SHORT_MS);
        const msgpack_object *why;

        if (!r)
            fail_msg("no announcement after swtpm_setup left vtpmd's PATH");
        if (vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("without swtpm_setup the host still announces %s", VTPM_TRAIT_TPM_2_0);
        why = vtpm_proto_map_get(vt_obj_at(&r->rep->result, "missing"), VTPM_TRAIT_TPM_2_0);
        if (!why || why->type != MSGPACK_OBJECT_STR ||
            !g_strstr_len(why->via.str.ptr, why->via.str.size, "swtpm_setup not found"))
            fail_msg("the announcement should say why %s is missing (swtpm_setup not found)",
                     VTPM_TRAIT_TPM_2_0);
    }
    if (symlink(setup_real, setup_link) < 0)
        fail_msg("symlink %s: %s", setup_link, g_strerror(errno));
    {
        g_autoptr(vt_reply) r = next_announcement(c, host, SHORT_MS);

        if (!r)
            fail_msg("no announcement after swtpm_setup came back");
        if (!vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("with swtpm_setup back the host should announce %s again",
                     VTPM_TRAIT_TPM_2_0);
    }
    vt_vtpmd_stop_ok(d);
    for (size_t i = 0; i < G_N_ELEMENTS(progs); i++) {
        g_autofree char *link = g_build_filename(bin, progs[i], NULL);

        unlink(link);
    }
    g_rmdir(bin);
}

/* ---- 3. spawn ---------------------------------------------------------- */

typedef struct {
    const char *version, *model; /* hw:tpm_version, hw:tpm_model */
} tpm_case;

static void
check_tpm_instance(const char *uuid, const tpm_case *tc)
{
    g_autofree char *xml = domain_xml(uuid);
    g_autofree char *tpm = g_strdup_printf("<tpm model='%s'>", tc->model);
    g_autofree char *backend = g_strdup_printf("<backend type='emulator' version='%s'",
                                               tc->version);
    g_autofree char *console = g_strdup_printf("path='/var/lib/vtpmd/console/%s.log'", uuid);
    g_autofree char *sf = state_file(uuid, tc->version);
    const char *serial, *serial_end;
    struct passwd *tss = getpwnam("tss");
    struct stat st;

    if (!strstr(xml, tpm) || !strstr(xml, backend))
        fail_msg("TPM %s/%s: domain XML lacks %s ... %s:\n%s", tc->version, tc->model, tpm,
                 backend, xml);
    if (!strstr(xml, "<acpi/>"))
        fail_msg("domain XML lacks <acpi/> (the guest would not find its TPM):\n%s", xml);
    if (!strstr(xml, "<on_poweroff>destroy</on_poweroff>"))
        fail_msg("domain XML lacks <on_poweroff>destroy</on_poweroff>:\n%s", xml);
    serial = strstr(xml, "<serial type='file'>");
    serial_end = serial ? strstr(serial, "</serial>") : NULL;
    if (!serial || !serial_end || !g_strstr_len(serial, serial_end - serial, console))
        fail_msg("domain XML lacks a file serial console with %s:\n%s", console, xml);

    if (!vt_wait_procs("swtpm", uuid, true, 10000))
        fail_msg("TPM %s/%s: no swtpm process with %s on its command line", tc->version,
                 tc->model, uuid);
    if (stat(sf, &st) < 0)
        fail_msg("TPM %s/%s: state file %s: %s", tc->version, tc->model, sf, g_strerror(errno));
    assert_non_null(tss);
    if (st.st_uid != tss->pw_uid)
        fail_msg("state file %s is owned by uid %u, expected tss (%u)", sf, (unsigned)st.st_uid,
                 (unsigned)tss->pw_uid);
    if ((st.st_mode & 07777) != 0600)
        fail_msg("state file %s has mode %04o, expected 0600", sf, st.st_mode & 07777);
}

static void
test_spawn_tpm_models(void **state)
{
    static const tpm_case cases[] = {
        { "2.0", "tpm-crb" },
        { "2.0", "tpm-tis" },
        { "1.2", "tpm-tis" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *uuid = vt_uuid();
        g_autofree char *name = domain_name(uuid);
        g_autofree char *sd = state_dir(uuid);
        const char *specs[] = { "hw:tpm_version", cases[i].version, "hw:tpm_model",
                                cases[i].model, NULL };
        vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
        g_autoptr(vt_reply) r = spawn(group_d, &s);
        g_autofree char *what = g_strdup_printf("spawn TPM %s/%s", cases[i].version,
                                                cases[i].model);
        g_autofree char *dstate = NULL;

        vt_assert_ok(r, what);
        assert_result_str(r, "domain", name, what);
        assert_result_str(r, "vtpm.version", cases[i].version, what);
        assert_result_str(r, "vtpm.model", cases[i].model, what);
        assert_result_str(r, "vtpm.secret_security", "user", what);
        {
            g_autofree char *want_sd = g_strdup_printf("/var/lib/libvirt/swtpm/%s", uuid);

            assert_result_str(r, "vtpm.state_dir", want_sd, what);
        }
        dstate = domain_state(uuid);
        if (strcmp(dstate, "running") != 0)
            fail_msg("%s: domain state is \"%s\", expected running", what, dstate);
        check_tpm_instance(uuid, &cases[i]);
        destroy_ok(uuid, true, "deleted");
    }
}

static void
test_spawn_without_tpm(void **state)
{
    g_autofree char *uuid = vt_uuid();
    vt_spawn_spec s = { .uuid = uuid, .power_on = -1 };
    g_autoptr(vt_reply) r = spawn(group_d, &s);
    g_autofree char *xml = NULL;
    g_autofree char *sd = state_dir(uuid);
    const msgpack_object *vtpm;

    vt_assert_ok(r, "spawn without vTPM");
    vtpm = vt_obj_at(&r->rep->result, "vtpm");
    if (vtpm && vtpm->type != MSGPACK_OBJECT_NIL)
        fail_msg("spawn without vTPM: result.vtpm should be nil or absent");
    xml = domain_xml(uuid);
    if (strstr(xml, "<tpm"))
        fail_msg("a flavor and image without TPM settings got a <tpm>:\n%s", xml);
    if (g_file_test(sd, G_FILE_TEST_EXISTS))
        fail_msg("an instance without vTPM has a state dir %s", sd);
    destroy_ok(uuid, true, "none");
}

static void
test_spawn_power_off(void **state)
{
    g_autofree char *uuid = vt_uuid();
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = 0 };
    g_autoptr(vt_reply) r = spawn(group_d, &s);
    g_autofree char *st = NULL;

    vt_assert_ok(r, "spawn power_on=false");
    st = domain_state(uuid);
    if (strcmp(st, "shut off") != 0)
        fail_msg("spawn power_on=false: domain state is \"%s\", expected \"shut off\"", st);
    if (vt_wait_procs("swtpm", uuid, true, 500))
        fail_msg("spawn power_on=false: a swtpm runs for the instance");
    /* Never started: libvirt has no state to delete; whatever is there
     * goes anyway. */
    {
        g_autoptr(vt_reply) d = destroy(group_d, uuid, -1);
        g_autofree char *sd = state_dir(uuid);

        vt_assert_ok(d, "destroy of a defined, never started domain");
        assert_true(vt_obj_bool(&d->rep->result, "destroyed"));
        if (domain_exists(uuid))
            fail_msg("destroy left the defined domain");
        if (g_file_test(sd, G_FILE_TEST_EXISTS))
            fail_msg("destroy left the state dir %s", sd);
    }
}

/* ---- 4. idempotency ---------------------------------------------------- */

static void
test_spawn_idempotent(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *sf = state_file(uuid, "2.0");
    g_autofree char *name = domain_name(uuid);
    g_autofree char *sha1 = NULL, *sha2 = NULL;
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    vt_spawn_spec other = s;

    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "first spawn");
    }
    /* The firmware writes the TPM state whenever it (re)boots, and SeaBIOS
     * with nothing to boot reboots every minute: on a loaded machine no
     * quiet window is long enough to tell its writes from the repeated
     * spawn's. Paused, the guest sends the TPM nothing; a spawn that
     * redid the TPM would change the state, and one that restarted the
     * domain would leave it running. */
    {
        g_autofree char *booted = settled_sha256(sf);

        if (!booted)
            fail_msg("no TPM state file %s after spawn", sf);
    }
    if (vt_virsh(H, NULL, "suspend", name, NULL) != 0)
        fail_msg("virsh suspend of instance %s failed", uuid);
    sha1 = vt_sha256_file(sf);
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "the same spawn again (a redelivery)");
    }
    if (domains_with(uuid) != 1)
        fail_msg("after two identical spawns virsh lists %u domains with %s", domains_with(uuid),
                 uuid);
    sha2 = vt_sha256_file(sf);
    if (g_strcmp0(sha1, sha2) != 0)
        fail_msg("the repeated spawn changed the TPM state %s (%s -> %s)", sf, sha1,
                 sha2 ? sha2 : "gone");
    {
        g_autofree char *st = domain_state(uuid);

        if (strcmp(st, "paused") != 0)
            fail_msg("the repeated spawn left the domain \"%s\", not as it was (paused)", st);
    }
    if (vt_virsh(H, NULL, "resume", name, NULL) != 0)
        fail_msg("virsh resume of instance %s failed", uuid);

    /* Same instance, another flavor: refused, nothing changes.  Final
     * (retryable: false): sending it again cannot make the specs agree. */
    other.memory_mb = 96;
    other.flavor = "m1.other";
    for (int i = 0; i < 2; i++) {
        g_autoptr(vt_reply) r = spawn(group_d, &other);

        vt_assert_final_fault(r, VTPM_FAULT_INSTANCE_CONFLICT, "already exists",
                              i ? "the same spawn with another flavor, retried"
                                : "spawn of the same uuid with another flavor");
    }
    assert_int_equal(domains_with(uuid), 1);

    destroy_ok(uuid, true, "deleted");
    destroy_ok(uuid, false, "none");
}

static void
test_destroy_keep_vtpm(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *sf = state_file(uuid, "2.0");
    g_autofree char *sd = state_dir(uuid);
    const char *specs[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-crb", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    g_autofree char *sha_kept = NULL, *sha_after = NULL;

    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "spawn");
    }
    g_free(settled_sha256(sf));
    {
        g_autoptr(vt_reply) r = destroy(group_d, uuid, 1);

        vt_assert_ok(r, "destroy keep_vtpm=true");
        assert_true(vt_obj_bool(&r->rep->result, "destroyed"));
        assert_result_str(r, "vtpm_state", "kept", "destroy keep_vtpm=true");
    }
    if (domain_exists(uuid))
        fail_msg("destroy keep_vtpm=true left the domain");
    if (!vt_wait_procs("swtpm", uuid, false, 10000))
        fail_msg("destroy keep_vtpm=true left swtpm running");
    sha_kept = vt_sha256_file(sf);
    if (!sha_kept)
        fail_msg("destroy keep_vtpm=true removed the TPM state %s", sf);

    /* A new domain of the same instance adopts the state. */
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "spawn adopting kept state");
    }
    if (!vt_wait_procs("swtpm", uuid, true, 10000))
        fail_msg("the spawn adopting kept state runs no swtpm");
    /* Adopted, not recreated: a fresh state (swtpm_setup) would carry new
     * seeds, hence other bytes.  swtpm leaves the permanent state alone
     * while the firmware starts the TPM (the digest before destroy was
     * taken after the same boot), so the bytes must be the kept ones. */
    sha_after = vt_sha256_file(sf);
    if (!sha_after)
        fail_msg("the spawn adopting kept state deleted %s", sf);
    if (strcmp(sha_kept, sha_after) != 0)
        fail_msg("the spawn did not adopt the kept TPM state: %s was %s after destroy "
                 "keep_vtpm, %s after the new spawn", sf, sha_kept, sha_after);
    destroy_ok(uuid, true, "deleted");
    if (g_file_test(sd, G_FILE_TEST_EXISTS))
        fail_msg("final destroy left %s", sd);
}

/* ---- 5. duplicate message ids ------------------------------------------ */

/* A field "name=<number>" of @line. */
static double
log_field(const char *line, const char *name)
{
    g_autofree char *key = g_strdup_printf(" %s=", name);
    const char *p = strstr(line, key);
    char *end;
    double v;

    if (!p)
        fail_msg("no %s in the log line: %s", name, line);
    v = g_ascii_strtod(p + strlen(key), &end);
    if (end == p + strlen(key))
        fail_msg("%s is not a number in the log line: %s", name, line);
    return v;
}

/* The outcome line of request @rid_kv splits its duration: a spawn spends
 * time in libvirt (define, start), and the parts never exceed the whole
 * (each is rounded to 0.1 ms on its own). */
static void
assert_time_split(const char *log, const char *rid_kv)
{
    g_auto(GStrv) lines = g_strsplit(log, "\n", -1);
    double total, lv, helpers;
    const char *line = NULL;

    for (size_t i = 0; lines[i]; i++)
        if (strstr(lines[i], rid_kv) && strstr(lines[i], " outcome=ok "))
            line = lines[i];
    if (!line)
        fail_msg("no outcome=ok line for %s", rid_kv);
    total = log_field(line, "duration_ms");
    lv = log_field(line, "libvirt_ms");
    helpers = log_field(line, "helpers_ms");
    if (!(lv > 0) || helpers < 0 || lv + helpers > total + 0.2)
        fail_msg("implausible time split (libvirt %.1f + helpers %.1f of %.1f ms): %s", lv,
                 helpers, total, line);
}

static void
test_duplicate_message_id(void **state)
{
    g_autoptr(vtpm_client) c = vt_client_new();
    g_autofree char *uuid = vt_uuid();
    g_autofree char *rid = g_strdup_printf("dup-%s", uuid);
    g_autofree char *mid = g_strdup_printf("mid-%s", uuid);
    g_autofree char *mid_kv = g_strdup_printf("message_id=%s", mid);
    g_autofree char *rid_kv = g_strdup_printf("request_id=%s", rid);
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    g_autoptr(GBytes) args = vt_args_spawn(&s);
    g_autoptr(GBytes) body = vt_request("spawn", args, rid, 0);
    vtpm_client_msg_opts o = { .routing_key = group_d->routing_key, .message_id = mid };
    g_autoptr(GPtrArray) replies = g_ptr_array_new_with_free_func(
        (GDestroyNotify)vtpm_client_msg_free);
    g_autofree char *log = NULL;
    vtpm_error err = { 0 };
    unsigned ran, cached;

    /* Two copies back to back: the second arrives while the first runs. */
    for (int i = 0; i < 2; i++)
        if (vtpm_client_msg_send(c, &o, g_bytes_get_data(body, NULL), g_bytes_get_size(body), NULL,
                             &err) < 0)
            fail_msg("send: %s", err.message);
    while (replies->len < 2) {
        vtpm_client_msg *m = NULL;
        int rc = vtpm_client_msg_recv(c, VT_CALL_MS, &m, &err);

        if (rc != 0)
            fail_msg("duplicate message id: got %u of 2 replies (%s)", replies->len,
                     rc < 0 ? err.message : "timeout");
        g_ptr_array_add(replies, m);
    }
    /* A third copy after the answer: the reply cache answers it. */
    if (vtpm_client_msg_send(c, &o, g_bytes_get_data(body, NULL), g_bytes_get_size(body), NULL,
                         &err) < 0)
        fail_msg("send: %s", err.message);
    {
        vtpm_client_msg *m = NULL;

        if (vtpm_client_msg_recv(c, SHORT_MS, &m, &err) != 0)
            fail_msg("duplicate message id: no reply to the third copy");
        g_ptr_array_add(replies, m);
    }
    for (guint i = 1; i < replies->len; i++) {
        vtpm_client_msg *a = g_ptr_array_index(replies, 0), *b = g_ptr_array_index(replies, i);

        if (!g_bytes_equal(a->body, b->body))
            fail_msg("reply %u to the same message id differs from the first", i + 1);
    }
    {
        g_autoptr(vt_reply) r = vt_reply_decode(g_ptr_array_steal_index(replies, 0));

        vt_assert_ok(r, "spawn sent three times with one message id");
    }
    if (domains_with(uuid) != 1)
        fail_msg("three copies of one spawn made %u domains", domains_with(uuid));

    log = vt_vtpmd_log(group_d);
    {
        const char *ok_line[] = { rid_kv, mid_kv, "method=spawn", "outcome=ok", NULL };
        const char *any_run[] = { mid_kv, "method=spawn", "outcome=", NULL };
        const char *cache[] = { mid_kv, "duplicate answered from the reply cache", NULL };

        ran = vt_count_lines(log, any_run);
        cached = vt_count_lines(log, cache);
        if (vt_count_lines(log, ok_line) != 1 || ran != 1)
            fail_msg("the handler should have run once for %s: %u outcome line(s), %u ok",
                     mid, ran, vt_count_lines(log, ok_line));
        if (cached != 1)
            fail_msg("expected exactly one \"duplicate answered from the reply cache\" line "
                     "for %s (the third copy), found %u", mid, cached);
        assert_time_split(log, rid_kv);
    }
    destroy_ok(uuid, true, "deleted");
}

/* ---- 6. faults --------------------------------------------------------- */

static void
expect_spawn_fault(const vt_spawn_spec *s, vtpm_fault code, const char *fragment,
                   const char *what)
{
    g_autoptr(vt_reply) r = spawn(group_d, s);

    vt_assert_fault(r, code, fragment, what);
    /* Every one of these is refused before libvirt is touched. */
    if (domain_exists(s->uuid))
        fail_msg("%s: refused, but a domain was defined", what);
}

static void
test_faults(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *images = vt_host_path(H, "var/lib/vtpmd/images");
    g_autofree char *link_name = g_strdup_printf("wt-escape-%d", (int)getpid());
    g_autofree char *link = g_build_filename(images, link_name, NULL);
    g_autofree char *link_in_ns = g_strdup_printf("/var/lib/vtpmd/images/%s", link_name);
    g_autofree char *missing_in_ns = g_strdup_printf("/var/lib/vtpmd/images/wt-none-%d",
                                                     (int)getpid());

    /* BadRequest: structure and types of the instance. */
    {
        g_autoptr(GBytes) body = vt_request("spawn", NULL, "f-noinst", 0);
        g_autoptr(vt_reply) r = vt_call_bytes(group_d->routing_key, body, SHORT_MS);

        vt_assert_fault(r, VTPM_FAULT_BAD_REQUEST, "args.instance", "spawn without args.instance");
    }
    {
        vt_spawn_spec s = { .uuid = "not-a-uuid", .power_on = -1 };
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_fault(r, VTPM_FAULT_BAD_REQUEST, "args.instance.uuid", "spawn with a bad uuid");
    }
    {
        vt_spawn_spec s = { .uuid = "00000000-0000-0000-0000-000000000000", .power_on = -1 };
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_fault(r, VTPM_FAULT_BAD_REQUEST, "args.instance.uuid", "spawn with the nil uuid");
    }
    {
        g_autoptr(GBytes) body = spawn_body_custom(uuid, "m1", 2, true);
        g_autoptr(vt_reply) r = vt_call_bytes(group_d->routing_key, body, SHORT_MS);

        vt_assert_fault(r, VTPM_FAULT_BAD_REQUEST, "args.instance.flavor.vcpus",
                        "flavor.vcpus sent as a str");
    }
    /* UnsupportedVersion: v=2, and v=-1. */
    for (int v = 0; v < 2; v++) {
        MP_BEGIN(sb, pk);
        msgpack_pack_map(&pk, 2);
        mp_str(&pk, "v");
        if (v == 0)
            msgpack_pack_uint8(&pk, 2);
        else
            msgpack_pack_int8(&pk, -1);
        mp_str(&pk, "method");
        mp_str(&pk, "get_capabilities");
        {
            g_autoptr(GBytes) body = mp_bytes(&sb);
            g_autoptr(vt_reply) r = vt_call_bytes(group_d->routing_key, body, SHORT_MS);

            vt_assert_fault(r, VTPM_FAULT_UNSUPPORTED_VERSION,
                            v == 0 ? "unsupported protocol version 2"
                                   : "unsupported protocol version -1",
                            v == 0 ? "v=2" : "v=-1");
        }
    }
    /* UnknownMethod */
    {
        g_autoptr(vt_reply) r = vt_call(group_d, "reboot_everything", NULL, SHORT_MS);

        vt_assert_fault(r, VTPM_FAULT_UNKNOWN_METHOD, "reboot_everything", "unknown method");
    }
    /* Expired: a deadline in the past; nothing is done. */
    {
        vt_spawn_spec s = { .uuid = uuid, .power_on = -1 };
        g_autoptr(GBytes) args = vt_args_spawn(&s);
        uint64_t past = (uint64_t)(g_get_real_time() / 1000) - 60000;
        g_autoptr(GBytes) body = vt_request("spawn", args, "f-expired", past);
        g_autoptr(vt_reply) r = vt_call_bytes(group_d->routing_key, body, SHORT_MS);

        vt_assert_fault(r, VTPM_FAULT_EXPIRED, "deadline", "spawn with deadline_ms in the past");
        if (domain_exists(uuid))
            fail_msg("an expired spawn defined a domain");
    }
    /* TPM settings */
    {
        const char *specs[] = { "hw:tpm_version", "3.0", NULL };
        vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_INVALID_TPM_CONFIG, "invalid TPM version",
                           "hw:tpm_version=3.0");
    }
    {
        const char *specs[] = { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-crb", NULL };
        vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_INVALID_TPM_CONFIG, "CRB",
                           "hw:tpm_model=tpm-crb with hw:tpm_version=1.2");
    }
    {
        const char *specs[] = { "hw:tpm_version", "2.0", NULL };
        const char *props[] = { "hw_tpm_version", "1.2", NULL };
        vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .properties = props,
                            .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_FLAVOR_IMAGE_CONFLICT, "hw_tpm_version=1.2",
                           "flavor 2.0 vs image 1.2");
    }
    {
        const char *specs[] = { "hw:tpm_version", "2.0", "hw:tpm_secret_security",
                                "deployment", NULL };
        vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_TPM_UNSUPPORTED, VTPM_TRAIT_SECRET_DEPLOYMENT,
                           "secret security deployment (not offered by default)");
    }
    /* Boot paths are confined to the images directory, symlinks resolved. */
    {
        vt_spawn_spec s = { .uuid = uuid, .kernel = "/etc/hostname", .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_BAD_REQUEST, "outside the images directory",
                           "boot.kernel outside images_dir");
    }
    {
        vt_spawn_spec s = { .uuid = uuid,
                            .kernel = "/var/lib/vtpmd/images/../../../../etc/hostname",
                            .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_BAD_REQUEST, "outside the images directory",
                           "boot.kernel escaping images_dir with ..");
    }
    (void)g_unlink(link);
    if (symlink("/etc/hostname", link) < 0)
        fail_msg("symlink %s: %s", link, g_strerror(errno));
    {
        vt_spawn_spec s = { .uuid = uuid, .kernel = link_in_ns, .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_BAD_REQUEST, "outside the images directory",
                           "boot.kernel: a symlink in images_dir pointing outside");
    }
    (void)g_unlink(link);
    {
        vt_spawn_spec s = { .uuid = uuid, .kernel = missing_in_ns, .power_on = -1 };

        expect_spawn_fault(&s, VTPM_FAULT_BAD_REQUEST, "args.instance.boot.kernel",
                           "boot.kernel that does not exist");
    }
    /* InstanceConflict is covered by test_spawn_idempotent. */
}

/* ---- 7. hostile bodies ------------------------------------------------- */

static void
test_hostile_bodies(void **state)
{
    g_autoptr(GRand) rnd = g_rand_new_with_seed(0x76747064);
    g_autofree char *uuid = vt_uuid();
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    g_autoptr(GBytes) sargs = vt_args_spawn(&s);
    g_autoptr(GBytes) good = vt_request("spawn", sargs, "hostile-trunc", 0);
    gsize good_len;
    const char *good_data = g_bytes_get_data(good, &good_len);
    unsigned cuts = 0;

    /* Random bytes. */
    for (int i = 0; i < 200; i++) {
        guint32 len = (guint32)g_rand_int_range(rnd, 1, 300);
        g_autofree guint8 *b = g_malloc(len);
        g_autofree char *what = NULL;

        for (guint32 k = 0; k < len; k++)
            b[k] = (guint8)g_rand_int_range(rnd, 0, 256);
        what = g_strdup_printf("random body %d (%u bytes, first 0x%02x)", i, len, b[0]);
        hostile(b, len, VTPM_FAULT_BAD_REQUEST, NULL, what);
    }
    /* Every truncation of a valid request (a valid spawn: none may run). */
    for (gsize cut = 0; cut < good_len; cut++) {
        g_autofree char *what = g_strdup_printf("spawn body cut at %zu of %zu", cut, good_len);

        hostile(good_data, cut, VTPM_FAULT_BAD_REQUEST, "offset", what);
        cuts++;
    }
    assert_true(cuts >= 50);
    if (domain_exists(uuid))
        fail_msg("a truncated spawn request defined a domain");

    /* A map32 header announcing 2^32-1 entries: refused before allocating. */
    {
        static const guint8 b[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };

        hostile(b, sizeof(b), VTPM_FAULT_BAD_REQUEST, "4294967295", "map32 of 0xFFFFFFFF");
    }
    /* 1000 nested fixarrays, bare and inside a request. */
    {
        g_autoptr(GByteArray) b = g_byte_array_new();
        guint8 one = 0x91, nil = 0xc0;

        for (int i = 0; i < 1000; i++)
            g_byte_array_append(b, &one, 1);
        g_byte_array_append(b, &nil, 1);
        hostile(b->data, b->len, VTPM_FAULT_BAD_REQUEST, "nests deeper", "1000-deep fixarray");
    }
    {
        MP_BEGIN(sb, pk);
        msgpack_pack_map(&pk, 3);
        mp_str(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        mp_str(&pk, "method");
        mp_str(&pk, "get_capabilities");
        mp_str(&pk, "args");
        msgpack_pack_map(&pk, 1);
        mp_str(&pk, "x");
        for (int i = 0; i < 1000; i++)
            msgpack_pack_array(&pk, 1);
        msgpack_pack_nil(&pk);
        {
            g_autoptr(GBytes) body = mp_bytes(&sb);

            hostile(g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                    VTPM_FAULT_BAD_REQUEST, "nests deeper", "1000-deep fixarray in args");
        }
    }
    /* Wrong types in the envelope. */
    {
        static const struct { const char *key, *fragment; } cases[] = {
            { "v", "v: expected integer" },
            { "method", "method" },
            { "args", "args" },
            { "instance", "args.instance" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
            MP_BEGIN(sb, pk);
            bool inst = strcmp(cases[i].key, "instance") == 0;

            msgpack_pack_map(&pk, 3);
            mp_str(&pk, "v");
            if (strcmp(cases[i].key, "v") == 0)
                mp_str(&pk, "1");
            else
                msgpack_pack_uint8(&pk, 1);
            mp_str(&pk, "method");
            if (strcmp(cases[i].key, "method") == 0)
                msgpack_pack_uint8(&pk, 5);
            else
                mp_str(&pk, inst ? "spawn" : "get_capabilities");
            mp_str(&pk, "args");
            if (strcmp(cases[i].key, "args") == 0) {
                mp_str(&pk, "x");
            } else {
                msgpack_pack_map(&pk, 1);
                mp_str(&pk, "instance");
                if (inst)
                    msgpack_pack_array(&pk, 0);
                else
                    msgpack_pack_map(&pk, 0);
            }
            {
                g_autoptr(GBytes) body = mp_bytes(&sb);
                g_autofree char *what = g_strdup_printf("wrong type for %s", cases[i].key);

                hostile(g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                        VTPM_FAULT_BAD_REQUEST, cases[i].fragment, what);
            }
        }
    }
    /* 10 MiB: over the worker's default 1 MiB limit. */
    {
        gsize n = 10u << 20;
        g_autofree guint8 *b = g_malloc(n);

        /* A str8 header and filler: a body that would parse if allowed. */
        memset(b, 'a', n);
        hostile(b, n, VTPM_FAULT_BAD_REQUEST, "1048576", "10 MiB body");
    }
    /* Strings that are not UTF-8. */
    {
        g_autofree char *u2 = vt_uuid();
        g_autoptr(GBytes) body = spawn_body_custom(u2, "\xff\xfe\xfd", 3, false);

        hostile(g_bytes_get_data(body, NULL), g_bytes_get_size(body), VTPM_FAULT_BAD_REQUEST,
                "UTF-8", "flavor.name not UTF-8");
        if (domain_exists(u2))
            fail_msg("a spawn with a non-UTF-8 flavor name defined a domain");
    }
    {
        MP_BEGIN(sb, pk);
        msgpack_pack_map(&pk, 2);
        mp_str(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        mp_str(&pk, "method");
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "sp\xc3\x28", 4);
        {
            g_autoptr(GBytes) body = mp_bytes(&sb);

            hostile(g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                    VTPM_FAULT_BAD_REQUEST, "method", "method not UTF-8");
        }
    }
    /* Empty body. */
    hostile("", 0, VTPM_FAULT_BAD_REQUEST, "offset 0", "empty body");
}

/* A cast (no reply_to) of garbage is consumed and acked, never answered. */
static void
test_hostile_cast(void **state)
{
    g_autoptr(vtpm_client) c = vt_client_new();
    g_autofree char *mid = g_strdup_printf("cast-%d", (int)getpid());
    g_autofree char *mid_kv = g_strdup_printf("message_id=%s", mid);
    vtpm_client_msg_opts o = { .routing_key = group_d->routing_key, .cast = true,
                                .message_id = mid };
    g_autoptr(vtpm_client_msg) m = NULL;
    vtpm_error err = { 0 };
    const char *needles[] = { mid_kv, "outcome=BadRequest", NULL };
    g_autofree char *script = g_strdup_printf(
        "vt_rmqctl -q list_queues name messages_ready messages_unacknowledged | "
        "awk '$1 == \"%s\" { print $2 + $3 }'", group_d->routing_key);
    int left = -1;

    if (vtpm_client_msg_send(c, &o, "\xc1garbage", 8, NULL, &err) < 0)
        fail_msg("send: %s", err.message);
    assert_serving(group_d, "a garbage cast");
    if (!vt_vtpmd_wait_log(group_d, needles, SHORT_MS))
        fail_msg("vtpmd's log has no BadRequest outcome for the cast %s", mid);
    /* Nothing may come back for a cast: only the reply of a call goes to
     * this client's queue, and that call (assert_serving) used another. */
    if (vtpm_client_msg_recv(c, 1000, &m, &err) == 0)
        fail_msg("a cast got a reply (correlation id %s)",
                 m->correlation_id ? m->correlation_id : "-");
    /* The queue is drained: the cast was acked, not left unacked. */
    for (int i = 0; i < 20; i++) {
        g_autofree char *out = NULL;

        if (vt_env_sh(script, &out) == 0 && *g_strstrip(out))
            left = atoi(out);
        if (left == 0)
            break;
        g_usleep(250 * 1000);
    }
    if (left != 0)
        fail_msg("queue %s still holds %d message(s) after the cast was handled",
                 group_d->routing_key, left);
}

/* ---- 8. serialization per instance ------------------------------------- */

static void
recv_corr(vtpm_client *c, GHashTable *want, GHashTable *at, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    vtpm_error err = { 0 };

    while (g_hash_table_size(at) < g_hash_table_size(want)) {
        vtpm_client_msg *m = NULL;
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        int rc = left > 0 ? vtpm_client_msg_recv(c, (int)left, &m, &err) : 1;

        if (rc != 0)
            fail_msg("got %u of %u replies (%s)", g_hash_table_size(at), g_hash_table_size(want),
                     rc < 0 ? err.message : "timeout");
        if (m->correlation_id && g_hash_table_contains(want, m->correlation_id)) {
            g_autoptr(vt_reply) r = NULL;
            gint64 t = m->received_us;
            char *corr = g_strdup(m->correlation_id);

            r = vt_reply_decode(m);
            vt_assert_ok(r, "destroy of a missing instance");
            g_hash_table_insert(at, corr, g_memdup2(&t, sizeof(t)));
        } else {
            vtpm_client_msg_free(m);
        }
    }
}

static gint64
at_us(GHashTable *at, const char *corr)
{
    return *(gint64 *)g_hash_table_lookup(at, corr);
}

static void
test_serialization(void **state)
{
    static const char *const env[] = { "VTPMD_DELAY_AT=destroy.start=1500", NULL };
    g_autofree char *host = vt_unique("serial");
    vt_config_opts o = { .worker_host = host, .workers = 4 };
    vt_vtpmd *d = start_own(&o, env);
    g_autoptr(vtpm_client) c = vt_client_new();
    vtpm_client_msg_opts so = { .routing_key = d->routing_key };
    vtpm_error err = { 0 };

    /* Same instance: the second waits for the first. */
    {
        g_autofree char *uuid = vt_uuid();
        g_autoptr(GBytes) args = vt_args_destroy(uuid, -1);
        g_autoptr(GBytes) body = vt_request("destroy", args, "serial-same", 0);
        g_autoptr(GHashTable) want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) at = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        char *corr[2];
        gint64 gap;

        for (int i = 0; i < 2; i++) {
            if (vtpm_client_msg_send(c, &so, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                                 &corr[i], &err) < 0)
                fail_msg("send: %s", err.message);
            g_hash_table_add(want, corr[i]);
        }
        recv_corr(c, want, at, 20000);
        gap = llabs(at_us(at, corr[1]) - at_us(at, corr[0]));
        print_message("same instance: replies %.0f ms apart\n", gap / 1000.0);
        if (gap < 1400 * 1000)
            fail_msg("two destroys of one instance overlapped: replies %.0f ms apart, the "
                     "second should wait for the first (>= 1400 ms)", gap / 1000.0);
    }
    /* The same instance spelled in upper case is still the same instance. */
    {
        g_autofree char *uuid = vt_uuid();
        g_autofree char *upper = g_ascii_strup(uuid, -1);
        g_autoptr(GHashTable) want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) at = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        char *corr[2];
        gint64 gap;

        for (int i = 0; i < 2; i++) {
            g_autoptr(GBytes) args = vt_args_destroy(i ? upper : uuid, -1);
            g_autoptr(GBytes) body = vt_request("destroy", args, "serial-case", 0);

            if (vtpm_client_msg_send(c, &so, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                                 &corr[i], &err) < 0)
                fail_msg("send: %s", err.message);
            g_hash_table_add(want, corr[i]);
        }
        recv_corr(c, want, at, 20000);
        gap = llabs(at_us(at, corr[1]) - at_us(at, corr[0]));
        if (gap < 1400 * 1000)
            fail_msg("destroys of %s and %s overlapped (replies %.0f ms apart): one instance, "
                     "two spellings", uuid, upper, gap / 1000.0);
    }
    /* A request whose deadline passes while it waits behind another of
     * the same instance is Expired when its turn comes, and not run. */
    {
        g_autofree char *uuid = vt_uuid();
        g_autoptr(GBytes) args = vt_args_destroy(uuid, -1);
        g_autoptr(GBytes) first = vt_request("destroy", args, "serial-first", 0);
        g_autoptr(GBytes) second = vt_request("destroy", args, "serial-deadline",
                                              (uint64_t)(g_get_real_time() / 1000) + 500);
        g_autofree char *c1 = NULL, *c2 = NULL;
        bool got1 = false, got2 = false;

        if (vtpm_client_msg_send(c, &so, g_bytes_get_data(first, NULL), g_bytes_get_size(first),
                             &c1, &err) < 0 ||
            vtpm_client_msg_send(c, &so, g_bytes_get_data(second, NULL), g_bytes_get_size(second),
                             &c2, &err) < 0)
            fail_msg("send: %s", err.message);
        while (!got1 || !got2) {
            vtpm_client_msg *m = NULL;
            g_autoptr(vt_reply) r = NULL;

            if (vtpm_client_msg_recv(c, 20000, &m, &err) != 0)
                fail_msg("deadline behind a running request: a reply is missing");
            r = vt_reply_decode(m);
            if (g_strcmp0(m->correlation_id, c1) == 0) {
                vt_assert_ok(r, "destroy running first");
                got1 = true;
            } else if (g_strcmp0(m->correlation_id, c2) == 0) {
                vt_assert_fault(r, VTPM_FAULT_EXPIRED, "while queued",
                                "destroy whose deadline passed behind another of its instance");
                got2 = true;
            }
        }
    }
    /* Different instances: they run side by side. */
    {
        g_autoptr(GHashTable) want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) at = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        char *corr[2];
        gint64 t0 = g_get_monotonic_time(), last;

        for (int i = 0; i < 2; i++) {
            g_autofree char *uuid = vt_uuid();
            g_autoptr(GBytes) args = vt_args_destroy(uuid, -1);
            g_autoptr(GBytes) body = vt_request("destroy", args, "serial-diff", 0);

            if (vtpm_client_msg_send(c, &so, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                                 &corr[i], &err) < 0)
                fail_msg("send: %s", err.message);
            g_hash_table_add(want, corr[i]);
        }
        recv_corr(c, want, at, 20000);
        last = MAX(at_us(at, corr[0]), at_us(at, corr[1]));
        print_message("different instances: both replies %.0f ms after sending\n",
                      (last - t0) / 1000.0);
        if (MIN(at_us(at, corr[0]), at_us(at, corr[1])) - t0 < 1400 * 1000)
            fail_msg("a destroy answered before the injected 1500 ms delay: injection inactive?");
        if (last - t0 > 2600 * 1000)
            fail_msg("destroys of two instances took %.0f ms: they were serialized (>= 3000 "
                     "ms) instead of overlapping (< 2600 ms)", (last - t0) / 1000.0);
    }
    vt_vtpmd_stop_ok(d);
}

/* ---- 9. SIGTERM with work in flight ------------------------------------ */

static void
test_sigterm_drains(void **state)
{
    static const char *const env[] = { "VTPMD_DELAY_AT=destroy.start=2000", NULL };
    g_autofree char *host = vt_unique("drain");
    vt_config_opts o = { .worker_host = host };
    vt_vtpmd *d = start_own(&o, env);
    g_autoptr(vtpm_client) c = vt_client_new();
    vtpm_client_msg_opts so = { .routing_key = d->routing_key };
    g_autofree char *uuid = vt_uuid();
    g_autoptr(GBytes) args = vt_args_destroy(uuid, -1);
    g_autoptr(GBytes) body = vt_request("destroy", args, "drain-inflight", 0);
    g_autoptr(GBytes) late = vt_request("get_capabilities", NULL, "drain-late", 0);
    g_autofree char *corr = NULL, *late_corr = NULL;
    g_autoptr(vtpm_client_msg) m = NULL;
    g_autoptr(vtpm_client_msg) m2 = NULL;
    vtpm_error err = { 0 };
    gint64 t_term;
    int code;
    vt_vtpmd *d2;

    if (vtpm_client_msg_send(c, &so, g_bytes_get_data(body, NULL), g_bytes_get_size(body), &corr,
                         &err) < 0)
        fail_msg("send: %s", err.message);
    g_usleep(300 * 1000);
    t_term = g_get_monotonic_time();
    kill(d->pid, SIGTERM);
    /* Sent once vtpmd has taken the signal in and drains: it must not
     * take it on.  (Until its I/O thread has seen the stop, which takes a
     * moment after the log line, a delivery is still legitimately
     * accepted: hence the pause.) */
    {
        const char *draining[] = { "SIGTERM: draining", NULL };

        if (!vt_vtpmd_wait_log(d, draining, 5000))
            fail_msg("vtpmd did not log that it drains within 5 s of SIGTERM");
        g_usleep(300 * 1000);
    }
    if (vtpm_client_msg_send(c, &so, g_bytes_get_data(late, NULL), g_bytes_get_size(late),
                         &late_corr, &err) < 0)
        fail_msg("send: %s", err.message);

    if (vtpm_client_msg_recv(c, 10000, &m, &err) != 0)
        fail_msg("the destroy in flight at SIGTERM was not answered within 10 s");
    if (g_strcmp0(m->correlation_id, corr) != 0)
        fail_msg("after SIGTERM the first reply is for %s, expected the in-flight destroy %s "
                 "(the request sent after SIGTERM was handled)",
                 m->correlation_id ? m->correlation_id : "-", corr);
    {
        g_autoptr(vt_reply) r = vt_reply_decode(g_steal_pointer(&m));

        vt_assert_ok(r, "destroy in flight at SIGTERM");
    }
    code = vt_vtpmd_wait_exit(d, 10000 - (int)((g_get_monotonic_time() - t_term) / 1000));
    {
        g_autofree char *report = vt_vtpmd_sanitizer_report(d);

        if (code != 0 || report) {
            vt_vtpmd_dump(d);
            fail_msg("vtpmd exited %d after SIGTERM (expected 0 within 10 s)%s%s", code,
                     report ? "; sanitizer: " : "", report ? report : "");
        }
    }
    if (vtpm_client_msg_recv(c, 500, &m2, &err) == 0)
        fail_msg("the request sent after SIGTERM was answered by the draining vtpmd");

    /* It is still queued: the next vtpmd of the host answers it. */
    d2 = spawn_own(d->config, d->worker_host, NULL);
    if (vtpm_client_msg_recv(c, VT_READY_MS, &m2, &err) != 0) {
        vt_vtpmd_dump(d2);
        fail_msg("the request sent after SIGTERM was never answered by the next vtpmd");
    }
    assert_string_equal(m2->correlation_id, late_corr);
    {
        g_autoptr(vt_reply) r = vt_reply_decode(g_steal_pointer(&m2));

        vt_assert_ok(r, "request queued across the restart");
    }
    vt_vtpmd_stop_ok(d2);
}

/* SIGTERM while requests wait: the running one finishes and is answered;
 * the ones taken but not started (behind it for the same instance, or for
 * a pool thread) go back to the host's queue in the order sent and the
 * next vtpmd answers them; a broadcast waiting behind it cannot go back
 * (its queue dies with the process) and is answered Busy. */
static void
send_or_fail(vtpm_client *c, const vtpm_client_msg_opts *so, GBytes *body, char **corr)
{
    vtpm_error err = { 0 };

    if (vtpm_client_msg_send(c, so, g_bytes_get_data(body, NULL), g_bytes_get_size(body), corr,
                         &err) < 0)
        fail_msg("send: %s", err.message);
}

static void
test_sigterm_hands_back(void **state)
{
    const char *const env[] = { g_getenv("VT_VALGRIND") ? "VTPMD_DELAY_AT=destroy.start=8000"
                                                        : "VTPMD_DELAY_AT=destroy.start=4000",
                                NULL };
    g_autofree char *host = vt_unique("handback");
    g_autofree char *prom = NULL;
    g_autofree char *tail = metrics_tail(host, &prom);
    vt_config_opts o = { .worker_host = host, .workers = 1, .tail = tail };
    vt_vtpmd *d = start_own(&o, env);
    g_autoptr(vtpm_client) c = vt_client_new();
    g_autofree char *u1 = vt_uuid(), *u2 = vt_uuid();
    g_autofree char *mid_behind = vt_uuid(), *mid_waiting = vt_uuid();
    vtpm_client_msg_opts direct = { .routing_key = d->routing_key };
    vtpm_client_msg_opts behind = { .routing_key = d->routing_key, .message_id = mid_behind };
    vtpm_client_msg_opts waiting = { .routing_key = d->routing_key, .message_id = mid_waiting };
    vtpm_client_msg_opts bcast = { .fanout = true, .routing_key = "" };
    g_autoptr(GBytes) args1 = vt_args_destroy(u1, -1);
    g_autoptr(GBytes) args2 = vt_args_destroy(u2, -1);
    g_autoptr(GBytes) b_run = vt_request("destroy", args1, "handback-running", 0);
    g_autoptr(GBytes) b_behind = vt_request("destroy", args1, "handback-behind", 0);
    g_autoptr(GBytes) b_waiting = vt_request("destroy", args2, "handback-waiting", 0);
    g_autoptr(GBytes) b_bcast = vt_request("destroy", args1, "handback-broadcast", 0);
    g_autofree char *c_run = NULL, *c_behind = NULL, *c_waiting = NULL, *c_bcast = NULL;
    bool run_ok = false, bcast_busy = false;
    unsigned bcast_ok = 0;
    vtpm_error err = { 0 };
    g_autofree char *log = NULL;
    vt_vtpmd *d2;
    int code;

    /* The running one first, alone (the pool is idle: it starts at once);
     * then the others, all taken before the signal. */
    send_or_fail(c, &direct, b_run, &c_run);
    wait_prom_at_least(prom, "vtpmd_requests_in_flight", 1);
    send_or_fail(c, &behind, b_behind, &c_behind);
    send_or_fail(c, &waiting, b_waiting, &c_waiting);
    send_or_fail(c, &bcast, b_bcast, &c_bcast);
    wait_prom_at_least(prom, "vtpmd_requests_in_flight", 4);
    kill(d->pid, SIGTERM);

    /* The group's vtpmd answers the broadcast too (ok). */
    while (!run_ok || !bcast_busy || bcast_ok == 0) {
        vtpm_client_msg *m = NULL;
        g_autoptr(vt_reply) r = NULL;
        const char *corr;

        if (vtpm_client_msg_recv(c, 30000, &m, &err) != 0) {
            vt_vtpmd_dump(d);
            fail_msg("after SIGTERM: running answered %d, broadcast answered Busy %d and ok "
                     "%u times; nothing more within 30 s",
                     run_ok, bcast_busy, bcast_ok);
        }
        r = vt_reply_decode(m);
        corr = r->msg->correlation_id;
        if (g_strcmp0(corr, c_run) == 0) {
            vt_assert_ok(r, "destroy running at SIGTERM");
            run_ok = true;
        } else if (g_strcmp0(corr, c_bcast) == 0 && r->rep && r->rep->ok) {
            bcast_ok++;
        } else if (g_strcmp0(corr, c_bcast) == 0) {
            vt_assert_fault(r, VTPM_FAULT_BUSY, "shutting down",
                            "broadcast taken but not started at SIGTERM");
            bcast_busy = true;
        } else if (g_strcmp0(corr, c_behind) == 0 || g_strcmp0(corr, c_waiting) == 0) {
            fail_msg("the draining vtpmd answered %s (%s), which had not started at SIGTERM: "
                     "it should have gone back to the queue",
                     g_strcmp0(corr, c_behind) == 0 ? "the destroy behind the running one"
                                                    : "the destroy waiting for the pool",
                     vt_reply_summary(r));
        }
    }
    code = vt_vtpmd_wait_exit(d, 30000);
    {
        g_autofree char *report = vt_vtpmd_sanitizer_report(d);

        if (code != 0 || report) {
            vt_vtpmd_dump(d);
            fail_msg("vtpmd exited %d after SIGTERM (expected 0 within 30 s)%s%s", code,
                     report ? "; sanitizer: " : "", report ? report : "");
        }
    }
    log = vt_vtpmd_log(d);
    for (int i = 0; i < 2; i++) {
        const char *mid = i ? mid_waiting : mid_behind;
        const char *n[] = { mid, "handed back to the queue", NULL };

        if (vt_count_lines(log, n) != 1) {
            vt_vtpmd_dump(d);
            fail_msg("vtpmd's log should say once that message %s was handed back", mid);
        }
    }

    /* The next vtpmd of the host answers them, in the order they were
     * sent (it runs one at a time: workers = 1). */
    d2 = spawn_own(d->config, d->worker_host, NULL);
    for (int i = 0; i < 2; i++) {
        const char *want = i ? c_waiting : c_behind;
        vtpm_client_msg *m = NULL;
        g_autoptr(vt_reply) r = NULL;

        if (vtpm_client_msg_recv(c, VT_READY_MS, &m, &err) != 0) {
            vt_vtpmd_dump(d2);
            fail_msg("the requests handed back at SIGTERM were not answered by the next vtpmd "
                     "(%d of 2)", i);
        }
        r = vt_reply_decode(m);
        if (g_strcmp0(r->msg->correlation_id, want) != 0)
            fail_msg("reply %d of the next vtpmd is for %s, expected %s (%s): the handed-back "
                     "requests should keep the order they were sent in", i + 1,
                     r->msg->correlation_id ? r->msg->correlation_id : "-", want,
                     i ? "the destroy that waited for the pool" : "the destroy behind the running one");
        vt_assert_ok(r, "request handed back at SIGTERM, answered by the next vtpmd");
    }
    vt_vtpmd_stop_ok(d2);
}

/* ---- 10. broker restart ------------------------------------------------ */

static gint restart_done; /* atomic: vt_rmq_restart returned */

static gpointer
restart_thread(gpointer data)
{
    int rc = vt_env_sh("vt_rmq_restart", NULL);

    g_atomic_int_set(&restart_done, 1);
    return GINT_TO_POINTER(rc);
}

static void
test_broker_restart(void **state)
{
    /* The 15 destroys keep 2 workers busy for 15 s (30 s under memcheck):
     * longer than `rabbitmqctl stop` takes to reach the node even on a
     * loaded 2-core machine (700 ms each was too short at load 22: every
     * reply was in before the broker went down). */
    const char *const env[] = { g_getenv("VT_VALGRIND") ? "VTPMD_DELAY_AT=destroy.start=4000"
                                                         : "VTPMD_DELAY_AT=destroy.start=2000",
                                NULL };
    g_autofree char *host = vt_unique("rmq");
    g_autofree char *queue = g_strdup_printf("wt-replies-%d", (int)getpid());
    vt_config_opts o = { .worker_host = host, .workers = 2 };
    vt_vtpmd *d = start_own(&o, env);
    g_autoptr(GHashTable) want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) got = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    const char *url = vt_env("VT_AMQP_URL");
    vt_amqp *a = vt_amqp_open(url);
    unsigned dups = 0, before = 0;
    bool lost = false;
    GThread *t;
    gint64 end;
    int rc;

    /* Our own durable reply queue: unlike a client's exclusive one it
     * outlives the broker restart, so replies published after it still
     * reach us. */
    if (!a || vt_amqp_declare_durable(a, queue) < 0 || vt_amqp_consume(a, queue) < 0)
        fail_msg("declaring and consuming the durable reply queue %s failed", queue);
    {
        g_autoptr(vtpm_client) c = vt_client_new();
        vtpm_client_msg_opts so = { .routing_key = d->routing_key, .reply_to = queue };
        vtpm_error err = { 0 };

        for (int i = 0; i < 30; i++) {
            g_autofree char *uuid = vt_uuid();
            g_autoptr(GBytes) args = vt_args_destroy(uuid, -1);
            g_autofree char *rid = g_strdup_printf("rmq-%d", i);
            g_autoptr(GBytes) body = i % 2 ? vt_request("get_capabilities", NULL, rid, 0)
                                           : vt_request("destroy", args, rid, 0);
            char *corr = NULL;

            if (vtpm_client_msg_send(c, &so, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                                 &corr, &err) < 0)
                fail_msg("send %d: %s", i, err.message);
            g_hash_table_add(want, corr);
        }
    }
    g_atomic_int_set(&restart_done, 0);
    t = g_thread_new("rmq-restart", restart_thread, NULL);
    /* Keep consuming through the restart: a transient reply that sits in
     * the queue when the broker stops would be lost with it. */
    end = g_get_monotonic_time() + 180 * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < end &&
           !(g_atomic_int_get(&restart_done) &&
             g_hash_table_size(got) == g_hash_table_size(want))) {
        g_autofree char *corr = NULL;
        g_autoptr(GBytes) body = NULL;

        if (!a) {
            a = vt_amqp_open(url);
            if (!a || vt_amqp_declare_durable(a, queue) < 0 || vt_amqp_consume(a, queue) < 0) {
                g_clear_pointer(&a, vt_amqp_close);
                g_usleep(200 * 1000);
                continue;
            }
        }
        rc = vt_amqp_next(a, 300, &corr, &body);
        if (rc < 0) {
            lost = true;
            g_clear_pointer(&a, vt_amqp_close);
            continue;
        }
        if (rc == 0) {
            g_autoptr(vtpm_reply) rep = NULL;
            vtpm_error err = { 0 };
            vtpm_proto_limits lim;

            vtpm_proto_limits_init(&lim);
            if (!g_hash_table_contains(want, corr))
                fail_msg("a reply with unknown correlation id %s", corr);
            if (vtpm_proto_decode_reply(g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                                        &lim, &rep, &err) < 0 || !rep->ok)
                fail_msg("reply %s: %s", corr, rep ? rep->fault_message : err.message);
            if (!lost)
                before++;
            if (g_hash_table_contains(got, corr))
                dups++;
            else
                g_hash_table_add(got, g_steal_pointer(&corr));
        }
    }
    rc = GPOINTER_TO_INT(g_thread_join(t));
    vt_amqp_close(a);
    vt_client_drop();
    print_message("broker restart: %u/%u answered (%u before the broker went down), "
                  "%u duplicate(s)\n", g_hash_table_size(got), g_hash_table_size(want), before,
                  dups);
    if (rc != 0)
        fail_msg("vt_rmq_restart failed (%d)", rc);
    if (g_hash_table_size(got) != g_hash_table_size(want)) {
        GHashTableIter it;
        gpointer k;

        g_hash_table_iter_init(&it, want);
        while (g_hash_table_iter_next(&it, &k, NULL))
            if (!g_hash_table_contains(got, k))
                print_error("no reply for correlation id %s\n", (char *)k);
        vt_vtpmd_dump(d);
        fail_msg("%u of %u requests were never answered across the broker restart",
                 g_hash_table_size(want) - g_hash_table_size(got), g_hash_table_size(want));
    }
    if (before == g_hash_table_size(want))
        fail_msg("every reply arrived before the broker went down: the restart did not hit "
                 "requests in flight (make the injected delay longer)");
    {
        const char *lost_line[] = { "amqp: lost the connection", NULL };
        const char *gen2[] = { "amqp: connected", "generation 2", NULL };

        if (!vt_vtpmd_wait_log(d, lost_line, 1000) || !vt_vtpmd_wait_log(d, gen2, 1000)) {
            vt_vtpmd_dump(d);
            fail_msg("vtpmd's log does not show the lost connection and the reconnect "
                     "(generation 2)");
        }
    }
    assert_serving(d, "the broker restart");
    assert_serving(group_d, "the broker restart (group vtpmd)");
    /* The group's vtpmd lost the broker too, and counts it. */
    wait_prom_at_least(group_prom, "vtpmd_broker_reconnects_total", 1);
    vt_vtpmd_stop_ok(d);
}

/* ---- 11. configuration errors ------------------------------------------ */

static void
test_config_errors(void **state)
{
    g_autofree char *bad = g_strdup_printf("%s/wt-bad-%d.conf", vt_env("VT_ROOT"), (int)getpid());
    g_autofree char *good = NULL;
    g_autofree char *where = g_strdup_printf("%s:5", bad);
    g_autofree char *out = NULL, *errout = NULL;
    g_autoptr(GError) gerr = NULL;
    vt_config_opts o = { .worker_host = "wt-config-ok" };
    const char *argv[] = { vt_env("VT_VTPMD"), "--config", bad, NULL, NULL };
    int status;

    /* Line 5 holds the unknown key. */
    g_file_set_contents(bad,
                        "[amqp]\n"
                        "url = amqp://guest:guest@127.0.0.1:1/%2f\n"
                        "[worker]\n"
                        "host = wt-config\n"
                        "no_such_key = 1\n",
                        -1, NULL);
    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, &errout, &status, &gerr))
        fail_msg("running vtpmd: %s", gerr->message);
    if (g_spawn_check_wait_status(status, NULL))
        fail_msg("vtpmd with an unknown config key exited 0");
    if (!strstr(errout, where) || !strstr(errout, "no_such_key"))
        fail_msg("vtpmd should name %s and the key on stderr, printed:\n%s", where, errout);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&errout, g_free);

    good = vt_config_write(&o);
    argv[2] = good;
    argv[3] = "--check-config";
    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, &errout, &status, &gerr))
        fail_msg("running vtpmd: %s", gerr->message);
    if (!g_spawn_check_wait_status(status, NULL))
        fail_msg("vtpmd --check-config on a good file failed:\n%s%s", out, errout);
    if (!strstr(out, "OK"))
        fail_msg("vtpmd --check-config should print OK, printed:\n%s", out);
    g_unlink(bad);
}

/* ---- metrics file -------------------------------------------------------- */

/* [metrics] textfile: counters as an operator's node_exporter reads them,
 * ok and faults (from a handler and from the dispatcher), and a last
 * write saying vtpmd is down after SIGTERM. */
static void
test_metrics_file(void **state)
{
    g_autofree char *host = vt_unique("metrics");
    g_autofree char *prom = NULL;
    g_autofree char *tail = metrics_tail(host, &prom);
    g_autofree char *families = NULL;
    g_autofree char *u1 = vt_uuid(), *u2 = vt_uuid(), *u3 = vt_uuid();
    vt_config_opts o = { .worker_host = host, .tail = tail };
    const char *crb12[] = { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-crb", NULL };
    vt_spawn_spec bad = { .uuid = u3, .extra_specs = crb12, .power_on = -1 };
    vt_vtpmd *d = start_own(&o, NULL);
    struct stat st;
    double v;

    {
        g_autoptr(vt_reply) r = destroy(d, u1, -1);

        vt_assert_ok(r, "destroy of an unknown instance");
    }
    {
        g_autoptr(vt_reply) r = destroy(d, u2, -1);

        vt_assert_ok(r, "destroy of another unknown instance");
    }
    {
        g_autoptr(vt_reply) r = destroy(d, "not-a-uuid", -1);

        vt_assert_fault(r, VTPM_FAULT_BAD_REQUEST, "uuid", "destroy with a bad uuid");
    }
    {
        g_autoptr(vt_reply) r = spawn(d, &bad);

        vt_assert_fault(r, VTPM_FAULT_INVALID_TPM_CONFIG, NULL, "spawn of TPM 1.2 with CRB");
    }
    {
        g_autoptr(vt_reply) r = vt_call(d, "get_capabilities", NULL, SHORT_MS);

        vt_assert_ok(r, "get_capabilities");
    }
    {
        g_autoptr(vt_reply) r = vt_call(d, "no_such_method", NULL, SHORT_MS);

        vt_assert_fault(r, VTPM_FAULT_UNKNOWN_METHOD, NULL, "an unknown method");
    }

    /* vtpmd counts a request before it replies, so once the file shows
     * the last call, it shows every one before it too. */
    wait_prom_at_least(prom, "vtpmd_requests_total{method=\"unknown\",outcome=\"UnknownMethod\"}", 1);
    assert_prom(prom, "vtpmd_requests_total{method=\"destroy\",outcome=\"ok\"}", 2);
    assert_prom(prom, "vtpmd_requests_total{method=\"destroy\",outcome=\"BadRequest\"}", 1);
    assert_prom(prom, "vtpmd_requests_total{method=\"spawn\",outcome=\"InvalidTPMConfig\"}", 1);
    assert_prom(prom, "vtpmd_requests_total{method=\"unknown\",outcome=\"UnknownMethod\"}", 1);
    /* Readiness polling asked too: at least ours and one more. */
    if (!vt_prom_value(prom, "vtpmd_requests_total{method=\"get_capabilities\",outcome=\"ok\"}", &v) ||
        v < 2)
        fail_msg("%s: get_capabilities ok should count at least 2", prom);
    assert_prom(prom, "vtpmd_request_duration_seconds_count{method=\"destroy\"}", 3);
    assert_prom(prom, "vtpmd_request_duration_seconds_bucket{method=\"destroy\",le=\"+Inf\"}", 3);
    assert_prom(prom, "vtpmd_request_duration_seconds_count{method=\"spawn\"}", 1);
    assert_prom(prom, "vtpmd_requests_in_flight", 0);
    assert_prom(prom, "vtpmd_up", 1);
    assert_prom(prom, "vtpmd_broker_reconnects_total", 0);
    assert_prom(prom, "vtpmd_state_bytes_moved_total{direction=\"in\"}", 0);
    assert_prom(prom, "vtpmd_state_bytes_moved_total{direction=\"out\"}", 0);
    if (!vt_prom_value(prom, "vtpmd_start_time_seconds", &v) ||
        v < (double)g_get_real_time() / G_USEC_PER_SEC - 3600)
        fail_msg("%s: vtpmd_start_time_seconds missing or wrong (%g)", prom, v);
    if (stat(prom, &st) != 0 || (st.st_mode & 07777) != 0644)
        fail_msg("%s should have mode 0644 (node_exporter reads it), has %o", prom,
                 (unsigned)(st.st_mode & 07777));

    families = prom_parse(prom);
    if (!strstr(families, "vtpmd_requests counter") ||
        !strstr(families, "vtpmd_request_duration_seconds histogram") ||
        !strstr(families, "vtpmd_requests_in_flight gauge") ||
        !strstr(families, "vtpmd_state_bytes_moved counter") ||
        !strstr(families, "vtpmd_build_info gauge 1"))
        fail_msg("prometheus_client read these families from %s:\n%s", prom, families);

    /* A clean stop writes once more: down, nothing in flight. */
    vt_vtpmd_stop_ok(d);
    assert_prom(prom, "vtpmd_up", 0);
    assert_prom(prom, "vtpmd_requests_in_flight", 0);
    assert_prom(prom, "vtpmd_requests_total{method=\"destroy\",outcome=\"ok\"}", 2);
    g_unlink(prom);
}

/* ---- start-up checks ------------------------------------------------------ */

/* vtpmd with @o (and @env) must refuse to start: exit 1 with a log line
 * holding every one of @needles. */
static void
assert_refuses(const vt_config_opts *o, const char *const *env, const char *const *needles,
               const char *what)
{
    g_autofree char *cfg = vt_config_write(o);
    vt_vtpmd *d = spawn_own(cfg, o->worker_host, env);
    int code = vt_vtpmd_wait_exit(d, 90000);
    g_autofree char *log = vt_vtpmd_log(d);

    if (code != 1) {
        vt_vtpmd_dump(d);
        fail_msg("%s: vtpmd should refuse to start (exit 1), got %d", what, code);
    }
    if (vt_count_lines(log, needles) == 0) {
        vt_vtpmd_dump(d);
        fail_msg("%s: no log line with '%s' ...", what, needles[0]);
    }
    print_message("%s: refused as expected\n", what);
}

/* As Nova's init_host: a host that cannot serve the vTPMs it has, or
 * cannot create the ones it would offer, does not start. */
static void
test_startup_checks(void **state)
{
    g_autofree char *h_user = vt_unique("nouser");
    g_autofree char *h_group = vt_unique("nogroup");
    g_autofree char *h_path = vt_unique("nopath");
    g_autofree char *h_dom = vt_unique("vtpmdom");
    g_autofree char *h_ok = vt_unique("noswtpm-ok");
    g_autofree char *bin = g_strdup_printf("%s/empty-bin-%d", vt_env("VT_ROOT"), (int)getpid());
    g_autofree char *path_env = g_strdup_printf("PATH=%s", bin);
    g_autofree char *uuid = vt_uuid();
    g_autofree char *dom = domain_name(uuid);
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = 0 };
    const char *env[] = { path_env, NULL };
    vt_config_opts no_user = { .worker_host = h_user,
                               .libvirt_extra = "swtpm_user = vtpm-no-such-user" };
    vt_config_opts no_group = { .worker_host = h_group,
                                .libvirt_extra = "swtpm_group = vtpm-no-such-group" };
    vt_config_opts no_path = { .worker_host = h_path };
    vt_config_opts off = { .worker_host = h_dom, .swtpm_disabled = true };
    vt_config_opts off_ok = { .worker_host = h_ok, .swtpm_disabled = true };

    {
        const char *n[] = { "start-up check", "swtpm_user: user 'vtpm-no-such-user' does not exist",
                            "set swtpm_user", NULL };

        assert_refuses(&no_user, NULL, n, "swtpm_user that does not exist");
    }
    {
        const char *n[] = { "start-up check",
                            "swtpm_group: group 'vtpm-no-such-group' does not exist", NULL };

        assert_refuses(&no_group, NULL, n, "swtpm_group that does not exist");
    }
    /* A PATH without swtpm (vtpmd runs nothing else from PATH). */
    if (g_mkdir_with_parents(bin, 0755) != 0)
        fail_msg("mkdir %s failed", bin);
    {
        const char *n[] = { "start-up check", "swtpm, swtpm_setup, swtpm_ioctl are not on PATH",
                            bin, "install the swtpm and swtpm-tools packages", NULL };

        assert_refuses(&no_path, env, n, "swtpm not on PATH");
    }
    g_rmdir(bin);

    /* A defined domain with a vTPM, and a vtpmd with swtpm disabled. */
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "spawn (defined, not started) of a vTPM instance");
    }
    {
        const char *n[] = { "start-up check", "swtpm_enabled is false but 1 domain on",
                            "has an emulated TPM", dom, "set [libvirt] swtpm_enabled = true",
                            NULL };

        assert_refuses(&off, NULL, n, "swtpm disabled with a vTPM domain defined");
    }
    {
        g_autoptr(vt_reply) r = destroy(group_d, uuid, -1);

        vt_assert_ok(r, "destroy of the vTPM instance");
    }
    /* Without it, the same configuration starts and serves. */
    {
        vt_vtpmd *d = start_own(&off_ok, NULL);

        assert_serving(d, "start with swtpm disabled and no vTPM domain");
        vt_vtpmd_stop_ok(d);
    }
}

/* ---- 12. libvirtd restart ---------------------------------------------- */

static void
test_libvirtd_restart(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *uuid_before = vt_uuid();
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    vt_spawn_spec s_before = { .uuid = uuid_before, .extra_specs = specs, .power_on = -1 };
    gint64 t0, waited_ms;
    unsigned failures = 0;
    bool back = false;

    /* A guest that runs across the restart, as on a real host. */
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s_before);

        vt_assert_ok(r, "spawn before the libvirtd restart");
    }
    vt_libvirtd_kill(H);
    /* During the outage: whatever fails says "retry later". */
    {
        g_autofree char *u = vt_uuid();
        g_autoptr(vt_reply) r = destroy(group_d, u, -1);

        if (!r->rep)
            fail_msg("destroy during the libvirtd outage: %s", vt_reply_summary(r));
        if (!r->rep->ok)
            vt_assert_fault(r, VTPM_FAULT_HYPERVISOR_ERROR, NULL,
                            "destroy during the libvirtd outage");
        print_message("destroy during the outage: %s\n", vt_reply_summary(r));
    }
    /* The group's vtpmd re-probes every second: after a few failed probes
     * the host still offers what it did.  An outage is not a change of
     * capabilities; withdrawing the traits would make a scheduler move
     * instances away, and a spawn right after the restart would be refused
     * for good (TPMUnsupported) instead of succeeding. */
    g_usleep(3500 * 1000);
    {
        g_autoptr(vt_reply) r = vt_call(group_d, "get_capabilities", NULL, SHORT_MS);

        vt_assert_ok(r, "get_capabilities during the outage");
        if (!vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("get_capabilities during the outage lost %s", VTPM_TRAIT_TPM_2_0);
    }
    vt_libvirtd_restart(H);

    /* vtpmd reconnects by itself.  Until its backoff lets it try, a call
     * may still fail, but only as HypervisorError (retryable). */
    t0 = g_get_monotonic_time();
    while (!back && g_get_monotonic_time() - t0 < 60 * G_USEC_PER_SEC) {
        g_autofree char *u = vt_uuid();
        g_autoptr(vt_reply) r = destroy(group_d, u, -1);

        if (r->rep && r->rep->ok) {
            back = true;
            break;
        }
        vt_assert_fault(r, VTPM_FAULT_HYPERVISOR_ERROR, NULL, "destroy after libvirtd restart");
        failures++;
        g_usleep(250 * 1000);
    }
    waited_ms = (g_get_monotonic_time() - t0) / 1000;
    print_message("libvirt usable again %" G_GINT64_FORMAT " ms after the restart (%u "
                  "retryable failure(s))\n", waited_ms, failures);
    if (!back) {
        vt_vtpmd_dump(group_d);
        fail_msg("vtpmd did not reconnect to the restarted libvirtd within 60 s");
    }
    {
        g_autoptr(vt_reply) r = vt_call(group_d, "get_capabilities", NULL, SHORT_MS);

        vt_assert_ok(r, "get_capabilities after libvirtd restart");
    }
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s);

        vt_assert_ok(r, "spawn after libvirtd restart");
    }
    if (!vt_wait_procs("swtpm", uuid, true, 10000))
        fail_msg("spawn after libvirtd restart: no swtpm for the instance");
    destroy_ok(uuid, true, "deleted");
    wait_prom_at_least(group_prom, "vtpmd_libvirt_reconnects_total", 1);
    /* The guest from before the restart is still vtpmd's to manage. */
    {
        g_autoptr(vt_reply) r = spawn(group_d, &s_before);
        g_autofree char *st = domain_state(uuid_before);

        vt_assert_ok(r, "repeated spawn of the guest from before the libvirtd restart");
        print_message("guest from before the restart: %s\n", st);
    }
    destroy_ok(uuid_before, true, "deleted");
}

/* vtpmd starts while libvirt cannot be reached (it reconnects later).
 * Until it has probed the host it cannot know what the host offers: a
 * vTPM request is then a retryable HypervisorError, never TPMUnsupported,
 * which would tell the control plane to give up on this host. */
static void
test_start_without_libvirtd(void **state)
{
    g_autofree char *host = vt_unique("nolibvirt");
    g_autofree char *sock = g_strdup_printf("%s/no-libvirtd-%d.sock", vt_env("VT_ROOT"),
                                            (int)getpid());
    g_autofree char *uri = g_strdup_printf("qemu:///system?socket=%s", sock);
    g_autofree char *uuid = vt_uuid();
    const char *specs[] = { "hw:tpm_version", "2.0", NULL };
    vt_spawn_spec s = { .uuid = uuid, .extra_specs = specs, .power_on = -1 };
    vt_config_opts o = { .worker_host = host, .libvirt_uri = uri };
    vt_vtpmd *d = start_own(&o, NULL);

    {
        g_autoptr(vt_reply) r = vt_call(d, "get_capabilities", NULL, SHORT_MS);

        vt_assert_ok(r, "get_capabilities without libvirtd");
        if (vt_array_has_str(vt_obj_at(&r->rep->result, "traits"), VTPM_TRAIT_TPM_2_0))
            fail_msg("without libvirtd, %s is offered", VTPM_TRAIT_TPM_2_0);
    }
    {
        g_autoptr(vt_reply) r = spawn(d, &s);

        vt_assert_fault(r, VTPM_FAULT_HYPERVISOR_ERROR, "cannot check what this host offers",
                        "vTPM spawn before vtpmd could ever reach libvirt");
        if (!r->rep->retryable)
            fail_msg("that fault should be retryable: %s", vt_reply_summary(r));
        print_message("spawn without libvirtd: %s\n", vt_reply_summary(r));
    }
    vt_vtpmd_stop_ok(d);
}

/* ---- the group's vtpmd, after all that --------------------------------- */

/* After every test above (broker and libvirtd restarts included) the
 * group's vtpmd still serves, then drains and exits 0 on SIGTERM. */
static void
test_group_sigterm(void **state)
{
    g_autofree char *families = NULL;

    assert_serving(group_d, "the whole suite");
    vt_vtpmd_stop_ok(group_d);
    /* Its last metrics write: down, with what the suite did counted. */
    assert_prom(group_prom, "vtpmd_up", 0);
    assert_prom(group_prom, "vtpmd_requests_in_flight", 0);
    families = prom_parse(group_prom);
    if (!strstr(families, "vtpmd_requests counter"))
        fail_msg("prometheus_client does not read vtpmd_requests from %s", group_prom);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_capabilities, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_capabilities_announcement, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_capabilities_reannounce, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_tpm_models, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_without_tpm, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_power_off, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_spawn_idempotent, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_keep_vtpm, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_message_id, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_faults, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_bodies, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_hostile_cast, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_serialization, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_hands_back, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_file, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_startup_checks, test_setup, test_teardown),
        /* These two disturb the services everyone uses: last. */
        cmocka_unit_test_setup_teardown(test_broker_restart, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_libvirtd_restart, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_start_without_libvirtd, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_group_sigterm, test_setup, test_teardown),
    };
    const char *missing = NULL;

    if (!vt_env_ready(&missing)) {
        fprintf(stderr, "test_worker: %s is not set; run it through tests/integration.sh "
                        "(skipped)\n", missing);
        return 77;
    }
    /* VT_TEST_FILTER=test_faults runs one test (cmocka's glob). */
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
