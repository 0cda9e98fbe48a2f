/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checkpoints and evacuation (docs/lifecycle.md, "Checkpoints and
 * evacuation"), end to end: three libvirt hosts with addresses of their
 * own (integration.sh --net --hosts 3): "a" and "b" run a vtpmd each, "c"
 * is the state store ([store] uri of both: libvirtd only, as a storage
 * host every compute host reaches and that survives them).  Checkpoints
 * every second ([store] checkpoint_interval = 1), the newest two kept.
 *
 * What is checked where an operator would look: the replies, virsh, the
 * state files, the store's pool on c (its files, as c's tree holds them),
 * the metrics files and the logs.  A dead host is one whose vtpmd, QEMUs
 * and libvirtd were killed (SIGKILL), its disk left as it was; it comes
 * back with libvirtd started over the same tree and a new vtpmd.
 *
 * "The same TPM" after the guest ran: the state file differs from the
 * checkpoint's in a handful of bytes (a power cycle changes a few; two
 * TPMs differ in thousands) and swtpm_setup manufactured no TPM on the
 * new host (its log).  Guests are firmware-only QEMU/TCG domains of 64 MiB.
 * VT_TEST_FILTER=<glob> runs some tests only.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "archive.h"
#include "lib/harness.h"
#include "lib/jsonargs.h"
#include "lib/testca.h"
#include "mpjson.h"
#include "ops/ownership.h"

enum { A = 0, B = 1, C = 2, NHOSTS = 3, NVTPMD = 2 };

#define OP_MS 180000
#define WAIT_MS 90000
#define SAME_TPM_MAX_DIFF 256
#define POOL "var/lib/vtpmd/pools/vtpm-checkpoints"

static const char *const host_name[NHOSTS] = { "a", "b", "c" };
static const char *host_addr[NHOSTS];
static vt_vtpmd *dmn[NVTPMD];
static char *dkey; /* the deployment key file both hosts share */

/* ---- requests, as JSON ------------------------------------------------------------------ */

/* @fmt: JSON with single quotes for double ones, bytes as {'$bin': b64}. */
#define args(...) vt_json_args(true, __VA_ARGS__)

typedef struct {
    char *uuid;
    const char *mode;   /* hw:tpm_secret_security */
    char *secret;       /* base64, user mode with a secret; NULL: none */
    bool uefi;          /* image hw_firmware_type=uefi */
} inst;

