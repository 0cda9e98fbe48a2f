/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amqp/url.h"
#include "config.h"
#include "policy.h"
#include "vtpm/proto.h"

#define CONFIG_MAX_FILE (1024 * 1024)

typedef enum {
    K_STR,  /* char *, non-empty */
    K_PATH, /* char *, absolute */
    K_BOOL, /* bool */
    K_UINT, /* unsigned, min..max */
    K_SIZE, /* size_t, min..max, suffix K/M */
    K_ENUM, /* char *, one of the alternatives in the type string */
    K_LIST, /* unsigned bit set of vtpm_secret_security */
} key_kind;

/* Extra validation of a string value: NULL when fine, else why not. */
typedef char *(*check_fn)(const char *v);

typedef struct {
    vtpm_config_key k;
    key_kind kind;
    size_t off;
    guint64 min, max;
    check_fn check;
    bool empty_unsets; /* an empty string value sets the key back to unset */
} spec;

static char *check_amqp_url(const char *v);
static char *check_amqp_urls(const char *v);
static char *check_migration_uri(const char *v);
static char *check_inbound_addr(const char *v);
static char *check_prom_file(const char *v);

#define F(field) offsetof(vtpm_config, field)
#define KEY(g, n, t, d, h) { .group = g, .key = n, .type = t, .dflt = d, .help = h }

