#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write the seed corpora of the fuzz targets (docs/fuzzing.md).

    tests/fuzz/gen-corpus.py [CORPUS_DIR]   (default: tests/fuzz/corpus)

Seeds are named seed-*: a rerun rewrites exactly those and leaves every
crash-* input (a regression test, added by hand) alone.  msgpack is
written by the small encoder below rather than python3-msgpack, so that
the seeds are byte-for-byte reproducible from this file alone.
"""
import os
import struct
import sys


class Bin(bytes):
    """A msgpack bin (plain bytes objects are raw, pre-encoded msgpack)."""


class Raw(bytes):
    """Already encoded msgpack, inserted as is."""


def pack(o):
    if isinstance(o, Raw):
        return bytes(o)
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 0x80:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack("b", o)
        if 0 <= o <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", o)
        if o > 0:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, Bin):
        return b"\xc4" + bytes([len(o)]) + bytes(o) if len(o) < 256 else \
            b"\xc5" + struct.pack(">H", len(o)) + bytes(o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(o, list):
        h = bytes([0x90 | len(o)]) if len(o) < 16 else b"\xdc" + struct.pack(">H", len(o))
        return h + b"".join(pack(x) for x in o)
    if isinstance(o, (dict, tuple)):
        items = list(o.items()) if isinstance(o, dict) else list(o)  # tuple: ordered pairs, dups kept
        h = bytes([0x80 | len(items)]) if len(items) < 16 else b"\xde" + struct.pack(">H", len(items))
        return h + b"".join(pack(k) + pack(v) for k, v in items)
    raise TypeError(type(o))


# docs/protocol.md, "Worked example"
WORKED_INSTANCE = {
    "uuid": "0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001",
    "name": "web-1",
    "flavor": {"name": "m1.small", "vcpus": 2, "memory_mb": 2048,
               "extra_specs": {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"}},
    "image": {"id": "5b4a0b58-3c1e-4d2f-8a55-2f5e4b3a9c10", "name": "ubuntu-24.04",
              "properties": {"hw_tpm_version": "2.0"}},
    "boot": {"kernel": "/var/lib/vtpmd/images/vmlinuz",
             "initrd": "/var/lib/vtpmd/images/initrd.img", "cmdline": "console=ttyS0"},
    "vtpm": {"secret": Bin(b"secret-secret-secret")},
}
CONTEXT = {"request_id": "req-4f1c", "user_id": "alice", "project_id": "demo"}


def instance(**over):
    inst = {"uuid": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
            "flavor": {"name": "m1.tiny", "vcpus": 1, "memory_mb": 64, "extra_specs": {}},
            "image": {"id": "firmware-only"}}
    inst.update(over)
    return inst


def flavor(specs):
    return {"name": "m1.vtpm", "vcpus": 1, "memory_mb": 64, "extra_specs": specs}


def request(method, args, **extra):
    env = {"v": 1, "method": method, "args": args, "context": CONTEXT}
    env.update(extra)
    return env


V2 = flavor({"hw:tpm_version": "2.0"})
INST = instance(flavor=V2)

REQUESTS = {
    "worked-example": request("spawn", {"instance": WORKED_INSTANCE}, deadline_ms=1767225600000),
    "get_capabilities": request("get_capabilities", {}),
    "spawn": request("spawn", {"instance": INST, "power_on": False}),
    "spawn-no-vtpm": request("spawn", {"instance": instance()}),
    "spawn-conflict": request("spawn", {"instance": instance(
        flavor=V2, image={"id": "i", "properties": {"hw_tpm_version": "1.2"}})}),
    "spawn-disk": request("spawn", {"instance": instance(flavor=V2, boot={"disk": "/images/d.qcow2"})}),
    "destroy": request("destroy", {"instance": INST, "keep_vtpm": True}),
    "power_off": request("power_off", {"instance": INST}),
    "power_on": request("power_on", {"instance": INST}),
    "migrate_disk_and_power_off": request("migrate_disk_and_power_off",
                                          {"instance": INST, "dest_host": "host-b", "new_flavor": V2}),
    "finish_migration": request("finish_migration", {
        "instance": INST, "old_flavor": flavor({"hw:tpm_version": "1.2"}), "power_on": True,
        "vtpm_transfer": {"bytes": 10240, "sha256": "ab" * 32}}),
    "confirm_migration": request("confirm_migration", {"instance": INST}),
    "finish_revert_migration": request("finish_revert_migration", {"instance": INST, "power_on": False}),
    "shelve": request("shelve", {"instance": INST, "offload": True}),
    "unshelve": request("unshelve", {"instance": INST, "shelved": {
        "ref": "vtpmd-shelve/vtpm-6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f.tar", "bytes": 10240,
        "sha256": "cd" * 32}}),
    "rekey": request("rekey", {"instance": {"uuid": INST["uuid"]}, "new_secret": Bin(b"new-secret")}),
    "evacuate": request("evacuate", {"instance": INST, "from_host": "host-a", "fresh": False,
                                     "fenced": True}),
    "power_on-secret": request("power_on", {"instance": {"uuid": INST["uuid"],
                                                         "vtpm": {"secret": Bin(b"s")}}}),
    "finish_migration-force": request("finish_migration", {
        "instance": INST, "old_flavor": V2, "force": True}),
    "rebuild": request("rebuild", {"instance": instance(
        flavor=V2, image={"id": "new-image", "properties": {"hw_tpm_model": "tpm-crb"}})}),
    # edge cases the decoder must fault cleanly
    "no-args-no-context": {"v": 1, "method": "get_capabilities"},
    "version-2": {"v": 2, "method": "spawn"},
    "version-negative": {"v": -1, "method": "spawn"},
    "method-bad-chars": {"v": 1, "method": "Spawn!"},
    "duplicate-keys": (("v", 1), ("method", "spawn"), ("method", "destroy"), ("args", {"instance": INST})),
    "nil-args": {"v": 1, "method": "spawn", "args": None, "context": None, "deadline_ms": None},
    "deadline-max": request("power_on", {"instance": INST}, deadline_ms=2**64 - 1),
    "not-a-map": ["v", 1],
    "nested-deep": {"v": 1, "method": "spawn", "args": {"x": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}},
    "float-and-bin-fields": {"v": 1.0, "method": Bin(b"spawn")},
    "strmap-non-str-value": request("spawn", {"instance": instance(
        flavor={"name": "f", "vcpus": 1, "memory_mb": 64, "extra_specs": {"hw:tpm_version": 2}})}),
    "uuid-nil": request("spawn", {"instance": instance(uuid="00000000-0000-0000-0000-000000000000")}),
    "uuid-upper": request("spawn", {"instance": instance(uuid="6F1C2D3E-4B5A-4C7D-8E9F-0A1B2C3D4E5F")}),
    "boot-both": request("spawn", {"instance": instance(boot={"kernel": "/k", "disk": "/d"})}),
    "empty-secret": request("spawn", {"instance": instance(vtpm={"secret": Bin(b"")})}),
    "container-claims-too-much": Raw(b"\x83\xa1v\x01\xa6method\xa5spawn\xa4args\xdf\xff\xff\xff\xff"),
    "ext-type": Raw(b"\x82\xa1v\x01\xa6method\xd4\x01\x00"),
}

# The instance spec on its own (what fuzz_instance decodes).
INSTANCES = {
    "worked-example": WORKED_INSTANCE,
    "minimal": instance(),
    "vtpm-1.2": instance(flavor=flavor({"hw:tpm_version": "1.2", "hw:tpm_secret_security": "host"})),
    "disk-boot": instance(boot={"disk": "/images/d.qcow2"}),
    "kernel-relative": instance(boot={"kernel": "vmlinuz"}),
    "flavor-range": instance(flavor={"name": "f", "vcpus": 0, "memory_mb": 2**40}),
    "empty-names": instance(flavor={"name": "", "vcpus": 1, "memory_mb": 64}, image={"id": ""}),
    "traits": instance(flavor=flavor({"trait:COMPUTE_SECURITY_TPM_2_0": "required"}),
                       image={"id": "i", "properties": {"trait:COMPUTE_SECURITY_TPM_1_2": "forbidden"}}),
    "nul-in-name": instance(name="a\0b"),
    "not-a-map": "instance",
}

# Readable lines for fuzz_policy (fuzz_policy.c describes the format).
POLICIES = {
    "none": "",
    "null-tables": "-F\n-I\n",
    "flavor-2.0-crb": "Fhw:tpm_version=2.0\nFhw:tpm_model=tpm-crb\nFhw:tpm_secret_security=deployment\n",
    "image-1.2": "ihw_tpm_version=1.2\nihw_tpm_model=tpm-tis\n",
    "aliases": "Fhw:tpm_version=2.0\nFhw:tpm_model=CRB\nihw_tpm_model=crb\n",
    "conflict": "Fhw:tpm_version=2.0\nihw_tpm_version=1.2\n",
    "crb-with-1.2": "Fhw:tpm_version=1.2\nFhw:tpm_model=tpm-crb\n",
    "bad-values": "Fhw:tpm_version=3.0\nFhw:tpm_model=tpm-spapr\nFhw:tpm_secret_security=nobody\n",
    "empty-values": "Fhw:tpm_version=\nihw_tpm_version\n",
    "traits": "Ftrait:COMPUTE_SECURITY_TPM_2_0=required\n"
              "itrait:COMPUTE_SECURITY_TPM_1_2=forbidden\n",
    "traits-conflict": "Ftrait:COMPUTE_SECURITY_TPM_2_0=required\n"
                       "itrait:COMPUTE_SECURITY_TPM_1_2=required\nFhw:tpm_version=1.2\n",
    "trait-forbids-version": "Fhw:tpm_version=2.0\nitrait:COMPUTE_SECURITY_TPM_2_0=forbidden\n",
    "secret-in-image": "Fhw:tpm_version=2.0\nihw:tpm_secret_security=host\n",
    "pcr-banks": "Fhw:tpm_version=2.0\nFhw:tpm_pcr_banks=sha256,sha384\n"
                 "ihw_tpm_pcr_banks=SHA384, sha256\n",
    "pcr-banks-bad": "ihw_tpm_version=1.2\nihw_tpm_pcr_banks=sha256,,md5,sha256\n",
}


# Wrapped deployment secrets for fuzz_keywrap (fuzz_keywrap.c has the same
# keys and instance).  AES-256-GCM with fixed nonces, so the seeds are
# reproducible; python3-cryptography is needed only to rerun this.
KW_UUID = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
KW_CURRENT = bytes(range(0x00, 0x20))
KW_PREVIOUS = bytes(range(0x80, 0xA0))
KW_OTHER = bytes(range(0x40, 0x60))


def key_id(key):
    import hashlib
    return hashlib.sha256(b"vtpmd deployment key id v1" + key).hexdigest()[:16]


def wrap(key, secret, uuid=KW_UUID, nonce=bytes(range(12)), tamper=None):
    import base64
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aad = ("vtpmd-wrap-v1:%s:%s" % (uuid, key_id(key))).encode()
    blob = bytearray(nonce + AESGCM(key).encrypt(nonce, secret, aad))
    if tamper is not None:
        blob[tamper] ^= 1
    return "v1:%s:%s" % (key_id(key), base64.b64encode(bytes(blob)).decode())


def keywrap_seeds():
    hexsecret = b"0123456789abcdef" * 4  # as vtpm_keyring_random_secret makes
    good = wrap(KW_CURRENT, hexsecret)
    return {
        "valid-current": good,
        "valid-previous": wrap(KW_PREVIOUS, hexsecret, nonce=b"\xff" * 12),
        "valid-one-byte": wrap(KW_CURRENT, b"s"),
        "valid-long": wrap(KW_CURRENT, bytes(range(256)) * 2),
        "other-key": wrap(KW_OTHER, hexsecret),
        "other-instance": wrap(KW_CURRENT, hexsecret, uuid="0e5c8b0f-1a54-4d36-9a3b-7b4c2a6fd001"),
        "tampered-tag": wrap(KW_CURRENT, hexsecret, tamper=-1),
        "tampered-nonce": wrap(KW_CURRENT, hexsecret, tamper=0),
        "tag-only": "v1:%s:%s" % (key_id(KW_CURRENT), "A" * 40),
        "not-base64": "v1:%s:%s" % (key_id(KW_CURRENT), "!!not base64!!"),
        "no-prefix": good[3:],
        "v2": "v2" + good[2:],
        "short-id": "v1:%s:%s" % (key_id(KW_CURRENT)[:15], good.split(":", 2)[2]),
        "empty": "",
        "over-limit": good + "A" * (1025 - len(good)),
    }


# libFuzzer dictionaries (-dict): the words the decoders look for.
MSGPACK_WORDS = ["v", "method", "args", "context", "request_id", "user_id", "project_id",
                 "deadline_ms", "instance", "uuid", "name", "flavor", "vcpus", "memory_mb",
                 "extra_specs", "image", "id", "properties", "boot", "kernel", "initrd",
                 "cmdline", "disk", "vtpm", "secret", "power_on", "old_flavor", "new_flavor",
                 "keep_vtpm", "force", "new_secret", "rekey", "shelved", "ref", "vtpm_transfer", "bytes", "sha256",
                 "from_host", "fresh", "fenced",
                 "hw:tpm_version", "hw_tpm_version", "hw:tpm_model", "hw_tpm_model",
                 "hw:tpm_secret_security", "2.0", "1.2", "tpm-crb", "tpm-tis",
                 "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"]
POLICY_WORDS = ["hw:tpm_version=", "hw_tpm_version=", "hw:tpm_model=", "hw_tpm_model=",
                "hw:tpm_secret_security=", "hw:tpm_pcr_banks=", "hw_tpm_pcr_banks=",
                "sha1", "sha256", "sha384", "sha512", ",", "trait:COMPUTE_SECURITY_TPM_1_2=",
                "trait:COMPUTE_SECURITY_TPM_2_0=", "required", "forbidden", "1.2", "2.0",
                "tpm-tis", "tpm-crb", "TIS", "CRB", "user", "host", "deployment", "-F", "-I"]


def dict_line(word):
    return '"' + "".join(chr(c) if 0x20 <= c < 0x7f and c not in b'"\\' else "\\x%02x" % c
                         for c in word) + '"\n'


def write_dict(path, words):
    with open(path, "w") as f:
        f.write("# Written by gen-corpus.py: libFuzzer -dict (tools/fuzz passes it).\n")
        for w in words:
            f.write(dict_line(w))


def write(d, name, data):
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for target, seeds, enc in (("fuzz_request", REQUESTS, pack),
                               ("fuzz_instance", INSTANCES, pack),
                               ("fuzz_policy", POLICIES, str.encode),
                               ("fuzz_keywrap", keywrap_seeds(), str.encode)):
        d = os.path.join(top, target)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.startswith("seed-"):
                os.unlink(os.path.join(d, old))
        for name, value in seeds.items():
            write(d, name, enc(value))
    here = os.path.dirname(os.path.abspath(__file__))
    write_dict(os.path.join(here, "msgpack.dict"), [pack(w) for w in MSGPACK_WORDS])
    write_dict(os.path.join(here, "policy.dict"), [w.encode() for w in POLICY_WORDS])


if __name__ == "__main__":
    main()
