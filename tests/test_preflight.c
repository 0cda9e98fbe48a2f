/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Start-up checks: swtpm binaries on PATH (a directory of stand-ins),
 * swtpm_user / swtpm_group, and vTPM domains while swtpm is disabled
 * (libvirt's test:///default driver, which round-trips <tpm> XML).
 */
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "config.h"
#include "preflight.h"

static void
silent(void *data, virErrorPtr e)
{
}

static vtpm_config *
config(const char *text)
{
    vtpm_config *cfg = NULL;
    vtpm_error err = { 0 };

    if (vtpm_config_load_data("t.conf", text, &cfg, &err) < 0)
        fail_msg("%s", err.message);
    return cfg;
}

static void
assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("expected '%s' in: %s", part, s);
}

/* ---- XML ---------------------------------------------------------------------- */

static void
test_xml(void **state)
{
    static const struct {
        const char *xml;
        bool vtpm;
    } cases[] = {
        { "<domain><devices><tpm model='tpm-tis'><backend type='emulator' version='2.0'/>"
          "</tpm></devices></domain>", true },
        { "<domain type='qemu'><name>x</name><devices><disk/><tpm model='tpm-crb'>"
          "<backend version='2.0' type=\"emulator\" persistent_state='yes'/></tpm></devices>"
          "</domain>", true },
        { "<domain><devices><tpm model='tpm-tis'><backend type='passthrough'>"
          "<device path='/dev/tpm0'/></backend></tpm></devices></domain>", false },
        { "<domain><devices><disk/></devices></domain>", false },
        /* Our own metadata names a vTPM, but only a device is one. */
        { "<domain><metadata><vtpmd:instance xmlns:vtpmd='x'><tpm><backend type='emulator'/>"
          "</tpm></vtpmd:instance></metadata><devices/></domain>", false },
        { "<domain><devices><hostdev><tpm><backend type='emulator'/></tpm></hostdev>"
          "</devices></domain>", false },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        vtpm_error err = { 0 };
        bool has = !cases[i].vtpm;

        if (vtpm_preflight_xml_has_vtpm(cases[i].xml, &has, &err) != 0)
            fail_msg("case %zu: %s", i, err.message);
        if (has != cases[i].vtpm)
            fail_msg("case %zu: has_vtpm should be %d: %s", i, cases[i].vtpm, cases[i].xml);
    }
    {
        vtpm_error err = { 0 };
        bool has = false;

        assert_int_equal(vtpm_preflight_xml_has_vtpm("<domain><devices>", &has, &err),
                         -(int)VTPM_FAULT_INTERNAL);
        assert_contains(err.message, "domain XML");
    }
}

/* ---- swtpm ---------------------------------------------------------------------- */

static char *bindir;
static char *saved_path;

static void
stand_in(const char *name)
{
    g_autofree char *p = g_build_filename(bindir, name, NULL);

    if (!g_file_set_contents(p, "#!/bin/sh\nexit 0\n", -1, NULL) || chmod(p, 0755) < 0)
        fail_msg("cannot create %s", p);
}

static int
bin_setup(void **state)
{
    bindir = g_dir_make_tmp("test_preflight-XXXXXX", NULL);
    saved_path = g_strdup(g_getenv("PATH"));
    g_setenv("PATH", bindir, TRUE);
    return bindir ? 0 : -1;
}

static int
bin_teardown(void **state)
{
    const char *names[] = { "swtpm", "swtpm_setup", "swtpm_ioctl" };

    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *p = g_build_filename(bindir, names[i], NULL);

        g_unlink(p);
    }
    g_rmdir(bindir);
    g_clear_pointer(&bindir, g_free);
    if (saved_path)
        g_setenv("PATH", saved_path, TRUE);
    g_clear_pointer(&saved_path, g_free);
    return 0;
}

static const char *
existing_group(void)
{
    struct group *g = getgrgid(getgid());

    if (!g)
        fail_msg("the test's own group has no name");
    return g->gr_name;
}

static const char *
existing_user(void)
{
    struct passwd *p = getpwuid(getuid());

    if (!p)
        fail_msg("the test's own user has no name");
    return p->pw_name;
}

