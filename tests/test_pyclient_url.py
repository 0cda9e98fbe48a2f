# SPDX-License-Identifier: Apache-2.0
"""python/vtpmclient/_url.py: every broker URL form vtpmd accepts, and
every refusal, with the messages vtpmd's own parser gives (the Client's
arguments are checked before it connects: no broker needed)."""

import unittest

import vtpmclient
from vtpmclient import _url


def node(url):
    nodes = _url.parse(url)
    assert len(nodes) == 1, nodes
    n = nodes[0]
    return (n.tls, n.host, n.port, n.user, n.password, n.password_given, n.vhost, n.display())


class Forms(unittest.TestCase):
    def test_amqp(self):
        self.assertEqual(node("amqp://guest:guest@127.0.0.1:5672/%2f"),
                         (False, "127.0.0.1", 5672, "guest", "guest", True, "/",
                          "amqp://127.0.0.1:5672/%2F"))
        self.assertEqual(node("amqp://localhost"),
                         (False, "localhost", 5672, "guest", "guest", False, "/",
                          "amqp://localhost:5672/%2F"))
        self.assertEqual(node("amqps://user:pa%40ss@broker.example.org:5671/cloud"),
                         (True, "broker.example.org", 5671, "user", "pa@ss", True, "cloud",
                          "amqps://broker.example.org:5671/cloud"))
        self.assertEqual(node("amqps://u:p@h/x")[:3], (True, "h", 5671))
        self.assertEqual(node("amqp://u@h:1234")[3:6], ("u", "guest", False))
        self.assertEqual(node("amqp://h:/x")[2], 5672)
        self.assertEqual(node("AMQPS://h/v")[:3], (True, "h", 5671))

    def test_rabbit_aliases(self):
        self.assertEqual(node("rabbit://nova:s3cret@rabbit.example.net:5672/"),
                         (False, "rabbit.example.net", 5672, "nova", "s3cret", True, "/",
                          "amqp://rabbit.example.net:5672/%2F"))
        self.assertEqual(node("rabbits://nova:s3cret@rabbit.example.net/")[:3],
                         (True, "rabbit.example.net", 5671))
        self.assertEqual(node("rabbit://h/%2f")[6], "/")
        self.assertEqual(node("Rabbit://h/nova")[6], "nova")
        self.assertEqual(node("amqp://u:p@h:5672/")[6], "/")

    def test_vhosts(self):
        self.assertEqual(node("amqp://h/%2Fa%20b")[6:], ("/a b", "amqp://h:5672/%2Fa%20b"))
        self.assertEqual(node("amqp://h/caf%C3%A9")[6:], ("caf\u00e9", "amqp://h:5672/caf%C3%A9"))
        self.assertEqual(node("amqp://h/a%2fb")[6], "a/b")

    def test_hosts(self):
        self.assertEqual(node("amqp://u%40x:p%3Aw@[::1]:5671/prod"),
                         (False, "::1", 5671, "u@x", "p:w", True, "prod",
                          "amqp://[::1]:5671/prod"))
        self.assertEqual(node("amqp://[fe80::1%25eth0]:5672/")[1::6],
                         ("fe80::1%eth0", "amqp://[fe80::1%25eth0]:5672/%2F"))
        self.assertEqual(node("amqp://rabbit_1.internal./v")[1], "rabbit_1.internal.")
        self.assertEqual(node("amqp://m\u00fcnchen.example/")[1], "xn--mnchen-3ya.example")
        long_ok = "amqp://%s.%s.%s.%s/x" % ("a" * 63, "a" * 63, "a" * 63, "b" * 61)
        self.assertEqual(len(_url.parse(long_ok)), 1)

    def test_multi_host(self):
        two = _url.parse("rabbit://u1:p1@h1:5672,u2:p2@h2:5673/nova")
        self.assertEqual([(n.host, n.port, n.user, n.password, n.vhost) for n in two],
                         [("h1", 5672, "u1", "p1", "nova"), ("h2", 5673, "u2", "p2", "nova")])
        three = _url.parse("rabbits://h1,h2:5000,[::1]/")
        self.assertEqual([(n.tls, n.host, n.port, n.vhost) for n in three],
                         [(True, "h1", 5671, "/"), (True, "h2", 5000, "/"),
                          (True, "::1", 5671, "/")])


