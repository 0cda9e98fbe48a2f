/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "firmware.h"
#include "policy.h"

#define KEY_FIRMWARE "hw_firmware_type"
#define KEY_MACHINE "hw_machine_type"
#define KEY_SB_FLAVOR "os:secure_boot"
#define KEY_SB_IMAGE "os_secure_boot"

/* A descriptor is a few hundred bytes; anything this big is not one. */
#define DESCRIPTOR_MAX (64 * 1024)

static const char *const type_names[] = {
    [VTPM_FIRMWARE_BIOS] = "bios",
    [VTPM_FIRMWARE_UEFI] = "uefi",
};
static const char *const secure_boot_names[] = {
    [VTPM_SECURE_BOOT_DISABLED] = "disabled",
    [VTPM_SECURE_BOOT_REQUIRED] = "required",
    [VTPM_SECURE_BOOT_OPTIONAL] = "optional",
};

/* Lowest precedence first: a file of the same name in a later directory
 * replaces an earlier one, as libvirt and QEMU read them. */
static const char *const standard_dirs[] = { "/usr/share/qemu/firmware", "/etc/qemu/firmware",
                                             NULL };

static int
lookup_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++) {
        if (strcmp(names[i], s) == 0)
            return (int)i;
    }
    return -1;
}

const char *
vtpm_firmware_type_str(vtpm_firmware_type t)
{
    return (unsigned)t < G_N_ELEMENTS(type_names) ? type_names[t] : NULL;
}

const char *
vtpm_secure_boot_str(vtpm_secure_boot s)
{
    return (unsigned)s < G_N_ELEMENTS(secure_boot_names) ? secure_boot_names[s] : NULL;
}

int
vtpm_firmware_type_parse(const char *s)
{
    return lookup_name(type_names, G_N_ELEMENTS(type_names), s);
}

int
vtpm_secure_boot_parse(const char *s)
{
    return lookup_name(secure_boot_names, G_N_ELEMENTS(secure_boot_names), s);
}

/* ---- policy ---------------------------------------------------------------- */

bool
vtpm_firmware_is_q35(const char *machine)
{
    return machine && (strcmp(machine, "q35") == 0 || g_str_has_prefix(machine, "pc-q35-"));
}

/* "<family>-<version>": digits and dots after the family's prefix. */
static bool
versioned(const char *machine, const char *prefix)
{
    const char *v = machine + strlen(prefix);

    if (!g_str_has_prefix(machine, prefix) || !g_ascii_isdigit(*v))
        return false;
    return strspn(v, "0123456789.") == strlen(v);
}

/* The x86_64 machine types vtpmd builds domains for: a TPM and UEFI need
 * ACPI and PCI, which isapc and microvm lack, and anything else is not a
 * PC at all. */
static bool
machine_ok(const char *m)
{
    return strcmp(m, "q35") == 0 || strcmp(m, "pc") == 0 || versioned(m, "pc-q35-") ||
           versioned(m, "pc-i440fx-");
}

static int
bad_value(vtpm_error *err, const char *source, const char *key, const char *value,
          const char *allowed)
{
    return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s %s=%s: %s", source, key, value,
                          allowed);
}

/* Image only, as in Nova (ImageMetaProps.hw_firmware_type); absent means
 * BIOS on x86_64.  Nova's enum field refuses an empty value too. */
static int
resolve_type(GHashTable *props, vtpm_firmware_type *out, vtpm_error *err)
{
    const char *v = props ? g_hash_table_lookup(props, KEY_FIRMWARE) : NULL;
    int t;

    if (!v) {
        *out = VTPM_FIRMWARE_BIOS;
        return 0;
    }
    t = vtpm_firmware_type_parse(v);
    if (t < 0)
        return bad_value(err, VTPM_POLICY_SRC_IMAGE, KEY_FIRMWARE, v,
                         "invalid firmware type; allowed: uefi, bios");
    *out = t;
    return 0;
}

