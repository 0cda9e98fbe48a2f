/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include <libvirt/libvirt.h>

#include "domxml.h"

#define UUID "6f1c2a4e-0b7d-4c1e-9a55-3d2e8f0a1b2c"
#define SECRET "0c3e5a7b-1d2f-4e6a-8b9c-aabbccddeeff"

/* ---- a tiny DOM on top of GMarkup --------------------------------------- */

typedef struct {
    char *path; /* "domain/devices/tpm/backend" */
    GHashTable *attrs;
    GString *text;
} node;

typedef struct {
    GPtrArray *nodes; /* document order */
    GPtrArray *stack;
} doc;

static void
node_free(gpointer data)
{
    node *n = data;

    g_free(n->path);
    g_hash_table_unref(n->attrs);
    g_string_free(n->text, TRUE);
    g_free(n);
}

static void
doc_free(doc *d)
{
    if (!d)
        return;
    g_ptr_array_unref(d->nodes);
    g_ptr_array_unref(d->stack);
    g_free(d);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(doc, doc_free)

static void
on_start(GMarkupParseContext *ctx, const char *name, const char **attr_names,
         const char **attr_values, gpointer user_data, GError **error)
{
    doc *d = user_data;
    node *n = g_new0(node, 1);
    node *parent = d->stack->len ? g_ptr_array_index(d->stack, d->stack->len - 1) : NULL;

    n->path = parent ? g_strconcat(parent->path, "/", name, NULL) : g_strdup(name);
    n->attrs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    n->text = g_string_new(NULL);
    for (size_t i = 0; attr_names[i]; i++)
        g_hash_table_insert(n->attrs, g_strdup(attr_names[i]), g_strdup(attr_values[i]));
    g_ptr_array_add(d->nodes, n);
    g_ptr_array_add(d->stack, n);
}

static void
on_end(GMarkupParseContext *ctx, const char *name, gpointer user_data, GError **error)
{
    doc *d = user_data;

    g_ptr_array_remove_index(d->stack, d->stack->len - 1);
}

static void
on_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer user_data,
        GError **error)
{
    doc *d = user_data;

    if (d->stack->len) {
        node *n = g_ptr_array_index(d->stack, d->stack->len - 1);

        g_string_append_len(n->text, text, (gssize)len);
    }
}

static doc *
doc_parse(const char *xml)
{
    static const GMarkupParser parser = { on_start, on_end, on_text, NULL, NULL };
    doc *d = g_new0(doc, 1);
    g_autoptr(GMarkupParseContext) ctx = NULL;
    g_autoptr(GError) error = NULL;

    d->nodes = g_ptr_array_new_with_free_func(node_free);
    d->stack = g_ptr_array_new();
    ctx = g_markup_parse_context_new(&parser, 0, d, NULL);
    if (!g_markup_parse_context_parse(ctx, xml, -1, &error) ||
        !g_markup_parse_context_end_parse(ctx, &error))
        fail_msg("XML does not parse: %s\n%s", error->message, xml);
    return d;
}

static const node *
find(const doc *d, const char *path)
{
    for (guint i = 0; i < d->nodes->len; i++) {
        const node *n = g_ptr_array_index(d->nodes, i);

        if (strcmp(n->path, path) == 0)
            return n;
    }
    return NULL;
}

static guint
count(const doc *d, const char *path)
{
    guint c = 0;

    for (guint i = 0; i < d->nodes->len; i++) {
        const node *n = g_ptr_array_index(d->nodes, i);

        c += strcmp(n->path, path) == 0;
    }
    return c;
}

static const node *
must_find(const doc *d, const char *path)
{
    const node *n = find(d, path);

    if (!n)
        fail_msg("no <%s>", path);
    return n;
}

static const char *
attr(const doc *d, const char *path, const char *name)
{
    const char *v = g_hash_table_lookup(must_find(d, path)->attrs, name);

    if (!v)
        fail_msg("<%s> has no %s", path, name);
    return v;
}

static const char *
text(const doc *d, const char *path)
{
    return must_find(d, path)->text->str;
}

/* ---- fixtures ------------------------------------------------------------ */

typedef struct {
    vtpm_flavor flavor;
    vtpm_image image;
    vtpm_instance inst;
    vtpm_device tpm;
    vtpm_domxml_params p;
    char *dir;
} fx;

static int
setup(void **state)
{
    fx *f = g_new0(fx, 1);
    g_autoptr(GError) error = NULL;

    f->flavor.name = "m1.small";
    f->flavor.vcpus = 2;
    f->flavor.memory_mb = 512;
    f->image.id = "0a1b2c3d-img";
    f->image.name = "";
    memcpy(f->inst.uuid, UUID, sizeof(f->inst.uuid));
    f->inst.name = "web-1";
    f->inst.flavor = &f->flavor;
    f->inst.image = &f->image;
    f->tpm = (vtpm_device){ VTPM_VERSION_2_0, VTPM_MODEL_TIS, VTPM_SECRET_HOST };
    f->p.inst = &f->inst;
    f->p.tpm = &f->tpm;
    f->dir = g_dir_make_tmp("vtpmd-domxml-XXXXXX", &error);
    assert_non_null(f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    g_autoptr(GDir) dir = g_dir_open(f->dir, 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *path = g_build_filename(f->dir, name, NULL);

        g_unlink(path);
    }
    g_rmdir(f->dir);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static char *
make_file(fx *f, const char *name, const void *data, size_t len)
{
    char *path = g_build_filename(f->dir, name, NULL);

    assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
    return path;
}

/* A qcow2 v3 header: magic, version, backing_file_offset, ...,
 * incompatible_features at 72. */
static char *
make_qcow2(fx *f, const char *name, guint64 backing_offset, guint64 incompat)
{
    unsigned char h[104] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };

    for (int i = 0; i < 8; i++) {
        h[8 + i] = (unsigned char)(backing_offset >> (56 - 8 * i));
        h[72 + i] = (unsigned char)(incompat >> (56 - 8 * i));
    }
    return make_file(f, name, h, sizeof(h));
}

/* libvirt's own RNG schema: 1 valid, 0 invalid (@report says why),
 * -1 when virt-xml-validate is not installed. */
static int
schema_valid(fx *f, const char *xml, char **report)
{
    g_autofree char *tool = g_find_program_in_path("virt-xml-validate");
    g_autofree char *path = NULL;
    g_autofree char *out = NULL;
    g_autofree char *errout = NULL;
    g_autoptr(GError) error = NULL;
    int status = 0;

    if (!tool)
        return -1;
    path = make_file(f, "domain.xml", xml, strlen(xml));
    {
        const char *argv[] = { tool, path, "domain", NULL };

        assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
                                 &errout, &status, &error));
    }
    g_unlink(path);
    *report = g_strconcat(out, errout, NULL);
    return g_spawn_check_wait_status(status, NULL) ? 1 : 0;
}

static void
validate(fx *f, const char *xml)
{
    g_autofree char *report = NULL;

    if (schema_valid(f, xml, &report) == 0)
        fail_msg("virt-xml-validate refused:\n%s\n%s", report, xml);
}

static char *
build_ok(fx *f)
{
    char *xml = NULL;
    vtpm_error err = { 0 };

    if (vtpm_domxml_build(&f->p, &xml, &err) != 0)
        fail_msg("build failed: %s", err.message);
    assert_non_null(xml);
    validate(f, xml);
    return xml;
}

