/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "config.h"
#include "policy.h"

#define SAMPLE VTPM_FIXTURES "/../../docs/vtpmd.conf.sample"
#define OPERATIONS VTPM_FIXTURES "/../../docs/operations.md"
#define BIT(m) (1u << (m))

static vtpm_config *
load_ok(const char *data)
{
    vtpm_config *cfg = NULL;
    vtpm_error err = { 0 };
    int rc = vtpm_config_load_data("t.conf", data, &cfg, &err);

    if (rc != 0)
        fail_msg("unexpected error: %s", err.message);
    assert_non_null(cfg);
    return cfg;
}

/* Asserts the exact fault and message, and that @out stayed untouched. */
static void
expect_error(const char *data, const char *message)
{
    vtpm_config *sentinel = (vtpm_config *)&sentinel;
    vtpm_config *cfg = sentinel;
    vtpm_error err = { 0 };
    int rc = vtpm_config_load_data("/etc/vtpmd.conf", data, &cfg, &err);

    assert_int_equal(rc, -(int)VTPM_FAULT_BAD_REQUEST);
    assert_int_equal(err.code, VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message, message);
    assert_ptr_equal(cfg, sentinel);
}

static bool
config_equal(const vtpm_config *a, const vtpm_config *b)
{
    return g_strcmp0(a->amqp.url, b->amqp.url) == 0 &&
           g_strcmp0(a->amqp.failover_urls, b->amqp.failover_urls) == 0 &&
           g_strcmp0(a->amqp.cacert, b->amqp.cacert) == 0 &&
           g_strcmp0(a->amqp.cert, b->amqp.cert) == 0 &&
           g_strcmp0(a->amqp.key, b->amqp.key) == 0 &&
           g_strcmp0(a->amqp.exchange, b->amqp.exchange) == 0 &&
           g_strcmp0(a->amqp.topic, b->amqp.topic) == 0 &&
           a->amqp.prefetch == b->amqp.prefetch && a->amqp.heartbeat == b->amqp.heartbeat &&
           g_strcmp0(a->amqp.queue_type, b->amqp.queue_type) == 0 &&
           g_strcmp0(a->worker.host, b->worker.host) == 0 &&
           a->worker.workers == b->worker.workers &&
           a->worker.max_message_bytes == b->worker.max_message_bytes &&
           a->worker.dedupe_size == b->worker.dedupe_size &&
           a->worker.capabilities_interval == b->worker.capabilities_interval &&
           g_strcmp0(a->libvirt.uri, b->libvirt.uri) == 0 &&
           a->libvirt.swtpm_enabled == b->libvirt.swtpm_enabled &&
           g_strcmp0(a->libvirt.swtpm_user, b->libvirt.swtpm_user) == 0 &&
           g_strcmp0(a->libvirt.swtpm_group, b->libvirt.swtpm_group) == 0 &&
           g_strcmp0(a->libvirt.images_dir, b->libvirt.images_dir) == 0 &&
           g_strcmp0(a->libvirt.console_dir, b->libvirt.console_dir) == 0 &&
           g_strcmp0(a->libvirt.virt_type, b->libvirt.virt_type) == 0 &&
           a->libvirt.shutdown_timeout == b->libvirt.shutdown_timeout &&
           g_strcmp0(a->libvirt.migration_uri_template, b->libvirt.migration_uri_template) == 0 &&
           g_strcmp0(a->libvirt.state_dir, b->libvirt.state_dir) == 0 &&
           g_strcmp0(a->libvirt.uefi_loader, b->libvirt.uefi_loader) == 0 &&
           g_strcmp0(a->libvirt.uefi_nvram_template, b->libvirt.uefi_nvram_template) == 0 &&
           g_strcmp0(a->libvirt.live_migration_uri_template,
                     b->libvirt.live_migration_uri_template) == 0 &&
           g_strcmp0(a->libvirt.live_migration_inbound_addr,
                     b->libvirt.live_migration_inbound_addr) == 0 &&
           a->libvirt.live_migration_with_native_tls == b->libvirt.live_migration_with_native_tls &&
           a->libvirt.live_migration_timeout == b->libvirt.live_migration_timeout &&
           g_strcmp0(a->store.uri, b->store.uri) == 0 &&
           g_strcmp0(a->store.shelve_pool, b->store.shelve_pool) == 0 &&
           g_strcmp0(a->store.incoming_pool, b->store.incoming_pool) == 0 &&
           g_strcmp0(a->store.pool_dir, b->store.pool_dir) == 0 &&
           g_strcmp0(a->store.kept_dir, b->store.kept_dir) == 0 &&
           a->store.checkpoint_interval == b->store.checkpoint_interval &&
           a->store.checkpoint_keep == b->store.checkpoint_keep &&
           g_strcmp0(a->store.checkpoint_pool, b->store.checkpoint_pool) == 0 &&
           a->vtpm.supported_secret_security == b->vtpm.supported_secret_security &&
           g_strcmp0(a->vtpm.deployment_key_file, b->vtpm.deployment_key_file) == 0 &&
           g_strcmp0(a->vtpm.previous_deployment_key_file,
                     b->vtpm.previous_deployment_key_file) == 0 &&
           a->vtpm.allow_unencrypted == b->vtpm.allow_unencrypted &&
           g_strcmp0(a->vtpm.ek_ca_cert, b->vtpm.ek_ca_cert) == 0 &&
           g_strcmp0(a->vtpm.ek_ca_key, b->vtpm.ek_ca_key) == 0 &&
           g_strcmp0(a->metrics.textfile, b->metrics.textfile) == 0 &&
           a->metrics.interval == b->metrics.interval;
}

/* ---- defaults and the table --------------------------------------------- */

