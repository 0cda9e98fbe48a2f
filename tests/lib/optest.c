/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include <glib/gstdio.h>
#include <libvirt/libvirt.h>

#include "mpjson.h"
#include "ops/basics.h"
#include "optest.h"

static void
set(char **field, const char *value)
{
    g_free(*field);
    *field = g_strdup(value);
}

/* Below the private tree @root. */
static void
set_dir(char **field, const char *root, const char *name)
{
    g_free(*field);
    *field = g_build_filename(root, name, NULL);
}

ot_host *
ot_host_new(void)
{
    ot_host *h = g_new0(ot_host, 1);
    g_autofree char *images = NULL;
    vtpm_config *cfg;
    vtpm_error err = { 0 };

    h->root = g_dir_make_tmp("test_ops-XXXXXX", NULL);
    assert_non_null(h->root);
    images = g_build_filename(h->root, "images", NULL);
    assert_int_equal(g_mkdir(images, 0700), 0);
    h->cfg = cfg = vtpm_config_new_default();
    set(&cfg->worker.host, OT_HOST);
    set(&cfg->libvirt.uri, "test:///default");
    set(&cfg->libvirt.virt_type, "qemu");
    cfg->libvirt.shutdown_timeout = 5;
    set_dir(&cfg->libvirt.state_dir, h->root, "state");
    set_dir(&cfg->libvirt.console_dir, h->root, "console");
    set_dir(&cfg->libvirt.images_dir, h->root, "images");
    set_dir(&cfg->store.pool_dir, h->root, "pools");
    set_dir(&cfg->store.kept_dir, h->root, "kept");
    if (vtpm_worker_init(&h->w, h->cfg, &err) < 0)
        fail_msg("worker init: %s", err.message);
    return h;
}

void
ot_offer_firmware(ot_host *h, gboolean secure_boot)
{
    vtpm_host_facts f = {
        .arch = g_strdup("x86_64"),
        .libvirt_version = 9000000,
        .qemu_version = 7002000,
        .firmware = { .domcaps_read = TRUE, .machine = "pc-q35-7.2", .efi_autoselect = TRUE,
                      .pflash = TRUE, .secure = secure_boot, .descriptors = 3,
                      .plain_uefi = TRUE, .secure_enrolled = secure_boot },
    };
    vtpm_caps_config cc = { 0 };
    vtpm_caps_snapshot *s = g_atomic_rc_box_new0(vtpm_caps_snapshot);
    vtpm_caps_snapshot *old;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    s->caps = vtpm_caps_evaluate_take(OT_HOST, &f, &cc);
    assert_true(vtpm_caps_has_trait(s->caps, VTPM_TRAIT_FIRMWARE_UEFI));
    assert_int_equal(vtpm_caps_has_trait(s->caps, VTPM_TRAIT_UEFI_SECURE_BOOT), secure_boot);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(vtpm_caps_pack(s->caps, &pk), 0);
    s->packed = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    g_mutex_lock(&h->w.caps_lock);
    old = h->w.caps;
    h->w.caps = s;
    g_mutex_unlock(&h->w.caps_lock);
    vtpm_caps_snapshot_unref(old);
}

int
ot_setup(void **state)
{
    *state = ot_host_new();
    return 0;
}

int
ot_teardown(void **state)
{
    ot_host_free(*state);
    return 0;
}

static void
remove_tree(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *child = g_build_filename(path, name, NULL);

        if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            remove_tree(child);
        else
            g_unlink(child);
    }
    g_rmdir(path);
}

void
ot_host_free(ot_host *h)
{
    if (!h)
        return;
    vtpm_worker_clear(&h->w);
    vtpm_config_free(h->cfg);
    remove_tree(h->root);
    g_free(h->root);
    g_free(h);
}

void
ot_reply_clear(ot_reply *r)
{
    g_clear_pointer(&r->result, g_free);
}

/* JSON as the tests write it: single quotes for double ones. */
static char *
json(const char *fmt, va_list ap)
{
    char *s = g_strdup_vprintf(fmt, ap);

    g_strdelimit(s, "'", '"');
    return s;
}

static vtpm_request *
request(ot_host *h, const char *method, const char *args)
{
    g_autofree char *text = g_strdup_printf("{\"v\": 1, \"method\": \"%s\", \"args\": %s}",
                                            method, args);
    msgpack_sbuffer sb;
    vtpm_request *req = NULL;
    vtpm_error err = { 0 };

    msgpack_sbuffer_init(&sb);
    if (vtpm_mpjson_from_string(text, -1, &sb, &err) < 0)
        fail_msg("test request is not JSON: %s\n%s", err.message, text);
    if (vtpm_proto_decode_request(sb.data, sb.size, &h->w.limits, &req, NULL, &err) < 0)
        fail_msg("test request refused by the decoder: %s\n%s", err.message, text);
    msgpack_sbuffer_destroy(&sb);
    return req;
}

/* Compact JSON of the one map in @sb. */
static char *
result_json(const msgpack_sbuffer *sb)
{
    msgpack_unpacked up;
    size_t off = 0;
    char *out;

    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sb->size); /* one map, nothing after it */
    assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
    out = vtpm_mpjson_to_string(&up.data, false);
    msgpack_unpacked_destroy(&up);
    return out;
}