static void
expect_fault(fx *f, vtpm_fault code, const char *message)
{
    char *sentinel = (char *)&sentinel;
    char *xml = sentinel;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_domxml_build(&f->p, &xml, &err), -(int)code);
    assert_int_equal(err.code, code);
    assert_string_equal(err.message, message);
    assert_ptr_equal(xml, sentinel);
}

/* What every domain has, whatever the TPM and boot. */
static void
check_common(const doc *d, const char *type)
{
    assert_string_equal(attr(d, "domain", "type"), type);
    assert_string_equal(text(d, "domain/name"), "instance-" UUID);
    assert_string_equal(text(d, "domain/uuid"), UUID);
    assert_string_equal(attr(d, "domain/memory", "unit"), "MiB");
    assert_string_equal(text(d, "domain/memory"), "512");
    assert_string_equal(text(d, "domain/vcpu"), "2");
    assert_string_equal(attr(d, "domain/os/type", "arch"), "x86_64");
    assert_string_equal(attr(d, "domain/os/type", "machine"), "q35");
    assert_string_equal(text(d, "domain/os/type"), "hvm");
    assert_int_equal(count(d, "domain/features/acpi"), 1);
    assert_string_equal(text(d, "domain/on_poweroff"), "destroy");
    assert_string_equal(text(d, "domain/on_reboot"), "restart");
    assert_string_equal(text(d, "domain/on_crash"), "destroy");
    assert_string_equal(attr(d, "domain/devices/memballoon", "model"), "none");
    assert_int_equal(count(d, "domain/devices/graphics"), 0);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance", "xmlns:vtpmd"),
                        VTPM_DOMXML_NS);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:flavor", "name"),
                        "m1.small");
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:image", "id"),
                        "0a1b2c3d-img");
    assert_int_equal(count(d, "domain/devices/serial"), 1);
    assert_int_equal(count(d, "domain/devices/console"), 1);
}

/* ---- the TPM ------------------------------------------------------------- */

/* Every TPM variant with every kind of boot. */
static void
test_tpm_matrix(void **state)
{
    static const struct {
        vtpm_version version;
        vtpm_model model;
        vtpm_secret_security sec;
        bool secret;
        const char *v, *m, *s;
    } tpms[] = {
        { VTPM_VERSION_2_0, VTPM_MODEL_TIS, VTPM_SECRET_HOST, false, "2.0", "tpm-tis", "host" },
        { VTPM_VERSION_2_0, VTPM_MODEL_TIS, VTPM_SECRET_USER, true, "2.0", "tpm-tis", "user" },
        { VTPM_VERSION_2_0, VTPM_MODEL_CRB, VTPM_SECRET_DEPLOYMENT, false, "2.0", "tpm-crb",
          "deployment" },
        { VTPM_VERSION_2_0, VTPM_MODEL_CRB, VTPM_SECRET_USER, true, "2.0", "tpm-crb", "user" },
        { VTPM_VERSION_1_2, VTPM_MODEL_TIS, VTPM_SECRET_HOST, false, "1.2", "tpm-tis", "host" },
        { VTPM_VERSION_1_2, VTPM_MODEL_TIS, VTPM_SECRET_USER, true, "1.2", "tpm-tis", "user" },
        { VTPM_VERSION_NONE, VTPM_MODEL_CRB, VTPM_SECRET_USER, false, NULL, NULL, NULL },
    };
    enum { BOOT_NONE, BOOT_KERNEL, BOOT_DISK, BOOT__COUNT };
    fx *f = *state;
    g_autofree char *disk = make_qcow2(f, "matrix.qcow2", 0, 0);

    for (size_t i = 0; i < G_N_ELEMENTS(tpms); i++) {
        for (int b = 0; b < BOOT__COUNT; b++) {
            g_autofree char *xml = NULL;
            g_autoptr(doc) d = NULL;

            print_message("tpm %zu boot %d\n", i, b);
            f->tpm = (vtpm_device){ tpms[i].version, tpms[i].model, tpms[i].sec };
            f->p.secret_uuid = tpms[i].secret ? SECRET : NULL;
            f->inst.boot = (vtpm_boot){ b != BOOT_NONE, b == BOOT_KERNEL ? "/k" : NULL, NULL,
                                        b == BOOT_KERNEL ? "quiet" : NULL,
                                        b == BOOT_DISK ? disk : NULL };
            xml = build_ok(f);
            d = doc_parse(xml);
            check_common(d, "qemu");

            assert_int_equal(count(d, "domain/os/kernel"), b == BOOT_KERNEL);
            assert_int_equal(count(d, "domain/os/cmdline"), b == BOOT_KERNEL);
            assert_int_equal(count(d, "domain/os/boot"), b == BOOT_DISK);
            assert_int_equal(count(d, "domain/devices/disk"), b == BOOT_DISK);

            if (!tpms[i].v) {
                assert_int_equal(count(d, "domain/devices/tpm"), 0);
                assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm"), 0);
                continue;
            }
            assert_int_equal(count(d, "domain/devices/tpm"), 1);
            assert_string_equal(attr(d, "domain/devices/tpm", "model"), tpms[i].m);
            assert_string_equal(attr(d, "domain/devices/tpm/backend", "type"), "emulator");
            assert_string_equal(attr(d, "domain/devices/tpm/backend", "version"), tpms[i].v);
            if (tpms[i].secret)
                assert_string_equal(attr(d, "domain/devices/tpm/backend/encryption", "secret"),
                                    SECRET);
            else
                assert_int_equal(count(d, "domain/devices/tpm/backend/encryption"), 0);
            assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm", "version"),
                                tpms[i].v);
            assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm", "model"),
                                tpms[i].m);
            assert_string_equal(
                attr(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm", "secret_security"),
                tpms[i].s);
        }
    }
}

static void
test_no_tpm(void **state)
{
    fx *f = *state;

    for (int i = 0; i < 2; i++) {
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        /* both spellings of "no vTPM" */
        if (i == 0) {
            f->p.tpm = NULL;
        } else {
            f->tpm.version = VTPM_VERSION_NONE;
            f->p.tpm = &f->tpm;
        }
        xml = build_ok(f);
        d = doc_parse(xml);
        check_common(d, "qemu");
        assert_int_equal(count(d, "domain/devices/tpm"), 0);
        assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm"), 0);
    }
}

static void
test_crb_1_2_refused(void **state)
{
    fx *f = *state;

    f->tpm = (vtpm_device){ VTPM_VERSION_1_2, VTPM_MODEL_CRB, VTPM_SECRET_USER };
    expect_fault(f, VTPM_FAULT_INVALID_TPM_CONFIG,
                 "TPM model tpm-crb requires TPM version 2.0, not 1.2");
    /* refused before anything else is looked at, even a bad secret */
    f->p.secret_uuid = "nope";
    f->p.virt_type = "xen";
    expect_fault(f, VTPM_FAULT_INVALID_TPM_CONFIG,
                 "TPM model tpm-crb requires TPM version 2.0, not 1.2");
}

