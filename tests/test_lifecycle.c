/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vTPM through an instance's life (docs/lifecycle.md), end to end: two
 * libvirt hosts "a" and "b" with addresses of their own (integration.sh
 * --net --hosts 2), one vtpmd on each, driven over the real broker.  Every
 * operation that moves TPM state is checked where an operator would look:
 * the reply, virsh, the state file, the kept copy, the destination's
 * incoming volume and the shelve store (both as files in the hosts' trees).
 *
 * Comparing TPM state.  swtpm rewrites tpm2-00.permall whenever the guest
 * runs (the firmware's TPM2_Startup bumps counters), so a state file is
 * compared byte for byte (sha256) only at quiescent points: the sha S of the
 * source's file right after a power-off versus the destination's file after
 * the operation left the domain defined but not started (power_on=false),
 * and versus the file inside each archive.  Where the operation itself must
 * start the guest (rebuild), "the same TPM" is shown by (a) the state file
 * differing from S in only a handful of bytes (a power cycle changes 3; two
 * different TPMs differ in thousands) and (b) swtpm_setup not having
 * manufactured a new TPM (its log per domain).
 *
 * Guests are firmware-only QEMU/TCG domains of 64 MiB; at most two run at
 * a time.  VT_TEST_FILTER=<glob> runs some tests only.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
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

#include "lib/harness.h"

enum { A = 0, B = 1, NHOSTS = 2 };

#define OP_MS 120000      /* one lifecycle call */
#define CRASH_EXIT_MS 120000
#define STATE_V2 "2.0"
#define STATE_V12 "1.2"
/* A power cycle of the same TPM changes a few bytes of tpm2-00.permall:
 * 3 (clock and reset counters) on a quiet machine, 69 seen at load 22, where
 * the firmware guest is stopped hard at a different point of its TPM use
 * (a shutdown that is not orderly moves more counters).  Two different TPMs
 * differ in thousands: a new TPM has new random primary seeds and proofs
 * alone worth 6 x 64 bytes, besides new endorsement keys. */
#define SAME_TPM_MAX_DIFF 256

static const char *const host_name[NHOSTS] = { "a", "b" };
static const char *host_addr[NHOSTS];
static vt_vtpmd *dmn[NHOSTS];        /* the vtpmd serving each host */
static bool dmn_injected[NHOSTS];    /* started with fault injection */
static bool dmn_pausable[NHOSTS];    /* with VTPMD_PAUSE_DIR, on TCG (part libvirtd) */
static GPtrArray *extra_daemons;     /* other vtpmds a test started */
static gint64 t_test, t_suite;
static char cur_test[128];

/* ---- flavors and instances ------------------------------------------------------------ */

typedef struct {
    const char *name;
    unsigned memory_mb;
    const char *const *specs; /* extra_specs: key, value, ..., NULL */
} flavor;

typedef struct {
    const char *uuid;
    const flavor *fl;
    const char *image_id;        /* default "img-1" */
    const char *const *props;    /* image properties */
} instance;

static const char *const specs_20_tis[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis",
                                            NULL };
static const char *const specs_12_tis[] = { "hw:tpm_version", "1.2", "hw:tpm_model", "tpm-tis",
                                            NULL };
static const char *const specs_20_crb[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-crb",
                                            NULL };
static const char *const specs_20_user[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis",
                                             "hw:tpm_secret_security", "user", NULL };
static const char *const props_20_tis[] = { "hw_tpm_version", "2.0", "hw_tpm_model", "tpm-tis",
                                            NULL };
static const char *const props_20_crb[] = { "hw_tpm_version", "2.0", "hw_tpm_model", "tpm-crb",
                                            NULL };
static const char *const props_12[] = { "hw_tpm_version", "1.2", NULL };

static const flavor FL_TPM = { "m1.lc", 64, specs_20_tis };
static const flavor FL_TPM_BIG = { "m2.lc", 96, specs_20_tis }; /* same vTPM, other flavor */
static const flavor FL_TPM12 = { "m1.lc-tpm12", 64, specs_12_tis };
static const flavor FL_TPM_CRB = { "m1.lc-crb", 64, specs_20_crb };
static const flavor FL_NONE = { "m1.lc-notpm", 64, NULL };
static const flavor FL_PLAIN = { "m1.lc-plain", 64, NULL }; /* the vTPM comes from the image */
static const flavor FL_USER = { "m1.lc-user", 64, specs_20_user };

/* ---- msgpack args ------------------------------------------------------------------------ */

#define MP_BEGIN(sb, pk)                                                \
    msgpack_sbuffer sb;                                                 \
    msgpack_packer pk;                                                  \
    msgpack_sbuffer_init(&sb);                                          \
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write)

static GBytes *
mp_bytes(msgpack_sbuffer *sb)
{
    GBytes *b = g_bytes_new(sb->data, sb->size);

    msgpack_sbuffer_destroy(sb);
    return b;
}

static void
mp_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void
mp_bool(msgpack_packer *pk, bool v)
{
    if (v)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static void
mp_strmap(msgpack_packer *pk, const char *const *kv)
{
    size_t n = 0;

    while (kv && kv[2 * n])
        n++;
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) {
        mp_str(pk, kv[2 * i]);
        mp_str(pk, kv[2 * i + 1]);
    }
}

static void
mp_flavor(msgpack_packer *pk, const flavor *f)
{
    msgpack_pack_map(pk, 4);
    mp_str(pk, "name");
    mp_str(pk, f->name);
    mp_str(pk, "vcpus");
    msgpack_pack_unsigned_int(pk, 1);
    mp_str(pk, "memory_mb");
    msgpack_pack_unsigned_int(pk, f->memory_mb);
    mp_str(pk, "extra_specs");
    mp_strmap(pk, f->specs);
}

static void
mp_instance(msgpack_packer *pk, const instance *in)
{
    msgpack_pack_map(pk, 4);
    mp_str(pk, "uuid");
    mp_str(pk, in->uuid);
    mp_str(pk, "name");
    mp_str(pk, "lc-instance");
    mp_str(pk, "flavor");
    mp_flavor(pk, in->fl);
    mp_str(pk, "image");
    msgpack_pack_map(pk, 3);
    mp_str(pk, "id");
    mp_str(pk, in->image_id ? in->image_id : "img-1");
    mp_str(pk, "name");
    mp_str(pk, "firmware-only");
    mp_str(pk, "properties");
    mp_strmap(pk, in->props);
}

/* {bytes, sha256} or {ref, bytes, sha256} as the results carry them. */
typedef struct {
    char *ref;
    uint64_t bytes;
    char *sha256;
} xfer;

static void
xfer_clear(xfer *x)
{
    g_clear_pointer(&x->ref, g_free);
    g_clear_pointer(&x->sha256, g_free);
    x->bytes = 0;
}

static void
mp_xfer(msgpack_packer *pk, const xfer *x)
{
    msgpack_pack_map(pk, (x->ref ? 1 : 0) + (x->bytes ? 1 : 0) + (x->sha256 ? 1 : 0));
    if (x->ref) {
        mp_str(pk, "ref");
        mp_str(pk, x->ref);
    }
    if (x->bytes) {
        mp_str(pk, "bytes");
        msgpack_pack_uint64(pk, x->bytes);
    }
    if (x->sha256) {
        mp_str(pk, "sha256");
        mp_str(pk, x->sha256);
    }
}

/* {instance} */
static GBytes *
args_inst(const instance *in)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 1);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    return mp_bytes(&sb);
}

/* {instance, power_on} */
static GBytes *
args_inst_power(const instance *in, bool power_on)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 2);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "power_on");
    mp_bool(&pk, power_on);
    return mp_bytes(&sb);
}

static GBytes *
args_migrate(const instance *in, const char *dest_host)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 2);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "dest_host");
    mp_str(&pk, dest_host);
    return mp_bytes(&sb);
}

/* @in carries the new flavor; @transfer may be NULL; @force: args.force
 * when true (absent otherwise). */
static GBytes *
args_finish_force(const instance *in, const flavor *old, bool power_on, const xfer *transfer,
                  bool force)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 3 + (transfer ? 1 : 0) + (force ? 1 : 0));
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "old_flavor");
    mp_flavor(&pk, old);
    mp_str(&pk, "power_on");
    mp_bool(&pk, power_on);
    if (transfer) {
        mp_str(&pk, "vtpm_transfer");
        mp_xfer(&pk, transfer);
    }
    if (force) {
        mp_str(&pk, "force");
        mp_bool(&pk, true);
    }
    return mp_bytes(&sb);
}

static GBytes *
args_finish(const instance *in, const flavor *old, bool power_on, const xfer *transfer)
{
    return args_finish_force(in, old, power_on, transfer, false);
}

/* finish_revert_migration {instance, power_on, force?} */
static GBytes *
args_revert(const instance *in, bool power_on, bool force)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, force ? 3 : 2);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "power_on");
    mp_bool(&pk, power_on);
    if (force) {
        mp_str(&pk, "force");
        mp_bool(&pk, true);
    }
    return mp_bytes(&sb);
}

/* shelve {instance, offload} */
static GBytes *
args_shelve(const instance *in, bool offload)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 2);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "offload");
    mp_bool(&pk, offload);
    return mp_bytes(&sb);
}

static GBytes *
args_unshelve(const instance *in, const xfer *shelved, bool power_on)
{
    MP_BEGIN(sb, pk);
    msgpack_pack_map(&pk, 3);
    mp_str(&pk, "instance");
    mp_instance(&pk, in);
    mp_str(&pk, "shelved");
    if (shelved)
        mp_xfer(&pk, shelved);
    else
        msgpack_pack_nil(&pk);
    mp_str(&pk, "power_on");
    mp_bool(&pk, power_on);
    return mp_bytes(&sb);
}

/* ---- calls ------------------------------------------------------------------------------- */

/* Call host @h's vtpmd; takes @args. */
static vt_reply *
call(int h, const char *method, GBytes *args)
{
    vt_reply *r = vt_call(dmn[h], method, args, OP_MS);

    g_bytes_unref(args);
    return r;
}

static vt_reply *
call_ok(int h, const char *method, GBytes *args, const char *what)
{
    vt_reply *r = call(h, method, args);

    if (!r->rep || !r->rep->ok) {
        g_autofree char *msg = g_strdup_printf("%s (%s on host %s): expected ok, got %s", what,
                                               method, host_name[h], vt_reply_summary(r));

        vt_reply_free(r);
        fail_msg("%s", msg);
    }
    return r;
}

static void
call_ok_free(int h, const char *method, GBytes *args, const char *what)
{
    vt_reply_free(call_ok(h, method, args, what));
}

static void
assert_res_str(const vt_reply *r, const char *path, const char *want, const char *what)
{
    g_autofree char *got = vt_obj_str(&r->rep->result, path);

    if (g_strcmp0(got, want) != 0)
        fail_msg("%s: result.%s should be \"%s\", got %s%s%s", what, path, want,
                 got ? "\"" : "", got ? got : "nothing", got ? "\"" : "");
}

static uint64_t
res_uint(const vt_reply *r, const char *path, const char *what)
{
    const msgpack_object *o = vt_obj_at(&r->rep->result, path);

    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        fail_msg("%s: result.%s should be an unsigned integer", what, path);
    return o->via.u64;
}

/* result.<key> as {ref?, bytes, sha256}; fails when it is not a map. */
static void
res_xfer(const vt_reply *r, const char *key, xfer *out, const char *what)
{
    const msgpack_object *o = vt_obj_at(&r->rep->result, key);
    g_autofree char *p_ref = g_strdup_printf("%s.ref", key);
    g_autofree char *p_sha = g_strdup_printf("%s.sha256", key);
    g_autofree char *p_bytes = g_strdup_printf("%s.bytes", key);

    if (!o || o->type != MSGPACK_OBJECT_MAP)
        fail_msg("%s: result.%s should be a map {bytes, sha256}, got %s", what, key,
                 !o ? "nothing" : o->type == MSGPACK_OBJECT_NIL ? "nil" : "another type");
    out->ref = vt_obj_str(&r->rep->result, p_ref);
    out->sha256 = vt_obj_str(&r->rep->result, p_sha);
    out->bytes = res_uint(r, p_bytes, what);
    if (!out->sha256 || strlen(out->sha256) != 64)
        fail_msg("%s: result.%s should be 64 hex digits, got %s", what, p_sha,
                 out->sha256 ? out->sha256 : "nothing");
}

/* ---- hosts: domains and files -------------------------------------------------------------- */

static char *
hpath(int h, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static char *
hpath(int h, const char *fmt, ...)
{
    g_autofree char *rel = NULL;
    va_list ap;

    va_start(ap, fmt);
    rel = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return vt_host_path(host_name[h], rel);
}

static char *
p_state_dir(int h, const char *uuid)
{
    return hpath(h, "var/lib/libvirt/swtpm/%s", uuid);
}

static char *
p_state_file(int h, const char *uuid, const char *ver)
{
    return strcmp(ver, STATE_V12) == 0 ? hpath(h, "var/lib/libvirt/swtpm/%s/tpm1.2/tpm-00.permall", uuid)
                                       : hpath(h, "var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall", uuid);
}

/* The serial console log: it goes with the instance when it leaves a host. */
static char *
p_console(int h, const char *uuid)
{
    return hpath(h, "var/lib/vtpmd/console/%s.log", uuid);
}

static char *
p_kept(int h, const char *uuid)
{
    return hpath(h, "var/lib/vtpmd/kept/%s.tar", uuid);
}

static char *
p_incoming(int h, const char *uuid)
{
    return hpath(h, "var/lib/vtpmd/pools/vtpm-incoming/%s.vtpm.tar", uuid);
}

/* The shelve store is host a's libvirtd ([store] uri of both vtpmds). */
static char *
p_shelved(const char *uuid)
{
    return hpath(A, "var/lib/vtpmd/pools/vtpm-shelved/%s.vtpm.tar", uuid);
}

static bool
exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static char *
dom_name(const char *uuid)
{
    return g_strdup_printf("instance-%s", uuid);
}

static bool
dom_exists(int h, const char *uuid)
{
    g_autofree char *n = dom_name(uuid);

    return vt_virsh(host_name[h], NULL, "dominfo", n, NULL) == 0;
}

static char *
dom_state(int h, const char *uuid)
{
    return vt_dom_state(host_name[h], uuid);
}

static char *
dom_xml(int h, const char *uuid, bool inactive)
{
    g_autofree char *n = dom_name(uuid);
    char *out = NULL;

    if (vt_virsh(host_name[h], &out, "dumpxml", n, inactive ? "--inactive" : NULL, NULL) != 0)
        fail_msg("virsh dumpxml %s on host %s failed", n, host_name[h]);
    return out;
}

static void
assert_dom_state(int h, const char *uuid, const char *want, const char *what)
{
    g_autofree char *st = dom_state(h, uuid);

    if (strcmp(st, want) != 0)
        fail_msg("%s: domain of %s on host %s should be \"%s\", virsh says \"%s\"", what, uuid,
                 host_name[h], want, st);
}

static void
assert_no_domain(int h, const char *uuid, const char *what)
{
    if (dom_exists(h, uuid))
        fail_msg("%s: host %s should have no domain for %s, but virsh lists one", what,
                 host_name[h], uuid);
}

static void
assert_gone(const char *path, const char *what, const char *thing)
{
    if (exists(path))
        fail_msg("%s: %s %s should be gone but is still there", what, thing, path);
}

static void
assert_present(const char *path, const char *what, const char *thing)
{
    if (!exists(path))
        fail_msg("%s: %s %s should exist but does not", what, thing, path);
}

/* The memory and flavor name of the domain's definition. */
static void
assert_dom_flavor(int h, const char *uuid, const flavor *f, const char *what)
{
    g_autofree char *xml = dom_xml(h, uuid, true);
    g_autofree char *mem = g_strdup_printf("<memory unit='KiB'>%u</memory>", f->memory_mb * 1024);
    g_autofree char *name = g_strdup_printf("<vtpmd:flavor name=\"%s\"/>", f->name);

    if (!strstr(xml, mem) || !strstr(xml, name))
        fail_msg("%s: the domain on host %s should have flavor %s (%s, %s):\n%s", what,
                 host_name[h], f->name, mem, name, xml);
}

static char *
sha_of(const char *path)
{
    return vt_sha256_file(path);
}

static gsize
file_size(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        fail_msg("%s: %s", path, g_strerror(errno));
    return (gsize)st.st_size;
}

static GBytes *
read_file(const char *path)
{
    g_autoptr(GError) gerr = NULL;
    char *data = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &gerr))
        fail_msg("reading %s: %s", path, gerr->message);
    return g_bytes_new_take(data, len);
}

/* The state file of @uuid on host @h must have sha256 @want. */
static void
assert_state_sha(int h, const char *uuid, const char *ver, const char *want, const char *what)
{
    g_autofree char *sf = p_state_file(h, uuid, ver);
    g_autofree char *got = sha_of(sf);

    if (!got)
        fail_msg("%s: the TPM state file %s on host %s is missing (expected sha256 %s)", what, sf,
                 host_name[h], want);
    if (strcmp(got, want) != 0)
        fail_msg("%s: the TPM state file %s on host %s has sha256 %s, expected %s (the state "
                 "before the operation)", what, sf, host_name[h], got, want);
}

/* sha256 of the state file, which must exist. */
static char *
state_sha(int h, const char *uuid, const char *ver, const char *what)
{
    g_autofree char *sf = p_state_file(h, uuid, ver);
    char *s = sha_of(sf);

    if (!s)
        fail_msg("%s: no TPM state file %s on host %s", what, sf, host_name[h]);
    return s;
}

static void
assert_owner_mode(const char *path, uid_t uid, gid_t gid, unsigned mode, const char *owner,
                  const char *what)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        fail_msg("%s: %s: %s", what, path, g_strerror(errno));
    if (st.st_uid != uid || st.st_gid != gid || (st.st_mode & 07777) != mode)
        fail_msg("%s: %s is %u:%u %04o, expected %s %04o", what, path, (unsigned)st.st_uid,
                 (unsigned)st.st_gid, st.st_mode & 07777, owner, mode);
}

/* Restored state looks as libvirt makes it: <uuid>/ root 0711, tpm2/ tss
 * 0700, the state file tss 0600. */
static void
assert_state_perms(int h, const char *uuid, const char *what)
{
    struct passwd *pw = getpwnam("tss");
    struct group *gr = getgrnam("tss");
    g_autofree char *sd = p_state_dir(h, uuid);
    g_autofree char *td = g_build_filename(sd, "tpm2", NULL);
    g_autofree char *sf = p_state_file(h, uuid, STATE_V2);

    if (!pw || !gr)
        fail_msg("user or group tss does not exist");
    assert_owner_mode(sd, 0, 0, 0711, "root:root", what);
    assert_owner_mode(td, pw->pw_uid, gr->gr_gid, 0700, "tss:tss", what);
    assert_owner_mode(sf, pw->pw_uid, gr->gr_gid, 0600, "tss:tss", what);
}

