/* SPDX-License-Identifier: Apache-2.0 */
/* rebuild (ops/rebuild.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "inject.h"
#include "ops/custody.h"
#include "ops/domain.h"
#include "ops/manufacture.h"
#include "ops/nvram.h"
#include "ops/rebuild.h"
#include "rekey.h"

/*
 * The TPM belongs to the machine, not the disk: kept unless the vTPM
 * configuration changes.  So does the UEFI variable store, unless the
 * firmware changes (UEFI <-> BIOS, Secure Boot on <-> off: a store made
 * with other keys, or none, serves no other firmware), or it cannot
 * follow (a vTPM added or removed: the store lives with the TPM state, or
 * else is libvirt's).  A store that goes is set aside in the replaced dir
 * next to a TPM state that goes: that is also what tells a redelivery,
 * after the new definition exists, what the rebuild did.  An empty file
 * there stands for a store that was not in the state dir (libvirt's, or
 * none).
 */
typedef struct {
    bool same;          /* the vTPM configuration stays: the TPM is kept */
    bool follows;       /* the variable store is kept */
    bool new_vtpm;      /* the new definition has a vTPM */
    bool new_uefi;      /* ... UEFI firmware */
    bool old_uefi;
    char *libvirt_store;  /* the old store's path when libvirt kept it, to remove */
    char *defined_digest; /* the spec digest of the definition in place */
} rebuild_plan;

/* In the replaced dir: the spec digest of the run that set things aside,
 * written before it makes or defines anything. */
#define ASIDE_MARK ".rebuild-digest"

static void
rebuild_plan_clear(rebuild_plan *p)
{
    g_clear_pointer(&p->libvirt_store, g_free);
    g_clear_pointer(&p->defined_digest, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(rebuild_plan, rebuild_plan_clear)

/* Whether @dir holds TPM state (not just a variable store). */
static bool
has_tpm_state(const char *dir)
{
    g_autofree char *v2 = g_build_filename(dir, vtpm_rekey_subdir(VTPM_VERSION_2_0), NULL);
    g_autofree char *v12 = g_build_filename(dir, vtpm_rekey_subdir(VTPM_VERSION_1_2), NULL);

    return vtpm_fs_is_dir(v2) || vtpm_fs_is_dir(v12);
}

/* Rebuilt already (redelivery).  What was set aside by that run says what
 * it did (the TPM replaced, the store replaced); dropped only after the
 * start, as in redefine. */
static int
rebuilt_before(vtpm_worker *w, virDomainPtr dom, const vtpm_instance *inst, vtpm_ops_domain *d,
               vtpm_ops_outcome *state, vtpm_error *err)
{
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, inst->uuid);
    bool tpm_aside = has_tpm_state(replaced), store_aside = vtpm_nvram_in(replaced);
    bool uefi = d->fw.type == VTPM_FIRMWARE_UEFI;
    unsigned flags = store_aside && uefi && !d->nvram ? VIR_DOMAIN_START_RESET_NVRAM : 0;
    int rc;

    if ((rc = vtpm_ops_start_flags(w, dom, inst->secret, flags, err)) < 0)
        return rc;
    if (tpm_aside)
        *state = VTPM_OPS_OUTCOME_REPLACED;
    if (store_aside)
        d->nvram_state = uefi ? VTPM_OPS_OUTCOME_REPLACED : VTPM_OPS_OUTCOME_DELETED;
    else
        d->nvram_state = uefi ? VTPM_OPS_OUTCOME_KEPT : VTPM_OPS_OUTCOME_NONE;
    return vtpm_fs_rmtree(replaced, err);
}

/* The old store into the replaced dir, or an empty stand-in for one that
 * was not in the state dir. */
static int
set_store_aside(const char *state_dir, const char *replaced, vtpm_error *err)
{
    g_autofree char *stand_in = g_build_filename(replaced, VTPM_FIRMWARE_NVRAM_FILE, NULL);
    int rc, fd;

    if ((rc = vtpm_fs_mkdirs(replaced, 0700, err)) < 0)
        return rc;
    if (vtpm_fs_is_dir(state_dir) && (rc = vtpm_nvram_move(state_dir, replaced, false, err)) < 0)
        return rc;
    if (vtpm_nvram_in(replaced))
        return 0;
    fd = open(stand_in, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", stand_in,
                              g_strerror(errno));
    close(fd);
    return vtpm_fs_sync_dir(replaced, err);
}

/* What an interrupted run left in the state dir while the old TPM was
 * aside already (a store it brought back, a TPM it made that no definition
 * names yet) goes: the store back beside the old TPM, the rest removed. */
static int
drop_interrupted(const char *state_dir, const char *replaced, vtpm_error *err)
{
    int rc;

    if (!vtpm_fs_is_dir(state_dir))
        return 0;
    if ((rc = vtpm_nvram_move(state_dir, replaced, false, err)) < 0)
        return rc;
    if (vtpm_nvram_in(state_dir))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "a variable store both in %s and in %s: left for an operator",
                              state_dir, replaced);
    return vtpm_fs_rmtree(state_dir, err);
}

