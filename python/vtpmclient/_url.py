# SPDX-License-Identifier: Apache-2.0
"""Broker URLs, read by the rules vtpmd applies to ``[amqp] url``.

    SCHEME://[USER[:PASSWORD]@]HOST[:PORT][,[USER[:PASSWORD]@]HOST[:PORT]...][/[VHOST]]

- SCHEME: ``amqp`` or ``rabbit`` (TCP, default port 5672), ``amqps`` or
  ``rabbits`` (TLS, default port 5671); case-insensitive.
- USER, PASSWORD: percent-decoded; both absent: guest/guest; a USER without
  ``:PASSWORD``: the password guest; written but empty: refused.
- HOST: a DNS name, an IPv4 address or an ``[IPv6]`` address.
- VHOST: nothing, or a lone ``/``: the default vhost ``/``; else
  percent-decoded (``%2f`` is ``/``); a raw ``/`` in it is refused.
- ``,``: oslo.messaging's multi-host form: several nodes of one cluster, each
  with its own credentials, all with the one VHOST; the first is tried
  first, the others are failover nodes.

A query or fragment is refused.  No message quotes the password or the
vhost: a password written with a raw ``/`` or ``@`` ends up in them.
"""

import ipaddress
import re
import urllib.parse

from ._fault import Fault

URL_MAX = 4096
NODES_MAX = 8
SHORTSTR_MAX = 255
HOST_MAX = 253
LABEL_MAX = 63
PORT_TCP = 5672
PORT_TLS = 5671

_SCHEMES = {"amqp": False, "rabbit": False, "amqps": True, "rabbits": True}
_SCHEME_CHARS = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_LABEL_CHARS = re.compile(r"[A-Za-z0-9_-]*\Z")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Node:
    """One broker node to connect to."""

    __slots__ = ("tls", "host", "port", "user", "password", "password_given", "vhost")

    def __init__(self, tls, host, port, user, password, password_given, vhost):
        self.tls = tls
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.password_given = password_given
        self.vhost = vhost

    def display(self):
        """``amqp[s]://host:port/vhost`` without credentials: for messages."""
        host = "[%s]" % self.host.replace("%", "%25") if ":" in self.host else self.host
        return "%s://%s:%d/%s" % ("amqps" if self.tls else "amqp", host, self.port,
                                  urllib.parse.quote(self.vhost, safe=""))

    def __repr__(self):
        return "Node(%s)" % self.display()


def _bad(msg):
    return Fault("BadRequest", msg, details={"source": "client"})


def _unquote(text, what):
    """Percent-decode @text strictly: a bad escape, an encoded NUL or bytes
    that are not UTF-8 are refused, naming @what only."""
    if _PCT.search(text):
        raise _bad("%s: bad percent-encoding or not UTF-8" % what)
    try:
        out = urllib.parse.unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("%s: bad percent-encoding or not UTF-8" % what) from None
    if "\0" in out:
        raise _bad("%s: bad percent-encoding or not UTF-8" % what)
    return out


def _check_label(host, label):
    if not label:
        raise _bad("host '%s': empty label" % host)
    if len(label) > LABEL_MAX:
        raise _bad("host '%s': a label is longer than %d characters" % (host, LABEL_MAX))
    if label[0] == "-" or label[-1] == "-":
        raise _bad("host '%s': a label starts or ends with '-'" % host)
    if not _LABEL_CHARS.match(label):
        bad = next(c for c in label if not re.match(r"[A-Za-z0-9_-]", c))
        raise _bad("host '%s': '%s' is not allowed (letters, digits, '-', '_', '.')"
                   % (host, bad))


def _check_name(host):
    """A DNS name (one trailing dot allowed) or an IPv4 address."""
    if not host:
        raise _bad("host: empty")
    if "@" in host:
        raise _bad("host: contains '@' (write an '@' of the user or password as %40)")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > HOST_MAX:
        raise _bad("host: longer than %d characters" % HOST_MAX)
    for label in name.split("."):
        _check_label(host, label)