/* How often swtpm_setup manufactured a TPM for the instance on host @h. */
static unsigned
manufactured(int h, const char *uuid)
{
    return vt_swtpm_log_lines(host_name[h], uuid, "Starting vTPM manufacturing");
}

/* The TPM in @now is the one in @before, after the guest ran. */
static void
assert_same_tpm(GBytes *before, GBytes *now, const char *what)
{
    gsize d = vt_bytes_differing(before, now);

    if (d > SAME_TPM_MAX_DIFF)
        fail_msg("%s: the TPM state differs from the state before in %zu bytes (a power cycle "
                 "of the same TPM changes a few; a new TPM thousands): the TPM was replaced",
                 what, d);
}

/* ---- archives --------------------------------------------------------------------------------- */

static char *
run_cmd(const char *const *argv, const char *what)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree char *err = NULL;
    char *out = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                      &status, &gerr))
        fail_msg("running %s: %s", argv[0], gerr->message);
    if (!g_spawn_check_wait_status(status, NULL))
        fail_msg("%s: `%s %s %s` failed: %s", what, argv[0], argv[1], argv[2], err);
    return out;
}

/* The sha256 of member @member of tar file @path, extracted with tar. */
static char *
member_sha(const char *path, const char *member, const char *what)
{
    g_autofree char *tmp = g_strdup_printf("%s/lc-member-%d", vt_env("VT_ROOT"), (int)getpid());
    g_autofree char *cmd = g_strdup_printf("tar -xOf '%s' %s > '%s'", path, member, tmp);
    const char *sh[] = { "sh", "-c", cmd, NULL };
    g_autofree char *o = run_cmd(sh, what);
    char *sha = sha_of(tmp);

    unlink(tmp);
    return sha;
}

/* A state archive (kept copy, transfer volume, shelved volume): a tar that
 * `tar -tvf` lists as vtpmd-manifest.json, [nvram.fd,] tpm2/,
 * tpm2/tpm2-00.permall, whose state file has sha256 @state_sha and, when
 * @nvram_sha is given, whose variable store has that one, both recorded in
 * the manifest. */
static void
assert_archive_with(const char *path, const char *state_sha, const char *nvram_sha,
                    const char *what)
{
    const char *list[] = { "tar", "-tvf", path, NULL };
    const char *man[] = { "tar", "-xOf", path, "vtpmd-manifest.json", NULL };
    g_autofree char *listing = run_cmd(list, what);
    g_autofree char *manifest = run_cmd(man, what);
    g_auto(GStrv) lines = g_strsplit(g_strstrip(listing), "\n", -1);
    static const char *const one[] = { "vtpmd-manifest.json", "tpm2/", "tpm2/tpm2-00.permall" };
    static const char *const two[] = { "vtpmd-manifest.json", "nvram.fd", "tpm2/",
                                       "tpm2/tpm2-00.permall" };
    const char *const *want = nvram_sha ? two : one;
    size_t n = nvram_sha ? G_N_ELEMENTS(two) : G_N_ELEMENTS(one);
    g_autofree char *sha = NULL, *nsha = NULL;

    if (g_strv_length(lines) != n)
        fail_msg("%s: `tar -tvf %s` should list %zu members, got:\n%s", what, path, n, listing);
    for (size_t i = 0; i < n; i++) {
        const char *sp = strrchr(lines[i], ' ');

        if (!sp || strcmp(sp + 1, want[i]) != 0)
            fail_msg("%s: member %zu of %s should be %s, `tar -tvf` lists:\n%s", what, i + 1,
                     path, want[i], listing);
    }
    if (!strstr(manifest, state_sha) || (nvram_sha && !strstr(manifest, nvram_sha)))
        fail_msg("%s: the manifest of %s does not record sha256 %s of the state file%s%s:\n%s",
                 what, path, state_sha, nvram_sha ? " and " : "", nvram_sha ? nvram_sha : "",
                 manifest);
    sha = member_sha(path, "tpm2/tpm2-00.permall", what);
    if (g_strcmp0(sha, state_sha) != 0)
        fail_msg("%s: tpm2/tpm2-00.permall inside %s has sha256 %s, the state file had %s", what,
                 path, sha ? sha : "(unreadable)", state_sha);
    if (!nvram_sha)
        return;
    nsha = member_sha(path, "nvram.fd", what);
    if (g_strcmp0(nsha, nvram_sha) != 0)
        fail_msg("%s: nvram.fd inside %s has sha256 %s, the variable store had %s", what, path,
                 nsha ? nsha : "(unreadable)", nvram_sha);
}

static void
assert_archive(const char *path, const char *state_sha, const char *what)
{
    assert_archive_with(path, state_sha, NULL, what);
}

/* The volume/file at @path has @x's size and sha256. */
static void
assert_file_is(const char *path, const xfer *x, const char *what)
{
    g_autofree char *sha = sha_of(path);

    if (!sha)
        fail_msg("%s: %s does not exist (the reply announced %" G_GUINT64_FORMAT
                 " bytes, sha256 %s)", what, path, x->bytes, x->sha256);
    if (strcmp(sha, x->sha256) != 0)
        fail_msg("%s: %s has sha256 %s, the reply says %s", what, path, sha, x->sha256);
    if (file_size(path) != x->bytes)
        fail_msg("%s: %s has %zu bytes, the reply says %" G_GUINT64_FORMAT, what, path,
                 file_size(path), x->bytes);
}

/* Offset and size of member @name's data in the ustar file @data; false
 * when there is no such member. */
static bool
tar_find(const guint8 *data, gsize len, const char *name, gsize *off_out, gsize *size)
{
    gsize off = 0;

    while (off + 512 <= len) {
        const guint8 *hdr = data + off;
        char nm[101], sz[13];
        guint64 n;

        if (hdr[0] == 0)
            break;
        memcpy(nm, hdr, 100);
        nm[100] = 0;
        memcpy(sz, hdr + 124, 12);
        sz[12] = 0;
        n = g_ascii_strtoull(sz, NULL, 8);
        if (strcmp(nm, name) == 0) {
            if (off + 512 + n > len)
                return false;
            *size = n;
            *off_out = off + 512;
            return true;
        }
        off += 512 + (n + 511) / 512 * 512;
    }
    return false;
}

static gsize
tar_member(const guint8 *data, gsize len, const char *name, gsize *size)
{
    gsize off = 0;

    if (!tar_find(data, len, name, &off, size))
        fail_msg("no member %s in the archive", name);
    return off;
}

/* Flip one byte in the middle of the state file's data, in place. */
static void
flip_state_byte(const char *path)
{
    g_autoptr(GBytes) b = read_file(path);
    gsize len, size = 0, off;
    const guint8 *d = g_bytes_get_data(b, &len);
    guint8 c;
    int fd;

    off = tar_member(d, len, "tpm2/tpm2-00.permall", &size);
    if (size == 0)
        fail_msg("%s: empty state file member", path);
    off += size / 2;
    c = d[off] ^ 0x5a;
    fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, &c, 1, (off_t)off) != 1)
        fail_msg("writing %s: %s", path, g_strerror(errno));
    close(fd);
}

/* ---- vtpmd per host --------------------------------------------------------------------------- */

/* Host a pins Debian's snakeoil pair for Secure Boot guests ([libvirt]
 * uefi_loader / uefi_nvram_template), host b has libvirt's auto-selection
 * (Microsoft's keys): a store that moves between them keeps its own keys,
 * and a fresh one would show by its template. */
#define SNAKEOIL_CODE "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd"
#define SNAKEOIL_VARS "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"

static char *
host_libvirt_extra_for(int h)
{
    return g_strdup_printf("shutdown_timeout = 3\nmigration_uri_template = qemu+tcp://%%s/system%s",
                           h == A ? "\nuefi_loader = " SNAKEOIL_CODE
                                                     "\nuefi_nvram_template = " SNAKEOIL_VARS
                                                   : "");
}

static char *
host_libvirt_extra(void)
{
    return host_libvirt_extra_for(B);
}

static char *
host_tail(const char *vtpm_group)
{
    return g_strdup_printf("[store]\nuri = qemu+tcp://%s/system\n%s", host_addr[A],
                           vtpm_group ? vtpm_group : "");
}

/* The [metrics] textfile of host @h's vtpmd. */
static char *
host_prom(int h)
{
    return g_strdup_printf("%s/lifecycle-%s.prom", vt_env("VT_ROOT"), host_name[h]);
}

/* Start the vtpmd of host @h (worker host = its address), with @env; @tcg:
 * [libvirt] virt_type = qemu. */
static void
host_start_virt(int h, const char *const *env, bool tcg)
{
    g_autofree char *base_lx = host_libvirt_extra_for(h);
    g_autofree char *lx = g_strdup_printf("%s%s", base_lx, tcg ? "\nvirt_type = qemu" : "");
    g_autofree char *base = host_tail(NULL);
    g_autofree char *prom = host_prom(h);
    g_autofree char *tail = g_strdup_printf("%s\n[metrics]\ntextfile = %s\ninterval = 1\n", base,
                                            prom);
    vt_config_opts o = { .worker_host = host_addr[h], .libvirt_extra = lx, .tail = tail };

    /* A new vtpmd counts from zero: no reading of its predecessor's. */
    unlink(prom);
    dmn[h] = vt_vtpmd_start(host_name[h], &o, env);
    dmn_injected[h] = env != NULL;
    dmn_pausable[h] = false;
}

static void
host_start(int h, const char *const *env)
{
    host_start_virt(h, env, false);
}

static void
host_stop(int h)
{
    if (!dmn[h])
        return;
    if (vt_vtpmd_running(dmn[h])) {
        int code = vt_vtpmd_term(dmn[h], 30000);

        if (code != 0)
            print_error("vtpmd of host %s exited %d on SIGTERM\n", host_name[h], code);
    }
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
}

/* vtpmd_state_bytes_moved_total{direction=@dir} of host @h now (0 before
 * the first write). */
static double
bytes_moved(int h, const char *dir)
{
    g_autofree char *prom = host_prom(h);
    g_autofree char *series = g_strdup_printf("vtpmd_state_bytes_moved_total{direction=\"%s\"}", dir);
    double v = 0;

    vt_prom_value(prom, series, &v);
    return v;
}

/* The metrics file of host @h must come to count @bytes more than @before. */
static void
assert_bytes_moved(int h, const char *dir, double before, uint64_t bytes, const char *what)
{
    g_autofree char *prom = host_prom(h);
    g_autofree char *series = g_strdup_printf("vtpmd_state_bytes_moved_total{direction=\"%s\"}", dir);
    double v;

    if (!vt_prom_wait(prom, series, before + (double)bytes, 60000, &v))
        fail_msg("%s: %s of host %s should reach %g (+%" G_GUINT64_FORMAT " bytes), is %g", what,
                 series, host_name[h], before + (double)bytes, bytes, v);
}

/* ---- common steps ---------------------------------------------------------------------------- */

static void
begin(const char *name)
{
    g_strlcpy(cur_test, name, sizeof(cur_test));
    t_test = g_get_monotonic_time();
}

static void
spawn_on(int h, const instance *in, bool power_on)
{
    g_autoptr(vt_reply) r = call_ok(h, "spawn", args_inst_power(in, power_on), "spawn");
}

/* power_off; returns the sha256 of the now quiescent state file. */
static char *
power_off_sha(int h, const instance *in, const char *ver, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(h, "power_off", args_inst(in), what);

    assert_res_str(r, "state", "shutoff", what);
    assert_dom_state(h, in->uuid, "shut off", what);
    return state_sha(h, in->uuid, ver, what);
}

/* spawn on a and power off: the state S every later copy must equal. */
static char *
spawn_off(const instance *in)
{
    spawn_on(A, in, true);
    return power_off_sha(A, in, STATE_V2, "power_off after spawn");
}

static void
migrate(int from, int to, const instance *in, xfer *x, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(from, "migrate_disk_and_power_off",
                                    args_migrate(in, host_addr[to]), what);

    res_xfer(r, "vtpm_transfer", x, what);
}

static void
destroy_on(int h, const char *uuid, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(h, "destroy", vt_args_destroy(uuid, -1), what);
    g_autofree char *sd = p_state_dir(h, uuid);
    g_autofree char *inc = p_incoming(h, uuid);

    assert_no_domain(h, uuid, what);
    assert_gone(sd, what, "state dir");
    assert_gone(inc, what, "incoming volume");
}

/* Where the source keeps nothing: domain, state dir and kept copy gone. */
static void
assert_source_clean(int h, const char *uuid, const char *what)
{
    g_autofree char *sd = p_state_dir(h, uuid);
    g_autofree char *kept = p_kept(h, uuid);
    g_autofree char *con = p_console(h, uuid);

    assert_no_domain(h, uuid, what);
    assert_gone(sd, what, "state dir");
    assert_gone(kept, what, "kept copy");
    assert_gone(con, what, "console log");
}

/* After a finish_migration / unshelve with power_on=false: the restored
 * state is S, looks as libvirt makes it, and the domain is defined. */
static void
assert_restored_off(int h, const char *uuid, const char *S, const char *what)
{
    assert_state_sha(h, uuid, STATE_V2, S, what);
    assert_state_perms(h, uuid, what);
    assert_dom_state(h, uuid, "shut off", what);
}

/* ---- fixtures ---------------------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    host_addr[A] = vt_env("VT_HOST_A_ADDR");
    host_addr[B] = vt_env("VT_HOST_B_ADDR");
    vt_env("VT_HOST_B_ROOT");
    extra_daemons = g_ptr_array_new_with_free_func((GDestroyNotify)vt_vtpmd_free);
    t_suite = g_get_monotonic_time();
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
    g_ptr_array_unref(extra_daemons);
    vt_client_drop();
    print_message("[lifecycle] whole suite: %.1f s\n",
                  (g_get_monotonic_time() - t_suite) / 1e6);
    return 0;
}

static int
test_setup(void **state)
{
    /* A previous test may have left a daemon with fault injection, or a
     * dead one: every test starts with two plain vtpmds. */
    for (int h = 0; h < NHOSTS; h++) {
        if (dmn[h] && (!vt_vtpmd_running(dmn[h]) || dmn_injected[h])) {
            print_message("setup: replacing the vtpmd of host %s\n", host_name[h]);
            host_stop(h);
        }
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
    g_ptr_array_set_size(extra_daemons, 0);
    for (int h = 0; h < NHOSTS; h++)
        vt_virsh_cleanup(host_name[h]);
    print_message("[lifecycle] %s: %.1f s\n", cur_test[0] ? cur_test : "(test)",
                  (g_get_monotonic_time() - t_test) / 1e6);
    return 0;
}

/* ---- 1. power cycle ------------------------------------------------------------------------------ */

static void
test_power_cycle(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *sf = p_state_file(A, uuid, STATE_V2);
    g_autofree char *S = NULL, *S2 = NULL;

    begin("power cycle");
    spawn_on(A, &in, true);
    assert_dom_state(A, uuid, "running", "spawn");
    assert_present(sf, "spawn", "TPM state file");
    S = power_off_sha(A, &in, STATE_V2, "first power_off");
    {
        g_autoptr(vt_reply) r = call_ok(A, "power_on", args_inst(&in), "power_on");

        assert_res_str(r, "state", "running", "power_on");
        assert_dom_state(A, uuid, "running", "power_on");
        assert_present(sf, "power_on", "TPM state file");
    }
    S2 = power_off_sha(A, &in, STATE_V2, "second power_off");
    /* Same TPM: only swtpm's counters moved (the sha itself changes when
     * the firmware runs, so it is not compared across a power cycle). */
    if (manufactured(A, uuid) != 1)
        fail_msg("power cycle: swtpm_setup manufactured %u TPMs for the instance, expected 1 "
                 "(the TPM must survive the power cycle)", manufactured(A, uuid));
    print_message("power cycle: state sha256 %.16s... before, %.16s... after\n", S, S2);
    destroy_on(A, uuid, "destroy");
}

/* ---- 2. cold migration a -> b ---------------------------------------------------------------------- */

static void
test_cold_migration(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *S = NULL;
    g_autofree char *inc = p_incoming(B, uuid);
    g_autofree char *kept = p_kept(A, uuid);
    g_autofree char *sf_b = p_state_file(B, uuid, STATE_V2);
    xfer x = { 0 };

    double out_a, in_b;

    begin("cold migration a -> b");
    S = spawn_off(&in);
    out_a = bytes_moved(A, "out");
    in_b = bytes_moved(B, "in");
    migrate(A, B, &in, &x, "migrate_disk_and_power_off a -> b");
    assert_bytes_moved(A, "out", out_a, x.bytes, "migrate: the source's metrics");
    assert_file_is(inc, &x, "migrate: the incoming volume on b");
    assert_archive(inc, S, "migrate: the incoming volume on b");
    {
        g_autofree char *ks = sha_of(kept);

        if (g_strcmp0(ks, x.sha256) != 0)
            fail_msg("migrate: the kept copy %s on a has sha256 %s, the transferred archive %s "
                     "(they must be the same archive)", kept, ks ? ks : "(missing)", x.sha256);
        assert_archive(kept, S, "migrate: the kept copy on a");
    }
    assert_dom_state(A, uuid, "shut off", "migrate: the source domain");
    assert_state_sha(A, uuid, STATE_V2, S, "migrate: the source's state");

    {
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&in, &FL_TPM, false, &x), "finish_migration");

        assert_res_str(r, "vtpm_state", "restored", "finish_migration");
        assert_res_str(r, "vtpm.version", "2.0", "finish_migration");
    }
    assert_restored_off(B, uuid, S, "finish_migration on b");
    assert_gone(inc, "finish_migration", "incoming volume");
    assert_bytes_moved(B, "in", in_b, x.bytes, "finish_migration: the destination's metrics");
    {
        g_autoptr(vt_reply) r = call_ok(B, "power_on", args_inst(&in), "power_on on b");
    }
    assert_dom_state(B, uuid, "running", "power_on on b");
    if (manufactured(B, uuid) != 0)
        fail_msg("power_on on b: swtpm_setup manufactured a new TPM instead of using the "
                 "migrated state");
    {
        g_autoptr(vt_reply) r = call_ok(A, "confirm_migration", args_inst(&in),
                                        "confirm_migration");

        if (!vt_obj_bool(&r->rep->result, "confirmed"))
            fail_msg("confirm_migration: result.confirmed should be true");
    }
    assert_source_clean(A, uuid, "confirm_migration on a");
    assert_dom_state(B, uuid, "running", "confirm_migration: the domain on b");
    assert_present(sf_b, "confirm_migration", "state file on b");
    destroy_on(B, uuid, "destroy on b");
    xfer_clear(&x);
}

