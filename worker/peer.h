/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Asking another host's vtpmd whether it answers: a get_capabilities
 * call to its queue through the broker (docs/protocol.md), with a short
 * deadline.  evacuate (issue 18) is for dead hosts only: a vtpmd that
 * answers is alive, and its instances are moved by migration.
 */
#pragma once

#include <stdbool.h>

#include "vtpm/error.h"
#include "config.h"

/* How long an answer is waited for; a vtpmd answers get_capabilities
 * from memory, on its I/O thread, in about a millisecond. */
#define VTPM_PEER_TIMEOUT_MS 5000

/* *out: whether the vtpmd of @host answered within @timeout_ms (with a
 * result or a fault: either way it is alive).  Busy when the broker
 * ([amqp] of @cfg) cannot be reached to ask. */
int vtpm_peer_answers(const vtpm_config *cfg, const char *host, int timeout_ms, bool *out,
                      vtpm_error *err);