static void
inst_clear(inst *i)
{
    g_clear_pointer(&i->uuid, g_free);
    g_clear_pointer(&i->secret, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(inst, inst_clear)

static void
inst_init(inst *i, const char *mode, bool secret)
{
    guint8 s[24];

    i->uuid = vt_uuid();
    i->mode = mode;
    if (secret) {
        for (size_t k = 0; k < sizeof(s); k++)
            s[k] = (guint8)g_random_int();
        i->secret = g_base64_encode(s, sizeof(s));
    }
}

/* The instance spec; @secret overrides the instance's (NULL: its own). */
static char *
spec_with(const inst *i, const char *secret)
{
    g_autofree char *vtpm = secret ? g_strdup_printf(", 'vtpm': {'secret': {'$bin': '%s'}}",
                                                     secret)
                                   : g_strdup("");

    return g_strdup_printf("{'uuid': '%s', 'name': 'ev', 'flavor': {'name': 'm1.ev', "
                           "'vcpus': 1, 'memory_mb': 64, 'extra_specs': {'hw:tpm_version': "
                           "'2.0', 'hw:tpm_model': 'tpm-tis', 'hw:tpm_secret_security': '%s'}}, "
                           "'image': {'id': 'firmware-only', 'properties': {%s}}%s}",
                           i->uuid, i->mode, i->uefi ? "'hw_firmware_type': 'uefi'" : "", vtpm);
}

static char *
spec(const inst *i)
{
    return spec_with(i, i->secret);
}

/* The flavor of every instance here. */
static char *
flavor_of(const inst *i)
{
    return g_strdup_printf("{'name': 'm1.ev', 'vcpus': 1, 'memory_mb': 64, 'extra_specs': "
                           "{'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-tis', "
                           "'hw:tpm_secret_security': '%s'}}",
                           i->mode);
}

/* {'uuid', 'vtpm'?} for the calls that read only those. */
static char *
ident(const inst *i)
{
    g_autofree char *vtpm = i->secret ? g_strdup_printf(", 'vtpm': {'secret': {'$bin': '%s'}}",
                                                        i->secret)
                                      : g_strdup("");

    return g_strdup_printf("{'uuid': '%s'%s}", i->uuid, vtpm);
}

/* ---- calls -------------------------------------------------------------------------------- */

static vt_reply *
call(int h, const char *method, GBytes *a)
{
    vt_reply *r = vt_call(dmn[h], method, a, OP_MS);

    g_bytes_unref(a);
    return r;
}

static vt_reply *
ok(int h, const char *method, GBytes *a, const char *what)
{
    return vt_call_ok(dmn[h], method, a, OP_MS, what);
}

static void
ok_free(int h, const char *method, GBytes *a, const char *what)
{
    vt_reply_free(ok(h, method, a, what));
}

static uint64_t
res_uint(const vt_reply *r, const char *path, const char *what)
{
    return vt_obj_uint(&r->rep->result, path, what);
}

/* Top-level @key of the result is there, and null (the decoder's
 * accessors take a null for an absent key). */
static void
res_nil(const vt_reply *r, const char *key, const char *what)
{
    const msgpack_object *m = &r->rep->result;

    for (uint32_t k = 0; m->type == MSGPACK_OBJECT_MAP && k < m->via.map.size; k++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[k];

        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0) {
            if (kv->val.type != MSGPACK_OBJECT_NIL)
                fail_msg("%s: result.%s should be null", what, key);
            return;
        }
    }
    fail_msg("%s: result.%s is missing (it should be null)", what, key);
}

static void
spawn(int h, const inst *i, bool power_on)
{
    g_autofree char *s = spec(i);

    ok_free(h, "spawn", args("{'instance': %s, 'power_on': %s}", s, power_on ? "true" : "false"),
            "spawn");
}

static void
power(int h, const inst *i, bool on)
{
    g_autofree char *id = ident(i);

    ok_free(h, on ? "power_on" : "power_off", args("{'instance': %s}", id),
            on ? "power_on" : "power_off");
}

static void
destroy(int h, const inst *i)
{
    ok_free(h, "destroy", args("{'instance': {'uuid': '%s'}}", i->uuid), "destroy");
}

/* evacuate @i to @h from @from, sending @secret (NULL: none) as the
 * instance's; @extra: more members (", 'fenced': true"). */
static vt_reply *
evacuate_with(int h, const inst *i, int from, const char *extra, const char *secret)
{
    g_autofree char *s = spec_with(i, secret);

    return call(h, "evacuate", args("{'instance': %s, 'from_host': '%s'%s}", s, host_addr[from],
                                    extra ? extra : ""));
}

static vt_reply *
evacuate(int h, const inst *i, int from, const char *extra)
{
    return evacuate_with(h, i, from, extra, i->secret);
}

/* evacuate(), and fail the test unless the reply is ok. */
static vt_reply *
evacuate_ok(int h, const inst *i, int from, const char *extra, const char *what)
{
    g_autofree char *s = spec(i);

    return ok(h, "evacuate",
              args("{'instance': %s, 'from_host': '%s'%s}", s, host_addr[from], extra ? extra : ""),
              what);
}

static void
expect_fault(vt_reply *r, vtpm_fault code, const char *fragment, bool final, const char *what)
{
    g_autoptr(vt_reply) rr = r;

    if (final)
        vt_assert_final_fault(rr, code, fragment, what);
    else
        vt_assert_fault(rr, code, fragment, what);
}

/* ---- hosts ---------------------------------------------------------------------------------- */

static char *
state_dir(int h, const char *uuid)
{
    return vt_host_pathf(host_name[h], "var/lib/libvirt/swtpm/%s", uuid);
}

static char *
state_file(int h, const char *uuid)
{
    return vt_host_pathf(host_name[h], "var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall", uuid);
}

static char *
prom(int h)
{
    return g_strdup_printf("%s/evacuate-%s.prom", vt_env("VT_ROOT"), host_name[h]);
}

static bool
exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static void
assert_dom_state(int h, const char *uuid, const char *want, const char *what)
{
    vt_assert_dom_state(host_name[h], uuid, want, what);
}

/* How often swtpm_setup manufactured a TPM for @uuid on host @h. */
static unsigned
manufactured(int h, const char *uuid)
{
    return vt_swtpm_log_lines(host_name[h], uuid, "Starting vTPM manufacturing");
}

/* Start the vtpmd of host @h: checkpoints every second, the newest @keep
 * kept; with the deployment key when @with_key; @vtpm_more: more lines of
 * [vtpm] (NULL: none). */
static void
host_start_with(int h, unsigned keep, bool with_key, const char *vtpm_more)
{
    g_autofree char *p = prom(h);
    g_autofree char *tail = g_strdup_printf(
        "[store]\nuri = qemu+tcp://%s/system\ncheckpoint_interval = 1\ncheckpoint_keep = %u\n"
        "[metrics]\ntextfile = %s\ninterval = 1\n",
        host_addr[C], keep, p);
    g_autofree char *vx = g_strdup_printf(
        "supported_secret_security = user;host%s%s%s%s", with_key ? ";deployment\n" : "",
        with_key ? "deployment_key_file = " : "", with_key ? dkey : "",
        vtpm_more ? vtpm_more : "");
    vt_config_opts o = {
        .worker_host = host_addr[h],
        .libvirt_extra = "shutdown_timeout = 3\nmigration_uri_template = qemu+tcp://%s/system",
        .vtpm_extra = vx,
        .tail = tail,
    };

    unlink(p);
    dmn[h] = vt_vtpmd_start(host_name[h], &o, NULL);
}

static void
host_start(int h, unsigned keep, bool with_key)
{
    host_start_with(h, keep, with_key, NULL);
}

static void
host_stop(int h)
{
    if (!dmn[h])
        return;
    if (vt_vtpmd_running(dmn[h])) {
        int code = vt_vtpmd_term(dmn[h], 60000);

        if (code != 0)
            fail_msg("vtpmd of host %s exited %d on SIGTERM", host_name[h], code);
        g_autofree char *report = vt_vtpmd_sanitizer_report(dmn[h]);
        if (report)
            fail_msg("vtpmd of host %s: %s", host_name[h], report);
    }
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
}

static void
kill_procs(const char *prog, const char *needle)
{
    g_autoptr(GArray) pids = vt_find_procs(prog, needle);

    for (guint i = 0; i < pids->len; i++)
        kill(g_array_index(pids, pid_t, i), SIGKILL);
}

/* Host @h dies: its vtpmd, its guests' QEMU and swtpm, and its libvirtd,
 * killed; its disk stays as it was. */
static void
host_die(int h, const char *const *uuids)
{
    vt_vtpmd_kill(dmn[h]);
    g_clear_pointer(&dmn[h], vt_vtpmd_free);
    for (size_t i = 0; uuids && uuids[i]; i++) {
        kill_procs("qemu-system-x86_64", uuids[i]);
        kill_procs("swtpm", uuids[i]);
    }
    vt_libvirtd_kill(host_name[h]);
}

/* ---- the store ------------------------------------------------------------------------------ */

static int
cmp_desc(gconstpointer a, gconstpointer b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* Generations of the volumes "<uuid>.<kind><generation><suffix>" in the
 * store, newest first. */
static GArray *
store_gens(const char *uuid, const char *kind, const char *suffix)
{
    g_autofree char *dir = vt_host_pathf(host_name[C], POOL);
    g_autofree char *prefix = g_strconcat(uuid, kind, NULL);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    GArray *out = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    const char *n;

    while (d && (n = g_dir_read_name(d))) {
        g_autofree char *digits = NULL;
        guint64 g;

        if (!g_str_has_prefix(n, prefix) || !g_str_has_suffix(n, suffix))
            continue;
        digits = g_strndup(n + strlen(prefix), strlen(n) - strlen(prefix) - strlen(suffix));
        if (g_ascii_string_to_unsigned(digits, 10, 1, G_MAXUINT64, &g, NULL))
            g_array_append_val(out, g);
    }
    g_array_sort(out, cmp_desc);
    return out;
}

static GArray *
ckpts(const char *uuid)
{
    return store_gens(uuid, ".ckpt-", ".vtpm.tar");
}

static char *
ckpt_path(const char *uuid, uint64_t gen)
{
    return vt_host_pathf(host_name[C], POOL "/%s.ckpt-%" G_GUINT64_FORMAT ".vtpm.tar", uuid, gen);
}

/* The host the newest ownership record of @uuid names (NULL: none).  A
 * record vtpmd is writing right now (libvirt creates the volume, then
 * uploads into it) is read again. */
static char *
owner_of(const char *uuid)
{
    gint64 end = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;

    for (;;) {
        g_autoptr(GArray) gens = store_gens(uuid, ".owner-", "");
        g_autofree char *path = NULL;
        g_autofree char *text = NULL;
        gsize len = 0;
        g_auto(vtpm_owner) o = { 0 };
        uint64_t g;

        if (!gens->len)
            return NULL;
        g = g_array_index(gens, uint64_t, 0);
        path = vt_host_pathf(host_name[C], POOL "/%s.owner-%" G_GUINT64_FORMAT, uuid, g);
        if (g_file_get_contents(path, &text, &len, NULL) &&
            vtpm_owner_parse(text, len, uuid, g, &o))
            return g_steal_pointer(&o.host);
        if (g_get_monotonic_time() > end)
            fail_msg("%s is not an ownership record", path);
        g_usleep(100 * 1000);
    }
}

/* The TPM state file inside checkpoint @gen of @uuid (the archive
 * verified); NULL when the volume is gone, or (unless @strict) when it
 * does not verify: vtpmd may be writing it right now. */
static GBytes *
ckpt_file_of(const char *uuid, uint64_t gen, const char *member, bool strict)
{
    g_autofree char *path = ckpt_path(uuid, gen);
    g_autofree char *tmp = g_dir_make_tmp("test_evacuate-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(tmp, member, NULL);
    g_autofree char *data = NULL, *state = NULL;
    gsize len = 0, slen = 0;
    vtpm_error err = { 0 };

    if (!g_file_get_contents(path, &data, &len, NULL))
        return NULL;
    if (vtpm_archive_extract(data, len, tmp, -1, -1, NULL, &err) < 0) {
        g_autofree char *rm = g_strdup_printf("rm -rf '%s'", tmp);

        g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL);
        if (strict)
            fail_msg("checkpoint %s does not verify: %s", path, err.message);
        return NULL;
    }
    if (!g_file_get_contents(file, &state, &slen, NULL))
        fail_msg("checkpoint %s holds no %s", path, member);
    {
        g_autofree char *rm = g_strdup_printf("rm -rf '%s'", tmp);

        g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL);
    }
    return g_bytes_new_take(g_steal_pointer(&state), slen);
}

static GBytes *
ckpt_state_of(const char *uuid, uint64_t gen, bool strict)
{
    return ckpt_file_of(uuid, gen, "tpm2/tpm2-00.permall", strict);
}

/* A checkpoint that is not being written: it must verify. */
static GBytes *
ckpt_state(const char *uuid, uint64_t gen)
{
    return ckpt_state_of(uuid, gen, true);
}

static GBytes *
read_bytes(const char *path)
{
    char *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, NULL))
        fail_msg("cannot read %s", path);
    return g_bytes_new_take(data, len);
}

/* Wait until the newest checkpoint of @uuid is newer than generation
 * @after and holds exactly the state file host @h has now; its
 * generation. */
static uint64_t
wait_ckpt_after(int h, const char *uuid, uint64_t after, const char *what)
{
    g_autofree char *sf = state_file(h, uuid);
    gint64 end = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;

    for (;;) {
        g_autoptr(GArray) gens = ckpts(uuid);
        g_autoptr(GBytes) now = exists(sf) ? read_bytes(sf) : NULL;
        g_autoptr(GBytes) top = NULL;

        if (gens->len && now && g_array_index(gens, uint64_t, 0) > after &&
            (top = ckpt_state_of(uuid, g_array_index(gens, uint64_t, 0), false)) &&
            g_bytes_equal(top, now))
            return g_array_index(gens, uint64_t, 0);
        if (g_get_monotonic_time() > end)
            fail_msg("%s: no checkpoint of %s in the store holds the state of host %s "
                     "(%u checkpoints)", what, uuid, host_name[h], gens->len);
        g_usleep(200 * 1000);
    }
}

/* ... of any generation. */
static uint64_t
wait_ckpt_of(int h, const char *uuid, const char *what)
{
    return wait_ckpt_after(h, uuid, 0, what);
}

/* The newest checkpoint's generation of @uuid (0: none). */
static uint64_t
newest(const char *uuid)
{
    g_autoptr(GArray) gens = ckpts(uuid);

    return gens->len ? g_array_index(gens, uint64_t, 0) : 0;
}

/* power_off on @h and the checkpoint it forces; its generation. */
static uint64_t
off_ckpt(int h, const inst *i, const char *what)
{
    uint64_t before = newest(i->uuid);

    power(h, i, false);
    return wait_ckpt_after(h, i->uuid, before, what);
}

