#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vtpmd leaves no core file when it crashes (docs/security.md, "Security
# review"): a core would hold the secrets of requests in flight and the
# deployment keys.  A control process first proves this machine writes core
# files at all (core_pattern "core" in the working directory); otherwise
# the test is skipped, as it is for the sanitizer build (which keeps vtpmd
# dumpable for LeakSanitizer).  Needs no broker or libvirtd: vtpmd waits for
# an unreachable broker.
# Usage: test_nocore.sh VTPMD
set -u
VTPMD=$(readlink -f "${1:?usage: test_nocore.sh VTPMD}")
# shellcheck source=lib/env.sh
source "$(dirname "$0")/lib/env.sh" # vt_vtpmd_conf only
tmp=$(mktemp -d /tmp/test_nocore.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

if ldd "$VTPMD" | grep -q libasan; then
    echo "1..0 # SKIP sanitizer build: vtpmd stays dumpable for LeakSanitizer"
    exit 77
fi
ulimit -c unlimited 2>/dev/null || { echo "1..0 # SKIP cannot raise the core size limit"; exit 77; }

# The control: a plain process killed with SIGSEGV leaves ./core*.
mkdir control
(cd control && exec sleep 60) &
c=$!
sleep 0.3
kill -SEGV "$c"
wait "$c" 2>/dev/null
if ! ls control/core* > /dev/null 2>&1; then
    echo "1..0 # SKIP this machine writes no core file in the working directory" \
        "(core_pattern: $(cat /proc/sys/kernel/core_pattern 2>/dev/null))"
    exit 77
fi
echo "ok 1 - the control process left a core file"

mkdir vtpmd
vt_vtpmd_conf vtpmd.conf "amqp.url=amqp://guest:guest@127.0.0.1:1/%2f" worker.host=nocore \
    libvirt.uri=test:///default
(cd vtpmd && exec "$VTPMD" --config "$tmp/vtpmd.conf" --log-file "$tmp/vtpmd.log") > out 2>&1 &
pid=$!
for _ in $(seq 1 50); do
    grep -q "starting" vtpmd.log 2>/dev/null && break
    sleep 0.1
done
sleep 0.5
if ! kill -0 "$pid" 2>/dev/null; then
    echo "not ok 2 - vtpmd did not stay up waiting for the broker"
    cat out vtpmd.log
    exit 1
fi
kill -SEGV "$pid"
wait "$pid"
rc=$?
pid=
if [ "$rc" -ne $((128 + 11)) ]; then
    echo "not ok 2 - vtpmd should die of SIGSEGV (exit $rc)"
    exit 1
fi
if ls vtpmd/core* > /dev/null 2>&1; then
    echo "not ok 2 - vtpmd left a core file: $(ls vtpmd)"
    exit 1
fi
echo "ok 2 - vtpmd killed by SIGSEGV left no core file"
