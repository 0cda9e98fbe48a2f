/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/firmware.c: Nova's firmware rules (every key, value and source,
 * the conflicts), the optional Secure Boot decision, the traits an
 * instance needs, and what a host offers: the <os> of domain capabilities
 * (fixtures captured from libvirt 9.0 with Debian's ovmf, without its
 * descriptors, and without OVMF at all), QEMU's firmware descriptors (in
 * temporary directories) and the reasons a trait is missing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "firmware.h"
#include "lib/resolve_case.h"

#define MAX_KV 10

typedef struct {
    const char *name;
    const char *flavor[MAX_KV]; /* key, value, ..., NULL */
    const char *image[MAX_KV];
    vtpm_fault fault;           /* VTPM_FAULT_NONE: success expected */
    vtpm_firmware_type type;
    vtpm_secure_boot policy;
    const char *machine;
    const char *msg[4];         /* substrings the fault message must hold */
} fw_case;

static void
run_case(const fw_case *c)
{
    g_autoptr(GHashTable) f = resolve_case_table(c->flavor);
    g_autoptr(GHashTable) i = resolve_case_table(c->image);
    vtpm_firmware fw, sentinel;
    vtpm_error err;
    int rc;

    memset(&sentinel, 0x5a, sizeof(sentinel));
    fw = sentinel;
    vtpm_error_clear(&err);
    rc = vtpm_firmware_resolve(f, i, &fw, &err);
    if (c->fault == VTPM_FAULT_NONE) {
        if (rc != 0)
            fail_msg("%s: expected success, got %s: %s", c->name, vtpm_fault_name(err.code),
                     err.message);
        if (fw.type != c->type || fw.policy != c->policy ||
            strcmp(fw.machine, c->machine ? c->machine : "q35") != 0)
            fail_msg("%s: got %s / %s / %s, expected %s / %s / %s", c->name,
                     vtpm_firmware_type_str(fw.type), vtpm_secure_boot_str(fw.policy), fw.machine,
                     vtpm_firmware_type_str(c->type), vtpm_secure_boot_str(c->policy),
                     c->machine ? c->machine : "q35");
        if (fw.secure_boot != (c->policy == VTPM_SECURE_BOOT_REQUIRED))
            fail_msg("%s: secure_boot %d before the host decides", c->name, fw.secure_boot);
        return;
    }
    resolve_case_fault(c->name, c->fault, rc, &err, &fw, &sentinel, sizeof(fw), c->msg,
                       G_N_ELEMENTS(c->msg));
}

static void
run_cases(const fw_case *cases, size_t n)
{
    for (size_t k = 0; k < n; k++)
        run_case(&cases[k]);
}

#define OK VTPM_FAULT_NONE
#define CONFLICT VTPM_FAULT_FLAVOR_IMAGE_CONFLICT
#define BAD VTPM_FAULT_BAD_REQUEST
#define BIOS VTPM_FIRMWARE_BIOS
#define UEFI VTPM_FIRMWARE_UEFI
#define SB_OFF VTPM_SECURE_BOOT_DISABLED
#define SB_REQ VTPM_SECURE_BOOT_REQUIRED
#define SB_OPT VTPM_SECURE_BOOT_OPTIONAL
#define FLV "flavor extra spec"
#define IMG "image property"
#define FW_UEFI "hw_firmware_type", "uefi"

/* nova/tests/unit/virt/test_hardware.py SecureBootPolicyTest, with UEFI
 * firmware so that a required policy is valid. */
