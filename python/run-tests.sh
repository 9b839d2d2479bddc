#!/usr/bin/env bash
# Tests the ringside Python package as a user gets it: builds the wheel with maturin,
# installs it into a venv, and runs the pytest suite (python/tests) against the real
# `ringside serve` binary. Called by .ci/run; runnable by hand from anywhere.
#
#   bash python/run-tests.sh [pytest args...]
#
# Environment: PYTHON (interpreter for the venv, default python3), RINGSIDE_PY_VENV (venv
# directory, default python/.venv), CARGO_TARGET_DIR (as for cargo).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${RINGSIDE_PY_VENV:-$here/.venv}"
target="${CARGO_TARGET_DIR:-$repo/target}"

echo "-- venv $venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-dev.txt"

echo "-- ringside binary (cargo build -p ringside)"
cargo build --locked --quiet -p ringside --bin ringside --manifest-path "$repo/Cargo.toml"
export RINGSIDE_BIN="$target/debug/ringside"

echo "-- wheel (maturin build --release)"
rm -rf "$here/dist"
"$venv/bin/maturin" build --release --locked --strip --quiet \
    --manifest-path "$here/Cargo.toml" --interpreter "$venv/bin/python" --out "$here/dist"
wheel=("$here"/dist/ringside-*.whl)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "${wheel[0]}"

echo "-- pytest (the installed wheel, not the source tree)"
# From inside tests/, so `import ringside` finds the installed wheel, not ./ringside.
cd "$here/tests"
export RINGSIDE_TEST_INSTALLED_WHEEL=1
exec "$venv/bin/pytest" -p no:cacheprovider "$@"