/* ---- 3. resize to another host ------------------------------------------------------------------- */

/* Spawn with FL_TPM on a, resize to @new_fl on b: finish_migration must
 * answer @want ("restored" | "fresh" | "none"). */
static void
resize_to_b(const flavor *new_fl, const char *want, const char *what)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance in_new = { .uuid = uuid, .fl = new_fl };
    g_autofree char *S = NULL;
    g_autofree char *inc = p_incoming(B, uuid);
    g_autofree char *sd_b = p_state_dir(B, uuid);
    g_autofree char *tpm2_b = g_build_filename(sd_b, "tpm2", NULL);
    bool fresh = strcmp(want, "fresh") == 0;
    xfer x = { 0 };

    S = spawn_off(&in);
    migrate(A, B, &in, &x, what);
    assert_file_is(inc, &x, what);
    {
        /* A fresh TPM needs a start to exist: libvirt makes it then. */
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&in_new, &FL_TPM, fresh, &x), what);

        assert_res_str(r, "vtpm_state", want, what);
        if (strcmp(want, "none") == 0) {
            const msgpack_object *v = vt_obj_at(&r->rep->result, "vtpm");

            if (v && v->type != MSGPACK_OBJECT_NIL)
                fail_msg("%s: result.vtpm should be nil for a flavor without vTPM", what);
        }
    }
    assert_gone(inc, what, "incoming volume");
    assert_dom_flavor(B, uuid, new_fl, what);
    if (strcmp(want, "restored") == 0) {
        assert_restored_off(B, uuid, S, what);
    } else if (fresh) {
        g_autofree char *sf12 = p_state_file(B, uuid, STATE_V12);
        g_autofree char *xml = dom_xml(B, uuid, true);

        assert_dom_state(B, uuid, "running", what);
        if (!strstr(xml, "version='1.2'"))
            fail_msg("%s: the domain on b should have a TPM 1.2 backend:\n%s", what, xml);
        assert_present(sf12, what, "TPM 1.2 state file");
        assert_gone(tpm2_b, what, "the old TPM 2.0 state");
        if (manufactured(B, uuid) != 1)
            fail_msg("%s: swtpm_setup manufactured %u TPMs on b, expected 1 (a fresh TPM)", what,
                     manufactured(B, uuid));
    } else {
        g_autofree char *xml = dom_xml(B, uuid, true);

        if (strstr(xml, "<tpm"))
            fail_msg("%s: the domain on b should have no <tpm>:\n%s", what, xml);
        assert_gone(sd_b, what, "state dir on b");
    }
    {
        g_autoptr(vt_reply) r = call_ok(A, "confirm_migration", args_inst(&in), what);

        if (!vt_obj_bool(&r->rep->result, "confirmed"))
            fail_msg("%s: confirm_migration should answer confirmed=true", what);
    }
    assert_source_clean(A, uuid, what);
    if (!dom_exists(B, uuid))
        fail_msg("%s: confirm_migration on a removed the domain on b", what);
    destroy_on(B, uuid, what);
    xfer_clear(&x);
}

static void
test_resize(void **state)
{
    begin("resize a -> b (same vTPM / 2.0 -> 1.2 / no vTPM)");
    resize_to_b(&FL_TPM_BIG, "restored", "resize to a bigger flavor with the same vTPM");
    resize_to_b(&FL_TPM12, "fresh", "resize to a TPM 1.2 flavor");
    resize_to_b(&FL_NONE, "none", "resize to a flavor without vTPM");
}

/* ---- 4. resize in place --------------------------------------------------------------------------- */

static void
test_resize_in_place(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance in_new = { .uuid = uuid, .fl = &FL_TPM_BIG };
    g_autofree char *S = NULL;
    g_autofree char *inc = p_incoming(A, uuid);
    g_autofree char *kept = p_kept(A, uuid);
    xfer x = { 0 };

    begin("resize in place");
    S = spawn_off(&in);
    migrate(A, A, &in, &x, "migrate_disk_and_power_off to its own host");
    assert_file_is(inc, &x, "resize in place: the incoming volume on a");
    assert_archive(inc, S, "resize in place: the incoming volume on a");
    assert_present(kept, "resize in place", "kept copy");
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_migration",
                                        args_finish(&in_new, &FL_TPM, false, &x),
                                        "finish_migration in place");

        assert_res_str(r, "vtpm_state", "restored", "finish_migration in place");
    }
    assert_restored_off(A, uuid, S, "finish_migration in place");
    assert_dom_flavor(A, uuid, &FL_TPM_BIG, "finish_migration in place");
    assert_gone(inc, "finish_migration in place", "incoming volume");
    {
        g_autoptr(vt_reply) r = call_ok(A, "confirm_migration", args_inst(&in),
                                        "confirm_migration in place");

        if (!vt_obj_bool(&r->rep->result, "confirmed"))
            fail_msg("confirm_migration in place should answer confirmed=true");
    }
    if (!dom_exists(A, uuid))
        fail_msg("confirm_migration in place removed the domain: it is the resized one");
    assert_dom_flavor(A, uuid, &FL_TPM_BIG, "confirm_migration in place");
    assert_state_sha(A, uuid, STATE_V2, S, "confirm_migration in place");
    assert_gone(kept, "confirm_migration in place", "kept copy");
    destroy_on(A, uuid, "destroy");
    xfer_clear(&x);
}

/* ---- 5. migration + revert -------------------------------------------------------------------------- */

static void
revert_on_a(const instance *in, const char *S, const char *what)
{
    g_autofree char *kept = p_kept(A, in->uuid);
    g_autoptr(vt_reply) r = call_ok(A, "finish_revert_migration", args_inst_power(in, false),
                                    what);

    assert_res_str(r, "vtpm_state", "restored", what);
    assert_restored_off(A, in->uuid, S, what);
    assert_dom_flavor(A, in->uuid, &FL_TPM, what);
    assert_gone(kept, what, "kept copy");
}

static void
test_revert(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance in_new = { .uuid = uuid, .fl = &FL_TPM_BIG };
    g_autofree char *S = NULL;
    g_autofree char *inc = p_incoming(B, uuid);
    xfer x = { 0 };

    begin("migration + revert");
    S = spawn_off(&in);

    /* Reverted before finish_migration ran: destroy on b removes the
     * transfer volume. */
    migrate(A, B, &in, &x, "migrate (revert before finish)");
    assert_present(inc, "migrate (revert before finish)", "incoming volume on b");
    {
        g_autoptr(vt_reply) r = call_ok(B, "destroy", vt_args_destroy(uuid, -1),
                                        "destroy on b before finish");

        if (vt_obj_bool(&r->rep->result, "destroyed"))
            fail_msg("destroy on b before finish: result.destroyed should be false (no domain)");
    }
    assert_gone(inc, "destroy on b before finish", "incoming volume");
    revert_on_a(&in, S, "finish_revert_migration (before finish)");
    xfer_clear(&x);

    /* The full revert: resized on b and running there. */
    migrate(A, B, &in, &x, "migrate");
    {
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&in_new, &FL_TPM, true, &x),
                                        "finish_migration (resize) on b");

        assert_res_str(r, "vtpm_state", "restored", "finish_migration on b");
    }
    assert_dom_state(B, uuid, "running", "finish_migration on b");
    {
        g_autoptr(vt_reply) r = call_ok(B, "destroy", vt_args_destroy(uuid, -1), "destroy on b");

        if (!vt_obj_bool(&r->rep->result, "destroyed"))
            fail_msg("destroy on b: result.destroyed should be true");
        assert_res_str(r, "vtpm_state", "deleted", "destroy on b");
    }
    {
        g_autofree char *sd_b = p_state_dir(B, uuid);

        assert_no_domain(B, uuid, "destroy on b");
        assert_gone(sd_b, "destroy on b", "state dir");
        assert_gone(inc, "destroy on b", "incoming volume");
    }
    revert_on_a(&in, S, "finish_revert_migration");
    destroy_on(A, uuid, "destroy on a");
    xfer_clear(&x);
}

/* ---- 6. shelve / unshelve --------------------------------------------------------------------------- */

static void
shelve_on(int h, const instance *in, xfer *sh, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(h, "shelve", args_inst(in), what);
    g_autofree char *want_ref = g_strdup_printf("vtpm-shelved/%s.vtpm.tar", in->uuid);

    res_xfer(r, "shelved", sh, what);
    if (g_strcmp0(sh->ref, want_ref) != 0)
        fail_msg("%s: result.shelved.ref should be %s, got %s", what, want_ref,
                 sh->ref ? sh->ref : "nothing");
    if (!vt_obj_bool(&r->rep->result, "offloaded"))
        fail_msg("%s: result.offloaded should be true", what);
}

/* Nothing of @uuid on host @h: no domain, no state. */
static void
assert_nothing_on(int h, const char *uuid, const char *what)
{
    g_autofree char *sd = p_state_dir(h, uuid);
    g_autofree char *con = p_console(h, uuid);

    assert_no_domain(h, uuid, what);
    assert_gone(sd, what, "state dir");
    assert_gone(con, what, "console log");
}

static void
test_shelve(void **state)
{
    g_autofree char *uuid = vt_uuid(), *uuid2 = vt_uuid(), *uuid3 = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance in2 = { .uuid = uuid2, .fl = &FL_TPM };
    instance in3 = { .uuid = uuid3, .fl = &FL_TPM };
    g_autofree char *S = NULL, *S3 = NULL, *altered = NULL;
    g_autofree char *vol = p_shelved(uuid), *vol3 = p_shelved(uuid3);
    xfer sh = { 0 }, sh3 = { 0 };

    double out_a, in_b;

    begin("shelve / unshelve");
    S = spawn_off(&in);
    out_a = bytes_moved(A, "out");
    in_b = bytes_moved(B, "in");
    shelve_on(A, &in, &sh, "shelve");
    assert_bytes_moved(A, "out", out_a, sh.bytes, "shelve: the metrics of a");
    assert_file_is(vol, &sh, "shelve: the volume in the shelve pool");
    assert_archive(vol, S, "shelve: the volume in the shelve pool");
    assert_nothing_on(A, uuid, "shelve (offload) on a");
    {
        g_autoptr(vt_reply) r = call_ok(B, "unshelve", args_unshelve(&in, &sh, false),
                                        "unshelve on b");

        assert_res_str(r, "vtpm_state", "restored", "unshelve on b");
    }
    assert_restored_off(B, uuid, S, "unshelve on b");
    assert_gone(vol, "unshelve on b", "shelved archive");
    assert_bytes_moved(B, "in", in_b, sh.bytes, "unshelve: the metrics of b");
    /* The instance has a domain of another spec here: no retry of this
     * unshelve can succeed (final), and the domain stays as it is. */
    {
        instance big = { .uuid = uuid, .fl = &FL_TPM_BIG };
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&big, &sh, false));

        vt_assert_final_fault(r, VTPM_FAULT_INSTANCE_CONFLICT, "different domain",
                              "unshelve with another flavor where the domain exists");
        assert_dom_flavor(B, uuid, &FL_TPM, "unshelve with another flavor: the domain");
        assert_restored_off(B, uuid, S, "unshelve with another flavor: the state");
    }
    destroy_on(B, uuid, "destroy on b");

    /* An archive that is not (or no longer) in the store. */
    {
        xfer fake = { .ref = g_strdup_printf("vtpm-shelved/%s.vtpm.tar", uuid2),
                      .bytes = sh.bytes, .sha256 = g_strdup(sh.sha256) };
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&in2, &fake, false));

        vt_assert_fault(r, VTPM_FAULT_STATE_NOT_FOUND, NULL, "unshelve of a missing archive");
        assert_nothing_on(B, uuid2, "unshelve of a missing archive");
        xfer_clear(&fake);
    }

    /* Damaged archives: refused, left in the store, nothing defined. */
    S3 = spawn_off(&in3);
    shelve_on(A, &in3, &sh3, "shelve (second instance)");
    {
        xfer bad = { .ref = g_strdup(sh3.ref), .bytes = sh3.bytes,
                     .sha256 = g_strdup("0000000000000000000000000000000000000000000000000000000000000000") };
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&in3, &bad, false));

        vt_assert_fault(r, VTPM_FAULT_STATE_INTEGRITY, NULL,
                        "unshelve with a shelved.sha256 that does not match");
        assert_file_is(vol3, &sh3, "unshelve with a wrong sha256: the archive left in place");
        assert_nothing_on(B, uuid3, "unshelve with a wrong sha256");
        xfer_clear(&bad);
    }
    flip_state_byte(vol3);
    altered = sha_of(vol3);
    {
        /* Only the ref: the archive's own manifest must catch it. */
        xfer ref_only = { .ref = g_strdup(sh3.ref) };
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&in3, &ref_only, false));
        g_autofree char *now = sha_of(vol3);

        vt_assert_fault(r, VTPM_FAULT_STATE_INTEGRITY, NULL,
                        "unshelve of an archive with a flipped byte in the state file");
        if (g_strcmp0(now, altered) != 0)
            fail_msg("unshelve of a damaged archive: the archive should be left in place as it "
                     "was (sha256 %s), now %s", altered, now ? now : "(gone)");
        assert_nothing_on(B, uuid3, "unshelve of a damaged archive");
        xfer_clear(&ref_only);
    }
    {
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&in3, &sh3, false));

        vt_assert_fault(r, VTPM_FAULT_STATE_INTEGRITY, NULL,
                        "unshelve of a damaged archive (with its original sha256)");
        assert_nothing_on(B, uuid3, "unshelve of a damaged archive (with its original sha256)");
    }
    /* Repaired, the same archive unshelves: nothing was consumed. */
    flip_state_byte(vol3);
    assert_file_is(vol3, &sh3, "the repaired archive");
    {
        g_autoptr(vt_reply) r = call_ok(B, "unshelve", args_unshelve(&in3, &sh3, false),
                                        "unshelve of the repaired archive");

        assert_res_str(r, "vtpm_state", "restored", "unshelve of the repaired archive");
    }
    assert_restored_off(B, uuid3, S3, "unshelve of the repaired archive");
    assert_gone(vol3, "unshelve of the repaired archive", "shelved archive");
    destroy_on(B, uuid3, "destroy on b");
    xfer_clear(&sh);
    xfer_clear(&sh3);
}

/* docs/lifecycle.md: an archive whose TPM version or model differs from
 * what the instance now asks for is refused (InvalidTPMConfig) and left
 * in the store; so is one named for an instance that asks for no vTPM.
 * Nothing is defined; the same archive unshelves with the right spec. */
static void
test_unshelve_mismatch(void **state)
{
    static const struct {
        const flavor *fl;
        const char *fragment;
    } wrong[] = {
        { &FL_TPM_CRB, "asks for 2.0/tpm-crb" },
        { &FL_TPM12, "asks for 1.2/tpm-tis" },
        { &FL_NONE, "asks for no vTPM" },
    };
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *S = NULL, *vol = p_shelved(uuid);
    xfer sh = { 0 };

    begin("unshelve of an archive with another TPM version or model");
    S = spawn_off(&in);
    shelve_on(A, &in, &sh, "shelve (TPM 2.0, tpm-tis)");
    for (size_t i = 0; i < G_N_ELEMENTS(wrong); i++) {
        instance other = { .uuid = uuid, .fl = wrong[i].fl };
        g_autofree char *what = g_strdup_printf("unshelve with flavor %s", wrong[i].fl->name);
        g_autoptr(vt_reply) r = call(B, "unshelve", args_unshelve(&other, &sh, false));

        vt_assert_fault(r, VTPM_FAULT_INVALID_TPM_CONFIG, wrong[i].fragment, what);
        if (!strstr(r->rep->fault_message, "left in the store"))
            fail_msg("%s: the fault should say the state was left in the store: %s", what,
                     vt_reply_summary(r));
        assert_file_is(vol, &sh, what);
        assert_nothing_on(B, uuid, what);
    }
    {
        g_autoptr(vt_reply) r = call_ok(B, "unshelve", args_unshelve(&in, &sh, false),
                                        "unshelve with the TPM it was shelved with");

        assert_res_str(r, "vtpm_state", "restored", "unshelve with the right TPM");
    }
    assert_restored_off(B, uuid, S, "unshelve with the right TPM");
    assert_gone(vol, "unshelve with the right TPM", "shelved archive");
    destroy_on(B, uuid, "destroy on b");
    xfer_clear(&sh);
}

/* ---- 7. rebuild ------------------------------------------------------------------------------------- */

