/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "domxml.h"
#include "virt.h"

#define BACKOFF_MIN_US (100 * 1000)
#define BACKOFF_MAX_US (30 * G_USEC_PER_SEC)

struct vtpm_virt {
    char *uri;
    GMutex lock;
    virConnectPtr conn;   /* NULL while disconnected */
    bool lost;            /* a connection existed and died: log once on return */
    gint64 next_try_us;   /* monotonic; no reconnect attempt before */
    gint64 backoff_us;
    unsigned reconnects;
    int closed;           /* set by libvirt's close callback */
};

static void close_cb(virConnectPtr conn, int reason, void *opaque);

/* libvirt's event loop: registered once per process, and run by a thread
 * that lives as long as some vtpm_virt does, so that every thread vtpmd
 * starts is joined before it exits. */
static GOnce event_once = G_ONCE_INIT;
static GMutex event_lock;
static unsigned event_users;   /* guarded by event_lock */
static GThread *event_thread;  /* guarded by event_lock */
static gint event_quit;        /* atomic */

static void
silent_error(void *data, virErrorPtr e)
{
    /* Errors are read with virGetLastError and reported by the caller;
     * libvirt's default handler would print them to stderr. */
}

static gpointer
event_loop(gpointer data)
{
    while (!g_atomic_int_get(&event_quit)) {
        if (virEventRunDefaultImpl() < 0)
            g_usleep(100 * 1000);
    }
    return NULL;
}

static gpointer
event_register(gpointer data)
{
    virSetErrorFunc(NULL, silent_error);
    return GINT_TO_POINTER(virEventRegisterDefaultImpl() < 0 ? -1 : 1);
}

static int
event_loop_ref(vtpm_error *err)
{
    g_autoptr(GMutexLocker) l = NULL;
    g_autoptr(GError) gerr = NULL;

    if (GPOINTER_TO_INT(g_once(&event_once, event_register, NULL)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot register libvirt's event loop");
    l = g_mutex_locker_new(&event_lock);
    if (event_users == 0) {
        g_atomic_int_set(&event_quit, 0);
        event_thread = g_thread_try_new("virt-events", event_loop, NULL, &gerr);
        if (!event_thread)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                                  "cannot start libvirt's event loop: %s", gerr->message);
    }
    event_users++;
    return 0;
}

/* A timer that fires at once, only to make virEventRunDefaultImpl()
 * return so that the loop sees event_quit. */
static void
event_wake(int timer, void *opaque)
{
}

static void
event_loop_unref(void)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&event_lock);
    int timer;

    if (--event_users > 0)
        return;
    g_atomic_int_set(&event_quit, 1);
    timer = virEventAddTimeout(0, event_wake, NULL, NULL);
    if (timer < 0) {
        /* Out of memory: the thread cannot be woken, so it is left to die
         * with the process rather than waited for. */
        g_thread_unref(g_steal_pointer(&event_thread));
        return;
    }
    g_thread_join(g_steal_pointer(&event_thread));
    virEventRemoveTimeout(timer);
}

int
vtpm_virt_new(const char *uri, vtpm_virt **out, vtpm_error *err)
{
    vtpm_virt *v;
    int rc;

    if ((rc = event_loop_ref(err)) < 0)
        return rc;
    v = g_new0(vtpm_virt, 1);
    v->uri = g_strdup(uri);
    g_mutex_init(&v->lock);
    v->backoff_us = BACKOFF_MIN_US;
    *out = v;
    return 0;
}

void
vtpm_virt_free(vtpm_virt *v)
{
    if (!v)
        return;
    /* The close callback holds a reference of its own: without dropping
     * it the connection would outlive this close. */
    if (v->conn) {
        virConnectUnregisterCloseCallback(v->conn, close_cb);
        virConnectClose(v->conn);
    }
    g_mutex_clear(&v->lock);
    g_free(v->uri);
    g_free(v);
    /* After the close: the loop's last turn releases the connection's
     * socket watch. */
    event_loop_unref();
}

const char *
vtpm_virt_uri(const vtpm_virt *v)
{
    return v->uri;
}

unsigned
vtpm_virt_reconnects(const vtpm_virt *v)
{
    return g_atomic_int_get(&v->reconnects);
}

/* Runs on libvirt's event thread while libvirt holds its close-callback
 * lock: only raise a flag; the next vtpm_virt_conn() cleans up (taking
 * our lock here could deadlock against an unregister under our lock). */
static void
close_cb(virConnectPtr conn, int reason, void *opaque)
{
    vtpm_virt *v = opaque;

    g_atomic_int_set(&v->closed, 1);
}

