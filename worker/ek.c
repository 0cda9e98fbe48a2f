/* SPDX-License-Identifier: Apache-2.0 */
/* Making a vTPM with the deployment's EK CA (ek.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "ek.h"
#include "child.h"
#include "fsutil.h"
#include "rekey.h"
#include "timing.h"
#include "tpm2.h"
#include "vtpm/proto.h"

#define MAX_PEM_FILE (1024 * 1024)
#define MAX_CERT (64 * 1024)
/* What a fault message quotes of a tool's log: its end says why. */
#define LOG_TAIL 300

struct vtpm_ek_ca {
    char *cert_path, *key_path;
    gnutls_x509_crt_t crt;
    char *subject, *sha256;
};

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_privkey_t, gnutls_x509_privkey_deinit, NULL)

/* ---- the CA ------------------------------------------------------------------------ */

void
vtpm_ek_ca_free(vtpm_ek_ca *ca)
{
    if (!ca)
        return;
    g_free(ca->cert_path);
    g_free(ca->key_path);
    if (ca->crt)
        gnutls_x509_crt_deinit(ca->crt);
    g_free(ca->subject);
    g_free(ca->sha256);
    g_free(ca);
}

const char *
vtpm_ek_ca_subject(const vtpm_ek_ca *ca)
{
    return ca->subject;
}

const char *
vtpm_ek_ca_sha256(const vtpm_ek_ca *ca)
{
    return ca->sha256;
}

/* Read @path whole (a regular file).  @key: it holds a private key, which
 * only its owner may read. */
static int
read_pem(const char *what, const char *path, bool key, GBytes **out, vtpm_error *err)
{
    g_autofree guint8 *buf = NULL;
    struct stat st;
    ssize_t n;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (f < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s %s: %s", what, path,
                              g_strerror(errno));
    if (fstat(f, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_PEM_FILE) {
        close(f);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s %s: not a regular file of at most 1 MiB", what, path);
    }
    if (key && (st.st_mode & 077) != 0) {
        close(f);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "%s %s has mode %04o; it must be 0600 (readable by its owner "
                              "only)",
                              what, path, (unsigned)(st.st_mode & 07777));
    }
    buf = g_malloc(st.st_size + 1);
    n = pread(f, buf, st.st_size, 0);
    close(f);
    if (n != st.st_size) {
        explicit_bzero(buf, st.st_size + 1);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "%s %s: cannot be read", what, path);
    }
    *out = key ? vtpm_bytes_new_wiped(g_steal_pointer(&buf), n) : g_bytes_new(buf, n);
    return 0;
}

/* The certificate is a CA's, one that may sign certificates. */
static int
check_ca_cert(gnutls_x509_crt_t crt, const char *path, vtpm_error *err)
{
    unsigned ca = 0, usage = 0, critical = 0;

    if (gnutls_x509_crt_get_basic_constraints(crt, &critical, &ca, NULL) < 0 || !ca)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] ek_ca_cert %s is not a CA certificate (basic constraints "
                              "CA:TRUE): a verifier would refuse what it signs",
                              path);
    if (gnutls_x509_crt_get_key_usage(crt, &usage, &critical) >= 0 &&
        !(usage & GNUTLS_KEY_KEY_CERT_SIGN))
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] ek_ca_cert %s: its key usage lacks keyCertSign", path);
    return 0;
}

/* The key belongs to the certificate. */
static int
check_key(gnutls_x509_crt_t crt, GBytes *pem, const char *path, vtpm_error *err)
{
    g_auto(gnutls_x509_privkey_t) key = NULL;
    gnutls_datum_t d = { (unsigned char *)g_bytes_get_data(pem, NULL),
                         (unsigned)g_bytes_get_size(pem) };
    guint8 a[64], b[64];
    size_t la = sizeof(a), lb = sizeof(b);
    int rc;

    if ((rc = gnutls_x509_privkey_init(&key)) < 0 ||
        (rc = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL,
                                          GNUTLS_PKCS_PLAIN)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] ek_ca_key %s: not an unencrypted PEM private key (%s)",
                              path, gnutls_strerror(rc));
    if (gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, a, &la) < 0 ||
        gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, b, &lb) < 0 || la != lb ||
        memcmp(a, b, la) != 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] ek_ca_key %s is not the key of [vtpm] ek_ca_cert", path);
    return 0;
}

