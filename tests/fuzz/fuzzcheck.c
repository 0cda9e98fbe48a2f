/* SPDX-License-Identifier: Apache-2.0 */
#include "fuzzcheck.h"

void
vtpm_fuzz_check_fault_reply(const vtpm_error *err)
{
    g_autoptr(GBytes) body = vtpm_proto_reply_fault(err);
    g_autoptr(vtpm_reply) rep = NULL;
    vtpm_error e2 = { 0 };
    gsize len;
    const void *p = g_bytes_get_data(body, &len);

    if (vtpm_proto_decode_reply(p, len, NULL, &rep, &e2) < 0)
        vtpm_fuzz_fail("fault reply for '%s' does not decode: %s", err->message, e2.message);
    if (rep->ok || rep->fault != err->code)
        vtpm_fuzz_fail("fault reply for '%s' decodes as another fault (%s)", err->message,
                       rep->fault_code);
}

void
vtpm_fuzz_check_policy(GHashTable *specs, GHashTable *props)
{
    static const vtpm_fault faults[] = {
        VTPM_FAULT_INVALID_TPM_CONFIG, VTPM_FAULT_FLAVOR_IMAGE_CONFLICT, VTPM_FAULT_NONE,
    };
    vtpm_device dev = { (vtpm_version)77, (vtpm_model)77, (vtpm_secret_security)77 };
    vtpm_error err = { 0 };
    const char *traits[VTPM_POLICY_MAX_TRAITS];
    size_t want;
    int rc = vtpm_policy_resolve(specs, props, &dev, &err);

    vtpm_fuzz_expect("vtpm_policy_resolve", rc, &err, faults);
    if (rc < 0) {
        if ((int)dev.version != 77 || (int)dev.model != 77 || (int)dev.secret_security != 77)
            vtpm_fuzz_fail("vtpm_policy_resolve wrote its output on failure");
        vtpm_fuzz_check_fault_reply(&err);
        return;
    }
    want = dev.version == VTPM_VERSION_NONE ? 0u : 3u + (size_t)__builtin_popcount(dev.pcr_banks);
    if (dev.pcr_banks >> VTPM_PCR__COUNT || (dev.pcr_banks && dev.version != VTPM_VERSION_2_0))
        vtpm_fuzz_fail("resolved device has PCR banks out of range or without TPM 2.0");
    if (vtpm_policy_required_traits(&dev, traits) != want)
        vtpm_fuzz_fail("resolved device has no complete trait set");
    for (size_t i = 0; i < want; i++) {
        if (!traits[i])
            vtpm_fuzz_fail("resolved device lacks trait %zu", i);
    }
    if (!vtpm_model_str(dev.model) || !vtpm_secret_security_str(dev.secret_security))
        vtpm_fuzz_fail("resolved device has an out-of-range model or secret security");
}