static void
test_nova_secure_boot_constraint(void **state)
{
    static const fw_case cases[] = {
        { "nova: no configuration", { NULL }, { FW_UEFI, NULL }, OK, UEFI, SB_OFF },
        { "nova: flavor-only", { "os:secure_boot", "required", NULL }, { FW_UEFI, NULL }, OK,
          UEFI, SB_REQ },
        { "nova: image-only", { NULL }, { FW_UEFI, "os_secure_boot", "optional", NULL }, OK, UEFI,
          SB_OPT },
        { "nova: identical image and flavor", { "os:secure_boot", "required", NULL },
          { FW_UEFI, "os_secure_boot", "required", NULL }, OK, UEFI, SB_REQ },
        { "nova: mismatched image and flavor", { "os:secure_boot", "required", NULL },
          { FW_UEFI, "os_secure_boot", "disabled", NULL }, CONFLICT, 0, 0, NULL,
          { FLV " os:secure_boot=required", IMG " os_secure_boot=disabled" } },
        { "nova: invalid value", { "os:secure_boot", "foobar", NULL }, { FW_UEFI, NULL }, BAD, 0,
          0, NULL, { FLV " os:secure_boot=foobar", "required, disabled, optional" } },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

/* Every value of every key from every source it may come from. */
static void
test_values(void **state)
{
    static const fw_case cases[] = {
        { "nothing: BIOS, q35", { NULL }, { NULL }, OK, BIOS, SB_OFF },
        { "hw_firmware_type=bios", { NULL }, { "hw_firmware_type", "bios", NULL }, OK, BIOS,
          SB_OFF },
        { "hw_firmware_type=uefi", { NULL }, { FW_UEFI, NULL }, OK, UEFI, SB_OFF },
        { "hw_firmware_type is case-sensitive (an enum in Nova)", { NULL },
          { "hw_firmware_type", "UEFI", NULL }, BAD, 0, 0, NULL,
          { IMG " hw_firmware_type=UEFI", "uefi, bios" } },
        { "hw_firmware_type empty", { NULL }, { "hw_firmware_type", "", NULL }, BAD, 0, 0, NULL,
          { IMG " hw_firmware_type=:", "uefi, bios" } },
        { "hw_firmware_type=efi (libvirt's word, not Nova's)", { NULL },
          { "hw_firmware_type", "efi", NULL }, BAD, 0, 0, NULL, { IMG " hw_firmware_type=efi" } },
        /* Image only, as in Nova: a flavor key of that name is not read. */
        { "hw:firmware_type in the flavor is not a key", { "hw:firmware_type", "uefi", NULL },
          { NULL }, OK, BIOS, SB_OFF },
        { "os:secure_boot=disabled", { "os:secure_boot", "disabled", NULL }, { FW_UEFI, NULL },
          OK, UEFI, SB_OFF },
        { "os:secure_boot=optional (flavor)", { "os:secure_boot", "optional", NULL },
          { FW_UEFI, NULL }, OK, UEFI, SB_OPT },
        { "os_secure_boot=required (image)", { NULL },
          { FW_UEFI, "os_secure_boot", "required", NULL }, OK, UEFI, SB_REQ },
        { "os_secure_boot=disabled (image)", { NULL },
          { FW_UEFI, "os_secure_boot", "disabled", NULL }, OK, UEFI, SB_OFF },
        { "os_secure_boot=Required", { NULL }, { FW_UEFI, "os_secure_boot", "Required", NULL },
          BAD, 0, 0, NULL, { IMG " os_secure_boot=Required", "required, disabled, optional" } },
        { "os_secure_boot empty: Nova returns it and refuses it", { NULL },
          { FW_UEFI, "os_secure_boot", "", NULL }, BAD, 0, 0, NULL, { IMG " os_secure_boot=:" } },
        { "os:secure_boot empty falls through to nothing", { "os:secure_boot", "", NULL },
          { FW_UEFI, NULL }, OK, UEFI, SB_OFF },
        { "os:secure_boot empty falls through to the image", { "os:secure_boot", "", NULL },
          { FW_UEFI, "os_secure_boot", "required", NULL }, OK, UEFI, SB_REQ },
        { "optional with BIOS: simply off", { NULL }, { "os_secure_boot", "optional", NULL }, OK,
          BIOS, SB_OPT },
        { "disabled with BIOS", { "os:secure_boot", "disabled", NULL }, { NULL }, OK, BIOS,
          SB_OFF },
        { "hw_machine_type=q35", { NULL }, { "hw_machine_type", "q35", NULL }, OK, BIOS, SB_OFF,
          "q35" },
        { "hw_machine_type=pc", { NULL }, { "hw_machine_type", "pc", NULL }, OK, BIOS, SB_OFF,
          "pc" },
        { "hw_machine_type=pc-q35-7.2", { NULL }, { FW_UEFI, "hw_machine_type", "pc-q35-7.2", NULL },
          OK, UEFI, SB_OFF, "pc-q35-7.2" },
        { "hw_machine_type=pc-i440fx-7.2", { NULL }, { "hw_machine_type", "pc-i440fx-7.2", NULL },
          OK, BIOS, SB_OFF, "pc-i440fx-7.2" },
        { "hw_machine_type=virt (not x86)", { NULL }, { "hw_machine_type", "virt", NULL }, BAD, 0,
          0, NULL, { IMG " hw_machine_type=virt", "q35, pc" } },
        { "hw_machine_type=microvm", { NULL }, { "hw_machine_type", "microvm", NULL }, BAD, 0, 0,
          NULL, { IMG " hw_machine_type=microvm" } },
        { "hw_machine_type=pc-q35- (no version)", { NULL }, { "hw_machine_type", "pc-q35-", NULL },
          BAD, 0, 0, NULL, { IMG " hw_machine_type=pc-q35-" } },
        { "hw_machine_type=pc-q35-7.2' (a quote)", { NULL },
          { "hw_machine_type", "pc-q35-7.2'", NULL }, BAD, 0, 0, NULL, { "hw_machine_type" } },
        { "hw_machine_type empty", { NULL }, { "hw_machine_type", "", NULL }, BAD, 0, 0, NULL,
          { IMG " hw_machine_type=:" } },
        { "hw:machine_type in the flavor is not a key", { "hw:machine_type", "pc", NULL },
          { NULL }, OK, BIOS, SB_OFF, "q35" },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

/* Secure Boot needs UEFI and q35; a flavor/image disagreement is a
 * conflict whatever else is wrong. */
static void
test_secure_boot_needs(void **state)
{
    static const fw_case cases[] = {
        { "required without a firmware type (BIOS)", { "os:secure_boot", "required", NULL },
          { NULL }, BAD, 0, 0, NULL,
          { FLV " os:secure_boot=required", "needs UEFI", IMG " hw_firmware_type is not set" } },
        { "required with BIOS", { NULL },
          { "hw_firmware_type", "bios", "os_secure_boot", "required", NULL }, BAD, 0, 0, NULL,
          { IMG " os_secure_boot=required", "needs UEFI", IMG " hw_firmware_type=bios" } },
        { "required with pc", { "os:secure_boot", "required", NULL },
          { FW_UEFI, "hw_machine_type", "pc", NULL }, BAD, 0, 0, NULL,
          { FLV " os:secure_boot=required", "q35", IMG " hw_machine_type=pc" } },
        { "required with pc-i440fx", { NULL },
          { FW_UEFI, "hw_machine_type", "pc-i440fx-7.2", "os_secure_boot", "required", NULL }, BAD,
          0, 0, NULL, { "q35", IMG " hw_machine_type=pc-i440fx-7.2" } },
        { "required with pc-q35-7.2", { NULL },
          { FW_UEFI, "hw_machine_type", "pc-q35-7.2", "os_secure_boot", "required", NULL }, OK,
          UEFI, SB_REQ, "pc-q35-7.2" },
        { "conflict before validity", { "os:secure_boot", "bogus", NULL },
          { FW_UEFI, "os_secure_boot", "required", NULL }, CONFLICT, 0, 0, NULL,
          { FLV " os:secure_boot=bogus", IMG " os_secure_boot=required" } },
        { "conflict optional / disabled", { "os:secure_boot", "optional", NULL },
          { FW_UEFI, "os_secure_boot", "disabled", NULL }, CONFLICT, 0, 0, NULL,
          { FLV " os:secure_boot=optional", IMG " os_secure_boot=disabled" } },
        { "a bad firmware type first", { "os:secure_boot", "required", NULL },
          { "hw_firmware_type", "coreboot", NULL }, BAD, 0, 0, NULL,
          { IMG " hw_firmware_type=coreboot" } },
    };

    run_cases(cases, G_N_ELEMENTS(cases));
}

static vtpm_firmware
fw_of(vtpm_firmware_type t, vtpm_secure_boot p, const char *machine)
{
    vtpm_firmware fw = { .type = t, .policy = p, .secure_boot = p == SB_REQ };

    g_strlcpy(fw.machine, machine, sizeof(fw.machine));
    return fw;
}

static void
test_decide_and_traits(void **state)
{
    vtpm_firmware fw;
    const char *traits[2];

    /* optional: on where the host offers it, for UEFI q35 guests only */
    fw = fw_of(UEFI, SB_OPT, "q35");
    vtpm_firmware_decide(&fw, true);
    assert_true(fw.secure_boot);
    fw = fw_of(UEFI, SB_OPT, "q35");
    vtpm_firmware_decide(&fw, false);
    assert_false(fw.secure_boot);
    fw = fw_of(UEFI, SB_OPT, "pc");
    vtpm_firmware_decide(&fw, true);
    assert_false(fw.secure_boot);
    fw = fw_of(BIOS, SB_OPT, "q35");
    vtpm_firmware_decide(&fw, true);
    assert_false(fw.secure_boot);
    /* required and disabled do not depend on the host */
    fw = fw_of(UEFI, SB_REQ, "q35");
    vtpm_firmware_decide(&fw, false);
    assert_true(fw.secure_boot);
    fw = fw_of(UEFI, SB_OFF, "q35");
    vtpm_firmware_decide(&fw, true);
    assert_false(fw.secure_boot);

    fw = fw_of(BIOS, SB_OFF, "q35");
    assert_int_equal(vtpm_firmware_required_traits(&fw, traits), 0);
    fw = fw_of(UEFI, SB_OFF, "q35");
    assert_int_equal(vtpm_firmware_required_traits(&fw, traits), 1);
    assert_string_equal(traits[0], "COMPUTE_FIRMWARE_UEFI");
    fw = fw_of(UEFI, SB_REQ, "q35");
    assert_int_equal(vtpm_firmware_required_traits(&fw, traits), 2);
    assert_string_equal(traits[0], "COMPUTE_FIRMWARE_UEFI");
    assert_string_equal(traits[1], "COMPUTE_SECURITY_UEFI_SECURE_BOOT");
}

/* A store made for one firmware serves another only when both are UEFI
 * and agree on Secure Boot (its keys); the machine type does not matter. */
static void
test_same_store(void **state)
{
    vtpm_firmware a = fw_of(UEFI, SB_REQ, "q35"), b = fw_of(UEFI, SB_REQ, "pc-q35-7.2");
    vtpm_firmware off = fw_of(UEFI, SB_OFF, "q35"), bios = fw_of(BIOS, SB_OFF, "q35");
    vtpm_firmware opt_on = fw_of(UEFI, SB_OPT, "q35");

    opt_on.secure_boot = true;
    assert_true(vtpm_firmware_same_store(&a, &b));
    assert_true(vtpm_firmware_same_store(&a, &opt_on));
    assert_false(vtpm_firmware_same_store(&a, &off));
    assert_true(vtpm_firmware_same_store(&off, &off));
    assert_false(vtpm_firmware_same_store(&bios, &bios));
    assert_false(vtpm_firmware_same_store(&off, &bios));
    assert_false(vtpm_firmware_same_store(&a, NULL));
}

static void
test_names(void **state)
{
    assert_string_equal(vtpm_firmware_type_str(BIOS), "bios");
    assert_string_equal(vtpm_firmware_type_str(UEFI), "uefi");
    assert_null(vtpm_firmware_type_str(7));
    assert_int_equal(vtpm_firmware_type_parse("uefi"), UEFI);
    assert_int_equal(vtpm_firmware_type_parse("efi"), -1);
    assert_int_equal(vtpm_firmware_type_parse(NULL), -1);
    for (int s = SB_OFF; s <= SB_OPT; s++)
        assert_int_equal(vtpm_secure_boot_parse(vtpm_secure_boot_str(s)), s);
    assert_null(vtpm_secure_boot_str(3));
    assert_int_equal(vtpm_secure_boot_parse("yes"), -1);
    assert_true(vtpm_firmware_is_q35("q35"));
    assert_true(vtpm_firmware_is_q35("pc-q35-2.11"));
    assert_false(vtpm_firmware_is_q35("pc"));
    assert_false(vtpm_firmware_is_q35("pc-i440fx-7.2"));
    assert_false(vtpm_firmware_is_q35(NULL));
}

/* ---- domain capabilities ---------------------------------------------------- */

static char *
fixture(const char *name)
{
    g_autofree char *path = g_build_filename(VTPM_FIXTURES, name, NULL);
    char *xml = NULL;

    if (!g_file_get_contents(path, &xml, NULL, NULL))
        fail_msg("cannot read fixture %s", path);
    return xml;
}

static void
test_domcaps(void **state)
{
    static const struct {
        const char *file;
        bool efi, pflash, secure;
    } cases[] = {
        /* Debian's ovmf: descriptors with and without Secure Boot */
        { "domcaps-libvirt9-q35.xml", true, true, true },
        /* OVMF files but no descriptors: no auto-selection, no secure loader */
        { "domcaps-libvirt9-q35-no-descriptors.xml", false, true, false },
        /* no OVMF at all: the loader enums alone */
        { "domcaps-libvirt9-q35-no-ovmf.xml", false, true, false },
        /* another QEMU's, with everything */
        { "domcaps-no-tpm.xml", true, true, true },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = fixture(cases[i].file);
        vtpm_firmware_facts f = { 0 };
        vtpm_error err = { 0 };

        if (vtpm_firmware_parse_domcaps(xml, &f, &err) < 0)
            fail_msg("%s: %s", cases[i].file, err.message);
        assert_true(f.domcaps_read);
        if (f.efi_autoselect != cases[i].efi || f.pflash != cases[i].pflash ||
            f.secure != cases[i].secure)
            fail_msg("%s: efi %d pflash %d secure %d, expected %d %d %d", cases[i].file,
                     f.efi_autoselect, f.pflash, f.secure, cases[i].efi, cases[i].pflash,
                     cases[i].secure);
    }
    {
        g_autofree char *xml = fixture("domcaps-libvirt9-q35-no-ovmf.xml");
        vtpm_firmware_facts f = { 0 };

        assert_int_equal(vtpm_firmware_parse_domcaps(xml, &f, NULL), 0);
        assert_string_equal(f.machine, "pc-q35-7.2");
    }
    {
        /* No <os> at all (a driver that does not report it): nothing,
         * and an enum named like ours elsewhere does not count. */
        static const char xml[] =
            "<domainCapabilities><machine> pc-q35-2.11 </machine><devices><disk>"
            "<enum name='firmware'><value>efi</value></enum></disk></devices>"
            "<os><loader><enum name='secure'><value>yes</value></enum></loader>"
            "<enum name='kind'><value>efi</value></enum></os></domainCapabilities>";
        vtpm_firmware_facts f = { 0 };

        assert_int_equal(vtpm_firmware_parse_domcaps(xml, &f, NULL), 0);
        assert_string_equal(f.machine, "pc-q35-2.11");
        assert_false(f.efi_autoselect);
        assert_false(f.pflash);
        assert_true(f.secure);
    }
}

static void
test_domcaps_malformed(void **state)
{
    g_autofree char *xml = fixture("domcaps-malformed.xml");
    vtpm_firmware_facts f = { 0 };
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_firmware_parse_domcaps(xml, &f, &err),
                     -(int)VTPM_FAULT_HYPERVISOR_ERROR);
    assert_non_null(strstr(err.message, "cannot parse domain capabilities"));
    assert_false(f.domcaps_read);
    assert_int_equal(vtpm_firmware_parse_domcaps(NULL, &f, &err),
                     -(int)VTPM_FAULT_HYPERVISOR_ERROR);
}

/* ---- descriptors and traits ------------------------------------------------- */

typedef struct {
    char *root;        /* a temporary directory */
    char *share, *etc; /* descriptor dirs, lowest precedence first */
    char *code_sb, *code_plain, *vars_sb, *vars_plain, *snakeoil;
    const char *dirs[3];
} fwdirs;

static void
write_text(const char *path, const char *text)
{
    if (!g_file_set_contents(path, text, -1, NULL))
        fail_msg("cannot write %s", path);
}

/* A descriptor as QEMU's docs/interop/firmware.json defines it. */
static char *
descriptor(const char *code, const char *vars, const char *machines, const char *features)
{
    return g_strdup_printf("{\n  \"description\": \"test\",\n  \"interface-types\": [\"uefi\"],\n"
                           "  \"mapping\": {\n    \"device\": \"flash\",\n"
                           "    \"executable\": {\"filename\": \"%s\", \"format\": \"raw\"},\n"
                           "    \"nvram-template\": {\"filename\": \"%s\", \"format\": \"raw\"}\n"
                           "  },\n  \"targets\": [{\"architecture\": \"x86_64\", "
                           "\"machines\": [%s]}],\n  \"features\": [%s],\n  \"tags\": []\n}\n",
                           code, vars, machines, features);
}

static int
dirs_setup(void **state)
{
    fwdirs *d = g_new0(fwdirs, 1);

    d->root = g_dir_make_tmp("vtpm-fw-XXXXXX", NULL);
    assert_non_null(d->root);
    d->share = g_build_filename(d->root, "share", NULL);
    d->etc = g_build_filename(d->root, "etc", NULL);
    g_mkdir(d->share, 0755);
    g_mkdir(d->etc, 0755);
    d->code_sb = g_build_filename(d->root, "CODE.secboot.fd", NULL);
    d->code_plain = g_build_filename(d->root, "CODE.fd", NULL);
    d->vars_sb = g_build_filename(d->root, "VARS.ms.fd", NULL);
    d->vars_plain = g_build_filename(d->root, "VARS.fd", NULL);
    d->snakeoil = g_build_filename(d->root, "CODE.snakeoil.fd", NULL);
    write_text(d->code_sb, "code-sb");
    write_text(d->code_plain, "code");
    write_text(d->vars_sb, "vars-sb");
    write_text(d->vars_plain, "vars");
    /* As Debian ships it: the snakeoil loader is a link to the secboot one. */
    if (symlink(d->code_sb, d->snakeoil) < 0)
        fail_msg("symlink: %s", g_strerror(errno));
    d->dirs[0] = d->share;
    d->dirs[1] = d->etc;
    *state = d;
    return 0;
}

static int
dirs_teardown(void **state)
{
    fwdirs *d = *state;
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", d->root);

    if (system(cmd) != 0)
        print_error("cannot remove %s\n", d->root);
    g_free(d->root);
    g_free(d->share);
    g_free(d->etc);
    g_free(d->code_sb);
    g_free(d->code_plain);
    g_free(d->vars_sb);
    g_free(d->vars_plain);
    g_free(d->snakeoil);
    g_free(d);
    return 0;
}

/* Debian's three descriptors, as the ovmf package installs them. */
static void
debian_descriptors(fwdirs *d)
{
    g_autofree char *ms = descriptor(d->code_sb, d->vars_sb, "\"pc-q35-*\"",
                                     "\"acpi-s3\", \"enrolled-keys\", \"requires-smm\", "
                                     "\"secure-boot\"");
    g_autofree char *sb = descriptor(d->code_sb, d->vars_plain, "\"pc-q35-*\"",
                                     "\"acpi-s3\", \"requires-smm\", \"secure-boot\"");
    g_autofree char *plain = descriptor(d->code_plain, d->vars_plain,
                                        "\"pc-i440fx-*\", \"pc-q35-*\"", "\"acpi-s3\"");
    g_autofree char *p1 = g_build_filename(d->share, "40-edk2-x86_64-secure-enrolled.json", NULL);
    g_autofree char *p2 = g_build_filename(d->share, "50-edk2-x86_64-secure.json", NULL);
    g_autofree char *p3 = g_build_filename(d->share, "60-edk2-x86_64.json", NULL);

    write_text(p1, ms);
    write_text(p2, sb);
    write_text(p3, plain);
}

static vtpm_firmware_facts
facts_from(const char *domcaps, const vtpm_firmware_config *cfg)
{
    g_autofree char *xml = fixture(domcaps);
    vtpm_firmware_facts f = { 0 };

    assert_int_equal(vtpm_firmware_parse_domcaps(xml, &f, NULL), 0);
    vtpm_firmware_scan(cfg, &f);
    return f;
}

static const vtpm_firmware_host host_ok = { 9000000, 7002000, "x86_64", NULL };

/* The reasons for @trait joined by "; " ("" when the host offers it). */
static char *
reasons(const char *trait, const vtpm_firmware_facts *f, const vtpm_firmware_config *cfg,
        const vtpm_firmware_host *h)
{
    g_autoptr(GPtrArray) r = g_ptr_array_new_with_free_func(g_free);

    vtpm_firmware_trait_reasons(trait, f, cfg, h, r);
    g_ptr_array_add(r, NULL);
    return g_strjoinv("; ", (char **)r->pdata);
}

static void
assert_offers(const char *trait, const vtpm_firmware_facts *f, const vtpm_firmware_config *cfg,
              const vtpm_firmware_host *h, const char *what)
{
    g_autofree char *why = reasons(trait, f, cfg, h);

    if (*why)
        fail_msg("%s: %s should be offered, missing because: %s", what, trait, why);
}

static void
assert_missing(const char *trait, const vtpm_firmware_facts *f, const vtpm_firmware_config *cfg,
               const vtpm_firmware_host *h, const char *fragment, const char *what)
{
    g_autofree char *why = reasons(trait, f, cfg, h);

    if (!*why)
        fail_msg("%s: %s should be missing", what, trait);
    if (!strstr(why, fragment))
        fail_msg("%s: the reason for %s should say \"%s\": %s", what, trait, fragment, why);
}

static void
test_debian_ovmf(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .descriptor_dirs = d->dirs };
    vtpm_firmware_facts f;

    debian_descriptors(d);
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_int_equal(f.descriptors, 3);
    assert_int_equal(f.unreadable, 0);
    assert_true(f.plain_uefi);
    assert_true(f.secure_enrolled);
    assert_false(f.pinned);
    assert_offers(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "Debian's ovmf");
    assert_offers(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "Debian's ovmf");
}

/* No OVMF package: no descriptors, no loaders. */
static void
test_no_ovmf(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .descriptor_dirs = d->dirs };
    vtpm_firmware_facts f = facts_from("domcaps-libvirt9-q35-no-ovmf.xml", &cfg);

    assert_int_equal(f.descriptors, 0);
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "install the ovmf package",
                   "no OVMF");
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "auto-selection offers no UEFI",
                   "no OVMF");
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "no secure loader",
                   "no OVMF");
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "install the ovmf package",
                   "no OVMF");
}

