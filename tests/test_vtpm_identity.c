/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A verifiable vTPM identity end to end (docs/security.md, TPM identity):
 * two libvirt hosts "a" and "b" with addresses of their own
 * (integration.sh --net --hosts 2), one vtpmd on each, driven over the real
 * broker.  Host a has the deployment's EK CA (a test CA made with openssl
 * here, as tests/lib/env.sh makes the broker's); host b has none, as a host
 * of a deployment that has not configured one yet.
 *
 * get_vtpm_identity answers with EK certificates that openssl verify
 * chains to the CA, the instance UUID as their subject, and the same
 * answer through a power cycle, a migration a -> b, a live migration
 * a -> b, a shelve on b and an unshelve on a, and a rekey; a new TPM
 * (rebuild to TPM 1.2) changes it and says so, and a revert of a resize
 * to TPM 1.2 brings the old one back; PCR banks asked for reach libvirt's
 * XML and swtpm; a spawn killed between making the TPM and defining its
 * domain adopts that very TPM when redelivered; a UEFI instance keeps its
 * identity and its variable store (beside the TPM state) together, and a
 * rebuild to another TPM model gives it a new identity and keeps the
 * store, also when vtpmd is killed right after making the new TPM; a CA
 * key others can read stops vtpmd at start; the vtpmds stop cleanly (in
 * the ASan+UBSan build: without a memory error or leak).
 * What a guest reads of its TPM is the acceptance suite's
 * (tests/acceptance/test_guest_identity.sh).
 *
 * Guests are firmware-only QEMU/TCG domains of 64 MiB.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "lib/harness.h"
#include "lib/jsonargs.h"
#include "lib/testca.h"
#include "mpjson.h"

enum { A = 0, B = 1, NHOSTS = 2 };

#define OP_MS 120000

static const char *const host_name[NHOSTS] = { "a", "b" };
static const char *host_addr[NHOSTS];
static vt_vtpmd *dmn[NHOSTS];
static tc_ca *CA;
static char *deploy_key;

/* ---- requests, written as JSON (single quotes) ------------------------------------------ */

/* An instance: flavor extra specs and image properties as JSON members. */
static char *
inst_json(const char *uuid, const char *specs, const char *image_id, const char *props)
{
    return g_strdup_printf("{'uuid': '%s', 'name': 'id-test', 'flavor': {'name': 'm1.id', "
                           "'vcpus': 1, 'memory_mb': 64, 'extra_specs': {%s}}, 'image': "
                           "{'id': '%s', 'name': 'firmware-only', 'properties': {%s}}}",
                           uuid, specs, image_id, props);
}

/* An args map from JSON with ' for " (tests/lib/jsonargs.h). */
#define args(...) vt_json_args(true, __VA_ARGS__)

/* Call host @h's vtpmd; takes @a; fails the test unless ok. */
static vt_reply *
call_ok(int h, const char *method, GBytes *a, const char *what)
{
    vt_reply *r = vt_call(dmn[h], method, a, OP_MS);

    g_bytes_unref(a);
    if (!r->rep || !r->rep->ok) {
        g_autofree char *m = g_strdup_printf("%s (%s on host %s): %s", what, method,
                                             host_name[h], vt_reply_summary(r));

        vt_reply_free(r);
        fail_msg("%s", m);
    }
    return r;
}

static vt_reply *
call(int h, const char *method, GBytes *a)
{
    vt_reply *r = vt_call(dmn[h], method, a, OP_MS);

    g_bytes_unref(a);
    return r;
}

static void
assert_result(const vt_reply *r, const char *path, const char *want, const char *what)
{
    g_autofree char *got = vt_obj_str(&r->rep->result, path);

    if (g_strcmp0(got, want) != 0)
        fail_msg("%s: result.%s should be %s, got %s", what, path, want, got ? got : "nothing");
}

/* {ref?, bytes, sha256} of a result, as JSON to send back. */
static char *
xfer_json(const vt_reply *r, const char *key)
{
    const msgpack_object *o = vt_obj_at(&r->rep->result, key);

    if (!o || o->type != MSGPACK_OBJECT_MAP)
        fail_msg("result.%s should be a map", key);
    return vtpm_mpjson_to_string(o, false);
}

/* ---- identity ----------------------------------------------------------------------------- */

/* The get_vtpm_identity result of @uuid on host @h, as compact JSON. */
static char *
identity_on(int h, const char *uuid, const char *what)
{
    g_autoptr(vt_reply) r =
        call_ok(h, "get_vtpm_identity", args("{'instance': {'uuid': '%s'}}", uuid), what);

    return vtpm_mpjson_to_string(&r->rep->result, false);
}

/* Takes @now_owned (what identity_on returned). */
static void
assert_same_identity(const char *before, char *now_owned, const char *what)
{
    g_autofree char *now = now_owned;

    if (strcmp(before, now) != 0)
        fail_msg("%s: the identity changed\n before: %s\n now:    %s", what, before, now);
}

static char *
run(const char *const *argv, const char *what)
{
    g_autofree char *errout = NULL;
    g_autoptr(GError) gerr = NULL;
    char *out = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &errout,
                      &status, &gerr) ||
        !g_spawn_check_wait_status(status, NULL))
        fail_msg("%s: %s failed: %s%s", what, argv[0], gerr ? gerr->message : "",
                 errout ? errout : "");
    return out;
}

/* The identity @json is of a TPM @version with the EKs @algs (NULL-ended);
 * each certificate verifies against the CA (openssl verify), and a TPM
 * 2.0's names the instance. */
