# SPDX-License-Identifier: Apache-2.0
"""The Python client (python/vtpmclient, docs/client.md) against real vtpmd
workers on the private broker of tests/integration.sh:

  - every method of docs/protocol.md once, on a worker over libvirt's
    test:///default (no TPM state involved: lifecycle methods on an instance
    without a vTPM, the others with arguments that exercise their checks),
    and one real spawn / power_off / power_on / destroy of a TPM 2.0
    instance (the secret as msgpack bin) on host a (qemu:///system, TCG);
  - fault mapping (code, message, retryable, details) for BadRequest,
    UnknownMethod and InstanceNotFound;
  - an already-passed deadline_ms: Expired, not executed;
  - one message_id sent twice: the same reply, the handler ran once;
  - call_with_retry: through timeouts while a worker is stopped, and
    through HypervisorError while host a's libvirtd is down, with one
    message_id;
  - capabilities_all with two workers;
  - 16 calls in flight at once from threads on one Client, and replies
    matched to their callers;
  - broker URLs: rabbit:// with a trailing '/', the multi-host form with a
    dead first node, a lost connection; amqps:// with the test CA, a client
    certificate, hostname verification (when VT_RMQ_TLS=1).

  integration.sh PYTHON tests/test_pyclient.py VTPMD
  (meson runs it with VT_RMQ_TLS=1 and PYTHONPATH=python.)

Prints one "ok - ..." / "not ok - ..." line per check, then "N passed, M
failed"; exits 1 if any check failed.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import vtpmclient

VTPMD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ""
TESTS = os.path.dirname(os.path.abspath(__file__))
ENV_SH = os.path.join(TESTS, "lib", "env.sh")
URL = os.environ.get("VT_AMQP_URL", "")
WAIT_S = 120  # bound of every wait for a state; never a timed assertion

passed = failed = 0


def note(text):
    for line in str(text).splitlines():
        print("#   " + line)


def check(desc, cond, diag=None):
    global passed, failed
    if cond:
        passed += 1
        print("ok - " + desc)
    else:
        failed += 1
        print("not ok - " + desc)
        if diag is not None:
            note(diag)
    sys.stdout.flush()
    return bool(cond)


def outcome(fn):
    """(result, None) or (None, Fault) of fn()."""
    try:
        return fn(), None
    except vtpmclient.Fault as f:
        return None, f


def sh(script, *args):
    """Run @script in bash with tests/lib/env.sh sourced (which empties
    the broker's node and port: integration.sh exported them)."""
    keep = 'n=${VT_RMQ_NODE:-}; p=${VT_RMQ_PORT:-}; source "$0"; VT_RMQ_NODE=$n; VT_RMQ_PORT=$p; '
    return subprocess.run(["bash", "-c", keep + script, ENV_SH] + list(args),
                          capture_output=True, text=True, check=False)


def wait_for(pred, what):
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    note("gave up waiting for " + what)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- workers -------------------------------------------------------------------------


class Worker:
    """One vtpmd answering as @host; on libvirt's test driver with every
    path under @tmp, or (real=True) in test host @ns's mount namespace on
    its libvirtd.  @extra: more GROUP.KEY=VALUE for its configuration."""

    def __init__(self, tmp, host, real=False, ns="a", extra=()):
        self.host = host
        self.log = os.path.join(tmp, host + ".log")
        self.conf = os.path.join(tmp, host + ".conf")
        if real:
            keys = ["libvirt.uri=qemu:///system", "libvirt.swtpm_enabled=true",
                    "libvirt.virt_type=qemu", "libvirt.shutdown_timeout=1"]
        else:
            d = os.path.join(tmp, host)
            for sub in ("console", "swtpm", "images", "pools", "kept"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            keys = ["libvirt.uri=test:///default", "libvirt.images_dir=%s/images" % d,
                    "libvirt.console_dir=%s/console" % d, "libvirt.state_dir=%s/swtpm" % d,
                    "store.pool_dir=%s/pools" % d, "store.kept_dir=%s/kept" % d]
        r = sh('vt_vtpmd_conf "$@"', self.conf, "worker.host=" + host, *keys, *extra)
        if r.returncode != 0:
            raise RuntimeError("vt_vtpmd_conf: " + r.stderr)
        argv = [VTPMD, "--config", self.conf, "--log-file", self.log]
        if real:
            root = os.environ["VT_HOST_%s_ROOT" % ns.upper()]
            pid = open(os.path.join(root, "run/libvirtd.pid")).read()
            argv = ["nsenter", "--mount=/proc/%d/ns/mnt" % int(pid), "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log + ".err", "w"))

    def wait_ready(self, client):
        def answers():
            if self.proc.poll() is not None:
                raise RuntimeError("vtpmd %s exited %s" % (self.host, self.proc.returncode))
            return outcome(lambda: client.call(self.host, "get_capabilities", {}, timeout=1))[0]
        try:
            return wait_for(answers, "vtpmd %s to answer" % self.host)
        except RuntimeError as e:
            note(e)
            note(self.tail())
            return False

    def lines(self, *needles):
        """The lines of the log holding every needle."""
        try:
            with open(self.log, errors="replace") as f:
                return [x for x in f if all(n in x for n in needles)]
        except OSError:
            return []

    def tail(self, n=20):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return str(e)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            return self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def queue_depth(queue):
    """Messages (ready + unacknowledged) in @queue, as the broker counts them."""
    r = sh('vt_rmqctl list_queues -q --no-table-headers name messages')
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return -1


def instance(u, tpm=False, secret=None):
    flavor = {"name": "m1.py", "vcpus": 1, "memory_mb": 64}
    if tpm:
        flavor["extra_specs"] = {"hw:tpm_version": "2.0"}
    inst = {"uuid": u, "name": "py-" + u[:8], "flavor": flavor,
            "image": {"id": "img-py", "name": "img-py"}}
    if secret is not None:
        inst["vtpm"] = {"secret": secret}
    return inst


def new_uuid():
    return str(uuid.uuid4())


# ---- the checks ----------------------------------------------------------------------


def check_methods(c, w):
    """Every method of docs/protocol.md once, on a test:///default worker."""
    h = w.host
    r, f = outcome(lambda: c.call(h, "get_capabilities", {}))
    check("get_capabilities: the worker's host, traits, tpm and virt_type",
          r and r.get("host") == h and isinstance(r.get("traits"), list)
          and isinstance(r.get("tpm"), dict) and r.get("virt_type") in ("kvm", "qemu"), r or f)

    u = new_uuid()
    inst = instance(u)
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": inst}))
    check("spawn (no vTPM): {domain: instance-<uuid>, vtpm: None}",
          r == {"domain": "instance-" + u, "vtpm": None,
                  "firmware": {"type": "bios", "secure_boot": False, "machine": "q35"}}, r or f)
    r, f = outcome(lambda: c.call(h, "power_off", {"instance": {"uuid": u}}))
    check("power_off: state shutoff", r and r.get("state") == "shutoff"
          and isinstance(r.get("forced"), bool), r or f)
    r, f = outcome(lambda: c.call(h, "power_on", {"instance": {"uuid": u}}))
    check("power_on: state running", r == {"state": "running"}, r or f)
    r, f = outcome(lambda: c.call(h, "rebuild", {"instance": inst}))
    check("rebuild (no vTPM): vtpm_state none", r and r.get("vtpm_state") == "none"
          and r.get("domain") == "instance-" + u, r or f)
    r, f = outcome(lambda: c.call(h, "rekey", {"instance": {"uuid": u}}))
    check("rekey of an instance without a vTPM: InvalidTPMConfig, says so",
          f and f.code == "InvalidTPMConfig" and "has no vTPM" in f.message, r or f)
    r, f = outcome(lambda: c.call(h, "migrate_disk_and_power_off", {"instance": inst}))
    check("migrate_disk_and_power_off without dest_host: BadRequest naming args.dest_host",
          f and f.code == "BadRequest" and f.message == "args.dest_host: missing required key",
          r or f)
    r, f = outcome(lambda: c.call(h, "migrate_disk_and_power_off",
                                  {"instance": inst, "dest_host": "nowhere.invalid"}))
    check("migrate_disk_and_power_off (no vTPM): vtpm_transfer None",
          r == {"vtpm_transfer": None}, r or f)
    r, f = outcome(lambda: c.call(h, "finish_migration", {"instance": inst}))
    check("finish_migration without old_flavor: BadRequest naming args.old_flavor",
          f and f.code == "BadRequest" and f.message == "args.old_flavor: missing required key",
          r or f)
    r, f = outcome(lambda: c.call(h, "finish_migration",
                                  {"instance": inst, "old_flavor": inst["flavor"]}))
    check("finish_migration (no vTPM): vtpm_state none",
          r and r.get("vtpm_state") == "none" and r.get("vtpm") is None, r or f)
    r, f = outcome(lambda: c.call(h, "finish_revert_migration", {"instance": {"uuid": u}}))
    check("finish_revert_migration (no vTPM): the domain back, vtpm_state none",
          r == {"domain": "instance-" + u, "vtpm_state": "none", "nvram_state": "none"}, r or f)
    r, f = outcome(lambda: c.call(h, "confirm_migration", {"instance": {"uuid": u}}))
    check("confirm_migration: {confirmed: bool}",
          r and isinstance(r.get("confirmed"), bool) and len(r) == 1, r or f)
    r, f = outcome(lambda: c.call(h, "finish_revert_migration",
                                  {"instance": {"uuid": new_uuid()}}))
    check("finish_revert_migration of an instance never migrated: a specific fault",
          f and f.code in ("StateNotFound", "InstanceNotFound") and not f.retryable,
          repr(f) if f else r)

    u2 = new_uuid()
    inst2 = instance(u2)
    c.call(h, "spawn", {"instance": inst2})
    r, f = outcome(lambda: c.call(h, "shelve", {"instance": inst2}))
    check("shelve (no vTPM): nothing shelved, offloaded",
          r == {"shelved": None, "offloaded": True}, r or f)
    r, f = outcome(lambda: c.call(h, "unshelve", {"instance": inst2, "shelved": None}))
    check("unshelve (shelved None): the domain again, vtpm_state none",
          r and r.get("domain") == "instance-" + u2 and r.get("vtpm_state") == "none", r or f)
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u2}}))
    check("destroy: destroyed, vtpm_state none",
          r == {"destroyed": True, "vtpm_state": "none", "nvram_state": "none"}, r or f)
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u2}}))
    check("destroy again: nothing to destroy", r == {"destroyed": False, "vtpm_state": "none", "nvram_state": "none"},
          r or f)
    c.call(h, "destroy", {"instance": {"uuid": u}})

    # bytes go as msgpack bin, str as str: the worker tells them apart.
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": instance(u, secret="not-bytes")}))
    check("a str secret is refused: 'args.instance.vtpm.secret: expected bin, got str'",
          f and f.code == "BadRequest"
          and f.message == "args.instance.vtpm.secret: expected bin, got str", r or f)
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": instance(u, secret=b"\x00\xffkey")}))
    check("a bytes secret is taken (bin)", r and r.get("domain") == "instance-" + u, r or f)
    c.call(h, "destroy", {"instance": {"uuid": u}})


