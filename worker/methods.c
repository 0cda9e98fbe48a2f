/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "methods.h"

static const vtpm_method methods[] = {
    { "get_capabilities", vtpm_op_get_capabilities, false },
    { "spawn", vtpm_op_spawn, true },
    { "destroy", vtpm_op_destroy, true },
    { "power_off", vtpm_op_power_off, true },
    { "power_on", vtpm_op_power_on, true },
    { "migrate_disk_and_power_off", vtpm_op_migrate_disk_and_power_off, true },
    { "finish_migration", vtpm_op_finish_migration, true },
    { "confirm_migration", vtpm_op_confirm_migration, true },
    { "finish_revert_migration", vtpm_op_finish_revert_migration, true },
    { "shelve", vtpm_op_shelve, true },
    { "unshelve", vtpm_op_unshelve, true },
    { "rebuild", vtpm_op_rebuild, true },
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
