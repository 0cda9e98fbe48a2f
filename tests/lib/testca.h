/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A test CA for EK certificates, made with openssl in a temporary
 * directory (as tests/lib/env.sh makes the broker's TLS CA): ca.pem,
 * ca.key (0600) and ca.der, and more keys and certificates on demand.
 * For cmocka tests: a failing openssl fails the running test.
 */
#pragma once

#include <glib.h>

typedef struct {
    char *dir;
} tc_ca;

/* A CA "/O=vtpmd test/CN=Test EK CA" in a new temporary directory. */
tc_ca *tc_ca_new(void);
/* Remove the directory and everything in it. */
void tc_ca_free(tc_ca *ca);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tc_ca, tc_ca_free)

/* Run `openssl @args` (a shell fragment) in the CA's directory. */
void tc_openssl(const tc_ca *ca, const char *args);
/* NAME.key (genpkey with @genpkey), its public key NAME.pub (PEM) and a
 * certificate NAME.der signed by the CA for subject @subject. */
void tc_make_cert(const tc_ca *ca, const char *name, const char *genpkey, const char *subject);
/* The path of @name in the CA's directory, and its contents. */
char *tc_path(const tc_ca *ca, const char *name);
GBytes *tc_bytes(const tc_ca *ca, const char *name);
char *tc_text(const tc_ca *ca, const char *name);
