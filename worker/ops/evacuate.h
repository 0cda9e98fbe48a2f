/* SPDX-License-Identifier: Apache-2.0 */
/*
 * evacuate: the instance's host died; this host brings the instance back
 * with its TPM from the newest checkpoint in the state store (docs/
 * lifecycle.md, "Checkpoints and evacuation"), or with a fresh TPM.
 * Refused while the old host's vtpmd answers or its libvirt runs the
 * domain, unless the caller says the host is fenced.
 */
#pragma once

#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

int vtpm_op_evacuate(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                     vtpm_error *err);
