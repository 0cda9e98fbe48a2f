/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The instance basics: get_capabilities, spawn, destroy.  Each is
 * idempotent, because delivery is at-least-once: running the same request
 * twice leaves the same result as running it once.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_get_capabilities(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                             vtpm_error *err);
int vtpm_op_spawn(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err);
int vtpm_op_destroy(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                    vtpm_error *err);