static void
test_rebuild(void **state)
{
    g_autofree char *uuid = vt_uuid(), *uuid2 = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-1", .props = props_20_tis };
    instance in_img2 = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-2", .props = props_20_tis };
    instance in_crb = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-3", .props = props_20_crb };
    instance in_12 = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-4", .props = props_12 };
    g_autofree char *sf = p_state_file(A, uuid, STATE_V2);
    g_autofree char *sd = p_state_dir(A, uuid);
    g_autofree char *tpm2 = g_build_filename(sd, "tpm2", NULL);
    g_autofree char *S = NULL, *S2 = NULL;
    g_autoptr(GBytes) before = NULL, after = NULL;
    unsigned m0;

    begin("rebuild");
    spawn_on(A, &in, true);
    S = power_off_sha(A, &in, STATE_V2, "power_off before rebuild");
    before = read_file(sf);
    m0 = manufactured(A, uuid);

    /* New image, same vTPM: the TPM stays. */
    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args_inst(&in_img2), "rebuild, same vTPM");
        g_autofree char *xml = dom_xml(A, uuid, true);

        assert_res_str(r, "vtpm_state", "kept", "rebuild, same vTPM");
        assert_dom_state(A, uuid, "running", "rebuild, same vTPM");
        if (!strstr(xml, "<vtpmd:image id=\"img-2\"/>"))
            fail_msg("rebuild: the domain should carry the new image img-2:\n%s", xml);
    }
    S2 = power_off_sha(A, &in_img2, STATE_V2, "power_off after rebuild");
    after = read_file(sf);
    /* The rebuild started the guest, so swtpm rewrote its counters: the
     * sha cannot match, the TPM must. */
    assert_same_tpm(before, after, "rebuild with the same vTPM");
    if (manufactured(A, uuid) != m0)
        fail_msg("rebuild with the same vTPM: swtpm_setup manufactured a new TPM");
    print_message("rebuild kept: state sha256 %.16s... -> %.16s..., %zu bytes differ\n", S, S2,
                  vt_bytes_differing(before, after));

    /* The image asks for another model (tpm-crb): a fresh TPM. */
    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args_inst(&in_crb), "rebuild to tpm-crb");
        g_autofree char *xml = dom_xml(A, uuid, true);

        assert_res_str(r, "vtpm_state", "replaced", "rebuild to tpm-crb");
        assert_dom_state(A, uuid, "running", "rebuild to tpm-crb");
        if (!strstr(xml, "<tpm model='tpm-crb'>"))
            fail_msg("rebuild to tpm-crb: the domain should have a CRB TPM:\n%s", xml);
        if (manufactured(A, uuid) != m0 + 1)
            fail_msg("rebuild to tpm-crb: swtpm_setup should have manufactured one new TPM "
                     "(%u)", manufactured(A, uuid) - m0);
    }
    /* The other side of SAME_TPM_MAX_DIFF: a new TPM is far from the old. */
    {
        g_autoptr(GBytes) fresh = read_file(sf);
        gsize d = vt_bytes_differing(before, fresh);

        print_message("rebuild replaced: %zu bytes differ from the old TPM\n", d);
        if (d <= SAME_TPM_MAX_DIFF)
            fail_msg("rebuild to tpm-crb: the new TPM's state differs from the old in only %zu "
                     "bytes, not more than SAME_TPM_MAX_DIFF (%d): the threshold cannot tell "
                     "two TPMs apart", d, SAME_TPM_MAX_DIFF);
    }

    /* The image asks for TPM 1.2: a fresh TPM replaces the old one. */
    {
        g_autoptr(vt_reply) r = call_ok(A, "rebuild", args_inst(&in_12), "rebuild to TPM 1.2");
        g_autofree char *sf12 = p_state_file(A, uuid, STATE_V12);
        g_autofree char *xml = dom_xml(A, uuid, true);

        assert_res_str(r, "vtpm_state", "replaced", "rebuild to TPM 1.2");
        assert_dom_state(A, uuid, "running", "rebuild to TPM 1.2");
        if (!strstr(xml, "version='1.2'"))
            fail_msg("rebuild to TPM 1.2: the domain should have a TPM 1.2 backend:\n%s", xml);
        assert_present(sf12, "rebuild to TPM 1.2", "TPM 1.2 state file");
        assert_gone(tpm2, "rebuild to TPM 1.2", "the old TPM 2.0 state");
        if (manufactured(A, uuid) != m0 + 2)
            fail_msg("rebuild to TPM 1.2: swtpm_setup should have manufactured one new TPM");
    }
    destroy_on(A, uuid, "destroy");

    /* A host that cannot give the vTPM: TPMUnsupported, nothing touched. */
    {
        g_autofree char *host = vt_unique("lc-hostonly");
        g_autofree char *lx = host_libvirt_extra();
        g_autofree char *tail = host_tail(NULL);
        vt_config_opts o = { .worker_host = host, .libvirt_extra = lx, .tail = tail,
                             .vtpm_extra = "supported_secret_security = host" };
        instance u = { .uuid = uuid2, .fl = &FL_USER, .image_id = "img-1" };
        instance u2 = { .uuid = uuid2, .fl = &FL_USER, .image_id = "img-2" };
        vt_vtpmd *d = vt_vtpmd_start(host_name[A], &o, NULL);
        g_autofree char *live0 = NULL, *inact0 = NULL, *live1 = NULL, *inact1 = NULL;

        g_ptr_array_add(extra_daemons, d);
        spawn_on(A, &u, true);
        live0 = dom_xml(A, uuid2, false);
        inact0 = dom_xml(A, uuid2, true);
        {
            g_autoptr(GBytes) args = args_inst(&u2);
            g_autoptr(vt_reply) r = vt_call(d, "rebuild", args, OP_MS);

            vt_assert_fault(r, VTPM_FAULT_TPM_UNSUPPORTED,
                            "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER",
                            "rebuild on a host without secret security user");
        }
        live1 = dom_xml(A, uuid2, false);
        inact1 = dom_xml(A, uuid2, true);
        if (strcmp(live0, live1) != 0)
            fail_msg("TPMUnsupported rebuild changed the live domain XML:\nbefore:\n%s\nafter:\n%s",
                     live0, live1);
        if (strcmp(inact0, inact1) != 0)
            fail_msg("TPMUnsupported rebuild changed the domain definition:\nbefore:\n%s\n"
                     "after:\n%s", inact0, inact1);
        assert_dom_state(A, uuid2, "running", "TPMUnsupported rebuild");
        destroy_on(A, uuid2, "destroy");
    }
}

/* ---- 8. idempotency under redelivery ----------------------------------------------------------------- */

/* Every state-moving request sent twice (each copy its own message_id, so
 * the handler itself runs twice, not the reply cache), along one chain in
 * which the guest never runs: the state file must stay S throughout. */
static void
test_idempotency(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *S = NULL;
    g_autofree char *inc_b = p_incoming(B, uuid), *inc_a = p_incoming(A, uuid);
    g_autofree char *kept_b = p_kept(B, uuid);
    g_autofree char *vol = p_shelved(uuid);
    xfer x1 = { 0 }, x2 = { 0 }, x3 = { 0 }, s1 = { 0 }, s2 = { 0 };

    begin("idempotency under redelivery");
    S = spawn_off(&in);

    /* migrate_disk_and_power_off: the kept copy is reused, same archive. */
    migrate(A, B, &in, &x1, "migrate (first)");
    migrate(A, B, &in, &x2, "migrate (again)");
    if (strcmp(x1.sha256, x2.sha256) != 0 || x1.bytes != x2.bytes)
        fail_msg("migrate sent twice: the transfers differ (%s, %" G_GUINT64_FORMAT " bytes vs "
                 "%s, %" G_GUINT64_FORMAT " bytes)", x1.sha256, x1.bytes, x2.sha256, x2.bytes);
    assert_file_is(inc_b, &x2, "migrate sent twice: the incoming volume");
    assert_archive(inc_b, S, "migrate sent twice: the incoming volume");
    assert_state_sha(A, uuid, STATE_V2, S, "migrate sent twice: the source");

    /* finish_migration: the second finds the work done. */
    for (int i = 0; i < 2; i++) {
        const char *what = i ? "finish_migration (again)" : "finish_migration (first)";
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&in, &FL_TPM, false, &x1), what);

        assert_res_str(r, "vtpm_state", "restored", what);
        assert_restored_off(B, uuid, S, what);
        assert_gone(inc_b, what, "incoming volume");
    }

    /* confirm_migration: the second has nothing pending. */
    for (int i = 0; i < 2; i++) {
        const char *what = i ? "confirm_migration (again)" : "confirm_migration (first)";
        g_autoptr(vt_reply) r = call_ok(A, "confirm_migration", args_inst(&in), what);

        if (vt_obj_bool(&r->rep->result, "confirmed") != (i == 0))
            fail_msg("%s: result.confirmed should be %s", what, i ? "false" : "true");
        assert_source_clean(A, uuid, what);
        assert_restored_off(B, uuid, S, what);
    }

    /* finish_revert_migration: b -> a, destroy on a, revert on b twice. */
    migrate(B, A, &in, &x3, "migrate b -> a");
    call_ok_free(A, "finish_migration", args_finish(&in, &FL_TPM, false, &x3),
                 "finish_migration on a");
    destroy_on(A, uuid, "destroy on a (revert)");
    for (int i = 0; i < 2; i++) {
        const char *what = i ? "finish_revert_migration (again)"
                             : "finish_revert_migration (first)";
        g_autoptr(vt_reply) r = call_ok(B, "finish_revert_migration",
                                        args_inst_power(&in, false), what);

        assert_res_str(r, "vtpm_state", "restored", what);
        assert_restored_off(B, uuid, S, what);
        assert_gone(kept_b, what, "kept copy");
    }
    assert_gone(inc_a, "revert", "incoming volume on a");

    /* shelve: the second answers from the store. */
    shelve_on(B, &in, &s1, "shelve (first)");
    shelve_on(B, &in, &s2, "shelve (again)");
    if (strcmp(s1.sha256, s2.sha256) != 0 || s1.bytes != s2.bytes)
        fail_msg("shelve sent twice: the answers differ (%s vs %s)", s1.sha256, s2.sha256);
    assert_file_is(vol, &s1, "shelve sent twice: the shelved volume");
    assert_archive(vol, S, "shelve sent twice: the shelved volume");
    assert_nothing_on(B, uuid, "shelve sent twice");

    /* unshelve: the second finds the domain there and the archive gone. */
    for (int i = 0; i < 2; i++) {
        const char *what = i ? "unshelve (again)" : "unshelve (first)";
        g_autoptr(vt_reply) r = call_ok(A, "unshelve", args_unshelve(&in, &s1, false), what);

        assert_res_str(r, "vtpm_state", "restored", what);
        assert_restored_off(A, uuid, S, what);
        assert_gone(vol, what, "shelved archive");
    }
    destroy_on(A, uuid, "destroy");
    xfer_clear(&x1);
    xfer_clear(&x2);
    xfer_clear(&x3);
    xfer_clear(&s1);
    xfer_clear(&s2);
}

/* ---- 8b. rollback: an archive older than what the host has seen ---------------------------------- */

/* Put @data back as the volume file @path of pool @pool on host @h, as
 * whoever can write the pool's directory could (then libvirt re-reads
 * the pool, as it would on its own next start). */
static void
put_volume(int h, const char *pool, const char *path, GBytes *data)
{
    g_autoptr(GError) gerr = NULL;

    if (!g_file_set_contents_full(path, g_bytes_get_data(data, NULL), g_bytes_get_size(data),
                                  G_FILE_SET_CONTENTS_CONSISTENT, 0600, &gerr))
        fail_msg("writing %s: %s", path, gerr->message);
    if (vt_virsh(host_name[h], NULL, "pool-refresh", pool, NULL) != 0)
        fail_msg("virsh pool-refresh %s on host %s failed", pool, host_name[h]);
}

/* A forced rollback is logged by the worker that did it. */
static void
assert_forced_logged(int h, const char *uuid, const char *what)
{
    const char *needles[] = { uuid, "older than generation", "(forced)", NULL };

    if (!vt_vtpmd_wait_log(dmn[h], needles, 10000))
        fail_msg("%s: the log of host %s's vtpmd does not say that instance %s was rolled back "
                 "on request (force)", what, host_name[h], uuid);
}

/* docs/security.md "Rollback: generations": finish_migration refuses an
 * incoming archive older than the newest generation the destination has
 * made or restored for the instance, even with the matching
 * vtpm_transfer, and changes nothing; force: true restores it. */
static void
test_rollback_finish(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance big = { .uuid = uuid, .fl = &FL_TPM_BIG };
    g_autofree char *inc_b = p_incoming(B, uuid), *kept_b = p_kept(B, uuid);
    g_autofree char *S1 = NULL, *S2 = NULL;
    g_autoptr(GBytes) old = NULL;
    xfer x1 = { 0 }, x2 = { 0 };

    begin("rollback refused: finish_migration");
    S1 = spawn_off(&in);
    /* Generation g1: a -> b; the guest then runs on b. */
    migrate(A, B, &in, &x1, "migrate a -> b (g1)");
    old = read_file(inc_b);
    call_ok_free(B, "finish_migration", args_finish(&in, &FL_TPM, true, &x1),
                 "finish_migration on b (g1)");
    call_ok_free(A, "confirm_migration", args_inst(&in), "confirm on a");
    /* Generation g2, made on b by a resize in place. */
    migrate(B, B, &in, &x2, "resize in place on b (g2)");
    S2 = state_sha(B, uuid, STATE_V2, "after the resize in place");
    if (strcmp(S1, S2) == 0)
        fail_msg("the guest ran on b, yet its state did not change (%s): the test cannot tell "
                 "the two generations apart", S1);
    /* The g1 archive comes back as the incoming volume. */
    put_volume(B, "vtpm-incoming", inc_b, old);
    {
        g_autoptr(vt_reply) r = call(B, "finish_migration",
                                     args_finish(&big, &FL_TPM, false, &x1));

        vt_assert_fault(r, VTPM_FAULT_STATE_INTEGRITY, "older than generation",
                        "finish_migration of an older archive");
        print_message("refused: %s\n", vt_reply_summary(r));
    }
    assert_file_is(inc_b, &x1, "the refused archive stays where it was");
    assert_state_sha(B, uuid, STATE_V2, S2, "the refused finish_migration");
    assert_dom_flavor(B, uuid, &FL_TPM, "the refused finish_migration");
    assert_dom_state(B, uuid, "shut off", "the refused finish_migration");
    /* force: true restores it, as the caller asked. */
    {
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish_force(&big, &FL_TPM, false, &x1, true),
                                        "finish_migration of an older archive, forced");

        assert_res_str(r, "vtpm_state", "restored", "the forced finish_migration");
    }
    assert_restored_off(B, uuid, S1, "the forced finish_migration");
    assert_forced_logged(B, uuid, "the forced finish_migration");
    assert_dom_flavor(B, uuid, &FL_TPM_BIG, "the forced finish_migration");
    assert_gone(inc_b, "the forced finish_migration", "incoming volume");
    call_ok_free(B, "confirm_migration", args_inst(&big), "confirm the resize in place");
    assert_gone(kept_b, "confirm the resize in place", "kept copy");
    destroy_on(B, uuid, "destroy on b");
    xfer_clear(&x1);
    xfer_clear(&x2);
}

/* The same for finish_revert_migration: a kept copy older than a
 * generation the source made since (here a shelve without offload after
 * the resize) is refused, the kept copy kept, nothing defined; force
 * restores it. */
static void
test_rollback_revert(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance big = { .uuid = uuid, .fl = &FL_TPM_BIG };
    g_autofree char *kept = p_kept(A, uuid), *sd = p_state_dir(A, uuid);
    g_autofree char *vol = p_shelved(uuid), *vol_name = NULL;
    g_autofree char *S = NULL, *kept_sha = NULL;
    xfer x = { 0 }, sh = { 0 };

    begin("rollback refused: finish_revert_migration");
    S = spawn_off(&in);
    /* Resize in place: the kept copy is generation g1. */
    migrate(A, A, &in, &x, "resize in place (g1)");
    call_ok_free(A, "finish_migration", args_finish(&big, &FL_TPM, true, &x),
                 "finish_migration in place");
    kept_sha = sha_of(kept);
    /* Generation g2 on the same host: a shelve that keeps the instance. */
    {
        g_autoptr(vt_reply) r = call_ok(A, "shelve", args_shelve(&big, false),
                                        "shelve without offload (g2)");

        res_xfer(r, "shelved", &sh, "shelve without offload");
        if (vt_obj_bool(&r->rep->result, "offloaded"))
            fail_msg("shelve with offload=false: result.offloaded should be false");
    }
    /* The revert flow: destroy on the destination (this host), then
     * finish_revert_migration, which would restore the g1 kept copy. */
    call_ok_free(A, "destroy", vt_args_destroy(uuid, -1), "destroy (revert flow)");
    assert_present(kept, "destroy (revert flow)", "kept copy");
    {
        g_autoptr(vt_reply) r = call(A, "finish_revert_migration", args_revert(&in, false, false));

        vt_assert_fault(r, VTPM_FAULT_STATE_INTEGRITY, "older than generation",
                        "finish_revert_migration to an older kept copy");
        print_message("refused: %s\n", vt_reply_summary(r));
    }
    {
        g_autofree char *now = sha_of(kept);

        if (g_strcmp0(now, kept_sha) != 0)
            fail_msg("the refused revert changed or removed the kept copy %s", kept);
    }
    assert_no_domain(A, uuid, "the refused revert");
    assert_gone(sd, "the refused revert", "state dir");
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_revert_migration", args_revert(&in, false, true),
                                        "finish_revert_migration, forced");

        assert_res_str(r, "vtpm_state", "restored", "the forced revert");
    }
    assert_restored_off(A, uuid, S, "the forced revert");
    assert_forced_logged(A, uuid, "the forced revert");
    assert_dom_flavor(A, uuid, &FL_TPM, "the forced revert");
    assert_gone(kept, "the forced revert", "kept copy");
    destroy_on(A, uuid, "destroy");
    vol_name = g_path_get_basename(vol);
    if (vt_virsh(host_name[A], NULL, "vol-delete", "--pool", "vtpm-shelved", vol_name, NULL) != 0)
        fail_msg("removing the shelved archive %s failed", vol_name);
    xfer_clear(&x);
    xfer_clear(&sh);
}

/* ---- UEFI: the variable store follows the TPM state -------------------------------------------------- */
/*
 * A UEFI instance with a vTPM keeps its variable store (libvirt's <nvram>)
 * in its state dir, var/lib/libvirt/swtpm/<uuid>/nvram.fd, and it moves in
 * the same archive as the TPM state.  Like the TPM state it is compared at
 * quiescent points by sha256: N, the store right after a power-off, versus
 * the store wherever the operation left it (power_on=false) and inside
 * every archive.  A store that was not carried would be a copy of the
 * destination's template: host a's is Debian's snakeoil pair (pinned),
 * host b's Microsoft's keys (auto-selection), so a move between them
 * shows; on one host the guest's own writes tell a store from its template
 * (OVMF writes its variables some 20 s into its first boot under TCG, which
 * uefi_spawn_off waits for where it matters).
 */

static const char *const props_uefi_sb[] = { "hw_firmware_type", "uefi", "os_secure_boot",
                                             "required", NULL };
static const char *const props_uefi_sb_tis[] = { "hw_firmware_type", "uefi", "os_secure_boot",
                                                 "required", "hw_tpm_version", "2.0",
                                                 "hw_tpm_model", "tpm-tis", NULL };
static const char *const props_uefi_sb_crb[] = { "hw_firmware_type", "uefi", "os_secure_boot",
                                                 "required", "hw_tpm_version", "2.0",
                                                 "hw_tpm_model", "tpm-crb", NULL };
static const char *const props_uefi_crb[] = { "hw_firmware_type", "uefi", "hw_tpm_version", "2.0",
                                              "hw_tpm_model", "tpm-crb", NULL };
static const char *const props_uefi_tis[] = { "hw_firmware_type", "uefi", "hw_tpm_version", "2.0",
                                              "hw_tpm_model", "tpm-tis", NULL };
static const char *const props_uefi[] = { "hw_firmware_type", "uefi", NULL };
static const char *const specs_20_sb[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis",
                                           "os:secure_boot", "required", NULL };
static const char *const specs_20_nosb[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis",
                                             "os:secure_boot", "disabled", NULL };
static const flavor FL_TPM_SB = { "m1.lc-sb", 64, specs_20_sb };
static const flavor FL_TPM_SB_BIG = { "m2.lc-sb", 96, specs_20_sb };
static const flavor FL_TPM_NOSB = { "m1.lc-nosb", 64, specs_20_nosb };

static char *
p_nvram(int h, const char *uuid)
{
    return hpath(h, "var/lib/libvirt/swtpm/%s/nvram.fd", uuid);
}

/* sha256 of the store, which must exist. */
static char *
nvram_sha(int h, const char *uuid, const char *what)
{
    g_autofree char *p = p_nvram(h, uuid);
    char *sha = sha_of(p);

    if (!sha)
        fail_msg("%s: no variable store %s on host %s", what, p, host_name[h]);
    return sha;
}