static int
resolve_machine(GHashTable *props, char *out, vtpm_error *err)
{
    const char *v = props ? g_hash_table_lookup(props, KEY_MACHINE) : NULL;

    if (!v) {
        g_strlcpy(out, "q35", VTPM_FIRMWARE_MACHINE_MAX + 1);
        return 0;
    }
    if (strlen(v) > VTPM_FIRMWARE_MACHINE_MAX || !machine_ok(v))
        return bad_value(err, VTPM_POLICY_SRC_IMAGE, KEY_MACHINE, v,
                         "not an x86_64 machine type vtpmd builds domains for; allowed: q35, "
                         "pc, pc-q35-<version>, pc-i440fx-<version>");
    g_strlcpy(out, v, VTPM_FIRMWARE_MACHINE_MAX + 1);
    return 0;
}

/* hardware.get_secure_boot_constraint: the flavor/image pair under
 * Nova's conflict rule, then the value checked. */
static int
resolve_policy(GHashTable *specs, GHashTable *props, vtpm_secure_boot *out,
               vtpm_policy_value *where, vtpm_error *err)
{
    int rc, p;

    if ((rc = vtpm_policy_unique_value(specs, props, KEY_SB_FLAVOR, KEY_SB_IMAGE, where, err)) < 0)
        return rc;
    if (!where->source) {
        *out = VTPM_SECURE_BOOT_DISABLED;
        return 0;
    }
    p = vtpm_secure_boot_parse(where->value);
    if (p < 0)
        return bad_value(err, where->source, where->key, where->value,
                         "invalid secure boot policy; allowed: required, disabled, optional");
    *out = p;
    return 0;
}

/*
 * Secure Boot needs UEFI, and on x86_64 the q35 machine type (SMM guards
 * the variable store there).  Nova leaves a BIOS guest that asks for
 * Secure Boot without it, which would pass "required" off as done; here
 * the request is refused instead.
 */
static int
check_required(const vtpm_firmware *fw, const vtpm_policy_value *where, GHashTable *props,
               vtpm_error *err)
{
    const char *type = props ? g_hash_table_lookup(props, KEY_FIRMWARE) : NULL;
    const char *machine = props ? g_hash_table_lookup(props, KEY_MACHINE) : NULL;

    if (fw->policy != VTPM_SECURE_BOOT_REQUIRED)
        return 0;
    if (fw->type != VTPM_FIRMWARE_UEFI)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s %s=%s: Secure Boot needs UEFI firmware, but %s %s%s%s",
                              where->source, where->key, where->value, VTPM_POLICY_SRC_IMAGE,
                              KEY_FIRMWARE, type ? "=" : " is not set (BIOS)", type ? type : "");
    if (!vtpm_firmware_is_q35(fw->machine))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s %s=%s: Secure Boot needs the q35 machine type, but %s %s=%s",
                              where->source, where->key, where->value, VTPM_POLICY_SRC_IMAGE,
                              KEY_MACHINE, machine);
    return 0;
}

int
vtpm_firmware_resolve(GHashTable *extra_specs, GHashTable *image_props, vtpm_firmware *out,
                      vtpm_error *err)
{
    vtpm_firmware fw = { 0 };
    vtpm_policy_value where = { 0 };
    int rc;

    if ((rc = resolve_type(image_props, &fw.type, err)) < 0 ||
        (rc = resolve_machine(image_props, fw.machine, err)) < 0 ||
        (rc = resolve_policy(extra_specs, image_props, &fw.policy, &where, err)) < 0 ||
        (rc = check_required(&fw, &where, image_props, err)) < 0)
        return rc;
    fw.secure_boot = fw.policy == VTPM_SECURE_BOOT_REQUIRED;
    *out = fw;
    return 0;
}

void
vtpm_firmware_decide(vtpm_firmware *fw, bool host_secure_boot)
{
    if (fw->policy == VTPM_SECURE_BOOT_OPTIONAL)
        fw->secure_boot = host_secure_boot && fw->type == VTPM_FIRMWARE_UEFI &&
                          vtpm_firmware_is_q35(fw->machine);
}

size_t
vtpm_firmware_required_traits(const vtpm_firmware *fw, const char *out[2])
{
    size_t n = 0;

    if (!fw || fw->type != VTPM_FIRMWARE_UEFI)
        return 0;
    out[n++] = VTPM_TRAIT_FIRMWARE_UEFI;
    if (fw->secure_boot)
        out[n++] = VTPM_TRAIT_UEFI_SECURE_BOOT;
    return n;
}