static void
test_bad_tpm_inputs(void **state)
{
    fx *f = *state;

    f->p.secret_uuid = "0c3e5a7b-1d2f-4e6a-8b9c-aabbccddeef";
    expect_fault(f, VTPM_FAULT_INTERNAL,
                 "secret '0c3e5a7b-1d2f-4e6a-8b9c-aabbccddeef' is not a UUID");
    f->p.secret_uuid = "0c3e5a7b-1d2f-4e6a-8b9c-aabbccddeeff'/><x a='";
    expect_fault(f, VTPM_FAULT_INTERNAL,
                 "secret '0c3e5a7b-1d2f-4e6a-8b9c-aabbccddeeff'/><x a='' is not a UUID");

    f->p.secret_uuid = SECRET;
    f->p.tpm = NULL;
    expect_fault(f, VTPM_FAULT_INTERNAL, "TPM secret given without a TPM");

    f->p.secret_uuid = NULL;
    f->p.tpm = &f->tpm;
    f->tpm.version = (vtpm_version)7;
    expect_fault(f, VTPM_FAULT_INTERNAL, "unknown TPM version 7");
    f->tpm.version = VTPM_VERSION_2_0;
    f->tpm.model = (vtpm_model)9;
    expect_fault(f, VTPM_FAULT_INTERNAL, "unknown TPM model 9");
    f->tpm.model = VTPM_MODEL_TIS;
    f->tpm.secret_security = VTPM_SECRET__COUNT;
    expect_fault(f, VTPM_FAULT_INTERNAL, "unknown TPM secret security 3");
    f->tpm.secret_security = VTPM_SECRET_USER;
    f->tpm.version = VTPM_VERSION_1_2;
    f->tpm.pcr_banks = 1u << VTPM_PCR_SHA1;
    expect_fault(f, VTPM_FAULT_INTERNAL, "PCR banks 0x1 for TPM 1.2");
    f->tpm.version = VTPM_VERSION_2_0;
    f->tpm.pcr_banks = 1u << VTPM_PCR__COUNT;
    expect_fault(f, VTPM_FAULT_INTERNAL, "PCR banks 0x10 for TPM 2.0");
    f->tpm.pcr_banks = 0;
    f->p.identity = "v1:aWQ=";
    f->p.tpm = NULL;
    expect_fault(f, VTPM_FAULT_INTERNAL, "TPM identity given without a TPM");
}

/* Banks asked for become <active_pcr_banks> in libvirt's order of the
 * backend's children (the schema check of build_ok holds it to that);
 * none asked for, no element: the TPM keeps the banks it was made with. */
static void
test_pcr_banks(void **state)
{
    fx *f = *state;
    g_autofree char *plain = NULL, *two = NULL;
    doc *d;

    plain = build_ok(f);
    d = doc_parse(plain);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks"), 0);
    doc_free(d);

    f->tpm.pcr_banks = 1u << VTPM_PCR_SHA384 | 1u << VTPM_PCR_SHA256;
    f->p.secret_uuid = SECRET;
    two = build_ok(f);
    d = doc_parse(two);
    assert_int_equal(count(d, "domain/devices/tpm/backend/encryption"), 1);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks"), 1);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks/sha256"), 1);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks/sha384"), 1);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks/sha1"), 0);
    assert_int_equal(count(d, "domain/devices/tpm/backend/active_pcr_banks/sha512"), 0);
    doc_free(d);
}

/* ---- domain type, boot, console ----------------------------------------- */

static void
test_virt_type(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = { { NULL, "qemu" }, { "auto", "qemu" }, { "qemu", "qemu" }, { "kvm", "kvm" } };
    fx *f = *state;

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        f->p.virt_type = cases[i].in;
        xml = build_ok(f);
        d = doc_parse(xml);
        check_common(d, cases[i].out);
    }
    f->p.virt_type = "xen";
    expect_fault(f, VTPM_FAULT_INTERNAL, "unknown virt type 'xen'");
}

static void
test_boot_kernel(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autoptr(doc) d = NULL;

    f->inst.boot = (vtpm_boot){ true, "/img/vmlinuz", "/img/initrd", "console=ttyS0 quiet",
                                NULL };
    xml = build_ok(f);
    d = doc_parse(xml);
    check_common(d, "qemu");
    assert_string_equal(text(d, "domain/os/kernel"), "/img/vmlinuz");
    assert_string_equal(text(d, "domain/os/initrd"), "/img/initrd");
    assert_string_equal(text(d, "domain/os/cmdline"), "console=ttyS0 quiet");
    assert_int_equal(count(d, "domain/os/boot"), 0);
    assert_int_equal(count(d, "domain/devices/disk"), 0);
    assert_int_equal(count(d, "domain/devices/tpm"), 1);

    /* kernel only */
    f->inst.boot = (vtpm_boot){ true, "/img/vmlinuz", NULL, NULL, NULL };
    g_clear_pointer(&xml, g_free);
    g_clear_pointer(&d, doc_free);
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(text(d, "domain/os/kernel"), "/img/vmlinuz");
    assert_int_equal(count(d, "domain/os/initrd"), 0);
    assert_int_equal(count(d, "domain/os/cmdline"), 0);
}

/* Paths confined by the caller replace the ones of the request. */
static void
test_boot_params_override(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autoptr(doc) d = NULL;

    f->inst.boot = (vtpm_boot){ true, "vmlinuz", "initrd", "ro", NULL };
    f->p.kernel = "/var/lib/vtpmd/images/vmlinuz";
    f->p.initrd = "/var/lib/vtpmd/images/initrd";
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(text(d, "domain/os/kernel"), "/var/lib/vtpmd/images/vmlinuz");
    assert_string_equal(text(d, "domain/os/initrd"), "/var/lib/vtpmd/images/initrd");
    assert_string_equal(text(d, "domain/os/cmdline"), "ro");

    /* not confined: the request's relative path is refused, not pasted */
    f->p.kernel = NULL;
    f->p.initrd = NULL;
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot.kernel 'vmlinuz' is not an absolute path");
}

static void
test_boot_disk(void **state)
{
    fx *f = *state;
    g_autofree char *raw = make_file(f, "disk.raw", "\0\0\0\0hello", 9);
    g_autofree char *qcow = make_qcow2(f, "disk.qcow2", 0, 0);
    g_autofree char *missing = g_build_filename(f->dir, "missing.img", NULL);
    g_autofree char *tiny = make_file(f, "tiny", "QF", 2);
    const struct {
        const char *path, *format;
        bool via_params;
    } cases[] = {
        { raw, "raw", false },
        { qcow, "qcow2", false },
        { qcow, "qcow2", true },
        { missing, "raw", false }, /* unreadable: raw, which makes QEMU follow nothing */
        { tiny, "raw", false },
        { "/dev/null", "raw", false }, /* not a regular file */
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        print_message("case %zu\n", i);
        f->inst.boot = (vtpm_boot){ true, NULL, NULL, NULL,
                                    cases[i].via_params ? "elsewhere.img" : (char *)cases[i].path };
        f->p.disk = cases[i].via_params ? cases[i].path : NULL;
        xml = build_ok(f);
        d = doc_parse(xml);
        check_common(d, "qemu");
        assert_string_equal(attr(d, "domain/os/boot", "dev"), "hd");
        assert_int_equal(count(d, "domain/os/kernel"), 0);
        assert_int_equal(count(d, "domain/devices/disk"), 1);
        assert_string_equal(attr(d, "domain/devices/disk", "type"), "file");
        assert_string_equal(attr(d, "domain/devices/disk", "device"), "disk");
        assert_string_equal(attr(d, "domain/devices/disk/driver", "name"), "qemu");
        assert_string_equal(attr(d, "domain/devices/disk/driver", "type"), cases[i].format);
        assert_string_equal(attr(d, "domain/devices/disk/source", "file"), cases[i].path);
        assert_string_equal(attr(d, "domain/devices/disk/target", "bus"), "virtio");
        assert_string_equal(attr(d, "domain/devices/disk/target", "dev"), "vda");
    }
}