static void
call(ot_host *h, vtpm_handler_fn fn, const char *method, ot_reply *out, const char *args)
{
    g_autoptr(vtpm_request) req = request(h, method, args);
    msgpack_sbuffer sb;
    msgpack_packer pk;

    memset(out, 0, sizeof(*out));
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    out->rc = fn(&h->w, req, &pk, &out->err);
    if (out->rc == 0)
        out->result = result_json(&sb);
    msgpack_sbuffer_destroy(&sb);
}

void
ot_call(ot_host *h, vtpm_handler_fn fn, const char *method, ot_reply *out, const char *args, ...)
{
    g_autofree char *a = NULL;
    va_list ap;

    va_start(ap, args);
    a = json(args, ap);
    va_end(ap);
    call(h, fn, method, out, a);
}

void
ot_expect_fault(ot_host *h, vtpm_handler_fn fn, const char *method, vtpm_fault code,
                const char *message, const char *args, ...)
{
    g_auto(ot_reply) r = { 0 };
    g_autofree char *a = NULL;
    va_list ap;

    va_start(ap, args);
    a = json(args, ap);
    va_end(ap);
    call(h, fn, method, &r, a);
    if (r.rc == 0)
        fail_msg("%s %s: expected %s, got ok %s", method, a, vtpm_fault_name(code), r.result);
    if (r.rc != -(int)code || r.err.code != code || strcmp(r.err.message, message) != 0)
        fail_msg("%s %s:\n expected %s: %s\n got      %s (rc %d): %s", method, a,
                 vtpm_fault_name(code), message, vtpm_fault_name(r.err.code), r.rc,
                 r.err.message);
}

/* @text (JSON, single quotes) as result_json() writes it. */
static char *
compact(const char *text)
{
    g_autofree char *j = g_strdup(text);
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };
    char *out;

    g_strdelimit(j, "'", '"');
    msgpack_sbuffer_init(&sb);
    if (vtpm_mpjson_from_string(j, -1, &sb, &err) < 0)
        fail_msg("expected result is not JSON: %s\n%s", err.message, j);
    out = result_json(&sb);
    msgpack_sbuffer_destroy(&sb);
    return out;
}

void
ot_expect_ok(ot_host *h, vtpm_handler_fn fn, const char *method, const char *result,
             const char *args, ...)
{
    g_auto(ot_reply) r = { 0 };
    g_autofree char *a = NULL;
    g_autofree char *want = result ? compact(result) : NULL;
    va_list ap;

    va_start(ap, args);
    a = json(args, ap);
    va_end(ap);
    call(h, fn, method, &r, a);
    if (r.rc != 0)
        fail_msg("%s %s: expected ok, got %s: %s", method, a, vtpm_fault_name(r.err.code),
                 r.err.message);
    if (want && strcmp(r.result, want) != 0)
        fail_msg("%s %s:\n expected %s\n got      %s", method, a, want, r.result);
}

char *
ot_uuid(void)
{
    return g_uuid_string_random();
}

char *
ot_instance(const char *uuid, const char *extra_specs, const char *image, const char *more)
{
    return ot_instance_props(uuid, extra_specs, image, "", more);
}

char *
ot_instance_props(const char *uuid, const char *extra_specs, const char *image,
                  const char *properties, const char *more)
{
    return g_strdup_printf("{'uuid': '%s', 'name': 'vm', 'flavor': {'name': 'm1.tiny', "
                           "'vcpus': 1, 'memory_mb': 64, 'extra_specs': {%s}}, "
                           "'image': {'id': '%s', 'properties': {%s}}%s}",
                           uuid, extra_specs, image, properties, more);
}

void
ot_spawn(ot_host *h, const char *uuid, gboolean power_on)
{
    g_autofree char *inst = ot_instance(uuid, "", "img-1", "");
    g_autofree char *want =
        g_strdup_printf("{'domain': 'instance-%s', 'vtpm': null, " OT_BIOS "}", uuid);

    ot_expect_ok(h, vtpm_op_spawn, "spawn", want, "{'instance': %s, 'power_on': %s}", inst,
                 power_on ? "true" : "false");
}

char *
ot_domain(const char *uuid)
{
    return g_strdup_printf("instance-%s", uuid);
}

/* The domain of @uuid on the host's connection (*conn), or NULL. */
static virDomainPtr
lookup(ot_host *h, const char *uuid, virConnectPtr *conn)
{
    vtpm_error err = { 0 };

    if (vtpm_virt_conn(h->w.virt, conn, NULL, &err) < 0)
        fail_msg("libvirt: %s", err.message);
    return virDomainLookupByUUIDString(*conn, uuid);
}

gboolean
ot_domain_exists(ot_host *h, const char *uuid, gboolean *running)
{
    virConnectPtr conn = NULL;
    virDomainPtr dom = lookup(h, uuid, &conn);

    if (dom && running)
        *running = virDomainIsActive(dom) == 1;
    if (dom)
        virDomainFree(dom);
    virConnectClose(conn);
    return dom != NULL;
}

void
ot_undefine(ot_host *h, const char *uuid)
{
    virConnectPtr conn = NULL;
    virDomainPtr dom = lookup(h, uuid, &conn);

    assert_non_null(dom);
    if (virDomainIsActive(dom) == 1)
        assert_int_equal(virDomainDestroy(dom), 0);
    assert_int_equal(virDomainUndefine(dom), 0);
    virDomainFree(dom);
    virConnectClose(conn);
}

char *
ot_path(ot_host *h, const char *rel)
{
    return g_build_filename(h->root, rel, NULL);
}