static gsize
bytes_differing(GBytes *a, GBytes *b)
{
    gsize la, lb, n = 0;
    const guint8 *pa = g_bytes_get_data(a, &la), *pb = g_bytes_get_data(b, &lb);

    for (gsize i = 0; i < MIN(la, lb); i++)
        n += pa[i] != pb[i];
    return n + (la > lb ? la - lb : lb - la);
}

/* Flip a byte of the state file inside a stored checkpoint: its checksum
 * no longer matches. */
static void
damage(const char *uuid, uint64_t gen)
{
    g_autofree char *path = ckpt_path(uuid, gen);
    g_autoptr(GBytes) b = read_bytes(path);
    gsize len;
    const guint8 *d = g_bytes_get_data(b, &len);
    guint8 c;
    int fd;

    /* The state file's data ends right before the two end blocks. */
    c = d[len - 1024 - 512 + 7] ^ 0x20;
    fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, &c, 1, (off_t)(len - 1024 - 512 + 7)) != 1)
        fail_msg("damaging %s: %s", path, g_strerror(errno));
    close(fd);
}

static double
prom_value(int h, const char *series)
{
    g_autofree char *p = prom(h);
    double v = -1;

    vt_prom_value(p, series, &v);
    return v;
}

static void
wait_prom(int h, const char *series, double min, const char *what)
{
    g_autofree char *p = prom(h);
    double v = -1;

    if (!vt_prom_wait(p, series, min, WAIT_MS, &v))
        fail_msg("%s: %s of host %s should reach %g, is %g", what, series, host_name[h], min, v);
}

static void
wait_log(int h, const char *a, const char *b, const char *what)
{
    const char *needles[] = { a, b, NULL };

    if (!vt_vtpmd_wait_log(dmn[h], needles, WAIT_MS))
        fail_msg("%s: the log of host %s's vtpmd has no line with \"%s\"%s%s%s", what,
                 host_name[h], a, b ? " and \"" : "", b ? b : "", b ? "\"" : "");
}

static void
wait_gone(const char *path, const char *what)
{
    gint64 end = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;

    while (exists(path)) {
        if (g_get_monotonic_time() > end)
            fail_msg("%s: %s should be gone", what, path);
        g_usleep(200 * 1000);
    }
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    for (int h = 0; h < NHOSTS; h++) {
        g_autofree char *var = g_strdup_printf("VT_HOST_%c_ADDR", 'A' + h);

        host_addr[h] = vt_env(var);
    }
    dkey = vt_key_file_new("evacuate-deployment.key");
    return 0;
}

static int
group_teardown(void **state)
{
    vt_client_drop();
    g_free(dkey);
    return 0;
}

/* Every test starts with both vtpmds up (the default config) and both
 * libvirtds alive. */
static int
test_setup(void **state)
{
    for (int h = 0; h < NVTPMD; h++) {
        if (kill(vt_host_libvirtd_pid(host_name[h]), 0) < 0)
            vt_libvirtd_restart(host_name[h]);
        if (dmn[h] && !vt_vtpmd_running(dmn[h]))
            g_clear_pointer(&dmn[h], vt_vtpmd_free);
        if (!dmn[h])
            host_start(h, 2, true);
    }
    return 0;
}

static int
test_teardown(void **state)
{
    for (int h = 0; h < NVTPMD; h++) {
        if (kill(vt_host_libvirtd_pid(host_name[h]), 0) < 0)
            vt_libvirtd_restart(host_name[h]);
        vt_virsh_cleanup(host_name[h]);
        host_stop(h);
    }
    return 0;
}

/* ---- 1. checkpoint timing, keep count, destroy ----------------------------------------------- */

/* After spawn and power_off (forced), at the interval for a state that
 * changed while the guest ran (no operation), never for a state that did
 * not; the newest two kept; the metrics count them and say their age;
 * destroy removes them and the ownership record. */
static void
test_checkpoints(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *age = NULL;
    g_autofree char *owner = NULL;
    uint64_t g_spawn, g_off, g_run;

    inst_init(&i, "user", false);
    age = g_strdup_printf("vtpmd_checkpoint_age_seconds{instance=\"%s\"}", i.uuid);
    spawn(A, &i, true);
    g_spawn = wait_ckpt_of(A, i.uuid, "after spawn");
    owner = owner_of(i.uuid);
    if (g_strcmp0(owner, host_addr[A]) != 0)
        fail_msg("after spawn: the ownership record should name host a (%s), names %s",
                 host_addr[A], owner ? owner : "nobody");
    /* Forced after power_off, whether the state moved or not. */
    power(A, &i, false);
    g_off = wait_ckpt_after(A, i.uuid, g_spawn, "after power_off");
    print_message("checkpoints: generation %" G_GUINT64_FORMAT " after spawn, %" G_GUINT64_FORMAT
                  " after power_off\n", g_spawn, g_off);

    /* Unchanged: four intervals, no new checkpoint. */
    g_usleep(4 * G_USEC_PER_SEC);
    {
        g_autoptr(GArray) gens = ckpts(i.uuid);

        if (g_array_index(gens, uint64_t, 0) != g_off)
            fail_msg("a state that did not change got a new checkpoint (%" G_GUINT64_FORMAT
                     " after %" G_GUINT64_FORMAT ")", g_array_index(gens, uint64_t, 0), g_off);
    }
    /* power_on takes no checkpoint; the firmware changes the state, and
     * the interval catches it. */
    power(A, &i, true);
    assert_dom_state(A, i.uuid, "running", "power_on");
    g_run = wait_ckpt_after(A, i.uuid, g_off, "while the guest runs");
    for (int k = 0; k < 2; k++) {
        power(A, &i, false);
        g_run = wait_ckpt_after(A, i.uuid, g_run, "power cycle");
        power(A, &i, true);
    }
    {
        g_autoptr(GArray) gens = ckpts(i.uuid);

        if (gens->len != 2)
            fail_msg("[store] checkpoint_keep = 2, the store holds %u checkpoints of %s",
                     gens->len, i.uuid);
    }
    wait_prom(A, "vtpmd_checkpoints_total{outcome=\"ok\"}", 5, "metrics");
    if (prom_value(A, age) < 0)
        fail_msg("metrics: %s is missing", age);
    print_message("metrics: %g checkpoints, age %g s\n",
                  prom_value(A, "vtpmd_checkpoints_total{outcome=\"ok\"}"), prom_value(A, age));

    destroy(A, &i);
    {
        g_autoptr(GArray) gens = ckpts(i.uuid);
        g_autoptr(GArray) owners = store_gens(i.uuid, ".owner-", "");

        if (gens->len || owners->len)
            fail_msg("destroy: %u checkpoints and %u ownership records of %s are left in the "
                     "store", gens->len, owners->len, i.uuid);
    }
    {
        g_autofree char *p = prom(A);
        double v = 0;
        gint64 end = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;

        while (vt_prom_value(p, age, &v) && g_get_monotonic_time() < end)
            g_usleep(200 * 1000);
        if (vt_prom_value(p, age, &v))
            fail_msg("destroy: %s is still written", age);
    }
}

/* ---- 2. the store down ------------------------------------------------------------------- */

/* The store's libvirtd dies: the instance is not disturbed (power_off
 * and power_on answer ok), the checkpoint fails, is counted and logged,
 * and is made once the store is back; a destroy meanwhile succeeds, and
 * its checkpoints go once the store is back. */
static void
test_store_down(void **state)
{
    g_auto(inst) i = { 0 };
    g_auto(inst) j = { 0 };
    g_autofree char *drop = NULL;
    double failed0;

    inst_init(&i, "user", false);
    inst_init(&j, "user", false);
    spawn(A, &i, false);
    power(A, &i, true);
    spawn(A, &j, true);
    wait_ckpt_of(A, i.uuid, "before the store goes");
    wait_ckpt_of(A, j.uuid, "before the store goes");
    failed0 = prom_value(A, "vtpmd_checkpoints_total{outcome=\"failed\"}");

    vt_libvirtd_kill(host_name[C]);
    power(A, &i, false);
    assert_dom_state(A, i.uuid, "shut off", "power_off with the store down");
    wait_prom(A, "vtpmd_checkpoints_total{outcome=\"failed\"}", failed0 + 1,
              "a checkpoint with the store down");
    wait_log(A, "checkpoint of instance", i.uuid, "a checkpoint with the store down");
    power(A, &i, true);
    assert_dom_state(A, i.uuid, "running", "power_on with the store down");
    power(A, &i, false);
    /* destroy answers ok; the checkpoints wait for the store. */
    destroy(A, &j);
    drop = vt_host_pathf(host_name[A], "var/lib/vtpmd/kept/checkpoint-drops/%s", j.uuid);
    if (!exists(drop))
        fail_msg("destroy with the store down: no note %s to remove the checkpoints later", drop);

    vt_libvirtd_restart(host_name[C]);
    wait_ckpt_of(A, i.uuid, "once the store is back");
    wait_log(A, "checkpoints of instance", "work again", "once the store is back");
    wait_gone(drop, "once the store is back");
    {
        g_autoptr(GArray) gens = ckpts(j.uuid);

        if (gens->len)
            fail_msg("once the store is back: %u checkpoints of the destroyed %s are left",
                     gens->len, j.uuid);
    }
    destroy(A, &i);
}

