/* SPDX-License-Identifier: Apache-2.0 */
/* A private swtpm and the TPM 2.0 commands vtpmd sends it (tpm2.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <json-glib/json-glib.h>

#include "child.h"
#include "fsutil.h"
#include "policy.h"
#include "timing.h"
#include "tpm2.h"
#include "vtpm/proto.h"

/* One command or control message: generous, swtpm answers in
 * milliseconds but a host under load may take its time. */
#define IO_TIMEOUT_MS 60000
#define MAX_RESPONSE 8192
#define HEADER 10

/* TPM 2.0 Library, Part 2. */
#define ST_NO_SESSIONS 0x8001
#define ST_SESSIONS 0x8002
#define CC_NV_DEFINESPACE 0x0000012a
#define CC_CREATEPRIMARY 0x00000131
#define CC_NV_WRITE 0x00000137
#define CC_NV_WRITELOCK 0x00000138
#define CC_SHUTDOWN 0x00000145
#define CC_FLUSHCONTEXT 0x00000165
#define CC_READPUBLIC 0x00000173
#define CC_GETCAPABILITY 0x0000017a
#define RH_ENDORSEMENT 0x4000000bu
#define RH_PLATFORM 0x4000000cu
#define RS_PW 0x40000009u
#define ALG_RSA 0x0001
#define ALG_SHA1 0x0004
#define ALG_AES 0x0006
#define ALG_SHA256 0x000b
#define ALG_SHA384 0x000c
#define ALG_SHA512 0x000d
#define ALG_NULL 0x0010
#define ALG_ECC 0x0023
#define ALG_CFB 0x0043
#define ECC_NIST_P256 0x0003
#define CAP_PCRS 0x00000005u
#define SU_CLEAR 0x0000
/* fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy,
 * restricted, decrypt: the TCG's EK templates. */
#define EK_ATTRIBUTES 0x000300b2u
/* platformcreate, authread, ownerread, ppread, ppwrite, no_da,
 * writedefine: what swtpm_setup gives the index of an EK certificate, so
 * that a guest reads it with tpm2_nvread -C o and cannot change it. */
#define NV_EKCERT_ATTRIBUTES 0x42072001u
/* What libtpms takes in one TPM2_NV_Write (MAX_NV_BUFFER_SIZE). */
#define NV_CHUNK 1024

/* swtpm's control channel (its tpm_ioctl.h): big-endian words. */
#define CMD_SHUTDOWN 0x03u
#define CMD_GET_INFO 0x12u
#define INFO_SPEC_AND_ATTRS 0x3u

/* PolicyA_SHA256 (TCG EK Credential Profile 2.0): the EK's authPolicy. */
static const guint8 policy_a_sha256[32] = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
    0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
    0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};

struct vtpm_tpm2 {
    vtpm_child *proc;
    int data, ctrl; /* our ends of the socketpairs */
};

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_pubkey_t, gnutls_pubkey_deinit, NULL)

static int
sys_error(vtpm_error *err, const char *what)
{
    return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %s: %s", what, g_strerror(errno));
}

/* ---- marshalling -------------------------------------------------------------- */

static void
put16(GByteArray *b, guint16 v)
{
    guint8 x[2] = { v >> 8, v & 0xff };

    g_byte_array_append(b, x, sizeof(x));
}

static void
put32(GByteArray *b, guint32 v)
{
    put16(b, v >> 16);
    put16(b, v & 0xffff);
}

static GByteArray *
cmd_new(guint16 tag, guint32 cc)
{
    GByteArray *b = g_byte_array_new();

    put16(b, tag);
    put32(b, 0); /* the size, once known */
    put32(b, cc);
    return b;
}

/* The password session with the empty authorization of a new TPM. */
static void
put_pw_session(GByteArray *b)
{
    static const guint8 attrs = 0;

    put32(b, 9);
    put32(b, RS_PW);
    put16(b, 0);
    g_byte_array_append(b, &attrs, 1);
    put16(b, 0);
}

/* A reader of a response; any read past its end marks it bad. */
typedef struct {
    const guint8 *p;
    size_t left;
    bool bad;
} rd;

