/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fault codes of the wire protocol (docs/protocol.md, "Fault codes"),
 * on their own: the worker's errors (vtpm/error.h) and the installed
 * client library (vtpm/client.h) share them, and this header needs nothing
 * but the C compiler.  Never renumber or rename them: the numbers are part
 * of libvtpmclient's ABI and the names are on the wire.
 */
#ifndef VTPM_FAULT_H
#define VTPM_FAULT_H

typedef enum {
    VTPM_FAULT_NONE = 0,
    VTPM_FAULT_BAD_REQUEST,
    VTPM_FAULT_UNSUPPORTED_VERSION,
    VTPM_FAULT_UNKNOWN_METHOD,
    VTPM_FAULT_EXPIRED,
    VTPM_FAULT_INVALID_TPM_CONFIG,
    VTPM_FAULT_FLAVOR_IMAGE_CONFLICT,
    VTPM_FAULT_TPM_UNSUPPORTED,
    VTPM_FAULT_SECRET_REQUIRED,
    VTPM_FAULT_INSTANCE_NOT_FOUND,
    VTPM_FAULT_INSTANCE_CONFLICT,
    VTPM_FAULT_STATE_NOT_FOUND,
    VTPM_FAULT_STATE_INTEGRITY,
    VTPM_FAULT_STATE_TRANSFER_FAILED,
    VTPM_FAULT_HYPERVISOR_ERROR,
    VTPM_FAULT_BUSY,
    VTPM_FAULT_INTERNAL,
    /* Appended after the original table: numbers never change. */
    VTPM_FAULT_SECRET_INVALID,
    VTPM_FAULT_UNSUPPORTED_OPERATION,
    VTPM_FAULT__COUNT
} vtpm_fault;

#endif /* VTPM_FAULT_H */
