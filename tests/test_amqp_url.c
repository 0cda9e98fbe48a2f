/* SPDX-License-Identifier: Apache-2.0 */
/* amqp/url.c: every URL form vtpmd accepts, and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

#include "amqp/url.h"

#define NODE(a, i) ((const vtpm_amqp_node *)g_ptr_array_index((a), (i)))

static GPtrArray *
parse_ok(const char *url, guint n)
{
    GPtrArray *nodes = NULL;
    vtpm_error err = { 0 };

    if (vtpm_amqp_url_parse(url, &nodes, &err) != 0)
        fail_msg("%s refused: %s", url, err.message);
    assert_non_null(nodes);
    if (nodes->len != n)
        fail_msg("%s: %u nodes, expected %u", url, nodes->len, n);
    return nodes;
}

static void
assert_node(const vtpm_amqp_node *node, bool tls, const char *host, int port, const char *user,
            const char *password, bool given, const char *vhost)
{
    assert_int_equal(node->tls, tls);
    assert_string_equal(node->host, host);
    assert_int_equal(node->port, port);
    assert_string_equal(node->user, user);
    assert_string_equal(node->password, password);
    assert_int_equal(node->password_given, given);
    assert_string_equal(node->vhost, vhost);
}

/* One node, checked whole, and how it is shown in logs. */
static void
expect_node(const char *url, bool tls, const char *host, int port, const char *user,
            const char *password, bool given, const char *vhost, const char *display)
{
    g_autoptr(GPtrArray) nodes = parse_ok(url, 1);
    g_autofree char *shown = vtpm_amqp_node_display(NODE(nodes, 0));

    assert_node(NODE(nodes, 0), tls, host, port, user, password, given, vhost);
    assert_string_equal(shown, display);
}

/* Refused with BadRequest, a message that holds @why, never the password
 * "s3cret", and *out untouched. */
static void
expect_refused(const char *url, const char *why)
{
    GPtrArray *sentinel = (GPtrArray *)&sentinel;
    GPtrArray *nodes = sentinel;
    vtpm_error err = { 0 };
    int rc = vtpm_amqp_url_parse(url, &nodes, &err);

    if (rc == 0)
        fail_msg("\"%s\" accepted", url);
    assert_int_equal(rc, -(int)VTPM_FAULT_BAD_REQUEST);
    assert_int_equal(err.code, VTPM_FAULT_BAD_REQUEST);
    if (!strstr(err.message, why))
        fail_msg("\"%s\": message \"%s\" does not say \"%s\"", url, err.message, why);
    assert_null(strstr(err.message, "s3cret"));
    assert_null(strstr(err.message, "cret"));
    assert_ptr_equal(nodes, sentinel);
}

/* ---- the forms ---------------------------------------------------------------- */

static void
test_amqp_forms(void **state)
{
    expect_node("amqp://guest:guest@127.0.0.1:5672/%2f", false, "127.0.0.1", 5672, "guest",
                "guest", true, "/", "amqp://127.0.0.1:5672/%2F");
    /* Nothing but the host: librabbitmq's and kombu's defaults. */
    expect_node("amqp://localhost", false, "localhost", 5672, "guest", "guest", false, "/",
                "amqp://localhost:5672/%2F");
    expect_node("amqps://user:pa%40ss@broker.example.org:5671/cloud", true,
                "broker.example.org", 5671, "user", "pa@ss", true, "cloud",
                "amqps://broker.example.org:5671/cloud");
    /* TLS without a port: 5671. */
    expect_node("amqps://u:p@h/x", true, "h", 5671, "u", "p", true, "x", "amqps://h:5671/x");
    /* A user alone gets the password guest, as in librabbitmq and kombu. */
    expect_node("amqp://u@h:1234", false, "h", 1234, "u", "guest", false, "/",
                "amqp://h:1234/%2F");
    /* An empty port is the default (RFC 3986, oslo). */
    expect_node("amqp://h:/x", false, "h", 5672, "guest", "guest", false, "x",
                "amqp://h:5672/x");
    /* The scheme is case-insensitive. */
    expect_node("AMQPS://h/v", true, "h", 5671, "guest", "guest", false, "v",
                "amqps://h:5671/v");
}

