# SPDX-License-Identifier: Apache-2.0
"""The Python sides of bench/pyclient.sh.

  pyclient.py vtpmclient URL HOST CALLS WARMUP CONCURRENCY
      CONCURRENCY threads share one vtpmclient.Client and call
      get_capabilities on HOST back to back (a closed loop: CONCURRENCY
      calls in flight) until CALLS calls (after WARMUP) are done; one JSON
      line: calls_per_s, latency_ms {p50, p90, p99, max}, faults.
  pyclient.py oslo-client URL TOPIC SERVER CALLS WARMUP CONCURRENCY
      the same with oslo.messaging's RPCClient (one, shared by the threads,
      as a Nova service shares one) calling get_capabilities on TOPIC.SERVER.
  pyclient.py oslo-server URL TOPIC SERVER RESULT_JSON
      an oslo.messaging RPC server (threading executor) whose
      get_capabilities returns RESULT_JSON: an echo of vtpmd's reply, so
      that both clients carry the same result.  Runs until SIGTERM.
"""

import json
import logging
import signal
import statistics
import sys
import threading
import time


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))] if xs else None


def load(call, calls, warmup, concurrency):
    """Run call() calls + warmup times from @concurrency threads; the
    measured part starts when the warm-up calls are done."""
    lock = threading.Lock()
    state = {"left": warmup + calls, "done": 0, "t0": None, "faults": {}}
    lat = []

    def worker():
        while True:
            with lock:
                if state["left"] == 0:
                    return
                state["left"] -= 1
            t = time.perf_counter()
            try:
                call()
                err = None
            except Exception as e:  # a fault is counted, not fatal
                err = getattr(e, "code", type(e).__name__)
            dt = time.perf_counter() - t
            with lock:
                state["done"] += 1
                if state["done"] == warmup:
                    state["t0"] = time.perf_counter()
                if state["done"] > warmup:
                    lat.append(dt * 1000.0)
                    if err:
                        state["faults"][err] = state["faults"].get(err, 0) + 1
    if warmup == 0:
        state["t0"] = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - state["t0"]
    return {"calls": calls, "warmup": warmup, "concurrency": concurrency,
            "elapsed_s": round(elapsed, 3), "calls_per_s": round(len(lat) / elapsed, 1),
            "latency_ms": {"p50": round(statistics.median(lat), 3),
                           "p90": round(percentile(lat, 90), 3),
                           "p99": round(percentile(lat, 99), 3), "max": round(max(lat), 3)},
            "faults": state["faults"],
            "result": "ok" if not state["faults"] and len(lat) == calls else "fail"}


def run_vtpmclient(url, host, calls, warmup, concurrency):
    import vtpmclient
    with vtpmclient.Client(url) as c:
        return load(lambda: c.call(host, "get_capabilities", {}, timeout=60),
                    calls, warmup, concurrency)


def oslo_transport(url):
    """The global configuration, as a Nova service has it: oslo.messaging
    registers some of its options (metrics) there only."""
    from oslo_config import cfg
    import oslo_messaging as om
    cfg.CONF([], project="vtpm-bench")
    return cfg.CONF, om.get_rpc_transport(cfg.CONF, url=url)


def run_oslo_client(url, topic, server, calls, warmup, concurrency):
    import oslo_messaging as om
    _, transport = oslo_transport(url)
    client = om.get_rpc_client(transport, om.Target(topic=topic, server=server), timeout=60)
    try:
        return load(lambda: client.call({}, "get_capabilities"), calls, warmup, concurrency)
    finally:
        transport.cleanup()


class Echo:
    def __init__(self, result):
        self.result = result

    def get_capabilities(self, ctxt):
        return self.result


def run_oslo_server(url, topic, server, result_json):
    import oslo_messaging as om
    _, transport = oslo_transport(url)
    srv = om.get_rpc_server(transport, om.Target(topic=topic, server=server),
                            [Echo(json.loads(result_json))], executor="threading")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    srv.start()
    print("oslo-server: ready", file=sys.stderr, flush=True)
    stop.wait()
    srv.stop()
    srv.wait()
    transport.cleanup()


def main(argv):
    logging.basicConfig(level=logging.WARNING)
    mode = argv[1]
    if mode == "vtpmclient":
        out = run_vtpmclient(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    elif mode == "oslo-client":
        out = run_oslo_client(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]),
                              int(argv[7]))
    elif mode == "oslo-server":
        run_oslo_server(argv[2], argv[3], argv[4], argv[5])
        return 0
    else:
        print("unknown mode %s" % mode, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0 if out["result"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
