/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A private swtpm (TPM 2.0) that vtpmd itself talks to, for what
 * swtpm_setup 0.7 does not do when a TPM is made (worker/ek.h): the ECC
 * NIST P-256 endorsement key of the TCG's low range and its certificate,
 * and reading back the keys the certificates must certify.  swtpm runs as
 * swtpm_setup runs it: --flags not-need-init,startup-clear, its data and
 * control channels socketpairs of this process (no socket on a file
 * system, nothing another process could connect to), its state key in a
 * pipe (pwdfd=, as libvirt hands it over).
 *
 * Only what those steps need is here, as plain TPM 2.0 commands (TPM 2.0
 * Library Part 3) with the empty platform and endorsement authorizations a
 * freshly made TPM has.
 */
#pragma once

#include <stdint.h>
#include <glib.h>

#include "vtpm/error.h"

/* The TCG EK Credential Profile's NV indices and swtpm_setup's handle. */
#define VTPM_TPM2_NV_RSA2048_EKCERT 0x01c00002u
#define VTPM_TPM2_NV_ECC_P256_EKCERT 0x01c0000au
#define VTPM_TPM2_EK_RSA_HANDLE 0x81010001u

typedef struct vtpm_tpm2 vtpm_tpm2;

/* A pipe holding the passphrase @key, its read end in *out (close-on-exec:
 * hand it to a child explicitly): how swtpm and swtpm_setup take the key
 * of a state (pwdfd=, --pwdfile-fd), as libvirt gives it to them. */
int vtpm_tpm2_passphrase_fd(GBytes *key, int *out, vtpm_error *err);

/* Start swtpm on the TPM 2.0 state directory @dir (tpm2-00.permall; an
 * empty one makes a new TPM), keyed with the passphrase @key (NULL: a
 * plaintext state), logging to @log (NULL: nowhere).  Internal when swtpm
 * cannot be run. */
int vtpm_tpm2_start(const char *dir, GBytes *key, const char *log, vtpm_tpm2 **out,
                    vtpm_error *err);
/* TPM2_Shutdown(CLEAR), then swtpm's CMD_SHUTDOWN: the state is on disk
 * and swtpm has exited.  Frees @t whatever happens. */
int vtpm_tpm2_stop(vtpm_tpm2 *t, vtpm_error *err);
/* Kill swtpm (when still running) and free: after a failure. */
void vtpm_tpm2_free(vtpm_tpm2 *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_tpm2, vtpm_tpm2_free)

/* What swtpm says the TPM is (CMD_GET_INFO), as the arguments
 * swtpm_setup gives a certificate tool: "--tpm-spec-family", "2.0",
 * "--tpm-spec-level", "0", ... "--tpm-version", "id:...". */
int vtpm_tpm2_cert_params(vtpm_tpm2 *t, GPtrArray **out, vtpm_error *err);

/* The public key of persistent object @handle (TPM2_ReadPublic), as PEM
 * (SubjectPublicKeyInfo). */
int vtpm_tpm2_read_public(vtpm_tpm2 *t, uint32_t handle, char **pem, vtpm_error *err);

/* Create the ECC NIST P-256 EK of the TCG's template L-2 (what
 * tpm2_createek -G ecc recreates) and flush it again: its public key as
 * PEM, and as swtpm's certificate tools take it,
 * "x=<hex>,y=<hex>,id=secp256r1". */
int vtpm_tpm2_create_ek_p256(vtpm_tpm2 *t, char **pem, char **ekparam, vtpm_error *err);

/* Define NV index @index with the attributes swtpm_setup gives EK
 * certificates (platform-created, readable by owner and platform, no DA),
 * write @data into it and write-lock it, as swtpm_setup --lock-nvram. */
int vtpm_tpm2_nv_store(vtpm_tpm2 *t, uint32_t index, GBytes *data, vtpm_error *err);

/* The PCR banks the TPM implements, active or not (TPM2_GetCapability,
 * TPM_CAP_PCRS), as bits of vtpm_pcr_bank; banks policy.h has no name for
 * are left out. */
int vtpm_tpm2_pcr_banks(vtpm_tpm2 *t, unsigned *out, vtpm_error *err);

/* The PCR banks this host's swtpm offers: those of a throwaway TPM made in
 * a temporary directory. */
int vtpm_tpm2_probe_pcr_banks(unsigned *out, vtpm_error *err);
