/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Deployment keys: the `deployment` secret mode wraps each instance's
 * random TPM secret with a key every host of the deployment holds
 * ([vtpm] deployment_key_file), so that the wrapped secret can travel with
 * the state archive and any host with the key can start the TPM.
 *
 * Wrapping is AES-256-GCM (GnuTLS) with a fresh random 96-bit nonce per
 * wrap and associated data binding the ciphertext to the instance UUID and
 * the key id, so a wrapped secret cannot be moved to another instance.  The
 * text form is "v1:<key id>:<base64(nonce || ciphertext || tag)>"; the key
 * id (16 hex digits, a hash of the key) tells which key unwraps it, so a
 * second key ([vtpm] previous_deployment_key_file) can be accepted for
 * unwrapping while the first one wraps (rotation).
 *
 * Key files hold exactly 32 bytes, raw or as 64 hex digits (one trailing
 * newline allowed), and must be regular files of mode 0600 (or 0400).
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "vtpm/error.h"

#define VTPM_KEYWRAP_KEY_BYTES 32
#define VTPM_KEYWRAP_ID_CHARS 16
/* Longest wrapped text accepted (a 64-byte secret wraps to ~130). */
#define VTPM_KEYWRAP_MAX_TEXT 1024

typedef struct vtpm_keyring vtpm_keyring;

/* Load @current (wraps and unwraps) and optionally @previous (unwraps
 * only).  BadRequest naming the file and the problem (mode, size,
 * format).  @current NULL gives a keyring that can do nothing (every call
 * fails with TPMUnsupported). */
int vtpm_keyring_load(const char *current, const char *previous, vtpm_keyring **out,
                      vtpm_error *err);
void vtpm_keyring_free(vtpm_keyring *kr);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_keyring, vtpm_keyring_free)

/* Whether a current key is loaded. */
bool vtpm_keyring_ready(const vtpm_keyring *kr);
/* Id of the current key ("" when none). */
const char *vtpm_keyring_current_id(const vtpm_keyring *kr);
/* Id of the previous key ("" when none). */
const char *vtpm_keyring_previous_id(const vtpm_keyring *kr);
/* Whether @wrapped (a wrapped text) names key @id: a host that holds @id
 * can unwrap it.  A live migration source asks before it hands a guest to
 * a destination that could not start it again. */
bool vtpm_keyring_wrapped_with(const char *wrapped, const char *id);

/* Wrap @secret for instance @uuid under the current key. */
int vtpm_keyring_wrap(const vtpm_keyring *kr, const char *uuid, GBytes *secret, char **out,
                      vtpm_error *err);

/* Unwrap.  SecretInvalid when the text names a key this host does not have
 * (naming both ids), StateIntegrity when it is malformed or does not
 * authenticate (tampered, or belongs to another instance).  *@out is a
 * wiped-on-free GBytes; *@current (optional) tells whether the wrapping key
 * is the current one (else the caller should re-wrap). */
int vtpm_keyring_unwrap(const vtpm_keyring *kr, const char *uuid, const char *wrapped,
                        GBytes **out, bool *current, vtpm_error *err);

/* A new random TPM secret (64 hex characters of 256 random bits): text,
 * because libvirt hands it to swtpm as a passphrase. */
int vtpm_keyring_random_secret(GBytes **out, vtpm_error *err);
