/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The UEFI variable store of an instance with a vTPM, beside its TPM state
 * (<state dir>/VTPM_FIRMWARE_NVRAM_FILE): in the same archive, swapped in
 * by the same rename, under the same generation guard.  What happens to
 * it when the state comes back for a definition whose firmware may
 * differ, and how it moves when the TPM state around it is replaced.
 */
#pragma once

#include <stdbool.h>

#include "vtpm/error.h"
#include "archive.h"
#include "domxml.h"
#include "firmware.h"
#include "ops/domain.h"
#include "worker.h"

/* Give the store in @dir (a state dir being restored) the owner and mode
 * libvirt creates it with: root, 0600.  It is QEMU's, not swtpm's: libvirt
 * hands it to QEMU's user at every start.  None there is fine. */
int vtpm_nvram_own(const char *dir, vtpm_error *err);

/* What becomes of the store when @am's state comes back for @d: restored
 * when @am holds one made for the same firmware (that of the domain it
 * carries) and @d keeps its store in the state dir; otherwise fresh for
 * UEFI (a store made with other keys, or none, would turn Secure Boot off
 * or on against what the guest asks now) and none for BIOS. */
vtpm_ops_outcome vtpm_nvram_outcome(const vtpm_archive_meta *am, const vtpm_ops_domain *d);
/* Right after @am's state was swapped in for @d: remove a store it brought
 * that does not serve @d, and say in d->nvram_state what became of it. */
int vtpm_nvram_settle(vtpm_worker *w, const char *uuid, const vtpm_archive_meta *am,
                      vtpm_ops_domain *d, vtpm_error *err);

/* What the store of @d is on a redelivery, when what the archive held can
 * no longer be seen: @there when the state dir has one, fresh when @d is
 * UEFI without one (or without a vTPM: libvirt's store on this host), none
 * for BIOS. */
vtpm_ops_outcome vtpm_nvram_now(vtpm_worker *w, const char *uuid, const vtpm_ops_domain *d,
                                vtpm_ops_outcome there);

/* Whether @dir holds a store. */
bool vtpm_nvram_in(const char *dir);
/* Move the store from @from_dir to @to_dir (one rename; absent: nothing
 * to do; already there: done).  @link: a hard link instead, leaving the
 * one in @from_dir (rekey: the old state stays whole beside the new). */
int vtpm_nvram_move(const char *from_dir, const char *to_dir, bool link, vtpm_error *err);
/* Remove the store in @dir; none is fine. */
int vtpm_nvram_drop(const char *dir, vtpm_error *err);
