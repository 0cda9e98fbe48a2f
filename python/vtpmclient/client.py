# SPDX-License-Identifier: Apache-2.0
"""The vtpmd RPC client (docs/client.md).

One Client is one AMQP connection, owned by one I/O thread, with one
exclusive reply queue.  Callers in any number of threads hand their
requests to the I/O thread (pika's add_callback_threadsafe, the one
thread-safe entry of a BlockingConnection) and wait on an event of their
own; the I/O thread publishes, reads replies and matches them to callers by
correlation id under one lock.  So many calls can be in flight from one
Client, and heartbeats are answered while nobody calls.
"""

import functools
import logging
import os
import random
import socket
import ssl
import threading
import time
import uuid

import pika
import pika.exceptions

from . import _codec, _url
from ._fault import TIMEOUT, Fault

LOG = logging.getLogger("vtpmclient")

SHORTSTR_MAX = 255
HOST_MAX = 255
RECONNECT_MAX_S = 30.0
# What a worker accepts as [worker] host (vtpm_config_check_host): any
# other name could only time out.
_HOST_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _client_fault(code, message, retryable=None, **details):
    details["source"] = "client"
    return Fault(code, message, retryable, details)


def _bad(message):
    return _client_fault("BadRequest", message)


def _shortstr(name, value):
    if not isinstance(value, str) or not value:
        raise _bad("%s: expected a non-empty str" % name)
    if len(value.encode("utf-8")) > SHORTSTR_MAX:
        raise _bad("%s: longer than %d bytes" % (name, SHORTSTR_MAX))
    return value


def _check_host(host):
    if not isinstance(host, str) or not host:
        raise _bad("host: expected a non-empty str")
    if len(host) > HOST_MAX:
        raise _bad("host: longer than %d characters (%d)" % (HOST_MAX, len(host)))
    bad = next((c for c in host if c not in _HOST_CHARS), None)
    if bad is not None:
        raise _bad("host: '%s' contains %r (allowed: A-Z a-z 0-9 . _ -)" % (host, bad))


def _check_timeout(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _bad("%s: expected a number of seconds > 0, got %r" % (name, value))


def _check_deadline(deadline_ms):
    if deadline_ms is None:
        return
    if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int) or deadline_ms < 0:
        raise _bad("deadline_ms: expected an unsigned integer (Unix epoch ms), got %r"
                   % (deadline_ms,))


class _Pending:
    """One call (or one broadcast) waiting for its reply (or replies)."""

    __slots__ = ("event", "body", "bodies", "fault", "generation")

    def __init__(self, generation, collect=False):
        self.event = threading.Event()
        self.body = None
        self.bodies = [] if collect else None
        self.fault = None
        self.generation = generation


