/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Errors and wire-level fault codes.
 *
 * Every fallible function in vtpmd returns 0 on success or a negative value
 * (-(int)code) on failure and fills a caller-provided vtpm_error.  Only the
 * top level (a request handler's reply, a tool's main) turns the error into
 * a log line or a reply fault.  The fault codes are part of the wire
 * protocol (docs/protocol.md): never renumber or rename them.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

#include "vtpm/fault.h"

#define VTPM_ERROR_MSG_MAX 512

/* Fixed-size so that filling an error never allocates and never fails. */
typedef struct {
    vtpm_fault code;
    char message[VTPM_ERROR_MSG_MAX];
    /* This fault is final although its code usually is not: the same
     * request can never succeed (InstanceConflict with an instance of
     * another spec, where the code's usual cause is an overlapping
     * operation).  The reply then says retryable: false.  Last, so that
     * { code, "message" } initializers keep their meaning. */
    bool final;
} vtpm_error;

/* Wire name ("BadRequest", ...); "Internal" for out-of-range values. */
const char *vtpm_fault_name(vtpm_fault code);

/* Inverse of vtpm_fault_name; returns -1 for an unknown name. */
int vtpm_fault_from_name(const char *name);

/* Whether a caller may retry the same request unchanged and expect a
 * different outcome (transient conditions only). */
bool vtpm_fault_retryable(vtpm_fault code);

/* Fill @err (may be NULL) and return -(int)@code, so callers can write
 * `return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "...")`.
 * The message is truncated to VTPM_ERROR_MSG_MAX - 1 bytes.  The error
 * is not final. */
int vtpm_error_set(vtpm_error *err, vtpm_fault code, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* vtpm_error_set(), and the error is final: no retry of the same request
 * can succeed, whatever the code's usual cause. */
int vtpm_error_set_final(vtpm_error *err, vtpm_fault code, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* What a reply carrying @err says as fault.retryable: the code's rule
 * (vtpm_fault_retryable), false for a final error. */
bool vtpm_error_retryable(const vtpm_error *err);

/* Prefix an existing message: "prefix: old message". Returns -(int)code. */
int vtpm_error_prefix(vtpm_error *err, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

void vtpm_error_clear(vtpm_error *err);