def _split_host_port(hostport):
    """(host, port text or None) of ``host[:port]`` / ``[v6][:port]``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("host: not a host name or IP address (an IPv6 address goes in [])")
        host, rest = hostport[1:end], hostport[end + 1:]
        # RFC 6874: a zone is written %25 inside the brackets.
        literal = host.replace("%25", "%", 1)
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _bad("host: not a host name or IP address (an IPv6 address goes in [])") \
                from None
        if rest and not rest.startswith(":"):
            raise _bad("host: not a host name or IP address (an IPv6 address goes in [])")
        return literal, rest[1:] if rest else None
    host, colon, port = hostport.partition(":")
    host = _unquote(host, "host")
    try:
        # International names in their ASCII form.
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise _bad("host: not a host name or IP address") from None
    _check_name(host)
    return host, port if colon else None


def _parse_port(text, tls):
    if text is None or text == "":
        return PORT_TLS if tls else PORT_TCP
    if not text.isdigit() or not text.isascii() or int(text) > 65535:
        raise _bad("port: not a number in 1..65535")
    if int(text) == 0:
        raise _bad("port: 0 is out of range 1..65535")
    return int(text)


def _parse_vhost(path):
    """The vhost of the URL's path (still percent-encoded)."""
    if path in ("", "/"):
        return "/"
    if "/" in path[1:]:
        raise _bad("vhost: contains '/' (write a '/' of the vhost name as %2f)")
    text = path[1:]
    if _PCT.search(text):
        raise _bad("vhost: bad percent-encoding")
    raw = urllib.parse.unquote_to_bytes(text)
    if b"\0" in raw:
        raise _bad("vhost: bad percent-encoding (or an encoded NUL)")
    try:
        vhost = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("vhost: not UTF-8") from None
    if len(raw) > SHORTSTR_MAX:
        raise _bad("vhost: longer than %d bytes" % SHORTSTR_MAX)
    return vhost


def _parse_node(tls, authority, path):
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        userinfo, hostport = None, authority
    elif "@" in userinfo:
        # The rest of a password written with a raw '@': never quoted.
        raise _bad("host: contains '@' (write an '@' of the user or password as %40)")
    user = password = None
    if userinfo is not None:
        u, colon, p = userinfo.partition(":")
        user = _unquote(u, "user")
        if colon:
            password = _unquote(p, "password")
        if not user:
            raise _bad("user: empty")
        if password == "":
            raise _bad("password: empty")
    host, port_text = _split_host_port(hostport)
    if not host:
        raise _bad("host: empty")
    port = _parse_port(port_text, tls)
    return Node(tls, host, port, user or "guest", password or "guest", password is not None,
                _parse_vhost(path))


def parse(url):
    """The nodes of one URL, in the order written."""
    if not url:
        raise _bad("empty")
    if not isinstance(url, str):
        raise _bad("expected a str URL, got %s" % type(url).__name__)
    if len(url.encode("utf-8", "surrogatepass")) > URL_MAX:
        raise _bad("longer than %d bytes" % URL_MAX)
    sep = url.find("://")
    if sep <= 0:
        raise _bad("not a URL (expected amqp://user:pass@host:port/vhost)")
    scheme = url[:sep].lower()
    if scheme not in _SCHEMES:
        # Quoted only when it looks like a scheme: anything else may be
        # the start of credentials written without one.
        if len(scheme) <= 16 and _SCHEME_CHARS.match(scheme):
            raise _bad("scheme '%s' is not amqp, amqps, rabbit or rabbits" % scheme)
        raise _bad("no amqp://, amqps://, rabbit:// or rabbits:// scheme")
    tls = _SCHEMES[scheme]
    rest = url[sep + 3:]
    end = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    path, hash_, _ = tail.partition("#")
    if "?" in path:
        raise _bad("query ('?...'): not supported (options are keyword arguments)")
    if hash_:
        raise _bad("fragment ('#...'): not supported")
    parts = authority.split(",")
    nodes = []
    for i, part in enumerate(parts):
        try:
            if len(parts) > 1 and not part:
                raise _bad("empty (a stray ',')")
            nodes.append(_parse_node(tls, part, path))
        except Fault as e:
            if len(parts) > 1:
                e.prefix("host %d of %d" % (i + 1, len(parts)))
            raise
    first = "@" in parts[0]
    for i, part in enumerate(parts[1:], 2):
        if ("@" in part) != first:
            raise _bad("host %d of %d: %s user:password@ while host 1 %s (write them on every "
                       "host or on none)" % (i, len(parts), "no" if first else "a",
                                             "has one" if first else "has none"))
    return nodes


def target_nodes(url, failover_urls=(), cacert=None, cert=None, key=None):
    """Every node of @url and then of each failover URL, in the order they
    are tried; the TLS files checked as vtpmd checks them."""
    if isinstance(failover_urls, str):
        failover_urls = failover_urls.split()
    nodes = []
    for i, u in enumerate([url] + list(failover_urls)):
        where = "broker URL" if i == 0 else "failover URL %d" % i
        try:
            more = parse(u)
        except Fault as e:
            raise e.prefix(where)
        if len(nodes) + len(more) > NODES_MAX:
            raise _bad("%s: more than %d broker nodes (the url's and the failover URLs' "
                       "together)" % (where, NODES_MAX))
        nodes.extend(more)
    if any(n.tls for n in nodes) and not cacert:
        raise _bad("amqps:// needs a CA file (cacert) to verify the broker")
    if bool(cert) != bool(key):
        raise _bad("TLS client cert and key must be given together")
    return nodes
