/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <libvirt/virterror.h>

#include "preflight.h"

/* What libvirt runs for an emulated TPM, and the Debian package of each. */
static const struct {
    const char *prog;
    const char *package;
} swtpm_progs[] = {
    { "swtpm", "swtpm" },
    { "swtpm_setup", "swtpm-tools" },
    { "swtpm_ioctl", "swtpm-tools" },
};

#define NAMES_SHOWN 3

int
vtpm_preflight_swtpm(const vtpm_config *cfg, vtpm_error *err)
{
    g_autoptr(GString) missing = g_string_new(NULL);
    g_autoptr(GString) packages = g_string_new(NULL);
    unsigned n = 0;

    if (!cfg->libvirt.swtpm_enabled)
        return 0;
    for (size_t i = 0; i < G_N_ELEMENTS(swtpm_progs); i++) {
        g_autofree char *found = g_find_program_in_path(swtpm_progs[i].prog);

        if (found)
            continue;
        g_string_append_printf(missing, "%s%s", n++ ? ", " : "", swtpm_progs[i].prog);
        if (!strstr(packages->str, swtpm_progs[i].package))
            g_string_append_printf(packages, "%s%s", packages->len ? " and " : "",
                                   swtpm_progs[i].package);
    }
    if (n)
        return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                              "[libvirt] swtpm_enabled is true but %s %s not on PATH (%s): "
                              "install the %s package%s, or set [libvirt] swtpm_enabled = false",
                              missing->str, n > 1 ? "are" : "is",
                              g_getenv("PATH") ? g_getenv("PATH") : "unset", packages->str,
                              strchr(packages->str, ' ') ? "s" : "");

    /* As Nova: cold migration and restores chown the state to them. */
    errno = 0;
    if (!getpwnam(cfg->libvirt.swtpm_user))
        return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                              "[libvirt] swtpm_user: user '%s' does not exist on this host%s%s: "
                              "set swtpm_user to the user libvirt runs swtpm as (swtpm_user in "
                              "/etc/libvirt/qemu.conf; the swtpm package creates 'tss')",
                              cfg->libvirt.swtpm_user, errno ? ": " : "",
                              errno ? g_strerror(errno) : "");
    errno = 0;
    if (!getgrnam(cfg->libvirt.swtpm_group))
        return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                              "[libvirt] swtpm_group: group '%s' does not exist on this host%s%s: "
                              "set swtpm_group to the group libvirt runs swtpm as (swtpm_group "
                              "in /etc/libvirt/qemu.conf; the swtpm package creates 'tss')",
                              cfg->libvirt.swtpm_group, errno ? ": " : "",
                              errno ? g_strerror(errno) : "");
    return 0;
}

/* ---- domain XML ------------------------------------------------------------- */

static void
xml_start(GMarkupParseContext *ctx, const char *name, const char **names, const char **values,
          gpointer data, GError **error)
{
    const GSList *s = g_markup_parse_context_get_element_stack(ctx);
    bool *found = data;

    /* domain/devices/tpm/backend, innermost first on the stack */
    if (strcmp(name, "backend") != 0 || !s->next || strcmp(s->next->data, "tpm") != 0 ||
        !s->next->next || strcmp(s->next->next->data, "devices") != 0 || !s->next->next->next ||
        strcmp(s->next->next->next->data, "domain") != 0 || s->next->next->next->next)
        return;
    for (size_t i = 0; names[i]; i++) {
        if (strcmp(names[i], "type") == 0 && strcmp(values[i], "emulator") == 0)
            *found = true;
    }
}

int
vtpm_preflight_xml_has_vtpm(const char *xml, bool *out, vtpm_error *err)
{
    static const GMarkupParser parser = { xml_start, NULL, NULL, NULL, NULL };
    g_autoptr(GMarkupParseContext) ctx = NULL;
    g_autoptr(GError) gerr = NULL;
    bool found = false;

    ctx = g_markup_parse_context_new(&parser, 0, &found, NULL);
    if (!g_markup_parse_context_parse(ctx, xml, -1, &gerr) ||
        !g_markup_parse_context_end_parse(ctx, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "domain XML: %s", gerr->message);
    *out = found;
    return 0;
}

/* ---- domains ------------------------------------------------------------------ */

static int
libvirt_error(vtpm_error *err, const char *what)
{
    return vtpm_error_set(err, VTPM_FAULT_HYPERVISOR_ERROR, "%s: %s", what,
                          virGetLastErrorMessage());
}

static gint
cmp_name(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
vtpm_preflight_domains(virConnectPtr conn, const vtpm_config *cfg, vtpm_error *err)
{
    g_autoptr(GString) names = g_string_new(NULL);
    g_autoptr(GPtrArray) found = g_ptr_array_new_with_free_func(g_free);
    virDomainPtr *doms = NULL;
    unsigned with_tpm;
    int n, rc = 0;

    if (cfg->libvirt.swtpm_enabled)
        return 0;
    n = virConnectListAllDomains(conn, &doms, 0);
    if (n < 0)
        return libvirt_error(err, "listing the domains of this host");
    for (int i = 0; i < n && rc == 0; i++) {
        char *xml = virDomainGetXMLDesc(doms[i], 0);
        bool has = false;

        if (!xml) {
            const virError *e = virGetLastError();

            /* Undefined since the list was made: nothing to protect. */
            if (e && e->code == VIR_ERR_NO_DOMAIN)
                continue;
            rc = libvirt_error(err, "reading a domain's XML");
            continue;
        }
        rc = vtpm_preflight_xml_has_vtpm(xml, &has, err);
        free(xml);
        if (rc == 0 && has)
            g_ptr_array_add(found, g_strdup(virDomainGetName(doms[i])));
    }
    for (int i = 0; i < n; i++)
        virDomainFree(doms[i]);
    free(doms);
    if (rc < 0)
        return rc;
    /* libvirt lists in no fixed order; the message should not vary. */
    g_ptr_array_sort(found, cmp_name);
    with_tpm = found->len;
    for (guint i = 0; i < found->len && i < NAMES_SHOWN; i++)
        g_string_append_printf(names, "%s%s", i ? ", " : "", (char *)g_ptr_array_index(found, i));
    if (with_tpm)
        return vtpm_error_set(err, VTPM_FAULT_INSTANCE_CONFLICT,
                              "[libvirt] swtpm_enabled is false but %u domain%s on %s %s an "
                              "emulated TPM (%s%s): set [libvirt] swtpm_enabled = true (with "
                              "swtpm and swtpm-tools installed), or remove the vTPM first",
                              with_tpm, with_tpm > 1 ? "s" : "", cfg->libvirt.uri,
                              with_tpm > 1 ? "have" : "has", names->str,
                              with_tpm > NAMES_SHOWN ? ", ..." : "");
    return 0;
}