static const spec specs[] = {
    { KEY("amqp", "url", "string", VTPM_AMQP_DEFAULT_URL,
          "Broker: amqp://user:pass@host:port/vhost or rabbit://..., amqps:// or rabbits:// for TLS (needs cacert); rabbit://u:p@h1,u:p@h2/ names several nodes."),
      K_STR, F(amqp.url), .check = check_amqp_url },
    { KEY("amqp", "failover_urls", "string", NULL,
          "Other nodes of the same RabbitMQ cluster, space-separated: tried in turn after url when a connection cannot be made or is lost (at most 8 nodes with url's)."),
      K_STR, F(amqp.failover_urls), .check = check_amqp_urls, .empty_unsets = true },
    { KEY("amqp", "cacert", "string", NULL,
          "CA bundle for amqps (absolute path); the broker is always verified."),
      K_PATH, F(amqp.cacert) },
    { KEY("amqp", "cert", "string", NULL,
          "Client certificate for amqps (absolute path); needs key."),
      K_PATH, F(amqp.cert) },
    { KEY("amqp", "key", "string", NULL,
          "Private key of the client certificate (absolute path); needs cert."),
      K_PATH, F(amqp.key) },
    { KEY("amqp", "exchange", "string", "vtpm", "Topic exchange requests are published to."),
      K_STR, F(amqp.exchange) },
    { KEY("amqp", "topic", "string", "vtpm", "Prefix of queue names and routing keys."),
      K_STR, F(amqp.topic) },
    { KEY("amqp", "prefetch", "uint", "16", "Unacknowledged messages per consumer (1..65535)."),
      K_UINT, F(amqp.prefetch), 1, 65535 },
    { KEY("amqp", "heartbeat", "uint", "30", "AMQP heartbeat in seconds (0..3600, 0 = off)."),
      K_UINT, F(amqp.heartbeat), 0, 3600 },
    { KEY("amqp", "queue_type", "enum(classic|quorum)", "classic",
          "Type of the queues vtpmd declares: classic or quorum."),
      K_ENUM, F(amqp.queue_type) },

    { KEY("worker", "host", "string", NULL,
          "Name of this host in queue names (default: the hostname; [A-Za-z0-9._-], 1..255)."),
      K_STR, F(worker.host), .check = vtpm_config_check_host },
    { KEY("worker", "workers", "uint", "4", "Requests handled in parallel (1..256)."),
      K_UINT, F(worker.workers), 1, 256 },
    { KEY("worker", "max_message_bytes", "size", "1048576",
          "Largest request body accepted, bytes or with suffix K/M (1K..64M)."),
      K_SIZE, F(worker.max_message_bytes), 1024, 64 * 1024 * 1024 },
    { KEY("worker", "dedupe_size", "uint", "1024",
          "Recent message ids remembered to drop redeliveries (0..1000000, 0 = off)."),
      K_UINT, F(worker.dedupe_size), 0, 1000000 },
    { KEY("worker", "capabilities_interval", "uint", "60",
          "Seconds between re-probes of the host capabilities (1..86400)."),
      K_UINT, F(worker.capabilities_interval), 1, 86400 },

    { KEY("libvirt", "uri", "string", "qemu:///system", "libvirt connection URI."),
      K_STR, F(libvirt.uri) },
    { KEY("libvirt", "swtpm_enabled", "bool", "false",
          "Offer emulated TPMs (swtpm) to instances: true or false."),
      K_BOOL, F(libvirt.swtpm_enabled) },
    { KEY("libvirt", "swtpm_user", "string", "tss", "User swtpm runs as."),
      K_STR, F(libvirt.swtpm_user) },
    { KEY("libvirt", "swtpm_group", "string", "tss", "Group swtpm runs as."),
      K_STR, F(libvirt.swtpm_group) },
    { KEY("libvirt", "images_dir", "string", "/var/lib/vtpmd/images",
          "Kernels, initrds and disks instances may boot from (absolute path)."),
      K_PATH, F(libvirt.images_dir) },
    { KEY("libvirt", "console_dir", "string", "/var/lib/vtpmd/console",
          "Where serial console logs are written (absolute path)."),
      K_PATH, F(libvirt.console_dir) },
    { KEY("libvirt", "virt_type", "enum(auto|qemu|kvm)", "auto",
          "Domain type: kvm, qemu (TCG) or auto (kvm only when KVM can run a guest here)."),
      K_ENUM, F(libvirt.virt_type) },
    { KEY("libvirt", "shutdown_timeout", "uint", "60",
          "Seconds a guest gets to power off before it is destroyed (0..3600)."),
      K_UINT, F(libvirt.shutdown_timeout), 0, 3600 },
    { KEY("libvirt", "migration_uri_template", "string", "qemu+tls://%s/system",
          "libvirt URI of a migration target; exactly one %s, replaced by the host."),
      K_STR, F(libvirt.migration_uri_template), .check = check_migration_uri },
    { KEY("libvirt", "state_dir", "string", "/var/lib/libvirt/swtpm",
          "Root of libvirt's swtpm state (absolute path)."),
      K_PATH, F(libvirt.state_dir) },
    { KEY("libvirt", "uefi_loader", "string", NULL,
          "UEFI firmware of Secure Boot guests (absolute path; with uefi_nvram_template); unset: "
          "libvirt's auto-selection from QEMU's firmware descriptors."),
      K_PATH, F(libvirt.uefi_loader), .empty_unsets = true },
    { KEY("libvirt", "uefi_nvram_template", "string", NULL,
          "Variable store template of Secure Boot guests, with uefi_loader: the keys they "
          "enroll (absolute path)."),
      K_PATH, F(libvirt.uefi_nvram_template), .empty_unsets = true },
    { KEY("libvirt", "live_migration_uri_template", "string", NULL,
          "libvirt URI of a live migration target, as migration_uri_template (default: "
          "migration_uri_template)."),
      K_STR, F(libvirt.live_migration_uri_template), .check = check_migration_uri,
      .empty_unsets = true },
    { KEY("libvirt", "live_migration_inbound_addr", "string", NULL,
          "Address other hosts' QEMU sends a live migration stream to (default: [worker] host)."),
      K_STR, F(libvirt.live_migration_inbound_addr), .check = check_inbound_addr,
      .empty_unsets = true },
    { KEY("libvirt", "live_migration_with_native_tls", "bool", "false",
          "Encrypt the live migration stream with QEMU's native TLS: true or false."),
      K_BOOL, F(libvirt.live_migration_with_native_tls) },
    { KEY("libvirt", "live_migration_timeout", "uint", "800",
          "Seconds a live migration may take before it is aborted (0..86400, 0 = no limit)."),
      K_UINT, F(libvirt.live_migration_timeout), 0, 86400 },

    { KEY("store", "uri", "string", NULL,
          "libvirt URI of the storage holding vTPM state (default: [libvirt] uri)."),
      K_STR, F(store.uri) },
    { KEY("store", "shelve_pool", "string", "vtpm-shelved",
          "Storage pool for the vTPM state of shelved instances."),
      K_STR, F(store.shelve_pool) },
    { KEY("store", "incoming_pool", "string", "vtpm-incoming",
          "Storage pool receiving vTPM state from other hosts."),
      K_STR, F(store.incoming_pool) },
    { KEY("store", "pool_dir", "string", "/var/lib/vtpmd/pools",
          "Where missing directory pools are created (absolute path)."),
      K_PATH, F(store.pool_dir) },
    { KEY("store", "kept_dir", "string", "/var/lib/vtpmd/kept",
          "Where a migration source keeps the vTPM state until confirm or revert (absolute path)."),
      K_PATH, F(store.kept_dir) },
    { KEY("store", "checkpoint_interval", "uint", "300",
          "Seconds between checkpoints of a TPM whose state changed, besides those after every "
          "state-moving operation (0..86400, 0 = off: no checkpoints; they also need [store] uri)."),
      K_UINT, F(store.checkpoint_interval), 0, 86400 },
    { KEY("store", "checkpoint_keep", "uint", "2",
          "Checkpoints kept per instance in checkpoint_pool, the newest ones (1..100)."),
      K_UINT, F(store.checkpoint_keep), 1, 100 },
    { KEY("store", "checkpoint_pool", "string", "vtpm-checkpoints",
          "Storage pool on [store] uri for the checkpoints of vTPM state that evacuate restores."),
      K_STR, F(store.checkpoint_pool) },

    { KEY("vtpm", "supported_secret_security", "list", "user;host",
          "Secret security modes offered: user, host, deployment (';' or ',' separated)."),
      K_LIST, F(vtpm.supported_secret_security) },
    { KEY("vtpm", "deployment_key_file", "string", NULL,
          "Key for the deployment secret mode (absolute path; 32 bytes, raw or 64 hex digits; mode 0600)."),
      K_PATH, F(vtpm.deployment_key_file) },
    { KEY("vtpm", "previous_deployment_key_file", "string", NULL,
          "Former deployment key, accepted to unwrap secrets only (key rotation; same format)."),
      K_PATH, F(vtpm.previous_deployment_key_file) },
    { KEY("vtpm", "allow_unencrypted", "bool", "false",
          "Give user-mode instances sent without instance.vtpm.secret an unencrypted TPM "
          "instead of refusing them with SecretRequired (tests and demos only)."),
      K_BOOL, F(vtpm.allow_unencrypted) },
    { KEY("vtpm", "ek_ca_cert", "string", NULL,
          "The deployment's CA certificate for vTPM EK certificates (absolute path, PEM; needs "
          "ek_ca_key). Unset: libvirt's host-local CA, not verifiable across hosts."),
      K_PATH, F(vtpm.ek_ca_cert) },
    { KEY("vtpm", "ek_ca_key", "string", NULL,
          "Private key of ek_ca_cert (absolute path, unencrypted PEM, mode 0600)."),
      K_PATH, F(vtpm.ek_ca_key) },

    { KEY("metrics", "textfile", "string", NULL,
          "Prometheus metrics file for node_exporter's textfile collector (absolute path "
          "ending in .prom; empty = off)."),
      K_PATH, F(metrics.textfile), .check = check_prom_file, .empty_unsets = true },
    { KEY("metrics", "interval", "uint", "5", "Seconds between writes of the metrics file (1..3600)."),
      K_UINT, F(metrics.interval), 1, 3600 },
};

