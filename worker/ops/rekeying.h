/* SPDX-License-Identifier: Apache-2.0 */
/* rekey: re-encrypt the TPM state under a new key (docs/security.md#rekey). */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_rekey(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err);