static void
test_rabbit_aliases(void **state)
{
    /* What every nova.conf says: the trailing '/' is the default vhost. */
    expect_node("rabbit://nova:s3cret@rabbit.example.net:5672/", false, "rabbit.example.net",
                5672, "nova", "s3cret", true, "/", "amqp://rabbit.example.net:5672/%2F");
    expect_node("rabbits://nova:s3cret@rabbit.example.net/", true, "rabbit.example.net", 5671,
                "nova", "s3cret", true, "/", "amqps://rabbit.example.net:5671/%2F");
    expect_node("rabbit://h/%2f", false, "h", 5672, "guest", "guest", false, "/",
                "amqp://h:5672/%2F");
    expect_node("Rabbit://h/nova", false, "h", 5672, "guest", "guest", false, "nova",
                "amqp://h:5672/nova");
    expect_node("amqp://u:p@h:5672/", false, "h", 5672, "u", "p", true, "/",
                "amqp://h:5672/%2F");
}

static void
test_vhosts(void **state)
{
    expect_node("amqp://h/%2Fa%20b", false, "h", 5672, "guest", "guest", false, "/a b",
                "amqp://h:5672/%2Fa%20b");
    expect_node("amqp://h/caf%C3%A9", false, "h", 5672, "guest", "guest", false,
                "caf\xc3\xa9", "amqp://h:5672/caf%C3%A9");
    expect_node("amqp://h/a%2fb", false, "h", 5672, "guest", "guest", false, "a/b",
                "amqp://h:5672/a%2Fb");
}

static void
test_hosts(void **state)
{
    g_autofree char *label63 = g_strnfill(63, 'a');
    g_autofree char *label61 = g_strnfill(61, 'b');
    /* 253 characters, the most DNS allows. */
    g_autofree char *long_ok =
        g_strdup_printf("amqp://%s.%s.%s.%s/x", label63, label63, label63, label61);

    expect_node("amqp://u%40x:p%3Aw@[::1]:5671/prod", false, "::1", 5671, "u@x", "p:w", true,
                "prod", "amqp://[::1]:5671/prod");
    expect_node("amqp://[fe80::1%25eth0]:5672/", false, "fe80::1%eth0", 5672, "guest", "guest",
                false, "/", "amqp://[fe80::1%25eth0]:5672/%2F");
    expect_node("amqp://rabbit_1.internal./v", false, "rabbit_1.internal.", 5672, "guest",
                "guest", false, "v", "amqp://rabbit_1.internal.:5672/v");
    /* International names in their ASCII form (GUri's IDN). */
    expect_node("amqp://m\xc3\xbcnchen.example/", false, "xn--mnchen-3ya.example", 5672, "guest",
                "guest", false, "/", "amqp://xn--mnchen-3ya.example:5672/%2F");
    g_ptr_array_unref(parse_ok(long_ok, 1));
}

static void
test_multi_host(void **state)
{
    g_autoptr(GPtrArray) two = parse_ok("rabbit://u1:p1@h1:5672,u2:p2@h2:5673/nova", 2);
    g_autoptr(GPtrArray) three = parse_ok("rabbits://h1,h2:5000,[::1]/", 3);

    assert_node(NODE(two, 0), false, "h1", 5672, "u1", "p1", true, "nova");
    assert_node(NODE(two, 1), false, "h2", 5673, "u2", "p2", true, "nova");
    assert_node(NODE(three, 0), true, "h1", 5671, "guest", "guest", false, "/");
    assert_node(NODE(three, 1), true, "h2", 5000, "guest", "guest", false, "/");
    assert_node(NODE(three, 2), true, "::1", 5671, "guest", "guest", false, "/");
}

/* ---- the refusals -------------------------------------------------------------- */

