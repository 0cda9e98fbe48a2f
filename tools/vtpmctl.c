/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmctl: the operator's and the developer's client.
 *
 *   vtpmctl resolve      [--flavor-spec K=V]... [--image-prop K=V]...
 *   vtpmctl capabilities [--connect URI] [--config FILE]
 *   vtpmctl render-xml   [--secret-uuid UUID] [--virt-type T] [--console-log PATH] < spec.json
 *   vtpmctl call         [BROKER OPTIONS] [--host HOST | --fanout] [--timeout S] METHOD [ARGS_JSON]
 *
 * The broker options are every tool's (tools/amqpopt.h, vtpm-amqp(7)).
 *
 * Output is JSON on stdout.  Exit codes: 0 ok, 1 fault, 2 usage, 3 timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <msgpack.h>

#include "vtpm/client.h"
#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "accel.h"
#include "amqpopt.h"
#include "caps.h"
#include "client/internal.h"
#include "config.h"
#include "domxml.h"
#include "ek.h"
#include "identity.h"
#include "mpjson.h"
#include "policy.h"
#include "tpm2.h"

enum { EXIT_OK = 0, EXIT_FAULT = 1, EXIT_USAGE = 2, EXIT_TIMEOUT = 3 };

/* Largest instance spec accepted on stdin: the wire limit. */
#define STDIN_MAX (1024 * 1024)

static void
print_json(JsonNode *node)
{
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *s = NULL;

    json_generator_set_root(gen, node);
    json_generator_set_pretty(gen, isatty(STDOUT_FILENO));
    s = json_generator_to_data(gen, NULL);
    printf("%s\n", s);
}

/* {"fault": {code, message, retryable}} on stdout: the form of a reply's
 * fault, so that a script reads a fault of vtpmctl's own (a bad option
 * value, the broker out of reach) as it reads a worker's. */
static int
print_fault_json(const char *code, const char *message, bool retryable)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonNode) root = NULL;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "fault");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "code");
    json_builder_add_string_value(b, code);
    json_builder_set_member_name(b, "message");
    json_builder_add_string_value(b, message);
    /* As in a reply's fault: a script retries a lost broker connection
     * (Busy) the way it retries a worker's retryable fault. */
    json_builder_set_member_name(b, "retryable");
    json_builder_add_boolean_value(b, retryable);
    json_builder_end_object(b);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    print_json(root);
    return EXIT_FAULT;
}

static int
print_fault(const vtpm_error *err)
{
    return print_fault_json(vtpm_fault_name(err->code), err->message,
                            vtpm_error_retryable(err));
}

static int
print_client_fault(const vtpm_client_fault *f)
{
    return print_fault_json(f->name, f->message, f->retryable);
}

static int
usage_error(GOptionContext *ctx, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static int
usage_error(GOptionContext *ctx, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "vtpmctl: %s\n", msg);
    if (ctx) {
        g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);
        fprintf(stderr, "%s", help);
    }
    return EXIT_USAGE;
}

/* Parse argv with @entries; returns EXIT_USAGE (after printing) on error. */
static int
parse_options(GOptionContext *ctx, int *argc, char ***argv)
{
    g_autoptr(GError) gerr = NULL;

    if (!g_option_context_parse(ctx, argc, argv, &gerr))
        return usage_error(ctx, "%s", gerr->message);
    return 0;
}

/* ---- resolve ----------------------------------------------------------- */

static int
add_kv(GHashTable *table, const char *opt, const char *kv, GOptionContext *ctx)
{
    const char *eq = strchr(kv, '=');

    if (!eq || eq == kv)
        return usage_error(ctx, "%s expects KEY=VALUE, got '%s'", opt, kv);
    g_hash_table_replace(table, g_strndup(kv, eq - kv), g_strdup(eq + 1));
    return 0;
}

static void
traits_to_json(JsonBuilder *b, const char *const *traits, size_t n)
{
    json_builder_set_member_name(b, "required_traits");
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++)
        json_builder_add_string_value(b, traits[i]);
    json_builder_end_array(b);
}

/* The firmware decision as the policy makes it, before a host is known:
 * optional Secure Boot needs only what UEFI needs, and gets Secure Boot
 * where the host also offers COMPUTE_SECURITY_UEFI_SECURE_BOOT. */
static void
firmware_to_json(JsonBuilder *b, const vtpm_firmware *fw)
{
    const char *traits[2];

    json_builder_set_member_name(b, "firmware");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, vtpm_firmware_type_str(fw->type));
    json_builder_set_member_name(b, "secure_boot");
    json_builder_add_string_value(b, vtpm_secure_boot_str(fw->policy));
    json_builder_set_member_name(b, "machine");
    json_builder_add_string_value(b, fw->machine);
    traits_to_json(b, traits, vtpm_firmware_required_traits(fw, traits));
    json_builder_end_object(b);
}