/* Only a descriptor without Secure Boot: UEFI yes, Secure Boot no. */
static void
test_no_secure_descriptor(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .descriptor_dirs = d->dirs };
    g_autofree char *plain = descriptor(d->code_plain, d->vars_plain, "\"pc-q35-*\"", "");
    g_autofree char *p = g_build_filename(d->share, "60-edk2-x86_64.json", NULL);
    vtpm_firmware_facts f;

    write_text(p, plain);
    f = facts_from("domcaps-libvirt9-q35-no-descriptors.xml", &cfg);
    /* libvirt saw no descriptors there: its domcaps say so */
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "list no 'efi' firmware",
                   "libvirt without descriptors");
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_offers(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "plain descriptor");
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok,
                   "none of the 1 UEFI firmware descriptors for pc-q35-7.2 offers Secure Boot "
                   "with enrolled keys",
                   "plain descriptor only");
}

/* /etc/qemu/firmware overrides /usr/share/qemu/firmware by name; an empty
 * file masks; an unreadable one is counted; other arches and machines
 * and non-UEFI descriptors do not count. */
static void
test_descriptor_precedence(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .descriptor_dirs = d->dirs };
    g_autofree char *arm = g_strdup_printf(
        "{\"interface-types\": [\"uefi\"], \"mapping\": {\"device\": \"flash\", \"executable\": "
        "{\"filename\": \"%s\"}}, \"targets\": [{\"architecture\": \"aarch64\", \"machines\": "
        "[\"virt-*\"]}], \"features\": []}", d->code_plain);
    g_autofree char *i440 = descriptor(d->code_plain, d->vars_plain, "\"pc-i440fx-*\"", "");
    g_autofree char *bios = g_strdup("{\"interface-types\": [\"bios\"], \"mapping\": "
                                     "{\"device\": \"memory\", \"filename\": \"/x\"}, "
                                     "\"targets\": [{\"architecture\": \"x86_64\", \"machines\": "
                                     "[\"pc-q35-*\"]}], \"features\": []}");
    g_autofree char *masked = g_build_filename(d->etc, "40-edk2-x86_64-secure-enrolled.json", NULL);
    g_autofree char *override = g_build_filename(d->etc, "60-edk2-x86_64.json", NULL);
    g_autofree char *p_arm = g_build_filename(d->share, "10-arm.json", NULL);
    g_autofree char *p_bios = g_build_filename(d->share, "20-bios.json", NULL);
    g_autofree char *p_bad = g_build_filename(d->share, "30-bad.json", NULL);
    g_autofree char *p_txt = g_build_filename(d->share, "README", NULL);
    vtpm_firmware_facts f;

    debian_descriptors(d);
    write_text(masked, "");
    write_text(override, i440);
    write_text(p_arm, arm);
    write_text(p_bios, bios);
    write_text(p_bad, "{ not json");
    write_text(p_txt, "not a descriptor");
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    /* left: 50-secure only (40 masked, 60 now i440fx-only) */
    assert_int_equal(f.descriptors, 1);
    assert_int_equal(f.unreadable, 1);
    assert_false(f.plain_uefi);
    assert_false(f.secure_enrolled);
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "1 unreadable", "masked");
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "enrolled keys", "masked");
}

