/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The libvirt side: one shared connection (libvirt connections are
 * thread-safe) that is re-opened with capped exponential backoff when
 * libvirtd goes away, and the domain operations the handlers need, each
 * turning libvirt's thread-local error into a vtpm_error.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <libvirt/libvirt.h>

#include "vtpm/error.h"
#include "timing.h"

typedef struct vtpm_virt vtpm_virt;

/* g_autoptr for libvirt's handles, which its public API does not offer:
 * one cleanup path instead of an epilogue per handler. */
static inline void
vtpm_virt_domain_release(virDomain *dom)
{
    if (dom)
        VTPM_LV_VOID(virDomainFree(dom));
}

static inline void
vtpm_virt_conn_release(virConnect *conn)
{
    /* Closing a remote connection is a round trip. */
    if (conn)
        VTPM_LV_VOID(virConnectClose(conn));
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, vtpm_virt_domain_release)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virConnect, vtpm_virt_conn_release)

/* Opens nothing yet; the first vtpm_virt_conn() connects.  libvirt's event
 * loop (keepalive needs it) runs on a thread of its own while any
 * vtpm_virt exists: the last vtpm_virt_free() closes the connection, stops
 * that thread and joins it.  Every connection opened elsewhere must be
 * closed before then. */
int vtpm_virt_new(const char *uri, vtpm_virt **out, vtpm_error *err);
void vtpm_virt_free(vtpm_virt *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_virt, vtpm_virt_free)

const char *vtpm_virt_uri(const vtpm_virt *v);

/*
 * A referenced connection (release with virConnectClose).  Reconnects when
 * the previous one died, at most once per backoff interval (100 ms doubling
 * to 30 s); while libvirtd stays away this fails with HypervisorError
 * (retryable).  Each transition (lost / back) is logged once.
 * @reconnected (optional) is set when this call established a new
 * connection after a loss, so the caller can refresh derived data.
 */
int vtpm_virt_conn(vtpm_virt *v, virConnectPtr *out, bool *reconnected, vtpm_error *err);

/* How many times the connection was re-established (metrics). */
unsigned vtpm_virt_reconnects(const vtpm_virt *v);

/* Fill @err from libvirt's last error: "what: libvirt message".  If the
 * error says the connection is gone, mark it dead so the next
 * vtpm_virt_conn() reconnects.  Returns -(int)code. */
int vtpm_virt_error(vtpm_virt *v, vtpm_fault code, vtpm_error *err, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* Domain by instance UUID; *out NULL (and 0 returned) when there is none. */
int vtpm_virt_lookup(vtpm_virt *v, virConnectPtr conn, const char *uuid, virDomainPtr *out,
                     vtpm_error *err);

/* Whether a domain runs (active) and its state. */
int vtpm_virt_state(vtpm_virt *v, virDomainPtr dom, int *state, vtpm_error *err);

/* Our metadata element of the domain (the <vtpmd:instance> text), NULL if
 * absent. */
int vtpm_virt_get_metadata(vtpm_virt *v, virDomainPtr dom, char **out, vtpm_error *err);

/* Hard stop (virDomainDestroy) if active; no-op when shut off. */
int vtpm_virt_stop(vtpm_virt *v, virDomainPtr dom, vtpm_error *err);

/* ACPI shutdown, then a hard stop after @timeout_s seconds (as Nova's clean
 * shutdown).  *hard (optional) tells whether the fallback was needed. */
int vtpm_virt_shutdown(vtpm_virt *v, virDomainPtr dom, unsigned timeout_s, bool *hard,
                       vtpm_error *err);

/* Start (virDomainCreateWithFlags).  VIR_DOMAIN_START_RESET_NVRAM is
 * dropped for a driver that does not know it. */
int vtpm_virt_start(vtpm_virt *v, virDomainPtr dom, unsigned flags, vtpm_error *err);

/* Undefine; @keep_tpm chooses VIR_DOMAIN_UNDEFINE_KEEP_TPM and _KEEP_NVRAM
 * over VIR_DOMAIN_UNDEFINE_TPM and _NVRAM (a plain undefine would delete the
 * TPM state, or refuse a domain with a UEFI variable store). */
int vtpm_virt_undefine(vtpm_virt *v, virDomainPtr dom, bool keep_tpm, vtpm_error *err);