/* Before the new definition: set aside what goes.  A changing vTPM sets
 * the old state aside before the new definition exists, so that a crash
 * after the define cannot start the new TPM on the old state, and a failed
 * define can put it back. */
static int
set_aside(const char *state_dir, const char *replaced, const rebuild_plan *p, vtpm_error *err)
{
    int rc;

    /* TPM state already aside: the TPM is aside since an interrupted run
     * (the set-aside dir goes only once a new TPM ran). */
    if (!p->same && has_tpm_state(replaced)) {
        if ((rc = drop_interrupted(state_dir, replaced, err)) < 0)
            return rc;
    } else if (!p->same && has_tpm_state(state_dir)) {
        if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
            return rc;
        if (rename(state_dir, replaced) < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "setting aside %s: %s", state_dir,
                                  g_strerror(errno));
    }
    if ((p->old_uefi || p->new_uefi) && !p->follows)
        return set_store_aside(state_dir, replaced, err);
    return 0;
}

/* After the new TPM was made (with the deployment's EK CA; it is renamed
 * into a state dir that must not exist yet): a store that follows comes
 * back from beside the old TPM. */
static int
store_back(const char *state_dir, const char *replaced, const rebuild_plan *p, vtpm_error *err)
{
    int rc;

    if (p->follows && p->new_vtpm && !p->same &&
        ((rc = vtpm_fs_mkdirs(state_dir, 0711, err)) < 0 ||
         (rc = vtpm_nvram_move(replaced, state_dir, false, err)) < 0))
        return rc;
    return 0;
}

/* The run whose spec digest is @digest set things aside in @replaced. */
static int
mark_aside(const char *replaced, const char *digest, vtpm_error *err)
{
    g_autofree char *mark = g_build_filename(replaced, ASIDE_MARK, NULL);
    g_autoptr(GError) gerr = NULL;

    if (!vtpm_fs_is_dir(replaced))
        return 0;
    if (!g_file_set_contents_full(mark, digest, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &gerr))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "writing %s: %s", mark, gerr->message);
    return vtpm_fs_sync_dir(replaced, err);
}

/* Whether the run that set things aside in @replaced got as far as its
 * definition: the definition in place is of its spec. */
static bool
aside_defined(const char *replaced, const char *defined_digest)
{
    g_autofree char *mark = g_build_filename(replaced, ASIDE_MARK, NULL);
    g_autofree char *text = NULL;

    return defined_digest && g_file_get_contents(mark, &text, NULL, NULL) &&
           strcmp(text, defined_digest) == 0;
}

/* The mark, and an empty stand-in for a store that was not in the state
 * dir: neither is anything to put back. */
static int
drop_mark_and_stand_in(const char *replaced, vtpm_error *err)
{
    g_autofree char *mark = g_build_filename(replaced, ASIDE_MARK, NULL);
    g_autofree char *store = g_build_filename(replaced, VTPM_FIRMWARE_NVRAM_FILE, NULL);
    struct stat st;

    if (unlink(mark) < 0 && errno != ENOENT)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "removing %s: %s", mark,
                              g_strerror(errno));
    if (lstat(store, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0 && unlink(store) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "removing %s: %s", store,
                              g_strerror(errno));
    return 0;
}

/* What @replaced holds goes back into @state_dir: the old TPM state with
 * its store, or the store alone.  A TPM in @state_dir while the old one is
 * aside (@made) was made for a definition that never ran, and goes first,
 * once its store is beside the old TPM again. */
