/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live migration (docs/lifecycle.md, issue 15) end to end: two libvirt
 * hosts "a" and "b" with addresses of their own (integration.sh --net
 * --hosts 2), one vtpmd on each, driven over the real broker, the guests'
 * QEMU streaming from one host's network namespace to the other's.
 *
 * Every test follows firmware-only QEMU/TCG guests of 64 MiB with an
 * encrypted TPM 2.0 through Nova's sequence (check_can_live_migrate_
 * destination, pre_live_migration, live_migration, post_live_migration_
 * at_destination) or into a fault, and then checks what an operator would:
 * exactly one host runs the guest (virsh); the TPM is the same one (its
 * permanent state, decrypted with the instance's key by a standalone
 * swtpm, has the sha256 it had before: a firmware-only guest does not
 * change it while it idles, and a restarted TPM would be another); the
 * source keeps nothing of the instance (domain, state dir, console log,
 * libvirt secret, generation record); the destination keeps nothing after
 * a rollback; and every fault of a failed migration is retryable.
 *
 * A slow network (tc on the root side of the destination's veth) holds a
 * migration in flight for seconds, long enough to kill the destination's
 * libvirtd or vtpmd under it, to abort it, or to let it time out.
 * VT_TEST_FILTER=<glob> runs some tests only.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "domxml.h"
#include "keywrap.h"
#include "lib/harness.h"
#include "lib/jsonargs.h"
#include "mpjson.h"

enum { A = 0, B = 1, NHOSTS = 2 };

#define OP_MS 180000
#define CRASH_EXIT_MS 120000
#define SETTLE_TRIES 60
/* 613 KiB of a firmware-only guest's stream at this rate: ~10 s. */
#define SLOW_RATE "512kbit"

static const char *const host_name[NHOSTS] = { "a", "b" };
static const char *host_addr[NHOSTS];
static vt_vtpmd *dmn[NHOSTS];
static bool dmn_injected[NHOSTS]; /* started with fault injection */
static char *deployment_key;      /* the key file both hosts hold */
static gint64 t_test, t_suite;
static char cur_test[96];

/* ---- instances ---------------------------------------------------------------------- */

typedef struct {
    char *uuid;
    const char *mode;  /* user | host | deployment */
    bool uefi;         /* UEFI firmware with Secure Boot (image properties) */
    GBytes *secret;    /* user mode: the caller's passphrase */
    char *secret_b64;
} guest;

static void
guest_init(guest *g, const char *mode)
{
    guint8 raw[32];

    g->uuid = vt_uuid();
    g->mode = mode;
    if (strcmp(mode, "user") != 0)
        return;
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (guint8)g_random_int_range(0, 256);
    g->secret = g_bytes_new(raw, sizeof(raw));
    g->secret_b64 = g_base64_encode(raw, sizeof(raw));
}

static void
guest_clear(guest *g)
{
    g_clear_pointer(&g->uuid, g_free);
    g_clear_pointer(&g->secret, g_bytes_unref);
    g_clear_pointer(&g->secret_b64, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(guest, guest_clear)

/* The instance spec as JSON; @secret: with instance.vtpm.secret (user). */
static char *
inst_json(const guest *g, bool secret)
{
    g_autofree char *vtpm = secret && g->secret_b64
                                ? g_strdup_printf(", \"vtpm\": {\"secret\": {\"$bin\": \"%s\"}}",
                                                  g->secret_b64)
                                : g_strdup("");

    return g_strdup_printf("{\"uuid\": \"%s\", \"name\": \"lm\", \"flavor\": {\"name\": "
                           "\"m1.lm\", \"vcpus\": 1, \"memory_mb\": 64, \"extra_specs\": "
                           "{\"hw:tpm_version\": \"2.0\", \"hw:tpm_model\": \"tpm-tis\", "
                           "\"hw:tpm_secret_security\": \"%s\"}}, \"image\": {\"id\": \"img-1\", "
                           "\"properties\": {%s}}%s}",
                           g->uuid, g->mode,
                           g->uefi ? "\"hw_firmware_type\": \"uefi\", \"os_secure_boot\": "
                                     "\"required\""
                                   : "",
                           vtpm);
}

/* An args map from JSON (tools/mpjson.h: bytes as {"$bin": base64}). */
#define args(...) vt_json_args(false, __VA_ARGS__)

static GBytes *
args_inst(const guest *g, bool secret)
{
    g_autofree char *i = inst_json(g, secret);

    return args("{\"instance\": %s}", i);
}

static GBytes *
args_uuid(const guest *g)
{
    return args("{\"instance\": {\"uuid\": \"%s\"}}", g->uuid);
}

/* ---- calls ----------------------------------------------------------------------------- */

/* Call host @h's vtpmd with args @a (taken).  With @must_ok (what the
 * call is, for the message), a fault fails the test. */
static vt_reply *
call_h(int h, const char *method, GBytes *a, const char *must_ok)
{
    g_autoptr(GBytes) owned = a;
    vt_reply *r = vt_call(dmn[h], method, owned, OP_MS);

    if (must_ok && (!r->rep || !r->rep->ok)) {
        vt_vtpmd_dump(dmn[h]);
        vt_assert_ok(r, must_ok);
    }
    return r;
}

#define call(h, method, a) call_h(h, method, a, NULL)
#define call_ok(h, method, a, what) call_h(h, method, a, what)

static void
call_ok_free(int h, const char *method, GBytes *a, const char *what)
{
    vt_reply_free(call_ok(h, method, a, what));
}

/* Send without waiting; the correlation id to wait for (vt_recv_reply). */
static char *
send_async(int h, const char *method, GBytes *a, const char *message_id)
{
    g_autoptr(GBytes) body = vt_request(method, a, message_id, 0);
    vtpm_client_msg_opts o = { .routing_key = dmn[h]->routing_key, .message_id = message_id };
    vtpm_error err = { 0 };
    char *corr = NULL;

    g_bytes_unref(a);
    if (vtpm_client_msg_send(vt_client(), &o, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                             &corr, &err) < 0) {
        vt_client_drop();
        fail_msg("sending %s: %s", method, err.message);
    }
    return corr;
}

static bool
res_has(const vt_reply *r, const char *path)
{
    const msgpack_object *o = vt_obj_at(&r->rep->result, path);

    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
}

static void
assert_res_str(const vt_reply *r, const char *path, const char *want, const char *what)
{
    g_autofree char *got = vt_obj_str(&r->rep->result, path);

    if (g_strcmp0(got, want) != 0)
        fail_msg("%s: result.%s should be \"%s\", got \"%s\"", what, path, want,
                 got ? got : "(absent)");
}

/* The fault of a failed migration: retryable, and of @code. */
static void
assert_retryable(const vt_reply *r, vtpm_fault code, const char *fragment, const char *what)
{
    vt_assert_fault(r, code, fragment, what);
    if (!r->rep->retryable)
        fail_msg("%s: the fault of a failed live migration must be retryable: %s", what,
                 vt_reply_summary(r));
}

/* ---- hosts --------------------------------------------------------------------------------- */

/* What of an instance a host may hold, as files. */
typedef enum { STATE_DIR, STATE_FILE, NVRAM, CONSOLE, GENERATION } place;

static char *
hpath(int h, place k, const char *uuid)
{
    g_autofree char *rel = NULL;

    switch (k) {
    case STATE_DIR: rel = g_strdup_printf("var/lib/libvirt/swtpm/%s", uuid); break;
    case STATE_FILE:
        rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall", uuid);
        break;
    case NVRAM: rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/nvram.fd", uuid); break;
    case CONSOLE: rel = g_strdup_printf("var/lib/vtpmd/console/%s.log", uuid); break;
    case GENERATION: rel = g_strdup_printf("var/lib/vtpmd/kept/generations/%s", uuid); break;
    }
    return vt_host_path(host_name[h], rel);
}

static bool
exists_on(int h, place k, const char *uuid)
{
    g_autofree char *p = hpath(h, k, uuid);

    return g_file_test(p, G_FILE_TEST_EXISTS);
}

static char *
dom_state(int h, const char *uuid)
{
    return vt_dom_state(host_name[h], uuid);
}

static bool
has_secret(int h, const char *uuid)
{
    return vt_host_has_secret(host_name[h], uuid);
}

/* How often swtpm_setup manufactured a TPM for @uuid on host @h: a
 * migrated TPM is never a new one. */
static unsigned
manufactured(int h, const char *uuid)
{
    return vt_swtpm_log_lines(host_name[h], uuid, "Starting vTPM manufacturing");
}

/* The key that opens @g's TPM state on host @h. */
static GBytes *
tpm_key(int h, const guest *g)
{
    g_autofree char *name = g_strdup_printf("instance-%s", g->uuid);
    g_autofree char *xml = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };
    g_autoptr(vtpm_keyring) kr = NULL;
    GBytes *key = NULL;
    vtpm_error err = { 0 };

    if (strcmp(g->mode, "user") == 0)
        return g_bytes_ref(g->secret);
    if (strcmp(g->mode, "host") == 0)
        return vt_host_secret_value(host_name[h], g->uuid);
    if (vt_virsh(host_name[h], &xml, "dumpxml", "--inactive", name, NULL) != 0 ||
        vtpm_domxml_parse_domain_metadata(xml, &m, &err) < 0 || !m.wrapped_secret)
        fail_msg("no wrapped TPM secret in the domain of %s on host %s: %s", g->uuid,
                 host_name[h], err.message);
    if (vtpm_keyring_load(deployment_key, NULL, &kr, &err) < 0 ||
        vtpm_keyring_unwrap(kr, g->uuid, m.wrapped_secret, &key, NULL, &err) < 0)
        fail_msg("unwrapping the TPM secret of %s: %s", g->uuid, err.message);
    return key;
}

/* sha256 of @g's TPM's permanent state on host @h, decrypted. */
static char *
tpm_digest(int h, const guest *g, const char *what)
{
    g_autofree char *dir = hpath(h, STATE_DIR, g->uuid);
    g_autoptr(GBytes) key = tpm_key(h, g);
    g_autoptr(GBytes) plain = vt_tpm_plaintext(dir, key);

    if (!plain)
        fail_msg("%s: the TPM state of %s on host %s does not open with the instance's key", what,
                 g->uuid, host_name[h]);
    return g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, plain);
}

/* Until the firmware's TPM start-up is written: the state file unchanged
 * for a second. */
static void
wait_settled(int h, const char *uuid)
{
    g_autofree char *sf = hpath(h, STATE_FILE, uuid);
    g_autofree char *last = NULL;

    for (int i = 0; i < SETTLE_TRIES; i++) {
        g_autofree char *now = vt_sha256_file(sf);

        if (now && g_strcmp0(now, last) == 0)
            return;
        g_free(last);
        last = g_steal_pointer(&now);
        g_usleep(G_USEC_PER_SEC);
    }
    fail_msg("the TPM state of %s on host %s did not settle", uuid, host_name[h]);
}

/* ---- the network and libvirt jobs --------------------------------------------------------- */

/* The destination @h's traffic through its veth at SLOW_RATE (@on) or at
 * full speed. */
static void
slow_net(int h, bool on)
{
    g_autofree char *gw = g_strdup(host_addr[h]);
    g_autofree char *script = NULL;

    gw[strlen(gw) - 1] = '1'; /* 10.199.N.2 -> the root side 10.199.N.1 */
    script = g_strdup_printf(
        "dev=$(ip -o -4 addr show | awk '$4 == \"%s/24\" { print $2 }'); [ -n \"$dev\" ] || exit 9; "
        "%s",
        gw,
        on ? "tc qdisc replace dev \"$dev\" root tbf rate " SLOW_RATE " burst 16kbit latency 2s"
           : "tc qdisc del dev \"$dev\" root 2>/dev/null; true");
    if (vt_env_sh(script, NULL) != 0)
        fail_msg("tc on the veth of host %s failed", host_name[h]);
}

/* Until host @h's libvirt runs a job on the domain (the migration is in
 * flight). */
static void
wait_job(int h, const char *uuid, const char *what)
{
    g_autofree char *name = g_strdup_printf("instance-%s", uuid);

    for (int i = 0; i < 600; i++) {
        g_autofree char *out = NULL;

        if (vt_virsh(host_name[h], &out, "domjobinfo", name, NULL) == 0 &&
            strstr(out, "Unbounded"))
            return;
        g_usleep(100 * 1000);
    }
    fail_msg("%s: no migration job of %s ever ran on host %s", what, uuid, host_name[h]);
}

static bool
job_active(int h, const char *uuid)
{
    g_autofree char *name = g_strdup_printf("instance-%s", uuid);
    g_autofree char *out = NULL;

    return vt_virsh(host_name[h], &out, "domjobinfo", name, NULL) == 0 &&
           strstr(out, "Unbounded") != NULL;
}

/* ---- vtpmd per host ----------------------------------------------------------------------- */

static void
host_start(int h, const char *const *env)
{
    g_autofree char *vx = g_strdup_printf("supported_secret_security = user;host;deployment\n"
                                          "deployment_key_file = %s",
                                          deployment_key);
    /* Host a pins Debian's snakeoil pair for UEFI guests ([libvirt]
     * uefi_loader / uefi_nvram_template), host b has libvirt's
     * auto-selection: the store crosses between the two. */
    vt_config_opts o = {
        .worker_host = host_addr[h],
        .libvirt_extra = h == A ? "virt_type = qemu\nshutdown_timeout = 3\n"
                                  "migration_uri_template = qemu+tcp://%s/system\n"
                                  "uefi_loader = /usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd\n"
                                  "uefi_nvram_template = /usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
                                : "virt_type = qemu\nshutdown_timeout = 3\n"
                                  "migration_uri_template = qemu+tcp://%s/system",
        .vtpm_extra = vx,
        .require_secret = true,
    };

    dmn[h] = vt_vtpmd_start(host_name[h], &o, env);
    dmn_injected[h] = env != NULL;
}

static void
host_stop(int h)
{
    if (!dmn[h])
        return;
    if (vt_vtpmd_running(dmn[h])) {
        int code = vt_vtpmd_term(dmn[h], 30000);

        if (code != 0)
            fail_msg("vtpmd of host %s exited %d on SIGTERM", host_name[h], code);
        if (vt_vtpmd_sanitizer_report(dmn[h]))
            fail_msg("vtpmd of host %s: %s", host_name[h], vt_vtpmd_sanitizer_report(dmn[h]));
    }
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
}

static void
host_restart(int h, const char *const *env)
{
    if (dmn[h] && vt_vtpmd_running(dmn[h]))
        host_stop(h);
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
    host_start(h, env);
}

static int
group_setup(void **state)
{
    guint8 key[32];

    host_addr[A] = vt_env("VT_HOST_A_ADDR");
    host_addr[B] = vt_env("VT_HOST_B_ADDR");
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (guint8)g_random_int_range(0, 256);
    deployment_key = g_build_filename(vt_env("VT_ROOT"), "deployment.key", NULL);
    if (!g_file_set_contents(deployment_key, (const char *)key, sizeof(key), NULL) ||
        chmod(deployment_key, 0600) < 0)
        fail_msg("cannot write %s", deployment_key);
    t_suite = g_get_monotonic_time();
    host_start(A, NULL);
    host_start(B, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        slow_net(h, false);
        vt_virsh_cleanup(host_name[h]);
        host_stop(h);
    }
    vt_client_drop();
    g_clear_pointer(&deployment_key, g_free);
    print_message("[livemig] whole suite: %.1f s\n", (g_get_monotonic_time() - t_suite) / 1e6);
    return 0;
}

static int
test_setup(void **state)
{
    /* A failed test may have left a libvirtd down, or a network slow. */
    for (int h = 0; h < NHOSTS; h++) {
        slow_net(h, false);
        if (vt_virsh(host_name[h], NULL, "version", NULL) != 0)
            vt_libvirtd_restart(host_name[h]);
    }
    for (int h = 0; h < NHOSTS; h++) {
        if (dmn[h] && (!vt_vtpmd_running(dmn[h]) || dmn_injected[h]))
            host_restart(h, NULL);
        if (!dmn[h])
            host_start(h, NULL);
    }
    cur_test[0] = 0;
    t_test = g_get_monotonic_time();
    return 0;
}

static int
test_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        slow_net(h, false);
        vt_virsh_cleanup(host_name[h]);
    }
    print_message("[livemig] %s: %.1f s\n", cur_test[0] ? cur_test : "(test)",
                  (g_get_monotonic_time() - t_test) / 1e6);
    return 0;
}

