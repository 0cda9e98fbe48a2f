/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "keywrap.h"
#include "vtpm/proto.h"

#define NONCE_BYTES 12
#define TAG_BYTES 16
#define PREFIX "v1:"

typedef struct {
    bool set;
    guint8 key[VTPM_KEYWRAP_KEY_BYTES];
    char id[VTPM_KEYWRAP_ID_CHARS + 1];
} key_slot;

struct vtpm_keyring {
    key_slot cur;
    key_slot prev;
};

/* Read a key file: regular, owner-only, 32 raw bytes or 64 hex digits. */
static int
load_key(const char *path, key_slot *slot, vtpm_error *err)
{
    guint8 buf[2 * VTPM_KEYWRAP_KEY_BYTES + 2];
    struct stat st;
    ssize_t n;
    size_t len;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "deployment key %s: %s", path,
                              g_strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "deployment key %s: not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "deployment key %s has mode %04o; it must be 0600 (readable by "
                              "its owner only)",
                              path, (unsigned)(st.st_mode & 07777));
    }
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 0)
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST, "deployment key %s: %s", path,
                              g_strerror(errno));
    len = (size_t)n;
    if (len == VTPM_KEYWRAP_KEY_BYTES && st.st_size == VTPM_KEYWRAP_KEY_BYTES) {
        memcpy(slot->key, buf, VTPM_KEYWRAP_KEY_BYTES);
    } else {
        if (len == 2 * VTPM_KEYWRAP_KEY_BYTES + 1 && buf[len - 1] == '\n')
            len--;
        if (len != 2 * VTPM_KEYWRAP_KEY_BYTES || st.st_size > (off_t)sizeof(buf) - 1) {
            explicit_bzero(buf, sizeof(buf));
            return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                  "deployment key %s: %lld bytes; expected 32 raw bytes or 64 "
                                  "hex digits",
                                  path, (long long)st.st_size);
        }
        for (size_t i = 0; i < VTPM_KEYWRAP_KEY_BYTES; i++) {
            int hi = g_ascii_xdigit_value((char)buf[2 * i]);
            int lo = g_ascii_xdigit_value((char)buf[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                explicit_bzero(buf, sizeof(buf));
                explicit_bzero(slot->key, sizeof(slot->key));
                return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                                      "deployment key %s: 64 characters but not hex digits", path);
            }
            slot->key[i] = (guint8)(hi << 4 | lo);
        }
    }
    explicit_bzero(buf, sizeof(buf));

    /* The id names the key without revealing it: a domain-separated hash. */
    {
        g_autoptr(GChecksum) ck = g_checksum_new(G_CHECKSUM_SHA256);

        g_checksum_update(ck, (const guchar *)"vtpmd deployment key id v1", -1);
        g_checksum_update(ck, slot->key, sizeof(slot->key));
        g_strlcpy(slot->id, g_checksum_get_string(ck), sizeof(slot->id));
    }
    slot->set = true;
    return 0;
}

int
vtpm_keyring_load(const char *current, const char *previous, vtpm_keyring **out,
                  vtpm_error *err)
{
    vtpm_keyring *kr = g_new0(vtpm_keyring, 1);
    int rc;

    if ((current && (rc = load_key(current, &kr->cur, err)) < 0) ||
        (previous && (rc = load_key(previous, &kr->prev, err)) < 0)) {
        vtpm_keyring_free(kr);
        return rc;
    }
    if (previous && !current) {
        vtpm_keyring_free(kr);
        return vtpm_error_set(err, VTPM_FAULT_BAD_REQUEST,
                              "[vtpm] previous_deployment_key_file needs deployment_key_file");
    }
    *out = kr;
    return 0;
}

void
vtpm_keyring_free(vtpm_keyring *kr)
{
    if (!kr)
        return;
    explicit_bzero(kr, sizeof(*kr));
    g_free(kr);
}

bool
vtpm_keyring_ready(const vtpm_keyring *kr)
{
    return kr && kr->cur.set;
}

const char *
vtpm_keyring_current_id(const vtpm_keyring *kr)
{
    return vtpm_keyring_ready(kr) ? kr->cur.id : "";
}

const char *
vtpm_keyring_previous_id(const vtpm_keyring *kr)
{
    return kr && kr->prev.set ? kr->prev.id : "";
}

bool
vtpm_keyring_wrapped_with(const char *wrapped, const char *id)
{
    size_t n = strlen(PREFIX);

    return wrapped && id && strlen(id) == VTPM_KEYWRAP_ID_CHARS &&
           g_str_has_prefix(wrapped, PREFIX) &&
           strncmp(wrapped + n, id, VTPM_KEYWRAP_ID_CHARS) == 0 &&
           wrapped[n + VTPM_KEYWRAP_ID_CHARS] == ':';
}

static char *
aad_for(const char *uuid, const char *id)
{
    return g_strdup_printf("vtpmd-wrap-v1:%s:%s", uuid, id);
}

static int
not_ready(vtpm_error *err)
{
    return vtpm_error_set(err, VTPM_FAULT_TPM_UNSUPPORTED,
                          "this host has no deployment key ([vtpm] deployment_key_file)");
}

