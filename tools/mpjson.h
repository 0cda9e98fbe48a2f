/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON <-> msgpack for the command-line tools (docs/protocol.md, "Binary
 * fields in JSON tools").
 *
 * JSON has no byte strings, so a msgpack bin is written as an object with
 * the single member "$bin" holding standard, padded base64:
 * {"$bin": "AAEC"}.  Everything else maps one to one: object <-> map,
 * array <-> array, string <-> str, integer <-> int (non-negative -> uint),
 * other numbers <-> float64, true/false <-> bool, null <-> nil.
 *
 * msgpack values JSON cannot carry are shown, not round-tripped: ext and
 * non-finite floats become null, unsigned integers above INT64_MAX become
 * a decimal string, non-str map keys become their compact JSON text, and
 * invalid UTF-8 in str is replaced by U+FFFD.
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <msgpack.h>

#include "vtpm/error.h"

/* Containers nested deeper than this are refused (BadRequest). */
#define VTPM_MPJSON_MAX_DEPTH 32

/* Pack @node into @pk.  BadRequest for invalid base64 in a "$bin" object
 * or nesting beyond VTPM_MPJSON_MAX_DEPTH.  On failure @pk may have
 * received part of the value. */
int vtpm_mpjson_from_json(JsonNode *node, msgpack_packer *pk, vtpm_error *err);

/* Parse @json (@len bytes, or NUL-terminated when @len < 0) and append the
 * packed value to @out, which the caller initialised; @out is untouched on
 * failure.  BadRequest with json-glib's message when the text is not JSON. */
int vtpm_mpjson_from_string(const char *json, gssize len, msgpack_sbuffer *out, vtpm_error *err);

/* A new JSON tree for @obj (never NULL; free with json_node_unref). */
JsonNode *vtpm_mpjson_to_json(const msgpack_object *obj);

/* JSON text for @obj, indented when @pretty; g_free() it. */
char *vtpm_mpjson_to_string(const msgpack_object *obj, bool pretty);