/* ---- 3. refused while the old host lives; fenced ------------------------------------------ */

/* Refused, for good, while a's vtpmd answers, and while a's libvirt runs
 * the domain; allowed with fenced: true.  a's vtpmd, back with the guest
 * still running there, fences its copy but leaves it running; once it is
 * stopped, a removes it (b runs the instance: confirmed). */
static void
test_evacuate_refused(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *sd_a = NULL;

    inst_init(&i, "user", false);
    sd_a = state_dir(A, i.uuid);
    spawn(A, &i, true);
    wait_ckpt_of(A, i.uuid, "after spawn");
    expect_fault(evacuate(B, &i, A, NULL), VTPM_FAULT_INSTANCE_CONFLICT, "its vtpmd answers",
                 true, "evacuate while a's vtpmd answers");
    vt_vtpmd_kill(dmn[A]);
    g_clear_pointer(&dmn[A], vt_vtpmd_free);
    expect_fault(evacuate(B, &i, A, NULL), VTPM_FAULT_INSTANCE_CONFLICT,
                 "its libvirt runs the domain", true, "evacuate while a's libvirt runs it");
    assert_dom_state(B, i.uuid, "(no domain)", "the refused evacuations");
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, ", 'fenced': true", "evacuate, fenced");

        vt_assert_res_str(r, "vtpm_state", "restored", "evacuate, fenced");
    }
    assert_dom_state(B, i.uuid, "running", "evacuate, fenced");

    host_start(A, 2, true);
    wait_log(A, "runs here although it was evacuated", i.uuid, "a comes back, guest running");
    assert_dom_state(A, i.uuid, "running", "a's stale guest, still running");
    {
        g_autofree char *n = g_strdup_printf("instance-%s", i.uuid);

        if (vt_virsh(host_name[A], NULL, "destroy", n, NULL) != 0)
            fail_msg("virsh destroy %s on host a failed", n);
    }
    wait_gone(sd_a, "a's stale copy, once stopped");
    wait_log(A, "its stale domain and TPM state are removed", i.uuid, "a's stale copy");
    assert_dom_state(A, i.uuid, "(no domain)", "a's stale copy, once stopped");
    assert_dom_state(B, i.uuid, "running", "the evacuated instance");
    destroy(B, &i);
}

/* ---- 4. a dead host --------------------------------------------------------------------- */

/* Host a dies; evacuate on b restores the newest checkpoint (the same
 * TPM), says when it was taken, and makes b the owner; the same request
 * again answers the same.  a comes back: its vtpmd removes its stale
 * domain, state and generation record before serving. */
static void
test_evacuate_dead_host(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *sd_a = NULL, *gen_a = NULL, *owner = NULL;
    g_autoptr(GBytes) ck = NULL;
    const char *uuids[2] = { NULL, NULL };
    uint64_t g_last, got;
    gint64 t0;

    inst_init(&i, "user", false);
    uuids[0] = i.uuid;
    sd_a = state_dir(A, i.uuid);
    gen_a = vt_host_pathf(host_name[A], "var/lib/vtpmd/kept/generations/%s", i.uuid);
    spawn(A, &i, true);
    g_last = off_ckpt(A, &i, "power_off");
    power(A, &i, true);
    wait_ckpt_after(A, i.uuid, g_last, "the guest runs");
    g_last = off_ckpt(A, &i, "power_off");
    ck = ckpt_state(i.uuid, g_last);

    host_die(A, uuids);
    t0 = g_get_monotonic_time();
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, NULL, "evacuate from the dead host a");
        uint64_t taken, age;

        print_message("evacuate from a dead host: %.1f s (a's vtpmd is asked for %d s)\n",
                      (g_get_monotonic_time() - t0) / 1e6, 5);
        vt_assert_res_str(r, "vtpm_state", "restored", "evacuate");
        vt_assert_res_str(r, "vtpm.version", "2.0", "evacuate");
        vt_assert_res_str(r, "checkpoint.host", host_addr[A], "evacuate");
        got = res_uint(r, "checkpoint.generation", "evacuate");
        taken = res_uint(r, "checkpoint.taken_at", "evacuate");
        age = res_uint(r, "checkpoint.age_s", "evacuate");
        if (got != g_last)
            fail_msg("evacuate restored generation %" G_GUINT64_FORMAT ", the newest is %"
                     G_GUINT64_FORMAT, got, g_last);
        if (taken == 0 || taken > (uint64_t)(g_get_real_time() / G_USEC_PER_SEC) ||
            taken + age > (uint64_t)(g_get_real_time() / G_USEC_PER_SEC) + 1)
            fail_msg("evacuate: taken_at %" G_GUINT64_FORMAT " and age_s %" G_GUINT64_FORMAT
                     " do not fit now", taken, age);
    }
    assert_dom_state(B, i.uuid, "running", "evacuate");
    if (manufactured(B, i.uuid) != 0)
        fail_msg("evacuate: swtpm_setup manufactured a TPM on b instead of restoring one");
    owner = owner_of(i.uuid);
    if (g_strcmp0(owner, host_addr[B]) != 0)
        fail_msg("evacuate: the ownership record should name b (%s), names %s", host_addr[B],
                 owner ? owner : "nobody");
    {
        /* A redelivery (same spec, same old host) answers the same. */
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, NULL, "evacuate again");

        vt_assert_res_str(r, "vtpm_state", "restored", "evacuate again");
        if (res_uint(r, "checkpoint.generation", "evacuate again") != g_last)
            fail_msg("evacuate again: another checkpoint");
    }
    power(B, &i, false);
    {
        g_autofree char *sf = state_file(B, i.uuid);
        g_autoptr(GBytes) now = read_bytes(sf);
        gsize d = bytes_differing(ck, now);

        if (d > SAME_TPM_MAX_DIFF)
            fail_msg("evacuate: b's TPM differs from the checkpoint in %zu bytes: not the same "
                     "TPM", d);
        print_message("evacuate: b's TPM differs from the checkpoint in %zu bytes\n", d);
    }

    vt_libvirtd_restart(host_name[A]);
    host_start(A, 2, true);
    wait_log(A, "its stale domain and TPM state are removed", i.uuid, "a comes back");
    assert_dom_state(A, i.uuid, "(no domain)", "a comes back");
    if (exists(sd_a) || exists(gen_a))
        fail_msg("a comes back: %s or %s is left", sd_a, gen_a);
    destroy(B, &i);
    {
        g_autoptr(GArray) gens = ckpts(i.uuid);

        if (gens->len)
            fail_msg("destroy on b: %u checkpoints left", gens->len);
    }
}

/* ---- 4b. a UEFI instance: its variable store comes back with the TPM ----------------------- */

static char *
store_sha(int h, const char *uuid)
{
    g_autofree char *path = vt_host_pathf(host_name[h], "var/lib/libvirt/swtpm/%s/nvram.fd", uuid);

    if (!exists(path))
        fail_msg("host %s has no variable store %s", host_name[h], path);
    return vt_sha256_file(path);
}