class Refusals(unittest.TestCase):
    def refused(self, url, why):
        with self.assertRaises(vtpmclient.Fault) as cm:
            _url.parse(url)
        f = cm.exception
        self.assertEqual(f.code, "BadRequest")
        self.assertFalse(f.retryable)
        self.assertIn(why, f.message)
        self.assertNotIn("cret", f.message)

    def test_whole(self):
        self.refused("", "empty")
        self.refused("amqp://" + "a" * 5000, "longer than 4096 bytes")
        self.refused("localhost", "not a URL")
        self.refused("://h", "not a URL")
        self.refused("http://h/", "scheme 'http' is not amqp, amqps, rabbit or rabbits")
        self.refused("kombu+rabbit://h/", "scheme 'kombu+rabbit' is not")
        self.refused("guest:s3cret@h://x", "no amqp://, amqps://, rabbit:// or rabbits:// scheme")
        self.refused("amqp://h/?heartbeat=10", "query ('?...'): not supported")
        self.refused("amqp://h#s3cret", "fragment ('#...'): not supported")

    def test_host_port(self):
        name = list("a" * 250)
        for i in range(50, 250, 50):
            name[i] = "."
        self.refused("amqp://", "host: empty")
        self.refused("amqp:///x", "host: empty")
        self.refused("amqp://:5672/x", "host: empty")
        self.refused("amqp://u:s3cret@/x", "host: empty")
        self.refused("amqp://exa mple/", "host 'exa mple': ' ' is not allowed")
        self.refused("amqp://h%2fx/", "host 'h/x': '/' is not allowed")
        self.refused("amqp://-h/", "starts or ends with '-'")
        self.refused("amqp://a..b/", "host 'a..b': empty label")
        self.refused(".h", "not a URL")
        self.refused("amqp://%s/x" % ("a" * 64), "longer than 63 characters")
        self.refused("amqp://%s.abcde/x" % "".join(name), "host: longer than 253 characters")
        self.refused("amqp://[::1/x", "host: not a host name or IP address")
        self.refused("amqp://[zz]/", "host: not a host name or IP address")
        self.refused("amqp://u:p@s3cret@h/x",
                     "host: contains '@' (write an '@' of the user or password as %40)")
        self.refused("amqp://h:0/", "port: 0 is out of range 1..65535")
        self.refused("amqp://h:99999/", "port: not a number in 1..65535")
        self.refused("amqp://h:port/", "port: not a number in 1..65535")
        self.refused("amqp://u:s3cret/x@h/v", "port: not a number in 1..65535")

    def test_credentials_vhost(self):
        self.refused("amqp://@h", "user: empty")
        self.refused("amqp://:s3cret@h", "user: empty")
        self.refused("amqp://u:@h", "password: empty")
        self.refused("amqp://u:s3cret%00@h", "password: bad percent-encoding or not UTF-8")
        self.refused("amqp://u%ff:s3cret@h", "user: bad percent-encoding or not UTF-8")
        self.refused("amqp://h/a/b", "vhost: contains '/' (write a '/' of the vhost name as %2f)")
        self.refused("amqp://h//", "vhost: contains '/'")
        self.refused("amqp://h/%zz", "vhost: bad percent-encoding")
        self.refused("amqp://h/%00", "vhost: bad percent-encoding (or an encoded NUL)")
        self.refused("amqp://h/%ff", "vhost: not UTF-8")
        self.refused("amqp://h/" + "v" * 256, "vhost: longer than 255 bytes")

    def test_multi_host(self):
        self.refused("rabbit://u:s3cret@h1,h2/",
                     "host 2 of 2: no user:password@ while host 1 has one (write them on every "
                     "host or on none)")
        self.refused("rabbit://h1,u:s3cret@h2/", "host 2 of 2: a user:password@ while host 1 "
                     "has none")
        self.refused("rabbit://h1,,h2/", "host 2 of 3: empty (a stray ',')")
        self.refused("rabbit://h1,/", "host 2 of 2: empty (a stray ',')")
        self.refused("rabbit://,h1/", "host 1 of 2: empty")
        self.refused("rabbit://u:s3cret@h1,u:s3cret@h2:0/", "host 2 of 2: port: 0 is out of range")
        self.refused("rabbit://u:s3cret@h1,u:s3cret@h 2/", "host 2 of 2: host 'h 2'")
        self.refused("rabbit://h1,h2/a/b", "host 1 of 2: vhost: contains '/'")


