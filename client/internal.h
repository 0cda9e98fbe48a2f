/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the project's own code (the tools, the test suites) uses on top of
 * <vtpm/client.h>: g_autoptr() for its types and the project's vtpm_error
 * from a fault.  Not installed: the public header stays free of GLib.
 */
#pragma once

#include <glib.h>

#include "vtpm/client.h"
#include "vtpm/error.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client, vtpm_client_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client_args, vtpm_client_args_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client_reply, vtpm_client_reply_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_client_replies, vtpm_client_replies_free)

/* @err from @f: its code (Timeout becomes Busy: vtpm_error knows only the
 * wire's codes) and message; returns -(code). */
int vtpm_client_error_from_fault(vtpm_error *err, const vtpm_client_fault *f);
