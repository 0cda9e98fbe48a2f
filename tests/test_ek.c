/* SPDX-License-Identifier: Apache-2.0 */
/*
 * worker/ek.c with this host's swtpm_setup, swtpm_localca and swtpm, and a
 * test CA made with openssl: the CA's checks at start, and TPMs made with
 * it, looked at the way a guest and a tenant would (tpm2-tools against
 * swtpm on the made state; openssl verify of the certificates).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "ek.h"
#include "fsutil.h"
#include "lib/testca.h"
#include "vtpm/proto.h"

#define UUID "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001"
#define SECRET "the instance's passphrase"

typedef struct {
    tc_ca *ca;
    char *root; /* work and state dirs */
} fx;

static int
setup(void **state)
{
    fx *f = g_new0(fx, 1);

    f->ca = tc_ca_new();
    f->root = g_dir_make_tmp("test_ek-XXXXXX", NULL);
    assert_non_null(f->root);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    vtpm_error err = { 0 };

    tc_ca_free(f->ca);
    assert_int_equal(vtpm_fs_rmtree(f->root, &err), 0);
    g_free(f->root);
    g_free(f);
    return 0;
}

static vtpm_ek_ca *
load_ca(fx *f)
{
    g_autofree char *cert = tc_path(f->ca, "ca.pem"), *key = tc_path(f->ca, "ca.key");
    vtpm_ek_ca *ca = NULL;
    vtpm_error err = { 0 };

    if (vtpm_ek_ca_load(cert, key, &ca, &err) < 0)
        fail_msg("loading the CA: %s", err.message);
    return ca;
}

