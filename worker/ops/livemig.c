/* SPDX-License-Identifier: Apache-2.0 */
/* Live migration (ops/livemig.h). */
#include <string.h>
#include <sys/stat.h>

#include <libvirt/virterror.h>

#include "fsutil.h"
#include "inject.h"
#include "keywrap.h"
#include "livejob.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "ops/livemig.h"
#include "ops/state.h"
#include "secret.h"

/* How long live_migration_abort waits for the migration it stops, and a
 * redelivered live_migration for a job libvirt is still winding down (the
 * one a killed vtpmd had started: libvirt cancels it when that client's
 * connection closes). */
#define ABORT_WAIT_S 120
#define JOB_WAIT_S 60
#define JOB_POLL_US (200 * 1000)
/* How long an orphaned incoming domain on the destination gets to vanish
 * by itself (libvirt's clean-up of a closed connection is immediate). */
#define ORPHAN_WAIT_S 5

/* The source's generation record travels in the migrated domain's live
 * definition, in a metadata element of its own: never in the persistent
 * definition, never in vtpmd's instance element. */
#define GEN_NS "https://vtpmd.invalid/xmlns/live-migration/1"
#define GEN_KEY "vtpmdlm"

/* Bounds of the optional arguments of live_migration. */
#define MAX_DOWNTIME_MS_MAX 600000
#define TIMEOUT_S_MAX 86400
#define DEPLOYMENT_KEYS_MAX 8

/* ---- where a guest is -------------------------------------------------------- */

/* What one host's libvirt says about the guest. */
typedef enum {
    GUEST_NONE,      /* no domain */
    GUEST_OFF,       /* defined, not running */
    GUEST_LEFT,      /* shut off by a migration away from here that completed */
    GUEST_MIGRATING, /* in transit: starting up to receive a migration, receiving one, or
                        stopped at the end of one */
    GUEST_RUNS,      /* running (or paused by its user): the guest is here */
} guest_state;

/* @v: the vtpm_virt of @dom's connection (marked dead on a lost
 * connection), NULL for another host's. */
static int
guest_state_of(vtpm_virt *v, virDomainPtr dom, guest_state *out, vtpm_error *err)
{
    int st = VIR_DOMAIN_NOSTATE, reason = 0;

    if (!dom) {
        *out = GUEST_NONE;
        return 0;
    }
    if (VTPM_LV(virDomainGetState(dom, &st, &reason, 0)) < 0)
        return vtpm_virt_error(v, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    switch (st) {
    case VIR_DOMAIN_SHUTOFF:
        *out = reason == VIR_DOMAIN_SHUTOFF_MIGRATED ? GUEST_LEFT : GUEST_OFF;
        break;
    case VIR_DOMAIN_SHUTDOWN:
    case VIR_DOMAIN_CRASHED:
        *out = GUEST_OFF;
        break;
    case VIR_DOMAIN_PAUSED:
        *out = reason == VIR_DOMAIN_PAUSED_MIGRATION || reason == VIR_DOMAIN_PAUSED_STARTING_UP ||
                       reason == VIR_DOMAIN_PAUSED_POSTCOPY ||
                       reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
                   ? GUEST_MIGRATING
                   : GUEST_RUNS;
        break;
    case VIR_DOMAIN_NOSTATE:
        *out = GUEST_MIGRATING;
        break;
    default:
        *out = GUEST_RUNS;
        break;
    }
    return 0;
}

static const char *
guest_state_str(guest_state s)
{
    static const char *const names[] = {
        [GUEST_NONE] = "no domain",
        [GUEST_OFF] = "shut off",
        [GUEST_LEFT] = "shut off (migrated away)",
        [GUEST_MIGRATING] = "in transit (paused for a migration)",
        [GUEST_RUNS] = "running",
    };

    return names[s];
}

/* A domain's job left by a killed vtpmd ends within seconds (libvirt
 * cancels a migration whose client went away): wait for that before
 * deciding anything.  A domain libvirt cannot say about has none. */
static int
wait_no_job(virDomainPtr dom, const char *uuid, const char *host, vtpm_error *err)
{
    gint64 end = g_get_monotonic_time() + JOB_WAIT_S * G_USEC_PER_SEC;
    int active;

    while ((active = vtpm_livejob_active(dom)) > 0) {
        if (g_get_monotonic_time() > end)
            return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                                  "instance %s still has a libvirt job on host %s after %d s",
                                  uuid, host, JOB_WAIT_S);
        g_usleep(JOB_POLL_US);
    }
    if (active < 0)
        virResetLastError();
    return 0;
}

/* The guest's domain on both hosts of a live migration. */
typedef struct {
    virDomainPtr here, there; /* NULL: no domain */
    guest_state at_here, at_there;
} lm_place;

static void
lm_place_clear(lm_place *p)
{
    g_clear_pointer(&p->here, vtpm_virt_domain_release);
    g_clear_pointer(&p->there, vtpm_virt_domain_release);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(lm_place, lm_place_clear)

static int
locate(vtpm_worker *w, virConnectPtr conn, virConnectPtr dconn, const char *uuid,
       lm_place *p, vtpm_error *err)
{
    int rc;

    lm_place_clear(p);
    if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &p->here, err)) < 0 ||
        (rc = vtpm_virt_lookup(NULL, dconn, uuid, &p->there, err)) < 0 ||
        (p->here && (rc = wait_no_job(p->here, uuid, w->cfg->worker.host, err)) < 0) ||
        (rc = guest_state_of(w->virt, p->here, &p->at_here, err)) < 0 ||
        (rc = guest_state_of(NULL, p->there, &p->at_there, err)) < 0)
        return rc;
    return 0;
}

