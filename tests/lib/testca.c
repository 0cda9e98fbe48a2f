/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib/gstdio.h>

#include "testca.h"

void
tc_openssl(const tc_ca *ca, const char *args)
{
    g_autofree char *cmd = g_strdup_printf("cd '%s' && openssl %s", ca->dir, args);
    g_autofree char *out = NULL, *errout = NULL;
    g_autoptr(GError) gerr = NULL;
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &errout,
                      &status, &gerr) ||
        !g_spawn_check_wait_status(status, NULL))
        fail_msg("openssl %s failed: %s%s", args, gerr ? gerr->message : "",
                 errout ? errout : "");
}

tc_ca *
tc_ca_new(void)
{
    tc_ca *ca = g_new0(tc_ca, 1);
    g_autofree char *key = NULL;

    ca->dir = g_dir_make_tmp("testca-XXXXXX", NULL);
    assert_non_null(ca->dir);
    tc_openssl(ca, "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 "
                   "-subj '/O=vtpmd test/CN=Test EK CA' "
                   "-addext basicConstraints=critical,CA:true "
                   "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null");
    tc_openssl(ca, "x509 -in ca.pem -outform der -out ca.der");
    key = tc_path(ca, "ca.key");
    assert_int_equal(g_chmod(key, 0600), 0);
    return ca;
}

void
tc_ca_free(tc_ca *ca)
{
    g_autoptr(GDir) d = NULL;
    const char *name;

    if (!ca)
        return;
    d = g_dir_open(ca->dir, 0, NULL);
    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(ca->dir, name, NULL);

        g_unlink(p);
    }
    g_rmdir(ca->dir);
    g_free(ca->dir);
    g_free(ca);
}

void
tc_make_cert(const tc_ca *ca, const char *name, const char *genpkey, const char *subject)
{
    g_autofree char *a = g_strdup_printf("genpkey %s -out %s.key 2>/dev/null", genpkey, name);
    g_autofree char *b = g_strdup_printf("pkey -in %s.key -pubout -out %s.pub", name, name);
    g_autofree char *c =
        g_strdup_printf("req -new -key %s.key -subj '%s' -out %s.csr", name, subject, name);
    g_autofree char *d = g_strdup_printf("x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
                                         "-set_serial 7 -days 30 -outform der -out %s.der "
                                         "2>/dev/null",
                                         name, name);

    tc_openssl(ca, a);
    tc_openssl(ca, b);
    tc_openssl(ca, c);
    tc_openssl(ca, d);
}

char *
tc_path(const tc_ca *ca, const char *name)
{
    return g_build_filename(ca->dir, name, NULL);
}

GBytes *
tc_bytes(const tc_ca *ca, const char *name)
{
    g_autofree char *path = tc_path(ca, name);
    gchar *data = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &data, &len, NULL))
        fail_msg("cannot read %s", path);
    return g_bytes_new_take(data, len);
}

char *
tc_text(const tc_ca *ca, const char *name)
{
    g_autoptr(GBytes) b = tc_bytes(ca, name);

    return g_strndup(g_bytes_get_data(b, NULL), g_bytes_get_size(b));
}