static void
expect_load_fault(const char *cert, const char *key, const char *message)
{
    vtpm_ek_ca *ca = (vtpm_ek_ca *)&ca;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_ek_ca_load(cert, key, &ca, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    if (strcmp(err.message, message) != 0)
        fail_msg("expected: %s\ngot:      %s", message, err.message);
    assert_ptr_equal(ca, (vtpm_ek_ca *)&ca);
}

/* What vtpmd refuses to start with, each naming the key, file and fix. */
static void
test_ca_checks(void **state)
{
    fx *f = *state;
    g_autofree char *cert = tc_path(f->ca, "ca.pem"), *key = tc_path(f->ca, "ca.key");
    g_autofree char *leaf = tc_path(f->ca, "leaf.pem"), *leaf_key = tc_path(f->ca, "leaf.key");
    g_autofree char *enc = tc_path(f->ca, "enc.key"), *junk = tc_path(f->ca, "junk.pem");
    g_autofree char *none = tc_path(f->ca, "none.pem");
    g_autofree char *m = NULL;
    g_autoptr(vtpm_ek_ca) ca = NULL;

    assert_int_equal(chmod(key, 0640), 0);
    m = g_strdup_printf("[vtpm] ek_ca_key %s has mode 0640; it must be 0600 (readable by its "
                        "owner only)", key);
    expect_load_fault(cert, key, m);
    assert_int_equal(chmod(key, 0400), 0);
    ca = load_ca(f);
    assert_string_equal(vtpm_ek_ca_subject(ca), "CN=Test EK CA,O=vtpmd test");
    assert_int_equal(strlen(vtpm_ek_ca_sha256(ca)), 64);
    assert_int_equal(chmod(key, 0600), 0);

    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_cert %s: No such file or directory", none);
    expect_load_fault(none, key, m);
    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_cert %s: not a regular file of at most 1 MiB", f->root);
    expect_load_fault(f->root, key, m);

    tc_make_cert(f->ca, "leaf", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", "/CN=leaf");
    tc_openssl(f->ca, "x509 -inform der -in leaf.der -out leaf.pem");
    assert_int_equal(chmod(leaf_key, 0600), 0);
    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_cert %s is not a CA certificate (basic constraints "
                        "CA:TRUE): a verifier would refuse what it signs", leaf);
    expect_load_fault(leaf, leaf_key, m);
    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_key %s is not the key of [vtpm] ek_ca_cert", leaf_key);
    expect_load_fault(cert, leaf_key, m);

    tc_openssl(f->ca, "pkey -in ca.key -aes256 -passout pass:pw -out enc.key");
    assert_int_equal(chmod(enc, 0600), 0);
    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_key %s: not an unencrypted PEM private key", enc);
    {
        vtpm_ek_ca *x = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(vtpm_ek_ca_load(cert, enc, &x, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_true(g_str_has_prefix(err.message, m));
    }
    assert_true(g_file_set_contents(junk, "not a certificate\n", -1, NULL));
    g_free(m);
    m = g_strdup_printf("[vtpm] ek_ca_cert %s: not a PEM certificate", junk);
    {
        vtpm_ek_ca *x = NULL;
        vtpm_error err = { 0 };

        assert_int_equal(vtpm_ek_ca_load(junk, key, &x, &err), -(int)VTPM_FAULT_BAD_REQUEST);
        assert_true(g_str_has_prefix(err.message, m));
    }
}

/* ---- a TPM made with the CA ----------------------------------------------------------- */

static vtpm_identity *
manufacture(fx *f, vtpm_version v, unsigned banks, GBytes *key, const char *name)
{
    g_autoptr(vtpm_ek_ca) ca = load_ca(f);
    g_autofree char *dir = g_build_filename(f->root, name, NULL);
    g_autofree char *work = g_strdup_printf("%s/%s.work", f->root, name);
    vtpm_ek_params p = { dir, work, v, UUID, banks, key, (int)getuid(), (int)getgid() };
    vtpm_identity *id = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(g_mkdir(work, 0700), 0);
    if (vtpm_ek_manufacture(ca, &p, &id, &err) < 0)
        fail_msg("manufacture: %s", err.message);
    return id;
}

/* Run @argv; its stdout; fails the test when it fails. */
static char *
run(const char *const *argv, const char *const *envp)
{
    g_autofree char *errout = NULL;
    g_autoptr(GError) gerr = NULL;
    char *out = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, (char **)envp, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      &errout, &status, &gerr) ||
        !g_spawn_check_wait_status(status, NULL))
        fail_msg("%s failed: %s%s", argv[0], gerr ? gerr->message : "", errout ? errout : "");
    return out;
}

/* openssl verify -CAfile ca.pem of a PEM certificate, and its subject. */
static void
assert_verifies(fx *f, const char *cert_pem)
{
    g_autofree char *path = g_build_filename(f->root, "cert.pem", NULL);
    g_autofree char *ca = tc_path(f->ca, "ca.pem");
    const char *verify[] = { "openssl", "verify", "-CAfile", ca, path, NULL };
    const char *subject[] = { "openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253",
                              "-in", path, NULL };
    g_autofree char *v = NULL, *s = NULL;

    assert_true(g_file_set_contents(path, cert_pem, -1, NULL));
    v = run(verify, NULL);
    assert_non_null(strstr(v, ": OK"));
    s = run(subject, NULL);
    assert_string_equal(g_strstrip(s), "subject=CN=" UUID);
}

/* swtpm on the made state over TCP, where tpm2-tools find it. */
typedef struct {
    GSubprocess *p;
    char *tcti;
} swtpm_tcp;

static bool
port_open(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int s = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;

    close(s);
    return ok;
}

static void
swtpm_tcp_start(fx *f, const char *sub, swtpm_tcp *out)
{
    g_autofree char *pw = g_build_filename(f->root, "pw", NULL);
    int port = 20000 + (int)(getpid() % 10000) * 2;
    g_autofree char *state = g_strdup_printf("dir=%s", sub);
    g_autofree char *server = g_strdup_printf("type=tcp,port=%d,bindaddr=127.0.0.1", port);
    g_autofree char *ctrl = g_strdup_printf("type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
    g_autofree char *key = g_strdup_printf("pwdfile=%s,mode=aes-256-cbc", pw);
    g_autoptr(GError) gerr = NULL;

    assert_true(g_file_set_contents(pw, SECRET, -1, NULL));
    out->p = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, &gerr, "swtpm", "socket", "--tpm2",
                              "--tpmstate", state, "--server", server, "--ctrl", ctrl, "--flags",
                              "not-need-init,startup-clear", "--key", key, NULL);
    assert_non_null(out->p);
    for (int i = 0; i < 200 && !port_open(port); i++)
        g_usleep(50000);
    out->tcti = g_strdup_printf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", port);
}

static void
swtpm_tcp_stop(swtpm_tcp *s)
{
    g_subprocess_send_signal(s->p, SIGTERM);
    g_subprocess_wait(s->p, NULL, NULL);
    g_clear_object(&s->p);
    g_clear_pointer(&s->tcti, g_free);
}

static void
assert_file_text(const char *path, const char *want)
{
    g_autofree char *text = NULL;

    assert_true(g_file_get_contents(path, &text, NULL, NULL));
    assert_string_equal(text, want);
}

/* What a guest reads: the certificates in NV and the keys tpm2_createek
 * recreates are the record's. */
static void
assert_guest_view(fx *f, const vtpm_identity *id, const char *sub)
{
    g_autofree char *rsa_pub = g_build_filename(f->root, "rsa.pub", NULL);
    g_autofree char *ecc_pub = g_build_filename(f->root, "ecc.pub", NULL);
    g_autofree char *nv = g_build_filename(f->root, "nv.der", NULL);
    g_autofree char *nv_pem = NULL, *pcrs = NULL;
    swtpm_tcp s = { 0 };
    const char *env[2] = { NULL, NULL };

    swtpm_tcp_start(f, sub, &s);
    env[0] = s.tcti;
    {
        const char *ek_rsa[] = { "tpm2_createek", "-G", "rsa", "-c", "/dev/null", "-u", rsa_pub,
                                 "-f", "pem", NULL };
        const char *ek_ecc[] = { "tpm2_createek", "-G", "ecc", "-c", "/dev/null", "-u", ecc_pub,
                                 "-f", "pem", NULL };
        const char *getcap[] = { "tpm2_getcap", "pcrs", NULL };

        g_free(run(ek_rsa, env));
        g_free(run(ek_ecc, env));
        pcrs = run(getcap, env);
    }
    assert_file_text(rsa_pub, id->ek[0].public_pem);
    assert_file_text(ecc_pub, id->ek[1].public_pem);
    for (size_t i = 0; i < 2; i++) {
        const char *idx = i == 0 ? "0x01c00002" : "0x01c0000a";
        const char *nvread[] = { "tpm2_nvread", "-C", "o", "-o", nv, idx, NULL };
        const char *to_pem[] = { "openssl", "x509", "-inform", "der", "-in", nv, NULL };

        g_free(run(nvread, env));
        nv_pem = run(to_pem, NULL);
        assert_string_equal(nv_pem, id->ek[i].cert_pem);
        g_clear_pointer(&nv_pem, g_free);
    }
    /* The other certificates swtpm_setup makes, signed by the same CA: the
     * ECC NIST P-384 EK's and the platform certificate. */
    for (size_t i = 0; i < 2; i++) {
        const char *idx = i == 0 ? "0x01c00016" : "0x01c08000";
        g_autofree char *pem = g_build_filename(f->root, "nv.pem", NULL);
        g_autofree char *ca = tc_path(f->ca, "ca.pem");
        const char *nvread[] = { "tpm2_nvread", "-C", "o", "-o", nv, idx, NULL };
        const char *to_pem[] = { "openssl", "x509", "-inform", "der", "-in", nv, "-out", pem,
                                 NULL };
        const char *verify[] = { "openssl", "verify", "-CAfile", ca, pem, NULL };
        g_autofree char *v = NULL;

        g_free(run(nvread, env));
        g_free(run(to_pem, NULL));
        v = run(verify, NULL);
        if (!strstr(v, ": OK"))
            fail_msg("the certificate in NV %s does not verify against the CA: %s", idx, v);
    }
    /* Exactly the banks asked for: sha256 and sha384. */
    assert_non_null(strstr(pcrs, "sha1: [ ]"));
    assert_non_null(strstr(pcrs, "sha512: [ ]"));
    assert_null(strstr(pcrs, "sha256: [ ]"));
    assert_null(strstr(pcrs, "sha384: [ ]"));
    swtpm_tcp_stop(&s);
}

static void
test_tpm2(void **state)
{
    fx *f = *state;
    g_autoptr(GBytes) key = g_bytes_new_static(SECRET, strlen(SECRET));
    g_autoptr(vtpm_identity) id = manufacture(
        f, VTPM_VERSION_2_0, 1u << VTPM_PCR_SHA256 | 1u << VTPM_PCR_SHA384, key, "t2");
    g_autofree char *dir = g_build_filename(f->root, "t2", NULL);
    g_autofree char *sub = g_build_filename(dir, "tpm2", NULL);
    g_autofree char *file = g_build_filename(sub, "tpm2-00.permall", NULL);
    g_autoptr(vtpm_ek_ca) ca = load_ca(f);
    struct stat st;

    assert_int_equal(id->version, VTPM_VERSION_2_0);
    assert_int_equal(id->n_ek, 2);
    assert_int_equal(id->ek[0].alg, VTPM_EK_RSA2048);
    assert_int_equal(id->ek[1].alg, VTPM_EK_ECC_NIST_P256);
    assert_string_equal(id->ca_subject, vtpm_ek_ca_subject(ca));
    assert_string_equal(id->ca_sha256, vtpm_ek_ca_sha256(ca));
    assert_verifies(f, id->ek[0].cert_pem);
    assert_verifies(f, id->ek[1].cert_pem);
    /* libvirt's modes. */
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0711);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_guest_view(f, id, sub);
}

static void
test_tpm12(void **state)
{
    fx *f = *state;
    g_autoptr(vtpm_identity) id = manufacture(f, VTPM_VERSION_1_2, 0, NULL, "t12");
    g_autofree char *file = g_build_filename(f->root, "t12", "tpm1.2", "tpm-00.permall", NULL);
    g_autofree char *ca = tc_path(f->ca, "ca.pem");
    g_autofree char *path = g_build_filename(f->root, "cert.pem", NULL);
    const char *verify[] = { "openssl", "verify", "-CAfile", ca, path, NULL };
    g_autofree char *v = NULL;

    assert_int_equal(id->version, VTPM_VERSION_1_2);
    assert_int_equal(id->n_ek, 1);
    assert_int_equal(id->ek[0].alg, VTPM_EK_RSA2048);
    assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    /* TPM 1.2 certificates have no subject (swtpm_cert): only the chain. */
    assert_true(g_file_set_contents(path, id->ek[0].cert_pem, -1, NULL));
    v = run(verify, NULL);
    assert_non_null(strstr(v, ": OK"));
}

/* A state dir that exists is never made over. */
static void
test_dir_exists(void **state)
{
    fx *f = *state;
    g_autoptr(vtpm_ek_ca) ca = load_ca(f);
    g_autofree char *dir = g_build_filename(f->root, "there", NULL);
    g_autofree char *work = g_build_filename(f->root, "work", NULL);
    vtpm_ek_params p = { dir, work, VTPM_VERSION_2_0, UUID, 0, NULL, 0, 0 };
    vtpm_identity *id = NULL;
    vtpm_error err = { 0 };
    g_autofree char *m = g_strdup_printf("creating %s: File exists", dir);

    assert_int_equal(g_mkdir(dir, 0700), 0);
    assert_int_equal(g_mkdir(work, 0700), 0);
    assert_int_equal(vtpm_ek_manufacture(ca, &p, &id, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_string_equal(err.message, m);
    assert_null(id);
}

/* The CA files changed after the check at start: nothing is signed, and
 * swtpm_localca never meets a missing key (it would make a new CA). */
static void
test_ca_changed(void **state)
{
    fx *f = *state;
    g_autoptr(vtpm_ek_ca) ca = load_ca(f);
    g_autoptr(tc_ca) other = tc_ca_new();
    g_autofree char *cert = tc_path(f->ca, "ca.pem"), *key = tc_path(f->ca, "ca.key");
    g_autofree char *dir = g_build_filename(f->root, "t", NULL);
    g_autofree char *work = g_build_filename(f->root, "work", NULL);
    g_autoptr(GBytes) other_pem = tc_bytes(other, "ca.pem");
    g_autoptr(GBytes) keep_key = tc_bytes(f->ca, "ca.key");
    vtpm_ek_params p = { dir, work, VTPM_VERSION_2_0, UUID, 0, NULL, 0, 0 };
    vtpm_identity *id = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(g_mkdir(work, 0700), 0);
    assert_true(g_file_set_contents(cert, g_bytes_get_data(other_pem, NULL),
                                    g_bytes_get_size(other_pem), NULL));
    assert_int_equal(vtpm_ek_manufacture(ca, &p, &id, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_non_null(strstr(err.message, "changed since vtpmd started"));
    assert_non_null(strstr(err.message, "restart vtpmd"));
    assert_null(id);
    assert_int_equal(unlink(key), 0);
    assert_int_equal(vtpm_fs_rmtree(dir, &err), 0);
    assert_int_equal(vtpm_ek_manufacture(ca, &p, &id, &err), -(int)VTPM_FAULT_INTERNAL);
    assert_non_null(strstr(err.message, "No such file or directory"));
    /* ... and no CA was made in its place. */
    assert_false(g_file_test(key, G_FILE_TEST_EXISTS));
    assert_true(g_file_set_contents(key, g_bytes_get_data(keep_key, NULL),
                                    g_bytes_get_size(keep_key), NULL));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_ca_checks),
        T(test_tpm2),
        T(test_tpm12),
        T(test_dir_exists),
        T(test_ca_changed),
    };

    for (const char *const *p = (const char *const[]){ "swtpm", "swtpm_setup", "swtpm_localca",
                                                       "tpm2_createek", "openssl", NULL };
         *p; p++) {
        g_autofree char *found = g_find_program_in_path(*p);

        if (!found) {
            print_message("%s is not installed (tools/install-deps): skipped\n", *p);
            return 77;
        }
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
