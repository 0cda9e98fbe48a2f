/* SPDX-License-Identifier: Apache-2.0 */
/* Power: power_off (ACPI, then hard) and power_on (with the TPM's key). */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_power_off(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                      vtpm_error *err);
int vtpm_op_power_on(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                     vtpm_error *err);
