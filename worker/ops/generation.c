/* SPDX-License-Identifier: Apache-2.0 */
/* Generation records (ops/generation.h). */
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "ops/generation.h"

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

/* Before a restore: refuse an archive older than what this host saw. */
int
vtpm_generation_check(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am, bool force,
                      const char *what, vtpm_error *err)
{
    uint64_t last = vtpm_generation_last(w, uuid);

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
                          what, uuid, am->generation, last, w->cfg->worker.host);
}
