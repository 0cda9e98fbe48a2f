/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvirt secrets holding the key swtpm encrypts an instance's TPM state
 * with.  A domain's <encryption secret='UUID'/> names the secret; libvirt
 * reads its value when it starts swtpm (and swtpm_setup) and hands it over
 * through a pipe (--key pwdfd=N,mode=aes-256-cbc).  vtpmd uses the
 * instance UUID as the secret's UUID and usage name (usage type 'vtpm'),
 * so the secret of an instance is found on every host without a lookup
 * table, and a domain definition moved between hosts names the right one.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"

typedef enum {
    /* Held only in libvirtd's memory, value unreadable through the API:
     * defined right before a start and undefined right after it. */
    VTPM_SECRET_EPHEMERAL,
    /* Stored by libvirtd on the host (host mode).  Readable through the
     * API by a client of the privileged connection, which is how a
     * migration source hands it to the destination. */
    VTPM_SECRET_PERSISTENT,
} vtpm_secret_kind;

/* Define (or redefine) the secret of instance @uuid on @conn with @value.
 * HypervisorError on libvirt failures. */
int vtpm_secret_define(virConnectPtr conn, const char *uuid, vtpm_secret_kind kind,
                       GBytes *value, vtpm_error *err);

/* Undefine it; a missing secret is success. */
int vtpm_secret_undefine(virConnectPtr conn, const char *uuid, vtpm_error *err);

/* Whether @conn has the secret of @uuid. */
int vtpm_secret_exists(virConnectPtr conn, const char *uuid, bool *out, vtpm_error *err);

/* The value of a (persistent, non-private) secret as a wiped-on-free
 * GBytes.  SecretRequired when it does not exist on @conn (@host names the
 * host in the message). */
int vtpm_secret_get(virConnectPtr conn, const char *host, const char *uuid, GBytes **out,
                    vtpm_error *err);

/* Replace the value of the existing secret of @uuid in place (rekey, host
 * mode): unlike vtpm_secret_define there is no moment without a secret,
 * and libvirt replaces the stored value file atomically.  SecretRequired
 * when @conn has no such secret. */
int vtpm_secret_set_value(virConnectPtr conn, const char *uuid, GBytes *value,
                          vtpm_error *err);