static void
assert_verifiable(const char *json, const char *uuid, const char *version,
                  const char *const *algs, const char *what)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_autofree char *ca_pem = tc_path(CA, "ca.pem");
    g_autofree char *pem = g_strdup_printf("%s/id-cert-%d.pem", vt_env("VT_ROOT"), (int)getpid());
    g_autoptr(GBytes) ca_der = tc_bytes(CA, "ca.der");
    g_autofree char *ca_sha = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, ca_der);
    g_autofree char *cn = g_strdup_printf("subject=CN=%s\n", uuid);
    JsonObject *root, *ca;
    JsonArray *ek;
    size_t n = g_strv_length((char **)algs);

    if (!json_parser_load_from_data(p, json, -1, NULL))
        fail_msg("%s: not JSON: %s", what, json);
    root = json_node_get_object(json_parser_get_root(p));
    ek = json_object_get_array_member(root, "ek");
    ca = json_object_get_object_member(root, "ca");
    if (g_strcmp0(json_object_get_string_member(root, "version"), version) != 0 ||
        json_array_get_length(ek) != n ||
        g_strcmp0(json_object_get_string_member(ca, "sha256"), ca_sha) != 0 ||
        g_strcmp0(json_object_get_string_member(ca, "subject"), "CN=Test EK CA,O=vtpmd test"))
        fail_msg("%s: expected a TPM %s with %zu EKs of the test CA (sha256 %s), got %s", what,
                 version, n, ca_sha, json);
    for (guint i = 0; i < n; i++) {
        JsonObject *e = json_array_get_object_element(ek, i);
        const char *verify[] = { "openssl", "verify", "-CAfile", ca_pem, pem, NULL };
        const char *subject[] = { "openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253",
                                  "-in", pem, NULL };
        g_autofree char *v = NULL, *s = NULL;

        if (g_strcmp0(json_object_get_string_member(e, "alg"), algs[i]) != 0)
            fail_msg("%s: ek[%u] should be %s: %s", what, i, algs[i], json);
        if (!g_file_set_contents(pem, json_object_get_string_member(e, "cert_pem"), -1, NULL))
            fail_msg("%s: writing %s", what, pem);
        v = run(verify, what);
        s = run(subject, what);
        if (!strstr(v, ": OK"))
            fail_msg("%s: openssl verify of the %s certificate: %s", what, algs[i], v);
        if (strcmp(version, "2.0") == 0 && strcmp(s, cn) != 0)
            fail_msg("%s: the %s certificate's subject is %s, expected %s", what, algs[i], s, cn);
    }
    unlink(pem);
}

static const char *const both_eks[] = { "rsa2048", "ecc-nist-p256", NULL };
static const char *const rsa_only[] = { "rsa2048", NULL };

/* ---- hosts ------------------------------------------------------------------------------------ */

/* How often swtpm_setup ran for the instance from libvirt (its swtpm log):
 * to manufacture, or to turn the PCR banks asked for on at a start. */
static unsigned
swtpm_log_lines(int h, const char *uuid, const char *needle)
{
    return vt_swtpm_log_lines(host_name[h], uuid, needle);
}

static void
assert_not_manufactured_by_libvirt(int h, const char *uuid, const char *what)
{
    if (swtpm_log_lines(h, uuid, "Starting vTPM manufacturing") != 0)
        fail_msg("%s: libvirt's swtpm_setup manufactured a TPM for %s on host %s: the TPM vtpmd "
                 "made was not used", what, uuid, host_name[h]);
}

/* [vtpm] of host @h: the deployment key on both; the EK CA on a only. */
static char *
vtpm_group(int h, const char *key)
{
    g_autofree char *cert = tc_path(CA, "ca.pem");

    if (h == B)
        return g_strdup_printf("supported_secret_security = user;host;deployment\n"
                               "deployment_key_file = %s", deploy_key);
    return g_strdup_printf("supported_secret_security = user;host;deployment\n"
                           "deployment_key_file = %s\nek_ca_cert = %s\nek_ca_key = %s",
                           deploy_key, cert, key);
}

static vt_config_opts
host_opts(int h, const char *vtpm, char **tail)
{
    *tail = g_strdup_printf("[store]\nuri = qemu+tcp://%s/system\n", host_addr[A]);
    return (vt_config_opts){
        .worker_host = host_addr[h],
        .libvirt_extra = "shutdown_timeout = 3\nmigration_uri_template = qemu+tcp://%s/system",
        .vtpm_extra = vtpm,
        .tail = *tail,
    };
}

static void
host_start(int h, const char *const *env)
{
    g_autofree char *key = tc_path(CA, "ca.key");
    g_autofree char *vtpm = vtpm_group(h, key);
    g_autofree char *tail = NULL;
    vt_config_opts o = host_opts(h, vtpm, &tail);

    dmn[h] = vt_vtpmd_start(host_name[h], &o, env);
}

static void
host_stop(int h)
{
    if (dmn[h] && vt_vtpmd_running(dmn[h]) && vt_vtpmd_term(dmn[h], 30000) != 0)
        print_error("vtpmd of host %s did not stop cleanly\n", host_name[h]);
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
}

static int
group_setup(void **state)
{
    g_autofree char *hex = NULL;
    guint8 k[32];

    host_addr[A] = vt_env("VT_HOST_A_ADDR");
    host_addr[B] = vt_env("VT_HOST_B_ADDR");
    CA = tc_ca_new();
    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (guint8)g_random_int();
    hex = g_compute_checksum_for_data(G_CHECKSUM_SHA256, k, sizeof(k));
    deploy_key = g_strdup_printf("%s/id-deployment.key", vt_env("VT_ROOT"));
    if (!g_file_set_contents_full(deploy_key, hex, -1, G_FILE_SET_CONTENTS_NONE, 0600, NULL))
        fail_msg("writing %s", deploy_key);
    host_start(A, NULL);
    host_start(B, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        vt_virsh_cleanup(host_name[h]);
        host_stop(h);
    }
    g_clear_pointer(&CA, tc_ca_free);
    unlink(deploy_key);
    g_clear_pointer(&deploy_key, g_free);
    vt_client_drop();
    return 0;
}

static int
test_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        vt_virsh_cleanup(host_name[h]);
        if (!dmn[h] || !vt_vtpmd_running(dmn[h])) {
            host_stop(h);
            host_start(h, NULL);
        }
    }
    return 0;
}

/* ---- steps -------------------------------------------------------------------------------------- */

static char *
flavor_json(const char *specs)
{
    return g_strdup_printf("{'name': 'm1.id', 'vcpus': 1, 'memory_mb': 64, 'extra_specs': {%s}}",
                           specs);
}

static void
ok_free(int h, const char *method, GBytes *a, const char *what)
{
    vt_reply_free(call_ok(h, method, a, what));
}

static void
destroy_on(int h, const char *uuid)
{
    ok_free(h, "destroy", args("{'instance': {'uuid': '%s'}}", uuid), "destroy");
}

/* A reply of an operation that kept the TPM, or made a new one. */
static void
assert_identity_changed(const vt_reply *r, bool want, const char *what)
{
    if (vt_obj_bool(&r->rep->result, "identity_changed") != want)
        fail_msg("%s: result.identity_changed should be %s", what, want ? "true" : "false");
}

/* rebuild @inst on host a: its vtpm_state and whether the identity changed. */
static void
rebuild_on_a(const char *inst, const char *want_state, bool want_changed, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(A, "rebuild", args("{'instance': %s}", inst), what);

    assert_result(r, "vtpm_state", want_state, what);
    assert_identity_changed(r, want_changed, what);
}

/* `vtpmctl identity --verify @ca_file` of @uuid on host @h: its exit code
 * and stdout. */