/* ---- arguments ------------------------------------------------------------------ */

/* An optional unsigned argument within @lo..@hi (@dflt when absent). */
static int
arg_uint(const vtpm_request *req, const char *key, uint64_t lo, uint64_t hi, uint64_t dflt,
         uint64_t *out, vtpm_error *err)
{
    uint64_t v = dflt;
    int rc = vtpm_proto_get_uint(&req->args, "args", key, false, dflt, &v, err);

    if (rc < 0)
        return rc;
    if (vtpm_proto_map_get(&req->args, key) && (v < lo || v > hi))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.%s: %" G_GUINT64_FORMAT " is out of range %" G_GUINT64_FORMAT
                              "..%" G_GUINT64_FORMAT,
                              key, v, lo, hi);
    *out = v;
    return 0;
}

/* args.migrate_data.deployment_keys: NULL when absent. */
static int
arg_key_ids(const msgpack_object *md, GPtrArray **out, vtpm_error *err)
{
    const msgpack_object *o = vtpm_proto_map_get(md, "deployment_keys");
    g_autoptr(GPtrArray) ids = NULL;

    *out = NULL;
    if (!o)
        return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > DEPLOYMENT_KEYS_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.migrate_data.deployment_keys: expected an array of at most "
                              "%d key ids",
                              DEPLOYMENT_KEYS_MAX);
    ids = g_ptr_array_new_with_free_func(g_free);
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        g_autofree char *id = NULL;

        if (e->type == MSGPACK_OBJECT_STR && e->via.str.size == VTPM_KEYWRAP_ID_CHARS)
            id = g_strndup(e->via.str.ptr, e->via.str.size);
        if (!id || !vtpm_proto_is_lower_hex(id, VTPM_KEYWRAP_ID_CHARS))
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "args.migrate_data.deployment_keys[%u]: expected a key id of "
                                  "%d lower-case hex digits",
                                  i, VTPM_KEYWRAP_ID_CHARS);
        g_ptr_array_add(ids, g_steal_pointer(&id));
    }
    *out = g_steal_pointer(&ids);
    return 0;
}

/* live_migration's arguments. */
typedef struct {
    char uuid[37];
    GBytes *secret;       /* args.instance.vtpm.secret: user mode, optional */
    char *dest;           /* args.dest_host */
    char *inbound;        /* args.migrate_data.inbound_addr */
    GPtrArray *dest_keys; /* args.migrate_data.deployment_keys; NULL: not given */
    uint64_t max_downtime_ms; /* 0: libvirt's */
    uint64_t timeout_s;       /* 0: none */
} live_args;

static void
live_args_clear(live_args *a)
{
    g_clear_pointer(&a->secret, g_bytes_unref);
    g_clear_pointer(&a->dest, g_free);
    g_clear_pointer(&a->inbound, g_free);
    g_clear_pointer(&a->dest_keys, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(live_args, live_args_clear)

/* args.migrate_data: pre_live_migration's reply on the destination. */
static int
live_args_migrate_data(const vtpm_request *req, live_args *a, vtpm_error *err)
{
    const msgpack_object *md = NULL;
    g_autofree char *md_dest = NULL;
    int rc;

    if ((rc = vtpm_proto_get_map(&req->args, "args", "migrate_data", true, &md, err)) < 0 ||
        (rc = vtpm_proto_get_str(md, "args.migrate_data", "inbound_addr", true, 255, &a->inbound,
                                 err)) < 0 ||
        (rc = vtpm_proto_check_host(a->inbound, "args.migrate_data.inbound_addr", err)) < 0 ||
        (rc = vtpm_proto_get_str(md, "args.migrate_data", "dest_host", false, 255, &md_dest,
                                 err)) < 0 ||
        (rc = arg_key_ids(md, &a->dest_keys, err)) < 0)
        return rc;
    if (md_dest && strcmp(md_dest, a->dest) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.migrate_data.dest_host: the migrate_data is host %s's, not "
                              "args.dest_host %s's (pass pre_live_migration's reply unchanged)",
                              md_dest, a->dest);
    return 0;
}

static int
live_args_get(vtpm_worker *w, const vtpm_request *req, live_args *a, vtpm_error *err)
{
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, a->uuid, err)) < 0 ||
        (rc = vtpm_ops_arg_secret(req, &a->secret, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "dest_host", true, 255, &a->dest, err)) < 0 ||
        (rc = vtpm_proto_check_host(a->dest, "args.dest_host", err)) < 0)
        return rc;
    if (strcmp(a->dest, w->cfg->worker.host) == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.dest_host: %s is this host; a live migration goes to "
                              "another one",
                              a->dest);
    if ((rc = live_args_migrate_data(req, a, err)) < 0 ||
        (rc = arg_uint(req, "max_downtime_ms", 1, MAX_DOWNTIME_MS_MAX, 0, &a->max_downtime_ms,
                       err)) < 0 ||
        (rc = arg_uint(req, "timeout_s", 0, TIMEOUT_S_MAX, w->cfg->libvirt.live_migration_timeout,
                       &a->timeout_s, err)) < 0)
        return rc;
    return 0;
}