#undef KEY
#undef F

const vtpm_config_key *
vtpm_config_keys(size_t *n)
{
    /* The public view is derived from specs so that there is one table. */
    static vtpm_config_key keys[G_N_ELEMENTS(specs) + 1];
    static gsize once;

    if (g_once_init_enter(&once)) {
        for (size_t i = 0; i < G_N_ELEMENTS(specs); i++)
            keys[i] = specs[i].k;
        g_once_init_leave(&once, 1);
    }
    if (n)
        *n = G_N_ELEMENTS(specs);
    return keys;
}

static const spec *
find_spec(const char *group, const char *key)
{
    for (size_t i = 0; i < G_N_ELEMENTS(specs); i++) {
        if (strcmp(specs[i].k.group, group) == 0 && (!key || strcmp(specs[i].k.key, key) == 0))
            return &specs[i];
    }
    return NULL;
}

/* ---- value checks ------------------------------------------------------- */

/* What the URLs of a key add up to. */
typedef struct {
    unsigned nodes;
    bool tls;       /* a node is amqps:// or rabbits:// */
    bool password;  /* a node has a password written in the URL */
} url_facts;

/* The facts of the URLs in @list (each one valid), or why one is not. */
static char *
url_list_facts(const char *list, url_facts *f)
{
    g_auto(GStrv) urls = vtpm_amqp_url_list_split(list);
    guint n = g_strv_length(urls);

    for (guint i = 0; i < n; i++) {
        g_autoptr(GPtrArray) parsed = NULL;
        vtpm_error err = { 0 };

        if (vtpm_amqp_url_parse(urls[i], &parsed, &err) < 0)
            return n > 1 ? g_strdup_printf("URL %u: %s", i + 1, err.message)
                         : g_strdup(err.message);
        for (guint j = 0; j < parsed->len; j++) {
            const vtpm_amqp_node *node = parsed->pdata[j];

            f->tls = f->tls || node->tls;
            f->password = f->password || node->password_given;
        }
        f->nodes += parsed->len;
    }
    return n ? NULL : g_strdup("no URL");
}

