/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvtpmclient as a control plane uses it: <vtpm/client.h> only, linked
 * against libvtpmclient.so (so only what its version script exports can be
 * called), against the real broker of tests/integration.sh (with its TLS
 * listener: VT_RMQ_TLS=1) and real vtpmd workers.
 *
 * The group's two workers run on libvirt's test:///default driver (no TPM
 * state is involved: get_capabilities, spawn without a vTPM, power_off,
 * destroy); the retry test starts a worker of its own on the real libvirtd
 * of host "a" and stops and starts that libvirtd under it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>
#include <msgpack.h>

#include "lib/harness.h"
#include "vtpm/client.h"

#define H "a"
#define CALL_MS 60000
#define MANY 200
#define THREADS 4
#define THREAD_CALLS 50

static vt_vtpmd *wa, *wb; /* the group's workers (test:///default) */

/* ---- helpers ----------------------------------------------------------- */

static vtpm_client *
connect_url(const char *url)
{
    vtpm_client_options o = { .url = url };
    vtpm_client *c = NULL;
    vtpm_client_fault f;

    if (vtpm_client_connect(&o, &c, &f) < 0)
        fail_msg("connect: %s: %s", f.name, f.message);
    return c;
}

static vtpm_client *
connect_default(void)
{
    return connect_url(vt_env("VT_AMQP_URL"));
}

/* VT_AMQP_URL's port. */
static char *
broker_port(void)
{
    const char *url = vt_env("VT_AMQP_URL");
    const char *colon = strrchr(url, ':');

    return g_strndup(colon + 1, strcspn(colon + 1, "/"));
}

/* The result map of an ok reply, unpacked into @up. */
static const msgpack_object *
result_of(const vtpm_client_reply *r, msgpack_unpacked *up)
{
    const void *data = NULL;
    size_t len = 0, off = 0;
    vtpm_client_fault f;

    if (vtpm_client_reply_result(r, &data, &len, &f) < 0)
        fail_msg("reply %s is a fault: %s: %s", vtpm_client_reply_id(r), f.name, f.message);
    msgpack_unpacked_init(up);
    assert_int_equal(msgpack_unpack_next(up, data, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    assert_int_equal(up->data.type, MSGPACK_OBJECT_MAP);
    return &up->data;
}

/* get_capabilities on @host: its result's host must be @host. */
static void
assert_caps_of(vtpm_client *c, const char *host)
{
    g_autofree char *got = NULL;
    vtpm_client_reply *r = NULL;
    vtpm_client_call_opts o = { .timeout_ms = CALL_MS };
    vtpm_client_fault f;
    msgpack_unpacked up;

    if (vtpm_client_call(c, host, "get_capabilities", NULL, 0, &o, &r, &f) < 0)
        fail_msg("get_capabilities on %s: %s: %s", host, f.name, f.message);
    got = vt_obj_str(result_of(r, &up), "host");
    assert_non_null(got);
    assert_string_equal(got, host);
    msgpack_unpacked_destroy(&up);
    vtpm_client_reply_free(r);
}

/* {instance: {uuid: @uuid}} */
static vtpm_client_args *
uuid_args(const char *uuid)
{
    vtpm_client_args *a = vtpm_client_args_new();

    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "instance");
    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "uuid");
    vtpm_client_args_str(a, uuid);
    return a;
}

/* @method {instance: {uuid}} on @host: the return value, @f filled. */
static int
call_uuid(vtpm_client *c, const char *host, const char *method, const char *uuid,
          const vtpm_client_call_opts *o, vtpm_client_reply **out, vtpm_client_fault *f)
{
    vtpm_client_args *a = uuid_args(uuid);
    const void *data = NULL;
    size_t len = 0;
    int rc = vtpm_client_args_data(a, &data, &len, f);

    if (rc == 0)
        rc = vtpm_client_call(c, host, method, data, len, o, out, f);
    vtpm_client_args_free(a);
    return rc;
}

static void
assert_fault(int rc, const vtpm_client_fault *f, int code, vtpm_client_source source,
             bool retryable, const char *fragment)
{
    if (rc != -code || f->code != code || f->details.source != source ||
        f->retryable != retryable || (fragment && !strstr(f->message, fragment)))
        fail_msg("expected %d (source %d, retryable %d, \"%s\"), got %d: code %d %s (source %d, "
                 "retryable %d): %s",
                 code, source, retryable, fragment ? fragment : "", rc, f->code, f->name,
                 f->details.source, f->retryable, f->message);
}

/* ---- connecting ----------------------------------------------------------- */

