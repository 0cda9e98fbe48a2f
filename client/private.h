/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the modules of libvtpmclient share and nobody else sees: the
 * client's state, the reply object and the step from the project's
 * vtpm_error to the public vtpm_client_fault.
 */
#pragma once

#include <amqp.h>
#include <glib.h>

#include "client/msg.h"
#include "vtpm/client.h"
#include "vtpm/error.h"
#include "vtpm/proto.h"

struct vtpm_client {
    amqp_connection_state_t conn;
    GPtrArray *nodes;           /* vtpm_amqp_node *, in the order they are tried */
    char *cacert, *cert, *key;  /* for connecting again */
    char *broker;               /* the node connected to, without credentials */
    char *exchange;
    char *topic;
    char *fanout_exchange;
    char *reply_queue;
    unsigned flags;             /* VTPM_CLIENT_ALL_REPLIES */
    GQueue stash;               /* vtpm_client_msg *: received, not handed out, oldest first */
    GHashTable *calls;          /* call id -> its state (call.c): the RPC calls in flight */
    vtpm_proto_limits lim;      /* replies are decoded with these */
    bool any_lost;              /* calls may be marked lost: look for them */
    bool dead;
};

/* msg.c: the next message from the connection, not from the stash, waiting
 * until @end_us (monotonic; -1: forever).  0, 1 at @end_us, negative when
 * the connection is lost. */
int vtpm_client_msg_read(vtpm_client *c, gint64 end_us, vtpm_client_msg **out, vtpm_error *err);
/* msg.c: connect again when the connection was lost (0 at once when it
 * was not), as vtpm_client_connect did. */
int vtpm_client_msg_revive(vtpm_client *c, vtpm_error *err);

/* reply.c: a reply made of a received message (taken) */
vtpm_client_reply *vtpm_client_reply_new(vtpm_client_msg *m, const vtpm_proto_limits *lim);
/* reply.c: result.host of an ok get_capabilities reply (caller frees);
 * NULL otherwise */
char *vtpm_client_reply_caps_host(const vtpm_client_reply *r);

/* fault.c: @f (may be NULL) from @err, made here (source CLIENT); returns
 * -(code). */
int vtpm_client_fault_from_error(vtpm_client_fault *f, const vtpm_error *err);
/* fault.c: @f (may be NULL) set directly, source CLIENT; returns -(code). */
int vtpm_client_fault_set(vtpm_client_fault *f, int code, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
/* fault.c: the details of the call, where still empty. */
void vtpm_client_fault_where(vtpm_client_fault *f, const char *host, const char *method,
                             const char *message_id, const char *call_id);
