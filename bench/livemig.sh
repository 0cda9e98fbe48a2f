#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark 6, live migration: what a vTPM adds to a live migration's total
# time and to the guest's downtime, and vtpmd's own time per migration.
#
# Runs itself under tests/integration.sh --net --hosts 2: a private
# RabbitMQ node and two libvirt hosts (QEMU/TCG + swtpm) with addresses of
# their own, one vtpmd on each (worker host = the host's address; host
# custody, so that no caller secret is involved; TPM 2.0 TIS, encrypted).
# Two instances of the same guest (firmware-only, 256 MiB, 1 vCPU), one
# without and one with a vTPM, both running, are live-migrated a -> b and
# back, N round trips each, alternating between the two so that the
# machine's noise hits both alike.  Each migration is Nova's sequence:
# check_can_live_migrate_destination, pre_live_migration, live_migration,
# post_live_migration_at_destination.
#
# From live_migration's reply: total_ms and downtime_ms, libvirt's
# statistics of the completed job (the guest-visible pause is downtime_ms).
# From the vtpmd log line of each request: duration_ms, libvirt_ms and
# helpers_ms; vtpmd's own time is duration - libvirt - helpers (as
# benchmark 4, bench/provision.sh), summed over the four calls of one
# migration.  Targets: the vTPM adds <= 50 ms of downtime (medians), vtpmd
# < 20 ms of its own time per migration.
#
# Prints a human table on stderr and one JSON line on stdout.  Not a test:
# nothing is asserted; any failed call aborts the run.  Run by hand, as
# root.  Usage: bench/livemig.sh [BUILD_DIR] (default ./build)
# Environment: N (5) round trips per kind (2 N migrations); VT_KEEP=1 keeps
# $VT_ROOT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
# shellcheck source=tests/lib/env.sh
source "$src/tests/lib/env.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_binaries livemig "${1:-$src/build}"
N=${N:-5}
bench_under_two_hosts "$here/livemig.sh" "$B"

# Inside integration.sh: VT_ROOT, VT_AMQP_URL and VT_HOST_{A,B}_ADDR are set.
res=$VT_ROOT/livemig
mkdir -p "$res"
export VTPM_AMQP_URL=$VT_AMQP_URL
bench_two_vtpmds "$res" libvirt.virt_type=qemu

python3 - "$CTL" "$VT_HOST_A_ADDR" "$VT_HOST_B_ADDR" "$N" "$res" <<'EOF'
import json, subprocess, sys, time, uuid
ctl, host_a, host_b, n, res = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
calls = []       # {rid, host, method, kind, seq}
migrations = []  # {kind, seq, total_ms, downtime_ms, vtpm_bytes, wall_ms}

def call(host, method, args, kind, seq):
    rid = "bench-%s-%d-%s" % (kind, seq, method)
    p = subprocess.run([ctl, "call", "--host", host, "--timeout", "600", "--request-id", rid,
                        method, json.dumps(args)], capture_output=True, text=True)
    try:
        reply = json.loads(p.stdout)
    except ValueError:
        reply = None
    if p.returncode != 0 or not reply or not reply.get("ok"):
        sys.exit("livemig: %s on %s failed (exit %d): %s %s"
                 % (method, host, p.returncode, p.stdout.strip(), p.stderr.strip()))
    calls.append({"rid": rid, "host": host, "method": method, "kind": kind, "seq": seq})
    return reply["result"]

def instance(u, tpm):
    specs = {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis",
             "hw:tpm_secret_security": "host"} if tpm else {}
    return {"uuid": u, "name": "bench", "image": {"id": "img-1", "properties": {}},
            "flavor": {"name": "m1.bench", "vcpus": 1, "memory_mb": 256, "extra_specs": specs}}

def migrate(inst, kind, seq, src, dst):
    call(dst, "check_can_live_migrate_destination", {"instance": inst}, kind, seq)
    md = call(dst, "pre_live_migration", {"instance": inst}, kind, seq)
    t0 = time.monotonic()
    r = call(src, "live_migration", {"instance": {"uuid": inst["uuid"]}, "dest_host": dst,
                                     "migrate_data": md}, kind, seq)
    wall = (time.monotonic() - t0) * 1000
    call(dst, "post_live_migration_at_destination", {"instance": {"uuid": inst["uuid"]}},
         kind, seq)
    migrations.append({"kind": kind, "seq": seq, "total_ms": r["total_ms"],
                       "downtime_ms": r["downtime_ms"], "vtpm_bytes": r.get("vtpm_bytes"),
                       "wall_ms": round(wall, 1)})
    print("[bench] %-5s #%-3d %s -> %s  total %5d ms  downtime %4d ms  (live_migration %6.0f ms)"
          % (kind, seq, src, dst, r["total_ms"], r["downtime_ms"], wall), file=sys.stderr,
          flush=True)

insts = {"plain": instance(str(uuid.uuid4()), False), "vtpm": instance(str(uuid.uuid4()), True)}
for kind, inst in insts.items():
    call(host_a, "spawn", {"instance": inst}, "setup", 0)