/* ---- check_can_live_migrate_destination (destination) --------------------------- */

static bool
dir_empty(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);

    return d && !g_dir_read_name(d);
}

/* A live migration needs a destination without a domain of the instance:
 * it defines one there. */
static int
check_no_domain(vtpm_worker *w, virConnectPtr conn, const char *uuid, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    g_autoptr(virDomain) dom = NULL;
    guest_state st;
    int rc;

    if ((rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0 ||
        (rc = guest_state_of(w->virt, dom, &st, err)) < 0)
        return rc;
    if (dom)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s already has a domain on host %s (%s); a live "
                              "migration needs a destination without one "
                              "(rollback_live_migration_at_destination removes a failed one's)",
                              uuid, w->cfg->worker.host, guest_state_str(st));
    /* The incoming TPM would overwrite it.  An empty one is what
     * pre_live_migration makes for a UEFI guest's store. */
    if (vtpm_fs_is_dir(state_dir) && !dir_empty(state_dir))
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "host %s holds a TPM state of instance %s (%s) that a live "
                              "migration here would overwrite (kept by destroy, or left by a "
                              "failed migration: rollback_live_migration_at_destination removes "
                              "that)",
                              w->cfg->worker.host, uuid, state_dir);
    return 0;
}

int
vtpm_op_check_can_live_migrate_destination(vtpm_worker *w, const vtpm_request *req,
                                           msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(virConnect) conn = NULL;
    int rc;

    /* What a spawn here would check: the vTPM resolves, this host offers
     * its version, model and custody mode, the boot paths are here. */
    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_ops_prepare(w, inst, &d, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = check_no_domain(w, conn, inst->uuid, err)) < 0)
        return rc;
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_bool(result, "ok", true);
    return 0;
}

/* ---- pre_live_migration (destination) --------------------------------------------- */

/* The wrapped secret in the metadata of the instance's domain on @host. */
static int
fetch_wrapped(vtpm_worker *w, const char *host, const char *uuid, char **out, vtpm_error *err)
{
    g_autoptr(virConnect) sconn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *md = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };
    int rc;

    if ((rc = vtpm_ops_host_conn(w, host, &sconn, err)) < 0 ||
        (rc = vtpm_virt_lookup(NULL, sconn, uuid, &dom, err)) < 0 ||
        (dom && (rc = vtpm_virt_get_metadata(NULL, dom, &md, err)) < 0) ||
        (md && (rc = vtpm_domxml_parse_metadata(md, &m, err)) < 0))
        return rc;
    if (!m.wrapped_secret)
        return vtpm_error_set(err, VTPM_FAULT_STATE_NOT_FOUND,
                              "host %s has no domain of instance %s with a wrapped TPM secret",
                              host, uuid);
    *out = g_steal_pointer(&m.wrapped_secret);
    return 0;
}

/* The key of @inst's TPM in this host's libvirt, the mode's way, before
 * the incoming QEMU starts swtpm with it (docs/security.md).  @source:
 * args.source_host, NULL when not given (then live_migration on the source
 * hands over what only the source has). */
static int
pre_key(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
        const vtpm_device *dev, const char *source, vtpm_error *err)
{
    g_autofree char *wrapped = NULL;
    g_autoptr(GBytes) key = NULL;
    bool fetched = false;
    int rc;

    if (dev->version == VTPM_VERSION_NONE)
        return 0;
    switch (dev->secret_security) {
    case VTPM_SECRET_USER:
        if (!inst->secret) {
            if (w->cfg->vtpm.allow_unencrypted)
                return 0;
            return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                                  "instance %s has an encrypted TPM in secret security mode "
                                  "'user': args.instance.vtpm.secret is required to receive it",
                                  inst->uuid);
        }
        return vtpm_secret_define(conn, inst->uuid, VTPM_SECRET_EPHEMERAL, inst->secret, err);
    case VTPM_SECRET_HOST:
        if (!source)
            return 0;
        return vtpm_custody_ensure_host_secret(w, conn, inst->uuid, source, &fetched, err);
    case VTPM_SECRET_DEPLOYMENT:
        if (!source)
            return 0;
        if ((rc = fetch_wrapped(w, source, inst->uuid, &wrapped, err)) < 0 ||
            (rc = vtpm_keyring_unwrap(w->keys, inst->uuid, wrapped, &key, NULL, err)) < 0)
            return rc;
        return vtpm_secret_define(conn, inst->uuid, VTPM_SECRET_EPHEMERAL, key, err);
    default:
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown secret security %d",
                              (int)dev->secret_security);
    }
}

/* A UEFI guest's store lives in its state dir, where the incoming QEMU
 * needs it before swtpm would make the dir: libvirt copies the template
 * there for QEMU to open, which the stream's flash contents then replace
 * (refuse_paused_uefi).  As a start here makes it (vtpm_ops_store_dir);
 * rollback_live_migration_at_destination removes it with the state. */
static int
pre_store_dir(vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d, vtpm_error *err)
{
    g_autofree char *dir = NULL;

    if (!d->nvram)
        return 0;
    dir = vtpm_ops_state_dir(w, uuid);
    return vtpm_fs_mkdirs(dir, 0711, err);
}

/* The migrate_data: where the source's QEMU sends the stream, and in
 * deployment mode which keys this host holds (the source refuses a guest
 * this host could not start again). */