static void
begin(const char *name)
{
    g_strlcpy(cur_test, name, sizeof(cur_test));
}

/* ---- steps -------------------------------------------------------------------------------- */

/* Spawn @g running on host @h; the digest of its settled TPM. */
static char *
spawn_on(int h, const guest *g)
{
    call_ok_free(h, "spawn", args_inst(g, true), "spawn");
    wait_settled(h, g->uuid);
    return tpm_digest(h, g, "after spawn");
}

/* pre_live_migration on @to (with @extra args members); its reply, the
 * migrate_data, as JSON. */
static char *
pre_on(int to, const guest *g, bool secret, const char *extra, const char *what)
{
    g_autofree char *i = inst_json(g, secret);
    g_autoptr(vt_reply) r = call_ok(to, "pre_live_migration",
                                    args("{\"instance\": %s%s}", i, extra ? extra : ""), what);

    assert_res_str(r, "dest_host", host_addr[to], what);
    assert_res_str(r, "inbound_addr", host_addr[to], what);
    if ((strcmp(g->mode, "deployment") == 0) != (vt_obj_at(&r->rep->result, "deployment_keys") != NULL))
        fail_msg("%s: migrate_data.deployment_keys should be there for a deployment-mode "
                 "instance only", what);
    return vtpm_mpjson_to_string(&r->rep->result, false);
}