def check_faults(c, w):
    h = w.host
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": "not-a-uuid"}},
                                  message_id="fault-bad-1"))
    check("BadRequest: code, message naming the field, not retryable, details",
          f and f.code == "BadRequest"
          and f.message.startswith("args.instance.uuid: ") and f.retryable is False
          and f.details == {"source": "worker", "host": h, "method": "destroy",
                            "message_id": "fault-bad-1"}, repr(f) if f else r)
    r, f = outcome(lambda: c.call(h, "no_such_method", {}))
    check("UnknownMethod: code, message, not retryable, worker as source",
          f and f.code == "UnknownMethod" and f.message == "unknown method 'no_such_method'"
          and f.retryable is False and f.details.get("source") == "worker"
          and f.details.get("method") == "no_such_method", repr(f) if f else r)
    u = new_uuid()
    r, f = outcome(lambda: c.call(h, "power_off", {"instance": {"uuid": u}}))
    check("InstanceNotFound: code, message naming instance and host, not retryable",
          f and f.code == "InstanceNotFound" and u in f.message and h in f.message
          and f.retryable is False and f.details.get("host") == h, repr(f) if f else r)
    check("a Fault is an Exception whose str is 'Code: message'",
          f and isinstance(f, Exception) and str(f) == "InstanceNotFound: " + f.message)
    r, f = outcome(lambda: c.call("no-such-host", "get_capabilities", {}, timeout=1))
    check("no reply: Timeout, retryable, client as source, the wait in details",
          f and f.code == "Timeout" and f.retryable is True
          and f.details.get("source") == "client" and f.details.get("timeout_s") == 1
          and "no reply from no-such-host within 1 s" == f.message, repr(f) if f else r)
    r, f = outcome(lambda: c.call("bad host!", "get_capabilities", {}))
    check("a host no worker can have: BadRequest from the client, naming host",
          f and f.code == "BadRequest" and f.message.startswith("host: ")
          and f.details.get("source") == "client", repr(f) if f else r)
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": {"uuid": u, "x": {1, 2}}}))
    check("args msgpack cannot carry (a set): BadRequest from the client, naming args",
          f and f.code == "BadRequest" and f.message.startswith("args: "), repr(f) if f else r)
    r, f = outcome(lambda: c.call(h, "get_capabilities", [], timeout=5))
    check("args not a dict: BadRequest naming args", f and f.code == "BadRequest"
          and f.message == "args: expected a dict, got list", repr(f) if f else r)


