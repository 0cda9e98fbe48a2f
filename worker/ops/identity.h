/* SPDX-License-Identifier: Apache-2.0 */
/*
 * get_vtpm_identity: the EK public keys and certificates of an instance's
 * vTPM and the CA that signed them, answered from the identity record
 * that travels with the domain definition (worker/identity.h): no swtpm
 * runs, no key or secret is needed, and every host that holds the
 * instance answers the same.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_get_vtpm_identity(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                              vtpm_error *err);
