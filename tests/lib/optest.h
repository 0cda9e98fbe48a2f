/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calling operation handlers (worker/ops/) in-process, for the quick
 * tests of their argument checks and faults (tests/test_ops_*.c).
 *
 * A host is a vtpm_worker on libvirt's test:///default driver (domains
 * that live in this process; no QEMU, no swtpm, no secrets) with every
 * directory vtpmd writes to in a private temporary tree.  That covers
 * what needs no TPM state: arguments, lookups, and the life of instances
 * without a vTPM.  Whatever touches TPM state is for the integration
 * suites (test_lifecycle, test_secrets).
 *
 * Requests are written as JSON with single quotes (turned into double
 * quotes before parsing; tests use no apostrophes), bytes as {'$bin':
 * base64} (tools/mpjson.h).  A reply is the handler's return code, its
 * vtpm_error, and its result map as compact JSON.
 */
#pragma once

/* cmocka's prerequisites, then cmocka: every user is a cmocka test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>

#include "methods.h"
#include "vtpm/error.h"
#include "worker.h"

#define OT_HOST "test-host" /* [worker] host of every test host */
/* The firmware of a result when the spec asks for none. */
#define OT_BIOS "'firmware': {'type': 'bios', 'secure_boot': false, 'machine': 'q35'}"

typedef struct {
    char *root; /* the private tree */
    vtpm_config *cfg;
    vtpm_worker w;
} ot_host;

/* A host: the parser's default configuration with test:///default, its
 * host name OT_HOST and its directories in the private tree. */
ot_host *ot_host_new(void);
void ot_host_free(ot_host *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ot_host, ot_host_free)

/* cmocka set-up and tear-down giving each test a host of its own in
 * *state, and a test that uses them. */
int ot_setup(void **state);
int ot_teardown(void **state);
#define OT_TEST(fn) cmocka_unit_test_setup_teardown(fn, ot_setup, ot_teardown)

typedef struct {
    int rc;
    vtpm_error err;
    char *result; /* compact JSON of the result map; NULL after a fault */
} ot_reply;

void ot_reply_clear(ot_reply *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ot_reply, ot_reply_clear)

/* Run @fn on a request for @method with args @args (printf format, JSON
 * with single quotes). */
void ot_call(ot_host *h, vtpm_handler_fn fn, const char *method, ot_reply *out, const char *args,
             ...) G_GNUC_PRINTF(5, 6);
/* The same, failing the test unless the handler faults with @code and
 * exactly @message. */
void ot_expect_fault(ot_host *h, vtpm_handler_fn fn, const char *method, vtpm_fault code,
                     const char *message, const char *args, ...) G_GNUC_PRINTF(6, 7);
/* The same, failing the test unless the handler succeeds with a result
 * whose compact JSON is @result (single quotes; NULL: any result). */
void ot_expect_ok(ot_host *h, vtpm_handler_fn fn, const char *method, const char *result,
                  const char *args, ...) G_GNUC_PRINTF(5, 6);

/* A fresh instance UUID (lower case). */
char *ot_uuid(void);
/* The JSON of an instance @uuid with flavor extra specs @extra_specs
 * (JSON object members, single quotes, "" for none), image @image and
 * @more members ("" or ", 'boot': {...}"). */
char *ot_instance(const char *uuid, const char *extra_specs, const char *image, const char *more);
/* The same with image properties @properties (JSON object members). */
char *ot_instance_props(const char *uuid, const char *extra_specs, const char *image,
                        const char *properties, const char *more);
/* Spawn instance @uuid without a vTPM (image "img-1"), started when
 * @power_on: a domain for a test to work on. */
void ot_spawn(ot_host *h, const char *uuid, gboolean power_on);
/* "instance-<uuid>", the domain name vtpmd gives it. */
char *ot_domain(const char *uuid);
/* Whether the test driver has a domain for @uuid, and whether it runs. */
gboolean ot_domain_exists(ot_host *h, const char *uuid, gboolean *running);
/* Remove the domain of @uuid behind vtpmd's back. */
void ot_undefine(ot_host *h, const char *uuid);
/* Make the host offer what Debian's ovmf package gives a real one:
 * COMPUTE_FIRMWARE_UEFI, and COMPUTE_SECURITY_UEFI_SECURE_BOOT when
 * @secure_boot (the test driver reports neither: no domain capabilities). */
void ot_offer_firmware(ot_host *h, gboolean secure_boot);
/* Path @rel in the host's private tree. */
char *ot_path(ot_host *h, const char *rel);
