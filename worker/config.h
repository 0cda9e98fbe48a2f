/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd configuration (INI, GLib GKeyFile).  Every key vtpmd accepts is in
 * one table (vtpm_config_keys) that the parser, the sample config and the
 * docs are checked against.  Unknown groups/keys and bad values are errors
 * reported as "FILE:LINE: [group] key: why".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <glib.h>

#include "vtpm/error.h"

typedef struct {
    struct {
        char *url;        /* amqp://user:pass@host:port/vhost or amqps:// */
        char *failover_urls; /* NULL or more URLs of the cluster, space-separated */
        char *cacert;     /* amqps: CA bundle (peer verification is always on) */
        char *cert;       /* amqps: client certificate (optional) */
        char *key;        /* amqps: client key (optional) */
        char *exchange;   /* topic exchange, default "vtpm" */
        char *topic;      /* queue/routing prefix, default "vtpm" */
        unsigned prefetch;  /* basic.qos prefetch count */
        unsigned heartbeat; /* seconds, 0 = off */
        char *queue_type; /* "classic" | "quorum" */
    } amqp;
    struct {
        char *host;       /* default: hostname */
        unsigned workers; /* pool size */
        size_t max_message_bytes;
        unsigned dedupe_size; /* remembered message ids */
        unsigned capabilities_interval; /* seconds between capability probes */
    } worker;
    struct {
        char *uri;
        bool swtpm_enabled;
        char *swtpm_user;
        char *swtpm_group;
        char *images_dir;
        char *console_dir;
        char *virt_type;  /* "qemu" | "kvm" | "auto" */
        unsigned shutdown_timeout; /* seconds */
        char *migration_uri_template; /* "%s" = dest_host */
        char *state_dir;  /* libvirt's swtpm state root */
        char *uefi_loader;         /* Secure Boot guests' firmware; NULL: auto-selection */
        char *uefi_nvram_template; /* ... and its variable store template */
        /* Live migration (worker/ops/livemig.c): */
        char *live_migration_uri_template; /* NULL: migration_uri_template */
        char *live_migration_inbound_addr; /* NULL: [worker] host */
        bool live_migration_with_native_tls; /* VIR_MIGRATE_TLS */
        unsigned live_migration_timeout; /* seconds, 0 = none */
    } libvirt;
    struct {
        char *uri;           /* NULL: [libvirt] uri */
        char *shelve_pool;
        char *incoming_pool;
        char *pool_dir;      /* where vtpmd creates missing directory pools */
        char *kept_dir;      /* migration source's copy of the state until confirm/revert */
        unsigned checkpoint_interval; /* seconds; 0 = no checkpoints */
        unsigned checkpoint_keep;     /* newest checkpoints kept per instance */
        char *checkpoint_pool;        /* on [store] uri */
    } store;
    struct {
        unsigned supported_secret_security; /* bit (1u << vtpm_secret_security) */
        char *deployment_key_file;
        char *previous_deployment_key_file; /* unwrap only (rotation) */
        bool allow_unencrypted; /* user mode without a secret: plaintext TPM */
        char *ek_ca_cert; /* the deployment's CA for EK certificates (PEM) */
        char *ek_ca_key;  /* its private key (PEM, unencrypted, 0600) */
    } vtpm;
    struct {
        char *textfile;    /* NULL: no metrics file */
        unsigned interval; /* seconds between writes */
    } metrics;

    char *path; /* file it was loaded from, NULL for defaults */
} vtpm_config;

typedef struct {
    const char *group;
    const char *key;
    const char *type;    /* "string", "bool", "uint", "size", "list", "enum(a|b)" */
    const char *dflt;    /* default as written in a config file; NULL = unset */
    const char *help;
} vtpm_config_key;

/* Table of every accepted key, terminated by a {NULL} entry. */
const vtpm_config_key *vtpm_config_keys(size_t *n);

vtpm_config *vtpm_config_new_default(void);
/* Load @path over the defaults.  Faults: BadRequest with "FILE:LINE: ...",
 * or naming a file and its mode when @path holds a broker password
 * ([amqp] url) and is readable by others, or when a key file it names
 * ([amqp] key, [vtpm] deployment keys, [vtpm] ek_ca_key) is readable by
 * others or missing. */
int vtpm_config_load(const char *path, vtpm_config **out, vtpm_error *err);
/* Same, from text (tests). @name is used in messages. */
int vtpm_config_load_data(const char *name, const char *data, vtpm_config **out,
                          vtpm_error *err);
void vtpm_config_free(vtpm_config *cfg);
/* NULL if @v is a valid [worker] host (also a queue name part), else why
 * not (g_free it). */
char *vtpm_config_check_host(const char *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_config, vtpm_config_free)
