#!/bin/sh
# Writes a ringside.pc to stdout from ffi/ringside.pc.in.
# usage: ffi/gen-pc.sh PREFIX LIBDIR INCLUDEDIR
set -eu
if [ $# -ne 3 ]; then
    echo "usage: $0 PREFIX LIBDIR INCLUDEDIR" >&2
    exit 2
fi
here=$(dirname "$0")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -n 1)
sed -e "s|@PREFIX@|$1|" -e "s|@LIBDIR@|$2|" -e "s|@INCLUDEDIR@|$3|" -e "s|@VERSION@|$version|" \
    "$here/ringside.pc.in"
