/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "domxml.h"

char *
vtpm_domxml_domain_name(const char *uuid)
{
    if (!uuid)
        return NULL;
    return g_strdup_printf("instance-%s", uuid);
}

static void add(GString *x, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Every value goes through g_markup_vprintf_escaped, never appended raw. */
static void
add(GString *x, const char *fmt, ...)
{
    g_autofree char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    s = g_markup_vprintf_escaped(fmt, ap);
    va_end(ap);
    g_string_append(x, s);
}

/* Escaping cannot make C0 controls valid XML 1.0 (libvirt's parser
 * rejects even &#x1;), and \t \n \r in attributes are normalised away by
 * parsers, so such values are refused instead of silently changed. */
static int
check_text(const char *what, const char *s, vtpm_error *err)
{
    if (!s)
        return 0;
    if (!g_utf8_validate(s, -1, NULL))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s is not valid UTF-8", what);
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c < 0x20)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "%s contains control character 0x%02x", what,
                                  (unsigned)(unsigned char)*c);
    }
    return 0;
}

static int
check_path(const char *what, const char *s, vtpm_error *err)
{
    int rc = check_text(what, s, err);

    if (rc < 0 || !s)
        return rc;
    if (!g_path_is_absolute(s))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s '%s' is not an absolute path",
                              what, s);
    return 0;
}

static guint64
be64(const unsigned char *p)
{
    guint64 v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * The disk format is probed from the magic because images are dropped
 * into images_dir as either.  A probed qcow2 must stay self-contained:
 * a backing file or external data file named in its header would make
 * QEMU open a host path that was never confined (the classic format
 * probing hole), so those are refused.  An unreadable file is raw: that
 * choice never makes QEMU follow anything.
 */
static int
disk_format(const char *path, const char **fmt, vtpm_error *err)
{
    unsigned char hdr[80] = { 0 };
    struct stat st;
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            n = pread(fd, hdr, sizeof(hdr), 0);
        close(fd);
    }
    if (n < 4 || memcmp(hdr, "QFI\xfb", 4) != 0) {
        *fmt = "raw";
        return 0;
    }
    /* version @4 (be32), backing_file_offset @8, incompatible_features @72 (v3+) */
    if (be64(hdr + 8) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "boot disk '%s' is a qcow2 image with a backing file", path);
    if (n >= 80 && hdr[7] >= 3 && (be64(hdr + 72) & (1u << 2)))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "boot disk '%s' is a qcow2 image with an external data file", path);
    *fmt = "qcow2";
    return 0;
}

static int
check_tpm(const vtpm_device *tpm, const char *secret_uuid, vtpm_error *err)
{
    uuid_t u;

    if (tpm->version != VTPM_VERSION_1_2 && tpm->version != VTPM_VERSION_2_0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown TPM version %d",
                              (int)tpm->version);
    if (tpm->model != VTPM_MODEL_TIS && tpm->model != VTPM_MODEL_CRB)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown TPM model %d",
                              (int)tpm->model);
    if ((unsigned)tpm->secret_security >= VTPM_SECRET__COUNT)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown TPM secret security %d",
                              (int)tpm->secret_security);
    /* swtpm's rule: a TPM 1.2 has one fixed bank. */
    if (tpm->pcr_banks >> VTPM_PCR__COUNT ||
        (tpm->pcr_banks && tpm->version != VTPM_VERSION_2_0))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "PCR banks 0x%x for TPM %s",
                              tpm->pcr_banks, vtpm_version_str(tpm->version));
    if (secret_uuid && uuid_parse(secret_uuid, u) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "secret '%s' is not a UUID",
                              secret_uuid);
    return 0;
}

typedef struct {
    const char *kernel, *initrd, *cmdline, *disk;
    const char *disk_format;
} boot_plan;

static int
plan_boot(const vtpm_domxml_params *p, boot_plan *b, vtpm_error *err)
{
    const vtpm_boot *ib = &p->inst->boot;
    int rc;

    b->kernel = p->kernel ? p->kernel : (ib->present ? ib->kernel : NULL);
    b->initrd = p->initrd ? p->initrd : (ib->present ? ib->initrd : NULL);
    b->disk = p->disk ? p->disk : (ib->present ? ib->disk : NULL);
    b->cmdline = ib->present ? ib->cmdline : NULL;

    if (b->kernel && b->disk)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "boot: kernel and disk are mutually exclusive");
    if (!b->kernel && (b->initrd || b->cmdline))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "boot: initrd and cmdline need a kernel");
    if ((rc = check_path("boot.kernel", b->kernel, err)) < 0 ||
        (rc = check_path("boot.initrd", b->initrd, err)) < 0 ||
        (rc = check_path("boot.disk", b->disk, err)) < 0 ||
        (rc = check_text("boot.cmdline", b->cmdline, err)) < 0)
        return rc;
    if (b->disk)
        return disk_format(b->disk, &b->disk_format, err);
    return 0;
}

