/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encryption at rest and key custody (docs/security.md), end to end: two
 * libvirt hosts "a" and "b" with addresses of their own (integration.sh
 * --net --hosts 2), one vtpmd on each, driven over the real broker, in each
 * secret security mode through spawn, cold migration a -> b, shelve on b /
 * unshelve on a, destroy, and the wrong-secret / wrong-key cases.
 *
 * How "no plaintext TPM state is stored" is proven.  The test decrypts the
 * instance's state file itself: it runs swtpm standalone on a copy with the
 * instance's key (user: the secret it sent; host: the libvirt secret's
 * value; deployment: the wrapped secret unwrapped with the deployment key
 * file) and reads the TPM's permanent state out of it (swtpm_ioctl --save
 * permanent, no migration key: plaintext).  Every 32-byte window of that
 * plaintext (at 16-byte steps, skipping low-entropy runs) is then searched
 * for in the stored bytes: the state file, the kept copy, the transfer
 * volume and the shelved archive.  A hit means plaintext TPM state on disk.
 * The same search over an unencrypted instance's state file (host b allows
 * them) must hit, so a zero is not a blind search.  swtpm must also refuse
 * the encrypted state without a key.
 *
 * Host a refuses user-mode TPMs without a secret ([vtpm] allow_unencrypted
 * false); host b allows them (for the control above).  Both offer every
 * mode and share deployment key 1.  VT_TEST_FILTER=<glob> runs some tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "keywrap.h"
#include "lib/harness.h"

enum { A = 0, B = 1, NHOSTS = 2 };

#define OP_MS 120000
#define WINDOW 32
#define STEP 16

static const char *const host_name[NHOSTS] = { "a", "b" };
static const char *host_addr[NHOSTS];
static vt_vtpmd *dmn[NHOSTS];
static char *key1, *key2; /* deployment key files */

/* ---- instances and args ------------------------------------------------------------------ */

typedef struct {
    const char *uuid;
    const char *mode; /* hw:tpm_secret_security */
} inst;

typedef struct {
    GBytes *secret;          /* instance.vtpm.secret, NULL: absent */
    const char *dest_host;   /* migrate */
    int power_on;            /* -1: absent */
    const char *old_mode;    /* finish_migration: old_flavor in this mode */
    const char *shelved_ref; /* unshelve */
    const char *shelved_sha;
    int force;               /* -1: absent */
    GBytes *new_secret;      /* rekey */
} opts;

#define NO_OPTS { .power_on = -1, .force = -1 }

static void
mp_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void
mp_flavor(msgpack_packer *pk, const char *mode)
{
    msgpack_pack_map(pk, 4);
    mp_str(pk, "name");
    mp_str(pk, mode);
    mp_str(pk, "vcpus");
    msgpack_pack_unsigned_int(pk, 1);
    mp_str(pk, "memory_mb");
    msgpack_pack_unsigned_int(pk, 64);
    mp_str(pk, "extra_specs");
    msgpack_pack_map(pk, 3);
    mp_str(pk, "hw:tpm_version");
    mp_str(pk, "2.0");
    mp_str(pk, "hw:tpm_model");
    mp_str(pk, "tpm-tis");
    mp_str(pk, "hw:tpm_secret_security");
    mp_str(pk, mode);
}

static GBytes *
mkargs(const inst *in, const opts *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    unsigned n = 1;
    GBytes *b;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    n += (o->dest_host != NULL) + (o->power_on >= 0) + (o->old_mode != NULL) +
         (o->shelved_ref != NULL) + (o->force >= 0) + (o->new_secret != NULL);
    msgpack_pack_map(&pk, n);
    mp_str(&pk, "instance");
    msgpack_pack_map(&pk, o->secret ? 5 : 4);
    mp_str(&pk, "uuid");
    mp_str(&pk, in->uuid);
    mp_str(&pk, "name");
    mp_str(&pk, "secrets");
    mp_str(&pk, "flavor");
    mp_flavor(&pk, in->mode);
    mp_str(&pk, "image");
    msgpack_pack_map(&pk, 1);
    mp_str(&pk, "id");
    mp_str(&pk, "img-1");
    if (o->secret) {
        gsize len;
        const void *d = g_bytes_get_data(o->secret, &len);

        mp_str(&pk, "vtpm");
        msgpack_pack_map(&pk, 1);
        mp_str(&pk, "secret");
        msgpack_pack_bin(&pk, len);
        msgpack_pack_bin_body(&pk, d, len);
    }
    if (o->dest_host) {
        mp_str(&pk, "dest_host");
        mp_str(&pk, o->dest_host);
    }
    if (o->power_on >= 0) {
        mp_str(&pk, "power_on");
        o->power_on ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    }
    if (o->old_mode) {
        mp_str(&pk, "old_flavor");
        mp_flavor(&pk, o->old_mode);
    }
    if (o->shelved_ref) {
        mp_str(&pk, "shelved");
        msgpack_pack_map(&pk, o->shelved_sha ? 2 : 1);
        mp_str(&pk, "ref");
        mp_str(&pk, o->shelved_ref);
        if (o->shelved_sha) {
            mp_str(&pk, "sha256");
            mp_str(&pk, o->shelved_sha);
        }
    }
    if (o->force >= 0) {
        mp_str(&pk, "force");
        o->force ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    }
    if (o->new_secret) {
        gsize len;
        const void *d = g_bytes_get_data(o->new_secret, &len);

        mp_str(&pk, "new_secret");
        msgpack_pack_bin(&pk, len);
        msgpack_pack_bin_body(&pk, d, len);
    }
    b = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return b;
}

static vt_reply *
call(int h, const char *method, const inst *in, const opts *o)
{
    g_autoptr(GBytes) args = mkargs(in, o);

    return vt_call(dmn[h], method, args, OP_MS);
}

static vt_reply *
call_ok(int h, const char *method, const inst *in, const opts *o, const char *what)
{
    vt_reply *r = call(h, method, in, o);

    if (!r->rep || !r->rep->ok) {
        g_autofree char *msg = g_strdup_printf("%s (%s on host %s): expected ok, got %s", what,
                                               method, host_name[h], vt_reply_summary(r));

        vt_reply_free(r);
        fail_msg("%s", msg);
    }
    return r;
}

static void
ok(int h, const char *method, const inst *in, const opts *o, const char *what)
{
    vt_reply_free(call_ok(h, method, in, o, what));
}

static void
fault(int h, const char *method, const inst *in, const opts *o, vtpm_fault code,
      const char *fragment, const char *what)
{
    g_autoptr(vt_reply) r = call(h, method, in, o);

    vt_assert_fault(r, code, fragment, what);
}

static GBytes *
secret_of(const char *s)
{
    return g_bytes_new(s, strlen(s));
}

/* ---- where things are on the hosts --------------------------------------------------------- */

static char *
p_state_dir(int h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/%s", uuid);

    return vt_host_path(host_name[h], rel);
}

static char *
p_state_file(int h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall", uuid);

    return vt_host_path(host_name[h], rel);
}

static char *
p_kept(int h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/vtpmd/kept/%s.tar", uuid);

    return vt_host_path(host_name[h], rel);
}

