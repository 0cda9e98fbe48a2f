/* SPDX-License-Identifier: Apache-2.0 */
/* worker/accel.c: which accelerator "auto" picks, and the reason it gives,
 * against stand-ins for /dev/kvm and /proc/cpuinfo. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <glib.h>

#include "accel.h"

typedef struct {
    char *dir;
    char *vmx, *svm, *plain, *noflags;
} fixture;

static char *
write_file(const char *dir, const char *name, const char *text)
{
    char *p = g_build_filename(dir, name, NULL);

    assert_true(g_file_set_contents(p, text, -1, NULL));
    return p;
}

static int
setup(void **state)
{
    fixture *f = g_new0(fixture, 1);

    f->dir = g_dir_make_tmp("test_accel.XXXXXX", NULL);
    assert_non_null(f->dir);
    f->vmx = write_file(f->dir, "cpuinfo-vmx",
                        "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n\n"
                        "processor\t: 1\nflags\t\t: fpu vme de pse vmx sse2\n");
    f->svm = write_file(f->dir, "cpuinfo-svm", "processor\t: 0\nflags\t\t: fpu svm lm\n");
    /* "vmxfoo" and "svm_lock" must not count as vmx/svm. */
    f->plain = write_file(f->dir, "cpuinfo-plain",
                          "processor\t: 0\nflags\t\t: fpu hypervisor vmxfoo svm_lock pni\n");
    f->noflags = write_file(f->dir, "cpuinfo-noflags", "processor\t: 0\nmodel name\t: x\n");
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;
    char *files[] = { f->vmx, f->svm, f->plain, f->noflags };

    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        unlink(files[i]);
        g_free(files[i]);
    }
    rmdir(f->dir);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static void
expect(const char *configured, const char *dev, const char *cpuinfo, const char *type,
       const char *reason)
{
    vtpm_accel_paths paths = { dev, cpuinfo };
    g_auto(vtpm_accel) a = { 0 };

    vtpm_accel_resolve(configured, &paths, &a);
    assert_string_equal(a.virt_type, type);
    assert_string_equal(a.reason, reason);
}

/* A configured type is taken as it is, whatever the machine has. */
static void
test_configured(void **state)
{
    fixture *f = *state;

    expect("kvm", "/nonexistent/kvm", f->plain, "kvm", "[libvirt] virt_type = kvm");
    expect("qemu", "/dev/null", f->vmx, "qemu", "[libvirt] virt_type = qemu");
}

static void
test_no_device(void **state)
{
    fixture *f = *state;

    expect("auto", "/nonexistent/kvm", f->vmx, "qemu", "auto: no /nonexistent/kvm");
    /* NULL means auto, as an absent key does. */
    expect(NULL, "/nonexistent/kvm", f->vmx, "qemu", "auto: no /nonexistent/kvm");
}

/* A device node that opens but is no KVM (a mount namespace can put one
 * there): the ioctl says so even when the CPU flags look right. */
static void
test_not_kvm(void **state)
{
    fixture *f = *state;

    expect("auto", "/dev/null", f->vmx, "qemu",
           "auto: /dev/null present, not a KVM device (KVM_GET_API_VERSION: "
           "Inappropriate ioctl for device)");
}

static void
test_cannot_open(void **state)
{
    fixture *f = *state;

    g_autofree char *why =
        g_strdup_printf("auto: %s present, cannot open it read-write: Is a directory", f->dir);

    /* A directory never opens read-write, not even for root. */
    expect("auto", f->dir, f->vmx, "qemu", why);
}

/* The machine this project met: a /dev/kvm that works as a device but a
 * CPU without vmx/svm, whose guests hang in the firmware.  Only testable
 * where a working /dev/kvm exists. */
static void
test_real_kvm_cpu_flags(void **state)
{
    fixture *f = *state;
    g_auto(vtpm_accel) probe = { 0 };
    g_auto(vtpm_accel) unread = { 0 };
    vtpm_accel_paths real = { "/dev/kvm", f->vmx };
    vtpm_accel_paths no_cpuinfo = { "/dev/kvm", "/nonexistent/cpuinfo" };
    g_autofree char *noflags = NULL;

    vtpm_accel_resolve("auto", &real, &probe);
    if (strcmp(probe.virt_type, "kvm") != 0) {
        skip();
        return;
    }
    assert_string_equal(probe.reason, "auto: /dev/kvm usable, CPU has vmx/svm");
    expect("auto", "/dev/kvm", f->svm, "kvm", "auto: /dev/kvm usable, CPU has vmx/svm");
    expect("auto", "/dev/kvm", f->plain, "qemu", "auto: /dev/kvm present, CPU has no vmx/svm");
    noflags = g_strdup_printf("auto: /dev/kvm present, %s lists no CPU flags", f->noflags);
    expect("auto", "/dev/kvm", f->noflags, "qemu", noflags);
    /* GLib words the read error itself (and may translate it). */
    vtpm_accel_resolve("auto", &no_cpuinfo, &unread);
    assert_string_equal(unread.virt_type, "qemu");
    assert_true(g_str_has_prefix(unread.reason,
                                 "auto: /dev/kvm present, cannot read /nonexistent/cpuinfo: "));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configured),
        cmocka_unit_test(test_no_device),
        cmocka_unit_test(test_not_kvm),
        cmocka_unit_test(test_cannot_open),
        cmocka_unit_test(test_real_kvm_cpu_flags),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