/* What a UEFI domain needs besides its firmware: paths confined by the
 * caller, a machine Secure Boot works on (the policy refused others). */
static int
check_firmware(const vtpm_domxml_params *p, const vtpm_firmware *fw, vtpm_error *err)
{
    int rc;

    if (!fw)
        return 0;
    if ((unsigned)fw->type > VTPM_FIRMWARE_UEFI || !memchr(fw->machine, '\0', sizeof(fw->machine)) ||
        !*fw->machine)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "domxml: bad firmware");
    if ((rc = check_text("machine type", fw->machine, err)) < 0 ||
        (rc = check_path("UEFI variable store", p->nvram, err)) < 0 ||
        (rc = check_path("[libvirt] uefi_loader", p->uefi_loader, err)) < 0 ||
        (rc = check_path("[libvirt] uefi_nvram_template", p->uefi_nvram_template, err)) < 0)
        return rc;
    if (fw->secure_boot && (fw->type != VTPM_FIRMWARE_UEFI || !vtpm_firmware_is_q35(fw->machine)))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "domxml: Secure Boot on %s firmware, machine %s",
                              vtpm_firmware_type_str(fw->type), fw->machine);
    if (!p->uefi_loader != !p->uefi_nvram_template)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "domxml: a UEFI loader without a template, or the reverse");
    return 0;
}

static void
add_firmware_metadata(GString *x, const vtpm_firmware *fw)
{
    if (!fw || fw->type != VTPM_FIRMWARE_UEFI)
        return;
    add(x, "      <%s:firmware type='%s' secure_boot='%s' machine='%s'/>\n",
        VTPM_DOMXML_NS_PREFIX, vtpm_firmware_type_str(fw->type), fw->secure_boot ? "yes" : "no",
        fw->machine);
}

/* spec_digest is the first attribute of the first element so that it
 * precedes every peer-supplied value: a reader scanning the text for it
 * cannot be fooled by a flavor name that contains "spec_digest='...". */
static void
add_metadata(GString *x, const vtpm_domxml_params *p, const vtpm_device *tpm)
{
    const vtpm_instance *inst = p->inst;

    add(x, "  <metadata>\n    <%s:instance xmlns:%s='%s'", VTPM_DOMXML_NS_PREFIX,
        VTPM_DOMXML_NS_PREFIX, VTPM_DOMXML_NS);
    if (p->spec_digest)
        add(x, " spec_digest='%s'", p->spec_digest);
    g_string_append(x, ">\n");
    if (inst->flavor->name)
        add(x, "      <%s:flavor name='%s'/>\n", VTPM_DOMXML_NS_PREFIX, inst->flavor->name);
    if (inst->image && inst->image->id)
        add(x, "      <%s:image id='%s'/>\n", VTPM_DOMXML_NS_PREFIX, inst->image->id);
    if (tpm) {
        add(x, "      <%s:vtpm version='%s' model='%s' secret_security='%s'",
            VTPM_DOMXML_NS_PREFIX, vtpm_version_str(tpm->version), vtpm_model_str(tpm->model),
            vtpm_secret_security_str(tpm->secret_security));
        if (p->secret_uuid)
            g_string_append(x, " encrypted='yes'");
        if (p->wrapped_secret)
            add(x, " wrapped_secret='%s'", p->wrapped_secret);
        if (p->identity)
            add(x, " identity='%s'", p->identity);
        g_string_append(x, "/>\n");
    }
    add_firmware_metadata(x, p->firmware);
    add(x, "    </%s:instance>\n  </metadata>\n", VTPM_DOMXML_NS_PREFIX);
}

/* <os> up to the boot elements: the firmware.  libvirt's auto-selection
 * takes the features; a pinned pair is written out as libvirt would
 * after selecting it (pflash, read-only, secure). */