static char *
p_incoming(int h, const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/vtpmd/pools/vtpm-incoming/%s.vtpm.tar", uuid);

    return vt_host_path(host_name[h], rel);
}

/* The shelve store is host a's libvirtd ([store] uri of both vtpmds). */
static char *
p_shelved(const char *uuid)
{
    g_autofree char *rel = g_strdup_printf("var/lib/vtpmd/pools/vtpm-shelved/%s.vtpm.tar", uuid);

    return vt_host_path("a", rel);
}

static GBytes *
read_file(const char *path)
{
    char *data = NULL;
    gsize len = 0;
    g_autoptr(GError) gerr = NULL;

    if (!g_file_get_contents(path, &data, &len, &gerr))
        fail_msg("reading %s: %s", path, gerr->message);
    return g_bytes_new_take(data, len);
}

static bool
exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static char *
dom_xml(int h, const char *uuid)
{
    g_autofree char *n = g_strdup_printf("instance-%s", uuid);
    char *out = NULL;

    if (vt_virsh(host_name[h], &out, "dumpxml", n, "--inactive", NULL) != 0)
        fail_msg("virsh dumpxml %s on host %s failed", n, host_name[h]);
    return out;
}

static bool
dom_exists(int h, const char *uuid)
{
    g_autofree char *n = g_strdup_printf("instance-%s", uuid);

    return vt_virsh(host_name[h], NULL, "dominfo", n, NULL) == 0;
}

static char *
dom_state(int h, const char *uuid)
{
    return vt_dom_state(host_name[h], uuid);
}

static void
assert_dom_state(int h, const char *uuid, const char *want, const char *what)
{
    g_autofree char *st = dom_state(h, uuid);

    if (strcmp(st, want) != 0)
        fail_msg("%s: domain %s on host %s should be \"%s\", is \"%s\"", what, uuid,
                 host_name[h], want, st);
}

/* Whether `virsh secret-list` of host @h lists the instance's secret. */
static bool
has_secret(int h, const char *uuid)
{
    return vt_host_has_secret(host_name[h], uuid);
}

static void
assert_secret(int h, const char *uuid, bool want, const char *what)
{
    if (has_secret(h, uuid) != want)
        fail_msg("%s: host %s should %shave a libvirt secret for %s (virsh secret-list)", what,
                 host_name[h], want ? "" : "not ", uuid);
}

static GBytes *
host_secret_value(int h, const char *uuid)
{
    return vt_host_secret_value(host_name[h], uuid);
}

static void
assert_sha(const char *path, const char *want, const char *what)
{
    g_autofree char *sha = vt_sha256_file(path);

    if (g_strcmp0(sha, want) != 0)
        fail_msg("%s: %s changed (sha256 %s, expected %s)", what, path, sha ? sha : "none",
                 want);
}

/* ---- decrypting and searching ------------------------------------------------------------- */

static GBytes *
decrypt_state(const char *dir, GBytes *secret)
{
    return vt_tpm_plaintext(dir, secret);
}

/* How many eligible windows of @plain occur in @hay; *total gets how many
 * windows were eligible: at least 12 distinct byte values (no padding) and
 * not all printable ASCII.  Text is left out because the TPM holds public
 * identifiers that other stored files carry too: swtpm_setup writes the
 * EK certificate for "instance-<uuid>", which the domain XML in an archive
 * also names.  32 random bytes are all printable with odds of 1 in 2^56. */
static bool
all_printable(const guint8 *p)
{
    for (gsize i = 0; i < WINDOW; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    }
    return true;
}

static unsigned
leaks(GBytes *plain, GBytes *hay, unsigned *total)
{
    gsize plen, hlen;
    const guint8 *p = g_bytes_get_data(plain, &plen);
    const guint8 *h = g_bytes_get_data(hay, &hlen);
    unsigned found = 0, n = 0;

    for (gsize off = 0; off + WINDOW <= plen; off += STEP) {
        bool seen[256] = { false };
        unsigned distinct = 0;

        for (gsize i = 0; i < WINDOW; i++) {
            if (!seen[p[off + i]]) {
                seen[p[off + i]] = true;
                distinct++;
            }
        }
        if (distinct < 12 || all_printable(p + off))
            continue;
        n++;
        if (memmem(h, hlen, p + off, WINDOW))
            found++;
    }
    if (total)
        *total = n;
    return found;
}

/* None of @plain in the file at @path. */
static void
assert_no_plaintext(GBytes *plain, const char *path, const char *what)
{
    g_autoptr(GBytes) hay = read_file(path);
    unsigned total = 0, hit = leaks(plain, hay, &total);

    if (total < 32)
        fail_msg("%s: only %u searchable windows in the plaintext state", what, total);
    if (hit)
        fail_msg("%s: %u of %u plaintext TPM state windows found in %s", what, hit, total, path);
    print_message("%s: 0 of %u plaintext windows in %s\n", what, total, path);
}

/* The TPM's plaintext, decrypting state dir of @uuid on @h with @key;
 * also checks swtpm refuses it without a key. */
static GBytes *
plaintext_of(int h, const char *uuid, GBytes *key, const char *what)
{
    g_autofree char *dir = p_state_dir(h, uuid);
    g_autoptr(GBytes) nokey = decrypt_state(dir, NULL);
    GBytes *plain = decrypt_state(dir, key);

    if (nokey)
        fail_msg("%s: swtpm opened the state of %s on host %s without a key: not encrypted",
                 what, uuid, host_name[h]);
    if (!plain)
        fail_msg("%s: swtpm could not open the state of %s on host %s with its key", what, uuid,
                 host_name[h]);
    return plain;
}

/* The libvirt secret must not outlive a user/deployment start. */
static void
assert_encrypted_domain(int h, const char *uuid, const char *what)
{
    g_autofree char *xml = dom_xml(h, uuid);
    g_autofree char *want = g_strdup_printf("<encryption secret='%s'/>", uuid);

    if (!strstr(xml, want))
        fail_msg("%s: the domain on host %s has no %s:\n%s", what, host_name[h], want, xml);
}

static char *
wrapped_of(int h, const char *uuid)
{
    g_autofree char *xml = dom_xml(h, uuid);
    const char *p = strstr(xml, "wrapped_secret=\"");
    const char *e;

    if (!p)
        fail_msg("domain %s on host %s has no wrapped_secret:\n%s", uuid, host_name[h], xml);
    p += strlen("wrapped_secret=\"");
    e = strchr(p, '"');
    return g_strndup(p, e - p);
}

/* ---- vtpmds ------------------------------------------------------------------------------------ */

static void
host_start_env(int h, const char *key, const char *prev_key, const char *const *env)
{
    g_autofree char *lx = g_strdup("shutdown_timeout = 3\nmigration_uri_template = qemu+tcp://%s/system");
    g_autofree char *tail = g_strdup_printf("[store]\nuri = qemu+tcp://%s/system", host_addr[A]);
    g_autofree char *vx = g_strdup_printf("supported_secret_security = user;host;deployment\n"
                                          "deployment_key_file = %s%s%s",
                                          key, prev_key ? "\nprevious_deployment_key_file = " : "",
                                          prev_key ? prev_key : "");
    vt_config_opts o = { .worker_host = host_addr[h], .libvirt_extra = lx, .vtpm_extra = vx,
                         .require_secret = h == A, .tail = tail };

    dmn[h] = vt_vtpmd_start(host_name[h], &o, env);
}

