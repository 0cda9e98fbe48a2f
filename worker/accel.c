/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <glib.h>

#include "accel.h"

/* The only KVM API version there has ever been (linux/kvm.h). */
#define KVM_API_VERSION_STABLE 12

static const vtpm_accel_paths default_paths = { "/dev/kvm", "/proc/cpuinfo" };

/* Whether a "flags" line of @cpuinfo lists vmx or svm.  NULL when it does;
 * else why not. */
static char *
cpu_virt_flags_missing(const char *cpuinfo)
{
#if defined(__x86_64__) || defined(__i386__)
    g_autofree char *text = NULL;
    g_autoptr(GError) gerr = NULL;

    if (!g_file_get_contents(cpuinfo, &text, NULL, &gerr))
        return g_strdup_printf("cannot read %s: %s", cpuinfo, gerr->message);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!g_str_has_prefix(line, "flags"))
            continue;
        g_auto(GStrv) words = g_strsplit_set(line, " \t", -1);
        for (char **wp = words; *wp; wp++) {
            if (strcmp(*wp, "vmx") == 0 || strcmp(*wp, "svm") == 0)
                return NULL;
        }
        /* Every CPU lists the same flags: the first line decides. */
        return g_strdup("CPU has no vmx/svm");
    }
    return g_strdup_printf("%s lists no CPU flags", cpuinfo);
#else
    /* Other architectures advertise virtualisation differently; the
     * ioctls below are the check there. */
    (void)cpuinfo;
    return NULL;
#endif
}

/* NULL when @dev is a KVM that can create a VM; else why not. */
static char *
kvm_device_unusable(const char *dev)
{
    int fd, version, vm;

    if (access(dev, F_OK) != 0)
        return g_strdup_printf("no %s", dev);
    fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return g_strdup_printf("%s present, cannot open it read-write: %s", dev,
                               g_strerror(errno));
    version = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION_STABLE) {
        int e = errno;

        close(fd);
        return version < 0
                   ? g_strdup_printf("%s present, not a KVM device (KVM_GET_API_VERSION: %s)", dev,
                                     g_strerror(e))
                   : g_strdup_printf("%s present, KVM API version %d, not %d", dev, version,
                                     KVM_API_VERSION_STABLE);
    }
    vm = ioctl(fd, KVM_CREATE_VM, 0);
    if (vm < 0) {
        int e = errno;

        close(fd);
        return g_strdup_printf("%s present, KVM_CREATE_VM failed: %s", dev, g_strerror(e));
    }
    close(vm);
    close(fd);
    return NULL;
}

void
vtpm_accel_resolve(const char *configured, const vtpm_accel_paths *paths, vtpm_accel *out)
{
    g_autofree char *why = NULL;

    if (!paths)
        paths = &default_paths;
    if (configured && strcmp(configured, "auto") != 0) {
        out->virt_type = g_strdup(configured);
        out->reason = g_strdup_printf("[libvirt] virt_type = %s", configured);
        return;
    }
    /* The device first: without it the CPU flags do not matter, and a
     * machine without /dev/kvm is the common case in CI. */
    if ((why = kvm_device_unusable(paths->kvm_dev)) == NULL) {
        g_autofree char *cpu = cpu_virt_flags_missing(paths->cpuinfo);

        if (cpu)
            why = g_strdup_printf("%s present, %s", paths->kvm_dev, cpu);
    }
    if (why) {
        out->virt_type = g_strdup("qemu");
        out->reason = g_strdup_printf("auto: %s", why);
        return;
    }
    out->virt_type = g_strdup("kvm");
    out->reason = g_strdup_printf("auto: %s usable, CPU has vmx/svm", paths->kvm_dev);
}

void
vtpm_accel_clear(vtpm_accel *a)
{
    if (!a)
        return;
    g_clear_pointer(&a->virt_type, g_free);
    g_clear_pointer(&a->reason, g_free);
}