static void
test_defaults(void **state)
{
    g_autoptr(vtpm_config) c = vtpm_config_new_default();

    assert_string_equal(c->amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_null(c->amqp.cacert);
    assert_null(c->amqp.cert);
    assert_null(c->amqp.key);
    assert_string_equal(c->amqp.exchange, "vtpm");
    assert_string_equal(c->amqp.topic, "vtpm");
    assert_int_equal(c->amqp.prefetch, 16);
    assert_int_equal(c->amqp.heartbeat, 30);
    assert_string_equal(c->amqp.queue_type, "classic");
    assert_string_equal(c->worker.host, g_get_host_name());
    assert_int_equal(c->worker.workers, 4);
    assert_int_equal(c->worker.max_message_bytes, 1048576);
    assert_int_equal(c->worker.dedupe_size, 1024);
    assert_int_equal(c->worker.capabilities_interval, 60);
    assert_string_equal(c->libvirt.uri, "qemu:///system");
    assert_false(c->libvirt.swtpm_enabled);
    assert_string_equal(c->libvirt.swtpm_user, "tss");
    assert_string_equal(c->libvirt.swtpm_group, "tss");
    assert_string_equal(c->libvirt.images_dir, "/var/lib/vtpmd/images");
    assert_string_equal(c->libvirt.console_dir, "/var/lib/vtpmd/console");
    assert_string_equal(c->libvirt.virt_type, "auto");
    assert_int_equal(c->libvirt.shutdown_timeout, 60);
    assert_string_equal(c->libvirt.migration_uri_template, "qemu+tls://%s/system");
    assert_string_equal(c->libvirt.state_dir, "/var/lib/libvirt/swtpm");
    assert_null(c->libvirt.uefi_loader);
    assert_null(c->libvirt.uefi_nvram_template);
    assert_null(c->libvirt.live_migration_uri_template);
    assert_null(c->libvirt.live_migration_inbound_addr);
    assert_false(c->libvirt.live_migration_with_native_tls);
    assert_int_equal(c->libvirt.live_migration_timeout, 800);
    assert_null(c->store.uri);
    assert_string_equal(c->store.shelve_pool, "vtpm-shelved");
    assert_string_equal(c->store.incoming_pool, "vtpm-incoming");
    assert_string_equal(c->store.pool_dir, "/var/lib/vtpmd/pools");
    assert_string_equal(c->store.kept_dir, "/var/lib/vtpmd/kept");
    assert_int_equal(c->store.checkpoint_interval, 300);
    assert_int_equal(c->store.checkpoint_keep, 2);
    assert_string_equal(c->store.checkpoint_pool, "vtpm-checkpoints");
    assert_int_equal(c->vtpm.supported_secret_security,
                     BIT(VTPM_SECRET_USER) | BIT(VTPM_SECRET_HOST));
    assert_null(c->vtpm.deployment_key_file);
    assert_null(c->vtpm.previous_deployment_key_file);
    assert_false(c->vtpm.allow_unencrypted);
    assert_null(c->vtpm.ek_ca_cert);
    assert_null(c->vtpm.ek_ca_key);
    assert_null(c->metrics.textfile);
    assert_int_equal(c->metrics.interval, 5);
    assert_null(c->path);

    vtpm_config_free(NULL);
}

static void
test_table_shape(void **state)
{
    size_t n = 0;
    const vtpm_config_key *keys = vtpm_config_keys(&n);
    g_autoptr(GHashTable) ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    const char *types[] = { "string", "bool", "uint", "size", "list", NULL };

    assert_int_equal(n, 47);
    assert_null(keys[n].group);
    assert_null(keys[n].key);
    for (size_t i = 0; i < n; i++) {
        char *id = g_strconcat(keys[i].group, " ", keys[i].key, NULL);

        assert_false(g_hash_table_contains(ids, id));
        g_hash_table_add(ids, id);
        assert_non_null(keys[i].help);
        assert_true(strlen(keys[i].help) > 0);
        assert_null(strchr(keys[i].help, '\n'));
        assert_true(g_strv_contains(types, keys[i].type) ||
                    (g_str_has_prefix(keys[i].type, "enum(") &&
                     g_str_has_suffix(keys[i].type, ")")));
    }
    assert_ptr_equal(vtpm_config_keys(NULL), keys);
}

/* Every default in the table, written into a file, gives the struct's
 * default: the table and vtpm_config_new_default() cannot disagree. */
static void
test_table_defaults_match(void **state)
{
    size_t n = 0;
    const vtpm_config_key *keys = vtpm_config_keys(&n);
    g_autoptr(vtpm_config) dflt = vtpm_config_new_default();
    g_autoptr(GString) all = g_string_new(NULL);
    const char *group = "";
    unsigned unset = 0;

    for (size_t i = 0; i < n; i++) {
        g_autofree char *one = NULL;
        g_autoptr(vtpm_config) c = NULL;

        if (!keys[i].dflt) {
            unset++;
            continue;
        }
        one = g_strdup_printf("[%s]\n%s = %s\n", keys[i].group, keys[i].key, keys[i].dflt);
        c = load_ok(one);
        if (!config_equal(c, dflt))
            fail_msg("[%s] %s: default '%s' differs from the struct default", keys[i].group,
                     keys[i].key, keys[i].dflt);
        if (strcmp(group, keys[i].group) != 0)
            g_string_append_printf(all, "[%s]\n", keys[i].group);
        group = keys[i].group;
        g_string_append_printf(all, "%s=%s\n", keys[i].key, keys[i].dflt);
    }
    /* failover_urls, cacert, cert, key, host, uefi_loader, uefi_nvram_template,
     * store uri, deployment_key_file, previous_deployment_key_file, ek_ca_cert,
     * ek_ca_key, metrics textfile, live_migration_uri_template,
     * live_migration_inbound_addr */
    assert_int_equal(unset, 15);

    {
        g_autoptr(vtpm_config) c = load_ok(all->str);

        assert_true(config_equal(c, dflt));
        assert_string_equal(c->path, "t.conf");
    }
}

/* ---- every key ----------------------------------------------------------- */

static const char full_conf[] =
    "# all keys, none at the default\n"
    "[amqp]\n"
    "url = amqps://u%40x:p%3Aw@[::1]:5671/prod\n"
    "failover_urls = amqps://h2:5671/prod  amqp://h3/prod\n"
    "cacert = /etc/vtpmd/ca.pem\n"
    "cert = /etc/vtpmd/c.pem\n"
    "key = /etc/vtpmd/c.key\n"
    "exchange = ex\n"
    "topic = top\\sic\n"
    "prefetch = 65535\n"
    "heartbeat = 0\n"
    "queue_type = quorum\n"
    "\n"
    "[worker]\n"
    "  host   =   node-7.example_1  \n"
    "workers = 256\n"
    "max_message_bytes = 64M\n"
    "dedupe_size = 0\n"
    "capabilities_interval = 86400\n"
    "[libvirt]\n"
    "uri = qemu+ssh://root@h/system\n"
    "swtpm_enabled = true\n"
    "swtpm_user = swtpm\n"
    "swtpm_group = swgrp\n"
    "images_dir = /srv/images\n"
    "console_dir = /srv/console\n"
    "virt_type = kvm\n"
    "shutdown_timeout = 3600\n"
    "migration_uri_template = qemu+ssh://%s/system?keyfile=/k\n"
    "state_dir = /srv/swtpm\n"
    "uefi_loader = /srv/ovmf/CODE.secboot.fd\n"
    "uefi_nvram_template = /srv/ovmf/VARS.own-keys.fd\n"
    "live_migration_uri_template = qemu:///system?socket=/run/%s/libvirt-sock\n"
    "live_migration_inbound_addr = fd00::7\n"
    "live_migration_with_native_tls = true\n"
    "live_migration_timeout = 0\n"
    "[store]\n"
    "uri = qemu:///session\n"
    "shelve_pool = shelf\n"
    "incoming_pool = inbox\n"
    "pool_dir = /srv/pools\n"
    "kept_dir = /srv/kept\n"
    "checkpoint_interval = 0\n"
    "checkpoint_keep = 100\n"
    "checkpoint_pool = ckpts\n"
    "[vtpm]\n"
    "supported_secret_security = deployment, user\n"
    "deployment_key_file = /etc/vtpmd/dk\n"
    "previous_deployment_key_file = /etc/vtpmd/dk.old\n"
    "allow_unencrypted = true\n"
    "ek_ca_cert = /etc/vtpmd/ek-ca.pem\n"
    "ek_ca_key = /etc/vtpmd/ek-ca.key\n"
    "[metrics]\n"
    "textfile = /var/lib/node-exporter/v.prom\n"
    "interval = 3600\n";

static void
test_every_key(void **state)
{
    g_autoptr(vtpm_config) c = load_ok(full_conf);
    size_t n = 0;
    const vtpm_config_key *keys = vtpm_config_keys(&n);

    /* full_conf must really set every key of the table. */
    for (size_t i = 0; i < n; i++) {
        g_autofree char *line = g_strdup_printf("\n%s = ", keys[i].key);
        g_autofree char *indented = g_strdup_printf("\n  %s   =", keys[i].key);

        if (!strstr(full_conf, line) && !strstr(full_conf, indented))
            fail_msg("full_conf lacks %s", keys[i].key);
    }

    assert_string_equal(c->amqp.url, "amqps://u%40x:p%3Aw@[::1]:5671/prod");
    assert_string_equal(c->amqp.failover_urls, "amqps://h2:5671/prod  amqp://h3/prod");
    assert_string_equal(c->amqp.cacert, "/etc/vtpmd/ca.pem");
    assert_string_equal(c->amqp.cert, "/etc/vtpmd/c.pem");
    assert_string_equal(c->amqp.key, "/etc/vtpmd/c.key");
    assert_string_equal(c->amqp.exchange, "ex");
    assert_string_equal(c->amqp.topic, "top ic"); /* GKeyFile escapes apply */
    assert_int_equal(c->amqp.prefetch, 65535);
    assert_int_equal(c->amqp.heartbeat, 0);
    assert_string_equal(c->amqp.queue_type, "quorum");
    assert_string_equal(c->worker.host, "node-7.example_1");
    assert_int_equal(c->worker.workers, 256);
    assert_int_equal(c->worker.max_message_bytes, 64 * 1024 * 1024);
    assert_int_equal(c->worker.dedupe_size, 0);
    assert_int_equal(c->worker.capabilities_interval, 86400);
    assert_string_equal(c->libvirt.uri, "qemu+ssh://root@h/system");
    assert_true(c->libvirt.swtpm_enabled);
    assert_string_equal(c->libvirt.swtpm_user, "swtpm");
    assert_string_equal(c->libvirt.swtpm_group, "swgrp");
    assert_string_equal(c->libvirt.images_dir, "/srv/images");
    assert_string_equal(c->libvirt.console_dir, "/srv/console");
    assert_string_equal(c->libvirt.virt_type, "kvm");
    assert_int_equal(c->libvirt.shutdown_timeout, 3600);
    assert_string_equal(c->libvirt.migration_uri_template, "qemu+ssh://%s/system?keyfile=/k");
    assert_string_equal(c->libvirt.state_dir, "/srv/swtpm");
    assert_string_equal(c->libvirt.uefi_loader, "/srv/ovmf/CODE.secboot.fd");
    assert_string_equal(c->libvirt.uefi_nvram_template, "/srv/ovmf/VARS.own-keys.fd");
    assert_string_equal(c->libvirt.live_migration_uri_template,
                        "qemu:///system?socket=/run/%s/libvirt-sock");
    assert_string_equal(c->libvirt.live_migration_inbound_addr, "fd00::7");
    assert_true(c->libvirt.live_migration_with_native_tls);
    assert_int_equal(c->libvirt.live_migration_timeout, 0);
    assert_string_equal(c->store.uri, "qemu:///session");
    assert_string_equal(c->store.shelve_pool, "shelf");
    assert_string_equal(c->store.incoming_pool, "inbox");
    assert_string_equal(c->store.pool_dir, "/srv/pools");
    assert_string_equal(c->store.kept_dir, "/srv/kept");
    assert_int_equal(c->store.checkpoint_interval, 0);
    assert_int_equal(c->store.checkpoint_keep, 100);
    assert_string_equal(c->store.checkpoint_pool, "ckpts");
    assert_int_equal(c->vtpm.supported_secret_security,
                     BIT(VTPM_SECRET_DEPLOYMENT) | BIT(VTPM_SECRET_USER));
    assert_string_equal(c->vtpm.deployment_key_file, "/etc/vtpmd/dk");
    assert_string_equal(c->vtpm.previous_deployment_key_file, "/etc/vtpmd/dk.old");
    assert_true(c->vtpm.allow_unencrypted);
    assert_string_equal(c->vtpm.ek_ca_cert, "/etc/vtpmd/ek-ca.pem");
    assert_string_equal(c->vtpm.ek_ca_key, "/etc/vtpmd/ek-ca.key");
    assert_string_equal(c->metrics.textfile, "/var/lib/node-exporter/v.prom");
    assert_int_equal(c->metrics.interval, 3600);
}

static void
test_partial_keeps_defaults(void **state)
{
    g_autoptr(vtpm_config) c = load_ok("[worker]\nworkers=9\n[amqp]\n");
    g_autoptr(vtpm_config) d = vtpm_config_new_default();

    assert_int_equal(c->worker.workers, 9);
    c->worker.workers = d->worker.workers;
    assert_true(config_equal(c, d));

    {
        g_autoptr(vtpm_config) empty = load_ok("");

        assert_true(config_equal(empty, d));
    }
    {
        /* An empty textfile is "off", as if the key were absent. */
        g_autoptr(vtpm_config) off = load_ok("[metrics]\ntextfile =\n");

        assert_null(off->metrics.textfile);
        assert_true(config_equal(off, d));
    }
}

static void
test_sizes(void **state)
{
    static const struct {
        const char *text;
        size_t bytes;
    } ok[] = {
        { "1024", 1024 },         { "1K", 1024 },   { "1k", 1024 },
        { "1536K", 1536 * 1024 }, { "2m", 2 << 20 }, { "67108864", 64 << 20 },
        { "65536K", 64 << 20 },   { "0064M", 64 << 20 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        g_autofree char *doc = g_strdup_printf("[worker]\nmax_message_bytes=%s\n", ok[i].text);
        g_autoptr(vtpm_config) c = load_ok(doc);

        assert_int_equal(c->worker.max_message_bytes, ok[i].bytes);
    }
}

static void
test_secret_modes(void **state)
{
    static const struct {
        const char *text;
        unsigned bits;
    } ok[] = {
        { "user", BIT(VTPM_SECRET_USER) },
        { "host;", BIT(VTPM_SECRET_HOST) },
        { "deployment , host", BIT(VTPM_SECRET_DEPLOYMENT) | BIT(VTPM_SECRET_HOST) },
        { "user;host;deployment;",
          BIT(VTPM_SECRET_USER) | BIT(VTPM_SECRET_HOST) | BIT(VTPM_SECRET_DEPLOYMENT) },
        { "user,user", BIT(VTPM_SECRET_USER) },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        g_autofree char *doc =
            g_strdup_printf("[vtpm]\nsupported_secret_security=%s\n", ok[i].text);
        g_autoptr(vtpm_config) c = load_ok(doc);

        assert_int_equal(c->vtpm.supported_secret_security, ok[i].bits);
    }
}

static void
test_urls_accepted(void **state)
{
    /* The forms of vtpmd.conf(5), kept as written (the broker reads them
     * through amqp/url.c, whose test checks what each one means). */
    static const char *const ok[] = {
        "amqp://h",
        "amqp://h:1",
        "amqp://user@h:65535/vh",
        "amqp://[fe80::1]",
        "amqp://[fe80::1]:5672/%2f",
        "amqps://h/x",
        "amqp://h/",
        "rabbit://nova:secret@rabbit.example.net:5672/",
        "rabbits://nova:secret@rabbit.example.net/",
        "rabbit://u:p@h1:5672,u:p@h2:5672/nova",
        "rabbit://h1,h2,h3,h4,h5,h6,h7,h8/%2f",
        "amqp://h:/x",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        g_autofree char *doc = g_strdup_printf("[amqp]\nurl=%s\ncacert=/ca\n", ok[i]);
        g_autoptr(vtpm_config) c = load_ok(doc);

        assert_string_equal(c->amqp.url, ok[i]);
    }
}

/* ---- errors -------------------------------------------------------------- */

/* A config and the one error it must give, in file order within each kind. */
static const struct {
    const char *data, *message;
} error_cases[] = {
    /* structure */
    { "# x\n[bogus]\nk=v\n", "/etc/vtpmd.conf:2: [bogus]: unknown group" },
    { "[amqp]\nurl=amqp://h\n[Amqp]\n", "/etc/vtpmd.conf:3: [Amqp]: unknown group" },
    { "[worker]\n\nthreads = 4\n", "/etc/vtpmd.conf:3: [worker] threads: unknown key" },
    { "[amqp]\nurl[de]=amqp://h\n", "/etc/vtpmd.conf:2: [amqp] url[de]: unknown key" },
    { "[worker]\nworkers=4\n[amqp]\n[worker]\n workers = 5\n",
      "/etc/vtpmd.conf:5: [worker] workers: duplicate key (first set on line 2)" },
    /* values */
    { "[libvirt]\nswtpm_enabled=yes\n",
      "/etc/vtpmd.conf:2: [libvirt] swtpm_enabled: 'yes' is not a boolean (true or false)" },
    { "[libvirt]\nswtpm_enabled=True\n",
      "/etc/vtpmd.conf:2: [libvirt] swtpm_enabled: 'True' is not a boolean (true or false)" },
    { "[metrics]\ninterval = 0\n",
      "/etc/vtpmd.conf:2: [metrics] interval: 0 is out of range 1..3600" },
    { "[metrics]\ninterval = 3601\n",
      "/etc/vtpmd.conf:2: [metrics] interval: 3601 is out of range 1..3600" },
    { "[metrics]\ntextfile = vtpmd.prom\n",
      "/etc/vtpmd.conf:2: [metrics] textfile: 'vtpmd.prom' is not an absolute path" },
    { "[metrics]\ntextfile = /var/lib/node-exporter/vtpmd.txt\n",
      "/etc/vtpmd.conf:2: [metrics] textfile: '/var/lib/node-exporter/vtpmd.txt' does not "
      "end in .prom (the only files node_exporter's textfile collector reads)" },
    { "[metrics]\ntextfile = /var/lib/node-exporter/.prom\n",
      "/etc/vtpmd.conf:2: [metrics] textfile: '/var/lib/node-exporter/.prom' does not "
      "end in .prom (the only files node_exporter's textfile collector reads)" },
    { "[store]\ncheckpoint_keep = 0\n",
      "/etc/vtpmd.conf:2: [store] checkpoint_keep: 0 is out of range 1..100" },
    { "[store]\ncheckpoint_keep = 101\n",
      "/etc/vtpmd.conf:2: [store] checkpoint_keep: 101 is out of range 1..100" },
    { "[store]\ncheckpoint_interval = 86401\n",
      "/etc/vtpmd.conf:2: [store] checkpoint_interval: 86401 is out of range 0..86400" },
    { "[store]\ncheckpoint_pool = \n",
      "/etc/vtpmd.conf:2: [store] checkpoint_pool: empty value (comment the key out to get "
      "the default)" },
    { "[worker]\nworkers = 0\n",
      "/etc/vtpmd.conf:2: [worker] workers: 0 is out of range 1..256" },
    { "[worker]\nworkers = 257\n",
      "/etc/vtpmd.conf:2: [worker] workers: 257 is out of range 1..256" },
    { "[worker]\nworkers = 99999999999999999999999\n",
      "/etc/vtpmd.conf:2: [worker] workers: 99999999999999999999999 is out of range 1..256" },
    { "[worker]\nworkers = four\n",
      "/etc/vtpmd.conf:2: [worker] workers: 'four' is not a number" },
    { "[worker]\nworkers = -1\n", "/etc/vtpmd.conf:2: [worker] workers: '-1' is not a number" },
    { "[worker]\nworkers = 4 # four\n",
      "/etc/vtpmd.conf:2: [worker] workers: '4 # four' is not a number" },
    { "[amqp]\nprefetch=65536\n",
      "/etc/vtpmd.conf:2: [amqp] prefetch: 65536 is out of range 1..65535" },
    { "[amqp]\nheartbeat=3601\n",
      "/etc/vtpmd.conf:2: [amqp] heartbeat: 3601 is out of range 0..3600" },
    { "[worker]\ndedupe_size=1000001\n",
      "/etc/vtpmd.conf:2: [worker] dedupe_size: 1000001 is out of range 0..1000000" },
    { "[worker]\ncapabilities_interval=0\n",
      "/etc/vtpmd.conf:2: [worker] capabilities_interval: 0 is out of range 1..86400" },
    { "[libvirt]\nshutdown_timeout=3601\n",
      "/etc/vtpmd.conf:2: [libvirt] shutdown_timeout: 3601 is out of range 0..3600" },
    { "[worker]\nmax_message_bytes=1023\n",
      "/etc/vtpmd.conf:2: [worker] max_message_bytes: 1023 is out of range 1K..64M" },
    { "[worker]\nmax_message_bytes=65M\n",
      "/etc/vtpmd.conf:2: [worker] max_message_bytes: 65M is out of range 1K..64M" },
    { "[worker]\nmax_message_bytes=99999999999999999999K\n",
      "/etc/vtpmd.conf:2: [worker] max_message_bytes: 99999999999999999999K is out of range "
      "1K..64M" },
    { "[worker]\nmax_message_bytes=1G\n",
      "/etc/vtpmd.conf:2: [worker] max_message_bytes: '1G' is not a size (bytes, or a number "
      "with suffix K or M)" },
    { "[worker]\nmax_message_bytes=M\n",
      "/etc/vtpmd.conf:2: [worker] max_message_bytes: 'M' is not a size (bytes, or a number "
      "with suffix K or M)" },
    { "[amqp]\nqueue_type=stream\n",
      "/etc/vtpmd.conf:2: [amqp] queue_type: 'stream' is not one of classic|quorum" },
    { "[libvirt]\nvirt_type=xen\n",
      "/etc/vtpmd.conf:2: [libvirt] virt_type: 'xen' is not one of auto|qemu|kvm" },
    { "[libvirt]\nimages_dir=images\n",
      "/etc/vtpmd.conf:2: [libvirt] images_dir: 'images' is not an absolute path" },
    { "[amqp]\ncacert=ca.pem\n",
      "/etc/vtpmd.conf:2: [amqp] cacert: 'ca.pem' is not an absolute path" },
    { "[vtpm]\ndeployment_key_file=./k\n",
      "/etc/vtpmd.conf:2: [vtpm] deployment_key_file: './k' is not an absolute path" },
    { "[store]\nuri=\n",
      "/etc/vtpmd.conf:2: [store] uri: empty value (comment the key out to get the "
      "default)" },
    { "[vtpm]\nsupported_secret_security=user;root\n",
      "/etc/vtpmd.conf:2: [vtpm] supported_secret_security: 'root' is not one of "
      "user|host|deployment" },
    { "[vtpm]\nsupported_secret_security=;,\n",
      "/etc/vtpmd.conf:2: [vtpm] supported_secret_security: names no mode "
      "(user|host|deployment)" },
    { "[worker]\nhost=a b\n",
      "/etc/vtpmd.conf:2: [worker] host: 'a b' contains ' ' (allowed: A-Z a-z 0-9 . _ -)" },
    { "[worker]\nhost=a*\n",
      "/etc/vtpmd.conf:2: [worker] host: 'a*' contains '*' (allowed: A-Z a-z 0-9 . _ -)" },
    { "[libvirt]\nmigration_uri_template=qemu+tls://h/system\n",
      "/etc/vtpmd.conf:2: [libvirt] migration_uri_template: 'qemu+tls://h/system' must "
      "contain exactly one %s (found 0)" },
    { "[libvirt]\nmigration_uri_template=%s://%s\n",
      "/etc/vtpmd.conf:2: [libvirt] migration_uri_template: '%s://%s' must contain exactly "
      "one %s (found 2)" },
    { "[libvirt]\nmigration_uri_template=qemu://%s/system?x=%2F\n",
      "/etc/vtpmd.conf:2: [libvirt] migration_uri_template: 'qemu://%s/system?x=%2F' "
      "contains a % directive other than %s" },
    { "[libvirt]\nmigration_uri_template=qemu://%s/%%\n",
      "/etc/vtpmd.conf:2: [libvirt] migration_uri_template: 'qemu://%s/%%' contains a % "
      "directive other than %s" },
    { "[libvirt]\nmigration_uri_template=qemu://%s/%\n",
      "/etc/vtpmd.conf:2: [libvirt] migration_uri_template: 'qemu://%s/%' contains a % "
      "directive other than %s" },
    { "[libvirt]\nlive_migration_uri_template=qemu+tcp://b/system\n",
      "/etc/vtpmd.conf:2: [libvirt] live_migration_uri_template: 'qemu+tcp://b/system' "
      "must contain exactly one %s (found 0)" },
    { "[libvirt]\nlive_migration_inbound_addr=10.0.0.1/24\n",
      "/etc/vtpmd.conf:2: [libvirt] live_migration_inbound_addr: '10.0.0.1/24' contains '/' "
      "(allowed: A-Z a-z 0-9 . _ -)" },
    { "[libvirt]\nlive_migration_inbound_addr=10.0.0.1:49152\n",
      "/etc/vtpmd.conf:2: [libvirt] live_migration_inbound_addr: '10.0.0.1:49152' contains "
      "':' but is not an IPv6 address" },
    { "[libvirt]\nlive_migration_with_native_tls=yes\n",
      "/etc/vtpmd.conf:2: [libvirt] live_migration_with_native_tls: 'yes' is not a boolean "
      "(true or false)" },
    { "[libvirt]\nlive_migration_timeout=86401\n",
      "/etc/vtpmd.conf:2: [libvirt] live_migration_timeout: 86401 is out of range 0..86400" },
    /* amqp url: amqp/url.c's messages behind FILE:LINE: [amqp] KEY */
    { "[amqp]\nurl=http://h/\n",
      "/etc/vtpmd.conf:2: [amqp] url: scheme 'http' is not amqp, amqps, rabbit or rabbits" },
    { "[amqp]\nurl=amqp://\n", "/etc/vtpmd.conf:2: [amqp] url: host: empty" },
    { "[amqp]\nfailover_urls=amqp://h2 http://h3/\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: URL 2: scheme 'http' is not amqp, amqps, "
      "rabbit or rabbits" },
    { "[amqp]\nfailover_urls=a://1 a://2 a://3 a://4 a://5 a://6 a://7 a://8\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: URL 1: scheme 'a' is not amqp, amqps, rabbit "
      "or rabbits" },
    { "[amqp]\nfailover_urls=http://h\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: scheme 'http' is not amqp, amqps, rabbit or "
      "rabbits" },
    { "[amqp]\nfailover_urls=amqp://1 amqp://2 amqp://3 amqp://4 amqp://5 amqp://6 amqp://7 "
      "amqp://8\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: more than 8 broker nodes with the 1 of [amqp] url" },
    { "[amqp]\nurl=rabbit://a,b,c\nfailover_urls=amqp://d,e,f amqp://g,h,i\n",
      "/etc/vtpmd.conf:3: [amqp] failover_urls: more than 8 broker nodes with the 3 of [amqp] url" },
    { "[amqp]\nurl=rabbit://a,b,c,d,e,f,g,h,i/\n",
      "/etc/vtpmd.conf:2: [amqp] url: more than 8 nodes" },
    { "[amqp]\nfailover_urls=amqp://h amqps://h2\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: amqps needs [amqp] cacert" },
    { "[amqp]\nfailover_urls=amqp://h rabbits://h2,h3/\n",
      "/etc/vtpmd.conf:2: [amqp] failover_urls: amqps needs [amqp] cacert" },
    { "[amqp]\nurl=amqp://u:p@/vh\n", "/etc/vtpmd.conf:2: [amqp] url: host: empty" },
    { "[amqp]\nurl=amqp://h:0\n",
      "/etc/vtpmd.conf:2: [amqp] url: port: 0 is out of range 1..65535" },
    { "[amqp]\nurl=amqp://h:65536\n",
      "/etc/vtpmd.conf:2: [amqp] url: port: not a number in 1..65535" },
    { "[amqp]\nurl=amqp://h:x1\n",
      "/etc/vtpmd.conf:2: [amqp] url: port: not a number in 1..65535" },
    { "[amqp]\nurl=amqp://[::1\n",
      "/etc/vtpmd.conf:2: [amqp] url: host: not a host name or IP address (an IPv6 address "
      "goes in [])" },
    { "[amqp]\nurl=amqp://[::1]x/\n",
      "/etc/vtpmd.conf:2: [amqp] url: host: not a host name or IP address (an IPv6 address "
      "goes in [])" },
    { "[amqp]\nurl=amqp://h_1.ex ample/\n",
      "/etc/vtpmd.conf:2: [amqp] url: host 'h_1.ex ample': ' ' is not allowed (letters, "
      "digits, '-', '_', '.')" },
    { "[amqp]\nurl=amqp://u%zz@h/\n",
      "/etc/vtpmd.conf:2: [amqp] url: user: bad percent-encoding or not UTF-8" },
    { "[amqp]\nurl=amqp://u:@h/\n", "/etc/vtpmd.conf:2: [amqp] url: password: empty" },
    { "[amqp]\nurl=amqp://h/%2\n", "/etc/vtpmd.conf:2: [amqp] url: vhost: bad percent-encoding" },
    { "[amqp]\nurl=amqp://h/a/b\n",
      "/etc/vtpmd.conf:2: [amqp] url: vhost: contains '/' (write a '/' of the vhost name as %2f)" },
    { "[amqp]\nurl=rabbit://u:p@h1,h2/\n",
      "/etc/vtpmd.conf:2: [amqp] url: host 2 of 2: no user:password@ while host 1 has one "
      "(write them on every host or on none)" },
    { "[amqp]\nurl=amqp://h/?heartbeat=5\n",
      "/etc/vtpmd.conf:2: [amqp] url: query ('?...'): not supported (options are set in "
      "[amqp] or on the command line)" },
    /* between keys */
    { "[amqp]\n\nurl=amqps://h\n",
      "/etc/vtpmd.conf:3: [amqp] url: amqps needs [amqp] cacert" },
    { "[amqp]\ncacert=/ca\nkey=/k\n",
      "/etc/vtpmd.conf:3: [amqp] key: cert and key go together" },
    { "[amqp]\ncert=/c\n", "/etc/vtpmd.conf:2: [amqp] cert: cert and key go together" },
    { "[libvirt]\nuefi_loader=/o/CODE.fd\n",
      "/etc/vtpmd.conf:2: [libvirt] uefi_loader: uefi_loader and uefi_nvram_template go "
      "together" },
    { "[libvirt]\n\nuefi_nvram_template=/o/VARS.fd\n",
      "/etc/vtpmd.conf:3: [libvirt] uefi_nvram_template: uefi_loader and "
      "uefi_nvram_template go together" },
    { "[libvirt]\nuefi_loader=/o/CODE.fd\nuefi_nvram_template=\n",
      "/etc/vtpmd.conf:2: [libvirt] uefi_loader: uefi_loader and uefi_nvram_template go "
      "together" },
    { "[libvirt]\nuefi_loader=OVMF_CODE.fd\nuefi_nvram_template=/o/VARS.fd\n",
      "/etc/vtpmd.conf:2: [libvirt] uefi_loader: 'OVMF_CODE.fd' is not an absolute path" },
    { "[vtpm]\nek_ca_cert=/ca.pem\n",
      "/etc/vtpmd.conf:2: [vtpm] ek_ca_cert: ek_ca_cert and ek_ca_key go together" },
    { "[vtpm]\n\nek_ca_key=/ca.key\n",
      "/etc/vtpmd.conf:3: [vtpm] ek_ca_key: ek_ca_cert and ek_ca_key go together" },
    { "[vtpm]\nek_ca_cert=ca.pem\nek_ca_key=/ca.key\n",
      "/etc/vtpmd.conf:2: [vtpm] ek_ca_cert: 'ca.pem' is not an absolute path" },
    /* the first error in file order wins */
    { "[worker]\nworkers=0\nworkers=4\n[nope]\n",
      "/etc/vtpmd.conf:2: [worker] workers: 0 is out of range 1..256" },
    { "[worker]\nworkers=4\nworkers=0\n",
      "/etc/vtpmd.conf:3: [worker] workers: duplicate key (first set on line 2)" },
    { "[amqp]\n\n\nurl=rabbits://u:p@h1,u:p@h2/\n",
      "/etc/vtpmd.conf:4: [amqp] url: amqps needs [amqp] cacert" },
    { "[amqp]\nurl=amqps://h\nprefetch=0\n",
      "/etc/vtpmd.conf:3: [amqp] prefetch: 0 is out of range 1..65535" },
    /* CRLF line ends count lines the same */
    { "[amqp]\r\n\r\nheartbeat = 9999\r\n",
      "/etc/vtpmd.conf:3: [amqp] heartbeat: 9999 is out of range 0..3600" },
};

static void
test_errors(void **state)
{
    for (size_t i = 0; i < G_N_ELEMENTS(error_cases); i++) {
        print_message("case %zu\n", i);
        expect_error(error_cases[i].data, error_cases[i].message);
    }
}

/* Syntax errors keep GLib's message behind the file name. */
static void
test_syntax_errors(void **state)
{
    static const char *const bad[] = {
        "workers = 4\n",           /* key before any group */
        "[worker]\njust words\n",  /* neither key, group nor comment */
        "[worker\nworkers=4\n",    /* unterminated group */
    };

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        vtpm_config *cfg = NULL;
        vtpm_error err = { 0 };
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autofree char *want = NULL;

        assert_false(g_key_file_load_from_data(kf, bad[i], (gsize)-1, G_KEY_FILE_NONE, &error));
        want = g_strdup_printf("x.conf: %s", error->message);
        assert_int_equal(vtpm_config_load_data("x.conf", bad[i], &cfg, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, want);
        assert_null(cfg);
    }

    /* a value GKeyFile cannot decode is reported for its own line */
    {
        vtpm_config *cfg = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(vtpm_config_load_data("x.conf", "[amqp]\n\ntopic=a\\qb\n", &cfg, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message,
                            "x.conf:3: [amqp] topic: 'a\\qb' has an invalid escape sequence");
        assert_null(cfg);
        assert_int_equal(vtpm_config_load_data("x.conf", "[amqp]\ntopic=a\xff\n", &cfg, &err),
                         -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, "x.conf:2: [amqp] topic: value is not UTF-8");
        assert_null(cfg);
    }
}

/* ---- files --------------------------------------------------------------- */

static char *
write_temp(const char *data, size_t len)
{
    g_autoptr(GError) error = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("vtpmd-conf-XXXXXX", &path, &error);

    assert_true(fd >= 0);
    close(fd);
    assert_true(g_file_set_contents(path, data, (gssize)len, &error));
    return path;
}

static void
test_load_file(void **state)
{
    g_autofree char *path = write_temp("[worker]\nworkers = 12\n", 22);
    g_autoptr(vtpm_config) c = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_config_load(path, &c, &err), 0);
    assert_int_equal(c->worker.workers, 12);
    assert_string_equal(c->path, path);
    g_unlink(path);

    /* messages carry the real path */
    {
        g_autofree char *bad = write_temp("[worker]\n\nworkers = 0\n", 22);
        g_autofree char *want = g_strdup_printf("%s:3: [worker] workers: 0 is out of range 1..256", bad);
        vtpm_config *none = NULL;

        assert_int_equal(vtpm_config_load(bad, &none, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, want);
        assert_null(none);
        g_unlink(bad);
    }
}

static void
test_load_file_refused(void **state)
{
    vtpm_config *c = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_config_load("/nonexistent/vtpmd.conf", &c, &err),
                     -(int)VTPM_FAULT_BAD_REQUEST);
    assert_true(g_str_has_prefix(err.message, "/nonexistent/vtpmd.conf: "));
    assert_null(c);

    /* neither a directory, a device that never ends, nor a FIFO (it would block) */
    assert_int_equal(vtpm_config_load("/", &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message, "/: not a regular file");
    assert_int_equal(vtpm_config_load("/dev/zero", &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message, "/dev/zero: not a regular file");
    {
        g_autofree char *dir = g_dir_make_tmp("vtpmd-conf-XXXXXX", NULL);
        g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);
        g_autofree char *want = g_strdup_printf("%s: not a regular file", fifo);

        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(vtpm_config_load(fifo, &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, want);
        g_unlink(fifo);
        g_rmdir(dir);
    }
    assert_null(c);

    {
        /* exactly 1 MiB of comment is fine, one byte more is not */
        size_t len = 1024 * 1024;
        g_autofree char *big = g_malloc(len + 1);
        g_autofree char *path = NULL;
        g_autofree char *want = NULL;
        g_autoptr(vtpm_config) ok = NULL;

        memset(big, '#', len + 1);
        big[len - 1] = '\n';
        path = write_temp(big, len);
        assert_int_equal(vtpm_config_load(path, &ok, &err), 0);
        g_unlink(path);
        g_free(path);

        big[len - 1] = '#';
        big[len] = '\n';
        path = write_temp(big, len + 1);
        want = g_strdup_printf("%s: larger than 1048576 bytes", path);
        assert_int_equal(vtpm_config_load(path, &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, want);
        assert_null(c);
        g_unlink(path);
    }
    {
        g_autofree char *path = write_temp("[worker]\n\0workers=1\n", 20);
        g_autofree char *want = g_strdup_printf("%s: contains a NUL byte", path);

        assert_int_equal(vtpm_config_load(path, &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_string_equal(err.message, want);
        assert_null(c);
        g_unlink(path);
    }
}

/* A file holding credentials is refused when others can read it
 * (docs/security.md, "Security review"): vtpmd --check-config and the
 * start-up both load through vtpm_config_load. */
static char *
write_mode(const char *data, mode_t mode)
{
    char *path = write_temp(data, strlen(data));

    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void
expect_refused(const char *path, const char *want)
{
    vtpm_config *c = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_config_load(path, &c, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    if (!strstr(err.message, want))
        fail_msg("'%s' does not contain '%s'", err.message, want);
    assert_null(c);
}

static void
expect_loads(const char *path)
{
    g_autoptr(vtpm_config) c = NULL;
    vtpm_error err = { 0 };

    if (vtpm_config_load(path, &c, &err) < 0)
        fail_msg("%s refused: %s", path, err.message);
}

static void
test_credentials_private(void **state)
{
    static const char pw[] = "[worker]\nworkers = 2\n[amqp]\nurl = amqp://vtpmd:s3cret@h/%2f\n";
    g_autofree char *open_pw = write_mode(pw, 0644);
    g_autofree char *want = g_strdup_printf(
        "%s has mode 0644 and holds the broker password ([amqp] url, line 4): it must not be "
        "readable by others (chmod o-rwx %s",
        open_pw, open_pw);
    g_autofree char *group_pw = write_mode(pw, 0640);
    g_autofree char *private_pw = write_mode(pw, 0600);
    g_autofree char *open_nopw = write_mode("[amqp]\nurl = amqp://vtpmd@h/%2f\n", 0644);
    g_autofree char *open_emptypw = write_mode("[amqp]\nurl = amqp://vtpmd:@h/%2f\n", 0644);
    g_autofree char *open_multi = write_mode("[amqp]\nurl = rabbit://u:s3cret@h1,u:s3cret@h2/\n",
                                             0644);
    g_autofree char *want_multi = g_strdup_printf(
        "%s has mode 0644 and holds the broker password ([amqp] url, line 2)", open_multi);
    /* The compiled-in default (guest:guest) is not in the file. */
    g_autofree char *open_default = write_mode("[worker]\nworkers = 2\n", 0644);
    g_autofree char *dir = g_dir_make_tmp("vtpmd-keys-XXXXXX", NULL);
    g_autofree char *key = g_build_filename(dir, "client.key", NULL);
    g_autofree char *dkey = g_build_filename(dir, "deploy.key", NULL);
    g_autofree char *missing = g_build_filename(dir, "none.key", NULL);
    g_autofree char *with_key = NULL, *with_dkey = NULL, *with_prev = NULL, *with_missing = NULL;
    g_autofree char *want_key = NULL, *want_dkey = NULL, *want_prev = NULL, *want_missing = NULL;

    expect_refused(open_pw, want);
    assert_int_equal(chmod(group_pw, 0604), 0);
    expect_refused(group_pw, "has mode 0604");
    assert_int_equal(chmod(group_pw, 0640), 0);
    expect_loads(group_pw);
    expect_loads(private_pw);
    expect_loads(open_nopw);
    /* Written but empty: refused as a URL, before any mode is looked at. */
    expect_refused(open_emptypw, "[amqp] url: password: empty");
    expect_refused(open_multi, want_multi);
    expect_loads(open_default);
    /* A cluster's other nodes, with their passwords, are credentials too. */
    {
        g_autofree char *fo = write_mode("[amqp]\nurl = amqp://vtpmd@h1/%2f\n"
                                         "failover_urls = amqp://vtpmd@h2/%2f "
                                         "amqp://vtpmd:s3cret@h3/%2f\n", 0644);
        g_autofree char *fo_nopw = write_mode("[amqp]\nurl = amqp://vtpmd@h1/%2f\n"
                                              "failover_urls = amqp://vtpmd@h2/%2f\n", 0644);
        g_autofree char *fo_want = g_strdup_printf(
            "%s has mode 0644 and holds a broker password ([amqp] failover_urls, line 3)", fo);

        expect_refused(fo, fo_want);
        expect_loads(fo_nopw);
        assert_int_equal(chmod(fo, 0600), 0);
        expect_loads(fo);
        g_unlink(fo);
        g_unlink(fo_nopw);
    }

    /* Key files the config names: refused when others can read them,
     * whatever the mode of the config file; a missing one is named. */
    assert_true(g_file_set_contents(key, "k", 1, NULL));
    assert_true(g_file_set_contents(dkey, "0123456789abcdef0123456789abcdef", 32, NULL));
    assert_int_equal(chmod(key, 0644), 0);
    assert_int_equal(chmod(dkey, 0604), 0);
    {
        g_autofree char *t = g_strdup_printf(
            "[amqp]\nurl = amqps://h/%%2f\ncacert = /ca.pem\ncert = /c.pem\nkey = %s\n", key);
        with_key = write_mode(t, 0600);
    }
    {
        g_autofree char *t = g_strdup_printf("[vtpm]\ndeployment_key_file = %s\n", dkey);
        with_dkey = write_mode(t, 0644);
    }
    {
        g_autofree char *t = g_strdup_printf(
            "[vtpm]\ndeployment_key_file = %s\nprevious_deployment_key_file = %s\n", key, dkey);
        with_prev = write_mode(t, 0600);
    }
    {
        g_autofree char *t = g_strdup_printf("[vtpm]\ndeployment_key_file = %s\n", missing);
        with_missing = write_mode(t, 0600);
    }
    want_key = g_strdup_printf("%s has mode 0644 and holds a private key ([amqp] key)", key);
    want_dkey = g_strdup_printf("%s has mode 0604 and holds a private key "
                                "([vtpm] deployment_key_file)", dkey);
    want_missing = g_strdup_printf("[vtpm] deployment_key_file %s: No such file", missing);
    {
        g_autofree char *t = g_strdup_printf("[vtpm]\nek_ca_cert = /ek-ca.pem\nek_ca_key = %s\n",
                                             key);
        g_autofree char *with_ca = write_mode(t, 0600);
        g_autofree char *want_ca =
            g_strdup_printf("%s has mode 0644 and holds a private key ([vtpm] ek_ca_key)", key);

        expect_refused(with_ca, want_ca);
        g_unlink(with_ca);
    }
    expect_refused(with_key, want_key);
    expect_refused(with_dkey, want_dkey);
    expect_refused(with_missing, want_missing);
    assert_int_equal(chmod(key, 0600), 0);
    want_prev = g_strdup_printf("%s has mode 0604 and holds a private key "
                                "([vtpm] previous_deployment_key_file)", dkey);
    expect_refused(with_prev, want_prev);
    assert_int_equal(chmod(dkey, 0640), 0);
    expect_loads(with_key);
    expect_loads(with_dkey);
    expect_loads(with_prev);

    /* Text loaded from elsewhere (tests, vtpmctl --url) has no file mode. */
    {
        g_autoptr(vtpm_config) c = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(vtpm_config_load_data("x.conf", pw, &c, &err), 0);
    }
    for (const char *const *p = (const char *const[]){ open_pw, group_pw, private_pw, open_nopw,
                                                       open_emptypw, open_multi, open_default,
                                                       with_key,
                                                       with_dkey, with_prev, with_missing, key,
                                                       dkey, NULL };
         *p; p++)
        g_unlink(*p);
    g_rmdir(dir);
}

/* ---- the sample ---------------------------------------------------------- */

static char *
read_sample(void)
{
    g_autoptr(GError) error = NULL;
    char *data = NULL;

    if (!g_file_get_contents(SAMPLE, &data, NULL, &error))
        fail_msg("%s", error->message);
    return data;
}

/* Each key appears exactly once as "#key = value" in its group, right
 * after "# <help from the table>", with the table's default as value. */
static void
test_sample_matches_table(void **state)
{
    g_autofree char *data = read_sample();
    g_auto(GStrv) lines = g_strsplit(data, "\n", -1);
    g_autoptr(GRegex) key_re = g_regex_new("^#?([a-z_]+) *= *(.*)$", 0, 0, NULL);
    g_autoptr(GHashTable) found = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    size_t n = 0;
    const vtpm_config_key *keys = vtpm_config_keys(&n);
    g_autofree char *group = NULL;

    for (size_t i = 0; lines[i]; i++) {
        g_autoptr(GMatchInfo) m = NULL;
        g_autofree char *key = NULL;
        g_autofree char *value = NULL;
        g_autofree char *id = NULL;
        const vtpm_config_key *k = NULL;

        if (lines[i][0] == '[') {
            g_free(group);
            group = g_strndup(lines[i] + 1, strlen(lines[i]) - 2);
            continue;
        }
        if (!g_regex_match(key_re, lines[i], 0, &m))
            continue;
        key = g_match_info_fetch(m, 1);
        value = g_match_info_fetch(m, 2);
        if (!group)
            fail_msg("sample line %zu: key %s outside a group", i + 1, key);
        for (size_t j = 0; j < n && !k; j++) {
            if (strcmp(keys[j].group, group) == 0 && strcmp(keys[j].key, key) == 0)
                k = &keys[j];
        }
        if (!k)
            fail_msg("sample line %zu: [%s] %s is not in the table", i + 1, group, key);
        id = g_strconcat(group, " ", key, NULL);
        if (g_hash_table_contains(found, id))
            fail_msg("sample line %zu: [%s] %s twice", i + 1, group, key);
        g_hash_table_add(found, g_steal_pointer(&id));
        if (k->dflt && strcmp(value, k->dflt) != 0)
            fail_msg("sample line %zu: [%s] %s = %s, default is %s", i + 1, group, key, value,
                     k->dflt);
        if (i == 0 || !g_str_has_prefix(lines[i - 1], "# ") ||
            strcmp(lines[i - 1] + 2, k->help) != 0)
            fail_msg("sample line %zu: [%s] %s not preceded by '# %s'", i + 1, group, key,
                     k->help);
    }
    for (size_t j = 0; j < n; j++) {
        g_autofree char *id = g_strconcat(keys[j].group, " ", keys[j].key, NULL);

        if (!g_hash_table_contains(found, id))
            fail_msg("[%s] %s is missing from the sample", keys[j].group, keys[j].key);
    }
    assert_int_equal(g_hash_table_size(found), n);
}

static void
test_sample_loads(void **state)
{
    g_autoptr(vtpm_config) dflt = vtpm_config_new_default();
    g_autoptr(vtpm_config) as_is = NULL;
    g_autoptr(vtpm_config) all_on = NULL;
    g_autofree char *data = read_sample();
    g_autoptr(GRegex) uncomment = g_regex_new("^#([a-z_]+ =)", G_REGEX_MULTILINE, 0, NULL);
    g_autofree char *enabled = NULL;
    vtpm_error err = { 0 };

    /* as shipped: everything commented out, i.e. the defaults */
    assert_int_equal(vtpm_config_load(SAMPLE, &as_is, &err), 0);
    assert_true(config_equal(as_is, dflt));

    /* every key enabled: the defaults, plus valid examples for the rest */
    enabled = g_regex_replace(uncomment, data, -1, 0, "\\1", 0, NULL);
    if (vtpm_config_load_data("sample", enabled, &all_on, &err) != 0)
        fail_msg("%s", err.message);
    assert_string_equal(all_on->amqp.cacert, "/etc/vtpmd/tls/ca.pem");
    assert_string_equal(all_on->worker.host, "compute-1");
    assert_string_equal(all_on->store.uri, "qemu:///system");
    assert_string_equal(all_on->vtpm.deployment_key_file, "/etc/vtpmd/deployment.key");
    assert_string_equal(all_on->metrics.textfile, "/var/lib/prometheus/node-exporter/vtpmd.prom");
    assert_string_equal(all_on->libvirt.uefi_loader, "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    assert_int_equal(all_on->worker.workers, dflt->worker.workers);
}

/* ---- docs/operations.md ------------------------------------------------ */

/* Markdown table cell: trimmed, one pair of enclosing backticks removed. */
static char *
cell_text(const char *raw)
{
    g_autofree char *s = g_strstrip(g_strdup(raw));
    size_t n = strlen(s);

    if (n >= 2 && s[0] == '`' && s[n - 1] == '`')
        return g_strndup(s + 1, n - 2);
    return g_steal_pointer(&s);
}

/*
 * The option table of docs/operations.md (between "<!-- options:begin" and
 * "<!-- options:end -->") lists exactly the parser's keys, in the table's
 * order, each as | `[group]` | `key` | `default` or — | help... |, so the
 * operator's reference cannot drift from what vtpmd accepts.
 */
static void
test_operations_doc_matches_table(void **state)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) lines = NULL;
    size_t n = 0, row = 0;
    const vtpm_config_key *keys = vtpm_config_keys(&n);
    bool in_table = false, ended = false;

    if (!g_file_get_contents(OPERATIONS, &data, NULL, &error))
        fail_msg("%s", error->message);
    lines = g_strsplit(data, "\n", -1);
    for (size_t i = 0; lines[i] && !ended; i++) {
        g_auto(GStrv) cells = NULL;
        g_autofree char *group = NULL, *key = NULL, *dflt = NULL, *meaning = NULL;
        const vtpm_config_key *k;

        if (g_str_has_prefix(lines[i], "<!-- options:begin")) {
            in_table = true;
            continue;
        }
        if (!in_table)
            continue;
        if (g_str_has_prefix(lines[i], "<!-- options:end")) {
            ended = true;
            continue;
        }
        if (!g_str_has_prefix(lines[i], "| `["))
            continue; /* header and separator rows */
        cells = g_strsplit(lines[i], "|", -1);
        /* "| a | b | c | d |" splits into "", a, b, c, d, "" */
        if (g_strv_length(cells) != 6)
            fail_msg("operations.md line %zu: not 4 cells: %s", i + 1, lines[i]);
        group = cell_text(cells[1]);
        key = cell_text(cells[2]);
        dflt = cell_text(cells[3]);
        meaning = cell_text(cells[4]);
        if (row >= n)
            fail_msg("operations.md line %zu: %s %s is not a key of the parser", i + 1, group, key);
        k = &keys[row++];
        {
            g_autofree char *want_group = g_strdup_printf("[%s]", k->group);

            if (strcmp(group, want_group) != 0 || strcmp(key, k->key) != 0)
                fail_msg("operations.md line %zu: %s %s, the parser's next key is [%s] %s",
                         i + 1, group, key, k->group, k->key);
        }
        if (strcmp(dflt, k->dflt ? k->dflt : "—") != 0)
            fail_msg("operations.md line %zu: [%s] %s default '%s', the parser's is '%s'", i + 1,
                     k->group, k->key, dflt, k->dflt ? k->dflt : "— (none)");
        if (!g_str_has_prefix(meaning, k->help) ||
            (meaning[strlen(k->help)] && meaning[strlen(k->help)] != ' '))
            fail_msg("operations.md line %zu: [%s] %s meaning does not start with '%s'", i + 1,
                     k->group, k->key, k->help);
    }
    if (!in_table || !ended)
        fail_msg("operations.md has no complete <!-- options:begin/end --> table");
    if (row != n)
        fail_msg("operations.md lists %zu keys, the parser has %zu (first missing: [%s] %s)", row,
                 n, keys[row].group, keys[row].key);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_table_defaults_match),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_partial_keeps_defaults),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_secret_modes),
        cmocka_unit_test(test_urls_accepted),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_file_refused),
        cmocka_unit_test(test_credentials_private),
        cmocka_unit_test(test_sample_matches_table),
        cmocka_unit_test(test_sample_loads),
        cmocka_unit_test(test_operations_doc_matches_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
