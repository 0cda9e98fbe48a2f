/* SPDX-License-Identifier: Apache-2.0 */
/* The domain helpers every operation family shares (ops/domain.h). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "fsutil.h"
#include "keywrap.h"
#include "ops/domain.h"
#include "ops/generation.h"
#include "rekey.h"
#include "secret.h"

int
vtpm_ops_arg_uuid(const vtpm_request *req, char uuid[37], vtpm_error *err)
{
    const msgpack_object *io = NULL;
    g_autofree char *s = NULL;
    int rc;

    if ((rc = vtpm_proto_get_map(&req->args, "args", "instance", true, &io, err)) < 0 ||
        (rc = vtpm_proto_get_str(io, "args.instance", "uuid", true, 64, &s, err)) < 0)
        return rc;
    return vtpm_proto_parse_uuid(s, "args.instance.uuid", uuid, err);
}

int
vtpm_ops_arg_secret(const vtpm_request *req, GBytes **out, vtpm_error *err)
{
    const msgpack_object *io = NULL;
    int rc = vtpm_proto_get_map(&req->args, "args", "instance", false, &io, err);

    if (rc < 0)
        return rc;
    if (!io) {
        *out = NULL;
        return 0;
    }
    return vtpm_proto_decode_secret(io, "args.instance", out, err);
}

char *
vtpm_ops_state_dir(vtpm_worker *w, const char *uuid)
{
    return g_build_filename(w->cfg->libvirt.state_dir, uuid, NULL);
}

char *
vtpm_ops_nvram_path(vtpm_worker *w, const char *uuid)
{
    return g_build_filename(w->cfg->libvirt.state_dir, uuid, VTPM_FIRMWARE_NVRAM_FILE, NULL);
}

char *
vtpm_ops_replaced_dir(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/.%s.replaced", w->cfg->libvirt.state_dir, uuid);
}

char *
vtpm_ops_rekey_dir(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/.%s.rekey", w->cfg->libvirt.state_dir, uuid);
}

char *
vtpm_ops_console_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/%s.log", w->cfg->libvirt.console_dir, uuid);
}

void
vtpm_ops_forget_console(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = vtpm_ops_console_path(w, uuid);

    /* Best effort: a log is diagnostics, never a reason to fail the operation. */
    (void)unlink(path);
}

/* Looks the domain up; InstanceNotFound when it does not exist. */
int
vtpm_ops_find_domain(vtpm_worker *w, virConnectPtr conn, const char *uuid, virDomainPtr *out,
                     vtpm_error *err)
{
    g_autoptr(virDomain) dom = NULL;
    int rc = vtpm_virt_lookup(w->virt, conn, uuid, &dom, err);

    if (rc < 0)
        return rc;
    if (!dom)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_NOT_FOUND,
                              "instance %s has no domain on host %s", uuid, w->cfg->worker.host);
    *out = g_steal_pointer(&dom);
    return 0;
}

int
vtpm_ops_host_conn(vtpm_worker *w, const char *host, virConnectPtr *out, vtpm_error *err)
{
    return vtpm_ops_host_conn_via(w, host, w->cfg->libvirt.migration_uri_template, out, err);
}

int
vtpm_ops_host_conn_via(vtpm_worker *w, const char *host, const char *uri_template,
                       virConnectPtr *out, vtpm_error *err)
{
    g_autofree char *uri = NULL;
    virConnectPtr c;
    int rc;

    if ((rc = vtpm_proto_check_host(host, "host", err)) < 0)
        return rc;
    if (strcmp(host, w->cfg->worker.host) == 0)
        return vtpm_virt_conn(w->virt, out, NULL, err);
    /* The template was validated at start: exactly one %s. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    uri = g_strdup_printf(uri_template, host);
#pragma GCC diagnostic pop
    c = VTPM_LV(virConnectOpen(uri));
    if (!c)
        return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                              "cannot connect to destination %s (%s): %s", host, uri,
                              virGetLastErrorMessage());
    *out = c;
    return 0;
}

int
vtpm_ops_swtpm_ids(vtpm_worker *w, int *uid, int *gid, vtpm_error *err)
{
    struct passwd *pw = getpwnam(w->cfg->libvirt.swtpm_user);
    struct group *gr = getgrnam(w->cfg->libvirt.swtpm_group);

    if (!pw || !gr)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm user %s or group %s does not exist",
                              w->cfg->libvirt.swtpm_user, w->cfg->libvirt.swtpm_group);
    *uid = (int)pw->pw_uid;
    *gid = (int)gr->gr_gid;
    return 0;
}

/* The capabilities to decide by.  Never refuse an instance for good
 * because libvirt was down when the host was last probed: ask again, and
 * if it still cannot be asked, the caller should retry rather than
 * reschedule. */
static int
host_caps(vtpm_worker *w, vtpm_caps_snapshot **out, vtpm_error *err)
{
    g_autoptr(vtpm_caps_snapshot) snap = vtpm_worker_caps(w);

    if (snap->unreachable) {
        vtpm_caps_snapshot_unref(g_steal_pointer(&snap));
        vtpm_worker_refresh_caps(w, false);
        snap = vtpm_worker_caps(w);
        if (snap->unreachable)
            return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                                  "cannot check what this host offers: %s", snap->unreachable);
    }
    *out = g_steal_pointer(&snap);
    return 0;
}

