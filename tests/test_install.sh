#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# meson install into a DESTDIR: binaries, manual pages, the sample config,
# the systemd unit, the bash completion and the documents land where the
# build's options say (with --prefix=/usr: where Debian expects them), the
# unit points at the installed vtpmd, and the installed pages resolve by
# name with man, and the Python client where the build's python3 reads it.
# Usage: test_install.sh BUILDDIR [PYTHON]
set -u
BUILD=${1:?usage: test_install.sh BUILDDIR [PYTHON]}
pybin=${2:-python3}

tmp=$(mktemp -d /tmp/test_install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
OUT=$tmp/out
ERR=$tmp/err
RC=0
# shellcheck source=lib/tap.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tap.sh"

# opt NAME: the build's value of option NAME.
meson introspect "$BUILD" --buildoptions > "$tmp/options.json"
opt() {
    python3 -c 'import json, sys
print(next(o["value"] for o in json.load(open(sys.argv[1])) if o["name"] == sys.argv[2]))' \
        "$tmp/options.json" "$1"
}
prefix=$(opt prefix)
# abs DIR: an option's directory made absolute, as meson does.
abs() { case $1 in /*) echo "$1" ;; *) echo "$prefix/$1" ;; esac; }
bindir=$(abs "$(opt bindir)")
sbindir=$(abs "$(opt sbindir)")
mandir=$(abs "$(opt mandir)")
sysconfdir=$(abs "$(opt sysconfdir)")
datadir=$(abs "$(opt datadir)")
unitdir=$(opt systemdsystemunitdir)
if [ -z "$unitdir" ]; then
    unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null)
    [ -n "$unitdir" ] || { [ "$prefix" = /usr ] && unitdir=/lib/systemd/system || unitdir=$prefix/lib/systemd/system; }
fi

D=$tmp/dest
meson install -C "$BUILD" --no-rebuild --quiet --destdir "$D" > "$OUT" 2> "$ERR"
RC=$?
check "meson install --destdir succeeds" rc_is 0

expect_file() {
    local path=$1 mode=${2:-}
    if [ -f "$D$path" ] && { [ -z "$mode" ] || [ -x "$D$path" ]; }; then
        pass "installed: $path${mode:+ (executable)}"
    else
        fail "installed: $path${mode:+ (executable)}"
    fi
}
: > "$OUT"; : > "$ERR"
expect_file "$sbindir/vtpmd" x
expect_file "$bindir/vtpmctl" x
expect_file "$bindir/vtpm-fanout" x
expect_file "$bindir/vtpm-replay" x
for page in man8/vtpmd.8 man5/vtpmd.conf.5 man1/vtpmctl.1 man1/vtpm-fanout.1 man1/vtpm-replay.1 \
    man7/vtpm-amqp.7; do
    expect_file "$mandir/$page"
done
expect_file "$sysconfdir/vtpmd/vtpmd.conf.sample"
expect_file "$unitdir/vtpmd.service"
expect_file "$datadir/bash-completion/completions/vtpmctl"
for doc in operations.md user-guide.md protocol.md lifecycle.md performance.md replay.md metrics.md \
    client.md; do
    expect_file "$datadir/doc/vtpmd/$doc"
done
check "no vtpmd.conf is installed (a re-install keeps the operator's)" \
    test ! -e "$D$sysconfdir/vtpmd/vtpmd.conf"
check "test binaries and vtpm-echo are not installed" \
    eval '! find "$D" -name "test_*" -o -name "vtpm-echo" -o -name "fuzz_*" | grep -q .'

check "the installed unit starts the installed vtpmd with the installed config path" \
    grep -qx "ExecStart=$sbindir/vtpmd --config $sysconfdir/vtpmd/vtpmd.conf" "$D$unitdir/vtpmd.service"
check "the installed sample config is accepted by the installed vtpmd" \
    eval '"$D$sbindir/vtpmd" --check-config --config "$D$sysconfdir/vtpmd/vtpmd.conf.sample" > "$OUT" 2> "$ERR"'
for p in vtpmd:8 vtpmd.conf:5 vtpmctl:1 vtpm-fanout:1 vtpm-replay:1 vtpm-amqp:7; do
    MANPATH=$D$mandir man -w "${p#*:}" "${p%:*}" > "$OUT" 2> "$ERR"
    RC=$?
    check "man ${p#*:} ${p%:*} finds the installed page" \
        eval 'rc_is 0 && grep -qx "$D$mandir/man${p#*:}/${p%:*}.${p#*:}*" "$OUT"'
done

# The Python client: where the build's python3 (python/meson.build) reads
# its modules, and importable from there with nothing else on the path.
pydir=$(meson introspect "$BUILD" --installed | python3 -c 'import json, sys
print(next(v for k, v in json.load(sys.stdin).items()
           if k.endswith("python/vtpmclient/__init__.py")).rsplit("/", 2)[0])' 2> "$ERR")
RC=$?
: > "$OUT"
check "the Python client is installed (vtpmclient/__init__.py)" \
    eval 'rc_is 0 && [ -f "$D$pydir/vtpmclient/__init__.py" ] && [ -f "$D$pydir/vtpmclient/client.py" ]'
"$pybin" -c 'import sys; print("\n".join(sys.path))' > "$OUT" 2> "$ERR"
RC=$?
check "the Python client's directory ($pydir) is on $pybin's sys.path" \
    eval 'rc_is 0 && grep -qx "$pydir" "$OUT"'
(cd / && PYTHONPATH=$D$pydir PYTHONNOUSERSITE=1 "$pybin" -c \
    'import vtpmclient, sys; print(vtpmclient.__file__); print(vtpmclient.Client, vtpmclient.Fault)') \
    > "$OUT" 2> "$ERR"
RC=$?
check "$pybin imports the installed vtpmclient (with pika and msgpack)" \
    eval 'rc_is 0 && grep -qx "$D$pydir/vtpmclient/__init__.py" "$OUT"'

if [ "$prefix" = /usr ]; then
    # Debian's layout, spelt out.
    check "Debian: /usr/sbin/vtpmd" test -x "$D/usr/sbin/vtpmd"
    check "Debian: /usr/bin/vtpmctl" test -x "$D/usr/bin/vtpmctl"
    check "Debian: /etc/vtpmd/vtpmd.conf.sample" test -f "$D/etc/vtpmd/vtpmd.conf.sample"
    check "Debian: /usr/share/man/man8/vtpmd.8" test -f "$D/usr/share/man/man8/vtpmd.8"
    check "Debian: the unit in /lib/systemd/system or /usr/lib/systemd/system" \
        eval 'test -f "$D/lib/systemd/system/vtpmd.service" || test -f "$D/usr/lib/systemd/system/vtpmd.service"'
    check "Debian: /usr/share/bash-completion/completions/vtpmctl" \
        test -f "$D/usr/share/bash-completion/completions/vtpmctl"
    check "Debian: /usr/lib/python3/dist-packages/vtpmclient" \
        test -f "$D/usr/lib/python3/dist-packages/vtpmclient/__init__.py"
else
    echo "# prefix is $prefix, not /usr: the Debian layout was checked relative to it"
fi

tap_done
