# SPDX-License-Identifier: Apache-2.0
"""Request and reply envelopes (docs/protocol.md; proto/codec.c is the
reference): requests packed as vtpmd expects them, replies decoded with the
limits and encoding rules a worker applies to requests."""

import msgpack

from ._fault import CODES, Fault

VERSION = 1
CONTENT_TYPE = "application/msgpack"

# A reply is read with vtpmd's request limits (proto/codec.c), except the
# body, which may be as large as vtpmctl accepts.
MAX_BODY = 64 << 20
MAX_STR = 64 << 10
MAX_BIN = 64 << 10
MAX_CONTAINER = 4096
MAX_DEPTH = 16
MAX_OBJECTS = 65536
MAX_FAULT_CODE = 64
MAX_FAULT_MESSAGE = 4096


def _client_fault(code, message):
    return Fault(code, message, details={"source": "client"})


def pack_request(method, args, request_id, deadline_ms):
    """The body of one request.  Python str goes as msgpack str, bytes as
    bin (args.instance.vtpm.secret), ints, floats, bools, None, lists and
    dicts as themselves."""
    env = {"v": VERSION, "method": method, "args": args,
           "context": {"request_id": request_id}}
    if deadline_ms is not None:
        env["deadline_ms"] = deadline_ms
    try:
        return msgpack.packb(env, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        # msgpack names the value's type ("can not serialize 'set' object").
        raise _client_fault("BadRequest", "args: cannot be packed as msgpack: %s" % e) from None


def _refuse_ext(code, data):
    raise ValueError("ext type %d is not allowed" % code)


def _first_wins(pairs):
    """A map as the protocol reads it: the first occurrence of a key wins."""
    out = {}
    for k, v in pairs:
        if k not in out:
            out[k] = v
    return out


def _type_name(v):
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "unsigned integer" if v >= 0 else "negative integer"
    return {float: "float64", str: "str", bytes: "bin", list: "array",
            dict: "map"}.get(type(v), type(v).__name__)


def _check_shape(top):
    """Depth and object count, which msgpack does not bound."""
    objects = 0
    stack = [(top, 1)]
    while stack:
        v, depth = stack.pop()
        objects += 1
        if objects > MAX_OBJECTS:
            raise _client_fault("BadRequest", "undecodable reply: more than %d objects"
                                % MAX_OBJECTS)
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise _client_fault("BadRequest", "undecodable reply: nests deeper than limit "
                                    "of %d" % MAX_DEPTH)
            items = v.values() if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
            objects += len(v) if isinstance(v, dict) else 0


def _unpack(body):
    if len(body) > MAX_BODY:
        raise _client_fault("BadRequest", "undecodable reply: body of %d bytes exceeds limit "
                            "of %d" % (len(body), MAX_BODY))
    try:
        top = msgpack.unpackb(body, raw=False, use_list=True, ext_hook=_refuse_ext,
                              object_pairs_hook=_first_wins, max_str_len=MAX_STR,
                              max_bin_len=MAX_BIN, max_array_len=MAX_CONTAINER,
                              max_map_len=MAX_CONTAINER, strict_map_key=False)
    except Exception as e:  # msgpack raises several types, all meaning "malformed"
        raise _client_fault("BadRequest", "undecodable reply: %s" % (e or type(e).__name__)) \
            from None
    if not isinstance(top, dict):
        raise _client_fault("BadRequest", "undecodable reply: expected map, got %s"
                            % _type_name(top))
    _check_shape(top)
    return top


def _get(m, where, key, kind, expected):
    """m[key] (nil counts as absent), required, of type @kind."""
    v = m.get(key)
    path = "%s.%s" % (where, key) if where else key
    if v is None:
        raise _client_fault("BadRequest", "reply: %s: missing required key" % path)
    if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
        raise _client_fault("BadRequest", "reply: %s: expected %s, got %s"
                            % (path, expected, _type_name(v)))
    return v


def _str(m, where, key, limit):
    v = _get(m, where, key, str, "str")
    n = len(v.encode("utf-8"))
    if n > limit:
        raise _client_fault("BadRequest", "reply: %s.%s: string of %d bytes exceeds limit of %d"
                            % (where, key, n, limit))
    if "\0" in v:
        raise _client_fault("BadRequest", "reply: %s.%s: string contains a NUL byte"
                            % (where, key))
    return v


def decode_reply(body):
    """(True, result) or (False, Fault) of a reply body; raises a Fault
    (BadRequest, source client) when the body is no valid reply."""
    top = _unpack(body)
    v = top.get("v")
    if v is None:
        raise _client_fault("BadRequest", "reply: v: missing required key")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _client_fault("BadRequest", "reply: v: expected integer, got %s" % _type_name(v))
    if v != VERSION:
        raise _client_fault("UnsupportedVersion", "unsupported protocol version %d; this client "
                            "speaks %d" % (v, VERSION))
    if _get(top, "", "ok", bool, "bool"):
        return True, _get(top, "", "result", dict, "map")
    f = _get(top, "", "fault", dict, "map")
    code = _str(f, "fault", "code", MAX_FAULT_CODE)
    message = _str(f, "fault", "message", MAX_FAULT_MESSAGE)
    retryable = _get(f, "fault", "retryable", bool, "bool")
    details = {"source": "worker"}
    if code not in CODES:
        # A newer worker's code: Internal, the name kept (protocol.md).
        details["received_code"] = code
        code = "Internal"
    for k, val in f.items():
        if k not in ("code", "message", "retryable") and isinstance(k, str):
            details.setdefault(k, val)
    return False, Fault(code, message, retryable, details)
