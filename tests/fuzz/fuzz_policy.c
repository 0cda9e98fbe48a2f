/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the vTPM policy resolver: flavor extra specs
 * and image properties built from the input, then vtpm_policy_resolve(),
 * which must end in 0 with a complete device or in InvalidTPMConfig /
 * FlavorImageConflict (fuzzcheck.c), never crash.
 *
 * Input: lines.  "i<key>=<value>" is an image property, any other line
 * "<c><key>=<value>" a flavor extra spec (the first byte only says where
 * it goes); a line without '=' has the value "".  A line "-F" / "-I"
 * passes NULL for the extra specs / image properties.  As after the
 * protocol decoder (vtpm_proto_get_strmap), entries that are not UTF-8,
 * longer than its limits or a repeated key are left out.  Readable seeds
 * are in tests/fuzz/corpus/fuzz_policy/.  See fuzz.h, docs/fuzzing.md.
 */
#include <string.h>

#include "fuzzcheck.h"

static void
add(GHashTable *t, const char *line, size_t len)
{
    const char *eq = memchr(line, '=', len);
    size_t klen = eq ? (size_t)(eq - line) : len;
    size_t vlen = eq ? len - klen - 1 : 0;

    if (klen > VTPM_PROTO_MAX_KEY || vlen > VTPM_PROTO_MAX_FIELD ||
        !g_utf8_validate_len(line, klen, NULL) || (eq && !g_utf8_validate_len(eq + 1, vlen, NULL)))
        return;
    {
        g_autofree char *k = g_strndup(line, klen);

        if (strlen(k) != klen || g_hash_table_contains(t, k))
            return; /* a NUL inside, or a duplicate: the decoder refuses both */
        g_hash_table_insert(t, g_steal_pointer(&k), eq ? g_strndup(eq + 1, vlen) : g_strdup(""));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GHashTable) specs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *p = (const char *)data, *end = p + size;
    bool no_specs = false, no_props = false;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

        if (len == 2 && p[0] == '-' && (p[1] == 'F' || p[1] == 'I'))
            *(p[1] == 'F' ? &no_specs : &no_props) = true;
        else if (len > 0)
            add(p[0] == 'i' ? props : specs, p + 1, len - 1);
        if (!nl)
            break;
        p = nl + 1;
    }
    vtpm_fuzz_check_policy(no_specs ? NULL : specs, no_props ? NULL : props);
    return 0;
}

#ifdef VTPM_FUZZ_REPLAY
const vtpm_fuzz_target vtpm_fuzz_replay_target = { .name = "fuzz_policy" };
#endif
