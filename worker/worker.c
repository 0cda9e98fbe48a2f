/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "worker.h"
#include "accel.h"
#include "tpm2.h"

static void
snapshot_free(gpointer p)
{
    vtpm_caps_snapshot *s = p;

    vtpm_caps_free(s->caps);
    g_bytes_unref(s->packed);
    g_free(s->unreachable);
}

void
vtpm_caps_snapshot_unref(vtpm_caps_snapshot *s)
{
    if (s)
        g_atomic_rc_box_release_full(s, snapshot_free);
}

static vtpm_caps_snapshot *
snapshot_new(vtpm_caps *caps, char *unreachable)
{
    vtpm_caps_snapshot *s = g_atomic_rc_box_new0(vtpm_caps_snapshot);
    msgpack_sbuffer sb;
    msgpack_packer pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_caps_pack(caps, &pk);
    s->packed = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    s->caps = caps;
    s->unreachable = unreachable;
    return s;
}

vtpm_caps_snapshot *
vtpm_worker_caps(vtpm_worker *w)
{
    g_autoptr(GMutexLocker) l = g_mutex_locker_new(&w->caps_lock);

    return g_atomic_rc_box_acquire(w->caps);
}

static void
caps_config(const vtpm_worker *w, vtpm_caps_config *cc)
{
    const vtpm_config *cfg = w->cfg;

    cc->swtpm_enabled = cfg->libvirt.swtpm_enabled;
    cc->swtpm_user = cfg->libvirt.swtpm_user;
    cc->swtpm_group = cfg->libvirt.swtpm_group;
    cc->secret_modes = cfg->vtpm.supported_secret_security;
    cc->deployment_key_file = cfg->vtpm.deployment_key_file;
    cc->virt_type = w->virt_type;
    cc->virt_type_reason = w->virt_type_reason;
    cc->firmware.loader = cfg->libvirt.uefi_loader;
    cc->firmware.nvram_template = cfg->libvirt.uefi_nvram_template;
    cc->pcr_banks = w->pcr_banks;
    cc->pcr_banks_error = w->pcr_banks_error;
    cc->ek_ca_subject = w->ek_ca ? vtpm_ek_ca_subject(w->ek_ca) : NULL;
    cc->ek_ca_sha256 = w->ek_ca ? vtpm_ek_ca_sha256(w->ek_ca) : NULL;
}

/* Facts when libvirt cannot be asked at all: every trait then says so. */
static void
facts_unreachable(vtpm_host_facts *f, const char *why)
{
    memset(f, 0, sizeof(*f));
    f->domcaps_error = g_strdup_printf("libvirt unavailable: %s", why);
}

static vtpm_caps_snapshot *
probe(vtpm_worker *w)
{
    vtpm_host_facts facts = { 0 };
    vtpm_caps_config cc = { 0 };
    vtpm_error err = { 0 };
    virConnectPtr conn = NULL;
    char *unreachable = NULL;

    caps_config(w, &cc);
    if (vtpm_virt_conn(w->virt, &conn, NULL, &err) < 0 ||
        vtpm_caps_probe(conn, &cc, &facts, &err) < 0) {
        vtpm_host_facts_clear(&facts);
        facts_unreachable(&facts, err.message);
        unreachable = g_strdup(err.message);
    }
    if (conn)
        virConnectClose(conn);
    return snapshot_new(vtpm_caps_evaluate_take(w->cfg->worker.host, &facts, &cc), unreachable);
}

static void
announce(vtpm_worker *w, vtpm_caps_snapshot *s)
{
    g_autofree char *rk = g_strdup_printf("capabilities.%s", w->cfg->worker.host);
    g_autoptr(GBytes) msg = vtpm_proto_reply_ok(g_bytes_get_data(s->packed, NULL),
                                                g_bytes_get_size(s->packed));

    if (w->amqp)
        vtpm_broker_post_publish(w->amqp, w->cfg->amqp.exchange, rk, msg);
}

void
vtpm_worker_refresh_caps(vtpm_worker *w, bool force_announce)
{
    vtpm_caps_snapshot *fresh = probe(w);
    vtpm_caps_snapshot *old;
    bool changed;

    g_mutex_lock(&w->caps_lock);
    old = w->caps;
    if (fresh->unreachable && old && !old->unreachable) {
        g_mutex_unlock(&w->caps_lock);
        g_warning("capabilities not refreshed, keeping the last probed ones: %s",
                  fresh->unreachable);
        vtpm_caps_snapshot_unref(fresh);
        if (force_announce)
            vtpm_worker_announce_caps(w);
        return;
    }
    changed = !old || !vtpm_caps_equal(old->caps, fresh->caps);
    w->caps = fresh;
    g_mutex_unlock(&w->caps_lock);

    if (changed && old) {
        g_message("capabilities changed: %u trait(s) offered", fresh->caps->traits->len);
    }
    if (changed || force_announce)
        announce(w, fresh);
    vtpm_caps_snapshot_unref(old);
}

void
vtpm_worker_announce_caps(vtpm_worker *w)
{
    g_autoptr(vtpm_caps_snapshot) s = vtpm_worker_caps(w);

    announce(w, s);
}

int
vtpm_worker_init(vtpm_worker *w, vtpm_config *cfg, vtpm_error *err)
{
    vtpm_accel accel = { 0 };
    int rc;

    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    g_mutex_init(&w->caps_lock);
    vtpm_proto_limits_init(&w->limits);
    w->limits.max_body = cfg->worker.max_message_bytes;
    vtpm_accel_resolve(cfg->libvirt.virt_type, NULL, &accel);
    w->virt_type = g_steal_pointer(&accel.virt_type);
    w->virt_type_reason = g_steal_pointer(&accel.reason);
    /* A bad deployment key stops the start: better than instances that
     * cannot be started later. */
    if ((rc = vtpm_keyring_load(cfg->vtpm.deployment_key_file,
                                cfg->vtpm.previous_deployment_key_file, &w->keys, err)) < 0)
        return rc;
    /* So is a bad EK CA: every new TPM would fail to be made. */
    if (cfg->vtpm.ek_ca_cert &&
        (rc = vtpm_ek_ca_load(cfg->vtpm.ek_ca_cert, cfg->vtpm.ek_ca_key, &w->ek_ca, err)) < 0)
        return rc;
    /* Once: what swtpm implements changes only with the package, and a
     * probe runs a swtpm. */
    if (cfg->libvirt.swtpm_enabled) {
        vtpm_error perr = { 0 };

        if (vtpm_tpm2_probe_pcr_banks(&w->pcr_banks, &perr) < 0)
            w->pcr_banks_error = g_strdup(perr.message);
    }
    if ((rc = vtpm_virt_new(cfg->libvirt.uri, &w->virt, err)) < 0)
        return rc;
    vtpm_worker_refresh_caps(w, false);
    return 0;
}

void
vtpm_worker_clear(vtpm_worker *w)
{
    vtpm_caps_snapshot_unref(w->caps);
    w->caps = NULL;
    vtpm_virt_free(w->virt);
    w->virt = NULL;
    vtpm_keyring_free(w->keys);
    w->keys = NULL;
    g_clear_pointer(&w->ek_ca, vtpm_ek_ca_free);
    g_clear_pointer(&w->pcr_banks_error, g_free);
    g_free(w->virt_type);
    g_free(w->virt_type_reason);
    g_mutex_clear(&w->caps_lock);
}