/* A probed qcow2 must not pull in host files QEMU would open for it. */
static void
test_boot_disk_qcow2_refused(void **state)
{
    fx *f = *state;
    g_autofree char *backed = make_qcow2(f, "backed.qcow2", 0x68, 0);
    g_autofree char *datafile = make_qcow2(f, "datafile.qcow2", 0, 1u << 2);
    g_autofree char *want1 =
        g_strdup_printf("boot disk '%s' is a qcow2 image with a backing file", backed);
    g_autofree char *want2 =
        g_strdup_printf("boot disk '%s' is a qcow2 image with an external data file", datafile);

    f->inst.boot = (vtpm_boot){ true, NULL, NULL, NULL, backed };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, want1);
    f->inst.boot.disk = datafile;
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, want2);
}

static void
test_boot_none(void **state)
{
    fx *f = *state;

    for (int i = 0; i < 2; i++) {
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        /* absent, and present but empty after the caller's confinement */
        f->inst.boot = (vtpm_boot){ i == 1, NULL, NULL, NULL, NULL };
        xml = build_ok(f);
        d = doc_parse(xml);
        check_common(d, "qemu");
        assert_int_equal(count(d, "domain/os/boot"), 0);
        assert_int_equal(count(d, "domain/os/kernel"), 0);
        assert_int_equal(count(d, "domain/devices/disk"), 0);
    }
}

static void
test_boot_refused(void **state)
{
    fx *f = *state;

    f->inst.boot = (vtpm_boot){ true, "/k", NULL, NULL, "/d" };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot: kernel and disk are mutually exclusive");
    f->inst.boot = (vtpm_boot){ true, NULL, "/i", NULL, NULL };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot: initrd and cmdline need a kernel");
    f->inst.boot = (vtpm_boot){ true, NULL, NULL, "quiet", "/d" };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot: initrd and cmdline need a kernel");
    f->inst.boot = (vtpm_boot){ true, NULL, NULL, NULL, "disk.img" };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot.disk 'disk.img' is not an absolute path");
    f->inst.boot = (vtpm_boot){ true, "/k", NULL, "a\nb", NULL };
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "boot.cmdline contains control character 0x0a");
}

static void
test_console(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autoptr(doc) d = NULL;

    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(attr(d, "domain/devices/serial", "type"), "pty");
    assert_string_equal(attr(d, "domain/devices/serial/target", "port"), "0");
    assert_string_equal(attr(d, "domain/devices/console", "type"), "pty");
    assert_string_equal(attr(d, "domain/devices/console/target", "type"), "serial");
    assert_int_equal(count(d, "domain/devices/serial/source"), 0);

    f->p.console_log = "/var/lib/vtpmd/console/" UUID ".log";
    g_clear_pointer(&xml, g_free);
    g_clear_pointer(&d, doc_free);
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(attr(d, "domain/devices/serial", "type"), "file");
    assert_string_equal(attr(d, "domain/devices/serial/source", "path"), f->p.console_log);
    assert_string_equal(attr(d, "domain/devices/serial/source", "append"), "on");
    assert_string_equal(attr(d, "domain/devices/serial/target", "port"), "0");
    assert_string_equal(attr(d, "domain/devices/console", "type"), "file");
    assert_string_equal(attr(d, "domain/devices/console/source", "path"), f->p.console_log);
    assert_string_equal(attr(d, "domain/devices/console/source", "append"), "on");
    assert_string_equal(attr(d, "domain/devices/console/target", "type"), "serial");
    assert_string_equal(attr(d, "domain/devices/console/target", "port"), "0");

    f->p.console_log = "console.log";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "console log 'console.log' is not an absolute path");
}

/* ---- escaping and names -------------------------------------------------- */

static void
test_escaping(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autoptr(doc) d = NULL;
    const char *evil = "a<b>&c'd\"e</title><devices/>\xc3\xa9";

    f->inst.name = (char *)evil;
    f->flavor.name = (char *)evil;
    f->image.id = (char *)"img'/><vtpmd:vtpm version='1.2";
    f->inst.boot = (vtpm_boot){ true, "/k'&<", "/i\"", "root=/dev/vda a=\"b\" <x>", NULL };
    f->p.console_log = "/log/'&\".log";
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(text(d, "domain/name"), "instance-" UUID);
    assert_int_equal(count(d, "domain/features/acpi"), 1);
    assert_string_equal(text(d, "domain/on_poweroff"), "destroy");
    assert_int_equal(count(d, "domain/title"), 1);
    assert_string_equal(text(d, "domain/title"), evil);
    assert_int_equal(count(d, "domain/title/devices"), 0);
    assert_int_equal(count(d, "domain/devices"), 1);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:flavor", "name"), evil);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:image", "id"),
                        "img'/><vtpmd:vtpm version='1.2");
    assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm"), 1);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm", "version"), "2.0");
    assert_string_equal(text(d, "domain/os/kernel"), "/k'&<");
    assert_string_equal(text(d, "domain/os/initrd"), "/i\"");
    assert_string_equal(text(d, "domain/os/cmdline"), "root=/dev/vda a=\"b\" <x>");
    assert_string_equal(attr(d, "domain/devices/serial/source", "path"), "/log/'&\".log");
    assert_null(strstr(xml, "<devices/>"));
}

static void
test_title(void **state)
{
    fx *f = *state;

    for (int i = 0; i < 2; i++) {
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        /* libvirt refuses an empty title, so none at all */
        f->inst.name = i == 0 ? NULL : (char *)"";
        xml = build_ok(f);
        d = doc_parse(xml);
        assert_int_equal(count(d, "domain/title"), 0);
    }
}

static void
test_bad_text_refused(void **state)
{
    fx *f = *state;

    f->inst.name = "two\nlines";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "instance name contains control character 0x0a");
    f->inst.name = "bell\a";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "instance name contains control character 0x07");
    f->inst.name = "bad\xff utf8";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "instance name is not valid UTF-8");
    f->inst.name = "ok";
    f->flavor.name = "tab\there";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "flavor name contains control character 0x09");
    f->flavor.name = "m1";
    f->image.id = "\x1b[31m";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "image id contains control character 0x1b");
}

static void
test_bad_instance(void **state)
{
    fx *f = *state;
    vtpm_error err = { 0 };
    char *xml = NULL;

    assert_int_equal(vtpm_domxml_build(NULL, &xml, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_null(xml);

    f->flavor.vcpus = 0;
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "flavor needs at least 1 vcpu and 1 MiB of memory");
    f->flavor.vcpus = 1;
    f->flavor.memory_mb = 0;
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "flavor needs at least 1 vcpu and 1 MiB of memory");
    f->flavor.memory_mb = 1;
    f->inst.flavor = NULL;
    expect_fault(f, VTPM_FAULT_INTERNAL, "instance has no flavor");
    f->inst.flavor = &f->flavor;
    memcpy(f->inst.uuid, "not-a-uuid", sizeof("not-a-uuid"));
    expect_fault(f, VTPM_FAULT_INTERNAL, "instance uuid 'not-a-uuid' is not a UUID");
}

static void
test_no_image_no_flavor_name(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autoptr(doc) d = NULL;

    f->inst.image = NULL;
    f->flavor.name = NULL;
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_int_equal(count(d, "domain/metadata/vtpmd:instance"), 1);
    assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:flavor"), 0);
    assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:image"), 0);
    assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm"), 1);
}