static int
ca_cert(vtpm_ek_ca *ca, GBytes *pem, const char *path, vtpm_error *err)
{
    gnutls_datum_t d = { (unsigned char *)g_bytes_get_data(pem, NULL),
                         (unsigned)g_bytes_get_size(pem) };
    gnutls_datum_t der = { 0 };
    g_autoptr(GBytes) b = NULL;
    int rc;

    if ((rc = gnutls_x509_crt_init(&ca->crt)) < 0 ||
        (rc = gnutls_x509_crt_import(ca->crt, &d, GNUTLS_X509_FMT_PEM)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] ek_ca_cert %s: not a PEM certificate (%s)", path,
                              gnutls_strerror(rc));
    if ((rc = check_ca_cert(ca->crt, path, err)) < 0)
        return rc;
    if ((rc = gnutls_x509_crt_export2(ca->crt, GNUTLS_X509_FMT_DER, &der)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "[vtpm] ek_ca_cert %s: %s", path,
                              gnutls_strerror(rc));
    b = g_bytes_new(der.data, der.size);
    gnutls_free(der.data);
    return vtpm_identity_describe_ca(b, &ca->subject, &ca->sha256, err);
}

int
vtpm_ek_ca_load(const char *cert_path, const char *key_path, vtpm_ek_ca **out, vtpm_error *err)
{
    g_autoptr(vtpm_ek_ca) ca = g_new0(vtpm_ek_ca, 1);
    g_autoptr(GBytes) cert = NULL, key = NULL;
    int rc;

    ca->cert_path = g_strdup(cert_path);
    ca->key_path = g_strdup(key_path);
    if ((rc = read_pem("[vtpm] ek_ca_cert", cert_path, false, &cert, err)) < 0 ||
        (rc = read_pem("[vtpm] ek_ca_key", key_path, true, &key, err)) < 0 ||
        (rc = ca_cert(ca, cert, cert_path, err)) < 0 ||
        (rc = check_key(ca->crt, key, key_path, err)) < 0)
        return rc;
    *out = g_steal_pointer(&ca);
    return 0;
}

/* ---- running the tools ---------------------------------------------------------------- */

static char *
log_tail(const char *path, const char *fallback)
{
    g_autofree char *text = NULL;
    size_t n;

    if (!path || !g_file_get_contents(path, &text, NULL, NULL))
        return g_strdup(fallback ? g_strstrip((char *)fallback) : "");
    g_strstrip(text);
    n = strlen(text);
    return g_strdup(n > LOG_TAIL ? text + n - LOG_TAIL : text);
}

/* Run @argv (NULL-terminated), the passphrase @key (NULL: none) on its
 * fd 3; Internal with the end of @log (or of its output) when it fails. */
static int
run_tool(const char *const *argv, GBytes *key, const char *log, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    g_autoptr(vtpm_child) p = NULL;
    g_autofree char *out = NULL, *tail = NULL, *how = NULL;
    int kfd[1] = { -1 }, status = 0, rc;

    if (key && (rc = vtpm_tpm2_passphrase_fd(key, &kfd[0], err)) < 0)
        return rc;
    if ((rc = vtpm_child_spawn(argv, kfd, key ? 1 : 0, VTPM_CHILD_MERGED, &p, err)) < 0 ||
        (rc = vtpm_child_finish(p, &status, &out, err)) < 0)
        return rc;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    tail = log_tail(log, out);
    how = vtpm_child_describe_status(status);
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s failed (%s): %s", argv[0], how, tail);
}

static int
write_file(const char *dir, const char *name, const char *text, vtpm_error *err)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) gerr = NULL;

    if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_NONE, 0600, &gerr))
        return vtpm_error_set(err, vtpm_fs_fault(gerr->code == G_FILE_ERROR_NOSPC ? ENOSPC : 0),
                              "writing %s: %s", path, gerr->message);
    return 0;
}

/* The CA files are still the ones checked at start: swtpm_localca makes a
 * new CA in place of a missing one, and a replaced key would sign for a
 * CA the records do not name (check_signed would refuse its certificates
 * afterwards; this refuses before anything is signed). */
