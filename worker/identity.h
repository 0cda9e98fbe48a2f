/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A vTPM's identity: its endorsement keys (EKs), their certificates and
 * the CA that signed them, recorded when vtpmd makes the TPM (worker/ek.h)
 * so that it can be answered later on any host with no swtpm, no key and
 * no secret (get_vtpm_identity).  A record never changes: the EKs derive
 * from the TPM's endorsement seed, which only a new TPM has anew.
 *
 * Text form, as the domain metadata carries it (domxml.h): "v1:" and the
 * standard base64 of one msgpack map, the get_vtpm_identity result
 * {version: "2.0" | "1.2", ek: [{alg, public_pem, cert_pem}],
 *  ca: {subject, sha256}} (docs/protocol.md).
 */
#pragma once

#include <stddef.h>
#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "policy.h"

typedef enum {
    VTPM_EK_RSA2048 = 0,   /* "rsa2048": TCG template L-1, cert at NV 0x01c00002 */
    VTPM_EK_ECC_NIST_P256, /* "ecc-nist-p256": TCG template L-2, cert at NV 0x01c0000a */
    VTPM_EK__COUNT
} vtpm_ek_alg;

typedef struct {
    vtpm_ek_alg alg;
    char *public_pem; /* SubjectPublicKeyInfo, "-----BEGIN PUBLIC KEY-----" */
    char *cert_pem;   /* X.509, "-----BEGIN CERTIFICATE-----" */
} vtpm_identity_ek;

typedef struct {
    vtpm_version version;
    size_t n_ek;                       /* in the order they were added */
    vtpm_identity_ek ek[VTPM_EK__COUNT];
    char *ca_subject;                  /* RFC 4514 */
    char *ca_sha256;                   /* of the CA certificate's DER, lower-case hex */
} vtpm_identity;

const char *vtpm_ek_alg_str(vtpm_ek_alg a);
int vtpm_ek_alg_parse(const char *s);

vtpm_identity *vtpm_identity_new(vtpm_version version, const char *ca_subject,
                                 const char *ca_sha256);
void vtpm_identity_free(vtpm_identity *id);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_identity, vtpm_identity_free)

/* Add the EK certified by @cert_der.  @pub_pem is the key as the TPM
 * itself reported it, which the certificate must certify (Internal when
 * it does not); NULL takes the certificate's key (a TPM 1.2, whose EK is
 * not read back).  The algorithm is the key's: RSA 2048 or ECC NIST P-256,
 * anything else, or a second EK of one algorithm, is Internal. */
int vtpm_identity_add_ek(vtpm_identity *id, const char *pub_pem, GBytes *cert_der,
                         vtpm_error *err);

/* The text form; vtpm_identity_decode reads it back, StateIntegrity when
 * it is not a well-formed record (naming what is wrong). */
char *vtpm_identity_encode(const vtpm_identity *id);
int vtpm_identity_decode(const char *text, vtpm_identity **out, vtpm_error *err);
/* The get_vtpm_identity result map, and reading one back (a client's
 * side: BadRequest naming what is wrong, "identity.ek[1].alg: ..."). */
void vtpm_identity_pack(const vtpm_identity *id, msgpack_packer *pk);
int vtpm_identity_read(const msgpack_object *map, vtpm_identity **out, vtpm_error *err);

/* What a tenant checks of EK @i (vtpmctl identity --verify): its
 * certificate chains to a CA certificate of @ca_pem (PEM, one or more), it
 * certifies exactly the record's public key and, for a TPM 2.0, names
 * instance @uuid as its subject CN.  0 when it holds; -1 with *why.  A TPM
 * 1.2's certificate is accepted signed with SHA-1, as swtpm_cert signs it;
 * GnuTLS refuses SHA-1 otherwise. */
int vtpm_identity_verify_ek(const vtpm_identity *id, size_t i, const char *uuid, GBytes *ca_pem,
                            char **why);

/* The subject (RFC 4514) and sha256 of the DER of a CA certificate, as a
 * record names its CA.  Internal when @ca_der is no certificate. */
int vtpm_identity_describe_ca(GBytes *ca_der, char **subject, char **sha256, vtpm_error *err);