static void
test_swtpm_binaries(void **state)
{
    g_autofree char *text = g_strdup_printf(
        "[libvirt]\nswtpm_enabled = true\nswtpm_user = %s\nswtpm_group = %s\n", existing_user(),
        existing_group());
    g_autoptr(vtpm_config) on = config(text);
    g_autoptr(vtpm_config) off = config("[libvirt]\nswtpm_enabled = false\n");
    vtpm_error err = { 0 };

    /* Disabled: nothing is needed. */
    assert_int_equal(vtpm_preflight_swtpm(off, &err), 0);

    /* None of them. */
    assert_int_equal(vtpm_preflight_swtpm(on, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_contains(err.message, "swtpm, swtpm_setup, swtpm_ioctl are not on PATH");
    assert_contains(err.message, bindir);
    assert_contains(err.message, "install the swtpm and swtpm-tools packages");
    assert_contains(err.message, "swtpm_enabled = false");

    /* swtpm without the tools. */
    stand_in("swtpm");
    assert_int_equal(vtpm_preflight_swtpm(on, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_contains(err.message, "swtpm_setup, swtpm_ioctl are not on PATH");
    assert_contains(err.message, "install the swtpm-tools package,");
    assert_null(strstr(err.message, " swtpm,"));

    stand_in("swtpm_setup");
    assert_int_equal(vtpm_preflight_swtpm(on, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_contains(err.message, "but swtpm_ioctl is not on PATH");

    stand_in("swtpm_ioctl");
    if (vtpm_preflight_swtpm(on, &err) != 0)
        fail_msg("all there, still refused: %s", err.message);
}

static void
test_swtpm_user_group(void **state)
{
    g_autofree char *no_user = g_strdup_printf(
        "[libvirt]\nswtpm_enabled = true\nswtpm_user = vtpm-no-such-user\nswtpm_group = %s\n",
        existing_group());
    g_autofree char *no_group = g_strdup_printf(
        "[libvirt]\nswtpm_enabled = true\nswtpm_user = %s\nswtpm_group = vtpm-no-such-group\n",
        existing_user());
    g_autoptr(vtpm_config) u = config(no_user);
    g_autoptr(vtpm_config) g = config(no_group);
    vtpm_error err = { 0 };

    stand_in("swtpm");
    stand_in("swtpm_setup");
    stand_in("swtpm_ioctl");
    assert_int_equal(vtpm_preflight_swtpm(u, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_contains(err.message, "[libvirt] swtpm_user: user 'vtpm-no-such-user' does not exist");
    assert_contains(err.message, "set swtpm_user");
    assert_int_equal(vtpm_preflight_swtpm(g, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
    assert_contains(err.message,
                    "[libvirt] swtpm_group: group 'vtpm-no-such-group' does not exist");
    assert_contains(err.message, "set swtpm_group");
}

/* ---- domains ------------------------------------------------------------------------ */

static const char vtpm_domain[] =
    "<domain type='test'><name>%s</name><memory>65536</memory>"
    "<os><type>hvm</type></os><devices><tpm model='tpm-tis'>"
    "<backend type='emulator' version='2.0'/></tpm></devices></domain>";

static void
test_domains(void **state)
{
    g_autoptr(vtpm_config) off = config("[libvirt]\nuri = test:///default\n"
                                        "swtpm_enabled = false\n");
    g_autoptr(vtpm_config) on = config("[libvirt]\nuri = test:///default\n"
                                       "swtpm_enabled = true\n");
    virConnectPtr conn;
    vtpm_error err = { 0 };

    virSetErrorFunc(NULL, silent);
    /* Each open of test:///default is a fresh host with one domain,
     * "test", that has no TPM. */
    conn = virConnectOpen("test:///default");
    assert_non_null(conn);
    if (vtpm_preflight_domains(conn, off, &err) != 0)
        fail_msg("test:///default has no vTPM domain, yet: %s", err.message);

    for (int i = 0; i < 5; i++) {
        g_autofree char *name = g_strdup_printf("instance-vtpm-%d", i);
        g_autofree char *xml = g_strdup_printf(vtpm_domain, name);
        virDomainPtr dom = virDomainDefineXML(conn, xml);

        if (!dom)
            fail_msg("defining %s: %s", name, virGetLastErrorMessage());
        virDomainFree(dom);
        assert_int_equal(vtpm_preflight_domains(conn, off, &err),
                         -(int)VTPM_FAULT_INSTANCE_CONFLICT);
        assert_contains(err.message, "set [libvirt] swtpm_enabled = true");
        assert_contains(err.message, "test:///default");
        assert_contains(err.message, i == 0 ? "1 domain on" : "domains on");
        assert_contains(err.message, "instance-vtpm-0");
        if (i >= 3)
            assert_contains(err.message, ", ...)");
        else
            assert_null(strstr(err.message, "..."));
        /* The default domain has none: it is never named. */
        assert_null(strstr(err.message, "(test"));
        assert_null(strstr(err.message, " test,"));
    }
    {
        g_autofree char *want = g_strdup("5 domains on test:///default have an emulated TPM");

        assert_contains(err.message, want);
    }
    /* Enabled: they are what it serves. */
    assert_int_equal(vtpm_preflight_domains(conn, on, &err), 0);
    virConnectClose(conn);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xml),
        cmocka_unit_test_setup_teardown(test_swtpm_binaries, bin_setup, bin_teardown),
        cmocka_unit_test_setup_teardown(test_swtpm_user_group, bin_setup, bin_teardown),
        cmocka_unit_test(test_domains),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