static int
check_ca_files(const vtpm_ek_ca *ca, vtpm_error *err)
{
    g_autoptr(GBytes) cert = NULL, key = NULL;
    gnutls_datum_t pem, der = { 0 };
    g_autofree char *sha = NULL;
    vtpm_error e = { 0 };
    g_auto(gnutls_x509_crt_t) crt = NULL;

    if (read_pem("[vtpm] ek_ca_key", ca->key_path, true, &key, &e) < 0 ||
        read_pem("[vtpm] ek_ca_cert", ca->cert_path, false, &cert, &e) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "%s (restart vtpmd after changing the "
                              "EK CA)", e.message);
    pem = (gnutls_datum_t){ (unsigned char *)g_bytes_get_data(cert, NULL),
                            (unsigned)g_bytes_get_size(cert) };
    if (gnutls_x509_crt_init(&crt) >= 0 &&
        gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM) >= 0 &&
        gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) >= 0) {
        sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, der.data, der.size);
        gnutls_free(der.data);
    }
    if (g_strcmp0(sha, ca->sha256) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "[vtpm] ek_ca_cert %s changed since vtpmd started (sha256 %s); "
                              "restart vtpmd to use the new CA",
                              ca->cert_path, ca->sha256);
    return 0;
}

/* swtpm_setup.conf and swtpm-localca's files in @work; the serial number
 * starts at random, since every host of the deployment signs with the
 * same CA. */
static int
write_configs(const vtpm_ek_ca *ca, const char *work, vtpm_error *err)
{
    g_autofree char *localca = g_find_program_in_path("swtpm_localca");
    g_autofree char *setup = NULL, *conf = NULL, *serial = NULL, *statedir = NULL;
    guint64 r = 0;
    int rc;

    if (!localca)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm_localca is not installed");
    statedir = g_build_filename(work, "ca", NULL);
    if ((rc = vtpm_fs_mkdirs(statedir, 0700, err)) < 0)
        return rc;
    if (gnutls_rnd(GNUTLS_RND_NONCE, &r, sizeof(r)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "GnuTLS cannot produce random bytes");
    serial = g_strdup_printf("%" G_GUINT64_FORMAT, (r >> 2) | 1);
    setup = g_strdup_printf("create_certs_tool = %s\ncreate_certs_tool_config = %s/localca.conf\n"
                            "create_certs_tool_options = %s/localca.options\n",
                            localca, work, work);
    conf = g_strdup_printf("statedir = %s\nsigningkey = %s\nissuercert = %s\n"
                           "certserial = %s/certserial\n",
                           statedir, ca->key_path, ca->cert_path, statedir);
    if ((rc = write_file(work, "swtpm_setup.conf", setup, err)) < 0 ||
        (rc = write_file(work, "localca.conf", conf, err)) < 0 ||
        (rc = write_file(work, "localca.options",
                         "--platform-manufacturer vtpmd\n--platform-model QEMU\n"
                         "--platform-version 1.0\n",
                         err)) < 0 ||
        (rc = write_file(statedir, "certserial", serial, err)) < 0)
        return rc;
    return 0;
}

static void
add(GPtrArray *a, const char *s)
{
    g_ptr_array_add(a, g_strdup(s));
}

/* swtpm_setup as libvirt runs it, with the private configuration. */
static int
run_swtpm_setup(const vtpm_ek_params *p, const char *sub, vtpm_error *err)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *log = g_build_filename(p->work, "swtpm_setup.log", NULL);
    g_autofree char *banks = vtpm_pcr_banks_format(p->pcr_banks ? p->pcr_banks
                                                                : 1u << VTPM_PCR_SHA256);

    add(argv, "swtpm_setup");
    if (p->version == VTPM_VERSION_2_0)
        add(argv, "--tpm2");
    add(argv, "--tpm-state");
    add(argv, sub);
    add(argv, "--config");
    g_ptr_array_add(argv, g_build_filename(p->work, "swtpm_setup.conf", NULL));
    add(argv, "--logfile");
    add(argv, log);
    add(argv, "--createek");
    add(argv, "--create-ek-cert");
    add(argv, "--create-platform-cert");
    add(argv, "--lock-nvram");
    add(argv, "--not-overwrite");
    add(argv, "--vmid");
    add(argv, p->uuid);
    add(argv, "--write-ek-cert-files");
    g_ptr_array_add(argv, g_build_filename(p->work, "certs", NULL));
    if (p->version == VTPM_VERSION_2_0) {
        add(argv, "--pcr-banks");
        add(argv, banks);
    }
    if (p->key) {
        add(argv, "--pwdfile-fd");
        add(argv, "3");
        add(argv, "--cipher");
        add(argv, "aes-256-cbc");
    }
    g_ptr_array_add(argv, NULL);
    return run_tool((const char *const *)argv->pdata, p->key, log, err);
}

