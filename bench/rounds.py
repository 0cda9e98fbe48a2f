# SPDX-License-Identifier: Apache-2.0
"""Medians over a benchmark's rounds, shared by bench/rpc_overhead.sh and
bench/pyclient.sh.  Each run leaves RES/TARGET-cC-rR.json: one JSON object
with calls_per_s, latency_ms {p50, p99} and result ("ok" for a clean run)."""

import json
import statistics


def load(res, target, conc, rounds):
    """The runs of @target at concurrency @conc, one per round (None for a
    run that left no readable file)."""
    runs = []
    for r in range(1, rounds + 1):
        try:
            with open("%s/%s-c%d-r%d.json" % (res, target, conc, r)) as f:
                runs.append(json.load(f))
        except (OSError, ValueError):
            runs.append(None)
    return runs


def summary(runs):
    """(the clean runs, a row): medians of the clean runs' calls/s, p50 and
    p99, every run's calls/s and p99 (None where it failed), and how many
    failed."""
    good = [d for d in runs if d and d["result"] == "ok"]

    def median(get, digits):
        return round(statistics.median(get(d) for d in good), digits) if good else None
    return good, {
        "calls_per_s": median(lambda d: d["calls_per_s"], 1),
        "p50_ms": median(lambda d: d["latency_ms"]["p50"], 3),
        "p99_ms": median(lambda d: d["latency_ms"]["p99"], 3),
        "calls_per_s_runs": [round(d["calls_per_s"], 1) if d else None for d in runs],
        "p99_ms_runs": [round(d["latency_ms"]["p99"], 3) if d else None for d in runs],
        "failed_runs": len(runs) - len(good),
    }