static void
host_start(int h, const char *key, const char *prev_key)
{
    host_start_env(h, key, prev_key, NULL);
}

static void
host_stop(int h)
{
    if (dmn[h] && vt_vtpmd_running(dmn[h]))
        vt_vtpmd_term(dmn[h], 30000);
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
}

static char *
make_key(const char *name)
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

static int
group_setup(void **state)
{
    host_addr[A] = vt_env("VT_HOST_A_ADDR");
    host_addr[B] = vt_env("VT_HOST_B_ADDR");
    key1 = make_key("deployment-1.key");
    key2 = make_key("deployment-2.key");
    host_start(A, key1, NULL);
    host_start(B, key1, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        vt_virsh_cleanup(host_name[h]);
        host_stop(h);
    }
    vt_client_drop();
    g_free(key1);
    g_free(key2);
    return 0;
}

static int
test_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        vt_virsh_cleanup(host_name[h]);
        /* A test that failed between a crash and the restart must not
         * leave the next one without a vtpmd. */
        if (!dmn[h] || !vt_vtpmd_running(dmn[h])) {
            host_stop(h);
            host_start(h, key1, NULL);
        }
    }
    return 0;
}

/* ---- common steps ------------------------------------------------------------------------------- */

/* power_off on @h; the sha256 of the quiescent state file. */
static char *
off_sha(int h, const inst *in, const char *what)
{
    opts o = NO_OPTS;
    g_autofree char *sf = p_state_file(h, in->uuid);

    ok(h, "power_off", in, &o, what);
    assert_dom_state(h, in->uuid, "shut off", what);
    return vt_sha256_file(sf);
}

/* migrate a -> b; the kept copy and transfer volume hold no plaintext.
 * Returns nothing; leaves b with the incoming volume. */
static void
migrate_ab(const inst *in, GBytes *plain, const char *what)
{
    opts o = NO_OPTS;
    g_autofree char *kept = p_kept(A, in->uuid);
    g_autofree char *inc = p_incoming(B, in->uuid);

    o.dest_host = host_addr[B];
    ok(A, "migrate_disk_and_power_off", in, &o, what);
    assert_no_plaintext(plain, kept, what);
    assert_no_plaintext(plain, inc, what);
}

/* shelve on @h (offload); returns the shelved ref, checks no plaintext. */
static char *
shelve_on(int h, const inst *in, GBytes *plain, char **sha, const char *what)
{
    opts o = NO_OPTS;
    g_autoptr(vt_reply) r = call_ok(h, "shelve", in, &o, what);
    g_autofree char *vol = p_shelved(in->uuid);
    char *ref = vt_obj_str(&r->rep->result, "shelved.ref");

    *sha = vt_obj_str(&r->rep->result, "shelved.sha256");
    if (!ref || !*sha)
        fail_msg("%s: shelve result has no shelved.ref / sha256", what);
    assert_no_plaintext(plain, vol, what);
    if (dom_exists(h, in->uuid))
        fail_msg("%s: the domain should be offloaded from host %s", what, host_name[h]);
    return ref;
}

static void
destroy_on(int h, const char *uuid, const char *what)
{
    g_autoptr(vt_reply) r = vt_call(dmn[h], "destroy", vt_args_destroy(uuid, -1), OP_MS);
    g_autofree char *sd = p_state_dir(h, uuid);

    vt_assert_ok(r, what);
    if (dom_exists(h, uuid) || exists(sd))
        fail_msg("%s: domain or state of %s still on host %s", what, uuid, host_name[h]);
    assert_secret(h, uuid, false, what);
}

/* ---- user mode ---------------------------------------------------------------------------------- */

static void
test_user_mode(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "user" };
    g_autoptr(GBytes) s1 = secret_of("correct horse battery staple");
    g_autoptr(GBytes) s2 = secret_of("correct horse battery stapler");
    g_autoptr(GBytes) plain = NULL;
    g_autofree char *S = NULL, *sf_a = p_state_file(A, uuid), *sf_b = p_state_file(B, uuid);
    g_autofree char *ref = NULL, *ssha = NULL, *vol = p_shelved(uuid);
    opts o = NO_OPTS, os1 = NO_OPTS, os2 = NO_OPTS;

    os1.secret = s1;
    os2.secret = s2;

    /* Nova's rule: no secret, no vTPM; nothing is left behind. */
    fault(A, "spawn", &in, &o, VTPM_FAULT_SECRET_REQUIRED, "args.instance.vtpm.secret",
          "spawn in user mode without a secret");
    if (dom_exists(A, uuid))
        fail_msg("a refused spawn left a domain");

    ok(A, "spawn", &in, &os1, "spawn in user mode");
    assert_dom_state(A, uuid, "running", "spawn in user mode");
    assert_encrypted_domain(A, uuid, "spawn in user mode");
    assert_secret(A, uuid, false, "user mode: the ephemeral secret is gone after the start");
    S = off_sha(A, &in, "power_off");
    plain = plaintext_of(A, uuid, s1, "user mode state on a");
    assert_no_plaintext(plain, sf_a, "user mode state file on a");

    /* Starting needs the secret, and the right one; the state stays. */
    fault(A, "power_on", &in, &o, VTPM_FAULT_SECRET_REQUIRED, "secret", "power_on, no secret");
    fault(A, "power_on", &in, &os2, VTPM_FAULT_SECRET_INVALID, "does not decrypt",
          "power_on, wrong secret");
    assert_sha(sf_a, S, "state after power_on with a wrong secret");
    assert_dom_state(A, uuid, "shut off", "power_on with a wrong secret");
    assert_secret(A, uuid, false, "after a failed start");
    ok(A, "power_on", &in, &os1, "power_on with the secret");
    g_free(S);
    S = off_sha(A, &in, "power_off again");

    /* Cold migration a -> b: restored off, then started with the secret. */
    migrate_ab(&in, plain, "user: migrate a -> b");
    os1.old_mode = "user";
    os1.power_on = 0;
    ok(B, "finish_migration", &in, &os1, "user: finish_migration on b");
    assert_sha(sf_b, S, "user: state on b after finish_migration");
    os1.old_mode = NULL;
    os1.power_on = -1;
    fault(B, "power_on", &in, &o, VTPM_FAULT_SECRET_REQUIRED, "secret", "power_on on b, no secret");
    ok(B, "power_on", &in, &os1, "power_on on b");
    ok(A, "confirm_migration", &in, &o, "confirm on a");
    assert_secret(B, uuid, false, "user mode on b: no secret stays");

    /* Shelve on b, unshelve on a: a wrong secret fails clearly and the
     * archive stays in the store untouched; the right one completes. */
    ref = shelve_on(B, &in, plain, &ssha, "user: shelve on b");
    os2.shelved_ref = ref;
    os2.shelved_sha = ssha;
    fault(A, "unshelve", &in, &os2, VTPM_FAULT_SECRET_INVALID, "does not decrypt",
          "unshelve with a wrong secret");
    assert_sha(vol, ssha, "shelved archive after a failed unshelve");
    os1.shelved_ref = ref;
    os1.shelved_sha = ssha;
    ok(A, "unshelve", &in, &os1, "unshelve on a");
    assert_dom_state(A, uuid, "running", "unshelve on a");
    if (exists(vol))
        fail_msg("the shelved archive should be gone after the unshelve");

    destroy_on(A, uuid, "user: destroy");
}