static int
vtpmctl_identity(int h, const char *uuid, const char *ca_file, char **out)
{
    g_autofree char *url = g_strdup_printf("--url=%s", vt_env("VT_AMQP_URL"));
    g_autofree char *verify = g_strdup_printf("--verify=%s", ca_file);
    const char *argv[] = { vt_env("VT_VTPMCTL"), "identity", url, "-H", host_addr[h], verify,
                           uuid, NULL };
    g_autoptr(GError) gerr = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, out,
                      NULL, &status, &gerr))
        fail_msg("running vtpmctl: %s", gerr->message);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* What a tenant runs: both certificates verify against the CA, against
 * another CA neither does. */
static void
assert_vtpmctl_verifies(int h, const char *uuid)
{
    g_autofree char *ca = tc_path(CA, "ca.pem"), *out = NULL, *out2 = NULL, *other_pem = NULL;
    g_autoptr(tc_ca) other = tc_ca_new();
    int code = vtpmctl_identity(h, uuid, ca, &out);

    if (code != 0 || !strstr(out, "rsa2048: verified against") ||
        !strstr(out, "ecc-nist-p256: verified against") || !strstr(out, "EK ecc-nist-p256\n"))
        fail_msg("vtpmctl identity --verify (the CA): exit %d\n%s", code, out);
    other_pem = tc_path(other, "ca.pem");
    code = vtpmctl_identity(h, uuid, other_pem, &out2);
    if (code != 1 || !strstr(out2, "rsa2048: NOT verified: ") ||
        !strstr(out2, "ecc-nist-p256: NOT verified: "))
        fail_msg("vtpmctl identity --verify (another CA): exit %d\n%s", code, out2);
}

/* ---- 1. the identity through every move ----------------------------------------------------- */

static void
test_travels(void **state)
{
    static const char specs[] = "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'";
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, specs, "img-1", "");
    g_autofree char *fl = flavor_json(specs);
    g_autofree char *I = NULL, *x = NULL, *sh = NULL;

    ok_free(A, "spawn", args("{'instance': %s}", in), "spawn on a");
    I = identity_on(A, uuid, "spawn on a");
    assert_verifiable(I, uuid, "2.0", both_eks, "spawn on a");
    assert_not_manufactured_by_libvirt(A, uuid, "spawn on a");
    assert_vtpmctl_verifies(A, uuid);

    ok_free(A, "power_off", args("{'instance': {'uuid': '%s'}}", uuid), "power_off");
    ok_free(A, "power_on", args("{'instance': {'uuid': '%s'}}", uuid), "power_on");
    assert_same_identity(I, identity_on(A, uuid, "power cycle"), "power cycle");

    {
        g_autoptr(vt_reply) m = call_ok(A, "migrate_disk_and_power_off",
                                        args("{'instance': %s, 'dest_host': '%s'}", in,
                                             host_addr[B]), "migrate a -> b");
        g_autoptr(vt_reply) f = NULL;

        x = xfer_json(m, "vtpm_transfer");
        f = call_ok(B, "finish_migration",
                    args("{'instance': %s, 'old_flavor': %s, 'vtpm_transfer': %s}", in, fl, x),
                    "finish_migration on b");
        assert_result(f, "vtpm_state", "restored", "finish_migration on b");
        assert_identity_changed(f, false, "finish_migration on b");
    }
    ok_free(A, "confirm_migration", args("{'instance': {'uuid': '%s'}}", uuid), "confirm");
    /* b has no EK CA of its own: the record came with the TPM. */
    assert_same_identity(I, identity_on(B, uuid, "migration a -> b"), "migration a -> b");
    assert_not_manufactured_by_libvirt(B, uuid, "migration a -> b");
    assert_vtpmctl_verifies(B, uuid);
    {
        g_autoptr(vt_reply) r = call(A, "get_vtpm_identity",
                                     args("{'instance': {'uuid': '%s'}}", uuid));

        vt_assert_fault(r, VTPM_FAULT_INSTANCE_NOT_FOUND, uuid, "get_vtpm_identity on a");
    }

    {
        g_autoptr(vt_reply) s = call_ok(B, "shelve", args("{'instance': {'uuid': '%s'}}", uuid),
                                        "shelve on b");
        g_autoptr(vt_reply) u = NULL;

        sh = xfer_json(s, "shelved");
        u = call_ok(A, "unshelve", args("{'instance': %s, 'shelved': %s}", in, sh),
                    "unshelve on a");
        assert_result(u, "vtpm_state", "restored", "unshelve on a");
        assert_identity_changed(u, false, "unshelve on a");
    }
    assert_same_identity(I, identity_on(A, uuid, "shelve on b, unshelve on a"),
                         "shelve on b, unshelve on a");

    ok_free(A, "rekey", args("{'instance': {'uuid': '%s'}}", uuid), "rekey on a");
    assert_same_identity(I, identity_on(A, uuid, "rekey"), "rekey");
    assert_not_manufactured_by_libvirt(A, uuid, "the end");
    destroy_on(A, uuid);
}

/* A live migration a -> b in Nova's sequence: libvirt carries the
 * definition as it is, and with it the record; b, without an EK CA of its
 * own, answers the same identity. */
static void
test_live_migration(void **state)
{
    static const char specs[] = "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'";
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, specs, "img-1", "");
    g_autofree char *I = NULL, *md = NULL;

    ok_free(A, "spawn", args("{'instance': %s}", in), "spawn on a");
    I = identity_on(A, uuid, "spawn on a");
    assert_verifiable(I, uuid, "2.0", both_eks, "spawn on a");
    ok_free(B, "check_can_live_migrate_destination", args("{'instance': %s}", in),
            "check_can_live_migrate_destination on b");
    {
        g_autoptr(vt_reply) pre = call_ok(B, "pre_live_migration", args("{'instance': %s}", in),
                                          "pre_live_migration on b");

        md = vtpm_mpjson_to_string(&pre->rep->result, false);
    }
    {
        g_autoptr(vt_reply) live =
            call_ok(A, "live_migration",
                    args("{'instance': %s, 'dest_host': '%s', 'migrate_data': %s}", in,
                         host_addr[B], md), "live_migration a -> b");

        if (!vt_obj_bool(&live->rep->result, "migrated"))
            fail_msg("live_migration a -> b: result.migrated should be true");
    }
    ok_free(B, "post_live_migration_at_destination", args("{'instance': {'uuid': '%s'}}", uuid),
            "post_live_migration_at_destination on b");
    assert_same_identity(I, identity_on(B, uuid, "live migration a -> b"),
                         "live migration a -> b");
    assert_not_manufactured_by_libvirt(B, uuid, "live migration a -> b");
    {
        g_autoptr(vt_reply) r = call(A, "get_vtpm_identity",
                                     args("{'instance': {'uuid': '%s'}}", uuid));

        vt_assert_fault(r, VTPM_FAULT_INSTANCE_NOT_FOUND, uuid, "get_vtpm_identity on a");
    }
    destroy_on(B, uuid);
}

