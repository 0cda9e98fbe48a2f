/* SPDX-License-Identifier: Apache-2.0 */
/* rebuild: a new disk for the same machine; the TPM is kept unless the
 * vTPM configuration itself changes. */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_rebuild(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                    vtpm_error *err);