static GBytes *
args_live(const guest *g, int to, const char *md, bool secret, const char *extra)
{
    g_autofree char *i = inst_json(g, secret);

    return args("{\"instance\": %s, \"dest_host\": \"%s\", \"migrate_data\": %s%s}", i,
                host_addr[to], md, extra ? extra : "");
}

/* The reply of a live migration that moved the guest. */
static void
assert_migrated_reply(const vt_reply *r, const char *what)
{
    if (!vt_obj_bool(&r->rep->result, "migrated"))
        fail_msg("%s: result.migrated should be true", what);
    if (!res_has(r, "total_ms") || !res_has(r, "downtime_ms") || !res_has(r, "vtpm_bytes"))
        fail_msg("%s: result should carry total_ms, downtime_ms and vtpm_bytes (libvirt's job "
                 "statistics, the state files' size)",
                 what);
}

/* Exactly @to runs the guest, with the same TPM; @from keeps nothing. */
static void
assert_moved(int from, int to, const guest *g, const char *digest, unsigned made_before,
             const char *what)
{
    g_autofree char *st_to = dom_state(to, g->uuid);
    g_autofree char *st_from = dom_state(from, g->uuid);
    g_autofree char *now = NULL;

    if (strcmp(st_to, "running") != 0 || strcmp(st_from, "(no domain)") != 0)
        fail_msg("%s: host %s should run the guest and host %s have no domain; virsh says %s "
                 "and %s",
                 what, host_name[to], host_name[from], st_to, st_from);
    if (exists_on(from, STATE_DIR, g->uuid) || exists_on(from, CONSOLE, g->uuid) ||
        exists_on(from, GENERATION, g->uuid) || has_secret(from, g->uuid))
        fail_msg("%s: host %s keeps something of the instance (state dir %d, console log %d, "
                 "generation record %d, libvirt secret %d)",
                 what, host_name[from], exists_on(from, STATE_DIR, g->uuid),
                 exists_on(from, CONSOLE, g->uuid), exists_on(from, GENERATION, g->uuid),
                 has_secret(from, g->uuid));
    if (has_secret(to, g->uuid) != (strcmp(g->mode, "host") == 0))
        fail_msg("%s: host %s should hold a libvirt secret of the instance only in host mode "
                 "(mode %s)",
                 what, host_name[to], g->mode);
    now = tpm_digest(to, g, what);
    if (strcmp(now, digest) != 0)
        fail_msg("%s: the TPM on host %s is not the one that left host %s (permanent state "
                 "sha256 %s, was %s)",
                 what, host_name[to], host_name[from], now, digest);
    if (manufactured(to, g->uuid) != made_before)
        fail_msg("%s: swtpm_setup manufactured a TPM on host %s: the TPM was replaced", what,
                 host_name[to]);
}