/* [libvirt] uefi_loader / uefi_nvram_template: Secure Boot from the pinned
 * pair when a descriptor says the loader is a Secure Boot build. */
static void
test_pinned(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .loader = d->snakeoil, .nvram_template = d->vars_sb,
                                 .descriptor_dirs = d->dirs };
    g_autofree char *missing = g_build_filename(d->root, "nothere.fd", NULL);
    vtpm_firmware_facts f;

    debian_descriptors(d);
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_true(f.pinned);
    assert_true(f.loader_secure);
    assert_offers(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "snakeoil pinned");

    /* The pair is what counts for Secure Boot, even where libvirt could
     * auto-select nothing. */
    f = facts_from("domcaps-libvirt9-q35-no-descriptors.xml", &cfg);
    assert_offers(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "pinned, no auto-selection");
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "no 'efi' firmware",
                   "pinned, no auto-selection");

    cfg.loader = d->code_plain;
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok,
                   "describes [libvirt] uefi_loader", "a plain loader pinned");

    cfg.loader = missing;
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "No such file or directory",
                   "a missing loader");
    cfg.loader = d->snakeoil;
    cfg.nvram_template = d->root; /* a directory */
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok,
                   "[libvirt] uefi_nvram_template", "a directory as template");
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "not a regular file",
                   "a directory as template");
}

