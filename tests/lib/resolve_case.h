/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the table-driven tests of Nova's flavor/image rules share
 * (test_policy for the vTPM keys, test_firmware for the firmware keys): a
 * GHashTable from a NULL-ended key, value list, and the check of a case that
 * expects a fault.  Include after <cmocka.h>.
 */
#ifndef VTPM_TESTS_RESOLVE_CASE_H
#define VTPM_TESTS_RESOLVE_CASE_H

#include <string.h>

#include <glib.h>

#include "vtpm/error.h"

static inline GHashTable *
resolve_case_table(const char *const *kv)
{
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    for (size_t i = 0; kv && kv[i]; i += 2)
        g_hash_table_insert(t, g_strdup(kv[i]), g_strdup(kv[i + 1]));
    return t;
}

/* Case @name expected @fault: the resolver returned @rc and set @err; its
 * output (@size bytes at @out) must still equal @sentinel, and the message
 * must hold each of @msg (up to @nmsg, NULL-ended). */
static inline void
resolve_case_fault(const char *name, vtpm_fault fault, int rc, const vtpm_error *err,
                   const void *out, const void *sentinel, size_t size,
                   const char *const *msg, size_t nmsg)
{
    if (rc != -(int)fault || err->code != fault)
        fail_msg("%s: expected %s, got rc %d %s: %s", name, vtpm_fault_name(fault), rc,
                 vtpm_fault_name(err->code), err->message);
    if (memcmp(out, sentinel, size) != 0)
        fail_msg("%s: output written on failure", name);
    for (size_t k = 0; k < nmsg && msg[k]; k++) {
        if (!strstr(err->message, msg[k]))
            fail_msg("%s: message \"%s\" lacks \"%s\"", name, err->message, msg[k]);
    }
}

#endif