class Client:
    """A connection to the broker for calling vtpmd workers.

    url            the broker, in the forms vtpmd's [amqp] url accepts:
                   amqp:// amqps:// rabbit:// rabbits://, oslo's multi-host
                   form (failover nodes), a trailing '/' for the vhost '/'.
    cacert, cert, key
                   TLS files, as vtpmd's [amqp] cacert, cert and key: an
                   amqps node needs cacert; the broker's certificate and
                   host name are always verified.
    exchange, topic
                   vtpmd's [amqp] exchange and topic (both "vtpm").
    failover_urls  further URLs (a list, or one blank-separated str as in
                   [amqp] failover_urls); at most 8 nodes in all.
    heartbeat      AMQP heartbeat in seconds (0 = off).
    connect_timeout
                   seconds for one connection attempt to one node.
    name           the connection's name as the broker shows it
                   (rabbitmqctl list_connections client_properties);
                   default vtpmclient@HOSTNAME:PID.

    The constructor connects (trying the nodes in order) or raises a Fault
    (BadRequest for a bad argument, Busy when no node can be reached).
    """

    def __init__(self, url, cacert=None, cert=None, key=None, exchange="vtpm", topic="vtpm",
                 failover_urls=(), heartbeat=30, connect_timeout=10.0, name=None):
        self._nodes = _url.target_nodes(url, failover_urls, cacert, cert, key)
        self._exchange = _shortstr("exchange", exchange)
        self._topic = _shortstr("topic", topic)
        self._fanout = _shortstr("topic", topic + "_fanout")
        _check_timeout("connect_timeout", connect_timeout)
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or \
                not 0 <= heartbeat <= 3600:
            raise _bad("heartbeat: expected seconds in 0..3600, got %r" % (heartbeat,))
        self._ssl = self._ssl_context(cacert, cert, key) if any(n.tls for n in self._nodes) \
            else None
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._name = _shortstr("name", name) if name is not None else \
            "vtpmclient@%s:%d" % (socket.gethostname(), os.getpid())

        self._lock = threading.Lock()
        self._pending = {}          # correlation id -> _Pending
        self._conn = None           # BlockingConnection, only touched by the I/O thread
        self._ch = None
        self._queue = None
        self._connected = False     # under _lock, with _generation and _conn_ref
        self._conn_ref = None       # the connection callers post their requests to
        self._generation = 0
        self._last_error = None
        self._cur = 0               # the node tried first
        self._closing = False
        self._wake = threading.Event()
        self._first = threading.Event()

        self._thread = threading.Thread(target=self._run, name="vtpmclient-io", daemon=True)
        self._thread.start()
        self._first.wait()
        if not self._connected:
            self._closing = True
            self._wake.set()
            self._thread.join()
            raise _client_fault("Busy", "cannot connect to the broker: %s" % self._last_error,
                                broker=[n.display() for n in self._nodes])

    # ---- public -----------------------------------------------------------

    def call(self, host, method, args, timeout=30, deadline_ms=None, message_id=None):
        """Call @method on the worker of @host and return the reply's
        result (a dict); raise a Fault when the worker answers with one,
        when no reply arrives within @timeout seconds (code Timeout) or when
        the broker cannot be reached (Busy).  @deadline_ms (Unix epoch ms)
        goes in the request: a worker that takes it later answers Expired.
        @message_id (default: a new UUID) lets a worker answer a repeat
        from its reply cache instead of running it again."""
        return self._call(host, method, args, timeout, deadline_ms, message_id, None)

    def call_with_retry(self, host, method, args, timeout=30, deadline_ms=None, message_id=None,
                        attempt_timeout=None, backoff=0.5, max_backoff=10.0, multiplier=2.0,
                        jitter=0.2):
        """call(), sent again while the fault is retryable, with the same
        message_id (and request_id) every time.  Replies are awaited for
        @timeout seconds in all; no attempt starts after the deadline: the
        earlier of @deadline_ms (which every attempt carries) and the end of
        @timeout.  Waits @backoff seconds before the second attempt,
        @multiplier times longer before each further one, at most
        @max_backoff, each wait varied by +-@jitter (a fraction) so that
        many clients do not retry in step.  Each attempt waits for its reply
        at most @attempt_timeout seconds (default: all the time left).
        Raises the last fault, with details["attempts"]."""
        _check_timeout("timeout", timeout)
        _check_deadline(deadline_ms)
        if attempt_timeout is not None:
            _check_timeout("attempt_timeout", attempt_timeout)
        for name, v in (("backoff", backoff), ("max_backoff", max_backoff)):
            _check_timeout(name, v)
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or \
                multiplier < 1:
            raise _bad("multiplier: expected a number >= 1, got %r" % (multiplier,))
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or \
                not 0 <= jitter < 1:
            raise _bad("jitter: expected a fraction in [0, 1), got %r" % (jitter,))
        message_id = self._message_id(message_id)
        request_id = "req-" + str(uuid.uuid4())
        end = time.monotonic() + timeout
        last_start = end
        if deadline_ms is not None:
            last_start = min(end, time.monotonic() + deadline_ms / 1000.0 - time.time())
        wait = backoff
        attempts = 0
        while True:
            attempts += 1
            left = max(0.001, end - time.monotonic())
            try:
                return self._call(host, method, args, min(left, attempt_timeout or left),
                                  deadline_ms, message_id, request_id)
            except Fault as f:
                f.details["attempts"] = attempts
                pause = wait * (1 + random.uniform(-jitter, jitter))
                if not f.retryable or time.monotonic() + pause >= last_start:
                    raise
                LOG.debug("message_id=%s attempt %d: %s; again in %.2f s", message_id,
                          attempts, f, pause)
            time.sleep(pause)
            wait = min(wait * multiplier, max_backoff)

    def capabilities_all(self, window_s=2):
        """Broadcast get_capabilities to every worker (the <topic>_fanout
        exchange) and collect the replies that arrive within @window_s
        seconds: {host: result}, host as each result names it.  Faults
        (a worker draining answers Busy) name no host and are left out."""
        _check_timeout("window_s", window_s)
        corr = str(uuid.uuid4())
        body = _codec.pack_request("get_capabilities", {}, "req-" + corr, None)
        p = self._submit(corr, self._fanout, "", body, str(uuid.uuid4()), collect=True)
        p.event.wait(window_s)
        with self._lock:
            self._pending.pop(corr, None)
            bodies = list(p.bodies)
        if p.fault:
            raise p.fault
        out = {}
        for b in bodies:
            try:
                ok, result = _codec.decode_reply(b)
            except Fault as f:
                LOG.warning("capabilities_all: a reply left out: %s", f)
                continue
            h = result.get("host") if ok else None
            if isinstance(h, str) and h not in out:
                out[h] = result
        return out

    def close(self):
        """Close the connection; calls still waiting fail with Busy (not
        retryable: the client is closed).  Idempotent."""
        with self._lock:
            self._closing = True
            conn = self._conn_ref
        self._wake.set()
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)
            except pika.exceptions.AMQPError:
                pass
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- calls (any thread) ---------------------------------------------------

    @staticmethod
    def _message_id(message_id):
        if message_id is None:
            return str(uuid.uuid4())
        return _shortstr("message_id", message_id)

    def _call(self, host, method, args, timeout, deadline_ms, message_id, request_id):
        _check_host(host)
        if not isinstance(method, str):
            raise _bad("method: expected str, got %s" % type(method).__name__)
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _bad("args: expected a dict, got %s" % type(args).__name__)
        _check_timeout("timeout", timeout)
        _check_deadline(deadline_ms)
        message_id = self._message_id(message_id)
        where = {"host": host, "method": method, "message_id": message_id}
        rk = _shortstr("routing key <topic>.<host>", "%s.%s" % (self._topic, host))
        corr = str(uuid.uuid4())
        try:
            body = _codec.pack_request(method, args, request_id or "req-" + corr, deadline_ms)
            p = self._submit(corr, self._exchange, rk, body, message_id)
        except Fault as f:
            f.details.update(where)
            raise
        if not p.event.wait(timeout):
            with self._lock:
                self._pending.pop(corr, None)
            if not p.event.is_set():
                raise _client_fault(TIMEOUT, "no reply from %s within %g s" % (host, timeout),
                                    timeout_s=timeout, **where)
        if p.fault:
            p.fault.details.update(where)
            raise p.fault
        try:
            ok, result = _codec.decode_reply(p.body)
        except Fault as f:
            f.details.update(where)
            raise
        if ok:
            return result
        result.details.update(where)
        raise result

    def _submit(self, corr, exchange, routing_key, body, message_id, collect=False):
        """Register a waiter for @corr and hand the publish to the I/O
        thread."""
        with self._lock:
            if self._closing:
                raise _client_fault("Busy", "the client is closed", retryable=False, closed=True)
            if not self._connected:
                raise _client_fault("Busy", "not connected to the broker (reconnecting): %s"
                                    % self._last_error)
            p = _Pending(self._generation, collect)
            self._pending[corr] = p
            conn = self._conn_ref
        props = pika.BasicProperties(content_type=_codec.CONTENT_TYPE, delivery_mode=2,
                                     correlation_id=corr, message_id=message_id)
        try:
            conn.add_callback_threadsafe(functools.partial(
                self._publish, p, exchange, routing_key, body, props))
        except pika.exceptions.AMQPError as e:
            with self._lock:
                self._pending.pop(corr, None)
            raise _client_fault("Busy", "the connection to the broker is closing: %s"
                                % (e or type(e).__name__)) from None
        return p

    # ---- the I/O thread ---------------------------------------------------------

    @staticmethod
    def _ssl_context(cacert, cert, key):
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cacert)
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            if cert:
                ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise _bad("TLS files (cacert %s, cert %s, key %s): %s"
                       % (cacert, cert, key, e)) from None
        return ctx

    def _params(self, node):
        return pika.ConnectionParameters(
            host=node.host, port=node.port, virtual_host=node.vhost,
            credentials=pika.PlainCredentials(node.user, node.password,
                                              erase_on_connect=False),
            ssl_options=pika.SSLOptions(self._ssl, node.host) if node.tls else None,
            heartbeat=self._heartbeat, connection_attempts=1,
            socket_timeout=self._connect_timeout, stack_timeout=self._connect_timeout,
            blocked_connection_timeout=None,
            client_properties={"connection_name": self._name, "product": "vtpmclient"})

    def _connect_once(self):
        """One round over the nodes, from the current one on.  True when
        connected."""
        errors = []
        for i in range(len(self._nodes)):
            idx = (self._cur + i) % len(self._nodes)
            node = self._nodes[idx]
            try:
                conn = pika.BlockingConnection(self._params(node))
            except (pika.exceptions.AMQPError, OSError, ssl.SSLError) as e:
                errors.append("%s: %s" % (node.display(), _why(e)))
                continue
            try:
                ch = conn.channel()
                q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
                ch.basic_consume(q, self._on_reply, auto_ack=True, exclusive=True)
            except pika.exceptions.AMQPError as e:
                errors.append("%s: %s" % (node.display(), _why(e)))
                _close_quietly(conn)
                continue
            self._conn, self._ch, self._queue, self._cur = conn, ch, q, idx
            with self._lock:
                self._generation += 1
                self._connected = True
                self._conn_ref = conn
            LOG.info("connected to %s (reply queue %s)", node.display(), q)
            return True
        self._last_error = "; ".join(errors)
        return False

    def _run(self):
        delay = 0.1
        while not self._closing:
            if self._conn is None:
                if self._connect_once():
                    delay = 0.1
                else:
                    if not self._first.is_set():
                        break
                    self._wake.wait(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                self._first.set()
                continue
            try:
                self._conn.process_data_events(time_limit=None)
                if self._ch.is_closed:
                    self._lost("channel closed: %s" % _why(self._ch._closing_reason))
            except (pika.exceptions.AMQPError, OSError) as e:
                self._lost(_why(e))
            except Exception as e:  # a bug here must not leave callers waiting
                LOG.exception("I/O thread")
                self._lost("%s: %s" % (type(e).__name__, e))
        self._first.set()
        self._shutdown()

    def _lost(self, why):
        """The connection (or our channel) is gone: every waiting call
        fails with Busy, retryable (its reply went to a queue that no
        longer exists), and the next round connects anew, starting with
        the next node (the way vtpmd fails over)."""
        node = self._nodes[self._cur]
        LOG.warning("lost the connection to %s: %s", node.display(), why)
        self._fail_all(_client_fault("Busy", "lost the connection to the broker before the "
                                     "reply: %s" % why, broker=node.display()))
        _close_quietly(self._conn)
        self._conn = self._ch = self._queue = None
        self._last_error = "%s: %s" % (node.display(), why)
        if len(self._nodes) > 1:
            self._cur = (self._cur + 1) % len(self._nodes)

    def _fail_all(self, fault):
        with self._lock:
            self._connected = False
            self._conn_ref = None
            waiting, self._pending = self._pending, {}
        for p in waiting.values():
            p.fault = fault
            p.event.set()

    def _shutdown(self):
        self._fail_all(_client_fault("Busy", "the client is closed", retryable=False,
                                     closed=True))
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = self._ch = None

    def _publish(self, p, exchange, routing_key, body, props):
        if p.generation != self._generation or self._ch is None:
            return  # failed with its connection already
        props.reply_to = self._queue
        try:
            self._ch.basic_publish(exchange, routing_key, body, props)
        except (pika.exceptions.AMQPError, OSError) as e:
            # The loop notices the dead channel or connection and fails
            # every waiting call, this one included.
            LOG.debug("publish to %s/%s: %s", exchange, routing_key, _why(e))

    def _on_reply(self, _ch, _method, props, body):
        with self._lock:
            p = self._pending.get(props.correlation_id)
            if p is None:
                return  # a late reply: its caller gave up
            if p.bodies is not None:
                p.bodies.append(body)
                return
            del self._pending[props.correlation_id]
        p.body = body
        p.event.set()


def _why(e):
    """A short reason of a pika error: the innermost cause pika wraps
    (a refused connection, a TLS verification failure, the broker's
    reply), with its class when it has no text."""
    if isinstance(e, (pika.exceptions.ChannelClosed, pika.exceptions.ConnectionClosed)):
        return "%d %s" % (e.reply_code, e.reply_text)
    inner = getattr(e, "exceptions", None)  # AMQPConnectionWorkflowFailed
    if inner:
        return _why(inner[-1])
    inner = getattr(e, "exception", None)  # AMQPConnector*Error
    if isinstance(inner, BaseException):
        return _why(inner)
    if isinstance(e, pika.exceptions.AMQPError) and e.args and \
            isinstance(e.args[0], BaseException):
        return _why(e.args[0])
    text = str(e)
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


def _close_quietly(conn):
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # closing a broken connection: nothing to save
        pass