/* Nothing of the instance on host @h (after a rollback there). */
static void
assert_clean(int h, const guest *g, const char *what)
{
    g_autofree char *st = dom_state(h, g->uuid);

    if (strcmp(st, "(no domain)") != 0 || exists_on(h, STATE_DIR, g->uuid) ||
        has_secret(h, g->uuid))
        fail_msg("%s: host %s should keep nothing of %s (domain: %s, state dir %d, secret %d)",
                 what, host_name[h], g->uuid, st, exists_on(h, STATE_DIR, g->uuid),
                 has_secret(h, g->uuid));
}

/* The guest still runs on @h with the TPM of @digest. */
static void
assert_stayed(int h, const guest *g, const char *digest, const char *what)
{
    g_autofree char *st = dom_state(h, g->uuid);
    g_autofree char *now = NULL;

    if (strcmp(st, "running") != 0)
        fail_msg("%s: the guest should still run on host %s, virsh says %s", what, host_name[h],
                 st);
    now = tpm_digest(h, g, what);
    if (strcmp(now, digest) != 0)
        fail_msg("%s: the TPM on host %s changed (sha256 %s, was %s)", what, host_name[h], now,
                 digest);
}

/* Nova's whole sequence from @from to @to. */
static void
move(int from, int to, const guest *g, const char *digest, const char *pre_extra,
     const char *what)
{
    unsigned made = manufactured(to, g->uuid);
    g_autofree char *md = NULL;
    g_autoptr(vt_reply) live = NULL, post = NULL;

    vt_reply_free(call_ok(to, "check_can_live_migrate_destination", args_inst(g, false), what));
    md = pre_on(to, g, true, pre_extra, what);
    live = call_ok(from, "live_migration", args_live(g, to, md, false, NULL), what);
    assert_migrated_reply(live, what);
    post = call_ok(to, "post_live_migration_at_destination", args_uuid(g), what);
    assert_res_str(post, "vtpm.secret_security", g->mode, what);
    assert_moved(from, to, g, digest, made, what);
}

static void
destroy_on(int h, const guest *g)
{
    call_ok_free(h, "destroy", args_uuid(g), "destroy");
}

/* The migrate_data of @md_json with its deployment_keys replaced. */
static char *
md_with_keys(const char *md_json, const char *keys)
{
    g_autofree char *head = g_strndup(md_json, strlen(md_json) - 1);
    char *k = strstr(head, ",\"deployment_keys\"");

    if (k)
        *k = '\0';
    return g_strdup_printf("%s,\"deployment_keys\":%s}", head, keys);
}

/* ---- 1. a -> b -> a in every custody mode ---------------------------------------------- */

static void
test_user(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL;
    g_autoptr(vt_reply) r = NULL;

    begin("user: a -> b -> a");
    guest_init(&g, "user");
    d = spawn_on(A, &g);
    /* The passphrase is the caller's: without it there is no key to give. */
    r = call(B, "pre_live_migration", args_inst(&g, false));
    vt_assert_fault(r, VTPM_FAULT_SECRET_REQUIRED, "args.instance.vtpm.secret", "pre without secret");
    assert_clean(B, &g, "pre without secret");
    move(A, B, &g, d, NULL, "user: a -> b");
    move(B, A, &g, d, NULL, "user: b -> a");
    destroy_on(A, &g);
}

/* Host custody: the destination gets the source's secret from the source
 * (a -> b: live_migration copies it) or fetches it itself (b -> a:
 * pre_live_migration told source_host).  The generation record goes along. */
static void
test_host(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *gen_a = NULL, *gen_b = NULL, *back = NULL, *text = NULL;
    g_autofree char *gen_dir = NULL;

    begin("host: a -> b -> a, generation record");
    guest_init(&g, "host");
    d = spawn_on(A, &g);
    /* The record an earlier shelve or migration would have left on a. */
    gen_a = hpath(A, GENERATION, g.uuid);
    gen_b = hpath(B, GENERATION, g.uuid);
    gen_dir = g_path_get_dirname(gen_a);
    if (g_mkdir_with_parents(gen_dir, 0700) < 0 ||
        !g_file_set_contents(gen_a, "1796000000123\n", -1, NULL))
        fail_msg("cannot write %s", gen_a);
    move(A, B, &g, d, NULL, "host: a -> b");
    if (!g_file_get_contents(gen_b, &text, NULL, NULL) || strcmp(text, "1796000000123\n") != 0)
        fail_msg("host: a -> b: host b should have taken over generation 1796000000123, its "
                 "record holds %s",
                 text ? text : "nothing");
    back = g_strdup_printf(", \"source_host\": \"%s\"", host_addr[B]);
    move(B, A, &g, d, back, "host: b -> a (pre fetches the secret)");
    destroy_on(A, &g);
}

/* Deployment custody: a source refuses a destination whose keys do not
 * unwrap the guest's secret, before anything moves. */
static void
test_deployment(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL, *wrong = NULL, *back = NULL;
    g_autoptr(vt_reply) r = NULL, rb = NULL;

    begin("deployment: a -> b -> a, a destination without the key");
    guest_init(&g, "deployment");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, false, NULL, "pre");
    wrong = md_with_keys(md, "[\"0000000000000000\"]");
    r = call(A, "live_migration", args_live(&g, B, wrong, false, NULL));
    vt_assert_fault(r, VTPM_FAULT_SECRET_INVALID, "does not hold (it holds: 0000000000000000)",
                    "live_migration to a host without the key");
    assert_stayed(A, &g, d, "refused for the key");
    rb = call_ok(B, "rollback_live_migration_at_destination", args_uuid(&g), "rollback");
    assert_clean(B, &g, "rollback after the refusal");
    move(A, B, &g, d, NULL, "deployment: a -> b");
    back = g_strdup_printf(", \"source_host\": \"%s\"", host_addr[B]);
    move(B, A, &g, d, back, "deployment: b -> a (pre unwraps)");
    destroy_on(A, &g);
}

/* ---- 2. failures: the guest stays on the source, whole ---------------------------------- */

/* After a failed migration: the destination rolled back, then the same
 * migration again completes. */