static void
pack_migrate_data(msgpack_packer *pk, vtpm_worker *w, const vtpm_device *dev)
{
    const char *inbound = w->cfg->libvirt.live_migration_inbound_addr;
    const char *ids[2] = { vtpm_keyring_current_id(w->keys), vtpm_keyring_previous_id(w->keys) };
    bool keys = dev->version != VTPM_VERSION_NONE &&
                dev->secret_security == VTPM_SECRET_DEPLOYMENT;
    unsigned n = 0;

    msgpack_pack_map(pk, keys ? 3 : 2);
    vtpm_pack_kv_str(pk, "dest_host", w->cfg->worker.host);
    vtpm_pack_kv_str(pk, "inbound_addr", inbound ? inbound : w->cfg->worker.host);
    if (!keys)
        return;
    for (size_t i = 0; i < G_N_ELEMENTS(ids); i++)
        n += ids[i][0] != '\0';
    vtpm_pack_str(pk, "deployment_keys");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < G_N_ELEMENTS(ids); i++) {
        if (ids[i][0])
            vtpm_pack_str(pk, ids[i]);
    }
}

int
vtpm_op_pre_live_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                           vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autofree char *source = NULL;
    int rc;

    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_proto_get_str(&req->args, "args", "source_host", false, 255, &source, err)) <
            0 ||
        (source && (rc = vtpm_proto_check_host(source, "args.source_host", err)) < 0))
        return rc;
    if (source && strcmp(source, w->cfg->worker.host) == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "args.source_host: %s is this host; a live migration comes from "
                              "another one",
                              source);
    if ((rc = vtpm_ops_prepare(w, inst, &d, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = check_no_domain(w, conn, inst->uuid, err)) < 0 ||
        (rc = pre_key(w, conn, inst, &d.dev, source, err)) < 0 ||
        (rc = pre_store_dir(w, inst->uuid, &d, err)) < 0)
        return rc;
    vtpm_inject("pre_live_migration.after_key");
    pack_migrate_data(result, w, &d.dev);
    return 0;
}

/* ---- live_migration (source) -------------------------------------------------------- */

/* The destination's libvirtd through [libvirt] live_migration_uri_template
 * (by default the cold migration's template).  vtpmd drives the migration
 * itself (libvirt's managed direct migration), so any URI works, local
 * sockets included, where peer-to-peer mode needs one with a server name;
 * and a vtpmd that dies mid-stream takes the migration with it (libvirt
 * cancels it when this connection closes) instead of leaving it running
 * unwatched.  Keepalive notices a destination that vanishes mid-stream in
 * seconds rather than at TCP's timeout. */
static int
dest_conn(vtpm_worker *w, const char *dest, virConnectPtr *out, vtpm_error *err)
{
    const char *tmpl = w->cfg->libvirt.live_migration_uri_template;
    int rc = vtpm_ops_host_conn_via(
        w, dest, tmpl ? tmpl : w->cfg->libvirt.migration_uri_template, out, err);

    if (rc == 0 && VTPM_LV(virConnectSetKeepAlive(*out, 5, 3)) < 0)
        virResetLastError();
    return rc;
}

/* Deployment mode: the destination said which keys it holds; a guest
 * whose secret is wrapped under none of them could run there but never
 * start again: refused before anything moves. */
static int
check_dest_keys(const live_args *a, const vtpm_domxml_meta *m, vtpm_error *err)
{
    g_autoptr(GString) held = g_string_new(NULL);

    if (!a->dest_keys)
        return 0;
    for (guint i = 0; i < a->dest_keys->len; i++) {
        const char *id = g_ptr_array_index(a->dest_keys, i);

        if (vtpm_keyring_wrapped_with(m->wrapped_secret, id))
            return 0;
        g_string_append_printf(held, "%s%s", held->len ? ", " : "", id);
    }
    return vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                          "the TPM secret of %s is wrapped under a deployment key host %s does "
                          "not hold (it holds: %s); the guest could not start there again, so "
                          "it is not migrated",
                          a->uuid, a->dest, held->len ? held->str : "none");
}

/* The key the destination's libvirt needs to start swtpm for the incoming
 * guest, the mode's way, for whatever pre_live_migration could not do
 * without the source.  Idempotent. */
static int
hand_over_key(vtpm_worker *w, virConnectPtr conn, virConnectPtr dconn, const live_args *a,
              const vtpm_domxml_meta *m, vtpm_error *err)
{
    g_autoptr(GBytes) key = NULL;
    bool exists = false;
    int rc;

    if (m->tpm.version == VTPM_VERSION_NONE || !m->encrypted)
        return 0;
    switch (m->tpm.secret_security) {
    case VTPM_SECRET_HOST:
        /* Always the source's value: a copy left there by an earlier stay
         * may hold a key rotated since (rekey). */
        if ((rc = vtpm_secret_get(conn, w->cfg->worker.host, a->uuid, &key, err)) < 0)
            return rc;
        return vtpm_secret_define(dconn, a->uuid, VTPM_SECRET_PERSISTENT, key, err);
    case VTPM_SECRET_USER:
        /* The caller's passphrase, when sent along, is the one to use. */
        if (a->secret)
            return vtpm_secret_define(dconn, a->uuid, VTPM_SECRET_EPHEMERAL, a->secret, err);
        if ((rc = vtpm_secret_exists(dconn, a->uuid, &exists, err)) < 0 || exists)
            return rc;
        return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                              "host %s holds no TPM key of instance %s (secret security 'user'): "
                              "call pre_live_migration there with args.instance.vtpm.secret, or "
                              "send the secret with live_migration",
                              a->dest, a->uuid);
    default:
        if ((rc = check_dest_keys(a, m, err)) < 0 ||
            (rc = vtpm_secret_exists(dconn, a->uuid, &exists, err)) < 0 || exists)
            return rc;
        /* Ephemeral, as a start here would define it: the destination's
         * post_live_migration_at_destination removes it. */
        if ((rc = vtpm_keyring_unwrap(w->keys, a->uuid, m->wrapped_secret, &key, NULL, err)) < 0)
            return rc;
        return vtpm_secret_define(dconn, a->uuid, VTPM_SECRET_EPHEMERAL, key, err);
    }
}