static void
test_connect_forms(void **state)
{
    g_autofree char *port = broker_port();
    g_autofree char *rabbit = g_strdup_printf("rabbit://guest:guest@127.0.0.1:%s/", port);
    g_autofree char *multi =
        g_strdup_printf("rabbit://guest:guest@127.0.0.1:1,guest:guest@127.0.0.1:%s/", port);
    g_autofree char *second = g_strdup_printf("amqp://127.0.0.1:%s/%%2F", port);
    const char *const urls[] = { vt_env("VT_AMQP_URL"), rabbit, multi };

    for (size_t i = 0; i < G_N_ELEMENTS(urls); i++) {
        vtpm_client *c = connect_url(urls[i]);

        /* Never the credentials. */
        assert_null(strstr(vtpm_client_broker(c), "guest"));
        assert_caps_of(c, wa->worker_host);
        if (urls[i] == multi)
            assert_string_equal(vtpm_client_broker(c), second);
        vtpm_client_free(c);
    }
    {
        /* A dead node first, the broker in [amqp] failover_urls. */
        const char *const failover[] = { vt_env("VT_AMQP_URL"), NULL };
        vtpm_client_options o = { .url = "amqp://guest:guest@127.0.0.1:1/",
                                  .failover_urls = failover };
        vtpm_client *c = NULL;
        vtpm_client_fault f;

        assert_int_equal(vtpm_client_connect(&o, &c, &f), 0);
        assert_string_equal(vtpm_client_broker(c), second);
        assert_caps_of(c, wb->worker_host);
        vtpm_client_free(c);
    }
}