static void
add_os_firmware(GString *x, const vtpm_domxml_params *p, const vtpm_firmware *fw)
{
    bool uefi = fw && fw->type == VTPM_FIRMWARE_UEFI;
    bool pinned = uefi && fw->secure_boot && p->uefi_loader;
    const char *on = uefi && fw->secure_boot ? "yes" : "no";

    g_string_append(x, uefi && !pinned ? "  <os firmware='efi'>\n" : "  <os>\n");
    add(x, "    <type arch='x86_64' machine='%s'>hvm</type>\n", fw ? fw->machine : "q35");
    if (!uefi)
        return;
    if (pinned) {
        add(x, "    <loader readonly='yes' secure='yes' type='pflash'>%s</loader>\n",
            p->uefi_loader);
        if (p->nvram)
            add(x, "    <nvram template='%s'>%s</nvram>\n", p->uefi_nvram_template, p->nvram);
        else
            add(x, "    <nvram template='%s'/>\n", p->uefi_nvram_template);
        return;
    }
    add(x, "    <firmware>\n      <feature enabled='%s' name='enrolled-keys'/>\n"
           "      <feature enabled='%s' name='secure-boot'/>\n    </firmware>\n", on, on);
    if (p->nvram)
        add(x, "    <nvram>%s</nvram>\n", p->nvram);
}

static void
add_os(GString *x, const vtpm_domxml_params *p, const boot_plan *b)
{
    add_os_firmware(x, p, p->firmware);
    if (b->kernel) {
        add(x, "    <kernel>%s</kernel>\n", b->kernel);
        if (b->initrd)
            add(x, "    <initrd>%s</initrd>\n", b->initrd);
        if (b->cmdline)
            add(x, "    <cmdline>%s</cmdline>\n", b->cmdline);
    } else if (b->disk) {
        g_string_append(x, "    <boot dev='hd'/>\n");
    }
    /* else: firmware only, nothing to boot from */
    g_string_append(x, "  </os>\n");
}

static void
add_pcr_banks(GString *x, unsigned banks)
{
    if (!banks)
        return;
    g_string_append(x, "        <active_pcr_banks>\n");
    for (int b = 0; b < VTPM_PCR__COUNT; b++) {
        if (banks & (1u << b))
            add(x, "          <%s/>\n", vtpm_pcr_bank_str(b));
    }
    g_string_append(x, "        </active_pcr_banks>\n");
}

static void
add_devices(GString *x, const vtpm_domxml_params *p, const boot_plan *b,
            const vtpm_device *tpm)
{
    g_string_append(x, "  <devices>\n");
    if (b->disk)
        add(x,
            "    <disk type='file' device='disk'>\n"
            "      <driver name='qemu' type='%s'/>\n"
            "      <source file='%s'/>\n"
            "      <target dev='vda' bus='virtio'/>\n"
            "    </disk>\n",
            b->disk_format, b->disk);
    if (p->console_log)
        add(x,
            "    <serial type='file'>\n"
            "      <source path='%s' append='on'/>\n"
            "      <target port='0'/>\n"
            "    </serial>\n"
            "    <console type='file'>\n"
            "      <source path='%s' append='on'/>\n"
            "      <target type='serial' port='0'/>\n"
            "    </console>\n",
            p->console_log, p->console_log);
    else
        g_string_append(x, "    <serial type='pty'>\n"
                           "      <target port='0'/>\n"
                           "    </serial>\n"
                           "    <console type='pty'>\n"
                           "      <target type='serial' port='0'/>\n"
                           "    </console>\n");
    if (tpm) {
        add(x, "    <tpm model='%s'>\n      <backend type='emulator' version='%s'>\n",
            vtpm_model_str(tpm->model), vtpm_version_str(tpm->version));
        if (p->secret_uuid)
            add(x, "        <encryption secret='%s'/>\n", p->secret_uuid);
        add_pcr_banks(x, tpm->pcr_banks);
        g_string_append(x, "      </backend>\n    </tpm>\n");
    }
    /* No <graphics>: there is no "none" type, absence is how to say it. */
    g_string_append(x, "    <memballoon model='none'/>\n  </devices>\n");
}