/* ---- host mode ---------------------------------------------------------------------------------- */

static void
test_host_mode(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "host" };
    g_autoptr(GBytes) key = NULL, plain = NULL, key_b = NULL;
    g_autofree char *S = NULL, *sf_a = p_state_file(A, uuid), *sf_b = p_state_file(B, uuid);
    g_autofree char *ref = NULL, *ssha = NULL;
    opts o = NO_OPTS;

    ok(A, "spawn", &in, &o, "spawn in host mode");
    assert_encrypted_domain(A, uuid, "spawn in host mode");
    assert_secret(A, uuid, true, "host mode: a keeps a persistent secret");
    S = off_sha(A, &in, "power_off");
    key = host_secret_value(A, uuid);
    plain = plaintext_of(A, uuid, key, "host mode state on a");
    assert_no_plaintext(plain, sf_a, "host mode state file on a");

    /* The source hands the key to the destination's libvirt. */
    migrate_ab(&in, plain, "host: migrate a -> b");
    assert_secret(B, uuid, true, "host: b has the secret after migrate_disk_and_power_off");
    key_b = host_secret_value(B, uuid);
    if (!g_bytes_equal(key, key_b))
        fail_msg("host: b's secret differs from a's");
    o.old_mode = "host";
    o.power_on = 0;
    ok(B, "finish_migration", &in, &o, "host: finish_migration on b");
    assert_sha(sf_b, S, "host: state on b");
    o.old_mode = NULL;
    o.power_on = -1;
    ok(B, "power_on", &in, &o, "host: power_on on b, no caller secret");
    ok(A, "confirm_migration", &in, &o, "host: confirm on a");
    assert_secret(A, uuid, false, "host: a's secret goes with confirm_migration");

    /* Shelve keeps the key on b; unshelve on a fetches it and b's copy
     * goes once the TPM runs on a. */
    ref = shelve_on(B, &in, plain, &ssha, "host: shelve on b");
    assert_secret(B, uuid, true, "host: the secret stays on the shelving host");
    o.shelved_ref = ref;
    o.shelved_sha = ssha;
    ok(A, "unshelve", &in, &o, "host: unshelve on a");
    assert_dom_state(A, uuid, "running", "host: unshelve on a");
    assert_secret(A, uuid, true, "host: a fetched the secret");
    assert_secret(B, uuid, false, "host: b's secret removed after the unshelve elsewhere");

    destroy_on(A, uuid, "host: destroy");
}

/* ---- deployment mode ------------------------------------------------------------------------- */

static GBytes *
unwrap_with(const char *keyfile, const char *uuid, const char *wrapped)
{
    g_autoptr(vtpm_keyring) kr = NULL;
    vtpm_error err = { 0 };
    GBytes *s = NULL;

    if (vtpm_keyring_load(keyfile, NULL, &kr, &err) < 0 ||
        vtpm_keyring_unwrap(kr, uuid, wrapped, &s, NULL, &err) < 0)
        fail_msg("unwrapping the secret of %s: %s", uuid, err.message);
    return s;
}

static void
test_deployment_mode(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "deployment" };
    inst as_user = { uuid, "user" };
    g_autoptr(GBytes) key = NULL, plain = NULL, s1 = secret_of("some user secret");
    g_autofree char *S = NULL, *sf_a = p_state_file(A, uuid), *sf_b = p_state_file(B, uuid);
    g_autofree char *ref = NULL, *ssha = NULL, *wrapped = NULL, *wrapped2 = NULL;
    g_autofree char *vol = p_shelved(uuid), *inc = p_incoming(B, uuid), *inc_sha = NULL;
    g_autoptr(vtpm_keyring) kr2 = NULL;
    vtpm_error err = { 0 };
    opts o = NO_OPTS;

    ok(A, "spawn", &in, &o, "spawn in deployment mode");
    assert_encrypted_domain(A, uuid, "spawn in deployment mode");
    assert_secret(A, uuid, false, "deployment: no libvirt secret after the start");
    wrapped = wrapped_of(A, uuid);
    S = off_sha(A, &in, "power_off");
    key = unwrap_with(key1, uuid, wrapped);
    plain = plaintext_of(A, uuid, key, "deployment mode state on a");
    assert_no_plaintext(plain, sf_a, "deployment mode state file on a");

    migrate_ab(&in, plain, "deployment: migrate a -> b");
    /* Mode changes to or from deployment are refused (as Nova), and the
     * incoming state is left as it was. */
    inc_sha = vt_sha256_file(inc);
    {
        opts u = NO_OPTS;

        u.secret = s1;
        u.old_mode = "deployment";
        u.power_on = 0;
        fault(B, "finish_migration", &as_user, &u, VTPM_FAULT_INVALID_TPM_CONFIG,
              "cannot change from 'deployment' to 'user'", "resize deployment -> user");
        assert_sha(inc, inc_sha, "incoming volume after a refused mode change");
    }
    o.old_mode = "deployment";
    o.power_on = 0;
    ok(B, "finish_migration", &in, &o, "deployment: finish_migration on b");
    assert_sha(sf_b, S, "deployment: state on b");
    o.old_mode = NULL;
    o.power_on = -1;
    ok(B, "power_on", &in, &o, "deployment: power_on on b, no caller involvement");
    ok(A, "confirm_migration", &in, &o, "deployment: confirm on a");

    ref = shelve_on(B, &in, plain, &ssha, "deployment: shelve on b");
    {
        g_autoptr(GBytes) arch = read_file(vol);

        if (!memmem(g_bytes_get_data(arch, NULL), g_bytes_get_size(arch), "wrapped_secret", 14))
            fail_msg("deployment: the shelved archive's manifest carries no wrapped_secret");
    }

    /* A host with another deployment key cannot open it: clear fault,
     * archive untouched, nothing defined. */
    host_stop(B);
    host_start(B, key2, NULL);
    o.shelved_ref = ref;
    o.shelved_sha = ssha;
    fault(B, "unshelve", &in, &o, VTPM_FAULT_SECRET_INVALID, "deployment key",
          "unshelve with the wrong deployment key");
    assert_sha(vol, ssha, "shelved archive after the wrong key");
    if (dom_exists(B, uuid))
        fail_msg("unshelve with the wrong key defined a domain");

    /* Rotation: key 2 wraps, key 1 still unwraps; the unshelved domain's
     * secret is re-wrapped under key 2. */
    host_stop(B);
    host_start(B, key2, key1);
    ok(B, "unshelve", &in, &o, "unshelve after key rotation");
    assert_dom_state(B, uuid, "running", "unshelve after key rotation");
    wrapped2 = wrapped_of(B, uuid);
    if (vtpm_keyring_load(key2, NULL, &kr2, &err) < 0)
        fail_msg("%s", err.message);
    if (!g_str_has_prefix(wrapped2 + 3, vtpm_keyring_current_id(kr2)))
        fail_msg("after rotation the secret should be wrapped under key 2 (%s): %s",
                 vtpm_keyring_current_id(kr2), wrapped2);
    destroy_on(B, uuid, "deployment: destroy");
    host_stop(B);
    host_start(B, key1, NULL);
}

