# SPDX-License-Identifier: Apache-2.0
"""python/vtpmclient/_codec.py: requests packed as vtpmd reads them (str as
str, bytes as bin), replies decoded with the protocol's rules
(docs/protocol.md, "Reply envelope", "Encoding rules")."""

import unittest

import msgpack

import vtpmclient
from vtpmclient import _codec


def reply(obj):
    return msgpack.packb(obj, use_bin_type=True)


def fault_map(code="BadRequest", message="m", retryable=False, **extra):
    return dict({"code": code, "message": message, "retryable": retryable}, **extra)


class Requests(unittest.TestCase):
    def test_envelope(self):
        body = _codec.pack_request("spawn", {"instance": {"uuid": "u"}}, "req-1", None)
        self.assertEqual(msgpack.unpackb(body, raw=False),
                         {"v": 1, "method": "spawn", "args": {"instance": {"uuid": "u"}},
                          "context": {"request_id": "req-1"}})
        body = _codec.pack_request("get_capabilities", {}, "req-2", 1767225600000)
        self.assertEqual(msgpack.unpackb(body, raw=False)["deadline_ms"], 1767225600000)

    def test_bytes_are_bin_str_is_str(self):
        body = _codec.pack_request("spawn", {"s": b"\x00\xff", "t": "text"}, "r", None)
        # 0xc4: bin 8 with the 2 bytes; 0xa4: fixstr of 4.
        self.assertIn(b"\xc4\x02\x00\xff", body)
        self.assertIn(b"\xa4text", body)
        self.assertEqual(msgpack.unpackb(body, raw=False)["args"]["s"], b"\x00\xff")

    def test_unpackable(self):
        for bad in ({"x": {1, 2}}, {"x": 2 ** 64}, {"x": object()}):
            with self.assertRaises(vtpmclient.Fault) as cm:
                _codec.pack_request("m", bad, "r", None)
            self.assertEqual(cm.exception.code, "BadRequest")
            self.assertTrue(cm.exception.message.startswith("args: cannot be packed"))
            self.assertEqual(cm.exception.details, {"source": "client"})


class Replies(unittest.TestCase):
    def malformed(self, body, why, code="BadRequest"):
        with self.assertRaises(vtpmclient.Fault) as cm:
            _codec.decode_reply(body)
        self.assertEqual(cm.exception.code, code)
        self.assertIn(why, cm.exception.message)
        self.assertEqual(cm.exception.details, {"source": "client"})

    def test_ok(self):
        self.assertEqual(_codec.decode_reply(reply({"v": 1, "ok": True, "result": {"a": b"\x01"}})),
                         (True, {"a": b"\x01"}))
        self.assertEqual(_codec.decode_reply(reply({"v": 1, "ok": True, "result": {}})),
                         (True, {}))

    def test_fault(self):
        ok, f = _codec.decode_reply(reply({"v": 1, "ok": False, "fault": fault_map(
            "HypervisorError", "libvirt is down", True)}))
        self.assertFalse(ok)
        self.assertEqual((f.code, f.message, f.retryable, f.details),
                         ("HypervisorError", "libvirt is down", True, {"source": "worker"}))
        self.assertIsInstance(f, vtpmclient.Fault)

    def test_unknown_code_is_internal_named(self):
        ok, f = _codec.decode_reply(reply({"v": 1, "ok": False, "fault": fault_map(
            "QuotaExceeded", "newer peer", True, hint="later")}))
        self.assertEqual((f.code, f.retryable), ("Internal", True))
        self.assertEqual(f.details, {"source": "worker", "received_code": "QuotaExceeded",
                                     "hint": "later"})

    def test_first_key_wins(self):
        # A map with "ok" twice: true first (hand-packed, dicts cannot hold it).
        body = b"\x84\xa1v\x01\xa2ok\xc3\xa2ok\xc2\xa6result\x80"
        self.assertEqual(_codec.decode_reply(body), (True, {}))

    def test_nil_is_absent(self):
        self.malformed(reply({"v": 1, "ok": None, "result": {}}), "reply: ok: missing required key")

    def test_version(self):
        self.malformed(reply({"ok": True, "result": {}}), "reply: v: missing required key")
        self.malformed(reply({"v": "1", "ok": True, "result": {}}),
                       "reply: v: expected integer, got str")
        self.malformed(reply({"v": 2, "ok": True, "result": {}}),
                       "unsupported protocol version 2; this client speaks 1",
                       code="UnsupportedVersion")
        self.malformed(reply({"v": -1, "ok": True, "result": {}}),
                       "unsupported protocol version -1", code="UnsupportedVersion")

    def test_shapes(self):
        self.malformed(reply([1]), "undecodable reply: expected map, got array")
        self.malformed(reply({"v": 1, "ok": 1, "result": {}}), "reply: ok: expected bool, got "
                       "unsigned integer")
        self.malformed(reply({"v": 1, "ok": True}), "reply: result: missing required key")
        self.malformed(reply({"v": 1, "ok": True, "result": []}),
                       "reply: result: expected map, got array")
        self.malformed(reply({"v": 1, "ok": False}), "reply: fault: missing required key")
        self.malformed(reply({"v": 1, "ok": False, "fault": {"code": "Busy", "message": "m"}}),
                       "reply: fault.retryable: missing required key")
        self.malformed(reply({"v": 1, "ok": False, "fault": fault_map(code=b"Busy")}),
                       "reply: fault.code: expected str, got bin")
        self.malformed(reply({"v": 1, "ok": False, "fault": fault_map(code="C" * 65)}),
                       "fault.code: string of 65 bytes exceeds limit of 64")
        self.malformed(reply({"v": 1, "ok": False, "fault": fault_map(message="x\0y")}),
                       "fault.message: string contains a NUL byte")

    def test_wire_rules(self):
        ok = reply({"v": 1, "ok": True, "result": {}})
        self.malformed(ok + b"\x00", "undecodable reply")          # trailing bytes
        self.malformed(ok[:-1], "undecodable reply")               # truncated
        self.malformed(b"\x81\xa1v\xc1", "undecodable reply")      # reserved 0xc1
        self.malformed(b"\x83\xa1v\x01\xa2ok\xc3\xa6result\xd4\x01\x00", "undecodable reply: ext")
        self.malformed(b"\x81\xa1v\xa2\xff\xfe", "undecodable reply")  # str not UTF-8
        deep = {"v": 1, "ok": True, "result": {}}
        inner = deep["result"]
        for _ in range(16):
            inner["x"] = {}
            inner = inner["x"]
        self.malformed(reply(deep), "nests deeper than limit of 16")
        self.malformed(reply({"v": 1, "ok": True, "result": {"s": "x" * (64 * 1024 + 1)}}),
                       "undecodable reply")
        self.malformed(reply({"v": 1, "ok": True, "result": {"a": list(range(4097))}}),
                       "undecodable reply")
        self.malformed(b"\x80" * (64 * 1024 * 1024 + 1), "exceeds limit of")


if __name__ == "__main__":
    unittest.main()