/* "TRAIT (reason)" for each of @traits the host does not offer. */
static void
missing_traits(const vtpm_caps *caps, const char *const *traits, size_t n, GString *why)
{
    for (size_t i = 0; i < n; i++) {
        const char *reason;

        if (vtpm_caps_has_trait(caps, traits[i]))
            continue;
        reason = g_hash_table_lookup(caps->missing, traits[i]);
        g_string_append_printf(why, "%s%s (%s)", why->len ? "; " : "", traits[i],
                               reason ? reason : "not offered");
    }
}

/* Every trait @dev and @fw need must be offered by this host, else
 * TPMUnsupported naming each missing trait and why it is missing.
 * Optional Secure Boot is settled here, by what the host offers. */
static int
check_host_offers(vtpm_worker *w, const vtpm_device *dev, vtpm_firmware *fw, vtpm_error *err)
{
    g_autoptr(vtpm_caps_snapshot) snap = NULL;
    g_autoptr(GString) tpm = g_string_new(NULL);
    g_autoptr(GString) firmware = g_string_new(NULL);
    const char *traits[VTPM_POLICY_MAX_TRAITS];
    int rc;

    if (dev->version == VTPM_VERSION_NONE && fw->type != VTPM_FIRMWARE_UEFI)
        return 0;
    if ((rc = host_caps(w, &snap, err)) < 0)
        return rc;
    vtpm_firmware_decide(fw, vtpm_caps_has_trait(snap->caps, VTPM_TRAIT_UEFI_SECURE_BOOT));
    missing_traits(snap->caps, traits, vtpm_policy_required_traits(dev, traits), tpm);
    missing_traits(snap->caps, traits, vtpm_firmware_required_traits(fw, traits), firmware);
    if (tpm->len)
        return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                              "host %s cannot provide TPM %s/%s/%s: %s", w->cfg->worker.host,
                              vtpm_version_str(dev->version), vtpm_model_str(dev->model),
                              vtpm_secret_security_str(dev->secret_security), tpm->str);
    if (firmware->len)
        return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                              "host %s cannot provide UEFI firmware%s: %s", w->cfg->worker.host,
                              fw->secure_boot ? " with Secure Boot" : "", firmware->str);
    return 0;
}

static gint
cmp_strp(gconstpointer a, gconstpointer b, gpointer user)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
digest_strmap(GChecksum *ck, const char *tag, GHashTable *map)
{
    g_autofree gpointer *keys = (gpointer *)g_hash_table_get_keys_as_array(map, NULL);
    guint n = g_hash_table_size(map);

    g_qsort_with_data(keys, n, sizeof(gpointer), cmp_strp, NULL);
    g_checksum_update(ck, (const guchar *)tag, -1);
    for (guint i = 0; i < n; i++) {
        const char *k = keys[i];
        const char *v = g_hash_table_lookup(map, k);

        /* Lengths first: no concatenation of two fields can collide. */
        g_autofree char *rec = g_strdup_printf("%zu:%s=%zu:%s;", strlen(k), k, strlen(v), v);
        g_checksum_update(ck, (const guchar *)rec, -1);
    }
}

static void
digest_str(GChecksum *ck, const char *tag, const char *s)
{
    g_autofree char *rec = s ? g_strdup_printf("%s=%zu:%s;", tag, strlen(s), s)
                             : g_strdup_printf("%s=-;", tag);
    g_checksum_update(ck, (const guchar *)rec, -1);
}

/*
 * What makes two spawn requests "the same instance": flavor, image, boot
 * and vTPM.  Stored in the domain's metadata so that a repeated spawn can
 * tell a harmless redelivery from a conflicting request.
 */