static const guint8 *
get_n(rd *r, size_t n)
{
    const guint8 *p = r->p;

    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

static guint32
get_be(rd *r, size_t n)
{
    const guint8 *p = get_n(r, n);
    guint32 v = 0;

    for (size_t i = 0; p && i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* A TPM2B: its bytes, *len their number. */
static const guint8 *
get_2b(rd *r, guint16 *len)
{
    *len = (guint16)get_be(r, 2);
    return get_n(r, *len);
}

/* ---- transport ------------------------------------------------------------------- */

static int
wait_fd(int fd, short events, const char *what, vtpm_error *err)
{
    struct pollfd p = { .fd = fd, .events = events };
    int n;

    do {
        n = poll(&p, 1, IO_TIMEOUT_MS);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return sys_error(err, what);
    if (n == 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %s: no answer in %d s", what,
                              IO_TIMEOUT_MS / 1000);
    return 0;
}

static int
write_all(int fd, const guint8 *p, size_t n, const char *what, vtpm_error *err)
{
    while (n > 0) {
        ssize_t w;
        int rc;

        if ((rc = wait_fd(fd, POLLOUT, what, err)) < 0)
            return rc;
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return sys_error(err, what);
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
read_exact(int fd, guint8 *p, size_t n, const char *what, vtpm_error *err)
{
    while (n > 0) {
        ssize_t r;
        int rc;

        if ((rc = wait_fd(fd, POLLIN, what, err)) < 0)
            return rc;
        r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return sys_error(err, what);
        if (r == 0)
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                                  "swtpm: %s: swtpm closed the connection (it exited)", what);
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Send @cmd (its size filled in) as @name; *out: the whole response, whose
 * response code was TPM_RC_SUCCESS. */
static int
transact(vtpm_tpm2 *t, GByteArray *cmd, const char *name, GBytes **out, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    guint8 hdr[HEADER];
    g_autofree guint8 *resp = NULL;
    rd r = { hdr, sizeof(hdr), false };
    guint32 size, code;
    int rc;

    cmd->data[2] = cmd->len >> 24;
    cmd->data[3] = cmd->len >> 16 & 0xff;
    cmd->data[4] = cmd->len >> 8 & 0xff;
    cmd->data[5] = cmd->len & 0xff;
    if ((rc = write_all(t->data, cmd->data, cmd->len, name, err)) < 0 ||
        (rc = read_exact(t->data, hdr, sizeof(hdr), name, err)) < 0)
        return rc;
    get_be(&r, 2);
    size = get_be(&r, 4);
    code = get_be(&r, 4);
    if (size < HEADER || size > MAX_RESPONSE)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %s: a response of %u bytes",
                              name, size);
    resp = g_malloc(size);
    memcpy(resp, hdr, HEADER);
    if ((rc = read_exact(t->data, resp + HEADER, size - HEADER, name, err)) < 0)
        return rc;
    if (code != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %s failed: TPM_RC 0x%03x", name,
                              code);
    if (out)
        *out = g_bytes_new_take(g_steal_pointer(&resp), size);
    return 0;
}

/* A control message @req: swtpm's result code, then (only on success)
 * @rest_len bytes of the fixed part of its answer into @rest. */
static int
control(vtpm_tpm2 *t, const guint8 *req, size_t len, guint8 *rest, size_t rest_len,
        const char *name, vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    guint8 word[4];
    rd r = { word, sizeof(word), false };
    guint32 result;
    int rc;

    if ((rc = write_all(t->ctrl, req, len, name, err)) < 0 ||
        (rc = read_exact(t->ctrl, word, sizeof(word), name, err)) < 0)
        return rc;
    if ((result = get_be(&r, 4)) != 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %s failed: 0x%x", name, result);
    return rest_len ? read_exact(t->ctrl, rest, rest_len, name, err) : 0;
}

/* ---- the swtpm process -------------------------------------------------------------- */

/* A key fits the pipe buffer (VTPM_PROTO_MAX_FIELD bytes at most), so the
 * write cannot block. */
int
vtpm_tpm2_passphrase_fd(GBytes *key, int *out, vtpm_error *err)
{
    gsize len = 0;
    const guint8 *p = g_bytes_get_data(key, &len);
    int fds[2];

    if (len > VTPM_PROTO_MAX_FIELD)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: a key of %zu bytes", (size_t)len);
    if (!g_unix_open_pipe(fds, FD_CLOEXEC, NULL))
        return sys_error(err, "creating the key pipe");
    if (write(fds[1], p, len) != (ssize_t)len) {
        int rc = sys_error(err, "writing the key pipe");

        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    close(fds[1]);
    *out = fds[0];
    return 0;
}

void
vtpm_tpm2_free(vtpm_tpm2 *t)
{
    if (!t)
        return;
    vtpm_child_free(t->proc);
    if (t->data >= 0)
        close(t->data);
    if (t->ctrl >= 0)
        close(t->ctrl);
    g_free(t);
}

/* The command line; its descriptors (fd 3, 4, and 5 with @key) in @fds. */
static int
start_argv(const char *dir, GBytes *key, const char *log, GPtrArray *argv, int *fds,
           size_t *n_fds, vtpm_error *err)
{
    int rc;

    g_ptr_array_add(argv, g_strdup("swtpm"));
    g_ptr_array_add(argv, g_strdup("socket"));
    g_ptr_array_add(argv, g_strdup("--tpm2"));
    g_ptr_array_add(argv, g_strdup("--tpmstate"));
    g_ptr_array_add(argv, g_strdup_printf("dir=%s", dir));
    g_ptr_array_add(argv, g_strdup("--flags"));
    g_ptr_array_add(argv, g_strdup("not-need-init,startup-clear"));
    g_ptr_array_add(argv, g_strdup("--server"));
    g_ptr_array_add(argv, g_strdup("type=tcp,fd=3"));
    g_ptr_array_add(argv, g_strdup("--ctrl"));
    g_ptr_array_add(argv, g_strdup("type=unixio,clientfd=4"));
    if (key) {
        if ((rc = vtpm_tpm2_passphrase_fd(key, &fds[(*n_fds)++], err)) < 0) {
            (*n_fds)--;
            return rc;
        }
        g_ptr_array_add(argv, g_strdup("--key"));
        g_ptr_array_add(argv, g_strdup("pwdfd=5,mode=aes-256-cbc"));
    }
    if (log) {
        g_ptr_array_add(argv, g_strdup("--log"));
        g_ptr_array_add(argv, g_strdup_printf("file=%s", log));
    }
    g_ptr_array_add(argv, NULL);
    return 0;
}

int
vtpm_tpm2_start(const char *dir, GBytes *key, const char *log, vtpm_tpm2 **out,
                vtpm_error *err)
{
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(vtpm_tpm2) t = g_new0(vtpm_tpm2, 1);
    int dfd[2], cfd[2], fds[3], rc;
    size_t n_fds = 2;

    t->data = t->ctrl = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, dfd) < 0)
        return sys_error(err, "creating the data channel");
    t->data = dfd[0];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cfd) < 0) {
        close(dfd[1]);
        return sys_error(err, "creating the control channel");
    }
    t->ctrl = cfd[0];
    /* The child's ends are closed here once it has them (or has failed to
     * start), so that swtpm's exit is an end of file on ours. */
    fds[0] = dfd[1];
    fds[1] = cfd[1];
    if ((rc = start_argv(dir, key, log, argv, fds, &n_fds, err)) < 0) {
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    if ((rc = vtpm_child_spawn((const char *const *)argv->pdata, fds, n_fds, VTPM_CHILD_SILENT,
                               &t->proc, err)) < 0)
        return rc;
    *out = g_steal_pointer(&t);
    return 0;
}

int
vtpm_tpm2_stop(vtpm_tpm2 *t, vtpm_error *err)
{
    g_autoptr(vtpm_tpm2) own = t;
    g_autoptr(GByteArray) cmd = cmd_new(ST_NO_SESSIONS, CC_SHUTDOWN);
    guint8 req[4] = { 0, 0, 0, CMD_SHUTDOWN };
    int rc;

    put16(cmd, SU_CLEAR);
    if ((rc = transact(t, cmd, "TPM2_Shutdown", NULL, err)) < 0 ||
        (rc = control(t, req, sizeof(req), NULL, 0, "CMD_SHUTDOWN", err)) < 0)
        return rc;
    /* swtpm has written its state and is exiting. */
    VTPM_TIMED_SCOPE(VTPM_TIMING_HELPERS);
    {
        int status = 0;
        g_autofree char *how = NULL;

        if ((rc = vtpm_child_finish(t->proc, &status, NULL, err)) < 0)
            return rc;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            return 0;
        how = vtpm_child_describe_status(status);
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm ended with %s", how);
    }
}

/* ---- what swtpm is ---------------------------------------------------------------------- */

/* The members swtpm_setup hands its certificate tool, in its order. */
static const struct {
    const char *group, *member, *option;
    bool is_int;
} cert_params[] = {
    { "TPMSpecification", "family", "--tpm-spec-family", false },
    { "TPMSpecification", "level", "--tpm-spec-level", true },
    { "TPMSpecification", "revision", "--tpm-spec-revision", true },
    { "TPMAttributes", "manufacturer", "--tpm-manufacturer", false },
    { "TPMAttributes", "model", "--tpm-model", false },
    { "TPMAttributes", "version", "--tpm-version", false },
};

static int
cert_params_from_json(const char *json, GPtrArray *out, vtpm_error *err)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *root;

    if (!json_parser_load_from_data(p, json, -1, NULL) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: CMD_GET_INFO: not JSON: %s",
                              json);
    root = json_node_get_object(json_parser_get_root(p));
    for (size_t i = 0; i < G_N_ELEMENTS(cert_params); i++) {
        JsonObject *g = json_object_get_object_member(root, cert_params[i].group);
        JsonNode *v = g ? json_object_get_member(g, cert_params[i].member) : NULL;

        if (!v || !JSON_NODE_HOLDS_VALUE(v))
            return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: CMD_GET_INFO lacks %s.%s: %s",
                                  cert_params[i].group, cert_params[i].member, json);
        g_ptr_array_add(out, g_strdup(cert_params[i].option));
        g_ptr_array_add(out, cert_params[i].is_int
                                 ? g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(v))
                                 : g_strdup(json_node_get_string(v)));
    }
    return 0;
}

int
vtpm_tpm2_cert_params(vtpm_tpm2 *t, GPtrArray **out, vtpm_error *err)
{
    guint8 req[] = { 0, 0, 0, CMD_GET_INFO, 0, 0, 0, 0, 0, 0, 0, INFO_SPEC_AND_ATTRS,
                     0, 0, 0, 0, 0, 0, 0, 0 };
    guint8 head[8]; /* totlength, length */
    g_autofree char *json = NULL;
    g_autoptr(GPtrArray) params = g_ptr_array_new_with_free_func(g_free);
    rd r = { head + 4, 4, false };
    guint32 len;
    int rc;

    if ((rc = control(t, req, sizeof(req), head, sizeof(head), "CMD_GET_INFO", err)) < 0)
        return rc;
    len = get_be(&r, 4);
    if (len > MAX_RESPONSE)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: CMD_GET_INFO of %u bytes", len);
    json = g_malloc0(len + 1);
    if ((rc = read_exact(t->ctrl, (guint8 *)json, len, "CMD_GET_INFO", err)) < 0 ||
        (rc = cert_params_from_json(json, params, err)) < 0)
        return rc;
    *out = g_steal_pointer(&params);
    return 0;
}

/* ---- keys ----------------------------------------------------------------------------------- */

/* What a TPMT_PUBLIC says of its key; borrows from the response. */
typedef struct {
    guint16 type, curve;
    guint32 exponent;
    const guint8 *n, *y; /* RSA modulus or ECC x; ECC y */
    guint16 n_len, y_len;
} tpm2_key;

static void
skip_sym_and_scheme(rd *r)
{
    if (get_be(r, 2) != ALG_NULL) /* symmetric: keyBits, mode */
        get_n(r, 4);
    if (get_be(r, 2) != ALG_NULL) /* scheme: its hash */
        get_n(r, 2);
}

/* A TPM2B_PUBLIC at @r. */
static int
parse_public(rd *r, tpm2_key *k, const char *name, vtpm_error *err)
{
    guint16 size = (guint16)get_be(r, 2);
    const guint8 *area = get_n(r, size);
    rd a = { area, size, area == NULL };
    guint16 skip;

    k->type = (guint16)get_be(&a, 2);
    get_n(&a, 2 + 4); /* nameAlg, objectAttributes */
    get_2b(&a, &skip); /* authPolicy */
    skip_sym_and_scheme(&a);
    if (k->type == ALG_RSA) {
        get_n(&a, 2); /* keyBits */
        k->exponent = get_be(&a, 4);
        k->n = get_2b(&a, &k->n_len);
    } else if (k->type == ALG_ECC) {
        k->curve = (guint16)get_be(&a, 2);
        if (get_be(&a, 2) != ALG_NULL) /* kdf: its hash */
            get_n(&a, 2);
        k->n = get_2b(&a, &k->n_len);
        k->y = get_2b(&a, &k->y_len);
    } else {
        a.bad = true;
    }
    if (a.bad || r->bad || !k->n_len)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "swtpm: %s: a public area that is neither RSA nor ECC", name);
    return 0;
}

static int
key_pem(const tpm2_key *k, char **out, vtpm_error *err)
{
    g_auto(gnutls_pubkey_t) pub = NULL;
    guint32 e = k->exponent ? k->exponent : 65537; /* 0: the default exponent */
    guint8 eb[4] = { e >> 24, e >> 16 & 0xff, e >> 8 & 0xff, e & 0xff };
    gnutls_datum_t n = { (unsigned char *)k->n, k->n_len };
    gnutls_datum_t y = { (unsigned char *)k->y, k->y_len };
    gnutls_datum_t ed = { eb, sizeof(eb) }, pem = { 0 };
    int rc;

    if (k->type == ALG_ECC && k->curve != ECC_NIST_P256)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: an ECC key on curve 0x%04x",
                              k->curve);
    if ((rc = gnutls_pubkey_init(&pub)) < 0 ||
        (rc = k->type == ALG_RSA
                  ? gnutls_pubkey_import_rsa_raw(pub, &n, &ed)
                  : gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_SECP256R1, &n, &y)) < 0 ||
        (rc = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_PEM, &pem)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: an EK public key: %s",
                              gnutls_strerror(rc));
    *out = g_strndup((const char *)pem.data, pem.size);
    gnutls_free(pem.data);
    return 0;
}