static int
aead(const key_slot *k, bool encrypt, const guint8 *nonce, const char *aad, const void *in,
     size_t in_len, void *out, size_t *out_len)
{
    gnutls_datum_t kd = { .data = (unsigned char *)k->key, .size = sizeof(k->key) };
    gnutls_aead_cipher_hd_t h;
    int rc;

    if (gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &kd) < 0)
        return -1;
    if (encrypt)
        rc = gnutls_aead_cipher_encrypt(h, nonce, NONCE_BYTES, aad, strlen(aad), TAG_BYTES, in,
                                        in_len, out, out_len);
    else
        rc = gnutls_aead_cipher_decrypt(h, nonce, NONCE_BYTES, aad, strlen(aad), TAG_BYTES, in,
                                        in_len, out, out_len);
    gnutls_aead_cipher_deinit(h);
    return rc < 0 ? -1 : 0;
}

int
vtpm_keyring_wrap(const vtpm_keyring *kr, const char *uuid, GBytes *secret, char **out,
                  vtpm_error *err)
{
    gsize slen = 0;
    const guint8 *s = g_bytes_get_data(secret, &slen);
    g_autofree guint8 *buf = NULL;
    g_autofree char *aad = NULL, *b64 = NULL;
    size_t clen;

    if (!vtpm_keyring_ready(kr))
        return not_ready(err);
    if (slen == 0 || slen > VTPM_PROTO_MAX_FIELD)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "secret of %zu bytes cannot be wrapped",
                              (size_t)slen);
    buf = g_malloc(NONCE_BYTES + slen + TAG_BYTES);
    if (gnutls_rnd(GNUTLS_RND_NONCE, buf, NONCE_BYTES) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "no random nonce from GnuTLS");
    aad = aad_for(uuid, kr->cur.id);
    clen = slen + TAG_BYTES;
    if (aead(&kr->cur, true, buf, aad, s, slen, buf + NONCE_BYTES, &clen) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "AES-256-GCM encryption failed");
    b64 = g_base64_encode(buf, NONCE_BYTES + clen);
    *out = g_strdup_printf(PREFIX "%s:%s", kr->cur.id, b64);
    return 0;
}

int
vtpm_keyring_unwrap(const vtpm_keyring *kr, const char *uuid, const char *wrapped,
                    GBytes **out, bool *current, vtpm_error *err)
{
    const key_slot *k = NULL;
    const char *id, *colon;
    g_autofree guint8 *raw = NULL;
    g_autofree char *aad = NULL, *idbuf = NULL;
    guint8 *plain;
    gsize rlen = 0;
    size_t plen;

    if (!vtpm_keyring_ready(kr))
        return not_ready(err);
    if (!wrapped || strlen(wrapped) > VTPM_KEYWRAP_MAX_TEXT || !g_str_has_prefix(wrapped, PREFIX))
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "wrapped secret of %s is not in the v1:<key id>:<data> form", uuid);
    id = wrapped + strlen(PREFIX);
    colon = strchr(id, ':');
    if (!colon || colon - id != VTPM_KEYWRAP_ID_CHARS)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "wrapped secret of %s has no valid key id", uuid);
    idbuf = g_strndup(id, VTPM_KEYWRAP_ID_CHARS);
    if (strcmp(idbuf, kr->cur.id) == 0)
        k = &kr->cur;
    else if (kr->prev.set && strcmp(idbuf, kr->prev.id) == 0)
        k = &kr->prev;
    if (!k)
        return vtpm_error_set(err, VTPM_FAULT_SECRET_INVALID,
                              "the TPM secret of %s is wrapped under deployment key %s, but this "
                              "host has key %s%s%s; install that key as "
                              "[vtpm] deployment_key_file or previous_deployment_key_file",
                              uuid, idbuf, kr->cur.id, kr->prev.set ? " and previous key " : "",
                              kr->prev.set ? kr->prev.id : "");
    raw = g_base64_decode(colon + 1, &rlen);
    if (!raw || rlen < NONCE_BYTES + TAG_BYTES + 1)
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "wrapped secret of %s is truncated or not base64", uuid);
    aad = aad_for(uuid, idbuf);
    plen = rlen - NONCE_BYTES - TAG_BYTES;
    plain = g_malloc(plen);
    if (aead(k, false, raw, aad, raw + NONCE_BYTES, rlen - NONCE_BYTES, plain, &plen) < 0) {
        explicit_bzero(plain, rlen - NONCE_BYTES - TAG_BYTES);
        g_free(plain);
        return vtpm_error_set(err, VTPM_FAULT_STATE_INTEGRITY,
                              "wrapped secret of %s does not authenticate under key %s "
                              "(tampered, or it belongs to another instance)",
                              uuid, idbuf);
    }
    *out = vtpm_bytes_new_wiped(plain, plen);
    if (current)
        *current = k == &kr->cur;
    return 0;
}

int
vtpm_keyring_random_secret(GBytes **out, vtpm_error *err)
{
    guint8 r[32];
    char *hex;

    if (gnutls_rnd(GNUTLS_RND_KEY, r, sizeof(r)) < 0)
        return vtpm_error_set(err, VTPM_FAULT_INTERNAL, "GnuTLS cannot produce random bytes");
    hex = g_malloc(2 * sizeof(r) + 1);
    for (size_t i = 0; i < sizeof(r); i++)
        g_snprintf(hex + 2 * i, 3, "%02x", r[i]);
    explicit_bzero(r, sizeof(r));
    *out = vtpm_bytes_new_wiped(hex, 2 * sizeof(r));
    return 0;
}