bool
vtpm_firmware_same_store(const vtpm_firmware *a, const vtpm_firmware *b)
{
    return a && b && a->type == VTPM_FIRMWARE_UEFI && b->type == VTPM_FIRMWARE_UEFI &&
           a->secure_boot == b->secure_boot;
}

/* ---- domain capabilities --------------------------------------------------- */

typedef enum { OS_ENUM_OTHER, OS_ENUM_FIRMWARE, OS_ENUM_TYPE, OS_ENUM_SECURE } os_enum;

typedef struct {
    vtpm_firmware_facts f;
    os_enum kind;    /* of the <enum> open now */
    bool in_value;   /* a <value> of such an enum */
    bool in_machine; /* /domainCapabilities/machine */
    GString *text;
} domcaps_parse;

static const char *
attr(const char **names, const char **values, const char *want)
{
    for (size_t i = 0; names[i]; i++) {
        if (strcmp(names[i], want) == 0)
            return values[i];
    }
    return NULL;
}

/* The names of the open elements, outermost first, joined by '/'. */
static char *
element_path(GMarkupParseContext *ctx)
{
    g_autoptr(GString) s = g_string_new(NULL);
    g_autoptr(GPtrArray) names = g_ptr_array_new();

    for (const GSList *l = g_markup_parse_context_get_element_stack(ctx); l; l = l->next)
        g_ptr_array_insert(names, 0, l->data);
    for (guint i = 0; i < names->len; i++)
        g_string_append_printf(s, "/%s", (const char *)names->pdata[i]);
    return g_string_free(g_steal_pointer(&s), FALSE);
}

static os_enum
enum_kind(const char *path, const char *name)
{
    if (!name)
        return OS_ENUM_OTHER;
    if (strcmp(path, "/domainCapabilities/os/enum") == 0 && strcmp(name, "firmware") == 0)
        return OS_ENUM_FIRMWARE;
    if (strcmp(path, "/domainCapabilities/os/loader/enum") != 0)
        return OS_ENUM_OTHER;
    if (strcmp(name, "type") == 0)
        return OS_ENUM_TYPE;
    if (strcmp(name, "secure") == 0)
        return OS_ENUM_SECURE;
    return OS_ENUM_OTHER;
}

static void
os_start(GMarkupParseContext *ctx, const char *element, const char **names, const char **values,
         gpointer user, GError **gerr)
{
    domcaps_parse *p = user;
    g_autofree char *path = element_path(ctx);

    if (strcmp(path, "/domainCapabilities/machine") == 0) {
        p->in_machine = true;
        g_string_truncate(p->text, 0);
    } else if (strcmp(element, "enum") == 0) {
        p->kind = enum_kind(path, attr(names, values, "name"));
    } else if (strcmp(element, "value") == 0 && p->kind != OS_ENUM_OTHER) {
        p->in_value = true;
        g_string_truncate(p->text, 0);
    }
}

static void
os_value(domcaps_parse *p, const char *v)
{
    switch (p->kind) {
    case OS_ENUM_FIRMWARE:
        p->f.efi_autoselect |= strcmp(v, "efi") == 0;
        break;
    case OS_ENUM_TYPE:
        p->f.pflash |= strcmp(v, "pflash") == 0;
        break;
    case OS_ENUM_SECURE:
        p->f.secure |= strcmp(v, "yes") == 0;
        break;
    case OS_ENUM_OTHER:
        break;
    }
}

static void
os_end(GMarkupParseContext *ctx, const char *element, gpointer user, GError **gerr)
{
    domcaps_parse *p = user;

    if (p->in_machine) {
        p->in_machine = false;
        g_strlcpy(p->f.machine, g_strstrip(p->text->str), sizeof(p->f.machine));
    } else if (p->in_value) {
        p->in_value = false;
        os_value(p, g_strstrip(p->text->str));
    } else if (strcmp(element, "enum") == 0) {
        p->kind = OS_ENUM_OTHER;
    }
}

static void
os_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer user, GError **gerr)
{
    domcaps_parse *p = user;

    if (p->in_value || p->in_machine)
        g_string_append_len(p->text, text, len);
}

