#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The manual pages (docs/man): each renders without a warning, each
# binary's --help options (of every vtpmctl command) appear in its page or
# in vtpm-amqp(7) where the page refers to it, every tool takes the broker
# options of vtpm-amqp(7), libvtpmclient(3) names every function the
# library exports, vtpmd.conf(5) documents exactly the keys of
# docs/vtpmd.conf.sample (which test_config holds equal to the parser), and
# SEE ALSO names only pages that exist.
# Usage: test_man.sh SRCDIR BUILDDIR VTPMD VTPMCTL VTPM_FANOUT
set -u
SRC=${1:?usage: test_man.sh SRCDIR BUILDDIR VTPMD VTPMCTL VTPM_FANOUT}
BUILD=${2:?}
VTPMD=${3:?}
VTPMCTL=${4:?}
FANOUT=${5:?}
MAN=$SRC/docs/man

tmp=$(mktemp -d /tmp/test_man.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0
# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"

# roff TEXT: TEXT as written in a roff source (every '-' as '\-').
roff() { printf '%s' "${1//-/\\-}"; }

# th_is PAGE NAME SECTION: the page's .TH line says NAME SECTION.
th_is() {
    local th name section rest
    th=$(grep -m1 '^\.TH ' "$1") || return 1
    read -r _ name section rest <<< "$th"
    [ "$name" = "$2" ] && [ "$section" = "$3" ]
}

PAGES="vtpmd.8 vtpmctl.1 vtpm-replay.1 vtpm-fanout.1 vtpmd.conf.5 vtpm-amqp.7 libvtpmclient.3"
# The broker options every tool takes, documented once, in vtpm-amqp(7).
SHARED=$MAN/vtpm-amqp.7

# ---- rendering -------------------------------------------------------------

for p in $PAGES; do
    if [ ! -f "$MAN/$p" ]; then
        fail "$p exists"
        continue
    fi
    groff -man -ww -z "$MAN/$p" > "$OUT" 2> "$ERR"
    RC=$?
    check "$p: groff -man -ww renders it without a warning" eval 'rc_is 0 && [ ! -s "$ERR" ] && [ ! -s "$OUT" ]'
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$MAN/$p" > "$OUT" 2> "$ERR"
    RC=$?
    check "$p: man --warnings renders it without a warning" \
        eval 'rc_is 0 && [ ! -s "$ERR" ] && grep -q "^NAME" "$OUT" && grep -q "^SEE ALSO" "$OUT"'
    section=${p##*.}
    name=${p%.*}
    : > "$OUT"; : > "$ERR"
    check "$p: .TH gives the page's name and section $section" \
        th_is "$MAN/$p" "$(roff "${name^^}")" "$section"
done

# ---- options of --help -------------------------------------------------------


# help_options FILE: the -x and --long options a GOption --help lists.
help_options() {
    grep -oE '^ +(-[A-Za-z], )?--[a-z][a-z0-9-]*' "$1" | tr -d ' ' | tr ',' '\n'
}

# expect_options DESC PAGE_TEXT_FILE HELP_FILE: every option of the help in
# the page text, or in vtpm-amqp(7) when the text refers to it.
expect_options() {
    local desc=$1 text=$2 help=$3 missing=() o
    : > "$OUT"; : > "$ERR"
    if grep -qF 'vtpm\-amqp (7)' "$text"; then
        cat "$text" "$SHARED" > "$tmp/with-shared"
        text=$tmp/with-shared
    fi
    for o in $(help_options "$help"); do
        grep -qF -- "$(roff "$o")" "$text" || missing+=("$o")
    done
    if [ "$(help_options "$help" | wc -l)" -gt 0 ] && [ ${#missing[@]} -eq 0 ]; then
        pass "$desc"
    else
        fail "$desc"
        echo "#   not in the page: ${missing[*]:-(no options parsed from --help)}"
    fi
}

"$VTPMD" --help > "$tmp/vtpmd.help" 2>&1
expect_options "vtpmd(8) documents every option of vtpmd --help" "$MAN/vtpmd.8" "$tmp/vtpmd.help"
"$FANOUT" --help > "$tmp/fanout.help" 2>&1
expect_options "vtpm-fanout(1) documents every option of vtpm-fanout --help" \
    "$MAN/vtpm-fanout.1" "$tmp/fanout.help"

# Each vtpmctl command's options in that command's .SS section (-h and
# --help once, in the synopsis, for all of them).
check "vtpmctl(1) synopsis has 'vtpmctl COMMAND --help'" \
    eval 'grep -A2 "^\.B vtpmctl$" "$MAN/vtpmctl.1" | grep -q "^\.B \\\\-\\\\-help$"'
for cmd in $("$VTPMCTL" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}'); do
    "$VTPMCTL" "$cmd" --help 2>&1 | grep -vE '^ +-h, --help ' > "$tmp/$cmd.help"
    awk -v want="$(roff "$cmd")" '
        /^\.S[SH] / { on = ($1 == ".SS" && $2 == want) }
        on' "$MAN/vtpmctl.1" > "$tmp/$cmd.section"
    check "vtpmctl(1) has a section for the command $cmd" test -s "$tmp/$cmd.section"
    expect_options "vtpmctl(1) documents every option of vtpmctl $cmd --help in its section" \
        "$tmp/$cmd.section" "$tmp/$cmd.help"
done

# vtpm-replay: its own --help once it is built here, else the agreed synopsis.
if [ -x "$BUILD/tools/vtpm-replay" ]; then
    "$BUILD/tools/vtpm-replay" --help > "$tmp/replay.help" 2>&1
    expect_options "vtpm-replay(1) documents every option of vtpm-replay --help" \
        "$MAN/vtpm-replay.1" "$tmp/replay.help"
else
    printf '  --%s\n' url out bind duration count speed as-fast-as-possible host-map compare \
        > "$tmp/replay.help"
    expect_options "vtpm-replay(1) documents the options of the agreed vtpm-replay synopsis" \
        "$MAN/vtpm-replay.1" "$tmp/replay.help"
fi
for sub in record replay show; do
    check "vtpm-replay(1) synopsis has the command $sub" \
        grep -q "^\.B vtpm\\\\-replay $sub" "$MAN/vtpm-replay.1"
done
check "vtpm-replay(1) points to docs/replay.md" grep -q "replay\.md" "$MAN/vtpm-replay.1"

# ---- the same broker options on every tool -------------------------------------

# The options of vtpm-amqp(7) (".BR \-\-x" of its OPTIONS), each in the
# --help of every tool that talks to the broker; vtpm-replay replay sends
# each request where it was recorded (no --exchange, --topic).
awk '/^\.SH OPTIONS/ {on = 1; next} /^\.SH / {on = 0} on && prev == ".TP" {print} {prev = $0}' \
    "$SHARED" | sed 's/\\//g' | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u > "$tmp/shared.opts"
check "vtpm-amqp(7) documents the broker options (8 of them)" \
    eval '[ "$(wc -l < "$tmp/shared.opts")" = 8 ]'
ECHO=$(dirname "$FANOUT")/vtpm-echo
REPLAY=$BUILD/tools/vtpm-replay
for tool in "$VTPMCTL call" "$FANOUT" "$REPLAY record" "$REPLAY replay" "$ECHO"; do
    bin=${tool%% *}
    [ -x "$bin" ] || { fail "$(basename "$tool") is built"; continue; }
    # shellcheck disable=SC2086
    $tool --help > "$tmp/tool.help" 2>&1
    missing=()
    while read -r o; do
        case "$tool $o" in *"replay replay --exchange" | *"replay replay --topic") continue ;; esac
        help_options "$tmp/tool.help" | grep -qx -- "$o" || missing+=("$o")
    done < "$tmp/shared.opts"
    label=$(basename "$bin")${tool#"$bin"}
    if [ ${#missing[@]} -eq 0 ]; then
        pass "$label takes every broker option of vtpm-amqp(7)"
    else
        fail "$label takes every broker option of vtpm-amqp(7)"
        echo "#   missing: ${missing[*]}"
    fi
done

# ---- libvtpmclient(3) ------------------------------------------------------------

# Every function the library exports (its version script) in the page.
grep -oE '^ +vtpm_client_[a-z_]+;' "$SRC/client/libvtpmclient.map" | tr -d ' ;' > "$tmp/lib.funcs"
missing=()
for fn in $(cat "$tmp/lib.funcs"); do
    grep -qw -- "$(roff "$fn")" "$MAN/libvtpmclient.3" || missing+=("$fn")
done
if [ "$(wc -l < "$tmp/lib.funcs")" -ge 20 ] && [ ${#missing[@]} -eq 0 ]; then
    pass "libvtpmclient(3) names every function libvtpmclient.so exports"
else
    fail "libvtpmclient(3) names every function libvtpmclient.so exports"
    echo "#   missing: ${missing[*]:-(no functions read from client/libvtpmclient.map)}"
fi

# ---- vtpmd.conf(5) keys --------------------------------------------------------

# "[group] key" of the sample (its keys are the parser's, see test_config)...
awk '/^\[/ {g = $0} /^#?[a-z_]+ *=/ {k = $0; sub(/^#/, "", k); sub(/ *=.*/, "", k); print g, k}' \
    "$SRC/docs/vtpmd.conf.sample" > "$tmp/sample.keys"
# ...and of the page: ".SS [group]" then ".TP" ".B key".
awk '/^\.SS \[/ {g = $2} /^\.SH / {g = ""} prev == ".TP" && /^\.B / && g != "" {k = $2; gsub(/\\/, "", k); print g, k} {prev = $0}' \
    "$MAN/vtpmd.conf.5" > "$tmp/page.keys"
check "vtpmd.conf(5): the sample's keys are read (30 or more)" \
    eval '[ "$(wc -l < "$tmp/sample.keys")" -ge 30 ]'
if diff "$tmp/sample.keys" "$tmp/page.keys" > "$OUT"; then
    pass "vtpmd.conf(5) documents exactly the sample's keys, in its groups and order"
else
    fail "vtpmd.conf(5) documents exactly the sample's keys, in its groups and order"
    sed 's/^/#   /' "$OUT"
fi
# Each key's default as in the sample ("#key = default").
bad=()
while read -r g k; do
    d=$(awk -v g="$g" -v k="$k" '/^\[/ {cur = $0} cur == g && $0 ~ "^#?" k " *=" {sub(/^#?[a-z_]+ *= */, ""); print; exit}' \
        "$SRC/docs/vtpmd.conf.sample")
    page=$(awk -v g="$g" -v k="$k" '/^\.SS \[/ {cur = $2} cur == g && prev == ".TP" && $2 == k {on = 1} on && /^Default: / {sub(/^Default: /, ""); print; exit} {prev = $0}' \
        "$MAN/vtpmd.conf.5" | sed 's/\\fB//; s/\\fR//; s/\\-/-/g; s/\\e/\\/g')
    # keys without a default carry an example in the sample
    [ "$page" = none ] && continue
    [ "$page" = "$d" ] || bad+=("$g $k: page '$page' sample '$d'")
done < "$tmp/sample.keys"
if [ ${#bad[@]} -eq 0 ]; then
    pass "vtpmd.conf(5) gives each key the sample's default"
else
    fail "vtpmd.conf(5) gives each key the sample's default"
    printf '#   %s\n' "${bad[@]}"
fi

# ---- cross references ------------------------------------------------------------

for p in $PAGES; do
    refs=$(awk '/^\.SH SEE ALSO/ {on = 1; next} /^\.SH / {on = 0} on && /^\.BR / {print $2 "." $3}' "$MAN/$p" |
           sed 's/\\-/-/g; s/[(),.]*$//; s/\.(/./; s/)//' | grep '^vtpm' || true)
    missing=()
    for r in $refs; do
        [ -f "$MAN/$r" ] || missing+=("$r")
    done
    if [ -n "$refs" ] && [ ${#missing[@]} -eq 0 ]; then
        pass "$p: SEE ALSO names only existing vtpmd pages ($(echo $refs))"
    else
        fail "$p: SEE ALSO names only existing vtpmd pages"
        echo "#   refs: $refs; missing: ${missing[*]:-}"
    fi
done

tap_done
