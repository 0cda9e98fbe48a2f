/* SPDX-License-Identifier: Apache-2.0 */
/* Ownership records (ops/ownership.h). */
#include <string.h>

#include <json-glib/json-glib.h>

#include "ops/ownership.h"
#include "store.h"

#define OWNER_FORMAT 1
/* A record is a few dozen bytes: anything larger is not one. */
#define OWNER_MAX 4096
#define OWNER_READ_TRIES 5

bool
vtpm_owner_enabled(const vtpm_worker *w)
{
    return w->cfg->store.uri && w->cfg->store.checkpoint_interval > 0;
}

void
vtpm_owner_clear(vtpm_owner *o)
{
    g_clear_pointer(&o->host, g_free);
    o->generation = 0;
    o->written_ms = 0;
}

static char *
owner_prefix(const char *uuid)
{
    return g_strdup_printf("%s.owner-", uuid);
}

/* The generation a record's volume name carries; 0 when it carries none. */
static uint64_t
name_generation(const char *name, const char *prefix)
{
    guint64 g = 0;

    if (!g_str_has_prefix(name, prefix) ||
        !g_ascii_string_to_unsigned(name + strlen(prefix), 10, 1, G_MAXINT64, &g, NULL))
        return 0;
    return g;
}

bool
vtpm_owner_parse(const char *text, size_t len, const char *uuid, uint64_t gen, vtpm_owner *out)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *o;
    const char *inst, *host;

    if (!json_parser_load_from_data(p, text, (gssize)len, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return false;
    o = json_node_get_object(json_parser_get_root(p));
    inst = json_object_get_string_member_with_default(o, "instance", "");
    host = json_object_get_string_member_with_default(o, "host", "");
    if (json_object_get_int_member_with_default(o, "format", 0) != OWNER_FORMAT ||
        strcmp(inst, uuid) != 0 || vtpm_proto_check_host(host, "host", NULL) < 0 ||
        (uint64_t)json_object_get_int_member_with_default(o, "generation", 0) != gen)
        return false;
    out->host = g_strdup(host);
    out->generation = gen;
    out->written_ms = json_object_get_int_member_with_default(o, "written_ms", 0);
    return true;
}

/* Record volumes of @uuid, newest generation first. */
static gint
by_generation_desc(gconstpointer a, gconstpointer b, gpointer prefix)
{
    uint64_t ga = name_generation(*(const char *const *)a, prefix);
    uint64_t gb = name_generation(*(const char *const *)b, prefix);

    return ga < gb ? 1 : ga > gb ? -1 : 0;
}

static int
list_records(vtpm_worker *w, virConnectPtr sconn, const char *uuid, GPtrArray **out,
             vtpm_error *err)
{
    g_autofree char *prefix = owner_prefix(uuid);
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = vtpm_store_list(sconn, w->cfg->store.checkpoint_pool, prefix, &names, err)) < 0)
        return rc;
    g_ptr_array_sort_with_data(names, by_generation_desc, prefix);
    *out = g_steal_pointer(&names);
    return 0;
}

/* The newest readable record among those listed; *vanished counts those
 * deleted since the listing. */
static int
read_listed(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_owner *out,
            unsigned *vanished, vtpm_error *err)
{
    g_autofree char *prefix = owner_prefix(uuid);
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    *vanished = 0;
    if ((rc = list_records(w, sconn, uuid, &names, err)) < 0)
        return rc;
    /* A record that cannot be read (damaged, being written, or gone since
     * the listing) gives way to the one before it. */
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        uint64_t gen = name_generation(name, prefix);
        g_autoptr(GBytes) data = NULL;
        vtpm_error e = { 0 };

        if (gen == 0)
            continue;
        rc = vtpm_store_get(sconn, w->cfg->store.checkpoint_pool, name, &data, &e);
        if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND)
            (*vanished)++;
        if (rc == -(int)VTPM_FAULT_STATE_NOT_FOUND || rc == -(int)VTPM_FAULT_STATE_INTEGRITY)
            continue;
        if (rc < 0)
            return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED, "%s", e.message);
        if (g_bytes_get_size(data) <= OWNER_MAX &&
            vtpm_owner_parse(g_bytes_get_data(data, NULL), g_bytes_get_size(data), uuid, gen,
                             out))
            return 0;
    }
    return 0;
}

