#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# meson install into a DESTDIR: binaries, manual pages, the sample config,
# the systemd unit, the bash completion and the documents land where the
# build's options say (with --prefix=/usr: where Debian expects them), the
# unit points at the installed vtpmd, and the installed pages resolve by
# name with man, and the Python client where the build's python3 reads it;
# libvtpmclient's header, shared library (soname, exactly the versioned
# symbols of its version script) and pkg-config file are where they
# belong, and the example of docs/client.md compiles, links and runs
# against them; the installed tools need no libvtpmclient.so.
# Usage: test_install.sh BUILDDIR SRCDIR [PYTHON]
set -u
BUILD=${1:?usage: test_install.sh BUILDDIR SRCDIR [PYTHON]}
SRC=${2:?usage: test_install.sh BUILDDIR SRCDIR [PYTHON]}
pybin=${3:-python3}

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
v = next(o["value"] for o in json.load(open(sys.argv[1])) if o["name"] == sys.argv[2])
print(",".join(v) if isinstance(v, list) else v)' \
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
libdir=$(abs "$(opt libdir)")
includedir=$(abs "$(opt includedir)")
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
    man7/vtpm-amqp.7 man3/libvtpmclient.3; do
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
for p in vtpmd:8 vtpmd.conf:5 vtpmctl:1 vtpm-fanout:1 vtpm-replay:1 vtpm-amqp:7 libvtpmclient:3; do
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

# ---- libvtpmclient ---------------------------------------------------------

expect_file "$includedir/vtpm/client.h"
expect_file "$includedir/vtpm/fault.h"
expect_file "$libdir/libvtpmclient.so.0"
expect_file "$libdir/pkgconfig/vtpmclient.pc"
check "libvtpmclient.so (for -lvtpmclient) links to libvtpmclient.so.0..." \
    eval 'test -L "$D$libdir/libvtpmclient.so" && readlink -f "$D$libdir/libvtpmclient.so" | grep -q "/libvtpmclient\.so\.0\."'
check "libvtpmclient.so.0 has the soname libvtpmclient.so.0" \
    eval 'readelf -d "$D$libdir/libvtpmclient.so.0" | grep -q "(SONAME).*\[libvtpmclient\.so\.0\]"'
# Exactly the functions of the version script, each VTPMCLIENT_0.1.
grep -oE '^ +vtpm_client_[a-z_]+;' "$SRC/client/libvtpmclient.map" | tr -d ' ;' | sort > "$tmp/want.syms"
nm -D --defined-only "$D$libdir/libvtpmclient.so.0" | awk '{print $3}' | sort > "$tmp/got.syms"
sed -n 's/@@VTPMCLIENT_0\.1$//p' "$tmp/got.syms" > "$tmp/got.funcs"
check "libvtpmclient.so.0 exports exactly the $(wc -l < "$tmp/want.syms") functions of its version script, each @@VTPMCLIENT_0.1" \
    eval '[ -s "$tmp/want.syms" ] && diff "$tmp/want.syms" "$tmp/got.funcs" > "$OUT" &&
          [ "$(grep -cvx "VTPMCLIENT_0.1" "$tmp/got.syms")" = "$(wc -l < "$tmp/want.syms")" ]'
# The header alone, in strict C99 and in C++: nothing but the installed headers.
check "<vtpm/client.h> includes only the C library's headers and <vtpm/fault.h>" \
    eval '[ "$(grep -h "^#include" "$D$includedir/vtpm/client.h" "$D$includedir/vtpm/fault.h" | sort | tr "\n" " ")" = \
           "#include <stdbool.h> #include <stddef.h> #include <stdint.h> #include <vtpm/fault.h> " ]'
check "<vtpm/client.h> compiles alone (C99, -pedantic, the installed include dir only)" \
    eval 'echo "#include <vtpm/client.h>" | cc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
          -I"$D$includedir" -x c - > "$OUT" 2> "$ERR"'
if command -v c++ > /dev/null; then
    check "<vtpm/client.h> compiles as C++" \
        eval 'echo "#include <vtpm/client.h>" | c++ -Wall -Wextra -Werror -fsyntax-only \
              -I"$D$includedir" -x c++ - > "$OUT" 2> "$ERR"'
fi
# The example of docs/client.md, as its users build it. A sanitized build's
# library needs the sanitizer runtime loaded first, so the example of such a
# build is compiled with the same -fsanitize (as any program linking it).
sanitize=$(opt b_sanitize)
sanflags=
[ "$sanitize" = none ] || sanflags="-fsanitize=$sanitize"
export PKG_CONFIG_SYSROOT_DIR=$D PKG_CONFIG_PATH=$D$libdir/pkgconfig
check "pkg-config vtpmclient: -I and -L of the installed tree, -lvtpmclient" \
    eval 'pkg-config --cflags --libs vtpmclient > "$OUT" 2> "$ERR" &&
          grep -q -- "-I$D$includedir" "$OUT" && grep -q -- "-L$D$libdir" "$OUT" && grep -q -- "-lvtpmclient" "$OUT"'
check "the example compiles and links against the installed library (cc -std=c99 $sanflags \$(pkg-config ...))" \
    eval 'cc -std=c99 -Wall -Wextra -Werror $sanflags "$SRC/docs/examples/client-call.c" \
          $(pkg-config --cflags --libs vtpmclient) -o "$tmp/client-call" > "$OUT" 2> "$ERR"'
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH
check "the example runs on the installed libvtpmclient.so.0" \
    eval 'LD_LIBRARY_PATH="$D$libdir" ldd "$tmp/client-call" | grep -q "libvtpmclient\.so\.0 => $D$libdir/"'
LD_LIBRARY_PATH="$D$libdir" "$tmp/client-call" amqp://guest:guest@127.0.0.1:1/ hosts > "$OUT" 2> "$ERR"
RC=$?
check "... and reports an unreachable broker as a retryable Busy fault (exit 1)" \
    eval 'rc_is 1 && grep -q "^connect: Busy: .*127\.0\.0\.1:1.*retryable" "$ERR"'
LD_LIBRARY_PATH="$D$libdir" "$tmp/client-call" > "$OUT" 2> "$ERR"
RC=$?
check "... and its usage error (exit 2)" eval 'rc_is 2 && grep -q "^usage:" "$ERR"'
# The tools carry the library's code: they run where it is not installed.
for t in vtpmctl vtpm-fanout vtpm-replay; do
    check "installed $t needs no libvtpmclient.so and runs (--help)" \
        eval '! ldd "$D$bindir/$t" | grep -q libvtpmclient && "$D$bindir/$t" --help > "$OUT" 2> "$ERR"'
done

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
    check "Debian: /usr/include/vtpm/client.h" test -f "$D/usr/include/vtpm/client.h"
    check "Debian: /usr/lib/x86_64-linux-gnu/libvtpmclient.so.0" \
        test -f "$D/usr/lib/x86_64-linux-gnu/libvtpmclient.so.0"
    check "Debian: /usr/lib/x86_64-linux-gnu/pkgconfig/vtpmclient.pc" \
        test -f "$D/usr/lib/x86_64-linux-gnu/pkgconfig/vtpmclient.pc"
else
    echo "# prefix is $prefix, not /usr: the Debian layout was checked relative to it"
fi

tap_done
