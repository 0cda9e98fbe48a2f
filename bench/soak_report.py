#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The report of bench/soak.sh: reads the files the run wrote in RESULTS_DIR,
prints a human report on stderr and one JSON line on stdout, exits 1 on a
loss.  Usage: soak_report.py RESULTS_DIR MINUTES LOOPS FAULTS"""
import collections
import json
import os
import sys
import time

res, minutes, loops, faults = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
SLACK = 5.0  # seconds around a broker restart in which a client may lose its connection


def rows(name):
    try:
        with open(os.path.join(res, name)) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def read(name, default=""):
    try:
        with open(os.path.join(res, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


# Fault windows, from the event log.
injected = collections.Counter()
broker_windows = []
open_at = {}
durations = {}
failed_faults = []
for t, what in rows("events.tsv"):
    kind, _, rest = what.partition(" ")
    name = rest.split(" ")[0]
    if kind == "fault_start":
        injected[rest.replace(" ", "@")] += 1
        open_at[rest] = float(t)
    elif kind == "fault_failed":
        failed_faults.append(rest)
    elif kind == "fault_end" and rest in open_at:
        durations.setdefault(rest.replace(" ", "@"), []).append(round(float(t) - open_at[rest], 1))
        if name == "broker_restart":
            broker_windows.append((open_at[rest] - SLACK, float(t) + SLACK))
        del open_at[rest]


def during_broker_restart(t1, t2):
    return any(t1 <= e and t2 >= s for s, e in broker_windows)


# Lifecycle calls.
calls = collections.Counter()
outcomes = collections.defaultdict(collections.Counter)
retried = 0
unexplained = []
for t1, t2, loop, step, host, code, tries in rows("calls.tsv"):
    calls[step] += 1
    outcomes[step][code] += 1
    if int(tries) > 1:
        retried += 1
    if code in ("no_reply", "client_error") and not during_broker_restart(float(t1), float(t2)):
        unexplained.append({"step": step, "host": host, "code": code, "at": float(t1)})

cycles = collections.Counter()
losses = []
failures = []
for t, uuid, verdict, detail in rows("cycles.tsv"):
    cycles[verdict] += 1
    if verdict == "loss":
        losses.append({"instance": uuid, "what": detail})
    elif verdict == "failed":
        failures.append({"instance": uuid, "step": detail})
nonretryable = [{"loop": r[0], "step": r[1], "reply": r[2][:300]} for r in rows("nonretryable.tsv")]

# Fan-out runs.  All count in the totals; only a run that overlaps a broker
# restart may lose replies (its client's connection, and with it the
# exclusive reply queue, dies with the node).
fan = collections.Counter()
fan_bad = []
fan_excused = []
for t1, t2, n, rc in rows("fanout.tsv"):
    try:
        with open(os.path.join(res, "fanout.%s.json" % n)) as f:
            d = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        d = None
    excused = during_broker_restart(float(t1), float(t2))
    fan["runs"] += 1
    if d is None:
        fan["runs_without_report"] += 1
        bad = {"run": int(n), "exit": int(rc), "why": read("fanout.%s.err" % n)[-300:]}
    else:
        for k in ("ok", "faulted", "lost", "duplicate", "late", "unmatched", "invalid"):
            fan[k] += int(d.get(k, 0))
        fan["calls"] += int(d.get("ok", 0)) + int(d.get("faulted", 0)) + int(d.get("lost", 0))
        bad = None
        if d.get("lost") or d.get("duplicate") or d.get("unmatched") or d.get("invalid"):
            bad = {"run": int(n), "lost": d.get("lost"), "duplicate": d.get("duplicate"),
                   "unmatched": d.get("unmatched"), "invalid": d.get("invalid")}
    if bad:
        (fan_excused if excused else fan_bad).append(bad)
    if excused:
        fan["runs_overlapping_a_broker_restart"] += 1

# RSS over time, per host and per vtpmd process (a kill starts a new one).
rss = collections.defaultdict(list)
for t, host, pid, kb in rows("rss.tsv"):
    if kb:
        rss[(host, pid)].append((int(t), int(kb)))
rss_out = {}
for (host, pid), samples in sorted(rss.items(), key=lambda x: x[1][0][0]):
    rss_out.setdefault(host, []).append({
        "pid": int(pid), "from_s": samples[0][0], "to_s": samples[-1][0],
        "first_kb": samples[0][1], "max_kb": max(k for _, k in samples),
        "last_kb": samples[-1][1]})

left = int(read("left", "0") or 0)
exits = {h: read("exit." + h, "?") for h in ("a", "b")}
loss_count = len(losses) + len(unexplained) + len(fan_bad) + left
out = {
    "benchmark": "soak", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "cpus": os.cpu_count(), "minutes": minutes, "lifecycle_loops": loops, "faults": faults,
    "faults_injected": dict(injected),
    "cycles": dict(cycles),
    "lifecycle_calls": dict(calls), "lifecycle_outcomes": {k: dict(v) for k, v in outcomes.items()},
    "calls_retried": retried,
    "fault_seconds": durations, "faults_that_failed_to_inject": failed_faults,
    "fanout": dict(fan), "fanout_losses_during_broker_restarts": fan_excused,
    "losses": {"state": losses, "no_reply": unexplained, "fanout": fan_bad, "instances_left": left},
    "failed_cycles": failures, "nonretryable_faults": nonretryable[:20],
    "vtpmd_exit_on_sigterm": exits, "rss": rss_out,
    "loss_count": loss_count,
}
print(json.dumps(out))

w = sys.stderr.write
w("\nsoak: %d min, %d lifecycle loop(s), faults: %s\n" % (minutes, loops, faults))
w("faults injected: %s\n" % (", ".join("%s x%d" % kv for kv in sorted(injected.items())) or "none"))
w("lifecycle cycles: %s\n" % ", ".join("%s %d" % kv for kv in sorted(cycles.items())))
w("%-28s %7s  %s\n" % ("call", "tries", "outcomes"))
for step in sorted(calls):
    w("%-28s %7d  %s\n" % (step, calls[step],
                          ", ".join("%s %d" % kv for kv in sorted(outcomes[step].items()))))
w("calls that were a retry: %d\n" % retried)
w("fault durations (s): %s\n" % "; ".join("%s %s" % (k, v) for k, v in sorted(durations.items())))
if failed_faults:
    w("FAULTS THAT COULD NOT BE INJECTED (see broker-restart.out, libvirtd-restart.out): %s\n"
      % ", ".join(failed_faults))
w("fan-out: %s\n" % ", ".join("%s %d" % kv for kv in sorted(fan.items())))
w("fan-out runs with losses while the broker restarted (the client's connection dies with it): %d\n"
  % len(fan_excused))
for host, segs in sorted(rss_out.items()):
    for s in segs:
        w("RSS host %s pid %d: first %d kB, max %d kB, last %d kB over %d s\n" % (
            host, s["pid"], s["first_kb"], s["max_kb"], s["last_kb"], s["to_s"] - s["from_s"]))
w("vtpmd exit on SIGTERM: a %s, b %s\n" % (exits["a"], exits["b"]))
w("failed cycles (non-retryable fault or out of tries): %d\n" % len(failures))
for f in nonretryable[:10]:
    w("  %s: %s\n" % (f["step"], f["reply"]))
w("LOSSES: %d (state %d, unexplained no-reply %d, fan-out %d, instances left %d)\n" % (
    loss_count, len(losses), len(unexplained), len(fan_bad), left))
for x in losses + unexplained + fan_bad:
    w("  %s\n" % json.dumps(x))
sys.exit(1 if loss_count else 0)