/* ---- 2. a new TPM, a new identity ---------------------------------------------------------------- */

static void
test_new_tpm(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, "", "img-1", "'hw_tpm_version': '2.0'");
    g_autofree char *same = inst_json(uuid, "", "img-2", "'hw_tpm_version': '2.0'");
    g_autofree char *v12 = inst_json(uuid, "", "img-3", "'hw_tpm_version': '1.2'");
    g_autofree char *I = NULL, *I12 = NULL;

    ok_free(A, "spawn", args("{'instance': %s, 'power_on': false}", in), "spawn");
    I = identity_on(A, uuid, "spawn");
    assert_verifiable(I, uuid, "2.0", both_eks, "spawn");
    rebuild_on_a(same, "kept", false, "rebuild keeping the TPM");
    assert_same_identity(I, identity_on(A, uuid, "rebuild keeping the TPM"),
                         "rebuild keeping the TPM");
    rebuild_on_a(v12, "replaced", true, "rebuild to TPM 1.2");
    I12 = identity_on(A, uuid, "rebuild to TPM 1.2");
    assert_verifiable(I12, uuid, "1.2", rsa_only, "rebuild to TPM 1.2");
    if (strcmp(I, I12) == 0)
        fail_msg("rebuild to TPM 1.2: the identity is the old TPM's");
    assert_not_manufactured_by_libvirt(A, uuid, "rebuild to TPM 1.2");
    destroy_on(A, uuid);
}

/* A resize to TPM 1.2 on b gives the instance a new TPM (b has no EK CA:
 * libvirt makes it, with no record); the revert on a brings back the kept
 * TPM, and with it the identity it had. */
static void
test_revert(void **state)
{
    static const char v20[] = "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'";
    static const char v12[] = "'hw:tpm_version': '1.2', 'hw:tpm_secret_security': 'host'";
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, v20, "img-1", "");
    g_autofree char *in12 = inst_json(uuid, v12, "img-1", "");
    g_autofree char *fl = flavor_json(v20);
    g_autofree char *I = NULL, *x = NULL;

    ok_free(A, "spawn", args("{'instance': %s, 'power_on': false}", in), "spawn on a");
    I = identity_on(A, uuid, "spawn on a");
    {
        g_autoptr(vt_reply) m = call_ok(A, "migrate_disk_and_power_off",
                                        args("{'instance': %s, 'dest_host': '%s'}", in,
                                             host_addr[B]), "resize a -> b");
        g_autoptr(vt_reply) f = NULL, r = NULL;

        x = xfer_json(m, "vtpm_transfer");
        f = call_ok(B, "finish_migration",
                    args("{'instance': %s, 'old_flavor': %s, 'vtpm_transfer': %s}", in12, fl, x),
                    "finish_migration to TPM 1.2 on b");
        assert_result(f, "vtpm_state", "fresh", "finish_migration to TPM 1.2 on b");
        assert_identity_changed(f, true, "finish_migration to TPM 1.2 on b");
        r = call(B, "get_vtpm_identity", args("{'instance': {'uuid': '%s'}}", uuid));
        vt_assert_fault(r, VTPM_FAULT_STATE_NOT_FOUND, "has no identity record",
                        "identity of the new TPM on b (no EK CA there)");
    }
    destroy_on(B, uuid);
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_revert_migration",
                                        args("{'instance': {'uuid': '%s'}, 'power_on': false}",
                                             uuid), "finish_revert_migration on a");

        assert_result(r, "vtpm_state", "restored", "finish_revert_migration on a");
    }
    assert_same_identity(I, identity_on(A, uuid, "revert"), "revert");
    assert_not_manufactured_by_libvirt(A, uuid, "revert");
    destroy_on(A, uuid);
}

/* ---- 3. a host without the deployment's CA ----------------------------------------------------- */

static void
test_host_local_ca(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, "'hw:tpm_version': '2.0'", "img-1", "");
    g_autoptr(vt_reply) caps_a = call_ok(A, "get_capabilities", args("{}"), "caps of a");
    g_autoptr(vt_reply) caps_b = call_ok(B, "get_capabilities", args("{}"), "caps of b");
    g_autoptr(vt_reply) r = NULL;

    if (!vt_obj_bool(&caps_a->rep->result, "ek_ca.configured") ||
        !vt_array_has_str(vt_obj_at(&caps_a->rep->result, "traits"),
                          "CUSTOM_VTPM_EK_DEPLOYMENT_CA"))
        fail_msg("host a should offer its deployment EK CA");
    assert_result(caps_a, "ek_ca.subject", "CN=Test EK CA,O=vtpmd test", "caps of a");
    if (vt_obj_bool(&caps_b->rep->result, "ek_ca.configured") ||
        !vt_obj_at(&caps_b->rep->result, "missing.CUSTOM_VTPM_EK_DEPLOYMENT_CA"))
        fail_msg("host b has no EK CA and should say why CUSTOM_VTPM_EK_DEPLOYMENT_CA is missing");

    /* libvirt makes this TPM, with b's own CA: nothing verifiable to say. */
    ok_free(B, "spawn", args("{'instance': %s}", in), "spawn on b");
    if (swtpm_log_lines(B, uuid, "Starting vTPM manufacturing") != 1)
        fail_msg("spawn on b: libvirt should have manufactured the TPM (no EK CA on b)");
    r = call(B, "get_vtpm_identity", args("{'instance': {'uuid': '%s'}}", uuid));
    vt_assert_fault(r, VTPM_FAULT_STATE_NOT_FOUND, "has no identity record", "identity on b");
    destroy_on(B, uuid);
}

/* ---- 4. PCR banks ------------------------------------------------------------------------------- */

static void
assert_banks_turned_on(int h, const char *uuid, const char *banks, const char *what)
{
    g_autofree char *needle = g_strdup_printf("Successfully activated PCR banks %s among", banks);

    if (swtpm_log_lines(h, uuid, needle) < 1)
        fail_msg("%s: swtpm_setup --reconfigure did not turn on %s (swtpm log of %s)", what,
                 banks, uuid);
}

