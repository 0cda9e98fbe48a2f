/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host capabilities: what this compute host can give instances, as traits
 * for a scheduler, and for every trait it does not provide, why not.
 *
 * Split in two so that the rules are testable without a hypervisor:
 * vtpm_caps_probe() gathers facts (libvirt, domcaps, binaries, users), and
 * vtpm_caps_evaluate() applies the rules to facts + configuration.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <libvirt/libvirt.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "firmware.h"
#include "policy.h"

/* This host gives new TPMs EK certificates of the deployment's CA ([vtpm]
 * ek_ca_cert), verifiable wherever the instance runs. */
#define VTPM_TRAIT_EK_DEPLOYMENT_CA "CUSTOM_VTPM_EK_DEPLOYMENT_CA"

/* Minimum versions for an emulated TPM (seed spec). */
#define VTPM_CAPS_MIN_LIBVIRT 4005000UL /* 4.5.0 */
#define VTPM_CAPS_MIN_QEMU 2011000UL    /* 2.11.0 */

typedef struct {
    bool swtpm_enabled;       /* [libvirt] swtpm_enabled */
    const char *swtpm_user;   /* [libvirt] swtpm_user */
    const char *swtpm_group;  /* [libvirt] swtpm_group */
    /* [vtpm] supported_secret_security: bit (1u << vtpm_secret_security) */
    unsigned secret_modes;
    /* deployment mode also needs a key; NULL = not configured */
    const char *deployment_key_file;
    /* The accelerator domains get (worker/accel.h) and why; domain
     * capabilities are asked for this type.  NULL: libvirt's choice. */
    const char *virt_type;
    const char *virt_type_reason;
    /* [libvirt] uefi_loader / uefi_nvram_template (firmware.h) */
    vtpm_firmware_config firmware;
    /* The PCR banks this host's swtpm implements (bits of vtpm_pcr_bank),
     * probed once at start; why they are unknown when the probe failed. */
    unsigned pcr_banks;
    const char *pcr_banks_error;
    /* The deployment's EK CA; NULL: not configured (host-local CA). */
    const char *ek_ca_subject;
    const char *ek_ca_sha256;
} vtpm_caps_config;

typedef struct {
    char *arch;                   /* host arch from libvirt capabilities */
    unsigned long libvirt_version; /* major * 1000000 + minor * 1000 + micro */
    unsigned long qemu_version;    /* same encoding; 0 if unknown */
    bool have_swtpm;               /* found in PATH */
    bool have_swtpm_setup;
    bool have_swtpm_user;          /* getpwnam(swtpm_user) */
    bool have_swtpm_group;         /* getgrnam(swtpm_group) */

    /* from <domainCapabilities><devices><tpm> */
    bool domcaps_read;             /* domcaps were fetched and parsed */
    char *domcaps_error;           /* why not, when !domcaps_read */
    bool tpm_supported;            /* <tpm supported='yes'> */
    unsigned models;               /* bit (1u << vtpm_model) */
    unsigned backends;             /* bit (1u << vtpm_caps_backend) */
    bool versions_listed;          /* backendVersion enum present (libvirt >= 8.x) */
    unsigned versions;             /* bit (1u << vtpm_version) when listed */

    /* UEFI: the <os> of the same domcaps, the firmware descriptors */
    vtpm_firmware_facts firmware;
} vtpm_host_facts;

typedef enum {
    VTPM_CAPS_BACKEND_PASSTHROUGH = 0,
    VTPM_CAPS_BACKEND_EMULATOR,
    VTPM_CAPS_BACKEND_EXTERNAL,
} vtpm_caps_backend;

void vtpm_host_facts_clear(vtpm_host_facts *facts);

/* Parse domcaps XML into the tpm-related fields of @facts. */
int vtpm_caps_parse_domcaps(const char *xml, vtpm_host_facts *facts, vtpm_error *err);

/* Gather every fact from @conn and the host (domain capabilities of the
 * q35 machine, the machine domains get); domcaps failures are recorded
 * in facts->domcaps_error rather than failing the probe.  Fails only when
 * libvirt itself cannot be asked (HypervisorError). */
int vtpm_caps_probe(virConnectPtr conn, const vtpm_caps_config *cfg,
                    vtpm_host_facts *facts, vtpm_error *err);

typedef struct {
    char *host;
    vtpm_host_facts facts;
    GPtrArray *traits;   /* char*, sorted: the traits this host provides */
    GHashTable *missing; /* trait -> reason, for every known trait not provided */
    char *virt_type;     /* from the config; NULL when it gave none */
    char *virt_type_reason;
    unsigned pcr_banks;  /* from the config */
    char *ek_ca_subject; /* from the config; NULL when it gave none */
    char *ek_ca_sha256;
} vtpm_caps;

/* Apply the rules.  @host is copied.  Never fails. */
vtpm_caps *vtpm_caps_evaluate(const char *host, const vtpm_host_facts *facts,
                              const vtpm_caps_config *cfg);
/* Takes ownership of @facts' contents (facts is cleared). */
vtpm_caps *vtpm_caps_evaluate_take(const char *host, vtpm_host_facts *facts,
                                   const vtpm_caps_config *cfg);
bool vtpm_caps_has_trait(const vtpm_caps *caps, const char *trait);
/* Same traits and reasons (used to publish only on change). */
bool vtpm_caps_equal(const vtpm_caps *a, const vtpm_caps *b);
void vtpm_caps_free(vtpm_caps *caps);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_caps, vtpm_caps_free)

/* The get_capabilities result map: {host, traits:[...], missing:{trait:
 * reason}, libvirt_version:"9.0.0", qemu_version:"7.2.0", arch,
 * tpm:{supported, models:[...], backends:[...], versions:[...],
 * pcr_banks:[...]}, virt_type, virt_type_reason, ek_ca:{configured,
 * subject, sha256}} */
int vtpm_caps_pack(const vtpm_caps *caps, msgpack_packer *pk);

/* "9.0.0" from 9000000 */
char *vtpm_caps_version_string(unsigned long v);