static void
test_refused_whole(void **state)
{
    g_autofree char *longurl = g_strnfill(5000, 'a');
    GPtrArray *nodes = NULL;
    vtpm_error err = { 0 };

    memcpy(longurl, "amqp://", 7);
    assert_int_equal(vtpm_amqp_url_parse(NULL, &nodes, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_string_equal(err.message, "empty");
    expect_refused("", "empty");
    expect_refused(longurl, "longer than 4096 bytes");
    expect_refused("localhost", "not a URL");
    expect_refused("://h", "not a URL");
    expect_refused("http://h/", "scheme 'http' is not amqp, amqps, rabbit or rabbits");
    expect_refused("kombu+rabbit://h/", "scheme 'kombu+rabbit' is not");
    /* Not quoted: it may be credentials written without a scheme. */
    expect_refused("guest:s3cret@h://x", "no amqp://, amqps://, rabbit:// or rabbits:// scheme");
    expect_refused("amqp://h/?heartbeat=10", "query ('?...'): not supported");
    expect_refused("amqp://h#s3cret", "fragment ('#...'): not supported");
}

static void
test_refused_host_port(void **state)
{
    g_autofree char *label64 = g_strnfill(64, 'a');
    g_autofree char *long_label = g_strdup_printf("amqp://%s/x", label64);
    g_autofree char *name = g_strnfill(250, 'a');
    g_autofree char *long_host = NULL;

    for (size_t i = 50; i < 250; i += 50)
        name[i] = '.';
    long_host = g_strdup_printf("amqp://%s.abcde/x", name);
    expect_refused("amqp://", "host: empty");
    expect_refused("amqp:///x", "host: empty");
    expect_refused("amqp://:5672/x", "host: empty");
    expect_refused("amqp://u:s3cret@/x", "host: empty");
    expect_refused("amqp://exa mple/", "host 'exa mple': ' ' is not allowed");
    expect_refused("amqp://h%2fx/", "host 'h/x': '/' is not allowed");
    expect_refused("amqp://-h/", "starts or ends with '-'");
    expect_refused("amqp://a..b/", "host 'a..b': empty label");
    expect_refused(".h", "not a URL");
    expect_refused(long_label, "longer than 63 characters");
    expect_refused(long_host, "host: longer than 253 characters");
    expect_refused("amqp://[::1/x", "host: not a host name or IP address");
    expect_refused("amqp://[zz]/", "host: not a host name or IP address");
    /* A raw '@' in the password: the rest of it is not quoted. */
    expect_refused("amqp://u:p@s3cret@h/x",
                   "host: contains '@' (write an '@' of the user or password as %40)");
    expect_refused("amqp://h:0/", "port: 0 is out of range 1..65535");
    expect_refused("amqp://h:99999/", "port: not a number in 1..65535");
    expect_refused("amqp://h:port/", "port: not a number in 1..65535");
    /* A raw '/' in the password ends the host: not quoted either. */
    expect_refused("amqp://u:s3cret/x@h/v", "port: not a number in 1..65535");
}

static void
test_refused_credentials_vhost(void **state)
{
    g_autofree char *vhost256 = g_strnfill(256, 'v');
    g_autofree char *long_vhost = g_strdup_printf("amqp://h/%s", vhost256);

    expect_refused("amqp://@h", "user: empty");
    expect_refused("amqp://:s3cret@h", "user: empty");
    expect_refused("amqp://u:@h", "password: empty");
    expect_refused("amqp://u:s3cret%00@h", "password: bad percent-encoding or not UTF-8");
    expect_refused("amqp://u%ff:s3cret@h", "user: bad percent-encoding or not UTF-8");
    expect_refused("amqp://h/a/b", "vhost: contains '/' (write a '/' of the vhost name as %2f)");
    expect_refused("amqp://h//", "vhost: contains '/'");
    expect_refused("amqp://h/%zz", "vhost: bad percent-encoding");
    expect_refused("amqp://h/%00", "vhost: bad percent-encoding (or an encoded NUL)");
    expect_refused("amqp://h/%ff", "vhost: not UTF-8");
    expect_refused(long_vhost, "vhost: longer than 255 bytes");
}

static void
test_refused_multi_host(void **state)
{
    expect_refused("rabbit://u:s3cret@h1,h2/",
                   "host 2 of 2: no user:password@ while host 1 has one (write them on every "
                   "host or on none)");
    expect_refused("rabbit://h1,u:s3cret@h2/",
                   "host 2 of 2: a user:password@ while host 1 has none");
    expect_refused("rabbit://h1,,h2/", "host 2 of 3: empty (a stray ',')");
    expect_refused("rabbit://h1,/", "host 2 of 2: empty (a stray ',')");
    expect_refused("rabbit://,h1/", "host 1 of 2: empty");
    expect_refused("rabbit://u:s3cret@h1,u:s3cret@h2:0/", "host 2 of 2: port: 0 is out of range");
    expect_refused("rabbit://u:s3cret@h1,u:s3cret@h 2/", "host 2 of 2: host 'h 2'");
    expect_refused("rabbit://h1,h2/a/b", "host 1 of 2: vhost: contains '/'");
}

/* ---- url and failover URLs --------------------------------------------------------- */

static void
expect_target_refused(const vtpm_amqp_target *t, const char *message)
{
    GPtrArray *nodes = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_amqp_target_nodes(t, &nodes, &err), -(int)VTPM_FAULT_BAD_REQUEST);
    assert_null(nodes);
    if (!strstr(err.message, message))
        fail_msg("message \"%s\" does not say \"%s\"", err.message, message);
}

static void
test_target(void **state)
{
    const char *failover[] = { "amqp://h3:5673", "rabbit://h4,h5/", NULL };
    const char *nine[] = { "amqp://b", "amqp://c,d,e,f,g,h,i", NULL };
    const char *tls_failover[] = { "amqps://h2/", NULL };
    const char *bad[] = { "amqp://h2", "amqp://h3:0", NULL };
    vtpm_amqp_target t = { .url = "rabbit://u:p@h1:5672,u:p@h2:5672/", .failover_urls = failover };
    g_autoptr(GPtrArray) nodes = NULL;
    vtpm_error err = { 0 };

    assert_int_equal(vtpm_amqp_target_nodes(&t, &nodes, &err), 0);
    assert_int_equal(nodes->len, 5);
    assert_node(NODE(nodes, 0), false, "h1", 5672, "u", "p", true, "/");
    assert_node(NODE(nodes, 1), false, "h2", 5672, "u", "p", true, "/");
    assert_node(NODE(nodes, 2), false, "h3", 5673, "guest", "guest", false, "/");
    assert_string_equal(NODE(nodes, 3)->host, "h4");
    assert_string_equal(NODE(nodes, 4)->host, "h5");

    t = (vtpm_amqp_target){ .url = "amqp://a", .failover_urls = nine };
    expect_target_refused(&t, "failover URL 2: more than 8 broker nodes");
    t = (vtpm_amqp_target){ .url = "amqp://h1:0" };
    expect_target_refused(&t, "broker URL: port: 0 is out of range");
    t = (vtpm_amqp_target){ .url = "amqp://h1", .failover_urls = bad };
    expect_target_refused(&t, "failover URL 2: port: 0");
    t = (vtpm_amqp_target){ .url = "rabbits://h/" };
    expect_target_refused(&t, "amqps:// needs a CA file (cacert)");
    t = (vtpm_amqp_target){ .url = "amqp://h/", .failover_urls = tls_failover };
    expect_target_refused(&t, "amqps:// needs a CA file (cacert)");
    t.tls.cacert = "/ca.pem";
    t.tls.cert = "/c.pem";
    expect_target_refused(&t, "TLS client cert and key must be given together");
    t.tls.key = "/c.key";
    g_clear_pointer(&nodes, g_ptr_array_unref);
    assert_int_equal(vtpm_amqp_target_nodes(&t, &nodes, &err), 0);
    assert_int_equal(nodes->len, 2);
    assert_true(NODE(nodes, 1)->tls);
}

static void
test_list_split(void **state)
{
    g_auto(GStrv) two = vtpm_amqp_url_list_split("  amqp://a \t amqp://b  ");
    g_auto(GStrv) none = vtpm_amqp_url_list_split(NULL);
    g_auto(GStrv) blank = vtpm_amqp_url_list_split(" \t ");

    assert_int_equal(g_strv_length(two), 2);
    assert_string_equal(two[0], "amqp://a");
    assert_string_equal(two[1], "amqp://b");
    assert_int_equal(g_strv_length(none), 0);
    assert_int_equal(g_strv_length(blank), 0);
    vtpm_amqp_node_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amqp_forms),
        cmocka_unit_test(test_rabbit_aliases),
        cmocka_unit_test(test_vhosts),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_multi_host),
        cmocka_unit_test(test_refused_whole),
        cmocka_unit_test(test_refused_host_port),
        cmocka_unit_test(test_refused_credentials_vhost),
        cmocka_unit_test(test_refused_multi_host),
        cmocka_unit_test(test_target),
        cmocka_unit_test(test_list_split),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
