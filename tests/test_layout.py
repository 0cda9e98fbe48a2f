#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The floor plan of worker/ (docs/architecture.md) holds:

- no cycle in the include graph of worker/ (module = a .c with its .h:
  a.c or a.h including "b.h" is an edge a -> b);
- no cycle in the call graph between the objects of the worker library
  (nm: a symbol one object leaves undefined and another defines);
- an operation family in worker/ops/ (a file defining a vtpm_op_ handler)
  exports its handlers and nothing else;
- no function in worker/ longer than MAX_LINES (brace to brace);
- docs/architecture.md names every source file of worker/, and every
  worker/ file it names exists.

Usage: test_layout.py SRCDIR LIBVTPMWORKER_A
Output is TAP.
"""
import os
import re
import subprocess
import sys


MAX_LINES = 120


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, desc, detail=()):
        self.n += 1
        print(("ok" if ok else "not ok"), self.n, "-", desc)
        if not ok:
            self.failed += 1
            for line in detail:
                print("#  ", line)

    def done(self):
        print("1..%d" % self.n)
        return 1 if self.failed else 0


def sources(worker):
    """Paths (relative to worker/) of every .c and .h."""
    out = []
    for root, _dirs, files in os.walk(worker):
        for f in files:
            if f.endswith((".c", ".h")):
                out.append(os.path.relpath(os.path.join(root, f), worker))
    return sorted(out)


def module(path):
    return os.path.splitext(path)[0]


def include_graph(worker, files):
    """module -> {module: "file includes header"} within worker/."""
    graph = {}
    known = set(files)
    for f in files:
        with open(os.path.join(worker, f), encoding="utf-8") as fh:
            text = fh.read()
        for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
            # As the compiler looks: next to the file first, then -I worker.
            near = os.path.normpath(os.path.join(os.path.dirname(f), inc))
            target = near if near in known else inc if inc in known else None
            if target is None or module(target) == module(f):
                continue
            graph.setdefault(module(f), {})[module(target)] = "%s includes %s" % (f, inc)
    return graph


def call_graph(archive, files):
    """module -> {module: "symbol"} from the objects of the library."""
    objects = {f.replace("/", "_") + ".o": module(f) for f in files if f.endswith(".c")}
    out = subprocess.run(["nm", "-A", archive], capture_output=True, text=True, check=True).stdout
    defined, undefined, exported = {}, {}, {}
    for line in out.splitlines():
        m = re.match(r"^[^:]*:(?:.*/)?([^/:]+\.o):\s*[0-9a-fA-F]*\s+([A-Za-z])\s+(\S+)$", line)
        if not m or m.group(1) not in objects:
            continue
        mod, kind, sym = objects[m.group(1)], m.group(2), m.group(3)
        if kind == "U":
            undefined.setdefault(mod, set()).add(sym)
        elif kind in "TDBRC":
            defined[sym] = mod
            exported.setdefault(mod, set()).add(sym)
    graph = {}
    for mod, syms in undefined.items():
        for sym in sorted(syms):
            target = defined.get(sym)
            if target and target != mod:
                graph.setdefault(mod, {}).setdefault(target, sym)
    return graph, exported, set(objects.values())


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_detail(graph, comp):
    return ["%s -> %s (%s)" % (a, b, why)
            for a in comp for b, why in sorted(graph.get(a, {}).items()) if b in comp]


def long_functions(worker, files):
    """(file, function, lines) for every top-level function over MAX_LINES."""
    out = []
    for f in files:
        if not f.endswith(".c"):
            continue
        name, start = None, 0
        with open(os.path.join(worker, f), encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                m = re.match(r"^([A-Za-z_]\w*)\(", line)
                if m:
                    name, start = m.group(1), i
                elif line.startswith("}") and name:
                    if i - start + 1 > MAX_LINES:
                        out.append((f, name, i - start + 1))
                    name = None
    return out


def doc_files(doc):
    """The worker/ files a document names (worker/x.c, worker/x.{c,h})."""
    named = set()
    for base, ext in re.findall(r"worker/([\w/]+)\.(c|h|\{c,h\})", doc):
        named.update(base + "." + e for e in (("c", "h") if ext == "{c,h}" else (ext,)))
    return named


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, archive = sys.argv[1], sys.argv[2]
    worker = os.path.join(src, "worker")
    files = sources(worker)
    tap = Tap()

    inc = include_graph(worker, files)
    tap.check(sum(len(v) for v in inc.values()) >= 20,
              "the include graph of worker/ is read (20 or more edges)")
    found = cycles(inc)
    tap.check(not found, "no include cycle in worker/",
              [line for comp in found for line in cycle_detail(inc, comp)])

    calls, exported, modules = call_graph(archive, files)
    lib = {module(f) for f in files if f.endswith(".c") and f != "main.c"}
    tap.check(lib <= set(exported), "every module of worker/ but main.c is in the library",
              sorted(lib - set(exported)))
    found = cycles(calls)
    tap.check(not found, "no call cycle between the files of worker/",
              [line for comp in found for line in cycle_detail(calls, comp)])

    families = sorted(m for m, syms in exported.items()
                      if m.startswith("ops/") and any(s.startswith("vtpm_op_") for s in syms))
    tap.check(len(families) >= 6, "the operation families in worker/ops/ are found (6 or more)",
              families)
    extra = ["%s exports %s" % (m, s) for m in families for s in sorted(exported[m])
             if not s.startswith("vtpm_op_")]
    tap.check(not extra, "each operation family exports only its handlers", extra)

    long_ones = long_functions(worker, files)
    tap.check(not long_ones, "no function in worker/ is longer than %d lines" % MAX_LINES,
              ["%s: %s is %d lines" % x for x in long_ones])

    with open(os.path.join(src, "docs", "architecture.md"), encoding="utf-8") as fh:
        named = doc_files(fh.read())
    unnamed = [f for f in files if f.endswith(".c") and f not in named]
    tap.check(not unnamed, "docs/architecture.md names every .c of worker/", unnamed)
    gone = sorted(f for f in named if f not in files)
    tap.check(not gone, "every worker/ file docs/architecture.md names exists", gone)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