static int
restore_aside(const char *state_dir, const char *replaced, bool made, vtpm_error *err)
{
    int rc;

    if ((rc = drop_mark_and_stand_in(replaced, err)) < 0 ||
        (made && (rc = drop_interrupted(state_dir, replaced, err)) < 0))
        return rc;
    if (has_tpm_state(replaced) && !has_tpm_state(state_dir)) {
        if ((rc = vtpm_nvram_move(state_dir, replaced, false, err)) < 0)
            return rc;
        if ((vtpm_fs_is_dir(state_dir) && rmdir(state_dir) < 0) || rename(replaced, state_dir) < 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "putting %s back: %s", replaced,
                                  g_strerror(errno));
        return 0;
    }
    if (vtpm_fs_is_dir(state_dir) && (rc = vtpm_nvram_move(replaced, state_dir, false, err)) < 0)
        return rc;
    return vtpm_fs_rmtree(replaced, err);
}

/* The define failed: the old definition is still in place; so is its
 * state again, with its store. */
static void
put_back(const char *uuid, const char *state_dir, const char *replaced, bool made)
{
    vtpm_error e = { 0 };

    if (restore_aside(state_dir, replaced, made, &e) < 0)
        g_warning("instance %s: after a failed define: %s", uuid, e.message);
}

/* An earlier run set the TPM or its store aside and was interrupted
 * before its definition took the place of the one there now (killed, and
 * its redelivery expired or never came): what it set aside is still the
 * instance's and goes back before this run sets anything aside; a TPM it
 * made, which no definition names, goes.  Without this a rebuild keeping
 * the TPM would start the abandoned run's TPM, or none, and drop the
 * instance's own with the replaced dir. */
static int
undo_undefined(const char *state_dir, const char *replaced, const char *defined_digest,
               vtpm_error *err)
{
    if (!vtpm_fs_is_dir(replaced) || aside_defined(replaced, defined_digest))
        return 0;
    return restore_aside(state_dir, replaced, has_tpm_state(replaced), err);
}

/* Define the new domain for @d in place of @dom and start it.  A new TPM
 * is made between setting the old one aside and bringing a store that
 * follows back, so that its definition carries its identity. */
static int
redefine(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const vtpm_instance *inst,
         vtpm_ops_domain *d, const rebuild_plan *p, vtpm_error *err)
{
    g_autofree char *state_dir = vtpm_ops_state_dir(w, inst->uuid);
    g_autofree char *replaced = vtpm_ops_replaced_dir(w, inst->uuid);
    g_autoptr(virDomain) ndom = NULL;
    bool make = !p->same && p->new_vtpm;
    unsigned flags = 0;
    vtpm_error ignore;
    int rc;

    if ((rc = undo_undefined(state_dir, replaced, p->defined_digest, err)) < 0 ||
        (rc = set_aside(state_dir, replaced, p, err)) < 0 ||
        (rc = mark_aside(replaced, d->digest, err)) < 0)
        return rc;
    vtpm_inject("rebuild.after_set_aside");
    if ((make && (rc = vtpm_manufacture_fresh(w, conn, inst, d, false, err)) < 0) ||
        (rc = store_back(state_dir, replaced, p, err)) < 0 ||
        (rc = vtpm_ops_define(w, conn, d->xml, &ndom, err)) < 0) {
        put_back(inst->uuid, state_dir, replaced, make);
        vtpm_ops_start(w, dom, inst->secret, &ignore);
        return rc;
    }
    vtpm_inject("rebuild.after_define");
    /* A new store of libvirt's own: not whatever an earlier definition of
     * the same name left where libvirt keeps stores. */
    if (p->new_uefi && !p->new_vtpm && !p->follows)
        flags = VIR_DOMAIN_START_RESET_NVRAM;
    if ((rc = vtpm_ops_start_flags(w, ndom, inst->secret, flags, err)) < 0)
        return rc;
    /* Only once the new TPM runs: until then what is set aside is what
     * tells a retry (after libvirtd failed the start) what is replaced. */
    if ((rc = vtpm_fs_rmtree(replaced, err)) < 0)
        return rc;
    if (p->libvirt_store && unlink(p->libvirt_store) < 0 && errno != ENOENT)
        g_warning("instance %s: removing the old variable store %s: %s", inst->uuid,
                  p->libvirt_store, g_strerror(errno));
    return 0;
}

/* The old store libvirt kept (no vTPM), when the new definition does not
 * use it: its path from the domain as it runs (libvirt names it at the
 * start); unknown (NULL) when the domain is not running. */