/* The schema check above is not vacuous: it refuses what libvirt would. */
static void
test_schema_check_has_teeth(void **state)
{
    fx *f = *state;
    g_autofree char *xml = build_ok(f);
    g_autofree char *report = NULL;
    g_autoptr(GString) bad = g_string_new(xml);
    int rc;

    g_string_replace(bad, "<memballoon", "<graphics type='none'/>\n    <memballoon", 1);
    rc = schema_valid(f, bad->str, &report);
    if (rc < 0)
        skip();
    assert_int_equal(rc, 0);
}

#define DIGEST "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void
test_spec_digest(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_autofree char *plain = NULL;
    g_autoptr(doc) d = NULL;
    g_autoptr(doc) d2 = NULL;
    const char *evil = "spec_digest='ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff'";

    plain = build_ok(f);
    d2 = doc_parse(plain);
    assert_null(g_hash_table_lookup(must_find(d2, "domain/metadata/vtpmd:instance")->attrs,
                                    "spec_digest"));

    /* a flavor name cannot shadow the digest for a reader that scans */
    f->flavor.name = (char *)evil;
    f->p.spec_digest = DIGEST;
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance", "spec_digest"), DIGEST);
    assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:flavor", "name"), evil);
    assert_true(g_str_has_prefix(strstr(xml, "spec_digest"), "spec_digest='" DIGEST "'"));

    f->p.spec_digest = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    expect_fault(f, VTPM_FAULT_INTERNAL, "spec digest is not 64 lower-case hex digits");
    f->p.spec_digest = "0123";
    expect_fault(f, VTPM_FAULT_INTERNAL, "spec digest is not 64 lower-case hex digits");
    f->p.spec_digest = DIGEST "'/>";
    expect_fault(f, VTPM_FAULT_INTERNAL, "spec digest is not 64 lower-case hex digits");
}

/* ---- reading the metadata back ------------------------------------------ */

static void
assert_meta_equal(const vtpm_domxml_meta *a, const vtpm_domxml_meta *b)
{
    assert_string_equal(a->spec_digest, b->spec_digest);
    assert_string_equal(a->flavor, b->flavor);
    assert_string_equal(a->image, b->image);
    assert_int_equal(a->tpm.version, b->tpm.version);
    assert_int_equal(a->tpm.model, b->tpm.model);
    assert_int_equal(a->tpm.secret_security, b->tpm.secret_security);
    assert_int_equal(a->encrypted, b->encrypted);
    assert_string_equal(a->wrapped_secret, b->wrapped_secret);
    assert_string_equal(a->identity, b->identity);
}

/* A domain XML (an archive's copy of the definition) reads as the domain
 * itself does through virDomainGetMetadata: defined in libvirt's test
 * driver, what the whole inactive XML says equals what the metadata
 * element says, and both equal what was built. */
static void
test_domain_metadata(void **state)
{
    fx *f = *state;
    g_autofree char *xml = NULL;
    g_auto(vtpm_domxml_meta) built = { 0 };
    g_auto(vtpm_domxml_meta) whole = { 0 };
    g_auto(vtpm_domxml_meta) element = { 0 };
    virConnectPtr conn = NULL;
    virDomainPtr dom = NULL;
    char *desc = NULL, *md = NULL;
    vtpm_error err = { 0 };

    f->tpm = (vtpm_device){ VTPM_VERSION_2_0, VTPM_MODEL_CRB, VTPM_SECRET_DEPLOYMENT,
                            1u << VTPM_PCR_SHA384 };
    f->p.spec_digest = DIGEST;
    f->p.secret_uuid = SECRET;
    f->p.wrapped_secret = "v1:c2VjcmV0";
    f->p.identity = "v1:aWRlbnRpdHkgcmVjb3Jk+/8=";
    xml = build_ok(f);
    assert_int_equal(vtpm_domxml_parse_domain_metadata(xml, &built, &err), 0);
    assert_string_equal(built.spec_digest, DIGEST);
    assert_string_equal(built.flavor, "m1.small");
    assert_string_equal(built.image, "0a1b2c3d-img");
    assert_int_equal(built.tpm.version, VTPM_VERSION_2_0);
    assert_int_equal(built.tpm.model, VTPM_MODEL_CRB);
    assert_int_equal(built.tpm.secret_security, VTPM_SECRET_DEPLOYMENT);
    assert_true(built.encrypted);
    assert_string_equal(built.wrapped_secret, "v1:c2VjcmV0");
    assert_string_equal(built.identity, "v1:aWRlbnRpdHkgcmVjb3Jk+/8=");

    assert_non_null(conn = virConnectOpen("test:///default"));
    assert_non_null(dom = virDomainDefineXML(conn, xml));
    assert_non_null(desc = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE |
                                                        VIR_DOMAIN_XML_SECURE));
    assert_non_null(md = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VTPM_DOMXML_NS,
                                              VIR_DOMAIN_AFFECT_CONFIG));
    assert_int_equal(vtpm_domxml_parse_domain_metadata(desc, &whole, &err), 0);
    assert_int_equal(vtpm_domxml_parse_metadata(md, &element, &err), 0);
    assert_meta_equal(&whole, &built);
    assert_meta_equal(&element, &built);
    /* libvirt keeps the banks through its own parser. */
    assert_non_null(strstr(desc, "<active_pcr_banks>"));
    assert_non_null(strstr(desc, "<sha384/>"));
    assert_int_equal(virDomainUndefine(dom), 0);
    virDomainFree(dom);
    virConnectClose(conn);
    free(desc);
    free(md);
}

/* Only /domain/metadata's element of our namespace counts: not another
 * namespace's element of the same names before it, not text that spells
 * metadata, not a metadata element elsewhere. */
static void
test_domain_metadata_scope(void **state)
{
    static const char xml[] =
        "<domain type='qemu'><name>n</name>"
        "<title>&lt;metadata&gt;&lt;vtpmd:vtpm version='1.2'/&gt;&lt;/metadata&gt;</title>"
        "<devices><metadata><vtpmd:instance xmlns:vtpmd='" VTPM_DOMXML_NS "' "
        "spec_digest='ffff'/></metadata></devices>"
        "<metadata>"
        "<x:instance xmlns:x='https://example.invalid/x' spec_digest='eeee'>"
        "<x:vtpm version='1.2' model='tpm-tis' secret_security='user'/></x:instance>"
        "<vtpmd:instance xmlns:vtpmd='" VTPM_DOMXML_NS "' spec_digest='" DIGEST "'>"
        "<vtpmd:vtpm version='2.0' model='tpm-crb' secret_security='host' encrypted='yes'/>"
        "</vtpmd:instance>"
        "<vtpmd:instance xmlns:vtpmd='" VTPM_DOMXML_NS "' spec_digest='dddd'/>"
        "</metadata></domain>";
    g_auto(vtpm_domxml_meta) m = { 0 };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_domxml_parse_domain_metadata(xml, &m, &err), 0);
    assert_string_equal(m.spec_digest, DIGEST);
    assert_int_equal(m.tpm.version, VTPM_VERSION_2_0);
    assert_int_equal(m.tpm.model, VTPM_MODEL_CRB);
    assert_int_equal(m.tpm.secret_security, VTPM_SECRET_HOST);
    assert_true(m.encrypted);
    assert_null(m.flavor);
}

/* No metadata: nothing known (version NONE), not a fault; a broken XML is
 * Internal and leaves the output alone. */
