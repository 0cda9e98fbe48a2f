#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The documents name only what the code has, and the code has nothing the
# documents leave out: fault codes, configuration keys and RPC methods.
#
# The code's lists are read from the tables the code itself runs on (the
# fault table, the configuration key table, the dispatch table), never
# written down here.  When one of those tables moves to another file,
# change its path below and nothing else.
#
# What counts as naming one in a document:
#   fault   a `CamelCase` word in backticks (Markdown); a CamelCase word
#           of two or more humps anywhere (manual pages)
#   key     "[group] key", in backticks or not
#   method  a call written `name {args}`; method=name and
#           method="name"; "vtpmctl call [OPTIONS] name"; a paragraph that
#           begins with a bold method name ("**spawn** ...", "**power_off /
#           power_on.**") in protocol.md and lifecycle.md; a cell of a
#           table's "method" or "operation" column that is one name; the
#           methods table of protocol.md
# The reference for each, which must list everything the code has:
# protocol.md's fault table, vtpmd.conf(5), protocol.md's methods table.
# Usage: test_docs.sh SRCDIR
set -u
SRC=${1:?usage: test_docs.sh SRCDIR}
cd "$SRC" || exit 1

# ---- where the tables are -------------------------------------------------------
FAULT_TABLE=proto/error.c
CONFIG_TABLE=worker/config.c
METHOD_TABLE=worker/methods.c

# ---- the documents ----------------------------------------------------------------
DOCS=(docs/protocol.md docs/operations.md docs/security.md docs/lifecycle.md
      docs/user-guide.md docs/reliability.md docs/metrics.md docs/architecture.md)
MANS=(docs/man/*.[1-8])
# CamelCase words in the documents that are not fault codes.
NOT_FAULTS="VmRSS RabbitMQ OpenStack GnuTLS MiB KiB GiB"
# Notation, not a key: how the documents write a key.
NOT_KEYS="[group] key"
# Metric labels for requests whose method is none of the table's
# (docs/metrics.md), not methods.
NOT_METHODS="unknown other"

tmp=$(mktemp -d /tmp/test_docs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# For tap.sh's diagnostics (nothing runs a command here whose output matters).
# shellcheck disable=SC2034
OUT=$tmp/out ERR=$tmp/err RC=0
# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"

md=()
for f in "${DOCS[@]}"; do
    [ -f "$f" ] && md+=("$f")
done

# A manual page as text: font escapes gone, "\-" a plain '-'.
man_text() { sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\(em/ /g' "$1"; }

# ---- the code's lists -----------------------------------------------------------------

# [VTPM_FAULT_X] = { "Name", retryable }; None is "no fault", never sent.
grep -oE '^\s*\[VTPM_FAULT_[A-Z0-9_]+\] *= *\{ *"[A-Za-z]+"' "$FAULT_TABLE" |
    sed -E 's/.*"([A-Za-z]+)"/\1/' | grep -vx None | sort -u > "$tmp/code.faults"
# KEY("group", "key", ...)
grep -oE 'KEY\("[a-z_]+", *"[a-z_]+"' "$CONFIG_TABLE" |
    sed -E 's/KEY\("([a-z_]+)", *"([a-z_]+)"/[\1] \2/' | sort -u > "$tmp/code.keys"
# { "name", handler, ... } or { .name = "name", ... }
grep -oE '\{ *(\.name *= *)?"[a-z][a-z0-9_]*", *(\.[a-z_]+ *= *)?vtpm_op_' "$METHOD_TABLE" |
    sed -E 's/[^"]*"([a-z0-9_]+)".*/\1/' | sort -u > "$tmp/code.methods"

check "$FAULT_TABLE: the fault table is read (10 or more codes)" \
    eval '[ "$(wc -l < "$tmp/code.faults")" -ge 10 ]'
check "$CONFIG_TABLE: the key table is read (30 or more keys)" \
    eval '[ "$(wc -l < "$tmp/code.keys")" -ge 30 ]'
check "$METHOD_TABLE: the dispatch table is read (10 or more methods)" \
    eval '[ "$(wc -l < "$tmp/code.methods")" -ge 10 ]'

# ---- what the documents name ("FILE:LINE: name" lines) ----------------------------------

doc_faults() {
    local f
    for f in "${md[@]}"; do
        grep -noE '`[A-Z][A-Za-z0-9]*`' "$f" | tr -d '`' | grep -E ':.*[a-z]' | sed "s|^|$f:|"
    done
    for f in "${MANS[@]}"; do
        man_text "$f" | grep -noE '\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b' | sed "s|^|$f:|"
    done
}

doc_keys() {
    local f
    for f in "${md[@]}"; do
        grep -noE '\[[a-z_]+\] +[a-z_]+' "$f" | sed "s|^|$f:|"
    done
    for f in "${MANS[@]}"; do
        man_text "$f" | grep -noE '\[[a-z_]+\] +[a-z_]+' | sed "s|^|$f:|"
    done
}

# The cells of a Markdown table's "method" or "operation" column that are
# one name (optionally in backticks).
table_methods() {
    awk -v f="$1" '
        function cells(line, out,   n) {
            sub(/^ *\|/, "", line); sub(/\| *$/, "", line)
            n = split(line, out, /\|/)
            return n
        }
        !/^ *\|/ { col = 0; head = 0; next }
        head == 0 {
            head = 1; col = 0
            n = cells($0, c)
            for (i = 1; i <= n; i++) {
                h = c[i]; gsub(/^ +| +$/, "", h)
                if (h == "method" || h == "operation") col = i
            }
            next
        }
        col && !/^ *\|[-: |]+\| *$/ {
            cells($0, c)
            v = c[col]; gsub(/^ +| +$/, "", v); gsub(/`/, "", v)
            if (v ~ /^[a-z][a-z0-9_]*$/) print f ":" NR ":" v
        }' "$1"
}

# The first column of protocol.md's methods table.
methods_table() {
    awk '/^## / { on = ($0 == "## Methods") } on && /^\| `[a-z_]+` \|/ { split($0, c, "`"); print c[2] }' \
        docs/protocol.md
}

doc_methods() {
    local f text=$tmp/text
    for f in "${md[@]}" "${MANS[@]}"; do
        case $f in
            *.md) cat "$f" > "$text" ;;
            *) man_text "$f" > "$text" ;;
        esac
        # `name {...}` (not `name()`: that is how the documents write C functions)
        grep -noE '`[a-z][a-z0-9_]*( \{)' "$text" | sed -E 's/`([a-z0-9_]+).*/\1/; s|^|'"$f"':|'
        grep -noE 'method="?[a-z][a-z0-9_]*' "$text" | sed -E 's/method="?//; s|^|'"$f"':|'
        grep -noE 'vtpmctl call( +-[-a-z]+( +[^- `][^ `]*)?)* +[a-z][a-z0-9_]*' "$text" |
            sed -E 's/^([0-9]+):.* ([a-z][a-z0-9_]*)$/\1:\2/; s|^|'"$f"':|'
        case $f in
            *.md) table_methods "$f" ;;
        esac
    done
    for f in docs/protocol.md docs/lifecycle.md; do
        grep -noE '^\*\*[a-z][a-z0-9_]*( / [a-z][a-z0-9_]*)*\.?\*\*' "$f" |
            sed -E 's/\*\*|\.\*\*//g; s| / |\n|g' |
            awk -F: -v f="$f" 'NF == 2 { line = $1; print f ":" $0; next } { print f ":" line ":" $0 }'
    done
}