/* ---- mode changes: user -> host allowed, host -> user refused --------------------------------- */

/* docs/security.md "Mode changes": a resize from user to host works, the
 * host keeping the caller's secret; host -> user is refused
 * (InvalidTPMConfig) by finish_migration, rebuild and unshelve, each
 * leaving everything as it was (the caller does not know the host's key). */
static void
test_mode_change(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst as_user = { uuid, "user" }, as_host = { uuid, "host" };
    g_autoptr(GBytes) s1 = secret_of("mode change: the user's passphrase");
    g_autoptr(GBytes) plain = NULL, key_b = NULL;
    g_autofree char *S = NULL, *sf_a = p_state_file(A, uuid), *sf_b = p_state_file(B, uuid);
    g_autofree char *inc_a = p_incoming(A, uuid), *inc_sha = NULL, *vol = p_shelved(uuid);
    g_autofree char *ref = NULL, *ssha = NULL, *xml0 = NULL, *xml1 = NULL, *S_b = NULL;
    opts o = NO_OPTS, ou = NO_OPTS;

    ou.secret = s1;
    ok(A, "spawn", &as_user, &ou, "mode change: spawn in user mode");
    S = off_sha(A, &as_user, "mode change: power_off");
    plain = plaintext_of(A, uuid, s1, "mode change: user mode state");

    /* user -> host, a resize a -> b: b keeps the caller's secret as the
     * host's, and the TPM starts there without a caller secret. */
    migrate_ab(&as_user, plain, "user -> host: migrate a -> b");
    {
        opts f = NO_OPTS;

        f.secret = s1;
        f.old_mode = "user";
        f.power_on = 0;
        ok(B, "finish_migration", &as_host, &f, "user -> host: finish_migration on b");
    }
    assert_sha(sf_b, S, "user -> host: the state on b");
    assert_secret(B, uuid, true, "user -> host: b holds the secret");
    key_b = host_secret_value(B, uuid);
    if (!g_bytes_equal(key_b, s1))
        fail_msg("user -> host: b's secret should be the caller's passphrase");
    ok(B, "power_on", &as_host, &o, "user -> host: power_on on b, no caller secret");
    assert_dom_state(B, uuid, "running", "user -> host: power_on on b");
    ok(A, "confirm_migration", &as_user, &o, "user -> host: confirm on a");
    S_b = off_sha(B, &as_host, "host mode on b: power_off");

    /* host -> user by rebuild: refused, the domain and state as they were. */
    xml0 = dom_xml(B, uuid);
    {
        opts r = NO_OPTS;

        r.secret = s1;
        fault(B, "rebuild", &as_user, &r, VTPM_FAULT_INVALID_TPM_CONFIG,
              "cannot change from 'host' to 'user'", "host -> user: rebuild");
    }
    xml1 = dom_xml(B, uuid);
    if (strcmp(xml0, xml1) != 0)
        fail_msg("host -> user: the refused rebuild changed the domain:\n%s\n--- now ---\n%s",
                 xml0, xml1);
    assert_sha(sf_b, S_b, "host -> user: the state after the refused rebuild");
    assert_dom_state(B, uuid, "shut off", "host -> user: the refused rebuild");

    /* host -> user by a resize b -> a: refused, the incoming volume stays;
     * the same resize in host mode then completes. */
    {
        opts m = NO_OPTS, f = NO_OPTS;

        m.dest_host = host_addr[A];
        ok(B, "migrate_disk_and_power_off", &as_host, &m, "host -> user: migrate b -> a");
        inc_sha = vt_sha256_file(inc_a);
        f.secret = s1;
        f.old_mode = "host";
        f.power_on = 0;
        fault(A, "finish_migration", &as_user, &f, VTPM_FAULT_INVALID_TPM_CONFIG,
              "cannot change from 'host' to 'user'", "host -> user: finish_migration on a");
        assert_sha(inc_a, inc_sha, "host -> user: the incoming volume after the refusal");
        if (dom_exists(A, uuid))
            fail_msg("host -> user: the refused finish_migration defined a domain on a");
        f.secret = NULL;
        ok(A, "finish_migration", &as_host, &f, "host -> host: finish_migration on a");
        assert_sha(sf_a, S_b, "host -> host: the state on a");
        ok(B, "confirm_migration", &as_host, &o, "host -> host: confirm on b");
    }

    /* host -> user by unshelve: refused, the archive stays in the store. */
    ref = shelve_on(A, &as_host, plain, &ssha, "host mode: shelve on a");
    {
        opts u = NO_OPTS;

        u.secret = s1;
        u.shelved_ref = ref;
        u.shelved_sha = ssha;
        fault(B, "unshelve", &as_user, &u, VTPM_FAULT_INVALID_TPM_CONFIG,
              "cannot change from 'host' to 'user'", "host -> user: unshelve on b");
        assert_sha(vol, ssha, "host -> user: the archive after the refused unshelve");
        if (dom_exists(B, uuid))
            fail_msg("host -> user: the refused unshelve defined a domain on b");
        u.secret = NULL;
        u.power_on = 0;
        ok(B, "unshelve", &as_host, &u, "host -> host: unshelve on b");
        assert_sha(sf_b, S_b, "host -> host: the state unshelved on b");
    }
    destroy_on(B, uuid, "mode change: destroy");
}

/* ---- rekey ------------------------------------------------------------------------------------ */

/* rekey on a; checks the reply and that nothing of the work is left. */
static void
rekey_ok(const inst *in, const opts *o, bool restarted, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(A, "rekey", in, o, what);
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/.%s.rekey", in->uuid);
    g_autofree char *work = vt_host_path("a", rel);
    g_autofree char *sf = p_state_file(A, in->uuid);
    g_autofree char *mode = vt_obj_str(&r->rep->result, "secret_security");
    g_autofree char *want = g_strdup_printf("{rekeyed: true, secret_security: %s, restarted: %s}",
                                            in->mode, restarted ? "true" : "false");
    struct stat st;

    if (!vt_obj_bool(&r->rep->result, "rekeyed") ||
        vt_obj_bool(&r->rep->result, "restarted") != restarted || g_strcmp0(mode, in->mode) != 0)
        fail_msg("%s: expected %s, got %s", what, want, vt_reply_summary(r));
    if (exists(work))
        fail_msg("%s: %s left behind", what, work);
    /* As libvirt keeps it: the state file is swtpm's, 0600. */
    if (stat(sf, &st) < 0 || (st.st_mode & 07777) != 0600 || st.st_uid == 0)
        fail_msg("%s: %s should be the swtpm user's, mode 0600", what, sf);
    assert_dom_state(A, in->uuid, restarted ? "running" : "shut off", what);
}

/* The state was re-encrypted: @old no longer opens it, @new does, and the
 * TPM inside is byte for byte the one before (@plain, transferred). */