class Target(unittest.TestCase):
    def refused(self, why, url, **kw):
        with self.assertRaises(vtpmclient.Fault) as cm:
            _url.target_nodes(url, **kw)
        self.assertEqual(cm.exception.code, "BadRequest")
        self.assertIn(why, cm.exception.message)

    def test_target(self):
        nodes = _url.target_nodes("rabbit://u:p@h1:5672,u:p@h2:5672/",
                                  ["amqp://h3:5673", "rabbit://h4,h5/"])
        self.assertEqual([(n.host, n.port, n.user) for n in nodes],
                         [("h1", 5672, "u"), ("h2", 5672, "u"), ("h3", 5673, "guest"),
                          ("h4", 5672, "guest"), ("h5", 5672, "guest")])
        # [amqp] failover_urls' form: one blank-separated string.
        self.assertEqual(len(_url.target_nodes("amqp://a", " amqp://b \t amqp://c ")), 3)
        self.refused("failover URL 2: more than 8 broker nodes", "amqp://a",
                     failover_urls=["amqp://b", "amqp://c,d,e,f,g,h,i"])
        self.refused("broker URL: port: 0 is out of range", "amqp://h1:0")
        self.refused("failover URL 2: port: 0", "amqp://h1",
                     failover_urls=["amqp://h2", "amqp://h3:0"])
        self.refused("amqps:// needs a CA file (cacert)", "rabbits://h/")
        self.refused("amqps:// needs a CA file (cacert)", "amqp://h/",
                     failover_urls=["amqps://h2/"])
        self.refused("TLS client cert and key must be given together", "amqp://h/",
                     failover_urls=["amqps://h2/"], cacert="/ca.pem", cert="/c.pem")
        nodes = _url.target_nodes("amqp://h/", ["amqps://h2/"], cacert="/ca.pem",
                                  cert="/c.pem", key="/c.key")
        self.assertTrue(nodes[1].tls)


class ClientArguments(unittest.TestCase):
    """Refused before any connection is tried."""

    def refused(self, why, *args, **kw):
        with self.assertRaises(vtpmclient.Fault) as cm:
            vtpmclient.Client(*args, **kw)
        self.assertEqual(cm.exception.code, "BadRequest")
        self.assertIn(why, cm.exception.message)
        self.assertNotIn("s3cret", repr(cm.exception))

    def test_client(self):
        self.refused("broker URL: port: 0 is out of range", "amqp://u:s3cret@h:0/")
        self.refused("amqps:// needs a CA file (cacert) to verify the broker",
                     "amqps://u:s3cret@h/")
        self.refused("TLS client cert and key must be given together", "amqp://h/",
                     cert="/c.pem")
        self.refused("exchange: expected a non-empty str", "amqp://h/", exchange="")
        self.refused("topic: longer than 255 bytes", "amqp://h/", topic="t" * 256)
        self.refused("heartbeat: expected seconds in 0..3600", "amqp://h/", heartbeat=-1)
        self.refused("TLS files", "amqps://h/", cacert="/nonexistent/ca.pem")


if __name__ == "__main__":
    unittest.main()