/* The grammar is amqp/url.h's: one URL, which may name several nodes. */
static char *
check_amqp_url(const char *v)
{
    g_autoptr(GPtrArray) nodes = NULL;
    vtpm_error err = { 0 };

    if (vtpm_amqp_url_parse(v, &nodes, &err) < 0)
        return g_strdup(err.message);
    if (nodes->len > VTPM_AMQP_NODES_MAX)
        return g_strdup_printf("more than %d nodes", VTPM_AMQP_NODES_MAX);
    return NULL;
}

/* Blank-separated URLs, each as [amqp] url. */
static char *
check_amqp_urls(const char *v)
{
    url_facts f = { 0 };

    return url_list_facts(v, &f);
}

char *
vtpm_config_check_host(const char *v)
{
    return vtpm_proto_worker_host_problem(v);
}

/* The template is expanded with the destination host only, so anything
 * but one "%s" would read a missing argument or mangle the URI. */
static char *
check_migration_uri(const char *v)
{
    unsigned n = 0;

    for (const char *p = strchr(v, '%'); p; p = strchr(p + 2, '%')) {
        if (p[1] != 's')
            return g_strdup_printf("'%s' contains a %% directive other than %%s", v);
        n++;
    }
    if (n != 1)
        return g_strdup_printf("'%s' must contain exactly one %%s (found %u)", v, n);
    return NULL;
}

/* The address goes into the tcp:// URI of QEMU's migration stream: a host
 * name, an IPv4 address or a bare IPv6 address, nothing that could change
 * what the URI names. */
static char *
check_inbound_addr(const char *v)
{
    if (strchr(v, ':')) {
        if (!g_hostname_is_ip_address(v))
            return g_strdup_printf("'%s' contains ':' but is not an IPv6 address", v);
        return NULL;
    }
    return vtpm_proto_worker_host_problem(v);
}

/* node_exporter's textfile collector reads *.prom only: any other name
 * would be written and never collected, without a word. */
static char *
check_prom_file(const char *v)
{
    g_autofree char *base = g_path_get_basename(v);

    if (!g_str_has_suffix(base, ".prom") || strcmp(base, ".prom") == 0)
        return g_strdup_printf("'%s' does not end in .prom (the only files node_exporter's "
                               "textfile collector reads)", v);
    return NULL;
}

/* ---- typed parsers ------------------------------------------------------ */

static char *
size_text(guint64 n)
{
    if (n % (1024 * 1024) == 0)
        return g_strdup_printf("%" G_GUINT64_FORMAT "M", n / (1024 * 1024));
    if (n % 1024 == 0)
        return g_strdup_printf("%" G_GUINT64_FORMAT "K", n / 1024);
    return g_strdup_printf("%" G_GUINT64_FORMAT, n);
}

