/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/rekey.c against the real swtpm 0.7 (no libvirt): a state made by
 * a standalone swtpm under one passphrase is read out, written under
 * another and verified; the old passphrase no longer opens the new state,
 * the new one does, wrong keys are SecretInvalid, and the input state is
 * never written.  TPM 2.0 and 1.2.  And the scan of swtpm's log that tells
 * a wrong key from other start failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "rekey.h"
#include "policy.h"

static GBytes *
key_of(const char *s)
{
    return g_bytes_new(s, strlen(s));
}

static char *
sha_file(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, NULL))
        return NULL;
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

/* A freshly manufactured TPM under passphrase @pw in @dir/<subdir>. */
static void
make_state(const char *dir, vtpm_version v, const char *pw)
{
    g_autofree char *sub = g_build_filename(dir, vtpm_rekey_subdir(v), NULL);
    g_autofree char *script = g_strdup_printf(
        "set -e; t=%s; s=%s; mkdir -p $s; printf %%s '%s' > $t/pw; "
        "swtpm socket %s --tpmstate dir=$s --ctrl type=unixio,path=$t/c --server "
        "type=unixio,path=$t/s --key pwdfile=$t/pw,mode=aes-256-cbc --daemon --pid file=$t/pid; "
        "for i in $(seq 100); do [ -S $t/c ] && break; sleep 0.05; done; "
        "swtpm_ioctl --unix $t/c -i; swtpm_ioctl --unix $t/c -s; rm -f $t/pw",
        dir, sub, pw, v == VTPM_VERSION_2_0 ? "--tpm2" : "");
    const char *argv[] = { "bash", "-c", script, NULL };
    int status = 1;

    assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                             NULL, &status, NULL));
    assert_true(g_spawn_check_wait_status(status, NULL));
}

static void
run(vtpm_version v)
{
    g_autofree char *tmp = g_dir_make_tmp("vt-rekey-XXXXXX", NULL);
    g_autofree char *old_dir = g_build_filename(tmp, "old", NULL);
    g_autofree char *new_dir = g_build_filename(tmp, "new", NULL);
    g_autofree char *scratch = g_build_filename(tmp, "scratch", NULL);
    g_autofree char *old_file = g_build_filename(old_dir, vtpm_rekey_subdir(v),
                                                 vtpm_rekey_state_file(v), NULL);
    g_autofree char *new_file = g_build_filename(new_dir, vtpm_rekey_subdir(v),
                                                 vtpm_rekey_state_file(v), NULL);
    g_autofree char *sha0 = NULL, *sha1 = NULL, *nsha = NULL;
    g_autoptr(GBytes) k_old = key_of("old passphrase"), k_new = key_of("new passphrase");
    g_autoptr(GBytes) k_bad = key_of("not the passphrase");
    g_autoptr(GBytes) blob = NULL, again = NULL, none = NULL;
    vtpm_error err = { 0 };

    assert_non_null(tmp);
    g_mkdir(old_dir, 0700);
    g_mkdir(new_dir, 0700);
    g_mkdir(scratch, 0700);
    make_state(old_dir, v, "old passphrase");
    sha0 = sha_file(old_file);
    assert_non_null(sha0);

    /* A wrong key: SecretInvalid, nothing handed out. */
    assert_int_equal(vtpm_rekey_export(old_dir, v, k_bad, scratch, &none, &err),
                     -VTPM_FAULT_SECRET_INVALID);
    assert_null(none);

    assert_int_equal(vtpm_rekey_export(old_dir, v, k_old, scratch, &blob, &err), 0);
    assert_true(g_bytes_get_size(blob) > 256);
    assert_int_equal(vtpm_rekey_write(new_dir, v, blob, k_old, k_new, scratch, &err), 0);

    /* The state it was given is untouched: swtpm only ran on copies. */
    sha1 = sha_file(old_file);
    assert_string_equal(sha0, sha1);
    nsha = sha_file(new_file);
    assert_non_null(nsha);
    assert_string_not_equal(nsha, sha0);

    /* The old key does not open the new state; the new key does. */
    err = (vtpm_error){ 0 };
    assert_int_equal(vtpm_rekey_export(new_dir, v, k_old, scratch, &none, &err),
                     -VTPM_FAULT_SECRET_INVALID);
    assert_int_equal(vtpm_rekey_export(new_dir, v, k_new, scratch, &again, &err), 0);
    assert_int_equal(g_bytes_get_size(again), g_bytes_get_size(blob));

    /* No state at all: StateNotFound, not a key problem. */
    err = (vtpm_error){ 0 };
    assert_int_equal(vtpm_rekey_export(scratch, v, k_old, scratch, &none, &err),
                     -VTPM_FAULT_STATE_NOT_FOUND);

    /* The scratch dir is left as found: no copies, no sockets. */
    {
        g_autoptr(GDir) d = g_dir_open(scratch, 0, NULL);
        const char *left = g_dir_read_name(d);

        if (left)
            fail_msg("scratch dir holds %s after the run", left);
    }
    {
        g_autofree char *rm = g_strdup_printf("rm -rf '%s'", tmp);

        g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL);
    }
}

static void
test_tpm2(void **state)
{
    run(VTPM_VERSION_2_0);
}

static void
test_tpm12(void **state)
{
    run(VTPM_VERSION_1_2);
}

/* A start that fails on a wrong key is told apart by what swtpm logged
 * after the start began (@from): an older failure earlier in the same
 * log, or a message past the scanned window, says nothing. */
static void
test_log_says_bad_key(void **state)
{
    g_autofree char *dir = g_dir_make_tmp("test_rekey-log-XXXXXX", NULL);
    g_autofree char *log = g_build_filename(dir, "swtpm.log", NULL);
    g_autofree char *old = g_strdup("swtpm: Error from SWTPM_NVRAM_GetDecryptedData\n");
    g_autofree char *pad = g_strnfill(VTPM_REKEY_LOG_SCAN, 'x');
    g_autofree char *text = NULL;

    assert_non_null(dir);
    assert_false(vtpm_rekey_log_says_bad_key(log, 0)); /* no log yet */
    assert_true(g_file_set_contents(log, "swtpm: CMD_INIT ok\n", -1, NULL));
    assert_false(vtpm_rekey_log_says_bad_key(log, 0));
    assert_true(g_file_set_contents(log, old, -1, NULL));
    assert_true(vtpm_rekey_log_says_bad_key(log, 0));
    assert_false(vtpm_rekey_log_says_bad_key(log, (off_t)strlen(old)));
    text = g_strconcat(old, "swtpm: Verification of HMAC failed\n", NULL);
    assert_true(g_file_set_contents(log, text, -1, NULL));
    assert_true(vtpm_rekey_log_says_bad_key(log, (off_t)strlen(old)));
    g_free(text);
    text = g_strconcat(pad, "swtpm: Verification of HMAC failed\n", NULL);
    assert_true(g_file_set_contents(log, text, -1, NULL));
    assert_false(vtpm_rekey_log_says_bad_key(log, 0));
    assert_true(vtpm_rekey_log_says_bad_key(log, 1024));
    assert_int_equal(g_unlink(log), 0);
    assert_int_equal(g_rmdir(dir), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tpm2),
        cmocka_unit_test(test_tpm12),
        cmocka_unit_test(test_log_says_bad_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
