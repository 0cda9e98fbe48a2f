#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The lifecycle methods of docs/protocol.md through the Python client
(python/vtpmclient), against real vtpmd workers on two test hosts with real
libvirtds, QEMU and swtpm: a TPM 2.0 instance (user custody, its secret
sent as bytes) goes through power_off / power_on, cold migration a -> b
(migrate_disk_and_power_off, finish_migration, confirm_migration), a
migration b -> a that is reverted (finish_revert_migration), shelve with
offload on a and unshelve on b, rebuild, rekey and destroy.  After every
move the TPM state file on the host that now holds it has the sha256 it
had when the instance was last stopped, and the reply fields are the ones
the protocol names.  test_pyclient.py covers the other methods, faults,
deadlines, redelivery and the connection; what the guest itself sees is
the acceptance suite's part.

  integration.sh --net --hosts 2 PYTHON tests/test_pyclient_lifecycle.py VTPMD
  (meson runs it with PYTHONPATH=python.)
"""

import hashlib
import os
import sys
import tempfile

import vtpmclient
import test_pyclient as t
from test_pyclient import check, outcome, note

STATE = "var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall"
CALL_S = 300  # first starts manufacture a TPM under TCG: seconds, more when loaded


def state_sha(ns, u):
    """sha256 of instance @u's TPM state file on test host @ns, or None."""
    root = os.environ["VT_HOST_%s_ROOT" % ns.upper()]
    try:
        with open(os.path.join(root, STATE % u), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


class Run:
    """The calls of one instance's life, each checked as it is made."""

    def __init__(self, c, hosts, u, secret):
        self.c, self.hosts, self.u, self.secret = c, hosts, u, secret
        self.inst = t.instance(u, tpm=True, secret=secret)

    def call(self, ns, method, args, desc, want=None):
        args = dict(args)
        args.setdefault("instance", self.inst)
        r, f = outcome(lambda: self.c.call(self.hosts[ns].host, method, args, timeout=CALL_S))
        ok = f is None and all(r.get(k) == v for k, v in (want or {}).items())
        check("%s: %s on %s%s" % (desc, method, ns, "" if want is None else " %r" % want), ok,
              repr(f) if f else r)
        return r or {}

    def off(self, ns, desc):
        self.call(ns, "power_off", {"instance": {"uuid": self.u}}, desc, {"state": "shutoff"})
        return state_sha(ns, self.u)

    def same_state(self, ns, sha, desc):
        check("%s: the TPM state on %s is the one last stopped" % (desc, ns),
              sha is not None and state_sha(ns, self.u) == sha,
              "%s vs %s" % (state_sha(ns, self.u), sha))

    def gone(self, ns, desc):
        check("%s: no TPM state left on %s" % (desc, ns), state_sha(ns, self.u) is None)


def power_cycle(r):
    r.call("a", "spawn", {}, "spawn", None)
    sha = r.off("a", "power cycle")
    r.call("a", "power_on", {"instance": {"uuid": r.u, "vtpm": {"secret": r.secret}}},
           "power cycle", {"state": "running"})
    return sha


def cold_migration(r, sha):
    """a -> b, confirmed."""
    res = r.call("a", "migrate_disk_and_power_off", {"dest_host": r.hosts["b"].host},
                 "cold migration a -> b")
    xfer = res.get("vtpm_transfer") or {}
    check("cold migration: vtpm_transfer has bytes and sha256",
          isinstance(xfer.get("bytes"), int) and len(xfer.get("sha256", "")) == 64, res)
    sha = state_sha("a", r.u)
    r.call("b", "finish_migration", {"old_flavor": r.inst["flavor"], "vtpm_transfer": xfer,
                                     "power_on": False},
           "cold migration a -> b", {"vtpm_state": "restored"})
    r.same_state("b", sha, "cold migration a -> b")
    r.call("a", "confirm_migration", {"instance": {"uuid": r.u}}, "cold migration a -> b",
           {"confirmed": True})
    r.gone("a", "cold migration confirmed")
    return sha


def reverted_migration(r, sha):
    """b -> a, reverted: the instance stays on b with its state."""
    res = r.call("b", "migrate_disk_and_power_off", {"dest_host": r.hosts["a"].host},
                 "migration b -> a to revert")
    r.call("a", "finish_migration", {"old_flavor": r.inst["flavor"], "power_on": False,
                                     "vtpm_transfer": res.get("vtpm_transfer")},
           "migration b -> a to revert", {"vtpm_state": "restored"})
    r.call("a", "destroy", {"instance": {"uuid": r.u}}, "revert: the destination drops it",
           {"destroyed": True})
    r.call("b", "finish_revert_migration",
           {"instance": {"uuid": r.u, "vtpm": {"secret": r.secret}}, "power_on": False},
           "revert", {"vtpm_state": "restored"})
    r.same_state("b", sha, "revert")
    r.gone("a", "revert")


def shelve_unshelve(r, sha):
    """Shelved with offload on b, unshelved on a."""
    res = r.call("b", "shelve", {"offload": True}, "shelve", {"offloaded": True})
    shelved = res.get("shelved") or {}
    check("shelve: a ref, bytes and sha256",
          "/" in shelved.get("ref", "") and len(shelved.get("sha256", "")) == 64, res)
    r.gone("b", "shelve with offload")
    r.call("a", "unshelve", {"shelved": shelved, "power_on": False}, "unshelve on the other host",
           {"vtpm_state": "restored"})
    r.same_state("a", sha, "unshelve on the other host")


def rebuild_rekey_destroy(r, sha):
    image = {"id": "img-py-2", "name": "img-py-2"}
    r.inst = dict(r.inst, image=image)
    r.call("a", "rebuild", {}, "rebuild with another image", {"vtpm_state": "kept"})
    new = os.urandom(32)
    res = r.call("a", "rekey", {"instance": {"uuid": r.u, "vtpm": {"secret": r.secret}},
                                "new_secret": new},
                 "rekey", {"rekeyed": True, "secret_security": "user"})
    check("rekey: the state is re-encrypted (its bytes changed)",
          state_sha("a", r.u) not in (None, sha), res)
    r.secret = new
    r.call("a", "power_on", {"instance": {"uuid": r.u, "vtpm": {"secret": new}}},
           "the new secret opens it", {"state": "running"})
    r.call("a", "destroy", {"instance": {"uuid": r.u}}, "destroy",
           {"destroyed": True, "vtpm_state": "deleted"})
    r.gone("a", "destroy")


def main():
    if not (os.access(t.VTPMD, os.X_OK) and t.URL and os.environ.get("VT_HOST_B_ADDR")):
        print("not ok - needs VTPMD and two net hosts (integration.sh --net --hosts 2)")
        print("0 passed, 1 failed")
        return 1
    tmp = tempfile.mkdtemp(prefix="test_pyclient_lifecycle.", dir=os.environ.get("VT_ROOT"))
    a_addr, b_addr = os.environ["VT_HOST_A_ADDR"], os.environ["VT_HOST_B_ADDR"]
    extra = ("libvirt.migration_uri_template=qemu+tcp://%s/system",
             "store.uri=qemu+tcp://%s/system" % a_addr)
    hosts = {"a": t.Worker(tmp, a_addr, real=True, ns="a", extra=extra),
             "b": t.Worker(tmp, b_addr, real=True, ns="b", extra=extra)}
    try:
        with vtpmclient.Client(t.URL) as c:
            if not check("both workers answer", all(w.wait_ready(c) for w in hosts.values())):
                return 1
            r = Run(c, hosts, t.new_uuid(), os.urandom(32))
            sha = power_cycle(r)
            sha = cold_migration(r, r.off("a", "before the migration") or sha)
            reverted_migration(r, sha)
            shelve_unshelve(r, sha)
            rebuild_rekey_destroy(r, sha)
    finally:
        for w in hosts.values():
            rc = w.stop()
            check("vtpmd %s exits 0 on SIGTERM" % w.host, rc == 0, w.tail())
            if t.failed:
                note(w.tail(30))
    print("%d passed, %d failed" % (t.passed + 0, t.failed))
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