int
vtpm_tpm2_read_public(vtpm_tpm2 *t, uint32_t handle, char **pem, vtpm_error *err)
{
    g_autoptr(GByteArray) cmd = cmd_new(ST_NO_SESSIONS, CC_READPUBLIC);
    g_autoptr(GBytes) resp = NULL;
    tpm2_key k = { 0 };
    rd r;
    int rc;

    put32(cmd, handle);
    if ((rc = transact(t, cmd, "TPM2_ReadPublic", &resp, err)) < 0)
        return rc;
    r = (rd){ g_bytes_get_data(resp, NULL), g_bytes_get_size(resp), false };
    get_n(&r, HEADER);
    if ((rc = parse_public(&r, &k, "TPM2_ReadPublic", err)) < 0)
        return rc;
    return key_pem(&k, pem, err);
}

/* TPM2_CreatePrimary of the endorsement hierarchy with template L-2. */
static GByteArray *
create_ek_p256_cmd(void)
{
    GByteArray *cmd = cmd_new(ST_SESSIONS, CC_CREATEPRIMARY);
    g_autoptr(GByteArray) pub = g_byte_array_new();
    static const guint8 zeros[32] = { 0 };

    put32(cmd, RH_ENDORSEMENT);
    put_pw_session(cmd);
    put16(cmd, 4); /* inSensitive: empty userAuth and data */
    put16(cmd, 0);
    put16(cmd, 0);
    put16(pub, ALG_ECC);
    put16(pub, ALG_SHA256);
    put32(pub, EK_ATTRIBUTES);
    put16(pub, sizeof(policy_a_sha256));
    g_byte_array_append(pub, policy_a_sha256, sizeof(policy_a_sha256));
    put16(pub, ALG_AES); /* symmetric: AES-128-CFB */
    put16(pub, 128);
    put16(pub, ALG_CFB);
    put16(pub, ALG_NULL); /* scheme */
    put16(pub, ECC_NIST_P256);
    put16(pub, ALG_NULL); /* kdf */
    put16(pub, sizeof(zeros)); /* unique: x and y of 32 zero bytes */
    g_byte_array_append(pub, zeros, sizeof(zeros));
    put16(pub, sizeof(zeros));
    g_byte_array_append(pub, zeros, sizeof(zeros));
    put16(cmd, pub->len);
    g_byte_array_append(cmd, pub->data, pub->len);
    put16(cmd, 0); /* outsideInfo */
    put32(cmd, 0); /* creationPCR: none */
    return cmd;
}