static JsonNode *
device_to_json(const vtpm_device *dev, const vtpm_firmware *fw)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    const char *traits[VTPM_POLICY_MAX_TRAITS];

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vtpm");
    if (dev->version == VTPM_VERSION_NONE) {
        json_builder_add_null_value(b);
    } else {
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "version");
        json_builder_add_string_value(b, vtpm_version_str(dev->version));
        json_builder_set_member_name(b, "model");
        json_builder_add_string_value(b, vtpm_model_str(dev->model));
        json_builder_set_member_name(b, "secret_security");
        json_builder_add_string_value(b, vtpm_secret_security_str(dev->secret_security));
        /* Only when asked for: without it the TPM keeps the banks it was
         * made with. */
        if (dev->pcr_banks) {
            json_builder_set_member_name(b, "pcr_banks");
            json_builder_begin_array(b);
            for (int k = 0; k < VTPM_PCR__COUNT; k++) {
                if (dev->pcr_banks & (1u << k))
                    json_builder_add_string_value(b, vtpm_pcr_bank_str(k));
            }
            json_builder_end_array(b);
        }
        traits_to_json(b, traits, vtpm_policy_required_traits(dev, traits));
        json_builder_end_object(b);
    }
    firmware_to_json(b, fw);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static int
cmd_resolve(int argc, char **argv)
{
    g_auto(GStrv) specs = NULL;
    g_auto(GStrv) props = NULL;
    GOptionEntry entries[] = {
        { "flavor-spec", 'f', 0, G_OPTION_ARG_STRING_ARRAY, &specs,
          "A flavor extra spec (repeatable)", "KEY=VALUE" },
        { "image-prop", 'i', 0, G_OPTION_ARG_STRING_ARRAY, &props,
          "An image property (repeatable)", "KEY=VALUE" },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- resolve the vTPM and firmware a flavor and image ask for");
    g_autoptr(GHashTable) fl = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) im = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(JsonNode) out = NULL;
    vtpm_device dev;
    vtpm_firmware fw;
    vtpm_error err = { 0 };
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Prints {\"vtpm\": null | {version, model, secret_security, required_traits},\n"
        " \"firmware\": {type, secure_boot, machine, required_traits}};\n"
        "on a fault prints {\"fault\": {code, message}} and exits 1.\n"
        "Example: vtpmctl resolve -f hw:tpm_version=2.0 -i hw_tpm_model=tpm-crb\n"
        "         vtpmctl resolve -i hw_firmware_type=uefi -i os_secure_boot=required\n");
    if ((rc = parse_options(ctx, &argc, &argv)))
        return rc;
    if (argc > 1)
        return usage_error(ctx, "unexpected argument '%s'", argv[1]);
    for (char **p = specs; p && *p; p++)
        if ((rc = add_kv(fl, "--flavor-spec", *p, ctx)))
            return rc;
    for (char **p = props; p && *p; p++)
        if ((rc = add_kv(im, "--image-prop", *p, ctx)))
            return rc;

    if (vtpm_policy_resolve(fl, im, &dev, &err) < 0 ||
        vtpm_firmware_resolve(fl, im, &fw, &err) < 0)
        return print_fault(&err);
    out = device_to_json(&dev, &fw);
    print_json(out);
    return EXIT_OK;
}

/* ---- capabilities ------------------------------------------------------ */

static void
silent_virt_error(void *data, virErrorPtr e)
{
    /* Errors are read with virGetLastErrorMessage and reported as JSON. */
}

static int
print_msgpack_json(const char *data, size_t len)
{
    msgpack_unpacked up;
    size_t off = 0;

    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        fprintf(stderr, "vtpmctl: internal error: cannot re-read packed data\n");
        return EXIT_FAULT;
    }
    g_autofree char *s = vtpm_mpjson_to_string(&up.data, isatty(STDOUT_FILENO));
    printf("%s\n", s);
    msgpack_unpacked_destroy(&up);
    return EXIT_OK;
}

static int
load_config(const char *path, vtpm_config **out)
{
    vtpm_error err = { 0 };

    if (!path) {
        *out = vtpm_config_new_default();
        return 0;
    }
    if (vtpm_config_load(path, out, &err) < 0) {
        fprintf(stderr, "vtpmctl: %s\n", err.message);
        return EXIT_USAGE;
    }
    return 0;
}

/* What vtpmd sets up at start besides the configuration: the EK CA it
 * checks (a fault here is one vtpmd would not start with) and the PCR
 * banks it probes.  @ca and @banks_error own what @cc points to. */