int
vtpm_domxml_build(const vtpm_domxml_params *p, char **out, vtpm_error *err)
{
    const vtpm_instance *inst = p ? p->inst : NULL;
    const vtpm_device *tpm = NULL;
    const char *type = "qemu";
    g_autoptr(GString) x = NULL;
    g_autofree char *name = NULL;
    boot_plan boot = { 0 };
    uuid_t u;
    int rc;

    if (!inst || !out)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "domxml: no instance");
    if (p->tpm && p->tpm->version != VTPM_VERSION_NONE)
        tpm = p->tpm;
    /* Nova's rule, and QEMU's: the CRB interface only exists for TPM 2.0. */
    if (tpm && tpm->model == VTPM_MODEL_CRB && tpm->version == VTPM_VERSION_1_2)
        return vtpm_error_set(err, VTPM_FAULT_INVALID_TPM_CONFIG,
                              "TPM model tpm-crb requires TPM version 2.0, not 1.2");
    if (tpm && (rc = check_tpm(tpm, p->secret_uuid, err)) < 0)
        return rc;
    /* An encryption secret without a TPM means the caller lost track. */
    if (!tpm && (p->secret_uuid || p->wrapped_secret))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "TPM secret given without a TPM");
    if (p->wrapped_secret && !p->secret_uuid)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "wrapped TPM secret without encryption");
    if (p->identity && !tpm)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "TPM identity given without a TPM");

    if (p->virt_type && strcmp(p->virt_type, "auto") != 0) {
        if (strcmp(p->virt_type, "qemu") != 0 && strcmp(p->virt_type, "kvm") != 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "unknown virt type '%s'",
                                  p->virt_type);
        type = p->virt_type;
    }
    if (p->spec_digest && !vtpm_proto_is_lower_hex(p->spec_digest, 64))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "spec digest is not 64 lower-case hex digits");
    if (uuid_parse(inst->uuid, u) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "instance uuid '%s' is not a UUID",
                              inst->uuid);
    if (!inst->flavor)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "instance has no flavor");
    if (inst->flavor->vcpus == 0 || inst->flavor->memory_mb == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "flavor needs at least 1 vcpu and 1 MiB of memory");
    if ((rc = check_firmware(p, p->firmware, err)) < 0 ||
        (rc = check_text("instance name", inst->name, err)) < 0 ||
        (rc = check_text("flavor name", inst->flavor->name, err)) < 0 ||
        (rc = check_text("image id", inst->image ? inst->image->id : NULL, err)) < 0 ||
        (rc = check_path("console log", p->console_log, err)) < 0 ||
        (rc = plan_boot(p, &boot, err)) < 0)
        return rc;

    name = vtpm_domxml_domain_name(inst->uuid);
    x = g_string_sized_new(2048);
    add(x, "<domain type='%s'>\n  <name>%s</name>\n  <uuid>%s</uuid>\n", type, name,
        inst->uuid);
    /* libvirt refuses an empty <title>. */
    if (inst->name && inst->name[0])
        add(x, "  <title>%s</title>\n", inst->name);
    add_metadata(x, p, tpm);
    add(x, "  <memory unit='MiB'>%" G_GUINT64_FORMAT "</memory>\n"
           "  <vcpu>%" G_GUINT64_FORMAT "</vcpu>\n",
        inst->flavor->memory_mb, inst->flavor->vcpus);
    add_os(x, p, &boot);
    /* Without ACPI the guest finds no TPM (it is described in ACPI
     * tables) and cannot be powered off gracefully.  Secure Boot without
     * SMM would leave the variable store writable by the guest's OS. */
    g_string_append(x, "  <features>\n    <acpi/>\n");
    if (p->firmware && p->firmware->secure_boot)
        g_string_append(x, "    <smm state='on'/>\n");
    g_string_append(x, "  </features>\n"
                       "  <on_poweroff>destroy</on_poweroff>\n"
                       "  <on_reboot>restart</on_reboot>\n"
                       "  <on_crash>destroy</on_crash>\n");
    add_devices(x, p, &boot, tpm);
    g_string_append(x, "</domain>\n");

    *out = g_string_free(g_steal_pointer(&x), FALSE);
    return 0;
}

/* ---- reading our metadata back ------------------------------------------ */

static const char *
local_name(const char *qname)
{
    const char *colon = strchr(qname, ':');

    return colon ? colon + 1 : qname;
}

static const char *
attr(const char **names, const char **values, const char *want)
{
    for (size_t i = 0; names[i]; i++) {
        if (strcmp(local_name(names[i]), want) == 0)
            return values[i];
    }
    return NULL;
}

typedef struct {
    vtpm_domxml_meta m;
    bool bad_tpm;
} meta_parse;

/* <vtpmd:firmware type secure_boot machine>: unknown values are as bad as
 * unknown vTPM values (a store would be judged by them). */