static void
test_evacuate_uefi(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *sha_a = NULL, *sha_b = NULL, *sha_ck = NULL;
    const char *uuids[2] = { NULL, NULL };
    uint64_t g_last;

    inst_init(&i, "user", true);
    i.uefi = true;
    uuids[0] = i.uuid;
    spawn(A, &i, true);
    /* Running, OVMF writes its variables while interval checkpoints are
     * taken: each must hold a whole store (the pack reads it between two
     * equal reads). */
    g_last = wait_ckpt_of(A, i.uuid, "the UEFI guest runs");
    {
        g_autoptr(GBytes) nv = ckpt_file_of(i.uuid, g_last, "nvram.fd", true);

        if (g_bytes_get_size(nv) == 0)
            fail_msg("checkpoint %" G_GUINT64_FORMAT " holds an empty variable store", g_last);
    }
    g_last = off_ckpt(A, &i, "power_off of the UEFI guest");
    sha_a = store_sha(A, i.uuid);
    {
        g_autoptr(GBytes) nv = ckpt_file_of(i.uuid, g_last, "nvram.fd", true);

        sha_ck = vtpm_archive_sha256(g_bytes_get_data(nv, NULL), g_bytes_get_size(nv));
    }
    if (g_strcmp0(sha_a, sha_ck) != 0)
        fail_msg("power_off's checkpoint holds another variable store (%s) than host a (%s)",
                 sha_ck, sha_a);

    host_die(A, uuids);
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, NULL, "evacuate the UEFI instance");

        vt_assert_res_str(r, "vtpm_state", "restored", "evacuate (UEFI)");
        vt_assert_res_str(r, "nvram_state", "restored", "evacuate (UEFI)");
        vt_assert_res_str(r, "firmware.type", "uefi", "evacuate (UEFI)");
        if (res_uint(r, "checkpoint.generation", "evacuate (UEFI)") != g_last)
            fail_msg("evacuate (UEFI) restored another checkpoint than the newest");
    }
    assert_dom_state(B, i.uuid, "running", "evacuate (UEFI)");
    power(B, &i, false);
    sha_b = store_sha(B, i.uuid);
    /* OVMF writes variables as it boots, and evacuate starts the guest, so
     * b's store is not byte for byte the checkpoint's any more (unshelve's
     * byte-exact restore of the same archive member is test_lifecycle's);
     * it is the restored one, of the same size, not a missing store. */
    {
        g_autofree char *pa = vt_host_pathf(host_name[A], "var/lib/libvirt/swtpm/%s/nvram.fd",
                                            i.uuid);
        g_autofree char *pb = vt_host_pathf(host_name[B], "var/lib/libvirt/swtpm/%s/nvram.fd",
                                            i.uuid);
        g_autoptr(GBytes) a = read_bytes(pa);
        g_autoptr(GBytes) b = read_bytes(pb);

        if (g_bytes_get_size(a) != g_bytes_get_size(b))
            fail_msg("evacuate (UEFI): b's variable store has %zu bytes, a's %zu",
                     g_bytes_get_size(b), g_bytes_get_size(a));
        print_message("evacuate (UEFI): store %s on a, %s on b after its boot; %zu bytes "
                      "differ\n", sha_a, sha_b, bytes_differing(a, b));
    }

    vt_libvirtd_restart(host_name[A]);
    host_start(A, 2, true);
    wait_log(A, "its stale domain and TPM state are removed", i.uuid, "a comes back (UEFI)");
    destroy(B, &i);
}

/* ---- 4c. a UEFI store written while checkpoints are taken ------------------------------- */

/* QEMU writes a running guest's variable store in place, one pwrite per
 * flash update. A writer of our own does the same to the last 4 KiB of the
 * store, each write a record of one version: a version number at both ends
 * and one letter between. A checkpoint that read the store during a write
 * would hold a record of two versions. */
#define FLUX_RECORD 4096

typedef struct {
    char *path;
    gint stop;
    gint64 pause_us;
    guint64 writes;
} flux;

static void
flux_record(guint64 v, char *rec)
{
    char head[17];

    memset(rec, 'a' + (int)(v % 26), FLUX_RECORD);
    g_snprintf(head, sizeof(head), "VTPMFLUX%08" G_GUINT64_FORMAT, v % 100000000);
    memcpy(rec, head, 16);
    memcpy(rec + FLUX_RECORD - 16, head, 16);
}

static gpointer
flux_run(gpointer data)
{
    flux *f = data;
    char rec[FLUX_RECORD];
    int fd = open(f->path, O_WRONLY | O_CLOEXEC);
    struct stat st;

    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < FLUX_RECORD)
        return g_strdup_printf("opening %s: %s", f->path, g_strerror(errno));
    while (!g_atomic_int_get(&f->stop)) {
        flux_record(++f->writes, rec);
        if (pwrite(fd, rec, FLUX_RECORD, st.st_size - FLUX_RECORD) != FLUX_RECORD) {
            close(fd);
            return g_strdup_printf("writing %s: %s", f->path, g_strerror(errno));
        }
        if (f->pause_us)
            g_usleep((gulong)f->pause_us);
    }
    close(fd);
    return NULL;
}

static void
flux_stop(flux *f, GThread *t)
{
    g_autofree char *why = NULL;

    g_atomic_int_set(&f->stop, 1);
    why = g_thread_join(t);
    if (why)
        fail_msg("the store writer: %s", why);
}

/* The version of the record in variable store @nv: 0 when none was
 * written; fails on a record of two versions. */
static guint64
flux_version(GBytes *nv, uint64_t gen)
{
    gsize len;
    const char *d = g_bytes_get_data(nv, &len);
    const char *rec = d + len - FLUX_RECORD;
    char want[FLUX_RECORD];
    guint64 v;

    if (len < FLUX_RECORD)
        fail_msg("checkpoint %" G_GUINT64_FORMAT ": a store of %zu bytes", gen, len);
    if (memcmp(rec, "VTPMFLUX", 8) != 0 && memcmp(rec + FLUX_RECORD - 16, "VTPMFLUX", 8) != 0)
        return 0;
    if (!g_ascii_string_to_unsigned((char[9]){ rec[8], rec[9], rec[10], rec[11], rec[12],
                                              rec[13], rec[14], rec[15], 0 },
                                    10, 1, G_MAXUINT64, &v, NULL))
        fail_msg("checkpoint %" G_GUINT64_FORMAT ": a torn record head", gen);
    flux_record(v, want);
    if (memcmp(rec, want, FLUX_RECORD) != 0)
        fail_msg("checkpoint %" G_GUINT64_FORMAT ": the store holds a torn record (version "
                 "%" G_GUINT64_FORMAT " at its start, \"%.16s\" at its end)",
                 gen, v, rec + FLUX_RECORD - 16);
    return v;
}

/* Every checkpoint of @uuid newer than @after and not in @seen holds
 * whole records (added to @seen); how many of them hold one the writer
 * wrote. */
static unsigned
flux_check_ckpts(const char *uuid, uint64_t after, GHashTable *seen)
{
    g_autoptr(GArray) gens = ckpts(uuid);
    unsigned written = 0;

    for (guint k = 0; k < gens->len; k++) {
        uint64_t g = g_array_index(gens, uint64_t, k);
        g_autoptr(GBytes) nv = NULL;

        if (g <= after || g_hash_table_contains(seen, &g) ||
            !(nv = ckpt_file_of(uuid, g, "nvram.fd", false)))
            continue;
        g_hash_table_add(seen, g_memdup2(&g, sizeof(g)));
        written += flux_version(nv, g) != 0;
    }
    return written;
}

/* Until the store at @path has not changed for 8 s (at most 300 s). */
static void
store_quiet(const char *path, const char *what)
{
    gint64 end = g_get_monotonic_time() + 300 * G_USEC_PER_SEC;
    g_autofree char *last = NULL;
    int same = 0;

    while (same < 8) {
        g_autofree char *sha = vt_sha256_file(path);

        if (g_get_monotonic_time() > end)
            fail_msg("%s: the variable store %s still changes after 300 s", what, path);
        same = g_strcmp0(sha, last) == 0 ? same + 1 : 0;
        g_free(last);
        last = g_steal_pointer(&sha);
        g_usleep(G_USEC_PER_SEC);
    }
}

static void
test_uefi_store_in_flux(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *path = NULL;
    flux f = { 0 };
    GThread *t;
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    uint64_t g0, g_end;
    double failed0;
    unsigned paced = 0;

    inst_init(&i, "user", true);
    i.uefi = true;
    spawn(A, &i, true);
    g0 = wait_ckpt_of(A, i.uuid, "the UEFI guest runs");
    path = vt_host_pathf(host_name[A], "var/lib/libvirt/swtpm/%s/nvram.fd", i.uuid);
    f.path = path;
    /* OVMF writes its own variables some 20 s into its first boot under
     * TCG (later on a loaded machine), then idles: only the writer's
     * writes from here on. */
    store_quiet(path, "the UEFI guest's first boot");

    /* Written without a pause: every read pair differs, so each of the
     * five packs is taken again and the checkpoint fails, counted, the
     * checkpoints before it kept. */
    failed0 = prom_value(A, "vtpmd_checkpoints_total{outcome=\"failed\"}");
    t = g_thread_new("flux", flux_run, &f);
    wait_log(A, "its UEFI variable store changed during each of 5 checkpoint attempts", i.uuid,
             "a store written without a pause");
    wait_prom(A, "vtpmd_checkpoints_total{outcome=\"failed\"}", failed0 + 1,
              "a store written without a pause");
    flux_stop(&f, t);
    print_message("store in flux: %" G_GUINT64_FORMAT " writes without a pause; "
                  "%u checkpoints meanwhile hold a written record\n",
                  f.writes, flux_check_ckpts(i.uuid, g0, seen));

    /* A write every 100 ms, for 8 s: checkpoints are taken (a pack that
     * saw a write is taken again), each holding one version whole. */
    f.stop = 0;
    f.pause_us = 100000;
    {
        uint64_t before = newest(i.uuid);

        gint64 end = g_get_monotonic_time() + 8 * G_USEC_PER_SEC;

        /* Each checkpoint read as it lands, before checkpoint_keep prunes
         * it. */
        t = g_thread_new("flux", flux_run, &f);
        while (g_get_monotonic_time() < end) {
            paced += flux_check_ckpts(i.uuid, before, seen);
            g_usleep(300 * 1000);
        }
        flux_stop(&f, t);
        paced += flux_check_ckpts(i.uuid, before, seen);
        print_message("store in flux: a write every 100 ms, %" G_GUINT64_FORMAT " in all; "
                      "%u checkpoints hold a written record, all whole\n", f.writes, paced);
        if (paced == 0)
            fail_msg("no checkpoint was taken while the store was written every 100 ms");
    }

    /* The writes stopped: a checkpoint holds the store as it is now. */
    wait_log(A, "work again", i.uuid, "the store holds still");
    {
        gint64 end = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;
        g_autoptr(GBytes) nv = NULL;
        g_autoptr(GBytes) now = NULL;

        for (;;) {
            g_end = newest(i.uuid);
            g_clear_pointer(&nv, g_bytes_unref);
            g_clear_pointer(&now, g_bytes_unref);
            nv = ckpt_file_of(i.uuid, g_end, "nvram.fd", false);
            now = read_bytes(path);
            if (nv && g_bytes_equal(nv, now))
                break;
            if (g_get_monotonic_time() > end)
                fail_msg("no checkpoint holds host a's store after the writes stopped (the "
                         "newest differs in %zu bytes)", nv ? bytes_differing(nv, now) : 0);
            g_usleep(200 * 1000);
        }
        if (flux_version(nv, g_end) != f.writes % 100000000)
            fail_msg("the last checkpoint holds another record than the last written (%"
                     G_GUINT64_FORMAT ")", f.writes);
    }
    destroy(A, &i);
}