static int
caps_config_from(const vtpm_config *cfg, vtpm_caps_config *cc, vtpm_ek_ca **ca,
                 char **banks_error, vtpm_error *err)
{
    vtpm_error perr = { 0 };
    int rc;

    cc->swtpm_enabled = cfg->libvirt.swtpm_enabled;
    cc->swtpm_user = cfg->libvirt.swtpm_user;
    cc->swtpm_group = cfg->libvirt.swtpm_group;
    cc->secret_modes = cfg->vtpm.supported_secret_security;
    cc->deployment_key_file = cfg->vtpm.deployment_key_file;
    cc->firmware.loader = cfg->libvirt.uefi_loader;
    cc->firmware.nvram_template = cfg->libvirt.uefi_nvram_template;
    if (cfg->vtpm.ek_ca_cert &&
        (rc = vtpm_ek_ca_load(cfg->vtpm.ek_ca_cert, cfg->vtpm.ek_ca_key, ca, err)) < 0)
        return rc;
    cc->ek_ca_subject = *ca ? vtpm_ek_ca_subject(*ca) : NULL;
    cc->ek_ca_sha256 = *ca ? vtpm_ek_ca_sha256(*ca) : NULL;
    if (cfg->libvirt.swtpm_enabled && vtpm_tpm2_probe_pcr_banks(&cc->pcr_banks, &perr) < 0)
        cc->pcr_banks_error = *banks_error = g_strdup(perr.message);
    return 0;
}

static int
cmd_capabilities(int argc, char **argv)
{
    g_autofree char *uri = NULL;
    g_autofree char *config = NULL;
    GOptionEntry entries[] = {
        { "connect", 'c', 0, G_OPTION_ARG_STRING, &uri,
          "libvirt URI (default: [libvirt] uri of the config)", "URI" },
        { "config", 0, 0, G_OPTION_ARG_FILENAME, &config,
          "vtpmd config file whose [libvirt] and [vtpm] settings apply", "FILE" },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- show this host's vTPM capabilities and traits");
    g_autofree char *uri_source = NULL;
    g_autoptr(vtpm_config) cfg = NULL;
    g_autoptr(vtpm_caps) caps = NULL;
    g_autoptr(vtpm_ek_ca) ek_ca = NULL;
    g_autofree char *banks_error = NULL;
    vtpm_host_facts facts = { 0 };
    g_auto(vtpm_accel) accel = { 0 };
    vtpm_caps_config cc = { 0 };
    vtpm_error err = { 0 };
    virConnectPtr conn;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Prints {host, arch, libvirt_version, qemu_version, traits, missing: {trait: reason}, tpm,\n"
        "virt_type, virt_type_reason, ek_ca}.\n"
        "Every trait this host does not offer is listed under \"missing\" with the reason.\n");
    if ((rc = parse_options(ctx, &argc, &argv)))
        return rc;
    if (argc > 1)
        return usage_error(ctx, "unexpected argument '%s'", argv[1]);
    if ((rc = load_config(config, &cfg)))
        return rc;
    if (caps_config_from(cfg, &cc, &ek_ca, &banks_error, &err) < 0)
        return print_fault(&err);
    /* vtpmctl runs on the host it asks about: resolve the accelerator as
     * vtpmd would there. */
    vtpm_accel_resolve(cfg->libvirt.virt_type, NULL, &accel);
    cc.virt_type = accel.virt_type;
    cc.virt_type_reason = accel.reason;

    virSetErrorFunc(NULL, silent_virt_error);
    /* Domain capabilities need a read-write connection; a user without
     * one still gets versions and the reason the TPM part is missing. */
    /* Say where the URI came from, so that a wrong one can be found. */
    uri_source = uri ? g_strdup("--connect")
                     : config ? g_strdup_printf("[libvirt] uri of %s", config)
                              : g_strdup("the default [libvirt] uri");
    conn = virConnectOpen(uri ? uri : cfg->libvirt.uri);
    if (!conn) {
        /* Report why the read-write connection failed: the read-only
         * attempt's error (e.g. about a -ro socket) alone would mislead. */
        g_autofree char *rw_why = g_strdup(virGetLastErrorMessage());

        conn = virConnectOpenReadOnly(uri ? uri : cfg->libvirt.uri);
        if (!conn) {
            const char *ro_why = virGetLastErrorMessage();

            if (strcmp(rw_why, ro_why) == 0)
                vtpm_error_set(&err, VTPM_FAULT_HYPERVISOR_ERROR,
                               "cannot connect to libvirt at %s (%s): %s",
                               uri ? uri : cfg->libvirt.uri, uri_source, rw_why);
            else
                vtpm_error_set(&err, VTPM_FAULT_HYPERVISOR_ERROR,
                               "cannot connect to libvirt at %s (%s): %s (read-only: %s)",
                               uri ? uri : cfg->libvirt.uri, uri_source, rw_why, ro_why);
            return print_fault(&err);
        }
    }
    rc = vtpm_caps_probe(conn, &cc, &facts, &err);
    virConnectClose(conn);
    if (rc < 0) {
        vtpm_host_facts_clear(&facts);
        return print_fault(&err);
    }
    caps = vtpm_caps_evaluate_take(cfg->worker.host, &facts, &cc);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    vtpm_caps_pack(caps, &pk);
    rc = print_msgpack_json(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- render-xml -------------------------------------------------------- */

static int
read_stdin(char **out, size_t *len, vtpm_error *err)
{
    g_autoptr(GString) s = g_string_new(NULL);
    char buf[8192];
    size_t n;

    while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
        if (s->len + n > STDIN_MAX)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "input exceeds %d bytes", STDIN_MAX);
        g_string_append_len(s, buf, n);
    }
    if (ferror(stdin))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "cannot read standard input");
    *len = s->len;
    *out = g_string_free(g_steal_pointer(&s), FALSE);
    return 0;
}

