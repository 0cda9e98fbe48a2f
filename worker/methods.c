/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "methods.h"
#include "ops/basics.h"
#include "ops/livemig.h"
#include "ops/migration.h"
#include "ops/power.h"
#include "ops/rebuild.h"
#include "ops/rekeying.h"
#include "ops/shelve.h"

static const vtpm_method methods[] = {
    { "get_capabilities", vtpm_op_get_capabilities, false, true },
    { "spawn", vtpm_op_spawn, true, false },
    { "destroy", vtpm_op_destroy, true, false },
    { "power_off", vtpm_op_power_off, true, false },
    { "power_on", vtpm_op_power_on, true, false },
    { "migrate_disk_and_power_off", vtpm_op_migrate_disk_and_power_off, true, false },
    { "finish_migration", vtpm_op_finish_migration, true, false },
    { "confirm_migration", vtpm_op_confirm_migration, true, false },
    { "finish_revert_migration", vtpm_op_finish_revert_migration, true, false },
    { "shelve", vtpm_op_shelve, true, false },
    { "unshelve", vtpm_op_unshelve, true, false },
    { "rebuild", vtpm_op_rebuild, true, false },
    { "rekey", vtpm_op_rekey, true, false },
    { "check_can_live_migrate_destination", vtpm_op_check_can_live_migrate_destination, true,
      false },
    { "pre_live_migration", vtpm_op_pre_live_migration, true, false },
    { "live_migration", vtpm_op_live_migration, true, false },
    { "post_live_migration_at_destination", vtpm_op_post_live_migration_at_destination, true,
      false },
    { "rollback_live_migration_at_destination", vtpm_op_rollback_live_migration_at_destination,
      true, false },
    /* Beside the live_migration it stops, which holds the instance. */
    { "live_migration_abort", vtpm_op_live_migration_abort, true, false, true },
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