static void
assert_nvram_sha(int h, const char *uuid, const char *want, const char *what)
{
    g_autofree char *got = nvram_sha(h, uuid, what);

    if (strcmp(got, want) != 0)
        fail_msg("%s: the variable store on host %s has sha256 %s, expected %s (the store "
                 "before the operation)", what, host_name[h], got, want);
}

static ino_t
nvram_ino(int h, const char *uuid, const char *what)
{
    g_autofree char *p = p_nvram(h, uuid);
    struct stat st;

    if (lstat(p, &st) < 0)
        fail_msg("%s: %s: %s", what, p, g_strerror(errno));
    return st.st_ino;
}

/* The template libvirt made the running domain's store from (its live
 * XML: <nvram template='...'>). */
static char *
store_template(int h, const char *uuid, const char *what)
{
    g_autofree char *xml = dom_xml(h, uuid, false);
    const char *t = strstr(xml, "<nvram template='");
    const char *end = t ? strchr(t + 17, '\'') : NULL;

    if (!end)
        fail_msg("%s: the running domain names no store template:\n%s", what, xml);
    return g_strndup(t + 17, (gsize)(end - t - 17));
}

/* Wait until the running guest's firmware has written its store: it is
 * no longer its template. */
static void
wait_store_written(int h, const char *uuid, const char *what)
{
    g_autofree char *tmpl = store_template(h, uuid, what);
    g_autofree char *tsha = sha_of(tmpl);
    gint64 end = g_get_monotonic_time() + 240 * G_USEC_PER_SEC;

    if (!tsha)
        fail_msg("%s: cannot read the template %s", what, tmpl);
    while (g_get_monotonic_time() < end) {
        g_autofree char *now = nvram_sha(h, uuid, what);

        if (strcmp(now, tsha) != 0)
            return;
        g_usleep(G_USEC_PER_SEC);
    }
    fail_msg("%s: OVMF did not write its variable store (still the template %s) in 240 s",
             what, tmpl);
}

/* spawn on a, let the firmware write its store when @written, power off:
 * S (TPM state) and *N (the store). */
static char *
uefi_spawn_off(const instance *in, bool written, char **N)
{
    char *S;

    spawn_on(A, in, true);
    if (written)
        wait_store_written(A, in->uuid, "spawn");
    S = power_off_sha(A, in, STATE_V2, "power_off after spawn");
    *N = nvram_sha(A, in->uuid, "power_off after spawn");
    return S;
}

/* The store as libvirt makes it (root 0600, QEMU's), in the state dir the
 * domain names. */
static void
assert_store_in_place(int h, const char *uuid, const char *what)
{
    g_autofree char *p = p_nvram(h, uuid);
    g_autofree char *xml = dom_xml(h, uuid, true);
    g_autofree char *want = g_strdup_printf("/var/lib/libvirt/swtpm/%s/nvram.fd</nvram>", uuid);

    assert_owner_mode(p, 0, 0, 0600, "root:root", what);
    if (!strstr(xml, want))
        fail_msg("%s: the domain on host %s should keep its store in the state dir:\n%s", what,
                 host_name[h], xml);
}

/* A reply's firmware: {type: uefi, secure_boot: @sb, machine: q35}. */
static void
assert_res_uefi(const vt_reply *r, bool sb, const char *what)
{
    assert_res_str(r, "firmware.type", "uefi", what);
    assert_res_str(r, "firmware.machine", "q35", what);
    if (vt_obj_bool(&r->rep->result, "firmware.secure_boot") != sb)
        fail_msg("%s: result.firmware.secure_boot should be %s", what, sb ? "true" : "false");
}

static void
uefi_destroy(int h, const char *uuid, const char *what)
{
    g_autofree char *st = p_nvram(h, uuid);
    g_autoptr(vt_reply) r = call_ok(h, "destroy", vt_args_destroy(uuid, -1), what);

    assert_res_str(r, "nvram_state", "deleted", what);
    assert_gone(st, what, "variable store");
    assert_no_domain(h, uuid, what);
}

/* Power cycle (the store kept, the file itself), migration a -> b with the
 * store in both archives and back in place on b, confirm, destroy. */
static void
test_uefi_migration(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM, .props = props_uefi_sb };
    g_autofree char *S = NULL, *N = NULL, *N2 = NULL;
    g_autofree char *inc = p_incoming(B, uuid), *kept = p_kept(A, uuid);
    g_autofree char *st_a = p_nvram(A, uuid);
    ino_t ino;
    xfer x = { 0 };

    begin("UEFI: power cycle, migration a -> b");
    {
        g_autoptr(vt_reply) r = call_ok(A, "spawn", args_inst(&in), "spawn");

        assert_res_uefi(r, true, "spawn");
    }
    assert_store_in_place(A, uuid, "spawn");
    {
        g_autofree char *xml = dom_xml(A, uuid, false);

        /* The pinned pair of host a, with SMM. */
        if (!strstr(xml, SNAKEOIL_CODE) || !strstr(xml, SNAKEOIL_VARS) ||
            !strstr(xml, "<smm state='on'/>") || !strstr(xml, "secure='yes'"))
            fail_msg("spawn: host a should run the snakeoil pair with SMM:\n%s", xml);
    }
    S = power_off_sha(A, &in, STATE_V2, "power_off");
    N = nvram_sha(A, uuid, "power_off");
    ino = nvram_ino(A, uuid, "power_off");
    call_ok_free(A, "power_on", args_inst(&in), "power_on");
    g_free(S);
    S = power_off_sha(A, &in, STATE_V2, "power_off after the power cycle");
    if (nvram_ino(A, uuid, "power cycle") != ino)
        fail_msg("power cycle: the variable store was made anew (another inode)");
    N2 = nvram_sha(A, uuid, "power cycle");

    migrate(A, B, &in, &x, "migrate_disk_and_power_off a -> b");
    assert_file_is(inc, &x, "migrate: the incoming volume");
    assert_archive_with(inc, S, N2, "migrate: the incoming volume");
    assert_archive_with(kept, S, N2, "migrate: the kept copy");
    {
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&in, &FL_TPM, false, &x), "finish_migration");

        assert_res_str(r, "vtpm_state", "restored", "finish_migration");
        assert_res_str(r, "nvram_state", "restored", "finish_migration");
        assert_res_uefi(r, true, "finish_migration");
    }
    assert_restored_off(B, uuid, S, "finish_migration");
    assert_nvram_sha(B, uuid, N2, "finish_migration");
    assert_store_in_place(B, uuid, "finish_migration");
    call_ok_free(A, "confirm_migration", args_inst(&in), "confirm_migration");
    assert_source_clean(A, uuid, "confirm_migration");
    assert_gone(st_a, "confirm_migration", "variable store on a");
    /* b auto-selects its firmware; the store keeps the keys it came with. */
    call_ok_free(B, "power_on", args_inst(&in), "power_on on b");
    assert_dom_state(B, uuid, "running", "power_on on b");
    uefi_destroy(B, uuid, "destroy on b");
    xfer_clear(&x);
}

/* Resize in place and revert (the store back from the kept copy), then a
 * resize to b whose flavor turns Secure Boot off: the TPM state comes
 * along, the store does not (it holds Secure Boot keys); the revert brings
 * both back on a. */
static void
test_uefi_resize_revert(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM_SB, .props = props_uefi };
    instance big = { .uuid = uuid, .fl = &FL_TPM_SB_BIG, .props = props_uefi };
    instance nosb = { .uuid = uuid, .fl = &FL_TPM_NOSB, .props = props_uefi };
    g_autofree char *S = NULL, *N = NULL;
    g_autofree char *st_b = p_nvram(B, uuid);
    xfer x = { 0 }, y = { 0 };

    begin("UEFI: resize in place, revert, resize turning Secure Boot off");
    S = uefi_spawn_off(&in, true, &N);
    migrate(A, A, &in, &x, "resize in place");
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_migration",
                                        args_finish(&big, &FL_TPM_SB, false, &x),
                                        "finish_migration in place");

        assert_res_str(r, "nvram_state", "restored", "finish_migration in place");
    }
    assert_nvram_sha(A, uuid, N, "finish_migration in place");
    destroy_on(A, uuid, "destroy (revert flow)");
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_revert_migration", args_revert(&in, false, false),
                                        "finish_revert_migration");

        assert_res_str(r, "vtpm_state", "restored", "finish_revert_migration");
        assert_res_str(r, "nvram_state", "restored", "finish_revert_migration");
    }
    assert_restored_off(A, uuid, S, "finish_revert_migration");
    assert_nvram_sha(A, uuid, N, "finish_revert_migration");
    assert_store_in_place(A, uuid, "finish_revert_migration");

    migrate(A, B, &in, &y, "resize to b");
    {
        g_autoptr(vt_reply) r = call_ok(B, "finish_migration",
                                        args_finish(&nosb, &FL_TPM_SB, false, &y),
                                        "finish_migration, Secure Boot off");
        g_autofree char *xml = dom_xml(B, uuid, true);

        assert_res_str(r, "vtpm_state", "restored", "finish_migration, Secure Boot off");
        assert_res_str(r, "nvram_state", "fresh", "finish_migration, Secure Boot off");
        assert_res_uefi(r, false, "finish_migration, Secure Boot off");
        if (!strstr(xml, "<feature enabled='no' name='secure-boot'/>"))
            fail_msg("finish_migration: the domain on b should have Secure Boot off:\n%s", xml);
    }
    assert_restored_off(B, uuid, S, "finish_migration, Secure Boot off");
    assert_gone(st_b, "finish_migration, Secure Boot off", "store made with Secure Boot keys");
    destroy_on(B, uuid, "destroy on b (revert flow)");
    {
        g_autoptr(vt_reply) r = call_ok(A, "finish_revert_migration", args_revert(&in, false, false),
                                        "finish_revert_migration from b");

        assert_res_str(r, "nvram_state", "restored", "finish_revert_migration from b");
    }
    assert_nvram_sha(A, uuid, N, "finish_revert_migration from b");
    uefi_destroy(A, uuid, "destroy");
    xfer_clear(&x);
    xfer_clear(&y);
}

/* Shelve on a, unshelve on b: the store in the shelved archive and back. */
static void
test_uefi_shelve(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM, .props = props_uefi_sb };
    g_autofree char *S = NULL, *N = NULL;
    g_autofree char *vol = p_shelved(uuid), *st_a = p_nvram(A, uuid);
    xfer sh = { 0 };

    begin("UEFI: shelve on a, unshelve on b");
    S = uefi_spawn_off(&in, false, &N);
    shelve_on(A, &in, &sh, "shelve");
    assert_file_is(vol, &sh, "shelve");
    assert_archive_with(vol, S, N, "shelve");
    assert_gone(st_a, "shelve", "variable store on a");
    {
        g_autoptr(vt_reply) r = call_ok(B, "unshelve", args_unshelve(&in, &sh, false),
                                        "unshelve on b");

        assert_res_str(r, "vtpm_state", "restored", "unshelve on b");
        assert_res_str(r, "nvram_state", "restored", "unshelve on b");
    }
    assert_restored_off(B, uuid, S, "unshelve on b");
    assert_nvram_sha(B, uuid, N, "unshelve on b");
    assert_store_in_place(B, uuid, "unshelve on b");
    assert_gone(vol, "unshelve", "shelved archive");
    uefi_destroy(B, uuid, "destroy on b");
    xfer_clear(&sh);
}

/* One rebuild per step, saying what became of the store. */
static void
uefi_rebuild(const instance *in, const char *vtpm, const char *nvram, const char *what)
{
    g_autoptr(vt_reply) r = call_ok(A, "rebuild", args_inst(in), what);

    assert_res_str(r, "vtpm_state", vtpm, what);
    assert_res_str(r, "nvram_state", nvram, what);
    assert_dom_state(A, in->uuid, "running", what);
}

/* The store belongs to the machine like the TPM: kept through a new image,
 * also when the TPM is replaced; new when the firmware changes; gone with
 * UEFI, and new again with it. */
static void
test_uefi_rebuild(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-1", .props = props_uefi_sb_tis };
    instance img2 = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-2", .props = props_uefi_sb_tis };
    instance crb = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-3", .props = props_uefi_sb_crb };
    instance nosb = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-4", .props = props_uefi_crb };
    instance bios = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-5", .props = props_20_crb };
    instance back = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-6", .props = props_uefi_crb };
    g_autofree char *st = p_nvram(A, uuid);
    g_autofree char *S = NULL, *N = NULL;
    ino_t ino;

    begin("UEFI: rebuild");
    S = uefi_spawn_off(&in, false, &N);
    ino = nvram_ino(A, uuid, "spawn");
    uefi_rebuild(&img2, "kept", "kept", "rebuild, same firmware");
    if (nvram_ino(A, uuid, "rebuild, same firmware") != ino)
        fail_msg("rebuild, same firmware: the store was made anew");
    uefi_rebuild(&crb, "replaced", "kept", "rebuild to tpm-crb, same firmware");
    if (nvram_ino(A, uuid, "rebuild to tpm-crb") != ino)
        fail_msg("rebuild to tpm-crb: the store did not come along with the machine");
    uefi_rebuild(&nosb, "kept", "replaced", "rebuild, Secure Boot off");
    if (nvram_ino(A, uuid, "rebuild, Secure Boot off") == ino)
        fail_msg("rebuild, Secure Boot off: the store with Secure Boot keys was kept");
    uefi_rebuild(&bios, "kept", "deleted", "rebuild to BIOS");
    assert_gone(st, "rebuild to BIOS", "variable store");
    uefi_rebuild(&back, "kept", "replaced", "rebuild back to UEFI");
    assert_present(st, "rebuild back to UEFI", "variable store");
    uefi_destroy(A, uuid, "destroy");
}

/* rekey (host mode, domain shut off): the store stays, the same file;
 * destroy(keep_vtpm) keeps it with the TPM state, a spawn adopts both. */
static void
test_uefi_rekey_keep(void **state)
{
    static const char *const specs_host_sb[] = { "hw:tpm_version", "2.0", "hw:tpm_model",
                                                 "tpm-tis", "hw:tpm_secret_security", "host",
                                                 NULL };
    static const flavor FL_HOST = { "m1.lc-host-uefi", 64, specs_host_sb };
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_HOST, .props = props_uefi_sb };
    g_autofree char *S = NULL, *N = NULL;
    ino_t ino;

    begin("UEFI: rekey, destroy keeping the state, spawn adopting it");
    S = uefi_spawn_off(&in, false, &N);
    ino = nvram_ino(A, uuid, "spawn");
    {
        g_autoptr(vt_reply) r = call_ok(A, "rekey", args_inst(&in), "rekey");

        if (vt_obj_bool(&r->rep->result, "restarted"))
            fail_msg("rekey: a shut off domain should not be restarted");
    }
    assert_nvram_sha(A, uuid, N, "rekey");
    if (nvram_ino(A, uuid, "rekey") != ino)
        fail_msg("rekey: the store should be the same file after the swap");
    {
        g_autoptr(vt_reply) r = call_ok(A, "destroy", vt_args_destroy(uuid, 1), "destroy, keep");

        assert_res_str(r, "vtpm_state", "kept", "destroy, keep");
        assert_res_str(r, "nvram_state", "kept", "destroy, keep");
    }
    assert_nvram_sha(A, uuid, N, "destroy, keep");
    spawn_on(A, &in, false);
    assert_nvram_sha(A, uuid, N, "spawn adopting the kept state");
    assert_store_in_place(A, uuid, "spawn adopting the kept state");
    uefi_destroy(A, uuid, "destroy");
}

/* An archive from before the store (a BIOS instance's, one file): an
 * unshelve that now asks for UEFI restores the TPM and starts a store. */
static void
test_uefi_one_file_archive(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance bios = { .uuid = uuid, .fl = &FL_TPM };
    instance uefi = { .uuid = uuid, .fl = &FL_TPM, .props = props_uefi_sb };
    g_autofree char *S = NULL, *vol = p_shelved(uuid), *st_b = p_nvram(B, uuid);
    xfer sh = { 0 };

    begin("UEFI: a one-file archive");
    S = spawn_off(&bios);
    shelve_on(A, &bios, &sh, "shelve (BIOS)");
    assert_archive(vol, S, "shelve (BIOS)");
    {
        g_autoptr(vt_reply) r = call_ok(B, "unshelve", args_unshelve(&uefi, &sh, false),
                                        "unshelve as UEFI");

        assert_res_str(r, "vtpm_state", "restored", "unshelve as UEFI");
        assert_res_str(r, "nvram_state", "fresh", "unshelve as UEFI");
    }
    assert_restored_off(B, uuid, S, "unshelve as UEFI");
    assert_gone(st_b, "unshelve as UEFI", "variable store before the first start");
    call_ok_free(B, "power_on", args_inst(&uefi), "power_on");
    assert_present(st_b, "power_on", "variable store");
    uefi_destroy(B, uuid, "destroy");
    xfer_clear(&sh);
}

/* ---- 9. a crash at every named point ------------------------------------------------------------------ */

typedef enum { OP_MIGRATE, OP_FINISH, OP_CONFIRM, OP_REVERT, OP_SHELVE, OP_UNSHELVE, OP_REBUILD } crash_op;

static const char *const op_method[] = {
    [OP_MIGRATE] = "migrate_disk_and_power_off", [OP_FINISH] = "finish_migration",
    [OP_CONFIRM] = "confirm_migration",          [OP_REVERT] = "finish_revert_migration",
    [OP_SHELVE] = "shelve",                      [OP_UNSHELVE] = "unshelve",
    [OP_REBUILD] = "rebuild",
};

typedef struct {
    const char *name;  /* the test's name */
    const char *point; /* VTPMD_CRASH_AT */
    crash_op op;
    bool power_on;     /* finish / revert / unshelve: start the guest (crash with it running) */
    bool change_tpm;   /* rebuild: another TPM model; finish: a resize to TPM 1.2 (fresh) */
    bool uefi;         /* a UEFI Secure Boot instance: its store N is checked like S */
    bool change_fw;    /* rebuild (UEFI): Secure Boot off, the store replaced */
} crash_case;

/* docs/lifecycle.md "Crash points", each operation's points after .start;
 * the after_start points also with power_on=true (Nova's default), where the
 * guest already runs when vtpmd dies, and rebuild also with a vTPM change. */
