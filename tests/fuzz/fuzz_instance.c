/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the instance-spec validator on its own: the
 * input is one msgpack object, handed to vtpm_proto_decode_instance() as
 * args.instance would be once the envelope passed.  It must end in 0
 * with a complete instance, or BadRequest with its output untouched.
 * See fuzz.h and docs/fuzzing.md.
 */
#include <string.h>

#include "fuzzcheck.h"

static size_t
table_bytes(GHashTable *t)
{
    GHashTableIter it;
    gpointer k, v;
    size_t n = 0;

    g_hash_table_iter_init(&it, t);
    while (g_hash_table_iter_next(&it, &k, &v))
        n += strlen(k) + strlen(v);
    return n;
}

/* Read every string the instance holds: ASan reports any that still
 * points into the freed input. */
static size_t
instance_bytes(const vtpm_instance *inst)
{
    size_t n = strlen(inst->flavor->name) + strlen(inst->image->id) + strlen(inst->image->name);

    n += table_bytes(inst->flavor->extra_specs) + table_bytes(inst->image->properties);
    if (inst->name)
        n += strlen(inst->name);
    if (inst->boot.present)
        n += strlen(inst->boot.kernel ? inst->boot.kernel : inst->boot.disk);
    if (inst->secret)
        n += g_bytes_get_size(inst->secret);
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const vtpm_fault faults[] = { VTPM_FAULT_BAD_REQUEST, VTPM_FAULT_NONE };
    g_autoptr(vtpm_instance) inst = NULL;
    g_autofree char *copy = NULL;
    msgpack_unpacked up;
    vtpm_error err = { 0 };
    size_t off = 0;
    int rc;

    /* As in a request: the structural check first, then msgpack-c, which
     * must then accept the whole input (codec.c relies on that). */
    if (vtpm_proto_check(data, size, NULL, &err) < 0) {
        vtpm_fuzz_expect("vtpm_proto_check", -(int)err.code, &err, faults);
        return 0;
    }
    copy = g_memdup2(data, size);
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, copy, size, &off) != MSGPACK_UNPACK_SUCCESS || off != size)
        vtpm_fuzz_fail("msgpack-c refuses a body vtpm_proto_check passed");

    rc = vtpm_proto_decode_instance(&up.data, "args.instance", &inst, &err);
    vtpm_fuzz_expect("vtpm_proto_decode_instance", rc, &err, faults);
    if (rc < 0) {
        if (inst)
            vtpm_fuzz_fail("vtpm_proto_decode_instance wrote its output on failure");
        vtpm_fuzz_check_fault_reply(&err);
    } else {
        if (!inst->flavor || !inst->image || !inst->flavor->extra_specs || !inst->image->properties ||
            !inst->image->name || strlen(inst->uuid) != 36)
            vtpm_fuzz_fail("decoded instance is incomplete");
        if (inst->boot.present && !inst->boot.kernel == !inst->boot.disk)
            vtpm_fuzz_fail("decoded boot has both or neither of kernel and disk");
        vtpm_fuzz_check_policy(inst->flavor->extra_specs, inst->image->properties);
    }
    /* The decoded instance owns copies: it must outlive the input. */
    msgpack_unpacked_destroy(&up);
    g_clear_pointer(&copy, g_free);
    if (inst && instance_bytes(inst) == 0)
        vtpm_fuzz_fail("decoded instance holds no text at all");
    return 0;
}

#ifdef VTPM_FUZZ_REPLAY
const vtpm_fuzz_target vtpm_fuzz_replay_target = { .name = "fuzz_instance" };
#endif