/* ---- 5. fallback, no checkpoint, none that verifies, fresh: true ------------------------- */

static void
test_evacuate_fallback_fresh(void **state)
{
    g_auto(inst) i = { 0 }; /* newest checkpoint damaged */
    g_auto(inst) j = { 0 }; /* never started: no checkpoint */
    g_auto(inst) k = { 0 }; /* its only checkpoint damaged */
    g_auto(inst) l = { 0 }; /* fresh: true */
    g_autofree char *none_of = NULL;
    const char *uuids[5] = { NULL };
    uint64_t prev;

    inst_init(&i, "user", false);
    inst_init(&j, "user", false);
    inst_init(&k, "user", false);
    inst_init(&l, "user", false);
    uuids[0] = i.uuid, uuids[1] = j.uuid, uuids[2] = k.uuid, uuids[3] = l.uuid;
    spawn(A, &i, true);
    off_ckpt(A, &i, "i: power_off");
    power(A, &i, true);
    off_ckpt(A, &i, "i: power_off again");
    spawn(A, &j, false);
    spawn(A, &k, true);
    off_ckpt(A, &k, "k: power_off");
    spawn(A, &l, true);
    off_ckpt(A, &l, "l: power_off");
    {
        g_autoptr(GArray) gi = ckpts(i.uuid);
        g_autoptr(GArray) gk = ckpts(k.uuid);
        g_autoptr(GArray) gj = ckpts(j.uuid);

        assert_int_equal(gi->len, 2);
        assert_true(gk->len >= 1);
        assert_int_equal(gj->len, 0);
        prev = g_array_index(gi, uint64_t, 1);
        damage(i.uuid, g_array_index(gi, uint64_t, 0));
        for (guint n = 0; n < gk->len; n++)
            damage(k.uuid, g_array_index(gk, uint64_t, n));
        none_of = g_strdup_printf("none of the %u checkpoints", gk->len);
    }
    host_die(A, uuids);

    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, ", 'fenced': true", "i: newest damaged");

        vt_assert_res_str(r, "vtpm_state", "restored", "i: newest damaged");
        if (res_uint(r, "checkpoint.generation", "i") != prev)
            fail_msg("i: the checkpoint before the damaged one (%" G_GUINT64_FORMAT
                     ") should be restored", prev);
        wait_log(B, "checkpoints passed over", i.uuid, "i: newest damaged");
    }
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &j, A, ", 'fenced': true", "j: no checkpoint");

        vt_assert_res_str(r, "vtpm_state", "fresh", "j: no checkpoint");
        res_nil(r, "checkpoint", "j: no checkpoint");
        if (manufactured(B, j.uuid) != 1)
            fail_msg("j: a fresh TPM should be manufactured once on b, %u times",
                     manufactured(B, j.uuid));
    }
    expect_fault(evacuate(B, &k, A, ", 'fenced': true"), VTPM_FAULT_STATE_INTEGRITY, none_of,
                 false, "k: no checkpoint verifies");
    assert_dom_state(B, k.uuid, "(no domain)", "k: refused");
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &k, A, ", 'fenced': true, 'fresh': true",
                                            "k: fresh: true");

        vt_assert_res_str(r, "vtpm_state", "fresh", "k: fresh: true");
    }
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &l, A, ", 'fenced': true, 'fresh': true",
                                            "l: fresh: true");

        vt_assert_res_str(r, "vtpm_state", "fresh", "l: fresh: true");
        res_nil(r, "checkpoint", "l: fresh: true");
        if (manufactured(B, l.uuid) != 1)
            fail_msg("l: fresh: true must give a new TPM");
    }

    vt_libvirtd_restart(host_name[A]);
    host_start(A, 2, true);
    for (size_t n = 0; uuids[n]; n++) {
        g_autofree char *sd = state_dir(A, uuids[n]);

        wait_log(A, "its stale domain and TPM state are removed", uuids[n], "a comes back");
        assert_dom_state(A, uuids[n], "(no domain)", "a comes back");
        if (exists(sd))
            fail_msg("a comes back: %s is left", sd);
    }
    destroy(B, &i);
    destroy(B, &j);
    destroy(B, &k);
    destroy(B, &l);
}

/* ---- 5b. the TPM's identity ------------------------------------------------------------- */

/* get_vtpm_identity of @uuid on host @h, as compact JSON. */
static char *
identity_of(int h, const char *uuid, const char *what)
{
    g_autoptr(vt_reply) r = ok(h, "get_vtpm_identity", args("{'instance': {'uuid': '%s'}}", uuid),
                               what);

    return vtpm_mpjson_to_string(&r->rep->result, false);
}

static void
assert_identity_changed(const vt_reply *r, bool want, const char *what)
{
    const msgpack_object *o = vt_obj_at(&r->rep->result, "identity_changed");

    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN || o->via.boolean != want)
        fail_msg("%s: result.identity_changed should be %s", what, want ? "true" : "false");
}

/* Both hosts with the deployment's EK CA: a TPM restored from its
 * checkpoint keeps its identity (the record is in the checkpoint's domain
 * definition); fresh: true makes a new TPM with the CA, a new identity,
 * and says so. */
static void
test_evacuate_identity(void **state)
{
    g_autoptr(tc_ca) ca = tc_ca_new();
    g_autofree char *cert = tc_path(ca, "ca.pem"), *key = tc_path(ca, "ca.key");
    g_autofree char *more = g_strdup_printf("\nek_ca_cert = %s\nek_ca_key = %s", cert, key);
    g_autoptr(GBytes) ca_der = tc_bytes(ca, "ca.der");
    g_autofree char *ca_sha = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, ca_der);
    g_autofree char *want_ca = g_strdup_printf("\"sha256\":\"%s\"", ca_sha);
    g_autofree char *I = NULL, *J = NULL, *I_b = NULL, *J_b = NULL;
    g_auto(inst) i = { 0 }; /* restored */
    g_auto(inst) j = { 0 }; /* fresh: true */
    const char *uuids[3] = { NULL };

    for (int h = 0; h < NVTPMD; h++) {
        host_stop(h);
        host_start_with(h, 2, true, more);
    }
    inst_init(&i, "host", false);
    inst_init(&j, "deployment", false);
    uuids[0] = i.uuid, uuids[1] = j.uuid;
    spawn(A, &i, true);
    spawn(A, &j, true);
    off_ckpt(A, &i, "i: power_off");
    off_ckpt(A, &j, "j: power_off");
    I = identity_of(A, i.uuid, "i: spawn on a");
    J = identity_of(A, j.uuid, "j: spawn on a");
    if (!strstr(I, want_ca) || !strstr(J, want_ca))
        fail_msg("spawn on a: the identities should be of the test CA (%s):\n%s\n%s", ca_sha, I,
                 J);
    host_die(A, uuids);

    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &i, A, NULL, "i: evacuate");

        vt_assert_res_str(r, "vtpm_state", "restored", "i: evacuate");
        assert_identity_changed(r, false, "i: evacuate");
    }
    I_b = identity_of(B, i.uuid, "i: evacuated to b");
    if (strcmp(I, I_b) != 0)
        fail_msg("i: the restored TPM's identity changed\n on a: %s\n on b: %s", I, I_b);
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &j, A, ", 'fresh': true", "j: evacuate fresh");

        vt_assert_res_str(r, "vtpm_state", "fresh", "j: evacuate fresh");
        assert_identity_changed(r, true, "j: evacuate fresh");
    }
    J_b = identity_of(B, j.uuid, "j: evacuated to b");
    if (strcmp(J, J_b) == 0 || !strstr(J_b, want_ca))
        fail_msg("j: the fresh TPM should have a new identity of the test CA\n on a: %s\n "
                 "on b: %s", J, J_b);
    if (manufactured(B, i.uuid) != 0 || manufactured(B, j.uuid) != 0)
        fail_msg("libvirt's swtpm_setup manufactured a TPM on b: the restored one or the one "
                 "vtpmd made with the CA was not used");
    {
        /* A redelivery answers the same. */
        g_autoptr(vt_reply) r = evacuate_ok(B, &j, A, ", 'fresh': true", "j: evacuate again");

        assert_identity_changed(r, true, "j: evacuate again");
    }

    vt_libvirtd_restart(host_name[A]);
    host_start(A, 2, true);
    for (size_t n = 0; uuids[n]; n++)
        wait_log(A, "its stale domain and TPM state are removed", uuids[n], "a comes back");
    destroy(B, &i);
    destroy(B, &j);
}

