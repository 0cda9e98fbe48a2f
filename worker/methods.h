/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dispatch table: method name -> handler.  A handler packs its result
 * map into @result and returns 0, or fills @err and returns negative.  It
 * runs in the worker pool (on_io_thread ones on the I/O thread); per_instance
 * handlers are serialized on args.instance.uuid by the dispatcher.  The
 * handlers live in worker/ops/, one file per operation family.
 */
#pragma once

#include <stdbool.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "worker.h"

typedef int (*vtpm_handler_fn)(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                               vtpm_error *err);

typedef struct {
    const char *name;
    vtpm_handler_fn fn;
    bool per_instance; /* requires args.instance.uuid; serialized on it */
    /* Answered from memory, never blocking: runs on the I/O thread, so a
     * scheduler's poll neither waits behind slow operations filling the
     * pool nor pays two thread hand-offs. */
    bool on_io_thread;
    /* With per_instance: args.instance.uuid is required as for any
     * per-instance method, but the request is not queued behind the one
     * holding its instance: it runs at once, in a small pool of its own,
     * beside it.  For a short call that must reach a long one of the same
     * instance (live_migration_abort stops a live_migration).  Not on the
     * I/O thread: it calls libvirt. */
    bool beside;
    /* Moves or changes the instance's TPM state: when it succeeds, a
     * checkpoint follows in the instance's slot (worker/checkpointer.h). */
    bool checkpoint;
} vtpm_method;

/* NULL when @name is not a method of this worker. */
const vtpm_method *vtpm_methods_find(const char *name);