static void
mark_dead_locked(vtpm_virt *v)
{
    if (!v->conn)
        return;
    g_warning("libvirt connection to %s is dead; will reconnect", v->uri);
    virConnectUnregisterCloseCallback(v->conn, close_cb);
    virConnectClose(v->conn);
    v->conn = NULL;
    v->lost = true;
    v->next_try_us = 0;
    v->backoff_us = BACKOFF_MIN_US;
    g_atomic_int_set(&v->closed, 0);
}

int
vtpm_virt_conn(vtpm_virt *v, virConnectPtr *out, bool *reconnected, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&v->lock);
    gint64 now = g_get_monotonic_time();
    virConnectPtr c;

    if (v->conn && (g_atomic_int_get(&v->closed) || virConnectIsAlive(v->conn) != 1))
        mark_dead_locked(v);
    if (v->conn) {
        virConnectRef(v->conn);
        *out = v->conn;
        if (reconnected)
            *reconnected = false;
        return 0;
    }
    if (now < v->next_try_us)
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                              "libvirt at %s is unavailable; retrying in %" G_GINT64_FORMAT " ms",
                              v->uri, (v->next_try_us - now) / 1000);

    c = virConnectOpen(v->uri);
    if (!c) {
        const char *msg = virGetLastErrorMessage();

        if (v->next_try_us == 0 || v->backoff_us == BACKOFF_MIN_US)
            g_warning("cannot connect to libvirt at %s: %s", v->uri, msg);
        v->next_try_us = now + v->backoff_us;
        v->backoff_us = MIN(v->backoff_us * 2, BACKOFF_MAX_US);
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                              "cannot connect to libvirt at %s: %s", v->uri, msg);
    }
    /* Keepalive lets libvirt notice a dead daemon even while idle. */
    virConnectSetKeepAlive(c, 5, 3);
    virConnectRegisterCloseCallback(c, close_cb, v, NULL);
    if (v->lost) {
        g_message("libvirt connection to %s re-established", v->uri);
        v->reconnects++;
    }
    if (reconnected)
        *reconnected = v->lost;
    v->lost = false;
    v->backoff_us = BACKOFF_MIN_US;
    v->next_try_us = 0;
    v->conn = c;
    virConnectRef(c);
    *out = c;
    return 0;
}

static bool
error_means_dead(const virError *e)
{
    if (!e)
        return false;
    return e->code == VIR_ERR_NO_CONNECT || e->code == VIR_ERR_INVALID_CONN ||
           (e->domain == VIR_FROM_RPC &&
            (e->code == VIR_ERR_SYSTEM_ERROR || e->code == VIR_ERR_RPC ||
             e->code == VIR_ERR_INTERNAL_ERROR));
}

int
vtpm_virt_error(vtpm_virt *v, vtpm_fault code, vtpm_error *err, const char *fmt, ...)
{
    const virError *e = virGetLastError();
    /* Copied first: closing the dead connection calls into libvirt, which
     * resets this thread's error (and the fault said "unknown libvirt
     * error" for every call cut by a libvirtd crash). */
    g_autofree char *msg = g_strdup(e && e->message ? e->message : "unknown libvirt error");
    char what[VTPM_ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (v && error_means_dead(e)) {
        g_mutex_lock(&v->lock);
        mark_dead_locked(v);
        g_mutex_unlock(&v->lock);
        code = VTPM_FAULT_HYPERVISOR_ERROR;
    }
    return vtpm_error_set(err, code, "%s: %s", what, msg);
}

int
vtpm_virt_lookup(vtpm_virt *v, virConnectPtr conn, const char *uuid, virDomainPtr *out,
                 vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    virDomainPtr dom = virDomainLookupByUUIDString(conn, uuid);

    if (!dom) {
        const virError *e = virGetLastError();

        if (e && e->code == VIR_ERR_NO_DOMAIN) {
            virResetLastError();
            *out = NULL;
            return 0;
        }
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "looking up domain %s", uuid);
    }
    *out = dom;
    return 0;
}

int
vtpm_virt_state(vtpm_virt *v, virDomainPtr dom, int *state, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    int st, reason;

    if (virDomainGetState(dom, &st, &reason, 0) < 0)
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    *state = st;
    return 0;
}

#define VTPM_METADATA_NS VTPM_DOMXML_NS

