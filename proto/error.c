/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vtpm/error.h"

static const struct {
    const char *name;
    bool retryable;
} faults[VTPM_FAULT__COUNT] = {
    [VTPM_FAULT_NONE] = { "None", false },
    [VTPM_FAULT_BAD_REQUEST] = { "BadRequest", false },
    [VTPM_FAULT_UNSUPPORTED_VERSION] = { "UnsupportedVersion", false },
    [VTPM_FAULT_UNKNOWN_METHOD] = { "UnknownMethod", false },
    [VTPM_FAULT_EXPIRED] = { "Expired", false },
    [VTPM_FAULT_INVALID_TPM_CONFIG] = { "InvalidTPMConfig", false },
    [VTPM_FAULT_FLAVOR_IMAGE_CONFLICT] = { "FlavorImageConflict", false },
    [VTPM_FAULT_TPM_UNSUPPORTED] = { "TPMUnsupported", false },
    [VTPM_FAULT_SECRET_REQUIRED] = { "SecretRequired", false },
    [VTPM_FAULT_INSTANCE_NOT_FOUND] = { "InstanceNotFound", false },
    /* Another operation holds the instance in a state that forbids this
     * one; once it finishes the same request may succeed. */
    [VTPM_FAULT_INSTANCE_CONFLICT] = { "InstanceConflict", true },
    [VTPM_FAULT_STATE_NOT_FOUND] = { "StateNotFound", false },
    [VTPM_FAULT_STATE_INTEGRITY] = { "StateIntegrity", false },
    [VTPM_FAULT_STATE_TRANSFER_FAILED] = { "StateTransferFailed", true },
    [VTPM_FAULT_HYPERVISOR_ERROR] = { "HypervisorError", true },
    [VTPM_FAULT_BUSY] = { "Busy", true },
    [VTPM_FAULT_INTERNAL] = { "Internal", false },
    /* The secret or deployment key given does not open the TPM state. */
    [VTPM_FAULT_SECRET_INVALID] = { "SecretInvalid", false },
    /* A method this worker knows but cannot carry out in this setup. */
    [VTPM_FAULT_UNSUPPORTED_OPERATION] = { "UnsupportedOperation", false },
};

const char *
vtpm_fault_name(vtpm_fault code)
{
    if ((int)code < 0 || code >= VTPM_FAULT__COUNT)
        return "Internal";
    return faults[code].name;
}

int
vtpm_fault_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 1; i < VTPM_FAULT__COUNT; i++) {
        if (strcmp(faults[i].name, name) == 0)
            return i;
    }
    return -1;
}

bool
vtpm_fault_retryable(vtpm_fault code)
{
    if ((int)code < 0 || code >= VTPM_FAULT__COUNT)
        return false;
    return faults[code].retryable;
}

/* The attribute lets clang check that callers pass a format (its
 * -Wformat-nonliteral, on in the fuzzing build, wants it on a va_list
 * forwarder). */
static int G_GNUC_PRINTF(4, 0)
error_vset(vtpm_error *err, bool final, vtpm_fault code, const char *fmt, va_list ap)
{
    if (code == VTPM_FAULT_NONE)
        code = VTPM_FAULT_INTERNAL;
    if (err) {
        err->code = code;
        err->final = final;
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
    }
    return -(int)code;
}

int
vtpm_error_set(vtpm_error *err, vtpm_fault code, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = error_vset(err, false, code, fmt, ap);
    va_end(ap);
    return rc;
}

int
vtpm_error_set_final(vtpm_error *err, vtpm_fault code, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = error_vset(err, true, code, fmt, ap);
    va_end(ap);
    return rc;
}

bool
vtpm_error_retryable(const vtpm_error *err)
{
    return err && !err->final && vtpm_fault_retryable(err->code);
}

int
vtpm_error_prefix(vtpm_error *err, const char *fmt, ...)
{
    char prefix[VTPM_ERROR_MSG_MAX];
    char old[VTPM_ERROR_MSG_MAX];
    va_list ap;

    if (!err)
        return -(int)VTPM_FAULT_INTERNAL;
    if (err->code == VTPM_FAULT_NONE)
        err->code = VTPM_FAULT_INTERNAL;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof(old));
    /* strlcat rather than snprintf("%s: %s"): truncating the tail of a
     * long message is intended, and gcc's -Wformat-truncation cannot know. */
    g_strlcpy(err->message, prefix, sizeof(err->message));
    g_strlcat(err->message, ": ", sizeof(err->message));
    g_strlcat(err->message, old, sizeof(err->message));
    return -(int)err->code;
}

void
vtpm_error_clear(vtpm_error *err)
{
    if (err) {
        err->code = VTPM_FAULT_NONE;
        err->final = false;
        err->message[0] = '\0';
    }
}
