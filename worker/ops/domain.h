/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What every operation does with an instance's domain: read the request's
 * instance, find and define the domain, start it with the TPM's key, and
 * say where the instance's files live on this host.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "domxml.h"
#include "firmware.h"
#include "policy.h"
#include "virt.h"
#include "worker.h"

/* args.instance.uuid of a request that reads only the uuid. */
int vtpm_ops_arg_uuid(const vtpm_request *req, char uuid[37], vtpm_error *err);
/* args.instance.vtpm.secret of a request that reads only the uuid. */
int vtpm_ops_arg_secret(const vtpm_request *req, GBytes **out, vtpm_error *err);

char *vtpm_ops_state_dir(vtpm_worker *w, const char *uuid);
/* The UEFI variable store of an instance with a vTPM: in its state dir
 * (VTPM_FIRMWARE_NVRAM_FILE), so that it moves with the TPM state.
 * Without a vTPM libvirt keeps the store where it keeps them. */
char *vtpm_ops_nvram_path(vtpm_worker *w, const char *uuid);
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

/* Looks the domain up; InstanceNotFound when it does not exist. */
int vtpm_ops_find_domain(vtpm_worker *w, virConnectPtr conn, const char *uuid,
                         virDomainPtr *out, vtpm_error *err);
/* A connection to @host's libvirtd: the local one for ourselves.  @host
 * is a request's dest_host, or an archive manifest's secret_host (which
 * whoever can write the shelve store controls): it is checked here, where
 * it becomes part of a URI, whatever its source. */
int vtpm_ops_host_conn(vtpm_worker *w, const char *host, virConnectPtr *out, vtpm_error *err);
/* The same through @uri_template (validated at start: one %s) instead of
 * [libvirt] migration_uri_template. */
int vtpm_ops_host_conn_via(vtpm_worker *w, const char *host, const char *uri_template,
                           virConnectPtr *out, vtpm_error *err);
/* The uid and gid libvirt runs swtpm as ([libvirt] swtpm_user/_group). */
int vtpm_ops_swtpm_ids(vtpm_worker *w, int *uid, int *gid, vtpm_error *err);

char *vtpm_ops_spec_digest(const vtpm_instance *inst, const vtpm_device *dev);
/* The domain's vtpmd metadata (zeroed, version NONE, when it has none). */
int vtpm_ops_get_meta(vtpm_worker *w, virDomainPtr dom, vtpm_domxml_meta *out,
                      vtpm_error *err);
/* {type, secure_boot, machine}: the firmware as decided on this host (a
 * reply's "firmware"). */
void vtpm_ops_pack_firmware(msgpack_packer *pk, const vtpm_firmware *fw);
/* nil, or {version, model, secret_security, state_dir} */
void vtpm_ops_pack_vtpm(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                        const vtpm_device *dev);

/* What an operation did with the TPM state: a reply's vtpm_state
 * (docs/protocol.md), named on the wire by vtpm_ops_outcome_str; the same
 * words say what it did with the UEFI variable store (nvram_state). */
typedef enum {
    VTPM_OPS_OUTCOME_NONE,     /* "none": the instance has no vTPM (state) */
    VTPM_OPS_OUTCOME_FRESH,    /* "fresh": a new TPM, its state starts empty */
    VTPM_OPS_OUTCOME_RESTORED, /* "restored": the state came back from an archive */
    VTPM_OPS_OUTCOME_KEPT,     /* "kept": the state stayed as it was */
    VTPM_OPS_OUTCOME_REPLACED, /* "replaced": the old state made way for a new TPM */
    VTPM_OPS_OUTCOME_DELETED,  /* "deleted": the state is gone */
} vtpm_ops_outcome;

const char *vtpm_ops_outcome_str(vtpm_ops_outcome o);

/* What (re)defining an instance's domain needs, derived from its spec. */
typedef struct {
    vtpm_device dev;
    vtpm_firmware fw;  /* decided for this host (optional Secure Boot settled) */
    char *nvram;       /* the store's path; NULL: libvirt's (no vTPM, or BIOS) */
    /* What the operation did with the store, packed as nvram_state beside
     * vtpm_state (vtpm_ops_pack_domain_outcome); the handler sets it. */
    vtpm_ops_outcome nvram_state;
    char *digest;
    char *xml;
    char *name;
    /* how the XML was built, so that vtpm_custody_plan_key can rebuild it */
    char *kernel, *initrd, *disk, *console;
    bool encrypted;       /* <encryption secret='<uuid>'/> */
    char *wrapped_secret; /* deployment mode */
    bool new_host_secret; /* plan_key defined a host secret (undo on failure) */
    /* The TPM's identity record (identity.h text form): the continued
     * TPM's, or the one vtpmd made; NULL: none known. */
    char *identity;
} vtpm_ops_domain;

void vtpm_ops_domain_clear(vtpm_ops_domain *d);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(vtpm_ops_domain, vtpm_ops_domain_clear)

/* Resolve the vTPM and the firmware (TPMUnsupported when this host lacks a
 * needed trait, naming it and why), confine boot paths, build the domain
 * XML. */
int vtpm_ops_prepare(vtpm_worker *w, const vtpm_instance *inst, vtpm_ops_domain *out,
                     vtpm_error *err);
/* Build d->xml again from @inst and what @d says now (its keying). */
int vtpm_ops_build_xml(vtpm_worker *w, const vtpm_instance *inst, vtpm_ops_domain *d,
                       vtpm_error *err);
int vtpm_ops_define(vtpm_worker *w, virConnectPtr conn, const char *xml, virDomainPtr *out,
                    vtpm_error *err);
/* Start if not running, opening an encrypted TPM: in user mode with
 * @secret (SecretRequired without it), in deployment mode with the
 * unwrapped secret of the domain's metadata, each defined as an ephemeral
 * private libvirt secret for the start only; in host mode with the host's
 * secret.  A key that does not open the state is SecretInvalid (the state
 * is left untouched). */
int vtpm_ops_start(vtpm_worker *w, virDomainPtr dom, GBytes *secret, vtpm_error *err);
/* The variable store of a UEFI instance with a vTPM lives in its swtpm
 * state dir, and libvirt makes a new store from its template before it
 * makes that dir: make the dir (root 0711, as libvirt does) for the domain
 * whose metadata is @m, before a start or an incoming live migration.
 * Nothing to do for other domains. */
int vtpm_ops_store_dir(vtpm_worker *w, const char *uuid, const vtpm_domxml_meta *m,
                       vtpm_error *err);
/* The same with virDomainCreateWithFlags @flags (VIR_DOMAIN_START_RESET_NVRAM:
 * a new store from the template, for a store libvirt keeps). */
int vtpm_ops_start_flags(vtpm_worker *w, virDomainPtr dom, GBytes *secret, unsigned flags,
                         vtpm_error *err);

/* {domain, vtpm, firmware} */
void vtpm_ops_pack_domain_result(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                                 const vtpm_ops_domain *d);
/* {domain, vtpm, firmware, vtpm_state, nvram_state, identity_changed}:
 * identity_changed is true for a new TPM (fresh, replaced), whose EKs are
 * not the old ones. */
void vtpm_ops_pack_domain_outcome(msgpack_packer *pk, vtpm_worker *w, const char *uuid,
                                  const vtpm_ops_domain *d, vtpm_ops_outcome outcome);
