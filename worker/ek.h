/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Making a vTPM with the deployment's EK CA ([vtpm] ek_ca_cert and
 * ek_ca_key), before libvirt first starts it: libvirt manufactures a TPM
 * only when its state dir is empty, with the host's swtpm_setup.conf and
 * swtpm-localca (a CA of each host).  vtpmd runs the same swtpm_setup with
 * the arguments libvirt gives it (--createek --create-ek-cert
 * --create-platform-cert --lock-nvram, the instance's key through a pipe
 * and aes-256-cbc) and a private configuration whose swtpm_localca signs
 * with the deployment's CA; then, for a TPM 2.0, it adds the ECC NIST
 * P-256 EK and its certificate that swtpm_setup 0.7 does not make
 * (worker/tpm2.h), and records the identity (worker/identity.h).
 */
#pragma once

#include <glib.h>

#include "vtpm/error.h"
#include "identity.h"
#include "policy.h"

typedef struct vtpm_ek_ca vtpm_ek_ca;

/* Load and check the CA: a certificate with basic constraints CA:TRUE
 * (and keyCertSign when it has a key usage), and an unencrypted private
 * key of mode 0600 or 0400 that belongs to it.  BadRequest naming the
 * file and the problem.  swtpm_localca reads the files again each time a
 * TPM is made (it runs in processes of its own, which cannot be handed a
 * descriptor through swtpm_setup): before that, vtpm_ek_manufacture checks
 * that they are still there and the certificate is the one checked here,
 * and after it that every certificate verifies against that one. */
int vtpm_ek_ca_load(const char *cert_path, const char *key_path, vtpm_ek_ca **out,
                    vtpm_error *err);
void vtpm_ek_ca_free(vtpm_ek_ca *ca);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_ek_ca, vtpm_ek_ca_free)
/* Its subject (RFC 4514) and the sha256 of its DER, as records name it. */
const char *vtpm_ek_ca_subject(const vtpm_ek_ca *ca);
const char *vtpm_ek_ca_sha256(const vtpm_ek_ca *ca);

typedef struct {
    const char *dir;      /* the state dir to make (libvirt's <uuid> dir); must not exist */
    const char *work;     /* an existing private directory for the tools' files */
    vtpm_version version;
    const char *uuid;     /* the instance: the certificates' subject CN (--vmid) */
    unsigned pcr_banks;   /* TPM 2.0: bits of vtpm_pcr_bank; 0: sha256, swtpm_setup's default */
    GBytes *key;          /* the passphrase the state is encrypted with; NULL: plaintext */
    int uid, gid;         /* swtpm's: the owner of what is inside @dir */
} vtpm_ek_params;

/* Make the TPM in p->dir, owned and with the modes libvirt gives a state
 * (<uuid>/ 0711, tpm2/ or tpm1.2/ 0700, files 0600), and return its
 * identity: TPM 2.0: RSA 2048 and ECC NIST P-256 EKs, each certificate in
 * its NV index, checked against the key the TPM reports and against the
 * CA; TPM 1.2: its RSA EK certificate.  Internal when a tool fails (what
 * it logged in the message). */
int vtpm_ek_manufacture(const vtpm_ek_ca *ca, const vtpm_ek_params *p, vtpm_identity **out,
                        vtpm_error *err);