/* swtpm_localca for the P-256 EK, as swtpm_setup invokes it for the
 * others: the certificate in @work/p256/ek.cert. */
static int
run_localca(const vtpm_ek_params *p, const char *ekparam, GPtrArray *params, vtpm_error *err)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *dir = g_build_filename(p->work, "p256", NULL);
    g_autofree char *log = g_build_filename(p->work, "swtpm_localca.log", NULL);
    int rc;

    if ((rc = vtpm_fs_mkdirs(dir, 0700, err)) < 0)
        return rc;
    add(argv, "swtpm_localca");
    add(argv, "--type");
    add(argv, "ek");
    add(argv, "--ek");
    add(argv, ekparam);
    add(argv, "--dir");
    add(argv, dir);
    add(argv, "--logfile");
    add(argv, log);
    add(argv, "--vmid");
    add(argv, p->uuid);
    for (guint i = 0; i < params->len; i++)
        add(argv, params->pdata[i]);
    add(argv, "--tpm2");
    add(argv, "--configfile");
    g_ptr_array_add(argv, g_build_filename(p->work, "localca.conf", NULL));
    add(argv, "--optsfile");
    g_ptr_array_add(argv, g_build_filename(p->work, "localca.options", NULL));
    g_ptr_array_add(argv, NULL);
    return run_tool((const char *const *)argv->pdata, NULL, log, err);
}

static int
read_cert(const char *work, const char *rel, GBytes **out, vtpm_error *err)
{
    g_autofree char *path = g_build_filename(work, rel, NULL);
    int rc = vtpm_fs_read(path, MAX_CERT, out, err);

    if (rc < 0)
        vtpm_error_prefix(err, "the EK certificate the tools made");
    return rc < 0 ? -(int)VTPM_FAULT_INTERNAL : 0;
}

/* The certificate chains to the CA: what a tenant will check.  swtpm_cert
 * signs a TPM 1.2's with SHA-1 (the 1.2 world's hash), which GnuTLS
 * refuses unless told; a 2.0's with SHA-256. */
static int
check_signed(const vtpm_ek_ca *ca, GBytes *der, vtpm_version version, vtpm_error *err)
{
    unsigned flags = version == VTPM_VERSION_1_2 ? GNUTLS_VERIFY_ALLOW_SIGN_WITH_SHA1 : 0;
    g_auto(gnutls_x509_crt_t) crt = NULL;
    gnutls_datum_t d = { (unsigned char *)g_bytes_get_data(der, NULL),
                         (unsigned)g_bytes_get_size(der) };
    unsigned status = 0;
    int rc;

    if ((rc = gnutls_x509_crt_init(&crt)) < 0 ||
        (rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER)) < 0 ||
        (rc = gnutls_x509_crt_verify(crt, &ca->crt, 1, flags, &status)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "checking an EK certificate: %s",
                              gnutls_strerror(rc));
    if (status != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "an EK certificate does not verify against [vtpm] ek_ca_cert "
                              "(GnuTLS status 0x%x)",
                              status);
    return 0;
}

/* Add the EK of @cert_rel to @id, after checking it against the CA. */
static int
add_ek(const vtpm_ek_ca *ca, const char *work, const char *cert_rel, const char *pub,
       vtpm_identity *id, vtpm_error *err)
{
    g_autoptr(GBytes) der = NULL;
    int rc;

    if ((rc = read_cert(work, cert_rel, &der, err)) < 0 ||
        (rc = check_signed(ca, der, id->version, err)) < 0)
        return rc;
    return vtpm_identity_add_ek(id, pub, der, err);
}

/* TPM 2.0: the P-256 EK and its certificate in NV, the EKs' keys as the
 * TPM reports them into *rsa_pem and *ecc_pem. */