static void
roll_back_and_retry(const guest *g, const char *d, const char *what)
{
    g_autofree char *w = g_strdup_printf("%s, then rolled back and retried", what);
    g_autoptr(vt_reply) rb = call_ok(B, "rollback_live_migration_at_destination", args_uuid(g), w);

    assert_clean(B, g, w);
    move(A, B, g, d, NULL, w);
}

static void
test_dest_unreachable(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL, *i = NULL;
    g_autoptr(vt_reply) r = NULL;

    begin("destination unreachable");
    guest_init(&g, "host");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, false, NULL, "pre");
    i = inst_json(&g, false);
    r = call(A, "live_migration",
             args("{\"instance\": %s, \"dest_host\": \"no-such-host.invalid\", \"migrate_data\": "
                  "{\"inbound_addr\": \"%s\"}}",
                  i, host_addr[B]));
    assert_retryable(r, VTPM_FAULT_STATE_TRANSFER_FAILED,
                     "cannot connect to destination no-such-host.invalid", "unreachable");
    assert_stayed(A, &g, d, "unreachable destination");
    roll_back_and_retry(&g, d, "unreachable destination");
    destroy_on(B, &g);
}

/* The destination's libvirtd killed: before the migration began (vtpmd
 * held at live_migration.before_migrate), or with the stream in flight. */
static void
dest_libvirtd_killed(bool mid_stream)
{
    g_autofree char *pause_dir = g_build_filename(vt_env("VT_ROOT"), "pause-a", NULL);
    g_autofree char *arm = g_build_filename(pause_dir, "live_migration.before_migrate", NULL);
    g_autofree char *mark = g_strconcat(arm, ".paused", NULL);
    g_autofree char *env_kv = g_strdup_printf("VTPMD_PAUSE_DIR=%s", pause_dir);
    const char *env[] = { env_kv, NULL };
    const char *what = mid_stream ? "b's libvirtd killed mid-stream"
                                  : "b's libvirtd killed before the migration";
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL, *corr = NULL, *mid = NULL;
    g_autoptr(vt_reply) r = NULL;

    guest_init(&g, "user");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, true, NULL, what);
    mid = g_strdup_printf("lm-kill-%s", g.uuid);
    if (mid_stream) {
        slow_net(B, true);
    } else {
        host_restart(A, env);
        g_mkdir_with_parents(pause_dir, 0700);
        g_file_set_contents(arm, "", 0, NULL);
    }
    corr = send_async(A, "live_migration", args_live(&g, B, md, false, NULL), mid);
    if (mid_stream) {
        wait_job(A, g.uuid, what);
    } else {
        for (int i = 0; i < 1200 && !g_file_test(mark, G_FILE_TEST_EXISTS); i++)
            g_usleep(100 * 1000);
        if (!g_file_test(mark, G_FILE_TEST_EXISTS))
            fail_msg("%s: vtpmd never paused at live_migration.before_migrate", what);
    }
    vt_libvirtd_kill("b");
    unlink(arm);
    r = vt_recv_reply(corr, OP_MS, what);
    assert_retryable(r, VTPM_FAULT_HYPERVISOR_ERROR, "; the guest is running on host", what);
    assert_stayed(A, &g, d, what);
    slow_net(B, false);
    vt_libvirtd_restart("b");
    roll_back_and_retry(&g, d, what);
    destroy_on(B, &g);
}

static void
test_dest_libvirtd_killed_before(void **state)
{
    begin("destination libvirtd killed before the migration");
    dest_libvirtd_killed(false);
}

static void
test_dest_libvirtd_killed_mid(void **state)
{
    begin("destination libvirtd killed mid-stream");
    dest_libvirtd_killed(true);
}

/* The source's libvirtd killed with the stream in flight.  QEMU on a goes
 * on without it; the live_migration fails, retryable.  Once a's libvirtd
 * is back (it cancels a migration out that never reached its confirm and
 * keeps the guest running), the guest runs on a with its TPM; b rolls
 * back and the retry moves it. */
static void
test_source_libvirtd_killed_mid(void **state)
{
    const char *what = "a's libvirtd killed mid-stream";
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL, *corr = NULL, *mid = NULL;
    g_autoptr(vt_reply) r = NULL;

    begin("source libvirtd killed mid-stream");
    guest_init(&g, "user");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, true, NULL, what);
    mid = g_strdup_printf("lm-srckill-%s", g.uuid);
    slow_net(B, true);
    corr = send_async(A, "live_migration", args_live(&g, B, md, false, NULL), mid);
    wait_job(A, g.uuid, what);
    vt_libvirtd_kill("a");
    r = vt_recv_reply(corr, OP_MS, what);
    print_message("%s: %s\n", what, vt_reply_summary(r));
    assert_retryable(r, VTPM_FAULT_HYPERVISOR_ERROR, "where the guest is now cannot be told", what);
    slow_net(B, false);
    vt_libvirtd_restart("a");
    assert_stayed(A, &g, d, what);
    roll_back_and_retry(&g, d, what);
    destroy_on(B, &g);
}

static void
test_timeout(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL;
    g_autoptr(vt_reply) r = NULL;

    begin("timeout");
    guest_init(&g, "host");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, false, NULL, "pre");
    slow_net(B, true);
    r = call(A, "live_migration", args_live(&g, B, md, false, ", \"timeout_s\": 2"));
    assert_retryable(r, VTPM_FAULT_STATE_TRANSFER_FAILED, "did not complete within 2 s", "timeout");
    assert_stayed(A, &g, d, "timed out");
    slow_net(B, false);
    roll_back_and_retry(&g, d, "timed out");
    destroy_on(B, &g);
}

/* live_migration_abort reaches the migration that holds its instance,
 * which blocks neither get_capabilities nor another instance's request. */
static void
test_abort(void **state)
{
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL, *corr = NULL, *mid = NULL, *other = vt_uuid();
    g_autoptr(vt_reply) caps = NULL, dr = NULL, ab = NULL, r = NULL, again = NULL;

    begin("abort");
    guest_init(&g, "user");
    d = spawn_on(A, &g);
    md = pre_on(B, &g, true, NULL, "pre");
    slow_net(B, true);
    mid = g_strdup_printf("lm-abort-%s", g.uuid);
    corr = send_async(A, "live_migration", args_live(&g, B, md, false, NULL), mid);
    wait_job(A, g.uuid, "abort");
    caps = call_ok(A, "get_capabilities", args("{}"), "get_capabilities during a migration");
    dr = call_ok(A, "destroy", args("{\"instance\": {\"uuid\": \"%s\"}}", other),
                 "another instance's request during a migration");
    if (!job_active(A, g.uuid))
        fail_msg("abort: the migration should still be in flight after the other requests "
                 "were answered (they must not wait for it)");
    ab = call_ok(A, "live_migration_abort", args_uuid(&g), "abort");
    if (!vt_obj_bool(&ab->rep->result, "aborted"))
        fail_msg("abort: result.aborted should be true while the migration streams");
    r = vt_recv_reply(corr, OP_MS, "abort");
    assert_retryable(r, VTPM_FAULT_STATE_TRANSFER_FAILED, "aborted by live_migration_abort",
                     "the aborted live_migration");
    assert_stayed(A, &g, d, "aborted");
    again = call_ok(A, "live_migration_abort", args_uuid(&g), "abort again");
    if (vt_obj_bool(&again->rep->result, "aborted"))
        fail_msg("abort again: nothing runs any more, result.aborted should be false");
    slow_net(B, false);
    roll_back_and_retry(&g, d, "aborted");
    destroy_on(B, &g);
}