static void
test_pcr_banks(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in =
        inst_json(uuid, "'hw:tpm_version': '2.0'", "img-1", "'hw_tpm_pcr_banks': 'sha256,sha384'");
    g_autofree char *more =
        inst_json(uuid, "'hw:tpm_version': '2.0'", "img-2", "'hw_tpm_pcr_banks': 'sha1,sha256'");
    g_autofree char *name = g_strdup_printf("instance-%s", uuid);
    g_autofree char *xml = NULL, *I = NULL;

    ok_free(A, "spawn", args("{'instance': %s}", in), "spawn with sha256,sha384");
    if (vt_virsh(host_name[A], &xml, "dumpxml", name, NULL) != 0 ||
        !strstr(xml, "<active_pcr_banks>") || !strstr(xml, "<sha256/>") ||
        !strstr(xml, "<sha384/>") || strstr(xml, "<sha1/>") || strstr(xml, "<sha512/>"))
        fail_msg("spawn with sha256,sha384: libvirt's XML should turn on exactly those:\n%s",
                 xml ? xml : "(no domain)");
    assert_banks_turned_on(A, uuid, "sha256,sha384", "spawn");
    I = identity_on(A, uuid, "spawn with banks");

    /* Other banks on the same TPM: at its next start, same identity. */
    rebuild_on_a(more, "kept", false, "rebuild with sha1,sha256");
    assert_banks_turned_on(A, uuid, "sha1,sha256", "rebuild");
    assert_same_identity(I, identity_on(A, uuid, "rebuild with banks"), "rebuild with banks");
    destroy_on(A, uuid);
}

/* Host a's vtpmd armed to die at crash point @point (the one that made
 * the TPMs so far stops cleanly first: ASan), @body sent to it as message
 * @mid; once it died there: the correlation id of the reply a restarted
 * vtpmd gives to the redelivery. */
static char *
send_killed_at(const char *point, GBytes *body, const char *mid)
{
    g_autofree char *crash = g_strdup_printf("VTPMD_CRASH_AT=%s", point);
    const char *env[] = { crash, NULL };
    vtpm_client_msg_opts o = { 0 };
    vtpm_error err = { 0 };
    char *corr = NULL;
    int code;

    vt_vtpmd_stop_ok(dmn[A]);
    g_clear_pointer(&dmn[A], vt_vtpmd_free);
    host_start(A, env);
    o.routing_key = dmn[A]->routing_key;
    o.message_id = mid;
    if (vtpm_client_msg_send(vt_client(), &o, g_bytes_get_data(body, NULL),
                             g_bytes_get_size(body), &corr, &err) < 0) {
        vt_client_drop();
        fail_msg("sending the request to die at %s: %s", point, err.message);
    }
    code = vt_vtpmd_wait_exit(dmn[A], OP_MS);
    if (code != 128 + 9) {
        vt_vtpmd_dump(dmn[A]);
        fail_msg("vtpmd should have died at %s, exited %d", point, code);
    }
    return corr;
}

/* ---- 5. killed between making the TPM and defining its domain --------------------------------- */

static void
test_crash_after_making(void **state)
{
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(
        uuid, "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'deployment'", "img-1", "");
    g_autofree char *mid = g_strdup_printf("id-crash-%s", uuid);
    g_autofree char *kept_rel = g_strdup_printf("var/lib/vtpmd/kept/%s.key.xml", uuid);
    g_autofree char *kept = vt_host_path(host_name[A], kept_rel);
    g_autofree char *root = vt_host_path(host_name[A], "var/lib/libvirt/swtpm");
    g_autoptr(GBytes) body = vt_request("spawn", args("{'instance': %s}", in), "id-crash", 0);
    g_autoptr(vt_reply) r = NULL;
    g_autofree char *corr = send_killed_at("manufacture.after_state", body, mid), *I = NULL;

    /* The TPM is made and recorded; the domain is not defined. */
    if (!g_file_test(kept, G_FILE_TEST_EXISTS))
        fail_msg("after the crash: no record %s of the made TPM", kept);

    g_clear_pointer(&dmn[A], vt_vtpmd_free);
    host_start(A, NULL);
    r = vt_recv_reply(corr, OP_MS, "the redelivered spawn");
    if (!r->rep || !r->rep->ok)
        fail_msg("the redelivered spawn: %s", vt_reply_summary(r));
    /* Started on its deployment key: the TPM made before the crash. */
    I = identity_on(A, uuid, "after the crash");
    assert_verifiable(I, uuid, "2.0", both_eks, "after the crash");
    assert_not_manufactured_by_libvirt(A, uuid, "after the crash");
    if (g_file_test(kept, G_FILE_TEST_EXISTS))
        fail_msg("after the redelivered spawn: the record %s should be gone", kept);
    {
        g_autoptr(GDir) d = g_dir_open(root, 0, NULL);
        g_autofree char *prefix = g_strdup_printf(".%s.make", uuid);
        const char *n;

        while (d && (n = g_dir_read_name(d))) {
            if (g_str_has_prefix(n, prefix))
                fail_msg("a leftover %s/%s", root, n);
        }
    }
    destroy_on(A, uuid);
}

/* ---- 5b. a UEFI instance: its identity and its variable store together ------------------- */

/* The variable store of a UEFI instance with a vTPM, beside its TPM state
 * (docs/lifecycle.md). */
static char *
store_path(int h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/nvram.fd", uuid);

    return vt_host_path(host_name[h], rel);
}

/* The store's inode and sha256; it must exist. */
static ino_t
store_at(int h, const char *uuid, char **sha, const char *what)
{
    g_autofree char *p = store_path(h, uuid);
    g_autofree char *data = NULL;
    gsize len = 0;
    struct stat st;

    if (lstat(p, &st) < 0 || !g_file_get_contents(p, &data, &len, NULL))
        fail_msg("%s: no variable store %s on host %s", what, p, host_name[h]);
    if (sha)
        *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
    return st.st_ino;
}

static void
assert_same_store(int h, const char *uuid, ino_t ino, const char *what)
{
    if (store_at(h, uuid, NULL, what) != ino)
        fail_msg("%s: the variable store on host %s is another file: it should have followed "
                 "the TPM", what, host_name[h]);
}

/* Kill host a's vtpmd at crash point @point in a rebuild of @inst
 * (message id @mid, deadline @deadline_ms: 0 none), start it again (once
 * the deadline has passed) and take the redelivered reply. */