/* The source's generation record rides along in the live definition; the
 * destination takes it in post_live_migration_at_destination. */
static int
send_generation(vtpm_worker *w, virDomainPtr dom, const char *uuid, vtpm_error *err)
{
    uint64_t gen = vtpm_generation_last(w, uuid);
    g_autofree char *xml = NULL;

    if (gen == 0)
        return 0;
    xml = g_strdup_printf("<generation>%" G_GUINT64_FORMAT "</generation>", gen);
    if (VTPM_LV(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, xml, GEN_KEY, GEN_NS,
                                     VIR_DOMAIN_AFFECT_LIVE)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "recording the generation in the domain");
    return 0;
}

/* Bytes of the TPM state files: what the stream carries of the TPM
 * besides its volatile state. */
static uint64_t
state_bytes(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;
    uint64_t n = 0;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        struct stat st;

        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            n += state_bytes(path);
        else if (S_ISREG(st.st_mode))
            n += (uint64_t)st.st_size;
    }
    return n;
}

/* What the reply of a live migration says. */
typedef struct {
    bool have_stats, have_bytes;
    uint64_t total_ms, downtime_ms, vtpm_bytes;
} lm_result;

static void
pack_migrated(msgpack_packer *pk, const lm_result *r)
{
    msgpack_pack_map(pk, 1 + (r->have_stats ? 2 : 0) + (r->have_bytes ? 1 : 0));
    vtpm_pack_kv_bool(pk, "migrated", true);
    if (r->have_stats) {
        vtpm_pack_kv_uint(pk, "total_ms", r->total_ms);
        vtpm_pack_kv_uint(pk, "downtime_ms", r->downtime_ms);
    }
    if (r->have_bytes)
        vtpm_pack_kv_uint(pk, "vtpm_bytes", r->vtpm_bytes);
}

static int
resume(vtpm_worker *w, virDomainPtr dom, const char *uuid, vtpm_error *err)
{
    g_warning("instance %s: paused by a live migration that did not complete; resuming it on "
              "host %s",
              uuid, w->cfg->worker.host);
    if (VTPM_LV(virDomainResume(dom)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "resuming domain");
    return 0;
}

/* The destination holds a domain in transit while the guest runs here:
 * the incoming side of a migration whose client (a killed vtpmd) is gone.
 * libvirt usually removes it when that client's connection closes, but
 * not when the connection closed while it was still starting the domain;
 * it never ran the guest, which runs here, so it is destroyed. */
static int
clear_orphan(vtpm_worker *w, const live_args *a, lm_place *p, vtpm_error *err)
{
    gint64 end = g_get_monotonic_time() + ORPHAN_WAIT_S * G_USEC_PER_SEC;
    int rc;

    while (p->at_there == GUEST_MIGRATING && g_get_monotonic_time() < end) {
        g_usleep(JOB_POLL_US);
        if ((rc = guest_state_of(NULL, p->there, &p->at_there, err)) < 0) {
            /* Gone meanwhile: what we wait for. */
            if (VTPM_LV(virDomainIsActive(p->there)) < 0)
                return 0;
            return rc;
        }
    }
    if (p->at_there != GUEST_MIGRATING)
        return 0;
    g_warning("instance %s: host %s holds an incoming domain of a migration that was cut; the "
              "guest runs on host %s: destroying it there",
              a->uuid, a->dest, w->cfg->worker.host);
    if (VTPM_LV(virDomainDestroy(p->there)) < 0 && VTPM_LV(virDomainIsActive(p->there)) != 0)
        return vtpm_virt_error(NULL, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "destroying the incoming domain on host %s", a->dest);
    virResetLastError();
    return 0;
}

/* From where the guest is: migrate it (*moved false), or only finish
 * because it runs on the destination already (a redelivery after the
 * migration).  Never a second migration of a migrated guest. */
static int
decide(vtpm_worker *w, const live_args *a, lm_place *p, bool *moved, vtpm_error *err)
{
    int rc;

    /* Running there; or stopped there since, after a migration that
     * completed (libvirt says why the source's domain is shut off). */
    *moved = p->at_there == GUEST_RUNS || (p->at_here == GUEST_LEFT && p->at_there == GUEST_OFF);
    if (*moved && p->at_here == GUEST_RUNS)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s runs on host %s and on host %s; not touching either",
                              a->uuid, w->cfg->worker.host, a->dest);
    if (*moved)
        return 0;
    /* Left paused by a cut migration that the destination did not finish. */
    if (p->at_here == GUEST_MIGRATING) {
        if ((rc = resume(w, p->here, a->uuid, err)) < 0)
            return rc;
        p->at_here = GUEST_RUNS;
    }
    if (p->at_here == GUEST_RUNS && p->at_there == GUEST_MIGRATING &&
        (rc = clear_orphan(w, a, p, err)) < 0)
        return rc;
    if (p->at_here == GUEST_NONE)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_NOT_FOUND,
                              "instance %s has no domain on host %s, and host %s does not run it "
                              "(%s)",
                              a->uuid, w->cfg->worker.host, a->dest,
                              guest_state_str(p->at_there));
    if (p->at_here == GUEST_OFF || p->at_here == GUEST_LEFT)
        return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_OPERATION,
                              "instance %s is shut off on host %s: a live migration moves a "
                              "running guest (a cold migration moves a stopped one)",
                              a->uuid, w->cfg->worker.host);
    /* Its kept copy is what a revert restores here: the guest must stay. */
    if (vtpm_state_has_kept(w, a->uuid))
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s has a migration or resize from host %s that is not "
                              "confirmed or reverted yet",
                              a->uuid, w->cfg->worker.host);
    return 0;
}