static const crash_case crash_cases[] = {
    /* <method>.start (worker/dispatch.c) comes before any handler: one
     * state-moving method stands for all, as the code path is shared. */
    { "crash shelve.start", "shelve.start", OP_SHELVE },
    { "crash migrate_disk_and_power_off.after_power_off",
      "migrate_disk_and_power_off.after_power_off", OP_MIGRATE },
    { "crash migrate_disk_and_power_off.after_kept_copy",
      "migrate_disk_and_power_off.after_kept_copy", OP_MIGRATE },
    { "crash migrate_disk_and_power_off.after_upload",
      "migrate_disk_and_power_off.after_upload", OP_MIGRATE },
    { "crash finish_migration.after_restore", "finish_migration.after_restore", OP_FINISH },
    { "crash finish_migration.after_start", "finish_migration.after_start", OP_FINISH },
    { "crash finish_migration.after_start (power_on)", "finish_migration.after_start", OP_FINISH,
      .power_on = true },
    { "crash finish_migration.after_start (fresh TPM, power_on)", "finish_migration.after_start",
      OP_FINISH, .power_on = true, .change_tpm = true },
    { "crash confirm_migration.after_cleanup", "confirm_migration.after_cleanup", OP_CONFIRM },
    { "crash finish_revert_migration.after_restore", "finish_revert_migration.after_restore",
      OP_REVERT },
    { "crash finish_revert_migration.after_start", "finish_revert_migration.after_start",
      OP_REVERT },
    { "crash finish_revert_migration.after_start (power_on)",
      "finish_revert_migration.after_start", OP_REVERT, .power_on = true },
    { "crash shelve.after_power_off", "shelve.after_power_off", OP_SHELVE },
    { "crash shelve.after_store", "shelve.after_store", OP_SHELVE },
    { "crash shelve.after_offload", "shelve.after_offload", OP_SHELVE },
    { "crash unshelve.after_restore", "unshelve.after_restore", OP_UNSHELVE },
    { "crash unshelve.after_start", "unshelve.after_start", OP_UNSHELVE },
    { "crash unshelve.after_start (power_on)", "unshelve.after_start", OP_UNSHELVE,
      .power_on = true },
    { "crash rebuild.after_set_aside (vTPM model change)", "rebuild.after_set_aside", OP_REBUILD,
      .change_tpm = true },
    { "crash rebuild.after_define", "rebuild.after_define", OP_REBUILD },
    { "crash rebuild.after_define (vTPM model change)", "rebuild.after_define", OP_REBUILD,
      .change_tpm = true },
    /* UEFI: the variable store N travels with S (a store that did not
     * would be a copy of the destination's template, host b's another). */
    { "crash migrate_disk_and_power_off.after_kept_copy (UEFI)",
      "migrate_disk_and_power_off.after_kept_copy", OP_MIGRATE, .uefi = true },
    { "crash finish_migration.after_restore (UEFI)", "finish_migration.after_restore", OP_FINISH,
      .uefi = true },
    { "crash finish_migration.after_start (UEFI, power_on)", "finish_migration.after_start",
      OP_FINISH, .power_on = true, .uefi = true },
    { "crash confirm_migration.after_cleanup (UEFI)", "confirm_migration.after_cleanup",
      OP_CONFIRM, .uefi = true },
    { "crash finish_revert_migration.after_restore (UEFI)",
      "finish_revert_migration.after_restore", OP_REVERT, .uefi = true },
    { "crash shelve.after_store (UEFI)", "shelve.after_store", OP_SHELVE, .uefi = true },
    { "crash unshelve.after_restore (UEFI)", "unshelve.after_restore", OP_UNSHELVE, .uefi = true },
    { "crash rebuild.after_define (UEFI, same firmware)", "rebuild.after_define", OP_REBUILD,
      .uefi = true },
    { "crash rebuild.after_define (UEFI, Secure Boot off)", "rebuild.after_define", OP_REBUILD,
      .uefi = true, .change_fw = true },
    { "crash rebuild.after_set_aside (UEFI, Secure Boot off)", "rebuild.after_set_aside",
      OP_REBUILD, .uefi = true, .change_fw = true },
};

static unsigned
crash_lines(const vt_vtpmd *d, const char *point)
{
    g_autofree char *log = vt_vtpmd_log(d);
    g_autofree char *needle = g_strdup_printf("fault injection: crashing at %s", point);
    const char *needles[] = { needle, NULL };

    return vt_count_lines(log, needles);
}

static pid_t
first_pid(const char *prog, const char *uuid)
{
    g_autoptr(GArray) pids = vt_find_procs(prog, uuid);

    return pids->len ? g_array_index(pids, pid_t, 0) : 0;
}

/* The guest the crashed vtpmd had started must still be the one running:
 * a redelivery must neither kill it nor roll its TPM state back to the
 * archive (or wipe it).  @marker, a file in its state dir, stands for what
 * the guest wrote to its TPM since it started. */
static void
assert_guest_untouched(int h, const char *uuid, pid_t qemu, pid_t swtpm, const char *marker,
                       unsigned want_manufactured, const char *what)
{
    pid_t q = first_pid("qemu-system-x86_64", uuid), s = first_pid("swtpm", uuid);
    bool restarted = q != qemu || s != swtpm, replaced = !exists(marker);

    if (restarted || replaced)
        fail_msg("%s: the redelivered request %s%s%s (qemu pid %d -> %d, swtpm pid %d -> %d)",
                 what,
                 restarted ? "killed the guest that was already running and started it again"
                           : "",
                 restarted && replaced ? ", and " : "",
                 replaced ? "replaced the state dir the running guest uses: what the guest "
                            "wrote to its TPM since it started is lost"
                          : "",
                 (int)qemu, (int)q, (int)swtpm, (int)s);
    assert_dom_state(h, uuid, "running", what);
    if (manufactured(h, uuid) != want_manufactured)
        fail_msg("%s: swtpm_setup manufactured %u TPM(s) on host %s, expected %u", what,
                 manufactured(h, uuid), host_name[h], want_manufactured);
}

/* Bring the instance to where the crash case's method applies. */
static void
crash_setup(const crash_case *c, const instance *in_p, xfer *x, xfer *sh)
{
    instance in = *in_p;

    switch (c->op) {
    case OP_FINISH:
        migrate(A, B, &in, x, "setup: migrate");
        break;
    case OP_CONFIRM:
        migrate(A, B, &in, x, "setup: migrate");
        call_ok_free(B, "finish_migration", args_finish(&in, &FL_TPM, false, x),
                     "setup: finish_migration");
        break;
    case OP_REVERT: {
        /* A resize in place, then the revert flow on the same host: the
         * destination's destroy removes domain and state, so the revert
         * has to restore the kept copy — the path the crash points cut.
         * (After a migration to another host the old domain and its state
         * are still in place and the revert restores nothing.) */
        instance big = in;

        big.fl = &FL_TPM_BIG;
        migrate(A, A, &in, x, "setup: resize in place");
        call_ok_free(A, "finish_migration", args_finish(&big, &FL_TPM, false, x),
                     "setup: finish_migration in place");
        destroy_on(A, in.uuid, "setup: destroy (revert flow, same host)");
        break;
    }
    case OP_UNSHELVE:
        shelve_on(A, &in, sh, "setup: shelve");
        break;
    default:
        break;
    }
}

/* The request of the crash case's method. */
static GBytes *
crash_args(const crash_case *c, const instance *in, const instance *in_new, const xfer *x,
           const xfer *sh)
{
    switch (c->op) {
    case OP_MIGRATE: return args_migrate(in, host_addr[B]);
    case OP_FINISH: return args_finish(in_new, &FL_TPM, c->power_on, x);
    case OP_REVERT: return args_inst_power(in, c->power_on);
    case OP_UNSHELVE: return args_unshelve(in, sh, c->power_on);
    case OP_REBUILD: return args_inst(in_new);
    default: return args_inst(in);
    }
}

/* Send @body to host @h's vtpmd armed to crash at the case's point, see
 * it die there, start a fresh one and take the redelivered request's
 * reply.  With power_on, *qemu / *swtpm are the guest the crashed vtpmd
 * started, and @marker stands for what it wrote to its TPM since. */
static vt_reply *
crash_and_redeliver(const crash_case *c, int h, const char *uuid, GBytes *body, const char *mid,
                    const char *marker, pid_t *qemu, pid_t *swtpm)
{
    const char *method = op_method[c->op];
    g_autofree char *env_kv = g_strdup_printf("VTPMD_CRASH_AT=%s", c->point);
    const char *env[] = { env_kv, NULL };
    g_autofree char *corr = NULL;
    vt_reply *r;
    unsigned n0;
    int code;

    /* The acting host's vtpmd, with the crash armed. */
    host_stop(h);
    host_start(h, env);
    n0 = crash_lines(dmn[h], c->point);
    {
        vtpm_client_msg_opts o = { .routing_key = dmn[h]->routing_key, .message_id = mid };
        vtpm_error err = { 0 };

        if (vtpm_client_msg_send(vt_client(), &o, g_bytes_get_data(body, NULL),
                             g_bytes_get_size(body), &corr, &err) < 0) {
            vt_client_drop();
            fail_msg("sending %s: %s", method, err.message);
        }
    }
    code = vt_vtpmd_wait_exit(dmn[h], CRASH_EXIT_MS);
    if (code != 128 + 9) {
        vt_vtpmd_dump(dmn[h]);
        if (code < 0)
            fail_msg("%s: vtpmd on host %s did not crash at %s within %d ms (the point was never "
                     "reached)", c->name, host_name[h], c->point, CRASH_EXIT_MS);
        fail_msg("%s: vtpmd on host %s exited %d, expected death by SIGKILL at %s", c->name,
                 host_name[h], code, c->point);
    }
    if (crash_lines(dmn[h], c->point) != n0 + 1)
        fail_msg("%s: vtpmd died, but its log does not say it crashed at %s", c->name, c->point);
    if (c->power_on) {
        /* The guest the crashed vtpmd started; it writes to its TPM. */
        *qemu = first_pid("qemu-system-x86_64", uuid);
        *swtpm = first_pid("swtpm", uuid);
        assert_dom_state(h, uuid, "running", "after the crash");
        if (!*qemu || !*swtpm)
            fail_msg("%s: the guest should run after the crash (qemu %d, swtpm %d)", c->name,
                     (int)*qemu, (int)*swtpm);
        if (!g_file_set_contents(marker, "x", 1, NULL))
            fail_msg("%s: cannot write %s", c->name, marker);
    }

    /* A fresh vtpmd: the broker redelivers the unacked request. */
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
    host_start(h, NULL);
    r = vt_recv_reply(corr, OP_MS, c->name);
    if (!r->rep || !r->rep->ok) {
        vt_vtpmd_dump(dmn[h]);
        fail_msg("%s: the redelivered %s should complete, got %s", c->name, method,
                 vt_reply_summary(r));
    }
    return r;
}

/* After a rebuild's crash and redelivery: the rebuilt domain, with the
 * old TPM kept or a fresh one, as the case asks, said and done. */
static void
check_rebuilt(const crash_case *c, vt_reply *r, const instance *in_new, const char *uuid,
              const char *N, GBytes *before, unsigned m0)
{
    g_autofree char *sf_a = p_state_file(A, uuid, STATE_V2);
    g_autofree char *xml = dom_xml(A, uuid, true);
    g_autofree char *S2 = NULL, *label = vt_obj_str(&r->rep->result, "vtpm_state");
    g_autoptr(GBytes) after = NULL;
    const char *want = c->change_tpm ? "replaced" : "kept";
    gsize diff;
    unsigned made;
    bool same_tpm;

    assert_dom_state(A, uuid, "running", c->name);
    assert_res_str(r, "nvram_state", !N ? "none" : c->change_fw ? "replaced" : "kept",
                   c->name);
    if (!strstr(xml, "<vtpmd:image id=\"img-2\"/>") ||
        !strstr(xml, c->change_tpm ? "<tpm model='tpm-crb'>" : "<tpm model='tpm-tis'>"))
        fail_msg("%s: the domain should be the rebuilt one (img-2, %s):\n%s", c->name,
                 c->change_tpm ? "tpm-crb" : "tpm-tis", xml);
    S2 = power_off_sha(A, in_new, STATE_V2, "power_off after the rebuild");
    after = read_file(sf_a);
    diff = vt_bytes_differing(before, after);
    made = manufactured(A, uuid) - m0;
    same_tpm = diff <= SAME_TPM_MAX_DIFF && made == 0;
    /* Both the answer and the TPM itself, in one message. */
    if (g_strcmp0(label, want) != 0 || same_tpm != !c->change_tpm)
        fail_msg("%s: expected vtpm_state \"%s\" and %s; got \"%s\" and %s (%zu bytes of "
                 "the state differ from before, %u TPM(s) manufactured)", c->name, want,
                 c->change_tpm ? "a fresh TPM" : "the same TPM", label ? label : "nothing",
                 same_tpm ? "the old TPM" : "a new TPM", diff, made);
    destroy_on(A, uuid, "destroy");
}

static void
test_crash(void **state)
{
    const crash_case *c = *state;
    const char *method = op_method[c->op];
    int h = c->op == OP_FINISH || c->op == OP_UNSHELVE ? B : A;
    g_autofree char *uuid = vt_uuid();
    g_autofree char *mid = g_strdup_printf("lc-crash-%s", uuid);
    g_autofree char *rid = g_strdup_printf("lc-crash-%s", c->point);
    g_autofree char *S = NULL, *N = NULL;
    g_autofree char *inc_b = p_incoming(B, uuid), *kept_a = p_kept(A, uuid);
    g_autofree char *vol = p_shelved(uuid);
    g_autofree char *sf_a = p_state_file(A, uuid, STATE_V2);
    g_autofree char *sd_h = p_state_dir(h, uuid);
    g_autofree char *marker = g_build_filename(sd_h, "lc-written-by-guest", NULL);
    g_autoptr(GBytes) args = NULL, body = NULL, before = NULL;
    g_autoptr(vt_reply) r = NULL;
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance in_new = in;
    xfer x = { 0 }, sh = { 0 };
    pid_t qemu = 0, swtpm = 0;
    unsigned m0;

    begin(c->name);
    if (c->op == OP_FINISH && c->change_tpm)
        in_new.fl = &FL_TPM12;
    if (c->uefi)
        in.props = in_new.props = props_uefi_sb;
    if (c->op == OP_REBUILD) {
        in = (instance){ .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-1",
                         .props = c->uefi ? props_uefi_sb_tis : props_20_tis };
        in_new = (instance){ .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-2",
                             .props = c->change_tpm  ? props_20_crb
                                      : c->change_fw ? props_uefi_tis
                                      : c->uefi      ? props_uefi_sb_tis
                                                     : props_20_tis };
    }

    /* Bring the instance to where @method applies.  A revert restores on
     * the same host: only the firmware's own writes tell its store from a
     * fresh copy of the template. */
    if (c->uefi)
        S = uefi_spawn_off(&in, c->op == OP_REVERT, &N);
    else
        S = spawn_off(&in);
    before = read_file(sf_a);
    m0 = manufactured(A, uuid);
    crash_setup(c, &in, &x, &sh);
    args = crash_args(c, &in, &in_new, &x, &sh);
    body = vt_request(method, args, rid, 0);

    r = crash_and_redeliver(c, h, uuid, body, mid, marker, &qemu, &swtpm);

    switch (c->op) {
    case OP_MIGRATE: {
        g_autofree char *ks = NULL;

        xfer_clear(&x);
        res_xfer(r, "vtpm_transfer", &x, c->name);
        assert_file_is(inc_b, &x, c->name);
        assert_archive_with(inc_b, S, N, c->name);
        ks = sha_of(kept_a);
        if (g_strcmp0(ks, x.sha256) != 0)
            fail_msg("%s: the kept copy on a (sha256 %s) is not the transferred archive (%s)",
                     c->name, ks ? ks : "missing", x.sha256);
        assert_state_sha(A, uuid, STATE_V2, S, c->name);
        assert_dom_state(A, uuid, "shut off", c->name);
        /* ... and the migration completes from there. */
        call_ok_free(B, "finish_migration", args_finish(&in, &FL_TPM, false, &x),
                     "finish_migration after the crash");
        assert_restored_off(B, uuid, S, "finish_migration after the crash");
        if (N)
            assert_nvram_sha(B, uuid, N, "finish_migration after the crash");
        call_ok_free(A, "confirm_migration", args_inst(&in), "confirm after the crash");
        assert_source_clean(A, uuid, "confirm after the crash");
        destroy_on(B, uuid, "destroy on b");
        break;
    }
    case OP_FINISH:
        assert_res_str(r, "vtpm_state", c->change_tpm ? "fresh" : "restored", c->name);
        assert_res_str(r, "nvram_state", !N ? "none" : "restored", c->name);
        assert_gone(inc_b, c->name, "incoming volume");
        if (c->power_on)
            assert_guest_untouched(B, uuid, qemu, swtpm, marker, c->change_tpm ? 1 : 0, c->name);
        else
            assert_restored_off(B, uuid, S, c->name);
        if (N && !c->power_on)
            assert_nvram_sha(B, uuid, N, c->name);
        call_ok_free(A, "confirm_migration", args_inst(&in), "confirm after the crash");
        assert_source_clean(A, uuid, "confirm after the crash");
        destroy_on(B, uuid, "destroy on b");
        break;
    case OP_CONFIRM:
        if (!vt_obj_bool(&r->rep->result, "confirmed"))
            fail_msg("%s: result.confirmed should be true (the crashed run never answered)",
                     c->name);
        assert_source_clean(A, uuid, c->name);
        assert_restored_off(B, uuid, S, "the destination after confirm");
        if (N)
            assert_nvram_sha(B, uuid, N, "the destination after confirm");
        destroy_on(B, uuid, "destroy on b");
        break;
    case OP_REVERT:
        assert_res_str(r, "vtpm_state", "restored", c->name);
        assert_res_str(r, "nvram_state", !N ? "none" : "restored", c->name);
        assert_gone(kept_a, c->name, "kept copy");
        assert_dom_flavor(A, uuid, &FL_TPM, c->name);
        if (c->power_on)
            assert_guest_untouched(A, uuid, qemu, swtpm, marker, m0, c->name); /* spawned on a */
        else
            assert_restored_off(A, uuid, S, c->name);
        if (N && !c->power_on)
            assert_nvram_sha(A, uuid, N, c->name);
        assert_nothing_on(B, uuid, c->name);
        destroy_on(A, uuid, "destroy on a");
        break;
    case OP_SHELVE:
        res_xfer(r, "shelved", &sh, c->name);
        if (!vt_obj_bool(&r->rep->result, "offloaded"))
            fail_msg("%s: result.offloaded should be true", c->name);
        assert_file_is(vol, &sh, c->name);
        assert_archive_with(vol, S, N, c->name);
        assert_nothing_on(A, uuid, c->name);
        call_ok_free(B, "unshelve", args_unshelve(&in, &sh, false), "unshelve after the crash");
        assert_restored_off(B, uuid, S, "unshelve after the crash");
        if (N)
            assert_nvram_sha(B, uuid, N, "unshelve after the crash");
        assert_gone(vol, "unshelve after the crash", "shelved archive");
        destroy_on(B, uuid, "destroy on b");
        break;
    case OP_UNSHELVE:
        assert_res_str(r, "vtpm_state", "restored", c->name);
        assert_res_str(r, "nvram_state", !N ? "none" : "restored", c->name);
        assert_gone(vol, c->name, "shelved archive");
        if (c->power_on)
            assert_guest_untouched(B, uuid, qemu, swtpm, marker, 0, c->name);
        else
            assert_restored_off(B, uuid, S, c->name);
        if (N && !c->power_on)
            assert_nvram_sha(B, uuid, N, c->name);
        destroy_on(B, uuid, "destroy on b");
        break;
    case OP_REBUILD:
        check_rebuilt(c, r, &in_new, uuid, N, before, m0);
        break;
    }
    xfer_clear(&x);
    xfer_clear(&sh);
}

