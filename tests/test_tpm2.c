/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/tpm2.c against the real swtpm of this host: a private TPM 2.0 on
 * a temporary state directory, the commands vtpmd sends it when it makes a
 * TPM, and how it fails when swtpm cannot open the state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "fsutil.h"
#include "policy.h"
#include "tpm2.h"
#include "vtpm/proto.h"

typedef struct {
    char *dir;
} fx;

static int
setup(void **state)
{
    fx *f = g_new0(fx, 1);

    f->dir = g_dir_make_tmp("test_tpm2-XXXXXX", NULL);
    assert_non_null(f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_fs_rmtree(f->dir, &err), 0);
    g_free(f->dir);
    g_free(f);
    return 0;
}

static vtpm_tpm2 *
start(const char *dir, GBytes *key)
{
    vtpm_tpm2 *t = NULL;
    vtpm_error err = { 0 };

    if (vtpm_tpm2_start(dir, key, NULL, &t, &err) < 0)
        fail_msg("start: %s", err.message);
    return t;
}

static void
stop(vtpm_tpm2 *t)
{
    vtpm_error err = { 0 };

    if (vtpm_tpm2_stop(t, &err) < 0)
        fail_msg("stop: %s", err.message);
}

/* libtpms 0.9 implements these four banks, active or not. */
static void
test_probe_pcr_banks(void **state)
{
    unsigned banks = 0;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_tpm2_probe_pcr_banks(&banks, &err), 0);
    assert_int_equal(banks, 1u << VTPM_PCR_SHA1 | 1u << VTPM_PCR_SHA256 |
                                1u << VTPM_PCR_SHA384 | 1u << VTPM_PCR_SHA512);
}

/* The EK of template L-2 derives from the endorsement seed: the same key
 * every time, also after a restart on the same state. */
static void
test_ek_p256(void **state)
{
    fx *f = *state;
    g_autofree char *pem1 = NULL, *pem2 = NULL, *pem3 = NULL, *param = NULL, *param2 = NULL;
    g_autofree char *file = g_build_filename(f->dir, "tpm2-00.permall", NULL);
    vtpm_tpm2 *t = start(f->dir, NULL);
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem1, &param, &err), 0);
    assert_true(g_str_has_prefix(pem1, "-----BEGIN PUBLIC KEY-----\n"));
    assert_true(g_str_has_prefix(param, "x="));
    assert_true(g_str_has_suffix(param, ",id=secp256r1"));
    assert_int_equal(strlen(param), strlen("x=,y=,id=secp256r1") + 4 * 32);
    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem2, &param2, &err), 0);
    assert_string_equal(pem1, pem2);
    assert_string_equal(param, param2);
    stop(t);
    assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));

    t = start(f->dir, NULL);
    g_clear_pointer(&param2, g_free);
    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem3, &param2, &err), 0);
    assert_string_equal(pem1, pem3);
    stop(t);
}

static void
test_cert_params(void **state)
{
    fx *f = *state;
    g_autoptr(GPtrArray) p = NULL;
    vtpm_tpm2 *t = start(f->dir, NULL);
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_tpm2_cert_params(t, &p, &err), 0);
    assert_int_equal(p->len, 12);
    assert_string_equal(p->pdata[0], "--tpm-spec-family");
    assert_string_equal(p->pdata[1], "2.0");
    assert_string_equal(p->pdata[2], "--tpm-spec-level");
    assert_string_equal(p->pdata[4], "--tpm-spec-revision");
    assert_string_equal(p->pdata[6], "--tpm-manufacturer");
    assert_true(g_str_has_prefix(p->pdata[7], "id:"));
    assert_string_equal(p->pdata[8], "--tpm-model");
    assert_string_equal(p->pdata[10], "--tpm-version");
    /* The control channel is in step after a message with a payload. */
    stop(t);
}

/* A certificate bigger than one TPM2_NV_Write, then the same index again
 * (it exists: refused, naming it); a persistent key that is not there. */
static void
test_nv_and_faults(void **state)
{
    fx *f = *state;
    g_autofree guint8 *data = g_malloc(1500);
    g_autoptr(GBytes) cert = NULL;
    g_autofree char *pem = NULL;
    vtpm_tpm2 *t = start(f->dir, NULL);
    vtpm_error err = { 0 };

    for (size_t i = 0; i < 1500; i++)
        data[i] = (guint8)i;
    cert = g_bytes_new(data, 1500);
    if (vtpm_tpm2_nv_store(t, VTPM_TPM2_NV_ECC_P256_EKCERT, cert, &err) < 0)
        fail_msg("nv_store: %s", err.message);
    assert_int_equal(vtpm_tpm2_nv_store(t, VTPM_TPM2_NV_ECC_P256_EKCERT, cert, &err),
                     -(int)VTPM_FAULT_INTERNAL);
    assert_true(g_str_has_prefix(err.message, "NV index 0x01c0000a: swtpm: TPM2_NV_DefineSpace "
                                              "failed: TPM_RC 0x"));
    /* A fresh TPM has no persistent EK (swtpm_setup makes it). */
    assert_int_equal(vtpm_tpm2_read_public(t, VTPM_TPM2_EK_RSA_HANDLE, &pem, &err),
                     -(int)VTPM_FAULT_INTERNAL);
    assert_true(g_str_has_prefix(err.message, "swtpm: TPM2_ReadPublic failed: TPM_RC 0x"));
    assert_null(pem);
    stop(t);
}

/* A state encrypted under one passphrase does not open under another:
 * swtpm gives up and the first command says so. */
static void
test_wrong_key(void **state)
{
    fx *f = *state;
    g_autoptr(GBytes) k1 = g_bytes_new_static("passphrase one", 14);
    g_autoptr(GBytes) k2 = g_bytes_new_static("passphrase two", 14);
    g_autofree char *pem = NULL, *param = NULL;
    vtpm_tpm2 *t = start(f->dir, k1);
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem, &param, &err), 0);
    stop(t);
    g_clear_pointer(&pem, g_free);
    g_clear_pointer(&param, g_free);
    t = start(f->dir, k2);
    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem, &param, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_non_null(strstr(err.message, "TPM2_CreatePrimary"));
    vtpm_tpm2_free(t);
    t = start(f->dir, k1);
    assert_int_equal(vtpm_tpm2_create_ek_p256(t, &pem, &param, &err), 0);
    stop(t);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_pcr_banks),
        T(test_ek_p256),
        T(test_cert_params),
        T(test_nv_and_faults),
        T(test_wrong_key),
    };
    g_autofree char *swtpm = g_find_program_in_path("swtpm");

    if (!swtpm) {
        print_message("swtpm is not installed (tools/install-deps): skipped\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
