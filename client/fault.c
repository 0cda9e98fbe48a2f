/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <string.h>

#include "client/internal.h"
#include "client/private.h"

static const char *
code_name(int code)
{
    return code == VTPM_CLIENT_TIMEOUT ? "Timeout" : vtpm_fault_name((vtpm_fault)code);
}

static bool
code_retryable(int code)
{
    return code == VTPM_CLIENT_TIMEOUT || vtpm_fault_retryable((vtpm_fault)code);
}

/* A fault made here: the code's name and retryability from the table. */
static int
made_here(vtpm_client_fault *f, int code, const char *message)
{
    if (!f)
        return -code;
    memset(f, 0, sizeof(*f));
    f->code = code;
    g_strlcpy(f->name, code_name(code), sizeof(f->name));
    g_strlcpy(f->message, message, sizeof(f->message));
    f->retryable = code_retryable(code);
    f->details.source = VTPM_CLIENT_SOURCE_CLIENT;
    return -code;
}

int
vtpm_client_fault_from_error(vtpm_client_fault *f, const vtpm_error *err)
{
    int code = err->code > VTPM_FAULT_NONE && err->code < VTPM_FAULT__COUNT
                   ? (int)err->code : VTPM_FAULT_INTERNAL;
    int rc = made_here(f, code, err->message);

    if (f)
        f->retryable = f->retryable && vtpm_error_retryable(err);
    return rc;
}

int
vtpm_client_fault_set(vtpm_client_fault *f, int code, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return made_here(f, code, msg);
}

static void
fill(char *dst, size_t size, const char *s)
{
    if (!*dst && s)
        g_strlcpy(dst, s, size);
}

void
vtpm_client_fault_where(vtpm_client_fault *f, const char *host, const char *method,
                        const char *message_id, const char *call_id)
{
    if (!f)
        return;
    fill(f->details.host, sizeof(f->details.host), host);
    fill(f->details.method, sizeof(f->details.method), method);
    fill(f->details.message_id, sizeof(f->details.message_id), message_id);
    fill(f->details.call_id, sizeof(f->details.call_id), call_id);
}

int
vtpm_client_error_from_fault(vtpm_error *err, const vtpm_client_fault *f)
{
    int code = f->code > VTPM_FAULT_NONE && f->code < VTPM_FAULT__COUNT ? f->code
               : f->code == VTPM_CLIENT_TIMEOUT ? VTPM_FAULT_BUSY
                                                : VTPM_FAULT_INTERNAL;

    /* A fault that says "do not retry" although its code usually may be. */
    if (!f->retryable && vtpm_fault_retryable((vtpm_fault)code))
        return vtpm_error_set_final(err, (vtpm_fault)code, "%s", f->message);
    return vtpm_error_set(err, (vtpm_fault)code, "%s", f->message);
}
