/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cold migration and resize (docs/lifecycle.md): migrate_disk_and_power_off
 * on the source -> finish_migration on the destination -> confirm_migration
 * on the source; or destroy on the destination + finish_revert_migration on
 * the source.
 *
 * The rule every step follows: the TPM state is always somewhere whole and
 * checksummed (the local state dir, the kept copy, the transfer volume),
 * and a copy is deleted only after the next one has been verified.  Every
 * handler is idempotent, so a redelivery after a crash at any named
 * injection point (vtpm_inject) completes the operation.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_migrate_disk_and_power_off(vtpm_worker *w, const vtpm_request *req,
                                       msgpack_packer *result, vtpm_error *err);
int vtpm_op_finish_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                             vtpm_error *err);
int vtpm_op_confirm_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                              vtpm_error *err);
int vtpm_op_finish_revert_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                                    vtpm_error *err);