static char *
parse_size(const char *v, const spec *s, guint64 *out)
{
    g_autofree char *digits = g_strdup(v);
    size_t len = strlen(digits);
    guint64 mult = 1, n = 0;
    bool too_big = false;

    if (len > 0 && strchr("kK", digits[len - 1]))
        mult = 1024;
    else if (len > 0 && strchr("mM", digits[len - 1]))
        mult = 1024 * 1024;
    if (mult != 1)
        digits[len - 1] = '\0';
    if (!g_ascii_string_to_unsigned(digits, 10, 0, G_MAXUINT64 / mult, &n, NULL)) {
        if (!digits[0] || strspn(digits, "0123456789") != strlen(digits))
            return g_strdup_printf("'%s' is not a size (bytes, or a number with suffix K or M)", v);
        too_big = true;
    }
    if (too_big || n > s->max / mult || n * mult < s->min) {
        g_autofree char *lo = size_text(s->min);
        g_autofree char *hi = size_text(s->max);
        return g_strdup_printf("%s is out of range %s..%s", v, lo, hi);
    }
    *out = n * mult;
    return NULL;
}

static char *
parse_uint(const char *v, const spec *s, guint64 *out)
{
    g_autoptr(GError) error = NULL;

    if (g_ascii_string_to_unsigned(v, 10, s->min, s->max, out, &error))
        return NULL;
    if (g_error_matches(error, G_NUMBER_PARSER_ERROR, G_NUMBER_PARSER_ERROR_OUT_OF_BOUNDS))
        return g_strdup_printf("%s is out of range %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT,
                               v, s->min, s->max);
    return g_strdup_printf("'%s' is not a number", v);
}

static char *
parse_enum(const char *v, const spec *s)
{
    /* The alternatives are those of the type string, "enum(a|b|c)". */
    const char *alts = s->k.type + strlen("enum(");
    g_autofree char *list = g_strndup(alts, strlen(alts) - 1);
    g_auto(GStrv) names = g_strsplit(list, "|", -1);

    if (g_strv_contains((const char *const *)names, v))
        return NULL;
    return g_strdup_printf("'%s' is not one of %s", v, list);
}

static char *
parse_modes(const char *v, unsigned *out)
{
    g_auto(GStrv) items = g_strsplit_set(v, ",;", -1);
    unsigned bits = 0;

    for (char **it = items; *it; it++) {
        int m;

        g_strstrip(*it);
        if (!**it)
            continue; /* "user;host;" is the GKeyFile list style */
        m = vtpm_secret_security_parse(*it);
        if (m < 0)
            return g_strdup_printf("'%s' is not one of user|host|deployment", *it);
        bits |= 1u << m;
    }
    if (!bits)
        return g_strdup("names no mode (user|host|deployment)");
    *out = bits;
    return NULL;
}

/* Store @v (already unescaped) into @cfg; NULL, or why it is invalid. */
static char *
set_value(const spec *s, const char *v, vtpm_config *cfg)
{
    void *field = (char *)cfg + s->off;
    char *why = NULL;
    guint64 n = 0;
    unsigned bits = 0;

    switch (s->kind) {
    case K_STR:
    case K_PATH:
    case K_ENUM:
        if (!*v && s->empty_unsets) {
            g_clear_pointer((char **)field, g_free);
            return NULL;
        }
        if (!*v)
            return g_strdup("empty value (comment the key out to get the default)");
        if (s->kind == K_PATH && !g_path_is_absolute(v))
            return g_strdup_printf("'%s' is not an absolute path", v);
        if (s->kind == K_ENUM && (why = parse_enum(v, s)))
            return why;
        if (s->check && (why = s->check(v)))
            return why;
        g_free(*(char **)field);
        *(char **)field = g_strdup(v);
        return NULL;
    case K_BOOL:
        /* What g_key_file_get_boolean() accepts. */
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            *(bool *)field = true;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            *(bool *)field = false;
        else
            return g_strdup_printf("'%s' is not a boolean (true or false)", v);
        return NULL;
    case K_UINT:
        if ((why = parse_uint(v, s, &n)))
            return why;
        *(unsigned *)field = (unsigned)n;
        return NULL;
    case K_SIZE:
        if ((why = parse_size(v, s, &n)))
            return why;
        *(size_t *)field = (size_t)n;
        return NULL;
    case K_LIST:
        if ((why = parse_modes(v, &bits)))
            return why;
        *(unsigned *)field = bits;
        return NULL;
    }
    return g_strdup("internal: unknown key type");
}

