/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vtpmd wire protocol, version 1 (docs/protocol.md).
 *
 * Bodies are msgpack.  Decoding happens in two passes: vtpm_proto_check()
 * walks the raw bytes and enforces every limit (size, nesting, string and
 * container lengths, element count, a container header never claims more
 * entries than bytes remain) *before* msgpack-c sees the data, because
 * msgpack-c allocates count * sizeof(msgpack_object) for a container header
 * up front.  Only then is msgpack_unpack() run.
 *
 * Ownership: msgpack-c's str/bin objects point into the input buffer.  A
 * vtpm_request therefore keeps its own copy of the body alive together with
 * the msgpack zone; `args` borrows from both and is valid exactly as long as
 * the request.  Everything the typed decoders (instance, flavor, ...) return
 * is copied out and owned by the returned struct, so it may outlive the
 * request.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>
#include <msgpack.h>

#include "vtpm/error.h"

#define VTPM_PROTO_VERSION 1
#define VTPM_PROTO_CONTENT_TYPE "application/msgpack"

/* Limits a peer cannot exceed.  Defaults in vtpm_proto_limits_init(). */
typedef struct {
    size_t max_body;      /* whole body, bytes (default 1 MiB) */
    unsigned max_depth;   /* container nesting (default 16) */
    size_t max_str;       /* one str, bytes (default 64 KiB) */
    size_t max_bin;       /* one bin, bytes (default 64 KiB) */
    size_t max_container; /* entries of one map / array (default 4096) */
    size_t max_objects;   /* objects in the whole body (default 65536) */
} vtpm_proto_limits;

void vtpm_proto_limits_init(vtpm_proto_limits *lim);

/* Longest string accepted for ordinary scalar fields (names, ids, keys and
 * values of extra specs / image properties, paths). */
#define VTPM_PROTO_MAX_FIELD 4096
/* str -> str maps (flavor extra_specs, image properties): at most this many
 * entries, keys of at most VTPM_PROTO_MAX_KEY bytes, values of at most
 * VTPM_PROTO_MAX_FIELD bytes. */
#define VTPM_PROTO_MAX_STRMAP 256
#define VTPM_PROTO_MAX_KEY 255

/* Structural check of one msgpack object filling exactly @len bytes. */
int vtpm_proto_check(const void *data, size_t len, const vtpm_proto_limits *lim,
                     vtpm_error *err);

/* ---- request envelope -------------------------------------------------- */

typedef struct vtpm_request {
    char *method;
    char *request_id; /* context.request_id, NULL if absent */
    char *user_id;    /* context.user_id, NULL if absent */
    char *project_id; /* context.project_id, NULL if absent */
    bool has_deadline;
    uint64_t deadline_ms; /* Unix epoch milliseconds */
    msgpack_object args;  /* always a map (empty if absent); borrowed */

    /* private: what args borrows from */
    msgpack_zone *zone;
    char *body;
    size_t body_len;
} vtpm_request;

/*
 * Decode and validate a request envelope.  Faults: BadRequest for anything
 * undecodable, oversized or mistyped; UnsupportedVersion when `v` is an
 * integer other than 1.  When the envelope is readable enough, @out_id
 * (optional) receives context.request_id even on failure so that the
 * caller can log it; the caller frees it.
 */
int vtpm_proto_decode_request(const void *data, size_t len, const vtpm_proto_limits *lim,
                              vtpm_request **out, char **out_id, vtpm_error *err);
void vtpm_request_free(vtpm_request *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_request, vtpm_request_free)

/* ---- typed accessors on a msgpack map --------------------------------- */
/*
 * @where names the map in fault messages ("args", "args.instance.flavor");
 * messages read e.g. "args.power_on: expected bool, got str".
 * A key that is absent or nil counts as absent: when @required is false,
 * the default (or NULL) is stored and 0 returned.  Output parameters are
 * untouched on failure.
 */
/* The value of @key; NULL when @map is not a map, or the key is absent or
 * nil.  The first of duplicate keys wins. */
const msgpack_object *vtpm_proto_map_get(const msgpack_object *map, const char *key);

int vtpm_proto_get_bool(const msgpack_object *map, const char *where, const char *key,
                        bool required, bool dflt, bool *out, vtpm_error *err);
int vtpm_proto_get_uint(const msgpack_object *map, const char *where, const char *key,
                        bool required, uint64_t dflt, uint64_t *out, vtpm_error *err);
/* Copies; rejects embedded NUL and strings longer than @max_len bytes. */
int vtpm_proto_get_str(const msgpack_object *map, const char *where, const char *key,
                       bool required, size_t max_len, char **out, vtpm_error *err);
/* bin only (the secret); NULL when absent and optional. */
int vtpm_proto_get_bin(const msgpack_object *map, const char *where, const char *key,
                       bool required, size_t max_len, GBytes **out, vtpm_error *err);
/* Borrowed pointer to a nested map; NULL when absent and optional. */
int vtpm_proto_get_map(const msgpack_object *map, const char *where, const char *key,
                       bool required, const msgpack_object **out, vtpm_error *err);
/* A map of str -> str copied into a new GHashTable (g_free keys/values);
 * an empty table when absent and optional. */
int vtpm_proto_get_strmap(const msgpack_object *map, const char *where, const char *key,
                          bool required, GHashTable **out, vtpm_error *err);