/* A UEFI guest's variable store is a file in its state dir; QEMU's stream
 * carries the flash's contents only as RAM.  The incoming QEMU opens a
 * copy of the template there (libvirt makes it) and, loading the stream,
 * arms a handler (hw/block/pflash_cfi01.c, pflash_post_load) that writes
 * the whole flash into that file when the guest starts running: only then
 * is the destination's store whole.  A guest paused by its user would
 * arrive paused, its store a template until resumed, while the source's
 * clean-up deletes the only whole copy: refused, before anything moves. */
static int
refuse_paused_uefi(vtpm_worker *w, virDomainPtr dom, const char *uuid, const vtpm_firmware *fw,
                   vtpm_error *err)
{
    int st = VIR_DOMAIN_NOSTATE, reason = 0;

    if (fw->type != VTPM_FIRMWARE_UEFI)
        return 0;
    if (VTPM_LV(virDomainGetState(dom, &st, &reason, 0)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    if (st != VIR_DOMAIN_PAUSED)
        return 0;
    return vtpm_error_set(err, VTPM_FAULT_UNSUPPORTED_OPERATION,
                          "instance %s is paused on host %s and boots UEFI firmware: QEMU writes "
                          "its variable store on the destination only once the guest runs "
                          "there, so the source's store would be its only whole copy; resume "
                          "the guest first (a cold migration moves a stopped one)",
                          uuid, w->cfg->worker.host);
}

static char *
inbound_uri(const char *addr)
{
    /* A bare IPv6 address needs its brackets in a URI. */
    return strchr(addr, ':') ? g_strdup_printf("tcp://[%s]", addr)
                             : g_strdup_printf("tcp://%s", addr);
}

/* Live-migrate the guest running here to the destination: its key there
 * first, then libvirt's managed direct migration, persistent on the
 * destination and (for the job statistics) still defined here. */
static int
migrate(vtpm_worker *w, virConnectPtr conn, virConnectPtr dconn, const live_args *a,
        vtpm_livejob *job, const lm_place *p, vtpm_error *err)
{
    g_auto(vtpm_domxml_meta) m = { 0 };
    g_autofree char *uri = inbound_uri(a->inbound);
    g_autoptr(virDomain) moved = NULL;
    virTypedParameterPtr params = NULL;
    unsigned flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PERSIST_DEST;
    int np = 0, maxp = 0, rc;

    if ((rc = vtpm_ops_get_meta(w, p->here, &m, err)) < 0 ||
        (rc = refuse_paused_uefi(w, p->here, a->uuid, &m.firmware, err)) < 0 ||
        (rc = hand_over_key(w, conn, dconn, a, &m, err)) < 0 ||
        (rc = send_generation(w, p->here, a->uuid, err)) < 0)
        return rc;
    if (a->max_downtime_ms &&
        VTPM_LV(virDomainMigrateSetMaxDowntime(p->here, a->max_downtime_ms, 0)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "setting the maximum downtime");
    vtpm_inject("live_migration.before_migrate");
    if (vtpm_livejob_abort_requested(job))
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "it was aborted by live_migration_abort before it began");
    if (w->cfg->libvirt.live_migration_with_native_tls)
        flags |= VIR_MIGRATE_TLS;
    if (virTypedParamsAddString(&params, &np, &maxp, VIR_MIGRATE_PARAM_URI, uri) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "out of memory");
    rc = vtpm_livejob_migrate(job, p->here, dconn, params, np, flags, (unsigned)a->timeout_s,
                              &moved, err);
    virTypedParamsFree(params, np);
    return rc;
}

/* After a failed migration, the truth: the guest may have reached the
 * destination after all (the failure came after it moved), which is
 * success.  Else it must run here; one left paused by the cut migration
 * is resumed.  The fault then says where the guest is. */
static bool
moved_after_all(vtpm_worker *w, virConnectPtr conn, virConnectPtr dconn, const live_args *a,
                lm_place *p, vtpm_error *err)
{
    vtpm_error why = *err, e = { 0 };
    g_autofree char *where = NULL;

    /* The source first: a guest that runs here has not moved, whatever the
     * destination (whose libvirtd may be what failed) can say. */
    lm_place_clear(p);
    if (vtpm_virt_lookup(w->virt, conn, a->uuid, &p->here, &e) == 0 &&
        (!p->here || wait_no_job(p->here, a->uuid, w->cfg->worker.host, &e) == 0) &&
        guest_state_of(w->virt, p->here, &p->at_here, &e) == 0 && p->at_here != GUEST_RUNS &&
        vtpm_virt_lookup(NULL, dconn, a->uuid, &p->there, &e) == 0 &&
        guest_state_of(NULL, p->there, &p->at_there, &e) == 0) {
        if (p->at_there == GUEST_RUNS) {
            g_warning("instance %s: the live migration to %s failed (%s), but the guest runs "
                      "there: it is done",
                      a->uuid, a->dest, why.message);
            return true;
        }
        if (p->at_here == GUEST_MIGRATING && resume(w, p->here, a->uuid, &e) == 0)
            p->at_here = GUEST_RUNS;
    }
    where = e.code ? g_strdup_printf("where the guest is now cannot be told (%s)", e.message)
                   : g_strdup_printf("the guest is %s on host %s", guest_state_str(p->at_here),
                                     w->cfg->worker.host);
    vtpm_error_set(err, why.code, "live migration of %s to %s: %s; %s", a->uuid, a->dest,
                   why.message, where);
    return false;
}

/* The guest runs on the destination: nothing of it stays here, as after a
 * confirmed cold migration; its generation record went along.  Idempotent:
 * a redelivery finishes what a killed vtpmd began. */
static int
finish_source(vtpm_worker *w, virConnectPtr conn, virDomainPtr here, const char *uuid,
              vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, uuid);
    int rc;

    if (here && ((rc = vtpm_virt_stop(w->virt, here, err)) < 0 ||
                 (rc = vtpm_virt_undefine(w->virt, here, false, err)) < 0))
        return rc;
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0)
        return rc;
    vtpm_inject("live_migration.after_undefine");
    vtpm_ops_forget_console(w, uuid);
    vtpm_generation_forget(w, uuid);
    /* Host mode: the destination holds its own copy of the key now. */
    return vtpm_secret_undefine(conn, uuid, err);
}