static void
meta_firmware(meta_parse *mp, const char **names, const char **values)
{
    int type = vtpm_firmware_type_parse(attr(names, values, "type"));
    const char *sb = attr(names, values, "secure_boot");
    const char *machine = attr(names, values, "machine");

    if (type < 0 || !sb || (strcmp(sb, "yes") != 0 && strcmp(sb, "no") != 0) || !machine ||
        strlen(machine) > VTPM_FIRMWARE_MACHINE_MAX) {
        mp->bad_tpm = true;
        return;
    }
    mp->m.firmware.type = type;
    mp->m.firmware.secure_boot = strcmp(sb, "yes") == 0;
    mp->m.firmware.policy = mp->m.firmware.secure_boot ? VTPM_SECURE_BOOT_REQUIRED
                                                       : VTPM_SECURE_BOOT_DISABLED;
    g_strlcpy(mp->m.firmware.machine, machine, sizeof(mp->m.firmware.machine));
}

static void
meta_start(GMarkupParseContext *ctx, const char *element, const char **names,
           const char **values, gpointer user, GError **gerr)
{
    meta_parse *mp = user;
    const char *el = local_name(element);
    const char *v;

    if (strcmp(el, "instance") == 0) {
        if ((v = attr(names, values, "spec_digest")) && !mp->m.spec_digest)
            mp->m.spec_digest = g_strdup(v);
    } else if (strcmp(el, "flavor") == 0) {
        if ((v = attr(names, values, "name")) && !mp->m.flavor)
            mp->m.flavor = g_strdup(v);
    } else if (strcmp(el, "image") == 0) {
        if ((v = attr(names, values, "id")) && !mp->m.image)
            mp->m.image = g_strdup(v);
    } else if (strcmp(el, "vtpm") == 0) {
        int ver = vtpm_version_parse(attr(names, values, "version"));
        int model = vtpm_model_parse(attr(names, values, "model"));
        int sec = vtpm_secret_security_parse(attr(names, values, "secret_security"));

        if (ver < 0 || model < 0 || sec < 0) {
            mp->bad_tpm = true;
            return;
        }
        mp->m.tpm.version = ver;
        mp->m.tpm.model = model;
        mp->m.tpm.secret_security = sec;
        mp->m.encrypted = g_strcmp0(attr(names, values, "encrypted"), "yes") == 0;
        if ((v = attr(names, values, "wrapped_secret")) && !mp->m.wrapped_secret)
            mp->m.wrapped_secret = g_strdup(v);
        if ((v = attr(names, values, "identity")) && !mp->m.identity)
            mp->m.identity = g_strdup(v);
    } else if (strcmp(el, "firmware") == 0) {
        meta_firmware(mp, names, values);
    }
}

/* Parse @text with @parser, whose handlers fill @mp; *out on success. */
static int
parse_with(const GMarkupParser *parser, gpointer user, meta_parse *mp, const char *text,
           vtpm_domxml_meta *out, vtpm_error *err)
{
    g_autoptr(GMarkupParseContext) ctx =
        g_markup_parse_context_new(parser, G_MARKUP_PREFIX_ERROR_POSITION, user, NULL);
    g_autoptr(GError) gerr = NULL;

    mp->m.tpm.version = VTPM_VERSION_NONE;
    if (!g_markup_parse_context_parse(ctx, text, -1, &gerr) ||
        !g_markup_parse_context_end_parse(ctx, &gerr)) {
        vtpm_domxml_meta_clear(&mp->m);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "domain metadata: %s", gerr->message);
    }
    if (mp->bad_tpm) {
        vtpm_domxml_meta_clear(&mp->m);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "domain metadata: unknown vTPM or firmware values");
    }
    *out = mp->m;
    return 0;
}

int
vtpm_domxml_parse_metadata(const char *md, vtpm_domxml_meta *out, vtpm_error *err)
{
    static const GMarkupParser parser = { .start_element = meta_start };
    meta_parse mp = { 0 };

    return parse_with(&parser, &mp, &mp, md, out, err);
}

/* Reading a whole domain: only the element libvirt's virDomainGetMetadata
 * would hand out, the first child of /domain/metadata in our namespace
 * (declared on that element, as libvirt writes it), goes to meta_start. */
typedef struct {
    meta_parse mp;
    int depth;        /* of the element open now */
    bool in_domain;   /* the root is <domain> */
    bool in_metadata; /* /domain/metadata is open */
    int ours;         /* depth of our element while it is open, else 0 */
    bool found;
} domain_parse;

