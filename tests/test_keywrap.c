/* SPDX-License-Identifier: Apache-2.0 */
/* Deployment keys: key file rules, AES-256-GCM wrap/unwrap, rotation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "keywrap.h"

#define U1 "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001"
#define U2 "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd002"

static char *dir;

static char *
key_file(const char *name, const void *data, size_t len, int mode)
{
    char *path = g_build_filename(dir, name, NULL);

    assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static vtpm_keyring *
ring(const char *cur, const char *prev)
{
    vtpm_keyring *kr = NULL;
    vtpm_error err = { 0 };

    if (vtpm_keyring_load(cur, prev, &kr, &err) < 0)
        fail_msg("%s", err.message);
    return kr;
}

static void
test_key_files(void **state)
{
    guint8 raw[32];
    g_autofree char *hex = NULL, *p_raw = NULL, *p_hex = NULL, *p_open = NULL, *p_short = NULL;
    g_autofree char *p_nothex = NULL;
    g_autoptr(vtpm_keyring) a = NULL, b = NULL;
    vtpm_keyring *kr = NULL;
    vtpm_error err = { 0 };

    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (guint8)(i * 7 + 1);
    hex = g_strdup("");
    for (size_t i = 0; i < sizeof(raw); i++) {
        char *n = g_strdup_printf("%s%02X", hex, raw[i]);

        g_free(hex);
        hex = n;
    }
    p_raw = key_file("raw.key", raw, sizeof(raw), 0600);
    {
        g_autofree char *line = g_strconcat(hex, "\n", NULL);

        p_hex = key_file("hex.key", line, strlen(line), 0600);
    }
    /* Raw and hex forms of the same key have the same id. */
    a = ring(p_raw, NULL);
    b = ring(p_hex, NULL);
    assert_true(vtpm_keyring_ready(a));
    assert_int_equal(strlen(vtpm_keyring_current_id(a)), VTPM_KEYWRAP_ID_CHARS);
    assert_string_equal(vtpm_keyring_current_id(a), vtpm_keyring_current_id(b));

    p_open = key_file("open.key", raw, sizeof(raw), 0644);
    assert_int_equal(vtpm_keyring_load(p_open, NULL, &kr, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_non_null(strstr(err.message, "open.key has mode 0644; it must be 0600"));
    p_short = key_file("short.key", raw, 31, 0600);
    assert_int_equal(vtpm_keyring_load(p_short, NULL, &kr, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_non_null(strstr(err.message, "31 bytes; expected 32 raw bytes or 64 hex digits"));
    {
        char bad[64];

        memset(bad, 'g', sizeof(bad));
        p_nothex = key_file("nothex.key", bad, sizeof(bad), 0600);
    }
    assert_int_equal(vtpm_keyring_load(p_nothex, NULL, &kr, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_non_null(strstr(err.message, "not hex digits"));
    assert_int_equal(vtpm_keyring_load("/nonexistent/k", NULL, &kr, &err),
                     -(int)VTPM_FAULT_BAD_REQUEST);
    assert_int_equal(vtpm_keyring_load(NULL, p_raw, &kr, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_null(kr);
}

static void
test_wrap_unwrap(void **state)
{
    guint8 k1[32], k2[32];
    g_autofree char *f1 = NULL, *f2 = NULL, *w = NULL, *w2 = NULL, *tampered = NULL;
    g_autoptr(vtpm_keyring) r1 = NULL, r2 = NULL, rot = NULL, none = NULL;
    g_autoptr(GBytes) secret = NULL, out = NULL, out2 = NULL;
    vtpm_error err = { 0 };
    GBytes *x = NULL;
    bool cur = false;

    memset(k1, 0x11, sizeof(k1));
    memset(k2, 0x22, sizeof(k2));
    f1 = key_file("k1", k1, sizeof(k1), 0600);
    f2 = key_file("k2", k2, sizeof(k2), 0600);
    r1 = ring(f1, NULL);
    r2 = ring(f2, NULL);
    rot = ring(f2, f1);
    none = ring(NULL, NULL);

    assert_int_equal(vtpm_keyring_random_secret(&secret, &err), 0);
    assert_int_equal(g_bytes_get_size(secret), 64);
    assert_int_equal(vtpm_keyring_wrap(r1, U1, secret, &w, &err), 0);
    assert_true(g_str_has_prefix(w, "v1:"));
    assert_true(g_str_has_prefix(w + 3, vtpm_keyring_current_id(r1)));
    /* The secret itself never appears in the wrapped text. */
    {
        g_autofree char *head = g_strndup(g_bytes_get_data(secret, NULL), 16);

        assert_null(strstr(w, head));
    }

    assert_int_equal(vtpm_keyring_unwrap(r1, U1, w, &out, &cur, &err), 0);
    assert_true(g_bytes_equal(out, secret));
    assert_true(cur);
    /* A fresh nonce per wrap. */
    assert_int_equal(vtpm_keyring_wrap(r1, U1, secret, &w2, &err), 0);
    assert_string_not_equal(w, w2);

    /* Another instance cannot use it (associated data). */
    assert_int_equal(vtpm_keyring_unwrap(r1, U2, w, &x, NULL, &err),
                     -(int)VTPM_FAULT_STATE_INTEGRITY);
    /* A host without the key: SecretInvalid naming both ids. */
    assert_int_equal(vtpm_keyring_unwrap(r2, U1, w, &x, NULL, &err),
                     -(int)VTPM_FAULT_SECRET_INVALID);
    assert_non_null(strstr(err.message, vtpm_keyring_current_id(r1)));
    assert_non_null(strstr(err.message, vtpm_keyring_current_id(r2)));
    /* Rotation: the previous key still unwraps, and says it is not current. */
    assert_int_equal(vtpm_keyring_unwrap(rot, U1, w, &out2, &cur, &err), 0);
    assert_true(g_bytes_equal(out2, secret));
    assert_false(cur);
    /* Tampering: one changed character of the data. */
    tampered = g_strdup(w);
    tampered[strlen(tampered) - 6] = tampered[strlen(tampered) - 6] == 'A' ? 'B' : 'A';
    assert_int_equal(vtpm_keyring_unwrap(r1, U1, tampered, &x, NULL, &err),
                     -(int)VTPM_FAULT_STATE_INTEGRITY);
    assert_int_equal(vtpm_keyring_unwrap(r1, U1, "v1:short", &x, NULL, &err),
                     -(int)VTPM_FAULT_STATE_INTEGRITY);
    assert_int_equal(vtpm_keyring_unwrap(r1, U1, "plain", &x, NULL, &err),
                     -(int)VTPM_FAULT_STATE_INTEGRITY);
    assert_null(x);
    /* Which key a wrapped text needs, as a live migration source asks. */
    assert_true(vtpm_keyring_wrapped_with(w, vtpm_keyring_current_id(r1)));
    assert_false(vtpm_keyring_wrapped_with(w, vtpm_keyring_current_id(r2)));
    assert_string_equal(vtpm_keyring_previous_id(rot), vtpm_keyring_current_id(r1));
    assert_string_equal(vtpm_keyring_previous_id(r1), "");
    assert_true(vtpm_keyring_wrapped_with(w, vtpm_keyring_previous_id(rot)));
    assert_false(vtpm_keyring_wrapped_with(w, ""));
    assert_false(vtpm_keyring_wrapped_with("v1:short", "short"));
    assert_false(vtpm_keyring_wrapped_with(NULL, vtpm_keyring_current_id(r1)));
    /* No deployment key configured. */
    assert_false(vtpm_keyring_ready(none));
    assert_int_equal(vtpm_keyring_wrap(none, U1, secret, &w2, &err), -(int)VTPM_FAULT_TPM_UNSUPPORTED);
}

static int
setup(void **state)
{
    dir = g_dir_make_tmp("test-keywrap-XXXXXX", NULL);
    return dir ? 0 : -1;
}

static int
teardown(void **state)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);

    g_spawn_command_line_sync(cmd, NULL, NULL, NULL, NULL);
    g_free(dir);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_wrap_unwrap),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
