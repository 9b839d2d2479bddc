#!/usr/bin/env bash
# Runs the Python (grpcio) client tests of the ringside API (tests/python/test_*.py) with
# pytest. Creates tests/python/.venv when missing and installs the pinned
# requirements.txt into it (again only when that file changed); builds nothing.
#
# The sidecar under test is $RINGSIDE_BIN, else target/debug/ringside, else
# target/debug/ringside-under-test ($CARGO_TARGET_DIR is honoured). $RINGSIDE_LOAD_BIN
# overrides the producer binary and $RING_HOSTILE_BIN the hostile producer (default
# target/debug/ring_hostile; the one test that needs it is skipped without it).
#
#   tests/python/run.sh                 # all tests
#   tests/python/run.sh -k cors -x      # extra arguments go to pytest
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${RINGSIDE_PY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
stamp="$venv/.installed-requirements.txt"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