/* The instance spec on stdin may be the spec itself or {"instance": spec}
 * (a request's args), so that a captured request can be fed back. */
static int
decode_stdin_instance(vtpm_instance **out, vtpm_error *err)
{
    g_autofree char *json = NULL;
    size_t len = 0;
    msgpack_sbuffer sb;
    msgpack_unpacked up;
    const msgpack_object *spec;
    size_t off = 0;
    int rc;

    if ((rc = read_stdin(&json, &len, err)) < 0)
        return rc;
    msgpack_sbuffer_init(&sb);
    if ((rc = vtpm_mpjson_from_string(json, len, &sb, err)) < 0) {
        msgpack_sbuffer_destroy(&sb);
        return vtpm_error_prefix(err, "standard input");
    }
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS) {
        rc = vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "standard input: not a JSON value");
        goto out;
    }
    spec = &up.data;
    if (spec->type == MSGPACK_OBJECT_MAP && vtpm_proto_map_get(spec, "instance"))
        spec = vtpm_proto_map_get(spec, "instance");
    rc = vtpm_proto_decode_instance(spec, "instance", out, err);
out:
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int
cmd_render_xml(int argc, char **argv)
{
    g_autofree char *secret_uuid = NULL;
    g_autofree char *virt_type = NULL;
    char secret_canon[37] = "";
    g_autofree char *console_log = NULL;
    GOptionEntry entries[] = {
        { "secret-uuid", 's', 0, G_OPTION_ARG_STRING, &secret_uuid,
          "libvirt secret encrypting the vTPM state (adds <encryption>)", "UUID" },
        { "virt-type", 0, 0, G_OPTION_ARG_STRING, &virt_type,
          "domain type: qemu (TCG, default) or kvm", "TYPE" },
        { "console-log", 0, 0, G_OPTION_ARG_FILENAME, &console_log,
          "append the serial console to this file", "PATH" },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- print the libvirt domain XML for an instance spec (JSON on stdin)");
    g_autoptr(vtpm_instance) inst = NULL;
    g_autoptr(vtpm_config) dflt = vtpm_config_new_default();
    g_autofree char *xml = NULL, *nvram = NULL;
    vtpm_domxml_params p = { 0 };
    vtpm_device dev;
    vtpm_firmware fw;
    vtpm_error err = { 0 };
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "The spec is the wire protocol's instance spec as JSON (docs/protocol.md), or\n"
        "{\"instance\": spec}. Binary fields are {\"$bin\": \"<base64>\"}.\n"
        "The vTPM and the firmware come from the flavor extra specs and image properties, as in\n"
        "the worker, on a host that offers everything (os_secure_boot=optional: Secure Boot)\n"
        "with the default [libvirt] state_dir and no [libvirt] uefi_loader.\n");
    if ((rc = parse_options(ctx, &argc, &argv)))
        return rc;
    if (argc > 1)
        return usage_error(ctx, "unexpected argument '%s'", argv[1]);
    if (virt_type && strcmp(virt_type, "qemu") != 0 && strcmp(virt_type, "kvm") != 0)
        return usage_error(ctx, "--virt-type must be qemu or kvm, got '%s'", virt_type);
    /* libvirt's secret UUIDs are lower case, as the worker writes them. */
    if (secret_uuid && vtpm_proto_parse_uuid(secret_uuid, "--secret-uuid", secret_canon, &err) < 0)
        return usage_error(ctx, "%s", err.message);

    if (decode_stdin_instance(&inst, &err) < 0)
        return print_fault(&err);
    if (vtpm_policy_resolve(inst->flavor->extra_specs, inst->image->properties, &dev, &err) < 0 ||
        vtpm_firmware_resolve(inst->flavor->extra_specs, inst->image->properties, &fw, &err) < 0)
        return print_fault(&err);
    vtpm_firmware_decide(&fw, true);
    /* Where vtpmd keeps the store of a UEFI instance with a vTPM. */
    if (fw.type == VTPM_FIRMWARE_UEFI && dev.version != VTPM_VERSION_NONE)
        nvram = g_build_filename(dflt->libvirt.state_dir, inst->uuid, VTPM_FIRMWARE_NVRAM_FILE,
                                 NULL);

    p.inst = inst;
    p.tpm = &dev;
    p.firmware = &fw;
    p.nvram = nvram;
    p.secret_uuid = secret_uuid && dev.version != VTPM_VERSION_NONE ? secret_canon : NULL;
    p.virt_type = virt_type ? virt_type : "qemu";
    p.console_log = console_log;
    if (vtpm_domxml_build(&p, &xml, &err) < 0)
        return print_fault(&err);
    fputs(xml, stdout);
    return EXIT_OK;
}