/* ---- 4. UEFI: the variable store goes along --------------------------------------------- */
/*
 * A UEFI guest's store (var/lib/libvirt/swtpm/<uuid>/nvram.fd) is not in
 * the stream as a file: the incoming QEMU opens a copy of the template
 * and writes the flash's migrated contents over it when the guest starts
 * running there.  The store is compared by sha256 once OVMF has written
 * it and gone quiet (it writes its variables some 20 s into its first boot
 * under TCG, then idles in its boot manager): the destination's must be
 * the source's, never its template, and have the same owner and mode.
 */

#define STORE_QUIET_S 8
#define STORE_WAIT_S 300

static char *
store_sha(int h, const char *uuid, const char *what)
{
    g_autofree char *p = hpath(h, NVRAM, uuid);
    char *sha = vt_sha256_file(p);

    if (!sha)
        fail_msg("%s: no variable store %s on host %s", what, p, host_name[h]);
    return sha;
}

/* sha256 of the template libvirt made the running domain's store from. */
static char *
template_sha(int h, const char *uuid, const char *what)
{
    g_autofree char *name = g_strdup_printf("instance-%s", uuid);
    g_autofree char *xml = NULL;
    const char *t = NULL, *end = NULL;
    g_autofree char *path = NULL;

    if (vt_virsh(host_name[h], &xml, "dumpxml", name, NULL) != 0 ||
        !(t = strstr(xml, "<nvram template='")) || !(end = strchr(t + 17, '\'')))
        fail_msg("%s: the running domain on host %s names no store template:\n%s", what,
                 host_name[h], xml ? xml : "");
    path = g_strndup(t + 17, (gsize)(end - t - 17));
    return vt_sha256_file(path);
}

/* Until OVMF has written the store and left it alone for STORE_QUIET_S. */
static void
wait_store_quiet(int h, const char *uuid, const char *what)
{
    g_autofree char *tsha = template_sha(h, uuid, what);
    g_autofree char *last = NULL;
    gint64 end = g_get_monotonic_time() + STORE_WAIT_S * G_USEC_PER_SEC;
    int quiet = 0;

    while (g_get_monotonic_time() < end && quiet < STORE_QUIET_S) {
        g_autofree char *now = store_sha(h, uuid, what);

        quiet = g_strcmp0(now, tsha) != 0 && g_strcmp0(now, last) == 0 ? quiet + 1 : 0;
        g_free(last);
        last = g_steal_pointer(&now);
        g_usleep(G_USEC_PER_SEC);
    }
    if (quiet < STORE_QUIET_S)
        fail_msg("%s: OVMF did not write its variable store on host %s, or never left it "
                 "alone, in %d s",
                 what, host_name[h], STORE_WAIT_S);
}

/* The store's sha256, owner and mode. */
typedef struct {
    char *sha;
    struct stat st;
} store;

