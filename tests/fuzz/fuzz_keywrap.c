/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer entry point for the deployment key unwrap (worker/keywrap.c).
 * The wrapped text comes from a domain's metadata and from archive
 * manifests, which a storage admin or a tampered shelve store controls:
 * every input must end in a secret, StateIntegrity or SecretInvalid,
 * never a crash, a hang or a leak.  A secret that unwraps must wrap and
 * unwrap again to the same bytes under the current key.
 *
 * The input is the wrapped text (up to the first NUL).  The keyring holds
 * two fixed keys, current and previous, written once to a private
 * temporary directory; gen-corpus.py wraps the valid seeds under the same
 * keys for instance FUZZ_UUID (seed-valid-*, which must keep unwrapping,
 * or the corpus no longer reaches the AES-GCM path).  See fuzz.h and
 * docs/fuzzing.md.
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#include "keywrap.h"
#include "vtpm/proto.h"

#define FUZZ_UUID "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"

static vtpm_keyring *ring;
static char *key_dir;

static void
drop_keys(void)
{
    g_autofree char *cur = NULL, *prev = NULL;

    if (!key_dir)
        return;
    cur = g_build_filename(key_dir, "current.key", NULL);
    prev = g_build_filename(key_dir, "previous.key", NULL);
    (void)unlink(cur);
    (void)unlink(prev);
    (void)rmdir(key_dir);
    g_clear_pointer(&key_dir, g_free);
    g_clear_pointer(&ring, vtpm_keyring_free);
}

/* Current key: bytes 0x00..0x1f; previous: 0x80..0x9f (gen-corpus.py). */
static char *
write_key(const char *name, guint8 first)
{
    guint8 k[VTPM_KEYWRAP_KEY_BYTES];
    char *path = g_build_filename(key_dir, name, NULL);

    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (guint8)(first + i);
    if (!g_file_set_contents(path, (const char *)k, sizeof(k), NULL) || chmod(path, 0600) < 0)
        vtpm_fuzz_fail("cannot write key file %s", path);
    return path;
}

static void
load_ring(void)
{
    g_autofree char *cur = NULL, *prev = NULL;
    vtpm_error err = { 0 };

    key_dir = g_dir_make_tmp("vtpmd-fuzz-keywrap-XXXXXX", NULL);
    if (!key_dir)
        vtpm_fuzz_fail("cannot make a temporary directory for the keys");
    cur = write_key("current.key", 0x00);
    prev = write_key("previous.key", 0x80);
    if (vtpm_keyring_load(cur, prev, &ring, &err) < 0)
        vtpm_fuzz_fail("keyring: %s", err.message);
    atexit(drop_keys);
}

static void
check_rewrap(GBytes *secret)
{
    g_autofree char *again = NULL;
    g_autoptr(GBytes) back = NULL;
    vtpm_error err = { 0 };
    bool current = false;

    /* Only sizes the worker ever wraps; the unwrap itself accepts any. */
    if (g_bytes_get_size(secret) > VTPM_PROTO_MAX_FIELD)
        return;
    if (vtpm_keyring_wrap(ring, FUZZ_UUID, secret, &again, &err) < 0)
        vtpm_fuzz_fail("an unwrapped secret does not wrap again: %s", err.message);
    if (strlen(again) > VTPM_KEYWRAP_MAX_TEXT && g_bytes_get_size(secret) <= 512)
        vtpm_fuzz_fail("a %zu-byte secret wraps to %zu characters, over the unwrap limit",
                       g_bytes_get_size(secret), strlen(again));
    if (strlen(again) > VTPM_KEYWRAP_MAX_TEXT)
        return;
    if (vtpm_keyring_unwrap(ring, FUZZ_UUID, again, &back, &current, &err) < 0)
        vtpm_fuzz_fail("a fresh wrap does not unwrap: %s", err.message);
    if (!current || !g_bytes_equal(secret, back))
        vtpm_fuzz_fail("wrap/unwrap does not round-trip");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const vtpm_fault ok[] = {
        VTPM_FAULT_STATE_INTEGRITY, VTPM_FAULT_SECRET_INVALID, VTPM_FAULT_NONE,
    };
    g_autofree char *text = g_strndup((const char *)data, size);
    g_autoptr(GBytes) secret = NULL;
    vtpm_error err = { 0 };
    bool current = false;
    int rc;

    if (!ring)
        load_ring();
    rc = vtpm_keyring_unwrap(ring, FUZZ_UUID, text, &secret, &current, &err);
    vtpm_fuzz_expect("vtpm_keyring_unwrap", rc, &err, ok);
    if (rc < 0) {
        if (secret)
            vtpm_fuzz_fail("vtpm_keyring_unwrap set its output on failure");
        return 0;
    }
    if (!secret || g_bytes_get_size(secret) == 0)
        vtpm_fuzz_fail("vtpm_keyring_unwrap succeeded without a secret");
    check_rewrap(secret);
    return 0;
}

#ifdef VTPM_FUZZ_REPLAY
static int
seed_check(const char *path, const uint8_t *data, size_t size, char **why)
{
    g_autofree char *text = g_strndup((const char *)data, size);
    g_autofree char *base = g_path_get_basename(path);
    g_autoptr(GBytes) secret = NULL;
    vtpm_error err = { 0 };
    bool current = false;

    if (!g_str_has_prefix(base, "seed-valid-"))
        return 0;
    if (!ring)
        load_ring();
    if (vtpm_keyring_unwrap(ring, FUZZ_UUID, text, &secret, &current, &err) < 0) {
        *why = g_strdup_printf("a valid seed no longer unwraps: %s", err.message);
        return -1;
    }
    if (current != !strstr(base, "previous")) {
        *why = g_strdup_printf("unwrapped under the %s key", current ? "current" : "previous");
        return -1;
    }
    return 0;
}

const vtpm_fuzz_target vtpm_fuzz_replay_target = {
    .name = "fuzz_keywrap",
    .block = 0,
    .seed_check = seed_check,
};
#endif