/* ---- call -------------------------------------------------------------- */

/* EXIT_OK or EXIT_FAULT: what the reply says (an undecodable one is said
 * on stderr). */
static int
reply_exit_code(const vtpm_client_reply *r)
{
    vtpm_client_fault f;

    if (vtpm_client_reply_result(r, NULL, NULL, &f) == 0)
        return EXIT_OK;
    if (f.details.source == VTPM_CLIENT_SOURCE_CLIENT)
        fprintf(stderr, "vtpmctl: undecodable reply: %s\n", f.message);
    return EXIT_FAULT;
}

static bool
packed_is_map(const char *data, size_t len)
{
    msgpack_unpacked up;
    size_t off = 0;
    bool is_map;

    msgpack_unpacked_init(&up);
    is_map = msgpack_unpack_next(&up, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
             up.data.type == MSGPACK_OBJECT_MAP;
    msgpack_unpacked_destroy(&up);
    return is_map;
}

/* What `call` was asked to do. */
typedef struct {
    char *host;
    char *request_id;
    gboolean fanout;
    double timeout;
    gint64 deadline_rel;
    uint64_t deadline_ms;      /* absolute; 0: none */
    vtpm_amqpopt broker;
    vtpm_client_options cp;    /* strings of broker */
} call_opts;

static void
call_opts_clear(call_opts *o)
{
    g_free(o->host);
    g_free(o->request_id);
    vtpm_amqpopt_clear(&o->broker);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(call_opts, call_opts_clear)

static GOptionContext *
call_context(call_opts *o)
{
    GOptionEntry entries[] = {
        { "host", 'H', 0, G_OPTION_ARG_STRING, &o->host,
          "the worker to call (default: [worker] host of --config)", "HOST" },
        { "fanout", 0, 0, G_OPTION_ARG_NONE, &o->fanout,
          "broadcast to every worker and collect all replies until the timeout", NULL },
        { "timeout", 't', 0, G_OPTION_ARG_DOUBLE, &o->timeout, "seconds to wait (default 30)",
          "SECONDS" },
        { "deadline", 0, 0, G_OPTION_ARG_INT64, &o->deadline_rel,
          "set deadline_ms this many milliseconds from now", "MS" },
        { "request-id", 0, 0, G_OPTION_ARG_STRING, &o->request_id, "context.request_id", "ID" },
        { NULL }
    };
    GOptionContext *ctx =
        g_option_context_new("METHOD [ARGS_JSON] - call a vtpmd worker and print the reply");

    o->timeout = 30.0;
    vtpm_amqpopt_add(ctx, &o->broker, VTPM_AMQPOPT_NAMES);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "ARGS_JSON is the method's args map as JSON, e.g. '{\"instance\": {...}}';\n"
        "- reads it from stdin (keeps a secret out of ps and /proc/PID/cmdline);\n"
        "binary fields are {\"$bin\": \"<base64>\"}.  Prints the reply envelope as JSON\n"
        "({\"v\":1,\"ok\":true,\"result\":{...}} or {..., \"fault\": {code, message, retryable}}).\n"
        "With --fanout prints a JSON array of every reply received before the timeout.\n"
        "The broker options are described in vtpm-amqp(7).\n"
        "Exit: 0 ok, 1 fault, 2 usage, 3 timeout (no reply).\n");
    return ctx;
}

/* What every call to a worker takes (timeout, deadline, broker, host),
 * checked before any connection: 0, or the exit code after saying what is
 * wrong. */
static int
call_check_common(GOptionContext *ctx, call_opts *o)
{
    vtpm_error err = { 0 };

    /* Written so that NaN fails too. */
    if (!(o->timeout > 0 && o->timeout <= 86400))
        return usage_error(ctx, "--timeout must be in (0, 86400] seconds");
    /* now + MS must neither overflow nor fall to 0 or below (0 means "no
     * deadline"); a negative MS (a deadline already past) is allowed. */
    if (o->deadline_rel != 0) {
        gint64 now_ms = g_get_real_time() / 1000;

        if (o->deadline_rel > G_MAXINT64 - now_ms || o->deadline_rel <= -now_ms)
            return usage_error(ctx, "--deadline %" G_GINT64_FORMAT " is out of range",
                               o->deadline_rel);
        o->deadline_ms = (uint64_t)(now_ms + o->deadline_rel);
    }
    /* A bad config file is a usage error; a bad URL or TLS setting is a
     * fault naming the option, variable or key it came from. */
    if (vtpm_amqpopt_load(&o->broker, &o->cp, &err) < 0) {
        if (!vtpm_amqpopt_config_refused(&o->broker))
            return print_fault(&err);
        fprintf(stderr, "vtpmctl: %s\n", err.message);
        return EXIT_USAGE;
    }
    if (o->host) {
        /* A name no worker can have would only time out. */
        g_autofree char *why = vtpm_config_check_host(o->host);

        if (why || !*o->host)
            return usage_error(ctx, "--host: %s", why ? why : "empty");
    } else {
        o->host = g_strdup(o->broker.cfg->worker.host);
    }
    return 0;
}

static int
call_check(GOptionContext *ctx, int argc, call_opts *o)
{
    if (argc < 2 || argc > 3)
        return usage_error(ctx, "expected METHOD [ARGS_JSON]");
    if (o->fanout && o->host)
        return usage_error(ctx, "--host and --fanout are mutually exclusive");
    return call_check_common(ctx, o);
}

/* ARGS_JSON (or "-": from stdin, so that a secret in them, user mode's
 * instance.vtpm.secret, is not on the command line, where `ps` and
 * /proc/PID/cmdline show it to every local user) packed into @args. */
static int
call_args(GOptionContext *ctx, int argc, char **argv, msgpack_sbuffer *args)
{
    vtpm_error err = { 0 };

    if (argc < 3)
        return 0;
    if (strcmp(argv[2], "-") == 0) {
        g_autofree char *json = NULL;
        size_t len = 0;
        int rc = read_stdin(&json, &len, &err);

        if (rc == 0)
            rc = vtpm_mpjson_from_string(json, (gssize)len, args, &err);
        if (json)
            explicit_bzero(json, len);
        if (rc < 0)
            return usage_error(ctx, "ARGS_JSON (stdin): %s", err.message);
    } else if (vtpm_mpjson_from_string(argv[2], -1, args, &err) < 0) {
        return usage_error(ctx, "ARGS_JSON: %s", err.message);
    }
    if (!packed_is_map(args->data, args->size))
        return usage_error(ctx, "ARGS_JSON must be a JSON object");
    return 0;
}

/* The reply envelope as JSON (null when it is not msgpack: said on stderr). */
static JsonNode *
reply_json(const vtpm_client_reply *r)
{
    size_t len = 0, off = 0;
    const char *body = vtpm_client_reply_body(r, &len);
    msgpack_unpacked up;
    JsonNode *node;

    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, body, len, &off) == MSGPACK_UNPACK_SUCCESS)
        node = vtpm_mpjson_to_json(&up.data);
    else
        node = json_node_new(JSON_NODE_NULL);
    msgpack_unpacked_destroy(&up);
    return node;
}

