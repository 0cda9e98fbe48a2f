/* SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "client/headers.h"

enum { MAX_HEADER_DEPTH = 16 }; /* nested tables/arrays packed from a headers table */

static void pack_field(msgpack_packer *pk, const amqp_field_value_t *v, int depth);

static void
pack_longstr(msgpack_packer *pk, amqp_bytes_t b, bool utf8)
{
    /* rabbitmq-c leaves bytes NULL for empty strings (exchange_name "" of
     * a reply in the firehose): no pointer may reach memchr or memcpy. */
    if (!b.len) {
        utf8 ? msgpack_pack_str(pk, 0) : msgpack_pack_bin(pk, 0);
        return;
    }
    if (utf8 && g_utf8_validate_len(b.bytes, b.len, NULL) && !memchr(b.bytes, 0, b.len))
        msgpack_pack_str_with_body(pk, b.bytes, b.len);
    else
        msgpack_pack_bin_with_body(pk, b.bytes, b.len);
}

static void
pack_table(msgpack_packer *pk, const amqp_table_t *t, int depth)
{
    msgpack_pack_map(pk, t->num_entries);
    for (int i = 0; i < t->num_entries; i++) {
        pack_longstr(pk, t->entries[i].key, true);
        pack_field(pk, &t->entries[i].value, depth + 1);
    }
}

/* The broker parsed the table already, so it is well-formed; only its
 * nesting is bounded here (nil beyond MAX_HEADER_DEPTH). */
static void
pack_field(msgpack_packer *pk, const amqp_field_value_t *v, int depth)
{
    if (depth > MAX_HEADER_DEPTH) {
        msgpack_pack_nil(pk);
        return;
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        v->value.boolean ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case AMQP_FIELD_KIND_I8: msgpack_pack_int64(pk, v->value.i8); break;
    case AMQP_FIELD_KIND_U8: msgpack_pack_uint64(pk, v->value.u8); break;
    case AMQP_FIELD_KIND_I16: msgpack_pack_int64(pk, v->value.i16); break;
    case AMQP_FIELD_KIND_U16: msgpack_pack_uint64(pk, v->value.u16); break;
    case AMQP_FIELD_KIND_I32: msgpack_pack_int64(pk, v->value.i32); break;
    case AMQP_FIELD_KIND_U32: msgpack_pack_uint64(pk, v->value.u32); break;
    case AMQP_FIELD_KIND_I64: msgpack_pack_int64(pk, v->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: msgpack_pack_uint64(pk, v->value.u64); break;
    case AMQP_FIELD_KIND_F32: msgpack_pack_double(pk, v->value.f32); break;
    case AMQP_FIELD_KIND_F64: msgpack_pack_double(pk, v->value.f64); break;
    case AMQP_FIELD_KIND_DECIMAL: {
        double d = v->value.decimal.value;

        for (int i = 0; i < v->value.decimal.decimals; i++)
            d /= 10;
        msgpack_pack_double(pk, d);
        break;
    }
    case AMQP_FIELD_KIND_UTF8: pack_longstr(pk, v->value.bytes, true); break;
    case AMQP_FIELD_KIND_BYTES: pack_longstr(pk, v->value.bytes, false); break;
    case AMQP_FIELD_KIND_TABLE: pack_table(pk, &v->value.table, depth); break;
    case AMQP_FIELD_KIND_ARRAY:
        msgpack_pack_array(pk, v->value.array.num_entries);
        for (int i = 0; i < v->value.array.num_entries; i++)
            pack_field(pk, &v->value.array.entries[i], depth + 1);
        break;
    default: msgpack_pack_nil(pk); break;
    }
}

GBytes *
vtpm_client_headers_pack(const amqp_basic_properties_t *p)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t size;
    char *data;

    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_table(&pk, &p->headers, 0);
    size = sb.size; /* release() zeroes it */
    data = msgpack_sbuffer_release(&sb);
    /* sbuffer's data comes from malloc: free(), which gets the user data. */
    return g_bytes_new_with_free_func(data, size, free, data);
}