static void
plan_libvirt_store(vtpm_worker *w, virDomainPtr dom, const vtpm_domxml_meta *dm,
                   rebuild_plan *p)
{
    g_autofree char *xml = NULL;

    if (dm->tpm.version != VTPM_VERSION_NONE || !p->old_uefi || (p->new_uefi && !p->new_vtpm))
        return;
    xml = VTPM_LV(virDomainGetXMLDesc(dom, 0));
    if (xml)
        (void)vtpm_domxml_parse_nvram(xml, &p->libvirt_store, NULL);
}

/* The same TPM keeps its key; a new one gets a new key. */
static int
rebuild_domain(vtpm_worker *w, virConnectPtr conn, virDomainPtr dom, const vtpm_instance *inst,
               vtpm_ops_domain *d, const vtpm_domxml_meta *dm, const rebuild_plan *p,
               vtpm_error *err)
{
    int rc;

    if (p->same && d->dev.version != VTPM_VERSION_NONE &&
        (rc = vtpm_custody_check_mode_change(dm->tpm.secret_security, d->dev.secret_security,
                                             inst->uuid, err)) < 0)
        return rc;
    if ((rc = vtpm_custody_plan_key(w, conn, inst, d,
                                    p->same && dm->tpm.version != VTPM_VERSION_NONE ? dm : NULL,
                                    err)) < 0 ||
        (rc = vtpm_virt_shutdown(w->virt, dom, w->cfg->libvirt.shutdown_timeout, NULL, err)) < 0)
        return rc;
    vtpm_inject("rebuild.after_power_off");
    return redefine(w, conn, dom, inst, d, p, err);
}

static void
plan(const vtpm_domxml_meta *dm, vtpm_ops_domain *d, rebuild_plan *p)
{
    bool old_vtpm = dm->tpm.version != VTPM_VERSION_NONE;

    p->same = dm->tpm.version == d->dev.version &&
              (d->dev.version == VTPM_VERSION_NONE || dm->tpm.model == d->dev.model);
    p->new_vtpm = d->dev.version != VTPM_VERSION_NONE;
    p->old_uefi = dm->firmware.type == VTPM_FIRMWARE_UEFI;
    p->new_uefi = d->fw.type == VTPM_FIRMWARE_UEFI;
    p->follows = vtpm_firmware_same_store(&dm->firmware, &d->fw) && old_vtpm == p->new_vtpm;
    p->defined_digest = g_strdup(dm->spec_digest);
    if (!p->new_uefi)
        d->nvram_state = p->old_uefi ? VTPM_OPS_OUTCOME_DELETED : VTPM_OPS_OUTCOME_NONE;
    else
        d->nvram_state = p->follows ? VTPM_OPS_OUTCOME_KEPT : VTPM_OPS_OUTCOME_REPLACED;
}

int
vtpm_op_rebuild(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                vtpm_error *err)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_auto(vtpm_ops_domain) d = { 0 };
    g_auto(vtpm_domxml_meta) dm = { 0 };
    g_auto(rebuild_plan) p = { 0 };
    g_autoptr(virConnect) conn = NULL;
    g_autoptr(virDomain) dom = NULL;
    vtpm_ops_outcome state;
    int rc;

    /* TPMUnsupported in prepare leaves the instance exactly as it was. */
    if ((rc = vtpm_proto_arg_instance(req, &inst, err)) < 0 ||
        (rc = vtpm_ops_prepare(w, inst, &d, err)) < 0 ||
        (rc = vtpm_virt_conn(w->virt, &conn, NULL, err)) < 0 ||
        (rc = vtpm_ops_find_domain(w, conn, inst->uuid, &dom, err)) < 0 ||
        (rc = vtpm_ops_get_meta(w, dom, &dm, err)) < 0)
        return rc;
    plan(&dm, &d, &p);
    state = d.dev.version == VTPM_VERSION_NONE ? VTPM_OPS_OUTCOME_NONE
            : p.same                           ? VTPM_OPS_OUTCOME_KEPT
                                               : VTPM_OPS_OUTCOME_REPLACED;
    if (dm.spec_digest && strcmp(dm.spec_digest, d.digest) == 0) {
        rc = rebuilt_before(w, dom, inst, &d, &state, err);
    } else {
        plan_libvirt_store(w, dom, &dm, &p);
        rc = rebuild_domain(w, conn, dom, inst, &d, &dm, &p, err);
    }
    if (rc < 0)
        return rc;
    vtpm_ops_pack_domain_outcome(result, w, inst->uuid, &d, state);
    return 0;
}