static int
add_p256(const vtpm_ek_params *p, const char *sub, char **rsa_pem, char **ecc_pem,
         vtpm_error *err)
{
    g_autofree char *log = g_build_filename(p->work, "swtpm.log", NULL);
    g_autofree char *ekparam = NULL;
    g_autoptr(GPtrArray) params = NULL;
    g_autoptr(GBytes) cert = NULL;
    g_autoptr(vtpm_tpm2) t = NULL;
    int rc;

    if ((rc = vtpm_tpm2_start(sub, p->key, log, &t, err)) < 0 ||
        (rc = vtpm_tpm2_read_public(t, VTPM_TPM2_EK_RSA_HANDLE, rsa_pem, err)) < 0 ||
        (rc = vtpm_tpm2_cert_params(t, &params, err)) < 0 ||
        (rc = vtpm_tpm2_create_ek_p256(t, ecc_pem, &ekparam, err)) < 0 ||
        (rc = run_localca(p, ekparam, params, err)) < 0 ||
        (rc = read_cert(p->work, "p256/ek.cert", &cert, err)) < 0 ||
        (rc = vtpm_tpm2_nv_store(t, VTPM_TPM2_NV_ECC_P256_EKCERT, cert, err)) < 0)
        return rc;
    return vtpm_tpm2_stop(g_steal_pointer(&t), err);
}

/* libvirt's ownership of a state: <uuid>/ root 0711, the rest swtpm's,
 * 0700 / 0600; every file on disk before the state dir is renamed in. */
static int
own(const vtpm_ek_params *p, const char *sub, vtpm_error *err)
{
    g_autoptr(GDir) d = g_dir_open(sub, 0, NULL);
    const char *name;
    int rc;

    if (!d || chmod(p->dir, 0711) < 0 || chown(sub, p->uid, p->gid) < 0 || chmod(sub, 0700) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "setting the ownership of %s: %s",
                              p->dir, g_strerror(errno));
    while ((name = g_dir_read_name(d))) {
        g_autofree char *f = g_build_filename(sub, name, NULL);
        int fd = open(f, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0 || fchown(fd, p->uid, p->gid) < 0 || fchmod(fd, 0600) < 0 || fsync(fd) < 0) {
            int e = errno;

            if (fd >= 0)
                close(fd);
            return vtpm_error_set(err, vtpm_fs_fault(e), "setting the ownership of %s: %s", f,
                                  g_strerror(e));
        }
        close(fd);
    }
    if ((rc = vtpm_fs_sync_dir(sub, err)) < 0)
        return rc;
    return vtpm_fs_sync_dir(p->dir, err);
}

int
vtpm_ek_manufacture(const vtpm_ek_ca *ca, const vtpm_ek_params *p, vtpm_identity **out,
                    vtpm_error *err)
{
    g_autofree char *sub = g_build_filename(p->dir, vtpm_rekey_subdir(p->version), NULL);
    g_autofree char *certs = g_build_filename(p->work, "certs", NULL);
    g_autofree char *rsa_pem = NULL, *ecc_pem = NULL;
    g_autoptr(vtpm_identity) id = vtpm_identity_new(p->version, ca->subject, ca->sha256);
    bool tpm2 = p->version == VTPM_VERSION_2_0;
    int rc;

    if (mkdir(p->dir, 0711) < 0)
        return vtpm_error_set(err, vtpm_fs_fault(errno), "creating %s: %s", p->dir,
                              g_strerror(errno));
    if ((rc = vtpm_fs_mkdirs(sub, 0700, err)) < 0 || (rc = vtpm_fs_mkdirs(certs, 0700, err)) < 0 ||
        (rc = check_ca_files(ca, err)) < 0 || (rc = write_configs(ca, p->work, err)) < 0 ||
        (rc = run_swtpm_setup(p, sub, err)) < 0 ||
        (tpm2 && (rc = add_p256(p, sub, &rsa_pem, &ecc_pem, err)) < 0) ||
        (rc = add_ek(ca, p->work, "certs/ek-rsa2048.crt", rsa_pem, id, err)) < 0 ||
        (tpm2 && (rc = add_ek(ca, p->work, "p256/ek.cert", ecc_pem, id, err)) < 0) ||
        (rc = own(p, sub, err)) < 0)
        return rc;
    *out = g_steal_pointer(&id);
    return 0;
}