int
vtpm_firmware_parse_domcaps(const char *xml, vtpm_firmware_facts *facts, vtpm_error *err)
{
    static const GMarkupParser parser = { os_start, os_end, os_text, NULL, NULL };
    g_autoptr(GString) text = g_string_new(NULL);
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GMarkupParseContext) ctx = NULL;
    domcaps_parse p = { .text = text };

    if (!xml)
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "no domain capabilities");
    ctx = g_markup_parse_context_new(&parser, 0, &p, NULL);
    if (!g_markup_parse_context_parse(ctx, xml, -1, &gerr) ||
        !g_markup_parse_context_end_parse(ctx, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR,
                              "cannot parse domain capabilities: %s", gerr->message);
    facts->domcaps_read = true;
    memcpy(facts->machine, p.f.machine, sizeof(facts->machine));
    facts->efi_autoselect = p.f.efi_autoselect;
    facts->pflash = p.f.pflash;
    facts->secure = p.f.secure;
    return 0;
}

/* ---- firmware descriptors -------------------------------------------------- */

/* What one descriptor says, as far as the traits go. */
typedef struct {
    bool uefi;     /* interface-types holds "uefi", mapping device "flash" */
    bool target;   /* an x86_64 target whose machines match the q35 machine */
    bool secure;   /* features: secure-boot */
    bool enrolled; /* features: enrolled-keys */
    char *executable;
} descriptor;