static void
assert_rekeyed(const char *uuid, GBytes *old, GBytes *new, GBytes *plain, const char *what)
{
    g_autofree char *dir = p_state_dir(A, uuid);
    g_autoptr(GBytes) by_old = decrypt_state(dir, old);
    g_autoptr(GBytes) by_new = plaintext_of(A, uuid, new, what);
    g_autoptr(GBytes) want = vt_tpm_transferred(plain);

    if (by_old)
        fail_msg("%s: the old key still opens the state", what);
    if (!g_bytes_equal(by_new, want))
        fail_msg("%s: the TPM changed (%zu bytes before, %zu after, %zu differ; %zu differ "
                 "from the state before the transfer)", what, g_bytes_get_size(want),
                 g_bytes_get_size(by_new), vt_bytes_differing(want, by_new), vt_bytes_differing(plain, by_new));
}

/* The key of @uuid on a as the mode stores it (user: @user_secret). */
static GBytes *
key_now(const char *mode, const char *uuid, GBytes *user_secret)
{
    g_autofree char *wrapped = NULL;

    if (strcmp(mode, "user") == 0)
        return g_bytes_ref(user_secret);
    if (strcmp(mode, "host") == 0)
        return host_secret_value(A, uuid);
    wrapped = wrapped_of(A, uuid);
    return unwrap_with(key1, uuid, wrapped);
}

static void
test_rekey(void **state)
{
    static const char *const modes[] = { "user", "host", "deployment" };

    /* Refusals that need no running TPM. */
    {
        g_autofree char *u1 = vt_uuid(), *u2 = vt_uuid(), *u3 = vt_uuid();
        inst missing = { u1, "host" }, plain_tpm = { u2, "user" }, unborn = { u3, "host" };
        opts o = NO_OPTS;

        fault(A, "rekey", &missing, &o, VTPM_FAULT_INSTANCE_NOT_FOUND, u1,
              "rekey of an unknown instance");
        /* Host b allows plaintext user-mode TPMs: nothing to re-encrypt. */
        o.power_on = 0;
        ok(B, "spawn", &plain_tpm, &o, "spawn a plaintext TPM on b");
        o.power_on = -1;
        o.new_secret = secret_of("rekey: a new passphrase");
        fault(B, "rekey", &plain_tpm, &o, VTPM_FAULT_INVALID_TPM_CONFIG, "not encrypted",
              "rekey of a plaintext TPM");
        g_clear_pointer(&o.new_secret, g_bytes_unref);
        destroy_on(B, u2, "rekey: destroy the plaintext TPM");
        /* Never started: no state yet. */
        o.power_on = 0;
        ok(A, "spawn", &unborn, &o, "spawn without starting");
        o.power_on = -1;
        fault(A, "rekey", &unborn, &o, VTPM_FAULT_STATE_NOT_FOUND, "never started",
              "rekey before the first start");
        destroy_on(A, u3, "rekey: destroy the unstarted instance");
    }

    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        g_autofree char *uuid = vt_uuid();
        g_autofree char *sf = p_state_file(A, uuid);
        g_autofree char *S = NULL, *what = NULL;
        inst in = { uuid, modes[i] };
        bool user = i == 0;
        g_autoptr(GBytes) s1 = secret_of("rekey: first passphrase");
        g_autoptr(GBytes) s2 = secret_of("rekey: second passphrase");
        g_autoptr(GBytes) s3 = secret_of("rekey: third passphrase");
        g_autoptr(GBytes) k0 = NULL, k1 = NULL, plain = NULL;
        opts o = NO_OPTS;

        what = g_strdup_printf("rekey, %s mode", modes[i]);
        o.secret = user ? s1 : NULL;
        ok(A, "spawn", &in, &o, what);
        S = off_sha(A, &in, what);
        k0 = key_now(modes[i], uuid, s1);
        plain = plaintext_of(A, uuid, k0, what);

        /* Refusals change nothing. */
        if (user) {
            opts bad = NO_OPTS;

            bad.secret = s1;
            fault(A, "rekey", &in, &bad, VTPM_FAULT_SECRET_REQUIRED, "args.new_secret",
                  "rekey in user mode without a new secret");
            bad.secret = NULL;
            bad.new_secret = s2;
            fault(A, "rekey", &in, &bad, VTPM_FAULT_SECRET_REQUIRED, "current passphrase",
                  "rekey in user mode without the current secret");
            bad.secret = s3;
            fault(A, "rekey", &in, &bad, VTPM_FAULT_SECRET_INVALID, "does not decrypt",
                  "rekey with a wrong current secret");
        } else {
            opts bad = NO_OPTS;

            bad.new_secret = s2;
            fault(A, "rekey", &in, &bad, VTPM_FAULT_BAD_REQUEST, "args.new_secret",
                  "rekey with a new secret where vtpmd owns the key");
        }
        assert_sha(sf, S, "state after refused rekeys");

        /* Stopped: stays stopped; the same TPM under a new key. */
        o.secret = user ? s1 : NULL;
        o.new_secret = user ? s2 : NULL;
        rekey_ok(&in, &o, false, what);
        k1 = key_now(modes[i], uuid, s2);
        if (g_bytes_equal(k0, k1))
            fail_msg("%s: the key did not change", what);
        assert_rekeyed(uuid, k0, k1, plain, what);

        /* The domain starts on the new key only. */
        if (user) {
            opts po = NO_OPTS;

            po.secret = s1;
            fault(A, "power_on", &in, &po, VTPM_FAULT_SECRET_INVALID, "does not decrypt",
                  "power_on with the old passphrase after a rekey");
            po.secret = s2;
            ok(A, "power_on", &in, &po, "power_on with the new passphrase");
        } else {
            opts po = NO_OPTS;

            ok(A, "power_on", &in, &po, "power_on after a rekey");
        }
        assert_dom_state(A, uuid, "running", what);

        /* Running: stopped, re-encrypted, started again on the new key. */
        o.secret = user ? s2 : NULL;
        o.new_secret = user ? s3 : NULL;
        rekey_ok(&in, &o, true, what);
        destroy_on(A, uuid, what);
    }
}

/* docs/security.md (Rekey): a rekey on the source of a migration that is
 * not confirmed yet is InstanceConflict (retryable: the kept copy, which
 * a revert restores, is under the old key), changing nothing; once the
 * migration is reverted the same rekey succeeds. */
