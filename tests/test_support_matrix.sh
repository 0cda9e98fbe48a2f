#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# docs/support-matrix.md is backed by tests: every cell names at least one
# test that exists in this build (meson-info/intro-tests.json), every
# `test_matrix` `[ROW COLUMN]` tag is a check group tests/test_matrix.sh
# runs (its --list), and every group it runs is a cell of the document.
#
# Usage: test_support_matrix.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SOURCE_ROOT BUILD_ROOT" >&2; exit 2; }
src=$1
build=$2
exec python3 - "$src/docs/support-matrix.md" "$build/meson-info/intro-tests.json" \
    "$("$src/tests/test_matrix.sh" --list)" <<'PY'
import json, re, sys
doc, intro, listing = sys.argv[1], sys.argv[2], sys.argv[3]
tests = {t["name"] for t in json.load(open(intro))}
groups = set(listing.split("\n")) - {""}
failed = 0
def bad(msg):
    global failed
    failed += 1
    print("not ok - " + msg)

mode = None
seen = set()
cells = 0
for n, line in enumerate(open(doc), 1):
    m = re.match(r"## Custody `(\w+)`", line)
    if m:
        mode = m.group(1)
        continue
    m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
    if not m or not mode:
        continue
    row = m.group(1)
    for cell in m.group(2).split("|"):
        cells += 1
        names = re.findall(r"`(test_\w+)`", cell)
        if not names:
            bad("line %d: a cell of row %s (%s) names no test" % (n, row, mode))
        for t in names:
            if t not in tests:
                bad("line %d: %s is not a test of this build" % (n, t))
        for tag in re.findall(r"`\[(\w+) ([\w./-]+)\]`", cell):
            g = "%s %s" % tag
            if tag[0] != row:
                bad("line %d: tag [%s] sits in row %s" % (n, g, row))
            if not tag[1].endswith("/" + mode):
                bad("line %d: tag [%s] sits in the %s table" % (n, g, mode))
            if g not in groups:
                bad("line %d: test_matrix runs no check group [%s]" % (n, g))
            seen.add(g)
for g in sorted(groups - seen):
    bad("test_matrix group [%s] is not in %s" % (g, doc))
if cells == 0:
    bad("no matrix cells found in " + doc)
print("%d cells, %d test_matrix groups, %d problems" % (cells, len(groups), failed))
sys.exit(1 if failed else 0)
PY