static void
test_host_reasons(void **state)
{
    fwdirs *d = *state;
    vtpm_firmware_config cfg = { .descriptor_dirs = d->dirs };
    vtpm_firmware_host old_qemu = { 9000000, 4000000, "x86_64", NULL };
    vtpm_firmware_host old_libvirt = { 7001000, 7002000, "x86_64", NULL };
    vtpm_firmware_host arm = { 9000000, 7002000, "aarch64", NULL };
    vtpm_firmware_host no_qemu = { 9000000, 0, "x86_64", NULL };
    vtpm_firmware_host down = { 9000000, 7002000, "x86_64", "libvirt unavailable: gone" };
    vtpm_firmware_facts f, none = { 0 };

    debian_descriptors(d);
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    for (int t = 0; t < 2; t++) {
        const char *trait = t ? VTPM_TRAIT_UEFI_SECURE_BOOT : VTPM_TRAIT_FIRMWARE_UEFI;

        assert_missing(trait, &f, &cfg, &old_qemu, "QEMU 4.0.0 is older than 4.1.0", "old QEMU");
        assert_missing(trait, &f, &cfg, &old_libvirt, "libvirt 7.1.0 is older than 7.2.0",
                       "old libvirt");
        assert_missing(trait, &f, &cfg, &arm, "aarch64 is not x86_64", "arm");
        assert_missing(trait, &f, &cfg, &no_qemu, "QEMU version unknown", "not QEMU");
        assert_missing(trait, &none, &cfg, &down, "unavailable: libvirt unavailable: gone",
                       "libvirt down");
    }
    /* A domcaps machine that is not q35 (a QEMU without it). */
    g_strlcpy(f.machine, "pc-i440fx-7.2", sizeof(f.machine));
    assert_missing(VTPM_TRAIT_FIRMWARE_UEFI, &f, &cfg, &host_ok, "no q35 machine type", "no q35");
    f = facts_from("domcaps-libvirt9-q35.xml", &cfg);
    f.pflash = false;
    assert_missing(VTPM_TRAIT_UEFI_SECURE_BOOT, &f, &cfg, &host_ok, "no pflash loader",
                   "no pflash");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nova_secure_boot_constraint),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_secure_boot_needs),
        cmocka_unit_test(test_decide_and_traits),
        cmocka_unit_test(test_same_store),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_domcaps),
        cmocka_unit_test(test_domcaps_malformed),
        cmocka_unit_test_setup_teardown(test_debian_ovmf, dirs_setup, dirs_teardown),
        cmocka_unit_test_setup_teardown(test_no_ovmf, dirs_setup, dirs_teardown),
        cmocka_unit_test_setup_teardown(test_no_secure_descriptor, dirs_setup, dirs_teardown),
        cmocka_unit_test_setup_teardown(test_descriptor_precedence, dirs_setup, dirs_teardown),
        cmocka_unit_test_setup_teardown(test_pinned, dirs_setup, dirs_teardown),
        cmocka_unit_test_setup_teardown(test_host_reasons, dirs_setup, dirs_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
