/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Libvirt domain XML for an instance.  One builder used by the worker and
 * by `vtpmctl render-xml`.  Every value that comes from a peer is escaped
 * (g_markup_printf_escaped); nothing is pasted into XML unescaped.
 */
#pragma once

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "firmware.h"
#include "policy.h"

/* Namespace of the <metadata> element recording what a domain was built
 * from: <vtpmd:instance spec_digest> (its first attribute, when given)
 * with <vtpmd:flavor name>, <vtpmd:image id> and, only when the domain
 * has a vTPM, <vtpmd:vtpm version model secret_security> (the strings of
 * policy.h), plus encrypted='yes' when the state is encrypted, in
 * deployment mode wrapped_secret='v1:...' (keywrap.h), and identity='v1:...'
 * when vtpmd made the TPM and recorded its endorsement keys (identity.h):
 * the record travels with the domain definition wherever it goes (a
 * migration's, an archive's); only for UEFI firmware, <vtpmd:firmware
 * type='uefi' secure_boot='yes|no' machine>, the firmware decided
 * (firmware.h), which a variable store belongs to. */
#define VTPM_DOMXML_NS "https://vtpmd.invalid/xmlns/instance/1"
#define VTPM_DOMXML_NS_PREFIX "vtpmd"

typedef struct {
    const vtpm_instance *inst;
    const vtpm_device *tpm;     /* NULL or version NONE: no <tpm> */
    const char *secret_uuid;    /* libvirt secret for swtpm state encryption; NULL: none */
    const char *wrapped_secret; /* deployment mode: the wrapped TPM secret; NULL: none */
    const char *identity;       /* the TPM's identity record (text form); NULL: none */
    const char *virt_type;      /* "qemu" (TCG) or "kvm"; NULL = "qemu" */
    const char *console_log;    /* serial console appended to this file; NULL: pty */
    /* Boot paths already confined by the caller (NULL: take inst->boot as is). */
    const char *kernel;
    const char *initrd;
    const char *disk;
    /* Recorded in the metadata as spec_digest='...' (64 hex chars) so that
     * a repeated spawn can tell a redelivery from a conflict; NULL: none. */
    const char *spec_digest;
    /* The firmware as decided (optional Secure Boot settled); NULL: BIOS,
     * q35.  UEFI: libvirt's auto-selection (<os firmware='efi'> with the
     * secure-boot and enrolled-keys features), except that Secure Boot
     * guests get the pinned loader and template when both are given.
     * Secure Boot also gets SMM, which guards the variable store. */
    const vtpm_firmware *firmware;
    const char *uefi_loader;
    const char *uefi_nvram_template;
    /* The variable store's path (<nvram>); NULL: libvirt's default. */
    const char *nvram;
} vtpm_domxml_params;

/* Domain name for an instance: "instance-<uuid>" (the UUID is the libvirt
 * domain UUID too, as in Nova).  Names given by users go into <title>. */
char *vtpm_domxml_domain_name(const char *uuid);

/* CRB with TPM 1.2 is refused here (InvalidTPMConfig), before libvirt.  A
 * TPM 2.0 with PCR banks gets <active_pcr_banks>: libvirt turns exactly
 * those on (swtpm_setup --reconfigure) at every start. */
int vtpm_domxml_build(const vtpm_domxml_params *p, char **out, vtpm_error *err);

/* What a domain's <vtpmd:instance> metadata says it was built from. */
typedef struct {
    char *spec_digest; /* NULL when absent */
    char *flavor;      /* NULL when absent */
    char *image;       /* NULL when absent */
    vtpm_device tpm;   /* version NONE when the domain has no vTPM */
    bool encrypted;    /* the TPM state is encrypted (<encryption secret>) */
    char *wrapped_secret; /* deployment mode; NULL when absent */
    /* The firmware recorded (machine "" when not recorded); BIOS when
     * there is no <vtpmd:firmware>. */
    vtpm_firmware firmware;
    char *identity;       /* the identity record as written; NULL when absent */
} vtpm_domxml_meta;

/* Parse the metadata element as libvirt's virDomainGetMetadata returns it
 * (any namespace prefix).  Internal on malformed XML or unknown TPM
 * values. */
int vtpm_domxml_parse_metadata(const char *md, vtpm_domxml_meta *out, vtpm_error *err);
/* The same for a whole domain XML as libvirt formats it (the definition an
 * archive carries): only the element of our namespace in /domain/metadata
 * is read, as virDomainGetMetadata would hand it out; version NONE when
 * there is none. */
int vtpm_domxml_parse_domain_metadata(const char *xml, vtpm_domxml_meta *out, vtpm_error *err);
/* The path of the UEFI variable store a domain XML names (/domain/os/nvram,
 * which libvirt fills in when it picks the path itself); *out NULL when
 * there is none.  Internal on malformed XML. */
int vtpm_domxml_parse_nvram(const char *xml, char **out, vtpm_error *err);
void vtpm_domxml_meta_clear(vtpm_domxml_meta *m);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_domxml_meta, vtpm_domxml_meta_clear)
