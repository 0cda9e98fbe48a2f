/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for what a worker does with a request body before
 * any handler touches libvirt: decode the envelope with the worker's
 * limits, then, as the instance handlers do (worker/ops/),
 * decode args.instance and args.old_flavor,
 * resolve the vTPM policy of both, and read their other args.  Every fault must be a documented
 * one, and the fault reply built from it must decode again, since that
 * is what the caller receives.  See fuzz.h and docs/fuzzing.md.
 */
#include <string.h>

#include "fuzz.h"

#include "fuzzcheck.h"

static const vtpm_fault decode_faults[] = {
    VTPM_FAULT_BAD_REQUEST, VTPM_FAULT_UNSUPPORTED_VERSION, VTPM_FAULT_NONE,
};
static const vtpm_fault spec_faults[] = { VTPM_FAULT_BAD_REQUEST, VTPM_FAULT_NONE };

/* The other args the handlers read (worker/ops/),
 * with their limits. */
static void
check_scalar_args(const vtpm_request *req)
{
    static const char *const bools[] = { "power_on", "keep_vtpm", "offload", "force" };
    static const struct {
        const char *map, *where, *key;
        size_t max;
    } strs[] = {
        { NULL, "args", "dest_host", 255 },
        { "shelved", "args.shelved", "ref", 512 },
        { "shelved", "args.shelved", "sha256", 64 },
        { "vtpm_transfer", "args.vtpm_transfer", "sha256", 64 },
    };
    vtpm_error err = { 0 };
    const msgpack_object *io = NULL;
    int rc;

    /* Methods that read only the uuid may still start the TPM with
     * args.instance.vtpm.secret (vtpm_ops_arg_secret); rekey's new one. */
    rc = vtpm_proto_get_map(&req->args, "args", "instance", false, &io, &err);
    vtpm_fuzz_expect("vtpm_proto_get_map", rc, &err, spec_faults);
    if (rc == 0 && io) {
        g_autoptr(GBytes) secret = NULL;

        rc = vtpm_proto_decode_secret(io, "args.instance", &secret, &err);
        vtpm_fuzz_expect("vtpm_proto_decode_secret", rc, &err, spec_faults);
        if (rc == 0 && secret && (g_bytes_get_size(secret) == 0 ||
                                  g_bytes_get_size(secret) > VTPM_PROTO_MAX_FIELD))
            vtpm_fuzz_fail("a secret of %zu bytes passed", g_bytes_get_size(secret));
    }
    {
        g_autoptr(GBytes) secret = NULL;

        rc = vtpm_proto_get_bin(&req->args, "args", "new_secret", false, VTPM_PROTO_MAX_FIELD,
                                &secret, &err);
        vtpm_fuzz_expect("vtpm_proto_get_bin", rc, &err, spec_faults);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bools); i++) {
        bool b;

        rc = vtpm_proto_get_bool(&req->args, "args", bools[i], false, true, &b, &err);
        vtpm_fuzz_expect("vtpm_proto_get_bool", rc, &err, spec_faults);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(strs); i++) {
        const msgpack_object *map = &req->args;
        g_autofree char *s = NULL;
        uint64_t bytes;

        if (strs[i].map) {
            rc = vtpm_proto_get_map(&req->args, "args", strs[i].map, false, &map, &err);
            vtpm_fuzz_expect("vtpm_proto_get_map", rc, &err, spec_faults);
            if (rc < 0 || !map)
                continue;
            rc = vtpm_proto_get_uint(map, strs[i].where, "bytes", false, 0, &bytes, &err);
            vtpm_fuzz_expect("vtpm_proto_get_uint", rc, &err, spec_faults);
        }
        rc = vtpm_proto_get_str(map, strs[i].where, strs[i].key, false, strs[i].max, &s, &err);
        vtpm_fuzz_expect("vtpm_proto_get_str", rc, &err, spec_faults);
        if (rc == 0 && s && strlen(s) > strs[i].max)
            vtpm_fuzz_fail("%s.%s: %zu bytes passed a limit of %zu", strs[i].where, strs[i].key,
                           strlen(s), strs[i].max);
    }
}

static void
check_args(const vtpm_request *req)
{
    g_autoptr(vtpm_instance) inst = NULL;
    g_autoptr(vtpm_flavor) old = NULL;
    const msgpack_object *oflo = NULL;
    vtpm_error err = { 0 };
    int rc = vtpm_proto_arg_instance(req, &inst, &err);

    vtpm_fuzz_expect("vtpm_proto_arg_instance", rc, &err, spec_faults);
    if (rc < 0) {
        if (inst)
            vtpm_fuzz_fail("vtpm_proto_arg_instance wrote its output on failure");
        vtpm_fuzz_check_fault_reply(&err);
        return;
    }
    if (!inst->flavor || !inst->image || !inst->flavor->extra_specs || !inst->image->properties ||
        strlen(inst->uuid) != 36)
        vtpm_fuzz_fail("decoded instance is incomplete");
    vtpm_fuzz_check_policy(inst->flavor->extra_specs, inst->image->properties);

    /* resize/migration's old flavor, checked against the same image. */
    rc = vtpm_proto_get_map(&req->args, "args", "old_flavor", false, &oflo, &err);
    vtpm_fuzz_expect("vtpm_proto_get_map", rc, &err, spec_faults);
    if (rc < 0 || !oflo)
        return;
    rc = vtpm_proto_decode_flavor(oflo, "args.old_flavor", &old, &err);
    vtpm_fuzz_expect("vtpm_proto_decode_flavor", rc, &err, spec_faults);
    if (rc == 0)
        vtpm_fuzz_check_policy(old->extra_specs, inst->image->properties);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(vtpm_request) req = NULL;
    g_autofree char *id = NULL;
    vtpm_proto_limits lim;
    vtpm_error err = { 0 };
    int rc;

    /* The worker's limits: the defaults with [worker] max_message_bytes
     * (default 1 MiB) as the body limit (worker/worker.c). */
    vtpm_proto_limits_init(&lim);
    rc = vtpm_proto_decode_request(data, size, &lim, &req, &id, &err);
    vtpm_fuzz_expect("vtpm_proto_decode_request", rc, &err, decode_faults);
    if (rc < 0) {
        if (req)
            vtpm_fuzz_fail("vtpm_proto_decode_request wrote its output on failure");
        vtpm_fuzz_check_fault_reply(&err);
        return 0;
    }
    if (!req->method || req->args.type != MSGPACK_OBJECT_MAP)
        vtpm_fuzz_fail("decoded request has no method or no args map");
    check_scalar_args(req);
    check_args(req);
    return 0;
}

#ifdef VTPM_FUZZ_REPLAY
const vtpm_fuzz_target vtpm_fuzz_replay_target = { .name = "fuzz_request" };
#endif
