/* SPDX-License-Identifier: Apache-2.0 */
/* Generation records (ops/generation.h). */
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "ops/generation.h"
#include "ops/ownership.h"

static char *
gen_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/generations/%s", w->cfg->store.kept_dir, uuid);
}

uint64_t
vtpm_generation_last(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = gen_path(w, uuid);
    g_autoptr(GBytes) data = NULL;
    g_autofree char *text = NULL;
    guint64 v = 0;

    if (vtpm_fs_read(path, 64, &data, NULL) < 0)
        return 0;
    text = g_strndup(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
    if (!g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, G_MAXINT64, &v, NULL))
        return 0;
    return v;
}

int
vtpm_generation_record(vtpm_worker *w, const char *uuid, uint64_t gen, vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.kept_dir, "generations", NULL);
    g_autofree char *path = gen_path(w, uuid);
    g_autofree char *text = NULL;
    int rc;

    if (gen <= vtpm_generation_last(w, uuid))
        return 0;
    text = g_strdup_printf("%" G_GUINT64_FORMAT "\n", gen);
    if ((rc = vtpm_fs_mkdirs(dir, 0700, err)) < 0)
        return rc;
    return vtpm_fs_write_atomic(path, text, strlen(text), 0600, err);
}

void
vtpm_generation_forget(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = gen_path(w, uuid);

    (void)unlink(path);
}

/* The newest generation the fleet knows of @uuid, for a host without a
 * record of its own: the ownership record's, and *who its host (0 and
 * nothing when there is none, or the store cannot say). */
static uint64_t
fleet_last(vtpm_worker *w, const char *uuid, char **who)
{
    g_auto(vtpm_owner) o = { 0 };

    if (!vtpm_owner_enabled(w) || vtpm_owner_read_store(w, uuid, &o, NULL) < 0 || !o.host)
        return 0;
    *who = g_steal_pointer(&o.host);
    return o.generation;
}

/* Before a restore: refuse an archive older than what this host saw. */
int
vtpm_generation_check(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am, bool force,
                      const char *what, vtpm_error *err)
{
    g_autofree char *owner = NULL;
    uint64_t last = vtpm_generation_last(w, uuid);

    if (last == 0)
        last = fleet_last(w, uuid, &owner);
    if (am->generation >= last)
        return 0;
    if (force) {
        g_warning("instance %s: restoring %s of generation %" G_GUINT64_FORMAT
                  ", older than generation %" G_GUINT64_FORMAT " seen here (forced)",
                  uuid, what, am->generation, last);
        return 0;
    }
    return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                          "%s of instance %s has generation %" G_GUINT64_FORMAT
                          ", older than generation %" G_GUINT64_FORMAT " that host %s has seen: "
                          "restoring it would roll the TPM back; pass force: true to do it "
                          "anyway",
                          what, uuid, am->generation, last,
                          owner ? owner : w->cfg->worker.host);
}

GPtrArray *
vtpm_generation_list(vtpm_worker *w)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.kept_dir, "generations", NULL);

    return vtpm_fs_list_uuids(dir);
}

/* ---- fences ----------------------------------------------------------------- */

static char *
fence_path(vtpm_worker *w, const char *uuid)
{
    return g_strdup_printf("%s/fenced/%s", w->cfg->store.kept_dir, uuid);
}

int
vtpm_generation_fence(vtpm_worker *w, const char *uuid, const char *owner, uint64_t gen,
                      vtpm_error *err)
{
    g_autofree char *dir = g_build_filename(w->cfg->store.kept_dir, "fenced", NULL);
    g_autofree char *path = fence_path(w, uuid);
    g_autofree char *text = g_strdup_printf("%s %" G_GUINT64_FORMAT "\n", owner, gen);
    int rc;

    if ((rc = vtpm_fs_mkdirs(dir, 0700, err)) < 0)
        return rc;
    return vtpm_fs_write_atomic(path, text, strlen(text), 0600, err);
}

int
vtpm_generation_check_fence(vtpm_worker *w, const char *uuid, vtpm_error *err)
{
    g_autofree char *path = fence_path(w, uuid);
    g_autoptr(GBytes) data = NULL;
    g_autofree char *text = NULL;
    g_auto(GStrv) f = NULL;

    if (vtpm_fs_read(path, 512, &data, NULL) < 0)
        return 0;
    text = g_strndup(g_bytes_get_data(data, NULL), g_bytes_get_size(data));
    f = g_strsplit(g_strstrip(text), " ", 2);
    return vtpm_error_set_final(err, VTPM_FAULT_INSTANCE_CONFLICT,
                                "instance %s was evacuated to host %s (generation %s, newer than "
                                "any this host has): the copy of its TPM on host %s is stale and "
                                "is not started; destroy it here",
                                uuid, f[0] ? f[0] : "?", f[0] && f[1] ? f[1] : "?",
                                w->cfg->worker.host);
}

void
vtpm_generation_unfence(vtpm_worker *w, const char *uuid)
{
    g_autofree char *path = fence_path(w, uuid);

    (void)unlink(path);
}