static vt_reply *
rebuild_killed_at(const char *point, const char *inst, const char *mid, uint64_t deadline_ms)
{
    g_autoptr(GBytes) body =
        vt_request("rebuild", args("{'instance': %s}", inst), mid, deadline_ms);
    g_autofree char *corr = send_killed_at(point, body, mid);

    g_clear_pointer(&dmn[A], vt_vtpmd_free);
    while (deadline_ms && (uint64_t)(g_get_real_time() / 1000) <= deadline_ms + 1000)
        g_usleep(200 * 1000);
    host_start(A, NULL);
    return vt_recv_reply(corr, OP_MS, "the redelivered rebuild");
}

/* A UEFI instance spawned where the EK CA is: its TPM is made before
 * libvirt makes the store from its template in the same state dir.  The
 * identity and the store stay through a power cycle and a rebuild keeping
 * the TPM; a rebuild to another TPM model (also when vtpmd is killed right
 * after making the new TPM, and the rebuild is redelivered) gives a new
 * identity and keeps the store (same firmware: it follows); a migration
 * a -> b carries both. */
static void
test_uefi(void **state)
{
    static const char specs[] = "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'";
    static const char uefi[] = "'hw_firmware_type': 'uefi'";
    static const char uefi_crb[] = "'hw_firmware_type': 'uefi', 'hw_tpm_model': 'tpm-crb'";
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, specs, "img-1", uefi);
    g_autofree char *kept = inst_json(uuid, specs, "img-2", uefi);
    g_autofree char *crb = inst_json(uuid, specs, "img-3", uefi_crb);
    g_autofree char *tis = inst_json(uuid, specs, "img-4", uefi);
    g_autofree char *fl = flavor_json(specs);
    g_autofree char *mid = g_strdup_printf("id-uefi-crash-%s", uuid);
    g_autofree char *I = NULL, *I2 = NULL, *I3 = NULL, *N = NULL, *x = NULL;
    ino_t ino;

    {
        g_autoptr(vt_reply) r = call_ok(A, "spawn", args("{'instance': %s}", in), "spawn on a");

        assert_result(r, "firmware.type", "uefi", "spawn on a");
    }
    I = identity_on(A, uuid, "spawn on a");
    assert_verifiable(I, uuid, "2.0", both_eks, "spawn on a");
    assert_not_manufactured_by_libvirt(A, uuid, "spawn on a");
    ok_free(A, "power_off", args("{'instance': {'uuid': '%s'}}", uuid), "power_off");
    ino = store_at(A, uuid, NULL, "spawn on a");
    ok_free(A, "power_on", args("{'instance': {'uuid': '%s'}}", uuid), "power_on");
    assert_same_identity(I, identity_on(A, uuid, "power cycle"), "power cycle");
    assert_same_store(A, uuid, ino, "power cycle");

    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args("{'instance': %s}", kept),
                                        "rebuild keeping the TPM");

        assert_result(r, "vtpm_state", "kept", "rebuild keeping the TPM");
        assert_result(r, "nvram_state", "kept", "rebuild keeping the TPM");
        assert_identity_changed(r, false, "rebuild keeping the TPM");
    }
    assert_same_identity(I, identity_on(A, uuid, "rebuild keeping the TPM"),
                         "rebuild keeping the TPM");
    assert_same_store(A, uuid, ino, "rebuild keeping the TPM");

    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args("{'instance': %s}", crb),
                                        "rebuild to tpm-crb");

        assert_result(r, "vtpm_state", "replaced", "rebuild to tpm-crb");
        assert_result(r, "nvram_state", "kept", "rebuild to tpm-crb");
        assert_identity_changed(r, true, "rebuild to tpm-crb");
    }
    I2 = identity_on(A, uuid, "rebuild to tpm-crb");
    assert_verifiable(I2, uuid, "2.0", both_eks, "rebuild to tpm-crb");
    if (strcmp(I, I2) == 0)
        fail_msg("rebuild to tpm-crb: the identity is the old TPM's");
    assert_same_store(A, uuid, ino, "rebuild to tpm-crb");
    assert_not_manufactured_by_libvirt(A, uuid, "rebuild to tpm-crb");

    {
        g_autoptr(vt_reply) r = rebuild_killed_at("manufacture.after_state", tis, mid, 0);

        if (!r->rep || !r->rep->ok)
            fail_msg("the redelivered rebuild to tpm-tis: %s", vt_reply_summary(r));
        assert_result(r, "vtpm_state", "replaced", "rebuild to tpm-tis, killed");
        assert_result(r, "nvram_state", "kept", "rebuild to tpm-tis, killed");
        assert_identity_changed(r, true, "rebuild to tpm-tis, killed");
    }
    I3 = identity_on(A, uuid, "rebuild to tpm-tis, killed");
    assert_verifiable(I3, uuid, "2.0", both_eks, "rebuild to tpm-tis, killed");
    if (strcmp(I3, I2) == 0 || strcmp(I3, I) == 0)
        fail_msg("rebuild to tpm-tis, killed: the identity is an old TPM's");
    assert_same_store(A, uuid, ino, "rebuild to tpm-tis, killed");
    assert_not_manufactured_by_libvirt(A, uuid, "rebuild to tpm-tis, killed");

    ok_free(A, "power_off", args("{'instance': {'uuid': '%s'}}", uuid), "power_off");
    store_at(A, uuid, &N, "before the migration");
    {
        g_autoptr(vt_reply) m = call_ok(A, "migrate_disk_and_power_off",
                                        args("{'instance': %s, 'dest_host': '%s'}", tis,
                                             host_addr[B]), "migrate a -> b");
        g_autoptr(vt_reply) f = NULL;
        g_autofree char *N_b = NULL;

        x = xfer_json(m, "vtpm_transfer");
        f = call_ok(B, "finish_migration",
                    args("{'instance': %s, 'old_flavor': %s, 'vtpm_transfer': %s, "
                         "'power_on': false}", tis, fl, x),
                    "finish_migration on b");
        assert_result(f, "vtpm_state", "restored", "finish_migration on b");
        assert_result(f, "nvram_state", "restored", "finish_migration on b");
        assert_identity_changed(f, false, "finish_migration on b");
        store_at(B, uuid, &N_b, "finish_migration on b");
        if (strcmp(N, N_b) != 0)
            fail_msg("finish_migration on b: the store has sha256 %s, on a it had %s", N_b, N);
    }
    ok_free(A, "confirm_migration", args("{'instance': {'uuid': '%s'}}", uuid), "confirm");
    assert_same_identity(I3, identity_on(B, uuid, "migration a -> b"), "migration a -> b");
    ok_free(B, "power_on", args("{'instance': {'uuid': '%s'}}", uuid), "power_on on b");
    assert_not_manufactured_by_libvirt(B, uuid, "migration a -> b");
    destroy_on(B, uuid);
}