/* libvirt's statistics of the migration: the source's while its domain is
 * defined, else the destination's of the incoming side (a redelivery after
 * the source was cleaned up). */
static void
read_stats(virConnectPtr dconn, const lm_place *p, const char *uuid, lm_result *r)
{
    g_autoptr(virDomain) found = NULL;
    virDomainPtr there = p->there;

    if (p->here && vtpm_livejob_stats(p->here, &r->total_ms, &r->downtime_ms) == 0) {
        r->have_stats = true;
        return;
    }
    if (!there && !(there = found = VTPM_LV(virDomainLookupByUUIDString(dconn, uuid)))) {
        virResetLastError();
        return;
    }
    r->have_stats = vtpm_livejob_stats(there, &r->total_ms, &r->downtime_ms) == 0;
}

static int
live_migrate(vtpm_worker *w, const live_args *a, vtpm_livejob *job, msgpack_packer *result,
             vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, a->uuid);
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virConnect) dconn = NULL;
    g_auto(lm_place) p = { 0 };
    lm_result r = { 0 };
    bool moved = false;
    int rc;

    if ((rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = dest_conn(w, a->dest, &dconn, err)) < 0 ||
        (rc = locate(w, conn, dconn, a->uuid, &p, err)) < 0 ||
        (rc = decide(w, a, &p, &moved, err)) < 0)
        return rc;
    r.have_bytes = vtpm_fs_is_dir(state_dir);
    r.vtpm_bytes = r.have_bytes ? state_bytes(state_dir) : 0;
    if (!moved) {
        rc = migrate(w, conn, dconn, a, job, &p, err);
        if (rc < 0 && !moved_after_all(w, conn, dconn, a, &p, err))
            return rc;
        vtpm_inject("live_migration.after_migrate");
    }
    read_stats(dconn, &p, a->uuid, &r);
    if ((rc = finish_source(w, conn, p.here, a->uuid, err)) < 0)
        return rc;
    pack_migrated(result, &r);
    return 0;
}

int
vtpm_op_live_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                       vtpm_error *err)
{
    g_auto(live_args) a = { 0 };
    vtpm_livejob *job;
    int rc;

    if ((rc = live_args_get(w, req, &a, err)) < 0)
        return rc;
    /* Registered for live_migration_abort, which runs beside this. */
    job = vtpm_livejob_begin(a.uuid);
    rc = live_migrate(w, &a, job, result, err);
    vtpm_livejob_finish(job, rc == 0);
    return rc;
}

/* ---- post_live_migration_at_destination (destination) --------------------------------- */

/* The guest runs here: an ephemeral key (user and deployment mode) has
 * served its purpose, swtpm holds it; libvirt must not keep it.  A host
 * key stays, as on every host running a host-mode guest. */
static int
release_key(virConnectPtr conn, const char *uuid, const vtpm_domxml_meta *m, vtpm_error *err)
{
    if (m->tpm.version == VTPM_VERSION_NONE || !m->encrypted ||
        m->tpm.secret_security == VTPM_SECRET_HOST)
        return 0;
    return vtpm_secret_undefine(conn, uuid, err);
}

/* The generation record the source sent along, made this host's and
 * removed from the domain (absent: the source had none).  It rode in the
 * live definition, which VIR_MIGRATE_PERSIST_DEST also made the persistent
 * one: read it from the live definition while the guest runs, from the
 * persistent one when it was stopped since, and remove it from both. */