/* The replies to call @id until the timeout (the first one only, unless
 * --fanout): 0 with @replies and *worst filled, or negative with @f. */
static int
call_collect(vtpm_client *client, const char *id, const call_opts *o, JsonArray *replies,
             int *worst, vtpm_client_fault *f)
{
    gint64 end_us = g_get_monotonic_time() + (gint64)(o->timeout * G_USEC_PER_SEC);

    for (;;) {
        g_autoptr(vtpm_client_reply) r = NULL;
        gint64 left_ms = (end_us - g_get_monotonic_time()) / 1000;
        int rc;

        if (left_ms <= 0)
            return 0;
        if ((rc = vtpm_client_wait(client, id, (int)left_ms, &r, f)) != 0)
            return rc < 0 ? rc : 0;
        *worst = MAX(*worst, reply_exit_code(r));
        json_array_add_element(replies, reply_json(r));
        if (!o->fanout)
            return 0;
    }
}

/* Send METHOD with @args to the worker (or all of them): 0 with @id set,
 * or negative with @f. */
static int
call_send(vtpm_client *client, const char *method, const msgpack_sbuffer *args,
          const call_opts *o, char *id, vtpm_client_fault *f)
{
    g_autofree char *uuid = g_uuid_string_random();
    g_autofree char *rid =
        o->request_id ? g_strdup(o->request_id) : g_strdup_printf("req-%s", uuid);
    vtpm_client_call_opts co = { .deadline_ms = o->deadline_ms, .request_id = rid };

    if (o->fanout)
        return vtpm_client_fanout_send(client, method, args->data, args->size, &co, id, f);
    return vtpm_client_call_send(client, o->host, method, args->data, args->size, &co, id, f);
}