char *
vtpm_ops_spec_digest(const vtpm_instance *inst, const vtpm_device *dev)
{
    g_autoptr(GChecksum) ck = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree char *nums = g_strdup_printf("vcpus=%" G_GUINT64_FORMAT ";mem=%" G_GUINT64_FORMAT
                                            ";tpm=%d/%d/%d;",
                                            inst->flavor->vcpus, inst->flavor->memory_mb,
                                            dev->version, dev->model, dev->secret_security);

    digest_str(ck, "flavor", inst->flavor->name);
    g_checksum_update(ck, (const guchar *)nums, -1);
    digest_strmap(ck, "extra_specs", inst->flavor->extra_specs);
    digest_str(ck, "image", inst->image->id);
    digest_strmap(ck, "properties", inst->image->properties);
    digest_str(ck, "kernel", inst->boot.kernel);
    digest_str(ck, "initrd", inst->boot.initrd);
    digest_str(ck, "cmdline", inst->boot.cmdline);
    digest_str(ck, "disk", inst->boot.disk);
    return g_strdup(g_checksum_get_string(ck));
}

int
vtpm_ops_get_meta(vtpm_worker *w, virDomainPtr dom, vtpm_domxml_meta *out, vtpm_error *err)
{
    g_autofree char *md = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = vtpm_virt_get_metadata(w->virt, dom, &md, err)) < 0)
        return rc;
    if (!md) {
        /* Not ours (defined by hand): treat as "no spec, no vTPM known". */
        out->tpm.version = VTPM_VERSION_NONE;
        return 0;
    }
    return vtpm_domxml_parse_metadata(md, out, err);
}

static int
confine_boot(vtpm_worker *w, const vtpm_instance *inst, char **kernel, char **initrd,
             char **disk, vtpm_error *err)
{
    const char *dir = w->cfg->libvirt.images_dir;
    int rc;

    if (!inst->boot.present)
        return 0;
    if (inst->boot.kernel &&
        (rc = vtpm_fs_confine(dir, inst->boot.kernel, "args.instance.boot.kernel", kernel,
                              err)) < 0)
        return rc;
    if (inst->boot.initrd &&
        (rc = vtpm_fs_confine(dir, inst->boot.initrd, "args.instance.boot.initrd", initrd,
                              err)) < 0)
        return rc;
    if (inst->boot.disk &&
        (rc = vtpm_fs_confine(dir, inst->boot.disk, "args.instance.boot.disk", disk, err)) < 0)
        return rc;
    return 0;
}

void
vtpm_ops_pack_firmware(msgpack_packer *pk, const vtpm_firmware *fw)
{
    msgpack_pack_map(pk, 3);
    vtpm_pack_kv_str(pk, "type", vtpm_firmware_type_str(fw->type));
    vtpm_pack_kv_bool(pk, "secure_boot", fw->secure_boot);
    vtpm_pack_kv_str(pk, "machine", fw->machine);
}

void
vtpm_ops_pack_vtpm(msgpack_packer *pk, vtpm_worker *w, const char *uuid, const vtpm_device *dev)
{
    if (dev->version == VTPM_VERSION_NONE) {
        msgpack_pack_nil(pk);
        return;
    }
    g_autofree char *sd = vtpm_ops_state_dir(w, uuid);
    msgpack_pack_map(pk, 4);
    vtpm_pack_kv_str(pk, "version", vtpm_version_str(dev->version));
    vtpm_pack_kv_str(pk, "model", vtpm_model_str(dev->model));
    vtpm_pack_kv_str(pk, "secret_security", vtpm_secret_security_str(dev->secret_security));
    vtpm_pack_kv_str(pk, "state_dir", sd);
}

/* libvirt's swtpm log of a domain (its default swtpm_log_dir). */
static char *
swtpm_log_path(const char *dom_name)
{
    return g_strdup_printf("/var/log/swtpm/libvirt/qemu/%s-swtpm.log", dom_name);
}

static off_t
file_size_or_zero(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : 0;
}

static int
start_plain(vtpm_worker *w, virDomainPtr dom, unsigned flags, vtpm_error *err)
{
    return vtpm_virt_start(w->virt, dom, flags, err);
}

/* The key that opens the TPM of a start: an ephemeral one in *out (user
 * and deployment mode), or NULL in host mode, where libvirt holds it. */
