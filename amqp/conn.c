/* SPDX-License-Identifier: Apache-2.0 */
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "conn.h"

enum {
    FRAME_MAX = 131072,
    CHANNEL_MAX = 1,
    CONNECT_TIMEOUT_S = 10,
    RPC_TIMEOUT_S = 30,
};

static int
tls_socket(amqp_connection_state_t c, const vtpm_amqp_tls *tls, amqp_socket_t **out,
           vtpm_error *err)
{
    amqp_socket_t *s = amqp_ssl_socket_new(c);
    int rc;

    if (!s)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot create a TLS socket");
    if ((rc = amqp_ssl_socket_set_cacert(s, tls->cacert)) != AMQP_STATUS_OK)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "TLS CA file %s: %s", tls->cacert,
                              amqp_error_string2(rc));
    if (tls->cert && (rc = amqp_ssl_socket_set_key(s, tls->cert, tls->key)) != AMQP_STATUS_OK)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "TLS client cert %s / key %s: %s",
                              tls->cert, tls->key, amqp_error_string2(rc));
    if ((rc = amqp_ssl_socket_set_ssl_versions(s, AMQP_TLSv1_2, AMQP_TLSvLATEST)) !=
        AMQP_STATUS_OK)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "TLS 1.2+: %s", amqp_error_string2(rc));
    /* Always: there is no option to turn either off (docs/security.md). */
    amqp_ssl_socket_set_verify_peer(s, 1);
    amqp_ssl_socket_set_verify_hostname(s, 1);
    *out = s;
    return 0;
}

static int
make_socket(amqp_connection_state_t c, const vtpm_amqp_node *node, const vtpm_amqp_tls *tls,
            amqp_socket_t **out, vtpm_error *err)
{
    amqp_socket_t *s;

    if (node->tls)
        return tls_socket(c, tls, out, err);
    if (!(s = amqp_tcp_socket_new(c)))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "cannot create a TCP socket");
    *out = s;
    return 0;
}

static amqp_rpc_reply_t
login(amqp_connection_state_t c, const vtpm_amqp_node *node, const vtpm_amqp_login *o)
{
    amqp_table_entry_t caps[] = {
        { .key = amqp_cstring_bytes("consumer_cancel_notify"),
          .value = { .kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1 } },
    };
    amqp_table_entry_t props[] = {
        { .key = amqp_cstring_bytes("connection_name"),
          .value = { .kind = AMQP_FIELD_KIND_UTF8,
                     .value.bytes = amqp_cstring_bytes(o && o->connection_name
                                                           ? o->connection_name : "") } },
        { .key = amqp_cstring_bytes("product"),
          .value = { .kind = AMQP_FIELD_KIND_UTF8,
                     .value.bytes = amqp_cstring_bytes(o && o->product ? o->product : "") } },
        { .key = amqp_cstring_bytes("capabilities"),
          .value = { .kind = AMQP_FIELD_KIND_TABLE,
                     .value.table = { .num_entries = G_N_ELEMENTS(caps), .entries = caps } } },
    };
    amqp_table_t table = { .num_entries = G_N_ELEMENTS(props), .entries = props };
    int heartbeat = o ? (int)o->heartbeat : 0;

    if (!o || !o->connection_name)
        return amqp_login(c, node->vhost, CHANNEL_MAX, FRAME_MAX, heartbeat,
                          AMQP_SASL_METHOD_PLAIN, node->user, node->password);
    return amqp_login_with_properties(c, node->vhost, CHANNEL_MAX, FRAME_MAX, heartbeat, &table,
                                      AMQP_SASL_METHOD_PLAIN, node->user, node->password);
}

int
vtpm_amqp_connect(const vtpm_amqp_node *node, const vtpm_amqp_tls *tls,
                  const vtpm_amqp_login *o, amqp_connection_state_t *out, vtpm_error *err)
{
    struct timeval connect_tv = { CONNECT_TIMEOUT_S, 0 };
    struct timeval rpc_tv = { RPC_TIMEOUT_S, 0 };
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = NULL;
    g_autofree char *why = NULL;
    int rc;

    if (!c)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "out of memory");
    if ((rc = make_socket(c, node, tls, &s, err)) < 0) {
        amqp_destroy_connection(c);
        return rc;
    }
    /* Bounded everywhere: nothing can interrupt a blocking step. */
    amqp_set_handshake_timeout(c, &connect_tv);
    amqp_set_rpc_timeout(c, &rpc_tv);
    if ((rc = amqp_socket_open_noblock(s, node->host, node->port, &connect_tv)) !=
        AMQP_STATUS_OK)
        why = g_strdup_printf("connect: %s", amqp_error_string2(rc));
    else
        why = vtpm_amqp_rpc_why(login(c, node, o), "login");
    if (why) {
        amqp_destroy_connection(c);
        return vtpm_error_set(err, VTPM_FAULT_BUSY, "%s", why);
    }
    *out = c;
    return 0;
}

int
vtpm_amqp_connect_first(GPtrArray *nodes, const vtpm_amqp_tls *tls,
                        const vtpm_amqp_login *login, amqp_connection_state_t *out,
                        guint *index, vtpm_error *err)
{
    g_autoptr(GString) why = g_string_new(NULL);

    for (guint i = 0; i < nodes->len; i++) {
        const vtpm_amqp_node *n = nodes->pdata[i];
        vtpm_error e = { 0 };
        int rc = vtpm_amqp_connect(n, tls, login, out, &e);

        if (rc == 0) {
            *index = i;
            return 0;
        }
        if (rc != -(int)VTPM_FAULT_BUSY) {
            *err = e;
            return rc;
        }
        g_string_append_printf(why, "%s%s:%d: %s", i ? "; " : "", n->host, n->port, e.message);
    }
    return vtpm_error_set(err, VTPM_FAULT_BUSY, "%s", why->str);
}

/* @r, not a normal reply, in words. */
static char *
describe(amqp_rpc_reply_t r)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        return g_strdup(amqp_error_string2(r.library_error));
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
        return g_strdup("no reply");
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = r.reply.decoded;

        return g_strdup_printf("connection closed by the broker: %u %.*s", m->reply_code,
                               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = r.reply.decoded;

        return g_strdup_printf("channel closed by the broker: %u %.*s", m->reply_code,
                               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    }
    return g_strdup_printf("unexpected method 0x%08x", r.reply.id);
}

char *
vtpm_amqp_rpc_why(amqp_rpc_reply_t r, const char *what)
{
    g_autofree char *why = NULL;

    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return NULL;
    why = describe(r);
    return what ? g_strdup_printf("%s: %s", what, why) : g_steal_pointer(&why);
}

int
vtpm_amqp_rpc_check(amqp_connection_state_t c, const char *what, vtpm_error *err)
{
    g_autofree char *why = vtpm_amqp_rpc_why(amqp_get_rpc_reply(c), what);

    return why ? vtpm_error_set(err, VTPM_FAULT_BUSY, "%s", why) : 0;
}