static char *
hex(const guint8 *p, size_t n)
{
    GString *s = g_string_sized_new(2 * n + 1);

    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", p[i]);
    return g_string_free(s, FALSE);
}

static int
flush(vtpm_tpm2 *t, guint32 handle, vtpm_error *err)
{
    g_autoptr(GByteArray) cmd = cmd_new(ST_NO_SESSIONS, CC_FLUSHCONTEXT);

    put32(cmd, handle);
    return transact(t, cmd, "TPM2_FlushContext", NULL, err);
}

int
vtpm_tpm2_create_ek_p256(vtpm_tpm2 *t, char **pem, char **ekparam, vtpm_error *err)
{
    g_autoptr(GByteArray) cmd = create_ek_p256_cmd();
    g_autoptr(GBytes) resp = NULL;
    g_autofree char *p = NULL, *x = NULL, *y = NULL;
    tpm2_key k = { 0 };
    guint32 handle;
    rd r;
    int rc;

    if ((rc = transact(t, cmd, "TPM2_CreatePrimary", &resp, err)) < 0)
        return rc;
    r = (rd){ g_bytes_get_data(resp, NULL), g_bytes_get_size(resp), false };
    get_n(&r, HEADER);
    handle = get_be(&r, 4);
    get_n(&r, 4); /* parameterSize */
    if ((rc = parse_public(&r, &k, "TPM2_CreatePrimary", err)) < 0 ||
        (rc = flush(t, handle, err)) < 0)
        return rc;
    if (k.type != ALG_ECC || k.n_len != 32 || k.y_len != 32)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "swtpm: TPM2_CreatePrimary: not an ECC NIST P-256 key");
    if ((rc = key_pem(&k, &p, err)) < 0)
        return rc;
    x = hex(k.n, k.n_len);
    y = hex(k.y, k.y_len);
    *ekparam = g_strdup_printf("x=%s,y=%s,id=secp256r1", x, y);
    *pem = g_steal_pointer(&p);
    return 0;
}

