/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which accelerator a domain gets: [libvirt] virt_type resolved once at
 * start-up.  "auto" picks kvm only when KVM can run a guest here, because
 * a /dev/kvm that exists is not enough: under nested virtualization
 * without vmx/svm the device opens, creates VMs and runs real-mode code,
 * yet a Linux guest hangs in its firmware forever (docs/operations.md).
 */
#pragma once

#include <glib.h>

typedef struct {
    char *virt_type; /* "kvm" | "qemu" */
    char *reason;    /* e.g. "auto: /dev/kvm present, CPU has no vmx/svm" */
} vtpm_accel;

/* Where the probe looks; the defaults are /dev/kvm and /proc/cpuinfo.
 * Tests point them at files of their own. */
typedef struct {
    const char *kvm_dev;
    const char *cpuinfo;
} vtpm_accel_paths;

/*
 * Resolve @configured ("auto", "kvm" or "qemu"; NULL = "auto") into @out.
 * kvm and qemu are taken as they are; auto means kvm when @paths->kvm_dev
 * opens read-write, answers KVM_GET_API_VERSION 12 and KVM_CREATE_VM, and
 * the CPU advertises vmx or svm (x86); otherwise qemu.  The reason names
 * the first check that failed.  Never fails.
 */
void vtpm_accel_resolve(const char *configured, const vtpm_accel_paths *paths, vtpm_accel *out);

void vtpm_accel_clear(vtpm_accel *a);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_accel, vtpm_accel_clear)