static void
test_rekey_unconfirmed(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "host" };
    g_autofree char *sf = p_state_file(A, uuid), *kept = p_kept(A, uuid);
    g_autofree char *S = NULL, *kept_sha = NULL;
    g_autoptr(GBytes) k0 = NULL, k = NULL, k1 = NULL, plain = NULL;
    opts o = NO_OPTS, m = NO_OPTS, rv = NO_OPTS;

    ok(A, "spawn", &in, &o, "rekey unconfirmed: spawn");
    S = off_sha(A, &in, "rekey unconfirmed: power_off");
    k0 = host_secret_value(A, uuid);
    plain = plaintext_of(A, uuid, k0, "rekey unconfirmed: before");
    m.dest_host = host_addr[B];
    ok(A, "migrate_disk_and_power_off", &in, &m, "rekey unconfirmed: migrate a -> b");
    kept_sha = vt_sha256_file(kept);
    if (!kept_sha)
        fail_msg("rekey unconfirmed: no kept copy %s after the migration", kept);

    fault(A, "rekey", &in, &o, VTPM_FAULT_INSTANCE_CONFLICT, "not confirmed yet",
          "rekey during an unconfirmed migration");
    assert_sha(sf, S, "the state after the refused rekey");
    assert_sha(kept, kept_sha, "the kept copy after the refused rekey");
    k = host_secret_value(A, uuid);
    if (!g_bytes_equal(k, k0))
        fail_msg("the refused rekey changed the host's key");

    /* Reverted (destroy on the destination, then the source restores):
     * nothing is pending any more, and the same rekey goes through. */
    destroy_on(B, uuid, "rekey unconfirmed: destroy on b (revert)");
    rv.power_on = 0;
    ok(A, "finish_revert_migration", &in, &rv, "rekey unconfirmed: revert on a");
    if (exists(kept))
        fail_msg("the revert left the kept copy %s", kept);
    rekey_ok(&in, &o, false, "rekey after the revert");
    k1 = host_secret_value(A, uuid);
    if (g_bytes_equal(k0, k1))
        fail_msg("rekey after the revert: the key did not change");
    assert_rekeyed(uuid, k0, k1, plain, "rekey after the revert");
    destroy_on(A, uuid, "rekey unconfirmed: destroy");
}

/* The crash window of a rekey (docs/security.md, Rekey), in each mode.
 * vtpmd is SIGKILLed at @point, then started again: the redelivered
 * request completes, the TPM is the same, the key it ends under opens it
 * and the old key does not, and nothing is left aside.  Inside the
 * window, what the point promises.  Where the key is stored (host,
 * deployment): before_swap, nothing changed yet; before_key, the new
 * state in place with the old key stored, the old state kept aside (the
 * redelivery swaps it back and rekeys anew); before_cleanup, new state
 * and new key both in place.  In user mode nothing is stored, so the swap
 * is the commit: from before_key on, the new passphrase opens the state
 * in place and the old one the state set aside (the redelivery answers
 * rekeyed without swapping back). */
typedef struct {
    const char *name;
    const char *point;
    const char *mode;
} rekey_crash;

static const rekey_crash rekey_crashes[] = {
    { "test_rekey_crash before_swap", "rekey.before_swap", "host" },
    { "test_rekey_crash before_key", "rekey.before_key", "host" },
    { "test_rekey_crash before_cleanup", "rekey.before_cleanup", "host" },
    { "test_rekey_crash user before_swap", "rekey.before_swap", "user" },
    { "test_rekey_crash user before_key", "rekey.before_key", "user" },
    { "test_rekey_crash user before_cleanup", "rekey.before_cleanup", "user" },
    { "test_rekey_crash deployment before_swap", "rekey.before_swap", "deployment" },
    { "test_rekey_crash deployment before_key", "rekey.before_key", "deployment" },
    { "test_rekey_crash deployment before_cleanup", "rekey.before_cleanup", "deployment" },
};

/* What the state dir and the state set aside hold at the crash. */
static void
assert_rekey_window(const rekey_crash *c, const char *uuid, GBytes *k0, GBytes *s2,
                    GBytes *plain)
{
    bool user = strcmp(c->mode, "user") == 0;
    bool swapped = strcmp(c->point, "rekey.before_swap") != 0;
    bool stored = strcmp(c->point, "rekey.before_cleanup") == 0;
    g_autofree char *sd = p_state_dir(A, uuid);
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/.%s.rekey/new", uuid);
    g_autofree char *left = vt_host_path("a", rel);
    /* The key the state in place should open with: user mode has no
     * stored key, the caller's passphrases are the keys. */
    g_autoptr(GBytes) kc = user ? g_bytes_ref(swapped ? s2 : k0) : key_now(c->mode, uuid, NULL);
    g_autoptr(GBytes) in_place = decrypt_state(sd, kc);
    /* The state in place is the rekeyed one once swapped in. */
    g_autoptr(GBytes) want = swapped ? vt_tpm_transferred(plain) : g_bytes_ref(plain);

    if (!user && g_bytes_equal(kc, k0) == stored)
        fail_msg("%s at %s: the stored key %s", c->mode, c->point,
                 stored ? "should be the new one before the cleanup" : "changed too early");
    if (!user && swapped && !stored) {
        /* The one window where the stored key does not open the state in
         * place: the old state, which it does open, is kept aside. */
        g_autoptr(GBytes) left_k0 = decrypt_state(left, k0);

        if (in_place || !left_k0 || !g_bytes_equal(left_k0, plain))
            fail_msg("%s at %s: expected the new state in place and the old one in %s",
                     c->mode, c->point, left);
        return;
    }
    if (!in_place || !g_bytes_equal(in_place, want))
        fail_msg("%s at %s: the %s does not open the state in place as the same TPM (%s, "
                 "%zu bytes differ)", c->mode, c->point,
                 user ? (swapped ? "new passphrase" : "old passphrase") : "stored key",
                 !in_place ? "swtpm cannot open it" : "the permanent state differs",
                 in_place ? vt_bytes_differing(in_place, want) : 0);
    if (user && swapped) {
        g_autoptr(GBytes) left_k0 = decrypt_state(left, k0);
        g_autoptr(GBytes) old_in_place = decrypt_state(sd, k0);

        if (old_in_place || !left_k0 || !g_bytes_equal(left_k0, plain))
            fail_msg("user at %s: the old passphrase should open only the state set aside in %s",
                     c->point, left);
    }
}