/* ---- NV ------------------------------------------------------------------------------------- */

static int
nv_define(vtpm_tpm2 *t, guint32 index, guint16 size, vtpm_error *err)
{
    g_autoptr(GByteArray) cmd = cmd_new(ST_SESSIONS, CC_NV_DEFINESPACE);

    put32(cmd, RH_PLATFORM);
    put_pw_session(cmd);
    put16(cmd, 0); /* auth: empty */
    put16(cmd, 14); /* publicInfo */
    put32(cmd, index);
    put16(cmd, ALG_SHA256);
    put32(cmd, NV_EKCERT_ATTRIBUTES);
    put16(cmd, 0); /* authPolicy: none */
    put16(cmd, size);
    return transact(t, cmd, "TPM2_NV_DefineSpace", NULL, err);
}

static int
nv_write(vtpm_tpm2 *t, guint32 index, const guint8 *data, gsize len, vtpm_error *err)
{
    for (gsize off = 0; off < len; off += NV_CHUNK) {
        g_autoptr(GByteArray) cmd = cmd_new(ST_SESSIONS, CC_NV_WRITE);
        gsize n = MIN(len - off, NV_CHUNK);
        int rc;

        put32(cmd, RH_PLATFORM);
        put32(cmd, index);
        put_pw_session(cmd);
        put16(cmd, (guint16)n);
        g_byte_array_append(cmd, data + off, n);
        put16(cmd, (guint16)off);
        if ((rc = transact(t, cmd, "TPM2_NV_Write", NULL, err)) < 0)
            return rc;
    }
    return 0;
}