time.sleep(5)  # past the firmware's start (and its TPM start-up)
seq = 0
for i in range(n):
    for src, dst in ((host_a, host_b), (host_b, host_a)):
        for kind in ("plain", "vtpm"):
            seq += 1
            migrate(insts[kind], kind, seq, src, dst)
for inst in insts.values():
    call(host_a, "destroy", {"instance": {"uuid": inst["uuid"]}}, "setup", 0)
json.dump({"calls": calls, "migrations": migrations}, open(res + "/runs.json", "w"))
EOF

bench_stop_vtpmds
uptime >&2

python3 - "$res" "$N" <<'EOF'
import json, os, platform, re, statistics, subprocess, sys, time
res, n = sys.argv[1], int(sys.argv[2])
runs = json.load(open(res + "/runs.json"))
line_re = re.compile(r"request_id=(\S+) .* outcome=(\S+) duration_ms=([\d.]+) "
                     r"libvirt_ms=([\d.]+) helpers_ms=([\d.]+)")
logged = {}
for h in ("a", "b"):
    for line in open("%s/vtpmd-%s.log" % (res, h), errors="replace"):
        m = line_re.search(line)
        if m and m.group(1).startswith("bench-"):
            logged[m.group(1)] = tuple(float(x) for x in m.group(3, 4, 5))
own = {}      # (kind, seq) -> own ms of the migration's four calls
per_op = {}   # method -> [own ms]
for c in runs["calls"]:
    if c["kind"] == "setup":
        continue
    if c["rid"] not in logged:
        sys.exit("livemig: no log line for request %s" % c["rid"])
    d, lv, hp = logged[c["rid"]]
    o = max(0.0, d - lv - hp)
    own[(c["kind"], c["seq"])] = own.get((c["kind"], c["seq"]), 0.0) + o
    per_op.setdefault(c["method"], []).append(o)

def stats(v):
    v = sorted(v)
    return {"p50": round(statistics.median(v), 1), "mean": round(statistics.mean(v), 1),
            "min": round(v[0], 1), "max": round(v[-1], 1), "n": len(v)}

out = {"benchmark": "livemig", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": os.cpu_count(), "kernel": platform.release(), "n_round_trips": n,
       "loadavg_end": os.getloadavg()[0], "kinds": {}}
for kind in ("plain", "vtpm"):
    ms = [m for m in runs["migrations"] if m["kind"] == kind]
    out["kinds"][kind] = {
        "total_ms": stats([m["total_ms"] for m in ms]),
        "downtime_ms": stats([m["downtime_ms"] for m in ms]),
        "live_migration_wall_ms": stats([m["wall_ms"] for m in ms]),
        "own_ms_per_migration": stats([own[(kind, m["seq"])] for m in ms]),
        "vtpm_bytes": sorted({m["vtpm_bytes"] for m in ms if m["vtpm_bytes"] is not None})}
out["own_ms_per_operation"] = {k: stats(v) for k, v in per_op.items()}
p, t = out["kinds"]["plain"], out["kinds"]["vtpm"]
out["vtpm_added_downtime_ms_p50"] = round(t["downtime_ms"]["p50"] - p["downtime_ms"]["p50"], 1)
out["vtpm_added_total_ms_p50"] = round(t["total_ms"]["p50"] - p["total_ms"]["p50"], 1)
out["target_downtime_met"] = out["vtpm_added_downtime_ms_p50"] <= 50
out["target_own_met"] = t["own_ms_per_migration"]["p50"] < 20
print(json.dumps(out))

w = sys.stderr.write
w("\nLive migration, %d migrations of each guest (a -> b and back); ms\n\n" % (2 * n))
w("%-10s %30s %30s %24s\n" % ("guest", "total p50 / mean / min / max", "downtime p50 / mean / min / max",
                              "vtpmd own p50 / max"))
for kind in ("plain", "vtpm"):
    s = out["kinds"][kind]
    f = lambda d: "%6.0f %6.0f %6.0f %6.0f" % (d["p50"], d["mean"], d["min"], d["max"])
    w("%-10s %30s %30s %15.1f %7.1f\n" % ("no vTPM" if kind == "plain" else "vTPM 2.0",
                                       f(s["total_ms"]), f(s["downtime_ms"]),
                                       s["own_ms_per_migration"]["p50"],
                                       s["own_ms_per_migration"]["max"]))
w("\nadded by the vTPM (medians): downtime %+.0f ms (target <= 50: %s), total %+.0f ms\n"
  % (out["vtpm_added_downtime_ms_p50"], "met" if out["target_downtime_met"] else "NOT met",
     out["vtpm_added_total_ms_p50"]))
w("vtpmd's own time per vTPM migration (four calls): p50 %.1f ms (target < 20: %s)\n"
  % (t["own_ms_per_migration"]["p50"], "met" if out["target_own_met"] else "NOT met"))
for k, s in out["own_ms_per_operation"].items():
    w("  %-36s own p50 %5.1f  max %5.1f ms\n" % (k, s["p50"], s["max"]))
EOF