/* ---- 6. key custody ------------------------------------------------------------------------ */

/* The value of host @h's libvirt secret @uuid as libvirt stores it on
 * disk (the host may be dead: its files are still there). */
static GBytes *
secret_on_disk(int h, const char *uuid)
{
    g_autofree char *path = vt_host_pathf(host_name[h], "etc/libvirt/secrets/%s.base64", uuid);
    g_autofree char *text = NULL;
    guchar *raw;
    gsize n = 0;

    if (!g_file_get_contents(path, &text, NULL, NULL))
        fail_msg("no libvirt secret %s on host %s", uuid, host_name[h]);
    raw = g_base64_decode(g_strstrip(text), &n);
    return g_bytes_new_take(raw, n);
}

/* user: the caller's secret, required, and a wrong one opens nothing;
 * host: the key from the checkpoint, wrapped under the deployment key by
 * a host that has one, refused with a clear fault when the host that
 * took it had none; deployment: from any host with the key. */
static void
test_evacuate_custody(void **state)
{
    g_auto(inst) u = { 0 };
    g_auto(inst) h1 = { 0 };
    g_auto(inst) d = { 0 };
    g_auto(inst) h2 = { 0 };
    g_autoptr(GBytes) u_secret = NULL;
    g_autoptr(GBytes) u_before = NULL;
    g_autoptr(GBytes) h1_key = NULL;
    g_autofree char *wrong = g_base64_encode((const guchar *)"not-the-secret", 14);
    const char *uuids[5] = { NULL };

    inst_init(&u, "user", true);
    inst_init(&h1, "host", false);
    inst_init(&d, "deployment", false);
    inst_init(&h2, "host", false);
    uuids[0] = u.uuid, uuids[1] = h1.uuid, uuids[2] = d.uuid, uuids[3] = h2.uuid;
    {
        gsize n = 0;
        guchar *raw = g_base64_decode(u.secret, &n);

        u_secret = g_bytes_new_take(raw, n);
    }
    spawn(A, &u, true);
    spawn(A, &h1, true);
    spawn(A, &d, true);
    off_ckpt(A, &u, "user: power_off");
    off_ckpt(A, &h1, "host: power_off");
    off_ckpt(A, &d, "deployment: power_off");
    /* A host without the deployment key: its host-mode checkpoints carry
     * no copy of the key. */
    host_stop(A);
    host_start(A, 2, false);
    spawn(A, &h2, true);
    off_ckpt(A, &h2, "host, no deployment key: power_off");
    {
        g_autofree char *sd = state_dir(A, u.uuid);

        u_before = vt_tpm_plaintext(sd, u_secret);
        if (!u_before)
            fail_msg("user: the caller's secret does not open a's state");
    }
    h1_key = secret_on_disk(A, h1.uuid);
    host_die(A, uuids);

    expect_fault(evacuate_with(B, &u, A, ", 'fenced': true", NULL), VTPM_FAULT_SECRET_REQUIRED,
                 "args.instance.vtpm.secret is required to evacuate it", false, "user, no secret");
    expect_fault(evacuate_with(B, &u, A, ", 'fenced': true", wrong), VTPM_FAULT_SECRET_INVALID,
                 "does not decrypt", false, "user, a wrong secret");
    assert_dom_state(B, u.uuid, "shut off", "user, a wrong secret: defined, not started");
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &u, A, ", 'fenced': true", "user, the secret");
        g_autofree char *sd = state_dir(B, u.uuid);
        g_autoptr(GBytes) after = NULL;

        vt_assert_res_str(r, "vtpm_state", "restored", "user, the secret");
        assert_dom_state(B, u.uuid, "running", "user, the secret");
        power(B, &u, false);
        after = vt_tpm_plaintext(sd, u_secret);
        if (!after || bytes_differing(u_before, after) > SAME_TPM_MAX_DIFF)
            fail_msg("user: b's TPM, opened with the caller's secret, is not a's TPM");
    }
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &h1, A, ", 'fenced': true", "host, deployment key");
        g_autoptr(GBytes) key_b = vt_host_secret_value(host_name[B], h1.uuid);

        vt_assert_res_str(r, "vtpm_state", "restored", "host, deployment key");
        assert_dom_state(B, h1.uuid, "running", "host, deployment key");
        if (!g_bytes_equal(key_b, h1_key))
            fail_msg("host: b's libvirt secret of %s is not the key a held", h1.uuid);
    }
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &d, A, ", 'fenced': true", "deployment");

        vt_assert_res_str(r, "vtpm_state", "restored", "deployment");
        assert_dom_state(B, d.uuid, "running", "deployment");
    }
    expect_fault(evacuate(B, &h2, A, ", 'fenced': true"), VTPM_FAULT_SECRET_REQUIRED,
                 "deployment_key_file", false, "host, no deployment key");
    assert_dom_state(B, h2.uuid, "(no domain)", "host, no deployment key: refused");
    {
        g_autoptr(vt_reply) r = evacuate_ok(B, &h2, A, ", 'fenced': true, 'fresh': true",
                                            "host, no deployment key, fresh");

        vt_assert_res_str(r, "vtpm_state", "fresh", "host, no deployment key, fresh");
    }

    vt_libvirtd_restart(host_name[A]);
    host_start(A, 2, true);
    for (size_t n = 0; uuids[n]; n++) {
        wait_log(A, "its stale domain and TPM state are removed", uuids[n], "a comes back");
        assert_dom_state(A, uuids[n], "(no domain)", "a comes back");
    }
    destroy(B, &u);
    destroy(B, &h1);
    destroy(B, &d);
    destroy(B, &h2);
}

/* ---- 7. no torn checkpoint ------------------------------------------------------------- */

/* A TPM whose NV index is written in a loop (tpm2_nvwrite against a swtpm
 * on the instance's state dir, the way the guest's writes reach it) while
 * vtpmd checkpoints it, as fast as power_off can ask plus every second:
 * every checkpoint taken is a whole TPM state, which a swtpm loads and
 * whose NV index holds one of the values written. */
/* swtpm on a TCP port pair (tpm2-tools' swtpm TCTI speaks only TCP):
 * below Linux's ephemeral range, where no client socket takes it, and tried
 * again on another pair when one is taken anyway. Sets $port. */
#define SWTPM_START_SH(dir, pid, log)                                                    \
    "port=\n"                                                                            \
    "for try in $(seq 20); do\n"                                                         \
    "  p=$((20000 + (RANDOM % 6000) * 2))\n"                                             \
    "  if swtpm socket --tpm2 --tpmstate dir=" dir " --server type=tcp,port=$p "         \
    "     --ctrl type=tcp,port=$((p + 1)) --flags not-need-init,startup-clear "           \
    "     --pid file=" pid " --log file=" log " --daemon 2> /dev/null; then port=$p; break; fi\n" \
    "done\n"

static const char writer_sh[] =
    "set -u\n"
    "d=$1 stop=$2 out=$3\n"
    SWTPM_START_SH("$d", "$out.pid", "$out.swtpm.log")
    "[ -n \"$port\" ] || exit 3\n"
    "export TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$port\n"
    "for i in $(seq 100); do tpm2_getrandom 4 > /dev/null 2>&1 && break; sleep 0.1; done\n"
    "tpm2_nvdefine 0x1500016 -C o -s 8 -a 'ownerread|ownerwrite|authread|authwrite' "
    "  > /dev/null || exit 4\n"
    "n=0\n"
    "while [ ! -e $stop ]; do\n"
    "  n=$((n + 1)); printf '%08d' $n > $out.v\n"
    "  tpm2_nvwrite 0x1500016 -C o -i $out.v || exit 5\n"
    "done\n"
    "echo $n > $out.count\n"
    "swtpm_ioctl --tcp 127.0.0.1:$((port + 1)) -s\n";