static void
test_domain_metadata_none(void **state)
{
    vtpm_domxml_meta m = { .spec_digest = (char *)"sentinel" };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_domxml_parse_domain_metadata("<domain><metadata>", &m, &err),
                     -(int)VTPM_FAULT_INTERNAL);
    assert_int_equal(err.code, VTPM_FAULT_INTERNAL);
    assert_true(g_str_has_prefix(err.message, "domain metadata: "));
    assert_string_equal(m.spec_digest, "sentinel");

    assert_int_equal(vtpm_domxml_parse_domain_metadata("<domain type='kvm'><name>n</name>"
                                                       "<metadata/></domain>",
                                                       &m, &err),
                     0);
    assert_null(m.spec_digest);
    assert_int_equal(m.tpm.version, VTPM_VERSION_NONE);
}

/* ---- UEFI, Secure Boot, the machine type ----------------------------------- */

#define NVRAM "/var/lib/libvirt/swtpm/" UUID "/nvram.fd"
#define LOADER "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd"
#define TEMPLATE "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
#define FWMETA "domain/metadata/vtpmd:instance/vtpmd:firmware"

static vtpm_firmware
firmware(vtpm_firmware_type type, bool secure_boot, const char *machine)
{
    vtpm_firmware fw = { .type = type, .secure_boot = secure_boot,
                         .policy = secure_boot ? VTPM_SECURE_BOOT_REQUIRED
                                               : VTPM_SECURE_BOOT_DISABLED };

    g_strlcpy(fw.machine, machine, sizeof(fw.machine));
    return fw;
}

/* A feature of <os><firmware> by name: "yes" / "no", NULL when absent. */
static const char *
feature(const doc *d, const char *name)
{
    for (guint i = 0; i < d->nodes->len; i++) {
        const node *n = g_ptr_array_index(d->nodes, i);

        if (strcmp(n->path, "domain/os/firmware/feature") == 0 &&
            g_strcmp0(g_hash_table_lookup(n->attrs, "name"), name) == 0)
            return g_hash_table_lookup(n->attrs, "enabled");
    }
    return NULL;
}

/* UEFI by libvirt's auto-selection, with and without Secure Boot, with
 * and without a variable store path, for every boot. */
static void
test_uefi_auto(void **state)
{
    fx *f = *state;

    for (int sb = 0; sb < 2; sb++) {
        for (int b = 0; b < 2; b++) {
            vtpm_firmware fw = firmware(VTPM_FIRMWARE_UEFI, sb, "q35");
            g_autofree char *xml = NULL;
            g_autoptr(doc) d = NULL;

            f->p.firmware = &fw;
            f->p.nvram = b ? NVRAM : NULL;
            f->inst.boot = (vtpm_boot){ b, b ? "/k" : NULL, b ? "/i" : NULL, NULL, NULL };
            xml = build_ok(f);
            d = doc_parse(xml);
            check_common(d, "qemu");
            assert_string_equal(attr(d, "domain/os", "firmware"), "efi");
            assert_string_equal(feature(d, "secure-boot"), sb ? "yes" : "no");
            assert_string_equal(feature(d, "enrolled-keys"), sb ? "yes" : "no");
            assert_int_equal(count(d, "domain/os/loader"), 0);
            assert_int_equal(count(d, "domain/os/nvram"), b);
            if (b) {
                assert_string_equal(text(d, "domain/os/nvram"), NVRAM);
                assert_string_equal(text(d, "domain/os/kernel"), "/k");
            }
            /* SMM guards the variable store where Secure Boot is on. */
            assert_int_equal(count(d, "domain/features/smm"), sb);
            if (sb)
                assert_string_equal(attr(d, "domain/features/smm", "state"), "on");
            assert_string_equal(attr(d, FWMETA, "type"), "uefi");
            assert_string_equal(attr(d, FWMETA, "secure_boot"), sb ? "yes" : "no");
            assert_string_equal(attr(d, FWMETA, "machine"), "q35");
        }
    }
}

/* [libvirt] uefi_loader / uefi_nvram_template: Secure Boot guests get the
 * pinned pair as libvirt writes a selected one; guests without Secure
 * Boot keep the auto-selection (the pinned store has enrolled keys). */
static void
test_uefi_pinned(void **state)
{
    fx *f = *state;
    vtpm_firmware sb = firmware(VTPM_FIRMWARE_UEFI, true, "pc-q35-7.2");
    vtpm_firmware plain = firmware(VTPM_FIRMWARE_UEFI, false, "q35");
    g_autofree char *xml = NULL, *xml2 = NULL, *xml3 = NULL;
    g_autoptr(doc) d = NULL;
    g_autoptr(doc) d2 = NULL;
    g_autoptr(doc) d3 = NULL;

    f->p.uefi_loader = LOADER;
    f->p.uefi_nvram_template = TEMPLATE;
    f->p.firmware = &sb;
    f->p.nvram = NVRAM;
    xml = build_ok(f);
    d = doc_parse(xml);
    assert_null(g_hash_table_lookup(must_find(d, "domain/os")->attrs, "firmware"));
    assert_int_equal(count(d, "domain/os/firmware"), 0);
    assert_string_equal(attr(d, "domain/os/type", "machine"), "pc-q35-7.2");
    assert_string_equal(text(d, "domain/os/loader"), LOADER);
    assert_string_equal(attr(d, "domain/os/loader", "type"), "pflash");
    assert_string_equal(attr(d, "domain/os/loader", "readonly"), "yes");
    assert_string_equal(attr(d, "domain/os/loader", "secure"), "yes");
    assert_string_equal(text(d, "domain/os/nvram"), NVRAM);
    assert_string_equal(attr(d, "domain/os/nvram", "template"), TEMPLATE);
    assert_string_equal(attr(d, "domain/features/smm", "state"), "on");
    assert_string_equal(attr(d, FWMETA, "secure_boot"), "yes");

    /* No path: libvirt's default store, from the template. */
    f->p.nvram = NULL;
    xml2 = build_ok(f);
    d2 = doc_parse(xml2);
    assert_string_equal(attr(d2, "domain/os/nvram", "template"), TEMPLATE);
    assert_string_equal(text(d2, "domain/os/nvram"), "");

    f->p.firmware = &plain;
    f->p.nvram = NVRAM;
    xml3 = build_ok(f);
    d3 = doc_parse(xml3);
    assert_string_equal(attr(d3, "domain/os", "firmware"), "efi");
    assert_int_equal(count(d3, "domain/os/loader"), 0);
    assert_string_equal(feature(d3, "secure-boot"), "no");
    assert_int_equal(count(d3, "domain/features/smm"), 0);
}

/* BIOS: no firmware element, no metadata for it; the machine type is the
 * image's. */
static void
test_machine_type(void **state)
{
    static const char *const machines[] = { "q35", "pc", "pc-i440fx-7.2", "pc-q35-2.11" };
    fx *f = *state;

    for (size_t i = 0; i < G_N_ELEMENTS(machines); i++) {
        vtpm_firmware fw = firmware(VTPM_FIRMWARE_BIOS, false, machines[i]);
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        f->p.firmware = &fw;
        xml = build_ok(f);
        d = doc_parse(xml);
        assert_string_equal(attr(d, "domain/os/type", "machine"), machines[i]);
        assert_null(g_hash_table_lookup(must_find(d, "domain/os")->attrs, "firmware"));
        assert_int_equal(count(d, "domain/os/loader"), 0);
        assert_int_equal(count(d, "domain/os/nvram"), 0);
        assert_int_equal(count(d, "domain/features/smm"), 0);
        assert_int_equal(count(d, FWMETA), 0);
    }
    /* UEFI on i440fx, without Secure Boot, is a valid domain. */
    {
        vtpm_firmware fw = firmware(VTPM_FIRMWARE_UEFI, false, "pc");
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;

        f->p.firmware = &fw;
        xml = build_ok(f);
        d = doc_parse(xml);
        assert_string_equal(attr(d, "domain/os", "firmware"), "efi");
        assert_string_equal(attr(d, FWMETA, "machine"), "pc");
    }
}

