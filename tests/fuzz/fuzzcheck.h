/* SPDX-License-Identifier: Apache-2.0 */
/* Checks the request, instance and policy fuzz targets share. */
#pragma once

#include <glib.h>

#include "fuzz.h"
#include "policy.h"
#include "vtpm/proto.h"

/* The fault reply @err becomes must decode again as the same fault: it is
 * what the caller receives. */
void vtpm_fuzz_check_fault_reply(const vtpm_error *err);
/* vtpm_policy_resolve(@specs, @props) must end in 0 with a complete
 * device, or InvalidTPMConfig / FlavorImageConflict with its output
 * untouched. */
void vtpm_fuzz_check_policy(GHashTable *specs, GHashTable *props);
