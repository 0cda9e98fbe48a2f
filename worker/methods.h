/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dispatch table: method name -> handler.  A handler packs its result
 * map into @result and returns 0, or fills @err and returns negative.  It
 * runs in the worker pool; per_instance handlers are serialized on
 * args.instance.uuid by the dispatcher.
 */
#pragma once

#include <stdbool.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "policy.h"
#include "worker.h"

typedef int (*vtpm_handler_fn)(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                               vtpm_error *err);

typedef struct {
    const char *name;
    vtpm_handler_fn fn;
    bool per_instance; /* requires args.instance.uuid; serialized on it */
} vtpm_method;

/* NULL when @name is not a method of this worker. */
const vtpm_method *vtpm_methods_find(const char *name);

/* Handlers (worker/ops.c) */
int vtpm_op_get_capabilities(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                             vtpm_error *err);
int vtpm_op_spawn(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err);
int vtpm_op_destroy(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                    vtpm_error *err);

/* Helpers shared by the handlers (worker/ops.c). */
char *vtpm_ops_state_dir(vtpm_worker *w, const char *uuid);
char *vtpm_ops_spec_digest(const vtpm_instance *inst, const vtpm_device *dev);
/* nil, or {version, model, secret_security, state_dir} */
void vtpm_ops_pack_vtpm(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                        const vtpm_device *dev);