def check_deadline(c, w):
    h = w.host
    u = new_uuid()
    past = int(time.time() * 1000) - 5000
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": instance(u)}, deadline_ms=past))
    check("deadline_ms already passed: Expired, not retryable, message names it",
          f and f.code == "Expired" and f.retryable is False
          and f.message.startswith("deadline_ms %d passed" % past), repr(f) if f else r)
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u}}))
    check("... and the spawn did not run (destroy finds nothing)",
          r == {"destroyed": False, "vtpm_state": "none", "nvram_state": "none"}, r or f)
    future = int(time.time() * 1000) + 600000
    r, f = outcome(lambda: c.call(h, "get_capabilities", {}, deadline_ms=future))
    check("deadline_ms in the future: answered", r and r.get("host") == h, r or f)
    r, f = outcome(lambda: c.call(h, "get_capabilities", {}, deadline_ms=-1))
    check("a negative deadline_ms: BadRequest from the client, naming deadline_ms",
          f and f.code == "BadRequest" and f.message.startswith("deadline_ms: "),
          repr(f) if f else r)


def check_redelivery(c, w):
    """One message_id twice: the worker's reply cache answers the second."""
    h = w.host
    u = new_uuid()
    mid = "py-dup-" + new_uuid()
    r1, f1 = outcome(lambda: c.call(h, "spawn", {"instance": instance(u)}, message_id=mid))
    # In between, the instance goes away: a second run would make it again.
    c.call(h, "destroy", {"instance": {"uuid": u}})
    r2, f2 = outcome(lambda: c.call(h, "spawn", {"instance": instance(u)}, message_id=mid))
    check("the same message_id twice: the same result", r1 and r1 == r2, (r1 or f1, r2 or f2))
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u}}))
    check("... the second was not run (destroy finds nothing)",
          r == {"destroyed": False, "vtpm_state": "none", "nvram_state": "none"}, r or f)
    ran = w.lines("message_id=%s method=spawn" % mid, "outcome=")
    dup = w.lines("message_id=%s duplicate answered from the reply cache" % mid)
    check("... vtpmd's log: the handler ran once, the repeat answered from the cache",
          len(ran) == 1 and "outcome=ok" in ran[0] and len(dup) == 1, "".join(ran + dup))