/* ---- 10. libvirtd killed at every step --------------------------------------------------------------- */
/*
 * docs/lifecycle.md promises that a request cut by a crash of libvirtd at any
 * step completes when it is sent again.  Each row holds the acting vtpmd at a
 * named point (VTPMD_PAUSE_DIR, worker/inject.c: only the handler's thread
 * waits), kills the libvirtd that the next step talks to (SIGKILL), and lets
 * the step run into it.  Then: the answer is a retryable fault (an "ok" would
 * mean no libvirt call follows the point, so the row would test nothing);
 * the TPM state S is whole in at least one of its places (state dir, kept
 * copy, transfer volume, shelve store) while that libvirtd is down; once it is
 * back, the same request sent again, as a control plane retries, completes;
 * and what it leaves is what the operation leaves without a fault, with
 * nothing half-done.  Every step boundary that touches libvirt is one row, run
 * once; the rows follow five instances through their lives, so that a spawn
 * serves many rows.
 */

#define LV_TRIES 40
#define LV_TRY_WAIT_US (1000 * 1000)

static const char *const specs_20_host[] = { "hw:tpm_version", "2.0", "hw:tpm_model", "tpm-tis",
                                             "hw:tpm_secret_security", "host", NULL };
static const flavor FL_HOSTKEY = { "m1.lc-host", 64, specs_20_host };

/* $VT_ROOT/pause-<host>/<point><suffix>: vtpmd's pause files. */
static char *
pause_file(int h, const char *point, const char *suffix)
{
    return g_strdup_printf("%s/pause-%s/%s%s", vt_env("VT_ROOT"), host_name[h], point, suffix);
}

/* Both libvirtds up (a failed row may have left one down). */
static void
lv_libvirtds_up(void)
{
    for (int h = 0; h < NHOSTS; h++)
        if (vt_virsh(host_name[h], NULL, "version", NULL) != 0)
            vt_libvirtd_restart(host_name[h]);
}

/* vtpmds with pause points, on TCG, for this part. */
static int
lv_setup(void **state)
{
    lv_libvirtds_up();
    for (int h = 0; h < NHOSTS; h++) {
        g_autofree char *dir = pause_file(h, "", "");
        g_autofree char *env_kv = g_strdup_printf("VTPMD_PAUSE_DIR=%s", dir);
        const char *env[] = { env_kv, NULL };

        if (dmn[h] && vt_vtpmd_running(dmn[h]) && dmn_pausable[h])
            continue;
        host_stop(h);
        if (g_mkdir_with_parents(dir, 0700) < 0)
            fail_msg("%s: %s", dir, g_strerror(errno));
        host_start_virt(h, env, true);
        dmn_pausable[h] = true;
    }
    cur_test[0] = 0;
    t_test = g_get_monotonic_time();
    return 0;
}

/* A failed row may have left libvirtd down and a vtpmd held at a point. */
static int
lv_teardown(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        g_autofree char *dir = pause_file(h, "", "");
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *n;

        while (d && (n = g_dir_read_name(d))) {
            g_autofree char *f = g_build_filename(dir, n, NULL);

            if (!g_str_has_suffix(n, ".paused"))
                unlink(f);
        }
    }
    lv_libvirtds_up();
    return test_teardown(state);
}

/* Send @method(@args) to host @h's vtpmd without waiting: the correlation id. */
static char *
lv_send(int h, const char *method, GBytes *args, const char *what)
{
    g_autofree char *mid = vt_unique("lv");
    g_autoptr(GBytes) body = vt_request(method, args, mid, 0);
    vtpm_client_msg_opts o = { .routing_key = dmn[h]->routing_key, .message_id = mid };
    vtpm_error err = { 0 };
    char *corr = NULL;

    if (vtpm_client_msg_send(vt_client(), &o, g_bytes_get_data(body, NULL), g_bytes_get_size(body),
                         &corr, &err) < 0) {
        vt_client_drop();
        fail_msg("%s: sending %s: %s", what, method, err.message);
    }
    return corr;
}

/* Wait until host @h's vtpmd holds at @point. */
static void
lv_wait_paused(int h, const char *point, const char *what)
{
    g_autofree char *mark = pause_file(h, point, ".paused");
    gint64 end = g_get_monotonic_time() + (gint64)OP_MS * 1000;

    while (!exists(mark)) {
        if (!vt_vtpmd_running(dmn[h])) {
            vt_vtpmd_dump(dmn[h]);
            fail_msg("%s: vtpmd of host %s exited before reaching %s", what, host_name[h], point);
        }
        if (g_get_monotonic_time() >= end) {
            vt_vtpmd_dump(dmn[h]);
            fail_msg("%s: vtpmd of host %s did not reach %s within %d ms", what, host_name[h],
                     point, OP_MS);
        }
        g_usleep(20 * 1000);
    }
}

/* sha256 of the TPM 2.0 state file inside the archive at @path; NULL when
 * there is no such file or member. */
static char *
archive_state_sha(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0, off = 0, size = 0;

    if (!g_file_get_contents(path, &data, &len, NULL) ||
        !tar_find((const guint8 *)data, len, "tpm2/tpm2-00.permall", &off, &size))
        return NULL;
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data + off, size);
}

/* docs/lifecycle.md: the state is always somewhere whole.  At least one of
 * its places must hold S. */
static void
assert_whole_somewhere(const char *uuid, const char *S, const char *what)
{
    g_autoptr(GString) seen = g_string_new(NULL);
    unsigned whole = 0;

    for (int h = 0; h < NHOSTS; h++) {
        char *paths[] = { p_state_file(h, uuid, STATE_V2), p_kept(h, uuid), p_incoming(h, uuid),
                          h == A ? p_shelved(uuid) : NULL };

        for (size_t i = 0; i < G_N_ELEMENTS(paths) && paths[i]; i++) {
            g_autofree char *sha = i == 0 ? sha_of(paths[i]) : archive_state_sha(paths[i]);

            if (sha) {
                whole += strcmp(sha, S) == 0;
                g_string_append_printf(seen, "\n  %s: %.16s...", paths[i], sha);
            }
            g_free(paths[i]);
        }
    }
    if (!whole)
        fail_msg("%s: the TPM state (sha256 %.16s...) is whole nowhere; found:%s", what, S,
                 seen->len ? seen->str : " nothing");
}

/* Nothing half-done on either host: no half-extracted restore, no state set
 * aside, no rekey work dir, no half-written kept copy. */
static void
assert_no_leftovers(const char *uuid, const char *what)
{
    g_autofree char *prefix = g_strdup_printf(".%s.", uuid);

    for (int h = 0; h < NHOSTS; h++) {
        const char *dirs[] = { "var/lib/libvirt/swtpm", "var/lib/vtpmd/kept" };

        for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
            g_autofree char *dir = hpath(h, "%s", dirs[i]);
            g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
            const char *n;

            while (d && (n = g_dir_read_name(d)))
                if (g_str_has_prefix(n, prefix) || (g_str_has_prefix(n, uuid) && strstr(n, ".tmp-")))
                    fail_msg("%s: %s/%s is left behind on host %s", what, dir, n, host_name[h]);
        }
    }
}

/* Send the request again until it answers ok, as a control plane retries a
 * retryable fault (vtpmd may still be waiting out its reconnect backoff). */
static vt_reply *
lv_retry(int h, const char *method, GBytes *args, unsigned *tries, const char *what)
{
    for (unsigned i = 1;; i++) {
        vt_reply *r = vt_call(dmn[h], method, args, OP_MS);

        if (r->rep && r->rep->ok) {
            *tries = i;
            return r;
        }
        if (!r->rep || !r->rep->retryable || i == LV_TRIES) {
            g_autofree char *sum = g_strdup(vt_reply_summary(r));

            vt_reply_free(r);
            vt_vtpmd_dump(dmn[h]);
            fail_msg("%s: %s sent again after libvirtd came back (try %u) answered %s", what,
                     method, i, sum);
        }
        vt_reply_free(r);
        g_usleep(LV_TRY_WAIT_US);
    }
}

typedef struct {
    int h;              /* the acting host */
    const char *method;
    GBytes *args;
    const char *point;  /* where the handler is held */
    int victim;         /* whose libvirtd is killed there */
    const char *uuid;
    const char *S;      /* the state that must stay whole; NULL: not checked here */
    bool back;          /* the victim's libvirtd was restarted already */
    char what[160];
    gint64 t0;
} lv_row;

/* The first half of a row: the request cut by the dead libvirtd, whose
 * answer must be a retryable fault.  Returns with that libvirtd still down. */
static void
lv_cut(lv_row *row)
{
    g_autofree char *arm = pause_file(row->h, row->point, "");
    g_autofree char *corr = NULL;
    g_autoptr(vt_reply) r = NULL;

    g_snprintf(row->what, sizeof(row->what), "%s, libvirtd of host %s killed at %s",
               row->method, host_name[row->victim], row->point);
    row->t0 = g_get_monotonic_time();
    if (!g_file_set_contents(arm, "", 0, NULL))
        fail_msg("%s: cannot create %s", row->what, arm);
    corr = lv_send(row->h, row->method, row->args, row->what);
    lv_wait_paused(row->h, row->point, row->what);
    vt_libvirtd_kill(host_name[row->victim]);
    unlink(arm);
    r = vt_recv_reply(corr, OP_MS, row->what);
    if (!r->rep)
        fail_msg("%s: undecodable reply: %s", row->what, r->error);
    if (r->rep->ok)
        fail_msg("%s: answered ok, but the step after %s should have failed against the dead "
                 "libvirtd (no libvirt call follows the point?)", row->what, row->point);
    if (!r->rep->retryable)
        fail_msg("%s: answered %s, which is final; a libvirtd restart is what a retry is for",
                 row->what, vt_reply_summary(r));
    print_message("[libvirtd] %s: %s\n", row->what, vt_reply_summary(r));
    if (row->S)
        assert_whole_somewhere(row->uuid, row->S, row->what);
}

/* The second half: libvirtd back, the request sent again until it
 * completes.  Returns that reply. */
static vt_reply *
lv_recover(lv_row *row)
{
    gint64 t_back = g_get_monotonic_time();
    unsigned tries = 0;
    vt_reply *r;

    if (!row->back)
        vt_libvirtd_restart(host_name[row->victim]);
    t_back = g_get_monotonic_time() - t_back;
    r = lv_retry(row->h, row->method, row->args, &tries, row->what);
    print_message("[libvirtd] %s: ok after %u retr%s (row %.1f s, of which libvirtd restart "
                  "%.1f s)\n", row->what, tries, tries == 1 ? "y" : "ies",
                  (g_get_monotonic_time() - row->t0) / 1e6, t_back / 1e6);
    assert_no_leftovers(row->uuid, row->what);
    g_bytes_unref(row->args);
    row->args = NULL;
    return r;
}

/* A whole row; takes @args. */
static vt_reply *
lv_kill_at(int h, const char *method, GBytes *args, const char *point, int victim,
           const char *uuid, const char *S)
{
    lv_row row = { .h = h, .method = method, .args = args, .point = point, .victim = victim,
                   .uuid = uuid, .S = S };

    lv_cut(&row);
    return lv_recover(&row);
}

/* The guest on host @h: its qemu and swtpm pids, and a file in its state
 * dir standing for what it writes to its TPM. */
static void
lv_guest_mark(int h, const char *uuid, pid_t *qemu, pid_t *swtpm, char **marker,
              const char *what)
{
    g_autofree char *sd = p_state_dir(h, uuid);

    *qemu = first_pid("qemu-system-x86_64", uuid);
    *swtpm = first_pid("swtpm", uuid);
    if (!*qemu || !*swtpm)
        fail_msg("%s: the guest should run on host %s (qemu %d, swtpm %d)", what, host_name[h],
                 (int)*qemu, (int)*swtpm);
    *marker = g_build_filename(sd, "lc-written-by-guest", NULL);
    if (!g_file_set_contents(*marker, "x", 1, NULL))
        fail_msg("%s: cannot write %s", what, *marker);
}

/* power_off, power_on and rebuild (same vTPM, then another model). */
static void
test_lv_power_rebuild(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_PLAIN, .image_id = "img-1", .props = props_20_tis };
    instance img2 = in, img3 = in, crb = in;
    g_autofree char *sf = p_state_file(A, uuid, STATE_V2);
    g_autofree char *S = NULL;
    g_autoptr(GBytes) first = NULL;

    img2.image_id = "img-2";
    img3.image_id = "img-3";
    crb.image_id = "img-4";
    crb.props = props_20_crb;
    begin("libvirtd killed: power_off, power_on, rebuild");
    spawn_on(A, &in, true);
    {
        g_autoptr(vt_reply) r = lv_kill_at(A, "power_off", args_inst(&in), "power_off.start", A,
                                           uuid, NULL);

        assert_res_str(r, "state", "shutoff", "power_off");
        assert_dom_state(A, uuid, "shut off", "power_off");
    }
    S = state_sha(A, uuid, STATE_V2, "after power_off");
    first = read_file(sf);
    {
        g_autoptr(vt_reply) r = lv_kill_at(A, "power_on", args_inst(&in), "power_on.start", A,
                                           uuid, S);

        assert_res_str(r, "state", "running", "power_on");
        assert_dom_state(A, uuid, "running", "power_on");
    }
    /* Each rebuild with the same vTPM keeps the TPM: the first one, as
     * compared after a power-off (the guest ran in between). */
    for (int i = 0; i < 2; i++) {
        const instance *next = i == 0 ? &img2 : &img3;
        const char *point = i == 0 ? "rebuild.start" : "rebuild.after_power_off";
        g_autoptr(GBytes) now = NULL;

        g_free(S);
        S = power_off_sha(A, i == 0 ? &in : &img2, STATE_V2, "power_off before rebuild");
        now = read_file(sf);
        assert_same_tpm(first, now, point);
        {
            g_autoptr(vt_reply) r = lv_kill_at(A, "rebuild", args_inst(next), point, A, uuid, S);
            g_autofree char *xml = dom_xml(A, uuid, true);
            g_autofree char *img = g_strdup_printf("<vtpmd:image id=\"%s\"/>", next->image_id);

            assert_res_str(r, "vtpm_state", "kept", point);
            assert_dom_state(A, uuid, "running", point);
            if (!strstr(xml, img))
                fail_msg("%s: the domain should carry image %s:\n%s", point, next->image_id, xml);
        }
    }
    if (manufactured(A, uuid) != 1)
        fail_msg("power cycle and rebuilds: swtpm_setup manufactured %u TPMs, expected 1 (the "
                 "same TPM throughout)", manufactured(A, uuid));
    /* Another model: a fresh TPM, and the answer says so. */
    g_free(S);
    S = power_off_sha(A, &img3, STATE_V2, "power_off before the model change");
    {
        g_autoptr(vt_reply) r = lv_kill_at(A, "rebuild", args_inst(&crb), "rebuild.after_define",
                                           A, uuid, NULL);
        g_autofree char *xml = dom_xml(A, uuid, true);
        g_autoptr(GBytes) now = read_file(sf);

        assert_res_str(r, "vtpm_state", "replaced", "rebuild to tpm-crb");
        assert_dom_state(A, uuid, "running", "rebuild to tpm-crb");
        if (!strstr(xml, "<tpm model='tpm-crb'>"))
            fail_msg("rebuild to tpm-crb: the domain should have a CRB TPM:\n%s", xml);
        if (manufactured(A, uuid) != 2 || vt_bytes_differing(first, now) <= SAME_TPM_MAX_DIFF)
            fail_msg("rebuild to tpm-crb: expected one new TPM (manufactured %u, %zu bytes "
                     "differ from the old one)", manufactured(A, uuid) - 1,
                     vt_bytes_differing(first, now));
    }
    destroy_on(A, uuid, "destroy");
}

/* The checks of a completed migrate_disk_and_power_off @from -> @to; N:
 * the variable store of a UEFI instance, NULL without one. */
static void
assert_migrated_with(int from, int to, const char *uuid, const vt_reply *r, const char *S,
                     const char *N, xfer *x, const char *what)
{
    g_autofree char *inc = p_incoming(to, uuid), *kept = p_kept(from, uuid);
    g_autofree char *ks = NULL;

    xfer_clear(x);
    res_xfer(r, "vtpm_transfer", x, what);
    assert_file_is(inc, x, what);
    assert_archive_with(inc, S, N, what);
    ks = sha_of(kept);
    if (g_strcmp0(ks, x->sha256) != 0)
        fail_msg("%s: the kept copy on %s (sha256 %s) is not the transferred archive (%s)", what,
                 host_name[from], ks ? ks : "missing", x->sha256);
    assert_state_sha(from, uuid, STATE_V2, S, what);
    assert_dom_state(from, uuid, "shut off", what);
}

static void
assert_migrated(int from, int to, const char *uuid, const vt_reply *r, const char *S, xfer *x,
                const char *what)
{
    assert_migrated_with(from, to, uuid, r, S, NULL, x, what);
}

/* One migration @from -> @to, each of its three calls with a row (point
 * NULL: a plain call); finish_migration starts the guest with @power_on.
 * The guest must be off on @from, with state S. */
