/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A new TPM for an instance, made by vtpmd with the deployment's EK CA
 * (worker/ek.h) before the domain that uses it is defined, so that its
 * identity record goes into the definition (ops/domain.h).  Without a CA
 * ([vtpm] ek_ca_cert unset) nothing is made here: libvirt makes the TPM
 * at its first start with its host-local CA, and that TPM has no record.
 */
#pragma once

#include <stdbool.h>

#include "vtpm/error.h"
#include "vtpm/proto.h"
#include "ops/domain.h"
#include "worker.h"

/*
 * For a new TPM of @d (keyed already: vtpm_custody_plan_key), make its
 * state in the instance's state dir, which must not exist, and rebuild
 * d->xml with its identity.  The state is made aside and renamed into
 * place whole.  With @adoptable, how it is keyed and its identity are
 * recorded next to the kept copies first, as destroy(keep_vtpm) records
 * them, so that a spawn retried after a crash before the domain was
 * defined adopts this very TPM (vtpm_custody_read_kept); the caller drops
 * the record once the domain is defined.
 */
int vtpm_manufacture_fresh(vtpm_worker *w, virConnectPtr conn, const vtpm_instance *inst,
                           vtpm_ops_domain *d, bool adoptable, vtpm_error *err);