/* What the policy refuses never reaches here; should it, it is a bug
 * (Internal), and bad paths are BadRequest as any other. */
static void
test_uefi_refused(void **state)
{
    fx *f = *state;
    vtpm_firmware bios_sb = firmware(VTPM_FIRMWARE_BIOS, true, "q35");
    vtpm_firmware pc_sb = firmware(VTPM_FIRMWARE_UEFI, true, "pc");
    vtpm_firmware sb = firmware(VTPM_FIRMWARE_UEFI, true, "q35");
    vtpm_firmware quote = firmware(VTPM_FIRMWARE_UEFI, false, "q35'/>");
    vtpm_firmware empty = firmware(VTPM_FIRMWARE_UEFI, false, "");

    f->p.firmware = &bios_sb;
    expect_fault(f, VTPM_FAULT_INTERNAL, "domxml: Secure Boot on bios firmware, machine q35");
    f->p.firmware = &pc_sb;
    expect_fault(f, VTPM_FAULT_INTERNAL, "domxml: Secure Boot on uefi firmware, machine pc");
    f->p.firmware = &empty;
    expect_fault(f, VTPM_FAULT_INTERNAL, "domxml: bad firmware");
    f->p.firmware = &sb;
    f->p.nvram = "nvram.fd";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST, "UEFI variable store 'nvram.fd' is not an absolute path");
    f->p.nvram = NVRAM;
    f->p.uefi_loader = LOADER;
    expect_fault(f, VTPM_FAULT_INTERNAL,
                 "domxml: a UEFI loader without a template, or the reverse");
    f->p.uefi_nvram_template = "OVMF_VARS.fd";
    expect_fault(f, VTPM_FAULT_BAD_REQUEST,
                 "[libvirt] uefi_nvram_template 'OVMF_VARS.fd' is not an absolute path");
    /* Escaped like every value: a quote cannot end the attribute. */
    f->p.uefi_loader = NULL;
    f->p.uefi_nvram_template = NULL;
    f->p.firmware = &quote;
    {
        g_autofree char *xml = NULL;
        vtpm_error err = { 0 };
        g_autoptr(doc) d = NULL;

        assert_int_equal(vtpm_domxml_build(&f->p, &xml, &err), 0);
        d = doc_parse(xml);
        assert_string_equal(attr(d, "domain/os/type", "machine"), "q35'/>");
    }
}

/* The firmware recorded reads back, from the element and from the whole
 * definition as libvirt keeps it; values it does not know are refused. */
static void
test_domain_metadata_firmware(void **state)
{
    fx *f = *state;
    vtpm_firmware fw = firmware(VTPM_FIRMWARE_UEFI, true, "pc-q35-7.2");
    g_autofree char *xml = NULL;
    g_auto(vtpm_domxml_meta) built = { 0 };
    g_auto(vtpm_domxml_meta) whole = { 0 };
    g_auto(vtpm_domxml_meta) bios = { 0 };
    virConnectPtr conn = NULL;
    virDomainPtr dom = NULL;
    char *desc = NULL;
    vtpm_error err = { 0 };

    f->p.firmware = &fw;
    f->p.nvram = NVRAM;
    xml = build_ok(f);
    assert_int_equal(vtpm_domxml_parse_domain_metadata(xml, &built, &err), 0);
    assert_int_equal(built.firmware.type, VTPM_FIRMWARE_UEFI);
    assert_true(built.firmware.secure_boot);
    assert_string_equal(built.firmware.machine, "pc-q35-7.2");
    assert_non_null(conn = virConnectOpen("test:///default"));
    assert_non_null(dom = virDomainDefineXML(conn, xml));
    assert_non_null(desc = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE));
    assert_int_equal(vtpm_domxml_parse_domain_metadata(desc, &whole, &err), 0);
    assert_int_equal(whole.firmware.type, VTPM_FIRMWARE_UEFI);
    assert_true(whole.firmware.secure_boot);
    assert_string_equal(whole.firmware.machine, "pc-q35-7.2");
    assert_true(vtpm_firmware_same_store(&whole.firmware, &fw));
    assert_int_equal(virDomainUndefine(dom), 0);
    virDomainFree(dom);
    virConnectClose(conn);
    free(desc);

    /* Nothing recorded: BIOS. */
    assert_int_equal(vtpm_domxml_parse_metadata("<vtpmd:instance xmlns:vtpmd='" VTPM_DOMXML_NS
                                                "'/>", &bios, &err), 0);
    assert_int_equal(bios.firmware.type, VTPM_FIRMWARE_BIOS);
    {
        static const char *const bad[] = {
            "<i><firmware type='efi' secure_boot='no' machine='q35'/></i>",
            "<i><firmware type='uefi' secure_boot='maybe' machine='q35'/></i>",
            "<i><firmware type='uefi' secure_boot='no'/></i>",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
            vtpm_domxml_meta m = { .spec_digest = (char *)"sentinel" };

            assert_int_equal(vtpm_domxml_parse_metadata(bad[i], &m, &err),
                             -(int)VTPM_FAULT_INTERNAL);
            assert_string_equal(err.message, "domain metadata: unknown vTPM or firmware values");
            assert_string_equal(m.spec_digest, "sentinel");
        }
    }
}

static void
test_domain_name(void **state)
{
    g_autofree char *n = vtpm_domxml_domain_name(UUID);

    assert_string_equal(n, "instance-" UUID);
    assert_null(vtpm_domxml_domain_name(NULL));
}

/* ---- hostile values through the public entry points ----------------------
 * (docs/security.md, "Security review"): a request body as the worker
 * receives it, decoded by vtpm_proto_decode_request and
 * vtpm_proto_arg_instance, then built by vtpm_domxml_build.  A UUID never
 * gets past the decoder unless canonical (it names paths, the domain and
 * the libvirt secret); every other string is either refused with a
 * specific fault or comes out of the XML exactly as sent. */

static void
pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* A spawn request whose instance has @uuid (@ulen bytes), @name
 * (@name_len bytes: both may hold NULs), flavor name @fname, image id @iid
 * and boot kernel @kernel. */
