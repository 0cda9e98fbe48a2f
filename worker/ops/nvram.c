/* SPDX-License-Identifier: Apache-2.0 */
/* The UEFI variable store beside the TPM state (ops/nvram.h). */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "ops/nvram.h"

static char *
store_in(const char *dir)
{
    return g_build_filename(dir, VTPM_FIRMWARE_NVRAM_FILE, NULL);
}

bool
vtpm_nvram_in(const char *dir)
{
    g_autofree char *path = store_in(dir);
    struct stat st;

    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int
vtpm_nvram_own(const char *dir, vtpm_error *err)
{
    g_autofree char *path = store_in(dir);

    if (!vtpm_nvram_in(dir))
        return 0;
    if (lchown(path, 0, 0) < 0 || chmod(path, 0600) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "setting the owner of %s: %s", path,
                              g_strerror(errno));
    return 0;
}

int
vtpm_nvram_drop(const char *dir, vtpm_error *err)
{
    g_autofree char *path = store_in(dir);

    if (unlink(path) < 0 && errno != ENOENT)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "removing %s: %s", path,
                              g_strerror(errno));
    return vtpm_fs_sync_dir(dir, err);
}

vtpm_ops_outcome
vtpm_nvram_outcome(const vtpm_archive_meta *am, const vtpm_ops_domain *d)
{
    g_auto(vtpm_domxml_meta) dm = { 0 };

    if (d->fw.type != VTPM_FIRMWARE_UEFI)
        return VTPM_OPS_OUTCOME_NONE;
    /* Unreadable: no firmware known, so the store is not trusted. */
    if (am->domain_xml)
        (void)vtpm_domxml_parse_domain_metadata(am->domain_xml, &dm, NULL);
    if (d->nvram && vtpm_archive_holds(am, VTPM_FIRMWARE_NVRAM_FILE) &&
        vtpm_firmware_same_store(&dm.firmware, &d->fw))
        return VTPM_OPS_OUTCOME_RESTORED;
    return VTPM_OPS_OUTCOME_FRESH;
}

int
vtpm_nvram_settle(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am,
                  vtpm_ops_domain *d, vtpm_error *err)
{
    g_autofree char *dir = vtpm_ops_state_dir(w, uuid);
    vtpm_ops_outcome o = vtpm_nvram_outcome(am, d);
    int rc;

    if (o != VTPM_OPS_OUTCOME_RESTORED && vtpm_nvram_in(dir) &&
        (rc = vtpm_nvram_drop(dir, err)) < 0)
        return rc;
    d->nvram_state = o;
    return 0;
}

vtpm_ops_outcome
vtpm_nvram_now(vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d,
               vtpm_ops_outcome there)
{
    g_autofree char *dir = vtpm_ops_state_dir(w, uuid);

    if (d->fw.type != VTPM_FIRMWARE_UEFI)
        return VTPM_OPS_OUTCOME_NONE;
    return d->nvram && vtpm_nvram_in(dir) ? there : VTPM_OPS_OUTCOME_FRESH;
}

int
vtpm_nvram_move(const char *from_dir, const char *to_dir, bool link, vtpm_error *err)
{
    g_autofree char *from = store_in(from_dir);
    g_autofree char *to = store_in(to_dir);
    int rc;

    if (!vtpm_nvram_in(from_dir) || vtpm_nvram_in(to_dir))
        return 0;
    rc = link ? linkat(AT_FDCWD, from, AT_FDCWD, to, 0) : rename(from, to);
    if (rc < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "moving %s to %s: %s", from, to,
                              g_strerror(errno));
    if ((rc = vtpm_fs_sync_dir(to_dir, err)) < 0)
        return rc;
    return link ? 0 : vtpm_fs_sync_dir(from_dir, err);
}