static void
store_clear(store *x)
{
    g_clear_pointer(&x->sha, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(store, store_clear)

static void
store_read(int h, const char *uuid, store *out, const char *what)
{
    g_autofree char *p = hpath(h, NVRAM, uuid);

    out->sha = store_sha(h, uuid, what);
    if (lstat(p, &out->st) < 0)
        fail_msg("%s: %s: %s", what, p, g_strerror(errno));
}

/* Host @h's store is @want: its contents, owner and mode. */
static void
assert_store(int h, const guest *g, const store *want, const char *what)
{
    g_auto(store) now = { 0 };

    store_read(h, g->uuid, &now, what);
    if (strcmp(now.sha, want->sha) != 0) {
        g_autofree char *tsha = template_sha(h, g->uuid, what);

        fail_msg("%s: the variable store on host %s has sha256 %s, the guest's was %s%s", what,
                 host_name[h], now.sha, want->sha,
                 g_strcmp0(now.sha, tsha) == 0
                     ? " (it is the template: the guest's variables were lost)"
                     : "");
    }
    if (now.st.st_uid != want->st.st_uid || now.st.st_gid != want->st.st_gid ||
        (now.st.st_mode & 07777) != (want->st.st_mode & 07777))
        fail_msg("%s: the variable store on host %s is %u:%u %04o, on the source it was "
                 "%u:%u %04o",
                 what, host_name[h], (unsigned)now.st.st_uid, (unsigned)now.st.st_gid,
                 (unsigned)(now.st.st_mode & 07777), (unsigned)want->st.st_uid,
                 (unsigned)want->st.st_gid, (unsigned)(want->st.st_mode & 07777));
}

/* Spawn UEFI guest @g on a, running with its store written: the TPM's
 * digest, and the store in *@n. */
static char *
uefi_spawn(const guest *g, store *n)
{
    g_autofree char *d = spawn_on(A, g);

    wait_store_quiet(A, g->uuid, "spawn");
    /* OVMF's boot went on touching the TPM while it wrote the store. */
    wait_settled(A, g->uuid);
    store_read(A, g->uuid, n, "spawn");
    return tpm_digest(A, g, "spawn, store written");
}

/* a -> b -> a with the store, in custody @state. */
static void
test_uefi(void **state)
{
    const char *mode = *state;
    g_auto(guest) g = { 0 };
    g_auto(store) n = { 0 };
    g_autofree char *d = NULL, *name = g_strdup_printf("uefi %s: a -> b -> a", mode);
    g_autofree char *ab = g_strdup_printf("uefi %s: a -> b", mode);
    g_autofree char *ba = g_strdup_printf("uefi %s: b -> a", mode);
    g_autofree char *back = NULL;

    begin(name);
    guest_init(&g, mode);
    g.uefi = true;
    d = uefi_spawn(&g, &n);
    move(A, B, &g, d, NULL, ab);
    assert_store(B, &g, &n, ab);
    if (exists_on(A, NVRAM, g.uuid))
        fail_msg("%s: host a keeps a variable store", ab);
    back = strcmp(mode, "user") == 0 ? NULL
                                     : g_strdup_printf(", \"source_host\": \"%s\"", host_addr[B]);
    move(B, A, &g, d, back, ba);
    assert_store(A, &g, &n, ba);
    destroy_on(A, &g);
    if (exists_on(A, STATE_DIR, g.uuid))
        fail_msg("%s: destroy left the state dir with the store", name);
}

/* b -> a, the guest paused by its user while the stream is in flight:
 * libvirt (9.0) resumes it on the destination all the same (only a guest
 * paused when the migration begins arrives paused), so QEMU writes the
 * store there before the source removes its own. */
static void
paused_mid_stream(const guest *g, const store *n)
{
    const char *what = "uefi: paused mid-stream b -> a";
    g_autofree char *name = g_strdup_printf("instance-%s", g->uuid);
    g_autofree char *md = pre_on(A, g, true, NULL, what);
    g_autofree char *mid = g_strdup_printf("lm-uefi-pause-%s", g->uuid);
    g_autofree char *corr = NULL;
    g_autoptr(vt_reply) r = NULL, post = NULL;

    slow_net(A, true);
    corr = send_async(B, "live_migration", args_live(g, A, md, false, NULL), mid);
    wait_job(B, g->uuid, what);
    if (vt_virsh(host_name[B], NULL, "suspend", name, NULL) != 0)
        fail_msg("%s: suspending the guest on host b during the migration failed", what);
    slow_net(A, false);
    r = vt_recv_reply(corr, OP_MS, what);
    if (!r->rep || !r->rep->ok)
        fail_msg("%s: live_migration should complete, got %s", what, vt_reply_summary(r));
    assert_migrated_reply(r, what);
    post = call_ok(A, "post_live_migration_at_destination", args_uuid(g), what);
    assert_store(A, g, n, what);
    if (exists_on(B, STATE_DIR, g->uuid))
        fail_msg("%s: host b kept its state dir", what);
    {
        g_autofree char *st = dom_state(A, g->uuid);

        if (strcmp(st, "running") != 0)
            fail_msg("%s: the guest should run on host a, virsh says %s", what, st);
    }
}

/* A paused UEFI guest is refused (the destination would write its store
 * only once resumed); an aborted migration leaves the source's store
 * whole; the retry carries it. */
static void
test_uefi_paused_abort(void **state)
{
    g_auto(guest) g = { 0 };
    g_auto(store) n = { 0 };
    g_autofree char *d = NULL, *md = NULL, *corr = NULL, *mid = NULL, *st = NULL;
    g_autofree char *name = NULL;
    g_autoptr(vt_reply) paused = NULL, ab = NULL, r = NULL;

    begin("uefi: paused refused, abort keeps the store");
    guest_init(&g, "user");
    g.uefi = true;
    d = uefi_spawn(&g, &n);
    name = g_strdup_printf("instance-%s", g.uuid);
    md = pre_on(B, &g, true, NULL, "pre");
    if (vt_virsh(host_name[A], NULL, "suspend", name, NULL) != 0)
        fail_msg("suspending the guest on host a failed");
    paused = call(A, "live_migration", args_live(&g, B, md, false, NULL));
    vt_assert_fault(paused, VTPM_FAULT_UNSUPPORTED_OPERATION,
                    "QEMU writes its variable store on the destination only once the guest runs "
                    "there",
                    "live_migration of a paused UEFI guest");
    st = dom_state(A, g.uuid);
    if (strcmp(st, "paused") != 0)
        fail_msg("paused: the guest should stay paused on host a, virsh says %s", st);
    assert_store(A, &g, &n, "paused, refused");
    if (vt_virsh(host_name[A], NULL, "resume", name, NULL) != 0)
        fail_msg("resuming the guest on host a failed");

    slow_net(B, true);
    mid = g_strdup_printf("lm-uefi-abort-%s", g.uuid);
    corr = send_async(A, "live_migration", args_live(&g, B, md, false, NULL), mid);
    wait_job(A, g.uuid, "uefi abort");
    ab = call_ok(A, "live_migration_abort", args_uuid(&g), "uefi abort");
    r = vt_recv_reply(corr, OP_MS, "uefi abort");
    assert_retryable(r, VTPM_FAULT_STATE_TRANSFER_FAILED, "aborted by live_migration_abort",
                     "the aborted live_migration");
    assert_stayed(A, &g, d, "uefi aborted");
    assert_store(A, &g, &n, "uefi aborted");
    slow_net(B, false);
    roll_back_and_retry(&g, d, "uefi aborted");
    assert_store(B, &g, &n, "uefi aborted, retried");
    paused_mid_stream(&g, &n);
    destroy_on(A, &g);
}

/* ---- 3. vtpmd killed at every step, the request redelivered ------------------------------ */

typedef enum { OP_PRE, OP_LIVE, OP_POST, OP_ROLLBACK } op;

typedef struct {
    const char *name;
    const char *point; /* VTPMD_CRASH_AT; NULL: SIGKILL while the stream is in flight */
    op op;
    const char *mode;
    /* The guest stopped on the destination while vtpmd was down: only
     * libvirt's reason for the source's shut-off domain (migrated) tells
     * the redelivery that the guest moved. */
    bool stop_dest;
} crash_case;

static const crash_case crash_cases[] = {
    { "crash pre_live_migration.after_key", "pre_live_migration.after_key", OP_PRE, "user" },
    { "crash live_migration.start", "live_migration.start", OP_LIVE, "host" },
    { "crash live_migration.before_migrate", "live_migration.before_migrate", OP_LIVE,
      "deployment" },
    { "kill live_migration mid-stream", NULL, OP_LIVE, "user" },
    { "crash live_migration.after_migrate", "live_migration.after_migrate", OP_LIVE, "host" },
    { "crash live_migration.after_migrate, the guest stopped on the destination",
      "live_migration.after_migrate", OP_LIVE, "host", true },
    { "crash live_migration.after_undefine", "live_migration.after_undefine", OP_LIVE, "user" },
    { "crash post_live_migration_at_destination.after_release",
      "post_live_migration_at_destination.after_release", OP_POST, "deployment" },
    { "crash rollback_live_migration_at_destination.after_undefine",
      "rollback_live_migration_at_destination.after_undefine", OP_ROLLBACK, "host" },
};

static const char *const op_method[] = {
    [OP_PRE] = "pre_live_migration",
    [OP_LIVE] = "live_migration",
    [OP_POST] = "post_live_migration_at_destination",
    [OP_ROLLBACK] = "rollback_live_migration_at_destination",
};

/* Send @method to host @h's vtpmd, armed to die at @c's point (or killed
 * once the migration streams); then a fresh vtpmd there, to which the
 * broker redelivers the request: its reply. */
static vt_reply *
crash_and_redeliver(int h, const crash_case *c, const guest *g, GBytes *a)
{
    g_autofree char *env_kv = g_strdup_printf("VTPMD_CRASH_AT=%s", c->point ? c->point : "");
    const char *env[] = { env_kv, NULL };
    g_autofree char *mid = g_strdup_printf("lm-crash-%s", g->uuid);
    g_autofree char *needle = g_strdup_printf("fault injection: crashing at %s", c->point);
    g_autofree char *corr = NULL, *log = NULL, *before = NULL;
    const char *needles[] = { needle, NULL };
    unsigned crashes_before;
    int code;

    if (c->point)
        host_restart(h, env);
    else
        slow_net(B, true);
    /* Every vtpmd of a host logs to one file: count this crash only. */
    before = vt_vtpmd_log(dmn[h]);
    crashes_before = vt_count_lines(before, needles);
    corr = send_async(h, op_method[c->op], a, mid);
    if (!c->point) {
        wait_job(A, g->uuid, c->name);
        vt_vtpmd_kill(dmn[h]);
        slow_net(B, false);
    }
    code = vt_vtpmd_wait_exit(dmn[h], CRASH_EXIT_MS);
    if (code != 128 + 9) {
        vt_vtpmd_dump(dmn[h]);
        fail_msg("%s: vtpmd of host %s should have died by SIGKILL, exit %d", c->name,
                 host_name[h], code);
    }
    log = vt_vtpmd_log(dmn[h]);
    if (c->point && vt_count_lines(log, needles) != crashes_before + 1)
        fail_msg("%s: vtpmd died, but its log does not say it crashed at %s", c->name, c->point);
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
    if (c->stop_dest) {
        g_autofree char *name = g_strdup_printf("instance-%s", g->uuid);

        if (vt_virsh(host_name[B], NULL, "destroy", name, NULL) != 0)
            fail_msg("%s: stopping the guest on host %s failed", c->name, host_name[B]);
    }
    host_start(h, NULL);
    return vt_recv_reply(corr, OP_MS, c->name);
}

static void
assert_redelivered_ok(const vt_reply *r, const crash_case *c)
{
    if (!r->rep || !r->rep->ok)
        fail_msg("%s: the redelivered %s should complete, got %s", c->name, op_method[c->op],
                 vt_reply_summary(r));
}

static void
test_crash(void **state)
{
    const crash_case *c = *state;
    unsigned made = 0;
    g_auto(guest) g = { 0 };
    g_autofree char *d = NULL, *md = NULL;
    g_autoptr(vt_reply) r = NULL, live = NULL, post = NULL;

    begin(c->name);
    guest_init(&g, c->mode);
    d = spawn_on(A, &g);
    made = manufactured(B, g.uuid);
    if (c->op == OP_PRE) {
        g_autofree char *i = inst_json(&g, true);

        r = crash_and_redeliver(B, c, &g, args("{\"instance\": %s}", i));
        assert_redelivered_ok(r, c);
        md = vtpm_mpjson_to_string(&r->rep->result, false);
    } else {
        md = pre_on(B, &g, true, NULL, c->name);
    }
    switch (c->op) {
    case OP_LIVE:
        live = crash_and_redeliver(A, c, &g, args_live(&g, B, md, false, NULL));
        assert_redelivered_ok(live, c);
        if (!vt_obj_bool(&live->rep->result, "migrated") || !res_has(live, "total_ms") ||
            !res_has(live, "downtime_ms"))
            fail_msg("%s: the redelivered live_migration should say migrated, with libvirt's "
                     "total_ms and downtime_ms",
                     c->name);
        break;
    case OP_ROLLBACK:
        slow_net(B, true);
        live = call(A, "live_migration", args_live(&g, B, md, false, ", \"timeout_s\": 1"));
        assert_retryable(live, VTPM_FAULT_STATE_TRANSFER_FAILED, "did not complete", c->name);
        slow_net(B, false);
        r = crash_and_redeliver(B, c, &g, args_uuid(&g));
        assert_redelivered_ok(r, c);
        assert_clean(B, &g, c->name);
        assert_stayed(A, &g, d, c->name);
        destroy_on(A, &g);
        return;
    default:
        live = call_ok(A, "live_migration", args_live(&g, B, md, false, NULL), c->name);
        break;
    }
    if (c->op == OP_POST) {
        r = crash_and_redeliver(B, c, &g, args_uuid(&g));
        assert_redelivered_ok(r, c);
    } else {
        post = call_ok(B, "post_live_migration_at_destination", args_uuid(&g), c->name);
    }
    if (c->stop_dest) {
        g_autofree char *arrived = tpm_digest(B, &g, c->name);

        if (strcmp(arrived, d) != 0)
            fail_msg("%s: the TPM stopped on host %s is not the one that left host %s "
                     "(permanent state sha256 %s, was %s)",
                     c->name, host_name[B], host_name[A], arrived, d);
        call_ok_free(B, "power_on", args_uuid(&g), c->name);
        /* A start writes the firmware's TPM start-up into the permanent
         * state (as after spawn_on): the same TPM, a new digest. */
        wait_settled(B, g.uuid);
        g_free(d);
        d = tpm_digest(B, &g, c->name);
    }
    assert_moved(A, B, &g, d, made, c->name);
    destroy_on(B, &g);
}

int
main(void)
{
    g_autoptr(GArray) tests = g_array_new(FALSE, FALSE, sizeof(struct CMUnitTest));
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test_setup_teardown(test_user, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_host, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_deployment, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_dest_unreachable, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_dest_libvirtd_killed_before, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_dest_libvirtd_killed_mid, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_source_libvirtd_killed_mid, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_timeout, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_abort, test_setup, test_teardown),
        { "uefi host: a -> b -> a", test_uefi, test_setup, test_teardown, (void *)"host" },
        { "uefi user: a -> b -> a", test_uefi, test_setup, test_teardown, (void *)"user" },
        { "uefi deployment: a -> b -> a", test_uefi, test_setup, test_teardown,
          (void *)"deployment" },
        { "uefi: paused refused, abort keeps the store", test_uefi_paused_abort, test_setup,
          test_teardown, NULL },
    };
    const char *missing = NULL;

    if (!vt_env_ready(&missing)) {
        fprintf(stderr, "test_livemig: %s is not set; run it under tests/integration.sh --net "
                        "--hosts 2\n",
                missing);
        return 77;
    }
    g_array_append_vals(tests, fixed, G_N_ELEMENTS(fixed));
    for (size_t i = 0; i < G_N_ELEMENTS(crash_cases); i++) {
        struct CMUnitTest t = {
            .name = crash_cases[i].name,
            .test_func = test_crash,
            .setup_func = test_setup,
            .teardown_func = test_teardown,
            .initial_state = (void *)&crash_cases[i],
        };

        g_array_append_val(tests, t);
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return _cmocka_run_group_tests("test_livemig", (const struct CMUnitTest *)tests->data,
                                   tests->len, group_setup, group_teardown);
}
