/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "methods.h"
#include "ops/basics.h"
#include "ops/evacuate.h"
#include "ops/identity.h"
#include "ops/livemig.h"
#include "ops/migration.h"
#include "ops/power.h"
#include "ops/rebuild.h"
#include "ops/rekeying.h"
#include "ops/shelve.h"

static const vtpm_method methods[] = {
    /* name, handler, per_instance, on_io_thread, beside, checkpoint */
    { "get_capabilities", vtpm_op_get_capabilities, false, true, false, false },
    { "spawn", vtpm_op_spawn, true, false, false, true },
    { "destroy", vtpm_op_destroy, true, false, false, false },
    { "power_off", vtpm_op_power_off, true, false, false, true },
    { "power_on", vtpm_op_power_on, true, false, false, false },
    { "migrate_disk_and_power_off", vtpm_op_migrate_disk_and_power_off, true, false, false,
      false },
    { "finish_migration", vtpm_op_finish_migration, true, false, false, true },
    { "confirm_migration", vtpm_op_confirm_migration, true, false, false, true },
    { "finish_revert_migration", vtpm_op_finish_revert_migration, true, false, false, true },
    { "shelve", vtpm_op_shelve, true, false, false, true },
    { "unshelve", vtpm_op_unshelve, true, false, false, true },
    { "rebuild", vtpm_op_rebuild, true, false, false, true },
    { "rekey", vtpm_op_rekey, true, false, false, true },
    { "check_can_live_migrate_destination", vtpm_op_check_can_live_migrate_destination, true,
      false, false, false },
    { "pre_live_migration", vtpm_op_pre_live_migration, true, false, false, false },
    { "live_migration", vtpm_op_live_migration, true, false, false, false },
    /* The TPM state arrived here: the destination checkpoints it. */
    { "post_live_migration_at_destination", vtpm_op_post_live_migration_at_destination, true,
      false, false, true },
    { "rollback_live_migration_at_destination", vtpm_op_rollback_live_migration_at_destination,
      true, false, false, false },
    /* Beside the live_migration it stops, which holds the instance. */
    { "live_migration_abort", vtpm_op_live_migration_abort, true, false, true, false },
    { "evacuate", vtpm_op_evacuate, true, false, false, true },
    { "get_vtpm_identity", vtpm_op_get_vtpm_identity, true, false, false, false },
};

const vtpm_method *
vtpm_methods_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(methods); i++) {
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    }
    return NULL;
}
