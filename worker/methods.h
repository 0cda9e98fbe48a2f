/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dispatch table: method name -> handler.  A handler packs its result
 * map into @result and returns 0, or fills @err and returns negative.  It
 * runs in the worker pool (on_io_thread ones on the I/O thread); per_instance
 * handlers are serialized on args.instance.uuid by the dispatcher.
 */
#pragma once

#include <stdbool.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "domxml.h"
#include "policy.h"
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

/* Handlers (worker/lifecycle.c) */
int vtpm_op_power_off(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                      vtpm_error *err);
int vtpm_op_power_on(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                     vtpm_error *err);
int vtpm_op_migrate_disk_and_power_off(vtpm_worker *w, const vtpm_request *req,
                                       msgpack_packer *result, vtpm_error *err);
int vtpm_op_finish_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                             vtpm_error *err);
int vtpm_op_confirm_migration(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                              vtpm_error *err);
int vtpm_op_finish_revert_migration(vtpm_worker *w, const vtpm_request *req,
                                    msgpack_packer *result, vtpm_error *err);
int vtpm_op_shelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                   vtpm_error *err);
int vtpm_op_unshelve(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                     vtpm_error *err);
int vtpm_op_rebuild(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                    vtpm_error *err);
/* Re-encrypt the TPM state under a new key (docs/security.md#rekey). */
int vtpm_op_rekey(vtpm_worker *w, const vtpm_request *req, msgpack_packer *result,
                  vtpm_error *err);

/* Helpers shared by the handlers (worker/ops.c). */
char *vtpm_ops_state_dir(vtpm_worker *w, const char *uuid);
/* Where a rebuild sets the old state aside while the vTPM changes. */
char *vtpm_ops_replaced_dir(vtpm_worker *w, const char *uuid);
/* Where a rekey builds the new state, and where the old one waits until
 * the new key is stored (docs/security.md, Rekey). */
char *vtpm_ops_rekey_dir(vtpm_worker *w, const char *uuid);
/* The instance's serial console log ([libvirt] console_dir/<uuid>.log). */
char *vtpm_ops_console_path(vtpm_worker *w, const char *uuid);
/* Remove it: the instance no longer lives on this host (destroy, shelve
 * offload, a confirmed migration away), and a stale log would outlive it. */
void vtpm_ops_forget_console(vtpm_worker *w, const char *uuid);
/* Drop the newest generation this host remembers for the instance (after
 * a destroy nothing of it may be restored here that the record protects). */
void vtpm_lifecycle_forget_generation(vtpm_worker *w, const char *uuid);
char *vtpm_ops_spec_digest(const vtpm_instance *inst, const vtpm_device *dev);
/* nil, or {version, model, secret_security, state_dir} */
void vtpm_ops_pack_vtpm(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                        const vtpm_device *dev);

/* What (re)defining an instance's domain needs, derived from its spec. */
typedef struct {
    vtpm_device dev;
    char *digest;
    char *xml;
    char *name;
    /* how the XML was built, so that vtpm_ops_plan_key can rebuild it */
    char *kernel, *initrd, *disk, *console;
    bool encrypted;       /* <encryption secret='<uuid>'/> */
    char *wrapped_secret; /* deployment mode */
    bool new_host_secret; /* plan_key defined a host secret (undo on failure) */
} vtpm_ops_domain;

void vtpm_ops_domain_clear(vtpm_ops_domain *d);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_ops_domain, vtpm_ops_domain_clear)

/* Resolve the vTPM (TPMUnsupported when this host lacks a needed trait),
 * confine boot paths, build the domain XML. */
int vtpm_ops_prepare(vtpm_worker *w, const vtpm_instance *inst, vtpm_ops_domain *out,
                     vtpm_error *err);
int vtpm_ops_define(vtpm_worker *w, virConnectPtr conn, const char *xml, virDomainPtr *out,
                    vtpm_error *err);
/*
 * Decide how the TPM state of @inst is keyed and rebuild d->xml with it
 * (docs/security.md).  @cont is the metadata of the TPM this definition
 * continues (the current domain's, or that of the domain in an archive);
 * NULL for a new TPM.  user: encrypted with instance.vtpm.secret (a new TPM
 * without it is SecretRequired unless [vtpm] allow_unencrypted); host: the
 * host's persistent secret, created for a new TPM (the caller fetches it
 * for a continued one first); deployment: a random secret wrapped with the
 * deployment key, re-wrapped under the current key when needed.
 */
int vtpm_ops_plan_key(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
                      vtpm_ops_domain *d, const vtpm_domxml_meta *cont, vtpm_error *err);
/* Start if not running, opening an encrypted TPM: in user mode with
 * @secret (SecretRequired without it), in deployment mode with the
 * unwrapped secret of the domain's metadata, each defined as an ephemeral
 * private libvirt secret for the start only; in host mode with the host's
 * secret.  A key that does not open the state is SecretInvalid (the state
 * is left untouched). */
int vtpm_ops_start(vtpm_worker *w, virDomainPtr dom, GBytes *secret, vtpm_error *err);
/* args.instance.vtpm.secret of a request that reads only the uuid. */
int vtpm_ops_arg_secret(const vtpm_request *req, GBytes **out, vtpm_error *err);
/* The domain's vtpmd metadata (zeroed, version NONE, when it has none). */
int vtpm_ops_get_meta(vtpm_worker *w, virDomainPtr dom, vtpm_domxml_meta *out,
                      vtpm_error *err);
/* {domain, vtpm, vtpm_state?} */
void vtpm_ops_pack_domain_result(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                                 const vtpm_ops_domain *d, const char *vtpm_state);
