/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shelve / unshelve: the TPM state goes to the shelve store ([store] uri,
 * shelve_pool), read back and verified before the local copy may go, and
 * comes back from it on any host.  Idempotent like every handler.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_shelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                   vtpm_error *err);
int vtpm_op_unshelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                     vtpm_error *err);