static int
start_key(vtpm_worker *w, virConnectPtr conn, const char *uuid, const vtpm_domxml_meta *m,
          GBytes *secret, GBytes **out, vtpm_error *err)
{
    bool exists = false;
    int rc;

    switch (m->tpm.secret_security) {
    case VTPM_SECRET_USER:
        if (!secret)
            return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                                  "instance %s has an encrypted TPM in secret security mode "
                                  "'user': args.instance.vtpm.secret is required to start it",
                                  uuid);
        *out = g_bytes_ref(secret);
        return 0;
    case VTPM_SECRET_DEPLOYMENT:
        return vtpm_keyring_unwrap(w->keys, uuid, m->wrapped_secret, out, NULL, err);
    default:
        if ((rc = vtpm_secret_exists(conn, uuid, &exists, err)) < 0)
            return rc;
        if (!exists)
            return vtpm_error_set(err, VTPM_FAULT_SECRET_REQUIRED,
                                  "host %s has no TPM secret for instance %s (secret security "
                                  "'host'); the TPM state cannot be opened here",
                                  w->cfg->worker.host, uuid);
        *out = NULL;
        return 0;
    }
}

int
vtpm_ops_store_dir(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m,
                   vtpm_error *err)
{
    g_autofree char *dir = NULL;

    if (m->firmware.type != VTPM_FIRMWARE_UEFI || m->tpm.version == VTPM_VERSION_NONE)
        return 0;
    dir = vtpm_ops_state_dir(w, uuid);
    return vtpm_fs_mkdirs(dir, 0711, err);
}

int
vtpm_ops_start(vtpm_worker *w, virDomainPtr dom, GBytes *secret, vtpm_error *err)
{
    return vtpm_ops_start_flags(w, dom, secret, 0, err);
}

int
vtpm_ops_start_flags(vtpm_worker *w, virDomainPtr dom, GBytes *secret, unsigned flags,
                     vtpm_error *err)
{
    int active = VTPM_LV(virDomainIsActive(dom));
    g_auto(vtpm_domxml_meta) meta = { 0 };
    g_autoptr(GBytes) key = NULL;
    g_autofree char *log = NULL;
    virConnectPtr conn;
    char uuid[VIR_UUID_STRING_BUFLEN];
    off_t log_from;
    int rc;

    if (active < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain state");
    if (active)
        return 0;
    if (virDomainGetUUIDString(dom, uuid) < 0)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "reading domain uuid");
    /* Its TPM lives on elsewhere, newer: this copy must never run again. */
    if ((rc = vtpm_generation_check_fence(w, uuid, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &meta, err)) < 0)
        return rc;
    if ((rc = vtpm_ops_store_dir(w, uuid, &meta, err)) < 0)
        return rc;
    if (meta.tpm.version == VTPM_VERSION_NONE || !meta.encrypted)
        return start_plain(w, dom, flags, err);
    conn = virDomainGetConnect(dom);
    if ((rc = start_key(w, conn, uuid, &meta, secret, &key, err)) < 0)
        return rc;
    if (key && (rc = vtpm_secret_define(conn, uuid, VTPM_SECRET_EPHEMERAL, key, err)) < 0)
        return rc;
    log = swtpm_log_path(virDomainGetName(dom));
    log_from = file_size_or_zero(log);
    rc = start_plain(w, dom, flags, err);
    /* The key lives in libvirtd only while swtpm starts. */
    if (key) {
        vtpm_error uerr = { 0 };

        if (vtpm_secret_undefine(conn, uuid, &uerr) < 0)
            g_warning("instance %s: cannot undefine the ephemeral TPM secret: %s", uuid,
                      uerr.message);
    }
    if (rc < 0 && vtpm_rekey_log_says_bad_key(log, log_from))
        return vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                              "the %s does not decrypt the TPM state of instance %s (swtpm "
                              "could not verify it); the state is left untouched",
                              key && secret ? "secret given" : "TPM secret on this host", uuid);
    return rc;
}

void
vtpm_ops_domain_clear(vtpm_ops_domain *d)
{
    g_clear_pointer(&d->digest, g_free);
    g_clear_pointer(&d->xml, g_free);
    g_clear_pointer(&d->name, g_free);
    g_clear_pointer(&d->kernel, g_free);
    g_clear_pointer(&d->initrd, g_free);
    g_clear_pointer(&d->disk, g_free);
    g_clear_pointer(&d->console, g_free);
    g_clear_pointer(&d->wrapped_secret, g_free);
    g_clear_pointer(&d->nvram, g_free);
    g_clear_pointer(&d->identity, g_free);
}