static void
descriptor_clear(descriptor *d)
{
    g_clear_pointer(&d->executable, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(descriptor, descriptor_clear)

/* Members of the types expected, or NULL: a descriptor of another shape
 * simply offers nothing. */
static JsonArray *
member_array(JsonObject *o, const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;

    return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

static JsonObject *
member_object(JsonObject *o, const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;

    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static const char *
node_string(JsonNode *n)
{
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n)
               : NULL;
}

static const char *
member_string(JsonObject *o, const char *member)
{
    return node_string(o ? json_object_get_member(o, member) : NULL);
}

static bool
array_has(JsonObject *o, const char *member, const char *want)
{
    JsonArray *a = member_array(o, member);

    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        if (g_strcmp0(node_string(json_array_get_element(a, i)), want) == 0)
            return true;
    }
    return false;
}

/* Globs like "pc-q35-*" against the canonical machine domcaps named; with
 * none known (domcaps unread), any q35 glob. */
static bool
machines_match(JsonObject *target, const char *machine)
{
    JsonArray *a = member_array(target, "machines");

    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        const char *glob = node_string(json_array_get_element(a, i));

        if (!glob)
            continue;
        if (*machine ? g_pattern_match_simple(glob, machine) : strstr(glob, "q35") != NULL)
            return true;
    }
    return false;
}

static bool
targets_match(JsonObject *o, const char *machine)
{
    JsonArray *a = member_array(o, "targets");

    for (guint i = 0; a && i < json_array_get_length(a); i++) {
        JsonNode *n = json_array_get_element(a, i);
        JsonObject *t = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
        const char *arch = member_string(t, "architecture");

        if (arch && strcmp(arch, "x86_64") == 0 && machines_match(t, machine))
            return true;
    }
    return false;
}

/* Parse the descriptor in @text; false when it is not a JSON object. */
static bool
descriptor_parse(const char *text, gsize len, const char *machine, descriptor *out)
{
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    JsonObject *o, *mapping, *exe;

    if (!json_parser_load_from_data(parser, text, (gssize)len, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
        return false;
    o = json_node_get_object(json_parser_get_root(parser));
    mapping = member_object(o, "mapping");
    exe = member_object(mapping, "executable");
    out->uefi = array_has(o, "interface-types", "uefi") &&
                g_strcmp0(member_string(mapping, "device"), "flash") == 0;
    out->target = targets_match(o, machine);
    out->secure = array_has(o, "features", "secure-boot");
    out->enrolled = array_has(o, "features", "enrolled-keys");
    out->executable = g_strdup(member_string(exe, "filename"));
    return true;
}

/* The descriptors that count: file name -> path, a later directory's file
 * replacing an earlier one's of the same name. */
static GHashTable *
descriptor_files(const char *const *dirs)
{
    GHashTable *files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    for (; dirs && *dirs; dirs++) {
        g_autoptr(GDir) d = g_dir_open(*dirs, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
            if (g_str_has_suffix(name, ".json"))
                g_hash_table_replace(files, g_strdup(name), g_build_filename(*dirs, name, NULL));
        }
    }
    return files;
}

/* Whether @a and @b name the same file (Debian's snakeoil loader is a
 * link to the secboot one, which the descriptors name). */
static bool
same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static void
count_descriptor(const char *path, const vtpm_firmware_config *cfg, vtpm_firmware_facts *f)
{
    g_autofree char *text = NULL;
    g_auto(descriptor) d = { 0 };
    gsize len = 0;

    if (!g_file_get_contents(path, &text, &len, NULL) || len > DESCRIPTOR_MAX) {
        f->unreadable++;
        return;
    }
    /* An empty file masks one of the same name, as in QEMU. */
    if (len == 0)
        return;
    if (!descriptor_parse(text, len, f->machine, &d)) {
        f->unreadable++;
        return;
    }
    if (!d.uefi || !d.target)
        return;
    f->descriptors++;
    f->plain_uefi |= !d.secure && !d.enrolled;
    f->secure_enrolled |= d.secure && d.enrolled;
    if (f->pinned && d.secure && same_file(d.executable, cfg->loader))
        f->loader_secure = true;
}

/* 0 when @path is a regular file we can read, else an errno (EINVAL: not
 * a regular file). */
static int
readable(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    int e = 0;

    if (fd < 0)
        return errno;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if (!S_ISREG(st.st_mode))
        e = EINVAL;
    close(fd);
    return e;
}

void
vtpm_firmware_scan(const vtpm_firmware_config *cfg, vtpm_firmware_facts *f)
{
    static const vtpm_firmware_config none = { 0 };
    g_autoptr(GHashTable) files = NULL;
    GHashTableIter it;
    gpointer path;

    if (!cfg)
        cfg = &none;
    f->descriptors = f->unreadable = 0;
    f->plain_uefi = f->secure_enrolled = f->loader_secure = false;
    f->pinned = cfg->loader && cfg->nvram_template;
    f->loader_errno = f->pinned ? readable(cfg->loader) : 0;
    f->template_errno = f->pinned ? readable(cfg->nvram_template) : 0;
    files = descriptor_files(cfg->descriptor_dirs ? cfg->descriptor_dirs : standard_dirs);
    g_hash_table_iter_init(&it, files);
    while (g_hash_table_iter_next(&it, NULL, &path))
        count_descriptor(path, cfg, f);
}

/* ---- traits ---------------------------------------------------------------- */

static void
add_version_reason(GPtrArray *r, const char *what, unsigned long have, unsigned long min)
{
    g_ptr_array_add(r, g_strdup_printf("%s %lu.%lu.%lu is older than %lu.%lu.%lu (UEFI guests)",
                                       what, have / 1000000, have / 1000 % 1000, have % 1000,
                                       min / 1000000, min / 1000 % 1000, min % 1000));
}

/* What both traits need: the versions, x86_64, domain capabilities of a
 * q35 machine with a pflash loader. */
static void
common_reasons(const vtpm_firmware_facts *f, const vtpm_firmware_host *h, GPtrArray *r)
{
    if (h->libvirt_version < VTPM_FIRMWARE_MIN_LIBVIRT)
        add_version_reason(r, "libvirt", h->libvirt_version, VTPM_FIRMWARE_MIN_LIBVIRT);
    if (h->qemu_version == 0)
        g_ptr_array_add(r, g_strdup("QEMU version unknown (the libvirt driver is not QEMU)"));
    else if (h->qemu_version < VTPM_FIRMWARE_MIN_QEMU)
        add_version_reason(r, "QEMU", h->qemu_version, VTPM_FIRMWARE_MIN_QEMU);
    if (!h->arch)
        g_ptr_array_add(r, g_strdup("host architecture unknown (not in libvirt's capabilities)"));
    else if (strcmp(h->arch, "x86_64") != 0)
        g_ptr_array_add(r, g_strdup_printf("host architecture %s is not x86_64", h->arch));
    if (!f->domcaps_read) {
        g_ptr_array_add(r, g_strdup_printf("domain capabilities unavailable: %s",
                                           h->domcaps_error ? h->domcaps_error : "not read"));
        return;
    }
    if (!vtpm_firmware_is_q35(f->machine))
        g_ptr_array_add(r, g_strdup_printf("QEMU offers no q35 machine type (domain capabilities "
                                           "name '%s')", f->machine));
    if (!f->pflash)
        g_ptr_array_add(r, g_strdup("domain capabilities list no pflash loader (UEFI firmware "
                                    "is loaded as pflash)"));
}

static void
no_descriptor(const vtpm_firmware_facts *f, const char *what, GPtrArray *r)
{
    g_autofree char *read = f->unreadable ? g_strdup_printf(", %u unreadable", f->unreadable)
                                          : g_strdup("");

    if (f->descriptors == 0)
        g_ptr_array_add(r, g_strdup_printf("no UEFI firmware descriptor for x86_64 %s in "
                                           "/usr/share/qemu/firmware or /etc/qemu/firmware%s "
                                           "(no OVMF: install the ovmf package)",
                                           *f->machine ? f->machine : "q35", read));
    else
        g_ptr_array_add(r, g_strdup_printf("none of the %u UEFI firmware descriptors for %s "
                                           "offers %s%s",
                                           f->descriptors, *f->machine ? f->machine : "q35",
                                           what, read));
}

/* Secure Boot from the pinned pair: both files there, and a descriptor
 * that says the loader is a Secure Boot build (libvirt reads nothing
 * else about a loader, and neither can vtpmd). */
static void
pinned_reasons(const vtpm_firmware_facts *f, const vtpm_firmware_config *cfg, GPtrArray *r)
{
    if (f->loader_errno)
        g_ptr_array_add(r, g_strdup_printf("[libvirt] uefi_loader %s: %s", cfg->loader,
                                           f->loader_errno == EINVAL ? "not a regular file"
                                                                     : g_strerror(f->loader_errno)));
    if (f->template_errno)
        g_ptr_array_add(r, g_strdup_printf("[libvirt] uefi_nvram_template %s: %s",
                                           cfg->nvram_template,
                                           f->template_errno == EINVAL
                                               ? "not a regular file"
                                               : g_strerror(f->template_errno)));
    if (!f->loader_errno && !f->loader_secure)
        g_ptr_array_add(r, g_strdup_printf("no firmware descriptor in /usr/share/qemu/firmware or "
                                           "/etc/qemu/firmware describes [libvirt] uefi_loader "
                                           "%s as Secure Boot firmware for x86_64 q35 (feature "
                                           "secure-boot)", cfg->loader));
}

void
vtpm_firmware_trait_reasons(const char *trait, const vtpm_firmware_facts *f,
                            const vtpm_firmware_config *cfg, const vtpm_firmware_host *host,
                            GPtrArray *out)
{
    static const vtpm_firmware_config none = { 0 };
    bool secure = strcmp(trait, VTPM_TRAIT_UEFI_SECURE_BOOT) == 0;

    if (!cfg)
        cfg = &none;
    common_reasons(f, host, out);
    if (!f->domcaps_read)
        return;
    if (secure && f->pinned) {
        pinned_reasons(f, cfg, out);
        return;
    }
    if (!f->efi_autoselect)
        g_ptr_array_add(out, g_strdup("libvirt's firmware auto-selection offers no UEFI "
                                      "firmware for q35 (domain capabilities list no 'efi' "
                                      "firmware)"));
    if (!secure && !f->plain_uefi) {
        no_descriptor(f, "UEFI without Secure Boot", out);
        return;
    }
    if (!secure)
        return;
    if (!f->secure)
        g_ptr_array_add(out, g_strdup("domain capabilities offer no secure loader for q35 (no "
                                      "firmware descriptor with Secure Boot)"));
    if (!f->secure_enrolled)
        no_descriptor(f, "Secure Boot with enrolled keys (or set [libvirt] uefi_loader and "
                         "uefi_nvram_template)", out);
}
