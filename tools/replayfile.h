/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vtpm-replay recording format, version 1 (docs/replay.md).
 *
 * A file is the 8-byte magic VTPM_REPLAY_MAGIC followed by frames.  A frame
 * is a 4-byte big-endian payload length, the 4-byte big-endian CRC-32
 * (IEEE, as zlib's crc32) of the payload, and the payload: one msgpack map.
 * The first frame is the header ({kind: "header", format: "vtpm-replay",
 * format_version: 1, ...}), every later one a message record.  Each frame
 * is written with one write(2) as it arrives, so a killed recorder leaves a
 * file whose frames up to the last complete one are readable; the reader
 * stops at the first frame that is truncated, fails its CRC or does not
 * hold one map, and says at which byte offset.
 *
 * Secrets are redacted before a record is built: bodies and AMQP headers
 * are walked and the value of every map key that looks like a credential
 * (vtpm_replay_secret_key) is replaced by the string VTPM_REPLAY_REDACTED.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"

#define VTPM_REPLAY_MAGIC "VTPMRPL\n"
#define VTPM_REPLAY_MAGIC_LEN 8
#define VTPM_REPLAY_FORMAT "vtpm-replay"
#define VTPM_REPLAY_FORMAT_VERSION 1
#define VTPM_REPLAY_REDACTED "<redacted>"
/* Largest frame payload: a 64 MiB body (the client's limit) plus metadata. */
#define VTPM_REPLAY_MAX_RECORD ((size_t)65 << 20)
/* Bodies nested deeper than this are kept undecoded (bin), so that a
 * record never nests deeper than msgpack-c's 32 levels. */
#define VTPM_REPLAY_MAX_BODY_DEPTH 24

/* The key rules of redaction, as listed in a header's "redacted". */
extern const char *const vtpm_replay_redaction_rules[];

/* Whether the value of map key @key (@len bytes) is a credential. */
bool vtpm_replay_secret_key(const char *key, size_t len);

/* @packed (one msgpack value) re-packed with every credential redacted,
 * each redacted path appended to @paths (char *, may be NULL); NULL when
 * it is not one msgpack value within the record limits. */
GBytes *vtpm_replay_redact(GBytes *packed, GPtrArray *paths);

/* ---- re-packing with substitutions ---------------------------------------- */

/* Called for every map value while re-packing; @path is the dotted path of
 * the value ("args.instance.vtpm.secret", "list[2].x").  Return true after
 * packing a substitute into @pk, false to have the value re-packed as it
 * is (its children are visited then). */
typedef bool (*vtpm_replay_subst_fn)(const char *path, const char *key, size_t key_len,
                                     const msgpack_object *val, msgpack_packer *pk, void *data);

/* Pack @obj into @pk, calling @fn (may be NULL) on every map value.  @root
 * is the path prefix ("" for none). */
void vtpm_replay_repack(const msgpack_object *obj, const char *root, vtpm_replay_subst_fn fn,
                        void *data, msgpack_packer *pk);

/* The contents of @sb as bytes; @sb is left empty (as after init). */
GBytes *vtpm_replay_sbuffer_bytes(msgpack_sbuffer *sb);

/* Append the packed bytes @data/@len to @pk as they are (one value). */
void vtpm_replay_pack_raw(msgpack_packer *pk, const void *data, size_t len);

/* ---- records ------------------------------------------------------------------- */

typedef struct {
    const char *kind;           /* "request" or "reply" */
    uint64_t seq;               /* 0.. in file order, header excluded */
    int64_t t_rel_us;           /* since the recording started (monotonic) */
    int64_t t_unix_us;          /* wall clock at arrival */
    const char *exchange;       /* the exchange published to ("" = default) */
    const char *routing_key;
    const char *correlation_id; /* properties, NULL when absent */
    const char *reply_to;
    const char *message_id;
    const char *content_type;
    GBytes *headers;            /* packed msgpack map of AMQP headers, or NULL */
    GBytes *body;               /* the body as received */
    bool has_request_seq;       /* replies: the request answered */
    uint64_t request_seq;
} vtpm_replay_msg;

/* One record (a frame payload) for @m: body and headers decoded and
 * redacted (an undecodable body is kept as bin and marked).  Never fails.
 * @out_nredacted (optional): how many values were redacted. */
GBytes *vtpm_replay_record_pack(const vtpm_replay_msg *m, guint *out_nredacted);

/* A record read back.  Strings are copies (NULL when absent); body and
 * root borrow from the record and live as long as it. */
typedef struct {
    char *kind;                 /* "header", "request", "reply" */
    uint64_t seq;
    int64_t t_rel_us;
    int64_t t_unix_us;
    char *exchange, *routing_key;
    char *correlation_id, *reply_to, *message_id, *content_type;
    bool has_request_seq;
    uint64_t request_seq;
    const msgpack_object *body; /* decoded body, or bin when body_raw; NULL if none */
    bool body_raw;
    GPtrArray *redacted;        /* char *: paths redacted in this record */
    msgpack_object root;        /* the whole record map */

    /* private */
    msgpack_zone *zone;
    GBytes *payload;
} vtpm_replay_record;

void vtpm_replay_record_free(vtpm_replay_record *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_replay_record, vtpm_replay_record_free)

/* Decode one frame payload.  BadRequest naming the problem when it is not
 * a record map. */
int vtpm_replay_record_parse(GBytes *payload, vtpm_replay_record **out, vtpm_error *err);

/* ---- files ------------------------------------------------------------------------ */

typedef struct vtpm_replay_writer vtpm_replay_writer;

/* Create (or truncate) @path, mode 0600, and write the magic. */
int vtpm_replay_writer_open(const char *path, vtpm_replay_writer **out, vtpm_error *err);
/* Frame and write one payload (a packed map) with a single write. */
int vtpm_replay_writer_put(vtpm_replay_writer *w, GBytes *payload, vtpm_error *err);
void vtpm_replay_writer_free(vtpm_replay_writer *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_replay_writer, vtpm_replay_writer_free)

/* A frame for @payload (length, CRC, payload), as written to files. */
GBytes *vtpm_replay_frame(GBytes *payload);

typedef struct vtpm_replay_reader vtpm_replay_reader;

/* Open @path and check the magic (BadRequest when it is not a recording). */
int vtpm_replay_reader_open(const char *path, vtpm_replay_reader **out, vtpm_error *err);
/* The next record: 0 with *out set, 1 at a clean end of file, negative when
 * the file is damaged there: @err says "damaged at offset N (record K):
 * why" and *out_offset (optional) gets N.  Reading stops after damage.
 * A header of another format or format version is refused the same way
 * (BadRequest naming the version, not "damaged"). */
int vtpm_replay_reader_next(vtpm_replay_reader *r, vtpm_replay_record **out,
                            uint64_t *out_offset, vtpm_error *err);
void vtpm_replay_reader_free(vtpm_replay_reader *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_replay_reader, vtpm_replay_reader_free)

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32(0, ...)). */
uint32_t vtpm_replay_crc32(const void *data, size_t len);