int
vtpm_ops_build_xml(vtpm_worker *w, const vtpm_instance *inst, vtpm_ops_domain *d,
                   vtpm_error *err)
{
    vtpm_domxml_params p = { 0 };
    char *xml = NULL;
    int rc;

    p.inst = inst;
    p.tpm = &d->dev;
    p.virt_type = w->virt_type;
    p.console_log = d->console;
    p.kernel = d->kernel;
    p.initrd = d->initrd;
    p.disk = d->disk;
    p.spec_digest = d->digest;
    /* The secret's UUID is the instance's (secret.h). */
    p.secret_uuid = d->encrypted ? inst->uuid : NULL;
    p.wrapped_secret = d->wrapped_secret;
    p.firmware = &d->fw;
    p.nvram = d->nvram;
    p.uefi_loader = w->cfg->libvirt.uefi_loader;
    p.uefi_nvram_template = w->cfg->libvirt.uefi_nvram_template;
    p.identity = d->identity;
    if ((rc = vtpm_domxml_build(&p, &xml, err)) < 0)
        return rc;
    g_free(d->xml);
    d->xml = xml;
    return 0;
}

int
vtpm_ops_prepare(vtpm_worker *w, const vtpm_instance *inst, vtpm_ops_domain *out,
                 vtpm_error *err)
{
    g_auto(vtpm_ops_domain) d = { 0 };
    int rc;

    if ((rc = vtpm_policy_resolve(inst->flavor->extra_specs, inst->image->properties, &d.dev,
                                  err)) < 0 ||
        (rc = vtpm_firmware_resolve(inst->flavor->extra_specs, inst->image->properties, &d.fw,
                                    err)) < 0)
        return rc;
    /* Refuse before touching libvirt: nothing to undo. */
    if ((rc = check_host_offers(w, &d.dev, &d.fw, err)) < 0)
        return rc;
    if (d.fw.type == VTPM_FIRMWARE_UEFI && d.dev.version != VTPM_VERSION_NONE)
        d.nvram = vtpm_ops_nvram_path(w, inst->uuid);
    if ((rc = confine_boot(w, inst, &d.kernel, &d.initrd, &d.disk, err)) < 0 ||
        (rc = vtpm_fs_mkdirs(w->cfg->libvirt.console_dir, 0750, err)) < 0)
        return rc;

    d.console = vtpm_ops_console_path(w, inst->uuid);
    d.digest = vtpm_ops_spec_digest(inst, &d.dev);
    d.name = vtpm_domxml_domain_name(inst->uuid);
    if ((rc = vtpm_ops_build_xml(w, inst, &d, err)) < 0)
        return rc;
    *out = d;
    d = (vtpm_ops_domain){ 0 };
    return 0;
}

int
vtpm_ops_define(vtpm_worker *w, virConnectPtr conn, const char *xml, virDomainPtr *out,
                vtpm_error *err)
{
    virDomainPtr dom = VTPM_LV(virDomainDefineXML(conn, xml));

    if (!dom)
        return vtpm_virt_error(w->virt, VTPM_FAULT_HYPERVISOR_ERROR, err, "defining domain");
    *out = dom;
    return 0;
}

const char *
vtpm_ops_outcome_str(vtpm_ops_outcome o)
{
    static const char *const names[] = {
        [VTPM_OPS_OUTCOME_NONE] = "none",         [VTPM_OPS_OUTCOME_FRESH] = "fresh",
        [VTPM_OPS_OUTCOME_RESTORED] = "restored", [VTPM_OPS_OUTCOME_KEPT] = "kept",
        [VTPM_OPS_OUTCOME_REPLACED] = "replaced", [VTPM_OPS_OUTCOME_DELETED] = "deleted",
    };

    g_assert((size_t)o < G_N_ELEMENTS(names));
    return names[o];
}

static void
pack_domain(msgpack_packer *pk, vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d,
            size_t extra)
{
    msgpack_pack_map(pk, 3 + extra);
    vtpm_pack_kv_str(pk, "domain", d->name);
    vtpm_pack_str(pk, "vtpm");
    vtpm_ops_pack_vtpm(pk, w, uuid, &d->dev);
    vtpm_pack_str(pk, "firmware");
    vtpm_ops_pack_firmware(pk, &d->fw);
}

void
vtpm_ops_pack_domain_result(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                            const vtpm_ops_domain *d)
{
    pack_domain(pk, w, uuid, d, 0);
}

void
vtpm_ops_pack_domain_outcome(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                             const vtpm_ops_domain *d, vtpm_ops_outcome outcome)
{
    pack_domain(pk, w, uuid, d, 3);
    vtpm_pack_kv_str(pk, "vtpm_state", vtpm_ops_outcome_str(outcome));
    vtpm_pack_kv_str(pk, "nvram_state", vtpm_ops_outcome_str(d->nvram_state));
    vtpm_pack_kv_bool(pk, "identity_changed",
                      outcome == VTPM_OPS_OUTCOME_FRESH || outcome == VTPM_OPS_OUTCOME_REPLACED);
}
