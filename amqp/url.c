/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GUri does the RFC 3986 work (percent-decoding of the user, the password
 * and the host, IPv6 literals, IDN host names, port range); what is AMQP's
 * or oslo's is here: the schemes, the default credentials and port, the
 * vhost rules and the multi-host form, which is not a URI at all (its
 * authority holds several '@'), so it is cut at ',' first, as oslo does,
 * and each node parsed as a URL of its own.
 *
 * GLib's own messages are never passed on: they quote the text they
 * stumbled on, which may be part of a password.
 */
#include <string.h>

#include "url.h"

enum {
    PORT_TCP = 5672,
    PORT_TLS = 5671,
    SHORTSTR_MAX = 255,  /* AMQP short string: the vhost goes in one */
    HOST_MAX = 253,      /* DNS */
    LABEL_MAX = 63,
    SCHEME_QUOTE_MAX = 16,
};

static const struct {
    const char *name;
    bool tls;
} schemes[] = {
    { "amqp", false },
    { "amqps", true },
    { "rabbit", false },  /* oslo.messaging's transport_url */
    { "rabbits", true },
};

void
vtpm_amqp_node_free(vtpm_amqp_node *n)
{
    if (!n)
        return;
    g_free(n->host);
    g_free(n->user);
    if (n->password)
        explicit_bzero(n->password, strlen(n->password));
    g_free(n->password);
    g_free(n->vhost);
    g_free(n);
}

/* ---- the parts ------------------------------------------------------------ */

static int
parse_scheme(const char *url, size_t len, bool *tls, vtpm_error *err)
{
    g_autofree char *s = g_ascii_strdown(url, (gssize)len);

    for (size_t i = 0; i < G_N_ELEMENTS(schemes); i++) {
        if (strcmp(s, schemes[i].name) == 0) {
            *tls = schemes[i].tls;
            return 0;
        }
    }
    /* Quoted only when it looks like a scheme: anything else may be the
     * start of credentials written without one. */
    if (len <= SCHEME_QUOTE_MAX && g_ascii_isalpha(*s) &&
        strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789+.-") == len)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "scheme '%s' is not amqp, amqps, rabbit or rabbits", s);
    return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                          "no amqp://, amqps://, rabbit:// or rabbits:// scheme");
}

/* What GUri refused, by its error code only. */
static int
guri_refusal(const GError *e, vtpm_error *err)
{
    static const char *const why[] = {
        [G_URI_ERROR_BAD_USER] = "user: bad percent-encoding or not UTF-8",
        [G_URI_ERROR_BAD_PASSWORD] = "password: bad percent-encoding or not UTF-8",
        [G_URI_ERROR_BAD_HOST] = "host: not a host name or IP address (an IPv6 address goes "
                                 "in [])",
        [G_URI_ERROR_BAD_PORT] = "port: not a number in 1..65535",
        [G_URI_ERROR_BAD_PATH] = "vhost: bad percent-encoding",
        [G_URI_ERROR_BAD_QUERY] = "query: bad percent-encoding",
        [G_URI_ERROR_BAD_FRAGMENT] = "fragment: bad percent-encoding",
    };

    if (e->domain == G_URI_ERROR && e->code >= 0 && (size_t)e->code < G_N_ELEMENTS(why) &&
        why[e->code])
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s", why[e->code]);
    return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                          "not a URL (expected amqp://user:pass@host:port/vhost)");
}

static int
check_label(const char *host, const char *label, size_t len, vtpm_error *err)
{
    if (len == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host '%s': empty label", host);
    if (len > LABEL_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "host '%s': a label is longer than %d characters", host,
                              LABEL_MAX);
    if (label[0] == '-' || label[len - 1] == '-')
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "host '%s': a label starts or ends with '-'", host);
    for (size_t i = 0; i < len; i++) {
        if (!g_ascii_isalnum(label[i]) && label[i] != '-' && label[i] != '_')
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "host '%s': '%c' is not allowed (letters, digits, '-', '_', "
                                  "'.')",
                                  host, label[i]);
    }
    return 0;
}

/* A DNS name (one trailing dot allowed), or an IP address.  GUri checked
 * IPv6 literals and turned international names into their ASCII form. */
static int
check_host(const char *host, vtpm_error *err)
{
    size_t len;
    int rc;

    if (!host || !*host)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host: empty");
    /* A '@' here is the rest of a password written with a raw '@': not
     * to be quoted. */
    if (strchr(host, '@'))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "host: contains '@' (write an '@' of the user or password as "
                              "%%40)");
    if (strchr(host, ':'))
        return g_hostname_is_ip_address(host)
                   ? 0
                   : vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host: not an IPv6 address");
    len = strlen(host);
    if (host[len - 1] == '.')
        len--;
    if (len > HOST_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host: longer than %d characters",
                              HOST_MAX);
    for (const char *p = host, *end = host + len; p <= end;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);

        if ((rc = check_label(host, p, n, err)) < 0)
            return rc;
        p += n + 1;
    }
    return 0;
}

