/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The firmware an instance boots: BIOS or UEFI, Secure Boot, the machine
 * type, as OpenStack Nova reads them (image hw_firmware_type,
 * hw_machine_type; image os_secure_boot and flavor os:secure_boot), and
 * what a host offers of it (traits COMPUTE_FIRMWARE_UEFI and
 * COMPUTE_SECURITY_UEFI_SECURE_BOOT, each with the reason when missing),
 * from libvirt's domain capabilities and QEMU's firmware descriptors.
 *
 * The policy half is pure (no I/O); vtpm_firmware_scan() reads the
 * descriptors and the configured loader, vtpm_firmware_parse_domcaps()
 * the <os> part of libvirt's domain capabilities.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

#include "vtpm/error.h"

#define VTPM_TRAIT_FIRMWARE_UEFI "COMPUTE_FIRMWARE_UEFI"
#define VTPM_TRAIT_UEFI_SECURE_BOOT "COMPUTE_SECURITY_UEFI_SECURE_BOOT"

/* Minimum versions for UEFI guests: libvirt's firmware auto-selection by
 * feature (<os firmware='efi'><firmware><feature .../>), and QEMU since
 * it ships firmware descriptors (docs/interop/firmware.json). */
#define VTPM_FIRMWARE_MIN_LIBVIRT 7002000UL /* 7.2.0 */
#define VTPM_FIRMWARE_MIN_QEMU 4001000UL    /* 4.1.0 */

/* A UEFI instance with a vTPM keeps its variable store in its state dir
 * under this name, so that the store moves with the TPM state. */
#define VTPM_FIRMWARE_NVRAM_FILE "nvram.fd"

/* What machine types may be: QEMU's x86 names are short. */
#define VTPM_FIRMWARE_MACHINE_MAX 64

typedef enum {
    VTPM_FIRMWARE_BIOS = 0,
    VTPM_FIRMWARE_UEFI,
} vtpm_firmware_type;

typedef enum {
    VTPM_SECURE_BOOT_DISABLED = 0, /* also: not asked for */
    VTPM_SECURE_BOOT_REQUIRED,
    VTPM_SECURE_BOOT_OPTIONAL,
} vtpm_secure_boot;

typedef struct {
    vtpm_firmware_type type;
    vtpm_secure_boot policy; /* as the flavor and image ask */
    /* Decided: on for required; for optional where the host offers it
     * (vtpm_firmware_decide), Nova's rule. */
    bool secure_boot;
    char machine[VTPM_FIRMWARE_MACHINE_MAX + 1]; /* hw_machine_type, else "q35" */
} vtpm_firmware;

/*
 * @extra_specs and @image_props map str -> str; either may be NULL.
 * Faults name key, value and source: BadRequest for a value Nova refuses
 * (hw_firmware_type other than uefi / bios, a secure boot policy other
 * than required / disabled / optional, a machine type that is not one of
 * q35, pc, pc-q35-<version>, pc-i440fx-<version>) and for Secure Boot
 * required without UEFI or without q35; FlavorImageConflict when
 * os:secure_boot and os_secure_boot are both set and differ.  Optional
 * Secure Boot is decided later, off until then.
 */
int vtpm_firmware_resolve(GHashTable *extra_specs, GHashTable *image_props, vtpm_firmware *out,
                          vtpm_error *err);
/* Optional Secure Boot is on where the host offers it (and the guest is
 * a UEFI q35 guest); required and disabled stay as they are. */
void vtpm_firmware_decide(vtpm_firmware *fw, bool host_secure_boot);
/* The traits a host must offer for @fw as decided: UEFI needs
 * COMPUTE_FIRMWARE_UEFI, Secure Boot also COMPUTE_SECURITY_UEFI_SECURE_BOOT.
 * Returns how many were stored (0 for BIOS). */
size_t vtpm_firmware_required_traits(const vtpm_firmware *fw, const char *out[2]);
/* Whether a UEFI variable store made for @a serves @b: both UEFI, both
 * with Secure Boot or both without (a store for one has the wrong keys,
 * or none, for the other). */
bool vtpm_firmware_same_store(const vtpm_firmware *a, const vtpm_firmware *b);
/* Whether @machine is a q35 machine type ("q35", "pc-q35-7.2"). */
bool vtpm_firmware_is_q35(const char *machine);

/* "bios" / "uefi"; "disabled" / "required" / "optional" */
const char *vtpm_firmware_type_str(vtpm_firmware_type t);
const char *vtpm_secure_boot_str(vtpm_secure_boot s);
/* Strict parsers of those strings; -1 when not recognised. */
int vtpm_firmware_type_parse(const char *s);
int vtpm_secure_boot_parse(const char *s);

/* ---- what a host offers ------------------------------------------------------ */

typedef struct {
    /* [libvirt] uefi_loader and uefi_nvram_template: the firmware and
     * variable store template of Secure Boot guests; NULL: libvirt's
     * auto-selection. */
    const char *loader;
    const char *nvram_template;
    /* Where QEMU's firmware descriptors are (NULL-terminated, in
     * precedence order); NULL: QEMU's and libvirt's standard ones. */
    const char *const *descriptor_dirs;
} vtpm_firmware_config;

/* Plain data (no pointers): copied by assignment. */
typedef struct {
    /* From the <os> of libvirt's domain capabilities for the q35 machine. */
    bool domcaps_read;
    char machine[VTPM_FIRMWARE_MACHINE_MAX + 1]; /* canonical, "pc-q35-7.2" */
    bool efi_autoselect; /* <enum name='firmware'> lists efi */
    bool pflash;         /* the loader type enum lists pflash */
    bool secure;         /* the loader secure enum lists yes */

    /* From the firmware descriptors (JSON) for x86_64 and that machine. */
    unsigned descriptors;  /* UEFI descriptors read */
    unsigned unreadable;   /* descriptors that could not be read */
    bool plain_uefi;       /* one without Secure Boot */
    bool secure_enrolled;  /* one with Secure Boot and enrolled keys */

    /* The pinned pair ([libvirt] uefi_loader / uefi_nvram_template). */
    bool pinned;
    int loader_errno;      /* 0: a readable regular file */
    int template_errno;
    bool loader_secure;    /* a descriptor names the loader with secure-boot */
} vtpm_firmware_facts;

/* The <os> part of domain capabilities XML into @facts. */
int vtpm_firmware_parse_domcaps(const char *xml, vtpm_firmware_facts *facts, vtpm_error *err);
/* Read the firmware descriptors and look at the pinned pair of @cfg;
 * never fails (what cannot be read is counted as unreadable). */
void vtpm_firmware_scan(const vtpm_firmware_config *cfg, vtpm_firmware_facts *facts);

/* What else about the host the reasons depend on. */
typedef struct {
    unsigned long libvirt_version;
    unsigned long qemu_version; /* 0: unknown */
    const char *arch;           /* NULL: unknown */
    const char *domcaps_error;  /* why domain capabilities could not be read */
} vtpm_firmware_host;

/* Why the host does not offer @trait (one of the two above): reasons
 * appended to @out (g_free'd strings); none when it does. */
void vtpm_firmware_trait_reasons(const char *trait, const vtpm_firmware_facts *f,
                                 const vtpm_firmware_config *cfg, const vtpm_firmware_host *host,
                                 GPtrArray *out);
