/* SPDX-License-Identifier: Apache-2.0 */
/* Request args written as JSON in the integration tests (tools/mpjson.h:
 * bytes as {"$bin": base64}), packed as the msgpack map a caller sends. */
#pragma once

#include <stdbool.h>
#include <glib.h>

/* printf @fmt, with ' standing for " when @squote (JSON inside C strings
 * without escapes); fails the test when the text is not JSON. */
GBytes *vt_json_args(bool squote, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