/* Both absent: guest/guest; a user alone: the password guest. */
static int
take_credentials(GUri *u, vtpm_amqp_node *n, vtpm_error *err)
{
    const char *user = g_uri_get_user(u);
    const char *password = g_uri_get_password(u);

    if (user && !*user)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "user: empty");
    if (password && !*password)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "password: empty");
    n->user = g_strdup(user ? user : "guest");
    n->password = g_strdup(password ? password : "guest");
    n->password_given = password != NULL;
    return 0;
}

/* @path as GUri keeps it, still percent-encoded. */
static int
parse_vhost(const char *path, char **out, vtpm_error *err)
{
    g_autofree char *v = NULL;

    /* The librabbitmq, kombu and pika reading: nothing, or a lone '/', is
     * the default vhost. */
    if (!*path || strcmp(path, "/") == 0) {
        *out = g_strdup("/");
        return 0;
    }
    if (strchr(path + 1, '/'))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "vhost: contains '/' (write a '/' of the vhost name as %%2f)");
    if (!(v = g_uri_unescape_string(path + 1, NULL)))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "vhost: bad percent-encoding (or an encoded NUL)");
    if (!g_utf8_validate(v, -1, NULL))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "vhost: not UTF-8");
    if (strlen(v) > SHORTSTR_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "vhost: longer than %d bytes",
                              SHORTSTR_MAX);
    *out = g_steal_pointer(&v);
    return 0;
}

/* One node: "amqp://" + its authority + the URL's path and the rest. */
static int
parse_node(bool tls, const char *authority, const char *tail, vtpm_amqp_node **out,
           vtpm_error *err)
{
    g_autofree char *text = g_strconcat("amqp://", authority, tail, NULL);
    g_autoptr(vtpm_amqp_node) n = g_new0(vtpm_amqp_node, 1);
    g_autoptr(GError) e = NULL;
    g_autoptr(GUri) u = g_uri_parse(text, G_URI_FLAGS_HAS_PASSWORD | G_URI_FLAGS_ENCODED_PATH |
                                              G_URI_FLAGS_ENCODED_QUERY |
                                              G_URI_FLAGS_ENCODED_FRAGMENT,
                                    &e);
    int rc;

    explicit_bzero(text, strlen(text));
    if (!u)
        return guri_refusal(e, err);
    if (g_uri_get_query(u))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "query ('?...'): not supported (options are set in [amqp] or "
                              "on the command line)");
    if (g_uri_get_fragment(u))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "fragment ('#...'): not supported");
    if ((rc = check_host(g_uri_get_host(u), err)) < 0)
        return rc;
    if (g_uri_get_port(u) == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "port: 0 is out of range 1..65535");
    if ((rc = take_credentials(u, n, err)) < 0 || (rc = parse_vhost(g_uri_get_path(u), &n->vhost,
                                                                     err)) < 0)
        return rc;
    n->tls = tls;
    n->host = g_strdup(g_uri_get_host(u));
    n->port = g_uri_get_port(u) > 0 ? g_uri_get_port(u) : tls ? PORT_TLS : PORT_TCP;
    *out = g_steal_pointer(&n);
    return 0;
}

/* ---- the URL ---------------------------------------------------------------- */

/* oslo.messaging only warns when some nodes carry credentials and others
 * do not, and gives those guest/guest: most likely a mistake, refused. */
static int
check_same_credentials(GPtrArray *nodes, char **authorities, vtpm_error *err)
{
    bool first = strchr(authorities[0], '@') != NULL;

    for (guint i = 1; i < nodes->len; i++) {
        if ((strchr(authorities[i], '@') != NULL) != first)
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "host %u of %u: %s user:password@ while host 1 %s (write "
                                  "them on every host or on none)",
                                  i + 1, nodes->len, first ? "no" : "a",
                                  first ? "has one" : "has none");
    }
    return 0;
}

static GPtrArray *
node_array(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)vtpm_amqp_node_free);
}

/* The authority's nodes hold passwords: wiped before they are freed. */
static void
wipe_strv(char **v)
{
    for (; v && *v; v++)
        explicit_bzero(*v, strlen(*v));
}