/* ---- construction ------------------------------------------------------- */

vtpm_config *
vtpm_config_new_default(void)
{
    vtpm_config *cfg = g_new0(vtpm_config, 1);

    /* Defaults go through the parser so that they are the table's by
     * construction; the tests make sure every one of them parses. */
    for (size_t i = 0; i < G_N_ELEMENTS(specs); i++) {
        g_autofree char *why = NULL;

        if (specs[i].k.dflt)
            why = set_value(&specs[i], specs[i].k.dflt, cfg);
        g_assert(why == NULL);
    }
    cfg->worker.host = g_strdup(g_get_host_name());
    return cfg;
}

void
vtpm_config_free(vtpm_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < G_N_ELEMENTS(specs); i++) {
        if (specs[i].kind == K_STR || specs[i].kind == K_PATH || specs[i].kind == K_ENUM)
            g_free(*(char **)((char *)cfg + specs[i].off));
    }
    g_free(cfg->path);
    g_free(cfg);
}

/* ---- parsing ------------------------------------------------------------ */

/*
 * GKeyFile keeps only the last of duplicate keys and no line numbers, so
 * the text is walked line by line (as GKeyFile splits it) and each
 * occurrence's raw value is decoded on its own by GKeyFile, which keeps
 * its escape rules (\s, \n, \\, ...) without reimplementing them.
 */
static char *
decode_value(const char *raw, char **why)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *doc = NULL;
    g_autofree char *v = NULL;

    if (!g_utf8_validate(raw, -1, NULL)) {
        *why = g_strdup("value is not UTF-8");
        return NULL;
    }
    doc = g_strconcat("[v]\nv=", raw, "\n", NULL);
    /* GLib may return a value *and* set an error for a bad escape. */
    if (g_key_file_load_from_data(kf, doc, (gsize)-1, G_KEY_FILE_NONE, &error))
        v = g_key_file_get_string(kf, "v", "v", &error);
    if (error || !v) {
        *why = g_strdup_printf("'%s' has an invalid escape sequence", raw);
        return NULL;
    }
    return g_steal_pointer(&v);
}

typedef struct {
    const char *name;
    GHashTable *seen; /* "group\nkey" -> line */
    char *group;      /* current [group], NULL before the first */
} scan;

static int
scan_line(scan *sc, char *line, unsigned lineno, vtpm_config *cfg, vtpm_error *err)
{
    g_autofree char *id = NULL;
    g_autofree char *v = NULL;
    g_autofree char *why = NULL;
    const spec *s;
    char *eq;

    while (g_ascii_isspace(*line))
        line++;
    if (*line == '\0' || *line == '#')
        return 0;
    if (*line == '[') {
        char *close = strrchr(line, ']');

        g_free(sc->group);
        sc->group = g_strndup(line + 1, close ? (size_t)(close - line - 1) : strlen(line + 1));
        if (!find_spec(sc->group, NULL))
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s:%u: [%s]: unknown group",
                                  sc->name, lineno, sc->group);
        return 0;
    }
    eq = strchr(line, '=');
    if (!eq || !sc->group)
        return 0; /* GKeyFile has already refused the file */
    *eq = '\0';
    g_strchomp(line);

    s = find_spec(sc->group, line);
    if (!s)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s:%u: [%s] %s: unknown key",
                              sc->name, lineno, sc->group, line);
    id = g_strconcat(s->k.group, "\n", s->k.key, NULL);
    if (g_hash_table_contains(sc->seen, id))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [%s] %s: duplicate key (first set on line %u)",
                              sc->name, lineno, sc->group, line,
                              GPOINTER_TO_UINT(g_hash_table_lookup(sc->seen, id)));
    g_hash_table_insert(sc->seen, g_steal_pointer(&id), GUINT_TO_POINTER(lineno));

    /* GKeyFile keeps trailing blanks; "workers = 4 " must still be 4. */
    g_strchomp(eq + 1);
    v = decode_value(eq + 1, &why);
    if (v)
        why = set_value(s, v, cfg);
    if (why)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s:%u: [%s] %s: %s",
                              sc->name, lineno, sc->group, line, why);
    return 0;
}