# expect_known DESC MENTIONS CODE_LIST EXCEPTIONS: every name of MENTIONS
# ("FILE:LINE: name") is in CODE_LIST or EXCEPTIONS.
expect_known() {
    local desc=$1 mentions=$2 list=$3 except=$4 bad
    bad=$(while IFS= read -r m; do
              n=${m#*:*:}
              case " $except " in *" $n "*) continue ;; esac
              grep -qxF -- "$n" "$list" || echo "$m"
          done < "$mentions")
    if [ -s "$mentions" ] && [ -z "$bad" ]; then
        pass "$desc"
    else
        fail "$desc"
        [ -s "$mentions" ] || echo "#   nothing found in the documents: is the rule still right?"
        printf '%s\n' "$bad" | sed '/^$/d; s/^/#   /'
    fi
}

# expect_documented DESC CODE_LIST DOC_LIST WHERE: every name of CODE_LIST
# is in DOC_LIST.
expect_documented() {
    local desc=$1 missing
    missing=$(comm -23 "$2" <(sort -u "$3"))
    if [ -z "$missing" ]; then
        pass "$desc"
    else
        fail "$desc"
        printf '#   not in %s: %s\n' "$4" "$(tr '\n' ' ' <<< "$missing")"
    fi
}

# ---- fault codes ---------------------------------------------------------------------------

doc_faults > "$tmp/doc.faults"
expect_known "every fault code the documents name is one of $FAULT_TABLE" \
    "$tmp/doc.faults" "$tmp/code.faults" "$NOT_FAULTS"
awk '/^## / { on = ($0 == "## Fault codes") } on && /^\| `[A-Za-z]+` \|/ { split($0, c, "`"); print c[2] }' \
    docs/protocol.md > "$tmp/table.faults"
expect_documented "every fault code of $FAULT_TABLE has a row in protocol.md's fault table" \
    "$tmp/code.faults" "$tmp/table.faults" "docs/protocol.md#fault-codes"

# ---- configuration keys ------------------------------------------------------------------

doc_keys | sed -E 's/\] +/] /' > "$tmp/doc.keys"
expect_known "every [group] key the documents name is in $CONFIG_TABLE's key table" \
    "$tmp/doc.keys" "$tmp/code.keys" "$NOT_KEYS"
# vtpmd.conf(5): ".SS [group]", then ".TP" ".B key" for each key.
awk '/^\.SS \[/ { g = $2 } /^\.SH / { g = "" } prev == ".TP" && /^\.B / && g != "" { k = $2; gsub(/\\/, "", k); print g, k } { prev = $0 }' \
    docs/man/vtpmd.conf.5 > "$tmp/page.keys"
expect_documented "every key of $CONFIG_TABLE is documented in vtpmd.conf(5)" \
    "$tmp/code.keys" "$tmp/page.keys" "docs/man/vtpmd.conf.5"

# ---- methods -------------------------------------------------------------------------------

doc_methods > "$tmp/doc.methods"
expect_known "every method the documents name is in $METHOD_TABLE's dispatch table" \
    "$tmp/doc.methods" "$tmp/code.methods" "$NOT_METHODS"
methods_table > "$tmp/table.methods"
expect_documented "every method of $METHOD_TABLE has a row in protocol.md's methods table" \
    "$tmp/code.methods" "$tmp/table.methods" "docs/protocol.md#methods"

tap_done
