/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "methods.h"

static const vtpm_method methods[] = {
    { "get_capabilities", vtpm_op_get_capabilities, false },
    { "spawn", vtpm_op_spawn, true },
    { "destroy", vtpm_op_destroy, true },
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