static unsigned
line_of(scan *sc, const char *group, const char *key)
{
    g_autofree char *id = g_strconcat(group, "\n", key, NULL);

    return GPOINTER_TO_UINT(g_hash_table_lookup(sc->seen, id));
}

/* Checks between keys, once every value is valid on its own. */
static int
check_combination(scan *sc, const vtpm_config *cfg, vtpm_error *err)
{
    g_autofree char *why = NULL;
    url_facts url = { 0 }, fo = { 0 };

    /* Both keys hold valid URLs by now. */
    g_free(url_list_facts(cfg->amqp.url, &url));
    g_free(url_list_facts(cfg->amqp.failover_urls, &fo));
    if (url.tls && !cfg->amqp.cacert)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [amqp] url: amqps needs [amqp] cacert", sc->name,
                              line_of(sc, "amqp", "url"));
    if (fo.tls && !cfg->amqp.cacert)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [amqp] failover_urls: amqps needs [amqp] cacert", sc->name,
                              line_of(sc, "amqp", "failover_urls"));
    if (url.nodes + fo.nodes > VTPM_AMQP_NODES_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [amqp] failover_urls: more than %d broker nodes with the "
                              "%u of [amqp] url",
                              sc->name, line_of(sc, "amqp", "failover_urls"),
                              VTPM_AMQP_NODES_MAX, url.nodes);
    /* A loader needs its variable store template: libvirt does not
     * guess one for a loader it did not select itself. */
    if (!cfg->libvirt.uefi_loader != !cfg->libvirt.uefi_nvram_template) {
        const char *has = cfg->libvirt.uefi_loader ? "uefi_loader" : "uefi_nvram_template";

        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [libvirt] %s: uefi_loader and uefi_nvram_template go "
                              "together", sc->name, line_of(sc, "libvirt", has), has);
    }
    if (!cfg->amqp.cert != !cfg->amqp.key) {
        const char *has = cfg->amqp.cert ? "cert" : "key";

        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [amqp] %s: cert and key go together", sc->name,
                              line_of(sc, "amqp", has), has);
    }
    if (!cfg->vtpm.ek_ca_cert != !cfg->vtpm.ek_ca_key) {
        const char *has = cfg->vtpm.ek_ca_cert ? "ek_ca_cert" : "ek_ca_key";

        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s:%u: [vtpm] %s: ek_ca_cert and ek_ca_key go together", sc->name,
                              line_of(sc, "vtpm", has), has);
    }
    /* The hostname default is not from the file, so it is checked here. */
    if ((why = vtpm_config_check_host(cfg->worker.host)))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s: [worker] host: the hostname %s; set host", sc->name, why);
    return 0;
}

/* A credential must not be readable by every local user: refused when the
 * file is readable by others, with the file, its mode and the fix. */
static int
check_private_file(const char *what, const char *path, mode_t mode, vtpm_error *err)
{
    if (!(mode & S_IROTH))
        return 0;
    return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                          "%s has mode %04o and holds %s: it must not be readable by others "
                          "(chmod o-rwx %s; 0600, or 0640 with a vtpmd group)",
                          path, (unsigned)(mode & 07777), what, path);
}

static int
check_key_file(const char *key, const char *path, vtpm_error *err)
{
    struct stat st;
    g_autofree char *what = NULL;

    if (!path)
        return 0;
    if (stat(path, &st) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s %s: %s", key, path,
                              g_strerror(errno));
    what = g_strdup_printf("a private key (%s)", key);
    return check_private_file(what, path, st.st_mode, err);
}

/* Credentials on disk: the config file itself when its [amqp] url has a
 * password, and the key files it names. */
