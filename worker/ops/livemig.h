/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live migration (docs/lifecycle.md), in Nova's order: on the destination
 * check_can_live_migrate_destination and pre_live_migration, whose reply is
 * the migrate_data the caller hands to live_migration on the source
 * (live_migration_abort runs beside it); then on the destination
 * post_live_migration_at_destination, or after a failure
 * rollback_live_migration_at_destination.
 *
 * libvirt (>= 7.1) carries swtpm's state inside QEMU's migration stream,
 * volatile state included: the TPM moves with the running guest and no
 * file of vtpmd holds it on the way.  What vtpmd moves is the key the
 * state is encrypted with, which the destination's libvirt needs before it
 * starts swtpm for the incoming guest (docs/security.md).  At every moment
 * one host runs the guest: a failed, aborted or timed-out migration leaves
 * it running on the source and answers a retryable fault, and a
 * redelivered live_migration finds out where the guest is before it does
 * anything.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_check_can_live_migrate_destination(vtpm_worker *w, const vtpm_request *req,
                                               msgpack_packer *result, vtpm_error *err);
int vtpm_op_pre_live_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                               vtpm_error *err);
int vtpm_op_live_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                           vtpm_error *err);
int vtpm_op_post_live_migration_at_destination(vtpm_worker *w, const vtpm_request *req,
                                               msgpack_packer *result, vtpm_error *err);
int vtpm_op_rollback_live_migration_at_destination(vtpm_worker *w, const vtpm_request *req,
                                                   msgpack_packer *result, vtpm_error *err);
int vtpm_op_live_migration_abort(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                                 vtpm_error *err);