static void
test_connect_refused(void **state)
{
    vtpm_client *c = NULL;
    vtpm_client_fault f;
    vtpm_client_options dead = { .url = "amqp://guest:guest@127.0.0.1:1,guest:guest@127.0.0.1:2/" };
    vtpm_client_options port = { .url = "amqp://user:s3cr3t@127.0.0.1:99999/" };
    vtpm_client_options scheme = { .url = "http://127.0.0.1/" };
    vtpm_client_options tls = { .url = "amqps://127.0.0.1/" };
    vtpm_client_options half = { .url = vt_env("VT_AMQP_URL"), .cert = "/nonexistent.pem" };
    vtpm_client_options topic = { .url = vt_env("VT_AMQP_URL"), .topic = "" };
    vtpm_client_options flags = { .url = vt_env("VT_AMQP_URL"), .flags = 1u << 7 };

    /* Unreachable: Busy, naming every node. */
    assert_fault(vtpm_client_connect(&dead, &c, &f), &f, VTPM_FAULT_BUSY,
                 VTPM_CLIENT_SOURCE_CLIENT, true, "127.0.0.1:1: connect: ");
    assert_non_null(strstr(f.message, "127.0.0.1:2: connect: "));
    assert_string_equal(f.name, "Busy");
    /* Unusable: BadRequest naming the part, never the password. */
    assert_fault(vtpm_client_connect(&port, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "port");
    assert_null(strstr(f.message, "s3cr3t"));
    assert_fault(vtpm_client_connect(&scheme, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "scheme 'http'");
    assert_fault(vtpm_client_connect(&tls, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "CA");
    assert_fault(vtpm_client_connect(&half, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, NULL);
    assert_fault(vtpm_client_connect(&topic, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "topic: empty");
    assert_fault(vtpm_client_connect(&flags, &c, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "flags: unknown 0x80");
    assert_null(c);
}

/* amqps:// and rabbits:// as vtpmd reads them: the peer always verified. */
static void
test_connect_tls(void **state)
{
    const char *amqps = g_getenv("VT_AMQPS_URL");
    const char *dir = g_getenv("VT_TLS_DIR");
    g_autofree char *ca = NULL, *other = NULL, *cert = NULL, *key = NULL, *rabbits = NULL;
    vtpm_client *c = NULL;
    vtpm_client_fault f;

    if (!amqps || !dir)
        fail_msg("VT_AMQPS_URL and VT_TLS_DIR are not set: run with VT_RMQ_TLS=1");
    ca = g_build_filename(dir, "ca.pem", NULL);
    other = g_build_filename(dir, "other-ca.pem", NULL);
    cert = g_build_filename(dir, "client.pem", NULL);
    key = g_build_filename(dir, "client.key", NULL);
    rabbits = g_strdup_printf("rabbits://guest:guest@localhost:%s/", g_getenv("VT_RMQ_TLS_PORT"));
    {
        vtpm_client_options o[] = {
            { .url = amqps, .cacert = ca },
            { .url = rabbits, .cacert = ca },
            { .url = amqps, .cacert = ca, .cert = cert, .key = key },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(o); i++) {
            if (vtpm_client_connect(&o[i], &c, &f) < 0)
                fail_msg("TLS form %zu: %s: %s", i, f.name, f.message);
            assert_true(g_str_has_prefix(vtpm_client_broker(c), "amqps://localhost:"));
            assert_caps_of(c, wa->worker_host);
            vtpm_client_free(c);
            c = NULL;
        }
    }
    {
        /* A CA that did not sign the broker's certificate. */
        vtpm_client_options o = { .url = amqps, .cacert = other };

        assert_fault(vtpm_client_connect(&o, &c, &f), &f, VTPM_FAULT_BUSY,
                     VTPM_CLIENT_SOURCE_CLIENT, true, "connect");
        assert_null(c);
    }
}

/* ---- calls ------------------------------------------------------------------- */

static void
test_call_ok(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *uuid = vt_uuid();
    vtpm_client_call_opts o = { .timeout_ms = CALL_MS, .request_id = "wt-client-ok" };
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;
    msgpack_unpacked up;
    const msgpack_object *res;
    size_t len = 0;

    assert_caps_of(c, wa->worker_host);
    assert_caps_of(c, wb->worker_host);
    /* destroy of an instance nobody has: ok, nothing destroyed. */
    if (call_uuid(c, wa->worker_host, "destroy", uuid, &o, &r, &f) < 0)
        fail_msg("destroy: %s: %s", f.name, f.message);
    res = result_of(r, &up);
    assert_false(vt_obj_bool(res, "destroyed"));
    assert_non_null(vtpm_client_reply_body(r, &len));
    assert_true(len > 0);
    assert_true(vtpm_client_reply_received_us(r) > 0);
    assert_non_null(vtpm_client_reply_id(r));
    msgpack_unpacked_destroy(&up);
    vtpm_client_reply_free(r);
    /* NULL @out: the reply is freed. */
    assert_int_equal(vtpm_client_call(c, wb->worker_host, "get_capabilities", NULL, 0, NULL,
                                      NULL, &f),
                     0);
    vtpm_client_free(c);
}

static void
test_worker_faults(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *uuid = vt_uuid();
    const char *host = wa->worker_host;
    vtpm_client_call_opts o = { .timeout_ms = CALL_MS, .message_id = "wt-client-faults" };
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;
    int rc;

    rc = call_uuid(c, host, "spawn", "not-a-uuid", &o, &r, &f);
    assert_fault(rc, &f, VTPM_FAULT_BAD_REQUEST, VTPM_CLIENT_SOURCE_WORKER, false,
                 "args.instance");
    assert_string_equal(f.name, "BadRequest");
    assert_string_equal(f.details.host, host);
    assert_string_equal(f.details.method, "spawn");
    assert_string_equal(f.details.message_id, "wt-client-faults");
    assert_string_equal(f.details.received_code, "");
    assert_true(strlen(f.details.call_id) > 0);

    rc = vtpm_client_call(c, host, "no_such_method", NULL, 0, NULL, &r, &f);
    assert_fault(rc, &f, VTPM_FAULT_UNKNOWN_METHOD, VTPM_CLIENT_SOURCE_WORKER, false, NULL);
    assert_string_equal(f.name, "UnknownMethod");

    rc = call_uuid(c, host, "power_off", uuid, NULL, &r, &f);
    assert_fault(rc, &f, VTPM_FAULT_INSTANCE_NOT_FOUND, VTPM_CLIENT_SOURCE_WORKER, false, uuid);
    assert_string_equal(f.name, "InstanceNotFound");
    assert_null(r); /* untouched on failure */
    vtpm_client_free(c);
}

static void
test_deadline_expired(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *uuid = vt_uuid();
    vtpm_client_call_opts o = { .deadline_ms = (uint64_t)(g_get_real_time() / 1000 - 1000) };
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;

    assert_fault(call_uuid(c, wa->worker_host, "destroy", uuid, &o, &r, &f), &f,
                 VTPM_FAULT_EXPIRED, VTPM_CLIENT_SOURCE_WORKER, false, NULL);
    assert_string_equal(f.name, "Expired");
    vtpm_client_free(c);
}

/* Refused before anything is sent: BadRequest naming the argument. */
static void
test_bad_arguments(void **state)
{
    vtpm_client *c = connect_default();
    vtpm_client_call_opts dup = { .call_id = "wt-dup" };
    vtpm_client_call_opts long_id = { .message_id = NULL };
    vtpm_client_fault f;
    char long_mid[300];
    static const unsigned char not_map[] = { 0xa3, 'a', 'b', 'c' };
    static const unsigned char truncated[] = { 0x81, 0xa1, 'k' };
    struct {
        const char *host, *method;
        const void *args;
        size_t len;
        const vtpm_client_call_opts *o;
        const char *fragment;
    } cases[] = {
        { "bad/host", "get_capabilities", NULL, 0, NULL, "host: 'bad/host' contains '/'" },
        { "", "get_capabilities", NULL, 0, NULL, "host: empty" },
        { "h", "Get", NULL, 0, NULL, "method: only [a-z_]" },
        { "h", "", NULL, 0, NULL, "method: must not be empty" },
        { "h", "get_capabilities", not_map, sizeof(not_map), NULL, "args: not a msgpack map" },
        { "h", "get_capabilities", truncated, sizeof(truncated), NULL, "args: truncated" },
        { "h", "get_capabilities", NULL, 0, &long_id, "message_id: too long" },
    };

    memset(long_mid, 'm', sizeof(long_mid) - 1);
    long_mid[sizeof(long_mid) - 1] = '\0';
    long_id.message_id = long_mid;
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        int rc = vtpm_client_call(c, cases[i].host, cases[i].method, cases[i].args,
                                  cases[i].len, cases[i].o, NULL, &f);

        assert_fault(rc, &f, VTPM_FAULT_BAD_REQUEST, VTPM_CLIENT_SOURCE_CLIENT, false,
                     cases[i].fragment);
    }
    /* One call id in flight at a time. */
    assert_int_equal(vtpm_client_call_send(c, "nobody", "get_capabilities", NULL, 0, &dup, NULL,
                                           &f),
                     0);
    assert_fault(vtpm_client_call_send(c, "nobody", "get_capabilities", NULL, 0, &dup, NULL, &f),
                 &f, VTPM_FAULT_BAD_REQUEST, VTPM_CLIENT_SOURCE_CLIENT, false,
                 "call_id: wt-dup is already in flight");
    assert_int_equal(vtpm_client_cancel(c, "wt-dup", &f), 0);
    assert_fault(vtpm_client_cancel(c, "wt-dup", &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "not in flight");
    {
        vtpm_client_reply *r = NULL;

        assert_fault(vtpm_client_wait(c, "wt-never-sent", 0, &r, &f), &f,
                     VTPM_FAULT_BAD_REQUEST, VTPM_CLIENT_SOURCE_CLIENT, false,
                     "call wt-never-sent is not in flight");
        assert_fault(vtpm_client_capabilities_all(c, 0, NULL, &f), &f, VTPM_FAULT_BAD_REQUEST,
                     VTPM_CLIENT_SOURCE_CLIENT, false, "out: NULL");
    }
    vtpm_client_free(c);
}

/* Each mistake in building args, named. */
static void
test_args_builder(void **state)
{
    vtpm_client_fault f;
    const void *data;
    size_t len;
    vtpm_client_args *a;

    a = vtpm_client_args_new();
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "args: empty");
    vtpm_client_args_str(a, "x");
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "args: value 1: the args must be a map, got str");
    vtpm_client_args_free(a);

    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 2);
    vtpm_client_args_uint(a, 1);
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "args: value 2: a map key must be a str, got uint");
    vtpm_client_args_free(a);

    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 2);
    vtpm_client_args_str(a, "k");
    vtpm_client_args_map(a, 3);
    vtpm_client_args_str(a, "a");
    vtpm_client_args_bool(a, true);
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "the map opened at value 3 has 1 of its 3 entries");
    vtpm_client_args_free(a);

    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 0);
    vtpm_client_args_nil(a);
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "value 2: nil after the end of the args map");
    vtpm_client_args_free(a);

    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "k");
    vtpm_client_args_str(a, NULL);
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "value 3: a NULL str");
    vtpm_client_args_free(a);

    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "k");
    vtpm_client_args_str(a, "\xff");
    assert_fault(vtpm_client_args_data(a, &data, &len, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "value 3: a str that is not valid UTF-8");
    vtpm_client_args_free(a);

    /* Every kind, nested: what msgpack-c reads back. */
    a = vtpm_client_args_new();
    vtpm_client_args_map(a, 3);
    vtpm_client_args_str(a, "list");
    vtpm_client_args_array(a, 4);
    vtpm_client_args_uint(a, 7);
    vtpm_client_args_int(a, -7);
    vtpm_client_args_nil(a);
    vtpm_client_args_bin(a, "\0\1", 2);
    vtpm_client_args_str(a, "flag");
    vtpm_client_args_bool(a, false);
    vtpm_client_args_str(a, "empty");
    vtpm_client_args_map(a, 0);
    assert_int_equal(vtpm_client_args_data(a, &data, &len, &f), 0);
    {
        msgpack_unpacked up;
        size_t off = 0;
        const msgpack_object *list;

        msgpack_unpacked_init(&up);
        assert_int_equal(msgpack_unpack_next(&up, data, len, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        list = vt_obj_at(&up.data, "list");
        assert_non_null(list);
        assert_int_equal(list->via.array.size, 4);
        assert_int_equal(list->via.array.ptr[0].via.u64, 7);
        assert_int_equal(list->via.array.ptr[1].via.i64, -7);
        assert_int_equal(list->via.array.ptr[2].type, MSGPACK_OBJECT_NIL);
        assert_int_equal(list->via.array.ptr[3].type, MSGPACK_OBJECT_BIN);
        assert_false(vt_obj_bool(&up.data, "flag"));
        msgpack_unpacked_destroy(&up);
    }
    vtpm_client_args_free(a);
}

/* ---- redelivery, many in flight, broadcasts ---------------------------------- */

static vtpm_client_args *
spawn_args(const char *uuid)
{
    vtpm_client_args *a = vtpm_client_args_new();

    vtpm_client_args_map(a, 2);
    vtpm_client_args_str(a, "instance");
    vtpm_client_args_map(a, 4);
    vtpm_client_args_str(a, "uuid");
    vtpm_client_args_str(a, uuid);
    vtpm_client_args_str(a, "name");
    vtpm_client_args_str(a, "wt-client");
    vtpm_client_args_str(a, "flavor");
    vtpm_client_args_map(a, 3);
    vtpm_client_args_str(a, "name");
    vtpm_client_args_str(a, "m1.wt");
    vtpm_client_args_str(a, "vcpus");
    vtpm_client_args_uint(a, 1);
    vtpm_client_args_str(a, "memory_mb");
    vtpm_client_args_uint(a, 64);
    vtpm_client_args_str(a, "image");
    vtpm_client_args_map(a, 1);
    vtpm_client_args_str(a, "id");
    vtpm_client_args_str(a, "firmware-only");
    vtpm_client_args_str(a, "power_on");
    vtpm_client_args_bool(a, false);
    return a;
}

/* The same message_id twice: the worker runs it once and answers the
 * repeat from its reply cache.  destroy proves it: run again, it would
 * find nothing to destroy. */
static void
test_message_id_once(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *uuid = vt_uuid();
    g_autofree char *mid = g_strdup_printf("wt-once-%s", uuid);
    vtpm_client_args *a = spawn_args(uuid);
    vtpm_client_call_opts o = { .timeout_ms = CALL_MS };
    vtpm_client_call_opts same = { .timeout_ms = CALL_MS, .message_id = mid };
    vtpm_client_reply *r1 = NULL, *r2 = NULL, *r3 = NULL;
    vtpm_client_fault f;
    msgpack_unpacked up;
    const void *data, *b1, *b2;
    size_t len, l1, l2;

    assert_int_equal(vtpm_client_args_data(a, &data, &len, &f), 0);
    if (vtpm_client_call(c, wa->worker_host, "spawn", data, len, &o, NULL, &f) < 0)
        fail_msg("spawn: %s: %s", f.name, f.message);
    vtpm_client_args_free(a);
    if (call_uuid(c, wa->worker_host, "destroy", uuid, &same, &r1, &f) < 0 ||
        call_uuid(c, wa->worker_host, "destroy", uuid, &same, &r2, &f) < 0 ||
        call_uuid(c, wa->worker_host, "destroy", uuid, &o, &r3, &f) < 0)
        fail_msg("destroy: %s: %s", f.name, f.message);
    assert_true(vt_obj_bool(result_of(r1, &up), "destroyed"));
    msgpack_unpacked_destroy(&up);
    assert_true(vt_obj_bool(result_of(r2, &up), "destroyed"));
    msgpack_unpacked_destroy(&up);
    /* A new message_id runs again: nothing left to destroy. */
    assert_false(vt_obj_bool(result_of(r3, &up), "destroyed"));
    msgpack_unpacked_destroy(&up);
    b1 = vtpm_client_reply_body(r1, &l1);
    b2 = vtpm_client_reply_body(r2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    assert_string_not_equal(vtpm_client_reply_id(r1), vtpm_client_reply_id(r2));
    vtpm_client_reply_free(r1);
    vtpm_client_reply_free(r2);
    vtpm_client_reply_free(r3);
    vtpm_client_free(c);
}

/* The call id of each of @n calls in flight, and the UUID it asked for. */
typedef struct {
    char id[VTPM_CLIENT_ID_MAX];
    char *uuid;
    bool seen;
} sent_call;

static void
send_power_offs(vtpm_client *c, sent_call *s, size_t n, const char *host)
{
    for (size_t i = 0; i < n; i++) {
        vtpm_client_args *a;
        const void *data;
        size_t len;
        vtpm_client_fault f;

        s[i].uuid = vt_uuid();
        a = uuid_args(s[i].uuid);
        assert_int_equal(vtpm_client_args_data(a, &data, &len, &f), 0);
        if (vtpm_client_call_send(c, host, "power_off", data, len, NULL, s[i].id, &f) < 0)
            fail_msg("send %zu: %s: %s", i, f.name, f.message);
        vtpm_client_args_free(a);
    }
}

/* @r answers one of @s, not seen before, with the fault naming its UUID. */
static void
match_reply(sent_call *s, size_t n, const vtpm_client_reply *r)
{
    vtpm_client_fault f;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(s[i].id, vtpm_client_reply_id(r)) != 0)
            continue;
        if (s[i].seen)
            fail_msg("call %s answered twice", s[i].id);
        s[i].seen = true;
        assert_fault(vtpm_client_reply_result(r, NULL, NULL, &f), &f,
                     VTPM_FAULT_INSTANCE_NOT_FOUND, VTPM_CLIENT_SOURCE_WORKER, false, s[i].uuid);
        assert_string_equal(f.details.call_id, s[i].id);
        return;
    }
    fail_msg("a reply to %s, which was not sent", vtpm_client_reply_id(r));
}

/* 200 calls in flight on one connection, every reply matched to its call:
 * half collected by id, last sent first, the rest in order of arrival. */
static void
test_many_in_flight(void **state)
{
    vtpm_client *c = connect_default();
    sent_call s[MANY] = { 0 };
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;

    send_power_offs(c, s, MANY, wa->worker_host);
    for (size_t i = MANY; i-- > MANY / 2;) {
        if (vtpm_client_wait(c, s[i].id, CALL_MS, &r, &f) != 0)
            fail_msg("no reply to call %zu (%s)", i, s[i].id);
        assert_string_equal(vtpm_client_reply_id(r), s[i].id);
        match_reply(s, MANY, r);
        vtpm_client_reply_free(r);
    }
    for (size_t i = 0; i < MANY / 2; i++) {
        if (vtpm_client_wait(c, NULL, CALL_MS, &r, &f) != 0)
            fail_msg("%zu replies of %d missing", MANY / 2 - i, MANY / 2);
        match_reply(s, MANY, r);
        vtpm_client_reply_free(r);
    }
    for (size_t i = 0; i < MANY; i++) {
        assert_true(s[i].seen);
        g_free(s[i].uuid);
    }
    /* Nothing else in flight, nothing else arrives. */
    assert_int_equal(vtpm_client_wait(c, NULL, 500, &r, &f), 1);
    vtpm_client_free(c);
}

/* A cancelled call's reply is dropped; with VTPM_CLIENT_ALL_REPLIES every
 * message is handed out, a second reply with one id too. */
static void
test_cancel_and_all_replies(void **state)
{
    vtpm_client *c = connect_default();
    vtpm_client_options all = { .url = vt_env("VT_AMQP_URL"), .flags = VTPM_CLIENT_ALL_REPLIES };
    vtpm_client_call_opts o = { .call_id = "wt-twice" };
    vtpm_client *ca = NULL;
    vtpm_client_reply *r = NULL;
    vtpm_client_fault f;
    char id[VTPM_CLIENT_ID_MAX];

    assert_int_equal(vtpm_client_call_send(c, wa->worker_host, "get_capabilities", NULL, 0, NULL,
                                           id, &f),
                     0);
    assert_int_equal(vtpm_client_cancel(c, id, &f), 0);
    /* Its reply comes, and is dropped. */
    assert_int_equal(vtpm_client_wait(c, NULL, 3000, &r, &f), 1);
    vtpm_client_free(c);

    assert_int_equal(vtpm_client_connect(&all, &ca, &f), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(vtpm_client_call_send(ca, wb->worker_host, "get_capabilities", NULL, 0,
                                               &o, NULL, &f),
                         0);
    for (int i = 0; i < 2; i++) {
        if (vtpm_client_wait(ca, NULL, CALL_MS, &r, &f) != 0)
            fail_msg("reply %d of 2 missing", i + 1);
        assert_string_equal(vtpm_client_reply_id(r), "wt-twice");
        vtpm_client_reply_free(r);
    }
    vtpm_client_free(ca);
}

static void
test_capabilities_all(void **state)
{
    vtpm_client *c = connect_default();
    vtpm_client_replies *l = NULL;
    vtpm_client_fault f;
    char id[VTPM_CLIENT_ID_MAX];
    g_autoptr(GHashTable) hosts = g_hash_table_new(g_str_hash, g_str_equal);

    if (vtpm_client_capabilities_all(c, 3000, &l, &f) < 0)
        fail_msg("capabilities_all: %s: %s", f.name, f.message);
    assert_int_equal(vtpm_client_replies_count(l), 2);
    for (size_t i = 0; i < 2; i++) {
        g_autofree char *host = NULL;
        msgpack_unpacked up;

        g_hash_table_add(hosts, (gpointer)vtpm_client_replies_host(l, i));
        host = vt_obj_str(result_of(vtpm_client_replies_get(l, i), &up), "host");
        assert_string_equal(host, vtpm_client_replies_host(l, i));
        msgpack_unpacked_destroy(&up);
    }
    assert_true(g_hash_table_contains(hosts, wa->worker_host));
    assert_true(g_hash_table_contains(hosts, wb->worker_host));
    assert_null(vtpm_client_replies_get(l, 2));
    vtpm_client_replies_free(l);

    /* By hand: a broadcast collects replies until it is cancelled. */
    assert_int_equal(vtpm_client_fanout_send(c, "get_capabilities", NULL, 0, NULL, id, &f), 0);
    for (int i = 0; i < 2; i++) {
        vtpm_client_reply *r = NULL;

        if (vtpm_client_wait(c, id, CALL_MS, &r, &f) != 0)
            fail_msg("broadcast reply %d of 2 missing", i + 1);
        assert_string_equal(vtpm_client_reply_id(r), id);
        vtpm_client_reply_free(r);
    }
    assert_int_equal(vtpm_client_cancel(c, id, &f), 0);
    vtpm_client_free(c);
}

/* ---- threads: one client per thread, or one shared under a lock ------------------ */

typedef struct {
    vtpm_client *shared; /* NULL: a client of its own */
    GMutex *lock;
    const char *host;
    unsigned ok, wrong;
    char first_error[256];
} thread_job;

static void
thread_error(thread_job *j, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void
thread_error(thread_job *j, const char *fmt, ...)
{
    va_list ap;

    j->wrong++;
    if (j->first_error[0])
        return;
    va_start(ap, fmt);
    g_vsnprintf(j->first_error, sizeof(j->first_error), fmt, ap);
    va_end(ap);
}

/* One power_off: the fault must name the UUID of this call. */
static void
thread_call(thread_job *j, vtpm_client *c)
{
    g_autofree char *uuid = vt_uuid();
    vtpm_client_args *a = uuid_args(uuid);
    vtpm_client_call_opts o = { .timeout_ms = CALL_MS };
    vtpm_client_fault f;
    const void *data;
    size_t len;
    int rc;

    vtpm_client_args_data(a, &data, &len, NULL);
    if (j->lock)
        g_mutex_lock(j->lock);
    rc = vtpm_client_call(c, j->host, "power_off", data, len, &o, NULL, &f);
    if (j->lock)
        g_mutex_unlock(j->lock);
    vtpm_client_args_free(a);
    if (rc == -VTPM_FAULT_INSTANCE_NOT_FOUND && strstr(f.message, uuid))
        j->ok++;
    else
        thread_error(j, "%d %s: %s", rc, f.name, f.message);
}

static gpointer
thread_main(gpointer data)
{
    thread_job *j = data;
    vtpm_client_options o = { .url = vt_env("VT_AMQP_URL") };
    vtpm_client *own = NULL;
    vtpm_client_fault f;

    if (!j->shared && vtpm_client_connect(&o, &own, &f) < 0) {
        thread_error(j, "connect: %s", f.message);
        return NULL;
    }
    for (int i = 0; i < THREAD_CALLS; i++)
        thread_call(j, j->shared ? j->shared : own);
    vtpm_client_free(own);
    return NULL;
}

static void
test_threads(void **state)
{
    vtpm_client *shared = connect_default();
    GMutex lock;
    thread_job jobs[THREADS + 2] = { 0 };
    GThread *t[THREADS + 2];

    g_mutex_init(&lock);
    for (int i = 0; i < THREADS + 2; i++) {
        jobs[i].host = i % 2 ? wa->worker_host : wb->worker_host;
        if (i >= THREADS) {
            jobs[i].shared = shared;
            jobs[i].lock = &lock;
        }
        t[i] = g_thread_new("wt-client", thread_main, &jobs[i]);
    }
    for (int i = 0; i < THREADS + 2; i++) {
        g_thread_join(t[i]);
        if (jobs[i].wrong)
            fail_msg("thread %d: %u of %d calls wrong, first: %s", i, jobs[i].wrong,
                     THREAD_CALLS, jobs[i].first_error);
        assert_int_equal(jobs[i].ok, THREAD_CALLS);
    }
    g_mutex_clear(&lock);
    vtpm_client_free(shared);
}

/* ---- retrying ------------------------------------------------------------------- */

/* No worker serves the host: every attempt times out (retryable), until
 * the timeout; a fault that is not retryable is not retried. */
static void
test_retry_timeout(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *nobody = vt_unique("nobody");
    vtpm_client_call_opts o = { .timeout_ms = 3000 };
    vtpm_client_retry_opts r = { .attempt_timeout_ms = 500, .backoff_ms = 100 };
    vtpm_client_reply *out = NULL;
    vtpm_client_fault f;
    int rc;

    rc = vtpm_client_call_with_retry(c, nobody, "get_capabilities", NULL, 0, &o, &r, &out, &f);
    assert_fault(rc, &f, VTPM_CLIENT_TIMEOUT, VTPM_CLIENT_SOURCE_CLIENT, true, "no reply from");
    assert_string_equal(f.name, "Timeout");
    assert_true(f.details.attempts >= 2);
    assert_null(out);

    rc = vtpm_client_call_with_retry(c, wa->worker_host, "no_such_method", NULL, 0, &o, &r, &out,
                                     &f);
    assert_fault(rc, &f, VTPM_FAULT_UNKNOWN_METHOD, VTPM_CLIENT_SOURCE_WORKER, false, NULL);
    assert_int_equal(f.details.attempts, 1);

    rc = vtpm_client_call_with_retry(c, wa->worker_host, "get_capabilities", NULL, 0, NULL, NULL,
                                     &out, &f);
    assert_int_equal(rc, 0);
    assert_int_equal(f.code, 0);
    assert_int_equal(f.details.attempts, 1);
    vtpm_client_reply_free(out);
    vtpm_client_free(c);
}

/* libvirtd stopped under a real worker: HypervisorError (retryable); the
 * helper retries with the same message_id until it is back, or gives up
 * at the deadline. */
static void
test_retry_libvirtd(void **state)
{
    g_autofree char *host = vt_unique("retry");
    vt_config_opts co = { .worker_host = host, .swtpm_disabled = true };
    g_autoptr(vt_vtpmd) d = vt_vtpmd_start(H, &co, NULL);
    vtpm_client *c = connect_default();
    g_autofree char *u1 = vt_uuid(), *u2 = vt_uuid(), *u3 = vt_uuid();
    vtpm_client_call_opts short_o = { .timeout_ms = 3000 };
    vtpm_client_call_opts long_o = { .timeout_ms = 120000, .message_id = u3 };
    vtpm_client_retry_opts r = { .backoff_ms = 200, .max_backoff_ms = 1000 };
    vtpm_client_reply *out = NULL;
    vtpm_client_args *a;
    vtpm_client_fault f;
    const void *data;
    size_t len;
    GPid restart;
    int rc;

    vt_libvirtd_kill(H);
    rc = call_uuid(c, host, "destroy", u1, &short_o, &out, &f);
    assert_fault(rc, &f, VTPM_FAULT_HYPERVISOR_ERROR, VTPM_CLIENT_SOURCE_WORKER, true, NULL);

    /* Gives up at the deadline: no attempt starts after it. */
    a = uuid_args(u2);
    assert_int_equal(vtpm_client_args_data(a, &data, &len, &f), 0);
    rc = vtpm_client_call_with_retry(c, host, "destroy", data, len, &short_o, &r, &out, &f);
    assert_fault(rc, &f, VTPM_FAULT_HYPERVISOR_ERROR, VTPM_CLIENT_SOURCE_WORKER, true, NULL);
    assert_true(f.details.attempts >= 2);
    vtpm_client_args_free(a);

    /* Back while the helper retries. */
    restart = vt_env_sh_start("sleep 2; vt_host_restart_libvirtd " H);
    a = uuid_args(u3);
    assert_int_equal(vtpm_client_args_data(a, &data, &len, &f), 0);
    rc = vtpm_client_call_with_retry(c, host, "destroy", data, len, &long_o, &r, &out, &f);
    vtpm_client_args_free(a);
    assert_int_equal(vt_env_sh_finish(restart), 0);
    if (rc < 0) {
        vt_vtpmd_dump(d);
        fail_msg("destroy with retries: %s: %s (%u attempts)", f.name, f.message,
                 f.details.attempts);
    }
    print_message("destroy succeeded after %u attempts\n", f.details.attempts);
    assert_true(f.details.attempts >= 2);
    vtpm_client_reply_free(out);
    vtpm_client_free(c);
    assert_int_equal(vt_vtpmd_term(d, 30000), 0);
}

/* The broker restarts with a call in flight: that call fails with Busy,
 * and the client connects again by itself at its next call. */
static void
test_connection_lost(void **state)
{
    vtpm_client *c = connect_default();
    g_autofree char *nobody = vt_unique("nobody");
    vtpm_client_call_opts o = { .timeout_ms = 120000 };
    vtpm_client_retry_opts r = { .backoff_ms = 500, .max_backoff_ms = 2000 };
    vtpm_client_reply *out = NULL;
    vtpm_client_fault f;
    char id[VTPM_CLIENT_ID_MAX];
    int rc;

    assert_int_equal(vtpm_client_call_send(c, nobody, "get_capabilities", NULL, 0, NULL, id, &f),
                     0);
    vt_rmq_restart();
    rc = vtpm_client_wait(c, id, CALL_MS, &out, &f);
    assert_fault(rc, &f, VTPM_FAULT_BUSY, VTPM_CLIENT_SOURCE_CLIENT, true, NULL);
    assert_string_equal(f.details.call_id, id);
    /* It was done with: not in flight any more. */
    assert_fault(vtpm_client_wait(c, id, 0, &out, &f), &f, VTPM_FAULT_BAD_REQUEST,
                 VTPM_CLIENT_SOURCE_CLIENT, false, "not in flight");
    /* The workers reconnect too; until then a call may fail (retryable). */
    rc = vtpm_client_call_with_retry(c, wa->worker_host, "get_capabilities", NULL, 0, &o, &r,
                                     &out, &f);
    if (rc < 0)
        fail_msg("after the broker restart: %s: %s", f.name, f.message);
    vtpm_client_reply_free(out);
    vtpm_client_free(c);
}

/* ---- fixtures ------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    g_autofree char *ha = vt_unique("cla");
    g_autofree char *hb = vt_unique("clb");
    vt_config_opts a = { .worker_host = ha, .libvirt_uri = "test:///default" };
    vt_config_opts b = { .worker_host = hb, .libvirt_uri = "test:///default" };

    wa = vt_vtpmd_start(H, &a, NULL);
    wb = vt_vtpmd_start(H, &b, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    int rc = 0;

    for (vt_vtpmd **d = (vt_vtpmd *[]){ wa, wb, NULL }; *d; d++) {
        g_autofree char *report = vt_vtpmd_sanitizer_report(*d);

        if (vt_vtpmd_running(*d) && vt_vtpmd_term(*d, 30000) != 0)
            rc = -1;
        if (report) {
            print_error("vtpmd %s: %s\n", (*d)->worker_host, report);
            rc = -1;
        }
        vt_vtpmd_free(*d);
    }
    return rc;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_forms),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_tls),
        cmocka_unit_test(test_call_ok),
        cmocka_unit_test(test_worker_faults),
        cmocka_unit_test(test_deadline_expired),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_args_builder),
        cmocka_unit_test(test_message_id_once),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_cancel_and_all_replies),
        cmocka_unit_test(test_capabilities_all),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_retry_timeout),
        /* These disturb the services everyone uses: last. */
        cmocka_unit_test(test_retry_libvirtd),
        cmocka_unit_test(test_connection_lost),
    };
    const char *missing = NULL;

    if (!vt_env_ready(&missing)) {
        fprintf(stderr, "test_client: %s is not set; run it through tests/integration.sh "
                        "(skipped)\n", missing);
        return 77;
    }
    if (g_getenv("VT_TEST_FILTER"))
        cmocka_set_test_filter(g_getenv("VT_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