static int
cmd_call(int argc, char **argv)
{
    g_auto(call_opts) o = { 0 };
    g_autoptr(GOptionContext) ctx = call_context(&o);
    g_autoptr(vtpm_client) client = NULL;
    g_autoptr(JsonArray) replies = json_array_new();
    char id[VTPM_CLIENT_ID_MAX];
    msgpack_sbuffer args;
    vtpm_client_fault f;
    int rc, worst = EXIT_OK;

    if ((rc = parse_options(ctx, &argc, &argv)) || (rc = call_check(ctx, argc, &o)))
        return rc;
    msgpack_sbuffer_init(&args);
    if ((rc = call_args(ctx, argc, argv, &args)) == 0 &&
        (vtpm_client_connect(&o.cp, &client, &f) < 0 ||
         call_send(client, argv[1], &args, &o, id, &f) < 0 ||
         call_collect(client, id, &o, replies, &worst, &f) < 0))
        rc = print_client_fault(&f);
    /* The args may hold a secret (user mode's instance.vtpm.secret). */
    if (args.data)
        explicit_bzero(args.data, args.size);
    msgpack_sbuffer_destroy(&args);
    if (rc)
        return rc;
    if (json_array_get_length(replies) == 0) {
        fprintf(stderr, "vtpmctl: no reply from %s within %.1f s\n",
                o.fanout ? "any worker" : o.host, o.timeout);
        return EXIT_TIMEOUT;
    }
    if (o.fanout) {
        g_autoptr(JsonNode) node = json_node_new(JSON_NODE_ARRAY);

        json_node_set_array(node, replies);
        print_json(node);
    } else {
        print_json(json_array_get_element(replies, 0));
    }
    return worst;
}

/* ---- identity ------------------------------------------------------------ */

/* What `identity` was asked to do. */
typedef struct {
    call_opts call;
    char *verify; /* --verify: a PEM file of CA certificates */
    char uuid[37];
} identity_opts;

static void
identity_opts_clear(identity_opts *o)
{
    call_opts_clear(&o->call);
    g_free(o->verify);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(identity_opts, identity_opts_clear)

static GOptionContext *
identity_context(identity_opts *o)
{
    GOptionEntry entries[] = {
        { "host", 'H', 0, G_OPTION_ARG_STRING, &o->call.host,
          "the worker holding the instance (default: [worker] host of --config)", "HOST" },
        { "timeout", 't', 0, G_OPTION_ARG_DOUBLE, &o->call.timeout,
          "seconds to wait (default 30)", "SECONDS" },
        { "verify", 0, 0, G_OPTION_ARG_FILENAME, &o->verify,
          "check each EK certificate against the CA certificates in this PEM file", "CA.pem" },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new(
        "UUID - the vTPM identity of an instance: its EK public keys, certificates and CA");

    o->call.timeout = 30.0;
    vtpm_amqpopt_add(ctx, &o->call.broker, VTPM_AMQPOPT_NAMES);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_description(ctx,
        "Asks the worker holding the instance for get_vtpm_identity and prints the TPM's\n"
        "version, the CA that signed its EK certificates, and each EK (rsa2048,\n"
        "ecc-nist-p256): its public key and certificate, PEM.  `vtpmctl call\n"
        "get_vtpm_identity` prints the same as JSON.\n"
        "With --verify, each certificate is checked with GnuTLS: it chains to a CA\n"
        "certificate of the file, it certifies the EK public key the TPM reported, and\n"
        "(TPM 2.0) its subject CN is the instance UUID; a line per EK says whether it\n"
        "verified, and why not.  A TPM 1.2 certificate is accepted signed with SHA-1.\n"
        "The broker options are described in vtpm-amqp(7).\n"
        "Exit: 0 ok (with --verify: every certificate verified), 1 fault or a certificate\n"
        "that did not verify, 2 usage, 3 timeout (no reply).\n");
    return ctx;
}

static int
identity_check(GOptionContext *ctx, int argc, char **argv, identity_opts *o, GBytes **ca)
{
    vtpm_error err = { 0 };
    g_autoptr(GError) gerr = NULL;
    gchar *data = NULL;
    gsize len = 0;
    int rc;

    if (argc != 2)
        return usage_error(ctx, "expected UUID");
    if (vtpm_proto_parse_uuid(argv[1], "UUID", o->uuid, &err) < 0)
        return usage_error(ctx, "%s", err.message);
    if (o->verify) {
        if (!g_file_get_contents(o->verify, &data, &len, &gerr))
            return usage_error(ctx, "--verify: %s", gerr->message);
        *ca = g_bytes_new_take(data, len);
    }
    if ((rc = call_check_common(ctx, &o->call)))
        return rc;
    return 0;
}

/* The get_vtpm_identity result for @o->uuid: 0 with *out, or the exit
 * code after saying why (a fault as `call` prints it). */
static int
identity_call(identity_opts *o, vtpm_identity **out)
{
    g_autoptr(vtpm_client) client = NULL;
    g_autoptr(vtpm_client_reply) r = NULL;
    vtpm_client_call_opts co = { .timeout_ms = (int)(o->call.timeout * 1000) };
    const void *result = NULL;
    size_t len = 0, off = 0;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    vtpm_client_fault f;
    vtpm_error err = { 0 };
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    vtpm_pack_str(&pk, "instance");
    msgpack_pack_map(&pk, 1);
    vtpm_pack_kv_str(&pk, "uuid", o->uuid);
    rc = vtpm_client_connect(&o->call.cp, &client, &f) < 0 ||
         vtpm_client_call(client, o->call.host, "get_vtpm_identity", sb.data, sb.size, &co, &r,
                          &f) < 0 ||
         vtpm_client_reply_result(r, &result, &len, &f) < 0;
    msgpack_sbuffer_destroy(&sb);
    if (rc && f.code == VTPM_CLIENT_TIMEOUT) {
        fprintf(stderr, "vtpmctl: no reply from %s within %.1f s\n", o->call.host,
                o->call.timeout);
        return EXIT_TIMEOUT;
    }
    if (rc)
        return print_client_fault(&f);
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, result, len, &off) != MSGPACK_UNPACK_SUCCESS)
        rc = vtpm_error_set(&err, VTPM_FAULT_BAD_REQUEST, "the worker's reply: not msgpack");
    else if ((rc = vtpm_identity_read(&up.data, out, &err)) < 0)
        vtpm_error_prefix(&err, "the worker's reply");
    msgpack_unpacked_destroy(&up);
    return rc < 0 ? print_fault(&err) : 0;
}