static int
parse_parts(bool tls, char **parts, const char *tail, GPtrArray *nodes, vtpm_error *err)
{
    guint n = g_strv_length(parts);
    int rc;

    /* g_strsplit() gives no part at all for "". */
    if (n == 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "host: empty");
    for (guint i = 0; i < n; i++) {
        vtpm_amqp_node *node = NULL;

        if (n > 1 && !*parts[i])
            rc = vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "empty (a stray ',')");
        else
            rc = parse_node(tls, parts[i], tail, &node, err);
        if (rc < 0)
            return n > 1 ? vtpm_error_prefix(err, "host %u of %u", i + 1, n) : rc;
        g_ptr_array_add(nodes, node);
    }
    return check_same_credentials(nodes, parts, err);
}

static int
parse_nodes(bool tls, const char *rest, GPtrArray **out, vtpm_error *err)
{
    size_t alen = strcspn(rest, "/?#");
    g_autofree char *authority = g_strndup(rest, alen);
    g_auto(GStrv) parts = g_strsplit(authority, ",", -1);
    g_autoptr(GPtrArray) nodes = node_array();
    int rc;

    explicit_bzero(authority, alen);
    rc = parse_parts(tls, parts, rest + alen, nodes, err);
    wipe_strv(parts);
    if (rc < 0)
        return rc;
    *out = g_steal_pointer(&nodes);
    return 0;
}

int
vtpm_amqp_url_parse(const char *url, GPtrArray **out, vtpm_error *err)
{
    const char *sep;
    bool tls = false;
    int rc;

    if (!url || !*url)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "empty");
    if (strlen(url) > VTPM_AMQP_URL_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "longer than %d bytes",
                              VTPM_AMQP_URL_MAX);
    if (!(sep = strstr(url, "://")) || sep == url)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "not a URL (expected amqp://user:pass@host:port/vhost)");
    if ((rc = parse_scheme(url, (size_t)(sep - url), &tls, err)) < 0)
        return rc;
    return parse_nodes(tls, sep + 3, out, err);
}

char *
vtpm_amqp_node_display(const vtpm_amqp_node *n)
{
    g_autofree char *vhost = g_uri_escape_string(n->vhost, NULL, FALSE);
    g_autofree char *host = NULL;

    if (strchr(n->host, ':')) {
        /* An IPv6 zone ("%eth0") is written %25 inside the brackets. */
        g_auto(GStrv) parts = g_strsplit(n->host, "%", -1);
        g_autofree char *joined = g_strjoinv("%25", parts);

        host = g_strdup_printf("[%s]", joined);
    }
    return g_strdup_printf("%s://%s:%d/%s", n->tls ? "amqps" : "amqp", host ? host : n->host,
                           n->port, vhost);
}

char **
vtpm_amqp_url_list_split(const char *list)
{
    g_auto(GStrv) words = g_strsplit_set(list ? list : "", " \t", -1);
    g_autoptr(GStrvBuilder) b = g_strv_builder_new();

    for (char **w = words; *w; w++) {
        if (**w)
            g_strv_builder_add(b, *w);
    }
    return g_strv_builder_end(b);
}

/* ---- url and failover URLs together ----------------------------------------- */

static int
append_url(GPtrArray *all, const char *url, vtpm_error *err)
{
    g_autoptr(GPtrArray) nodes = NULL;
    int rc;

    if ((rc = vtpm_amqp_url_parse(url, &nodes, err)) < 0)
        return rc;
    if (all->len + nodes->len > VTPM_AMQP_NODES_MAX)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "more than %d broker nodes (the url's and the failover URLs' "
                              "together)",
                              VTPM_AMQP_NODES_MAX);
    for (guint i = 0; i < nodes->len; i++)
        g_ptr_array_add(all, g_steal_pointer(&nodes->pdata[i]));
    return 0;
}

int
vtpm_amqp_target_nodes(const vtpm_amqp_target *t, GPtrArray **out, vtpm_error *err)
{
    g_autoptr(GPtrArray) all = node_array();
    int rc;

    if ((rc = append_url(all, t->url, err)) < 0)
        return vtpm_error_prefix(err, "broker URL");
    for (size_t i = 0; t->failover_urls && t->failover_urls[i]; i++) {
        if ((rc = append_url(all, t->failover_urls[i], err)) < 0)
            return vtpm_error_prefix(err, "failover URL %zu", i + 1);
    }
    for (guint i = 0; i < all->len; i++) {
        const vtpm_amqp_node *n = all->pdata[i];

        if (n->tls && (!t->tls.cacert || !*t->tls.cacert))
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "amqps:// needs a CA file (cacert) to verify the broker");
    }
    if (!t->tls.cert != !t->tls.key)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "TLS client cert and key must be given together");
    *out = g_steal_pointer(&all);
    return 0;
}