int
vtpm_tpm2_nv_store(vtpm_tpm2 *t, uint32_t index, GBytes *data, vtpm_error *err)
{
    g_autoptr(GByteArray) lock = cmd_new(ST_SESSIONS, CC_NV_WRITELOCK);
    gsize len = 0;
    const guint8 *p = g_bytes_get_data(data, &len);
    int rc;

    if (len == 0 || len > G_MAXUINT16)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "swtpm: %zu bytes for NV index 0x%08x",
                              (size_t)len, index);
    put32(lock, RH_PLATFORM);
    put32(lock, index);
    put_pw_session(lock);
    if ((rc = nv_define(t, index, (guint16)len, err)) < 0 ||
        (rc = nv_write(t, index, p, len, err)) < 0 ||
        (rc = transact(t, lock, "TPM2_NV_WriteLock", NULL, err)) < 0) {
        vtpm_error_prefix(err, "NV index 0x%08x", index);
        return rc;
    }
    return 0;
}

/* ---- PCR banks -------------------------------------------------------------------------------- */

static int
bank_of_alg(guint16 alg)
{
    switch (alg) {
    case ALG_SHA1:
        return VTPM_PCR_SHA1;
    case ALG_SHA256:
        return VTPM_PCR_SHA256;
    case ALG_SHA384:
        return VTPM_PCR_SHA384;
    case ALG_SHA512:
        return VTPM_PCR_SHA512;
    default:
        return -1;
    }
}