/* ---- instance spec ----------------------------------------------------- */

typedef struct {
    char *name;
    uint64_t vcpus;
    uint64_t memory_mb;
    GHashTable *extra_specs; /* str -> str, never NULL */
} vtpm_flavor;

typedef struct {
    char *id;
    char *name;             /* "" when absent */
    GHashTable *properties; /* str -> str, never NULL */
} vtpm_image;

typedef struct {
    bool present;
    char *kernel;  /* direct kernel boot ... */
    char *initrd;  /* optional */
    char *cmdline; /* optional */
    char *disk;    /* ... or a disk image; never both */
} vtpm_boot;

typedef struct {
    char uuid[37];    /* canonical, lower case */
    char *name;       /* NULL when absent */
    vtpm_flavor *flavor;
    vtpm_image *image;
    vtpm_boot boot;
    GBytes *secret;   /* instance.vtpm.secret, NULL when absent */
} vtpm_instance;

/* Take @data (g_malloc'ed, @len bytes) into a GBytes that overwrites it
 * with zeros before freeing it: for secrets, which must not linger in freed
 * heap memory. */
GBytes *vtpm_bytes_new_wiped(gpointer data, gsize len);

/* Canonical 36-character UUID checked with libuuid; @out gets the lower
 * case form.  Anything else (braces, no dashes, upper-case is accepted and
 * lowered) is BadRequest. */
int vtpm_proto_parse_uuid(const char *s, const char *where, char out[37], vtpm_error *err);

/* Whether @s is exactly @len lower-case hex digits: a digest as vtpmd
 * writes it (a sha256 is 64). */
bool vtpm_proto_is_lower_hex(const char *s, size_t len);

/* A host name that goes into a libvirt URI ([libvirt] migration_uri_template):
 * 1..255 of A-Z a-z 0-9 . - _ : (IPv6 literals).  Anything else ('/', '?',
 * '@', '%', spaces, controls) could change what the URI names, so it is
 * BadRequest naming @where. */
int vtpm_proto_check_host(const char *h, const char *where, vtpm_error *err);

/* A method name as a request carries it: 1..64 of [a-z_]; BadRequest
 * ("method: ...") otherwise. */
int vtpm_proto_check_method(const char *m, vtpm_error *err);

/* A worker's host name ([worker] host; its requests go to <topic>.<host>):
 * at most 255 of A-Z a-z 0-9 . _ -.  NULL when it is one, else why (the
 * caller frees).  Emptiness is the caller's to judge. */
char *vtpm_proto_worker_host_problem(const char *h);

int vtpm_proto_decode_flavor(const msgpack_object *obj, const char *where,
                             vtpm_flavor **out, vtpm_error *err);
int vtpm_proto_decode_instance(const msgpack_object *obj, const char *where,
                               vtpm_instance **out, vtpm_error *err);
/* @obj.vtpm.secret of an instance map (@where names @obj): a wiped-on-free
 * GBytes of 1..VTPM_PROTO_MAX_FIELD bytes, NULL when absent.  For methods
 * that read only the uuid of args.instance but may start the TPM. */
int vtpm_proto_decode_secret(const msgpack_object *obj, const char *where, GBytes **out,
                             vtpm_error *err);
/* args.instance of a request. */
int vtpm_proto_arg_instance(const vtpm_request *req, vtpm_instance **out, vtpm_error *err);

void vtpm_flavor_free(vtpm_flavor *f);
void vtpm_image_free(vtpm_image *img);
void vtpm_instance_free(vtpm_instance *inst);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_flavor, vtpm_flavor_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_image, vtpm_image_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_instance, vtpm_instance_free)

/* ---- replies ------------------------------------------------------------ */

/* {v:1, ok:true, result:<@result>}; @result must be one packed msgpack map
 * (NULL/0 means an empty map). */
GBytes *vtpm_proto_reply_ok(const void *result, size_t result_len);
/* {v:1, ok:false, fault:{code, message, retryable}} */
GBytes *vtpm_proto_reply_fault(const vtpm_error *err);

typedef struct vtpm_reply {
    bool ok;
    msgpack_object result; /* map when ok; borrowed */
    vtpm_fault fault;      /* when !ok; VTPM_FAULT_INTERNAL for unknown names */
    char *fault_code;      /* the name as received */
    char *fault_message;
    bool retryable;

    msgpack_zone *zone;
    char *body;
    size_t body_len;
} vtpm_reply;

int vtpm_proto_decode_reply(const void *data, size_t len, const vtpm_proto_limits *lim,
                            vtpm_reply **out, vtpm_error *err);
void vtpm_reply_free(vtpm_reply *rep);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vtpm_reply, vtpm_reply_free)

/* ---- packing helpers ---------------------------------------------------- */

/* str, or nil when @s is NULL */
int vtpm_pack_str(msgpack_packer *pk, const char *s);
int vtpm_pack_kv_str(msgpack_packer *pk, const char *key, const char *val);
int vtpm_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val);
int vtpm_pack_kv_bool(msgpack_packer *pk, const char *key, bool val);

/* Request envelope for clients: {v:1, method, args:<@args packed map or
 * empty>, context:{request_id}, deadline_ms?}.  @deadline_ms 0 = none. */
GBytes *vtpm_proto_request_new(const char *method, const void *args, size_t args_len,
                               const char *request_id, uint64_t deadline_ms);
