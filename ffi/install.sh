#!/bin/sh
# Installs libringside (shared and static), ringside.h and the pkg-config files under a prefix.
#
# usage: ffi/install.sh --prefix PREFIX [--libdir DIR] [--includedir DIR] [--from DIR]
#                       [--destdir DIR]
#
#   --prefix PREFIX    where to install (e.g. /usr/local, or $HOME/.local)
#   --libdir DIR       library directory (default PREFIX/lib)
#   --includedir DIR   header directory (default PREFIX/include)
#   --from DIR         directory holding the built libringside.so and libringside.a
#                      (default: build them with `cargo build --release --locked -p ringside-ffi`
#                      and take them from target/release, or $CARGO_TARGET_DIR/release)
#   --destdir DIR      stage the files under DIR (paths inside still name PREFIX), for packagers
#
# Installs:
#   LIBDIR/libringside.so.ABI.MINOR.PATCH   the shared library (SONAME libringside.so.ABI)
#   LIBDIR/libringside.so.ABI               -> libringside.so.ABI.MINOR.PATCH (what programs load)
#   LIBDIR/libringside.so                   -> libringside.so.ABI (what -lringside links)
#   LIBDIR/libringside.a                    the static library
#   INCLUDEDIR/ringside.h
#   LIBDIR/pkgconfig/ringside.pc            `pkg-config --cflags --libs ringside`: shared;
#                                           `pkg-config --static ...`: static
#   LIBDIR/pkgconfig/ringside-shared.pc     the shared library's flags (pulled in by ringside.pc)
#
# Why two .pc files: pkg-config --static only ever adds flags (Libs.private, and the libraries
# of Requires.private) after those of the shared case, so a plain `-lringside` would still
# pick libringside.so in the same directory. ringside.pc therefore names the static archive
# by path in Libs.private, which pkg-config places before the libraries of its Requires, and
# ringside-shared.pc links -lringside with --as-needed: with --static the archive has already
# defined every symbol, so the shared library is not recorded as needed and the program has
# no run-time dependency on it. Tested with pkgconf 1.8 and GNU ld.
set -eu

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

prefix=
libdir=
includedir=
from=
destdir=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
        --libdir) libdir=${2:?--libdir needs a value}; shift 2 ;;
        --includedir) includedir=${2:?--includedir needs a value}; shift 2 ;;
        --from) from=${2:?--from needs a value}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a value}; shift 2 ;;
        -h | --help) usage ;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix is required" >&2; usage; }
case "$prefix" in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path (got '$prefix')" >&2; exit 2 ;;
esac
libdir=${libdir:-$prefix/lib}
includedir=${includedir:-$prefix/include}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
abi=$(sed -n 's/^const ABI_VERSION: u32 = \([0-9]*\);/\1/p' "$here/build.rs")
[ -n "$version" ] || { echo "install.sh: no version in $root/Cargo.toml" >&2; exit 1; }
[ -n "$abi" ] || { echo "install.sh: no ABI_VERSION in $here/build.rs" >&2; exit 1; }
minor_patch=${version#*.}
real="libringside.so.$abi.$minor_patch"
soname="libringside.so.$abi"

if [ -z "$from" ]; then
    (cd "$root" && cargo build --release --locked -p ringside-ffi)
    from=${CARGO_TARGET_DIR:-$root/target}/release
fi
for f in libringside.so libringside.a; do
    [ -f "$from/$f" ] || { echo "install.sh: $from/$f not found (build with: cargo build --release -p ringside-ffi)" >&2; exit 1; }
done

lib_dest=$destdir$libdir
inc_dest=$destdir$includedir
pc_dest=$lib_dest/pkgconfig
mkdir -p "$lib_dest" "$inc_dest" "$pc_dest"

install -m 0755 "$from/libringside.so" "$lib_dest/$real"
ln -sf "$real" "$lib_dest/$soname"
ln -sf "$soname" "$lib_dest/libringside.so"
install -m 0644 "$from/libringside.a" "$lib_dest/libringside.a"
install -m 0644 "$here/include/ringside.h" "$inc_dest/ringside.h"

cat > "$pc_dest/ringside.pc" <<EOF
# libringside: ringside's C producer library. Shared by default; static with --static.
prefix=$prefix
libdir=$libdir
includedir=$includedir

Name: ringside
Description: ringside shared-memory telemetry producer (C API)
Version: $version
Requires: ringside-shared = $version
Libs.private: \${libdir}/libringside.a -lpthread -ldl -lm
Cflags: -I\${includedir}
EOF

cat > "$pc_dest/ringside-shared.pc" <<EOF
# The shared libringside ($soname), pulled in by ringside.pc; use ringside.pc.
prefix=$prefix
libdir=$libdir

Name: ringside-shared
Description: ringside C producer library, shared object (use the ringside module)
Version: $version
Libs: -L\${libdir} -Wl,--push-state,--as-needed -lringside -Wl,--pop-state
EOF

echo "installed libringside $version ($soname) under $destdir$prefix"
