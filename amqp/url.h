/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Broker URLs, as vtpmd's [amqp] url and every tool read them, and as
 * OpenStack operators write them (oslo.messaging's transport_url):
 *
 *   SCHEME://[USER[:PASSWORD]@]HOST[:PORT][,[USER[:PASSWORD]@]HOST[:PORT]...][/[VHOST]]
 *
 *   SCHEME   amqp or rabbit (TCP, default port 5672); amqps or rabbits
 *            (TLS, default port 5671)
 *   USER, PASSWORD  percent-decoded; both absent: guest/guest; a USER
 *            without ":PASSWORD": the password guest (as librabbitmq,
 *            kombu and pika read it); written but empty: refused
 *   HOST     a DNS name (letters, digits, '-', '_', dot-separated labels),
 *            an IPv4 address or an [IPv6] address
 *   VHOST    nothing after the host, or a lone "/": the default vhost "/";
 *            else percent-decoded ("%2f" is "/"); a raw '/' in it refused
 *   a ","    several nodes of one cluster (oslo's multi-host form): each
 *            with its own credentials, all with the one VHOST; the first
 *            is tried first, the others are failover nodes
 *
 * A query ("?...") or fragment ("#...") is refused: options are set in
 * [amqp] or on the command line.  No message ever quotes the password or
 * the vhost (a password written with a raw '/' or '@' ends up there).
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "vtpm/error.h"

#define VTPM_AMQP_URL_MAX 4096   /* bytes of one URL */
#define VTPM_AMQP_NODES_MAX 8    /* nodes of a url and its failover URLs together */
#define VTPM_AMQP_DEFAULT_URL "amqp://guest:guest@127.0.0.1:5672/%2f"

/* One broker node to connect to. */
typedef struct {
    bool tls;
    char *host;           /* name or address; IPv6 without brackets */
    int port;             /* 1..65535 */
    char *user;
    char *password;
    bool password_given;  /* written in the URL, not the guest default */
    char *vhost;          /* decoded, 1..255 bytes */
} vtpm_amqp_node;

void vtpm_amqp_node_free(vtpm_amqp_node *n);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_amqp_node, vtpm_amqp_node_free)

/*
 * Parse @url into its nodes: *out is a new array of vtpm_amqp_node *
 * (owning, 1 or more, in the order written).  BadRequest naming the part
 * at fault ("port: ...", "host 2 of 3: ...") and why.
 */
int vtpm_amqp_url_parse(const char *url, GPtrArray **out, vtpm_error *err);

/* The node as "amqp[s]://host:port/vhost", without credentials: for logs
 * and files. */
char *vtpm_amqp_node_display(const vtpm_amqp_node *n);

/* A list of URLs separated by blanks ([amqp] failover_urls) as a
 * NULL-terminated vector without empty words; NULL gives an empty one. */
char **vtpm_amqp_url_list_split(const char *list);

/* The TLS files of a connection. */
typedef struct {
    const char *cacert;   /* needed by any TLS node: the peer is always verified */
    const char *cert;     /* optional client certificate: both or neither */
    const char *key;
} vtpm_amqp_tls;

/* The broker to reach: a URL (one or more nodes), failover URLs and the
 * TLS files. */
typedef struct {
    const char *url;
    const char *const *failover_urls; /* NULL-terminated; may be NULL */
    vtpm_amqp_tls tls;
} vtpm_amqp_target;

/*
 * Every node of @t in the order they are tried: those of url, then those
 * of each failover URL.  BadRequest when a URL is invalid ("broker URL:
 * ...", "failover URL 2: ..."), there are more than VTPM_AMQP_NODES_MAX
 * nodes, a TLS node has no CA file, or only one of cert and key is given.
 */
int vtpm_amqp_target_nodes(const vtpm_amqp_target *t, GPtrArray **out, vtpm_error *err);