/* A rebuild to another TPM killed after setting the TPM aside (@point:
 * before or after making the new one), whose redelivery comes after its
 * deadline (Expired: nothing done), then a rebuild that keeps the vTPM and
 * firmware of the definition in place: the instance gets its own TPM and
 * store back, not the TPM the abandoned run made, and nothing of that run
 * is left. */
static void
rebuild_abandoned_at(const char *point)
{
    static const char specs[] = "'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'";
    static const char uefi[] = "'hw_firmware_type': 'uefi'";
    static const char uefi_crb[] = "'hw_firmware_type': 'uefi', 'hw_tpm_model': 'tpm-crb'";
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, specs, "img-1", uefi);
    g_autofree char *crb = inst_json(uuid, specs, "img-2", uefi_crb);
    g_autofree char *again = inst_json(uuid, specs, "img-3", uefi);
    g_autofree char *mid = g_strdup_printf("id-abandoned-%s", uuid);
    g_autofree char *I = NULL, *N = NULL, *N2 = NULL;
    g_autofree char *replaced_rel = g_strdup_printf("var/lib/libvirt/swtpm/.%s.replaced", uuid);
    g_autofree char *replaced = vt_host_path(host_name[A], replaced_rel);

    g_autofree char *tpm_rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/tpm2", uuid);
    g_autofree char *tpm_dir = vt_host_path(host_name[A], tpm_rel);
    struct stat st;
    ino_t store_ino, tpm_ino;

    ok_free(A, "spawn", args("{'instance': %s}", in), "spawn on a");
    I = identity_on(A, uuid, "spawn on a");
    ok_free(A, "power_off", args("{'instance': {'uuid': '%s'}}", uuid), "power_off");
    /* The identity is the record in the definition and a firmware-only
     * guest's first boot writes the same variables into any new store:
     * that it is the same TPM and store shows in their files. */
    store_ino = store_at(A, uuid, &N, "spawn on a");
    if (lstat(tpm_dir, &st) < 0)
        fail_msg("spawn on a: no %s", tpm_dir);
    tpm_ino = st.st_ino;
    {
        uint64_t deadline = (uint64_t)(g_get_real_time() / 1000) + 30000;
        g_autoptr(vt_reply) r = rebuild_killed_at(point, crb, mid, deadline);

        vt_assert_fault(r, VTPM_FAULT_EXPIRED, "deadline", "the rebuild redelivered too late");
    }
    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args("{'instance': %s}", again),
                                        "a rebuild keeping the TPM after the abandoned one");

        assert_result(r, "vtpm_state", "kept", "the rebuild after the abandoned one");
        assert_result(r, "nvram_state", "kept", "the rebuild after the abandoned one");
        assert_identity_changed(r, false, "the rebuild after the abandoned one");
    }
    assert_same_identity(I, identity_on(A, uuid, "after the abandoned rebuild"),
                         "after the abandoned rebuild");
    if (g_file_test(replaced, G_FILE_TEST_EXISTS))
        fail_msg("after the rebuild: %s is left", replaced);
    ok_free(A, "power_off", args("{'instance': {'uuid': '%s'}}", uuid), "power_off");
    if (store_at(A, uuid, &N2, "after the abandoned rebuild") != store_ino)
        fail_msg("after the abandoned rebuild: the variable store is another file");
    if (lstat(tpm_dir, &st) < 0 || st.st_ino != tpm_ino)
        fail_msg("after the abandoned rebuild: %s is another TPM than the instance's", tpm_dir);
    if (strcmp(N, N2) != 0)
        fail_msg("after the abandoned rebuild: the store has sha256 %s, before it had %s", N2, N);
    ok_free(A, "power_on", args("{'instance': {'uuid': '%s'}}", uuid), "power_on");
    assert_same_identity(I, identity_on(A, uuid, "power cycle"), "power cycle");
    print_message("abandoned rebuild (killed at %s): the instance's TPM and store are back\n",
                  point);
    destroy_on(A, uuid);
}

static void
test_rebuild_abandoned(void **state)
{
    rebuild_abandoned_at("rebuild.after_set_aside");
    rebuild_abandoned_at("manufacture.after_state");
}

/* ---- 6. the CA key is checked at start ------------------------------------------------------------ */

static void
expect_refused_start(const char *key, const char *needle)
{
    g_autofree char *vtpm = vtpm_group(A, key);
    g_autofree char *tail = NULL;
    vt_config_opts o = host_opts(A, vtpm, &tail);
    g_autofree char *config = NULL, *log = NULL, *out = NULL;
    g_autoptr(vt_vtpmd) d = NULL;
    int code;

    o.worker_host = "id-refused";
    config = vt_config_write(&o);
    d = vt_vtpmd_spawn(host_name[A], config, o.worker_host, NULL);
    code = vt_vtpmd_wait_exit(d, OP_MS);
    log = vt_vtpmd_log(d);
    out = vt_vtpmd_output(d);
    if (code == 0 || code < 0 || (!strstr(log, needle) && !strstr(out, needle))) {
        vt_vtpmd_dump(d);
        fail_msg("vtpmd with ek_ca_key %s should refuse to start saying \"%s\" (exit %d)", key,
                 needle, code);
    }
}

static void
test_ca_key_checked_at_start(void **state)
{
    g_autofree char *key = tc_path(CA, "ca.key");
    g_autofree char *copy = g_strdup_printf("%s/id-ca-copy.key", vt_env("VT_ROOT"));
    g_autoptr(GBytes) k = tc_bytes(CA, "ca.key");
    g_autofree char *want = g_strdup_printf("%s has mode 0640; it must be 0600", copy);
    g_autofree char *want_open =
        g_strdup_printf("%s has mode 0644 and holds a private key ([vtpm] ek_ca_key)", copy);

    if (!g_file_set_contents(copy, g_bytes_get_data(k, NULL), g_bytes_get_size(k), NULL) ||
        chmod(copy, 0640) < 0)
        fail_msg("writing %s", copy);
    expect_refused_start(copy, want);
    assert_int_equal(chmod(copy, 0644), 0);
    expect_refused_start(copy, want_open);
    unlink(copy);
}

/* ---- 7. how long vtpmd takes to answer --------------------------------------------------- */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* A number after @key in @line ("duration_ms=" ...), or -1. */
static double
log_ms(const char *line, const char *key)
{
    const char *p = strstr(line, key);

    return p ? g_ascii_strtod(p + strlen(key), NULL) : -1;
}

/* @n (at most 5) spawns on host @h, started or not, and what vtpmd's log
 * says each took: the median and the largest duration_ms and helpers_ms. */