static void
identity_print(const identity_opts *o, const vtpm_identity *id)
{
    printf("instance %s: TPM %s\nCA: %s\nCA sha256: %s\n", o->uuid,
           vtpm_version_str(id->version), id->ca_subject, id->ca_sha256);
    for (size_t i = 0; i < id->n_ek; i++)
        printf("\nEK %s\n%s%s", vtpm_ek_alg_str(id->ek[i].alg), id->ek[i].public_pem,
               id->ek[i].cert_pem);
}

/* A line per EK: whether its certificate verified against @ca. */
static int
identity_verify(const identity_opts *o, const vtpm_identity *id, GBytes *ca)
{
    int rc = EXIT_OK;

    printf("\n");
    for (size_t i = 0; i < id->n_ek; i++) {
        g_autofree char *why = NULL;

        if (vtpm_identity_verify_ek(id, i, o->uuid, ca, &why) == 0) {
            printf("%s: verified against %s\n", vtpm_ek_alg_str(id->ek[i].alg), o->verify);
        } else {
            printf("%s: NOT verified: %s\n", vtpm_ek_alg_str(id->ek[i].alg), why);
            rc = EXIT_FAULT;
        }
    }
    return rc;
}

static int
cmd_identity(int argc, char **argv)
{
    g_auto(identity_opts) o = { 0 };
    g_autoptr(GOptionContext) ctx = identity_context(&o);
    g_autoptr(GBytes) ca = NULL;
    g_autoptr(vtpm_identity) id = NULL;
    int rc;

    if ((rc = parse_options(ctx, &argc, &argv)) || (rc = identity_check(ctx, argc, argv, &o, &ca)) ||
        (rc = identity_call(&o, &id)))
        return rc;
    identity_print(&o, id);
    return ca ? identity_verify(&o, id, ca) : EXIT_OK;
}

/* ---- main -------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} commands[] = {
    { "resolve", cmd_resolve, "resolve the vTPM a flavor + image ask for (offline)" },
    { "capabilities", cmd_capabilities, "this host's vTPM traits, and why any is missing" },
    { "render-xml", cmd_render_xml, "libvirt domain XML for an instance spec (JSON on stdin)" },
    { "call", cmd_call, "call a vtpmd worker over AMQP and print the reply" },
    { "identity", cmd_identity, "an instance's vTPM identity (EK keys, certificates); --verify" },
};

static int
main_usage(FILE *f)
{
    fprintf(f, "Usage: vtpmctl COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'vtpmctl COMMAND --help' describes a command.\n"
               "Exit codes: 0 ok, 1 fault, 2 usage, 3 timeout.\n");
    return f == stdout ? EXIT_OK : EXIT_USAGE;
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        return main_usage(stderr);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return main_usage(stdout);
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            g_autofree char *prg = g_strdup_printf("vtpmctl %s", commands[i].name);
            g_set_prgname(prg);
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "vtpmctl: unknown command '%s'\n", argv[1]);
    return main_usage(stderr);
}