/* Load @state (a tpm2-00.permall) into a swtpm of its own: "none" when the
 * index was not defined yet, the value read, or "FAIL ...". */
static const char reader_sh[] =
    "set -u\n"
    "d=$1\n"
    SWTPM_START_SH("$d", "$d/pid", "$d/log")
    "[ -n \"$port\" ] || { echo FAIL swtpm; exit 0; }\n"
    "export TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=$port\n"
    "ok=\n"
    "for i in $(seq 100); do tpm2_getrandom 4 > /dev/null 2>&1 && ok=1 && break; sleep 0.1; done\n"
    "if [ -z \"$ok\" ]; then echo FAIL load; tail -3 $d/log; "
    "elif ! tpm2_getcap handles-nv-index | grep -qi 0x1500016; then echo none; "
    "else tpm2_nvread 0x1500016 -C o -s 8 2>&1 || echo FAIL read; fi\n"
    "swtpm_ioctl --tcp 127.0.0.1:$((port + 1)) -s > /dev/null 2>&1\n";

static char *
run_sh(const char *script, const char *const *argv_tail, int *status)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(GError) gerr = NULL;
    char *out = NULL;

    g_ptr_array_add(argv, (char *)"bash");
    g_ptr_array_add(argv, (char *)"-c");
    g_ptr_array_add(argv, (char *)script);
    g_ptr_array_add(argv, (char *)"sh");
    for (size_t k = 0; argv_tail[k]; k++)
        g_ptr_array_add(argv, (char *)argv_tail[k]);
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      NULL, status, &gerr))
        fail_msg("bash: %s", gerr->message);
    return out;
}

static void
test_torn_write(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *tpm2 = NULL, *stop = NULL, *out = NULL, *count = NULL;
    g_autofree char *nvwrite = g_find_program_in_path("tpm2_nvwrite");
    g_autoptr(GArray) gens = NULL;
    GPid writer = 0;
    unsigned calls = 0, valued = 0;

    if (!nvwrite)
        fail_msg("tpm2-tools (tpm2_nvwrite) is needed to write the TPM's NV in a loop");
    host_stop(A);
    host_start(A, 100, true);
    inst_init(&i, "user", false);
    spawn(A, &i, true);
    off_ckpt(A, &i, "power_off");
    tpm2 = vt_host_pathf(host_name[A], "var/lib/libvirt/swtpm/%s/tpm2", i.uuid);
    stop = g_strdup_printf("%s/torn-stop", vt_env("VT_ROOT"));
    out = g_strdup_printf("%s/torn", vt_env("VT_ROOT"));
    unlink(stop);
    {
        const char *argv[] = { "bash", "-c", writer_sh, "sh", tpm2, stop, out, NULL };
        g_autoptr(GError) gerr = NULL;

        if (!g_spawn_async(NULL, (char **)argv, NULL,
                           G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &writer,
                           &gerr))
            fail_msg("starting the NV writer: %s", gerr->message);
    }
    /* 20 s of writes; meanwhile a checkpoint forced as often as power_off
     * answers, besides those of the interval. */
    {
        gint64 end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;

        while (g_get_monotonic_time() < end) {
            power(A, &i, false);
            calls++;
        }
    }
    g_file_set_contents(stop, "", 0, NULL);
    {
        int status = 0;

        if (waitpid(writer, &status, 0) != writer || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            fail_msg("the NV writer failed (status %d); see %s.swtpm.log", status, out);
        g_spawn_close_pid(writer);
    }
    count = g_strdup_printf("%s.count", out);
    {
        g_autofree char *n = NULL;

        g_file_get_contents(count, &n, NULL, NULL);
        print_message("torn writes: %s NV writes, %u power_off calls\n", n ? g_strstrip(n) : "?",
                      calls);
    }
    /* Let the last uploads land (no new checkpoint for three intervals),
     * then load every checkpoint. */
    for (uint64_t last = 0, now = newest(i.uuid); now != last; now = newest(i.uuid)) {
        last = now;
        g_usleep(3 * G_USEC_PER_SEC);
    }
    gens = ckpts(i.uuid);
    if (gens->len < 10)
        fail_msg("only %u checkpoints were taken while the TPM was written", gens->len);
    for (guint g = 0; g < gens->len; g++) {
        g_autoptr(GBytes) st = ckpt_state(i.uuid, g_array_index(gens, uint64_t, g));
        g_autofree char *dir = g_dir_make_tmp("test_evacuate-torn-XXXXXX", NULL);
        g_autofree char *file = g_build_filename(dir, "tpm2-00.permall", NULL);
        g_autofree char *res = NULL, *rm = g_strdup_printf("rm -rf '%s'", dir);
        const char *argv[] = { dir, NULL };
        int status = 0;

        if (!st)
            continue; /* pruned meanwhile */
        g_file_set_contents(file, g_bytes_get_data(st, NULL), (gssize)g_bytes_get_size(st), NULL);
        res = g_strstrip(run_sh(reader_sh, argv, &status));
        g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL);
        if (g_str_has_prefix(res, "FAIL") ||
            (strcmp(res, "none") != 0 && (strlen(res) != 8 || strspn(res, "0123456789") != 8)))
            fail_msg("checkpoint %" G_GUINT64_FORMAT " does not load as a whole TPM: %s",
                     g_array_index(gens, uint64_t, g), res);
        valued += strcmp(res, "none") != 0;
    }
    print_message("torn writes: %u checkpoints, each loads; %u hold a value written\n",
                  gens->len, valued);
    if (valued < gens->len / 2)
        fail_msg("only %u of %u checkpoints were taken while the NV index was written", valued,
                 gens->len);
    destroy(A, &i);
}

/* ---- 8. generation records pruned against the ownership records ----------------------- */

/* A migration source keeps the instance's generation record after the
 * confirm; once the ownership record names the destination at a newer
 * generation, a's vtpmd drops it at its start, and a migration back is
 * judged by the ownership record, which lets it through. */
static void
test_prune_generations(void **state)
{
    g_auto(inst) i = { 0 };
    g_autofree char *gen_a = NULL, *fl = NULL, *s = NULL, *owner = NULL;

    inst_init(&i, "user", false);
    gen_a = vt_host_pathf(host_name[A], "var/lib/vtpmd/kept/generations/%s", i.uuid);
    fl = flavor_of(&i);
    s = spec(&i);
    spawn(A, &i, true);
    ok_free(A, "migrate_disk_and_power_off",
            args("{'instance': %s, 'dest_host': '%s'}", s, host_addr[B]), "migrate a -> b");
    ok_free(B, "finish_migration", args("{'instance': %s, 'old_flavor': %s}", s, fl),
            "finish_migration on b");
    ok_free(A, "confirm_migration", args("{'instance': {'uuid': '%s'}}", i.uuid),
            "confirm_migration on a");
    wait_ckpt_of(B, i.uuid, "b checkpoints the migrated TPM");
    owner = owner_of(i.uuid);
    if (g_strcmp0(owner, host_addr[B]) != 0)
        fail_msg("after the migration the ownership record should name b, names %s",
                 owner ? owner : "nobody");
    if (!exists(gen_a))
        fail_msg("the migration source should still keep %s", gen_a);
    host_stop(A);
    host_start(A, 2, true);
    wait_log(A, "dropped", "generation record", "a's start");
    if (exists(gen_a))
        fail_msg("a's start should have dropped %s: the ownership record guards it now", gen_a);
    ok_free(B, "migrate_disk_and_power_off",
            args("{'instance': %s, 'dest_host': '%s'}", s, host_addr[A]), "migrate b -> a");
    {
        g_autoptr(vt_reply) r = ok(A, "finish_migration",
                                   args("{'instance': %s, 'old_flavor': %s}", s, fl),
                                   "finish_migration on a, record pruned");

        vt_assert_res_str(r, "vtpm_state", "restored", "finish_migration on a");
    }
    ok_free(B, "confirm_migration", args("{'instance': {'uuid': '%s'}}", i.uuid),
            "confirm_migration on b");
    destroy(A, &i);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkpoints, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_store_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_refused, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_dead_host, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_uefi, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_uefi_store_in_flux, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_fallback_fresh, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_identity, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_evacuate_custody, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_torn_write, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_prune_generations, test_setup, test_teardown),
    };
    const char *missing = NULL;

    if (!vt_env_ready(&missing) || !g_getenv("VT_HOST_C_ADDR")) {
        fprintf(stderr, "test_evacuate: %s is not set; run it through tests/integration.sh "
                        "--net --hosts 3 (skipped)\n", missing ? missing : "VT_HOST_C_ADDR");
        return 77;
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