static void
spawn_time(int h, int n, bool power_on, const char *what)
{
    char *uuid[5];
    g_autoptr(GArray) dur = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) hlp = g_array_new(FALSE, FALSE, sizeof(double));
    g_autofree char *log = NULL;
    g_auto(GStrv) lines = NULL;

    for (int i = 0; i < n; i++) {
        g_autofree char *in = NULL;

        uuid[i] = vt_uuid();
        in = inst_json(uuid[i], "'hw:tpm_version': '2.0'", "img-1", "");
        ok_free(h, "spawn", args("{'instance': %s, 'power_on': %s}", in, power_on ? "true" : "false"),
                "spawn");
    }
    log = vt_vtpmd_log(dmn[h]);
    lines = g_strsplit(log, "\n", -1);
    for (int i = 0; i < n; i++) {
        g_autofree char *needle =
            g_strdup_printf("method=spawn instance=%s outcome=ok", uuid[i]);

        for (char **l = lines; *l; l++) {
            double d = log_ms(*l, " duration_ms="), x = log_ms(*l, " helpers_ms=");

            if (!strstr(*l, needle) || d < 0 || x < 0)
                continue;
            g_array_append_val(dur, d);
            g_array_append_val(hlp, x);
        }
        destroy_on(h, uuid[i]);
        g_free(uuid[i]);
    }
    if (dur->len != (guint)n)
        fail_msg("vtpmd logged %u of the %d spawns", dur->len, n);
    g_array_sort(dur, cmp_double);
    g_array_sort(hlp, cmp_double);
    print_message("[identity] spawn x%d (power_on %s) %s: duration_ms p50 %.1f max %.1f; of it "
                  "helpers_ms p50 %.1f max %.1f\n",
                  n, power_on ? "true" : "false", what, g_array_index(dur, double, n / 2),
                  g_array_index(dur, double, n - 1), g_array_index(hlp, double, n / 2),
                  g_array_index(hlp, double, n - 1));
}

/* What making the TPM costs a spawn (host a has the EK CA, b has none), and
 * get_vtpm_identity N times: what vtpmd's log says each took (duration_ms,
 * its own libvirt_ms), for docs/performance.md.  Printed, not asserted: the
 * suites make no timed assertions. */
static void
test_identity_time(void **state)
{
    enum { N = 200 };
    g_autofree char *uuid = vt_uuid();
    g_autofree char *in = inst_json(uuid, "'hw:tpm_version': '2.0'", "img-1", "");
    g_autofree char *log = NULL;
    g_autoptr(GArray) dur = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) lv = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) own = g_array_new(FALSE, FALSE, sizeof(double));
    g_auto(GStrv) lines = NULL;
    g_autofree char *needle = g_strdup_printf("method=get_vtpm_identity instance=%s outcome=ok",
                                              uuid);

    /* Without the CA libvirt makes the TPM at the first start; with it the
     * spawn does, and the start finds it made. */
    spawn_time(A, 5, false, "with the EK CA");
    spawn_time(B, 5, false, "without it");
    spawn_time(A, 3, true, "with the EK CA");
    spawn_time(B, 3, true, "without it");
    ok_free(A, "spawn", args("{'instance': %s, 'power_on': false}", in), "spawn");
    for (int i = 0; i < N; i++)
        g_free(identity_on(A, uuid, "get_vtpm_identity"));
    log = vt_vtpmd_log(dmn[A]);
    lines = g_strsplit(log, "\n", -1);
    for (char **l = lines; *l; l++) {
        double d = log_ms(*l, " duration_ms="), v = log_ms(*l, " libvirt_ms=");

        if (!strstr(*l, needle) || d < 0 || v < 0)
            continue;
        g_array_append_val(dur, d);
        g_array_append_val(lv, v);
        /* vtpmd's own time: what is not libvirt's (each rounded to 0.1). */
        d = MAX(0.0, d - v);
        g_array_append_val(own, d);
    }
    if (dur->len != N)
        fail_msg("vtpmd logged %u get_vtpm_identity requests, expected %d", dur->len, N);
    g_array_sort(dur, cmp_double);
    g_array_sort(lv, cmp_double);
    g_array_sort(own, cmp_double);
    print_message("[identity] get_vtpm_identity x%d, vtpmd's duration_ms: p50 %.1f p90 %.1f p99 "
                  "%.1f max %.1f; of it libvirt_ms p50 %.1f max %.1f; vtpmd's own p50 %.1f "
                  "p99 %.1f max %.1f\n",
                  N, g_array_index(dur, double, N / 2), g_array_index(dur, double, N * 9 / 10),
                  g_array_index(dur, double, N * 99 / 100), g_array_index(dur, double, N - 1),
                  g_array_index(lv, double, N / 2), g_array_index(lv, double, N - 1),
                  g_array_index(own, double, N / 2), g_array_index(own, double, N * 99 / 100),
                  g_array_index(own, double, N - 1));
    destroy_on(A, uuid);
}

/* ---- 8. both vtpmds stop cleanly --------------------------------------------------------------- */

/* SIGTERM: exit 0, and in the ASan+UBSan build no memory error or leak in
 * what made, recorded and answered the identities above. */
static void
test_clean_exit(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        if (!dmn[h])
            fail_msg("host %s has no vtpmd to stop", host_name[h]);
        vt_vtpmd_stop_ok(dmn[h]);
        g_clear_pointer(&dmn[h], vt_vtpmd_free);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_travels, test_teardown),
        cmocka_unit_test_teardown(test_live_migration, test_teardown),
        cmocka_unit_test_teardown(test_new_tpm, test_teardown),
        cmocka_unit_test_teardown(test_revert, test_teardown),
        cmocka_unit_test_teardown(test_host_local_ca, test_teardown),
        cmocka_unit_test_teardown(test_pcr_banks, test_teardown),
        cmocka_unit_test_teardown(test_crash_after_making, test_teardown),
        cmocka_unit_test_teardown(test_rebuild_abandoned, test_teardown),
        cmocka_unit_test_teardown(test_uefi, test_teardown),
        cmocka_unit_test_teardown(test_ca_key_checked_at_start, test_teardown),
        cmocka_unit_test_teardown(test_identity_time, test_teardown),
        cmocka_unit_test(test_clean_exit),
    };
    const char *missing = NULL;

    if (!vt_env_ready(&missing) || !g_getenv("VT_HOST_B_ADDR")) {
        fprintf(stderr, "test_vtpm_identity: %s is not set; run it through tests/integration.sh "
                        "--net --hosts 2 (skipped)\n", missing ? missing : "VT_HOST_B_ADDR");
        return 77;
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