int
vtpm_tpm2_pcr_banks(vtpm_tpm2 *t, unsigned *out, vtpm_error *err)
{
    g_autoptr(GByteArray) cmd = cmd_new(ST_NO_SESSIONS, CC_GETCAPABILITY);
    g_autoptr(GBytes) resp = NULL;
    unsigned bits = 0;
    guint32 count;
    rd r;
    int rc;

    put32(cmd, CAP_PCRS);
    put32(cmd, 0);
    put32(cmd, 64);
    if ((rc = transact(t, cmd, "TPM2_GetCapability", &resp, err)) < 0)
        return rc;
    r = (rd){ g_bytes_get_data(resp, NULL), g_bytes_get_size(resp), false };
    get_n(&r, HEADER + 1 + 4); /* moreData, capability */
    count = get_be(&r, 4);
    for (guint32 i = 0; i < count && !r.bad; i++) {
        int b = bank_of_alg((guint16)get_be(&r, 2));

        get_n(&r, get_be(&r, 1)); /* the selection, set or not */
        if (b >= 0)
            bits |= 1u << b;
    }
    if (r.bad)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL,
                              "swtpm: TPM2_GetCapability: a malformed list of PCR banks");
    *out = bits;
    return 0;
}

int
vtpm_tpm2_probe_pcr_banks(unsigned *out, vtpm_error *err)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree char *dir = g_dir_make_tmp("vtpmd-banks-XXXXXX", &gerr);
    g_autoptr(vtpm_tpm2) t = NULL;
    vtpm_error ignore = { 0 };
    unsigned bits = 0;
    int rc;

    if (!dir)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "a temporary directory: %s",
                              gerr->message);
    if ((rc = vtpm_tpm2_start(dir, NULL, NULL, &t, err)) == 0 &&
        (rc = vtpm_tpm2_pcr_banks(t, &bits, err)) == 0)
        rc = vtpm_tpm2_stop(g_steal_pointer(&t), err);
    g_clear_pointer(&t, vtpm_tpm2_free);
    vtpm_fs_rmtree(dir, &ignore);
    if (rc < 0)
        return rc;
    *out = bits;
    return 0;
}