static bool
in_our_ns(const char *element, const char **names, const char **values)
{
    const char *colon = strchr(element, ':');
    g_autofree char *decl = colon ? g_strdup_printf("xmlns:%.*s", (int)(colon - element), element)
                                  : g_strdup("xmlns");

    for (size_t i = 0; names[i]; i++) {
        if (strcmp(names[i], decl) == 0)
            return strcmp(values[i], VTPM_DOMXML_NS) == 0;
    }
    return false;
}

static void
domain_start(GMarkupParseContext *ctx, const char *element, const char **names,
             const char **values, gpointer user, GError **gerr)
{
    domain_parse *dp = user;

    dp->depth++;
    if (dp->ours) {
        meta_start(ctx, element, names, values, &dp->mp, gerr);
    } else if (dp->depth == 1) {
        dp->in_domain = strcmp(element, "domain") == 0;
    } else if (dp->depth == 2) {
        dp->in_metadata = dp->in_domain && strcmp(element, "metadata") == 0;
    } else if (dp->depth == 3 && dp->in_metadata && !dp->found &&
               in_our_ns(element, names, values)) {
        dp->ours = dp->depth;
        dp->found = true;
        meta_start(ctx, element, names, values, &dp->mp, gerr);
    }
}

static void
domain_end(GMarkupParseContext *ctx, const char *element, gpointer user, GError **gerr)
{
    domain_parse *dp = user;

    if (dp->ours == dp->depth)
        dp->ours = 0;
    if (dp->depth == 2)
        dp->in_metadata = false;
    dp->depth--;
}

int
vtpm_domxml_parse_domain_metadata(const char *xml, vtpm_domxml_meta *out, vtpm_error *err)
{
    static const GMarkupParser parser = { .start_element = domain_start,
                                          .end_element = domain_end };
    domain_parse dp = { 0 };

    return parse_with(&parser, &dp, &dp.mp, xml, out, err);
}

/* /domain/os/nvram's text, collected while it is open. */
typedef struct {
    int depth;
    bool path_ok[4]; /* the open elements at depth 1..3 are domain, os, nvram */
    GString *text;
    bool found;
} nvram_parse;

static void
nvram_start(GMarkupParseContext *ctx, const char *element, const char **names,
            const char **values, gpointer user, GError **gerr)
{
    static const char *const want[] = { NULL, "domain", "os", "nvram" };
    nvram_parse *np = user;

    np->depth++;
    if (np->depth <= 3)
        np->path_ok[np->depth] = (np->depth == 1 || np->path_ok[np->depth - 1]) &&
                                 strcmp(element, want[np->depth]) == 0;
}

static void
nvram_end(GMarkupParseContext *ctx, const char *element, gpointer user, GError **gerr)
{
    nvram_parse *np = user;

    if (np->depth == 3 && np->path_ok[3])
        np->found = true;
    np->depth--;
}

static void
nvram_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer user, GError **gerr)
{
    nvram_parse *np = user;

    if (np->depth == 3 && np->path_ok[3] && !np->found)
        g_string_append_len(np->text, text, (gssize)len);
}

int
vtpm_domxml_parse_nvram(const char *xml, char **out, vtpm_error *err)
{
    static const GMarkupParser parser = { .start_element = nvram_start,
                                          .end_element = nvram_end,
                                          .text = nvram_text };
    g_autoptr(GString) text = g_string_new(NULL);
    nvram_parse np = { .text = text };
    g_autoptr(GMarkupParseContext) ctx =
        g_markup_parse_context_new(&parser, G_MARKUP_PREFIX_ERROR_POSITION, &np, NULL);
    g_autoptr(GError) gerr = NULL;

    if (!xml || !g_markup_parse_context_parse(ctx, xml, -1, &gerr) ||
        !g_markup_parse_context_end_parse(ctx, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "domain XML: %s",
                              gerr ? gerr->message : "none");
    g_strstrip(text->str);
    *out = np.found && *text->str ? g_strdup(text->str) : NULL;
    return 0;
}

void
vtpm_domxml_meta_clear(vtpm_domxml_meta *m)
{
    if (!m)
        return;
    g_clear_pointer(&m->spec_digest, g_free);
    g_clear_pointer(&m->flavor, g_free);
    g_clear_pointer(&m->image, g_free);
    g_clear_pointer(&m->wrapped_secret, g_free);
    g_clear_pointer(&m->identity, g_free);
}
