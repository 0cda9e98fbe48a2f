/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <msgpack.h>

#include "jsonargs.h"
#include "mpjson.h"

GBytes *
vt_json_args(bool squote, const char *fmt, ...)
{
    g_autofree char *text = NULL;
    msgpack_sbuffer sb;
    vtpm_error err = { 0 };
    GBytes *out;
    va_list ap;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (squote)
        g_strdelimit(text, "'", '"');
    msgpack_sbuffer_init(&sb);
    if (vtpm_mpjson_from_string(text, -1, &sb, &err) < 0)
        fail_msg("test args are not JSON: %s\n%s", err.message, text);
    out = g_bytes_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return out;
}