static void
test_rekey_crash(void **state)
{
    const rekey_crash *c = *state;
    g_autofree char *env_kv = g_strdup_printf("VTPMD_CRASH_AT=%s", c->point);
    const char *const env[] = { env_kv, NULL };
    g_autofree char *uuid = vt_uuid();
    g_autofree char *S = NULL, *corr = NULL, *rid = vt_uuid(), *mid = vt_uuid();
    g_autofree char *rel = g_strdup_printf("var/lib/libvirt/swtpm/.%s.rekey", uuid);
    g_autofree char *work = vt_host_path("a", rel);
    g_autofree char *what = g_strdup_printf("rekey crash (%s, %s)", c->mode, c->point);
    inst in = { uuid, c->mode };
    bool user = strcmp(c->mode, "user") == 0;
    g_autoptr(GBytes) s1 = secret_of("rekey crash: the old passphrase");
    g_autoptr(GBytes) s2 = secret_of("rekey crash: the new passphrase");
    g_autoptr(GBytes) k0 = NULL, k1 = NULL, plain = NULL, args = NULL, body = NULL;
    g_autoptr(vt_reply) r = NULL;
    vtpm_error err = { 0 };
    opts o = NO_OPTS;
    int code;

    o.secret = user ? s1 : NULL;
    ok(A, "spawn", &in, &o, what);
    S = off_sha(A, &in, what);
    k0 = key_now(c->mode, uuid, s1);
    plain = plaintext_of(A, uuid, k0, what);

    host_stop(A);
    host_start_env(A, key1, NULL, env);
    o.new_secret = user ? s2 : NULL;
    args = mkargs(&in, &o);
    body = vt_request("rekey", args, rid, 0);
    {
        vtpm_client_msg_opts so = { .routing_key = dmn[A]->routing_key, .message_id = mid };

        if (vtpm_client_msg_send(vt_client(), &so, g_bytes_get_data(body, NULL),
                             g_bytes_get_size(body), &corr, &err) < 0) {
            vt_client_drop();
            fail_msg("sending rekey: %s", err.message);
        }
    }
    code = vt_vtpmd_wait_exit(dmn[A], OP_MS);
    if (code != 128 + 9)
        fail_msg("%s: vtpmd should die at the crash point, exited %d", what, code);
    assert_rekey_window(c, uuid, k0, s2, plain);

    g_clear_pointer(&dmn[A], vt_vtpmd_free);
    host_start(A, key1, NULL);
    r = vt_recv_reply(corr, OP_MS, "rekey crash: redelivered rekey");
    if (!r->rep || !r->rep->ok)
        fail_msg("%s: the redelivered rekey should complete, got %s", what,
                 vt_reply_summary(r));
    if (!vt_obj_bool(&r->rep->result, "rekeyed") || vt_obj_bool(&r->rep->result, "restarted"))
        fail_msg("%s: expected {rekeyed: true, restarted: false}, got %s", what,
                 vt_reply_summary(r));
    k1 = key_now(c->mode, uuid, s2);
    if (g_bytes_equal(k0, k1))
        fail_msg("%s: the key did not change", what);
    assert_rekeyed(uuid, k0, k1, plain, what);
    if (exists(work))
        fail_msg("%s: %s left behind", what, work);
    assert_dom_state(A, uuid, "shut off", what);
    o.secret = user ? s2 : NULL;
    o.new_secret = NULL;
    ok(A, "power_on", &in, &o, "rekey crash: power_on on the new key");
    assert_dom_state(A, uuid, "running", what);
    destroy_on(A, uuid, "rekey crash: destroy");
}

/* ---- the control: an unencrypted TPM's state is found by the search ------------------------- */

static void
test_plaintext_control(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "user" };
    g_autofree char *dir = p_state_dir(B, uuid), *sf = p_state_file(B, uuid), *S = NULL;
    g_autoptr(GBytes) plain = NULL, file = NULL;
    unsigned total = 0, hit;
    opts o = NO_OPTS;

    /* Host b allows user mode without a secret: plaintext. */
    ok(B, "spawn", &in, &o, "spawn without a secret on b");
    S = off_sha(B, &in, "power_off");
    plain = decrypt_state(dir, NULL);
    if (!plain)
        fail_msg("swtpm could not read the unencrypted state without a key");
    file = read_file(sf);
    hit = leaks(plain, file, &total);
    print_message("control: %u of %u plaintext windows found in the unencrypted state file\n",
                  hit, total);
    if (total < 32 || hit * 2 < total)
        fail_msg("the search should find most of the plaintext in an unencrypted state file "
                 "(found %u of %u): it would prove nothing",
                 hit, total);
    destroy_on(B, uuid, "control: destroy");
}

/* ---- generations: an older archive is not restored over a newer TPM ------------------------ */

static void
test_generation(void **state)
{
    g_autofree char *uuid = vt_uuid();
    inst in = { uuid, "user" };
    g_autofree char *vol = p_shelved(uuid), *ref = NULL, *sha1 = NULL, *ref2 = NULL, *sha2 = NULL;
    g_autoptr(GBytes) old = NULL;
    g_autoptr(GError) gerr = NULL;
    opts o = NO_OPTS;

    /* Plaintext (host b allows it): this is about the counter only. */
    ok(B, "spawn", &in, &o, "spawn on b");
    {
        g_autoptr(vt_reply) r = call_ok(B, "shelve", &in, &o, "first shelve");

        ref = vt_obj_str(&r->rep->result, "shelved.ref");
        sha1 = vt_obj_str(&r->rep->result, "shelved.sha256");
    }
    old = read_file(vol);
    o.shelved_ref = ref;
    ok(B, "unshelve", &in, &o, "first unshelve");
    o.shelved_ref = NULL;
    {
        g_autoptr(vt_reply) r = call_ok(B, "shelve", &in, &o, "second shelve");

        ref2 = vt_obj_str(&r->rep->result, "shelved.ref");
        sha2 = vt_obj_str(&r->rep->result, "shelved.sha256");
    }
    if (g_strcmp0(sha1, sha2) == 0)
        fail_msg("two shelves made the same archive: no new generation");
    /* Someone puts the first archive back into the store. */
    if (!g_file_set_contents(vol, g_bytes_get_data(old, NULL), g_bytes_get_size(old), &gerr))
        fail_msg("%s", gerr->message);
    if (vt_virsh("a", NULL, "pool-refresh", "vtpm-shelved", NULL) != 0)
        fail_msg("virsh pool-refresh failed");
    o.shelved_ref = ref2;
    fault(B, "unshelve", &in, &o, VTPM_FAULT_STATE_INTEGRITY, "older than generation",
          "unshelve of an older archive");
    assert_sha(vol, sha1, "the older archive stays in the store");
    if (dom_exists(B, uuid))
        fail_msg("a refused rollback defined a domain");
    o.force = 1;
    ok(B, "unshelve", &in, &o, "unshelve of an older archive with force");
    destroy_on(B, uuid, "generation: destroy");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_plaintext_control, test_teardown),
        cmocka_unit_test_teardown(test_user_mode, test_teardown),
        cmocka_unit_test_teardown(test_host_mode, test_teardown),
        cmocka_unit_test_teardown(test_deployment_mode, test_teardown),
        cmocka_unit_test_teardown(test_generation, test_teardown),
        cmocka_unit_test_teardown(test_mode_change, test_teardown),
        cmocka_unit_test_teardown(test_rekey, test_teardown),
        cmocka_unit_test_teardown(test_rekey_unconfirmed, test_teardown),
    };
    const char *missing = NULL;
    size_t n = G_N_ELEMENTS(tests) + G_N_ELEMENTS(rekey_crashes);
    g_autofree struct CMUnitTest *all = g_new0(struct CMUnitTest, n);

    if (!vt_env_ready(&missing) || !g_getenv("VT_HOST_B_ADDR")) {
        fprintf(stderr, "test_secrets: %s is not set; run it through tests/integration.sh "
                        "--net --hosts 2 (skipped)\n", missing ? missing : "VT_HOST_B_ADDR");
        return 77;
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    memcpy(all, tests, sizeof(tests));
    /* The rekey crash table: one test per row, named after it. */
    for (size_t i = 0; i < G_N_ELEMENTS(rekey_crashes); i++) {
        struct CMUnitTest *t = &all[G_N_ELEMENTS(tests) + i];

        t->name = rekey_crashes[i].name;
        t->test_func = test_rekey_crash;
        t->teardown_func = test_teardown;
        t->initial_state = (void *)&rekey_crashes[i];
    }
    return _cmocka_run_group_tests("test_secrets", all, n, group_setup, group_teardown);
}