static int
decode_spawn(const char *uuid, size_t ulen, const char *name, size_t name_len,
             const char *fname, const char *iid, const char *kernel, vtpm_instance **out,
             vtpm_error *err)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    vtpm_proto_limits lim;
    g_autoptr(GBytes) body = NULL;
    g_autoptr(vtpm_request) req = NULL;
    g_autofree char *id = NULL;
    gsize len;
    const void *data;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    vtpm_pack_str(&pk, "instance");
    msgpack_pack_map(&pk, 5);
    vtpm_pack_str(&pk, "uuid");
    pack_strn(&pk, uuid, ulen);
    vtpm_pack_str(&pk, "name");
    pack_strn(&pk, name, name_len);
    vtpm_pack_str(&pk, "flavor");
    msgpack_pack_map(&pk, 3);
    vtpm_pack_kv_str(&pk, "name", fname);
    vtpm_pack_str(&pk, "vcpus");
    msgpack_pack_uint64(&pk, 1);
    vtpm_pack_str(&pk, "memory_mb");
    msgpack_pack_uint64(&pk, 64);
    vtpm_pack_str(&pk, "image");
    msgpack_pack_map(&pk, 1);
    vtpm_pack_kv_str(&pk, "id", iid);
    vtpm_pack_str(&pk, "boot");
    msgpack_pack_map(&pk, 1);
    vtpm_pack_kv_str(&pk, "kernel", kernel);
    body = vtpm_proto_request_new("spawn", sb.data, sb.size, "req-hostile", 0);
    msgpack_sbuffer_destroy(&sb);

    vtpm_proto_limits_init(&lim);
    data = g_bytes_get_data(body, &len);
    if ((rc = vtpm_proto_decode_request(data, len, &lim, &req, &id, err)) < 0)
        return rc;
    return vtpm_proto_arg_instance(req, out, err);
}

static void
test_hostile_uuids(void **state)
{
    static const char nul_uuid[36] = "6f1c2a4e-0b7d-4c1e-9a55-3d2e8f0a1b2\0";
    g_autofree char *long_uuid = g_strnfill(5000, 'a');
    const struct {
        const char *u;
        size_t len;
    } bad[] = {
        { "../../../../etc/passwd", 0 },
        { UUID "/../../x", 0 },
        { "6f1c2a4e-0b7d-4c1e-9a55-3d2e8f0a1b2c'", 0 },
        { "6f1c2a4e-0b7d-4c1e-9a55-3d2e8f0a1b'c", 0 },
        { "6f1c2a4e-0b7d-4c1e-9a55-<2e8f0a1b2c", 0 },
        { "6f1c2a4e-0b7d-4c1e-9a55-&amp;f0a1b2c", 0 },
        { "6f1c2a4e/0b7d/4c1e/9a55/3d2e8f0a1b2c", 0 },
        { "..%2f..%2f..%2f..%2f..%2f..%2fetc", 0 },
        { nul_uuid, sizeof(nul_uuid) },
        { long_uuid, 5000 },
        { "", 0 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        vtpm_instance *inst = NULL;
        vtpm_error err = { 0 };
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].u);

        assert_int_equal(decode_spawn(bad[i].u, len, "n", 1, "m1", "img", "/k", &inst, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        if (!g_str_has_prefix(err.message, "args.instance.uuid"))
            fail_msg("uuid #%zu: fault does not name args.instance.uuid: %s", i, err.message);
        assert_null(inst);
    }
}

static void
test_hostile_names(void **state)
{
    fx *f = *state;
    g_autofree char *longest = g_strnfill(255, '<');
    g_autofree char *too_long = g_strnfill(256, 'n');
    static const char *const kept[] = {
        "../../../../etc/passwd",
        "a'b\"c<d>&e;&amp;",
        "</title><devices><hostdev mode='subsystem'/></devices><title>",
        "x' ephemeral='no",
        "]]><!-- <![CDATA[",
        "%s%n%x",
        "\xe2\x80\xae\xf0\x9f\x94\x91", /* RLO, an emoji: valid UTF-8 is kept */
    };

    for (size_t i = 0; i <= G_N_ELEMENTS(kept); i++) {
        const char *v = i < G_N_ELEMENTS(kept) ? kept[i] : longest;
        g_autoptr(vtpm_instance) inst = NULL;
        g_autofree char *xml = NULL;
        g_autoptr(doc) d = NULL;
        vtpm_error err = { 0 };

        if (decode_spawn(UUID, 36, v, strlen(v), v, v, "/images/k", &inst, &err) < 0)
            fail_msg("'%s' refused by the decoder: %s", v, err.message);
        f->p.inst = inst;
        xml = build_ok(f);
        d = doc_parse(xml);
        assert_string_equal(text(d, "domain/name"), "instance-" UUID);
        assert_string_equal(text(d, "domain/uuid"), UUID);
        assert_string_equal(text(d, "domain/title"), v);
        assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:flavor", "name"), v);
        assert_string_equal(attr(d, "domain/metadata/vtpmd:instance/vtpmd:image", "id"), v);
        assert_int_equal(count(d, "domain/devices"), 1);
        assert_int_equal(count(d, "domain/title"), 1);
        assert_int_equal(count(d, "domain/devices/hostdev"), 0);
        assert_int_equal(count(d, "domain/metadata/vtpmd:instance/vtpmd:vtpm"), 1);
        f->p.inst = &f->inst;
    }

    /* Refused by the decoder: too long, or an embedded NUL (C would cut
     * the name short, so a name that is not what was sent). */
    {
        vtpm_instance *inst = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(decode_spawn(UUID, 36, too_long, 256, "m1", "img", "/k", &inst, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        assert_non_null(strstr(err.message, "args.instance.name"));
        assert_int_equal(decode_spawn(UUID, 36, "a\0b", 3, "m1", "img", "/k", &inst, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        assert_non_null(strstr(err.message, "args.instance.name"));
        assert_null(inst);
    }
    /* Refused by the builder: what escaping cannot carry intact. */
    {
        static const struct {
            const char *v, *why;
        } refused[] = {
            { "two\nlines", "instance name contains control character 0x0a" },
            { "\x1b]0;pwned\x07", "instance name contains control character 0x1b" },
            { "bad\xc0\xafutf8", "instance name is not valid UTF-8" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(refused); i++) {
            g_autoptr(vtpm_instance) inst = NULL;
            vtpm_error err = { 0 };

            if (decode_spawn(UUID, 36, refused[i].v, strlen(refused[i].v), "m1", "img", "/k",
                             &inst, &err) < 0) {
                /* The decoder may refuse it first: also fine, if it says so. */
                assert_non_null(strstr(err.message, "args.instance.name"));
                continue;
            }
            f->p.inst = inst;
            expect_fault(f, VTPM_FAULT_BAD_REQUEST, refused[i].why);
            f->p.inst = &f->inst;
        }
    }
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    g_autofree char *validator = g_find_program_in_path("virt-xml-validate");
    const struct CMUnitTest tests[] = {
        T(test_tpm_matrix),
        T(test_no_tpm),
        T(test_crb_1_2_refused),
        T(test_bad_tpm_inputs),
        T(test_pcr_banks),
        T(test_virt_type),
        T(test_boot_kernel),
        T(test_boot_params_override),
        T(test_boot_disk),
        T(test_boot_disk_qcow2_refused),
        T(test_boot_none),
        T(test_boot_refused),
        T(test_console),
        T(test_escaping),
        T(test_title),
        T(test_bad_text_refused),
        T(test_bad_instance),
        T(test_no_image_no_flavor_name),
        T(test_schema_check_has_teeth),
        T(test_spec_digest),
        T(test_hostile_names),
        T(test_domain_metadata),
        T(test_uefi_auto),
        T(test_uefi_pinned),
        T(test_machine_type),
        T(test_uefi_refused),
        T(test_domain_metadata_firmware),
        cmocka_unit_test(test_domain_metadata_scope),
        cmocka_unit_test(test_domain_metadata_none),
        cmocka_unit_test(test_hostile_uuids),
        cmocka_unit_test(test_domain_name),
    };

    if (!validator)
        print_message("virt-xml-validate not found: schema checks skipped\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