static int
take_generation(vtpm_worker *w, virDomainPtr dom, const char *uuid, bool running,
                vtpm_error *err)
{
    unsigned int where = VIR_DOMAIN_AFFECT_CONFIG | (running ? VIR_DOMAIN_AFFECT_LIVE : 0);
    char *md = VTPM_LV(virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, GEN_NS,
                                            VIR_DOMAIN_AFFECT_CURRENT));
    g_autofree char *text = NULL;
    g_autofree char *digits = NULL;
    const char *open, *close;
    guint64 gen = 0;
    int rc;

    if (!md) {
        const virError *e = virGetLastError();

        if (e && e->code == VIR_ERR_NO_DOMAIN_METADATA) {
            virResetLastError();
            return 0;
        }
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "reading the migrated generation");
    }
    text = g_strdup(md);
    free(md);
    /* <vtpmdlm:generation xmlns:vtpmdlm="...">N</vtpmdlm:generation> */
    open = strchr(text, '>');
    close = open ? strchr(open, '<') : NULL;
    if (close)
        digits = g_strndup(open + 1, (gsize)(close - open - 1));
    if (!digits || !g_ascii_string_to_unsigned(digits, 10, 1, G_MAXINT64, &gen, NULL))
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "the migrated domain of %s carries an unreadable generation: %s",
                              uuid, text);
    if ((rc = vtpm_generation_record(w, uuid, gen, err)) < 0)
        return rc;
    if (VTPM_LV(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL, NULL, GEN_NS,
                                     where)) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err,
                               "removing the migrated generation");
    return 0;
}

int
vtpm_op_post_live_migration_at_destination(vtpm_worker *w, const vtpm_request *req,
                                           msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autoptr(GBytes) key = NULL;
    g_auto(vtpm_domxml_meta) m = { 0 };
    guest_state st;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, uuid, &dom, err)) < 0 ||
        (rc = guest_state_of(w->virt, dom, &st, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &m, err)) < 0)
        return rc;
    if (st == GUEST_MIGRATING)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s is still arriving on host %s (paused for a "
                              "migration): post_live_migration_at_destination follows a "
                              "completed live migration",
                              uuid, w->cfg->worker.host);
    if ((rc = release_key(conn, uuid, &m, err)) < 0)
        return rc;
    vtpm_inject("post_live_migration_at_destination.after_release");
    if ((rc = take_generation(w, dom, uuid, st == GUEST_RUNS, err)) < 0)
        return rc;
    /* Deployment mode: this host must be able to start the guest again. */
    if (m.tpm.version != VTPM_VERSION_NONE && m.encrypted &&
        m.tpm.secret_security == VTPM_SECRET_DEPLOYMENT &&
        (rc = vtpm_keyring_unwrap(w->keys, uuid, m.wrapped_secret, &key, NULL, err)) < 0)
        return rc;
    {
        g_autofree char *name = vtpm_domxml_domain_name(uuid);

        msgpack_pack_map(result, 2);
        vtpm_pack_kv_str(result, "domain", name);
        vtpm_pack_str(result, "vtpm");
        vtpm_ops_pack_vtpm(result, w, uuid, &m.tpm);
    }
    return 0;
}

/* ---- rollback_live_migration_at_destination (destination) ----------------------------- */

int
vtpm_op_rollback_live_migration_at_destination(vtpm_worker *w, const vtpm_request *req,
                                               msgpack_packer *result, vtpm_error *err)
{
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *state_dir = NULL;
    bool had_key = false, had_state;
    guest_state st;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err)) < 0 ||
        (rc = guest_state_of(w->virt, dom, &st, err)) < 0)
        return rc;
    /* Only what a migration that failed leaves: a guest that arrived
     * (running, or defined and stopped since) holds the only TPM state. */
    if (st == GUEST_RUNS || st == GUEST_OFF || st == GUEST_LEFT)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "instance %s is %s on host %s: its live migration completed, there "
                              "is nothing to roll back (destroy removes it)",
                              uuid, guest_state_str(st), w->cfg->worker.host);
    state_dir = vtpm_ops_state_dir(w, uuid);
    had_state = vtpm_fs_is_dir(state_dir);
    if ((rc = vtpm_secret_exists(conn, uuid, &had_key, err)) < 0 ||
        (dom && ((rc = vtpm_virt_stop(w->virt, dom, err)) < 0 ||
                 (rc = vtpm_virt_undefine(w->virt, dom, false, err)) < 0)))
        return rc;
    vtpm_inject("rollback_live_migration_at_destination.after_undefine");
    if ((rc = vtpm_fs_rmtree(state_dir, err)) < 0 ||
        (rc = vtpm_secret_undefine(conn, uuid, err)) < 0)
        return rc;
    vtpm_ops_forget_console(w, uuid);
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_bool(result, "rolled_back", dom || had_key || had_state);
    return 0;
}

/* ---- live_migration_abort (source, beside live_migration) ------------------------------ */

int
vtpm_op_live_migration_abort(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                             vtpm_error *err)
{
    bool found = false, aborted = false;
    char uuid[37];
    int rc;

    if ((rc = vtpm_ops_arg_uuid(req, uuid, err)) < 0 ||
        (rc = vtpm_livejob_abort(uuid, ABORT_WAIT_S, &found, &aborted, err)) < 0)
        return rc;
    msgpack_pack_map(result, 1);
    vtpm_pack_kv_bool(result, "aborted", aborted);
    return 0;
}