static int
check_credentials(scan *sc, const vtpm_config *cfg, const struct stat *st, vtpm_error *err)
{
    unsigned url_line = line_of(sc, "amqp", "url");
    unsigned fo_line = line_of(sc, "amqp", "failover_urls");
    url_facts url = { 0 }, fo = { 0 };
    int rc;

    g_free(url_list_facts(cfg->amqp.url, &url));
    g_free(url_list_facts(cfg->amqp.failover_urls, &fo));
    if (url_line && url.password) {
        g_autofree char *what = g_strdup_printf("the broker password ([amqp] url, line %u)",
                                                url_line);

        if ((rc = check_private_file(what, sc->name, st->st_mode, err)) < 0)
            return rc;
    }
    if (fo_line && fo.password) {
        g_autofree char *what =
            g_strdup_printf("a broker password ([amqp] failover_urls, line %u)", fo_line);

        if ((rc = check_private_file(what, sc->name, st->st_mode, err)) < 0)
            return rc;
    }
    if ((rc = check_key_file("[amqp] key", cfg->amqp.key, err)) < 0 ||
        (rc = check_key_file("[vtpm] deployment_key_file", cfg->vtpm.deployment_key_file,
                             err)) < 0 ||
        (rc = check_key_file("[vtpm] previous_deployment_key_file",
                             cfg->vtpm.previous_deployment_key_file, err)) < 0 ||
        (rc = check_key_file("[vtpm] ek_ca_key", cfg->vtpm.ek_ca_key, err)) < 0)
        return rc;
    return 0;
}

/* @st: the file @name was read from, whose credentials are then checked;
 * NULL for text from elsewhere. */
static int
load_text(const char *name, const char *data, const struct stat *st, vtpm_config **out,
          vtpm_error *err)
{
    g_autoptr(vtpm_config) cfg = vtpm_config_new_default();
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_auto(GStrv) lines = NULL;
    scan sc = { .name = name, .seen = seen };
    int rc = 0;

    /* Syntax first, with GLib's own message. */
    if (!g_key_file_load_from_data(kf, data, (gsize)-1, G_KEY_FILE_NONE, &error))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s", name, error->message);

    lines = g_strsplit(data, "\n", -1);
    for (unsigned i = 0; lines[i] && rc == 0; i++) {
        size_t len = strlen(lines[i]);

        if (len > 0 && lines[i][len - 1] == '\r')
            lines[i][len - 1] = '\0';
        rc = scan_line(&sc, lines[i], i + 1, cfg, err);
    }
    g_free(sc.group);
    if (rc == 0)
        rc = check_combination(&sc, cfg, err);
    if (rc == 0 && st)
        rc = check_credentials(&sc, cfg, st, err);
    if (rc < 0)
        return rc;

    cfg->path = g_strdup(name);
    *out = g_steal_pointer(&cfg);
    return 0;
}

int
vtpm_config_load_data(const char *name, const char *data, vtpm_config **out,
                      vtpm_error *err)
{
    return load_text(name, data, NULL, out, err);
}

/* Regular files only (a FIFO would block, /dev/zero never ends), and the
 * limit applies while reading, since the file may grow after fstat. */
static int
read_limited(const char *path, char **out, struct stat *st_out, vtpm_error *err)
{
    g_autoptr(GString) buf = g_string_sized_new(4096);
    char chunk[4096];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s", path,
                              g_strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: not a regular file", path);
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            close(fd);
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: %s", path, g_strerror(e));
        }
        if (n == 0)
            break;
        if (buf->len + (size_t)n > CONFIG_MAX_FILE) {
            close(fd);
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: larger than %d bytes",
                                  path, CONFIG_MAX_FILE);
        }
        g_string_append_len(buf, chunk, n);
    }
    close(fd);
    if (strlen(buf->str) != buf->len)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s: contains a NUL byte", path);
    *out = g_string_free(g_steal_pointer(&buf), FALSE);
    *st_out = st;
    return 0;
}

int
vtpm_config_load(const char *path, vtpm_config **out, vtpm_error *err)
{
    g_autofree char *data = NULL;
    struct stat st;
    int rc = read_limited(path, &data, &st, err);

    if (rc < 0)
        return rc;
    return load_text(path, data, &st, out, err);
}
