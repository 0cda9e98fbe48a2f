# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# The check helpers of the shell test scripts: one "ok - ..." / "not ok -
# ..." line per check and a final "N passed, M failed" line.  The script
# sets OUT and ERR (files holding the last command's output) and RC (its
# exit status); a failed check prints them as the diagnostic.

pass=0
fail=0
RC=${RC:-0}

# What the last command did, for a failed check.
diag() {
    printf '#   exit %s\n' "$RC"
    [ -s "${OUT:-}" ] && head -n 60 "$OUT" | cut -c 1-4000 | sed 's/^/#   stdout: /'
    [ -s "${ERR:-}" ] && tail -n 40 "$ERR" | cut -c 1-4000 | sed 's/^/#   stderr: /'
    return 0
}

pass() { echo "ok - $1"; pass=$((pass + 1)); }
fail() { echo "not ok - $1"; fail=$((fail + 1)); diag; }

# check DESC COMMAND...: the command's status decides.
check() {
    local desc=$1
    shift
    if "$@"; then pass "$desc"; else fail "$desc"; fi
}

rc_is() { [ "$RC" = "$1" ]; }

# The summary line, and the script's exit status.
tap_done() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