static void
lv_migration(int from, int to, const instance *in, const char *S, const char *p_migrate,
             int v_migrate, const char *p_finish, bool power_on, const char *p_confirm,
             int v_confirm)
{
    const char *uuid = in->uuid;
    g_autofree char *inc = p_incoming(to, uuid);
    g_autoptr(vt_reply) rm = NULL, rf = NULL, rc = NULL;
    pid_t qemu = 0, swtpm = 0;
    g_autofree char *marker = NULL;
    unsigned m0 = manufactured(to, uuid);
    xfer x = { 0 };

    if (p_migrate)
        rm = lv_kill_at(from, "migrate_disk_and_power_off", args_migrate(in, host_addr[to]),
                        p_migrate, v_migrate, uuid, S);
    else
        rm = call_ok(from, "migrate_disk_and_power_off", args_migrate(in, host_addr[to]),
                     "migrate");
    assert_migrated(from, to, uuid, rm, S, &x, p_migrate ? p_migrate : "migrate");

    if (p_finish && power_on && strcmp(p_finish, "finish_migration.after_start") == 0) {
        /* The guest runs when libvirtd dies: it must survive both the
         * libvirtd restart and the retried request. */
        lv_row row = { .h = to, .method = "finish_migration",
                       .args = args_finish(in, in->fl, true, &x), .point = p_finish,
                       .victim = to, .uuid = uuid, .S = S };

        lv_cut(&row);
        lv_guest_mark(to, uuid, &qemu, &swtpm, &marker, row.what);
        rf = lv_recover(&row);
        assert_guest_untouched(to, uuid, qemu, swtpm, marker, m0, row.what);
    } else if (p_finish) {
        rf = lv_kill_at(to, "finish_migration", args_finish(in, in->fl, power_on, &x), p_finish,
                        to, uuid, S);
    } else {
        rf = call_ok(to, "finish_migration", args_finish(in, in->fl, power_on, &x), "finish");
    }
    assert_res_str(rf, "vtpm_state", "restored", p_finish ? p_finish : "finish");
    assert_gone(inc, p_finish ? p_finish : "finish", "incoming volume");
    if (power_on) {
        assert_dom_state(to, uuid, "running", p_finish ? p_finish : "finish");
        if (manufactured(to, uuid) != m0)
            fail_msg("%s: swtpm_setup manufactured a TPM on host %s instead of using the "
                     "migrated state", p_finish, host_name[to]);
    } else {
        assert_restored_off(to, uuid, S, p_finish ? p_finish : "finish");
    }

    if (p_confirm)
        rc = lv_kill_at(from, "confirm_migration", args_inst(in), p_confirm, v_confirm, uuid, S);
    else
        rc = call_ok(from, "confirm_migration", args_inst(in), "confirm");
    if (!vt_obj_bool(&rc->rep->result, "confirmed"))
        fail_msg("%s: result.confirmed should be true", p_confirm ? p_confirm : "confirm");
    assert_source_clean(from, uuid, p_confirm ? p_confirm : "confirm");
    if (!power_on)
        assert_restored_off(to, uuid, S, "the destination after confirm");
    xfer_clear(&x);
}

/* Four migrations a -> b -> a -> b -> a: each step of each of the three
 * calls once, with the libvirtd it talks to killed there. */
static void
test_lv_migration(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *S = NULL;

    begin("libvirtd killed: migrate_disk_and_power_off, finish_migration, confirm_migration");
    S = spawn_off(&in);
    lv_migration(A, B, &in, S, "migrate_disk_and_power_off.start", A, "finish_migration.start",
                 false, "confirm_migration.start", A);
    lv_migration(B, A, &in, S, "migrate_disk_and_power_off.after_power_off", B,
                 "finish_migration.after_restore", false, "confirm_migration.after_undefine", B);
    /* The upload talks to the destination's libvirtd. */
    lv_migration(A, B, &in, S, "migrate_disk_and_power_off.after_kept_copy", B,
                 "finish_migration.after_define", true, NULL, A);
    g_free(S);
    S = power_off_sha(B, &in, STATE_V2, "power_off on b");
    lv_migration(B, A, &in, S, NULL, A, "finish_migration.after_start", true, NULL, B);
    destroy_on(A, uuid, "destroy");
}

/* Three reverts of a resize in place (the revert restores the kept copy),
 * with destroy, the revert's first step, cut as well. */
static void
test_lv_revert(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    instance big = { .uuid = uuid, .fl = &FL_TPM_BIG };
    g_autofree char *S = NULL, *sd = p_state_dir(A, uuid), *kept = p_kept(A, uuid);
    g_autofree char *inc = p_incoming(A, uuid);
    static const char *const p_destroy[] = { "destroy.start", "destroy.after_undefine", NULL };
    static const char *const p_revert[] = { "finish_revert_migration.start",
                                            "finish_revert_migration.after_restore",
                                            "finish_revert_migration.after_define" };
    unsigned m0;

    begin("libvirtd killed: destroy, finish_revert_migration");
    S = spawn_off(&in);
    m0 = manufactured(A, uuid);
    for (size_t i = 0; i < G_N_ELEMENTS(p_revert); i++) {
        bool power_on = i == 2;
        xfer x = { 0 };

        migrate(A, A, &in, &x, "resize in place");
        call_ok_free(A, "finish_migration", args_finish(&big, &FL_TPM, false, &x),
                     "finish_migration in place");
        if (p_destroy[i]) {
            g_autoptr(vt_reply) r = lv_kill_at(A, "destroy", vt_args_destroy(uuid, -1),
                                               p_destroy[i], A, uuid, S);

            assert_no_domain(A, uuid, p_destroy[i]);
            assert_gone(sd, p_destroy[i], "state dir");
            assert_gone(inc, p_destroy[i], "incoming volume");
            assert_present(kept, p_destroy[i], "kept copy");
        } else {
            destroy_on(A, uuid, "destroy (revert)");
        }
        {
            g_autoptr(vt_reply) r = lv_kill_at(A, "finish_revert_migration",
                                               args_inst_power(&in, power_on), p_revert[i], A,
                                               uuid, S);

            assert_res_str(r, "vtpm_state", "restored", p_revert[i]);
            assert_gone(kept, p_revert[i], "kept copy");
            assert_dom_flavor(A, uuid, &FL_TPM, p_revert[i]);
            if (power_on)
                assert_dom_state(A, uuid, "running", p_revert[i]);
            else
                assert_restored_off(A, uuid, S, p_revert[i]);
            if (manufactured(A, uuid) != m0)
                fail_msg("%s: swtpm_setup manufactured a new TPM", p_revert[i]);
        }
        xfer_clear(&x);
    }
    destroy_on(A, uuid, "destroy");
}

/* shelve on @from and unshelve on @to, each cut at its point (NULL: a
 * plain call), the store's libvirtd being host a's. */
static void
lv_shelve(int from, int to, const instance *in, const char *S, const char *p_shelve,
          const char *p_unshelve, int v_unshelve, bool power_on)
{
    const char *uuid = in->uuid;
    g_autofree char *vol = p_shelved(uuid);
    g_autoptr(vt_reply) rs = NULL, ru = NULL;
    unsigned m0 = manufactured(to, uuid);
    xfer sh = { 0 };

    if (p_shelve)
        rs = lv_kill_at(from, "shelve", args_inst(in), p_shelve, from, uuid, S);
    else
        rs = call_ok(from, "shelve", args_inst(in), "shelve");
    res_xfer(rs, "shelved", &sh, p_shelve ? p_shelve : "shelve");
    if (!vt_obj_bool(&rs->rep->result, "offloaded"))
        fail_msg("%s: result.offloaded should be true", p_shelve ? p_shelve : "shelve");
    assert_file_is(vol, &sh, p_shelve ? p_shelve : "shelve");
    assert_archive(vol, S, p_shelve ? p_shelve : "shelve");
    assert_nothing_on(from, uuid, p_shelve ? p_shelve : "shelve");

    if (power_on && strcmp(p_unshelve, "unshelve.after_start") == 0) {
        /* The guest runs when the store's libvirtd dies. */
        lv_row row = { .h = to, .method = "unshelve", .args = args_unshelve(in, &sh, true),
                       .point = p_unshelve, .victim = v_unshelve, .uuid = uuid, .S = S };
        g_autofree char *marker = NULL;
        pid_t qemu = 0, swtpm = 0;

        lv_cut(&row);
        lv_guest_mark(to, uuid, &qemu, &swtpm, &marker, row.what);
        ru = lv_recover(&row);
        assert_guest_untouched(to, uuid, qemu, swtpm, marker, m0, row.what);
    } else {
        ru = lv_kill_at(to, "unshelve", args_unshelve(in, &sh, power_on), p_unshelve, v_unshelve,
                        uuid, S);
    }
    assert_res_str(ru, "vtpm_state", "restored", p_unshelve);
    assert_gone(vol, p_unshelve, "shelved archive");
    if (power_on)
        assert_dom_state(to, uuid, "running", p_unshelve);
    else
        assert_restored_off(to, uuid, S, p_unshelve);
    if (manufactured(to, uuid) != m0)
        fail_msg("%s: swtpm_setup manufactured a TPM on host %s instead of using the shelved "
                 "state", p_unshelve, host_name[to]);
    xfer_clear(&sh);
}

/* Four shelve / unshelve rounds between a and b (the store is a's). */
static void
test_lv_shelve(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM };
    g_autofree char *S = NULL, *vol = p_shelved(uuid);

    begin("libvirtd killed: shelve, unshelve");
    S = spawn_off(&in);
    /* unshelve reads the store (a) before it defines anything here (b). */
    lv_shelve(A, B, &in, S, "shelve.start", "unshelve.start", A, false);
    lv_shelve(B, A, &in, S, "shelve.after_power_off", "unshelve.after_restore", A, false);
    lv_shelve(A, B, &in, S, "shelve.after_store", "unshelve.after_define", B, true);
    /* The guest ran on b: the state to keep is the one shelve stores. */
    call_ok_free(B, "power_off", args_inst(&in), "power_off on b");
    g_free(S);
    S = state_sha(B, uuid, STATE_V2, "power_off on b");
    /* Deleting the archive talks to the store's libvirtd. */
    lv_shelve(B, B, &in, S, NULL, "unshelve.after_start", A, true);
    assert_gone(vol, "the last unshelve", "shelved archive");
    destroy_on(B, uuid, "destroy");
}

/* A UEFI instance: its variable store N through the cut steps that move
 * it, whole and the same after the retry: the upload (b's libvirtd), the
 * restore on b (b's), the restore of an unshelve on a (a's). */
static void
test_lv_uefi(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_TPM, .props = props_uefi_sb };
    g_autofree char *S = NULL, *N = NULL;
    g_autoptr(vt_reply) rm = NULL, rf = NULL, ru = NULL;
    xfer x = { 0 }, sh = { 0 };

    begin("libvirtd killed: a UEFI instance's store");
    S = uefi_spawn_off(&in, false, &N);
    rm = lv_kill_at(A, "migrate_disk_and_power_off", args_migrate(&in, host_addr[B]),
                    "migrate_disk_and_power_off.after_kept_copy", B, uuid, S);
    assert_migrated_with(A, B, uuid, rm, S, N, &x, "upload cut");
    rf = lv_kill_at(B, "finish_migration", args_finish(&in, &FL_TPM, false, &x),
                    "finish_migration.after_restore", B, uuid, S);
    assert_res_str(rf, "nvram_state", "restored", "finish_migration.after_restore");
    assert_restored_off(B, uuid, S, "finish_migration.after_restore");
    assert_nvram_sha(B, uuid, N, "finish_migration.after_restore");
    call_ok_free(A, "confirm_migration", args_inst(&in), "confirm");
    shelve_on(B, &in, &sh, "shelve on b");
    ru = lv_kill_at(A, "unshelve", args_unshelve(&in, &sh, false), "unshelve.after_restore", A,
                    uuid, S);
    assert_res_str(ru, "nvram_state", "restored", "unshelve.after_restore");
    assert_restored_off(A, uuid, S, "unshelve.after_restore");
    assert_nvram_sha(A, uuid, N, "unshelve.after_restore");
    uefi_destroy(A, uuid, "destroy");
    xfer_clear(&x);
    xfer_clear(&sh);
}

/* The plaintext of the instance's TPM on host a under its stored key. */
static GBytes *
lv_plaintext(const char *uuid, GBytes **key, const char *what)
{
    g_autofree char *sd = p_state_dir(A, uuid);
    GBytes *plain;

    *key = vt_host_secret_value("a", uuid);
    plain = vt_tpm_plaintext(sd, *key);
    if (!plain)
        fail_msg("%s: the key stored on host a does not open the TPM state", what);
    return plain;
}

/* rekey (host custody: the key is a libvirt secret): cut before it starts,
 * before the new key is stored, and before the running guest is started
 * again on it. */
static void
test_lv_rekey(void **state)
{
    g_autofree char *uuid = vt_uuid();
    instance in = { .uuid = uuid, .fl = &FL_HOSTKEY };
    g_autofree char *sd = p_state_dir(A, uuid);
    g_autoptr(GBytes) plain0 = NULL, k = NULL;
    static const char *const points[] = { "rekey.start", "rekey.before_key",
                                          "rekey.before_cleanup" };

    begin("libvirtd killed: rekey");
    spawn_on(A, &in, true);
    call_ok_free(A, "power_off", args_inst(&in), "power_off");
    plain0 = lv_plaintext(uuid, &k, "before the rekeys");
    for (size_t i = 0; i < G_N_ELEMENTS(points); i++) {
        bool running = i == 2;
        lv_row row = { .h = A, .method = "rekey", .args = args_inst(&in), .point = points[i],
                       .victim = A, .uuid = uuid };
        g_autoptr(vt_reply) r = NULL;
        g_autoptr(GBytes) kc = NULL, pc = NULL, kn = NULL, pn = NULL, old = NULL;

        if (running)
            call_ok_free(A, "power_on", args_inst(&in), "power_on before the rekey");
        lv_cut(&row);
        /* Back up: whatever key is stored now opens the state in place,
         * and it is the same TPM. */
        vt_libvirtd_restart("a");
        row.back = true;
        pc = lv_plaintext(uuid, &kc, row.what);
        assert_same_tpm(plain0, pc, row.what);
        r = lv_recover(&row);
        if (!vt_obj_bool(&r->rep->result, "rekeyed") ||
            vt_obj_bool(&r->rep->result, "restarted") != running)
            fail_msg("%s: expected rekeyed: true, restarted: %s", row.what,
                     running ? "true" : "false");
        assert_dom_state(A, uuid, running ? "running" : "shut off", row.what);
        if (running)
            call_ok_free(A, "power_off", args_inst(&in), "power_off after the rekey");
        pn = lv_plaintext(uuid, &kn, row.what);
        old = vt_tpm_plaintext(sd, k);
        if (g_bytes_equal(kn, k) || old)
            fail_msg("%s: the key should have changed, and the old key should no longer open "
                     "the state", row.what);
        assert_same_tpm(plain0, pn, row.what);
        g_bytes_unref(k);
        k = g_steal_pointer(&kn);
    }
    if (manufactured(A, uuid) != 1)
        fail_msg("rekeys: swtpm_setup manufactured %u TPMs, expected 1", manufactured(A, uuid));
    destroy_on(A, uuid, "destroy");
}

/* vtpmd went through every libvirtd kill above, reconnecting each time: it
 * stops cleanly on SIGTERM (exit 0), and in the ASan+UBSan build without a
 * memory error or a leak. */
static void
test_lv_clean_exit(void **state)
{
    begin("libvirtd killed: vtpmd stops cleanly");
    for (int h = 0; h < NHOSTS; h++) {
        g_autofree char *report = NULL;
        int code;

        if (!dmn[h])
            continue;
        code = vt_vtpmd_term(dmn[h], 60000);
        report = vt_vtpmd_sanitizer_report(dmn[h]);
        if (code != 0 || report) {
            vt_vtpmd_dump(dmn[h]);
            fail_msg("the vtpmd of host %s exited %d on SIGTERM%s%s", host_name[h], code,
                     report ? "; sanitizer: " : "", report ? report : "");
        }
        g_clear_pointer(&dmn[h], vt_vtpmd_free);
    }
}

/* ---- main ----------------------------------------------------------------------------------------------- */

int
main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test_setup_teardown(test_power_cycle, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_cold_migration, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_resize, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_resize_in_place, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_revert, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_shelve, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_unshelve_mismatch, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_rebuild, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_rollback_finish, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_rollback_revert, test_setup, test_teardown),
    };
    /* UEFI: the variable store follows the TPM state. */
    static const struct CMUnitTest uefi[] = {
        cmocka_unit_test_setup_teardown(test_uefi_migration, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_resize_revert, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_shelve, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_rebuild, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_rekey_keep, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_one_file_archive, test_setup, test_teardown),
    };
    /* libvirtd killed at every step (section 10). */
    static const struct CMUnitTest lv[] = {
        cmocka_unit_test_setup_teardown(test_lv_power_rebuild, lv_setup, lv_teardown),
        cmocka_unit_test_setup_teardown(test_lv_migration, lv_setup, lv_teardown),
        cmocka_unit_test_setup_teardown(test_lv_revert, lv_setup, lv_teardown),
        cmocka_unit_test_setup_teardown(test_lv_shelve, lv_setup, lv_teardown),
        cmocka_unit_test_setup_teardown(test_lv_rekey, lv_setup, lv_teardown),
        cmocka_unit_test_setup_teardown(test_lv_uefi, lv_setup, lv_teardown),
        cmocka_unit_test_teardown(test_lv_clean_exit, test_teardown),
    };
    /* VT_LIFECYCLE_PART=ops|crash|libvirtd|uefi runs one part (meson runs
     * the parts as four tests, side by side); unset, all. */
    const char *part = g_getenv("VT_LIFECYCLE_PART");
    bool ops = !part || strcmp(part, "ops") == 0;
    bool crashes = !part || strcmp(part, "crash") == 0;
    bool lvkill = !part || strcmp(part, "libvirtd") == 0;
    bool uefis = !part || strcmp(part, "uefi") == 0;
    size_t nfixed = ops ? G_N_ELEMENTS(fixed) : 0;
    size_t nuefi = uefis ? G_N_ELEMENTS(uefi) : 0;
    size_t ncrash = crashes ? G_N_ELEMENTS(crash_cases) : 0;
    size_t n = nfixed + nuefi + ncrash + (lvkill ? G_N_ELEMENTS(lv) : 0);
    g_autofree struct CMUnitTest *tests = g_new0(struct CMUnitTest, MAX(n, 1));
    const char *missing = NULL;

    if (n == 0) {
        fprintf(stderr, "test_lifecycle: VT_LIFECYCLE_PART is '%s', not ops, crash, libvirtd or "
                        "uefi\n", part);
        return 2;
    }
    memcpy(tests, fixed, nfixed * sizeof(fixed[0]));
    memcpy(tests + nfixed, uefi, nuefi * sizeof(uefi[0]));
    nfixed += nuefi;
    /* The crash table: one test per row, named after it. */
    for (size_t i = 0; i < ncrash; i++) {
        struct CMUnitTest *t = &tests[nfixed + i];

        t->name = crash_cases[i].name;
        t->test_func = test_crash;
        t->setup_func = test_setup;
        t->teardown_func = test_teardown;
        t->initial_state = (void *)&crash_cases[i];
    }
    if (lvkill)
        memcpy(tests + nfixed + ncrash, lv, sizeof(lv));
    if (!vt_env_ready(&missing) || !g_getenv("VT_HOST_B_ADDR")) {
        fprintf(stderr, "test_lifecycle: %s is not set; run it through tests/integration.sh "
                        "--net --hosts 2 (skipped)\n", missing ? missing : "VT_HOST_B_ADDR");
        return 77;
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return _cmocka_run_group_tests("test_lifecycle", tests, n, group_setup, group_teardown);
}