int
vtpm_virt_get_metadata(vtpm_virt *v, virDomainPtr dom, char **out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    char *md = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VTPM_METADATA_NS,
                                    VIR_DOMAIN_AFFECT_CONFIG);

    if (!md) {
        const virError *e = virGetLastError();

        if (e && e->code == VIR_ERR_NO_DOMAIN_METADATA) {
            virResetLastError();
            *out = NULL;
            return 0;
        }
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain metadata");
    }
    *out = g_strdup(md);
    free(md);
    return 0;
}

int
vtpm_virt_stop(vtpm_virt *v, virDomainPtr dom, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    int active = virDomainIsActive(dom);

    if (active < 0)
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    if (!active)
        return 0;
    if (virDomainDestroy(dom) < 0) {
        /* It may have stopped on its own in between. */
        if (virDomainIsActive(dom) == 0) {
            virResetLastError();
            return 0;
        }
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "stopping domain");
    }
    return 0;
}

int
vtpm_virt_shutdown(vtpm_virt *v, virDomainPtr dom, unsigned timeout_s, bool *hard,
                   vtpm_error *err)
{
    /* Waiting for the guest to power off counts too: it is the
     * hypervisor's time, not vtpmd's. */
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    gint64 end;
    int active = virDomainIsActive(dom);

    if (hard)
        *hard = false;
    if (active < 0)
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    if (!active)
        return 0;
    if (timeout_s > 0 && virDomainShutdownFlags(dom, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) == 0) {
        end = g_get_monotonic_time() + (gint64)timeout_s * G_USEC_PER_SEC;
        while (g_get_monotonic_time() < end) {
            active = virDomainIsActive(dom);
            if (active == 0)
                return 0;
            if (active < 0)
                return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
            g_usleep(200 * 1000);
        }
    } else {
        virResetLastError();
    }
    if (hard)
        *hard = true;
    return vtpm_virt_stop(v, dom, err);
}

static bool
unsupported_flags(const virError *e)
{
    return e && (e->code == VIR_ERR_INVALID_ARG || e->code == VIR_ERR_NO_SUPPORT) && e->message &&
           strstr(e->message, "unsupported flags");
}

/* A TPM or NVRAM that undefining could delete; true also when the XML
 * cannot be read (then the caller keeps the error). */
static bool
has_state(virDomainPtr dom)
{
    g_autofree char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);

    return !xml || strstr(xml, "<tpm") || strstr(xml, "<nvram");
}

int
vtpm_virt_start(vtpm_virt *v, virDomainPtr dom, unsigned flags, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);

    if (virDomainCreateWithFlags(dom, flags) == 0)
        return 0;
    /* A driver that knows no RESET_NVRAM (libvirt's test driver, libvirt
     * before 8.1) keeps no store it could reset, or one vtpmd cannot
     * name: started as it is. */
    if ((flags & VIR_DOMAIN_START_RESET_NVRAM) && unsupported_flags(virGetLastError())) {
        virResetLastError();
        if (virDomainCreateWithFlags(dom, flags & ~(unsigned)VIR_DOMAIN_START_RESET_NVRAM) == 0)
            return 0;
    }
    return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "starting domain");
}

int
vtpm_virt_undefine(vtpm_virt *v, virDomainPtr dom, bool keep_tpm, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_LIBVIRT);
    unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                     VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE_NVRAM;

    /* The variable store goes with the TPM state: a UEFI instance's lives
     * in the state dir, and a kept TPM without it would boot with another
     * Secure Boot configuration in PCR 7. */
    flags |= keep_tpm ? VIR_DOMAIN_UNDEFINE_KEEP_TPM : VIR_DOMAIN_UNDEFINE_TPM;
    if (keep_tpm)
        flags = (flags & ~(unsigned)VIR_DOMAIN_UNDEFINE_NVRAM) | VIR_DOMAIN_UNDEFINE_KEEP_NVRAM;
    if (virDomainUndefineFlags(dom, flags) == 0)
        return 0;
    /* A driver that knows no TPM, NVRAM or checkpoint flags (libvirt's test
     * driver, which vtpm-fanout's workers use) refuses them; for a domain
     * with neither a TPM nor NVRAM they change nothing, so undefine it
     * without.  Never for one with a TPM: without KEEP_TPM libvirt could
     * delete its state. */
    if (unsupported_flags(virGetLastError()) && !has_state(dom)) {
        virResetLastError();
        flags &= ~(unsigned)(VIR_DOMAIN_UNDEFINE_KEEP_TPM | VIR_DOMAIN_UNDEFINE_TPM |
                             VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA |
                             VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_KEEP_NVRAM);
        if (virDomainUndefineFlags(dom, flags) == 0)
            return 0;
    }
    return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "undefining domain");
}