class RetryLog(logging.Handler):
    """The client's debug lines of call_with_retry's attempts."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())

    def count(self, *needles):
        return sum(1 for m in list(self.records) if all(n in m for n in needles))


def in_thread(fn):
    box = {}

    def run():
        box["r"], box["f"] = outcome(fn)
    t = threading.Thread(target=run)
    t.start()
    return t, box


def check_retry_timeouts(c, w, log):
    """A stopped worker: attempts time out (retryable) and are sent again
    with the one message_id; once it runs, the spawn runs once."""
    h = w.host
    u = new_uuid()
    mid = "py-retry-to-" + new_uuid()
    w.proc.send_signal(signal.SIGSTOP)
    t, box = in_thread(lambda: c.call_with_retry(h, "spawn", {"instance": instance(u)},
                                                 timeout=WAIT_S, message_id=mid,
                                                 attempt_timeout=1, backoff=0.2))
    wait_for(lambda: log.count(mid, "Timeout") >= 2, "two timed-out attempts")
    w.proc.send_signal(signal.SIGCONT)
    t.join()
    check("call_with_retry through timeouts (worker stopped, then resumed): the result",
          box["r"] == {"domain": "instance-" + u, "vtpm": None,
                  "firmware": {"type": "bios", "secure_boot": False, "machine": "q35"}}, box["f"] or box["r"])
    check("... after at least two attempts that timed out", log.count(mid, "Timeout") >= 2,
          log.records[-5:])
    ran = w.lines("message_id=%s method=spawn" % mid, "outcome=")
    check("... every attempt carried the one message_id: the handler ran once",
          len(ran) == 1 and "outcome=ok" in ran[0], "".join(ran))
    c.call(h, "destroy", {"instance": {"uuid": u}})
    r, f = outcome(lambda: c.call_with_retry(h, "no_such_method", {}, timeout=30))
    check("call_with_retry does not retry a final fault",
          f and f.code == "UnknownMethod" and f.details.get("attempts") == 1,
          repr(f) if f else r)
    r, f = outcome(lambda: c.call_with_retry("no-such-host", "get_capabilities", {}, timeout=3,
                                             attempt_timeout=0.5, backoff=0.1))
    check("call_with_retry gives up at the deadline: the last Timeout, attempts counted",
          f and f.code == "Timeout" and f.details.get("attempts", 0) >= 2,
          repr(f) if f else r)


def check_retry_hypervisor(c, w, log):
    """Host a's libvirtd killed: HypervisorError (retryable); restarted
    while call_with_retry sends the same request, same message_id."""
    h = w.host
    u = new_uuid()
    root = os.environ["VT_HOST_A_ROOT"]
    pid = int(open(os.path.join(root, "run/libvirtd.pid")).read())
    os.kill(pid, signal.SIGKILL)
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u}}, timeout=WAIT_S))
    check("libvirtd down: HypervisorError, retryable",
          f and f.code == "HypervisorError" and f.retryable is True, repr(f) if f else r)
    mid = "py-retry-hv-" + new_uuid()
    t, box = in_thread(lambda: c.call_with_retry(h, "destroy", {"instance": {"uuid": u}},
                                                 timeout=60, message_id=mid, backoff=0.5,
                                                 max_backoff=2))
    wait_for(lambda: log.count(mid, "HypervisorError") >= 1, "a HypervisorError attempt")
    r = sh("vt_host_restart_libvirtd a")
    check("host a's libvirtd restarted", r.returncode == 0, r.stderr[-2000:])
    t.join()
    cached = w.lines("message_id=%s duplicate answered from the reply cache" % mid)
    check("call_with_retry through HypervisorError until libvirtd is back: the result",
          box["r"] == {"destroyed": False, "vtpm_state": "none", "nvram_state": "none"},
          "%r after %d HypervisorError attempt(s); vtpmd ran it %d time(s) and answered %d "
          "repeat(s) from its reply cache (which must not keep retryable faults); its last lines:\n%s"
          % (box["f"] or box["r"], log.count(mid, "HypervisorError"),
             len(w.lines("message_id=%s method=destroy" % mid, "outcome=")), len(cached),
             "".join(w.lines("message_id=%s" % mid)[-2:])))
    check("... every attempt carried the one message_id (vtpmd's log has it twice or more)",
          len(w.lines("message_id=%s" % mid)) >= 2, "".join(w.lines("message_id=%s" % mid)[-3:]))


def check_real_tpm(c, w):
    """One TPM 2.0 through spawn / power_off / power_on / destroy on a real
    host, the user-mode secret as bytes."""
    h = w.host
    u = new_uuid()
    secret = os.urandom(32)
    inst = instance(u, tpm=True, secret=secret)
    r, f = outcome(lambda: c.call(h, "spawn", {"instance": inst}, timeout=300))
    check("real host: spawn of a TPM 2.0 instance (user secret as bin)",
          r and r.get("domain") == "instance-" + u and isinstance(r.get("vtpm"), dict)
          and r["vtpm"].get("version") == "2.0" and r["vtpm"].get("secret_security") == "user",
          r or (f, w.tail()))
    r, f = outcome(lambda: c.call(h, "power_off", {"instance": {"uuid": u}}, timeout=300))
    check("real host: power_off", r and r.get("state") == "shutoff", r or f)
    r, f = outcome(lambda: c.call(h, "power_on", {"instance": {"uuid": u}}, timeout=300))
    check("real host: power_on without the secret: SecretRequired",
          f and f.code == "SecretRequired", repr(f) if f else r)
    r, f = outcome(lambda: c.call(h, "power_on",
                                  {"instance": {"uuid": u, "vtpm": {"secret": secret}}},
                                  timeout=300))
    check("real host: power_on with the secret", r == {"state": "running"}, r or f)
    r, f = outcome(lambda: c.call(h, "destroy", {"instance": {"uuid": u}}, timeout=300))
    check("real host: destroy, the vTPM state deleted",
          r == {"destroyed": True, "vtpm_state": "deleted", "nvram_state": "none"}, r or f)
    r = subprocess.run(["virsh", "-q", "-c", os.environ["VT_HOST_A_URI"], "list", "--all",
                        "--name"], capture_output=True, text=True, check=False)
    check("real host: no domain left", r.returncode == 0 and "instance-" + u not in r.stdout,
          r.stdout + r.stderr)


def check_fanout(c, workers):
    r, f = outcome(lambda: c.capabilities_all(window_s=2))
    want = {w.host for w in workers}
    check("capabilities_all: every worker answered, each result under its host",
          r is not None and want <= set(r) and all(r[x].get("host") == x for x in r),
          r.keys() if r else f)


def check_concurrency(c, w1, w2):
    """16 calls in flight at once from 16 threads on one Client, and many
    more after, each reply to its own caller."""
    q = "vtpm." + w1.host
    w1.proc.send_signal(signal.SIGSTOP)
    threads = [in_thread(lambda: c.call(w1.host, "get_capabilities", {}, timeout=WAIT_S))
               for _ in range(16)]
    seen = wait_for(lambda: queue_depth(q) == 16, "16 requests in %s" % q)
    w1.proc.send_signal(signal.SIGCONT)
    for t, _ in threads:
        t.join()
    check("16 threads, one Client: 16 requests in the worker's queue at once", seen,
          queue_depth(q))
    check("... all 16 answered", all(b.get("r") and b["r"].get("host") == w1.host
                                     for _, b in threads),
          [b.get("f") for _, b in threads if b.get("f")][:2])

    results = {}
    errors = []

    def worker(k):
        for i in range(20):
            host = (w1, w2)[(k + i) % 2].host
            u = new_uuid()
            try:
                if i % 5 == 0:
                    got = c.call(host, "spawn", {"instance": instance(u)})
                    c.call(host, "destroy", {"instance": {"uuid": u}})
                    ok = got.get("domain") == "instance-" + u
                else:
                    ok = c.call(host, "get_capabilities", {}).get("host") == host
            except vtpmclient.Fault as e:
                errors.append(e)
                ok = False
            results[(k, i)] = ok
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check("16 threads x 20 calls over two workers: each reply is its caller's",
          len(results) == 320 and all(results.values()) and not errors, errors[:3])


def check_urls(w):
    port = URL.split("@")[-1].split("/")[0].rsplit(":", 1)[1]
    h = w.host
    r, f = outcome(lambda: vtpmclient.Client("rabbit://guest:guest@127.0.0.1:%s/" % port))
    check("rabbit:// with a trailing '/' (vhost '/'): connects", r is not None, f)
    if r:
        with r:
            x, f = outcome(lambda: r.call(h, "get_capabilities", {}))
            check("... and calls", x and x.get("host") == h, f)
    dead = free_port()
    url = "rabbit://guest:guest@127.0.0.1:%d,guest:guest@127.0.0.1:%s/" % (dead, port)
    r, f = outcome(lambda: vtpmclient.Client(url))
    check("multi-host URL with a dead first node: fails over to the second", r is not None, f)
    if r:
        with r:
            x, f = outcome(lambda: r.call(h, "get_capabilities", {}))
            check("... and calls", x and x.get("host") == h, f)
    r, f = outcome(lambda: vtpmclient.Client("amqp://guest:s3cret@127.0.0.1:%d/%%2f" % dead,
                                             failover_urls=["amqp://127.0.0.1:%d" % dead]))
    check("no node reachable: Busy, retryable, naming the nodes, not the password",
          f and f.code == "Busy" and f.retryable and "127.0.0.1:%d" % dead in f.message
          and "s3cret" not in repr(f), repr(f) if f else r)
    r, f = outcome(lambda: vtpmclient.Client("amqp://guest:guest@127.0.0.1:%s/no-such-vhost"
                                             % port))
    check("a vhost the broker does not have: Busy, the broker's reason",
          f and f.code == "Busy" and "not found" in f.message, repr(f) if f else r)
    r, f = outcome(lambda: vtpmclient.Client("amqp://guest:guest@127.0.0.1:%s/a/b" % port))
    check("a bad URL: BadRequest naming the part", f and f.code == "BadRequest"
          and "vhost: contains '/'" in f.message, repr(f) if f else r)


def check_lost_connection(w1, w2):
    """The broker closes the client's connection: the call in flight fails
    with Busy (retryable), the client reconnects, call_with_retry goes on."""
    name = "pyclient-test-" + new_uuid()[:8]
    c = vtpmclient.Client(URL, name=name)
    with c:
        w2.proc.send_signal(signal.SIGSTOP)
        t, box = in_thread(lambda: c.call(w2.host, "get_capabilities", {}, timeout=WAIT_S))
        wait_for(lambda: queue_depth("vtpm." + w2.host) == 1, "the request queued")
        r = sh('vt_rmqctl list_connections -q --no-table-headers pid client_properties')
        pids = [x.split()[0] for x in r.stdout.splitlines() if name in x]
        r = sh('vt_rmqctl close_connection "$1" "test: closed on purpose"', *pids[:1])
        t.join()
        w2.proc.send_signal(signal.SIGCONT)
        f = box["f"]
        check("connection closed by the broker: the call in flight fails with Busy, retryable",
              len(pids) == 1 and f and f.code == "Busy" and f.retryable
              and "lost the connection" in f.message, repr(f) if f else (pids, box["r"]))
        r, f = outcome(lambda: c.call_with_retry(w1.host, "get_capabilities", {}, timeout=60))
        check("... the client reconnects: the next call is answered",
              r and r.get("host") == w1.host, f)


def check_tls(w):
    url = os.environ.get("VT_AMQPS_URL")
    d = os.environ.get("VT_TLS_DIR")
    if not url or not d:
        print("ok - amqps:// # SKIP no TLS listener (VT_RMQ_TLS=1 not set)")
        return
    ca = os.path.join(d, "ca.pem")
    h = w.host
    r, f = outcome(lambda: vtpmclient.Client(url, cacert=ca))
    check("amqps:// with the test CA: connects", r is not None, f)
    if r:
        with r:
            x, f = outcome(lambda: r.call(h, "get_capabilities", {}))
            check("... and calls", x and x.get("host") == h, f)
    rabbits = url.replace("amqps://", "rabbits://").replace("/%2f", "/")
    r, f = outcome(lambda: vtpmclient.Client(rabbits, cacert=ca,
                                             cert=os.path.join(d, "client.pem"),
                                             key=os.path.join(d, "client.key")))
    check("rabbits:// with a client certificate: connects", r is not None, f)
    if r:
        r.close()
    r, f = outcome(lambda: vtpmclient.Client(url.replace("@localhost:", "@127.0.0.2:"),
                                             cacert=ca))
    check("a name the certificate does not carry (127.0.0.2): refused (hostname verified)",
          f and f.code == "Busy" and "127.0.0.2" in f.message, repr(f) if f else r)
    r, f = outcome(lambda: vtpmclient.Client(url, cacert=os.path.join(d, "other-ca.pem")))
    check("an unrelated CA: refused (peer verified)",
          f and f.code == "Busy" and "CERTIFICATE_VERIFY_FAILED" in f.message,
          repr(f) if f else r)
    r, f = outcome(lambda: vtpmclient.Client(url))
    check("amqps:// without cacert: BadRequest, as vtpmd says it",
          f and f.code == "BadRequest"
          and "amqps:// needs a CA file (cacert) to verify the broker" in f.message,
          repr(f) if f else r)


def main():
    if not (os.access(VTPMD, os.X_OK) and URL):
        print("not ok - needs VTPMD as argument and VT_AMQP_URL (run under integration.sh)")
        print("0 passed, 1 failed")
        return 1
    log = RetryLog()
    logging.getLogger("vtpmclient").addHandler(log)
    logging.getLogger("vtpmclient").setLevel(logging.DEBUG)
    tmp = tempfile.mkdtemp(prefix="test_pyclient.", dir=os.environ.get("VT_ROOT"))
    workers = [Worker(tmp, "pyc-1"), Worker(tmp, "pyc-2")]
    real = Worker(tmp, "pyc-real", real=True) if os.environ.get("VT_HOST_A_ROOT") else None
    try:
        with vtpmclient.Client(URL) as c:
            up = all(w.wait_ready(c) for w in workers + ([real] if real else []))
            if not check("the workers answer get_capabilities", up):
                return 1
            w1, w2 = workers
            check_methods(c, w1)
            check_faults(c, w1)
            check_deadline(c, w1)
            check_redelivery(c, w1)
            check_fanout(c, workers)
            check_concurrency(c, w1, w2)
            check_retry_timeouts(c, w2, log)
            if real:
                check_real_tpm(c, real)
                check_retry_hypervisor(c, real, log)
            else:
                print("ok - real host # SKIP no host a (VT_HOST_A_ROOT)")
        check_urls(w1)
        check_lost_connection(w1, w2)
        check_tls(w1)
        c.close()
        r, f = outcome(lambda: c.call(w1.host, "get_capabilities", {}))
        check("a closed client: Busy, not retryable", f and f.code == "Busy"
              and not f.retryable and f.details.get("closed"), repr(f) if f else r)
    finally:
        for w in workers + ([real] if real else []):
            rc = w.stop()
            check("vtpmd %s exits 0 on SIGTERM" % w.host, rc == 0, w.tail())
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