int
vtpm_owner_read(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_owner *out,
                vtpm_error *err)
{
    unsigned vanished = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    /* The owner writes a new record, then deletes the older ones: a reader
     * between its listing and its reads may find every record it listed
     * gone.  A newer one exists then: list again. */
    for (int attempt = 0; attempt < OWNER_READ_TRIES; attempt++) {
        if ((rc = read_listed(w, sconn, uuid, out, &vanished, err)) < 0 || out->host ||
            !vanished)
            return rc;
    }
    return vtpm_error_set(err, VTPM_FAULT_STATE_TRANSFER_FAILED,
                          "the ownership records of instance %s keep changing while read",
                          uuid);
}

int
vtpm_owner_read_store(vtpm_worker *w, const char *uuid, vtpm_owner *out, vtpm_error *err)
{
    g_autoptr(virConnect) sconn = NULL;
    int rc;

    if ((rc = vtpm_store_open(w->virt, w->cfg->store.uri, &sconn, err)) < 0)
        return rc;
    return vtpm_owner_read(w, sconn, uuid, out, err);
}

/* Delete the records of @uuid other than @keep (NULL: all of them). */
static int
drop_except(vtpm_worker *w, virConnectPtr sconn, const char *uuid, const char *keep,
            vtpm_error *err)
{
    g_autoptr(GPtrArray) names = NULL;
    int rc;

    if ((rc = list_records(w, sconn, uuid, &names, err)) < 0)
        return rc;
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);

        if (keep && strcmp(name, keep) == 0)
            continue;
        if ((rc = vtpm_store_delete(sconn, w->cfg->store.checkpoint_pool, name, err)) < 0)
            return rc;
    }
    return 0;
}

char *
vtpm_owner_format(vtpm_worker *w, const char *uuid, uint64_t gen)
{
    /* The host name is [A-Za-z0-9._-] (config check), the rest numbers and
     * a canonical UUID: nothing in it needs JSON escaping. */
    return g_strdup_printf("{\"format\": %d, \"instance\": \"%s\", \"host\": \"%s\", "
                           "\"generation\": %" G_GUINT64_FORMAT ", \"written_ms\": %" G_GINT64_FORMAT
                           "}\n",
                           OWNER_FORMAT, uuid, w->cfg->worker.host, gen,
                           g_get_real_time() / 1000);
}

int
vtpm_owner_write(vtpm_worker *w, virConnectPtr sconn, const char *uuid, uint64_t gen,
                 vtpm_error *err)
{
    g_autofree char *name = g_strdup_printf("%s.owner-%" G_GUINT64_FORMAT, uuid, gen);
    g_autofree char *text = vtpm_owner_format(w, uuid, gen);
    g_autoptr(GBytes) data = g_bytes_new(text, strlen(text));
    int rc;

    if ((rc = vtpm_store_put(sconn, w->cfg->store.checkpoint_pool, name, data, err)) < 0)
        return rc;
    return drop_except(w, sconn, uuid, name, err);
}

int
vtpm_owner_drop(vtpm_worker *w, virConnectPtr sconn, const char *uuid, vtpm_error *err)
{
    return drop_except(w, sconn, uuid, NULL, err);
}

bool
vtpm_owner_may_claim(vtpm_worker *w, const vtpm_owner *cur, uint64_t base)
{
    return !cur->host || strcmp(cur->host, w->cfg->worker.host) == 0 || cur->generation <= base;
}

bool
vtpm_owner_moved_away(vtpm_worker *w, const vtpm_owner *cur, uint64_t last)
{
    return cur->host && strcmp(cur->host, w->cfg->worker.host) != 0 && cur->generation > last;
}
